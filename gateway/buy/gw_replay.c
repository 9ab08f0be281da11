/*
 * The start-up replay and compensation, cores without I/O (gw_replay.h).
 *
 * The replay: every record of the spool, from its start, restores an order
 * (the inventory's hold, the order table) or a release of one. Compensation:
 * a failed or cancelled order's units go back exactly once (inv_release is
 * once per order id), and the order is final only after they did.
 */
#include "gateway/buy/gw_replay.h"

#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int gw_units_release(inv_t *inv, const oq_order_t *o)
{
    /* the mark is the person's (oq_order_person), not the account's */
    const char *who = oq_order_person(o);
    if (o->giveback)
        return inv_giveback(inv, o->sale_id, who, o->qty, o->order_id);
    int rc = inv_release(inv, o->sale_id, who, o->qty, o->order_id);
    /* an outcome that named the account alone (a settlement before the person
     * member) of an order held under its person: the order's holder, by its id */
    if (rc == CM_ENOTFOUND && !o->person[0] && o->user_id[0])
        rc = inv_release(inv, o->sale_id, "", o->qty, o->order_id);
    return rc;
}

bool gw_release_ok(const oq_order_t *o, int rc)
{
    return rc == 0 || rc == CM_ENOTFOUND || (o->giveback && rc == CM_ECONFLICT);
}

int gw_replay_one(const oq_rec_t *rec, void *arg)
{
    gw_replay_ctx_t *rc = arg;
    /* planted: the first record of every segment but the first is skipped */
    bool seg_first = rc->last_seg != rec->pos.seg + 1;
    bool skip = CM_PLANT(REPLAY_SKIP_SEG_FIRST) && seg_first && rc->last_seg != 0;
    rc->last_seg = rec->pos.seg + 1;
    if (skip)
        return 0;
    if (rec->type == OQ_REC_ORDER) {
        const oq_order_t *o = rec->order;
        /* the per-user mark is the person's (inv.h); the account reads the order */
        inv_replay_keyed(rc->inv, o->sale_id, oq_order_person(o), o->qty, o->order_id,
                         o->idem_key, o->key_fp);
        rc->book->put(rc->book->ud, o);
        if (rc->on_order)
            rc->on_order(rc->ud, o);
        /* With the embedded broker a record is released only once settlement
         * published its outcome; a failure comes later as a release event. */
        if (rc->settled_before_release && oq_pos_cmp(rec->pos, rc->released) < 0)
            rc->book->set_status(rc->book->ud, o->order_id, NULL, OQ_STATUS_SETTLED, NULL);
        uint64_t id;
        if (cm_id_parse(o->order_id, strlen(o->order_id), &id) == 0 &&
            cm_id_node(id) == rc->node_id && id > rc->max_id)
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
            int rel = gw_units_release(rc->inv, &o);
            if (CM_PLANT(REPLAY_RELEASE_FAILURE_DROPPED) && rel < 0)
                rel = CM_ENOTFOUND; /* planted: a failed release taken as done before */
            oq_order_t known;
            /* A give-back's order was never accepted here, so it has no status
             * to set; it is known only if a keyed retry claimed it here after,
             * and then it stays held (CM_ECONFLICT). */
            bool ours = !o.giveback && rc->book->get(rc->book->ud, o.order_id, &known);
            if (gw_release_ok(&o, rel) && ours)
                rc->book->set_status(rc->book->ud, o.order_id, NULL, o.status, reason);
            /* else e.g. Redis down at start: the shell's releaser retries it
             * (read from the spool: on disk) */
            o.type = OQ_MSG_ORDER;
            rc->on_release(rc->ud, &o, rel, ours ? (int)o.status : -1, reason);
        }
        rc->events++;
    }
    return 0;
}

bool gw_outcome_take(const gw_book_t *book, const oq_order_t *oc, oq_order_t *o)
{
    *o = *oc;
    o->type = OQ_MSG_ORDER;
    o->reason[0] = '\0';
    oq_order_t cur;
    bool known = book->get(book->ud, oc->order_id, &cur);
    if (oc->status == OQ_STATUS_SETTLED) {
        /* planted: a settled outcome read again gives the units back */
        if (CM_PLANT(COMP_SETTLED_RELEASES) && known && cur.status == OQ_STATUS_SETTLED)
            return true;
        /* Never move a final (failed/cancelled) order back: outcomes are re-read at start. */
        if (!known || cur.status == OQ_STATUS_QUEUED)
            book->set_status(book->ud, oc->order_id, known ? NULL : o, OQ_STATUS_SETTLED, NULL);
        return false;
    }
    /* The outcome carries the user id (the status table keeps none): give back with it. */
    return oq_status_releases(oc->status);
}

int gw_comp_check(const gw_book_t *book, const char *order_id, const oq_order_t *o,
                  bool release_pending, oq_order_t *ord)
{
    oq_order_t cur;
    bool known = book->get(book->ud, order_id, &cur);
    if (CM_PLANT(COMP_FORGOTTEN_SKIPPED) && !known)
        return CM_ENOTFOUND; /* planted: the outcome's order ignored when the table forgot it */
    if (o)
        *ord = *o;
    else if (known)
        *ord = cur;
    else
        return CM_ENOTFOUND;
    if (known && oq_status_releases(cur.status))
        return 1; /* final only once the units went back */
    /* A pending give-back may end refused (a claimed order: a keyed retry was
     * accepted with it), so a cancel goes on beside it: the release is
     * exactly once per order id, whichever comes first. */
    if (release_pending)
        return 1; /* being given back; the releaser marks it final */
    ord->giveback = false;
    return 0;
}

int gw_comp_release(inv_t *inv, const gw_book_t *book, const oq_order_t *ord, oq_status_t st,
                    const char *reason)
{
    /* Release first, final after: inv_release is exactly once per order id, so
     * a re-delivered outcome may call it again; a final order whose release
     * failed would be taken as done and its units lost. */
    int rc = gw_units_release(inv, ord);
    if (CM_PLANT(COMP_RELEASE_FAILURE_FINAL) && rc < 0)
        rc = 0; /* planted: a failed release taken as done */
    if (!gw_release_ok(ord, rc))
        return rc;
    book->set_status(book->ud, ord->order_id, ord, st, reason);
    return rc == 0 ? 0 : 1;
}

void gw_release_event_fill(oq_order_t *ev, const oq_order_t *o, oq_status_t st,
                           const char *reason, bool giveback, int64_t at_ms)
{
    *ev = *o;
    ev->type = OQ_MSG_RELEASE;
    ev->giveback = giveback;
    ev->status = st;
    ev->at_ms = at_ms;
    ev->accepted_at_ms = 0;
    ev->idem_key[0] = '\0';
    snprintf(ev->reason, sizeof(ev->reason), "%s", reason ? reason : "");
}
