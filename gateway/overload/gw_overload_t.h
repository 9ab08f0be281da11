#ifndef GW_OVERLOAD_T_H
#define GW_OVERLOAD_T_H

/*
 * The overload control's types that the transport does not see: the worker's
 * prepared 503s, held behind w->ol_cache.
 */

#include "gateway/base/gw_types.h"

#include <stdbool.h>

/* Prepared 503 answers per worker: reasons x messages x Retry-After values
 * (3 by default); a wider Retry-After range builds the rest per request. */
#define GW_OL_CACHE 64

/* The overload control's part of a worker (gateway/overload/gw_overload.c):
 * prepared 503 overloaded answers, one per (reason, message, degraded,
 * Retry-After), so a shed crowd costs no response building. */
typedef struct gw_worker_ol_cache {
    struct {
        gw_ol_reason_t reason;
        const char *msg;
        unsigned retry;
        bool degraded;
        gw_prep_t *resp;
    } entry[GW_OL_CACHE];
    unsigned n;
} gw_worker_ol_cache_t;

#endif
