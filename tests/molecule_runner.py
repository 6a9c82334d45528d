"""Runs the Molecule scenarios in the background, one after another, from the moment the
test session has collected them: they share nothing with the other tests (their own
containers), and a third of the run is spent waiting on them. tests/test_molecule.py waits
for each scenario's result and asserts on it exactly as if it had run it itself."""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from helpers import ROOT, VENV_BIN, base_env

TIMEOUT = 1500  # seconds per scenario


@dataclass
class Outcome:
    returncode: int
    log: str  # the whole output, colour codes removed


_results: dict[str, Outcome] = {}
_done: dict[str, threading.Event] = {}
_started = threading.Lock()


def run(scenario: str, logdir: Path) -> Outcome:
    log = logdir / f"molecule-{scenario}.log"
    with open(log, "w") as out:
        try:
            proc = subprocess.run(
                [str(VENV_BIN / "molecule"), "test", "-s", scenario],
                cwd=ROOT, env=base_env(PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1"),
                stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT,
            )
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
            out.write(f"\nmolecule test -s {scenario} timed out after {TIMEOUT}s\n")
    return Outcome(returncode, re.sub(r"\x1b\[[0-9;]*m", "", log.read_text()))


def start(scenarios: list[str]) -> None:
    """Starts the scenarios in a background thread (once per session)."""
    if not _started.acquire(blocking=False):
        return
    for scenario in scenarios:
        _done[scenario] = threading.Event()
    logdir = Path(tempfile.mkdtemp(prefix="molecule-logs-"))

    def worker():
        for scenario in scenarios:
            try:
                _results[scenario] = run(scenario, logdir)
            except Exception as error:  # noqa: BLE001 - reported by the waiting test
                _results[scenario] = Outcome(-2, f"the runner failed: {error!r}")
            _done[scenario].set()

    threading.Thread(target=worker, name="molecule-runner", daemon=True).start()


def result(scenario: str) -> Outcome:
    """The scenario's outcome, running it now if the session did not start it."""
    if scenario not in _done:
        return run(scenario, Path(tempfile.mkdtemp(prefix="molecule-logs-")))
    if not _done[scenario].wait(timeout=TIMEOUT * (len(_done) + 1)):
        return Outcome(-1, f"molecule test -s {scenario} never finished")
    return _results[scenario]
