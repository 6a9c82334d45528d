"""Fixtures shared by every test directory."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import molecule_runner
from helpers import ROOT, VENV_BIN, PlaybookRun, base_env, free_port, wait_port
# The drills' fixture and their summary line at the end of the session (tests/drill_summary.py).
from drill_summary import drill, pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401

LAB = [str(VENV_BIN / "python"), "lab/lab.py"]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A private AWS emulator for the test session (never the lab's), as its endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as logfile:
        proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=logfile, stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
        )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def aws_env(moto_endpoint):
    """Environment for Ansible or boto3 pointed at the session's emulator, dummy credentials."""
    return base_env(
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # pragma: allowlist secret
        AWS_DEFAULT_REGION="us-east-2",
        AWS_REGION="us-east-2",
    )


@pytest.fixture(scope="session")
def project_root():
    return ROOT


def lab_env() -> dict[str, str]:
    """base_env plus what `lab.py env` exports (emulator endpoint, dummy credentials, the
    lab's ports and state directory): the environment `make demo` runs its playbooks in.
    The LAB_* variables of the calling environment choose the lab, as for lab.py."""
    exports = subprocess.run(LAB + ["env"], cwd=ROOT, env=base_env(), capture_output=True, text=True, check=True)
    extra = dict(line.removeprefix("export ").split("=", 1) for line in exports.stdout.splitlines())
    return base_env(**extra)


@dataclass
class Estate:
    """The local estate after `make demo` twice: both runs, and how to reach it."""

    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    env: dict[str, str]

    @property
    def converged(self) -> bool:
        return self.first.returncode == 0 and self.second.returncode == 0

    @property
    def lab(self) -> dict:
        return json.loads((Path(self.env["CHATMRPT_LAB_STATE_DIR"]) / "lab.json").read_text())

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.env['CHATMRPT_LAB_LB_PORT']}"

    def playbook(self, playbook: str, *args: str, timeout: int = 3600) -> PlaybookRun:
        """Runs a playbook of the project against the local inventory, as an operator would."""
        result = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", "inventories/local", playbook, *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        return PlaybookRun(result.returncode, result.stdout + result.stderr)


def _sh(*cmd: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def local_estate() -> Estate:
    """The local estate exactly as a newcomer gets it: `lab down`, then `make demo`'s script
    twice (tests/e2e checks both runs). One estate per session, shared by every test that
    needs running instances, in the order pytest runs them: such a test may change the
    estate (deploy, replace an instance) but leaves it serving through its load balancer.
    tests/e2e's lab-down test, moved to the end of the session, removes it."""
    if os.environ.get("CHATMRPT_TEST_ESTATE") == "reuse":
        # Development only: use the lab that runs already (LAB_* select it), converged by
        # hand; the e2e tests of the demo runs then fail, everything else works.
        if _sh(*LAB, "status").returncode != 0:
            pytest.fail("CHATMRPT_TEST_ESTATE=reuse, but the lab is not up: run `make demo` first")
        nothing = subprocess.CompletedProcess([], 0, "reused estate: no demo run", "")
        return Estate(nothing, nothing, lab_env())
    _sh(*LAB, "down")
    first = _sh("scripts/demo.sh")
    second = _sh("scripts/demo.sh") if first.returncode == 0 else first
    estate = Estate(first, second, lab_env())
    if not estate.converged:
        failed = second if first.returncode == 0 else first
        pytest.fail("make demo failed on a clean lab:\n" + failed.stdout[-8000:] + failed.stderr[-4000:])
    return estate


def pytest_collection_finish(session):
    """The Molecule scenarios start in the background as soon as they are collected."""
    if session.config.option.collectonly:
        return
    scenarios = [item.callspec.params["scenario"] for item in session.items
                 if getattr(item, "originalname", "") == "test_molecule_scenario"]
    if scenarios:
        molecule_runner.start(scenarios)


def pytest_collection_modifyitems(items):
    """Tests marked `estate_teardown` run last: they remove the shared local estate."""
    items.sort(key=lambda item: item.get_closest_marker("estate_teardown") is not None)
