/*
 * gateway/base: what every layer of the gateway may use. The reply table's
 * functions and responses, trusted proxies and client addresses, the order
 * table, order-status tokens and the heavy hitters; the configuration
 * (gw_config.h), the rate limits (gw_limit.h) and the fleet (gw_fleet.h) have
 * their own headers in this folder.
 */
#ifndef GW_BASE_H
#define GW_BASE_H

#include "gateway/base/gw_types.h"

#include <stdarg.h>

int gw_reply_status(gw_reply_t r);
const char *gw_reply_code(gw_reply_t r);
/* The table's default Retry-After of r in seconds (0 = none). */
unsigned gw_reply_retry_after(gw_reply_t r);
/* The gw_counters_t.px_status row of a proxied answer (0 an upstream's, 1 a
 * fallback), or -1: any other reply is sent with its table status. */
static inline int gw_px_kind(gw_reply_t r)
{
    return r == GW_R_PROXIED ? 0 : r == GW_R_FALLBACK ? 1 : -1;
}

/* The Allow header (methods) and metric label of a route. */
const char *gw_route_methods(gw_route_t r);
const char *gw_route_name(gw_route_t r);

/* Starts a response for `reply`: status from the table, empty body, and the
 * table's default Retry-After header when it has one. */
void gw_resp_init(gw_resp_t *r, gw_reply_t reply);
/* Sets (or replaces) the Retry-After header: `seconds` from now. */
void gw_resp_retry_after(gw_resp_t *r, unsigned long long seconds);
/* The one sold-out answer (410 sold_out) for sale_id. */
void gw_resp_sold_out(gw_resp_t *r, const char *sale_id);
void gw_resp_header(gw_resp_t *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with a ready value (no formatting): the buy path's 202. */
void gw_resp_header_set(gw_resp_t *r, const char *name, const char *value);
/* Sets the body to {"error":code,"message":msg...} with extra pre-escaped JSON members. */
void gw_resp_error(gw_resp_t *r, gw_reply_t reply, const char *extra_json, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An HTTP Date value, "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate). */
void gw_http_date(time_t t, char out[GW_DATE_LEN + 1]);
/* Writes v in decimal at p (at most 20 bytes, no NUL); returns the end. Any thread. */
char *gw_put_u64(char *p, uint64_t v);
/* Room gw_resp_render needs for any gw_resp_t's head (status line and headers). */
#define GW_RESP_HEAD_MAX 2560
/*
 * Renders r's status line and headers (Date, Content-Type, r's headers,
 * Cache-Control: no-store unless r has one, Content-Length), without the
 * blank line, into out (at least GW_RESP_HEAD_MAX bytes). Returns the length;
 * *date_off (if not NULL) gets the Date value's offset. No printf.
 */
size_t gw_resp_render(const gw_resp_t *r, const char *date, char *out, size_t cap,
                      size_t *date_off);
/* A prepared copy of r dated w's second; NULL on failure. Loop thread of w. */
gw_prep_t *gw_prep_new(const gw_resp_t *r, const gw_worker_t *w);
/* Writes w's Date into p if its second has passed. Loop thread of w. */
void gw_prep_redate(gw_prep_t *p, const gw_worker_t *w);
void gw_prep_free(gw_prep_t *p);
/* Appends s JSON-escaped (without quotes) to buf at *len. */
void gw_json_escape(char *buf, size_t cap, size_t *len, const char *s);

/* Parses "10.0.0.0/8, ::1, 192.168.1.7". Returns 0 or CM_EINVAL with the bad item in errbuf. */
int gw_proxies_parse(gw_proxies_t *p, const char *list, char *errbuf, size_t errlen);
void gw_proxies_free(gw_proxies_t *p);
bool gw_proxies_match(const gw_proxies_t *p, const struct sockaddr *sa);
/*
 * The usual dotted quad, read by hand: true with the 4 bytes only for a string
 * inet_pton(AF_INET) takes with the same value (four parts of 1-3 digits, each
 * <= 255, no leading zero); anything else is false and goes to inet_pton, which
 * stays the judge (fuzz_headers checks the two agree). glibc's inet_pton was
 * ~250 instructions for each X-Forwarded-For hop of a buy. Thread-safe.
 */
bool gw_ipv4_parse(const char *s, uint8_t out[4]);
/*
 * The client address of a request: the peer, or, when the peer is a trusted
 * proxy, the right-most address in X-Forwarded-For that is not a trusted
 * proxy. Writes a limiter key (4 bytes for IPv4, the /64 prefix for IPv6) to
 * key (>= 16 bytes) and returns its length, 0 if unknown.
 */
size_t gw_client_key(const gw_proxies_t *p, const struct sockaddr *peer, const char *xff,
                     uint8_t *key);
/*
 * The same client address, whole (an IPv6 one not cut to its /64): its family
 * (AF_INET, AF_INET6; 0 if unknown) and its 4 or 16 bytes in addr. The proxy
 * passes it on as X-Real-IP.
 */
int gw_client_addr(const gw_proxies_t *p, const struct sockaddr *peer, const char *xff,
                   uint8_t addr[16]);

/* Parses a listen address "host:port" / "[v6]:port" into ss. */
int gw_addr_parse_listen(const char *hostport, struct sockaddr_storage *ss, char *errbuf,
                     size_t errlen);

/*---- Orders known to this gateway (GET /v1/orders/{id}) ----*/

/* Bounded: see gateway/base/gw_orders.c for the memory budget and the eviction. */
typedef enum {
    GW_ORDERS_UNKNOWN = 0, /* never seen here */
    GW_ORDERS_FOUND = 1,
    GW_ORDERS_EXPIRED = 2, /* evicted to stay within orders.max_known */
} gw_orders_found_t;

typedef struct gw_orders_stats {
    uint64_t known, max_known, capacity;
    uint64_t evicted, evicted_queued; /* evicted in all; of them still queued */
    uint64_t expired_queries;         /* lookups of an evicted order */
    uint64_t reasons_lost;            /* reasons past the 254 distinct texts kept */
    uint64_t unindexed;               /* ids that are not order ids (not kept) */
    uint64_t sales;                   /* distinct sale ids interned */
    uint64_t table_bytes;             /* allocated at start for max_known orders */
} gw_orders_stats_t;

/* Allocates the table for max_known orders (all memory up front). Single-threaded init. */
gw_orders_t *gw_orders_new(uint64_t max_known);
void gw_orders_free(gw_orders_t *t);
/* Inserts if absent (status queued), evicting the oldest final order when
 * full. Returns true if inserted. Thread-safe. */
bool gw_orders_put(gw_orders_t *t, const oq_order_t *o);
/* A hint: the put of order id (its cm_id value) comes soon. Thread-safe. */
void gw_orders_prefetch(gw_orders_t *t, uint64_t id);
/*
 * Copies the order out (status and reason; accepted_at and node from the id;
 * no user id: it is not kept). out may be NULL. Thread-safe.
 */
gw_orders_found_t gw_orders_lookup(gw_orders_t *t, const char *order_id, oq_order_t *out);
/* gw_orders_lookup() == GW_ORDERS_FOUND. Thread-safe. */
bool gw_orders_get(gw_orders_t *t, const char *order_id, oq_order_t *out);
/*
 * Moves an order to a final status; returns the previous status, or -1 if the
 * order is unknown (it is then created from `o` when o is not NULL).
 * Thread-safe.
 */
int gw_orders_set_status(gw_orders_t *t, const char *order_id, const oq_order_t *o,
                         oq_status_t st, const char *reason);
uint64_t gw_orders_count(gw_orders_t *t);
void gw_orders_stats(gw_orders_t *t, gw_orders_stats_t *out);

/*---- Order status tokens (gw_token.c) ----*/

#define GW_TOKEN_BYTES 16 /* of the HMAC-SHA256 */
#define GW_TOKEN_LEN 22   /* base64url characters */

/*
 * Loads <data-dir>/status.key (or creates it, mode 0600; a file readable by
 * others is refused); with a Redis inventory, takes the fleet's key from
 * Redis (offering ours with SET NX). Returns 0 or a negative cm_err_t with
 * the reason in errbuf. Single-threaded init.
 */
int gw_status_key_load(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_status_key_free(gw_server_t *srv);
/* <data-dir>/status.key, when present, read as the start reads it: a regular
 * file, no access for group or others, 64 hex digits. Absent: 0 (the start
 * makes one). Shared by the start and --check-config. Returns 0 or a negative
 * CM_E* (errbuf says why). Thread-safe. */
int gw_status_key_check(const gw_config_t *cfg, char *errbuf, size_t errlen);
/* Writes the order's status token (GW_TOKEN_LEN chars + NUL) to out; returns its length
 * (0 without a key, or for an id longer than INV_ORDER_ID_MAX: no order has one).
 * Thread-safe. */
size_t gw_status_token(const gw_server_t *srv, const char *order_id, char *out);
/* The same MAC (GW_TOKEN_LEN chars + NUL) over any message (waiting-room tickets
 * and admission tokens). Thread-safe. */
size_t gw_token_mac(const gw_server_t *srv, const char *msg, char *out);
/* Writes len (<= 32) bytes of a key derived from the status key for one use,
 * named by label (HMAC-SHA256 of "derive:" label): the same on every start
 * with the same status.key, and in every gateway of a fleet. Returns 0, or
 * CM_EINVAL (no key, len too long). Thread-safe. */
int gw_status_key_derive(const gw_server_t *srv, const char *label, uint8_t *out, size_t len);
/* Constant-time check of a gw_token_mac of msg. */
bool gw_token_mac_ok(const gw_server_t *srv, const char *msg, const char *mac, size_t len);
/*
 * The number before a waiting-room token's '.' (a ticket's position, an
 * admission token's expiry; dot points into s): 1..19 decimal digits, no
 * sign, blank or leading zero, > 0; 0 if it is not one. The MAC is over the
 * number as printed, so only that spelling may pass (strtoull would take
 * " +0005" for 5). Pure.
 */
uint64_t gw_token_number(const char *s, const char *dot);
/* Whether token is the order's status token (constant-time compare). Thread-safe. */
bool gw_status_token_ok(const gw_server_t *srv, const char *order_id, const char *token);
/*
 * Reads a 32-byte key kept as status.key is: a regular file of its own (no
 * symlink), no access for group or others, 64 hex digits and at most a
 * newline. `power` ends the refusal of a readable file ("anyone who reads it
 * <power>"). Returns 0, CM_ENOTFOUND when absent, else a negative CM_E* with
 * the reason in errbuf. Thread-safe.
 */
int gw_key_file_read(const char *path, uint8_t *key, const char *power, char *errbuf,
                     size_t errlen);
/*
 * With a Redis inventory (cfg->inventory): offers the 32-byte `key` as the
 * fleet's `redis_key` (an INV_FLEET_KEY_*, SET NX: the first gateway's stays)
 * and overwrites `key` with the one in force; *changed when it was not ours.
 * Blocks up to max(1 s, inventory.redis_timeout_ms) per step. Returns 0 or a
 * negative CM_E* (CM_EBACKEND: Redis unreachable) with the reason in errbuf.
 * Single-threaded init.
 */
int gw_key_fleet(const gw_config_t *cfg, const char *redis_key, uint8_t *key, bool *changed,
                 char *errbuf, size_t errlen);
/* A page-rounded buffer kept out of core dumps (MADV_DONTDUMP), mlock'ed when
 * allowed; NULL on failure. gw_secret_free wipes (explicit_bzero) and unmaps it. */
void *gw_secret_alloc(size_t len);
void gw_secret_free(void *p, size_t len);

/* The reason phrase of a status code. */
const char *gw_reply_reason(unsigned status);
/* Counts a rejected request's user and client key as heavy hitters. Loop thread of w. */
void gw_hitters_add(gw_worker_t *w, const char *user, const uint8_t *ipkey, size_t iplen);
/* Merges every worker's heavy hitters. Thread-safe. */
void gw_hitters_merge(gw_server_t *srv, cm_topk_t *users, cm_topk_t *ips);
/* Formats a client key of gw_client_key (4 bytes IPv4, 8 bytes an IPv6 /64). */
void gw_client_key_format(const uint8_t *key, size_t len, char *out, size_t cap);

#endif
