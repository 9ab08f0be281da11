/*
 * gw_reg: registration's pure parts: the window's edges (its first and last
 * millisecond), the settings the admin API refuses (one time without the
 * other, a close after the lottery window opens, registration without a
 * lottery), and the export's pages (complete, none past the end, never more
 * than the limit). On a gateway's parts (the lottery's table and its
 * directory, no workers): the registration log's torn last line is cut off
 * at start, so the next registration reads back whole after another start;
 * the set keeps its own hash key when the waiting room's is re-drawn; a
 * registration that comes after its sale was deleted leaves no log behind.
 * Registrations through the route, entries, restarts and the fleet run
 * against the real binary in tests/integration/100-registration.py.
 */
#include "gateway/buy/gw_reg.h"

#include "common/cm_err.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg_backend.h"
#include "gateway/buy/gw_sale_core.h"
#include "queue/oq_spool.h"
#include "tests/support/ts_jrec.h"

#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#define OPENS 1000000
#define CLOSES 2000000

/* The registration route's phase of a window [opens, closes) (gw_reg_handle's). */
static gw_sale_phase_t reg_phase_at(int64_t opens, int64_t closes, int64_t now)
{
    gw_sale_cfg_t cfg = {.reg_opens_ms = opens, .reg_closes_ms = closes};
    return gw_sale_phase_at(&cfg, false, false, now);
}

static void test_phase_edges(void **state)
{
    (void)state;
    assert_int_not_equal(reg_phase_at(0, 0, OPENS), GW_SALE_PH_REGISTRATION);
    assert_int_equal(reg_phase_at(OPENS, CLOSES, OPENS - 1), GW_SALE_PH_BEFORE);
    assert_int_equal(reg_phase_at(OPENS, CLOSES, OPENS), GW_SALE_PH_REGISTRATION);
    assert_int_equal(reg_phase_at(OPENS, CLOSES, CLOSES - 1), GW_SALE_PH_REGISTRATION);
    assert_int_equal(reg_phase_at(OPENS, CLOSES, CLOSES), GW_SALE_PH_OPEN);
    assert_int_equal(reg_phase_at(OPENS, CLOSES, CLOSES + 86400000), GW_SALE_PH_OPEN);
}

static void test_window_check(void **state)
{
    (void)state;
    char why[256];
    /* none, and a window that closes exactly when the lottery opens */
    assert_int_equal(gw_reg_window_check(0, 0, 0, 0, why, sizeof(why)), 0);
    assert_int_equal(gw_reg_window_check(OPENS, CLOSES, 1000, CLOSES, why, sizeof(why)), 0);
    /* one without the other */
    why[0] = '\0';
    assert_int_equal(gw_reg_window_check(OPENS, 0, 1000, CLOSES, why, sizeof(why)), CM_EINVAL);
    assert_non_null(strstr(why, "both"));
    assert_int_equal(gw_reg_window_check(0, CLOSES, 1000, CLOSES, why, sizeof(why)), CM_EINVAL);
    /* closes no later than opens */
    assert_int_equal(gw_reg_window_check(OPENS, OPENS, 1000, CLOSES, why, sizeof(why)), CM_EINVAL);
    assert_int_equal(gw_reg_window_check(CLOSES, OPENS, 1000, CLOSES, why, sizeof(why)),
                     CM_EINVAL);
    /* a millisecond into the lottery window */
    assert_int_equal(gw_reg_window_check(OPENS, CLOSES + 1, 1000, CLOSES, why, sizeof(why)),
                     CM_EINVAL);
    assert_non_null(strstr(why, "lottery window"));
    /* no lottery */
    assert_int_equal(gw_reg_window_check(OPENS, CLOSES, 0, CLOSES, why, sizeof(why)), CM_EINVAL);
    assert_non_null(strstr(why, "fair_window_ms"));
}

static void test_pages_complete(void **state)
{
    (void)state;
    uint64_t s, e;
    gw_reg_page(0, 0, 10, &s, &e);
    assert_true(s == 0 && e == 0);
    gw_reg_page(5, 7, 10, &s, &e); /* past the end: empty, not negative */
    assert_true(s == 5 && e == 5);
    gw_reg_page(5, 3, UINT64_MAX, &s, &e); /* no overflow */
    assert_true(s == 3 && e == 5);
    for (uint64_t total = 0; total < 40; total++)
        for (uint64_t limit = 1; limit <= 9; limit++) {
            uint64_t cursor = 0, seen = 0, pages = 0;
            for (;;) {
                gw_reg_page(total, cursor, limit, &s, &e);
                assert_int_equal(s, cursor);
                assert_true(e - s <= limit);
                seen += e - s;
                pages++;
                if (e >= total)
                    break;
                cursor = e;
            }
            assert_int_equal(seen, total);
            assert_int_equal(pages, total ? (total + limit - 1) / limit : 1);
        }
}

/* A gateway's parts as registration uses them: memory inventory, a spool, the
 * order table and the lottery's table over a data dir (tests/unit only). */
typedef struct mini {
    char dir[64];
    gw_config_t cfg;
    gw_server_t srv;
} mini_t;

static void mini_start(mini_t *m)
{
    char why[256] = "", spdir[128];
    m->srv.cfg = &m->cfg;
    m->srv.node.id = 1;
    assert_int_equal(inv_open(&m->srv.stores.inv, "memory", NULL, 16, why, sizeof(why)), 0);
    snprintf(spdir, sizeof(spdir), "%s/spool", m->dir);
    oq_spool_opts_t so = {.dir = spdir, .durability = OQ_DURABILITY_WRITE};
    assert_int_equal(oq_spool_open(&m->srv.stores.spool, &so, why, sizeof(why)), 0);
    m->srv.stores.orders = gw_orders_new(1000);
    assert_int_equal(gw_fair_open(&m->srv, gw_acceptor(&m->srv), why, sizeof(why)), 0);
}

static void mini_stop(mini_t *m)
{
    gw_fair_close(&m->srv);
    gw_orders_free(m->srv.stores.orders);
    oq_spool_close(m->srv.stores.spool);
    inv_close(m->srv.stores.inv);
    memset(&m->srv, 0, sizeof(m->srv));
}

/* A new data dir; sale "s1" with a lottery and registration open now. */
static gw_fair_sale_t *mini_open(mini_t *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->dir, sizeof(m->dir), "/tmp/fg-reg-unit-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->cfg.data_dir, sizeof(m->cfg.data_dir), "%s", m->dir);
    snprintf(m->cfg.inventory, sizeof(m->cfg.inventory), "memory");
    m->cfg.max_registrations = 1000;
    mini_start(m);
    char why[256] = "";
    int64_t now = cm_wall_ms();
    assert_int_equal(gw_fair_configure(&m->srv, "s1", 1000, 0, 0, why, sizeof(why)), 0);
    assert_int_equal(gw_reg_configure(&m->srv, "s1", now - 1000, now + 3600000, why, sizeof(why)),
                     0);
    gw_fair_sale_t *fs = gw_fair__slot_find(m->srv.fair, "s1");
    assert_non_null(fs);
    return fs;
}

/* The data dir's state read again, as a restart does. */
static gw_fair_sale_t *mini_restart(mini_t *m)
{
    mini_stop(m);
    mini_start(m);
    gw_fair_sale_t *fs = gw_fair__slot_find(m->srv.fair, "s1");
    assert_non_null(fs);
    return fs;
}

static void mini_close(mini_t *m)
{
    mini_stop(m);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
    assert_int_equal(system(cmd), 0);
}

static int reg(mini_t *m, gw_fair_sale_t *fs, const char *person)
{
    char why[256] = "";
    bool sync = false;
    (void)fs;
    return gw_reg_add(&m->srv, "s1", person, &sync, why, sizeof(why));
}

static void reg_path(const mini_t *m, char *out, size_t cap)
{
    snprintf(out, cap, "%s/fair/s1.reg", m->dir);
}

/* The export's persons, comma-joined. */
static void exported(mini_t *m, char *out, size_t cap)
{
    int rc = 0;
    char why[256] = "";
    json_t *o = gw_reg_export_json(&m->srv, "s1", 0, 1000, &rc, why, sizeof(why));
    assert_non_null(o);
    size_t i, len = 0;
    json_t *p;
    out[0] = '\0';
    json_array_foreach(json_object_get(o, "persons"), i, p)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "," : "",
                                json_string_value(p));
    json_decref(o);
}

/* A registration log whose last line was torn by a crash (never answered): the
 * start cuts it off, so the next registration's line is whole, and a second
 * start reads that person back (not glued to the torn bytes as another id). */
static void test_torn_line_cut_at_start(void **state)
{
    (void)state;
    mini_t m;
    gw_fair_sale_t *fs = mini_open(&m);
    assert_int_equal(reg(&m, fs, "P-a"), 1);
    assert_int_equal(reg(&m, fs, "P-b"), 1);
    mini_stop(&m);
    char path[128];
    reg_path(&m, path, sizeof(path));
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("P-tor", f); /* a write cut short: no newline */
    fclose(f);
    mini_start(&m);
    fs = gw_fair__slot_find(m.srv.fair, "s1");
    char list[256];
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a,P-b");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    /* the torn bytes are gone: the magic line and two frames (common/cm_journal.h) */
    assert_int_equal(st.st_size, CM_JOURNAL_MAGIC_LEN + 2 * (3 + CM_JOURNAL_FRAME_OVERHEAD));
    assert_int_equal(reg(&m, fs, "P-c"), 1);
    fs = mini_restart(&m);
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a,P-b,P-c");
    assert_int_equal(reg(&m, fs, "P-c"), 0); /* registered already: read back whole */
    mini_close(&m);
}

/* The log opened for appends (the first registration after a start, or a
 * reopen after a failed cut) with torn bytes at its end: they are cut first,
 * so the person's line is not glued to them (read back as "P-torP-c"). */
static void test_torn_line_cut_at_reopen(void **state)
{
    (void)state;
    mini_t m;
    gw_fair_sale_t *fs = mini_open(&m);
    assert_int_equal(reg(&m, fs, "P-a"), 1);
    fs = mini_restart(&m); /* the log is closed until the next registration */
    char path[128];
    reg_path(&m, path, sizeof(path));
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("P-tor", f); /* left by a short write whose cut failed */
    fclose(f);
    assert_int_equal(reg(&m, fs, "P-c"), 1);
    fs = mini_restart(&m);
    char list[256];
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a,P-c");
    assert_int_equal(reg(&m, fs, "P-c"), 0);
    mini_close(&m);
}

/* A record longer than any id (a foreign one) is skipped whole at the start,
 * never read back in pieces one of which passes for an id. */
static void test_overlong_line_skipped(void **state)
{
    (void)state;
    mini_t m;
    gw_fair_sale_t *fs = mini_open(&m);
    assert_int_equal(reg(&m, fs, "P-a"), 1);
    mini_stop(&m);
    char path[128], junk[128];
    reg_path(&m, path, sizeof(path));
    memset(junk, 'X', 71); /* a 72-byte buffer's worth, then an id */
    snprintf(junk + 71, sizeof(junk) - 71, "P-hidden");
    char frame[256];
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    size_t n = cm_journal_frame(frame, sizeof(frame), junk, strlen(junk));
    assert_int_equal(fwrite(frame, 1, n, f), n);
    n = cm_journal_frame(frame, sizeof(frame), "P-b", 3);
    assert_int_equal(fwrite(frame, 1, n, f), n);
    fclose(f);
    mini_start(&m);
    fs = gw_fair__slot_find(m.srv.fair, "s1");
    char list[256];
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a,P-b");
    mini_close(&m);
}

/* The set's table has its own hash key: re-drawing the waiting room's (a room
 * reset) leaves every registered person findable, registered once. */
static void test_own_hash_key(void **state)
{
    (void)state;
    mini_t m;
    gw_fair_sale_t *fs = mini_open(&m);
    char p[32];
    for (int i = 0; i < 200; i++) {
        snprintf(p, sizeof(p), "P-%03d", i);
        assert_int_equal(reg(&m, fs, p), 1);
    }
    gw_fair__room_reset(fs);
    for (int i = 0; i < 200; i++) {
        snprintf(p, sizeof(p), "P-%03d", i);
        assert_int_equal(reg(&m, fs, p), 0);
    }
    long long n = 0;
    char why[256] = "";
    assert_int_equal(gw_reg_count(&m.srv, "s1", &n, why, sizeof(why)), 0);
    assert_int_equal(n, 200);
    mini_close(&m);
}

/* A registration that passed the route's check before its sale was deleted and
 * reaches the set after the delete is refused (-2: no registration), and the
 * deleted sale's log is not created again: a new sale under the id starts with
 * no registrations, also after a restart. */
static void test_registration_after_delete(void **state)
{
    (void)state;
    mini_t m;
    gw_fair_sale_t *fs = mini_open(&m);
    assert_int_equal(reg(&m, fs, "P-a"), 1);
    char path[128], why[256] = "";
    reg_path(&m, path, sizeof(path));
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(gw_fair_sale_deleted(&m.srv, "s1", false, why, sizeof(why)), 0);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(reg(&m, fs, "P-late"), GW_REG_GONE);
    assert_int_equal(access(path, F_OK), -1); /* no log left behind */
    /* the sale again under its id, with registration: nobody registered */
    int64_t now = cm_wall_ms();
    assert_int_equal(gw_fair_configure(&m.srv, "s1", 1000, 0, 0, why, sizeof(why)), 0);
    assert_int_equal(gw_reg_configure(&m.srv, "s1", now - 1000, now + 3600000, why, sizeof(why)),
                     0);
    fs = mini_restart(&m);
    long long n = -1;
    assert_int_equal(gw_reg_count(&m.srv, "s1", &n, why, sizeof(why)), 0);
    assert_int_equal(n, 0);
    assert_int_equal(reg(&m, fs, "P-late"), 1);
    mini_close(&m);
}

/* spool.durability fsync: a new person's answer is held (*sync) until the
 * log's fdatasync through its record (gw_reg_sync gives it); a person found
 * while the log holds bytes no fdatasync covered waits for one too (a 200 as
 * durable as the 201), and once one covered them is answered at once. */
static void test_fsync_answer_waits_for_the_sync(void **state)
{
    (void)state;
    mini_t m;
    gw_fair_sale_t *fs = mini_open(&m);
    m.cfg.durability = GW_DURABILITY_FSYNC;
    char why[256] = "";
    bool sync = false;
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ADDED);
    assert_true(sync); /* written, not answered */
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ALREADY);
    assert_true(sync); /* found, but its record is not durable yet */
    assert_int_equal(gw_reg_sync(&m.srv, "s1", GW_REG_ADDED), GW_REG_ADDED);
    assert_int_equal(gw_reg_sync(&m.srv, "s1", GW_REG_ALREADY), GW_REG_ALREADY);
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ALREADY);
    assert_false(sync); /* covered: answered now */
    m.cfg.durability = GW_DURABILITY_WRITE;
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-b", &sync, why, sizeof(why)), GW_REG_ADDED);
    assert_false(sync); /* write durability: the write is the answer */
    fs = mini_restart(&m);
    char list[256];
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a,P-b");
    (void)fs;
    mini_close(&m);
}

static int failing_datasync(int fd)
{
    (void)fd;
    errno = EIO;
    return -1;
}

/* A failed fdatasync answers the registrations it was for with CM_EIO (503),
 * and only those: the next sync runs an fdatasync of its own, so a person
 * found after a disk's passing failure is answered 200 once it succeeds. */
static void test_failed_sync(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m);
    m.cfg.durability = GW_DURABILITY_FSYNC;
    char why[256] = "";
    bool sync = false;
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ADDED);
    assert_true(sync);
    cm_journal__datasync = failing_datasync;
    assert_int_equal(gw_reg_sync(&m.srv, "s1", GW_REG_ADDED), CM_EIO);
    cm_journal__datasync = fdatasync;
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ALREADY);
    assert_true(sync); /* in the set, not yet covered */
    assert_int_equal(gw_reg_sync(&m.srv, "s1", GW_REG_ALREADY), GW_REG_ALREADY);
    mini_close(&m);
}

static int datasync_fails; /* fdatasyncs failing_once still fails */

static int failing_once(int fd)
{
    if (datasync_fails > 0) {
        datasync_fails--;
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static ino_t reg_ino(const mini_t *m)
{
    char path[128];
    struct stat st;
    reg_path(m, path, sizeof(path));
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

/* person registered (201) and its record synced. */
static void reg_synced(mini_t *m, const char *person)
{
    char why[256] = "";
    bool sync = false;
    assert_int_equal(gw_reg_add(&m->srv, "s1", person, &sync, why, sizeof(why)), GW_REG_ADDED);
    assert_int_equal(gw_reg_sync(&m->srv, "s1", GW_REG_ADDED), GW_REG_ADDED);
}

/* spool.durability fsync: a start writes the log it read again (a new file,
 * fdatasync'd, renamed over it, the directory fsync'd), never an fdatasync in
 * place: a failed fdatasync of the process before may have dropped pages the
 * page cache still shows, which a later fdatasync does not write back, and
 * a person found in them is answered 200 at once. A failed try is tried again
 * (a new file). */
static void test_fsync_load_rewrites(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m);
    m.cfg.durability = GW_DURABILITY_FSYNC;
    char why[256] = "", list[256];
    bool sync = false;
    reg_synced(&m, "P-a");
    reg_synced(&m, "P-b");
    ino_t before = reg_ino(&m);
    mini_restart(&m);
    ino_t after = reg_ino(&m);
    assert_true(after != before); /* a new file under the name */
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a,P-b");
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ALREADY);
    assert_false(sync); /* durable: answered at once */
    datasync_fails = 1; /* the first try's fdatasync fails: tried again */
    cm_journal__datasync = failing_once;
    mini_restart(&m);
    cm_journal__datasync = fdatasync;
    assert_int_equal(datasync_fails, 0);
    assert_true(reg_ino(&m) != after);
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a,P-b");
    mini_close(&m);
}

/* spool.durability fsync: a start whose every try to write the log again
 * fails (the disk still failing) knows nothing it read to be durable: a
 * person found in it is not answered 200 until a sync wrote the log again (a
 * new file), though no new record was appended since. */
static void test_fsync_load_rewrite_fails(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m);
    m.cfg.durability = GW_DURABILITY_FSYNC;
    char why[256] = "", list[256];
    bool sync = false;
    reg_synced(&m, "P-a");
    datasync_fails = 1000; /* every try of the start's rewrite */
    cm_journal__datasync = failing_once;
    mini_restart(&m);
    datasync_fails = 0;
    cm_journal__datasync = fdatasync;
    ino_t loaded = reg_ino(&m);
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ALREADY);
    assert_true(sync); /* not answered from what the failed start read */
    assert_int_equal(gw_reg_sync(&m.srv, "s1", GW_REG_ALREADY), GW_REG_ALREADY);
    assert_true(reg_ino(&m) != loaded); /* written again, not only fdatasync'd */
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ALREADY);
    assert_false(sync);
    mini_restart(&m);
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a");
    mini_close(&m);
}

/* A failed fdatasync, then one that succeeds (another person's): the second
 * does not write what the first dropped (Linux marks a failed writeback's
 * pages clean), so the person whose record it was is answered 200 only once
 * the log was written again from the set, a new file. */
static void test_failed_sync_then_another(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m);
    m.cfg.durability = GW_DURABILITY_FSYNC;
    char why[256] = "", path[300];
    bool sync = false;
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ADDED);
    cm_journal__datasync = failing_datasync;
    assert_int_equal(gw_reg_sync(&m.srv, "s1", GW_REG_ADDED), CM_EIO);
    cm_journal__datasync = fdatasync;
    snprintf(path, sizeof(path), "%s/fair/s1.reg", m.dir);
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    reg_synced(&m, "P-b");
    assert_int_equal(stat(path, &after), 0);
    assert_true(after.st_ino != before.st_ino); /* written again, not only fdatasync'd */
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ALREADY);
    assert_false(sync); /* covered by the rewrite's fdatasync */
    mini_restart(&m);
    char list[256];
    exported(&m, list, sizeof(list));
    assert_string_equal(list, "P-a,P-b");
    mini_close(&m);
}

/* What the public route asks by sale id (gw_fair_routes.c): the window of a
 * sale that takes registrations, and a registration's outcome; a sale
 * without registration, or deleted, has no window and registers nobody. */
static void test_route_calls(void **state)
{
    (void)state;
    mini_t m;
    gw_fair_sale_t *fs = mini_open(&m);
    m.cfg.max_registrations = 2; /* the cap is the sale's machine's, from the server's */
    gw_fair__sale_terms(fs);
    int64_t o = 0, c = 0;
    assert_true(gw_reg_window(&m.srv, "s1", &o, &c));
    assert_true(o > 0 && c > o);
    assert_false(gw_reg_window(&m.srv, "s2", &o, &c));
    char why[256] = "";
    bool sync = false;
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ADDED);
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-a", &sync, why, sizeof(why)), GW_REG_ALREADY);
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-b", &sync, why, sizeof(why)), GW_REG_ADDED);
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-c", &sync, why, sizeof(why)), GW_REG_FULL);
    assert_int_equal(gw_reg_add(&m.srv, "s2", "P-a", &sync, why, sizeof(why)), GW_REG_GONE);
    assert_int_equal(gw_fair_sale_deleted(&m.srv, "s1", false, why, sizeof(why)), 0);
    assert_false(gw_reg_window(&m.srv, "s1", &o, &c));
    assert_int_equal(gw_reg_add(&m.srv, "s1", "P-d", &sync, why, sizeof(why)), GW_REG_GONE);
    mini_close(&m);
}

/* A deleted sale's entry log and registrations are removed with their directory fsync'd
 * before the delete answers: fair.json, saved after them in another directory, says the
 * lottery is gone, and a power cut that kept it but brought an unlinked file's name back
 * would load the deleted lottery's entries (or persons) into a sale created again under the
 * id (the simulator's fleet world, seed 123 --fairfleet, docs/simulation.md). */
static void test_delete_removes_durably(void **state)
{
    (void)state;
    mini_t m;
    gw_fair_sale_t *fs = mini_open(&m);
    assert_int_equal(reg(&m, fs, "P-a"), 1);
    ts_jrec_start();
    char why[256] = "", log[128], regp[128];
    assert_int_equal(gw_fair_sale_deleted(&m.srv, "s1", false, why, sizeof(why)), 0);
    cm_journal_set_fs(NULL);
    snprintf(log, sizeof(log), "%s/fair/s1.log", m.dir);
    reg_path(&m, regp, sizeof(regp));
    assert_true(ts_jrec_removed_durably(log));
    assert_true(ts_jrec_removed_durably(regp));
    mini_close(&m);
}

/* fair.json made unwritable: a directory stands at its name, so the save's rename fails. */
static void conf_block(const mini_t *m, bool on)
{
    char path[128], inner[160];
    snprintf(path, sizeof(path), "%s/fair.json", m->dir);
    snprintf(inner, sizeof(inner), "%s/x", path);
    if (on) {
        assert_int_equal(unlink(path), 0);
        assert_int_equal(mkdir(path, 0700), 0);
        assert_int_equal(mkdir(inner, 0700), 0);
    } else {
        assert_int_equal(rmdir(inner), 0);
        assert_int_equal(rmdir(path), 0);
    }
}

/* A PUT whose save of fair.json failed is answered with an error and retried, as the
 * admin API tells the operator; the retry finds its change already applied in memory,
 * and must still save it, or a restart forgets the lottery and the registration window. */
static void test_conf_save_failed_then_retried(void **state)
{
    (void)state;
    mini_t m;
    (void)mini_open(&m);
    char why[256] = "";
    int64_t now = cm_wall_ms();
    conf_block(&m, true);
    assert_int_equal(gw_fair_configure(&m.srv, "s2", 2000, 0, 0, why, sizeof(why)), CM_EIO);
    assert_int_equal(gw_reg_configure(&m.srv, "s1", now - 5000, now + 7200000, why, sizeof(why)),
                     CM_EIO);
    conf_block(&m, false);
    assert_int_equal(gw_fair_configure(&m.srv, "s2", 2000, 0, 0, why, sizeof(why)), 0);
    assert_int_equal(gw_reg_configure(&m.srv, "s1", now - 5000, now + 7200000, why, sizeof(why)),
                     0);
    (void)mini_restart(&m);
    assert_non_null(gw_fair__slot_find(m.srv.fair, "s2"));
    int64_t w = 0, e = 0, opens = 0, closes = 0;
    gw_fair_conf_get(m.srv.fair, "s2", &w, &e);
    assert_int_equal(w, 2000);
    gw_reg_conf_get(&m.srv, "s1", &opens, &closes);
    assert_int_equal(opens, now - 5000);
    assert_int_equal(closes, now + 7200000);
    mini_close(&m);
}

int main(void)
{
    cm_log_set_level(CM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phase_edges),
        cmocka_unit_test(test_window_check),
        cmocka_unit_test(test_pages_complete),
        cmocka_unit_test(test_torn_line_cut_at_start),
        cmocka_unit_test(test_torn_line_cut_at_reopen),
        cmocka_unit_test(test_overlong_line_skipped),
        cmocka_unit_test(test_own_hash_key),
        cmocka_unit_test(test_registration_after_delete),
        cmocka_unit_test(test_route_calls),
        cmocka_unit_test(test_fsync_answer_waits_for_the_sync),
        cmocka_unit_test(test_failed_sync_then_another),
        cmocka_unit_test(test_failed_sync),
        cmocka_unit_test(test_fsync_load_rewrites),
        cmocka_unit_test(test_fsync_load_rewrite_fails),
        cmocka_unit_test(test_delete_removes_durably),
        cmocka_unit_test(test_conf_save_failed_then_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
