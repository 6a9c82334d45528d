"""The main job end to end, as a newcomer runs it: `make demo` twice on a clean lab (the
session's shared `local_estate`), then `make lab-down` after every other test."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import ROOT, VENV_BIN, PlaybookRun, base_env

pytestmark = pytest.mark.slow

LAB = [str(VENV_BIN / "python"), "lab/lab.py"]


def sh(*cmd: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=timeout)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def demo_runs(local_estate):
    return local_estate.first, local_estate.second


def test_first_run_converges(demo_runs):
    first, _ = demo_runs
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-4000:]


def test_second_run_changes_nothing(demo_runs):
    _, second = demo_runs
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-4000:]
    run = PlaybookRun(second.returncode, second.stdout)
    assert run.recap, "no play recap in the second run"
    assert run.changed == 0, f"second run changed: {run.changed_tasks()}"


def test_summary_shows_the_app_answering(demo_runs):
    _, second = demo_runs
    answering = re.findall(r"instance i-\w+ .*: (http://\S+/health) -> HTTP 200, overall=healthy", second.stdout)
    assert answering, second.stdout[-3000:]
    assert "tear down: make lab-down" in second.stdout


def health(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_the_app_reaches_redis_and_health_turns_degraded_while_redis_is_down(local_estate):
    """The lab's redis-server stands in for ElastiCache: aws_cache recorded it, the app role
    wrote REDIS_* into .env, the app authenticates and pings it. Stopped, /health says
    degraded (still 200, like ChatMRPT); started again, healthy."""
    # through the load balancer (earlier tests may have replaced instances), a few times: it
    # spreads the requests over the instances
    urls = [f"{local_estate.lb_url}/health"] * 4
    lab = local_estate.lab
    assert all(health(url)["services"].get("redis") == "healthy" for url in urls), [health(u) for u in urls]
    config = Path(lab["redis_pidfile"]).with_name("redis.conf")
    os.kill(int(Path(lab["redis_pidfile"]).read_text()), signal.SIGTERM)
    try:
        assert until(lambda: not port_open(lab["redis_port"]))
        down = [health(url) for url in urls]
        assert all(h["services"]["redis"].startswith("degraded") and h["overall"] == "degraded" for h in down), down
    finally:
        subprocess.run(["redis-server", str(config)], check=True, capture_output=True, timeout=30)
    assert until(lambda: all(health(url)["services"].get("redis") == "healthy" for url in urls)), \
        [health(u) for u in urls]


def test_the_lab_services_listen_on_the_loopback_and_the_lab_bridge_only(local_estate):
    """The emulator (which holds the lab's secrets and asks for no credentials), PostgreSQL and
    Redis: reachable from this host and from the instances (host.containers.internal is the
    bridge's gateway), from no other interface; HAProxy on the loopback only."""
    lab, env = local_estate.lab, local_estate.env
    hosts = sh("podman", "exec", sh("podman", "ps", "--filter", f"label=io.chatmrpt.lab={lab['name']}",
                                    "--format", "{{.Names}}").stdout.split()[0], "getent", "hosts",
               "host.containers.internal").stdout.split()
    assert hosts[0] == lab["gateway"], hosts

    def listening(port):
        out = sh("ss", "-Hltn", f"sport = :{port}").stdout.split("\n")
        return sorted(line.split()[3].rsplit(":", 1)[0] for line in out if line.strip())

    for port in ("CHATMRPT_LAB_MOTO_PORT", "CHATMRPT_LAB_PG_PORT", "CHATMRPT_LAB_REDIS_PORT"):
        assert listening(env[port]) == sorted(["127.0.0.1", lab["gateway"]]), (port, listening(env[port]))
    assert listening(env["CHATMRPT_LAB_LB_PORT"]) == ["127.0.0.1"]


def ec2_client(env: dict[str, str]):
    import boto3

    return boto3.client("ec2", region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def in_container(env: dict[str, str], name: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", name, *cmd], env=env, capture_output=True, text=True, timeout=60)


def test_the_app_instances_ran_their_user_data_through_cloud_init(local_estate):
    """The controller booted each app instance with the user data aws_compute gave it
    (roles/aws_compute/templates/user_data.sh.j2), through real cloud-init."""
    env = local_estate.env
    app = [i["InstanceId"] for r in ec2_client(env).describe_instances(Filters=[
        {"Name": "tag:Role", "Values": ["app"]}, {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
        for i in r["Instances"]]
    assert app
    for instance_id in app:
        status = in_container(env, instance_id, "cloud-init", "status", "--long")
        assert "status: done" in status.stdout, status.stdout + status.stderr
        recorded = in_container(env, instance_id, "cat", "/etc/chatmrpt/environment").stdout
        assert "CHATMRPT_ENVIRONMENT=local" in recorded, recorded


def test_an_instance_started_through_the_emulator_alone_gets_a_container_and_loses_it(local_estate):
    """Only the emulator's API: RunInstances gives a container (its private IP, its user data
    run by cloud-init at boot); TerminateInstances removes it, as EC2 would."""
    env, ec2 = local_estate.env, ec2_client(local_estate.env)
    subnet = ec2.describe_subnets(Filters=[{"Name": "tag:Environment", "Values": ["local"]}])["Subnets"][0]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    script = "#!/bin/bash\necho ran by cloud-init as $(cloud-init query v1.instance_id) > /root/user-data-ran\n"
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, UserData=script,
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                     {"Key": "Name", "Value": "controller-test"}]}])["Instances"][0]
    instance_id = instance["InstanceId"]
    try:
        marker = until(lambda: in_container(env, instance_id, "cat", "/root/user-data-ran").stdout, timeout=120)
        assert marker.strip() == f"ran by cloud-init as {instance_id}"
        address = sh("podman", "inspect", instance_id, "--format",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}").stdout.strip()
        assert address == instance["PrivateIpAddress"]
        assert "status: done" in in_container(env, instance_id, "cloud-init", "status", "--wait").stdout
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])
    assert until(lambda: sh("podman", "container", "exists", instance_id).returncode == 1, timeout=30)
    log = (Path(env["CHATMRPT_LAB_STATE_DIR"]) / "controller.log").read_text()
    assert f"started {instance_id}" in log and f"removed {instance_id}" in log, log[-2000:]


def test_lab_status_shows_the_controller(local_estate):
    status = sh(*LAB, "status")
    assert status.returncode == 0, status.stdout
    assert re.search(r"^lab controller +up$", status.stdout, re.MULTILINE), status.stdout


@pytest.mark.estate_teardown
def test_lab_down_leaves_nothing(local_estate):
    lab, env = local_estate.lab, local_estate.env
    assert sh(*LAB, "down").returncode == 0
    containers = sh("podman", "ps", "-a", "--filter", f"label=io.chatmrpt.lab={lab['name']}", "--format", "{{.Names}}").stdout
    assert containers.strip() == ""
    assert sh("podman", "network", "exists", lab["network"]).returncode != 0
    assert sh("ip", "link", "show", lab["bridge"]).returncode != 0, "the lab's bridge is left"
    for port in ("CHATMRPT_LAB_MOTO_PORT", "CHATMRPT_LAB_PG_PORT", "CHATMRPT_LAB_REDIS_PORT", "CHATMRPT_LAB_LB_PORT"):
        assert not port_open(int(env[port])), f"{port} still answers"
    assert not Path(env["CHATMRPT_LAB_STATE_DIR"]).exists()
    assert sh(*LAB, "status").returncode == 1
