/*
 * The sales' admin routes: a sale's definition (stock, times, its lottery's
 * window, its registration and eligibility fields), its restock and deletion.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_elig.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_sale_edit.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sale_reply(gw_resp_t *p, gw_reply_t r, const inv_sale_info_t *info)
{
    gw_resp_init(p, r);
    p->body_len = gw_sale_json(info, true, cm_wall_ms(), p->body, sizeof(p->body));
}

static json_t *sale_obj(const inv_sale_info_t *info)
{
    char buf[1024];
    gw_sale_json(info, true, cm_wall_ms(), buf, sizeof(buf));
    return json_loads(buf, 0, NULL);
}

/*---- sales ----*/

/* Adds a sale's eligibility rule to its answer (only when it has one):
 * "require_claims":{"name":true,...},"min_account_age_days":N; an answer
 * longer than the small body (16 long names) goes out as a big one. */
static void elig_fields(gw_admin_call_t *a, const char *sale_id)
{
    gw_elig_rule_t el;
    gw_resp_t *p = a->p;
    if (!gw_elig_get(a->srv, sale_id, &el))
        return;
    json_t *o = json_loadb(p->body, p->body_len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return;
    }
    json_t *rq = json_object();
    for (uint32_t i = 0; i < el.n_claims; i++)
        json_object_set_new(rq, el.claims[i], json_true());
    json_object_set_new(o, "require_claims", rq);
    json_object_set_new(o, "min_account_age_days", json_integer(el.min_age_days));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    size_t n = s ? strlen(s) : 0;
    if (s && n < sizeof(p->body)) {
        memcpy(p->body, s, n + 1);
        p->body_len = n;
        free(s);
    } else {
        gw_admin_set_big(a, s);
    }
}

/*
 * A PUT's require_claims and min_account_age_days (absent: as they were)
 * checked into *out (gw_elig_parse), or 400 naming the problem.
 */
static bool elig_arg(gw_admin_call_t *a, json_t *j, const char *id, gw_elig_rule_t *out)
{
    gw_elig_rule_t old;
    bool had = gw_elig_get(a->srv, id, &old);
    int64_t days = had ? old.min_age_days : 0;
    if (!gw_admin_get_int(j, "min_account_age_days", 0, GW_ELIG_AGE_MAX_DAYS, false, &days, a->p))
        return false;
    json_t *rq = json_object_get(j, "require_claims"), *own = NULL;
    if (json_is_null(rq))
        rq = NULL;
    else if (!rq && had && old.n_claims) {
        rq = own = json_object();
        for (uint32_t i = 0; i < old.n_claims; i++)
            json_object_set_new(own, old.claims[i], json_true());
    }
    char why[512];
    int rc = gw_elig_parse(a->srv, id, rq, days, out, why, sizeof(why));
    json_decref(own);
    if (rc) {
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL, "%s", why);
        return false;
    }
    return true;
}

/* Appends the lottery's window to a sale body (only when the sale has one). */
static void fair_fields(gw_server_t *srv, gw_resp_t *p, const char *sale_id)
{
    int64_t w = 0, e = 0, wr = gw_fair_room_rate(srv->fair, sale_id);
    gw_fair_conf_get(srv->fair, sale_id, &w, &e);
    if (w > 0 && p->body_len >= 2 && p->body[p->body_len - 1] == '}') {
        p->body_len--;
        p->body_len += (size_t)snprintf(p->body + p->body_len, sizeof(p->body) - p->body_len,
                                        ",\"fair_window_ms\":%lld,\"fair_early_ms\":%lld}",
                                        (long long)w, (long long)e);
    }
    if (wr > 0 && p->body_len >= 2 && p->body[p->body_len - 1] == '}') {
        p->body_len--;
        p->body_len += (size_t)snprintf(p->body + p->body_len, sizeof(p->body) - p->body_len,
                                        ",\"waiting_room_rate\":%lld}", (long long)wr);
    }
}

/* Appends the registration window and count to a sale body (only when the sale has one). */
static void reg_fields(gw_server_t *srv, gw_resp_t *p, const char *sale_id)
{
    int64_t o = 0, c = 0;
    gw_reg_conf_get(srv, sale_id, &o, &c);
    if (o <= 0 || p->body_len < 2 || p->body[p->body_len - 1] != '}')
        return;
    long long n = 0;
    char why[160], os[40], cs[40];
    bool counted = gw_reg_count(srv, sale_id, &n, why, sizeof(why)) == 0;
    cm_time_format_rfc3339(o, os, sizeof(os));
    cm_time_format_rfc3339(c, cs, sizeof(cs));
    p->body_len--;
    p->body_len += (size_t)snprintf(
        p->body + p->body_len, sizeof(p->body) - p->body_len,
        ",\"registration_opens_at\":\"%s\",\"registration_closes_at\":\"%s\","
        "\"registrations\":%lld%s}",
        os, cs, n, counted ? "" : ",\"registrations_unknown\":true");
}

/*
 * h_sale_put's answer when the sale was saved and its lottery part then failed
 * (rc from gw_fair_configure): the audit line says what changed (the sale as
 * saved; "lottery_error" says why its lottery settings may not have been),
 * and so does the answer: the lottery failure's status, with "sale_saved":true
 * and a message naming both. Not "unchanged": a lottery applied here but not
 * saved to fair.json, or put in Redis but not applied here, is partly set.
 */
static void sale_saved_error(gw_admin_call_t *a, const char *id, int rc, const char *why,
                             const inv_sale_info_t *before, const inv_sale_info_t *info)
{
    json_t *now = sale_obj(info);
    if (now)
        json_object_set_new(now, "lottery_error", json_string(why[0] ? why : cm_strerror(rc)));
    gw_admin_audit(a, "sale.put", id, before ? sale_obj(before) : NULL, now);
    cm_log_warn("admin", "sale saved but its lottery settings were not", "sale=%s reason=\"%s\"",
                id, why);
    gw_reply_t st = rc == CM_ECONFLICT ? GW_R_CONFLICT
                    : rc == CM_EINVAL  ? GW_R_BAD_REQUEST
                                       : GW_R_UNAVAILABLE;
    gw_resp_error(a->p, st,
                  rc == CM_ECONFLICT ? "\"reason\":\"lottery_drawn\",\"sale_saved\":true"
                                     : "\"sale_saved\":true",
                  "sale %s is saved, but setting its lottery and waiting room failed (%s): "
                  "PUT again to set them",
                  id, why[0] ? why : cm_strerror(rc));
}

static void h_sale_put(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    gw_resp_t *p = a->p;
    if (!gw_admin_sale_arg(a))
        return;
    const char *id = a->arg;
    json_t *j = gw_admin_parse_object(a, p);
    if (!j)
        return;
    static const char *const keys[] = {"stock",          "per_user_limit", "starts_at",
                                       "ends_at",        "fair_window_ms", "fair_early_ms",
                                       "waiting_room_rate", "registration_opens_at",
                                       "registration_closes_at", "require_claims",
                                       "min_account_age_days", NULL};
    inv_sale_def_t d;
    memset(&d, 0, sizeof(d));
    memcpy(d.sale_id, id, strlen(id) + 1); /* id was checked: <= 64 chars */
    int64_t stock = 0, limit = 1, fwin = 0, fearly = 0;
    gw_fair_conf_get(srv->fair, id, &fwin, &fearly); /* absent: unchanged */
    int64_t wr = gw_fair_room_rate(srv->fair, id);
    int64_t ropen = 0, rclose = 0;
    gw_reg_conf_get(srv, id, &ropen, &rclose); /* absent: unchanged */
    gw_elig_rule_t elig; /* checked by elig_arg, set once all is valid */
    if (gw_admin_only_keys(j, keys, p) && gw_admin_get_int(j, "stock", 0, 1000000000000LL, true, &stock, p) &&
        gw_admin_get_int(j, "per_user_limit", 1, 1000000, false, &limit, p) &&
        gw_admin_get_time(j, "starts_at", &d.starts_at_ms, p) && gw_admin_get_time(j, "ends_at", &d.ends_at_ms, p) &&
        gw_admin_get_int(j, "fair_window_ms", 0, GW_FAIR_WINDOW_MAX_MS, false, &fwin, p) &&
        gw_admin_get_int(j, "fair_early_ms", 0, GW_FAIR_EARLY_MAX_MS, false, &fearly, p) &&
        gw_admin_get_int(j, "waiting_room_rate", 0, GW_WR_RATE_MAX, false, &wr, p) &&
        gw_admin_get_reg_time(j, "registration_opens_at", &ropen, p) &&
        gw_admin_get_reg_time(j, "registration_closes_at", &rclose, p) &&
        elig_arg(a, j, id, &elig)) {
        char bad[128];
        if (gw_sale_window_check(&d, fwin, bad, sizeof(bad)) != 0) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s", bad);
        } else {
            d.stock = stock;
            d.per_user_limit = (uint32_t)limit;
            inv_sale_info_t before;
            bool existed = inv_sale_get(srv->stores.inv, id, &before) == 0;
            inv_sale_info_t info;
            char why[256] = "";
            /* Fair by default: a new sale with a start and no word on its lottery gets
             * sales.default_fair_window_ms and, unless it says fair_early_ms,
             * sales.default_fair_early_ms (not with a waiting room, which orders its
             * buyers itself; not when the window would be over already). */
            int64_t dflt = (int64_t)srv->cfg->default_fair_window_ms;
            bool by_default = !existed && !json_object_get(j, "fair_window_ms") && fwin == 0 &&
                              wr == 0 && d.starts_at_ms && dflt > 0 &&
                              d.starts_at_ms + dflt > cm_wall_ms();
            if (by_default) {
                fwin = dflt;
                if (!json_object_get(j, "fair_early_ms"))
                    fearly = (int64_t)srv->cfg->default_fair_early_ms;
            }
            /* The lottery's refusals first: a 400 must leave the sale as it
             * was (a new sale not made, an existing one's stock and start
             * not moved under the entries it has taken). */
            int rc = gw_reg_window_check(ropen, rclose, fwin, d.starts_at_ms - fearly, why,
                                         sizeof(why));
            if (rc == 0)
                rc = gw_fair_configure_check(srv, id, d.starts_at_ms, fwin, fearly, wr, why,
                                             sizeof(why));
            if (rc == CM_EINVAL && by_default) {
                size_t wl = strlen(why);
                snprintf(why + wl, sizeof(why) - wl,
                         "; a sale created without fair_window_ms gets a %lld ms lottery "
                         "(sales.default_fair_window_ms): say \"fair_window_ms\":0 for first-come",
                         (long long)dflt);
            }
            bool drawn = rc == CM_ECONFLICT; /* the lottery has had its one draw */
            if (rc == 0)
                rc = gw_sale_edit(srv->stores.inv, &d, &info, why, sizeof(why));
            if (rc == 0 && (rc = gw_elig_set(srv, &elig, why, sizeof(why))) != 0) {
                sale_saved_error(a, id, rc, why, existed ? &before : NULL, &info);
                json_decref(j);
                return;
            }
            if (rc == 0) {
                rc = gw_fair_configure(srv, id, fwin, fearly, wr, why, sizeof(why));
                if (rc == 0)
                    rc = gw_reg_configure(srv, id, ropen, rclose, why, sizeof(why));
                if (rc != 0) {
                    /* The check passed but the lottery's part failed after the sale was
                     * saved: Redis failed, an entry or the draw raced the check. The sale
                     * cannot be put back safely (units may have sold meanwhile; a new sale
                     * cannot be deleted while live), so the change that was made is
                     * audited and the error says it: the sale is saved, its lottery and
                     * waiting room may not be (PUT again to set them). */
                    sale_saved_error(a, id, rc, why, existed ? &before : NULL, &info);
                    json_decref(j);
                    return;
                }
            }
            if (drawn) {
                gw_resp_error(p, GW_R_CONFLICT, "\"reason\":\"lottery_drawn\"", "%s", why);
            } else if (rc == 0) {
                sale_reply(p, existed ? GW_R_OK : GW_R_CREATED, &info);
                fair_fields(srv, p, id);
                reg_fields(srv, p, id);
                elig_fields(a, id);
                gw_admin_audit(a, "sale.put", id, existed ? sale_obj(&before) : NULL,
                                sale_obj(&info));
                cm_log_info("admin", "sale defined", "sale=%s stock=%lld per_user_limit=%u",
                            id, (long long)stock, d.per_user_limit);
            } else {
                gw_admin_inv_error(p, rc, why, id);
            }
        }
    }
    json_decref(j);
}

static void h_sale_get(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    inv_sale_info_t info;
    int rc = inv_sale_get(a->srv->stores.inv, a->arg, &info);
    if (rc == 0) {
        sale_reply(a->p, GW_R_OK, &info);
        fair_fields(a->srv, a->p, a->arg);
        reg_fields(a->srv, a->p, a->arg);
        elig_fields(a, a->arg);
    } else {
        gw_admin_inv_error(a->p, rc, "", a->arg);
    }
}

/* DELETE /admin/v1/sales/{id}: an ended sale only (409 for a live or upcoming one). */
static void h_sale_delete(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    gw_server_t *srv = a->srv;
    inv_sale_info_t before;
    bool had = inv_sale_get(srv->stores.inv, a->arg, &before) == 0;
    char why[256] = "";
    int rc = inv_sale_delete(srv->stores.inv, a->arg, cm_wall_ms(), why, sizeof(why));
    if (rc == 0 || rc == CM_ENOTFOUND) {
        /* The sale's lottery goes with it (gw_fair_sale_deleted): left behind, it would make
         * a sale created again under the id answer 409 lottery_drawn, or take its draw. A
         * DELETE of a sale that is gone clears what a failed clean-up left. */
        char fwhy[256] = "";
        gw_elig_sale_deleted(srv, a->arg);
        int frc = gw_fair_sale_deleted(srv, a->arg, rc == CM_ENOTFOUND, fwhy, sizeof(fwhy));
        if (frc != 0 && frc != CM_ENOTFOUND) {
            gw_resp_error(a->p, GW_R_UNAVAILABLE, NULL,
                          "sale %s %s, but its lottery could not be cleared (%s): DELETE it "
                          "again",
                          a->arg, rc == 0 ? "is deleted" : "was deleted", fwhy);
            if (rc == 0)
                gw_admin_audit(a, "sale.delete", a->arg,
                                had ? sale_obj(&before) : NULL, NULL);
            return;
        }
        if (rc == CM_ENOTFOUND && frc == 0)
            rc = 0; /* what its lottery left is gone now */
    }
    if (rc != 0) {
        gw_admin_inv_error(a->p, rc, why, a->arg);
        return;
    }
    gw_admin_resp_json(a->p, GW_R_OK, "{\"deleted\":true}");
    gw_admin_audit(a, "sale.delete", a->arg, had ? sale_obj(&before) : NULL, NULL);
    cm_log_info("admin", "sale deleted", "sale=%s", a->arg);
}

static void h_sale_restock(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    gw_resp_t *p = a->p;
    if (!gw_admin_sale_arg(a))
        return;
    const char *id = a->arg;
    const char *key = gw_admin_header(a, "Idempotency-Key");
    json_t *j = gw_admin_parse_object(a, p);
    if (!j)
        return;
    static const char *const keys[] = {"add", NULL};
    int64_t add = 0;
    if (gw_admin_only_keys(j, keys, p) && gw_admin_get_int(j, "add", 1, 1000000000000LL, true, &add, p)) {
        inv_sale_info_t before, info;
        bool known = inv_sale_get(srv->stores.inv, id, &before) == 0;
        char why[256] = "";
        int rc = inv_restock_keyed(srv->stores.inv, id, add, key, &info, why, sizeof(why));
        if (rc == 0) {
            sale_reply(p, GW_R_OK, &info);
            gw_admin_audit(a, "sale.restock", id,
                            known ? json_pack("{s:I,s:I}", "stock_total",
                                              (json_int_t)before.stock_total, "stock_left",
                                              (json_int_t)before.stock_left)
                                  : NULL,
                            json_pack("{s:I,s:I,s:I}", "add", (json_int_t)add, "stock_total",
                                      (json_int_t)info.stock_total, "stock_left",
                                      (json_int_t)info.stock_left));
            cm_log_info("admin", "sale restocked", "sale=%s add=%lld", id, (long long)add);
        } else if (rc == INV_RESTOCK_REPLAYED) {
            /* A retry of a restock that was applied: the same answer, nothing added. */
            sale_reply(p, GW_R_OK, &info);
            gw_resp_header(p, "Idempotent-Replayed", "true");
        } else {
            gw_admin_inv_error(p, rc, why, id);
        }
    }
    json_decref(j);
}

typedef struct list_ctx {
    gw_server_t *srv;
    json_t *arr;
} list_ctx_t;

/* A sale of a list, with its eligibility rule when it has one. */
static void list_one(inv_sale_t *sale, void *ctx)
{
    list_ctx_t *lc = ctx;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    json_t *o = sale_obj(&info);
    gw_elig_rule_t el;
    if (o && gw_elig_get(lc->srv, info.sale_id, &el)) {
        json_t *rq = json_object();
        for (uint32_t i = 0; i < el.n_claims; i++)
            json_object_set_new(rq, el.claims[i], json_true());
        json_object_set_new(o, "require_claims", rq);
        json_object_set_new(o, "min_account_age_days", json_integer(el.min_age_days));
    }
    json_array_append_new(lc->arr, o);
}

void *gw_sales_json(gw_server_t *srv)
{
    json_t *arr = json_array();
    inv_sale_foreach(srv->stores.inv, list_one, &(list_ctx_t){srv, arr});
    return arr;
}

static void h_sales_list(gw_admin_call_t *a)
{
    json_t *o = json_pack("{s:o}", "sales", (json_t *)gw_sales_json(a->srv));
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

static const gw_admin_route_t routes[] = {
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales", READ, h_sales_list),
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales/{sale_id}", READ, h_sale_get),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/sales/{sale_id}", WRITE, h_sale_put),
    GW_ADMIN_ROUTE("DELETE", "/admin/v1/sales/{sale_id}", WRITE, h_sale_delete),
    GW_ADMIN_ROUTE("POST", "/admin/v1/sales/{sale_id}/restock", WRITE, h_sale_restock),
};

const gw_admin_route_t *gw_sale_admin_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(routes);
    return routes;
}
