# Managed by Ansible (role `backup`): local changes are overwritten.
"""The configuration file, the program's two errors, its logging and the names and
formats the backup and the restore share (timestamps, the manifest, the upload marker)."""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import json
import logging
import logging.handlers
import os
import re
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = "/etc/chatmrpt-backup.ini"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
TIMESTAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")
UPLOADED_MARKER = ".uploaded"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
CHUNK = 1024 * 1024

# One logger for every module: the handlers setup_logging adds see all of them.
log = logging.getLogger("chatmrpt-backup")


class BackupError(Exception):
    """A failure that the log explains; the program exits non-zero."""


class ConfigError(Exception):
    """Bad configuration or usage (exit code 2)."""


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


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_timestamp(name: str) -> dt.datetime | None:
    if not TIMESTAMP_RE.match(name):
        return None
    try:
        return dt.datetime.strptime(name, TIMESTAMP_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
