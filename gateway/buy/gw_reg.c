/*
 * Registration: the window, the set of registered persons (memory and its
 * log on one node, a ZSET in a Redis fleet), what the public route takes
 * (gw_fair_routes.c), the lottery entry's check and the admin's count and
 * export (see gw_reg.h): the shell around the registration's decisions
 * (gw_reg_core.c).
 */
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_config.h"
#include "gateway/buy/gw_buy_t.h"
#include "gateway/edge/gw_edge.h"
#include "inventory/inv_fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*---- the set, one node ----*/

typedef char person_t[INV_USER_ID_MAX + 1];

struct gw_reg_set {
    person_t *v; /* in registration order: the export's cursor is an index */
    size_t n, cap;
    uint32_t *tab; /* open addressing: index + 1, 0 = empty */
    size_t tcap;
    int fd;             /* the log, -1 until opened */
    off_t log_len;      /* where a torn line is cut back to */
    gw_reg_core_t core; /* the decisions: one per person, the cap, the log's lines */
    cm_hash_key_t key;  /* the table's own (the room's key is re-drawn at a reset) */
};

static uint64_t person_hash(const struct gw_reg_set *s, const char *p)
{
    return cm_hash_sip24(&s->key, p, strlen(p));
}

static void tab_put(uint32_t *t, size_t cap, uint64_t h, uint32_t idx)
{
    for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1))
        if (!t[i]) {
            t[i] = idx + 1;
            return;
        }
}

static bool set_has(const struct gw_reg_set *s, const char *p)
{
    if (!s || !s->tcap)
        return false;
    for (size_t i = person_hash(s, p) & (s->tcap - 1); s->tab[i]; i = (i + 1) & (s->tcap - 1))
        if (strcmp(s->v[s->tab[i] - 1], p) == 0)
            return true;
    return false;
}

/* Adds p (not in the set). fs->reg_mu held or single-threaded. */
static void set_add(struct gw_reg_set *s, const char *p)
{
    if ((s->n + 1) * 2 > s->tcap) {
        size_t cap = s->tcap ? s->tcap * 2 : 1024;
        free(s->tab);
        s->tab = cm_xcalloc(cap, sizeof(uint32_t));
        s->tcap = cap;
        for (size_t i = 0; i < s->n; i++)
            tab_put(s->tab, cap, person_hash(s, s->v[i]), (uint32_t)i);
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->v = cm_xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    snprintf(s->v[s->n], sizeof(s->v[s->n]), "%s", p);
    tab_put(s->tab, s->tcap, person_hash(s, p), (uint32_t)s->n);
    s->n++;
}

static struct gw_reg_set *set_get(gw_fair_sale_t *fs)
{
    if (!fs->reg) {
        fs->reg = cm_xcalloc(1, sizeof(*fs->reg));
        fs->reg->fd = -1;
        gw_reg_core_init(&fs->reg->core);
        /* never fails on Linux; a fixed key still works (a table's order only) */
        if (cm_hash_seed_random(&fs->reg->key) != 0)
            fs->reg->key = (cm_hash_key_t){0x94d049bb133111ebull, (uint64_t)(uintptr_t)fs};
    }
    return fs->reg;
}

static void reg_path(gw_fair_t *f, const char *sale_id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.reg", f->dir, sale_id);
}

void gw_fair__reg_load(gw_fair_t *f, gw_fair_sale_t *fs)
{
    char path[700];
    reg_path(f, fs->sale_id, path, sizeof(path));
    FILE *fp = cm_journal_lines_open(path); /* the journal's records, a line each */
    if (!fp)
        return;
    struct gw_reg_set *s = set_get(fs);
    char *line = NULL;
    size_t cap = 0, bad = 0;
    ssize_t got;
    /* getline, not a fixed buffer: an overlong line (two glued together) is
     * skipped whole, never read back in pieces, one of which could pass for an id */
    while ((got = getline(&line, &cap, fp)) > 0) {
        size_t n = (size_t)got;
        bool nl = line[n - 1] == '\n';
        if (nl)
            line[--n] = '\0';
        gw_reg_ev_t ev = {.kind = GW_REG_EV_LINE, .line = line, .len = n, .has_newline = nl};
        ev.found = n <= INV_USER_ID_MAX && strlen(line) == n && set_has(s, line);
        gw_reg_out_t out;
        gw_reg_core_step(&s->core, &ev, &out);
        bad += out.bad;
        if (out.actions & GW_REG_DO_ADD)
            set_add(s, line);
        /* a record without its end: the journal's open cut a torn tail off
         * the file already, so nothing is cut here (the stream's offsets are
         * not the file's) and the records after it are not read */
        if (out.actions & GW_REG_DO_CUT)
            break;
    }
    free(line);
    fclose(fp);
    if (bad)
        cm_log_warn("fair", "registration log has torn lines; skipped", "sale=%s lines=%zu",
                    fs->sale_id, bad);
    if (s->n)
        cm_log_info("fair", "registrations loaded", "sale=%s persons=%zu", fs->sale_id, s->n);
}

/* Appends p's line (one write(2)); fs->reg_mu held. 0 or CM_EIO. */
static int log_append(gw_fair_t *f, gw_fair_sale_t *fs, struct gw_reg_set *s, const char *p)
{
    if (s->fd < 0) {
        char path[700];
        reg_path(f, fs->sale_id, path, sizeof(path));
        s->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644); /* read: the recovery */
        if (s->fd < 0 || cm_journal_attach(s->fd, path, &s->log_len) != 0) {
            if (s->fd >= 0)
                close(s->fd);
            s->fd = -1;
            return CM_EIO;
        }
    }
    char line[INV_USER_ID_MAX + CM_JOURNAL_FRAME_OVERHEAD]; /* one frame of the journal */
    int len = (int)cm_journal_frame(line, sizeof(line), p, strlen(p));
    ssize_t w = len ? write(s->fd, line, (size_t)len) : -1;
    if (w != len || !len) {
        if (w > 0 && ftruncate(s->fd, s->log_len) != 0) {
            close(s->fd);
            s->fd = -1;
        }
        return CM_EIO;
    }
    s->log_len += len;
    return 0;
}

int gw_fair__reg_reset(gw_fair_t *f, gw_fair_sale_t *fs)
{
    atomic_store(&fs->reg_opens_ms, 0);
    atomic_store(&fs->reg_closes_ms, 0);
    pthread_mutex_lock(&fs->reg_mu);
    gw_fair__reg_free(fs);
    char path[700];
    reg_path(f, fs->sale_id, path, sizeof(path));
    int rc = unlink(path) == 0 || errno == ENOENT ? 0 : CM_EIO;
    pthread_mutex_unlock(&fs->reg_mu);
    return rc;
}

void gw_fair__reg_free(gw_fair_sale_t *fs)
{
    struct gw_reg_set *s = fs->reg;
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s->v);
    free(s->tab);
    free(s);
    fs->reg = NULL;
}

/*---- the configuration ----*/

void gw_fair__reg_token(gw_fair_sale_t *fs, char *out, size_t cap)
{
    int64_t o = atomic_load(&fs->reg_opens_ms), c = atomic_load(&fs->reg_closes_ms);
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
    atomic_store(&fs->reg_closes_ms, c);
    atomic_store(&fs->reg_opens_ms, o);
}

void gw_reg_conf_get(gw_server_t *srv, const char *sale_id, int64_t *opens_ms, int64_t *closes_ms)
{
    *opens_ms = *closes_ms = 0;
    gw_fair_sale_t *fs = srv->fair ? gw_fair__slot_find(srv->fair, sale_id) : NULL;
    if (fs) { /* also without a window: a PUT that removes the lottery is refused for it */
        *opens_ms = atomic_load(&fs->reg_opens_ms);
        *closes_ms = atomic_load(&fs->reg_closes_ms);
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
    if (atomic_load(&fs->reg_opens_ms) == opens_ms && atomic_load(&fs->reg_closes_ms) == closes_ms)
        return 0;
    atomic_store(&fs->reg_closes_ms, closes_ms);
    atomic_store(&fs->reg_opens_ms, opens_ms);
    pthread_mutex_lock(&f->mu);
    int rc = gw_fair__conf_save(f);
    pthread_mutex_unlock(&f->mu);
    if (rc) {
        cm_errbuf_set(errbuf, errlen, "cannot save the lottery configuration");
        return CM_EIO;
    }
    if (!f->fleet)
        return 0;
    /* The fleet's value keeps its lottery fields; only the registration token changes. */
    char why[256] = "", cur[256];
    bool found = false;
    inv_fleet_conn_t *c = inv_fleet_connect(&f->addr, 2000, why, sizeof(why));
    rc = c ? gw_fair_redis_lottery_conf_get(c, sale_id, cur, sizeof(cur), &found, why, sizeof(why))
           : CM_EBACKEND;
    if (rc == 0 && found && strcmp(cur, GW_FAIR_REDIS_LOTTERY_DELETED) != 0) {
        char *t = strstr(cur, " r=");
        if (t)
            *t = '\0';
        char val[320], tok[64];
        gw_fair__reg_token(fs, tok, sizeof(tok));
        snprintf(val, sizeof(val), "%s%s", cur, tok);
        rc = gw_fair_redis_lottery_conf_put(c, sale_id, val, why, sizeof(why));
    }
    inv_fleet_close(c);
    if (rc) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", why);
        return CM_EBACKEND;
    }
    return 0;
}

/*---- registering, the entry's check ----*/

int gw_fair__reg_add(gw_fair_t *f, gw_fair_sale_t *fs, const char *person, uint64_t cap, char *why,
                     size_t whylen)
{
    gw_reg_ev_t ev = {.kind = GW_REG_EV_REGISTER, .cap = cap};
    gw_reg_out_t out;
    if (f->fleet) {
        /* As below, before the round trip: a delete seen here since the route's check
         * records nothing. One on another gateway (seen at the next poll), or one here
         * between this check and the script, can still let the script run after the
         * delete's DEL: the answer is 201, and the set it makes again is cleared before
         * a lottery is set again under the id (gw_fair_fleet.c, the tombstone's clear),
         * the only way a registration under the id is read again. */
        gw_reg_core_t core = {.n = 0}; /* the set is Redis's: the store decides */
        ev.opens_ms = atomic_load(&fs->reg_opens_ms);
        ev.window_ms = atomic_load(&fs->window_ms);
        ev.store_decides = true;
        gw_reg_core_step(&core, &ev, &out);
        if (!(out.actions & GW_REG_DO_STORE))
            return out.answer;
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, whylen);
        int added = 0;
        int rc =
            c ? gw_fair_redis_reg_add(c, fs->sale_id, person, (long long)cap, &added, why, whylen)
              : CM_EBACKEND;
        gw_fair__pool_put(&f->loop_pool, c);
        ev = (gw_reg_ev_t){.kind = GW_REG_EV_STORED,
                           .stored = rc < 0       ? rc
                                     : added == 1 ? GW_REG_ADDED
                                     : added == 0 ? GW_REG_ALREADY
                                                  : GW_REG_FULL};
        gw_reg_core_step(&core, &ev, &out);
        if (out.answer == GW_REG_ADDED)
            atomic_fetch_add_explicit(&f->reg_taken, 1, memory_order_relaxed);
        return out.answer;
    }
    pthread_mutex_lock(&fs->reg_mu);
    /* A delete (gw_fair__reg_reset) clears the window before it takes reg_mu and
     * removes the log under it: a registration that passed the route's check
     * before the delete and comes here after it must not create the log again. */
    ev.opens_ms = atomic_load(&fs->reg_opens_ms);
    ev.window_ms = atomic_load(&fs->window_ms);
    struct gw_reg_set *s = ev.opens_ms > 0 && ev.window_ms > 0 ? set_get(fs) : NULL;
    gw_reg_core_t none;
    gw_reg_core_init(&none);
    gw_reg_core_t *core = s ? &s->core : &none;
    ev.found = set_has(s, person);
    gw_reg_core_step(core, &ev, &out);
    if (s && (out.actions & GW_REG_DO_APPEND)) { /* no set: the window is gone, GONE */
        ev = (gw_reg_ev_t){.kind = GW_REG_EV_APPENDED, .rc = log_append(f, fs, s, person)};
        gw_reg_core_step(core, &ev, &out);
        if (out.actions & GW_REG_DO_ADD)
            set_add(s, person);
    }
    pthread_mutex_unlock(&fs->reg_mu);
    if (out.answer == GW_REG_ADDED)
        atomic_fetch_add_explicit(&f->reg_taken, 1, memory_order_relaxed);
    if (out.answer < 0)
        snprintf(why, whylen, "the registration log write failed");
    return out.answer;
}

/* The sale's lottery slot with a registration, or NULL. */
static gw_fair_sale_t *reg_sale(gw_server_t *srv, const char *sale_id)
{
    gw_fair_sale_t *fs = srv->fair ? gw_fair__slot_find(srv->fair, sale_id) : NULL;
    if (!fs || atomic_load(&fs->window_ms) <= 0 || atomic_load(&fs->reg_opens_ms) <= 0)
        return NULL;
    return fs;
}

bool gw_reg_window(gw_server_t *srv, const char *sale_id, int64_t *opens_ms, int64_t *closes_ms)
{
    gw_fair_sale_t *fs = reg_sale(srv, sale_id);
    if (!fs)
        return false;
    *opens_ms = atomic_load(&fs->reg_opens_ms);
    *closes_ms = atomic_load(&fs->reg_closes_ms);
    return true;
}

int gw_reg_add(gw_server_t *srv, const char *sale_id, const char *person, uint64_t cap, char *why,
               size_t whylen)
{
    gw_fair_sale_t *fs = srv->fair ? gw_fair__slot_find(srv->fair, sale_id) : NULL;
    if (!fs)
        return GW_REG_GONE;
    return gw_fair__reg_add(srv->fair, fs, person, cap, why, whylen);
}

bool gw_reg_entry_ok(gw_req_t *r, void *fsv)
{
    gw_fair_sale_t *fs = fsv;
    if (atomic_load(&fs->reg_opens_ms) <= 0)
        return true;
    gw_fair_t *f = r->w->srv->fair;
    bool has = false;
    char why[256] = "";
    if (f->fleet) {
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
        int rc =
            c ? gw_fair_redis_reg_has(c, fs->sale_id, gw_req_buy(r)->person, &has, why, sizeof(why))
              : CM_EBACKEND;
        gw_fair__pool_put(&f->loop_pool, c);
        if (rc) {
            gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL,
                          "cannot check the registration now (redis: %s); retry", why);
            gw_resp_retry_after(&r->resp, 1);
            return false;
        }
    } else {
        pthread_mutex_lock(&fs->reg_mu);
        has = set_has(fs->reg, gw_req_buy(r)->person);
        pthread_mutex_unlock(&fs->reg_mu);
    }
    if (!has)
        atomic_fetch_add_explicit(&f->reg_refused, 1, memory_order_relaxed);
    if (!has)
        gw_resp_error(&r->resp, GW_R_NOT_REGISTERED, NULL,
                      "sale %s takes lottery entries only from registered persons, and this "
                      "buyer's person did not register",
                      r->id);
    return has;
}

/*---- admin ----*/

void gw_fair__reg_stats(gw_fair_t *f, void *obj)
{
    uint64_t sales = 0, persons = 0;
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        if (atomic_load(&fs->reg_opens_ms) <= 0)
            continue;
        sales++;
        pthread_mutex_lock(&fs->reg_mu);
        persons += fs->reg ? fs->reg->n : 0;
        pthread_mutex_unlock(&fs->reg_mu);
    }
    json_t *o = json_pack("{s:I,s:I,s:I}", "sales", (json_int_t)sales, "taken",
                          (json_int_t)atomic_load(&f->reg_taken), "refused_entries",
                          (json_int_t)atomic_load(&f->reg_refused));
    if (!f->fleet) /* a fleet's persons are in Redis: GET /admin/v1/sales/{id} counts them */
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
    if (f->fleet) {
        char why[256] = "";
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->pool, why, sizeof(why));
        int rc = c ? gw_fair_redis_reg_count(c, sale_id, n, why, sizeof(why)) : CM_EBACKEND;
        gw_fair__pool_put(&f->pool, c);
        if (rc)
            cm_errbuf_set(errbuf, errlen, "redis: %s", why);
        return rc ? CM_EBACKEND : 0;
    }
    pthread_mutex_lock(&fs->reg_mu);
    *n = fs->reg ? (long long)fs->reg->n : 0;
    pthread_mutex_unlock(&fs->reg_mu);
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
    uint64_t start, end, total;
    if (f->fleet) {
        char why[256] = "";
        long long n = 0;
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->pool, why, sizeof(why));
        int r = c ? gw_fair_redis_reg_count(c, sale_id, &n, why, sizeof(why)) : CM_EBACKEND;
        total = n > 0 ? (uint64_t)n : 0;
        gw_reg_page(total, cursor, limit, &start, &end);
        if (r == 0 && end > start)
            r = gw_fair_redis_reg_range(c, sale_id, (long long)start, (long long)end - 1,
                                        add_person, arr, why, sizeof(why));
        gw_fair__pool_put(&f->pool, c);
        if (r) {
            json_decref(arr);
            *rc = CM_EBACKEND;
            cm_errbuf_set(errbuf, errlen, "redis: %s", why);
            return NULL;
        }
    } else {
        pthread_mutex_lock(&fs->reg_mu);
        total = fs->reg ? fs->reg->n : 0;
        gw_reg_page(total, cursor, limit, &start, &end);
        for (uint64_t i = start; fs->reg && i < end; i++)
            json_array_append_new(arr, json_string(fs->reg->v[i]));
        pthread_mutex_unlock(&fs->reg_mu);
    }
    *rc = 0;
    json_t *o =
        json_pack("{s:s,s:I,s:o}", "sale_id", sale_id, "count", (json_int_t)total, "persons", arr);
    if (end < total) {
        char nc[24];
        snprintf(nc, sizeof(nc), "%llu", (unsigned long long)end);
        json_object_set_new(o, "next_cursor", json_string(nc));
    } else {
        json_object_set_new(o, "next_cursor", json_null());
    }
    return o;
}
