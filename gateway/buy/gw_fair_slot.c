/*
 * A sale's slot in the fairness table: its creation, its update from the
 * admin or the fleet's configuration, and its reset when the sale is deleted.
 * gw_fair.c (the admin calls, the load) and gw_fair_fleet.c (the fleet's
 * configuration) both call these, and these call neither, so the two do not
 * need each other (tests/unit/call_pairs.sh). Below: the tables and the log
 * (gw_fair_table.c), the room's and registration's own resets.
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_core.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg_backend.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "gateway/base/gw_base.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int gw_fair__busy_refusal(const char *sale_id, char *errbuf, size_t errlen)
{
    cm_errbuf_set(errbuf, errlen,
                  "the lottery of sale %s has entries and no draw yet: its window cannot "
                  "change now",
                  sale_id);
    return CM_EINVAL;
}

gw_fair_sale_t *gw_fair__sale_new(gw_fair_t *f, const char *sale_id)
{
    gw_fair_sale_t *fs = cm_xcalloc(1, sizeof(*fs));
    fs->f = f;
    snprintf(fs->sale_id, sizeof(fs->sale_id), "%s", sale_id);
    gw_fair__room_keys(fs);
    gw_sale_core_init(&fs->sale, &fs->core, &fs->wr_core, &fs->reg_core);
    pthread_mutex_init(&fs->mu, NULL);
    pthread_mutex_init(&fs->wr_mu, NULL);
    pthread_mutex_init(&fs->reg_mu, NULL);
    gw_wr_spent_init(&fs->wr_spent);
    gw_fair__room_store_init(&fs->wr_store);
    /* the room's and registration's stores: those of the lottery's (gw_fair_open's one choice) */
    fs->wr_ops = f->lot->room;
    fs->reg_ops = f->lot->reg;
    (void)gw_fair__sale_terms(fs);
    return fs;
}

/* The lottery's entries, tables, draw order and waitlist tree, freed (fs->mu held or
 * single-threaded). */
static void entries_free(gw_fair_sale_t *fs)
{
    free(fs->v);
    free(fs->by_user);
    free(fs->by_id);
    free(fs->perm);
    free(fs->wl_bit);
    free(fs->recs);
    fs->recs = NULL;
    fs->recs_len = fs->recs_cap = 0;
    fs->v = NULL;
    fs->by_user = fs->by_id = NULL;
    fs->perm = NULL;
    fs->wl_bit = NULL;
}

void gw_fair__sale_free(gw_fair_sale_t *fs)
{
    if (fs->log_open)
        cm_journal_discard(&fs->log);
    entries_free(fs);
    if (fs->reg_ops->free)
        fs->reg_ops->free(fs);
    gw_room_core_deinit(&fs->wr_core);
    gw_wr_spent_deinit(&fs->wr_spent);
    gw_fair__room_store_deinit(&fs->wr_store);
    pthread_mutex_destroy(&fs->mu);
    pthread_mutex_destroy(&fs->wr_mu);
    pthread_mutex_destroy(&fs->reg_mu);
    free(fs);
}

const gw_sale_core_t *gw_fair_machine(const gw_fair_sale_t *fs)
{
    return &fs->sale;
}

bool gw_fair__sale_terms(gw_fair_sale_t *fs)
{
    gw_server_t *srv = fs->f->srv;
    gw_sale_conf_t *g = &fs->sale.cfg;
    atomic_store_explicit(&g->max_entries, srv->cfg->max_lottery_entries, memory_order_relaxed);
    atomic_store_explicit(&g->reg_cap, srv->cfg->max_registrations, memory_order_relaxed);
    atomic_store_explicit(&g->waitlist, true, memory_order_relaxed); /* losers wait until ends_at */
    inv_sale_t *s = inv_sale_find(srv->stores.inv, fs->sale_id);
    if (!s)
        return false;
    gw_fair_terms(fs, s);
    return true;
}

void gw_fair_terms(gw_fair_sale_t *fs, const inv_sale_t *s)
{
    gw_sale_conf_t *g = &fs->sale.cfg;
    inv_sale_terms_t t;
    inv_sale_terms(s, &t);
    /* stored only when they moved: a route calls this on every join */
    if (atomic_load_explicit(&g->starts_at_ms, memory_order_relaxed) != t.starts_at_ms)
        atomic_store_explicit(&g->starts_at_ms, t.starts_at_ms, memory_order_relaxed);
    if (atomic_load_explicit(&g->ends_at_ms, memory_order_relaxed) != t.ends_at_ms)
        atomic_store_explicit(&g->ends_at_ms, t.ends_at_ms, memory_order_relaxed);
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
int gw_fair__sale_reset(gw_fair_t *f, gw_fair_sale_t *fs)
{
    atomic_store(&fs->sale.cfg.fair_window_ms, 0);
    atomic_store(&fs->sale.cfg.fair_early_ms, 0);
    atomic_store(&fs->sale.cfg.room_rate, 0);
    fs->lot_gen = 0; /* the next lottery under the id brings its own */
    fs->gen_seen = false;
    pthread_mutex_lock(&fs->mu);
    entries_free(fs);
    fs->waitlisted = fs->promoted = 0;
    gw_wl_core_init(&fs->sale.wl, 0);
    fs->sale.leftovers = false;
    fs->wl_ended = fs->wl_cut = false;
    fs->wl_retry_ms = 0;
    fs->wl_gen = 0;
    fs->wl_polled_ms = 0;
    fs->wl_giveback[0] = '\0';
    fs->n = fs->cap = fs->tcap = 0;
    gw_fair_core_init(&fs->core); /* a new lottery, taking entries */
    fs->draw_started_ms = fs->draw_done_ms = fs->draw_retry_ms = 0;
    fs->won_orders = fs->won_units = fs->lost = 0;
    atomic_store(&fs->drawn, false);
    atomic_store(&fs->duplicates, 0);
    fs->pushed = fs->marked = false;
    fs->mark_next = 0;
    /* a new, empty log: the old lines (entries, seed, winners, end) must not load again */
    if (fs->log_open) /* no fdatasync of a file being removed */
        cm_journal_discard(&fs->log);
    fs->log_open = false;
    char path[700];
    gw_fair__log_path(f, fs->sale_id, path, sizeof(path));
    /* removed durably (its directory fsync'd) before the new log is made: fair.json, saved
     * after this in another directory, says the lottery is gone or new, and a power cut that
     * kept that but brought the old file's name back would load its lines into the new
     * lottery (seed 123 --fairfleet, docs/simulation.md). A failed fsync still makes the new
     * log (the slot takes entries again) and fails the delete: it is sent again. A file that
     * could not be unlinked is not opened again. */
    int rc = cm_journal_fs()->unlink(path) == 0 || errno == ENOENT ? 0 : CM_EIO;
    if (rc == 0) {
        if (!CM_PLANT(FAIR_RESET_UNSYNCED) && cm_journal_dir_sync(path) != 0)
            rc = CM_EIO;
        int orc = gw_fair__log_open(f, fs);
        rc = rc ? rc : orc;
    }
    pthread_mutex_unlock(&fs->mu);
    /* registration: its window cleared before reg_mu, its set and log dropped under it
     * (a registration that passed the route's check before is refused GONE, no log again) */
    atomic_store(&fs->sale.cfg.reg_opens_ms, 0);
    atomic_store(&fs->sale.cfg.reg_closes_ms, 0);
    pthread_mutex_lock(&fs->reg_mu);
    if (fs->reg_ops->drop && fs->reg_ops->drop(f, fs) != 0)
        rc = CM_EIO;
    gw_reg_core_init(&fs->reg_core);
    pthread_mutex_unlock(&fs->reg_mu);
    gw_fair__room_reset(fs);
    if (rc)
        cm_log_error("fair", "cannot empty the entry log of a deleted sale", "sale=%s err=%s",
                     fs->sale_id, strerror(errno));
    return rc;
}

bool gw_fair__past_close(gw_fair_sale_t *fs)
{
    return fs->closed || fs->seeded || atomic_load(&fs->drawn);
}

int gw_fair__conf_apply_locked(gw_fair_t *f, const char *sale_id, int64_t window_ms,
                               int64_t early_ms, int64_t wr_rate, const cm_hash_key_t *secret,
                               uint64_t gen, bool refuse_busy, char *errbuf, size_t errlen)
{
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    /* A save that failed made memory run ahead of fair.json: the PUT's retry, which
     * finds its own change already applied, saves it. */
    bool changed = atomic_load(&f->conf_unsaved);
    if (fs) {
        int64_t ow = atomic_load(&fs->sale.cfg.fair_window_ms),
                oe = atomic_load(&fs->sale.cfg.fair_early_ms);
        pthread_mutex_lock(&fs->mu);
        bool busy = fs->n > 0 && !atomic_load(&fs->drawn);
        if (refuse_busy && busy && (ow != window_ms || oe != early_ms)) {
            pthread_mutex_unlock(&fs->mu);
            return gw_fair__busy_refusal(sale_id, errbuf, errlen);
        }
        bool rk = secret && (secret->k0 != fs->secret.k0 || secret->k1 != fs->secret.k1);
        if (rk) {
            fs->secret = *secret;
            gw_fair__tables_rekey(fs);
        }
        pthread_mutex_unlock(&fs->mu);
        bool rg = gen && gen != fs->lot_gen;
        if (rg)
            fs->lot_gen = gen;
        changed = changed || rk || rg || ow != window_ms || oe != early_ms ||
                  atomic_load(&fs->sale.cfg.room_rate) != wr_rate;
        atomic_store(&fs->sale.cfg.fair_window_ms, window_ms);
        atomic_store(&fs->sale.cfg.fair_early_ms, early_ms);
        atomic_store(&fs->sale.cfg.room_rate, wr_rate);
        (void)gw_fair__sale_terms(fs); /* the admin's PUT: the sale's new start and end */
    } else if (window_ms != 0 || wr_rate != 0) { /* else nothing to remove */
        if (atomic_load(&f->n) == FAIR_MAX_SALES) {
            cm_errbuf_set(errbuf, errlen, "too many sales with a lottery (max %d)",
                          FAIR_MAX_SALES);
            return CM_EINVAL;
        }
        fs = gw_fair__sale_new(f, sale_id);
        int rnd = 0;
        fs->lot_gen = gen;
        if (secret)
            fs->secret = *secret;
        else
            rnd = cm_hash_seed_random(&fs->secret);
        if (rnd != 0 || gw_fair__log_open(f, fs) != 0) {
            cm_errbuf_set(errbuf, errlen, "cannot set up the lottery of sale %s", sale_id);
            gw_fair__sale_free(fs);
            return CM_EIO;
        }
        atomic_init(&fs->sale.cfg.fair_window_ms, window_ms);
        atomic_init(&fs->sale.cfg.fair_early_ms, early_ms);
        atomic_init(&fs->sale.cfg.room_rate, wr_rate);
        f->sales[atomic_load(&f->n)] = fs;
        atomic_fetch_add_explicit(&f->n, 1, memory_order_release);
        changed = true;
    }
    if (changed && gw_fair__conf_save(f) != 0) {
        cm_errbuf_set(errbuf, errlen, "cannot save the lottery configuration");
        return CM_EIO;
    }
    return 0;
}
