"""The cost report reads the real settings (as a table, JSON and a chart), `diff` prices a change
of variables before it is applied, and the budget guard stops an apply that would overrun the
budget before the first AWS call."""

from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree

import boto3
import pytest

from helpers import ROOT, run_playbook


def report(tmp_path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "cost.json"
    proc = subprocess.run([sys.executable, "-m", "chatmrpt_cost", "report", "--json", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(ROOT / "tools")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_report_prices_the_estates_own_settings(tmp_path):
    text, data = report(tmp_path)
    envs = {env["environment"]: env for env in data["environments"]}
    assert set(envs) == {"staging", "production"}
    # Production runs the load balancer, staging the RDS database: read from group_vars.
    production_items = {row["item"] for row in envs["production"]["items"]["desired"]}
    staging_items = {row["item"] for row in envs["staging"]["items"]["desired"]}
    assert "Application Load Balancer" in production_items
    assert "RDS PostgreSQL instance" in staging_items
    # The totals add up, and the yearly share is against the summed budget.
    assert data["total_monthly"]["max"] == pytest.approx(sum(e["monthly"]["max"] for e in envs.values()), abs=0.01)
    assert data["budget_yearly"] > 0 and data["prices"]["as_of"]
    # Beside the hand-made figures, each difference explained.
    cases = {case["reference_monthly"]: case for case in data["reference_comparison"]}
    assert set(cases) == {139, 339}
    for case in cases.values():
        for line in case["lines"]:
            if abs(line["difference"]) >= 0.01:
                assert line["why"], f"unexplained difference in {line['category']}"
    assert "Load balancer" in {line["category"] for line in cases[139]["lines"] if line["reference"] == 0}
    assert "reference $139.00" in text and "reference $339.00" in text


@pytest.mark.parametrize("override", [
    # Staging's budget is $3,000 a year; at ASG max 1 with t3.medium it costs about $1,600.
    ["-e", "aws_compute_asg_max_size=6"],            # 7 x t3.medium at max: about $3,400
    # The largest allowed type against a $2,000 budget, which t3.medium passes (test below).
    ["-e", "aws_compute_instance_type=t3.large", "-e", "chatmrpt_budget_yearly=2000"],  # about $2,330
])
def test_guard_stops_the_apply_before_any_aws_call(override, aws_env):
    session = boto3.Session(aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-2")
    s3 = session.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
    ec2 = session.client("ec2", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
    buckets_before = s3.list_buckets()["Buckets"]
    groups_before = ec2.describe_security_groups()["SecurityGroups"]
    run = run_playbook("infrastructure.yml", "staging", *override, env=aws_env)
    assert run.returncode != 0
    assert "exceeds chatmrpt_budget_yearly" in run.output
    assert "EC2 instances (Auto Scaling Group)" in run.output  # the biggest item is named
    assert "chatmrpt_budget_override=true" in run.output
    assert s3.list_buckets()["Buckets"] == buckets_before
    assert ec2.describe_security_groups()["SecurityGroups"] == groups_before


def test_guard_passes_within_the_budget(aws_env):
    run = run_playbook("validate.yml", "staging", "-e", "chatmrpt_budget_yearly=2000", env=aws_env)
    assert run.returncode == 0, run.output[-3000:]


def test_override_lets_the_guard_pass(aws_env):
    run = run_playbook("validate.yml", "staging", "-e", "aws_compute_asg_max_size=6",
                       "-e", "chatmrpt_budget_override=true", env=aws_env)
    assert run.returncode == 0, run.output[-3000:]


def cost(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatmrpt_cost", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin",
                                            "PYTHONPATH": str(ROOT / "tools")})


def test_report_chart_draws_each_environment_against_its_budget(tmp_path):
    chart = tmp_path / "cost.svg"
    _text, data = report(tmp_path, "--chart", str(chart))
    svg = ElementTree.parse(chart).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    drawn = {(e.get("data-environment"), e.get("data-series")): e for e in svg.iter() if e.get("data-series")}
    expected = {}
    for env in data["environments"]:
        name = env["environment"]
        expected[(name, "now")] = env["monthly"]["desired"]
        expected[(name, "max")] = env["monthly"]["max"]
        expected[(name, "budget")] = env["budget_yearly"] / 12
    assert {key: float(e.get("data-value")) for key, e in drawn.items()} == pytest.approx(expected, abs=0.005)
    # One scale for every bar and line: dollars per pixel, from a common baseline.
    bars = [e for (_n, series), e in drawn.items() if series != "budget"]
    baselines = {round(float(b.get("y")) + float(b.get("height")), 1) for b in bars}
    assert len(baselines) == 1
    (base,) = baselines
    scales = [float(b.get("height")) / float(b.get("data-value")) for b in bars]
    scale = max(scales)
    assert scale - min(scales) < 0.001 * scale, scales
    for (_name, series), line in drawn.items():
        if series == "budget":
            assert float(line.get("y1")) == pytest.approx(base - scale * float(line.get("data-value")), abs=0.2)


def test_diff_prices_a_change_per_item(tmp_path):
    out = tmp_path / "diff.json"
    proc = cost("diff", "--env", "production", "-e", "aws_compute_asg_max_size=5", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (production,) = json.loads(out.read_text())["environments"]
    changed = {row["item"]: row for row in production["items"] if row["change_desired"] or row["change_max"]}
    # production's group goes from 1 to 5 at most: four more instances, each with its volume and metrics.
    assert sorted(changed) == ["CloudWatch agent metrics (Auto Scaling Group)", "EBS root volumes (Auto Scaling Group)",
                               "EC2 instances (Auto Scaling Group)"]
    assert all(row["change_desired"] == 0 for row in changed.values())
    ec2 = changed["EC2 instances (Auto Scaling Group)"]
    assert ec2["change_max"] == pytest.approx(4 * 0.0416 * 730, abs=0.02)
    assert ec2["after_max"] == pytest.approx(5 * ec2["before_max"], abs=0.02)
    yearly = production["yearly_max"]
    assert yearly["after"] - yearly["before"] == pytest.approx(12 * sum(r["change_max"] for r in changed.values()), abs=0.1)
    assert "production: what `-e aws_compute_asg_max_size=5` changes, per month" in proc.stdout
    assert "EC2 instances (Auto Scaling Group)" in proc.stdout and "+121.47" in proc.stdout


def test_diff_reads_an_override_file_and_says_when_nothing_changes(tmp_path):
    override = tmp_path / "override.yml"
    override.write_text("aws_compute_instance_type: t3.large\n")
    proc = cost("diff", "--env", "staging", "-e", f"@{override}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split("  ")[1].strip() for line in proc.stdout.splitlines() if line.startswith("  EC2")}
    assert lines == {"EC2 instances (hand-managed)", "EC2 instances (Auto Scaling Group)"}
    same = cost("diff", "--env", "staging", "-e", "aws_compute_asg_max_size=1")
    assert same.returncode == 0 and "nothing: the same resources at the same prices" in same.stdout, same.stdout
