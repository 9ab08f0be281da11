/* gw_room_core (one gateway's waiting room, its decisions without I/O): the
 * pre-queue's joins (once each, added only once their record is written),
 * the seal (ranks in the keyed hash's order, the back after the last rank,
 * the seal's record again before a place's when it failed), places and
 * admissions (a token fixed at the first admission, an expired place at the
 * back again), the front's tick (rate x time, at most a second ahead), and a
 * restart that reads the records back into the same room. */
#include "common/cm_err.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_room_core.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* clang-format off: cmocka needs the headers above first */
#include <cmocka.h>
/* clang-format on */

#define START_MS 1000000
#define NPRE 20

static const cm_hash_key_t KEY = {0x1111, 0x2222}, SEED = {0x3333, 0x4444};

/* Each event through the core's one step entry (gw_room_core_step). */
static int core_join(gw_room_core_t *c, const gw_room_join_ev_t *j, gw_wr_join_t *a,
                     gw_room_out_t *o)
{
    return gw_room_core_step(c, &(gw_room_ev_t){.kind = GW_ROOM_EV_JOIN, .join = *j}, a, o);
}

static void core_written(gw_room_core_t *c, const gw_room_rec_t *rec, bool ok)
{
    gw_room_core_step(c, &(gw_room_ev_t){.kind = GW_ROOM_EV_WRITTEN, .rec = rec, .ok = ok}, NULL,
                      NULL);
}

static void core_seal(gw_room_core_t *c, int64_t now_ms, int64_t starts_ms, gw_room_out_t *o)
{
    gw_room_core_step(
        c, &(gw_room_ev_t){.kind = GW_ROOM_EV_SEAL, .now_ms = now_ms, .starts_ms = starts_ms}, NULL,
        o);
}

static void core_seal_synced(gw_room_core_t *c, bool ok)
{
    gw_room_core_step(c, &(gw_room_ev_t){.kind = GW_ROOM_EV_SEAL_SYNCED, .ok = ok}, NULL, NULL);
}

static void core_tick(gw_room_core_t *c, double eff_per_s, int64_t dt_ms, gw_room_out_t *o)
{
    gw_room_core_step(
        c, &(gw_room_ev_t){.kind = GW_ROOM_EV_TICK, .eff_per_s = eff_per_s, .dt_ms = dt_ms}, NULL,
        o);
}

static void core_replay(gw_room_core_t *c, gw_wr_spent_slot_t **spent, const char *line,
                        int64_t now_s)
{
    gw_room_core_step(
        c, &(gw_room_ev_t){.kind = GW_ROOM_EV_REPLAY, .line = line, .spent = spent, .now_s = now_s},
        NULL, NULL);
}

static void core_loaded(gw_room_core_t *c)
{
    gw_room_core_step(c, &(gw_room_ev_t){.kind = GW_ROOM_EV_LOADED}, NULL, NULL);
}

/* The shell's side: every record written as a line, as the log would hold it. */
typedef struct room {
    gw_room_core_t c;
    char log[512][96];
    size_t nlog;
    bool fail; /* the next record's write fails */
} room_t;

static void room_init(room_t *r)
{
    memset(r, 0, sizeof(*r));
    gw_room_core_init(&r->c);
    gw_room_core_reset(&r->c, &KEY, &SEED);
    snprintf(r->log[r->nlog++], 96, "K %016llx %016llx %016llx %016llx", 0x1111ull, 0x2222ull,
             0x3333ull, 0x4444ull);
}

static void write_rec(room_t *r, const gw_room_rec_t *rec)
{
    gw_room_rec_t s;
    if (gw_room_core_relog(&r->c, rec, &s)) {
        gw_room_rec_format(&s, r->log[r->nlog++], 96);
        core_written(&r->c, &s, true);
    }
    bool ok = !r->fail;
    r->fail = false;
    if (ok)
        gw_room_rec_format(rec, r->log[r->nlog++], 96);
    core_written(&r->c, rec, ok);
}

static void write_out(room_t *r, const gw_room_out_t *o)
{
    for (size_t i = 0; i < o->nrec; i++)
        write_rec(r, &o->rec[i]);
}

/* A join (take) at now_ms, sealed first from the start (the sale machine's rule). */
static int join(room_t *r, const char *person, int64_t now_ms, uint64_t through, gw_wr_join_t *a)
{
    gw_room_join_ev_t ev = {.person = person,
                            .len = strlen(person),
                            .take = true,
                            .now_ms = now_ms,
                            .admitted_through = through};
    gw_room_out_t o;
    if (!atomic_load(&r->c.sealed) && now_ms >= START_MS) { /* the sale machine's seal */
        core_seal(&r->c, now_ms, START_MS, &o);
        write_out(r, &o);
    }
    int rc = core_join(&r->c, &ev, a, &o);
    write_out(r, &o);
    return rc;
}

static void test_prequeue(void **state)
{
    (void)state;
    room_t *r = malloc(sizeof(*r));
    room_init(r);
    gw_wr_join_t a;
    assert_int_equal(join(r, "alice", START_MS - 10, 0, &a), GW_ROOM_PREQUEUE);
    assert_true(a.prequeue);
    assert_int_equal(a.pos, 0);
    assert_int_equal(r->c.npre, 1);
    /* again: no second record, no second person */
    size_t n = r->nlog;
    assert_int_equal(join(r, "alice", START_MS - 5, 0, &a), GW_ROOM_PREQUEUE);
    assert_int_equal(r->nlog, n);
    assert_int_equal(r->c.npre, 1);
    /* a record that failed adds nobody */
    r->fail = true;
    assert_int_equal(join(r, "bob", START_MS - 5, 0, &a), GW_ROOM_PREQUEUE);
    assert_int_equal(r->c.npre, 1);
    assert_int_equal(join(r, "bob", START_MS - 5, 0, &a), GW_ROOM_PREQUEUE);
    assert_int_equal(r->c.npre, 2);
    /* a look takes nothing */
    gw_room_join_ev_t look = {.person = "carol", .len = 5, .now_ms = START_MS - 1};
    gw_room_out_t o;
    assert_int_equal(core_join(&r->c, &look, &a, &o), GW_ROOM_PREQUEUE);
    assert_int_equal(o.nrec, 0);
    assert_int_equal(r->c.npre, 2);
    gw_room_core_deinit(&r->c);
    free(r);
}

static void test_seal_ranks(void **state)
{
    (void)state;
    room_t *r = malloc(sizeof(*r));
    room_init(r);
    char name[NPRE][16];
    uint64_t keys[NPRE];
    gw_wr_join_t a;
    for (int i = 0; i < NPRE; i++) {
        snprintf(name[i], sizeof(name[i]), "p%d", i);
        keys[i] = gw_wr_prequeue_key(&SEED, name[i], strlen(name[i]));
        assert_int_equal(join(r, name[i], START_MS - 100 + i, 0, &a), GW_ROOM_PREQUEUE);
    }
    /* the first join at the start seals: ranks in the keys' order */
    assert_int_equal(join(r, "late", START_MS, 0, &a), GW_ROOM_ANSWERED);
    assert_true(atomic_load(&r->c.sealed));
    assert_int_equal(a.pos, NPRE + 1);
    assert_int_equal(atomic_load(&r->c.next), NPRE + 1);
    for (int i = 0; i < NPRE; i++) {
        uint64_t below = 0;
        for (int k = 0; k < NPRE; k++)
            below += keys[k] < keys[i];
        assert_int_equal(join(r, name[i], START_MS + 1, 0, &a), GW_ROOM_ANSWERED);
        assert_int_equal(a.pos, below + 1);
        /* the export's names in rank order */
        assert_string_equal(r->c.names + r->c.name_at[below], name[i]);
    }
    assert_int_equal(atomic_load(&r->c.next), NPRE + 1); /* ranks take no new place */
    gw_room_core_deinit(&r->c);
    free(r);
}

static void test_seal_relog(void **state)
{
    (void)state;
    room_t *r = malloc(sizeof(*r));
    room_init(r);
    gw_wr_join_t a;
    join(r, "alice", START_MS - 10, 0, &a);
    gw_room_out_t o;
    core_seal(&r->c, START_MS, START_MS, &o);
    assert_int_equal(o.nrec, 1);
    assert_int_equal(o.rec[0].kind, GW_ROOM_REC_S);
    assert_true(o.sync); /* someone was ranked */
    write_out(r, &o);
    core_seal_synced(&r->c, false); /* its fdatasync failed */
    assert_true(r->c.seal_unlogged);
    size_t n = r->nlog;
    assert_int_equal(join(r, "bob", START_MS + 1, 0, &a), GW_ROOM_ANSWERED);
    assert_int_equal(a.pos, 2);
    /* the seal's line again before the place's */
    assert_int_equal(r->nlog, n + 2);
    assert_int_equal(r->log[n][0], 'S');
    assert_int_equal(r->log[n + 1][0], 'P');
    assert_false(r->c.seal_unlogged);
    /* an empty pre-queue's seal needs no sync of its own */
    room_t *e = malloc(sizeof(*e));
    room_init(e);
    core_seal(&e->c, START_MS, START_MS, &o);
    assert_false(o.sync);
    gw_room_core_deinit(&e->c);
    free(e);
    gw_room_core_deinit(&r->c);
    free(r);
}

static void test_admission(void **state)
{
    (void)state;
    room_t *r = malloc(sizeof(*r));
    room_init(r);
    gw_wr_join_t a, b;
    int64_t t = START_MS;
    assert_int_equal(join(r, "alice", t, 0, &a), GW_ROOM_ANSWERED);
    assert_int_equal(a.pos, 1);
    assert_int_equal(a.jti, 0); /* not admitted yet */
    assert_int_equal(join(r, "bob", t, 0, &b), GW_ROOM_ANSWERED);
    assert_int_equal(b.pos, 2);
    /* the same place on the next join */
    assert_int_equal(join(r, "alice", t + 1, 0, &a), GW_ROOM_ANSWERED);
    assert_int_equal(a.pos, 1);
    /* admitted through 1: alice's token, fixed at the first admission */
    size_t n = r->nlog;
    assert_int_equal(join(r, "alice", t + 2000, 1, &a), GW_ROOM_ANSWERED);
    assert_int_equal(a.exp_s, (t + 2000) / 1000 + GW_WR_TOKEN_TTL_S);
    assert_int_equal(a.jti, gw_fair__place_jti(&KEY, 1));
    assert_int_equal(r->nlog, n + 1);
    assert_int_equal(r->log[n][0], 'A');
    gw_wr_join_t again;
    assert_int_equal(join(r, "alice", t + 9000, 1, &again), GW_ROOM_ANSWERED);
    assert_int_equal(again.exp_s, a.exp_s);
    assert_int_equal(again.jti, a.jti);
    assert_int_equal(r->nlog, n + 1);
    /* the token expired unused: alice goes to the back */
    int64_t late = (a.exp_s + 1) * 1000;
    assert_int_equal(join(r, "alice", late, 1, &again), GW_ROOM_ANSWERED);
    assert_int_equal(again.pos, 3);
    assert_int_equal(again.jti, 0);
    gw_room_core_deinit(&r->c);
    free(r);
}

static void test_tick(void **state)
{
    (void)state;
    room_t *r = malloc(sizeof(*r));
    room_init(r);
    gw_wr_join_t a;
    char p[16];
    for (int i = 0; i < 10; i++) {
        snprintf(p, sizeof(p), "u%d", i);
        join(r, p, START_MS, 0, &a);
    }
    gw_room_out_t o;
    /* 2 a second for 1.5 s: through 3 */
    core_tick(&r->c, 2.0, 1500, &o);
    assert_int_equal(atomic_load(&r->c.front_milli), 3000);
    assert_int_equal(o.nrec, 1);
    assert_int_equal(o.rec[0].kind, GW_ROOM_REC_F);
    write_out(r, &o);
    /* no record until it passes another place */
    core_tick(&r->c, 2.0, 100, &o);
    assert_int_equal(o.nrec, 0);
    /* never more than a second of admissions past the places given (10 + 2) */
    core_tick(&r->c, 2.0, 60000, &o);
    assert_int_equal(atomic_load(&r->c.front_milli), 12000);
    gw_room_core_deinit(&r->c);
    free(r);
}

static void test_replay(void **state)
{
    (void)state;
    room_t *r = malloc(sizeof(*r));
    room_init(r);
    gw_wr_join_t a;
    char p[16];
    for (int i = 0; i < 8; i++) {
        snprintf(p, sizeof(p), "pre%d", i);
        join(r, p, START_MS - 50, 0, &a);
    }
    for (int i = 0; i < 8; i++) {
        snprintf(p, sizeof(p), "back%d", i);
        join(r, p, START_MS + i, 0, &a);
    }
    gw_room_out_t o;
    core_tick(&r->c, 5.0, 1000, &o);
    write_out(r, &o);
    join(r, "pre3", START_MS + 2000, 5, &a);
    join(r, "back0", START_MS + 2000, 20, &a);
    gw_wr_join_t before[16];
    for (int i = 0; i < 16; i++) {
        snprintf(p, sizeof(p), i < 8 ? "pre%d" : "back%d", i % 8);
        join(r, p, START_MS + 3000, 20, &before[i]);
    }
    /* a claim of back0's token, as the shell logs it */
    snprintf(r->log[r->nlog++], 96, "T %016llx %lld %016llx", (unsigned long long)before[8].jti,
             (long long)before[8].exp_s, 7ull);
    /* a torn and an unknown line are skipped */
    snprintf(r->log[r->nlog++], 96, "P 12");
    snprintf(r->log[r->nlog++], 96, "Z what");

    room_t *b = malloc(sizeof(*b));
    memset(b, 0, sizeof(*b));
    gw_room_core_init(&b->c);
    gw_wr_spent_slot_t *spent = NULL;
    for (size_t i = 0; i < r->nlog; i++)
        core_replay(&b->c, &spent, r->log[i], (START_MS + 3000) / 1000);
    core_loaded(&b->c);
    assert_int_equal(atomic_load(&b->c.next), atomic_load(&r->c.next));
    /* the front: at least the logged one, and through every admitted place */
    assert_int_equal(atomic_load(&b->c.front_milli), 16000);
    assert_true(before[15].jti != 0);
    assert_int_equal(b->c.npre, 8);
    for (int i = 0; i < 16; i++) {
        snprintf(p, sizeof(p), i < 8 ? "pre%d" : "back%d", i % 8);
        gw_room_join_ev_t ev = {.person = p,
                                .len = strlen(p),
                                .take = true,
                                .now_ms = START_MS + 3000,
                                .admitted_through = 20};
        gw_wr_join_t after;
        assert_int_equal(core_join(&b->c, &ev, &after, &o), GW_ROOM_ANSWERED);
        assert_int_equal(after.pos, before[i].pos);
        assert_int_equal(after.exp_s, before[i].exp_s);
        assert_int_equal(after.jti, before[i].jti);
        assert_int_equal(o.nrec, 0); /* nothing new to record */
    }
    /* the claimed token reads spent (its retry with the same key: replay) */
    int64_t now_s = (START_MS + 3000) / 1000;
    assert_int_equal(gw_room_spent_claim(&spent, before[8].jti, before[8].exp_s, 9, now_s),
                     GW_WR_SPENT);
    assert_int_equal(gw_room_spent_claim(&spent, before[8].jti, before[8].exp_s, 7, now_s),
                     GW_WR_REPLAY);
    /* a give-back frees it */
    char u[40];
    snprintf(u, sizeof(u), "U %016llx", (unsigned long long)before[8].jti);
    core_replay(&b->c, &spent, u, now_s);
    assert_int_equal(gw_room_spent_claim(&spent, before[8].jti, before[8].exp_s, 9, now_s),
                     GW_WR_CLAIMED);
    free(spent);
    gw_room_core_deinit(&b->c);
    gw_room_core_deinit(&r->c);
    free(b);
    free(r);
}

/* Each record's line is the replay's grammar (printf's %016llx, %llu, %lld),
 * at the edges of its numbers, and a short buffer gets snprintf's truncation. */
static void test_rec_format(void **state)
{
    (void)state;
    const uint64_t u[] = {0, 1, 9, 10, 1234567890123ull, UINT64_MAX};
    const int64_t s[] = {0, -1, 7, INT64_MIN, INT64_MAX, 1700000000};
    for (size_t i = 0; i < 6; i++) {
        char got[96], want[96];
        const gw_room_rec_t recs[] = {
            {.kind = GW_ROOM_REC_S, .a = (uint64_t)s[i], .b = (uint64_t)s[5 - i]},
            {.kind = GW_ROOM_REC_P, .a = u[i], .b = u[5 - i]},
            {.kind = GW_ROOM_REC_A, .a = u[i], .b = u[5 - i], .c = s[i]},
            {.kind = GW_ROOM_REC_F, .a = u[i]},
            {.kind = GW_ROOM_REC_T, .a = u[i], .b = u[5 - i], .c = s[i]},
        };
        for (size_t k = 0; k < 5; k++) {
            const gw_room_rec_t *r = &recs[k];
            unsigned long long a = r->a, b = r->b;
            long long sa = (long long)r->a, sb = (long long)r->b, c = r->c;
            int n = r->kind == GW_ROOM_REC_S ? snprintf(want, sizeof(want), "S %lld %lld", sa, sb)
                    : r->kind == GW_ROOM_REC_P
                        ? snprintf(want, sizeof(want), "P %016llx %llu", a, b)
                    : r->kind == GW_ROOM_REC_A
                        ? snprintf(want, sizeof(want), "A %016llx %llu %lld", a, b, c)
                    : r->kind == GW_ROOM_REC_F
                        ? snprintf(want, sizeof(want), "F %llu", a)
                        : snprintf(want, sizeof(want), "T %016llx %lld %016llx", a, c, b);
            assert_int_equal(gw_room_rec_format(r, got, sizeof(got)), n);
            assert_string_equal(got, want);
            assert_int_equal(gw_room_rec_format(r, got, 5), n);
            want[4] = '\0';
            assert_string_equal(got, want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prequeue),   cmocka_unit_test(test_seal_ranks),
        cmocka_unit_test(test_seal_relog), cmocka_unit_test(test_admission),
        cmocka_unit_test(test_tick),       cmocka_unit_test(test_replay),
        cmocka_unit_test(test_rec_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
