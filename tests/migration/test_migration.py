"""End-to-end tests of tools/chatmrpt_migrate against a real PostgreSQL 15."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import time

import psycopg
import pytest

import chatmrpt_data
from chatmrpt_migrate.cli import main, mask_dsn
from conftest import ROOT, file_hashes

TOOL_ENV = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "tools")}


def run(*args):
    return main([str(a) for a in args])


def q(dsn, sql, *params):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET TimeZone = 'UTC'")
        cur = c.execute(sql, params or None)
        return cur.fetchall() if cur.description else None


def schemas(dsn):
    return sorted(r[0] for r in q(dsn, "SELECT nspname FROM pg_namespace WHERE nspname NOT "
                                       "LIKE 'pg_%' AND nspname <> 'information_schema'"))


def coltypes(dsn, schema, table):
    return dict(q(dsn, "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM "
                       "pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
                       "AND NOT a.attisdropped", f'"{schema}"."{table}"'))


@pytest.fixture(scope="module")
def migrated(pg, instance_dir, instance_hashes, tmp_path_factory):
    """One full migration of the instance directory (with tpr) into its own database."""
    dsn = pg.create_database("migrated")
    report = tmp_path_factory.mktemp("rep") / "report.json"
    rc = run(instance_dir, "--include-tpr", "--target", dsn, "--report", report)
    return dsn, rc, json.loads(report.read_text())


def test_migration_succeeds_and_verifies(migrated):
    dsn, rc, report = migrated
    assert rc == 0, report.get("warnings")
    assert report["status"] == "ok"
    assert len(report["verification"]) == 19
    assert all(r["ok"] for r in report["verification"])
    assert all(r["source_checksum"] == r["target_checksum"] for r in report["verification"])
    assert {"interactions", "users", "survey", "prepost_test", "tpr_sess_abc"} <= set(schemas(dsn))
    assert not [s for s in schemas(dsn) if s.endswith("__staging")]


def test_types_are_mapped_as_documented(migrated):
    dsn = migrated[0]
    s = coltypes(dsn, "interactions", "sessions")
    assert s["analysis_complete"] == "boolean" and s["files_uploaded"] == "boolean"
    assert s["start_time"] == "timestamp with time zone"
    assert s["last_activity"] == "timestamp with time zone"   # mixed offsets + NULLs
    m = coltypes(dsn, "interactions", "messages")
    # json keeps the text exactly (jsonb would turn -0.0 into 0.0 and drop duplicate keys)
    assert m["context"] == "json" and m["options"] == "json" and m["content"] == "text"
    assert m["timestamp"] == "timestamp with time zone"
    a = coltypes(dsn, "interactions", "analysis_events")
    assert a["details"] == "text"                      # one value is not JSON
    b = coltypes(dsn, "interactions", "arena_battles")
    assert b["created_at"] == "text"                   # "yesterday" does not convert
    assert b["mixed"] == "bytea"                       # int, real, text and blob
    assert b["order"] == "bigint" and b["user"] == "text"
    c = coltypes(dsn, "interactions", "calculations")
    assert c["value"] == "double precision" and c["mixed_num"] == "double precision"
    assert c["big_mixed"] == "text"                    # integer > 2^53 mixed with reals
    assert coltypes(dsn, "interactions", "errors")["message"] == "bytea"   # NUL byte
    assert coltypes(dsn, "users", "users")["is_active"] == "boolean"
    assert coltypes(dsn, "survey", "survey_triggers")["payload"] == "bytea"
    assert coltypes(dsn, "survey", "survey_responses")["id"] == "bigint"
    assert coltypes(dsn, "interactions", "anomalies")["is_flagged"] == "boolean"
    # SQLite compares text bytewise (BINARY): every text column gets the "C" collation
    (text_cols, other) = q(dsn, "SELECT count(*), count(*) FILTER (WHERE collation_name "
                                "IS DISTINCT FROM 'C') FROM information_schema.columns "
                                "WHERE table_schema IN ('interactions', 'users', 'survey') "
                                "AND data_type = 'text'")[0]
    assert text_cols > 10 and other == 0


def test_declared_collation_keeps_the_default_with_a_warning(fresh_db, tmp_path, capsys):
    """A table that declares COLLATE (not translated) keeps the server's default
    collation for its text columns and says so; the others get "C"."""
    src = tmp_path / "coll.db"
    with sqlite3.connect(src) as c:
        c.execute("CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, "
                  "note TEXT)")
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        c.executemany("INSERT INTO tags (name, note) VALUES (?, ?)", [("B", "x"), ("a", "y")])
        c.execute("INSERT INTO notes (body) VALUES ('z')")
    c.close()
    assert run(src, "--target", fresh_db) == 0
    assert "tags: COLLATE in its definition not translated" in capsys.readouterr().err
    assert dict(q(fresh_db, "SELECT table_name || '.' || column_name, collation_name FROM "
                            "information_schema.columns WHERE table_schema = 'coll' AND "
                            "data_type = 'text'")) == {
        "tags.name": None, "tags.note": None, "notes.body": "C"}
    assert run("verify", src, "--target", fresh_db) == 0


def test_values_survive_exactly(migrated, instance_dir):
    dsn = migrated[0]
    bits = [r[0] for r in q(dsn, "SELECT encode(float8send(value), 'hex') FROM "
                                 "interactions.calculations WHERE value IS NOT NULL ORDER BY calc_id")]
    con = sqlite3.connect(f"file:{instance_dir}/interactions.db?mode=ro", uri=True)
    src = [r[0] for r in con.execute("SELECT value FROM calculations WHERE value IS NOT NULL "
                                     "ORDER BY calc_id")]
    con.close()
    assert src[0] == 0.1 + 0.2 and src[1] == 1e-300 and src[4] == 5e-324
    assert bits == [struct.pack(">d", v).hex() for v in src]   # bit-exact, not float4
    (content,) = q(dsn, "SELECT content FROM interactions.messages WHERE message_id = 'm0007'")[0]
    assert content == chatmrpt_data.LONG_TEXT
    (msg,) = q(dsn, "SELECT message FROM interactions.errors WHERE error_id = 'err3'")[0]
    assert bytes(msg).decode() == "bad\x00byte 3"
    (ts,) = q(dsn, "SELECT last_activity FROM interactions.sessions WHERE session_id='s001'")[0]
    assert ts.isoformat() == "2025-07-02T10:00:00+00:00"      # 11:00+01:00 -> UTC
    (ctx,) = q(dsn, "SELECT context FROM interactions.messages WHERE message_id='m0001'")[0]
    assert ctx == {"b": 1, "a": [1, 2.5, None], "nested": {"z": "é"}}
    (big,) = q(dsn, "SELECT big_mixed FROM interactions.calculations WHERE calc_id='c2'")[0]
    assert big == str(2 ** 60 + 2)
    assert q(dsn, "SELECT count(*) FROM interactions.arena_battles WHERE battle_id='bdup'") == [(2,)]
    assert q(dsn, "SELECT is_active FROM users.users ORDER BY id") == [
        (False,), (True,), (False,), (True,), (False,)]


def test_keys_indexes_and_sequences(migrated):
    dsn = migrated[0]
    with psycopg.connect(dsn) as c:   # everything rolled back: other tests share the target
        def one(sql):
            return c.execute(sql).fetchone()[0]
        # AUTOINCREMENT: sqlite_sequence is 40 although max(id) is 35 -> next id 41
        assert one("INSERT INTO survey.survey_responses (survey_session_id, question_id, "
                   "response) VALUES (1, 1, 'new') RETURNING id") == 41
        # INTEGER PRIMARY KEY without AUTOINCREMENT gets an identity too
        assert one("INSERT INTO survey.survey_triggers (trigger_type) VALUES ('x') "
                   "RETURNING id") == 10
        c.rollback()
        for sql in ("INSERT INTO tpr_sess_abc.tpr_results (state, lga, ward) "
                    "VALUES ('Kano', 'lga0', 'ward0')",
                    "INSERT INTO tpr_sess_abc.computation_status (state, facility_level, "
                    "age_group) VALUES ('Kano', 'all', 'u5')",
                    "INSERT INTO users.users (id, email) VALUES ('u9', 'user1@example.org')",
                    "INSERT INTO survey.survey_questions (\"order\") VALUES (1)"):
            with pytest.raises(psycopg.errors.UniqueViolation):
                c.execute(sql)
            c.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            c.execute("INSERT INTO users.user_sessions VALUES ('t', 'nobody', now())")
        c.rollback()
    idx = {r[0] for r in q(dsn, "SELECT indexname FROM pg_indexes WHERE schemaname='survey'")}
    assert {"idx_survey_sessions_session", "idx_survey_responses_session",
            "idx_survey_questions_order"} <= idx


def test_autovacuum_is_handed_the_swapped_in_tables(migrated):
    """Staging tables are created without autovacuum (it would compete with the load
    and the verification); the swap gives it back, with the insert counters that make
    its next round analyze the new tables."""
    dsn = migrated[0]
    rows = q(dsn, "SELECT n.nspname, c.relname, c.reloptions, t.reloptions "
                  "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid "
                  "WHERE c.relkind = 'r' AND n.nspname IN "
                  "('interactions', 'users', 'survey', 'prepost_test', 'tpr_sess_abc')")
    assert len(rows) == 19
    assert [r for r in rows if r[2] or r[3]] == []
    pending = dict(q(dsn, "SELECT relname, n_mod_since_analyze FROM pg_stat_user_tables "
                          "WHERE schemaname = 'interactions'"))
    assert pending["messages"] > 0


def test_staging_tables_get_autovacuum_only_at_the_swap(fresh_db, instance_dir, monkeypatch):
    """A run whose verification fails leaves its staging schemas as they were during the
    run: every table (and its TOAST table) kept from autovacuum."""
    from chatmrpt_migrate import verify
    monkeypatch.setattr(verify, "pg_checksum", lambda con, schema, t: (-1, 0))
    assert run(instance_dir, "--target", fresh_db, "-q") == 1
    rows = q(fresh_db, "SELECT c.relname, c.reloptions, t.reloptions "
                       "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid "
                       "WHERE c.relkind = 'r' AND n.nspname = 'interactions__staging'")
    assert rows
    assert [r[0] for r in rows if "autovacuum_enabled=false" not in (r[1] or [])] == []
    assert [r[0] for r in rows if r[2] is not None and "autovacuum_enabled=false" not in r[2]] == []
    assert any(r[2] is not None for r in rows)    # some have a TOAST table


def test_orphans_keep_makes_not_valid_fk(migrated):
    dsn = migrated[0]
    fks = dict(q(dsn, "SELECT conname, convalidated FROM pg_constraint WHERE contype='f' "
                      "AND connamespace = 'interactions'::regnamespace"))
    assert fks["messages_session_id_fkey"] is False           # 8 orphans
    assert fks["analysis_events_session_id_fkey"] is True
    ufk = q(dsn, "SELECT convalidated, confdeltype FROM pg_constraint WHERE conname = "
                 "'user_sessions_user_id_fkey'")
    assert ufk == [(True, "c")]                                # ON DELETE CASCADE kept
    assert migrated[2]["plan"][0]["tables"]  # report holds the plan
    orphans = {f["name"]: f["orphans"] for db in migrated[2]["plan"] for t in db["tables"]
               for f in t["foreign_keys"]}
    assert orphans["messages_session_id_fkey"] == 8


def test_verify_detects_corruption(migrated, instance_dir, capsys, tmp_path):
    dsn = migrated[0]
    assert run("verify", instance_dir, "--include-tpr", "--target", dsn) == 0
    (before,) = q(dsn, "SELECT content FROM interactions.messages WHERE message_id='m0003'")[0]
    q(dsn, "UPDATE interactions.messages SET content = content || '!' WHERE message_id='m0003'")
    try:
        report = tmp_path / "verify.json"
        assert run("verify", instance_dir, "--include-tpr", "--target", dsn, "--report", report) == 1
        out = capsys.readouterr().out
        # the table, the row's key, the column and both values: in the output and the report
        assert "interactions.messages" in out and "1 row(s) differ" in out
        assert "(message_id='m0003') column content: source " in out
        (bad,) = [r for r in json.loads(report.read_text())["verification"] if not r["ok"]]
        assert (bad["schema"], bad["table"]) == ("interactions", "messages")
        (m,) = bad["mismatches"]
        assert m["key"] == {"message_id": "m0003"} and m["column"] == "content"
        assert m["target"].endswith("!") and before.endswith(m["source"].removeprefix("...")), m
    finally:
        q(dsn, "UPDATE interactions.messages SET content = left(content, -1) "
               "WHERE message_id='m0003'")
    q(dsn, "UPDATE interactions.calculations SET value = value + 1e-15 WHERE calc_id = 'c0'")
    assert run("verify", instance_dir, "--include-tpr", "--target", dsn) == 1
    q(dsn, "UPDATE interactions.calculations SET value = 0.1::float8 + 0.2::float8 WHERE calc_id = 'c0'")
    assert run("verify", instance_dir, "--include-tpr", "--target", dsn) == 0


def test_refuse_orphans_leaves_target_untouched(migrated, fresh_db, instance_dir):
    assert run(instance_dir, "--target", fresh_db, "--orphans", "refuse") == 3
    assert schemas(fresh_db) == ["public"]
    dsn = migrated[0]
    before = q(dsn, "SELECT count(*) FROM interactions.messages")
    assert run(instance_dir, "--target", dsn, "--orphans", "refuse") == 3
    assert q(dsn, "SELECT count(*) FROM interactions.messages") == before
    # users.db alone has no orphans: refuse succeeds
    assert run(os.path.join(instance_dir, "users.db"), "--target", fresh_db,
               "--orphans", "refuse") == 0


def test_dry_run_changes_nothing(fresh_db, instance_dir, capsys, tmp_path):
    rep = tmp_path / "plan.json"
    assert run(instance_dir, "--include-tpr", "--target", fresh_db, "--dry-run",
               "--report", rep) == 0
    out = capsys.readouterr().out
    assert "messages_session_id_fkey" in out and "orphans 8" in out and "-> json " in out
    assert schemas(fresh_db) == ["public"]
    assert json.loads(rep.read_text())["plan"][0]["schema"] == "interactions"
    # no connection needed at all
    assert run(instance_dir, "--dry-run", "--target",
               "host=127.0.0.1 port=1 user=x password=secret dbname=x") == 0


def test_failure_mid_load_leaves_target_and_rerun_completes(pg, instance_dir, tmp_path,
                                                            monkeypatch):
    dsn = pg.create_database("interrupted")
    src = tmp_path / "interactions.db"
    shutil.copy(os.path.join(instance_dir, "interactions.db"), src)
    assert run(src, "--target", dsn) == 0
    before = q(dsn, "SELECT count(*), max(message_id) FROM interactions.messages")
    con = sqlite3.connect(src)
    con.executemany("INSERT INTO messages (message_id, session_id, content) VALUES (?,?,?)",
                    [(f"new{i}", "s001", "later") for i in range(50)])
    con.commit()
    con.close()
    monkeypatch.setenv("CHATMRPT_MIGRATE_FAIL_AT", "messages:1")
    assert run(src, "--target", dsn) == 4
    assert q(dsn, "SELECT count(*), max(message_id) FROM interactions.messages") == before
    assert not [s for s in schemas(dsn) if s.endswith("__staging")]
    monkeypatch.delenv("CHATMRPT_MIGRATE_FAIL_AT")
    assert run(src, "--target", dsn) == 0
    assert q(dsn, "SELECT count(*) FROM interactions.messages") == [(450,)]
    assert "interactions__previous" in schemas(dsn)   # one backup generation kept


def test_server_killed_mid_load_then_rerun(pg, tmp_path):
    dsn = pg.create_database("killed")
    src = tmp_path / "interactions.db"
    chatmrpt_data.build_big_messages(str(src), 20_000)
    assert run(src, "--target", dsn, "-q") == 0
    con = sqlite3.connect(src)
    con.executemany("INSERT INTO messages (session_id, content) VALUES (?,?)",
                    (("s1", "y" * 500) for _ in range(400_000)))
    con.commit()
    con.close()
    proc = subprocess.Popen([sys.executable, "-m", "chatmrpt_migrate", str(src), "--target",
                             dsn, "--jobs", "1"], env=TOOL_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    seen = False
    while time.time() < deadline and proc.poll() is None:
        if q(pg.dsn, "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'COPY%%messages%%'"):
            seen = True
            break
        time.sleep(0.05)
    assert seen, proc.communicate()[0]
    pg.restart(mode="immediate")              # crash: no clean shutdown
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out
    assert q(dsn, "SELECT count(*) FROM interactions.messages") == [(20_000,)]
    assert run(src, "--target", dsn, "-q") == 0
    assert q(dsn, "SELECT count(*) FROM interactions.messages") == [(420_000,)]
    assert not [s for s in schemas(dsn) if s.endswith("__staging")]
    (nid,) = q(dsn, "INSERT INTO interactions.messages (session_id) VALUES ('s1') "
                    "RETURNING message_id")[0]
    assert nid == 420_001


def _late_surprises_db(path, n=30_000):
    """A table whose timestamp-looking columns only go wrong deep in the data: ``ts`` has
    one value that does not convert at row n-5000, ``zoned`` one value with an offset at
    row n//2, ``is_flag`` is 0/1 except a 2 at row 20 000 (boolean on a sample, bigint on
    all rows); ``doc`` is JSON except one value at row n-3000 (PostgreSQL refuses it in
    the COPY), ``meta`` JSON that jsonb would change (-0.0, 1E+2, a duplicate key)."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, ts TEXT, zoned TEXT, "
                "body TEXT, score REAL, is_flag INTEGER, doc TEXT, meta TEXT)")
    rows = []
    for i in range(1, n + 1):
        ts = "2025-02-30T10:00:00" if i == n - 5000 else f"2025-03-01T10:{i % 60:02d}:00"
        zoned = "2025-03-01T12:00:00+02:00" if i == n // 2 else f"2025-03-01 12:{i % 60:02d}:00"
        doc = '{"a": 1,}' if i == n - 3000 else f'{{"a": {i}, "b": [1, 2]}}'
        meta = f'{{"x": -0.0, "y": 1E+2, "x": {i}}}'
        rows.append((i, ts, zoned, f"body {i} \t\n é", i / 7, 2 if i == 20_000 else i % 2,
                     doc, meta))
    con.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", rows)
    # only the full analysis sees the 2 in is_flag and the integer among the reals
    con.execute("CREATE TABLE flags (id INTEGER PRIMARY KEY, is_flag INTEGER, r REAL)")
    con.executemany("INSERT INTO flags VALUES (?,?,?)",
                    ((i, 2 if i == 20_000 else i % 2, 7 if i == 21_000 else i / 4)
                     for i in range(1, n + 1)))
    con.commit()
    con.close()


def test_late_bad_timestamp_reloads_as_text(fresh_db, tmp_path, monkeypatch):
    """Timestamps are checked while streaming (optimistic timestamptz): a bad value deep
    in the data makes the table reload with that column as text, the same plan as the
    full up-front analysis (--dry-run).  The load starts on a 100-row sample's plan (the
    flags table's plan differs: reloaded)."""
    from chatmrpt_migrate import loader
    monkeypatch.setattr(loader, "SPECULATE_ROWS", 1000)
    monkeypatch.setattr(loader, "SAMPLE_ROWS", 100)
    src = tmp_path / "late.db"
    _late_surprises_db(src)
    plan_rep, rep = tmp_path / "plan.json", tmp_path / "rep.json"
    assert run(src, "--dry-run", "--report", plan_rep) == 0
    assert run(src, "--target", fresh_db, "--report", rep) == 0
    report = json.loads(rep.read_text())
    assert [(r["table"], r["ok"], r["target_rows"]) for r in report["verification"]] == [
        ("events", True, 30_000), ("flags", True, 30_000)]
    loads = report["timings"]["tables"]
    assert loads["late.events"]["reloads"] == 2      # ts rejected, json refused by the server
    assert loads["late.flags"]["reloads"] == 1      # sampled plan != full plan

    def types(r):
        return {(t["table"], c["name"]): (c["pg_type"], c["reason"])
                for t in json.loads(r.read_text())["plan"][0]["tables"] for c in t["columns"]}
    assert types(rep) == types(plan_rep)
    assert coltypes(fresh_db, "late", "events") == {
        "id": "bigint", "ts": "text", "zoned": "timestamp with time zone",
        "body": "text", "score": "double precision", "is_flag": "bigint", "doc": "text",
        "meta": "json"}
    assert coltypes(fresh_db, "late", "flags") == {
        "id": "bigint", "is_flag": "bigint", "r": "double precision"}
    assert q(fresh_db, "SELECT count(*), sum(is_flag) FROM late.flags") == [(30_000, 15_002)]
    assert q(fresh_db, "SELECT r FROM late.flags WHERE id IN (20999, 21000) ORDER BY id") == [
        (20999 / 4,), (7.0,)]
    assert q(fresh_db, "SELECT ts FROM late.events WHERE id = 25000") == [
        ("2025-02-30T10:00:00",)]
    assert q(fresh_db, "SELECT doc, meta::text FROM late.events WHERE id = 27000") == [
        ('{"a": 1,}', '{"x": -0.0, "y": 1E+2, "x": 27000}')]       # the text exactly
    (z,) = q(fresh_db, "SELECT zoned FROM late.events WHERE id = 15000")[0]
    assert z.isoformat() == "2025-03-01T10:00:00+00:00"       # +02:00 -> UTC
    assert q(fresh_db, "SELECT count(*), sum(id) FROM late.events") == [
        (30_000, 30_000 * 30_001 // 2)]
    assert run("verify", src, "--target", fresh_db) == 0


def test_server_stopped_at_pause_hook_then_rerun(pg, tmp_path):
    """The drill's injection point: CHATMRPT_MIGRATE_PAUSE_AT stops the loader inside the
    COPY transaction of a table; PostgreSQL is stopped there; the run exits 4, the live
    schema is as before; a rerun completes."""
    dsn = pg.create_database("paused")
    src = tmp_path / "interactions.db"
    chatmrpt_data.build_big_messages(str(src), 5_000)
    assert run(src, "--target", dsn, "-q") == 0
    snap = "SELECT count(*), md5(string_agg(m::text, '|' ORDER BY message_id)) " \
           "FROM interactions.messages m"
    before = q(dsn, snap)
    con = sqlite3.connect(src)
    con.executemany("INSERT INTO messages (session_id, content) VALUES (?,?)",
                    (("s1", "z" * 200) for _ in range(150_000)))
    con.commit()
    con.close()
    flag = tmp_path / "paused"
    env = {**TOOL_ENV, "CHATMRPT_MIGRATE_PAUSE_AT": "messages:20000",
           "CHATMRPT_MIGRATE_PAUSE_FILE": str(flag), "CHATMRPT_MIGRATE_PAUSE_TIMEOUT": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "chatmrpt_migrate", str(src), "--target",
                             dsn], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 90
    while not flag.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists(), proc.communicate()[0]
    assert json.loads(flag.read_text())["table"] == "messages"
    pg.restart(mode="immediate")
    flag.unlink()
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 4, out
    assert "target unchanged" in out
    assert q(dsn, snap) == before
    assert run(src, "--target", dsn, "-q") == 0
    assert q(dsn, "SELECT count(*) FROM interactions.messages") == [(155_000,)]
    assert not [s for s in schemas(dsn) if s.endswith("__staging")]


def test_copy_snapshot_holds_the_lock_while_copying(tmp_path, monkeypatch):
    """While the copy is made, a writer cannot commit (the read transaction's SHARED
    lock is held until the copy is complete), so the copy is one committed state."""
    from chatmrpt_migrate import source
    src = tmp_path / "interactions.db"
    chatmrpt_data.build_big_messages(str(src), 100)
    real_run, seen = subprocess.run, []

    def copy_with_a_writer(argv, **kw):
        w = real_run([sys.executable, "-c",
                      "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0.3)\n"
                      "c.execute('DELETE FROM messages'); c.commit()", str(src)],
                     capture_output=True, text=True)
        seen.append(w.stderr)
        return real_run(argv, **kw)
    monkeypatch.setattr(source.subprocess, "run", copy_with_a_writer)
    s = source.Source(str(src), "interactions")
    snap = source.take_snapshot(s, str(tmp_path))
    assert "database is locked" in seen[0]
    with sqlite3.connect(snap) as c:
        assert c.execute("SELECT count(*) FROM messages").fetchone() == (100,)
    source.release(s)
    assert not os.path.exists(snap)


@pytest.mark.parametrize("mode", ["copy", "hold"])
def test_snapshot_modes_keep_one_committed_state(pg, tmp_path, mode):
    """A write committed during the run never reaches the target.  ``copy``: the write
    goes through while the run reads its copy; ``hold``: no copy is made and the writer
    cannot commit until the run ends (the app is stopped for such runs)."""
    dsn = pg.create_database(f"snap_{mode}")
    src = tmp_path / "interactions.db"
    chatmrpt_data.build_big_messages(str(src), 5_000)
    work = tmp_path / "work"
    work.mkdir()
    flag = tmp_path / "paused"
    env = {**TOOL_ENV, "CHATMRPT_MIGRATE_PAUSE_AT": "messages:1",
           "CHATMRPT_MIGRATE_PAUSE_FILE": str(flag), "CHATMRPT_MIGRATE_PAUSE_TIMEOUT": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "chatmrpt_migrate", str(src), "--target",
                             dsn, "--snapshot", mode, "--workdir", str(work)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 90
    while not flag.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists(), proc.communicate()[0]
    copies = os.listdir(work)
    writer = sqlite3.connect(src, timeout=0.5)
    writer.execute("INSERT INTO messages (session_id, content) VALUES ('s1', 'late')")
    try:
        writer.commit()
        committed = True
    except sqlite3.OperationalError as e:
        assert "locked" in str(e)
        writer.rollback()
        committed = False
    flag.unlink()
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert q(dsn, "SELECT count(*) FROM interactions.messages") == [(5_000,)]
    if mode == "copy":
        assert len(copies) == 1 and committed
    else:
        assert copies == [] and not committed
        writer.execute("INSERT INTO messages (session_id, content) VALUES ('s1', 'after')")
        writer.commit()                # the run ended: writers go on
    writer.close()
    assert os.listdir(work) == []


def test_target_from_ssm_and_password_masked(pg, fresh_db, instance_dir, capsys, tmp_path,
                                             monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    secret_dsn = fresh_db + " password=Sup3rSecretPw"   # trust auth ignores it
    rep = tmp_path / "r.json"
    with moto.mock_aws():
        boto3.client("ssm", region_name="us-east-2").put_parameter(
            Name="/chatmrpt/db", Value=secret_dsn, Type="SecureString")
        rc = run(os.path.join(instance_dir, "users.db"), "--target-ssm-parameter",
                 "/chatmrpt/db", "--region", "us-east-2", "--report", rep)
    assert rc == 0
    out = capsys.readouterr()
    assert "Sup3rSecretPw" not in out.out + out.err + rep.read_text()
    assert "password=***" in json.loads(rep.read_text())["target"]
    assert "users" in schemas(fresh_db)


def test_env_target_and_usage_errors(fresh_db, instance_dir, monkeypatch):
    monkeypatch.delenv("CHATMRPT_MIGRATE_TARGET", raising=False)
    assert run(os.path.join(instance_dir, "users.db")) == 2            # no target
    assert run("/nonexistent/x.db", "--target", fresh_db) == 2
    monkeypatch.setenv("CHATMRPT_MIGRATE_TARGET", fresh_db)
    assert run(os.path.join(instance_dir, "survey.db")) == 0
    assert "survey" in schemas(fresh_db)
    assert run(os.path.join(instance_dir, "survey.db"), "--target",
               "host=127.0.0.1 port=1 dbname=x connect_timeout=2") == 4


def test_the_private_psycopg_row_encoder_is_the_tested_one():
    """The loader encodes rows with psycopg's private C row encoder
    (psycopg._copy_base.format_row_binary) instead of a Python call per row through
    Copy.write_row. Its output is checked here against the binary COPY format written out
    by hand, so a psycopg release that changes or removes it fails loudly here."""
    import datetime

    from chatmrpt_migrate import loader
    tx = loader._transformer([(None, wire, None) for wire in ("int8", "bytea", "float8", "bool", "timestamp")])
    buf = bytearray()
    loader.format_row_binary((-2, b"a|\xc3\xa9", 0.5, True, datetime.datetime(2000, 1, 1, 0, 0, 1, 5)), tx, buf)
    loader.format_row_binary((None, None, None, None, None), tx, buf)
    assert bytes(buf) == (struct.pack(">h", 5) + struct.pack(">iq", 8, -2) + struct.pack(">i", 4) + b"a|\xc3\xa9"
                          + struct.pack(">id", 8, 0.5) + struct.pack(">ib", 1, 1)
                          + struct.pack(">iq", 8, 1_000_005)      # microseconds since 2000-01-01
                          + struct.pack(">h", 5) + struct.pack(">i", -1) * 5)


def test_mask_dsn():
    assert mask_dsn("postgresql://app:p%40ss@db:5432/x") == "postgresql://app:***@db:5432/x"  # pragma: allowlist secret
    assert mask_dsn("host=db password='a b' user=x") == "host=db password=*** user=x"  # pragma: allowlist secret
    assert "hunter2" not in mask_dsn("host=db user=x", "hunter2") + mask_dsn("pw hunter2", "hunter2")


def test_wrapper_script_runs(instance_dir):
    res = subprocess.run([os.path.join(ROOT, "tools", "chatmrpt-migrate"),
                          os.path.join(instance_dir, "users.db"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "users.users" not in res.stderr and "is_active" in res.stdout


def test_benchmark_smoke(tmp_path):
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "migration_bench.py"),
                          "--scale", "0.01", "--skip-pgloader-if-missing", "--workdir",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rows/s" in res.stdout and "ours, end to end" in res.stdout
    assert "ours: 0 wrong values" in res.stdout or "oracle.py not found" in res.stdout


def test_sources_are_byte_identical(migrated, instance_dir, instance_hashes):
    # runs last in this module: every migration above read these files
    assert file_hashes(instance_dir) == instance_hashes


def _awkward_db(path):
    """One table of 24 columns (two stats expressions), every storage class, integers at
    0/1, within and beyond +-2^53, NULLs, a NULL in the primary key, NUL bytes, blobs."""
    con = sqlite3.connect(path)
    cols = ["k TEXT PRIMARY KEY", "is_b INTEGER", "flag BOOLEAN", "n INTEGER", "r REAL",
            "ir NUMERIC", "big NUMERIC", "t TEXT", "ts TEXT", "js TEXT", "mix", "b BLOB",
            "tb", "nul TEXT", "allnull TEXT", "zts TEXT"] + [f"c{i} TEXT" for i in range(8)]
    con.execute(f"CREATE TABLE w ({', '.join(cols)})")
    rows = []
    for i in range(3000):
        rows.append((
            None if i == 2999 else f"k{i}", i % 2, None if i % 7 == 0 else i % 2,
            (-1) ** i * i * 1000, i / 3 if i % 5 else None, i if i % 2 else i + 0.5,
            2 ** 60 + i if i == 1500 else i / 2, f"t{i}\t\n\\é" if i % 3 else "",
            f"2025-01-{1 + i % 28:02d} 10:00:00" + ("+01:00" if i % 4 == 0 else ""),
            f'{{"a": {i}, "b": [-0.0, 1E+2]}}', [1, "two", 3.5, None, b"\x00\x01"][i % 5],
            bytes([i % 256, 0, 255]), b"\xc3\xa9" if i % 2 else "é", f"a\x00b{i}",
            None, f"2025-02-01T00:00:00.{i:06d}Z" if i % 11 else None,
            *[f"v{i}-{j}" if (i + j) % 4 else None for j in range(8)]))
    con.executemany(f"INSERT INTO w VALUES ({', '.join('?' * len(cols))})", rows)
    con.commit()
    con.close()


def test_stream_stats_give_the_scans_analysis_and_sql_fields_the_python_checksum(tmp_path):
    """A big table's analysis made from the codes the loader streams (StreamStats) equals
    the aggregate scan's, warnings and storage class counts included; the source checksum
    with fields made by SQLite (verify.sqlite_checksum) equals the all-Python one."""
    import copy

    from chatmrpt_migrate import source, verify
    path = tmp_path / "w.db"
    _awkward_db(path)
    s = source.discover([str(path)], False, print)[0]
    db = source.introspect(s, print)
    (t,) = db.tables
    con = source.open_snapshot(str(path))
    for full_check in (False, True):
        scanned, streamed = copy.deepcopy(t), copy.deepcopy(t)
        w1, w2 = [], []
        source.analyse_table(con, "w", scanned, w1.append, nul_check=False, full_check=full_check)
        stats = source.StreamStats(streamed)
        assert len(source.stats_exprs(streamed)) == 2
        cur = con.execute(f"SELECT {', '.join(source.stats_exprs(streamed))} FROM w")
        while rows := cur.fetchmany(700):
            stats.add(list(zip(*rows)))
        source.analyse_table(con, "w", streamed, w2.append, nul_check=False,
                             full_check=full_check, stats=stats)
        assert scanned == streamed and w1 == w2
    kinds = {c.name: (c.pg_type, c.conv) for c in scanned.columns}
    assert kinds["is_b"] == ("boolean", None) and kinds["big"] == ("text", "mixed_text")
    assert kinds["ir"] == ("double precision", "float") and kinds["mix"][0] == "bytea"
    assert scanned.pk_skipped
    source.analyse(db, print)          # the full plan (NUL scan: nul is bytea)
    assert {c.name: c.pg_type for c in t.columns}["nul"] == "bytea"
    assert len(verify._sql_plan(t)[0]) > 3      # SQLite and Python fields interleaved
    assert verify.sqlite_checksum(db, t) == verify._python_checksum(db, t)
