/* The node wire's hot operations, compiled: the twin of shared/codec_py.py.
 *
 * Requests and responses are written and read by hand, byte for byte as the protobuf
 * library serializes shared/ringcache.proto's messages (fields in number order, proto3
 * defaults left out); tests/shared/test_codec.py runs the same tests against this module and the
 * pure-Python one. Decoding accepts fields in any order and skips unknown ones, as
 * protobuf does; anything malformed raises shared.wire.WireError.
 *
 * A decoded GET_MANY answer keeps its entries in the frame's payload: Response.values is a
 * ValueList (a sequence of offsets into the payload), which router/dataplane/_getrun.c reads
 * without copying and Python reads as bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "_codec.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Request.ttl is copied as a little-endian double: port put/read of field 6 first"
#endif

static PyObject *WireError;      /* shared.wire.WireError */
static PyObject *empty_bytes, *empty_str, *empty_tuple;

/* -- writing ------------------------------------------------------------------------ */

static inline Py_ssize_t varint_size(uint64_t v) {
    Py_ssize_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

static inline char *put_varint(char *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (char)((v & 0x7F) | 0x80); v >>= 7; }
    *p++ = (char)v;
    return p;
}

static inline char *put_bytes_field(char *p, unsigned char tag, const char *data, Py_ssize_t n) {
    *p++ = (char)tag;
    p = put_varint(p, (uint64_t)n);
    memcpy(p, data, (size_t)n);
    return p + n;
}

/* Grows bytearray ``buf`` by ``n`` bytes; a pointer to the first new byte, or NULL. */
static char *grow(PyObject *buf, Py_ssize_t n) {
    Py_ssize_t old = PyByteArray_GET_SIZE(buf);
    if (PyByteArray_Resize(buf, old + n) < 0)
        return NULL;
    return PyByteArray_AS_STRING(buf) + old;
}

typedef struct { const char *data; Py_ssize_t size; } view_t;

/* bytes, bytearray or str (as UTF-8) into a view; -1 with TypeError otherwise. */
static int get_view(PyObject *obj, view_t *v, const char *what) {
    if (PyBytes_Check(obj)) { v->data = PyBytes_AS_STRING(obj); v->size = PyBytes_GET_SIZE(obj); return 0; }
    if (PyUnicode_Check(obj)) {
        v->data = PyUnicode_AsUTF8AndSize(obj, &v->size);
        return v->data == NULL ? -1 : 0;
    }
    if (PyByteArray_Check(obj)) { v->data = PyByteArray_AS_STRING(obj); v->size = PyByteArray_GET_SIZE(obj); return 0; }
    PyErr_Format(PyExc_TypeError, "%s must be bytes or str, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
}

static int get_u64(PyObject *obj, uint64_t *out, const char *what) {
    if (obj == NULL || obj == Py_None) { *out = 0; return 0; }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s must be an integer from 0 to 2**64-1", what);
        return -1;
    }
    *out = v;
    return 0;
}

/* append_request(buf, rid, op, group="", key=b"", value=b"", ttl=0.0, flags=0,
 *                negative=False, keys=None, groups=b"", cas=0, delta=0) */
static PyObject *append_request(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"buf", "rid", "op", "group", "key", "value", "ttl", "flags",
                            "negative", "keys", "groups", "cas", "delta", "lease",
                            "lease_ttl", "meta", NULL};
    PyObject *buf, *rid_o, *group_o = empty_str, *key_o = empty_bytes, *value_o = empty_bytes;
    PyObject *flags_o = NULL, *keys_o = Py_None, *groups_o = empty_bytes, *cas_o = NULL, *delta_o = NULL;
    PyObject *ttl_o = Py_None, *lease_o = NULL, *meta_o = NULL;
    int op, negative = 0;
    double ttl = 0.0, lease_ttl = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!Oi|OOOOOpOOOOOdO", names, &PyByteArray_Type,
                                     &buf, &rid_o, &op, &group_o, &key_o, &value_o, &ttl_o,
                                     &flags_o, &negative, &keys_o, &groups_o, &cas_o, &delta_o,
                                     &lease_o, &lease_ttl, &meta_o))
        return NULL;
    if (ttl_o != Py_None) {  /* None: no expiry, as 0 */
        ttl = PyFloat_AsDouble(ttl_o);
        if (ttl == -1.0 && PyErr_Occurred())
            return NULL;
    }
    uint64_t rid, flags, cas, delta, lease, meta;
    view_t group, key, value, groups;
    if (get_u64(rid_o, &rid, "rid") < 0 || get_u64(flags_o, &flags, "flags") < 0
        || get_u64(cas_o, &cas, "cas") < 0 || get_u64(delta_o, &delta, "delta") < 0
        || get_u64(lease_o, &lease, "lease") < 0 || get_u64(meta_o, &meta, "meta") < 0
        || get_view(group_o, &group, "group") < 0 || get_view(key_o, &key, "key") < 0
        || get_view(value_o, &value, "value") < 0 || get_view(groups_o, &groups, "groups") < 0)
        return NULL;
    PyObject *keys = NULL;
    if (keys_o != Py_None) {
        keys = PySequence_Fast(keys_o, "keys must be a sequence of bytes");
        if (keys == NULL)
            return NULL;
    }
    Py_ssize_t nkeys = keys ? PySequence_Fast_GET_SIZE(keys) : 0;
    Py_ssize_t size = 0;
    if (rid) size += 1 + varint_size(rid);
    if (op) size += 1 + varint_size((uint64_t)(int64_t)op);
    if (group.size) size += 1 + varint_size(group.size) + group.size;
    if (key.size) size += 1 + varint_size(key.size) + key.size;
    if (value.size) size += 1 + varint_size(value.size) + value.size;
    if (ttl != 0.0) size += 9;
    if (flags) size += 1 + varint_size(flags);
    size += groups.size;
    if (negative) size += 2;
    for (Py_ssize_t i = 0; i < nkeys; i++) {
        PyObject *k = PySequence_Fast_GET_ITEM(keys, i);
        if (!PyBytes_Check(k)) {
            Py_DECREF(keys);
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            return NULL;
        }
        size += 1 + varint_size(PyBytes_GET_SIZE(k)) + PyBytes_GET_SIZE(k);
    }
    if (cas) size += 1 + varint_size(cas);
    if (delta) size += 1 + varint_size(delta);
    if (lease) size += 1 + varint_size(lease);
    if (lease_ttl != 0.0) size += 9;
    if (meta) size += 1 + varint_size(meta);
    char *p = grow(buf, 1 + varint_size(size) + size);
    if (p == NULL) {
        Py_XDECREF(keys);
        return NULL;
    }
    *p++ = 0x0a;  /* Frame.requests */
    p = put_varint(p, size);
    if (rid) { *p++ = 0x08; p = put_varint(p, rid); }
    if (op) { *p++ = 0x10; p = put_varint(p, (uint64_t)(int64_t)op); }
    if (group.size) p = put_bytes_field(p, 0x1a, group.data, group.size);
    if (key.size) p = put_bytes_field(p, 0x22, key.data, key.size);
    if (value.size) p = put_bytes_field(p, 0x2a, value.data, value.size);
    if (ttl != 0.0) { *p++ = 0x31; memcpy(p, &ttl, 8); p += 8; }  /* little-endian hosts */
    if (flags) { *p++ = 0x38; p = put_varint(p, flags); }
    if (groups.size) { memcpy(p, groups.data, (size_t)groups.size); p += groups.size; }
    if (negative) { *p++ = 0x48; *p++ = 0x01; }
    for (Py_ssize_t i = 0; i < nkeys; i++) {
        PyObject *k = PySequence_Fast_GET_ITEM(keys, i);
        p = put_bytes_field(p, 0x52, PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k));
    }
    if (cas) { *p++ = 0x58; p = put_varint(p, cas); }
    if (delta) { *p++ = 0x60; p = put_varint(p, delta); }
    if (lease) { *p++ = 0x68; p = put_varint(p, lease); }
    if (lease_ttl != 0.0) { *p++ = 0x71; memcpy(p, &lease_ttl, 8); p += 8; }
    if (meta) { *p++ = 0x78; p = put_varint(p, meta); }
    Py_XDECREF(keys);
    Py_RETURN_NONE;
}

/* append_prepared(buf, rid, body): a Request whose fields after the id are in ``body``. */
static PyObject *append_prepared(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyByteArray_Check(args[0]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "append_prepared(buf: bytearray, rid: int, body: bytes)");
        return NULL;
    }
    uint64_t rid;
    if (get_u64(args[1], &rid, "rid") < 0)
        return NULL;
    Py_ssize_t blen = PyBytes_GET_SIZE(args[2]);
    Py_ssize_t size = (rid ? 1 + varint_size(rid) : 0) + blen;
    char *p = grow(args[0], 1 + varint_size(size) + size);
    if (p == NULL)
        return NULL;
    *p++ = 0x0a;
    p = put_varint(p, size);
    if (rid) { *p++ = 0x08; p = put_varint(p, rid); }
    memcpy(p, PyBytes_AS_STRING(args[2]), (size_t)blen);
    Py_RETURN_NONE;
}

/* Size of a Response's fields (not its frame header); values given as a fast sequence. */
typedef struct {
    uint64_t rid, status, flags, cas, lease, stale, meta;
    view_t value, error, stats;
    int negative;
} response_t;

static Py_ssize_t response_size(const response_t *r, PyObject *values) {
    Py_ssize_t size = 0;
    if (r->rid) size += 1 + varint_size(r->rid);
    if (r->status) size += 1 + varint_size(r->status);
    if (r->value.size) size += 1 + varint_size(r->value.size) + r->value.size;
    if (r->error.size) size += 1 + varint_size(r->error.size) + r->error.size;
    if (r->flags) size += 1 + varint_size(r->flags);
    if (r->stats.size) size += 1 + varint_size(r->stats.size) + r->stats.size;
    if (r->negative) size += 2;
    if (values) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(values);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t len = PyBytes_GET_SIZE(PySequence_Fast_GET_ITEM(values, i));
            size += 1 + varint_size(len) + len;
        }
    }
    if (r->cas) size += 1 + varint_size(r->cas);
    if (r->lease) size += 1 + varint_size(r->lease);
    if (r->stale) size += 1 + varint_size(r->stale);
    if (r->meta) size += 1 + varint_size(r->meta);
    return size;
}

static char *put_response(char *p, const response_t *r, PyObject *values, Py_ssize_t size) {
    *p++ = 0x12;  /* Frame.responses */
    p = put_varint(p, size);
    if (r->rid) { *p++ = 0x08; p = put_varint(p, r->rid); }
    if (r->status) { *p++ = 0x10; p = put_varint(p, r->status); }
    if (r->value.size) p = put_bytes_field(p, 0x1a, r->value.data, r->value.size);
    if (r->error.size) p = put_bytes_field(p, 0x22, r->error.data, r->error.size);
    if (r->flags) { *p++ = 0x28; p = put_varint(p, r->flags); }
    if (r->stats.size) p = put_bytes_field(p, 0x32, r->stats.data, r->stats.size);
    if (r->negative) { *p++ = 0x38; *p++ = 0x01; }
    if (values) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(values);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PySequence_Fast_GET_ITEM(values, i);
            p = put_bytes_field(p, 0x42, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
        }
    }
    if (r->cas) { *p++ = 0x48; p = put_varint(p, r->cas); }
    if (r->lease) { *p++ = 0x58; p = put_varint(p, r->lease); }
    if (r->stale) { *p++ = 0x60; p = put_varint(p, r->stale); }
    if (r->meta) { *p++ = 0x68; p = put_varint(p, r->meta); }
    return p;
}

/* append_response(buf, rid, status=0, value=b"", error="", flags=0, stats=b"",
 *                 negative=False, values=None, cas=0, lease=0, stale=0, meta=0) */
static PyObject *append_response(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"buf", "rid", "status", "value", "error", "flags", "stats",
                            "negative", "values", "cas", "lease", "stale", "meta", NULL};
    PyObject *buf, *rid_o, *status_o = NULL, *value_o = empty_bytes, *error_o = empty_str;
    PyObject *flags_o = NULL, *stats_o = empty_bytes, *values_o = Py_None, *cas_o = NULL;
    PyObject *lease_o = NULL, *stale_o = NULL, *meta_o = NULL;
    int negative = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O|OOOOOpOOOOO", names, &PyByteArray_Type,
                                     &buf, &rid_o, &status_o, &value_o, &error_o, &flags_o,
                                     &stats_o, &negative, &values_o, &cas_o, &lease_o,
                                     &stale_o, &meta_o))
        return NULL;
    response_t r;
    r.negative = negative;
    if (get_u64(rid_o, &r.rid, "rid") < 0 || get_u64(status_o, &r.status, "status") < 0
        || get_u64(flags_o, &r.flags, "flags") < 0 || get_u64(cas_o, &r.cas, "cas") < 0
        || get_u64(lease_o, &r.lease, "lease") < 0 || get_u64(stale_o, &r.stale, "stale") < 0
        || get_u64(meta_o, &r.meta, "meta") < 0
        || get_view(value_o, &r.value, "value") < 0 || get_view(error_o, &r.error, "error") < 0
        || get_view(stats_o, &r.stats, "stats") < 0)
        return NULL;
    PyObject *values = NULL;
    if (values_o != Py_None) {
        values = PySequence_Fast(values_o, "values must be a sequence of bytes");
        if (values == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(values); i++) {
            if (!PyBytes_Check(PySequence_Fast_GET_ITEM(values, i))) {
                Py_DECREF(values);
                PyErr_SetString(PyExc_TypeError, "values must be bytes");
                return NULL;
            }
        }
    }
    Py_ssize_t size = response_size(&r, values);
    char *p = grow(buf, 1 + varint_size(size) + size);
    if (p != NULL)
        put_response(p, &r, values, size);
    Py_XDECREF(values);
    if (p == NULL)
        return NULL;
    Py_RETURN_NONE;
}

/* append_get_many(buf, rid, get, keys, room, pieces=None, large=0) -> (hits, bytes added) | None
 *
 * A GET_MANY answered straight from ``get(key) -> entry | None``: one call per key and no
 * list of entries in between. None, adding nothing, when the entries (with their field
 * headers) would take more than ``room`` bytes. With a list ``pieces`` and ``large`` > 0,
 * an entry of at least ``large`` bytes is left out of ``buf`` (its field's tag and length
 * are written) and ``(offset in buf, entry)`` appended to ``pieces`` instead: the answer
 * is ``buf`` with each such entry put back at its offset. Bytes added count them too. */
static PyObject *append_get_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if ((nargs != 5 && nargs != 7) || !PyByteArray_Check(args[0])
            || (nargs == 7 && args[5] != Py_None && !PyList_Check(args[5]))) {
        PyErr_SetString(PyExc_TypeError,
                        "append_get_many(buf, rid, get, keys, room, pieces=None, large=0)");
        return NULL;
    }
    PyObject *pieces = nargs == 7 && args[5] != Py_None ? args[5] : NULL;
    Py_ssize_t large = 0;
    if (pieces && (large = PyLong_AsSsize_t(args[6])) == -1 && PyErr_Occurred())
        return NULL;
    if (large <= 0)
        pieces = NULL;
    PyObject *buf = args[0], *get = args[2];
    uint64_t rid;
    if (get_u64(args[1], &rid, "rid") < 0)
        return NULL;
    Py_ssize_t room = PyLong_AsSsize_t(args[4]);
    if (room == -1 && PyErr_Occurred())
        return NULL;
    PyObject *keys = PySequence_Fast(args[3], "keys must be a sequence");
    if (keys == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    PyObject *entries = PyTuple_New(n);
    if (entries == NULL) {
        Py_DECREF(keys);
        return NULL;
    }
    Py_ssize_t hits = 0, values_size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyObject_CallOneArg(get, PySequence_Fast_GET_ITEM(keys, i));
        if (e == NULL)
            goto fail;
        if (e == Py_None || (PyBytes_Check(e) && PyBytes_GET_SIZE(e) == 0)) {
            Py_DECREF(e);
            e = Py_NewRef(empty_bytes);
        } else if (!PyBytes_Check(e)) {
            PyErr_Format(PyExc_TypeError, "a core's get returned %.100s, expected bytes or None",
                         Py_TYPE(e)->tp_name);
            Py_DECREF(e);
            goto fail;
        } else {
            hits++;
        }
        PyTuple_SET_ITEM(entries, i, e);
        Py_ssize_t len = PyBytes_GET_SIZE(e);
        values_size += 1 + varint_size(len) + len;
    }
    Py_DECREF(keys);
    if (values_size > room) {
        Py_DECREF(entries);
        Py_RETURN_NONE;
    }
    response_t r = {0};
    r.rid = rid;
    r.value.data = r.error.data = r.stats.data = "";
    Py_ssize_t size = response_size(&r, entries);
    Py_ssize_t total = 1 + varint_size(size) + size, apart = 0;
    for (Py_ssize_t i = 0; pieces && i < n; i++) {
        Py_ssize_t len = PyBytes_GET_SIZE(PyTuple_GET_ITEM(entries, i));
        if (len >= large) apart += len;
    }
    char *p = grow(buf, total - apart);
    if (p == NULL) {
        Py_DECREF(entries);
        return NULL;
    }
    if (!apart) {
        put_response(p, &r, entries, size);
    } else {  /* put_response's fields (an id, the entries), the large entries left out */
        *p++ = 0x12;
        p = put_varint(p, size);
        if (r.rid) { *p++ = 0x08; p = put_varint(p, r.rid); }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *e = PyTuple_GET_ITEM(entries, i);
            Py_ssize_t len = PyBytes_GET_SIZE(e);
            if (len < large) { p = put_bytes_field(p, 0x42, PyBytes_AS_STRING(e), len); continue; }
            *p++ = 0x42;
            p = put_varint(p, len);
            PyObject *piece = Py_BuildValue("(nO)", (Py_ssize_t)(p - PyByteArray_AS_STRING(buf)), e);
            if (piece == NULL || PyList_Append(pieces, piece) < 0) {
                Py_XDECREF(piece);
                Py_DECREF(entries);
                return NULL;
            }
            Py_DECREF(piece);
        }
    }
    Py_DECREF(entries);
    return Py_BuildValue("(nn)", hits, total);
fail:
    Py_DECREF(keys);
    Py_DECREF(entries);
    return NULL;
}

/* -- reading ------------------------------------------------------------------------ */

typedef struct {
    const unsigned char *p, *end;
} reader_t;

static int wire_error(const char *what) {
    PyErr_Format(WireError, "undecodable frame: %s", what);
    return -1;
}

static inline int read_varint(reader_t *r, uint64_t *out) {
    uint64_t result = 0;
    int shift = 0;
    while (1) {
        if (r->p >= r->end)
            return wire_error("truncated varint");
        unsigned char b = *r->p++;
        result |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) { *out = result; return 0; }
        shift += 7;
        if (shift >= 64)
            return wire_error("varint too long");
    }
}

/* One field: number, wire type, and its value (varint/fixed) or its bytes. */
typedef struct {
    uint32_t number;
    int kind;
    uint64_t num;
    const unsigned char *data;
    Py_ssize_t len;
} field_t;

static int read_field(reader_t *r, field_t *f) {
    uint64_t tag;
    if (read_varint(r, &tag) < 0)
        return -1;
    f->number = (uint32_t)(tag >> 3);
    f->kind = (int)(tag & 7);
    if (f->number == 0 || (tag >> 3) > 0x1FFFFFFF)
        return wire_error("bad field number");
    switch (f->kind) {
    case 0:
        return read_varint(r, &f->num);
    case 2: {
        uint64_t len;
        if (read_varint(r, &len) < 0)
            return -1;
        if (len > (uint64_t)(r->end - r->p))
            return wire_error("length past the end of the message");
        f->data = r->p;
        f->len = (Py_ssize_t)len;
        r->p += len;
        return 0;
    }
    case 1:
        if (r->end - r->p < 8)
            return wire_error("truncated fixed64");
        memcpy(&f->num, r->p, 8);
        r->p += 8;
        return 0;
    case 5: {
        if (r->end - r->p < 4)
            return wire_error("truncated fixed32");
        uint32_t v;
        memcpy(&v, r->p, 4);
        f->num = v;
        r->p += 4;
        return 0;
    }
    default:
        return wire_error("unsupported wire type");
    }
}

/* A known field with another wire type is an unknown field to protobuf: skipped. */
#define WANT(k) if (f.kind != (k)) break

static int enum_value(uint64_t v) {
    /* An enum is an int32 on the wire: values past it wrap, as the library reads them. */
    return (int)(int32_t)(uint32_t)v;
}

/* ValueList: GET_MANY's entries as offsets into the frame's payload. */

static PyTypeObject ValueListType;

static void valuelist_dealloc(ValueListObject *self) {
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    PyMem_Free(self->spans);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t valuelist_len(ValueListObject *self) { return self->n; }

static PyObject *valuelist_item(ValueListObject *self, Py_ssize_t i) {
    if (i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "ValueList index out of range");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)self->view.buf + self->spans[2 * i],
                                     self->spans[2 * i + 1]);
}

static PyObject *valuelist_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(a, &ValueListType))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *seq = PySequence_List(a);
    if (seq == NULL)
        return NULL;
    PyObject *other = PySequence_Check(b) ? PySequence_List(b) : NULL;
    if (other == NULL) {
        PyErr_Clear();
        Py_DECREF(seq);
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *result = PyObject_RichCompare(seq, other, op);
    Py_DECREF(seq);
    Py_DECREF(other);
    return result;
}

static PySequenceMethods valuelist_as_sequence = {
    .sq_length = (lenfunc)valuelist_len,
    .sq_item = (ssizeargfunc)valuelist_item,
};

static PyTypeObject ValueListType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shared._codec.ValueList",
    .tp_basicsize = sizeof(ValueListObject),
    .tp_dealloc = (destructor)valuelist_dealloc,
    .tp_as_sequence = &valuelist_as_sequence,
    .tp_richcompare = valuelist_richcompare,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "GET_MANY entries read from a frame, as offsets into its payload.",
};

/* Request / Response: plain records with pb.Request / pb.Response attribute names. */
typedef struct {
    PyObject_HEAD
    unsigned long long id;
    int op;
    PyObject *group, *key, *value, *keys, *groups_raw;
    double ttl, lease_ttl;
    unsigned long long flags, cas, delta, lease, meta;
    char negative;
} RequestObject;

typedef struct {
    PyObject_HEAD
    unsigned long long id;
    int status;
    PyObject *value, *error, *values, *stats_raw;
    unsigned long long flags, cas, lease, meta;
    int stale;
    char negative;
    double ttl;
} ResponseObject;

static PyObject *pb_module(void) { return PyImport_ImportModule("shared.ringcache_pb2"); }

static PyObject *parse_with(PyObject *raw, const char *message) {
    PyObject *pb = pb_module();
    if (pb == NULL)
        return NULL;
    PyObject *cls = PyObject_GetAttrString(pb, message);
    Py_DECREF(pb);
    if (cls == NULL)
        return NULL;
    PyObject *result = PyObject_CallMethod(cls, "FromString", "O", raw);
    Py_DECREF(cls);
    return result;
}

static PyObject *request_groups(RequestObject *self, void *closure) {
    Py_ssize_t n = PyList_GET_SIZE(self->groups_raw);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *g = parse_with(PyList_GET_ITEM(self->groups_raw, i), "GroupConfig");
        if (g == NULL) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, i, g);
    }
    return out;
}

static PyObject *response_stats(ResponseObject *self, void *closure) {
    return parse_with(self->stats_raw, "NodeStats");
}

static void request_dealloc(RequestObject *self) {
    Py_XDECREF(self->group); Py_XDECREF(self->key); Py_XDECREF(self->value);
    Py_XDECREF(self->keys); Py_XDECREF(self->groups_raw);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void response_dealloc(ResponseObject *self) {
    Py_XDECREF(self->value); Py_XDECREF(self->error); Py_XDECREF(self->values);
    Py_XDECREF(self->stats_raw);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef request_members[] = {
    {"id", T_ULONGLONG, offsetof(RequestObject, id), READONLY, NULL},
    {"op", T_INT, offsetof(RequestObject, op), READONLY, NULL},
    {"group", T_OBJECT, offsetof(RequestObject, group), READONLY, NULL},
    {"key", T_OBJECT, offsetof(RequestObject, key), READONLY, NULL},
    {"value", T_OBJECT, offsetof(RequestObject, value), READONLY, NULL},
    {"ttl", T_DOUBLE, offsetof(RequestObject, ttl), READONLY, NULL},
    {"flags", T_ULONGLONG, offsetof(RequestObject, flags), READONLY, NULL},
    {"negative", T_BOOL, offsetof(RequestObject, negative), READONLY, NULL},
    {"keys", T_OBJECT, offsetof(RequestObject, keys), READONLY, NULL},
    {"cas", T_ULONGLONG, offsetof(RequestObject, cas), READONLY, NULL},
    {"delta", T_ULONGLONG, offsetof(RequestObject, delta), READONLY, NULL},
    {"lease", T_ULONGLONG, offsetof(RequestObject, lease), READONLY, NULL},
    {"lease_ttl", T_DOUBLE, offsetof(RequestObject, lease_ttl), READONLY, NULL},
    {"meta", T_ULONGLONG, offsetof(RequestObject, meta), READONLY, NULL},
    {NULL},
};

static PyGetSetDef request_getset[] = {
    {"groups", (getter)request_groups, NULL, "CONFIGURE's GroupConfig messages", NULL},
    {NULL},
};

static PyMemberDef response_members[] = {
    {"id", T_ULONGLONG, offsetof(ResponseObject, id), READONLY, NULL},
    {"status", T_INT, offsetof(ResponseObject, status), READONLY, NULL},
    {"value", T_OBJECT, offsetof(ResponseObject, value), READONLY, NULL},
    {"error", T_OBJECT, offsetof(ResponseObject, error), READONLY, NULL},
    {"flags", T_ULONGLONG, offsetof(ResponseObject, flags), READONLY, NULL},
    {"negative", T_BOOL, offsetof(ResponseObject, negative), READONLY, NULL},
    {"values", T_OBJECT, offsetof(ResponseObject, values), READONLY, NULL},
    {"cas", T_ULONGLONG, offsetof(ResponseObject, cas), READONLY, NULL},
    {"ttl", T_DOUBLE, offsetof(ResponseObject, ttl), READONLY, NULL},
    {"lease", T_ULONGLONG, offsetof(ResponseObject, lease), READONLY, NULL},
    {"stale", T_INT, offsetof(ResponseObject, stale), READONLY, NULL},
    {"meta", T_ULONGLONG, offsetof(ResponseObject, meta), READONLY, NULL},
    {NULL},
};

static PyGetSetDef response_getset[] = {
    {"stats", (getter)response_stats, NULL, "STATS' NodeStats message", NULL},
    {NULL},
};

static PyTypeObject RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shared._codec.Request",
    .tp_basicsize = sizeof(RequestObject),
    .tp_dealloc = (destructor)request_dealloc,
    .tp_members = request_members,
    .tp_getset = request_getset,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A decoded Request, with pb.Request's attribute names.",
};

static PyTypeObject ResponseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shared._codec.Response",
    .tp_basicsize = sizeof(ResponseObject),
    .tp_dealloc = (destructor)response_dealloc,
    .tp_members = response_members,
    .tp_getset = response_getset,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A decoded Response, with pb.Response's attribute names.",
};

static PyObject *bytes_of(const field_t *f) {
    if (f->len == 0)
        return Py_NewRef(empty_bytes);
    return PyBytes_FromStringAndSize((const char *)f->data, f->len);
}

static PyObject *text_of(const field_t *f) {
    if (f->len == 0)
        return Py_NewRef(empty_str);
    PyObject *s = PyUnicode_DecodeUTF8((const char *)f->data, f->len, "strict");
    if (s == NULL) {
        PyErr_Clear();
        wire_error("a string field is not UTF-8");
    }
    return s;
}

static inline void replace(PyObject **slot, PyObject *value) {
    PyObject *old = *slot;
    *slot = value;
    Py_XDECREF(old);
}

static PyObject *decode_request(const unsigned char *p, const unsigned char *end) {
    RequestObject *q = PyObject_New(RequestObject, &RequestType);
    if (q == NULL)
        return NULL;
    q->id = 0; q->op = 0; q->ttl = q->lease_ttl = 0.0; q->negative = 0;
    q->flags = q->cas = q->delta = q->lease = q->meta = 0;
    q->group = Py_NewRef(empty_str);
    q->key = Py_NewRef(empty_bytes);
    q->value = Py_NewRef(empty_bytes);
    q->keys = NULL;
    q->groups_raw = PyList_New(0);
    PyObject *keys = NULL;
    if (q->groups_raw == NULL)
        goto fail;
    reader_t r = {p, end};
    field_t f;
    while (r.p < r.end) {
        if (read_field(&r, &f) < 0)
            goto fail;
        PyObject *v;
        switch (f.number) {
        case 1: WANT(0); q->id = f.num; break;
        case 2: WANT(0); q->op = enum_value(f.num); break;
        case 3: WANT(2); if ((v = text_of(&f)) == NULL) goto fail; replace(&q->group, v); break;
        case 4: WANT(2); if ((v = bytes_of(&f)) == NULL) goto fail; replace(&q->key, v); break;
        case 5: WANT(2); if ((v = bytes_of(&f)) == NULL) goto fail; replace(&q->value, v); break;
        case 6: WANT(1); memcpy(&q->ttl, &f.num, 8); break;
        case 7: WANT(0); q->flags = (uint32_t)f.num; break;
        case 8:
            WANT(2); if ((v = bytes_of(&f)) == NULL) goto fail;
            if (PyList_Append(q->groups_raw, v) < 0) { Py_DECREF(v); goto fail; }
            Py_DECREF(v);
            break;
        case 9: WANT(0); q->negative = f.num != 0; break;
        case 10:
            WANT(2);
            if (keys == NULL && (keys = PyList_New(0)) == NULL) goto fail;
            if ((v = bytes_of(&f)) == NULL) goto fail;
            if (PyList_Append(keys, v) < 0) { Py_DECREF(v); goto fail; }
            Py_DECREF(v);
            break;
        case 11: WANT(0); q->cas = f.num; break;
        case 12: WANT(0); q->delta = f.num; break;
        case 13: WANT(0); q->lease = f.num; break;
        case 14: WANT(1); memcpy(&q->lease_ttl, &f.num, 8); break;
        case 15: WANT(0); q->meta = (uint32_t)f.num; break;
        default: break;  /* unknown: skipped, as protobuf does */
        }
    }
    q->keys = keys ? PyList_AsTuple(keys) : Py_NewRef(empty_tuple);
    Py_XDECREF(keys);
    if (q->keys == NULL)
        goto fail;
    return (PyObject *)q;
fail:
    Py_XDECREF(keys);
    Py_DECREF(q);
    return NULL;
}

/* Up to this many values a list of spans is kept on the stack before growing. */
#define SPANS_ON_STACK 64

static PyObject *decode_response(PyObject *payload, const unsigned char *base,
                                 const unsigned char *p, const unsigned char *end) {
    ResponseObject *s = PyObject_New(ResponseObject, &ResponseType);
    if (s == NULL)
        return NULL;
    s->id = 0; s->status = 0; s->flags = s->cas = s->lease = s->meta = 0; s->stale = 0;
    s->negative = 0; s->ttl = 0.0;
    s->value = Py_NewRef(empty_bytes);
    s->error = Py_NewRef(empty_str);
    s->stats_raw = Py_NewRef(empty_bytes);
    s->values = NULL;
    Py_ssize_t stack[2 * SPANS_ON_STACK], *spans = stack, cap = SPANS_ON_STACK, n = 0;
    reader_t r = {p, end};
    field_t f;
    while (r.p < r.end) {
        if (read_field(&r, &f) < 0)
            goto fail;
        PyObject *v;
        switch (f.number) {
        case 1: WANT(0); s->id = f.num; break;
        case 2: WANT(0); s->status = enum_value(f.num); break;
        case 3: WANT(2); if ((v = bytes_of(&f)) == NULL) goto fail; replace(&s->value, v); break;
        case 4: WANT(2); if ((v = text_of(&f)) == NULL) goto fail; replace(&s->error, v); break;
        case 5: WANT(0); s->flags = (uint32_t)f.num; break;
        case 6: WANT(2); if ((v = bytes_of(&f)) == NULL) goto fail; replace(&s->stats_raw, v); break;
        case 7: WANT(0); s->negative = f.num != 0; break;
        case 8:
            WANT(2);
            if (n == cap) {
                Py_ssize_t *grown = PyMem_Malloc(sizeof(Py_ssize_t) * 4 * cap);
                if (grown == NULL) { PyErr_NoMemory(); goto fail; }
                memcpy(grown, spans, sizeof(Py_ssize_t) * 2 * n);
                if (spans != stack) PyMem_Free(spans);
                spans = grown;
                cap *= 2;
            }
            spans[2 * n] = f.data - base;
            spans[2 * n + 1] = f.len;
            n++;
            break;
        case 9: WANT(0); s->cas = f.num; break;
        case 10: WANT(1); memcpy(&s->ttl, &f.num, 8); break;
        case 11: WANT(0); s->lease = f.num; break;
        case 12: WANT(0); s->stale = enum_value(f.num); break;
        case 13: WANT(0); s->meta = (uint32_t)f.num; break;
        default: break;
        }
    }
    if (n == 0) {
        s->values = Py_NewRef(empty_tuple);
    } else {
        ValueListObject *list = PyObject_New(ValueListObject, &ValueListType);
        if (list == NULL)
            goto fail;
        list->view.obj = NULL;
        list->n = n;
        list->spans = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * n);
        if (list->spans == NULL) {
            Py_DECREF(list);
            PyErr_NoMemory();
            goto fail;
        }
        if (PyObject_GetBuffer(payload, &list->view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(list);
            goto fail;
        }
        memcpy(list->spans, spans, sizeof(Py_ssize_t) * 2 * n);
        s->values = (PyObject *)list;
    }
    if (spans != stack)
        PyMem_Free(spans);
    return (PyObject *)s;
fail:
    if (spans != stack)
        PyMem_Free(spans);
    Py_DECREF(s);
    return NULL;
}

/* Every message of Frame field ``wanted`` (1: requests, 2: responses) of a payload given
 * as bytes or any buffer (a memoryview of what was read: GET_MANY entries stay in it). */
static PyObject *decode_frame(PyObject *payload, uint32_t wanted) {
    Py_buffer view;
    if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *start = (const unsigned char *)view.buf;
    reader_t r = {start, start + view.len};
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    field_t f;
    while (r.p < r.end) {
        if (read_field(&r, &f) < 0)
            goto fail;
        if (f.number != wanted || f.kind != 2)
            continue;
        PyObject *m = wanted == 1 ? decode_request(f.data, f.data + f.len)
                                  : decode_response(payload, start, f.data, f.data + f.len);
        if (m == NULL)
            goto fail;
        if (PyList_Append(out, m) < 0) {
            Py_DECREF(m);
            goto fail;
        }
        Py_DECREF(m);
    }
    PyBuffer_Release(&view);
    return out;
fail:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

static PyObject *decode_requests(PyObject *self, PyObject *payload) { return decode_frame(payload, 1); }
static PyObject *decode_responses(PyObject *self, PyObject *payload) { return decode_frame(payload, 2); }

static PyMethodDef methods[] = {
    {"append_request", (PyCFunction)(void (*)(void))append_request, METH_VARARGS | METH_KEYWORDS,
     "Add one Request to the Frame being built in a bytearray."},
    {"append_prepared", (PyCFunction)(void (*)(void))append_prepared, METH_FASTCALL,
     "Add a Request whose fields after the id are already encoded."},
    {"append_response", (PyCFunction)(void (*)(void))append_response, METH_VARARGS | METH_KEYWORDS,
     "Add one Response to the Frame being built in a bytearray."},
    {"append_get_many", (PyCFunction)(void (*)(void))append_get_many, METH_FASTCALL,
     "Answer a GET_MANY from a core's get: (hits, bytes added), or None when over room."},
    {"decode_requests", decode_requests, METH_O, "The Requests of a Frame payload."},
    {"decode_responses", decode_responses, METH_O, "The Responses of a Frame payload."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "shared._codec",
    "The node wire's hot operations, compiled (twin: shared/codec_py.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__codec(void) {
    if (PyType_Ready(&ValueListType) < 0 || PyType_Ready(&RequestType) < 0
        || PyType_Ready(&ResponseType) < 0)
        return NULL;
    PyObject *wire = PyImport_ImportModule("shared.wire");
    if (wire == NULL)
        return NULL;
    WireError = PyObject_GetAttrString(wire, "WireError");
    Py_DECREF(wire);
    if (WireError == NULL)
        return NULL;
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    empty_str = PyUnicode_FromStringAndSize(NULL, 0);
    empty_tuple = PyTuple_New(0);
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "COMPILED", Py_True) < 0
        || PyModule_AddIntConstant(m, "REQUESTS", 0x0a) < 0
        || PyModule_AddIntConstant(m, "RESPONSES", 0x12) < 0
        || PyModule_AddObjectRef(m, "ValueList", (PyObject *)&ValueListType) < 0
        || PyModule_AddObjectRef(m, "Request", (PyObject *)&RequestType) < 0
        || PyModule_AddObjectRef(m, "Response", (PyObject *)&ResponseType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
