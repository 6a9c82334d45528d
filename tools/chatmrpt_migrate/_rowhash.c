/* The verification's compiled source side: the checksum of a SQLite SELECT's rows, with
 * the canonical fields of verify.py (its module docstring), written apart from the
 * loader's reader (_copyrows.c) and sharing no code with it.
 *
 * checksum(uri, sql, kinds, functions, batch) -> (rows, sum of the row hashes)
 *
 * Column i's field by kinds[i] (NULL is always \xff):
 *
 *   x  text, json: the text's UTF-8 bytes (a blob's bytes);
 *   m  several storage classes as text: text and blob as is, an integer in decimal, a
 *      real as Python's repr();
 *   d  bigint, numeric: the integer in decimal;
 *   o  boolean: 0 -> f, 1 -> t, anything else -> ?;
 *   f  double precision: the 8 IEEE-754 bytes (an integer converted), big-endian, hex;
 *   h  bytea: the bytes in hex;  H  several storage classes as bytea: the m text in hex;
 *   p  made by Python: functions[i] gets the column's values of up to ``batch`` rows
 *      (as Python's sqlite3 gives them, text as bytes) and returns their fields
 *      (timestamps: read with Python's own ISO parser, not the loader's).
 *
 * A value of a storage class the kind does not take (the plan says every value has
 * one) raises ValueError.  A row's hash: the first 8 bytes of the MD5 of its fields
 * joined by NUL, as a signed big-endian integer; the sum is exact.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ MD5 (RFC 1321) */
#define F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define H(x, y, z) ((x) ^ (y) ^ (z))
#define I(x, y, z) ((y) ^ ((x) | ~(z)))
#define STEP(f, a, b, c, d, xk, t, s) \
    (a) += f((b), (c), (d)) + (xk) + (t); \
    (a) = ((a) << (s)) | ((a) >> (32 - (s))); \
    (a) += (b)

static void md5_block(uint32_t st[4], const unsigned char *p)
{
    uint32_t x[16], a = st[0], b = st[1], c = st[2], d = st[3];
    for (int i = 0; i < 16; i++)
        x[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16
               | (uint32_t)p[4 * i + 3] << 24;
    STEP(F, a, b, c, d, x[0], 0xd76aa478, 7);
    STEP(F, d, a, b, c, x[1], 0xe8c7b756, 12);
    STEP(F, c, d, a, b, x[2], 0x242070db, 17);
    STEP(F, b, c, d, a, x[3], 0xc1bdceee, 22);
    STEP(F, a, b, c, d, x[4], 0xf57c0faf, 7);
    STEP(F, d, a, b, c, x[5], 0x4787c62a, 12);
    STEP(F, c, d, a, b, x[6], 0xa8304613, 17);
    STEP(F, b, c, d, a, x[7], 0xfd469501, 22);
    STEP(F, a, b, c, d, x[8], 0x698098d8, 7);
    STEP(F, d, a, b, c, x[9], 0x8b44f7af, 12);
    STEP(F, c, d, a, b, x[10], 0xffff5bb1, 17);
    STEP(F, b, c, d, a, x[11], 0x895cd7be, 22);
    STEP(F, a, b, c, d, x[12], 0x6b901122, 7);
    STEP(F, d, a, b, c, x[13], 0xfd987193, 12);
    STEP(F, c, d, a, b, x[14], 0xa679438e, 17);
    STEP(F, b, c, d, a, x[15], 0x49b40821, 22);
    STEP(G, a, b, c, d, x[1], 0xf61e2562, 5);
    STEP(G, d, a, b, c, x[6], 0xc040b340, 9);
    STEP(G, c, d, a, b, x[11], 0x265e5a51, 14);
    STEP(G, b, c, d, a, x[0], 0xe9b6c7aa, 20);
    STEP(G, a, b, c, d, x[5], 0xd62f105d, 5);
    STEP(G, d, a, b, c, x[10], 0x02441453, 9);
    STEP(G, c, d, a, b, x[15], 0xd8a1e681, 14);
    STEP(G, b, c, d, a, x[4], 0xe7d3fbc8, 20);
    STEP(G, a, b, c, d, x[9], 0x21e1cde6, 5);
    STEP(G, d, a, b, c, x[14], 0xc33707d6, 9);
    STEP(G, c, d, a, b, x[3], 0xf4d50d87, 14);
    STEP(G, b, c, d, a, x[8], 0x455a14ed, 20);
    STEP(G, a, b, c, d, x[13], 0xa9e3e905, 5);
    STEP(G, d, a, b, c, x[2], 0xfcefa3f8, 9);
    STEP(G, c, d, a, b, x[7], 0x676f02d9, 14);
    STEP(G, b, c, d, a, x[12], 0x8d2a4c8a, 20);
    STEP(H, a, b, c, d, x[5], 0xfffa3942, 4);
    STEP(H, d, a, b, c, x[8], 0x8771f681, 11);
    STEP(H, c, d, a, b, x[11], 0x6d9d6122, 16);
    STEP(H, b, c, d, a, x[14], 0xfde5380c, 23);
    STEP(H, a, b, c, d, x[1], 0xa4beea44, 4);
    STEP(H, d, a, b, c, x[4], 0x4bdecfa9, 11);
    STEP(H, c, d, a, b, x[7], 0xf6bb4b60, 16);
    STEP(H, b, c, d, a, x[10], 0xbebfbc70, 23);
    STEP(H, a, b, c, d, x[13], 0x289b7ec6, 4);
    STEP(H, d, a, b, c, x[0], 0xeaa127fa, 11);
    STEP(H, c, d, a, b, x[3], 0xd4ef3085, 16);
    STEP(H, b, c, d, a, x[6], 0x04881d05, 23);
    STEP(H, a, b, c, d, x[9], 0xd9d4d039, 4);
    STEP(H, d, a, b, c, x[12], 0xe6db99e5, 11);
    STEP(H, c, d, a, b, x[15], 0x1fa27cf8, 16);
    STEP(H, b, c, d, a, x[2], 0xc4ac5665, 23);
    STEP(I, a, b, c, d, x[0], 0xf4292244, 6);
    STEP(I, d, a, b, c, x[7], 0x432aff97, 10);
    STEP(I, c, d, a, b, x[14], 0xab9423a7, 15);
    STEP(I, b, c, d, a, x[5], 0xfc93a039, 21);
    STEP(I, a, b, c, d, x[12], 0x655b59c3, 6);
    STEP(I, d, a, b, c, x[3], 0x8f0ccc92, 10);
    STEP(I, c, d, a, b, x[10], 0xffeff47d, 15);
    STEP(I, b, c, d, a, x[1], 0x85845dd1, 21);
    STEP(I, a, b, c, d, x[8], 0x6fa87e4f, 6);
    STEP(I, d, a, b, c, x[15], 0xfe2ce6e0, 10);
    STEP(I, c, d, a, b, x[6], 0xa3014314, 15);
    STEP(I, b, c, d, a, x[13], 0x4e0811a1, 21);
    STEP(I, a, b, c, d, x[4], 0xf7537e82, 6);
    STEP(I, d, a, b, c, x[11], 0xbd3af235, 10);
    STEP(I, c, d, a, b, x[2], 0x2ad7d2bb, 15);
    STEP(I, b, c, d, a, x[9], 0xeb86d391, 21);
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

/* the first 8 bytes of MD5(p[0:n]) as a signed big-endian integer */
static int64_t md5_first8(const unsigned char *p, size_t n)
{
    uint32_t st[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    unsigned char tail[128];
    size_t full = n & ~(size_t)63, rest = n - full;
    for (size_t i = 0; i < full; i += 64)
        md5_block(st, p + i);
    memcpy(tail, p + full, rest);
    tail[rest] = 0x80;
    size_t len = rest < 56 ? 64 : 128;
    memset(tail + rest + 1, 0, len - rest - 1);
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++)
        tail[len - 8 + i] = (unsigned char)(bits >> (8 * i));
    md5_block(st, tail);
    if (len == 128)
        md5_block(st, tail + 64);
    uint64_t v = 0;
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 4; i++)
            v = v << 8 | ((st[w] >> (8 * i)) & 0xff);
    return (int64_t)v;
}

/* ------------------------------------------------------------------ fields */
typedef struct {
    unsigned char *p;
    size_t len, cap;
} buf_t;

static int reserve(buf_t *b, size_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + n)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int append(buf_t *b, const void *p, size_t n)
{
    if (reserve(b, n))
        return -1;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static int append_hex(buf_t *b, const unsigned char *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    if (reserve(b, 2 * n))
        return -1;
    for (size_t i = 0; i < n; i++) {
        b->p[b->len++] = digits[p[i] >> 4];
        b->p[b->len++] = digits[p[i] & 15];
    }
    return 0;
}

/* the value as the text of a column of several storage classes, into tmp (or *out) */
static int mixed_text(sqlite3_stmt *st, int i, int type, buf_t *tmp)
{
    tmp->len = 0;
    if (type == SQLITE_INTEGER) {
        char s[32];
        int n = snprintf(s, sizeof s, "%lld", (long long)sqlite3_column_int64(st, i));
        return append(tmp, s, (size_t)n);
    }
    if (type == SQLITE_FLOAT) {
        char *r = PyOS_double_to_string(sqlite3_column_double(st, i), 'r', 0,
                                        Py_DTSF_ADD_DOT_0, NULL);
        int rc = r ? append(tmp, r, strlen(r)) : -1;
        PyMem_Free(r);
        return rc;
    }
    const void *p = type == SQLITE_BLOB ? sqlite3_column_blob(st, i)
                                        : (const void *)sqlite3_column_text(st, i);
    return append(tmp, p, (size_t)sqlite3_column_bytes(st, i));
}

static const char *CLASS[] = {"", "INTEGER", "REAL", "TEXT", "BLOB", "NULL"};

/* column i's field appended to b; -1 with a Python exception set */
static int field(buf_t *b, buf_t *tmp, sqlite3_stmt *st, int i, char kind)
{
    int type = sqlite3_column_type(st, i);
    if (type == SQLITE_NULL)
        return append(b, "\xff", 1) ? (PyErr_NoMemory(), -1) : 0;
    int rc = 0;
    switch (kind) {
    case 'x':
    case 'h':
        if (type != SQLITE_TEXT && type != SQLITE_BLOB)
            goto wrong;
        {
            const unsigned char *p = type == SQLITE_BLOB ? sqlite3_column_blob(st, i)
                                                         : sqlite3_column_text(st, i);
            size_t n = (size_t)sqlite3_column_bytes(st, i);
            rc = kind == 'x' ? append(b, p, n) : append_hex(b, p, n);
        }
        break;
    case 'm':
    case 'H':
        if (mixed_text(st, i, type, tmp))
            return PyErr_Occurred() ? -1 : (PyErr_NoMemory(), -1);
        rc = kind == 'm' ? append(b, tmp->p, tmp->len) : append_hex(b, tmp->p, tmp->len);
        break;
    case 'd': {
        if (type != SQLITE_INTEGER)
            goto wrong;
        char s[32];
        int n = snprintf(s, sizeof s, "%lld", (long long)sqlite3_column_int64(st, i));
        rc = append(b, s, (size_t)n);
        break;
    }
    case 'o': {
        /* Python's dict lookup: 0 and 0.0 -> f, 1 and 1.0 -> t */
        const char *f = "?";
        if (type == SQLITE_INTEGER) {
            sqlite3_int64 v = sqlite3_column_int64(st, i);
            f = v == 0 ? "f" : v == 1 ? "t" : "?";
        } else if (type == SQLITE_FLOAT) {
            double v = sqlite3_column_double(st, i);
            f = v == 0 ? "f" : v == 1 ? "t" : "?";
        }
        rc = append(b, f, 1);
        break;
    }
    case 'f': {
        double v;
        if (type == SQLITE_FLOAT)
            v = sqlite3_column_double(st, i);
        else if (type == SQLITE_INTEGER)
            v = (double)sqlite3_column_int64(st, i);
        else
            goto wrong;
        unsigned char be[8];
        uint64_t u;
        memcpy(&u, &v, 8);
        for (int k = 0; k < 8; k++)
            be[k] = (unsigned char)(u >> (56 - 8 * k));
        rc = append_hex(b, be, 8);
        break;
    }
    default:
        PyErr_Format(PyExc_ValueError, "unknown field kind %c", kind);
        return -1;
    }
    if (rc)
        PyErr_NoMemory();
    return rc;
wrong:
    PyErr_Format(PyExc_ValueError, "column %d: a %s value where the plan has none (kind %c)",
                 i, CLASS[type], kind);
    return -1;
}

/* the value as Python's sqlite3 gives it with text_factory=bytes */
static PyObject *py_value(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: return PyLong_FromLongLong(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT: return PyFloat_FromDouble(sqlite3_column_double(st, i));
    case SQLITE_NULL: Py_RETURN_NONE;
    case SQLITE_BLOB: {
        const void *p = sqlite3_column_blob(st, i);
        return PyBytes_FromStringAndSize(p, sqlite3_column_bytes(st, i));
    }
    default: {
        const unsigned char *p = sqlite3_column_text(st, i);
        return PyBytes_FromStringAndSize((const char *)p, sqlite3_column_bytes(st, i));
    }
    }
}

typedef struct {
    size_t off, len;   /* a field in the batch's arena; len SIZE_MAX: made by Python */
} span_t;

static PyObject *checksum(PyObject *self, PyObject *args)
{
    const char *uri, *sql, *kinds;
    Py_ssize_t ncol, batch;
    PyObject *fns_arg;
    if (!PyArg_ParseTuple(args, "ssy#On", &uri, &sql, &kinds, &ncol, &fns_arg, &batch))
        return NULL;
    if (batch < 1 || ncol < 1)
        return PyErr_Format(PyExc_ValueError, "batch and the columns must be positive");
    PyObject *fns = PySequence_Fast(fns_arg, "functions must be a sequence");
    if (!fns)
        return NULL;
    if (PySequence_Fast_GET_SIZE(fns) != ncol) {
        Py_DECREF(fns);
        return PyErr_Format(PyExc_ValueError, "%zd kinds, %zd functions", ncol,
                            PySequence_Fast_GET_SIZE(fns));
    }
    PyObject *result = NULL, **values = calloc((size_t)ncol, sizeof(PyObject *));
    PyObject **made = calloc((size_t)ncol, sizeof(PyObject *));
    span_t *spans = malloc(sizeof(span_t) * (size_t)ncol * (size_t)batch);
    buf_t arena = {0}, row = {0}, tmp = {0};
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    __int128 total = 0;
    long long rows = 0;
    if (!values || !made || !spans) {
        PyErr_NoMemory();
        goto done;
    }
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK
        || sqlite3_exec(db, "PRAGMA mmap_size=4294967296; PRAGMA cache_size=-65536",
                        NULL, NULL, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        PyErr_Format(PyExc_RuntimeError, "SQLite: %s", db ? sqlite3_errmsg(db) : "no memory");
        goto done;
    }
    if (sqlite3_column_count(st) != ncol) {
        PyErr_Format(PyExc_ValueError, "%d columns selected, %zd kinds",
                     sqlite3_column_count(st), ncol);
        goto done;
    }
    int rc = SQLITE_ROW;
    while (rc == SQLITE_ROW) {
        Py_ssize_t n = 0;
        arena.len = 0;
        for (Py_ssize_t i = 0; i < ncol; i++)
            if (kinds[i] == 'p' && !(values[i] = PyList_New(0)))
                goto done;
        while (n < batch && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            for (Py_ssize_t i = 0; i < ncol; i++) {
                span_t *s = &spans[n * ncol + i];
                if (kinds[i] == 'p') {
                    PyObject *v = py_value(st, (int)i);
                    if (!v || PyList_Append(values[i], v)) {
                        Py_XDECREF(v);
                        goto done;
                    }
                    Py_DECREF(v);
                    s->len = SIZE_MAX;
                    continue;
                }
                s->off = arena.len;
                if (field(&arena, &tmp, st, (int)i, kinds[i]))
                    goto done;
                s->len = arena.len - s->off;
            }
            n++;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            PyErr_Format(PyExc_RuntimeError, "SQLite: %s", sqlite3_errmsg(db));
            goto done;
        }
        for (Py_ssize_t i = 0; i < ncol; i++) {
            if (kinds[i] != 'p')
                continue;
            PyObject *r = PyObject_CallOneArg(PySequence_Fast_GET_ITEM(fns, i), values[i]);
            Py_CLEAR(values[i]);
            if (!r || !(made[i] = PySequence_Fast(r, "a column function returns a sequence"))) {
                Py_XDECREF(r);
                goto done;
            }
            Py_DECREF(r);
            if (PySequence_Fast_GET_SIZE(made[i]) != n) {
                PyErr_Format(PyExc_ValueError, "column %zd: %zd fields for %zd values", i,
                             PySequence_Fast_GET_SIZE(made[i]), n);
                goto done;
            }
        }
        for (Py_ssize_t r = 0; r < n; r++) {
            row.len = 0;
            for (Py_ssize_t i = 0; i < ncol; i++) {
                span_t *s = &spans[r * ncol + i];
                if (i && append(&row, "", 1))
                    goto nomem;
                if (s->len != SIZE_MAX) {
                    if (append(&row, arena.p + s->off, s->len))
                        goto nomem;
                    continue;
                }
                char *p;
                Py_ssize_t len;
                if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(made[i], r), &p, &len))
                    goto done;
                if (append(&row, p, (size_t)len))
                    goto nomem;
            }
            total += md5_first8(row.p, row.len);
        }
        for (Py_ssize_t i = 0; i < ncol; i++)
            Py_CLEAR(made[i]);
        rows += n;
    }
    {
        /* total as a Python int: high 64 bits shifted, plus the low 64 */
        PyObject *hi = PyLong_FromLongLong((long long)(total >> 64));
        PyObject *lo = PyLong_FromUnsignedLongLong((unsigned long long)total);
        PyObject *sh = PyLong_FromLong(64), *t1 = NULL, *sum = NULL;
        if (hi && lo && sh && (t1 = PyNumber_Lshift(hi, sh)))
            sum = PyNumber_Add(t1, lo);
        Py_XDECREF(hi);
        Py_XDECREF(lo);
        Py_XDECREF(sh);
        Py_XDECREF(t1);
        if (sum)
            result = Py_BuildValue("LN", rows, sum);
    }
    goto done;
nomem:
    PyErr_NoMemory();
done:
    if (values)
        for (Py_ssize_t i = 0; i < ncol; i++)
            Py_XDECREF(values[i]);
    if (made)
        for (Py_ssize_t i = 0; i < ncol; i++)
            Py_XDECREF(made[i]);
    free(values);
    free(made);
    free(spans);
    free(arena.p);
    free(row.p);
    free(tmp.p);
    sqlite3_finalize(st);
    sqlite3_close(db);
    Py_DECREF(fns);
    return result;
}

/* md5_first8(data) -> the row hash of bytes (for tests) */
static PyObject *py_md5_first8(PyObject *self, PyObject *arg)
{
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &p, &n))
        return NULL;
    return PyLong_FromLongLong(md5_first8((const unsigned char *)p, (size_t)n));
}

static PyMethodDef methods[] = {
    {"checksum", checksum, METH_VARARGS, "The checksum of a SELECT's rows (see the module)."},
    {"md5_first8", py_md5_first8, METH_O, "A row hash (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rowhash", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rowhash(void)
{
    return PyModule_Create(&module);
}
