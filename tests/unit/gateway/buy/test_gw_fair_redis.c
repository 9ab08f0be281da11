/*
 * The fairness store in Redis (gateway/buy/gw_fair_redis.c) against a real
 * redis-server (started here on 127.0.0.1 at a free port, stopped by PID): an
 * admission token's claim and give-back, a lottery entry's person mark, the
 * entries' push pipeline, the draw's records, the waitlist's and the room's
 * replies as they are read, registration, and the one DEL of a sale's keys.
 * Exits 77 only when no redis-server exists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cm_err.h"
#include "common/cm_url.h"
#include "gateway/buy/gw_fair_redis.h"
#include "inventory/inv_fleet.h"
#include "tests/support/ts_redis.h"

static ts_redis_t srv;

#define CMD(buf, ...) assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), __VA_ARGS__), 0)

static inv_fleet_conn_t *conn(void)
{
    char url[128], why[256] = "";
    cm_redis_url_t addr;
    assert_int_equal(
        cm_redis_url_parse(ts_redis_url(&srv, url, sizeof(url), NULL), &addr, why, sizeof(why)), 0);
    inv_fleet_conn_t *c = inv_fleet_connect(&addr, 3000, why, sizeof(why));
    assert_non_null(c);
    return c;
}

/*
 * An admission token's claim in a fleet (gw_fair_redis_room_claim, its give-back too):
 * a give-back deletes only its own claim (another buy's claim of the token
 * stays), a give-back that finds no claim of its own voids the claim so
 * that, sent before and run after, it claims nothing, and the same
 * Idempotency-Key fingerprint reads as the spending buy's retry (a value
 * written without a nonce too), and that retry holds the token beside the
 * first claim: the token is free only once both gave theirs back.
 */
static void test_room_claim_giveback(void **state)
{
    (void)state;
    char why[256] = "", buf[256];
    inv_fleet_conn_t *c = conn();
    const char *key = "{flashgate:fair:rc}:wrjti:000000000000002a";
    int64_t ttl = 60000;
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 1, ttl, false, why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 2, ttl, false, why, sizeof(why)), 1);
    /* the second buy's give-back leaves the first one's claim */
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 2, ttl, true, why, sizeof(why)), 0);
    CMD(buf, "GET %s", key);
    assert_string_equal(buf, "0:0000000000000001");
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 3, ttl, false, why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 1, ttl, true, why, sizeof(why)), 1);
    CMD(buf, "EXISTS %s", key);
    assert_string_equal(buf, "0");
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 1, ttl, true, why, sizeof(why)), 0);
    /* given back before it ran: claims nothing; another claim claims */
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 4, ttl, true, why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 4, ttl, false, why, sizeof(why)),
                     CM_EBACKEND);
    assert_non_null(strstr(why, "given back"));
    CMD(buf, "EXISTS %s", key);
    assert_string_equal(buf, "0");
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 7, 5, ttl, false, why, sizeof(why)), 0);
    /* the same key's retry, another key's buy */
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 7, 6, ttl, false, why, sizeof(why)), 2);
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 8, 6, ttl, false, why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 0, 6, ttl, false, why, sizeof(why)), 1);
    CMD(buf, "GET %s", key);
    assert_string_equal(buf, "7:0000000000000005,0000000000000006");
    /* the first claim's give-back leaves the retry's hold, the retry's frees the token */
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 7, 5, ttl, true, why, sizeof(why)), 1);
    CMD(buf, "GET %s", key);
    assert_string_equal(buf, "7:0000000000000006");
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 8, 9, ttl, false, why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 7, 6, ttl, true, why, sizeof(why)), 1);
    CMD(buf, "EXISTS %s", key);
    assert_string_equal(buf, "0");
    /* a claim stored as the bare fingerprint */
    CMD(buf, "SET %s 9 PX 60000", key);
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 9, 7, ttl, false, why, sizeof(why)), 2);
    CMD(buf, "GET %s", key);
    assert_string_equal(buf, "9:0000000000000007");
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 9, 8, ttl, false, why, sizeof(why)), 2);
    assert_int_equal(gw_fair_redis_room_claim(c, "rc", 42, 7, 7, ttl, false, why, sizeof(why)), 1);
    inv_fleet_close(c);
    CMD(buf, "DEL %s", key);
}

/*
 * A lottery entry's person mark (gw_fair_redis_lottery_entry_mark / _get / _drop): the
 * first entry of a person takes it, any later one reads the value held; an
 * entry is found by its order id; a drop of another order's id leaves the
 * mark, the holder's own drop frees it; gw_fair_redis_lottery_clear deletes it.
 */
static void test_lottery_entry_mark(void **state)
{
    (void)state;
    char why[256] = "", held[256], person[80], val[256];
    inv_fleet_conn_t *c = conn();
    bool taken = false, found = false;
    assert_int_equal(gw_fair_redis_lottery_entry_mark(c, "em", "p1", "O1", "O1 3 acct-a 1 100",
                                                      &taken, held, sizeof(held), why, sizeof(why)),
                     0);
    assert_true(taken);
    assert_int_equal(gw_fair_redis_lottery_entry_mark(c, "em", "p1", "O2", "O2 4 acct-b 1 200",
                                                      &taken, held, sizeof(held), why, sizeof(why)),
                     0);
    assert_false(taken);
    assert_string_equal(held, "O1 3 acct-a 1 100");
    /* the mark taken puts its node in :entered (node 3 only: the refused one's 4 is not), so
     * the draw waits for node 3's push even if its lottery thread never marked it */
    long long pushed = -1, missing = -1;
    assert_int_equal(
        gw_fair_redis_lottery_pushed_count(c, "em", &pushed, &missing, why, sizeof(why)), 0);
    assert_int_equal(pushed, 0);
    assert_int_equal(missing, 1);
    assert_int_equal(gw_fair_redis_lottery_entry_get(c, "em", "O1", &found, person, sizeof(person),
                                                     val, sizeof(val), why, sizeof(why)),
                     0);
    assert_true(found);
    assert_string_equal(person, "p1");
    assert_string_equal(val, "O1 3 acct-a 1 100");
    assert_int_equal(gw_fair_redis_lottery_entry_get(c, "em", "O2", &found, person, sizeof(person),
                                                     val, sizeof(val), why, sizeof(why)),
                     0);
    assert_false(found);
    assert_int_equal(gw_fair_redis_lottery_entry_drop(c, "em", "p1", "O2", why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_lottery_entry_mark(c, "em", "p1", "O3", "O3 4 acct-b 1 300",
                                                      &taken, held, sizeof(held), why, sizeof(why)),
                     0);
    assert_false(taken);
    assert_int_equal(gw_fair_redis_lottery_entry_drop(c, "em", "p1", "O1", why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_lottery_entry_mark(c, "em", "p1", "O3", "O3 4 acct-b 1 300",
                                                      &taken, held, sizeof(held), why, sizeof(why)),
                     0);
    assert_true(taken);
    assert_int_equal(gw_fair_redis_lottery_clear(c, "em", why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_lottery_entry_get(c, "em", "O3", &found, person, sizeof(person),
                                                     val, sizeof(val), why, sizeof(why)),
                     0);
    assert_false(found);
    inv_fleet_close(c);
}

/* fn of the pair reads: "field=value;" appended to ctx (a char[512]). */
static void pairs_cat(void *ctx, const char *field, const char *value)
{
    char *s = ctx;
    size_t n = strlen(s);
    snprintf(s + n, 512 - n, "%s=%s;", field, value);
}

/*
 * The lottery's records: the configuration (and a sale's eligibility field in
 * it), the entries pushed in one pipeline (a user's first push stays) with the
 * gateway's "pushed" mark, the freeze, the seed (the first offered stays), the
 * winners, done, the drawer's lock; and a pipeline that meets an error reply
 * says so (0) without the pushed mark's success counting for it.
 */
static void test_lottery_records(void **state)
{
    (void)state;
    char why[256] = "", buf[512] = "", out[64];
    inv_fleet_conn_t *c = conn();
    bool found = false, b = false;
    assert_int_equal(gw_fair_redis_lottery_conf_put(c, "lr", "1000 1000 1 2", why, sizeof(why)), 0);
    assert_int_equal(
        gw_fair_redis_lottery_conf_get(c, "lr", out, sizeof(out), &found, why, sizeof(why)), 0);
    assert_true(found);
    assert_string_equal(out, "1000 1000 1 2");
    assert_int_equal(gw_fair_redis_lottery_conf_all(c, pairs_cat, buf, why, sizeof(why)), 0);
    assert_non_null(strstr(buf, "lr=1000 1000 1 2;"));
    /* each part written keeps the other; a registration's part needs a configuration */
    assert_int_equal(gw_fair_redis_conf_part(c, "lr", true, " r=5:6", why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_conf_part(c, "lr", false, "7 8 1 2 0", why, sizeof(why)), 0);
    assert_int_equal(
        gw_fair_redis_lottery_conf_get(c, "lr", out, sizeof(out), &found, why, sizeof(why)), 0);
    assert_string_equal(out, "7 8 1 2 0 r=5:6");
    assert_int_equal(gw_fair_redis_conf_part(c, "lr", true, "", why, sizeof(why)), 0);
    assert_int_equal(
        gw_fair_redis_lottery_conf_get(c, "lr", out, sizeof(out), &found, why, sizeof(why)), 0);
    assert_string_equal(out, "7 8 1 2 0");
    assert_int_equal(gw_fair_redis_conf_part(c, "lx", true, " r=5:6", why, sizeof(why)), 0);
    assert_int_equal(
        gw_fair_redis_lottery_conf_put(c, "ly", GW_FAIR_REDIS_LOTTERY_DELETED, why, sizeof(why)),
        0);
    assert_int_equal(gw_fair_redis_conf_part(c, "ly", true, " r=5:6", why, sizeof(why)), 0);
    assert_int_equal(
        gw_fair_redis_lottery_conf_get(c, "lx", out, sizeof(out), &found, why, sizeof(why)), 0);
    assert_false(found);
    assert_int_equal(
        gw_fair_redis_lottery_conf_get(c, "ly", out, sizeof(out), &found, why, sizeof(why)), 0);
    assert_string_equal(out, GW_FAIR_REDIS_LOTTERY_DELETED);
    assert_int_equal(gw_fair_redis_lottery_conf_put(c, "lr", "1000 1000 1 2", why, sizeof(why)), 0);
    /* a sale's eligibility rule: a field of its own beside the lottery's, gone when deleted */
    assert_int_equal(gw_fair_redis_elig_put(c, "lr", "3 a,b", why, sizeof(why)), 0);
    buf[0] = '\0';
    assert_int_equal(gw_fair_redis_lottery_conf_all(c, pairs_cat, buf, why, sizeof(why)), 0);
    assert_non_null(strstr(buf, GW_FAIR_REDIS_ELIG_PREFIX "lr=3 a,b;"));
    assert_int_equal(gw_fair_redis_elig_put(c, "lr", NULL, why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_elig_put(c, "lr", NULL, why, sizeof(why)), 0); /* absent */
    buf[0] = '\0';
    assert_int_equal(gw_fair_redis_lottery_conf_all(c, pairs_cat, buf, why, sizeof(why)), 0);
    assert_null(strstr(buf, GW_FAIR_REDIS_ELIG_PREFIX "lr="));
    assert_non_null(strstr(buf, "lr=1000 1000 1 2;"));

    assert_int_equal(gw_fair_redis_lottery_entered(c, "lr", &b, why, sizeof(why)), 0);
    assert_false(b);
    assert_int_equal(gw_fair_redis_lottery_entered_mark(c, "lr", 3, why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_lottery_entered(c, "lr", &b, why, sizeof(why)), 0);
    assert_true(b);
    assert_int_equal(gw_fair_redis_lottery_push_add(c, "lr", "u1", "O1 1 - 3"), 0);
    assert_int_equal(gw_fair_redis_lottery_push_add(c, "lr", "u2", "O2 1 - 3"), 0);
    assert_int_equal(gw_fair_redis_lottery_push_add(c, "lr", "u1", "O9 1 - 3"), 0);
    assert_int_equal(gw_fair_redis_lottery_push_finish(c, "lr", 3, true, why, sizeof(why)), 1);
    long long n = 0, missing = -1;
    assert_int_equal(gw_fair_redis_lottery_pushed_count(c, "lr", &n, &missing, why, sizeof(why)),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(missing, 0);
    /* gateway 5 holds entries and has not pushed: counted as missing whatever the count */
    assert_int_equal(gw_fair_redis_lottery_entered_mark(c, "lr", 5, why, sizeof(why)), 0);
    /* nothing to push: only the mark */
    assert_int_equal(gw_fair_redis_lottery_push_finish(c, "lr", 4, true, why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_lottery_pushed_count(c, "lr", &n, &missing, why, sizeof(why)),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(missing, 1);
    assert_int_equal(gw_fair_redis_lottery_push_finish(c, "lr", 5, true, why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_lottery_pushed_count(c, "lr", &n, &missing, why, sizeof(why)),
                     0);
    assert_int_equal(n, 3);
    assert_int_equal(missing, 0);

    uint64_t seed = 0;
    bool seeded = true;
    assert_int_equal(gw_fair_redis_lottery_seed_get(c, "lr", &seed, &seeded, why, sizeof(why)), 0);
    assert_false(seeded);
    /* the seed step: the entries frozen, the seed and the mode the first drawer's; a second
     * drawer's changes nothing */
    assert_int_equal(gw_fair_redis_lottery_seed(c, "lr", "00ff", 'w', why, sizeof(why)), 0);
    CMD(buf, "HSET {flashgate:fair:lr}:e u9 late");
    assert_int_equal(gw_fair_redis_lottery_seed(c, "lr", "0abc", 'l', why, sizeof(why)), 0);
    buf[0] = '\0';
    assert_int_equal(gw_fair_redis_lottery_entrants(c, "lr", pairs_cat, buf, why, sizeof(why)), 0);
    assert_non_null(strstr(buf, "u1=O1 1 - 3;"));
    assert_non_null(strstr(buf, "u2=O2 1 - 3;"));
    assert_int_equal(strlen(buf), strlen("u1=O1 1 - 3;u2=O2 1 - 3;"));
    assert_int_equal(gw_fair_redis_lottery_seed_get(c, "lr", &seed, &seeded, why, sizeof(why)), 0);
    assert_true(seeded);
    assert_int_equal(seed, 0xff);
    gw_fair_redis_wl_state_t ws;
    assert_int_equal(gw_fair_redis_wl_state(c, "lr", &ws, why, sizeof(why)), 0);
    assert_int_equal(ws.mode, 'w');
    /* nobody entered: nothing to freeze, the seed and mode still written */
    assert_int_equal(gw_fair_redis_lottery_seed(c, "l0", "0abc", 'l', why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_lottery_seed_get(c, "l0", &seed, &seeded, why, sizeof(why)), 0);
    assert_true(seeded);
    assert_int_equal(seed, 0xabc);
    assert_int_equal(gw_fair_redis_wl_state(c, "l0", &ws, why, sizeof(why)), 0);
    assert_int_equal(ws.mode, 'l');
    assert_int_equal(gw_fair_redis_lottery_clear(c, "l0", why, sizeof(why)), 0);

    bool mine = false;
    assert_int_equal(gw_fair_redis_lottery_lock(c, "lr", 3, 10000, &mine, why, sizeof(why)), 0);
    assert_true(mine);
    assert_int_equal(gw_fair_redis_lottery_lock(c, "lr", 3, 10000, &mine, why, sizeof(why)), 0);
    assert_true(mine);
    assert_int_equal(gw_fair_redis_lottery_lock(c, "lr", 4, 10000, &mine, why, sizeof(why)), 0);
    assert_false(mine);
    assert_int_equal(gw_fair_redis_lottery_lock_renew(c, "lr", 10000, why, sizeof(why)), 0);

    assert_int_equal(gw_fair_redis_lottery_winner_put(c, "lr", "u1", "O1", why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_lottery_winner_put(
                         c, "lr", "u2", GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED, why, sizeof(why)),
                     0);
    buf[0] = '\0';
    assert_int_equal(gw_fair_redis_lottery_winners(c, "lr", pairs_cat, buf, why, sizeof(why)), 0);
    assert_non_null(strstr(buf, "u1=O1;"));
    assert_non_null(strstr(buf, "u2=-;"));
    assert_int_equal(gw_fair_redis_lottery_done(c, "lr", &b, why, sizeof(why)), 0);
    assert_false(b);
    assert_int_equal(gw_fair_redis_lottery_done_set(c, "lr", 2, why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_lottery_done(c, "lr", &b, why, sizeof(why)), 0);
    assert_true(b);
    assert_int_equal(gw_fair_redis_lottery_entered(c, "lr", &b, why, sizeof(why)), 0);
    assert_false(b); /* entered, but drawn */

    /* an error reply in the pipeline: :e is not a hash */
    CMD(buf, "SET {flashgate:fair:lx}:e x");
    assert_int_equal(gw_fair_redis_lottery_push_add(c, "lx", "u1", "O1 1 - 3"), 0);
    assert_int_equal(gw_fair_redis_lottery_push_finish(c, "lx", 3, true, why, sizeof(why)), 0);
    assert_false(inv_fleet_broken(c));
    assert_int_equal(gw_fair_redis_lottery_pushed_count(c, "lx", &n, &missing, why, sizeof(why)),
                     0);
    assert_int_equal(n, 1); /* the mark went, as the caller's retry expects */
    /* an error reply to a plain call: its text in errbuf, the connection whole */
    assert_int_equal(gw_fair_redis_lottery_winners(c, "lx", pairs_cat, buf, why, sizeof(why)), 0);
    CMD(buf, "SET {flashgate:fair:lx}:won x");
    assert_int_equal(gw_fair_redis_lottery_winners(c, "lx", pairs_cat, buf, why, sizeof(why)),
                     CM_EBACKEND);
    assert_non_null(strstr(why, "WRONGTYPE"));
    assert_false(inv_fleet_broken(c));
    assert_int_equal(gw_fair_redis_lottery_clear(c, "lx", why, sizeof(why)), 0);

    /* the one DEL: every key of the sale goes */
    assert_int_equal(gw_fair_redis_lottery_clear(c, "lr", why, sizeof(why)), 0);
    CMD(buf, "KEYS {flashgate:fair:lr}:*");
    assert_string_equal(buf, "0");
    inv_fleet_close(c);
}

/*
 * The waitlist's records as they are read back: the state script's six fields,
 * the lock, a promotion begun, read as pending, finished as a winner (gen and
 * promoted bumped, :won set), and the end, refused while a promotion is pending.
 */
static void test_waitlist_records(void **state)
{
    (void)state;
    char why[256] = "", buf[256], person[64], order[64];
    inv_fleet_conn_t *c = conn();
    gw_fair_redis_wl_state_t st;
    assert_int_equal(gw_fair_redis_wl_state(c, "wlr", &st, why, sizeof(why)), 0);
    assert_int_equal(st.mode, 0);
    assert_false(st.ended);
    assert_string_equal(st.owner, "");
    assert_int_equal(gw_fair_redis_lottery_seed(c, "wlr", "01", 'w', why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_lottery_seed(c, "wlr", "02", 'l', why, sizeof(why)), 0);
    bool mine = false, found = true;
    assert_int_equal(gw_fair_redis_wl_lock(c, "wlr", "own1", 10000, &mine, why, sizeof(why)), 0);
    assert_true(mine);
    assert_int_equal(gw_fair_redis_wl_lock(c, "wlr", "own2", 10000, &mine, why, sizeof(why)), 0);
    assert_false(mine);
    assert_int_equal(gw_fair_redis_wl_pending(c, "wlr", &found, person, sizeof(person), order,
                                              sizeof(order), why, sizeof(why)),
                     0);
    assert_false(found);
    assert_int_equal(gw_fair_redis_wl_begin(c, "wlr", "own2", "p1", "O1", why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_wl_begin(c, "wlr", "own1", "p1", "O1", why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_wl_adopt(c, "wlr", "own1", 0, why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_wl_pending(c, "wlr", &found, person, sizeof(person), order,
                                              sizeof(order), why, sizeof(why)),
                     0);
    assert_true(found);
    assert_string_equal(person, "p1");
    assert_string_equal(order, "O1");
    assert_int_equal(gw_fair_redis_wl_state(c, "wlr", &st, why, sizeof(why)), 0);
    assert_string_equal(st.owner, "own1");
    long long gen = 0;
    assert_int_equal(
        gw_fair_redis_wl_finish(c, "wlr", "own2", "p1", "O1", 5, &gen, why, sizeof(why)), 0);
    assert_int_equal(
        gw_fair_redis_wl_finish(c, "wlr", "own1", "p1", "O1", 5, &gen, why, sizeof(why)), 1);
    assert_int_equal(gen, 1);
    CMD(buf, "HGET {flashgate:fair:wlr}:won p1");
    assert_string_equal(buf, "O1");
    /* no outcome: the generation is read, not bumped */
    assert_int_equal(gw_fair_redis_wl_begin(c, "wlr", "own1", "p2", "O2", why, sizeof(why)), 1);
    /* the end waits for a promotion begun before it: its outcome is recorded first, so no
     * gateway that read the end answers a loser lost whom that promotion then makes a winner */
    assert_int_equal(gw_fair_redis_wl_end(c, "wlr", why, sizeof(why)), 0);
    assert_int_equal(gw_fair_redis_wl_state(c, "wlr", &st, why, sizeof(why)), 0);
    assert_false(st.ended);
    assert_int_equal(gw_fair_redis_wl_finish(c, "wlr", "own1", "p2", "", 3, &gen, why, sizeof(why)),
                     1);
    assert_int_equal(gen, 1);
    assert_int_equal(gw_fair_redis_wl_end(c, "wlr", why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_wl_end(c, "wlr", why, sizeof(why)), 1);
    assert_int_equal(gw_fair_redis_wl_state(c, "wlr", &st, why, sizeof(why)), 0);
    assert_int_equal(st.mode, 'w');
    assert_true(st.ended);
    assert_int_equal(st.gen, 2);
    assert_int_equal(st.head, 5);
    assert_int_equal(st.promoted, 1);
    assert_string_equal(st.owner, "");
    assert_int_equal(gw_fair_redis_lottery_clear(c, "wlr", why, sizeof(why)), 0);
    inv_fleet_close(c);
}

/* fn of the range reads: "x;" appended to ctx (a char[256]). */
static void one_cat(void *ctx, const char *x)
{
    char *s = ctx;
    size_t n = strlen(s);
    snprintf(s + n, 256 - n, "%s;", x);
}

/* Registration (the cap, once per person, ranks in order) and the waiting room:
 * the pre-queue before the start, the seal, a later place, the front's advance
 * and an admission with its expiry, read by the tick, the join and the state. */
static void test_reg_and_room(void **state)
{
    (void)state;
    char why[256] = "", buf[256] = "";
    inv_fleet_conn_t *c = conn();
    int added = 9;
    assert_int_equal(gw_fair_redis_reg_add(c, "rr", "p1", 2, &added, why, sizeof(why)), 0);
    assert_int_equal(added, 1);
    assert_int_equal(gw_fair_redis_reg_add(c, "rr", "p1", 2, &added, why, sizeof(why)), 0);
    assert_int_equal(added, 0);
    assert_int_equal(gw_fair_redis_reg_add(c, "rr", "p2", 2, &added, why, sizeof(why)), 0);
    assert_int_equal(added, 1);
    assert_int_equal(gw_fair_redis_reg_add(c, "rr", "p3", 2, &added, why, sizeof(why)), 0);
    assert_int_equal(added, -1);
    bool has = false;
    assert_int_equal(gw_fair_redis_reg_has(c, "rr", "p2", &has, why, sizeof(why)), 0);
    assert_true(has);
    long long n = 0;
    assert_int_equal(gw_fair_redis_reg_count(c, "rr", &n, why, sizeof(why)), 0);
    assert_int_equal(n, 2);
    assert_int_equal(gw_fair_redis_reg_range(c, "rr", 0, 9, one_cat, buf, why, sizeof(why)), 0);
    assert_string_equal(buf, "p1;p2;");

    const char *seed = "0123456789abcdef0123456789abcdef";
    gw_fair_redis_room_state_t st;
    assert_int_equal(
        gw_fair_redis_room_tick(c, "rr", "-0123", false, 1000, 0, 0, &st, why, sizeof(why)),
        CM_ENOTFOUND);
    assert_int_equal(
        gw_fair_redis_room_tick(c, "rr", seed, false, 1000, 0, 0, &st, why, sizeof(why)), 0);
    assert_string_equal(st.seed, seed);
    assert_int_equal(st.sealed_ms, 0);
    gw_wr_join_t j;
    char theirs[GW_FAIR_REDIS_ROOM_SEED_HEX + 1];
    assert_int_equal(gw_fair_redis_room_join(c, "rr", seed, "00000000000000aap1", "p1", true, true,
                                             1000, 60, 10, &j, theirs, why, sizeof(why)),
                     0);
    assert_true(j.prequeue);
    assert_int_equal(gw_fair_redis_room_join(c, "rr", "ffffffffffffffffffffffffffffffff",
                                             "00000000000000aap1", "p1", true, true, 1000, 60, 10,
                                             &j, theirs, why, sizeof(why)),
                     CM_ECONFLICT);
    assert_string_equal(theirs, seed); /* another seed: the room's comes back */
    /* a join into a full pre-queue (cap 1) */
    assert_int_equal(gw_fair_redis_room_join(c, "rr", seed, "00000000000000ccp3", "p3", true, true,
                                             1000, 60, 1, &j, theirs, why, sizeof(why)),
                     CM_EBUSY);
    assert_true(j.prequeue);
    assert_int_equal(gw_fair_redis_room_tick(c, "rr", "-", false, 0, 0, 0, &st, why, sizeof(why)),
                     0);
    assert_int_equal(st.npre, 1);
    /* the start: sealed, the front moves by 1.5 places */
    assert_int_equal(
        gw_fair_redis_room_tick(c, "rr", seed, true, 2000, 1500, 0, &st, why, sizeof(why)), 0);
    assert_int_equal(st.sealed_ms, 2000);
    assert_int_equal(st.npre, 1);
    assert_int_equal(st.next, 1);
    assert_int_equal(st.front_milli, 1000); /* not past next + ahead */
    assert_int_equal(gw_fair_redis_room_join(c, "rr", seed, "00000000000000bbp2", "p2", false, true,
                                             3000, 60, 10, &j, theirs, why, sizeof(why)),
                     0);
    assert_false(j.prequeue);
    assert_int_equal(j.pos, 2);
    assert_int_equal(j.exp_s, 0);
    assert_int_equal(gw_fair_redis_room_join(c, "rr", seed, "00000000000000aap1", "p1", false,
                                             false, 3000, 60, 10, &j, theirs, why, sizeof(why)),
                     0);
    assert_int_equal(j.pos, 1);
    assert_int_equal(j.exp_s, 3 + 60);
    /* its token expired unused: a look shows the place not admitted, a join gives it up
     * for one at the back */
    assert_int_equal(gw_fair_redis_room_join(c, "rr", seed, "00000000000000aap1", "p1", false,
                                             false, 64000, 60, 10, &j, theirs, why, sizeof(why)),
                     0);
    assert_int_equal(j.pos, 1);
    assert_int_equal(j.exp_s, 0);
    assert_int_equal(gw_fair_redis_room_join(c, "rr", seed, "00000000000000aap1", "p1", false, true,
                                             64000, 60, 10, &j, theirs, why, sizeof(why)),
                     0);
    assert_int_equal(j.pos, 3);
    assert_int_equal(j.exp_s, 0);
    buf[0] = '\0';
    assert_int_equal(gw_fair_redis_room_range(c, "rr", 0, 9, one_cat, buf, why, sizeof(why)), 0);
    assert_string_equal(buf, "00000000000000aap1;");
    assert_int_equal(gw_fair_redis_lottery_clear(c, "rr", why, sizeof(why)), 0);
    CMD(buf, "EXISTS {flashgate:fair:rr}:wr {flashgate:fair:rr}:reg");
    assert_string_equal(buf, "0");
    inv_fleet_close(c);
}

static double info_num(const char *section, const char *line, const char *name)
{
    return ts_redis_info_num(&srv, section, line, name);
}

/* The bytes redis-server read and its CPU per script call over n entry marks and n room
 * joins (INFO stats, commandstats, cpu), on stderr (the figures bench/README.md quotes:
 * build/tests/unit.gw_fair_redis). */
static void script_cost(inv_fleet_conn_t *c, int n)
{
    char why[256] = "", held[256], buf[64];
    const char *seed = "0123456789abcdef0123456789abcdef";
    for (int round = 0; round < 2; round++) {
        CMD(buf, "CONFIG RESETSTAT");
        double in0 = info_num("stats", NULL, "total_net_input_bytes");
        double cpu0 =
            info_num("cpu", NULL, "used_cpu_user") + info_num("cpu", NULL, "used_cpu_sys");
        for (int i = 0; i < n; i++) {
            char person[16], id[16], member[40];
            snprintf(person, sizeof(person), "p%d", i);
            snprintf(id, sizeof(id), "O%d", i);
            bool taken = false;
            if (round == 0) {
                assert_int_equal(gw_fair_redis_lottery_entry_mark(c, "cost", person, id,
                                                                  "O1 3 acct-a 1 100", &taken, held,
                                                                  sizeof(held), why, sizeof(why)),
                                 0);
            } else {
                gw_wr_join_t j;
                char theirs[GW_FAIR_REDIS_ROOM_SEED_HEX + 1];
                snprintf(member, sizeof(member), "%016x%s", i, person);
                assert_int_equal(gw_fair_redis_room_join(c, "cost", seed, member, person, false,
                                                         true, 3000, 60, 1000000, &j, theirs, why,
                                                         sizeof(why)),
                                 0);
            }
        }
        double in = info_num("stats", NULL, "total_net_input_bytes") - in0;
        double cpu =
            info_num("cpu", NULL, "used_cpu_user") + info_num("cpu", NULL, "used_cpu_sys") - cpu0;
        double sha_calls = info_num("commandstats", "cmdstat_evalsha", "calls");
        double eval_calls = info_num("commandstats", "cmdstat_eval", "calls");
        double usec = info_num("commandstats", "cmdstat_evalsha", "usec") +
                      info_num("commandstats", "cmdstat_eval", "usec");
        fprintf(stderr,
                "script cost: %s x%d: %.0f bytes in per call, %.2f usec per call in the "
                "script, %.2f usec of redis-server CPU per call (evalsha %.0f, eval %.0f)\n",
                round == 0 ? "lottery entry mark" : "room join", n, in / n,
                usec / (sha_calls + eval_calls), cpu * 1e6 / n, sha_calls, eval_calls);
    }
    assert_int_equal(gw_fair_redis_lottery_clear(c, "cost", why, sizeof(why)), 0);
}

/*
 * The store's scripts go by their SHA1 (EVALSHA), and again with their text
 * after NOSCRIPT: a SCRIPT FLUSH (or a restarted Redis) between two calls
 * costs the second one round trip more, and both work.
 */
static void test_scripts_by_sha(void **state)
{
    (void)state;
    char why[256] = "", held[256], buf[64];
    inv_fleet_conn_t *c = conn();
    bool taken = false;
    CMD(buf, "CONFIG RESETSTAT");
    assert_int_equal(gw_fair_redis_lottery_entry_mark(c, "sh", "p1", "O1", "O1 3 acct-a 1 100",
                                                      &taken, held, sizeof(held), why, sizeof(why)),
                     0);
    assert_true(taken);
    CMD(buf, "SCRIPT FLUSH");
    assert_int_equal(gw_fair_redis_lottery_entry_mark(c, "sh", "p2", "O2", "O2 3 acct-b 1 100",
                                                      &taken, held, sizeof(held), why, sizeof(why)),
                     0);
    assert_true(taken);
    assert_int_equal(gw_fair_redis_lottery_entry_mark(c, "sh", "p2", "O3", "O3 3 acct-b 1 100",
                                                      &taken, held, sizeof(held), why, sizeof(why)),
                     0);
    assert_false(taken);
    assert_string_equal(held, "O2 3 acct-b 1 100");
    /* three by SHA1; the text once after the flush (and once before it if the
     * server had not seen it yet) */
    double sha_calls = info_num("commandstats", "cmdstat_evalsha", "calls");
    double eval_calls = info_num("commandstats", "cmdstat_eval", "calls");
    script_cost(c, 2000);
    assert_int_equal(gw_fair_redis_lottery_clear(c, "sh", why, sizeof(why)), 0);
    inv_fleet_close(c);
    assert_true(sha_calls == 3);
    assert_true(eval_calls >= 1 && eval_calls <= 2);
}

int main(void)
{
    if (ts_redis_start(&srv, false) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_room_claim_giveback), cmocka_unit_test(test_lottery_entry_mark),
        cmocka_unit_test(test_lottery_records),     cmocka_unit_test(test_waitlist_records),
        cmocka_unit_test(test_reg_and_room),        cmocka_unit_test(test_scripts_by_sha),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ts_redis_free(&srv);
    return rc;
}
