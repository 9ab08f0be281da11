/*
 * Arrival generation by thinning (Lewis & Shedler): candidates come at the
 * segment's peak rate and each is kept with probability rate(t)/peak, which
 * gives a Poisson process whose rate follows the piecewise-linear profile.
 */
#include "loadtest/lt_sched.h"

#include "common/cm_alloc.h"
#include "common/cm_time.h"

#include <math.h>
#include <stdlib.h>

double lt_sched_expected(const lt_segment_t *segs, size_t n, double cap_s)
{
    double t = 0, total = 0;
    for (size_t i = 0; i < n && t < cap_s; i++) {
        double d = segs[i].duration_s;
        double end_rate = segs[i].rate_end;
        if (t + d > cap_s) {
            double f = (cap_s - t) / d;
            end_rate = segs[i].rate + (segs[i].rate_end - segs[i].rate) * f;
            d = cap_s - t;
        }
        total += d * (segs[i].rate + end_rate) / 2;
        t += segs[i].duration_s;
    }
    return total;
}

uint64_t *lt_sched_arrivals(const lt_segment_t *segs, size_t n, double cap_s,
                            uint64_t max_arrivals, uint64_t seed, size_t *out_n)
{
    cm_rand_t rng;
    cm_rand_seed(&rng, seed);
    size_t cap = 1024, len = 0;
    uint64_t *out = cm_xmalloc(cap * sizeof(*out));
    double seg_start = 0;
    for (size_t i = 0; i < n && seg_start < cap_s && len < max_arrivals; i++) {
        const lt_segment_t *g = &segs[i];
        double peak = g->rate > g->rate_end ? g->rate : g->rate_end;
        double t = 0;
        while (peak > 0 && len < max_arrivals) {
            double u = cm_rand_unit(&rng);
            t += -log1p(-u) / peak;
            if (t >= g->duration_s || seg_start + t >= cap_s)
                break;
            double rate = g->rate + (g->rate_end - g->rate) * (t / g->duration_s);
            if (cm_rand_unit(&rng) * peak >= rate)
                continue;
            if (len == cap)
                out = cm_xrealloc(out, (cap *= 2) * sizeof(*out));
            out[len++] = (uint64_t)llround((seg_start + t) * 1e9);
        }
        seg_start += g->duration_s;
    }
    *out_n = len;
    return out;
}

/*---- heap ----*/

void lt_heap_push(lt_heap_t *h, uint64_t at_ns, uint64_t payload)
{
    if (h->len == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->ev = cm_xrealloc(h->ev, h->cap * sizeof(*h->ev));
    }
    size_t i = h->len++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->ev[p].at_ns <= at_ns)
            break;
        h->ev[i] = h->ev[p];
        i = p;
    }
    h->ev[i] = (lt_event_t){at_ns, payload};
}

bool lt_heap_pop(lt_heap_t *h, lt_event_t *out)
{
    if (h->len == 0)
        return false;
    *out = h->ev[0];
    lt_event_t last = h->ev[--h->len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->len)
            break;
        if (c + 1 < h->len && h->ev[c + 1].at_ns < h->ev[c].at_ns)
            c++;
        if (last.at_ns <= h->ev[c].at_ns)
            break;
        h->ev[i] = h->ev[c];
        i = c;
    }
    if (h->len)
        h->ev[i] = last;
    return true;
}

const lt_event_t *lt_heap_peek(const lt_heap_t *h)
{
    return h->len ? &h->ev[0] : NULL;
}

void lt_heap_free(lt_heap_t *h)
{
    CM_FREE(h->ev);
    h->len = h->cap = 0;
}

/*---- ticker ----*/

static void on_tick(uv_timer_t *timer)
{
    lt_ticker_t *t = timer->data;
    lt_ticker_run_due(t, lt_ticker_now(t));
}

static void on_check(uv_check_t *check)
{
    lt_ticker_t *t = check->data;
    lt_ticker_run_due(t, lt_ticker_now(t));
}

void lt_ticker_init(lt_ticker_t *t, uv_loop_t *loop, const uint64_t *arrivals, size_t n,
                    lt_fire_cb cb, void *ctx)
{
    *t = (lt_ticker_t){.arrivals = arrivals, .n_arrivals = n, .stride = 1, .cb = cb, .ctx = ctx};
    if (loop) {
        uv_timer_init(loop, &t->timer);
        t->timer.data = t;
        uv_check_init(loop, &t->check);
        t->check.data = t;
    }
}

void lt_ticker_deal(lt_ticker_t *t, size_t first, size_t stride)
{
    t->next_arrival = first;
    t->stride = stride ? stride : 1;
}

void lt_ticker_start(lt_ticker_t *t)
{
    lt_ticker_start_at(t, cm_mono_ns());
}

void lt_ticker_start_at(lt_ticker_t *t, uint64_t t0_ns)
{
    t->t0_ns = t0_ns;
    t->running = true;
    uv_timer_start(&t->timer, on_tick, 0, 1);
    uv_check_start(&t->check, on_check);
}

void lt_ticker_add(lt_ticker_t *t, uint64_t sched_ns, uint64_t payload)
{
    lt_heap_push(&t->heap, sched_ns, payload);
}

size_t lt_ticker_run_due(lt_ticker_t *t, uint64_t now_ns)
{
    size_t fired = 0;
    for (;;) {
        const lt_event_t *h = lt_heap_peek(&t->heap);
        bool arr_due = t->next_arrival < t->n_arrivals && t->arrivals[t->next_arrival] <= now_ns;
        bool heap_due = h && h->at_ns <= now_ns;
        if (!arr_due && !heap_due)
            break;
        if (arr_due && (!heap_due || t->arrivals[t->next_arrival] <= h->at_ns)) {
            size_t i = t->next_arrival;
            t->next_arrival += t->stride;
            t->cb(t->ctx, t->arrivals[i], now_ns, true, i);
        } else {
            lt_event_t ev;
            lt_heap_pop(&t->heap, &ev);
            t->cb(t->ctx, ev.at_ns, now_ns, false, ev.payload);
        }
        fired++;
    }
    return fired;
}

bool lt_ticker_idle(const lt_ticker_t *t)
{
    return t->next_arrival >= t->n_arrivals && t->heap.len == 0;
}

uint64_t lt_ticker_now(const lt_ticker_t *t)
{
    return cm_mono_ns() - t->t0_ns;
}

void lt_ticker_close(lt_ticker_t *t)
{
    if (t->running) {
        uv_timer_stop(&t->timer);
        uv_check_stop(&t->check);
        t->running = false;
    }
    if (t->timer.loop && !uv_is_closing((uv_handle_t *)&t->timer)) {
        uv_close((uv_handle_t *)&t->timer, NULL);
        uv_close((uv_handle_t *)&t->check, NULL);
    }
    lt_heap_free(&t->heap);
}
