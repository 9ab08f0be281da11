/*
 * Fleet mode: see gw_fleet.h. This first version covers one gateway per
 * Redis (no membership yet): every call is a no-op.
 */
#include "gateway/gw_fleet.h"
#include "gateway/gw_internal.h"

int gw_fleet_start(struct gw_server *srv, char *errbuf, size_t errlen)
{
    (void)srv;
    (void)errbuf;
    (void)errlen;
    return 0;
}

void gw_fleet_stop(struct gw_server *srv)
{
    (void)srv;
}

int gw_fleet_publish_limits(struct gw_server *srv, char *errbuf, size_t errlen)
{
    (void)srv;
    (void)errbuf;
    (void)errlen;
    return 0;
}

void gw_fleet_stats(struct gw_server *srv, void *json_obj)
{
    (void)srv;
    (void)json_obj;
}
