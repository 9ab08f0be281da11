/*
 * Log-linear latency histogram (HdrHistogram-style), constant memory.
 *
 * Values are unsigned integers in microseconds from 1 us to 60 s (larger
 * values are clamped to CM_HIST_MAX_US and counted; 0 counts as 0). Values
 * below 128 us have a bucket each (exact); above, every power of two is split
 * into 128 equal buckets, so a bucket is at most 1/128 of its value wide and
 * a reported percentile (the bucket's midpoint, clamped to the exact min and
 * max) is within 0.4% of the true sample. Two histograms merge by adding
 * counts, so per-thread or per-second histograms can be summed.
 *
 * Not thread-safe: one writer at a time; merge into a private copy to read.
 */
#ifndef CM_HIST_H
#define CM_HIST_H

#include <stdint.h>

#define CM_HIST_SUB_BITS 7
#define CM_HIST_SUB (1u << CM_HIST_SUB_BITS) /* 128 buckets per octave */
#define CM_HIST_MAX_US 60000000ull            /* 60 s */
#define CM_HIST_MAX_OCTAVE 26                 /* 2^26 us > 60 s */
#define CM_HIST_BUCKETS (CM_HIST_SUB + (CM_HIST_MAX_OCTAVE - CM_HIST_SUB_BITS) * CM_HIST_SUB)

typedef struct cm_hist {
    uint64_t count;  /* samples recorded */
    uint64_t min_us; /* exact smallest sample (UINT64_MAX when empty) */
    uint64_t max_us; /* exact largest sample (clamped), 0 when empty */
    double sum_us;   /* for the mean */
    uint64_t buckets[CM_HIST_BUCKETS];
} cm_hist_t;

/* Empties h (caller-provided storage, ~20 KiB). */
void cm_hist_init(cm_hist_t *h);
/* Records one sample of value_us microseconds. */
void cm_hist_record(cm_hist_t *h, uint64_t value_us);
/* Records n samples of the same value. */
void cm_hist_record_n(cm_hist_t *h, uint64_t value_us, uint64_t n);
/* Adds every sample of src to dst. */
void cm_hist_merge(cm_hist_t *dst, const cm_hist_t *src);
/*
 * The value at percentile p (0..100, e.g. 99.9) in microseconds: the
 * smallest bucket holding at least ceil(p% of count) samples, reported at its
 * midpoint and clamped to [min, max]; p >= 100 gives the exact max. 0 when empty.
 */
uint64_t cm_hist_percentile(const cm_hist_t *h, double p);
/* Mean in microseconds, 0 when empty. */
double cm_hist_mean(const cm_hist_t *h);
/* Bucket index of a value, and the [lo, hi] range a bucket covers (for tests). */
uint32_t cm_hist_index(uint64_t value_us);
void cm_hist_bucket_range(uint32_t idx, uint64_t *lo, uint64_t *hi);

#endif
