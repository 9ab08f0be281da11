/*
 * The public fairness routes (gw_fair_routes.h): the waiting room's queue and
 * registration. Each checks the buyer as the buy does (the address's limits,
 * the identity, eligibility, the user's limits, in that order) and then asks
 * the room (gw_fair.h) or registration (gw_reg.h); what a place, a ticket or
 * a registration is stays theirs.
 *
 * Waiting-room tokens: a ticket "<position>.<mac>" over "q:<sale>:<person>:<pos>"
 * and an admission token "<expiry s>.<jti>.<mac>" over
 * "a:<sale>:<person>:<expiry>:<jti>" (jti: 16 lower-case hex digits), MACs of
 * gw_token_mac (the fleet's status key), so any gateway checks them. The room
 * gives both out here; the buy checks the admission token (gw_buy.c).
 */
#include "gateway/buy/gw_fair_routes.h"

#include "common/cm_err.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_limit.h"
#include "gateway/buy/gw_buy_t.h"
#include "gateway/buy/gw_elig.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_identity.h"
#include "gateway/buy/gw_rate_reply.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_sale_core.h"
#include "gateway/edge/gw_edge.h"

#include <stdio.h>
#include <string.h>

/*
 * The buyer, checked as the buy checks one and in its order: user_id's form;
 * with identity on, the address's limits (IP, subnet) before the token's
 * check, then the token (its person: gw_req_buy(r)->person); without it,
 * user_id is the person; eligibility (an ineligible person takes no place, no
 * ticket, no registration: the sale would refuse them anyway); then, when
 * limit_user, the user's limits (per IP, per user, the sale's rule). Returns
 * the user (verified holds a verified one) or NULL with r answered.
 */
static const char *buyer_check(gw_req_t *r, const char *user, bool limit_user,
                               char verified[ID_USER_MAX + 1])
{
    gw_server_t *srv = r->w->srv;
    if (user && !inv_id_valid(user, strlen(user), INV_USER_ID_MAX)) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                      "user_id must be 1..64 characters of A-Z a-z 0-9 . _ -");
        return NULL;
    }
    bool identity = gw_identity_on(srv);
    uint8_t ipkey[16];
    size_t iplen = gw_client_key(&srv->conns.proxies, gw_req_peer(r), gw_req_xff(r), ipkey);
    gw_limit_verdict_t lv;
    if (identity) {
        gw_limits_admit_ip(srv->stores.limits, (const char *)ipkey, iplen, r->w->now_ns, &lv);
        if (!lv.allowed) {
            gw_hitters_add(r->w, NULL, ipkey, iplen);
            gw_buy_rate_limited(r, &lv);
            return NULL;
        }
        if (!gw_identity_check(r, user, verified))
            return NULL;
        user = verified;
    } else if (!user) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL, "missing query parameter user_id");
        return NULL;
    } else {
        snprintf(gw_req_buy(r)->person, sizeof(gw_req_buy(r)->person), "%s", user);
    }
    if (!gw_elig_check(r, r->id, cm_wall_ms()))
        return NULL;
    if (!limit_user)
        return user;
    gw_limits_admit(srv->stores.limits, user, strlen(user), identity ? NULL : (const char *)ipkey,
                    identity ? 0 : iplen, r->id, strlen(r->id), r->w->now_ns, &lv);
    if (!lv.allowed) {
        gw_hitters_add(r->w, user, ipkey, iplen);
        gw_buy_rate_limited(r, &lv);
        return NULL;
    }
    return user;
}

/*---- GET /v1/sales/{id}/queue ----*/

void gw_room_handle(gw_req_t *r)
{
    gw_server_t *srv = r->w->srv;
    gw_resp_t *p = &r->resp;
    inv_sale_t *sale = inv_sale_find(srv->stores.inv, r->id);
    if (!sale) {
        gw_resp_error(p, GW_R_UNKNOWN_SALE, NULL, "no sale %s", r->id);
        return;
    }
    gw_fair_sale_t *fs = gw_fair_room(srv->fair, r->id);
    if (!fs) {
        gw_resp_error(p, GW_R_NOT_FOUND, NULL, "sale %s has no waiting room", r->id);
        return;
    }
    gw_fair_terms(fs, sale);
    gw_sale_cfg_t cfg;
    gw_sale_cfg_get(gw_fair_machine(fs), &cfg);
    int64_t starts = cfg.starts_at_ms;
    int64_t now_ms = cm_wall_ms();
    gw_fair_room_view_t v;
    gw_fair_room_view(fs, &v);
    const char *user = gw_req_arg(r, "user_id");
    const char *ticket = gw_req_arg(r, "ticket");
    /* With identity on, a request for a place (user_id, ticket or join in the
     * query, or a bearer token) is the verified person's: the places, tickets,
     * admission tokens are keyed by the person (gw_req_buy_t.person), the per-user
     * bucket by the user. A cookie or trusted header alone does not make a join
     * of the page poll. */
    bool identity = gw_identity_on(srv);
    bool personal = user || ticket ||
                    (identity && (gw_req_arg(r, "join") || gw_req_header(r, "Authorization")));
    if (!personal) {
        /* the queue page every client polls: the same bytes for all, cacheable */
        gw_resp_init(p, GW_R_OK);
        p->body_len = (size_t)snprintf(
            p->body, sizeof(p->body),
            "{\"sale_id\":\"%s\",\"admitting_through\":%llu,\"queued\":%llu,"
            "\"prequeued\":%llu,\"rate_per_s\":%.3f}",
            r->id, (unsigned long long)v.admitted_through, (unsigned long long)v.queued,
            (unsigned long long)v.prequeued, v.rate_per_s);
        gw_resp_header(p, "Cache-Control", "public, max-age=1");
        return;
    }
    /* After the end a place buys nothing. And a room is sealed by the terms'
     * start only before their end: a fleet's gateway still holding a deleted
     * sale's terms (ended) must not seal the room of the sale created again. */
    if (gw_sale_phase(gw_fair_machine(fs), now_ms) == GW_SALE_PH_ENDED) {
        gw_resp_error(p, GW_R_SALE_ENDED, NULL, "sale %s has ended", r->id);
        return;
    }
    /* A join takes a place, which every later buyer waits behind: it goes
     * through the buy's limiters (per IP, per user, the sale's rule), and a
     * person who holds a place gets it back. A ticket refresh or a HEAD takes
     * none (HEAD's head is the one a join would get now), but may cost a
     * verification: it spends the address's buckets too, so a flood of them
     * is refused unverified. */
    bool take = !ticket && r->verb != GW_VERB_HEAD;
    char verified[ID_USER_MAX + 1];
    if (!buyer_check(r, user, take, verified))
        return;
    const char *person = gw_req_buy(r)->person;
    size_t person_len = strlen(person);
    char msg[200], mac[GW_TOKEN_LEN + 1];
    uint64_t q = 0;
    if (ticket) {
        const char *dot = strchr(ticket, '.');
        q = dot ? gw_token_number(ticket, dot) : 0;
        if (q > 0) {
            snprintf(msg, sizeof(msg), "q:%s:%s:%llu", r->id, person, (unsigned long long)q);
            if (!gw_token_mac_ok(srv, msg, dot + 1, strlen(dot + 1)))
                q = 0;
        }
        if (!q) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                          "ticket is not one of this sale's for this person");
            return;
        }
    }
    gw_wr_join_t j;
    int rc = gw_fair_room_join(fs, person, person_len, take, now_ms, v.admitted_through, &j);
    if (rc == CM_EBACKEND) { /* a fleet's room is Redis': no place from a local guess */
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL, "the waiting room of sale %s cannot be reached "
                      "now; retry", r->id);
        gw_resp_retry_after(p, 1);
        return;
    }
    if (rc == CM_EAGAIN) { /* the pre-queue's seal is on its way to disk */
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL,
                      "the waiting room of sale %s is opening; retry", r->id);
        gw_resp_retry_after(p, 1);
        return;
    }
    if (rc == CM_EIO) { /* one gateway's pre-queue join is on disk before its answer */
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL,
                      "the waiting room of sale %s could not record the join; retry", r->id);
        gw_resp_retry_after(p, 1);
        return;
    }
    if (rc == CM_EBUSY) {
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL,
                      "the pre-queue of sale %s is full; join again after the start", r->id);
        gw_resp_retry_after(p, (uint64_t)((starts - now_ms) / 1000 + 1));
        return;
    }
    if (j.prequeue) {
        /* before the start: no place yet; the order is drawn at the start */
        char at[40];
        cm_time_format_rfc3339(starts, at, sizeof(at));
        gw_resp_init(p, GW_R_OK);
        p->body_len = (size_t)snprintf(p->body, sizeof(p->body),
                                       "{\"sale_id\":\"%s\",\"prequeue\":true,\"joined\":%s,"
                                       "\"starts_at\":\"%s\",\"retry_after\":%lld}",
                                       r->id, take ? "true" : "false", at,
                                       (long long)((starts - now_ms) / 1000 + 1));
        gw_resp_header(p, "Cache-Control", "no-store");
        return;
    }
    if (ticket && j.pos != q) {
        gw_resp_error(p, GW_R_CONFLICT, "\"reason\":\"place_gone\"",
                      "this ticket's place of sale %s is no longer held (its admission "
                      "expired or the room's table gave it up): join again",
                      r->id);
        return;
    }
    uint64_t pos = j.pos ? j.pos : v.queued + 1; /* HEAD without a place: the next one */
    snprintf(msg, sizeof(msg), "q:%s:%s:%llu", r->id, person, (unsigned long long)pos);
    gw_token_mac(srv, msg, mac);
    gw_resp_init(p, GW_R_OK);
    size_t n = (size_t)snprintf(
        p->body, sizeof(p->body),
        "{\"sale_id\":\"%s\",\"position\":%llu,\"admitting_through\":%llu,"
        "\"ticket\":\"%llu.%s\"",
        r->id, (unsigned long long)pos, (unsigned long long)v.admitted_through,
        (unsigned long long)pos, mac);
    if (j.exp_s) {
        snprintf(msg, sizeof(msg), "a:%s:%s:%lld:%016llx", r->id, person, (long long)j.exp_s,
                 (unsigned long long)j.jti);
        gw_token_mac(srv, msg, mac);
        long long left = (long long)j.exp_s - now_ms / 1000;
        n += (size_t)snprintf(p->body + n, sizeof(p->body) - n,
                              ",\"admission_token\":\"%lld.%016llx.%s\",\"expires_in_s\":%lld",
                              (long long)j.exp_s, (unsigned long long)j.jti, mac,
                              left > 0 ? left : 0);
    } else if (v.rate_per_s > 0) {
        n += (size_t)snprintf(p->body + n, sizeof(p->body) - n, ",\"eta_s\":%.1f",
                              pos > v.admitted_through
                                  ? (double)(pos - v.admitted_through) / v.rate_per_s
                                  : 0.0);
    } else {
        n += (size_t)snprintf(p->body + n, sizeof(p->body) - n, ",\"eta_s\":null");
    }
    n += (size_t)snprintf(p->body + n, sizeof(p->body) - n, "}");
    p->body_len = n;
    gw_resp_header(p, "Cache-Control", "no-store");
}

/*---- POST /v1/sales/{id}/registrations ----*/

static void put_window(char *out, size_t cap, int64_t opens, int64_t closes)
{
    char o[40], c[40];
    cm_time_format_rfc3339(opens, o, sizeof(o));
    cm_time_format_rfc3339(closes, c, sizeof(c));
    snprintf(out, cap, "\"opens_at\":\"%s\",\"closes_at\":\"%s\"", o, c);
}

/*
 * fsync durability: a registration's answer waits for its log's fdatasync
 * (gw_reg_sync), run on libuv's pool, one work per worker at a time over
 * every registration held since the last one started (and the store's sync
 * shares each fdatasync across the workers): the answers of a crowd
 * registering wait one or two fdatasyncs, not one each.
 */
static void reg_batch_start(gw_worker_t *w);

static void reg_sync_work(uv_work_t *wk)
{
    gw_worker_t *w = wk->data;
    for (gw_req_t *r = w->buy->reg_batch; r; r = r->next)
        gw_req_buy(r)->reg_held = gw_reg_sync(w->srv, r->id, gw_req_buy(r)->reg_held);
}

static void reg_sync_after(uv_work_t *wk, int status)
{
    (void)status;
    gw_worker_t *w = wk->data;
    gw_req_t *r = w->buy->reg_batch;
    w->buy->reg_batch = NULL;
    w->buy->reg_running = false;
    while (r) {
        gw_req_t *next = r->next; /* r is freed or reused once answered */
        if (gw_req_buy(r)->reg_held < 0) { /* the body of its outcome was ready: replaced */
            gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL,
                          "registration failed: the registration log fdatasync failed; retry");
            gw_resp_retry_after(&r->resp, 1);
        }
        gw_req_finish(r);
        r = next;
    }
    reg_batch_start(w);
}

static void reg_batch_start(gw_worker_t *w)
{
    if (w->buy->reg_running || !w->buy->reg_wait)
        return;
    w->buy->reg_batch = w->buy->reg_wait;
    w->buy->reg_wait = NULL;
    w->buy->reg_running = true;
    w->buy->reg_work.data = w;
    if (uv_queue_work(&w->loop, &w->buy->reg_work, reg_sync_work, reg_sync_after) != 0) {
        reg_sync_work(&w->buy->reg_work); /* never with a valid work and callback */
        reg_sync_after(&w->buy->reg_work, 0);
    }
}

/* Holds r, answered (r->resp ready for outcome held) once its log is durable. */
static void reg_hold(gw_req_t *r, int held)
{
    gw_worker_t *w = r->w;
    r->state = GW_ST_WAIT; /* its connection reads nothing until gw_req_finish */
    w->suspended++;
    gw_req_buy(r)->reg_held = held;
    r->next = w->buy->reg_wait;
    w->buy->reg_wait = r;
    reg_batch_start(w);
}

bool gw_reg_handle(gw_req_t *r)
{
    gw_server_t *srv = r->w->srv;
    gw_resp_t *p = &r->resp;
    /* 1. the sale and its window: nothing verified for a closed registration */
    if (!inv_sale_find(srv->stores.inv, r->id)) {
        gw_resp_error(p, GW_R_UNKNOWN_SALE, NULL, "no sale %s", r->id);
        return false;
    }
    int64_t opens = 0, closes = 0;
    if (!gw_reg_window(srv, r->id, &opens, &closes)) {
        gw_resp_error(p, GW_R_NOT_FOUND, NULL, "sale %s has no registration", r->id);
        return false;
    }
    gw_sale_cfg_t cfg = {.reg_opens_ms = opens, .reg_closes_ms = closes};
    gw_sale_phase_t ph = gw_sale_phase_at(&cfg, false, false, cm_wall_ms());
    char win[128];
    put_window(win, sizeof(win), opens, closes);
    if (ph != GW_SALE_PH_REGISTRATION) {
        gw_resp_error(p, GW_R_REGISTRATION_CLOSED, win, "registration for sale %s is %s", r->id,
                      ph == GW_SALE_PH_BEFORE ? "not open yet" : "closed");
        return false;
    }
    /* 2. the address's limits, 3. the identity, 4. the user's limits: as a buy */
    char verified[ID_USER_MAX + 1];
    if (!buyer_check(r, gw_req_arg(r, "user_id"), true, verified))
        return false;
    char why[256] = "";
    bool sync = false;
    int rc = gw_reg_add(srv, r->id, gw_req_buy(r)->person, &sync, why, sizeof(why));
    if (rc == GW_REG_GONE) {
        gw_resp_error(p, GW_R_NOT_FOUND, NULL, "sale %s has no registration", r->id);
        return false;
    }
    if (rc == GW_REG_SHUT) { /* the window closed since the check above */
        gw_resp_error(p, GW_R_REGISTRATION_CLOSED, win, "registration for sale %s is closed",
                      r->id);
        return false;
    }
    if (rc == GW_REG_FULL) {
        gw_resp_error(p, GW_R_CONFLICT, "\"reason\":\"registration_full\"",
                      "registration for sale %s is full (%llu persons, "
                      "sales.max_registrations)",
                      r->id, (unsigned long long)srv->cfg->max_registrations);
        return false;
    }
    if (rc < 0) {
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL, "registration failed: %s; retry", why);
        gw_resp_retry_after(p, 1);
        return false;
    }
    gw_resp_init(p, rc == GW_REG_ADDED ? GW_R_CREATED : GW_R_OK);
    p->body_len =
        (size_t)snprintf(p->body, sizeof(p->body),
                         "{\"registered\":true,\"sale_id\":\"%s\",\"person\":\"%s\","
                         "\"new\":%s,%s}",
                         r->id, gw_req_buy(r)->person, rc == GW_REG_ADDED ? "true" : "false", win);
    gw_resp_header(p, "Cache-Control", "no-store");
    if (sync)
        reg_hold(r, rc);
    return sync;
}
