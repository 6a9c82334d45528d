"""The core of the AWS estate in the emulated accounts (fixture `accounts`,
tests/aws_accounts.py: staging and production built once with the whole of
infrastructure.yml, every run kept): aws_network, aws_iam, aws_storage, aws_secrets,
aws_database and aws_monitoring, read back with boto3; the local environment's special
cases; a refused run leaves the accounts as they were.

Each environment went: --check on an empty account, a run refused for a missing operator
secret, apply, re-apply (zero changed but the emulator exception named in
tests/aws_accounts.py), --check on the converged account (zero changed).
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import jsonschema
import pytest

from aws_accounts import ENVIRONMENTS, EXCUSED_ON_REAPPLY, LOWER, PREFIX, distributions, live_instances, ssm_names
from cloudwatch_model import render, unpublished
from emulator import REGION, client, expected_tags, group, run_ok, tags_of
from helpers import PlaybookRun, base_env, run_playbook

pytestmark = pytest.mark.slow

EMAILS = ["chatmrpt-ops@example.org"]  # inventories/{staging,production}/group_vars/all/aws_monitoring.yml


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_check_mode_on_an_empty_account_reports_and_creates_nothing(accounts, env):
    run = accounts.runs[env]["check-empty"]
    assert run.changed > 0, "check mode on an empty account must report the changes to come"
    assert accounts.created_by_check[env] == {"role": [], "bucket": [], "parameters": [], "groups": [],
                                              "instances": [], "target groups": []}
    assert "a real run will stop here until an operator stores them" in run.output


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_missing_operator_secret_stops_the_run_before_any_secret_is_written(accounts, env):
    run = accounts.runs[env]["no-key"]
    assert run.returncode != 0
    assert f"Missing SSM parameters: /chatmrpt/{env}/app/OPENAI_API_KEY" in run.output
    # the command it names keeps the value out of shell history (docs/first-run-aws.md runs it)
    assert f"scripts/put_secret.py {env} app/OPENAI_API_KEY" in " ".join(run.output.split())
    assert accounts.params_after_refusal[env] == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_second_run_and_check_on_converged_account_change_nothing(accounts, env):
    runs = accounts.runs[env]
    assert runs["apply"].changed > 0
    unexcused = [t for t in runs["reapply"].changed_tasks() if t not in EXCUSED_ON_REAPPLY]
    assert unexcused == [], f"second run of {env} changed: {unexcused}"
    # The exception really is the emulator's CloudFront: only where the CDN is on.
    excused = set(runs["reapply"].changed_tasks()) & set(EXCUSED_ON_REAPPLY)
    assert excused == (set(EXCUSED_ON_REAPPLY) if env == "production" else set())
    # The drift check's run (exit 0: no drift, 1: drift, 2: the check failed).
    assert runs["check"].returncode == 0 and runs["check"].recap, runs["check"].output[-6000:]
    assert runs["check"].changed == 0, runs["check"].changed_tasks()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_security_groups_open_only_what_the_contract_says(accounts, aws_env, env):
    alb, app, db = (group(aws_env, f"{PREFIX[env]}-{n}") for n in ("alb", "app", "db"))
    assert alb["VpcId"] == app["VpcId"] == db["VpcId"]

    def rules(g):
        return sorted((p["FromPort"], p["ToPort"], tuple(sorted(r["CidrIp"] for r in p.get("IpRanges", []))),
                       tuple(sorted(r["CidrIpv6"] for r in p.get("Ipv6Ranges", []))),
                       tuple(sorted(r["GroupId"] for r in p.get("UserIdGroupPairs", [])))
                       + tuple(sorted(r["PrefixListId"] for r in p.get("PrefixListIds", []))))
                      for p in g["IpPermissions"])

    if env == "production":  # behind CloudFront: HTTPS from CloudFront's origin-facing addresses only
        cloudfront = client(aws_env, "ec2").describe_managed_prefix_lists(Filters=[
            {"Name": "prefix-list-name", "Values": ["com.amazonaws.global.cloudfront.origin-facing"]}])["PrefixLists"]
        assert rules(alb) == [(443, 443, (), (), (cloudfront[0]["PrefixListId"],))]
    else:
        assert rules(alb) == [(80, 80, ("0.0.0.0/0",), ("::/0",), ()), (443, 443, ("0.0.0.0/0",), ("::/0",), ())]
    # no SSH: the instances are reached through SSM (nothing syncs between them over SSH)
    assert rules(app) == [(8000, 8000, (), (), (alb["GroupId"],))]
    assert rules(db) == [(5432, 5432, (), (), (app["GroupId"],))]
    cache = group(aws_env, f"{PREFIX[env]}-cache")
    assert cache["VpcId"] == app["VpcId"] and rules(cache) == [(6379, 6379, (), (), (app["GroupId"],))]
    for g in (alb, app, db, cache):
        assert tags_of(g["Tags"]) == {**expected_tags(env, "network"), "Name": g["GroupName"]}


def test_staging_uses_the_default_vpc_production_its_own(accounts, aws_env):
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
def test_iam_role_is_least_privilege(accounts, aws_env, env):
    iam = client(aws_env, "iam")
    role_name = f"{PREFIX[env]}-EC2-Role"
    role = iam.get_role(RoleName=role_name)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]
    assert tags_of(role["Tags"]) == expected_tags(env, "iam")
    attached = sorted(p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"])
    assert attached == []
    assert sorted(iam.list_role_policies(RoleName=role_name)["PolicyNames"]) == [
        "backups-bucket-prefix", "cloudwatch-agent", "ssm-parameters", "ssm-session-manager"]

    def doc(name):
        document = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        return json.loads(document) if isinstance(document, str) else document

    bucket = f"arn:aws:s3:::{LOWER[env]}-backups"
    s3_statements = doc("backups-bucket-prefix")["Statement"]
    assert s3_statements == [
        {"Sid": "ListOwnPrefix", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket,
         "Condition": {"StringLike": {"s3:prefix": [f"{env}/*"]}}},
        {"Sid": "ReadOwnPrefix", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket}/{env}/*"},
        {"Sid": "WriteOwnInstancePrefix", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": f"{bucket}/{env}/${{aws:userid}}/*"},
    ]
    ssm_statements = doc("ssm-parameters")["Statement"]
    ssm_arn = f"arn:aws:ssm:{REGION}:123456789012:parameter/chatmrpt/{env}"
    assert ssm_statements[0] == {"Sid": "ReadOwnParameters", "Effect": "Allow",
                                 "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
                                 "Resource": [ssm_arn, f"{ssm_arn}/*"]}
    key_arn = client(aws_env, "kms").describe_key(KeyId=KEY_ALIAS.format(env=env))["KeyMetadata"]["Arn"]
    assert ssm_statements[1] == {"Sid": "DecryptThroughSsmOnly", "Effect": "Allow", "Action": "kms:Decrypt",
                                 "Resource": key_arn,
                                 "Condition": {"StringEquals": {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}}}
    assert ssm_statements[2] == {"Sid": "DenyEveryOtherParameter", "Effect": "Deny",
                                 "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath",
                                            "ssm:GetParameterHistory"],
                                 "NotResource": [ssm_arn, f"{ssm_arn}/*"]}
    assert len(ssm_statements) == 3
    agent = {statement["Sid"]: statement for statement in doc("cloudwatch-agent")["Statement"]}
    assert agent["OwnNamespaces"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": [f"ChatMRPT/{env.title()}"]}}
    log_group = f"arn:aws:logs:{REGION}:123456789012:log-group:/aws/ec2/chatmrpt/{env}"
    assert agent["OwnLogGroup"]["Resource"] == [log_group, f"{log_group}:*"]
    profile = iam.get_instance_profile(InstanceProfileName=f"{PREFIX[env]}-EC2-Profile")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [role_name]
    # (moto has no ListInstanceProfileTags: the tags come with GetInstanceProfile.)
    assert tags_of(profile["Tags"]) == expected_tags(env, "iam")


def _parsed(document):
    return json.loads(document) if isinstance(document, str) else document


def _statements(document):
    statements = _parsed(document)["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _managed_statements(iam, arn):
    """The statements of the default version of a managed policy (the emulator holds AWS's own)."""
    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    return _statements(iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
                       ["PolicyVersion"]["Document"])


def _role_statements(iam, role_name):
    """Every statement of the role: its inline policies and its attached managed policies."""
    out = [s for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]
           for s in _statements(iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"])]
    for attached in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
        out += _managed_statements(iam, attached["PolicyArn"])
    return out


def _listed(value):
    return value if isinstance(value, list) else [value]


POLICY_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _substituted(pattern, variables):
    """A resource pattern with its policy variables (${aws:userid}) replaced by the request's
    values; a variable the request does not carry fails the test."""
    def value(match):
        if match.group(1) not in variables:
            raise AssertionError(f"policy variable {match.group(0)} not given to this evaluation")
        return variables[match.group(1)]
    return POLICY_VARIABLE.sub(value, pattern)


def _matches(statement, action, resource, variables=None):
    """Whether a statement names the action and the resource (Action/NotAction,
    Resource/NotResource; wildcards and policy variables as IAM matches them; conditions
    ignored)."""
    def any_match(patterns, value, case=True):
        return any(fnmatch.fnmatchcase(value if case else value.lower(),
                                       _substituted(p, variables or {}) if case else p.lower())
                   for p in _listed(patterns))

    acts = (any_match(statement["Action"], action, case=False) if "Action" in statement
            else not any_match(statement["NotAction"], action, case=False))
    if not acts:
        return False
    return (any_match(statement["Resource"], resource) if "Resource" in statement
            else not any_match(statement["NotResource"], resource))


def _allowed(statements, action, resource, variables=None):
    """IAM's rule: allowed when a statement allows it and none denies it (conditions ignored:
    an Allow counts even when its condition would not hold, so this is stricter than AWS)."""
    return (any(_matches(s, action, resource, variables) for s in statements if s["Effect"] == "Allow")
            and not any(_matches(s, action, resource, variables) for s in statements if s["Effect"] == "Deny"))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_instance_role_reads_another_environments_parameters(accounts, aws_env, env):
    """Both environments share the account, so an instance role that may read every parameter
    (AmazonSSMManagedInstanceCore did) gives a staging host production's secrets. Every
    statement of every policy of the role, conditions ignored (so stricter than AWS), is
    matched against the other environment's parameters and the own one's."""
    iam = client(aws_env, "iam")
    other = next(e for e in ENVIRONMENTS if e != env)
    parameter = f"arn:aws:ssm:{REGION}:123456789012:parameter/chatmrpt/{{}}/database/password"
    reads = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath")
    statements = _role_statements(iam, f"{PREFIX[env]}-EC2-Role")

    def allowed(action, resource):
        return _allowed(statements, action, resource)

    assert not [a for a in reads if allowed(a, parameter.format(other))], f"{env} reads {other}'s parameters"
    # The explicit Deny holds even when someone attaches the managed policy that reads every
    # parameter; without the Deny that policy alone would give the other environment's.
    broad = _managed_statements(iam, "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    assert not [a for a in reads if _allowed(statements + broad, a, parameter.format(other))]
    without_deny = [s for s in statements if s["Effect"] != "Deny"]
    assert _allowed(without_deny + broad, "ssm:GetParameter", parameter.format(other))
    assert all(allowed(a, parameter.format(env)) for a in reads), f"{env} cannot read its own parameters"
    assert allowed("ssmmessages:OpenDataChannel", "*") and allowed("ssm:UpdateInstanceInformation", "*")
    # the agent: logs (and their retention) in the environment's log group only
    log_group = f"arn:aws:logs:{REGION}:123456789012:log-group:/aws/ec2/chatmrpt/{{}}"
    for action in ("logs:PutRetentionPolicy", "logs:PutLogEvents"):
        assert not allowed(action, log_group.format(other)), f"{env}: {action} on {other}'s log group"
        assert not allowed(action, log_group.format("other-project")), f"{env}: {action} on any log group"
        assert allowed(action, log_group.format(env) + ":log-stream:i-0123")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_instance_writes_only_its_own_backups(accounts, aws_env, env):
    """One compromised instance must not overwrite, or plant, another's backups. An instance
    profile's session is `<role id>:<instance id>` (aws:userid); every statement of the role,
    conditions ignored, is matched with that id against the keys chatmrpt-backup writes."""
    iam = client(aws_env, "iam")
    other = next(e for e in ENVIRONMENTS if e != env)
    role = iam.get_role(RoleName=f"{PREFIX[env]}-EC2-Role")["Role"]
    statements = _role_statements(iam, role["RoleName"])
    bucket = f"arn:aws:s3:::{LOWER[env]}-backups"
    me = {"aws:userid": f"{role['RoleId']}:i-0aaaaaaaaaaaaaaaa"}
    sibling = f"{role['RoleId']}:i-0bbbbbbbbbbbbbbbb"

    def key(environment, writer):
        return f"{bucket}/{environment}/{writer}/20261204T020000Z/files/interactions.db"

    assert _allowed(statements, "s3:PutObject", key(env, me["aws:userid"]), me), "cannot write its own backups"
    for target in (key(env, sibling), key(env, "i-0bbbbbbbbbbbbbbbb"), key(env, "x") + f"/{me['aws:userid']}/",
                   f"{bucket}/{env}/manifest.json", key(other, me["aws:userid"])):
        assert not _allowed(statements, "s3:PutObject", target, me), f"writes {target}"
    # a replacement restores the instance it replaces: reads stay environment-wide, and no delete
    assert _allowed(statements, "s3:GetObject", key(env, sibling), me)
    assert not _allowed(statements, "s3:GetObject", key(other, sibling), me)
    assert not [a for a in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl")
                if _allowed(statements, a, key(env, me["aws:userid"]), me)]


KEY_ALIAS = "alias/chatmrpt-{env}-parameters"
ACCOUNT = "arn:aws:iam::123456789012"


def _condition_holds(condition, context):
    """The condition operators the key policies use, evaluated against the request context; any
    other operator fails the test (so an unknown condition never passes silently)."""
    for operator, tests in (condition or {}).items():
        for key, wanted in tests.items():
            value = context.get(key)
            if operator == "StringEquals":
                ok = value in _listed(wanted)
            elif operator == "ArnLike":
                ok = value is not None and any(fnmatch.fnmatchcase(value, p) for p in _listed(wanted))
            else:
                raise AssertionError(f"condition operator {operator} not evaluated by this test")
            if not ok:
                return False
    return True


def _key_policy_lets(policy, principal, action, via_service=None):
    """Whether a key policy lets an IAM principal (its aws:PrincipalArn) do an action on the key.
    A statement whose principal is the account lets any principal of the account whose own IAM
    policy allows it, so it counts here (stricter than AWS); "*" lets everyone."""
    context = {"aws:PrincipalArn": principal, "kms:ViaService": via_service}

    def names(statement):
        named = _listed(statement["Principal"]["AWS"]) if statement["Principal"] != "*" else ["*"]
        return any(p in ("*", principal) or (p.endswith(":root") and principal.startswith(p[:-4])) for p in named)

    def applies(statement):
        return (any(fnmatch.fnmatchcase(action, a) for a in _listed(statement["Action"])) and names(statement)
                and _condition_holds(statement.get("Condition"), context))

    statements = _statements(policy)
    return (any(applies(s) for s in statements if s["Effect"] == "Allow")
            and not any(applies(s) for s in statements if s["Effect"] == "Deny"))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_encrypts_its_secrets_with_a_key_only_its_instances_and_operators_decrypt(
        accounts, aws_env, env):
    """The AWS managed aws/ssm key lets every principal of the account decrypt through SSM, so
    staging's hosts could read production's secrets whatever IAM says. Each environment has its
    own key: only its instance role and the operators decrypt, through SSM only."""
    kms, ssm, iam = client(aws_env, "kms"), client(aws_env, "ssm"), client(aws_env, "iam")
    other = next(e for e in ENVIRONMENTS if e != env)
    key = kms.describe_key(KeyId=KEY_ALIAS.format(env=env))["KeyMetadata"]
    assert key["KeyManager"] == "CUSTOMER" and key["KeyState"] == "Enabled" and key["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    assert tags_of(kms.list_resource_tags(KeyId=key["KeyId"])["Tags"], key="TagKey", value="TagValue") == \
        expected_tags(env, "iam")
    # every SecureString of the environment, the operator's one stored with aws/ssm before the
    # key existed included (tests/aws_accounts.py), is now encrypted with it
    parameters = [p for page in ssm.get_paginator("describe_parameters").paginate(ParameterFilters=[
        {"Key": "Path", "Option": "Recursive", "Values": [f"/chatmrpt/{env}"]}]) for p in page["Parameters"]]
    secure = {p["Name"]: p["KeyId"] for p in parameters if p["Type"] == "SecureString"}
    assert f"/chatmrpt/{env}/app/OPENAI_API_KEY" in secure and len(secure) >= 6, secure
    assert set(secure.values()) <= {KEY_ALIAS.format(env=env), key["KeyId"], key["Arn"]}, secure
    assert ssm.get_parameter(Name=f"/chatmrpt/{env}/app/OPENAI_API_KEY", WithDecryption=True)[
        "Parameter"]["Value"] == f"sk-test-{env}-operator"

    policy = kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"]
    assert all(s.get("Principal") != "*" and "*" not in _listed(s["Principal"].get("AWS", []))
               for s in _statements(policy)), "a statement names every principal"
    via_ssm = f"ssm.{REGION}.amazonaws.com"
    own_role, other_role = (f"{ACCOUNT}:role/{PREFIX[e]}-EC2-Role" for e in (env, other))
    assert _key_policy_lets(policy, own_role, "kms:Decrypt", via_ssm)
    assert not _key_policy_lets(policy, own_role, "kms:Decrypt"), "decryption outside SSM"
    assert not _key_policy_lets(policy, other_role, "kms:Decrypt", via_ssm), f"{other}'s hosts decrypt {env}'s secrets"
    for operator in (f"{ACCOUNT}:user/alice", f"{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_1"):
        assert _key_policy_lets(policy, operator, "kms:Decrypt", via_ssm), operator
    assert not _key_policy_lets(policy, f"{ACCOUNT}:role/some-lambda-role", "kms:Decrypt", via_ssm)
    assert not _key_policy_lets(policy, "arn:aws:iam::999999999999:user/alice", "kms:Decrypt", via_ssm)
    assert _key_policy_lets(policy, f"{ACCOUNT}:role/{PREFIX[other]}-EC2-Role", "kms:Encrypt", via_ssm)
    assert _key_policy_lets(policy, f"{ACCOUNT}:user/alice", "kms:PutKeyPolicy"), "the account lost the key"
    # and the other environment's instance role may not even ask (its IAM policy names its own key)
    other_key = kms.describe_key(KeyId=KEY_ALIAS.format(env=other))["KeyMetadata"]["Arn"]
    statements = _role_statements(iam, f"{PREFIX[env]}-EC2-Role")
    assert _allowed(statements, "kms:Decrypt", key["Arn"]) and not _allowed(statements, "kms:Decrypt", other_key)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_backups_bucket_is_versioned_private_encrypted_tls_only_with_lifecycle(accounts, aws_env, env):
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
def test_secrets_generated_once_never_overwritten_never_logged(accounts, aws_env, env):
    ssm = client(aws_env, "ssm")
    first = accounts.secrets[env]
    lengths = {"app/SECRET_KEY": 64, "app/ADMIN_KEY": 32, "database/master-password": 32,
               "database/app-password": 32, "cdn/origin-verify": 48, "cache/auth-token": 64}
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
    assert first["app/SECRET_KEY"] != accounts.secrets[other]["app/SECRET_KEY"]
    # No secret value in any output of any run (production's runs pass CloudFront's header
    # value to the load balancer and the distribution).
    for run in accounts.runs[env].values():
        assert isinstance(run, PlaybookRun)
        for value in first.values():
            assert value not in run.output


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rds_instance_is_encrypted_private_backed_up_and_recorded(accounts, aws_env, env):
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


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_redis_is_encrypted_token_protected_reachable_from_the_app_only_and_recorded(accounts, aws_env, env):
    elasticache, ssm = client(aws_env, "elasticache"), client(aws_env, "ssm")
    group_id = f"{LOWER[env]}-redis"
    redis = elasticache.describe_replication_groups(ReplicationGroupId=group_id)["ReplicationGroups"][0]
    assert (redis["TransitEncryptionEnabled"], redis["AtRestEncryptionEnabled"], redis["AuthTokenEnabled"]) == (
        True, True, True)
    assert (redis["Engine"], redis["CacheNodeType"], len(redis["MemberClusters"])) == ("redis", "cache.t4g.micro", 1)
    # (moto makes no member clusters, so the nodes' subnet and security groups cannot be read
    # back; the cache group's own rule is checked in test_security_groups_open_only_what_...)
    subnets = elasticache.describe_cache_subnet_groups(CacheSubnetGroupName=f"{LOWER[env]}-cache-subnets")
    subnet_ids = [s["SubnetIdentifier"] for s in subnets["CacheSubnetGroups"][0]["Subnets"]]
    zones = {s["AvailabilityZone"] for s in client(aws_env, "ec2").describe_subnets(SubnetIds=subnet_ids)["Subnets"]}
    assert len(zones) >= 2
    # (moto keeps no tags of a replication group: the role passes them, AWS stores them)
    # the AUTH token is the one aws_secrets generated (moto keeps it; AWS never shows it)
    token = ssm.get_parameter(Name=f"/chatmrpt/{env}/cache/auth-token", WithDecryption=True)["Parameter"]["Value"]
    assert token == accounts.secrets[env]["cache/auth-token"]
    endpoint = redis["NodeGroups"][0]["PrimaryEndpoint"]
    # plain connections too: ChatMRPT's clients cannot use TLS yet (roles/aws_cache/README.md)
    assert redis["TransitEncryptionMode"] == "preferred"
    recorded = {name: ssm.get_parameter(Name=f"/chatmrpt/{env}/cache/{name}")["Parameter"]["Value"]
                for name in ("endpoint", "port", "transit-encryption")}
    assert recorded == {"endpoint": endpoint["Address"], "port": str(endpoint["Port"]),
                        "transit-encryption": "preferred"}


# --------------------------------------------------------------------------------------
# Monitoring: staging's alarms watch its app instances, its ASG and its load balancer;
# production's instance in the same account gets none of them.
# --------------------------------------------------------------------------------------

@pytest.fixture
def watched(accounts, aws_env):
    """What staging's alarms must watch, as EC2, Auto Scaling and ELB report it."""
    elb = client(aws_env, "elbv2")
    lb = elb.describe_load_balancers(Names=["ChatMRPT-Staging-ALB"])["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.describe_target_groups(Names=["ChatMRPT-Staging-TG"])["TargetGroups"][0]["TargetGroupArn"]
    return {"instances": sorted(i["InstanceId"] for i in live_instances(aws_env, "staging")),
            "other": live_instances(aws_env, "production")[0]["InstanceId"], "lb": lb, "tg": tg}


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
        expected[f"{base}-backup-failed"] = ("ChatMRPT/Staging", "BackupSuccess", "LessThanThreshold", 1.0,
                                             {"Environment": "staging", "Host": instance})
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
        backup = name.endswith("-backup-failed")
        assert (alarm["Period"], alarm["EvaluationPeriods"]) == (86400 if backup else 300, 1), name
        assert alarm["TreatMissingData"] == ("breaching" if backup else "missing"), name
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic], name
    assert found["ChatMRPT-Staging-ALB-target-5xx"]["Statistic"] == "Sum"
    assert found["ChatMRPT-Staging-ALB-unhealthy-hosts"]["Statistic"] == "Maximum"
    assert not [n for n in found if watched["other"] in n]


@pytest.fixture(scope="module")
def agent_configs(tmp_path_factory):
    """{env: the CloudWatch agent configuration its instances get}, rendered from the role."""
    workdir = tmp_path_factory.mktemp("agent")
    configs = {}
    for env in ENVIRONMENTS:
        proc = render(env, workdir)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        configs[env] = json.loads((workdir / f"{env}.json").read_text())
    return configs


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_alarm_watches_a_metric_that_is_published(accounts, aws_env, agent_configs, env):
    """Each alarm names a dimension set that the agent's configuration (or the backup
    program, or AWS) really publishes, with values that exist: tests/cloudwatch_model.py
    derives the sets from the rendered configuration, not from the monitoring role."""
    found = alarms(aws_env, f"{PREFIX[env]}-")
    assert found, f"{env} has no alarms"
    assert unpublished(list(found.values()), agent_configs[env]) == []
    instances = {i["InstanceId"] for i in live_instances(aws_env, env)}
    disk_paths = set(agent_configs[env]["metrics"]["metrics_collected"]["disk"]["resources"])
    allowed = {"InstanceId": instances, "Host": instances, "path": disk_paths, "Environment": {env},
               "AutoScalingGroupName": {f"{PREFIX[env]}-ASG"}}
    for name, alarm in found.items():
        for dimension in alarm["Dimensions"]:
            if dimension["Name"] in allowed:
                assert dimension["Value"] in allowed[dimension["Name"]], (name, dimension)


DASHBOARD_SCHEMA = json.loads((Path(__file__).parent / "cloudwatch_dashboard_body.schema.json").read_text())


def metric_lines(body):
    """(widget title, namespace, metric, {dimension: value}, options) of every metric line."""
    for widget in body["widgets"]:
        for line in widget["properties"].get("metrics", []):
            *names, options = line if isinstance(line[-1], dict) else (*line, {})
            pairs = names[2:]
            assert len(pairs) % 2 == 0, line
            yield widget["properties"]["title"], names[0], names[1], dict(zip(pairs[::2], pairs[1::2])), options


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_dashboard_draws_every_alarm_and_its_threshold(accounts, aws_env, agent_configs, env):
    cloudwatch = client(aws_env, "cloudwatch")
    body = json.loads(cloudwatch.get_dashboard(DashboardName=PREFIX[env])["DashboardBody"])
    jsonschema.validate(body, DASHBOARD_SCHEMA)
    cells = set()
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24, widget
        for dx in range(widget["width"]):
            for dy in range(widget["height"]):
                cell = (widget["x"] + dx, widget["y"] + dy)
                assert cell not in cells, f"widgets overlap at {cell}"
                cells.add(cell)
    found = alarms(aws_env, f"{PREFIX[env]}-")
    drawn = list(metric_lines(body))
    # Every alarm is one line of its own: same namespace, metric, dimensions and statistic.
    key = lambda ns, metric, dims, stat: (ns, metric, json.dumps(dims, sort_keys=True), stat)  # noqa: E731
    wanted = sorted(key(a["Namespace"], a["MetricName"], {d["Name"]: d["Value"] for d in a["Dimensions"]},
                        a["Statistic"]) for a in found.values())
    alarm_lines = [line for line in drawn if line[2] not in ("RequestCount", "HealthyHostCount")]
    assert sorted(key(ns, m, dims, o["stat"]) for _t, ns, m, dims, o in alarm_lines) == wanted
    # The lines without an alarm use an alarm's dimensions; everything drawn is published.
    dimension_sets = [{d["Name"]: d["Value"] for d in a["Dimensions"]} for a in found.values()]
    extra = [line for line in drawn if line not in alarm_lines]
    assert sorted(m for _t, _ns, m, _d, _o in extra) == ["HealthyHostCount", "RequestCount"]
    assert all(dims in dimension_sets for _t, _ns, _m, dims, _o in extra)
    as_alarms = [{"AlarmName": f"{title}: {m}", "Namespace": ns, "MetricName": m,
                  "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]}
                 for title, ns, m, dims, _o in drawn]
    assert unpublished(as_alarms, agent_configs[env]) == []
    # Each graph draws the thresholds of its alarms, and the alarm widget shows them all.
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        metrics = {line[1] for line in widget["properties"]["metrics"]}
        thresholds = {a["Threshold"] for a in found.values() if a["MetricName"] in metrics}
        drawn_thresholds = {a["value"] for a in widget["properties"].get("annotations", {}).get("horizontal", [])}
        assert drawn_thresholds == thresholds, widget["properties"]["title"]
    (status,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert sorted(status["properties"]["alarms"]) == sorted(a["AlarmArn"] for a in found.values())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_outputs_name_the_endpoints_and_the_next_steps(accounts, aws_env, env):
    """playbooks/outputs.yml (site.yml's last play) on each applied environment: the
    endpoints as AWS reports them, and nothing changed."""
    run = run_ok(accounts.playbook(env, playbook="outputs.yml"))
    assert run.changed == 0, run.changed_tasks()
    said = " ".join(run.output.split())
    lb = client(aws_env, "elbv2").describe_load_balancers(Names=[f"{PREFIX[env]}-ALB"])["LoadBalancers"][0]
    assert f"load balancer: {lb['DNSName']}" in said
    cdn = [d for d in distributions(aws_env).items() if d[0] == f"{PREFIX[env]}-CDN"]
    printed = said[said.find("ChatMRPT "):][:3000]
    if cdn:
        assert f"app: https://{cdn[0][1]['DomainName']}/" in said, printed
        assert f"CloudFront: {cdn[0][1]['DomainName']}" in said, printed
    else:
        # HTTPS on the operator's domain, which the next steps point at the load balancer
        assert "CloudFront: off" in said and "app: https://staging.chatmrpt.example.org/" in said, printed
        assert f"point staging.chatmrpt.example.org (CNAME) at {lb['DNSName']}" in said, printed
    endpoint = client(aws_env, "ssm").get_parameter(Name=f"/chatmrpt/{env}/database/endpoint")["Parameter"]["Value"]
    assert f"database: {endpoint} (RDS)" in said
    assert f"backups: s3://{LOWER[env]}-backups/{env}/" in said
    assert f"alarms: SNS topic {PREFIX[env]}-Alarms, to {', '.join(EMAILS)}" in said
    assert f"#dashboards/dashboard/{PREFIX[env]}" in said
    assert f"ansible-playbook -i inventories/{env} playbooks/deploy.yml" in said


def test_outputs_refuses_a_bad_input_before_reading_aws():
    """The outputs role's argument specs type its inputs: a flag that is no boolean is refused
    by name, before any AWS call (the endpoint is one where nothing listens)."""
    dead = base_env(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="testing",
                    AWS_SECRET_ACCESS_KEY="testing",  # pragma: allowlist secret
                    AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION, ANSIBLE_INVENTORY_UNPARSED_FAILED="false")
    run = run_playbook("outputs.yml", "local", "-e", "outputs_https=sometimes", env=dead)
    assert run.returncode != 0
    assert "TASK [outputs : Validating arguments against arg spec 'main'" in run.output, run.output[-3000:]
    (failure,) = run.failures()
    assert "outputs_https" in failure and "Could not connect" not in failure, failure


# --------------------------------------------------------------------------------------
# The local environment: no RDS, the lab's PostgreSQL recorded, its password kept.
# --------------------------------------------------------------------------------------

def test_local_keeps_the_labs_master_password_and_records_the_external_database(aws_env):
    ssm = client(aws_env, "ssm")
    lab_password = "LabPassword0123456789abcdefXYZ"  # pragma: allowlist secret
    ssm.put_parameter(Name="/chatmrpt/local/database/master-password", Value=lab_password, Type="SecureString")
    try:
        first = run_ok(run_playbook("infrastructure.yml", "local", "--tags", "iam,secrets,database", env=aws_env))
        again = run_ok(run_playbook("infrastructure.yml", "local", "--tags", "iam,secrets,database", env=aws_env))
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
# A refused run leaves the account as it was (tests/aws/test_bad_inputs.py: every refusal).
# --------------------------------------------------------------------------------------

def test_bad_input_changes_nothing_on_the_emulator(accounts, aws_env):
    ec2 = client(aws_env, "ec2")
    before = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["ChatMRPT-Production-app"]}])
    run = accounts.playbook("production", "-e", json.dumps({"aws_network_admin_ssh_cidrs": ["198.51.100.0/24",
                                                                                          "0.0.0.0/0"]}))
    assert run.returncode != 0 and "aws_network_admin_ssh_cidrs" in run.output
    after = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["ChatMRPT-Production-app"]}])
    assert before["SecurityGroups"][0]["IpPermissions"] == after["SecurityGroups"][0]["IpPermissions"]
    assert run.changed == 0
