/*
 * One batch of settle's consumer loop, stepped (st_loop.h). The order of the
 * three actions is the whole of settle's exactly-once-in-the-database promise:
 * offsets after the outcomes, outcomes after the write.
 */
#include "settle/st_loop.h"

#include "common/cm_plant.h"

st_batch_act_t st_batch_begin(st_batch_step_t *b)
{
    b->written = false;
    b->published = false;
    /* planted: the offsets committed before the batch is written */
    b->act = CM_PLANT(SETTLE_COMMIT_FIRST) ? ST_BATCH_COMMIT : ST_BATCH_WRITE;
    return b->act;
}

st_batch_act_t st_batch_step(st_batch_step_t *b, int rc, bool give_up)
{
    switch (b->act) {
    case ST_BATCH_WRITE:
        if (rc != 0) {
            b->act = give_up ? ST_BATCH_GIVE_UP : ST_BATCH_WRITE;
            break;
        }
        b->written = true;
        /* planted: the offsets committed without the outcomes published */
        if (CM_PLANT(SETTLE_COMMIT_UNPUBLISHED))
            b->act = ST_BATCH_COMMIT;
        else
            b->act = b->published ? ST_BATCH_DONE : ST_BATCH_PUBLISH;
        break;
    case ST_BATCH_PUBLISH:
        if (rc != 0) {
            b->act = give_up ? ST_BATCH_GIVE_UP : ST_BATCH_PUBLISH;
            break;
        }
        b->published = true;
        b->act = ST_BATCH_COMMIT;
        break;
    case ST_BATCH_COMMIT:
        /* a commit is never retried: a failed one costs a re-read, nothing else */
        b->act = b->written ? ST_BATCH_DONE : ST_BATCH_WRITE;
        break;
    case ST_BATCH_DONE:
    case ST_BATCH_GIVE_UP:
        break;
    }
    return b->act;
}

size_t st_batch_offsets(const int32_t *partition, const int64_t *offset, size_t n,
                        int32_t *out_part, int64_t *out_next)
{
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < np && out_part[j] != partition[i])
            j++;
        if (j == np) {
            out_part[np] = partition[i];
            out_next[np++] = offset[i] + 1;
        } else if (offset[i] + 1 > out_next[j]) {
            out_next[j] = offset[i] + 1;
        }
    }
    return np;
}
