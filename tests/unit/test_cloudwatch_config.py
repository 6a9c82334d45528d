"""The CloudWatch agent configuration of every environment, rendered from the role's
template with the inventory's variables the way Ansible loads them, validated against the
agent's own JSON schema (vendored in roles/cloudwatch_agent/files/schema.json)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest

from helpers import ROOT, VENV_BIN, base_env

ROLE = ROOT / "roles" / "cloudwatch_agent"
SCHEMA_PATH = ROLE / "files" / "schema.json"
ENVIRONMENTS = {"local": "Local", "staging": "Staging", "production": "Production"}

# Loads the role (its defaults, the argument specs of its validate entry point and its
# cross-variable asserts), then renders its template to the path given in -e.
RENDER_PLAYBOOK = """\
- name: Render the CloudWatch agent configuration
  hosts: chatmrpt-render
  gather_facts: false
  tasks:
    - name: Validate the inputs and load the role's defaults
      ansible.builtin.include_role:
        name: cloudwatch_agent
        tasks_from: validate
        public: true
    - name: Render the template
      ansible.builtin.template:
        src: "{{ __render_template }}"
        dest: "{{ __render_dest }}"
        mode: "0600"
      delegate_to: localhost
"""


def render(inventory_env: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """Render the role's template with inventories/<env>/group_vars (a host in group all)."""
    inventory = workdir / inventory_env
    inventory.mkdir(parents=True, exist_ok=True)
    # The environment's group_vars directory next to a static one-host inventory: Ansible
    # loads it exactly as for the dynamic inventory (000_shared first, then the overrides).
    (inventory / "hosts.yml").write_text(
        "all:\n  hosts:\n    chatmrpt-render:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    link = inventory / "group_vars"
    if not link.exists():
        link.symlink_to(ROOT / "inventories" / inventory_env / "group_vars")
    playbook = workdir / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK)
    out = workdir / f"{inventory_env}.json"
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory / "hosts.yml"), str(playbook),
         "-e", f"__render_template={ROLE / 'templates' / 'amazon-cloudwatch-agent.json.j2'}",
         "-e", f"__render_dest={out}", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=base_env(ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
                     ANSIBLE_CACHE_PLUGIN="memory"),
    )


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
    assert ["AutoScalingGroupName"] in metrics["aggregation_dimensions"]
    assert config["agent"]["region"] == "us-east-2"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_logs(env, configs):
    collect = configs[env]["logs"]["logs_collected"]["files"]["collect_list"]
    logs = "/home/ec2-user/chatmrpt_shared/instance/logs"  # the app role's persistent instance/ (group_vars)
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
    assert "every name in cloudwatch_agent_aggregation_dimensions must be one of them" in proc.stdout + proc.stderr
