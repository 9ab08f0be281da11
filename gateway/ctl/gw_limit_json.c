/*
 * The rate limits and per-sale rules as JSON (gw_limit_json.h).
 */
#include "gateway/ctl/gw_limit_json.h"

#include <jansson.h>

const gw_limit_key_t gw_limit_keys[GW_LIMIT_KEYS] = {
    {"global_rps", GW_SCOPE_GLOBAL, true}, {"global_burst", GW_SCOPE_GLOBAL, false},
    {"sale_rps", GW_SCOPE_SALE, true},     {"sale_burst", GW_SCOPE_SALE, false},
    {"user_rps", GW_SCOPE_USER, true},     {"user_burst", GW_SCOPE_USER, false},
    {"ip_rps", GW_SCOPE_IP, true},         {"ip_burst", GW_SCOPE_IP, false},
    {"subnet_rps", GW_SCOPE_SUBNET, true}, {"subnet_burst", GW_SCOPE_SUBNET, false},
};

/* A rate in thousandths of a request per second, as req/s. */
static json_t *rate_json(uint64_t milli)
{
    return json_real((double)milli / 1000.0);
}

json_t *gw_limits_json(gw_limits_t *l)
{
    json_t *o = json_object();
    for (size_t i = 0; i < GW_LIMIT_KEYS; i++) {
        cm_rate_policy_t pol = gw_limits_get(l, gw_limit_keys[i].scope);
        if (gw_limit_keys[i].rate)
            json_object_set_new(o, gw_limit_keys[i].name, rate_json(pol.rate_milli));
        else
            json_object_set_new(o, gw_limit_keys[i].name, json_integer((json_int_t)pol.burst));
    }
    return o;
}

json_t *gw_rule_json(const gw_rule_t *r, bool counters)
{
    json_t *o = json_pack("{s:s,s:o,s:I,s:o,s:I,s:b}", "sale_id", r->sale_id, "user_rps",
                          rate_json(r->user.rate_milli), "user_burst", (json_int_t)r->user.burst,
                          "sale_rps", rate_json(r->sale.rate_milli), "sale_burst",
                          (json_int_t)r->sale.burst, "dry_run", r->dry_run);
    if (counters) {
        json_object_set_new(o, "rejected",
                            json_pack("{s:I,s:I}", "user", (json_int_t)r->rejected[0], "sale",
                                      (json_int_t)r->rejected[1]));
        json_object_set_new(o, "dry_run_rejected",
                            json_pack("{s:I,s:I}", "user", (json_int_t)r->dry_run_rejected[0],
                                      "sale", (json_int_t)r->dry_run_rejected[1]));
    }
    return o;
}

json_t *gw_rules_json(gw_limits_t *l, bool counters)
{
    gw_rule_t rules[GW_LIMIT_RULES_MAX];
    size_t n = gw_limits_get_rules(l, rules, GW_LIMIT_RULES_MAX);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, gw_rule_json(&rules[i], counters));
    return arr;
}

void *gw_config_snapshot(gw_server_t *srv)
{
    return json_pack("{s:o,s:o}", "limits", gw_limits_json(srv->stores.limits), "rules",
                     gw_rules_json(srv->stores.limits, false));
}
