"""Cost report and budget guard of the ChatMRPT estate.

    python -m chatmrpt_cost report [--env staging --env production] [--json FILE] [--chart FILE.svg]
    python -m chatmrpt_cost diff [--env staging] -e VAR=VALUE [-e @override.yml] [--json FILE]
    python -m chatmrpt_cost estimate < settings.json     (used by the budget guard)
    python -m chatmrpt_cost refresh [--region us-east-2]  (AWS Price List API)

`report` reads each environment's `chatmrpt_cost_settings` through Ansible itself, so the figures
follow the same group_vars layering as the playbooks; it needs no AWS credentials. `diff` reads
them twice, the second time with the `-e` values (as `ansible-playbook -e` takes them, files
with `@`), and prints what changes per item: what a change costs before it is applied.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from concurrent.futures import ThreadPoolExecutor

from chatmrpt_cost.chart import chart_svg
from chatmrpt_cost.model import PriceError, estimate, load_prices

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).resolve().parent / "reference.json"
CATEGORIES = {  # report line -> reference category
    "EC2": "EC2", "EBS": "EC2", "RDS": "RDS", "Application Load Balancer": "Load balancer",
    "ALB": "Load balancer", "CloudFront": "CloudFront", "CloudWatch": "CloudWatch",
    "S3": "S3", "Data transfer": "Data transfer", "ElastiCache": "Cache",
}


def resolve(environment: str, extra_vars: tuple[str, ...] = ()) -> dict:
    """`chatmrpt_cost_settings` and the budget of one environment, as Ansible resolves them
    (with `extra_vars`, each given to Ansible as `-e`)."""
    ansible = Path(sys.executable).parent / "ansible"
    env = {
        **os.environ,
        # Only the inventory's variables are needed: skip the dynamic inventory (no AWS call).
        "ANSIBLE_INVENTORY_ENABLED": "ansible.builtin.yaml",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "false",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "false",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    expr = "{{ {'settings': chatmrpt_cost_settings, 'budget': chatmrpt_budget_yearly} | to_json }}"
    proc = subprocess.run([str(ansible), "localhost", "-o", "-i", f"inventories/{environment}",
                           "-m", "ansible.builtin.debug", "-a", f"msg={expr}",
                           *(arg for value in extra_vars for arg in ("-e", value))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or "=>" not in proc.stdout:
        raise SystemExit(f"cannot read the settings of {environment}: {proc.stdout}{proc.stderr}")
    return json.loads(json.loads(proc.stdout.split("=>", 1)[1])["msg"])


def money(value: float) -> str:
    return f"${value:,.2f}"


def category(item_name: str) -> str:
    return next((cat for prefix, cat in CATEGORIES.items() if item_name.startswith(prefix)), "Other")


def print_environment(data: dict) -> None:
    print(f"\n{data['environment']}")
    width = max(len(row["item"]) for row in data["items"]["max"])
    print(f"  {'item':{width}}  {'desired':>10}  {'at ASG max':>10}  how")
    for desired, at_max in zip(data["items"]["desired"], data["items"]["max"]):
        print(f"  {desired['item']:{width}}  {money(desired['monthly']):>10}  {money(at_max['monthly']):>10}  {at_max['detail']}")
    print(f"  {'total per month':{width}}  {money(data['monthly']['desired']):>10}  {money(data['monthly']['max']):>10}")
    if "budget_yearly" in data:
        print(f"  yearly at ASG max {money(data['yearly']['max'])} = "
              f"{data['budget_share_at_max']:.1%} of the {money(data['budget_yearly'])} yearly budget")


def by_category(estimates: list[dict], asg: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for data in estimates:
        for row in data["items"][asg]:
            totals[category(row["item"])] = round(totals.get(category(row["item"]), 0) + row["monthly"], 2)
    return totals


def comparison(estimates: list[dict]) -> list[dict]:
    """Our totals beside the hand-made figures, with each difference explained."""
    reference = json.loads(REFERENCE.read_text())
    out = []
    for case in reference["cases"]:
        ours = by_category(estimates, case["asg"])
        if not case.get("cloudfront", False):
            ours.pop("CloudFront", None)
        lines = []
        for cat in sorted(set(ours) | set(case["items"])):
            theirs = case["items"].get(cat, 0.0)
            lines.append({"category": cat, "reference": theirs, "computed": ours.get(cat, 0.0),
                          "difference": round(ours.get(cat, 0.0) - theirs, 2),
                          "why": reference["explanations"].get(cat, "")})
        out.append({"case": case["name"], "reference_monthly": case["monthly"],
                    "computed_monthly": round(sum(ours.values()), 2), "lines": lines})
    return out


def print_comparison(cases: list[dict]) -> None:
    for case in cases:
        print(f"\n{case['case']}: reference {money(case['reference_monthly'])}, computed {money(case['computed_monthly'])} per month")
        for line in case["lines"]:
            if abs(line["difference"]) >= 0.01:
                print(f"  {line['category']:14} {money(line['reference']):>9} -> {money(line['computed']):>9}  {line['why']}")


def cmd_report(args) -> int:
    prices = load_prices(args.region)
    results = []
    for environment in args.env or ["staging", "production"]:
        resolved = resolve(environment)
        results.append(estimate(resolved["settings"], prices).to_dict(float(resolved["budget"])))
    total = {asg: round(sum(r["monthly"][asg] for r in results), 2) for asg in ("min", "desired", "max")}
    # Each environment has its share of the yearly credit; together they make the budget.
    budget = sum(r["budget_yearly"] for r in results)
    report = {
        "prices": {k: prices[k] for k in ("region", "as_of", "source")},
        "environments": results,
        "total_monthly": total,
        "total_yearly": {asg: round(v * 12, 2) for asg, v in total.items()},
        "budget_yearly": budget,
        "budget_share_at_max": round(total["max"] * 12 / budget, 4),
        "reference_comparison": comparison(results),
    }
    print(f"ChatMRPT cost report: prices of {prices['region']} as of {prices['as_of']}")
    for data in results:
        print_environment(data)
    print(f"\nall environments: {money(total['desired'])} per month now, {money(total['max'])} with every ASG at max;"
          f" {money(total['max'] * 12)} a year = {report['budget_share_at_max']:.1%} of {money(budget)}")
    print_comparison(report["reference_comparison"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nJSON: {args.json}")
    if args.chart:
        Path(args.chart).write_text(chart_svg(report))
        print(f"chart: {args.chart}")
    return 0


def item_changes(before: dict, after: dict) -> list[dict]:
    """Per item, its monthly cost now and at ASG max, before and after (0 where absent)."""
    rows = []
    names = [r["item"] for r in before["items"]["max"]]
    names += [r["item"] for r in after["items"]["max"] if r["item"] not in names]
    for name in names:
        row = {"item": name}
        for side, data in (("before", before), ("after", after)):
            for asg in ("desired", "max"):
                found = [r["monthly"] for r in data["items"][asg] if r["item"] == name]
                row[f"{side}_{asg}"] = found[0] if found else 0.0
        row["change_desired"] = round(row["after_desired"] - row["before_desired"], 2)
        row["change_max"] = round(row["after_max"] - row["before_max"], 2)
        rows.append(row)
    return rows


def cmd_diff(args) -> int:
    prices = load_prices(args.region)
    environments = args.env or ["staging", "production"]
    with ThreadPoolExecutor(max_workers=4) as pool:   # each resolve is an Ansible run
        befores = list(pool.map(resolve, environments))
        afters = list(pool.map(lambda e: resolve(e, tuple(args.extra_vars)), environments))
    said = " ".join(f"-e {value}" for value in args.extra_vars)
    results = []
    for environment, b, a in zip(environments, befores, afters):
        try:
            before = estimate(b["settings"], prices).to_dict(float(b["budget"]))
            after = estimate(a["settings"], prices).to_dict(float(a["budget"]))
        except PriceError as error:
            raise SystemExit(f"{environment}: {error}") from None
        rows = item_changes(before, after)
        results.append({"environment": environment, "extra_vars": args.extra_vars, "items": rows,
                        "monthly": {"before": before["monthly"], "after": after["monthly"]},
                        "yearly_max": {"before": before["yearly"]["max"], "after": after["yearly"]["max"]},
                        "budget_yearly": {"before": before["budget_yearly"], "after": after["budget_yearly"]}})
        print(f"\n{environment}: what `{said}` changes, per month")
        changed = [r for r in rows if r["change_desired"] or r["change_max"]]
        if not changed:
            print("  nothing: the same resources at the same prices")
            continue
        width = max(len(r["item"]) for r in changed + [{"item": "total"}])
        print(f"  {'item':{width}}  {'now':>21}  {'at ASG max':>21}  {'change at max':>13}")
        total = {"item": "total", "before_desired": before["monthly"]["desired"],
                 "after_desired": after["monthly"]["desired"], "before_max": before["monthly"]["max"],
                 "after_max": after["monthly"]["max"]}
        for r in changed + [total]:
            change = r["after_max"] - r["before_max"]
            print(f"  {r['item']:{width}}  {money(r['before_desired']):>9} -> {money(r['after_desired']):>9}"
                  f"  {money(r['before_max']):>9} -> {money(r['after_max']):>9}  {change:>+13,.2f}")
        print(f"  yearly at ASG max {money(before['yearly']['max'])} -> {money(after['yearly']['max'])}: "
              f"{before['budget_share_at_max']:.1%} -> {after['budget_share_at_max']:.1%} of the "
              f"{money(after['budget_yearly'])} yearly budget")
    if args.json:
        Path(args.json).write_text(json.dumps({"prices": {k: prices[k] for k in ("region", "as_of")},
                                               "environments": results}, indent=2) + "\n")
        print(f"\nJSON: {args.json}")
    return 0


def cmd_estimate(args) -> int:
    """Settings JSON on stdin -> the estimate as JSON (the budget guard's input)."""
    payload = json.load(sys.stdin)
    try:
        data = estimate(payload["settings"], load_prices(args.region)).to_dict(float(payload["budget"]))
    except PriceError as error:
        print(json.dumps({"error": str(error)}))
        return 2
    data["biggest_at_max"] = estimate(payload["settings"], load_prices(args.region)).biggest("max")
    print(json.dumps(data))
    return 0


def cmd_refresh(args) -> int:
    from chatmrpt_cost.refresh import refresh

    path = refresh(args.region)
    print(f"prices written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatmrpt_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--region", default="us-east-2")
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="cost of each environment, as a table and JSON")
    report.add_argument("--env", action="append", choices=["local", "staging", "production"])
    report.add_argument("--json", help="write the report as JSON to this file")
    report.add_argument("--chart", help="write a bar chart (SVG) of each environment to this file")
    diff = sub.add_parser("diff", help="what a change of variables costs, per item")
    diff.add_argument("--env", action="append", choices=["local", "staging", "production"])
    diff.add_argument("-e", "--extra-vars", action="append", required=True, dest="extra_vars",
                      help="VAR=VALUE, JSON or @FILE, as ansible-playbook -e takes it (repeatable)")
    diff.add_argument("--json", help="write the changes as JSON to this file")
    sub.add_parser("estimate", help="settings JSON on stdin -> estimate JSON")
    sub.add_parser("refresh", help="refresh the price table from the AWS Price List API")
    args = parser.parse_args(argv)
    return {"report": cmd_report, "diff": cmd_diff, "estimate": cmd_estimate,
            "refresh": cmd_refresh}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
