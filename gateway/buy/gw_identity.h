/*
 * gateway/buy: the buyer's identity on the sale routes (docs/identity.md).
 * identity.mode=jwt verifies a bearer token (identity/, one verifier per
 * process, a verified-token cache per worker, the JWKS fetcher's thread);
 * header takes the user from identity.header sent by a trusted proxy; none
 * keeps the body's user_id. Uses gateway/base and edge.
 */
#ifndef GW_IDENTITY_H
#define GW_IDENTITY_H

#include "gateway/base/gw_types.h"
#include "gateway/buy/gw_buy_t.h"
#include "identity/id.h"

/*
 * Sets up identity per cfg->id_mode: in jwt mode opens (creating it at first
 * start) <data_dir>/identity.key, builds the verifier on it (or on
 * identity.jwks_file / jwks_url), starts the JWKS fetcher when jwks_url is
 * set, and makes one verified-token cache per worker (srv->pool.nworkers must be
 * known). In none mode logs a warning when server.listen is not loopback.
 * Before the workers start. Returns 0, or a negative CM_E* with the reason in
 * errbuf. Single-threaded init.
 */
int gw_identity_start(gw_server_t *srv, char *errbuf, size_t errlen);
/* Stops the fetcher and frees everything; after the workers stopped. NULL-safe state. */
void gw_identity_stop(gw_server_t *srv);

/* True when the buyer's identity comes from a token or a trusted header (mode jwt or header). */
bool gw_identity_on(const gw_server_t *srv);

/*
 * The buy path's identity step, after the per-IP and per-subnet limits and
 * before anything keyed by the user. gw_req_buy(r)->res.user_id holds the body's user_id
 * or "" (identity on: it may be omitted). On success it holds the verified
 * user, and a non-empty gw_req_buy(r)->res.idem_key is replaced by its scope under that
 * user (a replay answers only the same user), and returns true. Otherwise
 * fills r->resp (401 unauthorized with the outcome's name as "reason", 403
 * identity_mismatch or forbidden, 403 forbidden reason csrf for a cookie's
 * token without an application/json Content-Type or X-Requested-With, 400
 * reason duplicate_identity for two identity headers or two Authorization
 * fields, 503 while no keys are loaded or they are stale) and returns
 * false. Loop thread of r->w.
 */
bool gw_identity_buy(gw_req_t *r);

/*
 * The identity step of a request that names its user elsewhere (claimed: the
 * body's or query's user_id, "" or NULL when omitted): true with the verified
 * user in `user` (ID_USER_MAX + 1 bytes) when it verifies and claimed is
 * omitted or the same; else fills r->resp as gw_identity_buy does and returns
 * false. Identity must be on (gw_identity_on). Loop thread of r->w.
 */
bool gw_identity_check(gw_req_t *r, const char *claimed, char *user);

/*
 * The user a buy claims, before its identity step (identity on only): the
 * trusted proxy's header, or the bearer token's user from the worker's cache
 * or, unverified, from its payload (id_claimed_user). For the overload
 * control's user priority, which may refuse a buy before its signature check
 * but never lets one through: a token that claims another's user is refused
 * at verification. true with `user` (ID_USER_MAX + 1 bytes); false: nothing
 * readable, r->resp filled as the identity step would answer (a token whose
 * user cannot be read: 401 bad_subject, before any signature check). Counts
 * nothing. Loop thread of r->w.
 */
bool gw_identity_claimed(gw_req_t *r, char *user);

/*
 * The verified user of a request that may carry a token (order status),
 * without answering: true with the user in `user` (ID_USER_MAX + 1 bytes),
 * false when identity is off, no token or header is present, or it does not
 * verify. Counted in the verification metrics. Loop thread of r->w.
 */
bool gw_identity_user(gw_req_t *r, char *user);

/*
 * Whether the request carries a valid identity (identity on only), for a
 * decision that must not depend on anything else (the sold-out keyed retry:
 * gw_buy.c). A refusal is counted as gw_identity_user counts it; a success is
 * not, as the identity step that follows counts it (from the cache). Loop
 * thread of r->w.
 */
bool gw_identity_valid(gw_req_t *r);

/*
 * Which verified user bought an order (identity on only): a bounded table of
 * orders.max_known slots placed by order id; a slot taken by a later order
 * forgets the earlier one (its buyer then needs the status token). Thread-safe.
 */
void gw_identity_order_put(gw_server_t *srv, const char *order_id, const char *user);
bool gw_identity_order_owner(gw_server_t *srv, const char *order_id, const char *user);

typedef struct gw_identity_stats {
    int mode;                               /* gw_id_mode_t */
    uint64_t verifications[ID__OUTCOME_COUNT]; /* by id_outcome_t */
    uint64_t cache_hits;
    uint64_t untrusted_header;              /* header mode: 403 from an untrusted peer */
    uint64_t mismatches;                    /* 403 identity_mismatch */
    uint64_t duplicates;                    /* 400 duplicate_identity */
    uint64_t csrf;                          /* 403 csrf (cookie mode) */
    uint64_t keys_refused;                  /* weak keys skipped in the sets in use */
    bool stale;                             /* the fetched set is past identity.jwks_max_stale */
    size_t keys;                            /* usable keys now (jwt mode) */
    uint64_t refresh_ok, refresh_failed;    /* identity.jwks_url fetches */
} gw_identity_stats_t;
/* NULL, or why buyer tokens cannot be verified now (the fetched key set is past
 * identity.jwks_max_stale): /readyz answers 503 with it. Thread-safe. */
const char *gw_identity_stale(gw_server_t *srv);
/* Sums the workers' counters. Thread-safe. */
void gw_identity_stats(gw_server_t *srv, gw_identity_stats_t *out);

#endif
