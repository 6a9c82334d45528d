#!/usr/bin/env python3
"""Rerun benchmark: `make demo` on a converged local estate, against the cold converge.

What an operator waits for, end to end, with default options: `scripts/demo.sh` (the main
job of `make demo`: lab up, site.yml, the summary) on a lab of the benchmark's own, first
cold (no lab: the emulator, PostgreSQL, Redis, the network and the instances all start, and
site.yml builds and configures everything), then warm (the same command on the converged
estate, which must change nothing), each timed. Prints both times and the ratio; the target
of issue #17 is a warm rerun in at most 25 % of the cold converge. No timed assertion: the
ratio is printed, whatever it is. Exit codes: 0 both runs ok and the rerun changed nothing;
1 the rerun changed something; 2 a run failed.

    .venv/bin/python benchmarks/rerun_bench.py [--keep] [--json out.json]

Its lab (LAB_* below, its own ports, network and state directory) is removed before and,
unless --keep, after. The lab of `make demo` and the tests' lab are left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = {
    "LAB_STATE_DIR": str(ROOT / ".lab-bench"),
    "LAB_NETWORK": "chatmrpt-lab-bench",
    "LAB_SUBNET": "10.215.0.0/16",
    "LAB_MOTO_PORT": "4586",
    "LAB_PG_PORT": "55452",
    "LAB_REDIS_PORT": "56399",
    "LAB_LB_PORT": "8095",
}
RECAP = re.compile(r"^\S+\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run(*cmd: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "CHATMRPT_LAB_", "AWS_"))}
    env.update(LAB, ANSIBLE_NOCOLOR="true", ANSIBLE_FORCE_COLOR="false")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return time.monotonic() - start, proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="leave the benchmark's lab up afterwards")
    ap.add_argument("--json", help="write the measurements here")
    args = ap.parse_args(argv)
    python = str(ROOT / ".venv" / "bin" / "python")
    run(python, "lab/lab.py", "down")
    try:
        cold, first = run("scripts/demo.sh")
        if first.returncode != 0:
            print(first.stdout[-4000:] + first.stderr[-2000:], file=sys.stderr)
            print(f"rerun_bench: the cold converge failed after {cold:.1f} s", file=sys.stderr)
            return 2
        warm, second = run("scripts/demo.sh")
        if second.returncode != 0:
            print(second.stdout[-4000:] + second.stderr[-2000:], file=sys.stderr)
            print(f"rerun_bench: the rerun failed after {warm:.1f} s", file=sys.stderr)
            return 2
    finally:
        if not args.keep:
            run(python, "lab/lab.py", "down")
    changed = sum(int(m[0]) for m in RECAP.findall(second.stdout))
    tasks = len(re.findall(r"^TASK \[", second.stdout, re.M))
    ratio = warm / cold
    print(f"cold converge (make demo on no lab)      {cold:7.1f} s")
    print(f"warm rerun    (make demo, converged)     {warm:7.1f} s   {tasks} tasks, changed={changed}")
    print(f"warm / cold = {ratio:.0%} (target: at most 25 %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"cold_seconds": round(cold, 1), "warm_seconds": round(warm, 1),
                                               "ratio": round(ratio, 3), "warm_changed": changed,
                                               "warm_tasks": tasks}, indent=2) + "\n")
    return 0 if changed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
