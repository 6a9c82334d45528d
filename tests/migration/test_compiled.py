"""The migration tool's compiled modules against the Python code they stand in for.

* ``_copyrows`` (the loader's reader) encodes the same binary COPY fields and counts the
  same storage class codes as the Python reader (``sqlite3`` + psycopg's row encoder +
  ``source.stats_exprs``), on hypothesis' random SQLite files (test_properties'
  strategies: every declared type, every storage class in every column, NULLs, NUL
  bytes, edge numbers, timestamps, JSON); its timestamp rule accepts exactly what the
  analysis' rule (TS_RE, Python's ISO parser, years 1-9999 in UTC) accepts, at the same
  instant.
* ``_rowhash`` (the verification's source side) gives the same checksums as the Python
  checksum on the same files, and its MD5 is hashlib's.

The end-to-end properties (test_properties.py) run the tool with both modules, and once
more without them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import sqlite3
import struct
import tempfile

from hypothesis import given, settings, strategies as st

import test_properties as props
from chatmrpt_migrate import build, loader, source, verify
from chatmrpt_migrate.source import Source, StreamStats

PG_EPOCH = dt.datetime(2000, 1, 1)


def test_the_compiled_modules_are_built():
    """make setup builds them: without them the suite would prove the Python path only."""
    hint = "build them: make setup (or PYTHONPATH=tools python -m chatmrpt_migrate.build)"
    assert build.compiled_modules() == {"reader": True, "checksum": True}, hint
    assert build.up_to_date(), "older than their sources: " + hint


# ------------------------------------------------------------------------------ timestamps
def python_rule(text: str):
    """The analysis' rule (source._ts_batch): microseconds since 2000-01-01 UTC, or None."""
    parsed = source._ts_batch([text])
    return None if parsed is None else (parsed[0] - PG_EPOCH) // dt.timedelta(microseconds=1)


def compiled_rule(text: str):
    return loader._copyrows.parse_timestamp(text.encode("utf-8", "surrogatepass"))


_d = st.text("0123456789", min_size=1, max_size=3)
_two = st.one_of(st.integers(0, 99).map("{:02d}".format), _d)


@st.composite
def timestamp_like(draw):
    """Mostly well-formed ISO-8601 with fields in and out of range, near misses (other
    separators, lengths, lower-case z, 7 fraction digits), cut or extended at random."""
    year = draw(st.one_of(st.sampled_from(["0000", "0001", "1970", "2000", "2024", "9999"]),
                          st.integers(0, 9999).map("{:04d}".format), _d))
    s = f"{year}-{draw(_two)}-{draw(_two)}"
    if draw(st.integers(0, 5)):
        s += draw(st.sampled_from(["T", " ", "T", "t", "_", "TT"]))
        s += f"{draw(_two)}{draw(st.sampled_from([':', ':', '.']))}{draw(_two)}"
        if draw(st.booleans()):
            s += f":{draw(_two)}"
            if draw(st.booleans()):
                s += "." + draw(st.text("0123456789", min_size=0, max_size=8))
        zone = draw(st.sampled_from(["", "Z", "z", "+hh", "-hh", "+hhmm", "-hh:mm", "+hh:mm",
                                     "+hh:", " Z"]))
        s += zone.replace("hh", draw(_two)).replace("mm", draw(_two))
    cut = draw(st.integers(0, 12))
    if cut == 0:
        s = s[:draw(st.integers(0, len(s)))]
    elif cut == 1:
        s += draw(st.sampled_from(["\n", " ", "0", "٣", "Z"]))
    return s


@settings(max_examples=3000, derandomize=True, database=None, deadline=None)
@given(text=st.one_of(timestamp_like(), timestamp_like(), st.text(max_size=40)))
def test_timestamps_read_as_the_analysis_reads_them(text):
    assert compiled_rule(text) == python_rule(text), text


def test_timestamps_at_the_ends_of_the_range_and_of_the_offsets():
    """Every offset from -24:00 to +24:00 (minutes 00-99, as Python adds them up) on the
    first and last instants Python holds, and 200k random strings of the grammar's
    characters."""
    cases = []
    for base in ("0001-01-01T00:00", "0001-01-01T23:59:59.999999", "9999-12-31T00:00",
                 "9999-12-31T23:59:59.999999", "2024-02-29 12:00"):
        for sign in "+-":
            for hh in range(25):
                for mm in range(0, 100, 3):
                    cases += [f"{base}{sign}{hh:02d}:{mm:02d}", f"{base}{sign}{hh:02d}{mm:02d}"]
                cases.append(f"{base}{sign}{hh:02d}")
    rnd = random.Random(20261204)
    alphabet = "0123456789-:T .Z+z"
    cases += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(8, 32)))
              for _ in range(200_000)]
    wrong = [c for c in cases if compiled_rule(c) != python_rule(c)]
    assert not wrong, wrong[:10]
    assert sum(python_rule(c) is not None for c in cases) > 2000   # many were timestamps


# ------------------------------------------------------------------------------ the row hash
def test_the_row_hash_is_md5():
    rnd = random.Random(7)
    for n in list(range(0, 200)) + [1000, 65_536, 1_000_003]:
        data = rnd.randbytes(n)
        want = int.from_bytes(hashlib.md5(data).digest()[:8], "big", signed=True)
        assert verify._rowhash.md5_first8(data) == want, n


# ------------------------------------------------------------------------------ whole files
def analysed(path: str):
    src = Source(path, os.path.splitext(os.path.basename(path))[0])
    db = source.introspect(src, lambda _m: None)
    source.analyse(db, lambda _m: None)
    return db


def binary_rows(data: bytes) -> list[list[bytes | None]]:
    """The fields of binary COPY rows (no header or trailer)."""
    rows, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from(">h", data, i)
        i += 2
        row = []
        for _ in range(n):
            (size,) = struct.unpack_from(">i", data, i)
            i += 4
            row.append(None if size < 0 else data[i:i + size])
            i += max(size, 0)
        rows.append(row)
    return rows


def compiled_copy(path: str, t):
    chunks: list[bytes] = []
    stats = StreamStats(t)
    loader._compiled_rows(chunks.append, path, t, loader.compiled_kinds(t), None, stats)
    return binary_rows(b"".join(chunks)), stats.result()


def python_copy(path: str, t):
    """The Python reader's fields, put back in the table's column order."""
    names, plan = loader.python_plan(t)
    chunks: list[bytes] = []
    stats = StreamStats(t)
    con = source.open_snapshot(path)
    con.text_factory = bytes
    try:
        loader._python_rows(chunks.append, con, t, plan, None, stats)
    finally:
        con.close()
    order = [names.index(c.name) for c in t.columns]
    rows = [[row[i] for i in order] for row in binary_rows(b"".join(bytes(c) for c in chunks))]
    return rows, stats.result()


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(files=props.sources())
def test_the_compiled_modules_agree_with_python_on_random_files(files):
    with tempfile.TemporaryDirectory() as tmp:
        for path in props.write_files(files, tmp):
            db = analysed(path)
            for t in db.tables:
                if not t.rows:
                    continue
                assert compiled_copy(path, t) == python_copy(path, t), t.name
                rowhash, verify._rowhash = verify._rowhash, None
                try:
                    in_python = verify.sqlite_checksum(db, t)
                finally:
                    verify._rowhash = rowhash
                assert verify.sqlite_checksum(db, t) == in_python, t.name


def test_a_table_planned_on_a_sample_counts_the_late_values(tmp_path):
    """The reader encodes a value of a storage class its kind does not expect (a sampled
    plan) without failing, and counts it: the loader then loads the table again."""
    path = str(tmp_path / "late.db")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INT, flag BOOLEAN, x REAL, s)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                    [(i, i, i % 2, i / 2, str(i)) for i in range(100)]
                    + [(100, "text", 2, "x", 5), (101, 1.5, b"\x00", None, 2.5)])
    con.commit()
    con.close()
    db = analysed(path)
    t = db.tables[0]
    for c, pg_type in zip(t.columns, ["bigint", "bigint", "boolean", "double precision", "text"]):
        c.pg_type, c.conv = pg_type, None           # the plan of the first 100 rows
    rows, (n, per_column, key_nulls) = compiled_copy(path, t)
    assert n == len(rows) == 102 and key_nulls == 0
    assert per_column == [{5: 102}, {1: 2, 5: 98, 3: 1, 2: 1}, {1: 100, 5: 1, 4: 1},
                          {2: 100, 3: 1, 0: 1}, {3: 100, 5: 1, 2: 1}]
