/*
 * The lottery's two stores (gw_fair_lot_ops_t, gw_fair_internal.h), one table
 * each, chosen once by gw_fair_open: the shell (gw_fair.c, gw_lottery.c)
 * calls f->lot->op and never asks which store it has. The tables sit here,
 * above the files that implement them, because the fleet's leftovers
 * (gw_waitlist_fleet.c) call the fleet's draw (gw_fair_fleet.c): a table in
 * either would make the two files call each other.
 */
#include "gateway/buy/gw_elig_backend.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg_backend.h"

/*---- one gateway: the entry log on disk (gw_lottery.c, gw_waitlist.c) ----*/

/*
 * A NULL op has nothing to do here: every entry is in the log and the local
 * table already (no marks to send, none to look up elsewhere), one entry per
 * person is the local table's (gw_fair_enter), fair.json is the configuration
 * (gw_fair__conf_apply_locked writes it), and nothing beyond this gateway
 * knows more than what it holds.
 */
const gw_fair_lot_ops_t gw_fair__lot_local = {
    .sale_load = gw_fair__room_load,
    .draw_tick = gw_fair__run_draw,
    .draw = &gw_fair__draw_local,
    .room = &gw_fair__room_local_ops,
    .reg = &gw_reg__local_ops,
    .elig = &(const gw_elig_ops_t){0}, /* eligibility.json is the whole store */
    .wl = &gw_fair__wl_local,
};

/*---- a fleet: Redis through the fairness pool (gw_fair_fleet.c, gw_waitlist_fleet.c) ----*/

const gw_fair_lot_ops_t gw_fair__lot_redis = {
    .open = gw_fair__fleet_open,
    .close = gw_fair__fleet_close,
    /* no .sale_load: a fleet's room is Redis' (gw_room_fleet.c), no log of its own */
    .tick = gw_fair__fleet_tick,
    .entries_tick = gw_fair__fleet_entries_tick,
    .draw_tick = gw_fair__fleet_tick_sale,
    .draw = &gw_fair__draw_redis,
    .enter_mark = gw_fair__fleet_enter_mark,
    .enter_unmark = gw_fair__fleet_enter_unmark,
    .lookup = gw_fair__fleet_lookup,
    .record = gw_fair__fleet_record,
    .conf_read = gw_fair__fleet_conf_refresh,
    .conf_put = gw_fair__fleet_conf_put,
    .drop = gw_fair__fleet_drop,
    .stats = gw_fair__fleet_stats,
    .room = &gw_fair__room_redis_ops,
    .reg = &gw_reg__fleet_ops,
    .elig = &gw_elig__fleet_ops,
    .wl = &gw_fair__wl_redis,
};
