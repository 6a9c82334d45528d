"""The drills' bookkeeping (loaded by tests/conftest.py, so tests in any directory can
record a drill: tests/drills, and the operations tests whose faults are drills too, a
failing deploy and a removed instance): each drill test records what it tried through the
`drill` fixture, and the session ends with one reliability summary line:

    drills: 30 bad inputs refused, 6 faults survived, 0 secrets leaked, 0 data mismatches

"Refused" and "survived" count only drills whose test passed every assertion (a record
made by a test that then failed is dropped). Leaks and data mismatches are facts measured
by the tests, so they are counted whether or not the test passed: a failing secrets drill
shows its findings in the line instead of a reassuring zero. Failed drills are named
after the line.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

KINDS = ("bad_input", "fault")
_pending: dict[str, list[tuple[str, str]]] = defaultdict(list)
_passed: dict[str, list[str]] = defaultdict(list)
_measured = {"secrets_searched": 0, "secrets_leaked": 0, "data_compared": 0, "data_mismatches": 0}
_failed: list[str] = []
_ran: list[str] = []


class Drill:
    """Handed to one test: what it records counts once the test has passed."""

    def __init__(self, nodeid: str):
        self.nodeid = nodeid

    def refused(self, name: str) -> None:
        """A bad input was refused before anything changed."""
        _pending[self.nodeid].append(("bad_input", name))

    def survived(self, name: str) -> None:
        """A fault was injected and the estate came through it."""
        _pending[self.nodeid].append(("fault", name))

    def secrets(self, searched: int, found: int) -> None:
        """`searched` secret values (or scanner runs) looked for, `found` occurrences found."""
        _measured["secrets_searched"] += searched
        _measured["secrets_leaked"] += found

    def compared(self, mismatches: int, comparisons: int = 1) -> None:
        """Data compared after a fault: `comparisons` checks, `mismatches` of them differed."""
        _measured["data_compared"] += comparisons
        _measured["data_mismatches"] += mismatches


@pytest.fixture
def drill(request) -> Drill:
    return Drill(request.node.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if "drill" not in getattr(item, "fixturenames", ()):
        return  # not a drill
    if report.when == "setup" and report.failed:
        _failed.append(item.nodeid)
    if report.when != "call":
        return
    _ran.append(item.nodeid)
    records = _pending.pop(item.nodeid, [])
    if report.passed:
        for kind, name in records:
            _passed[kind].append(name)
    else:
        _failed.append(item.nodeid)


def summary_line() -> str:
    return (f"drills: {len(_passed['bad_input'])} bad inputs refused, {len(_passed['fault'])} faults survived, "
            f"{_measured['secrets_leaked']} secrets leaked, {_measured['data_mismatches']} data mismatches")


def pytest_terminal_summary(terminalreporter):
    if not _ran and not _failed:
        return
    terminalreporter.section("reliability drills")
    terminalreporter.write_line(summary_line())
    terminalreporter.write_line(
        f"  ({_measured['secrets_searched']} secret values and scans searched for, "
        f"{_measured['data_compared']} data comparisons after faults; "
        f"faults: {', '.join(_passed['fault']) or 'none'})")
    for nodeid in _failed:
        terminalreporter.write_line(f"  drill FAILED, not counted: {nodeid}")
