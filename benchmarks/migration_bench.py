#!/usr/bin/env python3
"""Benchmark: chatmrpt-migrate vs pgloader vs a server-side binary COPY floor, end to end,
on an app ``instance/`` directory of ChatMRPT's real shape (chatmrpt_shape.py: 4 app
databases + 2 ``uploads/*/tpr_precomputed.db``, 30 tables, ~1.24 M rows at --scale 1).

One throwaway PostgreSQL 15 server (fsync on, max_wal_size 8GB, shared_buffers 512MB).
Each round runs the three methods back to back, each after ``VACUUM (ANALYZE)`` of every
database, a checkpoint and ``sync`` (outside its timing, so no method pays for the
previous one's autovacuum work or dirty pages), each into its own fresh database(s); each
round's databases are dropped after it.

1. **ours**, what a user runs, default options, timed as a whole process:
   ``python -m chatmrpt_migrate INSTANCE --include-tpr --target DSN --report R``
   (default ``--snapshot copy`` and ``--jobs 2``; TMPDIR points into the bench's work
   directory, so the snapshot copies land there: same file system as the default /tmp).
   The wall time includes the interpreter start, the verification and the swap; the
   report's timings split it into its load part (snapshot + analyse + migrate, i.e.
   tables, keys, indexes, foreign keys) and its verification part; every other timing
   key the report holds is printed too.
2. **pgloader** with default settings, as a user runs it, one command per SQLite file,
   sequentially: ``pgloader sqlite:///path/file.db postgresql://user@127.0.0.1:PORT/db``.
   pgloader's defaults include ``include drop``: it drops and re-creates each table it
   loads, in the target database's ``public`` schema.  The four app databases have
   disjoint table names and go into one database (``pgl<round>``); the two
   tpr_precomputed.db files have the same table names (tpr_results, computation_status),
   so a file whose table names collide with a file already loaded goes into a database of
   its own (``pgl<round>_<n>``): loaded into one database, the second file would silently
   replace the first one's tables (checked: with defaults, it does).  pgloader exits 0
   even when it drops rows or foreign keys; the ERROR lines of its output are counted
   and shown.  With defaults pgloader 3.6.9 (reports "3.6.7~devel") dies of heap
   exhaustion on interactions.db at --scale 1 (SBCL's default dynamic space); such a file
   is run again with ``--dynamic-space-size 8192`` and only the completed runs are timed
   (the failed attempt is printed apart).
3. **the floor**: the work a server must do at least to hold ours' result, with every
   trick ours may use.  Outside the timing, every table ours migrated is dumped to a
   server-side file with ``COPY ... TO 'file' (FORMAT BINARY)``.  Timed: the schemas; in 2
   sessions (tables balanced by size), per table ``CREATE TABLE`` (ours' column types,
   collations, NOT NULL, identity) + ``COPY ... FROM 'file' (FORMAT BINARY, FREEZE)`` in
   one transaction; then ours' primary keys, UNIQUE constraints and indexes, built as
   indexes in 2 parallel sessions (biggest first, ``maintenance_work_mem`` 256MB, like
   ours), keys attached with ``ADD CONSTRAINT ... USING INDEX``; then the foreign keys,
   added ``NOT VALID`` and ``VALIDATE``d in 2 sessions (those ours left NOT VALID because
   of orphan rows stay NOT VALID); then the identity restarts.  The floor has no client
   work, no analysis, no snapshot, no verification.

After the first round, outside every timing: the number of WRONG values in ours' result
and in pgloader's, by a value-by-value comparison with the SQLite sources:
``tests/migration/oracle.py``'s ``compare(sqlite_path, dsn, schema)`` when it exists,
else :func:`count_wrong_values` below (its equality rules are in its docstring).  When
ours' verification fails (exit 1), its staging schemas are what is compared and what the
floor copies; the benchmark reports everything and exits 1 at the end.

Printed: end-to-end seconds (medians over --repeat rounds), rows/s, CPU seconds (client
processes + the whole PostgreSQL cluster), the load average at the start of each method,
"ours vs pgloader end to end" (pgloader wall / ours wall) and "ours' load vs floor"
(ours' load part / floor wall).

Usage: migration_bench.py [--scale 1.0] [--repeat 1] [--json FILE] [--workdir DIR]
                          [--skip-pgloader-if-missing] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "migration"))

import psycopg  # noqa: E402

import chatmrpt_shape  # noqa: E402
from pgserver import PgServer  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------- measurement
def server_cpu(pg) -> float:
    """CPU seconds used so far by the whole cluster: the postmaster, its exited children
    (cutime/cstime) and its live children (backends, checkpointer, WAL writer...)."""
    with open(os.path.join(pg.datadir, "postmaster.pid")) as f:
        pid = int(f.readline())
    total = 0
    pids = [pid] + [int(x) for x in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)],
                                                     capture_output=True, text=True).stdout.split()]
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
    return total / _TICK


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """Client (child processes + this process) and server CPU seconds of one method."""

    def __init__(self, pg):
        self.pg = pg

    def __enter__(self):
        self.c0, self.p0, self.s0 = child_cpu(), time.process_time(), server_cpu(self.pg)
        return self

    def __exit__(self, *exc):
        self.client = child_cpu() - self.c0 + time.process_time() - self.p0
        self.server = server_cpu(self.pg) - self.s0


def settle(pg) -> None:
    """Before each method, outside its timing: the same starting state for all three.
    Every database vacuumed and analyzed, so no method's run meets autovacuum working
    on the previous one's tables (ours hands its tables to autovacuum only when it
    ends); a checkpoint, so no method writes out the previous one's dirty buffers; and
    the OS' dirty pages written (sync), so no method waits on the previous one's
    writeback."""
    for db in pg.psql("SELECT datname FROM pg_database WHERE datallowconn").split():
        pg.psql("VACUUM (ANALYZE)", dbname=db)
    pg.psql("CHECKPOINT")
    subprocess.run(["sync"], check=True)


def sqlite_tables(path: str) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
    finally:
        con.close()


# -------------------------------------------------------------------------------- ours
def run_ours(pg, instance, workdir, run):
    dsn = pg.create_database(f"ours{run}")
    report = os.path.join(workdir, f"ours-report-{run}.json")
    tmp = os.path.join(workdir, "tmp")
    os.makedirs(tmp, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "tools"), "TMPDIR": tmp}
    load = loadavg()
    server_at_verify = None
    log = []
    t0 = time.perf_counter()
    with CpuMeter(pg) as cpu:
        proc = subprocess.Popen([sys.executable, "-m", "chatmrpt_migrate", instance,
                                 "--include-tpr", "--target", dsn, "--report", report],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        out_lines = []
        t = threading.Thread(target=lambda: out_lines.extend(proc.stdout))
        t.start()
        for line in proc.stderr:       # the progress log: note the server CPU when the
            log.append(line)           # load is done and the verification starts
            if server_at_verify is None and "verifying staging schemas" in line:
                server_at_verify = server_cpu(pg)
        proc.wait()
        t.join()
    wall = time.perf_counter() - t0
    res = {"wall": wall, "exit_code": proc.returncode, "cpu_client": cpu.client,
           "cpu_server": cpu.server, "load": load, "dsn": dsn, "verified": False,
           "timings": {}, "schemas": {}}
    try:
        with open(report) as f:
            rep = json.load(f)
    except (OSError, ValueError):
        rep = {}
    t = rep.get("timings", {})
    res["timings"] = {k: v for k, v in t.items() if k != "tables"}
    res["table_timings"] = t.get("tables") or {}
    res["compiled"] = rep.get("compiled") or {}
    res["load_part"] = sum(t.get(k, 0) for k in ("snapshot", "analyse", "migrate"))
    res["verify"] = t.get("verify", float("nan"))
    res["other"] = wall - res["load_part"] - (t.get("verify") or 0)
    res["cpu_client_load"] = t.get("cpu_load")
    res["cpu_client_verify"] = t.get("cpu_verify")
    res["cpu_server_load"] = (server_at_verify - cpu.s0 if server_at_verify is not None
                              else float("nan"))
    res["cpu_server_verify"] = (cpu.server - res["cpu_server_load"]
                                if server_at_verify is not None else float("nan"))
    ver = rep.get("verification") or []
    res["verified"] = proc.returncode == 0 and bool(ver) and all(r["ok"] for r in ver)
    res["mismatches"] = [f"{r['schema']}.{r['table']}: {'; '.join(r['problems'])}"
                         for r in ver if not r["ok"]]
    swapped = proc.returncode == 0
    # exit 0: the swapped-in schemas; exit 1 (mismatch): the staging schemas it leaves;
    # anything else: nothing to compare or copy
    for s in rep.get("sources", []) if proc.returncode in (0, 1) else []:
        res["schemas"][os.path.realpath(s["path"])] = s["schema"] + ("" if swapped else
                                                                      "__staging")
    if proc.returncode not in (0, 1):
        res["error"] = "".join(log[-30:])
    return res


# ---------------------------------------------------------------------------- pgloader
def pgloader_targets(files: list[str], run: int) -> list[tuple[str, str]]:
    """(file, database): one shared database unless a file's table names collide with a
    file already assigned to it; then a database of its own (see the module docstring)."""
    shared, used, out = f"pgl{run}", set(), []
    for i, f in enumerate(files):
        names = set(sqlite_tables(f))
        if names & used:
            out.append((f, f"pgl{run}_{i}"))
        else:
            used |= names
            out.append((f, shared))
    return out


PGLOADER_HEAP_MB = 8192   # only when the defaults die with "Heap exhausted" (see main)


def run_pgloader(pg, files, workdir, run):
    """The files one after another, pgloader's defaults.  A file on which pgloader dies of
    heap exhaustion (SBCL's default dynamic space; interactions.db at --scale 1) is run
    again with ``--dynamic-space-size 8192``, the one change a user must then make: the
    reported time and CPU are those of the completed runs; the failed attempt is reported
    apart (``failed_defaults``)."""
    targets = pgloader_targets(files, run)
    for db in dict.fromkeys(d for _f, d in targets):
        pg.create_database(db)
    load = loadavg()
    logs, codes, failed_defaults = [], [], []
    wall = cpu_client = cpu_server = 0.0
    for f, db in targets:
        cmd = ["pgloader", f"sqlite://{f}", f"postgresql://{pg.user}@127.0.0.1:{pg.port}/{db}"]
        for attempt in (cmd, cmd[:1] + ["--dynamic-space-size", str(PGLOADER_HEAP_MB)]
                        + cmd[1:]):
            t0 = time.perf_counter()
            with CpuMeter(pg) as cpu:
                res = subprocess.run(attempt, capture_output=True, text=True, cwd=workdir)
            dt = time.perf_counter() - t0
            log = res.stdout + res.stderr
            if res.returncode != 0 and "Heap exhausted" in log and attempt is cmd:
                failed_defaults.append({"file": f, "seconds": round(dt, 2),
                                        "cpu": round(cpu.client + cpu.server, 1),
                                        "why": "heap exhausted (SBCL default dynamic space)"})
                continue
            break
        wall += dt
        cpu_client += cpu.client
        cpu_server += cpu.server
        codes.append(res.returncode)
        logs.append(log)
    errors = []
    for (f, _db), log in zip(targets, logs):
        for m in re.finditer(r" ERROR (.*(?:\n(?!\d{4}-\d\d-\d\dT).*){0,2})", log):
            errors.append(f"{os.path.basename(f)}: {m.group(1).strip()[:300]}")
    summary = []
    for (f, _db), log in zip(targets, logs):
        m = re.search(r"Total import time\s+(\S+)\s+(\d+)", log)
        summary.append(f"{os.path.relpath(f, os.path.dirname(files[0]))}: "
                       + (f"errors {m.group(1)}, rows {m.group(2)}" if m else "no summary"))
    return {"wall": wall, "cpu_client": cpu_client, "cpu_server": cpu_server, "load": load,
            "exit_codes": codes, "errors": errors, "summary": summary,
            "failed_defaults": failed_defaults,
            "targets": [(f, pg.dsn_for(db), "public") for f, db in targets],
            "databases": sorted(set(d for _f, d in targets)),
            "failed": [f for (f, _d), c in zip(targets, codes) if c != 0],
            "log_tail": [log[-2000:] for log, c in zip(logs, codes) if c != 0]}


# ------------------------------------------------------------------------------- floor
def _server_dir() -> str:
    """A directory the server (user postgres when we are root) can read and write."""
    fdir = tempfile.mkdtemp(prefix="migbench-floor-")
    os.chmod(fdir, 0o755)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(fdir, pw.pw_uid, pw.pw_gid)
    return fdir


def _qn(schema, table):
    return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'


def prepare_floor(dsn: str, schemas: list[str]) -> dict:
    """Outside the timing: dump ours' tables (binary, server side) and collect DDL."""
    fdir = _server_dir()
    plan = {"dir": fdir, "schemas": schemas, "tables": [], "indexes": [], "attach": [],
            "fks": [], "identity": []}
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = ''")          # every name schema-qualified
        for s in schemas:
            for oid, rel, size in c.execute(
                    "SELECT oid, relname, pg_relation_size(oid) FROM pg_class WHERE "
                    "relnamespace = %s::regnamespace AND relkind = 'r'", (s,)).fetchall():
                qn = _qn(s, rel)
                path = os.path.join(fdir, f"{s}.{rel}.bin")
                c.execute(f"COPY {qn} TO '{path}' (FORMAT BINARY)")
                cols = []
                for name, typ, coll, notnull, ident in c.execute(
                        "SELECT attname, format_type(atttypid, atttypmod), CASE WHEN "
                        "attcollation NOT IN (0, 100) THEN attcollation::regcollation::text "
                        "END, attnotnull, attidentity FROM pg_attribute WHERE attrelid = %s "
                        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,)):
                    d = '"' + name.replace('"', '""') + '" ' + typ
                    if coll:
                        d += " COLLATE " + coll
                    if notnull:
                        d += " NOT NULL"
                    if ident:
                        d += (" GENERATED ALWAYS AS IDENTITY" if ident == "a"
                              else " GENERATED BY DEFAULT AS IDENTITY")
                        seq = c.execute("SELECT pg_get_serial_sequence(%s, %s)",
                                        (qn, name)).fetchone()[0]
                        last, called = c.execute(f"SELECT last_value, is_called FROM {seq}"
                                                 ).fetchone()
                        nxt = last + 1 if called else last
                        plan["identity"].append(
                            f'ALTER TABLE {qn} ALTER COLUMN "{name}" RESTART WITH {nxt}')
                    cols.append(d)
                plan["tables"].append((qn, ", ".join(cols), path, size))
                for iname, idef, isize, contype, conname in c.execute(
                        "SELECT x.relname, pg_get_indexdef(i.indexrelid), "
                        "pg_relation_size(i.indexrelid), k.contype, k.conname FROM pg_index i "
                        "JOIN pg_class x ON x.oid = i.indexrelid "
                        "LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND "
                        "k.conrelid = i.indrelid AND k.contype IN ('p', 'u') "
                        "WHERE i.indrelid = %s", (oid,)).fetchall():
                    plan["indexes"].append((isize, idef))
                    if contype:
                        kind = "PRIMARY KEY" if contype == "p" else "UNIQUE"
                        plan["attach"].append(
                            (qn, f'ALTER TABLE {qn} ADD CONSTRAINT "{conname}" {kind} USING '
                                 f'INDEX "{iname}"'))
                for conname, cdef, valid in c.execute(
                        "SELECT conname, pg_get_constraintdef(oid), convalidated FROM "
                        "pg_constraint WHERE conrelid = %s AND contype = 'f'", (oid,)):
                    cdef = cdef.removesuffix(" NOT VALID")
                    plan["fks"].append((qn, f'ALTER TABLE {qn} ADD CONSTRAINT "{conname}" '
                                            f"{cdef} NOT VALID",
                                        f'ALTER TABLE {qn} VALIDATE CONSTRAINT "{conname}"'
                                        if valid else None))
    plan["indexes"].sort(reverse=True)
    return plan


def _parallel(dsn, queues, fn, sessions=2):
    """Run fn(conn, item) for items taken from a shared list by `sessions` sessions."""
    errors = []
    lock = threading.Lock()

    def worker(items):
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("SET maintenance_work_mem = '256MB'")
                while True:
                    with lock:
                        if not items:
                            return
                        item = items.pop(0)
                    fn(c, item)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    th = [threading.Thread(target=worker, args=(q,)) for q in queues(sessions)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    if errors:
        raise errors[0]


def run_floor(pg, plan, run):
    dsn = pg.create_database(f"floor{run}")
    # tables balanced by size over 2 sessions (longest processing time first)
    bins = [[], []]
    sizes = [0, 0]
    for t in sorted(plan["tables"], key=lambda x: -x[3]):
        k = sizes.index(min(sizes))
        bins[k].append(t)
        sizes[k] += t[3]

    def load(c, t):
        qn, cols, path, _size = t
        c.execute("BEGIN")
        c.execute(f"CREATE TABLE {qn} ({cols})")
        c.execute(f"COPY {qn} FROM '{path}' (FORMAT BINARY, FREEZE)")
        c.execute("COMMIT")

    la = loadavg()
    t0 = time.perf_counter()
    with CpuMeter(pg) as cpu:
        with psycopg.connect(dsn, autocommit=True) as c:
            for s in plan["schemas"]:
                c.execute(f'CREATE SCHEMA "{s}"')
        _parallel(dsn, lambda n: bins, load)                       # each session its bin
        idx = [d for _s, d in plan["indexes"]]                     # one shared queue
        _parallel(dsn, lambda n: [idx] * n, lambda c, d: c.execute(d))
        attach = {}
        for qn, stmt in plan["attach"]:
            attach.setdefault(qn, []).append(stmt)
        groups = list(attach.values())
        _parallel(dsn, lambda n: [groups] * n, lambda c, g: [c.execute(s) for s in g])
        with psycopg.connect(dsn, autocommit=True) as c:
            for _qn, add, _val in plan["fks"]:
                c.execute(add)
        val = [v for _qn, _a, v in plan["fks"] if v]
        _parallel(dsn, lambda n: [val] * n, lambda c, s: c.execute(s))
        with psycopg.connect(dsn, autocommit=True) as c:
            for s in plan["identity"]:
                c.execute(s)
    return {"wall": time.perf_counter() - t0, "cpu_client": cpu.client,
            "cpu_server": cpu.server, "load": la}


# ---------------------------------------------------------------- wrong-value counting
def _summarise(label, path, dsn, schema, check_types) -> dict:
    """One SQLite file against its migrated schema, by tests/migration/oracle.py's
    ``compare`` (independent of the tool; equality rules in its docstring: instants for
    timestamps, parsed JSON with numbers compared numerically, exact doubles, 0/1 =
    false/true...).  Its differences are sorted into: wrong values (a cell that differs),
    rows missing from / extra in the target (a missing row counts all its cells as wrong
    values), missing tables/columns, and ``type:`` findings (the column type is not the one
    the tool's README maps it to: checked for ours only; pgloader has its own mapping).
    "table/column only in target" is ignored (pgloader's shared database holds the tables
    of four files)."""
    import oracle
    out = {"label": label, "file": path, "wrong_values": 0, "missing_rows": 0,
           "extra_rows": 0, "type_findings": 0, "by_table": {}, "examples": [],
           "type_examples": []}
    try:
        diffs = oracle.compare(path, dsn, schema, check_types=check_types)
    except Exception as e:  # noqa: BLE001  report, do not crash the benchmark
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    seen = set()
    for d in diffs:
        r = d.reason
        if "only in target" in r:
            continue
        if r.startswith("type:"):
            out["type_findings"] += 1
            if len(out["type_examples"]) < 5:
                out["type_examples"].append(str(d)[:240])
            continue
        t = out["by_table"].setdefault(d.table, {"wrong_values": 0, "missing_rows": 0,
                                                 "extra_rows": 0, "by_column": {}})
        if r.startswith("row missing"):
            n = len(d.source) if isinstance(d.source, dict) else 1
            t["missing_rows"] += 1
            out["missing_rows"] += 1
        elif r.startswith("row only"):
            n = len(d.target) if isinstance(d.target, dict) else 1
            t["extra_rows"] += 1
            out["extra_rows"] += 1
        elif r == "table missing in target":
            rows = int(str(d.source).split()[0])
            n = rows * len(oracle.source_tables(path)[d.table].columns)
            t["missing_rows"] += rows
            out["missing_rows"] += rows
        else:                                   # a cell (or a whole missing column)
            n = 1
            t["by_column"][d.column] = t["by_column"].get(d.column, 0) + 1
        t["wrong_values"] += n
        out["wrong_values"] += n
        where = (d.table, d.column)
        if len(out["examples"]) < 12 and where not in seen:
            seen.add(where)
            out["examples"].append(str(d)[:240])
    return out


def wrong_values(jobs: list[tuple], workers: int = 2) -> dict:
    """jobs: [(label, sqlite_path, dsn, schema, check_types)] -> {label: totals}, computed
    in `workers` processes (outside every timing); None when tests/migration/oracle.py
    is not there."""
    try:
        import oracle  # noqa: F401
    except ImportError:
        return None
    import multiprocessing
    jobs = sorted(jobs, key=lambda j: -os.path.getsize(j[1]))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.starmap(_summarise, jobs)
    out = {}
    for r in results:
        tot = out.setdefault(r["label"], {"wrong_values": 0, "missing_rows": 0,
                                          "extra_rows": 0, "type_findings": 0,
                                          "by_table": {}, "examples": [],
                                          "type_examples": [], "errors": []})
        name = (os.path.basename(r["file"]) if "uploads" not in r["file"] else
                "tpr_" + os.path.basename(os.path.dirname(r["file"]))[:8])
        for k in ("wrong_values", "missing_rows", "extra_rows", "type_findings"):
            tot[k] += r[k]
        for t, v in r["by_table"].items():
            tot["by_table"][f"{name}:{t}"] = v
        tot["examples"] += [f"{name}: {e}" for e in r["examples"]]
        tot["type_examples"] += [f"{name}: {e}" for e in r["type_examples"]]
        if r.get("error"):
            tot["errors"].append(f"{name}: NOT COMPARED: {r['error']}")
    return out


# -------------------------------------------------------------------------------- main
def _median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


def _print_wrong(label, w):
    if w is None:
        print(f"{label}: not compared")
        return
    print(f"{label}: {w['wrong_values']} wrong values ({w['missing_rows']} rows missing, "
          f"{w['extra_rows']} extra)" + (f"; {w['type_findings']} column types differ from "
                                         "the README's mapping" if w["type_findings"] else ""))
    for e in w["errors"]:
        print(f"    {e}")
    for t, r in sorted(w["by_table"].items(), key=lambda x: -x[1]["wrong_values"])[:14]:
        cols = ", ".join(f"{c} {n}" for c, n in sorted(r["by_column"].items(),
                                                         key=lambda x: -x[1])[:5])
        print(f"    {t:<36} {r['wrong_values']:>8}" + (
            f"  ({r['missing_rows']} rows missing)" if r["missing_rows"] else "")
            + (f"  columns: {cols}" if cols else ""))
    for e in (w["examples"] + w["type_examples"])[:16]:
        print(f"    e.g. {e[:230]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="dataset scale (1.0: ~1.24 M rows, ~460 MB of SQLite)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="where the instance directory goes (default: temp)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of (ours, pgloader, floor); medians are reported")
    ap.add_argument("--skip-pgloader-if-missing", action="store_true")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="migbench-", dir=args.workdir)
    floor_dir = None
    try:
        instance = os.path.join(workdir, "instance")
        t0 = time.perf_counter()
        counts = chatmrpt_shape.build(instance, args.scale, args.seed)
        gen_s = time.perf_counter() - t0
        files = [os.path.realpath(os.path.join(instance, rel)) for rel in counts]
        rows = sum(sum(t.values()) for t in counts.values())
        ntables = sum(len(t) for t in counts.values())
        size = sum(os.path.getsize(f) for f in files)
        print(f"generated {instance}: {ntables} tables in {len(files)} SQLite files, "
              f"{rows} rows, {size / 1e6:.0f} MB in {gen_s:.1f}s", flush=True)
        have_pgloader = shutil.which("pgloader") is not None
        if not have_pgloader and not args.skip_pgloader_if_missing:
            raise SystemExit("pgloader not installed (--skip-pgloader-if-missing)")
        ours_runs, pgl_runs, floor_runs = [], [], []
        wrong = {"ours": None, "pgloader": None}
        with PgServer(fast=False, settings={"max_wal_size": "8GB",
                                            "checkpoint_timeout": "30min",
                                            "shared_buffers": "512MB"}) as pg:
            plan = None
            for r in range(args.repeat):
                # one round = the three methods back to back (noise hits all of them)
                settle(pg)
                ours = run_ours(pg, instance, workdir, r)
                ours_runs.append(ours)
                if not ours["verified"]:
                    print(f"ours (round {r + 1}) exit {ours['exit_code']}: "
                          + ("verification mismatch" if ours["exit_code"] == 1 else
                             "no verified result") + "".join(f"\n    {m}" for m in ours["mismatches"][:20])
                          + (f"\n{ours['error']}" if ours.get("error") else ""), flush=True)
                pgl = None
                if have_pgloader:
                    settle(pg)
                    pgl = run_pgloader(pg, files, workdir, r)
                    pgl_runs.append(pgl)
                    for x in pgl["failed_defaults"]:
                        print(f"pgloader with defaults died on {x['file']} after "
                              f"{x['seconds']}s: {x['why']}; run again with "
                              f"--dynamic-space-size {PGLOADER_HEAP_MB}", flush=True)
                    if pgl["failed"]:
                        print("pgloader failed on " + ", ".join(pgl["failed"]) + ":\n"
                              + "\n".join(pgl["log_tail"]), flush=True)
                fl = None
                if ours["schemas"]:
                    if plan is None:
                        plan = prepare_floor(ours["dsn"], sorted(set(ours["schemas"].values())))
                        floor_dir = plan["dir"]
                    settle(pg)
                    fl = run_floor(pg, plan, r)
                    floor_runs.append(fl)
                if r == 0:                      # outside every timing
                    t1 = time.perf_counter()
                    jobs = [("ours", f, ours["dsn"], ours["schemas"][f], True)
                            for f in files if f in ours["schemas"]]
                    jobs += [("pgloader", f, dsn, schema, False)
                             for f, dsn, schema in (pgl["targets"] if pgl else [])]
                    w = wrong_values(jobs)
                    if w is None:
                        print("tests/migration/oracle.py not found: wrong values not "
                              "counted", flush=True)
                    else:
                        wrong.update({k: w.get(k) for k in wrong})
                        print(f"(value-by-value comparison: {time.perf_counter() - t1:.1f}s,"
                              " not timed)", flush=True)
                for db in [f"ours{r}", f"floor{r}"] + (pgl["databases"] if pgl else []):
                    pg.psql(f'DROP DATABASE IF EXISTS "{db}"')
                nan = float("nan")
                print(f"round {r + 1}: ours {ours['wall']:.2f}s (load {ours['load_part']:.2f}s,"
                      f" verify {ours['verify']:.2f}s, exit {ours['exit_code']}), pgloader "
                      f"{pgl['wall'] if pgl else nan:.2f}s, floor "
                      f"{fl['wall'] if fl else nan:.2f}s (load average at start: "
                      f"{ours['load']:.1f}, {pgl['load'] if pgl else nan:.1f}, "
                      f"{fl['load'] if fl else nan:.1f})", flush=True)
        med = {"ours": _median(ours_runs, "wall"), "ours_load": _median(ours_runs, "load_part"),
               "ours_verify": _median(ours_runs, "verify"),
               "ours_other": _median(ours_runs, "other"),
               "pgloader": _median(pgl_runs, "wall"), "floor": _median(floor_runs, "wall")}
        res = {"rows": rows, "tables": ntables, "files": len(files),
               "sqlite_mb": round(size / 1e6), "generate_seconds": round(gen_s, 1),
               "scale": args.scale, "runs": args.repeat, "median_seconds": med,
               "ours": [{k: v for k, v in o.items() if k != "dsn"} for o in ours_runs],
               "pgloader": [{k: v for k, v in p.items() if k != "targets"} for p in pgl_runs],
               "floor": floor_runs, "wrong_values": wrong, "counts": counts}

        def cpu(runs, c="cpu_client", s="cpu_server"):
            return f"{_median(runs, c):.1f} + {_median(runs, s):.1f}" if runs else ""
        print(f"\n{rows} rows, {ntables} tables, {size / 1e6:.0f} MB of SQLite; "
              f"median of {args.repeat} round(s)")
        print(f"{'method':<52} {'seconds':>8} {'rows/s':>10} {'CPU client+server':>18}")
        line = "{:<52} {:>8.2f} {:>10.0f} {:>18}"
        print(line.format("ours, end to end (default options)", med["ours"],
                          rows / med["ours"], cpu(ours_runs)))
        print(line.format("  ours: load (snapshot + analyse + migrate)", med["ours_load"],
                          rows / med["ours_load"],
                          cpu(ours_runs, "cpu_client_load", "cpu_server_load")))
        print(line.format("  ours: verification", med["ours_verify"],
                          rows / med["ours_verify"],
                          cpu(ours_runs, "cpu_client_verify", "cpu_server_verify")))
        print(line.format("  ours: the rest (start-up, swap, report)", med["ours_other"],
                          float("nan"), ""))
        if pgl_runs:
            print(line.format(f"pgloader, defaults, {len(files)} files one after another",
                              med["pgloader"], rows / med["pgloader"], cpu(pgl_runs)))
            for x in pgl_runs[0]["failed_defaults"]:
                print(f"  (with more heap for {os.path.basename(x['file'])}: the defaults "
                      f"died of {x['why']} after {x['seconds']}s, not counted)")
        if floor_runs:
            print(line.format("floor: binary COPY FREEZE, 2 sessions, keys, FKs",
                              med["floor"], rows / med["floor"], cpu(floor_runs)))
        print("(CPU seconds: client processes + the whole PostgreSQL cluster; ours' server "
              "CPU split at the start of its verification)")
        mid = ours_runs[len(ours_runs) // 2]
        print("ours' report timings (one round): " + ", ".join(
            f"{k} {v}" for k, v in mid["timings"].items() if not isinstance(v, dict)))
        print("ours' compiled modules (tools/chatmrpt_migrate/build.py): " + (", ".join(
            f"{k} {'yes' if v else 'NO (Python)'}" for k, v in mid["compiled"].items())
            or "not reported"))
        slow = sorted(mid["table_timings"].items(), key=lambda x: -x[1].get("copy", 0))[:5]
        if slow:
            print("ours' slowest tables (analyse / COPY seconds, in its 2 loader processes): "
                  + ", ".join(f"{k.split('.')[-1]} {v.get('analyse', 0):.2f}/"
                              f"{v.get('copy', 0):.2f}" for k, v in slow))
        print("load average (1 min) at the start of each method, per round: " + "; ".join(
            f"ours {o['load']:.1f}, pgloader {p['load'] if p else float('nan'):.1f}, "
            f"floor {f['load'] if f else float('nan'):.1f}"
            for o, p, f in zip(ours_runs, pgl_runs or [None] * len(ours_runs),
                               floor_runs or [None] * len(ours_runs))))
        if pgl_runs:
            res["ours_vs_pgloader_end_to_end"] = med["pgloader"] / med["ours"]
            print(f"\nours vs pgloader end to end: {res['ours_vs_pgloader_end_to_end']:.2f}x "
                  "faster (pgloader wall / ours wall; per round: " + ", ".join(
                      f"{p['wall'] / o['wall']:.2f}x" for o, p in zip(ours_runs, pgl_runs))
                  + ")")
        if floor_runs:
            res["ours_load_vs_floor"] = med["ours_load"] / med["floor"]
            print(f"ours' load vs floor: {res['ours_load_vs_floor']:.2f}x (ours' load part / "
                  "floor wall; per round: " + ", ".join(
                      f"{o['load_part'] / f['wall']:.2f}x"
                      for o, f in zip(ours_runs, floor_runs)) + ")")
        print("\nwrong values against the SQLite sources (first round, not timed):")
        _print_wrong("  ours", wrong["ours"])
        _print_wrong("  pgloader", wrong["pgloader"])
        if pgl_runs:
            p = pgl_runs[0]
            print("  pgloader's own summaries: " + "; ".join(p["summary"]))
            print(f"  pgloader logged {len(p['errors'])} ERROR(s) (exit codes "
                  f"{p['exit_codes']}):")
            for e in p["errors"][:12]:
                print("    " + e.replace("\n", " | ")[:240])
        ok = all(o["verified"] for o in ours_runs)
        res["ours_verified"] = ok
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2, default=str)
        if not ok:
            print("\nFAILED: ours did not migrate and verify in every round "
                  f"(exit codes {[o['exit_code'] for o in ours_runs]})")
            return 1
        return 0
    finally:
        if floor_dir:
            shutil.rmtree(floor_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
