/* A lean memcached text-protocol load generator: one thread per connection, JSON out.
 *
 * Closed loop (default): each connection sends DEPTH gets of MULTI keys at once and
 * waits for all DEPTH answers before sending again (DEPTH 1 = not pipelined).
 * Open loop (--rate R): requests leave on a fixed schedule, R per second over all
 * connections, whatever the answers do; a second thread per connection reads the
 * answers, and latency counts from the scheduled send time, so a stalled server
 * cannot hide its queueing (no coordinated omission).
 * --set preloads: every key once, VALUE_SIZE bytes, DEPTH sets in flight per connection.
 * The value of key <prefix><k> is "<k>:" then 'v's, and every hit is checked against it:
 * a value of the wrong size or of another key counts as an error, not a hit.
 *
 * Build: gcc -O2 -pthread -o loadgen bench/loadgen.c -lm
 * Run:   loadgen --port P [--conns 4] [--depth 1] [--multi 1] [--seconds 5]
 *                 [--keys 10000] [--prefix bench:key-] [--rate R] [--set] [--value-size 100]
 *                 [--zipf S]  (keys drawn Zipf(S), key 0 the hottest; default: in turn)
 * Prints one JSON object: ops are keys asked for, requests are commands sent.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <math.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port, conns = 4, depth = 1, multi = 1, nkeys = 10000, value_size = 100, do_set;
static double seconds = 5, rate;
static const char *prefix = "bench:key-";
static double zipf_s;       /* > 0: keys drawn Zipf(zipf_s) */
static double *zipf_cdf;    /* cumulative probability of keys 0..nkeys-1 */
static __thread uint64_t rng_state;  /* xorshift64, per connection thread */

static void zipf_table(void) {
    zipf_cdf = malloc((size_t)nkeys * sizeof(double));
    double total = 0;
    for (int k = 0; k < nkeys; k++) total += 1.0 / pow(k + 1, zipf_s);
    double run = 0;
    for (int k = 0; k < nkeys; k++) { run += 1.0 / pow(k + 1, zipf_s) / total; zipf_cdf[k] = run; }
    zipf_cdf[nkeys - 1] = 1.0;
}

/* The next key: in turn from *next, or Zipf-drawn (a binary search of the CDF). */
static uint64_t next_key(uint64_t *next) {
    if (!zipf_cdf) return (*next)++ % nkeys;
    if (!rng_state) rng_state = (*next + 1) * 0x9E3779B97F4A7C15ull;
    uint64_t x = rng_state;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    rng_state = x;
    double u = (x >> 11) * (1.0 / 9007199254740992.0);
    int lo = 0, hi = nkeys - 1;
    while (lo < hi) { int mid = (lo + hi) / 2; if (zipf_cdf[mid] < u) lo = mid + 1; else hi = mid; }
    return (uint64_t)lo;
}
static pthread_barrier_t barrier;
static uint64_t start_ns, end_ns;

typedef struct { uint64_t *v; size_t n, cap; } samples;

typedef struct {
    int id, fd;
    uint64_t requests, ops, hits, errors, finished_ns;
    samples lat;        /* nanoseconds, one per request (open loop) or per batch */
    uint64_t *sched;    /* open loop: scheduled send times, a FIFO shared with the reader */
    volatile uint64_t nsent, done_sending;
    char *rbuf; size_t rlen;
} conn_t;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void die(const char *what) { perror(what); exit(1); }

static void push(samples *s, uint64_t x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        if (!(s->v = realloc(s->v, s->cap * sizeof *s->v))) die("realloc");
    }
    s->v[s->n++] = x;
}

static int connect_to(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; die("write"); }
        p += w; n -= w;
    }
}

/* A connection's read buffer: it must hold one whole answer (a multi-get of large values
   is multi values in one answer), and a read's worth beyond it. */
static size_t rbuf_size = 1 << 20;

/* Whether a hit's data is what --set stored under this key: "<k>:" then 'v's. */
static int value_matches(const char *key, size_t key_len, const char *data, long n) {
    size_t plen = strlen(prefix);
    if (n != value_size || key_len <= plen || memcmp(key, prefix, plen)) return 0;
    size_t digits = key_len - plen;
    if (digits >= (size_t)n) return memcmp(data, key + plen, n) == 0;
    if (memcmp(data, key + plen, digits) || data[digits] != ':') return 0;
    for (long i = digits + 1; i < n; i++)
        if (data[i] != 'v') return 0;
    return 1;
}

/* Length of the first whole answer in buf (0 if incomplete); counts its hits and errors. */
static size_t answer_len(const char *buf, size_t len, uint64_t *hits, uint64_t *errors) {
    size_t pos = 0, h = 0;
    for (;;) {
        const char *nl = memmem(buf + pos, len - pos, "\r\n", 2);
        if (!nl) return 0;
        size_t line = nl - (buf + pos), next = pos + line + 2;
        if (line > 6 && !memcmp(buf + pos, "VALUE ", 6)) {
            /* VALUE <key> <flags> <bytes> [<cas>] */
            const char *p = buf + pos + 6, *e = nl, *key = p, *key_end = e;
            int field = 0; long n = -1;
            while (p < e && field < 3) {
                const char *sp = memchr(p, ' ', e - p);
                if (!sp) sp = e;
                if (++field == 1) key_end = sp;
                if (field == 3) n = strtol(p, NULL, 10);
                p = sp + 1;
            }
            if (n < 0 || next + n + 2 > len) return 0;
            if (value_matches(key, key_end - key, buf + next, n)) h++;
            else (*errors)++;  /* a value that is not this key's: as bad as an error */
            pos = next + n + 2;
            continue;
        }
        if (line == 3 && !memcmp(buf + pos, "END", 3)) { *hits += h; return next; }
        if (line == 6 && !memcmp(buf + pos, "STORED", 6)) return next;
        (*errors)++;  /* SERVER_ERROR, CLIENT_ERROR, ERROR, NOT_STORED: one line */
        return next;
    }
}

/* Read until `want` answers are complete; their count. Returns 0 on EOF. */
static int read_answers(conn_t *c, int want) {
    int got = 0;
    while (got < want) {
        size_t n;
        while (got < want && (n = answer_len(c->rbuf, c->rlen, &c->hits, &c->errors))) {
            memmove(c->rbuf, c->rbuf + n, c->rlen - n);
            c->rlen -= n; got++;
        }
        if (got == want) break;
        ssize_t r = read(c->fd, c->rbuf + c->rlen, rbuf_size - c->rlen);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        c->rlen += r;
    }
    return got;
}

static size_t build(char *out, const char *cmd, uint64_t *next) {
    size_t n = sprintf(out, "%s", cmd);
    for (int j = 0; j < multi; j++) {
        n += sprintf(out + n, " %s%llu", prefix, (unsigned long long)next_key(next));
    }
    n += sprintf(out + n, "\r\n");
    return n;
}

static void *closed_loop(void *arg) {
    conn_t *c = arg;
    char *out = malloc((size_t)depth * (multi * 300 + 16) + value_size + 64);
    uint64_t next = (uint64_t)c->id * nkeys / conns;
    pthread_barrier_wait(&barrier);
    while (now_ns() < end_ns) {
        size_t n = 0;
        for (int i = 0; i < depth; i++) n += build(out + n, "get", &next);
        uint64_t t0 = now_ns();
        write_all(c->fd, out, n);
        if (read_answers(c, depth) != depth) { fprintf(stderr, "server closed\n"); exit(1); }
        push(&c->lat, now_ns() - t0);
        c->requests += depth; c->ops += (uint64_t)depth * multi;
    }
    c->finished_ns = now_ns();
    free(out);
    return NULL;
}

static void *preload(void *arg) {
    conn_t *c = arg;
    char *out = malloc((size_t)depth * (value_size + 320));
    uint64_t lo = (uint64_t)c->id * nkeys / conns, hi = (uint64_t)(c->id + 1) * nkeys / conns;
    pthread_barrier_wait(&barrier);
    for (uint64_t k = lo; k < hi;) {
        size_t n = 0; int batch = 0;
        for (; batch < depth && k < hi; batch++, k++) {
            n += sprintf(out + n, "set %s%llu 0 0 %d\r\n", prefix, (unsigned long long)k, value_size);
            /* The value names its key ("<k>:vvv..."), so a get can check it got its own. */
            char tag[32];
            int t = snprintf(tag, sizeof tag, "%llu:", (unsigned long long)k);
            memset(out + n, 'v', value_size);
            memcpy(out + n, tag, t < value_size ? t : value_size);
            n += value_size;
            memcpy(out + n, "\r\n", 2); n += 2;
        }
        write_all(c->fd, out, n);
        if (read_answers(c, batch) != batch) { fprintf(stderr, "server closed\n"); exit(1); }
        c->requests += batch; c->ops += batch;
    }
    c->finished_ns = now_ns();
    free(out);
    return NULL;
}

/* Open loop: this thread sends on schedule; open_reader takes the answers. */
static void *open_sender(void *arg) {
    conn_t *c = arg;
    char out[16384];
    uint64_t next = (uint64_t)c->id * nkeys / conns;
    uint64_t interval = (uint64_t)(1e9 * conns / rate);
    prctl(PR_SET_TIMERSLACK, 1UL);  /* wake on schedule, not up to 50 us late */
    pthread_barrier_wait(&barrier);
    uint64_t t = start_ns + interval * c->id / conns;  /* connections staggered evenly */
    for (; t < end_ns; t += interval) {
        struct timespec ts = {.tv_sec = t / 1000000000u, .tv_nsec = t % 1000000000u};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
        size_t n = build(out, "get", &next);
        c->sched[c->nsent] = t;
        __atomic_store_n(&c->nsent, c->nsent + 1, __ATOMIC_RELEASE);
        write_all(c->fd, out, n);
    }
    __atomic_store_n(&c->done_sending, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *open_reader(void *arg) {
    conn_t *c = arg;
    pthread_barrier_wait(&barrier);
    for (uint64_t i = 0;; i++) {
        /* Nothing outstanding: wait for an answer to arrive or the sender to finish
         * (done_sending is stored after the last nsent, so read it first). */
        while (i == __atomic_load_n(&c->nsent, __ATOMIC_ACQUIRE)) {
            int done = __atomic_load_n(&c->done_sending, __ATOMIC_ACQUIRE);
            if (done && i == __atomic_load_n(&c->nsent, __ATOMIC_ACQUIRE)) goto out;
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            poll(&p, 1, 10);
        }
        if (read_answers(c, 1) != 1) { fprintf(stderr, "server closed\n"); exit(1); }
        uint64_t sent = c->sched[i];  /* the answer to request i: sent before it came */
        push(&c->lat, now_ns() - sent);
        c->requests++; c->ops += multi;
    }
out:
    c->finished_ns = now_ns();
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(samples *s, double q) {
    if (!s->n) return 0;
    size_t i = (size_t)(q * s->n);
    return s->v[i < s->n ? i : s->n - 1] / 1e3;
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen --port P [--conns N] [--depth N] [--multi N] [--seconds S]"
                    " [--keys N] [--prefix P] [--rate R] [--set] [--value-size N] [--zipf S]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--set")) { do_set = 1; continue; }
        if (!v) usage();
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--conns")) conns = atoi(v);
        else if (!strcmp(a, "--depth")) depth = atoi(v);
        else if (!strcmp(a, "--multi")) multi = atoi(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--keys")) nkeys = atoi(v);
        else if (!strcmp(a, "--prefix")) prefix = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--value-size")) value_size = atoi(v);
        else if (!strcmp(a, "--zipf")) zipf_s = atof(v);
        else usage();
        i++;
    }
    if (!port || conns < 1 || depth < 1 || multi < 1 || nkeys < 1 || rate < 0 || zipf_s < 0) usage();
    if (zipf_s > 0) zipf_table();
    int open = rate > 0 && !do_set, threads = open ? 2 : 1;
    conn_t *cs = calloc(conns, sizeof *cs);
    pthread_t *ts = calloc((size_t)conns * threads, sizeof *ts);
    pthread_barrier_init(&barrier, NULL, conns * threads + 1);
    size_t max_sent = open ? (size_t)(seconds * rate / conns) + 2 : 0;
    size_t answer_max = (size_t)multi * ((size_t)value_size + 320) + 16;
    if (2 * answer_max > rbuf_size) rbuf_size = 2 * answer_max;
    for (int i = 0; i < conns; i++) {
        cs[i].id = i; cs[i].fd = connect_to();
        cs[i].rbuf = malloc(rbuf_size);
        if (open) cs[i].sched = malloc(max_sent * sizeof(uint64_t));
        if (open) {
            pthread_create(&ts[2 * i], NULL, open_sender, &cs[i]);
            pthread_create(&ts[2 * i + 1], NULL, open_reader, &cs[i]);
        } else {
            pthread_create(&ts[i], NULL, do_set ? preload : closed_loop, &cs[i]);
        }
    }
    start_ns = now_ns() + 20000000u;  /* 20 ms for every thread to reach the barrier */
    end_ns = start_ns + (uint64_t)(seconds * 1e9);
    pthread_barrier_wait(&barrier);
    while (now_ns() < start_ns) {}  /* senders schedule from start_ns; closed loops start now */
    for (int i = 0; i < conns * threads; i++) pthread_join(ts[i], NULL);

    uint64_t requests = 0, ops = 0, hits = 0, errors = 0, last = start_ns;
    samples all = {0};
    for (int i = 0; i < conns; i++) {
        requests += cs[i].requests; ops += cs[i].ops; hits += cs[i].hits; errors += cs[i].errors;
        if (cs[i].finished_ns > last) last = cs[i].finished_ns;
        for (size_t j = 0; j < cs[i].lat.n; j++) push(&all, cs[i].lat.v[j]);
        close(cs[i].fd);
    }
    qsort(all.v, all.n, sizeof *all.v, cmp_u64);
    double elapsed = (last - start_ns) / 1e9;
    printf("{\"mode\": \"%s\", \"conns\": %d, \"depth\": %d, \"multi\": %d, \"rate\": %g, "
           "\"elapsed_s\": %.4f, \"requests\": %llu, \"ops\": %llu, \"hits\": %llu, "
           "\"errors\": %llu, \"ops_per_s\": %.1f, \"latency_samples\": %zu, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
           "\"max_us\": %.1f}\n",
           do_set ? "set" : open ? "open" : "closed", conns, depth, multi, rate, elapsed,
           (unsigned long long)requests, (unsigned long long)ops, (unsigned long long)hits,
           (unsigned long long)errors, elapsed > 0 ? ops / elapsed : 0.0, all.n,
           pct(&all, .5), pct(&all, .9), pct(&all, .99), pct(&all, .999),
           all.n ? all.v[all.n - 1] / 1e3 : 0.0);
    return 0;
}
