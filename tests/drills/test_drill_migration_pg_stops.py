"""Fault drill: PostgreSQL stops in the middle of a migration.

tools/chatmrpt_migrate migrates a ChatMRPT-shaped interactions.db into a throwaway
PostgreSQL (tests/pgserver.py, never the lab's). Then the source grows, and a second
migration is paused by the tool's drill hook (CHATMRPT_MIGRATE_PAUSE_AT) inside its open
COPY transaction; PostgreSQL is crash-stopped and started again (immediate mode) right
there, and the migration resumes on a dead connection.

Asserted: the interrupted run exits 4 and says the target is unchanged; the live schema
(table list, column types, row count and content checksum of every table) is exactly as
after the first migration; a rerun exits 0 with every verification ok, loads the new rows
and leaves no staging schema; `chatmrpt-migrate verify` agrees.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import psycopg
import pytest

from helpers import ROOT
from pgserver import PgServer, pg_available

sys.path.insert(0, str(ROOT / "tests" / "migration"))
import chatmrpt_data  # noqa: E402  (the migration tests' generator of ChatMRPT-shaped data)

SOURCE_ROWS = 20_000
NEW_ROWS = 30_000
TOOL_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}


def migrate(src, dsn, *args, env=None):
    cmd = [sys.executable, "-m", "chatmrpt_migrate", str(src), "--target", dsn, *map(str, args)]
    return subprocess.Popen(cmd, env=env or TOOL_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def live_state(dsn: str, schema: str = "interactions") -> dict:
    """Every table of the live schema: its columns and types, row count and content checksum."""
    with psycopg.connect(dsn, autocommit=True) as con:
        columns = con.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = %s::regnamespace "
            "AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2", (schema,)).fetchall()
        tables = sorted({row[0] for row in columns})
        content = {
            table: con.execute(
                f'SELECT count(*), md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\')) FROM "{schema}"."{table}" t'
            ).fetchone()
            for table in tables
        }
        schemas = sorted(row[0] for row in con.execute("SELECT nspname FROM pg_namespace"))
    return {"columns": columns, "content": content, "schemas": schemas}


@pytest.fixture(scope="module")
def drill_run(tmp_path_factory):
    assert pg_available(), "PostgreSQL 15 binaries are needed (scripts/setup.sh installs them)"
    work = tmp_path_factory.mktemp("migration-drill")
    src = work / "interactions.db"
    chatmrpt_data.build_big_messages(str(src), SOURCE_ROWS)
    with PgServer() as pg:
        dsn = pg.create_database("drill")
        first = migrate(src, dsn, "-q")
        first_out = first.communicate(timeout=600)[0]
        assert first.returncode == 0, first_out
        before = live_state(dsn)

        with sqlite3.connect(src) as con:  # the source grows: the rerun has new rows to load
            con.executemany("INSERT INTO messages (session_id, content) VALUES (?, ?)",
                            (("drill", "z" * 300) for _ in range(NEW_ROWS)))
        pause = work / "paused"
        env = {**TOOL_ENV, "CHATMRPT_MIGRATE_PAUSE_AT": "messages:10000",
               "CHATMRPT_MIGRATE_PAUSE_FILE": str(pause), "CHATMRPT_MIGRATE_PAUSE_TIMEOUT": "120"}
        interrupted = migrate(src, dsn, "--jobs", "1", env=env)
        deadline = time.monotonic() + 120
        while not pause.exists() and interrupted.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        paused = pause.exists()
        if paused:
            pause_info = json.loads(pause.read_text())
            pg.restart(mode="immediate")  # PostgreSQL dies (no clean shutdown) and comes back
            pause.unlink()
        else:
            pause_info = None
            interrupted.kill()
        interrupted_out = interrupted.communicate(timeout=300)[0]
        after_interruption = live_state(dsn)

        report = work / "rerun.json"
        rerun = migrate(src, dsn, "-q", "--report", report)
        rerun_out = rerun.communicate(timeout=600)[0]
        after_rerun = live_state(dsn)
        verify = subprocess.run(
            [sys.executable, "-m", "chatmrpt_migrate", "verify", str(src), "--target", dsn],
            env=TOOL_ENV, capture_output=True, text=True, timeout=600)
        yield {
            "paused": paused, "pause_info": pause_info,
            "interrupted_rc": interrupted.returncode, "interrupted_out": interrupted_out,
            "before": before, "after_interruption": after_interruption,
            "rerun_rc": rerun.returncode, "rerun_out": rerun_out,
            "report": json.loads(report.read_text()) if report.exists() else None,
            "after_rerun": after_rerun, "verify": verify,
        }


def test_postgres_stopped_mid_load_fails_the_run_and_leaves_the_target_as_before(drill_run, drill):
    before, after = drill_run["before"], drill_run["after_interruption"]
    mismatches = [table for table in before["content"] if after["content"].get(table) != before["content"][table]]
    drill.compared(mismatches=len(mismatches) + (after["columns"] != before["columns"]),
                   comparisons=len(before["content"]) + 1)
    assert drill_run["paused"], f"the migration never reached the pause point:\n{drill_run['interrupted_out']}"
    assert drill_run["pause_info"]["table"] == "messages"
    assert drill_run["interrupted_rc"] == 4, drill_run["interrupted_out"]
    assert "target unchanged" in drill_run["interrupted_out"], drill_run["interrupted_out"]
    assert after["columns"] == before["columns"]
    assert not mismatches, {t: (before["content"][t], after["content"].get(t)) for t in mismatches}
    live = [s for s in before["schemas"] if not s.endswith("__staging")]
    assert [s for s in after["schemas"] if not s.endswith("__staging")] == live


def test_rerun_completes_and_verifies(drill_run, drill):
    report = drill_run["report"]
    checks = (report or {}).get("verification") or []
    drill.compared(mismatches=sum(not r["ok"] for r in checks) if checks else 1, comparisons=max(len(checks), 1))
    assert drill_run["rerun_rc"] == 0, drill_run["rerun_out"]
    assert report is not None, drill_run["rerun_out"]
    assert checks and all(r["ok"] and r["source_checksum"] == r["target_checksum"] for r in checks), checks
    messages_before = drill_run["before"]["content"]["messages"][0]
    assert drill_run["after_rerun"]["content"]["messages"][0] == messages_before + NEW_ROWS
    assert not [s for s in drill_run["after_rerun"]["schemas"] if s.endswith("__staging")]
    assert drill_run["verify"].returncode == 0, drill_run["verify"].stdout + drill_run["verify"].stderr
    drill.survived("PostgreSQL stopped mid-migration",
                   after=("test_postgres_stopped_mid_load_fails_the_run_and_leaves_the_target_as_before",))
