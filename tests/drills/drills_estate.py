"""Helpers of the drills that touch the shared local estate (fixture `local_estate`)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

from helpers import ROOT, VENV_BIN, PlaybookRun, operator_settings

# What configuration management writes on an instance: a change here is a change made by a
# run. Runtime data (instance/ databases, logs, the journal) changes on its own and is
# compared by the fault drills instead.
CONFIG_TREES = "/etc /usr/local /opt /srv/chatmrpt /var/spool/cron"
RUNTIME_EXCLUDES = ("*/instance/*", "*/logs/*", "*.log", "*.log.*", "*/__pycache__/*", "*/.cache/*",
                    "/etc/ld.so.cache", "*/chatmrpt_shared/instance")


def podman(*args: str, env: dict, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=check, timeout=timeout)


def instances(estate) -> list[str]:
    """The running instance containers of the estate's lab, sorted."""
    lab = estate.lab
    out = podman("ps", "--filter", f"label={lab['label']}={lab['name']}", "--format", "{{.Names}}", env=estate.env)
    return sorted(out.stdout.split())


def host_exec(estate, host: str, script: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    return podman("exec", host, "sh", "-c", script, env=estate.env, check=check, timeout=timeout)


def config_digest(estate) -> dict[str, str]:
    """Per instance: a digest of path, size, mtime, mode and owner of every file under the
    configuration trees (runtime data excluded). Any write by a run changes it."""
    excludes = " ".join(f"-not -path '{pattern}'" for pattern in RUNTIME_EXCLUDES)
    script = (f"find {CONFIG_TREES} -xdev {excludes} -printf '%p %s %T@ %m %U %l\\n' 2>/dev/null"
              " | LC_ALL=C sort | sha256sum")
    return {host: host_exec(estate, host, script).stdout.split()[0] for host in instances(estate)}


def http_json(url: str, timeout: float = 5.0) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def wait_until(predicate, timeout: float, interval: float = 0.2):
    """Polls `predicate` until it returns a truthy value; that value, or None at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def ansible_playbook(env: dict, inventory: str, *argv: str, timeout: int = 1800) -> PlaybookRun:
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", f"inventories/{inventory}",
                           *operator_settings(inventory), *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def failed_task(output: str) -> str | None:
    """The name of the task whose failure stopped the run (the TASK line before the first
    `fatal:` line, or `failed:` line of a loop item)."""
    current = None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line[6:line.rfind("]")]
        elif line.startswith(("fatal:", "failed: [")):
            return current
    return None


MARKER_QUERY = ("import sqlite3, sys; c = sqlite3.connect('file:{db}?mode=ro', uri=True);"
                " print(c.execute('SELECT count(*) FROM messages WHERE content = ?', (sys.argv[1],)).fetchone()[0])")


def marker_rows(estate, host: str, instance_dir: str, marker: str) -> int:
    """Messages whose content is `marker` in the host's interactions.db (read-only)."""
    script = MARKER_QUERY.format(db=f"{instance_dir}/interactions.db")
    return int(podman("exec", host, "python3", "-c", script, marker, env=estate.env).stdout.strip() or -1)
