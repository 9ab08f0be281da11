/*
 * Fairness, private to gateway/buy/: the per-sale state the lottery, the room,
 * registration and their stores share, and the gw_fair__ functions they call
 * across files (each section names the file that defines them). The rest of
 * the gateway uses gw_fair.h.
 */
#ifndef GW_FAIR_INTERNAL_H
#define GW_FAIR_INTERNAL_H

#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_core.h"
#include "gateway/buy/gw_fair_redis.h"
#include "gateway/buy/gw_reg_core.h"
#include "gateway/buy/gw_room_core.h"
#include "gateway/buy/gw_sale_core.h"

#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_url.h"
#include "gateway/base/gw_types.h"
#include "inventory/inv.h"
#include "inventory/inv_fleet.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define FAIR_MAX_SALES 64

/*
 * The spent admission tokens of one gateway's room: a bounded table
 * (gw_room_core.h) of replay ids, each kept until its token expires.
 * gw_wr_spent_claim claims jti for a buy whose key fingerprint is fp: a GW_WR_*
 * (gw_fair.h) or CM_EBUSY (the bucket is full of live tokens);
 * gw_wr_spent_settle keeps a claim (accepted) or gives it back. Thread-safe
 * (one mutex); _init/_deinit single-threaded; _clear empties it.
 */
typedef struct gw_wr_spent {
    pthread_mutex_t mu;
    gw_wr_spent_slot_t *slots; /* allocated at the first claim */
} gw_wr_spent_t;
void gw_wr_spent_init(gw_wr_spent_t *s);
void gw_wr_spent_deinit(gw_wr_spent_t *s);
void gw_wr_spent_clear(gw_wr_spent_t *s);
int gw_wr_spent_claim(gw_wr_spent_t *s, uint64_t jti, int64_t exp_s, uint64_t fp, int64_t now_s);
void gw_wr_spent_settle(gw_wr_spent_t *s, uint64_t jti, bool accepted);

/* One gateway's waiting-room log (gw_room_store.c): a journal (cm_journal_t:
 * its appends, its group commit and its compaction) and mu, its own lock,
 * taken inside wr_mu and the spent table's, never around them. */
typedef struct gw_room_store {
    pthread_mutex_t mu; /* every field below but the atomics */
    pthread_cond_t cv;  /* users back to 0: a drop waits for it */
    cm_journal_t j;     /* <sale>.room, open from this process's first line */
    bool open;
    unsigned opens;     /* opens of j: a compaction's mark is of one of them */
    unsigned users;     /* syncs and a compaction using j without mu */
    int64_t synced_ms, err_ms;
    /* A compaction's mark (the logical end the state it copied stands for),
     * the open it was taken in, and the file's length then */
    off_t cmark, cmark_file;
    unsigned copens;
    off_t base_len; /* the file's length after its last compaction (0: none yet) */
    /* The log is rewritten (a compaction) before anything is answered durable
     * from it: a load read it, or a seal's line failed (j's own reason,
     * cm_journal_dropped, is the journal's). */
    bool rewrite;
    _Atomic uint64_t compactions;
    /* fsync durability's group commits that made this room's token claims durable
     * (local_sync), and those whose fdatasync failed */
    _Atomic uint64_t claim_syncs, claim_sync_failures;
} gw_room_store_t;

/* 336 bytes on x86-64 (sizeof), plus two 4-byte index slots at half load
 * and the vector's doubling: ~350 bytes an entry, what sales.max_lottery_entries
 * bounds (1000000: ~370 MB). */
typedef struct entry {
    char order_id[INV_ORDER_ID_MAX + 1];
    char user_id[INV_USER_ID_MAX + 1]; /* the account that entered */
    char person[INV_USER_ID_MAX + 1];  /* its person: one entry per person (never "") */
    char idem[INV_IDEM_KEY_MAX + 1];
    uint32_t key_fp; /* inv_idem_key_fp of the raw key (idem may be identity's form); 0 = none */
    uint32_t qty;
    int64_t at_ms;
    uint64_t key; /* siphash(secret, person): the table hash and the draw's sort key */
    uint8_t state;
    bool wlogged; /* the entry log has its "W" line (a winner's order is durable) */
    uint32_t pos; /* 1-based draw position, 0 before the draw */
    bool promo_cut; /* a "P" line and no "W": the spool says whether it won (open) */
    bool lost_logged; /* an "X" line: lost for cause, not waitlisted, at a reload */
    bool fleet_marked; /* fleet: its person's mark in Redis is known taken (gw_fair_fleet.c) */
} entry_t;

struct gw_fair_sale {
    char sale_id[INV_SALE_ID_MAX + 1];
    struct gw_fair *f; /* the owner (set at creation) */
    /* The sale's machine (gw_sale_core.h): its configuration (the windows,
     * the room's rate, registration's window) is the one copy every path
     * reads, lock-free; its cores are the lottery's (core, under mu) and
     * the room's (wr_core, under wr_mu). */
    gw_sale_core_t sale;
    pthread_mutex_t mu; /* everything below */
    /* The fleet's shared key: gw_fair__conf_apply_locked changes it (and re-keys the
     * entries) when the fleet's configuration comes back with another one, so
     * a key is only taken from it under mu, or an entry could be filed under
     * the old key and the same user enter twice. */
    cm_hash_key_t secret;
    /* The lottery's generation in a fleet (f->mu): a random number made with the lottery (from
     * its new secret), in the fleet's configuration beside the secret and in fair.json. A
     * put-back after Redis lost the configuration keeps it (gw_fair__fleet_conf_put offers
     * this copy's), a new lottery under the id has another: a copy whose generation is not
     * the fleet's is dropped, not re-keyed (conf_sync_one). 0: unknown (a reset slot, a store
     * without it). */
    uint64_t lot_gen;
    /* Fleet (f->mu): a poll since this start found this copy's generation in the fleet's
     * configuration (gen_seen), and the last poll found the sale there (in_conf). A copy seen,
     * then gone from the configuration (Redis lost it), offers its generation for the
     * put-back (gw_fair_fleet.c gen_offers). */
    bool gen_seen, in_conf;
    /* Loaded at the start with entries, closed, or with a fleet's generation (set once by
     * gw_fair_open). In a fleet it may be a lottery deleted while this gateway was down:
     * until f->conf_read (gw_fair__stale) it takes no entry and sends nothing of it to Redis
     * (no push, draw or leftovers walk), so that conf_sync_one may drop it first. */
    bool loaded;
    entry_t *v;
    size_t n, cap;
    uint32_t *by_user, *by_id; /* open addressing: entry index + 1, 0 = empty */
    size_t tcap;
    cm_journal_t log; /* the entry log (gw_fair__log_open), if log_open */
    bool log_open;
    /* The entry log's records but the entries' ("E": v holds them), a line each in
     * the log's order, as this process wrote them (gw_fair__log_line) or read them
     * (gw_fair__log_load: a "D" with the count of entries before it, a hole after
     * the "D" as a "?" line): what the log is written anew from when its rewrite
     * refuses (gw_fair__log_sync). NUL-terminated. */
    char *recs;
    size_t recs_len, recs_cap;
    /* The lottery's state, decided by its core (gw_fair_core.h): the core's
     * struct, and the same members by name for the files that read them
     * (the waitlist, the fleet's draw). draw_wl is decided once (the first
     * end record read, or the draw's first step) so that a retried end record
     * cannot flip it. */
    union {
        gw_fair_core_t core;
        struct {
            GW_FAIR_CORE_FIELDS
        };
    };
    int64_t draw_started_ms, draw_done_ms;
    int64_t draw_retry_ms; /* fleet: no new try of a failed draw before this (lottery thread) */
    int64_t push_read_ms;  /* fleet: since when Redis answered this gateway's draw tick without
                            * a failure (0: it failed last); the wait for the pushes counts
                            * from it (gw_fair__fleet_tick_sale, lottery thread) */
    uint64_t won_orders, won_units, lost;
    atomic_bool drawn;
    /* the waitlist (gw_waitlist.c): losers of the draw, for units freed after it */
    uint64_t waitlisted, promoted;
    uint32_t *wl_bit;         /* Fenwick tree over draw positions: 1 per waitlisted entry */
    bool wl_ended;            /* the "L" line: the sale ended, the waitlist is lost */
    bool wl_cut;              /* a promotion cut by a crash (open: the spool decides) */
    int64_t wl_retry_ms;      /* no new walk before this after a failure */
    /* the fleet's waitlist (gw_waitlist_fleet.c), lottery thread only */
    long long wl_gen;         /* the generation of the fleet's waitlist last fetched */
    int64_t wl_polled_ms;     /* when its state was last read */
    char wl_giveback[INV_ORDER_ID_MAX + 1]; /* a promotion given back whose "lost" is unrecorded */
    _Atomic uint64_t duplicates;
    bool pushed; /* fleet: this gateway's entries are in Redis (lottery thread only) */
    bool marked; /* fleet: Redis knows this gateway holds entries (lottery thread only) */
    size_t mark_next; /* fleet: entries before this index had their marks sent (lottery thread) */
    /* waiting room */
    _Atomic uint64_t wr_eff_milli;    /* the rate in force (thousandths per second) */
    int64_t wr_last_ms;               /* lottery thread */
    pthread_mutex_t wr_mu;            /* wr_core, wr_seed, wr_seal_syncing */
    /* The place table's key (wr_core.key) and the pre-queue's seed: this
     * gateway's own (kept across a restart in the room's log's K line), new
     * when the sale is deleted, so a re-keyed secret does not move anyone's
     * place. The core decides with wr_core.seed (set from this by
     * gw_fair__room_keys and the K line); the store writes this one. */
    cm_hash_key_t wr_seed;            /* secret until the seal */
    /* One gateway: the seal's "S" line is written and its fdatasync (run
     * without wr_mu, by the thread that sealed) has not returned yet: the
     * ranks exist but nothing is answered from them, the seed is not
     * published (wr_mu). */
    bool wr_seal_syncing;
    /* The room's state and decisions (gw_room_core.h): one gateway's own;
     * in a fleet, the copy of Redis' room that the view and the audit read. */
    gw_room_core_t wr_core;
    gw_wr_spent_t wr_spent;           /* the spent admission tokens */
    /* Fleet: the room is Redis' (gw_room_fleet.c); the fields above that the
     * view and the audit read are a copy the lottery thread refreshes, and
     * wr_seed is the fleet's seed once a tick or a join has read it. */
    int64_t wr_fleet_ms;              /* the last fleet tick (lottery thread) */
    /* Fleet: the seed Redis' room last held by a reply (carried or confirmed; wr_mu).
     * From the start on, any gateway may have sealed the room with it: published. */
    cm_hash_key_t wr_seed_fleet;
    /* One gateway: the room's log (gw_room_store.c); never used in a fleet,
     * whose room is Redis'. */
    gw_room_store_t wr_store;
    const struct gw_room_ops *wr_ops; /* the room's store, chosen by gw_fair__sale_new */
    /* registration (gw_reg.c; its window: sale.cfg) */
    pthread_mutex_t reg_mu; /* reg, reg_core */
    struct gw_reg_set *reg; /* one gateway's persons (gw_reg_local.c), from the first one */
    gw_reg_core_t reg_core; /* the sale's registration core (either store's), in sale */
    const struct gw_reg_ops *reg_ops; /* its store (gw_reg_backend.h), set with the slot */
    bool reg_unwritten; /* tick_mu: the window not yet saved and published (gw_reg_configure) */
};

/*
 * A pool of the fleet's blocking Redis connections with one timeout for the
 * connect and for each command (gw_fair_pool.c). With fail_fast,
 * GW_FAIR_FAIL_FAST_AFTER timeouts or transport failures in a row open a
 * window of GW_FAIR_FAIL_FAST_MS in which every
 * get fails at once; the first get after it asks Redis again, and any call
 * Redis answers closes it. The counters are relaxed (stats only).
 */
typedef struct gw_fair_pool {
    pthread_mutex_t mu;
    const cm_redis_url_t *addr; /* borrowed: the gw_fair_t's */
    inv_fleet_conn_t **idle;
    size_t nidle, cap;
    uint32_t timeout_ms;
    bool fail_fast;
    _Atomic uint64_t down_until_ms;                /* cm_mono_ms; 0: no window */
    _Atomic uint32_t consecutive;                  /* failures since the last answer */
    _Atomic uint64_t opened_log_ms, closed_log_ms; /* the window's log lines, rate-limited */
    _Atomic uint64_t failed;                       /* timeouts and transport failures */
    _Atomic uint64_t refused;                      /* gets failed at once inside a window */
    _Atomic uint64_t windows;                      /* windows opened */
} gw_fair_pool_t;

/* The fail-fast window: about as long as the Retry-After of the 503 the routes answer. */
#define GW_FAIR_FAIL_FAST_MS 1000u
/* Consecutive transport failures that open it. One: a call that waited a
 * whole timeout held its worker loop (every connection on it) that long, and
 * a second or third such wait on the same loop would hold it again, so a stall
 * costs a worker loop one timeout, then one a second (the probe); the price is
 * that one slow reply on a loaded Redis makes a second of 503s for these calls
 * (tests/integration/118-fleet-sleep-loop.py holds the bound). */
#define GW_FAIR_FAIL_FAST_AFTER 1u

/* A fleet claim of an admission token to give back (gw_fair_redis_room_claim): its
 * reply was lost, or the give-back of a buy that was not accepted failed. */
#define FAIR_UNCLAIM_MAX 256
typedef struct gw_fair_unclaim {
    char sale[INV_SALE_ID_MAX + 1];
    uint64_t jti, fp, nonce;
    int64_t exp_s; /* the token's expiry: past it, the claim is of no use to anyone */
} gw_fair_unclaim_t;

struct gw_fair {
    gw_server_t *srv;
    /* Held by gw_fair_tick for a whole tick, and by the admin thread while it
     * drops a deleted sale's lottery (gw_fair__sale_reset): the draw never runs on a
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
    /* how a winner or a promotion becomes an order: the sale path's (gw_accept.h) */
    gw_acceptor_t accept;
    /* the lottery's store, chosen once by gw_fair_open (gw_fair_store.c) */
    const struct gw_fair_lot_ops *lot;
    /* fleet mode (Redis inventory): the lottery thread's own connection */
    cm_redis_url_t addr;
    inv_fleet_conn_t *rc;
    int64_t last_conf_ms, last_err_ms;
    /* fair.json is behind memory: its last save failed, so the next configuration
     * write saves even when it changes nothing (an operator's retried PUT) */
    atomic_bool conf_unsaved;
    /* fleet: the fleet's configuration was read since this start (the lottery thread's first
     * poll that Redis answered): a copy loaded with entries (gw_fair_sale.loaded) waits for it */
    atomic_bool conf_read;
    /* fleet: this data directory's id, the owner of its waitlist promotions (gw_waitlist_fleet.c) */
    char owner[40];
    /* fleet: the worker loops' connections (inventory.redis_timeout, fail-fast) and
     * the other threads' (2 s): gw_fair_pool.c */
    gw_fair_pool_t loop_pool, pool;
    _Atomic uint64_t reg_taken, reg_refused; /* new registrations here; entries refused here */
    /* fleet: token claims to give back, retried by the lottery thread (gw_room_fleet.c) */
    pthread_mutex_t unclaim_mu;
    gw_fair_unclaim_t unclaim[FAIR_UNCLAIM_MAX];
    size_t nunclaim;
    int64_t unclaim_next_ms;     /* lottery thread only: no try before this after a failure */
    _Atomic uint64_t claim_nonce; /* the next claim's nonce (random start, then +1) */
};

#define FLEET_CONF_POLL_MS 500

/*---- gw_fair_table.c: the per-sale tables, the entry log, fair.json, a slot by id ----*/

/* SipHash of s under the sale's secret. fs->mu held or single-threaded (it may be re-keyed). */
uint64_t gw_fair__hash_str(const gw_fair_sale_t *fs, const char *s);
/* The Idempotency-Key as the entry log and the fleet push write it, and its marker field. */
const char *gw_fair__idem_out(const char *idem);
const char *gw_fair__idem_mark(const char *idem);
/* Turns the field read back into the key: "-" without the marker is none. */
void gw_fair__idem_in(char *idem, int nfields, int want, const char *mark);
/* The sale's entry of a person (key: gw_fair__hash_str of it), of an order id; NULL if none.
 * fs->mu held or single-threaded. */
entry_t *gw_fair__find_user(gw_fair_sale_t *fs, const char *person, uint64_t key);
/* The entry log's " @person" suffix of an entry: "" when the person is the account
 * (the fleet push writes " @account" instead: its field is the person). */
const char *gw_fair__person_out(const entry_t *e, char *buf, size_t cap);
/* Sets e->person from the line's field "@person" at 0-based index first or later
 * (past the key's), else to e->user_id. */
void gw_fair__person_in(entry_t *e, const char *line, int first);
entry_t *gw_fair__find_id(gw_fair_sale_t *fs, const char *order_id);
/* Recomputes every entry's key and the tables after the secret changed (fs->mu held). */
void gw_fair__tables_rekey(gw_fair_sale_t *fs);
/* Adds a copy of e to the vector and the tables; returns it (fs->mu held or single-threaded). */
entry_t *gw_fair__entry_add(gw_fair_sale_t *fs, const entry_t *e);
/* The path of a sale's entry log. */
void gw_fair__log_path(gw_fair_t *f, const char *sale_id, char *out, size_t cap);
/* Opens the sale's entry log for appends if it is not open. 0 or CM_EIO. */
int gw_fair__log_open(gw_fair_t *f, gw_fair_sale_t *fs);
/* An entry's "E" line (newline included) into buf: its length, or 0 if it does not fit. */
size_t gw_fair__entry_line(const entry_t *e, char *buf, size_t cap);
/* Appends whole lines (len bytes, each ending in a newline), each as one frame of the
 * journal (common/cm_journal.h), with one write(2), and if sync the log durable through
 * them (gw_fair__log_sync). fs->mu held, or single-threaded (the load). 0 or CM_EIO. */
int gw_fair__log_line(gw_fair_sale_t *fs, const char *line, size_t len, bool sync);
/* The log durable through its end. While the journal is dropped it is written again
 * first (cm_journal_rewrite: from its own frames as they read back); if that refuses
 * (pages a failed fdatasync dropped, evicted since, read back stale: the copy's check),
 * it is written anew from the sale's state (its entries and fs->recs) with the same
 * atomic replace, so that a process that lives on completes its draw. fs->mu held on
 * entry and on return (unlock: released for the rewrite and the fdatasync; the lottery
 * thread, which alone opens the log again, under f->tick_mu), or single-threaded.
 * 0 or CM_EIO. */
int gw_fair__log_sync(gw_fair_sale_t *fs, bool unlock);
/* Keeps a line the load read (a record but an entry's) in fs->recs. Single-threaded. */
void gw_fair__log_rec(gw_fair_sale_t *fs, const char *line, size_t len);
/* Rewrites fair.json (a temporary file, fdatasync, rename). f->mu held. 0 or CM_EIO. */
int gw_fair__conf_save(gw_fair_t *f);
/* The slot of a sale, whatever its window and rate; NULL if none. Lock-free. */
gw_fair_sale_t *gw_fair__slot_find(gw_fair_t *f, const char *sale_id);

/*---- gw_fair_slot.c: a sale's slot, created, updated, reset ----*/

/* A new slot for the sale, with its locks, room keys and no log open yet (not in f->sales). */
gw_fair_sale_t *gw_fair__sale_new(gw_fair_t *f, const char *sale_id);
/* Frees a slot and all it holds, closing its logs. Single-threaded (close), or a slot
 * not in f->sales. */
void gw_fair__sale_free(gw_fair_sale_t *fs);
/* CM_EINVAL with the reason in errbuf: the lottery has entries and no draw, its window may
 * not change. */
int gw_fair__busy_refusal(const char *sale_id, char *errbuf, size_t errlen);
/* Empties a deleted sale's lottery and waiting room (see its definition for the locks). */
int gw_fair__sale_reset(gw_fair_t *f, gw_fair_sale_t *fs);
/* The sale's terms into its machine (fs->sale.cfg): starts_at, ends_at from
 * inventory, the caps from the server's configuration. The slot's creation,
 * the admin's PUT and the lottery thread's tick (another gateway's edits)
 * call it; every fairness path reads the machine. false: the sale is not in
 * inventory (its terms are left as they were). Any thread. */
bool gw_fair__sale_terms(gw_fair_sale_t *fs);
/* Whether the lottery is past its close here (its entries pushed or drawn): a new secret from
 * the fleet then means a new lottery, not a re-key. fs->mu held. */
bool gw_fair__past_close(gw_fair_sale_t *fs);
/* A copy loaded at the start that may be a deleted lottery's, the fleet's configuration
 * not read yet (gw_fair_sale.loaded): no entry, nothing sent to the store. */
static inline bool gw_fair__stale(const gw_fair_sale_t *fs)
{
    return fs->loaded && !atomic_load(&fs->f->conf_read);
}
/* Creates or updates a sale's lottery in the local table; secret NULL: keep it (a new sale: a
 * random one); gen 0: keep the generation (fs->lot_gen); refuse_busy: a window change of a
 * lottery with entries and no draw is refused. f->mu held. 0 or a cm_err_t. */
int gw_fair__conf_apply_locked(gw_fair_t *f, const char *sale_id, int64_t window_ms,
                               int64_t early_ms, int64_t wr_rate, const cm_hash_key_t *secret,
                               uint64_t gen, bool refuse_busy, char *errbuf, size_t errlen);

/*---- gw_lottery.c: the draw on one gateway ----*/

/* Reads one sale's entry log; raises *max_id to the largest entry id. Single-threaded (open). */
void gw_fair__log_load(gw_fair_t *f, gw_fair_sale_t *fs, uint64_t *max_id);
/* The winners of draws cut by a crash, from the spool. Single-threaded (open). */
void gw_fair__cut_winners(gw_fair_t *f);
/* Draws a closed window through f->lot->draw (gw_fair_draw_ops_t), or resumes
 * the draw. Lottery thread. */
void gw_fair__run_draw(gw_fair_t *f, gw_fair_sale_t *fs, int64_t closes_at_ms);

/*---- gw_waitlist.c: leftovers by lot ----*/

/* Allocates the waitlist's tree for fs->ndraw entrants (fs->mu held or single-threaded). */
void gw_fair__wl_init(gw_fair_sale_t *fs);
/* An entry of the draw becomes waitlisted (fs->mu held or single-threaded). */
void gw_fair__wl_add(gw_fair_sale_t *fs, entry_t *e);
/* A waitlisted entry leaves the waitlist, to won or lost (fs->mu held or single-threaded). */
void gw_fair__wl_remove(gw_fair_sale_t *fs, entry_t *e);
/* Tells fs's machine whether anyone waits (a TICK's fact): nobody closes the
 * leftovers, first-come opens (fs->mu held or single-threaded). */
void gw_fair__wl_told(gw_fair_sale_t *fs);
/* The waitlist ended here: every waitlisted entry lost (fs->mu held). */
void gw_fair__wl_end_here(gw_fair_sale_t *fs);
/* The place of a waitlisted entry: 1 + the waitlisted entries ahead (fs->mu held). */
uint32_t gw_fair__wl_place(const gw_fair_sale_t *fs, const entry_t *e);
/* The leftovers' one walk, both stores': admits waitlisted entries while stock is free
 * through f->lot->wl; ends the waitlist with the sale. Lottery thread (f->tick_mu held). */
void gw_fair__wl_tick(gw_fair_t *f, gw_fair_sale_t *fs);
/* Appends "X order" for an entry lost for cause (fs->mu held). */
void gw_fair__wl_log_lost(gw_fair_sale_t *fs, const entry_t *e);
/* The promotion of waitlisted entry e, begun in its store: buy's accept sequence (the
 * spool asked first with scan_spool), then the outcome recorded by the store and set
 * here. *left: the stock left after it, when known. Lottery thread. */
gw_wl_result_t gw_fair__wl_promote(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale,
                                   entry_t *e, bool scan_spool, int64_t *left);

/* What a promotion's outcome records in the store. */
typedef enum { GW_WL_REC_WON, GW_WL_REC_LOST, GW_WL_REC_NONE } gw_wl_rec_t;

/*
 * What the leftovers' walk (gw_fair__wl_tick) needs from its store, one op per
 * decision; the walk and the promotion are the same for both. One gateway's
 * (gw_fair__wl_local, gw_waitlist.c: the entry log's P, W, X and L records) or a
 * fleet's (gw_fair__wl_redis, gw_waitlist_fleet.c: the lock, :wp and :won through
 * the fairness pool), carried by gw_fair_lot_ops_t.wl. A NULL op lets the walk go on.
 * Lottery thread, fs->mu not held.
 */
typedef struct gw_wl_ops {
    /* Whether the waitlist's state is known now (a fleet: read at its poll, the draw
     * read again when it moved); *pending: a promotion begun and not finished. */
    bool (*poll)(gw_fair_t *f, gw_fair_sale_t *fs, int64_t now_ms, bool *pending);
    /* Before a walk: the store's lock taken, the promotion pending under it finished
     * (*left: the stock after it). False: no walk now. */
    bool (*lock)(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, int64_t now_ms,
                 int64_t *left);
    /* Promotion nth (from 1) of a walk begins: recorded before its reserve, so that a
     * crash after the reserve finds it. False: not begun (the walk ends, FAILED). */
    bool (*begin)(gw_fair_t *f, gw_fair_sale_t *fs, const entry_t *e, size_t nth);
    /* The outcome (order_id: the order won). False: not recorded, the entry waits and
     * its promotion stays begun. */
    bool (*record)(gw_fair_t *f, gw_fair_sale_t *fs, entry_t *e, gw_wl_rec_t rec,
                   const char *order_id);
    /* The sale ended: every waiter loses, once the store says so. */
    void (*end)(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, int64_t now_ms);
    /* Promotions reserve under "fair-<order id>" and a restart resumes them by it: a
     * refused spool loses the place (a retry would find the key), a reserve the key
     * had before is the promotion's own (won), and an order cut by a failed commit
     * stays pending for the spool to tell. Unkeyed (the log's "P" asks the spool at a
     * restart): a refused spool is tried again, an order cut by a failed commit lost. */
    bool keyed;
    int retry_ms;     /* no new walk after a failed one before this */
    const char *name; /* for the log: "one", "fleet" */
} gw_wl_ops_t;

extern const gw_wl_ops_t gw_fair__wl_local, gw_fair__wl_redis;

/*---- gw_room.c: the waiting room ----*/

/* The room's store: what gw_room.c asks of it, never which one it is. One
 * gateway's (gw_fair__room_local_ops, gw_room_store.c: the core and its log) or
 * the fleet's (gw_fair__room_redis_ops, gw_room_fleet.c: Redis' room). A NULL
 * op has nothing to do in that store (the caller checks). */
typedef struct gw_room_ops {
    /* gw_fair_room_join's answer. Thread-safe. */
    int (*join)(gw_fair_sale_t *fs, const gw_room_join_ev_t *ev, gw_wr_join_t *out);
    /* The lottery thread's step: eff_per_s is this gateway's share of the rate
     * (members share it), dt_ms the time since its last tick. */
    void (*tick)(gw_fair_sale_t *fs, int64_t now_ms, int64_t dt_ms, bool started,
                 int64_t starts_at_ms, double eff_per_s, uint32_t members);
    /* The sealed pre-queue's ranks cursor+1.. of at most limit persons into arr
     * (json_t *), *total, *sealed and the seed. 0 or CM_EBACKEND (errbuf). */
    int (*persons)(gw_fair_sale_t *fs, uint64_t cursor, uint64_t limit, void *arr,
                   uint64_t *total, bool *sealed, char hex[33], char *errbuf, size_t errlen);
    /* gw_fair_admission_claim, _sync and _settle of fs's room. */
    int (*claim)(gw_fair_sale_t *fs, uint64_t jti, int64_t exp_s, uint64_t fp, int64_t now_s,
                 uint64_t *nonce);
    int (*sync)(gw_fair_sale_t *fs);
    void (*settle)(gw_fair_sale_t *fs, uint64_t jti, uint64_t fp, uint64_t nonce, bool accepted);
    /* The store's own fields of the room's audit record (o: json_t *). */
    void (*audit)(gw_fair_sale_t *fs, void *o);
    /* A deleted sale's room forgotten by its store (one gateway's log removed;
     * a fleet's keys go with the sale's delete). 0 or CM_EIO (errno). */
    int (*drop)(gw_fair_sale_t *fs);
} gw_room_ops_t;
extern const gw_room_ops_t gw_fair__room_local_ops, gw_fair__room_redis_ops;

/* Advances the admission front of every waiting room, sealing each pre-queue once its
 * sale's machine says it started (due[i]: the tick's actions of sale i < n). Lottery thread. */
void gw_fair__rooms_tick(gw_fair_t *f, int64_t now, size_t n, const unsigned *due);
/* The room's audit record for the admin draw view (a json_t *, new reference): the
 * pre-queue's size, the seal, and the seed once the sale started. Thread-safe. */
void *gw_fair__room_json(gw_fair_sale_t *fs);
/* Empties a room's places, pre-queue and spent tokens, with a new seed and key. Takes wr_mu. */
void gw_fair__room_reset(gw_fair_sale_t *fs);
/* Draws the room's place key and pre-queue seed. wr_mu held or single-threaded. */
void gw_fair__room_keys(gw_fair_sale_t *fs);

/*---- gw_room_store.c: one gateway's waiting-room log ----*/

void gw_fair__room_store_init(gw_room_store_t *st);
/* fdatasync if dirty, close. Single-threaded (close). */
void gw_fair__room_store_deinit(gw_room_store_t *st);
/* A log longer than this and than twice what its last compaction wrote is
 * compacted by the lottery thread: the file stays within about twice the state
 * it records plus this, and the rewrite costs at most one byte per byte appended. */
#define GW_WR_COMPACT_MIN_BYTES (1 << 20)
/* The log's length and how much of it an fdatasync covered (both 0 before this process's
 * first line). Thread-safe. */
void gw_fair__room_store_len(gw_fair_sale_t *fs, off_t *len, off_t *synced_len);
/* One gateway's room after a restart: replays <data_dir>/fair/<sale>.room into fs
 * (keys, pre-queue, seal, places, admissions, front, spent tokens). Single-threaded (open). */
void gw_fair__room_load(gw_fair_sale_t *fs);

/*---- gw_room_fleet.c: the waiting room of a fleet, in Redis ----*/

/* Logs a Redis failure of the fleet's room, at most once in 5 s. Thread-safe. */
void gw_fair__room_fleet_trouble(const char *what, const char *sale, const char *why);
/* A room seed as 32 hex digits (k0 then k1, each little-endian: the bytes the audit
 * publishes), and back (false if hex is not 32 hex digits). Pure. */
void gw_fair__seed_hex(const cm_hash_key_t *seed, char out[33]);
bool gw_fair__seed_parse(const char *hex, cm_hash_key_t *seed);

/*---- gw_fair_pool.c: the fleet's pooled connections ----*/

/* Sets up p for addr (borrowed, outlives p): at most cap idle connections, timeout_ms for
 * the connect and each command, a fail-fast window if fail_fast. Single-threaded (open). */
void gw_fair__pool_init(gw_fair_pool_t *p, const cm_redis_url_t *addr, size_t cap,
                        uint32_t timeout_ms, bool fail_fast);
/* Closes the idle connections. Single-threaded (close); a zeroed p is fine. */
void gw_fair__pool_deinit(gw_fair_pool_t *p);
/* A connection for one caller (a pooled one, else a new one), or NULL with the reason in
 * errbuf: Redis unreachable, or inside p's fail-fast window (then at once, nothing sent).
 * Blocks up to p's timeout per connect step. Return it with gw_fair__pool_put. Thread-safe. */
inv_fleet_conn_t *gw_fair__pool_get(gw_fair_pool_t *p, char *errbuf, size_t errlen);
/* Takes c back (NULL is fine): a broken one (a timeout, a lost connection) is closed and
 * opens p's window; a sound one closes it and is pooled if there is room. Thread-safe. */
void gw_fair__pool_put(gw_fair_pool_t *p, inv_fleet_conn_t *c);
/* Adds {"worker_redis": {timeout_ms, failed, refused_fast, windows, failing_fast}} to
 * obj (json_t *). Thread-safe. */
void gw_fair__pool_stats(const gw_fair_pool_t *p, void *obj);
/* Sends the give-backs of f->unclaim (lottery thread, each tick; after a
 * failure the next try waits FAIR_UNCLAIM_RETRY_MS, gw_room_fleet.c). */
void gw_fair__room_unclaims_tick(gw_fair_t *f, int64_t now_ms);

/*---- gw_reg.c: registration ----*/

/* Adds {"registration": {...}} to the fair stats object o (json_t *). Thread-safe. */
void gw_fair__reg_stats(gw_fair_t *f, void *o);
/* Sets fs's registration window from a fleet configuration value (none without its
 * registration token, " r=<opens>:<closes>"). */
void gw_fair__reg_token_apply(gw_fair_sale_t *fs, const char *conf);

/*---- gw_lottery.c: the draw, one loop over either store ----*/

/*
 * One run of a sale's draw (gw_fair__run_draw): the loop steps the core and asks
 * the store, through its gw_fair_draw_ops_t, for what differs: one gateway's
 * (gw_fair__draw_local: the sale's core, the entry log) or a fleet's
 * (gw_fair__draw_redis: a drawer's core of its own over the entrants Redis holds,
 * each outcome put there at its accept).
 */
typedef struct gw_fair_draw {
    gw_fair_t *f;
    gw_fair_sale_t *fs;
    inv_sale_t *sale;     /* NULL: the sale went, nobody wins */
    int64_t now;          /* the run's clock: its accepts', its end's */
    gw_fair_core_t *core; /* the core that decides this draw (set by begin) */
    pthread_mutex_t *mu;  /* held for each of its steps (set by begin) */
    void *run;            /* the store's own state of the run */
} gw_fair_draw_t;

/* Called with *d->mu held unless said otherwise; a NULL op is one the store
 * has nothing to do for. */
typedef struct gw_fair_draw_ops {
    /* Sets d->core, d->mu and d->run. Without d->mu. */
    void (*begin)(gw_fair_draw_t *d);
    /* One step of d->core (one gateway's through the sale's machine). */
    void (*step)(gw_fair_draw_t *d, const gw_fair_ev_t *ev, gw_fair_out_t *out);
    /* The core's TICK with rnd (the seed, if one is drawn), then its DO_SEED or
     * DO_MAKE_DURABLE, the reply's step and DO_ORDER: true once the entrants
     * can be drawn. */
    bool (*seed)(gw_fair_draw_t *d, uint64_t rnd);
    /* DO_DRAW: entrant i and *state, its outcome as the store holds it. */
    const entry_t *(*entrant)(gw_fair_draw_t *d, size_t i, uint8_t *state);
    /* DO_ACCEPT: buy's accept sequence for e (d->sale not NULL), as the core's
     * ACCEPTED. Without d->mu. */
    gw_fair_ev_t (*accept)(gw_fair_draw_t *d, const entry_t *e);
    /* The winners accepted so far made durable, then published. Without d->mu. */
    void (*commit)(gw_fair_draw_t *d);
    /* DO_SET_STATE (out->entry, out->state); cause: lost for cause. */
    void (*set_state)(gw_fair_draw_t *d, const gw_fair_out_t *out, bool cause);
    /* DO_LOG_SOLD_OUT, after commit: its record. 0 or CM_EIO. */
    int (*sold_out)(gw_fair_draw_t *d);
    /* DO_LOG_OUTCOMES: the outcomes' and the end's records. 0 or an error. */
    int (*outcomes)(gw_fair_draw_t *d, bool waitlist);
    /* The draw's end: published (DO_PUBLISH) or to be tried again. */
    void (*publish)(gw_fair_draw_t *d, bool done);
    /* Frees d->run, the draw done or not (to be tried again). Without d->mu. */
    void (*end)(gw_fair_draw_t *d, bool done);
} gw_fair_draw_ops_t;
extern const gw_fair_draw_ops_t gw_fair__draw_local, gw_fair__draw_redis;

/*---- gw_fair_store.c: the lottery's store ----*/

/*
 * What the shell (gw_fair.c, gw_lottery.c) needs from the lottery's store, one
 * op per decision: one gateway's (gw_fair__lot_local: the entry log on disk) or
 * a fleet's (gw_fair__lot_redis: Redis through the fairness pool), chosen once
 * by gw_fair_open. Both keep this gateway's entries in its entry log until the
 * window closes; a fleet's then meet in Redis. A NULL op is one the store has
 * nothing to do for (the caller checks): 0, outputs left as they are.
 */
typedef struct gw_fair_lot_ops {
    /* Opens the store (a fleet: its Redis address, the pools). 0 or CM_EINVAL
     * with the reason. Single-threaded (open). */
    int (*open)(gw_fair_t *f, char *errbuf, size_t errlen);
    /* Frees what open made, after open failed too. Single-threaded (close). */
    void (*close)(gw_fair_t *f);
    /* What the store keeps of a sale read back at open, besides the entry log (one
     * gateway: its waiting room's log). Single-threaded (open). */
    void (*sale_load)(gw_fair_sale_t *fs);
    /* The lottery thread's step before the sales' (a fleet: its configuration poll,
     * the admission-token give-backs). Lottery thread. */
    void (*tick)(gw_fair_t *f, int64_t now_ms);
    /* A sale whose window is open: what the store needs of its entries meanwhile (a
     * fleet: the marks that let every gateway read them before the draw). */
    void (*entries_tick)(gw_fair_t *f, gw_fair_sale_t *fs);
    /* A sale whose window closed at closes_at_ms: draw, resume the draw, or learn it (a
     * fleet: push this gateway's entries first; one gateway draws). */
    void (*draw_tick)(gw_fair_t *f, gw_fair_sale_t *fs, int64_t closes_at_ms);
    /* The draw's steps in this store (gw_fair__run_draw). */
    const struct gw_fair_draw_ops *draw;
    /* Before the local entry: one entry per person across the store
     * (gw_fair__fleet_enter_mark's contract). One gateway: none. Worker loops. */
    int (*enter_mark)(gw_fair_sale_t *fs, gw_fair_ticket_t *t, bool *held, bool *marked);
    void (*enter_unmark)(gw_fair_sale_t *fs, const gw_fair_ticket_t *t, const char *order_id);
    /* An entry this gateway does not hold: 1 found (*out), 0 none, CM_EBACKEND. */
    int (*lookup)(gw_fair_t *f, const char *order_id, gw_fair_ticket_t *out);
    /* What the store knows beyond this gateway: whether the lottery drew (drawn) and
     * whether any gateway holds entries (entered); NULL: not asked, left as is. 0 or
     * CM_EBACKEND with the reason. Admin thread. */
    int (*record)(gw_fair_t *f, const char *sale_id, bool *drawn, bool *entered, char *errbuf,
                  size_t errlen);
    /* Reads the sale's configuration from the store now, as the next poll would. 0 or
     * CM_EBACKEND. Admin thread. */
    int (*conf_read)(gw_fair_t *f, const char *sale_id, char *errbuf, size_t errlen);
    /* Stores the sale's configuration: 1 with *secret and *gen the store's (made if new), 0
     * none kept (the local table makes its own; a fleet: a sale with no lottery and no slot
     * here), or CM_EBACKEND. Admin thread. */
    int (*conf_put)(gw_fair_t *f, const char *sale_id, int64_t window_ms, int64_t early_ms,
                    int64_t wr_rate, cm_hash_key_t *secret, uint64_t *gen, char *errbuf,
                    size_t errlen);
    /* A deleted sale: drops what the store holds of its lottery. *here (in: this
     * gateway holds some) may be cleared, *store_has: the store held some. 0 or
     * CM_EBACKEND. Admin thread. */
    int (*drop)(gw_fair_t *f, const char *sale_id, bool sale_gone, bool *here, bool *store_has,
                char *errbuf, size_t errlen);
    /* Adds the store's own figures to the fair stats object (json_t *). */
    void (*stats)(gw_fair_t *f, void *o);
    /* The same choice's room and registration stores, each sale's slot takes
     * (gw_fair__sale_new), and eligibility's, gw_elig_open takes. */
    const struct gw_room_ops *room;
    const struct gw_reg_ops *reg;
    const struct gw_elig_ops *elig;
    const struct gw_wl_ops *wl; /* the leftovers' store (gw_fair__wl_tick) */
} gw_fair_lot_ops_t;

extern const gw_fair_lot_ops_t gw_fair__lot_local, gw_fair__lot_redis;

/*---- gw_fair_fleet.c: the Redis store's ops (gw_fair__lot_redis), each as its
 * gw_fair_lot_ops_t member says ----*/
int gw_fair__fleet_open(gw_fair_t *f, char *errbuf, size_t errlen);
void gw_fair__fleet_close(gw_fair_t *f);
void gw_fair__fleet_tick(gw_fair_t *f, int64_t now_ms);
void gw_fair__fleet_entries_tick(gw_fair_t *f, gw_fair_sale_t *fs);
int gw_fair__fleet_record(gw_fair_t *f, const char *sale_id, bool *drawn, bool *entered,
                          char *errbuf, size_t errlen);
int gw_fair__fleet_drop(gw_fair_t *f, const char *sale_id, bool sale_gone, bool *here,
                        bool *store_has, char *errbuf, size_t errlen);
void gw_fair__fleet_stats(gw_fair_t *f, void *o);
void gw_fair__fleet_tick_sale(gw_fair_t *f, gw_fair_sale_t *fs, int64_t closes_ms);
int gw_fair__fleet_conf_put(gw_fair_t *f, const char *sale_id, int64_t window_ms, int64_t early_ms,
                            int64_t wr_rate, cm_hash_key_t *secret, uint64_t *gen, char *errbuf,
                            size_t errlen);
int gw_fair__fleet_conf_refresh(gw_fair_t *f, const char *sale_id, char *errbuf, size_t errlen);
/* The draw order over the frozen entrants all[0..n) (one gateway's first n entries, or
 * a fleet's as read from Redis, in any order): gw_fair_order of their keys and the seed.
 * Returns a new array of n indexes into all (the caller frees). Pure: every gateway
 * computes the same one (gw_fair_fleet.c). */
uint32_t *gw_fair__draw_perm(const entry_t *all, size_t n, uint64_t seed);

/* The lottery thread's fleet connection (connected again if it broke), NULL while Redis is
 * unreachable; after a call on it (or a failure without one): true if rc succeeded, else
 * logs (rate limited) and drops the connection on a transport failure. Lottery thread. */
inv_fleet_conn_t *gw_fair__fleet_conn(gw_fair_t *f);
bool gw_fair__fleet_ok(gw_fair_t *f, int rc, const char *why);
/* Learns the fleet's draw: every entry's position and outcome, the waitlist's state.
 * Lottery thread. */
void gw_fair__fleet_fetch(gw_fair_t *f, gw_fair_sale_t *fs);

/*
 * One entry per person across the fleet, checked at entry when the person is not the
 * account (*held; else 0 at once: the lottery thread sends the mark): takes the person's
 * mark for t, or reads the entry that holds it. Returns 0 when t goes on to the local
 * entry (*marked: t's new mark, given back with _enter_unmark if the entry is not
 * written; t->order_id, qty and entered_at_ms are the held entry's when this gateway took
 * it and lost it to a crash), 1 (the account's entry on another gateway: *t is that
 * entry), GW_FAIR_OTHER_ACCOUNT, or CM_EBACKEND. Worker loops (their pool).
 */
int gw_fair__fleet_enter_mark(gw_fair_sale_t *fs, gw_fair_ticket_t *t, bool *held,
                              bool *marked);
void gw_fair__fleet_enter_unmark(gw_fair_sale_t *fs, const gw_fair_ticket_t *t,
                                 const char *order_id);
/* An entry of any gateway by its id, from the marks of the lotteries whose draw this
 * gateway does not know yet (once it does, every entrant is in its local table). 1 found,
 * 0 none, CM_EBACKEND. Worker loops (as above). */
int gw_fair__fleet_lookup(gw_fair_t *f, const char *order_id, gw_fair_ticket_t *out);

/* Buy's accept sequence (gw_accept.h) for entrant e of a draw in sale, at now: a
 * gw_accept_outcome_t or a negative cm_err_t. keyed: an entry without an
 * Idempotency-Key reserves under "fair-<order id>", so that a fleet's drawer that
 * resumes after a crash finds the order, not a second one. *sold_out: the stock ran out
 * with it. Lottery thread (gw_lottery.c). */
int gw_fair__draw_accept(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, const entry_t *e,
                         int64_t now, bool keyed, gw_accept_t *a, bool *sold_out);

/* The inventory step of entry e's order in sale (gw_fair_table.c): the person's
 * mark (inv.h), the entry's key, fingerprint, order id and qty. The draw and
 * the waitlist's promotions both reserve through it. */
void gw_fair__entry_reserve_req(const entry_t *e, inv_sale_t *sale, inv_reserve_req_t *rq);

#endif
