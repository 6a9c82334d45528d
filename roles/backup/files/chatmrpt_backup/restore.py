# Managed by Ansible (role `backup`): local changes are overwritten.
"""chatmrpt-restore: which backup to restore, the checks of what it downloads (trusted in
nothing: it runs as root), the new tree built in staging and the swap with the live data."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from .config import (MANIFEST, MANIFEST_FORMAT, SQLITE_COMPANIONS, TIMESTAMP_FORMAT, BackupError, Config,
                     ConfigError, log, utc_now)
from .storage import aws_client, download, hex_to_b64, list_backups


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
    uid, gid = app_owner(config)

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
        manifest = choose_backup(s3, config, args, host, backups, staging)
        name = manifest["timestamp"]
        if manifest.get("environment") != config.environment:
            raise BackupError(f"backup {name} belongs to environment {manifest.get('environment')}, "
                              f"this host to {config.environment}: refused")
        prefix = backups[name]
        log.info("restore: backup s3://%s/%s (%d files) into %s", config.bucket, prefix, len(manifest["files"]), instance)

        # 1. Fetch and verify everything before touching live data.
        check_manifest(manifest)
        fetch_and_verify(s3, config, manifest, prefix, staging)

        # 2. Build the new tree in staging: archived directories, then the databases.
        tree = staging / "tree"
        units = build_tree(manifest, staging, tree, uid, gid)
        if args.verify_only:
            log.info("restore: --verify-only: backup %s of %s verified, nothing changed (s3://%s/%s)",
                     name, host, config.bucket, prefix)
            return 0

        # 3. Stop the app, swap the data in (keeping what it replaces), start the app.
        swap_in(config, instance, tree, units, parent / f".chatmrpt-pre-restore-{stamp}", uid, gid)
        log.info("restore: backup %s of %s restored, %s is active", name, host, config.app_service)
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def app_owner(config: Config) -> tuple[int, int]:
    """The uid and gid the restored data belongs to."""
    try:
        user = pwd.getpwnam(config.app_user)
        group = grp.getgrnam(config.app_group)
    except KeyError as exc:
        raise ConfigError(f"app user/group {config.app_user}:{config.app_group} unknown: {exc}") from exc
    return user.pw_uid, group.gr_gid


def choose_backup(s3, config: Config, args, host: str, backups: dict[str, str], staging: Path) -> dict:
    """The manifest to restore: the latest complete backup, or the one --backup names."""
    names = list(backups)
    if args.backup == "latest":
        for name in reversed(names):
            try:
                candidate = fetch_manifest(s3, config, host, backups[name], staging)
            except BackupError as exc:
                log.warning("backup %s of %s is unusable (%s), trying an older one", name, host, exc)
                continue
            if candidate.get("complete"):
                return candidate
            log.warning("backup %s of %s is incomplete (%s), trying an older one", name, host,
                        "; ".join(candidate.get("errors", [])))
        raise BackupError(f"no complete backup of host {host}")
    if args.backup not in names:
        raise BackupError(f"backup {args.backup} of host {host} not found (have: {', '.join(names[-5:])})")
    manifest = fetch_manifest(s3, config, host, backups[args.backup], staging)
    if not manifest.get("complete") and not args.allow_incomplete:
        raise BackupError(f"backup {args.backup} is incomplete ({'; '.join(manifest.get('errors', []))}); "
                          "pass --allow-incomplete to restore it anyway")
    return manifest


def fetch_and_verify(s3, config: Config, manifest: dict, prefix: str, staging: Path) -> None:
    """Download every file of the manifest into staging/files; any mismatch fails the restore."""
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


def build_tree(manifest: dict, staging: Path, tree: Path, uid: int, gid: int) -> list[str]:
    """The restored data laid out as under instance/; the instance-relative paths swapped in
    as a whole (archived directories, databases outside them)."""
    tree.mkdir()
    units: list[str] = []
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
    return units


def swap_in(config: Config, instance: Path, tree: Path, units: list[str], keep: Path, uid: int, gid: int) -> None:
    """Stop the app, move the live data into keep and the tree's in, start the app; a failure
    while moving puts the previous data back and starts the app."""
    service = config.app_service
    log.info("restore: stopping %s", service)
    stopped = systemctl("stop", service)
    if stopped.returncode != 0:
        raise BackupError(f"systemctl stop {service} failed: {stopped.stderr.strip()}")
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
