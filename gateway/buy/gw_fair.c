/*
 * Fair start: the start-window lottery (see gw_fair.h for the rules).
 */
#include "gateway/buy/gw_fair.h"

#include "common/cm_rand.h"
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "common/cm_url.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/overload/gw_ol.h"
#include "inventory/inv_fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FAIR_MAX_SALES 64
#define TICK_MS 20
#define IDLE_TICK_MS 100 /* while no sale has a lottery or a waiting room */


typedef struct entry {
    char order_id[INV_ORDER_ID_MAX + 1];
    char user_id[INV_USER_ID_MAX + 1];
    char idem[INV_IDEM_KEY_MAX + 1];
    uint32_t qty;
    int64_t at_ms;
    uint64_t key; /* siphash(secret, user_id): the table hash and the draw's sort key */
    uint8_t state;
    bool wlogged; /* the entry log has its "W" line (a winner's order is durable) */
    uint32_t pos; /* 1-based draw position, 0 before the draw */
} entry_t;

struct gw_fair_sale {
    char sale_id[INV_SALE_ID_MAX + 1];
    _Atomic int64_t window_ms, early_ms;
    pthread_mutex_t mu; /* everything below */
    /* The fleet's shared key: conf_apply_locked changes it (and re-keys the
     * entries) when the fleet's configuration comes back with another one, so
     * a key is only taken from it under mu, or an entry could be filed under
     * the old key and the same user enter twice. */
    cm_hash_key_t secret;
    entry_t *v;
    size_t n, cap;
    uint32_t *by_user, *by_id; /* open addressing: entry index + 1, 0 = empty */
    size_t tcap;
    int fd; /* the entry log, -1 until the first entry */
    off_t log_len;           /* its length: where a short write is cut back to */
    bool closed;             /* the draw took the entries: no more */
    bool seeded;
    uint64_t seed;
    int64_t draw_started_ms, draw_done_ms;
    int64_t draw_retry_ms; /* fleet: no new try of a failed draw before this (lottery thread) */
    uint32_t *perm;          /* the draw order once seeded */
    size_t ndraw, next;      /* entrants of the draw, next position to allocate */
    bool exhausted;
    uint64_t won_orders, won_units, lost;
    atomic_bool drawn;
    _Atomic uint64_t duplicates;
    bool pushed; /* fleet: this gateway's entries are in Redis (lottery thread only) */
    bool marked; /* fleet: Redis knows this gateway holds entries (lottery thread only) */
    /* waiting room */
    _Atomic int64_t wr_rate;          /* admissions per second configured, 0 = none */
    _Atomic uint64_t wr_next;         /* positions given */
    _Atomic uint64_t wr_front_milli;  /* admitted through (thousandths of a position) */
    _Atomic uint64_t wr_eff_milli;    /* the rate in force (thousandths per second) */
    int64_t wr_last_ms;               /* lottery thread */
    pthread_mutex_t wr_mu;            /* wr_places */
    gw_wr_place_t *wr_places;         /* WR_PLACES slots, allocated at the first join */
    /* The place table's key: this gateway's own (the table is local and not
     * kept across a restart), set before the sale is published and never
     * changed, so a join needs no lock for it and a re-keyed secret does not
     * move anyone's place. */
    cm_hash_key_t wr_key;
};

/*
 * The places the waiting room gave, by user, so that a user who joins again
 * gets the place they hold instead of a new one at the back. Bounded: a fixed
 * table of WR_PLACES slots (16 bytes each, 1 MiB per room) in buckets of
 * GW_WR_WAYS (gw_wr_place_find). The per-IP and per-user limiters bound how
 * fast anyone can push places out.
 */
#define WR_PLACES 65536

struct gw_fair {
    gw_server_t *srv;
    /* Held by gw_fair_tick for a whole tick, and by the admin thread while it
     * drops a deleted sale's lottery (sale_reset): the draw never runs on a
     * lottery that is being emptied. Taken before mu. */
    pthread_mutex_t tick_mu;
    pthread_mutex_t mu; /* configuration writers */
    gw_fair_sale_t *sales[FAIR_MAX_SALES];
    _Atomic size_t n;
    char dir[600];
    pthread_t thread;
    bool running;
    atomic_bool stop;
    inv_worker_t *inv;
    /* fleet mode (Redis inventory): the lottery thread's own connection */
    bool fleet;
    cm_redis_url_t addr;
    inv_fleet_conn_t *rc;
    int64_t last_conf_ms, last_err_ms;
};

#define FLEET_PUSH_WAIT_MS 3000 /* the draw waits this long after the close for every gateway */
#define FLEET_LOCK_MS 15000     /* the drawer's lock, renewed while it draws */
#define FLEET_CONF_POLL_MS 500
/* A drawer whose draw stopped on a Redis error tries again after this, not at
 * every tick: each try reads every entrant back, and an error that persists
 * (a key of the wrong type, a full Redis) would have it do so 50 times a second. */
#define FLEET_DRAW_RETRY_MS 250

/*---- the pure parts: phase and draw order ----*/

gw_fair_phase_t gw_fair_phase_at(int64_t starts_at_ms, int64_t early_ms, int64_t window_ms,
                                 bool drawn, int64_t now_ms)
{
    if (window_ms <= 0)
        return now_ms < starts_at_ms ? GW_FAIR_TOO_EARLY : GW_FAIR_OPEN;
    if (now_ms < starts_at_ms - early_ms)
        return GW_FAIR_TOO_EARLY;
    if (now_ms < starts_at_ms + window_ms)
        return GW_FAIR_ENTER;
    return drawn ? GW_FAIR_OPEN : GW_FAIR_DRAWING;
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

typedef struct keyidx {
    uint64_t key;
    uint32_t idx;
} keyidx_t;

static int keyidx_cmp(const void *a, const void *b)
{
    const keyidx_t *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

void gw_fair_order(const uint64_t *keys, size_t n, uint64_t seed, uint32_t *perm)
{
    if (!n)
        return;
    keyidx_t *k = cm_xmalloc(n * sizeof(*k));
    for (size_t i = 0; i < n; i++)
        k[i] = (keyidx_t){keys[i], (uint32_t)i};
    qsort(k, n, sizeof(*k), keyidx_cmp);
    for (size_t i = 0; i < n; i++)
        perm[i] = k[i].idx;
    free(k);
    /* xoshiro256** seeded by splitmix64, rejection for the bound: the draw is
     * a function of the seed alone (docs/design.md "Fair start") */
    cm_rand_t rng;
    cm_rand_seed(&rng, seed);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)cm_rand_below(&rng, i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/*---- per-sale tables ----*/

static uint64_t hash_str(const gw_fair_sale_t *fs, const char *s)
{
    return cm_hash_sip24(&fs->secret, s, strlen(s));
}

/*
 * The Idempotency-Key as the entry log and the fleet push write it: "-" for
 * none (a token cannot be empty), and a key that is itself "-" (valid: one
 * visible character) is followed by a marker field "k", or it would come back
 * as no key. Lines and values without the marker read as before, so older
 * logs and older gateways' pushes still load (their "-" was always none).
 */
static const char *idem_out(const char *idem)
{
    return idem[0] ? idem : "-";
}

static const char *idem_mark(const char *idem)
{
    return strcmp(idem, "-") == 0 ? " k" : "";
}

/* Turns the field read back into the key: "-" without the marker is none. */
static void idem_in(char *idem, int nfields, int want, const char *mark)
{
    if (strcmp(idem, "-") == 0 && !(nfields == want && strcmp(mark, "k") == 0))
        idem[0] = '\0';
}

static void table_insert(uint32_t *t, size_t cap, uint64_t h, uint32_t idx)
{
    size_t m = cap - 1;
    for (size_t i = h & m;; i = (i + 1) & m)
        if (!t[i]) {
            t[i] = idx + 1;
            return;
        }
}

static void tables_grow(gw_fair_sale_t *fs)
{
    size_t cap = fs->tcap ? fs->tcap * 2 : 1024;
    free(fs->by_user);
    free(fs->by_id);
    fs->by_user = cm_xcalloc(cap, sizeof(uint32_t));
    fs->by_id = cm_xcalloc(cap, sizeof(uint32_t));
    fs->tcap = cap;
    for (size_t i = 0; i < fs->n; i++) {
        table_insert(fs->by_user, cap, fs->v[i].key, (uint32_t)i);
        table_insert(fs->by_id, cap, hash_str(fs, fs->v[i].order_id), (uint32_t)i);
    }
}

static entry_t *find_user(gw_fair_sale_t *fs, const char *user, uint64_t key)
{
    if (!fs->tcap)
        return NULL;
    size_t m = fs->tcap - 1;
    for (size_t i = key & m; fs->by_user[i]; i = (i + 1) & m) {
        entry_t *e = &fs->v[fs->by_user[i] - 1];
        if (e->key == key && strcmp(e->user_id, user) == 0)
            return e;
    }
    return NULL;
}

static entry_t *find_id(gw_fair_sale_t *fs, const char *order_id)
{
    if (!fs->tcap)
        return NULL;
    size_t m = fs->tcap - 1;
    for (size_t i = hash_str(fs, order_id) & m; fs->by_id[i]; i = (i + 1) & m) {
        entry_t *e = &fs->v[fs->by_id[i] - 1];
        if (strcmp(e->order_id, order_id) == 0)
            return e;
    }
    return NULL;
}

/* Adds an entry to the vector and the tables (fs->mu held or single-threaded). */
static entry_t *entry_add(gw_fair_sale_t *fs, const entry_t *e)
{
    if ((fs->n + 1) * 2 > fs->tcap)
        tables_grow(fs);
    if (fs->n == fs->cap) {
        fs->cap = fs->cap ? fs->cap * 2 : 1024;
        fs->v = cm_xrealloc(fs->v, fs->cap * sizeof(*fs->v));
    }
    entry_t *d = &fs->v[fs->n];
    *d = *e;
    table_insert(fs->by_user, fs->tcap, d->key, (uint32_t)fs->n);
    table_insert(fs->by_id, fs->tcap, hash_str(fs, d->order_id), (uint32_t)fs->n);
    fs->n++;
    return d;
}

/*---- files ----*/

static void log_path(gw_fair_t *f, const char *sale_id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.log", f->dir, sale_id);
}

static int log_open(gw_fair_t *f, gw_fair_sale_t *fs)
{
    if (fs->fd >= 0)
        return 0;
    char path[700];
    log_path(f, fs->sale_id, path, sizeof(path));
    fs->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fs->fd < 0)
        return CM_EIO;
    struct stat st;
    if (fstat(fs->fd, &st) != 0) {
        close(fs->fd);
        fs->fd = -1;
        return CM_EIO;
    }
    fs->log_len = st.st_size;
    return 0;
}

/* Appends one line (fs->mu held or single-threaded). */
static int log_line(gw_fair_sale_t *fs, const char *line, size_t len, bool sync)
{
    ssize_t w = write(fs->fd, line, len);
    if (w != (ssize_t)len) {
        /* A short write (a full disk) left part of a line: the next line
         * appended after it would be glued to it and lost at the next load,
         * though answered. Cut it off; if that fails too, no more lines. */
        if (w > 0 && ftruncate(fs->fd, fs->log_len) != 0) {
            cm_log_error("fair", "cannot cut a torn line off the entry log", "sale=%s err=%s",
                         fs->sale_id, strerror(errno));
            close(fs->fd);
            fs->fd = -1;
        }
        return CM_EIO;
    }
    fs->log_len += (off_t)len;
    if (sync && fdatasync(fs->fd) != 0)
        return CM_EIO;
    return 0;
}

/* Rewrites fair.json (tmp, fsync, rename). f->mu held. */
static int conf_save(gw_fair_t *f)
{
    json_t *arr = json_array();
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        char k0[24], k1[24];
        snprintf(k0, sizeof(k0), "%016llx", (unsigned long long)fs->secret.k0);
        snprintf(k1, sizeof(k1), "%016llx", (unsigned long long)fs->secret.k1);
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:s,s:s,s:I}", "sale_id", fs->sale_id,
                                             "window_ms", (json_int_t)atomic_load(&fs->window_ms),
                                             "early_ms", (json_int_t)atomic_load(&fs->early_ms),
                                             "k0", k0, "k1", k1, "waiting_room_rate",
                                             (json_int_t)atomic_load(&fs->wr_rate)));
    }
    json_t *root = json_pack("{s:o}", "sales", arr);
    char path[700], tmp[710];
    snprintf(path, sizeof(path), "%s/fair.json", f->srv->cfg->data_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int rc = CM_EIO;
    /* the per-sale secrets: owner only, as status.key and admin.token */
    unlink(tmp);
    int tfd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *fp = tfd >= 0 ? fdopen(tfd, "w") : NULL;
    if (!fp && tfd >= 0)
        close(tfd);
    if (fp) {
        bool ok = json_dumpf(root, fp, JSON_COMPACT) == 0 && fflush(fp) == 0 &&
                  fdatasync(fileno(fp)) == 0;
        ok = fclose(fp) == 0 && ok;
        if (ok && rename(tmp, path) == 0)
            rc = 0;
    }
    json_decref(root);
    return rc;
}

static gw_fair_sale_t *sale_new(const char *sale_id)
{
    gw_fair_sale_t *fs = cm_xcalloc(1, sizeof(*fs));
    snprintf(fs->sale_id, sizeof(fs->sale_id), "%s", sale_id);
    if (cm_hash_seed_random(&fs->wr_key) != 0) /* never fails on Linux; a fixed key still works */
        fs->wr_key = (cm_hash_key_t){0x9e3779b97f4a7c15ull, (uint64_t)(uintptr_t)fs};
    pthread_mutex_init(&fs->mu, NULL);
    pthread_mutex_init(&fs->wr_mu, NULL);
    fs->fd = -1;
    return fs;
}

static gw_fair_sale_t *slot_find(gw_fair_t *f, const char *sale_id)
{
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (strcmp(f->sales[i]->sale_id, sale_id) == 0)
            return f->sales[i];
    return NULL;
}

/*
 * Drops everything a lottery and a waiting room hold (entries, the draw, the
 * fleet flags, the places) and its entry log, and sets its window, early
 * acceptance and rate to 0: what a deleted sale leaves, so that a sale created
 * again under the id starts a new lottery. The slot itself stays (the buy path
 * reads it without a lock); with a window of 0 it is not a lottery. Caller
 * holds f->tick_mu (or is single-threaded) and f->mu; fs->mu and wr_mu are
 * taken here. Returns 0 or CM_EIO (the log could not be emptied).
 */
static int sale_reset(gw_fair_t *f, gw_fair_sale_t *fs)
{
    atomic_store(&fs->window_ms, 0);
    atomic_store(&fs->early_ms, 0);
    atomic_store(&fs->wr_rate, 0);
    pthread_mutex_lock(&fs->mu);
    free(fs->v);
    free(fs->by_user);
    free(fs->by_id);
    free(fs->perm);
    fs->v = NULL;
    fs->by_user = fs->by_id = NULL;
    fs->perm = NULL;
    fs->n = fs->cap = fs->tcap = 0;
    fs->closed = fs->seeded = fs->exhausted = false;
    fs->seed = 0;
    fs->draw_started_ms = fs->draw_done_ms = fs->draw_retry_ms = 0;
    fs->ndraw = fs->next = 0;
    fs->won_orders = fs->won_units = fs->lost = 0;
    atomic_store(&fs->drawn, false);
    atomic_store(&fs->duplicates, 0);
    fs->pushed = fs->marked = false;
    /* a new, empty log: the old lines (entries, seed, winners, end) must not load again */
    if (fs->fd >= 0)
        close(fs->fd);
    fs->fd = -1;
    char path[700];
    log_path(f, fs->sale_id, path, sizeof(path));
    int rc = unlink(path) == 0 || errno == ENOENT ? log_open(f, fs) : CM_EIO;
    pthread_mutex_unlock(&fs->mu);
    pthread_mutex_lock(&fs->wr_mu);
    if (fs->wr_places)
        memset(fs->wr_places, 0, WR_PLACES * sizeof(*fs->wr_places));
    atomic_store(&fs->wr_next, 0);
    atomic_store(&fs->wr_front_milli, 0);
    atomic_store(&fs->wr_eff_milli, 0);
    fs->wr_last_ms = 0;
    pthread_mutex_unlock(&fs->wr_mu);
    if (rc)
        cm_log_error("fair", "cannot empty the entry log of a deleted sale", "sale=%s err=%s",
                     fs->sale_id, strerror(errno));
    return rc;
}

/* Whether the lottery is past its close here (its entries pushed or drawn): a new secret from
 * the fleet then means a new lottery, not a re-key. fs->mu held. */
static bool past_close(gw_fair_sale_t *fs)
{
    return fs->closed || fs->seeded || atomic_load(&fs->drawn);
}

/* Computes the draw order of the first fs->ndraw entries from fs->seed. fs->mu held. */
static void compute_order(gw_fair_sale_t *fs)
{
    free(fs->perm);
    fs->perm = cm_xmalloc((fs->ndraw ? fs->ndraw : 1) * sizeof(uint32_t));
    uint64_t *keys = cm_xmalloc((fs->ndraw ? fs->ndraw : 1) * sizeof(uint64_t));
    for (size_t i = 0; i < fs->ndraw; i++)
        keys[i] = fs->v[i].key;
    gw_fair_order(keys, fs->ndraw, fs->seed, fs->perm);
    free(keys);
    for (size_t i = 0; i < fs->ndraw; i++)
        fs->v[fs->perm[i]].pos = (uint32_t)(i + 1);
}

/* Counts an entry of the draw as won (once). fs->mu held or single-threaded. */
static void mark_won(gw_fair_sale_t *fs, entry_t *e)
{
    if (e->state == GW_ENTRY_WON)
        return;
    e->state = GW_ENTRY_WON;
    fs->won_orders++;
    fs->won_units += e->qty;
}

/*
 * Reads one sale's entry log. Single-threaded (open).
 *
 * The log's lines: "E order user qty at idem" an entry; "D seed at n" the
 * draw's seed, written (fdatasync) before its first reserve; "W order" a
 * winner whose order is durable in the spool (written after the spool's
 * commit); "F at" the draw done, written after every winner's "W" line. A
 * finished draw thus knows its winners from its own log. A draw cut by a
 * crash (a "D" and no "F") learns them from the spool (fair_cut_winners), not
 * from the status table: that table is bounded (orders.max_known) and may
 * have evicted them, and a winner taken for an entrant would be reserved a
 * second time when the draw resumes.
 */
static void log_load(gw_fair_t *f, gw_fair_sale_t *fs, uint64_t *max_id)
{
    char path[700];
    log_path(f, fs->sale_id, path, sizeof(path));
    FILE *fp = fopen(path, "r");
    if (!fp)
        return;
    char line[512];
    bool finished = false;
    long good = 0; /* the end of the last whole line */
    while (fgets(line, sizeof(line), fp)) {
        size_t len = strlen(line);
        if (!len || line[len - 1] != '\n') {
            /* A torn last line (a crash or a full disk in its write): that
             * entry was never answered. Cut it off before lines are appended
             * again, or the next one is glued to it and lost at the next load. */
            if (feof(fp) && truncate(path, good) != 0)
                cm_log_error("fair", "cannot cut a torn line off the entry log", "sale=%s err=%s",
                             fs->sale_id, strerror(errno));
            break;
        }
        good += (long)len;
        entry_t e;
        memset(&e, 0, sizeof(e));
        unsigned qty;
        long long at, seedlo;
        unsigned long long seed;
        char mark[2] = "";
        int nf;
        if (line[0] == 'E' && (nf = sscanf(line, "E %31s %64s %u %lld %128s %1s", e.order_id,
                                           e.user_id, &qty, &at, e.idem, mark)) >= 5) {
            e.qty = qty;
            e.at_ms = at;
            idem_in(e.idem, nf, 6, mark);
            e.key = hash_str(fs, e.user_id);
            if (find_user(fs, e.user_id, e.key))
                continue;
            entry_add(fs, &e);
            uint64_t id;
            if (cm_id_parse(e.order_id, strlen(e.order_id), &id) == 0 && id > *max_id)
                *max_id = id;
        } else if (line[0] == 'D' && sscanf(line, "D %llx %lld %lld", &seed, &at, &seedlo) >= 2) {
            fs->seeded = true;
            fs->closed = true;
            fs->seed = seed;
            fs->draw_started_ms = at;
            fs->ndraw = fs->n;
        } else if (line[0] == 'W' && fs->seeded) {
            char id[INV_ORDER_ID_MAX + 1];
            entry_t *w = sscanf(line, "W %31s", id) == 1 ? find_id(fs, id) : NULL;
            if (w && w < fs->v + fs->ndraw) {
                mark_won(fs, w);
                w->wlogged = true;
            }
        } else if (line[0] == 'F' && sscanf(line, "F %lld", &at) == 1) {
            finished = true;
            fs->draw_done_ms = at;
        }
    }
    fclose(fp);
    if (!fs->seeded)
        return;
    compute_order(fs);
    /* A log written before the "W" lines: its winners are the orders the
     * status table still knows (an order it knows is one, whatever else). */
    for (size_t i = 0; i < fs->ndraw; i++)
        if (gw_orders_get(f->srv->orders, fs->v[i].order_id, NULL))
            mark_won(fs, &fs->v[i]);
    if (finished) {
        for (size_t i = 0; i < fs->ndraw; i++)
            if (fs->v[i].state != GW_ENTRY_WON) {
                fs->v[i].state = GW_ENTRY_LOST;
                fs->lost++;
            }
        fs->next = fs->ndraw;
        atomic_store(&fs->drawn, true);
    }
}

/* An order of the spool that is an entry of a cut draw: that entry won. */
static int cut_winner_one(const oq_rec_t *rec, void *ctx)
{
    gw_fair_t *f = ctx;
    if (rec->type != OQ_REC_ORDER)
        return 0;
    const oq_order_t *o = rec->order;
    gw_fair_sale_t *fs = slot_find(f, o->sale_id);
    if (!fs || !fs->seeded || atomic_load(&fs->drawn))
        return 0;
    entry_t *e = find_id(fs, o->order_id);
    if (e && e < fs->v + fs->ndraw && strcmp(e->user_id, o->user_id) == 0)
        mark_won(fs, e);
    return 0;
}

/*
 * The winners of draws cut by a crash (seeded, not finished), from the spool:
 * the draw reserves a winner and spools its order before it goes on, and the
 * memory inventory's reservations are exactly the spool's orders (it is
 * rebuilt from them at start), so an entry whose order is in the spool was
 * reserved, and the resumed draw must skip it, and one whose order is not
 * holds nothing. One more read of the spool, only after such a crash.
 * Single-threaded (open).
 */
static void fair_cut_winners(gw_fair_t *f)
{
    size_t n = atomic_load(&f->n);
    bool cut = false;
    for (size_t i = 0; i < n && !cut; i++)
        cut = f->sales[i]->seeded && !atomic_load(&f->sales[i]->drawn);
    if (!cut || !f->srv->spool)
        return;
    uint64_t t0 = cm_mono_us();
    long rc = oq_spool_scan(f->srv->spool, (oq_pos_t){0, 0}, cut_winner_one, f);
    if (rc < 0)
        cm_log_error("fair", "cannot read the spool for the winners of a cut draw", "err=%s",
                     cm_strerror((int)rc));
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        if (fs->seeded && !atomic_load(&fs->drawn))
            cm_log_info("fair", "draw cut by a restart resumes",
                        "sale=%s entrants=%zu won_orders=%llu elapsed_ms=%llu", fs->sale_id,
                        fs->ndraw, (unsigned long long)fs->won_orders,
                        (unsigned long long)((cm_mono_us() - t0) / 1000));
    }
}

/*---- open / close ----*/

static int mkdir_one(const char *p)
{
    return mkdir(p, 0755) == 0 || errno == EEXIST ? 0 : CM_EIO;
}

int gw_fair_open(gw_server_t *srv, char *errbuf, size_t errlen)
{
    gw_fair_t *f = cm_xcalloc(1, sizeof(*f));
    f->srv = srv;
    pthread_mutex_init(&f->tick_mu, NULL);
    pthread_mutex_init(&f->mu, NULL);
    snprintf(f->dir, sizeof(f->dir), "%s/fair", srv->cfg->data_dir);
    srv->fair = f;
    if (strncmp(srv->cfg->inventory, "redis", 5) == 0) {
        char why[256];
        if (cm_redis_url_parse(srv->cfg->inventory, &f->addr, why, sizeof(why)) != 0 ||
            cm_redis_url_default_password(&f->addr, srv->cfg->redis_password) != 0) {
            cm_errbuf_set(errbuf, errlen, "lottery: %s", why);
            return CM_EINVAL;
        }
        f->fleet = true;
    }
    if (mkdir_one(f->dir) != 0) {
        cm_errbuf_set(errbuf, errlen, "cannot create %s: %s", f->dir, strerror(errno));
        return CM_EIO;
    }
    char path[700];
    snprintf(path, sizeof(path), "%s/fair.json", srv->cfg->data_dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        if (access(path, F_OK) == 0) {
            cm_errbuf_set(errbuf, errlen, "%s: %s", path, jerr.text);
            return CM_EINVAL;
        }
        return 0;
    }
    uint64_t max_id = 0;
    json_t *arr = json_object_get(root, "sales"), *it;
    size_t i;
    json_array_foreach(arr, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "sale_id"));
        const char *k0 = json_string_value(json_object_get(it, "k0"));
        const char *k1 = json_string_value(json_object_get(it, "k1"));
        if (!id || !k0 || !k1 || !inv_id_valid(id, strlen(id), INV_SALE_ID_MAX) ||
            atomic_load(&f->n) == FAIR_MAX_SALES)
            continue;
        gw_fair_sale_t *fs = sale_new(id);
        atomic_init(&fs->window_ms, json_integer_value(json_object_get(it, "window_ms")));
        atomic_init(&fs->early_ms, json_integer_value(json_object_get(it, "early_ms")));
        atomic_init(&fs->wr_rate, json_integer_value(json_object_get(it, "waiting_room_rate")));
        fs->secret.k0 = strtoull(k0, NULL, 16);
        fs->secret.k1 = strtoull(k1, NULL, 16);
        log_load(f, fs, &max_id);
        if (log_open(f, fs) != 0) {
            cm_errbuf_set(errbuf, errlen, "cannot open the lottery log of sale %s in %s", id,
                          f->dir);
            json_decref(root);
            free(fs);
            return CM_EIO;
        }
        f->sales[atomic_load(&f->n)] = fs;
        atomic_fetch_add(&f->n, 1);
        if (fs->n)
            cm_log_info("fair", "lottery loaded", "sale=%s entries=%zu seeded=%d drawn=%d",
                        fs->sale_id, fs->n, fs->seeded, (int)atomic_load(&fs->drawn));
    }
    json_decref(root);
    fair_cut_winners(f);
    /* Entry ids are order ids of this node: new ids must come after them. */
    if (max_id)
        cm_id_gen_after(&srv->ids, max_id);
    return 0;
}

/* A sale whose lottery is not drawn yet, or that has a waiting room. */
static bool fair_busy(gw_fair_t *f)
{
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        if ((atomic_load(&fs->window_ms) > 0 && !atomic_load(&fs->drawn)) ||
            atomic_load(&fs->wr_rate) > 0)
            return true;
    }
    return false;
}

static void *fair_thread(void *arg)
{
    gw_server_t *srv = arg;
    gw_fair_t *f = srv->fair;
    while (!atomic_load(&f->stop)) {
        gw_fair_tick(srv);
        /* No lottery to draw and no waiting room: nothing to do at 20 ms, and
         * the fleet's lottery settings are polled every FLEET_CONF_POLL_MS
         * anyway, so 50 wakeups a second of an idle gateway buy nothing. */
        long ms = fair_busy(f) ? TICK_MS : IDLE_TICK_MS;
        struct timespec ts = {0, ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int gw_fair_start_thread(gw_server_t *srv, char *errbuf, size_t errlen)
{
    gw_fair_t *f = srv->fair;
    int rc = inv_worker_open(srv->inv, NULL, &f->inv);
    if (rc) {
        cm_errbuf_set(errbuf, errlen, "lottery inventory handle: %s", cm_strerror(rc));
        return rc;
    }
    if (pthread_create(&f->thread, NULL, fair_thread, srv) != 0) {
        cm_errbuf_set(errbuf, errlen, "cannot start the lottery thread");
        return CM_ENOMEM;
    }
    f->running = true;
    return 0;
}

void gw_fair_stop_thread(gw_server_t *srv)
{
    gw_fair_t *f = srv->fair;
    if (!f)
        return;
    if (f->running) {
        atomic_store(&f->stop, true);
        pthread_join(f->thread, NULL);
        f->running = false;
    }
    if (f->inv)
        inv_worker_close(f->inv);
    f->inv = NULL;
}

void gw_fair_close(gw_server_t *srv)
{
    gw_fair_t *f = srv->fair;
    if (!f)
        return;
    gw_fair_stop_thread(srv);
    inv_fleet_close(f->rc);
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        if (fs->fd >= 0)
            close(fs->fd);
        free(fs->v);
        free(fs->by_user);
        free(fs->by_id);
        free(fs->perm);
        free(fs->wr_places);
        pthread_mutex_destroy(&fs->mu);
        pthread_mutex_destroy(&fs->wr_mu);
        free(fs);
    }
    pthread_mutex_destroy(&f->mu);
    pthread_mutex_destroy(&f->tick_mu);
    free(f);
    srv->fair = NULL;
}

/*---- the buy path ----*/

gw_fair_sale_t *gw_fair_find(gw_fair_t *f, const char *sale_id)
{
    if (!f || !atomic_load_explicit(&f->n, memory_order_acquire))
        return NULL;
    gw_fair_sale_t *fs = slot_find(f, sale_id);
    return fs && atomic_load_explicit(&fs->window_ms, memory_order_relaxed) > 0 ? fs : NULL;
}

gw_fair_phase_t gw_fair_phase(gw_fair_sale_t *fs, int64_t starts_at_ms, int64_t now_ms)
{
    return gw_fair_phase_at(starts_at_ms, atomic_load_explicit(&fs->early_ms, memory_order_relaxed),
                            atomic_load_explicit(&fs->window_ms, memory_order_relaxed),
                            atomic_load_explicit(&fs->drawn, memory_order_acquire), now_ms);
}

int64_t gw_fair_closes_at(gw_fair_sale_t *fs, int64_t starts_at_ms)
{
    return starts_at_ms + atomic_load_explicit(&fs->window_ms, memory_order_relaxed);
}

static void ticket_of(const gw_fair_sale_t *fs, const entry_t *e, gw_fair_ticket_t *t,
                      int64_t draw_at)
{
    snprintf(t->order_id, sizeof(t->order_id), "%s", e->order_id);
    snprintf(t->sale_id, sizeof(t->sale_id), "%s", fs->sale_id);
    snprintf(t->user_id, sizeof(t->user_id), "%s", e->user_id);
    t->qty = e->qty;
    t->entered_at_ms = e->at_ms;
    t->state = e->state;
    t->position = e->pos;
    t->entrants = (uint32_t)(fs->seeded ? fs->ndraw : fs->n);
    t->draw_at_ms = draw_at;
}

int gw_fair_enter(gw_fair_sale_t *fs, gw_fair_ticket_t *t, const char *idem_key)
{
    int64_t draw_at = t->draw_at_ms;
    pthread_mutex_lock(&fs->mu);
    uint64_t key = hash_str(fs, t->user_id); /* under mu: the secret may be re-keyed */
    int rc;
    if (fs->closed) {
        rc = CM_EBUSY;
        goto out;
    }
    entry_t *e = find_user(fs, t->user_id, key);
    if (e) {
        atomic_fetch_add_explicit(&fs->duplicates, 1, memory_order_relaxed);
        ticket_of(fs, e, t, draw_at);
        rc = 1;
        goto out;
    }
    if (fs->fd < 0) {
        rc = CM_EIO;
        goto out;
    }
    entry_t ne;
    memset(&ne, 0, sizeof(ne));
    snprintf(ne.order_id, sizeof(ne.order_id), "%s", t->order_id);
    snprintf(ne.user_id, sizeof(ne.user_id), "%s", t->user_id);
    snprintf(ne.idem, sizeof(ne.idem), "%s", idem_key ? idem_key : "");
    ne.qty = t->qty;
    ne.at_ms = t->entered_at_ms;
    ne.key = key;
    char line[400];
    int len = snprintf(line, sizeof(line), "E %s %s %u %lld %s%s\n", ne.order_id, ne.user_id,
                       ne.qty, (long long)ne.at_ms, idem_out(ne.idem), idem_mark(ne.idem));
    if (log_line(fs, line, (size_t)len, false) != 0) {
        rc = CM_EIO;
        goto out;
    }
    e = entry_add(fs, &ne);
    ticket_of(fs, e, t, draw_at);
    rc = 0;
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

bool gw_fair_lookup(gw_fair_t *f, const char *order_id, gw_fair_ticket_t *out)
{
    if (!f)
        return false;
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        pthread_mutex_lock(&fs->mu);
        entry_t *e = find_id(fs, order_id);
        if (e) {
            inv_sale_t *s = inv_sale_find(f->srv->inv, fs->sale_id);
            int64_t starts = 0;
            if (s) {
                inv_sale_info_t info;
                inv_sale_snapshot(s, &info);
                starts = info.starts_at_ms;
            }
            ticket_of(fs, e, out, starts + atomic_load(&fs->window_ms));
        }
        pthread_mutex_unlock(&fs->mu);
        if (e)
            return true;
    }
    return false;
}

/*---- the draw ----*/

/*
 * Appends a "W" line for every winner of the draw that has none yet (its
 * order is durable: spooled and committed, or replayed from the spool), a
 * batch of lines per write(2). fs->mu held. Returns 0 or CM_EIO.
 */
static int log_winners(gw_fair_sale_t *fs)
{
    char buf[4096];
    size_t len = 0;
    size_t first = 0; /* winners in buf start at this index */
    for (size_t i = 0; i <= fs->ndraw; i++) {
        entry_t *e = i < fs->ndraw ? &fs->v[i] : NULL;
        bool add = e && e->state == GW_ENTRY_WON && !e->wlogged;
        if (len && (!e || (add && len + INV_ORDER_ID_MAX + 4 > sizeof(buf)))) {
            if (fs->fd < 0 || log_line(fs, buf, len, false) != 0)
                return CM_EIO;
            for (size_t j = first; j < i; j++)
                if (fs->v[j].state == GW_ENTRY_WON)
                    fs->v[j].wlogged = true;
            len = 0;
        }
        if (add) {
            if (!len)
                first = i;
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "W %s\n", e->order_id);
        }
    }
    return 0;
}

/* Allocates stock in draw order from fs->next on. Lottery thread. */
static void run_draw(gw_fair_t *f, gw_fair_sale_t *fs)
{
    gw_server_t *srv = f->srv;
    pthread_mutex_lock(&fs->mu);
    if (!fs->seeded) {
        cm_hash_key_t rnd;
        if (cm_hash_seed_random(&rnd) != 0 || log_open(f, fs) != 0) {
            pthread_mutex_unlock(&fs->mu);
            return;
        }
        fs->closed = true;
        fs->seed = rnd.k0 ^ rotl(rnd.k1, 32);
        fs->ndraw = fs->n;
        fs->draw_started_ms = cm_wall_ms();
        char line[96];
        int len = snprintf(line, sizeof(line), "D %016llx %lld %zu\n",
                           (unsigned long long)fs->seed, (long long)fs->draw_started_ms,
                           fs->ndraw);
        if (log_line(fs, line, (size_t)len, true) != 0) {
            cm_log_error("fair", "cannot record the draw seed", "sale=%s", fs->sale_id);
            fs->closed = false; /* nothing decided: try again */
            pthread_mutex_unlock(&fs->mu);
            return;
        }
        fs->seeded = true;
        compute_order(fs);
    }
    pthread_mutex_unlock(&fs->mu);

    inv_sale_t *sale = inv_sale_find(srv->inv, fs->sale_id);
    oq_order_t *won = cm_xmalloc(sizeof(*won) * 256);
    size_t nwon = 0, capwon = 256;
    bool failed = false;
    int64_t now = cm_wall_ms();
    while (fs->next < fs->ndraw) {
        entry_t *e = &fs->v[fs->perm[fs->next]]; /* the vector no longer grows: closed */
        uint8_t st = e->state;
        if (st == GW_ENTRY_ENTERED && !fs->exhausted && sale) {
            inv_reserve_req_t rq;
            memset(&rq, 0, sizeof(rq));
            rq.sale = sale;
            snprintf(rq.user_id, sizeof(rq.user_id), "%s", e->user_id);
            snprintf(rq.idem_key, sizeof(rq.idem_key), "%s", e->idem);
            snprintf(rq.order_id, sizeof(rq.order_id), "%s", e->order_id);
            rq.qty = e->qty;
            int rc = inv_reserve(f->inv, &rq);
            if (rc < 0) {
                failed = true; /* the inventory is unreachable: resume at the next tick */
                break;
            }
            if (rc == INV_RESERVED) {
                oq_order_t o;
                gw_order_of_reserve(&o, &rq, fs->sale_id, now, srv->node_id);
                int arc = oq_spool_append(srv->spool, &o, 1);
                if (arc != 0) {
                    gw_release_unaccepted(srv, &o, "lottery winner not accepted: spool refused");
                    st = GW_ENTRY_LOST;
                } else {
                    if (nwon == capwon) {
                        capwon *= 2;
                        won = cm_xrealloc(won, sizeof(*won) * capwon);
                    }
                    won[nwon++] = o;
                    st = GW_ENTRY_WON;
                }
            } else {
                st = GW_ENTRY_LOST;
            }
            if (rq.stock_left == 0 || inv_sale_sold_out(sale))
                fs->exhausted = true;
        } else if (st == GW_ENTRY_ENTERED) {
            st = GW_ENTRY_LOST;
        }
        pthread_mutex_lock(&fs->mu);
        if (e->state == GW_ENTRY_ENTERED) {
            e->state = st;
            if (st == GW_ENTRY_WON) {
                fs->won_orders++;
                fs->won_units += e->qty;
            } else {
                fs->lost++;
            }
        }
        fs->next++;
        pthread_mutex_unlock(&fs->mu);
    }
    if (nwon) {
        int crc = oq_spool_commit(srv->spool);
        if (crc != 0) {
            /* The fdatasync failed (fsync durability): the spool cut these
             * records and refuses appends from now on, so after a restart they
             * are no orders and the entries read lost. Say so now rather than
             * "won" with an order that reads queued for ever. The units stay
             * held, as the buy path leaves those of its 503s after a failed
             * fsync (gw_buy.c, sync_after): if the cut failed too the record
             * may come back at a restart, so undersell, never oversell. */
            cm_log_error("fair", "spool fsync failed: the draw's winners are not accepted",
                         "sale=%s orders=%zu", fs->sale_id, nwon);
            pthread_mutex_lock(&fs->mu);
            for (size_t i = 0; i < nwon; i++) {
                entry_t *e = find_id(fs, won[i].order_id);
                if (e && e->state == GW_ENTRY_WON) {
                    e->state = GW_ENTRY_LOST;
                    fs->won_orders--;
                    fs->won_units -= e->qty;
                    fs->lost++;
                }
            }
            pthread_mutex_unlock(&fs->mu);
        }
        for (size_t i = 0; i < nwon && crc == 0; i++) {
            gw_orders_put(srv->orders, &won[i]);
            if (srv->workers)
                atomic_fetch_add_explicit(&srv->workers[0].ctr.accepted_units, won[i].qty,
                                          memory_order_relaxed);
        }
        if (crc == 0)
            gw_buy_relay_notify(srv);
    }
    free(won);
    if (failed)
        return;
    pthread_mutex_lock(&fs->mu);
    fs->draw_done_ms = cm_wall_ms();
    /* Every winner's "W" line, then "F": a finished draw's log names all its
     * winners. Without them all, no "F": a restart then reads the winners
     * from the spool, as after a crash in the middle of the draw. */
    if (log_winners(fs) == 0) {
        char line[64];
        int len = snprintf(line, sizeof(line), "F %lld\n", (long long)fs->draw_done_ms);
        if (log_line(fs, line, (size_t)len, true) != 0)
            cm_log_error("fair", "cannot record the end of the draw", "sale=%s", fs->sale_id);
    } else {
        cm_log_error("fair",
                     "cannot record the draw's winners; a restart reads them from the spool",
                     "sale=%s", fs->sale_id);
    }
    atomic_store_explicit(&fs->drawn, true, memory_order_release);
    pthread_mutex_unlock(&fs->mu);
    cm_log_info("fair", "draw done",
                "sale=%s entrants=%zu won_orders=%llu won_units=%llu seed=%016llx elapsed_ms=%lld",
                fs->sale_id, fs->ndraw, (unsigned long long)fs->won_orders,
                (unsigned long long)fs->won_units, (unsigned long long)fs->seed,
                (long long)(fs->draw_done_ms - fs->draw_started_ms));
}

static void fleet_conf_sync(gw_fair_t *f);
static void fleet_tick_sale(gw_fair_t *f, gw_fair_sale_t *fs, int64_t closes_ms);
static void fleet_mark(gw_fair_t *f, gw_fair_sale_t *fs);

/*---- the waiting room ----*/

gw_fair_sale_t *gw_fair_room(gw_fair_t *f, const char *sale_id)
{
    if (!f || !atomic_load_explicit(&f->n, memory_order_acquire))
        return NULL;
    gw_fair_sale_t *fs = slot_find(f, sale_id);
    return fs && atomic_load_explicit(&fs->wr_rate, memory_order_relaxed) > 0 ? fs : NULL;
}

int64_t gw_fair_room_rate(gw_fair_t *f, const char *sale_id)
{
    gw_fair_sale_t *fs = f ? slot_find(f, sale_id) : NULL;
    return fs ? atomic_load(&fs->wr_rate) : 0;
}

void gw_fair_room_view(gw_fair_sale_t *fs, gw_fair_room_view_t *out)
{
    out->admitted_through = atomic_load_explicit(&fs->wr_front_milli, memory_order_relaxed) / 1000;
    out->queued = atomic_load_explicit(&fs->wr_next, memory_order_relaxed);
    out->rate_per_s = (double)atomic_load_explicit(&fs->wr_eff_milli, memory_order_relaxed) / 1000;
}

uint64_t gw_wr_place_find(gw_wr_place_t *bucket, uint64_t tag, bool take, _Atomic uint64_t *next)
{
    gw_wr_place_t *oldest = bucket;
    for (size_t i = 0; i < GW_WR_WAYS; i++) {
        if (bucket[i].tag == tag)
            return bucket[i].pos;
        if (bucket[i].pos < oldest->pos)
            oldest = bucket + i; /* an empty slot has position 0: taken first */
    }
    if (!take)
        return 0;
    oldest->tag = tag;
    oldest->pos = atomic_fetch_add_explicit(next, 1, memory_order_relaxed) + 1;
    return oldest->pos;
}

uint64_t gw_fair_room_join(gw_fair_sale_t *fs, const char *user_id, size_t len, bool take)
{
    uint64_t tag = cm_hash_sip24(&fs->wr_key, user_id, len) | 1;
    size_t b = (size_t)(tag >> 32) & (WR_PLACES - GW_WR_WAYS);
    uint64_t pos = 0;
    pthread_mutex_lock(&fs->wr_mu);
    if (!fs->wr_places && take)
        fs->wr_places = cm_xcalloc(WR_PLACES, sizeof(*fs->wr_places));
    gw_wr_place_t *places = fs->wr_places;
    if (places)
        pos = gw_wr_place_find(places + b, tag, take, &fs->wr_next);
    pthread_mutex_unlock(&fs->wr_mu);
    return pos;
}

/*
 * Advances the admission front of every waiting room: the configured rate,
 * scaled by the overload controller (level 1 halves it, 2 quarters it, 3
 * stops admissions; times the share of users it admits), capped by what the
 * Redis limit lets through (limit / RTT), divided among the fleet's gateways.
 * The front never runs more than a second of admissions ahead of the queue,
 * so an idle room does not bank a burst. Lottery thread.
 */
static void rooms_tick(gw_fair_t *f, int64_t now)
{
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    bool any = false;
    for (size_t i = 0; i < n && !any; i++)
        any = atomic_load(&f->sales[i]->wr_rate) > 0;
    if (!any)
        return;
    gw_ol_snapshot_t *snap = cm_xcalloc(1, sizeof(*snap));
    gw_overload_snapshot(f->srv, snap);
    double factor = snap->level <= 0 ? 1.0 : snap->level == 1 ? 0.5 : snap->level == 2 ? 0.25 : 0;
    if (snap->buy_admit_pct < 100)
        factor *= snap->buy_admit_pct / 100.0;
    double cap = -1;
    for (unsigned d = 0; d < snap->ndeps; d++)
        if (snap->deps[d].active && strcmp(snap->deps[d].name, "redis") == 0 &&
            snap->deps[d].rtt_us > 0)
            cap = snap->deps[d].limit * 1e6 / (double)snap->deps[d].rtt_us;
    free(snap);
    uint32_t members = gw_fleet_members(f->srv);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        int64_t rate = atomic_load(&fs->wr_rate);
        int64_t dt = fs->wr_last_ms ? now - fs->wr_last_ms : 0;
        fs->wr_last_ms = now;
        if (rate <= 0)
            continue;
        inv_sale_t *s = inv_sale_find(f->srv->inv, fs->sale_id);
        inv_sale_info_t info = {0};
        if (s)
            inv_sale_snapshot(s, &info);
        double eff = (double)rate * factor / members;
        if (cap >= 0 && eff > cap)
            eff = cap;
        atomic_store(&fs->wr_eff_milli, (uint64_t)(eff * 1000));
        if (!s || (info.starts_at_ms && now < info.starts_at_ms) || dt <= 0)
            continue; /* admissions start with the sale */
        uint64_t front = atomic_load(&fs->wr_front_milli) + (uint64_t)(eff * (double)dt);
        uint64_t ahead = (atomic_load(&fs->wr_next) + (uint64_t)eff) * 1000;
        atomic_store(&fs->wr_front_milli, front < ahead ? front : ahead);
    }
}

static void fair_tick_locked(gw_server_t *srv, gw_fair_t *f);

void gw_fair_tick(gw_server_t *srv)
{
    gw_fair_t *f = srv->fair;
    if (!f)
        return;
    pthread_mutex_lock(&f->tick_mu);
    fair_tick_locked(srv, f);
    pthread_mutex_unlock(&f->tick_mu);
}

static void fair_tick_locked(gw_server_t *srv, gw_fair_t *f)
{
    if (f->fleet && cm_wall_ms() - f->last_conf_ms >= FLEET_CONF_POLL_MS) {
        f->last_conf_ms = cm_wall_ms();
        fleet_conf_sync(f);
    }
    rooms_tick(f, cm_wall_ms());
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        if (atomic_load(&fs->drawn) || atomic_load(&fs->window_ms) <= 0)
            continue;
        if (f->fleet && !fs->marked)
            fleet_mark(f, fs);
        inv_sale_t *s = inv_sale_find(srv->inv, fs->sale_id);
        if (!s)
            continue;
        inv_sale_info_t info;
        inv_sale_snapshot(s, &info);
        int64_t closes = info.starts_at_ms + atomic_load(&fs->window_ms);
        if (cm_wall_ms() < closes)
            continue;
        if (f->fleet)
            fleet_tick_sale(f, fs, closes);
        else
            run_draw(f, fs);
    }
}

/*---- the fleet: one draw per sale over every gateway's entries ----*/

/* A lottery that took entries and has not drawn yet: its window may not move. */
static bool undrawn_entries(gw_fair_sale_t *fs)
{
    pthread_mutex_lock(&fs->mu);
    bool busy = fs->n > 0 && !atomic_load(&fs->drawn);
    pthread_mutex_unlock(&fs->mu);
    return busy;
}

static int busy_refusal(const char *sale_id, char *errbuf, size_t errlen)
{
    cm_errbuf_set(errbuf, errlen,
                  "the lottery of sale %s has entries and no draw yet: its window cannot "
                  "change now",
                  sale_id);
    return CM_EINVAL;
}

static int conf_apply_locked(gw_fair_t *f, const char *sale_id, int64_t window_ms,
                             int64_t early_ms, int64_t wr_rate, const cm_hash_key_t *secret,
                             bool refuse_busy, char *errbuf, size_t errlen);
/*
 * Why this design: entries are taken where they arrive, logged locally, and
 * reach Redis in one pipelined batch per gateway when the window closes, so
 * the busiest second of the sale costs no Redis round trip per entry. Then
 * one gateway (SET NX lock, renewed while it works) freezes the entrant set
 * (RENAMENX, so a late push cannot change a draw in progress), records the
 * seed once (SET NX: a drawer that dies is resumed by another with the same
 * seed and so the same order), and admits entries in draw order through the
 * inventory's own atomic step (the per-user limit and stock stay exact) and
 * its own spool, recording each winner. Every gateway then recomputes the
 * order from the entrants, the seed and the shared secret, and answers for
 * every entry. The alternative, a draw per gateway over a leased share of
 * the stock, would make a user's chance depend on which gateway the load
 * balancer picked and leave unsold shares behind busy gateways.
 *
 * Keys (one hash slot per sale): {flashgate:fair:<sale>}:e entries (user ->
 * "order_id qty idem node"), :drawn the frozen entrants, :pushed gateways
 * that pushed, :lock, :seed, :won (user -> order id), :done.
 */

static void trouble(gw_fair_t *f, const char *what, const char *why)
{
    int64_t now = cm_wall_ms();
    if (now - f->last_err_ms >= 5000) {
        f->last_err_ms = now;
        cm_log_warn("fair", "redis trouble; the draw waits", "what=%s err=\"%s\"", what, why);
    }
}

static inv_fleet_conn_t *fconn(gw_fair_t *f)
{
    if (f->rc && !inv_fleet_broken(f->rc))
        return f->rc;
    inv_fleet_close(f->rc);
    char why[256] = "";
    f->rc = inv_fleet_connect(&f->addr, 2000, why, sizeof(why));
    if (!f->rc)
        trouble(f, "connect", why);
    return f->rc;
}

/*
 * After one lottery call on f->rc: true if it succeeded; else logs (a
 * transport error drops the connection, an error reply keeps it).
 */
static bool fok(gw_fair_t *f, int rc, const char *why)
{
    if (rc >= 0)
        return true;
    if (inv_fleet_broken(f->rc)) {
        trouble(f, "command", why);
        inv_fleet_close(f->rc);
        f->rc = NULL;
    } else {
        trouble(f, "reply", why);
    }
    return false;
}

/* The lottery thread (f->tick_mu held), or the admin thread holding it. */
static void conf_sync_one(void *ctx, const char *sale, const char *v)
{
    gw_fair_t *f = ctx;
    long long w = 0, e = 0, wr = 0;
    unsigned long long k0 = 0, k1 = 0;
    if (!inv_id_valid(sale, strlen(sale), INV_SALE_ID_MAX))
        return;
    bool deleted = strcmp(v, INV_LOTTERY_DELETED) == 0;
    if (!deleted && sscanf(v, "%lld %lld %llx %llx %lld", &w, &e, &k0, &k1, &wr) < 4)
        return;
    cm_hash_key_t k = {k0, k1};
    char why[160];
    pthread_mutex_lock(&f->mu);
    gw_fair_sale_t *fs = slot_find(f, sale);
    if (fs) {
        /* The sale was deleted (and maybe created again: another secret for a lottery that
         * closed here is a new lottery, since the secret is made once per lottery): what this
         * gateway holds of the old one goes. */
        pthread_mutex_lock(&fs->mu);
        bool used = past_close(fs) || fs->n > 0;
        bool stale = used && (deleted || ((k.k0 != fs->secret.k0 || k.k1 != fs->secret.k1) &&
                                          past_close(fs)));
        pthread_mutex_unlock(&fs->mu);
        bool inert = atomic_load(&fs->window_ms) == 0 && atomic_load(&fs->wr_rate) == 0;
        if (stale || (deleted && !inert)) {
            (void)sale_reset(f, fs);
            if (conf_save(f) != 0)
                cm_log_error("fair", "cannot save the lottery configuration", "sale=%s", sale);
            cm_log_info("fair", "lottery of a deleted sale dropped", "sale=%s", sale);
        }
    }
    if (!deleted)
        (void)conf_apply_locked(f, sale, w, e, wr, &k, false, why, sizeof(why));
    pthread_mutex_unlock(&f->mu);
}

void gw_fair_set_secret(gw_fair_t *f, const char *sale_id, uint64_t k0, uint64_t k1)
{
    gw_fair_sale_t *fs = slot_find(f, sale_id);
    if (!fs)
        return;
    cm_hash_key_t k = {k0, k1};
    char why[160];
    pthread_mutex_lock(&f->mu);
    (void)conf_apply_locked(f, sale_id, atomic_load(&fs->window_ms), atomic_load(&fs->early_ms),
                            atomic_load(&fs->wr_rate), &k, false, why, sizeof(why));
    pthread_mutex_unlock(&f->mu);
}

/*
 * Tells the fleet this gateway holds entries of the sale, once it has one:
 * the window can then not change through any gateway (entries stay local
 * until the close, so the one asked would not know). Lottery thread.
 */
static void fleet_mark(gw_fair_t *f, gw_fair_sale_t *fs)
{
    pthread_mutex_lock(&fs->mu);
    bool any = fs->n > 0;
    pthread_mutex_unlock(&fs->mu);
    char why[256] = "";
    if (any && fconn(f) &&
        fok(f, inv_lottery_entered_mark(f->rc, fs->sale_id, f->srv->node_id, why, sizeof(why)),
            why))
        fs->marked = true;
}

/* Reads the fleet's lottery configuration into the local table. Lottery thread. */
static void fleet_conf_sync(gw_fair_t *f)
{
    if (!fconn(f))
        return;
    char why[256] = "";
    fok(f, inv_lottery_conf_all(f->rc, conf_sync_one, f, why, sizeof(why)), why);
}

/* Pushes this gateway's entries (closing them) in one pipeline. Lottery thread. */
static bool fleet_push(gw_fair_t *f, gw_fair_sale_t *fs)
{
    inv_fleet_conn_t *c = fconn(f);
    if (!c)
        return false;
    pthread_mutex_lock(&fs->mu);
    fs->closed = true;
    size_t n = fs->n, sent = 0;
    for (size_t i = 0; i < n; i++) {
        const entry_t *e = &fs->v[i];
        char val[256];
        snprintf(val, sizeof(val), "%s %u %s %u%s", e->order_id, e->qty, idem_out(e->idem),
                 f->srv->node_id, idem_mark(e->idem));
        if (inv_lottery_push_add(c, fs->sale_id, e->user_id, val) == 0)
            sent++;
    }
    pthread_mutex_unlock(&fs->mu);
    char why[256] = "";
    int rc = inv_lottery_push_finish(c, fs->sale_id, f->srv->node_id, sent, sent == n, why,
                                     sizeof(why));
    if (rc < 0) {
        trouble(f, "push", why);
        inv_fleet_close(f->rc);
        f->rc = NULL;
        return false;
    }
    bool ok = rc == 1;
    fs->pushed = ok;
    if (ok)
        cm_log_info("fair", "entries pushed to the fleet", "sale=%s entries=%zu", fs->sale_id, n);
    return ok;
}

/* The frozen entrants, the seed and the winners, as every gateway reads them. */
typedef struct fleet_draw {
    entry_t *all;
    size_t n;
    uint64_t seed;
    bool seeded;
    uint32_t *perm;
    char **won; /* sorted user ids of recorded winners */
    size_t nwon;
    /* sorted user ids drawn and reserved whose order the drawer's spool refused
     * (:won value INV_LOTTERY_NOT_ACCEPTED): given back, not winners, not drawn again */
    char **refused;
    size_t nrefused;
} fleet_draw_t;

static void fleet_draw_free(fleet_draw_t *d)
{
    free(d->all);
    free(d->perm);
    for (size_t i = 0; i < d->nwon; i++)
        free(d->won[i]);
    free(d->won);
    for (size_t i = 0; i < d->nrefused; i++)
        free(d->refused[i]);
    free(d->refused);
    memset(d, 0, sizeof(*d));
}

static int strp_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool fleet_won(const fleet_draw_t *d, const char *user)
{
    return d->nwon && bsearch(&user, d->won, d->nwon, sizeof(char *), strp_cmp) != NULL;
}

static bool fleet_refused(const fleet_draw_t *d, const char *user)
{
    return d->nrefused &&
           bsearch(&user, d->refused, d->nrefused, sizeof(char *), strp_cmp) != NULL;
}

typedef struct read_ctx {
    cm_hash_key_t secret; /* fs->secret, copied under fs->mu */
    fleet_draw_t *d;
    size_t cap, cap_refused;
} read_ctx_t;

static void read_entrant(void *ctx, const char *user, const char *v)
{
    read_ctx_t *x = ctx;
    fleet_draw_t *d = x->d;
    if (d->n == x->cap) {
        x->cap *= 2;
        d->all = cm_xrealloc(d->all, x->cap * sizeof(entry_t));
    }
    entry_t *e = &d->all[d->n];
    memset(e, 0, sizeof(*e));
    unsigned qty, node;
    char mark[2] = "";
    int nf = strlen(user) > INV_USER_ID_MAX
                 ? 0
                 : sscanf(v, "%31s %u %128s %u %1s", e->order_id, &qty, e->idem, &node, mark);
    if (nf < 4)
        return;
    snprintf(e->user_id, sizeof(e->user_id), "%s", user);
    idem_in(e->idem, nf, 5, mark);
    e->qty = qty;
    e->key = cm_hash_sip24(&x->secret, user, strlen(user));
    d->n++;
}

static void read_winner(void *ctx, const char *user, const char *order)
{
    read_ctx_t *x = ctx;
    fleet_draw_t *d = x->d;
    if (strcmp(order, INV_LOTTERY_NOT_ACCEPTED) == 0) {
        if (d->nrefused == x->cap_refused) {
            x->cap_refused = x->cap_refused ? x->cap_refused * 2 : 16;
            d->refused = cm_xrealloc(d->refused, x->cap_refused * sizeof(char *));
        }
        d->refused[d->nrefused++] = cm_xstrdup(user);
        return;
    }
    if (d->nwon == x->cap) {
        x->cap *= 2;
        d->won = cm_xrealloc(d->won, x->cap * sizeof(char *));
    }
    d->won[d->nwon++] = cm_xstrdup(user);
}

/* Reads the draw's state. with_won: also the winners. Returns false on a Redis problem. */
static bool fleet_read(gw_fair_t *f, gw_fair_sale_t *fs, fleet_draw_t *d, bool with_won)
{
    memset(d, 0, sizeof(*d));
    if (!fconn(f))
        return false;
    char why[256] = "";
    read_ctx_t x = {.d = d, .cap = 64};
    pthread_mutex_lock(&fs->mu);
    x.secret = fs->secret;
    pthread_mutex_unlock(&fs->mu);
    d->all = cm_xcalloc(x.cap, sizeof(entry_t));
    if (!fok(f, inv_lottery_entrants(f->rc, fs->sale_id, read_entrant, &x, why, sizeof(why)),
             why) ||
        !fok(f, inv_lottery_seed_get(f->rc, fs->sale_id, &d->seed, &d->seeded, why, sizeof(why)),
             why)) {
        fleet_draw_free(d);
        return false;
    }
    if (with_won) {
        x.cap = 64;
        d->won = cm_xcalloc(x.cap, sizeof(char *));
        if (!fok(f, inv_lottery_winners(f->rc, fs->sale_id, read_winner, &x, why, sizeof(why)),
                 why)) {
            fleet_draw_free(d);
            return false;
        }
        qsort(d->won, d->nwon, sizeof(char *), strp_cmp);
        if (d->nrefused)
            qsort(d->refused, d->nrefused, sizeof(char *), strp_cmp);
    }
    if (d->seeded) {
        d->perm = cm_xmalloc((d->n ? d->n : 1) * sizeof(uint32_t));
        uint64_t *keys = cm_xmalloc((d->n ? d->n : 1) * sizeof(uint64_t));
        for (size_t i = 0; i < d->n; i++)
            keys[i] = d->all[i].key;
        gw_fair_order(keys, d->n, d->seed, d->perm);
        free(keys);
    }
    return true;
}

/* After the draw: every gateway learns every entry's position and outcome. */
static void fleet_fetch(gw_fair_t *f, gw_fair_sale_t *fs)
{
    fleet_draw_t d;
    if (!fleet_read(f, fs, &d, true))
        return;
    if (!d.seeded) {
        fleet_draw_free(&d);
        return;
    }
    pthread_mutex_lock(&fs->mu);
    uint32_t *perm = cm_xmalloc((d.n ? d.n : 1) * sizeof(uint32_t));
    fs->won_orders = fs->won_units = fs->lost = 0;
    for (size_t pos = 0; pos < d.n; pos++) {
        entry_t *src = &d.all[d.perm[pos]];
        uint8_t st = fleet_won(&d, src->user_id) ? GW_ENTRY_WON : GW_ENTRY_LOST;
        entry_t *e = find_user(fs, src->user_id, src->key);
        if (e && strcmp(e->order_id, src->order_id) != 0) {
            /* this user's entry through another gateway is the one drawn */
            e->state = GW_ENTRY_LOST;
            e->pos = 0;
            e = find_id(fs, src->order_id);
        }
        if (!e) {
            entry_t ne = *src;
            e = entry_add(fs, &ne);
        }
        e->state = st;
        e->pos = (uint32_t)(pos + 1);
        perm[pos] = (uint32_t)(e - fs->v);
        if (st == GW_ENTRY_WON) {
            fs->won_orders++;
            fs->won_units += e->qty;
        } else {
            fs->lost++;
        }
    }
    for (size_t i = 0; i < fs->n; i++)
        if (fs->v[i].state == GW_ENTRY_ENTERED) /* pushed too late for the draw */
            fs->v[i].state = GW_ENTRY_LOST;
    free(fs->perm);
    fs->perm = perm;
    fs->ndraw = fs->next = d.n;
    fs->seed = d.seed;
    fs->seeded = true;
    fs->closed = true;
    if (!fs->draw_done_ms)
        fs->draw_done_ms = cm_wall_ms();
    atomic_store_explicit(&fs->drawn, true, memory_order_release);
    pthread_mutex_unlock(&fs->mu);
    cm_log_info("fair", "fleet draw known", "sale=%s entrants=%zu won_orders=%llu seed=%016llx",
                fs->sale_id, d.n, (unsigned long long)fs->won_orders,
                (unsigned long long)d.seed);
    fleet_draw_free(&d);
}

/* The drawer: holds the lock. Lottery thread. */
/* The fleet's draw by the lock's holder; true when it is done (:done set). */
static bool fleet_run_draw(gw_fair_t *f, gw_fair_sale_t *fs)
{
    gw_server_t *srv = f->srv;
    char why[256] = "";
    /* freeze the entrants (a no-op when a drawer before us did; an error when nobody entered) */
    inv_fleet_conn_t *c = fconn(f);
    if (!c)
        return false;
    if (inv_lottery_freeze(c, fs->sale_id) < 0) {
        inv_fleet_close(f->rc);
        f->rc = NULL;
        return false;
    }
    cm_hash_key_t rnd;
    if (cm_hash_seed_random(&rnd) != 0)
        return false;
    char seed[24];
    snprintf(seed, sizeof(seed), "%016llx", (unsigned long long)(rnd.k0 ^ rotl(rnd.k1, 32)));
    if (!fok(f, inv_lottery_seed_offer(c, fs->sale_id, seed, why, sizeof(why)), why))
        return false;
    fleet_draw_t d;
    if (!fleet_read(f, fs, &d, true) || !d.seeded) {
        if (d.all)
            fleet_draw_free(&d);
        return false;
    }
    int64_t t0 = cm_wall_ms();
    inv_sale_t *sale = inv_sale_find(srv->inv, fs->sale_id);
    bool exhausted = !sale, failed = false;
    size_t nwon = 0;
    for (size_t pos = 0; pos < d.n && !exhausted; pos++) {
        entry_t *e = &d.all[d.perm[pos]];
        if (pos % 64 == 63 && fconn(f))
            fok(f, inv_lottery_lock_renew(f->rc, fs->sale_id, FLEET_LOCK_MS, why, sizeof(why)),
                why);
        if (fleet_won(&d, e->user_id) || fleet_refused(&d, e->user_id))
            continue; /* a drawer before us admitted it (or its spool refused it) */
        inv_reserve_req_t rq;
        memset(&rq, 0, sizeof(rq));
        rq.sale = sale;
        snprintf(rq.user_id, sizeof(rq.user_id), "%s", e->user_id);
        /* a key, so a drawer that resumes after a crash finds the order, not a second one */
        if (e->idem[0])
            memcpy(rq.idem_key, e->idem, sizeof(rq.idem_key));
        else
            snprintf(rq.idem_key, sizeof(rq.idem_key), "fair-%s", e->order_id);
        snprintf(rq.order_id, sizeof(rq.order_id), "%s", e->order_id);
        rq.qty = e->qty;
        /* once per order id: reserved before and released since (a drawer
         * died between this winner's reserve and :won, and its order failed
         * or was cancelled meanwhile, which took its key with it), it is a
         * winner already, not an entrant to reserve again */
        int rc = inv_reserve_once(f->inv, &rq);
        if (rc < 0) {
            failed = true;
            break;
        }
        if (rc == INV_RESERVED_BEFORE) {
            if (!fconn(f) || !fok(f,
                                  inv_lottery_winner_put(f->rc, fs->sale_id, e->user_id,
                                                         e->order_id, why, sizeof(why)),
                                  why)) {
                failed = true;
                break;
            }
            cm_log_info("fair", "fleet draw: a winner's order was released before the resume",
                        "sale=%s order=%s", fs->sale_id, e->order_id);
            continue;
        }
        bool again = rc == INV_DUPLICATE && strcmp(rq.order_id, e->order_id) == 0;
        /* Found held (a drawer that died after its reserve, or whose spool
         * refused the order and whose give-back is still pending): claimed
         * before it is spooled, so that give-back leaves it held; given back
         * already, the next tick reserves it anew (its key is free). */
        if (again && inv_claim(f->inv, &rq) != INV_RESERVED) {
            failed = true;
            break;
        }
        if (rc == INV_RESERVED || again) {
            oq_order_t o;
            gw_order_of_reserve(&o, &rq, fs->sale_id, cm_wall_ms(), srv->node_id);
            int arc = oq_spool_append(srv->spool, &o, 1);
            if (arc != 0) {
                gw_release_unaccepted(srv, &o, "lottery winner not accepted: spool refused");
                /* Not a winner: recorded, so that a drawer that resumes does not take the
                 * order's mark (inv_reserve_once) for a winner released since. */
                if (!fconn(f) ||
                    !fok(f,
                         inv_lottery_winner_put(f->rc, fs->sale_id, e->user_id,
                                                INV_LOTTERY_NOT_ACCEPTED, why, sizeof(why)),
                         why)) {
                    failed = true;
                    break;
                }
                continue;
            }
            if (oq_spool_commit(srv->spool) != 0 || !fconn(f) ||
                !fok(f,
                     inv_lottery_winner_put(f->rc, fs->sale_id, e->user_id, e->order_id, why,
                                            sizeof(why)),
                     why)) {
                failed = true; /* spooled: a resumed draw finds it by its key */
                break;
            }
            gw_orders_put(srv->orders, &o);
            if (srv->workers)
                atomic_fetch_add_explicit(&srv->workers[0].ctr.accepted_units, o.qty,
                                          memory_order_relaxed);
            nwon++;
        }
        if (rq.stock_left == 0 || inv_sale_sold_out(sale))
            exhausted = true;
    }
    if (nwon)
        gw_buy_relay_notify(srv);
    bool done = false;
    if (!failed && fconn(f) &&
        fok(f, inv_lottery_done_set(f->rc, fs->sale_id, d.n, why, sizeof(why)), why)) {
        done = true;
        cm_log_info("fair", "fleet draw done",
                    "sale=%s entrants=%zu won_here=%zu seed=%016llx elapsed_ms=%lld",
                    fs->sale_id, d.n, nwon, (unsigned long long)d.seed,
                    (long long)(cm_wall_ms() - t0));
        pthread_mutex_lock(&fs->mu);
        fs->draw_started_ms = t0;
        pthread_mutex_unlock(&fs->mu);
    }
    fleet_draw_free(&d);
    return done;
}

/* A closed window in the fleet: push, then draw (one gateway) or learn the draw. */
static void fleet_tick_sale(gw_fair_t *f, gw_fair_sale_t *fs, int64_t closes_ms)
{
    if (!fs->pushed && !fleet_push(f, fs))
        return;
    if (!fconn(f))
        return;
    char why[256] = "";
    bool done = false;
    if (!fok(f, inv_lottery_done(f->rc, fs->sale_id, &done, why, sizeof(why)), why))
        return;
    if (done) {
        fleet_fetch(f, fs);
        return;
    }
    if (cm_wall_ms() < closes_ms + FLEET_PUSH_WAIT_MS) {
        long long pushed = -1;
        if (!fok(f, inv_lottery_pushed_count(f->rc, fs->sale_id, &pushed, why, sizeof(why)), why))
            return;
        if (pushed < (long long)gw_fleet_members(f->srv))
            return;
    }
    if (cm_wall_ms() < fs->draw_retry_ms)
        return;
    bool mine = false;
    if (!fconn(f) ||
        !fok(f, inv_lottery_lock(f->rc, fs->sale_id, f->srv->node_id, FLEET_LOCK_MS, &mine, why,
                                 sizeof(why)),
             why))
        return;
    if (mine && !fleet_run_draw(f, fs))
        fs->draw_retry_ms = cm_wall_ms() + FLEET_DRAW_RETRY_MS;
}

/*---- admin ----*/

/* Recomputes every entry's key after the secret changed (fs->mu held). */
static void rekey(gw_fair_sale_t *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        fs->v[i].key = hash_str(fs, fs->v[i].user_id);
    fs->tcap /= 2; /* tables_grow doubles it back */
    tables_grow(fs);
}

/*
 * Creates or updates a sale's lottery in the local table. secret NULL: keep
 * (or a random one for a new sale). f->mu held. Returns 0 or a cm_err_t.
 */
static int conf_apply_locked(gw_fair_t *f, const char *sale_id, int64_t window_ms,
                             int64_t early_ms, int64_t wr_rate, const cm_hash_key_t *secret,
                             bool refuse_busy, char *errbuf, size_t errlen)
{
    gw_fair_sale_t *fs = slot_find(f, sale_id);
    if (!fs && window_ms == 0 && wr_rate == 0)
        return 0; /* nothing to remove */
    bool changed = true;
    if (fs) {
        int64_t ow = atomic_load(&fs->window_ms), oe = atomic_load(&fs->early_ms);
        pthread_mutex_lock(&fs->mu);
        bool busy = fs->n > 0 && !atomic_load(&fs->drawn);
        if (refuse_busy && busy && (ow != window_ms || oe != early_ms)) {
            pthread_mutex_unlock(&fs->mu);
            return busy_refusal(sale_id, errbuf, errlen);
        }
        bool rk = secret && (secret->k0 != fs->secret.k0 || secret->k1 != fs->secret.k1);
        if (rk) {
            fs->secret = *secret;
            rekey(fs);
        }
        pthread_mutex_unlock(&fs->mu);
        changed = rk || ow != window_ms || oe != early_ms || atomic_load(&fs->wr_rate) != wr_rate;
        atomic_store(&fs->window_ms, window_ms);
        atomic_store(&fs->early_ms, early_ms);
        atomic_store(&fs->wr_rate, wr_rate);
    } else {
        if (atomic_load(&f->n) == FAIR_MAX_SALES) {
            cm_errbuf_set(errbuf, errlen, "too many sales with a lottery (max %d)",
                          FAIR_MAX_SALES);
            return CM_EINVAL;
        }
        fs = sale_new(sale_id);
        int rnd = 0;
        if (secret)
            fs->secret = *secret;
        else
            rnd = cm_hash_seed_random(&fs->secret);
        if (rnd != 0 || log_open(f, fs) != 0) {
            cm_errbuf_set(errbuf, errlen, "cannot set up the lottery of sale %s", sale_id);
            pthread_mutex_destroy(&fs->mu);
            if (fs->fd >= 0)
                close(fs->fd);
            free(fs);
            return CM_EIO;
        }
        atomic_init(&fs->window_ms, window_ms);
        atomic_init(&fs->early_ms, early_ms);
        atomic_init(&fs->wr_rate, wr_rate);
        f->sales[atomic_load(&f->n)] = fs;
        atomic_fetch_add_explicit(&f->n, 1, memory_order_release);
    }
    if (changed && conf_save(f) != 0) {
        cm_errbuf_set(errbuf, errlen, "cannot save the lottery configuration");
        return CM_EIO;
    }
    return 0;
}

/*
 * Fleet: the lottery's configuration lives in one Redis hash (sale ->
 * "window early k0 k1"); the secret is made once by the first gateway that
 * configures the sale and shared, so every gateway orders entrants alike.
 */
static int fleet_conf_put(gw_fair_t *f, const char *sale_id, int64_t window_ms, int64_t early_ms,
                          int64_t wr_rate, cm_hash_key_t *secret, char *errbuf, size_t errlen)
{
    char why[256] = "";
    inv_fleet_conn_t *c = inv_fleet_connect(&f->addr, 2000, why, sizeof(why));
    if (!c) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", why);
        return CM_EBACKEND;
    }
    int rc = CM_EBACKEND;
    char cur[256];
    bool found = false;
    unsigned long long k0, k1;
    long long w0, e0;
    if (inv_lottery_conf_get(c, sale_id, cur, sizeof(cur), &found, why, sizeof(why)) < 0)
        goto out;
    /* A sale deleted with its lottery and created again: whatever its deletion could not
     * clear goes before the new lottery is announced (a new secret, too). */
    if (found && strcmp(cur, INV_LOTTERY_DELETED) == 0 &&
        inv_lottery_clear(c, sale_id, why, sizeof(why)) != 0)
        goto out;
    if (found && sscanf(cur, "%lld %lld %llx %llx", &w0, &e0, &k0, &k1) == 4) {
        secret->k0 = k0;
        secret->k1 = k1;
    } else if (cm_hash_seed_random(secret) != 0) {
        goto out;
    }
    char val[96];
    snprintf(val, sizeof(val), "%lld %lld %016llx %016llx %lld", (long long)window_ms,
             (long long)early_ms, (unsigned long long)secret->k0, (unsigned long long)secret->k1,
             (long long)wr_rate);
    if (inv_lottery_conf_put(c, sale_id, val, why, sizeof(why)) == 0)
        rc = 0;
out:
    if (rc)
        cm_errbuf_set(errbuf, errlen, "redis: cannot store the lottery configuration");
    inv_fleet_close(c);
    return rc;
}

/* The ranges of a lottery's and a waiting room's settings. */
static int range_check(int64_t window_ms, int64_t early_ms, int64_t wr_rate, char *errbuf,
                       size_t errlen)
{
    if (window_ms < 0 || window_ms > GW_FAIR_WINDOW_MAX_MS || early_ms < 0 ||
        early_ms > GW_FAIR_EARLY_MAX_MS) {
        cm_errbuf_set(errbuf, errlen, "fair_window_ms must be 0..%d and fair_early_ms 0..%d",
                      GW_FAIR_WINDOW_MAX_MS, GW_FAIR_EARLY_MAX_MS);
        return CM_EINVAL;
    }
    if (wr_rate < 0 || wr_rate > GW_WR_RATE_MAX) {
        cm_errbuf_set(errbuf, errlen, "waiting_room_rate must be 0..%d", GW_WR_RATE_MAX);
        return CM_EINVAL;
    }
    return 0;
}

/* Whether this gateway knows the sale's lottery drawn (or drawing: seeded). */
static bool drawn_here(gw_fair_sale_t *fs)
{
    if (atomic_load(&fs->drawn))
        return true;
    pthread_mutex_lock(&fs->mu);
    bool seeded = fs->seeded;
    pthread_mutex_unlock(&fs->mu);
    return seeded;
}

static int drawn_refusal(const char *sale_id, char *errbuf, size_t errlen)
{
    cm_errbuf_set(errbuf, errlen,
                  "the start-window lottery of sale %s has drawn (or is drawing), and a sale "
                  "has one draw: its window cannot change or open again (units freed since go "
                  "first-come; a new lottery needs a new sale)",
                  sale_id);
    return CM_ECONFLICT;
}

/*
 * One draw per sale: once a lottery has drawn (or is drawing), a PUT may not
 * change its window or early acceptance, nor move starts_at so that the
 * window would close again in the future. The draw's record (the seed, the
 * entrants, every entry's position and outcome, GET .../draw and each entry's
 * answer) is the sale's, once: the entry log, the fleet's keys and the entry
 * ids have no round to tell a second draw from the first, and the window
 * would only have answered 503 "the draw is running" to every buy in it. In
 * a fleet the fleet's record decides (Redis :done), as a gateway learns the
 * draw a tick after it. Returns 0, CM_ECONFLICT or CM_EBACKEND.
 */
static int drawn_check(gw_fair_t *f, gw_fair_sale_t *fs, int64_t starts_at_ms, int64_t window_ms,
                       int64_t early_ms, char *errbuf, size_t errlen)
{
    bool moved = atomic_load(&fs->window_ms) != window_ms || atomic_load(&fs->early_ms) != early_ms;
    if (!moved && !(window_ms > 0 && starts_at_ms + window_ms > cm_wall_ms()))
        return 0;
    bool drawn = drawn_here(fs);
    if (!drawn && f->fleet) {
        char why[256] = "";
        inv_fleet_conn_t *c = inv_fleet_connect(&f->addr, 2000, why, sizeof(why));
        int rc = c ? inv_lottery_done(c, fs->sale_id, &drawn, why, sizeof(why)) : CM_EBACKEND;
        inv_fleet_close(c);
        if (rc) {
            cm_errbuf_set(errbuf, errlen, "redis: %s", why);
            return CM_EBACKEND;
        }
    }
    return drawn ? drawn_refusal(fs->sale_id, errbuf, errlen) : 0;
}

/*
 * Fleet: reads the sale's configuration now, as the lottery thread's next
 * poll would (conf_sync_one), so that a drawn lottery this gateway still
 * holds of a sale that another gateway deleted (and maybe created again)
 * does not refuse a PUT of the new sale. Admin thread. 0 or CM_EBACKEND.
 */
static int fleet_conf_refresh(gw_fair_t *f, const char *sale_id, char *errbuf, size_t errlen)
{
    char why[256] = "", cur[256];
    bool found = false;
    inv_fleet_conn_t *c = inv_fleet_connect(&f->addr, 2000, why, sizeof(why));
    int rc = c ? inv_lottery_conf_get(c, sale_id, cur, sizeof(cur), &found, why, sizeof(why))
               : CM_EBACKEND;
    inv_fleet_close(c);
    if (rc) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", why);
        return CM_EBACKEND;
    }
    if (found) {
        pthread_mutex_lock(&f->tick_mu);
        conf_sync_one(f, sale_id, cur);
        pthread_mutex_unlock(&f->tick_mu);
    }
    return 0;
}

int gw_fair_configure_check(gw_server_t *srv, const char *sale_id, int64_t starts_at_ms,
                            int64_t window_ms, int64_t early_ms, int64_t wr_rate, char *errbuf,
                            size_t errlen)
{
    gw_fair_t *f = srv->fair;
    int rc = range_check(window_ms, early_ms, wr_rate, errbuf, errlen);
    if (rc)
        return rc;
    gw_fair_sale_t *fs = slot_find(f, sale_id);
    if (fs && f->fleet && drawn_here(fs) &&
        (rc = fleet_conf_refresh(f, sale_id, errbuf, errlen)) != 0)
        return rc;
    if (!fs && (window_ms || wr_rate) && atomic_load(&f->n) == FAIR_MAX_SALES) {
        cm_errbuf_set(errbuf, errlen, "too many sales with a lottery (max %d)", FAIR_MAX_SALES);
        return CM_EINVAL;
    }
    if (fs && (rc = drawn_check(f, fs, starts_at_ms, window_ms, early_ms, errbuf, errlen)) != 0)
        return rc;
    if (fs ? atomic_load(&fs->window_ms) == window_ms && atomic_load(&fs->early_ms) == early_ms
           : window_ms == 0)
        return 0;
    bool busy = fs && undrawn_entries(fs);
    if (!busy && f->fleet) {
        /* Other gateways keep their entries until the close: ask the fleet. */
        char why[256] = "";
        inv_fleet_conn_t *c = inv_fleet_connect(&f->addr, 2000, why, sizeof(why));
        rc = c ? inv_lottery_entered(c, sale_id, &busy, why, sizeof(why)) : CM_EBACKEND;
        inv_fleet_close(c);
        if (rc) {
            cm_errbuf_set(errbuf, errlen, "redis: %s", why);
            return CM_EBACKEND;
        }
    }
    return busy ? busy_refusal(sale_id, errbuf, errlen) : 0;
}

int gw_fair_configure(gw_server_t *srv, const char *sale_id, int64_t window_ms, int64_t early_ms,
                      int64_t wr_rate, char *errbuf, size_t errlen)
{
    gw_fair_t *f = srv->fair;
    int rc = range_check(window_ms, early_ms, wr_rate, errbuf, errlen);
    if (rc)
        return rc;
    gw_fair_sale_t *fs = slot_find(f, sale_id);
    if (fs && drawn_here(fs) &&
        (atomic_load(&fs->window_ms) != window_ms || atomic_load(&fs->early_ms) != early_ms))
        return drawn_refusal(sale_id, errbuf, errlen); /* one draw per sale (drawn_check) */
    cm_hash_key_t secret;
    bool have_secret = false;
    if (f->fleet) {
        int64_t w0 = 0, e0 = 0;
        gw_fair_conf_get(f, sale_id, &w0, &e0);
        gw_fair_sale_t *fs0 = slot_find(f, sale_id);
        if (window_ms == 0 && w0 == 0 && wr_rate == 0 && !fs0)
            return 0;
        if (fs0 && (w0 != window_ms || e0 != early_ms)) {
            /* refused before the fleet hears of it (conf_apply_locked checks again) */
            if (undrawn_entries(fs0))
                return busy_refusal(sale_id, errbuf, errlen);
        }
        rc = fleet_conf_put(f, sale_id, window_ms, early_ms, wr_rate, &secret, errbuf, errlen);
        if (rc)
            return rc;
        have_secret = true;
    }
    pthread_mutex_lock(&f->mu);
    rc = conf_apply_locked(f, sale_id, window_ms, early_ms, wr_rate,
                               have_secret ? &secret : NULL, true, errbuf, errlen);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int gw_fair_sale_deleted(gw_server_t *srv, const char *sale_id, bool sale_gone, char *errbuf,
                         size_t errlen)
{
    gw_fair_t *f = srv->fair;
    if (!f)
        return sale_gone ? CM_ENOTFOUND : 0;
    gw_fair_sale_t *fs = slot_find(f, sale_id);
    bool here = false;
    if (fs) {
        pthread_mutex_lock(&fs->mu);
        here = fs->n > 0 || past_close(fs);
        pthread_mutex_unlock(&fs->mu);
        here = here || atomic_load(&fs->window_ms) > 0 || atomic_load(&fs->wr_rate) > 0;
    }
    bool fleet_has = false;
    if (f->fleet) {
        char why[256] = "", cur[256];
        bool found = false;
        inv_fleet_conn_t *c = inv_fleet_connect(&f->addr, 2000, why, sizeof(why));
        int rc = c ? inv_lottery_conf_get(c, sale_id, cur, sizeof(cur), &found, why, sizeof(why))
                   : CM_EBACKEND;
        fleet_has = rc == 0 && found && strcmp(cur, INV_LOTTERY_DELETED) != 0;
        /* Whenever the fleet may hold something of it: the tombstone first (every gateway
         * drops its own record; a new sale under the id clears what is left), then every
         * key of the lottery at once. For a sale gone already the fleet's record decides
         * (a gateway's own copy of a lottery tombstoned already goes at its next poll). */
        if (sale_gone)
            here = false;
        if (rc == 0 && (fleet_has || !sale_gone)) {
            if (found || here)
                rc = inv_lottery_conf_put(c, sale_id, INV_LOTTERY_DELETED, why, sizeof(why));
            if (rc == 0)
                rc = inv_lottery_clear(c, sale_id, why, sizeof(why));
        }
        inv_fleet_close(c);
        if (rc) {
            cm_errbuf_set(errbuf, errlen, "redis: %s", why);
            return CM_EBACKEND;
        }
    }
    if (sale_gone && !here && !fleet_has)
        return CM_ENOTFOUND;
    if (fs) {
        pthread_mutex_lock(&f->tick_mu);
        pthread_mutex_lock(&f->mu);
        int rc = sale_reset(f, fs);
        if (conf_save(f) != 0)
            rc = CM_EIO;
        pthread_mutex_unlock(&f->mu);
        pthread_mutex_unlock(&f->tick_mu);
        if (rc) {
            cm_errbuf_set(errbuf, errlen, "cannot drop the lottery of sale %s in %s", sale_id,
                          f->dir);
            return rc;
        }
    }
    if (here || fleet_has)
        cm_log_info("fair", "lottery of a deleted sale dropped", "sale=%s", sale_id);
    return 0;
}

void gw_fair_conf_get(gw_fair_t *f, const char *sale_id, int64_t *window_ms, int64_t *early_ms)
{
    *window_ms = *early_ms = 0;
    gw_fair_sale_t *fs = f ? slot_find(f, sale_id) : NULL;
    if (fs) {
        *window_ms = atomic_load(&fs->window_ms);
        *early_ms = atomic_load(&fs->early_ms);
    }
}

static const char *const entry_state_names[GW_ENTRY_STATE_COUNT] = {
#define XX(n, s) [GW_ENTRY_##n] = s,
    GW_ENTRY_STATES(XX)
#undef XX
};

const char *gw_entry_state_name(gw_entry_state_t s)
{
    return (unsigned)s < GW_ENTRY_STATE_COUNT ? entry_state_names[s] : "entered";
}

void *gw_fair_draw_json(gw_fair_t *f, const char *sale_id)
{
    gw_fair_sale_t *fs = f ? slot_find(f, sale_id) : NULL;
    if (!fs)
        return NULL;
    pthread_mutex_lock(&fs->mu);
    json_t *list = json_array();
    size_t n = fs->seeded ? fs->ndraw : fs->n;
    for (size_t i = 0; i < n; i++) {
        const entry_t *e = &fs->v[fs->seeded ? fs->perm[i] : i];
        json_array_append_new(list, json_pack("{s:i,s:s,s:s,s:i,s:s}", "position",
                                              (int)e->pos, "order_id", e->order_id, "user_id",
                                              e->user_id, "qty", (int)e->qty, "outcome",
                                              gw_entry_state_name((gw_entry_state_t)e->state)));
    }
    char seed[24] = "";
    if (fs->seeded)
        snprintf(seed, sizeof(seed), "%016llx", (unsigned long long)fs->seed);
    bool drawn = atomic_load(&fs->drawn);
    json_t *o = json_pack(
        "{s:s,s:I,s:I,s:s,s:s?,s:I,s:I,s:I,s:I,s:I,s:o}", "sale_id", fs->sale_id,
        "fair_window_ms", (json_int_t)atomic_load(&fs->window_ms), "fair_early_ms",
        (json_int_t)atomic_load(&fs->early_ms), "state",
        drawn ? "drawn" : fs->seeded ? "drawing" : "open", "seed", fs->seeded ? seed : NULL,
        "entrants", (json_int_t)n, "duplicates", (json_int_t)atomic_load(&fs->duplicates),
        "won_orders", (json_int_t)fs->won_orders, "won_units", (json_int_t)fs->won_units, "lost",
        (json_int_t)fs->lost, "entries", list);
    if (fs->draw_started_ms) {
        char t[40];
        cm_time_format_rfc3339(fs->draw_started_ms, t, sizeof(t));
        json_object_set_new(o, "drawn_at", json_string(t));
    }
    pthread_mutex_unlock(&fs->mu);
    return o;
}

void gw_fair_stats(gw_fair_t *f, void *json_obj)
{
    if (!f)
        return;
    json_t *o = json_object();
    uint64_t entries = 0, dups = 0, won = 0, lost = 0;
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        pthread_mutex_lock(&fs->mu);
        entries += fs->n;
        won += fs->won_orders;
        lost += fs->lost;
        pthread_mutex_unlock(&fs->mu);
        dups += atomic_load(&fs->duplicates);
    }
    json_object_set_new(o, "sales", json_integer((json_int_t)n));
    json_object_set_new(o, "entries", json_integer((json_int_t)entries));
    json_object_set_new(o, "duplicate_entries", json_integer((json_int_t)dups));
    json_object_set_new(o, "won_orders", json_integer((json_int_t)won));
    json_object_set_new(o, "lost", json_integer((json_int_t)lost));
    json_object_set_new(json_obj, "fair", o);
}
