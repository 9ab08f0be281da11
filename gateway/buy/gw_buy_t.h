#ifndef GW_BUY_T_H
#define GW_BUY_T_H

/*
 * The buy path's types that no folder below it sees: the worker's part of the
 * buy path. The worker (gateway/base/gw_types.h) holds it behind w->buy.
 */

#include "gateway/base/gw_types.h"
#include "inventory/inv.h"
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
    /* Prepared 404 unknown_sale answers, one per sale id asked for (a crowd
     * polling a sale not created yet asks for one id); past the 8 the slot
     * unknown_next is made again. */
    struct {
        char id[INV_SALE_ID_MAX + 1];
        gw_prep_t *resp;
    } unknown_cache[8];
    unsigned nunknown, unknown_next;
} gw_worker_buy_t;

#endif
