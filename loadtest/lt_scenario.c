/*
 * Scenario parsing with jansson. Every field is checked for type and range and
 * unknown fields are refused, so a typo in a scenario never silently falls
 * back to a default; the message names the field as section.key.
 */
#include "loadtest/lt_scenario.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "queue/oq_order.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf && errlen) {
        int n = snprintf(errbuf, errlen, "scenario: ");
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < errlen)
            vsnprintf(errbuf + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return CM_EINVAL;
}

/* "crowd.users" or "seed" */
static void field_name(char *out, size_t len, const char *sect, const char *key)
{
    if (sect)
        snprintf(out, len, "%s.%s", sect, key);
    else
        snprintf(out, len, "%s", key);
}

/* Returns 0 when absent (out untouched), 0 when valid, CM_EINVAL otherwise. */
static int get_int(json_t *obj, const char *sect, const char *key, int64_t min, int64_t max,
                   int64_t *out, char *eb, size_t el)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    char f[96];
    field_name(f, sizeof(f), sect, key);
    double d;
    if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v))
        d = json_real_value(v);
    else
        d = NAN;
    if (isnan(d) || d < (double)min || d > (double)max) {
        if (max == INT64_MAX)
            return fail(eb, el, "%s: must be an integer >= %lld", f, (long long)min);
        return fail(eb, el, "%s: must be an integer between %lld and %lld", f, (long long)min,
                    (long long)max);
    }
    *out = (int64_t)d;
    return 0;
}

static int get_u32(json_t *obj, const char *sect, const char *key, int64_t min, int64_t max,
                   uint32_t *out, char *eb, size_t el)
{
    int64_t v = *out;
    int rc = get_int(obj, sect, key, min, max, &v, eb, el);
    *out = (uint32_t)v;
    return rc;
}

static int get_u64(json_t *obj, const char *sect, const char *key, int64_t min, int64_t max,
                   uint64_t *out, char *eb, size_t el)
{
    int64_t v = (int64_t)*out;
    int rc = get_int(obj, sect, key, min, max, &v, eb, el);
    *out = (uint64_t)v;
    return rc;
}

static int get_num(json_t *obj, const char *sect, const char *key, double min, double max,
                   double *out, char *eb, size_t el)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    char f[96];
    field_name(f, sizeof(f), sect, key);
    if (!json_is_number(v) || json_number_value(v) < min || json_number_value(v) > max)
        return fail(eb, el, "%s: must be a number between %g and %g", f, min, max);
    *out = json_number_value(v);
    return 0;
}

static int get_bool(json_t *obj, const char *sect, const char *key, bool *out, char *eb, size_t el)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    char f[96];
    field_name(f, sizeof(f), sect, key);
    if (!json_is_boolean(v))
        return fail(eb, el, "%s: must be true or false", f);
    *out = json_is_true(v);
    return 0;
}

/* Copies into a fixed buffer (maxlen) or, when dup != NULL, into a new string. */
static int get_str(json_t *obj, const char *sect, const char *key, char *buf, size_t maxlen,
                   char **dup, char *eb, size_t el)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    char f[96];
    field_name(f, sizeof(f), sect, key);
    if (json_is_null(v) && dup) {
        CM_FREE(*dup);
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(eb, el, "%s: must be a non-empty string", f);
    if (buf) {
        if (json_string_length(v) >= maxlen)
            return fail(eb, el, "%s: must be shorter than %zu characters", f, maxlen);
        memcpy(buf, json_string_value(v), json_string_length(v) + 1);
    } else if (dup) {
        free(*dup);
        *dup = cm_xstrdup(json_string_value(v));
    }
    return 0;
}

static int check_keys(json_t *obj, const char *sect, const char *const *allowed, char *eb,
                      size_t el)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        (void)v;
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            if (strcmp(allowed[i], key) == 0)
                ok = true;
        if (!ok) {
            char f[96];
            field_name(f, sizeof(f), sect, key);
            return fail(eb, el, "%s: unknown field", f);
        }
    }
    return 0;
}

static int get_section(json_t *root, const char *name, json_t **out, char *eb, size_t el)
{
    *out = json_object_get(root, name);
    if (*out && !json_is_object(*out))
        return fail(eb, el, "%s: must be an object", name);
    if (!*out)
        *out = NULL;
    return 0;
}

static bool url_ok(const char *u)
{
    return strncmp(u, "http://", 7) == 0 && strlen(u) > 7;
}

const char *lt_seg_kind_name(lt_seg_kind_t k)
{
    static const char *names[] = {"ramp", "spike", "plateau", "decay", "pause"};
    return (unsigned)k < CM_ARRAY_LEN(names) ? names[k] : "?";
}

const char *lt_conn_mode_name(lt_conn_mode_t m)
{
    return m == LT_CONN_OPEN ? "open" : m == LT_CONN_QUEUE ? "queue" : "?";
}

int lt_conn_mode_parse(const char *s, lt_conn_mode_t *out)
{
    if (s && strcmp(s, "queue") == 0)
        *out = LT_CONN_QUEUE;
    else if (s && strcmp(s, "open") == 0)
        *out = LT_CONN_OPEN;
    else
        return CM_EINVAL;
    return 0;
}

static void set_defaults(lt_scenario_t *sc)
{
    memset(sc, 0, sizeof(*sc));
    snprintf(sc->name, sizeof(sc->name), "unnamed");
    sc->seed = 1;
    sc->duration_s = 10;
    sc->drain_s = 10;
    sc->connections = 64;
    sc->request_timeout_ms = 5000;
    sc->connection_mode = LT_CONN_QUEUE;
    sc->connections_max = 4096;
    sc->loops = 1;
    snprintf(sc->sale_id, sizeof(sc->sale_id), "rehearsal");
    sc->sale_create = true;
    sc->sale_stock = 1000;
    sc->per_user_limit = 1;
    sc->start_offset_s = 2;
    sc->sale_duration_s = 300;
    sc->users = 1000;
    sc->addresses = 1000;
    sc->bot_fraction = 0;
    sc->aggressive_fraction = 0.5;
    sc->bot_addresses = 16;
    sc->qty = 1;
    sc->person_reaction_ms = 300;
    sc->bot_reaction_ms = 5;
    sc->bot_early_ms = 100;
    for (int c = 0; c < LT_SCENARIO_CLASSES; c++)
        sc->reg_share[c] = 1;
    sc->accounts_per_operator = 1;
    sc->persons_per_operator = 1;
    sc->operator_addresses = 1;
    sc->max_retries = 3;
    sc->retry_default_ms = 1000;
    sc->bot_retry_ms = 50;
    sc->bot_max_retries = 10;
    sc->poll_interval_ms = 500;
    sc->poll_max = 10;
    sc->settle_wait_s = 15;
    sc->topic = cm_xstrdup(OQ_TOPIC_ORDERS);
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ < 0)                                                                               \
            return rc_;                                                                            \
    } while (0)

static int parse_segments(lt_scenario_t *sc, json_t *arr, char *eb, size_t el)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return fail(eb, el, "arrivals: must be a non-empty array of segments");
    if (json_array_size(arr) > LT_MAX_SEGMENTS)
        return fail(eb, el, "arrivals: at most %d segments", LT_MAX_SEGMENTS);
    static const char *const keys[] = {"kind", "duration_s", "rate", "rate_end", NULL};
    size_t i;
    json_t *s;
    json_array_foreach(arr, i, s)
    {
        char sect[32];
        snprintf(sect, sizeof(sect), "arrivals[%zu]", i);
        if (!json_is_object(s))
            return fail(eb, el, "%s: must be an object", sect);
        TRY(check_keys(s, sect, keys, eb, el));
        lt_segment_t *g = &sc->segments[i];
        const char *kind = json_string_value(json_object_get(s, "kind"));
        if (!kind)
            return fail(eb, el, "%s.kind: must be one of ramp, spike, plateau, decay, pause", sect);
        bool found = false;
        for (int k = LT_SEG_RAMP; k <= LT_SEG_PAUSE; k++)
            if (strcmp(kind, lt_seg_kind_name((lt_seg_kind_t)k)) == 0) {
                g->kind = (lt_seg_kind_t)k;
                found = true;
            }
        if (!found)
            return fail(eb, el, "%s.kind: must be one of ramp, spike, plateau, decay, pause", sect);
        if (!json_object_get(s, "duration_s"))
            return fail(eb, el, "%s.duration_s: is required", sect);
        TRY(get_num(s, sect, "duration_s", 0.001, 86400, &g->duration_s, eb, el));
        g->rate = 0;
        if (g->kind != LT_SEG_PAUSE && !json_object_get(s, "rate"))
            return fail(eb, el, "%s.rate: is required", sect);
        TRY(get_num(s, sect, "rate", 0, 10e6, &g->rate, eb, el));
        g->rate_end = g->rate;
        TRY(get_num(s, sect, "rate_end", 0, 10e6, &g->rate_end, eb, el));
        if (g->kind == LT_SEG_PAUSE && (g->rate != 0 || g->rate_end != 0))
            return fail(eb, el, "%s.rate: a pause has no rate", sect);
    }
    sc->n_segments = json_array_size(arr);
    return 0;
}

int lt_scenario_class(const char *s)
{
    static const char *const names[LT_SCENARIO_CLASSES] = {"people", "bots", "aggressive_bots",
                                                           "scalpers"};
    for (int c = 0; s && c < LT_SCENARIO_CLASSES; c++)
        if (strcmp(s, names[c]) == 0)
            return c;
    return -1;
}

/* sale.registration: {"opens_s", "closes_s", "share": {"<class>": fraction}} */
static int parse_registration(lt_scenario_t *sc, json_t *g, char *eb, size_t el)
{
    static const char *const sect = "sale.registration";
    if (!json_is_object(g))
        return fail(eb, el, "%s: must be an object", sect);
    static const char *const keys[] = {"opens_s", "closes_s", "share", NULL};
    TRY(check_keys(g, sect, keys, eb, el));
    if (!json_object_get(g, "opens_s") || !json_object_get(g, "closes_s"))
        return fail(eb, el, "%s: opens_s and closes_s are required", sect);
    TRY(get_num(g, sect, "opens_s", 0, 3600, &sc->reg_opens_s, eb, el));
    TRY(get_num(g, sect, "closes_s", 0, 3600, &sc->reg_closes_s, eb, el));
    json_t *sh = json_object_get(g, "share");
    if (sh) {
        if (!json_is_object(sh))
            return fail(eb, el, "%s.share: must be an object of class: fraction", sect);
        const char *key;
        json_t *v;
        json_object_foreach(sh, key, v)
        {
            int c = lt_scenario_class(key);
            if (c < 0)
                return fail(eb, el, "%s.share.%s: unknown class (people, bots, "
                            "aggressive_bots, scalpers)", sect, key);
            if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1)
                return fail(eb, el, "%s.share.%s: must be a number between 0 and 1", sect, key);
            sc->reg_share[c] = json_number_value(v);
        }
    }
    sc->reg = true;
    return 0;
}

static int parse_root(lt_scenario_t *sc, json_t *root, char *eb, size_t el)
{
    if (!json_is_object(root))
        return fail(eb, el, "(top level): must be a JSON object");
    static const char *const top[] = {"name", "description", "seed", "duration_s", "drain_s",
                                      "targets", "admin", "admin_token", "kafka_brokers", "db",
                                      "topic", "connections", "request_timeout_ms",
                                      "connection_mode", "connections_max", "give_up_ms",
                                      "warm_connections", "loops", "request_start",
                                      "noncore", "sale", "crowd", "behaviour", "arrivals",
                                      "identity", NULL};
    TRY(check_keys(root, NULL, top, eb, el));
    TRY(get_str(root, NULL, "name", sc->name, sizeof(sc->name), NULL, eb, el));
    TRY(get_u64(root, NULL, "seed", 0, INT64_MAX, &sc->seed, eb, el));
    TRY(get_num(root, NULL, "duration_s", 0.1, 3600, &sc->duration_s, eb, el));
    TRY(get_num(root, NULL, "drain_s", 0, 600, &sc->drain_s, eb, el));
    json_t *t = json_object_get(root, "targets");
    if (t) {
        if (!json_is_array(t) || json_array_size(t) == 0 || json_array_size(t) > LT_MAX_TARGETS)
            return fail(eb, el, "targets: must be an array of 1 to %d URLs", LT_MAX_TARGETS);
        size_t i;
        json_t *u;
        json_array_foreach(t, i, u)
        {
            if (!json_is_string(u) || !url_ok(json_string_value(u)))
                return fail(eb, el, "targets[%zu]: must be a URL like http://127.0.0.1:8080", i);
        }
        for (size_t k = 0; k < sc->n_targets; k++)
            CM_FREE(sc->targets[k]);
        sc->n_targets = 0;
        json_array_foreach(t, i, u) sc->targets[sc->n_targets++] = cm_xstrdup(json_string_value(u));
    }
    TRY(get_str(root, NULL, "admin", NULL, 0, &sc->admin_url, eb, el));
    if (sc->admin_url && !url_ok(sc->admin_url))
        return fail(eb, el, "admin: must be a URL like http://127.0.0.1:9090");
    TRY(get_str(root, NULL, "admin_token", NULL, 0, &sc->admin_token, eb, el));
    TRY(get_str(root, NULL, "kafka_brokers", NULL, 0, &sc->kafka_brokers, eb, el));
    TRY(get_str(root, NULL, "db", NULL, 0, &sc->db_url, eb, el));
    TRY(get_str(root, NULL, "topic", NULL, 0, &sc->topic, eb, el));
    TRY(get_u32(root, NULL, "connections", 1, LT_MAX_CONNECTIONS, &sc->connections, eb, el));
    TRY(get_u32(root, NULL, "request_timeout_ms", 1, 600000, &sc->request_timeout_ms, eb, el));
    json_t *m = json_object_get(root, "connection_mode");
    if (m && lt_conn_mode_parse(json_string_value(m), &sc->connection_mode) < 0)
        return fail(eb, el, "connection_mode: must be \"queue\" or \"open\"");
    TRY(get_u32(root, NULL, "connections_max", 1, LT_MAX_CONNECTIONS, &sc->connections_max, eb,
                el));
    TRY(get_u32(root, NULL, "give_up_ms", 0, 600000, &sc->give_up_ms, eb, el));
    TRY(get_u32(root, NULL, "warm_connections", 0, LT_MAX_CONNECTIONS, &sc->warm_connections,
                eb, el));
    TRY(get_u32(root, NULL, "loops", 1, LT_MAX_LOOPS, &sc->loops, eb, el));
    TRY(get_bool(root, NULL, "request_start", &sc->request_start, eb, el));

    json_t *s;
    TRY(get_section(root, "identity", &s, eb, el));
    if (s) {
        static const char *const keys[] = {"key", "issuer", "audience", "person_claim", NULL};
        TRY(check_keys(s, "identity", keys, eb, el));
        TRY(get_str(s, "identity", "key", NULL, 0, &sc->identity_key, eb, el));
        TRY(get_str(s, "identity", "issuer", sc->identity_issuer, sizeof(sc->identity_issuer),
                    NULL, eb, el));
        TRY(get_str(s, "identity", "audience", sc->identity_audience,
                    sizeof(sc->identity_audience), NULL, eb, el));
        TRY(get_str(s, "identity", "person_claim", sc->identity_person_claim,
                    sizeof(sc->identity_person_claim), NULL, eb, el));
    }
    TRY(get_section(root, "noncore", &s, eb, el));
    if (s) {
        static const char *const keys[] = {"share", "path", NULL};
        TRY(check_keys(s, "noncore", keys, eb, el));
        TRY(get_num(s, "noncore", "share", 0, 1, &sc->noncore_share, eb, el));
        TRY(get_str(s, "noncore", "path", sc->noncore_path, sizeof(sc->noncore_path), NULL, eb,
                    el));
    }
    TRY(get_section(root, "sale", &s, eb, el));
    if (s) {
        static const char *const keys[] = {"id",         "create",         "stock",
                                           "per_user_limit", "start_offset_s", "duration_s",
                                           "fair_window_ms", "fair_early_ms",  "registration",
                                           NULL};
        TRY(check_keys(s, "sale", keys, eb, el));
        TRY(get_str(s, "sale", "id", sc->sale_id, sizeof(sc->sale_id), NULL, eb, el));
        TRY(get_bool(s, "sale", "create", &sc->sale_create, eb, el));
        TRY(get_int(s, "sale", "stock", 0, 1000000000, &sc->sale_stock, eb, el));
        TRY(get_u32(s, "sale", "per_user_limit", 1, 1000000, &sc->per_user_limit, eb, el));
        TRY(get_num(s, "sale", "start_offset_s", 0, 3600, &sc->start_offset_s, eb, el));
        TRY(get_num(s, "sale", "duration_s", 1, 86400 * 30, &sc->sale_duration_s, eb, el));
        TRY(get_u32(s, "sale", "fair_window_ms", 0, 600000, &sc->fair_window_ms, eb, el));
        TRY(get_u32(s, "sale", "fair_early_ms", 0, 3600000, &sc->fair_early_ms, eb, el));
        sc->has_fair_window = !json_is_null(json_object_get(s, "fair_window_ms")) &&
                              json_object_get(s, "fair_window_ms");
        sc->has_fair_early = !json_is_null(json_object_get(s, "fair_early_ms")) &&
                             json_object_get(s, "fair_early_ms");
        json_t *g = json_object_get(s, "registration");
        if (g && !json_is_null(g))
            TRY(parse_registration(sc, g, eb, el));
    }
    TRY(get_section(root, "crowd", &s, eb, el));
    if (s) {
        static const char *const keys[] = {"users", "addresses", "bot_fraction",
                                           "aggressive_fraction", "bot_addresses", "qty",
                                           "person_reaction_ms", "bot_reaction_ms",
                                           "bot_early_ms", "operators", "accounts_per_operator",
                                           "persons_per_operator", "operator_addresses", NULL};
        TRY(check_keys(s, "crowd", keys, eb, el));
        TRY(get_u64(s, "crowd", "users", 1, INT64_MAX, &sc->users, eb, el));
        TRY(get_u64(s, "crowd", "addresses", 1, 130000, &sc->addresses, eb, el));
        TRY(get_num(s, "crowd", "bot_fraction", 0, 1, &sc->bot_fraction, eb, el));
        TRY(get_num(s, "crowd", "aggressive_fraction", 0, 1, &sc->aggressive_fraction, eb, el));
        TRY(get_u64(s, "crowd", "bot_addresses", 1, 256, &sc->bot_addresses, eb, el));
        TRY(get_u32(s, "crowd", "qty", 1, 1000, &sc->qty, eb, el));
        TRY(get_num(s, "crowd", "person_reaction_ms", 0, 60000, &sc->person_reaction_ms, eb, el));
        TRY(get_num(s, "crowd", "bot_reaction_ms", 0, 60000, &sc->bot_reaction_ms, eb, el));
        TRY(get_num(s, "crowd", "bot_early_ms", 0, 60000, &sc->bot_early_ms, eb, el));
        TRY(get_u64(s, "crowd", "operators", 0, 1000000, &sc->operators, eb, el));
        TRY(get_u32(s, "crowd", "accounts_per_operator", 1, 100000, &sc->accounts_per_operator,
                    eb, el));
        TRY(get_u32(s, "crowd", "persons_per_operator", 1, 100000, &sc->persons_per_operator, eb,
                    el));
        TRY(get_u32(s, "crowd", "operator_addresses", 1, 100000, &sc->operator_addresses, eb,
                    el));
    }
    TRY(get_section(root, "behaviour", &s, eb, el));
    if (s) {
        static const char *const keys[] = {"max_retries", "retry_default_ms", "bot_retry_ms",
                                           "bot_max_retries", "poll_interval_ms", "poll_max",
                                           "settle_wait_s", NULL};
        TRY(check_keys(s, "behaviour", keys, eb, el));
        TRY(get_u32(s, "behaviour", "max_retries", 0, 1000, &sc->max_retries, eb, el));
        TRY(get_u32(s, "behaviour", "retry_default_ms", 1, 600000, &sc->retry_default_ms, eb, el));
        TRY(get_u32(s, "behaviour", "bot_retry_ms", 1, 600000, &sc->bot_retry_ms, eb, el));
        TRY(get_u32(s, "behaviour", "bot_max_retries", 0, 10000, &sc->bot_max_retries, eb, el));
        TRY(get_u32(s, "behaviour", "poll_interval_ms", 1, 600000, &sc->poll_interval_ms, eb, el));
        TRY(get_u32(s, "behaviour", "poll_max", 0, 10000, &sc->poll_max, eb, el));
        TRY(get_num(s, "behaviour", "settle_wait_s", 0, 3600, &sc->settle_wait_s, eb, el));
    }
    json_t *arr = json_object_get(root, "arrivals");
    if (!arr)
        return fail(eb, el, "arrivals: is required (a non-empty array of segments)");
    TRY(parse_segments(sc, arr, eb, el));
    return 0;
}

int lt_scenario_parse(lt_scenario_t *sc, const char *json, char *eb, size_t el)
{
    set_defaults(sc);
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(eb, el, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    int rc = parse_root(sc, root, eb, el);
    json_decref(root);
    if (rc == 0)
        rc = lt_scenario_validate(sc, eb, el);
    return rc;
}

int lt_scenario_load(lt_scenario_t *sc, const char *path, char *eb, size_t el)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_defaults(sc);
        snprintf(eb, el, "scenario: %s: cannot open", path);
        return CM_EIO;
    }
    size_t cap = 4096, len = 0;
    char *buf = cm_xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2)
            buf = cm_xrealloc(buf, cap *= 2);
    }
    fclose(f);
    buf[len] = '\0';
    int rc = lt_scenario_parse(sc, buf, eb, el);
    free(buf);
    return rc;
}

int lt_scenario_validate(const lt_scenario_t *sc, char *eb, size_t el)
{
    if (sc->n_targets == 0)
        return fail(eb, el, "targets: at least one target is required (or --target URL)");
    for (size_t i = 0; i < sc->n_targets; i++)
        if (!url_ok(sc->targets[i]))
            return fail(eb, el, "targets[%zu]: must be a URL like http://127.0.0.1:8080", i);
    if (sc->admin_url && !url_ok(sc->admin_url))
        return fail(eb, el, "admin: must be a URL like http://127.0.0.1:9090");
    double total = 0;
    for (size_t i = 0; i < sc->n_segments; i++)
        total += sc->segments[i].duration_s * (sc->segments[i].rate + sc->segments[i].rate_end) / 2;
    if (total < 1)
        return fail(eb, el, "arrivals: the profile brings fewer than one arrival");
    if (sc->sale_create && !sc->admin_url)
        return fail(eb, el, "sale.create: needs admin (the admin API URL)");
    if (sc->users > 100000000)
        return fail(eb, el, "crowd.users: at most 100000000 (memory is 20 bytes per account)");
    if (sc->persons_per_operator > sc->accounts_per_operator)
        return fail(eb, el, "crowd.persons_per_operator: at most accounts_per_operator (%u): "
                    "each person holds at least one account", sc->accounts_per_operator);
    if (sc->operators * sc->accounts_per_operator > 100000000 ||
        lt_scenario_accounts(sc) > 100000000)
        return fail(eb, el, "crowd.operators: at most 100000000 accounts in all (users + "
                    "operators x accounts_per_operator)");
    if (sc->operators * sc->operator_addresses > LT_MAX_PROXY_ADDRESSES)
        return fail(eb, el, "crowd.operator_addresses: at most %d proxy addresses in all "
                    "(operators x operator_addresses)", LT_MAX_PROXY_ADDRESSES);
    for (const char *c = sc->identity_person_claim; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-' || *c == '.'))
            return fail(eb, el, "identity.person_claim: a claim name of A-Z a-z 0-9 . _ -");
    if (sc->connections > LT_MAX_CONNECTIONS)
        return fail(eb, el, "connections: must be an integer between 1 and %d", LT_MAX_CONNECTIONS);
    if (sc->connection_mode == LT_CONN_OPEN &&
        (sc->connections_max < sc->connections || sc->connections_max > LT_MAX_CONNECTIONS))
        return fail(eb, el, "connections_max: must be between connections (%u) and %d in open mode",
                    sc->connections, LT_MAX_CONNECTIONS);
    if (sc->warm_connections > sc->connections)
        return fail(eb, el, "warm_connections: at most connections (%u): the pool, or the idle "
                    "cache in open mode", sc->connections);
    if (sc->loops > sc->connections)
        return fail(eb, el, "loops: at most connections (%u): each loop has its own share of "
                    "the connections", sc->connections);
    if (sc->noncore_share > 0 && sc->noncore_path[0] != '/')
        return fail(eb, el, "noncore.path: must start with / when noncore.share > 0");
    for (const char *c = sc->noncore_path; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 127)
            return fail(eb, el, "noncore.path: no spaces or control characters");
    if (sc->give_up_ms > sc->request_timeout_ms)
        return fail(eb, el, "give_up_ms: must not exceed request_timeout_ms (%u)",
                    sc->request_timeout_ms);
    if (sc->reg) {
        if (sc->reg_closes_s <= sc->reg_opens_s)
            return fail(eb, el, "sale.registration.closes_s: must be after opens_s");
        if (!sc->fair_window_ms)
            return fail(eb, el, "sale.registration: needs a start-window lottery "
                        "(sale.fair_window_ms > 0): the lottery is what takes only registered persons");
        if (sc->reg_closes_s * 1000 > sc->start_offset_s * 1000 - sc->fair_early_ms)
            return fail(eb, el, "sale.registration.closes_s: must be no later than the lottery "
                        "window's opening (start_offset_s - fair_early_ms: %.3f)",
                        sc->start_offset_s - sc->fair_early_ms / 1000.0);
        if (!sc->sale_create)
            return fail(eb, el, "sale.registration: needs sale.create (flashgate-load sets the "
                        "registration window when it creates the sale)");
    }
    if (sc->start_offset_s >= sc->duration_s + sc->drain_s)
        return fail(eb, el, "sale.start_offset_s: must be before the run ends (duration_s + drain_s)");
    return 0;
}

void lt_scenario_free(lt_scenario_t *sc)
{
    for (size_t i = 0; i < sc->n_targets; i++)
        CM_FREE(sc->targets[i]);
    sc->n_targets = 0;
    CM_FREE(sc->admin_url);
    CM_FREE(sc->admin_token);
    CM_FREE(sc->identity_key);
    CM_FREE(sc->kafka_brokers);
    CM_FREE(sc->db_url);
    CM_FREE(sc->topic);
}

void lt_scenario_set_targets(lt_scenario_t *sc, const char *csv)
{
    for (size_t i = 0; i < sc->n_targets; i++)
        CM_FREE(sc->targets[i]);
    sc->n_targets = 0;
    const char *p = csv;
    while (*p && sc->n_targets < LT_MAX_TARGETS) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n)
            sc->targets[sc->n_targets++] = cm_xstrndup(p, n);
        p += n;
        if (*p == ',')
            p++;
    }
}

uint64_t lt_scenario_accounts(const lt_scenario_t *sc)
{
    return sc->users + sc->operators * sc->accounts_per_operator;
}

uint64_t lt_scenario_persons(const lt_scenario_t *sc)
{
    return sc->users + sc->operators * sc->persons_per_operator;
}

double lt_scenario_profile_s(const lt_scenario_t *sc)
{
    double t = 0;
    for (size_t i = 0; i < sc->n_segments; i++)
        t += sc->segments[i].duration_s;
    return t < sc->duration_s ? t : sc->duration_s;
}
