#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep every SecureString under a path encrypted with one KMS key: ssm_parameter sets the
key only when it writes a value, so a parameter stored earlier (before the environment's
key existed, or with the AWS managed key) would keep its old key for good."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ssm_parameters_key
short_description: Re-encrypt the SecureString parameters under a path with one KMS key
description:
  - Lists the SecureString parameters under O(path) (recursively) and, for each one whose
    key is not O(key_id), reads its value with decryption and writes it back with O(key_id)
    (same value, type, tier and description; tags and history stay).
  - Never returns a value. Supports check mode (reports the parameters it would re-encrypt,
    also when the key itself does not exist yet).
options:
  path:
    description: Parameter path, e.g. /chatmrpt/staging.
    type: str
    required: true
  key_id:
    description: The KMS key every SecureString must use (alias, key id or ARN).
    type: str
    required: true
  region:
    description: AWS region.
    type: str
    required: true
requirements: [boto3]
"""

RETURN = r"""
reencrypted:
  description: Names of the parameters re-encrypted (or, in check mode, that would be).
  type: list
  elements: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # pragma: no cover
    boto3 = None


def names_of_the_key(kms, key_id: str) -> set[str]:
    """Every way a parameter's KeyId may name the key: as given, its id, its ARN and its aliases."""
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    names = {key_id, metadata["KeyId"], metadata["Arn"]}
    region_account = metadata["Arn"].rsplit(":", 1)[0]
    for page in kms.get_paginator("list_aliases").paginate(KeyId=metadata["KeyId"]):
        for alias in page["Aliases"]:
            names |= {alias["AliasName"], f"{region_account}:{alias['AliasName']}"}
    return names


def main():
    module = AnsibleModule(
        argument_spec={"path": {"type": "str", "required": True}, "key_id": {"type": "str", "required": True},
                       "region": {"type": "str", "required": True}},
        supports_check_mode=True,
    )
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"))
    path, key_id, region = module.params["path"], module.params["key_id"], module.params["region"]
    ssm, kms = boto3.client("ssm", region_name=region), boto3.client("kms", region_name=region)
    try:
        try:
            wanted = names_of_the_key(kms, key_id)
        except ClientError as e:
            # check mode before the run that makes the key: every other key is to be replaced
            if e.response["Error"]["Code"] != "NotFoundException" or not module.check_mode:
                raise
            wanted = {key_id}
        pages = ssm.get_paginator("describe_parameters").paginate(ParameterFilters=[
            {"Key": "Path", "Option": "Recursive", "Values": [path]},
            {"Key": "Type", "Values": ["SecureString"]}])
        stale = [p for page in pages for p in page["Parameters"] if p.get("KeyId") not in wanted]
        for parameter in stale if not module.check_mode else []:
            value = ssm.get_parameter(Name=parameter["Name"], WithDecryption=True)["Parameter"]["Value"]
            put = {"Name": parameter["Name"], "Value": value, "Type": "SecureString", "KeyId": key_id,
                   "Overwrite": True, "Tier": parameter.get("Tier", "Standard")}
            if parameter.get("Description"):
                put["Description"] = parameter["Description"]
            ssm.put_parameter(**put)
    except (BotoCoreError, ClientError) as e:
        module.fail_json(msg=f"SecureStrings under {path} with key {key_id}: {e.__class__.__name__}: {e}")
    names = sorted(p["Name"] for p in stale)
    module.exit_json(changed=bool(names), reencrypted=names)  # names only, never a value


if __name__ == "__main__":
    main()
