/*
 * One gateway's registration store (gw_reg_backend.h): the set of persons in
 * memory, in registration order (the export's cursor is an index), and the
 * journal <data_dir>/fair/<sale>.reg (docs/design.md "Registration"). sync is
 * the journal's group commit, off the worker loops and outside reg_mu.
 */
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_reg_backend.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_time.h"
#include "gateway/base/gw_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef char person_t[INV_USER_ID_MAX + 1];

/* A start's rewrites of the log before it gives up (logged): each one a new file. */
#define REG_REWRITE_TRIES 4

struct gw_reg_set {
    person_t *v; /* in registration order: the export's cursor is an index */
    size_t n, cap;
    uint32_t *tab; /* open addressing: index + 1, 0 = empty */
    size_t tcap;
    cm_journal_t log; /* <sale>.reg, from the first record this process writes */
    bool log_open;
    /* fsync durability: the load could not write the log again, so what it
     * found is not known durable: the journal opens as dropped (rewritten by
     * the first sync), and no person found is answered before that */
    bool load_undurable;
    /* local_sync writes the log again (log_rewrite) */
    bool rewriting;
    unsigned users; /* calls of local_sync inside: the set is not freed under them */
    pthread_cond_t cv; /* users back to 0 */
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
        pthread_cond_init(&fs->reg->cv, NULL);
        /* never fails on Linux; a fixed key still works (a table's order only) */
        if (cm_hash_seed_random(&fs->reg->key) != 0)
            fs->reg->key = (cm_hash_key_t){0x94d049bb133111ebull, (uint64_t)(uintptr_t)fs};
    }
    return fs->reg;
}

/* The log's image from the set: a record per person in registration order. */
static cm_journal_buf_t set_image(const struct gw_reg_set *s)
{
    cm_journal_buf_t img = {0};
    for (size_t i = 0; i < s->n; i++)
        (void)cm_journal_buf_add(&img, s->v[i], strlen(s->v[i])); /* an id: far below the max */
    return img;
}

static void reg_path(gw_fair_t *f, const char *sale_id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.reg", f->dir, sale_id);
}

static void local_load(gw_fair_t *f, gw_fair_sale_t *fs)
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
    /* getline, not a fixed buffer: an overlong record is skipped whole, never
     * read back in pieces, one of which could pass for an id */
    while ((got = getline(&line, &cap, fp)) > 0) {
        size_t n = (size_t)got;
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        gw_sale_ev_t ev = {.kind = GW_SALE_EV_REG,
                           .reg = {.kind = GW_REG_EV_LINE, .line = line, .len = n}};
        ev.reg.found = n <= INV_USER_ID_MAX && strlen(line) == n && set_has(s, line);
        gw_sale_out_t out;
        gw_sale_step(&fs->sale, &ev, 0, &out);
        bad += out.reg.bad;
        if (out.reg.actions & GW_REG_DO_ADD)
            set_add(s, line);
    }
    free(line);
    fclose(fp);
    /* fsync durability: what the load read is durable before a registration
     * found in it is answered 200. Written again as a new file, not fdatasync'd
     * in place: a failed fdatasync of the process before may have dropped pages
     * the page cache still shows, which a later one does not write back. Tried
     * again on failure: its pages are new ones. planted: skipped */
    if (f->srv->cfg->durability == GW_DURABILITY_FSYNC && s->n && !CM_PLANT(REG_LOAD_UNSYNCED)) {
        cm_journal_buf_t img = set_image(s);
        int rc = CM_EIO;
        for (int i = 0; i < REG_REWRITE_TRIES && rc != 0; i++)
            if ((rc = cm_journal_replace(path, img.p, img.len, NULL)) == 0)
                rc = cm_journal_dir_sync(path);
        cm_journal_buf_free(&img);
        s->load_undurable = rc != 0;
        if (rc != 0)
            cm_log_error("fair", "registration log not made durable at start", "sale=%s",
                         fs->sale_id);
    }
    if (bad)
        cm_log_warn("fair", "registration log has records that are not persons; skipped",
                    "sale=%s records=%zu", fs->sale_id, bad);
    if (s->n)
        cm_log_info("fair", "registrations loaded", "sale=%s persons=%zu", fs->sale_id, s->n);
}

/* The journal opened (its magic line synced by the first sync, not under
 * reg_mu), as dropped when what it holds may not be durable: REWRITE_FOUND
 * asked, or the load could not write it again. fs->reg_mu held. 0 or CM_EIO. */
static int log_open(gw_fair_t *f, gw_fair_sale_t *fs, struct gw_reg_set *s, unsigned flags)
{
    char path[700], why[256];
    reg_path(f, fs->sale_id, path, sizeof(path));
    flags |= CM_JOURNAL_DEFER_SYNC | (s->load_undurable ? CM_JOURNAL_REWRITE_FOUND : 0);
    if (cm_journal_open(&s->log, path, flags, NULL, NULL, why, sizeof(why)) != 0) {
        cm_log_error("fair", "registration log", "sale=%s err=%s", fs->sale_id, why);
        return CM_EIO;
    }
    s->log_open = true;
    s->load_undurable = false; /* the journal's dropped state holds it now */
    return 0;
}

/* Appends p's record (one write(2)), the journal opened at the first; a
 * journal whose short write could not be cut back is opened again (its
 * recovery cuts it). fs->reg_mu held. 0 or CM_EIO. */
static int log_append(gw_fair_t *f, gw_fair_sale_t *fs, struct gw_reg_set *s, const char *p)
{
    unsigned flags = 0;
    if (s->log_open && cm_journal_broken(&s->log)) {
        /* what a failed fdatasync of the journal closed may have dropped: rewritten */
        flags = CM_JOURNAL_REWRITE_FOUND;
        if (s->users) /* a sync reads it: the next append reopens it */
            return CM_EIO;
        (void)cm_journal_close(&s->log);
        s->log_open = false;
    }
    if (!s->log_open && log_open(f, fs, s, flags) != 0)
        return CM_EIO;
    return cm_journal_put(&s->log, p, strlen(p), NULL);
}

static int local_add(gw_fair_t *f, gw_fair_sale_t *fs, const char *person, bool *sync, char *why,
                     size_t whylen)
{
    gw_sale_ev_t ev = {.kind = GW_SALE_EV_REG, .reg = {.kind = GW_REG_EV_REGISTER}};
    gw_sale_out_t so;
    int64_t now = cm_wall_ms();
    pthread_mutex_lock(&fs->reg_mu);
    /* A delete (gw_fair__sale_reset) clears the window before it takes reg_mu and
     * removes the log under it: a registration that passed the route's check
     * before the delete and comes here after it is refused by the machine
     * (GONE) and creates no log again. */
    struct gw_reg_set *s = fs->reg;
    ev.reg.found = set_has(s, person);
    ev.reg.sync = f->srv->cfg->durability == GW_DURABILITY_FSYNC;
    off_t end = 0;
    if (s && s->log_open)
        cm_journal_lens(&s->log, &end, NULL, NULL);
    ev.reg.covered = !s || (!s->log_open && !s->load_undurable) ||
                     (s->log_open && cm_journal_durable(&s->log, end));
    gw_sale_step(&fs->sale, &ev, now, &so);
    if (so.reg.actions & GW_REG_DO_APPEND) {
        s = set_get(fs);
        ev.reg = (gw_reg_ev_t){.kind = GW_REG_EV_APPENDED, .rc = log_append(f, fs, s, person)};
        gw_sale_step(&fs->sale, &ev, now, &so);
        if (so.reg.actions & GW_REG_DO_ADD)
            set_add(s, person);
    }
    pthread_mutex_unlock(&fs->reg_mu);
    const gw_reg_out_t out = so.reg;
    *sync = out.actions & GW_REG_DO_SYNC;
    if (*sync)
        return out.held;
    if (out.answer < 0)
        snprintf(why, whylen, "the registration log write failed");
    return out.answer;
}

/* The log written again from the set, a record per person in registration
 * order (cm_journal_compact_from), while the journal is dropped: a failed
 * fdatasync may have dropped records a later one does not write, so none is
 * answered durable before this. fs->reg_mu held, released for the rewrite
 * (s->users held by the caller). 0 or CM_EIO. */
static int log_rewrite(gw_fair_sale_t *fs, struct gw_reg_set *s)
{
    cm_journal_buf_t img = set_image(s);
    off_t mark; /* no record is appended without reg_mu: the set is the state through mark */
    cm_journal_lens(&s->log, &mark, NULL, NULL);
    s->rewriting = true;
    pthread_mutex_unlock(&fs->reg_mu);
    int rc = cm_journal_compact_from(&s->log, &img, mark);
    pthread_mutex_lock(&fs->reg_mu);
    s->rewriting = false;
    cm_journal_buf_free(&img);
    return rc;
}

static int local_sync(gw_fair_sale_t *fs)
{
    pthread_mutex_lock(&fs->reg_mu);
    struct gw_reg_set *s = fs->reg;
    if (!s || (!s->log_open && !s->load_undurable)) {
        /* nothing written by this process: the load wrote the file again */
        pthread_mutex_unlock(&fs->reg_mu);
        return 0;
    }
    if (!s->log_open && log_open(fs->f, fs, s, 0) != 0) { /* dropped: rewritten below */
        pthread_mutex_unlock(&fs->reg_mu);
        return CM_EIO;
    }
    off_t want;
    cm_journal_lens(&s->log, &want, NULL, NULL);
    s->users++;
    /* one at a time: the others' syncs fail meanwhile (the journal refuses them) */
    int rc = !s->rewriting && cm_journal_dropped(&s->log) ? log_rewrite(fs, s) : 0;
    pthread_mutex_unlock(&fs->reg_mu);
    if (rc == 0)
        rc = cm_journal_sync_to(&s->log, want);
    pthread_mutex_lock(&fs->reg_mu);
    if (--s->users == 0)
        pthread_cond_broadcast(&s->cv); /* a drop waits for it */
    pthread_mutex_unlock(&fs->reg_mu);
    if (rc)
        cm_log_error("fair", "registration log fdatasync failed", "sale=%s", fs->sale_id);
    return rc;
}

static int local_has(gw_fair_t *f, gw_fair_sale_t *fs, const char *person, bool *has, char *why,
                     size_t whylen)
{
    (void)f, (void)why, (void)whylen;
    pthread_mutex_lock(&fs->reg_mu);
    *has = set_has(fs->reg, person);
    pthread_mutex_unlock(&fs->reg_mu);
    return 0;
}

static int local_page(gw_fair_t *f, gw_fair_sale_t *fs, uint64_t cursor, uint64_t limit,
                      uint64_t *total, uint64_t *end, void (*fn)(void *, const char *), void *arg,
                      char *why, size_t whylen)
{
    (void)f, (void)why, (void)whylen;
    uint64_t start;
    pthread_mutex_lock(&fs->reg_mu);
    *total = fs->reg ? fs->reg->n : 0;
    gw_reg_page(*total, cursor, limit, &start, end);
    for (uint64_t i = start; fs->reg && i < *end; i++)
        fn(arg, fs->reg->v[i]);
    pthread_mutex_unlock(&fs->reg_mu);
    return 0;
}

static long long local_persons(gw_fair_sale_t *fs)
{
    pthread_mutex_lock(&fs->reg_mu);
    long long n = fs->reg ? (long long)fs->reg->n : 0;
    pthread_mutex_unlock(&fs->reg_mu);
    return n;
}

static void local_free(gw_fair_sale_t *fs)
{
    struct gw_reg_set *s = fs->reg;
    if (!s)
        return;
    if (s->log_open)
        (void)cm_journal_close(&s->log);
    pthread_cond_destroy(&s->cv);
    free(s->v);
    free(s->tab);
    free(s);
    fs->reg = NULL;
}

static int local_drop(gw_fair_t *f, gw_fair_sale_t *fs)
{
    while (fs->reg && fs->reg->users) /* a sync uses the journal until it returns */
        pthread_cond_wait(&fs->reg->cv, &fs->reg_mu);
    char path[700];
    reg_path(f, fs->sale_id, path, sizeof(path));
    if (fs->reg && fs->reg->log_open) { /* no fdatasync of a file being removed */
        cm_journal_discard(&fs->reg->log);
        fs->reg->log_open = false;
    }
    local_free(fs);
    /* on the journal's disk, and durably: a power cut would bring the persons back into a
     * sale created again under the id (gw_fair__sale_reset's entry log alike) */
    return cm_journal_remove(path);
}

const gw_reg_ops_t gw_reg__local_ops = {
    .add = local_add,
    .sync = local_sync,
    .has = local_has,
    .page = local_page,
    .persons = local_persons,
    .load = local_load,
    .drop = local_drop,
    .free = local_free,
};
