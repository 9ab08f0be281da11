/*
 * Opening an inventory: picks the backend from the URL. The one file that
 * names the backends' tables of ops (inv_backend.h), above both backends and
 * the core (inv.c), so that the core, which every backend calls, calls none.
 */
#include "inventory/inv_backend.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_url.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int inv_open(inv_t **out, const char *url, const char *data_dir, uint32_t max_sales,
             char *errbuf, size_t errlen)
{
    inv_opts_t o = {.data_dir = data_dir, .max_sales = max_sales};
    return inv_open_opts(out, url, &o, errbuf, errlen);
}

int inv_open_opts(inv_t **out, const char *url, const inv_opts_t *opts, char *errbuf,
                  size_t errlen)
{
    const char *data_dir = opts->data_dir;
    uint32_t max_sales = opts->max_sales;
    cm_errbuf_set(errbuf, errlen, "%s", "");
    if (!out || !url) {
        cm_errbuf_set(errbuf, errlen, "inventory: no backend url");
        return CM_EINVAL;
    }
    *out = NULL;
    const inv_ops_t *ops;
    if (strcmp(url, "memory") == 0)
        ops = &inv__mem_ops;
    else if (cm_redis_url_is(url) || strncmp(url, "rediss://", 9) == 0)
        ops = &inv__redis_ops;
    else {
        cm_errbuf_set(errbuf, errlen, "inventory: unknown backend '%s' (want memory or redis://...)",
                url);
        return CM_EINVAL;
    }
    if (!ops->open) {
        cm_errbuf_set(errbuf, errlen, "inventory: %s backend not built", ops->name);
        return CM_EINVAL;
    }
    if (max_sales == 0 || max_sales > (1u << 20)) {
        cm_errbuf_set(errbuf, errlen, "inventory: max_sales=%u must be between 1 and %u", max_sales,
                1u << 20);
        return CM_EINVAL;
    }

    inv_t *inv = cm_xcalloc(1, sizeof(*inv));
    inv->ops = ops;
    inv->data_dir = data_dir && *data_dir ? cm_xstrdup(data_dir) : NULL;
    inv->redis_pool = opts->redis_pool;
    inv->redis_timeout_ms = opts->redis_timeout_ms;
    inv->redis_batch = opts->redis_batch;
    inv->max_held_orders = opts->max_held_orders;
    snprintf(inv->redis_password, sizeof(inv->redis_password), "%s",
             opts->redis_password ? opts->redis_password : "");
    inv->max_sales = max_sales;
    inv->sales_cap = 2 * max_sales;
    inv->sales = cm_xcalloc(inv->sales_cap, sizeof(*inv->sales));
    if (pthread_rwlock_init(&inv->sales_lock, NULL) != 0) {
        free(inv->sales);
        free(inv->data_dir);
        free(inv);
        cm_errbuf_set(errbuf, errlen, "inventory: rwlock init failed");
        return CM_ENOMEM;
    }
    int rc = ops->open(inv, url, errbuf, errlen);
    if (rc < 0) {
        /* The backend cleaned up its own state; the views it may have made go here. */
        inv->ops = NULL;
        inv_close(inv);
        return rc;
    }
    *out = inv;
    return 0;
}
