"""Rolling deploy (playbooks/deploy.yml) on the shared local estate, under steady requests
through its load balancer (HAProxy following the target group): no request may fail.

Order matters (the tests share the estate and run top to bottom): check mode changes
nothing; bad input is refused before anything changes; a new release reaches every host;
the same release again changes nothing; a broken release stops after the first host,
which is rolled back; the lab's own release is deployed again at the end, so the estate
is left converged (site.yml: 0 changed).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from emulator import client
from helpers import ROOT
from traffic import Traffic

pytestmark = pytest.mark.slow

APP = "/srv/chatmrpt/ChatMRPT"
RELEASES = "/srv/chatmrpt/chatmrpt_releases"
DEPLOY = "playbooks/deploy.yml"
# The drain task of the deploy role (a role's task shows as `TASK [<role> : <name>]`).
DRAIN_TASK = "TASK [deploy : Deregister the host and wait until the target group drained it]"
# Fast health gate for the broken release: it never becomes healthy, waiting 60 s proves nothing.
FAST_GATE = ["-e", "app_health_retries=3", "-e", "app_health_delay=1"]
STRIP_TOP = ("-e", "app_release_archive_strip_components=1")


def archive_of(source: Path, target: Path) -> Path:
    """A release archive of a sample-app tree under one top directory, as GitHub makes them
    (deployed with STRIP_TOP; lab.py builds the lab's own release without one)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in source.rglob("*") if "__pycache__" not in p.parts):
            tar.add(str(path), arcname=f"{target.name.removesuffix('.tar.gz')}/{path.relative_to(source)}",
                    recursive=False)
    target.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return target


def make_release(tmp: Path, version: str, degraded: bool = False) -> tuple[Path, str]:
    """tests/sample_app with another VERSION (and a DEGRADED marker: /health answers 200
    with overall=degraded); returns the archive and the release id the app role gives it."""
    source = tmp / f"src-{version}"
    shutil.copytree(ROOT / "tests" / "sample_app", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "VERSION").write_text(version + "\n")
    if degraded:
        (source / "DEGRADED").write_text("this release reports overall=degraded\n")
    archive = archive_of(source, tmp / f"sample-app-{version}.tar.gz")
    return archive, "archive-" + hashlib.sha1(archive.read_bytes()).hexdigest()[:12]


def podman(estate, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=estate.env, capture_output=True, text=True, timeout=120)


def hosts_of(estate) -> list[str]:
    out = podman(estate, "ps", "--filter", f"label=io.chatmrpt.lab={estate.lab['name']}", "--format", "{{.Names}}")
    return sorted(out.stdout.split())


def host_state(estate, host: str) -> dict:
    """The release the host's stable link names, the VERSION gunicorn serves, the releases on disk."""
    script = (
        "import json, os, urllib.request;"
        f"v = json.load(urllib.request.urlopen('http://127.0.0.1:8000/version', timeout=10))['version'];"
        f"print(json.dumps({{'current': os.path.basename(os.readlink('{APP}')), 'version': v,"
        f" 'releases': sorted(os.listdir('{RELEASES}'))}}))"
    )
    proc = podman(estate, "exec", host, "python3", "-c", script)
    assert proc.returncode == 0, f"{host}: {proc.stderr}"
    return json.loads(proc.stdout)


def target_health(estate) -> dict[str, str]:
    elb = client(estate.env, "elbv2", estate.env["AWS_REGION"])
    group = elb.describe_target_groups(Names=["ChatMRPT-Local-TG"])["TargetGroups"][0]
    health = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
    return {t["Target"]["Id"]: t["TargetHealth"]["State"] for t in health}


def lb_servers(estate) -> dict[str, str]:
    """HAProxy's own view (admin socket): server -> status."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(Path(estate.lab["lb_config"]).parent / "haproxy.sock"))
        sock.sendall(b"show stat\n")
        data = sock.makefile(encoding="utf-8").read()
    rows = [line.split(",") for line in data.lstrip("# ").splitlines() if line]
    header = rows[0]
    return {r[1]: r[header.index("status")] for r in rows[1:] if r[0] == "app" and r[1].startswith("i-")}


def assert_serving(estate, hosts: list[str]) -> None:
    assert target_health(estate) == {h: "healthy" for h in hosts}
    # "UP 1/3": still UP and serving, one health check missed (a busy worker under load).
    assert {h: status.split()[0] for h, status in lb_servers(estate).items()} == {h: "UP" for h in hosts}


def deploy_under_load(estate, *args: str):
    with Traffic(estate.lb_url, path="/version", workers=2, interval=0.05, timeout=10.0) as traffic:
        run = estate.playbook(DEPLOY, *args)
    return run, traffic.result


def report(capsys, what: str, result) -> None:
    with capsys.disabled():
        print(f"\n{what}: {result.summary()} (versions seen: {result.versions}, {result.duration:.0f} s)")


@pytest.fixture(scope="module")
def estate(local_estate):
    hosts = hosts_of(local_estate)
    assert len(hosts) == 2, f"the local estate should run two app instances, found {hosts}"
    baseline = {h: host_state(local_estate, h) for h in hosts}
    assert len({s["current"] for s in baseline.values()}) == 1, baseline
    local_estate.hosts = hosts
    local_estate.lab_release = next(iter(baseline.values()))["current"]
    local_estate.lab_version = next(iter(baseline.values()))["version"]
    yield local_estate
    # Safety net for the next tests: the lab's own release everywhere, when a test stopped
    # before the last one put it back.
    if any(host_state(local_estate, h)["current"] != local_estate.lab_release for h in hosts):
        local_estate.playbook(DEPLOY)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("releases")
    return {"good": make_release(tmp, "2.0.0-deploytest"), "broken": make_release(tmp, "2.0.1-broken", degraded=True)}


def test_check_mode_shows_the_plan_and_changes_nothing(estate, releases):
    archive, release = releases["good"]
    config_before = Path(estate.lab["lb_config"]).read_text()
    run = estate.playbook(DEPLOY, "--check", "-e", f"app_release_archive={archive}", *STRIP_TOP)
    assert run.returncode == 0, run.output[-6000:]
    assert run.changed == 0, run.changed_tasks()
    for host in estate.hosts:
        assert re.search(rf"PLAN {host}: {estate.lab_release} -> {release} \(deploy", run.output), run.output[-6000:]
        state = host_state(estate, host)
        assert state["current"] == estate.lab_release and release not in state["releases"], state
    assert "DEPLOY PLAN" in run.output
    assert Path(estate.lab["lb_config"]).read_text() == config_before
    assert_serving(estate, estate.hosts)


@pytest.mark.parametrize(("setting", "message"), [
    ("deploy_batch_size=0", "deploy_batch_size must be an integer >= 1 or a percentage 1%-100% (got '0')"),
    # typed by the role's argument spec, before its own rules
    ("deploy_healthy_timeout=soon",
     "argument 'deploy_healthy_timeout' is of type str and we were unable to convert to int"),
], ids=["batch-size-0", "healthy-timeout-not-a-number"])
def test_bad_input_is_refused_before_anything_changes(estate, releases, setting, message):
    archive, release = releases["good"]
    config_before = Path(estate.lab["lb_config"]).read_text()
    run = estate.playbook(DEPLOY, "-e", setting, "-e", f"app_release_archive={archive}", *STRIP_TOP)
    assert run.returncode != 0
    failures = [" ".join(line.split()) for line in run.failures()]
    assert len(failures) == 1 and message in failures[0], run.output[-6000:]
    assert run.changed == 0, run.changed_tasks()
    assert "PLAN " not in run.output and DRAIN_TASK not in run.output  # stopped before the hosts
    for host in estate.hosts:
        state = host_state(estate, host)
        assert state["current"] == estate.lab_release and release not in state["releases"], state
    assert Path(estate.lab["lb_config"]).read_text() == config_before
    assert_serving(estate, estate.hosts)


def test_deploy_under_load_drops_no_request(estate, releases, capsys):
    archive, release = releases["good"]
    run, result = deploy_under_load(estate, "-e", f"app_release_archive={archive}", *STRIP_TOP)
    report(capsys, "deploy under load", result)
    assert run.returncode == 0, run.output[-8000:]
    assert result.total >= 50 and result.failed == 0, result.summary()
    # Both versions answered during the rollout, the new one last everywhere.
    assert set(result.versions) == {estate.lab_version, "2.0.0-deploytest"}, result.versions
    for host in estate.hosts:
        state = host_state(estate, host)
        assert (state["current"], state["version"]) == (release, "2.0.0-deploytest"), state
    assert f"DEPLOY OK release={release} deployed=[{','.join(estate.hosts)}]" in run.output
    # Each host left the target group and came back (one batch at a time).
    assert run.output.count(DRAIN_TASK) == 2
    assert_serving(estate, estate.hosts)


def test_same_release_again_changes_nothing(estate, releases):
    archive, release = releases["good"]
    run = estate.playbook(DEPLOY, "-e", f"app_release_archive={archive}", *STRIP_TOP)
    assert run.returncode == 0, run.output[-6000:]
    assert run.changed == 0, run.changed_tasks()
    assert DRAIN_TASK not in run.output  # no drain cycle
    assert f"unchanged=[{','.join(estate.hosts)}]" in run.output
    assert_serving(estate, estate.hosts)


def test_broken_release_stops_after_the_first_host_and_rolls_it_back(estate, releases, capsys, drill):
    """Also the drill "a deploy of a release that fails its health gate" (issue #8)."""
    good = releases["good"][1]
    archive, broken = releases["broken"]
    run, result = deploy_under_load(estate, "-e", f"app_release_archive={archive}", *STRIP_TOP, *FAST_GATE)
    report(capsys, "broken deploy under load", result)
    assert run.returncode != 0, run.output[-6000:]
    assert result.total >= 20 and result.failed == 0, result.summary()
    failed = re.search(r"DEPLOY FAILED host=(i-\w+) stage=deploy release=(\S+) rolled_back_to=(\S+?)\.", run.output)
    assert failed, run.output[-6000:]
    first = failed.group(1)
    (other,) = set(estate.hosts) - {first}
    assert failed.groups()[1:] == (broken, good)
    assert "overall=degraded" in run.output  # the JSON verdict, not the 200, stopped it
    states = {h: host_state(estate, h) for h in estate.hosts}
    # The first host got the broken release and is back on the good one; the other never got it.
    assert broken in states[first]["releases"], states[first]
    assert broken not in states[other]["releases"], states[other]
    for state in states.values():
        assert (state["current"], state["version"]) == (good, "2.0.0-deploytest"), states
    assert "2.0.1-broken" not in result.versions  # never served through the load balancer
    assert_serving(estate, estate.hosts)
    drill.survived("deploy failing its health gate")


def test_deploying_the_lab_release_again_restores_the_estate(estate, capsys):
    run, result = deploy_under_load(estate)
    report(capsys, "redeploy of the lab release under load", result)
    assert run.returncode == 0, run.output[-8000:]
    assert result.failed == 0, result.summary()
    for host in estate.hosts:
        state = host_state(estate, host)
        assert (state["current"], state["version"]) == (estate.lab_release, estate.lab_version), state
    assert_serving(estate, estate.hosts)
