"""Secrets drills.

1. A maintained secret scanner (detect-secrets, from PyPI) scans the repository, tracked and
   new files: it finds nothing (tests/test_lint.py scans the tracked files; this one counts
   in the drills' summary). Test fixtures carry `# pragma: allowlist secret`.
2. Planted secrets: new known random values for the app's SECRET_KEY, ADMIN_KEY and
   OPENAI_API_KEY go into the estate's SSM Parameter Store (the database master password is
   the lab PostgreSQL's own, already random, read from SSM); then the main playbooks run with
   -vvv --diff on the shared estate (site.yml, with the database connection check on so the
   password travels to the hosts too; the backup now playbook, so backups are made). No value
   may appear in any output, in the controller's Ansible log, fact cache, temporary files or
   the lab's files, nor on any host: files (every file but the few that must hold a secret,
   whose modes are checked), the journal, process arguments. The planted values stay: the
   estate is converged on them (site.yml applied them), like any rotation of the secrets.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest

from drills_estate import host_exec, http_json, instances, wait_until
from emulator import client
from helpers import ROOT, VENV_BIN

pytestmark = pytest.mark.slow

PLANTED = ("app/SECRET_KEY", "app/ADMIN_KEY", "app/OPENAI_API_KEY")
DB_PASSWORD = "database/master-password"  # pragma: allowlist secret
# The only files on a host that may hold a secret value, with their accepted modes.
ALLOWED_HOST_FILES = {"/srv/chatmrpt/chatmrpt_shared/.env": ("600",)}
HOST_EXCLUDED_TREES = ("/proc", "/sys", "/dev")


def test_secret_scanner_finds_nothing_in_the_repository(drill):
    # Tracked files and the new ones not yet committed (not the ignored ones: .venv, .lab...).
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    files = [f.decode() for f in files if f and (ROOT / f.decode()).is_file()]
    assert len(files) > 100, "git ls-files found almost nothing to scan"
    scan = subprocess.run([str(VENV_BIN / "detect-secrets"), "scan", *files], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert scan.returncode == 0, scan.stderr
    results = json.loads(scan.stdout)["results"]
    found = sum(len(v) for v in results.values())
    drill.secrets(searched=1, found=found)
    assert found == 0, json.dumps(results, indent=1)[:4000]


def ssm(estate):
    return client(estate.env, "ssm")


def find_in_controller(paths: list[Path], values: dict[str, str]) -> list[str]:
    hits = []
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()] \
            if root.exists() else []
        for path in files:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: {name}" for name, value in values.items() if value.encode() in data]
    return hits


def find_on_host(estate, host: str, values: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Files holding a value (grep over the whole file system but /proc /sys /dev), the
    journal and every process's arguments; and the modes of the allowed files."""
    patterns = "\n".join(values.values())
    excludes = " ".join(f"--exclude-dir={d.lstrip('/')}" for d in HOST_EXCLUDED_TREES)
    script = (
        "set -u; p=$(mktemp -p /dev/shm); cat > $p; "
        f"cd / && grep -rlaF -f $p {excludes} --exclude-dir=run/user . 2>/dev/null | sed 's|^\\./|/|' | sed 's/^/file /'; "
        "journalctl --no-pager -o cat 2>/dev/null | grep -qaF -f $p && echo 'journal'; "
        "ps -eo args 2>/dev/null | grep -vF -- \"-f $p\" | grep -qaF -f $p && echo 'process-args'; "
        "rm -f $p"
    )
    proc = subprocess.run(["podman", "exec", "-i", host, "sh", "-c", script], input=patterns, env=estate.env,
                          capture_output=True, text=True, timeout=900)
    hits = [line for line in proc.stdout.splitlines() if line]
    modes = {}
    for path in ALLOWED_HOST_FILES:
        out = host_exec(estate, host, f"stat -c '%a %U' {shlex.quote(path)}", check=False).stdout.split()
        modes[path] = out[0] if out else "missing"
    return hits, modes


@pytest.fixture(scope="module")
def planted(local_estate, tmp_path_factory):
    estate = local_estate
    client = ssm(estate)
    prefix = "/chatmrpt/local/"
    values = {name: f"drill{name.split('/')[-1].replace('_', '')}{secrets.token_hex(20)}" for name in PLANTED}
    values[DB_PASSWORD] = client.get_parameter(Name=prefix + DB_PASSWORD, WithDecryption=True)["Parameter"]["Value"]
    assert len(values[DB_PASSWORD]) >= 16
    work = tmp_path_factory.mktemp("secrets-drill")
    log = work / "ansible.log"
    env = {**estate.env, "ANSIBLE_LOG_PATH": str(log)}
    runs = {}
    for name in PLANTED:
        client.put_parameter(Name=prefix + name, Value=values[name], Type="SecureString", Overwrite=True)
    runs["site.yml"] = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "inventories/local", "playbooks/site.yml", "-vvv", "--diff",
         "-e", "postgres_client_check_connection=true",
         "-e", f"postgres_client_port={estate.env['CHATMRPT_LAB_PG_PORT']}",
         "-e", "postgres_client_sslmode=prefer", "-e", "postgres_client_dbname=postgres"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    runs["backup_now.yml"] = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "inventories/local", "playbooks/backup_now.yml", "-vvv"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    # The estate serves on the new values (the next tests use it as it is now).
    healthy = wait_until(lambda: http_json(f"{estate.lb_url}/health")[1].get("overall") == "healthy", timeout=60)
    hosts = instances(estate)
    host_hits = {host: find_on_host(estate, host, values) for host in hosts}
    controller = find_in_controller(
        [log, Path.home() / ".ansible" / "tmp", ROOT / ".cache", Path(estate.env["CHATMRPT_LAB_STATE_DIR"])],
        {k: v for k, v in values.items() if k != DB_PASSWORD})
    # The lab's PostgreSQL password file holds the password by design (0600, the lab's own).
    controller += [hit for hit in find_in_controller([Path(estate.env["CHATMRPT_LAB_STATE_DIR"]), log,
                                                       Path.home() / ".ansible" / "tmp", ROOT / ".cache"],
                                                      {DB_PASSWORD: values[DB_PASSWORD]})
                   if not hit.startswith(str(Path(estate.env["CHATMRPT_LAB_STATE_DIR"]) / "pg" / "master-password"))]
    pg_file_mode = oct((Path(estate.env["CHATMRPT_LAB_STATE_DIR"]) / "pg" / "master-password").stat().st_mode & 0o777)
    return {"values": values, "runs": runs, "healthy": healthy, "host_hits": host_hits, "controller": controller,
            "pg_file_mode": pg_file_mode, "hosts": hosts}


def test_main_playbooks_ran_with_the_planted_secrets(planted):
    for name, run in planted["runs"].items():
        assert run.returncode == 0, f"{name}:\n{run.stdout[-6000:]}{run.stderr[-2000:]}"
    assert "<localhost> EXEC" in planted["runs"]["site.yml"].stdout  # really -vvv
    # The .env changed (so the template, its diff and the restart handler all ran with the new values).
    assert "RUNNING HANDLER [app : Restart chatmrpt]" in planted["runs"]["site.yml"].stdout
    assert planted["healthy"], "the estate does not serve /health as healthy on the new secrets"


def test_no_planted_secret_in_any_output(planted, drill):
    hits = [f"{run_name} {stream}: {name}" for run_name, run in planted["runs"].items()
            for stream, text in (("stdout", run.stdout), ("stderr", run.stderr))
            for name, value in planted["values"].items() if value in text]
    drill.secrets(searched=len(planted["values"]), found=len(hits),
                  after=("test_main_playbooks_ran_with_the_planted_secrets",))
    assert not hits, hits


def test_no_planted_secret_in_controller_files(planted, drill):
    drill.secrets(searched=len(planted["values"]), found=len(planted["controller"]),
                  after=("test_main_playbooks_ran_with_the_planted_secrets",))
    assert not planted["controller"], planted["controller"]
    assert planted["pg_file_mode"] == "0o600"


def test_no_planted_secret_on_the_hosts_but_in_their_0600_env_file(planted, drill):
    allowed = {f"file {path}" for path in ALLOWED_HOST_FILES}
    leaks = {host: [hit for hit in hits if hit not in allowed] for host, (hits, _modes) in planted["host_hits"].items()}
    drill.secrets(searched=len(planted["values"]) * len(leaks), found=sum(map(len, leaks.values())),
                  after=("test_main_playbooks_ran_with_the_planted_secrets",))
    for host, (hits, modes) in planted["host_hits"].items():
        assert modes == {path: ALLOWED_HOST_FILES[path][0] for path in ALLOWED_HOST_FILES}, (host, modes)
        # The app does hold its secrets: the drill searched the right way.
        assert f"file /srv/chatmrpt/chatmrpt_shared/.env" in hits, (host, hits)
    assert not any(leaks.values()), leaks
