#!/usr/bin/env python3
"""Fail unless every collection in requirements.yml is installed in a version its range allows."""

import json
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def installed() -> dict[str, str]:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-galaxy"), "collection", "list", "--format", "json"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    versions: dict[str, str] = {}
    # Earlier paths win, as they do for Ansible itself.
    for collections in json.loads(out).values():
        for name, info in collections.items():
            versions.setdefault(name, info["version"])
    return versions


def main() -> int:
    wanted = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    have = installed()
    problems = []
    for entry in wanted:
        name, spec = entry["name"], SpecifierSet(entry["version"].replace(" ", ""))
        version = have.get(name)
        if version is None:
            problems.append(f"{name}: not installed (wanted {spec})")
        elif Version(version) not in spec:
            problems.append(f"{name}: {version} installed, requirements.yml wants {spec}")
        else:
            print(f"ok  {name} {version} ({spec})")
    for problem in problems:
        print(f"BAD {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
