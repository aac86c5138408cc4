/* The adaptive core, compiled: the twin of storage_node/cores/adaptive.py (read it, and
 * ghost.py and expiry.py, first: the policy, and every name below, are theirs).
 *
 * Same hits, evictions, expirations, byte counts and ghost decisions as the pure core for
 * the same calls, clock and hash: each Python method has a C function of the same name
 * doing the same steps in the same order, the clock and the hash callable included
 * (called exactly where the pure core calls them). tests/storage_node/cores/test_adaptive_twins.py drives
 * both with the same random operations and compares their whole state after each one.
 *
 * What differs is the layout, for speed and memory:
 * - Each key has one entry (a C struct in chunks of 1024) holding the key, the value, the
 *   deadline, its state (fresh, read, or main with a count 0..3: which of the pure core's
 *   dicts would hold it) and its stale places per queue (the pure core's ``_stale``). An
 *   entry whose key left (deleted, evicted, expired) while it still has stale places in a
 *   queue stays as a tombstone until the last of them reaches the head: so a place in a
 *   queue is an entry's index, 4 bytes, and the head finds its entry without a lookup.
 * - One open-addressing index (linear probing, backward-shift deletion) maps a key to its
 *   entry; a slot keeps the low 32 bits of the key's hash beside the entry's index, so a
 *   probe reads no entry that cannot match and a resize reads no key.
 * - The queues are rings of entry indices; the expiry bands rings of (key, deadline).
 * Keys and values must be bytes (exactly: a subclass could run code on its release).
 *
 * Reentrancy: the clock and a hash callable other than the builtin one are Python code.
 * While one runs, every method of the core raises RuntimeError instead of changing it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* What an entry costs in RSS beyond its key and value bytes (their objects' headers, and
 * the entry, index slot, place and ghost slot here), and what a ttl adds (its place in an
 * expiry band): tests/integration/test_entry_overhead.py measures 159 and 21, with the index at its
 * fullest; as the tables double these figures hold the top of the band. */
#define ENTRY_OVERHEAD 168
#define TTL_OVERHEAD 32

enum { SMALL = 0, MAIN = 1 };
enum { FRESH = 0, READ = 1, MAIN0 = 2 };  /* main with count c: MAIN0 + c */
#define MAX_COUNT 3
#define START_SHARE 0.1
#define MIN_SHARE 0.001
#define MAX_SHARE 0.99
#define EPOCHS 16
#define MIN_GHOST_SLOTS 64
#define NONE UINT32_MAX

#define CHUNK_BITS 10
#define CHUNK (1u << CHUNK_BITS)
#define MIN_INDEX 16
#define MIN_RING 8

typedef struct {
    PyObject *key;    /* held while the key is live or has stale places; NULL: a free entry */
    PyObject *value;  /* held while live; NULL in a tombstone */
    double deadline;  /* when has_ttl */
    uint32_t stale[2];  /* stale places in the SMALL and MAIN rings (a free entry: [0] links) */
    uint8_t state;
    uint8_t has_ttl;
} entry_t;

typedef struct {
    uint32_t *buf;
    size_t cap, head, len;  /* cap a power of two, or 0 */
} ring_t;

typedef struct {
    PyObject *key;
    double deadline;
} due_t;

typedef struct {
    long long band;
    due_t *buf;
    size_t cap, head, len;
} band_t;

typedef struct {
    uint32_t *table;
    size_t slots;  /* a power of two */
    long long epoch_length, left;
    uint32_t epoch;
    uint32_t tags[2];
    long long fresh[2];             /* ghosts.py's _new */
    long long per_epoch[2][EPOCHS];
} ghosts_t;

struct Walk;

typedef struct {
    PyObject_HEAD
    PyObject *clock;
    PyObject *hash;
    int builtin_hash;
    int busy;
    long long max_bytes, entry_overhead, ttl_overhead;
    long long nbytes, evictions, expirations;
    long long small_bytes, entries, until_upkeep;
    double target;
    /* entries */
    entry_t **chunks;
    uint32_t nchunks, chunk0_cap, high, free_head;
    /* index: 0 empty, else (low 32 bits of the hash) << 32 | (entry index + 1) */
    uint64_t *slots;
    size_t mask, indexed;
    ring_t order[2];  /* _small_order, _main_order */
    band_t *bands;
    size_t nbands, bands_cap, expiry_size;
    ghosts_t ghosts;
    struct Walk *walks;  /* the walks in progress (their places follow a compaction) */
} Core;

/* A walk of the core (storage_node/cores/walk.py): the rings' places copied when it
 * starts, the stale ones already NONE, each resolved to its entry when reached. */
typedef struct Walk {
    PyObject_HEAD
    Core *core;       /* a strong reference; NULL once the walk is over */
    uint32_t *order;  /* the small ring's places, then the main ring's */
    size_t len, at;
    struct Walk *prev, *next;
} Walk;

static PyTypeObject CoreType;
static PyObject *builtin_hash_fn, *default_clock, *zero;

#define ENTRY(s, i) (&(s)->chunks[(i) >> CHUNK_BITS][(i) & (CHUNK - 1)])

/* -- small helpers ---------------------------------------------------------------------- */

static inline Py_hash_t key_hash(PyObject *key) {
    return PyObject_Hash(key);  /* exact bytes: never fails, cached after the first */
}

static inline long long charge(Core *s, entry_t *e) {
    return (long long)PyBytes_GET_SIZE(e->key) + PyBytes_GET_SIZE(e->value) + s->entry_overhead
           + (e->has_ttl ? s->ttl_overhead : 0);
}

static int check_key(PyObject *key) {
    if (PyBytes_CheckExact(key))
        return 0;
    PyErr_Format(PyExc_TypeError, "adaptive: keys are bytes, not %.100s", Py_TYPE(key)->tp_name);
    return -1;
}

static PyObject *call_clock(Core *s) {
    if (s->clock == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "adaptive: the core was cleared by the garbage collector");
        return NULL;
    }
    return PyObject_CallNoArgs(s->clock);
}

/* now >= deadline, as Python compares them: 1, 0, or -1 with an exception. */
static int reached(PyObject *now, double deadline) {
    if (PyFloat_CheckExact(now))
        return PyFloat_AS_DOUBLE(now) >= deadline;
    PyObject *d = PyFloat_FromDouble(deadline);
    if (d == NULL)
        return -1;
    int r = PyObject_RichCompareBool(now, d, Py_GE);
    Py_DECREF(d);
    return r;
}

/* ``self._clock() >= entry`` */
static int clock_reached(Core *s, double deadline) {
    PyObject *now = call_clock(s);
    if (now == NULL)
        return -1;
    int r = reached(now, deadline);
    Py_DECREF(now);
    return r;
}

/* -- entries and the index -------------------------------------------------------------- */

static int grow_index(Core *s) {
    size_t old_size = s->mask + 1, size = old_size * 2, mask = size - 1;
    uint64_t *slots = PyMem_Calloc(size, sizeof(uint64_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < old_size; i++) {
        uint64_t slot = s->slots[i];
        if (slot) {
            size_t j = (size_t)(slot >> 32) & mask;
            while (slots[j])
                j = (j + 1) & mask;
            slots[j] = slot;
        }
    }
    PyMem_Free(s->slots);
    s->slots = slots;
    s->mask = mask;
    return 0;
}

/* The entry under ``key`` (live or a tombstone), or NONE. */
static uint32_t find(Core *s, PyObject *key, Py_hash_t hash) {
    uint32_t tag = (uint32_t)(uint64_t)hash;
    size_t mask = s->mask, i = tag & mask;
    Py_ssize_t n = PyBytes_GET_SIZE(key);
    for (;;) {
        uint64_t slot = s->slots[i];
        if (!slot)
            return NONE;
        if ((uint32_t)(slot >> 32) == tag) {
            uint32_t idx = (uint32_t)slot - 1;
            PyObject *other = ENTRY(s, idx)->key;
            if (other == key || (PyBytes_GET_SIZE(other) == n
                                 && memcmp(PyBytes_AS_STRING(other), PyBytes_AS_STRING(key), n) == 0))
                return idx;
        }
        i = (i + 1) & mask;
    }
}

static int index_add(Core *s, Py_hash_t hash, uint32_t idx) {
    if ((s->indexed + 1) * 4 > (s->mask + 1) * 3 && grow_index(s) < 0)
        return -1;
    uint32_t tag = (uint32_t)(uint64_t)hash;
    size_t mask = s->mask, i = tag & mask;
    while (s->slots[i])
        i = (i + 1) & mask;
    s->slots[i] = (uint64_t)tag << 32 | ((uint64_t)idx + 1);
    s->indexed++;
    return 0;
}

static void index_remove(Core *s, Py_hash_t hash, uint32_t idx) {
    size_t mask = s->mask, i = (uint32_t)(uint64_t)hash & mask;
    while ((uint32_t)s->slots[i] != idx + 1)
        i = (i + 1) & mask;
    s->slots[i] = 0;
    size_t j = i;
    for (;;) {  /* backward shift: no tombstones in the index */
        j = (j + 1) & mask;
        uint64_t slot = s->slots[j];
        if (!slot)
            break;
        size_t home = (size_t)(slot >> 32) & mask;
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
            continue;  /* its probe path does not cross the hole */
        s->slots[i] = slot;
        s->slots[j] = 0;
        i = j;
    }
    s->indexed--;
}

/* A new entry for ``key`` (a new reference is taken), indexed; NONE on failure. */
static uint32_t new_entry(Core *s, PyObject *key, Py_hash_t hash) {
    uint32_t idx;
    if (s->free_head != NONE) {
        idx = s->free_head;
        s->free_head = ENTRY(s, idx)->stale[0];
    } else {
        idx = s->high;
        if (idx == NONE - 1) {
            PyErr_SetString(PyExc_OverflowError, "adaptive: too many entries");
            return NONE;
        }
        if (idx < CHUNK) {
            if (idx >= s->chunk0_cap) {
                uint32_t cap = s->chunk0_cap ? 2 * s->chunk0_cap : 8;
                if (cap > CHUNK)
                    cap = CHUNK;
                entry_t *chunk = PyMem_Realloc(s->chunks[0], cap * sizeof(entry_t));
                if (chunk == NULL) {
                    PyErr_NoMemory();
                    return NONE;
                }
                s->chunks[0] = chunk;
                s->chunk0_cap = cap;
            }
        } else if ((idx & (CHUNK - 1)) == 0) {
            uint32_t n = idx >> CHUNK_BITS;
            if (n >= s->nchunks) {
                entry_t **chunks = PyMem_Realloc(s->chunks, 2 * s->nchunks * sizeof(entry_t *));
                if (chunks == NULL) {
                    PyErr_NoMemory();
                    return NONE;
                }
                memset(chunks + s->nchunks, 0, s->nchunks * sizeof(entry_t *));
                s->chunks = chunks;
                s->nchunks *= 2;
            }
            if ((s->chunks[n] = PyMem_Malloc(CHUNK * sizeof(entry_t))) == NULL) {
                PyErr_NoMemory();
                return NONE;
            }
        }
        s->high++;
    }
    entry_t *e = ENTRY(s, idx);
    e->key = NULL;
    if (index_add(s, hash, idx) < 0) {
        e->stale[0] = s->free_head;
        s->free_head = idx;
        return NONE;
    }
    Py_INCREF(key);
    e->key = key;
    e->value = NULL;
    e->stale[0] = e->stale[1] = 0;
    e->has_ttl = 0;
    return idx;
}

/* Forget a tombstone with no places left. */
static void free_entry(Core *s, uint32_t idx) {
    entry_t *e = ENTRY(s, idx);
    PyObject *key = e->key;
    index_remove(s, key_hash(key), idx);
    e->key = NULL;
    e->stale[0] = s->free_head;
    s->free_head = idx;
    Py_DECREF(key);
}

/* A place of the entry left a queue; free it if that was its last. */
static inline void release(Core *s, uint32_t idx) {
    entry_t *e = ENTRY(s, idx);
    if (e->value == NULL && !e->stale[SMALL] && !e->stale[MAIN])
        free_entry(s, idx);
}

/* -- rings ------------------------------------------------------------------------------ */

/* A ring buffer's ``len`` elements of ``size`` bytes, from ``*head`` on, moved in order to
 * the start of a new buffer of ``cap`` elements (the old one freed); NULL if out of memory. */
static void *rering(void *old, size_t size, size_t *old_cap, size_t *head, size_t len, size_t cap) {
    char *buf = PyMem_Malloc(cap * size);
    if (buf == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (len) {
        size_t first = len < *old_cap - *head ? len : *old_cap - *head;
        memcpy(buf, (char *)old + *head * size, first * size);
        memcpy(buf + first * size, old, (len - first) * size);
    }
    PyMem_Free(old);
    *old_cap = cap;
    *head = 0;
    return buf;
}

static int ring_resize(ring_t *r, size_t cap) {
    uint32_t *buf = rering(r->buf, sizeof(uint32_t), &r->cap, &r->head, r->len, cap);
    if (buf == NULL)
        return -1;
    r->buf = buf;
    return 0;
}

static inline int ring_push(ring_t *r, uint32_t idx) {
    if (r->len == r->cap && ring_resize(r, r->cap ? 2 * r->cap : MIN_RING) < 0)
        return -1;
    r->buf[(r->head + r->len) & (r->cap - 1)] = idx;
    r->len++;
    return 0;
}

static int ring_push_front(ring_t *r, uint32_t idx) {
    if (r->len == r->cap && ring_resize(r, r->cap ? 2 * r->cap : MIN_RING) < 0)
        return -1;
    r->head = (r->head - 1) & (r->cap - 1);
    r->buf[r->head] = idx;
    r->len++;
    return 0;
}

static inline uint32_t ring_pop(ring_t *r) {
    uint32_t idx = r->buf[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
    return idx;
}

/* A ring's buffer at most four times what it holds (and at least MIN_RING). */
static int ring_fit(ring_t *r) {
    if (r->cap <= MIN_RING || r->len * 4 > r->cap)
        return 0;
    size_t cap = MIN_RING;
    while (cap < 2 * r->len)
        cap *= 2;
    return ring_resize(r, cap);
}

/* -- ghosts (ghost.py) ------------------------------------------------------------------ */

static void ghosts_clear(ghosts_t *g) {
    memset(g->table, 0, g->slots * sizeof(uint32_t));
    g->epoch = 0;
    g->left = g->epoch_length;
    g->tags[SMALL] = SMALL;
    g->tags[MAIN] = MAIN;
    g->fresh[0] = g->fresh[1] = 0;
    memset(g->per_epoch, 0, sizeof(g->per_epoch));
}

static int ghosts_fit(ghosts_t *g, long long window) {
    g->epoch_length = window / EPOCHS > 1 ? window / EPOCHS : 1;
    if (2 * window > (long long)g->slots) {
        size_t slots = 1;
        while ((long long)slots <= 2 * window - 1)  /* 1 << (2 * window - 1).bit_length() */
            slots *= 2;
        uint32_t *table = PyMem_Malloc(slots * sizeof(uint32_t));
        if (table == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        PyMem_Free(g->table);
        g->table = table;
        g->slots = slots;
        ghosts_clear(g);
    }
    return 0;
}

static void ghosts_next_epoch(ghosts_t *g) {
    g->left = g->epoch_length;
    uint32_t ended = g->epoch;
    uint32_t epoch = g->epoch = (ended + 1) & 0xFF;
    g->tags[SMALL] = epoch << 1 | SMALL;
    g->tags[MAIN] = epoch << 1 | MAIN;
    for (int q = SMALL; q <= MAIN; q++) {
        g->per_epoch[q][ended % EPOCHS] = g->fresh[q];
        g->per_epoch[q][epoch % EPOCHS] = 0;
        g->fresh[q] = 0;
    }
}

static void ghosts_add(ghosts_t *g, uint64_t h, int queue) {
    g->table[h & (g->slots - 1)] = (uint32_t)((h >> 32) & 0xFFFFFE00) | g->tags[queue];
    g->fresh[queue]++;
    if (!--g->left)
        ghosts_next_epoch(g);
}

/* SMALL or MAIN if the hash's key is a ghost of that queue (and no longer after), else -1. */
static int ghosts_pop(ghosts_t *g, uint64_t h) {
    size_t slot = h & (g->slots - 1);
    uint32_t tag = g->table[slot];
    if ((tag & 0xFFFFFE00) != ((h >> 32) & 0xFFFFFE00) || !tag)
        return -1;
    g->table[slot] = 0;
    uint32_t epoch = (tag >> 1) & 0xFF;
    if (((g->epoch - epoch) & 0xFF) >= EPOCHS)
        return -1;
    int queue = tag & 1;
    long long *count = epoch == g->epoch ? &g->fresh[queue] : &g->per_epoch[queue][epoch % EPOCHS];
    if (*count)
        (*count)--;
    return queue;
}

static void ghosts_population(ghosts_t *g, long long *small, long long *main) {
    *small = g->fresh[SMALL];
    *main = g->fresh[MAIN];
    for (int i = 0; i < EPOCHS; i++) {
        *small += g->per_epoch[SMALL][i];
        *main += g->per_epoch[MAIN][i];
    }
}

/* ``self._hash(key)``, as the 64 bits the ghosts read of it; 0 with an exception set on error. */
static int ghost_hash(Core *s, PyObject *key, uint64_t *h) {
    if (s->builtin_hash) {
        *h = (uint64_t)key_hash(key);
        return 0;
    }
    if (s->hash == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "adaptive: the core was cleared by the garbage collector");
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(s->hash, key);
    if (r == NULL)
        return -1;
    *h = PyLong_AsUnsignedLongLongMask(r);  /* h & mask and h >> 32 read only these bits */
    Py_DECREF(r);
    if (*h == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* -- the expiry index (expiry.py) ------------------------------------------------------- */

static void band_free(band_t *b) {
    for (size_t i = 0; i < b->len; i++)
        Py_DECREF(b->buf[(b->head + i) & (b->cap - 1)].key);
    PyMem_Free(b->buf);
}

static void remove_band(Core *s, size_t i) {
    band_free(&s->bands[i]);
    memmove(&s->bands[i], &s->bands[i + 1], (s->nbands - i - 1) * sizeof(band_t));
    s->nbands--;
}

static int band_resize(band_t *b, size_t cap) {
    due_t *buf = rering(b->buf, sizeof(due_t), &b->cap, &b->head, b->len, cap);
    if (buf == NULL)
        return -1;
    b->buf = buf;
    return 0;
}

/* After a prune or compaction: a band's buffer at most four times what it holds. */
static void band_fit(band_t *b) {
    if (b->cap > 4 && b->len * 4 < b->cap) {
        size_t cap = 4;
        while (cap < 2 * b->len)
            cap *= 2;
        if (band_resize(b, cap) < 0)
            PyErr_Clear();  /* it keeps its larger buffer */
    }
}

static int band_push(band_t *b, PyObject *key, double deadline) {
    if (b->len == b->cap && band_resize(b, b->cap ? 2 * b->cap : 4) < 0)
        return -1;
    Py_INCREF(key);
    b->buf[(b->head + b->len) & (b->cap - 1)] = (due_t){key, deadline};
    b->len++;
    return 0;
}

/* ``int(ttl).bit_length()`` */
static int ttl_band(PyObject *ttl, long long *band) {
    if (PyLong_CheckExact(ttl)) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(ttl, &overflow);
        if (!overflow && n != -1 && n > -(1LL << 62)) {
            uint64_t m = (uint64_t)(n < 0 ? -n : n);
            *band = m ? 64 - __builtin_clzll(m) : 0;
            return 0;
        }
        PyErr_Clear();
    } else if (PyFloat_CheckExact(ttl)) {
        double t = PyFloat_AS_DOUBLE(ttl);
        if (isfinite(t) && fabs(t) < 9e18) {
            uint64_t n = (uint64_t)(long long)(t < 0 ? -t : t);
            *band = n ? 64 - __builtin_clzll(n) : 0;
            return 0;
        }
    }
    PyObject *n = PyNumber_Long(ttl);
    if (n == NULL)
        return -1;
    PyObject *bits = PyObject_CallMethod(n, "bit_length", NULL);
    Py_DECREF(n);
    if (bits == NULL)
        return -1;
    *band = PyLong_AsLongLong(bits);
    Py_DECREF(bits);
    return *band == -1 && PyErr_Occurred() ? -1 : 0;
}

static int expiry_add(Core *s, PyObject *key, double deadline, long long band) {
    size_t i = 0;
    while (i < s->nbands && s->bands[i].band != band)
        i++;
    if (i == s->nbands) {
        if (s->nbands == s->bands_cap) {
            size_t cap = s->bands_cap ? 2 * s->bands_cap : 4;
            band_t *bands = PyMem_Realloc(s->bands, cap * sizeof(band_t));
            if (bands == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            s->bands = bands;
            s->bands_cap = cap;
        }
        s->bands[i] = (band_t){band, NULL, 0, 0, 0};
        s->nbands++;
    }
    if (band_push(&s->bands[i], key, deadline) < 0) {
        if (s->bands[i].len == 0)
            remove_band(s, i);
        return -1;
    }
    s->expiry_size++;
    return 0;
}

/* ``pop_due(now)``: a new reference to a key whose deadline has passed, NULL with no
 * exception if none has. */
static PyObject *expiry_pop_due(Core *s, PyObject *now) {
    for (size_t i = 0; i < s->nbands; i++) {
        band_t *b = &s->bands[i];
        int due = reached(now, b->buf[b->head].deadline);
        if (due < 0)
            return NULL;
        if (due) {
            PyObject *key = b->buf[b->head].key;
            b->head = (b->head + 1) & (b->cap - 1);
            b->len--;
            if (!b->len)
                remove_band(s, i);
            s->expiry_size--;
            return key;
        }
    }
    return NULL;
}

/* ``_waits_for(key, deadline)``: the key's live entry still has this deadline. */
static int waits_for(Core *s, PyObject *key, double deadline) {
    uint32_t idx = find(s, key, key_hash(key));
    if (idx == NONE)
        return 0;
    entry_t *e = ENTRY(s, idx);
    return e->value != NULL && e->has_ttl && e->deadline == deadline;
}

static void expiry_prune(Core *s) {
    for (size_t i = 0; i < s->nbands;) {
        band_t *b = &s->bands[i];
        while (b->len && !waits_for(s, b->buf[b->head].key, b->buf[b->head].deadline)) {
            Py_DECREF(b->buf[b->head].key);
            b->head = (b->head + 1) & (b->cap - 1);
            b->len--;
            s->expiry_size--;
        }
        if (b->len) {
            band_fit(b);
            i++;
        } else {
            remove_band(s, i);
        }
    }
}

static void expiry_compact(Core *s) {
    for (size_t i = 0; i < s->nbands;) {
        band_t *b = &s->bands[i];
        size_t kept = 0;
        for (size_t j = 0; j < b->len; j++) {  /* in place, in order: kept <= j */
            due_t due = b->buf[(b->head + j) & (b->cap - 1)];
            if (waits_for(s, due.key, due.deadline))
                b->buf[(b->head + kept++) & (b->cap - 1)] = due;
            else
                Py_DECREF(due.key);
        }
        s->expiry_size -= b->len - kept;
        b->len = kept;
        if (kept) {
            band_fit(b);
            i++;
        } else {
            remove_band(s, i);
        }
    }
}

static void expiry_clear(Core *s) {
    while (s->nbands)
        remove_band(s, s->nbands - 1);
    s->expiry_size = 0;
}

/* -- the core: removing entries --------------------------------------------------------- */

/* ``_uncharge``: release an entry's bytes (its value just taken out); 1 if it was live, 0 if
 * it had expired (counted), -1 on error. */
static int uncharge(Core *s, long long size, int has_ttl, double deadline) {
    s->nbytes -= size;
    if (!has_ttl)
        return 1;
    int expired = clock_reached(s, deadline);
    if (expired < 0)
        return -1;
    if (expired) {
        s->expirations++;
        return 0;
    }
    return 1;
}

/* ``_drop``: remove a live entry out of its queue's turn; 1 if it was live, 0, -1. */
static int drop(Core *s, uint32_t idx) {
    entry_t *e = ENTRY(s, idx);
    int queue = e->state >= MAIN0 ? MAIN : SMALL;
    long long size = charge(s, e);
    PyObject *value = e->value;
    int has_ttl = e->has_ttl;
    double deadline = e->deadline;
    e->value = NULL;
    e->stale[queue]++;
    s->entries--;
    if (queue == SMALL)
        s->small_bytes -= size;
    int r = uncharge(s, size, has_ttl, deadline);
    Py_DECREF(value);
    return r;
}

/* ``_take``: remove ``key``; 1 with where it was (queue, count or read) if it was live,
 * 0 if absent or expired, -1 on error. */
static int take(Core *s, PyObject *key, Py_hash_t hash, int *queue, int *count) {
    uint32_t idx = find(s, key, hash);
    if (idx == NONE || ENTRY(s, idx)->value == NULL)
        return 0;
    int state = ENTRY(s, idx)->state;
    int r = drop(s, idx);
    if (r > 0) {
        *queue = state >= MAIN0 ? MAIN : SMALL;
        *count = state >= MAIN0 ? state - MAIN0 : state;
    }
    return r;
}

/* -- eviction --------------------------------------------------------------------------- */

/* A popped place whose key has stale places in this queue: one of those (``_skip``). */
static inline int skip_stale(Core *s, uint32_t idx, int queue) {
    entry_t *e = ENTRY(s, idx);
    if (!e->stale[queue])
        return 0;
    e->stale[queue]--;
    release(s, idx);
    return 1;
}

/* ``_evict_main``: the main queue's head back to the tail one count lower, or evicted. */
static int evict_main(Core *s) {
    ring_t *order = &s->order[MAIN];
    if (!order->len) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty deque");
        return -1;
    }
    uint32_t idx = ring_pop(order);
    if (skip_stale(s, idx, MAIN))
        return 0;
    entry_t *e = ENTRY(s, idx);
    int count = e->state - MAIN0;
    if (e->has_ttl) {
        int expired = clock_reached(s, e->deadline);
        if (expired < 0)
            return -1;
        if (expired) {
            long long size = charge(s, e);
            PyObject *value = e->value;
            double deadline = e->deadline;
            e->value = NULL;
            s->entries--;
            int r = uncharge(s, size, 1, deadline);
            Py_DECREF(value);
            release(s, idx);
            return r < 0 ? -1 : 0;
        }
    }
    if (count) {
        e->state--;
        return ring_push(order, idx);
    }
    long long size = charge(s, e);
    PyObject *value = e->value, *key = e->key;
    int has_ttl = e->has_ttl;
    double deadline = e->deadline;
    e->value = NULL;
    Py_INCREF(key);
    s->entries--;
    int r = uncharge(s, size, has_ttl, deadline);
    Py_DECREF(value);
    release(s, idx);
    uint64_t h;
    if (r >= 0) {
        s->evictions++;
        r = ghost_hash(s, key, &h);
        if (r >= 0)
            ghosts_add(&s->ghosts, h, MAIN);
    }
    Py_DECREF(key);
    return r < 0 ? -1 : 0;
}

/* ``_drop_expired``: drop entries whose deadline has passed until ``budget`` is met. */
static int drop_expired(Core *s, long long budget) {
    PyObject *now = call_clock(s);
    if (now == NULL)
        return -1;
    int r = 0;
    while (s->nbytes > budget) {
        PyObject *key = expiry_pop_due(s, now);
        if (key == NULL) {
            r = PyErr_Occurred() ? -1 : 0;
            break;
        }
        uint32_t idx = find(s, key, key_hash(key));
        Py_DECREF(key);
        if (idx == NONE || ENTRY(s, idx)->value == NULL || !ENTRY(s, idx)->has_ttl)
            continue;
        int due = reached(now, ENTRY(s, idx)->deadline);
        if (due > 0)
            due = drop(s, idx);
        if (due < 0) {
            r = -1;
            break;
        }
    }
    Py_DECREF(now);
    return r;
}

/* ``_upkeep``, and the compiled tables' own: the index, rings and entry chunks fitted to
 * what they hold. */
static int compact_entries(Core *s);

static int upkeep(Core *s) {
    long long entries = s->entries;
    s->until_upkeep = entries / 16;
    if (ghosts_fit(&s->ghosts, entries) < 0)
        return -1;
    if (ring_fit(&s->order[SMALL]) < 0 || ring_fit(&s->order[MAIN]) < 0)
        return -1;
    if (s->high > 2 * CHUNK && s->indexed * 4 < s->high)
        return compact_entries(s);
    return 0;
}

/* ``_make_room``: evict until at most ``budget`` bytes are charged; expired entries first. */
static int make_room(Core *s, long long budget) {
    if (s->expiry_size) {
        if (drop_expired(s, budget) < 0)
            return -1;
        if (s->expiry_size > (size_t)s->entries)
            expiry_prune(s);
    }
    if (--s->until_upkeep < 0 && upkeep(s) < 0)
        return -1;
    ring_t *order = &s->order[SMALL];
    while (s->nbytes > budget) {
        if ((double)s->small_bytes <= s->target && s->small_bytes != s->nbytes) {
            if (evict_main(s) < 0)
                return -1;
            continue;
        }
        if (!order->len) {
            PyErr_SetString(PyExc_IndexError, "pop from an empty deque");
            return -1;
        }
        uint32_t idx = ring_pop(order);
        if (skip_stale(s, idx, SMALL))
            continue;
        entry_t *e = ENTRY(s, idx);
        int promote = e->state == READ;
        long long size = charge(s, e);
        int expired = 0;
        if (e->has_ttl && (expired = clock_reached(s, e->deadline)) < 0)
            return -1;
        s->small_bytes -= size;
        if (promote && !expired) {
            e->state = MAIN0;
            if (ring_push(&s->order[MAIN], idx) < 0)
                return -1;
            continue;
        }
        PyObject *value = e->value, *key = e->key;
        e->value = NULL;
        s->nbytes -= size;
        s->entries--;
        if (expired) {
            s->expirations++;
            Py_DECREF(value);
            release(s, idx);
            continue;
        }
        s->evictions++;
        Py_INCREF(key);
        Py_DECREF(value);
        release(s, idx);
        uint64_t h;
        int r = ghost_hash(s, key, &h);
        if (r >= 0)
            ghosts_add(&s->ghosts, h, SMALL);
        Py_DECREF(key);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* -- clear and compaction --------------------------------------------------------------- */

static void free_tables(Core *s) {
    for (uint32_t i = 0; i < s->high; i++) {
        entry_t *e = ENTRY(s, i);
        if (e->key) {
            Py_XDECREF(e->value);
            Py_DECREF(e->key);
        }
    }
    for (uint32_t c = 0; s->chunks && c < s->nchunks; c++)
        PyMem_Free(s->chunks[c]);
    PyMem_Free(s->chunks);
    PyMem_Free(s->slots);
    PyMem_Free(s->order[SMALL].buf);
    PyMem_Free(s->order[MAIN].buf);
    expiry_clear(s);
    PyMem_Free(s->bands);
    s->chunks = NULL;
    s->nchunks = s->high = 0;
    s->slots = NULL;
    s->order[SMALL] = s->order[MAIN] = (ring_t){NULL, 0, 0, 0};
    s->bands = NULL;
    s->nbands = s->bands_cap = 0;
}

static int new_tables(Core *s) {
    s->chunks = PyMem_Calloc(4, sizeof(entry_t *));
    s->nchunks = s->chunks ? 4 : 0;
    s->chunk0_cap = s->high = 0;
    s->free_head = NONE;
    s->mask = MIN_INDEX - 1;
    s->indexed = 0;
    s->slots = PyMem_Calloc(MIN_INDEX, sizeof(uint64_t));
    if (s->chunks == NULL || s->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The entries moved down to indices 0..n-1 (in index order), the index and the rings
 * rewritten: the chunks a mass of deletes emptied are given back. */
static int compact_entries(Core *s) {
    uint32_t *moved = PyMem_Malloc((size_t)s->high * sizeof(uint32_t));
    size_t size = 1;
    while (size * 3 < (s->indexed + 1) * 4 || size < MIN_INDEX)  /* load at most 3/4 */
        size *= 2;
    size_t nchunks = 4;
    while ((size_t)nchunks * CHUNK < s->indexed)
        nchunks *= 2;
    entry_t **chunks = PyMem_Calloc(nchunks, sizeof(entry_t *));
    uint64_t *slots = PyMem_Calloc(size, sizeof(uint64_t));
    int failed = moved == NULL || chunks == NULL || slots == NULL;
    uint32_t n = (uint32_t)s->indexed;
    for (uint32_t c = 0; !failed && c * CHUNK < n; c++) {
        uint32_t cap = c ? CHUNK : (n < CHUNK ? n : CHUNK);
        failed = (chunks[c] = PyMem_Malloc(cap * sizeof(entry_t))) == NULL;
    }
    if (failed) {
        for (size_t c = 0; chunks && c < nchunks; c++)
            PyMem_Free(chunks[c]);
        PyMem_Free(chunks);
        PyMem_Free(slots);
        PyMem_Free(moved);
        PyErr_NoMemory();
        return -1;
    }
    uint32_t next = 0;
    for (uint32_t i = 0; i < s->high; i++) {
        entry_t *e = ENTRY(s, i);
        if (!e->key) {
            moved[i] = NONE;
            continue;
        }
        moved[i] = next;
        chunks[next >> CHUNK_BITS][next & (CHUNK - 1)] = *e;
        uint32_t tag = (uint32_t)(uint64_t)key_hash(e->key);
        size_t j = tag & (size - 1);
        while (slots[j])
            j = (j + 1) & (size - 1);
        slots[j] = (uint64_t)tag << 32 | ((uint64_t)next + 1);
        next++;
    }
    for (int q = SMALL; q <= MAIN; q++) {
        ring_t *r = &s->order[q];
        for (size_t i = 0; i < r->len; i++) {
            uint32_t *place = &r->buf[(r->head + i) & (r->cap - 1)];
            *place = moved[*place];
        }
    }
    for (struct Walk *w = s->walks; w; w = w->next)
        for (size_t i = w->at; i < w->len; i++)
            if (w->order[i] != NONE)
                w->order[i] = moved[w->order[i]];
    for (uint32_t c = 0; c < s->nchunks; c++)
        PyMem_Free(s->chunks[c]);
    PyMem_Free(s->chunks);
    PyMem_Free(s->slots);
    PyMem_Free(moved);
    s->chunks = chunks;
    s->nchunks = (uint32_t)nchunks;
    s->chunk0_cap = n < CHUNK ? n : CHUNK;
    s->high = n;
    s->free_head = NONE;
    s->slots = slots;
    s->mask = size - 1;
    return 0;
}

static void end_walks(Core *s);

static int core_clear_state(Core *s) {
    end_walks(s);
    free_tables(s);
    if (new_tables(s) < 0)
        return -1;
    s->small_bytes = s->entries = 0;
    s->target = (double)s->max_bytes * START_SHARE;
    s->until_upkeep = 0;
    ghosts_clear(&s->ghosts);
    s->nbytes = 0;
    return 0;
}

/* -- methods ---------------------------------------------------------------------------- */

#define ENTER(s, fail)                                                                       \
    do {                                                                                     \
        if ((s)->busy) {                                                                     \
            PyErr_SetString(PyExc_RuntimeError,                                              \
                            "adaptive: the core was called from its own clock or hash");     \
            return fail;                                                                     \
        }                                                                                    \
        (s)->busy = 1;                                                                       \
    } while (0)

static PyObject *value_of(entry_t *e) {
    Py_INCREF(e->value);
    return e->value;
}

/* ``get``: a hit on main below the top count climbs one, a hit on a fresh entry marks it
 * read; an expired entry is dropped. */
static PyObject *get_entry(Core *s, PyObject *key) {
    uint32_t idx = find(s, key, key_hash(key));
    if (idx == NONE)
        Py_RETURN_NONE;
    entry_t *e = ENTRY(s, idx);
    if (e->value == NULL)
        Py_RETURN_NONE;
    if (e->has_ttl) {
        int expired = clock_reached(s, e->deadline);
        if (expired < 0)
            return NULL;
        if (expired) {
            if (drop(s, idx) < 0)
                return NULL;
            Py_RETURN_NONE;
        }
    }
    if (e->state == FRESH)
        e->state = READ;
    else if (e->state >= MAIN0 && e->state < MAIN0 + MAX_COUNT)
        e->state++;
    return value_of(e);
}

static PyObject *core_get(Core *s, PyObject *key) {
    if (check_key(key) < 0)
        return NULL;
    ENTER(s, NULL);
    PyObject *r = get_entry(s, key);
    s->busy = 0;
    return r;
}

/* ``_adapt``: move the small queue's target on a write of a ghost; the queue it goes to. */
static int adapt(Core *s, int ghost, long long size) {
    double step = s->entries ? (double)s->nbytes / (double)s->entries : (double)size;
    long long small, main;
    ghosts_population(&s->ghosts, &small, &main);
    if (ghost == SMALL) {
        double ratio = (double)main / (double)(small + 1);
        step *= ratio > 1.0 ? ratio : 1.0;
        double target = s->target + step, top = (double)s->max_bytes * MAX_SHARE;
        s->target = top < target ? top : target;
    } else {
        double ratio = (double)small / (double)(main + 1);
        step *= ratio > 1.0 ? ratio : 1.0;
        double target = s->target - step, bottom = (double)s->max_bytes * MIN_SHARE;
        s->target = bottom > target ? bottom : target;
    }
    return (double)size > s->target ? SMALL : MAIN;
}

static int refuse_oversized(Core *s, PyObject *key, PyObject *value, int has_ttl) {
    long long overhead = s->entry_overhead + (has_ttl ? s->ttl_overhead : 0);
    long long size = (long long)PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value) + overhead;
    PyErr_Format(PyExc_ValueError,
                 "adaptive: entry of %lld bytes (key %zd + value %zd + overhead %lld) exceeds "
                 "max_bytes %lld", size, PyBytes_GET_SIZE(key), PyBytes_GET_SIZE(value),
                 overhead, s->max_bytes);
    return -1;
}

/* A write's ttl read as set does: 1 if it is negative (already past: nothing is
 * stored), else 0 with whether it has one and its deadline on the core's clock; -1. */
static int read_ttl(Core *s, PyObject *ttl, int *has_ttl, double *deadline) {
    *has_ttl = 0;
    *deadline = 0.0;
    if (ttl != Py_None) {
        int negative = PyFloat_CheckExact(ttl) ? PyFloat_AS_DOUBLE(ttl) < 0
                                                : PyObject_RichCompareBool(ttl, zero, Py_LT);
        if (negative)
            return negative < 0 ? -1 : 1;
        if ((*has_ttl = PyObject_IsTrue(ttl)) < 0)
            return -1;
    }
    if (*has_ttl) {
        PyObject *now = call_clock(s);
        if (now == NULL)
            return -1;
        if (PyFloat_CheckExact(now) && PyFloat_CheckExact(ttl)) {
            *deadline = PyFloat_AS_DOUBLE(now) + PyFloat_AS_DOUBLE(ttl);
        } else {
            PyObject *sum = PyNumber_Add(now, ttl);
            *deadline = sum ? PyFloat_AsDouble(sum) : -1.0;
            Py_XDECREF(sum);
            if (*deadline == -1.0 && PyErr_Occurred()) {
                Py_DECREF(now);
                return -1;
            }
        }
        Py_DECREF(now);
    }
    return 0;
}

/* The last steps of a write, room made: the entry in ``state`` at its queue's tail (or
 * the small queue's head: ``front``), charged, and its deadline noted; 0 or -1. */
static int place(Core *s, PyObject *key, Py_hash_t hash, PyObject *value, PyObject *ttl,
                 int has_ttl, double deadline, long long size, int state, int front) {
    /* The key's entry: its tombstone if it still has one (make_room may have freed it). */
    uint32_t idx = find(s, key, hash);
    if (idx == NONE && (idx = new_entry(s, key, hash)) == NONE)
        return -1;
    entry_t *e = ENTRY(s, idx);
    Py_INCREF(value);
    e->value = value;
    e->has_ttl = (uint8_t)has_ttl;
    e->deadline = deadline;
    e->state = (uint8_t)state;
    int r;
    if (state < MAIN0) {
        s->small_bytes += size;
        r = front ? ring_push_front(&s->order[SMALL], idx) : ring_push(&s->order[SMALL], idx);
    } else {
        r = ring_push(&s->order[MAIN], idx);
    }
    if (r < 0) {  /* out of memory for its place: the entry cannot stay */
        Py_CLEAR(e->value);
        if (state < MAIN0)
            s->small_bytes -= size;
        release(s, idx);
        return -1;
    }
    s->nbytes += size;
    s->entries++;
    if (has_ttl) {  /* ``_note_deadline`` */
        long long band;
        if (ttl_band(ttl, &band) < 0 || expiry_add(s, key, deadline, band) < 0)
            return -1;
        if (s->expiry_size > (size_t)(2 * s->entries + 64))
            expiry_compact(s);
    }
    return 0;
}

/* ``set``, the steps of adaptive.py's in its order; 0 or -1. */
static int set_entry(Core *s, PyObject *key, PyObject *value, PyObject *ttl) {
    Py_hash_t hash = key_hash(key);
    int queue = -1, count = 0;
    int r = take(s, key, hash, &queue, &count);
    if (r < 0)
        return -1;
    if (!r)
        queue = -1, count = 0;
    int has_ttl;
    double deadline;
    if ((r = read_ttl(s, ttl, &has_ttl, &deadline)) != 0)
        return r < 0 ? -1 : 0;
    long long size = (long long)PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value) + s->entry_overhead
                     + (has_ttl ? s->ttl_overhead : 0);
    if (size > s->max_bytes)
        return refuse_oversized(s, key, value, has_ttl);
    if (queue < 0) {
        uint64_t h;
        if (ghost_hash(s, key, &h) < 0)
            return -1;
        int ghost = ghosts_pop(&s->ghosts, h);
        queue = ghost < 0 ? SMALL : adapt(s, ghost, size);
    }
    if (s->nbytes + size > s->max_bytes && make_room(s, s->max_bytes - size) < 0)
        return -1;
    if (queue == SMALL)
        return place(s, key, hash, value, ttl, has_ttl, deadline, size, count ? READ : FRESH,
                     !count && (double)size > s->target);
    return place(s, key, hash, value, ttl, has_ttl, deadline, size, MAIN0 + count, 0);
}

/* ``restore``: at the tail of the queue ``state`` names, in that state; no ghost, no
 * adapting. 0 or -1. */
static int restore_entry(Core *s, PyObject *key, PyObject *value, PyObject *ttl, int state) {
    Py_hash_t hash = key_hash(key);
    int queue, count;
    if (take(s, key, hash, &queue, &count) < 0)
        return -1;
    int has_ttl;
    double deadline;
    int r = read_ttl(s, ttl, &has_ttl, &deadline);
    if (r != 0)
        return r < 0 ? -1 : 0;
    long long size = (long long)PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value) + s->entry_overhead
                     + (has_ttl ? s->ttl_overhead : 0);
    if (size > s->max_bytes)
        return refuse_oversized(s, key, value, has_ttl);
    if (s->nbytes + size > s->max_bytes && make_room(s, s->max_bytes - size) < 0)
        return -1;
    return place(s, key, hash, value, ttl, has_ttl, deadline, size, state, 0);
}

static int parse_set(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     PyObject **key, PyObject **value, PyObject **ttl) {
    static const char *names[] = {"key", "value", "ttl"};
    PyObject *got[3] = {NULL, NULL, Py_None};
    if (nargs > 3) {
        PyErr_Format(PyExc_TypeError, "set() takes at most 3 arguments (%zd given)", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        got[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        int i = 0;
        while (name && i < 3 && strcmp(name, names[i]))
            i++;
        if (name == NULL || i == 3 || i < nargs) {
            if (name)
                PyErr_Format(PyExc_TypeError, "set() got an unexpected or repeated argument '%s'", name);
            return -1;
        }
        got[i] = args[nargs + k];
    }
    if (got[0] == NULL || got[1] == NULL) {
        PyErr_SetString(PyExc_TypeError, "set() missing its key or value");
        return -1;
    }
    if (check_key(got[0]) < 0)
        return -1;
    if (!PyBytes_CheckExact(got[1])) {
        PyErr_Format(PyExc_TypeError, "adaptive: values are bytes, not %.100s", Py_TYPE(got[1])->tp_name);
        return -1;
    }
    *key = got[0], *value = got[1], *ttl = got[2];
    return 0;
}

static PyObject *core_set(Core *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *key, *value, *ttl;
    if (parse_set(args, nargs, kwnames, &key, &value, &ttl) < 0)
        return NULL;
    ENTER(s, NULL);
    int r = set_entry(s, key, value, ttl);
    s->busy = 0;
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *core_delete(Core *s, PyObject *key) {
    if (check_key(key) < 0)
        return NULL;
    ENTER(s, NULL);
    int queue, count;
    int r = take(s, key, key_hash(key), &queue, &count);
    s->busy = 0;
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *core_touch(Core *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "touch(key, ttl)");
        return NULL;
    }
    PyObject *key = args[0];
    if (check_key(key) < 0)
        return NULL;
    ENTER(s, NULL);
    PyObject *value = get_entry(s, key);
    int r = value == NULL ? -1 : 0;
    if (value != NULL && value != Py_None)
        r = set_entry(s, key, value, args[1]);  /* the size is unchanged: evicts nothing */
    s->busy = 0;
    if (r < 0) {
        Py_XDECREF(value);
        return NULL;
    }
    r = value != Py_None;
    Py_DECREF(value);
    return PyBool_FromLong(r);
}

static PyObject *core_ttl_left(Core *s, PyObject *key) {
    if (check_key(key) < 0)
        return NULL;
    ENTER(s, NULL);
    PyObject *r = NULL;
    uint32_t idx = find(s, key, key_hash(key));
    if (idx == NONE || ENTRY(s, idx)->value == NULL || !ENTRY(s, idx)->has_ttl) {
        r = Py_NewRef(Py_None);
    } else {
        double deadline = ENTRY(s, idx)->deadline;
        PyObject *now = call_clock(s);
        if (now != NULL && PyFloat_CheckExact(now)) {  /* max(entry - now, 0.0) */
            double left = deadline - PyFloat_AS_DOUBLE(now);
            r = PyFloat_FromDouble(0.0 > left ? 0.0 : left);
        } else if (now != NULL) {
            PyObject *d = PyFloat_FromDouble(deadline), *zero_f = PyFloat_FromDouble(0.0);
            PyObject *left = d && zero_f ? PyNumber_Subtract(d, now) : NULL;
            int below = left ? PyObject_RichCompareBool(zero_f, left, Py_GT) : -1;
            if (below >= 0)
                r = Py_NewRef(below ? zero_f : left);
            Py_XDECREF(d);
            Py_XDECREF(zero_f);
            Py_XDECREF(left);
        }
        Py_XDECREF(now);
    }
    s->busy = 0;
    return r;
}

static PyObject *core_clear(Core *s, PyObject *unused) {
    ENTER(s, NULL);
    int r = core_clear_state(s);
    s->busy = 0;
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static Py_ssize_t core_len(Core *s) {
    return (Py_ssize_t)s->entries;
}

/* -- walk and restore (storage_node/cores/walk.py) ------------------------------------ */

static PyTypeObject WalkType;

static void unlink_walk(Walk *w) {
    if (w->prev)
        w->prev->next = w->next;
    else if (w->core && w->core->walks == w)
        w->core->walks = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* The walk is over: its copy freed, the core no longer held. */
static void finish_walk(Walk *w) {
    unlink_walk(w);
    PyMem_Free(w->order);
    w->order = NULL;
    w->len = w->at = 0;
    Py_CLEAR(w->core);
}

static void end_walks(Core *s) {
    while (s->walks)
        finish_walk(s->walks);
}

/* The ring's places into ``out``, each stale one (a tombstone's, one in a queue its entry
 * is not live in, or one before the live place) as NONE: what the pure core's stale counts
 * skip. ``seen`` is a zeroed bitmap over entry indices; it is left zeroed. */
static void copy_places(Core *s, ring_t *r, int queue, uint32_t *out, uint8_t *seen) {
    for (size_t i = 0; i < r->len; i++)
        out[i] = r->buf[(r->head + i) & (r->cap - 1)];
    for (size_t i = r->len; i-- > 0;) {
        entry_t *e = ENTRY(s, out[i]);
        int live = e->value != NULL && (e->state >= MAIN0) == (queue == MAIN);
        if (!live || seen[out[i] >> 3] & (1u << (out[i] & 7)))
            out[i] = NONE;
        else
            seen[out[i] >> 3] |= (uint8_t)(1u << (out[i] & 7));
    }
    for (size_t i = 0; i < r->len; i++)
        if (out[i] != NONE)
            seen[out[i] >> 3] = 0;
}

static PyObject *core_walk(Core *s, PyObject *unused) {
    ENTER(s, NULL);
    size_t small = s->order[SMALL].len, len = small + s->order[MAIN].len;
    Walk *w = PyObject_GC_New(Walk, &WalkType);
    uint32_t *order = PyMem_Malloc((len ? len : 1) * sizeof(uint32_t));
    uint8_t *seen = PyMem_Calloc((size_t)s->high / 8 + 1, 1);
    if (w == NULL || order == NULL || seen == NULL) {
        s->busy = 0;
        PyMem_Free(order);
        PyMem_Free(seen);
        if (w != NULL) {
            w->core = NULL, w->order = NULL, w->prev = w->next = NULL;
            Py_DECREF(w);
        }
        return PyErr_NoMemory();
    }
    copy_places(s, &s->order[SMALL], SMALL, order, seen);
    copy_places(s, &s->order[MAIN], MAIN, order + small, seen);
    PyMem_Free(seen);
    w->core = (Core *)Py_NewRef(s);
    w->order = order;
    w->len = len;
    w->at = 0;
    w->prev = NULL;
    w->next = s->walks;
    if (s->walks)
        s->walks->prev = w;
    s->walks = w;
    PyObject_GC_Track(w);
    s->busy = 0;
    return (PyObject *)w;
}

static PyObject *walk_take(Walk *w, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    PyObject *out = PyList_New(0);
    Core *s = w->core;
    if (out == NULL || s == NULL || w->at >= w->len)
        return out;
    if (s->busy) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "adaptive: the core was called from its own clock or hash");
        return NULL;
    }
    s->busy = 1;
    PyObject *now = call_clock(s);
    double now_d = now ? PyFloat_AsDouble(now) : -1.0;
    Py_XDECREF(now);
    if (now == NULL || (now_d == -1.0 && PyErr_Occurred()))
        goto fail;
    while (PyList_GET_SIZE(out) < n && w->at < w->len) {
        uint32_t idx = w->order[w->at++];
        if (idx == NONE || idx >= s->high)
            continue;
        entry_t *e = ENTRY(s, idx);
        if (e->key == NULL || e->value == NULL)
            continue;
        PyObject *item;
        if (e->has_ttl) {
            double left = e->deadline - now_d;
            if (!(left > 0))
                continue;
            item = Py_BuildValue("(OOdi)", e->key, e->value, left, (int)e->state);
        } else {
            item = Py_BuildValue("(OOOi)", e->key, e->value, Py_None, (int)e->state);
        }
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    s->busy = 0;
    if (w->at >= w->len)
        finish_walk(w);
    return out;
fail:
    s->busy = 0;
    Py_DECREF(out);
    return NULL;
}

static PyObject *core_restore(Core *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "restore(key, value, ttl, rank)");
        return NULL;
    }
    PyObject *key = args[0], *value = args[1], *ttl = args[2], *rank = args[3];
    if (check_key(key) < 0)
        return NULL;
    if (!PyBytes_CheckExact(value)) {
        PyErr_Format(PyExc_TypeError, "adaptive: values are bytes, not %.100s", Py_TYPE(value)->tp_name);
        return NULL;
    }
    long state = MAIN0;
    if (rank != Py_None) {
        state = PyLong_CheckExact(rank) ? PyLong_AsLong(rank) : -1;
        if (state == -1 && PyErr_Occurred())
            PyErr_Clear();
        if (state < FRESH || state > MAIN0 + MAX_COUNT) {
            PyObject *text = PyObject_Repr(rank);
            if (text != NULL)
                PyErr_Format(PyExc_ValueError, "adaptive: rank %U is not a state 0..%d", text,
                             MAIN0 + MAX_COUNT);
            Py_XDECREF(text);
            return NULL;
        }
    }
    ENTER(s, NULL);
    int r = restore_entry(s, key, value, ttl, (int)state);
    s->busy = 0;
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int walk_traverse(Walk *w, visitproc visit, void *arg) {
    Py_VISIT(w->core);
    return 0;
}

static int walk_gc_clear(Walk *w) {
    finish_walk(w);
    return 0;
}

static void walk_dealloc(Walk *w) {
    PyObject_GC_UnTrack(w);
    finish_walk(w);
    PyObject_GC_Del(w);
}

static PyMethodDef walk_methods[] = {
    {"take", (PyCFunction)walk_take, METH_O,
     "Up to n more entries as (key, value, ttl_left, rank), coldest first; [] at the end."},
    {NULL},
};

static PyTypeObject WalkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "storage_node.cores._adaptive.Walk",
    .tp_basicsize = sizeof(Walk),
    .tp_dealloc = (destructor)walk_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A walk of an adaptive core's entries (storage_node/cores/walk.py).",
    .tp_traverse = (traverseproc)walk_traverse,
    .tp_clear = (inquiry)walk_gc_clear,
    .tp_methods = walk_methods,
};

/* _snapshot(): the state as plain Python data, in the pure core's terms, for the tests
 * that compare the twins (tests/adaptive_state.py reads the pure core the same way). */
static PyObject *places(Core *s, ring_t *r) {
    PyObject *list = PyList_New((Py_ssize_t)r->len);
    for (size_t i = 0; list && i < r->len; i++)
        PyList_SET_ITEM(list, i, Py_NewRef(ENTRY(s, r->buf[(r->head + i) & (r->cap - 1)])->key));
    return list;
}

static int put(PyObject *dict, const char *name, PyObject *value) {
    if (value == NULL)
        return -1;
    int r = PyDict_SetItemString(dict, name, value);
    Py_DECREF(value);
    return r;
}

static PyObject *ghosts_snapshot(ghosts_t *g) {
    PyObject *out = PyDict_New(), *per_epoch = PyTuple_New(2);
    for (int q = SMALL; per_epoch && q <= MAIN; q++) {
        PyObject *counts = PyList_New(EPOCHS);
        for (int i = 0; counts && i < EPOCHS; i++)
            PyList_SET_ITEM(counts, i, PyLong_FromLongLong(g->per_epoch[q][i]));
        if (counts == NULL)
            Py_CLEAR(per_epoch);
        else
            PyTuple_SET_ITEM(per_epoch, q, counts);
    }
    if (out == NULL || per_epoch == NULL
        || put(out, "table", PyBytes_FromStringAndSize((const char *)g->table,
                                                        (Py_ssize_t)(g->slots * sizeof(uint32_t)))) < 0
        || put(out, "epoch_length", PyLong_FromLongLong(g->epoch_length)) < 0
        || put(out, "left", PyLong_FromLongLong(g->left)) < 0
        || put(out, "epoch", PyLong_FromUnsignedLong(g->epoch)) < 0
        || put(out, "new", Py_BuildValue("[LL]", g->fresh[SMALL], g->fresh[MAIN])) < 0
        || put(out, "per_epoch", Py_NewRef(per_epoch)) < 0)
        Py_CLEAR(out);
    Py_XDECREF(per_epoch);
    return out;
}

static PyObject *expiry_snapshot(Core *s) {
    PyObject *bands = PyList_New((Py_ssize_t)s->nbands);
    for (size_t i = 0; bands && i < s->nbands; i++) {
        band_t *b = &s->bands[i];
        PyObject *dues = PyList_New((Py_ssize_t)b->len);
        for (size_t j = 0; dues && j < b->len; j++) {
            due_t *due = &b->buf[(b->head + j) & (b->cap - 1)];
            PyObject *item = Py_BuildValue("(Od)", due->key, due->deadline);
            if (item == NULL)
                Py_CLEAR(dues);
            else
                PyList_SET_ITEM(dues, j, item);
        }
        PyObject *band = dues ? Py_BuildValue("(LN)", b->band, dues) : NULL;
        if (band == NULL)
            Py_CLEAR(bands);
        else
            PyList_SET_ITEM(bands, i, band);
    }
    return bands;
}

static PyObject *core_snapshot(Core *s, PyObject *unused) {
    static const char *states[] = {"fresh", "read", "main0", "main1", "main2", "main3"};
    PyObject *out = PyDict_New(), *entries = PyDict_New(), *stale[2] = {PyDict_New(), PyDict_New()};
    int failed = !out || !entries || !stale[0] || !stale[1];
    for (uint32_t i = 0; !failed && i < s->high; i++) {
        entry_t *e = ENTRY(s, i);
        if (!e->key)
            continue;
        for (int q = SMALL; !failed && q <= MAIN; q++) {
            if (e->stale[q]) {
                PyObject *n = PyLong_FromUnsignedLong(e->stale[q]);
                failed = !n || PyDict_SetItem(stale[q], e->key, n) < 0;
                Py_XDECREF(n);
            }
        }
        if (!failed && e->value) {
            PyObject *item = e->has_ttl ? Py_BuildValue("(sOd)", states[e->state], e->value, e->deadline)
                                        : Py_BuildValue("(sOO)", states[e->state], e->value, Py_None);
            failed = !item || PyDict_SetItem(entries, e->key, item) < 0;
            Py_XDECREF(item);
        }
    }
    if (failed
        || put(out, "entries", Py_NewRef(entries)) < 0
        || put(out, "small_order", places(s, &s->order[SMALL])) < 0
        || put(out, "main_order", places(s, &s->order[MAIN])) < 0
        || put(out, "stale", PyTuple_Pack(2, stale[0], stale[1])) < 0
        || put(out, "small_bytes", PyLong_FromLongLong(s->small_bytes)) < 0
        || put(out, "target", PyFloat_FromDouble(s->target)) < 0
        || put(out, "count", PyLong_FromLongLong(s->entries)) < 0
        || put(out, "until_upkeep", PyLong_FromLongLong(s->until_upkeep)) < 0
        || put(out, "ghosts", ghosts_snapshot(&s->ghosts)) < 0
        || put(out, "expiry", expiry_snapshot(s)) < 0
        || put(out, "expiry_size", PyLong_FromSize_t(s->expiry_size)) < 0)
        Py_CLEAR(out);
    Py_XDECREF(entries);
    Py_XDECREF(stale[0]);
    Py_XDECREF(stale[1]);
    return out;
}

/* -- type ------------------------------------------------------------------------------- */

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"max_bytes", "clock", "entry_overhead", "hash", NULL};
    PyObject *max_bytes, *clock = default_clock, *hash = builtin_hash_fn;
    long long overhead = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OLO:AdaptiveCore", kwlist,
                                     &max_bytes, &clock, &overhead, &hash))
        return NULL;
    long long budget = PyLong_AsLongLong(max_bytes);
    if (budget == -1 && PyErr_Occurred())
        return NULL;
    Core *s = (Core *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    s->clock = Py_NewRef(clock);
    s->hash = Py_NewRef(hash);
    s->builtin_hash = hash == builtin_hash_fn;
    s->max_bytes = budget;
    s->entry_overhead = overhead;
    s->ttl_overhead = overhead ? TTL_OVERHEAD : 0;
    s->ghosts.epoch_length = 1;
    s->ghosts.slots = MIN_GHOST_SLOTS;
    s->ghosts.table = PyMem_Calloc(MIN_GHOST_SLOTS, sizeof(uint32_t));
    if (s->ghosts.table == NULL) {
        PyErr_NoMemory();
        Py_DECREF(s);
        return NULL;
    }
    if (core_clear_state(s) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    return (PyObject *)s;
}

static int core_traverse(Core *s, visitproc visit, void *arg) {
    Py_VISIT(s->clock);
    Py_VISIT(s->hash);
    return 0;
}

static int core_gc_clear(Core *s) {
    Py_CLEAR(s->clock);
    Py_CLEAR(s->hash);
    return 0;
}

static void core_dealloc(Core *s) {
    PyObject_GC_UnTrack(s);
    core_gc_clear(s);
    free_tables(s);
    PyMem_Free(s->ghosts.table);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef core_methods[] = {
    {"get", (PyCFunction)core_get, METH_O, "The value under key, or None; a hit counts as a read."},
    {"set", (PyCFunction)(void (*)(void))core_set, METH_FASTCALL | METH_KEYWORDS,
     "Store value under key (ttl None or 0: no expiry; negative: already past), evicting to fit."},
    {"delete", (PyCFunction)core_delete, METH_O, "Remove key; True if it was live."},
    {"touch", (PyCFunction)(void (*)(void))core_touch, METH_FASTCALL,
     "Give a live key a new ttl; counts as a read, like a get."},
    {"ttl_left", (PyCFunction)core_ttl_left, METH_O,
     "Seconds the live entry under key has left, or None when it has no expiry."},
    {"clear", (PyCFunction)core_clear, METH_NOARGS, "Empty the core; the counters stay."},
    {"walk", (PyCFunction)core_walk, METH_NOARGS,
     "A cursor over the live entries, coldest first (storage_node/cores/walk.py)."},
    {"restore", (PyCFunction)(void (*)(void))core_restore, METH_FASTCALL,
     "Store an entry as the hottest of the state rank names (None: main, count 0)."},
    {"_snapshot", (PyCFunction)core_snapshot, METH_NOARGS, "The whole state, for the tests."},
    {NULL},
};

static PyMemberDef core_members[] = {
    {"max_bytes", T_LONGLONG, offsetof(Core, max_bytes), READONLY, NULL},
    {"entry_overhead", T_LONGLONG, offsetof(Core, entry_overhead), READONLY, NULL},
    {"nbytes", T_LONGLONG, offsetof(Core, nbytes), READONLY, "bytes charged"},
    {"evictions", T_LONGLONG, offsetof(Core, evictions), READONLY, NULL},
    {"expirations", T_LONGLONG, offsetof(Core, expirations), READONLY, NULL},
    {NULL},
};

static PySequenceMethods core_as_sequence = {.sq_length = (lenfunc)core_len};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "storage_node.cores._adaptive.AdaptiveCore",
    .tp_basicsize = sizeof(Core),
    .tp_dealloc = (destructor)core_dealloc,
    .tp_as_sequence = &core_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "S3-FIFO with an ARC-adapted small queue, compiled: the twin of "
              "storage_node.cores.adaptive.AdaptiveCore.",
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_gc_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
    .tp_new = core_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "storage_node.cores._adaptive",
    "The adaptive eviction core, compiled (twin: storage_node/cores/adaptive.py).", -1, NULL,
};

/* The pure core's signature, (max_bytes, clock=time.monotonic, entry_overhead=0,
 * hash=hash), as __signature__: the node reads it to pass entry_overhead=, and a text
 * signature cannot name a function as a default. */
static PyObject *signature(void) {
    PyObject *inspect = PyImport_ImportModule("inspect");
    if (inspect == NULL)
        return NULL;
    PyObject *parameter = PyObject_GetAttrString(inspect, "Parameter");
    PyObject *sig_class = PyObject_GetAttrString(inspect, "Signature");
    PyObject *kind = parameter ? PyObject_GetAttrString(parameter, "POSITIONAL_OR_KEYWORD") : NULL;
    PyObject *params = PyList_New(0), *sig = NULL;
    const char *names[] = {"max_bytes", "clock", "entry_overhead", "hash"};
    PyObject *defaults[] = {NULL, default_clock, zero, builtin_hash_fn};
    for (int i = 0; kind && sig_class && params && i < 4; i++) {
        PyObject *kwargs = defaults[i] ? Py_BuildValue("{sO}", "default", defaults[i]) : NULL;
        PyObject *args = Py_BuildValue("(sO)", names[i], kind);
        PyObject *p = args ? PyObject_Call(parameter, args, kwargs) : NULL;
        Py_XDECREF(args);
        Py_XDECREF(kwargs);
        if (p == NULL || PyList_Append(params, p) < 0)
            Py_CLEAR(params);
        Py_XDECREF(p);
    }
    if (kind && sig_class && params)
        sig = PyObject_CallOneArg(sig_class, params);
    Py_XDECREF(params);
    Py_XDECREF(kind);
    Py_XDECREF(sig_class);
    Py_XDECREF(parameter);
    Py_DECREF(inspect);
    return sig;
}

PyMODINIT_FUNC PyInit__adaptive(void) {
    PyObject *builtins = PyImport_ImportModule("builtins"), *time = PyImport_ImportModule("time");
    if (builtins == NULL || time == NULL) {
        Py_XDECREF(builtins);
        Py_XDECREF(time);
        return NULL;
    }
    builtin_hash_fn = PyObject_GetAttrString(builtins, "hash");
    default_clock = PyObject_GetAttrString(time, "monotonic");
    Py_DECREF(builtins);
    Py_DECREF(time);
    zero = PyLong_FromLong(0);
    if (builtin_hash_fn == NULL || default_clock == NULL || zero == NULL || PyType_Ready(&CoreType) < 0
        || PyType_Ready(&WalkType) < 0)
        return NULL;
    PyObject *attrs = CoreType.tp_dict;
    PyObject *entry_overhead = PyLong_FromLong(ENTRY_OVERHEAD), *ttl_overhead = PyLong_FromLong(TTL_OVERHEAD);
    PyObject *name = PyUnicode_FromString("adaptive"), *sig = signature();
    int failed = !entry_overhead || !ttl_overhead || !name || !sig
                 || PyDict_SetItemString(attrs, "__signature__", sig) < 0
                 || PyDict_SetItemString(attrs, "ENTRY_OVERHEAD", entry_overhead) < 0
                 || PyDict_SetItemString(attrs, "TTL_OVERHEAD", ttl_overhead) < 0
                 || PyDict_SetItemString(attrs, "name", name) < 0;
    Py_XDECREF(entry_overhead);
    Py_XDECREF(ttl_overhead);
    Py_XDECREF(name);
    Py_XDECREF(sig);
    if (failed)
        return NULL;
    PyType_Modified(&CoreType);
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "COMPILED", Py_True) < 0
        || PyModule_AddObjectRef(m, "AdaptiveCore", (PyObject *)&CoreType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
