/*
 * The real journal (common/cm_journal.h) on the simulated disk
 * (sim/sim_journal_fs.h, sim/sim_disk.h), as the room's world runs it: a
 * power loss keeps the frames a sync reported and at most whole frames of
 * the unsynced tail (a torn one is cut); a failed fdatasync's frames are a
 * hole of zeros after a power loss, skipped to the synced frames after it,
 * and, its pages evicted, read back as that hole before any power loss;
 * a compaction's file replaces the journal on the same disk; a line log is
 * upgraded through the table; a state file is read and removed through it
 * (the removal synced: a power loss does not bring the file back). Over many
 * disk seeds (the torn tail's cut).
 */
#include "common/cm_journal.h"

#include "common/cm_err.h"
#include "common/cm_rand.h"
#include "sim/sim_disk.h"
#include "sim/sim_journal_fs.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define PATH "sim/j.room"

typedef struct got {
    char rec[8][32];
    int n;
} got_t;

static void collect(void *arg, char *rec, size_t len)
{
    got_t *g = arg;
    if (g->n < 8)
        snprintf(g->rec[g->n], sizeof(g->rec[0]), "%.*s", (int)len, rec);
    g->n++;
}

/* A new process opens the journal: its records. */
static got_t reopen(cm_journal_t *j)
{
    got_t g = {0};
    char why[128];
    assert_int_equal(cm_journal_open(j, PATH, 0, collect, &g, why, sizeof(why)), 0);
    return g;
}

static int setup(void **state)
{
    (void)state;
    cm_journal_set_fs(sim_journal_fs());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cm_journal_set_fs(NULL);
    return 0;
}

static void test_power_loss_keeps_synced(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        cm_rand_t rng;
        cm_rand_seed(&rng, seed);
        sim_disk_t *d = sim_disk_new(&rng);
        sim_disk_use(d);
        cm_journal_t j;
        got_t g = reopen(&j);
        assert_int_equal(g.n, 0);
        off_t a, b;
        assert_int_equal(cm_journal_put(&j, "A", 1, &a), 0);
        assert_int_equal(cm_journal_sync_to(&j, a), 0);
        assert_true(cm_journal_durable(&j, a));
        assert_int_equal(cm_journal_put(&j, "B-unsynced", 10, &b), 0);
        assert_false(cm_journal_durable(&j, b));
        sim_disk_power_loss(d);
        cm_journal_discard(&j); /* its descriptor died with the process */
        g = reopen(&j);
        /* A, and B only if the disk kept all of it (a torn B is cut off) */
        assert_true(g.n == 1 || g.n == 2);
        assert_string_equal(g.rec[0], "A");
        if (g.n == 2)
            assert_string_equal(g.rec[1], "B-unsynced");
        off_t len;
        cm_journal_lens(&j, &len, NULL, NULL);
        assert_int_equal(len, g.n == 1 ? a : b);
        cm_journal_discard(&j);
        sim_disk_free(d);
    }
}

static void test_failed_sync_is_a_hole(void **state)
{
    (void)state;
    cm_rand_t rng;
    cm_rand_seed(&rng, 7);
    sim_disk_t *d = sim_disk_new(&rng);
    sim_disk_use(d);
    cm_journal_t j;
    reopen(&j);
    off_t a, c, e;
    assert_int_equal(cm_journal_put(&j, "A", 1, &a), 0);
    assert_int_equal(cm_journal_sync_to(&j, a), 0);
    assert_int_equal(cm_journal_put(&j, "C-dropped", 9, &c), 0);
    sim_disk_set_faults(d, 1.0, 0); /* every fsync fails: C's pages are dropped */
    assert_int_equal(cm_journal_sync_to(&j, c), CM_EIO);
    sim_disk_set_faults(d, 0, 0);
    assert_int_equal(cm_journal_put(&j, "E", 1, &e), 0);
    assert_int_equal(cm_journal_sync_to(&j, e), CM_EIO); /* dropped: refused until a rewrite */
    assert_int_equal(cm_journal_fs()->fdatasync(j.fd), 0); /* the disk's own: E lands past C */
    sim_disk_power_loss(d);
    cm_journal_discard(&j);
    got_t g = reopen(&j);
    assert_int_equal(g.n, 2); /* C's zeros skipped to E */
    assert_string_equal(g.rec[0], "A");
    assert_string_equal(g.rec[1], "E");
    cm_journal_discard(&j);
    sim_disk_free(d);
}

/* A failed fdatasync's pages evicted (in some seeds, some operations later):
 * the page cache then reads the disk's zeros where they were, in this process
 * and after a kill -9; the frames synced before and appended after read back
 * whole. A rewrite that reads them back refuses; one that does not (no
 * eviction) makes them durable. */
static void test_failed_sync_pages_evicted(void **state)
{
    (void)state;
    int evicted = 0, kept = 0;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        cm_rand_t rng;
        cm_rand_seed(&rng, seed);
        sim_disk_t *d = sim_disk_new(&rng);
        sim_disk_use(d);
        sim_disk_set_evict(d, SIM_EVICT_JOURNALS);
        cm_journal_t j;
        reopen(&j);
        off_t a, c, e;
        assert_int_equal(cm_journal_put(&j, "A", 1, &a), 0);
        assert_int_equal(cm_journal_sync_to(&j, a), 0);
        assert_int_equal(cm_journal_put(&j, "C-dropped", 9, &c), 0);
        sim_disk_set_faults(d, 1.0, 0);
        assert_int_equal(cm_journal_sync_to(&j, c), CM_EIO);
        sim_disk_set_faults(d, 0, 0);
        assert_int_equal(cm_journal_put(&j, "E", 1, &e), 0);
        struct stat st;
        for (int i = 0; i < 300; i++) /* past any eviction's time */
            assert_int_equal(cm_journal_fs()->fstat(j.fd, &st), 0);
        char buf[64];
        assert_int_equal(cm_journal_fs()->pread(j.fd, buf, (size_t)(c - a), a), c - a);
        bool gone = buf[0] == '\0';
        if (gone) {
            for (off_t i = 0; i < c - a; i++)
                assert_int_equal(buf[i], '\0');
            evicted++;
        } else {
            assert_memory_equal(buf + CM_JOURNAL_FRAME_OVERHEAD - 1, "C-dropped", 9);
            kept++;
        }
        sim_disk_stats_t ds;
        sim_disk_stats(d, &ds);
        assert_int_equal(ds.evictions, gone ? 1 : 0);
        assert_int_equal(cm_journal_rewrite(&j), gone ? CM_EIO : 0);
        assert_int_equal(cm_journal_dropped(&j), gone);
        sim_disk_crash(d); /* kill -9: the page cache, as evicted, stays */
        cm_journal_discard(&j);
        got_t g = reopen(&j);
        assert_int_equal(g.n, gone ? 2 : 3);
        assert_string_equal(g.rec[0], "A");
        assert_string_equal(g.rec[g.n - 1], "E");
        cm_journal_discard(&j);
        sim_disk_free(d);
    }
    assert_true(evicted > 5 && kept > 5);
}

static void test_compaction_on_the_disk(void **state)
{
    (void)state;
    cm_rand_t rng;
    cm_rand_seed(&rng, 11);
    sim_disk_t *d = sim_disk_new(&rng);
    sim_disk_use(d);
    cm_journal_t j;
    reopen(&j);
    off_t end;
    for (int i = 0; i < 5; i++)
        assert_int_equal(cm_journal_put(&j, "old", 3, &end), 0);
    cm_journal_buf_t img = {0};
    assert_int_equal(cm_journal_buf_add(&img, "state", 5), 0);
    assert_int_equal(cm_journal_compact_from(&j, &img, end), 0);
    assert_int_equal(cm_journal_put(&j, "after", 5, &end), 0);
    assert_int_equal(cm_journal_sync_to(&j, end), 0);
    cm_journal_buf_free(&img);
    sim_disk_power_loss(d);
    cm_journal_discard(&j);
    got_t g = reopen(&j);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.rec[0], "state");
    assert_string_equal(g.rec[1], "after");
    cm_journal_discard(&j);
    sim_disk_free(d);
}

static void test_upgrade_through_the_table(void **state)
{
    (void)state;
    cm_rand_t rng;
    cm_rand_seed(&rng, 13);
    sim_disk_t *d = sim_disk_new(&rng);
    sim_disk_use(d);
    const cm_journal_fs_t *fs = sim_journal_fs();
    int fd = fs->open(PATH, O_RDWR | O_CREAT | O_APPEND, 0644);
    assert_true(fd >= 0);
    assert_int_equal(cm_journal_write_all(fd, "one\ntwo\ntor", 11), 0);
    fs->close(fd);
    size_t n = 0;
    assert_int_equal(cm_journal_upgrade_lines(PATH, &n), 1);
    assert_int_equal(n, 2);
    cm_journal_t j;
    got_t g = {0};
    char why[128];
    assert_int_equal(cm_journal_open(&j, PATH, 0, collect, &g, why, sizeof(why)), 0);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.rec[0], "one");
    assert_string_equal(g.rec[1], "two");
    cm_journal_discard(&j);
    sim_disk_free(d);
}

static void test_state_file_read_and_removed(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 50; seed++) {
        cm_rand_t rng;
        cm_rand_seed(&rng, seed);
        sim_disk_t *d = sim_disk_new(&rng);
        sim_disk_use(d);
        char *buf = NULL;
        size_t n = 1;
        assert_int_equal(cm_journal_mkdir("sim", 0755), 0); /* the disk's one directory */
        assert_int_equal(cm_journal_read_file("sim/fair.json", &buf, &n), CM_ENOTFOUND);
        assert_null(buf);
        assert_int_equal(n, 0);
        assert_int_equal(cm_journal_replace_file("sim/fair.json", "{\"a\":1}", 7, 0600), 0);
        assert_int_equal(cm_journal_replace_file("sim/b.log", "b", 1, 0644), 0);
        sim_disk_power_loss(d); /* both synced, the file and its name */
        assert_int_equal(cm_journal_read_file("sim/fair.json", &buf, &n), 0);
        assert_int_equal(n, 7);
        assert_string_equal(buf, "{\"a\":1}");
        free(buf);
        /* removed with cm_journal_remove: gone after a power loss too; a plain unlink's name
         * comes back */
        assert_int_equal(cm_journal_remove("sim/fair.json"), 0);
        assert_int_equal(sim_journal_fs()->unlink("sim/b.log"), 0);
        assert_int_equal(cm_journal_read_file("sim/b.log", &buf, &n), CM_ENOTFOUND);
        sim_disk_power_loss(d);
        assert_int_equal(cm_journal_read_file("sim/fair.json", &buf, &n), CM_ENOTFOUND);
        assert_int_equal(cm_journal_read_file("sim/b.log", &buf, &n), 0);
        assert_int_equal(n, 1);
        free(buf);
        assert_int_equal(cm_journal_remove("sim/fair.json"), 0); /* none: removed */
        /* a dead process reads nothing */
        sim_disk_kill(d);
        assert_int_equal(cm_journal_read_file("sim/b.log", &buf, &n), CM_EIO);
        assert_int_equal(cm_journal_remove("sim/b.log"), CM_EIO);
        sim_disk_free(d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_power_loss_keeps_synced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_is_a_hole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_pages_evicted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_on_the_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_through_the_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_file_read_and_removed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
