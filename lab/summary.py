#!/usr/bin/env python3
"""What the local estate holds after `make demo`, where the app answers, how to remove it."""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import boto3

REGION = os.environ.get("AWS_REGION", "us-east-2")
ENVIRONMENT = "local"


def tagged(resource_type_filters: list[str]) -> list[str]:
    client = boto3.client("resourcegroupstaggingapi", region_name=REGION)
    arns = []
    for page in client.get_paginator("get_resources").paginate(
        TagFilters=[{"Key": "Project", "Values": ["chatmrpt"]}, {"Key": "Environment", "Values": [ENVIRONMENT]}],
        ResourceTypeFilters=resource_type_filters,
    ):
        arns += [r["ResourceARN"] for r in page["ResourceTagMappingList"]]
    return arns


def health(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read() or b"{}")
            return f"HTTP {response.status}, overall={body.get('overall', '?')}"
    except Exception as error:  # the summary reports, it does not fail
        return f"not answering ({error})"


def main() -> int:
    ec2 = boto3.client("ec2", region_name=REGION)
    reservations = ec2.describe_instances(Filters=[
        {"Name": "tag:Project", "Values": ["chatmrpt"]},
        {"Name": "tag:Environment", "Values": [ENVIRONMENT]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ])["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    print("\n== ChatMRPT local estate ==")
    print(f"AWS emulator: {os.environ.get('AWS_ENDPOINT_URL')}  (region {REGION})")
    counts: dict[str, int] = {}
    for arn in tagged([]):
        kind = arn.split(":")[2] + ":" + arn.split(":")[5].split("/")[0]
        counts[kind] = counts.get(kind, 0) + 1
    print("resources in the emulator: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"))
    ok = True
    for instance in instances:
        name = next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "Name"), "")
        url = f"http://{instance['PrivateIpAddress']}:8000/health"
        state = health(url)
        ok &= state.startswith("HTTP 200") and "overall=healthy" in state
        print(f"instance {instance['InstanceId']} {name}: {url} -> {state}")
    if not instances:
        print("instances: none")
    lb_url = f"http://127.0.0.1:{os.environ.get('CHATMRPT_LAB_LB_PORT', '8080')}/health"
    lb_state = health(lb_url)
    ok &= lb_state.startswith("HTTP 200") and "overall=healthy" in lb_state
    print(f"the app through the load balancer: {lb_url} -> {lb_state}")
    print("tear down: make lab-down  (removes the lab's containers, network, emulator, PostgreSQL and load balancer)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
