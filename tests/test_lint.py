"""The lint gate: yamllint, ansible-lint (production profile), syntax of every playbook
against every inventory, Checkov's security checks of the playbooks and roles, and a secret
scan of the repository."""

from __future__ import annotations

import itertools
import json
import re
import subprocess

import pytest

from helpers import ROOT, VENV_BIN, base_env

PLAYBOOKS = sorted(p.name for p in (ROOT / "playbooks").glob("*.yml"))
INVENTORIES = sorted(p.name for p in (ROOT / "inventories").iterdir() if p.is_dir())


def run(*cmd: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env or base_env(), capture_output=True, text=True, timeout=900)


def test_yamllint_clean():
    proc = run(str(VENV_BIN / "yamllint"), "--strict", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile_clean(aws_env):
    # aws_env: ansible-lint's own syntax check reads the default (local) dynamic inventory.
    proc = run(str(VENV_BIN / "ansible-lint"), "--profile", "production", "--strict", env=aws_env)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-8000:]


def test_ansible_lint_has_no_skip_list():
    config = (ROOT / ".ansible-lint").read_text()
    assert "skip_list" not in config and "warn_list" not in config


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_syntax_check(inventory, aws_env):
    """Every playbook against the inventory, in one process (ansible-playbook checks each
    playbook it is given and names the one that fails)."""
    assert len(PLAYBOOKS) > 10, PLAYBOOKS
    proc = run(str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", f"inventories/{inventory}",
               *(f"playbooks/{playbook}" for playbook in PLAYBOOKS), env=aws_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for playbook in PLAYBOOKS:
        assert f"playbook: playbooks/{playbook}" in proc.stdout, f"{playbook} was not checked"


# Checkov's own virtualenv (scripts/setup.sh; requirements/checkov.in says why not .venv).
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
# Checkov's own suppression syntax, with the reason this project requires.
CHECKOV_SKIP = re.compile(r"#\s*checkov:skip=([A-Za-z_\d]+):\s*(\S.*)")


def checkov_local_skip(check: dict) -> str | None:
    """The reason of a `# checkov:skip=<ID>: <reason>` comment on the task or block a failed
    check names, else None. Checkov (3.1 to 3.3) reads these comments everywhere but on a block and on
    a task inside a block (its graph names those resources otherwise than its suppression
    index), where it reports them failed: there the test reads the comment itself. A block's
    own lines end at `block:` (its tasks carry their own comments)."""
    lines = check["code_block"]
    if check["resource"].startswith("block."):
        lines = itertools.takewhile(lambda line: line[1].strip() != "block:", lines)
    for _, text in lines:
        match = CHECKOV_SKIP.search(text)
        if match and match.group(1) == check["check_id"]:
            return match.group(2)
    return None


def test_checkov_clean():
    """Checkov's Ansible checks: each failure is fixed, or skipped on the task or block itself with
    `# checkov:skip=<ID>: <reason>` (no skip list, no configuration file). Checkov walks no hidden
    directory (set here, whatever the shell says): .venv (with the collections), .cache (Molecule's
    and the collections bundle), .git and the labs' state are not project code. --skip-download:
    no call to Prisma Cloud."""
    proc = run(str(CHECKOV), "--directory", ".", "--framework", "ansible", "--skip-download",
               "--output", "json", env=base_env(CKV_IGNORE_HIDDEN_DIRECTORIES="true"))
    assert proc.returncode in (0, 1), proc.stdout[-8000:] + proc.stderr[-8000:]
    report = json.loads(proc.stdout)
    results = report.get("results", {})
    assert report["summary"]["parsing_errors"] == 0, results.get("parsing_errors")
    checks = {key: results.get(key, []) for key in ("passed_checks", "failed_checks", "skipped_checks")}
    scanned = {check["file_path"].split("/")[1] for found in checks.values() for check in found}
    # The tasks live in roles/ (the playbooks only import roles, which checkov has no check for).
    assert "roles" in scanned, f"checkov found no tasks in roles/: {scanned}"

    def where(check: dict) -> str:
        return f"{check['check_id']} {check['file_path'].lstrip('/')}:{check['file_line_range'][0]} {check['resource']}"

    failed = [f"{where(check)}: {check['check_name']}" for check in checks["failed_checks"]
              if checkov_local_skip(check) is None]
    unexplained = [where(check) for check in checks["skipped_checks"]
                   if check["check_result"].get("suppress_comment", "").strip() in ("", "No comment provided")]
    assert failed == [] and unexplained == [], (
        "failed (fix, or skip on the task: # checkov:skip=<ID>: <reason>):\n" + "\n".join(failed)
        + "\nskipped without a reason:\n" + "\n".join(unexplained))


def test_no_secrets_in_repository():
    """detect-secrets over every tracked file: it must find nothing."""
    files = run("git", "ls-files").stdout.split()
    proc = run(str(VENV_BIN / "detect-secrets"), "scan", *files)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)["results"]
    assert found == {}, json.dumps(found, indent=2)


def test_no_scenario_or_role_opts_out_of_idempotence():
    """Molecule skips tasks tagged molecule-idempotence-notest / notest: nothing may hide there."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("roles", "molecule", "playbooks")
        for path in (ROOT / folder).rglob("*.yml")
        if "notest" in path.read_text()
    ]
    assert offenders == []
