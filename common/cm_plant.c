/*
 * The planted-bug switch (cm_plant.h). Compiled to nothing but a type name
 * outside the plant build.
 */
#include "common/cm_plant.h"

#ifdef FLASHGATE_PLANTS
#include <string.h>

cm_plant_t cm_plant_active = CM_PLANT_NONE;

const char *const cm_plant_names[CM_PLANT_COUNT] = {
    [CM_PLANT_NONE] = "none",
    [CM_PLANT_INV_CAS_ONE_MORE] = "inv_cas_one_more",
    [CM_PLANT_INV_IDEM_RESERVES] = "inv_idem_reserves",
    [CM_PLANT_INV_RELEASE_TWICE] = "inv_release_twice",
    [CM_PLANT_INV_REPLAY_NO_KEY] = "inv_replay_no_key",
    [CM_PLANT_INV_LIMIT_ONE_MORE] = "inv_limit_one_more",
    [CM_PLANT_SPOOL_SCAN_UNSYNCED] = "spool_scan_unsynced",
    [CM_PLANT_SPOOL_RELEASED_NO_FSYNC] = "spool_released_no_fsync",
    [CM_PLANT_SPOOL_SKIP_LAST_SEG] = "spool_skip_last_seg",
    [CM_PLANT_SPOOL_PAST_POINT] = "spool_past_point",
    [CM_PLANT_SPOOL_SYNC_IGNORED] = "spool_sync_ignored",
    [CM_PLANT_SPOOL_TEAR_KEPT] = "spool_tear_kept",
    [CM_PLANT_SETTLE_COPY_RERUN] = "settle_copy_rerun",
    [CM_PLANT_RELAY_DROP_ON_ERROR] = "relay_drop_on_error",
    [CM_PLANT_RELAY_HELD_TWICE] = "relay_held_twice",
    [CM_PLANT_INV_SOLD_OUT_STALE] = "inv_sold_out_stale",
    [CM_PLANT_INV_REDUCE_BELOW_HELD] = "inv_reduce_below_held",
    [CM_PLANT_FAIR_NEW_SEED] = "fair_new_seed",
    [CM_PLANT_FAIR_CUT_FORGETS] = "fair_cut_forgets",
    [CM_PLANT_FAIR_ARRIVAL_ORDER] = "fair_arrival_order",
    [CM_PLANT_INV_REDIS_LIMIT_KEYED] = "inv_redis_limit_keyed",
    [CM_PLANT_INV_REDIS_NO_WAIT] = "inv_redis_no_wait",
    [CM_PLANT_INV_REDIS_ASYNC_NO_WAIT] = "inv_redis_async_no_wait",
    [CM_PLANT_INV_REDIS_BATCH_SHIFT] = "inv_redis_batch_shift",
    [CM_PLANT_INV_REDIS_GIVEBACK_CLAIMED] = "inv_redis_giveback_claimed",
    [CM_PLANT_RELAY_CLOSE_NO_RELEASE] = "relay_close_no_release",
    [CM_PLANT_SETTLE_COMMIT_FIRST] = "settle_commit_first",
    [CM_PLANT_SETTLE_COMMIT_UNPUBLISHED] = "settle_commit_unpublished",
    [CM_PLANT_REPLAY_SKIP_SEG_FIRST] = "replay_skip_seg_first",
    [CM_PLANT_COMP_FORGOTTEN_SKIPPED] = "comp_forgotten_skipped",
    [CM_PLANT_COMP_SETTLED_RELEASES] = "comp_settled_releases",
    [CM_PLANT_BUY_ACK_BEFORE_SPOOL] = "buy_ack_before_spool",
    [CM_PLANT_BUY_RETRY_ACK_IN_FLIGHT] = "buy_retry_ack_in_flight",
    [CM_PLANT_BUY_FAILED_WRITE_KEEPS_UNITS] = "buy_failed_write_keeps_units",
    [CM_PLANT_BUY_SYNC_FAILURE_ACCEPTED] = "buy_sync_failure_accepted",
    [CM_PLANT_FAIR_TWO_ENTRIES] = "fair_two_entries",
    [CM_PLANT_FAIR_SEED_UNSYNCED_DRAWS] = "fair_seed_unsynced_draws",
    [CM_PLANT_COMP_RELEASE_FAILURE_FINAL] = "comp_release_failure_final",
    [CM_PLANT_REPLAY_RELEASE_FAILURE_DROPPED] = "replay_release_failure_dropped",
    [CM_PLANT_INV_REDIS_RELEASE_KEEPS_ORDER] = "inv_redis_release_keeps_order",
    [CM_PLANT_READY_WHILE_LEAVING] = "ready_while_leaving",
    [CM_PLANT_DRAIN_KEEPS_SERVING] = "drain_keeps_serving",
    [CM_PLANT_REG_TWO_PER_PERSON] = "reg_two_per_person",
    [CM_PLANT_REG_CAP_ONE_MORE] = "reg_cap_one_more",
    [CM_PLANT_REG_ANSWER_UNSYNCED] = "reg_answer_unsynced",
    [CM_PLANT_WL_SKIPS_FIRST] = "wl_skips_first",
    [CM_PLANT_WL_END_KEEPS] = "wl_end_keeps",
    [CM_PLANT_FAIR_SOLD_OUT_FORGOTTEN] = "fair_sold_out_forgotten",
    [CM_PLANT_ROOM_RANK_ARRIVAL] = "room_rank_arrival",
    [CM_PLANT_ROOM_SEAL_NEXT_OVERLAP] = "room_seal_next_overlap",
    [CM_PLANT_ROOM_PREQUEUE_TWICE] = "room_prequeue_twice",
    [CM_PLANT_ROOM_REPLAY_FORGETS_NEXT] = "room_replay_forgets_next",
    [CM_PLANT_ROOM_REPLAY_SKIPS_CLAIM] = "room_replay_skips_claim",
    [CM_PLANT_ROOM_CLAIM_UNSYNCED] = "room_claim_unsynced",
    [CM_PLANT_ROOM_REWRITE_WAITS] = "room_rewrite_waits",
    [CM_PLANT_FAIR_OUTCOME_UNSYNCED] = "fair_outcome_unsynced",
    [CM_PLANT_FAIR_FLEET_PUSH_SKIPS] = "fair_fleet_push_skips",
    [CM_PLANT_FAIR_REDIS_MARK_HELD] = "fair_redis_mark_held",
    [CM_PLANT_WL_FLEET_GEN_IGNORED] = "wl_fleet_gen_ignored",
    [CM_PLANT_WL_FLEET_END_UNREAD] = "wl_fleet_end_unread",
    [CM_PLANT_WL_FLEET_SEEN_STALE] = "wl_fleet_seen_stale",
    [CM_PLANT_FAIR_FLEET_PUSHED_FIRST] = "fair_fleet_pushed_first",
    [CM_PLANT_FAIR_FLEET_BEFORE_LOST] = "fair_fleet_before_lost",
    [CM_PLANT_ROOM_FLEET_SEED_REOFFERED] = "room_fleet_seed_reoffered",
    [CM_PLANT_ACCEPT_UNSYNCED] = "accept_unsynced",
    [CM_PLANT_REG_LOAD_UNSYNCED] = "reg_load_unsynced",
    [CM_PLANT_FAIR_RESET_UNSYNCED] = "fair_reset_unsynced",
    [CM_PLANT_FAIR_CONF_RETRY_UNSAVED] = "fair_conf_retry_unsaved",
    [CM_PLANT_JOURNAL_COPY_UNCHECKED] = "journal_copy_unchecked",
    [CM_PLANT_FAIR_HOLE_TRUSTED] = "fair_hole_trusted",
};

void cm_plant_set(cm_plant_t p)
{
    cm_plant_active = p;
}

int cm_plant_find(const char *name)
{
    for (int i = 0; i < CM_PLANT_COUNT; i++)
        if (strcmp(cm_plant_names[i], name) == 0)
            return i;
    return -1;
}
#else
typedef int cm_plant_unused_t; /* ISO C wants a declaration in every file */
#endif
