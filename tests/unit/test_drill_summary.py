"""The drills line counts only what was shown (tests/drill_summary.py): a drill whose gate
failed or never ran disappears from the count, two inputs refused by one check count once,
and leaks and mismatches count even when their test failed."""

from __future__ import annotations

from types import SimpleNamespace

from drill_summary import DRILL, IS_DRILL, MEASURED, Ledger

MODULE = "tests/drills/test_drill_x.py"


def report(name, passed=True, when="call", *properties):
    return SimpleNamespace(nodeid=f"{MODULE}::{name}", when=when, passed=passed, failed=not passed,
                           user_properties=[(IS_DRILL, True), *properties] if properties else [])


def refused(case, check, gates=()):
    return (DRILL, ("bad_input", case, check, tuple(f"{MODULE}::{g}" for g in gates)))


def survived(name, gates=()):
    return (DRILL, ("fault", name, "", tuple(f"{MODULE}::{g}" for g in gates)))


def test_a_drill_counts_only_when_its_gates_passed():
    ledger = Ledger()
    for r in (report("test_gate"), report("test_fault", True, "call", survived("S3 down", ["test_gate"])),
              report("test_other_fault", True, "call", survived("gunicorn killed", ["test_broken_gate"])),
              report("test_broken_gate", False),
              report("test_orphan", True, "call", survived("never gated", ["test_that_never_ran"]))):
        ledger.record(r)
    assert ledger.summary_line() == "drills: 0 bad inputs refused, 1 faults survived, 0 secrets leaked, 0 data mismatches"
    not_counted = "\n".join(ledger.not_counted())
    assert "gunicorn killed" in not_counted and "never gated" in not_counted and "S3 down" not in not_counted


def test_a_parametrized_gate_must_pass_in_every_case():
    ledger = Ledger()
    ledger.record(report("test_gate[a]"))
    ledger.record(report("test_gate[b]", False))
    ledger.record(report("test_fault", True, "call", survived("fault", ["test_gate"])))
    assert ledger.counted()["fault"] == []


def test_bad_inputs_count_once_per_distinct_check():
    ledger = Ledger()
    ledger.record(report("test_gate"))
    for case, check in (("min-above-max", "aws_compute: the bounds"), ("desired-above-max", "aws_compute: the bounds"),
                        ("bad-cidr", "argument specs: aws_network_vpc_cidr")):
        ledger.record(report(f"test_bad[{case}]", True, "call", refused(case, check, ["test_gate"])))
    ledger.record(report("test_bad[failed-case]", False, "call", refused("failed-case", "aws_iam: policies")))
    assert ledger.summary_line().startswith("drills: 2 bad inputs refused,")
    assert "3 bad-input cases refused by 2 distinct checks" in ledger.detail_lines()[0]


def test_a_broken_gate_makes_every_refusal_disappear():
    ledger = Ledger()
    ledger.record(report("test_gate", False))
    ledger.record(report("test_bad[a]", True, "call", refused("a", "aws_iam: policies", ["test_gate"])))
    assert ledger.summary_line().startswith("drills: 0 bad inputs refused,")


def test_leaks_and_mismatches_count_even_when_the_test_or_its_gate_failed():
    ledger = Ledger()
    ledger.record(report("test_ran", False))
    ledger.record(report("test_leaks", False, "call",
                         (MEASURED, ({"secrets_searched": 4, "secrets_leaked": 1}, (f"{MODULE}::test_ran",)))))
    ledger.record(report("test_data", True, "call", (MEASURED, ({"data_compared": 3, "data_mismatches": 2}, ()))))
    assert ledger.summary_line().endswith("1 secrets leaked, 2 data mismatches")
    totals = ledger.totals()
    assert totals["secrets_searched"] == 0, "a search over runs that failed proves nothing"
    assert totals["data_compared"] == 3


def test_a_failed_setup_is_named():
    ledger = Ledger()
    ledger.record(report("test_fault", False, "setup", survived("x")))
    assert ledger.outcomes[f"{MODULE}::test_fault"] is False
    assert any("test_fault" in line for line in ledger.not_counted())
