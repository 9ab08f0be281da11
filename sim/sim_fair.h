/*
 * Registration and the leftovers in simulation (docs/simulation.md,
 * "Registration and the leftovers"): one gateway's sale with a registration
 * window, its start-window lottery and the waitlist of its losers: the real
 * registration store (gw_reg.c over gw_reg_local.c), entries, draw and
 * leftovers' walk (gw_lottery.c, gw_waitlist.c: the lottery thread's turns,
 * gw_fair_tick) over the real spool, inventory and accept sequence; the
 * journals (through sim_journal_fs.h) and the spool on a simulated disk
 * (sim_disk.h) with kills, deaths in the middle of a write, power losses and
 * failed fdatasyncs, driven from a seed and checked by an oracle after every
 * step.
 */
#ifndef SIM_FAIR_H
#define SIM_FAIR_H

#include "queue/oq_fs.h"
#include "sim/sim_world.h"

#include <stdbool.h>
#include <stddef.h>

/* Runs one seed of the fairness world to the end (or the first broken promise). */
void sim_fair_run(const sim_opts_t *opts, sim_result_t *out);

/* Appends rec (len bytes, at most 256) to the sale's journal open at fd
 * (O_APPEND, on the simulated disk fs acts on) as one frame
 * (common/cm_journal.h), after the magic line in the same write(2) when the
 * file is empty (cm_journal_attach's, covered by the frame's fdatasync); a
 * short write (a full disk) is cut back off, as gw_fair__log_line does; with
 * sync, fdatasync'd. 0 or CM_EIO (fd < 0 too). Read back through the
 * journal's recovery, cm_journal_scan_mem. */
int sim_fair_journal_append(const oq_fs_ops_t *fs, int fd, const char *rec, size_t len, bool sync);

#endif
