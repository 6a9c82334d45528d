"""playbooks/golden_ami.yml, twice over:

Emulator (private moto, fixture `aws_env`, staging inventory): the AWS path end to end with
the builder imaged as launched (golden_ami_configure_builder=false: SSM cannot reach an
emulator instance, so the host roles are applied in the local-estate test below). Older
golden AMIs (with snapshots) exist before; golden_ami_keep=2. Asserted: the dated name and
the tags; a new launch template version, the default, referencing the AMI; no builder
instance left in any state but terminated; the oldest golden AMIs deregistered AND their
snapshots deleted, the newest older one kept, another environment's image untouched; a
rerun with the same build id changes nothing; --check changes nothing; bad settings (a rule
of the role's `validate` entry point, a type its argument specs refuse) are refused before
anything is launched.

Local estate (shared fixture `local_estate`): a real build: the builder container gets the
host roles, is cleaned and, on CreateImage, committed by the lab controller to
localhost/chatmrpt-golden:<AMI id>, labelled with the lab; the image holds the app but no secrets, data, host keys, machine-id or logs; no
builder instance or container is left; the launch template's default version references
the new AMI; an older golden AMI of the lab is deregistered with its podman image; the
app instances keep serving through the load balancer.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request

import pytest

from emulator import client, reset_moto, run_ok
from helpers import run_playbook
from traffic import Traffic

pytestmark = pytest.mark.slow

NAME = re.compile(r"^chatmrpt-golden-(staging|local)-\d{8}T\d{6}Z$")
BUILDER_FILTER = [{"Name": "tag:Role", "Values": ["golden_builder"]}]


def ec2_of(env_or_estate):
    return client(env_or_estate, "ec2")


def builders(ec2, states=("pending", "running", "stopping", "stopped", "shutting-down")):
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=BUILDER_FILTER + [{"Name": "instance-state-name", "Values": list(states)}])
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def golden_images(ec2, env):
    return {i["Name"]: i for i in ec2.describe_images(Owners=["self"], Filters=[
        {"Name": "name", "Values": [f"chatmrpt-golden-{env}-*"]}])["Images"]}


def template(ec2, prefix):
    lt = ec2.describe_launch_templates(LaunchTemplateNames=[f"{prefix}-Template"])["LaunchTemplates"][0]
    default = ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"], Versions=["$Default"])
    return lt, default["LaunchTemplateVersions"][0]


def old_golden_ami(ec2, name, env, base_image):
    """An earlier golden AMI as the playbook makes it: from an instance, so it has a snapshot."""
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    instance = ec2.run_instances(ImageId=base_image, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name=name)["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance])
    ec2.create_tags(Resources=[image], Tags=[{"Key": "Project", "Value": "chatmrpt"}, {"Key": "Environment", "Value": env}])
    described = ec2.describe_images(ImageIds=[image])["Images"][0]
    return image, [m["Ebs"]["SnapshotId"] for m in described["BlockDeviceMappings"] if "Ebs" in m]


def snapshot_ids(ec2):
    return {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


# --------------------------------------------------------------------------------------
# Emulator
# --------------------------------------------------------------------------------------

EMULATOR_ARGS = ("-e", "golden_ami_configure_builder=false", "-e", "golden_ami_keep=2")


@pytest.fixture(scope="module")
def emulator_build(aws_env):
    reset_moto(aws_env)
    ec2 = ec2_of(aws_env)
    try:
        run_ok(run_playbook("infrastructure.yml", "staging", "--tags", "network,iam,loadbalancer,compute", env=aws_env))
        base = max(ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "name", "Values": ["al2023-ami-2023.*-kernel-6.1-x86_64"]}])["Images"], key=lambda i: i["CreationDate"])
        old = {name: old_golden_ami(ec2, name, env, base["ImageId"]) for name, env in [
            ("chatmrpt-golden-staging-20250101T000000Z", "staging"),
            ("chatmrpt-golden-staging-20250201T000000Z", "staging"),
            ("chatmrpt-golden-staging-20250301T000000Z", "staging"),
            ("chatmrpt-golden-production-20250101T000000Z", "production")]}
        lt_before, _ = template(ec2, "ChatMRPT-Staging")
        bad = run_playbook("golden_ami.yml", "staging", "-e", "golden_ami_keep=0", env=aws_env)
        # a value of the wrong type: the role's argument specs (entry point `validate`) refuse it
        bad_type = run_playbook("golden_ami.yml", "staging", "-e", "golden_ami_refresh_asg=maybe", env=aws_env)
        bad_builders = builders(ec2, ("pending", "running", "stopping", "stopped", "shutting-down", "terminated"))
        check = run_playbook("golden_ami.yml", "staging", "--check", *EMULATOR_ARGS, env=aws_env)
        after_check = (set(golden_images(ec2, "staging")), template(ec2, "ChatMRPT-Staging")[0]["LatestVersionNumber"],
                       builders(ec2, ("pending", "running", "terminated")))
        build = run_playbook("golden_ami.yml", "staging", *EMULATOR_ARGS, env=aws_env)
        new = [i for n, i in golden_images(ec2, "staging").items() if n not in old]
        rerun = None
        if len(new) == 1:
            build_id = new[0]["Name"].rsplit("-", 1)[1]
            rerun = run_playbook("golden_ami.yml", "staging", *EMULATOR_ARGS, "-e", f"golden_ami_build_id={build_id}", env=aws_env)
        yield {"ec2": ec2, "base": base, "old": old, "lt_before": lt_before, "bad": bad, "bad_type": bad_type,
               "bad_builders": bad_builders, "check": check, "after_check": after_check, "build": build, "new": new, "rerun": rerun}
    finally:
        reset_moto(aws_env)


def test_emulator_build_makes_one_dated_tagged_ami(emulator_build):
    run_ok(emulator_build["build"])
    assert len(emulator_build["new"]) == 1, [i["Name"] for i in emulator_build["new"]]
    image = emulator_build["new"][0]
    assert NAME.match(image["Name"]), image["Name"]
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    assert {k: tags.get(k) for k in ("Project", "Environment", "ManagedBy", "Role", "Name", "BaseAmi", "BuildId")} == {
        "Project": "chatmrpt", "Environment": "staging", "ManagedBy": "ansible", "Role": "golden-ami",
        "Name": image["Name"], "BaseAmi": emulator_build["base"]["ImageId"], "BuildId": image["Name"].rsplit("-", 1)[1]}
    assert image["State"] == "available"


def test_emulator_launch_template_default_version_references_the_new_ami(emulator_build):
    lt, default = template(emulator_build["ec2"], "ChatMRPT-Staging")
    assert lt["LatestVersionNumber"] == emulator_build["lt_before"]["LatestVersionNumber"] + 1
    assert default["VersionNumber"] == lt["LatestVersionNumber"]
    assert default["LaunchTemplateData"]["ImageId"] == emulator_build["new"][0]["ImageId"]


def test_emulator_no_builder_is_left(emulator_build):
    assert builders(emulator_build["ec2"]) == []
    assert len(builders(emulator_build["ec2"], ("terminated",))) == 1, "exactly one builder was launched (and terminated)"


def test_emulator_keeps_the_newest_and_deletes_older_amis_with_their_snapshots(emulator_build):
    ec2, old = emulator_build["ec2"], emulator_build["old"]
    staging = golden_images(ec2, "staging")
    assert set(staging) == {emulator_build["new"][0]["Name"], "chatmrpt-golden-staging-20250301T000000Z"}
    remaining = snapshot_ids(ec2)
    for name in ("chatmrpt-golden-staging-20250101T000000Z", "chatmrpt-golden-staging-20250201T000000Z"):
        assert not set(old[name][1]) & remaining, f"snapshots of {name} survived"
    for name in ("chatmrpt-golden-staging-20250301T000000Z", "chatmrpt-golden-production-20250101T000000Z"):
        assert set(old[name][1]) <= remaining, f"snapshots of {name} were deleted"
    assert "chatmrpt-golden-production-20250101T000000Z" in golden_images(ec2, "production")


def test_emulator_rerun_with_the_same_build_id_changes_nothing(emulator_build):
    run = run_ok(emulator_build["rerun"])
    assert run.changed == 0, run.changed_tasks()
    assert len(builders(emulator_build["ec2"], ("terminated",))) == 1, "the rerun launched a builder"


def test_emulator_check_changes_nothing_and_shows_the_plan(emulator_build):
    run = run_ok(emulator_build["check"])
    assert "Would launch a builder from" in run.output and "Would deregister 2 golden AMI(s)" in run.output, run.output[-4000:]
    names, version, launched = emulator_build["after_check"]
    assert names == set(n for n, (_, _) in emulator_build["old"].items() if "-staging-" in n)
    assert version == emulator_build["lt_before"]["LatestVersionNumber"]
    assert launched == []


def test_emulator_bad_setting_is_refused_before_anything_is_launched(emulator_build):
    run = emulator_build["bad"]
    assert run.returncode != 0
    assert "golden_ami_keep must be 1-20" in run.output
    assert emulator_build["bad_builders"] == []


def test_emulator_input_of_the_wrong_type_is_refused_by_the_argument_specs(emulator_build):
    run = emulator_build["bad_type"]
    assert run.returncode != 0
    failures = " ".join(run.failures())
    assert "argument 'golden_ami_refresh_asg' is of type str and we were unable to convert to bool" in failures, failures[-3000:]
    assert "Find the base AMI" not in run.output, "an AWS call ran before the refusal"
    assert emulator_build["bad_builders"] == []


# --------------------------------------------------------------------------------------
# Local estate
# --------------------------------------------------------------------------------------

def podman(*args, check=True, env=None):
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, env=env)


@pytest.fixture(scope="module")
def local_build(local_estate):
    env = local_estate.env
    ec2 = client(env, "ec2")
    lab = local_estate.lab
    # An older golden AMI of this lab, with a local image (a tag of the base image: cheap).
    old = ec2.register_image(Name="chatmrpt-golden-local-20200101T000000Z", Architecture="x86_64",
                             RootDeviceName="/dev/sda1", VirtualizationType="hvm")["ImageId"]
    ec2.create_tags(Resources=[old], Tags=[{"Key": "Project", "Value": "chatmrpt"}, {"Key": "Environment", "Value": "local"}])
    podman("tag", "localhost/chatmrpt-base:latest", f"localhost/chatmrpt-golden:{old}", env=env)
    before = set(golden_images(ec2, "local"))
    run = local_estate.playbook("playbooks/golden_ami.yml", "-e", "golden_ami_keep=1")
    after = golden_images(ec2, "local")
    new = [i for n, i in after.items() if n not in before]
    return {"run": run, "ec2": ec2, "lab": lab, "env": env, "new": new, "old": old, "after": after,
            "estate": local_estate}


def test_local_build_makes_an_image_of_the_new_ami(local_build):
    run_ok(local_build["run"])
    assert len(local_build["new"]) == 1
    ami = local_build["new"][0]
    assert NAME.match(ami["Name"])
    labels = json.loads(podman("image", "inspect", f"localhost/chatmrpt-golden:{ami['ImageId']}", "--format",
                               "{{json .Labels}}", env=local_build["env"]).stdout)
    assert labels["io.chatmrpt.lab"] == local_build["lab"]["name"]
    assert labels["io.chatmrpt.image-id"] == ami["ImageId"]


CHECKS = {
    "the app's release and virtualenv": "test -f /srv/chatmrpt/ChatMRPT/run.py && test -x /srv/chatmrpt/chatmrpt_env/bin/gunicorn",
    "the app's unit, enabled": "test -f /etc/systemd/system/chatmrpt.service && "
                               "test -e /etc/systemd/system/multi-user.target.wants/chatmrpt.service",
    "the backup scripts": "test -x /usr/local/sbin/chatmrpt-backup && test -x /usr/local/sbin/chatmrpt-restore",
    "no .env (secrets)": "test ! -e /srv/chatmrpt/chatmrpt_shared/.env",
    "no app data (instance/)": "test ! -e /srv/chatmrpt/chatmrpt_shared/instance",
    "no backup config or credentials": "test ! -e /etc/chatmrpt-backup.ini && test ! -e /etc/chatmrpt-backup.credentials",
    "no SSH host keys": "! ls /etc/ssh/ssh_host_* 2>/dev/null | grep -q .",
    "an empty machine-id": "test ! -s /etc/machine-id",
    "no log files": "test -z \"$(find /var/log -type f -size +0)\"",
}


@pytest.mark.parametrize("what", list(CHECKS))
def test_local_image_content(local_build, what):
    assert len(local_build["new"]) == 1, local_build["run"].output[-4000:]
    image = f"localhost/chatmrpt-golden:{local_build['new'][0]['ImageId']}"
    proc = podman("run", "--rm", "--network", "none", image, "/bin/sh", "-c", CHECKS[what], check=False, env=local_build["env"])
    assert proc.returncode == 0, f"{what}: {proc.stdout}{proc.stderr}"


def test_local_no_builder_instance_or_container_left(local_build):
    ec2 = local_build["ec2"]
    assert builders(ec2) == []
    gone = builders(ec2, ("terminated",))
    assert gone, "no builder was ever launched"
    # The lab controller removes a terminated instance's container within a second or two.
    deadline = time.monotonic() + 20
    while set(gone) & set(podman("ps", "-a", "--format", "{{.Names}}", env=local_build["env"]).stdout.split()):
        assert time.monotonic() < deadline, f"containers of terminated builders left: {gone}"
        time.sleep(1)


def test_local_launch_template_references_the_new_ami(local_build):
    _, default = template(local_build["ec2"], "ChatMRPT-Local")
    assert default["LaunchTemplateData"]["ImageId"] == local_build["new"][0]["ImageId"]


def test_local_older_ami_and_its_image_are_removed(local_build):
    assert "chatmrpt-golden-local-20200101T000000Z" not in local_build["after"]
    assert podman("image", "exists", f"localhost/chatmrpt-golden:{local_build['old']}", check=False,
                  env=local_build["env"]).returncode == 1
    assert podman("image", "exists", "localhost/chatmrpt-base:latest", env=local_build["env"]).returncode == 0


def test_local_estate_still_serves(local_build):
    with urllib.request.urlopen(local_build["estate"].lb_url + "/health", timeout=15) as response:
        assert response.status == 200
        assert json.loads(response.read())["overall"] == "healthy"
    ec2 = local_build["ec2"]
    running = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:Role", "Values": ["app"]},
                                                          {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
               for i in r["Instances"]]
    assert len(running) == 2



# --------------------------------------------------------------------------------------
# The Auto Scaling group's instances serve by themselves (issue #16), with no playbook run
# between the steps, each a change of the emulator alone, as an operator's console or a
# scaling policy makes it: the lab follows (the controller boots each instance from the
# golden image with the launch template's user data through cloud-init; HAProxy's own checks
# are the target group's health). One convergence, many assertions:
#   1. a deploy records the release the hosts run (the golden image was built from it);
#   2. desired 0 -> 2: both boot, render .env from SSM and turn healthy (the time is printed);
#   3. desired 2 -> 1 under steady traffic, with a long request on each group instance: the
#      one scaled in drains (it finishes its request) before its container goes;
#   4. one SSM parameter deleted, desired 1 -> 2: the new instance says which parameter, sets
#      its metric and never turns healthy; the parameter is put back;
#   5. desired 0: the estate is as before.
# --------------------------------------------------------------------------------------

ASG = "ChatMRPT-Local-ASG"
TARGET_GROUP = "ChatMRPT-Local-TG"
MISSING = "/chatmrpt/local/app/ADMIN_KEY"
LONG_REQUEST = 6  # seconds: far longer than a controller pass and HAProxy's check interval


def group_instances(autoscaling):
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"]
    return sorted(i["InstanceId"] for i in group["Instances"])


def target_health(elbv2):
    arn = elbv2.describe_target_groups(Names=[TARGET_GROUP])["TargetGroups"][0]["TargetGroupArn"]
    found = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in found}


def containers(env):
    return set(podman("ps", "--format", "{{.Names}}", env=env).stdout.split())


def long_request(lb_url, instance_id, results):
    """GET /api/wait pinned to one instance by the load balancer's stickiness cookie."""
    request = urllib.request.Request(f"{lb_url}/api/wait?seconds={LONG_REQUEST}",
                                     headers={"Cookie": f"AWSALB={instance_id}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            results[instance_id] = (response.status, json.loads(response.read())["host"], time.monotonic())
    except OSError as exc:
        results[instance_id] = (None, f"{type(exc).__name__}: {exc}", time.monotonic())


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(1)
    return found


@pytest.fixture(scope="module")
def scaling(local_build):
    run_ok(local_build["run"])
    estate = local_build["estate"]
    env = estate.env
    autoscaling, elbv2, ssm = client(env, "autoscaling"), client(env, "elbv2"), client(env, "ssm")
    seen = {"record": estate.playbook("playbooks/deploy.yml")}
    targets_before = set(target_health(elbv2))
    admin_key = ssm.get_parameter(Name=MISSING, WithDecryption=True)["Parameter"]
    (described,) = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [MISSING]}])["Parameters"]
    try:
        # 2. scale out
        start = time.monotonic()
        autoscaling.set_desired_capacity(AutoScalingGroupName=ASG, DesiredCapacity=2)
        seen["out"] = wait_for(lambda: (len(ids := group_instances(autoscaling)) == 2
                                        and all(target_health(elbv2).get(i) == "healthy" for i in ids) and ids),
                               600, "two healthy group instances")
        seen["out_seconds"] = time.monotonic() - start
        # 3. scale in, under traffic, with a long request on each group instance
        answers = {}
        requests = [threading.Thread(target=long_request, args=(estate.lb_url, i, answers)) for i in seen["out"]]
        with Traffic(estate.lb_url, path="/ping") as traffic:
            for thread in requests:
                thread.start()
            time.sleep(1)  # both long requests are in flight
            autoscaling.set_desired_capacity(AutoScalingGroupName=ASG, DesiredCapacity=1)
            (kept,) = group_instances(autoscaling)
            (gone,) = set(seen["out"]) - {kept}
            seen["in_health"] = target_health(elbv2)
            seen["in_container_while_draining"] = gone in containers(env)
            # When the target leaves the group's listing (its draining ended), polled.
            drained_at = None
            while drained_at is None and time.monotonic() < start + 900:
                if gone not in target_health(elbv2):
                    drained_at = time.monotonic()
                time.sleep(0.25)
            for thread in requests:
                thread.join(60)
            wait_for(lambda: gone not in containers(env), 60, "the scaled-in instance's container gone")
        seen.update(kept=kept, gone=gone, answers=answers, traffic=traffic.result, drained_at=drained_at)
        # 4. a missing parameter
        ssm.delete_parameter(Name=MISSING)
        autoscaling.set_desired_capacity(AutoScalingGroupName=ASG, DesiredCapacity=2)
        (broken,) = wait_for(lambda: set(group_instances(autoscaling)) - {kept}, 60, "a new group instance")
        states = []

        def boot_failed():
            states.append(target_health(elbv2).get(broken))
            return podman("exec", broken, "systemctl", "is-failed", "chatmrpt-boot", check=False, env=env).stdout.strip() == "failed"
        wait_for(boot_failed, 300, "the new instance's boot unit failed")
        wait_for(lambda: states.append(target_health(elbv2).get(broken)) or states[-1] == "unhealthy", 120,
                 "the new instance's target unhealthy")
        journal = podman("exec", broken, "journalctl", "-u", "chatmrpt-boot", "--no-pager", "-o", "cat",
                         check=False, env=env).stdout
        active = podman("exec", broken, "systemctl", "is-active", "chatmrpt", check=False, env=env).stdout.strip()
        metric = client(env, "cloudwatch").get_metric_statistics(
            Namespace="ChatMRPT/Local", MetricName="BootConfigurationFailed", Statistics=["Maximum"], Period=60,
            Dimensions=[{"Name": "Environment", "Value": "local"}, {"Name": "InstanceId", "Value": broken}],
            StartTime=time.time() - 3600, EndTime=time.time() + 60)["Datapoints"]
        seen.update(broken=broken, broken_states=states, journal=journal, broken_app=active, metric=metric)
    finally:
        ssm.put_parameter(Name=MISSING, Value=admin_key["Value"], Type="SecureString", Overwrite=True,
                          **({"KeyId": described["KeyId"]} if described.get("KeyId") else {}))
        autoscaling.set_desired_capacity(AutoScalingGroupName=ASG, DesiredCapacity=0)
        # (and their targets drained: the next test reads the target group)
        wait_for(lambda: not group_instances(autoscaling) and set(target_health(elbv2)) == targets_before, 120,
                 "the group's instances and their targets gone")
    return seen


def test_a_deploy_records_the_release_the_image_was_built_from(scaling, local_build):
    run_ok(scaling["record"])
    ssm = client(local_build["env"], "ssm")
    assert ssm.get_parameter(Name="/chatmrpt/local/release")["Parameter"]["Value"]


def test_the_groups_instances_boot_from_the_golden_image_and_serve_with_no_playbook(scaling, local_build, record_property):
    record_property("measured", f"ASG desired 0 -> 2 in the emulator: both instances healthy behind the load "
                                f"balancer after {scaling['out_seconds']:.0f} s (no playbook)")
    assert len(scaling["out"]) == 2
    image = f"localhost/chatmrpt-golden:{local_build['new'][0]['ImageId']}"
    assert scaling["kept"] in scaling["out"]
    used = podman("inspect", scaling["kept"], "--format", "{{.ImageName}}", env=local_build["env"]).stdout.strip()
    assert used == image
    booted = podman("exec", scaling["kept"], "sh", "-c",
                    "cloud-init status --long; systemctl is-active chatmrpt-boot chatmrpt; "
                    "stat -c '%a %U' /srv/chatmrpt/chatmrpt_shared/.env; "
                    "test -d /srv/chatmrpt/chatmrpt_shared/instance/logs && echo logs",
                    check=False, env=local_build["env"]).stdout
    assert "status: done" in booted and "active\nactive" in booted, booted
    assert "600 chatmrpt" in booted and "logs" in booted, booted


def test_scale_in_drains_the_instance_it_removes_and_no_request_fails(scaling):
    gone, kept = scaling["gone"], scaling["kept"]
    assert scaling["in_health"].get(gone) == "draining", scaling["in_health"]
    assert scaling["in_health"].get(kept) == "healthy", scaling["in_health"]
    assert scaling["in_container_while_draining"]
    # Each long request finished, on the instance it was pinned to: the draining one's too; and
    # the draining target stayed listed (draining) until its request had ended.
    answers = scaling["answers"]
    assert {i: answer[:2] for i, answer in answers.items()} == {gone: (200, gone), kept: (200, kept)}, answers
    assert scaling["drained_at"] is not None and scaling["drained_at"] >= answers[gone][2] - 0.1, \
        (scaling["drained_at"], answers[gone])
    assert scaling["traffic"].total > 50 and scaling["traffic"].failed == 0, scaling["traffic"].summary()


def test_an_instance_whose_parameter_is_missing_fails_visibly_and_never_serves(scaling):
    assert "healthy" not in scaling["broken_states"], scaling["broken_states"]
    assert scaling["broken_states"][-1] == "unhealthy"
    assert f"FAILED: SSM parameter {MISSING} is missing" in scaling["journal"], scaling["journal"]
    assert scaling["broken_app"] != "active"
    assert [point["Maximum"] for point in scaling["metric"]] == [1.0], scaling["metric"]
