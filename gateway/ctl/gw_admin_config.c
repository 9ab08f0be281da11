/*
 * The versioned configuration's admin routes: the rate limits, the per-sale
 * rules, the configuration in force, the audit log and a rollback to one of
 * its versions (which restores limits and rules through the same parse and
 * apply as their own routes).
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/ctl/gw_audit.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/ctl/gw_limit_json.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- limits ----*/

static char *limits_json(gw_server_t *srv)
{
    json_t *o = gw_limits_json(srv->stores.limits);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(o);
    return s;
}

/* Parses a rate in req/s with at most 3 decimals into thousandths. */
static bool rate_milli(json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || (uint64_t)i > CM_RATE_MILLI_MAX / 1000)
            return false;
        *out = (uint64_t)i * 1000;
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v) * 1000.0;
        if (!(d >= 0) || d > (double)CM_RATE_MILLI_MAX)
            return false;
        uint64_t m = (uint64_t)(d + 0.5);
        if (d - (double)m > 1e-6 || (double)m - d > 1e-6)
            return false; /* more than 3 decimals */
        if (m == 0 && d != 0)
            return false; /* a rate > 0 below 0.001: the slack above must not make it "off" */
        *out = m;
        return true;
    }
    return false;
}

static bool rate_field(json_t *v, const char *k, uint64_t *out, gw_resp_t *p)
{
    if (!rate_milli(v, out)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "%s must be a number of requests per second >= 0 with at most 3 "
                      "decimals (0 = off)",
                      k);
        return false;
    }
    return true;
}

static bool burst_field(json_t *v, const char *k, uint64_t *out, gw_resp_t *p)
{
    json_int_t b = json_is_integer(v) ? json_integer_value(v) : -1;
    if (b < 0 || (uint64_t)b > CM_RATE_BURST_MAX) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s must be an integer from 0 to %llu", k,
                      (unsigned long long)CM_RATE_BURST_MAX);
        return false;
    }
    *out = (uint64_t)b;
    return true;
}

/* Applies the members of j over pol (the current policies). False with p set. */
static bool limits_parse(json_t *j, cm_rate_policy_t *pol, gw_resp_t *p)
{
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        size_t i;
        for (i = 0; i < CM_ARRAY_LEN(gw_limit_keys); i++)
            if (strcmp(k, gw_limit_keys[i].name) == 0)
                break;
        if (i == CM_ARRAY_LEN(gw_limit_keys)) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "unknown field %s", k);
            return false;
        }
        cm_rate_policy_t *pp = &pol[gw_limit_keys[i].scope];
        if (gw_limit_keys[i].rate ? !rate_field(v, k, &pp->rate_milli, p)
                               : !burst_field(v, k, &pp->burst, p))
            return false;
    }
    for (int s = 0; s < GW_SCOPE_COUNT; s++) {
        if (pol[s].rate_milli > 0 && pol[s].burst < 1) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s_burst must be >= 1 when %s_rps > 0",
                          gw_scope_name((gw_scope_t)s), gw_scope_name((gw_scope_t)s));
            return false;
        }
    }
    return true;
}

/* srv->cfg's field of gw_limit_keys[i]. */
static uint64_t *limit_field(gw_config_t *c, size_t i)
{
    uint64_t *const f[] = {&c->global_rps, &c->global_burst, &c->sale_rps, &c->sale_burst,
                           &c->user_rps,   &c->user_burst,   &c->ip_rps,   &c->ip_burst,
                           &c->subnet_rps, &c->subnet_burst};
    _Static_assert(CM_ARRAY_LEN(f) == CM_ARRAY_LEN(gw_limit_keys), "one field per limit key");
    return f[i];
}

/* What a change of the limits replaced, for its audit: taken before the change,
 * and again by the fleet each time the fleet's newer version came in under the
 * change and the change was merged over it (gw_fleet_publish_limits). */
typedef struct {
    gw_server_t *srv;
    json_t *old;
    bool rules; /* old is gw_config_snapshot (limits and rules), else gw_limits_json */
} replaced_t;

static void replaced_take(void *ctx)
{
    replaced_t *r = ctx;
    json_decref(r->old);
    r->old =
        r->rules ? (json_t *)gw_config_snapshot(r->srv) : gw_limits_json(r->srv->stores.limits);
}

/* All valid: apply at once (buckets keep their tokens), record, publish. */
/*
 * Applies and publishes pol, a change that set `fields` (gw_fleet_limit_bit).
 * Caller holds gw_fleet_limits_lock (why: its connect error). Returns 0 (also
 * when Redis is away: the change stays here and is published later), or
 * CM_ECONFLICT (why says why, for a 409): the fleet's limits moved on and this
 * change could not be merged over them; the fleet's version is in force.
 */
static int limits_apply(gw_server_t *srv, const cm_rate_policy_t *pol, uint32_t fields,
                        replaced_t *r, char *why, size_t whylen)
{
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        gw_limits_set(srv->stores.limits, (gw_scope_t)s, pol[s]);
    pthread_mutex_lock(&srv->config.mu);
    for (size_t i = 0; i < CM_ARRAY_LEN(gw_limit_keys); i++) {
        const cm_rate_policy_t *pp = &pol[gw_limit_keys[i].scope];
        uint64_t v = gw_limit_keys[i].rate ? pp->rate_milli : pp->burst, *f = limit_field(srv->cfg, i);
        if (*f == v)
            continue;
        *f = v;
        /* GET /admin/v1/config showed a changed limit with the source of the
         * value it replaced ("default", "file"): it says "runtime" now. */
        char key[48];
        snprintf(key, sizeof(key), "limits.%s", gw_limit_keys[i].name);
        gw_config_mark_runtime(srv->config.conf, key);
    }
    pthread_mutex_unlock(&srv->config.mu);
    int rc = gw_fleet_publish_limits(srv, fields, true, replaced_take, r, why, whylen);
    if (rc == CM_ECONFLICT)
        return rc;
    if (rc != 0)
        cm_log_warn("admin", "limits changed here but not published to the fleet",
                    "reason=\"%s\"", why);
    return 0;
}

/* The 409 of a change the fleet's newer limits refused (why: gw_fleet's reason). */
static void fleet_conflict(gw_resp_t *p, const char *why)
{
    gw_resp_error(p, GW_R_CONFLICT, "\"reason\":\"fleet_config_conflict\"", "%s", why);
}

static void h_limits_get(gw_admin_call_t *a)
{
    gw_admin_set_big(a, limits_json(a->srv));
}

static void h_limits_patch(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    json_t *j = gw_admin_parse_object(a, a->p);
    if (!j)
        return;
    /* The fields not in the body keep the limits in force: read, merged, applied,
     * published and audited under the fleet's limits lock, so another gateway's
     * change the fleet thread applies meanwhile comes before this one or after it,
     * and is not written back over with the values it replaced. A version another
     * gateway published that this one has not read yet (~5 ms; a tick when the
     * message is lost) refuses the publish (a compare-and-set): the fleet then
     * applies it and lays the body's fields over it (gw_fleet_publish_limits). */
    char why[512] = "";
    gw_fleet_limits_lock(srv, why, sizeof(why));
    cm_rate_policy_t pol[GW_SCOPE_COUNT];
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        pol[s] = gw_limits_get(srv->stores.limits, (gw_scope_t)s);
    if (limits_parse(j, pol, a->p)) {
        uint32_t fields = 0;
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            fields |= gw_fleet_limit_bit(k);
        }
        replaced_t r = {.srv = srv, .old = gw_limits_json(srv->stores.limits)};
        if (limits_apply(srv, pol, fields, &r, why, sizeof(why)) == CM_ECONFLICT) {
            json_decref(r.old);
            fleet_conflict(a->p, why);
        } else {
            gw_admin_audit(a, "limits.patch", "limits", r.old, gw_limits_json(srv->stores.limits));
            char *s = limits_json(srv);
            cm_log_info("admin", "limits changed", "limits=%s", s);
            gw_admin_set_big(a, s);
        }
    }
    gw_fleet_limits_unlock(srv);
    json_decref(j);
}

/*---- per-sale rules ----*/

/* Parses one rule body (sale id given). False with p set. */
static bool rule_parse(json_t *j, const char *sale_id, gw_rule_t *r, gw_resp_t *p)
{
    static const char *const keys[] = {"sale_id",  "user_rps", "user_burst", "sale_rps",
                                       "sale_burst", "dry_run", "rejected", "dry_run_rejected",
                                       NULL};
    memset(r, 0, sizeof(*r));
    if (!gw_admin_only_keys(j, keys, p))
        return false;
    size_t n = strlen(sale_id);
    if (n == 0 || n > INV_SALE_ID_MAX || !inv_id_valid(sale_id, n, INV_SALE_ID_MAX)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "sale_id must be 1..64 characters of A-Z a-z 0-9 . _ -");
        return false;
    }
    memcpy(r->sale_id, sale_id, n + 1);
    json_t *v;
    bool has_ub = false, has_sb = false;
    if ((v = json_object_get(j, "user_rps")) && !rate_field(v, "user_rps", &r->user.rate_milli, p))
        return false;
    if ((v = json_object_get(j, "sale_rps")) && !rate_field(v, "sale_rps", &r->sale.rate_milli, p))
        return false;
    if ((v = json_object_get(j, "user_burst")) &&
        !(has_ub = burst_field(v, "user_burst", &r->user.burst, p)))
        return false;
    if ((v = json_object_get(j, "sale_burst")) &&
        !(has_sb = burst_field(v, "sale_burst", &r->sale.burst, p)))
        return false;
    /* "sale_id" is allowed so that a rule from GET goes back as it is; another
     * sale's id there was ignored and the path's sale got the rule. */
    if ((v = json_object_get(j, "sale_id")) &&
        !(json_is_string(v) && strcmp(json_string_value(v), sale_id) == 0)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "sale_id in the body must be the path's (%s) or left out", sale_id);
        return false;
    }
    if ((v = json_object_get(j, "dry_run")) && !json_is_boolean(v)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "dry_run must be true or false");
        return false;
    }
    r->dry_run = json_is_true(v);
    /* An omitted burst defaults to one second's worth (at least 1). */
    if (!has_ub && r->user.rate_milli)
        r->user.burst = (r->user.rate_milli + 999) / 1000;
    if (!has_sb && r->sale.rate_milli)
        r->sale.burst = (r->sale.rate_milli + 999) / 1000;
    if (r->user.rate_milli == 0 && r->sale.rate_milli == 0) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "a rule needs user_rps or sale_rps > 0");
        return false;
    }
    if ((r->user.rate_milli && r->user.burst < 1) || (r->sale.rate_milli && r->sale.burst < 1)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "a burst must be >= 1 when its rate is > 0");
        return false;
    }
    /* A part that is off keeps no burst (gw_limits_set_rules stores it as 0):
     * the answer and the audit's "new" show the rule as it is in force. */
    if (!r->user.rate_milli)
        r->user.burst = 0;
    if (!r->sale.rate_milli)
        r->sale.burst = 0;
    return true;
}

static void h_rules_list(gw_admin_call_t *a)
{
    json_t *o = json_pack("{s:o}", "rules", gw_rules_json(a->srv->stores.limits, true));
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)));
    json_decref(o);
}

static void h_rule_put(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    json_t *j = gw_admin_parse_object(a, a->p);
    if (!j)
        return;
    gw_rule_t r;
    if (rule_parse(j, a->arg, &r, a->p)) {
        gw_rule_t rules[GW_LIMIT_RULES_MAX + 1];
        size_t n = gw_limits_get_rules(srv->stores.limits, rules, GW_LIMIT_RULES_MAX);
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(rules[i].sale_id, r.sale_id) == 0)
                break;
        json_t *old = i < n ? gw_rule_json(&rules[i], false) : NULL;
        if (i == n && n == GW_LIMIT_RULES_MAX) {
            gw_resp_error(a->p, GW_R_CONFLICT, NULL, "at most %d rules", GW_LIMIT_RULES_MAX);
            json_decref(old);
        } else {
            rules[i] = r;
            gw_limits_set_rules(srv->stores.limits, rules, i == n ? n + 1 : n);
            gw_admin_audit(a, "rule.put", r.sale_id, old, gw_rule_json(&r, false));
            json_t *o = gw_rule_json(&r, false);
            gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)));
            json_decref(o);
            if (i == n)
                gw_resp_init(a->p, GW_R_CREATED); /* the body is set_big's */
            cm_log_info("admin", "rule set", "sale=%s dry_run=%d", r.sale_id, r.dry_run);
        }
    }
    json_decref(j);
}

static void h_rule_delete(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    gw_rule_t rules[GW_LIMIT_RULES_MAX];
    size_t n = gw_limits_get_rules(srv->stores.limits, rules, GW_LIMIT_RULES_MAX);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rules[i].sale_id, a->arg) != 0)
            continue;
        json_t *old = gw_rule_json(&rules[i], false);
        rules[i] = rules[n - 1];
        gw_limits_set_rules(srv->stores.limits, rules, n - 1);
        gw_admin_audit(a, "rule.delete", a->arg, old, NULL);
        gw_resp_init(a->p, GW_R_OK);
        a->p->body_len = (size_t)snprintf(a->p->body, sizeof(a->p->body),
                                          "{\"deleted\":true}");
        return;
    }
    gw_resp_error(a->p, GW_R_UNKNOWN_RULE, NULL, "no rule for sale %.64s", a->arg);
}

/*---- audit and rollback ----*/


static void h_audit(gw_admin_call_t *a)
{
    uint64_t since = 0, limit = 100;
    if (!gw_admin_query_u64(a, "since", UINT64_MAX / 2, &since) || !gw_admin_query_u64(a, "limit", 10000, &limit))
        return;
    json_t *arr = gw_audit_list(a->srv, since, limit ? limit : 1);
    if (!arr) {
        gw_resp_error(a->p, GW_R_INTERNAL, NULL, "cannot read the audit log");
        return;
    }
    json_t *o = json_pack("{s:I,s:o}", "version", (json_int_t)gw_audit_version(a->srv),
                          "entries", arr);
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)));
    json_decref(o);
}

static void h_rollback(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    json_t *j = gw_admin_parse_object(a, a->p);
    if (!j)
        return;
    static const char *const keys[] = {"version", NULL};
    int64_t version = 0;
    json_t *cfg = NULL;
    if (!gw_admin_only_keys(j, keys, a->p) || !gw_admin_get_int(j, "version", 1, INT64_MAX, true, &version, a->p))
        goto out;
    if (gw_audit_config_at(srv, (uint64_t)version, (void **)&cfg) != 0) {
        gw_resp_error(a->p, GW_R_INTERNAL, NULL, "cannot read the audit log");
        goto out;
    }
    if (!cfg) {
        gw_resp_error(a->p, GW_R_NOT_FOUND, NULL, "no version %lld in the audit log",
                      (long long)version);
        goto out;
    }
    /* Validate everything first; apply only a complete, valid set. */
    cm_rate_policy_t pol[GW_SCOPE_COUNT];
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        pol[s] = gw_limits_get(srv->stores.limits, (gw_scope_t)s);
    json_t *lim = json_object_get(cfg, "limits"), *rl = json_object_get(cfg, "rules");
    if (!json_is_object(lim) || !json_is_array(rl) || !limits_parse(lim, pol, a->p)) {
        gw_resp_error(a->p, GW_R_CONFLICT, NULL, "version %lld holds no usable limits",
                      (long long)version);
        goto out;
    }
    gw_rule_t rules[GW_LIMIT_RULES_MAX];
    size_t n = 0;
    size_t i;
    json_t *rv;
    json_array_foreach(rl, i, rv) {
        const char *sid = json_string_value(json_object_get(rv, "sale_id"));
        if (n == GW_LIMIT_RULES_MAX || !json_is_object(rv) || !sid ||
            !rule_parse(rv, sid, &rules[n], a->p)) {
            gw_resp_error(a->p, GW_R_CONFLICT, NULL, "version %lld holds an unusable rule",
                          (long long)version);
            goto out;
        }
        n++;
    }
    /* under the limits lock, as a PATCH: the audit's old and new are the limits
     * this change replaced and set, with no peer's change landing between. It
     * sets every limit field: merged over a newer version of the fleet's (the
     * compare-and-set refused it), it still restores exactly `version`'s
     * limits, and the audit's old shows the newer version it replaced. */
    char why[512] = "";
    gw_fleet_limits_lock(srv, why, sizeof(why));
    replaced_t r = {.srv = srv, .old = gw_config_snapshot(srv), .rules = true};
    if (limits_apply(srv, pol, GW_FLEET_LIMITS_ALL, &r, why, sizeof(why)) == CM_ECONFLICT) {
        gw_fleet_limits_unlock(srv);
        json_decref(r.old);
        fleet_conflict(a->p, why);
        goto out;
    }
    gw_limits_set_rules(srv->stores.limits, rules, n);
    char target[48];
    snprintf(target, sizeof(target), "version %lld", (long long)version);
    uint64_t v =
        gw_admin_audit(a, "config.rollback", target, r.old, gw_config_snapshot(srv));
    gw_fleet_limits_unlock(srv);
    json_t *o = json_pack("{s:I,s:I,s:o}", "version", (json_int_t)v, "restored", (json_int_t)version,
                          "config", (json_t *)gw_config_snapshot(srv));
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)));
    json_decref(o);
    cm_log_info("admin", "limits and rules rolled back", "to_version=%lld version=%llu",
                (long long)version, (unsigned long long)v);
out:
    json_decref(cfg);
    json_decref(j);
}

static void h_config(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    json_t *o = json_object();
    pthread_mutex_lock(&srv->config.mu);
    for (const cm_opt_t *opt = srv->config.conf->opts; opt->key; opt++) {
        char val[4200];
        cm_conf_format(srv->config.conf, opt, val, sizeof(val));
        json_object_set_new(
            o, opt->key,
            json_pack("{s:s,s:s}", "value", val, "source",
                      cm_src_name(srv->config.conf->src[opt - srv->config.conf->opts])));
    }
    pthread_mutex_unlock(&srv->config.mu);
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS));
    json_decref(o);
}

static const gw_admin_route_t routes[] = {
    GW_ADMIN_ROUTE("GET", "/admin/v1/limits", READ, h_limits_get),
    GW_ADMIN_ROUTE("PATCH", "/admin/v1/limits", WRITE, h_limits_patch),
    GW_ADMIN_ROUTE("GET", "/admin/v1/rules", READ, h_rules_list),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/rules/{sale_id}", WRITE, h_rule_put),
    GW_ADMIN_ROUTE("DELETE", "/admin/v1/rules/{sale_id}", WRITE, h_rule_delete),
    GW_ADMIN_ROUTE("GET", "/admin/v1/config", READ, h_config),
    GW_ADMIN_ROUTE("POST", "/admin/v1/config/rollback", WRITE, h_rollback),
    GW_ADMIN_ROUTE("GET", "/admin/v1/audit", READ, h_audit),
};

const gw_admin_route_t *gw_admin_config_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(routes);
    return routes;
}
