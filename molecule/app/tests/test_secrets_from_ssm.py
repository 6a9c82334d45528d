"""The secrets path that Molecule's converge does not take: .env values read from SSM
Parameter Store (an emulator here) through the project's group_vars wiring. Runs on the
controller only; the role's environment tasks render .env into a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import base_env, moto_server  # noqa: E402

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: app
        tasks_from: configure-environment
      vars:
        app_user: "{{ lookup('ansible.builtin.env', 'USER') | default('root', true) }}"
        app_group: "{{ lookup('ansible.builtin.pipe', 'id -gn') }}"
        __app_env_file: "{{ env_file }}"
        __app_workers: 3
        __app_service_start: {changed: true}   # no restart handler on the controller
"""


@pytest.fixture(scope="module")
def moto():
    with moto_server() as endpoint:
        yield endpoint


def run(tmp_path, endpoint, *extra):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    env = base_env(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(play),
           "-e", f"@{ROOT}/group_vars/all/project.yml", "-e", f"@{ROOT}/group_vars/all/host_app.yml",
           "-e", "chatmrpt_environment=local", "-e", f"env_file={tmp_path}/.env",
           "-e", f"ansible_python_interpreter={sys.executable}", *extra]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_env_file_gets_the_secrets_from_ssm(tmp_path, moto):
    ssm = boto3.client("ssm", endpoint_url=moto, region_name="us-east-2",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    for name in ("SECRET_KEY", "ADMIN_KEY", "OPENAI_API_KEY"):
        ssm.put_parameter(Name=f"/chatmrpt/local/app/{name}", Value=f"ssm-{name.lower()}", Type="SecureString",
                          Overwrite=True)
    result = run(tmp_path, moto)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    env = (tmp_path / ".env").read_text()
    assert 'SECRET_KEY="ssm-secret_key"' in env and 'OPENAI_API_KEY="ssm-openai_api_key"' in env  # pragma: allowlist secret
    assert 'AWS_REGION="us-east-2"' in env and 'LOG_LEVEL="INFO"' in env
    assert oct((tmp_path / ".env").stat().st_mode & 0o777) == "0o600"
    # no_log: no secret value in Ansible's output.
    assert "ssm-secret_key" not in result.stdout + result.stderr


def test_missing_ssm_secret_fails_without_leaking(tmp_path, moto):
    result = run(tmp_path, moto, "-e", "app_ssm_prefix=/chatmrpt/nowhere/app")
    assert result.returncode != 0
    assert not (tmp_path / ".env").exists()
    assert "ssm-" not in result.stdout + result.stderr
