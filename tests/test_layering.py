"""group_vars layering: group_vars/all holds what every environment shares, and
inventories/<env>/group_vars/all overrides it."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import ROOT, VENV_BIN


def variables(inventory: str, aws_env: dict) -> dict:
    """The variables that Ansible itself resolves for localhost in an inventory."""
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "localhost", "-o", "-i", f"inventories/{inventory}", "-m", "ansible.builtin.debug",
         "-a", "msg={{ {'env': chatmrpt_environment, 'log': chatmrpt_log_level, 'region': chatmrpt_aws_region,"
               " 'prefix': chatmrpt_name_prefix, 'lower': chatmrpt_name_prefix_lower} | to_json }}"],
        cwd=ROOT, env=aws_env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # One line: `localhost | SUCCESS => {..., "msg": "<json>"}`
    return json.loads(json.loads(proc.stdout.split("=>", 1)[1])["msg"])


@pytest.mark.parametrize(("inventory", "log_level", "prefix"), [
    ("local", "DEBUG", "ChatMRPT-Local"),          # overridden
    ("staging", "INFO", "ChatMRPT-Staging"),       # the shared value
    ("production", "WARNING", "ChatMRPT-Production"),  # overridden
])
def test_environment_overrides_shared_value(inventory, log_level, prefix, aws_env):
    values = variables(inventory, aws_env)
    assert values["env"] == inventory
    assert values["log"] == log_level
    assert values["region"] == "us-east-2"  # shared, not overridden anywhere
    assert values["prefix"] == prefix
    assert values["lower"] == f"chatmrpt-{inventory}"


def test_shared_value_comes_from_top_level_group_vars():
    """The shared directory is the one linked into every inventory, not a copy."""
    for inventory in ("local", "staging", "production"):
        link = ROOT / "inventories" / inventory / "group_vars" / "all" / "000_shared"
        assert link.is_symlink() and link.resolve() == (ROOT / "group_vars" / "all").resolve()
