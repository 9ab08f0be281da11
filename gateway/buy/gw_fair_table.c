/*
 * Fair start's bottom layer: the per-sale tables (entries by person and by
 * order id), the entry log's path, open and append, fair.json's save, a sale's
 * slot by id and an entry's reserve request. The lottery, the room,
 * registration, the waitlist and their fleet twins call these; they call none
 * of them back, so no two fairness files need each other for them
 * (tests/unit/call_pairs.sh lists the pairs that remain).
 */
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "gateway/base/gw_base.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*---- per-sale tables ----*/

uint64_t gw_fair__hash_str(const gw_fair_sale_t *fs, const char *s)
{
    return cm_hash_sip24(&fs->secret, s, strlen(s));
}

/*
 * The Idempotency-Key as the entry log and the fleet push write it: "-" for
 * none (a token cannot be empty), and a key that is itself "-" (valid: one
 * visible character) is followed by a marker field "k", or it would come back
 * as no key. Lines and values without the marker read as before, so older
 * logs and older gateways' pushes still load (their "-" was always none).
 */
const char *gw_fair__idem_out(const char *idem)
{
    return idem[0] ? idem : "-";
}

const char *gw_fair__idem_mark(const char *idem)
{
    return strcmp(idem, "-") == 0 ? " k" : "";
}

void gw_fair__idem_in(char *idem, int nfields, int want, const char *mark)
{
    if (strcmp(idem, "-") == 0 && !(nfields == want && strcmp(mark, "k") == 0))
        idem[0] = '\0';
}

static void table_insert(uint32_t *t, size_t cap, uint64_t h, uint32_t idx)
{
    size_t m = cap - 1;
    for (size_t i = h & m;; i = (i + 1) & m)
        if (!t[i]) {
            t[i] = idx + 1;
            return;
        }
}

static void tables_grow(gw_fair_sale_t *fs)
{
    size_t cap = fs->tcap ? fs->tcap * 2 : 1024;
    free(fs->by_user);
    free(fs->by_id);
    fs->by_user = cm_xcalloc(cap, sizeof(uint32_t));
    fs->by_id = cm_xcalloc(cap, sizeof(uint32_t));
    fs->tcap = cap;
    for (size_t i = 0; i < fs->n; i++) {
        table_insert(fs->by_user, cap, fs->v[i].key, (uint32_t)i);
        table_insert(fs->by_id, cap, gw_fair__hash_str(fs, fs->v[i].order_id), (uint32_t)i);
    }
}

void gw_fair__tables_rekey(gw_fair_sale_t *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        fs->v[i].key = gw_fair__hash_str(fs, fs->v[i].person);
    fs->tcap /= 2; /* tables_grow doubles it back */
    tables_grow(fs);
}

entry_t *gw_fair__find_user(gw_fair_sale_t *fs, const char *person, uint64_t key)
{
    if (!fs->tcap)
        return NULL;
    size_t m = fs->tcap - 1;
    for (size_t i = key & m; fs->by_user[i]; i = (i + 1) & m) {
        entry_t *e = &fs->v[fs->by_user[i] - 1];
        if (e->key == key && strcmp(e->person, person) == 0)
            return e;
    }
    return NULL;
}

/* A person id never starts with '@' ([A-Za-z0-9._-]), nor do the other
 * fields that may follow the key in the log and the push ("k", a node id), so
 * a field "@..." past the key is the person; a reader that predates it stops
 * before it. */
const char *gw_fair__person_out(const entry_t *e, char *buf, size_t cap)
{
    if (!e->person[0] || strcmp(e->person, e->user_id) == 0)
        return "";
    snprintf(buf, cap, " @%s", e->person);
    return buf;
}

void gw_fair__person_in(entry_t *e, const char *line, int first)
{
    memcpy(e->person, e->user_id, sizeof(e->person));
    const char *p = line;
    for (int i = 0; *p; i++) {
        size_t n = strcspn(p, " \r\n");
        if (i >= first && n > 1 && p[0] == '@' && inv_id_valid(p + 1, n - 1, INV_USER_ID_MAX)) {
            memcpy(e->person, p + 1, n - 1);
            e->person[n - 1] = '\0';
            return;
        }
        p += n;
        p += strspn(p, " \r\n");
    }
}

entry_t *gw_fair__find_id(gw_fair_sale_t *fs, const char *order_id)
{
    if (!fs->tcap)
        return NULL;
    size_t m = fs->tcap - 1;
    for (size_t i = gw_fair__hash_str(fs, order_id) & m; fs->by_id[i]; i = (i + 1) & m) {
        entry_t *e = &fs->v[fs->by_id[i] - 1];
        if (strcmp(e->order_id, order_id) == 0)
            return e;
    }
    return NULL;
}

entry_t *gw_fair__entry_add(gw_fair_sale_t *fs, const entry_t *e)
{
    if ((fs->n + 1) * 2 > fs->tcap)
        tables_grow(fs);
    if (fs->n == fs->cap) {
        fs->cap = fs->cap ? fs->cap * 2 : 1024;
        fs->v = cm_xrealloc(fs->v, fs->cap * sizeof(*fs->v));
    }
    entry_t *d = &fs->v[fs->n];
    *d = *e;
    table_insert(fs->by_user, fs->tcap, d->key, (uint32_t)fs->n);
    table_insert(fs->by_id, fs->tcap, gw_fair__hash_str(fs, d->order_id), (uint32_t)fs->n);
    fs->n++;
    return d;
}

/*---- files ----*/

void gw_fair__log_path(gw_fair_t *f, const char *sale_id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.log", f->dir, sale_id);
}

int gw_fair__log_open(gw_fair_t *f, gw_fair_sale_t *fs)
{
    if (fs->log_open && !cm_journal_broken(&fs->log))
        return 0;
    if (fs->log_open) /* a short write whose cut-off failed: the open's recovery cuts it */
        cm_journal_discard(&fs->log);
    char path[700], why[256];
    gw_fair__log_path(f, fs->sale_id, path, sizeof(path));
    /* the lines found are made durable by a rewrite (log_resync); a line log
     * the load could not convert is refused, and gets no frame after it */
    fs->log_open = cm_journal_open(&fs->log, path, CM_JOURNAL_DEFER_SYNC | CM_JOURNAL_REWRITE_FOUND,
                                   NULL, NULL, why, sizeof(why)) == 0;
    if (!fs->log_open)
        cm_log_error("fair", "entry log", "sale=%s err=%s", fs->sale_id, why);
    return fs->log_open ? 0 : CM_EIO;
}

size_t gw_fair__entry_line(const entry_t *e, char *buf, size_t cap)
{
    char pb[INV_USER_ID_MAX + 3], fp[24] = "";
    uint64_t stamp = inv_idem_fp_stamp(e->idem[0] ? e->key_fp : 0);
    if (stamp)
        snprintf(fp, sizeof(fp), " f=%" PRIx64, stamp);
    int len = snprintf(buf, cap, "E %s %s %u %lld %s%s%s%s\n", e->order_id, e->user_id, e->qty,
                       (long long)e->at_ms, gw_fair__idem_out(e->idem), gw_fair__idem_mark(e->idem),
                       fp, gw_fair__person_out(e, pb, sizeof(pb)));
    return len > 0 && (size_t)len < cap ? (size_t)len : 0;
}

static void recs_add(gw_fair_sale_t *fs, const char *line, size_t len)
{
    if (fs->recs_len + len + 1 > fs->recs_cap) {
        fs->recs_cap = (fs->recs_len + len + 1) * 2;
        fs->recs = cm_xrealloc(fs->recs, fs->recs_cap);
    }
    memcpy(fs->recs + fs->recs_len, line, len);
    fs->recs_len += len;
    fs->recs[fs->recs_len] = '\0';
}

void gw_fair__log_rec(gw_fair_sale_t *fs, const char *line, size_t len)
{
    recs_add(fs, line, len);
}

int gw_fair__log_line(gw_fair_sale_t *fs, const char *line, size_t len, bool sync)
{
    if (!fs->log_open)
        return CM_EIO;
    cm_journal_buf_t frames = {0};
    for (const char *p = line, *end = line + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        (void)cm_journal_buf_add(&frames, p, l); /* a line is far below the record limit */
        p += l + 1;
    }
    int rc = cm_journal_put_frames(&fs->log, &frames, NULL);
    cm_journal_buf_free(&frames);
    /* in the log now (a short write is cut back off it): kept for a write anew,
     * but the entries' (v holds them) */
    for (const char *p = line, *end = line + len; rc == 0 && p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        if (nl && l > 1 && p[0] != 'E')
            recs_add(fs, p, l);
        p += l;
    }
    if (rc != 0 || !sync)
        return rc;
    return gw_fair__log_sync(fs, false);
}

/* The "E" lines of entries [*next, upto) into img. */
static void anew_entries(gw_fair_sale_t *fs, cm_journal_buf_t *img, size_t *next, size_t upto)
{
    char line[512];
    for (; *next < upto && *next < fs->n; (*next)++) {
        size_t len = gw_fair__entry_line(&fs->v[*next], line, sizeof(line));
        if (len) /* its newline is the frame's */
            (void)cm_journal_buf_add(img, line, len - 1);
    }
}

/*
 * The log written anew from the sale's state: its entries' "E" lines and the
 * other records this process wrote or read (fs->recs), in the log's order (the
 * entries a "D" froze before it), replacing every frame written so far
 * (cm_journal_compact_from at the end: a new file, fdatasync'd, renamed, the
 * directory fsync'd; the journal is no longer dropped). Nothing is read back,
 * so pages a failed fdatasync dropped and the kernel evicted do not matter;
 * the new file holds no record the old one did not (a line is kept once its
 * write succeeded) and every one a sync reported durable. fs->mu held, or
 * single-threaded. 0 or CM_EIO.
 */
static int log_anew(gw_fair_sale_t *fs)
{
    cm_journal_buf_t img = {0};
    size_t next = 0; /* the entries written so far */
    for (const char *p = fs->recs ? fs->recs : "", *end = p + fs->recs_len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p), before;
        if (p[0] == 'D' && sscanf(p, "D %*s %*s %zu", &before) == 1)
            anew_entries(fs, &img, &next, before);
        (void)cm_journal_buf_add(&img, p, l);
        p += l + 1;
    }
    anew_entries(fs, &img, &next, fs->n);
    off_t mark;
    cm_journal_lens(&fs->log, &mark, NULL, NULL);
    int rc = cm_journal_compact_from(&fs->log, &img, mark);
    cm_journal_buf_free(&img);
    if (rc != 0)
        cm_log_error("fair", "cannot write the entry log anew", "sale=%s", fs->sale_id);
    else
        cm_log_warn("fair", "the entry log read back stale; written anew from the lottery's state",
                    "sale=%s entries=%zu", fs->sale_id, fs->n);
    return rc;
}

int gw_fair__log_sync(gw_fair_sale_t *fs, bool unlock)
{
    if (!fs->log_open)
        return CM_EIO;
    off_t end;
    cm_journal_lens(&fs->log, &end, NULL, NULL);
    int rc = 0;
    /* after a failed fdatasync (or at a start) the log is written again first:
     * a plain one would not write what a failed one dropped (cm_journal.h) */
    if (cm_journal_dropped(&fs->log)) {
        if (unlock)
            pthread_mutex_unlock(&fs->mu);
        rc = cm_journal_rewrite(&fs->log);
        if (unlock)
            pthread_mutex_lock(&fs->mu);
        /* refused (its check: what the copy read back was not whole frames, or
         * another failure): every try would read the same stale bytes, and the
         * draw's end would wait for ever; the state holds what the log held */
        if (rc != 0 && cm_journal_dropped(&fs->log))
            rc = log_anew(fs);
        if (rc != 0)
            return rc;
    }
    if (unlock)
        pthread_mutex_unlock(&fs->mu);
    rc = cm_journal_sync_to(&fs->log, end);
    if (unlock)
        pthread_mutex_lock(&fs->mu);
    return rc;
}

int gw_fair__conf_save(gw_fair_t *f)
{
    json_t *arr = json_array();
    size_t n = atomic_load(&f->n);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        char k0[24], k1[24], gen[24];
        snprintf(k0, sizeof(k0), "%016llx", (unsigned long long)fs->secret.k0);
        snprintf(k1, sizeof(k1), "%016llx", (unsigned long long)fs->secret.k1);
        snprintf(gen, sizeof(gen), "%016llx", (unsigned long long)fs->lot_gen);
        json_t *o =
            json_pack("{s:s,s:I,s:I,s:s,s:s,s:I}", "sale_id", fs->sale_id, "window_ms",
                      (json_int_t)atomic_load(&fs->sale.cfg.fair_window_ms), "early_ms",
                      (json_int_t)atomic_load(&fs->sale.cfg.fair_early_ms), "k0", k0, "k1", k1,
                      "waiting_room_rate", (json_int_t)atomic_load(&fs->sale.cfg.room_rate));
        if (fs->lot_gen) /* a fleet's lottery: its generation (gw_fair_internal.h) */
            json_object_set_new(o, "lottery_gen", json_string(gen));
        if (atomic_load(&fs->sale.cfg.reg_opens_ms) > 0) { /* registration (gw_reg.h) */
            json_object_set_new(o, "registration_opens_ms",
                                json_integer(atomic_load(&fs->sale.cfg.reg_opens_ms)));
            json_object_set_new(o, "registration_closes_ms",
                                json_integer(atomic_load(&fs->sale.cfg.reg_closes_ms)));
        }
        json_array_append_new(arr, o);
    }
    json_t *root = json_pack("{s:o}", "sales", arr);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    char path[700];
    snprintf(path, sizeof(path), "%s/fair.json", f->srv->cfg->data_dir);
    size_t len = text ? strlen(text) : 0;
    /* the per-sale secrets: owner only, as status.key and admin.token */
    int rc = text ? cm_journal_replace_file(path, text, len, 0600) : CM_EIO;
    if (text)
        explicit_bzero(text, len);
    free(text);
    atomic_store(&f->conf_unsaved, rc != 0 && !CM_PLANT(FAIR_CONF_RETRY_UNSAVED));
    return rc;
}

gw_fair_sale_t *gw_fair__slot_find(gw_fair_t *f, const char *sale_id)
{
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (strcmp(f->sales[i]->sale_id, sale_id) == 0)
            return f->sales[i];
    return NULL;
}

/*---- the inventory step of an entry ----*/

void gw_fair__entry_reserve_req(const entry_t *e, inv_sale_t *sale, inv_reserve_req_t *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->sale = sale;
    snprintf(rq->user_id, sizeof(rq->user_id), "%s", e->person); /* the mark: inv.h */
    snprintf(rq->idem_key, sizeof(rq->idem_key), "%s", e->idem);
    rq->raw_key_fp = e->key_fp;
    snprintf(rq->order_id, sizeof(rq->order_id), "%s", e->order_id);
    rq->qty = e->qty;
}
