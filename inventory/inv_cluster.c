/*
 * Redis Cluster routing: see inv_cluster.h. Our own because Debian 12 packages
 * no C cluster client; kept to what flashgate's one-slot-per-sale keys need.
 */
#include "inventory/inv_cluster.h"
#include "inventory/inv_redis.h"

#include "common/cm_addr.h"
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NO_NODE 0xFF
#define RETRY_SLEEP_MS 50
#define PING_IDLE_MS 100

/*---- slots ----*/

uint16_t inv_cluster_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

uint16_t inv_cluster_key_slot(const char *key, size_t len)
{
    /* the cluster spec's rule: the first '{', the first '}' after it, and
     * something between them; otherwise the whole key */
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t off = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - off);
        if (close && close > open + 1)
            return inv_cluster_crc16(open + 1, (size_t)(close - open - 1)) & 16383;
    }
    return inv_cluster_crc16(key, len) & 16383;
}

int inv_cluster_redirect_parse(const char *err, size_t len, uint16_t *slot, char *host,
                               size_t cap, int *port)
{
    int kind;
    size_t skip;
    if (len > 6 && strncmp(err, "MOVED ", 6) == 0) {
        kind = INV_CLUSTER_REDIR_MOVED;
        skip = 6;
    } else if (len > 4 && strncmp(err, "ASK ", 4) == 0) {
        kind = INV_CLUSTER_REDIR_ASK;
        skip = 4;
    } else {
        return INV_CLUSTER_REDIR_NONE;
    }
    char buf[320];
    if (len - skip >= sizeof(buf))
        return INV_CLUSTER_REDIR_NONE;
    memcpy(buf, err + skip, len - skip);
    buf[len - skip] = '\0';
    char *end;
    unsigned long s = strtoul(buf, &end, 10);
    if (end == buf || *end != ' ' || s >= INV_CLUSTER_SLOTS)
        return INV_CLUSTER_REDIR_NONE;
    /* Redis writes an IPv6 node bare ("fe80::1:7001") and an unannounced one as ":7005". */
    char why[160];
    int p;
    if (cm_hostport_parse(end + 1, CM_HOSTPORT_BARE_V6 | CM_HOSTPORT_EMPTY_HOST, host, cap, &p, why,
                          sizeof(why)) != 0)
        return INV_CLUSTER_REDIR_NONE;
    *slot = (uint16_t)s;
    *port = p;
    return kind;
}

bool inv_cluster_is_transient(const char *err)
{
    return strncmp(err, "TRYAGAIN", 8) == 0 || strncmp(err, "CLUSTERDOWN", 11) == 0;
}

/*---- the map ----*/

typedef struct cnode {
    char host[256];
    int port;
} cnode_t;

struct inv_cluster {
    cm_redis_url_t addr;
    uint32_t timeout_ms;
    pthread_rwlock_t lock;            /* the slots and the node table */
    uint8_t slot[INV_CLUSTER_SLOTS];  /* node index, NO_NODE when unserved */
    cnode_t node[INV_CLUSTER_NODES_MAX];
    int nnodes;
    pthread_mutex_t refresh_mu;       /* one CLUSTER SLOTS at a time */
    atomic_bool stale;
    _Atomic uint64_t changes;
};

static const inv_cluster_transport_t *g_transport;

void inv_cluster_transport_set(const inv_cluster_transport_t *t)
{
    g_transport = t;
}

const inv_cluster_transport_t *inv_cluster_transport(void)
{
    return g_transport;
}

static uint64_t mono_ms(void)
{
    if (g_transport)
        return g_transport->now_ms(g_transport->arg);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Caller holds the write lock. */
static int intern_locked(inv_cluster_t *cl, const char *host, int port)
{
    for (int i = 0; i < cl->nnodes; i++)
        if (cl->node[i].port == port && strcmp(cl->node[i].host, host) == 0)
            return i;
    if (cl->nnodes == INV_CLUSTER_NODES_MAX || strlen(host) >= sizeof(cl->node[0].host))
        return -1;
    int i = cl->nnodes++;
    snprintf(cl->node[i].host, sizeof(cl->node[i].host), "%s", host);
    cl->node[i].port = port;
    return i;
}

int inv_cluster_intern(inv_cluster_t *cl, const char *host, int port)
{
    pthread_rwlock_wrlock(&cl->lock);
    int i = intern_locked(cl, host, port);
    pthread_rwlock_unlock(&cl->lock);
    return i;
}

int inv_cluster_node(inv_cluster_t *cl, int idx, char *host, size_t cap, int *port)
{
    int rc = -1;
    pthread_rwlock_rdlock(&cl->lock);
    if (idx >= 0 && idx < cl->nnodes) {
        snprintf(host, cap, "%s", cl->node[idx].host);
        *port = cl->node[idx].port;
        rc = 0;
    }
    pthread_rwlock_unlock(&cl->lock);
    return rc;
}

int inv_cluster_route(inv_cluster_t *cl, uint16_t slot)
{
    pthread_rwlock_rdlock(&cl->lock);
    int n = cl->slot[slot % INV_CLUSTER_SLOTS];
    pthread_rwlock_unlock(&cl->lock);
    return n == NO_NODE ? -1 : n;
}

int inv_cluster_any(inv_cluster_t *cl, unsigned hint)
{
    if (!cl->addr.cluster)
        return 0; /* the one node, serving every slot */
    /* a node that serves a slot is a master the map believes in */
    pthread_rwlock_rdlock(&cl->lock);
    int found = -1;
    bool serves[INV_CLUSTER_NODES_MAX] = {false};
    int nserving = 0;
    for (int s = 0; s < INV_CLUSTER_SLOTS; s++) {
        int n = cl->slot[s];
        if (n != NO_NODE && !serves[n]) {
            serves[n] = true;
            nserving++;
        }
    }
    if (nserving) {
        unsigned k = hint % (unsigned)nserving;
        for (int i = 0; i < cl->nnodes; i++)
            if (serves[i] && k-- == 0) {
                found = i;
                break;
            }
    }
    pthread_rwlock_unlock(&cl->lock);
    return found;
}

int inv_cluster_moved(inv_cluster_t *cl, uint16_t slot, const char *host, int port)
{
    pthread_rwlock_wrlock(&cl->lock);
    int i = intern_locked(cl, host, port);
    if (i >= 0)
        cl->slot[slot % INV_CLUSTER_SLOTS] = (uint8_t)i;
    pthread_rwlock_unlock(&cl->lock);
    atomic_store(&cl->stale, true);
    return i;
}

void inv_cluster_mark_stale(inv_cluster_t *cl)
{
    if (cl->addr.cluster)
        atomic_store(&cl->stale, true);
}

bool inv_cluster_take_stale(inv_cluster_t *cl)
{
    return atomic_exchange(&cl->stale, false);
}

uint64_t inv_cluster_changes(const inv_cluster_t *cl)
{
    return atomic_load(&cl->changes);
}

bool inv_cluster_enabled(const inv_cluster_t *cl)
{
    return cl->addr.cluster;
}

const cm_redis_url_t *inv_cluster_addr(const inv_cluster_t *cl)
{
    return &cl->addr;
}

redisContext *inv_redis_connect(const cm_redis_url_t *addr, uint32_t timeout_ms, char *errbuf,
                                size_t errlen)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(addr->host, addr->port, tv);
    if (!c || c->err) {
        cm_errbuf_set(errbuf, errlen, "redis: connect %s:%d: %s", addr->host, addr->port,
                c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (addr->pass[0]) {
        if (addr->user[0])
            r = redisCommand(c, "AUTH %s %s", addr->user, addr->pass);
        else
            r = redisCommand(c, "AUTH %s", addr->pass);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            cm_errbuf_set(errbuf, errlen, "redis: AUTH: %s", r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (addr->db) {
        r = redisCommand(c, "SELECT %d", addr->db);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            cm_errbuf_set(errbuf, errlen, "redis: SELECT %d: %s", addr->db, r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    return c;
fail:
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

static redisContext *connect_hp(const inv_cluster_t *cl, const char *host, int port,
                                uint32_t timeout_ms, char *errbuf, size_t errlen)
{
    cm_redis_url_t a = cl->addr; /* the credentials and db, another host */
    size_t n = strnlen(host, sizeof(a.host));
    if (n == sizeof(a.host)) {
        cm_errbuf_set(errbuf, errlen, "redis: host name too long");
        return NULL;
    }
    memcpy(a.host, host, n + 1);
    a.port = port;
    return inv_redis_connect(&a, timeout_ms, errbuf, errlen);
}

redisContext *inv_cluster_connect_node(inv_cluster_t *cl, int idx, uint32_t timeout_ms,
                                       char *errbuf, size_t errlen)
{
    char host[256];
    int port;
    if (inv_cluster_node(cl, idx, host, sizeof(host), &port) != 0) {
        cm_errbuf_set(errbuf, errlen, "redis: no such cluster node");
        return NULL;
    }
    return connect_hp(cl, host, port, timeout_ms, errbuf, errlen);
}

/* Reads CLUSTER SLOTS from c (whose address is host) into slots/nodes. 0 or -1. */
static int read_slots(redisContext *c, const char *asked_host, uint8_t *slots, cnode_t *nodes,
                      int *nnodes, char *errbuf, size_t errlen)
{
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        cm_errbuf_set(errbuf, errlen, "CLUSTER SLOTS: %s",
                      !r ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "no slots");
        if (r)
            freeReplyObject(r);
        return -1;
    }
    memset(slots, NO_NODE, INV_CLUSTER_SLOTS);
    *nnodes = 0;
    int rc = 0;
    for (size_t i = 0; i < r->elements && rc == 0; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2 ||
            e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            e->element[2]->element[1]->type != REDIS_REPLY_INTEGER) {
            rc = -1;
            break;
        }
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        const char *h = e->element[2]->element[0]->str;
        int port = (int)e->element[2]->element[1]->integer;
        if (!h[0] || strcmp(h, "?") == 0)
            h = asked_host; /* "the node you asked" (cluster-announce unset) */
        if (lo < 0 || hi >= INV_CLUSTER_SLOTS || lo > hi || port <= 0 || port > 65535 ||
            strlen(h) >= sizeof(nodes[0].host)) {
            rc = -1;
            break;
        }
        int n;
        for (n = 0; n < *nnodes; n++)
            if (nodes[n].port == port && strcmp(nodes[n].host, h) == 0)
                break;
        if (n == *nnodes) {
            if (n == INV_CLUSTER_NODES_MAX) {
                rc = -1;
                break;
            }
            snprintf(nodes[n].host, sizeof(nodes[n].host), "%s", h);
            nodes[n].port = port;
            (*nnodes)++;
        }
        memset(slots + lo, n, (size_t)(hi - lo + 1));
    }
    if (rc < 0)
        cm_errbuf_set(errbuf, errlen, "CLUSTER SLOTS: unexpected reply");
    freeReplyObject(r);
    return rc;
}

int inv_cluster_refresh(inv_cluster_t *cl, char *errbuf, size_t errlen)
{
    if (!cl->addr.cluster)
        return 0;
    pthread_mutex_lock(&cl->refresh_mu);
    /* candidates: every node known (masters first, as the map has them), then the seeds */
    cnode_t cand[INV_CLUSTER_NODES_MAX + CM_REDIS_SEEDS_MAX];
    int ncand = 0;
    pthread_rwlock_rdlock(&cl->lock);
    for (int i = 0; i < cl->nnodes; i++)
        cand[ncand++] = cl->node[i];
    pthread_rwlock_unlock(&cl->lock);
    for (int i = 0; i < cl->addr.nseeds; i++) {
        snprintf(cand[ncand].host, sizeof(cand[ncand].host), "%s", cl->addr.seed[i].host);
        cand[ncand++].port = cl->addr.seed[i].port;
    }
    uint8_t *slots = cm_xcalloc(INV_CLUSTER_SLOTS, 1);
    cnode_t *nodes = cm_xcalloc(INV_CLUSTER_NODES_MAX, sizeof(*nodes));
    int nnodes = 0, rc = -1;
    char why[256] = "no node";
    for (int i = 0; i < ncand && rc < 0; i++) {
        redisContext *c = connect_hp(cl, cand[i].host, cand[i].port, cl->timeout_ms, why,
                                     sizeof(why));
        if (!c)
            continue;
        rc = read_slots(c, cand[i].host, slots, nodes, &nnodes, why, sizeof(why));
        redisFree(c);
    }
    if (rc == 0) {
        bool changed = false;
        pthread_rwlock_wrlock(&cl->lock);
        uint8_t map[INV_CLUSTER_NODES_MAX];
        memset(map, NO_NODE, sizeof(map));
        for (int n = 0; n < nnodes; n++) {
            int idx = intern_locked(cl, nodes[n].host, nodes[n].port);
            map[n] = idx < 0 ? NO_NODE : (uint8_t)idx;
        }
        for (int s = 0; s < INV_CLUSTER_SLOTS; s++) {
            uint8_t v = slots[s] == NO_NODE ? NO_NODE : map[slots[s]];
            if (cl->slot[s] != v) {
                cl->slot[s] = v;
                changed = true;
            }
        }
        pthread_rwlock_unlock(&cl->lock);
        if (changed) {
            atomic_fetch_add(&cl->changes, 1);
            cm_log_info("inv", "redis cluster slot map changed", "masters=%d", nnodes);
        }
    } else {
        cm_errbuf_set(errbuf, errlen, "redis cluster: no seed or node gave the slot map (%s)",
                      why);
    }
    pthread_mutex_unlock(&cl->refresh_mu);
    free(slots);
    free(nodes);
    return rc < 0 ? CM_EBACKEND : 0;
}

inv_cluster_t *inv_cluster_open(const cm_redis_url_t *addr, uint32_t timeout_ms, char *errbuf,
                                size_t errlen)
{
    inv_cluster_t *cl = cm_xcalloc(1, sizeof(*cl));
    cl->addr = *addr;
    cl->timeout_ms = timeout_ms;
    pthread_rwlock_init(&cl->lock, NULL);
    pthread_mutex_init(&cl->refresh_mu, NULL);
    atomic_init(&cl->stale, false);
    atomic_init(&cl->changes, 0);
    memset(cl->slot, NO_NODE, sizeof(cl->slot));
    if (!addr->cluster) {
        /* one node that serves everything */
        snprintf(cl->node[0].host, sizeof(cl->node[0].host), "%s", addr->host);
        cl->node[0].port = addr->port;
        cl->nnodes = 1;
        memset(cl->slot, 0, sizeof(cl->slot));
        return cl;
    }
    if (inv_cluster_refresh(cl, errbuf, errlen) != 0) {
        inv_cluster_close(cl);
        return NULL;
    }
    return cl;
}

void inv_cluster_close(inv_cluster_t *cl)
{
    if (!cl)
        return;
    pthread_rwlock_destroy(&cl->lock);
    pthread_mutex_destroy(&cl->refresh_mu);
    free(cl);
}

/*---- the blocking routed client ----*/

struct inv_cluster_sync {
    inv_cluster_t *cl;
    uint32_t timeout_ms;
    redisContext *ctx[INV_CLUSTER_NODES_MAX];
    void *tconn[INV_CLUSTER_NODES_MAX]; /* the transport's connections, when one is set */
    uint64_t used_ms[INV_CLUSTER_NODES_MAX];
    char errstr[256];
};

inv_cluster_sync_t *inv_cluster_sync_new(inv_cluster_t *cl, uint32_t timeout_ms)
{
    inv_cluster_sync_t *s = cm_xcalloc(1, sizeof(*s));
    s->cl = cl;
    s->timeout_ms = timeout_ms;
    return s;
}

void inv_cluster_sync_free(inv_cluster_sync_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < INV_CLUSTER_NODES_MAX; i++) {
        if (s->ctx[i])
            redisFree(s->ctx[i]);
        if (s->tconn[i])
            g_transport->close(g_transport->arg, s->tconn[i]);
    }
    free(s);
}

const char *inv_cluster_sync_errstr(const inv_cluster_sync_t *s)
{
    return s->errstr;
}

static bool timed_out(const redisContext *c)
{
    return c->err == REDIS_ERR_IO &&
           (strstr(c->errstr, "temporarily unavailable") || strstr(c->errstr, "timed out"));
}

static void drop_idx(inv_cluster_sync_t *s, int idx)
{
    if (s->ctx[idx]) {
        redisFree(s->ctx[idx]);
        s->ctx[idx] = NULL;
    }
}

void inv_cluster_sync_drop(inv_cluster_sync_t *s, redisContext *c)
{
    for (int i = 0; i < INV_CLUSTER_NODES_MAX; i++)
        if (s->ctx[i] == c) {
            snprintf(s->errstr, sizeof(s->errstr), "%s", c->errstr);
            drop_idx(s, i);
            inv_cluster_mark_stale(s->cl);
        }
}

/*
 * A usable connection to node idx: connected on demand, PINGed after an idle
 * spell. A PING that timed out fails the call (nothing was sent): the server
 * is there but does not answer (stopped, busy, a full socket), and a fresh
 * connection's command would wait out the timeout a second time. Calling it a
 * dead socket and reconnecting made every call to a hung Redis block twice
 * the timeout (2 x 2 s on the admin connection), and a graceful stop, which
 * waits for several such calls, ran past server.drain_timeout (exit 1) under
 * CPU load. A socket that the server closed (a restart) still reconnects.
 */
static redisContext *node_ctx(inv_cluster_sync_t *s, int idx)
{
    uint64_t now = mono_ms();
    if (s->ctx[idx] && now - s->used_ms[idx] >= PING_IDLE_MS) {
        redisReply *r = redisCommand(s->ctx[idx], "PING");
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        bool hung = !r && timed_out(s->ctx[idx]);
        if (r)
            freeReplyObject(r);
        if (hung)
            snprintf(s->errstr, sizeof(s->errstr), "no answer to PING in %u ms: %s",
                     s->timeout_ms, s->ctx[idx]->errstr);
        if (!ok)
            drop_idx(s, idx);
        if (hung)
            return NULL;
    }
    if (!s->ctx[idx]) {
        s->ctx[idx] = inv_cluster_connect_node(s->cl, idx, s->timeout_ms, s->errstr,
                                               sizeof(s->errstr));
        if (!s->ctx[idx])
            return NULL;
    }
    s->used_ms[idx] = now;
    return s->ctx[idx];
}

static int key_node(inv_cluster_sync_t *s, const char *key, unsigned attempt);

/* node_ctx through the transport: the same idle PING, the same rules. */
static void *node_tconn(inv_cluster_sync_t *s, int idx)
{
    const inv_cluster_transport_t *t = g_transport;
    uint64_t now = mono_ms();
    if (s->tconn[idx] && now - s->used_ms[idx] >= PING_IDLE_MS) {
        static const char ping[] = "*1\r\n$4\r\nPING\r\n";
        redisReply *r = NULL;
        int rc = t->call(t->arg, s->tconn[idx], ping, sizeof(ping) - 1, &r);
        bool ok = rc == 0 && r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (rc == CM_ETIMEOUT)
            snprintf(s->errstr, sizeof(s->errstr), "no answer to PING in %u ms", s->timeout_ms);
        if (!ok) {
            t->close(t->arg, s->tconn[idx]);
            s->tconn[idx] = NULL;
        }
        if (rc == CM_ETIMEOUT)
            return NULL;
    }
    if (!s->tconn[idx]) {
        char host[256];
        int port;
        if (inv_cluster_node(s->cl, idx, host, sizeof(host), &port) != 0)
            return NULL;
        s->tconn[idx] = t->open(t->arg, host, port, s->errstr, sizeof(s->errstr));
        if (!s->tconn[idx])
            return NULL;
    }
    s->used_ms[idx] = now;
    return s->tconn[idx];
}

/* send_formatted through the transport (one node: no redirects). */
static redisReply *send_transport(inv_cluster_sync_t *s, const char *key, const char *cmd,
                                  size_t len, int *err)
{
    const inv_cluster_transport_t *t = g_transport;
    int idx = key_node(s, key, 0);
    void *c = idx >= 0 ? node_tconn(s, idx) : NULL;
    if (!c) {
        *err = CM_EBACKEND; /* nothing was sent */
        return NULL;
    }
    redisReply *r = NULL;
    int rc = t->call(t->arg, c, cmd, len, &r);
    if (rc < 0) {
        /* sent, and the answer is lost: its fate is unknown, never resend */
        snprintf(s->errstr, sizeof(s->errstr), "%s",
                 rc == CM_ETIMEOUT ? "Resource temporarily unavailable" : "connection lost");
        t->close(t->arg, c);
        s->tconn[idx] = NULL;
        *err = rc == CM_ETIMEOUT ? CM_ETIMEOUT : CM_EBACKEND;
        return NULL;
    }
    s->errstr[0] = '\0';
    return r;
}

static int key_node(inv_cluster_sync_t *s, const char *key, unsigned attempt)
{
    if (!key)
        return inv_cluster_any(s->cl, attempt);
    return inv_cluster_route(s->cl, inv_cluster_key_slot(key, strlen(key)));
}

/* Waits a little and re-reads the map before another attempt; false once out of time. */
static bool backoff(inv_cluster_sync_t *s, uint64_t start)
{
    if (!inv_cluster_enabled(s->cl) || mono_ms() - start + RETRY_SLEEP_MS > s->timeout_ms)
        return false;
    sleep_ms(RETRY_SLEEP_MS);
    char why[256];
    (void)inv_cluster_refresh(s->cl, why, sizeof(why));
    return true;
}

redisContext *inv_cluster_sync_ctx(inv_cluster_sync_t *s, const char *key, int *err)
{
    if (g_transport) { /* no raw hiredis context to give */
        snprintf(s->errstr, sizeof(s->errstr), "no raw connection through a transport");
        *err = CM_EBACKEND;
        return NULL;
    }
    uint64_t start = mono_ms();
    for (unsigned attempt = 0;; attempt++) {
        int idx = key_node(s, key, attempt);
        redisContext *c = idx >= 0 ? node_ctx(s, idx) : NULL;
        if (c)
            return c;
        if (idx < 0)
            snprintf(s->errstr, sizeof(s->errstr), "no cluster node serves the key");
        inv_cluster_mark_stale(s->cl);
        if (!backoff(s, start)) {
            *err = CM_EBACKEND;
            return NULL;
        }
    }
}

/* Sends a formatted command (cmd, len) with the routing above. */
static redisReply *send_formatted(inv_cluster_sync_t *s, const char *key, const char *cmd,
                                  size_t len, int *err)
{
    if (g_transport)
        return send_transport(s, key, cmd, len, err);
    uint64_t start = mono_ms();
    int ask_idx = -1, redirects = 0;
    for (unsigned attempt = 0;; attempt++) {
        int idx = ask_idx >= 0 ? ask_idx : key_node(s, key, attempt);
        redisContext *c = idx >= 0 ? node_ctx(s, idx) : NULL;
        if (!c) {
            /* nothing was sent: safe to try again once the map has moved on */
            inv_cluster_mark_stale(s->cl);
            ask_idx = -1;
            if (backoff(s, start))
                continue;
            *err = CM_EBACKEND;
            return NULL;
        }
        if (ask_idx >= 0)
            redisAppendCommand(c, "ASKING");
        redisAppendFormattedCommand(c, cmd, len);
        redisReply *r = NULL;
        void *rv = NULL;
        if (ask_idx >= 0) {
            if (redisGetReply(c, &rv) == REDIS_OK)
                freeReplyObject(rv);
            else
                c = NULL;
        }
        if (c && redisGetReply(c, &rv) == REDIS_OK)
            r = rv;
        if (!r) {
            /* sent, and the answer is lost: its fate is unknown, never resend */
            redisContext *bad = s->ctx[idx];
            *err = timed_out(bad) ? CM_ETIMEOUT : CM_EBACKEND;
            inv_cluster_sync_drop(s, bad);
            return NULL;
        }
        ask_idx = -1;
        s->errstr[0] = '\0';
        if (r->type != REDIS_REPLY_ERROR)
            return r;
        uint16_t slot;
        char host[256];
        int port;
        int kind = inv_cluster_redirect_parse(r->str, r->len, &slot, host, sizeof(host), &port);
        if (kind != INV_CLUSTER_REDIR_NONE && redirects < INV_CLUSTER_REDIRECTS_MAX) {
            /* refused before it ran: follow it */
            redirects++;
            if (!host[0]) /* the node asked did not know its own address */
                (void)inv_cluster_node(s->cl, idx, host, sizeof(host), &(int){0});
            int to = kind == INV_CLUSTER_REDIR_MOVED ? inv_cluster_moved(s->cl, slot, host, port)
                                                     : inv_cluster_intern(s->cl, host, port);
            freeReplyObject(r);
            if (to < 0) {
                *err = CM_EBACKEND;
                return NULL;
            }
            if (kind == INV_CLUSTER_REDIR_ASK)
                ask_idx = to;
            continue;
        }
        if (inv_cluster_is_transient(r->str) && backoff(s, start)) {
            freeReplyObject(r); /* not run: a cluster between owners */
            continue;
        }
        return r;
    }
}

redisReply *inv_cluster_sync_argv(inv_cluster_sync_t *s, const char *key, int argc,
                                  const char **argv, const size_t *argl, int *err)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argl);
    if (len < 0) {
        *err = CM_ENOMEM;
        return NULL;
    }
    redisReply *r = send_formatted(s, key, cmd, (size_t)len, err);
    redisFreeCommand(cmd);
    return r;
}

redisReply *inv_cluster_sync_vcmd(inv_cluster_sync_t *s, const char *key, int *err,
                                  const char *fmt, va_list ap)
{
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    if (len < 0) {
        *err = CM_ENOMEM;
        return NULL;
    }
    redisReply *r = send_formatted(s, key, cmd, (size_t)len, err);
    redisFreeCommand(cmd);
    return r;
}

bool inv_cluster_is_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

bool inv_cluster_script_retry(const redisReply *r, bool *reloaded)
{
    if (*reloaded || !inv_cluster_is_noscript(r))
        return false;
    *reloaded = true;
    return true;
}

void inv_cluster_script_sha1(const char *text, char sha1[41])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    /* SHA1 is how Redis names a script; no secret rides on it */
    if (EVP_Digest(text, strlen(text), md, &n, EVP_sha1(), NULL) != 1 || n != 20)
        abort(); /* OpenSSL always has SHA1: only a broken library fails here */
    for (unsigned int j = 0; j < 20; j++) {
        sha1[2 * j] = hex[md[j] >> 4];
        sha1[2 * j + 1] = hex[md[j] & 15];
    }
    sha1[40] = '\0';
}

redisReply *inv_cluster_sync_script(inv_cluster_sync_t *s, const char *key, const char *sha1,
                                    const char *text, int argc, const char **argv,
                                    const size_t *argl, int *err)
{
    enum { STACK_ARGS = 24 };
    const char *sv[STACK_ARGS];
    size_t sl[STACK_ARGS];
    bool heap = argc + 2 > STACK_ARGS;
    const char **v = heap ? cm_xmalloc((size_t)(argc + 2) * sizeof(*v)) : sv;
    size_t *l = heap ? cm_xmalloc((size_t)(argc + 2) * sizeof(*l)) : sl;
    memcpy(v + 2, argv, (size_t)argc * sizeof(*v));
    memcpy(l + 2, argl, (size_t)argc * sizeof(*l));
    v[0] = "EVALSHA";
    l[0] = 7;
    v[1] = sha1;
    l[1] = strlen(sha1);
    redisReply *r = inv_cluster_sync_argv(s, key, argc + 2, v, l, err);
    if (inv_cluster_is_noscript(r)) {
        freeReplyObject(r);
        v[0] = "EVAL";
        l[0] = 4;
        v[1] = text;
        l[1] = strlen(text);
        r = inv_cluster_sync_argv(s, key, argc + 2, v, l, err);
    }
    if (heap) {
        free(v);
        free(l);
    }
    return r;
}

redisReply *inv_cluster_sync_vscript(inv_cluster_sync_t *s, const char *key, const char *sha1,
                                     const char *text, int *err, const char *fmt, va_list ap)
{
    /* formatted once as hiredis does ("*N\r\n" then "$len\r\n<bytes>\r\n" each),
     * then read back as arguments behind the script */
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    if (len < 0) {
        *err = CM_ENOMEM;
        return NULL;
    }
    const char *p = cmd + 1, *end = cmd + len;
    char *next;
    long n = strtol(p, &next, 10);
    const char **argv = cm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(*argv));
    size_t *argl = cm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(*argl));
    p = next + 2;
    for (long i = 0; i < n && p < end; i++) {
        long al = strtol(p + 1, &next, 10); /* "$len" */
        argv[i] = next + 2;
        argl[i] = (size_t)al;
        p = next + 2 + al + 2;
    }
    redisReply *r = inv_cluster_sync_script(s, key, sha1, text, (int)n, argv, argl, err);
    free(argv);
    free(argl);
    redisFreeCommand(cmd);
    return r;
}

redisReply *inv_cluster_sync_formatted(inv_cluster_sync_t *s, const char *key, const char *cmd,
                                       size_t len, int *err)
{
    return send_formatted(s, key, cmd, len, err);
}

redisReply *inv_cluster_sync_cmd(inv_cluster_sync_t *s, const char *key, int *err,
                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = inv_cluster_sync_vcmd(s, key, err, fmt, ap);
    va_end(ap);
    return r;
}
