"""lab/emulator_server.py mends two moto defects that AWS does not have:
- the UserData of a launch template version made by CreateLaunchTemplateVersion (the golden
  image's, through aws_compute's entry point `template`) reaches the Auto Scaling group's
  instances;
- an instance that leaves the group (scale-in) is deregistered from the group's target
  group, and a hand-managed instance registered in the same group is left alone.
Each case runs in a fresh interpreter: a mend patches moto's classes for the process. Each
mend has a case that fails once moto no longer needs it."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

# Each case's script starts so: argv[2] names the mend to apply, or "plain" for none.
PREAMBLE = """
import base64, sys
sys.path.insert(0, sys.argv[1])
if sys.argv[2] != "plain":
    import emulator_server
    getattr(emulator_server, sys.argv[2])()
import boto3
from moto import mock_aws
"""


def run_case(script: str, mend: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PREAMBLE + script, str(ROOT / "lab"), mend],
                          capture_output=True, text=True, timeout=120)


SCALE_OUT = """
with mock_aws():
    ec2 = boto3.client("ec2", region_name="us-east-2")
    autoscaling = boto3.client("autoscaling", region_name="us-east-2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    script = lambda n: base64.b64encode(f"#!/bin/sh\\necho {n}\\n".encode()).decode()
    ec2.create_launch_template(LaunchTemplateName="tpl", LaunchTemplateData={"ImageId": image, "UserData": script(1)})
    ec2.create_launch_template_version(LaunchTemplateName="tpl", LaunchTemplateData={"ImageId": image, "UserData": script(2)})
    ec2.modify_launch_template(LaunchTemplateName="tpl", DefaultVersion="2")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="grp", LaunchTemplate={"LaunchTemplateName": "tpl", "Version": "$Default"},
        MinSize=0, MaxSize=1, DesiredCapacity=0, AvailabilityZones=["us-east-2a"])
    autoscaling.set_desired_capacity(AutoScalingGroupName="grp", DesiredCapacity=1)
    (instance,) = autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]
    data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    print(base64.b64decode(data["UserData"]["Value"]).decode().split()[-1])
"""


def scale_out(mode: str) -> subprocess.CompletedProcess:
    return run_case(SCALE_OUT, "mend_launch_template_versions" if mode == "mended" else "plain")


def test_the_groups_instance_gets_the_user_data_of_the_default_version():
    proc = scale_out("mended")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "2"


def test_moto_still_needs_the_mend():
    """When moto fixes it, this fails: remove mend_launch_template_versions then."""
    proc = scale_out("plain")
    assert proc.returncode != 0 and "AssertionError" in proc.stderr, proc.stdout + proc.stderr[-2000:]


SCALE_IN = """
with mock_aws():
    ec2 = boto3.client("ec2", region_name="us-east-2")
    elbv2 = boto3.client("elbv2", region_name="us-east-2")
    autoscaling = boto3.client("autoscaling", region_name="us-east-2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group_arn = elbv2.create_target_group(Name="tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                          TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    hand = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    elbv2.register_targets(TargetGroupArn=group_arn, Targets=[{"Id": hand, "Port": 80}])
    ec2.create_launch_template(LaunchTemplateName="tpl", LaunchTemplateData={"ImageId": image})
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="grp", LaunchTemplate={"LaunchTemplateName": "tpl", "Version": "$Default"},
        MinSize=0, MaxSize=3, DesiredCapacity=2, AvailabilityZones=["us-east-2a"], TargetGroupARNs=[group_arn])
    autoscaling.set_desired_capacity(AutoScalingGroupName="grp", DesiredCapacity=1)
    members = {i["InstanceId"] for i in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]}
    registered = {t["Target"]["Id"] for t in elbv2.describe_target_health(TargetGroupArn=group_arn)["TargetHealthDescriptions"]}
    print("members", len(members), "registered", sorted(registered) == sorted(members | {hand}))
"""


def scale_in(mode: str) -> subprocess.CompletedProcess:
    return run_case(SCALE_IN, "mend_target_group_deregistration" if mode == "mended" else "plain")


def test_an_instance_that_left_the_group_leaves_its_target_group_and_a_hand_managed_one_stays():
    proc = scale_in("mended")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["members", "1", "registered", "True"]


def test_moto_still_needs_the_deregistration_mend():
    """When moto deregisters scaled-in instances itself, this fails: remove
    mend_target_group_deregistration then."""
    proc = scale_in("plain")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["members", "1", "registered", "False"]
