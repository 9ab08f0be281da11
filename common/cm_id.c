/*
 * Order ids (see cm_id.h): 42 bits of ms since CM_ID_EPOCH_MS, 10 bits of
 * node, 12 bits of sequence, handed out with one CAS on `last` so that the
 * generator is lock-free and never goes backwards.
 */
#include "common/cm_id.h"

#include "common/cm_err.h"

#define ID_TS_BITS 42
#define ID_NODE_BITS 10
#define ID_SEQ_BITS 12
#define ID_TS_MAX ((UINT64_C(1) << ID_TS_BITS) - 1)
#define ID_SEQ_MAX ((UINT64_C(1) << ID_SEQ_BITS) - 1)
#define ID_NODE_SHIFT ID_SEQ_BITS
#define ID_TS_SHIFT (ID_SEQ_BITS + ID_NODE_BITS)

/* Crockford base32: no I, L, O, U. Ascending ASCII, so text order = value order. */
static const char crockford[32] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#define LEASE_NODE_BITS 10

static uint64_t lease_of(uint32_t node_id, uint64_t last_ts)
{
    return ((last_ts + 1) << LEASE_NODE_BITS) | (node_id & CM_ID_NODE_MAX);
}

/* Milliseconds since the epoch of wall-clock ms, clamped to the id's range. */
static uint64_t rel_ts(int64_t ms)
{
    int64_t rel = ms - CM_ID_EPOCH_MS;
    uint64_t ts = rel < 0 ? 0 : (uint64_t)rel;
    return ts > ID_TS_MAX ? ID_TS_MAX : ts;
}

void cm_id_gen_init(cm_id_gen_t *g, uint32_t node_id)
{
    atomic_init(&g->last, 0);
    atomic_init(&g->lease, lease_of(node_id, ID_TS_MAX));
}

void cm_id_gen_lease(cm_id_gen_t *g, uint32_t node_id, int64_t until_ms)
{
    atomic_store(&g->lease, lease_of(node_id, rel_ts(until_ms)));
}

void cm_id_gen_revoke(cm_id_gen_t *g)
{
    atomic_store(&g->lease, atomic_load(&g->lease) & CM_ID_NODE_MAX);
}

uint32_t cm_id_gen_node(const cm_id_gen_t *g)
{
    return (uint32_t)(atomic_load(&g->lease) & CM_ID_NODE_MAX);
}

int64_t cm_id_gen_last_ms(const cm_id_gen_t *g)
{
    uint64_t last = atomic_load(&g->last);
    return last ? cm_id_time_ms(last) : 0;
}

/* An id's place in a generator's order: its millisecond and sequence, not its node. */
static uint64_t id_order(uint64_t id)
{
    return ((id >> ID_TS_SHIFT) << ID_SEQ_BITS) | (id & ID_SEQ_MAX);
}

void cm_id_gen_after(cm_id_gen_t *g, uint64_t id)
{
    uint64_t old = atomic_load(&g->last);
    while (old == 0 || id_order(old) < id_order(id))
        if (atomic_compare_exchange_weak(&g->last, &old, id))
            return;
}

void cm_id_gen_after_ms(cm_id_gen_t *g, int64_t ms)
{
    /* the last sequence of that millisecond: the next id borrows the one after */
    if (ms > CM_ID_EPOCH_MS)
        cm_id_gen_after(g, (rel_ts(ms) << ID_TS_SHIFT) | ID_SEQ_MAX);
}

uint64_t cm_id_next(cm_id_gen_t *g, int64_t now_ms)
{
    uint64_t ts = rel_ts(now_ms);
    /* The lease first, then `last`: a new lease (cm_id_gen_lease) is stored
     * after the generator was moved past the node's floor (cm_id_gen_after),
     * so an id made under the new lease comes after that floor; one made under
     * the old lease stays within the old lease's end, which its floor covers. */
    uint64_t lease = atomic_load(&g->lease);
    uint64_t end = lease >> LEASE_NODE_BITS; /* last ms allowed + 1; 0: none */
    if (end == 0)
        return 0;
    uint64_t node = (lease & CM_ID_NODE_MAX) << ID_NODE_SHIFT;
    uint64_t old = atomic_load_explicit(&g->last, memory_order_relaxed);
    for (;;) {
        uint64_t old_ts = old >> ID_TS_SHIFT;
        uint64_t old_seq = old & ID_SEQ_MAX;
        uint64_t nts, nseq;
        if (old == 0 || ts > old_ts) {
            nts = ts;
            nseq = 0;
        } else if (old_seq < ID_SEQ_MAX) {
            /* same ms, or the clock stepped back: stay on the last ms */
            nts = old_ts;
            nseq = old_seq + 1;
        } else {
            /* more than 4096 ids in this ms: borrow from the next one */
            nts = old_ts + 1;
            nseq = 0;
        }
        if (nts >= end)
            return 0; /* past the lease: not ours to hand out */
        uint64_t id = (nts << ID_TS_SHIFT) | node | nseq;
        /* relaxed is enough: `last` is the only shared state and the CAS
         * itself makes every id unique; nothing else is published with it. */
        if (atomic_compare_exchange_weak_explicit(&g->last, &old, id, memory_order_relaxed,
                                                  memory_order_relaxed))
            return id;
    }
}

void cm_id_format(uint64_t id, char *out)
{
    for (int i = CM_ID_TEXT_LEN - 1; i >= 0; i--) {
        out[i] = crockford[id & 31];
        id >>= 5;
    }
    out[CM_ID_TEXT_LEN] = '\0';
}

/* Each digit's value + 1 by character, 0 where none (either case); an order id is
 * parsed up to three times per accepted order, and the alphabet search was ~270
 * instructions a parse (callgrind: python3 bench/profile.py build acc calls). */
#define D(ch, v) [ch] = (v) + 1, [(ch) | 0x20] = (v) + 1
static const uint8_t crockford_digit[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
    ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    D('A', 10), D('B', 11), D('C', 12), D('D', 13), D('E', 14), D('F', 15),
    D('G', 16), D('H', 17), D('J', 18), D('K', 19), D('M', 20), D('N', 21),
    D('P', 22), D('Q', 23), D('R', 24), D('S', 25), D('T', 26), D('V', 27),
    D('W', 28), D('X', 29), D('Y', 30), D('Z', 31),
};
#undef D

static int crockford_value(char c)
{
    return (int)crockford_digit[(unsigned char)c] - 1;
}

int cm_id_parse(const char *s, size_t len, uint64_t *out)
{
    if (s == NULL || len != CM_ID_TEXT_LEN)
        return CM_EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        int d = crockford_value(s[i]);
        if (d < 0)
            return CM_EINVAL;
        /* 13 digits hold 65 bits: the first carries only the top 4 */
        if (i == 0 && d > 15)
            return CM_EINVAL;
        v = (v << 5) | (uint64_t)d;
    }
    *out = v;
    return 0;
}

int64_t cm_id_time_ms(uint64_t id)
{
    return (int64_t)(id >> ID_TS_SHIFT) + CM_ID_EPOCH_MS;
}

uint32_t cm_id_node(uint64_t id)
{
    return (uint32_t)((id >> ID_NODE_SHIFT) & CM_ID_NODE_MAX);
}
