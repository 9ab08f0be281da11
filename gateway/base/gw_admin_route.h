/*
 * An admin route as its owner declares it, and the call a handler answers.
 *
 * Each folder keeps its admin handlers next to the code they drive and
 * exports a table of routes (gateway/buy/gw_sale_admin.c, ...); the admin
 * listener (gateway/ctl/gw_admin.c) assembles the tables into the one route ×
 * method × role table at start and dispatches from it, as HAProxy registers
 * each keyword where it is owned. The types live in base so that a folder
 * below ctl can declare its routes without seeing the listener: a handler
 * reaches the connection (a header, a query argument) and the audit log only
 * through the hooks in its call.
 */
#ifndef GW_ADMIN_ROUTE_H
#define GW_ADMIN_ROUTE_H

#include "gateway/base/gw_types.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request body past this many bytes is refused with 413. */
#define GW_ADMIN_BODY_MAX 65536

/* Admin tokens' roles: a route needs none, read or write. */
typedef enum { GW_ROLE_NONE = 0, GW_ROLE_READ = 1, GW_ROLE_WRITE = 2 } gw_role_t;

struct gw_asset;
typedef struct gw_admin_call gw_admin_call_t;

/* The call of one route, valid for the handler's run. The listener fills it;
 * the handler sets its answer in p (a small one), or big (a large one,
 * malloc'd, sent with big_type) or asset (a static file). */
struct gw_admin_call {
    gw_server_t *srv;
    const char *method, *url;
    const char *who; /* token name, for the audit */
    char arg[160];   /* the {parameter} of the route's path, if any (unchecked) */
    const char *body; /* the request's body (NUL-terminated), NULL when empty */
    size_t body_len;
    bool body_too_large; /* the body was longer than GW_ADMIN_BODY_MAX (not kept) */
    gw_resp_t *p;
    char *big;
    const char *big_type;
    const struct gw_asset *asset;
    /* The listener's hooks: a request header (query false) or query argument
     * (query true) by name, NULL if absent; and the audit log's append
     * (gw_audit_record: old_json and new_json are stolen; returns the version
     * written, 0 when it could not be). */
    void *conn;
    const char *(*lookup)(void *conn, bool query, const char *name);
    uint64_t (*audit)(gw_server_t *srv, const char *who, const char *what, const char *target,
                      void *old_json, void *new_json);
};

/* One route: method, path ({name} = one segment, copied to the call's arg),
 * the role it needs, its handler. Writes (GW_ROLE_WRITE) run under the admin
 * API's lock, so a handler validates, applies and audits as one step. */
typedef struct gw_admin_route {
    const char *method, *path;
    gw_role_t role;
    void (*fn)(gw_admin_call_t *a);
} gw_admin_route_t;

/* A row of a route table; tests/integration/19-openapi.py reads these rows
 * in every file under gateway/ to check docs/openapi.yaml. */
#define GW_ADMIN_ROUTE(method, path, role, fn) {method, path, GW_ROLE_##role, fn}

/* A request header of the call, NULL if absent. */
static inline const char *gw_admin_header(gw_admin_call_t *a, const char *name)
{
    return a->lookup(a->conn, false, name);
}
/* A query argument of the call, NULL if absent. */
static inline const char *gw_admin_query(gw_admin_call_t *a, const char *name)
{
    return a->lookup(a->conn, true, name);
}
/* Appends the call's change to the audit log under the token's name (see
 * a->audit). */
static inline uint64_t gw_admin_audit(gw_admin_call_t *a, const char *what, const char *target,
                                      void *old_json, void *new_json)
{
    return a->audit(a->srv, a->who, what, target, old_json, new_json);
}

/*---- the handlers' common checks (gw_admin_call.c); each sets a 4xx in p and
 * returns false (or NULL) on a bad request. Thread-safe (admin threads, each
 * on its own call). ----*/

/* A small JSON answer. */
void gw_admin_resp_json(gw_resp_t *p, gw_reply_t r, const char *json);
/* A large JSON answer (json malloc'd, stolen; NULL: out of memory, a 500). */
void gw_admin_set_big(gw_admin_call_t *a, char *json);
/* The body as a JSON object (a new reference). */
json_t *gw_admin_parse_object(gw_admin_call_t *a, gw_resp_t *p);
/* Refuses keys not in `allowed` (NULL-terminated). */
bool gw_admin_only_keys(json_t *obj, const char *const *allowed, gw_resp_t *p);
/* An integer field in [min, max] into *out (unchanged when absent and not required). */
bool gw_admin_get_int(json_t *obj, const char *key, int64_t min, int64_t max, bool required,
                      int64_t *out, gw_resp_t *p);
/* An RFC 3339 time field in ms (unchanged when absent or null). */
bool gw_admin_get_time(json_t *obj, const char *key, int64_t *out, gw_resp_t *p);
/* A registration time: an RFC 3339 string as starts_at, or ms since the
 * epoch; null = none (0); unchanged when absent. */
bool gw_admin_get_reg_time(json_t *obj, const char *key, int64_t *out, gw_resp_t *p);
/* The answer of an inventory error rc (why: the backend's reason, may be ""). */
void gw_admin_inv_error(gw_resp_t *p, int rc, const char *why, const char *sale_id);
/* A non-negative integer query argument up to max into *out (unchanged when absent). */
bool gw_admin_query_u64(gw_admin_call_t *a, const char *name, uint64_t max, uint64_t *out);
/* Checks the path's {sale_id} (a->arg): 1..64 characters of an inventory id. */
bool gw_admin_sale_arg(gw_admin_call_t *a);

#endif
