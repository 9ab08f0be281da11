/*
 * Per-sale eligibility rules (gw_elig.h): the table, its file and the buy
 * path's check.
 */
#include "gateway/buy/gw_elig.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_url.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_fair_redis.h"
#include "gateway/buy/gw_identity.h"
#include "inventory/inv_fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW_ELIG_MAX_SALES 1024 /* sales with a rule */

typedef struct retired {
    struct retired *next;
    gw_elig_rule_t *rule;
} retired_t;

struct gw_elig {
    pthread_mutex_t mu; /* writers: the slots, n, retired, the file */
    /* A slot holds one sale's rule (NULL once removed: the slot is reused).
     * Readers scan slots [0, n) without a lock; a published rule is never
     * changed, and a replaced one is freed only at close. */
    _Atomic(gw_elig_rule_t *) slots[GW_ELIG_MAX_SALES];
    _Atomic size_t n;
    _Atomic size_t live; /* rules set: 0 lets the buy path skip the scan */
    retired_t *retired;
    char path[600];
    /* fleet: where the rules are shared, and which slots the poll in progress applied */
    bool fleet;
    cm_redis_url_t addr;
    bool seen[GW_ELIG_MAX_SALES];
};

static gw_elig_rule_t *find(struct gw_elig *e, const char *sale_id, size_t *slot)
{
    size_t n = atomic_load_explicit(&e->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        gw_elig_rule_t *r = atomic_load_explicit(&e->slots[i], memory_order_acquire);
        if (r && strcmp(r->sale_id, sale_id) == 0) {
            if (slot)
                *slot = i;
            return r;
        }
    }
    return NULL;
}

/* Each required claim's bit under the current identity.eligibility_claims. */
static void bind_bits(const gw_server_t *srv, gw_elig_rule_t *r)
{
    for (uint32_t i = 0; i < r->n_claims; i++)
        r->bits[i] =
            (int8_t)id_config_claim_bit(&srv->cfg->identity, r->claims[i], strlen(r->claims[i]));
}

/* Rewrites eligibility.json atomically (cm_journal_replace_file). e->mu held. */
static int save(struct gw_elig *e)
{
    json_t *arr = json_array();
    size_t n = atomic_load(&e->n);
    for (size_t i = 0; i < n; i++) {
        gw_elig_rule_t *r = atomic_load(&e->slots[i]);
        if (!r)
            continue;
        json_t *names = json_array();
        for (uint32_t k = 0; k < r->n_claims; k++)
            json_array_append_new(names, json_string(r->claims[k]));
        json_array_append_new(arr, json_pack("{s:s,s:o,s:I}", "sale_id", r->sale_id,
                                             "require_claims", names, "min_account_age_days",
                                             (json_int_t)r->min_age_days));
    }
    json_t *root = json_pack("{s:o}", "sales", arr);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    int rc = text ? cm_journal_replace_file(e->path, text, strlen(text), 0644) : CM_EIO;
    free(text);
    return rc;
}

/* Publishes r (or removes the sale's rule when r has none). e->mu held. */
static int publish(struct gw_elig *e, const char *sale_id, gw_elig_rule_t *r)
{
    size_t slot = 0;
    gw_elig_rule_t *old = find(e, sale_id, &slot);
    bool empty = !r || (r->n_claims == 0 && r->min_age_days == 0);
    if (empty) {
        free(r);
        r = NULL;
    }
    if (!old) {
        if (!r)
            return 0;
        size_t n = atomic_load(&e->n);
        for (slot = 0; slot < n && atomic_load(&e->slots[slot]); slot++)
            ;
        if (slot == GW_ELIG_MAX_SALES) {
            free(r);
            return CM_EINVAL;
        }
        atomic_store_explicit(&e->slots[slot], r, memory_order_release);
        if (slot == n)
            atomic_store_explicit(&e->n, n + 1, memory_order_release);
        atomic_fetch_add(&e->live, 1);
        return 0;
    }
    atomic_store_explicit(&e->slots[slot], r, memory_order_release);
    if (!r)
        atomic_fetch_sub(&e->live, 1);
    retired_t *t = cm_xcalloc(1, sizeof(*t));
    t->rule = old;
    t->next = e->retired;
    e->retired = t;
    return 0;
}

/* A claim name as identity.eligibility_claims allows it (safe inside a JSON string; no
 * ',', the separator of that list and of the fleet's text of a rule). */
static bool name_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == '"' || *s == '\\' || *s == ',' ||
            (unsigned char)*s >= 127)
            return false;
    return true;
}

int gw_elig_open(gw_server_t *srv, char *errbuf, size_t errlen)
{
    struct gw_elig *e = cm_xcalloc(1, sizeof(*e));
    pthread_mutex_init(&e->mu, NULL);
    snprintf(e->path, sizeof(e->path), "%s/eligibility.json", srv->cfg->data_dir);
    srv->elig = e;
    if (strncmp(srv->cfg->inventory, "redis", 5) == 0) {
        char why[256] = "";
        if (cm_redis_url_parse(srv->cfg->inventory, &e->addr, why, sizeof(why)) != 0 ||
            cm_redis_url_default_password(&e->addr, srv->cfg->redis_password) != 0) {
            cm_errbuf_set(errbuf, errlen, "eligibility: %s", why);
            return CM_EINVAL;
        }
        e->fleet = true;
    }
    json_error_t jerr;
    json_t *root = json_load_file(e->path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (access(e->path, F_OK) == 0) {
            cm_errbuf_set(errbuf, errlen, "%s: %s", e->path, jerr.text);
            return CM_EINVAL;
        }
        return 0;
    }
    json_t *arr = json_object_get(root, "sales"), *it;
    size_t i;
    int rc = 0;
    json_array_foreach(arr, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "sale_id"));
        json_t *names = json_object_get(it, "require_claims");
        json_int_t days = json_integer_value(json_object_get(it, "min_account_age_days"));
        if (!id || !inv_id_valid(id, strlen(id), INV_SALE_ID_MAX) || !json_is_array(names) ||
            json_array_size(names) > ID_ELIG_MAX || days < 0 || days > GW_ELIG_AGE_MAX_DAYS) {
            cm_errbuf_set(errbuf, errlen, "%s: sale %zu is malformed", e->path, i);
            rc = CM_EINVAL;
            break;
        }
        gw_elig_rule_t *r = cm_xcalloc(1, sizeof(*r));
        snprintf(r->sale_id, sizeof(r->sale_id), "%s", id);
        size_t k;
        json_t *nm;
        json_array_foreach(names, k, nm)
        {
            const char *s = json_string_value(nm);
            if (s && strlen(s) <= ID_CLAIM_NAME_MAX && name_ok(s))
                memcpy(r->claims[r->n_claims++], s, strlen(s) + 1);
        }
        r->min_age_days = (uint32_t)days;
        bind_bits(srv, r);
        /* A name no longer in identity.eligibility_claims can never be met:
         * the sale refuses everyone (never silently opened). Said once here. */
        for (uint32_t c = 0; c < r->n_claims; c++)
            if (r->bits[c] < 0)
                cm_log_warn("elig", "a sale requires a claim not in identity.eligibility_claims",
                            "sale=%s claim=%s", r->sale_id, r->claims[c]);
        if (r->min_age_days && !srv->cfg->identity.account_created_claim[0])
            cm_log_warn("elig",
                        "a sale requires an account age without "
                        "identity.account_created_claim",
                        "sale=%s", r->sale_id);
        pthread_mutex_lock(&e->mu);
        (void)publish(e, r->sale_id, r);
        pthread_mutex_unlock(&e->mu);
    }
    json_decref(root);
    return rc;
}

void gw_elig_close(gw_server_t *srv)
{
    struct gw_elig *e = srv->elig;
    if (!e)
        return;
    for (size_t i = 0; i < atomic_load(&e->n); i++)
        free(atomic_load(&e->slots[i]));
    while (e->retired) {
        retired_t *t = e->retired;
        e->retired = t->next;
        free(t->rule);
        free(t);
    }
    pthread_mutex_destroy(&e->mu);
    free(e);
    srv->elig = NULL;
}

int gw_elig_parse(gw_server_t *srv, const char *sale_id, const void *require_claims,
                  int64_t min_age_days, gw_elig_rule_t *out, char *errbuf, size_t errlen)
{
    const json_t *rc = require_claims;
    memset(out, 0, sizeof(*out));
    snprintf(out->sale_id, sizeof(out->sale_id), "%s", sale_id);
    if (rc && !json_is_object(rc)) {
        cm_errbuf_set(errbuf, errlen,
                      "require_claims must be an object of claim name -> true, e.g. "
                      "{\"phone_verified\":true}");
        return CM_EINVAL;
    }
    size_t n = rc ? json_object_size(rc) : 0;
    if (min_age_days < 0 || min_age_days > GW_ELIG_AGE_MAX_DAYS) {
        cm_errbuf_set(errbuf, errlen, "min_account_age_days must be 0..%d", GW_ELIG_AGE_MAX_DAYS);
        return CM_EINVAL;
    }
    if (n == 0 && min_age_days == 0)
        return 0;
    const gw_config_t *cfg = srv->cfg;
    if (cfg->id_mode != GW_ID_JWT) {
        cm_errbuf_set(errbuf, errlen,
                      "%s needs identity.mode=jwt: only a verified token carries claims",
                      n ? "require_claims" : "min_account_age_days");
        return CM_EINVAL;
    }
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)rc, name, v)
    {
        if (strchr(name, ',')) {
            cm_errbuf_set(errbuf, errlen,
                          "require_claims: \"%.64s\" has a ',': a claim name cannot (',' "
                          "separates identity.eligibility_claims)",
                          name);
            return CM_EINVAL;
        }
        int bit = id_config_claim_bit(&cfg->identity, name, strlen(name));
        if (bit < 0) {
            cm_errbuf_set(errbuf, errlen,
                          "require_claims: \"%.64s\" is not in identity.eligibility_claims "
                          "(\"%.200s\")",
                          name, cfg->identity.eligibility_claims);
            return CM_EINVAL;
        }
        if (!json_is_true(v)) {
            cm_errbuf_set(errbuf, errlen, "require_claims: \"%.64s\" must be true", name);
            return CM_EINVAL;
        }
        out->bits[out->n_claims] = (int8_t)bit;
        memcpy(out->claims[out->n_claims++], name, strlen(name) + 1);
    }
    if (min_age_days > 0 && !cfg->identity.account_created_claim[0]) {
        cm_errbuf_set(errbuf, errlen,
                      "min_account_age_days needs identity.account_created_claim (the claim "
                      "holding the account's creation time)");
        return CM_EINVAL;
    }
    out->min_age_days = (uint32_t)min_age_days;
    return 0;
}

/* The fleet's text of a rule: "<days> <claim,claim>" ("-" for no claims); its longest,
 * with the NUL, fits GW_ELIG_FLEET_VALUE_MAX. */
#define GW_ELIG_FLEET_VALUE_MAX (16 + ID_ELIG_MAX * (ID_CLAIM_NAME_MAX + 1))
_Static_assert(GW_ELIG_FLEET_VALUE_MAX >=
                   sizeof("36500 ") - 1 + ID_ELIG_MAX * (ID_CLAIM_NAME_MAX + 1),
               "the fleet's text of the longest rule fits");
static void fleet_value(const gw_elig_rule_t *r, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "%u ", r->min_age_days);
    for (uint32_t i = 0; i < r->n_claims && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "," : "", r->claims[i]);
    if (!r->n_claims && n < cap)
        snprintf(out + n, cap - n, "-");
}

/* Writes (or, for an empty rule, deletes) the sale's rule in the fleet's configuration.
 * 0 or CM_EBACKEND with a reason. */
static int fleet_put(struct gw_elig *e, const gw_elig_rule_t *r, char *errbuf, size_t errlen)
{
    char why[256] = "", field[INV_SALE_ID_MAX + 8];
    char val[GW_ELIG_FLEET_VALUE_MAX];
    snprintf(field, sizeof(field), GW_ELIG_FLEET_PREFIX "%s", r->sale_id);
    inv_fleet_conn_t *c = inv_fleet_connect(&e->addr, 2000, why, sizeof(why));
    int rc = CM_EBACKEND;
    if (c && (r->n_claims || r->min_age_days)) {
        fleet_value(r, val, sizeof(val));
        rc = gw_fair_redis_lottery_conf_put(c, field, val, why, sizeof(why));
    } else if (c) {
        rc = gw_fair_redis_lottery_conf_del(c, field, why, sizeof(why));
    }
    inv_fleet_close(c);
    if (rc)
        cm_errbuf_set(errbuf, errlen, "redis: cannot store the eligibility rule: %s", why);
    return rc ? CM_EBACKEND : 0;
}

int gw_elig_set(gw_server_t *srv, const gw_elig_rule_t *rule, char *errbuf, size_t errlen)
{
    struct gw_elig *e = srv->elig;
    gw_elig_rule_t had;
    bool existed = gw_elig_get(srv, rule->sale_id, &had);
    if (e->fleet && (existed || rule->n_claims || rule->min_age_days)) {
        int frc = fleet_put(e, rule, errbuf, errlen);
        if (frc)
            return frc;
    }
    gw_elig_rule_t *r = cm_xmalloc(sizeof(*r));
    *r = *rule;
    pthread_mutex_lock(&e->mu);
    int rc = publish(e, rule->sale_id, r);
    size_t slot;
    if (rc == 0 && find(e, rule->sale_id, &slot))
        e->seen[slot] = true; /* a poll that read Redis before this write keeps it */
    if (rc)
        cm_errbuf_set(errbuf, errlen, "too many sales with eligibility rules (max %d)",
                      GW_ELIG_MAX_SALES);
    else if ((rc = save(e)) != 0)
        cm_errbuf_set(errbuf, errlen, "cannot save %s", e->path);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

bool gw_elig_get(gw_server_t *srv, const char *sale_id, gw_elig_rule_t *out)
{
    struct gw_elig *e = srv->elig;
    gw_elig_rule_t *r = e ? find(e, sale_id, NULL) : NULL;
    if (r)
        *out = *r;
    return r != NULL;
}

void gw_elig_sale_deleted(gw_server_t *srv, const char *sale_id)
{
    struct gw_elig *e = srv->elig;
    if (!e)
        return;
    if (e->fleet && find(e, sale_id, NULL)) {
        gw_elig_rule_t none;
        memset(&none, 0, sizeof(none));
        snprintf(none.sale_id, sizeof(none.sale_id), "%s", sale_id);
        char why[300];
        if (fleet_put(e, &none, why, sizeof(why)) != 0)
            cm_log_error("elig", "cannot delete a deleted sale's rule in the fleet",
                         "sale=%s err=\"%s\"", sale_id, why);
    }
    pthread_mutex_lock(&e->mu);
    if (find(e, sale_id, NULL)) {
        (void)publish(e, sale_id, NULL);
        if (save(e) != 0)
            cm_log_error("elig", "cannot save the eligibility rules", "path=%s", e->path);
    }
    pthread_mutex_unlock(&e->mu);
}

bool gw_elig_check(gw_req_t *r, const char *sale_id, int64_t now_ms)
{
    struct gw_elig *e = r->w->srv->elig;
    if (!e || atomic_load_explicit(&e->live, memory_order_relaxed) == 0)
        return true;
    const gw_elig_rule_t *rule = find(e, sale_id, NULL);
    if (!rule)
        return true;
    bool verified = gw_identity_on(r->w->srv);
    char reason[ID_CLAIM_NAME_MAX + 48];
    reason[0] = '\0';
    for (uint32_t i = 0; i < rule->n_claims && !reason[0]; i++)
        if (!verified || rule->bits[i] < 0 || !(gw_req_buy(r)->eligible & (1u << rule->bits[i])))
            snprintf(reason, sizeof(reason), "claim %s", rule->claims[i]);
    if (!reason[0] && rule->min_age_days) {
        int64_t created = verified ? gw_req_buy(r)->created_at : 0;
        if (created <= 0)
            snprintf(reason, sizeof(reason), "account age unknown");
        else if (now_ms / 1000 - created < (int64_t)rule->min_age_days * 86400)
            snprintf(reason, sizeof(reason), "account younger than %u days", rule->min_age_days);
    }
    if (!reason[0])
        return true;
    char extra[sizeof(reason) + 16];
    snprintf(extra, sizeof(extra), "\"reason\":\"%s\"", reason);
    gw_resp_error(&r->resp, GW_R_NOT_ELIGIBLE, extra,
                  "sale %s is open to eligible buyers only; not met: %s", sale_id, reason);
    return false;
}

/*---- the fleet's rules ----*/

void gw_elig_fleet_begin(gw_server_t *srv)
{
    struct gw_elig *e = srv->elig;
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    memset(e->seen, 0, sizeof(e->seen));
    pthread_mutex_unlock(&e->mu);
}

/* Whether two rules require the same. */
static bool same_rule(const gw_elig_rule_t *a, const gw_elig_rule_t *b)
{
    if (a->n_claims != b->n_claims || a->min_age_days != b->min_age_days)
        return false;
    for (uint32_t i = 0; i < a->n_claims; i++)
        if (strcmp(a->claims[i], b->claims[i]) != 0)
            return false;
    return true;
}

/* The fleet's text of a rule (fleet_value) into r's days and claims; false when it is
 * not one (too long, a bad number or name, too many names). */
static bool fleet_parse(const char *value, gw_elig_rule_t *r)
{
    char names[GW_ELIG_FLEET_VALUE_MAX];
    if (strlen(value) >= sizeof(names) || value[0] < '0' || value[0] > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long days = strtoul(value, &end, 10);
    /* "<days> <names>": one space, then names without blanks */
    if (errno || days > GW_ELIG_AGE_MAX_DAYS || *end != ' ' || end[1] == '\0' ||
        strpbrk(end + 1, " \t\r\n"))
        return false;
    memcpy(names, end + 1, strlen(end + 1) + 1);
    r->min_age_days = (uint32_t)days;
    if (strcmp(names, "-") == 0)
        return true;
    for (char *save = NULL, *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (r->n_claims >= ID_ELIG_MAX || strlen(t) > ID_CLAIM_NAME_MAX || !name_ok(t))
            return false;
        memcpy(r->claims[r->n_claims++], t, strlen(t) + 1);
    }
    return r->n_claims > 0;
}

void gw_elig_fleet_apply(gw_server_t *srv, const char *field, const char *value)
{
    struct gw_elig *e = srv->elig;
    size_t pl = strlen(GW_ELIG_FLEET_PREFIX);
    if (!e || strncmp(field, GW_ELIG_FLEET_PREFIX, pl) != 0)
        return;
    const char *sale = field + pl;
    if (!inv_id_valid(sale, strlen(sale), INV_SALE_ID_MAX)) {
        cm_log_warn("elig", "a fleet rule for a malformed sale id is ignored", "field=%.80s",
                    field);
        return;
    }
    gw_elig_rule_t *r = cm_xcalloc(1, sizeof(*r));
    bool readable = fleet_parse(value, r);
    snprintf(r->sale_id, sizeof(r->sale_id), "%s", sale);
    bind_bits(srv, r);
    pthread_mutex_lock(&e->mu);
    size_t slot = 0;
    gw_elig_rule_t *old = find(e, sale, &slot);
    if (!readable) {
        /* A rule this gateway cannot read is kept as it is here (marked seen): dropping it
         * would open the sale to everyone. */
        free(r);
        cm_log_error("elig", "a fleet rule cannot be read: the sale's rule here is kept",
                     "sale=%s value=%.80s", sale, value);
    } else if (old && same_rule(old, r)) {
        free(r);
    } else {
        if (publish(e, sale, r) != 0)
            cm_log_error("elig", "a fleet rule does not fit the table", "sale=%s max=%d", sale,
                         GW_ELIG_MAX_SALES);
        else if (save(e) != 0)
            cm_log_error("elig", "cannot save the eligibility rules", "path=%s", e->path);
        else
            cm_log_info("elig", "eligibility rule from the fleet", "sale=%s", sale);
    }
    if (find(e, sale, &slot))
        e->seen[slot] = true;
    pthread_mutex_unlock(&e->mu);
}

void gw_elig_fleet_end(gw_server_t *srv, bool complete)
{
    struct gw_elig *e = srv->elig;
    if (!e || !complete)
        return;
    pthread_mutex_lock(&e->mu);
    bool changed = false;
    size_t n = atomic_load(&e->n);
    for (size_t i = 0; i < n; i++) {
        gw_elig_rule_t *r = atomic_load(&e->slots[i]);
        if (r && !e->seen[i]) { /* removed through another gateway */
            char sale[INV_SALE_ID_MAX + 1];
            snprintf(sale, sizeof(sale), "%s", r->sale_id);
            (void)publish(e, sale, NULL);
            changed = true;
        }
    }
    if (changed && save(e) != 0)
        cm_log_error("elig", "cannot save the eligibility rules", "path=%s", e->path);
    pthread_mutex_unlock(&e->mu);
}
