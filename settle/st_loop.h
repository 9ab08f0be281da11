/*
 * One batch of settle's consumer loop, stepped (as the relay's oq_relay_step):
 * the decision of what the loop does next with a batch, apart from the I/O that
 * does it. flashgate-settle's loop (st_settle.c process_batch) and the
 * simulator (sim/sim_world.c settle_turn) both run a batch through it.
 *
 * A batch is written to the database (one transaction), then its outcomes are
 * published (every delivery waited for), and only then are its offsets
 * committed: a crash anywhere reads the batch again from the committed offsets,
 * and the write and the outcomes are idempotent. The offsets are each
 * partition's last offset in the batch plus one (st_batch_offsets).
 *
 * No syscall, lock, clock or allocation inside. Single-threaded: one batch, one
 * caller.
 */
#ifndef ST_LOOP_H
#define ST_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ST_BATCH_WRITE = 0, /* write the batch to the sink (st_batch_write) */
    ST_BATCH_PUBLISH,   /* publish one outcome per valid message and wait for each delivery */
    ST_BATCH_COMMIT,    /* commit the offsets (st_batch_offsets) */
    ST_BATCH_DONE,      /* finished: the consumer goes on past it (committed, or its commit
                           failed: read again after a restart, it changes nothing) */
    ST_BATCH_GIVE_UP,   /* given up uncommitted: read again from the committed offsets */
} st_batch_act_t;

typedef struct st_batch_step {
    st_batch_act_t act; /* what the shell does now */
    bool written;       /* the database holds the batch */
    bool published;     /* its outcomes were delivered */
} st_batch_step_t;

/* Starts a batch; returns its first action. */
st_batch_act_t st_batch_begin(st_batch_step_t *b);

/*
 * Feeds the result of b->act: rc 0 (done) or a negative cm_err_t; give_up is
 * true when the shell cannot go on with this batch now (a stop past its grace,
 * the brokers moved). Returns the next action (also in b->act). A failed write
 * or publish is tried again unless given up; a failed commit ends the batch (its
 * messages come again after a restart and change nothing).
 */
st_batch_act_t st_batch_step(st_batch_step_t *b, int rc, bool give_up);

/*
 * The offsets to commit for a batch of n messages (partition[i], offset[i]):
 * for each partition in it, one past its last offset. Writes the distinct
 * partitions to out_part and their next offsets to out_next (each room for n)
 * in first-seen order; returns how many.
 */
size_t st_batch_offsets(const int32_t *partition, const int64_t *offset, size_t n,
                        int32_t *out_part, int64_t *out_next);

#endif
