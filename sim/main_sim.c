/*
 * flashgate-sim: runs the deterministic simulation (docs/simulation.md).
 *
 *   flashgate-sim --seed N [--trace]       one seed (a failing seed's reproducer)
 *   flashgate-sim --seeds N [--seed S]     seeds S..S+N-1
 *   flashgate-sim --seconds T | --minutes M   seeds until the time is up
 *   flashgate-sim --seed-file FILE         every seed listed (regression seeds)
 *   --fsync-only: every seed in durability fsync (else the seed draws it:
 *   fsync two times in three, write otherwise)
 *   --no-stops: no graceful stops (every kill a crash), and the draws of a
 *   simulator without them: a regression seed found before stops existed
 *   replays the path that found its defect (sim/seeds.txt)
 *   --fleet: only the fleet path (sim_fleet.h: gateways of the real Redis
 *   backend on a simulated Redis); --no-fleet: never it (else every seed
 *   divisible by 8 runs it too, after the sale's world)
 *   --redis: every gateway of the sale's world on the Redis inventory (the
 *   real backend on a simulated Redis, sim_redis.h); --no-redis: every one
 *   on the memory inventory (else seeds 28 mod 32 draw Redis per gateway)
 *   --fair: only registration and the leftovers (sim_fair.h); --no-fair:
 *   never them (else every seed runs them too, after the sale's world)
 *   --fairfleet: only the fleet's fairness (sim_fairfleet.h: three gateways'
 *   lottery and registration on the Redis store, a simulated Redis);
 *   --no-fairfleet: never it (else seeds 5 mod 16 run it too, after the rest)
 *   FLASHGATE_SIM_LOG set: the product's own log lines on stderr (off
 *   otherwise: the faults make them by the thousand)
 *   --open-defects, --evict-logs: accepted and ignored (every file's pages a
 *   failed fdatasync dropped evict by default since: docs/simulation.md,
 *   "Evicted pages"), so that an older reproduce line or seed file still runs
 *   flashgate-sim --plant NAME --seeds N --expect-fail
 *                                          plant build: exit 0 iff a seed fails
 *
 * Exit status: 0 when every seed kept every promise (or, with --expect-fail,
 * when one broke one), 1 otherwise, 2 on a usage error.
 */
#include "common/cm_alloc.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_time.h"
#include "sim/sim_fair.h"
#include "sim/sim_fairfleet.h"
#include "sim/sim_fleet.h"
#include "sim/sim_world.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The seeds that also run the fleet's fairness (sim_fairfleet.h): its three
 * gateways' real fairness is the simulator's dearest world, so a sample of
 * seeds runs it; docs/simulation.md gives the batch's time with it. */
#define FAIRFLEET_EVERY 16
#define FAIRFLEET_AT 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: flashgate-sim [--seed N] [--seeds N] [--seconds T | --minutes M]\n"
                    "                     [--seed-file FILE] [--steps K] [--trace] [--fsync-only] "
                    "[--no-stops]\n"
                    "                     [--fleet | --no-fleet]\n"
                    "                     [--redis | --no-redis]\n"
                    "                     [--fair | --no-fair] [--fairfleet | --no-fairfleet]\n"
                    "                     [--plant NAME [--expect-fail]] [--list-plants]\n");
}

/* Runs another world on the same seed: its verdict replaces r's, its counts add up. */
static void also_run(void (*run)(const sim_opts_t *, sim_result_t *), const sim_opts_t *o,
                     sim_result_t *r)
{
    sim_result_t rf;
    run(o, &rf);
    r->ok = rf.ok;
    memcpy(r->why, rf.why, sizeof(r->why));
    r->steps += rf.steps;
    r->crashes += rf.crashes;
    r->power_losses += rf.power_losses;
    r->stops += rf.stops;
    r->fsync_fails += rf.fsync_fails;
    r->evictions += rf.evictions;
    r->torn_writes += rf.torn_writes;
    r->accepted += rf.accepted;
}

int main(int argc, char **argv)
{
    uint64_t seed = 1, nseeds = 1, steps = 4000;
    double seconds = 0;
    bool trace = false, expect_fail = false, seed_given = false, fsync_only = false;
    bool no_stops = false;
    int fleet = 0; /* 0: every 8th seed runs the fleet path too; 1: only it; -1: never */
    /* 0: seeds FAIRFLEET_AT mod FAIRFLEET_EVERY run the fleet's fairness too; 1: only it */
    int fairfleet = 0;
    int redis = 0; /* 0: seeds 28 mod 32 draw Redis gateways; 1: every gateway; -1: none */
    int fair = 0;  /* 0: every seed runs registration and the leftovers too; 1: only; -1: never */
    const char *seed_file = NULL, *plant = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a == NULL)
            break;
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--seed") && v) {
            seed = strtoull(v, NULL, 0);
            seed_given = true;
            i++;
        } else if (!strcmp(a, "--seeds") && v) {
            nseeds = strtoull(v, NULL, 0);
            i++;
        } else if (!strcmp(a, "--seconds") && v) {
            seconds = atof(v);
            i++;
        } else if (!strcmp(a, "--minutes") && v) {
            seconds = atof(v) * 60;
            i++;
        } else if (!strcmp(a, "--steps") && v) {
            steps = strtoull(v, NULL, 0);
            i++;
        } else if (!strcmp(a, "--seed-file") && v) {
            seed_file = v;
            i++;
        } else if (!strcmp(a, "--plant") && v) {
            plant = v;
            i++;
        } else if (!strcmp(a, "--fsync-only")) {
            fsync_only = true;
        } else if (!strcmp(a, "--no-stops")) {
            no_stops = true;
        } else if (!strcmp(a, "--fleet")) {
            fleet = 1;
        } else if (!strcmp(a, "--no-fleet")) {
            fleet = -1;
        } else if (!strcmp(a, "--fairfleet")) {
            fairfleet = 1;
        } else if (!strcmp(a, "--no-fairfleet")) {
            fairfleet = -1;
        } else if (!strcmp(a, "--fair")) {
            fair = 1;
        } else if (!strcmp(a, "--no-fair")) {
            fair = -1;
        } else if (!strcmp(a, "--redis")) {
            redis = 1;
        } else if (!strcmp(a, "--no-redis")) {
            redis = -1;
        } else if (!strcmp(a, "--open-defects") || !strcmp(a, "--evict-logs")) {
            /* every file evicts by default since (docs/simulation.md, "Evicted pages") */
        } else if (!strcmp(a, "--trace")) {
            trace = true;
        } else if (!strcmp(a, "--expect-fail")) {
            expect_fail = true;
        } else if (!strcmp(a, "--list-plants")) {
#ifdef FLASHGATE_PLANTS
            for (int p = 1; p < CM_PLANT_COUNT; p++)
                printf("%s\n", cm_plant_names[p]);
            return 0;
#else
            fprintf(stderr, "flashgate-sim: not a plant build (cmake -DFLASHGATE_PLANTS=ON)\n");
            return 2;
#endif
        } else {
            usage();
            return 2;
        }
    }
    if (plant) {
#ifdef FLASHGATE_PLANTS
        int p = cm_plant_find(plant);
        if (p <= 0) {
            fprintf(stderr, "flashgate-sim: no plant %s (--list-plants)\n", plant);
            return 2;
        }
        cm_plant_set((cm_plant_t)p);
#else
        fprintf(stderr,
                "flashgate-sim: --plant needs a plant build (cmake -DFLASHGATE_PLANTS=ON)\n");
        return 2;
#endif
    }
    if (!getenv("FLASHGATE_SIM_LOG")) /* the product's logs: faults are the point */
        atomic_store(&cm_log_level_current, -1);

    uint64_t *list = NULL;
    bool *list_fsync = NULL, *list_nostops = NULL, *list_redis = NULL, *list_ff = NULL;
    size_t nlist = 0;
    if (seed_file) {
        FILE *f = fopen(seed_file, "r");
        if (!f) {
            fprintf(stderr, "flashgate-sim: cannot open %s\n", seed_file);
            return 2;
        }
        char line[256];
        while (fgets(line, sizeof(line), f)) {
            if (!strchr(line, '\n')) { /* a long line: its rest is no seed */
                int ch;
                while ((ch = fgetc(f)) != EOF && ch != '\n')
                    ;
            }
            char *p = line + strspn(line, " \t");
            if (*p == '#' || *p == '\n' || *p == '\0')
                continue;
            char *end;
            uint64_t v = strtoull(p, &end, 0);
            char *hash = strchr(end, '#');
            if (hash)
                *hash = '\0';
            list = cm_xrealloc(list, (nlist + 1) * sizeof(*list));
            list_fsync = cm_xrealloc(list_fsync, (nlist + 1) * sizeof(*list_fsync));
            list_fsync[nlist] = strstr(end, "--fsync-only") != NULL;
            list_nostops = cm_xrealloc(list_nostops, (nlist + 1) * sizeof(*list_nostops));
            list_nostops[nlist] = strstr(end, "--no-stops") != NULL;
            list_redis = cm_xrealloc(list_redis, (nlist + 1) * sizeof(*list_redis));
            list_redis[nlist] = strstr(end, "--redis") != NULL;
            list_ff = cm_xrealloc(list_ff, (nlist + 1) * sizeof(*list_ff));
            list_ff[nlist] = strstr(end, "--fairfleet") != NULL;
            list[nlist++] = v;
        }
        fclose(f);
    } else if (!seed_given && seconds > 0) {
        seed = (uint64_t)time(NULL); /* a time-bounded batch explores new seeds each run */
    }

    /* the tables' process-wide key (cm_hash_mem) is drawn at its first use: drawn
     * here, it takes no word of a seed's keys (cm_hash_seed_set_fake), so a seed
     * walks the same path alone (its reproduce line) as in a batch */
    (void)cm_hash_str("");
    double t0 = now_s();
    uint64_t done = 0, total_steps = 0, crashes = 0, stops = 0, powers = 0, accepted = 0,
             failures = 0;
    uint64_t fsync_fails = 0, torn = 0, evictions = 0;
    for (uint64_t k = 0;; k++) {
        uint64_t s;
        bool fs_only = fsync_only, nst = no_stops;
        int rds = redis, ff = fairfleet;
        if (seed_file) {
            if (k >= nlist)
                break;
            s = list[k];
            fs_only = fs_only || list_fsync[k];
            nst = nst || list_nostops[k];
            rds = list_redis[k] ? 1 : rds;
            ff = list_ff[k] ? 1 : ff;
        } else if (seconds > 0) {
            if (now_s() - t0 >= seconds)
                break;
            s = seed + k;
        } else {
            if (k >= nseeds)
                break;
            s = seed + k;
        }
        sim_opts_t o = {.seed = s,
                        .steps = steps,
                        .trace = trace ? stdout : NULL,
                        .fsync_only = fs_only,
                        .no_stops = nst,
                        .redis = rds};
        sim_result_t r;
        if (ff == 1)
            sim_fairfleet_run(&o, &r);
        else if (fair == 1)
            sim_fair_run(&o, &r);
        else if (fleet == 1)
            sim_fleet_run(&o, &r);
        else
            sim_run(&o, &r);
        if (ff != 1 && fair != 1 && fleet == 0 && s % 8 == 0 && r.ok)
            also_run(sim_fleet_run, &o, &r);
        if (ff != 1 && fair == 0 && fleet != 1 && r.ok) /* registration, leftovers (sim_fair.h) */
            also_run(sim_fair_run, &o, &r);
        if (ff == 0 && fair == 0 && fleet == 0 && s % FAIRFLEET_EVERY == FAIRFLEET_AT && r.ok)
            also_run(sim_fairfleet_run, &o, &r); /* the fleet's fairness (sim_fairfleet.h) */
        done++;
        total_steps += r.steps;
        crashes += r.crashes;
        powers += r.power_losses;
        stops += r.stops;
        accepted += r.accepted;
        fsync_fails += r.fsync_fails;
        evictions += r.evictions;
        torn += r.torn_writes;
        if (!r.ok) {
            failures++;
            printf("FAIL seed=%" PRIu64 ": %s\n", s, r.why);
            printf("  reproduce: flashgate-sim --seed %" PRIu64 " --steps %" PRIu64
                   "%s%s%s%s%s%s%s%s --trace\n",
                   s, steps, fs_only ? " --fsync-only" : "", nst ? " --no-stops" : "",
                   rds == 1  ? " --redis"
                   : rds < 0 ? " --no-redis"
                             : "",
                   fleet == 1 ? " --fleet" : "", fair == 1 ? " --fair" : "",
                   ff == 1 ? " --fairfleet" : "", plant ? " --plant " : "", plant ? plant : "");
#ifdef FLASHGATE_PLANTS
            if (expect_fail) { /* the plant's doing only if the seed passes without it */
                cm_plant_t p = cm_plant_active;
                sim_result_t r0;
                cm_plant_set(CM_PLANT_NONE);
                if (ff == 1)
                    sim_fairfleet_run(&o, &r0);
                else if (fair == 1)
                    sim_fair_run(&o, &r0);
                else if (fleet == 1)
                    sim_fleet_run(&o, &r0);
                else
                    sim_run(&o, &r0);
                if (r0.ok && ff != 1 && fair == 0 && fleet != 1)
                    sim_fair_run(&o, &r0);
                cm_plant_set(p);
                if (!r0.ok) {
                    printf("  (fails without the plant too: not counted)\n");
                    continue;
                }
            }
#endif
            if (expect_fail) {
                printf("plant %s found by seed %" PRIu64 " after %" PRIu64 " seeds\n",
                       plant ? plant : "-", s, done);
                free(list);
                free(list_fsync);
                free(list_nostops);
                free(list_redis);
                free(list_ff);
                return 0;
            }
        }
    }
    double dt = now_s() - t0;
    printf("seeds=%" PRIu64 " failed=%" PRIu64 " steps=%" PRIu64 " crashes=%" PRIu64
           " stops=%" PRIu64 " power_losses=%" PRIu64 " fsync_fails=%" PRIu64 " evictions=%" PRIu64
           " torn_writes=%" PRIu64 " accepted=%" PRIu64 " time=%.1fs steps/s=%.0f\n",
           done, failures, total_steps, crashes, stops, powers, fsync_fails, evictions, torn,
           accepted, dt, dt > 0 ? (double)total_steps / dt : 0.0);
    free(list);
    free(list_fsync);
    free(list_nostops);
    free(list_redis);
    free(list_ff);
    if (expect_fail) {
        printf("plant %s NOT found in %" PRIu64 " seeds\n", plant ? plant : "-", done);
        return 1;
    }
    return failures ? 1 : 0;
}
