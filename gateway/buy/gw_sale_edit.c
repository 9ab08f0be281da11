/*
 * The admin's sale edits as a core (gw_sale_edit.h).
 */
#include "gateway/buy/gw_sale_edit.h"

#include "common/cm_err.h"

#include <stdio.h>

int gw_sale_window_check(const inv_sale_def_t *d, int64_t fair_window_ms, char *why, size_t len)
{
    if (d->starts_at_ms && d->ends_at_ms && d->ends_at_ms <= d->starts_at_ms) {
        snprintf(why, len, "ends_at must be after starts_at");
        return CM_EINVAL;
    }
    if (fair_window_ms > 0 && !d->starts_at_ms) {
        snprintf(why, len, "fair_window_ms needs starts_at: the window opens at the start");
        return CM_EINVAL;
    }
    return 0;
}

int gw_sale_edit(inv_t *inv, const inv_sale_def_t *d, inv_sale_info_t *info, char *why,
                 size_t len)
{
    int rc = gw_sale_window_check(d, 0, why, len);
    if (rc != 0)
        return rc;
    return inv_sale_put(inv, d, info, why, len);
}
