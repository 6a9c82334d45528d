#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Schedule the deletion of the KMS key an alias names. amazon.aws.kms_key does it too, but
calls ScheduleKeyDeletion with the key's ARN, which AWS accepts and moto, the emulator of the
tests and the local estate, does not (a KeyError, HTTP 500); the key id works on both."""

from __future__ import annotations

DOCUMENTATION = r"""
module: kms_key_deletion
short_description: Schedule the deletion of the KMS key behind an alias
description:
  - Does nothing when the alias names no key or its key's deletion is already scheduled.
  - Otherwise schedules the key's deletion after O(pending_window_days) (KMS never deletes a
    key at once). The alias stays until KMS deletes the key, so that an apply within the
    waiting time finds the key again (amazon.aws.kms_key cancels the deletion).
  - Supports check mode.
options:
  alias:
    description: Alias of the key (alias/NAME).
    type: str
    required: true
  pending_window_days:
    description: Days before KMS deletes the key (7-30).
    type: int
    default: 30
  region:
    description: AWS region.
    type: str
    required: true
requirements: [boto3]
"""

RETURN = r"""
key_id:
  description: The key's id (empty when the alias names no key).
  type: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # pragma: no cover
    boto3 = None


def main():
    module = AnsibleModule(
        argument_spec={"alias": {"type": "str", "required": True},
                       "pending_window_days": {"type": "int", "default": 30},
                       "region": {"type": "str", "required": True}},
        supports_check_mode=True,
    )
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"))
    alias, days = module.params["alias"], module.params["pending_window_days"]
    kms = boto3.client("kms", region_name=module.params["region"])
    try:
        try:
            key = kms.describe_key(KeyId=alias)["KeyMetadata"]
        except ClientError as e:
            if e.response["Error"]["Code"] != "NotFoundException":
                raise
            module.exit_json(changed=False, key_id="")
        if key["KeyState"] in ("PendingDeletion", "PendingReplicaDeletion"):
            module.exit_json(changed=False, key_id=key["KeyId"])
        if not module.check_mode:
            kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=days)
    except (BotoCoreError, ClientError) as e:
        module.fail_json(msg=f"deleting the key of {alias}: {e.__class__.__name__}: {e}")
    module.exit_json(changed=True, key_id=key["KeyId"])


if __name__ == "__main__":
    main()
