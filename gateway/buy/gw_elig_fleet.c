/*
 * A fleet's eligibility store (gw_elig_backend.h): every rule is the field
 * GW_FAIR_REDIS_ELIG_PREFIX "<sale>" of the fair configuration in Redis ->
 * "<days> <claim,claim|->". The admin writes Redis first; every gateway's lottery
 * thread polls it (gw_fair_fleet.c) and makes its table the fleet's.
 */
#include "gateway/buy/gw_elig_backend.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "gateway/base/gw_base.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Writes (or, for an empty rule, deletes) the sale's rule in the fleet's configuration
 * (gw_elig_ops_t.put). */
static int fleet_put(gw_server_t *srv, const gw_elig_rule_t *r, char *errbuf, size_t errlen)
{
    char why[256] = "", val[GW_ELIG_FLEET_VALUE_MAX];
    bool some = r->n_claims || r->min_age_days;
    if (some)
        fleet_value(r, val, sizeof(val));
    gw_fair_pool_t *pool = &srv->fair->pool;
    inv_fleet_conn_t *c = gw_fair__pool_get(pool, why, sizeof(why));
    int rc = c ? gw_fair_redis_elig_put(c, r->sale_id, some ? val : NULL, why, sizeof(why))
               : CM_EBACKEND;
    gw_fair__pool_put(pool, c);
    if (rc)
        cm_errbuf_set(errbuf, errlen, "redis: cannot store the eligibility rule: %s", why);
    return rc ? CM_EBACKEND : 0;
}

/*---- the poll ----*/

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
        if (r->n_claims >= ID_ELIG_MAX || strlen(t) > ID_CLAIM_NAME_MAX || !gw_elig__name_ok(t))
            return false;
        memcpy(r->claims[r->n_claims++], t, strlen(t) + 1);
    }
    return r->n_claims > 0;
}

void gw_elig_fleet_apply(gw_server_t *srv, const char *field, const char *value)
{
    struct gw_elig *e = srv->elig;
    size_t pl = strlen(GW_FAIR_REDIS_ELIG_PREFIX);
    if (!e || strncmp(field, GW_FAIR_REDIS_ELIG_PREFIX, pl) != 0)
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
    gw_elig__bind_bits(srv, r);
    pthread_mutex_lock(&e->mu);
    size_t slot = 0;
    gw_elig_rule_t *old = gw_elig__find(e, sale, &slot);
    if (!readable) {
        /* A rule this gateway cannot read is kept as it is here (marked seen): dropping it
         * would open the sale to everyone. */
        free(r);
        cm_log_error("elig", "a fleet rule cannot be read: the sale's rule here is kept",
                     "sale=%s value=%.80s", sale, value);
    } else if (old && same_rule(old, r)) {
        free(r);
    } else {
        if (gw_elig__publish(e, sale, r) != 0)
            cm_log_error("elig", "a fleet rule does not fit the table", "sale=%s max=%d", sale,
                         GW_ELIG_MAX_SALES);
        else if (gw_elig__save(e) != 0)
            cm_log_error("elig", "cannot save the eligibility rules", "path=%s", e->path);
        else
            cm_log_info("elig", "eligibility rule from the fleet", "sale=%s", sale);
    }
    if (gw_elig__find(e, sale, &slot))
        e->seen[slot] = true; /* kept as it is, or taken */
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
            (void)gw_elig__publish(e, sale, NULL);
            changed = true;
        }
    }
    if (changed && gw_elig__save(e) != 0)
        cm_log_error("elig", "cannot save the eligibility rules", "path=%s", e->path);
    pthread_mutex_unlock(&e->mu);
}

const gw_elig_ops_t gw_elig__fleet_ops = {
    .put = fleet_put,
};
