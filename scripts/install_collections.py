#!/usr/bin/env python3
"""Install exactly the collections of requirements.yml, at their pinned versions, from the
`ansible` wheel of requirements/collections-bundle.txt (Galaxy is unreachable here).

    install_collections.py WHEEL DEST

DEST is a collections directory (the one holding `ansible_collections/`): the virtualenv's
site-packages for `.venv`, a build directory for the execution environment. Each pinned
collection is taken out of the wheel unless DEST already has it at that version; every
other collection in DEST is removed, so what is installed is what is pinned. Fails if the
wheel bundles another version than the pin.
"""

from __future__ import annotations

import compileall
import json
import shutil
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def pinned() -> dict[str, str]:
    entries = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    return {entry["name"]: str(entry["version"]) for entry in entries}


def installed_version(path: Path) -> str | None:
    manifest = path / "MANIFEST.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text())["collection_info"]["version"]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, dest = Path(argv[0]), Path(argv[1]) / "ansible_collections"
    wanted = pinned()
    with zipfile.ZipFile(wheel) as bundle:
        members = bundle.namelist()
        for name, version in wanted.items():
            namespace, collection = name.split(".")
            target = dest / namespace / collection
            if installed_version(target) == version:
                continue
            prefix = f"ansible_collections/{namespace}/{collection}/"
            found = json.loads(bundle.read(prefix + "MANIFEST.json"))["collection_info"]["version"]
            if found != version:
                print(f"{wheel.name} bundles {name} {found}, requirements.yml pins {version}", file=sys.stderr)
                return 1
            shutil.rmtree(target, ignore_errors=True)
            for member in (m for m in members if m.startswith(prefix) and not m.endswith("/")):
                path = dest.parent / member
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(bundle.read(member))
            # as pip does for what it installs: the modules' compiled code ships with them
            compileall.compile_dir(str(target), quiet=1, workers=0)
            print(f"installed {name} {version}")
    keep = {tuple(name.split(".")) for name in wanted}
    for namespace in subdirectories(dest):
        for collection in subdirectories(namespace):
            if (namespace.name, collection.name) not in keep:
                shutil.rmtree(collection)
                print(f"removed {namespace.name}.{collection.name} (not in requirements.yml)")
        if not subdirectories(namespace):
            shutil.rmtree(namespace)
    return 0


def subdirectories(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir() and p.name != "__pycache__"] if path.is_dir() else []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
