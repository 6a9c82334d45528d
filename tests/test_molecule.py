"""Every Molecule scenario (one per host role): create, check on a fresh host, converge,
idempotence (zero changed), check on the converged host, verify, destroy."""

from __future__ import annotations

import re
import subprocess

import pytest

from helpers import ROOT, VENV_BIN, base_env

SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def test_every_host_role_has_a_scenario():
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if not p.name.startswith("aws_"))
    assert roles, "no host roles found"
    assert set(roles) <= set(SCENARIOS), f"roles without a Molecule scenario: {set(roles) - set(SCENARIOS)}"


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario, tmp_path):
    log = tmp_path / f"molecule-{scenario}.log"
    with open(log, "w") as out:
        proc = subprocess.run(
            [str(VENV_BIN / "molecule"), "test", "-s", scenario],
            cwd=ROOT, env=base_env(PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1"),
            stdout=out, stderr=subprocess.STDOUT, timeout=1500,
        )
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())
    assert proc.returncode == 0, f"molecule test -s {scenario} failed; last lines:\n{text[-6000:]}"
    # The sequence must really have run these steps (a scenario cannot opt out of them).
    for step in ("converge", "idempotence", "verify"):
        assert re.search(rf"{step}: Executed: Successful", text), f"{step} did not run for {scenario}"
