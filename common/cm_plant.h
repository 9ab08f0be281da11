/*
 * Planted bugs: one-line defects in the product code that the simulator's
 * self-test (sim/, ctest sim.plants) must find, to prove its oracle bites.
 * They exist only in a build configured with -DFLASHGATE_PLANTS=ON (the
 * compile definition FLASHGATE_PLANTS); in every other build CM_PLANT(x) is
 * the constant 0, the planted branch is dead code, and no plant symbol is
 * linked (ctest sim.no-plants looks with nm).
 *
 * Use: `if (CM_PLANT(SPOOL_RELEASE_EARLY)) <the defect>; else <the code>;`
 * One plant is active at a time (cm_plant_set), chosen by the simulator.
 */
#ifndef CM_PLANT_H
#define CM_PLANT_H

#include <stdbool.h>

/* The planted defects. cm_plant_names[] names them (same order). */
typedef enum {
    CM_PLANT_NONE = 0,
    CM_PLANT_INV_CAS_ONE_MORE, /* the memory CAS takes qty units when only qty-1 are left (oversell)
                                */
    CM_PLANT_INV_IDEM_RESERVES, /* a keyed retry reserves again instead of finding its order */
    CM_PLANT_INV_RELEASE_TWICE, /* releasing an order already released gives its units back again */
    CM_PLANT_INV_REPLAY_NO_KEY, /* start-up replay restores an order without its idempotency key */
    CM_PLANT_INV_LIMIT_ONE_MORE,  /* the per-user limit lets one unit more through */
    CM_PLANT_SPOOL_SCAN_UNSYNCED, /* fsync durability: readers see records before their fdatasync */
    CM_PLANT_SPOOL_RELEASED_NO_FSYNC, /* the release point file is renamed into place unsynced */
    CM_PLANT_SPOOL_SKIP_LAST_SEG,     /* recovery forgets the last segment */
    CM_PLANT_SPOOL_PAST_POINT,    /* recovery appends below a release point past the data (a past
                                     review defect) */
    CM_PLANT_SPOOL_SYNC_IGNORED,  /* a failed fdatasync is reported as success */
    CM_PLANT_SPOOL_TEAR_KEPT,     /* recovery does not cut a torn tail off the file */
    CM_PLANT_SETTLE_COPY_RERUN,   /* with user SQL, a copy of a recorded order is run and inserted
                                     again */
    CM_PLANT_RELAY_DROP_ON_ERROR, /* oq_relay.c: a failed delivery report is taken as delivered */
    CM_PLANT_RELAY_HELD_TWICE,    /* oq_relay.c: outcomes per id are a bit, not a count: an order
                                     twice in one spool holds the release point (a past review
                                     defect) */
    CM_PLANT_INV_SOLD_OUT_STALE,  /* a restock races a sell-out: the sold-out flag is stored from a
                                     read taken before the restock, not checked again, and stays set
                                     with units back */
    CM_PLANT_INV_REDUCE_BELOW_HELD,      /* a stock edit below the units already held is accepted */
    CM_PLANT_FAIR_NEW_SEED,              /* gw_fair_core.c: a restart ignores the draw's logged seed
                                            and draws a new one */
    CM_PLANT_FAIR_CUT_FORGETS,           /* gw_fair_core.c: a draw cut by a crash does not take its
                                            winners from the spool */
    CM_PLANT_FAIR_ARRIVAL_ORDER,         /* gw_fair_core.c: winners taken in arrival order, the draw
                                            order computed but not used */
    CM_PLANT_INV_REDIS_LIMIT_KEYED,      /* the Redis reserve script skips the per-user check of a
                                            keyed request (a retry) */
    CM_PLANT_INV_REDIS_NO_WAIT,          /* a loop-less worker's reserve and claim answered without
                                            WAIT (a past defect the simulator found) */
    CM_PLANT_INV_REDIS_ASYNC_NO_WAIT,    /* a worker loop's reserve and claim answered before their
                                            WAIT reply (the async path's twin of the above) */
    CM_PLANT_INV_REDIS_BATCH_SHIFT,      /* a batch's reply matched to its reserves one off: each
                                            caller hears its neighbour's answer */
    CM_PLANT_INV_REDIS_GIVEBACK_CLAIMED, /* a worker loop's give-back of a reserve in doubt
                                            releases the order even when a keyed retry's claim
                                            answered it 202 */
    CM_PLANT_RELAY_CLOSE_NO_RELEASE,     /* oq_relay.c: a graceful close flushes but does not hand
                                            what was delivered to the releaser */
    CM_PLANT_SETTLE_COMMIT_FIRST,        /* st_loop.c: a batch's offsets committed before its
                                            write */
    CM_PLANT_SETTLE_COMMIT_UNPUBLISHED,  /* st_loop.c: a batch's offsets committed without its
                                            outcomes published */
    CM_PLANT_REPLAY_SKIP_SEG_FIRST,      /* gw_replay.c: the start-up replay skips the first
                                            record of every segment but the first */
    CM_PLANT_COMP_FORGOTTEN_SKIPPED,     /* gw_replay.c: compensation skips an order the bounded
                                            table forgot, though the outcome names it */
    CM_PLANT_COMP_SETTLED_RELEASES,      /* gw_replay.c: a settled outcome read again gives the
                                            order's units back */
    CM_PLANT_BUY_ACK_BEFORE_SPOOL,       /* gw_buy_core.c: the 202 goes out before the spool write
                                            returned */
    CM_PLANT_BUY_RETRY_ACK_IN_FLIGHT,    /* gw_buy_core.c: a keyed retry of this incarnation's order
                                            not known durable is answered 202, not 503 in progress */
    CM_PLANT_BUY_FAILED_WRITE_KEEPS_UNITS, /* gw_buy_core.c: a failed spool write does not give
                                              the units back */
    CM_PLANT_BUY_SYNC_FAILURE_ACCEPTED,    /* gw_buy_core.c: a failed group-commit fdatasync is
                                              answered 202 */
    CM_PLANT_FAIR_TWO_ENTRIES, /* gw_fair_core.c: a person's second entry by the same account
                                  is a new entry, not the first one back */
    CM_PLANT_FAIR_SEED_UNSYNCED_DRAWS,   /* gw_fair_core.c: a failed fdatasync of the seed's record
                                            is taken as durable: the draw goes on with it */
    CM_PLANT_COMP_RELEASE_FAILURE_FINAL, /* gw_replay.c: a compensation whose release failed
                                            (Redis down, a timeout) marks the order final and
                                            hands nothing to the releaser */
    CM_PLANT_REPLAY_RELEASE_FAILURE_DROPPED, /* gw_replay.c: the start-up replay takes a
                                                release event the inventory failed as done */
    CM_PLANT_INV_REDIS_RELEASE_KEEPS_ORDER,  /* the Redis release script gives the units back
                                                and keeps the order: a second release (a
                                                redelivered outcome) gives them back again */
    CM_PLANT_READY_WHILE_LEAVING, /* gw_drain.c: /readyz stays 200 through the drain grace */
    CM_PLANT_DRAIN_KEEPS_SERVING, /* gw_drain.c: after the grace, a request on a kept-alive
                                     connection is served and the connection left open */
    CM_PLANT_REG_TWO_PER_PERSON,  /* gw_reg_core.c: a person registered already is registered
                                     again (a second line) */
    CM_PLANT_REG_CAP_ONE_MORE,    /* gw_reg_core.c: the registration cap lets one person more in */
    CM_PLANT_REG_ANSWER_UNSYNCED, /* gw_reg_core.c: under fsync durability a registration is
                                     answered 201 at its write, before its fdatasync */
    CM_PLANT_WL_SKIPS_FIRST,      /* gw_waitlist_core.c: the leftovers' walk passes over the first
                                     waitlisted loser in draw order */
    CM_PLANT_WL_END_KEEPS,        /* gw_sale_core.c: the sale's end does not end the waitlist:
                                     losers are still promoted after it */
    CM_PLANT_FAIR_SOLD_OUT_FORGOTTEN,   /* gw_fair_core.c: a restart ignores the draw's sold-out
                                           record: a resumed draw tries the entrants after it */
    CM_PLANT_ROOM_RANK_ARRIVAL,         /* gw_room_core.c: the seal ranks the pre-queue in arrival
                                           order, not by the keyed hash */
    CM_PLANT_ROOM_SEAL_NEXT_OVERLAP,    /* gw_room_core.c: the seal does not move the back past the
                                           ranks: the first later arrival gets rank 1's place */
    CM_PLANT_ROOM_PREQUEUE_TWICE,       /* gw_room_core.c: a person's second pre-queue join adds
                                           their key again: two ranks, every later one shifted */
    CM_PLANT_ROOM_REPLAY_FORGETS_NEXT,  /* gw_room_core.c: a restart reads the places back but not
                                           the back of the queue: new places reuse positions */
    CM_PLANT_ROOM_REPLAY_SKIPS_CLAIM,   /* gw_room_core.c: a restart does not read the claimed
                                           tokens back: a token admits a second order */
    CM_PLANT_ROOM_CLAIM_UNSYNCED,       /* gw_room_store.c: a token's claim reported durable
                                           without its fdatasync: a power cut, a second order */
    CM_PLANT_ROOM_REWRITE_WAITS,        /* gw_room_store.c: a failed fdatasync does not make the
                                           lottery thread's tick rewrite the log: the dropped
                                           lines, evicted, are lost at a kill -9 */
    CM_PLANT_FAIR_OUTCOME_UNSYNCED,     /* gw_fair_core.c: a drawn entrant's outcome is answered at
                                           its decision, before the record covering it (its "X",
                                           its order's commit, "O" or "F") is durable */
    CM_PLANT_FAIR_FLEET_PUSH_SKIPS,     /* gw_fair_fleet.c: a gateway's push at the close leaves its
                                           last entry out and still reports every entry pushed */
    CM_PLANT_FAIR_REDIS_MARK_HELD,      /* gw_fair_redis.c: an entry mark another account of the
                                           person holds is read as taken: both accounts enter */
    CM_PLANT_WL_FLEET_GEN_IGNORED,      /* gw_waitlist_fleet.c: a moved waitlist generation is not
                                           read: a loser another gateway promoted reads waitlisted */
    CM_PLANT_WL_FLEET_END_UNREAD,       /* gw_waitlist_fleet.c: at ends_at a gateway loses its
                                           waitlisted by its last poll of the draw, not read again
                                           (a past defect): a loser promoted just before reads lost */
    CM_PLANT_WL_FLEET_SEEN_STALE,       /* gw_waitlist_core.c: a walk that met sold-out keeps its
                                           lagging view as seen: the next unit freed looks unchanged */
    CM_PLANT_FAIR_FLEET_PUSHED_FIRST,   /* gw_fair_fleet.c: a gateway is marked pushed before its
                                           entries are written: killed in between, the draw goes
                                           on without them */
    CM_PLANT_FAIR_FLEET_BEFORE_LOST,    /* gw_fair_fleet.c: a winner reserved, spooled and released
                                           before a resumed draw recorded it is recorded refused:
                                           its order exists for a loser */
    CM_PLANT_ROOM_FLEET_SEED_REOFFERED, /* gw_room_fleet.c: a seed Redis' room held after the
                                           start is offered again unless this copy saw the seal:
                                           a room made again takes a published seed */
    CM_PLANT_ACCEPT_UNSYNCED,           /* gw_accept.c: a winner's or a promotion's order taken as
                                           durable at its write, without its fdatasync: recorded
                                           won, then lost with the spool's unsynced tail */
    CM_PLANT_REG_LOAD_UNSYNCED,         /* gw_reg_local.c: a start's load does not fdatasync what a
                                           crash left in the page cache: a 200 from it, then lost
                                           with a power cut */
    CM_PLANT_FAIR_RESET_UNSYNCED,       /* gw_fair_slot.c: a deleted sale's entry log unlinked
                                           without its directory's fsync: a power cut brings it
                                           back into the sale created again */
    CM_PLANT_FAIR_CONF_RETRY_UNSAVED,   /* gw_fair_table.c: a failed save of fair.json not
                                           remembered: the PUT's retry finds its change in
                                           memory, answers 200, and a restart forgets it */
    CM_PLANT_JOURNAL_COPY_UNCHECKED,    /* cm_journal.c: a rewrite copies the frames it reads back
                                           unchecked: stale bytes of evicted pages made durable */
    CM_PLANT_FAIR_HOLE_TRUSTED,         /* gw_fair_core.c: a restart takes an end record read after
                                           a hole (the winners' records lost) as the draw done: a
                                           winner whose order the spool holds told it lost */
    CM_PLANT_COUNT
} cm_plant_t;

#ifdef FLASHGATE_PLANTS
extern const char *const cm_plant_names[CM_PLANT_COUNT];
/* The active plant (CM_PLANT_NONE: none). Single-threaded setup only. */
void cm_plant_set(cm_plant_t p);
/* The plant of that name, or -1. */
int cm_plant_find(const char *name);
extern cm_plant_t cm_plant_active;
#define CM_PLANT(name) (cm_plant_active == CM_PLANT_##name)
#else
#define CM_PLANT(name) 0
#endif

#endif
