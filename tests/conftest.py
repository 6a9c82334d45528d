"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import ROOT, VENV_BIN, base_env, free_port, wait_port


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A private AWS emulator for the test session (never the lab's), as its endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as logfile:
        proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=logfile, stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
        )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def aws_env(moto_endpoint):
    """Environment for Ansible or boto3 pointed at the session's emulator, dummy credentials."""
    return base_env(
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # pragma: allowlist secret
        AWS_DEFAULT_REGION="us-east-2",
        AWS_REGION="us-east-2",
    )


@pytest.fixture(scope="session")
def project_root():
    return ROOT
