"""PostgreSQL side: staging schemas, binary COPY, keys/indexes/FKs, swap.

Tables are analysed and loaded in worker processes (``--jobs``; one table per task,
biggest first), so the per-row client work of two tables runs on two cores instead of
sharing one GIL.  Keys and indexes are built in parallel sessions (threads: the work is
the server's) as soon as their table is committed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import multiprocessing
import operator
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

import psycopg
from psycopg import pq
from psycopg._copy_base import format_row_binary   # psycopg's (C) binary row encoder
from psycopg.adapt import AdaptersMap, Transformer
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.string import BytesBinaryDumper

from .source import (Database, JsonRejected, MigrationError, StreamStats, Table,
                     TimestampRejected, _fromiso, analyse_table, json_rejected, no_gc,
                     open_snapshot, qi, recheck_nul, ro_uri, stats_exprs, ts_from_text,
                     ts_rejected, ts_values_check)

try:    # the compiled reader (python -m chatmrpt_migrate.build)
    from . import _copyrows
except ImportError:
    _copyrows = None

STAGING = "__staging"
PREVIOUS = "__previous"
BATCH = 10000
# Staging tables are kept from autovacuum until the swap: its VACUUM and ANALYZE of
# freshly loaded tables would otherwise compete with the load and the verification
# for the CPU (at --scale 1: about 2 s of server CPU, 0.4 s of wall time); the
# swap resets the option, and autovacuum analyzes the new tables on its next round
# (their insert counters are kept).
NO_AUTOVACUUM = "autovacuum_enabled = false, toast.autovacuum_enabled = false"


def _mixed_bytes(v):
    # text arrives as UTF-8 bytes (text_factory=bytes); integers in decimal, reals as repr
    if v is None or isinstance(v, bytes):
        return v
    return (repr(v) if isinstance(v, float) else str(v)).encode("utf-8")


def _ts_naive_nulls(col):
    return [None if v is None else _fromiso(v.decode()) for v in col]


def _ts_naive(col):
    return map(_fromiso, map(bytes.decode, col))


def _ts_zoned(col):
    return [None if v is None else ts_from_text(v.decode()) for v in col]


def _mixed(col):
    return list(map(_mixed_bytes, col))


def _floats(col):
    return [None if v is None else float(v) for v in col]


_not_none = functools.partial(operator.is_not, None)


def _ts_checked(name: str, nulls: bool):
    """Optimistic timestamptz column: check every value with the analysis' rules while
    streaming; TimestampRejected makes the loader reload the table with it as text (also
    for a value that is not text: the full analysis then plans another type)."""
    def conv(col):
        try:
            if nulls and None in col:
                vals = list(map(bytes.decode, filter(_not_none, col)))
            else:
                vals = list(map(bytes.decode, col))
        except (TypeError, UnicodeDecodeError):
            raise TimestampRejected(name) from None
        parsed = ts_values_check(vals)
        if parsed is None:
            raise TimestampRejected(name)
        if len(parsed) == len(col):
            return parsed
        it = iter(parsed)
        return [None if v is None else next(it) for v in col]
    return conv


def column_plan(c):
    """(SELECT expression, binary COPY wire type, column-batch conversion or None).

    SQLite text is fetched as raw UTF-8 bytes and sent as the field's bytes (binary COPY
    carries no type OIDs: the server's text/bytea/json receive functions read them and
    PostgreSQL validates the UTF-8 and the JSON).  The SELECT reads the columns as they
    are (the verification hashes these original values); conversions work on whole
    columns of a batch (C-level ``map`` where possible).
    """
    q = qi(c.name)
    t = c.pg_type
    if t == "json":
        return q, "bytea", None                        # json's binary format is its text
    if t == "double precision":
        return q, "float8", _floats if c.conv == "float" else None
    if t == "timestamptz":
        # same 8-byte wire format as timestamp; the datetimes are naive UTC
        if c.conv == "ts_check":
            return q, "timestamp", _ts_checked(c.name, bool(c.nulls))
        fn = {"ts_naive": _ts_naive_nulls if c.nulls else _ts_naive, "ts": _ts_zoned}
        return q, "timestamp", fn.get(c.conv)
    if t in ("text", "bytea"):
        return q, "bytea", _mixed if c.conv in ("mixed_text", "mixed_bytea") else None
    return q, {"bigint": "int8", "boolean": "bool", "numeric": "numeric"}[t], None


_KINDS = {"json": "b", "double precision": "f", "timestamptz": "t", "bigint": "i",
          "boolean": "o", "text": "b", "bytea": "b", "numeric": "n"}


def compiled_kinds(t: Table) -> bytes | None:
    """The compiled reader's kind of every column (see ``_copyrows.c``), or None when it
    is not built."""
    if _copyrows is None:
        return None
    return "".join("m" if c.conv in ("mixed_text", "mixed_bytea") else _KINDS[c.pg_type]
                   for c in t.columns).encode()


def connect(dsn: str, **kw) -> psycopg.Connection:
    con = psycopg.connect(dsn, **kw)
    con.execute("SET TimeZone = 'UTC'")
    return con


class Sessions:
    """One autocommit session per thread, kept for the thread's next tasks (key builds,
    checksums): a connection costs a backend start and authentication (~4 ms of server
    CPU against a local server; TLS and SCRAM add to it on RDS), and a run has dozens of
    such tasks.  ``setup``: statements run once per session.  :meth:`close` ends them all."""

    def __init__(self, dsn: str, setup: tuple[str, ...] = ()):
        self.dsn, self.setup = dsn, setup
        self.local = threading.local()
        self.lock = threading.Lock()
        self.opened: list[psycopg.Connection] = []

    def get(self) -> psycopg.Connection:
        con = getattr(self.local, "con", None)
        if con is None or con.closed:
            con = connect(self.dsn, autocommit=True)
            for stmt in self.setup:
                con.execute(stmt)
            self.local.con = con
            with self.lock:
                self.opened.append(con)
        return con

    def close(self) -> None:
        with self.lock:
            for con in self.opened:
                con.close()
            self.opened.clear()


def check_target(dsn: str) -> None:
    """The target database must store text as UTF-8: SQLite's text is UTF-8, and the
    verification reads the stored bytes (``textsend``)."""
    with connect(dsn, autocommit=True) as con:
        (encoding,) = con.execute("SHOW server_encoding").fetchone()
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise MigrationError(f"the target database's encoding is {encoding}, not UTF8: create it "
                             "with ENCODING 'UTF8' (RDS databases are UTF8 by default)")


def col_ddl(c, pk: bool) -> str:
    s = f"{qi(c.name)} {c.pg_ddl_type}"
    if c.identity:
        s += " GENERATED BY DEFAULT AS IDENTITY"
    if c.notnull or c.identity or pk:   # PK columns: no NULLs (checked by the analysis)
        s += " NOT NULL"
    return s


def staging(db: Database) -> str:
    return db.schema + STAGING


SPECULATE_ROWS = 10_000   # tables at least this big start loading on a sampled plan
SAMPLE_ROWS = 2_000


class _Replan(Exception):
    """The full analysis chose another plan than the sample: reload with it."""


def _plan_key(t: Table):
    return ([(c.name, c.pg_type, c.conv) for c in t.columns], bool(t.pk_skipped))


def _analysed(src, schema: str, orig: Table, stats=None) -> tuple[Table, list[str]]:
    """A copy of ``orig`` (as introspected) with the full analysis' plan, and its warnings;
    from the counts the loader gathered while streaming every row (``stats``), or by an
    aggregate scan of its own."""
    t = copy.deepcopy(orig)
    warnings: list[str] = []
    factory, src.text_factory = src.text_factory, str
    try:
        analyse_table(src, schema, t, warnings.append, nul_check=False, full_check=False,
                      stats=stats)
    finally:
        src.text_factory = factory
    return t, warnings


def load_table(dsn: str, schema: str, snapshot: str, t: Table):
    """Worker process: analyse one table, CREATE it and COPY its rows, COMMIT.

    Big tables (``SPECULATE_ROWS``) do not wait for their analysis: the load starts on
    the plan of the first ``SAMPLE_ROWS`` rows, and the SELECT that streams the rows also
    gives, per row, the storage class codes the full analysis counts
    (:func:`source.stats_exprs`).  Before COMMIT the full analysis is made from these
    counts (no scan of its own) and the two plans are compared; when they differ, the
    transaction is rolled back and the table loaded again with the full plan.  The
    committed plan is therefore always the full analysis' plan.

    Returns (table with its types, warnings, log line, timings).  Errors come back as
    MigrationError (psycopg errors do not cross process boundaries reliably).
    """
    warnings: list[str] = []
    fail_hook = fail_hook_from_env()
    t0 = time.perf_counter()
    orig = copy.deepcopy(t)
    speculate = t.rows >= SPECULATE_ROWS
    src = None
    try:
        src = open_snapshot(snapshot)
        if speculate:
            analyse_table(src, schema, t, lambda _m: None, nul_check=False, full_check=False,
                          sample=SAMPLE_ROWS)
        else:
            analyse_table(src, schema, t, warnings.append, nul_check=False, full_check=False)
        t1 = time.perf_counter()
        src.text_factory = bytes
        nul_checked = False
        reloads = 0
        while True:
            full: list = []      # [(table with the full plan, its warnings)]
            try:
                stats = check = None
                if speculate:
                    stats = StreamStats(t)

                    def check(spec=t, stats=stats, full=full):
                        full.append(_analysed(src, schema, orig, stats))
                        if _plan_key(spec) != _plan_key(full[0][0]):
                            raise _Replan()
                _copy_table(dsn, schema, src, t, fail_hook, check, stats, snapshot)
                break
            except _Replan:
                pass
            except TimestampRejected as e:
                # a value of an optimistic timestamptz column does not convert: the
                # column is text (as the full analysis would say); load again (the
                # table's transaction was rolled back)
                if speculate:
                    full[:] = [_analysed(src, schema, orig)]
                    t = full[0][0]
                if next(c for c in t.columns if c.name == e.column).conv == "ts_check":
                    ts_rejected(schema, t, e.column, warnings.append)
            except JsonRejected:
                # PostgreSQL refused a value of a column planned as json: check those
                # columns completely; the ones that fail become text (rolled back)
                if speculate:
                    full[:] = [_analysed(src, schema, orig)]
                    t = full[0][0]
                if not json_rejected(src, schema, t, warnings.append):
                    raise
            except NulBytes:
                # PostgreSQL text cannot hold NUL bytes: find such columns, map them to
                # bytea and load the table again (its transaction was rolled back).
                if speculate:
                    full[:] = [_analysed(src, schema, orig)]
                    t = full[0][0]
                if nul_checked or not recheck_nul(src, schema, t, warnings.append):
                    raise
                nul_checked = True
            reloads += 1
            if speculate:     # from now on: the full plan (+ what the reloads found)
                if full[0][0] is not t:
                    t = full[0][0]
                warnings[:0] = full[0][1]
                speculate = False
        if speculate:         # loaded on the sampled plan, which equals the full one
            t = full[0][0]
            warnings[:0] = full[0][1]
        for c in t.columns:
            if c.conv == "ts_check":   # every value converted
                c.conv = "ts"
            elif c.conv == "json_check":   # PostgreSQL accepted every value
                c.conv = None
    except (NulBytes, JsonRejected) as e:
        raise MigrationError(f"{schema}.{t.name}: {e}") from None
    except psycopg.Error as e:
        raise MigrationError(f"{schema}.{t.name}: {e.__class__.__name__}: {e}") from None
    finally:
        if src:
            src.close()
    t2 = time.perf_counter()
    return (t, warnings,
            f"  loaded {schema}.{t.name}: {t.rows} rows, analysis {t1 - t0:.2f}s, "
            f"COPY {t2 - t1:.2f}s" + (f" (loaded again {reloads}x: plan changed)"
                                      if reloads else ""),
            {"analyse": round(t1 - t0, 3), "copy": round(t2 - t1, 3), "reloads": reloads})


SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)   # binary COPY header: no flags, no extension
TRAILER = b"\xff\xff"
CHUNK = 1 << 20          # bytes of encoded rows per write


class NulBytes(Exception):
    """PostgreSQL refused a text value with a NUL byte (the table's COPY was rolled back)."""


class _EncoderContext:
    """Adaptation context of the row encoder: psycopg's default map, except that bytea's
    binary dumper is the plain (C) bytes dumper: the default one for that OID is
    ``dbapi20.BinaryBinaryDumper``, a Python-level method call per value (5x slower)."""
    adapters = AdaptersMap(psycopg.adapters)
    adapters.register_dumper(bytes, BytesBinaryDumper)
    connection = None


def _transformer(plan):
    tx = Transformer(_EncoderContext)
    tx.set_dumper_types([psycopg.adapters.types[w].oid for _e, w, _f in plan],
                        pq.Format.BINARY)
    return tx


def _batches(src, t: Table, plan, stats=None):
    """(rows read, rows ready for the binary encoder) per BATCH rows.  ``plan`` lists the
    columns that need no conversion first: a batch's converted columns are taken out
    with C-level ``itemgetter`` maps, converted, and each row is its unconverted part
    plus its converted values (no transposition of the whole batch).  With ``stats``, the
    SELECT also gives the analysis' codes of each row (after the columns), counted."""
    codes = stats_exprs(t) if stats else []
    cur = src.execute(f"SELECT {', '.join([e for e, _w, _f in plan] + codes)} FROM {qi(t.name)}")
    n = len(plan)
    k = next((i for i, (_e, _w, f) in enumerate(plan) if f), n)   # unconverted columns
    fns = [(i, f) for i, (_e, _w, f) in enumerate(plan) if f]
    head = operator.itemgetter(slice(0, k))
    while True:
        rows = cur.fetchmany(BATCH)
        if not rows:
            return
        if stats:
            stats.add([map(operator.itemgetter(n + j), rows) for j in range(len(codes))])
        if fns:
            converted = [f(list(map(operator.itemgetter(i), rows))) for i, f in fns]
            out = map(operator.add, map(head, rows), zip(*converted))
        elif stats:
            out = map(head, rows)
        else:
            out = rows
        yield len(rows), out


def _copy_rows(con, tq: str, src, t: Table, fail_hook, stats=None, path=None) -> int:
    """``COPY ... FREEZE`` of every row of ``t`` in ``con``'s open transaction, binary, in
    ~1 MB blocks that psycopg's ``QueuedLibpqWriter`` sends from a thread (the encoding
    of the next block overlaps the server's work on the previous ones).  Rows are read
    and encoded by the compiled reader (``_copyrows``) from the file at ``path``, else
    read with Python's sqlite3 from ``src`` and encoded with psycopg's C row encoder.
    Returns the number of rows sent."""
    kinds = compiled_kinds(t) if path else None
    if kinds:
        cols = [c.name for c in t.columns]
    else:
        cols, plan = python_plan(t)
    try:
        with no_gc(), con.cursor() as pc, pc.copy(
                f"COPY {tq} ({', '.join(map(qi, cols))}) FROM STDIN (FORMAT BINARY, FREEZE)",
                writer=QueuedLibpqWriter(pc)) as cp:
            cp.write(SIGNATURE)
            if kinds:
                n = _compiled_rows(cp.write, path, t, kinds, fail_hook, stats)
            else:
                n = _python_rows(cp.write, src, t, plan, fail_hook, stats)
            cp.write(TRAILER)
    except (psycopg.errors.CharacterNotInRepertoire,
            psycopg.errors.UntranslatableCharacter) as e:
        raise NulBytes(f"{e.__class__.__name__}: {e}") from None
    except psycopg.errors.InvalidTextRepresentation as e:   # a json column's value
        raise JsonRejected(f"{e.__class__.__name__}: {e}") from None
    return n


def python_plan(t: Table) -> tuple[list[str], list]:
    """The Python reader's column names in COPY order and their :func:`column_plan`: the
    columns that need no conversion first (see :func:`_batches`)."""
    plan = sorted(((c.name, column_plan(c)) for c in t.columns), key=lambda x: x[1][2] is not None)
    return [name for name, _p in plan], [p for _name, p in plan]


def _compiled_rows(write, path: str, t: Table, kinds: bytes, fail_hook, stats) -> int:
    keys = [i for i, c in enumerate(t.columns) if c.name in t.pk]
    hook = (lambda n: fail_hook(t, n)) if fail_hook else None
    try:
        n, counts, key_nulls = _copyrows.copy(
            ro_uri(path), f"SELECT {', '.join(qi(c.name) for c in t.columns)} FROM {qi(t.name)}",
            kinds, keys, write, CHUNK, BATCH, hook)
    except _copyrows.BadTimestamp as e:
        raise TimestampRejected(t.columns[e.args[0]].name) from None
    if stats:
        # the rowid alias counts as code 5, as in stats_exprs (always an integer)
        counts = [[0] * 5 + [n, 0] if c.identity else k for c, k in zip(t.columns, counts)]
        stats.set_counts(n, counts, key_nulls)
    return n


def _python_rows(write, src, t: Table, plan, fail_hook, stats) -> int:
    tx, fmt = _transformer(plan), format_row_binary
    n = 0
    buf = bytearray()
    for count, rows in _batches(src, t, plan, stats):
        for r in rows:
            fmt(r, tx, buf)
        n += count
        if len(buf) >= CHUNK:
            write(buf)
            buf = bytearray()
        if fail_hook:
            fail_hook(t, n)
    if buf:
        write(buf)
    return n


def _copy_table(dsn, schema, src, t: Table, fail_hook, check=None, stats=None,
                path=None) -> None:
    """CREATE TABLE + binary ``COPY ... FREEZE`` in one transaction, COMMIT.  ``check``
    raises to roll back before COMMIT.

    One session per table: two sessions (each COPYing half of a big table) were
    measured slower on 2 cores: the table must then be created beforehand, so FREEZE is
    lost and the foreign key validation reads pages that are not all-visible."""
    tq = f"{qi(schema + STAGING)}.{qi(t.pg)}"
    pk = set(t.pk) if t.pk and not t.pk_skipped else set()
    with connect(dsn) as con:
        con.execute(f"CREATE TABLE {tq} "
                    f"({', '.join(col_ddl(c, c.name in pk) for c in t.columns)}) "
                    f"WITH ({NO_AUTOVACUUM})")
        if t.rows:
            _copy_rows(con, tq, src, t, fail_hook, stats, path)
        if check:
            check()    # raises to roll back (the with block's exit) before COMMIT
        con.commit()


class Loader:
    def __init__(self, dsn: str, dbs: list[Database], jobs: int, log, warn,
                 maintenance_work_mem: str = "256MB"):
        self.dsn = dsn
        self.dbs = dbs
        self.jobs = max(1, jobs)
        self.log = log
        self.warn = warn
        self.mwm = maintenance_work_mem
        self.lock = threading.Lock()
        self.timings: dict[str, dict] = {}

    # ------------------------------------------------------------------ staging
    def prepare(self) -> None:
        with connect(self.dsn, autocommit=True) as con:
            for db in self.dbs:
                con.execute(f"DROP SCHEMA IF EXISTS {qi(staging(db))} CASCADE")
                con.execute(f"CREATE SCHEMA {qi(staging(db))}")

    def drop_staging(self) -> None:
        try:
            with connect(self.dsn, autocommit=True) as con:
                for db in self.dbs:
                    con.execute(f"DROP SCHEMA IF EXISTS {qi(staging(db))} CASCADE")
        except psycopg.Error as e:  # best effort: the next run drops it first anyway
            self.warn(f"could not drop staging schemas: {e.__class__.__name__}")

    # ------------------------------------------------------------------ load
    def load_all(self) -> None:
        """Analyse + load every table in worker processes, biggest first; build each
        table's keys/indexes in parallel sessions as soon as it is committed."""
        tasks = [(db, i) for db in self.dbs for i in range(len(db.tables))]
        # biggest first (rows x columns as a cheap size proxy)
        tasks.sort(key=lambda x: -(x[0].tables[x[1]].rows * max(1, len(x[0].tables[x[1]].columns))))
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        index_futures = []
        # the key builds' sessions: no parallel workers (the --jobs sessions already keep
        # the cores busy, and a parallel build costs ~20 % more CPU)
        sessions = Sessions(self.dsn, (f"SET maintenance_work_mem = '{self.mwm}'",
                                       "SET max_parallel_maintenance_workers = 0"))
        with contextlib.closing(sessions), ThreadPoolExecutor(self.jobs) as ix, \
                ProcessPoolExecutor(self.jobs, mp_context=ctx) as ex:
            futs = {ex.submit(load_table, self.dsn, db.schema,
                              db.source.snapshot or db.source.path, db.tables[i]): (db, i)
                    for db, i in tasks}
            for f in as_completed(futs):
                db, i = futs[f]
                t, warnings, msg, timing = f.result()
                db.tables[i] = t
                for w in warnings:
                    self.warn(w)
                self.log(msg)
                with self.lock:
                    self.timings[f"{db.schema}.{t.name}"] = timing
                index_futures += [ix.submit(self._run_key, sessions, db, t, *task)
                                  for task in self._key_tasks(db, t)]
            for f in index_futures:
                f.result()

    def _key_tasks(self, db: Database, t: Table):
        """(name, statements) per key/index: each is one task of the key-build threads
        (each thread has its session), so builds on one table run at once.  Keys are
        built as unique indexes (ShareLock: several builds on one table run at once),
        then attached with ``ADD CONSTRAINT ... USING INDEX``."""
        tq = f"{qi(staging(db))}.{qi(t.pg)}"
        out = []
        if t.pk and not t.pk_skipped:
            name = qi(t.pg + "_pkey")
            stmts = [f"CREATE UNIQUE INDEX {name} ON {tq} ({', '.join(qi(p) for p in t.pk)})",
                     f"ALTER TABLE {tq} ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}"]
            out.append(("primary key", stmts, bool(t.identity_col)))
        for ix in t.indexes:
            if ix.constraint:
                cl = ", ".join(qi(c) for c in ix.columns)
                stmts = [f"CREATE UNIQUE INDEX {qi(ix.name)} ON {tq} ({cl})",
                         f"ALTER TABLE {tq} ADD CONSTRAINT {qi(ix.name)} UNIQUE "
                         f"USING INDEX {qi(ix.name)}"]
            else:
                cl = ", ".join(qi(c) + (" DESC" if d else "")
                               for c, d in zip(ix.columns, ix.desc))
                u = "UNIQUE " if ix.unique else ""
                stmts = [f"CREATE {u}INDEX {qi(ix.name)} ON {tq} ({cl})"]
            out.append((ix.name, stmts, False))
        if t.identity_col and not (t.pk and not t.pk_skipped):
            out.append(("identity", [], True))
        # the identity restart runs after the primary key (whose index answers max())
        return out

    def _run_key(self, sessions: Sessions, db: Database, t: Table, name: str, stmts,
                 identity: bool) -> None:
        t0 = time.perf_counter()
        tq = f"{qi(staging(db))}.{qi(t.pg)}"
        con = sessions.get()
        for s in stmts:
            con.execute(s)
        if identity:
            col = qi(t.identity_col)
            mx = con.execute(f"SELECT max({col}) FROM {tq}").fetchone()[0]
            last = max(mx or 0, t.identity_next or 0)
            t.identity_next = last
            if last < 2 ** 63 - 1:     # else the identity is used up, as in SQLite
                con.execute(f"ALTER TABLE {tq} ALTER COLUMN {col} RESTART WITH {last + 1}")
        dt = time.perf_counter() - t0
        with self.lock:
            self.timings[f"{db.schema}.{t.name}"][f"key {name}"] = round(dt, 3)
        self.log(f"  {db.schema}.{t.name}: {name} built in {dt:.2f}s")

    # ------------------------------------------------------------------ foreign keys
    def foreign_keys(self) -> None:
        pending = []
        with connect(self.dsn) as con:
            for db in self.dbs:
                sch = qi(staging(db))
                for t in db.tables:
                    for fk in t.fks:
                        if fk.skipped:
                            continue
                        act = ""
                        for kw, v in (("DELETE", fk.on_delete), ("UPDATE", fk.on_update)):
                            if v and v.upper() in ("CASCADE", "SET NULL", "SET DEFAULT",
                                                   "RESTRICT"):
                                act += f" ON {kw} {v.upper()}"
                        parent = next(p for p in db.tables if p.name == fk.ref_table)
                        con.execute(
                            f"ALTER TABLE {sch}.{qi(t.pg)} ADD CONSTRAINT {qi(fk.name)} "
                            f"FOREIGN KEY ({', '.join(qi(c) for c in fk.columns)}) REFERENCES "
                            f"{sch}.{qi(parent.pg)} ({', '.join(qi(c) for c in fk.ref_columns)})"
                            f"{act} NOT VALID")
                        if fk.orphans:     # counted up front (--orphans refuse)
                            self._not_valid(db, t, fk)
                        else:
                            pending.append((db, t, fk, parent))
            con.commit()
        # VALIDATE in parallel, one task per child table (same-table validations conflict)
        by_table: dict = {}
        for item in pending:
            by_table.setdefault((item[0].schema, item[1].name), []).append(item)

        def validate(items):
            with connect(self.dsn, autocommit=True) as c2:
                for db, t, fk, parent in items:
                    sch = qi(staging(db))
                    try:
                        c2.execute(f"ALTER TABLE {sch}.{qi(t.pg)} "
                                   f"VALIDATE CONSTRAINT {qi(fk.name)}")
                        fk.orphans = 0
                    except psycopg.errors.ForeignKeyViolation:
                        # orphan rows (SQLite does not enforce foreign keys): count them
                        # the way the constraint sees them (MATCH SIMPLE: NULLs pass)
                        match = " AND ".join(f"p.{qi(r)} = c.{qi(f)}"
                                             for f, r in zip(fk.columns, fk.ref_columns))
                        fk.orphans = c2.execute(
                            f"SELECT count(*) FROM {sch}.{qi(t.pg)} c WHERE "
                            + " AND ".join(f"c.{qi(f)} IS NOT NULL" for f in fk.columns)
                            + f" AND NOT EXISTS (SELECT 1 FROM {sch}.{qi(parent.pg)} p "
                            f"WHERE {match})").fetchone()[0]
                        self._not_valid(db, t, fk)

        with ThreadPoolExecutor(self.jobs) as ex:
            for f in [ex.submit(validate, v) for v in by_table.values()]:
                f.result()

    def _not_valid(self, db: Database, t: Table, fk) -> None:
        with self.lock:
            self.warn(f"{db.schema}.{t.name}: foreign key {fk.name} has {fk.orphans} orphan "
                      "rows: created NOT VALID")

    # ------------------------------------------------------------------ swap
    def swap(self, keep_previous: bool = True) -> None:
        with connect(self.dsn) as con:
            con.execute("SET lock_timeout = '60s'")
            for db in self.dbs:
                s, prev = db.schema, db.schema + PREVIOUS
                con.execute(f"DROP SCHEMA IF EXISTS {qi(prev)} CASCADE")
                exists = con.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                     (s,)).fetchone()
                if exists:
                    if keep_previous:
                        con.execute(f"ALTER SCHEMA {qi(s)} RENAME TO {qi(prev)}")
                    else:
                        con.execute(f"DROP SCHEMA {qi(s)} CASCADE")
                for t in db.tables:
                    con.execute(f"ALTER TABLE {qi(staging(db))}.{qi(t.pg)} "
                                "RESET (autovacuum_enabled, toast.autovacuum_enabled)")
                con.execute(f"ALTER SCHEMA {qi(staging(db))} RENAME TO {qi(s)}")
            con.commit()


def fail_hook_from_env():
    """Test/drill hooks, called after every COPY batch of ``BATCH`` rows (None if unset).

    * ``CHATMRPT_MIGRATE_FAIL_AT=<table>:<rows>``: raise once ``<rows>`` rows of
      ``<table>`` were sent (exit 4, target unchanged).
    * ``CHATMRPT_MIGRATE_PAUSE_AT=<table>:<rows>`` + ``CHATMRPT_MIGRATE_PAUSE_FILE=<path>``:
      once ``<rows>`` rows of ``<table>`` were sent (inside the open COPY transaction),
      write ``<path>`` (JSON: pid, schema-less table name, rows sent) and wait until it is
      deleted (at most ``CHATMRPT_MIGRATE_PAUSE_TIMEOUT`` seconds, default 600), then go
      on.  Lets a drill stop PostgreSQL at a known point of the load.
    """
    hooks = []
    spec = os.environ.get("CHATMRPT_MIGRATE_FAIL_AT")
    if spec:
        table, _, rows = spec.partition(":")
        limit = int(rows or 1)

        def fail(t, n):
            if t.name == table and n >= limit:
                raise RuntimeError(f"simulated failure while loading {t.name} (test hook)")
        hooks.append(fail)
    spec = os.environ.get("CHATMRPT_MIGRATE_PAUSE_AT")
    path = os.environ.get("CHATMRPT_MIGRATE_PAUSE_FILE")
    if spec and path:
        ptable, _, prows = spec.partition(":")
        plimit = int(prows or 1)
        timeout = float(os.environ.get("CHATMRPT_MIGRATE_PAUSE_TIMEOUT", "600"))
        done = []

        def pause(t, n):
            if done or t.name != ptable or n < plimit:
                return
            done.append(n)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"pid": os.getpid(), "table": t.name, "rows": n}, f)
            os.replace(tmp, path)
            deadline = time.monotonic() + timeout
            while os.path.exists(path):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pause hook: {path} not removed within {timeout:.0f}s")
                time.sleep(0.05)
        hooks.append(pause)
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def both(t, n):
        for h in hooks:
            h(t, n)
    return both
