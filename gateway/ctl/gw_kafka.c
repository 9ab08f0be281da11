/*
 * The gateway's side of the order queue: the relay that takes spooled orders
 * to Kafka, and the consumer callbacks that bring every order and every
 * settlement outcome back, so GET /v1/orders/{id} answers queued, settled,
 * failed or cancelled on any gateway, and failed or cancelled orders give
 * their units back (compensation, exactly once: gw_compensate + the
 * inventory's release-by-order-id).
 *
 * kafka.brokers "none" runs without Kafka: the spool is the queue (read it
 * with flashgate-spool), and an operator cancel compensates at once.
 */
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_identity.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"
#include "queue/oq_relay.h"

#include <jansson.h>
#include <string.h>

static void on_order(const oq_order_t *o, void *ud)
{
    gw_server_t *srv = ud;
    gw_orders_put(srv->stores.orders, o);
    /* Every gateway that reads the order's status knows its buyer too. */
    gw_identity_order_put(srv, o->order_id, o->user_id);
}

static bool release_pending(const char *order_id, void *ud)
{
    return gw_releaser_pending(ud, order_id, true);
}

static void on_outcome(const oq_order_t *oc, void *ud)
{
    gw_server_t *srv = ud;
    oq_order_t o;
    gw_book_t book;
    gw_server_book(srv, &book);
    if (gw_outcome_take(&book, oc, &o))
        gw_compensate(srv, oc->order_id, &o, oc->status, oc->reason);
}

int gw_kafka_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    const gw_config_t *c = srv->cfg;
    if (strcmp(c->kafka_brokers, "none") == 0) {
        cm_log_warn("gw", "kafka.brokers=none: orders stay in the spool (no relay)", NULL);
        return 0;
    }
    bool rebuilt = inv_caps(srv->stores.inv) & INV_CAP_REBUILT_FROM_SPOOL;
    oq_relay_opts_t o = {
        .brokers = c->kafka_brokers,
        .topic = c->kafka_topic,
        .outcomes_topic = c->kafka_outcomes_topic,
        .properties = c->kafka_properties,
        .data_dir = c->data_dir,
        .node_id = srv->node.id,
        .spool = srv->stores.spool,
        .embedded_release_on_settle = true,
        /* An inventory rebuilt from the spool at start needs the segments kept. */
        .release_deletes = !rebuilt,
        .consume = true,
        .on_order = on_order,
        .on_outcome = on_outcome,
        .release_pending = release_pending,
        .cb_ud = srv,
    };
    int rc = oq_relay_open(&srv->stores.relay, &o, errbuf, errlen);
    if (rc)
        return rc;
    cm_log_info("gw", "order relay started", "brokers=%s topic=%s outcomes_topic=%s",
                oq_relay_bootstrap(srv->stores.relay), c->kafka_topic, c->kafka_outcomes_topic);
    return 0;
}

void gw_kafka_stop(gw_server_t *srv)
{
    if (srv->stores.relay) {
        oq_relay_close(srv->stores.relay, 5000);
        srv->stores.relay = NULL;
    }
}

int gw_kafka_broker_set_down(gw_server_t *srv, bool down)
{
    oq_embedded_t *e = srv->stores.relay ? oq_relay_embedded(srv->stores.relay) : NULL;
    if (!e)
        return CM_ENOTFOUND;
    cm_log_warn("gw", down ? "embedded broker taken down (fault injection)"
                           : "embedded broker back up",
                NULL);
    return oq_embedded_set_down(e, down);
}

int gw_kafka_broker_set_rtt(gw_server_t *srv, int rtt_ms)
{
    oq_embedded_t *e = srv->stores.relay ? oq_relay_embedded(srv->stores.relay) : NULL;
    return e ? oq_embedded_set_rtt(e, rtt_ms) : CM_ENOTFOUND;
}

void gw_kafka_stats(gw_server_t *srv, void *json_obj)
{
    if (!srv->stores.relay)
        return;
    oq_relay_stats_t s;
    oq_relay_stats(srv->stores.relay, &s);
    json_object_set_new(
        json_obj, "relay",
        json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "bootstrap",
                  oq_relay_bootstrap(srv->stores.relay), "embedded", s.embedded,
                  "unreleased_records", (json_int_t)s.spool_unreleased_records, "unreleased_bytes",
                  (json_int_t)s.spool_unreleased_bytes, "inflight", (json_int_t)s.inflight,
                  "oldest_unacked_age_ms", (json_int_t)s.oldest_unacked_age_ms, "awaiting_outcome",
                  (json_int_t)s.awaiting_outcome, "produced", (json_int_t)s.produced, "delivered",
                  (json_int_t)s.delivered, "errors", (json_int_t)s.errors, "resent",
                  (json_int_t)s.resent, "retention_resent", (json_int_t)s.retention_resent,
                  "released_records", (json_int_t)s.released_records, "orders_seen",
                  (json_int_t)s.orders_seen, "outcomes_seen", (json_int_t)s.outcomes_seen,
                  "invalid_messages", (json_int_t)s.invalid));
}
