"""Generators of ChatMRPT-shaped SQLite databases with the awkward cases the
migration must handle (mixed types, NULLs, NUL bytes, orphans, reserved words...)."""

from __future__ import annotations

import json
import os
import sqlite3

LONG_TEXT = ("Ward risk narrative é 疟疾 🦟 \\ \t tab \n newline " * 25000)  # > 1 MB
assert len(LONG_TEXT.encode()) > 1_000_000
REALS = [0.1 + 0.2, 1e-300, -0.0, 1.7976931348623157e308, 5e-324, 1 / 3, 123456789.123456789]


def _db(path, script):
    con = sqlite3.connect(path)
    con.executescript(script)
    return con


def build_interactions(path: str) -> None:
    con = _db(path, """
    CREATE TABLE sessions (session_id TEXT PRIMARY KEY, start_time TEXT, last_activity TEXT,
        user_language TEXT, browser_info TEXT, ip_address TEXT,
        analysis_complete BOOLEAN DEFAULT 0, files_uploaded BOOLEAN DEFAULT 0);
    CREATE TABLE messages (message_id TEXT PRIMARY KEY,
        session_id TEXT REFERENCES sessions(session_id), "timestamp" TEXT, role TEXT,
        content TEXT, context TEXT, options TEXT);
    CREATE INDEX idx_messages_session ON messages(session_id);
    CREATE TABLE analysis_events (event_id TEXT PRIMARY KEY,
        session_id TEXT REFERENCES sessions(session_id), "timestamp" TEXT, event_type TEXT,
        details TEXT, success BOOLEAN);
    CREATE TABLE errors (error_id TEXT PRIMARY KEY,
        session_id TEXT REFERENCES sessions(session_id), "timestamp" TEXT, message TEXT);
    CREATE TABLE calculations (calc_id TEXT PRIMARY KEY,
        session_id TEXT REFERENCES sessions(session_id), value REAL, mixed_num NUMERIC,
        big_mixed NUMERIC, "user" TEXT, "order" INTEGER);
    CREATE TABLE anomalies (anomaly_id TEXT PRIMARY KEY,
        session_id TEXT REFERENCES sessions(session_id), detected_at TEXT, score REAL,
        is_flagged BOOLEAN);
    CREATE TABLE variable_relationships (rel_id TEXT PRIMARY KEY, session_id TEXT,
        variables TEXT);
    CREATE TABLE arena_battles (battle_id, session_id, model_a, model_b, winner,
        "user", "order", created_at, mixed, votes);
    """)
    sessions = []
    for i in range(60):
        sessions.append((f"s{i:03d}", f"2025-07-{1 + i % 28:02d}T10:{i % 60:02d}:00.{i:06d}",
                         f"2025-07-{1 + i % 28:02d} 11:00:00+01:00" if i % 3 else None,
                         ["en", "fr", "ha", None][i % 4], "Mozilla/5.0 ☃", f"10.0.0.{i}",
                         i % 2, 1 - i % 2))
    con.executemany("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?)", sessions)
    msgs = []
    for i in range(400):
        sid = f"s{i % 60:03d}" if i % 50 else "ghost-session"   # 8 orphans
        content = LONG_TEXT if i == 7 else f"message {i} — ünïcödé 🦟 with 'quotes' \"dq\" \\ "
        ctx = json.dumps({"b": i, "a": [1, 2.5, None], "nested": {"z": "é"}}) if i % 4 else None
        msgs.append((f"m{i:04d}", sid, f"2025-07-28T09:{i % 60:02d}:{i % 60:02d}Z",
                     "user" if i % 2 else "assistant", content, ctx, "[1, 2, 3]"))
    con.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?)", msgs)
    con.executemany("INSERT INTO analysis_events VALUES (?,?,?,?,?,?)", [
        (f"e{i}", f"s{i % 60:03d}", f"2025-07-28 08:00:{i % 60:02d}",
         "tpr", json.dumps({"k": i}) if i != 5 else "{not json", i % 2) for i in range(30)])
    con.executemany("INSERT INTO errors VALUES (?,?,?,?)", [
        (f"err{i}", f"s{i:03d}", "2025-07-28T08:00:00", f"bad\x00byte {i}" if i == 3 else
         f"plain {i}") for i in range(10)])
    calc = []
    for i, v in enumerate(REALS):
        calc.append((f"c{i}", f"s{i:03d}", v, i if i % 2 else v, (2 ** 60 + i) if i == 2 else 0.5,
                     f"user{i}", i))
    calc.append(("cnull", None, None, None, None, None, None))
    con.executemany("INSERT INTO calculations VALUES (?,?,?,?,?,?,?)", calc)
    con.executemany("INSERT INTO variable_relationships VALUES (?,?,?)", [
        ("r1", "s001", '{"x": 1}'), ("r2", "s002", "[true, false]")])
    con.executemany("INSERT INTO arena_battles VALUES (?,?,?,?,?,?,?,?,?,?)", [
        (f"b{i}", f"s{i:03d}", "gpt", "llama", "a" if i % 2 else "b", f"u{i}", i,
         "2025-07-28T10:00:00" if i != 4 else "yesterday", [1, "two", 3.5, None, b"\x00\x01"][i % 5] if i != 4 else 42,
         i * 10) for i in range(12)] + [
        ("bdup", "s001", "gpt", "llama", None, None, None, None, None, None)] * 2)
    con.commit()
    con.close()


def build_users(path: str) -> None:
    con = _db(path, """
    CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT UNIQUE NOT NULL,
        username TEXT UNIQUE, password_hash TEXT, created_at TEXT, last_login TEXT,
        is_active INTEGER DEFAULT 1, role TEXT);
    CREATE TABLE user_sessions (token TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE, expires_at TEXT);
    """)
    con.executemany("INSERT INTO users VALUES (?,?,?,?,?,?,?,?)", [
        (f"u{i}", f"user{i}@example.org", f"user{i}", "pbkdf2:sha256$x$y",
         "2025-06-01T00:00:00", None if i % 2 else "2025-07-01T12:30:00.5", i % 2,
         "admin" if i == 0 else "user") for i in range(5)])
    con.executemany("INSERT INTO user_sessions VALUES (?,?,?)", [
        (f"tok{i}", f"u{i % 5}", "2025-08-01T00:00:00") for i in range(8)])
    con.commit()
    con.close()


def build_survey(path: str) -> None:
    con = _db(path, """
    CREATE TABLE survey_sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT,
        started_at TEXT, completed BOOLEAN);
    CREATE TABLE survey_questions (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT,
        options TEXT, "order" INTEGER);
    CREATE TABLE survey_responses (id INTEGER PRIMARY KEY AUTOINCREMENT,
        survey_session_id INTEGER REFERENCES survey_sessions(id),
        question_id INTEGER REFERENCES survey_questions(id), response TEXT, "timestamp" TEXT);
    CREATE TABLE survey_triggers (id INTEGER PRIMARY KEY, trigger_type TEXT, payload BLOB,
        context TEXT);
    CREATE INDEX idx_survey_sessions_session ON survey_sessions(session_id);
    CREATE INDEX idx_survey_responses_session ON survey_responses(survey_session_id, question_id DESC);
    CREATE UNIQUE INDEX idx_survey_questions_order ON survey_questions("order");
    """)
    for i in range(10):
        con.execute("INSERT INTO survey_sessions (session_id, started_at, completed) "
                    "VALUES (?,?,?)", (f"s{i:03d}", "2025-07-28T10:00:00", i % 2))
    for i in range(5):
        con.execute("INSERT INTO survey_questions (text, options, \"order\") VALUES (?,?,?)",
                    (f"Question {i}?", json.dumps(["yes", "no", i]), i))
    for i in range(40):
        con.execute("INSERT INTO survey_responses (survey_session_id, question_id, response, "
                    "\"timestamp\") VALUES (?,?,?,?)", (1 + i % 10, 1 + i % 5, f"answer {i}",
                                                        "2025-07-28T10:05:00"))
    con.execute("DELETE FROM survey_responses WHERE id > 35")   # sqlite_sequence stays 40
    con.executemany("INSERT INTO survey_triggers VALUES (?,?,?,?)", [
        (3, "after_analysis", b"\x00\xff\x10", None), (9, "timer", None, "ctx")])
    con.commit()
    con.close()


def build_prepost(path: str) -> None:
    con = _db(path, """
    CREATE TABLE prepost_participants (participant_id TEXT PRIMARY KEY, enrolled_at TEXT,
        has_consented BOOLEAN);
    CREATE TABLE prepost_sessions (id INTEGER PRIMARY KEY,
        participant_id TEXT REFERENCES prepost_participants(participant_id), phase TEXT);
    CREATE TABLE prepost_responses (id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id INTEGER REFERENCES prepost_sessions(id), question TEXT, answer TEXT,
        score REAL);
    """)
    con.executemany("INSERT INTO prepost_participants VALUES (?,?,?)", [
        (f"p{i}", "2025-07-01", i % 2) for i in range(4)])
    con.executemany("INSERT INTO prepost_sessions VALUES (?,?,?)", [
        (10 + i, f"p{i % 4}", "pre" if i % 2 else "post") for i in range(6)])
    con.executemany("INSERT INTO prepost_responses (session_id, question, answer, score) "
                    "VALUES (?,?,?,?)", [(10 + i % 6, f"q{i}", "a", i / 10) for i in range(20)])
    con.commit()
    con.close()


def build_tpr(path: str) -> None:
    con = _db(path, """
    CREATE TABLE tpr_results (state TEXT, lga TEXT, ward TEXT, tpr REAL, tested INTEGER,
        positive INTEGER, UNIQUE(state, lga, ward));
    CREATE TABLE computation_status (state TEXT, facility_level TEXT, age_group TEXT,
        status TEXT, computed_at TEXT, PRIMARY KEY (state, facility_level, age_group));
    """)
    con.executemany("INSERT INTO tpr_results VALUES (?,?,?,?,?,?)", [
        ("Kano", f"lga{i % 3}", f"ward{i}", (i % 7) / 7, 100 + i, i) for i in range(30)])
    con.executemany("INSERT INTO computation_status VALUES (?,?,?,?,?)", [
        ("Kano", lvl, age, "done", "2025-07-28T10:00:00") for lvl in ("primary", "all")
        for age in ("u5", "o5", "all")])
    con.commit()
    con.close()


def build_instance(root: str) -> None:
    os.makedirs(os.path.join(root, "uploads", "sess-abc"), exist_ok=True)
    os.makedirs(os.path.join(root, "uploads", "sess-empty"), exist_ok=True)
    build_interactions(os.path.join(root, "interactions.db"))
    build_users(os.path.join(root, "users.db"))
    build_survey(os.path.join(root, "survey.db"))
    build_prepost(os.path.join(root, "prepost_test.db"))
    build_tpr(os.path.join(root, "uploads", "sess-abc", "tpr_precomputed.db"))


def build_big_messages(path: str, n: int) -> None:
    """sessions + n messages (for the kill-the-server test)."""
    con = _db(path, """
    CREATE TABLE sessions (session_id TEXT PRIMARY KEY, start_time TEXT);
    CREATE TABLE messages (message_id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT REFERENCES sessions(session_id), content TEXT);
    """)
    con.executemany("INSERT INTO sessions VALUES (?,?)",
                    [(f"s{i}", "2025-07-28T10:00:00") for i in range(100)])
    body = "x" * 500
    con.executemany("INSERT INTO messages (session_id, content) VALUES (?,?)",
                    ((f"s{i % 100}", body) for i in range(n)))
    con.commit()
    con.close()
