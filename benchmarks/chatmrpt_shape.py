#!/usr/bin/env python3
"""A ChatMRPT ``instance/`` directory of the app's real shape, for benchmarks and tests.

``build(instance_dir, scale=1.0, seed=0) -> {relative_db_path: {table: rows}}`` writes

* ``interactions.db``: ``sessions`` (TEXT key) and 16 tables keyed by TEXT ids with a
  ``session_id`` reference: messages, file_uploads, analysis_events, errors,
  analysis_steps, algorithm_decisions, calculations, anomalies, variable_relationships,
  ward_rankings, visualization_metadata, llm_interactions, explanations,
  routing_decisions, arena_battles, arena_training_exports (the last two created by
  hand, untyped columns, as they are in the files that have them);
* ``users.db``: users, user_sessions;
* ``survey.db``: survey_sessions, survey_questions, survey_responses (AUTOINCREMENT ids,
  with deleted rows: sqlite_sequence above max(id)), survey_triggers, three indexes;
* ``prepost_test.db``: prepost_participants, prepost_sessions, prepost_responses;
* ``uploads/<session>/tpr_precomputed.db`` for two upload sessions: tpr_results (UNIQUE
  (ward_code, age_group, test_method)), computation_status (composite PRIMARY KEY).

28 table names, 30 tables; at scale 1.0 1 243 123 rows and 458 MB of SQLite, in ~30 s
(messages 450 000: user questions ~100 characters, assistant answers ~330 (86-685),
markdown; llm_interactions 150 000 with ~400 characters of JSON prompt + response;
analysis_events 150 000 with ~145-character JSON details; tpr_results 2 x 100 000;
analysis_steps, calculations, ward_rankings 30 000; sessions 44 000).  The size is
above the 350-400 MB first aimed at: the TEXT uuid keys, session references and
timestamps alone take ~110 bytes a row (~170 MB with the key indexes).  Four tables are
empty (anomalies, variable_relationships, explanations, arena_training_exports), as in
the real files.

The awkward values the real files hold, in realistic proportions:

* TEXT timestamps; in ``messages.timestamp``, ``analysis_events.timestamp``,
  ``llm_interactions.timestamp`` and ``sessions.last_activity`` five forms mixed in one
  column (``2025-03-01 12:00:00`` (CURRENT_TIMESTAMP), ``2025-03-01T12:00:00.123456``
  (``isoformat()``), ``...Z``, ``...+01:00``, ``2025-03-01 12:00:00.5-05:30``); every other
  timestamp column zone-less only;
* JSON as TEXT (objects and arrays, nested 3-7 levels, ``\\uXXXX`` escapes and raw UTF-8,
  escaped quotes), a few NULLs; in most JSON columns rows whose numbers are written
  ``-0.0``, ``1e2``, ``1E+2``, ``1.50``, ``5e-324`` and integers beyond 2^63
  (``EDGE_EVERY``, ``BIG_EVERY``); four JSON columns without them (file_uploads.metadata,
  ward_rankings.scores, llm_interactions.response, routing_decisions.context);
* nullable booleans (0/1/NULL) in BOOLEAN-declared and ``is_``/``has_``/``was_`` columns;
* orphans (child rows whose parent was deleted: a few hundred at scale 1.0) and NULL
  references;
* ``calculations.value`` (NUMERIC) holding integers, reals and text;
  ``ward_rankings.composite_score`` (NUMERIC) and ``arena_battles.latency`` (untyped):
  reals with integers mixed in;
* text with newlines, tabs, quotes, backslashes and non-ASCII (``Kaduna – Zaria ñ 日本``,
  emoji).

Deterministic: every table has its own ``random.Random`` seeded from (seed, db, table),
and the edge values sit at fixed row numbers, so they are present at any scale.
Generation: ``executemany`` over generators with ``journal_mode=OFF``/``synchronous=OFF``;
the files are left in the app's default rollback-journal mode (``journal_mode=DELETE``).

Command line: ``chatmrpt_shape.py DIR [--scale 1.0] [--seed 0]`` prints the counts, the
total rows and MB.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import sqlite3
import sys
import time

EDGE_EVERY = 2_000        # every EDGE_EVERY-th row of a JSON column (from row 3) has edge numbers
BIG_EVERY = 50_000        # ... and every BIG_EVERY-th (from row 7) integers beyond 2^63
TPR_SESSIONS = 2

# -- value pools ---------------------------------------------------------------------------
STATES = ["Kaduna", "Kano", "Niger", "Adamawa", "Osun", "Yobe", "Katsina", "Taraba",
          "Kwara", "Delta", "Ebonyi", "Plateau", "Nasarawa", "Gombe", "Bauchi", "Zamfara"]
LGAS = ["Zaria", "Sabon Gari", "Igabi", "Chikun", "Kaura", "Ungogo", "Dala", "Fagge",
        "Bida", "Suleja", "Yola North", "Mubi South", "Ife Central", "Ilesa East",
        "Damaturu", "Potiskum", "Funtua", "Daura", "Jalingo", "Ilorin West"]
WARD_PARTS = ["Tudun Wada", "Kofar Doka", "Gyallesu", "Hayin Dogo", "Samaru", "Bomo",
              "Dutsen Abba", "Kwarbai", "Limancin Kona", "Ung. Juma", "Gabasawa",
              "Kakuri", "Barnawa", "Makera", "Rigasa", "Ñgurore", "Jos–North", "Agbọn"]
WORDS = ("malaria incidence ward risk score tpr test positivity rate rainfall ndvi "
         "elevation urban population density itn distribution campaign composite "
         "ranking vulnerability pca analysis the of and for with in by to is "
         "prioritise reprioritization settlement housing quality distance facility "
         "rdt microscopy under-five pregnant women anc evi soil wetness flood").split()
SPECIAL = ["Kaduna – Zaria ñ 日本", "“smart quotes”", "it's", 'the "composite" score',
           "C:\\Users\\analyst\\data.csv", "tab\there", "ratio ≥ 0.5", "🦟 mosquito",
           "Ìbàdàn", "naïve", "50% → 75%", "back\\slash", "line\r\nbreak", "ẹ̀ṣọ́",
           "`code`", "<b>bold</b>", "a\\nb (literal)", "€1,200", "μg/L", "ward #12"]
ROLES = ["user", "assistant"]
LANGS = ["en", "en", "en", "en", "fr", "ha", "yo", "ig", "pt", None]
BROWSERS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1",
            "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "Mozilla/5.0 (Linux; Android 14; SM-A546E) Chrome/123.0 Mobile",
            "python-requests/2.31.0", None]
MODELS = ["gpt-4o", "gpt-4o-mini", "llama-3.1-8b-instruct", "qwen2.5-7b", "mistral-7b"]
EVENT_TYPES = ["file_upload", "data_validation", "tpr_calculation", "risk_analysis",
               "pca_analysis", "composite_score", "map_render", "itn_planning",
               "export", "variable_selection"]
ALGOS = ["composite_score", "pca", "kmeans", "random_forest", "idw_interpolation"]
VIZ = ["choropleth", "box_plot", "histogram", "scatter", "vulnerability_map", "itn_map"]
ROUTES = ["tools", "conversational", "data_analysis", "tpr_workflow", "help"]
METHODS = ["composite", "pca", "zscore", "minmax"]
AGES = ["u5", "o5", "pw", "all"]
TESTS = ["rdt", "microscopy", "both"]
FAC = ["primary", "secondary", "tertiary", "all"]
UNITS = ["%", "per 1000", "mm", "m", "index", None]
BAD_VALUES = ["n/a", "12.5%", "≈3.2", "", "NaN?", "1,204", "--", "see note"]

T0 = _dt.datetime(2025, 1, 6, 7, 0, 0)
SPAN = 240 * 86400
_td = _dt.timedelta
H1, H530 = _td(hours=1), _td(hours=5, minutes=30)

# mixed-form timestamps: (weight, formatter) -- CURRENT_TIMESTAMP default, isoformat(),
# utcnow().isoformat()+"Z", a browser's local time (Nigeria, +01:00), an odd client
FORM_WEIGHTS = [45, 35, 12, 7, 1]


def _f_space(d):
    return d.isoformat(" ", "seconds")


def _f_tmicro(d):
    return d.isoformat("T", "microseconds")


def _f_z(d):
    return d.isoformat("T", "seconds") + "Z"


def _f_plus1(d):
    return (d + H1).isoformat("T", "seconds") + "+01:00"


def _f_half(d):
    return (d - H530).isoformat(" ", "seconds") + f".{d.microsecond // 100000}-05:30"


FORMS = [_f_space, _f_tmicro, _f_z, _f_plus1, _f_half]
_CUM = [sum(FORM_WEIGHTS[:i + 1]) for i in range(len(FORM_WEIGHTS))]


def ts_at(rng, base=T0, span=SPAN):
    return base + _td(seconds=rng.random() * span)


def ts_mixed(rng, i, d=None):
    """A mixed-form timestamp text; rows 0-4 cycle through all five forms."""
    d = d or ts_at(rng)
    if i < 5:
        return FORMS[i](d)
    r = rng.random() * _CUM[-1]
    for f, c in zip(FORMS, _CUM):
        if r < c:
            return f(d)
    return _f_space(d)


def ts_plain(rng, d=None, micro=False):
    d = d or ts_at(rng)
    return d.isoformat(" ", "microseconds" if micro else "seconds")


def ts_iso(rng, d=None):
    d = d or ts_at(rng)
    return d.isoformat("T", "microseconds")


def uid(rng):
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


def nullable_bool(rng, p_null=0.08, p_true=0.6):
    r = rng.random()
    return None if r < p_null else int(r < p_null + (1 - p_null) * p_true)


def make_sentences(rng, n=3000):
    out = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(7, 14))
        if rng.random() < 0.45:
            words.insert(rng.randrange(len(words)), rng.choice(SPECIAL))
        s = " ".join(words)
        s = s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", ":", "!"])
        r = rng.random()
        if r < 0.15:
            s = "- " + s
        elif r < 0.22:
            s = "**" + s + "**"
        elif r < 0.27:
            s = "\t" + s
        out.append(s)
    return out


def edge_json(i):
    """JSON text whose numbers are written the way only a hand or another language
    writes them; as a fragment to embed."""
    big = i % BIG_EVERY == 7
    return ('{"neg_zero": -0.0, "sci": 1e2, "sci_upper": 1E+2, "trailing_zero": 1.50, '
            '"tiny": 5e-324, "quote": "say \\"hi\\"", "unicode": "\\u00f1 \\u65e5\\u672c", '
            '"nested": {"a": [1, 2.0, {"b": [[], {}, null, true]}]}'
            + (', "big": 18446744073709551621, "big_neg": -9223372036854775809' if big else "")
            + "}")


def with_edges(i, obj, ensure_ascii=True, edges=True):
    """json.dumps(obj); on edge rows (unless edges=False) an ``"edge": {...}`` member (or
    array element) with the edge numbers."""
    s = json.dumps(obj, ensure_ascii=ensure_ascii)
    if edges and (i % EDGE_EVERY == 3 or i % BIG_EVERY == 7):
        if s.startswith("{"):
            s = s[:-1] + (", " if len(s) > 2 else "") + '"edge": ' + edge_json(i) + "}"
        else:
            s = s[:-1] + (", " if len(s) > 2 else "") + edge_json(i) + "]"
    return s


# -- schemas -------------------------------------------------------------------------------
INTERACTIONS = """
CREATE TABLE sessions (session_id TEXT PRIMARY KEY, start_time TIMESTAMP,
    last_activity TIMESTAMP, user_language TEXT, browser_info TEXT, ip_address TEXT,
    analysis_complete BOOLEAN DEFAULT 0, files_uploaded BOOLEAN DEFAULT 0);
CREATE TABLE messages (message_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" DATETIME
    DEFAULT CURRENT_TIMESTAMP, role TEXT, content TEXT, context TEXT, options TEXT,
    token_count INTEGER, is_streamed BOOLEAN);
CREATE INDEX idx_messages_session ON messages(session_id);
CREATE TABLE file_uploads (upload_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TIMESTAMP, file_name TEXT,
    file_type TEXT, file_size INTEGER, upload_path TEXT, has_shapefile BOOLEAN,
    metadata TEXT);
CREATE TABLE analysis_events (event_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TIMESTAMP,
    event_type TEXT, details TEXT, success BOOLEAN, duration_ms REAL);
CREATE TABLE errors (error_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TIMESTAMP,
    error_type TEXT, message TEXT, stack_trace TEXT, context TEXT);
CREATE TABLE analysis_steps (step_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), step_number INTEGER, step_name TEXT,
    started_at TIMESTAMP, completed_at TIMESTAMP, parameters TEXT, status TEXT);
CREATE TABLE algorithm_decisions (decision_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TIMESTAMP,
    algorithm TEXT, decision TEXT, confidence REAL, options TEXT, rationale TEXT);
CREATE TABLE calculations (calculation_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TIMESTAMP, ward_name TEXT,
    variable TEXT, method TEXT, value NUMERIC, unit TEXT, inputs TEXT);
CREATE TABLE anomalies (anomaly_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), detected_at TIMESTAMP, ward_name TEXT,
    variable TEXT, value REAL, z_score REAL, is_resolved BOOLEAN);
CREATE TABLE variable_relationships (relationship_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), variable_a TEXT, variable_b TEXT,
    correlation REAL, p_value REAL, method TEXT, context TEXT);
CREATE TABLE ward_rankings (ranking_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TIMESTAMP, ward_name TEXT,
    lga TEXT, state TEXT, "rank" INTEGER, composite_score NUMERIC, method TEXT,
    is_urban BOOLEAN, scores TEXT);
CREATE TABLE visualization_metadata (viz_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), created_at TIMESTAMP, viz_type TEXT,
    title TEXT, file_path TEXT, options TEXT);
CREATE TABLE llm_interactions (interaction_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TEXT, model TEXT,
    prompt TEXT, response TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,
    latency_ms REAL, has_error INTEGER);
CREATE TABLE explanations (explanation_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TIMESTAMP, target TEXT,
    explanation TEXT, context TEXT);
CREATE TABLE routing_decisions (decision_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id), "timestamp" TIMESTAMP,
    message_id TEXT, route TEXT, confidence REAL, context TEXT, was_overridden INTEGER);
CREATE TABLE arena_battles (battle_id PRIMARY KEY, session_id, model_a, model_b, winner,
    user_message, response_a, response_b, created_at, latency, "options");
CREATE TABLE arena_training_exports (export_id PRIMARY KEY, created_at, battle_count,
    file_path, "options");
"""

USERS = """
CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT UNIQUE NOT NULL,
    username TEXT UNIQUE NOT NULL, password_hash TEXT NOT NULL, created_at TIMESTAMP,
    last_login TIMESTAMP, is_active BOOLEAN DEFAULT 1, role TEXT DEFAULT 'user');
CREATE TABLE user_sessions (token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id), created_at TIMESTAMP,
    expiry TIMESTAMP NOT NULL, ip_address TEXT, user_agent TEXT);
"""

SURVEY = """
CREATE TABLE survey_sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT,
    user_id TEXT, started_at TIMESTAMP, completed_at TIMESTAMP, is_complete BOOLEAN);
CREATE TABLE survey_questions (id INTEGER PRIMARY KEY AUTOINCREMENT,
    question_key TEXT UNIQUE, question_text TEXT, question_type TEXT, options TEXT,
    "order" INTEGER);
CREATE TABLE survey_responses (id INTEGER PRIMARY KEY AUTOINCREMENT,
    survey_session_id INTEGER REFERENCES survey_sessions(id),
    question_id INTEGER REFERENCES survey_questions(id), response TEXT,
    response_time_ms INTEGER, created_at TIMESTAMP);
CREATE TABLE survey_triggers (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT,
    trigger_type TEXT, triggered_at TIMESTAMP, context TEXT, was_shown BOOLEAN);
CREATE INDEX idx_survey_sessions_session ON survey_sessions(session_id);
CREATE INDEX idx_survey_responses_session ON survey_responses(survey_session_id);
CREATE INDEX idx_survey_triggers_session ON survey_triggers(session_id);
"""

PREPOST = """
CREATE TABLE prepost_participants (participant_id TEXT PRIMARY KEY, user_id TEXT,
    cohort TEXT, enrolled_at TIMESTAMP, consent_given BOOLEAN, demographics TEXT);
CREATE TABLE prepost_sessions (id INTEGER PRIMARY KEY AUTOINCREMENT,
    participant_id TEXT REFERENCES prepost_participants(participant_id), phase TEXT,
    started_at TIMESTAMP, completed_at TIMESTAMP, score REAL);
CREATE TABLE prepost_responses (id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER REFERENCES prepost_sessions(id), question_id TEXT, answer TEXT,
    is_correct BOOLEAN, response_time REAL, answered_at TIMESTAMP);
"""

TPR = """
CREATE TABLE tpr_results (id INTEGER PRIMARY KEY, state TEXT, lga TEXT, ward_name TEXT,
    ward_code TEXT, age_group TEXT, test_method TEXT, facility_level TEXT, tpr REAL,
    total_tested INTEGER, total_positive INTEGER, is_urban BOOLEAN, computed_at TIMESTAMP,
    UNIQUE (ward_code, age_group, test_method));
CREATE TABLE computation_status (state TEXT NOT NULL, age_group TEXT NOT NULL,
    test_method TEXT NOT NULL, status TEXT, started_at TIMESTAMP, completed_at TIMESTAMP,
    rows_computed INTEGER, error TEXT, PRIMARY KEY (state, age_group, test_method));
"""

# rows at scale 1.0 (empty tables are listed with 0)
SIZES = {
    "sessions": 44_000, "messages": 450_000, "file_uploads": 6_000,
    "analysis_events": 150_000, "errors": 3_000, "analysis_steps": 30_000,
    "algorithm_decisions": 12_000, "calculations": 30_000, "anomalies": 0,
    "variable_relationships": 0, "ward_rankings": 30_000, "visualization_metadata": 8_000,
    "llm_interactions": 150_000, "explanations": 0, "routing_decisions": 25_000,
    "arena_battles": 2_000, "arena_training_exports": 0,
    "users": 5_000, "user_sessions": 15_000,
    "survey_sessions": 4_000, "survey_responses": 30_000, "survey_triggers": 3_000,
    "prepost_participants": 2_000, "prepost_sessions": 4_000, "prepost_responses": 40_000,
    "tpr_results": 100_000,
}
# orphans at scale 1.0 (child rows whose parent row does not exist)
ORPHANS = {"messages": 200, "analysis_events": 60, "llm_interactions": 40,
           "file_uploads": 5, "ward_rankings": 20, "user_sessions": 20,
           "prepost_responses": 10}


class _Gen:
    def __init__(self, scale: float, seed: int):
        self.scale = scale
        self.seed = seed

    def n(self, table: str, minimum: int = 20) -> int:
        base = SIZES[table]
        return 0 if base == 0 else max(minimum, round(base * self.scale))

    def orphans(self, table: str) -> int:
        return max(2, round(ORPHANS[table] * self.scale))

    def rng(self, db: str, table: str) -> random.Random:
        return random.Random(f"chatmrpt-shape:{self.seed}:{db}:{table}")


def _connect(path: str, script: str) -> sqlite3.Connection:
    if os.path.exists(path):
        os.unlink(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    con.executescript(script)
    con.execute("BEGIN")
    return con


def _close(con: sqlite3.Connection) -> dict:
    con.execute("COMMIT")
    counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for (t,) in
              con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT "
                          "LIKE 'sqlite_%' ORDER BY rowid")}
    con.execute("PRAGMA journal_mode=DELETE")   # the app's default rollback journal
    con.close()
    return counts


def _ins(con, table, ncols, rows):
    con.executemany(f'INSERT INTO "{table}" VALUES ({",".join("?" * ncols)})', rows)


def _skewed(rng, n):
    """Index in [0, n): a few sessions have many rows, most have few."""
    return int(n * rng.random() ** 2.2)


def _session_ref(rng, i, sessions, ghosts, orphan_rows, null_p=0.0):
    """Session id for child row i: NULL with probability null_p; an orphan (a deleted
    session's id) for the rows in orphan_rows; else a skewed pick among sessions."""
    if i in orphan_rows:
        return ghosts[i % len(ghosts)]
    if null_p and rng.random() < null_p:
        return None
    return sessions[_skewed(rng, len(sessions))]


def _orphan_rows(rng, n, k):
    return set(rng.sample(range(n), min(k, n))) if n else set()


def build_interactions(path: str, g: _Gen, sentences: list[str]) -> tuple[dict, list[str]]:
    con = _connect(path, INTERACTIONS)
    db = "interactions"
    ns = g.n("sessions")
    r = g.rng(db, "sessions")
    sessions = [uid(r) for _ in range(ns)]
    ghosts = [uid(r) for _ in range(64)]            # deleted sessions: orphans point here

    def gen_sessions():
        for i, sid in enumerate(sessions):
            st = ts_at(r)
            la = st + _td(seconds=r.random() * 7200)
            yield (sid, ts_plain(r, st, micro=True), ts_mixed(r, i, la), r.choice(LANGS),
                   r.choice(BROWSERS), f"10.{r.randrange(256)}.{r.randrange(256)}."
                                       f"{r.randrange(1, 255)}",
                   nullable_bool(r, 0.03, 0.35), nullable_bool(r, 0.03, 0.55))
    _ins(con, "sessions", 8, gen_sessions())

    # messages: user questions (short) and assistant answers (long markdown)
    r = g.rng(db, "messages")
    n = g.n("messages")
    orph = _orphan_rows(r, n, g.orphans("messages"))

    def gen_messages():
        choices, rand = r.choices, r.random
        for i in range(n):
            role = "user" if i % 2 == 0 else "assistant"
            k = (1 if rand() < 0.8 else 2) if role == "user" else r.randint(2, 6)
            content = "\n".join(choices(sentences, k=k))
            if role == "assistant" and rand() < 0.2:
                content = f"## Results for {r.choice(WARD_PARTS)}\n\n" + content
            x = rand()
            context = (None if x < 0.88 and i % EDGE_EVERY != 3 else with_edges(i, {
                "page": r.choice(["upload", "analysis", "map", "chat"]),
                "state": r.choice(STATES),
                "analysis": {"method": r.choice(METHODS), "wards": choices(WARD_PARTS, k=2)}}))
            options = (None if x > 0.03 else json.dumps(
                [{"label": s[:20], "value": j} for j, s in enumerate(choices(sentences, k=2))]))
            yield (uid(r), _session_ref(r, i, sessions, ghosts, orph), ts_mixed(r, i), role,
                   content, context, options, r.randint(5, 900),
                   None if role == "user" else nullable_bool(r, 0.1, 0.7))
    _ins(con, "messages", 9, gen_messages())

    r = g.rng(db, "file_uploads")
    n = g.n("file_uploads")
    orph = _orphan_rows(r, n, g.orphans("file_uploads"))

    def gen_uploads():
        for i in range(n):
            sid = _session_ref(r, i, sessions, ghosts, orph)
            ext = r.choice(["csv", "xlsx", "zip", "csv", "shp"])
            name = f"{r.choice(STATES)}_{r.choice(['tpr', 'covariates', 'wards'])}_{i}.{ext}"
            yield (uid(r), sid, ts_plain(r), name, ext, r.randint(2_000, 80_000_000),
                   f"instance/uploads/{sid}/{name}", nullable_bool(r, 0.05, 0.3),
                   None if r.random() < 0.1 else with_edges(i, {
                       "rows": r.randint(10, 5000), "columns": r.choices(WORDS, k=6),
                       "encoding": r.choice(["utf-8", "latin-1", "utf-8-sig"]),
                       "crs": {"type": "name", "properties": {"name": "EPSG:4326"}}},
                       edges=False))
    _ins(con, "file_uploads", 9, gen_uploads())

    r = g.rng(db, "analysis_events")
    n = g.n("analysis_events")
    orph = _orphan_rows(r, n, g.orphans("analysis_events"))

    def gen_events():
        rand, choice = r.random, r.choice
        for i in range(n):
            et = choice(EVENT_TYPES)
            x = rand()
            if x < 0.02:
                details = None
            elif x < 0.2:
                details = with_edges(i, [{"ward": choice(WARD_PARTS), "score": round(rand(), 4)}
                                         for _ in range(2)], ensure_ascii=False)
            else:
                details = with_edges(i, {
                    "params": {"method": choice(METHODS), "variables": r.choices(WORDS[:14], k=2)},
                    "result": {"wards": r.randint(10, 400),
                               "summary": {"mean": round(rand() * 100, 3),
                                           "by_state": {choice(STATES): r.randint(0, 99)}}},
                    **({"note": choice(SPECIAL)} if x < 0.5 else {})}, ensure_ascii=x < 0.6)
            yield (uid(r), _session_ref(r, i, sessions, ghosts, orph, 0.01), ts_mixed(r, i),
                   et, details, nullable_bool(r, 0.05, 0.93), round(rand() * 5000, 3))
    _ins(con, "analysis_events", 7, gen_events())

    r = g.rng(db, "errors")
    n = g.n("errors")

    def gen_errors():
        for i in range(n):
            et = r.choice(["ValueError", "KeyError", "TimeoutError", "OpenAIError"])
            yield (uid(r), _session_ref(r, i, sessions, ghosts, (), 0.1), ts_plain(r), et,
                   f"{et}: '{r.choice(WORDS)}' {r.choice(SPECIAL)}",
                   "Traceback (most recent call last):\n  File \"app/core.py\", line "
                   f"{r.randint(10, 900)}, in run\n    raise {et}()\n",
                   None if r.random() < 0.3 else with_edges(i, {
                       "route": r.choice(ROUTES), "request": {"path": "/send_message",
                                                              "args": {"q": r.choice(SPECIAL)}}}))
    _ins(con, "errors", 7, gen_errors())

    r = g.rng(db, "analysis_steps")
    n = g.n("analysis_steps")

    def gen_steps():
        for i in range(n):
            st = ts_at(r)
            done = r.random() < 0.9
            yield (uid(r), _session_ref(r, i, sessions, ghosts, ()), i % 8 + 1,
                   r.choice(EVENT_TYPES), ts_iso(r, st),
                   ts_iso(r, st + _td(seconds=r.random() * 120)) if done else None,
                   with_edges(i, {"inputs": {"columns": r.choices(WORDS, k=4),
                                             "normalise": r.choice([True, False, None])},
                                  "thresholds": [0.25, 0.5, 0.75]}),
                   "completed" if done else r.choice(["failed", "running"]))
    _ins(con, "analysis_steps", 8, gen_steps())

    r = g.rng(db, "algorithm_decisions")
    n = g.n("algorithm_decisions")

    def gen_decisions():
        for i in range(n):
            yield (uid(r), _session_ref(r, i, sessions, ghosts, ()), ts_plain(r),
                   r.choice(ALGOS), r.choice(["selected", "rejected", "fallback"]),
                   round(r.random(), 4),
                   with_edges(i, {"candidates": r.sample(ALGOS, 3),
                                  "criteria": {"r2": r.random(), "n": r.randint(5, 500)}}),
                   "\n".join(r.choices(sentences, k=2)))
    _ins(con, "algorithm_decisions", 8, gen_decisions())

    r = g.rng(db, "calculations")
    n = g.n("calculations")

    def gen_calcs():
        for i in range(n):
            x = r.random()
            if i < 3:
                x = (0.1, 0.8, 0.97)[i]    # every storage class present at any scale
            if x < 0.7:
                value = r.random() * 100            # real
            elif x < 0.95:
                value = r.randint(0, 50_000)         # integer
            else:
                value = r.choice(BAD_VALUES)         # text (NUMERIC affinity keeps it)
            yield (uid(r), _session_ref(r, i, sessions, ghosts, ()), ts_plain(r),
                   r.choice(WARD_PARTS), r.choice(WORDS[:14]), r.choice(METHODS), value,
                   r.choice(UNITS), None if r.random() < 0.15 else with_edges(i, {
                       "formula": "(tpr * w1) + (rain * w2)", "w": [0.6, 0.4]}))
    _ins(con, "calculations", 9, gen_calcs())

    r = g.rng(db, "ward_rankings")
    n = g.n("ward_rankings")
    orph = _orphan_rows(r, n, g.orphans("ward_rankings"))

    def gen_rankings():
        for i in range(n):
            # NUMERIC: whole scores are stored as integers, the rest as reals
            score = r.randint(0, 10) if (r.random() < 0.15 or i == 1) else round(r.random() * 10, 6)
            yield (uid(r), _session_ref(r, i, sessions, ghosts, orph), ts_plain(r),
                   r.choice(WARD_PARTS), r.choice(LGAS), r.choice(STATES), i % 400 + 1,
                   score, r.choice(METHODS), nullable_bool(r, 0.2, 0.3),
                   with_edges(i, {"components": {w: round(r.random(), 5) for w in
                                                 r.sample(WORDS[:14], 4)}}, edges=False))
    _ins(con, "ward_rankings", 11, gen_rankings())

    r = g.rng(db, "visualization_metadata")
    n = g.n("visualization_metadata")

    def gen_viz():
        for i in range(n):
            sid = _session_ref(r, i, sessions, ghosts, ())
            vt = r.choice(VIZ)
            yield (uid(r), sid, ts_plain(r), vt, f"{vt.replace('_', ' ').title()} – "
                   f"{r.choice(STATES)}", f"instance/uploads/{sid}/{vt}_{i}.html",
                   with_edges(i, {"colorscale": "Reds", "zoom": r.randint(5, 9),
                                  "center": {"lat": 9 + r.random(), "lon": 7 + r.random()},
                                  "layers": [{"id": "wards", "opacity": 0.7}]}))
    _ins(con, "visualization_metadata", 7, gen_viz())

    r = g.rng(db, "llm_interactions")
    n = g.n("llm_interactions")
    orph = _orphan_rows(r, n, g.orphans("llm_interactions"))
    system = "ChatMRPT v3" 

    def gen_llm():
        choices, rand = r.choices, r.random
        for i in range(n):
            model = r.choice(MODELS)
            q = choices(sentences)[0]
            a = " ".join(choices(sentences, k=1 if rand() < 0.7 else 2))
            pt, ct = r.randint(50, 4000), r.randint(10, 1200)
            prompt = with_edges(i, [{"role": "system", "content": system},
                                    {"role": "user", "content": q}])
            err = rand() < 0.02
            msg = {"role": "assistant", "content": a}
            if rand() < 0.15:
                msg["tool_calls"] = [{"type": "function", "function": {
                    "name": r.choice(ROUTES), "arguments": {"ward": r.choice(WARD_PARTS),
                                                            "k": r.randint(1, 20)}}}]
            response = None if err else with_edges(i, {
                "choices": [{"message": msg}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct}},
                ensure_ascii=rand() < 0.5, edges=False)
            yield (uid(r), _session_ref(r, i, sessions, ghosts, orph), ts_mixed(r, i), model,
                   prompt, response, pt, None if err else ct, round(rand() * 9000, 2),
                   None if rand() < 0.1 else int(err))
    _ins(con, "llm_interactions", 10, gen_llm())

    r = g.rng(db, "routing_decisions")
    n = g.n("routing_decisions")

    def gen_routing():
        for i in range(n):
            yield (uid(r), _session_ref(r, i, sessions, ghosts, ()), ts_plain(r), uid(r),
                   r.choice(ROUTES), round(r.random(), 3),
                   None if r.random() < 0.05 else with_edges(i, {
                       "intent": r.choice(ROUTES), "has_data": r.random() < 0.5,
                       "scores": {k: round(r.random(), 3) for k in r.sample(ROUTES, 3)}},
                       edges=False),
                   nullable_bool(r, 0.3, 0.05))
    _ins(con, "routing_decisions", 8, gen_routing())

    r = g.rng(db, "arena_battles")
    n = g.n("arena_battles")

    def gen_arena():
        for i in range(n):
            # untyped column: reals with whole numbers stored as integers
            lat = r.randint(200, 3000) if (r.random() < 0.2 or i == 1) else r.random() * 3000
            yield (uid(r), _session_ref(r, i, sessions, ghosts, (), 0.05), *r.sample(MODELS, 2),
                   r.choice(["model_a", "model_b", "tie", None]),
                   r.choice(sentences), "\n".join(r.choices(sentences, k=3)),
                   "\n".join(r.choices(sentences, k=3)), ts_plain(r), lat,
                   with_edges(i, {"temperature": 0.7, "max_tokens": 1024}))
    _ins(con, "arena_battles", 11, gen_arena())
    return _close(con), sessions


def build_users(path: str, g: _Gen) -> dict:
    con = _connect(path, USERS)
    r = g.rng("users", "users")
    n = g.n("users")
    ids = [uid(r) for _ in range(n)]
    ghosts = [uid(r) for _ in range(16)]
    first = ["amina", "chinedu", "ngozi", "tunde", "fatima", "ibrahim", "zainab", "emeka",
             "joão", "renée", "müller", "ọlá"]

    def gen_users():
        for i, u in enumerate(ids):
            name = f"{r.choice(first)}.{i}"
            created = ts_at(r)
            yield (u, f"{name}@{r.choice(['example.org', 'health.gov.ng', 'uni.edu'])}",
                   name, "pbkdf2:sha256:600000$" + f"{r.getrandbits(64):016x}$"
                   + f"{r.getrandbits(256):064x}", ts_plain(r, created),
                   None if r.random() < 0.25 else ts_plain(r, created + _td(days=r.random() * 60)),
                   nullable_bool(r, 0.02, 0.92), r.choice(["user"] * 18 + ["admin", "analyst"]))
    _ins(con, "users", 8, gen_users())

    r = g.rng("users", "user_sessions")
    n = g.n("user_sessions")
    orph = _orphan_rows(r, n, g.orphans("user_sessions"))

    def gen_usessions():
        for i in range(n):
            created = ts_at(r)
            yield (f"{r.getrandbits(256):064x}", ghosts[i % 16] if i in orph else
                   ids[_skewed(r, len(ids))], ts_plain(r, created),
                   ts_plain(r, created + _td(days=7)), f"10.1.{r.randrange(256)}.{r.randrange(256)}",
                   r.choice(BROWSERS))
    _ins(con, "user_sessions", 6, gen_usessions())
    return _close(con)


def build_survey(path: str, g: _Gen, sessions: list[str]) -> dict:
    con = _connect(path, SURVEY)
    r = g.rng("survey", "survey_sessions")
    ns = g.n("survey_sessions")

    def gen_ss():
        for i in range(ns):
            st = ts_at(r)
            done = r.random() < 0.7
            yield (None, r.choice(sessions), None if r.random() < 0.6 else uid(r),
                   ts_plain(r, st), ts_plain(r, st + _td(minutes=r.random() * 30)) if done
                   else None, int(done) if r.random() > 0.05 else None)
    con.executemany("INSERT INTO survey_sessions VALUES (?,?,?,?,?,?)", gen_ss())
    r = g.rng("survey", "survey_questions")
    kinds = ["likert", "choice", "text", "rating"]
    nq = 60
    con.executemany("INSERT INTO survey_questions VALUES (?,?,?,?,?,?)", [
        (None, f"q_{i:03d}", f"How useful was step {i} – «{r.choice(WORDS)}»?", kinds[i % 4],
         None if kinds[i % 4] == "text" else with_edges(i, {
             "choices": [{"value": v, "label": f"{v} ★"} for v in range(1, 6)],
             "required": i % 3 == 0}, ensure_ascii=False), i) for i in range(nq)])
    r = g.rng("survey", "survey_responses")
    n = g.n("survey_responses")

    def gen_sr():
        for i in range(n):
            q = r.randint(1, nq)
            yield (None, r.randint(1, ns), q, str(r.randint(1, 5)) if q % 4 != 3 else
                   r.choice(SPECIAL + ["Great tool", "Too slow on my phone", ""]),
                   r.randint(800, 90_000), ts_plain(r))
    con.executemany("INSERT INTO survey_responses VALUES (?,?,?,?,?,?)", gen_sr())
    # deleted answers: sqlite_sequence stays above max(id) (AUTOINCREMENT never reuses)
    con.execute("DELETE FROM survey_responses WHERE id % 997 = 0 OR id > ?", (n - 3,))
    r = g.rng("survey", "survey_triggers")
    n = g.n("survey_triggers")
    con.executemany("INSERT INTO survey_triggers VALUES (?,?,?,?,?,?)", (
        (None, r.choice(sessions), r.choice(["after_analysis", "timer", "exit_intent"]),
         ts_plain(r), with_edges(i, {"after_step": r.randint(1, 8), "shown": [1, 2]}),
         nullable_bool(r, 0.1, 0.5)) for i in range(n)))
    return _close(con)


def build_prepost(path: str, g: _Gen) -> dict:
    con = _connect(path, PREPOST)
    r = g.rng("prepost_test", "prepost_participants")
    n = g.n("prepost_participants")
    ids = [f"P{i:05d}" for i in range(n)]
    _ins(con, "prepost_participants", 6, (
        (p, None if r.random() < 0.3 else uid(r), r.choice(["A", "B", "control"]),
         ts_plain(r), nullable_bool(r, 0.05, 0.97),
         None if r.random() < 0.2 else with_edges(i, {
             "age_band": r.choice(["18-24", "25-34", "35-49", "50+"]),
             "role": r.choice(["M&E officer", "program manager", "researcher"]),
             "state": r.choice(STATES)}, ensure_ascii=False)) for i, p in enumerate(ids)))
    r = g.rng("prepost_test", "prepost_sessions")
    nse = g.n("prepost_sessions")

    def gen_ps():
        for i in range(nse):
            st = ts_at(r)
            yield (None, ids[i % n], "pre" if i < nse // 2 else "post", ts_plain(r, st),
                   ts_plain(r, st + _td(minutes=20)) if r.random() < 0.9 else None,
                   round(r.random() * 100, 1) if r.random() < 0.9 else None)
    con.executemany("INSERT INTO prepost_sessions VALUES (?,?,?,?,?,?)", gen_ps())
    r = g.rng("prepost_test", "prepost_responses")
    n = g.n("prepost_responses")
    orph = _orphan_rows(r, n, g.orphans("prepost_responses"))
    con.executemany("INSERT INTO prepost_responses VALUES (?,?,?,?,?,?,?)", (
        (None, nse + 100 + i if i in orph else r.randint(1, nse), f"Q{r.randint(1, 30):02d}",
         r.choice(["a", "b", "c", "d", "Not sure – ñ"]), nullable_bool(r, 0.04, 0.6),
         round(r.random() * 60, 3), ts_plain(r)) for i in range(n)))
    return _close(con)


def build_tpr(path: str, g: _Gen, key: str) -> dict:
    con = _connect(path, TPR)
    r = g.rng(key, "tpr_results")
    n = g.n("tpr_results", 24)
    per_ward = len(AGES) * len(TESTS)

    def gen_tpr():
        i = 0
        w = 0
        while i < n:
            state, lga = STATES[w % len(STATES)], LGAS[(w // 3) % len(LGAS)]
            ward = f"{WARD_PARTS[w % len(WARD_PARTS)]} {w // len(WARD_PARTS) + 1}"
            code = f"NG{w % len(STATES):02d}{w:06d}"
            urban = nullable_bool(r, 0.1, 0.3)
            for a in AGES:
                for t in TESTS:
                    if i >= n:
                        return
                    tested = r.randint(0, 3000)
                    pos = r.randint(0, tested) if tested else 0
                    yield (i + 1, state, lga, ward, code, a, t, r.choice(FAC),
                           pos / tested if tested else None, tested, pos, urban,
                           ts_plain(r, micro=True))
                    i += 1
            w += 1
    assert per_ward == 12
    _ins(con, "tpr_results", 13, gen_tpr())
    rows = []
    for s in STATES[:4]:
        for a in AGES:
            for t in TESTS:
                st = ts_at(r)
                ok = r.random() < 0.9
                rows.append((s, a, t, "complete" if ok else "failed", ts_plain(r, st),
                             ts_plain(r, st + _td(seconds=40)) if ok else None,
                             r.randint(100, 5000) if ok else 0,
                             None if ok else "KeyError: 'ward_code'\n\tat line 3"))
    _ins(con, "computation_status", 8, rows)
    return _close(con)


def build(instance_dir: str, scale: float = 1.0, seed: int = 0) -> dict:
    """Write the instance directory (existing files of the same names are replaced);
    return ``{relative_db_path: {table: rows}}``."""
    os.makedirs(instance_dir, exist_ok=True)
    g = _Gen(scale, seed)
    sentences = make_sentences(g.rng("pool", "sentences"))
    out = {}
    out["interactions.db"], sessions = build_interactions(
        os.path.join(instance_dir, "interactions.db"), g, sentences)
    out["users.db"] = build_users(os.path.join(instance_dir, "users.db"), g)
    out["survey.db"] = build_survey(os.path.join(instance_dir, "survey.db"), g, sessions)
    out["prepost_test.db"] = build_prepost(os.path.join(instance_dir, "prepost_test.db"), g)
    for sid in sessions[:TPR_SESSIONS]:
        rel = os.path.join("uploads", sid, "tpr_precomputed.db")
        os.makedirs(os.path.join(instance_dir, "uploads", sid), exist_ok=True)
        out[rel] = build_tpr(os.path.join(instance_dir, rel), g, f"tpr:{sid}")
    return out


def sqlite_files(instance_dir: str, counts: dict) -> list[str]:
    return [os.path.join(instance_dir, rel) for rel in counts]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Generate a ChatMRPT-shaped instance/ directory")
    ap.add_argument("dir")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    counts = build(args.dir, args.scale, args.seed)
    dt = time.perf_counter() - t0
    total = size = 0
    for rel, tables in counts.items():
        mb = os.path.getsize(os.path.join(args.dir, rel)) / 1e6
        size += mb
        print(f"{rel}  ({mb:.1f} MB)")
        for t, k in tables.items():
            print(f"    {t:<28} {k:>9}")
            total += k
    ntables = sum(len(t) for t in counts.values())
    print(f"{ntables} tables in {len(counts)} files, {total} rows, {size:.1f} MB, "
          f"generated in {dt:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
