"""playbooks/asg_move.yml on the local estate, end to end, with host configuration on (issue
#16), as an operator runs it:

  refused     with the data in SQLite and the group's maximum 3, the move is refused before
              any change (aws_compute's data guard), as long as the lab's override is off
  the move    confirmed, with the inventory's moved lines: the group's instance gets the
              host roles and the first hand-managed instance's data (a fresh backup,
              restored and proven), serves alone, the hand-managed instances are gone
  again       a further run changes nothing

Before the move, a session is written through the load balancer to the hand-managed
instance whose data moves (pinned by the balancer's stickiness cookie); after it, the group's
instance serves that session. The move is for good: this module runs after every other test
of the shared local estate (marker `estate_moved`), before its teardown.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from emulator import client, run_ok

pytestmark = [pytest.mark.slow, pytest.mark.estate_moved]

ASG = "ChatMRPT-Local-ASG"
SOURCE = "ChatMRPT-Local-App-1"  # the hand-managed instance whose data moves: the first by name
MOVED_INVENTORY = ("-e", "aws_compute_instance_count=0", "-e", "aws_compute_asg_min_size=1",
                   "-e", "aws_compute_asg_desired_capacity=1")


def request(url, method="GET", data=None, cookie=None):
    headers = {"Cookie": f"AWSALB={cookie}"} if cookie else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                timeout=30) as response:
        return response.status, json.loads(response.read())


def instances(ec2, **filters):
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{key}" if key != "state" else "instance-state-name", "Values": [value]}
        for key, value in filters.items()])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


@pytest.fixture(scope="module")
def moved(local_estate):
    env, ec2 = local_estate.env, client(local_estate.env, "ec2")
    (source,) = [i["InstanceId"] for i in instances(ec2, Name=SOURCE, state="running")]
    written = request(f"{local_estate.lb_url}/api/sessions", "POST", b"carried across the move", cookie=source)
    refused = local_estate.playbook("playbooks/asg_move.yml", "-e", "aws_compute_asg_accept_sqlite_data_loss=false")
    refused_group = client(env, "autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    run = local_estate.playbook("playbooks/asg_move.yml", "-e", "asg_move_confirm_terminate=true", *MOVED_INVENTORY)
    again = local_estate.playbook("playbooks/asg_move.yml", "-e", "asg_move_confirm_terminate=true", *MOVED_INVENTORY)
    group = client(env, "autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    return {"source": source, "written": written, "refused": refused, "refused_group": refused_group, "run": run,
            "again": again, "group": group, "ec2": ec2, "estate": local_estate}


def test_a_move_that_would_split_sqlite_data_is_refused(moved):
    refused = moved["refused"]
    assert refused.returncode != 0
    said = " ".join(refused.output.split())
    assert "[aws_compute: the group keeps the data] aws_compute_asg_max_size is 3" in said, refused.output[-3000:]
    assert refused.changed_tasks() == []
    assert (moved["refused_group"]["DesiredCapacity"], moved["refused_group"]["Instances"]) == (0, [])


def test_the_move_runs_end_to_end_with_host_configuration(moved):
    run = run_ok(moved["run"])
    assert "The move to the Auto Scaling group is complete" in run.output
    assert "Apply the host roles" in run.output and "RESTORE OK" in run.output, run.output[-4000:]
    assert instances(moved["ec2"], Name="ChatMRPT-Local-App-*", state="running") == [], "a hand-managed instance runs"
    assert (moved["group"]["MinSize"], moved["group"]["DesiredCapacity"], len(moved["group"]["Instances"])) == (1, 1, 1)


def test_the_hand_managed_instances_data_is_on_the_groups_instance(moved):
    status, created = moved["written"]
    assert status == 201
    (instance,) = moved["group"]["Instances"]
    (described,) = moved["ec2"].describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["DataFrom"].split()[0] == moved["source"], tags
    # Only the group's instance serves now: the session written to the hand-managed one is there.
    status, found = request(f"{moved['estate'].lb_url}/api/sessions/{created['session_id']}")
    assert status == 200 and found["messages"] == [{"role": "user", "content": "carried across the move"}], found


def test_a_further_run_changes_nothing(moved):
    again = run_ok(moved["again"])
    assert again.changed == 0, again.changed_tasks()
