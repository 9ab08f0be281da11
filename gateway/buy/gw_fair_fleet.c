/*
 * Fair start: the fleet's draw, one draw per sale over every gateway's
 * entries, and the rest of the lottery's Redis store but the leftovers'
 * (gw_waitlist_fleet.c; the store's ops in gw_fair_store.c; see gw_fair.h for
 * the rules). The design and why (entries local until the close, one drawer
 * under a lock, the seed recorded once, no draw per gateway over a leased
 * share), and the keys: docs/fleet.md.
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_core.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_smap.h"
#include "common/cm_time.h"
#include "common/cm_url.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_elig_backend.h"
#include "inventory/inv_fleet.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLEET_PUSH_WAIT_MS 3000 /* the draw waits this long after the close for every gateway */
#define FLEET_LOCK_MS 15000     /* the drawer's lock, renewed while it draws */
#define FLEET_DRAW_RETRY_MS 250 /* a drawer's next try after a failed one (fleet_end) */
/* The worker loops' pool keeps a connection per worker and this many more, ... */
#define GW_FAIR_LOOP_POOL_EXTRA 2
/* ... at most this many (server.threads is at most 64; 0 means one per CPU). */
#define GW_FAIR_LOOP_POOL_MAX 66
/* The other threads' pool (the lottery thread, the admin's threads) and its timeout. */
#define GW_FAIR_POOL_SIZE 8
#define GW_FAIR_POOL_TIMEOUT_MS 2000

static void trouble(gw_fair_t *f, const char *what, const char *why)
{
    int64_t now = cm_wall_ms();
    if (now - f->last_err_ms >= 5000) {
        f->last_err_ms = now;
        cm_log_warn("fair", "redis trouble; the draw waits", "what=%s err=\"%s\"", what, why);
    }
}

/* A transport failure on the lottery thread's connection: logged, and the connection
 * dropped (gw_fair__fleet_conn connects again). */
static void fleet_broke(gw_fair_t *f, const char *what, const char *why)
{
    trouble(f, what, why);
    inv_fleet_close(f->rc);
    f->rc = NULL;
}

inv_fleet_conn_t *gw_fair__fleet_conn(gw_fair_t *f)
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

bool gw_fair__fleet_ok(gw_fair_t *f, int rc, const char *why)
{
    if (rc >= 0)
        return true;
    if (!f->rc)
        return false; /* no connection to call on: gw_fair__fleet_conn said why */
    if (inv_fleet_broken(f->rc))
        fleet_broke(f, "command", why);
    else
        trouble(f, "reply", why);
    return false;
}

/* The lottery thread's call fn(connection, ..., why, sizeof(why)) on gw_fair__fleet_conn's
 * connection: true if it succeeded, else false as gw_fair__fleet_ok says (why: the caller's
 * char array). */
#define FLEET_CALL(f, why, fn, ...)                                                                \
    (gw_fair__fleet_conn(f) &&                                                                     \
     gw_fair__fleet_ok((f), fn((f)->rc, __VA_ARGS__, (why), sizeof(why)), (why)))

/* The lottery thread (f->tick_mu held), or the admin thread holding it. */
static void conf_sync_one(void *ctx, const char *sale, const char *v)
{
    gw_fair_t *f = ctx;
    long long w = 0, e = 0, wr = 0;
    unsigned long long k0 = 0, k1 = 0, gen = 0;
    if (strncmp(sale, GW_FAIR_REDIS_ELIG_PREFIX, strlen(GW_FAIR_REDIS_ELIG_PREFIX)) == 0) {
        gw_elig_fleet_apply(f->srv, sale, v); /* a sale's eligibility rule (gw_elig_fleet.c) */
        return;
    }
    if (!inv_id_valid(sale, strlen(sale), INV_SALE_ID_MAX))
        return;
    bool deleted = strcmp(v, GW_FAIR_REDIS_LOTTERY_DELETED) == 0;
    int nf = deleted ? 0 : sscanf(v, "%lld %lld %llx %llx %lld %llx", &w, &e, &k0, &k1, &wr, &gen);
    if (!deleted && nf < 4)
        return;
    if (nf < 6)
        gen = 0; /* a value without one: the secret alone decides, as before */
    cm_hash_key_t k = {k0, k1};
    char why[160];
    pthread_mutex_lock(&f->mu);
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale);
    if (fs) {
        fs->in_conf = true; /* not lost (gen_offers) */
        /* The sale was deleted (and maybe created again: another generation is another
         * lottery, even if this gateway was down across the tombstone; another secret for
         * a lottery that closed here too): what this gateway holds of the old one goes.
         * The same generation with another secret is the lottery put back after Redis lost
         * it: its entries are re-keyed. */
        bool other = gen && fs->lot_gen && gen != fs->lot_gen;
        pthread_mutex_lock(&fs->mu);
        bool used = gw_fair__past_close(fs) || fs->n > 0;
        bool stale =
            used && (deleted || other ||
                     ((k.k0 != fs->secret.k0 || k.k1 != fs->secret.k1) && gw_fair__past_close(fs)));
        pthread_mutex_unlock(&fs->mu);
        bool inert = atomic_load(&fs->sale.cfg.fair_window_ms) == 0 &&
                     atomic_load(&fs->sale.cfg.room_rate) == 0;
        if (stale || (deleted && !inert)) {
            (void)gw_fair__sale_reset(f, fs);
            if (gw_fair__conf_save(f) != 0)
                cm_log_error("fair", "cannot save the lottery configuration", "sale=%s", sale);
            cm_log_info("fair", "lottery of a deleted sale dropped", "sale=%s", sale);
        }
    }
    if (!deleted) {
        (void)gw_fair__conf_apply_locked(f, sale, w, e, wr, &k, gen, false, why, sizeof(why));
        gw_fair_sale_t *fr = gw_fair__slot_find(f, sale);
        if (fr) {
            gw_fair__reg_token_apply(fr, v);
            fr->in_conf = true;
            fr->gen_seen = gen && fr->lot_gen == gen; /* the fleet's lottery, this copy */
        }
    }
    pthread_mutex_unlock(&f->mu);
}

/* The poll begins: no sale found in the configuration yet (conf_sync_one). Lottery thread. */
static void conf_absent_all(gw_fair_t *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        f->sales[i]->in_conf = false;
    pthread_mutex_unlock(&f->mu);
}

/*
 * After a poll: a lottery whose generation a poll since this start found in the fleet's
 * configuration, which no longer holds the sale (Redis lost it: no tombstone, which a
 * deletion writes), offers the generation for the operator's put-back, so that a PUT
 * through a gateway that never held the lottery keeps it too (gw_fair__fleet_conf_put).
 * A copy loaded at the start and never seen in the configuration offers nothing: it may be
 * a deleted lottery's whose tombstone Redis lost with the rest. The first offer stands.
 * Lottery thread.
 */
static void gen_offers(gw_fair_t *f)
{
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        pthread_mutex_lock(&f->mu);
        uint64_t gen = !fs->in_conf && fs->gen_seen && atomic_load(&fs->sale.cfg.fair_window_ms) > 0
                           ? fs->lot_gen
                           : 0;
        pthread_mutex_unlock(&f->mu);
        char why[256] = "";
        bool taken = false;
        if (gen && FLEET_CALL(f, why, gw_fair_redis_lottery_gen_offer, fs->sale_id, gen, &taken) &&
            taken)
            cm_log_warn("fair",
                        "the fleet's configuration lost a lottery this gateway holds: its "
                        "generation offered for the sale's put-back",
                        "sale=%s lottery_gen=%016llx", fs->sale_id, (unsigned long long)gen);
    }
}

void gw_fair_set_secret(gw_fair_t *f, const char *sale_id, uint64_t k0, uint64_t k1)
{
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    if (!fs)
        return;
    cm_hash_key_t k = {k0, k1};
    char why[160];
    pthread_mutex_lock(&f->mu);
    (void)gw_fair__conf_apply_locked(f, sale_id, atomic_load(&fs->sale.cfg.fair_window_ms),
                                     atomic_load(&fs->sale.cfg.fair_early_ms),
                                     atomic_load(&fs->sale.cfg.room_rate), &k, 0, false, why,
                                     sizeof(why));
    pthread_mutex_unlock(&f->mu);
}

/* Pushes this gateway's entries (closing them) in one pipeline, keyed by person; the
 * value names the account as " @account" when it is not the person. Lottery thread. */
static bool fleet_push(gw_fair_t *f, gw_fair_sale_t *fs)
{
    inv_fleet_conn_t *c = gw_fair__fleet_conn(f);
    if (!c)
        return false;
    char pw[256];
    if (CM_PLANT(FAIR_FLEET_PUSHED_FIRST)) /* planted: the mark before the entries */
        (void)gw_fair_redis_lottery_push_finish(c, fs->sale_id, f->srv->node.id, true, pw,
                                                sizeof(pw));
    pthread_mutex_lock(&fs->mu);
    gw_fair_out_t out;
    gw_fair_core_step(&fs->core, &(gw_fair_ev_t){.kind = GW_FAIR_EV_ENTRIES_TAKEN}, &out);
    size_t n = fs->n, sent = 0;
    for (size_t i = 0; i < n; i++) {
        const entry_t *e = &fs->v[i];
        if (CM_PLANT(FAIR_FLEET_PUSH_SKIPS) && n > 1 && i + 1 == n) {
            sent++;
            continue;
        }
        char val[320];
        snprintf(val, sizeof(val), "%s %u %s %u%s%s%s", e->order_id, e->qty,
                 gw_fair__idem_out(e->idem), f->srv->node.id, gw_fair__idem_mark(e->idem),
                 strcmp(e->person, e->user_id) != 0 ? " @" : "",
                 strcmp(e->person, e->user_id) != 0 ? e->user_id : "");
        if (gw_fair_redis_lottery_push_add(c, fs->sale_id, e->person, val) == 0)
            sent++;
    }
    pthread_mutex_unlock(&fs->mu);
    char why[256] = "";
    int rc = gw_fair_redis_lottery_push_finish(c, fs->sale_id, f->srv->node.id, sent == n, why,
                                               sizeof(why));
    if (rc < 0) {
        fleet_broke(f, "push", why);
        return false;
    }
    bool ok = rc == 1;
    fs->pushed = ok;
    if (ok)
        cm_log_info("fair", "entries pushed to the fleet", "sale=%s entries=%zu", fs->sale_id, n);
    return ok;
}

/*---- one entry per person, at entry (docs/fleet.md "Start-window lottery") ----*/

/*
 * The mark is one round trip at entry only for an entry whose person is not its
 * account: a second account of the person entering through another gateway would
 * otherwise be told "entered" and read lost at the close. An account that is its own
 * person has no other account to race; its mark, sent by the lottery thread with the
 * tick's others (fleet_marks_push), only lets every gateway read the entry by id.
 */
/* A person's mark as stored: "order node account qty at_ms" (mark_parse reads it). */
#define MARK_VAL_MAX (INV_ORDER_ID_MAX + INV_USER_ID_MAX + 64)
static void mark_format(char out[MARK_VAL_MAX], const char *order, unsigned node,
                        const char *account, unsigned qty, int64_t at_ms)
{
    snprintf(out, MARK_VAL_MAX, "%s %u %s %u %lld", order, node, account, qty, (long long)at_ms);
}

/* The mark into t's order_id, user_id (the account), qty and entered_at_ms; *node: the
 * gateway that took it. */
static bool mark_parse(const char *v, gw_fair_ticket_t *t, unsigned *node)
{
    char o[INV_ORDER_ID_MAX + 1], a[128 + 1];
    long long at;
    size_t alen;
    if (sscanf(v, "%31s %u %128s %" SCNu32 " %lld", o, node, a, &t->qty, &at) != 5 ||
        (alen = strlen(a)) > INV_USER_ID_MAX)
        return false;
    snprintf(t->order_id, sizeof(t->order_id), "%s", o);
    memcpy(t->user_id, a, alen + 1); /* fits: checked above */
    t->entered_at_ms = at;
    return true;
}

int gw_fair__fleet_enter_mark(gw_fair_sale_t *fs, gw_fair_ticket_t *t, bool *mine, bool *marked)
{
    gw_fair_t *f = fs->f;
    *marked = false;
    *mine = false;
    /* 503: maybe a deleted lottery's copy (gw_fair_sale.loaded); or fair.json does not hold
     * the copy's generation yet (a failed save): an entry a crash then brought back under
     * the old one would be dropped with it at the first poll */
    if (gw_fair__stale(fs) || (fs->lot_gen && atomic_load(&f->conf_unsaved)))
        return CM_EBACKEND;
    *mine = t->person[0] && strcmp(t->person, t->user_id) != 0; /* else fleet_marks_push's */
    if (!*mine)
        return 0;
    const char *person = t->person;
    unsigned me = atomic_load(&f->srv->node.id);
    char val[MARK_VAL_MAX], held[sizeof(val) + 64], why[256] = "";
    mark_format(val, t->order_id, me, t->user_id, t->qty, t->entered_at_ms);
    bool taken = false;
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
    int rc = c ? gw_fair_redis_lottery_entry_mark(c, fs->sale_id, person, t->order_id, val, &taken,
                                                  held, sizeof(held), why, sizeof(why))
               : CM_EBACKEND;
    gw_fair__pool_put(&f->loop_pool, c);
    if (rc) {
        gw_fair__room_fleet_trouble("lottery entry mark", fs->sale_id, why);
        return CM_EBACKEND;
    }
    if (taken) {
        *marked = true;
        return 0;
    }
    gw_fair_ticket_t h;
    unsigned node = 0;
    if (!mark_parse(held, &h, &node))
        return CM_EBACKEND;
    if (strcmp(h.user_id, t->user_id) != 0) {
        atomic_fetch_add_explicit(&fs->duplicates, 1, memory_order_relaxed);
        return GW_FAIR_OTHER_ACCOUNT; /* its id and token are that account's */
    }
    memcpy(t->order_id, h.order_id, sizeof(t->order_id));
    t->qty = h.qty;
    t->entered_at_ms = h.entered_at_ms;
    if (node == me)
        return 0; /* ours: the local table has it, or a crash lost it and it is written again */
    atomic_fetch_add_explicit(&fs->duplicates, 1, memory_order_relaxed);
    t->state = GW_ENTRY_ENTERED;
    t->position = t->entrants = t->waitlist_place = 0;
    return 1;
}

/* Marks sent per script call, and calls per tick at most (a tick is 20 ms). */
#define MARKS_BATCH 512
#define MARKS_CALLS_PER_TICK 4

typedef struct mark_out {
    char person[INV_USER_ID_MAX + 1];
    char order[INV_ORDER_ID_MAX + 1];
    char val[MARK_VAL_MAX];
} mark_out_t;

/* Sends the person marks of this gateway's entries that took none at entry, one script
 * call for up to MARKS_BATCH of them. Lottery thread. */
static void fleet_marks_push(gw_fair_t *f, gw_fair_sale_t *fs)
{
    unsigned me = atomic_load(&f->srv->node.id);
    for (int call = 0; call < MARKS_CALLS_PER_TICK; call++) {
        pthread_mutex_lock(&fs->mu);
        if (fs->closed || fs->mark_next >= fs->n) {
            pthread_mutex_unlock(&fs->mu);
            return;
        }
        mark_out_t *m = cm_xmalloc(MARKS_BATCH * sizeof(*m));
        const char **args = cm_xmalloc(3 * MARKS_BATCH * sizeof(*args)); /* person order val */
        size_t k = 0, i = fs->mark_next;
        for (; i < fs->n && k < MARKS_BATCH; i++) {
            const entry_t *e = &fs->v[i];
            if (e->fleet_marked)
                continue;
            snprintf(m[k].person, sizeof(m[k].person), "%s", e->person);
            snprintf(m[k].order, sizeof(m[k].order), "%s", e->order_id);
            mark_format(m[k].val, e->order_id, me, e->user_id, e->qty, e->at_ms);
            args[3 * k] = m[k].person, args[3 * k + 1] = m[k].order, args[3 * k + 2] = m[k].val;
            k++;
        }
        size_t upto = i;
        pthread_mutex_unlock(&fs->mu);
        char why[256] = "";
        bool sent =
            !k || FLEET_CALL(f, why, gw_fair_redis_lottery_entry_mark_many, fs->sale_id, args, k);
        free(args);
        free(m);
        if (!sent)
            return; /* sent again at the next tick (each mark is taken at most once) */
        pthread_mutex_lock(&fs->mu);
        if (fs->mark_next < upto && upto <= fs->n) /* not reset meanwhile */
            fs->mark_next = upto;
        pthread_mutex_unlock(&fs->mu);
    }
}

void gw_fair__fleet_enter_unmark(gw_fair_sale_t *fs, const gw_fair_ticket_t *t,
                                 const char *order_id)
{
    gw_fair_t *f = fs->f;
    char why[256] = "";
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
    int rc =
        c ? gw_fair_redis_lottery_entry_drop(c, fs->sale_id, t->person[0] ? t->person : t->user_id,
                                             order_id, why, sizeof(why))
          : CM_EBACKEND;
    gw_fair__pool_put(&f->loop_pool, c);
    /* kept: the account's retry through this gateway writes the entry again */
    if (rc)
        gw_fair__room_fleet_trouble("lottery entry mark given back", fs->sale_id, why);
}

int gw_fair__fleet_lookup(gw_fair_t *f, const char *order_id, gw_fair_ticket_t *out)
{
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        /* drawn here: every entrant of the draw is in the local table (fleet_fetch), so
         * Redis is asked only while a draw is not known (a status poll of another
         * gateway's order costs no round trip per drawn lottery) */
        if (atomic_load_explicit(&fs->sale.cfg.fair_window_ms, memory_order_relaxed) <= 0 ||
            atomic_load(&fs->drawn))
            continue;
        char why[256] = "", person[INV_USER_ID_MAX + 1], v[MARK_VAL_MAX];
        bool found = false;
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
        int rc = c ? gw_fair_redis_lottery_entry_get(c, fs->sale_id, order_id, &found, person,
                                                     sizeof(person), v, sizeof(v), why, sizeof(why))
                   : CM_EBACKEND;
        gw_fair__pool_put(&f->loop_pool, c);
        if (rc) {
            gw_fair__room_fleet_trouble("lottery entry lookup", fs->sale_id, why);
            return CM_EBACKEND;
        }
        unsigned node = 0;
        memset(out, 0, sizeof(*out));
        if (!found || !mark_parse(v, out, &node) || strcmp(out->order_id, order_id) != 0)
            continue;
        snprintf(out->sale_id, sizeof(out->sale_id), "%s", fs->sale_id);
        snprintf(out->person, sizeof(out->person), "%s", person);
        out->draw_at_ms = gw_fair_closes_at(fs, atomic_load(&fs->sale.cfg.starts_at_ms));
        out->state = GW_ENTRY_ENTERED;
        return 1;
    }
    return 0;
}

/* The frozen entrants, the seed and the outcomes, as every gateway reads them. */
typedef struct fleet_draw {
    entry_t *all;
    size_t n;
    uint64_t seed;
    bool seeded;
    uint32_t *perm;
    /* :won, person -> GW_ENTRY_WON (an order id) or GW_ENTRY_LOST
     * (GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED: drawn and reserved, then refused by the drawer's
     * spool or for cause: given back, not a winner, not drawn again) */
    cm_smap_t won;
} fleet_draw_t;

static void fleet_draw_free(fleet_draw_t *d)
{
    free(d->all);
    free(d->perm);
    cm_smap_free(&d->won, NULL);
    memset(d, 0, sizeof(*d));
}

/* What :won holds of person: its state, or GW_ENTRY_ENTERED (nothing). */
static uint8_t fleet_outcome(const fleet_draw_t *d, const char *person)
{
    const cm_smap_entry_t *w = cm_smap_get(&d->won, person);
    return w ? (uint8_t)w->val.u : GW_ENTRY_ENTERED;
}

typedef struct read_ctx {
    cm_hash_key_t secret; /* fs->secret, copied under fs->mu */
    fleet_draw_t *d;
    size_t cap;
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
    /* the field is the person, the value's "@" field the account (fleet_push) */
    snprintf(e->user_id, sizeof(e->user_id), "%s", user);
    gw_fair__person_in(e, v, 4);
    char account[INV_USER_ID_MAX + 1];
    memcpy(account, e->person, sizeof(account));
    memcpy(e->person, e->user_id, sizeof(e->person));
    memcpy(e->user_id, account, sizeof(e->user_id));
    gw_fair__idem_in(e->idem, nf, 5, mark);
    e->qty = qty;
    e->key = cm_hash_sip24(&x->secret, user, strlen(user));
    d->n++;
}

static void read_winner(void *ctx, const char *person, const char *order)
{
    bool refused = strcmp(order, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED) == 0;
    cm_smap_put(&((read_ctx_t *)ctx)->d->won, person, NULL)->val.u =
        refused ? GW_ENTRY_LOST : GW_ENTRY_WON;
}

/* Reads the draw's state and its outcomes. Returns false on a Redis problem. */
static bool fleet_read(gw_fair_t *f, gw_fair_sale_t *fs, fleet_draw_t *d)
{
    memset(d, 0, sizeof(*d));
    char why[256] = "";
    read_ctx_t x = {.d = d, .cap = 64};
    pthread_mutex_lock(&fs->mu);
    x.secret = fs->secret;
    pthread_mutex_unlock(&fs->mu);
    d->all = cm_xcalloc(x.cap, sizeof(entry_t));
    if (!FLEET_CALL(f, why, gw_fair_redis_lottery_entrants, fs->sale_id, read_entrant, &x) ||
        !FLEET_CALL(f, why, gw_fair_redis_lottery_seed_get, fs->sale_id, &d->seed, &d->seeded) ||
        !FLEET_CALL(f, why, gw_fair_redis_lottery_winners, fs->sale_id, read_winner, &x)) {
        fleet_draw_free(d);
        return false;
    }
    if (d->seeded)
        d->perm = gw_fair__draw_perm(d->all, d->n, d->seed);
    return true;
}

/*
 * After the draw: every gateway learns every entry's position and outcome,
 * again whenever the waitlist's generation moves (a promotion, a loser lost
 * for cause, the sale's end). The waitlist's state is read before the
 * winners, so a change between the two reads is seen (again) at the next.
 */
void gw_fair__fleet_fetch(gw_fair_t *f, gw_fair_sale_t *fs)
{
    gw_fair_redis_wl_state_t ws;
    char why[256] = "";
    if (!FLEET_CALL(f, why, gw_fair_redis_wl_state, fs->sale_id, &ws))
        return;
    fleet_draw_t d;
    if (!fleet_read(f, fs, &d))
        return;
    if (!d.seeded) {
        fleet_draw_free(&d);
        return;
    }
    /* the losers wait unless the draw said not (or an older drawer said nothing) or the
     * fleet recorded the sale's end (gw_waitlist_fleet.c wl_end: after the promotions begun
     * before it); an entry the draw or a promotion refused for cause is lost */
    bool ended = ws.ended;
    bool first = !atomic_load(&fs->drawn);
    pthread_mutex_lock(&fs->mu);
    /* the core's DRAW_KNOWN: its ORDER is the perm below (the same gw_fair_order
     * over the local table, which takes the store's entrants), its LEFTOVERS
     * the losers' states, its PUBLISH the drawn flag */
    gw_fair_ev_t kev = {
        .kind = GW_FAIR_EV_DRAW_KNOWN, .seed = d.seed, .entrants = d.n, .waitlist = ws.mode == 'w'};
    gw_sale_out_t so; /* through the sale's machine: its PUBLISH opens the leftovers */
    gw_sale_step(&fs->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = kev}, 0, &so);
    uint32_t *perm = cm_xmalloc((d.n ? d.n : 1) * sizeof(uint32_t));
    fs->won_orders = fs->won_units = fs->lost = 0;
    for (size_t pos = 0; pos < d.n; pos++) {
        entry_t *src = &d.all[d.perm[pos]];
        /* ENTERED here: waitlisted below, once the tree is sized */
        uint8_t rec = fleet_outcome(&d, src->person);
        bool waits =
            !ended && gw_fair_core_loser(&fs->core, rec == GW_ENTRY_LOST) == GW_ENTRY_WAITLISTED;
        uint8_t st = rec == GW_ENTRY_WON ? GW_ENTRY_WON : waits ? GW_ENTRY_ENTERED : GW_ENTRY_LOST;
        entry_t *e = gw_fair__find_user(fs, src->person, src->key);
        if (e && strcmp(e->order_id, src->order_id) != 0) {
            /* this person's entry through another gateway (or account) is the one drawn */
            e->state = GW_ENTRY_LOST;
            e->pos = 0;
            e = gw_fair__find_id(fs, src->order_id);
        }
        if (!e) {
            entry_t ne = *src;
            e = gw_fair__entry_add(fs, &ne);
        }
        e->state = st;
        e->pos = (uint32_t)(pos + 1);
        perm[pos] = (uint32_t)(e - fs->v);
        if (st == GW_ENTRY_WON) {
            fs->won_orders++;
            fs->won_units += e->qty;
        } else if (st == GW_ENTRY_LOST) {
            fs->lost++;
        }
    }
    free(fs->perm);
    fs->perm = perm;
    struct gw_wl_stock seen = fs->sale.wl.seen; /* no walk over it, whatever this read */
    gw_fair__wl_init(fs);
    for (size_t pos = 0; pos < d.n; pos++)
        if (fs->v[perm[pos]].state == GW_ENTRY_ENTERED)
            gw_fair__wl_add(fs, &fs->v[perm[pos]]);
    for (size_t i = 0; i < fs->n; i++)
        if (fs->v[i].state == GW_ENTRY_ENTERED) /* pushed too late for the draw */
            fs->v[i].state = GW_ENTRY_LOST;
    gw_wl_core_init(&fs->sale.wl, ws.head > 0 && (size_t)ws.head < d.n ? (size_t)ws.head : 0);
    fs->sale.wl.seen = seen;
    fs->promoted = (uint64_t)ws.promoted;
    fs->wl_gen = ws.gen;
    fs->wl_ended = ended;
    if (!fs->draw_done_ms)
        fs->draw_done_ms = cm_wall_ms();
    /* before drawn: no first-come buy slips in while losers wait */
    gw_fair__wl_told(fs);
    atomic_store_explicit(&fs->drawn, true, memory_order_release);
    uint64_t waitlisted = fs->waitlisted;
    pthread_mutex_unlock(&fs->mu);
    if (first)
        cm_log_info("fair", "fleet draw known",
                    "sale=%s entrants=%zu won_orders=%llu waitlisted=%llu seed=%016llx",
                    fs->sale_id, d.n, (unsigned long long)fs->won_orders,
                    (unsigned long long)waitlisted, (unsigned long long)d.seed);
    fleet_draw_free(&d);
}

/*---- the drawer (the lock's holder): the core's draw over the store's entrants ----*/

/* A drawer's run (gw_fair__draw_redis): its own core over the store's draw. */
typedef struct fleet_run {
    pthread_mutex_t mu; /* the run's core's (nobody else reads it) */
    gw_fair_core_t core;
    fleet_draw_t d;  /* the entrants, seed and outcomes read back */
    bool over;       /* the sale ended: the losers are lost, not waitlisted */
    int64_t t0;      /* the run's start */
    size_t nwon;     /* winners accepted here */
} fleet_run_t;

/* The core's DO_ACCEPT in a fleet: buy's accept sequence for one entrant, and
 * its outcome put in the store's :won at once (a drawer that resumes this
 * draw skips it), as the core's ACCEPTED; FAILED when either failed (the
 * next run resumes there: a spooled winner is found again by its key).
 * Lottery thread. */
static gw_fair_ev_t fleet_accept(gw_fair_draw_t *d, const entry_t *e)
{
    gw_fair_t *f = d->f;
    gw_fair_sale_t *fs = d->fs;
    gw_fair_ev_t ev = {.kind = GW_FAIR_EV_ACCEPTED};
    char why[256] = "";
    gw_accept_t a;
    bool sold_out;
    int rc = gw_fair__draw_accept(f, fs, d->sale, e, cm_wall_ms(), true, &a, &sold_out);
    const char *put = NULL; /* the outcome for :won */
    switch (rc) {
    case GW_ACCEPT_BEFORE:
        /* once per order id: reserved before and released since (a drawer died between
         * this winner's reserve and :won, and its order failed or was cancelled meanwhile,
         * which took its key with it), it is a winner already, not one to reserve again */
        put = CM_PLANT(FAIR_FLEET_BEFORE_LOST) ? GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED : e->order_id;
        ev.acc = GW_FAIR_ACC_WON;
        break;
    case GW_ACCEPT_SPOOL_REFUSED:
        /* not a winner: recorded, so that a drawer that resumes does not take the
         * order's mark (inv_reserve_once) for a winner released since */
        put = GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED;
        ev.acc = GW_FAIR_ACC_REFUSED;
        break;
    case GW_ACCEPT_SPOOLED:
        /* its own record only: durable is a winner, whatever fdatasync failed after */
        gw_accept_commit(&f->accept, &a, 1);
        if (!a.durable) {
            ev.acc = GW_FAIR_ACC_FAILED; /* spooled: a resumed draw finds it by its key */
            return ev;
        }
        put = e->order_id;
        ev.acc = GW_FAIR_ACC_WON;
        break;
    case GW_ACCEPT_REFUSED:
        /* refused for cause (the per-user limit, the key of another order): lost, not
         * waitlisted, on every gateway, and never promoted (gw_waitlist_fleet.c) */
        put = GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED;
        ev.acc = GW_FAIR_ACC_DENIED;
        break;
    default:
        if (rc < 0) {
            ev.acc = GW_FAIR_ACC_FAILED;
            return ev;
        }
        ev.acc = GW_FAIR_ACC_SOLD_OUT;
        break;
    }
    if (put && !FLEET_CALL(f, why, gw_fair_redis_lottery_winner_put, fs->sale_id, e->person, put)) {
        ev.acc = GW_FAIR_ACC_FAILED;
        return ev;
    }
    if (rc == GW_ACCEPT_BEFORE)
        cm_log_info("fair", "fleet draw: a winner's order was released before the resume",
                    "sale=%s order=%s", fs->sale_id, e->order_id);
    if (rc == GW_ACCEPT_SPOOLED) {
        gw_accept_publish(&f->accept, &a, 1);
        ((fleet_run_t *)d->run)->nwon++;
    }
    ev.sold_out = sold_out && rc != GW_ACCEPT_BEFORE && rc != GW_ACCEPT_SPOOL_REFUSED;
    return ev;
}

/*
 * The fleet's draw by the lock's holder (gw_fair__run_draw, as on one gateway):
 * the seed is the store's (the first drawer's), the entrants those Redis froze,
 * one recorded in :won by a drawer before is decided already, and the end is
 * :done. A fresh core each run: the store holds the draw, a run resumes it.
 */
static void fleet_begin(gw_fair_draw_t *d)
{
    fleet_run_t *r = cm_xcalloc(1, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    gw_fair_core_init(&r->core);
    r->over = !d->sale || gw_sale_phase(&d->fs->sale, d->now) == GW_SALE_PH_ENDED;
    r->t0 = d->now;
    d->run = r;
    d->core = &r->core;
    d->mu = &r->mu;
}

static void fleet_step(gw_fair_draw_t *d, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    fleet_run_t *r = d->run;
    gw_fair_ev_t e = *ev;
    if (e.kind == GW_FAIR_EV_TICK)
        e.sale_over = r->over;
    gw_fair_core_step(&r->core, &e, out);
}

/* The core's DO_SEED in a fleet: the entrants frozen, the seed offered and the
 * losers' mode decided (not waitlisted when the sale is over) in one script
 * (gw_fair_redis_lottery_seed), then the entrants, the seed and the recorded
 * winners read back: SEED_TAKEN. */
static bool fleet_seed(gw_fair_draw_t *d, uint64_t rnd)
{
    fleet_run_t *r = d->run;
    gw_fair_t *f = d->f;
    const char *sale = d->fs->sale_id;
    gw_fair_out_t out;
    fleet_step(d, &(gw_fair_ev_t){.kind = GW_FAIR_EV_TICK, .rnd = rnd}, &out);
    if (!(out.actions & GW_FAIR_DO_SEED))
        return false;
    char why[256] = "", hex[24];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)r->core.seed);
    gw_fair_ev_t ev = {.kind = GW_FAIR_EV_SEED_TAKEN, .rc = CM_EBACKEND};
    if (FLEET_CALL(f, why, gw_fair_redis_lottery_seed, sale, hex, r->over ? 'l' : 'w') &&
        fleet_read(f, d->fs, &r->d) && r->d.seeded)
        ev.rc = 0;
    ev.seed = r->d.seed;
    ev.entrants = r->d.n;
    gw_fair_core_step(&r->core, &ev, &out);
    if (!(out.actions & GW_FAIR_DO_ORDER))
        return false;
    r->core.perm = r->d.perm; /* the core's ORDER: fleet_read's, of the same seed and entrants */
    return true;
}

static const entry_t *fleet_entrant(gw_fair_draw_t *d, size_t i, uint8_t *state)
{
    fleet_run_t *r = d->run;
    char why[256] = "";
    if (r->core.next % 64 == 63)
        (void)FLEET_CALL(d->f, why, gw_fair_redis_lottery_lock_renew, d->fs->sale_id,
                         FLEET_LOCK_MS);
    const entry_t *e = &r->d.all[i];
    *state = fleet_outcome(&r->d, e->person);
    return e;
}

static int fleet_outcomes(gw_fair_draw_t *d, bool waitlist)
{
    (void)waitlist; /* the store's mode, set with the seed */
    char why[256] = "";
    fleet_run_t *r = d->run;
    return FLEET_CALL(d->f, why, gw_fair_redis_lottery_done_set, d->fs->sale_id, r->d.n)
               ? 0
               : CM_EBACKEND;
}

/* Done, or tried again after FLEET_DRAW_RETRY_MS: each try reads every
 * entrant back, and an error that persists (a key of the wrong type, a full
 * Redis) would otherwise have it do so at every tick. */
static void fleet_end(gw_fair_draw_t *d, bool done)
{
    fleet_run_t *r = d->run;
    gw_fair_sale_t *fs = d->fs;
    if (done) {
        cm_log_info("fair", "fleet draw done",
                    "sale=%s entrants=%zu won_here=%zu seed=%016llx elapsed_ms=%lld", fs->sale_id,
                    r->d.n, r->nwon, (unsigned long long)r->d.seed,
                    (long long)(cm_wall_ms() - r->t0));
        pthread_mutex_lock(&fs->mu);
        fs->draw_started_ms = r->t0;
        pthread_mutex_unlock(&fs->mu);
    } else {
        fs->draw_retry_ms = cm_wall_ms() + FLEET_DRAW_RETRY_MS;
    }
    fleet_draw_free(&r->d);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* SET_STATE: every gateway reads the outcomes from the store at :done; each
 * winner is committed and published at its accept (no commit); LOG_SOLD_OUT:
 * nobody is told an outcome before :done, so the stock's end needs no record. */
const gw_fair_draw_ops_t gw_fair__draw_redis = {
    .begin = fleet_begin,
    .step = fleet_step,
    .seed = fleet_seed,
    .entrant = fleet_entrant,
    .accept = fleet_accept,
    .outcomes = fleet_outcomes,
    .end = fleet_end,
};

/*
 * A closed window in the fleet: push, then draw (one gateway) or learn the draw.
 * The draw waits for every member's push, and for the push of every gateway
 * that marked entries (a count of members alone lets a gateway that pushed and
 * then left stand in for a live one), up to FLEET_PUSH_WAIT_MS of Redis
 * answering this gateway (fs->push_read_ms, set again by every failure), not
 * of time since the close: after an outage across the close, the first
 * gateway back would otherwise draw at once, without the entries of live
 * gateways a tick behind it (sim/seeds.txt, --fairfleet).
 */
void gw_fair__fleet_tick_sale(gw_fair_t *f, gw_fair_sale_t *fs, int64_t closes_ms)
{
    char why[256] = "";
    bool done = false;
    if ((!fs->pushed && !fleet_push(f, fs)) ||
        !FLEET_CALL(f, why, gw_fair_redis_lottery_done, fs->sale_id, &done)) {
        fs->push_read_ms = 0;
        return;
    }
    if (done) {
        gw_fair__fleet_fetch(f, fs);
        return;
    }
    int64_t now = cm_wall_ms();
    if (!fs->push_read_ms)
        fs->push_read_ms = now; /* Redis answers again: the wait starts over */
    if (now < (fs->push_read_ms > closes_ms ? fs->push_read_ms : closes_ms) + FLEET_PUSH_WAIT_MS) {
        long long pushed = -1, missing = -1;
        if (!FLEET_CALL(f, why, gw_fair_redis_lottery_pushed_count, fs->sale_id, &pushed,
                        &missing)) {
            fs->push_read_ms = 0;
            return;
        }
        if (pushed < (long long)gw_fleet_members(f->srv) || missing != 0)
            return;
    }
    if (cm_wall_ms() < fs->draw_retry_ms)
        return;
    bool mine = false;
    if (!FLEET_CALL(f, why, gw_fair_redis_lottery_lock, fs->sale_id, f->srv->node.id, FLEET_LOCK_MS,
                    &mine))
        return;
    if (mine)
        gw_fair__run_draw(f, fs, closes_ms);
}

/*---- the admin thread's calls: a connection of their own per request (f->rc is the
 * lottery thread's) ----*/

static inv_fleet_conn_t *admin_conn(gw_fair_t *f, char *why, size_t cap)
{
    return inv_fleet_connect(&f->addr, 2000, why, cap);
}

/* Closes c (NULL: none): 0, or CM_EBACKEND with "redis: <why>" when rc is not 0. */
static int admin_done(inv_fleet_conn_t *c, int rc, const char *why, char *errbuf, size_t errlen)
{
    inv_fleet_close(c);
    if (rc == 0)
        return 0;
    cm_errbuf_set(errbuf, errlen, "redis: %s", why);
    return CM_EBACKEND;
}

/* The secret is made once, by the first gateway that configures the sale, and shared
 * (gw_fair_redis.h, :conf), so every gateway orders entrants alike. So is the generation,
 * but a PUT that finds no configuration (a new sale, or one put back after Redis lost it)
 * offers this gateway's copy's: a put-back stays the lottery the gateways hold. */
int gw_fair__fleet_conf_put(gw_fair_t *f, const char *sale_id, int64_t window_ms, int64_t early_ms,
                            int64_t wr_rate, cm_hash_key_t *secret, uint64_t *gen, char *errbuf,
                            size_t errlen)
{
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    if (window_ms == 0 && wr_rate == 0 && !fs)
        return 0; /* no lottery, none to remove: the fleet need not hear of it */
    char why[256] = "", cur[256], val[160];
    bool found = false;
    unsigned long long k0, k1, g0 = 0;
    long long w0, e0, r0;
    inv_fleet_conn_t *c = admin_conn(f, why, sizeof(why));
    if (!c)
        return admin_done(c, CM_EBACKEND, why, errbuf, errlen);
    bool ok =
        gw_fair_redis_lottery_conf_get(c, sale_id, cur, sizeof(cur), &found, why, sizeof(why)) == 0;
    /* A sale deleted with its lottery and created again: whatever its deletion could not
     * clear goes before the new lottery is announced (a new secret and generation, too). */
    bool dead = ok && found && strcmp(cur, GW_FAIR_REDIS_LOTTERY_DELETED) == 0;
    if (dead)
        ok = gw_fair_redis_lottery_clear(c, sale_id, why, sizeof(why)) == 0;
    int nf = ok && found && !dead
                 ? sscanf(cur, "%lld %lld %llx %llx %lld %llx", &w0, &e0, &k0, &k1, &r0, &g0)
                 : 0;
    if (nf >= 4)
        *secret = (cm_hash_key_t){k0, k1};
    else if (ok)
        ok = cm_hash_seed_random(secret) == 0;
    *gen = nf >= 6 ? g0 : 0;
    if (ok && !*gen && !dead && fs) { /* none in the fleet: this copy's (a reset one has 0) */
        pthread_mutex_lock(&f->mu);
        *gen = fs->lot_gen;
        pthread_mutex_unlock(&f->mu);
    }
    /* none here either, no configuration at all: the generation a gateway that held the
     * lottery offered when Redis lost it (gen_offers), if one did; else a new lottery */
    if (ok && !*gen && !found)
        ok = gw_fair_redis_lottery_gen_offered(c, sale_id, gen, why, sizeof(why)) == 0;
    if (ok && !*gen) /* a new lottery's: from its secret, random and made once per lottery */
        *gen = cm_hash_sip24(secret, "lottery generation", 18) | 1;
    if (ok) {
        snprintf(val, sizeof(val), "%lld %lld %016llx %016llx %lld %016llx", (long long)window_ms,
                 (long long)early_ms, (unsigned long long)secret->k0,
                 (unsigned long long)secret->k1, (long long)wr_rate, (unsigned long long)*gen);
        /* the registration's token stays as Redis holds it: gw_reg_configure writes it */
        ok = gw_fair_redis_conf_part(c, sale_id, false, val, why, sizeof(why)) == 0;
    }
    inv_fleet_close(c);
    if (!ok)
        cm_errbuf_set(errbuf, errlen, "redis: cannot store the lottery configuration");
    return ok ? 1 : CM_EBACKEND;
}

/*
 * Fleet: reads the sale's configuration now, as the lottery thread's next
 * poll would (conf_sync_one), so that a drawn lottery this gateway still
 * holds of a sale that another gateway deleted (and maybe created again)
 * does not refuse a PUT of the new sale. Admin thread. 0 or CM_EBACKEND.
 */
int gw_fair__fleet_conf_refresh(gw_fair_t *f, const char *sale_id, char *errbuf, size_t errlen)
{
    char why[256] = "", cur[256];
    bool found = false;
    inv_fleet_conn_t *c = admin_conn(f, why, sizeof(why));
    int rc =
        c ? gw_fair_redis_lottery_conf_get(c, sale_id, cur, sizeof(cur), &found, why, sizeof(why))
          : CM_EBACKEND;
    if ((rc = admin_done(c, rc, why, errbuf, errlen)) != 0)
        return rc;
    if (found) {
        pthread_mutex_lock(&f->tick_mu);
        conf_sync_one(f, sale_id, cur);
        pthread_mutex_unlock(&f->tick_mu);
    }
    return 0;
}

/*---- the Redis store's ops (gw_fair_lot_ops_t) ----*/

int gw_fair__fleet_open(gw_fair_t *f, char *errbuf, size_t errlen)
{
    gw_server_t *srv = f->srv;
    char why[256];
    if (cm_redis_url_parse(srv->cfg->inventory, &f->addr, why, sizeof(why)) != 0 ||
        cm_redis_url_default_password(&f->addr, srv->cfg->redis_password) != 0) {
        cm_errbuf_set(errbuf, errlen, "lottery: %s", why);
        return CM_EINVAL;
    }
    /* The worker loops' calls get the buy path's budget (inventory.redis_timeout),
     * not the 2 s of the other threads: a blocking call holds its whole loop. */
    uint32_t loop_ms = (uint32_t)srv->cfg->redis_timeout_ms; /* 1..60000, gw_config.c */
    size_t conns = (size_t)srv->pool.nworkers + GW_FAIR_LOOP_POOL_EXTRA;
    gw_fair__pool_init(&f->loop_pool, &f->addr,
                       conns < GW_FAIR_LOOP_POOL_MAX ? conns : GW_FAIR_LOOP_POOL_MAX,
                       loop_ms ? loop_ms : INV_REDIS_TIMEOUT_MS_DEFAULT, true);
    gw_fair__pool_init(&f->pool, &f->addr, GW_FAIR_POOL_SIZE, GW_FAIR_POOL_TIMEOUT_MS, false);
    return 0;
}

void gw_fair__fleet_close(gw_fair_t *f)
{
    inv_fleet_close(f->rc);
    f->rc = NULL;
    gw_fair__pool_deinit(&f->loop_pool);
    gw_fair__pool_deinit(&f->pool);
}

/* Reads the fleet's lottery configuration into the local table every
 * FLEET_CONF_POLL_MS, and sends the admission-token give-backs. */
void gw_fair__fleet_tick(gw_fair_t *f, int64_t now_ms)
{
    if (now_ms - f->last_conf_ms >= FLEET_CONF_POLL_MS) {
        f->last_conf_ms = now_ms;
        char why[256] = "";
        if (gw_fair__fleet_conn(f)) {
            conf_absent_all(f);
            gw_elig_fleet_begin(f->srv);
            bool ok = gw_fair__fleet_ok(
                f, gw_fair_redis_lottery_conf_all(f->rc, conf_sync_one, f, why, sizeof(why)), why);
            gw_elig_fleet_end(f->srv, ok);
            if (ok) {
                atomic_store(&f->conf_read, true);
                gen_offers(f);
            }
        }
    }
    gw_fair__room_unclaims_tick(f, now_ms);
}

/*
 * Tells the fleet this gateway holds entries of the sale, once it has one:
 * the window can then not change through any gateway (entries stay local
 * until the close, so the one asked would not know). Then the marks
 * (fleet_marks_push).
 */
void gw_fair__fleet_entries_tick(gw_fair_t *f, gw_fair_sale_t *fs)
{
    if (!fs->marked) {
        pthread_mutex_lock(&fs->mu);
        bool any = fs->n > 0;
        pthread_mutex_unlock(&fs->mu);
        char why[256] = "";
        if (any &&
            FLEET_CALL(f, why, gw_fair_redis_lottery_entered_mark, fs->sale_id, f->srv->node.id))
            fs->marked = true;
    }
    fleet_marks_push(f, fs);
}

int gw_fair__fleet_record(gw_fair_t *f, const char *sale_id, bool *drawn, bool *entered,
                          char *errbuf, size_t errlen)
{
    char why[256] = "";
    inv_fleet_conn_t *c = admin_conn(f, why, sizeof(why));
    int rc = c ? 0 : CM_EBACKEND;
    if (rc == 0 && drawn)
        rc = gw_fair_redis_lottery_done(c, sale_id, drawn, why, sizeof(why));
    if (rc == 0 && entered)
        rc = gw_fair_redis_lottery_entered(c, sale_id, entered, why, sizeof(why));
    return admin_done(c, rc, why, errbuf, errlen);
}

int gw_fair__fleet_drop(gw_fair_t *f, const char *sale_id, bool sale_gone, bool *here,
                        bool *store_has, char *errbuf, size_t errlen)
{
    char why[256] = "", cur[256];
    bool found = false;
    inv_fleet_conn_t *c = admin_conn(f, why, sizeof(why));
    int rc =
        c ? gw_fair_redis_lottery_conf_get(c, sale_id, cur, sizeof(cur), &found, why, sizeof(why))
          : CM_EBACKEND;
    *store_has = rc == 0 && found && strcmp(cur, GW_FAIR_REDIS_LOTTERY_DELETED) != 0;
    /* Redis lost the configuration and a gateway offered the lottery's generation for its
     * put-back (gen_offers): the gateways still hold the lottery, and the tombstone drops it */
    uint64_t offered = 0;
    if (rc == 0 && !found)
        rc = gw_fair_redis_lottery_gen_offered(c, sale_id, &offered, why, sizeof(why));
    *store_has = *store_has || offered != 0;
    /* Whenever the fleet may hold something of it: the tombstone first (every gateway
     * drops its own record; a new sale under the id clears what is left), then every
     * key of the lottery at once. For a sale gone already the fleet's record decides
     * (a gateway's own copy of a lottery tombstoned already goes at its next poll). */
    if (sale_gone)
        *here = false;
    if (rc == 0 && (*store_has || !sale_gone)) {
        if (found || *here || offered)
            rc = gw_fair_redis_lottery_conf_put(c, sale_id, GW_FAIR_REDIS_LOTTERY_DELETED, why,
                                                sizeof(why));
        if (rc == 0)
            rc = gw_fair_redis_lottery_clear(c, sale_id, why, sizeof(why));
    }
    return admin_done(c, rc, why, errbuf, errlen);
}

void gw_fair__fleet_stats(gw_fair_t *f, void *o)
{
    gw_fair__pool_stats(&f->loop_pool, o);
}
