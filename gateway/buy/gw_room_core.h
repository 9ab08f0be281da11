/*
 * One gateway's waiting room: its decisions without I/O. Its phases, events and
 * records are docs/design.md's "The waiting room's core"; the log's grammar is
 * gw_room_core_replay's (gw_room_core.c). The shell (gw_room_store.c) holds the
 * room's lock and writes the records; the simulator (sim/sim_room.c) runs the
 * same code. No syscall, lock or clock read: the time comes in each event. The
 * tables grow with cm_xmalloc (aborts on OOM, as the server's allocations do).
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
 * The places the room gave, by person: GW_ROOM_PLACES slots in buckets of
 * GW_WR_WAYS, a slot's tag siphash(the room's key, person) | 1 (0 = empty).
 * gw_wr_place_find answers the slot of tag in a bucket, else, with take, the
 * bucket's lowest position's (an empty slot, then the oldest place: its person
 * joins at the back again) with a new position at the back (from *next), else
 * NULL. The limiters bound how fast anyone can push places out. Caller holds
 * the room's lock; *next is also read unlocked.
 */
#define GW_ROOM_PLACES 65536
#define GW_WR_WAYS 4
typedef struct gw_wr_place {
    uint64_t tag;
    uint64_t pos;
    int64_t exp_s; /* its admission token's expiry once admitted, else 0 */
} gw_wr_place_t;
gw_wr_place_t *gw_wr_place_find(gw_wr_place_t *bucket, uint64_t tag, bool take,
                                _Atomic uint64_t *next);

/* The pre-queue's order, pure so that tests and auditors can run it: a person's key
 * is SipHash-2-4(seed, person) (0 read as 1: 0 marks an empty slot); the rank is the
 * 1-based index of key among the sorted keys, 0 if absent. */
uint64_t gw_wr_prequeue_key(const cm_hash_key_t *seed, const char *person, size_t len);
void gw_wr_prequeue_sort(uint64_t *keys, size_t n);
uint64_t gw_wr_prequeue_rank(const uint64_t *sorted, size_t n, uint64_t key);

/* The spent admission tokens' table (gw_wr_spent_t, gw_fair_internal.h). */
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

/* The room's events (gw_room_core_step, dispatched by the sale's core): each kind
 * reads only its own members. */
typedef enum {
    GW_ROOM_EV_JOIN = 0,    /* join: ANSWERED (out: P, A), PREQUEUE (out: J) or CM_EBUSY (full) */
    GW_ROOM_EV_WRITTEN,     /* rec, ok: a J adds its person, a failed S is written again, an F
                             * is the front logged */
    GW_ROOM_EV_SEAL,        /* now_ms, starts_ms: out gets S, synced when anyone was ranked */
    GW_ROOM_EV_SEAL_SYNCED, /* ok: a failed sync counts as a failed S */
    GW_ROOM_EV_TICK,        /* eff_per_s, dt_ms: out gets F when the front passed a place */
    GW_ROOM_EV_LOADED,      /* the replay's end: the front read back is the one logged */
    GW_ROOM_EV_REPLAY,      /* line, spent (the caller holds its lock), now_s */
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

/* One event: *answer (JOIN; zeroed otherwise) and out (the records to write) filled,
 * each NULL where the caller expects none. Returns JOIN's decision, else 0. */
int gw_room_core_step(gw_room_core_t *c, const gw_room_ev_t *ev, gw_wr_join_t *answer,
                      gw_room_out_t *out);

/* One record of the log, formatted as the log's line (no newline). Returns
 * snprintf's count. */
int gw_room_rec_format(const gw_room_rec_t *rec, char *buf, size_t len);

/* The spent tokens' decisions on the table's slots (*slots allocated at the first
 * claim); the caller holds the table's lock. */
int gw_room_spent_claim(gw_wr_spent_slot_t **slots, uint64_t jti, int64_t exp_s, uint64_t fp,
                        int64_t now_s);
void gw_room_spent_settle(gw_wr_spent_slot_t *slots, uint64_t jti, bool accepted);

/* The replay id of the place at pos in a room keyed key (never 0). */
uint64_t gw_fair__place_jti(const cm_hash_key_t *key, uint64_t pos);

#endif
