"""The first boot of an instance of the golden image, with no playbook: the container is
made what golden_ami's clean leaves (app stopped, no .env, no instance/, no written maps),
then the app is started as the launch template's user data starts it. The first-boot unit
(chatmrpt-boot.service) reads the parameters from the scenario's emulator (prepare.yml
starts it; the container reaches it as host.containers.internal).

Runs after test_app.py (file order); leaves the host healthy, with the .env the role rendered.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

SCENARIO = Path(__file__).resolve().parent.parent
ROOT = SCENARIO.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import PlaybookRun, base_env  # noqa: E402

RELEASE_PARAMETER = "/chatmrpt/molecule/release"
APP = "/srv/chatmrpt/ChatMRPT"
# Role deploy's `record` entry point as playbooks/deploy.yml runs it after a rollout: two
# hosts deployed or up to date with the release, an Auto Scaling group's instance skipped.
RECORD = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.add_host:
        name: "{{ item.name }}"
        groups: role_app
        app_release_status: {target: "{{ item.target }}"}
        __deploy_action: "{{ item.action }}"
      loop:
        - {name: app-1, target: "{{ release }}", action: deploy}
        - {name: app-2, target: "{{ release }}", action: keep}
        - {name: asg-1, target: an-old-release, action: skip}
    - ansible.builtin.include_role:
        name: deploy
        tasks_from: record
      vars:
        deploy_release_parameter: /chatmrpt/molecule/release
        deploy_region: us-east-2
"""
USER = "chatmrpt"
SHARED = "/srv/chatmrpt/chatmrpt_shared"
PREFIX = "/chatmrpt/molecule/app"
SECRETS = yaml.safe_load((SCENARIO / "vars" / "app.yml").read_text())["app_secret_env"]
# What golden_ami_clean_paths removes under the app's paths (group_vars/all/golden_ami.yml).
CLEANED = ["/etc/chatmrpt-boot-test.ini", f"{SHARED}/.env", f"{SHARED}/instance", f"{SHARED}/app/static/visualizations"]
DIRECTORIES = [f"{SHARED}/instance", f"{SHARED}/instance/logs", f"{SHARED}/app/static/visualizations"]


def _client(service: str):
    return boto3.client(service, endpoint_url=_endpoint(), region_name="us-east-2",
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # pragma: allowlist secret


@pytest.fixture(scope="module")
def ssm():
    client = _client("ssm")
    for name, value in SECRETS.items():
        client.put_parameter(Name=f"{PREFIX}/{name}", Value=value, Type="SecureString", Overwrite=True)
    return client


def _endpoint() -> str:
    return f"http://127.0.0.1:{Path(os.environ['MOLECULE_EPHEMERAL_DIRECTORY'], 'moto.port').read_text().strip()}"


def _record(tmp_path: Path, release: str) -> PlaybookRun:
    play = tmp_path / "record.yml"
    play.write_text(RECORD)
    env = base_env(AWS_ENDPOINT_URL=_endpoint(), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(play),
                           "-e", f"release={release}", "-e", f"ansible_python_interpreter={sys.executable}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def release(host, ssm, tmp_path_factory) -> str:
    """The release the host runs, recorded as a finished deploy records it."""
    current = os.path.basename(host.file(APP).linked_to)
    tmp = tmp_path_factory.mktemp("record")
    first = _record(tmp, current)
    assert first.returncode == 0, first.output[-3000:]
    assert "deploy : Record the release of the environment" in first.changed_tasks(), first.output[-3000:]
    assert ssm.get_parameter(Name=RELEASE_PARAMETER)["Parameter"]["Value"] == current
    again = _record(tmp, current)
    assert again.returncode == 0, again.output[-3000:]
    assert "deploy : Record the release of the environment" not in again.changed_tasks(), again.output[-3000:]
    return current


def test_the_deploy_records_the_release_of_its_hosts(release, ssm):
    assert ssm.get_parameter(Name=RELEASE_PARAMETER)["Parameter"]["Type"] == "String"


def _metric(host, start: dt.datetime) -> list[float]:
    """BootConfigurationFailed values of this instance since `start` (min and max)."""
    stats = _client("cloudwatch").get_metric_statistics(
        Namespace="ChatMRPT", MetricName="BootConfigurationFailed",
        Dimensions=[{"Name": "Environment", "Value": "molecule"},
                    {"Name": "InstanceId", "Value": host.check_output("hostname")}],
        StartTime=start - dt.timedelta(seconds=1), EndTime=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5),
        Period=60, Statistics=["Minimum", "Maximum"],
    )["Datapoints"]
    return sorted({point["Minimum"] for point in stats} | {point["Maximum"] for point in stats})


def _journal(host, since: str) -> str:
    return host.check_output(f"sudo journalctl --no-pager -o cat -u chatmrpt-boot --since '{since}'")


def _as_a_fresh_instance(host) -> str:
    """What an instance of the image starts from; returns the journal time to read from."""
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    host.check_output("sudo systemctl stop chatmrpt chatmrpt-boot")
    host.check_output("sudo systemctl reset-failed chatmrpt-boot chatmrpt || true")
    host.check_output("sudo rm -rf " + " ".join(CLEANED))
    time.sleep(1)  # journal times are to the second
    return since


def _healthy(host) -> dict:
    script = ("import json, urllib.request\n"
              "print(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5).read().decode())\n")
    for _ in range(30):
        result = host.run("python3 -c %s", script)
        if result.rc == 0:
            return yaml.safe_load(result.stdout)
        time.sleep(1)
    raise AssertionError(f"/health never answered: {result.stderr}")


def test_a_fresh_instance_renders_env_as_the_role_and_serves(host, ssm, release):
    rendered = host.check_output(f"sudo cat {SHARED}/.env")
    since = _as_a_fresh_instance(host)
    start = dt.datetime.now(dt.timezone.utc)
    # The launch template's user data does this (roles/aws_compute/templates/user_data.sh.j2).
    host.check_output("sudo systemctl enable --now chatmrpt")
    env = host.file(f"{SHARED}/.env")
    assert host.check_output(f"sudo cat {SHARED}/.env") == rendered  # byte for byte env.j2's output
    assert (env.user, env.group, env.mode) == (USER, USER, 0o600)
    for path in DIRECTORIES:
        directory = host.file(path)
        assert (directory.is_directory, directory.user, directory.mode) == (True, USER, 0o750), path
    assert _healthy(host)["overall"] == "healthy"
    assert host.file(f"{SHARED}/instance/logs/gunicorn-error.log").exists
    journal = _journal(host, since)
    assert f"wrote {SHARED}/.env" in journal, journal
    written = host.file("/etc/chatmrpt-boot-test.ini")
    assert (written.user, written.group, written.mode) == ("root", USER, 0o640)
    assert host.check_output("sudo cat /etc/chatmrpt-boot-test.ini") == f"host = {host.check_output('hostname')}"
    assert f"release {release} is the one recorded in {RELEASE_PARAMETER}" in journal, journal
    assert not [value for value in SECRETS.values() if value in journal]
    assert _metric(host, start) == [0.0]


def test_a_missing_parameter_keeps_the_app_stopped_and_says_which(host, ssm, release):
    ssm.delete_parameter(Name=f"{PREFIX}/OPENAI_API_KEY")
    try:
        since = _as_a_fresh_instance(host)
        start = dt.datetime.now(dt.timezone.utc)
        started = host.run("sudo systemctl start chatmrpt")
        assert started.rc != 0
        assert host.run("systemctl is-failed chatmrpt-boot").stdout.strip() == "failed"
        assert host.run("systemctl is-active chatmrpt").stdout.strip() != "active"
        assert not host.socket("tcp://0.0.0.0:8000").is_listening
        assert not host.file(f"{SHARED}/.env").exists
        journal = _journal(host, since)
        assert f"SSM parameter {PREFIX}/OPENAI_API_KEY is missing" in journal, journal
        assert "chatmrpt is not started" in journal, journal
        assert not [value for value in SECRETS.values() if value in journal]
        assert 1.0 in _metric(host, start)
    finally:
        # Back to a serving host, as the operator does once the parameter exists.
        ssm.put_parameter(Name=f"{PREFIX}/OPENAI_API_KEY", Value=SECRETS["OPENAI_API_KEY"], Type="SecureString",
                          Overwrite=True)
        host.run("sudo systemctl reset-failed chatmrpt-boot chatmrpt")
        host.check_output("sudo systemctl start chatmrpt")
    assert _healthy(host)["overall"] == "healthy"


@pytest.mark.parametrize("recorded, message", [
    ("0123456789ab", "release mismatch: the image has release {release}, the environment records 0123456789ab"),
    (None, "no release recorded in SSM parameter /chatmrpt/molecule/release"),
], ids=["another-release", "none-recorded"])
def test_a_release_other_than_the_recorded_one_is_refused(host, ssm, release, recorded, message):
    if recorded is None:
        ssm.delete_parameter(Name=RELEASE_PARAMETER)
    else:
        ssm.put_parameter(Name=RELEASE_PARAMETER, Value=recorded, Type="String", Overwrite=True)
    try:
        since = _as_a_fresh_instance(host)
        start = dt.datetime.now(dt.timezone.utc)
        assert host.run("sudo systemctl start chatmrpt").rc != 0
        assert host.run("systemctl is-active chatmrpt").stdout.strip() != "active"
        assert not host.file(f"{SHARED}/.env").exists
        journal = _journal(host, since)
        assert message.format(release=release) in journal, journal
        assert 1.0 in _metric(host, start)
    finally:
        ssm.put_parameter(Name=RELEASE_PARAMETER, Value=release, Type="String", Overwrite=True)
        host.run("sudo systemctl reset-failed chatmrpt-boot chatmrpt")
        host.check_output("sudo systemctl start chatmrpt")
    assert _healthy(host)["overall"] == "healthy"
