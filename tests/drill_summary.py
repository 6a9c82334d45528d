"""The drills' bookkeeping (loaded by tests/conftest.py, so tests in any directory can
record a drill: tests/drills, and the operations tests whose faults are drills too, a
failing deploy and a removed instance): each drill test records what it tried through the
`drill` fixture, and the session ends with one reliability summary line:

    drills: 41 bad inputs refused, 6 faults survived, 0 secrets leaked, 0 data mismatches

What counts, so that the line cannot say more than was shown:

* A refusal or a survived fault counts only if its test passed every assertion **and**
  every test it names as a gate (`after=`: the sibling tests whose checks it relies on,
  such as "no instance was touched" for the refusals) ran and passed. Otherwise the drill
  is named under the line as not counted.
* Bad inputs count once per distinct check that refused them (`check=`: the validation
  rule, assert or argument spec that fired): two inputs caught by the same rule are one.
* Leaks and data mismatches are facts measured by the tests: they are counted whether or
  not the test passed (a failing run never prints a clean zero), and the tests record them
  before their first assertion. What was searched or compared counts only when the gates
  passed, since a leak search over runs that did not happen proves nothing.

The records travel in the test reports (`user_properties`), so the count is the same
whether the tests run in this process or in pytest-xdist workers: the process that prints
the summary reads them from the reports it receives.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pytest

DRILL = "chatmrpt_drill"          # user property: (kind, name, check, gates) of a drill tried
MEASURED = "chatmrpt_measured"    # user property: ({counter: amount}, gates) measured by a drill
IS_DRILL = "chatmrpt_drill_test"  # user property: the test is a drill (it uses the fixture)


class Drill:
    """Handed to one test: what it records counts once the test and its gates have passed.
    `after` names tests of the same module (function names; every parametrization must
    pass) that this drill relies on."""

    def __init__(self, node):
        self._properties = node.user_properties
        self._module = node.nodeid.split("::", 1)[0]

    def _gates(self, after) -> tuple[str, ...]:
        return tuple(f"{self._module}::{name}" for name in after)

    def refused(self, name: str, check: str, after: tuple[str, ...] = ()) -> None:
        """A bad input was refused before anything changed, by the validation `check`."""
        self._properties.append((DRILL, ("bad_input", name, check, self._gates(after))))

    def survived(self, name: str, after: tuple[str, ...] = ()) -> None:
        """A fault was injected and the estate came through it."""
        self._properties.append((DRILL, ("fault", name, "", self._gates(after))))

    def secrets(self, searched: int, found: int, after: tuple[str, ...] = ()) -> None:
        """`searched` secret values (or scanner runs) looked for, `found` occurrences found."""
        self._properties.append((MEASURED, ({"secrets_searched": searched, "secrets_leaked": found},
                                            self._gates(after))))

    def compared(self, mismatches: int, comparisons: int = 1, after: tuple[str, ...] = ()) -> None:
        """Data compared after a fault: `comparisons` checks, `mismatches` of them differed."""
        self._properties.append((MEASURED, ({"data_compared": comparisons, "data_mismatches": mismatches},
                                            self._gates(after))))


@pytest.fixture
def drill(request) -> Drill:
    return Drill(request.node)


@dataclass
class Ledger:
    """Every test's outcome and every drill record of one session; counted at the end."""

    outcomes: dict[str, bool] = field(default_factory=dict)     # nodeid -> passed (setup and call)
    drills: list[tuple[str, tuple, bool]] = field(default_factory=list)   # (nodeid, record, passed)
    measured: list[tuple[str, dict, tuple]] = field(default_factory=list)

    def record(self, report) -> None:
        """Counts one test report (pytest_runtest_logreport, in the process that prints)."""
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.outcomes[report.nodeid] = self.outcomes.get(report.nodeid, True) and report.passed
        properties = list(report.user_properties)
        if (IS_DRILL, True) not in properties or report.when != "call":
            if (IS_DRILL, True) in properties and report.when == "setup" and report.failed:
                self.drills.append((report.nodeid, ("setup", report.nodeid, "", ()), False))
            return
        for key, value in properties:
            if key == DRILL:
                self.drills.append((report.nodeid, value, report.passed))
            elif key == MEASURED:
                self.measured.append((report.nodeid, *value))

    def gates_passed(self, gates: tuple[str, ...]) -> bool:
        for gate in gates:
            ran = [passed for nodeid, passed in self.outcomes.items()
                   if nodeid == gate or nodeid.startswith(gate + "[")]
            if not ran or not all(ran):
                return False
        return True

    def counted(self) -> dict[str, list[tuple[str, str]]]:
        """{kind: [(name, check)]} of the drills that count."""
        out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for _nodeid, (kind, name, check, gates), passed in self.drills:
            if passed and self.gates_passed(gates):
                out[kind].append((name, check))
        return out

    def not_counted(self) -> list[str]:
        names = []
        for nodeid, (kind, name, _check, gates), passed in self.drills:
            if not passed:
                names.append(f"{nodeid} (failed)")
            elif not self.gates_passed(gates):
                names.append(f"{nodeid}: {name} (a test it relies on did not pass: {', '.join(gates)})")
        for nodeid, _amounts, gates in self.measured:
            if not self.gates_passed(gates):
                names.append(f"{nodeid}: what it searched or compared (a test it relies on did not pass)")
        return sorted(set(names))

    def totals(self) -> dict[str, int]:
        totals = dict.fromkeys(("secrets_searched", "secrets_leaked", "data_compared", "data_mismatches"), 0)
        for _nodeid, amounts, gates in self.measured:
            for counter, amount in amounts.items():
                if counter in ("secrets_leaked", "data_mismatches") or self.gates_passed(gates):
                    totals[counter] += amount
        return totals

    def summary_line(self) -> str:
        counted, totals = self.counted(), self.totals()
        checks = {check for _name, check in counted["bad_input"]}
        return (f"drills: {len(checks)} bad inputs refused, {len(counted['fault'])} faults survived, "
                f"{totals['secrets_leaked']} secrets leaked, {totals['data_mismatches']} data mismatches")

    def detail_lines(self) -> list[str]:
        counted, totals = self.counted(), self.totals()
        cases = counted["bad_input"]
        return [f"  ({len(cases)} bad-input cases refused by {len({c for _n, c in cases})} distinct checks; "
                f"{totals['secrets_searched']} secret values and scans searched for, "
                f"{totals['data_compared']} data comparisons after faults; "
                f"faults: {', '.join(name for name, _c in counted['fault']) or 'none'})",
                *(f"  drill not counted: {line}" for line in self.not_counted())]


LEDGER = Ledger()


def mark_report(item, report) -> None:
    """Marks the reports of drill tests (where the test item is known: the worker; called by
    tests/conftest.py's pytest_runtest_makereport)."""
    if "drill" in getattr(item, "fixturenames", ()):
        report.user_properties = [*report.user_properties, (IS_DRILL, True)]


def record(report) -> None:
    LEDGER.record(report)


def summary_line() -> str:
    return LEDGER.summary_line()


def terminal_summary(terminalreporter):
    if not LEDGER.drills and not LEDGER.measured:
        return
    terminalreporter.section("reliability drills")
    terminalreporter.write_line(LEDGER.summary_line())
    for line in LEDGER.detail_lines():
        terminalreporter.write_line(line)
