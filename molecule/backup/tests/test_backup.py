"""Role `backup`: what an operator checks after a night's backup and a recovery drill.

The source host chatmrpt-mol-backup (testinfra's `host`) holds a fake instance/ tree (six
SQLite databases, one of them named .sqlite, one with rows only in its WAL file; uploads;
a .env with secret values). The scenario's moto_server plays S3 and CloudWatch; the tests
read it from the host with boto3 (127.0.0.1:<port from the ephemeral directory>).
chatmrpt-mol-restore is the fresh host of the recovery drill.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import boto3
import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from helpers import molecule_address  # noqa: E402

BUCKET = "chatmrpt-mol-backups"
REGION = "us-east-2"
SOURCE = "chatmrpt-mol-backup"
TARGET = "chatmrpt-mol-restore"
ROLE = "chatmrpt-mol-backup-role"  # vars/scenario.yml: the hosts assume it, as EC2 does
NAMESPACE = "ChatMRPT/Local"
LOCAL_DIR = "/var/backups/chatmrpt"
INSTANCE = "/srv/chatmrpt/chatmrpt_shared/instance"  # the source's instance/ behind its links
RESTORED_INSTANCE = "/srv/chatmrpt/ChatMRPT/instance"
BACKUP = "runuser -u chatmrpt -- /usr/local/sbin/chatmrpt-backup --verbose"
EXPECTED_DATABASES = {
    "interactions.db", "users.db", "survey.db", "prepost_test.db",
    "uploads/sess-a/tpr_precomputed.db", "memory/conversation_cache.sqlite",
}
# The directories archived (backup_archive_dirs' default) and the user files they hold.
ARCHIVED = ["uploads", "reports", "exports", "conversation_history", "memory"]
USER_FILES = ["uploads/sess-a/data.csv", "uploads/sess-b/shapes.zip", "reports/risk_ranking_sess-a.html",
              "conversation_history/sess-a.json"]
SECRETS = [
    "molecule-secret-key-4f1c9a", "sk-molecule-openai-77ab12", "molecule-admin-key-9e3d",
    "molecule-redis-pass-55c0", "molecule-db-pass-31aa",
]
# One line per database: its name and the sha256 of its SQL dump (read-only connection).
DUMP = ("import hashlib, sqlite3, sys\n"
        "for name in sys.argv[1:]:\n"
        "    c = sqlite3.connect('file:' + name + '?mode=ro', uri=True)\n"
        "    print(name, hashlib.sha256('\\n'.join(c.iterdump()).encode()).hexdigest())")


def _endpoint() -> str:
    port = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "moto.port").read_text().strip()
    return f"http://127.0.0.1:{port}"


def _client(service: str):
    return boto3.client(service, endpoint_url=_endpoint(), region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # pragma: allowlist secret


@pytest.fixture(scope="module")
def s3():
    return _client("s3")


@functools.cache
def _prefix() -> str:
    """Where the source writes: under its user id, `<role id>:<session name = host>`."""
    return f"local/{_client('iam').get_role(RoleName=ROLE)['Role']['RoleId']}:{SOURCE}/"


@pytest.fixture(scope="module")
def cloudwatch():
    return _client("cloudwatch")


@pytest.fixture(scope="module")
def target(request):
    """The restore host, reached as testinfra reaches `host` (.config/molecule/config.yml)."""
    option = request.config.getoption
    return testinfra.get_host(f"ssh://admin@{molecule_address(TARGET)}", sudo=option("sudo"),
                              ssh_config=option("ssh_config"), ssh_identity_file=option("ssh_identity_file"))


def _local_backups(host) -> list[str]:
    out = host.check_output(f"find {LOCAL_DIR} -mindepth 1 -maxdepth 1 -type d -name '*T*Z' -printf '%f\\n'")
    return sorted(line for line in out.splitlines() if line)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _metric_values(cloudwatch, start: dt.datetime) -> dict:
    """BackupSuccess of the source published since `start` (one run's worth)."""
    stats = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE, MetricName="BackupSuccess",
        Dimensions=[{"Name": "Environment", "Value": "local"}, {"Name": "Host", "Value": SOURCE}],
        StartTime=start, EndTime=_now() + dt.timedelta(seconds=1),
        Period=60, Statistics=["Minimum", "Maximum", "SampleCount"],
    )["Datapoints"]
    return {
        "count": sum(point["SampleCount"] for point in stats),
        "min": min((point["Minimum"] for point in stats), default=None),
        "max": max((point["Maximum"] for point in stats), default=None),
    }


def _sha256sums(host, paths) -> dict[str, str]:
    """sha256 of several files in one command."""
    out = host.check_output("sha256sum " + " ".join(f"'{path}'" for path in paths))
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in out.splitlines()}


def _objects(s3, prefix: str) -> dict[str, bytes]:
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    return {key[len(prefix):]: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


@pytest.fixture(scope="module")
def good_run(host, s3, cloudwatch):
    """One backup run on the source, everything it uploaded, the metric right after it."""
    before, start = _local_backups(host), _now()
    result = host.run(BACKUP)
    new = sorted(set(_local_backups(host)) - set(before))
    assert len(new) == 1, f"expected one new local backup, got {new}\n{result.stderr}"
    timestamp = new[0]
    objects = _objects(s3, f"{_prefix()}{timestamp}/")
    manifest = json.loads(objects["manifest.json"]) if "manifest.json" in objects else {}
    return {"result": result, "timestamp": timestamp, "objects": objects, "manifest": manifest,
            "metric": _metric_values(cloudwatch, start)}


@pytest.fixture(scope="module")
def failed_run(host, good_run, cloudwatch):
    """A run with S3 unreachable (closed port), CloudWatch still the emulator."""
    host.check_output("cp /etc/chatmrpt-backup.ini /tmp/s3-down.ini && "
                      "echo 's3_endpoint_url = http://127.0.0.1:9' >> /tmp/s3-down.ini && "
                      "chgrp chatmrpt /tmp/s3-down.ini && chmod 0640 /tmp/s3-down.ini")
    # Backups are named by the second, and moto reads the metric query's start to the second:
    # this run starts a second after the good one, so neither its directory nor its datapoint
    # is counted as this run's.
    time.sleep(1.1)
    before, start = _local_backups(host), _now()
    result = host.run(f"runuser -u chatmrpt -- env CHATMRPT_BACKUP_CONFIG=/tmp/s3-down.ini "
                      f"/usr/local/sbin/chatmrpt-backup --verbose")
    new = sorted(set(_local_backups(host)) - set(before))
    assert len(new) == 1, f"expected one new local backup, got {new}\n{result.stderr}"
    return {"result": result, "timestamp": new[0], "metric": _metric_values(cloudwatch, start)}


# --- the installation --------------------------------------------------------------------------

def test_cron_entry_runs_the_backup_daily_at_0200_utc_as_the_app_user(host):
    cron = host.file("/etc/cron.d/chatmrpt-backup")
    assert cron.user == "root" and cron.mode == 0o644
    lines = [line for line in cron.content_string.splitlines() if line.strip()]
    assert lines == [
        'CRON_TZ="UTC"',
        "#Ansible: chatmrpt backup to S3",
        "0 2 * * * chatmrpt /usr/local/sbin/chatmrpt-backup",
    ]
    assert host.service("cron").is_running and host.service("cron").is_enabled


def test_scripts_and_configuration_are_root_owned(host):
    for path in ("/usr/local/sbin/chatmrpt-backup", "/usr/local/sbin/chatmrpt-restore"):
        script = host.file(path)
        assert (script.user, script.group, script.mode) == ("root", "root", 0o755)
    config = host.file("/etc/chatmrpt-backup.ini")
    assert (config.user, config.group, config.mode) == ("root", "chatmrpt", 0o640)
    assert f"bucket = {BUCKET}" in config.content_string
    assert host.run("runuser -u chatmrpt -- test -w /etc/chatmrpt-backup.ini").rc != 0
    local = host.file(LOCAL_DIR)
    assert (local.user, local.mode) == ("chatmrpt", 0o750)


# --- a good night -------------------------------------------------------------------------------

def test_backup_exits_zero_and_marks_the_local_copy_uploaded(host, good_run):
    assert good_run["result"].rc == 0, good_run["result"].stderr
    marker = host.file(f"{LOCAL_DIR}/{good_run['timestamp']}/.uploaded")
    assert marker.exists
    assert marker.content_string.strip() == f"s3://{BUCKET}/{_prefix()}{good_run['timestamp']}/"


def test_every_database_and_the_uploads_archive_are_in_s3(good_run):
    keys = set(good_run["objects"])
    databases = {key[len("databases/"):] for key in keys if key.startswith("databases/")}
    assert databases == EXPECTED_DATABASES
    archives = {key for key in keys if key.startswith("archives/")}
    assert archives == {f"archives/{name}.tar.gz" for name in ARCHIVED}
    assert "manifest.json" in keys
    assert "exports/notes.db" not in databases  # a .db that is not SQLite is no database


def test_manifest_matches_every_object_and_records_the_integrity_check(good_run):
    manifest, objects = good_run["manifest"], good_run["objects"]
    assert manifest["environment"] == "local"
    assert manifest["host"] == SOURCE
    assert manifest["timestamp"] == good_run["timestamp"]
    assert manifest["complete"] is True and manifest["errors"] == []
    assert {entry["path"] for entry in manifest["files"]} == set(objects) - {"manifest.json"}
    for entry in manifest["files"]:
        body = objects[entry["path"]]
        assert len(body) == entry["size"], entry["path"]
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], entry["path"]
    sqlite_entries = [entry for entry in manifest["files"] if entry["kind"] == "sqlite"]
    assert len(sqlite_entries) == len(EXPECTED_DATABASES)
    assert all(entry["integrity_check"] == "ok" for entry in sqlite_entries)
    # Row counts per table, read from the copy: the WAL's 25 messages are counted too.
    interactions = next(entry for entry in sqlite_entries if entry["source"] == "interactions.db")
    assert interactions["rows"]["messages"] == 75
    assert all(entry["tables"] == len(entry["rows"]) for entry in sqlite_entries)


def test_objects_carry_the_sha256_checksum_s3_verified(s3, good_run):
    prefix = f"{_prefix()}{good_run['timestamp']}/"
    for name, body in good_run["objects"].items():
        head = s3.head_object(Bucket=BUCKET, Key=prefix + name, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode(), name


def test_copies_equal_the_local_copies_and_hold_the_rows_of_the_wal(host, good_run, tmp_path):
    local = f"{LOCAL_DIR}/{good_run['timestamp']}"
    sums = _sha256sums(host, [f"{local}/{entry['path']}" for entry in good_run["manifest"]["files"]])
    for entry in good_run["manifest"]["files"]:
        assert sums[f"{local}/{entry['path']}"] == entry["sha256"], entry["path"]
    # 25 of the 75 messages exist only in interactions.db-wal: a file copy would miss them.
    assert host.file(f"{INSTANCE}/interactions.db-wal").size > 0
    path = tmp_path / "interactions.db"
    path.write_bytes(good_run["objects"]["databases/interactions.db"])
    import sqlite3
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 75
    conn.close()


def test_the_archives_hold_the_users_files_but_not_the_databases(good_run):
    held = set()
    for name in ARCHIVED:
        with tarfile.open(fileobj=io.BytesIO(good_run["objects"][f"archives/{name}.tar.gz"]), mode="r:gz") as archive:
            held |= {member.name for member in archive.getmembers() if member.isfile()}
    # memory/ holds only a database (copied as one); the login sessions and logs stay out.
    assert held == set(USER_FILES) | {"exports/notes.db"}


def test_no_secret_value_is_uploaded(good_run):
    texts = []
    for name, body in good_run["objects"].items():
        texts.append(body)
        if name.endswith(".gz"):
            texts.append(gzip.decompress(body))
    for secret in SECRETS:
        assert not any(secret.encode() in text for text in texts), f"{secret} leaked"
    env = good_run["objects"]["config/srv/chatmrpt/ChatMRPT/.env"].decode()
    assert "FLASK_ENV=production" in env and "REDIS_HOST=redis.internal" in env
    for key in ("SECRET_KEY", "OPENAI_API_KEY", "ADMIN_KEY", "REDIS_PASSWORD", "DATABASE_URL"):
        assert f"{key}=<redacted>" in env


def test_success_metric_is_published(good_run):
    assert good_run["metric"]["count"] == 1
    assert good_run["metric"]["min"] == 1.0 and good_run["metric"]["max"] == 1.0


def test_run_is_logged_to_the_file_and_the_journal(host, good_run):
    log = host.file("/var/log/chatmrpt-backup/backup.log").content_string
    assert f"backup {good_run['timestamp']} succeeded" in log
    journal = host.check_output("journalctl --no-pager -t chatmrpt-backup -o cat")
    assert f"backup {good_run['timestamp']} succeeded" in journal


# --- S3 unreachable, retention --------------------------------------------------------------------

def test_backup_with_s3_down_fails_keeps_its_copy_and_publishes_failure(host, failed_run):
    assert failed_run["result"].rc == 1, failed_run["result"].stderr
    local = f"{LOCAL_DIR}/{failed_run['timestamp']}"
    assert host.file(f"{local}/manifest.json").exists
    assert not host.file(f"{local}/.uploaded").exists
    assert "FAILED" in failed_run["result"].stderr
    # BackupSuccess=0 reached CloudWatch, and no success was published for this run.
    assert failed_run["metric"] == {"count": 1, "min": 0.0, "max": 0.0}


def test_retention_deletes_old_uploaded_backups_only(host, good_run, failed_run):
    # Backdate a copy of the uploaded backup and the failed one beyond the 7 days.
    host.check_output(
        f"cd {LOCAL_DIR} && rm -rf 20200101T020000Z 20200102T020000Z && cp -a {good_run['timestamp']} 20200102T020000Z && "
        f"mv {failed_run['timestamp']} 20200101T020000Z && touch -d '2020-01-02' 20200101T020000Z 20200102T020000Z")
    result = host.run("runuser -u chatmrpt -- /usr/local/sbin/chatmrpt-backup --prune-only --verbose")
    assert result.rc == 0, result.stderr
    remaining = _local_backups(host)
    assert "20200102T020000Z" not in remaining  # uploaded, old: deleted
    assert "20200101T020000Z" in remaining  # never uploaded: kept however old
    assert good_run["timestamp"] in remaining  # recent: kept
    assert "never uploaded: kept" in result.stderr


# --- recovery drill on the fresh host ----------------------------------------------------------------

@pytest.fixture(scope="module")
def restore_run(target, good_run, failed_run):
    assert target.service("chatmrpt").is_running
    return target.run(f"/usr/local/sbin/chatmrpt-restore --host {SOURCE} --verbose")


def test_restore_of_the_source_latest_backup_succeeds(restore_run, good_run):
    assert restore_run.rc == 0, restore_run.stderr
    assert f"backup {good_run['timestamp']} of {SOURCE} restored" in restore_run.stderr


def test_restored_databases_are_byte_identical_to_the_backed_up_copies(host, target, restore_run, good_run):
    """Byte-identical means: equal to the online copy the backup took (its sha256 in the
    manifest and on the source's local copy); the live source file itself differs (WAL)."""
    local = f"{LOCAL_DIR}/{good_run['timestamp']}"
    entries = [entry for entry in good_run["manifest"]["files"] if entry["kind"] == "sqlite"]
    restored = _sha256sums(target, [f"{RESTORED_INSTANCE}/{entry['source']}" for entry in entries])
    copies = _sha256sums(host, [f"{local}/{entry['path']}" for entry in entries])
    owners = target.check_output("stat -c '%n %U:%G' " + " ".join(f"{RESTORED_INSTANCE}/{e['source']}" for e in entries))
    for entry in entries:
        assert restored[f"{RESTORED_INSTANCE}/{entry['source']}"] == entry["sha256"], entry["source"]
        assert copies[f"{local}/{entry['path']}"] == entry["sha256"], entry["source"]
        assert f"{RESTORED_INSTANCE}/{entry['source']} chatmrpt:chatmrpt" in owners.splitlines(), entry["source"]


def test_restored_databases_hold_the_live_source_data(host, target, restore_run, good_run):
    """Same rows as the live source databases (the WAL-only rows included), as SQL dumps."""
    sources = sorted(entry["source"] for entry in good_run["manifest"]["files"] if entry["kind"] == "sqlite")
    source_dumps = host.check_output(f"cd {INSTANCE} && runuser -u chatmrpt -- python3 -c \"{DUMP}\" " + " ".join(sources))
    restored_dumps = target.check_output(
        f"cd {RESTORED_INSTANCE} && runuser -u chatmrpt -- python3 -c \"{DUMP}\" " + " ".join(sources))
    assert len(source_dumps.splitlines()) == len(sources)
    assert restored_dumps == source_dumps


def test_restored_files_equal_the_source(host, target, restore_run):
    names = USER_FILES
    restored = _sha256sums(target, [f"{RESTORED_INSTANCE}/{name}" for name in names])
    source = _sha256sums(host, [f"{INSTANCE}/{name}" for name in names])
    for name in names:
        assert restored[f"{RESTORED_INSTANCE}/{name}"] == source[f"{INSTANCE}/{name}"], name
    owners = target.check_output(f"find {RESTORED_INSTANCE}/uploads -printf '%u:%g\\n' | sort -u")
    assert owners.split() == ["chatmrpt:chatmrpt"]


def test_service_runs_after_the_restore(target, restore_run):
    assert target.service("chatmrpt").is_running
    assert "stopping chatmrpt" in restore_run.stderr and "starting chatmrpt" in restore_run.stderr


def test_tampered_backup_fails_before_touching_live_data(target, s3, good_run, restore_run):
    prefix = f"{_prefix()}{good_run['timestamp']}/"
    key = prefix + "databases/users.db"
    body = bytearray(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[200] ^= 0xFF
    # Re-uploaded with a matching S3 checksum: only the manifest can tell.
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(body), ChecksumAlgorithm="SHA256")
    live = f"{RESTORED_INSTANCE}/users.db"
    target.check_output(f"echo canary > {RESTORED_INSTANCE}/uploads/canary.txt")
    sums_before = target.check_output(f"sha256sum {RESTORED_INSTANCE}/*.db")
    since = target.check_output("systemctl show -p ActiveEnterTimestampMonotonic chatmrpt")
    result = target.run(f"/usr/local/sbin/chatmrpt-restore --host {SOURCE} --backup {good_run['timestamp']} --verbose")
    assert result.rc == 1, result.stderr
    assert "databases/users.db" in result.stderr and "live data not touched" in result.stderr
    assert "stopping chatmrpt" not in result.stderr
    assert target.check_output(f"sha256sum {RESTORED_INSTANCE}/*.db") == sums_before
    assert target.file(live).sha256sum != hashlib.sha256(bytes(body)).hexdigest()
    assert target.file(f"{RESTORED_INSTANCE}/uploads/canary.txt").exists
    assert target.check_output("systemctl show -p ActiveEnterTimestampMonotonic chatmrpt") == since
    assert target.service("chatmrpt").is_running


def test_a_backup_another_writer_plants_for_the_source_is_ignored(target, s3, good_run, restore_run):
    """Another instance can write only under its own id; a newer backup it writes there in the
    source's name (manifest host = the source) is not one of the source's backups."""
    planted = f"{_prefix().rsplit(':', 1)[0]}:chatmrpt-mol-evil/29991231T235959Z/"
    for name, body in good_run["objects"].items():
        s3.put_object(Bucket=BUCKET, Key=planted + name, Body=body, ChecksumAlgorithm="SHA256")
    try:
        listed = target.check_output(f"/usr/local/sbin/chatmrpt-restore --host {SOURCE} --list").split()
        assert good_run["timestamp"] in listed and "29991231T235959Z" not in listed, listed
    finally:
        for name in good_run["objects"]:
            s3.delete_object(Bucket=BUCKET, Key=planted + name)
