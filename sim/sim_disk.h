/*
 * A simulated disk for the real spool (queue/oq_fs.h): one directory of
 * files, each with what the page cache holds and what the last fsync made
 * durable, and the directory's names likewise. A process crash keeps the
 * page cache; a power loss keeps only what was synced, plus a prefix, cut at
 * any byte, of what was appended after (a torn write); fsync can fail, the
 * disk can fill up, and a process can die after its next K operations (in
 * the middle of any spool call, recovery included). A failed fsync drops the
 * file's unsynced pages as Linux does (marked clean, never written), and in
 * one failure in two (sim_disk_set_evict: which files) the kernel evicts them a
 * few operations later: reads
 * then return what the disk holds there (zeros past the synced bytes), in
 * this process and the next (a kill -9 keeps the eviction due). Randomness
 * from the simulator's seed. One simulated thread: not thread-safe.
 */
#ifndef SIM_DISK_H
#define SIM_DISK_H

#include "common/cm_rand.h"
#include "queue/oq_fs.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sim_disk sim_disk_t;

/* A new empty disk drawing its faults from rng (borrowed). */
sim_disk_t *sim_disk_new(cm_rand_t *rng);
void sim_disk_free(sim_disk_t *d);
/* The table whose calls act on d (the simulator runs one disk at a time:
 * select it with sim_disk_use before each call into the process it backs). */
const oq_fs_ops_t *sim_disk_ops(void);
void sim_disk_use(sim_disk_t *d);

/* Faults: probability of a failed fsync (per call), capacity in bytes (0 =
 * unbounded). */
void sim_disk_set_faults(sim_disk_t *d, double p_fsync_fail, uint64_t capacity);
/* Evictions after a failed fsync, of which files: none (a new disk's), those
 * opened through the journal's table (sim_journal_fs.h, which marks them with
 * sim_disk_journal_file(fd) on the current disk), or every file, the spool's
 * segments too (docs/simulation.md: the worlds' choices, the open findings). */
typedef enum { SIM_EVICT_NONE, SIM_EVICT_JOURNALS, SIM_EVICT_ALL } sim_evict_t;
void sim_disk_set_evict(sim_disk_t *d, sim_evict_t which);
void sim_disk_journal_file(int fd);
/* The process dies after `ops` more operations (0: never). The operation that
 * kills it, when a write, writes a random prefix first. */
void sim_disk_die_after(sim_disk_t *d, uint64_t ops);
/* The process dies now: every later operation fails until sim_disk_crash
 * (a power cut reaches the disk before the process can close anything). */
void sim_disk_kill(sim_disk_t *d);
/* true once the process died (after sim_disk_die_after's count, or killed). */
bool sim_disk_dead(const sim_disk_t *d);
/* The process is gone: every descriptor it held is dead; the next process
 * starts with none. The page cache stays (kill -9). */
void sim_disk_crash(sim_disk_t *d);
/* Power loss: sim_disk_crash, and the files and names go back to what was
 * synced, each file keeping a random prefix of its unsynced appended tail. */
void sim_disk_power_loss(sim_disk_t *d);

/* Whether byte off of the file named name lies in pages a failed fsync
 * dropped, that no write or sync covered since, and that the kernel evicts
 * (an eviction of them is due, or came): a read there returns the disk's
 * bytes, not what was written. Reads no state a process could change. */
bool sim_disk_dropped_evicted(sim_disk_t *d, const char *name, uint64_t off);

/* Operations done and faults injected so far. */
typedef struct sim_disk_stats {
    uint64_t ops, fsync_fails, full_writes, torn_writes, power_losses;
    uint64_t evictions; /* dropped pages evicted: read back as the disk holds them */
} sim_disk_stats_t;
void sim_disk_stats(const sim_disk_t *d, sim_disk_stats_t *out);

#endif
