#!/usr/bin/env python3
"""Time per test directory, from the junit XML of a pytest run (written to
.test-results/junit.xml by every run; `make test` prints this table before its final line).

    scripts/test_times.py [JUNIT_XML]

A test's time is its setup, call and teardown, so a directory pays for the session fixtures
(the local estate, the emulated accounts) that its first test builds. Tests run side by side
(pytest-xdist) add up to more than the wall clock, which is printed last. The CPU column is
what the tests' processes used, with every child they waited for (each ansible-playbook and
its modules, also those run in the fork server; tests/conftest.py records it); the
containers' own processes are not in it.
"""

from __future__ import annotations

import os
import resource
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / ".test-results" / "junit.xml"
CPU_PROPERTY = "cpu_seconds"  # junit property of each test, written by tests/conftest.py
FORKSERVER_LEDGER = "CHATMRPT_MODULE_FORKSERVER_LEDGER"  # scripts/chatmrpt_module_forkserver.py


def cpu_seconds() -> float:
    """User and system CPU of this process, of the children it has waited for, and of the
    modules its Ansible runs ran in the virtualenv's fork server (which are not its children;
    the server appends each one's CPU to the ledger named in the environment)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    modules = 0.0
    ledger = Path(os.environ.get(FORKSERVER_LEDGER, "/nonexistent"))
    if ledger.is_file():
        modules = sum(float(line) for line in ledger.read_text().split())
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + modules


def directory_of(classname: str) -> str:
    """`tests.aws.test_core` -> `tests/aws`; `tests.test_lint` -> `tests`."""
    parts = classname.split(".")
    module = next((i for i, part in enumerate(parts) if part.startswith("test_")), len(parts) - 1)
    return "/".join(parts[:module]) or "."


def table(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    seconds: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for case in root.iter("testcase"):
        directory = directory_of(case.get("classname", ""))
        seconds[directory] += float(case.get("time", 0))
        cpu[directory] += sum(float(p.get("value", 0)) for p in case.iter("property") if p.get("name") == CPU_PROPERTY)
        counts[directory] += 1
    lines = [f"{'directory':<22} {'tests':>5} {'seconds':>8} {'minutes':>7} {'CPU min':>7}"]
    for directory, total in sorted(seconds.items(), key=lambda item: -item[1]):
        lines.append(f"{directory:<22} {counts[directory]:>5} {total:>8.0f} {total / 60:>7.1f} {cpu[directory] / 60:>7.1f}")
    wall = sum(float(suite.get("time", 0)) for suite in suites)
    lines.append(f"{'wall clock':<22} {sum(counts.values()):>5} {wall:>8.0f} {wall / 60:>7.1f} {sum(cpu.values()) / 60:>7.1f}")
    return lines


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT
    if not path.exists():
        print(f"test_times: no junit XML at {path} (run pytest first)", file=sys.stderr)
        return 1
    print("\n".join(table(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
