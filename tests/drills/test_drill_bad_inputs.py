"""Bad input drills: malformed or dangerous inputs (drills_cases.CASES) fed to the entry
playbooks of the shared local estate, each refused before anything is changed.

For each case, separately asserted:
- the run fails, in a validation task ("Check ...", "Refuse ...", argument specs), with a
  message naming the variable and the accepted values (the case's `must_say` words);
- exactly one check refused it, the one the case names (drills_cases.CHECKS: no two cases
  share a check, so the drills line counts checks, not inputs);
- the recap shows no change, and no host but the controller took part;
- the AWS emulator received no write request: the run talks to it through a recording
  proxy of its own (drills_proxy), which saw the inventory's reads and nothing else.
And for all of them together: the instances' configuration trees are byte-for-byte as
before (metadata digest of every file), so no host was touched either; a refusal counts in
the drills line only if that test passed too (tests/drill_summary.py).

The runs are independent (one proxy each), so they run four at a time; each case is
still its own test with its own assertions.
"""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from drills_cases import CASES, CHECKS, BadInput
from drills_estate import ansible_playbook, config_digest, failed_task, instances
from drills_proxy import RecordingProxy
from helpers import ROOT

VALIDATION_TASK = re.compile(r"(^|: )(Check |Refuse |Validating arguments)")
RULE_TAG = re.compile(r"\[([a-z_]+): ([^\]]+)\]")   # a role's rule: `[aws_compute: the Auto Scaling bounds]`
# What each refused run relies on besides its own assertions (tests/drill_summary.py).
GATES = ("test_no_instance_was_touched_by_the_refused_runs",)


def fired_check(case: BadInput, run) -> str:
    """The one check that refused the run: a role's tagged rule, an argument spec (by the
    variable it names), or the failed assert task itself. Several rules firing at once is a
    failure: the drill would not show which check a case proves."""
    task = failed_task(run.output)
    if "Validating arguments" in task:
        return f"argument specs: {case.must_say[0]}"
    rules = sorted({f"{role}: {rule}" for role, rule in RULE_TAG.findall(" ".join(run.output.split()))})
    assert len(rules) <= 1, f"{case.id}: several rules fired: {rules}"
    return rules[0] if rules else task


def _run_case(estate, case: BadInput, extra_env: dict | None = None, argv: list[str] | None = None):
    proxy = RecordingProxy(estate.env["AWS_ENDPOINT_URL"]).start()
    try:
        env = {**estate.env, "AWS_ENDPOINT_URL": proxy.url, **(extra_env or {})}
        run = ansible_playbook(env, case.inventory, *(argv or case.argv()), timeout=900)
    finally:
        proxy.stop()
    return {"run": run, "writes": proxy.writes(), "operations": proxy.operations()}


@pytest.fixture(scope="module")
def refusals(local_estate):
    assert instances(local_estate), "the shared estate has no running instance to guard"
    before = config_digest(local_estate)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip([c.id for c in CASES], pool.map(lambda c: _run_case(local_estate, c), CASES)))
    return {"results": results, "before": before, "after": config_digest(local_estate)}


def _assert_refused(case: BadInput, result: dict, refusing_hosts=("localhost",), passing_hosts=()):
    run = result["run"]
    tail = run.output[-6000:]
    assert run.returncode != 0, f"{case.id}: the run was not refused\n{tail}"
    task = failed_task(run.output)
    assert task and VALIDATION_TASK.search(task), f"{case.id}: failed in '{task}', not in validation\n{tail}"
    flat = " ".join(run.output.split())
    missing = [word for word in case.must_say if word not in flat]
    assert not missing, f"{case.id}: the refusal does not say {missing}\n{tail}"
    assert run.recap, tail
    assert set(run.recap) == {*refusing_hosts, *passing_hosts}, f"{case.id}: hosts took part: {sorted(run.recap)}"
    assert run.changed == 0, f"{case.id}: changed {run.changed_tasks()}"
    assert all(run.recap[host]["failed"] == 1 for host in refusing_hosts), run.recap
    assert all(run.recap[host]["failed"] == 0 for host in passing_hosts), run.recap
    # The run did reach the emulator (the inventory read it), and wrote nothing to it.
    assert result["operations"], f"{case.id}: no request went through the proxy: the check proves nothing"
    assert result["writes"] == [], f"{case.id}: write requests reached the emulator: {result['writes']}"
    check = fired_check(case, run)
    assert check == case.check, f"{case.id}: refused by {check!r}, the case is meant for {case.check!r}"
    return check


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_any_change(refusals, case, drill):
    check = _assert_refused(case, refusals["results"][case.id])
    drill.refused(case.id, check=check, after=GATES)


def test_every_case_is_refused_by_a_check_of_its_own():
    """A second input caught by the same check proves nothing more: each case names its own."""
    assert set(CHECKS) == {c.id for c in CASES} | {"unknown-os-family"}
    checks = list(CHECKS.values())
    assert sorted(c for c in set(checks) if checks.count(c) > 1) == []
    assert len(set(checks)) >= 40


def test_no_instance_was_touched_by_the_refused_runs(refusals):
    assert refusals["before"], "no instance to compare"
    assert refusals["after"] == refusals["before"]


def test_host_of_an_unknown_os_family_is_refused_before_any_change(local_estate, tmp_path, drill):
    """The instances pretend to run Alpine Linux: cached facts say so (gathering is smart,
    so the play uses them). base, the first host role, refuses the host after loading its
    fallback OS data, before its first package task; no other role gets to run."""
    hosts = instances(local_estate)
    real_cache = ROOT / ".cache" / "facts"
    for host in hosts:
        source = next(real_cache.glob(f"*{host}"), None)
        assert source is not None, f"no cached facts for {host} in {real_cache}"
        wrapper = json.loads(source.read_text())
        facts = json.loads(wrapper["__payload__"])
        facts.update(ansible_os_family="Alpine", ansible_distribution="Alpine", ansible_pkg_mgr="apk",
                     ansible_distribution_major_version="3", ansible_distribution_version="3.20.3",
                     _ansible_facts_gathered=True)
        wrapper["__payload__"] = json.dumps(facts)
        (tmp_path / source.name).write_text(json.dumps(wrapper))
    case = BadInput("unknown-os-family", "hosts.yml", {},
                    ("os_family", "Alpine", "Debian", "RedHat", "supported"))
    before = config_digest(local_estate)
    result = _run_case(local_estate, case, extra_env={"ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp_path)},
                       argv=["playbooks/hosts.yml"])
    run = result["run"]
    assert failed_task(run.output) == "base : Check the OS is supported", run.output[-6000:]
    # The inventory itself was valid (localhost passed validation); every instance refused.
    check = _assert_refused(case, result, refusing_hosts=hosts, passing_hosts=("localhost",))
    assert config_digest(local_estate) == before
    shutil.rmtree(tmp_path, ignore_errors=True)
    drill.refused(case.id, check=check)
