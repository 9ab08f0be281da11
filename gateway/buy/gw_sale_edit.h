/*
 * The admin's sale edits as a core: the rules a sale's definition must meet
 * before the inventory takes it (the window; the stock's rule, not below the
 * units held, is the inventory's own, inv_sale_put). The admin API
 * (gw_admin.c, which parses, audits and answers) and the simulator's admin
 * (sim/sim_world.c) both call it. No syscall, lock or clock inside.
 */
#ifndef GW_SALE_EDIT_H
#define GW_SALE_EDIT_H

#include "inventory/inv.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The window's rules: an end after the start (0: none), and a lottery window
 * (fair_window_ms > 0) only with a start, where it opens. Returns 0, or
 * CM_EINVAL with the reason in why. Pure.
 */
int gw_sale_window_check(const inv_sale_def_t *d, int64_t fair_window_ms, char *why, size_t len);

/*
 * A sale defined or edited: the window's rules (no lottery window), then the
 * inventory's put (which refuses a stock below the units held). Returns 0 and
 * *info (may be NULL), or a negative cm_err_t with the reason in why; on error
 * the sale is as it was. Thread-safe (the inventory's locks).
 */
int gw_sale_edit(inv_t *inv, const inv_sale_def_t *d, inv_sale_info_t *info, char *why,
                 size_t len);

#endif
