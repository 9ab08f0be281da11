/*
 * Registration (gw_reg.h) over the sale's store (gw_reg_backend.h), which steps
 * the registration's decisions (gw_reg_core.c) around its own I/O.
 */
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg_backend.h"

#include "common/cm_err.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy_t.h"
#include "gateway/edge/gw_edge.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/*---- the configuration ----*/

/* The fleet configuration's registration token of the window [o, c): " r=<o>:<c>", ""
 * for none (o = 0). gw_fair__reg_token_apply reads it. */
static void reg_token_of(int64_t o, int64_t c, char *out, size_t cap)
{
    if (o > 0)
        snprintf(out, cap, " r=%lld:%lld", (long long)o, (long long)c);
    else if (cap)
        out[0] = '\0';
}

void gw_fair__reg_token_apply(gw_fair_sale_t *fs, const char *conf)
{
    long long o = 0, c = 0;
    const char *t = strstr(conf, " r=");
    if (!t || sscanf(t, " r=%lld:%lld", &o, &c) != 2 || o <= 0 || c <= o)
        o = c = 0;
    atomic_store(&fs->sale.cfg.reg_closes_ms, c);
    atomic_store(&fs->sale.cfg.reg_opens_ms, o);
}

void gw_reg_conf_get(gw_server_t *srv, const char *sale_id, int64_t *opens_ms, int64_t *closes_ms)
{
    *opens_ms = *closes_ms = 0;
    gw_fair_sale_t *fs = srv->fair ? gw_fair__slot_find(srv->fair, sale_id) : NULL;
    if (fs) { /* also without a window: a PUT that removes the lottery is refused for it */
        *opens_ms = atomic_load(&fs->sale.cfg.reg_opens_ms);
        *closes_ms = atomic_load(&fs->sale.cfg.reg_closes_ms);
    }
}

int gw_reg_configure(gw_server_t *srv, const char *sale_id, int64_t opens_ms, int64_t closes_ms,
                     char *errbuf, size_t errlen)
{
    gw_fair_t *f = srv->fair;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    if (!fs) {
        if (opens_ms == 0)
            return 0;
        cm_errbuf_set(errbuf, errlen, "sale %s has no start-window lottery", sale_id);
        return CM_ENOTFOUND;
    }
    /*
     * The window published is the one asked for, never one read back from fs: a
     * fleet's poll (conf_sync_one) that read the shared configuration before the
     * publish could have set its old window in between. tick_mu (the poll's) is
     * held from the store to the publish, so that this gateway's own copy never
     * goes back to the old window either.
     */
    pthread_mutex_lock(&f->tick_mu);
    /* Unchanged and written everywhere: nothing to do. A retry after a failed save or
     * publish finds its own window already here, and writes it again. */
    if (atomic_load(&fs->sale.cfg.reg_opens_ms) == opens_ms &&
        atomic_load(&fs->sale.cfg.reg_closes_ms) == closes_ms && !fs->reg_unwritten) {
        pthread_mutex_unlock(&f->tick_mu);
        return 0;
    }
    atomic_store(&fs->sale.cfg.reg_closes_ms, closes_ms);
    atomic_store(&fs->sale.cfg.reg_opens_ms, opens_ms);
    fs->reg_unwritten = true;
    pthread_mutex_lock(&f->mu);
    int rc = gw_fair__conf_save(f);
    pthread_mutex_unlock(&f->mu);
    if (rc) {
        pthread_mutex_unlock(&f->tick_mu);
        cm_errbuf_set(errbuf, errlen, "cannot save the lottery configuration");
        return CM_EIO;
    }
    char tok[64];
    reg_token_of(opens_ms, closes_ms, tok, sizeof(tok));
    rc = fs->reg_ops->publish ? fs->reg_ops->publish(f, fs, tok, errbuf, errlen) : 0;
    fs->reg_unwritten = rc != 0;
    pthread_mutex_unlock(&f->tick_mu);
    return rc != 0 ? CM_EBACKEND : 0;
}

/*---- registering, the entry's check ----*/

/* The sale's lottery slot with a registration, or NULL. */
static gw_fair_sale_t *reg_sale(gw_server_t *srv, const char *sale_id)
{
    gw_fair_sale_t *fs = srv->fair ? gw_fair__slot_find(srv->fair, sale_id) : NULL;
    if (!fs || atomic_load(&fs->sale.cfg.fair_window_ms) <= 0 ||
        atomic_load(&fs->sale.cfg.reg_opens_ms) <= 0)
        return NULL;
    return fs;
}

bool gw_reg_window(gw_server_t *srv, const char *sale_id, int64_t *opens_ms, int64_t *closes_ms)
{
    gw_fair_sale_t *fs = reg_sale(srv, sale_id);
    if (!fs)
        return false;
    *opens_ms = atomic_load(&fs->sale.cfg.reg_opens_ms);
    *closes_ms = atomic_load(&fs->sale.cfg.reg_closes_ms);
    return true;
}

int gw_reg_add(gw_server_t *srv, const char *sale_id, const char *person, bool *sync, char *why,
               size_t whylen)
{
    gw_fair_sale_t *fs = srv->fair ? gw_fair__slot_find(srv->fair, sale_id) : NULL;
    *sync = false;
    if (!fs)
        return GW_REG_GONE;
    int rc = fs->reg_ops->add(srv->fair, fs, person, sync, why, whylen);
    if (rc == GW_REG_ADDED)
        atomic_fetch_add_explicit(&srv->fair->reg_taken, 1, memory_order_relaxed);
    return rc;
}

int gw_reg_sync(gw_server_t *srv, const char *sale_id, int held)
{
    gw_fair_sale_t *fs = srv->fair ? gw_fair__slot_find(srv->fair, sale_id) : NULL;
    if (!fs)
        return held; /* slots are never freed while serving */
    /* SYNCED reads no state (each held answer brings its own): no reg_mu */
    gw_sale_ev_t ev = {.kind = GW_SALE_EV_REG,
                       .reg = {.kind = GW_REG_EV_SYNCED,
                               .rc = fs->reg_ops->sync ? fs->reg_ops->sync(fs) : 0,
                               .held = held}};
    gw_sale_out_t out;
    gw_sale_step(&fs->sale, &ev, 0, &out);
    return out.reg.answer;
}

bool gw_reg_entry_ok(gw_req_t *r, void *fsv)
{
    gw_fair_sale_t *fs = fsv;
    if (atomic_load(&fs->sale.cfg.reg_opens_ms) <= 0)
        return true;
    gw_fair_t *f = r->w->srv->fair;
    bool has = false;
    char why[256] = "";
    if (fs->reg_ops->has(f, fs, gw_req_buy(r)->person, &has, why, sizeof(why)) != 0) {
        gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL,
                      "cannot check the registration now (%s); retry", why);
        gw_resp_retry_after(&r->resp, 1);
        return false;
    }
    if (has)
        return true;
    atomic_fetch_add_explicit(&f->reg_refused, 1, memory_order_relaxed);
    gw_resp_error(&r->resp, GW_R_NOT_REGISTERED, NULL,
                  "sale %s takes lottery entries only from registered persons, and this "
                  "buyer's person did not register",
                  r->id);
    return false;
}

/*---- admin ----*/

void gw_fair__reg_stats(gw_fair_t *f, void *obj)
{
    uint64_t sales = 0, persons = 0;
    bool here = true; /* each store counts its persons here (a fleet's are Redis') */
    size_t nsales = atomic_load(&f->n);
    for (size_t i = 0; i < nsales; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        if (atomic_load(&fs->sale.cfg.reg_opens_ms) <= 0)
            continue;
        sales++;
        if (fs->reg_ops->persons)
            persons += (uint64_t)fs->reg_ops->persons(fs);
        else
            here = false;
    }
    json_t *o = json_pack("{s:I,s:I,s:I}", "sales", (json_int_t)sales, "taken",
                          (json_int_t)atomic_load(&f->reg_taken), "refused_entries",
                          (json_int_t)atomic_load(&f->reg_refused));
    if (here) /* a fleet's persons are in Redis: GET /admin/v1/sales/{id} counts them */
        json_object_set_new(o, "persons", json_integer((json_int_t)persons));
    json_object_set_new(obj, "registration", o);
}

int gw_reg_count(gw_server_t *srv, const char *sale_id, long long *n, char *errbuf, size_t errlen)
{
    *n = 0;
    gw_fair_t *f = srv->fair;
    gw_fair_sale_t *fs = reg_sale(srv, sale_id);
    if (!fs)
        return 0;
    uint64_t total = 0, end;
    char why[256] = "";
    if (fs->reg_ops->page(f, fs, 0, 0, &total, &end, NULL, NULL, why, sizeof(why)) != 0) {
        cm_errbuf_set(errbuf, errlen, "%s", why);
        return CM_EBACKEND;
    }
    *n = (long long)total;
    return 0;
}

static void add_person(void *ctx, const char *person)
{
    json_array_append_new(ctx, json_string(person));
}

void *gw_reg_export_json(gw_server_t *srv, const char *sale_id, uint64_t cursor, uint64_t limit,
                         int *rc, char *errbuf, size_t errlen)
{
    gw_fair_t *f = srv->fair;
    gw_fair_sale_t *fs = reg_sale(srv, sale_id);
    if (!fs) {
        *rc = CM_ENOTFOUND;
        cm_errbuf_set(errbuf, errlen, "sale %s has no registration", sale_id);
        return NULL;
    }
    json_t *arr = json_array();
    uint64_t end, total;
    char why[256] = "";
    if (fs->reg_ops->page(f, fs, cursor, limit, &total, &end, add_person, arr, why, sizeof(why)) !=
        0) {
        json_decref(arr);
        *rc = CM_EBACKEND;
        cm_errbuf_set(errbuf, errlen, "%s", why);
        return NULL;
    }
    *rc = 0;
    json_t *o =
        json_pack("{s:s,s:I,s:o}", "sale_id", sale_id, "count", (json_int_t)total, "persons", arr);
    json_object_set_new(o, "next_cursor",
                        end < total ? json_sprintf("%llu", (unsigned long long)end) : json_null());
    return o;
}
