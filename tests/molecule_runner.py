"""Runs the Molecule scenarios in the background, one after another, from the moment the
test session has collected them: they share nothing with the other tests (their own
containers), and a third of the run is spent waiting on them. tests/test_molecule.py waits
for each scenario's result and asserts on it exactly as if it had run it itself.

Each scenario leaves its log and its exit code in RESULTS (`.test-results/molecule/`), so a
test in another process finds the outcome there: under pytest-xdist the controller runs
the scenarios (tests/conftest.py) and the workers' tests wait for the files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import ROOT, VENV_BIN, base_env

TIMEOUT = 1500  # seconds per scenario
# The shared local estate's tests are the suite's longest chain of work: the scenarios' own
# processes run at a lower priority, so the estate gets the CPU first and the scenarios fill
# the gaps (tests/conftest.py does the same for other tests). Their containers sit in cgroups
# of their own, where niceness ranks nothing against the estate's containers.
BACKGROUND_NICENESS = 10
RESULTS = ROOT / ".test-results" / "molecule"
# Set by the process that runs the scenarios, inherited by the xdist workers it starts.
STARTED_ELSEWHERE = "CHATMRPT_MOLECULE_RUNNER"


@dataclass
class Outcome:
    returncode: int
    log: str  # the whole output, colour codes removed


_scenarios: list[str] = []
_started = threading.Lock()


def _paths(scenario: str) -> tuple[Path, Path]:
    return RESULTS / f"{scenario}.log", RESULTS / f"{scenario}.rc"


def run(scenario: str) -> Outcome:
    log, rc = _paths(scenario)
    with open(log, "w") as out:
        try:
            proc = subprocess.run(
                ["nice", "-n", str(BACKGROUND_NICENESS), str(VENV_BIN / "molecule"), "test", "-s", scenario],
                cwd=ROOT, env=base_env(PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1"),
                stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT,
            )
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
            out.write(f"\nmolecule test -s {scenario} timed out after {TIMEOUT}s\n")
    rc.write_text(str(returncode))
    return _outcome(scenario)


def _outcome(scenario: str) -> Outcome:
    log, rc = _paths(scenario)
    return Outcome(int(rc.read_text()), re.sub(r"\x1b\[[0-9;]*m", "", log.read_text()))


def prepare(runs_here_for_workers: bool) -> None:
    """At the start of the session, in the process that runs the scenarios: empty RESULTS,
    and tell the xdist workers started after this that their scenarios run here."""
    shutil.rmtree(RESULTS, ignore_errors=True)
    RESULTS.mkdir(parents=True)
    if runs_here_for_workers:
        os.environ[STARTED_ELSEWHERE] = str(os.getpid())


def start(scenarios: list[str]) -> None:
    """Starts the scenarios in a background thread (once per session)."""
    if not scenarios or not _started.acquire(blocking=False):
        return
    _scenarios.extend(scenarios)

    def worker():
        for scenario in scenarios:
            try:
                run(scenario)
            except Exception as error:  # noqa: BLE001 - reported by the waiting test
                _paths(scenario)[0].write_text(f"the runner failed: {error!r}")
                _paths(scenario)[1].write_text("-2")

    threading.Thread(target=worker, name="molecule-runner", daemon=True).start()


def result(scenario: str) -> Outcome:
    """The scenario's outcome: from the runner of this session (this process or the xdist
    controller), or run now if the session did not start it."""
    if scenario not in _scenarios and not os.environ.get(STARTED_ELSEWHERE):
        RESULTS.mkdir(parents=True, exist_ok=True)
        return run(scenario)
    rc = _paths(scenario)[1]
    deadline = time.monotonic() + TIMEOUT * ((len(_scenarios) or 5) + 1)
    while not rc.exists():
        if time.monotonic() > deadline:
            return Outcome(-1, f"molecule test -s {scenario} never finished")
        time.sleep(2)
    return _outcome(scenario)
