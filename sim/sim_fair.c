/*
 * Registration and the leftovers in simulation (sim_fair.h): one gateway's
 * sale, first its registration window, then the start-window lottery over
 * the registered persons, then the waitlist of its losers while units come
 * back, until the sale ends.
 *
 * What runs is the product's: registration's entry points (gw_reg_add,
 * gw_reg_sync) over the real local store (gw_reg_local.c,
 * gw_reg__local_ops: the set, the .reg journal with its group commit); the
 * entries (gw_fair_enter); the lottery thread's turns (gw_fair_tick: the
 * draw, gw_fair__run_draw over gw_fair__draw_local, and the leftovers' walk,
 * gw_fair__wl_tick over gw_fair__wl_local: the entry log's P, W, X and L
 * records); a start's loads (the .reg's, gw_fair__log_load,
 * gw_fair__cut_winners), each in the sale's slot as gw_fair__sale_new makes
 * it, a new one at each start. The journals' file calls run on the
 * simulated disk (sim_journal_fs.h), and so does the spool. What a process
 * holds besides is made as the gateway makes it: a memory inventory filled
 * again at each start by the spool's replay (gw_replay_one), the status
 * table, a stepped releaser, and buy's accept sequence (gw_acceptor) that
 * the draw and the promotions reserve and spool through. The sale's
 * definition (sales.json: its stock, restocked while the leftovers run)
 * survives.
 *
 * Faults: a kill -9 (the page cache stays), a death in the middle of a disk
 * call (a torn frame), a power loss (the synced part and any prefix of the
 * rest; in write durability the .reg, never synced, may lose its records or
 * its name, and the spool its unsynced orders), failed fdatasyncs.
 *
 * The oracle, after every step:
 *   - the .reg log holds each person once, only persons that registered,
 *     and at most the cap; so does the set in memory
 *   - a person answered 201 or 200 is registered after a kill -9 and
 *     restart, and under fsync durability after a power loss too (the
 *     store's rule: a 200 is as durable as a 201)
 *   - the draw takes registered persons only, one entry each
 *   - a promotion (its reserve, watched through the accept sequence) goes to
 *     the first waiting loser in draw order whose units the stock left
 *     holds, only while the sale is on, and never to an entry given its
 *     place before (its order known)
 *   - promotions never hold more units than the draw left and the restocks
 *     added
 *   - a restart restores every entry's outcome as told: an entry promoted
 *     stays won (in write durability a power loss may lose its order, by
 *     design: then it waits again), none waits while holding an order
 *   - at the end: every winner holds exactly one order, every order is a
 *     winner's, and the units held fit the stock
 */
#include "sim/sim_fair.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_id.h"
#include "common/cm_journal.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_config.h"
#include "gateway/buy/gw_accept.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_reg_backend.h"
#include "gateway/buy/gw_replay.h"
#include "gateway/buy/gw_sale_core.h"
#include "inventory/inv.h"
#include "queue/oq_fs.h"
#include "queue/oq_spool.h"
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
#define WINDOW_MS 10  /* the lottery's entry window, right after the registration's */
#define WL_STEPS 260  /* the leftovers' steps after the draw */
#define HEAL_STEPS 40 /* no faults: every promise kept by the end */
#define SALE "s1"
#define REG_LOG SALE ".reg" /* the store's path: <dir>/<sale>.reg */

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
    int64_t stock; /* the definition's, restocks included */
    cm_hash_key_t secret;
    /* the process: the server's parts the fairness module reads (its
     * configuration, stores, the accept sequence), the module, the sale's
     * slot */
    bool fsync; /* spool.durability fsync */
    bool up;
    uint64_t replayed; /* the orders the last start's replay read from the spool */
    gw_config_t cfg;
    gw_server_t srv;
    gw_fair_t *f;
    gw_fair_sale_t *slot;
    char set[SET_MAX][ID_LEN]; /* the store's set, as its page op reads it (set_read) */
    size_t nset;
    int writer; /* the person whose registration the store runs (-1: none) */
    bool entered; /* the registered persons entered the lottery */
    /* the oracle */
    bool o_tried[NP];    /* the store wrote to the .reg for the person, in part at least */
    bool o_added[NP];    /* answered 201 or 200 */
    int o_code[NP];      /* ... the last such answer's status */
    bool o_durable[NP];  /* answered so under fsync durability: no power loss excuses its loss */
    bool o_power;        /* a power loss: write durability's .reg may have lost 201s, by design */
    bool o_power_last;   /* the last restart was after a power loss */
    bool o_evicted_last; /* pages a failed fdatasync dropped evicted since the process
                            before began its start */
    uint64_t ev_mark;    /* the disk's evictions before the last process's start */
    bool o_dropped;      /* an fdatasync of the .reg failed since the last power loss: pages
                            dropped that a later fdatasync does not bring back */
    bool o_renamed, o_rewritten; /* the load wrote the .reg again: renamed, and synced */
    bool drawn;                  /* the draw was published */
    size_t ndraw;
    uint8_t o_state[NP]; /* by entry index: each entry's outcome as told */
    uint8_t o_drawn[NP]; /* ... as drawn */
    bool o_took[NP];     /* its promotion reserved, its outcome not told yet */
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

/*---- the process ----*/

/* The sale's definition (sales.json: it survives), put in the process's inventory. */
static void sale_put(fw_t *w)
{
    inv_sale_def_t def = {.stock = w->stock,
                          .per_user_limit = 2,
                          .starts_at_ms = w->reg_closes,
                          .ends_at_ms = w->ends_at};
    snprintf(def.sale_id, sizeof(def.sale_id), "%s", SALE);
    char why[256] = "";
    if (inv_sale_put(w->srv.stores.inv, &def, NULL, why, sizeof(why)) != 0)
        sim_fail(&w->log, "inventory: the sale's definition refused: %s", why);
}

/* What the gateway opens before the fairness module (gw_server.c): the
 * inventory (memory: empty at each start), the spool on the simulated disk and
 * its replay (the orders held again, the status table), the releaser. false:
 * the spool could not open (a failed fdatasync of its recovery: why says so),
 * or the process died in it. */
static bool stores_open(fw_t *w, char *why, size_t cap)
{
    if (inv_open(&w->srv.stores.inv, "memory", NULL, 8, why, cap) != 0) {
        sim_fail(&w->log, "inventory: %s", why);
        return false;
    }
    sale_put(w);
    oq_spool_opts_t so = {.dir = "/sim/spool",
                          .durability = w->fsync ? OQ_DURABILITY_FSYNC : OQ_DURABILITY_WRITE,
                          .segment_bytes = 1 << 16,
                          .fs = sim_disk_ops(),
                          .stepped = true};
    int rc = oq_spool_open(&w->srv.stores.spool, &so, why, cap);
    if (rc != 0) {
        if (!sim_disk_dead(w->disk) && (rc != CM_EIO || !w->faults))
            sim_fail(&w->log, "spool: %s", why);
        w->srv.stores.spool = NULL;
        inv_close(w->srv.stores.inv);
        w->srv.stores.inv = NULL;
        return false;
    }
    w->srv.stores.orders = gw_orders_new(1000);
    gw_releaser_open_stepped(&w->srv);
    gw_replay_ctx_t rctx;
    gw_book_t book;
    gw_replay_init(&w->srv, &rctx, &book, false);
    if (oq_spool_scan(w->srv.stores.spool, (oq_pos_t){0, 0}, gw_replay_one, &rctx) < 0 &&
        !sim_disk_dead(w->disk))
        sim_fail(&w->log, "spool: the replay failed");
    w->replayed = rctx.orders;
    if (inv_worker_open(w->srv.stores.inv, NULL, &w->f->inv) != 0)
        sim_fail(&w->log, "inventory: no worker handle");
    return true;
}

static void stores_close(fw_t *w)
{
    if (!w->srv.stores.inv)
        return;
    if (w->f->inv)
        inv_worker_close(w->f->inv);
    w->f->inv = NULL;
    gw_releaser_stop(&w->srv);
    gw_orders_free(w->srv.stores.orders);
    oq_spool_close(w->srv.stores.spool);
    inv_close(w->srv.stores.inv);
    w->srv.stores.orders = NULL;
    w->srv.stores.spool = NULL;
    w->srv.stores.inv = NULL;
}

/* The process is gone: what it held (the slot, its journals open, the
 * stores) freed while the disk refuses every call (sim_disk_kill), so
 * nothing a close would do reaches the disk: its descriptors died with it. */
static void slot_gone(fw_t *w)
{
    sim_disk_kill(w->disk);
    if (w->slot)
        gw_fair__sale_free(w->slot);
    w->slot = NULL;
    w->f->sales[0] = NULL;
    atomic_store(&w->f->n, 0);
    stores_close(w);
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
    w->o_power_last = power;
    w->up = false;
    sim_trace(&w->log, "%s", power ? "power loss" : "kill -9");
}

/* A start as gw_server.c and gw_fair_open make it: the stores and the
 * spool's replay, then the sale's slot (gw_fair__sale_new) with its terms
 * (fair.json, sales.json: a lottery window right after the registration's),
 * registration's load (the journal's recovery, each record through the
 * core; in fsync durability the file and its name made durable), the entry
 * log's (gw_fair__log_load: the entries, the draw, the leftovers' records)
 * and the cut promotions read from the spool (gw_fair__cut_winners). */
static void proc_start(fw_t *w)
{
    sim_disk_use(w->disk);
    char why[256] = "";
    if (!stores_open(w, why, sizeof(why))) {
        if (sim_disk_dead(w->disk))
            proc_crash(w, false);
        else
            sim_trace(&w->log, "start: the spool did not open (%s); tried again", why);
        return;
    }
    gw_fair_sale_t *fs = gw_fair__sale_new(w->f, SALE);
    w->slot = fs;
    fs->secret = w->secret;
    gw_sale_out_t so;
    gw_sale_step(&fs->sale,
                 &(gw_sale_ev_t){.kind = GW_SALE_EV_CONFIGURE,
                                 .cfg = {.reg_opens_ms = w->reg_opens,
                                         .reg_closes_ms = w->reg_closes,
                                         .reg_cap = w->cap,
                                         .starts_at_ms = w->reg_closes,
                                         .fair_window_ms = WINDOW_MS,
                                         .ends_at_ms = w->ends_at,
                                         .waitlist = true}},
                 w->now, &so);
    w->o_renamed = w->o_rewritten = false;
    fs->reg_ops->load(w->f, fs);
    if (w->o_rewritten) /* the pages a failed fdatasync dropped are not the file's any more */
        w->o_dropped = false;
    uint64_t max_id = 0;
    gw_fair__log_load(w->f, fs, &max_id);
    bool opened = gw_fair__log_open(w->f, fs) == 0;
    w->f->sales[0] = fs;
    atomic_store(&w->f->n, 1);
    if (opened)
        gw_fair__cut_winners(w->f);
    if (sim_disk_dead(w->disk) || !opened) { /* gw_fair_open fails: the process exits */
        sim_trace(&w->log, "start: the entry log did not open");
        proc_crash(w, false);
        return;
    }
    set_read(w);
    w->up = true;
    sim_trace(&w->log,
              "start: %zu persons registered, %zu entries, %s, %" PRIu64 " orders replayed",
              w->nset, fs->n, atomic_load(&fs->drawn) ? "drawn" : "not drawn", w->replayed);
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

/*---- the lottery: the registered persons enter, the lottery thread draws ----*/

/* The entrants of the draw (fs->v's first fs->ndraw): registered persons
 * only, one entry each. */
static void draw_check(fw_t *w)
{
    gw_fair_sale_t *fs = w->slot;
    bool seen[NP] = {false};
    for (size_t i = 0; i < fs->ndraw && !w->log.failed; i++) {
        int p = person_of(fs->v[i].person);
        if (p < 0 || !w->o_tried[p])
            sim_fail(&w->log, "draw: \"%s\" drawn and never registered", fs->v[i].person);
        else if (seen[p])
            sim_fail(&w->log, "draw: p-%d entered twice", p);
        else
            seen[p] = true;
    }
}

/* The window opens: each registered person enters (gw_fair_enter, as the
 * entry route makes it), wanting 1 or 2 units; the stock is set below the
 * entrants' so that some wait. */
static void do_enter(fw_t *w)
{
    w->entered = true;
    for (size_t i = 0; i < w->nset; i++) {
        int p = person_of(w->set[i]);
        if (p < 0)
            continue; /* not a person: never a buyer */
        gw_fair_ticket_t t;
        memset(&t, 0, sizeof(t));
        cm_id_format(((uint64_t)p + 1) << 16 | 1, t.order_id); /* an order id (cm_id.h) */
        snprintf(t.sale_id, sizeof(t.sale_id), "%s", SALE);
        snprintf(t.user_id, sizeof(t.user_id), "%s", w->set[i]);
        snprintf(t.person, sizeof(t.person), "%s", w->set[i]);
        t.qty = 1 + sim_below(&w->rng, 2);
        t.entered_at_ms = cm_wall_ms();
        int rc = gw_fair_enter(w->slot, &t, NULL);
        if (rc != 0)
            sim_trace(&w->log, "enter %s -> %d", w->set[i], rc);
    }
    size_t n = w->slot->n;
    w->stock = n > 1 ? 1 + sim_below(&w->rng, (uint32_t)n - 1) : 1;
    sale_put(w);
    sim_trace(&w->log, "enter: %zu entries, stock %" PRId64, n, w->stock);
}

/* The draw published: its outcomes are the oracle's. */
static void drawn(fw_t *w)
{
    gw_fair_sale_t *fs = w->slot;
    w->drawn = true;
    w->ndraw = fs->ndraw;
    for (size_t e = 0; e < fs->ndraw; e++)
        w->o_state[e] = w->o_drawn[e] = fs->v[e].state;
    draw_check(w);
    sim_trace(&w->log, "draw: %zu entrants, stock %" PRId64 ", seed %016" PRIx64, fs->ndraw,
              w->stock, fs->seed);
}

/*---- the leftovers: the lottery thread's walk, its promotions watched ----*/

/* The accept sequence's calls (gw_accept.h), the real ones (gw_acceptor)
 * watched: a promotion is decided at its reserve, and the oracle checks it
 * there. */
static gw_acceptor_t real_accept;

static size_t entry_of(const fw_t *w, const char *order_id)
{
    for (size_t e = 0; e < w->ndraw; e++)
        if (strcmp(w->slot->v[e].order_id, order_id) == 0)
            return e;
    return w->ndraw;
}

/* The first waiting loser in draw order whose units left holds (one that
 * wants more keeps its place). */
static size_t o_first_waiting(const fw_t *w, int64_t left)
{
    const gw_fair_sale_t *fs = w->slot;
    for (size_t i = 0; i < w->ndraw; i++)
        if (fs->v[fs->perm[i]].state == GW_ENTRY_WAITLISTED && fs->v[fs->perm[i]].qty <= left)
            return i;
    return w->ndraw;
}

/* The units the orders of the draw's entries hold: won in the draw
 * (winners), or promoted. */
static int64_t o_held(const fw_t *w, uint8_t drawn_as)
{
    int64_t units = 0;
    for (size_t e = 0; e < w->ndraw; e++)
        if (w->o_drawn[e] == drawn_as &&
            gw_orders_get(w->srv.stores.orders, w->slot->v[e].order_id, NULL))
            units += w->slot->v[e].qty;
    return units;
}

static int obs_take(void *ctx, const gw_accept_req_t *req, gw_accept_t *a)
{
    fw_t *w = ctx;
    size_t e = w->drawn ? entry_of(w, req->rq->order_id) : w->ndraw;
    if (e == w->ndraw) /* a winner of the draw (sim_world.c checks the draw) */
        return gw_accept_take(&real_accept, req, a);
    const entry_t *en = &w->slot->v[e];
    unsigned p = (unsigned)person_of(en->person);
    inv_sale_info_t info;
    inv_sale_snapshot(inv_sale_find(w->srv.stores.inv, SALE), &info);
    size_t first = o_first_waiting(w, info.stock_left), pos = en->pos - 1;
    if (w->now >= w->ends_at)
        sim_fail(&w->log, "leftovers: p-%u promoted after the sale's end", p);
    if (gw_orders_get(w->srv.stores.orders, en->order_id, NULL))
        sim_fail(&w->log, "leftovers: p-%u promoted again, its order known", p);
    w->o_took[e] = true; /* a process that dies in it may have spooled the order */
    int rc = gw_accept_take(&real_accept, req, a);
    if (rc != GW_ACCEPT_SPOOLED && rc != GW_ACCEPT_SPOOL_REFUSED)
        return rc;
    if (first != pos)
        sim_fail(&w->log, "leftovers: p-%u at draw position %zu promoted while p-%u at %zu waits",
                 p, pos + 1,
                 first < w->ndraw ? (unsigned)person_of(w->slot->v[w->slot->perm[first]].person)
                                  : 0,
                 first + 1);
    sim_trace(&w->log, "leftovers: p-%u at draw position %zu promoted (%u units)", p, pos + 1,
              en->qty);
    return rc;
}

static void obs_commit(void *ctx, gw_accept_t *a, size_t n)
{
    (void)ctx;
    gw_accept_commit(&real_accept, a, n);
}

static void obs_publish(void *ctx, const gw_accept_t *a, size_t n)
{
    (void)ctx;
    gw_accept_publish(&real_accept, a, n);
}

static int obs_find(void *ctx, const char *order_id, gw_accept_t *a)
{
    (void)ctx;
    return gw_accept_find(&real_accept, order_id, a);
}

static const gw_accept_ops_t obs_accept_ops = {
    .take = obs_take, .commit = obs_commit, .publish = obs_publish, .find = obs_find};

/* After a turn: each entry's outcome as the product tells it now, and the
 * units promoted within those the draw's winners left and those given back. */
static void wl_told(fw_t *w)
{
    for (size_t e = 0; e < w->ndraw; e++) {
        w->o_state[e] = w->slot->v[e].state;
        w->o_took[e] = false;
    }
    int64_t units = o_held(w, GW_ENTRY_WAITLISTED), free = w->stock - o_held(w, GW_ENTRY_WON);
    if (units > free)
        sim_fail(&w->log, "leftovers: %" PRId64 " units promoted, %" PRId64 " left or freed", units,
                 free);
}

/* One turn of the lottery thread (gw_fair_tick: the draw, the leftovers'
 * walk), the releaser's and the spool's preparer's. */
static void fair_turn(fw_t *w)
{
    clock_set(w);
    arm(w, 0.1);
    gw_fair_tick(&w->srv);
    if (!sim_disk_dead(w->disk)) {
        gw_releaser_step(&w->srv);
        while (!sim_disk_dead(w->disk) && oq_spool_step(w->srv.stores.spool))
            ;
    }
    if (died(w))
        return;
    disarm(w);
    if (!w->drawn && atomic_load(&w->slot->drawn))
        drawn(w);
    else if (w->drawn)
        wl_told(w);
}

/* Units come back for the leftovers (a winner's order cancelled and given
 * back, or a restock: the stock left grows by its units). */
static void units_back(fw_t *w)
{
    unsigned q = 1 + sim_below(&w->rng, 2);
    w->stock += q;
    sale_put(w);
    sim_trace(&w->log, "%u units back", q);
}

/* After a start: every entry's outcome as told, none waiting with an order. */
static void wl_check(fw_t *w)
{
    if (!w->up || !w->drawn)
        return;
    gw_fair_sale_t *fs = w->slot;
    /* (not published yet if the load could not make its end durable: the
     * next turn of the draw does) */
    if (fs->ndraw != w->ndraw || !fs->core.lot_finished) {
        sim_fail(&w->log, "leftovers: the draw of %zu entrants reads %zu%s after a restart",
                 w->ndraw, fs->ndraw, fs->core.lot_finished ? "" : ", not finished");
        return;
    }
    for (size_t e = 0; e < w->ndraw && !w->log.failed; e++) {
        uint8_t s = fs->v[e].state, o = w->o_state[e];
        unsigned p = (unsigned)person_of(fs->v[e].person);
        bool held = gw_orders_get(w->srv.stores.orders, fs->v[e].order_id, NULL);
        if (s == GW_ENTRY_WAITLISTED && held)
            sim_fail(&w->log, "leftovers: p-%u waits while its order is held", p);
        else if (s == o)
            continue;
        else if (w->now >= w->ends_at && (s == GW_ENTRY_LOST || s == GW_ENTRY_WAITLISTED) &&
                 (o == GW_ENTRY_LOST || o == GW_ENTRY_WAITLISTED))
            w->o_state[e] = s; /* the end's record, read back or not: the next
                                  tick ends the waitlist again */
        else if (o == GW_ENTRY_WAITLISTED && s == GW_ENTRY_WON && held && w->o_took[e])
            w->o_state[e] = s; /* its promotion cut by the death: the spool's word */
        else if (o == GW_ENTRY_LOST && s == GW_ENTRY_WAITLISTED && !held &&
                 (w->o_power_last || w->o_evicted_last)) {
            /* lost for cause at a refused promotion, its "X" unsynced (a failed
             * fdatasync: gw_waitlist.c local_record logs it) and lost with the power,
             * or with its pages, evicted after that failure (sim_disk.h) */
            sim_trace(&w->log, "leftovers: p-%u waits again, its loss unrecorded", p);
            w->o_state[e] = s;
        } else if (o == GW_ENTRY_WON && !held && !w->fsync && w->o_power_last) {
            sim_trace(&w->log, "leftovers: p-%u's order lost with the power (write durability)", p);
            w->o_state[e] = s;
        } else
            sim_fail(&w->log, "leftovers: p-%u is %s after a restart, told %s", p,
                     gw_entry_state_name((gw_entry_state_t)s),
                     gw_entry_state_name((gw_entry_state_t)o));
    }
}

static void end_check(fw_t *w)
{
    if (!w->drawn)
        return;
    for (size_t e = 0; e < w->ndraw && !w->log.failed; e++) {
        const entry_t *en = &w->slot->v[e];
        bool won = en->state == GW_ENTRY_WON;
        bool held = gw_orders_get(w->srv.stores.orders, en->order_id, NULL);
        if (won && !held && !w->fsync && w->o_power)
            continue; /* write durability: a power loss may lose an accepted order, by design */
        if (won != held)
            sim_fail(&w->log, "end: p-%d %s and %s", person_of(en->person),
                     won ? "won" : "did not win", held ? "holds an order" : "has no order");
    }
    inv_sale_info_t info;
    inv_sale_snapshot(inv_sale_find(w->srv.stores.inv, SALE), &info);
    if (info.accepted_units > w->stock)
        sim_fail(&w->log, "end: %" PRId64 " units held, the stock is %" PRId64, info.accepted_units,
                 w->stock);
}

/*---- the run ----*/

/* The product's random keys (the draw's seed, the room's keys) drawn from the seed. */
static uint64_t seed_word(void *arg)
{
    return cm_rand_next(arg);
}

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
    cm_rand_t keys;
    cm_rand_seed(&keys, opts->seed ^ 0x5eed5eed5eed5eedull);
    cm_hash_seed_set_fake(seed_word, &keys);
    w->disk = sim_disk_new(&w->rng);
    /* the journals' pages a failed fdatasync dropped evicted; the spool's too: its open findings */
    sim_disk_set_evict(w->disk, SIM_EVICT_ALL);
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
    w->stock = 1;
    w->secret.k0 = cm_rand_next(&w->rng);
    w->secret.k1 = cm_rand_next(&w->rng);
    w->fsync = sim_chance(&w->rng, 0.5) || opts->fsync_only;
    sim_trace(&w->log, "durability %s", w->fsync ? "fsync" : "write");
    /* the server as the fairness module reads it: its configuration, stores
     * (made at each start), accept sequence; the module with the local store
     * (gw_fair_open's choice for one gateway) and its directory */
    w->cfg.durability = w->fsync ? GW_DURABILITY_FSYNC : GW_DURABILITY_WRITE;
    w->cfg.max_lottery_entries = 1000;
    w->cfg.max_registrations = w->cap;
    w->srv.cfg = &w->cfg;
    atomic_store(&w->srv.node.id, 1u);
    w->srv.pool.nworkers = 1;
    w->f = cm_xcalloc(1, sizeof(*w->f));
    w->f->srv = &w->srv;
    pthread_mutex_init(&w->f->tick_mu, NULL);
    pthread_mutex_init(&w->f->mu, NULL);
    w->f->lot = &gw_fair__lot_local;
    snprintf(w->f->dir, sizeof(w->f->dir), "fair");
    real_accept = gw_acceptor(&w->srv);
    w->f->accept = (gw_acceptor_t){.ops = &obs_accept_ops, .ctx = w};
    w->srv.fair = w->f;
    clock_set(w);
    proc_start(w);
    uint64_t total = REG_STEPS + WL_STEPS + HEAL_STEPS;
    unsigned nactive = 3 + sim_below(&w->rng, NP - 2); /* persons who want to register */
    for (w->now = 0; (uint64_t)w->now < total && !w->log.failed; w->now++) {
        out->steps++;
        clock_set(w);
        if ((uint64_t)w->now == REG_STEPS + WL_STEPS) { /* the heal: no more faults */
            w->faults = false;
            sim_disk_set_faults(w->disk, 0, 0);
        }
        if (!w->up) {
            sim_disk_stats_t ds;
            sim_disk_stats(w->disk, &ds);
            uint64_t ev0 = ds.evictions;
            proc_start(w);
            if (w->up && !w->drawn && atomic_load(&w->slot->drawn))
                drawn(w); /* published by a turn the process died in */
            sim_disk_stats(w->disk, &ds);
            w->o_evicted_last = ds.evictions > w->ev_mark;
            wl_check(w);
            reg_check(w);
            if (w->up)
                w->ev_mark = ev0;
            w->o_power_last = w->o_power_last && !w->up;
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
        if (!w->entered && w->now < w->reg_closes + WINDOW_MS)
            do_enter(w);
        if (w->drawn && sim_chance(&w->rng, 0.15))
            units_back(w);
        fair_turn(w);
    }
    if (!w->log.failed && w->up)
        end_check(w);
    if (w->up)
        slot_gone(w);
    cm_journal_set_fs(NULL);
    cm_hash_seed_set_fake(NULL, NULL);
    cm_time_set_fake(false, 0, 0);
    obs_w = NULL;
    pthread_mutex_destroy(&w->f->tick_mu);
    pthread_mutex_destroy(&w->f->mu);
    free(w->f);
    sim_disk_stats_t st;
    sim_disk_stats(w->disk, &st);
    out->fsync_fails = st.fsync_fails;
    out->evictions = st.evictions;
    out->torn_writes = st.torn_writes;
    sim_disk_free(w->disk);
}
