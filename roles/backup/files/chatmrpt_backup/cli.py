# Managed by Ansible (role `backup`): local changes are overwritten.
"""The command line: one program, the backup or the restore by the name it runs as
(chatmrpt-backup, chatmrpt-restore); main() is its steps, in order, and the exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __doc__ as PROGRAM_DOC
from .backup import run_backup
from .config import DEFAULT_CONFIG, BackupError, Config, ConfigError, log, parse_timestamp, setup_logging
from .restore import run_restore
from .storage import assume_emulator_role


def parse_args(program: str, argv: list[str]):
    restore = "restore" in program
    parser = argparse.ArgumentParser(prog=program, description=PROGRAM_DOC.split("\n\n")[2 if restore else 1])
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


# --- the steps of main(), in order ------------------------------------------------------------

def read_configuration(args) -> Config:
    """The configuration file; --endpoint-url replaces every endpoint in it."""
    overrides = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
    config = Config(args.config, overrides)
    if args.endpoint_url:
        config.s3_endpoint_url = config.cloudwatch_endpoint_url = args.endpoint_url
    return config


def use_credentials_file(config: Config) -> None:
    """Emulator only: boto3 reads the dummy credentials the role wrote."""
    if config.credentials_file:
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = config.credentials_file


def start_logging(config: Config, restore: bool, verbose: bool) -> None:
    setup_logging(config.restore_log_file if restore else config.log_file,
                  "chatmrpt-restore" if restore else "chatmrpt-backup", verbose)


def act_as_this_host(config: Config) -> None:
    """Emulator only: take this host's own AWS identity, as an instance profile gives it on EC2."""
    if config.emulator_role_arn:
        assume_emulator_role(config)


def run(config: Config, restore: bool, args) -> int:
    if restore:
        return run_restore(config, args)
    return run_backup(config, args.prune_only)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 success; 1 failure; 2 bad usage or configuration; 3 (backup only) the
    backup succeeded but the metric could not be published."""
    program = Path(sys.argv[0]).name
    restore, args = parse_args(program, sys.argv[1:] if argv is None else argv)
    os.umask(0o027)
    try:
        config = read_configuration(args)
        use_credentials_file(config)
        start_logging(config, restore, args.verbose)
        act_as_this_host(config)
        return run(config, restore, args)
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
