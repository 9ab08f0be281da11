/*
 * The gateway's side of the order queue. Until the Kafka relay is wired in,
 * the spool is the queue and an operator cancel compensates at once.
 */
#include "common/cm_err.h"
#include "gateway/gw_internal.h"

#include <jansson.h>

int gw__queue_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    (void)srv;
    (void)errbuf;
    (void)errlen;
    return 0;
}

void gw__queue_stop(gw_server_t *srv)
{
    (void)srv;
}

int gw__cancel_hook(gw_server_t *srv, const gw_order_t *ord, const char *reason)
{
    return gw_compensate(srv, ord->o.order_id, &ord->o, GW_ORDER_CANCELLED, reason);
}

void gw_server_stats_extra(gw_server_t *srv, void *json_obj)
{
    (void)srv;
    (void)json_obj;
}
