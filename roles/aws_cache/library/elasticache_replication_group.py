#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manage one ElastiCache for Redis replication group with in-transit encryption and an
AUTH token: community.aws.elasticache manages cache clusters, which cannot have either."""

from __future__ import annotations

DOCUMENTATION = r"""
module: elasticache_replication_group
short_description: Create, update or delete an encrypted Redis replication group
description:
  - Creates the replication group when missing, with in-transit and at-rest encryption and
    the AUTH token (sent only on creation; rotating it is a separate, deliberate step).
  - Changes the node type, the security groups and the transit encryption mode of an existing
    group (ModifyReplicationGroup, applied immediately); other differences that AWS cannot
    change in place (engine, encryption, subnet group, number of nodes) fail with a message.
  - Deletes it with O(state=absent).
  - Supports check mode.
options:
  id:
    description: Replication group id (lower case, at most 40 characters).
    type: str
    required: true
  description:
    description: Description of the group.
    type: str
    default: ""
  node_type:
    description: Cache node type, e.g. cache.t4g.micro.
    type: str
  engine_version:
    description: Redis version, e.g. "7.1".
    type: str
  num_cache_clusters:
    description: Nodes (1 primary + replicas); 2 or more for automatic failover.
    type: int
    default: 1
  port:
    description: Port of the nodes.
    type: int
    default: 6379
  subnet_group:
    description: Cache subnet group.
    type: str
  security_group_ids:
    description: VPC security groups of the nodes.
    type: list
    elements: str
    default: []
  transit_encryption_mode:
    description: C(required), only TLS connections; C(preferred), TLS and plain connections
      (for clients that cannot use TLS yet; changes to C(required) in place).
    type: str
    choices: [preferred, required]
    default: required
  auth_token:
    description: AUTH token (16-128 printable characters); required to create the group.
    type: str
    no_log: true
  tags:
    description: Tags of a new group.
    type: dict
    default: {}
  region:
    description: AWS region.
    type: str
    required: true
  wait_timeout:
    description: With O(state=absent), seconds to wait until the group is gone (its nodes
      hold network interfaces in the security group that is removed after it); 0, do not wait.
    type: int
    default: 0
  state:
    description: Whether the group exists.
    type: str
    choices: [present, absent]
    default: present
requirements: [boto3]
"""

EXAMPLES = r"""
- name: Keep the staging cache
  elasticache_replication_group:
    id: chatmrpt-staging-redis
    node_type: cache.t4g.micro
    engine_version: "7.1"
    subnet_group: chatmrpt-staging-cache-subnets
    security_group_ids: [sg-0123]
    auth_token: "{{ token }}"
    region: us-east-2
"""

RETURN = r"""
endpoint:
  description: Primary endpoint (address and port); empty while the group is being created.
  returned: always
  type: dict
status:
  description: The group's status (available, creating, ...); C(absent) when there is none.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # reported by the module
    boto3 = None


def describe(client, group_id):
    try:
        return client.describe_replication_groups(ReplicationGroupId=group_id)["ReplicationGroups"][0]
    except ClientError as e:
        if e.response["Error"]["Code"] in ("ReplicationGroupNotFoundFault", "ReplicationGroupNotFound"):
            return None
        raise


def endpoint_of(group):
    groups = (group or {}).get("NodeGroups") or [{}]
    found = groups[0].get("PrimaryEndpoint") or {}
    return {"address": found.get("Address", ""), "port": found.get("Port", 0)}


def security_groups(client, group):
    """The security groups of the group's nodes (AWS reports them per node), or None when the
    first node cannot be described (moto makes no member clusters for a replication group)."""
    members = group.get("MemberClusters", [])
    try:
        cluster = client.describe_cache_clusters(CacheClusterId=members[0])["CacheClusters"][0] if members else None
    except ClientError as e:
        if e.response["Error"]["Code"] in ("CacheClusterNotFound", "CacheClusterNotFoundFault"):
            return None
        raise
    return None if cluster is None else {g["SecurityGroupId"] for g in cluster.get("SecurityGroups", [])}


def main():
    module = AnsibleModule(
        argument_spec={
            "id": {"type": "str", "required": True},
            "description": {"type": "str", "default": ""},
            "node_type": {"type": "str"},
            "engine_version": {"type": "str"},
            "num_cache_clusters": {"type": "int", "default": 1},
            "port": {"type": "int", "default": 6379},
            "subnet_group": {"type": "str"},
            "security_group_ids": {"type": "list", "elements": "str", "default": []},
            "transit_encryption_mode": {"type": "str", "choices": ["preferred", "required"], "default": "required"},
            "auth_token": {"type": "str", "no_log": True},
            "tags": {"type": "dict", "default": {}},
            "region": {"type": "str", "required": True},
            "wait_timeout": {"type": "int", "default": 0},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_if=[("state", "present", ["node_type", "engine_version", "subnet_group"])],
        supports_check_mode=True,
    )
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"))
    p = module.params
    group_id = p["id"]
    changed, diff = False, {"before": {}, "after": {}}
    try:
        client = boto3.client("elasticache", region_name=p["region"])
        group = describe(client, group_id)
        if p["state"] == "absent":
            if group and group.get("Status") != "deleting":
                changed = True
                if not module.check_mode:
                    client.delete_replication_group(ReplicationGroupId=group_id)
            deadline = time.monotonic() + p["wait_timeout"]
            while group and not module.check_mode and time.monotonic() < deadline:
                time.sleep(15)
                group = describe(client, group_id)
            if group and p["wait_timeout"] > 0 and not module.check_mode:
                module.fail_json(msg=f"{group_id} is still {group.get('Status')} after {p['wait_timeout']} s")
            module.exit_json(changed=changed, endpoint={}, status=(group or {}).get("Status", "absent"))
        if group is None:
            changed = True
            if not p["auth_token"] and not module.check_mode:
                module.fail_json(msg=f"{group_id}: auth_token is required to create the group")
            if not module.check_mode:
                client.create_replication_group(
                    ReplicationGroupId=group_id, ReplicationGroupDescription=p["description"] or group_id,
                    Engine="redis", EngineVersion=p["engine_version"], CacheNodeType=p["node_type"],
                    NumCacheClusters=p["num_cache_clusters"], Port=p["port"],
                    CacheSubnetGroupName=p["subnet_group"], SecurityGroupIds=p["security_group_ids"],
                    AutomaticFailoverEnabled=p["num_cache_clusters"] > 1,
                    MultiAZEnabled=p["num_cache_clusters"] > 1,
                    TransitEncryptionEnabled=True, TransitEncryptionMode=p["transit_encryption_mode"],
                    AtRestEncryptionEnabled=True, AuthToken=p["auth_token"],
                    Tags=[{"Key": k, "Value": str(v)} for k, v in p["tags"].items()])
                group = describe(client, group_id)
            diff["after"] = {"id": group_id, "node_type": p["node_type"], "nodes": p["num_cache_clusters"]}
        else:
            fixed = {"transit encryption": (group.get("TransitEncryptionEnabled"), True),
                     "at-rest encryption": (group.get("AtRestEncryptionEnabled"), True),
                     "nodes": (len(group.get("MemberClusters", [])), p["num_cache_clusters"])}
            wrong = {k: v for k, v in fixed.items() if v[0] != v[1]}
            if wrong:
                module.fail_json(msg=f"{group_id} differs in what cannot change in place: "
                                     + ", ".join(f"{k} is {v[0]}, wanted {v[1]}" for k, v in wrong.items())
                                     + "; replace the group (absent, then present) in a maintenance window")
            modify, before = {}, {}
            if group.get("TransitEncryptionMode", p["transit_encryption_mode"]) != p["transit_encryption_mode"]:
                modify["TransitEncryptionMode"] = p["transit_encryption_mode"]
                before["TransitEncryptionMode"] = group.get("TransitEncryptionMode")
            if group.get("CacheNodeType") != p["node_type"]:
                modify["CacheNodeType"], before["CacheNodeType"] = p["node_type"], group.get("CacheNodeType")
            live_groups = security_groups(client, group)
            if live_groups is not None and live_groups != set(p["security_group_ids"]):
                modify["SecurityGroupIds"], before["SecurityGroupIds"] = p["security_group_ids"], sorted(live_groups)
            if modify:
                changed = True
                diff = {"before": before, "after": modify}
                if not module.check_mode:
                    client.modify_replication_group(ReplicationGroupId=group_id, ApplyImmediately=True, **modify)
                    group = describe(client, group_id)
    except (BotoCoreError, ClientError) as e:
        module.fail_json(msg=f"replication group {group_id}: {e.__class__.__name__}: {e}")
    result = {"changed": changed, "endpoint": endpoint_of(group), "status": (group or {}).get("Status", "absent")}
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
