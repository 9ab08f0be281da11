/*
 * The start-up replay: every record of the spool, from its start, restores an
 * order (the inventory's hold, the status table) or a release of one.
 */
#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_identity.h"

#include <inttypes.h>
#include <string.h>

int gw_replay_one(const oq_rec_t *rec, void *arg)
{
    gw_replay_ctx_t *rc = arg;
    gw_server_t *srv = rc->srv;
    if (rec->type == OQ_REC_ORDER) {
        const oq_order_t *o = rec->order;
        /* the per-user mark is the person's (inv.h); the account reads the order */
        inv_replay_keyed(srv->inv, o->sale_id, oq_order_person(o), o->qty, o->order_id,
                         o->idem_key, o->key_fp);
        gw_orders_put(srv->orders, o);
        gw_identity_order_put(srv, o->order_id, o->user_id);
        /* With the embedded broker a record is released only once settlement
         * published its outcome; a failure comes later as a release event. */
        if (rc->settled_before_release && oq_pos_cmp(rec->pos, rc->released) < 0)
            gw_orders_set_status(srv->orders, o->order_id, NULL, OQ_STATUS_SETTLED, NULL);
        uint64_t id;
        if (cm_id_parse(o->order_id, strlen(o->order_id), &id) == 0 &&
            cm_id_node(id) == srv->node_id && id > rc->max_id)
            rc->max_id = id;
        rc->orders++;
    } else if (rec->type == OQ_REC_EVENT) {
        oq_order_t o;
        char why[160];
        if (oq_order_decode(rec->event, rec->event_len, &o, why, sizeof(why)) != 0) {
            cm_log_error("gw", "spool event unreadable, skipped",
                         "seg=%" PRIu64 " off=%" PRIu64 " reason=\"%s\"", rec->pos.seg,
                         rec->pos.off, why);
        } else if (o.type == OQ_MSG_RELEASE) {
            const char *reason = o.reason[0] ? o.reason : NULL;
            int rel = gw_release_units(srv, &o);
            oq_order_t known;
            /* A give-back's order was never accepted here, so it has no status
             * to set; it is known only if a keyed retry claimed it here after,
             * and then it stays held (CM_ECONFLICT). */
            bool ours = !o.giveback && gw_orders_get(srv->orders, o.order_id, &known);
            if (rel == 0 || rel == CM_ENOTFOUND || (o.giveback && rel == CM_ECONFLICT)) {
                if (ours)
                    gw_orders_set_status(srv->orders, o.order_id, NULL, o.status, reason);
            } else { /* e.g. Redis down at start: the releaser retries */
                o.type = OQ_MSG_ORDER;
                gw_releaser_push(srv, &o, ours ? (int)o.status : -1, reason,
                                 NULL); /* read from the spool: on disk */
            }
        }
        rc->events++;
    }
    return 0;
}
