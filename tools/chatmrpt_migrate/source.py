"""SQLite side: discovery, snapshots, introspection, type inference, orphan counts."""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import math
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from urllib.parse import quote

APP_DATABASES = ("interactions.db", "users.db", "survey.db", "prepost_test.db")
MAX_IDENT = 63
SCHEMA_BASE_MAX = 50  # leaves room for "__staging" / "__previous" suffixes

BOOL_NAME_RE = re.compile(r"^(is|has|can|should|was|did|allow|enable|enabled)_", re.I)
ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
    r"(?:\s?(Z|z|[+-]\d{2}(?::?\d{2})?))?)?$")
MAX_SAFE_INT = 2 ** 53
UTC = _dt.timezone.utc
EPOCH = _dt.datetime(1970, 1, 1)


class MigrationError(Exception):
    """An error that aborts the run (target left unchanged)."""


def qi(name: str) -> str:
    """Quote an identifier (SQLite and PostgreSQL use the same syntax)."""
    return '"' + name.replace('"', '""') + '"'


def pg_name(name: str, maxlen: int = MAX_IDENT) -> str:
    """Identifier cut to PostgreSQL's 63 bytes (with a hash suffix when cut)."""
    if len(name.encode()) <= maxlen:
        return name
    h = hashlib.sha1(name.encode()).hexdigest()[:8]
    b = name.encode()[: maxlen - 9].decode("utf-8", "ignore")
    return f"{b}_{h}"


def schema_name(base: str) -> str:
    s = re.sub(r"[^a-z0-9_]", "_", base.lower()).strip("_") or "db"
    if s[0].isdigit():
        s = "db_" + s
    return pg_name(s, SCHEMA_BASE_MAX)


# ---------------------------------------------------------------------------- discovery
@dataclass
class Source:
    path: str
    schema: str
    snapshot: str | None = None


def discover(paths: list[str], include_tpr: bool, warn) -> list[Source]:
    out: list[Source] = []
    for p in paths:
        if os.path.isdir(p):
            for name in APP_DATABASES:
                f = os.path.join(p, name)
                if os.path.isfile(f):
                    out.append(Source(os.path.abspath(f), schema_name(name[:-3])))
                else:
                    warn(f"{f}: not found (tables are created on first use), skipped")
            if include_tpr:
                for f in sorted(glob.glob(os.path.join(p, "uploads", "*", "tpr_precomputed.db"))):
                    sess = os.path.basename(os.path.dirname(f))
                    out.append(Source(os.path.abspath(f), schema_name("tpr_" + sess)))
        elif os.path.isfile(p):
            base = os.path.splitext(os.path.basename(p))[0]
            if base == "tpr_precomputed":
                base = "tpr_" + os.path.basename(os.path.dirname(os.path.abspath(p)))
            out.append(Source(os.path.abspath(p), schema_name(base)))
        else:
            raise MigrationError(f"source not found: {p}")
    seen: dict[str, str] = {}
    for s in out:
        if s.schema in seen:
            raise MigrationError(
                f"two sources map to schema {s.schema!r}: {seen[s.schema]} and {s.path}")
        seen[s.schema] = s.path
    return out


def open_ro(path: str) -> sqlite3.Connection:
    """Open a source strictly read-only (never writes to it)."""
    return sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True,
                           check_same_thread=False)


def take_snapshot(src: Source, workdir: str | None) -> str:
    """Online-consistent copy of the source via the SQLite backup API."""
    fd, tmp = tempfile.mkstemp(prefix=f"chatmrpt-{src.schema}-", suffix=".db", dir=workdir)
    os.close(fd)
    s = open_ro(src.path)
    try:
        d = sqlite3.connect(tmp)
        try:
            d.execute("PRAGMA journal_mode=OFF")
            d.execute("PRAGMA synchronous=OFF")
            s.backup(d)
        finally:
            d.close()
    finally:
        s.close()
    src.snapshot = tmp
    return tmp


def open_snapshot(path: str) -> sqlite3.Connection:
    c = open_ro(path)
    c.execute("PRAGMA mmap_size=4294967296")
    c.execute("PRAGMA cache_size=-65536")
    return c


# ---------------------------------------------------------------------------- model
@dataclass
class Column:
    name: str
    decl: str
    notnull: bool
    pk: int
    pg_type: str = "text"
    conv: str | None = None      # load conversion (see loader.CONVERSIONS)
    reason: str = ""
    classes: dict = field(default_factory=dict)
    identity: bool = False


@dataclass
class Index:
    name: str
    columns: list
    desc: list
    unique: bool
    constraint: bool            # True: UNIQUE constraint (origin 'u'), else CREATE INDEX


@dataclass
class ForeignKey:
    name: str
    columns: list
    ref_table: str
    ref_columns: list
    on_delete: str
    on_update: str
    orphans: int | None = None
    skipped: str | None = None   # reason when not created


@dataclass
class Table:
    name: str
    columns: list
    pk: list
    rows: int = 0
    indexes: list = field(default_factory=list)
    fks: list = field(default_factory=list)
    identity_col: str | None = None
    identity_next: int | None = None
    autoincrement: bool = False
    warnings: list = field(default_factory=list)
    pk_skipped: str | None = None

    @property
    def pg(self) -> str:
        return pg_name(self.name)


@dataclass
class Database:
    source: Source
    tables: list
    warnings: list = field(default_factory=list)

    @property
    def schema(self) -> str:
        return self.source.schema


def affinity(decl: str) -> str:
    d = (decl or "").upper()
    if "INT" in d:
        return "INTEGER"
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return "TEXT"
    if "BLOB" in d or not d:
        return "BLOB" if d else "NONE"
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return "REAL"
    return "NUMERIC"


# ---------------------------------------------------------------------------- value parsing
def parse_ts(s: str) -> _dt.datetime | None:
    """Strict ISO-8601 -> naive UTC datetime (zone-less values are UTC), None if invalid."""
    m = ISO_RE.match(s)
    if not m:
        return None
    y, mo, d, h, mi, se, fr, tz = m.groups()
    try:
        v = _dt.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(se or 0),
                         int((fr or "0").ljust(6, "0")))
    except ValueError:
        return None
    if tz and tz not in ("Z", "z"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hh, mm = int(digits[:2]), int(digits[2:4] or 0)
        if hh > 15 or mm > 59:
            return None
        try:
            v = v - sign * _dt.timedelta(hours=hh, minutes=mm)
        except OverflowError:
            return None
    if not (1 <= v.year <= 9999):
        return None
    return v


def ts_from_text(s: str) -> _dt.datetime:
    v = parse_ts(s)
    if v is None:
        raise ValueError(f"not an ISO timestamp: {s[:40]!r}")
    return v


def _bad_constant(c):
    raise ValueError(c)


def _finite_float(s):
    f = float(s)
    if math.isinf(f):
        raise ValueError(s)
    return f


SURROGATE_ESC = re.compile(r"\\u[dD][89a-fA-F]", re.A)


def json_ok(s: str) -> bool:
    """True when ``s`` is a JSON object/array that PostgreSQL jsonb accepts unchanged."""
    if "\\u0000" in s or SURROGATE_ESC.search(s):
        return False
    try:
        v = json.loads(s, parse_constant=_bad_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return False
    return isinstance(v, (dict, list))


def json_canon(s: str) -> str:
    return json.dumps(json.loads(s), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------- introspection
def introspect(src: Source, warn) -> Database:
    con = open_snapshot(src.snapshot or src.path)
    try:
        return _introspect(con, src, warn)
    finally:
        con.close()


def _introspect(con: sqlite3.Connection, src: Source, warn) -> Database:
    db = Database(src, [])

    def w(msg):
        db.warnings.append(msg)
        warn(f"{src.schema}: {msg}")

    seqs = {}
    if con.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone():
        seqs = dict(con.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    rows = con.execute("SELECT name, sql FROM sqlite_master WHERE type='table' "
                       "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    for tname, sql in rows:
        if sql and sql.lstrip().upper().startswith("CREATE VIRTUAL"):
            w(f"table {tname}: virtual table skipped")
            continue
        cols = [Column(name=r[1], decl=r[2] or "", notnull=bool(r[3]), pk=r[5])
                for r in con.execute(f"PRAGMA table_info({qi(tname)})")]
        pk = [c.name for c in sorted((c for c in cols if c.pk), key=lambda c: c.pk)]
        t = Table(tname, cols, pk)
        without_rowid = bool(sql and re.search(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", sql, re.I))
        if len(pk) == 1 and not without_rowid:
            c = next(c for c in cols if c.name == pk[0])
            if c.decl.strip().upper() == "INTEGER":
                c.identity = True
                t.identity_col = c.name
                t.autoincrement = bool(sql and re.search(r"AUTOINCREMENT", sql, re.I))
                t.identity_next = int(seqs.get(tname) or 0)
        # indexes
        for _seq, iname, unique, origin, partial in con.execute(
                f"PRAGMA index_list({qi(tname)})").fetchall():
            if origin == "pk":
                continue
            info = [r for r in con.execute(f"PRAGMA index_xinfo({qi(iname)})") if r[5]]
            if partial or any(r[1] < 0 for r in info):
                w(f"index {iname} on {tname}: partial/expression index not migrated")
                continue
            cn = [r[2] for r in info]
            if origin == "u":
                name = pg_name(f"{tname}_{'_'.join(cn)}_key")
            else:
                name = pg_name(iname)
            t.indexes.append(Index(name, cn, [bool(r[3]) for r in info], bool(unique),
                                   origin == "u"))
            if any(r[4] and r[4].upper() != "BINARY" for r in info):
                w(f"index {iname} on {tname}: COLLATE {info[0][4]} not translated")
        # foreign keys
        fkrows = con.execute(f"PRAGMA foreign_key_list({qi(tname)})").fetchall()
        groups: dict[int, list] = {}
        for r in fkrows:
            groups.setdefault(r[0], []).append(r)
        for fid in sorted(groups):
            g = sorted(groups[fid], key=lambda r: r[1])
            fcols = [r[3] for r in g]
            tcols = [r[4] for r in g]
            name = pg_name(f"{tname}_{'_'.join(fcols)}_fkey")
            t.fks.append(ForeignKey(name, fcols, g[0][2], tcols, g[0][6], g[0][5]))
        db.tables.append(t)
    names = {t.name for t in db.tables}
    for t in db.tables:
        for fk in t.fks:
            if fk.ref_table not in names:
                fk.skipped = f"parent table {fk.ref_table} does not exist in this file"
                continue
            parent = next(p for p in db.tables if p.name == fk.ref_table)
            if any(c is None for c in fk.ref_columns):
                fk.ref_columns = list(parent.pk)
            if len(fk.ref_columns) != len(fk.columns):
                fk.skipped = "parent key columns do not match"
    return db


# ---------------------------------------------------------------------------- analysis
def analyse(db: Database, warn, nul_check: bool = True) -> None:
    """Scan the data and choose a lossless PostgreSQL type for every column.

    ``nul_check=False`` skips the (costly) NUL-byte scan of text columns; the loader then
    detects NUL bytes from PostgreSQL's error and calls :func:`recheck_nul`.
    """
    con = open_snapshot(db.source.snapshot or db.source.path)
    try:
        for t in db.tables:
            _analyse_table(con, db, t, warn, nul_check)
        for t in db.tables:
            _check_keys(db, t, warn)
    finally:
        con.close()


def _analyse_table(con, db, t: Table, warn, nul_check: bool) -> None:
    exprs = ["count(*)"]
    for c in t.columns:
        q = qi(c.name)
        exprs += [f"sum(typeof({q})='integer')", f"sum(typeof({q})='real')",
                  f"sum(typeof({q})='text')", f"sum(typeof({q})='blob')",
                  f"min(CASE WHEN typeof({q})='integer' THEN {q} END)",
                  f"max(CASE WHEN typeof({q})='integer' THEN {q} END)",
                  f"sum(typeof({q})='text' AND {q} GLOB "
                  "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*')",
                  f"sum(typeof({q})='text' AND substr({q},1,1) IN ('{{','['))"]
    r = con.execute(f"SELECT {', '.join(exprs)} FROM {qi(t.name)}").fetchone()
    t.rows = r[0]
    for i, c in enumerate(t.columns):
        ni, nr, nt, nb, imin, imax, nts, njs = (x or 0 if k < 4 or k > 5 else x
                                                for k, x in enumerate(r[1 + 8 * i: 9 + 8 * i]))
        c.classes = {k: v for k, v in (("integer", ni), ("real", nr), ("text", nt),
                                       ("blob", nb)) if v}
        nn = ni + nr + nt + nb
        has_nul = False
        if nul_check and nt:
            has_nul = bool(con.execute(
                f"SELECT 1 FROM {qi(t.name)} WHERE typeof({qi(c.name)})='text' "
                f"AND instr({qi(c.name)}, char(0)) > 0 LIMIT 1").fetchone())
        _decide(con, t, c, nn, ni, nr, nt, nb, imin, imax, nts, njs, has_nul)
        if c.reason.startswith("mixed") or c.conv == "utf8":
            t.warnings.append(f"column {c.name}: {c.reason}")
            warn(f"{db.schema}.{t.name}.{c.name}: {c.reason}")


def _bool_like(c: Column) -> bool:
    return "BOOL" in c.decl.upper() or bool(BOOL_NAME_RE.match(c.name))


def _decide(con, t, c: Column, nn, ni, nr, nt, nb, imin, imax, nts, njs, has_nul) -> None:
    aff = affinity(c.decl)
    du = c.decl.upper()
    if nn == 0:  # no data: declared type decides
        if _bool_like(c) and aff in ("INTEGER", "NUMERIC"):
            c.pg_type, c.reason = "boolean", "no data; declared/named boolean"
        elif aff == "INTEGER":
            c.pg_type, c.reason = "bigint", "no data; INTEGER affinity"
        elif aff == "REAL":
            c.pg_type, c.reason = "double precision", "no data; REAL affinity"
        elif aff == "NUMERIC":
            if "DATE" in du or "TIME" in du:
                c.pg_type, c.reason = "timestamptz", "no data; declared date/time"
            else:
                c.pg_type, c.reason = "numeric", "no data; NUMERIC affinity"
        elif aff == "BLOB":
            c.pg_type, c.reason = "bytea", "no data; BLOB affinity"
        else:
            c.pg_type, c.reason = "text", "no data; TEXT affinity"
        return
    if c.identity:
        c.pg_type, c.reason = "bigint", "INTEGER PRIMARY KEY (rowid alias) -> identity"
        return
    if nb == nn:
        c.pg_type, c.reason = "bytea", "all values BLOB"
        return
    if nb:
        c.pg_type, c.conv = "bytea", "mixed_bytea"
        c.reason = f"mixed storage classes {sorted(c.classes)} incl. BLOB -> bytea (text as UTF-8)"
        return
    if ni == nn:
        if imin is not None and imin >= 0 and imax <= 1 and _bool_like(c):
            c.pg_type, c.reason = "boolean", "0/1 integers, declared/named boolean"
        else:
            c.pg_type, c.reason = "bigint", "all values INTEGER"
        return
    if nr == nn:
        c.pg_type, c.reason = "double precision", "all values REAL"
        return
    if nt == 0:  # integers and reals
        if max(abs(imin), abs(imax)) <= MAX_SAFE_INT:
            c.pg_type, c.conv, c.reason = "double precision", "float", \
                "INTEGER and REAL values (integers exact in float8)"
        else:
            c.pg_type, c.conv = "text", "mixed_text"
            c.reason = "mixed INTEGER/REAL with integers beyond 2^53 -> text (lossless)"
        return
    if nt != nn:
        if has_nul:
            c.pg_type, c.conv = "bytea", "mixed_bytea"
            c.reason = f"mixed storage classes {sorted(c.classes)} and NUL bytes -> bytea"
        else:
            c.pg_type, c.conv = "text", "mixed_text"
            c.reason = (f"mixed storage classes {sorted(c.classes)} -> text (integers as "
                        "decimal, reals as shortest round-trip repr)")
        return
    # all text
    if has_nul:
        c.pg_type, c.conv = "bytea", "utf8"
        c.reason = "TEXT containing NUL bytes -> bytea (UTF-8 bytes, lossless)"
        return
    col = qi(c.name)
    if nts == nn:
        ok = all(parse_ts(v) is not None for (v,) in con.execute(
            f"SELECT {col} FROM {qi(t.name)} WHERE {col} IS NOT NULL"))
        if ok:
            c.pg_type, c.conv = "timestamptz", "ts"
            c.reason = "every value is ISO-8601 (zone-less = UTC)"
            return
        c.reason = "ISO-8601-like text but not every value converts -> text"
    elif njs == nn:
        ok = all(json_ok(v) for (v,) in con.execute(
            f"SELECT {col} FROM {qi(t.name)} WHERE {col} IS NOT NULL"))
        if ok:
            c.pg_type, c.conv = "jsonb", "json"
            c.reason = "every value is a JSON object/array"
            return
        c.reason = "JSON-like text but not every value parses -> text"
    c.pg_type = "text"
    c.reason = c.reason or "all values TEXT"


def recheck_nul(db: Database, t: Table, warn) -> bool:
    """Find text columns with NUL bytes (after PostgreSQL refused them); remap to bytea."""
    con = open_snapshot(db.source.snapshot or db.source.path)
    changed = False
    try:
        for c in t.columns:
            if c.pg_type not in ("text",) or not c.classes.get("text"):
                continue
            q = qi(c.name)
            if con.execute(f"SELECT 1 FROM {qi(t.name)} WHERE typeof({q})='text' AND "
                           f"instr({q}, char(0)) > 0 LIMIT 1").fetchone():
                if c.conv == "mixed_text":
                    c.pg_type, c.conv = "bytea", "mixed_bytea"
                    c.reason = f"mixed storage classes {sorted(c.classes)} and NUL bytes -> bytea"
                else:
                    c.pg_type, c.conv = "bytea", "utf8"
                    c.reason = "TEXT containing NUL bytes -> bytea (UTF-8 bytes, lossless)"
                t.warnings.append(f"column {c.name}: {c.reason}")
                warn(f"{db.schema}.{t.name}.{c.name}: {c.reason}")
                changed = True
    finally:
        con.close()
    return changed


def _check_keys(db: Database, t: Table, warn) -> None:
    cols = {c.name: c for c in t.columns}
    if t.pk and t.rows:
        con = open_snapshot(db.source.snapshot or db.source.path)
        try:
            cond = " OR ".join(f"{qi(p)} IS NULL" for p in t.pk)
            n = con.execute(f"SELECT count(*) FROM {qi(t.name)} WHERE {cond}").fetchone()[0]
        finally:
            con.close()
        if n:
            t.pk_skipped = f"{n} rows with NULL in primary key -> unique index instead"
            t.indexes.insert(0, Index(pg_name(f"{t.name}_pkey"), list(t.pk),
                                      [False] * len(t.pk), True, False))
            t.warnings.append(t.pk_skipped)
            warn(f"{db.schema}.{t.name}: {t.pk_skipped}")
    for fk in t.fks:
        if fk.skipped:
            continue
        parent = next(p for p in db.tables if p.name == fk.ref_table)
        pcols = {c.name: c for c in parent.columns}
        if any(rc not in pcols for rc in fk.ref_columns) or any(fc not in cols for fc in fk.columns):
            fk.skipped = "unknown column in foreign key"
            continue
        keysets = [set(parent.pk)] if parent.pk and not parent.pk_skipped else []
        keysets += [set(i.columns) for i in parent.indexes if i.unique]
        if set(fk.ref_columns) not in keysets:
            fk.skipped = "parent columns are not a primary key or unique"
            continue
        for fc, rc in zip(fk.columns, fk.ref_columns):
            if cols[fc].pg_type != pcols[rc].pg_type:
                fk.skipped = (f"type mismatch: {fc} {cols[fc].pg_type} vs "
                              f"{fk.ref_table}.{rc} {pcols[rc].pg_type}")
    for fk in t.fks:
        if fk.skipped:
            t.warnings.append(f"foreign key {fk.name} not created: {fk.skipped}")
            warn(f"{db.schema}.{t.name}: foreign key {fk.name} not created: {fk.skipped}")


def count_orphans(db: Database) -> None:
    """Count child rows whose (non-NULL) key has no parent, per foreign key."""
    con = open_snapshot(db.source.snapshot or db.source.path)
    try:
        for t in db.tables:
            for fk in t.fks:
                if fk.ref_table not in {x.name for x in db.tables}:
                    continue
                notnull = " AND ".join(f"c.{qi(f)} IS NOT NULL" for f in fk.columns)
                match = " AND ".join(f"p.{qi(r)} = c.{qi(f)}"
                                     for f, r in zip(fk.columns, fk.ref_columns))
                fk.orphans = con.execute(
                    f"SELECT count(*) FROM {qi(t.name)} c WHERE {notnull} AND NOT EXISTS "
                    f"(SELECT 1 FROM {qi(fk.ref_table)} p WHERE {match})").fetchone()[0]
    finally:
        con.close()
