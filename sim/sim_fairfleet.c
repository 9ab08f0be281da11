/*
 * The fleet's fairness: driver and oracle (see sim_fairfleet.h).
 *
 * What runs real: three gateways, each a gw_server_t with the Redis inventory
 * (inventory/inv_redis*.c), a spool, an order table and gw_fair_open's state,
 * so every call below goes through the product's fleet shells and the Redis
 * store they were given (gw_fair_store.c's gw_fair__lot_redis,
 * gw_reg_fleet.c's gw_reg__fleet_ops), the fairness pool (gw_fair_pool.c),
 * the store's scripts (gw_fair_redis.c) and inventory's client, over the
 * transport seam into sim_redis, which runs the scripts in Lua 5.1. The
 * routes are the driver: it checks the phases as gw_buy.c's entry route and
 * the registration route do and calls gw_reg_add and gw_fair_enter; the
 * lottery thread is the driver too: gw_fair_tick on a gateway is one turn of
 * its loop (the fleet's configuration poll, the entry marks, the push, the
 * lock, the draw, the winners' accept sequence, the read of the draw).
 * What is not real: each gateway's spool is on its own simulated disk
 * (sim_disk.h: a kill keeps the page cache, a power cut keeps what was synced
 * and a torn prefix of the rest), and so are its fairness files (fair.json,
 * the entry logs, owner.id: every file call of the fairness slot goes through
 * the journal's table, here fair_fs over two more disks, one per directory);
 * the releaser's turns are the driver's (gw_releaser_open_stepped); the rest
 * of the data directories are real files on /dev/shm (else /tmp), no HTTP,
 * no relay, no heartbeat thread (gw_fleet.c: the members are the gateways up, or down for
 * less than its member TTL, through gw_fleet__members_sim), and the clock is
 * the fake one (cm_time_set_fake), 1-3 ms a step.
 *
 * The leftovers: once the draw is done, the settle side reports won orders
 * cancelled or failed (their gateway's compensation releases them in the
 * inventory, retried while in doubt), and gw_waitlist_fleet.c's promotions
 * (each gateway's tick) hand the units to the waitlisted losers. In half the
 * seeds the sale ends while they wait (or before the draw).
 *
 * Faults: Redis calls that time out (ran, run up to 20 steps later, or
 * never: a reply later than the pool's timeout), replies lost with their
 * connection, Redis down and back, Redis restarted with persistence (its
 * connections break, its script cache empties), a gateway restarted. In some
 * seeds (their own generator, xrng): each gateway's clock off Redis' by up to
 * +-200 ms, won orders cancelled during the draw, restocks during the
 * leftovers, a gateway killed at a Redis call of its push or of a promotion.
 * In some seeds (a third generator, frng): a gateway killed in its spool
 * after a reserve's reply came back (the draw's winner's or a promotion's
 * order write, torn, or its fdatasync; a restarted promoter's scan), a
 * gateway's power cut (those seeds run spool.durability fsync: the
 * durability whose answers survive it), and a Redis failover to a replica
 * that missed the last 1-20 acknowledged writes (in half of those seeds right
 * after a reserve or a release: the lost writes hold it). In some seeds (a
 * fourth generator, prng): a third sale's lottery deleted and created again,
 * the deleting gateway killed in its fairness files or its power cut (dels),
 * and in half of those (a fifth, arng) another gateway down across both (ds_away).
 *
 * The oracle, once every gateway read the draw (faults healed):
 *   - one entry per person: no two accounts of a person both answered
 *     "entered" with two orders, and the draw's entrants hold each person
 *     once, with an order some gateway answered "entered" for its account;
 *   - every entry answered "entered" is in the draw (unless its gateway left the members,
 *     or lost power before it pushed the entry: an entry is one write(2) to the log);
 *   - every gateway computes the same winners from the seed and the frozen
 *     entrants (its own SipHash key, gw_fair_order): the winners recorded are
 *     the first `stock` of that order, less the ones the spool refused;
 *   - leftovers go to the losers in draw order: the losers promoted are the
 *     first of the others in that order, none promoted after the sale's end
 *     (unless begun before it), and no unit left in the inventory while a
 *     loser waits and the sale has not ended;
 *   - winners <= stock + units freed + restocked, orders held <= stock +
 *     restocked, each winner has exactly one order (held in the Redis
 *     inventory with its person's unit, unless cancelled; in some gateway's
 *     spool), no order that is not a winner's, no person with two units and
 *     no spooled order of an entry the draw did not record won;
 *   - every gateway answers each entry it holds as the draw recorded it;
 *   - a registration answered 201 is in Redis (no restart loses Redis' data
 *     here: with persistence on, appendfsync always);
 *   - no entry of a deleted lottery comes back into the sale created again (ds_check).
 * After Redis lost data (a restart without persistence, a failover that lost
 * writes) the oracle checks what docs/fleet.md promises then (check_lost).
 */
#define _XOPEN_SOURCE 700 /* nftw(3): the data directories' removal */

#include "sim/sim_fairfleet.h"

#include "sim/sim_disk.h"
#include "sim/sim_journal_fs.h"
#include "sim/sim_redis.h"
#include "sim/sim_util.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_accept.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_fair_redis.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_reg_core.h"
#include "gateway/buy/gw_sale_core.h"
#include "inventory/inv.h"
#include "inventory/inv_fleet.h"
#include "inventory/inv_redis.h"
#include "queue/oq_spool.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NGW 3
#define NP 10 /* persons; every third one has a second account */
#define SALE "s1"
#define WON "{flashgate:fair:" SALE "}:won"
#define ORDERS "{sale:" SALE "}:orders"
#define ROOM "s2"          /* a sale with a waiting room */
#define DS "s3"            /* a sale deleted after its draw and created again (dels) */
#define NR 12              /* the room's persons */
#define NBUY 64            /* buys in progress at most */
#define NPOS 256           /* places tracked */
#define REG_MS 120         /* the registration window, from the start */
#define WINDOW_MS 240      /* the lottery's entry window, from the sale's start */
#define MEMBER_TTL_MS 3000 /* gw_fleet.c's: a member missing 3 heartbeats is gone */
#define SKEW_MS 200 /* a gateway's clock off Redis' at most (NTP's bound, docs/fleet.md) */
#define FAULT_STEPS 700
#define HEAL_STEPS 900 /* no faults: every gateway reads the draw by then */
#define URL                                                                                        \
    "redis://127.0.0.1:6379/?timeout_ms=40&admin_timeout_ms=2000&breaker_failures=1000"            \
    "&breaker_cooldown_ms=20"

/* What the driver was answered, per person. */
typedef struct person {
    bool reg_acked;    /* a registration answered 201 */
    bool registered;   /* answered 201 or 200: the route lets it enter */
    char order[2][40]; /* each account's entry answered "entered" ("" none) */
    int order_gw[2];
    /* its gateway lost power before the entry was pushed: an entry is one write(2) to the
     * entry log (docs/design.md "Fair start"), kept by a kill, not by a power cut */
    bool power_lost[2];
    int cancel;      /* its won order cancelled or failed: 0 no, 1 sent (in doubt), 2 done */
    char cancelled[40]; /* that order */
    bool before_end; /* won, or its order held, when the sale ended */
    bool by_draw;    /* won by the draw itself (recorded by :done): a unit freed during the draw
                        goes to its next entrant, past the stock, whenever the draw runs */
} person_t;

/* A room person's admission token, as the join answered it. */
typedef struct rperson {
    uint64_t pos, jti;
    int64_t exp_s;
} rperson_t;

/* A buy with a token, claimed and not settled yet. */
typedef struct buy {
    uint64_t jti, nonce;
    int g, gen;
} buy_t;

/* What the driver knows of a token: spent by an order answered, or maybe (its buy died). */
typedef struct token {
    uint64_t jti;
    bool spent, maybe, held;
} token_t;

typedef struct gw {
    bool up;
    int gen;         /* its incarnation */
    bool left;       /* out of the members while a draw was pending: its entries may be out */
    int64_t down_ms; /* when it last went down */
    gw_config_t cfg;
    gw_server_t srv;
} gw_t;

typedef struct world {
    cm_rand_t rng;
    cm_rand_t keys; /* the product's random keys (cm_hash_seed_set_fake) */
    sim_redis_t *rs;
    gw_t gw[NGW];
    person_t p[NP];
    rperson_t rp[NR];
    char place[NPOS][16]; /* the person each place was given to */
    buy_t buy[NBUY];
    size_t nbuy;
    token_t tok[NR * 4];
    size_t ntok;
    uint64_t claims, orders;
    char dir[64];
    int64_t t0, starts_at, ends_at, stock;
    int64_t cancels;    /* units the settle side freed (or may have: a release in doubt) */
    bool end_seen;      /* the sale's end passed: who held a unit then is noted */
    bool done_seen;     /* the draw's :done seen: its winners are noted (by_draw) */
    uint64_t wipe_step; /* Redis restarted without persistence at this step (0: never) */
    bool wiped;
    int64_t put_back;   /* the stock the operator puts back after the wipe (-1: done) */
    char room_seed[40]; /* the room's seed when the wipe came, if sealed (published) */
    uint64_t step, next_id;
    sim_log_t log;
    /* The faults added to this world later draw from their own generator, so that a seed
     * with none of them takes the paths it took before them. */
    cm_rand_t xrng;
    int64_t skew[NGW];  /* each gateway's wall clock minus Redis' (ms): 0, or +-SKEW_MS */
    int64_t off;        /* the skew the fake clock holds now (clock_at) */
    bool draw_cancels;  /* won orders cancelled during the draw too, not only after it */
    bool kills;         /* gateways killed at a Redis call of the push or a promotion */
    double p_restock;   /* a restock by the admin, each step of the leftovers */
    int64_t restocked;  /* units the admin added (or may have: a restock in doubt) */
    int64_t restock_add; /* a restock sent and not answered yet (0: none), again by its key */
    int nrestock;
    /* The faults added after those draw from a third generator (frng), for the same reason. */
    cm_rand_t frng;
    sim_disk_t *disk[NGW];  /* each gateway's spool, on a simulated disk (sim_disk.h) */
    /* Its data directory's fairness files, through the journal's table (fair_fs): fair.json
     * in the data directory (ddisk), the entry logs and owner.id in its fair/ (fdisk), each
     * directory on a disk of its own, as each directory's names are synced on its own. */
    sim_disk_t *fdisk[NGW], *ddisk[NGW];
    /* their faults (torn tails) and the dels: the other generators draw as before them */
    cm_rand_t prng;
    /* The seeds with dels (prng): sale DS's lottery takes entries ("d<n>"), ends, is deleted
     * (gw_fair_sale_deleted: every gateway unlinks its entry log and saves fair.json) and is
     * created again, a new lottery: none of the first one's entries may come back into it,
     * whatever a power cut or a kill in the fairness files kept. */
    bool dels;
    int ds_phase;     /* 1 the first lottery, 2 deleted, 3 created again */
    int64_t ds_ends;  /* the first sale's end */
    uint64_t ds_next; /* the entries' ids so far */
    uint64_t ds_old;  /* the ids of the first lottery: d1 .. d<ds_old> */
    /* each gateway dropped the deleted lottery (its slot inert: the delete, or its poll of the
     * tombstone): the sale is created again only then. A gateway down over both the delete
     * and the new sale would keep its entries: what a power cut brings back is asked of it. */
    bool ds_reset[NGW];
    bool ds_gone; /* the inventory deleted it (a later try finds none) */
    int ds_held;  /* a gateway whose power a delete cut stays down until the sale is created
                     again (-1: none): it comes back to the new lottery */
    /* In half the seeds with dels (their own generator, arng): a gateway that took an entry of
     * the first lottery stops with its window open and stays down across the delete and the
     * creation again (ds_away, -1: none; back once the sale is created again, or half-way
     * through the heal): it never reads the tombstone, and the new lottery's generation alone
     * tells it its copy is another lottery's (docs/fleet.md). */
    cm_rand_t arng;
    bool ds_across;
    int ds_away;
    int disk_g;             /* the gateway whose disk is in use (clock_at) */
    bool fsync;             /* spool.durability fsync: the seeds whose gateways lose power */
    bool spool_kills;       /* gateways killed in the spool after a reserve's reply */
    bool power;             /* gateways' power cut: the spool keeps what was synced */
    uint64_t failover_step; /* Redis failed over to a replica missing writes (0: never) */
    uint32_t failover_k;    /* the acknowledged writes that replica missed */
    bool fo_on_books;       /* the failover waits for a reserve or a release in the inventory */
    int64_t fo_books;       /* the orders held at the last step (fo_on_books), -1: not read */
    bool failed_over;
    int64_t forgotten;     /* orders held before the failover and not after: sold again */
    char fo_room_seed[40]; /* the room's published seed, when the failover lost the room */
} world_t;

static void account_of(int p, int a, char *out, size_t cap)
{
    snprintf(out, cap, "%c%d", a ? 'b' : 'a', p);
}

/* The person of an account ("a3", "b3": p3), -1 if none. */
static int person_of_account(const char *acct)
{
    if ((acct[0] != 'a' && acct[0] != 'b') || !acct[1])
        return -1;
    int p = atoi(acct + 1);
    return p >= 0 && p < NP ? p : -1;
}

/*---- the clocks: Redis' (the world's), and each gateway's off it by its skew ----*/

/* The fake clock set to gateway g's wall clock (g < 0: Redis'), and Redis told the
 * caller's skew. Every call into gateway g runs at its clock. */
static void clock_at(world_t *wd, int g)
{
    if (g >= 0) { /* and its disk: every call into gateway g uses its spool's */
        wd->disk_g = g;
        sim_disk_use(wd->disk[g]);
    }
    int64_t off = g < 0 ? 0 : wd->skew[g];
    if (off == wd->off)
        return;
    cm_time_set_fake(true, cm_mono_ns(), cm_wall_ms() - wd->off + off);
    wd->off = off;
    sim_redis_skew(wd->rs, off);
}

/* Redis' clock, whatever gateway's the fake clock holds. */
static int64_t now_ms(const world_t *wd)
{
    return cm_wall_ms() - wd->off;
}

/*---- a gateway: started and stopped as a process is ----*/

static void gw_down(world_t *wd, int g)
{
    gw_t *G = &wd->gw[g];
    if (!G->up)
        return;
    int64_t at = now_ms(wd);
    clock_at(wd, g);
    gw_fair_close(&G->srv);
    gw_releaser_stop(&G->srv); /* what it still held is in the spool (a start replays it) */
    gw_orders_free(G->srv.stores.orders);
    oq_spool_close(G->srv.stores.spool);
    inv_close(G->srv.stores.inv);
    /* the process is gone: its descriptors, not the page cache */
    sim_disk_crash(wd->disk[g]);
    sim_disk_crash(wd->fdisk[g]);
    sim_disk_crash(wd->ddisk[g]);
    memset(&G->srv, 0, sizeof(G->srv));
    G->up = false;
    G->down_ms = at;
    clock_at(wd, -1);
    sim_trace(&wd->log, "gw%d down", g);
}

static bool gw_start(world_t *wd, int g);

static bool gw_up(world_t *wd, int g)
{
    if (wd->gw[g].up)
        return true;
    clock_at(wd, g);
    bool ok = gw_start(wd, g);
    clock_at(wd, -1);
    return ok;
}

static bool gw_start(world_t *wd, int g)
{
    gw_t *G = &wd->gw[g];
    char why[256] = "";
    memset(&G->cfg, 0, sizeof(G->cfg));
    memset(&G->srv, 0, sizeof(G->srv));
    snprintf(G->cfg.data_dir, sizeof(G->cfg.data_dir), "%s/g%d", wd->dir, g);
    snprintf(G->cfg.inventory, sizeof(G->cfg.inventory), "%s", URL);
    G->cfg.redis_timeout_ms = 40;
    G->cfg.max_lottery_entries = 1000;
    G->cfg.max_registrations = 1000000; /* sales.max_registrations' default */
    G->srv.cfg = &G->cfg;
    atomic_store(&G->srv.node.id, (uint32_t)g + 1);
    G->srv.pool.nworkers = 1;
    if (inv_open(&G->srv.stores.inv, URL, NULL, 16, why, sizeof(why)) != 0) {
        sim_trace(&wd->log, "gw%d inventory: %s", g, why);
        return false;
    }
    (void)mkdir(G->cfg.data_dir, 0700);
    /* the spool on the gateway's simulated disk (the data directory's other files are real) */
    oq_spool_opts_t so = {.dir = "/sim/spool",
                          .durability = wd->fsync ? OQ_DURABILITY_FSYNC : OQ_DURABILITY_WRITE,
                          .fs = sim_disk_ops(),
                          .stepped = true};
    if (oq_spool_open(&G->srv.stores.spool, &so, why, sizeof(why)) != 0) {
        sim_fail(&wd->log, "gw%d spool: %s", g, why);
        inv_close(G->srv.stores.inv);
        return false;
    }
    G->srv.stores.orders = gw_orders_new(1000);
    /* its thread's turns are the driver's (gw_releaser_step after a lottery turn): a give-back
     * after a spool refusal (a gateway killed in its spool write) */
    gw_releaser_open_stepped(&G->srv);
    if (gw_fair_open(&G->srv, gw_acceptor(&G->srv), why, sizeof(why)) != 0) {
        sim_fail(&wd->log, "gw%d lottery: %s", g, why);
        gw_fair_close(&G->srv);
        gw_releaser_stop(&G->srv);
        gw_orders_free(G->srv.stores.orders);
        oq_spool_close(G->srv.stores.spool);
        inv_close(G->srv.stores.inv);
        return false;
    }
    /* the lottery thread's inventory handle (gw_fair_start_thread's), no thread:
     * the driver runs its turns (gw_fair_tick) */
    if (inv_worker_open(G->srv.stores.inv, NULL, &G->srv.fair->inv) != 0) {
        sim_fail(&wd->log, "gw%d lottery inventory handle", g);
        gw_fair_close(&G->srv);
        gw_releaser_stop(&G->srv);
        gw_orders_free(G->srv.stores.orders);
        oq_spool_close(G->srv.stores.spool);
        inv_close(G->srv.stores.inv);
        return false;
    }
    inv_redis_sync_step(G->srv.stores.inv);
    G->up = true;
    G->gen++;
    sim_trace(&wd->log, "gw%d up", g);
    return true;
}

/* Is order in gateway g's spool (read on g's disk)? */
static bool in_spool(world_t *wd, int g, const char *order)
{
    if (!wd->gw[g].up)
        return false;
    gw_accept_t acc;
    sim_disk_use(wd->disk[g]);
    bool found = gw_accept_find(&wd->gw[g].srv.fair->accept, order, &acc) == 1;
    sim_disk_use(wd->disk[wd->disk_g]);
    return found;
}

/* Gateway g's process died in one of its disks: it is dead in all of them. */
static bool gw_dead(const world_t *wd, int g)
{
    if (!sim_disk_dead(wd->disk[g]) && !sim_disk_dead(wd->fdisk[g]) && !sim_disk_dead(wd->ddisk[g]))
        return false;
    sim_disk_kill(wd->disk[g]);
    sim_disk_kill(wd->fdisk[g]);
    sim_disk_kill(wd->ddisk[g]);
    return true;
}

/* The caller's process died in its disk (sim_redis_dies_with): its Redis calls are refused. */
static bool disk_dead(void *ctx)
{
    const world_t *wd = ctx;
    return gw_dead(wd, wd->disk_g);
}

/*---- the fairness files: the journal's table (cm_journal_fs_t) on the gateway's disks ----*/

static world_t *g_world;

/* A directory's disk: 1 the fair/ directory (fdisk), 2 the data directory (ddisk); a
 * descriptor of disk k is sim_journal_fs's plus k * FD_STRIDE. */
#define FD_STRIDE 10000

static int dir_of(const char *path, bool is_dir)
{
    size_t n = strlen(path);
    const char *slash = strrchr(path, '/');
    size_t dn = is_dir || !slash ? n : (size_t)(slash - path);
    return dn >= 5 && memcmp(path + dn - 5, "/fair", 5) == 0 ? 1 : 2;
}

static sim_disk_t *disk_k(int k)
{
    return k == 1 ? g_world->fdisk[g_world->disk_g] : g_world->ddisk[g_world->disk_g];
}

/* A call on disk k begins: false (errno EIO) once the process died, in any of its disks. */
static bool ff_enter(int k)
{
    if (gw_dead(g_world, g_world->disk_g)) {
        errno = EIO;
        return false;
    }
    sim_disk_use(disk_k(k));
    return true;
}

/* ... and ends with r: the spool's disk selected again, a death in this one made the
 * process's (errno kept). */
static ssize_t ff_leave(ssize_t r)
{
    int e = errno;
    sim_disk_use(g_world->disk[g_world->disk_g]);
    (void)gw_dead(g_world, g_world->disk_g);
    errno = e;
    return r;
}

/* A table entry's body: call on disk k, as the POSIX call answers (-1 with errno). */
#define ON_DISK(k, call) return ff_enter(k) ? ff_leave(call) : -1
#define ON_DISK_INT(k, call) return ff_enter(k) ? (int)ff_leave(call) : -1

static int fd_k(int fd)
{
    return fd / FD_STRIDE;
}

static int fd_of(int fd)
{
    return fd % FD_STRIDE;
}

static int ff_open_k(int k, const char *path, int flags, mode_t mode)
{
    int fd = sim_journal_fs()->open(path, flags, mode);
    return fd < 0 ? fd : fd + k * FD_STRIDE;
}

static int ff_open(const char *path, int flags, mode_t mode)
{
    int k = dir_of(path, (flags & O_DIRECTORY) != 0);
    ON_DISK_INT(k, ff_open_k(k, path, flags, mode));
}

static int ff_close(int fd)
{
    ON_DISK_INT(fd_k(fd), sim_journal_fs()->close(fd_of(fd)));
}

static int ff_dup_k(int k, int fd)
{
    int nfd = sim_journal_fs()->dup(fd);
    return nfd < 0 ? nfd : nfd + k * FD_STRIDE;
}

static int ff_dup(int fd)
{
    ON_DISK_INT(fd_k(fd), ff_dup_k(fd_k(fd), fd_of(fd)));
}

static ssize_t ff_pread(int fd, void *buf, size_t n, off_t off)
{
    ON_DISK(fd_k(fd), sim_journal_fs()->pread(fd_of(fd), buf, n, off));
}

static ssize_t ff_write(int fd, const void *buf, size_t n)
{
    ON_DISK(fd_k(fd), sim_journal_fs()->write(fd_of(fd), buf, n));
}

static int ff_ftruncate(int fd, off_t len)
{
    ON_DISK_INT(fd_k(fd), sim_journal_fs()->ftruncate(fd_of(fd), len));
}

static int ff_fstat(int fd, struct stat *st)
{
    ON_DISK_INT(fd_k(fd), sim_journal_fs()->fstat(fd_of(fd), st));
}

static int ff_fdatasync(int fd)
{
    ON_DISK_INT(fd_k(fd), sim_journal_fs()->fdatasync(fd_of(fd)));
}

static int ff_fsync(int fd)
{
    ON_DISK_INT(fd_k(fd), sim_journal_fs()->fsync(fd_of(fd)));
}

/* A rename within one directory (the journal's and replace_file's are). */
static int ff_rename(const char *from, const char *to)
{
    ON_DISK_INT(dir_of(to, false), sim_journal_fs()->rename(from, to));
}

static int ff_unlink(const char *path)
{
    ON_DISK_INT(dir_of(path, false), sim_journal_fs()->unlink(path));
}

static int ff_mkdir(const char *path, mode_t mode)
{
    ON_DISK_INT(dir_of(path, true), sim_journal_fs()->mkdir(path, mode));
}

static const cm_journal_fs_t fair_fs = {
    .open = ff_open,
    .close = ff_close,
    .dup = ff_dup,
    .pread = ff_pread,
    .write = ff_write,
    .ftruncate = ff_ftruncate,
    .fstat = ff_fstat,
    .fdatasync = ff_fdatasync,
    .fsync = ff_fsync,
    .rename = ff_rename,
    .unlink = ff_unlink,
    .mkdir = ff_mkdir,
};

/* The product's random keys (secrets, draw and room seeds) drawn from the seed. */
static uint64_t seed_word(void *arg)
{
    return cm_rand_next(arg);
}

/* The heartbeat's view (gw_fleet.c), which the gateways here do not run: a
 * gateway is a member while up and for MEMBER_TTL_MS after it went down. */

static uint32_t members_sim(gw_server_t *srv)
{
    (void)srv;
    uint32_t n = 0;
    for (int g = 0; g < NGW; g++)
        n += g_world->gw[g].up || now_ms(g_world) - g_world->gw[g].down_ms < MEMBER_TTL_MS;
    return n ? n : 1;
}

static int any_up(world_t *wd)
{
    int start = (int)sim_below(&wd->rng, NGW);
    for (int k = 0; k < NGW; k++)
        if (wd->gw[(start + k) % NGW].up)
            return (start + k) % NGW;
    return -1;
}

/*---- the routes, as the driver plays them ----*/

static void do_register(world_t *wd, int g)
{
    gw_server_t *srv = &wd->gw[g].srv;
    int64_t opens, closes;
    if (!gw_reg_window(srv, SALE, &opens, &closes))
        return;
    gw_sale_cfg_t cfg = {.reg_opens_ms = opens, .reg_closes_ms = closes};
    if (gw_sale_phase_at(&cfg, false, false, cm_wall_ms()) != GW_SALE_PH_REGISTRATION)
        return;
    int p = (int)sim_below(&wd->rng, NP);
    char person[16], why[256] = "";
    snprintf(person, sizeof(person), "p%d", p);
    bool sync = false;
    int rc = gw_reg_add(srv, SALE, person, &sync, why, sizeof(why));
    sim_trace(&wd->log, "gw%d register %s -> %d %s", g, person, rc, rc < 0 ? why : "");
    if (sync)
        sim_fail(&wd->log, "a fleet's registration asked for a sync");
    if (rc == GW_REG_ADDED)
        wd->p[p].reg_acked = true;
    if (rc == GW_REG_ADDED || rc == GW_REG_ALREADY)
        wd->p[p].registered = true;
    if (rc == GW_REG_FULL)
        sim_fail(&wd->log, "registration of %s answered full with a cap of every person", person);
}

static void do_enter(world_t *wd, int g)
{
    gw_server_t *srv = &wd->gw[g].srv;
    gw_fair_sale_t *fs = gw_fair_find(srv->fair, SALE);
    if (!fs || gw_fair_phase(fs, wd->starts_at, cm_wall_ms()) != GW_FAIR_ENTER)
        return;
    int p = (int)sim_below(&wd->rng, NP);
    if (!wd->p[p].registered) /* the route's 403 not_registered */
        return;
    /* a second account plays on its own gateway: the person's two entries meet in Redis */
    int a = p % 3 == 0 && g == (p + 1) % NGW ? 1 : 0;
    gw_fair_ticket_t t;
    memset(&t, 0, sizeof(t));
    snprintf(t.order_id, sizeof(t.order_id), "f%" PRIu64, ++wd->next_id);
    snprintf(t.sale_id, sizeof(t.sale_id), SALE);
    account_of(p, a, t.user_id, sizeof(t.user_id));
    snprintf(t.person, sizeof(t.person), "p%d", p);
    t.qty = 1;
    t.entered_at_ms = cm_wall_ms();
    t.draw_at_ms = gw_fair_closes_at(fs, wd->starts_at);
    int rc = gw_fair_enter(fs, &t, "");
    sim_trace(&wd->log, "gw%d enter %s/%s -> %d %s", g, t.user_id, t.person, rc, t.order_id);
    person_t *P = &wd->p[p];
    if (rc == 0 && (wd->wiped || wd->failed_over)) {
        /* Redis lost the person's mark (all of it, or its last writes): no promise (check_lost) */
        snprintf(P->order[a], sizeof(P->order[a]), "%s", t.order_id);
        P->order_gw[a] = g;
    } else if (rc == 0) {
        if (P->order[a][0] && !P->power_lost[a])
            sim_fail(&wd->log, "account %s entered twice: %s then %s", t.user_id, P->order[a],
                     t.order_id);
        snprintf(P->order[a], sizeof(P->order[a]), "%s", t.order_id);
        P->order_gw[a] = g;
        P->power_lost[a] = false;
        if (P->order[!a][0] && !P->power_lost[!a])
            sim_fail(&wd->log, "person p%d entered with two accounts: %s (gw%d) and %s (gw%d)", p,
                     P->order[0], P->order_gw[0], P->order[1], P->order_gw[1]);
    } else if (rc == 1 && !wd->failed_over && P->order[a][0] && !P->power_lost[a] &&
               strcmp(t.order_id, P->order[a]) != 0) {
        sim_fail(&wd->log, "account %s's entry %s answered as %s", t.user_id, P->order[a],
                 t.order_id);
    }
}

/*---- the waiting room: joins, and buys that claim and settle a token ----*/

static token_t *token_of(world_t *wd, uint64_t jti)
{
    for (size_t i = 0; i < wd->ntok; i++)
        if (wd->tok[i].jti == jti)
            return &wd->tok[i];
    if (wd->ntok == sizeof(wd->tok) / sizeof(wd->tok[0]))
        return NULL;
    token_t *t = &wd->tok[wd->ntok++];
    memset(t, 0, sizeof(*t));
    t->jti = jti;
    return t;
}

static void do_join(world_t *wd, int g)
{
    gw_fair_sale_t *fs = gw_fair_room(wd->gw[g].srv.fair, ROOM);
    if (!fs)
        return;
    int k = (int)sim_below(&wd->rng, NR);
    char person[16];
    snprintf(person, sizeof(person), "r%d", k);
    gw_fair_room_view_t v;
    gw_fair_room_view(fs, &v);
    gw_wr_join_t j;
    memset(&j, 0, sizeof(j));
    int rc =
        gw_fair_room_join(fs, person, strlen(person), true, cm_wall_ms(), v.admitted_through, &j);
    sim_trace(&wd->log, "gw%d join %s -> %d pos=%" PRIu64 " jti=%" PRIx64, g, person, rc, j.pos,
              j.jti);
    if (rc != 0 || !j.pos)
        return;
    if (j.pos < NPOS) {
        if (wd->place[j.pos][0] && strcmp(wd->place[j.pos], person) != 0)
            sim_fail(&wd->log, "place %" PRIu64 " given to %s and to %s", j.pos, wd->place[j.pos],
                     person);
        snprintf(wd->place[j.pos], sizeof(wd->place[j.pos]), "%s", person);
    }
    wd->rp[k].pos = j.pos;
    if (j.jti) {
        wd->rp[k].jti = j.jti;
        wd->rp[k].exp_s = j.exp_s;
    }
}

static void do_claim(world_t *wd, int g)
{
    int k = (int)sim_below(&wd->rng, NR);
    rperson_t *R = &wd->rp[k];
    int64_t now_s = cm_wall_ms() / 1000;
    if (!R->jti || R->exp_s <= now_s || wd->nbuy == NBUY) /* the route's 403 */
        return;
    uint64_t nonce = 0;
    int rc = gw_fair_admission_claim(wd->gw[g].srv.fair, ROOM, R->jti, R->exp_s, 0, now_s, &nonce);
    sim_trace(&wd->log, "gw%d claim r%d jti=%" PRIx64 " -> %d nonce=%" PRIx64, g, k, R->jti, rc,
              nonce);
    if (rc != GW_WR_CLAIMED)
        return;
    wd->claims++;
    token_t *t = token_of(wd, R->jti);
    if (!t)
        return;
    if (t->spent || t->maybe || t->held)
        sim_fail(&wd->log, "token %" PRIx64 " of r%d claimed again while %s", R->jti, k,
                 t->spent   ? "spent by an order"
                 : t->maybe ? "maybe spent (its buy died)"
                            : "held");
    t->held = true;
    wd->buy[wd->nbuy++] = (buy_t){.jti = R->jti, .nonce = nonce, .g = g, .gen = wd->gw[g].gen};
}

/* A buy in progress ends: its order answered (the token spent) or not (given back); a
 * buy whose gateway died meanwhile ends with it (its order may exist). */
static void do_settle(world_t *wd)
{
    if (!wd->nbuy)
        return;
    size_t i = sim_below(&wd->rng, (uint32_t)wd->nbuy);
    buy_t b = wd->buy[i];
    wd->buy[i] = wd->buy[--wd->nbuy];
    token_t *t = token_of(wd, b.jti);
    if (!t)
        return;
    t->held = false;
    gw_t *G = &wd->gw[b.g];
    if (!G->up || G->gen != b.gen) {
        t->maybe = true;
        sim_trace(&wd->log, "buy of token %" PRIx64 " died with gw%d", b.jti, b.g);
        return;
    }
    bool accepted = sim_chance(&wd->rng, 0.6);
    gw_fair_admission_settle(G->srv.fair, ROOM, b.jti, 0, b.nonce, accepted);
    sim_trace(&wd->log, "gw%d settle jti=%" PRIx64 " accepted=%d", b.g, b.jti, accepted);
    if (accepted) {
        t->spent = true;
        wd->orders++;
    }
}

/*---- the leftovers: orders the settle side reports cancelled or failed ----*/

/* A won order cancelled or failed: its gateway's compensation (gw_release.c) releases it in
 * the inventory, retried while the answer is not known; the unit goes to the waitlist. */
static bool spooled(world_t *wd, const char *order)
{
    for (int g = 0; g < NGW; g++)
        if (in_spool(wd, g, order))
            return true;
    return false;
}

static void do_cancel(world_t *wd, int g)
{
    int p = (int)sim_below(&wd->rng, NP);
    person_t *P = &wd->p[p];
    char person[16];
    snprintf(person, sizeof(person), "p%d", p);
    const char *w = sim_redis_hget(wd->rs, WON, person);
    /* after the draw (the unit goes to the waitlist), or during it too (draw_cancels: to the
     * draw's next entrant, or the waitlist's once the draw is done) */
    if (!wd->draw_cancels && !sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:done"))
        return;
    if (P->cancel == 2)
        return;
    if (!P->cancel && w && strcmp(w, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED) != 0)
        snprintf(P->cancelled, sizeof(P->cancelled), "%s", w);
    /* draw_cancels: an order a drawer or promoter reserved and spooled but has not recorded
     * won yet (its reply lost, its gateway killed): the settle side has it from the spool */
    for (int a = 0; a < 2 && !P->cancel && !P->cancelled[0] && wd->draw_cancels; a++)
        if (P->order[a][0] && sim_redis_hget(wd->rs, ORDERS, P->order[a]) &&
            spooled(wd, P->order[a]))
            memcpy(P->cancelled, P->order[a], sizeof(P->cancelled)); /* both char[40] */
    if (!P->cancelled[0])
        return;
    char order[40];
    snprintf(order, sizeof(order), "%s", P->cancelled);
    if (!P->cancel && !sim_redis_hget(wd->rs, ORDERS, order)) { /* not reserved yet */
        P->cancelled[0] = '\0';
        return;
    }
    int rc = inv_release(wd->gw[g].srv.stores.inv, SALE, person, 1, order);
    sim_trace(&wd->log, "gw%d cancel %s of %s -> %d", g, order, person, rc);
    if (!P->cancel)
        wd->cancels++;
    if (rc == 0 || (rc == CM_ENOTFOUND && P->cancel))
        P->cancel = 2;
    else if (rc == CM_ENOTFOUND)
        sim_fail(&wd->log, "won order %s of %s held in the inventory is unknown to its release",
                 order, person);
    else
        P->cancel = 1;
}

/* The admin adds units during the leftovers (a restock with its Idempotency-Key, sent again
 * until answered: it adds once); the waitlist hands them to the losers in draw order. A
 * restock sent counts as added (it may have been). */
static void do_restock(world_t *wd, int g)
{
    if (!wd->restock_add) {
        wd->nrestock++;
        wd->restock_add = 1 + sim_below(&wd->xrng, 2);
        wd->restocked += wd->restock_add;
    }
    char key[32], why[256] = "";
    snprintf(key, sizeof(key), "restock-%d", wd->nrestock);
    inv_sale_info_t info;
    int rc = inv_restock_keyed(wd->gw[g].srv.stores.inv, SALE, wd->restock_add, key, &info, why,
                               sizeof(why));
    sim_trace(&wd->log, "gw%d restock +%" PRId64 " %s -> %d %s", g, wd->restock_add, key, rc,
              rc < 0 ? why : "");
    if (rc >= 0)
        wd->restock_add = 0;
}

/* At the sale's end: who won or holds a unit (no promotion may begin after it). Each gateway
 * ends the sale by its own clock: the one furthest behind may begin a promotion until its
 * clock passes ends_at, so the end is noted then (docs/fleet.md, "Clock skew"). */
static void note_end(world_t *wd)
{
    int64_t last = wd->ends_at;
    for (int g = 0; g < NGW; g++)
        if (wd->ends_at - wd->skew[g] > last)
            last = wd->ends_at - wd->skew[g];
    if (wd->end_seen || now_ms(wd) < last)
        return;
    wd->end_seen = true;
    /* a promotion begun before the end (pending: "person order owner at") may finish after it */
    const char *wp = sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:wp");
    int pending = wp && wp[0] == 'p' ? atoi(wp + 1) : -1;
    for (int p = 0; p < NP; p++) {
        char person[16];
        snprintf(person, sizeof(person), "p%d", p);
        bool held = false;
        for (int a = 0; a < 2; a++)
            held |= wd->p[p].order[a][0] && sim_redis_hget(wd->rs, ORDERS, wd->p[p].order[a]);
        wd->p[p].before_end = held || p == pending || sim_redis_hget(wd->rs, WON, person);
    }
    sim_trace(&wd->log, "the sale ended");
}

/*
 * Redis restarted without persistence (docs/fleet.md: its durability decides the no-oversell
 * promise; the runbook: the stock lived there). The operator puts the sales back with the
 * stock not yet sold and the fairness settings again, as the admin's PUTs do; what the fleet
 * kept of registrations, entries, the draw, the waitlist and the room is gone.
 */
static void wipe(world_t *wd)
{
    const char *l = sim_redis_hget(wd->rs, "{sale:" SALE "}:meta", "left");
    wd->put_back = l ? atoll(l) : wd->stock;
    sim_trace(&wd->log, "redis restart WITHOUT persistence (%" PRId64 " units not sold)",
              wd->put_back);
    const char *seed = sim_redis_hget(wd->rs, "{flashgate:fair:" ROOM "}:wr", "seed");
    if (seed && sim_redis_hget(wd->rs, "{flashgate:fair:" ROOM "}:wr", "sealed"))
        snprintf(wd->room_seed, sizeof(wd->room_seed), "%s", seed);
    sim_redis_restart(wd->rs, false);
    wd->wiped = true;
    wd->restock_add = 0; /* its key went with the keys: not sent again */
    wd->log.res->crashes++;
    /* a new room: its places and tokens are new */
    memset(wd->place, 0, sizeof(wd->place));
    memset(wd->rp, 0, sizeof(wd->rp));
    wd->ntok = 0;
    wd->nbuy = 0;
}

/* The operator's PUTs after the wipe, again until answered (each is idempotent). */
static void put_back(world_t *wd, int g)
{
    gw_server_t *s = &wd->gw[g].srv;
    inv_sale_def_t def;
    memset(&def, 0, sizeof(def));
    snprintf(def.sale_id, sizeof(def.sale_id), SALE);
    def.stock = wd->put_back;
    def.per_user_limit = 1;
    def.starts_at_ms = wd->starts_at;
    def.ends_at_ms = wd->ends_at;
    inv_sale_def_t room = def;
    snprintf(room.sale_id, sizeof(room.sale_id), ROOM);
    room.stock = 1000;
    room.ends_at_ms = wd->starts_at + 3600000;
    inv_sale_info_t info;
    char why[256] = "";
    int rc = inv_sale_put(s->stores.inv, &def, &info, why, sizeof(why));
    if (rc == 0)
        rc = inv_sale_put(s->stores.inv, &room, &info, why, sizeof(why));
    if (rc == 0)
        rc = gw_fair_configure(s, ROOM, 0, 0, 100, why, sizeof(why));
    if (rc == 0)
        rc = gw_fair_configure(s, SALE, WINDOW_MS, 0, 0, why, sizeof(why));
    sim_trace(&wd->log, "gw%d operator: the sales put back -> %d %s", g, rc, rc ? why : "");
    if (rc == 0)
        wd->put_back = -1;
}

static void held_order(const char *order, const char *val, void *ctx)
{
    (void)order, (void)val;
    (*(int64_t *)ctx)++;
}

typedef struct held_list {
    char (*id)[40];
    size_t n, cap;
} held_list_t;

static void held_add(const char *order, const char *val, void *ctx)
{
    held_list_t *h = ctx;
    (void)val;
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 16;
        h->id = cm_xrealloc(h->id, h->cap * sizeof(*h->id));
    }
    snprintf(h->id[h->n++], sizeof(h->id[0]), "%s", order);
}

/*
 * Redis' master dies and its replica takes over without the last failover_k writes it
 * acknowledged (asynchronous replication, no wait_replicas: docs/fleet.md "Failover and
 * durability"). Nobody puts anything back: the fleet runs on from the replica's state.
 * The orders held before and not after are noted (their units sell again), and the room's
 * published seed if the room itself was lost; places and tokens are the room's to
 * re-issue from its older state, so the driver's record of them starts again.
 */
static void failover(world_t *wd)
{
    held_list_t before = {0};
    sim_redis_hforeach(wd->rs, ORDERS, held_add, &before);
    char seed[40] = "";
    const char *s = sim_redis_hget(wd->rs, "{flashgate:fair:" ROOM "}:wr", "seed");
    if (s && sim_redis_hget(wd->rs, "{flashgate:fair:" ROOM "}:wr", "sealed"))
        snprintf(seed, sizeof(seed), "%s", s);
    size_t lost = sim_redis_failover_lose(wd->rs, wd->failover_k);
    int64_t forgot = 0;
    for (size_t i = 0; i < before.n; i++)
        forgot += sim_redis_hget(wd->rs, ORDERS, before.id[i]) == NULL;
    free(before.id);
    wd->forgotten += forgot;
    if (seed[0] && !sim_redis_hget(wd->rs, "{flashgate:fair:" ROOM "}:wr", "seed"))
        snprintf(wd->fo_room_seed, sizeof(wd->fo_room_seed), "%s", seed);
    wd->failed_over = true;
    wd->log.res->crashes++;
    sim_trace(&wd->log,
              "redis failover: the replica missed the last %zu acknowledged writes, %" PRId64
              " held orders forgotten",
              lost, forgot);
    memset(wd->place, 0, sizeof(wd->place));
    memset(wd->rp, 0, sizeof(wd->rp));
    wd->ntok = 0;
    wd->nbuy = 0;
}

/* Gateway g's disks (a gateway down) lose what was not synced: its entries not pushed yet
 * with them, unless their lines were synced (the draw's oracle then does not ask for them). */
static void gw_power_loss(world_t *wd, int g)
{
    for (int p = 0; p < NP; p++)
        for (int a = 0; a < 2; a++) {
            person_t *P = &wd->p[p];
            char person[16];
            snprintf(person, sizeof(person), "p%d", p);
            const char *e = sim_redis_hget(wd->rs, "{flashgate:fair:" SALE "}:e", person);
            const char *dr = sim_redis_hget(wd->rs, "{flashgate:fair:" SALE "}:drawn", person);
            size_t n = strlen(P->order[a]);
            bool pushed = (e && strncmp(e, P->order[a], n) == 0 && e[n] == ' ') ||
                          (dr && strncmp(dr, P->order[a], n) == 0 && dr[n] == ' ');
            if (P->order[a][0] && P->order_gw[a] == g && !pushed && !P->power_lost[a]) {
                P->power_lost[a] = true;
                sim_trace(&wd->log, "entry %s of p%d not pushed when gw%d lost power", P->order[a],
                          p, g);
            }
        }
    sim_disk_power_loss(wd->disk[g]);
    sim_disk_power_loss(wd->fdisk[g]);
    sim_disk_power_loss(wd->ddisk[g]);
}

/* Gateway g loses power: the process dies where it stands (nothing more reaches its disk or
 * Redis), then its disk keeps what was synced and a torn prefix of the rest (sim_disk.h). */
static void power_cut(world_t *wd, int g)
{
    sim_trace(&wd->log, "gw%d power lost", g);
    wd->log.res->crashes++;
    sim_disk_kill(wd->disk[g]);
    gw_down(wd, g);
    gw_power_loss(wd, g);
}

/*---- faults ----*/

/* Between the close and the draw. */
static bool draw_pending(world_t *wd)
{
    int64_t closes = wd->starts_at + WINDOW_MS;
    if (now_ms(wd) < closes)
        return false;
    for (int g = 0; g < NGW; g++) {
        gw_fair_sale_t *fs = wd->gw[g].up ? gw_fair_find(wd->gw[g].srv.fair, SALE) : NULL;
        if (fs && atomic_load(&fs->drawn))
            return false;
    }
    return true;
}

static void note_left(world_t *wd);

static void faults(world_t *wd)
{
    sim_redis_faults_t *f = sim_redis_faults(wd->rs);
    if (sim_chance(&wd->rng, f->down ? 0.08 : 0.006)) {
        f->down = !f->down;
        sim_trace(&wd->log, "redis %s", f->down ? "down" : "up");
    }
    if (sim_chance(&wd->rng, 0.002)) {
        sim_trace(&wd->log, "redis restart with persistence");
        sim_redis_restart(wd->rs, true);
        wd->log.res->crashes++;
    }
    if (sim_chance(&wd->rng, 0.002)) { /* a long outage (a partition, a slow restart): 0.5-5 s */
        uint64_t ms = 500 + sim_below(&wd->rng, 4500);
        sim_trace(&wd->log, "redis away for %" PRIu64 " ms", ms);
        f->down = true;
        for (uint64_t t = 0; t < ms; t += 250) { /* the lottery threads keep ticking, failing */
            cm_time_advance_fake(250 * 1000000ull);
            note_end(wd);
            note_left(wd);
            for (int g = 0; g < NGW; g++)
                if (wd->gw[g].up) {
                    clock_at(wd, g);
                    gw_fair_tick(&wd->gw[g].srv);
                    clock_at(wd, -1);
                }
        }
        f->down = false;
    }
    if (sim_chance(&wd->rng, 0.004)) {
        int g = (int)sim_below(&wd->rng, NGW);
        if (wd->gw[g].up) {
            sim_trace(&wd->log, "gw%d restart", g);
            wd->log.res->crashes++;
            gw_down(wd, g);
        }
    }
    if (wd->power && sim_chance(&wd->frng, 0.003)) {
        int g = (int)sim_below(&wd->frng, NGW);
        if (wd->gw[g].up)
            power_cut(wd, g);
    }
}

/* The members' bound (gw_fair__fleet_tick_sale): the draw waits for the members'
 * pushes, and a gateway down past the member TTL is none: its entries are not drawn. */
static void note_left(world_t *wd)
{
    if (!draw_pending(wd))
        return;
    for (int g = 0; g < NGW; g++)
        if (!wd->gw[g].up && now_ms(wd) - wd->gw[g].down_ms >= MEMBER_TTL_MS && !wd->gw[g].left) {
            wd->gw[g].left = true;
            sim_trace(&wd->log, "gw%d left the members before the draw", g);
        }
}

static void count_loser(const char *person, const char *val, void *ctx)
{
    world_t *wd = ((void **)ctx)[0];
    (void)val;
    if (!sim_redis_hget(wd->rs, WON, person))
        (*(int *)((void **)ctx)[1])++;
}

/* A kill is drawn in the seeds with kills, in the faults' phase: while the entries are pushed
 * (from the close by the clock furthest ahead until the draw is done), and while units wait
 * for losers (a walk promotes). */
static bool losers_wait(world_t *wd);

static double p_kill(world_t *wd, bool heal)
{
    if (!wd->kills || heal)
        return 0;
    if (!sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:done"))
        return now_ms(wd) >= wd->starts_at + WINDOW_MS - SKEW_MS ? 0.05 : 0;
    return losers_wait(wd) ? 0.7 : 0;
}

/* Units wait for losers: a walk promotes (its reserves and spool writes). */
static bool losers_wait(world_t *wd)
{
    const char *mode = sim_redis_hget(wd->rs, "{flashgate:fair:" SALE "}:wl", "mode");
    const char *left = sim_redis_hget(wd->rs, "{sale:" SALE "}:meta", "left");
    bool ended = sim_redis_hget(wd->rs, "{flashgate:fair:" SALE "}:wl", "ended") != NULL;
    if (!mode || mode[0] != 'w' || ended || !left || atoll(left) <= 0)
        return false;
    int losers = 0;
    void *ctx[2] = {wd, &losers};
    sim_redis_hforeach(wd->rs, "{flashgate:fair:" SALE "}:drawn", count_loser, ctx);
    return losers > 0;
}

/* The kill in the spool: drawn in the seeds with spool kills, while the draw's winners are
 * accepted and while units wait for losers. It lands at one of the turn's first spool
 * operations: the order's write after its reserve's reply came back (a torn record), the
 * fdatasync after it, or a restarted promoter's scan of its spool. */
static double p_spool_kill(world_t *wd, bool heal)
{
    if (!wd->spool_kills || heal)
        return 0;
    if (!sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:done"))
        return now_ms(wd) >= wd->starts_at + WINDOW_MS ? 0.3 : 0;
    return losers_wait(wd) ? 0.8 : 0;
}

/* One turn of gateway g's lottery thread. In the seeds with kills the gateway may be killed
 * at one of the turn's first Redis calls (that call ran, its reply never read): in the
 * middle of the push or of a promotion. Its data directory and spool stay; its memory goes. */
static void tick(world_t *wd, int g, bool heal)
{
    sim_redis_faults_t *f = sim_redis_faults(wd->rs);
    if (sim_chance(&wd->xrng, p_kill(wd, heal)))
        f->die_after = 1 + sim_below(&wd->xrng, 8);
    bool armed = sim_chance(&wd->frng, p_spool_kill(wd, heal));
    sim_disk_stats_t d0, d1;
    sim_disk_stats(wd->disk[g], &d0);
    if (armed)
        sim_disk_die_after(wd->disk[g], 1 + sim_below(&wd->frng, 2));
    gw_fair_tick(&wd->gw[g].srv);
    f->die_after = 0;
    if (armed && sim_disk_dead(wd->disk[g])) {
        /* killed in the spool: its Redis calls were refused from then on (disk_dead) */
        bool power = wd->power && sim_chance(&wd->frng, 0.5);
        const char *wp = sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:wp");
        char order[40] = "";
        if (wp)
            (void)sscanf(wp, "%*s %39s", order);
        sim_disk_stats(wd->disk[g], &d1);
        sim_trace(&wd->log, "gw%d killed in its spool in a turn%s (%s%s)%s", g,
                  d1.torn_writes > d0.torn_writes ? ", its write torn" : "",
                  wp                                                        ? "promotion pending"
                  : sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:done") ? "leftovers"
                                                                            : "draw",
                  order[0] && sim_redis_hget(wd->rs, ORDERS, order) ? ", its order reserved" : "",
                  power ? ", and its power lost" : "");
        wd->log.res->crashes++;
        f->dead = false;
        gw_down(wd, g);
        if (power)
            gw_power_loss(wd, g);
        return;
    }
    if (armed)
        sim_disk_die_after(wd->disk[g], 0);
    if (!f->dead)
        gw_releaser_step(&wd->gw[g].srv);
    if (f->dead) {
        const char *wp = sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:wp");
        sim_trace(&wd->log, "gw%d killed at a Redis call of its turn (%s)", g,
                  wp                                                        ? "promotion pending"
                  : sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:done") ? "leftovers"
                                                                            : "push");
        wd->log.res->crashes++;
        gw_down(wd, g); /* its calls refused meanwhile: nothing more reaches Redis */
        f->dead = false;
    }
}

static void act(world_t *wd, int g, bool heal);

/*---- the deleted sale (dels) ----*/

/* An entry to DS's lottery on gateway g, if its window is open there. */
static void ds_enter(world_t *wd, int g)
{
    gw_fair_sale_t *fs = gw_fair_find(wd->gw[g].srv.fair, DS);
    int64_t starts = fs ? atomic_load(&fs->sale.cfg.starts_at_ms) : 0;
    if (!fs || gw_fair_phase(fs, starts, cm_wall_ms()) != GW_FAIR_ENTER)
        return;
    int p = (int)sim_below(&wd->prng, NP);
    gw_fair_ticket_t t;
    memset(&t, 0, sizeof(t));
    snprintf(t.order_id, sizeof(t.order_id), "d%" PRIu64, wd->ds_next + 1);
    snprintf(t.sale_id, sizeof(t.sale_id), DS);
    snprintf(t.user_id, sizeof(t.user_id), "p%d", p);
    snprintf(t.person, sizeof(t.person), "p%d", p);
    t.qty = 1;
    t.entered_at_ms = cm_wall_ms();
    t.draw_at_ms = gw_fair_closes_at(fs, starts);
    int rc = gw_fair_enter(fs, &t, "");
    if (rc == 0)
        wd->ds_next++;
    sim_trace(&wd->log, "gw%d enter %s in %s -> %d %s", g, t.user_id, DS, rc, t.order_id);
    if (rc == 0 && wd->ds_across && wd->ds_away < 0 && wd->ds_phase == 1 && g != wd->ds_held &&
        sim_chance(&wd->arng, 0.5)) {
        gw_down(wd, g);
        wd->ds_away = g;
        sim_trace(&wd->log, "gw%d stays down across the delete of %s and its creation again", g,
                  DS);
    }
}

/* The admin's DELETE of DS once it ended (the inventory's, then its lottery's, again until
 * answered), on gateway g: in some of them g is killed in its fairness files (their next
 * operations: the log's unlink, the new log, fair.json's rewrite), and loses power after, or
 * right after the answer. */
static void ds_delete(world_t *wd, int g)
{
    if (now_ms(wd) < wd->ds_ends + SKEW_MS)
        return;
    gw_server_t *srv = &wd->gw[g].srv;
    bool armed = sim_chance(&wd->prng, 0.3);
    if (armed)
        sim_disk_die_after(sim_chance(&wd->prng, 0.5) ? wd->fdisk[g] : wd->ddisk[g],
                           1 + sim_below(&wd->prng, 8));
    char why[256] = "", fwhy[256] = "";
    int rc = inv_sale_delete(srv->stores.inv, DS, cm_wall_ms(), why, sizeof(why));
    int frc = rc == 0 || rc == CM_ENOTFOUND
                  ? gw_fair_sale_deleted(srv, DS, rc == CM_ENOTFOUND, fwhy, sizeof(fwhy))
                  : rc;
    bool dead = gw_dead(wd, g);
    sim_trace(&wd->log, "gw%d delete %s -> %d %d %s%s%s", g, DS, rc, frc, why, fwhy,
              dead ? " (killed in its fairness files)" : "");
    if (!dead) {
        sim_disk_die_after(wd->fdisk[g], 0);
        sim_disk_die_after(wd->ddisk[g], 0);
    }
    /* done: the lottery's delete answered, or nothing left to delete after an earlier try
     * deleted the sale (its tombstone tells the gateways; the route's 404) */
    wd->ds_gone = wd->ds_gone || rc == 0;
    bool done = !dead && (frc == 0 || (frc == CM_ENOTFOUND && wd->ds_gone));
    if (done) {
        wd->ds_phase = 2;
        wd->ds_old = wd->ds_next;
        wd->ds_reset[g] = frc == 0; /* else its slot goes at its poll of the tombstone */
    }
    if (dead || (done && sim_chance(&wd->prng, 0.5))) {
        if (!dead)
            sim_disk_kill(wd->disk[g]);
        (void)gw_dead(wd, g);
        sim_trace(&wd->log, "gw%d power lost after the delete", g);
        wd->log.res->crashes++;
        gw_down(wd, g);
        gw_power_loss(wd, g);
        if (done)
            wd->ds_held = g;
    }
}

static int ds_put(world_t *wd, int g, int64_t starts, int64_t ends, char *why, size_t cap);

/* Every gateway dropped the deleted lottery (ds_reset): noted as each one is seen inert. */
static bool ds_all_reset(world_t *wd)
{
    bool all = true;
    for (int g = 0; g < NGW; g++) {
        if (g == wd->ds_away)
            continue; /* down across both: not asked */
        gw_fair_sale_t *fs = wd->gw[g].up ? gw_fair__slot_find(wd->gw[g].srv.fair, DS) : NULL;
        if (fs && !wd->ds_reset[g]) {
            pthread_mutex_lock(&fs->mu);
            wd->ds_reset[g] = fs->n == 0 && !gw_fair__past_close(fs) &&
                              atomic_load(&fs->sale.cfg.fair_window_ms) == 0;
            pthread_mutex_unlock(&fs->mu);
        }
        all = all && wd->ds_reset[g];
    }
    return all;
}

static void ds_act(world_t *wd, int g, bool heal)
{
    if (wd->ds_phase == 1 && now_ms(wd) < wd->ds_ends)
        ds_enter(wd, g);
    else if (wd->ds_phase == 1)
        ds_delete(wd, g);
    else if (wd->ds_phase == 2 && ds_all_reset(wd)) {
        char why[256] = "";
        int64_t starts = now_ms(wd) + 60;
        int rc = ds_put(wd, g, starts, starts + 3600000, why, sizeof(why));
        sim_trace(&wd->log, "gw%d %s created again -> %d %s", g, DS, rc, why);
        if (rc == 0) {
            wd->ds_phase = 3;
            if (wd->ds_away >= 0)
                sim_trace(&wd->log, "gw%d, down across both, may come back", wd->ds_away);
            wd->ds_held = wd->ds_away = -1;
        }
    } else if (!heal) {
        ds_enter(wd, g);
    }
}

/* No entry of DS's first lottery in a gateway's lottery of DS, or in the fleet's draw of it,
 * once it was deleted. */
static void ds_check(world_t *wd)
{
    if (wd->ds_phase < 2 || wd->wiped || wd->failed_over) /* the tombstone may be lost */
        return;
    for (int g = 0; g < NGW; g++) {
        gw_fair_sale_t *fs = wd->gw[g].up ? gw_fair__slot_find(wd->gw[g].srv.fair, DS) : NULL;
        if (!fs)
            continue;
        pthread_mutex_lock(&fs->mu);
        const char *cv = sim_redis_hget(wd->rs, "{flashgate:fair}:conf", DS);
        sim_trace(&wd->log, "gw%d's lottery of %s: window %lld, %zu entries, closed %d; conf %s", g,
                  DS, (long long)atomic_load(&fs->sale.cfg.fair_window_ms), fs->n,
                  gw_fair__past_close(fs), cv ? cv : "none");
        for (size_t i = 0; i < fs->n; i++)
            if (strtoull(fs->v[i].order_id + 1, NULL, 10) <= wd->ds_old)
                sim_fail(&wd->log,
                         "gw%d's lottery of %s holds %s's entry %s of its deleted lottery", g, DS,
                         fs->v[i].person, fs->v[i].order_id);
        pthread_mutex_unlock(&fs->mu);
    }
    for (int p = 0; p < NP; p++) {
        char person[16];
        snprintf(person, sizeof(person), "p%d", p);
        const char *keys[] = {"{flashgate:fair:" DS "}:e", "{flashgate:fair:" DS "}:drawn"};
        for (int k = 0; k < 2; k++) {
            const char *v = sim_redis_hget(wd->rs, keys[k], person);
            if (v && v[0] == 'd' && strtoull(v + 1, NULL, 10) <= wd->ds_old && wd->ds_phase == 3)
                sim_fail(&wd->log, "the fleet's lottery of %s created again holds %s's entry %s",
                         DS, person, v);
        }
    }
}

/* The draw done: who it made a winner (no promotion yet, or in the same turn as :done). */
static void note_done(world_t *wd)
{
    if (wd->done_seen || !sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:done"))
        return;
    wd->done_seen = true;
    for (int p = 0; p < NP; p++) {
        char person[16];
        snprintf(person, sizeof(person), "p%d", p);
        wd->p[p].by_draw = sim_redis_hget(wd->rs, WON, person) != NULL;
    }
}

static void step(world_t *wd, bool heal)
{
    wd->step++;
    wd->log.res->steps++;
    cm_time_advance_fake((1 + sim_below(&wd->rng, 3)) * 1000000ull);
    sim_redis_step(wd->rs, wd->step);
    if (wd->step == wd->wipe_step)
        wipe(wd);
    if (wd->failover_step && !wd->failed_over && wd->step >= wd->failover_step) {
        int64_t held = 0;
        if (wd->fo_on_books)
            sim_redis_hforeach(wd->rs, ORDERS, held_order, &held);
        if (!wd->fo_on_books || (wd->fo_books >= 0 && held != wd->fo_books))
            failover(wd); /* its lost writes hold the inventory's last change (fo_on_books) */
        wd->fo_books = held;
    }
    note_end(wd);
    if (!heal)
        faults(wd);
    note_left(wd);
    for (int g = 0; g < NGW; g++)
        if (!wd->gw[g].up && (heal || sim_chance(&wd->rng, 0.05)) && (g != wd->ds_held || heal) &&
            (g != wd->ds_away || (heal && wd->step > FAULT_STEPS + HEAL_STEPS / 2)))
            gw_up(wd, g);
    int g = any_up(wd);
    if (g < 0)
        return;
    clock_at(wd, g);
    act(wd, g, heal);
    clock_at(wd, -1);
    note_done(wd);
}

/* The step's one action, on gateway g (the fake clock at g's). */
static void act(world_t *wd, int g, bool heal)
{
    if (wd->ds_phase && sim_chance(&wd->prng, 0.15)) {
        ds_act(wd, g, heal);
        return;
    }
    if (wd->wiped && wd->put_back >= 0) {
        put_back(wd, g);
        return;
    }
    if (wd->restock_add ||
        (!heal && !wd->wiped && sim_chance(&wd->xrng, wd->p_restock) &&
         sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:done"))) {
        do_restock(wd, g);
        return;
    }
    uint32_t a = sim_below(&wd->rng, 100);
    if (a < 40 && !heal && now_ms(wd) >= wd->starts_at + WINDOW_MS && sim_chance(&wd->rng, 0.1))
        do_cancel(wd, g);
    else if (a < 20 && !heal)
        do_register(wd, g);
    else if (a < 40 && !heal)
        do_enter(wd, g);
    else if (a < 50 && !heal)
        do_join(wd, g);
    else if (a < 58 && !heal)
        do_claim(wd, g);
    else if (a < 64)
        do_settle(wd);
    else if (a < 92)
        tick(wd, g, heal);
    else
        inv_redis_sync_step(wd->gw[g].srv.stores.inv);
}

/*---- the oracle ----*/

typedef struct entrant {
    char person[16], account[16], order[40];
} entrant_t;

typedef struct drawn {
    entrant_t e[NP * 2];
    size_t n;
    char won[NP][40]; /* per person: the order won, "-" refused, "" none */
    world_t *wd;
} drawn_t;

static void read_entrant(void *ctx, const char *person, const char *v)
{
    drawn_t *d = ctx;
    if (d->n == sizeof(d->e) / sizeof(d->e[0])) {
        sim_fail(&d->wd->log, "more entrants than accounts");
        return;
    }
    entrant_t *e = &d->e[d->n++];
    memset(e, 0, sizeof(*e));
    sim_trace(&d->wd->log, "entrant %s: %s", person, v);
    snprintf(e->person, sizeof(e->person), "%s", person);
    if (sscanf(v, "%39s", e->order) != 1)
        sim_fail(&d->wd->log, "entrant %s: value \"%s\"", person, v);
    const char *at = strstr(v, " @");
    snprintf(e->account, sizeof(e->account), "%s", at ? at + 2 : person);
    char *sp = strchr(e->account, ' ');
    if (sp)
        *sp = '\0';
}

static void read_winner(void *ctx, const char *person, const char *order)
{
    drawn_t *d = ctx;
    int p = person[0] == 'p' ? atoi(person + 1) : -1;
    if (p < 0 || p >= NP) {
        sim_fail(&d->wd->log, "a winner that is no person: %s", person);
        return;
    }
    snprintf(d->won[p], sizeof(d->won[p]), "%s", order);
}

typedef struct books {
    int64_t orders;
    world_t *wd;
    drawn_t *d;
} books_t;

static void book_order(const char *order, const char *val, void *ctx)
{
    books_t *b = ctx;
    (void)val;
    b->orders++;
    for (int p = 0; p < NP; p++)
        if (strcmp(b->d->won[p], order) == 0)
            return;
    sim_fail(&b->wd->log, "order %s in the inventory is no winner's", order);
}

/* The winners gateway g computes: the first `stock` of its draw order, less the refused; then
 * the leftovers: the losers promoted are the first of the others in that order. */
static void check_same_winners(world_t *wd, int g, const drawn_t *d, uint64_t seed)
{
    const char *wl_mode = sim_redis_hget(wd->rs, "{flashgate:fair:" SALE "}:wl", "mode");
    gw_fair_sale_t *fs = gw_fair_find(wd->gw[g].srv.fair, SALE);
    if (!fs) {
        sim_fail(&wd->log, "gw%d has no lottery", g);
        return;
    }
    pthread_mutex_lock(&fs->mu);
    cm_hash_key_t secret = fs->secret;
    pthread_mutex_unlock(&fs->mu);
    uint64_t keys[NP * 2];
    uint32_t perm[NP * 2];
    for (size_t i = 0; i < d->n; i++)
        keys[i] = cm_hash_sip24(&secret, d->e[i].person, strlen(d->e[i].person));
    gw_fair_order(keys, d->n, seed, perm);
    int64_t left = wd->stock;
    const char *waits = NULL; /* the first loser in draw order not promoted */
    for (size_t k = 0; k < d->n; k++) {
        const entrant_t *e = &d->e[perm[k]];
        int p = atoi(e->person + 1);
        const char *w = d->won[p];
        if (strcmp(w, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED) == 0)
            continue;
        bool won = strcmp(w, e->order) == 0;
        if (left > 0) {
            left--;
            if (!won)
                sim_fail(&wd->log,
                         "gw%d's draw order puts %s (%s) at %zu with %" PRId64
                         " units left, and the draw recorded \"%s\"",
                         g, e->person, e->order, k, left + 1, w);
            continue;
        }
        if (!won && !waits)
            waits = e->person;
        else if (won && waits)
            sim_fail(&wd->log,
                     "leftovers out of draw order: %s (at %zu) promoted while %s before it was not",
                     e->person, k, waits);
        else if (won && !wd->p[p].before_end && !wd->p[p].by_draw && wd->end_seen && wl_mode &&
                 wl_mode[0] == 'w')
            sim_fail(&wd->log, "loser %s promoted after the sale's end", e->person);
    }
}

/*
 * After Redis lost its data (a restart without persistence: wd->wiped) or its last
 * acknowledged writes (a failover to a replica that missed them: wd->failed_over),
 * docs/fleet.md promises what Redis' durability allows, and the oracle checks that alone:
 * no oversell past the orders Redis forgot (the orders in the gateways' spools, each id
 * once, within the stock, the units freed and restocked, and after a failover the orders
 * held before it and not after: their units sold again), and a sealed room's published seed
 * never offered to a room made again ("Waiting room"). After a failover Redis is a prefix
 * of what it ran, so its own books still hold: orders held within the stock and the
 * restocks, one unit a person, and every order recorded won in a spool (an order is
 * spooled before it is recorded). Registrations, entry marks, places and tokens may be
 * lost with the writes and are not checked.
 */
static void check_lost(world_t *wd)
{
    const char *seed = sim_redis_hget(wd->rs, "{flashgate:fair:" ROOM "}:wr", "seed");
    const char *published = wd->wiped ? wd->room_seed : wd->fo_room_seed;
    if (published[0] && seed && strcmp(seed, published) == 0)
        sim_fail(&wd->log, "the room made again after %s took the lost room's published seed %s",
                 wd->wiped ? "the wipe" : "the failover", seed);
    int64_t nspooled = 0;
    for (uint64_t i = 1; i <= wd->next_id; i++) {
        char id[40];
        snprintf(id, sizeof(id), "f%" PRIu64, i);
        nspooled += spooled(wd, id);
    }
    if (wd->wiped)
        sim_trace(&wd->log,
                  "oracle (Redis wiped): %" PRId64 " orders spooled, stock %" PRId64 ", %" PRId64
                  " units freed",
                  nspooled, wd->stock, wd->cancels);
    else
        sim_trace(&wd->log,
                  "oracle (Redis failed over): %" PRId64 " orders spooled, stock %" PRId64
                  ", %" PRId64 " units freed, %" PRId64 " restocked, %" PRId64
                  " held orders forgotten",
                  nspooled, wd->stock, wd->cancels, wd->restocked, wd->forgotten);
    if (nspooled > wd->stock + wd->cancels + wd->restocked + wd->forgotten)
        sim_fail(&wd->log,
                 "%" PRId64 " orders spooled for a stock of %" PRId64 " and %" PRId64
                 " units freed and %" PRId64 " restocked and %" PRId64
                 " orders forgotten, across Redis' %s",
                 nspooled, wd->stock, wd->cancels, wd->restocked, wd->forgotten,
                 wd->wiped ? "restart without persistence" : "failover");
    if (wd->wiped)
        return;
    int64_t held = 0;
    sim_redis_hforeach(wd->rs, ORDERS, held_order, &held);
    if (held > wd->stock + wd->restocked)
        sim_fail(&wd->log,
                 "%" PRId64 " orders held in the inventory for a stock of %" PRId64 " and %" PRId64
                 " restocked after the failover",
                 held, wd->stock, wd->restocked);
    for (int p = 0; p < NP; p++) {
        char person[16];
        snprintf(person, sizeof(person), "p%d", p);
        const char *units = sim_redis_hget(wd->rs, "{sale:" SALE "}:users", person);
        if (units && atoll(units) > 1)
            sim_fail(&wd->log, "%s holds %s units after the failover", person, units);
        const char *w = sim_redis_hget(wd->rs, WON, person);
        if (w && strcmp(w, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED) != 0 && !spooled(wd, w))
            sim_fail(&wd->log, "%s's order %s recorded won is in no gateway's spool", person, w);
    }
}

static void check_end(world_t *wd)
{
    if (wd->wiped || wd->failed_over) {
        check_lost(wd);
        return;
    }
    char why[256] = "";
    cm_redis_url_t addr;
    if (cm_redis_url_parse(URL, &addr, why, sizeof(why)) != 0) {
        sim_fail(&wd->log, "url: %s", why);
        return;
    }
    inv_fleet_conn_t *c = inv_fleet_connect(&addr, 2000, why, sizeof(why));
    if (!c) {
        sim_fail(&wd->log, "oracle's connection: %s", why);
        return;
    }
    drawn_t *d = cm_xcalloc(1, sizeof(*d));
    d->wd = wd;
    uint64_t seed = 0;
    bool seeded = false, done = false;
    if (gw_fair_redis_lottery_done(c, SALE, &done, why, sizeof(why)) != 0 ||
        gw_fair_redis_lottery_entrants(c, SALE, read_entrant, d, why, sizeof(why)) != 0 ||
        gw_fair_redis_lottery_seed_get(c, SALE, &seed, &seeded, why, sizeof(why)) != 0 ||
        gw_fair_redis_lottery_winners(c, SALE, read_winner, d, why, sizeof(why)) != 0) {
        sim_fail(&wd->log, "oracle's read: %s", why);
        goto out;
    }
    bool any_entry = false;
    for (int p = 0; p < NP; p++)
        any_entry |= wd->p[p].order[0][0] || wd->p[p].order[1][0];
    if (any_entry && (!done || !seeded)) {
        sim_fail(&wd->log, "the draw is not complete after the heal (done=%d seeded=%d)", done,
                 seeded);
        goto out;
    }
    /* one entry per person, each one answered "entered" to its account */
    bool in_draw[NP][2] = {{false}};
    for (size_t i = 0; i < d->n; i++) {
        const entrant_t *e = &d->e[i];
        int p = e->person[0] == 'p' ? atoi(e->person + 1) : -1;
        int pa = person_of_account(e->account);
        if (p < 0 || p >= NP || pa != p) {
            sim_fail(&wd->log, "entrant %s with account %s", e->person, e->account);
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->e[j].person, e->person) == 0)
                sim_fail(&wd->log, "person %s drawn twice", e->person);
        int a = e->account[0] == 'b';
        if (strcmp(wd->p[p].order[a], e->order) != 0)
            sim_fail(&wd->log,
                     "entrant %s's order %s was not answered \"entered\" to %s (it was \"%s\")",
                     e->person, e->order, e->account, wd->p[p].order[a]);
        else
            in_draw[p][a] = true;
    }
    /* every entry answered "entered" is in the draw */
    for (int p = 0; p < NP; p++)
        for (int a = 0; a < 2; a++)
            if (wd->p[p].order[a][0] && !in_draw[p][a] && !wd->gw[wd->p[p].order_gw[a]].left &&
                !wd->p[p].power_lost[a])
                sim_fail(&wd->log, "entry %s of p%d (gw%d) answered \"entered\" is not in the draw",
                         wd->p[p].order[a], p, wd->p[p].order_gw[a]);
    /* winners <= stock, each one order; no other order */
    int64_t nwon = 0;
    for (int p = 0; p < NP; p++) {
        const char *w = d->won[p];
        if (!w[0] || strcmp(w, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED) == 0)
            continue;
        nwon++;
        int a = strcmp(wd->p[p].order[1], w) == 0;
        if (strcmp(wd->p[p].order[a], w) != 0) {
            sim_fail(&wd->log, "p%d won with %s, no entry of its", p, w);
            continue;
        }
        bool held = sim_redis_hget(wd->rs, ORDERS, w) != NULL;
        if (!held && !wd->p[p].cancel)
            sim_fail(&wd->log, "winner p%d's order %s is not in the inventory", p, w);
        char person[16]; /* the inventory's user is the person (inv.h) */
        snprintf(person, sizeof(person), "p%d", p);
        const char *units = sim_redis_hget(wd->rs, "{sale:" SALE "}:users", person);
        if (held && (!units || atoll(units) != 1))
            sim_fail(&wd->log, "winner %s holds %s units", person, units ? units : "no");
        /* its one order: in a spool, relayed from there (settlement drops a second copy) */
        bool spooled = false;
        for (int g = 0; g < NGW && !spooled; g++)
            spooled = in_spool(wd, g, w);
        if (!spooled)
            sim_fail(&wd->log, "winner %s's order %s is in no gateway's spool", person, w);
    }
    if (nwon > wd->stock + wd->cancels + wd->restocked)
        sim_fail(&wd->log,
                 "%" PRId64 " winners for a stock of %" PRId64 ", %" PRId64
                 " units freed and %" PRId64 " restocked",
                 nwon, wd->stock, wd->cancels, wd->restocked);
    /* no unit promoted twice: a person holds one unit at most, and an entry the draw did not
     * record won has no order anywhere (a promotion cut by a kill and finished again) */
    for (int p = 0; p < NP; p++) {
        char person[16];
        snprintf(person, sizeof(person), "p%d", p);
        const char *units = sim_redis_hget(wd->rs, "{sale:" SALE "}:users", person);
        if (units && atoll(units) > 1)
            sim_fail(&wd->log, "%s holds %s units", person, units);
        for (int a = 0; a < 2; a++) {
            const char *o = wd->p[p].order[a];
            if (!o[0] || strcmp(o, d->won[p]) == 0)
                continue;
            for (int g = 0; g < NGW; g++) {
                if (in_spool(wd, g, o))
                    sim_fail(&wd->log, "%s's order %s is in gw%d's spool; the draw recorded \"%s\"",
                             person, o, g, d->won[p]);
            }
        }
    }
    books_t b = {.wd = wd, .d = d};
    sim_redis_hforeach(wd->rs, ORDERS, book_order, &b);
    if (b.orders > wd->stock + wd->restocked)
        sim_fail(&wd->log,
                 "%" PRId64 " orders in the inventory for a stock of %" PRId64 " and %" PRId64
                 " restocked",
                 b.orders, wd->stock, wd->restocked);
    /* the leftovers reach the losers: no unit left while one waits, before the end */
    const char *left_s = sim_redis_hget(wd->rs, "{sale:" SALE "}:meta", "left");
    if (!wd->end_seen && left_s && atoll(left_s) > 0 && !wd->log.res->why[0]) {
        const char *mode = sim_redis_hget(wd->rs, "{flashgate:fair:" SALE "}:wl", "mode");
        for (size_t i = 0; i < d->n && mode && mode[0] == 'w'; i++) {
            int p = atoi(d->e[i].person + 1);
            if (!d->won[p][0]) {
                sim_fail(&wd->log, "%s units left while loser %s waits", left_s, d->e[i].person);
                break;
            }
        }
    }
    /* every gateway: the same winners from the seed and the entrants, and its answers */
    for (int g = 0; g < NGW && seeded; g++) {
        check_same_winners(wd, g, d, seed);
        for (int p = 0; p < NP; p++)
            for (int a = 0; a < 2; a++) {
                if (!wd->p[p].order[a][0] || wd->p[p].order_gw[a] != g)
                    continue;
                if (wd->p[p].power_lost[a] && !in_draw[p][a])
                    continue; /* lost with the entry log's unsynced tail */
                gw_fair_ticket_t t;
                int rc = gw_fair_lookup(wd->gw[g].srv.fair, wd->p[p].order[a], &t);
                bool won = strcmp(d->won[p], wd->p[p].order[a]) == 0;
                if (rc != 1)
                    sim_fail(&wd->log, "gw%d does not know its entry %s (%d)", g, wd->p[p].order[a],
                             rc);
                else if ((t.state == GW_ENTRY_WON) != won)
                    sim_fail(&wd->log, "gw%d answers entry %s of p%d %s; the draw recorded \"%s\"",
                             g, wd->p[p].order[a], p, gw_entry_state_name(t.state), d->won[p]);
            }
    }
    /* registrations answered 201 are in Redis */
    for (int p = 0; p < NP; p++) {
        if (!wd->p[p].reg_acked)
            continue;
        char person[16];
        snprintf(person, sizeof(person), "p%d", p);
        bool has = false;
        if (gw_fair_redis_reg_has(c, SALE, person, &has, why, sizeof(why)) != 0)
            sim_fail(&wd->log, "oracle's read of the registrations: %s", why);
        else if (!has)
            sim_fail(&wd->log, "registration of %s answered 201 is not in Redis", person);
    }
    const char *wl_mode = sim_redis_hget(wd->rs, "{flashgate:fair:" SALE "}:wl", "mode");
    const char *wl_promoted = sim_redis_hget(wd->rs, "{flashgate:fair:" SALE "}:wl", "promoted");
    for (int g = 0; g < NGW; g++) {
        inv_sale_t *sale = inv_sale_find(wd->gw[g].srv.stores.inv, SALE);
        gw_fair_sale_t *fs = gw_fair_find(wd->gw[g].srv.fair, SALE);
        inv_sale_info_t info;
        if (!sale || !fs)
            continue;
        inv_sale_snapshot(sale, &info);
        sim_trace(&wd->log,
                  "gw%d: left %" PRId64 " version %" PRIu64 "; waitlist seen left %" PRId64
                  " version %" PRIu64 ", open %d, head %zu",
                  g, info.stock_left, (uint64_t)info.version, fs->sale.wl.seen.left,
                  fs->sale.wl.seen.version, gw_fair_waitlist_open(fs), (size_t)fs->sale.wl.head);
    }
    const char *wp = sim_redis_get(wd->rs, "{flashgate:fair:" SALE "}:wp");
    sim_trace(&wd->log, "waitlist: mode %s, %s promoted, %" PRId64 " units freed, pending %s",
              wl_mode ? wl_mode : "-", wl_promoted ? wl_promoted : "0", wd->cancels,
              wp ? wp : "none");
    sim_trace(&wd->log,
              "oracle: %zu entrants, %" PRId64 " winners of %" PRId64 "; room: %" PRIu64
              " claims, %" PRIu64 " orders",
              d->n, nwon, wd->stock, wd->claims, wd->orders);
out:
    free(d);
    inv_fleet_close(c);
}

/*---- the run ----*/

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Sale DS from starts to ends with its lottery, on gateway g (the admin's PUTs). */
static int ds_put(world_t *wd, int g, int64_t starts, int64_t ends, char *why, size_t cap)
{
    inv_sale_def_t def;
    memset(&def, 0, sizeof(def));
    snprintf(def.sale_id, sizeof(def.sale_id), DS);
    def.stock = 1;
    def.per_user_limit = 1;
    def.starts_at_ms = starts;
    def.ends_at_ms = ends;
    inv_sale_info_t info;
    gw_server_t *s = &wd->gw[g].srv;
    int rc = inv_sale_put(s->stores.inv, &def, &info, why, cap);
    return rc ? rc : gw_fair_configure(s, DS, WINDOW_MS, 0, 0, why, cap);
}

static bool setup(world_t *wd)
{
    for (int g = 0; g < NGW; g++)
        if (!gw_up(wd, g)) {
            sim_fail(&wd->log, "gw%d did not start", g);
            return false;
        }
    wd->t0 = cm_wall_ms();
    wd->starts_at = wd->t0 + REG_MS;
    inv_sale_def_t def;
    memset(&def, 0, sizeof(def));
    snprintf(def.sale_id, sizeof(def.sale_id), SALE);
    def.stock = wd->stock;
    def.per_user_limit = 1;
    def.starts_at_ms = wd->starts_at;
    /* in half the seeds the sale ends while losers wait (or before the draw) */
    wd->ends_at =
        wd->starts_at +
        (sim_chance(&wd->rng, 0.5) ? 3600000 : WINDOW_MS + 200 + sim_below(&wd->rng, 2500));
    def.ends_at_ms = wd->ends_at;
    wd->ds_ends = wd->starts_at + WINDOW_MS + 100;
    char why[256] = "";
    inv_sale_info_t info;
    gw_server_t *s0 = &wd->gw[0].srv;
    inv_sale_def_t room = def;
    snprintf(room.sale_id, sizeof(room.sale_id), ROOM);
    room.ends_at_ms = wd->starts_at + 3600000;
    room.stock = 1000;
    int64_t rate = 20 + sim_below(&wd->rng, 200); /* admissions a second */
    clock_at(wd, 0);
    if (inv_sale_put(s0->stores.inv, &def, &info, why, sizeof(why)) != 0 ||
        inv_sale_put(s0->stores.inv, &room, &info, why, sizeof(why)) != 0 ||
        gw_fair_configure(s0, ROOM, 0, 0, rate, why, sizeof(why)) != 0 ||
        gw_fair_configure(s0, SALE, WINDOW_MS, 0, 0, why, sizeof(why)) != 0 ||
        gw_reg_configure(s0, SALE, wd->t0, wd->starts_at, why, sizeof(why)) != 0 ||
        (wd->dels && ds_put(wd, 0, wd->starts_at, wd->ds_ends, why, sizeof(why)) != 0)) {
        clock_at(wd, -1);
        sim_fail(&wd->log, "the sale could not be set: %s", why);
        return false;
    }
    /* the other gateways: the sale from the inventory's sync, the lottery from
     * the fleet's configuration (their first tick polls it) */
    for (int g = 0; g < NGW; g++) {
        clock_at(wd, g);
        inv_redis_sync_step(wd->gw[g].srv.stores.inv);
        gw_fair_tick(&wd->gw[g].srv);
    }
    clock_at(wd, -1);
    return true;
}

void sim_fairfleet_run(const sim_opts_t *opts, sim_result_t *out)
{
    memset(out, 0, sizeof(*out));
    out->ok = true;
    world_t *wd = cm_xcalloc(1, sizeof(*wd));
    wd->log = (sim_log_t){
        .trace = opts->trace, .res = out, .name = "fairfleet step ", .clock = &wd->step};
    cm_rand_seed(&wd->rng, opts->seed ^ 0xfa1f1ee7ull);
    cm_rand_seed(&wd->xrng, opts->seed ^ 0x5e7f1ee7ull);
    if (sim_chance(&wd->xrng, 0.5))
        for (int g = 0; g < NGW; g++)
            wd->skew[g] = (int64_t)sim_below(&wd->xrng, 2 * SKEW_MS + 1) - SKEW_MS;
    wd->draw_cancels = sim_chance(&wd->xrng, 0.5);
    wd->kills = sim_chance(&wd->xrng, 0.35);
    wd->p_restock = sim_chance(&wd->xrng, 0.5) ? 0.01 : 0;
    wd->stock = 2 + sim_below(&wd->rng, 5);
    /* one seed in eight: Redis restarted without persistence, once */
    wd->wipe_step = sim_chance(&wd->rng, 0.125) ? 50 + sim_below(&wd->rng, FAULT_STEPS - 100) : 0;
    cm_rand_seed(&wd->frng, opts->seed ^ 0x70f1ee7ull);
    wd->spool_kills = sim_chance(&wd->frng, 0.25);
    wd->power = sim_chance(&wd->frng, 0.2);
    /* the deleted sale's seeds (their own generator) cut a gateway's power after a delete */
    cm_rand_seed(&wd->prng, opts->seed ^ 0x9f1ee7ull);
    wd->dels = sim_chance(&wd->prng, 0.3);
    wd->ds_phase = wd->dels ? 1 : 0;
    wd->ds_held = wd->ds_away = -1;
    cm_rand_seed(&wd->arng, opts->seed ^ 0xa3a71ee7ull);
    wd->ds_across = wd->dels && sim_chance(&wd->arng, 0.5);
    wd->fsync = wd->power || wd->dels; /* the durability whose answers survive a power loss */
    /* one seed in eight without the wipe: a failover that loses 1-20 acknowledged writes */
    if (!wd->wipe_step && sim_chance(&wd->frng, 0.125)) {
        wd->failover_step = 50 + sim_below(&wd->frng, FAULT_STEPS - 100);
        wd->failover_k = 1 + sim_below(&wd->frng, 20);
        wd->fo_on_books = sim_chance(&wd->frng, 0.5);
        wd->fo_books = -1;
    }
    for (int g = 0; g < NGW; g++)
        wd->disk[g] = sim_disk_new(&wd->frng);
    for (int g = 0; g < NGW; g++) {
        wd->fdisk[g] = sim_disk_new(&wd->prng);
        wd->ddisk[g] = sim_disk_new(&wd->prng);
    }
    /* tmpfs where there is one: fair.json's and the logs' fsyncs cost nothing there */
    snprintf(wd->dir, sizeof(wd->dir), "/dev/shm/fg-sim-fairfleet-XXXXXX");
    if (!mkdtemp(wd->dir))
        snprintf(wd->dir, sizeof(wd->dir), "/tmp/fg-sim-fairfleet-XXXXXX");
    if (wd->dir[1] == 't' && !mkdtemp(wd->dir)) {
        sim_fail(&wd->log, "mkdtemp failed");
        free(wd);
        return;
    }
    wd->rs = sim_transport_new(&wd->rng, false);
    sim_redis_dies_with(wd->rs, disk_dead, wd);
    cm_time_set_fake(true, 1000000000ull, 1700000000000LL);
    g_world = wd;
    cm_journal_set_fs(&fair_fs);
    gw_fleet__members_sim = members_sim;
    /* the tables' process-wide key (cm_hash_mem) is drawn at its first use: drawn here, it
     * takes no word of the seed's keys, so a seed draws the same keys alone or in a batch */
    (void)cm_hash_str("");
    cm_rand_seed(&wd->keys, opts->seed ^ 0x6b657973ull);
    cm_hash_seed_set_fake(seed_word, &wd->keys);
    sim_trace(&wd->log,
              "fair fleet: stock=%" PRId64 " skew %" PRId64 "/%" PRId64 "/%" PRId64
              " ms, cancels in the draw %d, kills %d, restocks %d",
              wd->stock, wd->skew[0], wd->skew[1], wd->skew[2], wd->draw_cancels, wd->kills,
              wd->p_restock > 0);
    if (wd->spool_kills || wd->power || wd->failover_step) /* a seed without them: as before */
        sim_trace(
            &wd->log,
            "fair fleet: spool kills %d, power cuts %d (spool fsync), failover at step %" PRIu64
            " losing %u writes",
            wd->spool_kills, wd->power, wd->failover_step, wd->failover_k);
    if (setup(wd)) {
        sim_redis_faults_t *f = sim_redis_faults(wd->rs);
        f->p_timeout = 0.01 * sim_below(&wd->rng, 6);
        f->p_lost = 0.01 * sim_below(&wd->rng, 6);
        for (uint64_t i = 0; i < FAULT_STEPS && out->ok; i++)
            step(wd, false);
        *f = (sim_redis_faults_t){0};
        for (uint64_t i = 0; i < HEAL_STEPS && out->ok; i++)
            step(wd, true);
        if (out->ok)
            check_end(wd);
        if (out->ok)
            ds_check(wd);
    }
    for (int g = 0; g < NGW; g++)
        gw_down(wd, g);
    gw_fleet__members_sim = NULL;
    cm_journal_set_fs(NULL);
    cm_hash_seed_set_fake(NULL, NULL);
    g_world = NULL;
    cm_time_set_fake(false, 0, 0);
    out->crashes += sim_redis_stats(wd->rs)->restarts;
    sim_transport_free(wd->rs);
    for (int g = 0; g < NGW; g++) {
        sim_disk_stats_t ds;
        sim_disk_stats(wd->disk[g], &ds);
        out->power_losses += ds.power_losses;
        out->torn_writes += ds.torn_writes;
        sim_disk_free(wd->disk[g]);
        for (int k = 0; k < 2; k++) {
            sim_disk_t *d = k ? wd->ddisk[g] : wd->fdisk[g];
            sim_disk_stats(d, &ds); /* a power cut is counted once, on the spool's disk */
            out->torn_writes += ds.torn_writes;
            sim_disk_free(d);
        }
    }
    (void)nftw(wd->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(wd);
}
