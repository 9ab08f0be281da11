/*
 * The lottery's two stores (gw_fair_lot_ops_t, gw_fair_internal.h), one table
 * each, chosen once by gw_fair_open: the shell (gw_fair.c, gw_lottery.c)
 * calls f->lot->op and never asks which store it has. The tables sit here,
 * above the files that implement them, because the fleet's leftovers
 * (gw_waitlist_fleet.c) call the fleet's draw (gw_fair_fleet.c): a table in
 * either would make the two files call each other.
 */
#include "gateway/buy/gw_fair_internal.h"

/*---- one gateway: the entry log on disk (gw_lottery.c, gw_waitlist.c) ----*/

static int local_open(gw_fair_t *f, char *errbuf, size_t errlen)
{
    (void)f, (void)errbuf, (void)errlen;
    return 0;
}

static void local_tick(gw_fair_t *f, int64_t now_ms)
{
    (void)f, (void)now_ms;
}

/* Every entry is in the log and the local table already: nothing to send. */
static void local_entries_tick(gw_fair_t *f, gw_fair_sale_t *fs)
{
    (void)f, (void)fs;
}

/* One entry per person is the local table's (gw_fair_enter). */
static int local_enter_mark(gw_fair_sale_t *fs, gw_fair_ticket_t *t, bool *held, bool *marked)
{
    (void)fs, (void)t;
    *held = *marked = false;
    return 0;
}

static void local_enter_unmark(gw_fair_sale_t *fs, const gw_fair_ticket_t *t, const char *order_id)
{
    (void)fs, (void)t, (void)order_id;
}

/* Every entry of this gateway's lotteries is in its local table. */
static int local_lookup(gw_fair_t *f, const char *order_id, gw_fair_ticket_t *out)
{
    (void)f, (void)order_id, (void)out;
    return 0;
}

/* Nothing beyond this gateway: what it holds answers. */
static int local_record(gw_fair_t *f, const char *sale_id, bool *drawn, bool *entered, char *errbuf,
                        size_t errlen)
{
    (void)f, (void)sale_id, (void)drawn, (void)entered, (void)errbuf, (void)errlen;
    return 0;
}

static int local_conf_read(gw_fair_t *f, const char *sale_id, char *errbuf, size_t errlen)
{
    (void)f, (void)sale_id, (void)errbuf, (void)errlen;
    return 0;
}

/* fair.json is the configuration (gw_fair__conf_apply_locked writes it). */
static int local_conf_put(gw_fair_t *f, const char *sale_id, int64_t window_ms, int64_t early_ms,
                          int64_t wr_rate, cm_hash_key_t *secret, char *errbuf, size_t errlen)
{
    (void)f, (void)sale_id, (void)window_ms, (void)early_ms, (void)wr_rate, (void)secret;
    (void)errbuf, (void)errlen;
    return 0;
}

static int local_drop(gw_fair_t *f, const char *sale_id, bool sale_gone, bool *here,
                      bool *store_has, char *errbuf, size_t errlen)
{
    (void)f, (void)sale_id, (void)sale_gone, (void)here, (void)errbuf, (void)errlen;
    *store_has = false;
    return 0;
}

static void local_stats(gw_fair_t *f, void *o)
{
    (void)f, (void)o;
}

const gw_fair_lot_ops_t gw_fair__lot_local = {
    .open = local_open,
    .sale_load = gw_fair__room_load,
    .tick = local_tick,
    .entries_tick = local_entries_tick,
    .draw_tick = gw_fair__run_draw,
    .leftovers_tick = gw_fair__wl_tick,
    .enter_mark = local_enter_mark,
    .enter_unmark = local_enter_unmark,
    .lookup = local_lookup,
    .record = local_record,
    .conf_read = local_conf_read,
    .conf_put = local_conf_put,
    .drop = local_drop,
    .stats = local_stats,
};

/*---- a fleet: Redis through the fairness pool (gw_fair_fleet.c, gw_waitlist_fleet.c) ----*/

/* A fleet's room is Redis' (gw_room_fleet.c): no log of its own to read. */
static void redis_sale_load(gw_fair_sale_t *fs)
{
    (void)fs;
}

const gw_fair_lot_ops_t gw_fair__lot_redis = {
    .open = gw_fair__fleet_open,
    .sale_load = redis_sale_load,
    .tick = gw_fair__fleet_tick,
    .entries_tick = gw_fair__fleet_entries_tick,
    .draw_tick = gw_fair__fleet_tick_sale,
    .leftovers_tick = gw_fair__fleet_wl_tick,
    .enter_mark = gw_fair__fleet_enter_mark,
    .enter_unmark = gw_fair__fleet_enter_unmark,
    .lookup = gw_fair__fleet_lookup,
    .record = gw_fair__fleet_record,
    .conf_read = gw_fair__fleet_conf_refresh,
    .conf_put = gw_fair__fleet_conf_put,
    .drop = gw_fair__fleet_drop,
    .stats = gw_fair__fleet_stats,
};
