# Managed by Ansible (role `backup`): local changes are overwritten.
"""chatmrpt-backup: the local backup (databases, archives, redacted configuration, the
manifest), its upload, the local retention and the run that puts them together."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import tarfile
import time
from pathlib import Path

from .config import (MANIFEST, MANIFEST_FORMAT, SQLITE_COMPANIONS, TIMESTAMP_FORMAT, UPLOADED_MARKER,
                     BackupError, Config, log, parse_timestamp, utc_now)
from .storage import aws_client, publish_metric, sha256_file, upload_and_verify, writer_id

SQLITE_HEADER = b"SQLite format 3\x00"
ENV_LINE_RE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


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
    """Steps 1 to 3 of the run, in workdir: the databases, the archives, the configuration;
    the manifest that lists them (`complete` only without errors)."""
    instance = config.instance_dir.resolve()
    if not instance.is_dir():
        raise BackupError(f"instance directory {config.instance_dir} does not exist")
    log.info("step 1/6 databases: searching %s for SQLite files", instance)
    databases, warnings = find_databases(instance)
    for warning in warnings:
        log.warning(warning)
    if not databases:
        raise BackupError(f"no SQLite database found under {instance}")
    files = copy_databases(instance, databases, workdir, errors)
    log.info("step 2/6 archives: %s", ", ".join(config.archive_dirs) or "none")
    files += archive_directories(config, instance, databases, workdir, errors)
    log.info("step 3/6 configuration: %d env file(s) redacted, %d file(s) copied",
             len(config.env_files), len(config.config_files))
    files += copy_configuration(config, workdir, errors)
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


def copy_databases(instance: Path, databases: list[Path], workdir: Path, errors: list[str]) -> list[dict]:
    """Each database copied online and checked; one that fails is recorded in errors, not uploaded."""
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
    return files


def archive_directories(config: Config, instance: Path, databases: list[Path], workdir: Path,
                        errors: list[str]) -> list[dict]:
    """Each archived directory as tar.gz, without the databases (copied on their own) and links."""
    files: list[dict] = []
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
    return files


def copy_configuration(config: Config, workdir: Path, errors: list[str]) -> list[dict]:
    """The env files with their non-public values redacted, the other files verbatim."""
    files: list[dict] = []
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
    return files


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
