/* The loader's compiled reader: the rows of a SQLite SELECT, encoded as PostgreSQL
 * binary COPY rows, with no Python object per value.
 *
 * copy(uri, sql, kinds, key_columns, write, chunk, every, hook)
 *     -> (rows, per column the counts of the 7 storage class codes, rows with a NULL key)
 *
 * Reads the database at ``uri`` (an SQLite URI, opened read-only), runs ``sql`` and
 * encodes every row, column i by ``kinds[i]``:
 *
 *   b  text, json, bytea: the value's bytes (text as UTF-8);
 *   m  several storage classes as text: text and blob as is, an integer in decimal,
 *      a real as Python's repr();
 *   i  bigint (8 bytes); f  double precision (an integer converted); o  boolean;
 *   n  numeric: planned only for a column without data, so every value is NULL (another
 *      is sent as 0, see below);
 *   t  timestamptz: ISO-8601 text read as Python 3.11's datetime.fromisoformat reads
 *      the strings the analysis' TS_RE accepts (no zone: UTC), sent as microseconds
 *      since 2000-01-01 UTC; a value that does not convert raises
 *      BadTimestamp(column index).
 *
 * The loader checks every plan against the counts (the plan of a big table is made on
 * a sample): a value of a storage class its column's kind does not expect is encoded
 * somehow (a numeric as 0) and the table is loaded again with the full plan, so such
 * bytes never commit.
 * Per value the code counted is the analysis' (source.stats_exprs): 0 NULL, 2 REAL,
 * 3 TEXT, 4 BLOB; an INTEGER is 1 when 0 or 1, 5 within +-2^53, 6 beyond.
 *
 * ``write(bytes)`` gets about ``chunk`` bytes of rows at a time; ``hook(rows)``, unless
 * None, is called after every ``every`` rows and after the last.  The GIL is released
 * while rows are read and encoded (psycopg's writer thread sends the previous chunk
 * meanwhile).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static PyObject *BadTimestamp;

#define NCODES 7
#define MAX_SAFE_INT 9007199254740992LL          /* 2^53 */
#define PG_EPOCH_S 946684800LL                   /* 2000-01-01 in Unix seconds */

/* ------------------------------------------------------------------ output buffer */
typedef struct {
    unsigned char *p;
    size_t len, cap;
} buf_t;

static int reserve(buf_t *b, size_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1 << 20;
    while (cap < b->len + n)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void put16(buf_t *b, uint16_t v)
{
    b->p[b->len++] = v >> 8;
    b->p[b->len++] = v & 0xff;
}

static void put32(buf_t *b, uint32_t v)
{
    for (int s = 24; s >= 0; s -= 8)
        b->p[b->len++] = (v >> s) & 0xff;
}

static void put64(buf_t *b, uint64_t v)
{
    for (int s = 56; s >= 0; s -= 8)
        b->p[b->len++] = (v >> s) & 0xff;
}

/* ------------------------------------------------------------------ timestamps */
static int digits(const unsigned char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned d = (unsigned)s[i] - '0';
        if (d > 9)
            return -1;
        v = v * 10 + (int)d;
    }
    *out = v;
    return 0;
}

/* days from 1970-01-01 to y-m-d (proleptic Gregorian) */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int month_days(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return days[m - 1] + (m == 2 && leap);
}

/* YYYY-MM-DD[(T| )HH:MM[:SS[.f{1,6}]][Z|(+|-)HH[[:]MM]]]: 0 and *us, else -1.  Python
 * 3.11 refuses year 0, out-of-range fields and offsets of 24 h or more, takes offset
 * minutes of 60 or more as they add up, and astimezone(UTC) refuses an instant outside
 * years 1-9999; so does this. */
static int parse_ts(const unsigned char *s, int n, int64_t *us)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, off = 0;
    if (n < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-'
        || digits(s + 8, 2, &d))
        return -1;
    int i = 10;
    if (i < n) {
        if ((s[i] != 'T' && s[i] != ' ') || n < i + 6 || digits(s + i + 1, 2, &h)
            || s[i + 3] != ':' || digits(s + i + 4, 2, &mi))
            return -1;
        i += 6;
        if (i < n && s[i] == ':') {
            if (n < i + 3 || digits(s + i + 1, 2, &sec))
                return -1;
            i += 3;
            if (i < n && s[i] == '.') {
                int k = 0;
                for (i++; i < n && k < 6 && s[i] >= '0' && s[i] <= '9'; i++, k++)
                    frac = frac * 10 + (s[i] - '0');
                if (k == 0)
                    return -1;
                for (; k < 6; k++)
                    frac *= 10;
            }
        }
        if (i < n) {
            if (s[i] == 'Z') {
                i++;
            } else if (s[i] == '+' || s[i] == '-') {
                int sign = s[i] == '-' ? -1 : 1, oh, om = 0;
                if (n < i + 3 || digits(s + i + 1, 2, &oh))
                    return -1;
                i += 3;
                if (i < n) {
                    if (s[i] == ':')
                        i++;
                    if (n < i + 2 || digits(s + i, 2, &om))
                        return -1;
                    i += 2;
                }
                off = sign * (oh * 60 + om);
                if (off <= -1440 || off >= 1440)
                    return -1;
            } else {
                return -1;
            }
        }
        if (i != n)
            return -1;
    }
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) || h > 23 || mi > 59
        || sec > 59)
        return -1;
    int64_t t = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec - off * 60;
    if (t < days_from_civil(1, 1, 1) * 86400 || t >= days_from_civil(10000, 1, 1) * 86400)
        return -1;
    *us = (t - PG_EPOCH_S) * 1000000 + frac;
    return 0;
}

/* ------------------------------------------------------------------ the rows */
static int code_of(sqlite3_stmt *st, int i, int type)
{
    switch (type) {
    case SQLITE_NULL: return 0;
    case SQLITE_FLOAT: return 2;
    case SQLITE_TEXT: return 3;
    case SQLITE_BLOB: return 4;
    default: {
        sqlite3_int64 v = sqlite3_column_int64(st, i);
        return (v == 0 || v == 1) ? 1 : (v >= -MAX_SAFE_INT && v <= MAX_SAFE_INT) ? 5 : 6;
    }
    }
}

static int put_bytes(buf_t *b, const void *p, int n)
{
    if (reserve(b, 4 + (size_t)n))
        return -1;
    put32(b, (uint32_t)n);
    if (n)
        memcpy(b->p + b->len, p, (size_t)n);
    b->len += (size_t)n;
    return 0;
}

/* the value as text (its bytes; an integer in decimal, a real as repr()) */
static int put_mixed(buf_t *b, sqlite3_stmt *st, int i, int type, PyThreadState **ts)
{
    char tmp[32];
    if (type == SQLITE_BLOB) {
        const void *p = sqlite3_column_blob(st, i);
        return put_bytes(b, p, sqlite3_column_bytes(st, i));
    }
    if (type == SQLITE_INTEGER) {
        int n = snprintf(tmp, sizeof tmp, "%lld", (long long)sqlite3_column_int64(st, i));
        return put_bytes(b, tmp, n);
    }
    if (type == SQLITE_FLOAT) {
        if (*ts)
            PyEval_RestoreThread(*ts);
        char *r = PyOS_double_to_string(sqlite3_column_double(st, i), 'r', 0,
                                        Py_DTSF_ADD_DOT_0, NULL);
        int rc = r ? put_bytes(b, r, (int)strlen(r)) : -1;
        PyMem_Free(r);
        if (*ts)
            *ts = PyEval_SaveThread();
        return rc;
    }
    const unsigned char *p = sqlite3_column_text(st, i);
    return put_bytes(b, p, sqlite3_column_bytes(st, i));
}

typedef struct {
    const char *kinds;
    int ncol;
    int *key;
    int nkey;
    long long rows, key_nulls;
    long long *counts;          /* ncol x NCODES */
    int bad_ts;                 /* column of a timestamp that does not convert, or -1 */
} scan_t;

/* one row into b: 0, or -1 (out of memory / bad timestamp: sc->bad_ts) */
static int put_row(buf_t *b, sqlite3_stmt *st, scan_t *sc, PyThreadState **ts)
{
    if (reserve(b, 2))
        return -1;
    put16(b, (uint16_t)sc->ncol);
    for (int i = 0; i < sc->ncol; i++) {
        int type = sqlite3_column_type(st, i);
        sc->counts[i * NCODES + code_of(st, i, type)]++;
        if (type == SQLITE_NULL) {
            if (reserve(b, 4))
                return -1;
            put32(b, 0xffffffffu);
            continue;
        }
        int rc = 0;
        switch (sc->kinds[i]) {
        case 'i':
            if ((rc = reserve(b, 12)) == 0) {
                put32(b, 8);
                put64(b, (uint64_t)sqlite3_column_int64(st, i));
            }
            break;
        case 'f':
            if ((rc = reserve(b, 12)) == 0) {
                double v = sqlite3_column_double(st, i);
                uint64_t u;
                memcpy(&u, &v, 8);
                put32(b, 8);
                put64(b, u);
            }
            break;
        case 'o':
            if ((rc = reserve(b, 5)) == 0) {
                put32(b, 1);
                b->p[b->len++] = sqlite3_column_int64(st, i) != 0;
            }
            break;
        case 't': {
            int64_t us;
            const unsigned char *p = type == SQLITE_TEXT ? sqlite3_column_text(st, i) : NULL;
            if (!p || parse_ts(p, sqlite3_column_bytes(st, i), &us)) {
                sc->bad_ts = i;
                return -1;
            }
            if ((rc = reserve(b, 12)) == 0) {
                put32(b, 8);
                put64(b, (uint64_t)us);
            }
            break;
        }
        case 'm':
            rc = put_mixed(b, st, i, type, ts);
            break;
        case 'n':   /* numeric 0: no digits, weight, sign or scale */
            if ((rc = reserve(b, 12)) == 0) {
                put32(b, 8);
                put64(b, 0);
            }
            break;
        default:   /* 'b' */
            if (type == SQLITE_BLOB) {
                const void *p = sqlite3_column_blob(st, i);
                rc = put_bytes(b, p, sqlite3_column_bytes(st, i));
            } else {
                const unsigned char *p = sqlite3_column_text(st, i);
                rc = put_bytes(b, p, sqlite3_column_bytes(st, i));
            }
        }
        if (rc)
            return -1;
    }
    for (int k = 0; k < sc->nkey; k++) {
        if (sqlite3_column_type(st, sc->key[k]) == SQLITE_NULL) {
            sc->key_nulls++;
            break;
        }
    }
    sc->rows++;
    return 0;
}

static int flush(buf_t *b, PyObject *write)
{
    PyObject *data = PyBytes_FromStringAndSize((const char *)b->p, (Py_ssize_t)b->len);
    if (!data)
        return -1;
    PyObject *r = PyObject_CallOneArg(write, data);
    Py_DECREF(data);
    if (!r)
        return -1;
    Py_DECREF(r);
    b->len = 0;
    return 0;
}

static PyObject *sqlite_error(sqlite3 *db, const char *what)
{
    PyErr_Format(PyExc_RuntimeError, "SQLite %s: %s", what, db ? sqlite3_errmsg(db) : "no memory");
    return NULL;
}

static PyObject *copy(PyObject *self, PyObject *args)
{
    const char *uri, *sql, *kinds;
    Py_ssize_t nkinds, chunk, every;
    PyObject *key_seq, *write, *hook;
    if (!PyArg_ParseTuple(args, "ssy#OOnnO", &uri, &sql, &kinds, &nkinds, &key_seq, &write,
                          &chunk, &every, &hook))
        return NULL;
    for (Py_ssize_t i = 0; i < nkinds; i++)
        if (!strchr("bmifotn", kinds[i]) || !kinds[i])
            return PyErr_Format(PyExc_ValueError, "unknown column kind %c", kinds[i]);
    if (every < 1 || chunk < 1)
        return PyErr_Format(PyExc_ValueError, "chunk and every must be positive");
    PyObject *keys = PySequence_Fast(key_seq, "key_columns must be a sequence");
    if (!keys)
        return NULL;

    PyObject *result = NULL;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    buf_t b = {0};
    scan_t sc = {kinds, (int)nkinds, NULL, (int)PySequence_Fast_GET_SIZE(keys), 0, 0, NULL, -1};
    sc.key = calloc((size_t)sc.nkey + 1, sizeof(int));
    sc.counts = calloc((size_t)nkinds * NCODES + 1, sizeof(long long));
    if (!sc.key || !sc.counts) {
        PyErr_NoMemory();
        goto done;
    }
    for (int k = 0; k < sc.nkey; k++) {
        Py_ssize_t v = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(keys, k));
        if (v == -1 && PyErr_Occurred())
            goto done;
        if (v < 0 || v >= nkinds) {
            PyErr_Format(PyExc_ValueError, "key column %zd out of range", v);
            goto done;
        }
        sc.key[k] = (int)v;
    }
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK) {
        sqlite_error(db, "open");
        goto done;
    }
    sqlite3_exec(db, "PRAGMA mmap_size=4294967296; PRAGMA cache_size=-65536", NULL, NULL, NULL);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite_error(db, "prepare");
        goto done;
    }
    if (sqlite3_column_count(st) != nkinds) {
        PyErr_Format(PyExc_ValueError, "%d columns selected, %zd kinds",
                     sqlite3_column_count(st), nkinds);
        goto done;
    }
    int rc = SQLITE_ROW, failed = 0;
    long long hooked = 0;
    while (rc == SQLITE_ROW && !failed) {
        PyThreadState *ts = PyEval_SaveThread();
        /* rows until a chunk is full or a hook is due, without the GIL */
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (put_row(&b, st, &sc, &ts)) {
                failed = 1;
                break;
            }
            if (b.len >= (size_t)chunk || (hook != Py_None && sc.rows % every == 0))
                break;
        }
        PyEval_RestoreThread(ts);
        if (failed)
            break;
        if ((b.len >= (size_t)chunk || rc != SQLITE_ROW) && b.len && flush(&b, write))
            goto done;
        /* after every ``every`` rows and after the last ones */
        if (hook != Py_None && sc.rows > hooked && (sc.rows % every == 0 || rc != SQLITE_ROW)) {
            PyObject *r = PyObject_CallFunction(hook, "L", sc.rows);
            if (!r)
                goto done;
            Py_DECREF(r);
            hooked = sc.rows;
        }
    }
    if (failed) {
        PyObject *column = sc.bad_ts >= 0 ? PyLong_FromLong(sc.bad_ts) : NULL;
        if (column) {
            PyErr_SetObject(BadTimestamp, column);
            Py_DECREF(column);
        } else if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    if (rc != SQLITE_DONE) {
        sqlite_error(db, "step");
        goto done;
    }
    PyObject *counts = PyList_New(nkinds);
    if (!counts)
        goto done;
    for (Py_ssize_t i = 0; i < nkinds; i++) {
        PyObject *per = PyList_New(NCODES);
        if (!per) {
            Py_DECREF(counts);
            goto done;
        }
        for (int c = 0; c < NCODES; c++)
            PyList_SET_ITEM(per, c, PyLong_FromLongLong(sc.counts[i * NCODES + c]));
        PyList_SET_ITEM(counts, i, per);
    }
    result = Py_BuildValue("LNL", sc.rows, counts, sc.key_nulls);
done:
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(b.p);
    free(sc.key);
    free(sc.counts);
    Py_DECREF(keys);
    return result;
}

/* parse_timestamp(text: bytes) -> microseconds since 2000-01-01 UTC, or None (tests) */
static PyObject *parse_timestamp(PyObject *self, PyObject *arg)
{
    char *s;
    Py_ssize_t n;
    int64_t us;
    if (PyBytes_AsStringAndSize(arg, &s, &n))
        return NULL;
    if (n > INT32_MAX || parse_ts((const unsigned char *)s, (int)n, &us))
        Py_RETURN_NONE;
    return PyLong_FromLongLong(us);
}

static PyMethodDef methods[] = {
    {"copy", copy, METH_VARARGS, "Encode a SELECT's rows as binary COPY rows (see the module)."},
    {"parse_timestamp", parse_timestamp, METH_O, "The timestamp rule on one value (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_copyrows", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__copyrows(void)
{
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    BadTimestamp = PyErr_NewException("_copyrows.BadTimestamp", PyExc_ValueError, NULL);
    if (!BadTimestamp || PyModule_AddObjectRef(m, "BadTimestamp", BadTimestamp) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
