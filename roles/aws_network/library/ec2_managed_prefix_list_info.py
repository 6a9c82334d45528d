#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find a managed prefix list by name (read-only): amazon.aws has no module for them."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ec2_managed_prefix_list_info
short_description: Find an EC2 managed prefix list by name
description:
  - Returns the prefix list named O(name), such as AWS's
    C(com.amazonaws.global.cloudfront.origin-facing) (CloudFront's origin-facing addresses).
  - Fails when there is none, naming the region.
  - Read-only; runs in check mode.
options:
  name:
    description: Name of the prefix list.
    type: str
    required: true
  region:
    description: AWS region.
    type: str
    required: true
requirements: [boto3]
notes:
  - Credentials and the endpoint come from boto3's usual chain (environment, profile,
    instance role; C(AWS_ENDPOINT_URL) for an emulator).
"""

EXAMPLES = r"""
- name: Find CloudFront's origin-facing addresses
  ec2_managed_prefix_list_info:
    name: com.amazonaws.global.cloudfront.origin-facing
    region: us-east-2
  register: cloudfront
"""

RETURN = r"""
prefix_list_id:
  description: Id of the prefix list (pl-...).
  returned: success
  type: str
max_entries:
  description: Its maximum number of entries (what a security group rule that references it
    counts against the group's rule quota).
  returned: success
  type: int
owner_id:
  description: Owner of the list (AWS for AWS-managed lists).
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # reported by the module
    boto3 = None


def main():
    module = AnsibleModule(
        argument_spec={"name": {"type": "str", "required": True}, "region": {"type": "str", "required": True}},
        supports_check_mode=True,
    )
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"))
    name, region = module.params["name"], module.params["region"]
    try:
        pages = boto3.client("ec2", region_name=region).get_paginator("describe_managed_prefix_lists").paginate(
            Filters=[{"Name": "prefix-list-name", "Values": [name]}])
        found = [p for page in pages for p in page["PrefixLists"] if p["PrefixListName"] == name]
    except (BotoCoreError, ClientError) as e:
        module.fail_json(msg=f"prefix list {name}: {e.__class__.__name__}: {e}")
    if len(found) != 1:
        module.fail_json(msg=f"{len(found)} managed prefix lists named {name} in {region} (expected one)")
    found = found[0]
    module.exit_json(changed=False, prefix_list_id=found["PrefixListId"], max_entries=found.get("MaxEntries", 0),
                     owner_id=found.get("OwnerId", ""))


if __name__ == "__main__":
    main()
