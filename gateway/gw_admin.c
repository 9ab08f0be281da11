/*
 * The admin API on its own listener (default 127.0.0.1:9090). Every request
 * needs "Authorization: Bearer <token>", compared in constant time.
 *
 * Admin traffic is small and its operations may block (a Redis round trip),
 * so this daemon uses MHD's thread-per-connection mode, away from the worker
 * loops; it never stalls the buy path.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/gw_fleet.h"
#include "gateway/gw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define ADMIN_BODY_MAX 65536

typedef struct admin_req {
    char *body;
    size_t len;
    bool too_large;
} admin_req_t;

static pthread_mutex_t admin_lock = PTHREAD_MUTEX_INITIALIZER;

/*---- token ----*/

static bool token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Constant time in the length of the configured token b. */
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)((i < alen ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return diff == 0;
}

static bool authorized(gw_server_t *srv, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return token_equal(h, strlen(h), srv->admin_token, srv->admin_token_len);
}

/* Reads or creates <data-dir>/admin.token (0600). Never logs the token itself. */
static int load_or_make_token(gw_server_t *srv, char *errbuf, size_t errlen)
{
    snprintf(srv->admin_token_path, sizeof(srv->admin_token_path), "%s/admin.token",
             srv->cfg->data_dir);
    int fd = open(srv->admin_token_path, O_RDONLY | O_NOFOLLOW);
    if (fd >= 0) {
        struct stat st;
        char buf[256];
        ssize_t n = fstat(fd, &st) == 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        close(fd);
        if (n > 0 && (st.st_mode & 077) == 0) {
            while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
                n--;
            if (n >= 32) {
                memcpy(srv->admin_token, buf, (size_t)n);
                srv->admin_token[n] = '\0';
                srv->admin_token_len = (size_t)n;
                cm_log_info("admin", "admin token loaded", "path=%s", srv->admin_token_path);
                return 0;
            }
        }
        if (n > 0 && (st.st_mode & 077) != 0)
            cm_log_warn("admin", "admin token file is readable by others; replacing it",
                        "path=%s", srv->admin_token_path);
    }
    uint8_t rnd[32];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        snprintf(errbuf, errlen, "getrandom: %s", strerror(errno));
        return CM_EIO;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(rnd); i++) {
        srv->admin_token[2 * i] = hex[rnd[i] >> 4];
        srv->admin_token[2 * i + 1] = hex[rnd[i] & 15];
    }
    srv->admin_token_len = 2 * sizeof(rnd);
    srv->admin_token[srv->admin_token_len] = '\0';
    char tmp[640];
    snprintf(tmp, sizeof(tmp), "%s.tmp", srv->admin_token_path);
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return CM_EIO;
    }
    char line[300];
    int len = snprintf(line, sizeof(line), "%s\n", srv->admin_token);
    bool ok = write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, srv->admin_token_path) != 0) {
        snprintf(errbuf, errlen, "cannot write %s: %s", srv->admin_token_path, strerror(errno));
        unlink(tmp);
        return CM_EIO;
    }
    cm_log_info("admin", "generated an admin token", "path=%s mode=0600",
                srv->admin_token_path);
    return 0;
}

/*---- helpers ----*/

static void resp_json(gw_resp_t *p, gw_reply_t r, const char *json)
{
    gw_resp_init(p, r);
    p->body_len = (size_t)snprintf(p->body, sizeof(p->body), "%s", json);
}

static enum MHD_Result send_big(struct MHD_Connection *c, gw_server_t *srv, int status,
                                gw_reply_t r, char *json /* stolen, malloc'd, may be NULL */)
{
    /* json_dumps and MHD both allocate: either may fail, and the client then
     * hears a 500 from the reply table rather than the process crashing */
    struct MHD_Response *mr =
        json ? MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!mr) {
        free(json);
        gw_resp_t p;
        gw_resp_error(&p, GW_R_INTERNAL, NULL, "cannot build the response (out of memory)");
        return gw_resp_send(c, &srv->admin_ctr, &p);
    }
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, mr);
    MHD_destroy_response(mr);
    atomic_fetch_add_explicit(&srv->admin_ctr.replies[r], 1, memory_order_relaxed);
    return ret;
}

static json_t *parse_object(admin_req_t *ar, gw_resp_t *p)
{
    if (ar->too_large) {
        gw_resp_error(p, GW_R_TOO_LARGE, NULL, "body is larger than %d bytes", ADMIN_BODY_MAX);
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb(ar->body ? ar->body : "", ar->len, JSON_REJECT_DUPLICATES, &e);
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
static bool only_keys(json_t *obj, const char *const *allowed, gw_resp_t *p)
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

static bool get_int(json_t *obj, const char *key, int64_t min, int64_t max, bool required,
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

static bool get_time(json_t *obj, const char *key, int64_t *out, gw_resp_t *p)
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

static void sale_reply(gw_resp_t *p, gw_reply_t r, const inv_sale_info_t *info)
{
    gw_resp_init(p, r);
    p->body_len = gw_sale_json(info, true, cm_wall_ms(), p->body, sizeof(p->body));
}

static void inv_error(gw_resp_t *p, int rc, const char *why, const char *sale_id)
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
        gw_resp_header(p, "Retry-After", "1");
    }
}

/*---- routes ----*/

static void sale_put(gw_server_t *srv, const char *id, admin_req_t *ar, gw_resp_t *p)
{
    json_t *j = parse_object(ar, p);
    if (!j)
        return;
    static const char *const keys[] = {"stock", "per_user_limit", "starts_at", "ends_at", NULL};
    inv_sale_def_t d;
    memset(&d, 0, sizeof(d));
    memcpy(d.sale_id, id, strlen(id) + 1); /* id was checked: <= 64 chars */
    int64_t stock = 0, limit = 1;
    if (only_keys(j, keys, p) && get_int(j, "stock", 0, 1000000000000LL, true, &stock, p) &&
        get_int(j, "per_user_limit", 1, 1000000, false, &limit, p) &&
        get_time(j, "starts_at", &d.starts_at_ms, p) && get_time(j, "ends_at", &d.ends_at_ms, p)) {
        if (d.starts_at_ms && d.ends_at_ms && d.ends_at_ms <= d.starts_at_ms) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "ends_at must be after starts_at");
        } else {
            d.stock = stock;
            d.per_user_limit = (uint32_t)limit;
            bool existed = inv_sale_find(srv->inv, id) != NULL;
            inv_sale_info_t info;
            char why[256] = "";
            int rc = inv_sale_put(srv->inv, &d, &info, why, sizeof(why));
            if (rc == 0) {
                sale_reply(p, existed ? GW_R_OK : GW_R_OK, &info);
                if (!existed)
                    p->status = 201;
                cm_log_info("admin", "sale defined", "sale=%s stock=%lld per_user_limit=%u",
                            id, (long long)stock, d.per_user_limit);
            } else {
                inv_error(p, rc, why, id);
            }
        }
    }
    json_decref(j);
}

static void sale_restock(gw_server_t *srv, const char *id, const char *key, admin_req_t *ar,
                         gw_resp_t *p)
{
    json_t *j = parse_object(ar, p);
    if (!j)
        return;
    static const char *const keys[] = {"add", NULL};
    int64_t add = 0;
    if (only_keys(j, keys, p) && get_int(j, "add", 1, 1000000000000LL, true, &add, p)) {
        inv_sale_info_t info;
        char why[256] = "";
        int rc = inv_restock_keyed(srv->inv, id, add, key, &info, why, sizeof(why));
        if (rc == 0) {
            sale_reply(p, GW_R_OK, &info);
            cm_log_info("admin", "sale restocked", "sale=%s add=%lld", id, (long long)add);
        } else if (rc == INV_RESTOCK_REPLAYED) {
            /* A retry of a restock that was applied: the same answer, nothing added. */
            sale_reply(p, GW_R_OK, &info);
            gw_resp_header(p, "Idempotent-Replayed", "true");
        } else {
            inv_error(p, rc, why, id);
        }
    }
    json_decref(j);
}

static const struct {
    const char *name;
    gw_scope_t scope;
    bool rate;
} limit_keys[] = {
    {"global_rps", GW_SCOPE_GLOBAL, true}, {"global_burst", GW_SCOPE_GLOBAL, false},
    {"sale_rps", GW_SCOPE_SALE, true},     {"sale_burst", GW_SCOPE_SALE, false},
    {"user_rps", GW_SCOPE_USER, true},     {"user_burst", GW_SCOPE_USER, false},
    {"ip_rps", GW_SCOPE_IP, true},         {"ip_burst", GW_SCOPE_IP, false},
};

static char *limits_json(gw_server_t *srv)
{
    json_t *o = json_object();
    for (size_t i = 0; i < CM_ARRAY_LEN(limit_keys); i++) {
        cm_rate_policy_t pol = gw_limits_get(srv->limits, limit_keys[i].scope);
        if (limit_keys[i].rate)
            json_object_set_new(o, limit_keys[i].name, json_real((double)pol.rate_milli / 1000.0));
        else
            json_object_set_new(o, limit_keys[i].name, json_integer((json_int_t)pol.burst));
    }
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
        *out = m;
        return true;
    }
    return false;
}

static void limits_patch(gw_server_t *srv, admin_req_t *ar, gw_resp_t *p)
{
    json_t *j = parse_object(ar, p);
    if (!j)
        return;
    cm_rate_policy_t pol[GW_SCOPE_COUNT];
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        pol[s] = gw_limits_get(srv->limits, (gw_scope_t)s);
    const char *k;
    json_t *v;
    bool ok = true;
    json_object_foreach(j, k, v) {
        size_t i;
        for (i = 0; i < CM_ARRAY_LEN(limit_keys); i++)
            if (strcmp(k, limit_keys[i].name) == 0)
                break;
        if (i == CM_ARRAY_LEN(limit_keys)) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "unknown field %s", k);
            ok = false;
            break;
        }
        cm_rate_policy_t *pp = &pol[limit_keys[i].scope];
        if (limit_keys[i].rate) {
            if (!rate_milli(v, &pp->rate_milli)) {
                gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                              "%s must be a number of requests per second >= 0 with at most 3 "
                              "decimals (0 = off)",
                              k);
                ok = false;
                break;
            }
        } else {
            json_int_t b = json_is_integer(v) ? json_integer_value(v) : -1;
            if (b < 0 || (uint64_t)b > CM_RATE_BURST_MAX) {
                gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s must be an integer from 0 to %llu",
                              k, (unsigned long long)CM_RATE_BURST_MAX);
                ok = false;
                break;
            }
            pp->burst = (uint64_t)b;
        }
    }
    for (int s = 0; ok && s < GW_SCOPE_COUNT; s++) {
        if (pol[s].rate_milli > 0 && pol[s].burst < 1) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s_burst must be >= 1 when %s_rps > 0",
                          gw_scope_name((gw_scope_t)s), gw_scope_name((gw_scope_t)s));
            ok = false;
        }
    }
    if (ok) {
        /* All valid: apply at once. Buckets keep their tokens. */
        for (int s = 0; s < GW_SCOPE_COUNT; s++)
            gw_limits_set(srv->limits, (gw_scope_t)s, pol[s]);
        pthread_mutex_lock(&srv->cfg_mu);
        srv->cfg->global_rps = pol[GW_SCOPE_GLOBAL].rate_milli;
        srv->cfg->global_burst = pol[GW_SCOPE_GLOBAL].burst;
        srv->cfg->sale_rps = pol[GW_SCOPE_SALE].rate_milli;
        srv->cfg->sale_burst = pol[GW_SCOPE_SALE].burst;
        srv->cfg->user_rps = pol[GW_SCOPE_USER].rate_milli;
        srv->cfg->user_burst = pol[GW_SCOPE_USER].burst;
        srv->cfg->ip_rps = pol[GW_SCOPE_IP].rate_milli;
        srv->cfg->ip_burst = pol[GW_SCOPE_IP].burst;
        pthread_mutex_unlock(&srv->cfg_mu);
        char why[256] = "";
        if (gw_fleet_publish_limits(srv, why, sizeof(why)) != 0)
            cm_log_warn("admin", "limits changed here but not published to the fleet",
                        "reason=\"%s\"", why);
        char *s = limits_json(srv);
        resp_json(p, GW_R_OK, s);
        cm_log_info("admin", "limits changed", "limits=%s", s);
        free(s);
    }
    json_decref(j);
}

static void list_one(inv_sale_t *sale, void *ctx)
{
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    char buf[1024];
    gw_sale_json(&info, true, cm_wall_ms(), buf, sizeof(buf));
    json_array_append_new(ctx, json_loads(buf, 0, NULL));
}

static char *sales_json(gw_server_t *srv)
{
    json_t *a = json_array();
    inv_sale_foreach(srv->inv, list_one, a);
    json_t *o = json_pack("{s:o}", "sales", a);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static char *stats_json(gw_server_t *srv)
{
    gw_counters_t c;
    gw_server_counters(srv, &c);
    json_t *replies = json_object();
    for (int i = 0; i < GW_R_COUNT; i++) {
        uint64_t n = atomic_load(&c.replies[i]);
        if (n) {
            char key[48];
            snprintf(key, sizeof(key), "%d_%s", gw_reply_status((gw_reply_t)i),
                     gw_reply_code((gw_reply_t)i));
            json_object_set_new(replies, key, json_integer((json_int_t)n));
        }
    }
    json_t *rl = json_object();
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        json_object_set_new(rl, gw_scope_name((gw_scope_t)s),
                            json_integer((json_int_t)atomic_load(&c.rate_limited[s])));
    oq_spool_stats_t ss;
    oq_spool_stats(srv->spool, &ss);
    gw_limits_stats_t ls;
    gw_limits_stats(srv->limits, &ls);
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:o,s:o,s:{s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I},s:I,s:s,s:I}",
        "uptime_ms", (json_int_t)(cm_wall_ms() - srv->started_ms), "requests",
        (json_int_t)atomic_load(&c.requests), "accepted_units",
        (json_int_t)atomic_load(&c.accepted_units), "replies", replies, "rate_limited", rl,
        "spool", "unreleased_bytes", (json_int_t)ss.unreleased_bytes, "appended_records",
        (json_int_t)ss.appended_records, "segments", (json_int_t)ss.segments, "limiter", "keys",
        (json_int_t)ls.keys, "capacity", (json_int_t)ls.capacity, "bytes", (json_int_t)ls.bytes,
        "evicted_idle", (json_int_t)ls.evicted_idle, "evicted_busy", (json_int_t)ls.evicted_busy,
        "orders_known", (json_int_t)gw_orders_count(srv->orders), "inventory",
        inv_backend_name(srv->inv), "workers", (json_int_t)srv->nworkers);
    uint64_t rp, rd, rr;
    gw_releaser_stats(srv, &rp, &rd, &rr);
    json_object_set_new(o, "releases",
                        json_pack("{s:I,s:I,s:I}", "pending", (json_int_t)rp, "done",
                                  (json_int_t)rd, "retries", (json_int_t)rr));
    gw_server_stats_extra(srv, o);
    gw_fleet_stats(srv, o);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static char *config_json(gw_server_t *srv)
{
    json_t *o = json_object();
    pthread_mutex_lock(&srv->cfg_mu);
    for (const cm_opt_t *opt = srv->conf->opts; opt->key; opt++) {
        char val[4200];
        cm_conf_format(srv->conf, opt, val, sizeof(val));
        json_object_set_new(o, opt->key,
                            json_pack("{s:s,s:s}", "value", val, "source",
                                      cm_src_name(srv->conf->src[opt - srv->conf->opts])));
    }
    pthread_mutex_unlock(&srv->cfg_mu);
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

static void order_cancel(gw_server_t *srv, const char *id, admin_req_t *ar, gw_resp_t *p)
{
    char reason[128] = "cancelled by operator";
    if (ar->len) {
        json_t *j = parse_object(ar, p);
        if (!j)
            return;
        static const char *const keys[] = {"reason", NULL};
        if (!only_keys(j, keys, p)) {
            json_decref(j);
            return;
        }
        json_t *r = json_object_get(j, "reason");
        if (r && !json_is_string(r)) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "reason must be a string");
            json_decref(j);
            return;
        }
        if (r)
            snprintf(reason, sizeof(reason), "%s", json_string_value(r));
        json_decref(j);
    }
    gw_order_t ord;
    if (!gw_orders_get(srv->orders, id, &ord)) {
        gw_resp_error(p, GW_R_UNKNOWN_ORDER, NULL, "no order %s", id);
        return;
    }
    int rc = gw_server_cancel(srv, &ord, reason);
    if (rc < 0) {
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL, "cancel failed: %s", cm_strerror(rc));
        return;
    }
    gw_orders_get(srv->orders, id, &ord);
    gw_resp_init(p, rc == 0 ? GW_R_ACCEPTED : GW_R_OK);
    p->body_len = (size_t)snprintf(p->body, sizeof(p->body),
                                   "{\"order_id\":\"%s\",\"status\":\"%s\",\"cancel\":\"%s\"}", id,
                                   gw_order_status_name(ord.status),
                                   rc == 0 ? "requested" : "already_final");
}

static enum MHD_Result admin_cb(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *data,
                                size_t *data_size, void **req_cls)
{
    (void)version;
    gw_server_t *srv = cls;
    admin_req_t *ar = *req_cls;
    if (!ar) {
        *req_cls = cm_xcalloc(1, sizeof(*ar));
        return MHD_YES;
    }
    if (*data_size) {
        if (ar->len + *data_size > ADMIN_BODY_MAX) {
            ar->too_large = true;
        } else if (!ar->too_large) {
            ar->body = cm_xrealloc(ar->body, ar->len + *data_size + 1);
            memcpy(ar->body + ar->len, data, *data_size);
            ar->len += *data_size;
            ar->body[ar->len] = '\0';
        }
        *data_size = 0;
        return MHD_YES;
    }
    gw_resp_t resp;
    gw_resp_t *p = &resp;
    if (!authorized(srv, c)) {
        gw_resp_error(p, GW_R_UNAUTHORIZED, NULL,
                      "missing or wrong bearer token (Authorization: Bearer <token>)");
        gw_resp_header(p, "WWW-Authenticate", "Bearer realm=\"flashgate-admin\"");
        return gw_resp_send(c, &srv->admin_ctr, p);
    }
    bool get = strcmp(method, "GET") == 0;
    const char *allow = NULL;
    char id[INV_SALE_ID_MAX + 2];
    pthread_mutex_lock(&admin_lock);
    if (strcmp(url, "/admin/v1/sales") == 0) {
        if (get) {
            pthread_mutex_unlock(&admin_lock);
            return send_big(c, srv, 200, GW_R_OK, sales_json(srv));
        }
        allow = "GET";
    } else if (strncmp(url, "/admin/v1/sales/", 16) == 0) {
        const char *s = url + 16;
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t)(slash - s) : strlen(s);
        if (n == 0 || n > INV_SALE_ID_MAX || !inv_id_valid(s, n, INV_SALE_ID_MAX)) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                          "sale_id must be 1..64 characters of A-Z a-z 0-9 . _ -");
        } else {
            memcpy(id, s, n);
            id[n] = '\0';
            if (!slash) {
                if (strcmp(method, "PUT") == 0) {
                    sale_put(srv, id, ar, p);
                } else if (get) {
                    inv_sale_info_t info;
                    int rc = inv_sale_get(srv->inv, id, &info);
                    if (rc == 0)
                        sale_reply(p, GW_R_OK, &info);
                    else
                        inv_error(p, rc, "", id);
                } else {
                    allow = "GET, PUT";
                }
            } else if (strcmp(slash, "/restock") == 0) {
                if (strcmp(method, "POST") == 0)
                    sale_restock(srv, id,
                                 MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                             "Idempotency-Key"),
                                 ar, p);
                else
                    allow = "POST";
            } else {
                gw_resp_error(p, GW_R_NOT_FOUND, NULL, "no such resource: %s", url);
            }
        }
    } else if (strcmp(url, "/admin/v1/limits") == 0) {
        if (get) {
            pthread_mutex_unlock(&admin_lock);
            return send_big(c, srv, 200, GW_R_OK, limits_json(srv));
        } else if (strcmp(method, "PATCH") == 0) {
            limits_patch(srv, ar, p);
        } else {
            allow = "GET, PATCH";
        }
    } else if (strcmp(url, "/admin/v1/stats") == 0) {
        pthread_mutex_unlock(&admin_lock);
        if (!get) {
            gw_resp_error(p, GW_R_METHOD, NULL, "method %s is not allowed here; use GET", method);
            gw_resp_header(p, "Allow", "GET");
            return gw_resp_send(c, &srv->admin_ctr, p);
        }
        return send_big(c, srv, 200, GW_R_OK, stats_json(srv));
    } else if (strcmp(url, "/admin/v1/config") == 0) {
        pthread_mutex_unlock(&admin_lock);
        if (!get) {
            gw_resp_error(p, GW_R_METHOD, NULL, "method %s is not allowed here; use GET", method);
            gw_resp_header(p, "Allow", "GET");
            return gw_resp_send(c, &srv->admin_ctr, p);
        }
        return send_big(c, srv, 200, GW_R_OK, config_json(srv));
    } else if (strcmp(url, "/admin/v1/debug/broker") == 0) {
        /* Fault injection for rehearsals and tests: embedded broker only. */
        if (strcmp(method, "PUT") != 0) {
            allow = "PUT";
        } else {
            json_t *j = parse_object(ar, p);
            json_t *d = j ? json_object_get(j, "down") : NULL;
            if (j && !json_is_boolean(d)) {
                gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "body must be {\"down\": true|false}");
            } else if (j) {
                int rc = gw__broker_set_down(srv, json_is_true(d));
                if (rc == CM_ENOTFOUND)
                    gw_resp_error(p, GW_R_CONFLICT, NULL, "no embedded broker in this process");
                else if (rc)
                    gw_resp_error(p, GW_R_INTERNAL, NULL, "%s", cm_strerror(rc));
                else
                    resp_json(p, GW_R_OK, json_is_true(d) ? "{\"broker\":\"down\"}"
                                                          : "{\"broker\":\"up\"}");
            }
            json_decref(j);
        }
    } else if (strncmp(url, "/admin/v1/orders/", 17) == 0) {
        const char *s = url + 17;
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t)(slash - s) : 0;
        if (!slash || strcmp(slash, "/cancel") != 0 || n == 0 || n > INV_ORDER_ID_MAX) {
            gw_resp_error(p, GW_R_NOT_FOUND, NULL, "no such resource: %s", url);
        } else if (strcmp(method, "POST") != 0) {
            allow = "POST";
        } else {
            memcpy(id, s, n);
            id[n] = '\0';
            order_cancel(srv, id, ar, p);
        }
    } else {
        gw_resp_error(p, GW_R_NOT_FOUND, NULL, "no such resource: %s", url);
    }
    pthread_mutex_unlock(&admin_lock);
    if (allow) {
        gw_resp_error(p, GW_R_METHOD, NULL, "method %s is not allowed here; use %s", method,
                      allow);
        gw_resp_header(p, "Allow", "%s", allow);
    }
    return gw_resp_send(c, &srv->admin_ctr, p);
}

static void admin_done(void *cls, struct MHD_Connection *c, void **req_cls,
                       enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    admin_req_t *ar = *req_cls;
    if (ar) {
        free(ar->body);
        free(ar);
        *req_cls = NULL;
    }
}

int gw_admin_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    if (srv->cfg->admin_token[0]) {
        size_t n = strlen(srv->cfg->admin_token);
        memcpy(srv->admin_token, srv->cfg->admin_token, n + 1);
        srv->admin_token_len = n;
    } else {
        int rc = load_or_make_token(srv, errbuf, errlen);
        if (rc)
            return rc;
    }
    struct sockaddr_storage ss;
    int rc = gw__parse_listen(srv->cfg->admin_listen, &ss, errbuf, errlen);
    if (rc)
        return rc;
    srv->admin = gw__mhd_start((struct sockaddr *)&ss,
                               MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                   MHD_USE_POLL,
                               false, admin_cb, srv, 64, 30, admin_done);
    if (!srv->admin) {
        snprintf(errbuf, errlen, "cannot listen on %s (admin): %s", srv->cfg->admin_listen,
                 strerror(errno ? errno : EADDRINUSE));
        return CM_EIO;
    }
    return 0;
}

void gw_admin_stop(gw_server_t *srv)
{
    if (srv->admin) {
        MHD_stop_daemon(srv->admin);
        srv->admin = NULL;
    }
}
