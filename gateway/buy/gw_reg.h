/*
 * Registration (verified-fan style), optional per sale with a start-window
 * lottery (gw_fair.h).
 *
 * A sale with registration_opens_at/registration_closes_at takes
 * registrations of PERSONS (gw_req_buy_t.person: the verified token's person
 * claim) in [opens, closes), which ends no later than the lottery's window
 * opens (starts_at - fair_early_ms); its lottery then takes entries only
 * from registered persons (403 not_registered otherwise), so the draw is
 * over registered persons only. A person registers once, whatever account
 * they use; a registration again answers 200 with the same body.
 *
 * Where the set lives: one node: in memory (a table per sale, at most
 * sales.max_registrations persons), every new person appended to
 * <data_dir>/fair/<sale>.reg (a journal, common/cm_journal.h) with one
 * write(2) before the answer, and with spool.durability fsync an fdatasync
 * too (gw_reg_sync, a group commit off the worker loop), read back at start.
 * A Redis fleet: a ZSET per sale in the lottery's hash slot
 * (gw_fair_redis_reg_add: one script, one round trip; the rank is the score, so the
 * export pages exactly), and the entry's check is one ZSCORE. Those Redis
 * calls block the worker's loop for one round trip (the worker loops' pool
 * of connections, gw_fair_pool.c): registration runs for days before a sale,
 * and an entry pays one round trip once per person (a second buy of an
 * entrant is answered from its entry). A Redis that does not answer holds the
 * loop at most inventory.redis_timeout, then such calls answer 503 at once
 * for about a second (the pool's fail-fast window).
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
 * Registers person for the sale, the sale's machine deciding its window and
 * its cap (sales.max_registrations; the caller checked the window,
 * gw_reg_window, and a window closed since is GW_REG_SHUT): a
 * gw_reg_outcome_t (gw_reg_core.h), or a negative cm_err_t
 * (CM_EIO: one node's log write failed; a fleet's Redis error) with a reason
 * in why. One node's registration is appended to its log (one write(2))
 * before this returns; a fleet's is one round trip on the worker loops'
 * pool. *sync true (one node in fsync durability): the outcome is not an
 * answer yet; gw_reg_sync gives the answer once the log is durable. Loop thread.
 */
int gw_reg_add(gw_server_t *srv, const char *sale_id, const char *person, bool *sync, char *why,
               size_t whylen);

/*
 * The answer of a registration gw_reg_add held (*sync) with outcome held: the
 * sale's log fdatasync'd through its length now, one fdatasync for every
 * registration written before it (a group commit: a call that finds one
 * running waits for it, or the next). held, or CM_EIO (503: retry; the person
 * stays in the set, the retry's own sync decides). Thread-safe; blocks on the
 * disk: off the worker loops.
 */
int gw_reg_sync(gw_server_t *srv, const char *sale_id, int held);

/*
 * The buy path's check of a lottery entry (fs: the sale's lottery, a
 * gw_fair_sale_t): true when the sale has no registration or gw_req_buy(r)->person is
 * registered; else false with r->resp set (403 not_registered, or 503 when
 * the fleet's Redis cannot tell). Loop thread of r->w.
 */
bool gw_reg_entry_ok(gw_req_t *r, void *fs);

/* A sale's registration window (0, 0: none). Thread-safe. */
void gw_reg_conf_get(gw_server_t *srv, const char *sale_id, int64_t *opens_ms, int64_t *closes_ms);

/*
 * Admin: sets a sale's registration window (0, 0 removes it), checked by the
 * caller (gw_reg_window_check); the sale's lottery must exist (configured
 * first). Persisted (fair.json; in a fleet the fleet's lottery
 * configuration too) before it returns. Returns 0, CM_ENOTFOUND (no
 * lottery), CM_EIO or CM_EBACKEND with a reason. Admin thread.
 */
int gw_reg_configure(gw_server_t *srv, const char *sale_id, int64_t opens_ms, int64_t closes_ms,
                     char *errbuf, size_t errlen);

/* How many persons registered for the sale (*n). 0 or CM_EBACKEND with a reason. Admin thread. */
int gw_reg_count(gw_server_t *srv, const char *sale_id, long long *n, char *errbuf, size_t errlen);

/*
 * GET /admin/v1/sales/{id}/registrations: {"count","persons","next_cursor"}
 * (a json_t *, new reference) with up to limit persons in registration order
 * from cursor; next_cursor null at the end. NULL with *rc CM_ENOTFOUND (no
 * registration) or CM_EBACKEND and a reason. Admin thread.
 */
void *gw_reg_export_json(gw_server_t *srv, const char *sale_id, uint64_t cursor, uint64_t limit,
                         int *rc, char *errbuf, size_t errlen);

#endif
