/*
 * Registration and the leftovers in simulation (sim_fair.h): one gateway's
 * sale, first its registration window, then the start-window lottery over
 * the registered persons, then the waitlist of its losers while winners
 * cancel and units come back, until the sale ends.
 *
 * The decisions are the product's cores: gw_reg_core.c (one registration
 * per person, the cap, under fsync durability an answer only after the
 * fdatasync), gw_fair_core.c (the draw) and gw_waitlist_core.c (who is
 * next), each stepped through the sale's machine (gw_sale_core.c) in the
 * sale's slot (gw_fair_sale_t, made as gw_fair__sale_new makes it).
 * Registration is the product's whole: gw_reg.c's entry points (gw_reg_add,
 * gw_reg_sync) over the real local store (gw_reg_local.c,
 * gw_reg__local_ops: the set, the .reg journal with its group commit),
 * reloaded after each crash or power loss through its real load, the
 * journal's file calls on the simulated disk (sim_journal_fs.h). The
 * leftovers' shell is here, as gw_waitlist.c is the product's: its records
 * of the sale's log (P synced before the reserve, W after, L at the end;
 * gw_waitlist.c writes them through gw_lottery.c's log functions, which
 * make POSIX calls the simulated disk cannot see), read back through the
 * journal's recovery (cm_journal_scan_mem, a torn tail cut), and a
 * simulated inventory that reserves an order id once (reserve_once). The
 * draw's own records and their crashes are sim_world.c's: here the draw's
 * outcome is durable once made.
 *
 * Faults: a kill -9 (the page cache stays), a death in the middle of a write
 * (a torn frame), a power loss (the synced part and any prefix of the rest;
 * in write durability the .reg, never synced, may lose its records or its
 * name), failed fdatasyncs.
 *
 * The oracle, after every step:
 *   - the .reg log holds each person once, only persons that registered,
 *     and at most the cap; so does the set in memory
 *   - a person answered 201 or 200 is registered after a kill -9 and
 *     restart, and under fsync durability after a power loss too (the
 *     store's rule: a 200 is as durable as a 201)
 *   - the draw takes registered persons only, one entry each
 *   - a promotion goes to the first waiting loser in draw order, and only
 *     while the sale is on
 *   - promotions never take more units than the draw left and the
 *     cancels freed
 *   - a restart restores every entry's outcome: an entry promoted stays
 *     won, none waits while holding an order
 *   - at the end: every winner holds exactly one order, every order is a
 *     winner's, and the units held fit the stock
 */
#include "sim/sim_fair.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "gateway/base/gw_config.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_core.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_reg_backend.h"
#include "gateway/buy/gw_sale_core.h"
#include "gateway/buy/gw_waitlist_core.h"
#include "queue/oq_fs.h"
#include "sim/sim_disk.h"
#include "sim/sim_journal_fs.h"
#include "sim/sim_util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NP 16      /* persons */
#define SET_MAX 64 /* the set's room (a defect may read junk back as persons) */
#define ID_LEN 40  /* a person's id, as read back */
#define FILE_MAX 8192
#define REG_STEPS 120 /* the registration window, in steps (1 ms each) */
#define WL_STEPS 260  /* the leftovers' steps after the draw */
#define HEAL_STEPS 40 /* no faults: every promise kept by the end */
#define SALE "s1"
#define REG_LOG SALE ".reg" /* the store's path: <dir>/<sale>.reg */
#define WL_LOG SALE ".log"

typedef struct fw {
    cm_rand_t rng;
    sim_log_t log;
    sim_disk_t *disk;
    const oq_fs_ops_t *fs;
    int64_t now;
    bool faults;
    /* the sale's terms (fair.json, sales.json: they survive) */
    uint64_t cap;
    int64_t reg_opens, reg_closes, ends_at;
    int64_t stock;
    cm_hash_key_t secret;
    /* the process: the server's parts the store reads (its configuration, the
     * fairness module's directory), the sale's slot (its machine over the
     * draw's core, registration's core and the leftovers', registration's
     * local store), the leftovers' descriptors, the entries' states */
    bool fsync; /* spool.durability fsync */
    bool up;
    gw_config_t cfg;
    gw_server_t srv;
    gw_fair_t *f;
    gw_fair_sale_t *slot;
    int dirfd, wlfd;
    char set[SET_MAX][ID_LEN]; /* the store's set, as its page op reads it (set_read) */
    size_t nset;
    int writer; /* the person whose registration the store runs (-1: none) */
    uint8_t state[NP]; /* by entry index: gw_entry_state_t */
    /* the draw's outcome (the lottery's log, durable once made) */
    bool drawn;
    size_t ndraw;
    uint32_t perm[NP];
    uint64_t keys[NP]; /* entry index -> its draw key */
    uint64_t seed;
    uint8_t who[NP];        /* entry index -> person */
    uint8_t draw_state[NP]; /* WON or WAITLISTED, as drawn */
    uint8_t qty[NP];        /* entry index -> the units it wants (1 or 2) */
    /* the inventory (durable on its own): the stock left, each order id's reservation */
    int64_t left;
    bool reserved[NP], cancelled[NP];
    /* the oracle */
    bool o_tried[NP];    /* the store wrote to the .reg for the person, in part at least */
    bool o_added[NP];    /* answered 201 or 200 */
    int o_code[NP];      /* ... the last such answer's status */
    bool o_durable[NP];  /* answered so under fsync durability: no power loss excuses its loss */
    bool o_power;        /* a power loss: write durability's .reg may have lost 201s, by design */
    bool o_dropped;      /* an fdatasync of the .reg failed since the last power loss: pages
                            dropped that a later fdatasync does not bring back */
    bool o_renamed, o_rewritten; /* the load wrote the .reg again: renamed, and synced */
    uint8_t o_state[NP]; /* by entry index: each entry's outcome as told */
    uint64_t o_freed, o_promoted; /* units */
} fw_t;

static void person_id(unsigned p, char *out, size_t cap)
{
    snprintf(out, cap, "p-%u", p);
}

/* The person an id names ("p-N", N < NP), or -1. */
static int person_of(const char *id)
{
    char *end;
    if (strncmp(id, "p-", 2) != 0 || id[2] < '0' || id[2] > '9')
        return -1;
    unsigned long v = strtoul(id + 2, &end, 10);
    char back[ID_LEN];
    person_id((unsigned)v, back, sizeof(back));
    return *end == '\0' && v < NP && strcmp(back, id) == 0 ? (int)v : -1;
}

/*---- the disk ----*/

/* The whole file, as the page cache holds it (the oracle's read, never armed to die). */
static size_t file_read(fw_t *w, const char *name, char *buf, size_t cap)
{
    sim_disk_use(w->disk);
    int dfd = w->fs->open_dir("fair");
    if (dfd < 0)
        return 0;
    int fd = w->fs->openat(dfd, name, O_RDONLY, 0);
    size_t n = 0;
    ssize_t r;
    while (fd >= 0 && n < cap && (r = w->fs->pread(fd, buf + n, cap - n, (off_t)n)) > 0)
        n += (size_t)r;
    if (fd >= 0)
        w->fs->close(fd);
    w->fs->close(dfd);
    return n;
}

/* Appends one line (its newline dropped) to the sale's log, opened at the
 * first append, as one frame (sim_fair_journal_append). 0 or CM_EIO. */
static int log_append(fw_t *w, int *fd, const char *name, const char *line, bool sync)
{
    if (*fd < 0)
        *fd = w->fs->openat(w->dirfd, name, O_RDWR | O_CREAT | O_APPEND, 0644);
    size_t len = strlen(line);
    return sim_fair_journal_append(w->fs, *fd, line, len && line[len - 1] == '\n' ? len - 1 : len,
                                   sync);
}

/* The journal's file calls (sim_journal_fs.h), its writes watched: the
 * oracle's "tried" is what the store wrote, not what it meant to. */
static fw_t *obs_w; /* the world whose store runs (one at a time) */
static cm_journal_fs_t obs_fs;

static ssize_t obs_write(int fd, const void *buf, size_t n)
{
    if (obs_w->writer >= 0)
        obs_w->o_tried[obs_w->writer] = true;
    return sim_journal_fs()->write(fd, buf, n);
}

/* A registration's fdatasync of the .reg (a load's are of the file it writes
 * beside it). */
static int obs_fdatasync(int fd)
{
    int r = sim_journal_fs()->fdatasync(fd);
    if (r != 0 && obs_w->writer >= 0 && !obs_w->o_dropped) {
        obs_w->o_dropped = true;
        sim_trace(&obs_w->log, "reg: a registration's fdatasync of the .reg failed");
    }
    return r;
}

/* The load's rewrite renamed over the .reg, and the directory fsync'd after
 * it: every person it read is in new, synced pages under the name. */
static int obs_rename(const char *from, const char *to)
{
    int r = sim_journal_fs()->rename(from, to);
    const char *b = strrchr(to, '/');
    if (r == 0 && strcmp(b ? b + 1 : to, REG_LOG) == 0)
        obs_w->o_renamed = true;
    return r;
}

static int obs_fsync(int fd)
{
    int r = sim_journal_fs()->fsync(fd);
    if (r == 0 && obs_w->o_renamed)
        obs_w->o_rewritten = true;
    else if (r != 0)
        sim_trace(&obs_w->log, "reg: a directory fsync failed");
    return r;
}

/*---- the process ----*/

static bool set_has(const fw_t *w, const char *p)
{
    for (size_t i = 0; i < w->nset; i++)
        if (strcmp(w->set[i], p) == 0)
            return true;
    return false;
}

/* A person of the store's page (its page op's fn). */
static void set_add(void *arg, const char *p)
{
    fw_t *w = arg;
    if (w->nset < SET_MAX)
        snprintf(w->set[w->nset++], ID_LEN, "%s", p);
}

/* The store's set, in registration order, read through its page op (the
 * admin export's read): what the oracle and the draw see of it. */
static void set_read(fw_t *w)
{
    uint64_t total = 0, end = 0;
    char why[128];
    w->nset = 0;
    if (w->slot->reg_ops->page(w->f, w->slot, 0, SET_MAX, &total, &end, set_add, w, why,
                             sizeof(why)) != 0)
        sim_fail(&w->log, "reg: the store's page failed: %s", why);
    if (total > SET_MAX)
        sim_fail(&w->log, "reg: the store holds %" PRIu64 " persons, %d at most registered",
                 total, NP);
}

/*---- the sale's machine (gw_sale_core.h): every core's event through gw_sale_step ----*/

static gw_sale_out_t sale_step(fw_t *w, gw_sale_ev_t ev, int64_t now)
{
    gw_sale_out_t out;
    gw_sale_step(&w->slot->sale, &ev, now, &out);
    return out;
}

static void lot_step(fw_t *w, const gw_fair_ev_t *ev, int64_t now, gw_fair_out_t *out)
{
    *out = sale_step(w, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = *ev}, now).fair;
}

static void wl_step(fw_t *w, const gw_wl_ev_t *ev, gw_wl_out_t *out)
{
    *out = sale_step(w, (gw_sale_ev_t){.kind = GW_SALE_EV_WL, .wl = *ev}, w->now).wl;
}

/* A process's slot, as gw_fair__sale_new makes it (registration's store:
 * gw_fair_open's choice for one gateway), and its machine: the sale's terms
 * (fair.json, sales.json), its lottery window right after the
 * registration's, its losers waiting for leftovers; a draw made before comes
 * back as the store's DRAW_KNOWN would bring it (this world's draw is
 * durable once made). */
static void sale_start(fw_t *w)
{
    gw_fair_sale_t *fs = w->slot;
    memset(fs, 0, sizeof(*fs));
    fs->f = w->f;
    snprintf(fs->sale_id, sizeof(fs->sale_id), "%s", SALE);
    pthread_mutex_init(&fs->mu, NULL);
    pthread_mutex_init(&fs->wr_mu, NULL);
    pthread_mutex_init(&fs->reg_mu, NULL);
    fs->reg_ops = &gw_reg__local_ops;
    fs->perm = w->perm;
    gw_fair_core_init(&fs->core);
    gw_sale_core_init(&fs->sale, &fs->core, NULL, &fs->reg_core);
    sale_step(w,
              (gw_sale_ev_t){.kind = GW_SALE_EV_CONFIGURE,
                             .cfg = {.reg_opens_ms = w->reg_opens,
                                     .reg_closes_ms = w->reg_closes,
                                     .reg_cap = w->cap,
                                     .starts_at_ms = w->reg_closes,
                                     .fair_window_ms = 10,
                                     .ends_at_ms = w->ends_at,
                                     .waitlist = true}},
              w->now);
    if (!w->drawn)
        return;
    gw_fair_out_t out;
    lot_step(
        w,
        &(gw_fair_ev_t){
            .kind = GW_FAIR_EV_DRAW_KNOWN, .seed = w->seed, .entrants = w->ndraw, .waitlist = true},
        w->now, &out);
    if (out.actions & GW_FAIR_DO_ORDER)
        gw_fair_core_order(&w->slot->core, w->keys);
}

/* Cuts name at end (a torn tail the recovery found), as cm_journal_recover does. */
static void cut_tail(fw_t *w, const char *name, off_t end, size_t n)
{
    if ((size_t)end >= n)
        return;
    int fd = w->fs->openat(w->dirfd, name, O_RDWR, 0);
    if (fd >= 0) {
        w->fs->ftruncate(fd, end);
        w->fs->close(fd);
    }
    sim_trace(&w->log, "%s: a torn tail of %zu bytes cut off", name, n - (size_t)end);
}

/* The leftovers' records read back (gw_fair__log_load's P, W, L): the draw's
 * outcome, each W won, each P whose order the inventory holds won (the
 * spool's word), and after L every loser lost. */
typedef struct wl_read {
    fw_t *w;
    bool ended;
} wl_read_t;

/* A whole record of the sale's log (cm_journal_record_fn). */
static void wl_record(void *arg, char *rec, size_t len)
{
    wl_read_t *rd = arg;
    fw_t *w = rd->w;
    unsigned e;
    char tag;
    if (strlen(rec) == len && sscanf(rec, "%c %u", &tag, &e) == 2 && e < w->ndraw &&
        w->state[e] == GW_ENTRY_WAITLISTED && (tag == 'W' || (tag == 'P' && w->reserved[e])))
        w->state[e] = GW_ENTRY_WON;
    else if (strcmp(rec, "L") == 0)
        rd->ended = true;
}

static void wl_load(fw_t *w)
{
    if (!w->drawn)
        return;
    memcpy(w->state, w->draw_state, sizeof(w->state));
    static char buf[FILE_MAX];
    size_t n = file_read(w, WL_LOG, buf, sizeof(buf));
    sim_trace(&w->log, "leftovers: %zu bytes of records read back", n);
    /* the product's recovery (cm_journal_scan): a failed fdatasync's pages
     * read back as NULs after a power loss, a hole skipped up to the synced
     * frames after it; a torn tail cut off the file */
    wl_read_t rd = {.w = w};
    cm_journal_scan_t sc;
    cm_journal_scan_mem(buf, n, wl_record, &rd, &sc);
    if (sc.is_legacy)
        sim_fail(&w->log, "leftovers: the sale's log is not a journal (%zu bytes: \"%.*s\")", n,
                 (int)(n < 24 ? n : 24), buf);
    if (sc.holes)
        sim_trace(&w->log, "leftovers: %zu holes (%lld bytes) skipped", sc.holes,
                  (long long)sc.hole_bytes);
    cut_tail(w, WL_LOG, sc.end, n);
    for (size_t e = 0; e < w->ndraw && rd.ended; e++)
        if (w->state[e] == GW_ENTRY_WAITLISTED)
            w->state[e] = GW_ENTRY_LOST;
}

/* A start: the slot made, the registration store's load (the journal's
 * recovery, each record through the core; in fsync durability the file and
 * its name made durable), the leftovers' records read back. */
static void proc_start(fw_t *w)
{
    sim_disk_use(w->disk);
    w->dirfd = w->fs->open_dir("fair");
    w->wlfd = -1;
    sale_start(w);
    w->o_renamed = w->o_rewritten = false;
    w->slot->reg_ops->load(w->f, w->slot);
    if (w->o_rewritten) /* the pages a failed fdatasync dropped are not the file's any more */
        w->o_dropped = false;
    set_read(w);
    wl_load(w);
    w->up = true;
    sim_trace(&w->log, "start: %zu persons registered", w->nset);
}

/* The process is gone: what its slot held (the store's set, its journal
 * open) freed while the disk refuses every call (sim_disk_kill), so
 * nothing a close would do reaches the disk: its descriptors died with it. */
static void slot_gone(fw_t *w)
{
    sim_disk_kill(w->disk);
    gw_fair_sale_t *fs = w->slot;
    fs->reg_ops->free(fs);
    pthread_mutex_destroy(&fs->mu);
    pthread_mutex_destroy(&fs->wr_mu);
    pthread_mutex_destroy(&fs->reg_mu);
}

static void proc_crash(fw_t *w, bool power)
{
    slot_gone(w);
    if (power) {
        sim_disk_power_loss(w->disk);
        w->o_power = true;
        w->o_dropped = false;
        w->log.res->power_losses++;
    } else {
        sim_disk_crash(w->disk);
        w->log.res->crashes++;
    }
    w->up = false;
    sim_trace(&w->log, "%s", power ? "power loss" : "kill -9");
}

/* The process died in the middle of a disk call: it is gone. */
static bool died(fw_t *w)
{
    if (!sim_disk_dead(w->disk))
        return false;
    proc_crash(w, false);
    return true;
}

/* The disk kills the process within its next few operations, sometimes. */
static void arm(fw_t *w, double p)
{
    if (w->faults && sim_chance(&w->rng, p))
        sim_disk_die_after(w->disk, 1 + sim_below(&w->rng, 6));
}

static void disarm(fw_t *w)
{
    sim_disk_die_after(w->disk, 0);
}

/*---- registration: the product's entry points over the local store ----*/

/* The simulated clock, the store's too (its machine's window). */
static void clock_set(const fw_t *w)
{
    cm_time_set_fake(true, 1000000000ull + (uint64_t)w->now * 1000000ull, w->now);
}

/* A registration as the route makes it (gw_fair_routes.c): gw_reg_add, and
 * when it holds its answer for the log's fdatasync, gw_reg_sync. */
static void do_register(fw_t *w, unsigned p)
{
    char id[ID_LEN], why[256] = "";
    person_id(p, id, sizeof(id));
    clock_set(w);
    arm(w, 0.08);
    bool sync = false;
    w->writer = (int)p;
    int rc = gw_reg_add(&w->srv, SALE, id, &sync, why, sizeof(why));
    if (sync && !sim_disk_dead(w->disk))
        rc = gw_reg_sync(&w->srv, SALE, rc);
    w->writer = -1;
    if (died(w))
        return;
    disarm(w);
    set_read(w);
    /* a 200 after a failed fdatasync is held too: the journal answers it only
     * once the log was written again from the set (cm_journal_sync_to) */
    if (rc == GW_REG_ADDED || rc == GW_REG_ALREADY) {
        w->o_added[p] = true;
        w->o_code[p] = rc == GW_REG_ADDED ? 201 : 200;
        w->o_durable[p] = w->o_durable[p] || w->fsync;
    }
    sim_trace(&w->log, "register %s -> %s", id,
              rc == GW_REG_ADDED     ? "201"
              : rc == GW_REG_ALREADY ? "200"
              : rc == GW_REG_FULL    ? "409 full"
              : rc >= 0              ? "403 shut"
                                     : "503");
}

/* A record of the .reg as the oracle reads it (the page cache's whole frames). */
typedef struct reg_read {
    fw_t *w;
    unsigned count[NP];
    uint64_t persons;
} reg_read_t;

static void reg_count(void *arg, char *rec, size_t len)
{
    reg_read_t *rd = arg;
    fw_t *w = rd->w;
    int p = strlen(rec) == len ? person_of(rec) : -1;
    if (p < 0 || !w->o_tried[p]) {
        sim_fail(&w->log, "reg: the log holds \"%.*s\", a person that never registered", (int)len,
                 rec);
        return;
    }
    if (++rd->count[p] == 2)
        sim_fail(&w->log, "reg: the log holds two registrations of p-%d", p);
    if (rd->count[p] == 1)
        rd->persons++;
}

static void reg_check(fw_t *w)
{
    static char buf[FILE_MAX];
    size_t n = file_read(w, REG_LOG, buf, sizeof(buf));
    reg_read_t rd = {.w = w};
    cm_journal_scan_t sc;
    cm_journal_scan_mem(buf, n, reg_count, &rd, &sc);
    if (rd.persons > w->cap)
        sim_fail(&w->log, "reg: the log holds %" PRIu64 " persons, the cap is %" PRIu64, rd.persons,
                 w->cap);
    if (!w->up)
        return;
    if (w->nset > w->cap)
        sim_fail(&w->log, "reg: %zu persons registered, the cap is %" PRIu64, w->nset, w->cap);
    for (size_t i = 0; i < w->nset; i++) {
        int p = person_of(w->set[i]);
        if (p < 0 || !w->o_tried[p])
            sim_fail(&w->log, "reg: \"%s\" is registered and never registered", w->set[i]);
    }
    for (unsigned p = 0; p < NP; p++) {
        char id[ID_LEN];
        person_id(p, id, sizeof(id));
        if (w->o_added[p] && (!w->o_power || w->o_durable[p]) && !set_has(w, id))
            sim_fail(&w->log,
                     "reg: p-%u was answered %d%s and is not registered after a restart%s", p,
                     w->o_code[p], w->o_durable[p] ? " under fsync durability" : "",
                     w->o_power ? " (a power loss)" : "");
    }
}

/*---- the draw: the real lottery core over the registered persons ----*/

/* The inventory's reserve of entry e's order (once per order id): 1 reserved
 * now, 0 reserved before (the order is held or was), -1 sold out. */
static int reserve_once(fw_t *w, size_t e)
{
    if (w->reserved[e])
        return 0;
    if (w->left < w->qty[e])
        return -1;
    w->reserved[e] = true;
    w->left -= w->qty[e];
    return 1;
}

static void do_draw(fw_t *w)
{
    uint64_t *keys = w->keys;
    size_t n = 0;
    gw_fair_out_t out;
    int64_t closes = w->reg_closes + 10; /* the window's close (sale_start's terms) */
    for (size_t i = 0; i < w->nset && n < NP; i++) {
        int p = person_of(w->set[i]);
        if (p < 0)
            continue;       /* not a person: never a buyer */
        bool found = false; /* the person's entry (gw_fair_enter's lookup) */
        for (size_t j = 0; j < n; j++)
            found = found || w->who[j] == p;
        gw_fair_ev_t ev = {.kind = GW_FAIR_EV_ENTER,
                           .found = found ? GW_FAIR_FOUND_SAME : GW_FAIR_FOUND_NONE};
        lot_step(w, &ev, w->now, &out);
        if (!(out.actions & GW_FAIR_DO_APPEND_ENTRY))
            continue;
        ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_ENTRY_LOGGED, .rc = 0};
        lot_step(w, &ev, w->now, &out);
        if (found)
            sim_fail(&w->log, "draw: p-%d entered twice", p);
        w->who[n] = (uint8_t)p;
        w->qty[n] = (uint8_t)(1 + sim_below(&w->rng, 2));
        keys[n++] = cm_hash_sip24(&w->secret, w->set[i], strlen(w->set[i]));
    }
    w->ndraw = n;
    w->stock = n > 1 ? 1 + sim_below(&w->rng, (uint32_t)n - 1) : 1;
    w->left = w->stock;
    gw_fair_ev_t ev = {.kind = GW_FAIR_EV_TICK, .entrants = n, .rnd = cm_rand_next(&w->rng)};
    lot_step(w, &ev, closes, &out);
    ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE, .rc = 0};
    lot_step(w, &ev, closes, &out);
    if (out.actions & GW_FAIR_DO_ORDER)
        gw_fair_core_order(&w->slot->core, keys);
    for (int guard = 0; guard < 4 * NP + 4; guard++) {
        ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_TICK};
        lot_step(w, &ev, closes, &out);
        if (out.actions & GW_FAIR_DO_LOG_OUTCOMES)
            break;
        if (!(out.actions & GW_FAIR_DO_DRAW))
            break;
        size_t e = out.entry;
        ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW, .state = w->state[e]};
        lot_step(w, &ev, closes, &out);
        if (out.actions & GW_FAIR_DO_ACCEPT) {
            int r = reserve_once(w, e);
            ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_ACCEPTED,
                                .acc = r < 0 ? GW_FAIR_ACC_SOLD_OUT : GW_FAIR_ACC_WON,
                                .sold_out = w->left <= 0};
            lot_step(w, &ev, closes, &out);
        }
        if (out.actions & GW_FAIR_DO_SET_STATE)
            w->state[out.entry] = out.state;
        /* the stock ran out: its record (this world's draw is not cut by a
         * crash; sim_world.c's lottery runs that record's faults) */
        if (out.actions & GW_FAIR_DO_LOG_SOLD_OUT) {
            ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_SOLD_OUT_LOGGED, .rc = 0};
            lot_step(w, &ev, closes, &out);
        }
    }
    ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW_LOGGED, .rc = 0};
    lot_step(w, &ev, closes, &out);
    if (!(out.actions & GW_FAIR_DO_PUBLISH) || !out.waitlist) {
        sim_fail(&w->log, "draw: not done with its waitlist");
        return;
    }
    memcpy(w->draw_state, w->state, sizeof(w->state));
    memcpy(w->o_state, w->state, sizeof(w->state));
    w->o_freed = (uint64_t)w->left; /* the units no winner's qty fitted */
    w->drawn = true;
    w->seed = w->slot->core.seed;
    sim_trace(&w->log, "draw: %zu entrants, stock %" PRId64 ", seed %016" PRIx64, n, w->stock,
              w->seed);
}

/*---- the leftovers (gw_fair__wl_tick's shell) ----*/

/* The first waiting loser in draw order whose units the stock left holds, as
 * the oracle knows the outcomes (one that wants more keeps its place). */
static size_t o_first_waiting(const fw_t *w)
{
    for (size_t i = 0; i < w->ndraw; i++)
        if (w->o_state[w->perm[i]] == GW_ENTRY_WAITLISTED && w->qty[w->perm[i]] <= w->left)
            return i;
    return w->ndraw;
}

static gw_wl_result_t promote(fw_t *w, size_t pos)
{
    size_t e = w->perm[pos];
    char line[32];
    snprintf(line, sizeof(line), "P %zu\n", e);
    if (log_append(w, &w->wlfd, WL_LOG, line, true) != 0)
        return GW_WL_FAILED;
    size_t first = o_first_waiting(w);
    int r = reserve_once(w, e);
    if (r < 0)
        return GW_WL_NO_STOCK;
    if (r > 0) {
        if (first != pos)
            sim_fail(&w->log,
                     "leftovers: p-%u at draw position %zu promoted while p-%u at %zu waits",
                     w->who[e], pos + 1, first < w->ndraw ? w->who[w->perm[first]] : 0, first + 1);
        if (w->now >= w->ends_at)
            sim_fail(&w->log, "leftovers: p-%u promoted after the sale's end", w->who[e]);
        w->o_promoted += w->qty[e];
        if (w->o_promoted > w->o_freed)
            sim_fail(&w->log, "leftovers: %" PRIu64 " units promoted, %" PRIu64 " left or freed",
                     w->o_promoted, w->o_freed);
        w->o_state[e] = GW_ENTRY_WON;
        sim_trace(&w->log, "leftovers: p-%u at draw position %zu promoted", w->who[e], pos + 1);
    }
    snprintf(line, sizeof(line), "W %zu\n", e);
    log_append(w, &w->wlfd, WL_LOG, line, false);
    if (!sim_disk_dead(w->disk))
        w->state[e] = GW_ENTRY_WON;
    return GW_WL_WON;
}

static void wl_end(fw_t *w)
{
    if (log_append(w, &w->wlfd, WL_LOG, "L\n", true) != 0)
        sim_trace(&w->log, "leftovers: the end's record failed; a restart ends it again");
    if (sim_disk_dead(w->disk))
        return;
    for (size_t e = 0; e < w->ndraw; e++)
        if (w->state[e] == GW_ENTRY_WAITLISTED) {
            w->state[e] = GW_ENTRY_LOST;
            w->o_state[e] = GW_ENTRY_LOST;
        }
    sim_trace(&w->log, "leftovers: the sale ended, its waiters lost");
}

static void wl_tick(fw_t *w)
{
    bool waits = false;
    for (size_t e = 0; e < w->ndraw; e++)
        waits = waits || w->state[e] == GW_ENTRY_WAITLISTED;
    if (!w->up || !w->drawn)
        return;
    gw_sale_out_t so =
        sale_step(w, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK, .tick = {.waiting = waits}}, w->now);
    if (!(so.actions & GW_SALE_DO_WL))
        return;
    gw_wl_out_t out;
    gw_wl_ev_t ev = {.kind = GW_WL_EV_TICK, .left = w->left};
    wl_step(w, &ev, &out);
    if (!out.actions)
        return;
    arm(w, 0.1);
    if (out.actions & GW_WL_DO_END)
        wl_end(w);
    if (out.actions & GW_WL_DO_WALK) {
        ev = (gw_wl_ev_t){.kind = GW_WL_EV_WALK, .left = w->left, .ndraw = w->ndraw};
        wl_step(w, &ev, &out);
    }
    while ((out.actions & (GW_WL_DO_LOOK | GW_WL_DO_PROMOTE)) && !sim_disk_dead(w->disk)) {
        size_t e = w->perm[out.pos];
        if (out.actions & GW_WL_DO_LOOK) {
            ev = (gw_wl_ev_t){.kind = GW_WL_EV_ENTRY,
                              .waitlisted = w->state[e] == GW_ENTRY_WAITLISTED,
                              .qty = w->qty[e]};
        } else {
            gw_wl_result_t r = promote(w, out.pos);
            ev = (gw_wl_ev_t){.kind = GW_WL_EV_PROMOTED, .result = r, .left = w->left};
        }
        wl_step(w, &ev, &out);
    }
    if (died(w))
        return;
    disarm(w);
}

/* After a start: every entry's outcome as told, none waiting with an order. */
static void wl_check(fw_t *w)
{
    if (!w->up || !w->drawn)
        return;
    for (size_t e = 0; e < w->ndraw && !w->log.failed; e++) {
        uint8_t s = w->state[e], o = w->o_state[e];
        if (s == GW_ENTRY_WAITLISTED && w->reserved[e])
            sim_fail(&w->log, "leftovers: p-%u waits while its order is held", w->who[e]);
        else if (s != o && w->now >= w->ends_at &&
                 (s == GW_ENTRY_LOST || s == GW_ENTRY_WAITLISTED) &&
                 (o == GW_ENTRY_LOST || o == GW_ENTRY_WAITLISTED))
            w->o_state[e] = GW_ENTRY_LOST; /* the end's record, read back or not: the next
                                              tick ends the waitlist again */
        else if (s != o)
            sim_fail(&w->log, "leftovers: p-%u is %s after a restart, told %s", w->who[e],
                     gw_entry_state_name((gw_entry_state_t)s),
                     gw_entry_state_name((gw_entry_state_t)o));
    }
}

static void end_check(fw_t *w)
{
    int64_t held = 0;
    for (size_t e = 0; e < w->ndraw && !w->log.failed; e++) {
        bool won = w->state[e] == GW_ENTRY_WON;
        if (won != w->reserved[e])
            sim_fail(&w->log, "end: p-%u %s and %s an order", w->who[e],
                     won ? "won" : "did not win", w->reserved[e] ? "holds" : "has no");
        held += w->reserved[e] && !w->cancelled[e] ? w->qty[e] : 0;
    }
    if (held > w->stock)
        sim_fail(&w->log, "end: %" PRId64 " units held, the stock is %" PRId64, held, w->stock);
}

/*---- the run ----*/

void sim_fair_run(const sim_opts_t *opts, sim_result_t *out)
{
    static fw_t world;
    fw_t *w = &world;
    memset(w, 0, sizeof(*w));
    *out = (sim_result_t){.ok = true};
    /* now counts from 0: read as unsigned, it is the same number */
    w->log = (sim_log_t){
        .trace = opts->trace, .res = out, .name = "fair t=", .clock = (const uint64_t *)&w->now};
    cm_rand_seed(&w->rng, opts->seed ^ 0xfa12fa12fa12fa12ull);
    w->disk = sim_disk_new(&w->rng);
    w->fs = sim_disk_ops();
    sim_disk_use(w->disk);
    obs_w = w;
    obs_fs = *sim_journal_fs();
    obs_fs.write = obs_write;
    obs_fs.fdatasync = obs_fdatasync;
    obs_fs.rename = obs_rename;
    obs_fs.fsync = obs_fsync;
    cm_journal_set_fs(&obs_fs);
    w->writer = -1;
    w->faults = true;
    sim_disk_set_faults(w->disk, 0.05, 0);
    w->cap = 4 + sim_below(&w->rng, NP);
    w->reg_opens = 5;
    w->reg_closes = REG_STEPS;
    w->ends_at = REG_STEPS + 40 + sim_below(&w->rng, WL_STEPS);
    w->secret.k0 = cm_rand_next(&w->rng);
    w->secret.k1 = cm_rand_next(&w->rng);
    w->fsync = sim_chance(&w->rng, 0.5) || opts->fsync_only;
    sim_trace(&w->log, "durability %s", w->fsync ? "fsync" : "write");
    /* the server as registration's store reads it: its durability, the
     * fairness module's directory, the sale's slot found by its id */
    w->cfg.durability = w->fsync ? GW_DURABILITY_FSYNC : GW_DURABILITY_WRITE;
    w->srv.cfg = &w->cfg;
    w->f = cm_xcalloc(1, sizeof(*w->f));
    w->f->srv = &w->srv;
    snprintf(w->f->dir, sizeof(w->f->dir), "fair");
    w->srv.fair = w->f;
    w->slot = cm_xcalloc(1, sizeof(*w->slot));
    w->f->sales[0] = w->slot;
    atomic_store(&w->f->n, 1);
    clock_set(w);
    proc_start(w);
    /* the lottery's configure: the sale's log made, its name synced with
     * fair.json's rename (gw_fair.c conf_save's directory fsync) */
    w->wlfd = w->fs->openat(w->dirfd, WL_LOG, O_RDWR | O_CREAT | O_APPEND, 0644);
    while (w->fs->fsync(w->dirfd) != 0)
        ;
    unsigned nactive = 3 + sim_below(&w->rng, NP - 2); /* persons who want to register */
    uint64_t total = REG_STEPS + WL_STEPS + HEAL_STEPS;
    for (w->now = 0; (uint64_t)w->now < total && !w->log.failed; w->now++) {
        out->steps++;
        if ((uint64_t)w->now == REG_STEPS + WL_STEPS) { /* the heal: no more faults */
            w->faults = false;
            sim_disk_set_faults(w->disk, 0, 0);
        }
        if (!w->up) {
            proc_start(w);
            if (w->now >= w->reg_closes)
                wl_check(w);
            reg_check(w);
            continue;
        }
        if (!w->drawn && w->now >= w->reg_closes) {
            do_draw(w);
            continue;
        }
        if (w->faults && sim_chance(&w->rng, 0.03)) {
            proc_crash(w, sim_chance(&w->rng, 0.3));
            continue;
        }
        if (w->now < w->reg_closes) {
            do_register(w, sim_below(&w->rng, nactive));
            reg_check(w);
            continue;
        }
        /* a winner cancels: its unit comes back for the leftovers */
        if (sim_chance(&w->rng, 0.15) && w->ndraw) {
            size_t e = sim_below(&w->rng, (uint32_t)w->ndraw);
            if (w->reserved[e] && !w->cancelled[e]) {
                w->cancelled[e] = true;
                w->left += w->qty[e];
                w->o_freed += w->qty[e];
                sim_trace(&w->log, "p-%u cancels its order: %u units back", w->who[e], w->qty[e]);
            }
        }
        wl_tick(w);
    }
    if (!w->log.failed && w->up)
        end_check(w);
    if (w->up)
        slot_gone(w);
    cm_journal_set_fs(NULL);
    cm_time_set_fake(false, 0, 0);
    obs_w = NULL;
    free(w->slot);
    free(w->f);
    sim_disk_stats_t st;
    sim_disk_stats(w->disk, &st);
    out->fsync_fails = st.fsync_fails;
    out->torn_writes = st.torn_writes;
    sim_disk_free(w->disk);
}

/*---- a sale's journal on the simulated disk (sim_fair.h) ----*/

int sim_fair_journal_append(const oq_fs_ops_t *fs, int fd, const char *rec, size_t len, bool sync)
{
    struct stat st;
    if (fd < 0 || fs->fstat(fd, &st) != 0)
        return CM_EIO;
    char buf[CM_JOURNAL_MAGIC_LEN + 256];
    size_t at = 0;
    if (st.st_size == 0)
        at = (size_t)snprintf(buf, sizeof(buf), "%s", CM_JOURNAL_MAGIC);
    size_t n = cm_journal_frame(buf + at, sizeof(buf) - at, rec, len);
    if (n == 0)
        return CM_EIO;
    ssize_t w = fs->write(fd, buf, at + n);
    if (w != (ssize_t)(at + n)) {
        if (w > 0) /* a full disk's short write: cut back off (gw_fair__log_line) */
            fs->ftruncate(fd, st.st_size);
        return CM_EIO;
    }
    return sync && fs->fdatasync(fd) != 0 ? CM_EIO : 0;
}
