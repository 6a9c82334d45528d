#!/usr/bin/python3
"""Validate a CloudWatch agent configuration against the agent's JSON schema.

Usage: validate-config.py SCHEMA CONFIG. Exit 0 when valid; otherwise print every
violation (JSON path: message) and exit 1. Installed by the cloudwatch_agent role and
used as the `validate:` command of its configuration template.
"""
import json
import sys

import jsonschema


def main(schema_path, config_path):
    with open(schema_path, encoding="utf-8") as handle:
        schema = json.load(handle)
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except ValueError as exc:
        print(f"{config_path}: not JSON: {exc}", file=sys.stderr)
        return 1
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda error: list(error.absolute_path))
    for error in errors:
        path = "/".join(str(part) for part in error.absolute_path) or "(top)"
        print(f"{config_path}: {path}: {error.message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
