/*
 * The checks every admin handler shares (gw_admin_route.h): the body as a
 * JSON object, its fields, query arguments, and the answers of their errors.
 */
#include "common/cm_err.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "inventory/inv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_admin_resp_json(gw_resp_t *p, gw_reply_t r, const char *json)
{
    gw_resp_init(p, r);
    p->body_len = (size_t)snprintf(p->body, sizeof(p->body), "%s", json);
}

json_t *gw_admin_parse_object(gw_admin_call_t *a, gw_resp_t *p)
{
    if (a->body_too_large) {
        gw_resp_error(p, GW_R_TOO_LARGE, NULL, "body is larger than %d bytes", GW_ADMIN_BODY_MAX);
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb(a->body ? a->body : "", a->body_len, JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "malformed JSON at line %d column %d: %s",
                      e.line, e.column, e.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Refuses keys not in `allowed` (NULL-terminated). Returns false with p set. */
bool gw_admin_only_keys(json_t *obj, const char *const *allowed, gw_resp_t *p)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(k, *a) == 0)
                ok = true;
        if (!ok) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "unknown field %s", k);
            return false;
        }
    }
    return true;
}

bool gw_admin_get_int(json_t *obj, const char *key, int64_t min, int64_t max, bool required,
                      int64_t *out, gw_resp_t *p)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "missing field %s", key);
            return false;
        }
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s must be an integer from %lld to %lld", key,
                      (long long)min, (long long)max);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

bool gw_admin_get_time(json_t *obj, const char *key, int64_t *out, gw_resp_t *p)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v) || cm_time_parse_rfc3339(json_string_value(v), out) != 0) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "%s must be an RFC 3339 time such as 2026-11-22T10:00:00Z, or null", key);
        return false;
    }
    return true;
}

/* A registration time: an RFC 3339 string as starts_at, or ms since the epoch; null = none (0). */
bool gw_admin_get_reg_time(json_t *obj, const char *key, int64_t *out, gw_resp_t *p)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return true;
    if (json_is_null(v)) {
        *out = 0;
        return true;
    }
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_string(v) && cm_time_parse_rfc3339(json_string_value(v), out) == 0 && *out > 0)
        return true;
    gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                  "%s must be an RFC 3339 time such as 2026-11-22T10:00:00Z, milliseconds "
                  "since the epoch, or null",
                  key);
    return false;
}

void gw_admin_inv_error(gw_resp_t *p, int rc, const char *why, const char *sale_id)
{
    if (rc == CM_ENOTFOUND)
        gw_resp_error(p, GW_R_UNKNOWN_SALE, NULL, "no sale %s", sale_id);
    else if (rc == CM_EINVAL)
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s", why[0] ? why : "invalid request");
    else if (rc == CM_ECONFLICT)
        gw_resp_error(p, GW_R_CONFLICT, NULL, "%s", why[0] ? why : "conflict");
    else {
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL, "inventory: %s%s%s", cm_strerror(rc),
                      why[0] ? ": " : "", why);
    }
}

void gw_admin_set_big(gw_admin_call_t *a, char *json)
{
    a->big = json;
    a->big_type = "application/json";
}

bool gw_admin_query_u64(gw_admin_call_t *a, const char *name, uint64_t max, uint64_t *out)
{
    const char *v = gw_admin_query(a, name);
    if (!v)
        return true;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (!*v || *end || errno || n > max || *v == '-') {
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL, "%s must be an integer from 0 to %llu", name,
                      (unsigned long long)max);
        return false;
    }
    *out = n;
    return true;
}

bool gw_admin_sale_arg(gw_admin_call_t *a)
{
    size_t n = strlen(a->arg);
    if (n == 0 || n > INV_SALE_ID_MAX || !inv_id_valid(a->arg, n, INV_SALE_ID_MAX)) {
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL,
                      "sale_id must be 1..64 characters of A-Z a-z 0-9 . _ -");
        return false;
    }
    return true;
}
