"""An independent oracle for tools/chatmrpt_migrate: is a migrated PostgreSQL schema equal
to its SQLite source under the type mapping of tools/chatmrpt_migrate/README.md?

Written apart from the tool on purpose: nothing is imported from ``chatmrpt_migrate`` and
none of its canonicalisation is reused. The source is read with plain ``sqlite3`` (default
settings, values as Python objects), the target with psycopg, and both sides are brought
to this module's own canonical values before they are compared:

* NULL == NULL; integer == bigint; integer 0/1 == boolean f/t;
* real == double precision exactly (``float.hex``: -0.0 and 0.0 differ); an integer in a
  double precision column must convert exactly;
* text == text; in a text column (TEXT mixed with INTEGER/REAL, or INTEGER+REAL with big
  integers) integers are decimal and reals Python ``repr``; in a bytea column text is its
  UTF-8 bytes, integers/reals as for text, blobs as they are;
* ISO-8601 text == timestamptz when it is the same instant (zone-less = UTC); both sides
  are parsed here (own regular expressions, own calendar arithmetic, so 1 BC or year 10000
  work too). Text that is not ISO-8601 (``2024-05-06-1530``) has no timestamptz image;
* JSON text == json (the type the README maps JSON columns to now): the same text
  exactly (json keeps it), and the source must be a JSON object/array;
* JSON text == jsonb (the README's earlier mapping) when both parse (numbers as
  ``Decimal``, last duplicate key wins) to the same value: numbers compare numerically
  (-0.0 == 0 == 0.0, 1e2 == 100, 1.50 == 1.5); true/false/null/strings/arrays/objects never
  equal anything of another kind. The jsonb side is fetched as ``::text`` and parsed the
  same way;
* blob == bytea bytes.

Rows are matched by the SQLite primary key when there is one (and it holds no NULLs and
its values stay distinct once converted), otherwise compared as multisets. Column types are
checked against the README's table too (differences whose ``reason`` starts with
``type:``; ISO-8601 text in a primary key/UNIQUE and JSON text in a key/index must stay
text), leniently where the README leaves room (see ``_expected_kinds``).

``compare(sqlite_path, dsn, schema)`` returns a list of :class:`Difference` (one per
differing cell, missing or extra row, missing table/column, wrong type);
``count_wrong_values(...)`` is its length. Both sides are streamed (server-side cursor for
PostgreSQL) and only a hash per row is kept in memory between the passes: ~1 M rows take
well under a minute.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import operator
import os
import re
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

import psycopg

__all__ = ["Difference", "compare", "count_wrong_values", "parse_iso_timestamp",
           "source_tables", "target_columns", "source_rows", "target_rows", "looks_secret",
           "quote_ident", "connect_target"]

FETCH = 20_000


@dataclass
class Difference:
    table: str
    key: dict | None        # primary-key values by name (source side), {"rowid": n}, or None
    column: str | None      # None: the whole row / table
    source: object
    target: object
    reason: str

    def __str__(self) -> str:
        where = self.table + (f" key={self.key}" if self.key else "") + \
            (f" column={self.column}" if self.column else "")
        return f"{where}: {self.reason}: source={self.source!r} target={self.target!r}"


class _Bad:
    """A value without a valid image on the other side: equal to nothing, not even to
    another _Bad; its hash is deterministic, so multiset passes can find it again."""

    __slots__ = ("reason", "_h")

    def __init__(self, reason: str, raw):
        self.reason = reason
        self._h = hash(("oracle-bad", reason, repr(raw)))

    def __eq__(self, other):
        return False

    def __hash__(self):
        return self._h

    def __repr__(self):
        return f"<{self.reason}>"


def looks_secret(name: str) -> bool:
    return bool(re.search(r"password|secret|token|key|hash", name, re.I))


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted (SQLite and PostgreSQL spell it the same)."""
    return '"' + name.replace('"', '""') + '"'


_q = quote_ident


# ------------------------------------------------------------------------------ timestamps
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:([Tt ])(\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?)?\Z")
_PG_TS = re.compile(
    r"(\d{4,})-(\d{2})-(\d{2})(?: (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d{2})(?::(\d{2}))?(?::(\d{2}))?)?)?( BC)?\Z")
_DIM = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_USEC_DAY = 86_400_000_000


def _days(y: int, m: int, d: int) -> int:
    """Days from 1970-01-01 in the proleptic Gregorian calendar (astronomical years:
    0 = 1 BC), by the usual era arithmetic."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _valid_date(y: int, m: int, d: int) -> bool:
    return 1 <= m <= 12 and 1 <= d <= (29 if m == 2 and _leap(y) else _DIM[m - 1])


_MIN_USEC = _days(1, 1, 1) * _USEC_DAY
_END_USEC = _days(10000, 1, 1) * _USEC_DAY


_ISO_match = _ISO.match


@functools.lru_cache(maxsize=1 << 16)
def _date_days(ymd: str) -> int | None:
    """``YYYY-MM-DD`` (already matched by the regex) -> days since 1970-01-01, None when
    it is no date (month 13, February 30, year 0000)."""
    y, m, d = int(ymd[:4]), int(ymd[5:7]), int(ymd[8:10])
    return _days(y, m, d) if y >= 1 and _valid_date(y, m, d) else None


def parse_iso_timestamp(s: str):
    """ISO-8601 text -> (microseconds since 1970-01-01 UTC, lenient) or None.

    Accepted: ``YYYY-MM-DD`` (midnight), optionally followed by ``T`` or a space and
    ``hh:mm``, ``hh:mm:ss`` or ``hh:mm:ss.f`` (1-6 digits, ``.`` or ``,``), or just ``hh``
    after ``T``; then optionally ``Z``, ``+hh``, ``+hh:mm`` or ``+hhmm`` (zone-less = UTC).
    ``lenient`` is True for forms the README leaves open (lowercase ``t``/``z``, RFC 3339
    style; ``T10`` without minutes and ``,`` before the fraction, ISO-8601 but rare; an
    instant outside years 1-9999 UTC): the tool may keep such a column as text.
    Everything else (``2024-05-06-1530``, ``2024-01-01x10:00``, 7 fraction digits, 24:00,
    leap seconds, invalid dates, year 0000) is not a timestamp.
    """
    m = _ISO_match(s)
    if m is None:
        return None
    days = _date_days(s[:10])
    if days is None:
        return None
    sep, hh, mi, ss, frac, zone = m.group(4, 5, 6, 7, 8, 9)
    if sep is None:
        return days * _USEC_DAY, not _MIN_USEC <= days * _USEC_DAY < _END_USEC
    lenient = sep == "t" or zone == "z" or mi is None or (frac is not None and "," in s)
    if mi is None and sep == " ":
        return None              # "2024-01-01 10": not a time
    h, mnt, sec = int(hh), int(mi or 0), int(ss or 0)
    us = int((frac or "0").ljust(6, "0"))
    if h > 23 or mnt > 59 or sec > 59:
        return None
    off = 0
    if zone and zone not in ("Z", "z"):
        zh, zm = int(zone[1:3]), int(zone[3:].lstrip(":") or 0)
        if zh > 23 or zm > 59:
            return None
        off = (zh * 60 + zm) * (-1 if zone[0] == "-" else 1)
    usec = ((days * 24 + h) * 60 + mnt - off) * 60_000_000 + sec * 1_000_000 + us
    if not _MIN_USEC <= usec < _END_USEC:
        lenient = True
    return usec, lenient


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_EPOCH_NAIVE = datetime.datetime(1970, 1, 1)
_US = datetime.timedelta(microseconds=1)


def _pg_timestamp(s: str):
    """PostgreSQL's ISO output (TimeZone UTC) of timestamptz/timestamp/date -> microseconds.
    (Parsing PostgreSQL's own output, never the source text: years 1-9999 with Python's
    C parser, the rest (BC, year 10000+) with a regex and the calendar arithmetic above.)"""
    try:
        v = datetime.datetime.fromisoformat(s)
        return (v - (_EPOCH if v.tzinfo else _EPOCH_NAIVE)) // _US
    except ValueError:
        pass
    m = _PG_TS.match(s)
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, sign, oh, om, osec, bc = m.groups()
    y = int(y)
    if bc:
        y = 1 - y
    usec = (_days(y, int(mo), int(d)) * 86400 + int(hh or 0) * 3600 + int(mi or 0) * 60
            + int(ss or 0)) * 1_000_000 + int((frac or "0").ljust(6, "0"))
    if sign:
        off = int(oh) * 3600 + int(om or 0) * 60 + int(osec or 0)
        usec -= (off if sign == "+" else -off) * 1_000_000
    return usec


# ------------------------------------------------------------------------------ JSON
def _no_constant(name):
    raise ValueError(f"JSON constant {name} is not JSON")


def _json_parse(s: str):
    return _json_parse_deep(s)[0]


def _json_parse_deep(s: str):
    """(parsed value, nested deeper than Python's recursion limit)."""
    try:
        return json.loads(s, parse_float=Decimal, parse_int=Decimal,
                          parse_constant=_no_constant,
                          object_pairs_hook=dict), False   # dict(): the last duplicate wins
    except RecursionError:
        pass
    # PostgreSQL's json takes thousands of levels: parse again with a higher limit
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 50_000))
    try:
        return json.loads(s, parse_float=Decimal, parse_int=Decimal,
                          parse_constant=_no_constant, object_pairs_hook=dict), True
    finally:
        sys.setrecursionlimit(limit)


def _jc(v):
    """Hashable canonical JSON value; numbers stay Decimal (numeric equality and hash)."""
    t = type(v)
    if t is dict:
        return ("o", frozenset((k, _jc(x)) for k, x in v.items()))
    if t is list:
        return ("a", tuple(map(_jc, v)))
    if t is str:
        return ("s", v)
    if t is Decimal:
        return ("n", v)
    if v is None:
        return ("null",)
    return ("bool", v)


_FLOAT_MAX = Decimal("1.7976931348623157e308")


def _json_walk_ok(v) -> tuple[bool, bool]:
    """(jsonb accepts it, some number is beyond float range)."""
    stack, big = [v], False
    while stack:
        x = stack.pop()
        t = type(x)
        if t is dict:
            for k, y in x.items():
                if "\x00" in k or re.search("[\ud800-\udfff]", k):
                    return False, big
                stack.append(y)
        elif t is list:
            stack.extend(x)
        elif t is str:
            if "\x00" in x or re.search("[\ud800-\udfff]", x):
                return False, big
        elif t is Decimal:
            if x.is_finite() and abs(x) > _FLOAT_MAX:
                big = True
    return True, big


_SURROGATE_ESC = re.compile(r"\\u[dD][89a-fA-F]")


def _json_kinds(s: str) -> set | None:
    """The kinds a column of such values may have: None when ``s`` is not a JSON
    object/array (PostgreSQL's JSON syntax, which Python's strict parser shares, minus
    NaN/Infinity); else ``json`` (text kept), ``jsonb`` when jsonb takes it (no \\u0000,
    no lone surrogate), and ``text`` where the README's versions differ (jsonb: numbers
    beyond float range, surrogate escapes, values jsonb refuses) or say nothing (nesting
    deeper than Python's recursion limit)."""
    if s[:1] not in ("{", "["):
        return None
    try:
        v, deep = _json_parse_deep(s)
    except ValueError:
        return None
    jsonb_ok, big = _json_walk_ok(v)
    kinds = {"json", "jsonb"} if jsonb_ok else {"json", "text"}
    if big or deep or _SURROGATE_ESC.search(s):
        kinds.add("text")
    return kinds


# ------------------------------------------------------------------------------ canonical values
KINDS = {"bigint": "int", "integer": "int", "smallint": "int", "boolean": "bool",
         "double precision": "float", "real": "float", "numeric": "numeric", "text": "text",
         "character varying": "text", "character": "text", "bytea": "bytea",
         "timestamp with time zone": "ts", "timestamp without time zone": "ts", "date": "ts",
         "jsonb": "jsonb", "json": "json"}


def _kind(pg_type: str) -> str:
    return KINDS.get(re.sub(r"\(.*\)", "", pg_type).strip(), "other")


# A canonical value is comparable only with canonical values of the same column (both
# sides go through the column's target kind): bigint -> int, boolean -> bool,
# double precision -> float.hex() (exact, -0.0 != 0.0), numeric -> Decimal, text/json ->
# str, bytea -> bytes, timestamptz -> microseconds since 1970 UTC, jsonb -> _jc(parsed);
# NULL -> None; a value without an image -> _Bad.
def _mixed_text(v) -> str | None:
    if type(v) is str:
        return v
    if type(v) is int:
        return str(v)
    if type(v) is float:
        return repr(v)
    return None


def _s_int(v):
    return v if type(v) is int else _Bad(f"{type(v).__name__} in a bigint column", v)


def _s_bool(v):
    if type(v) is int and v in (0, 1):
        return v == 1
    return _Bad("not 0/1 in a boolean column", v)


def _s_float(v):
    if type(v) is float:
        return v.hex()
    if type(v) is int:
        f = float(v)
        return f.hex() if int(f) == v else _Bad("integer not exact as float8", v)
    return _Bad(f"{type(v).__name__} in a double precision column", v)


def _s_numeric(v):
    try:
        return Decimal(repr(v) if type(v) is float else v)
    except (InvalidOperation, TypeError, ValueError):
        return _Bad(f"{type(v).__name__} in a numeric column", v)


def _s_text(v):
    t = _mixed_text(v)
    return t if t is not None else _Bad("blob in a text column", v)


def _s_bytea(v):
    if type(v) is bytes:
        return v
    return _mixed_text(v).encode("utf-8")


def _s_ts(v):
    if type(v) is not str:
        return _Bad(f"{type(v).__name__} in a timestamptz column", v)
    p = parse_iso_timestamp(v)
    return p[0] if p else _Bad("text that is not ISO-8601 in a timestamptz column", v)


def _jsonb_canon(s: str):
    v = _json_parse(s)
    try:
        return _jc(v)
    except RecursionError:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 50_000))
        try:
            return _jc(v)
        finally:
            sys.setrecursionlimit(limit)


def _s_jsonb(v):
    if type(v) is not str:
        return _Bad(f"{type(v).__name__} in a jsonb column", v)
    try:
        return _jsonb_canon(v)
    except ValueError:
        return _Bad("text that is not JSON in a jsonb column", v)


def _s_json(v):
    # json keeps the text exactly (README): the same text, and it must be JSON
    if type(v) is not str:
        return _Bad(f"{type(v).__name__} in a json column", v)
    if _json_kinds(v) is None:
        return _Bad("text that is not a JSON object/array in a json column", v)
    return v


def _s_other(v):
    return _Bad("unexpected target type", v)


def _t_ts(v):
    u = _pg_timestamp(v)
    return u if u is not None else _Bad("unparsable PostgreSQL timestamp", v)


def _t_jsonb(v):
    try:
        return _jsonb_canon(v)
    except ValueError:
        return _Bad("unparsable jsonb text", v)


def _same(v):
    return v


_NONE = type(None)
# kind -> (value -> canonical value, types whose values are canonical as they are,
# whole-column function for a column of one such type, no NULL) per side
SOURCE_CANON = {
    "int": (_s_int, {int}, None), "bool": (_s_bool, set(), None),
    "float": (_s_float, set(), (float, float.hex)), "numeric": (_s_numeric, set(), None),
    "text": (_s_text, {str}, None), "bytea": (_s_bytea, {bytes}, None),
    "ts": (_s_ts, set(), None), "json": (_s_json, set(), None),
    "jsonb": (_s_jsonb, set(), None), "other": (_s_other, set(), None)}
TARGET_CANON = {
    "int": (_same, {int}, None), "bool": (_same, {bool}, None),
    "float": (float.hex, set(), (float, float.hex)), "numeric": (_same, {Decimal}, None),
    "text": (_same, {str}, None), "bytea": (bytes, {bytes}, None), "ts": (_t_ts, set(), None),
    "json": (_same, {str}, None), "jsonb": (_t_jsonb, set(), None),
    "other": (lambda v: _Bad("unexpected type", v), set(), None)}


def _column_converters(kinds, table):
    out = []
    for k in kinds:
        f, same, whole = table[k]
        out.append(((lambda v, f=f: None if v is None else f(v)), same | {_NONE}, whole))
    return out


def _canonical_rows(rows, convs, offset: int, stats: _Stats | None = None):
    """Canonical row tuples of fetched rows (their first ``offset`` fields are not data),
    computed column by column: a column whose values are all canonical already (by type)
    is kept as it is, a column of one type with a whole-column function is mapped in C."""
    cols = list(zip(*rows))[offset:]
    out = []
    for i, (col, (f, same, whole)) in enumerate(zip(cols, convs)):
        types = set(map(type, col))
        if stats is not None:
            stats.update(i, col, types)
        if types <= same:
            out.append(col)
        elif whole and types == {whole[0]}:
            out.append(list(map(whole[1], col)))
        else:
            out.append(list(map(f, col)))
    return list(zip(*out)) if out else [()] * len(rows)


# ------------------------------------------------------------------------------ reading
@dataclass
class SourceTable:
    name: str
    columns: list          # names, in order
    decls: list            # declared types
    pk: list               # primary-key column names, in key order ([] = none)
    rowid: bool            # False: WITHOUT ROWID
    unique: set = field(default_factory=set)    # columns of the key and of UNIQUE indexes
    indexed: set = field(default_factory=set)   # columns of the key and of any index

    @property
    def rowid_alias(self) -> str | None:
        if self.rowid and len(self.pk) == 1:
            i = self.columns.index(self.pk[0])
            if self.decls[i].strip().upper() == "INTEGER":
                return self.pk[0]
        return None


@dataclass
class TargetColumn:
    name: str
    pg_type: str
    kind: str
    identity: str          # pg_attribute.attidentity ('' / 'd' / 'a')


def _connect_source(path: str) -> sqlite3.Connection:
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    return sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)


def source_tables(con_or_path) -> dict[str, SourceTable]:
    con = _connect_source(con_or_path) if isinstance(con_or_path, str) else con_or_path
    try:
        out = {}
        for name, sql in con.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                "'sqlite\\_%' ESCAPE '\\' ORDER BY name").fetchall():
            if sql and re.match(r"\s*CREATE\s+VIRTUAL", sql, re.I):
                continue
            info = con.execute(f"PRAGMA table_info({_q(name)})").fetchall()
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            unique, indexed = set(pk), set(pk)
            for _seq, index, is_unique, _origin, _partial in con.execute(
                    f"PRAGMA index_list({_q(name)})").fetchall():
                cols = {r[2] for r in con.execute(f"PRAGMA index_info({_q(index)})") if r[2]}
                indexed |= cols
                if is_unique:
                    unique |= cols
            out[name] = SourceTable(name, [r[1] for r in info], [r[2] or "" for r in info], pk,
                                    not (sql and re.search(r"\)\s*WITHOUT\s+ROWID", sql, re.I)),
                                    unique, indexed)
        return out
    finally:
        if con is not con_or_path:
            con.close()


def target_columns(con: psycopg.Connection, schema: str) -> dict[str, dict[str, TargetColumn]]:
    out: dict[str, dict[str, TargetColumn]] = {}
    for table, col, typ, ident in con.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p') "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum", (schema,)):
        out.setdefault(table, {})[col] = TargetColumn(col, typ, _kind(typ), ident or "")
    return out


def source_rows(con: sqlite3.Connection, t: SourceTable, kinds: list[str],
                stats: _Stats | None = None):
    """(rowid or None, raw values, canonical values) of every row; ``kinds``: the target
    kind of each column of ``t.columns``; ``stats``: gathers the storage classes (reset
    first)."""
    if stats is not None:
        stats.__init__(len(t.columns))
    convs = _column_converters(kinds, SOURCE_CANON)
    cols = ", ".join(_q(c) for c in t.columns)
    cur = con.execute(f"SELECT {'rowid' if t.rowid else 'NULL'}{', ' if cols else ''}{cols} "
                      f"FROM {_q(t.name)}")
    while True:
        rows = cur.fetchmany(FETCH)
        if not rows:
            return
        canon = _canonical_rows(rows, convs, 1, stats)
        for r, c in zip(rows, canon):
            yield r[0], r[1:], c


def _select_expr(c: TargetColumn) -> str:
    return f"{_q(c.name)}::text" if c.kind in ("ts", "json", "jsonb", "other") else _q(c.name)


def target_rows(con: psycopg.Connection, schema: str, table: str, cols: list[TargetColumn],
                extra: str | None = None):
    """(extra value or None, raw values, canonical values) of every row, streamed with a
    server-side cursor; ``extra``: one more SQL expression (e.g. ``ctid``) fetched first."""
    convs = _column_converters([c.kind for c in cols], TARGET_CANON)
    exprs = ([extra] if extra else ["NULL"]) + [_select_expr(c) for c in cols]
    with con.transaction(), con.cursor(name="oracle_rows", binary=True) as cur:
        cur.itersize = FETCH
        cur.execute(f"SELECT {', '.join(exprs)} FROM {_q(schema)}.{_q(table)}")
        while True:
            rows = cur.fetchmany(FETCH)
            if not rows:
                return
            canon = _canonical_rows(rows, convs, 1)
            for r, c in zip(rows, canon):
                yield r[0], r[1:], c


def connect_target(dsn: str) -> psycopg.Connection:
    con = psycopg.connect(dsn, autocommit=True)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET DateStyle = 'ISO, YMD'")
    return con


# ------------------------------------------------------------------------------ types
_BOOL_NAME = re.compile(r"(is|has|can|should|was|did|allow|enable)_", re.I)


def _affinity(decl: str) -> str:
    """SQLite's column affinity rules (https://sqlite.org/datatype3.html, 3.1)."""
    d = decl.upper()
    if "INT" in d:
        return "INTEGER"
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return "TEXT"
    if "BLOB" in d or not d:
        return "BLOB"
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return "REAL"
    return "NUMERIC"


_not_none = functools.partial(operator.is_not, None)


class _Stats:
    """Storage classes per column of the source (gathered by the first pass over the rows,
    batch by batch, in C where it can): Python types seen, min/max of the integers,
    whether a text value holds a NUL."""

    def __init__(self, n: int):
        self.types = [set() for _ in range(n)]
        self.imin: list = [None] * n
        self.imax: list = [None] * n
        self.nul = [False] * n

    def update(self, i: int, col, types: set) -> None:
        self.types[i] |= types
        if int in types:
            ints = col if types == {int} else (
                list(filter(_not_none, col)) if types == {int, _NONE} else
                [v for v in col if type(v) is int])
            lo, hi = min(ints), max(ints)
            self.imin[i] = lo if self.imin[i] is None else min(lo, self.imin[i])
            self.imax[i] = hi if self.imax[i] is None else max(hi, self.imax[i])
        if str in types and not self.nul[i]:
            strs = col if types == {str} else (
                filter(None, col) if types == {str, _NONE} else
                [v for v in col if type(v) is str])
            self.nul[i] = any(map(operator.contains, strs, itertools.repeat("\x00")))


def _text_status(con: sqlite3.Connection, t: SourceTable, col: str):
    """(ISO-8601 status: 'yes' / 'either' / 'no', JSON kinds or None) of an all-TEXT
    column."""
    iso, js, lenient = "yes", {"json", "jsonb"}, False
    cur = con.execute(f"SELECT {_q(col)} FROM {_q(t.name)} WHERE {_q(col)} IS NOT NULL")
    for (v,) in cur:
        if iso != "no":
            p = parse_iso_timestamp(v)
            iso = "no" if p is None else ("either" if p[1] else iso)
        if js is not None:
            k = _json_kinds(v)
            if k is None:
                js = None
            else:
                lenient = lenient or "text" in k
                js &= k
        if iso == "no" and js is None:
            break
    return iso, (js | {"text"} if lenient else js) if js is not None else None


def _expected_kinds(con, t: SourceTable, i: int, st: _Stats, actual: str) -> set[str] | None:
    """The target kinds the README's table allows for column ``i`` (None: anything).
    ``actual``: the column's kind in the target; an all-TEXT column that became
    timestamptz/json/jsonb is not scanned here: the value comparison checks every value."""
    name, decl = t.columns[i], t.decls[i]
    bool_like = "BOOL" in decl.upper() or bool(_BOOL_NAME.match(name))
    if name == t.rowid_alias:
        return {"int"}
    classes = st.types[i] - {_NONE}
    if not classes:      # declared type decides; the README's wording leaves some room
        aff = _affinity(decl)
        kinds = {"bool"} if bool_like else set()
        if aff == "INTEGER":
            kinds.add("int")
        elif aff == "REAL":
            kinds.add("float")
        elif aff == "TEXT":
            kinds.add("text")
        elif aff == "BLOB":
            kinds |= {"bytea"} if decl.strip() else {"bytea", "text"}
        else:
            du = decl.upper()
            kinds.add("ts" if "DATE" in du or "TIME" in du else "numeric")
        return kinds
    if bytes in classes:
        return {"bytea"}
    if classes == {int}:
        return {"bool"} if bool_like and st.imin[i] >= 0 and st.imax[i] <= 1 else {"int"}
    if classes == {float}:
        return {"float"}
    if str not in classes:
        return {"float"} if max(abs(st.imin[i]), abs(st.imax[i])) <= 2 ** 53 else {"text"}
    if st.nul[i]:
        return {"bytea"}
    if classes != {str}:
        return {"text"}
    # README: ISO-8601 text in a primary key or UNIQUE stays text (two spellings of one
    # instant would collide), JSON text in a key or an index too (json has no btree class)
    if actual == "ts":
        return {"text"} if name in t.unique else None    # values: checked one by one
    if actual in ("json", "jsonb"):
        return {"text"} if name in t.indexed else None
    iso, js = _text_status(con, t, name)
    if iso != "no":
        return {"text"} if name in t.unique else {"ts"} if iso == "yes" else {"ts", "text"}
    if js is not None:
        return {"text"} if name in t.indexed else js
    return {"text"}


# ------------------------------------------------------------------------------ comparison
def compare(sqlite_path: str, dsn: str, schema: str, *, check_types: bool = True,
            limit: int | None = None) -> list[Difference]:
    """Every difference between the SQLite file and the PostgreSQL schema (see module
    docstring). ``limit``: stop collecting row differences of a table after that many."""
    diffs: list[Difference] = []
    src = _connect_source(sqlite_path)
    try:
        with connect_target(dsn) as pg:
            tcols = target_columns(pg, schema)
            stables = source_tables(src)
            for name, t in stables.items():
                if name not in tcols:
                    n = src.execute(f"SELECT count(*) FROM {_q(name)}").fetchone()[0]
                    diffs.append(Difference(name, None, None, f"{n} rows", None,
                                            "table missing in target"))
                    continue
                diffs += _compare_table(src, pg, schema, t, tcols[name], check_types, limit)
            for name in sorted(set(tcols) - set(stables)):
                diffs.append(Difference(name, None, None, None, "table",
                                        "table only in target"))
    finally:
        src.close()
    return diffs


def count_wrong_values(sqlite_path: str, dsn: str, schema: str, **kw) -> int:
    """Number of differences (cells, rows, tables, types) found by :func:`compare`."""
    return len(compare(sqlite_path, dsn, schema, **kw))


def _compare_table(src, pg, schema, t: SourceTable, tc: dict[str, TargetColumn],
                   check_types: bool, limit) -> list[Difference]:
    diffs = []
    for c in t.columns:
        if c not in tc:
            diffs.append(Difference(t.name, None, c, "column", None, "column missing in target"))
    for c in tc:
        if c not in t.columns:
            diffs.append(Difference(t.name, None, c, None, tc[c].pg_type,
                                    "column only in target"))
    cols = [c for c in t.columns if c in tc]
    st = SourceTable(t.name, cols, [t.decls[t.columns.index(c)] for c in cols],
                     [p for p in t.pk if p in tc], t.rowid, t.unique, t.indexed)
    targets = [tc[c] for c in cols]
    kinds = [c.kind for c in targets]
    stats = _Stats(len(cols))      # filled by the first pass over the source rows
    pk_idx = [cols.index(p) for p in st.pk] if st.pk and len(st.pk) == len(t.pk) else []
    rows = _compare_keyed(src, pg, schema, st, targets, kinds, pk_idx, limit, stats) \
        if pk_idx else None
    if rows is None:
        rows = _compare_multiset(src, pg, schema, st, targets, kinds, limit, stats)
    if check_types:
        names = {int: "integer", float: "real", str: "text", bytes: "blob"}
        for i, c in enumerate(cols):
            want = _expected_kinds(src, st, i, stats, targets[i].kind)
            if want is not None and targets[i].kind not in want:
                classes = sorted(names[x] for x in stats.types[i] if x in names)
                diffs.append(Difference(
                    t.name, None, c, f"declared {st.decls[i]!r}, storage classes {classes}",
                    targets[i].pg_type, f"type: the README maps this column to one of "
                    f"{sorted(want)}"))
        if st.rowid_alias and tc[st.rowid_alias].identity != "d":
            diffs.append(Difference(t.name, None, st.rowid_alias, "INTEGER PRIMARY KEY",
                                    tc[st.rowid_alias].pg_type,
                                    "type: rowid alias is not GENERATED BY DEFAULT AS IDENTITY"))
    return diffs + rows


def _row_dict(cols, vals):
    return dict(zip(cols, vals))


def _compare_keyed(src, pg, schema, st, targets, kinds, pk_idx, limit, stats):
    """Rows matched by primary key; None when the key has NULLs or its canonical values
    collide (then the caller compares multisets)."""
    keyof = operator.itemgetter(*pk_idx)       # a value (one column) or a tuple
    has_null = (lambda k: k is None) if len(pk_idx) == 1 else (lambda k: None in k)
    seen: dict = {}
    for _rowid, _vals, canon in source_rows(src, st, kinds, stats):
        key = keyof(canon)
        if key in seen or has_null(key):
            return None
        seen[key] = hash(canon)
    differing: dict = {}          # key -> target raw values (canonical differs)
    extra = []
    tkeys: set = set()
    for _x, vals, canon in target_rows(pg, schema, st.name, targets):
        key = keyof(canon)
        if key in tkeys or has_null(key):
            return None
        tkeys.add(key)
        h = seen.pop(key, None)
        if h is None:
            extra.append(vals)
        elif h != hash(canon):
            differing[key] = (vals, canon)
    missing = set(seen)
    diffs = []
    if missing or differing:
        for _rowid, vals, canon in source_rows(src, st, kinds):
            key = keyof(canon)
            kd = {st.columns[i]: vals[i] for i in pk_idx}
            if key in missing:
                diffs.append(Difference(st.name, kd, None, _row_dict(st.columns, vals), None,
                                        "row missing in target"))
            elif key in differing:
                tvals, tcanon = differing[key]
                for i, c in enumerate(st.columns):
                    if not canon[i] == tcanon[i]:
                        why = canon[i].reason if isinstance(canon[i], _Bad) else (
                            tcanon[i].reason if isinstance(tcanon[i], _Bad) else
                            "value differs")
                        diffs.append(Difference(st.name, kd, c, vals[i], tvals[i], why))
            if limit and len(diffs) >= limit:
                break
    for vals in extra[:limit] if limit else extra:
        diffs.append(Difference(st.name, {st.columns[i]: vals[i] for i in pk_idx}, None, None,
                                _row_dict(st.columns, vals), "row only in target"))
    return diffs


def _compare_multiset(src, pg, schema, st, targets, kinds, limit, stats):
    count: Counter = Counter()
    for _rowid, _vals, canon in source_rows(src, st, kinds, stats):
        count[hash(canon)] += 1
    for _x, _vals, canon in target_rows(pg, schema, st.name, targets):
        count[hash(canon)] -= 1
    surplus = {h: n for h, n in count.items() if n}
    diffs = []
    if not surplus:
        return diffs
    for rowid, vals, canon in source_rows(src, st, kinds):
        h = hash(canon)
        if surplus.get(h, 0) > 0:
            surplus[h] -= 1
            bad = [x.reason for x in canon if isinstance(x, _Bad)]
            diffs.append(Difference(st.name, {"rowid": rowid} if rowid is not None else None,
                                    None, _row_dict(st.columns, vals), None,
                                    "row missing in target" + (f" ({bad[0]})" if bad else "")))
            if limit and len(diffs) >= limit:
                break
    for _x, vals, canon in target_rows(pg, schema, st.name, targets):
        h = hash(canon)
        if surplus.get(h, 0) < 0:
            surplus[h] += 1
            diffs.append(Difference(st.name, None, None, None, _row_dict(st.columns, vals),
                                    "row only in target"))
            if limit and len(diffs) >= 2 * limit:
                break
    return diffs
