#!/usr/bin/env python3
"""Drift check: does an environment still match the code?

Runs playbooks/infrastructure.yml in `--check --diff` mode on one environment and lists
every task (with its loop item: the resource) that would change something, read from the
run's structured results (scripts/callback_plugins/chatmrpt_results.py, one JSON object per
task result), not from its text. A task whose module has no check mode compared nothing:
it is listed as UNKNOWN, never counted as in sync. Exit status: 0 no drift, 1 drift (each
one named on stdout), 2 the check itself failed.

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
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_results(path: Path) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]], list[str], bool]:
    """From the run's JSON lines (scripts/callback_plugins/chatmrpt_results.py): the changes and
    the unknowns (a module without check mode: nothing compared) as (task, item), the failed
    tasks, and whether the run reached its recap."""
    changes, unknown, failures, recap = [], [], [], False
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        record = json.loads(line)
        if "stats" in record:
            recap = True
            failures += [f"recap of {host}" for host, s in record["stats"].items() if s["failures"] or s["unreachable"]]
        elif record["status"] == "changed":
            changes.append((record["task"], record["item"]))
        elif record["status"] == "unknown":
            unknown.append((record["task"], record["item"]))
        elif record["status"] in ("failed", "unreachable") and not record["ignored"]:
            failures.append(f"{record['task']}: {record['msg']}")
    return changes, unknown, failures, recap


def recording_env(results: Path) -> dict[str, str]:
    """ansible-playbook's environment: the default text output, and every result as JSON lines
    in `results`."""
    return {**os.environ, "ANSIBLE_NOCOLOR": "true", "ANSIBLE_FORCE_COLOR": "false",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
            "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "scripts" / "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks,chatmrpt_results",
            "CHATMRPT_RESULTS_FILE": str(results)}


def label(task: str, item) -> str:
    return task + (f" [{item}]" if item not in (None, "") else "")


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
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        proc = subprocess.run(cmd, cwd=ROOT, env=recording_env(results), capture_output=True, text=True)
        changes, unknown, failures, recap = read_results(results)
    output = proc.stdout + proc.stderr
    if args.show_output:
        print(output)
    if proc.returncode != 0 or failures or not recap:
        print(f"drift_check: the check of {args.environment} failed (ansible-playbook exit {proc.returncode});"
              f" failed tasks: {'; '.join(failures) or 'none seen'}", file=sys.stderr)
        print(output[-6000:], file=sys.stderr)
        return 2
    drift = [(task, item) for task, item in changes if task not in args.ignore_task]
    for task, item in changes:
        print(("DRIFT: " if (task, item) in drift else "ignored (--ignore-task): ") + label(task, item))
    # A module without check mode was skipped: in sync or not, nobody knows.
    for task, item in unknown:
        print("UNKNOWN (module has no check mode): " + label(task, item))
    if drift:
        print(f"drift_check: {args.environment} differs from the code in {len(drift)} place(s)"
              + (f"; {len(unknown)} task(s) could not be compared" if unknown else ""))
        return 1
    if unknown:
        print(f"drift_check: {args.environment} matches the code where check mode can compare; "
              f"{len(unknown)} task(s) could not be compared (UNKNOWN above)")
        return 0
    print(f"drift_check: {args.environment} matches the code (no change in --check --diff)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
