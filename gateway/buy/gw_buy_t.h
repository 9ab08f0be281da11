#ifndef GW_BUY_T_H
#define GW_BUY_T_H

/*
 * The buy path's types that no folder below it sees: the worker's part of the
 * buy path, which the worker (gateway/base/gw_types.h) holds behind w->buy,
 * and the request's, which follows the request in its allocation.
 */

#include "gateway/base/gw_types.h"
#include "inventory/inv.h"
#include "queue/oq_order.h"
#include "queue/oq_spool.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* The buy path's part of a worker (gateway/buy/gw_buy.c). */
typedef struct gw_worker_buy {
    inv_sale_memo_t sale_memo; /* the buy path's last sale (inv_sale_find_memo) */
    bool notify_relay; /* appends happened this iteration */
    /* The spool batch: reserved orders held until the end of the loop
     * iteration writes their records with one write(2) */
    gw_req_t *spool_wait, **spool_wait_tail;
    uint64_t spool_wait_bytes; /* their records' bound (oq_spool_order_bound): the room they hold */
    /* fsync group commit: requests whose record is written and waits for a sync */
    gw_req_t *sync_wait, **sync_wait_tail;
    oq_pos_t sync_wait_end; /* where their last record ends */
    bool sync_running;
    uv_work_t sync_work;
    /* the batch's admission claims: the rooms' fdatasync, run beside sync_work's */
    uv_work_t claim_work;
    unsigned sync_pending; /* works of the batch not yet finished (sync_after) */
    gw_req_t *sync_batch;
    oq_pos_t sync_upto; /* the batch's end: its sync waits for these records only */
    int sync_result;
    /* Prepared 410 sold_out answers, one per sale: 99% of a sale's crowd gets one. */
    struct {
        const inv_sale_t *sale;
        gw_prep_t *resp;
    } sold_out_cache[32];
    unsigned nsold_out;
    /* Prepared 425 sale_not_started answers, one per sale, each for the
     * Retry-After it says (whole seconds to the start): rebuilt when that
     * second changes; a sale past the 32 takes the slot not_started_next. */
    struct {
        const inv_sale_t *sale;
        uint64_t retry;
        gw_prep_t *resp;
    } not_started_cache[32];
    unsigned nnot_started, not_started_next;
    /* Registrations held for their log's fdatasync (fsync durability,
     * gw_fair_routes.c): those waiting, and the batch reg_work syncs */
    gw_req_t *reg_wait, *reg_batch;
    bool reg_running;
    uv_work_t reg_work;
    /* Prepared 404 unknown_sale answers, one per sale id asked for (a crowd
     * polling a sale not created yet asks for one id); past the 8 the slot
     * unknown_next is made again. */
    struct {
        char id[INV_SALE_ID_MAX + 1];
        gw_prep_t *resp;
    } unknown_cache[8];
    unsigned nunknown, unknown_next;
} gw_worker_buy_t;

/* The buy path's fields of a request: written before they are read, so a
 * request taken from the free list need not clear them. */
typedef struct gw_req_buy {
    inv_reserve_req_t res;
    /* The person behind res.user_id: identity.person_claim of the verified
     * token, else the user itself (header and none modes, a token without
     * the claim). Set by the identity step (gw_identity_check and
     * gw_identity_buy) and, with identity off, by the buy path after the
     * body's parse; read only after one of them. */
    char person[INV_USER_ID_MAX + 1];
    uint64_t adm_jti; /* the admission token this buy holds claimed (gw_buy.c), 0 = none */
    uint64_t adm_fp, adm_nonce; /* that claim's key fingerprint and nonce (gw_fair.h) */
    /* The verified token's eligibility facts (id_result_t.eligible and
     * created_at; 0 in header mode and without a token), set with person by
     * the identity step; read only after it (gw_elig_check). */
    uint32_t eligible;
    int64_t created_at;
    oq_order_t order;
    oq_pos_t spool_end; /* where the spool write that holds order's record ends (gw_buy.c) */
    int reg_held; /* a registration held for its log's sync: its outcome, then its answer */
} gw_req_buy_t;

/* A request as gw_http_req_new allocates it: the request first, so a
 * gw_req_t * points at one of these, then the buy path's fields. */
typedef struct gw_req_with_buy {
    gw_req_t r;
    gw_req_buy_t buy;
} gw_req_with_buy_t;

/* gw_req_buy(r): the buy path's fields of r (const when r is), which must be
 * the r of a gw_req_with_buy_t (every request of gw_http_req_new is): a
 * constant offset from r, as a field of r would be. */
static inline gw_req_buy_t *gw__req_buy(gw_req_t *r)
{
    return &((gw_req_with_buy_t *)(void *)r)->buy;
}
static inline const gw_req_buy_t *gw__req_buy_const(const gw_req_t *r)
{
    return &((const gw_req_with_buy_t *)(const void *)r)->buy;
}
#define gw_req_buy(r)                                                                              \
    _Generic((r), const gw_req_t *: gw__req_buy_const, default: gw__req_buy)(r)

#endif
