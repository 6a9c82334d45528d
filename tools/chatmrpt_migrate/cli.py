"""Command line: ``chatmrpt-migrate [migrate|verify] SOURCE... [options]``."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sqlite3
import sys
import time
from dataclasses import dataclass, field

from . import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_MISMATCH, EXIT_OK, EXIT_ORPHANS,
               EXIT_USAGE, __version__)
from .build import compiled_modules
from .verify import describe
from .source import (MigrationError, analyse, check_foreign_keys, count_orphans, discover,
                     introspect, release, take_snapshot)

ENV_TARGET = "CHATMRPT_MIGRATE_TARGET"

_URL_PW = re.compile(r"(\w+://[^:/@\s]*:)([^@\s]*)@")
_KV_PW = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def mask_dsn(text: str, secret: str | None = None) -> str:
    """Hide passwords in URLs/conninfo strings (and a known secret anywhere)."""
    if not text:
        return text
    out = _URL_PW.sub(r"\1***@", text)
    out = _KV_PW.sub(r"\1***", out)
    if secret:
        out = out.replace(secret, "***")
    return out


def _password_of(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict
        return conninfo_to_dict(dsn).get("password") or None
    except Exception:  # noqa: BLE001
        return None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="SQLite files or an app instance/ directory")
    common.add_argument("--include-tpr", action="store_true",
                        help="with an instance/ directory: also every "
                             "uploads/*/tpr_precomputed.db")
    common.add_argument("--target", help=f"PostgreSQL conninfo or URL (or env {ENV_TARGET})")
    common.add_argument("--target-ssm-parameter", metavar="NAME",
                        help="read the target conninfo from this SSM parameter "
                             "(SecureString, decrypted)")
    common.add_argument("--region", help="AWS region for SSM (default: AWS_REGION)")
    common.add_argument("--report", metavar="FILE", help="write a JSON report here")
    common.add_argument("--jobs", type=int, default=2, help="parallel loaders (default 2)")
    common.add_argument("--workdir", help="directory for snapshot copies (default: TMPDIR)")
    common.add_argument("--snapshot", choices=("copy", "hold"), default="copy",
                        help="copy: copy each database inside a read transaction (writers "
                             "wait for the copy only); hold: no copy, the read transaction "
                             "is held for the whole run (writers wait until it ends: for "
                             "when the app is stopped). WAL databases are always copied. "
                             "Default: copy")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and result")
    p = argparse.ArgumentParser(
        prog="chatmrpt-migrate",
        description="Migrate ChatMRPT SQLite databases to PostgreSQL (staging schema, "
                    "binary COPY, verification, atomic swap).",
        epilog="Exit codes: 0 ok, 1 verification mismatch, 2 usage error, "
               "3 orphans refused, 4 error, 130 interrupted.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command")
    m = sub.add_parser("migrate", parents=[common], help="migrate (default command)")
    m.add_argument("--dry-run", action="store_true",
                   help="print the plan (tables, types, rows, orphans); change nothing")
    m.add_argument("--orphans", choices=("keep", "refuse"), default="keep",
                   help="keep: FK created NOT VALID with a warning (default); "
                        "refuse: fail before touching the target")
    m.add_argument("--drop-previous", action="store_true",
                   help="drop the replaced schema instead of keeping it as <schema>__previous")
    m.add_argument("--maintenance-work-mem", default="256MB")
    sub.add_parser("verify", parents=[common],
                   help="re-check an already migrated target against the sources")
    return p


def resolve_target(args) -> str | None:
    if args.target:
        return args.target
    if args.target_ssm_parameter:
        import boto3
        region = args.region or os.environ.get("AWS_REGION") or os.environ.get(
            "AWS_DEFAULT_REGION")
        ssm = boto3.client("ssm", region_name=region)
        return ssm.get_parameter(Name=args.target_ssm_parameter,
                                 WithDecryption=True)["Parameter"]["Value"]
    return os.environ.get(ENV_TARGET) or None


class Output:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.warnings: list[str] = []
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:7.2f}s] {msg}", file=sys.stderr, flush=True)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)


def cpu_now() -> float:
    """CPU seconds of this process and its reaped children (the loader processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def plan_dict(dbs) -> list[dict]:
    out = []
    for db in dbs:
        tables = []
        for t in db.tables:
            tables.append({
                "table": t.name, "rows": t.rows,
                "columns": [{"name": c.name, "sqlite_type": c.decl, "pg_type": c.pg_type,
                             "collation": c.collation,
                             "storage_classes": c.classes, "not_null": c.notnull,
                             "identity": c.identity, "reason": c.reason} for c in t.columns],
                "primary_key": t.pk if not t.pk_skipped else [],
                "identity": ({"column": t.identity_col, "autoincrement": t.autoincrement,
                              "next_value_after": t.identity_next}
                             if t.identity_col else None),
                "indexes": [{"name": i.name, "columns": i.columns, "unique": i.unique,
                             "constraint": i.constraint} for i in t.indexes],
                "foreign_keys": [{"name": f.name, "columns": f.columns,
                                  "references": f"{f.ref_table}({', '.join(map(str, f.ref_columns))})",
                                  "orphans": f.orphans, "skipped": f.skipped,
                                  "not_valid": bool(f.orphans) and not f.skipped}
                                 for f in t.fks],
                "warnings": t.warnings,
            })
        out.append({"schema": db.schema, "source": db.source.path, "tables": tables,
                    "warnings": db.warnings})
    return out


def print_plan(dbs) -> None:
    for db in dbs:
        print(f"\n== {db.source.path} -> schema {db.schema}")
        for t in db.tables:
            extra = []
            if t.pk and not t.pk_skipped:
                extra.append("PK(" + ", ".join(t.pk) + ")")
            if t.identity_col:
                extra.append(f"identity {t.identity_col}")
            print(f"  table {t.name}: {t.rows} rows {' '.join(extra)}")
            for c in t.columns:
                print(f"    {c.name:<28} {c.decl or '-':<14} -> {c.pg_ddl_type:<17} {c.reason}")
            for i in t.indexes:
                kind = "UNIQUE " if i.unique else ""
                print(f"    {kind}index {i.name} ({', '.join(i.columns)})")
            for f in t.fks:
                state = (f"skipped: {f.skipped}" if f.skipped else
                         f"orphans {f.orphans}" + (" -> NOT VALID" if f.orphans else ""))
                print(f"    FK {f.name} ({', '.join(f.columns)}) -> {f.ref_table}: {state}")


def print_results(results) -> None:
    w = max([len(f"{r['schema']}.{r['table']}") for r in results] + [10])
    print(f"\n{'table':<{w}} {'source rows':>12} {'target rows':>12}  result")
    for r in results:
        name = f"{r['schema']}.{r['table']}"
        res = "ok" if r["ok"] else "MISMATCH: " + "; ".join(r["problems"])
        tr = "-" if r["target_rows"] is None else r["target_rows"]
        print(f"{name:<{w}} {r['source_rows']:>12} {tr:>12}  {res}")
        for m in r.get("mismatches", []):
            print(f"    {describe(m)}")


class _Stop(Exception):
    """A step ends the run early with this exit code (main finishes the report)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


@dataclass
class _Run:
    """What the steps of one run share."""
    args: argparse.Namespace
    out: Output
    report: dict
    cpu0: float
    secret: str | None = None
    target: str | None = None
    sources: list = field(default_factory=list)
    dbs: list = field(default_factory=list)
    loader: object = None
    swapped: bool = False

    @property
    def dry(self) -> bool:
        return getattr(self.args, "dry_run", False)

    @property
    def migrate(self) -> bool:
        return self.args.command == "migrate" and not self.dry


def _parse_args(argv: list[str] | None) -> argparse.Namespace | None:
    """The arguments, `migrate` implied; None when there is no command (help printed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("migrate", "verify", "-h", "--help", "--version"):
        argv.insert(0, "migrate")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return None
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    return args


def _read_target(run: _Run) -> None:
    """Step 1: the target conninfo (--target, SSM or the environment), masked in the report."""
    args, out = run.args, run.out
    try:
        run.target = None if run.dry else resolve_target(args)
    except Exception as e:  # noqa: BLE001  (boto3/botocore errors)
        out.warn(f"cannot read target from SSM: {e.__class__.__name__}: {e}")
        raise _Stop(EXIT_ERROR) from e
    if not run.dry and not run.target:
        print("error: no target: use --target, --target-ssm-parameter or "
              f"{ENV_TARGET}", file=sys.stderr)
        raise _Stop(EXIT_USAGE)
    if run.target:
        run.secret = _password_of(run.target)
        run.report["target"] = mask_dsn(run.target, run.secret)
        out.log(f"target: {run.report['target']}")


def _find_sources(run: _Run) -> None:
    """Step 2: the SQLite databases to migrate."""
    try:
        run.sources = discover(run.args.sources, run.args.include_tpr, run.out.warn)
    except MigrationError as e:
        print(f"error: {e}", file=sys.stderr)
        raise _Stop(EXIT_USAGE) from e
    if not run.sources:
        print("error: no SQLite databases found", file=sys.stderr)
        raise _Stop(EXIT_USAGE)
    run.report["sources"] = [{"path": s.path, "schema": s.schema} for s in run.sources]


def _snapshot_and_analyse(run: _Run) -> None:
    """Step 3: a consistent snapshot of each source, its tables, and (for a plan) its types
    and orphans."""
    args, out, timings = run.args, run.out, run.report["timings"]
    t = time.perf_counter()
    for s in run.sources:
        take_snapshot(s, args.workdir, hold=args.snapshot == "hold")
    timings["snapshot"] = round(time.perf_counter() - t, 3)
    out.log(f"snapshots of {len(run.sources)} database(s) taken")
    t = time.perf_counter()
    run.dbs = [introspect(s, out.warn) for s in run.sources]
    if not run.migrate:
        # dry run / verify: the whole plan up front, NUL-byte scan included
        for db in run.dbs:
            analyse(db, out.warn, nul_check=True)
    # a migration analyses each table in its loader process, right before loading
    # it; the NUL-byte scan is skipped there: PostgreSQL refuses NUL bytes and the
    # loader then rescans that table and maps the column to bytea (see README)
    # orphans: counted here for the plan and for --orphans refuse (before connecting);
    # otherwise a migration counts them in PostgreSQL, only for a foreign key that
    # fails to validate
    if not run.migrate or args.orphans == "refuse":
        for db in run.dbs:
            count_orphans(db)
    timings["analyse"] = round(time.perf_counter() - t, 3)
    out.log("schema derived from the data" if not run.migrate else "tables listed")


def _refuse_orphans(run: _Run) -> None:
    """Step 4: with --orphans refuse, stop before connecting if any foreign key has orphans."""
    orphan_fks = [(db, tb, fk) for db in run.dbs for tb in db.tables for fk in tb.fks if fk.orphans]
    if run.args.command != "migrate" or run.args.orphans != "refuse" or not orphan_fks:
        return
    for db, tb, fk in orphan_fks:
        print(f"error: {db.schema}.{tb.name}: {fk.orphans} orphan rows for "
              f"{fk.name} -> {fk.ref_table}", file=sys.stderr)
    if run.migrate:
        for db in run.dbs:
            analyse(db, run.out.warn, nul_check=True)
    run.report["plan"] = plan_dict(run.dbs)
    raise _Stop(EXIT_ORPHANS)


def _print_dry_run(run: _Run) -> int:
    print_plan(run.dbs)
    run.report["plan"] = plan_dict(run.dbs)
    print("\ndry run: nothing was changed")
    return EXIT_OK


def _verify_target(run: _Run) -> int:
    """`verify`: compare the target's schemas with the sources."""
    from .verify import verify

    t = time.perf_counter()
    results = verify(run.target, run.dbs, lambda db: db.schema, run.args.jobs, run.out.log)
    run.report["timings"]["verify"] = round(time.perf_counter() - t, 3)
    run.report["plan"] = plan_dict(run.dbs)
    run.report["verification"] = results
    print_results(results)
    ok = all(r["ok"] for r in results)
    print("\nverification " + ("passed" if ok else "FAILED"))
    return EXIT_OK if ok else EXIT_MISMATCH


def _load(run: _Run) -> None:
    """Step 5: tables, keys, indexes and foreign keys into staging schemas."""
    from .loader import Loader

    timings = run.report["timings"]
    run.loader = loader = Loader(run.target, run.dbs, run.args.jobs, run.out.log, run.out.warn,
                                 maintenance_work_mem=run.args.maintenance_work_mem)
    t = time.perf_counter()
    loader.prepare()
    run.out.log("staging schemas created; analysing and loading")
    loader.load_all()
    timings["load_and_indexes"] = round(time.perf_counter() - t, 3)
    t2 = time.perf_counter()
    for db in run.dbs:
        check_foreign_keys(db, run.out.warn)
    loader.foreign_keys()
    timings["foreign_keys"] = round(time.perf_counter() - t2, 3)
    timings["migrate"] = round(time.perf_counter() - t, 3)
    timings["tables"] = loader.timings
    run.out.log("loaded; verifying staging schemas")


def _verify_staging(run: _Run) -> bool:
    """Step 6: every value of the staging schemas against the sources."""
    from .loader import STAGING
    from .verify import verify

    timings = run.report["timings"]
    t = time.perf_counter()
    cpu1 = cpu_now()
    results = verify(run.target, run.dbs, lambda db: db.schema + STAGING, run.args.jobs,
                     run.out.log)
    timings["verify"] = round(time.perf_counter() - t, 3)
    # client CPU seconds (this process + loader processes; not PostgreSQL's): from
    # the start (snapshot, analysis, load, keys, FKs) and of the verification
    timings["cpu_load"] = round(cpu1 - run.cpu0, 3)
    timings["cpu_verify"] = round(cpu_now() - cpu1, 3)
    run.report["verification"] = results
    run.report["plan"] = plan_dict(run.dbs)
    print_results(results)
    return all(r["ok"] for r in results)


def _swap(run: _Run) -> None:
    """Step 7: the verified staging schemas replace the live ones."""
    t = time.perf_counter()
    run.loader.swap(keep_previous=not run.args.drop_previous)
    run.swapped = True
    run.report["timings"]["swap"] = round(time.perf_counter() - t, 3)
    print("\nmigration complete: verification passed, schemas swapped in: "
          + ", ".join(db.schema for db in run.dbs))


def _steps(run: _Run) -> int:
    """The run, step by step; its exit code (a step may stop it early with _Stop)."""
    _read_target(run)
    _find_sources(run)
    _snapshot_and_analyse(run)
    _refuse_orphans(run)
    if run.dry:
        return _print_dry_run(run)
    from .loader import check_target

    check_target(run.target)
    if run.args.command == "verify":
        return _verify_target(run)
    _load(run)
    if not _verify_staging(run):
        print("\nverification FAILED: staging schemas left for inspection, "
              "target unchanged", file=sys.stderr)
        return EXIT_MISMATCH
    _swap(run)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args is None:
        return EXIT_USAGE
    out = Output(args.quiet)
    run = _Run(args, out, cpu0=cpu_now(), report={
        "tool": "chatmrpt-migrate", "version": __version__, "command": args.command,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(), "timings": {},
        "compiled": compiled_modules()})
    if not all(run.report["compiled"].values()):
        out.log("compiled modules not built (python -m chatmrpt_migrate.build): rows are "
                "read and hashed in Python, with about 2.5x the client CPU")
    try:
        try:
            code = _steps(run)
        except _Stop as stop:
            code = stop.code
        # a stop or a failed verification leaves the staging schemas for inspection
        return _finish(run.report, args, out, code, run.dbs)
    except KeyboardInterrupt:
        out.warn("interrupted: target unchanged")
        code = EXIT_INTERRUPTED
    except (MigrationError, sqlite3.Error, OSError, RuntimeError, ValueError) as e:
        out.warn(f"migration failed, target unchanged: {mask_dsn(str(e), run.secret)}")
        code = EXIT_ERROR
    except Exception as e:  # noqa: BLE001  psycopg errors and anything unexpected
        out.warn(f"migration failed, target unchanged: {e.__class__.__name__}: "
                 f"{mask_dsn(str(e), run.secret)}")
        code = EXIT_ERROR
    finally:
        for s in run.sources:
            release(s)
    if run.loader is not None and not run.swapped:
        run.loader.drop_staging()
    return _finish(run.report, args, out, code, run.dbs)


def _finish(report, args, out, code, dbs) -> int:
    report["exit_code"] = code
    report["status"] = {EXIT_OK: "ok", EXIT_MISMATCH: "mismatch", EXIT_USAGE: "usage",
                        EXIT_ORPHANS: "orphans refused", EXIT_ERROR: "error",
                        EXIT_INTERRUPTED: "interrupted"}[code]
    report["warnings"] = out.warnings
    report["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    if dbs:
        for s in (db.source for db in dbs):
            release(s)
    if getattr(args, "report", None):
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return code
