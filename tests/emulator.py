"""Helpers for tests that talk to the session's AWS emulator (fixture `aws_env`)."""

from __future__ import annotations

import urllib.request

import boto3

from helpers import PlaybookRun

REGION = "us-east-2"


def client(aws_env, service, region=REGION):
    """A boto3 client on the emulator, with its dummy credentials."""
    return boto3.client(service, region_name=region, endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # pragma: allowlist secret


def reset_moto(aws_env):
    """Empty the emulator (AWS managed policies and the default VPC come back with it)."""
    request = urllib.request.Request(f"{aws_env['AWS_ENDPOINT_URL']}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def tags_of(items, key="Key", value="Value"):
    return {t[key]: t[value] for t in items or []}


def expected_tags(env, role):
    return {"Project": "chatmrpt", "Environment": env, "ManagedBy": "ansible", "Role": role}


def run_ok(run: PlaybookRun) -> PlaybookRun:
    """The run succeeded: exit 0, and no host failed or was unreachable."""
    assert run.returncode == 0, run.output[-8000:]
    assert run.recap and all(h["failed"] == 0 and h["unreachable"] == 0 for h in run.recap.values()), run.output[-8000:]
    return run


def group(aws_env, name):
    """The one security group of that name."""
    groups = client(aws_env, "ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    assert len(groups) == 1, f"{name}: {len(groups)} groups"
    return groups[0]


def running_app_instances(aws_env, environment="local"):
    """The running app instances (tag Role=app) of an environment, as EC2 describes them."""
    reservations = client(aws_env, "ec2").describe_instances(Filters=[
        {"Name": "tag:Environment", "Values": [environment]}, {"Name": "tag:Role", "Values": ["app"]},
        {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
    return [i for r in reservations for i in r["Instances"]]
