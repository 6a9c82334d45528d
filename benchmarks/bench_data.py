"""Generate a SQLite database of ChatMRPT's interactions.db shape for benchmarks.

``generate(path, rows)`` writes about ``rows`` rows in total: 79 % messages of about
600 characters (with newlines, tabs, quotes, backslashes and some non-ASCII text),
16 % sessions, 4 % analysis_events (JSON details), 1 % file_uploads.  The default
1 260 000 rows give 1 000 000 messages, like the lab-notes 957 MB case.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3

SCHEMA = """
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    start_time TEXT,
    last_activity TEXT,
    user_language TEXT,
    browser_info TEXT,
    ip_address TEXT,
    analysis_complete BOOLEAN DEFAULT 0,
    files_uploaded BOOLEAN DEFAULT 0
);
CREATE TABLE messages (
    message_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT REFERENCES sessions(session_id),
    timestamp TEXT,
    sender TEXT,
    content TEXT,
    intent TEXT,
    tokens INTEGER,
    latency REAL
);
CREATE INDEX idx_messages_session ON messages(session_id);
CREATE TABLE analysis_events (
    event_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id),
    timestamp TEXT,
    event_type TEXT,
    details TEXT,
    success BOOLEAN
);
CREATE INDEX idx_events_session ON analysis_events(session_id);
CREATE TABLE file_uploads (
    upload_id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(session_id),
    timestamp TEXT,
    file_name TEXT,
    file_type TEXT,
    file_size INTEGER,
    upload_success BOOLEAN
);
"""

WORDS = ("malaria ward risk ranking TPR vulnerability index rainfall elevation NDVI "
         "population settlement urban analysis composite score PCA map upload shapefile "
         "Kano Ibadan Ilorin Zaria test positivity rate children under five distance "
         "water bodies housing quality prioritisation intervention bed nets IRS "
         "évaluation données paludisme 疟疾 quartier").split()


def _text_pool(rng: random.Random, size: int = 400_000) -> str:
    parts = []
    n = 0
    while n < size:
        w = rng.choice(WORDS)
        r = rng.random()
        if r < 0.02:
            w += "\n"
        elif r < 0.025:
            w += "\t"
        elif r < 0.03:
            w = '"' + w + '"'
        elif r < 0.032:
            w = w + "\\"
        parts.append(w)
        n += len(w) + 1
    return " ".join(parts)


def split_rows(rows: int) -> dict[str, int]:
    msgs = max(1, rows * 1_000_000 // 1_260_000)
    sess = max(1, rows * 200_000 // 1_260_000)
    ev = max(1, rows * 50_000 // 1_260_000)
    up = max(1, rows - msgs - sess - ev)
    return {"sessions": sess, "messages": msgs, "analysis_events": ev, "file_uploads": up}


def generate(path: str, rows: int = 1_260_000, seed: int = 42) -> dict[str, int]:
    if os.path.exists(path):
        os.unlink(path)
    rng = random.Random(seed)
    pool = _text_pool(rng)
    plen = len(pool) - 700
    counts = split_rows(rows)
    con = sqlite3.connect(path)
    con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
    ns = counts["sessions"]
    sids = [f"{i:08x}-{rng.getrandbits(64):016x}" for i in range(ns)]

    def ts(i: int) -> str:
        return "2025-%02d-%02dT%02d:%02d:%02d.%06d" % (1 + i % 12, 1 + i % 28, i % 24,
                                                       i % 60, (i * 7) % 60, i % 1000000)

    con.executemany(
        "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?)",
        ((s, ts(i), ts(i + 5), rng.choice(("en", "fr", "ha", "yo")),
          "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0", f"10.{i % 256}.{i % 97}.{i % 13}",
          i % 2, (i // 2) % 2) for i, s in enumerate(sids)))
    con.executemany(
        "INSERT INTO messages (session_id, timestamp, sender, content, intent, tokens, latency)"
        " VALUES (?,?,?,?,?,?,?)",
        ((sids[i % ns], ts(i), "user" if i % 2 else "assistant",
          pool[(o := rng.randrange(plen)):o + 550 + (i % 100)],
          rng.choice(("analysis", "question", "upload", None)), 100 + i % 900,
          (i % 1000) / 7.0) for i in range(counts["messages"])))
    con.executemany(
        "INSERT INTO analysis_events VALUES (?,?,?,?,?,?)",
        ((f"ev-{i}", sids[i % ns], ts(i), rng.choice(("start", "finish", "error")),
          json.dumps({"step": i % 9, "vars": ["rain", "ndvi"], "ok": True}), i % 2)
         for i in range(counts["analysis_events"])))
    con.executemany(
        "INSERT INTO file_uploads VALUES (?,?,?,?,?,?,?)",
        ((f"up-{i}", sids[i % ns], ts(i), f"file_{i}.csv", "csv", 1000 + i, 1)
         for i in range(counts["file_uploads"])))
    con.commit()
    con.close()
    return counts
