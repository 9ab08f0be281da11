/*
 * Registration (verified-fan style), optional per sale with a start-window
 * lottery: persons register in [opens, closes), and the lottery then takes
 * entries only from registered persons (403 not_registered). Where the set
 * lives and what each store makes durable before it answers: docs/design.md
 * "Registration".
 */
#ifndef GW_REG_H
#define GW_REG_H

#include "gateway/base/gw_types.h"
#include "gateway/buy/gw_reg_core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Whether a sale's registration settings are acceptable: both 0 (none), or
 * 0 < opens < closes <= lottery_opens_ms (the lottery window's opening,
 * starts_at - fair_early_ms) with a lottery (window_ms > 0). Returns 0, or
 * CM_EINVAL with the reason in errbuf. Pure.
 */
int gw_reg_window_check(int64_t opens_ms, int64_t closes_ms, int64_t window_ms,
                        int64_t lottery_opens_ms, char *errbuf, size_t errlen);

/* The page [*start, *end) of total persons from cursor (0 = the start) and limit. Pure. */
void gw_reg_page(uint64_t total, uint64_t cursor, uint64_t limit, uint64_t *start, uint64_t *end);

#define GW_REG_PAGE_MAX 1000

/*
 * The registration window [*opens_ms, *closes_ms) of a sale that takes
 * registrations (it has a lottery and a registration window); false when it
 * has none. Thread-safe.
 */
bool gw_reg_window(gw_server_t *srv, const char *sale_id, int64_t *opens_ms, int64_t *closes_ms);

/*
 * Registers person for the sale, the sale's machine deciding its window and cap:
 * a gw_reg_outcome_t (gw_reg_core.h), or a negative cm_err_t (CM_EIO: one node's
 * log write failed; a fleet's Redis error) with a reason in why. *sync true (one
 * node in fsync durability): not an answer yet; gw_reg_sync gives it once the log
 * is durable. Loop thread (a fleet's: one round trip on the worker loops' pool).
 */
int gw_reg_add(gw_server_t *srv, const char *sale_id, const char *person, bool *sync, char *why,
               size_t whylen);

/*
 * The answer of a registration gw_reg_add held (*sync) with outcome held, once
 * the sale's log is durable through its length now (a group commit): held, or
 * CM_EIO (503: retry; the person stays in the set, the retry's own sync
 * decides). Thread-safe; blocks on the disk: off the worker loops.
 */
int gw_reg_sync(gw_server_t *srv, const char *sale_id, int held);

/* The buy path's check of a lottery entry (fs: a gw_fair_sale_t): true when the sale has
 * no registration or the buyer's person registered; else false with r->resp set (403
 * not_registered, or 503 when the fleet's Redis cannot tell). Loop thread of r->w. */
bool gw_reg_entry_ok(gw_req_t *r, void *fs);

/* A sale's registration window (0, 0: none). Thread-safe. */
void gw_reg_conf_get(gw_server_t *srv, const char *sale_id, int64_t *opens_ms, int64_t *closes_ms);

/* Admin: sets a sale's registration window (0, 0 removes it; checked by the caller,
 * gw_reg_window_check), persisted before it returns. 0, CM_ENOTFOUND (no lottery),
 * CM_EIO or CM_EBACKEND with a reason. Admin thread. */
int gw_reg_configure(gw_server_t *srv, const char *sale_id, int64_t opens_ms, int64_t closes_ms,
                     char *errbuf, size_t errlen);

/* How many persons registered for the sale (*n). 0 or CM_EBACKEND with a reason. Admin thread. */
int gw_reg_count(gw_server_t *srv, const char *sale_id, long long *n, char *errbuf, size_t errlen);

/* GET /admin/v1/sales/{id}/registrations: up to limit persons in registration order
 * from cursor (a json_t *, new reference), or NULL with *rc CM_ENOTFOUND (no
 * registration) or CM_EBACKEND and a reason. Admin thread. */
void *gw_reg_export_json(gw_server_t *srv, const char *sale_id, uint64_t cursor, uint64_t limit,
                         int *rc, char *errbuf, size_t errlen);

#endif
