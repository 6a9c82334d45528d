"""A stand-in for ChatMRPT: same entry point (run:app), health routes and SQLite files.

Reads `.env` at import like the real app; /health answers 200 whatever its JSON says.
"""

import datetime
import os
import sqlite3
import uuid

from flask import Flask, jsonify, request

# The release this worker imported (the real directory, not the `current` link).
ROOT = os.path.dirname(os.path.realpath(__file__))
INSTANCE = os.path.join(ROOT, "instance")


def _read_env_file(path):
    """A tiny .env reader: KEY=VALUE lines, quotes stripped, the environment wins."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip(), value.strip().strip("'\""))


_read_env_file(os.path.join(ROOT, ".env"))
with open(os.path.join(ROOT, "VERSION"), encoding="utf-8") as _version:
    VERSION = _version.read().strip()

SCHEMAS = {
    "interactions.db": [
        "CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, start_time TEXT,"
        " last_activity TEXT, language TEXT, browser TEXT, ip_address TEXT,"
        " analysis_complete INTEGER DEFAULT 0, files_uploaded INTEGER DEFAULT 0)",
        "CREATE TABLE IF NOT EXISTS messages (message_id TEXT PRIMARY KEY, session_id TEXT,"
        " timestamp TEXT, role TEXT, content TEXT)",
    ],
    "users.db": [
        "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT UNIQUE, username TEXT UNIQUE,"
        " password_hash TEXT, created_at TEXT, is_active INTEGER DEFAULT 1, role TEXT)",
    ],
    "survey.db": [
        "CREATE TABLE IF NOT EXISTS survey_sessions (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " session_id TEXT, started_at TEXT)",
        "CREATE TABLE IF NOT EXISTS survey_responses (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " survey_session_id INTEGER, question_id TEXT, answer TEXT, timestamp TEXT)",
    ],
    "prepost_test.db": [
        "CREATE TABLE IF NOT EXISTS prepost_participants (id TEXT PRIMARY KEY, created_at TEXT)",
        "CREATE TABLE IF NOT EXISTS prepost_responses (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " participant_id TEXT, phase TEXT, answer TEXT)",
    ],
}

app = Flask(__name__)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _db(name):
    conn = sqlite3.connect(os.path.join(INSTANCE, name), timeout=10)
    for statement in SCHEMAS[name]:
        conn.execute(statement)
    return conn


@app.get("/ping")
def ping():
    return jsonify(status="ok")


@app.get("/version")
def version():
    return jsonify(version=VERSION, pid=os.getpid())


@app.get("/health")
def health():
    services = {"config": "healthy" if os.environ.get("SECRET_KEY") else "degraded: SECRET_KEY missing"}
    try:
        with _db("interactions.db") as conn:
            conn.execute("SELECT 1")
        services["database"] = "healthy"
    except sqlite3.Error as err:
        services["database"] = f"unhealthy: {err}"
    for marker in (os.path.join(ROOT, "DEGRADED"), os.path.join(INSTANCE, "DEGRADED")):
        if os.path.exists(marker):
            services["release"] = f"degraded: {marker} exists"
    states = [value.split(":")[0] for value in services.values()]
    overall = "unhealthy" if "unhealthy" in states else "degraded" if "degraded" in states else "healthy"
    # Like the real app: 200 whatever the verdict (the defect a deploy must see through).
    return jsonify(overall=overall, services=services, timestamp=_now(), version=VERSION), 200


@app.post("/api/sessions")
def create_session():
    session_id = uuid.uuid4().hex
    with _db("interactions.db") as conn:
        conn.execute("INSERT INTO sessions (session_id, start_time, last_activity, language, browser, ip_address)"
                     " VALUES (?, ?, ?, ?, ?, ?)",
                     (session_id, _now(), _now(), "en", request.user_agent.string, request.remote_addr))
        conn.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
                     (uuid.uuid4().hex, session_id, _now(), "user", request.get_data(as_text=True) or "hello"))
    return jsonify(session_id=session_id), 201


@app.post("/api/users")
def create_user():
    user_id = uuid.uuid4().hex
    with _db("users.db") as conn:
        conn.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, 1, 'user')",
                     (user_id, f"{user_id}@example.org", user_id, "x", _now()))
    return jsonify(id=user_id), 201


@app.post("/api/survey")
def create_survey():
    with _db("survey.db") as conn:
        cursor = conn.execute("INSERT INTO survey_sessions (session_id, started_at) VALUES (?, ?)",
                              (uuid.uuid4().hex, _now()))
        conn.execute("INSERT INTO survey_responses (survey_session_id, question_id, answer, timestamp)"
                     " VALUES (?, 'q1', 'yes', ?)", (cursor.lastrowid, _now()))
    return jsonify(id=cursor.lastrowid), 201


@app.post("/api/prepost")
def create_prepost():
    participant = uuid.uuid4().hex
    with _db("prepost_test.db") as conn:
        conn.execute("INSERT INTO prepost_participants VALUES (?, ?)", (participant, _now()))
        conn.execute("INSERT INTO prepost_responses (participant_id, phase, answer) VALUES (?, 'pre', 'a')",
                     (participant,))
    return jsonify(id=participant), 201


@app.get("/api/stats")
def stats():
    counts = {}
    for name, statements in SCHEMAS.items():
        with _db(name) as conn:
            tables = [s.split("EXISTS ")[1].split(" ")[0] for s in statements]
            counts[name] = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608
    return jsonify(counts)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
