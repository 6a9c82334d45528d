#!/usr/bin/env python3
"""Fail unless the collections Ansible finds are exactly those of requirements.yml, each at
its pinned version (ansible-core's own aside): none missing, none other, none different."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def installed() -> dict[str, list[str]]:
    """{collection: [version in each collection path that has it]} as ansible-galaxy lists them."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-galaxy"), "collection", "list", "--format", "json"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    return by_name(json.loads(out))


def by_name(listing: dict) -> dict[str, list[str]]:
    """`ansible-galaxy collection list --format json` as {collection: [its versions]}."""
    versions: dict[str, list[str]] = {}
    for path, collections in listing.items():
        if "/ansible/_internal/" in path:     # ansible-core's own (ansible._protomatter)
            continue
        for name, info in collections.items():
            versions.setdefault(name, []).append(info["version"])
    return versions


def pinned() -> dict[str, str]:
    return {e["name"]: str(e["version"]) for e in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}


def problems(wanted: dict[str, str], have: dict[str, list[str]]) -> list[str]:
    found = []
    for name, version in sorted(wanted.items()):
        if name not in have:
            found.append(f"{name}: not installed (requirements.yml pins {version})")
        elif have[name] != [version]:
            found.append(f"{name}: {', '.join(have[name])} installed, requirements.yml pins {version}")
    for name in sorted(set(have) - set(wanted)):
        found.append(f"{name} {', '.join(have[name])}: installed, not in requirements.yml")
    return found


def main() -> int:
    bad = problems(pinned(), installed())
    for problem in bad:
        print(f"BAD {problem}", file=sys.stderr)
    if not bad:
        print("ok  the installed collections are those of requirements.yml")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
