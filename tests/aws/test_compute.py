"""aws_loadbalancer, aws_compute and aws_cdn on the session's moto, for staging AND
production (tags network,iam,loadbalancer,compute,cdn: the roles they need by name, not
the database or the alarms), every figure read back with boto3.

staging:    --check on an empty account, apply, re-apply, --check. No golden AMI yet:
            the launch template falls back to Amazon Linux 2023 (root device /dev/xvda).
production: a golden AMI is registered first; its root device is /dev/sda1 (moto's
            register_image always gives that), the base AMI's is /dev/xvda, so the test
            fails if the block device mapping does not follow the AMI. An ACM certificate
            turns HTTP into a redirect to HTTPS, CloudFront is on (its inventory's choice).

Emulator exceptions, named here and nowhere else excused:
- EXCUSED_ON_REAPPLY: community.aws.cloudfront_distribution reports changed on every run
  against moto (moto echoes defaults such as ForwardedValues next to a cache policy, so
  the module's comparison never matches); lab-notes lists it. --check is not affected
  (the module has no check mode and is skipped).
- moto never reports the target group attribute stickiness.lb_cookie.duration_seconds
  (AWS always does, 86400 by default); the role only sets it when the group reports it
  (the module crashes otherwise). test_cookie_duration_is_enforced_where_reported
  proves the path by giving the group the attribute, drifted, and re-applying.
The autoscaling_group module's "changed on every --check" is not excused: the role
compares the live group itself and calls the module under --check only on a difference.

Sharing the session moto: tests/aws/test_core.py expects no staging/production resources
when it starts, so this module resets the emulator when it is done (pytest runs modules
one after the other; nothing else uses the emulator while this module runs). It also
starts from a reset, since it registers a golden AMI and asserts which AMI is chosen.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess

import pytest

from emulator import client, expected_tags, group, reset_moto, run_ok, tags_of
from helpers import ROOT, VENV_BIN, run_playbook, run_playbooks

pytestmark = pytest.mark.slow

TAGS = "network,iam,loadbalancer,compute,cdn"
PREFIX = {"staging": "ChatMRPT-Staging", "production": "ChatMRPT-Production"}
ASG_MAX = {"staging": 2, "production": 3}  # inventories/<env>/group_vars/all/aws_compute.yml
GOLDEN_NAME = "chatmrpt-golden-20260101-0000"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ALL_VIEWER = "216adef6-5c7f-47e4-b989-5492eafa07d3"
EXCUSED_ON_REAPPLY = {
    "aws_cdn : Manage the CloudFront distribution":
        "moto echoes defaults, the module reports changed on every run (lab-notes)",
}


def live_instances(aws_env, env):
    pages = client(aws_env, "ec2").get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:Environment", "Values": [env]}, {"Name": "tag:Role", "Values": ["app"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def self_signed_certificate():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatmrpt.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


def register_golden_ami(aws_env):
    """A golden AMI as the image build makes it; on moto its root device is /dev/sda1."""
    ec2 = client(aws_env, "ec2")
    image = ec2.register_image(
        Name=GOLDEN_NAME, Architecture="x86_64", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 20, "VolumeType": "gp3"}}],
    )["ImageId"]
    ec2.create_tags(Resources=[image], Tags=[{"Key": "Project", "Value": "chatmrpt"}])
    # A newer image of the same name pattern but another project must not be chosen.
    other = ec2.register_image(Name="chatmrpt-golden-20990101-0000", Architecture="x86_64",
                               RootDeviceName="/dev/sdb", VirtualizationType="hvm")["ImageId"]
    ec2.create_tags(Resources=[other], Tags=[{"Key": "Project", "Value": "someone-else"}])
    return ec2.describe_images(ImageIds=[image])["Images"][0]


def newest_base_ami(aws_env):
    images = client(aws_env, "ec2").describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-kernel-6.1-x86_64"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
    assert images, "the emulator has no Amazon Linux 2023 image"
    return max(images, key=lambda i: i["CreationDate"])


# --------------------------------------------------------------------------------------
# Both environments applied once per module; every run kept for the tests below.
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def estate(aws_env):
    reset_moto(aws_env)  # see the module docstring: a known starting point
    runs, amis = {}, {}
    try:
        runs["staging", "check-empty"] = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", TAGS,
                                                             "--check", "--diff", env=aws_env))
        # --check created nothing.
        assert not live_instances(aws_env, "staging")
        assert not client(aws_env, "elbv2").describe_target_groups()["TargetGroups"]
        amis["staging"] = newest_base_ami(aws_env)
        runs["staging", "apply"] = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", TAGS, env=aws_env))
        runs["staging", "reapply"] = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", TAGS,
                                                         env=aws_env))
        runs["staging", "check"] = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", TAGS, "--check",
                                                       "--diff", env=aws_env))

        amis["production"] = register_golden_ami(aws_env)
        cert, key = self_signed_certificate()
        cert_arn = client(aws_env, "acm").import_certificate(Certificate=cert, PrivateKey=key)["CertificateArn"]
        https = ("-e", f"aws_loadbalancer_certificate_arn={cert_arn}")
        runs["production", "apply"] = run_ok(run_playbook("infrastructure.yml", "production", "--tags", TAGS,
                                                          *https, env=aws_env))
        runs["production", "reapply"] = run_ok(run_playbook("infrastructure.yml", "production", "--tags", TAGS,
                                                            *https, env=aws_env))
        runs["production", "check"] = run_ok(run_playbook("infrastructure.yml", "production", "--tags", TAGS,
                                                          "--check", "--diff", *https, env=aws_env))
        yield {"runs": runs, "amis": amis, "cert_arn": cert_arn}
    finally:
        reset_moto(aws_env)  # leave nothing for tests/aws/test_core.py (see the docstring)


def launch_template(aws_env, env):
    ec2 = client(aws_env, "ec2")
    template = ec2.describe_launch_templates(LaunchTemplateNames=[f"{PREFIX[env]}-Template"])["LaunchTemplates"][0]
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"])
    return template, versions["LaunchTemplateVersions"]


def target_group(aws_env, env):
    elb = client(aws_env, "elbv2")
    tg = elb.describe_target_groups(Names=[f"{PREFIX[env]}-TG"])["TargetGroups"][0]
    attributes = {a["Key"]: a["Value"] for a in
                  elb.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])["Attributes"]}
    return tg, attributes


ENVS = pytest.mark.parametrize("env", ["staging", "production"])


# --- idempotence and check mode ---------------------------------------------------------

def test_check_mode_on_an_empty_account_reports_without_failing(estate):
    run = estate["runs"]["staging", "check-empty"]
    assert run.changed > 0, "--check on an empty account must report what it would create"


@ENVS
def test_second_run_changes_nothing_but_the_named_emulator_exception(estate, env):
    run = estate["runs"][env, "reapply"]
    unexcused = [t for t in run.changed_tasks() if t not in EXCUSED_ON_REAPPLY]
    assert unexcused == [], f"second run of {env} changed: {unexcused}"
    # The exception really is the emulator's CloudFront: only where the CDN is on.
    excused = set(run.changed_tasks()) & set(EXCUSED_ON_REAPPLY)
    assert excused == (set(EXCUSED_ON_REAPPLY) if env == "production" else set())


@ENVS
def test_check_on_the_converged_account_changes_nothing(estate, env):
    run = estate["runs"][env, "check"]
    assert run.changed == 0, f"--check on converged {env} changed: {run.changed_tasks()}"


# --- AMI and launch template --------------------------------------------------------------

@ENVS
def test_launch_template_uses_the_amis_root_device_40gb_encrypted_imdsv2(estate, aws_env, env):
    ami = estate["amis"][env]
    template, versions = launch_template(aws_env, env)
    assert len(versions) == 1, "re-runs must not add launch template versions"
    data = versions[0]["LaunchTemplateData"]
    assert data["ImageId"] == ami["ImageId"]
    assert data["InstanceType"] == "t3.medium"
    # The defect of the hand-built estate: 40 GB asked, 20 GB got, because the mapping
    # named another device than the AMI's root device.
    assert [m["DeviceName"] for m in data["BlockDeviceMappings"]] == [ami["RootDeviceName"]]
    ebs = data["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs["VolumeSize"], ebs["VolumeType"], ebs["Encrypted"], ebs["DeleteOnTermination"]) == (40, "gp3", True, True)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert data["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert data["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{PREFIX[env]}-EC2-Profile")
    assert data["SecurityGroupIds"] == [group(aws_env, f"{PREFIX[env]}-app")["GroupId"]]
    user_data = base64.b64decode(data["UserData"]).decode()
    assert user_data.startswith("#!/bin/bash\n#")
    assert f"CHATMRPT_ENVIRONMENT={env}\n" in user_data
    assert "systemctl enable --now chatmrpt.service" in user_data
    tags = client(aws_env, "ec2").describe_tags(
        Filters=[{"Name": "resource-id", "Values": [template["LaunchTemplateId"]]}])["Tags"]
    assert tags_of(tags) == {**expected_tags(env, "app"), "Name": f"{PREFIX[env]}-Template"}


def test_golden_ami_is_chosen_by_name_and_tags_base_ami_only_before_one_exists(estate):
    staging, production = estate["amis"]["staging"], estate["amis"]["production"]
    assert staging["Name"].startswith("al2023-ami-2023.") and staging["RootDeviceName"] == "/dev/xvda"
    assert production["Name"] == GOLDEN_NAME and production["RootDeviceName"] == "/dev/sda1"
    # Two different root devices: a mapping that ignored the AMI would fail one of them.
    assert "NO GOLDEN AMI 'chatmrpt-golden-*' YET" in estate["runs"]["staging", "apply"].output
    assert f"Golden AMI {production['ImageId']}" in estate["runs"]["production", "apply"].output


# --- hand-managed instances ---------------------------------------------------------------

@ENVS
def test_hand_managed_instance_matches_the_template(estate, aws_env, env):
    ec2 = client(aws_env, "ec2")
    instances = live_instances(aws_env, env)
    assert [tags_of(i["Tags"])["Name"] for i in instances] == [f"{PREFIX[env]}-App-1"]
    instance, ami = instances[0], estate["amis"][env]
    assert tags_of(i for i in instance["Tags"] if not i["Key"].startswith("aws:")) == {
        **expected_tags(env, "app"), "Name": f"{PREFIX[env]}-App-1"}
    assert instance["InstanceType"] == "t3.medium"
    assert instance["ImageId"] == ami["ImageId"]
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"].endswith(f"/{PREFIX[env]}-EC2-Profile")
    assert [g["GroupName"] for g in instance["SecurityGroups"]] == [f"{PREFIX[env]}-app"]
    assert instance["VpcId"] == group(aws_env, f"{PREFIX[env]}-app")["VpcId"]
    assert instance["RootDeviceName"] == ami["RootDeviceName"]
    assert [b["DeviceName"] for b in instance["BlockDeviceMappings"]] == [ami["RootDeviceName"]]
    volume = ec2.describe_volumes(VolumeIds=[instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]])["Volumes"][0]
    assert (volume["Size"], volume["VolumeType"], volume["Encrypted"]) == (40, "gp3", True)


def test_dynamic_inventory_finds_the_instance_in_role_and_env_groups(estate, aws_env):
    proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", "inventories/staging", "--list"],
                          cwd=ROOT, env=aws_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    inventory = json.loads(proc.stdout)
    instance_id = live_instances(aws_env, "staging")[0]["InstanceId"]
    assert instance_id in inventory["role_app"]["hosts"]
    assert instance_id in inventory["env_staging"]["hosts"]
    # Only staging's instances: production's lives in the same account.
    production_id = live_instances(aws_env, "production")[0]["InstanceId"]
    assert production_id not in json.dumps(inventory)


# --- target group and load balancer ---------------------------------------------------------

@ENVS
def test_target_group_port_health_check_stickiness(estate, aws_env, env):
    tg, attributes = target_group(aws_env, env)
    assert (tg["Protocol"], tg["Port"], tg["TargetType"]) == ("HTTP", 8000, "instance")
    assert tg["VpcId"] == group(aws_env, f"{PREFIX[env]}-app")["VpcId"]
    assert (tg["HealthCheckPath"], tg["HealthCheckProtocol"], tg["HealthCheckPort"]) == ("/health", "HTTP", "traffic-port")
    assert (tg["HealthCheckIntervalSeconds"], tg["HealthCheckTimeoutSeconds"]) == (30, 10)
    assert (tg["HealthyThresholdCount"], tg["UnhealthyThresholdCount"]) == (2, 3)
    assert tg["Matcher"]["HttpCode"] == "200"
    assert attributes["stickiness.enabled"] == "true"
    assert attributes["stickiness.type"] == "lb_cookie"
    assert attributes["deregistration_delay.timeout_seconds"] == "60"
    # moto never reports the cookie duration (see the docstring and the test below).
    assert "stickiness.lb_cookie.duration_seconds" not in attributes
    tags = client(aws_env, "elbv2").describe_tags(ResourceArns=[tg["TargetGroupArn"]])["TagDescriptions"][0]["Tags"]
    assert tags_of(tags) == {**expected_tags(env, "loadbalancer"), "Name": f"{PREFIX[env]}-TG"}


@ENVS
def test_hand_managed_instance_is_registered_on_the_app_port(estate, aws_env, env):
    tg, _ = target_group(aws_env, env)
    targets = client(aws_env, "elbv2").describe_target_health(TargetGroupArn=tg["TargetGroupArn"])
    registered = {(t["Target"]["Id"], t["Target"]["Port"]) for t in targets["TargetHealthDescriptions"]}
    assert registered == {(i["InstanceId"], 8000) for i in live_instances(aws_env, env)}


@ENVS
def test_load_balancer_is_internet_facing_in_two_zones_with_its_listeners(estate, aws_env, env):
    elb = client(aws_env, "elbv2")
    lb = elb.describe_load_balancers(Names=[f"{PREFIX[env]}-ALB"])["LoadBalancers"][0]
    assert (lb["Scheme"], lb["Type"]) == ("internet-facing", "application")
    assert len({z["ZoneName"] for z in lb["AvailabilityZones"]}) >= 2
    assert lb["SecurityGroups"] == [group(aws_env, f"{PREFIX[env]}-alb")["GroupId"]]
    assert lb["VpcId"] == group(aws_env, f"{PREFIX[env]}-alb")["VpcId"]
    tg, _ = target_group(aws_env, env)
    listeners = {l["Port"]: l for l in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]}
    if env == "staging":  # no certificate: HTTP forwards to the app
        assert set(listeners) == {80}
        assert listeners[80]["Protocol"] == "HTTP"
        assert [(a["Type"], a["TargetGroupArn"]) for a in listeners[80]["DefaultActions"]] == [("forward", tg["TargetGroupArn"])]
    else:  # certificate: HTTP redirects, HTTPS forwards
        assert set(listeners) == {80, 443}
        redirect = listeners[80]["DefaultActions"][0]
        assert redirect["Type"] == "redirect"
        assert (redirect["RedirectConfig"]["Protocol"], redirect["RedirectConfig"]["Port"],
                redirect["RedirectConfig"]["StatusCode"]) == ("HTTPS", "443", "HTTP_301")
        https = listeners[443]
        assert https["Protocol"] == "HTTPS"
        assert https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
        assert [c["CertificateArn"] for c in https["Certificates"]] == [estate["cert_arn"]]
        assert [(a["Type"], a["TargetGroupArn"]) for a in https["DefaultActions"]] == [("forward", tg["TargetGroupArn"])]
    tags = elb.describe_tags(ResourceArns=[lb["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]
    assert tags_of(tags) == {**expected_tags(env, "loadbalancer"), "Name": f"{PREFIX[env]}-ALB"}


# --- Auto Scaling group -------------------------------------------------------------------

@ENVS
def test_asg_bounds_health_check_target_group_policy_and_propagated_tags(estate, aws_env, env):
    autoscaling = client(aws_env, "autoscaling")
    asg = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[f"{PREFIX[env]}-ASG"])["AutoScalingGroups"][0]
    assert (asg["MinSize"], asg["DesiredCapacity"], asg["MaxSize"]) == (0, 0, ASG_MAX[env])
    assert (asg["HealthCheckType"], asg["HealthCheckGracePeriod"], asg["DefaultCooldown"]) == ("ELB", 300, 300)
    tg, _ = target_group(aws_env, env)
    assert asg["TargetGroupARNs"] == [tg["TargetGroupArn"]]
    assert asg["LaunchTemplate"]["LaunchTemplateName"] == f"{PREFIX[env]}-Template"
    assert asg["LaunchTemplate"]["Version"] == "$Latest"
    app_vpc = group(aws_env, f"{PREFIX[env]}-app")["VpcId"]
    subnets = client(aws_env, "ec2").describe_subnets(SubnetIds=asg["VPCZoneIdentifier"].split(","))["Subnets"]
    assert {s["VpcId"] for s in subnets} == {app_vpc} and len(subnets) >= 2
    assert {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in asg["Tags"]} == {
        k: (v, True) for k, v in {**expected_tags(env, "app"), "Name": f"{PREFIX[env]}-ASG-App"}.items()}
    policies = autoscaling.describe_policies(AutoScalingGroupName=f"{PREFIX[env]}-ASG")["ScalingPolicies"]
    assert len(policies) == 1
    policy = policies[0]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    config = policy["TargetTrackingConfiguration"]
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ASGAverageCPUUtilization"
    assert config["TargetValue"] == 70.0


# --- CloudFront ---------------------------------------------------------------------------

def distributions(aws_env):
    cloudfront = client(aws_env, "cloudfront")
    items = cloudfront.list_distributions()["DistributionList"].get("Items", [])
    return {d["Comment"]: d for d in items}


def test_cdn_in_front_of_the_alb_in_production_only(estate, aws_env):
    found = distributions(aws_env)
    assert "ChatMRPT-Staging-CDN" not in found  # aws_cdn_enabled: false for staging
    dist = found["ChatMRPT-Production-CDN"]
    config = client(aws_env, "cloudfront").get_distribution_config(Id=dist["Id"])["DistributionConfig"]
    alb = client(aws_env, "elbv2").describe_load_balancers(Names=["ChatMRPT-Production-ALB"])["LoadBalancers"][0]
    assert config["Enabled"] is True and config["CallerReference"] == "ChatMRPT-Production-CDN"
    origins = config["Origins"]["Items"]
    assert [o["DomainName"] for o in origins] == [alb["DNSName"]]
    assert origins[0]["CustomOriginConfig"]["OriginProtocolPolicy"] == "http-only"
    default = config["DefaultCacheBehavior"]
    assert default["ViewerProtocolPolicy"] == "redirect-to-https"
    assert default["CachePolicyId"] == CACHING_DISABLED  # the app is never cached
    assert default["OriginRequestPolicyId"] == ALL_VIEWER  # cookies (sessions, stickiness), headers, query strings
    assert set(default["AllowedMethods"]["Items"]) == {"GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"}
    behaviors = config["CacheBehaviors"]["Items"]
    assert [(b["PathPattern"], b["CachePolicyId"], b["ViewerProtocolPolicy"]) for b in behaviors] == [
        ("/static/*", CACHING_OPTIMIZED, "redirect-to-https")]
    tags = client(aws_env, "cloudfront").list_tags_for_resource(Resource=dist["ARN"])["Tags"]["Items"]
    assert tags_of(tags) == {**expected_tags("production", "cdn"), "Name": "ChatMRPT-Production-CDN"}


# --- drift the role corrects ----------------------------------------------------------------

def test_cookie_duration_is_enforced_where_reported(estate, aws_env):
    """Where the group reports a cookie duration (AWS always does), a drifted value is
    reported by --check and set back by the next run."""
    elb = client(aws_env, "elbv2")
    tg, _ = target_group(aws_env, "staging")
    elb.modify_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"], Attributes=[
        {"Key": "stickiness.lb_cookie.duration_seconds", "Value": "3600"}])
    check = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "loadbalancer", "--check", env=aws_env))
    assert check.changed_tasks() == ["aws_loadbalancer : Report target group settings that differ (check mode)"]
    assert "stickiness_lb_cookie_duration_seconds: 3600 -> 86400" in " ".join(check.output.split())
    fixed = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "loadbalancer", env=aws_env))
    assert fixed.changed_tasks() == ["aws_loadbalancer : Manage the target group of the app instances"]
    _, attributes = target_group(aws_env, "staging")
    assert attributes["stickiness.lb_cookie.duration_seconds"] == "86400"


def test_instance_on_a_wrong_port_is_moved_to_the_app_port(estate, aws_env):
    """The hand-built estate's defect: instances registered on port 80."""
    elb = client(aws_env, "elbv2")
    tg, _ = target_group(aws_env, "staging")
    instance_id = live_instances(aws_env, "staging")[0]["InstanceId"]
    elb.deregister_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": instance_id, "Port": 8000}])
    elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": instance_id, "Port": 80}])
    run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "loadbalancer", env=aws_env))
    targets = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
    live = {(t["Target"]["Id"], t["Target"]["Port"]) for t in targets
            if t["TargetHealth"]["State"] not in ("draining", "unused")}
    assert live == {(instance_id, 8000)}


def test_asg_drift_is_reported_by_check_and_corrected(estate, aws_env):
    # Production: staging would also report its template (the golden AMI registered for
    # production is newer than staging's base AMI).
    autoscaling = client(aws_env, "autoscaling")
    autoscaling.update_auto_scaling_group(AutoScalingGroupName="ChatMRPT-Production-ASG", MaxSize=5,
                                          HealthCheckType="EC2")
    check = run_ok(run_playbook("infrastructure.yml", "production", "--tags", "compute", "--check", env=aws_env))
    assert check.changed_tasks() == ["aws_compute : Manage the Auto Scaling group"]
    said = " ".join(check.output.split())  # the YAML callback wraps long messages
    assert "max_size: 5 -> 3" in said and 'health_check_type: EC2 -> ELB' in said, check.output[-3000:]
    run_ok(run_playbook("infrastructure.yml", "production", "--tags", "compute", env=aws_env))
    asg = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["ChatMRPT-Production-ASG"])["AutoScalingGroups"][0]
    assert (asg["MaxSize"], asg["HealthCheckType"]) == (3, "ELB")


def test_new_golden_ami_makes_one_new_template_version(estate, aws_env):
    """Content changes (a newer golden AMI) make exactly one new version; the next run none."""
    ec2 = client(aws_env, "ec2")
    newer = ec2.register_image(Name="chatmrpt-golden-20260201-0000", Architecture="x86_64",
                               RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                               BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 20}}])["ImageId"]
    ec2.create_tags(Resources=[newer], Tags=[{"Key": "Project", "Value": "chatmrpt"}])
    first = run_ok(run_playbook("infrastructure.yml", "production", "--tags", "compute", env=aws_env))
    assert "aws_compute : Manage the launch template" in first.changed_tasks()
    again = run_ok(run_playbook("infrastructure.yml", "production", "--tags", "compute", env=aws_env))
    assert again.changed == 0, again.changed_tasks()
    template, versions = launch_template(aws_env, "production")
    assert len(versions) == 2 and template["DefaultVersionNumber"] == 2
    latest = max(versions, key=lambda v: v["VersionNumber"])["LaunchTemplateData"]
    assert latest["ImageId"] == newer
    root = ec2.describe_images(ImageIds=[newer])["Images"][0]["RootDeviceName"]
    assert [m["DeviceName"] for m in latest["BlockDeviceMappings"]] == [root]
    assert latest["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 40


def test_instance_count_scales_by_name(estate, aws_env):
    two = run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "compute",
                              "-e", "aws_compute_instance_count=2", env=aws_env))
    names = sorted(tags_of(i["Tags"])["Name"] for i in live_instances(aws_env, "staging"))
    assert names == ["ChatMRPT-Staging-App-1", "ChatMRPT-Staging-App-2"], two.output[-3000:]
    subnets = {i["SubnetId"] for i in live_instances(aws_env, "staging")}
    assert len(subnets) == 2, "the instances are spread over the subnets"
    run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "compute", env=aws_env))
    names = sorted(tags_of(i["Tags"])["Name"] for i in live_instances(aws_env, "staging"))
    assert names == ["ChatMRPT-Staging-App-1"]


# --- input validation: refused before any AWS call --------------------------------------------

def snapshot(aws_env):
    """What a wrongly accepted input could change: template versions, ASG, target group, instances."""
    elb, autoscaling = client(aws_env, "elbv2"), client(aws_env, "autoscaling")
    _, versions = launch_template(aws_env, "staging")
    asg = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["ChatMRPT-Staging-ASG"])["AutoScalingGroups"][0]
    tg, attributes = target_group(aws_env, "staging")
    lb = elb.describe_load_balancers(Names=["ChatMRPT-Staging-ALB"])["LoadBalancers"][0]
    listeners = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    instances = sorted(i["InstanceId"] for i in live_instances(aws_env, "staging"))
    return json.dumps([len(versions), {k: asg[k] for k in ("MinSize", "MaxSize", "DesiredCapacity", "HealthCheckType")},
                       tg["HealthCheckTimeoutSeconds"], tg["Port"], attributes, listeners, instances,
                       sorted(distributions(aws_env))], default=str, sort_keys=True)


BAD_INPUTS = [
    (["-e", "aws_compute_instance_type=m5.24xlarge"], "aws_compute_instance_type 'm5.24xlarge' is not in aws_compute_allowed_instance_types"),
    (["-e", "aws_compute_asg_min_size=2", "-e", "aws_compute_asg_max_size=1"], "aws_compute_asg_min_size"),
    (["-e", "aws_compute_asg_desired_capacity=3"], "aws_compute_asg_desired_capacity"),
    (["-e", "aws_compute_asg_max_size=40"], "aws_compute_asg_max_size_cap"),
    (["-e", "aws_compute_root_volume_size=4"], "aws_compute_root_volume_size 8-1024 GiB (got 4)"),
    (["-e", "aws_compute_ami_name=ami-0123456789abcdef0"], "never an AMI id"),  # pragma: allowlist secret
    (["-e", "aws_loadbalancer_health_check_timeout=40"], "aws_loadbalancer_health_check_timeout 2-120 s and below the interval"),
    (["-e", "aws_loadbalancer_certificate_arn=not-an-arn"], "aws_loadbalancer_certificate_arn must be empty"),
    (["-e", "aws_loadbalancer_name=ChatMRPT-Staging-Load-Balancer-Too-Long"], "aws_loadbalancer_name"),
    (["-e", "aws_cdn_enabled=true", "-e", "aws_loadbalancer_enabled=false"], "aws_cdn_origin_load_balancer_enabled"),
    (["-e", "aws_cdn_price_class=PriceClass_1"], "aws_cdn_price_class"),
]


@pytest.fixture(scope="module")
def bad_input_runs(estate, aws_env):
    """Every case's run, four at a time (independent runs; each case is its own test below),
    with what a wrongly accepted input could change recorded before and after them all."""
    before = snapshot(aws_env)
    runs = run_playbooks([("infrastructure.yml", "staging", "--tags", TAGS, *extra) for extra, _ in BAD_INPUTS],
                         env=aws_env)
    return {"runs": runs, "before": before, "after": snapshot(aws_env)}


@pytest.mark.parametrize(("index", "message"), [(i, m) for i, (_, m) in enumerate(BAD_INPUTS)],
                         ids=[" ".join(extra) for extra, _ in BAD_INPUTS])
def test_bad_input_is_refused_before_any_aws_call(bad_input_runs, index, message):
    run = bad_input_runs["runs"][index]
    assert run.returncode != 0
    assert message in run.output, run.output[-4000:]
    # The validation play failed: the estate's play never started, nothing changed.
    assert "PLAY [Build the AWS estate]" not in run.output
    assert bad_input_runs["after"] == bad_input_runs["before"]


def test_no_golden_ami_and_no_fallback_is_a_clear_error(estate, aws_env):
    before = snapshot(aws_env)
    run = run_playbook("infrastructure.yml", "staging", "--tags", "compute", "-e", "aws_compute_ami_name=chatmrpt-none-*",
                       "-e", "aws_compute_ami_fallback_enabled=false", env=aws_env)
    assert run.returncode != 0
    assert "No golden AMI named 'chatmrpt-none-*' (aws_compute_ami_name)" in run.output
    assert "aws_compute_ami_fallback_enabled: false" in run.output
    assert snapshot(aws_env) == before
