"""The end of the emulated accounts (fixture `accounts`, tests/aws_accounts.py): the drift
check (scripts/drift_check.py; the accounts' converged check is its run), which names a
change made behind its back and nothing else (so every earlier test set back what it
changed), then every way to remove what was built: the teardown (playbooks/teardown.yml)
of production, with its CloudFront, and the roles' own `absent` entry points for staging.
Last in tests/aws (AWS_MODULE_ORDER, tests/conftest.py): after it the accounts are gone.

Emulator settings (not exceptions of the code under test): the accounts' own
(aws_database_storage_type=gp2, production's certificate), passed to every check here too.
Emulator exceptions, named here and nowhere else excused (CACHE_REMOVAL_ON_MOTO, passed to
every removal here): moto has no DeleteCacheSubnetGroup (NotImplementedError, a 500), so the
removals skip that task (--skip-tags aws_cache_subnet_group) and the cache subnet groups are
not among what must be gone; and a replication group moto deletes stays "deleting" forever,
so the removals do not wait for it (aws_cache_delete_wait_timeout=0, on AWS 1200 s: its
nodes' interfaces must leave the cache security group first) and a "deleting" group counts
as gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from aws_accounts import ENVIRONMENTS, LOWER, PREFIX, distributions, live_instances, ssm_names
from emulator import client, run_ok
from helpers import ROOT, VENV_BIN, PlaybookRun

pytestmark = pytest.mark.slow
CACHE_REMOVAL_ON_MOTO = ("--skip-tags", "aws_cache_subnet_group", "-e", "aws_cache_delete_wait_timeout=0")


def alarms(aws_env, prefix):
    pages = client(aws_env, "cloudwatch").get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix)
    return {a["AlarmName"]: a for page in pages for a in page["MetricAlarms"]}


# --- drift ------------------------------------------------------------------------------------

@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_drift_check_passes_on_the_converged_environment(accounts, env):
    """The accounts' converged check is the drift check's run (tests/aws_accounts.py)."""
    run = accounts.runs[env]["check"]
    assert run.returncode == 0, run.output[-6000:]
    assert f"{env} matches the code" in run.output
    assert "DRIFT" not in run.output


def test_drift_check_names_a_changed_alarm_threshold_and_an_extra_ingress_rule(accounts, aws_env):
    cloudwatch, ec2 = client(aws_env, "cloudwatch"), client(aws_env, "ec2")
    name, alarm = sorted(alarms(aws_env, "ChatMRPT-Staging-").items())[0]
    fields = ("AlarmName", "AlarmDescription", "ActionsEnabled", "OKActions", "AlarmActions", "MetricName",
              "Namespace", "Statistic", "Dimensions", "Period", "EvaluationPeriods", "DatapointsToAlarm",
              "ComparisonOperator", "TreatMissingData", "Unit")
    changed = {k: alarm[k] for k in fields if alarm.get(k) not in (None, "")}
    changed["Threshold"] = alarm["Threshold"] + 7
    cloudwatch.put_metric_alarm(**changed)
    app_group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["ChatMRPT-Staging-app"]}])
    ec2.authorize_security_group_ingress(GroupId=app_group["SecurityGroups"][0]["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 9999, "ToPort": 9999, "IpRanges": [{"CidrIp": "198.51.100.0/24"}]}])

    proc = accounts.drift_check("staging")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-6000:]
    drift = [line for line in proc.stdout.splitlines() if line.startswith("DRIFT: ")]
    assert any(line.startswith("DRIFT: aws_monitoring : ") and name in line for line in drift), proc.stdout
    assert "DRIFT: aws_network : Manage the app security group" in drift, proc.stdout
    # Nothing else is reported: the drift check names what drifted, not noise.
    assert len(drift) == 2, proc.stdout
    # --check changed nothing: the drift is still there.
    assert alarms(aws_env, name)[name]["Threshold"] == alarm["Threshold"] + 7

    # The playbook form (`make drift ENV=staging`) fails and names both too (the two roles'
    # tags are enough to show it: the whole check above found nothing else).
    run = accounts.playbook("staging", "-e", json.dumps({"drift_check_extra_args": list(accounts.extra_vars("staging")),
                                                         "drift_check_tags": "network,monitoring"}),
                            playbook="drift_check.yml")
    assert run.returncode != 0
    assert "DRIFT: aws_network : Manage the app security group" in run.output and name in run.output


def test_drift_check_refuses_an_unknown_environment(aws_env):
    proc = subprocess.run([sys.executable, "scripts/drift_check.py", "qa"], cwd=ROOT, env=aws_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown environment 'qa'" in proc.stderr


def test_monitoring_removes_the_alarms_of_an_asg_that_is_gone(accounts, aws_env):
    assert [n for n in alarms(aws_env, "ChatMRPT-Staging-") if "-ASG-" in n]
    client(aws_env, "autoscaling").delete_auto_scaling_group(AutoScalingGroupName="ChatMRPT-Staging-ASG",
                                                             ForceDelete=True)
    run_ok(accounts.playbook("staging", "--tags", "monitoring"))
    names = set(alarms(aws_env, "ChatMRPT-Staging-"))
    assert not [n for n in names if "-ASG-" in n]
    instance = live_instances(aws_env, "staging")[0]["InstanceId"]
    assert f"ChatMRPT-Staging-{instance}-disk-used" in names
    assert "ChatMRPT-Staging-ALB-target-5xx" in names


# --- removal ----------------------------------------------------------------------------------

def left_of(aws_env, env):
    """Every kind of resource the estate makes, that is still there for `env`."""
    ec2, elb, autoscaling = client(aws_env, "ec2"), client(aws_env, "elbv2"), client(aws_env, "autoscaling")
    iam, s3, rds = client(aws_env, "iam"), client(aws_env, "s3"), client(aws_env, "rds")
    sns, logs, acm = client(aws_env, "sns"), client(aws_env, "logs"), client(aws_env, "acm")
    elasticache, kms = client(aws_env, "elasticache"), client(aws_env, "kms")
    prefix, lower = PREFIX[env], LOWER[env]
    # the parameters key, unless its deletion is scheduled (KMS deletes a key 7-30 days later)
    key_ids = [a["TargetKeyId"] for a in kms.list_aliases()["Aliases"] if a["AliasName"] == f"alias/{lower}-parameters"]
    left = {
        "instances": [i["InstanceId"] for r in ec2.describe_instances(Filters=[
            {"Name": "tag:Environment", "Values": [env]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]
            for i in r["Instances"]],
        "launch templates": [t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]
                             if t["LaunchTemplateName"].startswith(prefix)],
        "asgs": [g["AutoScalingGroupName"] for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
                 if g["AutoScalingGroupName"].startswith(prefix)],
        "target groups": [t["TargetGroupName"] for t in elb.describe_target_groups()["TargetGroups"]
                          if t["TargetGroupName"].startswith(prefix)],
        "load balancers": [lb["LoadBalancerName"] for lb in elb.describe_load_balancers()["LoadBalancers"]
                           if lb["LoadBalancerName"].startswith(prefix)],
        "security groups": [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]
                            if g["GroupName"].startswith(prefix)],
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [f"{prefix}-VPC"]}])["Vpcs"]],
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(prefix)],
        "instance profiles": [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
                              if p["InstanceProfileName"].startswith(prefix)],
        "policies": [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]
                     if p["PolicyName"].startswith(prefix)],
        "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(lower)],
        "parameters": sorted(ssm_names(aws_env, f"/chatmrpt/{env}")),
        "databases": [d["DBInstanceIdentifier"] for d in rds.describe_db_instances(
            Filters=[{"Name": "db-instance-id", "Values": [f"{lower}-db"]}])["DBInstances"]],
        "db subnet groups": [g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]
                             if g["DBSubnetGroupName"].startswith(lower)],
        "caches": [g["ReplicationGroupId"] for g in elasticache.describe_replication_groups()["ReplicationGroups"]
                   if g["ReplicationGroupId"] == f"{lower}-redis" and g["Status"] != "deleting"],
        "topics": [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(f":{prefix}-Alarms")],
        "alarms": sorted(alarms(aws_env, f"{prefix}-")),
        "dashboards": [d["DashboardName"] for d in client(aws_env, "cloudwatch").list_dashboards(
            DashboardNamePrefix=prefix)["DashboardEntries"] if d["DashboardName"] == prefix],
        "log groups": [g["logGroupName"] for g in logs.describe_log_groups(
            logGroupNamePrefix=f"/aws/ec2/chatmrpt/{env}")["logGroups"]],
        "distributions": [d["Id"] for comment, d in distributions(aws_env).items() if comment == f"{prefix}-CDN"],
        "keys": [k for k in key_ids if kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] != "PendingDeletion"],
        # the certificates the load balancer role requested (an imported one is the operator's)
        "certificates": [c["CertificateArn"] for c in acm.list_certificates()["CertificateSummaryList"]
                         if {"Key": "Name", "Value": f"{prefix}-cert"}
                         in acm.list_tags_for_certificate(CertificateArn=c["CertificateArn"])["Tags"]],
    }
    return {kind: found for kind, found in left.items() if found}


ABSENT_PLAYBOOK = textwrap.dedent("""\
    ---
    - name: Remove the core of the estate
      hosts: localhost
      connection: local
      gather_facts: false
      module_defaults:
        group/amazon.aws.aws:
          region: "{{ chatmrpt_aws_region }}"
        group/community.aws.aws:
          region: "{{ chatmrpt_aws_region }}"
      tasks:
        - name: Remove each part
          ansible.builtin.include_role:
            name: "{{ __test_role }}"
            tasks_from: absent
          loop: [aws_monitoring, aws_compute, aws_loadbalancer, aws_database, aws_cache, aws_secrets, aws_storage, aws_iam,
                 aws_network]
          loop_control:
            loop_var: __test_role
    """)


def run_absent(tmp_path, aws_env, env, *args):
    playbook = tmp_path / "absent.yml"
    playbook.write_text(ABSENT_PLAYBOOK)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", f"inventories/{env}", str(playbook),
                           *CACHE_REMOVAL_ON_MOTO, *args],
                          cwd=ROOT, env={**aws_env, "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
                          capture_output=True, text=True, timeout=900)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def test_teardown_refuses_production_without_confirmation_and_changes_nothing(accounts, aws_env):
    before = left_of(aws_env, "production")
    assert {"databases", "caches", "parameters", "security groups", "distributions"} <= set(before)
    refused = accounts.playbook("production", playbook="teardown.yml")
    assert refused.returncode != 0
    assert "Refusing to tear down production" in refused.output
    assert "teardown_confirm_production=true" in refused.output
    assert refused.changed == 0 and "TASK [aws_" not in refused.output
    assert left_of(aws_env, "production") == before


def test_absent_refuses_a_protected_database(accounts, aws_env, tmp_path):
    refused = run_absent(tmp_path, aws_env, "production")
    assert refused.returncode != 0 and "has deletion protection on" in refused.output, refused.failures()
    assert client(aws_env, "rds").describe_db_instances(DBInstanceIdentifier="chatmrpt-production-db")["DBInstances"]


def test_teardown_of_production_leaves_nothing_and_is_idempotent(accounts, aws_env):
    staging_before = left_of(aws_env, "staging")
    assert "certificates" in staging_before  # requested for its domain; goes with its absent below
    assert "distributions" in left_of(aws_env, "production")  # its CloudFront goes too
    confirmed = ("-e", "teardown_confirm_production=true", "-e", "aws_database_absent_override_deletion_protection=true")
    first = run_ok(accounts.playbook("production", *confirmed, *CACHE_REMOVAL_ON_MOTO, playbook="teardown.yml"))
    assert first.changed > 0
    again = run_ok(accounts.playbook("production", *confirmed, *CACHE_REMOVAL_ON_MOTO, playbook="teardown.yml"))
    assert again.changed == 0, again.changed_tasks()
    assert left_of(aws_env, "production") == {}
    # Production's final snapshot was taken and kept.
    rds = client(aws_env, "rds")
    assert "chatmrpt-production-db-final" in [s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]]
    rds.delete_db_snapshot(DBSnapshotIdentifier="chatmrpt-production-db-final")
    # The other environment in the same account is untouched.
    assert left_of(aws_env, "staging") == staging_before


def test_absent_keeps_backups_unless_forced_then_removes_everything(accounts, aws_env, tmp_path):
    s3 = client(aws_env, "s3")
    # Backups in a bucket are kept unless force is asked for. (The TLS-only policy refuses
    # the emulator's plain HTTP, so it goes first, as on a bucket being emptied.)
    s3.delete_bucket_policy(Bucket="chatmrpt-staging-backups")
    s3.put_object(Bucket="chatmrpt-staging-backups", Key="staging/interactions.db", Body=b"x")
    kept = run_absent(tmp_path, aws_env, "staging", "-e", "aws_database_skip_final_snapshot=true")
    assert kept.returncode != 0, kept.output[-3000:]
    assert "chatmrpt-staging-backups" in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    forced = ("-e", "aws_database_skip_final_snapshot=true", "-e", "aws_storage_force_destroy=true")
    run_ok(run_absent(tmp_path, aws_env, "staging", *forced))
    again = run_ok(run_absent(tmp_path, aws_env, "staging", *forced))
    assert again.changed == 0, again.changed_tasks()
    assert left_of(aws_env, "staging") == {}
    # Staging skipped its final snapshot; nothing of either environment is left.
    assert not [s for s in client(aws_env, "rds").describe_db_snapshots()["DBSnapshots"]
                if s["DBSnapshotIdentifier"].startswith("chatmrpt-")]
    for env in ENVIRONMENTS:
        assert left_of(aws_env, env) == {}
