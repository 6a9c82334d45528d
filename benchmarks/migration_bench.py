#!/usr/bin/env python3
"""Benchmark: chatmrpt-migrate vs pgloader vs the server-side COPY floor.

One run, one throwaway PostgreSQL 15 server (fsync on, max_wal_size 8GB), the same
generated SQLite database of ChatMRPT's shape (see bench_data.py):

1. ours: ``chatmrpt_migrate --snapshot hold``, as the migration playbook runs it with the
   app stopped (snapshot, analysis, binary COPY into a staging schema, keys/indexes/FKs,
   swap); verification is timed and reported separately;
2. pgloader (``--dynamic-space-size 8192``; workers 4, concurrency 1, batch 25000);
3. the floor: server-side ``COPY ... FROM 'file' (FREEZE)`` of prepared text-format files
   (dumped from the migrated tables, so the data is identical) in 2 sessions, each table
   created in its COPY's transaction, then primary keys, indexes (maintenance_work_mem
   256MB, like ours), foreign keys and the sequence reset.

Each method starts from the same state: a checkpoint and ``sync`` before it, outside its
timing; each round's databases are dropped after it.  CPU seconds (client processes + the
whole PostgreSQL cluster) are reported too: on a shared machine they are steadier than
wall seconds.

Usage: migration_bench.py [--rows 1260000] [--workdir DIR] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import resource
import statistics
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import psycopg  # noqa: E402

import bench_data  # noqa: E402
from pgserver import PgServer  # noqa: E402

SCHEMA = "interactions"  # schema named after interactions.db
_TICK = os.sysconf("SC_CLK_TCK")


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
    A checkpoint, so no method writes out the previous one's dirty buffers, and the OS'
    dirty pages written (sync), so no method waits on the previous one's writeback."""
    pg.psql("CHECKPOINT")
    subprocess.run(["sync"], check=True)


def run_ours(pg, db_path, workdir, jobs, run=0):
    dsn = pg.create_database(f"ours{run}")
    report = os.path.join(workdir, "ours-report.json")
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "tools")}
    load = loadavg()
    t0 = time.perf_counter()
    server_at_verify = None
    log = []
    with CpuMeter(pg) as cpu:
        # --snapshot hold: as the migration playbook runs it (the app is stopped)
        proc = subprocess.Popen([sys.executable, "-m", "chatmrpt_migrate", db_path, "--target",
                                 dsn, "--report", report, "--jobs", str(jobs), "--workdir",
                                 workdir, "--snapshot", "hold"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:       # the progress log: note the server CPU when the
            log.append(line)           # load is done and the verification starts
            if server_at_verify is None and "verifying staging schemas" in line:
                server_at_verify = server_cpu(pg)
        proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"chatmrpt_migrate failed ({proc.returncode}):\n{''.join(log)}")
    rep = json.load(open(report))
    t = rep["timings"]
    verify = t["verify"]
    srv_load = server_at_verify - cpu.s0 if server_at_verify is not None else float("nan")
    return dsn, {"wall": wall, "verify": verify, "migrate": wall - verify, "timings": t,
                 "cpu_client": cpu.client, "cpu_server": cpu.server, "load": load,
                 "cpu_client_load": t.get("cpu_load"), "cpu_server_load": srv_load,
                 "verified": all(r["ok"] for r in rep["verification"])}


def run_pgloader(pg, db_path, workdir, run=0):
    if not shutil.which("pgloader"):
        return None
    pg.create_database(f"pgl{run}")
    cmd = os.path.join(workdir, "bench.load")
    with open(cmd, "w") as f:
        f.write(f"""LOAD DATABASE
  FROM sqlite://{db_path}
  INTO postgresql://{pg.user}@127.0.0.1:{pg.port}/pgl{run}
WITH include drop, create tables, create indexes, reset sequences,
     workers = 4, concurrency = 1, batch rows = 25000, prefetch rows = 25000
SET work_mem to '64MB', maintenance_work_mem to '256MB';
""")
    load = loadavg()
    t0 = time.perf_counter()
    with CpuMeter(pg) as cpu:
        res = subprocess.run(["pgloader", "--dynamic-space-size", "8192",
                              "--no-ssl-cert-verification", "--root-dir",
                              os.path.join(workdir, "pgloader"), cmd],
                             capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
        raise SystemExit("pgloader failed")
    return {"wall": wall, "cpu_client": cpu.client, "cpu_server": cpu.server, "load": load}


def prepare_floor(pg, ours_dsn, workdir):
    """Dump every migrated table to a text-format file (server side) + collect DDL."""
    # the server reads/writes these files: a directory of its own under the system temp
    # dir (a --workdir below a 0700 directory would not be reachable by "postgres")
    fdir = tempfile.mkdtemp(prefix="migbench-floor-")
    os.chmod(fdir, 0o755)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(fdir, pw.pw_uid, pw.pw_gid)
    with psycopg.connect(ours_dsn, autocommit=True) as c:
        tables = [r[0] for r in c.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace "
            "AND relkind = 'r' ORDER BY pg_total_relation_size(oid) DESC", (SCHEMA,))]
        plan = {"tables": [], "post": [], "fks": [], "seqs": [], "dir": fdir}
        for t in tables:
            path = os.path.join(fdir, f"{t}.txt")
            c.execute(f'COPY {SCHEMA}."{t}" TO \'{path}\'')
            cols = c.execute(
                "SELECT string_agg(format('%%I %%s%%s%%s', attname,"
                " format_type(atttypid, atttypmod),"
                " CASE WHEN attcollation NOT IN (0, 100) "      # same collations as ours
                "THEN ' COLLATE ' || attcollation::regcollation::text ELSE '' END,"
                " CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END), ', ' ORDER BY attnum) "
                "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped", (f'{SCHEMA}."{t}"',)).fetchone()[0]
            plan["tables"].append((t, cols, path))
            for (cdef, kind) in c.execute(
                    "SELECT pg_get_constraintdef(oid), contype FROM pg_constraint "
                    "WHERE conrelid = %s::regclass AND contype IN ('p','u','f')",
                    (f'{SCHEMA}."{t}"',)).fetchall():
                stmt = f'ALTER TABLE floor."{t}" ADD {cdef.replace(SCHEMA + ".", "floor.")}'
                (plan["fks"] if kind == "f" else plan["post"]).append(stmt)
            for (idef,) in c.execute(
                    "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = "
                    "%s::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE "
                    "k.conindid = i.indexrelid)", (f'{SCHEMA}."{t}"',)).fetchall():
                plan["post"].append(idef.replace(f" {SCHEMA}.", " floor."))
            for (col,) in c.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attidentity <> ''", (f'{SCHEMA}."{t}"',)).fetchall():
                plan["seqs"].append((t, col))
    return plan


def run_floor(pg, plan, run=0):
    dsn = pg.create_database(f"floor{run}")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE SCHEMA floor")
    # 2 sessions: biggest table in one, the rest in the other (tables sorted by size).
    # Same advantages as ours: CREATE TABLE + COPY ... FREEZE in one transaction,
    # maintenance_work_mem 256MB for the key/index builds.
    groups = [[plan["tables"][0]], plan["tables"][1:]]
    errors = []

    def load(group):
        try:
            with psycopg.connect(dsn) as c:
                c.execute("SET maintenance_work_mem = '256MB'")
                for t, cols, path in group:
                    c.execute(f'CREATE TABLE floor."{t}" ({cols})')
                    c.execute(f"COPY floor.\"{t}\" FROM '{path}' (FREEZE)")
                    c.commit()
                c.autocommit = True
                for stmt in plan["post"]:
                    if any(f'floor."{t}"' in stmt or f"floor.{t} " in stmt for t, _c, _p in group):
                        c.execute(stmt)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    la = loadavg()
    t0 = time.perf_counter()
    with CpuMeter(pg) as cpu:
        th = [threading.Thread(target=load, args=(g,)) for g in groups]
        for x in th:
            x.start()
        for x in th:
            x.join()
        if errors:
            raise errors[0]
        with psycopg.connect(dsn, autocommit=True) as c:
            for stmt in plan["fks"]:
                c.execute(stmt)
            for t, col in plan["seqs"]:
                c.execute(f'CREATE SEQUENCE floor."{t}_{col}_seq" OWNED BY floor."{t}"."{col}"')
                c.execute(f"SELECT setval('floor.\"{t}_{col}_seq\"', "
                          f"(SELECT coalesce(max(\"{col}\"), 0) + 1 FROM floor.\"{t}\"), false)")
                c.execute(f'ALTER TABLE floor."{t}" ALTER COLUMN "{col}" SET DEFAULT '
                          f"nextval('floor.\"{t}_{col}_seq\"')")
    return {"wall": time.perf_counter() - t0, "cpu_client": cpu.client,
            "cpu_server": cpu.server, "load": la}


def _median(runs, key):
    return statistics.median(r[key] for r in runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_260_000)
    ap.add_argument("--workdir", help="where the SQLite file and dumps go (default: temp)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of (ours, pgloader, floor); medians are reported")
    ap.add_argument("--skip-pgloader-if-missing", action="store_true")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="migbench-", dir=args.workdir)
    try:
        db_path = os.path.join(workdir, "interactions.db")
        t0 = time.perf_counter()
        counts = bench_data.generate(db_path, args.rows)
        rows = sum(counts.values())
        size = os.path.getsize(db_path)
        print(f"generated {db_path}: {rows} rows {counts}, {size / 1e6:.0f} MB "
              f"in {time.perf_counter() - t0:.1f}s")
        ours_runs, pgl_runs, floor_runs = [], [], []
        with PgServer(fast=False, settings={"max_wal_size": "8GB",
                                            "checkpoint_timeout": "30min",
                                            "shared_buffers": "512MB"}) as pg:
            plan = None
            try:
                for r in range(args.repeat):
                    # one round = the three methods back to back (noise hits all of them)
                    settle(pg)
                    ours_dsn, ours = run_ours(pg, db_path, workdir, args.jobs, r)
                    ours_runs.append(ours)
                    settle(pg)
                    pgl = run_pgloader(pg, db_path, workdir, r)
                    if pgl is None and not args.skip_pgloader_if_missing:
                        raise SystemExit("pgloader not installed")
                    if pgl:
                        pgl_runs.append(pgl)
                    if plan is None:
                        plan = prepare_floor(pg, ours_dsn, workdir)
                    settle(pg)
                    floor_runs.append(run_floor(pg, plan, r))
                    for name in (f"ours{r}", f"pgl{r}", f"floor{r}"):   # keep the disk small
                        pg.psql(f"DROP DATABASE IF EXISTS {name}")
                    print(f"round {r + 1}: ours {ours['migrate']:.2f}s (verify "
                          f"{ours['verify']:.2f}s), pgloader "
                          f"{pgl['wall'] if pgl else float('nan'):.2f}s, floor "
                          f"{floor_runs[-1]['wall']:.2f}s (load average {ours['load']:.1f}, "
                          f"{pgl['load'] if pgl else float('nan'):.1f}, "
                          f"{floor_runs[-1]['load']:.1f})", flush=True)
            finally:
                if plan:
                    shutil.rmtree(plan["dir"], ignore_errors=True)
        med = {"ours": _median(ours_runs, "migrate"), "verify": _median(ours_runs, "verify"),
               "floor": _median(floor_runs, "wall")}
        if pgl_runs:
            med["pgloader"] = _median(pgl_runs, "wall")
        if not all(o["verified"] for o in ours_runs):
            raise SystemExit("ours: verification did not pass")
        res = {"rows": rows, "sqlite_mb": round(size / 1e6), "runs": args.repeat,
               "median_seconds": med, "ours": ours_runs, "pgloader": pgl_runs,
               "floor": floor_runs}
        print(f"\nmedian of {args.repeat} run(s)")
        print(f"{'method':<44} {'seconds':>8} {'rows/s':>10} {'CPU client+server':>18}")
        line = "{:<44} {:>8.2f} {:>10.0f} {:>18}"

        def cpu(runs):
            return (f"{_median(runs, 'cpu_client'):.1f} + {_median(runs, 'cpu_server'):.1f}"
                    if runs else "")
        print(line.format("ours (snapshot+analyse+load+keys+FKs+swap)", med["ours"],
                          rows / med["ours"], cpu(ours_runs)))
        print(line.format("ours, CPU of the part before verification",
                          med["ours"], rows / med["ours"],
                          f"{_median(ours_runs, 'cpu_client_load'):.1f} + "
                          f"{_median(ours_runs, 'cpu_server_load'):.1f}"))
        print(line.format("ours: verification (separate)", med["verify"],
                          rows / max(med["verify"], 1e-9), ""))
        if pgl_runs:
            print(line.format("pgloader", med["pgloader"], rows / med["pgloader"],
                              cpu(pgl_runs)))
        print(line.format("floor (server COPY FROM file, 2 sessions)", med["floor"],
                          rows / med["floor"], cpu(floor_runs)))
        print("(CPU: seconds of the client processes + the PostgreSQL cluster; ours' CPU "
              "includes the verification)")
        t = ours_runs[len(ours_runs) // 2]["timings"]
        print(f"\nours breakdown (one run): snapshot {t.get('snapshot')}s, listing "
              f"{t.get('analyse')}s, analyse+load+indexes {t.get('load_and_indexes')}s, "
              f"FKs {t.get('foreign_keys')}s, swap {t.get('swap')}s; client CPU: load "
              f"{t.get('cpu_load')}s, verification {t.get('cpu_verify')}s")
        print("load average (1 min) at the start of each method, per round: " + "; ".join(
            f"ours {o['load']:.1f}, pgloader {p['load'] if p else float('nan'):.1f}, "
            f"floor {f['load']:.1f}"
            for o, p, f in zip(ours_runs, pgl_runs or [None] * len(ours_runs), floor_runs)))
        if pgl_runs:
            res["ours_vs_pgloader_throughput"] = med["pgloader"] / med["ours"]
            print(f"ours vs pgloader throughput: {res['ours_vs_pgloader_throughput']:.2f}x "
                  "(medians; per round: " + ", ".join(
                      f"{p['wall'] / o['migrate']:.2f}x" for o, p in zip(ours_runs, pgl_runs))
                  + ")")
        res["ours_vs_floor_time"] = med["ours"] / med["floor"]
        print(f"ours vs floor time: {res['ours_vs_floor_time']:.2f}x (medians; per round: "
              + ", ".join(f"{o['migrate'] / f['wall']:.2f}x"
                          for o, f in zip(ours_runs, floor_runs)) + ")")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
