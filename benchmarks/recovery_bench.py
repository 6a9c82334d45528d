#!/usr/bin/env python3
"""Recovery benchmark: the recovery drill on the local estate, timed against the claim.

The hand-built estate claimed "recovery < 10 min from AMI". This script measures it on the
running local estate (the lab that the LAB_* variables select; `--up` starts it and
converges site.yml first):

1. a golden AMI with its local image must exist (aws_compute launches the replacement from
   it); if none does, playbooks/golden_ami.yml builds one first: timed and printed
   separately, not counted;
2. marker rows are written through the load balancer into every database (sessions +
   messages, users, survey, prepost), pinned to the victim with its stickiness cookie
   (AWSALB=<instance id>), and found on the victim;
3. playbooks/recovery_drill.yml runs (fresh backup of the victim, terminate, launch,
   configure, restore, register; its report gives the recovery time and the phases);
4. checks: every marker row is on the replacement, its row counts equal the victim's before
   the drill, the replacement and the load balancer answer /health `healthy`, and the
   target group holds aws_compute's instances, each healthy.

Prints the recovery time next to the claimed 600 s (ratio). No timed assertion: a time over
the claim is printed as such. Exit codes: 0 ok; 1 a data or health check failed; 2 the drill
(or the setup) failed, or bad usage.

    .venv/bin/python benchmarks/recovery_bench.py [--up] [--victim ChatMRPT-Local-App-2] [--markers 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PROJECT = "chatmrpt"
ENVIRONMENT = "local"
PREFIX = "ChatMRPT-Local"
APP_PORT = 8000
TARGET_GROUP = f"{PREFIX}-TG"
# The golden AMIs aws_compute chooses from for this environment (group_vars/all/aws_compute.yml).
GOLDEN_NAME = f"{PROJECT}-golden-{ENVIRONMENT}-*"
# The SQLite files of the sample app under instance/ and the table each marker goes to.
INSTANCE_DIR = "/srv/chatmrpt/chatmrpt_shared/instance"


def say(message: str) -> None:
    print(message, flush=True)


def lab_environment() -> dict[str, str]:
    """The environment `make demo` runs its playbooks in, for the lab that LAB_* select."""
    base = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "CONTAINERS_CONF": str(ROOT / "lab" / "containers.conf"),
        "ANSIBLE_FORCE_COLOR": "false",
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
    }
    exports = subprocess.run([str(VENV_BIN / "python"), "lab/lab.py", "env"], cwd=ROOT, env=base,
                             capture_output=True, text=True, check=True)
    for line in exports.stdout.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        base[key] = value.strip("'\"")
    return base


def run(cmd: list[str], env: dict[str, str], log: Path | None = None) -> tuple[int, str, float]:
    """Runs a command from the project root; returns (rc, output, seconds)."""
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(output)
    return proc.returncode, output, time.monotonic() - started


def http(method: str, url: str, body: bytes | None = None, cookie: str | None = None,
         timeout: float = 10.0) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method)
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}
    except (OSError, ValueError) as error:
        return 0, {"error": str(error)}


class Estate:
    """The local estate through boto3 (the emulator), podman and HTTP."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        region = env.get("AWS_REGION", "us-east-2")
        endpoint = env["AWS_ENDPOINT_URL"]
        session = boto3.session.Session(aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "testing"),
                                        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
                                        region_name=region)
        self.ec2 = session.client("ec2", endpoint_url=endpoint)
        self.elbv2 = session.client("elbv2", endpoint_url=endpoint)
        self.lb_url = f"http://127.0.0.1:{env['CHATMRPT_LAB_LB_PORT']}"

    def app_instances(self) -> list[dict]:
        reservations = self.ec2.describe_instances(Filters=[
            {"Name": "tag:Project", "Values": [PROJECT]},
            {"Name": "tag:Environment", "Values": [ENVIRONMENT]},
            {"Name": "tag:Role", "Values": ["app"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ])["Reservations"]
        return [instance for reservation in reservations for instance in reservation["Instances"]]

    def find(self, victim: str) -> dict | None:
        for instance in self.app_instances():
            name = next((tag["Value"] for tag in instance.get("Tags", []) if tag["Key"] == "Name"), "")
            if victim in (name, instance["InstanceId"]):
                return {"id": instance["InstanceId"], "name": name, "ip": instance["PrivateIpAddress"]}
        return None

    def golden_image(self) -> str | None:
        """The newest golden AMI whose local image exists (what the replacement starts from)."""
        images = self.ec2.describe_images(Owners=["self"], Filters=[
            {"Name": "name", "Values": [GOLDEN_NAME]},
            {"Name": "tag:Project", "Values": [PROJECT]},
            {"Name": "tag:Environment", "Values": [ENVIRONMENT]},
            {"Name": "state", "Values": ["available"]},
        ])["Images"]
        if not images:
            return None
        newest = max(images, key=lambda image: image["CreationDate"])["ImageId"]
        exists = subprocess.run(["podman", "image", "exists", f"localhost/chatmrpt-golden:{newest}"],
                                env=self.env, capture_output=True)
        return newest if exists.returncode == 0 else None

    def target_health(self) -> dict[str, str]:
        arn = self.elbv2.describe_target_groups(Names=[TARGET_GROUP])["TargetGroups"][0]["TargetGroupArn"]
        descriptions = self.elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        return {item["Target"]["Id"]: item["TargetHealth"]["State"] for item in descriptions}

    def sql(self, instance_id: str, database: str, query: str, *params: str) -> list[list]:
        """A read-only query on an instance's SQLite file (its container), as JSON rows."""
        script = ("import json, sqlite3, sys; c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True);"
                  " print(json.dumps(c.execute(sys.argv[2], sys.argv[3:]).fetchall()))")
        proc = subprocess.run(["podman", "exec", instance_id, "python3", "-c", script,
                               f"{INSTANCE_DIR}/{database}", query, *params],
                              env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"query on {instance_id} failed: {proc.stderr.strip()}")
        return json.loads(proc.stdout)


def write_markers(estate: Estate, victim: dict, count: int, run_id: str) -> dict[str, list]:
    """Marker rows through the load balancer, pinned to the victim by its stickiness cookie."""
    cookie = f"AWSALB={victim['id']}"
    markers: dict[str, list] = {"sessions": [], "users": [], "survey": [], "prepost": []}
    for index in range(count):
        content = f"recovery-marker-{run_id}-{index}"
        for kind, path, body, key in (("sessions", "/api/sessions", content.encode(), "session_id"),
                                      ("users", "/api/users", b"", "id"),
                                      ("survey", "/api/survey", b"", "id"),
                                      ("prepost", "/api/prepost", b"", "id")):
            status, answer = http("POST", estate.lb_url + path, body, cookie)
            if status != 201 or key not in answer:
                raise RuntimeError(f"POST {path} through the load balancer answered {status} {answer}")
            markers[kind].append({"id": answer[key], "content": content} if kind == "sessions" else answer[key])
    return markers


def find_markers(estate: Estate, instance_id: str, markers: dict[str, list]) -> list[str]:
    """The markers missing on an instance (empty: all there)."""
    missing = []
    for marker in markers["sessions"]:
        rows = estate.sql(instance_id, "interactions.db",
                          "SELECT count(*) FROM sessions s JOIN messages m ON m.session_id = s.session_id"
                          " WHERE s.session_id = ? AND m.content = ?", marker["id"], marker["content"])
        if rows[0][0] != 1:
            missing.append(f"interactions.db session {marker['id']} ({marker['content']})")
    checks = (("users", "users.db", "SELECT count(*) FROM users WHERE id = ?"),
              ("survey", "survey.db", "SELECT count(*) FROM survey_sessions s JOIN survey_responses r"
                                      " ON r.survey_session_id = s.id WHERE s.id = ?"),
              ("prepost", "prepost_test.db", "SELECT count(*) FROM prepost_participants p JOIN prepost_responses r"
                                             " ON r.participant_id = p.id WHERE p.id = ?"))
    for kind, database, query in checks:
        for marker in markers[kind]:
            if estate.sql(instance_id, database, query, str(marker))[0][0] != 1:
                missing.append(f"{database} {kind} {marker}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--up", action="store_true", help="start the lab and converge site.yml first")
    parser.add_argument("--victim", default=f"{PREFIX}-App-1", help="Name tag or instance id (default %(default)s)")
    parser.add_argument("--markers", type=int, default=5, help="marker rows per database (default %(default)s)")
    parser.add_argument("--claimed", type=float, default=600.0, help="claimed recovery time, s (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.markers < 1:
        parser.error("--markers must be 1 or more")

    env = lab_environment()
    state = Path(env["CHATMRPT_LAB_STATE_DIR"])
    playbook = [str(VENV_BIN / "ansible-playbook"), "-i", "inventories/local"]
    if args.up:
        for step in ([str(VENV_BIN / "python"), "lab/lab.py", "up"], playbook + ["playbooks/site.yml"]):
            rc, output, seconds = run(step, env)
            if rc != 0:
                say(output[-4000:])
                say(f"setup failed: {' '.join(step)} (rc {rc})")
                return 2
    estate = Estate(env)
    results: dict = {"claimed_seconds": args.claimed}

    # 1. The golden image the replacement starts from (built first if missing, not counted).
    golden = estate.golden_image()
    if golden is None:
        if not (ROOT / "playbooks" / "golden_ami.yml").exists():
            say("golden AMI: none, and no playbooks/golden_ami.yml to build one: the replacement starts from the base image")
        else:
            say("golden AMI: none with a local image yet: building one with playbooks/golden_ami.yml (not counted)")
            rc, output, seconds = run(playbook + ["playbooks/golden_ami.yml"], env, state / "recovery-bench-golden.log")
            if rc != 0:
                say(output[-4000:])
                say(f"golden AMI build failed (rc {rc}, log {state / 'recovery-bench-golden.log'})")
                return 2
            golden = estate.golden_image()
            results["golden_build_seconds"] = round(seconds, 1)
            say(f"golden AMI build: {seconds:.1f} s (not part of the recovery time) -> {golden}")
    else:
        say(f"golden AMI: {golden} (localhost/chatmrpt-golden:{golden} exists)")
    results["golden_ami"] = golden

    # 2. Marker data on the victim, written through the load balancer.
    victim = estate.find(args.victim)
    if victim is None:
        say(f"no running app instance {args.victim} in the local estate: {[i['InstanceId'] for i in estate.app_instances()]}")
        return 2
    run_id = uuid.uuid4().hex[:8]
    try:
        markers = write_markers(estate, victim, args.markers, run_id)
        missing = find_markers(estate, victim["id"], markers)
    except RuntimeError as error:
        say(f"writing the marker data failed: {error}")
        return 1
    if missing:
        say(f"the markers did not reach the victim {victim['id']} (stickiness cookie ignored?): {missing[:5]}")
        return 1
    status, before = http("GET", f"http://{victim['ip']}:{APP_PORT}/api/stats")
    if status != 200:
        say(f"GET /api/stats on the victim answered {status} {before}")
        return 1
    marker_rows = sum(len(rows) for rows in markers.values())
    say(f"markers: {marker_rows} marker rows (run {run_id}) written through {estate.lb_url} to the victim "
        f"{victim['name']} ({victim['id']}); its row counts: {json.dumps(before, sort_keys=True)}")

    # 3. The drill.
    with tempfile.TemporaryDirectory() as tmp:
        report_file = Path(tmp) / "drill.json"
        log = state / "recovery-bench-drill.log"
        rc, output, wall = run(playbook + ["playbooks/recovery_drill.yml", "-e", f"recovery_drill_victim={victim['name']}",
                                          "-e", f"recovery_drill_claimed_seconds={int(args.claimed)}",
                                          "-e", f"recovery_drill_report_file={report_file}"], env, log)
        if rc != 0 or not report_file.exists():
            say(output[-6000:])
            say(f"recovery drill FAILED (rc {rc}); full log: {log}")
            return 2
        report = json.loads(report_file.read_text())
    seconds = float(report["recovery_seconds"])
    replacement = report["replacement"]
    results.update(report=report, drill_wall_seconds=round(wall, 1), markers=markers)
    verdict = "within the claim" if seconds <= args.claimed else "OVER the claim"
    say(f"recovery time: {seconds:.1f} s (claimed: under {args.claimed:.0f} s; {seconds / args.claimed:.2f} of the claim, "
        f"{verdict}) victim={victim['id']} replacement={replacement['id']} image={replacement['image_name']}")
    order = ["terminate", "launch", "boot", "configure", "restore", "register"]
    say("phases: " + ", ".join(f"{name} {report['phases'][name]} s" for name in order if name in report["phases"])
        + f"; whole drill with the fresh backup: {wall:.1f} s")

    # 4. Data and health after the drill.
    failures = []
    try:
        missing = find_markers(estate, replacement["id"], markers)
    except RuntimeError as error:
        missing = [str(error)]
    if missing:
        failures.append(f"{len(missing)} marker rows missing on the replacement: {missing[:5]}")
    status, after = http("GET", f"http://{replacement['private_ip']}:{APP_PORT}/api/stats")
    if status != 200 or after != before:
        failures.append(f"row counts on the replacement {after} (HTTP {status}) differ from the victim's before {before}")
    status, health = http("GET", f"http://{replacement['private_ip']}:{APP_PORT}/health")
    if status != 200 or health.get("overall") != "healthy":
        failures.append(f"the replacement's /health answered {status} overall={health.get('overall')}")
    for _ in range(4):
        status, health = http("GET", f"{estate.lb_url}/health")
        if status != 200 or health.get("overall") != "healthy":
            failures.append(f"the load balancer's /health answered {status} overall={health.get('overall')}")
            break
    running = {instance["InstanceId"] for instance in estate.app_instances()}
    targets = estate.target_health()
    if replacement["id"] not in running or victim["id"] in running:
        failures.append(f"running app instances {sorted(running)}: expected the replacement, not the victim")
    unhealthy = {target: state for target, state in targets.items() if target in running and state != "healthy"}
    if set(targets) != running or unhealthy:
        failures.append(f"target group {targets} does not hold exactly the running app instances {sorted(running)} healthy")
    results.update(failures=failures, instances=sorted(running))
    if failures:
        say("data check: FAILED")
        for failure in failures:
            say(f"  - {failure}")
    else:
        databases = ", ".join(sorted(after))
        say(f"data check: {marker_rows} marker rows intact on the replacement, row counts equal the victim's "
            f"before the drill ({databases}); {len(running)} app instances serving, all healthy in {TARGET_GROUP}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
