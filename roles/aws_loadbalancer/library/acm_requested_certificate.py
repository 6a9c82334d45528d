#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Request (or find again) an ACM certificate validated by DNS: community.aws.acm_certificate
only imports certificates, and no collection module requests one."""

from __future__ import annotations

DOCUMENTATION = r"""
module: acm_requested_certificate
short_description: Request an ACM certificate for a domain, validated by DNS, and report its records
description:
  - Finds the certificate tagged C(Name=name) for O(domain_name) and O(subject_alternative_names)
    that is issued or waiting for validation; requests one (DNS validation) when there is none.
  - Returns the DNS records ACM needs to see (a CNAME per name) and the certificate's status.
    With O(wait_timeout), waits up to that many seconds for ACM to issue it; a certificate still
    pending is reported, not failed, so the caller says what to do.
  - O(state=absent) deletes every certificate tagged C(Name=name) (run after the load balancer
    that used it is gone: ACM refuses to delete a certificate in use).
  - Supports check mode (nothing is requested or deleted).
options:
  name:
    description: Value of the C(Name) tag by which the certificate is found again.
    type: str
    required: true
  domain_name:
    description: Domain of the certificate; required when present.
    type: str
  subject_alternative_names:
    description: Other names the certificate covers.
    type: list
    elements: str
    default: []
  tags:
    description: More tags on a requested certificate.
    type: dict
    default: {}
  region:
    description: AWS region of the certificate (the load balancer's).
    type: str
    required: true
  wait_timeout:
    description: Seconds to wait for ACM to issue a pending certificate (0, do not wait).
    type: int
    default: 0
  state:
    description: Whether the certificate exists.
    type: str
    choices: [present, absent]
    default: present
requirements: [boto3]
notes:
  - Credentials and the endpoint come from boto3's usual chain (environment, profile,
    instance role; C(AWS_ENDPOINT_URL) for an emulator).
"""

EXAMPLES = r"""
- name: Request the staging certificate
  acm_requested_certificate:
    name: ChatMRPT-Staging-cert
    domain_name: staging.chatmrpt.example.org
    region: us-east-2
    wait_timeout: 600
  register: cert
"""

RETURN = r"""
certificate_arn:
  description: ARN of the certificate (empty when absent, or not requested yet in check mode).
  returned: always
  type: str
status:
  description: ACM's status (ISSUED, PENDING_VALIDATION, ...); C(absent) when there is none.
  returned: always
  type: str
validation_records:
  description: The DNS records ACM checks, one per name (name, type, value, the name it proves, its status).
  returned: always
  type: list
  elements: dict
"""

import hashlib
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # reported by the module
    boto3 = None

USABLE = ("ISSUED", "PENDING_VALIDATION")
POLL_SECONDS = 10


def tagged(client, name):
    """Descriptions of the account's certificates tagged Name=name."""
    found = []
    pages = client.get_paginator("list_certificates").paginate(
        Includes={"keyTypes": ["RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1"]})
    for page in pages:
        for summary in page["CertificateSummaryList"]:
            arn = summary["CertificateArn"]
            tags = {t["Key"]: t.get("Value") for t in client.list_tags_for_certificate(CertificateArn=arn).get("Tags", [])}
            if tags.get("Name") == name:
                found.append(client.describe_certificate(CertificateArn=arn)["Certificate"])
    return found


def names_of(cert):
    return cert["DomainName"], sorted(set(cert.get("SubjectAlternativeNames", [])) - {cert["DomainName"]})


def records(cert):
    out = []
    for option in cert.get("DomainValidationOptions", []):
        record = option.get("ResourceRecord")
        if record:
            out.append({"name": record["Name"], "type": record["Type"], "value": record["Value"],
                        "domain": option["DomainName"], "status": option.get("ValidationStatus", "")})
    return out


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "domain_name": {"type": "str"},
            "subject_alternative_names": {"type": "list", "elements": "str", "default": []},
            "tags": {"type": "dict", "default": {}},
            "region": {"type": "str", "required": True},
            "wait_timeout": {"type": "int", "default": 0},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_if=[("state", "present", ["domain_name"])],
        supports_check_mode=True,
    )
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"))
    p = module.params
    name = p["name"]
    try:
        client = boto3.client("acm", region_name=p["region"])
        existing = tagged(client, name)
        if p["state"] == "absent":
            if existing and not module.check_mode:
                for cert in existing:
                    client.delete_certificate(CertificateArn=cert["CertificateArn"])
            module.exit_json(changed=bool(existing), certificate_arn="", status="absent", validation_records=[])

        wanted = (p["domain_name"], sorted(set(p["subject_alternative_names"]) - {p["domain_name"]}))
        matching = [c for c in existing if names_of(c) == wanted and c["Status"] in USABLE]
        # an issued certificate before a pending one, then the newest
        matching.sort(key=lambda c: (c["Status"] == "ISSUED", str(c.get("CreatedAt", ""))), reverse=True)
        changed = not matching
        if changed and module.check_mode:
            module.exit_json(changed=True, certificate_arn="", status="absent", validation_records=[])
        if changed:
            request = {"DomainName": wanted[0], "ValidationMethod": "DNS",
                       # the same request within the hour returns the same certificate
                       "IdempotencyToken": hashlib.sha256(f"{name} {wanted}".encode()).hexdigest()[:32],
                       "Tags": [{"Key": "Name", "Value": name}]
                       + [{"Key": k, "Value": str(v)} for k, v in p["tags"].items() if k != "Name"]}
            if wanted[1]:
                request["SubjectAlternativeNames"] = [wanted[0], *wanted[1]]
            arn = client.request_certificate(**request)["CertificateArn"]
        else:
            arn = matching[0]["CertificateArn"]
        deadline = time.monotonic() + max(0, p["wait_timeout"])
        while True:
            cert = client.describe_certificate(CertificateArn=arn)["Certificate"]
            # ACM adds the records a few seconds after the request
            ready = cert["Status"] == "ISSUED" or (records(cert) and p["wait_timeout"] <= 0)
            if ready or time.monotonic() >= deadline:
                break
            time.sleep(min(POLL_SECONDS, max(1, deadline - time.monotonic())))
    except (BotoCoreError, ClientError) as e:
        module.fail_json(msg=f"certificate {name}: {e.__class__.__name__}: {e}")
    module.exit_json(changed=changed, certificate_arn=arn, status=cert["Status"], validation_records=records(cert))


if __name__ == "__main__":
    main()
