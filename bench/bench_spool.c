/*
 * Spool append throughput and the cost of a segment roll (make bench runs it
 * through bench/bench.py; alone: build/flashgate-bench-spool [reps [segment MiB]]).
 *
 * Write durability, ~200 B order records, 1 and 2 appending threads, small
 * segments (8 MiB, argv[2] MiB) so that a run rolls often: appends/s (median of reps), and the
 * slowest single append of the run next to the median one, which shows what a
 * roll costs the appender (with the spare segment made ahead it is a swap of
 * file descriptors, not a create plus a directory fsync under the spool's
 * mutex on a worker loop). Prints rolls and rolls_inline (rolls that
 * had to wait for a segment to be created because appends outran the spool's
 * preparer thread).
 *
 * Then the group commit, fsync durability: 1, 4 and 16 threads, each appending
 * one order and calling oq_spool_sync before the next (a worker's answer waits
 * for it), SYNC_N appends in all: durable appends/s, fdatasync rounds per
 * sync (how many syncs one round answered), and the sync's median and p99
 * latency. The disk sets the round's length; the figures to compare between
 * builds are rounds per sync and appends/s side by side on one machine.
 */
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "queue/oq_spool.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { N = 400000, MAX_THREADS = 2, SYNC_N = 1600 };
static uint64_t g_seg_bytes = 8u << 20;

typedef struct {
    oq_spool_t *sp;
    int n;
    uint64_t max_ns;
    uint64_t *lat; /* per append, ns */
} arg_t;

static void make_order(oq_order_t *o, uint64_t i)
{
    memset(o, 0, sizeof(*o));
    cm_id_format(i * 7919 + 1, o->order_id);
    snprintf(o->sale_id, sizeof(o->sale_id), "bench-sale");
    snprintf(o->user_id, sizeof(o->user_id), "user-%08llu", (unsigned long long)i);
    o->qty = 1;
    o->accepted_at_ms = 1700000000000 + (int64_t)i;
    o->node_id = 7;
}

static void *worker(void *p)
{
    arg_t *a = p;
    oq_order_t o;
    make_order(&o, 12345);
    for (int i = 0; i < a->n; i++) {
        uint64_t t0 = cm_mono_ns();
        if (oq_spool_append(a->sp, &o, 1) != 0)
            abort();
        uint64_t d = cm_mono_ns() - t0;
        a->lat[i] = d;
        if (d > a->max_ns)
            a->max_ns = d;
    }
    return NULL;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

typedef struct {
    double rate, p50_us, p999_us, max_us;
    uint64_t rolls, rolls_inline;
} run_t;

static run_t run_once(int threads)
{
    char dir[64] = "/tmp/fg-bench-spool-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    char sdir[96];
    snprintf(sdir, sizeof(sdir), "%s/spool", dir);
    oq_spool_opts_t o = {.dir = sdir, .segment_bytes = g_seg_bytes};
    oq_spool_t *sp;
    char err[256];
    if (oq_spool_open(&sp, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench-spool: %s\n", err);
        exit(1);
    }
    pthread_t th[MAX_THREADS];
    arg_t a[MAX_THREADS];
    uint64_t *lat = calloc(N, sizeof(uint64_t));
    int per = N / threads;
    uint64_t t0 = cm_mono_us();
    for (int t = 0; t < threads; t++) {
        a[t] = (arg_t){sp, per, 0, lat + (size_t)t * per};
        pthread_create(&th[t], NULL, worker, &a[t]);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    uint64_t us = cm_mono_us() - t0;
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    oq_spool_close(sp);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    size_t n = (size_t)per * threads;
    qsort(lat, n, sizeof(uint64_t), cmp_u64);
    run_t r = {.rate = (double)n * 1e6 / (double)(us ? us : 1),
               .p50_us = lat[n / 2] / 1e3,
               .p999_us = lat[n - n / 1000 - 1] / 1e3,
               .max_us = lat[n - 1] / 1e3,
               .rolls = st.rolls,
               .rolls_inline = st.rolls_inline};
    free(lat);
    return r;
}

static int cmp_d(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return v[n / 2];
}

/*---- group commit (fsync durability) ----*/

typedef struct {
    oq_spool_t *sp;
    int n;
    uint64_t *lat; /* per sync, ns */
} sync_arg_t;

static void *sync_worker(void *p)
{
    sync_arg_t *a = p;
    oq_order_t o;
    make_order(&o, 4242);
    for (int i = 0; i < a->n; i++) {
        if (oq_spool_append(a->sp, &o, 1) != 0)
            abort();
        uint64_t t0 = cm_mono_ns();
        if (oq_spool_sync(a->sp) != 0)
            abort();
        a->lat[i] = cm_mono_ns() - t0;
    }
    return NULL;
}

typedef struct {
    double rate, rounds_per_sync, p50_us, p99_us;
} sync_run_t;

static sync_run_t sync_once(int threads)
{
    char dir[64] = "/tmp/fg-bench-spool-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    char sdir[96];
    snprintf(sdir, sizeof(sdir), "%s/spool", dir);
    oq_spool_opts_t o = {.dir = sdir, .durability = OQ_DURABILITY_FSYNC,
                         .segment_bytes = g_seg_bytes};
    oq_spool_t *sp;
    char err[256];
    if (oq_spool_open(&sp, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench-spool: %s\n", err);
        exit(1);
    }
    oq_spool_stats_t st0, st;
    oq_spool_stats(sp, &st0); /* the open's own fdatasync round */
    pthread_t th[16];
    sync_arg_t a[16];
    int per = SYNC_N / threads;
    uint64_t *lat = calloc(SYNC_N, sizeof(uint64_t));
    uint64_t t0 = cm_mono_us();
    for (int t = 0; t < threads; t++) {
        a[t] = (sync_arg_t){sp, per, lat + (size_t)t * per};
        pthread_create(&th[t], NULL, sync_worker, &a[t]);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    uint64_t us = cm_mono_us() - t0;
    oq_spool_stats(sp, &st);
    oq_spool_close(sp);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    size_t n = (size_t)per * threads;
    qsort(lat, n, sizeof(uint64_t), cmp_u64);
    sync_run_t r = {.rate = (double)n * 1e6 / (double)(us ? us : 1),
                    .rounds_per_sync = (double)(st.fsyncs - st0.fsyncs) / (double)n,
                    .p50_us = lat[n / 2] / 1e3,
                    .p99_us = lat[n - n / 100 - 1] / 1e3};
    free(lat);
    return r;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 3;
    if (reps < 1 || reps > 50)
        reps = 3;
    if (argc > 2 && atoi(argv[2]) > 0)
        g_seg_bytes = (uint64_t)atoi(argv[2]) << 20;
    cm_log_set_level(CM_LOG_ERROR);
    printf("spool append, write durability, ~200 B records, %llu MiB segments, %d appends per "
           "run, median of %d runs (rolls summed over the runs)\n",
           (unsigned long long)(g_seg_bytes >> 20), N, reps);
    printf("%-8s %12s %10s %11s %10s %7s %13s\n", "threads", "appends/s", "p50 us",
           "p99.9 us", "max us", "rolls", "rolls_inline");
    for (int threads = 1; threads <= MAX_THREADS; threads++) {
        double rate[50], p50[50], p999[50], mx[50];
        uint64_t rolls = 0, inl = 0;
        for (int i = 0; i < reps; i++) {
            run_t r = run_once(threads);
            rate[i] = r.rate;
            p50[i] = r.p50_us;
            p999[i] = r.p999_us;
            mx[i] = r.max_us;
            rolls += r.rolls;
            inl += r.rolls_inline;
        }
        printf("%-8d %12.0f %10.2f %11.2f %10.1f %7llu %13llu\n", threads, median(rate, reps),
               median(p50, reps), median(p999, reps), median(mx, reps),
               (unsigned long long)rolls, (unsigned long long)inl);
    }
    printf("\ngroup commit, fsync durability: append + oq_spool_sync per order, %d in all, "
           "median of %d runs\n",
           SYNC_N, reps);
    printf("%-8s %12s %15s %10s %10s\n", "threads", "appends/s", "rounds/sync", "p50 us",
           "p99 us");
    static const int sync_threads[] = {1, 4, 16};
    for (size_t k = 0; k < sizeof(sync_threads) / sizeof(sync_threads[0]); k++) {
        double rate[50], rps[50], p50[50], p99[50];
        for (int i = 0; i < reps; i++) {
            sync_run_t r = sync_once(sync_threads[k]);
            rate[i] = r.rate;
            rps[i] = r.rounds_per_sync;
            p50[i] = r.p50_us;
            p99[i] = r.p99_us;
        }
        printf("%-8d %12.0f %15.3f %10.1f %10.1f\n", sync_threads[k], median(rate, reps),
               median(rps, reps), median(p50, reps), median(p99, reps));
    }
    return 0;
}
