"""Shared helpers of the test suite: run Ansible the way an operator does, read its recap."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CONTAINERS_CONF = str(ROOT / "lab" / "containers.conf")
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)", re.M,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@contextlib.contextmanager
def moto_server(log: Path | None = None, **settings: str):
    """A moto server of the caller's own on a free port (settings: its MOTO_* environment);
    yields its endpoint URL. It is killed if it does not stop within 10 s of SIGTERM: a
    request thread still open keeps werkzeug from exiting, and the test must not fail on it."""
    port = free_port()
    with open(log or os.devnull, "wb") as logfile:
        proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=logfile, stderr=subprocess.STDOUT, env={**os.environ, **settings})
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def molecule_inventory(host: str) -> list[str]:
    """ansible-playbook arguments that reach one instance of the running Molecule scenario as
    Molecule itself does (its inventory: address, SSH settings), for the playbooks a
    scenario's verify tests run."""
    return ["-i", str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent), "-l", host]


def molecule_address(host: str) -> str:
    """The address of one instance of the running Molecule scenario, as its inventory has it
    (molecule.yml's host_vars)."""
    host_vars = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent / "host_vars" / host
    return yaml.safe_load(host_vars.read_text())["ansible_host"]


def base_env(**extra: str) -> dict[str, str]:
    """The environment of an Ansible run from the project root, with the venv first on PATH."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "CONTAINERS_CONF": CONTAINERS_CONF,
        "ANSIBLE_FORCE_COLOR": "false",
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
    }
    env.update(extra)
    return env


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP.finditer(self.output)
        }

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())

    def failures(self) -> list[str]:
        """The lines that report a failed task (for readable assertion messages)."""
        return [line for line in self.output.splitlines() if line.startswith(("fatal:", "failed:"))]

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change (for readable assertion messages)."""
        tasks, current = [], None
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line[6:line.rfind("]")]
            elif line.startswith("changed:") and current:
                tasks.append(current)
        return tasks


# What an operator sets in the staging and production inventories before the first apply
# (inventories/<env>/group_vars/all/aws_loadbalancer.yml): the domain whose certificate the
# load balancer requests (HTTPS is required there). Runs against those inventories pass it,
# except the test that shows the refusal without it.
OPERATOR_SETTINGS = {
    "staging": ("-e", "aws_loadbalancer_domain_name=staging.chatmrpt.example.org"),
    "production": ("-e", "aws_loadbalancer_domain_name=origin.chatmrpt.example.org"),
}


def operator_settings(inventory: str) -> tuple[str, ...]:
    return OPERATOR_SETTINGS.get(inventory, ())


def run_playbook(playbook: str, inventory: str = "local", *args: str,
                 env: dict[str, str] | None = None, timeout: int = 1800,
                 operator: bool = True) -> PlaybookRun:
    """ansible-playbook from the project root; `inventory` is a directory under inventories/;
    with the operator's settings of that inventory unless `operator` is false."""
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", f"inventories/{inventory}", f"playbooks/{playbook}",
           *(operator_settings(inventory) if operator else ()), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env or base_env(), capture_output=True, text=True, timeout=timeout)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def run_playbooks(calls: list[tuple[str, ...]], env: dict[str, str], workers: int = 4,
                  operator: bool = True) -> list[PlaybookRun]:
    """run_playbook(*call, env=env, operator=operator) for each call, `workers` at a time (the
    runs are independent: refusals of bad input, each asserted by its own test), in the calls'
    order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: run_playbook(*call, env=env, operator=operator), calls))
