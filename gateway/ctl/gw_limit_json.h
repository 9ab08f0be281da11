/*
 * The rate limits and per-sale rules as JSON: what the admin API answers
 * (GET /admin/v1/limits, /admin/v1/rules), what the audit log versions (its
 * "config" object) and what a rollback reads back. The parsing of a request
 * body stays with the admin API, which owns its 4xx answers.
 */
#ifndef GW_LIMIT_JSON_H
#define GW_LIMIT_JSON_H

#include "gateway/base/gw_limit.h"
#include "gateway/base/gw_types.h"

#include <stdbool.h>

struct json_t;

/* One key of the limits object ("user_rps", "user_burst", ...): the scope it
 * sets and whether it is the rate (req/s, thousandths inside) or the burst. */
typedef struct gw_limit_key {
    const char *name;
    gw_scope_t scope;
    bool rate;
} gw_limit_key_t;

#define GW_LIMIT_KEYS (2 * (GW_SCOPE_COUNT))
/* The limits object's keys, in the order the answers list them. */
extern const gw_limit_key_t gw_limit_keys[GW_LIMIT_KEYS];

/* The global scopes' limits in force as {"global_rps":..,"global_burst":..,...}
 * (new reference). Any thread. */
struct json_t *gw_limits_json(gw_limits_t *l);

/* One rule as {"sale_id":..,"user_rps":..,...}; with counters, its rejected and
 * dry_run_rejected counts too (new reference). */
struct json_t *gw_rule_json(const gw_rule_t *r, bool counters);

/* The rules in force as an array of gw_rule_json (new reference). Any thread. */
struct json_t *gw_rules_json(gw_limits_t *l, bool counters);

/* The limits and rules now in force as {"limits":{...},"rules":[...]}, the
 * audit log's "config" (new reference, a json_t). Any thread. */
void *gw_config_snapshot(gw_server_t *srv);

#endif
