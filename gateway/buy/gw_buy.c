/*
 * The buy path, POST /v1/sales/{sale}/orders, cheapest rejection first:
 *   1. overload guard (draining, too many waiting requests on this loop)
 *   2. sale state from the local view, which needs only the request head:
 *      unknown 404, sold out 410 from the local flag (a cached response, no
 *      backend round trip, no body parsing), not started 425, ended 410
 *   3. parse and validate the body (type and size were checked by gw_http.c;
 *      the usual two-member body is read in place, anything else by jansson)
 *   3b. DAGOR user priority under overload (gw_overload.c): the user id is in
 *      the body, so this runs right after the parse (a ~4 KiB cap, parsed in
 *      well under a microsecond, against the ~5 µs the TCP exchange costs anyway)
 *      and before anything that costs a dependency; the head-only checks
 *      (sale state, sold out) already ran and stay cheaper
 *   4. rate limits: user, IP, sale, global (a refusal consumes nothing)
 *   5. the inventory's atomic step (stock, per-user limit, idempotency key),
 *      within the adaptive concurrency limits of Redis and the spool's fsync:
 *      past them 503 overloaded at once, before Redis sees anything
 *   6. the durable spool record, before the answer: one write(2) per loop
 *      iteration for the orders reserved in it (spool_flush)
 *   7. 202 with the order id and its status URL
 * Plus GET /v1/orders/{id} and GET /v1/sales/{id}.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_drain.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_buy_core.h"
#include "gateway/buy/gw_elig.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_identity.h"
#include "gateway/buy/gw_rate_reply.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/overload/gw_ol.h"
#include "queue/oq_relay.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>


static const char *const sale_state_names[GW_SALE_STATE_COUNT] = {
#define XX(n, s) [GW_SALE_##n] = s,
    GW_SALE_STATES(XX)
#undef XX
};

void gw_order_of_reserve(oq_order_t *o, const inv_reserve_req_t *rq, const char *user,
                         const char sale_id[INV_SALE_ID_MAX + 1], int64_t accepted_at_ms,
                         uint32_t node_id)
{
    /* Every field, the ones an order does not use included: gw_req_buy(r)->order lies past
     * the part of a recycled request context that is cleared, and a field left
     * with a previous request's (or malloc's) bytes makes the codec refuse the
     * record (the spool write fails: 503). */
    memset(o, 0, sizeof(*o));
    o->type = OQ_MSG_ORDER;
    o->status = OQ_STATUS_QUEUED;
    memcpy(o->order_id, rq->order_id, sizeof(o->order_id));
    memcpy(o->sale_id, sale_id, sizeof(o->sale_id));
    snprintf(o->user_id, sizeof(o->user_id), "%s", user);
    oq_order_person_set(o, rq->user_id);
    memcpy(o->idem_key, rq->idem_key, sizeof(o->idem_key));
    o->key_fp = o->idem_key[0] ? inv_idem_fp_stamp(rq->raw_key_fp) : 0;
    o->qty = rq->qty;
    o->accepted_at_ms = accepted_at_ms;
    o->node_id = node_id;
}

const char *gw_sale_state_name(gw_sale_state_t st)
{
    return (unsigned)st < GW_SALE_STATE_COUNT ? sale_state_names[st] : "live";
}

gw_sale_state_t gw_sale_state(const inv_sale_info_t *s, int64_t now_ms)
{
    if (s->ends_at_ms && now_ms >= s->ends_at_ms)
        return GW_SALE_ENDED;
    if (s->starts_at_ms && now_ms < s->starts_at_ms)
        return GW_SALE_UPCOMING;
    if (s->stock_left <= 0)
        return GW_SALE_SOLD_OUT;
    return GW_SALE_LIVE;
}

static size_t put_time(char *buf, size_t len, int64_t ms)
{
    if (!ms)
        return (size_t)snprintf(buf, len, "null");
    char t[40];
    cm_time_format_rfc3339(ms, t, sizeof(t));
    return (size_t)snprintf(buf, len, "\"%s\"", t);
}

size_t gw_sale_json(const inv_sale_info_t *s, bool admin, int64_t now_ms, char *buf, size_t len)
{
    char st[48], en[48];
    put_time(st, sizeof(st), s->starts_at_ms);
    put_time(en, sizeof(en), s->ends_at_ms);
    int n = snprintf(buf, len,
                     "{\"sale_id\":\"%s\",\"state\":\"%s\",\"stock_total\":%lld,"
                     "\"stock_left\":%lld,\"per_user_limit\":%u,\"starts_at\":%s,\"ends_at\":%s",
                     s->sale_id, gw_sale_state_name(gw_sale_state(s, now_ms)), (long long)s->stock_total,
                     (long long)(s->stock_left < 0 ? 0 : s->stock_left), s->per_user_limit, st, en);
    if (admin)
        n += snprintf(buf + n, len - (size_t)n,
                      ",\"accepted_units\":%lld,\"accepted_orders\":%lld,\"version\":%llu",
                      (long long)s->accepted_units, (long long)s->accepted_orders,
                      (unsigned long long)s->version);
    n += snprintf(buf + n, len - (size_t)n, "}");
    return (size_t)n;
}

/* Appends n bytes of s at p (no NUL), returns the new end; callers size the
 * buffer for bounded ids. One memcpy per part: the byte loop this replaced was
 * ~600 of an accepted order's instructions (`python3 bench/profile.py build acc calls`). */
static char *put_n(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put(char *p, const char *s)
{
    return put_n(p, s, strlen(s));
}

#define PUT_LIT(p, lit) put_n(p, lit, sizeof(lit) - 1)

static void reply_accepted(gw_req_t *r, const oq_order_t *o, bool replayed)
{
    gw_resp_t *p = &r->resp;
    r->replayed = replayed; /* the Idempotent-Replayed header */
    gw_resp_init(p, GW_R_ACCEPTED);
    /* The status token is the only way to read the order back (order ids can be
     * enumerated); the buyer's user id is never sent back. */
    char tok[GW_TOKEN_LEN + 1];
    size_t toklen = gw_status_token(r->w->srv, o->order_id, tok);
    /* Every 202 goes through here: its body and Location are copied together,
     * not printf-formatted (snprintf was a third of this function's work).
     * Their parts are bounded: 2 ids, a sale id, a token, qty <= OQ_QTY_MAX. */
    _Static_assert(sizeof(p->body) > 100 + INV_ORDER_ID_MAX + INV_SALE_ID_MAX + GW_TOKEN_LEN,
                   "a 202 body fits");
    char qty[16];
    char *d = qty + sizeof(qty);
    *--d = '\0';
    uint32_t q = o->qty;
    do
        *--d = (char)('0' + q % 10);
    while (q /= 10);
    size_t idlen = strlen(o->order_id);
    char *b = p->body;
    b = PUT_LIT(b, "{\"order_id\":\"");
    b = put_n(b, o->order_id, idlen);
    b = PUT_LIT(b, "\",\"status\":\"queued\",\"sale_id\":\"");
    b = put(b, o->sale_id);
    b = PUT_LIT(b, "\",\"qty\":");
    b = put_n(b, d, (size_t)(qty + sizeof(qty) - 1 - d));
    b = PUT_LIT(b, ",\"status_token\":\"");
    b = put_n(b, tok, toklen);
    b = PUT_LIT(b, "\"}");
    *b = '\0';
    p->body_len = (size_t)(b - p->body);
    char loc[24 + INV_ORDER_ID_MAX + GW_TOKEN_LEN];
    b = PUT_LIT(loc, "/v1/orders/");
    b = put_n(b, o->order_id, idlen);
    b = PUT_LIT(b, "?token=");
    b = put_n(b, tok, toklen);
    *b = '\0';
    gw_resp_header_set(p, "Location", loc);
    if (replayed)
        gw_resp_header_set(p, "Idempotent-Replayed", "true");
    if (gw_identity_on(r->w->srv)) /* its verified buyer reads it without the token */
        gw_identity_order_put(r->w->srv, o->order_id, o->user_id);
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* After a member name: the ':' and the whitespace around it; NULL if not there. */
static const char *name_sep(const char *p, const char *end)
{
    p = skip_ws(p, end);
    if (p == end || *p != ':')
        return NULL;
    return skip_ws(p + 1, end);
}

/*
 * The body nearly every buyer sends, {"user_id":"<id>","qty":<n>} (either
 * order, qty optional, user_id too when user_optional (identity on: "" then),
 * any JSON whitespace), read in place: building and
 * freeing a jansson tree for it was ~9,000 instructions, an eighth of an
 * accepted order's user-space work (callgrind). It takes only bodies whose
 * meaning cannot differ from jansson's reading: each of the two members at
 * most once, a user id of id characters only (so no escapes), qty as plain
 * digits within 1..OQ_QTY_MAX, nothing after the object. Anything else returns
 * false and goes to jansson, which also words the errors
 * (tests/fuzz/fuzz_buy_body.c checks that both read the same values).
 */
bool gw_buy_body_fast(const char *body, size_t len, bool user_optional, char *user_id,
                      uint32_t *qty)
{
    const char *p = body, *end = body + len;
    const char *user = NULL;
    size_t ulen = 0;
    uint32_t q = 0;
    p = skip_ws(p, end);
    if (p == end || *p++ != '{')
        return false;
    for (;;) {
        p = skip_ws(p, end);
        if (!user && end - p >= 9 && memcmp(p, "\"user_id\"", 9) == 0) {
            if (!(p = name_sep(p + 9, end)) || p == end || *p++ != '"')
                return false;
            const char *close = memchr(p, '"', (size_t)(end - p));
            if (!close || !inv_id_valid(p, (size_t)(close - p), INV_USER_ID_MAX))
                return false; /* escapes or other characters: jansson's to judge */
            user = p;
            ulen = (size_t)(close - p);
            p = close + 1;
        } else if (!q && end - p >= 5 && memcmp(p, "\"qty\"", 5) == 0) {
            if (!(p = name_sep(p + 5, end)) || p == end || *p < '1' || *p > '9')
                return false;
            while (p < end && *p >= '0' && *p <= '9' && q <= OQ_QTY_MAX)
                q = q * 10 + (uint32_t)(*p++ - '0');
            if (q > OQ_QTY_MAX)
                return false;
        } else {
            return false;
        }
        p = skip_ws(p, end);
        if (p == end)
            return false;
        if (*p == '}')
            break;
        if (*p++ != ',')
            return false; /* also a fraction or an exponent after qty's digits */
    }
    if ((!user && !user_optional) || skip_ws(p + 1, end) != end)
        return false;
    if (user)
        memcpy(user_id, user, ulen);
    user_id[ulen] = '\0';
    *qty = q ? q : 1;
    return true;
}

static bool parse_body_json(gw_req_t *r, bool user_optional);

bool gw_buy_parse_body(gw_req_t *r)
{
    return gw_buy_body_fast(r->body, r->body_len, false, gw_req_buy(r)->res.user_id,
                            &gw_req_buy(r)->res.qty) ||
           parse_body_json(r, false);
}

/* The buy body with identity on: user_id may be omitted ("" then; the verified
 * user fills it). */
static bool parse_body_identity(gw_req_t *r)
{
    return gw_buy_body_fast(r->body, r->body_len, true, gw_req_buy(r)->res.user_id,
                            &gw_req_buy(r)->res.qty) ||
           parse_body_json(r, true);
}

bool gw_buy_parse_body_json(gw_req_t *r, bool user_optional)
{
    return parse_body_json(r, user_optional);
}

static bool parse_body_json(gw_req_t *r, bool user_optional)
{
    json_error_t jerr;
    json_t *root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                      "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                      jerr.text);
        return false;
    }
    bool ok = false;
    if (!json_is_object(root)) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL, "body must be a JSON object");
        goto out;
    }
    json_t *u = json_object_get(root, "user_id");
    if (!u && !user_optional) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL, "missing field user_id");
        goto out;
    }
    gw_req_buy(r)->res.user_id[0] = '\0';
    if (u) {
        const char *us = json_string_value(u);
        size_t ulen = json_string_length(u);
        if (!us || !inv_id_valid(us, ulen, INV_USER_ID_MAX)) {
            gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                          "user_id must be a string of 1..64 characters of A-Z a-z 0-9 . _ -");
            goto out;
        }
        memcpy(gw_req_buy(r)->res.user_id, us, ulen + 1);
    }
    gw_req_buy(r)->res.qty = 1;
    json_t *q = json_object_get(root, "qty");
    if (q) {
        json_int_t v = json_is_integer(q) ? json_integer_value(q) : 0;
        if (v < 1 || v > (json_int_t)OQ_QTY_MAX) {
            gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                          "qty must be an integer from 1 to %u", OQ_QTY_MAX);
            goto out;
        }
        gw_req_buy(r)->res.qty = (uint32_t)v;
    }
    ok = true;
out:
    json_decref(root);
    return ok;
}

bool gw_idem_key_valid(const char *k, size_t len)
{
    return inv_idem_key_valid(k, len); /* one rule, the inventory's */
}

static void buy_finish(gw_req_t *r);

static void hold(gw_req_t *r)
{
    if (r->state == GW_ST_WAIT)
        return;
    r->state = GW_ST_WAIT; /* held: its connection reads nothing until gw_req_finish */
    r->w->suspended++;
}

/* 503 for a spool that cannot take the order (full, or refusing after a failure). */
static void spool_refused(gw_req_t *r, int rc)
{
    gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL, "%s",
                  rc == CM_EBUSY ? "order spool is full; try again shortly"
                                 : "order spool write failed");
    if (rc != CM_EBUSY)
        cm_log_error("gw", "spool append failed", "err=%s", cm_errname(rc));
}

/* The buy's core (gw_buy_core.h): its state is kept in r between events. */
_Static_assert(sizeof(gw_buy_core_t) <= sizeof(((gw_req_t *)0)->buy_core) &&
                   _Alignof(gw_buy_core_t) == 1,
               "gw_req_t.buy_core holds a gw_buy_core_t");
_Static_assert((int)GW_BUY_ADM_CLAIMED == (int)GW_WR_CLAIMED &&
                   (int)GW_BUY_ADM_SPENT == (int)GW_WR_SPENT &&
                   (int)GW_BUY_ADM_REPLAY == (int)GW_WR_REPLAY,
               "the admission claim's results");
_Static_assert((int)GW_BUY_FAIR_ENTER == (int)GW_FAIR_ENTER &&
                   (int)GW_BUY_FAIR_DRAWING == (int)GW_FAIR_DRAWING &&
                   (int)GW_BUY_FAIR_OPEN == (int)GW_FAIR_OPEN &&
                   (int)GW_BUY_FAIR_TOO_EARLY == (int)GW_FAIR_TOO_EARLY,
               "the lottery's phases");
_Static_assert((int)GW_BUY_SEEN_UNKNOWN == (int)GW_ORDERS_UNKNOWN &&
                   (int)GW_BUY_SEEN_FOUND == (int)GW_ORDERS_FOUND &&
                   (int)GW_BUY_SEEN_EXPIRED == (int)GW_ORDERS_EXPIRED,
               "the status table's answers");

static gw_buy_core_t *core_of(gw_req_t *r)
{
    return (gw_buy_core_t *)(void *)r->buy_core;
}

static bool buy_do(gw_req_t *r, const gw_buy_out_t *out);

/*
 * Step 6 for a reserved order: it joins this loop iteration's spool batch and
 * is held; spool_flush (end of the iteration) writes the batch's records with
 * one write(2), then answers each (step 7). One write per order was ~6% of an
 * accepted order's CPU, the syscall and ext4's per-write work (perf,
 * `python3 bench/profile.py build acc sys`). An order is still in the spool before its 202.
 */
static bool spool_later(gw_req_t *r)
{
    gw_worker_t *w = r->w;
    hold(r);
    r->replayed = core_of(r)->replayed;
    r->next = NULL;
    *w->buy->spool_wait_tail = r;
    w->buy->spool_wait_tail = &r->next;
    w->buy->spool_wait_bytes += oq_spool_order_bound(&gw_req_buy(r)->order);
    return true;
}

/* The claim's answer (gw_buy_core.h CLAIMED). Returns true if r is held. */
static bool after_claim(gw_req_t *r, int rc)
{
    gw_buy_out_t out;
    gw_buy_core_step(core_of(r), &(gw_buy_ev_t){.kind = GW_BUY_EV_CLAIMED, .rc = rc}, 0, &out);
    return buy_do(r, &out);
}

static void on_claimed(inv_reserve_req_t *res, int outcome)
{
    gw_req_t *r = res->data;
    if (!after_claim(r, outcome))
        buy_finish(r);
}

/* Claims the order a keyed retry found (gw_req_buy(r)->res: its id and user), then spools
 * it as a replay. Returns true if r is held. */
static bool claim(gw_req_t *r)
{
    gw_req_buy(r)->res.done = on_claimed;
    gw_req_buy(r)->res.data = r;
    int rc = inv_claim(r->w->inv, &gw_req_buy(r)->res);
    if (rc == INV_PENDING) {
        hold(r);
        return true;
    }
    return after_claim(r, rc);
}

/*
 * A keyed retry's facts for the core (INV_DUPLICATE): the key's order, known
 * durable here or not, ours or not. A replayed 202 only for an order known to
 * be durable: the original may still be in flight on another worker or
 * waiting for its fsync, or it may be a Redis reserve that timed out and is
 * being given back. An order of another gateway of the fleet that this one
 * has not seen is spooled here too before the replayed 202: that gateway
 * reserves in Redis before it spools, so if it died in between (kill -9
 * behind a load balancer, the client retrying elsewhere with its key) Redis
 * holds an order no spool has. (Found by integration.70-nginx.) Such an
 * order is claimed first (inv_claim): its gateway may still give it back
 * (its reserve answered after its timeout, or its spool refused it), and the
 * claim makes that give-back leave it held, or tells this one it was given
 * back already (integration.66-fleet-claim).
 */
static void duplicate_facts(gw_req_t *r, gw_buy_ev_t *ev)
{
    gw_server_t *srv = r->w->srv;
    uint64_t idv = 0;
    /* Ours: minted by this node since this process started. One minted
     * before (the node id is the same on every start) belongs to an
     * incarnation that may have died between its reserve and its spool
     * write: like another gateway's, it is spooled here; asked to retry,
     * the client was answered 503 for ever. So does one of a node id the
     * fleet took over from another gateway, at or below the floor it took
     * it at (node.since_ms; integration.69-fleet-lease). node.id is read
     * first: node.since_ms is stored before it. */
    uint32_t node = atomic_load(&srv->node.id);
    ev->ours =
        cm_id_parse(gw_req_buy(r)->res.order_id, strlen(gw_req_buy(r)->res.order_id), &idv) == 0 &&
        cm_id_node(idv) == node && cm_id_time_ms(idv) > atomic_load(&srv->node.since_ms);
    /* An own order evicted from the status table was durable when it was put there. */
    ev->seen =
        (gw_buy_seen_t)gw_orders_lookup(srv->stores.orders, gw_req_buy(r)->res.order_id, NULL);
    ev->claimed = gw_req_buy(r)->res.claimed;
    /* the record and the answer are the key's order's */
    snprintf(gw_req_buy(r)->order.order_id, sizeof(gw_req_buy(r)->order.order_id), "%s",
             gw_req_buy(r)->res.order_id);
    gw_req_buy(r)->order.qty = gw_req_buy(r)->res.qty;
}

/* Steps 6 and 7 once the inventory has answered (gw_buy_core.h RESERVED).
 * Returns true if r is held (its record waits for the iteration's spool write). */
static bool after_reserve(gw_req_t *r, int rc)
{
    gw_buy_ev_t ev = {.kind = GW_BUY_EV_RESERVED, .rc = rc};
    if (rc == INV_DUPLICATE)
        duplicate_facts(r, &ev);
    gw_buy_out_t out;
    gw_buy_core_step(core_of(r), &ev, 0, &out);
    return buy_do(r, &out);
}

static void on_reserved(inv_reserve_req_t *res, int outcome)
{
    gw_req_t *r = res->data;
    /* Redis's own time, not this loop's queueing (inv_reserve_req_t.rtt_us). */
    gw_ol_release_rtt(r, GW_DEP_REDIS, outcome < 0 ? GW_AL_DROP : GW_AL_OK,
                      res->rtt_us == INV_RTT_NONE ? GW_OL_RTT_MEASURE : res->rtt_us);
    if (!after_reserve(r, outcome))
        buy_finish(r);
}

/* No order id to give (gw_fleet_ids_refused): 503 with the cause, nothing reserved. */
static void ids_refused(gw_req_t *r)
{
    gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL, "order ids paused: %s; retry",
                  gw_fleet_ids_refused(r->w->srv));
    gw_resp_retry_after(&r->resp, 1);
}

/* The 202 "entered" of a lottery entry (docs/api.md). */
static void reply_entered(gw_req_t *r, const gw_fair_ticket_t *t, bool again, int64_t now_ms)
{
    gw_resp_t *p = &r->resp;
    gw_resp_init(p, GW_R_ENTERED);
    char at[40];
    cm_time_format_rfc3339(t->draw_at_ms, at, sizeof(at));
    char tok[GW_TOKEN_LEN + 1];
    gw_status_token(r->w->srv, t->order_id, tok);
    p->body_len = (size_t)snprintf(
        p->body, sizeof(p->body),
        "{\"order_id\":\"%s\",\"status\":\"entered\",\"sale_id\":\"%s\",\"qty\":%u,"
        "\"status_token\":\"%s\",\"draw_at\":\"%s\"%s}",
        t->order_id, t->sale_id, t->qty, tok, at, again ? ",\"duplicate\":true" : "");
    gw_resp_header(p, "Location", "/v1/orders/%s?token=%s", t->order_id, tok);
    gw_resp_header(p, "Cache-Control", "no-store");
    int64_t wait = t->draw_at_ms > now_ms ? t->draw_at_ms - now_ms : 0;
    gw_resp_retry_after(p, (unsigned long long)gw_retry_after_s((uint64_t)wait * 1000000ull));
}

/* The 410 of a first-come buy while a drawn lottery's losers wait (gw_fair_waitlist_open). */
static void reply_waitlist(gw_req_t *r)
{
    gw_resp_error(&r->resp, GW_R_SOLD_OUT, "\"waitlist\":true",
                  "sale %s is sold out to its draw: units freed go to the draw's waitlist in "
                  "draw order, not first-come",
                  r->id);
}

static void fair_enter(gw_req_t *r, gw_fair_sale_t *fair, int64_t closes_at, int64_t now_ms)
{
    gw_fair_ticket_t t;
    memset(&t, 0, sizeof(t));
    uint64_t idv = cm_id_next(&r->w->srv->node.ids, now_ms);
    if (!idv) {
        ids_refused(r);
        return;
    }
    cm_id_format(idv, t.order_id);
    snprintf(t.sale_id, sizeof(t.sale_id), "%s", r->id);
    snprintf(t.user_id, sizeof(t.user_id), "%s", gw_req_buy(r)->res.user_id);
    snprintf(t.person, sizeof(t.person), "%s", gw_req_buy(r)->person);
    t.qty = gw_req_buy(r)->res.qty;
    t.entered_at_ms = now_ms;
    t.draw_at_ms = closes_at;
    t.key_fp = gw_req_buy(r)->res.idem_key[0] ? gw_req_buy(r)->res.raw_key_fp : 0;
    int rc = gw_fair_enter(fair, &t, gw_req_buy(r)->res.idem_key);
    if (rc == 0 || rc == 1) {
        reply_entered(r, &t, rc == 1, now_ms);
    } else if (rc == GW_FAIR_OTHER_ACCOUNT) {
        /* one entry per person: the entry's id and token are its account's own */
        gw_resp_error(&r->resp, GW_R_CONFLICT, "\"reason\":\"already_entered\"",
                      "another account of this buyer's person has entered the start-window "
                      "draw of sale %s: one entry per person",
                      r->id);
    } else if (rc == GW_FAIR_FULL) {
        gw_resp_error(&r->resp, GW_R_CONFLICT, "\"reason\":\"lottery_full\"",
                      "the start-window draw of sale %s holds its most entries "
                      "(sales.max_lottery_entries): not entered",
                      r->id);
    } else if (rc == CM_EBUSY) {
        gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL,
                      "the start-window draw of sale %s is running; retry", r->id);
        gw_resp_retry_after(&r->resp, 1);
    } else if (rc == CM_EBACKEND) {
        gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL,
                      "cannot check the fleet's entries of this buyer's person now; retry");
        gw_resp_retry_after(&r->resp, 1);
    } else {
        gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL, "lottery entry log write failed");
        gw_resp_retry_after(&r->resp, 1);
    }
}

/* Why an X-Admission-Token does not admit: the "reason" of the 403 (busy: 503).
 * The waiting room's route gives the tokens out (gw_fair_routes.c: their format). */
#define ADMISSION_OUTCOMES(XX)                                                                 \
    XX(OK, "ok") XX(MISSING, "missing") XX(MALFORMED, "malformed") XX(EXPIRED, "expired")      \
    XX(NOT_THIS_BUYER, "not_this_buyer") XX(SPENT, "admission_spent") XX(BUSY, "admission_busy")
typedef enum {
#define XX(n, s) ADM_##n,
    ADMISSION_OUTCOMES(XX)
#undef XX
} admission_t;
static const char *const admission_names[] = {
#define XX(n, s) s,
    ADMISSION_OUTCOMES(XX)
#undef XX
};

/* A checked admission token's expiry and replay id. */
typedef struct admission_tok {
    int64_t exp_s;
    uint64_t jti;
} admission_tok_t;

/* The token's MAC binds sale, person, expiry and replay id: one given to
 * another person (or for another sale, or forged) is not_this_buyer. */
static admission_t admission_check(gw_req_t *r, int64_t now_ms, admission_tok_t *tok)
{
    const char *t = r->hdr.admission;
    if (!t)
        return ADM_MISSING;
    const char *dot = strchr(t, '.');
    if (!dot || dot - t > 12)
        return ADM_MALFORMED;
    long long exp = (long long)gw_token_number(t, dot); /* at most 12 digits */
    if (exp <= 0)
        return ADM_MALFORMED;
    const char *j = dot + 1, *dot2 = strchr(j, '.');
    if (!dot2 || dot2 - j != 16)
        return ADM_MALFORMED;
    uint64_t jti = 0;
    for (int i = 0; i < 16; i++) {
        char c = j[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return ADM_MALFORMED;
        jti = jti << 4 | (uint64_t)d;
    }
    if (!jti)
        return ADM_MALFORMED;
    if (exp < now_ms / 1000)
        return ADM_EXPIRED;
    char msg[200];
    snprintf(msg, sizeof(msg), "a:%s:%s:%lld:%016llx", r->id, gw_req_buy(r)->person, exp,
             (unsigned long long)jti);
    if (!gw_token_mac_ok(r->w->srv, msg, dot2 + 1, strlen(dot2 + 1)))
        return ADM_NOT_THIS_BUYER;
    tok->exp_s = exp;
    tok->jti = jti;
    return ADM_OK;
}

/* The 403 (503 when the spent table is full) of a buy its token does not admit. */
static void admission_refused(gw_req_t *r, admission_t adm)
{
    char extra[48];
    snprintf(extra, sizeof(extra), "\"reason\":\"%s\"", admission_names[adm]);
    if (adm == ADM_BUSY) {
        gw_resp_error(&r->resp, GW_R_UNAVAILABLE, extra,
                      "too many admission tokens of sale %s spent lately to record another; "
                      "retry",
                      r->id);
        gw_resp_retry_after(&r->resp, 1);
        return;
    }
    if (adm == ADM_SPENT) {
        gw_resp_error(&r->resp, GW_R_ADMISSION_REQUIRED, extra,
                      "X-Admission-Token of sale %s is spent by an order (or a buy in progress): "
                      "a token admits one order",
                      r->id);
        return;
    }
    gw_resp_error(&r->resp, GW_R_ADMISSION_REQUIRED, extra,
                  adm == ADM_NOT_THIS_BUYER
                      ? "X-Admission-Token was not given to this buyer for sale %s: take "
                        "your own place with GET /v1/sales/%s/queue"
                      : "sale %s has a waiting room: take a place with GET "
                        "/v1/sales/%s/queue and buy with its admission_token in "
                        "X-Admission-Token",
                  r->id, r->id);
}

/*
 * The admission token's jti is claimed just before the reserve and settled by
 * the buy's answer: kept by a 202, given back by anything else (a refusal, a
 * 503), so a failed buy does not cost the person their admission and two
 * concurrent buys with one token make one order. A replayed 202 keeps the
 * claim too: when this buy claimed the token, the order of its key stands
 * and nothing else holds the token for it (the buy that made the order gave
 * its claim back when its answer was lost); a retry that found the token
 * held by its own key (GW_WR_REPLAY) claimed nothing and settles nothing on
 * one gateway, and in a fleet holds the token beside the key's first buy and
 * settles its own hold.
 * Every answer of a buy passes here (gw_buy_handle's return, or the held
 * buy's gw_req_finish through buy_finish).
 */
static void admission_settle(gw_req_t *r)
{
    if (!gw_req_buy(r)->adm_jti)
        return;
    /* the core's rule (an admission token is claimed only after its init) */
    bool accepted = !r->cached && gw_buy_answer_keeps_admission(
                                      (gw_buy_answer_t)core_of(r)->answer);
    gw_fair_admission_settle(r->w->srv->fair, r->id, gw_req_buy(r)->adm_jti, gw_req_buy(r)->adm_fp,
                             gw_req_buy(r)->adm_nonce, accepted);
    gw_req_buy(r)->adm_jti = 0;
}

/* gw_req_finish of a held buy. */
static void buy_finish(gw_req_t *r)
{
    admission_settle(r);
    gw_req_finish(r);
}

/* The words of the core's answer (those whose facts are the head's or the
 * limits', sold out from the flag, 425 and 429, are answered in buy_handle). */
static void buy_say(gw_req_t *r, const gw_buy_out_t *out)
{
    gw_resp_t *p = &r->resp;
    switch (out->answer) {
    case GW_BUY_A_ACCEPTED:
    case GW_BUY_A_REPLAYED:
        reply_accepted(r, &gw_req_buy(r)->order, out->answer == GW_BUY_A_REPLAYED);
        return;
    case GW_BUY_A_SOLD_OUT:
        gw_resp_sold_out(p, r->id);
        return;
    case GW_BUY_A_WAITLIST:
        reply_waitlist(r);
        return;
    case GW_BUY_A_ENDED:
        gw_resp_error(p, GW_R_SALE_ENDED, NULL, "sale %s has ended", r->id);
        return;
    case GW_BUY_A_LIMIT_PER_USER:
        gw_hitters_add(r->w, gw_req_buy(r)->order.user_id, NULL, 0);
        gw_resp_error(p, GW_R_LIMIT_PER_USER, NULL,
                      "user %s would exceed the per-user limit of this sale",
                      gw_req_buy(r)->order.user_id);
        return;
    case GW_BUY_A_DRAW_RUNNING:
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL,
                      "the start-window draw of sale %s is running; retry", r->id);
        gw_resp_retry_after(p, 1);
        return;
    case GW_BUY_A_ADMISSION_SPENT:
    case GW_BUY_A_ADMISSION_BUSY:
        admission_refused(r, out->answer == GW_BUY_A_ADMISSION_BUSY ? ADM_BUSY : ADM_SPENT);
        return;
    case GW_BUY_A_ADMISSION_UNKNOWN:
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL,
                      "cannot check or record the admission token of sale %s now; retry", r->id);
        gw_resp_retry_after(p, 1);
        return;
    case GW_BUY_A_UNKNOWN_SALE:
        gw_resp_error(p, GW_R_UNKNOWN_SALE, NULL, "no sale %s", r->id);
        return;
    case GW_BUY_A_IN_PROGRESS:
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL,
                      "the original request with this Idempotency-Key is still in progress; "
                      "retry");
        return;
    case GW_BUY_A_KEY_GIVEN_BACK:
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL,
                      "the order of this Idempotency-Key was not accepted and its units went "
                      "back; retry to buy again");
        gw_resp_retry_after(p, 1);
        return;
    case GW_BUY_A_INV_FAILED:
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL, "inventory unavailable: %s",
                      cm_strerror(out->rc));
        return;
    case GW_BUY_A_SPOOL_REFUSED:
        spool_refused(r, out->rc);
        return;
    case GW_BUY_A_NOT_CONFIRMED:
        /* The disk failed: the spool cut every record not confirmed by an
         * fdatasync (the relay never saw them: it reads only synced ones, so
         * this order is never settled) and now refuses every append (the
         * gateway stops accepting). The client hears the truth. */
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL,
                      "order spool fsync failed: the order is not confirmed");
        return;
    default:
        return;
    }
}

/* The group commit: r's answer goes out after the fdatasync of its record. */
static void sync_later(gw_req_t *r)
{
    gw_worker_t *w = r->w;
    r->next = NULL;
    *w->buy->sync_wait_tail = r;
    w->buy->sync_wait_tail = &r->next;
    if (oq_pos_cmp(gw_req_buy(r)->spool_end, w->buy->sync_wait_end) > 0)
        w->buy->sync_wait_end = gw_req_buy(r)->spool_end;
}

/* Performs what the core asked after an inventory or spool event, in the
 * order gw_buy_core.h lists. Returns true if r is held (an action's result
 * comes back later), false once answered. */
static bool buy_do(gw_req_t *r, const gw_buy_out_t *out)
{
    gw_worker_t *w = r->w;
    oq_order_t *o = &gw_req_buy(r)->order;
    unsigned a = out->actions;
    if (a & GW_BUY_DO_GIVE_BACK) /* off this loop (a Redis release blocks), durably */
        gw_release_unaccepted(w->srv, o, out->rc == CM_EBUSY ? "not accepted: spool full"
                                                             : "not accepted: spool write failed");
    if (a & GW_BUY_DO_COUNT)
        atomic_fetch_add_explicit(&w->ctr.accepted_units, o->qty, memory_order_relaxed);
    if (a & GW_BUY_DO_KNOWN)
        gw_orders_put(w->srv->stores.orders, o);
    buy_say(r, out);
    if (a & GW_BUY_DO_SPOOL)
        return spool_later(r);
    if (a & GW_BUY_DO_CLAIM)
        return claim(r);
    if (a & GW_BUY_DO_SYNC) {
        sync_later(r);
        return true;
    }
    return false;
}

static bool buy_handle(gw_req_t *r);

/* A keyed buy on a sold-out sale whose key may hold an order is a retry only
 * its verified buyer makes (identity off: anyone's, the key is not scoped). A
 * verified token is cached, so its identity step that follows costs no second
 * signature check. */
static bool keyed_retry_verified(gw_req_t *r)
{
    return !gw_identity_on(r->w->srv) || gw_identity_valid(r);
}

/* The 404 unknown_sale for sale_id (checked: the id alphabet, at most
 * INV_SALE_ID_MAX), prepared once per id and worker: the answer a crowd
 * polling a sale not created yet gets costs what the prepared 410 costs.
 * Whether the sale exists is asked first, every time, so a sale created
 * since is never answered 404 from here. */
static gw_prep_t *unknown_sale_response(gw_worker_t *w, const char *sale_id)
{
    gw_worker_buy_t *b = w->buy;
    for (unsigned i = 0; i < b->nunknown; i++)
        if (strcmp(b->unknown_cache[i].id, sale_id) == 0)
            return b->unknown_cache[i].resp;
    unsigned slot = b->nunknown < CM_ARRAY_LEN(b->unknown_cache)
                        ? b->nunknown++
                        : b->unknown_next++ % CM_ARRAY_LEN(b->unknown_cache);
    gw_prep_free(b->unknown_cache[slot].resp);
    gw_resp_t tmp;
    gw_resp_error(&tmp, GW_R_UNKNOWN_SALE, NULL, "no sale %s", sale_id);
    b->unknown_cache[slot].resp = gw_prep_new(&tmp, w); /* Content-Type, no-store */
    snprintf(b->unknown_cache[slot].id, sizeof(b->unknown_cache[slot].id), "%s", sale_id);
    return b->unknown_cache[slot].resp;
}

bool gw_buy_handle(gw_req_t *r)
{
    gw_req_buy(r)->adm_jti = 0;
    r->replayed = false;
    bool held = buy_handle(r);
    if (!held)
        admission_settle(r);
    return held;
}

/* What buy_handle learns on the way, for its steps. */
typedef struct buy_ctx {
    inv_sale_t *sale;
    inv_sale_terms_t info;
    int64_t now_ms;
    gw_fair_sale_t *fair;
    gw_fair_phase_t phase;
    bool identity, room;
    admission_tok_t atok;
    uint8_t ipkey[16];
    size_t iplen;
    gw_limit_verdict_t v;
} buy_ctx_t;

/* Steps 1 and 2 up to the sale: the overload guard, the Idempotency-Key (the
 * head's), the sale (404 from a prepared answer). NULL: answered. */
static inv_sale_t *buy_sale(gw_req_t *r)
{
    gw_worker_t *w = r->w;
    gw_server_t *srv = w->srv;
    if (gw_drain_refuses(gw_drain_phase(atomic_load_explicit(&srv->life.leaving, memory_order_relaxed),
                                        atomic_load_explicit(&srv->life.draining, memory_order_relaxed)))) {
        /* After the drain grace, on a connection opened before: close it, so
         * the load balancer's next request opens one to another gateway. */
        gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL, "gateway is shutting down");
        r->close_after = true;
        return NULL;
    }
    if (w->suspended >= srv->pool.max_held) {
        gw_ol_overloaded(r, GW_OLR_INFLIGHT_LIMIT, "too many requests in flight", false);
        return NULL;
    }
    const char *ik = r->hdr.idem_key; /* the head's headers: gw_http.c, buy_header */
    gw_req_buy(r)->res.idem_key[0] = '\0';
    gw_req_buy(r)->res.raw_key_fp = 0;
    if (ik) {
        size_t iklen = strlen(ik);
        if (!gw_idem_key_valid(ik, iklen)) {
            gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                          "Idempotency-Key must be 1..128 visible ASCII characters");
            return NULL;
        }
        memcpy(gw_req_buy(r)->res.idem_key, ik, iklen + 1);
        gw_req_buy(r)->res.raw_key_fp = inv_idem_key_fp(ik); /* identity scopes idem_key later */
    }
    inv_sale_t *sale = inv_sale_find_memo(srv->stores.inv, &w->buy->sale_memo, r->id);
    if (!sale) {
        r->cached = unknown_sale_response(w, r->id);
        r->cached_reply = GW_R_UNKNOWN_SALE;
    }
    return sale;
}

/* The head's facts (gw_buy_core.h HEAD): both need only the request head, so
 * a sold-out crowd costs no body parsing. Sold out from the flag, nothing
 * verified, unless the key may be a retry of a held order (any user's: the
 * key is scoped by the verified user only later), which must still get its
 * order back. That retry is the verified buyer's only: without a valid token
 * it is sold out too, so the answer never tells whether some order holds the
 * key. Else the sale's window and its lottery's phase. A sale with a
 * start-window lottery (gw_fair.h) takes entries from starts_at - early to
 * starts_at + window, then first-come once drawn. */
static void head_facts(gw_req_t *r, buy_ctx_t *x, gw_buy_ev_t *ev)
{
    gw_server_t *srv = r->w->srv;
    ev->sold_out =
        inv_sale_sold_out(x->sale) &&
        (!gw_req_buy(r)->res.idem_key[0] ||
         !inv_sale_key_may_hold(srv->stores.inv, x->sale, gw_req_buy(r)->res.raw_key_fp) ||
         !keyed_retry_verified(r));
    if (ev->sold_out) {
        ev->waitlist_open = gw_fair_waitlist_open(gw_fair_find(srv->fair, r->id));
        return;
    }
    inv_sale_terms(x->sale, &x->info);
    x->now_ms = cm_wall_ms();
    x->fair = x->info.starts_at_ms ? gw_fair_find(srv->fair, r->id) : NULL;
    x->phase = x->fair ? gw_fair_phase(x->fair, x->info.starts_at_ms, x->now_ms) : GW_FAIR_OPEN;
    ev->fair = (gw_buy_fair_t)x->phase;
    ev->starts_at_ms = x->info.starts_at_ms;
    ev->ends_at_ms = x->info.ends_at_ms;
}

/* The head's answers: sold out and 425 from prepared answers. */
static void head_answer(gw_req_t *r, const buy_ctx_t *x, const gw_buy_out_t *out)
{
    gw_worker_t *w = r->w;
    if (out->answer == GW_BUY_A_SOLD_OUT) {
        r->cached = gw_sold_out_response(w, x->sale);
        r->cached_reply = GW_R_SOLD_OUT;
        if (!r->cached)
            gw_resp_sold_out(&r->resp, r->id);
    } else if (out->answer == GW_BUY_A_NOT_STARTED) {
        uint64_t wait_ns = (uint64_t)(x->info.starts_at_ms - x->now_ms) * 1000000ull;
        r->cached = gw_not_started_response(w, x->sale, r->id, gw_retry_after_s(wait_ns));
        r->cached_reply = GW_R_NOT_STARTED;
    } else {
        buy_say(r, out);
    }
}

/*
 * Step 3, the buyer: parse and validate the body; while buys are shed by user
 * priority, a refused user is told so before the parse (no JSON work for a
 * 503) and, with identity on, before the token's signature check: the user it
 * claims decides, and a token that claims another's user is refused at
 * verification (bench/README.md, "Identity"). false: answered.
 */
static bool buyer_facts(gw_req_t *r, buy_ctx_t *x)
{
    gw_worker_t *w = r->w;
    gw_server_t *srv = w->srv;
    x->identity = gw_identity_on(srv);
    if (x->identity) {
        char claimed[ID_USER_MAX + 1];
        if (gw_ol_buy_shedding(r) && (!gw_identity_claimed(r, claimed) ||
                                      !gw_ol_buy_admit_user(r, claimed, strlen(claimed))))
            return false;
    } else if (!gw_ol_buy_precheck(r)) {
        return false;
    }
    x->iplen = 0;
    if (x->identity) {
        x->iplen = gw_client_key(&srv->conns.proxies, gw_req_peer(r), gw_req_xff(r), x->ipkey);
        if (!parse_body_identity(r))
            return false;
        /* 3b. with identity on, the client address's limits come before the
         * token's check (a signature is CPU work a flood from one address
         * must not buy), and everything keyed by the user after it. A
         * request refused later (user, sale) has spent its address's token. */
        gw_limits_admit_ip(srv->stores.limits, (const char *)x->ipkey, x->iplen, w->now_ns, &x->v);
        if (!x->v.allowed) {
            gw_hitters_add(w, NULL, x->ipkey, x->iplen);
            gw_buy_rate_limited(r, &x->v);
            return false;
        }
        if (!gw_identity_buy(r))
            return false;
    } else if (!gw_buy_parse_body(r)) {
        return false;
    } else {
        memcpy(gw_req_buy(r)->person, gw_req_buy(r)->res.user_id,
               strlen(gw_req_buy(r)->res.user_id) + 1);
    }
    /* 3c. the sale's eligibility (verified claims, account age): a buy, a
     * lottery entry alike, refused before anything keyed by the buyer */
    if (!gw_elig_check(r, r->id, x->now_ms))
        return false;
    /* The user's bucket, fetched into the cache now (its inventory slot once
     * the limits let the buy through, step 4): with a new buyer per order each
     * was a cache miss, one after the other; this way they overlap the checks
     * in between (`python3 bench/profile.py build acc calls`). Hints only: nothing is read or
     * changed. */
    gw_limits_prefetch_user(srv->stores.limits, gw_req_buy(r)->res.user_id,
                            strlen(gw_req_buy(r)->res.user_id));
    /* 3a. a sale with a waiting room needs its admission token (the MAC: no
     * shared state; its replay id is claimed at step 4c). Not for a lottery
     * entry, nor while the draw runs: the room governs the first-come buys
     * after the draw (docs/design.md, "Room and lottery"). */
    memset(&x->atok, 0, sizeof(x->atok));
    x->room = x->phase == GW_FAIR_OPEN && gw_fair_room(srv->fair, r->id);
    admission_t adm = x->room ? admission_check(r, x->now_ms, &x->atok) : ADM_OK;
    if (adm != ADM_OK) {
        admission_refused(r, adm);
        return false;
    }
    return true;
}

/* Step 4: the rate limits (the address's were taken at 3b with identity on). */
static void limits_facts(gw_req_t *r, buy_ctx_t *x, gw_buy_ev_t *ev)
{
    gw_worker_t *w = r->w;
    gw_server_t *srv = w->srv;
    if (!x->identity)
        x->iplen = gw_client_key(&srv->conns.proxies, gw_req_peer(r), gw_req_xff(r), x->ipkey);
    gw_limits_admit(srv->stores.limits, gw_req_buy(r)->res.user_id,
                    strlen(gw_req_buy(r)->res.user_id), x->identity ? NULL : (const char *)x->ipkey,
                    x->identity ? 0 : x->iplen, r->id, strlen(r->id), w->now_ns, &x->v);
    ev->rate_allowed = x->v.allowed;
    ev->fair = (gw_buy_fair_t)x->phase;
    ev->waitlist_open = x->v.allowed && x->phase == GW_FAIR_OPEN && gw_fair_waitlist_open(x->fair);
    ev->room = x->room;
    if (!x->v.allowed)
        return;
    /* Not before: a 429 had no use for it (its hash, ~300 instructions of a
     * refusal; the reserve is still ~600 instructions away: `python3 bench/profile.py build rate
     * calls`). */
    inv_prefetch(w->inv, x->sale, gw_req_buy(r)->person);
}

/* 4b. the lottery: an entry instead of an order (registered persons only). */
static void buy_enter(gw_req_t *r, buy_ctx_t *x)
{
    if (!gw_reg_entry_ok(r, x->fair))
        return;
    if (x->now_ms < x->info.starts_at_ms)
        gw_hitters_add(r->w, NULL, x->ipkey, x->iplen); /* early arrivals, per address */
    fair_enter(r, x->fair, gw_fair_closes_at(x->fair, x->info.starts_at_ms), x->now_ms);
}

/* 4c. the admission token is spent by the order it admits: claimed now, kept
 * or given back by the answer (admission_settle). A retry with the
 * Idempotency-Key of the buy that spent it goes on to get its order. The key
 * as the inventory dedups it (scoped by the account with identity on):
 * another account of the token's person sending the same raw key is not a
 * retry of this buy. Returns the claim's result (gw_buy_core.h ADMITTED). */
static int buy_admit(gw_req_t *r, const buy_ctx_t *x)
{
    uint32_t kfp =
        gw_req_buy(r)->res.idem_key[0] ? inv_idem_key_fp(gw_req_buy(r)->res.idem_key) : 0;
    uint64_t nonce = 0;
    int ac = gw_fair_admission_claim(r->w->srv->fair, r->id, x->atok.jti, x->atok.exp_s, kfp,
                                     x->now_ms / 1000, &nonce);
    /* a fleet's GW_WR_REPLAY holds the token too (a nonce): this retry settles
     * it, so its first buy's give-back cannot free the token under its order */
    if (ac == GW_WR_CLAIMED || (ac == GW_WR_REPLAY && nonce)) {
        gw_req_buy(r)->adm_jti = x->atok.jti;
        gw_req_buy(r)->adm_fp = kfp;
        gw_req_buy(r)->adm_nonce = nonce;
    }
    return ac;
}

/* Step 5, the atomic step: an order id, the spool's room, the reserve.
 * Returns true if r is held. */
static bool buy_reserve(gw_req_t *r, const buy_ctx_t *x)
{
    gw_worker_t *w = r->w;
    gw_server_t *srv = w->srv;
    uint64_t idv = cm_id_next(&srv->node.ids, x->now_ms);
    if (!idv) {
        ids_refused(r);
        return false;
    }
    oq_order_t *o = &gw_req_buy(r)->order;
    cm_id_format(idv, gw_req_buy(r)->res.order_id);
    gw_orders_prefetch(srv->stores.orders, idv); /* its put comes after the spool write */
    /* From here the reserve's user is the person: the inventory's per-user
     * mark counts the units a person holds, over all their accounts (inv.h);
     * the order keeps the account as its user_id and names the person. */
    char account[INV_USER_ID_MAX + 1];
    memcpy(account, gw_req_buy(r)->res.user_id, sizeof(account));
    memcpy(gw_req_buy(r)->res.user_id, gw_req_buy(r)->person, sizeof(gw_req_buy(r)->res.user_id));
    gw_order_of_reserve(o, &gw_req_buy(r)->res, account, r->id, x->now_ms, cm_id_node(idv));
    /* A full (or failed) spool refuses before the reserve: no stock taken and
     * given back, no backend round trip for an order that cannot be kept. The
     * iteration's batch counts: its records are not written yet, and an order
     * that fits only without them would be reserved, then refused at the
     * batch's write (its units given back by a release event that eats the
     * room). */
    int src = oq_spool_room(srv->stores.spool, o, w->buy->spool_wait_bytes);
    if (src != 0) {
        spool_refused(r, src);
        return false;
    }
    gw_req_buy(r)->res.sale = x->sale;
    gw_req_buy(r)->res.done = on_reserved;
    gw_req_buy(r)->res.data = r;
    if (!gw_ol_acquire(r, GW_DEP_REDIS) || !gw_ol_acquire(r, GW_DEP_SPOOL))
        return false;
    int rc = inv_reserve(w->inv, &gw_req_buy(r)->res);
    if (rc == INV_PENDING) {
        hold(r);
        return true;
    }
    gw_ol_release(r, GW_DEP_REDIS, GW_AL_IGNORE); /* answered without a round trip */
    return after_reserve(r, rc); /* 6, 7 */
}

/* The shell around the buy's core (gw_buy_core.h): each step's facts in, the
 * core's answer and actions out, in the order at the top of this file. */
static bool buy_handle(gw_req_t *r)
{
    buy_ctx_t x;
    x.sale = buy_sale(r);
    if (!x.sale)
        return false;
    gw_buy_core_t *c = core_of(r);
    gw_buy_core_init(c, r->w->srv->cfg->durability == GW_DURABILITY_FSYNC);
    gw_buy_out_t out;
    gw_buy_ev_t ev = {.kind = GW_BUY_EV_HEAD};
    /* what a sold-out head leaves unread (head_facts returns before it) */
    x.now_ms = 0;
    memset(&x.info, 0, sizeof(x.info));
    x.phase = GW_FAIR_OPEN;
    head_facts(r, &x, &ev);
    gw_buy_core_step(c, &ev, x.now_ms, &out);
    if (out.answer != GW_BUY_A_NONE) {
        head_answer(r, &x, &out);
        return false;
    }
    if (!buyer_facts(r, &x))
        return false;
    ev = (gw_buy_ev_t){.kind = GW_BUY_EV_BUYER, .qty = gw_req_buy(r)->res.qty,
                       .per_user_limit = x.info.per_user_limit};
    gw_buy_core_step(c, &ev, x.now_ms, &out);
    if (out.answer == GW_BUY_A_QTY_OVER_LIMIT) {
        gw_hitters_add(r->w, gw_req_buy(r)->res.user_id, NULL, 0);
        gw_resp_error(&r->resp, GW_R_LIMIT_PER_USER, NULL,
                      "qty %u exceeds the per-user limit of %u", gw_req_buy(r)->res.qty,
                      x.info.per_user_limit);
        return false;
    }
    if (!gw_ol_buy_admit(r, gw_req_buy(r)->res.user_id))
        return false;
    ev = (gw_buy_ev_t){.kind = GW_BUY_EV_LIMITS};
    limits_facts(r, &x, &ev);
    gw_buy_core_step(c, &ev, x.now_ms, &out);
    if (out.answer == GW_BUY_A_RATE_LIMITED) {
        gw_hitters_add(r->w, gw_req_buy(r)->res.user_id, x.ipkey, x.iplen);
        gw_buy_rate_limited(r, &x.v);
        return false;
    }
    if (out.actions & GW_BUY_DO_ENTER) {
        buy_enter(r, &x);
        return false;
    }
    if (out.actions & GW_BUY_DO_ADMIT) {
        ev = (gw_buy_ev_t){.kind = GW_BUY_EV_ADMITTED, .rc = buy_admit(r, &x)};
        gw_buy_core_step(c, &ev, x.now_ms, &out);
    }
    if (out.answer != GW_BUY_A_NONE) {
        buy_say(r, &out);
        return false;
    }
    return buy_reserve(r, &x);
}

/*---- fsync group commit, once per loop iteration ----*/

/* The batch's sync waits for this worker's records only (sync_upto): another
 * worker's record appended later, and its failed fdatasync, are not this
 * batch's to answer.
 *
 * The admission tokens its orders claimed on one gateway are made durable
 * before the 202 too: a power cut must not keep an answered order and lose
 * the claim of the token it spent (the token could buy again), whereas a
 * claim kept without its order only leaves the token spent, as a crash
 * between the claim and the answer does. Each claim's line was written
 * (gw_fair_admission_claim) before its reserve, so before this work was
 * queued: the room log's fdatasync from here covers it. The claims and the
 * orders are in two files, so two fdatasyncs; claim_work runs the room's
 * beside sync_work's spool one (two works of libuv's pool), and the answers
 * wait for both (sync_after): the batch waits for the slower of the two, not
 * for their sum, and the filesystem commits its journal for both at once
 * (`python3 bench/room_fsync.py --conc 16`: a room buy's p50 12.1 ms in
 * turn, 5.1 ms side by side, against 2.8-3.8 ms without a room). Neither order of the two would keep a crash from saving the order's
 * record without the claim's line (the kernel writes pages back on its own),
 * so running them at once takes nothing from what the 202 promises. Once per
 * sale of the batch (a batch of more sales than `done` holds may sync one
 * twice, still correct). A failed room fdatasync leaves the answers as they
 * are: the order is durable and will be settled, so a 503 would be false; the
 * store logs and counts it (the room's claim_sync_failures). */
static void claim_work(uv_work_t *wk)
{
    gw_worker_t *w = wk->data;
    const char *done[16];
    size_t ndone = 0;
    for (const gw_req_t *r = w->buy->sync_batch; r; r = r->next) {
        if (!gw_req_buy(r)->adm_jti)
            continue;
        bool seen = false;
        for (size_t i = 0; i < ndone && !seen; i++)
            seen = strcmp(done[i], r->id) == 0;
        if (seen)
            continue;
        (void)gw_fair_admission_sync(w->srv->fair, r->id);
        if (ndone < CM_ARRAY_LEN(done))
            done[ndone++] = r->id;
    }
}

static void sync_work(uv_work_t *wk)
{
    gw_worker_t *w = wk->data;
    w->buy->sync_result = oq_spool_sync_to(w->srv->stores.spool, w->buy->sync_upto);
}

static void sync_after(uv_work_t *wk, int status)
{
    (void)status;
    gw_worker_t *w = wk->data;
    if (--w->buy->sync_pending > 0)
        return; /* the other of the batch's two works is still running */
    w->buy->sync_running = false;
    gw_req_t *r = w->buy->sync_batch;
    w->buy->sync_batch = NULL;
    while (r) {
        gw_req_t *next = r->next;
        /* A failed batch may still hold records an earlier round (another
         * worker's) made durable: those are relayed and settled, so they are
         * answered 202. After a CM_EIO the spool answers each end at once,
         * without an fdatasync, so this runs on the loop. */
        int rc = w->buy->sync_result == 0
                     ? 0
                     : oq_spool_sync_to(w->srv->stores.spool, gw_req_buy(r)->spool_end);
        /* A failed one: the reservation stays (at worst undersell, never
         * oversell: if the cut itself failed, the record may come back at a
         * restart), the answer is 503 not confirmed (gw_buy_core.h SYNCED). */
        gw_buy_out_t out;
        gw_buy_core_step(core_of(r), &(gw_buy_ev_t){.kind = GW_BUY_EV_SYNCED, .rc = rc}, 0, &out);
        gw_ol_release(r, GW_DEP_SPOOL, rc ? GW_AL_DROP : GW_AL_OK);
        if (!buy_do(r, &out)) /* SYNCED holds nothing: always answered */
            buy_finish(r);
        r = next;
    }
    if (w->buy->sync_result != 0)
        cm_log_error("gw", "spool fsync failed", "err=%s", cm_errname(w->buy->sync_result));
    gw_buy_loop_tick(w);
}

/* Step 7 for one order of a spool batch written with result rc (gw_buy_core.h
 * SPOOLED): 202, or with durability fsync the group commit first; a failed
 * write is not durable, so not accepted, and its units go back. Rare: the
 * room was checked before the reserve with the batch counted (left: other
 * workers' appends, Redis reserves still in flight at that check, a failed
 * write). */
static void spooled(gw_req_t *r, int rc)
{
    if (rc == 0)
        r->w->buy->notify_relay = true;
    gw_buy_out_t out;
    gw_buy_core_step(core_of(r), &(gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = rc}, 0, &out);
    if (!buy_do(r, &out))
        buy_finish(r);
}

#define SPOOL_BATCH 64 /* orders per write(2): ~16 KiB of records */

/* The spool batch: the records of the orders reserved since the last flush,
 * SPOOL_BATCH per write(2), each order answered after its write. An answer may
 * let its connection parse a pipelined buy, which joins the next batch: the
 * loop runs until none is left. The write is not all or nothing: the orders
 * whose records it kept (those that fit under the cap, the whole records of a
 * short write) are accepted and only the others refused, so the answers agree
 * with what the spool replays. */
static void spool_flush(gw_worker_t *w)
{
    while (w->buy->spool_wait) {
        gw_req_t *r = w->buy->spool_wait;
        w->buy->spool_wait = NULL;
        w->buy->spool_wait_tail = &w->buy->spool_wait;
        w->buy->spool_wait_bytes = 0;
        while (r) {
            const oq_order_t *orders[SPOOL_BATCH];
            gw_req_t *first = r;
            size_t n = 0, kept = 0;
            for (; r && n < SPOOL_BATCH; r = r->next)
                orders[n++] = &gw_req_buy(r)->order;
            /* One write(2): a sync round covers all of its records or none
             * (it reads the end under the append mutex), so each order's
             * record is durable once the write's end is. */
            oq_pos_t end;
            int rc = oq_spool_append_batch(w->srv->stores.spool, orders, n, &kept, &end);
            size_t i = 0;
            for (gw_req_t *q = first; q != r; i++) {
                gw_req_t *next = q->next; /* q may be freed and reused by its answer */
                gw_req_buy(q)->spool_end = end;
                spooled(q, i < kept ? 0 : rc);
                q = next;
            }
        }
    }
}

void gw_buy_loop_tick(gw_worker_t *w)
{
    spool_flush(w);
    if (w->buy->sync_running || !w->buy->sync_wait)
        return;
    w->buy->sync_batch = w->buy->sync_wait;
    w->buy->sync_upto = w->buy->sync_wait_end;
    w->buy->sync_wait = NULL;
    w->buy->sync_wait_tail = &w->buy->sync_wait;
    w->buy->sync_running = true;
    w->buy->sync_pending = 1;
    for (const gw_req_t *r = w->buy->sync_batch; r; r = r->next)
        if (gw_req_buy(r)->adm_jti) { /* the room's fdatasync beside the spool's (claim_work) */
            w->buy->claim_work.data = w;
            if (uv_queue_work(&w->loop, &w->buy->claim_work, claim_work, sync_after) == 0)
                w->buy->sync_pending++;
            else /* never with a valid work and callback; in turn, as a fallback */
                claim_work(&w->buy->claim_work);
            break;
        }
    w->buy->sync_work.data = w;
    uv_queue_work(&w->loop, &w->buy->sync_work, sync_work, sync_after);
}

/*---- GET /v1/orders/{id}, GET /v1/sales/{id} ----*/

/*
 * GET /v1/orders/{id} of a lottery entry that is not an order: 200 "entered"
 * until the draw, 410 sold_out with the draw position for a loser ("status"
 * "lost", final, or "waitlisted" with its place: it may still win); a winner
 * reads "queued" until its order is in the table (then it is a normal order).
 */
static void fair_order(gw_req_t *r, const gw_fair_ticket_t *t)
{
    gw_resp_t *p = &r->resp;
    if (t->state == GW_ENTRY_LOST) {
        char extra[96];
        snprintf(extra, sizeof(extra), "\"status\":\"lost\",\"draw_position\":%u,\"entrants\":%u",
                 t->position, t->entrants);
        gw_resp_error(p, GW_R_SOLD_OUT, extra,
                      "not drawn: position %u of %u entrants in the start-window draw of sale %s",
                      t->position, t->entrants, t->sale_id);
    } else if (t->state == GW_ENTRY_WAITLISTED) {
        char extra[128];
        snprintf(extra, sizeof(extra),
                 "\"status\":\"waitlisted\",\"draw_position\":%u,\"entrants\":%u,"
                 "\"waitlist_position\":%u",
                 t->position, t->entrants, t->waitlist_place);
        gw_resp_error(p, GW_R_SOLD_OUT, extra,
                      "not drawn: position %u of %u entrants in the start-window draw of sale %s; "
                      "waitlisted at place %u: units freed go to the waitlist in draw order "
                      "until the sale ends (GET again)",
                      t->position, t->entrants, t->sale_id, t->waitlist_place);
    } else {
        gw_resp_init(p, GW_R_OK);
        char at[40], dr[40];
        cm_time_format_rfc3339(t->entered_at_ms, at, sizeof(at));
        cm_time_format_rfc3339(t->draw_at_ms, dr, sizeof(dr));
        p->body_len = (size_t)snprintf(
            p->body, sizeof(p->body),
            "{\"order_id\":\"%s\",\"status\":\"%s\",\"sale_id\":\"%s\",\"qty\":%u,"
            "\"entered_at\":\"%s\",\"draw_at\":\"%s\"}",
            t->order_id, t->state == GW_ENTRY_WON ? "queued" : "entered", t->sale_id, t->qty, at, dr);
    }
    gw_resp_header(p, "Cache-Control", "no-store");
}

void gw_order_handle(gw_req_t *r)
{
    oq_order_t ord;
    /* An order id is Crockford base32 (cm_id), which reads lower case as
     * upper: such a spelling names the same order, which the status table
     * finds by number. The token binds the text the 202 gave, the canonical
     * one: without this the right token with a lower-case id answered 404 for
     * an order that exists. */
    char canon[CM_ID_TEXT_LEN + 1];
    const char *id = r->id;
    uint64_t num;
    if (cm_id_parse(r->id, strlen(r->id), &num) == 0) {
        cm_id_format(num, canon);
        id = canon;
    }
    /* Without the order's status token it does not exist, whether it does or not. */
    const char *tok = gw_req_arg(r, "token");
    if (!tok)
        tok = gw_req_header(r, "X-Order-Token");
    bool tok_ok = gw_status_token_ok(r->w->srv, id, tok);
    /* With identity on, the verified buyer reads their own order without it:
     * an order by the owner table (gw_identity_order_put), a lottery entry by
     * the user it is keyed on. */
    char buyer[ID_USER_MAX + 1];
    bool verified = !tok_ok && gw_identity_user(r, buyer);
    if (verified)
        tok_ok = gw_identity_order_owner(r->w->srv, id, buyer);
    gw_orders_found_t f =
        tok_ok ? gw_orders_lookup(r->w->srv->stores.orders, id, &ord) : GW_ORDERS_UNKNOWN;
    if (f != GW_ORDERS_FOUND) {
        gw_fair_ticket_t t;
        int lr = tok_ok || verified ? gw_fair_lookup(r->w->srv->fair, id, &t) : 0;
        if (lr > 0 && (tok_ok || strcmp(t.user_id, buyer) == 0)) {
            fair_order(r, &t);
            return;
        }
        if (lr < 0 && f == GW_ORDERS_UNKNOWN) { /* a fleet's entry Redis cannot read now */
            gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL,
                          "cannot read the fleet's lottery entries now; retry");
            gw_resp_retry_after(&r->resp, 1);
            return;
        }
    }
    if (f == GW_ORDERS_EXPIRED) {
        gw_resp_error(&r->resp, GW_R_UNKNOWN_ORDER, "\"expired\":true",
                      "order %s has expired from this gateway's status table (it keeps the "
                      "latest orders.max_known orders); the orders database has it",
                      id);
        return;
    }
    if (f != GW_ORDERS_FOUND) {
        gw_resp_error(&r->resp, GW_R_UNKNOWN_ORDER, NULL, "no order %s", id);
        return;
    }
    gw_resp_t *p = &r->resp;
    gw_resp_init(p, GW_R_OK);
    char at[40];
    cm_time_format_rfc3339(ord.accepted_at_ms, at, sizeof(at));
    size_t n = (size_t)snprintf(
        p->body, sizeof(p->body),
        "{\"order_id\":\"%s\",\"status\":\"%s\",\"sale_id\":\"%s\",\"qty\":%u,"
        "\"accepted_at\":\"%s\"",
        ord.order_id, oq_status_name(ord.status), ord.sale_id, ord.qty, at);
    if (ord.reason[0]) {
        n += (size_t)snprintf(p->body + n, sizeof(p->body) - n, ",\"reason\":\"");
        gw_json_escape(p->body, sizeof(p->body) - 4, &n, ord.reason);
        n += (size_t)snprintf(p->body + n, sizeof(p->body) - n, "\"");
    }
    n += (size_t)snprintf(p->body + n, sizeof(p->body) - n, "}");
    p->body_len = n;
    gw_resp_header(p, "Cache-Control", "no-store");
}

/*
 * Sale info is the one public answer a CDN may keep (docs/cdn.md). How long
 * depends on how soon it can change: while a sale is upcoming or live the stock
 * moves every millisecond and the start second matters, so 1 s (the origin sees
 * about one request per second per sale and edge); sold out changes only by
 * an operator's restock, so 10 s; ended changes only by an operator moving
 * ends_at, so 60 s. An unknown sale is kept 1 s too, so a crowd polling a sale
 * that is not defined yet does not reach the origin, and its creation shows
 * within a second. No Vary: the answer is the same bytes for every client
 * (no compression, no negotiation), and a Vary would only split the cache.
 */
#define SALE_MAX_AGE_S 1
#define SALE_SOLD_OUT_MAX_AGE_S 10
#define SALE_ENDED_MAX_AGE_S 60
#define SALE_DEGRADED_MAX_AGE_S 5 /* degrade level >= 1: caches absorb more */

void gw_sale_handle(gw_req_t *r)
{
    inv_sale_t *sale = inv_sale_find(r->w->srv->stores.inv, r->id);
    if (!sale) {
        gw_resp_error(&r->resp, GW_R_UNKNOWN_SALE, NULL, "no sale %s", r->id);
        gw_resp_header(&r->resp, "Cache-Control", "public, max-age=%d", SALE_MAX_AGE_S);
        return;
    }
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    gw_resp_init(&r->resp, GW_R_OK);
    int64_t now = cm_wall_ms();
    r->resp.body_len = gw_sale_json(&info, false, now, r->resp.body, sizeof(r->resp.body));
    gw_sale_state_t state = gw_sale_state(&info, now);
    int max_age = state == GW_SALE_ENDED      ? SALE_ENDED_MAX_AGE_S
                  : state == GW_SALE_SOLD_OUT ? SALE_SOLD_OUT_MAX_AGE_S
                                              : SALE_MAX_AGE_S;
    if (gw_ol_level(r->w->srv) >= GW_LEVEL_DEGRADE && r->resp.body_len > 1) {
        /* Degraded: say the view may lag (it is the local one, refreshed each
         * second from Redis) and let caches keep it longer. */
        r->resp.body_len--;
        r->resp.body_len += (size_t)snprintf(r->resp.body + r->resp.body_len,
                                             sizeof(r->resp.body) - r->resp.body_len,
                                             ",\"stale\":true}");
        if (max_age < SALE_DEGRADED_MAX_AGE_S)
            max_age = SALE_DEGRADED_MAX_AGE_S;
        gw_resp_header(&r->resp, "X-Flashgate-Degraded", "1");
    }
    gw_resp_header(&r->resp, "Cache-Control", "public, max-age=%d", max_age);
}

/* The 425 for sale_id, its retry_after and Retry-After `retry` seconds. */
static void not_started_resp(gw_resp_t *out, const char *sale_id, uint64_t retry)
{
    char extra[64];
    snprintf(extra, sizeof(extra), "\"retry_after\":%llu", (unsigned long long)retry);
    gw_resp_error(out, GW_R_NOT_STARTED, extra, "sale %s has not started", sale_id);
    gw_resp_retry_after(out, retry);
}

gw_prep_t *gw_not_started_response(gw_worker_t *w, const inv_sale_t *sale, const char *sale_id,
                                   uint64_t retry)
{
    gw_worker_buy_t *b = w->buy;
    unsigned slot = b->nnot_started;
    for (unsigned i = 0; i < b->nnot_started; i++) {
        if (b->not_started_cache[i].sale == sale) {
            if (b->not_started_cache[i].retry == retry)
                return b->not_started_cache[i].resp;
            slot = i; /* the second changed: this sale's answer is made again */
            break;
        }
    }
    if (slot == CM_ARRAY_LEN(b->not_started_cache))
        slot = b->not_started_next++ % CM_ARRAY_LEN(b->not_started_cache);
    gw_resp_t tmp;
    not_started_resp(&tmp, sale_id, retry);
    gw_prep_t *mr = gw_prep_new(&tmp, w); /* Content-Type, no-store */
    if (slot == b->nnot_started)
        b->nnot_started++;
    else
        gw_prep_free(b->not_started_cache[slot].resp);
    b->not_started_cache[slot].sale = sale;
    b->not_started_cache[slot].retry = retry;
    b->not_started_cache[slot].resp = mr;
    return mr;
}

void gw_buy_prep_free(gw_worker_t *w)
{
    for (unsigned k = 0; k < w->buy->nsold_out; k++)
        gw_prep_free(w->buy->sold_out_cache[k].resp);
    w->buy->nsold_out = 0;
    for (unsigned k = 0; k < w->buy->nnot_started; k++)
        gw_prep_free(w->buy->not_started_cache[k].resp);
    w->buy->nnot_started = 0;
    w->buy->not_started_next = 0;
    for (unsigned k = 0; k < w->buy->nunknown; k++) {
        gw_prep_free(w->buy->unknown_cache[k].resp);
        w->buy->unknown_cache[k].resp = NULL;
    }
    w->buy->nunknown = 0;
    w->buy->unknown_next = 0;
}

void gw_buy_relay_notify(gw_server_t *srv)
{
    if (srv->stores.relay)
        oq_relay_notify(srv->stores.relay);
}

gw_prep_t *gw_sold_out_response(gw_worker_t *w, const inv_sale_t *sale)
{
    for (unsigned i = 0; i < w->buy->nsold_out; i++)
        if (w->buy->sold_out_cache[i].sale == sale)
            return w->buy->sold_out_cache[i].resp;
    if (w->buy->nsold_out == CM_ARRAY_LEN(w->buy->sold_out_cache))
        return NULL;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    gw_resp_t tmp;
    gw_resp_sold_out(&tmp, info.sale_id);
    gw_prep_t *mr = gw_prep_new(&tmp, w); /* Content-Type, no-store */
    w->buy->sold_out_cache[w->buy->nsold_out].sale = sale;
    w->buy->sold_out_cache[w->buy->nsold_out].resp = mr;
    w->buy->nsold_out++;
    return mr;
}
