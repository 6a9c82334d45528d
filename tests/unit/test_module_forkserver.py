"""scripts/chatmrpt_module_forkserver.py, installed by scripts/setup.sh: an interpreter of the
virtualenv that reads its script from standard input (how Ansible runs a module on the
controller) hands it to a server that has imported boto3 once, and the server's fork runs it.

The oracle of every case is the same script run by a fresh interpreter
(CHATMRPT_MODULE_FORKSERVER=0): same output, same errors, same exit status."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import ROOT, VENV_BIN, base_env

PYTHON = str(VENV_BIN / "python")
WHERE = """
import json, os, sys
print(json.dumps({"ppid": os.getppid(), "boto3": "boto3" in sys.modules, "argv": sys.argv,
                  "path0": sys.path[0], "name": __name__, "cwd": os.getcwd(),
                  "umask": oct(os.umask(0)), "probe": os.environ.get("PROBE")}))
"""
CASES = {
    "exit status": "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
    "uncaught exception": "def f():\n    raise ValueError('broken')\nf()",
    "exit with a message": "import sys; sys.exit('bye')",
    "atexit handlers": "import atexit; atexit.register(print, 'atexit ran'); print('main done')",
    "threads joined at exit": ("import threading, time\n"
                               "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
                               "print('main done')"),
    "stdin after the script": "import sys; print(repr(sys.stdin.read()))",
    "killed by a signal": "import os, signal; print('before', flush=True); os.kill(os.getpid(), signal.SIGTERM)",
    "non-utf8 output": "import sys; sys.stdout.buffer.write(b'\\xff\\n'); print('\\u00e9')",
    # The fork's sessions share a loader that read botocore's data before: same models.
    "botocore's data": ("import boto3, hashlib, json\n"
                        "for name in ('ec2', 's3', 'ssm'):\n"
                        "    c = boto3.session.Session(region_name='us-east-2').client(name)\n"
                        "    m = c.meta.service_model\n"
                        "    print(name, c.meta.endpoint_url, m.api_version, len(m.operation_names),\n"
                        "          hashlib.sha256(json.dumps(m._service_description, sort_keys=True).encode()).hexdigest(),\n"
                        "          c.can_paginate('describe_instances' if name == 'ec2' else 'list_objects_v2'))"),
}


def run(script: str, fresh: bool = False, **env: str) -> subprocess.CompletedProcess:
    environment = base_env(**env, **({"CHATMRPT_MODULE_FORKSERVER": "0"} if fresh else {}))
    return subprocess.run([PYTHON], input=script.encode(), capture_output=True, env=environment,
                          cwd="/tmp", timeout=60)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_script_on_stdin_behaves_as_in_a_fresh_interpreter(case):
    served, fresh = run(CASES[case]), run(CASES[case], fresh=True)
    assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_the_script_runs_in_the_server_with_the_clients_settings():
    served = subprocess.Popen([PYTHON], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/tmp",
                              env=base_env(PROBE="from the client"))
    out, _ = served.communicate(WHERE.encode(), timeout=60)
    seen = json.loads(out)
    fresh = json.loads(run(WHERE, fresh=True, PROBE="from the client").stdout)
    assert seen["ppid"] != served.pid and seen["boto3"], "the script did not run in the fork server"
    assert not fresh["boto3"], "the control: a fresh interpreter has not imported boto3"
    assert {k: v for k, v in seen.items() if k not in ("ppid", "boto3")} == \
        {k: v for k, v in fresh.items() if k not in ("ppid", "boto3")}


def test_other_interpreters_are_not_handed_over():
    out = subprocess.run([PYTHON, "-c", "import os, sys; print(os.getppid(), 'boto3' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(os.getpid()), "False"]


def test_a_killed_client_takes_its_module_with_it(tmp_path):
    pid_file = tmp_path / "module.pid"
    client = subprocess.Popen([PYTHON], stdin=subprocess.PIPE, env=base_env())
    client.stdin.write(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n".encode())
    client.stdin.close()
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the module never started"
        time.sleep(0.05)
    module = int(pid_file.read_text())
    assert module != client.pid
    client.kill()
    client.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{module}").exists() and "zombie" not in _state(module):
        assert time.monotonic() < deadline, "the module outlived its client"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_ansible_runs_controller_modules_in_the_server_and_its_ledger_counts_them(tmp_path):
    """ansible.cfg pipelines the local connection, so a localhost task's module reads its code
    from standard input; the ledger gets one line per module."""
    playbook = tmp_path / "probe.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                        "    - ansible.builtin.ping:\n    - ansible.builtin.ping:\n")
    ledger = tmp_path / "ledger"
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={PYTHON}", str(playbook)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=base_env(CHATMRPT_MODULE_FORKSERVER_LEDGER=str(ledger)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(ledger.read_text().split()) == 2, "each of the two modules is in the ledger"
    assert all(float(seconds) > 0 for seconds in ledger.read_text().split())


def test_without_the_server_the_interpreter_runs_the_script_itself(tmp_path):
    """No private directory can be had (TMPDIR has nothing to do with it: the path is fixed,
    so the case is a directory that is not 0700): the interpreter goes on by itself."""
    run("pass")  # the directory exists
    directory = Path(f"/tmp/chatmrpt-forkserver-{os.getuid()}")
    mode = directory.stat().st_mode & 0o777
    try:
        directory.chmod(0o755)
        out = run("import os, sys; print('boto3' in sys.modules)")
    finally:
        directory.chmod(mode)
    assert (out.returncode, out.stdout) == (0, b"False\n")
