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

The records travel in the test reports (`user_properties`), so the count is the same
whether the tests run in this process or in pytest-xdist workers: the process that prints
the summary reads them from the reports it receives.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

KINDS = ("bad_input", "fault")
DRILL = "chatmrpt_drill"          # user property: (kind, name) of a drill tried
MEASURED = "chatmrpt_measured"    # user property: {counter: amount} measured by a drill
IS_DRILL = "chatmrpt_drill_test"  # user property: the test is a drill (it uses the fixture)

_passed: dict[str, list[str]] = defaultdict(list)
_measured = {"secrets_searched": 0, "secrets_leaked": 0, "data_compared": 0, "data_mismatches": 0}
_failed: list[str] = []
_ran: list[str] = []


class Drill:
    """Handed to one test: what it records counts once the test has passed."""

    def __init__(self, node):
        self._properties = node.user_properties

    def refused(self, name: str) -> None:
        """A bad input was refused before anything changed."""
        self._properties.append((DRILL, ("bad_input", name)))

    def survived(self, name: str) -> None:
        """A fault was injected and the estate came through it."""
        self._properties.append((DRILL, ("fault", name)))

    def secrets(self, searched: int, found: int) -> None:
        """`searched` secret values (or scanner runs) looked for, `found` occurrences found."""
        self._properties.append((MEASURED, {"secrets_searched": searched, "secrets_leaked": found}))

    def compared(self, mismatches: int, comparisons: int = 1) -> None:
        """Data compared after a fault: `comparisons` checks, `mismatches` of them differed."""
        self._properties.append((MEASURED, {"data_compared": comparisons, "data_mismatches": mismatches}))


@pytest.fixture
def drill(request) -> Drill:
    return Drill(request.node)


def mark_report(item, report) -> None:
    """Marks the reports of drill tests (where the test item is known: the worker; called by
    tests/conftest.py's pytest_runtest_makereport)."""
    if "drill" in getattr(item, "fixturenames", ()):
        report.user_properties = [*report.user_properties, (IS_DRILL, True)]


def record(report) -> None:
    """Counts one test report (pytest_runtest_logreport, in the process that prints)."""
    properties = list(report.user_properties)
    if (IS_DRILL, True) not in properties:
        return
    if report.when == "setup" and report.failed:
        _failed.append(report.nodeid)
    if report.when != "call":
        return
    _ran.append(report.nodeid)
    for key, value in properties:
        if key == MEASURED:
            for counter, amount in value.items():
                _measured[counter] += amount
    if report.passed:
        for key, value in properties:
            if key == DRILL:
                kind, name = value
                _passed[kind].append(name)
    else:
        _failed.append(report.nodeid)


def summary_line() -> str:
    return (f"drills: {len(_passed['bad_input'])} bad inputs refused, {len(_passed['fault'])} faults survived, "
            f"{_measured['secrets_leaked']} secrets leaked, {_measured['data_mismatches']} data mismatches")


def terminal_summary(terminalreporter):
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
