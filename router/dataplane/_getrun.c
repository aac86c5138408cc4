/* Gets routed a batch at a time, compiled: the twin of router/dataplane/getrun_py.py (read it first:
 * the semantics, and every name, are the same; tests/router/dataplane/test_getrun.py runs both).
 *
 * take_gets() scans every complete plain get/gets line at the head of a client's buffer,
 * places each distinct key on the ring (MurmurHash3 x86_32, seed 0, as mmh3.hash; then a
 * binary search over the ring's points) and builds one GET_MANY body per node and group.
 * The GetRun it returns is filled with the nodes' answers -- a shared._codec ValueList is
 * read in place, its entries never copied -- and renders the whole answer into one bytes
 * object (or, for large values, into pieces that leave the values where they are).
 * Nothing here allocates a Python object per key on the all-hits path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "_codec.h"

#define NEGATIVE_KIND 2

/* memcached's key rule, read at import from router/memcache/keys.py (its one home). */
static Py_ssize_t key_max_length;
static unsigned char in_keys[256];  /* 1 for a byte a key may hold */

static PyTypeObject *ValueListType;  /* shared._codec.ValueList, when it is built */
static PyObject *answer_too_big;     /* b"SERVER_ERROR out of memory writing get response\r\n" */

/* -- MurmurHash3 x86_32 (Austin Appleby's public-domain algorithm) -------------------- */

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static uint32_t murmur3_32(const unsigned char *data, Py_ssize_t len, uint32_t seed) {
    const Py_ssize_t nblocks = len / 4;
    uint32_t h1 = seed;
    const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
    for (Py_ssize_t i = 0; i < nblocks; i++) {
        uint32_t k1;
        memcpy(&k1, data + 4 * i, 4);  /* little-endian hosts, as mmh3 */
        k1 *= c1; k1 = rotl32(k1, 15); k1 *= c2;
        h1 ^= k1; h1 = rotl32(h1, 13); h1 = h1 * 5 + 0xe6546b64;
    }
    const unsigned char *tail = data + nblocks * 4;
    uint32_t k1 = 0;
    switch (len & 3) {
    case 3: k1 ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: k1 ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1: k1 ^= tail[0]; k1 *= c1; k1 = rotl32(k1, 15); k1 *= c2; h1 ^= k1;
    }
    h1 ^= (uint32_t)len;
    h1 ^= h1 >> 16; h1 *= 0x85ebca6b; h1 ^= h1 >> 13; h1 *= 0xc2b2ae35; h1 ^= h1 >> 16;
    return h1;
}

/* -- RouteTable ------------------------------------------------------------------------ */

typedef struct {
    const char *name;  /* into names_blob */
    Py_ssize_t len;
    int group;
} prefix_t;

typedef struct {
    PyObject_HEAD
    int ngroups, default_group;
    prefix_t *prefixes;      /* sorted by (len, bytes) for bsearch */
    char *names_blob;
    unsigned char *fast;     /* per group */
    PyObject **group_fields; /* per group: the encoded Request.group field (bytes) */
    char *default_prefix;    /* "DEFAULT:" */
    Py_ssize_t default_prefix_len;
    Py_ssize_t npoints;
    uint32_t *hashes;
    int *owners;             /* npoints + 1: the first repeated, for keys past the last point */
    PyObject *py_names;      /* list of str, for the twin's attribute */
} RouteTableObject;

static void table_dealloc(RouteTableObject *t) {
    PyMem_Free(t->prefixes); PyMem_Free(t->names_blob); PyMem_Free(t->fast);
    if (t->group_fields) {
        for (int i = 0; i < t->ngroups; i++) Py_XDECREF(t->group_fields[i]);
        PyMem_Free(t->group_fields);
    }
    PyMem_Free(t->default_prefix); PyMem_Free(t->hashes); PyMem_Free(t->owners);
    Py_XDECREF(t->py_names);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int prefix_cmp(const void *a, const void *b) {
    const prefix_t *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return memcmp(x->name, y->name, (size_t)x->len);
}

static Py_ssize_t varint_size(uint64_t v) { Py_ssize_t n = 1; while (v >= 0x80) { v >>= 7; n++; } return n; }
static char *put_varint(char *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (char)((v & 0x7F) | 0x80); v >>= 7; }
    *p++ = (char)v;
    return p;
}

/* RouteTable(prefixes: dict[bytes, int], default: int, names: list[str], fast: list[bool],
 *            hashes: list[int], owners: list[int]) */
static int table_init(RouteTableObject *t, PyObject *args, PyObject *kw) {
    PyObject *prefixes, *names, *fast, *hashes, *owners;
    int dflt;
    if (!PyArg_ParseTuple(args, "O!iOOOO", &PyDict_Type, &prefixes, &dflt, &names, &fast,
                          &hashes, &owners))
        return -1;
    PyObject *names_f = PySequence_Fast(names, "names must be a sequence");
    PyObject *fast_f = PySequence_Fast(fast, "fast must be a sequence");
    PyObject *hashes_f = PySequence_Fast(hashes, "hashes must be a sequence");
    PyObject *owners_f = PySequence_Fast(owners, "owners must be a sequence");
    int rc = -1;
    if (!names_f || !fast_f || !hashes_f || !owners_f)
        goto done;
    Py_ssize_t ngroups = PySequence_Fast_GET_SIZE(names_f);
    if (ngroups < 1 || dflt < 0 || dflt >= ngroups || PySequence_Fast_GET_SIZE(fast_f) != ngroups
        || PyDict_GET_SIZE(prefixes) != ngroups
        || PySequence_Fast_GET_SIZE(hashes_f) != PySequence_Fast_GET_SIZE(owners_f)
        || PySequence_Fast_GET_SIZE(hashes_f) < 1) {
        PyErr_SetString(PyExc_ValueError, "inconsistent route table");
        goto done;
    }
    t->ngroups = (int)ngroups;
    t->default_group = dflt;
    t->fast = PyMem_Calloc((size_t)ngroups, 1);
    t->group_fields = PyMem_Calloc((size_t)ngroups, sizeof(PyObject *));
    t->prefixes = PyMem_Calloc((size_t)ngroups, sizeof(prefix_t));
    Py_ssize_t blob = 0, pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(prefixes, &pos, &k, &v)) {
        if (!PyBytes_Check(k)) { PyErr_SetString(PyExc_TypeError, "prefixes must be bytes"); goto done; }
        blob += PyBytes_GET_SIZE(k);
    }
    t->names_blob = PyMem_Malloc((size_t)blob + 1);
    if (!t->fast || !t->group_fields || !t->prefixes || !t->names_blob) { PyErr_NoMemory(); goto done; }
    pos = 0;
    Py_ssize_t at = 0, i = 0;
    while (PyDict_Next(prefixes, &pos, &k, &v)) {
        long g = PyLong_AsLong(v);
        if (g < 0 || g >= ngroups) { if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad group index"); goto done; }
        memcpy(t->names_blob + at, PyBytes_AS_STRING(k), (size_t)PyBytes_GET_SIZE(k));
        t->prefixes[i].name = t->names_blob + at;
        t->prefixes[i].len = PyBytes_GET_SIZE(k);
        t->prefixes[i].group = (int)g;
        at += PyBytes_GET_SIZE(k);
        i++;
    }
    qsort(t->prefixes, (size_t)ngroups, sizeof(prefix_t), prefix_cmp);
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        int truth = PyObject_IsTrue(PySequence_Fast_GET_ITEM(fast_f, g));
        if (truth < 0) goto done;
        t->fast[g] = (unsigned char)truth;
        Py_ssize_t len;
        const char *name = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(names_f, g), &len);
        if (name == NULL) goto done;
        PyObject *field = PyBytes_FromStringAndSize(NULL, 1 + varint_size(len) + len);
        if (field == NULL) goto done;
        char *p = PyBytes_AS_STRING(field);
        *p++ = 0x1a;
        p = put_varint(p, (uint64_t)len);
        memcpy(p, name, (size_t)len);
        t->group_fields[g] = field;
        if (g == dflt) {
            t->default_prefix = PyMem_Malloc((size_t)len + 1);
            if (!t->default_prefix) { PyErr_NoMemory(); goto done; }
            memcpy(t->default_prefix, name, (size_t)len);
            t->default_prefix[len] = ':';
            t->default_prefix_len = len + 1;
        }
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(hashes_f);
    t->npoints = n;
    t->hashes = PyMem_Malloc(sizeof(uint32_t) * (size_t)n);
    t->owners = PyMem_Malloc(sizeof(int) * (size_t)(n + 1));
    if (!t->hashes || !t->owners) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t j = 0; j < n; j++) {
        unsigned long h = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(hashes_f, j));
        long o = PyLong_AsLong(PySequence_Fast_GET_ITEM(owners_f, j));
        if (PyErr_Occurred()) goto done;
        if (h > 0xFFFFFFFFUL || (j && h < t->hashes[j - 1]) || o < 0) {
            PyErr_SetString(PyExc_ValueError, "ring points must be sorted 32-bit hashes");
            goto done;
        }
        t->hashes[j] = (uint32_t)h;
        t->owners[j] = (int)o;
    }
    t->owners[n] = t->owners[0];
    t->py_names = PySequence_List(names_f);
    rc = t->py_names ? 0 : -1;
done:
    Py_XDECREF(names_f); Py_XDECREF(fast_f); Py_XDECREF(hashes_f); Py_XDECREF(owners_f);
    return rc;
}

static int find_prefix(const RouteTableObject *t, const char *s, Py_ssize_t len) {
    prefix_t key = {s, len, 0};
    prefix_t *hit = bsearch(&key, t->prefixes, (size_t)t->ngroups, sizeof(prefix_t), prefix_cmp);
    return hit ? hit->group : -1;
}

/* Group, the key within it (offset and length into ``key``), and node (-1: not served). */
static void place(const RouteTableObject *t, const char *key, Py_ssize_t len, int *group,
                  Py_ssize_t *rest, int *node, char *scratch) {
    const char *colon = memchr(key, ':', (size_t)len);
    int g = colon ? find_prefix(t, key, colon - key) : -1;
    uint32_t h;
    if (g < 0) {
        g = t->default_group;
        *rest = 0;
        if (!t->fast[g]) { *group = g; *node = -1; return; }
        memcpy(scratch, t->default_prefix, (size_t)t->default_prefix_len);
        memcpy(scratch + t->default_prefix_len, key, (size_t)len);
        h = murmur3_32((const unsigned char *)scratch, t->default_prefix_len + len, 0);
    } else {
        *rest = colon - key + 1;
        if (!t->fast[g]) { *group = g; *node = -1; return; }
        h = murmur3_32((const unsigned char *)key, len, 0);  /* GROUP:KEY routes as itself */
    }
    Py_ssize_t lo = 0, hi = t->npoints;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (t->hashes[mid] < h) lo = mid + 1; else hi = mid;
    }
    *group = g;
    *node = t->owners[lo];
}

static PyObject *table_place(RouteTableObject *t, PyObject *key) {
    if (!PyBytes_Check(key)) { PyErr_SetString(PyExc_TypeError, "key must be bytes"); return NULL; }
    Py_ssize_t len = PyBytes_GET_SIZE(key), rest;
    int group, node;
    char *scratch = PyMem_Malloc((size_t)(t->default_prefix_len + len + 1));
    if (!scratch) return PyErr_NoMemory();
    place(t, PyBytes_AS_STRING(key), len, &group, &rest, &node, scratch);
    PyMem_Free(scratch);
    return Py_BuildValue("(iy#i)", group, PyBytes_AS_STRING(key) + rest, len - rest, node);
}

static PyObject *table_names(RouteTableObject *t, void *c) { return Py_NewRef(t->py_names); }

static PyMethodDef table_methods[] = {
    {"place", (PyCFunction)table_place, METH_O,
     "(group index, the key within its group, node index or -1) of a memcached key."},
    {NULL},
};
static PyGetSetDef table_getset[] = {{"names", (getter)table_names, NULL, NULL, NULL}, {NULL}};

static PyTypeObject RouteTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "router.dataplane._getrun.RouteTable",
    .tp_basicsize = sizeof(RouteTableObject),
    .tp_dealloc = (destructor)table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What routing a key needs, as plain numbers (see router/dataplane/getrun_py.py).",
    .tp_methods = table_methods,
    .tp_getset = table_getset,
    .tp_init = (initproc)table_init,
    .tp_new = PyType_GenericNew,
};

/* -- GetRun ---------------------------------------------------------------------------- */

enum { EMPTY = 0, FILLED = 1, ERRORED = 2 };

typedef struct {
    int group, node, batch;
    Py_ssize_t key_at, key_len;  /* the key within its group, in text */
    int state;
    PyObject *owner;             /* keeps ptr alive: a payload, or a bytes entry */
    const unsigned char *ptr;    /* the entry */
    Py_ssize_t len;
} slot_t;

typedef struct {
    Py_ssize_t at, len;  /* the memcached key, in text */
    int slot;
} occurrence_t;

typedef struct {
    Py_ssize_t first, count;  /* occurrences */
    int with_cas;
} command_t;

typedef struct {
    int node, group;
    int *slots;
    Py_ssize_t n, cap;
} batch_t;

typedef struct {
    PyObject_HEAD
    PyObject *text;          /* bytes: the run's lines */
    command_t *commands; Py_ssize_t ncommands, ccap;
    occurrence_t *occ; Py_ssize_t nocc, ocap;
    slot_t *slots; Py_ssize_t nslots, scap;
    batch_t *batches; Py_ssize_t nbatches, bcap;
    int *index; Py_ssize_t icap;   /* open addressing: slot + 1, 0 for a free cell */
    PyObject *py_batches;    /* list of (node, body) */
    Py_ssize_t left, hits, misses, answer_max;
} GetRunObject;

static void run_dealloc(GetRunObject *r) {
    for (Py_ssize_t i = 0; i < r->nslots; i++) Py_XDECREF(r->slots[i].owner);
    for (Py_ssize_t i = 0; i < r->nbatches; i++) PyMem_Free(r->batches[i].slots);
    PyMem_Free(r->commands); PyMem_Free(r->occ); PyMem_Free(r->slots);
    PyMem_Free(r->batches); PyMem_Free(r->index);
    Py_XDECREF(r->text); Py_XDECREF(r->py_batches);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* Grows ``*arr`` (of ``size`` bytes elements, capacity ``*cap``) to hold ``need``. */
static int reserve(void **arr, Py_ssize_t *cap, Py_ssize_t need, size_t size) {
    if (need <= *cap) return 0;
    Py_ssize_t grown = *cap ? *cap * 2 : 8;
    while (grown < need) grown *= 2;
    void *p = PyMem_Realloc(*arr, (size_t)grown * size);
    if (!p) { PyErr_NoMemory(); return -1; }
    *arr = p;
    *cap = grown;
    return 0;
}

static const char *text_of(const GetRunObject *r) { return PyBytes_AS_STRING(r->text); }

/* The slot of (group, key), made when new; -1 on error. Keys hash with murmur too. */
static int intern_slot(GetRunObject *r, const char *text, int group, Py_ssize_t at,
                       Py_ssize_t len, int node) {
    if (r->nslots * 2 >= r->icap) {  /* keep the table at most half full */
        Py_ssize_t cap = r->icap ? r->icap * 2 : 16;
        int *index = PyMem_Calloc((size_t)cap, sizeof(int));
        if (!index) { PyErr_NoMemory(); return -1; }
        for (Py_ssize_t i = 0; i < r->nslots; i++) {
            slot_t *s = &r->slots[i];
            uint32_t h = murmur3_32((const unsigned char *)text + s->key_at, s->key_len, (uint32_t)s->group);
            Py_ssize_t c = h & (cap - 1);
            while (index[c]) c = (c + 1) & (cap - 1);
            index[c] = (int)i + 1;
        }
        PyMem_Free(r->index);
        r->index = index;
        r->icap = cap;
    }
    uint32_t h = murmur3_32((const unsigned char *)text + at, len, (uint32_t)group);
    Py_ssize_t c = h & (r->icap - 1);
    while (r->index[c]) {
        slot_t *s = &r->slots[r->index[c] - 1];
        if (s->group == group && s->key_len == len && memcmp(text + s->key_at, text + at, (size_t)len) == 0)
            return r->index[c] - 1;
        c = (c + 1) & (r->icap - 1);
    }
    if (reserve((void **)&r->slots, &r->scap, r->nslots + 1, sizeof(slot_t)) < 0) return -1;
    int slot = (int)r->nslots++;
    r->index[c] = slot + 1;
    slot_t *s = &r->slots[slot];
    s->group = group; s->node = node; s->batch = -1;
    s->key_at = at; s->key_len = len;
    s->state = EMPTY; s->owner = NULL; s->ptr = NULL; s->len = 0;
    if (node >= 0) {
        Py_ssize_t b;
        for (b = 0; b < r->nbatches; b++)
            if (r->batches[b].node == node && r->batches[b].group == group) break;
        if (b == r->nbatches) {
            if (reserve((void **)&r->batches, &r->bcap, r->nbatches + 1, sizeof(batch_t)) < 0) return -1;
            batch_t *nb = &r->batches[r->nbatches++];
            nb->node = node; nb->group = group; nb->slots = NULL; nb->n = nb->cap = 0;
        }
        batch_t *bt = &r->batches[b];
        if (reserve((void **)&bt->slots, &bt->cap, bt->n + 1, sizeof(int)) < 0) return -1;
        bt->slots[bt->n++] = slot;
        s->batch = (int)b;
    }
    return slot;
}

static PyTypeObject GetRunType;

static inline int key_byte(unsigned char c) { return in_keys[c]; }

/* The length of the plain get line at ``p`` (through its '\n'), with ``*keys_at`` where its
 * keys begin and ``*keys_end`` where they end; 0 when it is not one or not complete. */
static Py_ssize_t plain_get_line(const unsigned char *p, const unsigned char *end,
                                 Py_ssize_t max_line, int *with_cas, Py_ssize_t *keys_at,
                                 Py_ssize_t *keys_end, Py_ssize_t *nkeys) {
    Py_ssize_t avail = end - p;
    if (avail < 6 || p[0] != 'g' || p[1] != 'e' || p[2] != 't') return 0;
    Py_ssize_t i = 3;
    *with_cas = 0;
    if (p[3] == 's') { *with_cas = 1; i = 4; }
    if (p[i] != ' ') return 0;
    *keys_at = i;
    Py_ssize_t limit = avail < max_line + 2 ? avail : max_line + 2;
    Py_ssize_t count = 0;
    while (1) {  /* p[i] is the space before a key */
        Py_ssize_t start = ++i;
        while (i < limit && key_byte(p[i])) i++;
        if (i >= limit) return 0;
        Py_ssize_t klen = i - start;
        if (klen == 0 || klen > key_max_length) return 0;
        count++;
        if (p[i] == ' ') continue;
        *keys_end = i;
        *nkeys = count;
        if (p[i] == '\n') return i + 1;
        if (p[i] == '\r' && i + 1 < limit && p[i + 1] == '\n') return i + 2;
        return 0;
    }
}


/* take_gets(buf, pos, table, max_line, max_keys, answer_max) -> (pos, GetRun | None) */
static PyObject *take_gets(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyByteArray_Check(args[0]) || !PyObject_TypeCheck(args[2], &RouteTableType)) {
        PyErr_SetString(PyExc_TypeError, "take_gets(buf: bytearray, pos, table: RouteTable, max_line, max_keys, answer_max)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), max_line = PyLong_AsSsize_t(args[3]);
    Py_ssize_t max_keys = PyLong_AsSsize_t(args[4]), answer_max = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) return NULL;
    RouteTableObject *t = (RouteTableObject *)args[2];
    const unsigned char *buf = (const unsigned char *)PyByteArray_AS_STRING(args[0]);
    const unsigned char *end = buf + PyByteArray_GET_SIZE(args[0]);
    if (pos < 0 || pos > end - buf) { PyErr_SetString(PyExc_ValueError, "pos out of range"); return NULL; }
    /* First pass: how far the plain get lines go. */
    const unsigned char *p = buf + pos;
    Py_ssize_t lines = 0, total_keys = 0;
    while (p < end) {
        int with_cas;
        Py_ssize_t keys_at, keys_end, nkeys;
        Py_ssize_t len = plain_get_line(p, end, max_line, &with_cas, &keys_at, &keys_end, &nkeys);
        if (len == 0 || nkeys > max_keys) break;
        p += len;
        lines++;
        total_keys += nkeys;
    }
    if (lines == 0)
        return Py_BuildValue("(nO)", pos, Py_None);
    GetRunObject *r = PyObject_New(GetRunObject, &GetRunType);
    if (!r) return NULL;
    memset((char *)r + sizeof(PyObject), 0, sizeof(GetRunObject) - sizeof(PyObject));
    r->answer_max = answer_max;
    r->text = PyBytes_FromStringAndSize((const char *)buf + pos, p - (buf + pos));
    if (!r->text) goto fail;
    if (reserve((void **)&r->commands, &r->ccap, lines, sizeof(command_t)) < 0
        || reserve((void **)&r->occ, &r->ocap, total_keys, sizeof(occurrence_t)) < 0)
        goto fail;
    const char *text = text_of(r);
    const unsigned char *q = (const unsigned char *)text, *qend = q + PyBytes_GET_SIZE(r->text);
    char *scratch = PyMem_Malloc((size_t)(t->default_prefix_len + key_max_length + 1));
    if (!scratch) { PyErr_NoMemory(); goto fail; }
    while (q < qend) {
        int with_cas;
        Py_ssize_t keys_at, keys_end, nkeys;
        Py_ssize_t len = plain_get_line(q, qend, max_line, &with_cas, &keys_at, &keys_end, &nkeys);
        command_t *cmd = &r->commands[r->ncommands++];
        cmd->first = r->nocc;
        cmd->count = nkeys;
        cmd->with_cas = with_cas;
        Py_ssize_t k = keys_at + 1;  /* past the space */
        while (k < keys_end) {
            const unsigned char *sp = memchr(q + k, ' ', (size_t)(keys_end - k));
            Py_ssize_t klen = (sp ? sp - q : keys_end) - k;
            Py_ssize_t at = (q - (const unsigned char *)text) + k;
            int group, node;
            Py_ssize_t rest;
            place(t, text + at, klen, &group, &rest, &node, scratch);
            int slot = intern_slot(r, text, group, at + rest, klen - rest, node);
            if (slot < 0) { PyMem_Free(scratch); goto fail; }
            occurrence_t *o = &r->occ[r->nocc++];
            o->at = at; o->len = klen; o->slot = slot;
            k += klen + 1;
        }
        q += len;
    }
    PyMem_Free(scratch);
    /* The batches' GET_MANY bodies: op, group, then each key. */
    r->py_batches = PyList_New(r->nbatches);
    if (!r->py_batches) goto fail;
    for (Py_ssize_t b = 0; b < r->nbatches; b++) {
        batch_t *bt = &r->batches[b];
        PyObject *gf = t->group_fields[bt->group];
        Py_ssize_t size = 2 + PyBytes_GET_SIZE(gf);
        for (Py_ssize_t j = 0; j < bt->n; j++) {
            Py_ssize_t kl = r->slots[bt->slots[j]].key_len;
            size += 1 + varint_size((uint64_t)kl) + kl;
        }
        PyObject *body = PyBytes_FromStringAndSize(NULL, size);
        if (!body) goto fail;
        char *w = PyBytes_AS_STRING(body);
        *w++ = 0x10; *w++ = 21;  /* op GET_MANY */
        memcpy(w, PyBytes_AS_STRING(gf), (size_t)PyBytes_GET_SIZE(gf));
        w += PyBytes_GET_SIZE(gf);
        for (Py_ssize_t j = 0; j < bt->n; j++) {
            slot_t *s = &r->slots[bt->slots[j]];
            *w++ = 0x52;
            w = put_varint(w, (uint64_t)s->key_len);
            memcpy(w, text + s->key_at, (size_t)s->key_len);
            w += s->key_len;
        }
        PyObject *pair = Py_BuildValue("(iN)", bt->node, body);
        if (!pair) goto fail;
        PyList_SET_ITEM(r->py_batches, b, pair);
    }
    r->left = r->nbatches;
    return Py_BuildValue("(nN)", (Py_ssize_t)(p - buf), (PyObject *)r);
fail:
    Py_DECREF(r);
    return NULL;
}

/* Whether an entry holds a value (kinds 0, 1, 3, 4 of shared/entry.py, long enough; or
 * one of them behind kind 5's two bytes of memcached item bits). */
static inline int positive_plain(const unsigned char *e, Py_ssize_t len) {
    if (len < 1) return 0;
    switch (e[0]) {
    case 0: return 1;
    case 1: return len >= 5;
    case 3: return len >= 9;
    case 4: return len >= 13;
    default: return 0;
    }
}

static inline int positive(const unsigned char *e, Py_ssize_t len) {
    if (len >= 1 && e[0] == 5)
        return positive_plain(e + 2, len - 2);
    return positive_plain(e, len);
}

static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t be64(const unsigned char *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }

static void unpack(const unsigned char *e, Py_ssize_t len, uint32_t *flags, uint64_t *cas,
                   const unsigned char **value, Py_ssize_t *vlen) {
    if (e[0] == 5) {  /* item bits: the entry is behind them */
        e += 2;
        len -= 2;
    }
    switch (e[0]) {
    case 0: *flags = 0; *cas = 0; *value = e + 1; break;
    case 1: *flags = be32(e + 1); *cas = 0; *value = e + 5; break;
    case 3: *flags = 0; *cas = be64(e + 1); *value = e + 9; break;
    default: *flags = be32(e + 9); *cas = be64(e + 1); *value = e + 13; break;
    }
    *vlen = len - (*value - e);
}

static void set_entry(slot_t *s, PyObject *owner, const unsigned char *ptr, Py_ssize_t len) {
    Py_XSETREF(s->owner, Py_NewRef(owner));
    s->ptr = ptr;
    s->len = len;
    s->state = FILLED;
}

static PyObject *run_fill(GetRunObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "fill(batch, values)"); return NULL; }
    Py_ssize_t b = PyLong_AsSsize_t(args[0]);
    if (b == -1 && PyErr_Occurred()) return NULL;
    if (b < 0 || b >= r->nbatches) { PyErr_SetString(PyExc_IndexError, "no such batch"); return NULL; }
    batch_t *bt = &r->batches[b];
    PyObject *values = args[1];
    if (ValueListType && Py_IS_TYPE(values, ValueListType)) {
        ValueListObject *vl = (ValueListObject *)values;
        if (vl->n != bt->n) goto mismatch;
        const unsigned char *base = (const unsigned char *)vl->view.buf;
        /* The ValueList holds the payload's buffer: it keeps the entries alive. */
        for (Py_ssize_t j = 0; j < bt->n; j++)
            set_entry(&r->slots[bt->slots[j]], values, base + vl->spans[2 * j], vl->spans[2 * j + 1]);
    } else {
        PyObject *seq = PySequence_Fast(values, "values must be a sequence of bytes");
        if (!seq) return NULL;
        if (PySequence_Fast_GET_SIZE(seq) != bt->n) { Py_DECREF(seq); goto mismatch; }
        for (Py_ssize_t j = 0; j < bt->n; j++) {
            PyObject *v = PySequence_Fast_GET_ITEM(seq, j);
            if (!PyBytes_Check(v)) { Py_DECREF(seq); PyErr_SetString(PyExc_TypeError, "values must be bytes"); return NULL; }
            set_entry(&r->slots[bt->slots[j]], v, (const unsigned char *)PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
        }
        Py_DECREF(seq);
    }
    return PyLong_FromSsize_t(--r->left);
mismatch:
    PyErr_Format(PyExc_ValueError, "%zd answers for %zd keys", PySequence_Size(values), bt->n);
    return NULL;
}

static PyObject *run_fail(GetRunObject *r, PyObject *batch) {
    Py_ssize_t b = PyLong_AsSsize_t(batch);
    if (b == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(--r->left);
}

static PyObject *run_unresolved(GetRunObject *r, PyObject *unused) {
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    const char *text = text_of(r);
    for (Py_ssize_t i = 0; i < r->nslots; i++) {
        slot_t *s = &r->slots[i];
        if (s->state == ERRORED || (s->state == FILLED && positive(s->ptr, s->len)))
            continue;
        PyObject *entry = s->state == FILLED
            ? PyBytes_FromStringAndSize((const char *)s->ptr, s->len) : Py_NewRef(Py_None);
        PyObject *item = entry ? Py_BuildValue("(niiiy#N)", i, s->group, s->node, s->batch,
                                               text + s->key_at, s->key_len, entry) : NULL;
        if (!item || PyList_Append(out, item) < 0) { Py_XDECREF(item); Py_DECREF(out); return NULL; }
        Py_DECREF(item);
    }
    return out;
}

static slot_t *slot_arg(GetRunObject *r, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= r->nslots) { PyErr_SetString(PyExc_IndexError, "no such slot"); return NULL; }
    return &r->slots[i];
}

static PyObject *run_resolve(GetRunObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[1])) { PyErr_SetString(PyExc_TypeError, "resolve(slot, entry: bytes)"); return NULL; }
    slot_t *s = slot_arg(r, args[0]);
    if (!s) return NULL;
    set_entry(s, args[1], (const unsigned char *)PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]));
    Py_RETURN_NONE;
}

static PyObject *run_resolve_error(GetRunObject *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[1])) { PyErr_SetString(PyExc_TypeError, "resolve_error(slot, line: bytes)"); return NULL; }
    slot_t *s = slot_arg(r, args[0]);
    if (!s) return NULL;
    Py_XSETREF(s->owner, Py_NewRef(args[1]));
    s->ptr = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    s->len = PyBytes_GET_SIZE(args[1]);
    s->state = ERRORED;
    Py_RETURN_NONE;
}

static inline Py_ssize_t digits(uint64_t v) { Py_ssize_t n = 1; while (v >= 10) { v /= 10; n++; } return n; }
static inline char *put_uint(char *p, uint64_t v) {
    char tmp[20];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

/* A command's answer: its first error line's slot, else the size of its VALUE lines. */
static Py_ssize_t command_size(GetRunObject *r, command_t *c, slot_t **error, Py_ssize_t *hits,
                               Py_ssize_t large, Py_ssize_t *big) {
    Py_ssize_t size = 0, values = 0;
    *error = NULL;
    *hits = 0;
    for (Py_ssize_t j = c->first; j < c->first + c->count; j++) {
        slot_t *s = &r->slots[r->occ[j].slot];
        if (s->state == ERRORED) { *error = s; return s->len; }
        if (s->state != FILLED || !positive(s->ptr, s->len)) continue;
        uint32_t flags; uint64_t cas; const unsigned char *v; Py_ssize_t vlen;
        unpack(s->ptr, s->len, &flags, &cas, &v, &vlen);
        size += 6 + r->occ[j].len + 1 + digits(flags) + 1 + digits((uint64_t)vlen) + 2 + vlen + 2;
        if (c->with_cas) size += 1 + digits(cas);
        values += vlen;
        if (large > 0 && vlen >= large) *big += vlen;
        (*hits)++;
    }
    if (values > r->answer_max) return -1;
    return size + 5;  /* END\r\n */
}

/* A view of ``len`` bytes at ``ptr`` inside slot ``s``'s owner, holding the owner's buffer:
 * a large value handed to the socket without being copied into the answer. */
static PyObject *entry_view(slot_t *s, const unsigned char *ptr, Py_ssize_t len) {
    PyObject *exporter = s->owner;
    const unsigned char *base;
    if (ValueListType && Py_IS_TYPE(exporter, ValueListType)) {
        ValueListObject *vl = (ValueListObject *)exporter;
        exporter = vl->view.obj;
        base = (const unsigned char *)vl->view.buf;
    } else {
        base = (const unsigned char *)PyBytes_AS_STRING(exporter);
    }
    PyObject *whole = exporter ? PyMemoryView_FromObject(exporter) : NULL;
    if (!whole) {  /* no exporter to view (never expected): the value copied */
        PyErr_Clear();
        return PyBytes_FromStringAndSize((const char *)ptr, len);
    }
    Py_ssize_t at = ptr - base;
    PyObject *view = PySequence_GetSlice(whole, at, at + len);
    Py_DECREF(whole);
    return view;
}

/* The answers to every command, in order: one bytes object; or, with ``large`` > 0 and a
 * value of at least that many bytes among them, a list of pieces in which each such value
 * is a view of the node's answer, not copied (the socket takes the pieces as they are). */
static PyObject *run_render(GetRunObject *r, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t large = 0;
    if (nargs > 1) { PyErr_SetString(PyExc_TypeError, "render(large=0)"); return NULL; }
    if (nargs == 1 && (large = PyLong_AsSsize_t(args[0])) == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t total = 0, hits = 0, misses = 0, big = 0;
    for (Py_ssize_t i = 0; i < r->ncommands; i++) {
        slot_t *err;
        Py_ssize_t h, was = big, size = command_size(r, &r->commands[i], &err, &h, large, &big);
        if (size < 0 || err) big = was;  /* refused or failed whole: its values are not sent */
        total += size < 0 ? PyBytes_GET_SIZE(answer_too_big) : size;
        if (!err) { hits += h; misses += r->commands[i].count - h; }
    }
    PyObject *out = NULL, *pieces = NULL;
    char *w, *piece;
    if (big) {
        pieces = PyList_New(0);
        w = piece = PyMem_Malloc((size_t)(total - big) + 1);
        if (!pieces || !w) { Py_XDECREF(pieces); PyMem_Free(w); return PyErr_NoMemory(); }
    } else {
        out = PyBytes_FromStringAndSize(NULL, total);
        if (!out) return NULL;
        w = piece = PyBytes_AS_STRING(out);
    }
    char *start = w;
    const char *text = text_of(r);
    for (Py_ssize_t i = 0; i < r->ncommands; i++) {
        command_t *c = &r->commands[i];
        slot_t *err;
        Py_ssize_t h, unused, size = command_size(r, c, &err, &h, 0, &unused);
        if (size < 0) {
            memcpy(w, PyBytes_AS_STRING(answer_too_big), (size_t)PyBytes_GET_SIZE(answer_too_big));
            w += PyBytes_GET_SIZE(answer_too_big);
            continue;
        }
        if (err) { memcpy(w, err->ptr, (size_t)err->len); w += err->len; continue; }
        for (Py_ssize_t j = c->first; j < c->first + c->count; j++) {
            occurrence_t *o = &r->occ[j];
            slot_t *s = &r->slots[o->slot];
            if (s->state != FILLED || !positive(s->ptr, s->len)) continue;
            uint32_t flags; uint64_t cas; const unsigned char *v; Py_ssize_t vlen;
            unpack(s->ptr, s->len, &flags, &cas, &v, &vlen);
            memcpy(w, "VALUE ", 6); w += 6;
            memcpy(w, text + o->at, (size_t)o->len); w += o->len;
            *w++ = ' '; w = put_uint(w, flags);
            *w++ = ' '; w = put_uint(w, (uint64_t)vlen);
            if (c->with_cas) { *w++ = ' '; w = put_uint(w, cas); }
            *w++ = '\r'; *w++ = '\n';
            if (big && vlen >= large) {
                PyObject *head = PyBytes_FromStringAndSize(piece, w - piece);
                PyObject *value = head ? entry_view(s, v, vlen) : NULL;
                int bad = !value || PyList_Append(pieces, head) < 0 || PyList_Append(pieces, value) < 0;
                Py_XDECREF(head);
                Py_XDECREF(value);
                if (bad) { Py_DECREF(pieces); PyMem_Free(start); return NULL; }
                piece = w;
            } else {
                memcpy(w, v, (size_t)vlen); w += vlen;
            }
            *w++ = '\r'; *w++ = '\n';
        }
        memcpy(w, "END\r\n", 5); w += 5;
    }
    r->hits = hits;
    r->misses = misses;
    if (!big)
        return out;
    PyObject *tail = PyBytes_FromStringAndSize(piece, w - piece);
    PyMem_Free(start);
    if (!tail || PyList_Append(pieces, tail) < 0) { Py_XDECREF(tail); Py_DECREF(pieces); return NULL; }
    Py_DECREF(tail);
    return pieces;
}

static PyObject *run_batches(GetRunObject *r, void *c) { return Py_NewRef(r->py_batches); }

static PyObject *run_batch_sizes(GetRunObject *r, PyObject *unused) {
    PyObject *out = PyList_New(r->nbatches);
    if (!out) return NULL;
    for (Py_ssize_t b = 0; b < r->nbatches; b++) {
        PyObject *pair = Py_BuildValue("(in)", r->batches[b].group, r->batches[b].n);
        if (!pair) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, b, pair);
    }
    return out;
}

/* slot(i) -> (group, key): the key (within its group) of a slot, for the hot-key sampler. */
static PyObject *run_slot(GetRunObject *r, PyObject *index) {
    Py_ssize_t i = PyLong_AsSsize_t(index);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= r->nslots) { PyErr_SetString(PyExc_IndexError, "no such slot"); return NULL; }
    const slot_t *s = &r->slots[i];
    return Py_BuildValue("(iy#)", s->group, text_of(r) + s->key_at, s->key_len);
}

/* batch_keys(b) -> [key]: a batch's keys (within its group) in the order fill takes them. */
static PyObject *run_batch_keys(GetRunObject *r, PyObject *batch) {
    Py_ssize_t b = PyLong_AsSsize_t(batch);
    if (b == -1 && PyErr_Occurred()) return NULL;
    if (b < 0 || b >= r->nbatches) { PyErr_SetString(PyExc_IndexError, "no such batch"); return NULL; }
    const batch_t *bt = &r->batches[b];
    PyObject *out = PyList_New(bt->n);
    if (!out) return NULL;
    const char *text = text_of(r);
    for (Py_ssize_t j = 0; j < bt->n; j++) {
        const slot_t *s = &r->slots[bt->slots[j]];
        PyObject *key = PyBytes_FromStringAndSize(text + s->key_at, s->key_len);
        if (!key) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, j, key);
    }
    return out;
}

static PyMethodDef run_methods[] = {
    {"slot", (PyCFunction)run_slot, METH_O, "(group, key) of a slot."},
    {"batch_keys", (PyCFunction)run_batch_keys, METH_O, "A batch's keys, in fill's order."},
    {"fill", (PyCFunction)(void (*)(void))run_fill, METH_FASTCALL,
     "Node answered a batch with one entry per key; batches left."},
    {"fail", (PyCFunction)run_fail, METH_O, "A batch got no usable answer; batches left."},
    {"unresolved", (PyCFunction)run_unresolved, METH_NOARGS,
     "(slot, group, node, batch, key, entry) of every key the fast path could not answer."},
    {"resolve", (PyCFunction)(void (*)(void))run_resolve, METH_FASTCALL, "The slow path's entry for a slot."},
    {"resolve_error", (PyCFunction)(void (*)(void))run_resolve_error, METH_FASTCALL,
     "A slot failed: commands naming it answer this line."},
    {"render", (PyCFunction)(void (*)(void))run_render, METH_FASTCALL,
     "The answers to every command, in order (pieces, values of ``large`` bytes or more uncopied)."},
    {"batch_sizes", (PyCFunction)run_batch_sizes, METH_NOARGS, "(group, keys) per batch."},
    {NULL},
};

static PyMemberDef run_members[] = {
    {"left", T_PYSSIZET, offsetof(GetRunObject, left), READONLY, "batches not yet filled or failed"},
    {"hits", T_PYSSIZET, offsetof(GetRunObject, hits), READONLY, NULL},
    {"misses", T_PYSSIZET, offsetof(GetRunObject, misses), READONLY, NULL},
    {"nslots", T_PYSSIZET, offsetof(GetRunObject, nslots), READONLY, "distinct keys"},
    {"ncommands", T_PYSSIZET, offsetof(GetRunObject, ncommands), READONLY, NULL},
    {NULL},
};

static PyGetSetDef run_getset[] = {{"batches", (getter)run_batches, NULL, "(node, GET_MANY body) per batch", NULL}, {NULL}};

static PyTypeObject GetRunType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "router.dataplane._getrun.GetRun",
    .tp_basicsize = sizeof(GetRunObject),
    .tp_dealloc = (destructor)run_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The gets of one client read: where each key went, and what came back.",
    .tp_methods = run_methods,
    .tp_members = run_members,
    .tp_getset = run_getset,
};

static PyMethodDef module_methods[] = {
    {"take_gets", (PyCFunction)(void (*)(void))take_gets, METH_FASTCALL,
     "Route every complete plain get/gets line at the head of a buffer: (pos, run or None)."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "router.dataplane._getrun",
    "Gets routed a batch at a time, compiled (twin: router/dataplane/getrun_py.py).", -1, module_methods,
};

/* KEY_MAX_LENGTH and NOT_IN_KEYS of router.memcache.keys into key_max_length, in_keys. */
static int read_key_rule(void) {
    PyObject *keys = PyImport_ImportModule("router.memcache.keys");
    if (!keys) return -1;
    PyObject *max = PyObject_GetAttrString(keys, "KEY_MAX_LENGTH");
    PyObject *not_in = max ? PyObject_GetAttrString(keys, "NOT_IN_KEYS") : NULL;
    Py_DECREF(keys);
    int ok = 0;
    if (not_in && PyBytes_Check(not_in)) {
        key_max_length = PyLong_AsSsize_t(max);
        if (!(key_max_length == -1 && PyErr_Occurred())) {
            memset(in_keys, 1, sizeof in_keys);
            for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(not_in); i++)
                in_keys[(unsigned char)PyBytes_AS_STRING(not_in)[i]] = 0;
            ok = 1;
        }
    } else if (not_in) {
        PyErr_SetString(PyExc_TypeError, "router.memcache.keys.NOT_IN_KEYS must be bytes");
    }
    Py_XDECREF(max);
    Py_XDECREF(not_in);
    return ok ? 0 : -1;
}

PyMODINIT_FUNC PyInit__getrun(void) {
    if (PyType_Ready(&RouteTableType) < 0 || PyType_Ready(&GetRunType) < 0)
        return NULL;
    if (read_key_rule() < 0)
        return NULL;
    PyObject *codec = PyImport_ImportModule("shared._codec");
    if (codec) {
        ValueListType = (PyTypeObject *)PyObject_GetAttrString(codec, "ValueList");
        Py_DECREF(codec);
        if (!ValueListType) return NULL;
    } else {
        PyErr_Clear();  /* answers then come as plain sequences of bytes */
    }
    answer_too_big = PyBytes_FromString("SERVER_ERROR out of memory writing get response\r\n");
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "COMPILED", Py_True) < 0
        || PyModule_AddObjectRef(m, "RouteTable", (PyObject *)&RouteTableType) < 0
        || PyModule_AddObjectRef(m, "GetRun", (PyObject *)&GetRunType) < 0
        || PyModule_AddObjectRef(m, "ANSWER_TOO_BIG", answer_too_big) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
