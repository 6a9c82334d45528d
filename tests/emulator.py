"""Helpers for tests that talk to the session's AWS emulator (fixture `aws_env`)."""

from __future__ import annotations

import contextlib
import urllib.request
from pathlib import Path

import boto3

from helpers import PlaybookRun, base_env, moto_server

REGION = "us-east-2"
# How the tests' emulators answer, unless a test asks otherwise: AWS's managed policies
# loaded (the IAM checks read them), and ACM issuing a requested certificate at its first
# look after the request (AWS: once the DNS records resolve; see tests/aws_accounts.py).
SETTINGS = {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "MOTO_ACM_VALIDATION_WAIT": "0"}


@contextlib.contextmanager
def private_emulator(log: Path, **settings: str):
    """A moto server of the caller's own on a free port, with SETTINGS updated by `settings`;
    yields the environment of an Ansible or boto3 run against it (dummy credentials)."""
    with moto_server(log, **{**SETTINGS, **settings}) as endpoint:
        yield base_env(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                       AWS_SECRET_ACCESS_KEY="testing",  # pragma: allowlist secret
                       AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION)


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
