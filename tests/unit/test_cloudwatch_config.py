"""The CloudWatch agent configuration of every environment, rendered from the role's
template with the inventory's variables the way Ansible loads them, validated against the
agent's own JSON schema (vendored in roles/cloudwatch_agent/files/schema.json)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
import yaml

from cloudwatch_model import OTHER_PUBLISHERS, ROLE, published_dimension_sets, render, unpublished
from helpers import ROOT

SCHEMA_PATH = ROLE / "files" / "schema.json"
ENVIRONMENTS = {"local": "Local", "staging": "Staging", "production": "Production"}

@pytest.fixture(scope="module")
def schema():
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """{env: parsed configuration}, the three environments rendered in parallel."""
    workdir = tmp_path_factory.mktemp("cwagent")
    with ThreadPoolExecutor(max_workers=len(ENVIRONMENTS)) as pool:
        runs = dict(zip(ENVIRONMENTS, pool.map(lambda env: render(env, workdir), ENVIRONMENTS)))
    for env, proc in runs.items():
        assert proc.returncode == 0, f"{env}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return {env: json.loads((workdir / f"{env}.json").read_text()) for env in ENVIRONMENTS}


def validation_errors(schema, config):
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [error.message for error in validator.iter_errors(config)]


def test_schema_is_the_agents_draft4_schema_with_its_licence(schema):
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert {"agent", "metrics", "logs"} <= set(schema["properties"])
    licence = (ROLE / "files" / "schema.LICENSE").read_text()
    assert "MIT License" in licence and "Amazon.com" in licence


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rendered_config_matches_the_agent_schema(env, configs, schema):
    assert validation_errors(schema, configs[env]) == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_metrics(env, configs):
    config = configs[env]
    metrics = config["metrics"]
    assert metrics["namespace"] == f"ChatMRPT/{ENVIRONMENTS[env]}"
    assert config["agent"]["metrics_collection_interval"] == 60
    collected = metrics["metrics_collected"]
    assert {name: section["metrics_collection_interval"] for name, section in collected.items()} == {
        "cpu": 60, "mem": 60, "disk": 60}
    assert "usage_active" in collected["cpu"]["measurement"] and collected["cpu"]["totalcpu"] is True
    assert "mem_used_percent" in collected["mem"]["measurement"]
    assert {"used_percent", "free"} <= set(collected["disk"]["measurement"])
    assert "/" in collected["disk"]["resources"]
    assert metrics["append_dimensions"] == {
        "InstanceId": "${aws:InstanceId}", "AutoScalingGroupName": "${aws:AutoScalingGroupName}"}
    assert ["InstanceId"] in metrics["aggregation_dimensions"]
    assert ["InstanceId", "path"] in metrics["aggregation_dimensions"]
    assert ["AutoScalingGroupName"] in metrics["aggregation_dimensions"]
    assert config["agent"]["region"] == "us-east-2"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_logs(env, configs):
    collect = configs[env]["logs"]["logs_collected"]["files"]["collect_list"]
    logs = "/srv/chatmrpt/chatmrpt_shared/instance/logs"  # the app role's persistent instance/ (group_vars)
    assert {entry["file_path"]: entry["log_stream_name"] for entry in collect} == {
        f"{logs}/gunicorn-error.log": "{instance_id}/gunicorn-error",
        f"{logs}/gunicorn-access.log": "{instance_id}/gunicorn-access",
    }
    for entry in collect:
        assert entry["log_group_name"] == f"/aws/ec2/chatmrpt/{env}"
        assert entry["retention_in_days"] == 7


@pytest.mark.parametrize("setting, value", [
    (("agent", "metrics_collection_interval"), "sixty"),
    (("metrics", "metrics_collected", "mem", "metrics_collection_interval"), 0),
    (("logs", "logs_collected", "files", "collect_list", 0, "retention_in_days"), 8),
    (("metrics", "namespace"), ""),
])
def test_schema_refuses_an_invalid_setting(setting, value, configs, schema):
    config = copy.deepcopy(configs["production"])
    target = config
    for key in setting[:-1]:
        target = target[key]
    target[setting[-1]] = value
    assert validation_errors(schema, config), f"{setting} = {value!r} passed the schema"


def test_host_validator_refuses_what_the_schema_refuses(configs, tmp_path):
    """files/validate-config.py (the template's validate: command on hosts) agrees."""
    script = ROLE / "files" / "validate-config.py"
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(configs["staging"]))
    broken = copy.deepcopy(configs["staging"])
    broken["agent"]["metrics_collection_interval"] = "sixty"
    bad.write_text(json.dumps(broken))
    ok = subprocess.run([sys.executable, str(script), str(SCHEMA_PATH), str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    ko = subprocess.run([sys.executable, str(script), str(SCHEMA_PATH), str(bad)], capture_output=True, text=True)
    assert ko.returncode == 1
    assert "agent/metrics_collection_interval: 'sixty' is not of type 'integer'" in ko.stderr


def test_role_refuses_a_non_integer_interval(tmp_path):
    proc = render("production", tmp_path, "-e", "cloudwatch_agent_metrics_collection_interval=sixty")
    assert proc.returncode != 0
    assert "cloudwatch_agent_metrics_collection_interval" in proc.stdout + proc.stderr


def test_role_refuses_an_aggregation_on_a_missing_dimension(tmp_path):
    proc = render("staging", tmp_path, "-e", '{"cloudwatch_agent_aggregation_dimensions": [["InstanceType"]]}')
    assert proc.returncode != 0
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "every name in cloudwatch_agent_aggregation_dimensions must be one of them or a plugin's own" in said


# --- The dimension sets the agent publishes (tests/cloudwatch_model.py) -------------------

def alarm(metric, namespace="ChatMRPT/Staging", **dimensions):
    return {"AlarmName": f"{metric}{sorted(dimensions)}", "Namespace": namespace, "MetricName": metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]}


def test_disk_metrics_are_published_per_instance_and_mount_point(configs):
    config = configs["staging"]
    outside, inside = (published_dimension_sets(config, in_asg=a) for a in (False, True))
    assert frozenset({"InstanceId", "path", "device", "fstype"}) in outside["disk_used_percent"]
    assert frozenset({"InstanceId", "path"}) in outside["disk_used_percent"]
    assert frozenset({"InstanceId", "path"}) in inside["disk_free"]
    assert frozenset({"AutoScalingGroupName"}) in inside["disk_used_percent"]
    assert frozenset({"AutoScalingGroupName"}) not in outside["mem_used_percent"]
    assert outside["mem_used_percent"] == {frozenset({"InstanceId"})}
    assert frozenset({"InstanceId", "path"}) not in inside["mem_used_percent"]


def test_an_alarm_on_a_set_the_agent_does_not_publish_is_found(configs):
    config = configs["staging"]
    good = [alarm("disk_used_percent", InstanceId="i-1", path="/"),
            alarm("disk_free", InstanceId="i-1", path="/", device="nvme0n1p1", fstype="xfs"),
            alarm("mem_used_percent", AutoScalingGroupName="G"),
            alarm("BackupSuccess", Environment="staging", Host="i-1"),
            alarm("CPUUtilization", "AWS/EC2", InstanceId="i-1"),
            alarm("UnHealthyHostCount", "AWS/ApplicationELB", LoadBalancer="app/x/1", TargetGroup="targetgroup/y/2")]
    assert unpublished(good, config) == []
    bad = [alarm("disk_used_percent", InstanceId="i-1", path="/", fstype="xfs"),
           alarm("mem_used_percent", InstanceId="i-1", path="/"),
           alarm("BackupSuccess", Host="i-1"),
           alarm("CPUUtilization", "AWS/EC2", InstanceId="i-1", path="/"),
           alarm("UnHealthyHostCount", "AWS/ApplicationELB", LoadBalancer="app/x/1")]
    assert [p.split(":")[0] for p in unpublished(bad, config)] == [a["AlarmName"] for a in bad]


def test_without_the_instance_and_path_aggregation_the_disk_alarm_is_not_published(configs):
    """The agent configuration before this check existed aggregated on [InstanceId] and
    [AutoScalingGroupName] only: the per-instance disk alarms watched nothing."""
    config = copy.deepcopy(configs["staging"])
    config["metrics"]["aggregation_dimensions"].remove(["InstanceId", "path"])
    problems = unpublished([alarm("disk_used_percent", InstanceId="i-1", path="/")], config)
    assert len(problems) == 1 and "['InstanceId', 'path'] is not published" in problems[0]


def test_the_cost_report_counts_the_metrics_and_alarms_that_exist(configs):
    """group_vars/all/cost.yml's CloudWatch counts are what the agent publishes per instance
    (every set but the group's, which is shared) plus BackupSuccess, and what the monitoring
    role creates."""
    usage = yaml.safe_load((ROOT / "group_vars" / "all" / "cost.yml").read_text())["chatmrpt_cost_usage"]
    in_group = published_dimension_sets(configs["production"], in_asg=True)
    per_instance = sum(len(sets - {frozenset({"AutoScalingGroupName"})}) for sets in in_group.values())
    assert usage["metrics_per_instance"] == per_instance + len(OTHER_PUBLISHERS)
    specs = yaml.safe_load((ROOT / "roles" / "aws_monitoring" / "vars" / "main.yml").read_text())
    assert usage["alarms_per_instance"] == len(specs["__aws_monitoring_instance_alarm_specs"])
    assert usage["alarms_fixed"] == len(specs["__aws_monitoring_asg_alarm_specs"]) + len(
        specs["__aws_monitoring_alb_alarm_specs"])
