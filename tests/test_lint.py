"""The lint gate: yamllint, ansible-lint (production profile), syntax of every playbook
against every inventory, and a secret scan of the repository."""

from __future__ import annotations

import json
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
