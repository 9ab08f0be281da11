/* Per-sale eligibility rules (gw_elig.h): the table, its file and the buy path's
 * check, over the store e->ops (gw_elig_backend.h). */
#include "gateway/buy/gw_elig.h"
#include "gateway/buy/gw_elig_backend.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_identity.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

gw_elig_rule_t *gw_elig__find(struct gw_elig *e, const char *sale_id, size_t *slot)
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

void gw_elig__bind_bits(const gw_server_t *srv, gw_elig_rule_t *r)
{
    for (uint32_t i = 0; i < r->n_claims; i++)
        r->bits[i] =
            (int8_t)id_config_claim_bit(&srv->cfg->identity, r->claims[i], strlen(r->claims[i]));
}

/* Through cm_journal_replace_file: a crash leaves the old file or the new one. */
int gw_elig__save(struct gw_elig *e)
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

int gw_elig__publish(struct gw_elig *e, const char *sale_id, gw_elig_rule_t *r)
{
    size_t slot = 0;
    gw_elig_rule_t *old = gw_elig__find(e, sale_id, &slot);
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
        e->seen[slot] = true;
        if (slot == n)
            atomic_store_explicit(&e->n, n + 1, memory_order_release);
        atomic_fetch_add(&e->live, 1);
        return 0;
    }
    atomic_store_explicit(&e->slots[slot], r, memory_order_release);
    e->seen[slot] = r != NULL;
    if (!r)
        atomic_fetch_sub(&e->live, 1);
    gw_elig_retired_t *t = cm_xcalloc(1, sizeof(*t));
    t->rule = old;
    t->next = e->retired;
    e->retired = t;
    return 0;
}

bool gw_elig__name_ok(const char *s)
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
    e->ops = srv->fair->lot->elig; /* the fairness store's choice (gw_fair_open) */
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
            if (s && strlen(s) <= ID_CLAIM_NAME_MAX && gw_elig__name_ok(s))
                memcpy(r->claims[r->n_claims++], s, strlen(s) + 1);
        }
        r->min_age_days = (uint32_t)days;
        gw_elig__bind_bits(srv, r);
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
        (void)gw_elig__publish(e, r->sale_id, r);
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
        gw_elig_retired_t *t = e->retired;
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

int gw_elig_set(gw_server_t *srv, const gw_elig_rule_t *rule, char *errbuf, size_t errlen)
{
    struct gw_elig *e = srv->elig;
    gw_elig_rule_t had;
    bool existed = gw_elig_get(srv, rule->sale_id, &had);
    if (e->ops->put && (existed || rule->n_claims || rule->min_age_days)) {
        int src = e->ops->put(srv, rule, errbuf, errlen);
        if (src)
            return src;
    }
    gw_elig_rule_t *r = cm_xmalloc(sizeof(*r));
    *r = *rule;
    pthread_mutex_lock(&e->mu);
    int rc = gw_elig__publish(e, rule->sale_id, r);
    if (rc)
        cm_errbuf_set(errbuf, errlen, "too many sales with eligibility rules (max %d)",
                      GW_ELIG_MAX_SALES);
    else if ((rc = gw_elig__save(e)) != 0)
        cm_errbuf_set(errbuf, errlen, "cannot save %s", e->path);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

bool gw_elig_get(gw_server_t *srv, const char *sale_id, gw_elig_rule_t *out)
{
    struct gw_elig *e = srv->elig;
    gw_elig_rule_t *r = e ? gw_elig__find(e, sale_id, NULL) : NULL;
    if (r)
        *out = *r;
    return r != NULL;
}

void gw_elig_sale_deleted(gw_server_t *srv, const char *sale_id)
{
    struct gw_elig *e = srv->elig;
    if (!e)
        return;
    if (e->ops->put && gw_elig__find(e, sale_id, NULL)) {
        gw_elig_rule_t none = {.n_claims = 0};
        snprintf(none.sale_id, sizeof(none.sale_id), "%s", sale_id);
        char why[300];
        if (e->ops->put(srv, &none, why, sizeof(why)) != 0)
            cm_log_error("elig", "cannot delete a deleted sale's rule from the store",
                         "sale=%s err=\"%s\"", sale_id, why);
    }
    pthread_mutex_lock(&e->mu);
    if (gw_elig__find(e, sale_id, NULL)) {
        (void)gw_elig__publish(e, sale_id, NULL);
        if (gw_elig__save(e) != 0)
            cm_log_error("elig", "cannot save the eligibility rules", "path=%s", e->path);
    }
    pthread_mutex_unlock(&e->mu);
}

bool gw_elig_check(gw_req_t *r, const char *sale_id, int64_t now_ms)
{
    struct gw_elig *e = r->w->srv->elig;
    if (!e || atomic_load_explicit(&e->live, memory_order_relaxed) == 0)
        return true;
    const gw_elig_rule_t *rule = gw_elig__find(e, sale_id, NULL);
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
