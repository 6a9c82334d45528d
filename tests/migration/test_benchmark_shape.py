"""The benchmark dataset (benchmarks/chatmrpt_shape.py) has ChatMRPT's real shape and the
awkward values the migration must handle; built small (scale 0.01, well under a second)."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import datetime
from decimal import Decimal

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import chatmrpt_shape  # noqa: E402

SCALE = 0.01
APP_DBS = ["interactions.db", "users.db", "survey.db", "prepost_test.db"]


@pytest.fixture(scope="module")
def shape(tmp_path_factory):
    d = tmp_path_factory.mktemp("shape")
    counts = chatmrpt_shape.build(str(d), SCALE)
    return str(d), counts


def q(instance, db, sql, *args):
    con = sqlite3.connect(f"file:{os.path.join(instance, db)}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def values(instance, db, table, col):
    return [r[0] for r in q(instance, db, f'SELECT "{col}" FROM "{table}"')]


def test_files_and_tables(shape):
    instance, counts = shape
    tpr = sorted(glob.glob(os.path.join(instance, "uploads", "*", "tpr_precomputed.db")))
    assert len(tpr) == 2
    assert sorted(counts) == sorted(APP_DBS + [os.path.relpath(p, instance) for p in tpr])
    assert sum(len(t) for t in counts.values()) >= 25
    assert len({t for tables in counts.values() for t in tables}) >= 25
    inter = counts["interactions.db"]
    assert {"sessions", "messages", "file_uploads", "analysis_events", "errors",
            "analysis_steps", "algorithm_decisions", "calculations", "anomalies",
            "variable_relationships", "ward_rankings", "visualization_metadata",
            "llm_interactions", "explanations", "routing_decisions", "arena_battles",
            "arena_training_exports"} == set(inter)
    assert set(counts["users.db"]) == {"users", "user_sessions"}
    assert set(counts["survey.db"]) == {"survey_sessions", "survey_questions",
                                        "survey_responses", "survey_triggers"}
    assert set(counts["prepost_test.db"]) == {"prepost_participants", "prepost_sessions",
                                              "prepost_responses"}
    empty = {t for tables in counts.values() for t, n in tables.items() if n == 0}
    assert {"anomalies", "explanations", "arena_training_exports"} <= empty
    # weight where the real data has it: messages biggest, then the JSON-heavy tables
    assert inter["messages"] > inter["llm_interactions"] >= inter["analysis_events"] > 0
    assert inter["messages"] == round(450_000 * SCALE)
    for db in counts:
        assert q(instance, db, "PRAGMA journal_mode") == [("delete",)]   # app's default


def test_schema_details(shape):
    instance, _ = shape
    cols = [r[1] for r in q(instance, "interactions.db", "PRAGMA table_info(messages)")]
    assert {"timestamp", "role", "context", "options"} <= set(cols)
    fks = q(instance, "interactions.db", "PRAGMA foreign_key_list(messages)")
    assert [(f[2], f[3], f[4]) for f in fks] == [("sessions", "session_id", "session_id")]
    users = {r[1]: r for r in q(instance, "users.db", "PRAGMA table_info(users)")}
    assert users["id"][2] == "TEXT" and users["id"][5] == 1
    uniques = [r for r in q(instance, "users.db", "PRAGMA index_list(users)") if r[2]]
    assert len(uniques) == 3           # the primary key, email, username
    idx = q(instance, "survey.db", "SELECT name FROM sqlite_master WHERE type = 'index' "
                                   "AND sql IS NOT NULL")
    assert len(idx) == 3
    seq = dict(q(instance, "survey.db", "SELECT name, seq FROM sqlite_sequence"))
    max_id = q(instance, "survey.db", "SELECT max(id) FROM survey_responses")[0][0]
    assert seq["survey_responses"] > max_id      # deleted rows: AUTOINCREMENT gap
    tpr = glob.glob(os.path.join(instance, "uploads", "*", "tpr_precomputed.db"))[0]
    sql = dict(q(os.path.dirname(tpr), "tpr_precomputed.db",
                 "SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert "UNIQUE (ward_code, age_group, test_method)" in sql["tpr_results"]
    assert "PRIMARY KEY (state, age_group, test_method)" in sql["computation_status"]


def test_json_edge_numbers(shape):
    instance, _ = shape
    texts = [v for v in values(instance, "interactions.db", "analysis_events", "details") if v]
    assert any(v.startswith("[") for v in texts) and any(v.startswith("{") for v in texts)
    assert None in values(instance, "interactions.db", "analysis_events", "details")
    edge = [v for v in texts if '"neg_zero"' in v]
    assert edge
    for token in ("-0.0", "1e2", "1E+2", "1.50", '\\"hi\\"', "\\u65e5"):
        assert token in edge[0]
    assert any(re.search(r"\b\d{20}\b", v) for v in edge)          # beyond 2^64 even
    parsed = json.loads(edge[0], parse_float=Decimal)
    assert parsed  # valid JSON
    # edge rows and raw UTF-8 in several JSON columns
    for db, table, col in [("interactions.db", "llm_interactions", "prompt"),
                           ("interactions.db", "messages", "context"),
                           ("survey.db", "survey_questions", "options")]:
        vs = [v for v in values(instance, db, table, col) if v]
        assert any('"neg_zero"' in v for v in vs), (table, col)
        for v in vs:
            json.loads(v)
    assert any(re.search(r"[^\x00-\x7f]", v) for v in texts)


def test_timestamps(shape):
    instance, _ = shape
    ts = values(instance, "interactions.db", "messages", "timestamp")
    forms = {"Z": 0, "+01:00": 0, "-05:30": 0, "naive T": 0, "naive space": 0}
    for v in ts:
        d = datetime.fromisoformat(v)
        if v.endswith("Z"):
            forms["Z"] += 1
        elif v.endswith("+01:00"):
            forms["+01:00"] += 1
        elif v.endswith("-05:30"):
            forms["-05:30"] += 1
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d-05:30", v)
        else:
            assert d.tzinfo is None
            forms["naive T" if "T" in v else "naive space"] += 1
    assert all(forms.values()), forms
    assert forms["naive space"] > forms["Z"] > forms["-05:30"]     # realistic proportions
    for db, table, col in [("users.db", "users", "created_at"),
                           ("interactions.db", "sessions", "start_time")]:
        for v in values(instance, db, table, col):
            assert datetime.fromisoformat(v).tzinfo is None


def test_booleans_orphans_mixed_classes(shape):
    instance, counts = shape
    for db, table, col in [("interactions.db", "sessions", "analysis_complete"),
                           ("interactions.db", "ward_rankings", "is_urban"),
                           ("users.db", "users", "is_active")]:
        assert set(values(instance, db, table, col)) == {0, 1, None}, (table, col)
    orphans = q(instance, "interactions.db",
                "SELECT count(*) FROM messages m WHERE m.session_id IS NOT NULL AND NOT "
                "EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = m.session_id)")[0][0]
    assert orphans >= 2
    assert q(instance, "users.db", "SELECT count(*) FROM user_sessions WHERE user_id NOT IN "
                                   "(SELECT id FROM users)")[0][0] >= 2
    assert None in values(instance, "interactions.db", "errors", "session_id")
    classes = dict(q(instance, "interactions.db", "SELECT typeof(value), count(*) FROM "
                                                  "calculations GROUP BY 1"))
    assert set(classes) == {"integer", "real", "text"}
    assert classes["real"] > classes["integer"] > classes["text"]
    for table, col in [("ward_rankings", "composite_score"), ("arena_battles", "latency")]:
        assert {r[0] for r in q(instance, "interactions.db",
                                f"SELECT DISTINCT typeof({col}) FROM {table}")} == {
            "integer", "real"}, table


def test_deterministic(shape, tmp_path):
    instance, counts = shape
    assert chatmrpt_shape.build(str(tmp_path), SCALE) == counts

    def digest(root):
        return {os.path.relpath(p, root): hashlib.sha256(open(p, "rb").read()).hexdigest()
                for p in glob.glob(os.path.join(root, "**", "*.db"), recursive=True)}
    assert digest(str(tmp_path)) == digest(instance)


def test_migration_plan_maps_the_awkward_columns(shape, tmp_path):
    """The tool's --dry-run plan (no connection) uses jsonb, timestamptz and boolean."""
    instance, _ = shape
    report = tmp_path / "plan.json"
    res = subprocess.run([sys.executable, "-m", "chatmrpt_migrate", instance, "--include-tpr",
                          "--dry-run", "--report", str(report)], capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "tools")})
    assert res.returncode == 0, res.stderr
    plan = json.loads(report.read_text())["plan"]
    assert len(plan) == 6
    types = {(db["schema"], t["table"], c["name"]): c["pg_type"]
             for db in plan for t in db["tables"] for c in t["columns"]}
    assert types[("interactions", "messages", "timestamp")] == "timestamptz"
    assert types[("interactions", "sessions", "analysis_complete")] == "boolean"
    assert types[("interactions", "calculations", "value")] == "text"
    assert types[("interactions", "ward_rankings", "composite_score")] == "double precision"
    for col in [("interactions", "analysis_events", "details"),
                ("interactions", "llm_interactions", "prompt"),
                ("interactions", "llm_interactions", "response")]:
        assert types[col] in ("json", "jsonb"), col       # json: edge numbers kept as text
    assert {"timestamptz", "boolean", "double precision"} <= set(types.values())
