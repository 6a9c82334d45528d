"""SQLite side: discovery, snapshots, introspection, type inference, orphan counts."""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import gc
import glob
import hashlib
import json
import operator
import os
import re
import subprocess
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
    r"(?:(Z|z|[+-]\d{2}(?::?\d{2})?))?)?$")
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
    snapshot: str | None = None        # the copy that is read instead of ``path``
    held: sqlite3.Connection | None = None   # read transaction held on ``path`` instead


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


def ro_uri(path: str) -> str:
    """The SQLite URI that opens a source strictly read-only (never writes to it)."""
    return f"file:{quote(os.path.abspath(path))}?mode=ro"


def open_ro(path: str) -> sqlite3.Connection:
    return sqlite3.connect(ro_uri(path), uri=True, check_same_thread=False)


def take_snapshot(src: Source, workdir: str | None, hold: bool = False) -> str:
    """Online-consistent snapshot of the source; returns the path to read.

    Rollback-journal databases (ChatMRPT's) are read inside a read transaction on the
    source, whose SHARED lock keeps any writer from committing (writers wait on their
    busy timeout; readers go on), so everything read is one committed state:

    * ``hold=False``: the file is copied (``cp``: ``copy_file_range``) and the
      transaction ends with the copy; writers wait for the copy only.
    * ``hold=True``: no copy: the transaction is held (``src.held``) until
      :func:`release` and the source itself is read (read-only).  Writers wait for the
      whole run: for when the app is stopped, as the migration playbook does.

    WAL databases (committed pages may still be in the ``-wal`` file, and readers do not
    block writers): always copied, with the SQLite backup API in one step.
    """
    # The SHARED lock is a POSIX (fcntl) lock: closing *any* descriptor of the file in
    # this process would drop it.  So this process opens the file only through SQLite
    # (which defers such closes), and the copy is made by a child process (`cp`).
    s = open_ro(src.path)
    try:
        s.execute("BEGIN")
        # first read takes the SHARED lock (and rolls back a hot journal if one exists)
        s.execute("SELECT count(*) FROM sqlite_master").fetchone()
        wal = s.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        if hold and not wal:
            src.held, s = s, None
            return src.path
        fd, tmp = tempfile.mkstemp(prefix=f"chatmrpt-{src.schema}-", suffix=".db",
                                   dir=workdir)
        os.close(fd)
        src.snapshot = tmp
        if wal:
            d = sqlite3.connect(tmp)
            try:
                d.execute("PRAGMA journal_mode=OFF")
                d.execute("PRAGMA synchronous=OFF")
                s.backup(d)
            finally:
                d.close()
        else:
            subprocess.run(["cp", "--", src.path, tmp], check=True)   # copy_file_range
        s.execute("COMMIT")
    finally:
        if s is not None:
            s.close()
    return tmp


def release(src: Source) -> None:
    """End the snapshot: remove the copy or end the held read transaction."""
    if src.snapshot and os.path.exists(src.snapshot):
        os.unlink(src.snapshot)
    if src.held is not None:
        src.held.close()      # ends the read transaction (never wrote anything)
        src.held = None


@contextlib.contextmanager
def no_gc():
    """For the bulk loops: they create millions of acyclic row tuples, and the cyclic
    garbage collector's passes over them cost ~15 % of the client CPU and free nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
    conv: str | None = None      # load conversion (see loader.column_plan)
    reason: str = ""
    classes: dict = field(default_factory=dict)
    identity: bool = False
    nulls: int = 0
    # SQLite compares text bytewise (BINARY, its default collation), as PostgreSQL's "C"
    # collation does; False when the table declares other collations (not translated)
    binary_collation: bool = True

    @property
    def collation(self) -> str | None:
        return "C" if self.pg_type == "text" and self.binary_collation else None

    @property
    def pg_ddl_type(self) -> str:
        return f'{self.pg_type} COLLATE "{self.collation}"' if self.collation else self.pg_type


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
    rowid: bool = True           # False: WITHOUT ROWID table (the loader cannot split it)

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
_fromiso = _dt.datetime.fromisoformat


def ts_from_text(s: str) -> _dt.datetime:
    """Fast path used by the loader (C parser): naive UTC datetime.

    The analysis only maps a column to timestamptz when every value passes both this
    parser and the strict ISO_RE (:func:`_ts_batch`).
    """
    v = _fromiso(s)
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return v


TS_PREFIX_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}.{0,25}", re.S)
# ISO_RE with ASCII digits, as one fullmatch: a value that passes it passes TS_PREFIX_RE
# (ASCII date, <= 32 characters) and ISO_RE; a value that passes those two and Python's
# ISO parser passes it (the parser refuses non-ASCII digits and a trailing newline, which
# ISO_RE's \d and $ let through); one pass instead of two (~2.5x faster)
TS_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?")
_tzinfo = operator.attrgetter("tzinfo")


def _to_utc(parsed: list) -> list:
    """Naive UTC datetimes; OverflowError when a value's UTC instant is outside years
    1-9999 (e.g. 0001-01-01T00:30+01:00)."""
    if not any(map(_tzinfo, parsed)):
        return parsed
    return [v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo is not None else v
            for v in parsed]


def _ts_batch(values) -> list | None:
    """The timestamp rules on a batch of ``str`` values (no NULLs): every value matches
    the SQL prefix test (``GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'``, length
    <= 35) and the strict ISO_RE (basic-format times, other separators, a space before
    the zone and more than 6 fractional digits are text), Python's C ISO parser reads it,
    and its UTC instant is within years 1-9999.  The naive-UTC datetimes, or None.
    C-level ``map`` passes, no per-value Python code (but for values with a zone)."""
    if not all(map(TS_RE.fullmatch, values)):    # = TS_PREFIX_RE and ISO_RE (see TS_RE)
        return None
    try:
        return _to_utc(list(map(_fromiso, values)))
    except (ValueError, OverflowError):
        return None


def ts_column_check(cursor) -> tuple[bool, bool]:
    """(every value converts, some value carries a zone offset) for ``(value,)`` rows,
    by the rules of :func:`_ts_batch`."""
    aware = False
    while True:
        rows = cursor.fetchmany(100_000)
        if not rows:
            return True, aware
        (values,) = zip(*rows)
        if _ts_batch(values) is None:
            return False, False
        aware = aware or any(ISO_RE.match(v).group(8) for v in values)


class TimestampRejected(Exception):
    """A column planned as timestamptz holds a value that does not convert (loader)."""

    def __init__(self, column: str):
        super().__init__(column)
        self.column = column


def ts_values_check(values: list) -> list | None:
    """The :func:`ts_column_check` rules on one batch of ``str`` values (no NULLs), done by
    the loader while it streams (optimistic timestamptz): the naive-UTC datetimes, or
    None when a value does not convert (the column must then be text)."""
    return _ts_batch(values) if values else []


def _bad_constant(c):
    raise ValueError(c)


def json_ok(s: str) -> bool:
    """True when ``s`` is a JSON object/array (the column can be ``json``, which keeps the
    text exactly: PostgreSQL only checks the syntax, as ``json.loads`` does)."""
    try:
        v = json.loads(s, parse_constant=_bad_constant)
    except (ValueError, RecursionError):
        return False
    return isinstance(v, (dict, list))


class JsonRejected(Exception):
    """PostgreSQL refused a value of a column planned as json (loader)."""


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
        if sql and re.search(r"\bCOLLATE\b", sql, re.I):
            for c in cols:
                c.binary_collation = False
            w(f"table {tname}: COLLATE in its definition not translated: its text columns "
              "use the server's default collation")
        pk = [c.name for c in sorted((c for c in cols if c.pk), key=lambda c: c.pk)]
        t = Table(tname, cols, pk)
        t.rows = con.execute(f"SELECT count(*) FROM {qi(tname)}").fetchone()[0]  # for ordering
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
            analyse_table(con, db.schema, t, warn, nul_check)
    finally:
        con.close()
    check_foreign_keys(db, warn)


TS_OK_SQL = ("CASE WHEN {q} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' "
             "THEN length({q}) <= 35 ELSE 0 END")
JSON_OK_SQL = "substr({q}, 1, 1) IN ('{{', '[')"
SAMPLE = 64    # candidate pre-check on the first values, in SQL

_EXPECT = {"INTEGER": "integer", "NUMERIC": "integer", "REAL": "real", "TEXT": "text",
           "BLOB": "blob", "NONE": "text"}


STATS_SLOTS = 20    # 3-bit codes per SQLite integer (64 bits)
_CODE_CLASS = {1: "integer", 2: "real", 3: "text", 4: "blob", 5: "integer", 6: "integer"}


def stats_exprs(t: Table) -> list[str]:
    """SELECT expressions whose values, counted over every row (:class:`StreamStats`),
    give :func:`analyse_table` the numbers of its aggregate scan: per column a 3-bit code
    of the value's storage class (0 NULL, 2 REAL, 3 TEXT, 4 BLOB; an INTEGER is 1 when
    0 or 1, 5 within +-2^53, 6 beyond), and a last slot, 1 when a primary key column is
    NULL; ``STATS_SLOTS`` codes per expression.  The loader adds them to the SELECT it
    streams, so a big table is analysed without a scan of its own."""
    codes = []
    for c in t.columns:
        q = qi(c.name)
        if c.identity:   # the rowid: an integer
            codes.append("5")
        else:            # unary + : no affinity conversion of the literals
            codes.append(f"CASE typeof({q}) WHEN 'null' THEN 0 WHEN 'real' THEN 2 "
                         f"WHEN 'text' THEN 3 WHEN 'blob' THEN 4 ELSE CASE WHEN +{q} IN (0, 1) "
                         f"THEN 1 WHEN +{q} BETWEEN -{MAX_SAFE_INT} AND {MAX_SAFE_INT} "
                         "THEN 5 ELSE 6 END END")
    codes.append(("(" + " OR ".join(f"{qi(p)} IS NULL" for p in t.pk) + ")") if t.pk else "0")
    return [" + ".join(f"({e}) * {1 << (3 * j)}" for j, e in enumerate(codes[i:i + STATS_SLOTS]))
            for i in range(0, len(codes), STATS_SLOTS)]


class StreamStats:
    """Counts of the :func:`stats_exprs` values of every row (C-level ``Counter``
    updates per batch), decoded into what :func:`analyse_table` needs."""

    def __init__(self, t: Table):
        self.slots = len(t.columns) + 1
        self.counters = [collections.Counter() for _ in range(0, self.slots, STATS_SLOTS)]
        self.counted = None

    def set_counts(self, rows: int, counts: list, key_nulls: int) -> None:
        """The same numbers, counted by the loader's compiled reader: per column the rows
        of each code (a list indexed by code), and the rows with a NULL key."""
        self.counted = (rows, [collections.Counter({k: n for k, n in enumerate(c) if n})
                               for c in counts], key_nulls)

    def add(self, code_columns) -> None:
        for counter, col in zip(self.counters, code_columns):
            counter.update(col)

    def result(self):
        """(rows, per column {code: rows}, rows with a NULL in the primary key)."""
        if self.counted:
            return self.counted
        per = [collections.Counter() for _ in range(self.slots)]
        for i, counter in enumerate(self.counters):
            base = i * STATS_SLOTS
            for key, n in counter.items():
                for j in range(min(STATS_SLOTS, self.slots - base)):
                    per[base + j][(key >> (3 * j)) & 7] += n
        rows = sum(self.counters[0].values())
        return rows, per[:-1], per[-1][1]


def analyse_table(con, schema: str, t: Table, warn, nul_check: bool,
                  full_check: bool = True, sample: int | None = None,
                  stats: StreamStats | None = None) -> None:
    """Choose the column types of one table (and check its primary key for NULLs).

    One scan: count(*), per column count(c) and the number of values of the storage
    class its declared affinity expects (``typeof(c) = '...'`` does not load the value),
    and the rows with a NULL in the primary key.  Only columns where the counts differ
    get a full per-class count.  All-text columns whose first values look like
    timestamps/JSON are then checked completely (see :func:`ts_column_check`).

    ``full_check=False`` (migration): a timestamp candidate is planned as timestamptz with
    ``conv = "ts_check"`` without the full pass; the loader applies the same rules to
    every value while it streams (:func:`ts_values_check`) and, when one does not
    convert, reloads the table with that column as text (:func:`ts_rejected`).  A JSON
    candidate is planned as json with ``conv = "json_check"``: PostgreSQL checks every
    value in the COPY and, when it refuses one, the loader checks those columns here
    (:func:`json_rejected`) and reloads the table.

    ``sample=N``: the same on the first N rows only (the loader's speculative plan, see
    ``loader.load_table``); ``t.rows`` is left alone and every column may hold NULLs.

    ``stats``: the counts were gathered while the loader streamed every row
    (:func:`stats_exprs`): the same numbers as the aggregate scan (per column the
    storage classes; for min/max of the integers, whether they are all 0/1 and all within
    +-2^53, all :func:`_decide` asks of them), so no scan is made; the candidate tests on
    the first values are the same queries.
    """
    tn = qi(t.name) if not sample else f"(SELECT * FROM {qi(t.name)} LIMIT {int(sample)})"
    per_col = None
    if stats is not None:
        nrows, per_col, pk_nulls = stats.result()
        r = [nrows]
    else:
        exprs = ["count(*)"]
        for c in t.columns:
            q = qi(c.name)
            if c.identity:   # the rowid itself: always an integer (not read: 20 % of the scan)
                exprs += ["count(*)", "count(*)"]
            else:
                exprs += [f"count({q})", f"sum(typeof({q}) = '{_EXPECT[affinity(c.decl)]}')"]
        exprs.append(("sum(" + " OR ".join(f"{qi(p)} IS NULL" for p in t.pk) + ")")
                     if t.pk else "0")
        r = con.execute(f"SELECT {', '.join(exprs)} FROM {tn}").fetchone()
        pk_nulls = r[-1] or 0
    keyed = set(t.pk).union(*(i.columns for i in t.indexes if i.unique))
    indexed = set(t.pk).union(*(i.columns for i in t.indexes))
    if not sample:
        t.rows = r[0]
    for i, c in enumerate(t.columns):
        q = qi(c.name)
        if per_col is not None:
            k = per_col[i]
            nn = r[0] - k[0]
            counts = {"integer": 0, "real": 0, "text": 0, "blob": 0}
            for code, n in k.items():
                if code:
                    counts[_CODE_CLASS[code]] += n
        elif (nn := r[1 + 2 * i] or 0) == (r[2 + 2 * i] or 0):
            counts = {"integer": 0, "real": 0, "text": 0, "blob": 0}
            counts[_EXPECT[affinity(c.decl)]] = nn
        else:
            counts = dict(zip(("integer", "real", "text", "blob"), con.execute(
                f"SELECT sum(typeof({q})='integer'), sum(typeof({q})='real'), "
                f"sum(typeof({q})='text'), sum(typeof({q})='blob') FROM {tn}").fetchone()))
        ni, nr, nt, nb = (counts[k] or 0 for k in ("integer", "real", "text", "blob"))
        c.classes = {k: v for k, v in counts.items() if v}
        c.nulls = (r[0] - nn) if not sample else 1
        imin = imax = None
        if ni and (nr or _bool_like(c)) and per_col is not None:
            # what _decide asks: all 0/1?  all within +-2^53?
            imin, imax = 0, (1 if not (k[5] or k[6]) else 2 if not k[6] else MAX_SAFE_INT + 1)
        elif ni and (nr or _bool_like(c)):
            imin, imax = con.execute(
                f"SELECT min({q}), max({q}) FROM {tn} WHERE typeof({q}) = 'integer'").fetchone()
        ts = js = None
        if nt and nt == nn and not c.identity:
            head = f"(SELECT {q} AS v FROM {tn} WHERE {q} IS NOT NULL LIMIT {SAMPLE})"
            values = f"SELECT {q} FROM {tn} WHERE {q} IS NOT NULL"
            if not con.execute(f"SELECT 1 FROM {head} WHERE NOT "
                               f"({TS_OK_SQL.format(q='v')}) LIMIT 1").fetchone():
                ts = (ts_column_check(con.execute(values)) if full_check
                      else (True, None))
            elif not con.execute(f"SELECT 1 FROM {head} WHERE NOT "
                                 f"({JSON_OK_SQL.format(q='v')}) LIMIT 1").fetchone():
                js = json_column_check(con.execute(values)) if full_check else "unchecked"
        has_nul = False
        if nul_check and nt:
            has_nul = bool(con.execute(
                f"SELECT 1 FROM {tn} WHERE typeof({q})='text' "
                f"AND instr({q}, char(0)) > 0 LIMIT 1").fetchone())
        key_ts = c.name in keyed and ts is not None and ts[0]
        key_js = c.name in indexed and js not in (None, False)
        _decide(c, nn, ni, nr, nt, nb, imin, imax, None if key_ts else ts,
                None if key_js else js, has_nul)
        if key_ts:
            c.reason = ("ISO-8601 text in a primary key or UNIQUE: kept as text (two "
                        "spellings of one instant would collide)")
        elif key_js:
            c.reason = "JSON text in a key or index: kept as text (json has no btree operator class)"
        if c.reason.startswith("mixed") or c.conv == "utf8":
            t.warnings.append(f"column {c.name}: {c.reason}")
            warn(f"{schema}.{t.name}.{c.name}: {c.reason}")
    if pk_nulls:
        t.pk_skipped = f"{pk_nulls} rows with NULL in primary key -> unique index instead"
        t.indexes.insert(0, Index(pg_name(f"{t.name}_pkey"), list(t.pk),
                                  [False] * len(t.pk), True, False))
        t.warnings.append(t.pk_skipped)
        warn(f"{schema}.{t.name}: {t.pk_skipped}")


def _bool_like(c: Column) -> bool:
    return "BOOL" in c.decl.upper() or bool(BOOL_NAME_RE.match(c.name))


def _decide(c: Column, nn, ni, nr, nt, nb, imin, imax, ts, js, has_nul) -> None:
    """``ts``: None (not a candidate) or (all convert, some have a zone); ``js``: None
    (not a candidate), whether every value is a JSON object/array, or "unchecked" (the
    loader's COPY checks it, see :func:`json_rejected`)."""
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
    if ts is not None:
        if ts[0]:
            c.pg_type = "timestamptz"
            c.conv = "ts_check" if ts[1] is None else "ts" if ts[1] else "ts_naive"
            c.reason = "every value is ISO-8601 (zone-less = UTC)"
            return
        c.reason = "ISO-8601-like text but not every value converts -> text"
    elif js is not None:
        if not js:
            c.reason = "JSON-like text but not every value parses -> text"
        else:
            c.pg_type, c.conv = "json", "json_check" if js == "unchecked" else None
            c.reason = ("every value is a JSON object/array -> json (the text is kept exactly; "
                        "jsonb would change -0.0, 1e2 and duplicate keys)")
            return
    c.pg_type = "text"
    c.reason = c.reason or "all values TEXT"


def json_column_check(cursor) -> bool:
    """Every ``(value,)`` row is a JSON object or array."""
    return all(v[:1] in ("{", "[", b"{", b"[") and json_ok(v) for (v,) in cursor)


def json_rejected(con, schema: str, t: Table, warn) -> bool:
    """PostgreSQL refused a value of a column planned as json without the full check
    (``json_check``): check those columns completely; the ones that fail become text."""
    changed = False
    for c in t.columns:
        if c.conv != "json_check":
            continue
        q = qi(c.name)
        c.conv = None
        if not json_column_check(con.execute(f"SELECT CAST({q} AS TEXT) FROM {qi(t.name)} "
                                             f"WHERE {q} IS NOT NULL")):
            c.pg_type = "text"
            c.reason = "JSON-like text but not every value parses -> text"
            changed = True
    return changed


def ts_rejected(schema: str, t: Table, column: str, warn) -> None:
    """The loader found a value of a planned timestamptz column that does not convert:
    the column becomes text (what the full analysis would have chosen)."""
    c = next(c for c in t.columns if c.name == column)
    c.pg_type, c.conv = "text", None
    c.reason = "ISO-8601-like text but not every value converts -> text"


def recheck_nul(con, schema: str, t: Table, warn) -> bool:
    """Find text columns with NUL bytes (after PostgreSQL refused them); remap to bytea."""
    changed = False
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
            warn(f"{schema}.{t.name}.{c.name}: {c.reason}")
            changed = True
    return changed


def check_foreign_keys(db: Database, warn) -> None:
    """Skip (with a warning) foreign keys PostgreSQL cannot have after type mapping."""
    for t in db.tables:
        _check_fks(db, t, warn)


def _check_fks(db: Database, t: Table, warn) -> None:
    cols = {c.name: c for c in t.columns}
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
