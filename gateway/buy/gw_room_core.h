/*
 * One gateway's waiting room: its decisions without I/O (docs/design.md,
 * "The waiting room's core"). Every rule of the room is in gw_room_core.c:
 *
 *   PRE-QUEUE  before the start a join adds the person's keyed hash
 *              (gw_wr_prequeue_key under the seed) to a set: once each, at
 *              most GW_WR_PREQUEUE_MAX; its "J" record before it is added
 *   SEAL       at the start (the first join or tick at or after it) the set
 *              is sorted: a person's rank is their key's place in that
 *              order, and the first later arrival takes the place after the
 *              last rank; its "S" record, made durable before any rank is
 *              answered from it
 *   PLACES     from the seal, a pre-queue person holds their rank, anyone
 *              else a place at the back kept in a bounded table (a "P"
 *              record per new place); a place whose admission token expired
 *              unused is given up: its person joins at the back again
 *   ADMISSION  a place at or before the front is admitted once: its token's
 *              expiry is fixed at the first admission ("A" record) and the
 *              same token is answered until it expires
 *   FRONT      each tick moves the front by rate x elapsed time, never more
 *              than one second of admissions ahead of the places given ("F"
 *              record when it passed another place)
 *   TOKENS     a buy claims its token's replay id once ("T" record before
 *              the reserve); a buy that made no order gives it back ("U")
 *
 * A restart reads the records back (REPLAY) into the same state.
 * The shell (gw_room_store.c) holds the room's lock, writes the records through the
 * room's log (gw_room_store.c) and runs its fdatasync; the simulator
 * (sim/sim_room.c) runs this same code on a simulated disk, and
 * tests/unit/gateway/buy/test_gw_room_core.c drives it alone. No syscall, lock
 * or clock read: the time comes in each event. The tables grow with
 * cm_xmalloc (aborts on OOM, as the server's allocations do).
 */
#ifndef GW_ROOM_CORE_H
#define GW_ROOM_CORE_H

#include "common/cm_hash.h"
#include "gateway/buy/gw_fair.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The places the room gave, by user, so that a user who joins again gets the
 * place they hold instead of a new one at the back. Bounded: a fixed table of
 * GW_ROOM_PLACES slots (24 bytes each) in buckets of GW_WR_WAYS
 * (gw_wr_place_find). The per-IP and per-user limiters bound how fast anyone
 * can push places out.
 */
#define GW_ROOM_PLACES 65536

/*
 * One bucket of a room's place table (gw_room_core.c): the position held by the
 * person whose tag (siphash(the room's own key, person) | 1; 0 = an empty slot)
 * is tag, else, with take, a new position at the back (from *next) in the slot
 * of the bucket's lowest position: an empty slot first, then the oldest place,
 * the first to be admitted (its person joins at the back again if they come
 * back); without take, 0. Caller holds the room's lock; *next is also read
 * unlocked.
 */
#define GW_WR_WAYS 4
typedef struct gw_wr_place {
    uint64_t tag;
    uint64_t pos;
    int64_t exp_s; /* its admission token's expiry once admitted, else 0 */
} gw_wr_place_t;
uint64_t gw_wr_place_find(gw_wr_place_t *bucket, uint64_t tag, bool take, _Atomic uint64_t *next);

/*
 * The pre-queue's order, pure so that tests and auditors can run it: a
 * person's key is SipHash-2-4(seed, person) (0 read as 1: 0 marks an empty
 * slot); gw_wr_prequeue_sort sorts n keys ascending; gw_wr_prequeue_rank is
 * the 1-based rank of key among the sorted keys, 0 if absent. Thread-safe.
 */
uint64_t gw_wr_prequeue_key(const cm_hash_key_t *seed, const char *person, size_t len);
void gw_wr_prequeue_sort(uint64_t *keys, size_t n);
uint64_t gw_wr_prequeue_rank(const uint64_t *sorted, size_t n, uint64_t key);

/* The spent admission tokens' table (gw_wr_spent_t, gw_fair_internal.h): GW_WR_SPENT_SLOTS
 * slots in buckets of GW_WR_SPENT_WAYS. */
#define GW_WR_SPENT_SLOTS (1u << 18)
#define GW_WR_SPENT_WAYS 16
typedef struct gw_wr_spent_slot {
    uint64_t jti; /* 0 = empty */
    int64_t exp_s;
    uint64_t fp;
    bool spent; /* false: held by a buy in progress */
} gw_wr_spent_slot_t;

/* A room's state. next, front_milli and sealed are read without the shell's
 * lock (the queue page, the view); everything else under it. */
typedef struct gw_room_core {
    cm_hash_key_t key;            /* the place tags' and replay ids' key */
    cm_hash_key_t seed;           /* the pre-queue's order; secret until the seal */
    _Atomic uint64_t next;        /* positions given */
    _Atomic uint64_t front_milli; /* admitted through (thousandths of a position) */
    atomic_bool sealed;
    uint64_t front_logged; /* the front of the last "F" record written */
    gw_wr_place_t *places; /* GW_ROOM_PLACES slots, allocated at the first place */
    /* The pre-queue: the keys of the persons who joined before the start, an
     * open-addressing set of pre_cap slots (0 = empty) until the seal, then
     * npre of them sorted, with each one's admission token expiry in pre_exp
     * (0 = not admitted yet). */
    uint64_t *pre;
    int64_t *pre_exp;
    size_t npre, pre_cap;
    int64_t sealed_ms;  /* when the pre-queue was sealed, 0 = not yet */
    int64_t starts_ms;  /* the sale's start it was sealed at */
    bool seal_unlogged; /* the seal's record was not written (or not synced):
                         * written again before the next P or A record */
    /* The pre-queue's persons for the admin's export: each NUL-terminated in
     * names, name_at[i] the offset of the i-th, in joining order until the
     * seal, then in rank order. */
    char *names;
    size_t names_len, names_cap;
    uint32_t *name_at;
} gw_room_core_t;

/* A record of the room's log (the letters of REPLAY's log grammar). */
typedef enum {
    GW_ROOM_REC_J = 'J', /* person: a pre-queue join (key: its key) */
    GW_ROOM_REC_S = 'S', /* a = sealed ms, b = starts ms */
    GW_ROOM_REC_P = 'P', /* a = tag, b = pos */
    GW_ROOM_REC_A = 'A', /* a = tag (0: a pre-queue rank), b = pos, c = exp s */
    GW_ROOM_REC_F = 'F', /* a = front milli */
    GW_ROOM_REC_T = 'T', /* a = jti, b = fp, c = exp s: a token claimed (the shell's) */
} gw_room_rec_kind_t;

typedef struct gw_room_rec {
    gw_room_rec_kind_t kind;
    uint64_t a, b;
    int64_t c;
    const char *person; /* J: borrowed from the event */
    size_t len;
} gw_room_rec_t;

/* The records a step asks the shell to write, in order. */
#define GW_ROOM_OUT_MAX 2
typedef struct gw_room_out {
    gw_room_rec_t rec[GW_ROOM_OUT_MAX];
    size_t nrec;
    bool sync; /* the seal: fdatasync its record before answering from it */
} gw_room_out_t;

/* A join (take) or a look at the room. */
typedef struct gw_room_join_ev {
    const char *person;
    size_t len;
    bool take;
    int64_t now_ms;
    int64_t starts_at_ms;      /* the sale's start, 0 = none (a fleet's script; the core
                                * never reads it: the machine decides the seal) */
    uint64_t admitted_through; /* the front the caller admits through */
} gw_room_join_ev_t;

/* What a JOIN decided (>= 0), besides its answer. */
enum {
    GW_ROOM_ANSWERED = 0, /* answered: write out's records (places, admissions) */
    GW_ROOM_PREQUEUE = 1, /* not sealed (before the start): out->rec[0] is a new person's J
                           * record (write it, then WRITTEN) or out is empty */
    GW_ROOM_SEAL = 2,     /* the sale's machine's: at or after the start, not sealed: seal
                           * first (gw_sale_core.c; the core itself never returns it) */
};

void gw_room_core_init(gw_room_core_t *c);
/* Frees the tables; the core is as after _init. */
void gw_room_core_deinit(gw_room_core_t *c);
/* Empties the room (a deleted sale) with new keys. */
void gw_room_core_reset(gw_room_core_t *c, const cm_hash_key_t *key, const cm_hash_key_t *seed);

/* Before writing rec: true (and *s, the seal's record) when the seal's record
 * must be written first (a restart reads P and A records only after it). */
bool gw_room_core_relog(const gw_room_core_t *c, const gw_room_rec_t *rec, gw_room_rec_t *s);

/*
 * The room's events, through its one step entry (gw_room_core_step), which
 * the sale's core (gw_sale_core.h) dispatches as it does the other cores'.
 * Each kind reads only its own members:
 *   JOIN         a join or a look: the step returns GW_ROOM_ANSWERED (out:
 *                the P and A records to write, the seal's again first where
 *                it was not written: gw_room_core_relog), GW_ROOM_PREQUEUE
 *                (not sealed: the sale's machine seals at the start, so an
 *                unsealed room here is before it) or CM_EBUSY (the pre-queue
 *                is full)
 *   WRITTEN      a record the shell wrote (ok) or failed to write: a J adds
 *                its person, an S that failed is written again before the
 *                next place's, an F is the front logged
 *   SEAL         the seal at now_ms (the sale starting at starts_ms): out
 *                gets the S record, and sync when anyone was ranked (an
 *                empty pre-queue ranks nobody: the next sync covers its
 *                record before any P record after it)
 *   SEAL_SYNCED  the seal's fdatasync returned: a failure is treated as a
 *                failed record
 *   TICK         a sealed room's front moves by eff_per_s over dt_ms, at
 *                most one second of admissions past the places given; out:
 *                an F record when it passed another place
 *   REPLAY       a restart: one line of the log, in the order written (a K
 *                first; an unknown or malformed line is skipped); T and U
 *                lines act on the spent table's slots (*spent, allocated at
 *                the first claim; the caller holds its lock if others can
 *                see it)
 *   LOADED       the end of the replay: the front read back is the one logged
 */
typedef enum {
    GW_ROOM_EV_JOIN = 0,    /* join */
    GW_ROOM_EV_WRITTEN,     /* rec, ok */
    GW_ROOM_EV_SEAL,        /* now_ms, starts_ms */
    GW_ROOM_EV_SEAL_SYNCED, /* ok */
    GW_ROOM_EV_TICK,        /* eff_per_s, dt_ms */
    GW_ROOM_EV_LOADED,
    GW_ROOM_EV_REPLAY, /* line, spent, now_s */
} gw_room_ev_kind_t;

typedef struct gw_room_ev {
    gw_room_ev_kind_t kind;
    gw_room_join_ev_t join;
    const gw_room_rec_t *rec; /* WRITTEN */
    bool ok;                  /* WRITTEN, SEAL_SYNCED */
    int64_t now_ms;           /* SEAL */
    int64_t starts_ms;        /* SEAL */
    double eff_per_s;         /* TICK */
    int64_t dt_ms;            /* TICK */
    const char *line;         /* REPLAY */
    gw_wr_spent_slot_t **spent;
    int64_t now_s; /* REPLAY */
} gw_room_ev_t;

/*
 * One event: *answer (JOIN; zeroed otherwise) and out (the records to write)
 * filled, each NULL where the caller expects none. Returns JOIN's decision,
 * 0 for the other kinds.
 */
int gw_room_core_step(gw_room_core_t *c, const gw_room_ev_t *ev, gw_wr_join_t *answer,
                      gw_room_out_t *out);

/* One record of the log, formatted as the log's line (no newline). Returns
 * snprintf's count. */
int gw_room_rec_format(const gw_room_rec_t *rec, char *buf, size_t len);

/*
 * The spent tokens' decisions (gw_wr_spent_claim, gw_wr_spent_settle) on the
 * table's slots (*slots allocated at the first claim); the caller holds the
 * table's lock.
 */
int gw_room_spent_claim(gw_wr_spent_slot_t **slots, uint64_t jti, int64_t exp_s, uint64_t fp,
                        int64_t now_s);
void gw_room_spent_settle(gw_wr_spent_slot_t *slots, uint64_t jti, bool accepted);

/* The replay id of the place at pos in a room keyed key (never 0). */
uint64_t gw_fair__place_jti(const cm_hash_key_t *key, uint64_t pos);

#endif
