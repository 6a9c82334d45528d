"""The recovery drill on the shared local estate: its gates (check mode, a wrong victim)
change nothing; then benchmarks/recovery_bench.py writes marker rows through the load
balancer onto the first app instance, replaces that instance with playbooks/recovery_drill.yml
(fresh backup, terminate, launch from the golden image, configure, restore, register) and
checks the data and health after. Runs after test_golden_ami.py, whose image the
replacement starts from (the benchmark builds one when none exists). Leaves the estate
serving with two app instances.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

import pytest

from emulator import client, running_app_instances, tags_of
from helpers import ROOT, VENV_BIN

pytestmark = pytest.mark.slow

VICTIM = "ChatMRPT-Local-App-1"
TIME_LINE = re.compile(r"^recovery time: (?P<seconds>[\d.]+) s \(claimed: under 600 s; (?P<ratio>[\d.]+) of the claim, "
                       r"(within the claim|OVER the claim)\) victim=(?P<victim>i-\w+) replacement=(?P<replacement>i-\w+)", re.M)


def aws(estate, service):
    return client(estate.env, service)


def app_instances(estate) -> dict[str, str]:
    """Running app instances of the local estate: {instance id: Name}."""
    return {i["InstanceId"]: tags_of(i["Tags"])["Name"] for i in running_app_instances(estate.env)}


def target_health(estate) -> dict[str, str]:
    elbv2 = aws(estate, "elbv2")
    arn = elbv2.describe_target_groups(Names=["ChatMRPT-Local-TG"])["TargetGroups"][0]["TargetGroupArn"]
    return {t["Target"]["Id"]: t["TargetHealth"]["State"]
            for t in elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}


@pytest.mark.parametrize("args, expected", [
    (["--check"], "PLAN recovery drill of local: victim " + VICTIM),
    (["-e", "recovery_drill_victim=ChatMRPT-Local-App-9"], "RECOVERY REFUSED: recovery_drill_victim=ChatMRPT-Local-App-9"),
], ids=["check-mode-plan", "unknown-victim"])
def test_the_drill_changes_nothing_before_its_gates_pass(local_estate, args, expected):
    before, targets = app_instances(local_estate), target_health(local_estate)
    run = local_estate.playbook("playbooks/recovery_drill.yml", *args)
    assert expected in run.output, run.output[-6000:]
    assert (run.returncode == 0) == ("--check" in args), run.output[-4000:]
    assert run.changed == 0, run.changed_tasks()
    assert app_instances(local_estate) == before
    assert target_health(local_estate) == targets


@pytest.fixture(scope="module")
def bench(local_estate, tmp_path_factory):
    """benchmarks/recovery_bench.py on the shared estate: its exit, output and JSON results."""
    before = app_instances(local_estate)
    results = tmp_path_factory.mktemp("recovery") / "bench.json"
    proc = subprocess.run([str(VENV_BIN / "python"), "benchmarks/recovery_bench.py", "--victim", VICTIM,
                           "--json", str(results)],
                          cwd=ROOT, env=local_estate.env, capture_output=True, text=True, timeout=3600)
    data = json.loads(results.read_text()) if results.exists() else {}
    return {"proc": proc, "output": proc.stdout + proc.stderr, "results": data, "before": before}


def test_the_benchmark_recovers_the_instance_and_prints_the_time(bench, capsys):
    output = bench["output"]
    match = TIME_LINE.search(output)
    with capsys.disabled():
        shown = [line for line in output.splitlines() if line.startswith(("golden AMI", "recovery time:", "phases:", "data check:"))]
        print("\n" + "\n".join(f"  recovery bench: {line}" for line in shown))
    assert bench["proc"].returncode == 0, output[-8000:]
    assert match, output[-4000:]
    victim_id = next(i for i, name in bench["before"].items() if name == VICTIM)
    assert match["victim"] == victim_id
    assert match["replacement"] != victim_id
    assert float(match["ratio"]) == pytest.approx(float(match["seconds"]) / 600, abs=0.01)


def test_the_marker_data_is_intact_on_the_replacement(bench, drill):
    """Also the drill "an app instance removed: the recovery drill brings it back with its data"."""
    results = bench["results"]
    assert results, bench["output"][-4000:]
    markers = sum(len(rows) for rows in results["markers"].values())
    data_failures = [f for f in results["failures"] if "marker rows missing" in f or "row counts" in f]
    drill.compared(mismatches=len(data_failures), comparisons=2)  # the marker rows, the row counts
    assert results["failures"] == []
    assert markers == 20  # 5 per database, the benchmark's default
    assert re.search(rf"^data check: {markers} marker rows intact on the replacement, row counts equal", bench["output"], re.M)
    restored = results["report"]["restored"]
    assert restored["users.db"]["users"] >= 5 and restored["interactions.db"]["messages"] >= 5
    drill.survived("app instance removed", after=("test_the_benchmark_recovers_the_instance_and_prints_the_time",
                                                  "test_the_estate_serves_with_two_app_instances_afterwards"))


def test_the_estate_serves_with_two_app_instances_afterwards(local_estate, bench):
    instances = app_instances(local_estate)
    assert sorted(instances.values()) == ["ChatMRPT-Local-App-1", "ChatMRPT-Local-App-2"]
    replacement = bench["results"]["report"]["replacement"]["id"]
    assert replacement in instances and set(bench["before"]) - set(instances) == {
        next(i for i, name in bench["before"].items() if name == VICTIM)}
    assert target_health(local_estate) == {instance: "healthy" for instance in instances}
    for _ in range(4):
        with urllib.request.urlopen(f"{local_estate.lb_url}/health", timeout=10) as response:
            assert response.status == 200 and json.loads(response.read())["overall"] == "healthy"
