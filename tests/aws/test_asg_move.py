"""playbooks/asg_move.yml on production in the emulated accounts (fixture `accounts`,
tests/aws_accounts.py: one hand-managed instance registered in the target group, the ASG at
0), the move run as an operator would run it, again and again:

  a group that may hold more      refused (aws_compute's data guard: SQLite data would be split)
  than one instance                before any change
  --check on the start state       lists all seven steps, changes nothing in AWS
  run without the confirmation     steps 1-4 done (ASG instance healthy and alone in the target
                                   group, the hand-managed instance deregistered but RUNNING),
                                   stops with a message naming asg_move_confirm_terminate
  --check at that state            lists 5-7 as remaining, 1-4 as done, changes nothing
  run with the confirmation        terminates, raises the minimum, then refuses to call the
                                   move finished while the inventory still says count 1 / min 0
  run with the inventory's new     passes, changes nothing; a further run changes nothing;
  lines (-e, as if edited)         infrastructure.yml with those lines keeps the moved estate
  a bad input                      refused (the role's rules, its argument specs) before any change

The emulator has no instance to configure (asg_move_configure_hosts=false): its target group
reports registered instances healthy at once. Runs after the modules that read production
as the code makes it (tests/conftest.py orders tests/aws); production stays moved for the
teardown after it.
"""

from __future__ import annotations

import pytest

from emulator import client, run_ok
from helpers import run_playbook

pytestmark = pytest.mark.slow

ENV = "production"
PREFIX = "ChatMRPT-Production"
TAGS = "network,iam,loadbalancer,compute"
NO_HOSTS = ("-e", "asg_move_configure_hosts=false")
MOVED_INVENTORY = ("-e", "aws_compute_instance_count=0", "-e", "aws_compute_asg_min_size=1",
                   "-e", "aws_compute_asg_desired_capacity=1")


def asg(aws_env):
    return client(aws_env, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[f"{PREFIX}-ASG"])["AutoScalingGroups"][0]


def hand_managed(aws_env, states=("pending", "running", "stopping", "stopped")):
    pages = client(aws_env, "ec2").get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:Name", "Values": [f"{PREFIX}-App-*"]},
        {"Name": "instance-state-name", "Values": list(states)}])
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def targets(aws_env):
    elb = client(aws_env, "elbv2")
    arn = elb.describe_target_groups(Names=[f"{PREFIX}-TG"])["TargetGroups"][0]["TargetGroupArn"]
    return {t["Target"]["Id"]: t["TargetHealth"]["State"]
            for t in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}


def snapshot(aws_env):
    group = asg(aws_env)
    return {"min": group["MinSize"], "desired": group["DesiredCapacity"],
            "asg_instances": sorted(i["InstanceId"] for i in group["Instances"]),
            "hand": sorted(hand_managed(aws_env)),
            "hand_running": sorted(hand_managed(aws_env, ("running",))), "targets": targets(aws_env)}


def move(aws_env, *args):
    return run_playbook("asg_move.yml", ENV, *NO_HOSTS, *args, env=aws_env)


@pytest.fixture(scope="module")
def moved(accounts, aws_env):
    """Every run of the move, and the AWS state after each, in order."""
    runs, states = {}, {}
    states["start"] = snapshot(aws_env)
    runs["sqlite-split"] = move(aws_env, "-e", "aws_compute_asg_max_size=3")
    states["after-sqlite-split"] = snapshot(aws_env)
    runs["check-start"] = move(aws_env, "--check")
    states["after-check-start"] = snapshot(aws_env)
    runs["unconfirmed"] = move(aws_env)
    states["unconfirmed"] = snapshot(aws_env)
    runs["check-middle"] = move(aws_env, "--check")
    states["after-check-middle"] = snapshot(aws_env)
    runs["confirmed"] = move(aws_env, "-e", "asg_move_confirm_terminate=true")
    states["confirmed"] = snapshot(aws_env)
    runs["inventory-moved"] = move(aws_env, *MOVED_INVENTORY)
    runs["again"] = move(aws_env, "-e", "asg_move_confirm_terminate=true", *MOVED_INVENTORY)
    runs["check-end"] = move(aws_env, "--check", *MOVED_INVENTORY)
    states["end"] = snapshot(aws_env)
    runs["infrastructure"] = accounts.playbook(ENV, "--tags", TAGS, *MOVED_INVENTORY)
    states["after-infrastructure"] = snapshot(aws_env)
    return {"runs": runs, "states": states}


def test_start_state_is_the_hand_built_estate(moved):
    start = moved["states"]["start"]
    assert len(start["hand"]) == 1 and start["asg_instances"] == []
    assert (start["min"], start["desired"]) == (0, 0)
    assert start["targets"] == {start["hand"][0]: "healthy"}


def test_a_move_that_would_split_sqlite_data_is_refused_before_any_change(moved):
    run = moved["runs"]["sqlite-split"]
    assert run.returncode != 0
    said = " ".join(run.output.split())
    assert "[aws_compute: the group keeps the data] aws_compute_asg_max_size is 3" in said, run.output[-3000:]
    assert moved["states"]["after-sqlite-split"] == moved["states"]["start"]


def test_check_lists_all_steps_and_changes_nothing(moved):
    run = run_ok(moved["runs"]["check-start"])
    assert run.changed > 0, "--check with steps remaining must report them as changes"
    plan = run.output[run.output.index("Would run"):]
    for step in ("1 ASG desired capacity 1", "2 ASG instance healthy", "3 hand-managed instance", "4 ASG instance(s) serving alone",
                 "5 hand-managed instance", "6 ASG minimum 1", "7 inventory"):
        assert step in plan, f"{step!r} missing from the plan:\n{plan[:3000]}"
    assert moved["states"]["after-check-start"] == moved["states"]["start"]


def test_without_confirmation_stops_before_termination(moved):
    run, state, start = moved["runs"]["unconfirmed"], moved["states"]["unconfirmed"], moved["states"]["start"]
    assert run.returncode != 0, run.output[-4000:]
    assert "asg_move_confirm_terminate=true" in run.output and "Steps 1-4 are done" in run.output
    assert state["desired"] == 1 and state["min"] == 0
    assert len(state["asg_instances"]) == 1
    # The hand-managed instance is out of the target group but still running; the ASG's serves.
    assert state["hand"] == start["hand"]
    assert state["hand_running"] == start["hand"]
    assert state["targets"] == {state["asg_instances"][0]: "healthy"}



def test_check_in_the_middle_lists_the_remaining_steps(moved):
    run = run_ok(moved["runs"]["check-middle"])
    assert run.changed > 0
    done = run.output[run.output.index("Done:"):run.output.index("Would run")]
    remaining = run.output[run.output.index("Would run"):].split("\n", 1)[0]
    for step in ("1 ASG desired", "2 ASG instance healthy", "3 hand-managed", "4 ASG instance(s) serving alone"):
        assert step in done, done
    for step in ("5 hand-managed", "6 ASG minimum", "7 inventory"):
        assert step in remaining, remaining
    assert "1 ASG desired" not in remaining
    assert moved["states"]["after-check-middle"] == moved["states"]["unconfirmed"]


def test_confirmed_run_terminates_raises_the_minimum_and_names_the_inventory_lines(moved):
    run, state = moved["runs"]["confirmed"], moved["states"]["confirmed"]
    assert state["hand"] == [], "the hand-managed instance must be terminated"
    assert (state["min"], state["desired"]) == (1, 1)
    assert state["asg_instances"] == moved["states"]["unconfirmed"]["asg_instances"], "the serving ASG instance was replaced"
    assert state["targets"] == {state["asg_instances"][0]: "healthy"}
    # The move is done in AWS, but the inventory would undo it: the run refuses to pass.
    assert run.returncode != 0
    assert "inventories/production/group_vars/all/aws_compute.yml" in run.output
    assert "aws_compute_instance_count: 0, aws_compute_asg_min_size: 1" in run.output


def test_with_the_new_inventory_it_passes_and_further_runs_change_nothing(moved):
    for name in ("inventory-moved", "again"):
        run = run_ok(moved["runs"][name])
        assert run.changed == 0, f"{name}: {run.changed_tasks()}"
        assert "The move to the Auto Scaling group is complete" in run.output
    check = run_ok(moved["runs"]["check-end"])
    assert check.changed == 0, check.changed_tasks()
    assert moved["states"]["end"] == moved["states"]["confirmed"]


def test_infrastructure_with_the_new_inventory_keeps_the_moved_estate(moved):
    run_ok(moved["runs"]["infrastructure"])
    after, end = moved["states"]["after-infrastructure"], moved["states"]["end"]
    assert after["hand"] == [], "infrastructure.yml launched a hand-managed instance again"
    assert (after["min"], after["desired"], after["asg_instances"]) == (end["min"], end["desired"], end["asg_instances"])


@pytest.mark.parametrize(("extra", "message"), [
    ("asg_move_capacity=9", "asg_move_capacity 1-6"),                       # the role's validate rules
    ("asg_move_poll_interval=often", "argument 'asg_move_poll_interval'"),  # its argument specs
], ids=["capacity", "poll-interval-type"])
def test_a_bad_input_is_refused_before_any_change(aws_env, moved, extra, message):
    before = snapshot(aws_env)
    run = move(aws_env, "-e", extra)
    assert run.returncode != 0
    assert message in run.output
    assert "Read the Auto Scaling group" not in run.output, "the move read AWS before refusing"
    assert snapshot(aws_env) == before
