/*
 * Connection guard: caps and deadlines against slow and numerous connections.
 * Without them, sockets from one address that each send a byte every few
 * seconds take every slot and keep all other clients out; an idle timeout
 * that every byte resets does not stop them (tests/fault/slow-conns-bench.sh
 * runs 20,000 of them; integration.16-slow-conns, 2,000).
 *
 *  - Per client address cap (server.max_connections_per_ip), counted across
 *    all workers (SO_REUSEPORT spreads one address over all of them);
 *    trusted proxies (server.trusted_proxies) have their own cap
 *    (server.proxy_max_connections, 0 = none). Checked at accept
 *    (gw_conn_open), before the connection has a handle or a buffer.
 *  - Total cap per worker (server.max_connections): at the cap a new
 *    connection evicts an old one that has no request in progress (waiting
 *    for its head, then idle keep-alive, then in a body; of the oldest 16, the
 *    one whose address holds the most connections, a trusted proxy's last)
 *    instead of being refused, so a crowd of slow sockets cannot keep new
 *    clients out.
 *  - A deadline for the whole request head (server.head_timeout) counted
 *    from the connection's start, or from the previous answer on a
 *    keep-alive connection (then at least server.connection_timeout), and a
 *    minimum body rate (server.body_min_rate bytes/s averaged from the end of
 *    the head, after a grace of GW_CONN_BODY_GRACE_MS); with no minimum rate,
 *    a body that brings no byte for server.connection_timeout. Bytes do not
 *    reset the head's deadline. A uv timer per worker sweeps them.
 *  - An answer the client does not read: once it has been unsent for
 *    server.connection_timeout, the connection is closed as soon as a further
 *    connection_timeout passes without the client acknowledging a byte
 *    (TCP_INFO's bytes_acked, read only then).
 *
 * The sweep's cost follows what expires, never how many connections are open:
 * the head and idle lists are in deadline order (one timeout each), so a tick
 * stops at the first connection not yet due; bodies sit in a timer wheel under
 * the time their average would fall below the minimum rate if no byte came
 * (a byte only moves that later, so a connection is looked at when it may
 * have to go, and put back further on if its bytes kept up). And a tick kills
 * at most SWEEP_BATCH connections, then comes back after 1 ms: slow heads
 * opened together expire together, and one sweep that shut thousands of them
 * down would hold the loop for hundreds of milliseconds, every buyer of that
 * worker waiting behind it (case B of tests/fault/slow-conns-bench.sh: 9,000
 * per worker).
 *
 * Closing: the guard forgets the entry and closes the connection's handle
 * (gw_h1_kill): a plain close of our own socket.
 *
 * Threading: a worker's guard and its connections are touched only from
 * that worker's loop thread. The per-address table is shared by all
 * workers: 64 shards, one mutex each.
 */
#include "common/cm_alloc.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define IP_SHARDS 64
#define IP_BUCKETS 256
/* File descriptors kept per worker beyond the cap (evictions close at once). */
#define FD_HEADROOM 64
/* How many of the oldest connections an eviction looks at. */
#define EVICT_SCAN 16
/* Connections killed per sweep callback (then the loop serves I/O for a ms). */
#define SWEEP_BATCH 128
/* Body rate wheel: slots of one sweep period; a due time further out than the
 * wheel waits in its last slot and is looked at again then. */
#define WHEEL_SLOTS 64

typedef enum { PH_HEAD = 0, PH_IDLE, PH_BODY, PH_WRITE, PH_BUSY, PH_CLOSING } phase_t;

typedef struct conn_list {
    gw_conn_t *first, *last;
} conn_list_t;

struct gw_conn {
    gw_conn_t *prev, *next;
    gw_conn_t *wprev, *wnext; /* in a body wheel slot (PH_BODY, rate on) */
    int slot;                 /* its wheel slot, -1 = none */
    gw_conn_guard_t *g;
    gw_h1_t *owner;
    uint8_t key[16];
    uint8_t keylen;
    uint8_t phase;
    bool proxy; /* from a trusted proxy: evicted last (pick_victim) */
    int64_t since_ms;    /* start of the current phase */
    int64_t deadline_ms; /* PH_HEAD / PH_IDLE / PH_WRITE */
    uint64_t body_bytes;
    int64_t last_byte_ms; /* PH_BODY without a minimum rate: an idle timeout */
    uint64_t acked; /* PH_WRITE: the client's bytes_acked at the last look */
};

struct gw_conn_guard {
    gw_worker_t *w;
    uv_timer_t sweep;
    conn_list_t lists[4]; /* PH_HEAD, PH_IDLE, PH_BODY, PH_WRITE: each oldest first */
    conn_list_t wheel[WHEEL_SLOTS];
    int64_t every;      /* sweep period and wheel slot width, ms */
    int64_t wheel_next; /* the next wheel tick (time / every) to look at */
    _Atomic uint64_t open; /* read by the admin stats thread */
};

typedef struct ip_entry {
    struct ip_entry *next;
    uint32_t count;
    uint8_t keylen;
    uint8_t key[16];
} ip_entry_t;

typedef struct ip_shard {
    pthread_mutex_t mu;
    ip_entry_t *buckets[IP_BUCKETS];
} ip_shard_t;

struct gw_ip_table {
    ip_shard_t shards[IP_SHARDS];
    _Atomic uint64_t evicted, head_timeouts, slow_bodies, slow_reads, refused_per_ip, refused_full;
};

/*---- the shared per-address table ----*/

gw_ip_table_t *gw_ip_table_new(void)
{
    gw_ip_table_t *t = cm_xcalloc(1, sizeof(*t));
    for (int i = 0; i < IP_SHARDS; i++)
        pthread_mutex_init(&t->shards[i].mu, NULL);
    return t;
}

void gw_ip_table_free(gw_ip_table_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < IP_SHARDS; i++) {
        for (int b = 0; b < IP_BUCKETS; b++) {
            ip_entry_t *e = t->shards[i].buckets[b];
            while (e) {
                ip_entry_t *n = e->next;
                free(e);
                e = n;
            }
        }
        pthread_mutex_destroy(&t->shards[i].mu);
    }
    free(t);
}

static uint64_t key_hash(const uint8_t *k, size_t n)
{
    /* client addresses: the keyed table hash, so none can be made to collide */
    return cm_hash_mem(k, n);
}

/* Adds delta to the address's count when the result stays <= cap (cap 0 = no
 * cap). Returns the count before, or UINT32_MAX when refused. */
static uint32_t ip_add(gw_ip_table_t *t, const uint8_t *k, size_t n, int delta, uint32_t cap)
{
    uint64_t h = key_hash(k, n);
    ip_shard_t *s = &t->shards[h % IP_SHARDS];
    size_t b = (size_t)((h / IP_SHARDS) % IP_BUCKETS);
    pthread_mutex_lock(&s->mu);
    ip_entry_t **pp = &s->buckets[b], *e;
    while ((e = *pp) && !(e->keylen == n && memcmp(e->key, k, n) == 0))
        pp = &e->next;
    uint32_t before = e ? e->count : 0;
    if (delta > 0) {
        if (cap && before >= cap) {
            pthread_mutex_unlock(&s->mu);
            return UINT32_MAX;
        }
        if (!e) {
            e = cm_xcalloc(1, sizeof(*e));
            e->keylen = (uint8_t)n;
            memcpy(e->key, k, n);
            e->next = s->buckets[b];
            s->buckets[b] = e;
        }
        e->count++;
    } else if (e) {
        if (--e->count == 0) {
            *pp = e->next;
            free(e);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return before;
}

static uint32_t ip_count(gw_ip_table_t *t, const uint8_t *k, size_t n)
{
    uint64_t h = key_hash(k, n);
    ip_shard_t *s = &t->shards[h % IP_SHARDS];
    size_t b = (size_t)((h / IP_SHARDS) % IP_BUCKETS);
    pthread_mutex_lock(&s->mu);
    ip_entry_t *e = s->buckets[b];
    while (e && !(e->keylen == n && memcmp(e->key, k, n) == 0))
        e = e->next;
    uint32_t c = e ? e->count : 0;
    pthread_mutex_unlock(&s->mu);
    return c;
}

/*---- per-worker lists ----*/

static void wheel_remove(gw_conn_guard_t *g, gw_conn_t *c)
{
    if (c->slot < 0)
        return;
    conn_list_t *l = &g->wheel[c->slot];
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        l->first = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    else
        l->last = c->wprev;
    c->wprev = c->wnext = NULL;
    c->slot = -1;
}

/* The time c's body average falls below `rate` if no further byte comes. */
static int64_t body_due_ms(const gw_conn_t *c, uint64_t rate)
{
    uint64_t need = c->body_bytes * 1000u / rate;
    return c->since_ms + GW_CONN_BODY_GRACE_MS + (int64_t)(need > INT32_MAX ? INT32_MAX : need);
}

static void wheel_add(gw_conn_guard_t *g, gw_conn_t *c, int64_t due_ms)
{
    int64_t tick = (due_ms + g->every - 1) / g->every; /* due by the time the tick runs */
    if (tick < g->wheel_next)
        tick = g->wheel_next;
    if (tick > g->wheel_next + WHEEL_SLOTS - 1)
        tick = g->wheel_next + WHEEL_SLOTS - 1;
    c->slot = (int)(tick % WHEEL_SLOTS);
    conn_list_t *l = &g->wheel[c->slot];
    c->wprev = l->last;
    c->wnext = NULL;
    if (l->last)
        l->last->wnext = c;
    else
        l->first = c;
    l->last = c;
}

static void list_remove(gw_conn_guard_t *g, gw_conn_t *c)
{
    wheel_remove(g, c);
    if (c->phase > PH_WRITE)
        return;
    conn_list_t *l = &g->lists[c->phase];
    if (c->prev)
        c->prev->next = c->next;
    else
        l->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->last = c->prev;
    c->prev = c->next = NULL;
}

/* The per-request stamps take the loop iteration's clock (gw_worker_t.now_ns):
 * a deadline starts at most one iteration early. The sweep reads the clock itself. */
static int64_t run_ms(const gw_conn_guard_t *g)
{
    return (int64_t)(g->w->now_ns / 1000000u);
}

static void set_phase(gw_conn_t *c, phase_t ph, int64_t now_ms)
{
    gw_conn_guard_t *g = c->g;
    if (c->phase == PH_CLOSING)
        return;
    list_remove(g, c);
    c->phase = (uint8_t)ph;
    c->since_ms = now_ms;
    if (ph > PH_WRITE)
        return;
    uint64_t rate = g->w->srv->cfg->body_min_rate;
    if (ph == PH_BODY) {
        c->last_byte_ms = now_ms;
        wheel_add(g, c, rate ? body_due_ms(c, rate)
                             : now_ms + (int64_t)g->w->srv->cfg->connection_timeout_ms);
    }
    conn_list_t *l = &g->lists[ph];
    c->prev = l->last;
    c->next = NULL;
    if (l->last)
        l->last->next = c;
    else
        l->first = c;
    l->last = c;
}

/* Closes c's connection, whose close releases c (gw_conn_release). Loop thread only. */
static void conn_kill(gw_conn_t *c)
{
    list_remove(c->g, c);
    c->phase = PH_CLOSING;
    if (c->owner)
        gw_h1_kill(c->owner); /* always set right after gw_conn_open */
}

static uint64_t head_timeout_ms(const gw_server_t *srv)
{
    return srv->cfg->head_timeout_ms;
}

/*
 * The connection to evict at the total cap: among the oldest few of each
 * list (waiting for a head, idle keep-alive, in a body), the one whose address
 * holds the most connections; on a tie the earlier list, then the older.
 * The address that holds the most connections pays, not simply the oldest
 * connection: reconnecting slow sockets from one address would otherwise
 * evict buyers whose head is still in flight (integration.16-slow-conns).
 *
 * Except a trusted proxy's: its address holds the most by design (a load
 * balancer's or an edge's pool of idle keep-alive connections, each carrying
 * many clients' requests), and a crowd of fresh connections from many
 * addresses must not evict the pool. Its connections go only when no other
 * one can (they have server.proxy_max_connections; integration.79-evict-proxy).
 */
static gw_conn_t *pick_victim(gw_conn_guard_t *g, gw_ip_table_t *t)
{
    gw_conn_t *best = NULL;
    uint32_t best_n = 0;
    for (int l = PH_HEAD; l <= PH_BODY; l++) {
        int k = 0;
        for (gw_conn_t *c = g->lists[l].first; c && k < EVICT_SCAN; c = c->next, k++) {
            if (best && c->proxy && !best->proxy)
                continue;
            uint32_t n = c->keylen && !c->proxy ? ip_count(t, c->key, c->keylen) : 0;
            if (!best || (best->proxy && !c->proxy) || n > best_n) {
                best = c;
                best_n = n;
            }
        }
    }
    return best;
}

/*---- accept and close ----*/

gw_conn_t *gw_conn_open(gw_worker_t *w, const struct sockaddr *addr)
{
    gw_server_t *srv = w->srv;
    gw_conn_guard_t *g = w->edge.guard;
    uint8_t key[16];
    static const gw_proxies_t none = {0};
    size_t n = gw_client_key(&none, addr, NULL, key);
    gw_conn_t *victim = NULL;
    if (g->open >= srv->conns.max_conns) {
        /* Full: make room by closing the oldest connection without a request in
         * progress; refuse only when every one is being served. */
        victim = pick_victim(g, srv->conns.iptable);
        if (!victim) {
            atomic_fetch_add_explicit(&srv->conns.iptable->refused_full, 1, memory_order_relaxed);
            return NULL;
        }
    }
    bool proxy = false;
    if (n) {
        /* Counted now, so that workers accepting at once cannot overshoot the cap. */
        proxy = gw_proxies_match(&srv->conns.proxies, addr);
        uint64_t cap = proxy ? srv->cfg->proxy_max_connections : srv->cfg->max_connections_per_ip;
        if (ip_add(srv->conns.iptable, key, n, +1,
                   (uint32_t)(cap > UINT32_MAX ? UINT32_MAX : cap)) == UINT32_MAX) {
            atomic_fetch_add_explicit(&srv->conns.iptable->refused_per_ip, 1, memory_order_relaxed);
            return NULL;
        }
    }
    if (victim) {
        conn_kill(victim);
        atomic_fetch_add_explicit(&srv->conns.iptable->evicted, 1, memory_order_relaxed);
    }
    gw_ol_conn_started(w);
    gw_conn_t *c = cm_xcalloc(1, sizeof(*c));
    c->g = g;
    c->slot = -1;
    c->phase = PH_BUSY;
    c->keylen = (uint8_t)n;
    c->proxy = proxy;
    memcpy(c->key, key, n);
    int64_t now = run_ms(g);
    c->deadline_ms = now + (int64_t)head_timeout_ms(srv);
    set_phase(c, PH_HEAD, now);
    g->open++;
    return c;
}

void gw_conn_set_owner(gw_conn_t *c, gw_h1_t *owner)
{
    c->owner = owner;
}

void gw_conn_release(gw_conn_t *c)
{
    if (!c)
        return;
    gw_conn_guard_t *g = c->g;
    list_remove(g, c);
    if (c->keylen)
        ip_add(g->w->srv->conns.iptable, c->key, c->keylen, -1, 0);
    g->open--;
    free(c);
}

/*---- hooks from the connection layer ----*/

void gw_conn_head_done(gw_conn_t *c)
{
    if (c) {
        c->body_bytes = 0;
        set_phase(c, PH_BODY, run_ms(c->g));
    }
}

void gw_conn_body(gw_conn_t *c, size_t n)
{
    if (c) {
        c->body_bytes += n;
        c->last_byte_ms = run_ms(c->g);
    }
}

void gw_conn_busy(gw_conn_t *c)
{
    if (c)
        set_phase(c, PH_BUSY, run_ms(c->g));
}

void gw_conn_writing(gw_conn_t *c)
{
    if (!c)
        return;
    int64_t now = run_ms(c->g);
    c->deadline_ms = now + (int64_t)c->g->w->srv->cfg->connection_timeout_ms;
    c->acked = UINT64_MAX - 1; /* not looked at yet */
    set_phase(c, PH_WRITE, now);
}

void gw_conn_idle(gw_conn_t *c)
{
    if (!c)
        return;
    const gw_config_t *cfg = c->g->w->srv->cfg;
    int64_t now = run_ms(c->g);
    uint64_t t = cfg->head_timeout_ms > cfg->connection_timeout_ms ? cfg->head_timeout_ms
                                                                     : cfg->connection_timeout_ms;
    c->deadline_ms = now + (int64_t)t;
    set_phase(c, PH_IDLE, now);
}

/*---- the sweep ----*/

/* Kills what is due, at most *budget of it. Returns false when the budget ran
 * out before the end (come back soon). */
static bool sweep_deadlines(gw_conn_guard_t *g, int64_t now, int *budget)
{
    gw_ip_table_t *t = g->w->srv->conns.iptable;
    for (int l = PH_HEAD; l <= PH_IDLE; l++) {
        gw_conn_t *c;
        while ((c = g->lists[l].first) && c->deadline_ms <= now) {
            if (*budget <= 0)
                return false;
            conn_kill(c);
            (*budget)--;
            atomic_fetch_add_explicit(&t->head_timeouts, 1, memory_order_relaxed);
        }
    }
    return true;
}

/* Answers unsent past their deadline: closed if the client acknowledged
 * nothing since the last look, else looked at again a timeout later. */
static bool sweep_writes(gw_conn_guard_t *g, int64_t now, int *budget)
{
    gw_ip_table_t *t = g->w->srv->conns.iptable;
    int64_t timeout = (int64_t)g->w->srv->cfg->connection_timeout_ms;
    gw_conn_t *c;
    while ((c = g->lists[PH_WRITE].first) && c->deadline_ms <= now) {
        if (*budget <= 0)
            return false;
        (*budget)--;
        /* UINT64_MAX: unknown, counts as progress */
        uint64_t acked = c->owner ? gw_tcp_bytes_acked(gw_h1_fd(c->owner)) : UINT64_MAX;
        if (acked != c->acked || acked == UINT64_MAX) {
            c->acked = acked;
            c->deadline_ms = now + timeout;
            int64_t since = c->since_ms;
            set_phase(c, PH_WRITE, now); /* to the list's end, in deadline order */
            c->since_ms = since;
            continue;
        }
        conn_kill(c);
        atomic_fetch_add_explicit(&t->slow_reads, 1, memory_order_relaxed);
    }
    return true;
}

static bool sweep_bodies(gw_conn_guard_t *g, int64_t now, int *budget)
{
    uint64_t rate = g->w->srv->cfg->body_min_rate;
    gw_ip_table_t *t = g->w->srv->conns.iptable;
    for (; g->wheel_next <= now / g->every; g->wheel_next++) {
        conn_list_t *slot = &g->wheel[g->wheel_next % WHEEL_SLOTS];
        gw_conn_t *c;
        while ((c = slot->first)) {
            if (*budget <= 0)
                return false;
            wheel_remove(g, c);
            int64_t el = now - c->since_ms;
            int64_t idle_due = c->last_byte_ms + (int64_t)g->w->srv->cfg->connection_timeout_ms;
            if (rate ? el > GW_CONN_BODY_GRACE_MS &&
                           c->body_bytes * 1000u < rate * (uint64_t)(el - GW_CONN_BODY_GRACE_MS)
                     : idle_due <= now) {
                conn_kill(c);
                (*budget)--;
                atomic_fetch_add_explicit(&t->slow_bodies, 1, memory_order_relaxed);
            } else {
                /* Its bytes kept up: due after now, so a later tick than this
                 * one (at most WHEEL_SLOTS - 1 on: never this slot again). */
                int64_t due = rate ? body_due_ms(c, rate) : idle_due;
                wheel_add(g, c, due > now ? due : now + 1);
            }
        }
    }
    return true;
}

static void sweep(uv_timer_t *t)
{
    gw_conn_guard_t *g = t->data;
    int64_t now = (int64_t)cm_mono_ms();
    int budget = SWEEP_BATCH;
    bool done = sweep_deadlines(g, now, &budget);
    if (done)
        done = sweep_writes(g, now, &budget);
    if (done)
        done = sweep_bodies(g, now, &budget);
    if (!done) /* more is due: after the loop has polled once */
        uv_timer_start(&g->sweep, sweep, 1, (uint64_t)g->every);
}

void gw_conn_limit(gw_server_t *srv)
{
    /*
     * Every connection is a file descriptor: a cap above what RLIMIT_NOFILE
     * allows would let connections exhaust the descriptors (accept fails with
     * EMFILE, the spool cannot roll a segment, Redis cannot reconnect) before
     * eviction starts. So the per-worker cap is lowered to fit, keeping a
     * reserve for everything else, and the log says so.
     */
    uint64_t cap = srv->cfg->max_connections;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        uint64_t reserve = 64 + rl.rlim_cur / 8;
        uint64_t room = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 0;
        uint64_t per = room / (srv->pool.nworkers ? srv->pool.nworkers : 1);
        per = per > FD_HEADROOM + 8 ? per - FD_HEADROOM : 8;
        if (per < cap) {
            cm_log_warn("gw", "server.max_connections lowered to fit the open-file limit",
                        "configured=%llu per_worker=%llu nofile=%llu workers=%u",
                        (unsigned long long)cap, (unsigned long long)per,
                        (unsigned long long)rl.rlim_cur, srv->pool.nworkers);
            cap = per;
        }
    }
    srv->conns.max_conns = cap;
}

void gw_conn_guard_init(gw_worker_t *w)
{
    gw_conn_guard_t *g = cm_xcalloc(1, sizeof(*g));
    g->w = w;
    w->edge.guard = g;
    uv_timer_init(&w->loop, &g->sweep);
    g->sweep.data = g;
    /* A tenth of the head deadline, 50..500 ms: a connection outlives its
     * deadline by at most that. */
    uint64_t every = w->srv->cfg->head_timeout_ms / 10;
    every = every < 50 ? 50 : every > 500 ? 500 : every;
    g->every = (int64_t)every;
    g->wheel_next = (int64_t)cm_mono_ms() / g->every;
    uv_timer_start(&g->sweep, sweep, every, every);
}

void gw_conn_guard_close(gw_worker_t *w)
{
    if (w->edge.guard && !uv_is_closing((uv_handle_t *)&w->edge.guard->sweep))
        uv_close((uv_handle_t *)&w->edge.guard->sweep, NULL);
}

void gw_conn_guard_free(gw_worker_t *w)
{
    /* After the loop closed every connection (gw_h1_stop). */
    free(w->edge.guard);
    w->edge.guard = NULL;
}

void gw_conn_stats(gw_server_t *srv, void *json_obj)
{
    gw_ip_table_t *t = srv->conns.iptable;
    if (!t)
        return;
    json_int_t open = 0;
    for (unsigned i = 0; i < srv->pool.nworkers; i++)
        if (srv->pool.workers && srv->pool.workers[i].edge.guard)
            open += (json_int_t)atomic_load_explicit(&srv->pool.workers[i].edge.guard->open,
                                                    memory_order_relaxed);
    json_object_set_new(
        json_obj, "connections",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "open", open, "evicted",
                  (json_int_t)atomic_load(&t->evicted), "head_timeouts",
                  (json_int_t)atomic_load(&t->head_timeouts), "slow_bodies",
                  (json_int_t)atomic_load(&t->slow_bodies), "slow_reads",
                  (json_int_t)atomic_load(&t->slow_reads), "refused_per_ip",
                  (json_int_t)atomic_load(&t->refused_per_ip), "refused_full",
                  (json_int_t)atomic_load(&t->refused_full)));
}
