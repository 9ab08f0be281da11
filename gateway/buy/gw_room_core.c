/*
 * One gateway's waiting room: its decisions without I/O (gw_room_core.h).
 */
#include "gateway/buy/gw_room_core.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_plant.h"
#include "inventory/inv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_room_core_init(gw_room_core_t *c)
{
    memset(c, 0, sizeof(*c));
    atomic_init(&c->next, 0);
    atomic_init(&c->front_milli, 0);
    atomic_init(&c->sealed, false);
}

void gw_room_core_deinit(gw_room_core_t *c)
{
    free(c->places);
    free(c->pre);
    free(c->pre_exp);
    free(c->names);
    free(c->name_at);
    gw_room_core_init(c);
}

void gw_room_core_reset(gw_room_core_t *c, const cm_hash_key_t *key, const cm_hash_key_t *seed)
{
    gw_wr_place_t *places = c->places;
    c->places = NULL;
    gw_room_core_deinit(c);
    if (places) /* the table stays allocated: a room that had places gets them again */
        memset(places, 0, GW_ROOM_PLACES * sizeof(*places));
    c->places = places;
    c->key = *key;
    c->seed = *seed;
}

/*---- places ----*/

/* tag's slot in a bucket, else the one a new place takes: the lowest position (an empty
 * slot has position 0: taken first). */
static gw_wr_place_t *place_of(gw_wr_place_t *bucket, uint64_t tag)
{
    gw_wr_place_t *oldest = bucket;
    for (size_t i = 0; i < GW_WR_WAYS; i++) {
        if (bucket[i].tag == tag)
            return bucket + i;
        if (bucket[i].pos < oldest->pos)
            oldest = bucket + i;
    }
    return oldest;
}

gw_wr_place_t *gw_wr_place_find(gw_wr_place_t *bucket, uint64_t tag, bool take,
                                _Atomic uint64_t *next)
{
    gw_wr_place_t *p = place_of(bucket, tag);
    if (p->tag == tag)
        return p;
    if (!take)
        return NULL;
    *p = (gw_wr_place_t){.tag = tag,
                         .pos = atomic_fetch_add_explicit(next, 1, memory_order_relaxed) + 1};
    return p;
}

static gw_wr_place_t *place_bucket(const gw_room_core_t *c, uint64_t tag)
{
    return c->places + ((size_t)(tag >> 32) & (GW_ROOM_PLACES - GW_WR_WAYS));
}

/* Replay: tag's place at pos, in the slot gw_wr_place_find took for it (the log is read in
 * order). */
static void place_put(gw_room_core_t *c, uint64_t tag, uint64_t pos)
{
    if (!c->places)
        c->places = cm_xcalloc(GW_ROOM_PLACES, sizeof(*c->places));
    *place_of(place_bucket(c, tag), tag) = (gw_wr_place_t){.tag = tag, .pos = pos};
}

uint64_t gw_fair__place_jti(const cm_hash_key_t *key, uint64_t pos)
{
    uint64_t j = cm_hash_sip24(key, &pos, sizeof(pos));
    return j ? j : 1;
}

/*---- the pre-queue ----*/

uint64_t gw_wr_prequeue_key(const cm_hash_key_t *seed, const char *person, size_t len)
{
    uint64_t k = cm_hash_sip24(seed, person, len);
    return k ? k : 1;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void gw_wr_prequeue_sort(uint64_t *keys, size_t n)
{
    if (n > 1)
        qsort(keys, n, sizeof(*keys), u64_cmp);
}

uint64_t gw_wr_prequeue_rank(const uint64_t *sorted, size_t n, uint64_t key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && sorted[lo] == key ? lo + 1 : 0;
}

static bool pre_has(const gw_room_core_t *c, uint64_t key)
{
    if (!c->pre_cap)
        return false;
    size_t mask = c->pre_cap - 1;
    for (size_t i = (size_t)key & mask;; i = (i + 1) & mask) {
        if (c->pre[i] == key)
            return true;
        if (!c->pre[i])
            return false;
    }
}

/* Keeps a new pre-queue person's name for the export (the npre-th). */
static void name_add(gw_room_core_t *c, const char *person, size_t len)
{
    if (c->names_len + len + 1 > c->names_cap) {
        size_t cap = c->names_cap ? c->names_cap * 2 : 4096;
        while (cap < c->names_len + len + 1)
            cap *= 2;
        c->names = cm_xrealloc(c->names, cap);
        c->names_cap = cap;
    }
    /* npre persons so far: the array grows in powers of two from 1024 */
    size_t n = c->npre;
    if (n == 0 || (n >= 1024 && (n & (n - 1)) == 0))
        c->name_at = cm_xrealloc(c->name_at, (n < 1024 ? 1024 : n * 2) * sizeof(uint32_t));
    c->name_at[n] = (uint32_t)c->names_len;
    memcpy(c->names + c->names_len, person, len);
    c->names[c->names_len + len] = '\0';
    c->names_len += len + 1;
}

/* Adds key to the set t of cap slots (a power of two): linear probing. */
static void pre_insert(uint64_t *t, size_t cap, uint64_t key)
{
    size_t i = (size_t)key & (cap - 1);
    while (t[i])
        i = (i + 1) & (cap - 1);
    t[i] = key;
}

/* Adds key (not in the set) and its person; the set grows at half full. */
static void pre_put(gw_room_core_t *c, uint64_t key, const char *person, size_t len)
{
    if ((c->npre + 1) * 2 > c->pre_cap) {
        size_t cap = c->pre_cap ? c->pre_cap * 2 : 1024;
        uint64_t *t = cm_xcalloc(cap, sizeof(*t));
        for (size_t j = 0; j < c->pre_cap; j++)
            if (c->pre[j])
                pre_insert(t, cap, c->pre[j]);
        free(c->pre);
        c->pre = t;
        c->pre_cap = cap;
    }
    pre_insert(c->pre, c->pre_cap, key);
    name_add(c, person, len);
    c->npre++;
}

typedef struct keyed_name {
    uint64_t key; /* first: sorted by u64_cmp */
    uint32_t at;
} keyed_name_t;

/* At the seal: the names in rank order (the keys' order). */
static void names_rank(gw_room_core_t *c, size_t n)
{
    if (n < 2)
        return;
    keyed_name_t *v = cm_xmalloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        const char *p = c->names + c->name_at[i];
        v[i] = (keyed_name_t){gw_wr_prequeue_key(&c->seed, p, strlen(p)), c->name_at[i]};
    }
    qsort(v, n, sizeof(*v), u64_cmp);
    for (size_t i = 0; i < n; i++)
        c->name_at[i] = v[i].at;
    free(v);
}

static void out_add(gw_room_out_t *out, gw_room_rec_t rec)
{
    if (out->nrec < GW_ROOM_OUT_MAX)
        out->rec[out->nrec++] = rec;
}

static void gw_room_core_seal(gw_room_core_t *c, int64_t now_ms, int64_t starts_ms,
                              gw_room_out_t *out)
{
    size_t n = 0;
    for (size_t j = 0; j < c->pre_cap; j++)
        if (c->pre[j])
            c->pre[n++] = c->pre[j];
    if (!CM_PLANT(ROOM_RANK_ARRIVAL)) {
        gw_wr_prequeue_sort(c->pre, n);
        names_rank(c, n);
    }
    c->pre_exp = n ? cm_xcalloc(n, sizeof(*c->pre_exp)) : NULL;
    c->npre = n;
    c->sealed_ms = now_ms;
    c->starts_ms = starts_ms;
    c->seal_unlogged = false;
    /* the first later arrival takes the place after the pre-queue */
    if (!CM_PLANT(ROOM_SEAL_NEXT_OVERLAP))
        atomic_fetch_add(&c->next, (uint64_t)n);
    atomic_store(&c->sealed, true);
    out_add(out, (gw_room_rec_t){
                     .kind = GW_ROOM_REC_S, .a = (uint64_t)now_ms, .b = (uint64_t)starts_ms});
    /* an empty pre-queue ranks nobody: its record needs no sync of its own
     * (the next sync covers it before any P record after it) */
    out->sync = n > 0;
}

/*---- joins ----*/

static int gw_room_core_join(gw_room_core_t *c, const gw_room_join_ev_t *ev, gw_wr_join_t *answer,
                             gw_room_out_t *out)
{
    int64_t now_s = ev->now_ms / 1000;
    if (!atomic_load(&c->sealed)) { /* before the start (the machine seals at it) */
        answer->prequeue = true;
        if (!ev->take)
            return GW_ROOM_PREQUEUE;
        uint64_t key = gw_wr_prequeue_key(&c->seed, ev->person, ev->len);
        if (pre_has(c, key) && !CM_PLANT(ROOM_PREQUEUE_TWICE))
            return GW_ROOM_PREQUEUE;
        if (c->npre >= GW_WR_PREQUEUE_MAX)
            return CM_EBUSY;
        /* added once its record is written (gw_room_core_written) */
        out_add(out, (gw_room_rec_t){
                         .kind = GW_ROOM_REC_J, .a = key, .person = ev->person, .len = ev->len});
        return GW_ROOM_PREQUEUE;
    }
    int64_t *exp = NULL;
    uint64_t tag = 0, next0 = atomic_load_explicit(&c->next, memory_order_relaxed);
    uint64_t rank = c->npre ? gw_wr_prequeue_rank(c->pre, c->npre,
                                                  gw_wr_prequeue_key(&c->seed, ev->person, ev->len))
                            : 0;
    /* a pre-queue place whose token expired unused is given up: the person
     * joins at the back like a place of the table */
    if (rank && (!c->pre_exp[rank - 1] || c->pre_exp[rank - 1] >= now_s)) {
        answer->pos = rank;
        exp = &c->pre_exp[rank - 1];
    } else {
        tag = cm_hash_sip24(&c->key, ev->person, ev->len) | 1;
        if (!c->places && ev->take)
            c->places = cm_xcalloc(GW_ROOM_PLACES, sizeof(*c->places));
        gw_wr_place_t *p =
            c->places ? gw_wr_place_find(place_bucket(c, tag), tag, ev->take, &c->next) : NULL;
        if (p && p->exp_s && p->exp_s < now_s && ev->take) {
            p->pos = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed) + 1;
            p->exp_s = 0;
        }
        if (p) {
            answer->pos = p->pos;
            exp = &p->exp_s;
            /* a new place (here or at the back again): a failed record is
             * logged by the store, and the place is then kept in memory only */
            if (p->pos > next0)
                out_add(out, (gw_room_rec_t){.kind = GW_ROOM_REC_P, .a = tag, .b = p->pos});
        }
    }
    if (exp && answer->pos <= ev->admitted_through && (!*exp || *exp >= now_s)) {
        if (!*exp) {
            *exp = now_s + GW_WR_TOKEN_TTL_S;
            /* the expiry and so the token stay the same across a restart */
            out_add(out,
                    (gw_room_rec_t){.kind = GW_ROOM_REC_A, .a = tag, .b = answer->pos, .c = *exp});
        }
        answer->exp_s = *exp;
        answer->jti = gw_fair__place_jti(&c->key, answer->pos);
    }
    return GW_ROOM_ANSWERED;
}

static void gw_room_core_written(gw_room_core_t *c, const gw_room_rec_t *rec, bool ok)
{
    switch (rec->kind) {
    case GW_ROOM_REC_J:
        /* not written: not added (the join is answered with the error) */
        if (ok && !atomic_load(&c->sealed) &&
            (!pre_has(c, rec->a) || CM_PLANT(ROOM_PREQUEUE_TWICE)))
            pre_put(c, rec->a, rec->person, rec->len);
        break;
    case GW_ROOM_REC_S:
        c->seal_unlogged = !ok;
        break;
    case GW_ROOM_REC_F:
        if (ok)
            c->front_logged = rec->a;
        break;
    default: /* P, A, T: nothing to learn */
        break;
    }
}

bool gw_room_core_relog(const gw_room_core_t *c, const gw_room_rec_t *rec, gw_room_rec_t *s)
{
    if (!c->seal_unlogged || (rec->kind != GW_ROOM_REC_P && rec->kind != GW_ROOM_REC_A))
        return false;
    *s = (gw_room_rec_t){
        .kind = GW_ROOM_REC_S, .a = (uint64_t)c->sealed_ms, .b = (uint64_t)c->starts_ms};
    return true;
}

/*---- the front ----*/

static void gw_room_core_tick(gw_room_core_t *c, double eff_per_s, int64_t dt_ms,
                              gw_room_out_t *out)
{
    uint64_t front = atomic_load(&c->front_milli) + (uint64_t)(eff_per_s * (double)dt_ms);
    uint64_t ahead = (atomic_load(&c->next) + (uint64_t)eff_per_s) * 1000;
    front = front < ahead ? front : ahead;
    atomic_store(&c->front_milli, front);
    /* the front as the restart's floor: a record when it passed another
     * place, at most one a tick */
    if (front / 1000 > c->front_logged / 1000)
        out_add(out, (gw_room_rec_t){.kind = GW_ROOM_REC_F, .a = front});
}

/*---- the log's records ----*/

/* v as 16 lowercase hex digits at p. Returns the end. */
static char *put_hex(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        p[i] = digits[v & 0xf];
    return p + 16;
}

/* ' ' then v in decimal (signed if sig) at p. Returns the end. */
static char *put_dec(char *p, uint64_t v, bool sig)
{
    char d[20];
    int n = 0;
    *p++ = ' ';
    if (sig && (int64_t)v < 0) {
        *p++ = '-';
        v = 0 - v;
    }
    do
        d[n++] = (char)('0' + v % 10);
    while (v /= 10);
    while (n)
        *p++ = d[--n];
    return p;
}

int gw_room_rec_format(const gw_room_rec_t *rec, char *buf, size_t len)
{
    if (rec->kind == GW_ROOM_REC_J)
        return snprintf(buf, len, "J %.*s", (int)rec->len, rec->person);
    /* the numbers without printf: a compaction formats a line per place and token */
    char t[80], *e = t;
    *e++ = (char)rec->kind;
    switch (rec->kind) {
    case GW_ROOM_REC_S:
        e = put_dec(put_dec(e, rec->a, true), rec->b, true);
        break;
    case GW_ROOM_REC_P:
    case GW_ROOM_REC_A:
        *e++ = ' ';
        e = put_dec(put_hex(e, rec->a), rec->b, false);
        if (rec->kind == GW_ROOM_REC_A)
            e = put_dec(e, (uint64_t)rec->c, true);
        break;
    case GW_ROOM_REC_F:
        e = put_dec(e, rec->a, false);
        break;
    case GW_ROOM_REC_T:
        *e++ = ' ';
        e = put_dec(put_hex(e, rec->a), (uint64_t)rec->c, true);
        *e++ = ' ';
        e = put_hex(e, rec->b);
        break;
    case GW_ROOM_REC_J:
        break;
    }
    size_t n = (size_t)(e - t);
    if (len) {
        size_t k = n < len ? n : len - 1;
        memcpy(buf, t, k);
        buf[k] = '\0';
    }
    return (int)n;
}

/*
 * One line of the log, in the order written:
 *   K <key k0> <key k1> <seed k0> <seed k1>  the place key and the pre-queue seed (first)
 *   J <person>                a pre-queue join, before its answer
 *   S <sealed ms> <starts ms> the seal (fdatasync'd)
 *   P <tag> <pos>             a place given after the seal (tag: gw_wr_place_find's)
 *   A <tag> <pos> <exp s>     a place admitted: its token's expiry (tag 0: a pre-queue rank)
 *   F <front milli>           the admission front
 *   T <jti> <exp s> <fp>      an admission token claimed by a buy, before its reserve
 *   U <jti>                   the claim given back (the buy was not a new order's 202)
 * Hex fields are 16 digits. An unknown or malformed line is skipped.
 */
static void gw_room_core_replay(gw_room_core_t *c, gw_wr_spent_slot_t **spent, const char *line,
                                int64_t now_s)
{
    unsigned long long a = 0, b = 0, cc = 0, d = 0;
    long long e = 0;
    bool sealed = atomic_load(&c->sealed);
    switch (line[0]) {
    case 'K':
        if (sscanf(line, "K %16llx %16llx %16llx %16llx", &a, &b, &cc, &d) == 4) {
            c->key = (cm_hash_key_t){a, b};
            c->seed = (cm_hash_key_t){cc, d};
        }
        break;
    case 'J': {
        const char *p = line + 2;
        size_t len = strlen(p);
        if (!sealed && line[1] == ' ' && inv_id_valid(p, len, INV_USER_ID_MAX)) {
            uint64_t key = gw_wr_prequeue_key(&c->seed, p, len);
            if (!pre_has(c, key) && c->npre < GW_WR_PREQUEUE_MAX)
                pre_put(c, key, p, len);
        }
        break;
    }
    case 'S':
        if (!sealed && sscanf(line, "S %lld %llu", &e, &a) == 2) {
            gw_room_out_t out = {0};
            gw_room_core_seal(c, e, (int64_t)a, &out);
        }
        break;
    case 'P':
        if (sealed && sscanf(line, "P %16llx %llu", &a, &b) == 2 && (a & 1) && b > c->npre) {
            place_put(c, a, b);
            if (b > atomic_load(&c->next) && !CM_PLANT(ROOM_REPLAY_FORGETS_NEXT))
                atomic_store(&c->next, b);
        }
        break;
    case 'A':
        if (!sealed || sscanf(line, "A %16llx %llu %lld", &a, &b, &e) != 3 || b == 0)
            break;
        if (a == 0 && b <= c->npre) {
            c->pre_exp[b - 1] = e;
        } else if (a && c->places) { /* a tag is in one slot of its bucket at most */
            gw_wr_place_t *p = place_of(place_bucket(c, a), a);
            if (p->tag == a && p->pos == b)
                p->exp_s = e;
        }
        if (b * 1000 > atomic_load(&c->front_milli)) /* it was admitted */
            atomic_store(&c->front_milli, b * 1000);
        break;
    case 'F':
        if (sscanf(line, "F %llu", &a) == 1 && a > atomic_load(&c->front_milli))
            atomic_store(&c->front_milli, a);
        break;
    case 'T':
        if (sscanf(line, "T %16llx %lld %16llx", &a, &e, &b) == 3 && a && e >= now_s &&
            !CM_PLANT(ROOM_REPLAY_SKIPS_CLAIM) &&
            gw_room_spent_claim(spent, a, e, b, now_s) == GW_WR_CLAIMED)
            gw_room_spent_settle(*spent, a, true);
        break;
    case 'U':
        if (sscanf(line, "U %16llx", &a) == 1 && a)
            gw_room_spent_settle(*spent, a, false);
        break;
    default:
        break;
    }
}

/*---- spent admission tokens ----*/

static gw_wr_spent_slot_t *spent_bucket(gw_wr_spent_slot_t *slots, uint64_t jti)
{
    size_t nb = GW_WR_SPENT_SLOTS / GW_WR_SPENT_WAYS;
    return slots + (size_t)(jti % nb) * GW_WR_SPENT_WAYS;
}

int gw_room_spent_claim(gw_wr_spent_slot_t **slots, uint64_t jti, int64_t exp_s, uint64_t fp,
                        int64_t now_s)
{
    if (!*slots)
        *slots = cm_xcalloc(GW_WR_SPENT_SLOTS, sizeof(**slots));
    gw_wr_spent_slot_t *b = spent_bucket(*slots, jti), *free_slot = NULL;
    for (size_t i = 0; i < GW_WR_SPENT_WAYS; i++) {
        gw_wr_spent_slot_t *e = b + i;
        if (e->jti == jti)
            return fp && e->fp == fp ? GW_WR_REPLAY : GW_WR_SPENT;
        /* an expired token's id is free again: the token itself is refused as expired */
        if (!free_slot && (!e->jti || e->exp_s < now_s))
            free_slot = e;
    }
    if (!free_slot)
        return CM_EBUSY;
    *free_slot = (gw_wr_spent_slot_t){.jti = jti, .exp_s = exp_s, .fp = fp, .spent = false};
    return GW_WR_CLAIMED;
}

void gw_room_spent_settle(gw_wr_spent_slot_t *slots, uint64_t jti, bool accepted)
{
    gw_wr_spent_slot_t *b = slots ? spent_bucket(slots, jti) : NULL;
    for (size_t i = 0; b && i < GW_WR_SPENT_WAYS; i++) {
        if (b[i].jti != jti)
            continue;
        if (accepted)
            b[i].spent = true;
        else
            b[i] = (gw_wr_spent_slot_t){0};
        break;
    }
}

/*---- one step entry: answer and out emptied, then each kind's ----*/

int gw_room_core_step(gw_room_core_t *c, const gw_room_ev_t *ev, gw_wr_join_t *answer,
                      gw_room_out_t *out)
{
    gw_wr_join_t no_answer = {0};
    gw_room_out_t no_out = {0};
    answer = answer ? answer : &no_answer;
    out = out ? out : &no_out;
    memset(answer, 0, sizeof(*answer));
    out->nrec = 0;
    out->sync = false;
    switch (ev->kind) {
    case GW_ROOM_EV_JOIN:
        return gw_room_core_join(c, &ev->join, answer, out);
    case GW_ROOM_EV_WRITTEN:
        gw_room_core_written(c, ev->rec, ev->ok);
        break;
    case GW_ROOM_EV_SEAL:
        gw_room_core_seal(c, ev->now_ms, ev->starts_ms, out);
        break;
    case GW_ROOM_EV_SEAL_SYNCED:
        /* a restart seals again from the same joins and seed, so the same ranks */
        c->seal_unlogged = c->seal_unlogged || !ev->ok;
        break;
    case GW_ROOM_EV_TICK:
        gw_room_core_tick(c, ev->eff_per_s, ev->dt_ms, out);
        break;
    case GW_ROOM_EV_LOADED:
        c->front_logged = atomic_load(&c->front_milli);
        break;
    case GW_ROOM_EV_REPLAY:
        gw_room_core_replay(c, ev->spent, ev->line, ev->now_s);
        break;
    }
    return 0;
}
