/*
 * Fair start: the start-window lottery: the entries (a fleet's too: each is in
 * this gateway's log until the close) and, on one gateway, the draw and its log,
 * the local store's (see gw_fair.h for the rules; gw_fair_store.c).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_core.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_sale_core.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t *gw_fair__draw_perm(const entry_t *all, size_t n, uint64_t seed)
{
    uint32_t *perm = cm_xmalloc((n ? n : 1) * sizeof(uint32_t));
    uint64_t *keys = cm_xmalloc((n ? n : 1) * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        keys[i] = all[i].key;
    gw_fair_order(keys, n, seed, perm);
    free(keys);
    return perm;
}

/*---- the shell of the lottery's core (gw_fair_core.h: every decision is there) ----*/

/* The core's DO_ORDER: the draw order of the frozen entrants (the first
 * fs->ndraw entries) from the seed. fs->mu held. */
static void compute_order(gw_fair_sale_t *fs)
{
    free(fs->perm);
    fs->perm = gw_fair__draw_perm(fs->v, fs->ndraw, fs->seed);
    for (size_t i = 0; i < fs->ndraw; i++)
        fs->v[fs->perm[i]].pos = (uint32_t)(i + 1);
    gw_fair__wl_init(fs);
}

/*
 * The sale's log durable through its end (gw_fair__log_line with no line: its
 * sync): the seed and the end of a draw are trusted only once this succeeds.
 * Written again first (cm_journal_rewrite) while the journal is dropped: after a
 * failed fdatasync the lines read back from the page cache and a later fdatasync
 * succeeds without writing them (cm_journal.h), and a log found at the start may
 * be one a failed fdatasync of the process before left so
 * (CM_JOURNAL_REWRITE_FOUND). The whole log, not only the line: the seed's
 * fdatasync is the log's first ("E" lines go unsynced), and a draw with entries
 * lost at a power loss would resume over fewer entrants, or another seed, while
 * its winners hold orders (the simulator's seeds 587 and 1207 with
 * --open-defects). A rewrite that reads back stale bytes (a failed fdatasync's
 * pages evicted) is refused, and the log is then written anew from the sale's
 * state (gw_fair__log_sync). fs->mu is released for it (the core's stage holds
 * back what acts on the draw); held on entry and on return. 0 or CM_EIO.
 */
static int log_resync(gw_fair_t *f, gw_fair_sale_t *fs)
{
    if (gw_fair__log_open(f, fs) != 0)
        return CM_EIO;
    return gw_fair__log_sync(fs, true);
}

/* Counts an entry of the draw as won (once). fs->mu held or single-threaded. */
static void mark_won(gw_fair_sale_t *fs, entry_t *e)
{
    if (e->state == GW_ENTRY_WON)
        return;
    if (e->state == GW_ENTRY_WAITLISTED)
        gw_fair__wl_remove(fs, e);
    else if (e->state == GW_ENTRY_LOST) /* its order came back from the spool after all */
        fs->lost--;
    e->promo_cut = false;
    e->state = GW_ENTRY_WON;
    fs->won_orders++;
    fs->won_units += e->qty;
}

/*
 * Reads one sale's entry log. Single-threaded (open).
 *
 * The log's lines: "E order user qty at idem [k] [f=stamp]" an entry (k: the
 * key is a literal "-"; stamp: inv_idem_fp_stamp of the raw key, in hex); "D seed at n" the
 * draw's seed, written (fdatasync) before its first reserve; "W order" a
 * winner whose order is durable in the spool (written after the spool's
 * commit); "O at" the stock ran out in the draw (written once the winners
 * before it are committed, as durable as they are, and before the next
 * entrant is decided: a resumed draw tries nobody after it); "F at"
 * the draw done, written after every winner's "W" line. A draw cut by a
 * crash (a "D" and no "F") learns its winners from the spool
 * (gw_fair__cut_winners; docs/design.md says why not from the status table).
 *
 * A hole the journal skipped (records lost: cm_journal_lines_open_holes)
 * between "D" and "F" leaves the draw decided but not done: its winners
 * are read from the spool as well, and their "W" lines and the "F" written
 * again (gw_fair_core.c on_loaded). A log written anew from the state
 * (gw_fair__log_sync) carries such a hole over as a "?" record, which
 * reads back as the same line.
 *
 * The waitlist's lines (gw_waitlist.c): "F at w" a draw whose losers are
 * waitlisted (an "F at" without it, from before the waitlist: they are lost);
 * "X order" an entry lost for cause (the draw or a promotion refused it, not
 * the stock), "P order" a promotion about to reserve (fdatasync'd), "W order"
 * its order committed, "L at" the sale ended: the waitlisted are lost. A "P"
 * without its "W" is read from the spool as a cut draw's winners are.
 */
void gw_fair__log_load(gw_fair_t *f, gw_fair_sale_t *fs, uint64_t *max_id)
{
    char path[700];
    gw_fair__log_path(f, fs->sale_id, path, sizeof(path));
    /* the journal's records, a line each, and "?" where a hole was skipped */
    FILE *fp = cm_journal_lines_open_holes(path, "?");
    if (!fp)
        return;
    char line[512];
    gw_fair_out_t out;
    while (fgets(line, sizeof(line), fp)) {
        size_t len = strlen(line);
        /* every record ends its line (the journal's open cut a torn tail off
         * the file): one that does not is longer than any the log writes */
        if (!len || line[len - 1] != '\n')
            break;
        entry_t e = {0};
        unsigned qty;
        long long at, seedlo;
        unsigned long long seed;
        char mark[2][16] = {"", ""};
        if (line[0] == 'E' && sscanf(line, "E %31s %64s %u %lld %128s %15s %15s", e.order_id,
                                     e.user_id, &qty, &at, e.idem, mark[0], mark[1]) >= 5) {
            e.qty = qty;
            e.at_ms = at;
            bool k = strcmp(mark[0], "k") == 0; /* a literal "-" key */
            gw_fair__idem_in(e.idem, k ? 6 : 5, 6, k ? "k" : "");
            const char *fpm = mark[k ? 1 : 0];
            if (e.idem[0] && strncmp(fpm, "f=", 2) == 0)
                e.key_fp = inv_idem_fp_unstamp(strtoull(fpm + 2, NULL, 16));
            gw_fair__person_in(&e, line, 6); /* E id user qty at key [k] [f=fp] [@person] */
            e.key = gw_fair__hash_str(fs, e.person);
            gw_fair_ev_t ev = {.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_ENTRY};
            ev.found =
                gw_fair__find_user(fs, e.person, e.key) ? GW_FAIR_FOUND_SAME : GW_FAIR_FOUND_NONE;
            gw_fair_core_step(&fs->core, &ev, &out);
            if (!(out.actions & GW_FAIR_DO_ADD_ENTRY))
                continue;
            gw_fair__entry_add(fs, &e);
            uint64_t id;
            if (cm_id_parse(e.order_id, strlen(e.order_id), &id) == 0 && id > *max_id)
                *max_id = id;
        } else if (line[0] == 'D' && sscanf(line, "D %llx %lld %lld", &seed, &at, &seedlo) >= 2) {
            gw_fair_ev_t ev = {.kind = GW_FAIR_EV_RECORD,
                               .rec = GW_FAIR_REC_SEED,
                               .seed = seed,
                               .entrants = fs->n};
            gw_fair_core_step(&fs->core, &ev, &out);
            fs->draw_started_ms = at;
            /* kept with the entries before it: a write anew freezes the same ones */
            char d[96];
            int dl = snprintf(d, sizeof(d), "D %016llx %lld %zu\n", seed, at, fs->n);
            gw_fair__log_rec(fs, d, (size_t)dl);
        } else if (line[0] == 'W' && fs->seeded) {
            char id[INV_ORDER_ID_MAX + 1];
            entry_t *w = sscanf(line, "W %31s", id) == 1 ? gw_fair__find_id(fs, id) : NULL;
            gw_fair_ev_t ev = {.kind = GW_FAIR_EV_RECORD,
                               .rec = GW_FAIR_REC_WON,
                               .within = w && w < fs->v + fs->ndraw};
            gw_fair_core_step(&fs->core, &ev, &out);
            if (w && (out.actions & GW_FAIR_DO_SET_STATE)) {
                mark_won(fs, w);
                w->wlogged = true;
            }
            gw_fair__log_rec(fs, line, len);
        } else if ((line[0] == 'P' || line[0] == 'X') && fs->seeded) {
            char id[INV_ORDER_ID_MAX + 1];
            entry_t *p = sscanf(line + 1, " %31s", id) == 1 ? gw_fair__find_id(fs, id) : NULL;
            if (p && p < fs->v + fs->ndraw && p->state != GW_ENTRY_WON) {
                if (line[0] == 'P')
                    p->promo_cut = true;
                else
                    p->lost_logged = true;
            }
            gw_fair__log_rec(fs, line, len);
        } else if (line[0] == 'F' && sscanf(line, "F %lld", &at) == 1) {
            char wflag[2] = "";
            gw_fair_ev_t ev = {.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_END};
            ev.waitlist = sscanf(line, "F %lld %1s", &at, wflag) == 2 && wflag[0] == 'w';
            gw_fair_core_step(&fs->core, &ev, &out);
            fs->draw_done_ms = at;
            gw_fair__log_rec(fs, line, len);
        } else if (line[0] == 'O') {
            gw_fair_ev_t ev = {.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_SOLD_OUT};
            gw_fair_core_step(&fs->core, &ev, &out);
            gw_fair__log_rec(fs, line, len);
        } else if (line[0] == 'L' && fs->seeded) {
            fs->wl_ended = true;
            gw_fair__log_rec(fs, line, len);
        } else if (line[0] == '?' && line[1] == '\n') { /* records lost here */
            gw_fair_ev_t ev = {.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_HOLE};
            gw_fair_core_step(&fs->core, &ev, &out);
            /* a write anew keeps it, as a "?" record (read back as the same
             * line): an "F" after it must still not make the draw done */
            if (fs->seeded)
                gw_fair__log_rec(fs, line, len);
        }
    }
    fclose(fp);
    if (!fs->seeded)
        return;
    /* the seed and its entries may read back only from the page cache (a failed
     * fdatasync, then a kill -9): made durable before the draw resumes or counts
     * as done (log_resync's reasons; single-threaded here) */
    gw_sale_out_t so; /* through the sale's machine: its PUBLISH opens the leftovers */
    int rc = gw_fair__log_open(f, fs) != 0 ? CM_EIO : gw_fair__log_line(fs, "", 0, true);
    gw_sale_ev_t ev = {.kind = GW_SALE_EV_FAIR, .fair = {.kind = GW_FAIR_EV_LOADED, .rc = rc}};
    gw_sale_step(&fs->sale, &ev, 0, &so);
    out = so.fair;
    if (out.actions & GW_FAIR_DO_ORDER)
        compute_order(fs);
    /* A log written before the "W" lines: its winners are the orders the
     * status table still knows (an order it knows is one, whatever else). */
    for (size_t i = 0; i < fs->ndraw; i++) {
        entry_t *e = &fs->v[i];
        if (gw_orders_get(f->srv->stores.orders, e->order_id, NULL))
            mark_won(fs, e);
        /* a cut draw's entrant lost for cause ("X") is decided: the resumed
         * draw skips it (a finished draw's leftovers read it below) */
        else if (!(out.actions & GW_FAIR_DO_LEFTOVERS) && e->lost_logged &&
                 e->state == GW_ENTRY_ENTERED) {
            e->state = GW_ENTRY_LOST;
            fs->lost++;
        }
    }
    if (out.actions & GW_FAIR_DO_LEFTOVERS) {
        for (size_t i = 0; i < fs->ndraw; i++) {
            entry_t *e = &fs->v[i];
            if (e->state == GW_ENTRY_WON)
                continue;
            /* the "L" line: the sale ended, the waitlist with it */
            if (!fs->wl_ended &&
                gw_fair_core_loser(&fs->core, e->lost_logged) == GW_ENTRY_WAITLISTED) {
                gw_fair__wl_add(fs, e);
                fs->wl_cut = fs->wl_cut || e->promo_cut;
            } else {
                e->state = GW_ENTRY_LOST;
                fs->lost++;
            }
        }
        /* decided, but done only once "F" is durable: else the draw's
         * thread writes the lines again (gw_fair__run_draw) */
        if (out.actions & GW_FAIR_DO_PUBLISH) {
            gw_fair__wl_told(fs);
            atomic_store(&fs->drawn, true);
        } else if (fs->lot_holed) {
            /* its winners from the spool (gw_fair__cut_winners), then the
             * draw's thread writes their lines and the end again */
            cm_log_error("fair",
                         "the entry log lost records of the draw; its winners read from "
                         "the spool and its end written again",
                         "sale=%s", fs->sale_id);
        } else {
            cm_log_error("fair", "the end of the draw is not durable; written again", "sale=%s",
                         fs->sale_id);
        }
    } else if (fs->seed_unsynced) {
        /* the draw's thread writes the log again before it reserves anything */
        cm_log_error("fair", "the draw's seed is not durable; written again before the draw",
                     "sale=%s", fs->sale_id);
    }
}

/* An order of the spool that is an entry of a cut draw: that entry won. */
static int cut_winner_one(const oq_rec_t *rec, void *ctx)
{
    gw_fair_t *f = ctx;
    if (rec->type != OQ_REC_ORDER)
        return 0;
    const oq_order_t *o = rec->order;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, o->sale_id);
    /* a cut draw's (the core's rule), or a cut promotion's (the waitlist's) */
    if (!fs || !(gw_fair_core_takes_spooled(&fs->core) || (fs->seeded && fs->wl_cut)))
        return 0;
    entry_t *e = gw_fair__find_id(fs, o->order_id);
    if (e && e < fs->v + fs->ndraw && strcmp(e->user_id, o->user_id) == 0)
        mark_won(fs, e);
    return 0;
}

/*
 * The winners of draws cut by a crash (seeded, not finished), from the spool:
 * an entry whose order is in it was reserved, and the resumed draw must skip
 * it; one whose order is not holds nothing (docs/design.md, "A draw cut by a
 * crash"). One more read of the spool, only after such a crash.
 * Single-threaded (open).
 */
void gw_fair__cut_winners(gw_fair_t *f)
{
    size_t n = atomic_load(&f->n);
    bool cut = false;
    for (size_t i = 0; i < n && !cut; i++)
        cut = (f->sales[i]->seeded && !atomic_load(&f->sales[i]->drawn)) || f->sales[i]->wl_cut;
    if (!cut || !f->srv->stores.spool)
        return;
    uint64_t t0 = cm_mono_us();
    long rc = oq_spool_scan(f->srv->stores.spool, (oq_pos_t){0, 0}, cut_winner_one, f);
    if (rc < 0)
        cm_log_error("fair", "cannot read the spool for the winners of a cut draw", "err=%s",
                     cm_strerror((int)rc));
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        if (fs->wl_cut) {
            fs->wl_cut = false;
            gw_fair__wl_told(fs);
            cm_log_info("fair", "waitlist promotion cut by a restart read from the spool",
                        "sale=%s waitlisted=%llu", fs->sale_id, (unsigned long long)fs->waitlisted);
        }
        if (fs->seeded && !atomic_load(&fs->drawn))
            cm_log_info("fair", "draw cut by a restart resumes",
                        "sale=%s entrants=%zu won_orders=%llu elapsed_ms=%llu", fs->sale_id,
                        fs->ndraw, (unsigned long long)fs->won_orders,
                        (unsigned long long)((cm_mono_us() - t0) / 1000));
    }
}

/*---- the buy path ----*/

gw_fair_sale_t *gw_fair_find(gw_fair_t *f, const char *sale_id)
{
    if (!f || !atomic_load_explicit(&f->n, memory_order_acquire))
        return NULL;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    return fs && atomic_load_explicit(&fs->sale.cfg.fair_window_ms, memory_order_relaxed) > 0
               ? fs
               : NULL;
}

gw_fair_phase_t gw_fair_phase(gw_fair_sale_t *fs, int64_t starts_at_ms, int64_t now_ms)
{
    gw_sale_cfg_t cfg = {
        .starts_at_ms = starts_at_ms,
        .fair_early_ms = atomic_load_explicit(&fs->sale.cfg.fair_early_ms, memory_order_relaxed),
        .fair_window_ms = atomic_load_explicit(&fs->sale.cfg.fair_window_ms, memory_order_relaxed)};
    return gw_sale_buy_phase(gw_sale_phase_at(
        &cfg, atomic_load_explicit(&fs->drawn, memory_order_acquire), false, now_ms));
}

int64_t gw_fair_closes_at(gw_fair_sale_t *fs, int64_t starts_at_ms)
{
    return starts_at_ms + atomic_load_explicit(&fs->sale.cfg.fair_window_ms, memory_order_relaxed);
}

static void ticket_of(const gw_fair_sale_t *fs, const entry_t *e, gw_fair_ticket_t *t,
                      int64_t draw_at)
{
    snprintf(t->order_id, sizeof(t->order_id), "%s", e->order_id);
    snprintf(t->sale_id, sizeof(t->sale_id), "%s", fs->sale_id);
    snprintf(t->user_id, sizeof(t->user_id), "%s", e->user_id);
    snprintf(t->person, sizeof(t->person), "%s", e->person);
    t->qty = e->qty;
    t->entered_at_ms = e->at_ms;
    /* an outcome not yet durable reads as still being drawn (the core's rule) */
    t->state = gw_fair_core_answered(&fs->core, e->pos) ? e->state : GW_ENTRY_ENTERED;
    t->position = e->pos;
    t->entrants = (uint32_t)(fs->seeded ? fs->ndraw : fs->n);
    t->waitlist_place = t->state == GW_ENTRY_WAITLISTED ? gw_fair__wl_place(fs, e) : 0;
    t->draw_at_ms = draw_at;
}

int gw_fair_enter(gw_fair_sale_t *fs, gw_fair_ticket_t *t, const char *idem_key)
{
    int64_t draw_at = t->draw_at_ms;
    /* one entry per person across the store, checked before the local one */
    bool held = false, marked = false;
    int mrc = fs->f->lot->enter_mark ? fs->f->lot->enter_mark(fs, t, &held, &marked) : 0;
    if (mrc != 0)
        return mrc;
    char mark_id[INV_ORDER_ID_MAX + 1];
    memcpy(mark_id, t->order_id, sizeof(mark_id));
    pthread_mutex_lock(&fs->mu);
    const char *person = t->person[0] ? t->person : t->user_id;
    uint64_t key = gw_fair__hash_str(fs, person); /* under mu: the secret may be re-keyed */
    int rc;
    /* the machine decides the window (the buy path's phase was read without mu) */
    gw_sale_ev_t ev = {.kind = GW_SALE_EV_FAIR,
                       .fair = {.kind = GW_FAIR_EV_ENTER, .entrants = fs->n}};
    entry_t *e = fs->closed ? NULL : gw_fair__find_user(fs, person, key);
    if (e) {
        atomic_fetch_add_explicit(&fs->duplicates, 1, memory_order_relaxed);
        ev.fair.found =
            strcmp(e->user_id, t->user_id) == 0 ? GW_FAIR_FOUND_SAME : GW_FAIR_FOUND_OTHER;
    }
    gw_sale_out_t so;
    gw_sale_step(&fs->sale, &ev, t->entered_at_ms, &so);
    const gw_fair_out_t out = so.fair;
    if (out.answer == GW_FAIR_A_ALREADY && e)
        ticket_of(fs, e, t, draw_at);
    /* OTHER_ACCOUNT: its id and token are that account's, not this one's; no APPEND_ENTRY:
     * out of the window, or the draw took the entries */
    rc = out.answer == GW_FAIR_A_ALREADY && e       ? 1
         : out.answer == GW_FAIR_A_OTHER_ACCOUNT    ? GW_FAIR_OTHER_ACCOUNT
         : out.answer == GW_FAIR_A_FULL             ? GW_FAIR_FULL
         : !(out.actions & GW_FAIR_DO_APPEND_ENTRY) ? CM_EBUSY
                                                    : 0;
    if (rc != 0)
        goto out;
    entry_t ne = {.qty = t->qty, .at_ms = t->entered_at_ms, .key = key, .fleet_marked = held};
    snprintf(ne.order_id, sizeof(ne.order_id), "%s", t->order_id);
    snprintf(ne.user_id, sizeof(ne.user_id), "%s", t->user_id);
    snprintf(ne.person, sizeof(ne.person), "%s", person);
    snprintf(ne.idem, sizeof(ne.idem), "%s", idem_key ? idem_key : "");
    ne.key_fp = ne.idem[0] ? t->key_fp : 0;
    char line[400];
    size_t len = gw_fair__entry_line(&ne, line, sizeof(line));
    ev.fair = (gw_fair_ev_t){.kind = GW_FAIR_EV_ENTRY_LOGGED,
                             .rc = len ? gw_fair__log_line(fs, line, len, false) : CM_EINVAL};
    gw_sale_step(&fs->sale, &ev, t->entered_at_ms, &so);
    if (!(so.fair.actions & GW_FAIR_DO_ADD_ENTRY)) {
        rc = CM_EIO;
        goto out;
    }
    e = gw_fair__entry_add(fs, &ne);
    ticket_of(fs, e, t, draw_at);
    rc = 0;
out:
    pthread_mutex_unlock(&fs->mu);
    /* the mark names no entry after all (a retry of the account racing this one
     * wrote the same id: then it does) */
    if (marked && rc != 0 && (rc != 1 || strcmp(t->order_id, mark_id) != 0))
        fs->f->lot->enter_unmark(fs, t, mark_id);
    return rc;
}

int gw_fair_lookup(gw_fair_t *f, const char *order_id, gw_fair_ticket_t *out)
{
    if (!f)
        return 0;
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        pthread_mutex_lock(&fs->mu);
        entry_t *e = gw_fair__find_id(fs, order_id);
        if (e)
            ticket_of(fs, e, out, gw_fair_closes_at(fs, atomic_load(&fs->sale.cfg.starts_at_ms)));
        pthread_mutex_unlock(&fs->mu);
        if (e)
            return 1;
    }
    return f->lot->lookup ? f->lot->lookup(f, order_id, out) : 0;
}

/*---- the draw ----*/

/*
 * Appends a "W" line for every winner of the draw that has none yet (its
 * order is durable: spooled and committed, or replayed from the spool), in
 * one write(2). fs->mu held. Returns 0 or CM_EIO.
 */
static int log_winners(gw_fair_sale_t *fs)
{
    size_t cap = fs->ndraw * (INV_ORDER_ID_MAX + 4) + 1, len = 0;
    char *buf = cm_xmalloc(cap);
    for (size_t i = 0; i < fs->ndraw; i++)
        if (fs->v[i].state == GW_ENTRY_WON && !fs->v[i].wlogged)
            len += (size_t)snprintf(buf + len, cap - len, "W %s\n", fs->v[i].order_id);
    int rc = len ? gw_fair__log_line(fs, buf, len, false) : 0;
    free(buf);
    for (size_t i = 0; i < fs->ndraw && rc == 0; i++)
        fs->v[i].wlogged = fs->v[i].wlogged || fs->v[i].state == GW_ENTRY_WON;
    return rc;
}

/*
 * Appends a line and, if sync, makes it durable with fs->mu released for the
 * fdatasync (log_resync: workers entering or polling take fs->mu, and a sync
 * takes milliseconds to seconds on a loaded disk). What acts on the draw is
 * held back meanwhile by the core's stage (an entry is answered closed, the
 * draw waits for the event this returns). The sale's reset discards the
 * journal only under f->tick_mu, which the lottery thread holds here. fs->mu
 * held on entry and on return. Returns 0 or CM_EIO.
 */
static int log_line_synced(gw_fair_sale_t *fs, const char *line, size_t len, bool sync)
{
    int rc = gw_fair__log_line(fs, line, len, false);
    return rc == 0 && sync ? log_resync(fs->f, fs) : rc;
}

/*
 * The draw from the core's next position on, each decision the core's
 * (gw_fair_core.c), each store's part through f->lot->draw: the seed made
 * durable and the entrants frozen, then each entrant in draw order accepted
 * while the stock lasts, the stock's end recorded (durable, with the winners
 * before it, before the next entrant is decided), then the outcomes' and the
 * end's records; the draw is done once they are durable.
 */
void gw_fair__run_draw(gw_fair_t *f, gw_fair_sale_t *fs, int64_t closes_at_ms)
{
    (void)closes_at_ms; /* the sale's machine holds the window (fs->sale) */
    const gw_fair_draw_ops_t *ops = f->lot->draw;
    gw_fair_draw_t d = {.f = f,
                        .fs = fs,
                        .sale = inv_sale_find(f->srv->stores.inv, fs->sale_id),
                        .now = cm_wall_ms()};
    ops->begin(&d);
    gw_fair_core_t *c = d.core;
    pthread_mutex_lock(d.mu);
    bool seeded = c->seeded && !c->seed_unsynced; /* a resumed draw */
    cm_hash_key_t rnd = {0, 0};
    if (!seeded && (c->seeded || cm_hash_seed_random(&rnd) == 0))
        seeded = ops->seed(&d, rnd.k0 ^ (rnd.k1 << 32 | rnd.k1 >> 32));
    pthread_mutex_unlock(d.mu);
    if (!seeded) {
        ops->end(&d, false);
        return;
    }

    d.now = cm_wall_ms();
    bool failed = false;
    gw_fair_out_t out;
    for (;;) {
        pthread_mutex_lock(d.mu);
        if (c->next >= c->ndraw || c->seed_unsynced) {
            pthread_mutex_unlock(d.mu);
            break;
        }
        /* the losers wait for freed units (the leftovers) unless the sale is
         * over already; the core decides it once (a resumed draw keeps it) */
        ops->step(&d, &(gw_fair_ev_t){.kind = GW_FAIR_EV_TICK}, &out);
        if (!(out.actions & GW_FAIR_DO_DRAW)) {
            pthread_mutex_unlock(d.mu);
            break;
        }
        /* decided already (its record, the spool, a drawer before) or not */
        gw_fair_ev_t ev = {.kind = GW_FAIR_EV_DRAW};
        const entry_t *e = ops->entrant(&d, out.entry, &ev.state);
        ops->step(&d, &ev, &out);
        if (out.actions & GW_FAIR_DO_ACCEPT) {
            pthread_mutex_unlock(d.mu);
            /* the sale went: nothing to win, the rest are not tried */
            ev = d.sale ? ops->accept(&d, e)
                        : (gw_fair_ev_t){.kind = GW_FAIR_EV_ACCEPTED,
                                         .acc = GW_FAIR_ACC_SOLD_OUT,
                                         .sold_out = true};
            pthread_mutex_lock(d.mu);
            ops->step(&d, &ev, &out);
            if (ev.acc == GW_FAIR_ACC_FAILED) { /* resumed at the next tick */
                failed = true;
                pthread_mutex_unlock(d.mu);
                break;
            }
        }
        if ((out.actions & GW_FAIR_DO_SET_STATE) && ops->set_state)
            ops->set_state(&d, &out,
                           ev.kind == GW_FAIR_EV_ACCEPTED &&
                               (ev.acc == GW_FAIR_ACC_REFUSED || ev.acc == GW_FAIR_ACC_DENIED));
        if (out.actions & GW_FAIR_DO_LOG_SOLD_OUT) {
            /* the winners before it durable first: a power loss that lost
             * them would otherwise leave their units to nobody */
            if (ops->commit) {
                pthread_mutex_unlock(d.mu);
                ops->commit(&d);
                pthread_mutex_lock(d.mu);
            }
            ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_SOLD_OUT_LOGGED,
                                .rc = ops->sold_out ? ops->sold_out(&d) : 0};
            ops->step(&d, &ev, &out);
        }
        pthread_mutex_unlock(d.mu);
    }
    if (ops->commit)
        ops->commit(&d);
    bool done = false;
    pthread_mutex_lock(d.mu);
    if (!failed && c->next >= c->ndraw) {
        /* The draw is done once the end's record is durable, not before (the
         * core's rule): until then buys get 503 and the next tick writes the
         * records again. */
        d.now = cm_wall_ms();
        ops->step(&d, &(gw_fair_ev_t){.kind = GW_FAIR_EV_TICK}, &out);
        gw_fair_ev_t ev = {.kind = GW_FAIR_EV_DRAW_LOGGED, .rc = CM_EINVAL};
        if (out.actions & GW_FAIR_DO_LOG_OUTCOMES)
            ev.rc = ops->outcomes(&d, out.waitlist);
        ops->step(&d, &ev, &out); /* its PUBLISH opens the leftovers */
        done = (out.actions & GW_FAIR_DO_PUBLISH) != 0;
        if (ops->publish)
            ops->publish(&d, done);
    }
    pthread_mutex_unlock(d.mu);
    ops->end(&d, done);
}

/*---- one gateway's draw: the sale's core, the entry log (gw_fair__draw_local) ----*/

/* The accepted winners not committed yet (committed when the stock runs out
 * or at the draw's end). */
typedef struct local_run {
    gw_accept_t *won;
    size_t nwon, cap;
} local_run_t;

static void local_begin(gw_fair_draw_t *d)
{
    d->run = cm_xcalloc(1, sizeof(local_run_t));
    d->core = &d->fs->core;
    d->mu = &d->fs->mu; /* workers read the sale's core (tickets, entries) */
}

/* A draw's step: a TICK through the sale's machine (it decides the window
 * closed and whether the losers wait) and the end's (its PUBLISH opens the
 * leftovers); the rest is the core's alone. */
static void local_step(gw_fair_draw_t *d, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    if (ev->kind != GW_FAIR_EV_TICK && ev->kind != GW_FAIR_EV_DRAW_LOGGED) {
        gw_fair_core_step(&d->fs->core, ev, out);
        return;
    }
    gw_sale_out_t so;
    gw_sale_step(&d->fs->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = *ev}, d->now, &so);
    *out = so.fair;
}

/* The core's first steps of a draw: the seed's "D" record made durable, or a
 * log read back unsynced made durable again. */
static bool local_seed(gw_fair_draw_t *d, uint64_t rnd)
{
    gw_fair_t *f = d->f;
    gw_fair_sale_t *fs = d->fs;
    if (!fs->seeded && gw_fair__log_open(f, fs) != 0)
        return false;
    gw_fair_out_t out;
    local_step(d, &(gw_fair_ev_t){.kind = GW_FAIR_EV_TICK, .entrants = fs->n, .rnd = rnd}, &out);
    gw_fair_ev_t ev = {.kind = GW_FAIR_EV_SEED_DURABLE, .rc = CM_EINVAL};
    bool resync = (out.actions & GW_FAIR_DO_MAKE_DURABLE) != 0;
    if (out.actions & GW_FAIR_DO_SEED) {
        fs->draw_started_ms = d->now;
        char line[96];
        int len = snprintf(line, sizeof(line), "D %016llx %lld %zu\n", (unsigned long long)fs->seed,
                           (long long)fs->draw_started_ms, fs->ndraw);
        /* the log's first fdatasync, after a rewrite if it may need one (log_resync) */
        ev.rc = gw_fair__log_line(fs, line, (size_t)len, false);
        resync = ev.rc == 0;
    }
    if (resync)
        ev.rc = log_resync(f, fs);
    local_step(d, &ev, &out);
    if (out.actions & GW_FAIR_DO_ORDER)
        compute_order(fs);
    if (!fs->seeded || fs->seed_unsynced) { /* nothing decided: the next tick tries again */
        if (ev.rc != CM_EINVAL)
            cm_log_error("fair", "cannot record the draw seed; tried again", "sale=%s",
                         fs->sale_id);
        return false;
    }
    return true;
}

static const entry_t *local_entrant(gw_fair_draw_t *d, size_t i, uint8_t *state)
{
    const entry_t *e = &d->fs->v[i]; /* the vector no longer grows: closed */
    *state = e->state;
    return e;
}

int gw_fair__draw_accept(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, const entry_t *e,
                         int64_t now, bool keyed, gw_accept_t *a, bool *sold_out)
{
    inv_reserve_req_t rq;
    gw_fair__entry_reserve_req(e, sale, &rq);
    if (keyed && !rq.idem_key[0])
        snprintf(rq.idem_key, sizeof(rq.idem_key), "fair-%s", e->order_id);
    gw_accept_req_t ar = {.inv = f->inv,
                          .rq = &rq,
                          .sale_id = fs->sale_id,
                          .user = e->user_id,
                          .accepted_at_ms = now,
                          .why = "lottery winner not accepted: spool refused"};
    int rc = gw_accept_take(&f->accept, &ar, a);
    *sold_out = rc >= 0 && (rq.stock_left == 0 || inv_sale_sold_out(sale));
    return rc;
}

/* Buy's accept sequence for one entrant; a spooled winner joins the run's
 * batch. */
static gw_fair_ev_t local_accept(gw_fair_draw_t *d, const entry_t *e)
{
    local_run_t *r = d->run;
    if (r->nwon == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->won = cm_xrealloc(r->won, sizeof(*r->won) * r->cap);
    }
    gw_fair_ev_t ev = {.kind = GW_FAIR_EV_ACCEPTED};
    int rc = gw_fair__draw_accept(d->f, d->fs, d->sale, e, d->now, false, &r->won[r->nwon],
                                  &ev.sold_out);
    switch (rc) {
    case GW_ACCEPT_SPOOLED:
        r->nwon++;
        ev.acc = GW_FAIR_ACC_WON;
        break;
    case GW_ACCEPT_SOLD_OUT:
        ev.acc = GW_FAIR_ACC_SOLD_OUT;
        break;
    case GW_ACCEPT_SPOOL_REFUSED:
        ev.acc = GW_FAIR_ACC_REFUSED;
        break;
    default: /* < 0: the inventory is unreachable, resumed at the next tick */
        ev.acc = rc < 0 ? GW_FAIR_ACC_FAILED : GW_FAIR_ACC_DENIED;
        break;
    }
    return ev;
}

/* The batch made durable (the spool's commit), then known (published). */
static void local_commit(gw_fair_draw_t *d)
{
    local_run_t *r = d->run;
    gw_fair_sale_t *fs = d->fs;
    gw_accept_t *won = r->won;
    size_t nwon = r->nwon;
    if (!nwon)
        return;
    r->nwon = 0;
    gw_accept_commit(&d->f->accept, won, nwon);
    size_t nok = 0;
    for (size_t i = 0; i < nwon; i++) {
        if (won[i].durable) {
            won[nok++] = won[i];
            continue;
        }
        /* Not durable (fsync durability): the spool cut the record and
         * refuses appends from now on, so after a restart it is no order
         * and the entry reads lost. Say so now rather than "won" with an
         * order that reads queued for ever. The units stay held, as the
         * buy path leaves those of its 503s after a failed fsync (gw_buy.c,
         * sync_after): if the cut failed too the record may come back at
         * a restart, so undersell, never oversell. */
        pthread_mutex_lock(&fs->mu);
        entry_t *e = gw_fair__find_id(fs, won[i].o.order_id);
        if (e && e->state == GW_ENTRY_WON) {
            e->state = GW_ENTRY_LOST;
            fs->won_orders--;
            fs->won_units -= e->qty;
            fs->lost++;
            gw_fair__wl_log_lost(fs, e);
        }
        pthread_mutex_unlock(&fs->mu);
    }
    if (nok < nwon)
        cm_log_error("fair", "spool fsync failed: draw winners not accepted",
                     "sale=%s orders=%zu accepted=%zu", fs->sale_id, nwon, nok);
    gw_accept_publish(&d->f->accept, won, nok);
}

/* An entrant still undecided here. One lost for cause (its accept refused or
 * denied, not short of stock) gets its "X" record whether or not the losers
 * wait: a restart that resumes a cut draw reads it as decided
 * (gw_fair__log_load) instead of accepting it again, and what refused it may
 * have gone meanwhile. */
static void local_set_state(gw_fair_draw_t *d, const gw_fair_out_t *out, bool cause)
{
    gw_fair_sale_t *fs = d->fs;
    entry_t *e = &fs->v[out->entry];
    gw_entry_state_t st = (gw_entry_state_t)out->state;
    if (e->state != GW_ENTRY_ENTERED)
        return;
    if (st == GW_ENTRY_WON) {
        mark_won(fs, e);
        return;
    }
    e->state = st;
    if (st == GW_ENTRY_WAITLISTED) {
        gw_fair__wl_add(fs, e);
    } else {
        fs->lost++;
        if (cause)
            gw_fair__wl_log_lost(fs, e);
    }
}

/* The "O" record, as durable as the winners before it (fsync durability:
 * fdatasync'd). */
static int local_sold_out(gw_fair_draw_t *d)
{
    gw_fair_sale_t *fs = d->fs;
    char line[48];
    int len = snprintf(line, sizeof(line), "O %lld\n", (long long)d->now);
    int rc = log_line_synced(fs, line, (size_t)len,
                             d->f->srv->cfg->durability == GW_DURABILITY_FSYNC);
    if (rc != 0)
        cm_log_error("fair",
                     "cannot record that the draw's stock ran out; the log is "
                     "written again before the next entrant",
                     "sale=%s", fs->sale_id);
    return rc;
}

/* Every winner's "W" record, then "F": a finished draw's log names all its
 * winners. */
static int local_outcomes(gw_fair_draw_t *d, bool waitlist)
{
    gw_fair_sale_t *fs = d->fs;
    fs->draw_done_ms = d->now;
    int rc = log_winners(fs);
    if (rc == 0) {
        char line[64];
        int len = snprintf(line, sizeof(line), "F %lld%s\n", (long long)fs->draw_done_ms,
                           waitlist ? " w" : "");
        rc = log_line_synced(fs, line, (size_t)len, true); /* the core's ENDING stage waits */
    }
    return rc;
}

static void local_publish(gw_fair_draw_t *d, bool done)
{
    gw_fair_sale_t *fs = d->fs;
    if (!done) {
        cm_log_error("fair", "cannot record the end of the draw; tried again", "sale=%s",
                     fs->sale_id);
        return;
    }
    /* before drawn: no first-come buy slips in while the waitlist has entrants */
    gw_fair__wl_told(fs);
    atomic_store_explicit(&fs->drawn, true, memory_order_release);
    cm_log_info("fair", "draw done",
                "sale=%s entrants=%zu won_orders=%llu won_units=%llu seed=%016llx elapsed_ms=%lld",
                fs->sale_id, fs->ndraw, (unsigned long long)fs->won_orders,
                (unsigned long long)fs->won_units, (unsigned long long)fs->seed,
                (long long)(fs->draw_done_ms - fs->draw_started_ms));
}

static void local_end(gw_fair_draw_t *d, bool done)
{
    (void)done; /* the next tick resumes it */
    local_run_t *r = d->run;
    free(r->won);
    free(r);
}

const gw_fair_draw_ops_t gw_fair__draw_local = {
    .begin = local_begin,
    .step = local_step,
    .seed = local_seed,
    .entrant = local_entrant,
    .accept = local_accept,
    .commit = local_commit,
    .set_state = local_set_state,
    .sold_out = local_sold_out,
    .outcomes = local_outcomes,
    .publish = local_publish,
    .end = local_end,
};

void *gw_fair_draw_json(gw_fair_t *f, const char *sale_id)
{
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    if (!fs)
        return NULL;
    pthread_mutex_lock(&fs->mu);
    json_t *list = json_array();
    size_t n = fs->seeded ? fs->ndraw : fs->n;
    for (size_t i = 0; i < n; i++) {
        const entry_t *e = &fs->v[fs->seeded ? fs->perm[i] : i];
        json_array_append_new(list, json_pack("{s:i,s:s,s:s,s:i,s:s}", "position", (int)e->pos,
                                              "order_id", e->order_id, "user_id", e->user_id, "qty",
                                              (int)e->qty, "outcome",
                                              gw_entry_state_name((gw_entry_state_t)e->state)));
    }
    char seed[24] = "";
    if (fs->seeded)
        snprintf(seed, sizeof(seed), "%016llx", (unsigned long long)fs->seed);
    bool drawn = atomic_load(&fs->drawn);
    json_t *o = json_pack(
        "{s:s,s:I,s:I,s:s,s:s?,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "sale_id", fs->sale_id,
        "fair_window_ms", (json_int_t)atomic_load(&fs->sale.cfg.fair_window_ms), "fair_early_ms",
        (json_int_t)atomic_load(&fs->sale.cfg.fair_early_ms), "state",
        drawn        ? "drawn"
        : fs->seeded ? "drawing"
                     : "open",
        "seed", fs->seeded ? seed : NULL, "entrants", (json_int_t)n, "duplicates",
        (json_int_t)atomic_load(&fs->duplicates), "won_orders", (json_int_t)fs->won_orders,
        "won_units", (json_int_t)fs->won_units, "lost", (json_int_t)fs->lost, "waitlisted",
        (json_int_t)fs->waitlisted, "promoted", (json_int_t)fs->promoted, "entries", list);
    if (fs->draw_started_ms) {
        char t[40];
        cm_time_format_rfc3339(fs->draw_started_ms, t, sizeof(t));
        json_object_set_new(o, "drawn_at", json_string(t));
    }
    pthread_mutex_unlock(&fs->mu);
    if (atomic_load(&fs->sale.cfg.room_rate) > 0)
        json_object_set_new(o, "room", gw_fair__room_json(fs));
    return o;
}

void gw_fair_stats(gw_fair_t *f, void *json_obj)
{
    if (!f)
        return;
    uint64_t entries = 0, dups = 0, won = 0, lost = 0, wl = 0, promoted = 0;
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        pthread_mutex_lock(&fs->mu);
        entries += fs->n;
        won += fs->won_orders;
        lost += fs->lost;
        wl += fs->waitlisted;
        promoted += fs->promoted;
        pthread_mutex_unlock(&fs->mu);
        dups += atomic_load(&fs->duplicates);
    }
    json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "sales", (json_int_t)n, "entries",
                          (json_int_t)entries, "duplicate_entries", (json_int_t)dups, "won_orders",
                          (json_int_t)won, "lost", (json_int_t)lost, "waitlisted", (json_int_t)wl,
                          "waitlist_promoted", (json_int_t)promoted);
    gw_fair__reg_stats(f, o);
    if (f->lot->stats)
        f->lot->stats(f, o);
    json_object_set_new(json_obj, "fair", o);
}
