"""Row counts and order-independent content checksums, computed on both sides.

Canonical row text (identical on both sides): the columns in order, joined by ``|``;
each value is ``N`` for NULL, else ``V`` + its canonical form:

* bigint: decimal; numeric: its text; boolean: ``t``/``f``
* double precision: the 8 IEEE-754 bytes, big-endian, as hex (``float8send``): exact
* text: ``<character length>:<text>`` (length prefix makes it unambiguous)
* bytea: hex of the bytes
* timestamptz: microseconds since 1970-01-01 UTC
* jsonb: JSON re-serialised after parsing with sorted keys (jsonb reorders keys), so
  tables with a jsonb column are hashed in Python on the PostgreSQL side too.

Row hash: first 8 bytes of MD5(UTF-8 of the row text) as a signed 64-bit integer; the
table checksum is the exact sum of the row hashes (order independent), plus the count.
PostgreSQL computes it in SQL (``md5``, ``sum(bigint)`` -> numeric); SQLite rows are hashed
in Python from the original values (not from what was sent to PostgreSQL).
"""

from __future__ import annotations

import hashlib
import struct
from concurrent.futures import ThreadPoolExecutor

from .loader import connect
from .source import (EPOCH, Database, Table, json_canon, no_gc, open_snapshot, parse_ts, qi,
                     ts_from_text)

_MICRO = __import__("datetime").timedelta(microseconds=1)
PG_TYPE_NAMES = {"timestamptz": "timestamp with time zone"}


def _mixed_text(v):
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _mixed_bytea(v):
    if isinstance(v, bytes):
        return v
    return _mixed_text(v).encode("utf-8")


def _f8(v):
    return struct.pack(">d", float(v)).hex()


def _ts(v):
    # independent strict parser; values only Python's ISO parser accepts use that one
    d = parse_ts(v)
    if d is None:
        d = ts_from_text(v)
    return str((d - EPOCH) // _MICRO)


def _txt(v):
    return f"{len(v)}:{v}"


def _mtxt(v):
    s = _mixed_text(v)
    return f"{len(s)}:{s}"


def _b(v):
    return "t" if v else "f"


def _utf8hex(v):
    return v.encode("utf-8").hex()


def _mbhex(v):
    return _mixed_bytea(v).hex()


def _bhex(v):
    return v.hex()


def _source_fn(c):
    t = c.pg_type
    if t == "bigint" or t == "numeric":
        return str
    if t == "double precision":
        return _f8
    if t == "boolean":
        return _b
    if t == "timestamptz":
        return _ts
    if t == "jsonb":
        return json_canon
    if t == "text":
        return _mtxt if c.conv == "mixed_text" else _txt
    if t == "bytea":
        return {"utf8": _utf8hex, "mixed_bytea": _mbhex}.get(c.conv, _bhex)
    raise ValueError(t)


def _row_fn(fns):
    env = {f"f{i}": f for i, f in enumerate(fns)}
    parts = [f"('N' if r[{i}] is None else 'V' + f{i}(r[{i}]))" for i in range(len(fns))]
    return eval("lambda r: '|'.join((" + ", ".join(parts) + ",))", env)  # noqa: S307


def _acc(rows_iter, fn):
    md5 = hashlib.md5
    fb = int.from_bytes
    total = 0
    n = 0
    for r in rows_iter:
        total += fb(md5(fn(r).encode("utf-8")).digest()[:8], "big", signed=True)
        n += 1
    return n, total


def sqlite_checksum(db: Database, t: Table) -> tuple[int, int]:
    con = open_snapshot(db.source.snapshot or db.source.path)
    try:
        fn = _row_fn([_source_fn(c) for c in t.columns])
        cur = con.execute(f"SELECT {', '.join(qi(c.name) for c in t.columns)} "
                          f"FROM {qi(t.name)}")
        cur.arraysize = 10000

        def it():
            while True:
                rows = cur.fetchmany()
                if not rows:
                    return
                yield from rows
        return _acc(it(), fn)
    finally:
        con.close()


def _pg_expr(c) -> str:
    q = qi(c.name)
    t = c.pg_type
    if t in ("bigint", "numeric"):
        e = f"{q}::text"
    elif t == "double precision":
        e = f"encode(float8send({q}), 'hex')"
    elif t == "boolean":
        e = f"CASE WHEN {q} THEN 't' ELSE 'f' END"
    elif t == "timestamptz":
        e = f"(extract(epoch FROM {q}) * 1000000)::bigint::text"
    elif t == "text":
        e = f"length({q})::text || ':' || {q}"
    elif t == "bytea":
        e = f"encode({q}, 'hex')"
    else:
        raise ValueError(t)
    return f"coalesce('V' || {e}, 'N')"


def pg_checksum(dsn: str, schema: str, t: Table) -> tuple[int, int]:
    tq = f"{qi(schema)}.{qi(t.pg)}"
    with connect(dsn, autocommit=True) as con:
        if not any(c.pg_type == "jsonb" for c in t.columns):
            row = " || '|' || ".join(_pg_expr(c) for c in t.columns)
            n, s = con.execute(
                f"SELECT count(*), coalesce(sum(('x' || left(md5({row}), 16))"
                f"::bit(64)::bigint), 0)::text FROM {tq}").fetchone()
            return n, int(s)
        exprs, fns = [], []
        for c in t.columns:
            if c.pg_type == "jsonb":
                exprs.append(f"{qi(c.name)}::text")
                fns.append(json_canon)
            else:
                exprs.append(_pg_expr(c))
                fns.append(None)
        env = {f"f{i}": f for i, f in enumerate(fns) if f}
        parts = [f"('N' if r[{i}] is None else 'V' + f{i}(r[{i}]))" if f else f"r[{i}]"
                 for i, f in enumerate(fns)]
        fn = eval("lambda r: '|'.join((" + ", ".join(parts) + ",))", env)  # noqa: S307
        con.autocommit = False
        with con.cursor(name="chk") as cur:
            cur.itersize = 10000
            cur.execute(f"SELECT {', '.join(exprs)} FROM {tq}")
            res = _acc(cur, fn)
            con.rollback()
            return res


def pg_columns(dsn: str, schema: str) -> dict[str, dict[str, str]]:
    with connect(dsn, autocommit=True) as con:
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


def verify(dsn: str, dbs: list[Database], schema_of, jobs: int, log) -> list[dict]:
    """Compare every table; ``schema_of(db)`` names the PostgreSQL schema to check."""
    results = []
    futures = []
    with no_gc(), ThreadPoolExecutor(max(2, jobs + 1)) as ex:
        for db in dbs:
            schema = schema_of(db)
            actual = pg_columns(dsn, schema)
            for t in sorted(db.tables, key=lambda t: -t.rows):
                res = {"schema": db.schema, "table": t.name, "source_rows": t.rows,
                       "target_rows": None, "source_checksum": None, "target_checksum": None,
                       "problems": []}
                results.append(res)
                cols = actual.get(t.pg)
                if cols is None:
                    res["problems"].append(f"table missing in {schema}")
                    continue
                for c in t.columns:
                    want = PG_TYPE_NAMES.get(c.pg_type, c.pg_type)
                    if c.collation:
                        want += f' COLLATE "{c.collation}"'
                    if cols.get(c.name) != want:
                        res["problems"].append(
                            f"column {c.name}: type {cols.get(c.name)} != {want}")
                if res["problems"]:
                    continue
                futures.append((res, ex.submit(sqlite_checksum, db, t),
                                ex.submit(pg_checksum, dsn, schema, t)))
        for res, fs, fp in futures:
            try:
                n1, s1 = fs.result()
                res["source_rows"], res["source_checksum"] = n1, f"{s1:x}"
            except Exception as e:  # noqa: BLE001
                res["problems"].append(f"source checksum failed: {e}")
            try:
                n2, s2 = fp.result()
                res["target_rows"], res["target_checksum"] = n2, f"{s2:x}"
            except Exception as e:  # noqa: BLE001
                res["problems"].append(f"target checksum failed: {e.__class__.__name__}: {e}")
            if not res["problems"]:
                if res["source_rows"] != res["target_rows"]:
                    res["problems"].append("row count differs")
                elif res["source_checksum"] != res["target_checksum"]:
                    res["problems"].append("content checksum differs")
    for r in results:
        r["ok"] = not r["problems"]
    return results
