/*
 * Log-linear histogram (see cm_hist.h). Index of v >= 128: with m = floor(log2 v),
 * the octave [2^m, 2^(m+1)) is cut into 128 buckets of width 2^(m-7).
 */
#include "common/cm_hist.h"

#include <stdint.h>
#include <string.h>

void cm_hist_init(cm_hist_t *h)
{
    memset(h, 0, sizeof(*h));
    h->min_us = UINT64_MAX;
}

uint32_t cm_hist_index(uint64_t v)
{
    if (v > CM_HIST_MAX_US)
        v = CM_HIST_MAX_US;
    if (v < CM_HIST_SUB)
        return (uint32_t)v;
    uint32_t m = 63u - (uint32_t)__builtin_clzll(v); /* >= 7 */
    uint32_t sub = (uint32_t)(v >> (m - CM_HIST_SUB_BITS)) - CM_HIST_SUB;
    return CM_HIST_SUB + (m - CM_HIST_SUB_BITS) * CM_HIST_SUB + sub;
}

void cm_hist_bucket_range(uint32_t idx, uint64_t *lo, uint64_t *hi)
{
    if (idx < CM_HIST_SUB) {
        *lo = *hi = idx;
        return;
    }
    uint32_t m = (idx - CM_HIST_SUB) / CM_HIST_SUB + CM_HIST_SUB_BITS;
    uint64_t sub = (idx - CM_HIST_SUB) % CM_HIST_SUB;
    uint64_t width = 1ull << (m - CM_HIST_SUB_BITS);
    *lo = (1ull << m) + sub * width;
    *hi = *lo + width - 1;
}

void cm_hist_record_n(cm_hist_t *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    if (v > CM_HIST_MAX_US)
        v = CM_HIST_MAX_US;
    h->buckets[cm_hist_index(v)] += n;
    h->count += n;
    h->sum_us += (double)v * (double)n;
    if (v < h->min_us)
        h->min_us = v;
    if (v > h->max_us)
        h->max_us = v;
}

void cm_hist_record(cm_hist_t *h, uint64_t v)
{
    cm_hist_record_n(h, v, 1);
}

void cm_hist_merge(cm_hist_t *dst, const cm_hist_t *src)
{
    if (src->count == 0)
        return;
    for (uint32_t i = 0; i < CM_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum_us += src->sum_us;
    if (src->min_us < dst->min_us)
        dst->min_us = src->min_us;
    if (src->max_us > dst->max_us)
        dst->max_us = src->max_us;
}

uint64_t cm_hist_percentile(const cm_hist_t *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100.0)
        return h->max_us;
    if (p < 0.0)
        p = 0.0;
    double want = p / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < CM_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t lo, hi;
            cm_hist_bucket_range(i, &lo, &hi);
            uint64_t mid = lo + (hi - lo) / 2;
            if (mid < h->min_us)
                mid = h->min_us;
            if (mid > h->max_us)
                mid = h->max_us;
            return mid;
        }
    }
    return h->max_us;
}

double cm_hist_mean(const cm_hist_t *h)
{
    return h->count ? h->sum_us / (double)h->count : 0.0;
}
