"""Role `cloudwatch_agent` (package install switched off, a stand-in agent from
prepare.yml): the configuration file, its schema, the control script call and the service."""

import json
from pathlib import Path

import jsonschema
import pytest

CONFIG = "/opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json"
CTL = "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"
VALIDATOR = "/usr/local/lib/chatmrpt-cloudwatch-agent"
SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "roles/cloudwatch_agent/files/schema.json").read_text())


@pytest.fixture(scope="module")
def config(host):
    return json.loads(host.file(CONFIG).content_string)


def test_config_file_owner_and_mode(host):
    conf = host.file(CONFIG)
    assert conf.is_file
    assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o640)


def test_config_matches_the_agent_schema(config):
    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    assert [error.message for error in validator.iter_errors(config)] == []


def test_config_content(config):
    assert config["metrics"]["namespace"] == "ChatMRPT/Staging"
    assert config["agent"]["metrics_collection_interval"] == 60
    assert config["metrics"]["append_dimensions"]["InstanceId"] == "${aws:InstanceId}"
    assert ["AutoScalingGroupName"] in config["metrics"]["aggregation_dimensions"]
    streams = {entry["log_stream_name"]: entry["log_group_name"]
               for entry in config["logs"]["logs_collected"]["files"]["collect_list"]}
    assert streams == {"{instance_id}/gunicorn-error": "/aws/ec2/chatmrpt/staging",
                       "{instance_id}/gunicorn-access": "/aws/ec2/chatmrpt/staging"}


def test_host_validator_accepts_the_config_and_refuses_a_broken_one(host):
    ok = host.run(f"{VALIDATOR}/validate-config.py {VALIDATOR}/schema.json {CONFIG}")
    assert ok.rc == 0, ok.stderr
    broken = host.run(
        "python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); "
        "c[\"logs\"][\"logs_collected\"][\"files\"][\"collect_list\"][0][\"retention_in_days\"]=8; "
        "json.dump(c, open(\"/tmp/broken.json\", \"w\"))' " + CONFIG
        + f" && {VALIDATOR}/validate-config.py {VALIDATOR}/schema.json /tmp/broken.json")
    assert broken.rc == 1
    assert "retention_in_days: 8 is not one of" in broken.stderr
    assert host.file(f"{VALIDATOR}/schema.LICENSE").contains("MIT License")


def test_config_loaded_once_with_fetch_config(host):
    """Converge loaded it; the idempotence run and the check runs did not call again."""
    calls = host.file("/var/log/amazon-cloudwatch-agent-ctl.calls").content_string.splitlines()
    assert calls == [f"-a fetch-config -m ec2 -s -c file:{CONFIG}"]
    loaded = host.file("/opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.d/file_amazon-cloudwatch-agent.json")
    assert json.loads(loaded.content_string) == json.loads(host.file(CONFIG).content_string)


def test_service_enabled_and_running(host):
    service = host.service("amazon-cloudwatch-agent")
    assert service.is_enabled and service.is_running
