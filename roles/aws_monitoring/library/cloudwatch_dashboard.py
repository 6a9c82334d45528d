#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manage one CloudWatch dashboard: amazon.aws and community.aws have no module for it."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloudwatch_dashboard
short_description: Create, update or delete a CloudWatch dashboard
description:
  - Puts the dashboard when it is missing or its body differs from O(body) (compared as
    JSON values, so key order and spacing do not count); deletes it with O(state=absent).
  - Supports check mode and diff mode (the bodies before and after, as indented JSON).
  - Fails with CloudWatch's validation messages when it refuses the body.
options:
  name:
    description: Dashboard name (A-Z, a-z, 0-9, - and _, at most 255 characters).
    type: str
    required: true
  body:
    description: The dashboard body (a dict with a C(widgets) list); required when present.
    type: dict
  region:
    description: AWS region of the dashboard.
    type: str
    required: true
  state:
    description: Whether the dashboard exists.
    type: str
    choices: [present, absent]
    default: present
requirements: [boto3]
notes:
  - Credentials and the endpoint come from boto3's usual chain (environment, profile,
    instance role; C(AWS_ENDPOINT_URL) for an emulator).
"""

EXAMPLES = r"""
- name: Keep the staging dashboard
  cloudwatch_dashboard:
    name: ChatMRPT-Staging
    region: us-east-2
    body:
      widgets:
        - {type: text, x: 0, y: 0, width: 6, height: 3, properties: {markdown: "# Staging"}}
"""

RETURN = r"""
dashboard_arn:
  description: ARN of the dashboard (empty when absent, or not created yet in check mode).
  returned: always
  type: str
"""

import json
import re

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # reported by the module
    boto3 = None

NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def current_body(client, name):
    """(arn, body) of the dashboard, or (None, None) when there is none."""
    try:
        found = client.get_dashboard(DashboardName=name)
    except ClientError as e:
        if e.response["Error"]["Code"] in ("ResourceNotFound", "ResourceNotFoundException"):
            return None, None
        raise
    return found["DashboardArn"], json.loads(found["DashboardBody"])


def pretty(body):
    return "" if body is None else json.dumps(body, indent=2, sort_keys=True) + "\n"


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "body": {"type": "dict"},
            "region": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_if=[("state", "present", ["body"])],
        supports_check_mode=True,
    )
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"))
    name, body, state = module.params["name"], module.params["body"], module.params["state"]
    if not NAME.match(name):
        module.fail_json(msg=f"name: {name!r} is not a dashboard name (A-Z, a-z, 0-9, - and _, 1-255)")
    if state == "present" and not isinstance(body.get("widgets"), list):
        module.fail_json(msg="body: a dashboard body needs a 'widgets' list")
    try:
        client = boto3.client("cloudwatch", region_name=module.params["region"])
        arn, before = current_body(client, name)
        after = body if state == "present" else None
        changed = before != after
        if changed and not module.check_mode:
            if state == "present":
                answer = client.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
                # errors refuse the body; warnings mean parts of it would not render
                problems = answer.get("DashboardValidationMessages", [])
                if problems:
                    module.fail_json(msg=f"CloudWatch reported problems with the body of dashboard {name}",
                                     validation_messages=problems)
                arn, _ = current_body(client, name)
            else:
                client.delete_dashboards(DashboardNames=[name])
                arn = None
    except (BotoCoreError, ClientError) as e:
        module.fail_json(msg=f"dashboard {name}: {e.__class__.__name__}: {e}")
    result = {"changed": changed, "dashboard_arn": arn or ""}
    if module._diff:
        result["diff"] = {"before": pretty(before), "after": pretty(after),
                          "before_header": f"dashboard {name}", "after_header": f"dashboard {name}"}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
