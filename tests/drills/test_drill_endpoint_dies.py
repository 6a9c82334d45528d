"""Fault drill: the AWS endpoint dies in the middle of an apply.

infrastructure.yml of the local environment builds the whole AWS side on an empty private
emulator through a recording proxy (drills_proxy). After a few write requests the proxy
stops listening, as an endpoint that goes away: the write in flight never arrives and
every later connection is refused. The emulator keeps its state (killing moto itself
would lose it), like AWS keeps what it had done when the network goes.

Asserted: the run fails, clearly (non-zero, a failed task whose error says the endpoint
could not be reached, nothing reported as done after it); once the endpoint is back a
rerun converges; a third run changes nothing; and every named resource exists exactly
once (no duplicate VPC, subnet, route table, security group, target group, load balancer,
bucket, role, parameter). The runs apply the roles that create those resources
(network, iam, storage, secrets, loadbalancer): compute and monitoring are left out to keep
the drill short (tests/aws covers their reruns).
"""

from __future__ import annotations

import os

import pytest

from drills_estate import ansible_playbook, failed_task
from drills_proxy import RecordingProxy
from emulator import client, reset_moto

pytestmark = pytest.mark.slow

PREFIX = "ChatMRPT-Local"
# The roles that create the named resources the drill counts (compute and monitoring, which
# only name what these made, are left out to keep the drill short; tests/aws covers them).
TAGS = ("--tags", "network,iam,storage,secrets,loadbalancer")
# The write after which the endpoint dies: inside the network role, after the VPC and
# before its subnets and groups are all there.
KILL_AFTER_WRITES = 3


@pytest.fixture(scope="module")
def interrupted(aws_env):
    reset_moto(aws_env)
    proxy = RecordingProxy(aws_env["AWS_ENDPOINT_URL"]).start()
    env = {**aws_env, "AWS_ENDPOINT_URL": proxy.url,
           # The local inventory's lab settings, without a lab (nothing here starts containers).
           "CHATMRPT_LAB_SUBNET": "10.231.0.0/16", "CHATMRPT_LAB_PG_PORT": "55432",
           "CHATMRPT_LAB_STATE_DIR": os.environ.get("TMPDIR", "/tmp")}
    try:
        proxy.kill_after_writes(KILL_AFTER_WRITES)
        first = ansible_playbook(env, "local", "playbooks/infrastructure.yml", *TAGS, timeout=1200)
        writes_before_death = [call.operation for call in proxy.writes()]
        proxy.kill_after_writes(None)
        proxy.start()  # the endpoint comes back on the same port
        second = ansible_playbook(env, "local", "playbooks/infrastructure.yml", *TAGS, timeout=1200)
        third = ansible_playbook(env, "local", "playbooks/infrastructure.yml", *TAGS, timeout=1200)
    finally:
        proxy.stop()
    yield {"first": first, "second": second, "third": third, "writes_before_death": writes_before_death}
    reset_moto(aws_env)


def test_the_interrupted_run_fails_clearly(interrupted):
    first = interrupted["first"]
    assert len(interrupted["writes_before_death"]) == KILL_AFTER_WRITES + 1, interrupted["writes_before_death"]
    assert first.returncode != 0, first.output[-5000:]
    assert first.recap["localhost"]["failed"] == 1, first.recap
    assert failed_task(first.output), first.output[-5000:]
    failures = [line for line in first.output.splitlines() if line.startswith(("fatal:", "failed: ["))]
    assert any("Could not connect to the endpoint URL" in line for line in failures), failures


def test_the_rerun_converges_and_a_third_run_changes_nothing(interrupted, drill):
    second, third = interrupted["second"], interrupted["third"]
    assert second.returncode == 0, second.output[-6000:]
    assert second.recap["localhost"]["failed"] == 0
    assert third.returncode == 0, third.output[-6000:]
    assert third.changed == 0, third.changed_tasks()
    drill.survived("endpoint died mid-apply",
                   after=("test_the_interrupted_run_fails_clearly", "test_every_named_resource_exists_once"))


def _names(items, key="Tags"):
    return [{t["Key"]: t["Value"] for t in item.get(key) or []}.get("Name") for item in items]


def test_every_named_resource_exists_once(interrupted, aws_env, drill):
    ec2 = client(aws_env, "ec2")
    filters = [{"Name": "tag:Environment", "Values": ["local"]}]
    found = {
        "vpc": _names(ec2.describe_vpcs(Filters=filters)["Vpcs"]),
        "subnet": _names(ec2.describe_subnets(Filters=filters)["Subnets"]),
        "internet gateway": _names(ec2.describe_internet_gateways(Filters=filters)["InternetGateways"]),
        "route table": _names(ec2.describe_route_tables(Filters=filters)["RouteTables"]),
        "security group": [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]
                           if g["GroupName"].startswith(PREFIX)],
        "target group": [g["TargetGroupName"] for g in client(aws_env, "elbv2").describe_target_groups()["TargetGroups"]],
        "load balancer": [b["LoadBalancerName"] for b in client(aws_env, "elbv2").describe_load_balancers()["LoadBalancers"]],
        "bucket": [b["Name"] for b in client(aws_env, "s3").list_buckets()["Buckets"]],
        "IAM role": [r["RoleName"] for r in client(aws_env, "iam").list_roles()["Roles"] if r["RoleName"].startswith(PREFIX)],
        "SSM parameter": [p["Name"] for page in client(aws_env, "ssm").get_paginator("describe_parameters").paginate()
                          for p in page["Parameters"]],
    }
    duplicates = {kind: sorted({n for n in names if names.count(n) > 1}) for kind, names in found.items()}
    duplicates = {kind: names for kind, names in duplicates.items() if names}
    unnamed = {kind: names.count(None) for kind, names in found.items() if None in names}
    drill.compared(mismatches=len(duplicates) + len(unnamed), comparisons=len(found))
    for kind in ("vpc", "subnet", "security group", "target group", "load balancer", "bucket", "IAM role",
                 "SSM parameter"):
        assert found[kind], f"no {kind} at all: {found}"
    assert not duplicates, f"duplicate resources after the interrupted run: {duplicates}"
    assert not unnamed, f"resources without a Name tag (orphans of the interrupted run?): {unnamed}"
    assert len(found["vpc"]) == 1 and len(found["subnet"]) == 2, found
