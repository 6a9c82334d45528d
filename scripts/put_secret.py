#!/usr/bin/env python3
"""Store an operator's secret for an environment in SSM Parameter Store, without it ever
being an argument (shell history, `ps`) or echoed to the terminal.

    .venv/bin/python scripts/put_secret.py staging app/OPENAI_API_KEY

prompts for the value (not echoed) and writes the SecureString `/chatmrpt/<env>/<name>`
with the environment's own KMS key, `alias/chatmrpt-<env>-parameters` (the aws_iam role
makes it; --kms-key-id names another). Before the first apply that key does not exist yet:
the AWS managed key is used, and the first apply re-encrypts the value with the
environment's key. Piped input is read instead of the prompt (`... < file`). An existing value is
replaced only with --overwrite. The normal AWS credential chain applies (for `local`, run it
through scripts/with_env.sh local so that it talks to the lab's emulator).
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys

import boto3
from botocore.exceptions import BotoCoreError, ClientError

ENVIRONMENTS = ("local", "staging", "production")
NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def read_value(stream=sys.stdin) -> str:
    value = getpass.getpass("value (not echoed): ") if stream.isatty() else stream.read()
    return value.strip()


def environment_key(environment: str, region: str) -> str:
    """The environment's own key (aws_iam_parameters_key_alias), or the AWS managed key until
    the first apply has made it."""
    alias = f"alias/chatmrpt-{environment}-parameters"
    try:
        boto3.client("kms", region_name=region).describe_key(KeyId=alias)
    except ClientError as e:
        if e.response["Error"]["Code"] != "NotFoundException":
            raise
        print(f"note: {alias} does not exist yet: the AWS managed key is used, and the first apply "
              "re-encrypts the value with the environment's key", file=sys.stderr)
        return "alias/aws/ssm"
    return alias


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("environment", choices=ENVIRONMENTS)
    ap.add_argument("name", help="name under /chatmrpt/<environment>/, e.g. app/OPENAI_API_KEY")
    ap.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                    or "us-east-2")
    ap.add_argument("--kms-key-id", help="KMS key of the SecureString (default: the environment's own key)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing value")
    args = ap.parse_args(argv)
    if not NAME.match(args.name):
        ap.error(f"name {args.name!r}: letters, digits, '_', '.', '-' in '/'-separated parts")
    value = read_value()
    if not value:
        print("error: empty value: nothing stored", file=sys.stderr)
        return 2
    parameter = f"/chatmrpt/{args.environment}/{args.name}"
    try:
        args.kms_key_id = args.kms_key_id or environment_key(args.environment, args.region)
        boto3.client("ssm", region_name=args.region).put_parameter(
            Name=parameter, Value=value, Type="SecureString", KeyId=args.kms_key_id, Overwrite=args.overwrite)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ParameterAlreadyExists":
            print(f"error: {parameter} exists already: --overwrite replaces it", file=sys.stderr)
            return 1
        print(f"error: {parameter}: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 1
    except BotoCoreError as e:
        print(f"error: {parameter}: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 1
    print(f"stored {parameter} (SecureString, {len(value)} characters, key {args.kms_key_id}) in {args.region}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
