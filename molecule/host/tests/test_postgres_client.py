"""Role `postgres_client`: psql 15 installed, and its connection check really reaches a
PostgreSQL server (chatmrpt-mol-pgserver): it succeeds with the right password, given
directly or read from SSM Parameter Store (a moto server), and fails clearly, without
printing the password, when the password is wrong or the parameter is missing."""

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

SCENARIO = Path(__file__).resolve().parent.parent
ROOT = SCENARIO.parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import molecule_inventory, moto_server  # noqa: E402
SERVER = "chatmrpt-mol-pgserver"
USER, DBNAME = "chatmrpt_app", "chatmrpt"


@pytest.fixture(scope="module")
def password():
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "pg-password").read_text().strip()


def run_check(**env):
    """The role's connection check (check.yml) against the client container."""
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), *molecule_inventory("chatmrpt-mol-host"),
         "-e", "ansible_python_interpreter=/usr/bin/python3",
         str(SCENARIO / "check.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
             "ANSIBLE_NOCOLOR": "1", "MOL_PG_PASSWORD": "", "MOL_PG_SSM_PARAMETER": "", **env},
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def ssm_endpoint():
    with moto_server() as endpoint:
        yield endpoint


def aws_env(endpoint):
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-2"}  # pragma: allowlist secret


def test_psql_15_installed(host):
    assert host.package("postgresql-client-15").is_installed
    assert host.package("libpq5").is_installed
    assert host.check_output("psql --version").startswith("psql (PostgreSQL) 15.")
    assert host.check_output("/usr/lib/postgresql/15/bin/psql --version").startswith("psql (PostgreSQL) 15.")


def test_server_reachable_by_name_with_tls(host, password):
    cmd = host.run(
        "PGPASSWORD=%s PGSSLMODE=require psql -X -At -h %s -U %s -d %s -c %s",
        password, SERVER, USER, DBNAME, "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
    )
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.strip() == "t"


def test_role_check_succeeds_with_the_password(password):
    rc, out = run_check(MOL_PG_PASSWORD=password)
    assert rc == 0, out[-3000:]
    assert f"{USER}@{SERVER}:5432/{DBNAME} answers" in out
    assert password not in out


def test_role_check_fails_with_a_wrong_password():
    wrong = "wrong-" + "x" * 12
    rc, out = run_check(MOL_PG_PASSWORD=wrong)
    assert rc != 0
    assert f"psql could not run `select 1` as {USER} on {SERVER}:5432/{DBNAME}" in out
    assert "password authentication failed" in out
    assert wrong not in out


def test_role_check_reads_the_password_from_ssm(password, ssm_endpoint):
    ssm = boto3.client("ssm", region_name="us-east-2", endpoint_url=ssm_endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # pragma: allowlist secret
    ssm.put_parameter(Name="/chatmrpt/molecule/database/password", Value=password,
                      Type="SecureString", Overwrite=True)
    rc, out = run_check(MOL_PG_SSM_PARAMETER="/chatmrpt/molecule/database/password", **aws_env(ssm_endpoint))
    assert rc == 0, out[-3000:]
    assert f"{USER}@{SERVER}:5432/{DBNAME} answers" in out
    assert password not in out


def test_role_check_names_a_missing_ssm_parameter(ssm_endpoint):
    rc, out = run_check(MOL_PG_SSM_PARAMETER="/chatmrpt/molecule/database/missing", **aws_env(ssm_endpoint))
    assert rc != 0
    assert "could not read its settings: the password from SSM parameter /chatmrpt/molecule/database/missing" in out
