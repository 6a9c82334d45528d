"""Backup now (playbooks/backup_now.yml) and restore (playbooks/restore.yml) on the shared
local estate. The tests run top to bottom on the second app instance (the recovery drill
replaces the first one later in the session) and leave it serving.

Flow: rows written on the host -> backup now of that host only (a new verified backup in
S3, the other host gets none) -> more rows -> --check plans and changes nothing -> bad
choices are refused before anything changes -> restore of the chosen backup puts its data
back -> a rerun changes nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

import pytest

from emulator import client, running_app_instances, tags_of

pytestmark = pytest.mark.slow

BUCKET = "chatmrpt-local-backups"
PREFIX = "local/"
TARGET_NAME = "ChatMRPT-Local-App-2"
OTHER_NAME = "ChatMRPT-Local-App-1"
SHARED = "/srv/chatmrpt/chatmrpt_shared"
UNKNOWN_BACKUP = "20000101T000000Z"


def aws(estate, service):
    return client(estate.env, service)


def app_instances(estate) -> dict[str, dict]:
    """Running app instances of the local estate by Name tag: {name: {id, ip}}."""
    return {tags_of(i["Tags"])["Name"]: {"id": i["InstanceId"], "ip": i["PrivateIpAddress"]}
            for i in running_app_instances(estate.env)}


def writer(estate, host: str) -> str:
    """The key prefix a host writes under: its user id, `<instance role's id>:<instance id>`
    (it assumes the role with its instance id as session name, as EC2 does)."""
    role_id = aws(estate, "iam").get_role(RoleName="ChatMRPT-Local-EC2-Role")["Role"]["RoleId"]
    return f"{PREFIX}{role_id}:{host}/"


def backups(estate, host: str) -> list[str]:
    """Finished backups (with a manifest) of a host in the emulator's S3."""
    keys = []
    for page in aws(estate, "s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=writer(estate, host)):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(key.split("/")[-2] for key in keys if key.endswith("/manifest.json"))


def manifest(estate, host: str, timestamp: str) -> dict:
    body = aws(estate, "s3").get_object(Bucket=BUCKET, Key=f"{writer(estate, host)}{timestamp}/manifest.json")["Body"]
    return json.loads(body.read())


def http_json(url: str, method: str = "GET") -> dict:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def stats(host: dict) -> dict:
    return http_json(f"http://{host['ip']}:8000/api/stats")


def add_rows(host: dict, count: int) -> None:
    for _ in range(count):
        http_json(f"http://{host['ip']}:8000/api/users", "POST")
        http_json(f"http://{host['ip']}:8000/api/sessions", "POST")


def on_host(estate, host: dict, *cmd: str) -> str:
    proc = subprocess.run(["podman", "exec", host["id"], *cmd], env=estate.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def service_started(estate, host: dict) -> str:
    return on_host(estate, host, "systemctl", "show", "chatmrpt", "-p", "ActiveEnterTimestampMonotonic").strip()


def pre_restore_dirs(estate, host: dict) -> list[str]:
    return sorted(on_host(estate, host, "find", SHARED, "-maxdepth", "1", "-name", ".chatmrpt-pre-restore-*").split())


@pytest.fixture(scope="module")
def hosts(local_estate):
    found = app_instances(local_estate)
    assert {TARGET_NAME, OTHER_NAME} <= set(found), found
    return found[TARGET_NAME], found[OTHER_NAME]


@pytest.fixture(scope="module")
def backed_up(local_estate, hosts):
    """Rows written on the target, then backup_now.yml --limit <target>: the run, the new
    backup's timestamp and the target's row counts at that backup."""
    target, other = hosts
    add_rows(target, 3)
    before = {"target": backups(local_estate, target["id"]), "other": backups(local_estate, other["id"])}
    at_backup = stats(target)
    run = local_estate.playbook("playbooks/backup_now.yml", "--limit", target["id"])
    match = re.search(rf"BACKUP OK host={target['id']} backup=(\d{{8}}T\d{{6}}Z) location=(\S+) verified=true", run.output)
    return {"run": run, "before": before, "timestamp": match.group(1) if match else None,
            "location": match.group(2) if match else None, "stats": at_backup}


def test_backup_now_backs_up_the_chosen_host_only(local_estate, hosts, backed_up):
    target, other = hosts
    run = backed_up["run"]
    assert run.returncode == 0, run.output[-6000:]
    assert backed_up["timestamp"], run.output[-4000:]
    assert target["id"] in run.recap and other["id"] not in run.recap, run.recap
    assert run.recap[target["id"]]["changed"] >= 1
    assert backed_up["location"] == f"s3://{BUCKET}/{writer(local_estate, target['id'])}{backed_up['timestamp']}/"
    after = backups(local_estate, target["id"])
    assert set(after) - set(backed_up["before"]["target"]) == {backed_up["timestamp"]}
    assert backups(local_estate, other["id"]) == backed_up["before"]["other"]


def test_the_new_backup_holds_every_database_with_its_row_counts(local_estate, hosts, backed_up):
    target, _ = hosts
    content = manifest(local_estate, target["id"], backed_up["timestamp"])
    assert content["complete"] is True and content["host"] == target["id"]
    databases = {entry["source"]: entry for entry in content["files"] if entry["kind"] == "sqlite"}
    assert set(databases) >= {"interactions.db", "users.db"}
    for name, tables in backed_up["stats"].items():
        for table, count in tables.items():
            assert databases[name]["rows"][table] == count, (name, table)


def test_backup_now_in_check_mode_makes_nothing(local_estate, hosts, backed_up):
    target, _ = hosts
    existing = backups(local_estate, target["id"])
    run = local_estate.playbook("playbooks/backup_now.yml", "--limit", target["id"], "--check")
    assert run.returncode == 0, run.output[-6000:]
    assert f"PLAN backup of {target['id']}" in run.output
    assert f"latest existing: {existing[-1]}" in run.output
    assert run.changed == 0, run.changed_tasks()
    assert backups(local_estate, target["id"]) == existing


@pytest.fixture(scope="module")
def changed_since(local_estate, hosts, backed_up):
    """The target's data after the backup: two more users and sessions."""
    target, _ = hosts
    add_rows(target, 2)
    now = stats(target)
    assert now != backed_up["stats"]
    return now


def test_restore_in_check_mode_shows_the_plan_and_changes_nothing(local_estate, hosts, backed_up, changed_since):
    target, _ = hosts
    started, kept = service_started(local_estate, target), pre_restore_dirs(local_estate, target)
    run = local_estate.playbook("playbooks/restore.yml", "--limit", target["id"], "--check",
                                "-e", f"recovery_restore_backup={backed_up['timestamp']}")
    assert run.returncode == 0, run.output[-6000:]
    assert f"PLAN restore backup {backed_up['timestamp']} of {target['id']} onto {target['id']}" in run.output
    assert "databases differ" in run.output
    assert stats(target) == changed_since
    assert service_started(local_estate, target) == started
    assert pre_restore_dirs(local_estate, target) == kept


@pytest.mark.parametrize("args, message", [
    (["-e", f"recovery_restore_backup={UNKNOWN_BACKUP}"], f"backup {UNKNOWN_BACKUP} not found. Available"),
    (["-e", "recovery_restore_backup=yesterday"], "recovery_restore_backup must be `latest` or a backup timestamp"),
], ids=["unknown-backup", "malformed-backup"])
def test_a_bad_choice_is_refused_before_anything_changes(local_estate, hosts, changed_since, args, message):
    target, _ = hosts
    started, kept = service_started(local_estate, target), pre_restore_dirs(local_estate, target)
    run = local_estate.playbook("playbooks/restore.yml", "--limit", target["id"], *args)
    assert run.returncode != 0
    assert "RESTORE REFUSED" in run.output and message in run.output, run.output[-4000:]
    assert "Nothing was changed" in run.output
    assert run.changed == 0, run.changed_tasks()
    assert stats(target) == changed_since
    assert service_started(local_estate, target) == started
    assert pre_restore_dirs(local_estate, target) == kept


def test_one_source_for_several_hosts_is_refused(local_estate, hosts, changed_since):
    target, other = hosts
    before_other = stats(other)
    run = local_estate.playbook("playbooks/restore.yml", "-e", f"recovery_restore_source_host={target['id']}")
    assert run.returncode != 0
    assert "would put the same data on 2 hosts" in run.output, run.output[-4000:]
    assert run.changed == 0, run.changed_tasks()
    assert stats(target) == changed_since and stats(other) == before_other


def test_restore_puts_the_chosen_backup_back(local_estate, hosts, backed_up, changed_since):
    target, _ = hosts
    kept = pre_restore_dirs(local_estate, target)
    run = local_estate.playbook("playbooks/restore.yml", "--limit", target["id"],
                                "-e", f"recovery_restore_backup={backed_up['timestamp']}")
    assert run.returncode == 0, run.output[-6000:]
    assert re.search(rf"RESTORE OK host={target['id']} source={target['id']} backup={backed_up['timestamp']} "
                     r"databases=\d+ rows=\d+ changed=true", run.output), run.output[-4000:]
    assert stats(target) == backed_up["stats"]
    # The data it replaced is kept next to instance/ for the operator.
    assert len(pre_restore_dirs(local_estate, target)) == len(kept) + 1
    status = http_json(f"http://{target['ip']}:8000/health")
    assert status["overall"] == "healthy"


def test_restoring_the_same_backup_again_changes_nothing(local_estate, hosts, backed_up):
    target, _ = hosts
    started = service_started(local_estate, target)
    run = local_estate.playbook("playbooks/restore.yml", "--limit", target["id"],
                                "-e", f"recovery_restore_backup={backed_up['timestamp']}")
    assert run.returncode == 0, run.output[-6000:]
    assert "changed=false" in run.output
    assert run.changed == 0, run.changed_tasks()
    assert service_started(local_estate, target) == started
    assert stats(target) == backed_up["stats"]
