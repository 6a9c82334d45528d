"""Fixtures shared by every test directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import molecule_runner
from emulator import private_emulator
from helpers import ROOT, VENV_BIN, PlaybookRun, base_env
import drill_summary
import test_times
# The drills' fixture and their bookkeeping (tests/drill_summary.py).
from drill_summary import drill  # noqa: F401

LAB = [str(VENV_BIN / "python"), "lab/lab.py"]
CPU_AT_SETUP = pytest.StashKey[float]()
# What tests measured (their `record_property("measured", text)`), printed after the run.
MEASURED: list[str] = []

# The tests build their own local estate, beside the one `make demo` keeps for the user: its
# own state directory, ports, podman network, subnet and container label (lab/lab.py reads
# LAB_*). A LAB_* variable set by the caller wins, e.g. to reuse a lab on purpose.
TEST_LAB = {
    "LAB_STATE_DIR": str(ROOT / ".lab-test"),
    "LAB_NETWORK": "chatmrpt-lab-test",
    "LAB_SUBNET": "10.214.0.0/16",
    "LAB_MOTO_PORT": "4576",
    "LAB_PG_PORT": "55442",
    "LAB_REDIS_PORT": "56389",
    "LAB_LB_PORT": "8090",
}
for _name, _value in TEST_LAB.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory):
    """Environment for Ansible or boto3 pointed at the session's emulator (never the lab's),
    dummy credentials."""
    with private_emulator(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        yield env


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


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the main process (xdist's controller, or the only one)
        molecule_runner.prepare(runs_here_for_workers=bool(getattr(config.option, "numprocesses", None)))


MOLECULE_TEST = re.compile(r"tests/test_molecule\.py::test_molecule_scenario\[(?P<scenario>[^\]]+)\]$")


def pytest_collection_finish(session):
    """The Molecule scenarios start in the background as soon as they are collected (by the
    xdist controller instead, when workers run the tests: see the hook below)."""
    if session.config.option.collectonly or hasattr(session.config, "workerinput"):
        return
    molecule_runner.start([m["scenario"] for item in session.items if (m := MOLECULE_TEST.search(item.nodeid))])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """pytest-xdist's controller: the first worker's collection names the scenarios."""
    molecule_runner.start([m["scenario"] for nodeid in ids if (m := MOLECULE_TEST.search(nodeid))])


# `make test` runs two pytest-xdist workers. Every test of the shared local estate is one unit
# of work, run in order by one worker; so is tests/aws (its emulated accounts are built once);
# every other test module is a unit of its own, taken by whichever worker is free. The workers record each
# test's group here; the controller's scheduler reads it (see below).
XDIST_GROUPS = ROOT / ".test-results" / "xdist-groups.json"


# tests/aws share one pair of emulated accounts (tests/aws/conftest.py): the modules that only
# read them or set back what they change first, then those that leave them changed, the
# removal last.
AWS_MODULE_ORDER = {f"tests/aws/{name}.py": position for position, name in enumerate(
    ("test_bad_inputs", "test_compute", "test_core", "test_asg_move", "test_teardown_drift"), start=1)}


def pytest_collection_modifyitems(config, items):
    """Tests that need podman instances (the shared local estate, Molecule) are marked
    `estate`: `make check` leaves them out, with those marked `slow`. Tests marked
    `estate_moved` (they move the shared local estate to its Auto Scaling group for good),
    then those marked `estate_teardown` (they remove it) run last. tests/aws runs in the
    order of AWS_MODULE_ORDER."""
    groups = {}
    for item in items:
        on_estate = "local_estate" in getattr(item, "fixturenames", ())
        if on_estate or MOLECULE_TEST.search(item.nodeid):
            item.add_marker(pytest.mark.estate)
        groups[item.nodeid] = "estate" if on_estate else "other"
    items.sort(key=lambda item: (item.get_closest_marker("estate_teardown") is not None,
                                 item.get_closest_marker("estate_moved") is not None,
                                 AWS_MODULE_ORDER.get(item.nodeid.split("::", 1)[0], 0)))
    if hasattr(config, "workerinput"):
        XDIST_GROUPS.parent.mkdir(parents=True, exist_ok=True)
        partial = XDIST_GROUPS.with_name(f"{XDIST_GROUPS.name}.{os.getpid()}")
        partial.write_text(json.dumps(groups))
        partial.replace(XDIST_GROUPS)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Sends the estate's tests to one worker as one unit, in collection order, tests/aws as
    another, and each other module as a unit of its own; the biggest units go first. (pytest-xdist's own
    `--dist loadgroup` renames node ids in a way pytest 9 ignores, so it cannot be used.)"""
    from xdist.scheduler import LoadScopeScheduling

    class EstateBesideTheRest(LoadScopeScheduling):
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # called once every worker has collected
                self._groups = json.loads(XDIST_GROUPS.read_text())
            if self._groups.get(nodeid) == "estate":
                return "estate"
            if nodeid.startswith("tests/aws/"):  # one emulated account, built once (tests/aws/conftest.py)
                return "tests/aws"
            return nodeid.split("::", 1)[0]

    return EstateBesideTheRest(config, log)


def _set_niceness(value: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    except OSError:  # lowering it again needs CAP_SYS_NICE: the worker stays niced
        pass


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Under xdist: the estate's tests (the longest chain of work) at normal priority, every
    # other test niced, with what it starts (an emulator, a playbook run), so that the estate's
    # playbooks and instances get the CPU first and the rest fills the gaps.
    if hasattr(item.config, "workerinput"):
        on_estate = "local_estate" in getattr(item, "fixturenames", ())
        _set_niceness(0 if on_estate else molecule_runner.BACKGROUND_NICENESS)
    # The modules that this process's Ansible runs hand to the fork server are counted there.
    ledger = XDIST_GROUPS.with_name(f"forkserver-cpu.{os.getpid()}")
    if os.environ.get(test_times.FORKSERVER_LEDGER) != str(ledger):
        ledger.parent.mkdir(parents=True, exist_ok=True)
        ledger.write_text("")
        os.environ[test_times.FORKSERVER_LEDGER] = str(ledger)
    item.stash[CPU_AT_SETUP] = test_times.cpu_seconds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On the worker, where the test item is known: the drills' mark, and the test's CPU
    seconds (its process and the children it waited for, so every ansible-playbook it ran;
    not the containers' own processes) for scripts/test_times.py."""
    outcome = yield
    report = outcome.get_result()
    drill_summary.mark_report(item, report)
    if call.when == "teardown" and CPU_AT_SETUP in item.stash:
        used = test_times.cpu_seconds() - item.stash[CPU_AT_SETUP]
        report.user_properties = [*report.user_properties, (test_times.CPU_PROPERTY, round(used, 2))]


def pytest_runtest_logreport(report):
    drill_summary.record(report)
    if report.when == "call":
        MEASURED.extend(str(value) for name, value in report.user_properties if name == "measured")


def pytest_terminal_summary(terminalreporter, config):
    """After the failures: what tests measured, the drills line, then the time per test
    directory (from the junit XML that pytest has just written); pytest's own "N passed" line
    stays the last."""
    if MEASURED:
        terminalreporter.section("measured")
        for line in MEASURED:
            terminalreporter.write_line(line)
    drill_summary.terminal_summary(terminalreporter)
    xml = Path(config.option.xmlpath or "")
    if config.option.xmlpath and xml.exists() and not config.option.collectonly:
        terminalreporter.section("time per test directory (scripts/test_times.py)")
        for line in test_times.table(xml):
            terminalreporter.write_line(line)
