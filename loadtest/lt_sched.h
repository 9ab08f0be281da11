/*
 * Open-loop scheduling: arrival times are computed before the run from the
 * scenario's piecewise-linear rate profile (a seeded non-homogeneous Poisson
 * process), and a ticker fires every event at its scheduled time whatever the
 * server does. Follow-up events (retries, polls) go into a min-heap. Every
 * event carries its scheduled time so that latency is measured from it, not
 * from when the request could be sent (no coordinated omission).
 */
#ifndef LT_SCHED_H
#define LT_SCHED_H

#include "common/cm_rand.h"
#include "loadtest/lt_scenario.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/*
 * Arrival times in ns from the run's start, ascending, for the profile in
 * segs[0..n) cut at cap_s and at max_arrivals. Same seed, same times.
 * Returns a new array (caller frees) and its length in *out_n.
 */
uint64_t *lt_sched_arrivals(const lt_segment_t *segs, size_t n, double cap_s,
                            uint64_t max_arrivals, uint64_t seed, size_t *out_n);
/* Expected number of arrivals of the profile (integral of the rate) up to cap_s. */
double lt_sched_expected(const lt_segment_t *segs, size_t n, double cap_s);

/* A min-heap of (time, payload) events. */
typedef struct lt_event {
    uint64_t at_ns;
    uint64_t payload;
} lt_event_t;

typedef struct lt_heap {
    lt_event_t *ev;
    size_t len, cap;
} lt_heap_t;

void lt_heap_push(lt_heap_t *h, uint64_t at_ns, uint64_t payload);
/* Pops the earliest event into *out; false when empty. */
bool lt_heap_pop(lt_heap_t *h, lt_event_t *out);
/* Earliest event, or NULL. */
const lt_event_t *lt_heap_peek(const lt_heap_t *h);
void lt_heap_free(lt_heap_t *h);

/*
 * Called for each due event: sched_ns is its scheduled time (relative to the
 * ticker's start), now_ns the time it fired (same base); is_arrival tells a
 * precomputed arrival (payload = its index) from a heap event.
 */
typedef void (*lt_fire_cb)(void *ctx, uint64_t sched_ns, uint64_t now_ns, bool is_arrival,
                           uint64_t payload);

typedef struct lt_ticker {
    uv_timer_t timer;
    uv_check_t check; /* also fires due events after every I/O wake-up */
    const uint64_t *arrivals; /* borrowed, ascending */
    size_t n_arrivals, next_arrival;
    size_t stride; /* fires arrivals next_arrival, +stride, ... (one loop's deal) */
    lt_heap_t heap;
    uint64_t t0_ns; /* cm_mono_ns() at start */
    lt_fire_cb cb;
    void *ctx;
    bool running;
} lt_ticker_t;

/* Caller-provided storage; arrivals stays borrowed. Loop thread only. */
void lt_ticker_init(lt_ticker_t *t, uv_loop_t *loop, const uint64_t *arrivals, size_t n,
                    lt_fire_cb cb, void *ctx);
/*
 * Fires only arrivals first, first + stride, first + 2 stride, ...: the share
 * of one of `stride` loops that deal the crowd between them. Before start.
 */
void lt_ticker_deal(lt_ticker_t *t, size_t first, size_t stride);
/*
 * Starts the clock (t0 = now), a 1 ms repeating timer and a check handle on
 * the loop, so due events fire at the next tick or the next I/O wake-up,
 * whichever comes first.
 */
void lt_ticker_start(lt_ticker_t *t);
/* The same with a given t0 (cm_mono_ns() base): loops that share one clock. */
void lt_ticker_start_at(lt_ticker_t *t, uint64_t t0_ns);
/* Schedules a follow-up at sched_ns (relative to t0). */
void lt_ticker_add(lt_ticker_t *t, uint64_t sched_ns, uint64_t payload);
/*
 * Fires every event due at or before now_ns (relative), in time order, and
 * returns how many fired. The timer calls it; tests call it with a fake clock.
 */
size_t lt_ticker_run_due(lt_ticker_t *t, uint64_t now_ns);
/* Nothing left to fire. */
bool lt_ticker_idle(const lt_ticker_t *t);
/* Nanoseconds since t0. */
uint64_t lt_ticker_now(const lt_ticker_t *t);
/* Stops and closes the handles (the loop must run once more to finish the close). */
void lt_ticker_close(lt_ticker_t *t);

#endif
