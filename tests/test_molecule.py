"""Every Molecule scenario: create, check on a fresh host, converge, idempotence (zero
changed), check on the converged host, verify, destroy. Every host role is converged by one
(`host`: base, postgres_client and cloudwatch_agent together, as site.yml applies them;
`app`; `backup`, with its second host)."""

from __future__ import annotations

import re

import pytest
import yaml

import molecule_runner
from helpers import ROOT

SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def test_every_host_role_is_converged_by_a_scenario():
    # The host roles are those roles/app_host applies (the one list); the AWS roles, the
    # operations' roles and validate/teardown run on localhost and have tests of their own.
    app_host = yaml.safe_load((ROOT / "roles" / "app_host" / "tasks" / "main.yml").read_text())
    roles = sorted(task["ansible.builtin.import_role"]["name"] for task in app_host
                   if "ansible.builtin.import_role" in task)
    assert roles == ["app", "backup", "base", "cloudwatch_agent", "postgres_client"], roles
    converged = set()
    for converge in (ROOT / "molecule").glob("*/converge.yml"):
        for play in yaml.safe_load(converge.read_text()):
            converged |= {r["role"] if isinstance(r, dict) else r for r in play.get("roles", [])}
    assert set(roles) <= converged, f"roles no Molecule scenario converges: {set(roles) - converged}"


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario):
    """Started in the background when the session collected it (tests/molecule_runner.py)."""
    outcome = molecule_runner.result(scenario)
    text = outcome.log
    assert outcome.returncode == 0, f"molecule test -s {scenario} failed; last lines:\n{text[-6000:]}"
    # The sequence must really have run these steps (a scenario cannot opt out of them).
    for step in ("converge", "idempotence", "verify"):
        assert re.search(rf"{step}: Executed: Successful", text), f"{step} did not run for {scenario}"
