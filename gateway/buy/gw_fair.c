/*
 * Fair start: what the lottery, the waiting room and the fleet draw share: the
 * configuration, open/close, the lottery thread's tick and the admin calls
 * (the rules: docs/design.md "Fair start"), which reach the lottery's store
 * through f->lot alone (gw_fair_store.c: one gateway's or a fleet's). A sale's
 * slot (its creation, update and reset) is in gw_fair_slot.c and the per-sale
 * tables and the entry log in gw_fair_table.c, below the files that call them.
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg_backend.h"

#include "common/cm_rand.h"
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "common/cm_url.h"
#include "gateway/base/gw_base.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/overload/gw_ol.h"

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

#define TICK_MS 20
#define IDLE_TICK_MS 100 /* while no sale has a lottery or a waiting room */

/*---- open / close ----*/

int gw_fair_open(gw_server_t *srv, gw_acceptor_t accept, char *errbuf, size_t errlen)
{
    gw_fair_t *f = cm_xcalloc(1, sizeof(*f));
    f->srv = srv;
    f->accept = accept;
    pthread_mutex_init(&f->tick_mu, NULL);
    pthread_mutex_init(&f->mu, NULL);
    pthread_mutex_init(&f->unclaim_mu, NULL);
    cm_hash_key_t nk = {0, 0};
    (void)cm_hash_seed_random(&nk); /* unique per gateway, not secret */
    atomic_init(&f->claim_nonce, nk.k0 ^ (uint64_t)cm_wall_ms());
    snprintf(f->dir, sizeof(f->dir), "%s/fair", srv->cfg->data_dir);
    srv->fair = f;
    /* the lottery's store: the one choice between one gateway and a fleet */
    f->lot =
        strncmp(srv->cfg->inventory, "redis", 5) == 0 ? &gw_fair__lot_redis : &gw_fair__lot_local;
    /* a store with no shared configuration (no tick polls one) has read all there is */
    atomic_init(&f->conf_read, !f->lot->tick);
    int orc = f->lot->open ? f->lot->open(f, errbuf, errlen) : 0;
    if (orc)
        return orc;
    /* every file of the fairness through the journal's table (cm_journal.h): the disk a
     * simulator's power cut reaches */
    if (cm_journal_mkdir(f->dir, 0755) != 0) {
        cm_errbuf_set(errbuf, errlen, "cannot create %s: %s", f->dir, strerror(errno));
        return CM_EIO;
    }
    char path[700];
    snprintf(path, sizeof(path), "%s/fair.json", srv->cfg->data_dir);
    char *text = NULL;
    size_t tlen = 0;
    int rrc = cm_journal_read_file(path, &text, &tlen);
    if (rrc == CM_ENOTFOUND)
        return 0;
    if (rrc != 0) {
        cm_errbuf_set(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
        return CM_EIO;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, tlen, 0, &jerr);
    explicit_bzero(text, tlen); /* the per-sale secrets */
    free(text);
    if (!root) {
        cm_errbuf_set(errbuf, errlen, "%s: %s", path, jerr.text);
        return CM_EINVAL;
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
        gw_fair_sale_t *fs = gw_fair__sale_new(f, id);
        atomic_init(&fs->sale.cfg.fair_window_ms,
                    json_integer_value(json_object_get(it, "window_ms")));
        atomic_init(&fs->sale.cfg.fair_early_ms,
                    json_integer_value(json_object_get(it, "early_ms")));
        atomic_init(&fs->sale.cfg.room_rate,
                    json_integer_value(json_object_get(it, "waiting_room_rate")));
        atomic_init(&fs->sale.cfg.reg_opens_ms,
                    json_integer_value(json_object_get(it, "registration_opens_ms")));
        atomic_init(&fs->sale.cfg.reg_closes_ms,
                    json_integer_value(json_object_get(it, "registration_closes_ms")));
        if (fs->reg_ops->load)
            fs->reg_ops->load(f, fs);
        if (f->lot->sale_load)
            f->lot->sale_load(fs);
        fs->secret.k0 = strtoull(k0, NULL, 16);
        fs->secret.k1 = strtoull(k1, NULL, 16);
        const char *gen = json_string_value(json_object_get(it, "lottery_gen"));
        fs->lot_gen = gen ? strtoull(gen, NULL, 16) : 0; /* none: unknown (an older fair.json) */
        gw_fair__log_load(f, fs, &max_id);
        fs->loaded = fs->n > 0 || gw_fair__past_close(fs) || fs->lot_gen != 0;
        if (gw_fair__log_open(f, fs) != 0) {
            cm_errbuf_set(errbuf, errlen, "cannot open the lottery log of sale %s in %s", id,
                          f->dir);
            json_decref(root);
            gw_fair__sale_free(fs);
            return CM_EIO;
        }
        f->sales[atomic_load(&f->n)] = fs;
        atomic_fetch_add(&f->n, 1);
        if (fs->n)
            cm_log_info("fair", "lottery loaded", "sale=%s entries=%zu seeded=%d drawn=%d",
                        fs->sale_id, fs->n, fs->seeded, (int)atomic_load(&fs->drawn));
    }
    json_decref(root);
    gw_fair__cut_winners(f);
    /* Entry ids are order ids of this node: new ids must come after them. */
    if (max_id)
        cm_id_gen_after(&srv->node.ids, max_id);
    return 0;
}

/* One TICK per sale through its machine, which decides what time made due;
 * each part is then done by its own store op, under its own lock. True while
 * a part is due (a lottery not drawn, the leftovers, a waiting room). */
static bool fair_tick(gw_fair_t *f)
{
    pthread_mutex_lock(&f->tick_mu);
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    bool here[FAIR_MAX_SALES];
    unsigned due[FAIR_MAX_SALES];
    bool busy = false;
    for (size_t i = 0; i < n; i++) /* another gateway's edits of a start or an end */
        here[i] = gw_fair__sale_terms(f->sales[i]);
    if (f->lot->tick)
        f->lot->tick(f, cm_wall_ms());
    /* the configuration's poll may have added sales (slots are never taken
     * away, so m >= n): their rooms tick now, the rest next time */
    size_t m = atomic_load_explicit(&f->n, memory_order_acquire);
    if (m < n)
        m = n;
    int64_t now = cm_wall_ms();
    for (size_t i = 0; i < m; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        pthread_mutex_lock(&fs->mu);
        bool waiting = fs->waitlisted > 0;
        pthread_mutex_unlock(&fs->mu);
        gw_sale_out_t so;
        gw_sale_step(&fs->sale,
                     &(gw_sale_ev_t){.kind = GW_SALE_EV_TICK, .tick = {.waiting = waiting}}, now,
                     &so);
        if (i >= n) {
            here[i] = gw_fair__sale_terms(fs);
            so.actions &= GW_SALE_DO_ROOM | GW_SALE_DO_ADMIT;
        }
        /* a sale gone from inventory is neither drawn nor admitted */
        due[i] = here[i] ? so.actions : so.actions & ~(GW_SALE_DO_DRAW | GW_SALE_DO_ADMIT);
        /* a copy that may be a deleted lottery's sends nothing to the store until the
         * fleet's configuration has been read (gw_fair_sale.loaded) */
        if (gw_fair__stale(fs))
            due[i] &= ~(GW_SALE_DO_WL | GW_SALE_DO_ENTRIES | GW_SALE_DO_DRAW);
        busy = busy || due[i];
    }
    gw_fair__rooms_tick(f, now, m, due);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        if (due[i] & GW_SALE_DO_WL) /* one walk for both stores, f->lot->wl */
            gw_fair__wl_tick(f, fs);
        if ((due[i] & GW_SALE_DO_ENTRIES) && f->lot->entries_tick)
            f->lot->entries_tick(f, fs);
        if (due[i] & GW_SALE_DO_DRAW)
            f->lot->draw_tick(f, fs,
                              gw_fair_closes_at(fs, atomic_load(&fs->sale.cfg.starts_at_ms)));
    }
    pthread_mutex_unlock(&f->tick_mu);
    return busy;
}

static void *fair_thread(void *arg)
{
    gw_server_t *srv = arg;
    gw_fair_t *f = srv->fair;
    while (!atomic_load(&f->stop)) {
        /* No lottery to draw and no waiting room: nothing to do at 20 ms, and
         * the fleet's lottery settings are polled every FLEET_CONF_POLL_MS
         * anyway, so 50 wakeups a second of an idle gateway buy nothing. */
        long ms = fair_tick(f) ? TICK_MS : IDLE_TICK_MS;
        struct timespec ts = {0, ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int gw_fair_start_thread(gw_server_t *srv, char *errbuf, size_t errlen)
{
    gw_fair_t *f = srv->fair;
    int rc = inv_worker_open(srv->stores.inv, NULL, &f->inv);
    if (rc) {
        cm_errbuf_set(errbuf, errlen, "lottery inventory handle: %s", cm_strerror(rc));
        return rc;
    }
    /* A fleet's configuration read once before the gateway says it is ready (the
     * thread's first tick would race the first buyers): a copy loaded at the start
     * is kept or dropped before it is asked for an entry (gw_fair__stale). Redis
     * away: the thread's polls read it later, and such a copy answers 503 until. */
    if (f->lot->tick) {
        pthread_mutex_lock(&f->tick_mu);
        f->lot->tick(f, cm_wall_ms());
        pthread_mutex_unlock(&f->tick_mu);
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
    if (f->lot->close)
        f->lot->close(f);
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++)
        gw_fair__sale_free(f->sales[i]);
    pthread_mutex_destroy(&f->mu);
    pthread_mutex_destroy(&f->tick_mu);
    pthread_mutex_destroy(&f->unclaim_mu);
    free(f);
    srv->fair = NULL;
}
void gw_fair_tick(gw_server_t *srv)
{
    if (srv->fair)
        (void)fair_tick(srv->fair);
}

/* A lottery that took entries and has not drawn yet: its window may not move. */
static bool undrawn_entries(gw_fair_sale_t *fs)
{
    pthread_mutex_lock(&fs->mu);
    bool busy = fs->n > 0 && !atomic_load(&fs->drawn);
    pthread_mutex_unlock(&fs->mu);
    return busy;
}

/*---- admin ----*/

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
                  "to its waitlist, then first-come; a new lottery needs a new sale)",
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
    bool moved = atomic_load(&fs->sale.cfg.fair_window_ms) != window_ms ||
                 atomic_load(&fs->sale.cfg.fair_early_ms) != early_ms;
    if (!moved && !(window_ms > 0 && starts_at_ms + window_ms > cm_wall_ms()))
        return 0;
    bool drawn = drawn_here(fs);
    int rc =
        drawn || !f->lot->record ? 0 : f->lot->record(f, fs->sale_id, &drawn, NULL, errbuf, errlen);
    if (rc)
        return rc;
    return drawn ? drawn_refusal(fs->sale_id, errbuf, errlen) : 0;
}

int gw_fair_configure_check(gw_server_t *srv, const char *sale_id, int64_t starts_at_ms,
                            int64_t window_ms, int64_t early_ms, int64_t wr_rate, char *errbuf,
                            size_t errlen)
{
    gw_fair_t *f = srv->fair;
    int rc = range_check(window_ms, early_ms, wr_rate, errbuf, errlen);
    if (rc)
        return rc;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    /* a copy of a lottery deleted (and maybe created again) while this gateway was down
     * goes first, as its poll would drop it, or this PUT would take it for the sale's */
    if (fs && (drawn_here(fs) || undrawn_entries(fs)) && f->lot->conf_read &&
        (rc = f->lot->conf_read(f, sale_id, errbuf, errlen)) != 0)
        return rc;
    if (!fs && (window_ms || wr_rate) && atomic_load(&f->n) == FAIR_MAX_SALES) {
        cm_errbuf_set(errbuf, errlen, "too many sales with a lottery (max %d)", FAIR_MAX_SALES);
        return CM_EINVAL;
    }
    if (fs && (rc = drawn_check(f, fs, starts_at_ms, window_ms, early_ms, errbuf, errlen)) != 0)
        return rc;
    if (fs ? atomic_load(&fs->sale.cfg.fair_window_ms) == window_ms &&
                 atomic_load(&fs->sale.cfg.fair_early_ms) == early_ms
           : window_ms == 0)
        return 0;
    bool busy = fs && undrawn_entries(fs);
    /* other gateways of a fleet keep their entries until the close: the store knows */
    if (!busy && f->lot->record &&
        (rc = f->lot->record(f, sale_id, NULL, &busy, errbuf, errlen)) != 0)
        return rc;
    return busy ? gw_fair__busy_refusal(sale_id, errbuf, errlen) : 0;
}

int gw_fair_configure(gw_server_t *srv, const char *sale_id, int64_t window_ms, int64_t early_ms,
                      int64_t wr_rate, char *errbuf, size_t errlen)
{
    gw_fair_t *f = srv->fair;
    int rc = range_check(window_ms, early_ms, wr_rate, errbuf, errlen);
    if (rc)
        return rc;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    bool moved = fs && (atomic_load(&fs->sale.cfg.fair_window_ms) != window_ms ||
                        atomic_load(&fs->sale.cfg.fair_early_ms) != early_ms);
    if (moved && drawn_here(fs))
        return drawn_refusal(sale_id, errbuf, errlen); /* one draw per sale (drawn_check) */
    /* refused before the store hears of it (gw_fair__conf_apply_locked checks again) */
    if (moved && undrawn_entries(fs))
        return gw_fair__busy_refusal(sale_id, errbuf, errlen);
    cm_hash_key_t secret;
    uint64_t gen = 0;
    rc = f->lot->conf_put ? f->lot->conf_put(f, sale_id, window_ms, early_ms, wr_rate, &secret,
                                             &gen, errbuf, errlen)
                          : 0;
    if (rc < 0)
        return rc;
    bool have_secret = rc == 1;
    pthread_mutex_lock(&f->mu);
    rc = gw_fair__conf_apply_locked(f, sale_id, window_ms, early_ms, wr_rate,
                                    have_secret ? &secret : NULL, have_secret ? gen : 0, true,
                                    errbuf, errlen);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int gw_fair_sale_deleted(gw_server_t *srv, const char *sale_id, bool sale_gone, char *errbuf,
                         size_t errlen)
{
    gw_fair_t *f = srv->fair;
    if (!f)
        return sale_gone ? CM_ENOTFOUND : 0;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    bool here = false;
    if (fs) {
        pthread_mutex_lock(&fs->mu);
        here = fs->n > 0 || gw_fair__past_close(fs);
        pthread_mutex_unlock(&fs->mu);
        here = here || atomic_load(&fs->sale.cfg.fair_window_ms) > 0 ||
               atomic_load(&fs->sale.cfg.room_rate) > 0;
    }
    bool store_has = false;
    int rc =
        f->lot->drop ? f->lot->drop(f, sale_id, sale_gone, &here, &store_has, errbuf, errlen) : 0;
    if (rc)
        return rc;
    if (sale_gone && !here && !store_has)
        return CM_ENOTFOUND;
    if (fs) {
        pthread_mutex_lock(&f->tick_mu);
        pthread_mutex_lock(&f->mu);
        rc = gw_fair__sale_reset(f, fs);
        if (gw_fair__conf_save(f) != 0)
            rc = CM_EIO;
        pthread_mutex_unlock(&f->mu);
        pthread_mutex_unlock(&f->tick_mu);
        if (rc) {
            cm_errbuf_set(errbuf, errlen, "cannot drop the lottery of sale %s in %s", sale_id,
                          f->dir);
            return rc;
        }
    }
    if (here || store_has)
        cm_log_info("fair", "lottery of a deleted sale dropped", "sale=%s", sale_id);
    return 0;
}

void gw_fair_conf_get(gw_fair_t *f, const char *sale_id, int64_t *window_ms, int64_t *early_ms)
{
    *window_ms = *early_ms = 0;
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    if (fs) {
        *window_ms = atomic_load(&fs->sale.cfg.fair_window_ms);
        *early_ms = atomic_load(&fs->sale.cfg.fair_early_ms);
    }
}
