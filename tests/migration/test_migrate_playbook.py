"""playbooks/migrate_database.yml on the shared local estate: the plan (--check) changes
nothing, a bad setting and an ambiguous source are refused, the cutover makes the app serve from PostgreSQL
(rows from before readable, rows after land in PostgreSQL, the tool's report verified,
read and hashed by the compiled modules the role built on the host),
a cutover for an app that does not report its backend is refused before any change,
a rerun changes nothing, the rollback returns to SQLite. The database password never
appears in the output (-vvv). The estate is left serving on SQLite."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import psycopg
import pytest

from emulator import client

PLAYBOOK = "playbooks/migrate_database.yml"
SOURCE_NAME = "ChatMRPT-Local-App-1"  # chosen by Name tag, as an operator would
DATABASE_URL_PARAMETER = "/chatmrpt/local/app/DATABASE_URL"
REPORT_DIR = "/var/log/chatmrpt-migrate"


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def lb_serves(lb_url: str, backend: str, timeout: float = 60.0) -> dict:
    """/health through the load balancer once its own check has seen a host up again: the
    copy stops the app on every host, and HAProxy (like an ALB) needs `rise` good checks."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http("GET", f"{lb_url}/health")
        except (OSError, ValueError) as err:  # 503 page (not JSON), connection reset
            status, body = 0, {"error": str(err)}
        if status == 200 and body.get("database_backend") == backend or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def podman(env: dict, *args: str) -> str:
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=True).stdout


class Lab:
    """The estate's app hosts (container = instance id, Name tag, address), SSM and PostgreSQL."""

    def __init__(self, estate):
        self.estate = estate
        self.env = estate.env
        ec2 = client(self.env, "ec2")
        self.ssm = client(self.env, "ssm")
        containers = set(podman(self.env, "ps", "--filter", f"label={estate.lab['label']}={estate.lab['name']}",
                                "--format", "{{.Names}}").split())
        self.hosts = {}  # Name tag -> (instance id, private address)
        for reservation in ec2.describe_instances(Filters=[
                {"Name": "tag:Environment", "Values": ["local"]}, {"Name": "tag:Role", "Values": ["app"]},
                {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]:
            for instance in reservation["Instances"]:
                name = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get("Name")
                if instance["InstanceId"] in containers:
                    self.hosts[name] = (instance["InstanceId"], instance["PrivateIpAddress"])
        self.password = open(estate.lab["pg_master_password_file"]).read().strip()
        self.dbname = self.ssm.get_parameter(Name="/chatmrpt/local/database/name")["Parameter"]["Value"]

    def url(self, name: str) -> str:
        return f"http://{self.hosts[name][1]}:8000"

    def others(self) -> list[str]:
        return [name for name in self.hosts if name != SOURCE_NAME]

    def exec(self, name: str, *cmd: str) -> str:
        return podman(self.env, "exec", self.hosts[name][0], *cmd)

    def state(self) -> dict:
        """What a --check run must not change."""
        state = {"parameter": self.parameter_exists(), "databases": self.pg("postgres", "SELECT datname FROM pg_database")}
        for name, (instance, _) in self.hosts.items():
            state[name] = {
                "env": hashlib.sha256(self.exec(name, "cat", "/srv/chatmrpt/chatmrpt_shared/.env").encode()).hexdigest(),
                "pid": self.exec(name, "systemctl", "show", "-p", "MainPID", "chatmrpt").strip(),
                "tool": self.exec(name, "sh", "-c", "ls -la /opt/chatmrpt-migrate 2>&1 || true"),
                "reports": self.exec(name, "sh", "-c", f"ls {REPORT_DIR} 2>&1 || true"),
            }
        if self.dbname in [row[0] for row in state["databases"]]:
            state["schemas"] = self.pg(self.dbname, "SELECT nspname FROM pg_namespace ORDER BY 1")
        return state

    def parameter_exists(self) -> bool:
        try:
            self.ssm.get_parameter(Name=DATABASE_URL_PARAMETER)
            return True
        except self.ssm.exceptions.ParameterNotFound:
            return False

    def pg(self, dbname: str, sql: str, *params, user: str = "chatmrpt_master", password: str = "") -> list[tuple]:
        with psycopg.connect(host="127.0.0.1", port=int(self.env["CHATMRPT_LAB_PG_PORT"]), user=user,
                             password=password or self.password, dbname=dbname, connect_timeout=10) as conn:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]

    def backends(self) -> dict[str, str]:
        out = {}
        for name in self.hosts:
            status, body = http("GET", self.url(name) + "/health")
            assert status == 200 and body["overall"] == "healthy", (name, body)
            out[name] = body["database_backend"]
        return out


@pytest.fixture(scope="module")
def lab(local_estate):
    lab = Lab(local_estate)
    assert SOURCE_NAME in lab.hosts and len(lab.hosts) == 2, lab.hosts
    return lab


@pytest.mark.parametrize(("setting", "message"), [
    # the role's argument spec (entry point `validate`)
    ("migration_orphans=sometimes", "value of migration_orphans must be one of: keep, refuse, got: sometimes"),
    # its rules (tasks/validate.yml)
    ("migration_jobs=0", "migration_jobs 1 or more (got 0)"),
])
def test_a_bad_setting_is_refused_before_any_change(lab, setting, message):
    before = lab.state()
    run = lab.estate.playbook(PLAYBOOK, "-e", f"migration_source_host={SOURCE_NAME}", "-e", "migration_cutover=true",
                              "-e", setting)
    assert run.returncode != 0
    failures = [" ".join(line.split()) for line in run.failures()]
    assert len(failures) == 1 and failures[0].startswith("fatal: [localhost]"), run.output[-3000:]
    assert message in failures[0], failures[0]
    assert run.changed == 0, run.changed_tasks()
    assert lab.state() == before


def test_ambiguous_source_host_is_refused_before_any_change(lab):
    run = lab.estate.playbook(PLAYBOOK, "-e", "migration_cutover=true")
    assert run.returncode != 0
    assert "migration_source_host must name exactly one app host" in run.output, run.output[-3000:]
    for name, (instance, _) in lab.hosts.items():
        assert f"{instance} ({name})" in run.output  # the message lists the hosts to choose from
    assert run.changed == 0, run.changed_tasks()
    assert not lab.parameter_exists()


def test_cutover_of_an_app_that_does_not_report_its_backend_is_refused(lab):
    """ChatMRPT's own code reads its SQLite files whatever DATABASE_URL says: an app whose
    /health does not name its backend (here: the playbook asks for a field the app does not
    have) cannot be shown to have moved, so the cutover is refused before any change."""
    before = lab.state()
    run = lab.estate.playbook(PLAYBOOK, "-e", f"migration_source_host={SOURCE_NAME}", "-e", "migration_cutover=true",
                              "-e", "migration_health_backend_field=db_engine")
    assert run.returncode != 0
    assert "the app does not report its database backend ('db_engine' in /health)" in run.output, run.output[-3000:]
    assert "-e migration_cutover_unreported_backend=true" in run.output
    assert run.changed == 0, run.changed_tasks()
    assert lab.state() == before


def test_check_mode_prints_the_plan_and_changes_nothing(lab):
    before = lab.state()
    run = lab.estate.playbook(PLAYBOOK, "--check", "-e", f"migration_source_host={SOURCE_NAME}",
                              "-e", "migration_cutover=true")
    assert run.returncode == 0, run.output[-5000:]
    assert "dry run: nothing was changed" in run.output
    assert "-> schema interactions" in run.output and "table sessions:" in run.output
    assert "Would stop chatmrpt" in run.output
    assert lab.password not in run.output
    assert lab.state() == before


def test_cutover_serves_from_postgresql_then_rollback_returns_to_sqlite(lab):
    source, other = lab.url(SOURCE_NAME), lab.url(lab.others()[0])
    marker = f"before-{uuid.uuid4().hex}"
    status, created = http("POST", source + "/api/sessions", marker.encode())
    assert status == 201
    before_id = created["session_id"]
    for route in ("/api/users", "/api/survey", "/api/prepost"):
        assert http("POST", source + route)[0] == 201
    status, stray = http("POST", other + "/api/sessions", b"on the other host")  # not the source: not migrated
    assert status == 201
    try:
        run = lab.estate.playbook(PLAYBOOK, "-vvv", "-e", f"migration_source_host={SOURCE_NAME}",
                                  "-e", "migration_cutover=true")
        assert run.returncode == 0, run.output[-6000:]
        assert lab.password not in run.output
        assert any("Run chatmrpt-migrate migrate" in task for task in run.changed_tasks()), run.changed_tasks()
        assert lab.parameter_exists()

        # Every host serves from PostgreSQL; through the load balancer the old row is there.
        assert set(lab.backends().values()) == {"postgresql"}
        assert lb_serves(lab.estate.lb_url, "postgresql").get("overall") == "healthy"
        status, body = http("GET", f"{lab.estate.lb_url}/api/sessions/{before_id}")
        assert status == 200 and body["database_backend"] == "postgresql", body
        assert body["messages"] == [{"role": "user", "content": marker}]
        # Only the source host's data was migrated (documented choice).
        assert http("GET", f"{source}/api/sessions/{stray['session_id']}")[0] == 404

        # The app connects as its own role, never as the master: no superuser, CREATEDB or
        # CREATEROLE; it owns the migrated schemas and their tables, and may create nothing else.
        database_url = lab.ssm.get_parameter(
            Name=DATABASE_URL_PARAMETER, WithDecryption=True)["Parameter"]["Value"]
        url = urllib.parse.urlsplit(database_url)
        app_password = lab.ssm.get_parameter(Name="/chatmrpt/local/database/app-password",
                                             WithDecryption=True)["Parameter"]["Value"]
        assert (url.username, urllib.parse.unquote(url.password)) == ("chatmrpt_app", app_password), "not the app's role"
        assert lab.password not in database_url
        assert lab.pg("postgres", "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles"
                      " WHERE rolname = 'chatmrpt_app'") == [(False, False, False, True)]
        owners = dict(lab.pg(lab.dbname, "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace"
                                         " WHERE nspname IN ('interactions', 'users', 'survey', 'prepost_test')"))
        assert owners == dict.fromkeys(("interactions", "users", "survey", "prepost_test"), "chatmrpt_app"), owners
        assert lab.pg(lab.dbname, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname"
                                  " IN ('interactions', 'users', 'survey', 'prepost_test')") == [("chatmrpt_app",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            lab.pg(lab.dbname, "CREATE SCHEMA not_the_apps", user="chatmrpt_app", password=app_password)

        # A row written after the cutover lands in PostgreSQL.
        after = f"after-{uuid.uuid4().hex}"
        status, created = http("POST", f"{lab.estate.lb_url}/api/sessions", after.encode())
        assert status == 201
        after_id = created["session_id"]
        rows = lab.pg(lab.dbname, "SELECT content FROM interactions.messages WHERE session_id = %s", after_id)
        assert rows == [(after,)]
        assert http("POST", f"{lab.estate.lb_url}/api/survey")[0] == 201  # identity continues after the copy

        # The tool's report: verified table by table, swapped in, password masked.
        reports = lab.exec(SOURCE_NAME, "sh", "-c", f"ls -1 {REPORT_DIR}/migrate-*.json").split()
        report = json.loads(lab.exec(SOURCE_NAME, "cat", sorted(reports)[-1]))
        assert report["status"] == "ok" and report["exit_code"] == 0
        assert report["compiled"] == {"reader": True, "checksum": True}   # built on the host
        tables = {f"{t['schema']}.{t['table']}": t for t in report["verification"]}
        assert {"interactions.sessions", "interactions.messages", "users.users", "survey.survey_sessions",
                "prepost_test.prepost_participants"} <= set(tables)
        assert all(t["ok"] and t["source_rows"] == t["target_rows"] for t in tables.values()), tables
        assert tables["interactions.sessions"]["source_rows"] >= 1
        assert lab.password not in json.dumps(report)

        # A rerun of the finished migration and cutover copies nothing and changes nothing.
        rerun = lab.estate.playbook(PLAYBOOK, "-e", f"migration_source_host={SOURCE_NAME}", "-e", "migration_cutover=true")
        assert rerun.returncode == 0, rerun.output[-5000:]
        assert rerun.changed == 0, rerun.changed_tasks()
        assert "Run chatmrpt-migrate" not in rerun.output
    finally:
        rollback = lab.estate.playbook(PLAYBOOK, "-v", "-e", "migration_rollback=true")
    assert rollback.returncode == 0, rollback.output[-5000:]
    assert lab.password not in rollback.output
    assert not lab.parameter_exists()
    assert set(lab.backends().values()) == {"sqlite"}
    # SQLite files untouched by the migration: the old row is there, the PostgreSQL-era one is not.
    status, body = http("GET", f"{source}/api/sessions/{before_id}")
    assert status == 200 and body["database_backend"] == "sqlite" and body["messages"][0]["content"] == marker
    assert http("GET", f"{source}/api/sessions/{after_id}")[0] == 404
    assert lb_serves(lab.estate.lb_url, "sqlite").get("database_backend") == "sqlite"
