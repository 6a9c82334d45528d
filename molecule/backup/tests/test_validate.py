"""Role `backup`'s `validate` entry point refuses bad input before any change.

Runs on the controller (no host is touched): ansible-playbook with the role's validate
tasks on localhost, once per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
PLAYBOOK = """---
- name: Validate the backup role's inputs
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the validate entry point
      ansible.builtin.include_role:
        name: backup
        tasks_from: validate
"""
GOOD = {
    "backup_bucket": "chatmrpt-staging-backups",
    "backup_environment": "staging",
}


def run_validate(tmp_path: Path, overrides: dict, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    variables = {key: value for key, value in {**GOOD, **overrides}.items() if key not in drop}
    (tmp_path / "playbook.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "true",
           "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"), "ANSIBLE_LOCALHOST_WARNING": "false"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "playbook.yml",
         "-e", "@vars.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_good_input_passes(tmp_path):
    proc = run_validate(tmp_path, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("overrides", "drop", "message"), [
    ({"backup_cron_hour": 24}, (), "backup_cron_hour must be 0-23"),
    ({"backup_cron_minute": 60}, (), "backup_cron_minute 0-59"),
    ({}, ("backup_bucket",), "backup_bucket"),
    ({"backup_aws_emulator_credentials": True}, (), "backup_aws_emulator_credentials may only be true"),
    ({"backup_local_dir": "/srv/chatmrpt/ChatMRPT/instance/backups"}, (), "must not\nbe inside backup_instance_dir"),
    ({"backup_aws_emulator_role_arn": "arn:aws:iam::123456789012:role/chatmrpt-staging-EC2-Role"}, (),
     "backup_aws_emulator_role_arn empty or an IAM role ARN, only\nwith backup_aws_emulator_credentials"),
], ids=["hour", "minute", "bucket-required", "emulator-credentials", "local-dir-in-instance", "emulator-role"])
def test_bad_input_is_refused(tmp_path, overrides, drop, message):
    proc = run_validate(tmp_path, overrides, drop)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert " ".join(message.split()) in " ".join(output.split()), output
