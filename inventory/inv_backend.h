/*
 * Private to inventory/: the backend vtable and the local sale view shared by
 * every backend. Other modules must include inventory/inv.h only.
 */
#ifndef INV_BACKEND_H
#define INV_BACKEND_H

#include "inventory/inv.h"

#include <pthread.h>
#include <stdatomic.h>

/* The local view of a sale; fields are atomics so workers read without locks. */
struct inv_sale {
    char sale_id[INV_SALE_ID_MAX + 1];
    _Atomic int64_t stock_total;
    _Atomic int64_t stock_left;
    _Atomic int64_t accepted_units;
    _Atomic int64_t accepted_orders;
    _Atomic uint32_t per_user_limit;
    _Atomic int64_t starts_at_ms;
    _Atomic int64_t ends_at_ms;
    _Atomic uint64_t version;
    /* The seqlock over the fields inv__sale_publish writes: odd while a
     * publisher (one at a time) writes them; readers retry until they saw
     * the same even value before and after. */
    _Atomic uint32_t seq;
    atomic_bool sold_out;
    void *backend; /* the backend's per-sale state */
    struct inv_sale *dead_next; /* deleted: on inv->dead until inv_close */
};

typedef struct inv_ops {
    const char *name;
    unsigned caps; /* INV_CAP_* */
    int (*open)(inv_t *inv, const char *url, char *errbuf, size_t errlen);
    void (*close)(inv_t *inv);
    int (*worker_open)(inv_t *inv, struct uv_loop_s *loop, inv_worker_t *w);
    void (*worker_close)(inv_worker_t *w);
    /* optional: inv_worker_inflight (NULL: 0) */
    size_t (*worker_inflight)(inv_worker_t *w);
    int (*reserve)(inv_worker_t *w, inv_reserve_req_t *req);
    /* optional: inv_flush (sends what the loop iteration queued) */
    void (*flush)(inv_worker_t *w);
    /* optional: inv_prefetch's hint */
    void (*prefetch)(inv_worker_t *w, inv_sale_t *sale, const char *user_id);
    int (*sale_put)(inv_t *inv, const inv_sale_def_t *def, inv_sale_info_t *out, char *errbuf,
                    size_t errlen);
    int (*restock)(inv_t *inv, const char *sale_id, int64_t add, const char *key,
                   inv_sale_info_t *out, char *errbuf, size_t errlen);
    int (*sale_get)(inv_t *inv, const char *sale_id, inv_sale_info_t *out);
    /* giveback: inv_giveback (a backend without claims releases as inv_release) */
    int (*release)(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                   const char *order_id, bool giveback);
    /* raw_key_fp: inv_reserve_req_t.raw_key_fp's meaning (0: unknown) */
    int (*replay)(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                  const char *order_id, const char *idem_key, uint32_t raw_key_fp);
    /* optional: inv_reserve_once (NULL: reserve; a backend of one gateway, whose
     * lottery finds its winners in the spool) */
    int (*reserve_once)(inv_worker_t *w, inv_reserve_req_t *req);
    /* optional: inv_claim (NULL: a backend of one gateway, nothing to claim) */
    int (*claim)(inv_worker_t *w, inv_reserve_req_t *req);
    /* optional: inv_sale_key_may_hold (NULL: true, the key is looked up) */
    bool (*key_may_hold)(inv_t *inv, const inv_sale_t *sale, uint32_t raw_key_fp);
    int (*user_units)(inv_t *inv, const char *sale_id, const char *user_id, uint32_t *out);
    int (*order_user)(inv_t *inv, const char *sale_id, const char *order_id, char *user_out);
    /* Deletes an ended sale: 0, CM_ENOTFOUND, CM_ECONFLICT (not ended; reason in errbuf). */
    int (*sale_delete)(inv_t *inv, const char *sale_id, int64_t now_ms, char *errbuf,
                       size_t errlen);
} inv_ops_t;

struct inv {
    const inv_ops_t *ops;
    void *backend;
    char *data_dir;
    uint32_t max_sales;
    pthread_rwlock_t sales_lock; /* guards the sale map (not the sales' fields) */
    inv_sale_t **sales;          /* open-addressing map, capacity 2 * max_sales */
    uint32_t sales_cap, nsales;
    inv_sale_t *dead; /* deleted sales: workers may still hold a pointer; freed at close */
    _Atomic uint64_t removals; /* sales taken out of the map: inv_sale_memo_t checks it */
    _Atomic uint64_t additions; /* sales put into the map: inv_sale_memo_t's miss checks it */
    uint32_t redis_pool, redis_timeout_ms, redis_batch; /* inv_opts_t: 0 = the URL's */
    uint64_t max_held_orders;              /* inv_opts_t: memory backend's cap */
    char redis_password[256];
};

struct inv_worker {
    inv_t *inv;
    struct uv_loop_s *loop;
    void *backend;
    inv_orphan_fn orphan; /* set for worker_close by inv_worker_close_orphans */
    void *orphan_ctx;
};

extern const inv_ops_t inv__mem_ops;
extern const inv_ops_t inv__redis_ops;

/* Finds or creates the local view (admin and sync paths). NULL when max_sales is reached. */
inv_sale_t *inv__sale_get_or_create(inv_t *inv, const char *sale_id);
/* Takes a sale out of the map (a deleted sale); the view stays allocated until inv_close. */
void inv__sale_remove(inv_t *inv, const char *sale_id);
/* The rule for deleting a sale: 0 if it has ended, else CM_ECONFLICT with why. */
int inv__sale_deletable(const inv_sale_info_t *info, int64_t now_ms, char *errbuf, size_t errlen);
/* Copies a backend's truth into the local view and sets the sold-out flag,
 * under the sale's seqlock; publishers (admin PUT, the sync thread) take
 * turns on one lock. Thread-safe. */
void inv__sale_publish(inv_sale_t *sale, const inv_sale_info_t *info);

#endif
