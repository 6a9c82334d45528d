#!/usr/bin/python3
# Managed by Ansible (role `backup`): local changes are overwritten.
"""ChatMRPT backup and restore (one program, installed as chatmrpt-backup and chatmrpt-restore).

chatmrpt-backup: every SQLite database under instance/ (found by its header), copied
online with the SQLite backup API and checked with PRAGMA integrity_check; the archived
instance directories (uploads/) as tar.gz without the databases; the app's .env with every
value outside the public keys redacted; a manifest.json (path, size, sha256 of each file).
Uploaded to s3://<bucket>/<prefix><writer>/<timestamp>/ with SHA-256 checksums, verified
(head_object size and checksum), marked `.uploaded`; local copies older than the retention
are deleted only when marked. Publishes the CloudWatch metric BackupSuccess (1/0). <writer>
is the caller's user id as AWS reports it (sts:GetCallerIdentity): on EC2
`<role id>:<instance id>`, the `${aws:userid}` under which the instance role's policy lets
each instance write, so no instance can write into another's backups.

chatmrpt-restore: fetches a backup (latest complete one of this host by default, or
--backup TIMESTAMP, --host SOURCE_HOST: the backups a writer `<anything>:<host>` or `<host>`
wrote, and whose manifest names that host), verifies every file against the manifest before
touching live data, stops the app, swaps the databases and archived directories in (the
replaced data is kept in a .chatmrpt-pre-restore-<timestamp> directory next to instance/),
fixes ownership and starts the app again.

Exit codes: 0 success; 1 failure; 2 bad usage or configuration; 3 (backup only) the backup
succeeded but the metric could not be published.

Python 3.9+ standard library and boto3 (the OS package python3-boto3). The endpoint URL is
passed to boto3 explicitly: the boto3 of Debian 12 predates AWS_ENDPOINT_URL support.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import contextlib
import datetime as dt
import fcntl
import grp
import hashlib
import json
import logging
import logging.handlers
import os
import pwd
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

DEFAULT_CONFIG = "/etc/chatmrpt-backup.ini"
SQLITE_HEADER = b"SQLite format 3\x00"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
TIMESTAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")
ENV_LINE_RE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
UPLOADED_MARKER = ".uploaded"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
CHUNK = 1024 * 1024
PUT_OBJECT_LIMIT = 5 * 1024 ** 3

log = logging.getLogger("chatmrpt-backup")


class BackupError(Exception):
    """A failure that the log explains; the program exits non-zero."""


class ConfigError(Exception):
    """Bad configuration or usage (exit code 2)."""


# --- configuration ------------------------------------------------------------------------

class Config:
    """The [backup] section of the INI file written by the role (lists are JSON)."""

    LISTS = ("archive_dirs", "env_files", "env_public_keys", "config_files")
    REQUIRED = ("bucket", "environment", "host", "instance_dir", "local_dir", "region")

    def __init__(self, path: str, overrides: dict[str, str]):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration {path}: {exc}") from exc
        if not parser.has_section("backup"):
            raise ConfigError(f"{path} has no [backup] section")
        values = dict(parser.items("backup"))
        values.update({key: value for key, value in overrides.items() if value is not None})
        self.path = path
        for key in self.REQUIRED:
            if not values.get(key, "").strip():
                raise ConfigError(f"{path}: `{key}` is required")
        for key in self.LISTS:
            try:
                parsed = json.loads(values.get(key, "[]") or "[]")
            except ValueError as exc:
                raise ConfigError(f"{path}: `{key}` must be a JSON list: {exc}") from exc
            if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
                raise ConfigError(f"{path}: `{key}` must be a JSON list of strings")
            values[key] = parsed
        self.bucket = values["bucket"].strip()
        self.s3_prefix = values.get("s3_prefix", "").strip()
        self.environment = values["environment"].strip()
        self.host = values["host"].strip()
        self.instance_dir = Path(values["instance_dir"].strip())
        self.archive_dirs = values["archive_dirs"]
        self.env_files = values["env_files"]
        self.env_public_keys = set(values["env_public_keys"])
        self.config_files = values["config_files"]
        self.local_dir = Path(values["local_dir"].strip())
        self.region = values["region"].strip()
        self.metric_namespace = values.get("metric_namespace", "").strip()
        endpoint = values.get("endpoint_url", "").strip() or os.environ.get("AWS_ENDPOINT_URL", "")
        self.s3_endpoint_url = values.get("s3_endpoint_url", "").strip() or endpoint
        self.cloudwatch_endpoint_url = values.get("cloudwatch_endpoint_url", "").strip() or endpoint
        self.log_file = values.get("log_file", "").strip()
        # Emulator only (the role writes it when backup_aws_emulator_credentials is on):
        # on EC2 boto3 takes the instance profile's credentials.
        self.credentials_file = values.get("credentials_file", "").strip()
        # Emulator only: the role the scripts assume with the host as session name, as EC2
        # does with the instance profile, so the emulator knows each host by its own id.
        self.emulator_role_arn = values.get("emulator_role_arn", "").strip()
        self.restore_log_file = values.get("restore_log_file", "").strip()
        self.app_service = values.get("app_service", "").strip()
        self.app_user = values.get("app_user", "").strip()
        self.app_group = values.get("app_group", "").strip()
        try:
            self.retention_days = int(values.get("retention_days", "7"))
            self.service_timeout = int(values.get("service_timeout", "60"))
        except ValueError as exc:
            raise ConfigError(f"{path}: retention_days and service_timeout must be integers: {exc}") from exc
        if self.retention_days < 1:
            raise ConfigError(f"{path}: retention_days must be 1 or more")
        if self.s3_prefix and not self.s3_prefix.endswith("/"):
            raise ConfigError(f"{path}: s3_prefix must be empty or end with /")
        if not self.instance_dir.is_absolute() or not self.local_dir.is_absolute():
            raise ConfigError(f"{path}: instance_dir and local_dir must be absolute paths")
        for name in self.archive_dirs:
            if not name or name.startswith("/") or ".." in Path(name).parts:
                raise ConfigError(f"{path}: archive_dirs entries must be relative to instance_dir, got {name!r}")
        if "/" in self.host or not self.host:
            raise ConfigError(f"{path}: host must be a name without /, got {self.host!r}")
        if self.emulator_role_arn and not (endpoint and self.credentials_file):
            raise ConfigError(f"{path}: emulator_role_arn needs endpoint_url and credentials_file (emulator only)")
        self.sts_endpoint_url = endpoint


def setup_logging(log_file: str, ident: str, verbose: bool) -> None:
    """Log to the file, to syslog/the journal and (interactive or --verbose) to stderr."""
    log.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    if log_file:
        try:
            handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot open the log file {log_file}: {exc}") from exc
        handler.setFormatter(formatter)
        log.addHandler(handler)
    if os.path.exists("/dev/log"):
        with contextlib.suppress(OSError):
            syslog = logging.handlers.SysLogHandler(address="/dev/log")
            syslog.setFormatter(logging.Formatter(f"{ident}[{os.getpid()}]: %(levelname)s %(message)s"))
            log.addHandler(syslog)
    if verbose or sys.stderr.isatty():
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        log.addHandler(console)


def aws_client(service: str, config: Config, endpoint_url: str):
    import boto3  # imported late: --help and configuration errors work without it
    from botocore.config import Config as BotoConfig

    return boto3.client(
        service,
        region_name=config.region,
        endpoint_url=endpoint_url or None,
        config=BotoConfig(connect_timeout=10, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"}),
    )


def assume_emulator_role(config: Config) -> None:
    """Emulator only: assume the instance role with the host as session name (what EC2 does
    for an instance profile); the scripts then act as `<role id>:<host>`."""
    import boto3

    # A session of its own: boto3's default one would keep the dummy credentials for good.
    sts = boto3.session.Session().client("sts", region_name=config.region, endpoint_url=config.sts_endpoint_url)
    credentials = sts.assume_role(RoleArn=config.emulator_role_arn, RoleSessionName=config.host)["Credentials"]
    os.environ.update(AWS_ACCESS_KEY_ID=credentials["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=credentials["SecretAccessKey"],
                      AWS_SESSION_TOKEN=credentials["SessionToken"])


def writer_id(config: Config) -> str:
    """This host's user id as AWS knows it: the segment of the S3 keys it may write."""
    writer = aws_client("sts", config, config.sts_endpoint_url).get_caller_identity()["UserId"]
    if not writer or "/" in writer:
        raise BackupError(f"unusable caller id {writer!r} for an S3 key segment")
    return writer


def written_for(segment: str, host: str) -> bool:
    """Whether a writer segment is the host's own: `<role id>:<host>` (an instance role's
    session, named after the instance) or `<host>`."""
    return segment == host or segment.endswith(":" + host)


# --- helpers --------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def hex_to_b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode("ascii")


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_timestamp(name: str) -> dt.datetime | None:
    if not TIMESTAMP_RE.match(name):
        return None
    try:
        return dt.datetime.strptime(name, TIMESTAMP_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def integrity_check(path: Path) -> str:
    conn = sqlite3.connect(str(path))
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(row[0]) for row in rows)


def table_rows(path: Path) -> dict[str, int]:
    """Row count of every table (the manifest records them: a restore can be checked against them)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: conn.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchone()[0]  # noqa: S608
                for name in names}
    finally:
        conn.close()


# --- backup -----------------------------------------------------------------------------------

def find_databases(instance: Path) -> tuple[list[Path], list[str]]:
    """Every SQLite file under instance/ (by header, any extension); warnings for *.db that are not."""
    databases, warnings = [], []
    for root, dirs, files in os.walk(instance):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            if is_sqlite(path):
                databases.append(path)
            elif name.endswith((".db", ".sqlite", ".sqlite3")) and not name.endswith(SQLITE_COMPANIONS):
                size = path.stat().st_size
                if size:
                    warnings.append(f"{path.relative_to(instance)} ends in a database extension but is not SQLite ({size} bytes): not copied as a database")
    return databases, warnings


def copy_database(source: Path, target: Path) -> None:
    """Online-consistent copy with the SQLite backup API (one step: a consistent snapshot)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=120)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def redact_env(text: str, public: set[str]) -> tuple[str, list[str], int]:
    """Keep the public keys' values, replace every other value; drop comments and odd lines."""
    lines = ["# Redacted copy made by chatmrpt-backup: values of non-public keys are removed."]
    redacted, dropped = [], 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = ENV_LINE_RE.match(line)
        if not match:
            dropped += 1
            continue
        key = match.group(1)
        if key in public:
            lines.append(f"{key}={match.group(2).strip()}")
        else:
            lines.append(f"{key}=<redacted>")
            redacted.append(key)
    return "\n".join(lines) + "\n", redacted, dropped


def file_entry(workdir: Path, relative: str, kind: str, **extra) -> dict:
    path = workdir / relative
    info = path.stat()
    entry = {"path": relative, "kind": kind, "size": info.st_size, "sha256": sha256_file(path)}
    entry.update(extra)
    return entry


def build_local_backup(config: Config, workdir: Path, timestamp: str, errors: list[str]) -> dict:
    instance = config.instance_dir.resolve()
    if not instance.is_dir():
        raise BackupError(f"instance directory {config.instance_dir} does not exist")
    log.info("step 1/6 databases: searching %s for SQLite files", instance)
    databases, warnings = find_databases(instance)
    for warning in warnings:
        log.warning(warning)
    if not databases:
        raise BackupError(f"no SQLite database found under {instance}")
    files: list[dict] = []
    for source in databases:
        relative = source.relative_to(instance).as_posix()
        target_rel = f"databases/{relative}"
        target = workdir / target_rel
        try:
            copy_database(source, target)
            check = integrity_check(target)
            rows = table_rows(target)
        except (sqlite3.Error, OSError) as exc:
            errors.append(f"database {relative}: copy failed: {exc}")
            log.error("database %s: copy failed: %s", relative, exc)
            with contextlib.suppress(OSError):
                target.unlink()
            continue
        if check != "ok":
            errors.append(f"database {relative}: integrity_check said {check!r}")
            log.error("database %s: integrity_check said %r; not uploaded", relative, check)
            target.unlink()
            continue
        entry = file_entry(workdir, target_rel, "sqlite", source=relative, integrity_check=check,
                           tables=len(rows), rows=rows, mode=stat.S_IMODE(source.stat().st_mode))
        files.append(entry)
        log.info("database %s: copied (%d bytes, %d tables, %d rows, integrity_check ok, sha256 %s)",
                 relative, entry["size"], len(rows), sum(rows.values()), entry["sha256"])

    log.info("step 2/6 archives: %s", ", ".join(config.archive_dirs) or "none")
    database_set = {path.resolve() for path in databases}
    for name in config.archive_dirs:
        directory = instance / name
        if not directory.is_dir():
            log.warning("archive %s: %s does not exist, nothing to archive", name, directory)
            continue
        archive_rel = f"archives/{name.replace('/', '_')}.tar.gz"
        excluded: list[str] = []
        skipped_links: list[str] = []

        def keep(info: tarfile.TarInfo, excluded=excluded, skipped_links=skipped_links):
            path = (instance / info.name)
            if info.issym() or info.islnk() or not (info.isfile() or info.isdir()):
                skipped_links.append(info.name)
                return None
            if info.isfile():
                resolved = path.resolve()
                base = str(resolved)
                if resolved in database_set:
                    excluded.append(info.name)
                    return None
                if base.endswith(SQLITE_COMPANIONS) and Path(base.rsplit("-", 1)[0]) in database_set:
                    return None
            return info

        (workdir / archive_rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(workdir / archive_rel, "w:gz", format=tarfile.PAX_FORMAT) as archive:
                archive.add(str(directory), arcname=name, recursive=True, filter=keep)
        except (OSError, tarfile.TarError) as exc:
            errors.append(f"archive {name}: {exc}")
            log.error("archive %s: failed: %s", name, exc)
            continue
        for link in skipped_links:
            log.warning("archive %s: %s is not a regular file or directory, skipped", name, link)
        with tarfile.open(workdir / archive_rel, "r:gz") as archive:
            members = sum(1 for member in archive.getmembers() if member.isfile())
        entry = file_entry(workdir, archive_rel, "archive", source=name, files=members,
                           excluded_databases=sorted(excluded), mode=stat.S_IMODE(directory.stat().st_mode))
        files.append(entry)
        log.info("archive %s: %d files, %d bytes (databases excluded: %d, copied separately)",
                 name, members, entry["size"], len(excluded))

    log.info("step 3/6 configuration: %d env file(s) redacted, %d file(s) copied",
             len(config.env_files), len(config.config_files))
    for name in config.env_files + config.config_files:
        source = Path(name)
        target_rel = f"config/{source.as_posix().lstrip('/')}"
        if not source.is_file():
            log.warning("configuration %s does not exist, not backed up", source)
            continue
        target = workdir / target_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = source.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            errors.append(f"configuration {source}: {exc}")
            log.error("configuration %s: cannot read: %s", source, exc)
            continue
        if name in config.env_files:
            content, redacted, dropped = redact_env(text, config.env_public_keys)
            target.write_text(content, encoding="utf-8")
            files.append(file_entry(workdir, target_rel, "config", source=name,
                                    redacted_keys=sorted(redacted), dropped_lines=dropped))
            log.info("configuration %s: %d value(s) redacted", source, len(redacted))
        else:
            target.write_text(text, encoding="utf-8")
            files.append(file_entry(workdir, target_rel, "config", source=name, redacted_keys=[]))
            log.info("configuration %s: copied", source)

    return {
        "format": MANIFEST_FORMAT,
        "environment": config.environment,
        "host": config.host,
        "hostname": socket.gethostname(),
        "timestamp": timestamp,
        "instance_dir": str(config.instance_dir),
        "complete": not errors,
        "errors": list(errors),
        "files": files,
    }


def upload_and_verify(s3, config: Config, workdir: Path, prefix: str, entries: list[dict]) -> None:
    """put_object with a SHA-256 checksum; head_object's size and checksum must match the local file's."""
    for entry in entries:
        key = prefix + entry["path"]
        if entry["size"] > PUT_OBJECT_LIMIT:
            raise BackupError(f"{entry['path']} is {entry['size']} bytes, over the 5 GiB single-upload limit")
        checksum = hex_to_b64(entry["sha256"])
        with open(workdir / entry["path"], "rb") as body:
            s3.put_object(Bucket=config.bucket, Key=key, Body=body, ContentLength=entry["size"],
                          ChecksumAlgorithm="SHA256", Metadata={"sha256": entry["sha256"]})
        head = s3.head_object(Bucket=config.bucket, Key=key, ChecksumMode="ENABLED")
        if head.get("ContentLength") != entry["size"]:
            raise BackupError(f"s3://{config.bucket}/{key}: size {head.get('ContentLength')} != {entry['size']}")
        if head.get("ChecksumSHA256") != checksum:
            raise BackupError(f"s3://{config.bucket}/{key}: SHA-256 checksum {head.get('ChecksumSHA256')} != {checksum}")
        log.info("uploaded and verified s3://%s/%s (%d bytes)", config.bucket, key, entry["size"])


def publish_metric(config: Config, success: bool) -> bool:
    if not config.metric_namespace:
        log.warning("metric: no metric_namespace configured, BackupSuccess not published")
        return False
    try:
        cloudwatch = aws_client("cloudwatch", config, config.cloudwatch_endpoint_url)
        cloudwatch.put_metric_data(Namespace=config.metric_namespace, MetricData=[{
            "MetricName": "BackupSuccess",
            "Dimensions": [{"Name": "Environment", "Value": config.environment},
                           {"Name": "Host", "Value": config.host}],
            "Timestamp": utc_now(),
            "Value": 1.0 if success else 0.0,
            "Unit": "Count",
        }])
    except Exception as exc:  # noqa: BLE001 - any failure to publish is logged, never fatal to the result
        log.error("metric: publishing BackupSuccess=%d to %s failed: %s", int(success), config.metric_namespace, exc)
        return False
    log.info("metric: BackupSuccess=%d published to %s (Environment=%s, Host=%s)",
             int(success), config.metric_namespace, config.environment, config.host)
    return True


def prune_local(config: Config, keep: str | None = None) -> None:
    """Delete local backups older than the retention, only those marked uploaded."""
    cutoff = utc_now() - dt.timedelta(days=config.retention_days)
    for path in sorted(config.local_dir.iterdir()):
        when = parse_timestamp(path.name)
        if when is None or not path.is_dir() or path.name == keep or when >= cutoff:
            continue
        if not (path / UPLOADED_MARKER).is_file():
            log.warning("retention: %s is older than %d days but was never uploaded: kept", path, config.retention_days)
            continue
        shutil.rmtree(path)
        log.info("retention: deleted %s (uploaded, older than %d days)", path, config.retention_days)


def new_workdir(local_dir: Path) -> tuple[str, Path]:
    for _ in range(5):
        timestamp = utc_now().strftime(TIMESTAMP_FORMAT)
        workdir = local_dir / timestamp
        try:
            workdir.mkdir(mode=0o750)
            return timestamp, workdir
        except FileExistsError:
            time.sleep(1)
    raise BackupError(f"cannot create a new backup directory in {local_dir}")


def run_backup(config: Config, prune_only: bool) -> int:
    config.local_dir.mkdir(parents=True, exist_ok=True)
    lock = open(config.local_dir / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log.error("another chatmrpt-backup holds %s/.lock: not started", config.local_dir)
        return 1
    if prune_only:
        prune_local(config)
        return 0
    errors: list[str] = []
    timestamp, workdir = new_workdir(config.local_dir)
    log.info("backup %s of %s (%s) started in %s", timestamp, config.host, config.environment, workdir)
    success = False
    try:
        manifest = build_local_backup(config, workdir, timestamp, errors)
        (workdir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        manifest_entry = file_entry(workdir, MANIFEST, "manifest")
        prefix = f"{config.s3_prefix}{writer_id(config)}/{timestamp}/"
        log.info("step 4/6 upload: %d files to s3://%s/%s", len(manifest["files"]) + 1, config.bucket, prefix)
        s3 = aws_client("s3", config, config.s3_endpoint_url)
        # The manifest goes last: a prefix with a manifest is a finished backup.
        upload_and_verify(s3, config, workdir, prefix, manifest["files"] + [manifest_entry])
        (workdir / UPLOADED_MARKER).write_text(f"s3://{config.bucket}/{prefix}\n", encoding="utf-8")
        log.info("step 5/6 marked %s as uploaded", workdir)
        success = not errors
    except BackupError as exc:
        log.error("backup failed: %s", exc)
    except Exception as exc:  # noqa: BLE001 - S3/network/OS errors of any kind fail the run, logged
        log.exception("backup failed: %s: %s", type(exc).__name__, exc)
    for error in errors:
        log.error("backup incomplete: %s", error)
    try:
        log.info("step 6/6 retention: local backups older than %d days", config.retention_days)
        prune_local(config, keep=timestamp)
    except OSError as exc:
        log.error("retention failed: %s", exc)
        success = False
    published = publish_metric(config, success)
    if not success:
        log.error("backup %s FAILED (local copy kept in %s)", timestamp, workdir)
        return 1
    log.info("backup %s succeeded", timestamp)
    return 0 if published else 3


# --- restore ----------------------------------------------------------------------------------

def list_backups(s3, config: Config, host: str) -> dict[str, str]:
    """The host's backups: {timestamp: key prefix}, under every writer segment of the host
    (one per instance role it had). The same timestamp under two writers is refused."""
    paginator = s3.get_paginator("list_objects_v2")
    writers = [common["Prefix"]
               for page in paginator.paginate(Bucket=config.bucket, Prefix=config.s3_prefix, Delimiter="/")
               for common in page.get("CommonPrefixes", [])
               if written_for(common["Prefix"][len(config.s3_prefix):].rstrip("/"), host)]
    backups: dict[str, str] = {}
    for writer in writers:
        for page in paginator.paginate(Bucket=config.bucket, Prefix=writer, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(writer):].rstrip("/")
                if not parse_timestamp(name):
                    continue
                if name in backups:
                    raise BackupError(f"backup {name} of host {host} exists under two writers "
                                      f"({backups[name]}, {common['Prefix']}): restore it by hand")
                backups[name] = common["Prefix"]
    return dict(sorted(backups.items()))


def download(s3, config: Config, key: str, target: Path) -> tuple[int, str, str | None]:
    """Stream an object to a file: (size, sha256 hex, the object's stored SHA-256 checksum)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    response = s3.get_object(Bucket=config.bucket, Key=key, ChecksumMode="ENABLED")
    digest, size = hashlib.sha256(), 0
    with open(target, "wb") as handle:
        for block in response["Body"].iter_chunks(CHUNK):
            handle.write(block)
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest(), response.get("ChecksumSHA256")


def fetch_manifest(s3, config: Config, host: str, prefix: str, staging: Path) -> dict:
    key = f"{prefix}{MANIFEST}"
    try:
        _, digest, stored = download(s3, config, key, staging / MANIFEST)
    except Exception as exc:  # noqa: BLE001 - missing or unreadable manifest: not a usable backup
        raise BackupError(f"s3://{config.bucket}/{key}: cannot fetch the manifest: {exc}") from exc
    if stored != hex_to_b64(digest):
        raise BackupError(f"s3://{config.bucket}/{key}: the manifest does not match its SHA-256 checksum")
    manifest = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), list):
        raise BackupError(f"s3://{config.bucket}/{key}: unknown manifest format")
    if manifest.get("host") != host:
        raise BackupError(f"s3://{config.bucket}/{key}: the manifest is of host {manifest.get('host')!r}, not {host}")
    return manifest


def safe_relative(name: str) -> bool:
    """A plain relative path: nothing that climbs out of, or ignores, the directory it is
    joined to (``/etc``, ``../x``, ``a/../../x``, empty, a NUL byte)."""
    if not isinstance(name, str) or "\x00" in name:
        return False
    parts = Path(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts


def check_manifest(manifest: dict) -> None:
    """Refuse a downloaded manifest that could make the restore (root) write outside the
    instance directory: each entry's ``path`` (under the backup) and the ``source`` of each
    archive and database (under ``instance_dir``) must be plain relative paths."""
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(entry, dict) for entry in files):
        raise BackupError("manifest has no list of files")
    for entry in files:
        if not safe_relative(entry.get("path", "")):
            raise BackupError(f"manifest lists an unsafe path {entry.get('path')!r}")
        if entry.get("kind") in ("archive", "sqlite") and not safe_relative(entry.get("source", "")):
            raise BackupError(f"manifest lists an unsafe {entry['kind']} source {entry.get('source')!r}")
        if not isinstance(entry.get("mode", 0), int):
            raise BackupError(f"manifest lists a mode that is not a number: {entry.get('mode')!r}")


def permission_bits(mode: int) -> int:
    """A mode from a backup, without setuid, setgid or sticky bits (restore runs as root)."""
    return mode & 0o777


def extract_archive(archive_path: Path, target: Path, name: str) -> None:
    """Extract an uploads archive: only regular files and directories under `name/`."""
    with tarfile.open(archive_path, "r:gz") as archive:
        members = archive.getmembers()
        for member in members:
            if not safe_relative(member.name) or Path(member.name).parts[0] != Path(name).parts[0]:
                raise BackupError(f"{archive_path.name}: unsafe member {member.name!r}")
            if not (member.isfile() or member.isdir()):
                raise BackupError(f"{archive_path.name}: {member.name!r} is not a regular file or directory")
            member.mode = permission_bits(member.mode)
        archive.extractall(str(target), members=members)  # noqa: S202 - members checked above


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def systemctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)


def wait_active(service: str, timeout: int) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if systemctl("is-active", "--quiet", service).returncode == 0:
            return True
        time.sleep(1)
    return False


def make_dirs_owned(path: Path, uid: int, gid: int) -> None:
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o750)
        if os.geteuid() == 0:
            os.chown(directory, uid, gid)


def run_restore(config: Config, args) -> int:
    host = args.host or config.host
    if "/" in host:
        raise ConfigError(f"--host must be a name without /, got {host!r}")
    if os.geteuid() != 0 and not args.verify_only:
        raise ConfigError("chatmrpt-restore must run as root (it stops the service and sets ownership)")
    try:
        user = pwd.getpwnam(config.app_user)
        group = grp.getgrnam(config.app_group)
    except KeyError as exc:
        raise ConfigError(f"app user/group {config.app_user}:{config.app_group} unknown: {exc}") from exc
    uid, gid = user.pw_uid, group.gr_gid

    s3 = aws_client("s3", config, config.s3_endpoint_url)
    backups = list_backups(s3, config, host)
    names = list(backups)
    if args.list:
        for name in names:
            print(name)
        return 0
    if not names:
        raise BackupError(f"no backup of host {host} under s3://{config.bucket}/{config.s3_prefix}")

    instance = config.instance_dir.resolve() if config.instance_dir.exists() else config.instance_dir
    parent = instance.parent
    make_dirs_owned(parent, uid, gid)
    stamp = utc_now().strftime(TIMESTAMP_FORMAT)
    staging = parent / f".chatmrpt-restore-{stamp}"
    staging.mkdir(mode=0o700)
    try:
        if args.backup == "latest":
            manifest = None
            for name in reversed(names):
                try:
                    candidate = fetch_manifest(s3, config, host, backups[name], staging)
                except BackupError as exc:
                    log.warning("backup %s of %s is unusable (%s), trying an older one", name, host, exc)
                    continue
                if candidate.get("complete"):
                    manifest = candidate
                    break
                log.warning("backup %s of %s is incomplete (%s), trying an older one", name, host,
                            "; ".join(candidate.get("errors", [])))
            if manifest is None:
                raise BackupError(f"no complete backup of host {host}")
        else:
            if args.backup not in names:
                raise BackupError(f"backup {args.backup} of host {host} not found (have: {', '.join(names[-5:])})")
            manifest = fetch_manifest(s3, config, host, backups[args.backup], staging)
            if not manifest.get("complete") and not args.allow_incomplete:
                raise BackupError(f"backup {args.backup} is incomplete ({'; '.join(manifest.get('errors', []))}); "
                                  "pass --allow-incomplete to restore it anyway")
        name = manifest["timestamp"]
        if manifest.get("environment") != config.environment:
            raise BackupError(f"backup {name} belongs to environment {manifest.get('environment')}, "
                              f"this host to {config.environment}: refused")
        prefix = backups[name]
        log.info("restore: backup s3://%s/%s (%d files) into %s", config.bucket, prefix, len(manifest["files"]), instance)

        # 1. Fetch and verify everything before touching live data.
        check_manifest(manifest)
        mismatches = []
        for entry in manifest["files"]:
            size, digest, stored = download(s3, config, prefix + entry["path"], staging / "files" / entry["path"])
            if size != entry["size"] or digest != entry["sha256"]:
                mismatches.append(f"{entry['path']}: got {size} bytes sha256 {digest}, manifest says "
                                  f"{entry['size']} bytes sha256 {entry['sha256']}")
            elif stored is not None and stored != hex_to_b64(digest):
                mismatches.append(f"{entry['path']}: S3 checksum {stored} does not match the content")
            else:
                log.info("verified %s (%d bytes, sha256 %s)", entry["path"], size, digest)
        if mismatches:
            for line in mismatches:
                log.error("restore: checksum mismatch: %s", line)
            raise BackupError(f"{len(mismatches)} file(s) do not match the manifest: live data not touched")

        # 2. Build the new tree in staging: archived directories, then the databases.
        tree = staging / "tree"
        tree.mkdir()
        units: list[str] = []  # instance-relative paths swapped in as a whole
        archives = [entry for entry in manifest["files"] if entry["kind"] == "archive"]
        databases = [entry for entry in manifest["files"] if entry["kind"] == "sqlite"]
        for entry in archives:
            extract_archive(staging / "files" / entry["path"], tree, entry["source"])
            if not (tree / entry["source"]).is_dir():
                (tree / entry["source"]).mkdir(parents=True)
            os.chmod(tree / entry["source"], permission_bits(entry.get("mode", 0o750)))
            units.append(entry["source"])
        for entry in databases:
            source = entry["source"]
            target = tree / source
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / "files" / entry["path"], target)
            os.chmod(target, permission_bits(entry.get("mode", 0o644)))
            if not any(Path(source).parts[:len(Path(unit).parts)] == Path(unit).parts for unit in units):
                units.append(source)
        if os.geteuid() == 0:
            for unit in units:
                chown_tree(tree / unit, uid, gid)
        if args.verify_only:
            log.info("restore: --verify-only: backup %s of %s verified, nothing changed (s3://%s/%s)",
                     name, host, config.bucket, prefix)
            return 0

        # 3. Stop the app, swap the data in (keeping what it replaces), start the app.
        service = config.app_service
        log.info("restore: stopping %s", service)
        stopped = systemctl("stop", service)
        if stopped.returncode != 0:
            raise BackupError(f"systemctl stop {service} failed: {stopped.stderr.strip()}")
        keep = parent / f".chatmrpt-pre-restore-{stamp}"
        done: list[tuple[str, bool]] = []
        try:
            make_dirs_owned(instance, uid, gid)
            for unit in units:
                live = instance / unit
                old = keep / unit
                moved = False
                for suffix in ("",) + SQLITE_COMPANIONS:
                    candidate = Path(str(live) + suffix)
                    if candidate.exists() or candidate.is_symlink():
                        Path(str(old) + suffix).parent.mkdir(parents=True, exist_ok=True)
                        os.replace(candidate, Path(str(old) + suffix))
                        moved = moved or suffix == ""
                make_dirs_owned(live.parent, uid, gid)
                os.replace(tree / unit, live)
                done.append((unit, moved))
                log.info("restore: %s in place%s", unit, " (previous kept)" if moved else "")
        except Exception:
            log.exception("restore: placing the data failed, putting the previous data back")
            for unit, moved in reversed(done):
                live = instance / unit
                if live.is_dir():
                    shutil.rmtree(live)
                elif live.exists():
                    live.unlink()
                if moved:
                    for suffix in ("",) + SQLITE_COMPANIONS:
                        previous = Path(str(keep / unit) + suffix)
                        if previous.exists():
                            os.replace(previous, Path(str(live) + suffix))
            systemctl("start", service)
            raise
        finally:
            if keep.exists():
                log.info("restore: the replaced data is kept in %s (delete it once the restore is confirmed)", keep)
        log.info("restore: starting %s", service)
        started = systemctl("start", service)
        if started.returncode != 0 or not wait_active(service, config.service_timeout):
            raise BackupError(f"{service} did not start after the restore: {started.stderr.strip()}")
        log.info("restore: backup %s of %s restored, %s is active", name, host, service)
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- entry point ------------------------------------------------------------------------------

def parse_args(program: str, argv: list[str]):
    restore = "restore" in program
    parser = argparse.ArgumentParser(prog=program, description=__doc__.split("\n\n")[1 if restore else 0])
    parser.add_argument("--config", default=os.environ.get("CHATMRPT_BACKUP_CONFIG", DEFAULT_CONFIG),
                        help="configuration file (default: $CHATMRPT_BACKUP_CONFIG or %(default)s)")
    parser.add_argument("--endpoint-url", help="AWS endpoint URL for S3 and CloudWatch (an emulator)")
    parser.add_argument("--verbose", action="store_true", help="log to stderr too")
    if restore:
        parser.add_argument("--backup", default="latest", help="latest (complete) or a timestamp such as 20260728T020000Z")
        parser.add_argument("--host", help="source host whose backup to restore (default: this host)")
        parser.add_argument("--list", action="store_true", help="list the source host's backups and exit")
        parser.add_argument("--verify-only", action="store_true", help="fetch and verify, change nothing")
        parser.add_argument("--allow-incomplete", action="store_true", help="restore a backup that recorded errors")
    else:
        parser.add_argument("--prune-only", action="store_true", help="only apply the local retention")
    args = parser.parse_args(argv)
    if restore and args.backup != "latest" and not parse_timestamp(args.backup):
        parser.error("--backup must be `latest` or a timestamp such as 20260728T020000Z")
    return restore, args


def main(argv: list[str] | None = None) -> int:
    program = Path(sys.argv[0]).name
    restore, args = parse_args(program, sys.argv[1:] if argv is None else argv)
    os.umask(0o027)
    try:
        overrides = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
        config = Config(args.config, overrides)
        if args.endpoint_url:
            config.s3_endpoint_url = config.cloudwatch_endpoint_url = args.endpoint_url
        if config.credentials_file:
            os.environ["AWS_SHARED_CREDENTIALS_FILE"] = config.credentials_file
        setup_logging(config.restore_log_file if restore else config.log_file,
                      "chatmrpt-restore" if restore else "chatmrpt-backup", args.verbose)
        if config.emulator_role_arn:
            assume_emulator_role(config)
        if restore:
            return run_restore(config, args)
        return run_backup(config, args.prune_only)
    except ConfigError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        log.error("%s", exc)
        return 2
    except BackupError as exc:
        log.error("%s failed: %s", program, exc)
        return 1
    except Exception as exc:  # noqa: BLE001 - logged with its traceback, then a failing exit
        log.exception("%s failed: %s: %s", program, type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
