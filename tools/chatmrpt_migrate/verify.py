"""Verification: row counts and order-independent content checksums on both sides; when
they differ, the rows and columns that differ.

A row's canonical bytes are its fields joined by NUL (``\\x00``); a NULL is ``\\xff``;
a value is:

* text and json: its UTF-8 bytes (json keeps its text exactly);
* bigint, numeric: decimal; boolean: ``t``/``f``; timestamptz: microseconds since
  1970-01-01 UTC, in decimal;
* double precision: the 8 IEEE-754 bytes, big-endian, in hex (``float8send``): exact;
* bytea: hex.

No field contains a NUL (PostgreSQL text cannot hold one; the rest is ASCII) and none a
``\\xff`` (never in UTF-8), so different rows never give the same bytes.  A row's hash is
the first 8 bytes of their MD5 as a signed 64-bit integer, and a table's checksum is the
row count and the exact sum of its row hashes (order independent).

The source side is computed from the original SQLite values (text as UTF-8 bytes) read
again from the snapshot, by these functions or the compiled module ``_rowhash`` (the same
fields; not the loader's reading or conversions) (:func:`sqlite_checksum`).
The PostgreSQL side is computed by the server in SQL (:func:`pg_checksum`) from the stored
values.  When the checksums differ, :func:`differences` compares the tables row by row (by
primary key, else as multisets of rows) and names the first rows, columns and values that
differ.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import functools
import hashlib
import itertools
import operator
import re
import struct
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from .source import (EPOCH, UTC, Database, Source, Table, _fromiso, no_gc, open_snapshot, qi,
                     ro_uri)

try:    # the compiled source checksum (python -m chatmrpt_migrate.build)
    from . import _rowhash
except ImportError:
    _rowhash = None

_MICRO = _dt.timedelta(microseconds=1)
PG_TYPE_NAMES = {"timestamptz": "timestamp with time zone"}
MISMATCHES_SHOWN = 5
SECRET_RE = re.compile(r"pass|secret|token|api_?key|hash|salt|otp|credential", re.I)
_pack_f8 = struct.Struct(">d").pack


# ---------------------------------------------------------------------------- source side
# Column functions: a batch's column of original values -> its canonical fields.  Where
# the batch has no NULL they are C-level maps (no Python code per value).
NULL = b"\xff"
SEP = b"\x00"
_decimal = b"%d".__mod__
# (another value only while a sampled plan is loaded: that plan is then replaced)
_bool_field = collections.defaultdict(lambda: b"?", {0: b"f", 1: b"t", None: NULL}).__getitem__
_hex = operator.methodcaller("hex")
_encode = operator.methodcaller("encode")


def _nulls(fn, col):
    """``fn`` on the values of a column that has NULLs (kept as NULL)."""
    values = [v for v in col if v is not None]
    it = iter(fn(values))
    return [NULL if v is None else next(it) for v in col]


def _mixed(v):
    # a column of several storage classes: integers in decimal, reals as repr, text as is
    if type(v) is bytes:
        return v
    return (repr(v) if isinstance(v, float) else str(v)).encode()


def _c_text(col):
    return [NULL if v is None else v for v in col] if None in col else col


def _c_mixed_text(col):
    return [NULL if v is None else _mixed(v) for v in col]


def _c_int(col):
    return [NULL if v is None else b"%d" % v for v in col] if None in col else list(map(_decimal, col))


def _c_bool(col):
    return list(map(_bool_field, col))


def _floats(values):
    return map(_encode, map(_hex, map(_pack_f8, map(float, values))))


def _c_float(col):
    return _nulls(_floats, col) if None in col else list(_floats(col))


def _c_hex(col, mixed=False):
    return [NULL if v is None else (_mixed(v) if mixed else v).hex().encode() for v in col]


_tzinfo = operator.attrgetter("tzinfo")


def _instants(values):
    # Python's ISO parser on the source text (not the loader's batch conversion; the
    # analysis also checked every value longer than 26 characters with the strict
    # ISO_RE, and the tests compare with an independent parser)
    parsed = list(map(_fromiso, map(bytes.decode, values)))
    if any(map(_tzinfo, parsed)):
        parsed = [d if d.tzinfo is None else d.astimezone(UTC).replace(tzinfo=None) for d in parsed]
    micros = map(operator.floordiv, map(operator.sub, parsed, itertools.repeat(EPOCH)),
                 itertools.repeat(_MICRO))
    return list(map(_decimal, micros))


def _c_timestamp(col):
    return _nulls(_instants, col) if None in col else _instants(col)


def column_fn(c):
    """The column's function: a batch's values -> their canonical fields."""
    t = c.pg_type
    if t in ("text", "json"):
        return _c_mixed_text if c.conv == "mixed_text" else _c_text
    if t == "bytea":
        return functools.partial(_c_hex, mixed=c.conv == "mixed_bytea")
    return {"bigint": _c_int, "numeric": _c_int, "boolean": _c_bool,
            "double precision": _c_float, "timestamptz": _c_timestamp}[t]


def row_fields(t: Table):
    """A function of a batch's columns -> the columns of canonical fields."""
    fns = [column_fn(c) for c in t.columns]
    return lambda columns: [f(col) for f, col in zip(fns, columns)]


_digest = operator.methodcaller("digest")
_first8 = operator.itemgetter(slice(0, 8))
_signed = functools.partial(int.from_bytes, byteorder="big", signed=True)
_join = SEP.join


def row_hashes(fields: list[list[bytes]]):
    """Row hashes (signed 64-bit) of a batch given as columns of canonical fields."""
    return map(_signed, map(_first8, map(_digest, map(hashlib.md5, map(_join, zip(*fields))))))


def source_hasher(t: Table):
    """A function of a batch's columns (original SQLite values, text as bytes) that adds
    the batch to the table's checksum; ``.result()`` gives (rows, sum)."""
    fields = row_fields(t)
    state = [0, 0]

    def add(columns):
        if columns:
            state[0] += len(columns[0])
            state[1] += sum(row_hashes(fields(columns)))
    add.result = lambda: (state[0], state[1])
    return add


def _source_rows(db: Database, t: Table, extra: str = ""):
    con = open_snapshot(db.source.snapshot or db.source.path)
    con.text_factory = bytes
    cols = ", ".join(qi(c.name) for c in t.columns)
    cur = con.execute(f"SELECT {cols}{extra} FROM {qi(t.name)}")
    try:
        while True:
            rows = cur.fetchmany(10000)
            if not rows:
                return
            yield rows
    finally:
        con.close()


def _python_checksum(db: Database, t: Table) -> tuple[int, int]:
    """The source's checksum with every field made by :func:`column_fn` (Python)."""
    add = source_hasher(t)
    with no_gc():
        for rows in _source_rows(db, t):
            add(list(zip(*rows)))
    return add.result()


def _sql_field(c) -> str | None:
    """The column's canonical field as a SQLite expression, where SQLite's own (C)
    conversion of the stored value gives the same bytes as :func:`column_fn`: text and
    json (the UTF-8 text itself), bigint (SQLite renders an INTEGER in decimal), boolean,
    bytea of BLOB or TEXT (``hex``).  None for the columns whose fields Python makes:
    double precision (SQLite 3.40 has no exact rendering of a REAL), timestamptz (parsed
    with Python's ISO parser) and columns of mixed storage classes (reals as ``repr``)."""
    q = qi(c.name)
    if c.conv in ("mixed_text", "mixed_bytea", "float"):
        return None
    t = c.pg_type
    if t in ("text", "json", "bigint", "numeric"):
        e = q
    elif t == "boolean":
        e = f"CASE WHEN {q} IS NULL THEN NULL WHEN {q} = 1 THEN 't' WHEN {q} = 0 THEN 'f' ELSE '?' END"
    elif t == "bytea":
        e = f"iif({q} IS NULL, NULL, lower(hex({q})))"
    else:
        return None
    return f"coalesce({e}, x'ff')"


_SQL_SEP = " || x'00' || "


def _sql_plan(t: Table):
    """(SELECT expressions, per expression None (SQLite made the fields: runs of
    consecutive columns joined by NUL) or the column's Python function)."""
    exprs, fns, run = [], [], []

    def end_run():
        if run:    # CAST: one column alone would come back as its own value (an int)
            exprs.append(f"CAST({_SQL_SEP.join(run)} AS TEXT)")
            fns.append(None)
            run.clear()
    for c in t.columns:
        f = _sql_field(c)
        if f is not None:
            run.append(f)
            continue
        end_run()
        exprs.append(qi(c.name))
        fns.append(column_fn(c))
    end_run()
    return exprs, fns


def _field_kind(c) -> str:
    """The compiled checksum's kind of a column (``_rowhash.c``): the fields of
    :func:`column_fn`, but for timestamps, which Python makes (``p``)."""
    t = c.pg_type
    if t in ("text", "json"):
        return "m" if c.conv == "mixed_text" else "x"
    if t == "bytea":
        return "H" if c.conv == "mixed_bytea" else "h"
    return {"bigint": "d", "numeric": "d", "boolean": "o", "double precision": "f",
            "timestamptz": "p"}[t]


def sqlite_checksum(db: Database, t: Table) -> tuple[int, int]:
    """The source's checksum: the same canonical rows as :func:`source_hasher`.  With the
    compiled module (``_rowhash``), its C code makes every field but the timestamps
    (:func:`column_fn`) and hashes the rows.  Without it, the fields SQLite can make
    exactly are made by SQLite in C (:func:`_sql_field`), each run of such columns
    fetched as one value per row, and the others by :func:`column_fn` (a UTF-8 database
    only; else everything by Python)."""
    path = db.source.snapshot or db.source.path
    con = open_snapshot(path)
    try:
        if con.execute("PRAGMA encoding").fetchone()[0].upper() != "UTF-8":
            return _python_checksum(db, t)
        if _rowhash is not None:
            kinds = "".join(map(_field_kind, t.columns))
            with no_gc():
                return _rowhash.checksum(
                    ro_uri(path),
                    f"SELECT {', '.join(qi(c.name) for c in t.columns)} FROM {qi(t.name)}",
                    kinds.encode(), [column_fn(c) if k == "p" else None
                                     for c, k in zip(t.columns, kinds)], 10000)
        con.text_factory = bytes
        exprs, fns = _sql_plan(t)
        cur = con.execute(f"SELECT {', '.join(exprs)} FROM {qi(t.name)}")
        n = total = 0
        with no_gc():
            while True:
                rows = cur.fetchmany(10000)
                if not rows:
                    break
                n += len(rows)
                if len(fns) == 1 and fns[0] is None:
                    joined = map(operator.itemgetter(0), rows)
                else:   # only Python's columns taken out of the rows (no transposition)
                    fields = [map(operator.itemgetter(i), rows) if f is None
                              else f(list(map(operator.itemgetter(i), rows)))
                              for i, f in enumerate(fns)]
                    joined = map(_join, zip(*fields))
                total += sum(map(_signed, map(_first8, map(_digest, map(hashlib.md5, joined)))))
        return n, total
    finally:
        con.close()


# ---------------------------------------------------------------------------- PostgreSQL side
def _pg_field(c) -> str:
    """The column's canonical field in SQL (bytea): the same bytes as :func:`column_fn`.
    ``textsend`` gives a text's bytes as stored: UTF-8 (the target must be a UTF-8
    database, see :func:`pg_checksum`)."""
    q = qi(c.name)
    t = c.pg_type
    if t in ("text", "json", "bigint", "numeric"):
        e = f"{q}::text"
    elif t == "double precision":
        e = f"encode(float8send({q}), 'hex')"
    elif t == "boolean":
        e = f"CASE WHEN {q} THEN 't' WHEN NOT {q} THEN 'f' END"    # NULL stays NULL
    elif t == "timestamptz":
        e = f"(extract(epoch FROM {q}) * 1000000)::bigint::text"
    elif t == "bytea":
        e = f"encode({q}, 'hex')"
    else:
        raise ValueError(t)
    return f"coalesce(textsend({e}), '\\xff'::bytea)"


def _pg_row(t: Table) -> str:
    return " || '\\x00'::bytea || ".join(_pg_field(c) for c in t.columns)


def pg_checksum(con, schema: str, t: Table) -> tuple[int, int]:
    n, s = con.execute(
        f"SELECT count(*), coalesce(sum(('x' || left(md5({_pg_row(t)}), 16))"
        f"::bit(64)::bigint), 0)::text FROM {qi(schema)}.{qi(t.pg)}").fetchone()
    return n, int(s)


def pg_columns(con, schema: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for tbl, col, typ in con.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "|| CASE WHEN a.attcollation = 'pg_catalog.\"C\"'::regcollation "
            "THEN ' COLLATE \"C\"' ELSE '' END "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY c.relname, a.attnum", (schema,)):
        out.setdefault(tbl, {})[col] = typ
    return out


# ---------------------------------------------------------------------------- differences
def _text_of(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else repr(value)


def _shown(column: str | None, value, at: int = 0) -> str | None:
    """A value as the report shows it: secret-looking columns masked, long ones cut to
    a window that starts near ``at`` (where the two sides start to differ)."""
    if value is None:
        return None
    if column and SECRET_RE.search(column):
        return "***"
    text = _text_of(value)
    if len(text) <= 120:
        return text
    start = max(0, min(at - 40, len(text) - 110))
    return ("..." if start else "") + text[start:start + 110] + ("..." if start + 110 < len(text) else "")


def _shown_pair(column: str, source, target) -> tuple:
    a, b = _text_of(source), _text_of(target)
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return _shown(column, source, at), _shown(column, target, at)


def _key_columns(t: Table) -> list[int]:
    names = [c.name for c in t.columns]
    return [names.index(p) for p in t.pk] if t.pk and not t.pk_skipped else []


def differences(dsn: str, schema: str, db: Database, t: Table,
                limit: int = MISMATCHES_SHOWN) -> tuple[int, list[dict]]:
    """(number of rows that differ, the first ``limit`` of them, each with its key, the
    column that differs and both values).  Rows are matched by primary key; a table
    without one is compared as a multiset of rows, and its rows are named by rowid."""
    from .loader import connect
    names = [c.name for c in t.columns]
    keyed = _key_columns(t)
    fields = row_fields(t)

    def canonical(rows):
        """Per row: its canonical field per column (as _pg_field gives it)."""
        return list(map(list, zip(*fields(list(zip(*rows)))))) if rows else []

    def key_of(cols):
        return _join([cols[i] for i in keyed])

    # pass 1: row hashes by key (or a multiset of row hashes)
    source: dict = {}
    bag: collections.Counter = collections.Counter()
    for rows in _source_rows(db, t):
        for cols in canonical(rows):
            h = hashlib.md5(_join(cols)).hexdigest()
            if keyed:
                source[key_of(cols)] = h
            else:
                bag[h] += 1
    key_sql = " || '\\x00'::bytea || ".join(_pg_field(t.columns[i]) for i in keyed) or "''::bytea"
    tq = f"{qi(schema)}.{qi(t.pg)}"
    target: dict = {}
    with connect(dsn) as con, con.cursor(name="differences") as cur:
        cur.itersize = 10000
        cur.execute(f"SELECT {key_sql}, md5({_pg_row(t)}) FROM {tq}")
        for key, h in cur:
            if keyed:
                target[bytes(key)] = h
            else:
                bag[h] -= 1
    if keyed:
        missing = [k for k in source if k not in target]
        extra = [k for k in target if k not in source]
        changed = [k for k in source if k in target and source[k] != target[k]]
        count = len(missing) + len(extra) + len(changed)
        order = (changed + missing + extra)[:limit]
    else:
        missing_h = {h: n for h, n in bag.items() if n > 0}
        extra_h = {h: -n for h, n in bag.items() if n < 0}
        count = max(sum(missing_h.values()), sum(extra_h.values()))

    # pass 2: the first few rows themselves, on both sides
    src_rows: dict = {}
    for rows in _source_rows(db, t, extra=", rowid" if not keyed and t.rowid else ""):
        for row, cols in zip(rows, canonical([r[:len(names)] for r in rows])):
            if keyed:
                k = key_of(cols)
                if k in order:
                    src_rows[k] = (row, cols)
            else:
                h = hashlib.md5(_join(cols)).hexdigest()
                if missing_h.get(h) and len(src_rows) < limit:
                    missing_h[h] -= 1
                    src_rows[len(src_rows)] = (row, cols)
    tgt_rows: dict = {}
    shown = ", ".join(f"{qi(n)}::text" for n in names)
    each = ", ".join(_pg_field(c) for c in t.columns)
    with connect(dsn) as con, con.cursor(name="rows") as cur:
        cur.itersize = 10000
        cur.execute(f"SELECT {key_sql}, md5({_pg_row(t)}), {shown}, {each} "
                    f"FROM {tq}")
        n = len(names)
        for r in cur:
            k, h, values, cols = bytes(r[0]), r[1], r[2:2 + n], [bytes(x) for x in r[2 + n:]]
            if keyed and k in order:
                tgt_rows[k] = (values, cols)
            elif not keyed and extra_h.get(h) and len(tgt_rows) < limit:
                extra_h[h] -= 1
                tgt_rows[len(tgt_rows)] = (values, cols)

    def shown_key(row):
        return {names[i]: _shown(names[i], row[i]) for i in keyed}

    out: list[dict] = []
    pairs = []      # (key, source row, source canonical, target row, target canonical)
    if keyed:
        for k in order:
            s, g = src_rows.get(k), tgt_rows.get(k)
            pairs.append((shown_key(s[0] if s else g[0]), *(s or (None, None)), *(g or (None, None))))
    else:
        unpaired = list(tgt_rows.values())
        for row, cols in src_rows.values():
            # the target row that differs from it in the fewest columns
            best = min(unpaired, key=lambda g: sum(a != b for a, b in zip(cols, g[1])), default=None)
            if best is not None:
                unpaired.remove(best)
            pairs.append(({"rowid": row[len(names)]} if t.rowid else {}, row, cols,
                          *(best or (None, None))))
        pairs += [({}, None, None, values, cols) for values, cols in unpaired]
    for key, srow, scols, trow, tcols in pairs:
        if srow is not None and trow is not None:
            for i, name in enumerate(names):
                if scols[i] != tcols[i]:
                    shown_s, shown_t = _shown_pair(name, srow[i], trow[i])
                    out.append({"key": key, "column": name, "problem": "value differs",
                                "source": shown_s, "target": shown_t})
        elif srow is not None:
            out.append({"key": key, "column": None, "problem": "row missing in target",
                        "source": _shown(None, _row_text(names, srow)), "target": None})
        else:
            out.append({"key": key, "column": None, "problem": "row not in the source",
                        "source": None, "target": _shown(None, _row_text(names, trow))})
    return count, out[:limit]


def _row_text(names, row) -> str:
    return ", ".join(f"{n}={_shown(n, v)}" for n, v in zip(names, row))


def describe(m: dict) -> str:
    key = ", ".join(f"{k}={v!r}" for k, v in m["key"].items()) or "no key"
    if m["column"] is None:
        return f"({key}) {m['problem']}: {m['source'] or m['target']}"
    def show(v):
        return "NULL" if v is None else repr(v)
    return f"({key}) column {m['column']}: source {show(m['source'])} != target {show(m['target'])}"


# ---------------------------------------------------------------------------- the verdict
def _source_checksum(path: str, t: Table) -> tuple[int, int]:
    """:func:`sqlite_checksum` in a worker process (arguments that pickle)."""
    return sqlite_checksum(Database(Source(path, ""), []), t)


def verify(dsn: str, dbs: list[Database], schema_of, jobs: int, log) -> list[dict]:
    """Compare every table; ``schema_of(db)`` names the PostgreSQL schema to check.

    Biggest tables first; the server side in ``jobs`` sessions (one per thread, kept for
    its next table), the source side by reading the source (snapshot) again, in ``jobs``
    worker processes (the hashing of two tables must not share one GIL)."""
    from .loader import Sessions, connect
    results = []
    todo = []
    # closed before the source checksums' processes fork (no inherited connection)
    with connect(dsn, autocommit=True) as con:
        actual_columns = {db.schema: pg_columns(con, schema_of(db)) for db in dbs}
    for db in dbs:
        schema = schema_of(db)
        actual = actual_columns[db.schema]
        for t in sorted(db.tables, key=lambda t: -t.rows):
            res = {"schema": db.schema, "table": t.name, "source_rows": t.rows,
                   "target_rows": None, "source_checksum": None, "target_checksum": None,
                   "problems": [], "mismatches": []}
            results.append(res)
            cols = actual.get(t.pg)
            if cols is None:
                res["problems"].append(f"table missing in {schema}")
                continue
            for c in t.columns:
                want = PG_TYPE_NAMES.get(c.pg_type, c.pg_type)
                if c.collation:
                    want += f' COLLATE "{c.collation}"'
                # PostgreSQL's json input takes some JSON that Python's json.loads
                # refuses (nesting deeper than its recursion limit): such a column is
                # json after a migration and text in verify's plan; both hold the
                # same text, so the checksums still compare it exactly
                if cols.get(c.name) == "json" and c.reason.startswith("JSON-like"):
                    continue
                if cols.get(c.name) != want:
                    res["problems"].append(
                        f"column {c.name}: type {cols.get(c.name)} != {want}")
            if not res["problems"]:
                todo.append((res, db, schema, t))
    # biggest first (rows x columns), over all databases
    todo.sort(key=lambda x: -(x[3].rows * max(1, len(x[3].columns))))
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    futures = []
    with no_gc(), contextlib.ExitStack() as stack:
        # processes forked at the first submit, before any thread of ``ex`` runs
        px = stack.enter_context(ProcessPoolExecutor(max(1, jobs), mp_context=ctx))
        fss = [px.submit(_source_checksum, db.source.snapshot or db.source.path, t)
               for _res, db, _schema, t in todo]
        sessions = stack.enter_context(contextlib.closing(Sessions(dsn)))
        ex = stack.enter_context(ThreadPoolExecutor(max(1, jobs)))
        for (res, db, schema, t), fs in zip(todo, fss):
            futures.append((res, db, schema, t, fs,
                            ex.submit(lambda s=schema, t=t: pg_checksum(sessions.get(), s, t))))
        for res, db, schema, t, fs, fp in futures:
            try:
                n1, s1 = fs.result()
                res["source_rows"], res["source_checksum"] = n1, f"{s1:x}"
            except Exception as e:  # noqa: BLE001
                res["problems"].append(f"source checksum failed: {e.__class__.__name__}: {e}")
            try:
                n2, s2 = fp.result()
                res["target_rows"], res["target_checksum"] = n2, f"{s2:x}"
            except Exception as e:  # noqa: BLE001
                res["problems"].append(f"target checksum failed: {e.__class__.__name__}: {e}")
            if res["problems"] or (res["source_rows"], res["source_checksum"]) == (
                    res["target_rows"], res["target_checksum"]):
                continue
            count, shown = differences(dsn, schema, db, t)
            res["mismatches"] = shown
            res["problems"].append(
                f"{count} row(s) differ (source {res['source_rows']} rows, target "
                f"{res['target_rows']}); first {len(shown)} below")
    for r in results:
        r["ok"] = not r["problems"]
    return results
