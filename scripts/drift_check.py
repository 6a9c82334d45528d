#!/usr/bin/env python3
"""Drift check: does an environment still match the code?

Runs playbooks/infrastructure.yml in `--check --diff` mode on one environment and lists
every task (with its loop item: the resource) that would change something. Exit status:
0 no drift, 1 drift (each one named on stdout), 2 the check itself failed.

    scripts/drift_check.py staging
    scripts/drift_check.py production --tags network,compute
    scripts/drift_check.py staging --ignore-task 'aws_cdn : Manage the CloudFront distribution' -- -e aws_cdn_enabled=true

Options before `--` are the check's own; anything after `--` goes to ansible-playbook.
`--tags`/`--limit` style options are passed through as well. `--ignore-task NAME` excuses
one task by its full name ("role : task"), for a known false positive; each excused change
is still printed, as "ignored".
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASK = re.compile(r"^TASK \[(?P<name>.+?)\] \**$")
CHANGED = re.compile(r"^changed: \[(?P<host>[^\]]+)\](?: => \(item=(?P<item>.*?)\))?")
FAILED = re.compile(r"^(fatal|failed): \[(?P<host>[^\]]+)\]")
RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)")


def parse(output: str) -> tuple[list[tuple[str, str | None]], list[str], bool]:
    """(changes as (task, item)), failed task names, whether a recap was seen."""
    changes, failures, task, recap = [], [], None, False
    for line in output.splitlines():
        if match := TASK.match(line):
            task = match["name"]
        elif match := CHANGED.match(line):
            changes.append((task or "?", match["item"]))
        elif FAILED.match(line):
            failures.append(task or "?")
        elif match := RECAP.match(line):
            recap = True
            if int(match["unreachable"]) or int(match["failed"]):
                failures.append(f"recap of {match['host']}")
    return changes, failures, recap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("environment", help="inventory directory under inventories/ (local, staging, production)")
    parser.add_argument("--tags", help="only these roles' tags (as ansible-playbook --tags)")
    parser.add_argument("--ignore-task", action="append", default=[], metavar="NAME",
                        help="excuse changes of this task ('role : task'), for a known false positive")
    parser.add_argument("--show-output", action="store_true", help="print the whole ansible-playbook output")
    args = parser.parse_args(argv)

    inventory = ROOT / "inventories" / args.environment
    if not inventory.is_dir():
        known = ", ".join(sorted(p.name for p in (ROOT / "inventories").iterdir() if p.is_dir()))
        print(f"drift_check: unknown environment '{args.environment}' (known: {known})", file=sys.stderr)
        return 2
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
           str(ROOT / "playbooks" / "infrastructure.yml"), "--check", "--diff"]
    if args.tags:
        cmd += ["--tags", args.tags]
    cmd += extra
    env = {**os.environ, "ANSIBLE_NOCOLOR": "true", "ANSIBLE_FORCE_COLOR": "false",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if args.show_output:
        print(output)
    changes, failures, recap = parse(output)
    if proc.returncode != 0 or failures or not recap:
        print(f"drift_check: the check of {args.environment} failed (ansible-playbook exit {proc.returncode});"
              f" failed tasks: {', '.join(failures) or 'none seen'}", file=sys.stderr)
        print(output[-6000:], file=sys.stderr)
        return 2
    drift = [(task, item) for task, item in changes if task not in args.ignore_task]
    for task, item in changes:
        label = f"{task}" + (f" [{item}]" if item else "")
        print(("DRIFT: " if (task, item) in drift else "ignored (--ignore-task): ") + label)
    if drift:
        print(f"drift_check: {args.environment} differs from the code in {len(drift)} place(s)")
        return 1
    print(f"drift_check: {args.environment} matches the code (no change in --check --diff)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
