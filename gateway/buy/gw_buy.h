/*
 * gateway/buy: the sale routes (gw_buy.c: buy, order, sale), the releaser
 * (gw_release.c: units given back and compensation), the start-window
 * lottery and waiting room (gw_fair.h) and their routes (gw_fair_routes.h),
 * and the accept sequence through which their winners become orders
 * (gw_accept.h). Uses gateway/base, edge and overload; never gateway/proxy.
 */
#ifndef GW_BUY_H
#define GW_BUY_H

#include "gateway/base/gw_types.h"
#include "gateway/buy/gw_buy_t.h"
#include "gateway/buy/gw_replay.h"

/* The public routes (gw_buy.c). Fill req->resp, or hold req (return true if held). */
bool gw_buy_handle(gw_req_t *req);
/*
 * Validates the buy body r->body (NUL-terminated, r->body_len bytes): fills
 * gw_req_buy(r)->res.user_id and gw_req_buy(r)->res.qty and returns true, or returns false with the
 * 400 in r->resp. Pure (no socket or server state); thread-safe on r.
 */
bool gw_buy_parse_body(gw_req_t *r);
/* Its two halves (the fuzz target compares them): the in-place reading of the usual
 * body, true only when it is certain (user_id NUL-terminated, "" when user_optional
 * and absent; qty set), else false with nothing decided; and jansson's, which takes
 * any body and words the 400s. user_optional: the body of a buy with identity on,
 * whose user_id may be left out. */
bool gw_buy_body_fast(const char *body, size_t len, bool user_optional, char *user_id,
                      uint32_t *qty);
bool gw_buy_parse_body_json(gw_req_t *r, bool user_optional);
/* An Idempotency-Key: 1..INV_IDEM_KEY_MAX visible ASCII characters. Thread-safe. */
bool gw_idem_key_valid(const char *k, size_t len);
/* The worker's prepared sold-out answer for sale, or NULL. Loop thread only. */
gw_prep_t *gw_sold_out_response(gw_worker_t *w, const inv_sale_t *sale);
/*
 * The worker's prepared 425 sale_not_started answer for sale (named sale_id in
 * its message), saying retry_after and Retry-After `retry` seconds: one per
 * sale, made again when `retry` changes (once a second while a crowd waits);
 * past 32 sales, a slot is taken round-robin. Never NULL; the worker owns it
 * (gw_buy_prep_free). Loop thread only.
 */
gw_prep_t *gw_not_started_response(gw_worker_t *w, const inv_sale_t *sale, const char *sale_id,
                                   uint64_t retry);
/* Frees the worker's prepared sold-out, not-started and unknown-sale answers. Loop thread,
 * or after it ended. */
void gw_buy_prep_free(gw_worker_t *w);
/* Once per loop iteration: starts the fsync of the waiting accepts (group commit). */
void gw_buy_loop_tick(gw_worker_t *w);
void gw_order_handle(gw_req_t *req);
void gw_sale_handle(gw_req_t *req);
/* Fills the sale JSON shown by GET /v1/sales/{id} (public) or the admin API (exact). */
size_t gw_sale_json(const inv_sale_info_t *s, bool admin, int64_t now_ms, char *buf, size_t len);
/*
 * The order a reservation becomes: rq's order id, Idempotency-Key and
 * quantity, the account `user` (1..INV_USER_ID_MAX id) as its user_id and
 * rq's user (the person whose per-user mark it holds, inv.h) as its person,
 * of sale_id (an array of INV_SALE_ID_MAX + 1 bytes), status queued,
 * accepted at accepted_at_ms by node_id; every other field zero. The buy
 * path and the lottery's winners build their orders here. Pure.
 */
void gw_order_of_reserve(oq_order_t *o, const inv_reserve_req_t *rq, const char *user,
                         const char sale_id[INV_SALE_ID_MAX + 1], int64_t accepted_at_ms,
                         uint32_t node_id);
/* A sale's state as the API names it ("state" of GET /v1/sales/{id}). */
#define GW_SALE_STATES(XX)                                                                         \
    XX(UPCOMING, "upcoming")                                                                       \
    XX(LIVE, "live")                                                                               \
    XX(SOLD_OUT, "sold_out")                                                                       \
    XX(ENDED, "ended")
typedef enum {
#define XX(n, s) GW_SALE_##n,
    GW_SALE_STATES(XX)
#undef XX
        GW_SALE_STATE_COUNT
} gw_sale_state_t;
/* The state of s at now_ms: ended, else upcoming, else sold out, else live. Pure. */
gw_sale_state_t gw_sale_state(const inv_sale_info_t *s, int64_t now_ms);
/* "upcoming", "live", "sold_out", "ended". */
const char *gw_sale_state_name(gw_sale_state_t st);

/* Wakes the relay after spool appends (once per loop iteration). Thread-safe. */
void gw_buy_relay_notify(gw_server_t *srv);

/*
 * Compensation of a failed or cancelled order: records the release durably,
 * gives the units back (exactly once per order id), and only then marks the
 * order final; a release that fails is retried by the releaser, which marks it
 * final when done. Returns 0, 1 if the order was final already, or
 * CM_ENOTFOUND. May block (a Redis round trip): never on a worker loop.
 */
int gw_compensate(gw_server_t *srv, const char *order_id, const oq_order_t *o,
                  oq_status_t st, const char *reason);
/*
 * Operator cancel of a known order: returns 0 when the cancel was issued (it
 * completes through settlement, or at once without Kafka, by gw_compensate),
 * 1 when the order was already cancelled or failed (nothing changes), or a
 * negative cm_err_t. Admin threads.
 */
int gw_order_cancel(gw_server_t *srv, const oq_order_t *ord, const char *reason);
/*
 * Gives back the units of an order that was reserved but never accepted (its
 * spool append failed): writes a "release" EVENT to the spool (replayed at
 * start; the relay keeps it until the release is done) and queues the release
 * to the releaser. Never blocks beyond one write(2). Thread-safe: worker loops.
 */
void gw_release_unaccepted(gw_server_t *srv, const oq_order_t *o, const char *why);

/* The start-up replay's shell: ctx's inventory, order table (in *book, which
 * must outlive the scan) and actions are srv's (the buyer's identity noted, a
 * failed release queued to the releaser). Single-threaded init. */
void gw_replay_init(gw_server_t *srv, gw_replay_ctx_t *ctx, gw_book_t *book,
                    bool settled_before_release);
/* The order table as the cores see it (gw_replay.h): srv->stores.orders. Thread-safe
 * (gw_orders is). */
void gw_server_book(gw_server_t *srv, gw_book_t *out);

/*
 * The releaser (gw_release.c): one thread that calls inv_release for queued
 * orders until it returns 0 or CM_ENOTFOUND, backing off 50 ms .. 2 s, then
 * sets final_status (an oq_status_t, or -1 for none). With `commit_to` (the
 * end of a release's spool event that the caller appended and could not wait
 * for: a worker loop's give-back; NULL for none), it first makes that event
 * durable (oq_spool_commit_to: in fsync durability a group-commit fdatasync).
 * start/stop: single-threaded init and shutdown; push/pending/stats:
 * thread-safe, never block beyond a short mutex.
 */
int gw_releaser_start(gw_server_t *srv, char *errbuf, size_t errlen);
/* The releaser without its thread (the simulator's one thread, as oq_spool's `stepped`):
 * gw_releaser_step tries each queued release that is due once; stop as above. */
void gw_releaser_open_stepped(gw_server_t *srv);
void gw_releaser_step(gw_server_t *srv);
void gw_releaser_stop(gw_server_t *srv);
void gw_releaser_push(gw_server_t *srv, const oq_order_t *o, int final_status, const char *reason,
                      const oq_pos_t *commit_to);
/* true while a release for order_id is queued or running; a give-back
 * (oq_order_t.giveback) counts only if `givebacks`: one may end refused
 * (CM_ECONFLICT, a claimed order), so it does not stand for a cancel. */
bool gw_releaser_pending(gw_server_t *srv, const char *order_id, bool givebacks);
void gw_releaser_stats(gw_server_t *srv, uint64_t *pending, uint64_t *done, uint64_t *retries);

/* The admin routes of sales (gw_sale_admin.c; fairness's: gw_fair_routes.h):
 * tables of *n routes the admin listener assembles at start. */
struct gw_admin_route;
/* Every sale as the admin API lists it, with its eligibility rule (a new
 * jansson array). Thread-safe. */
void *gw_sales_json(gw_server_t *srv);
const struct gw_admin_route *gw_sale_admin_routes(size_t *n);
/* The operator's cancel of an order (gw_order_admin.c). */
const struct gw_admin_route *gw_order_admin_routes(size_t *n);

#endif
