"""Behaviour of role `app` with the sample app: what an operator would check.

Runs after converge, idempotence and check (Molecule's verify). The later tests change
the host (new releases committed to the sample repository, deploy, rollback), in file
order; each leaves the host healthy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCENARIO = Path(__file__).resolve().parent.parent
ROOT = SCENARIO.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import PlaybookRun, base_env, molecule_inventory  # noqa: E402

NAME = "chatmrpt-mol-app"
USER = "chatmrpt"
APP = "/srv/chatmrpt/ChatMRPT"
VENV = "/srv/chatmrpt/chatmrpt_env"
RELEASES = "/srv/chatmrpt/chatmrpt_releases"
SHARED = "/srv/chatmrpt/chatmrpt_shared"
WORK = "/srv/sample-work"
WORKERS = 3
ENV = base_env(
    ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
    CONTAINERS_CONF=str(ROOT / "lab" / "containers.conf"),
)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, check=check, timeout=300)


def http(host, path: str, method: str = "GET") -> tuple[int, dict]:
    """A request from inside the container: (status, parsed JSON body)."""
    script = (
        "import sys, urllib.request\n"
        "req = urllib.request.Request('http://127.0.0.1:8000' + sys.argv[1], method=sys.argv[2],"
        " data=b'hello' if sys.argv[2] == 'POST' else None)\n"
        "with urllib.request.urlopen(req, timeout=10) as r:\n"
        "    print(r.status); print(r.read().decode())\n"
    )
    out = host.check_output("python3 -c %s %s %s", script, path, method)
    status, body = out.split("\n", 1)
    return int(status), json.loads(body)


def unit_property(host, name: str) -> str:
    """A property of the chatmrpt unit as systemd holds it (`systemctl show`)."""
    return host.check_output(f"systemctl show --property {name} --value chatmrpt")


def main_pid(host) -> int:
    return int(unit_property(host, "MainPID"))


def workers(host) -> list[int]:
    pid = main_pid(host)
    return [int(p) for p in host.check_output(f"cat /proc/{pid}/task/{pid}/children").split()]


def playbook(name: str, *args: str) -> PlaybookRun:
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), *molecule_inventory(NAME), str(SCENARIO / name), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def commit(host, message: str, script: str) -> str:
    """Change the sample app's work tree, commit and push to the repository the role uses."""
    host.check_output(f"cd {WORK} && {script} && git add -A && git commit -q -m '{message}' && git push -q origin HEAD:main")
    return host.check_output(f"git -C {WORK} rev-parse HEAD")[:12]


class Load:
    """Requests from inside the container (tests/load.py) while something else happens."""

    def __init__(self, host, minimum: int = 200):
        self.host = host
        self.stop_file = f"/tmp/stop-{time.monotonic_ns()}"
        podman("cp", str(Path(__file__).with_name("load.py")), f"{NAME}:/tmp/load.py")
        self.proc = subprocess.Popen(
            ["podman", "exec", NAME, "python3", "/tmp/load.py", "--stop-file", self.stop_file, "--min", str(minimum)],
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1)

    def finish(self) -> dict:
        time.sleep(1)
        self.host.check_output(f"touch {self.stop_file}")
        out, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, err
        return json.loads(out)


def test_service_enabled_and_running(host):
    service = host.service("chatmrpt")
    assert service.is_enabled
    assert service.is_running


def test_gunicorn_listens_on_8000_as_the_app_user(host):
    assert host.socket("tcp://0.0.0.0:8000").is_listening
    pid = main_pid(host)
    assert host.check_output(f"stat -c %U /proc/{pid}") == USER
    assert "gunicorn" in host.file(f"/proc/{pid}/cmdline").content_string


def test_unit_reads_the_environment_file_and_restarts(host):
    unit = host.check_output("systemctl cat chatmrpt")
    assert f"EnvironmentFile={SHARED}/.env" in unit
    assert "Restart=always" in unit
    assert "RestartSec=10" in unit
    assert "ExecReload=/bin/kill -s HUP $MAINPID" in unit
    assert unit_property(host, "Restart") == "always"
    assert unit_property(host, "RestartUSec") == "10s"


def test_the_app_user_cannot_sudo_or_log_in(host):
    """The image's login user (admin here, ec2-user on Amazon Linux) has passwordless sudo;
    the app's own user has none, no login shell and no group that sudoers could name."""
    user = host.user(USER)
    assert user.shell == "/usr/sbin/nologin" and user.groups == [USER], (user.shell, user.groups)
    assert int(user.uid) < 1000, "not a system account"
    listed = host.run(f"sudo -l -U {USER}")
    assert listed.rc == 0 and "is not allowed to run sudo" in listed.stdout, listed.stdout
    attempt = host.run(f"runuser -u {USER} -- sudo -n true")
    assert attempt.rc != 0 and "password is required" in attempt.stderr, attempt.stdout + attempt.stderr
    # the control: the login user's sudo works, so the refusal above is the user's, not sudo's
    login = host.check_output("echo $SUDO_USER") or "admin"
    assert host.run(f"runuser -u {login} -- sudo -n true").rc == 0


def test_gunicorn_cannot_gain_privileges_nor_write_outside_its_data(host):
    """gunicorn and what it starts gain no privileges, and the whole file system is
    read-only to them (the release and its virtualenv included) except the shared data."""
    pid = main_pid(host)
    status = host.file(f"/proc/{pid}/status").content_string
    assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
    assert host.run("ls -d /tmp/systemd-private-*-chatmrpt.service-*").rc == 0, "no private /tmp"
    # gunicorn's own mounts (its namespace, /proc/<pid>/mountinfo): the mount that holds a
    # path is the longest mount point above it; only the shared data's is writable.
    mounts = {fields[4]: fields[5].split(",")[0] for fields in map(
        str.split, host.file(f"/proc/{pid}/mountinfo").content_string.splitlines())}

    def mode(path):
        return mounts[max((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len)]

    release = host.file(APP).linked_to
    assert {path: mode(path) for path in ("/etc", "/usr", "/srv/chatmrpt", release, f"{VENV}/bin/gunicorn",
                                          f"{SHARED}", f"{SHARED}/instance/interactions.db")} == {
        "/etc": "ro", "/usr": "ro", "/srv/chatmrpt": "ro", release: "ro", f"{VENV}/bin/gunicorn": "ro",
        SHARED: "rw", f"{SHARED}/instance/interactions.db": "rw"}
    # /home and /root: hidden (an empty, read-only mount over each)
    assert mode("/home") == "ro" and mounts.get("/home") and mounts.get("/root"), mounts
    # what no_new_privs does to passwordless sudo, shown on the login user that has it (the
    # control: without the flag its sudo works)
    login = host.check_output("echo $SUDO_USER") or "admin"
    assert host.run(f"setpriv --reuid={login} --regid={login} --init-groups sudo -n true").rc == 0
    confined = host.run(f"setpriv --reuid={login} --regid={login} --init-groups --no-new-privs sudo -n true")
    assert confined.rc != 0 and "no new privileges" in confined.stderr, confined.stdout + confined.stderr


def test_env_file_is_private_and_reaches_gunicorn(host):
    env = host.file(f"{SHARED}/.env")
    assert env.user == USER
    assert env.mode == 0o600
    assert host.file(f"{APP}/.env").linked_to == f"{SHARED}/.env"
    assert 'SECRET_KEY="molecule-secret-key"' in env.content_string  # pragma: allowlist secret
    assert f'GUNICORN_WORKERS="{WORKERS}"' in env.content_string
    # The hand-written unit's defect: .env never reached gunicorn's own environment.
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid(host)}/environ")
    assert f"GUNICORN_WORKERS={WORKERS}" in environ.splitlines()
    assert "LOG_LEVEL=INFO" in environ.splitlines()


def test_instance_is_persistent_and_holds_the_logs(host):
    assert host.file(f"{APP}").is_symlink
    assert host.file(f"{APP}/instance").linked_to == f"{SHARED}/instance"
    for path in (f"{SHARED}/instance", f"{SHARED}/instance/logs"):
        directory = host.file(path)
        assert directory.is_directory and directory.user == USER
    http(host, "/ping")
    time.sleep(0.5)
    assert "GET /ping" in host.file(f"{SHARED}/instance/logs/gunicorn-access.log").content_string
    assert "Booting worker" in host.file(f"{SHARED}/instance/logs/gunicorn-error.log").content_string


def test_the_app_writes_its_maps_through_the_read_only_release(host):
    """ChatMRPT's ITN pipeline writes under the release's app/static/visualizations: a link
    into the shared data, so the write succeeds while the release stays read-only."""
    status, body = http(host, "/api/visualizations", "POST")
    assert status == 201, body
    link = host.file(f"{APP}/app/static/visualizations")
    assert link.is_symlink and link.linked_to == f"{SHARED}/app/static/visualizations"
    written = host.file(f"{SHARED}/{body['file']}")
    assert written.exists and written.user == USER


def test_health_and_ping(host):
    status, body = http(host, "/health")
    assert status == 200
    assert body["overall"] == "healthy", body
    assert http(host, "/ping") == (200, {"status": "ok"})


def test_worker_count_matches_the_setting(host):
    assert len(workers(host)) == WORKERS


def test_requests_write_the_sqlite_databases(host):
    for path in ("/api/sessions", "/api/users", "/api/survey", "/api/prepost"):
        assert http(host, path, "POST")[0] == 201
    _, stats = http(host, "/api/stats")
    assert stats["interactions.db"]["sessions"] >= 1
    assert stats["interactions.db"]["messages"] >= 1
    assert stats["users.db"]["users"] >= 1
    assert stats["survey.db"]["survey_responses"] >= 1
    assert stats["prepost_test.db"]["prepost_participants"] >= 1
    for db in ("interactions.db", "users.db", "survey.db", "prepost_test.db"):
        assert host.file(f"{SHARED}/instance/{db}").user == USER


def test_graceful_reload_under_load_loses_no_request(host):
    before = set(workers(host))
    load = Load(host)
    host.check_output("systemctl reload chatmrpt")
    deadline = time.monotonic() + 60
    while set(workers(host)) & before and time.monotonic() < deadline:
        time.sleep(0.5)
    result = load.finish()
    assert result["failed"] == 0, result
    assert result["ok"] >= 200
    assert not set(workers(host)) & before, "the old workers are still running"
    assert set(result["pids"]) & before and set(result["pids"]) - before, f"the load did not span the reload: {result}"


def test_crashed_gunicorn_is_restarted_by_systemd(host):
    """systemd brings a killed gunicorn back after the role's RestartSec (10 s, checked by
    test_unit_reads_the_environment_file_and_restarts): shown by the restart counter, not by
    a clock (a busy machine only makes the restart later; the time is printed)."""
    restarts = int(unit_property(host, "NRestarts"))
    old = main_pid(host)
    host.check_output(f"kill -9 {old}")
    start = time.monotonic()
    while time.monotonic() - start < 120:
        if host.run("python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ping', timeout=2)\"").rc == 0 \
                and main_pid(host) not in (0, old):
            break
        time.sleep(0.5)
    print(f"gunicorn served again {time.monotonic() - start:.1f} s after the kill")
    assert main_pid(host) not in (0, old), "gunicorn was not restarted"
    assert int(unit_property(host, "NRestarts")) == restarts + 1


def release_status(*args: str) -> dict:
    """The `release` entry point's app_release_status (read-only)."""
    run = playbook("release.yml", *args)
    assert run.returncode == 0 and run.changed == 0, run.output[-3000:]
    found = re.search(r'"msg": "RELEASE_STATUS (.*)"$', run.output, re.M)
    assert found, run.output[-3000:]
    return json.loads(json.loads(f'"{found.group(1)}"'))


def test_deploy_of_a_new_release_loses_no_request(host):
    _, stats_before = http(host, "/api/stats")
    current = host.file(APP).linked_to.rsplit("/", 1)[1]
    before = release_status()
    assert (before["current"], before["target"], before["up_to_date"]) == (current, current, True), before
    assert before["target_source"] == "file:///srv/sample-app.git@main"
    release = commit(host, "release 2.0.0", "echo 2.0.0 > VERSION")
    # The `release` entry point sees the new commit on the remote before anything is deployed.
    planned = release_status()
    assert (planned["current"], planned["target"], planned["up_to_date"]) == (current, release, False), planned
    load = Load(host)
    run = playbook("deploy.yml")
    result = load.finish()
    assert run.returncode == 0, run.output[-3000:]
    assert result["failed"] == 0, result
    assert result["sequence"][-1] == "2.0.0" and "1.0.0" in result["sequence"], result
    assert http(host, "/version")[1]["version"] == "2.0.0"
    assert host.file(APP).linked_to == f"{RELEASES}/{release}"
    assert release_status()["up_to_date"] is True
    # The persistent data survived the switch.
    _, stats_after = http(host, "/api/stats")
    assert stats_after["interactions.db"]["sessions"] >= stats_before["interactions.db"]["sessions"] >= 1


def test_degraded_release_fails_the_health_gate_and_rollback_restores(host):
    release_2 = host.file(APP).linked_to
    commit(host, "release 3.0.0, degraded", "echo 3.0.0 > VERSION && touch DEGRADED")
    run = playbook("deploy.yml")
    assert run.returncode != 0
    assert run.recap[NAME]["failed"] == 1
    assert "overall=degraded" in run.output
    # The health response itself is in the message.
    assert "DEGRADED exists" in run.output and '"overall":"degraded"' in run.output.replace(" ", "")
    assert http(host, "/health")[1]["overall"] == "degraded"
    # One step back, under load: the previous release (2.0.0) again.
    load = Load(host, minimum=50)
    back = playbook("rollback.yml")
    result = load.finish()
    assert back.returncode == 0, back.output[-3000:]
    assert result["failed"] == 0, result
    assert host.file(APP).linked_to == release_2
    status, body = http(host, "/health")
    assert (status, body["overall"], body["version"]) == (200, "healthy", "2.0.0")
    history = json.loads(host.file(f"{RELEASES}/.history.json").content_string)
    assert [f"{RELEASES}/{entry['release']}" for entry in history] == [release_2]


def test_new_requirements_get_their_own_virtualenv_and_old_releases_are_pruned(host):
    old_venv = host.file(VENV).linked_to
    release_2 = host.file(APP).linked_to
    release = commit(host, "release 4.0.0, new requirements",
                     "echo 4.0.0 > VERSION && rm DEGRADED && echo '# 4.0.0' >> requirements.txt")
    run = playbook("deploy.yml")
    assert run.returncode == 0, run.output[-3000:]
    assert http(host, "/version")[1]["version"] == "4.0.0"
    new_venv = host.file(VENV).linked_to
    assert new_venv != old_venv
    assert new_venv in host.file(f"/proc/{main_pid(host)}/cmdline").content_string
    # app_keep_releases: 2 -> releases 2.0.0 and 4.0.0 stay; 1.0.0 and 3.0.0 are gone.
    history = json.loads(host.file(f"{RELEASES}/.history.json").content_string)
    assert [f"{RELEASES}/{entry['release']}" for entry in history] == [release_2, f"{RELEASES}/{release}"]
    listed = host.check_output(f"find {RELEASES} -mindepth 1 -maxdepth 1 -type d -not -name '.*' -printf '%f\\n'")
    assert sorted(listed.split()) == sorted(entry["release"] for entry in history)
    venvs = host.check_output(f"ls {RELEASES}/.venvs").split()
    assert sorted(venvs) == sorted({entry["venv"] for entry in history}) and len(venvs) == 2
    # Rolling back restores the old release's dependencies too (a restart: new interpreter).
    back = playbook("rollback.yml")
    assert back.returncode == 0, back.output[-3000:]
    assert host.file(VENV).linked_to == old_venv
    assert http(host, "/version")[1]["version"] == "2.0.0"
    assert old_venv in host.file(f"/proc/{main_pid(host)}/cmdline").content_string


def test_logrotate_rotates_the_gunicorn_logs(host):
    host.check_output("logrotate --force /etc/logrotate.d/chatmrpt")
    assert host.file(f"{SHARED}/instance/logs/gunicorn-access.log.1").exists
    http(host, "/ping")
    time.sleep(0.5)
    # copytruncate: gunicorn keeps writing to the (now truncated) file.
    assert "GET /ping" in host.file(f"{SHARED}/instance/logs/gunicorn-access.log").content_string
