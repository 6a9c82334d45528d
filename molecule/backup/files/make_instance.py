"""Fake ChatMRPT instance/ tree on the molecule source host, laid out like the app role's.

/srv/chatmrpt/ChatMRPT -> chatmrpt_releases/r1, whose instance and .env are links into
chatmrpt_shared/. Six SQLite databases (one without a .db name, one with rows only in its
WAL file, as a running app leaves it), upload files, a .db file that is not SQLite, and a
.env with secret values the backup must never upload.
"""

import os
import random
import sqlite3
import subprocess

HOME = "/srv/chatmrpt"
SHARED = f"{HOME}/chatmrpt_shared"
INSTANCE = f"{SHARED}/instance"
RELEASE = f"{HOME}/chatmrpt_releases/r1"


def database(path, statements, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(statements)
    for sql, values in rows:
        conn.executemany(sql, values)
    conn.commit()
    conn.close()


for directory in (INSTANCE, RELEASE, f"{INSTANCE}/uploads/sess-a", f"{INSTANCE}/uploads/sess-b",
                  f"{INSTANCE}/memory", f"{INSTANCE}/exports", f"{INSTANCE}/logs", f"{INSTANCE}/reports",
                  f"{INSTANCE}/conversation_history", f"{INSTANCE}/flask_session"):
    os.makedirs(directory, exist_ok=True)

database(f"{INSTANCE}/users.db",
         "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT UNIQUE, username TEXT UNIQUE, password_hash TEXT,"
         " is_active INTEGER, role TEXT); CREATE TABLE user_sessions (token TEXT PRIMARY KEY, user_id TEXT, expires TEXT);",
         [("INSERT INTO users VALUES (?, ?, ?, ?, 1, 'analyst')",
           [(f"u{i}", f"user{i}@example.org", f"user{i}", f"pbkdf2:sha256:{i}") for i in range(3)])])
database(f"{INSTANCE}/survey.db",
         "CREATE TABLE survey_sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT);"
         " CREATE TABLE survey_questions (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT);"
         " CREATE TABLE survey_responses (id INTEGER PRIMARY KEY AUTOINCREMENT, question_id INTEGER, answer TEXT);"
         " CREATE INDEX idx_responses ON survey_responses (question_id);",
         [("INSERT INTO survey_questions (text) VALUES (?)", [(f"question {i}",) for i in range(5)]),
          ("INSERT INTO survey_responses (question_id, answer) VALUES (?, ?)", [(i % 5, f"answer {i}") for i in range(20)])])
database(f"{INSTANCE}/prepost_test.db",
         "CREATE TABLE prepost_participants (id TEXT PRIMARY KEY); CREATE TABLE prepost_sessions (id TEXT, participant TEXT);"
         " CREATE TABLE prepost_responses (session TEXT, question TEXT, answer TEXT);",
         [("INSERT INTO prepost_participants VALUES (?)", [(f"p{i}",) for i in range(4)]),
          ("INSERT INTO prepost_responses VALUES (?, ?, ?)", [(f"s{i}", "q", str(i)) for i in range(8)])])
database(f"{INSTANCE}/uploads/sess-a/tpr_precomputed.db",
         "CREATE TABLE tpr_results (state TEXT, lga TEXT, ward TEXT, tpr REAL, UNIQUE (state, lga, ward));"
         " CREATE TABLE computation_status (session TEXT, step TEXT, status TEXT, PRIMARY KEY (session, step));",
         [("INSERT INTO tpr_results VALUES ('Kano', 'Nassarawa', ?, ?)", [(f"ward {i}", i / 10) for i in range(30)])])
database(f"{INSTANCE}/memory/conversation_cache.sqlite",
         "CREATE TABLE memory (session_id TEXT, content TEXT);",
         [("INSERT INTO memory VALUES (?, ?)", [("sess-a", "remember the ward list")])])

with open(f"{INSTANCE}/uploads/sess-a/data.csv", "w") as handle:
    handle.write("ward,tpr\n" + "".join(f"ward {i},{i / 10}\n" for i in range(200)))
with open(f"{INSTANCE}/uploads/sess-b/shapes.zip", "wb") as handle:
    handle.write(random.Random(7).randbytes(200_000))
with open(f"{INSTANCE}/exports/notes.db", "w") as handle:
    handle.write("not a database, despite its name\n")
with open(f"{INSTANCE}/reports/risk_ranking_sess-a.html", "w") as handle:
    handle.write("<h1>Ward risk ranking</h1>\n")
with open(f"{INSTANCE}/conversation_history/sess-a.json", "w") as handle:
    handle.write('[{"role": "user", "content": "rank the wards"}]\n')
with open(f"{INSTANCE}/flask_session/2029f1c7a8d2", "w") as handle:
    handle.write("a login session: never in a backup\n")
with open(f"{INSTANCE}/logs/gunicorn-error.log", "w") as handle:
    handle.write("started\n")

with open(f"{SHARED}/.env", "w") as handle:
    handle.write(
        "FLASK_ENV=production\n"
        "LOG_LEVEL=INFO\n"
        "SECRET_KEY=\"molecule-secret-key-4f1c9a\"\n"
        "OPENAI_API_KEY=sk-molecule-openai-77ab12\n"  # pragma: allowlist secret
        "export ADMIN_KEY='molecule-admin-key-9e3d'\n"
        "REDIS_HOST=redis.internal\n"
        "REDIS_PASSWORD=molecule-redis-pass-55c0\n"  # pragma: allowlist secret
        "DATABASE_URL=postgresql://chatmrpt:molecule-db-pass-31aa@db.internal/chatmrpt\n"  # pragma: allowlist secret
    )
os.chmod(f"{SHARED}/.env", 0o600)
for name in ("instance", ".env"):
    if not os.path.islink(f"{RELEASE}/{name}"):
        os.symlink(f"{SHARED}/{name}", f"{RELEASE}/{name}")
if not os.path.islink(f"{HOME}/ChatMRPT"):
    os.symlink(RELEASE, f"{HOME}/ChatMRPT")
subprocess.run(["chown", "-R", "chatmrpt:chatmrpt", SHARED, f"{HOME}/chatmrpt_releases"], check=True)
subprocess.run(["chown", "-h", "chatmrpt:chatmrpt", f"{HOME}/ChatMRPT"], check=True)

# interactions.db last, as chatmrpt: WAL mode, 50 checkpointed messages and 25 that live only
# in the -wal file (the process dies without the checkpoint a clean close would do).
WRITER = f"""
import os, sqlite3
conn = sqlite3.connect({INSTANCE + '/interactions.db'!r})
conn.execute("PRAGMA journal_mode=WAL")
conn.executescript("CREATE TABLE sessions (session_id TEXT PRIMARY KEY, start_time TEXT, analysis_complete INTEGER);"
                   "CREATE TABLE messages (id TEXT PRIMARY KEY, session_id TEXT, role TEXT, content TEXT, timestamp TEXT);")
conn.executemany("INSERT INTO sessions VALUES (?, '2025-07-28T02:00:00', 0)", [(f"s{{i}}",) for i in range(10)])
conn.executemany("INSERT INTO messages VALUES (?, 's1', 'user', ?, '2025-07-28T02:00:00')", [(f"m{{i}}", f"hello {{i}}") for i in range(50)])
conn.commit()
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.executemany("INSERT INTO messages VALUES (?, 's2', 'assistant', ?, '2025-07-28T02:01:00')", [(f"w{{i}}", f"in wal {{i}}") for i in range(25)])
conn.commit()
os._exit(0)
"""
subprocess.run(["runuser", "-u", "chatmrpt", "--", "python3", "-c", WRITER], check=True)
