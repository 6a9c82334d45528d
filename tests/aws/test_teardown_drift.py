"""The drift check (scripts/drift_check.py) and the teardown (playbooks/teardown.yml) on a
fully applied staging (every tag, CloudFront switched on so that the teardown proves it
removes a distribution too).

Sharing the session moto: this module resets the emulator when it starts and when it is
done. pytest runs test modules one after the other, so no other module relies on the
emulator meanwhile; the reset gives this module a known account and leaves none of its
resources to the modules after it.

Emulator settings (not exceptions of the code under test):
- aws_database_storage_type=gp2: moto answers a gp3 RDS instance without
  StorageThroughput and rds_instance crashes on a second run (tests/aws/test_core.py
  passes the same).
- the operator's OpenAI key is stored first, as an operator does (aws_secrets refuses to
  run without it).
- the teardown gets aws_database_skip_final_snapshot=true: staging's final snapshot would
  otherwise be kept on purpose, and this test asserts that nothing is left.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emulator import client, reset_moto, run_ok
from helpers import ROOT, run_playbook

pytestmark = pytest.mark.slow

ENV = "staging"
PREFIX = "ChatMRPT-Staging"
LOWER = "chatmrpt-staging"
APPLY_VARS = ("-e", "aws_cdn_enabled=true", "-e", "aws_database_storage_type=gp2")
TEARDOWN_VARS = ("-e", "aws_database_skip_final_snapshot=true", "-e", "aws_storage_force_destroy=true")


def drift_check(aws_env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/drift_check.py", ENV, *args, "--", *APPLY_VARS],
                          cwd=ROOT, env=aws_env, capture_output=True, text=True, timeout=1800)


def alarms(aws_env, prefix):
    pages = client(aws_env, "cloudwatch").get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix)
    return {a["AlarmName"]: a for page in pages for a in page["MetricAlarms"]}


@pytest.fixture(scope="module")
def converged(aws_env):
    reset_moto(aws_env)  # see the module docstring
    try:
        client(aws_env, "ssm").put_parameter(Name=f"/chatmrpt/{ENV}/app/OPENAI_API_KEY", Value="sk-operator-test",
                                             Type="SecureString")
        run_ok(run_playbook("infrastructure.yml", ENV, *APPLY_VARS, env=aws_env))
        yield
    finally:
        reset_moto(aws_env)


def test_drift_check_passes_on_the_converged_environment(converged, aws_env):
    proc = drift_check(aws_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    assert "staging matches the code" in proc.stdout
    assert "DRIFT" not in proc.stdout


def test_drift_check_names_a_changed_alarm_threshold_and_an_extra_ingress_rule(converged, aws_env):
    cloudwatch, ec2 = client(aws_env, "cloudwatch"), client(aws_env, "ec2")
    name, alarm = sorted(alarms(aws_env, f"{PREFIX}-").items())[0]
    fields = ("AlarmName", "AlarmDescription", "ActionsEnabled", "OKActions", "AlarmActions", "MetricName",
              "Namespace", "Statistic", "Dimensions", "Period", "EvaluationPeriods", "DatapointsToAlarm",
              "ComparisonOperator", "TreatMissingData", "Unit")
    changed = {k: alarm[k] for k in fields if alarm.get(k) not in (None, "")}
    changed["Threshold"] = alarm["Threshold"] + 7
    cloudwatch.put_metric_alarm(**changed)
    app_group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{PREFIX}-app"]}])
    ec2.authorize_security_group_ingress(GroupId=app_group["SecurityGroups"][0]["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 9999, "ToPort": 9999, "IpRanges": [{"CidrIp": "198.51.100.0/24"}]}])

    proc = drift_check(aws_env)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-6000:]
    drift = [line for line in proc.stdout.splitlines() if line.startswith("DRIFT: ")]
    assert any(line.startswith("DRIFT: aws_monitoring : ") and name in line for line in drift), proc.stdout
    assert "DRIFT: aws_network : Manage the app security group" in drift, proc.stdout
    # Nothing else is reported: the drift check names what drifted, not noise.
    assert len(drift) == 2, proc.stdout
    # --check changed nothing: the drift is still there.
    assert alarms(aws_env, name)[name]["Threshold"] == alarm["Threshold"] + 7

    # The playbook form (`make drift ENV=staging`) fails and names both too.
    run = run_playbook("drift_check.yml", ENV, "-e", json.dumps({"drift_check_extra_args": list(APPLY_VARS)}),
                       env=aws_env)
    assert run.returncode != 0
    assert "DRIFT: aws_network : Manage the app security group" in run.output and name in run.output


def test_drift_check_refuses_an_unknown_environment(aws_env):
    proc = subprocess.run([sys.executable, "scripts/drift_check.py", "qa"], cwd=ROOT, env=aws_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown environment 'qa'" in proc.stderr


def test_teardown_refuses_production_without_confirmation_and_changes_nothing(converged, aws_env):
    ssm, ec2 = client(aws_env, "ssm"), client(aws_env, "ec2")
    # Something of production that a teardown would delete.
    ssm.put_parameter(Name="/chatmrpt/production/app/OPENAI_API_KEY", Value="sk-prod", Type="SecureString")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    sg = ec2.create_security_group(GroupName="ChatMRPT-Production-app", Description="planted", VpcId=vpc,
                                   TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                                       {"Key": "Name", "Value": "ChatMRPT-Production-app"},
                                       {"Key": "Role", "Value": "network"}]}])["GroupId"]
    try:
        refused = run_playbook("teardown.yml", "production", env=aws_env)
        assert refused.returncode != 0
        assert "Refusing to tear down production" in refused.output
        assert "teardown_confirm_production=true" in refused.output
        assert refused.changed == 0 and "TASK [aws_" not in refused.output
        assert ssm.get_parameter(Name="/chatmrpt/production/app/OPENAI_API_KEY")["Parameter"]
        assert ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"]
    finally:
        ssm.delete_parameter(Name="/chatmrpt/production/app/OPENAI_API_KEY")
        ec2.delete_security_group(GroupId=sg)


def test_teardown_of_staging_leaves_nothing_and_is_idempotent(converged, aws_env):
    ec2, elb, autoscaling = client(aws_env, "ec2"), client(aws_env, "elbv2"), client(aws_env, "autoscaling")
    iam, s3, ssm, rds = client(aws_env, "iam"), client(aws_env, "s3"), client(aws_env, "ssm"), client(aws_env, "rds")
    sns, logs, cloudfront = client(aws_env, "sns"), client(aws_env, "logs"), client(aws_env, "cloudfront")
    # The environment really is there before (so that "nothing left" means something).
    assert elb.describe_load_balancers(Names=[f"{PREFIX}-ALB"])["LoadBalancers"]
    assert rds.describe_db_instances(DBInstanceIdentifier=f"{LOWER}-db")["DBInstances"]
    assert [d for d in cloudfront.list_distributions()["DistributionList"].get("Items", [])
            if d["Comment"] == f"{PREFIX}-CDN"]
    assert alarms(aws_env, f"{PREFIX}-")
    # Another environment's resource must survive staging's teardown.
    other = ssm.put_parameter(Name="/chatmrpt/production/app/OPENAI_API_KEY", Value="sk-prod", Type="SecureString")
    assert other

    first = run_ok(run_playbook("teardown.yml", ENV, *TEARDOWN_VARS, env=aws_env))
    assert first.changed > 0
    again = run_ok(run_playbook("teardown.yml", ENV, *TEARDOWN_VARS, env=aws_env))
    assert again.changed == 0, again.changed_tasks()

    instances = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:Environment", "Values": [ENV]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]
        for i in r["Instances"]]
    assert instances == []
    assert not [t for t in ec2.describe_launch_templates()["LaunchTemplates"]
                if t["LaunchTemplateName"].startswith(PREFIX)]
    assert not [g for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
                if g["AutoScalingGroupName"].startswith(PREFIX)]
    assert not autoscaling.describe_policies(AutoScalingGroupName=f"{PREFIX}-ASG")["ScalingPolicies"]
    assert not [t for t in elb.describe_target_groups()["TargetGroups"] if t["TargetGroupName"].startswith(PREFIX)]
    assert not [lb for lb in elb.describe_load_balancers()["LoadBalancers"]
                if lb["LoadBalancerName"].startswith(PREFIX)]
    assert not [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith(PREFIX)]
    assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(PREFIX)]
    assert not [p for p in iam.list_instance_profiles()["InstanceProfiles"]
                if p["InstanceProfileName"].startswith(PREFIX)]
    assert not [p for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"].startswith(PREFIX)]
    assert not [b for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(LOWER)]
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=f"/chatmrpt/{ENV}", Recursive=True)
    assert [p["Name"] for page in pages for p in page["Parameters"]] == []
    assert not rds.describe_db_instances(Filters=[{"Name": "db-instance-id", "Values": [f"{LOWER}-db"]}])["DBInstances"]
    assert not [g for g in rds.describe_db_subnet_groups()["DBSubnetGroups"] if g["DBSubnetGroupName"].startswith(LOWER)]
    assert not [s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]
                if s["DBSnapshotIdentifier"].startswith(LOWER)]
    assert not [t for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(f":{PREFIX}-Alarms")]
    assert not alarms(aws_env, f"{PREFIX}-")
    assert not logs.describe_log_groups(logGroupNamePrefix=f"/aws/ec2/chatmrpt/{ENV}")["logGroups"]
    assert not [d for d in cloudfront.list_distributions()["DistributionList"].get("Items", [])
                if d["Comment"] == f"{PREFIX}-CDN"]
    # The other environment's parameter is untouched.
    assert ssm.get_parameter(Name="/chatmrpt/production/app/OPENAI_API_KEY")["Parameter"]["Value"]
