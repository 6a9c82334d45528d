"""The core of the AWS estate on the session's moto: aws_network, aws_iam, aws_storage,
aws_secrets, aws_database (tags network,iam,storage,secrets,database) for staging AND
production side by side (names never collide), then aws_monitoring, the local
environment's special cases, input validation and the roles' `absent` entry points.

Each environment goes: --check on an empty account, a run refused for a missing operator
secret, apply, re-apply (zero changed), --check on the converged account (zero changed).
Everything is read back with boto3.

Emulator exception (the only one; a moto defect, not a choice of the roles): every run
passes MOTO_EXTRA_VARS (RDS storage type gp2 instead of the roles' gp3, see below). No
task is excused from the zero-changed checks.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from emulator import REGION, client, expected_tags, group, reset_moto, run_ok, tags_of
from helpers import ROOT, VENV_BIN, PlaybookRun, run_playbook, run_playbooks

# moto answers a gp3 RDS instance without StorageThroughput, and rds_instance crashes
# on its second run (KeyError 'StorageThroughput'); the roles keep gp3 for AWS.
MOTO_EXTRA_VARS = ("-e", "aws_database_storage_type=gp2")
CORE_TAGS = "network,iam,storage,secrets,database"
ENVIRONMENTS = ("staging", "production")
PREFIX = {"staging": "ChatMRPT-Staging", "production": "ChatMRPT-Production"}
LOWER = {"staging": "chatmrpt-staging", "production": "chatmrpt-production"}
EMAILS = ["chatmrpt-ops@example.org"]  # inventories/{staging,production}/group_vars/all/aws_monitoring.yml


def ssm_names(aws_env, path):
    pages = client(aws_env, "ssm").get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True)
    return {p["Name"] for page in pages for p in page["Parameters"]}


# --------------------------------------------------------------------------------------
# The converged core, once per module: every run kept for the tests below.
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def core(aws_env):
    # The session emulator is shared: an earlier module (test_compute.py sorts first) may
    # have left staging/production converged. "Check mode on an empty account" needs an
    # empty one, so this module starts from a reset emulator (AWS managed policies and the
    # default VPC come back with it) and removes what it built at its end (test_absent_...).
    reset_moto(aws_env)
    runs, secrets_first = {}, {}
    for env in ENVIRONMENTS:
        iam, s3, ssm = client(aws_env, "iam"), client(aws_env, "s3"), client(aws_env, "ssm")
        assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"] == f"{PREFIX[env]}-EC2-Role"]
        check_empty = run_ok(run_playbook("infrastructure.yml", env, "--tags", CORE_TAGS, "--check", "--diff",
                                          *MOTO_EXTRA_VARS, env=aws_env))
        created_by_check = {
            "role": [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(PREFIX[env])],
            "bucket": [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(LOWER[env])],
            "parameters": sorted(ssm_names(aws_env, f"/chatmrpt/{env}")),
            "groups": [g["GroupName"] for g in client(aws_env, "ec2").describe_security_groups()["SecurityGroups"]
                       if g["GroupName"].startswith(PREFIX[env])],
        }
        no_key = run_playbook("infrastructure.yml", env, "--tags", "secrets", *MOTO_EXTRA_VARS, env=aws_env)
        params_after_refusal = sorted(ssm_names(aws_env, f"/chatmrpt/{env}"))
        # The operator's step: store the OpenAI key once.
        ssm.put_parameter(Name=f"/chatmrpt/{env}/app/OPENAI_API_KEY", Value=f"sk-test-{env}-operator",
                          Type="SecureString")
        apply = run_ok(run_playbook("infrastructure.yml", env, "--tags", CORE_TAGS, *MOTO_EXTRA_VARS, env=aws_env))
        secrets_first[env] = {
            name: ssm.get_parameter(Name=f"/chatmrpt/{env}/{name}", WithDecryption=True)["Parameter"]["Value"]
            for name in ("app/SECRET_KEY", "app/ADMIN_KEY", "database/master-password", "app/OPENAI_API_KEY")
        }
        reapply = run_ok(run_playbook("infrastructure.yml", env, "--tags", CORE_TAGS, *MOTO_EXTRA_VARS, env=aws_env))
        check_converged = run_ok(run_playbook("infrastructure.yml", env, "--tags", CORE_TAGS, "--check", "--diff",
                                              *MOTO_EXTRA_VARS, env=aws_env))
        runs[env] = {"check_empty": check_empty, "created_by_check": created_by_check, "no_key": no_key,
                     "params_after_refusal": params_after_refusal, "apply": apply, "reapply": reapply,
                     "check_converged": check_converged}
    return {"runs": runs, "secrets": secrets_first}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_check_mode_on_an_empty_account_reports_and_creates_nothing(core, env):
    runs = core["runs"][env]
    assert runs["check_empty"].changed > 0, "check mode on an empty account must report the changes to come"
    assert runs["created_by_check"] == {"role": [], "bucket": [], "parameters": [], "groups": []}
    assert "a real run will stop here until an operator stores them" in runs["check_empty"].output


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_missing_operator_secret_stops_the_run_before_any_secret_is_written(core, env):
    run = core["runs"][env]["no_key"]
    assert run.returncode != 0
    assert f"Missing SSM parameters: /chatmrpt/{env}/app/OPENAI_API_KEY" in run.output
    assert f"--name /chatmrpt/{env}/app/OPENAI_API_KEY" in run.output
    assert core["runs"][env]["params_after_refusal"] == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_second_run_and_check_on_converged_account_change_nothing(core, env):
    runs = core["runs"][env]
    assert runs["apply"].changed > 0
    assert runs["reapply"].changed == 0, runs["reapply"].changed_tasks()
    assert runs["check_converged"].changed == 0, runs["check_converged"].changed_tasks()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_security_groups_open_only_what_the_contract_says(core, aws_env, env):
    alb, app, db = (group(aws_env, f"{PREFIX[env]}-{n}") for n in ("alb", "app", "db"))
    assert alb["VpcId"] == app["VpcId"] == db["VpcId"]

    def rules(g):
        return sorted((p["FromPort"], p["ToPort"], tuple(sorted(r["CidrIp"] for r in p.get("IpRanges", []))),
                       tuple(sorted(r["CidrIpv6"] for r in p.get("Ipv6Ranges", []))),
                       tuple(sorted(r["GroupId"] for r in p.get("UserIdGroupPairs", []))))
                      for p in g["IpPermissions"])

    assert rules(alb) == [(80, 80, ("0.0.0.0/0",), ("::/0",), ()), (443, 443, ("0.0.0.0/0",), ("::/0",), ())]
    assert rules(app) == [(22, 22, (), (), (app["GroupId"],)), (8000, 8000, (), (), (alb["GroupId"],))]
    assert rules(db) == [(5432, 5432, (), (), (app["GroupId"],))]
    for g in (alb, app, db):
        assert tags_of(g["Tags"]) == {**expected_tags(env, "network"), "Name": g["GroupName"]}


def test_staging_uses_the_default_vpc_production_its_own(core, aws_env):
    ec2 = client(aws_env, "ec2")
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    assert group(aws_env, "ChatMRPT-Staging-app")["VpcId"] == default_vpc

    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["ChatMRPT-Production-VPC"]}])["Vpcs"]
    assert len(vpcs) == 1 and vpcs[0]["CidrBlock"] == "10.30.0.0/16"
    vpc_id = vpcs[0]["VpcId"]
    assert tags_of(vpcs[0]["Tags"]) == {**expected_tags("production", "network"), "Name": "ChatMRPT-Production-VPC"}
    assert group(aws_env, "ChatMRPT-Production-app")["VpcId"] == vpc_id
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                            {"Name": "tag:Environment", "Values": ["production"]},
                                            {"Name": "tag:Project", "Values": ["chatmrpt"]}])["Subnets"]
    assert sorted(s["CidrBlock"] for s in subnets) == ["10.30.1.0/24", "10.30.2.0/24"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    igws = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
    igw_id = igws["InternetGateways"][0]["InternetGatewayId"]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                {"Name": "tag:Name", "Values": ["ChatMRPT-Production-Public"]}])
    table = tables["RouteTables"][0]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw_id} in [
        {k: r.get(k) for k in ("DestinationCidrBlock", "GatewayId")} for r in table["Routes"]]
    assert sorted(a["SubnetId"] for a in table["Associations"] if a.get("SubnetId")) == sorted(
        s["SubnetId"] for s in subnets)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_iam_role_is_least_privilege(core, aws_env, env):
    iam = client(aws_env, "iam")
    role_name = f"{PREFIX[env]}-EC2-Role"
    role = iam.get_role(RoleName=role_name)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]
    assert tags_of(role["Tags"]) == expected_tags(env, "iam")
    attached = sorted(p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"])
    assert attached == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
                        "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"]
    assert sorted(iam.list_role_policies(RoleName=role_name)["PolicyNames"]) == ["backups-bucket-prefix",
                                                                                   "ssm-parameters"]

    def doc(name):
        document = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        return json.loads(document) if isinstance(document, str) else document

    bucket = f"arn:aws:s3:::{LOWER[env]}-backups"
    s3_statements = doc("backups-bucket-prefix")["Statement"]
    assert s3_statements == [
        {"Sid": "ListOwnPrefix", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket,
         "Condition": {"StringLike": {"s3:prefix": [f"{env}/*"]}}},
        {"Sid": "ReadWriteOwnPrefix", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": f"{bucket}/{env}/*"},
    ]
    ssm_statements = doc("ssm-parameters")["Statement"]
    ssm_arn = f"arn:aws:ssm:{REGION}:123456789012:parameter/chatmrpt/{env}"
    assert ssm_statements[0] == {"Sid": "ReadOwnParameters", "Effect": "Allow",
                                 "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
                                 "Resource": [ssm_arn, f"{ssm_arn}/*"]}
    assert ssm_statements[1] == {"Sid": "DecryptThroughSsmOnly", "Effect": "Allow", "Action": "kms:Decrypt",
                                 "Resource": f"arn:aws:kms:{REGION}:123456789012:key/*",
                                 "Condition": {"StringEquals": {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}}}
    profile = iam.get_instance_profile(InstanceProfileName=f"{PREFIX[env]}-EC2-Profile")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [role_name]
    # (moto has no ListInstanceProfileTags: the tags come with GetInstanceProfile.)
    assert tags_of(profile["Tags"]) == expected_tags(env, "iam")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_backups_bucket_is_versioned_private_encrypted_tls_only_with_lifecycle(core, aws_env, env):
    s3 = client(aws_env, "s3")
    bucket = f"{LOWER[env]}-backups"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert len(rules) == 1
    rule = rules[0]
    assert rule["Status"] == "Enabled"
    assert rule["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"}]
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                     "RestrictPublicBuckets": True}
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"] == [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]
    assert tags_of(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == expected_tags(env, "storage")
    # moto evaluates bucket policies: a write over plain HTTP (the emulator's endpoint) is refused.
    with pytest.raises(s3.exceptions.ClientError, match="Forbidden|AccessDenied"):
        s3.put_object(Bucket=bucket, Key=f"{env}/probe", Body=b"x")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_secrets_generated_once_never_overwritten_never_logged(core, aws_env, env):
    ssm = client(aws_env, "ssm")
    first = core["secrets"][env]
    lengths = {"app/SECRET_KEY": 64, "app/ADMIN_KEY": 32, "database/master-password": 32}
    for name, length in lengths.items():
        parameter = ssm.get_parameter(Name=f"/chatmrpt/{env}/{name}", WithDecryption=True)["Parameter"]
        assert parameter["Type"] == "SecureString"
        assert len(parameter["Value"]) == length and parameter["Value"].isalnum()
        assert parameter["Value"] == first[name], f"{name} was overwritten by a later run"
        tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=f"/chatmrpt/{env}/{name}")["TagList"]
        assert tags_of(tags) == expected_tags(env, "secrets")
    # The operator's value is never replaced.
    operator = ssm.get_parameter(Name=f"/chatmrpt/{env}/app/OPENAI_API_KEY", WithDecryption=True)["Parameter"]
    assert operator["Value"] == f"sk-test-{env}-operator" and operator["Type"] == "SecureString"
    # Staging and production secrets differ.
    other = [e for e in ENVIRONMENTS if e != env][0]
    assert first["app/SECRET_KEY"] != core["secrets"][other]["app/SECRET_KEY"]
    # No secret value in any output of any run.
    for run in core["runs"][env].values():
        if isinstance(run, PlaybookRun):
            for value in first.values():
                assert value not in run.output


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rds_instance_is_encrypted_private_backed_up_and_recorded(core, aws_env, env):
    rds, ssm = client(aws_env, "rds"), client(aws_env, "ssm")
    db = rds.describe_db_instances(DBInstanceIdentifier=f"{LOWER[env]}-db")["DBInstances"][0]
    assert db["Engine"] == "postgres" and db["EngineVersion"].split(".")[0] == "15"
    assert db["DBInstanceClass"] == "db.t3.micro"
    assert db["StorageEncrypted"] is True
    assert db["PubliclyAccessible"] is False
    assert db["BackupRetentionPeriod"] == 7
    assert db["DeletionProtection"] is (env == "production")
    assert db["MasterUsername"] == "chatmrpt_master" and db["DBName"] == "chatmrpt"
    assert db["DBSubnetGroup"]["DBSubnetGroupName"] == f"{LOWER[env]}-db-subnets"
    assert len({s["SubnetAvailabilityZone"]["Name"] for s in db["DBSubnetGroup"]["Subnets"]}) >= 2
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [group(aws_env, f"{PREFIX[env]}-db")["GroupId"]]
    assert tags_of(db["TagList"]) == expected_tags(env, "database")
    recorded = {name: ssm.get_parameter(Name=f"/chatmrpt/{env}/database/{name}")["Parameter"]["Value"]
                for name in ("endpoint", "port", "name", "master-username")}
    assert recorded == {"endpoint": db["Endpoint"]["Address"], "port": str(db["Endpoint"]["Port"]),
                        "name": "chatmrpt", "master-username": "chatmrpt_master"}


# --------------------------------------------------------------------------------------
# Monitoring: app instances, an ASG and a load balancer are stood in by boto3 (aws_compute
# and aws_loadbalancer are another part's; the full-estate test checks them together).
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def watched(core, aws_env):
    """Two app instances, an ASG and ALB + target group named like the real ones (staging)."""
    ec2, elb, asg = client(aws_env, "ec2"), client(aws_env, "elbv2"), client(aws_env, "autoscaling")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": k, "Value": v} for k, v in expected_tags("staging", "app").items()]
    instances = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.micro",
                                  TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"]
    # An instance of another environment gets no staging alarm.
    other = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v}
                                              for k, v in expected_tags("production", "app").items()]}])["Instances"]
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                            {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    lb = elb.create_load_balancer(Name="ChatMRPT-Staging-ALB", Subnets=[s["SubnetId"] for s in subnets[:2]])
    tg = elb.create_target_group(Name="ChatMRPT-Staging-TG", Protocol="HTTP", Port=8000, VpcId=vpc)
    ec2.create_launch_template(LaunchTemplateName="test-core-monitoring",
                               LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
    asg.create_auto_scaling_group(AutoScalingGroupName="ChatMRPT-Staging-ASG", MinSize=0, MaxSize=1,
                                  DesiredCapacity=0, LaunchTemplate={"LaunchTemplateName": "test-core-monitoring"},
                                  AvailabilityZones=[subnets[0]["AvailabilityZone"]])
    state = {"instances": sorted(i["InstanceId"] for i in instances), "other": other[0]["InstanceId"],
             "lb": lb["LoadBalancers"][0]["LoadBalancerArn"], "tg": tg["TargetGroups"][0]["TargetGroupArn"],
             "asg": True}
    state["apply"] = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "monitoring", env=aws_env))
    state["reapply"] = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "monitoring", env=aws_env))
    state["check"] = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "monitoring", "--check",
                                         env=aws_env))
    try:
        yield state
    finally:
        ec2.terminate_instances(InstanceIds=state["instances"] + [state["other"]])
        if state["asg"]:
            asg.delete_auto_scaling_group(AutoScalingGroupName="ChatMRPT-Staging-ASG", ForceDelete=True)
        ec2.delete_launch_template(LaunchTemplateName="test-core-monitoring")
        elb.delete_load_balancer(LoadBalancerArn=state["lb"])
        elb.delete_target_group(TargetGroupArn=state["tg"])


def alarms(aws_env, prefix):
    pages = client(aws_env, "cloudwatch").get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix)
    return {a["AlarmName"]: a for page in pages for a in page["MetricAlarms"]}


def test_monitoring_topic_subscriptions_and_log_group(watched, aws_env):
    sns, logs = client(aws_env, "sns"), client(aws_env, "logs")
    topic = f"arn:aws:sns:{REGION}:123456789012:ChatMRPT-Staging-Alarms"
    assert topic in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert sorted((s["Protocol"], s["Endpoint"]) for s in subscriptions) == [("email", e) for e in EMAILS]
    assert tags_of(sns.list_tags_for_resource(ResourceArn=topic)["Tags"]) == expected_tags("staging", "monitoring")
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/ec2/chatmrpt/staging")["logGroups"]
    assert [(g["logGroupName"], g["retentionInDays"]) for g in groups] == [("/aws/ec2/chatmrpt/staging", 7)]
    assert logs.list_tags_log_group(logGroupName="/aws/ec2/chatmrpt/staging")["tags"] == \
        expected_tags("staging", "monitoring")


def test_monitoring_alarms_watch_instances_asg_and_load_balancer(watched, aws_env):
    found = alarms(aws_env, "ChatMRPT-Staging-")
    topic = f"arn:aws:sns:{REGION}:123456789012:ChatMRPT-Staging-Alarms"
    expected = {}
    for instance in watched["instances"]:
        base = f"ChatMRPT-Staging-{instance}"
        expected[f"{base}-disk-used"] = ("ChatMRPT/Staging", "disk_used_percent", "GreaterThanThreshold", 85.0,
                                         {"InstanceId": instance, "path": "/"})
        expected[f"{base}-mem-used"] = ("ChatMRPT/Staging", "mem_used_percent", "GreaterThanThreshold", 90.0,
                                        {"InstanceId": instance})
        expected[f"{base}-disk-free"] = ("ChatMRPT/Staging", "disk_free", "LessThanThreshold", 2147483648.0,
                                         {"InstanceId": instance, "path": "/"})
        expected[f"{base}-cpu-high"] = ("AWS/EC2", "CPUUtilization", "GreaterThanThreshold", 80.0,
                                        {"InstanceId": instance})
    asg = {"AutoScalingGroupName": "ChatMRPT-Staging-ASG"}
    expected["ChatMRPT-Staging-ASG-cpu-high"] = ("AWS/EC2", "CPUUtilization", "GreaterThanThreshold", 80.0, asg)
    expected["ChatMRPT-Staging-ASG-disk-used"] = ("ChatMRPT/Staging", "disk_used_percent", "GreaterThanThreshold",
                                                  85.0, asg)
    expected["ChatMRPT-Staging-ASG-mem-used"] = ("ChatMRPT/Staging", "mem_used_percent", "GreaterThanThreshold",
                                                 90.0, asg)
    lb = {"LoadBalancer": watched["lb"].split(":loadbalancer/")[1]}
    tg = {"TargetGroup": watched["tg"].split(":")[-1]}
    expected["ChatMRPT-Staging-ALB-unhealthy-hosts"] = ("AWS/ApplicationELB", "UnHealthyHostCount",
                                                        "GreaterThanOrEqualToThreshold", 1.0, {**lb, **tg})
    expected["ChatMRPT-Staging-ALB-response-time"] = ("AWS/ApplicationELB", "TargetResponseTime",
                                                      "GreaterThanThreshold", 2.0, lb)
    expected["ChatMRPT-Staging-ALB-target-5xx"] = ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count",
                                                   "GreaterThanThreshold", 10.0, lb)
    expected["ChatMRPT-Staging-ALB-target-4xx"] = ("AWS/ApplicationELB", "HTTPCode_Target_4XX_Count",
                                                   "GreaterThanThreshold", 50.0, lb)
    assert sorted(found) == sorted(expected)
    for name, (namespace, metric, comparison, threshold, dimensions) in expected.items():
        alarm = found[name]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["ComparisonOperator"], alarm["Threshold"]) == \
            (namespace, metric, comparison, threshold), name
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == dimensions, name
        assert alarm["Period"] == 300 and alarm["EvaluationPeriods"] == 1, name
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic], name
    assert found["ChatMRPT-Staging-ALB-target-5xx"]["Statistic"] == "Sum"
    assert found["ChatMRPT-Staging-ALB-unhealthy-hosts"]["Statistic"] == "Maximum"
    assert not [n for n in found if watched["other"] in n]


def test_monitoring_second_run_and_check_change_nothing(watched):
    assert watched["apply"].changed > 0
    assert watched["reapply"].changed == 0, watched["reapply"].changed_tasks()
    assert watched["check"].changed == 0, watched["check"].changed_tasks()


def test_monitoring_removes_alarms_of_what_is_gone(watched, aws_env):
    ec2, asg = client(aws_env, "ec2"), client(aws_env, "autoscaling")
    gone = watched["instances"][0]
    ec2.terminate_instances(InstanceIds=[gone])
    asg.delete_auto_scaling_group(AutoScalingGroupName="ChatMRPT-Staging-ASG", ForceDelete=True)
    watched["asg"] = False
    run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "monitoring", env=aws_env))
    names = set(alarms(aws_env, "ChatMRPT-Staging-"))
    assert not [n for n in names if gone in n or "-ASG-" in n]
    assert f"ChatMRPT-Staging-{watched['instances'][1]}-disk-used" in names
    assert "ChatMRPT-Staging-ALB-target-5xx" in names


# --------------------------------------------------------------------------------------
# The local environment: no RDS, the lab's PostgreSQL recorded, its password kept.
# --------------------------------------------------------------------------------------

def test_local_keeps_the_labs_master_password_and_records_the_external_database(aws_env):
    ssm = client(aws_env, "ssm")
    lab_password = "LabPassword0123456789abcdefXYZ"  # pragma: allowlist secret
    ssm.put_parameter(Name="/chatmrpt/local/database/master-password", Value=lab_password, Type="SecureString")
    try:
        first = run_ok(run_playbook("infrastructure.yml", "local", "--tags", "secrets,database", env=aws_env))
        again = run_ok(run_playbook("infrastructure.yml", "local", "--tags", "secrets,database", env=aws_env))
        assert again.changed == 0, again.changed_tasks()
        value = ssm.get_parameter(Name="/chatmrpt/local/database/master-password", WithDecryption=True)
        assert value["Parameter"]["Value"] == lab_password
        assert lab_password not in first.output
        # A placeholder OpenAI key is generated locally (aws_secrets_generate_operator_parameters).
        openai = ssm.get_parameter(Name="/chatmrpt/local/app/OPENAI_API_KEY", WithDecryption=True)["Parameter"]
        assert openai["Type"] == "SecureString" and len(openai["Value"]) == 48
        recorded = {n: ssm.get_parameter(Name=f"/chatmrpt/local/database/{n}")["Parameter"]["Value"]
                    for n in ("endpoint", "port", "name", "master-username")}
        assert recorded == {"endpoint": "host.containers.internal", "port": "55432", "name": "chatmrpt",
                            "master-username": "chatmrpt_master"}
        assert not client(aws_env, "rds").describe_db_instances(
            Filters=[{"Name": "db-instance-id", "Values": ["chatmrpt-local-db"]}])["DBInstances"]
    finally:
        names = ssm_names(aws_env, "/chatmrpt/local")
        if names:
            ssm.delete_parameters(Names=sorted(names))


# --------------------------------------------------------------------------------------
# Input validation: refused with a message naming the variable, before any AWS call. The
# runs point at an endpoint where nothing listens, so any AWS call would fail otherwise.
# --------------------------------------------------------------------------------------

BAD_INPUTS = [
    ("network", {"aws_network_admin_ssh_cidrs": ["10.0.0.300/24"]}, "aws_network_admin_ssh_cidrs"),
    ("network", {"aws_network_admin_ssh_cidrs": ["not-a-cidr"]}, "aws_network_admin_ssh_cidrs"),
    ("network", {"aws_network_admin_ssh_cidrs": ["0.0.0.0/0"]}, "may not\ncontain 0.0.0.0/0"),
    ("network", {"aws_network_vpc_mode": "create", "aws_network_subnet_cidrs": ["10.30.1.0/24"]},
     "aws_network_subnet_cidrs"),
    ("network", {"aws_network_vpc_mode": "shared"}, "aws_network_vpc_mode"),
    ("iam", {"aws_iam_ssm_prefix": "/"}, "aws_iam_ssm_prefix"),
    ("iam", {"aws_iam_managed_policies": ["arn:aws:iam::aws:policy/AdministratorAccess"]},
     "aws_iam_managed_policies"),
    ("storage", {"aws_storage_bucket_name": "Bad_Bucket"}, "aws_storage_bucket_name"),
    ("storage", {"aws_storage_bucket_name": "ab"}, "aws_storage_bucket_name"),
    ("storage", {"aws_storage_bucket_name": "192.168.1.10"}, "aws_storage_bucket_name"),
    ("storage", {"aws_storage_transition_days": 10}, "aws_storage_transition_days"),
    ("secrets", {"aws_secrets_generated_parameters": [{"name": "app/SECRET_KEY", "length": 8,
                                                       "description": "short"}]},
     "aws_secrets_generated_parameters"),
    ("database", {"aws_database_instance_class": "db.r6g.4xlarge"}, "aws_database_instance_class"),
    ("database", {"aws_database_backup_retention_days": 0}, "aws_database_backup_retention_days"),
    ("database", {"aws_database_backup_retention_days": -3}, "aws_database_backup_retention_days"),
    ("monitoring", {"aws_monitoring_cpu_threshold": 150}, "aws_monitoring_cpu_threshold"),
    ("monitoring", {"aws_monitoring_disk_used_threshold": 0}, "aws_monitoring_disk_used_threshold"),
    ("monitoring", {"aws_monitoring_response_time_threshold": 0}, "aws_monitoring_response_time_threshold"),
    ("monitoring", {"aws_monitoring_alarm_emails": []}, "aws_monitoring_alarm_emails"),
    ("monitoring", {"aws_monitoring_alarm_emails": ["not-an-address"]}, "aws_monitoring_alarm_emails"),
    ("monitoring", {"aws_monitoring_log_retention_days": -1}, "aws_monitoring_log_retention_days"),
    ("monitoring", {"aws_monitoring_log_retention_days": 10}, "aws_monitoring_log_retention_days"),
    ("monitoring", {"aws_monitoring_period": 90}, "aws_monitoring_period"),
]


@pytest.fixture(scope="module")
def bad_input_runs(aws_env):
    """Every case's run, four at a time (independent runs; each case is its own test below).
    Nothing listens at the endpoint: any AWS call would fail with a connection error instead
    of the message. The dynamic inventory cannot be read either: it only warns (localhost is
    all these plays need; the inventory directory's group_vars still load)."""
    dead = {**aws_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "false"}
    return run_playbooks([("infrastructure.yml", "production", "--tags", tag, "-e", json.dumps(extra))
                          for tag, extra, _ in BAD_INPUTS], env=dead)


@pytest.mark.parametrize(("index", "message"), [(i, m) for i, (_, _, m) in enumerate(BAD_INPUTS)],
                         ids=[f"{t}-{'-'.join(e)}-{i}" for i, (t, e, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_refused_before_any_aws_call(bad_input_runs, index, message):
    run = bad_input_runs[index]
    assert run.returncode != 0
    failures = [" ".join(line.split()) for line in run.output.splitlines()
                if line.startswith(("fatal:", "failed:"))]
    assert len(failures) == 1, run.output[-3000:]
    assert " ".join(message.split()) in failures[0], failures[0]
    assert "Could not connect" not in failures[0]


def test_bad_input_changes_nothing_on_the_emulator(core, aws_env):
    ec2 = client(aws_env, "ec2")
    before = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["ChatMRPT-Production-app"]}])
    run = run_playbook("infrastructure.yml", "production", "--tags", CORE_TAGS, *MOTO_EXTRA_VARS,
                       "-e", json.dumps({"aws_network_admin_ssh_cidrs": ["198.51.100.0/24", "0.0.0.0/0"]}),
                       env=aws_env)
    assert run.returncode != 0 and "aws_network_admin_ssh_cidrs" in run.output
    after = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["ChatMRPT-Production-app"]}])
    assert before["SecurityGroups"][0]["IpPermissions"] == after["SecurityGroups"][0]["IpPermissions"]
    assert run.changed == 0


# --------------------------------------------------------------------------------------
# The `absent` entry points, in the teardown order (reverse of the build). Last in the
# module: it leaves the shared session emulator without this module's resources.
# --------------------------------------------------------------------------------------

ABSENT_PLAYBOOK = textwrap.dedent("""\
    ---
    - name: Remove the core of the estate
      hosts: localhost
      connection: local
      gather_facts: false
      module_defaults:
        group/amazon.aws.aws:
          region: "{{ chatmrpt_aws_region }}"
      tasks:
        - name: Remove each part
          ansible.builtin.include_role:
            name: "{{ __test_role }}"
            tasks_from: absent
          loop: [aws_monitoring, aws_database, aws_secrets, aws_storage, aws_iam, aws_network]
          loop_control:
            loop_var: __test_role
    """)


def run_absent(tmp_path, aws_env, env, *args):
    playbook = tmp_path / "absent.yml"
    playbook.write_text(ABSENT_PLAYBOOK)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", f"inventories/{env}", str(playbook), *args],
                          cwd=ROOT, env={**aws_env, "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
                          capture_output=True, text=True, timeout=900)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def test_absent_removes_everything_and_refuses_a_protected_database(core, watched, aws_env, tmp_path):
    s3, iam, rds, ec2 = (client(aws_env, s) for s in ("s3", "iam", "rds", "ec2"))
    # Backups in a bucket are kept unless force is asked for. (The TLS-only policy refuses
    # the emulator's plain HTTP, so it goes first, as on a bucket being emptied.)
    s3.delete_bucket_policy(Bucket="chatmrpt-staging-backups")
    s3.put_object(Bucket="chatmrpt-staging-backups", Key="staging/interactions.db", Body=b"x")

    refused = run_absent(tmp_path, aws_env, "production")
    assert refused.returncode != 0 and "has deletion protection on" in refused.output
    assert rds.describe_db_instances(DBInstanceIdentifier="chatmrpt-production-db")["DBInstances"]

    kept = run_absent(tmp_path, aws_env, "staging", "-e", "aws_database_skip_final_snapshot=true")
    assert kept.returncode != 0 and "chatmrpt-staging-backups" in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    for env, extra in (("staging", ["-e", "aws_database_skip_final_snapshot=true", "-e",
                                    "aws_storage_force_destroy=true"]),
                       ("production", ["-e", "aws_database_absent_override_deletion_protection=true",
                                       "-e", "aws_storage_force_destroy=true"])):
        run_ok(run_absent(tmp_path, aws_env, env, *extra))
        again = run_ok(run_absent(tmp_path, aws_env, env, *extra))
        assert again.changed == 0, again.changed_tasks()

    # Production's final snapshot was taken; staging skipped it.
    snapshots = [s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]]
    assert "chatmrpt-production-db-final" in snapshots and "chatmrpt-staging-db-final" not in snapshots
    rds.delete_db_snapshot(DBSnapshotIdentifier="chatmrpt-production-db-final")
    for env in ENVIRONMENTS:
        assert not [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith(PREFIX[env])]
        assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(PREFIX[env])]
        assert not [p for p in iam.list_instance_profiles()["InstanceProfiles"]
                    if p["InstanceProfileName"].startswith(PREFIX[env])]
        assert not [b for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(LOWER[env])]
        assert not rds.describe_db_instances(Filters=[{"Name": "db-instance-id", "Values": [f"{LOWER[env]}-db"]}])[
            "DBInstances"]
        assert not [g for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]
                    if g["DBSubnetGroupName"].startswith(LOWER[env])]
        assert ssm_names(aws_env, f"/chatmrpt/{env}") == set()
        assert not alarms(aws_env, f"{PREFIX[env]}-")
        assert not client(aws_env, "logs").describe_log_groups(
            logGroupNamePrefix=f"/aws/ec2/chatmrpt/{env}")["logGroups"]
    assert not ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["ChatMRPT-Production-VPC"]}])["Vpcs"]
