/*
 * The crowd on one libuv loop. Each target has a pool of keep-alive
 * connections. A request that finds no idle connection waits in the target's
 * FIFO (connection_mode queue: at most `connections` open) or opens a new
 * connection (open: up to `connections_max`, keeping at most `connections`
 * idle, as a CDN edge or an nginx upstream without max_conns does); either
 * way the wait is part of its latency, because latency is always taken from
 * the scheduled send time. Idle and free connections are kept on stacks, so
 * handing a request over costs O(1) whatever the pool size.
 *
 * With `loops` > 1 the crowd is dealt over that many such loops, one thread
 * each: user i belongs to loop i % loops (its arrival, retries and polls),
 * each loop has its own share of the connections, and all share one clock.
 * One loop carries ~25,000 requests/s on the machines we rehearse on; past
 * that it falls behind its own schedule and sends in bursts, and what it
 * measures is itself (python3 bench/crowd_cost.py 20000,25000,30000). Results are merged
 * after the run; progress lines sum what each loop publishes.
 */
#include "loadtest/lt_run.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_time.h"
#include "loadtest/lt_http.h"
#include "loadtest/lt_ident.h"
#include "loadtest/lt_sched.h"
#include "queue/oq_order.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

const char *lt_ans_name(lt_ans_t a)
{
    static const char *names[] = {
#define XX(n, s) s,
        LT_ANS_MAP(XX)
#undef XX
    };
    return (unsigned)a < LT_ANS_N ? names[a] : "?";
}

const char *lt_page_name(lt_page_t a)
{
    static const char *names[] = {
#define XX(n, s) s,
        LT_PAGE_MAP(XX)
#undef XX
    };
    return (unsigned)a < LT_PAGE_N ? names[a] : "?";
}

lt_page_t lt_page_of_status(int st, bool degraded)
{
    if (st == 0)
        return LT_PAGE_ERROR;
    if (st >= 200 && st < 300)
        return degraded ? LT_PAGE_DEGRADED : LT_PAGE_OK;
    if (st == 503)
        return LT_PAGE_P503;
    return st >= 500 ? LT_PAGE_P5XX : LT_PAGE_P4XX;
}

lt_ans_t lt_ans_of_status(int st)
{
    switch (st) {
    case 0:
        return LT_ANS_ERROR;
    case 202:
        return LT_ANS_A202;
    case 409:
        return LT_ANS_A409;
    case 410:
        return LT_ANS_A410;
    case 425:
        return LT_ANS_A425;
    case 429:
        return LT_ANS_A429;
    case 503:
        return LT_ANS_A503;
    case 404:
        return LT_ANS_A404;
    default:
        return st >= 500 ? LT_ANS_A5XX : LT_ANS_A4XX;
    }
}

/*---- state ----*/

/* U_SCALPER: an account of a scalper operator; it presses and retries as an aggressive bot. */
enum { U_PERSON = 0, U_BOT = 1, U_AGGRESSIVE = 2, U_SCALPER = 3 };
enum { U_WAITING = 0, U_BUYING, U_POLLING, U_DONE };
enum { EV_BUY = 0, EV_POLL = 1, EV_PAGE = 2, EV_REG = 3 };
/* An account's registration (sale.registration): none asked of it, on its way,
 * answered 200/201, refused (a 4xx), or given up (retries or the window ran out). */
enum { RG_NONE = 0, RG_WANT, RG_OK, RG_REFUSED, RG_FAILED };
#define REG_MAX_TRIES 20 /* fits user_t.reg_tries */
#define EV_BITS 2

/* 20 bytes: the flags share the bytes before attempts */
typedef struct user {
    uint8_t kind;
    uint8_t state;
    uint8_t page : 1;      /* views a non-core page instead of buying */
    uint8_t reg_maybe : 1; /* a registration try had no answer: it may have been recorded */
    uint8_t not_reg : 1;   /* a buy was refused 403 not_registered */
    uint8_t reg : 3;       /* RG_* */
    uint8_t reg_tries : 5; /* at most REG_MAX_TRIES */
    uint16_t attempts;
    uint16_t polls;
    int32_t order; /* index in res->orders, -1 none */
    int32_t entry; /* index in res->entries (a lottery entry), -1 none */
    uint32_t person; /* the person holding the account (lt_person_id) */
} user_t;
_Static_assert(sizeof(user_t) == 20, "an account's state is 20 bytes (lt_scenario.c's cap)");

const char *lt_class_name(int c)
{
    static const char *const names[LT_CLASS_N] = {"people", "bots", "aggressive_bots",
                                                  "scalpers"};
    return c >= 0 && c < LT_CLASS_N ? names[c] : "?";
}

/* Ignores Retry-After, retries every bot_retry_ms, presses before the start. */
static bool is_aggressive(const user_t *u)
{
    return u->kind == U_AGGRESSIVE || u->kind == U_SCALPER;
}

typedef struct req {
    struct req *next; /* FIFO of the target while waiting */
    uint64_t user;
    int kind;         /* EV_BUY / EV_POLL / EV_PAGE */
    uint64_t sched_ns;
    uint64_t sent_ns;
    size_t target;
} req_t;

enum { C_FREE = 0, C_CONNECTING, C_IDLE, C_BUSY, C_CLOSING };

/*
 * One write of a request, with its own copy of the bytes. A write request is
 * never shared between requests: the answer can be read (and the next request
 * written on the connection) before libuv has run the previous write's
 * callback, and reusing a uv_write_t still queued corrupts libuv's queue.
 */
typedef struct wreq {
    uv_write_t wr;
    struct conn *c;
    char data[2048];
} wreq_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t cr;
    uv_timer_t deadline; /* give_up_ms of the request on it */
    struct target *tg;
    int state;           /* C_* */
    int32_t idle_pos;    /* index in tg->idle while C_IDLE, else -1 */
    req_t *cur;
    lt_http_parser_t parser;
    char rbuf[16384];
} conn_t;

typedef struct target {
    struct run *run;
    char host[256];
    int port;
    struct sockaddr_storage addr;
    conn_t *conns;
    uint32_t n_conns, open;
    uint32_t *idle, n_idle; /* stack of idle connections */
    uint32_t *free_, n_free; /* stack of closed slots */
    uint32_t connecting;
    uint32_t keep_idle;      /* open mode: idle connections kept, the rest closed */
    req_t *qhead, *qtail;
    size_t qlen;
} target_t;

struct run;

/* What the loops share: read-only during the run, except each user's entry,
 * which only its own loop touches. */
typedef struct crowd {
    user_t *users;
    uint64_t users_bots;
    uint64_t *arrivals;
    size_t n_arrivals;
    struct sockaddr_storage addr[LT_MAX_TARGETS];
    char host[LT_MAX_TARGETS][256];
    int port[LT_MAX_TARGETS];
    int64_t start_ms;    /* the sale's start, wall clock */
    uint64_t t0_ns;      /* the shared clock's zero (cm_mono_ns base) */
    int64_t wall_t0_ms;
    pthread_barrier_t go; /* every loop warmed up: the clock starts */
    size_t n_loops;
    struct run *loops[LT_MAX_LOOPS];
    lt_tokens_t tokens; /* one bearer token per account (scenario identity.key), else empty */
    uint32_t *won_units; /* per account, written by its loop at the end (person figures) */
    int64_t reg_opens_ms, reg_closes_ms; /* the registration window, wall clock (sc->reg) */
} crowd_t;

/* A loop's counters for the progress line, summed by loop 0. */
typedef struct pub {
    _Atomic uint64_t answers[LT_ANS_N], pages[LT_PAGE_N], inflight, open, p99_us;
} pub_t;

typedef struct run {
    const lt_scenario_t *sc;
    crowd_t *crowd;
    size_t idx;          /* this loop's index, 0 .. crowd->n_loops */
    pub_t pub;
    lt_results_t *res;
    uv_loop_t loop;
    lt_ticker_t ticker;
    uv_timer_t progress;
    cm_rand_t rng;
    user_t *users;
    uint64_t *arrivals;
    size_t n_arrivals;
    target_t targets[LT_MAX_TARGETS];
    size_t rr;
    uint64_t inflight;
    uint64_t sale_start_ns;
    uint64_t reg_closes_ns; /* the registration window's close on the run's clock */
    uint64_t stop_ns;
    uint64_t profile_end_ns;
    bool stopping, quiet;
    bool refusing; /* finish_req is failing a request whose new connection was refused */
    /* progress */
    uint64_t last_answers, last_t_ns, last_pub_ns;
    size_t open_orders_cap;
    size_t entries_cap;
    uv_timer_t giveup_sweep; /* give_up_ms of requests still waiting in a FIFO */
    uv_timer_t warm_timer;   /* ends warm_up() that waits for a connect that never ends */
    bool warm_timer_init;
    uint32_t open_total;
} run_t;

static void target_pump(target_t *tg);
static void conn_fail(conn_t *c, lt_ans_t why);

static uint64_t now_rel(run_t *r)
{
    return lt_ticker_now(&r->ticker);
}

static lt_second_t *second_at(run_t *r, uint64_t t_ns)
{
    size_t s = (size_t)(t_ns / 1000000000ull);
    lt_results_t *res = r->res;
    if (s >= 100000)
        s = 99999;
    if (s >= res->n_secs) {
        size_t n = s + 1;
        res->secs = cm_xrealloc(res->secs, n * sizeof(*res->secs));
        for (size_t i = res->n_secs; i < n; i++) {
            memset(&res->secs[i], 0, offsetof(lt_second_t, buy));
            cm_hist_init(&res->secs[i].buy);
        }
        res->n_secs = n;
    }
    return &res->secs[s];
}

static void user_id(const run_t *r, uint64_t u, char *out, size_t len)
{
    lt_user_id(r->sc->seed, u, out, len);
}

static void user_addr(const run_t *r, uint64_t u, char *out, size_t len)
{
    const user_t *us = &r->users[u];
    if (us->kind == U_SCALPER) {
        /* one of its operator's proxies: 100.64.0.0/10 (shared address space, header
         * only), consecutive proxies in different /24s, as rented residential ones are */
        uint64_t op = (us->person - r->sc->users) / r->sc->persons_per_operator;
        uint64_t p = op * r->sc->operator_addresses +
                     (u * 2654435761u) % r->sc->operator_addresses;
        snprintf(out, len, "100.%u.%u.%u", (unsigned)(64 + ((p >> 8) & 63)), (unsigned)(p & 255),
                 (unsigned)(1 + (p >> 14)));
    } else if (us->kind != U_PERSON) {
        /* bots share a few addresses: 198.19.255.0/24 (benchmark range, header only) */
        uint64_t b = (u * 2654435761u) % r->sc->bot_addresses;
        snprintf(out, len, "198.19.255.%u", (unsigned)b);
    } else {
        /* persons' addresses spread over the 512 /24s of 198.18.0.0/15 (address a in
         * /24 a % 512, host a / 512 + 1), as a crowd's are over the internet: the
         * gateway's per-subnet buckets see tens of persons per /24, not hundreds */
        uint64_t a = (u * 40503u + 7) % r->sc->addresses;
        uint64_t net = a % 512, host = a / 512 + 1;
        snprintf(out, len, "198.%u.%u.%u", (unsigned)(18 + (net >> 8)), (unsigned)(net & 255),
                 (unsigned)host);
    }
}

/*---- requests ----*/

static void schedule(run_t *r, uint64_t at_ns, uint64_t user, int kind)
{
    if (r->stopping)
        return;
    lt_ticker_add(&r->ticker, at_ns, user << EV_BITS | (uint64_t)kind);
}

static void dispatch(run_t *r, uint64_t user, int kind, uint64_t sched_ns)
{
    req_t *q = cm_xcalloc(1, sizeof(*q));
    q->user = user;
    q->kind = kind;
    q->sched_ns = sched_ns;
    q->target = r->rr++ % r->sc->n_targets;
    q->next = NULL;
    target_t *tg = &r->targets[q->target];
    if (tg->qtail)
        tg->qtail->next = q;
    else
        tg->qhead = q;
    tg->qtail = q;
    tg->qlen++;
    r->inflight++;
    if (kind == EV_BUY)
        r->res->sent_buy++;
    else if (kind == EV_PAGE)
        r->res->page_sent++;
    else if (kind == EV_REG)
        r->res->reg_sent++;
    else
        r->res->sent_poll++;
    target_pump(tg);
}

static uint64_t retry_delay_ns(run_t *r, const user_t *u, int retry_after_s)
{
    if (is_aggressive(u))
        return (uint64_t)r->sc->bot_retry_ms * 1000000ull;
    double ms = retry_after_s >= 0 ? retry_after_s * 1000.0 : (double)r->sc->retry_default_ms;
    ms *= 1.0 + 0.2 * cm_rand_unit(&r->rng); /* jitter, as a polite client does */
    return (uint64_t)(ms * 1e6);
}

static void record_order(run_t *r, uint64_t uid, const char *body, uint64_t now)
{
    lt_results_t *res = r->res;
    user_t *u = &r->users[uid];
    json_t *j = json_loads(body, 0, NULL);
    const char *oid = j ? json_string_value(json_object_get(j, "order_id")) : NULL;
    if (!oid || strlen(oid) >= sizeof(res->orders[0].id)) {
        oid = NULL;
    }
    int64_t qty = j ? json_integer_value(json_object_get(j, "qty")) : 0;
    if (qty <= 0)
        qty = r->sc->qty;
    if (oid && u->order >= 0) {
        if (strcmp(res->orders[u->order].id, oid) == 0)
            res->dup_202++;
        else
            res->second_202++;
    }
    if (oid && (u->order < 0 || strcmp(res->orders[u->order].id, oid) != 0)) {
        if (res->n_orders == r->open_orders_cap) {
            r->open_orders_cap = r->open_orders_cap ? r->open_orders_cap * 2 : 1024;
            res->orders = cm_xrealloc(res->orders, r->open_orders_cap * sizeof(*res->orders));
        }
        lt_order_t *o = &res->orders[res->n_orders];
        memset(o, 0, sizeof(*o));
        snprintf(o->id, sizeof(o->id), "%s", oid);
        const char *tok = json_string_value(json_object_get(j, "status_token"));
        snprintf(o->token, sizeof(o->token), "%s", tok && strlen(tok) < sizeof(o->token) ? tok : "");
        o->user = uid;
        o->qty = (uint32_t)qty;
        o->at_s = (double)now / 1e9;
        snprintf(o->status, sizeof(o->status), "%s", oq_status_name(OQ_STATUS_QUEUED));
        u->order = (int32_t)res->n_orders++;
        if (u->kind != U_PERSON)
            res->orders_bots++;
    }
    json_decref(j);
}

/* A 202 "entered": the user's lottery entry (the first one; a retry gets it again). */
static void record_entry(run_t *r, uint64_t uid, const char *body)
{
    lt_results_t *res = r->res;
    user_t *u = &r->users[uid];
    json_t *j = json_loads(body, 0, NULL);
    const char *eid = j ? json_string_value(json_object_get(j, "order_id")) : NULL;
    const char *tok = j ? json_string_value(json_object_get(j, "status_token")) : NULL;
    if (eid && strlen(eid) < sizeof(res->entries[0].id)) {
        if (u->entry >= 0) {
            res->dup_entries++;
        } else {
            if (res->n_entries == r->entries_cap) {
                r->entries_cap = r->entries_cap ? r->entries_cap * 2 : 1024;
                res->entries = cm_xrealloc(res->entries, r->entries_cap * sizeof(*res->entries));
            }
            lt_entry_t *e = &res->entries[res->n_entries];
            memset(e, 0, sizeof(*e));
            snprintf(e->id, sizeof(e->id), "%s", eid);
            snprintf(e->token, sizeof(e->token), "%s",
                     tok && strlen(tok) < sizeof(e->token) ? tok : "");
            e->user = uid;
            int64_t qty = json_integer_value(json_object_get(j, "qty"));
            e->qty = qty > 0 ? (uint32_t)qty : r->sc->qty;
            u->entry = (int32_t)res->n_entries++;
        }
    }
    json_decref(j);
}

/* An entry that won: its id is now an order id, audited like any 202. */
static void entry_won(run_t *r, uint64_t uid, uint64_t now)
{
    lt_results_t *res = r->res;
    user_t *u = &r->users[uid];
    lt_entry_t *e = &res->entries[u->entry];
    e->outcome = 1;
    res->entries_won++;
    if (res->n_orders == r->open_orders_cap) {
        r->open_orders_cap = r->open_orders_cap ? r->open_orders_cap * 2 : 1024;
        res->orders = cm_xrealloc(res->orders, r->open_orders_cap * sizeof(*res->orders));
    }
    lt_order_t *o = &res->orders[res->n_orders];
    memset(o, 0, sizeof(*o));
    snprintf(o->id, sizeof(o->id), "%s", e->id);
    snprintf(o->token, sizeof(o->token), "%s", e->token);
    o->user = uid;
    o->qty = e->qty;
    o->at_s = (double)now / 1e9;
    snprintf(o->status, sizeof(o->status), "%s", oq_status_name(OQ_STATUS_QUEUED));
    u->order = (int32_t)res->n_orders++;
    if (u->kind != U_PERSON)
        res->orders_bots++;
}

/* The run clock's time of the draw named in an "entered" body (now if unknown). */
static uint64_t draw_time(const char *body, uint64_t now)
{
    json_t *j = json_loads(body, 0, NULL);
    const char *at = j ? json_string_value(json_object_get(j, "draw_at")) : NULL;
    int64_t ms = 0;
    uint64_t t = now;
    if (at && cm_time_parse_rfc3339(at, &ms) == 0) {
        int64_t d = ms - cm_wall_ms();
        if (d > 0)
            t = now + (uint64_t)d * 1000000ull;
    }
    json_decref(j);
    return t;
}

static void fine_record(run_t *r, const req_t *q, lt_ans_t a, uint64_t lat_us, bool good)
{
    lt_results_t *res = r->res;
    size_t b = (size_t)(q->sched_ns / (LT_FINE_BIN_MS * 1000000ull));
    if (b >= 360000) /* an hour of bins is the most a scenario can schedule */
        return;
    if (b >= res->n_fine) {
        size_t n = b + 1 > res->n_fine * 2 ? b + 1 : res->n_fine * 2;
        res->fine = cm_xrealloc(res->fine, n * sizeof(*res->fine));
        memset(res->fine + res->n_fine, 0, (n - res->n_fine) * sizeof(*res->fine));
        res->n_fine = n;
    }
    lt_fine_t *f = &res->fine[b];
    f->n++;
    if (good)
        f->good++;
    if (a == LT_ANS_A503)
        f->shed++;
    if (lat_us > LT_FINE_SLOW_MS * 1000u || a == LT_ANS_TIMEOUT || a == LT_ANS_ERROR)
        f->slow++;
    if (a == LT_ANS_ERROR)
        f->error++;
    if (a == LT_ANS_TIMEOUT)
        f->timeout++;
    if (a == LT_ANS_ERROR && r->refusing)
        f->refused++;
    if (lat_us / 1000u > f->max_ms)
        f->max_ms = (uint32_t)(lat_us / 1000u);
    uint64_t lag_ms = q->sent_ns > q->sched_ns ? (q->sent_ns - q->sched_ns) / 1000000u : 0;
    if (lag_ms > f->lag_max_ms)
        f->lag_max_ms = (uint32_t)lag_ms;
}

static void on_page_answer(run_t *r, req_t *q, int status, bool degraded, lt_ans_t transport,
                           uint64_t now)
{
    lt_results_t *res = r->res;
    lt_page_t a = status == 0 ? (transport == LT_ANS_TIMEOUT ? LT_PAGE_TIMEOUT : LT_PAGE_ERROR)
                              : lt_page_of_status(status, degraded);
    uint64_t lat_us = (now - q->sched_ns) / 1000u;
    res->page_answers[a]++;
    cm_hist_record(&res->page_hist[a], lat_us);
    second_at(r, now)->page[a]++;
    r->users[q->user].state = U_DONE; /* one page view per user, no retry */
}

static void on_buy_answer(run_t *r, req_t *q, lt_ans_t a, int retry_after_s, const char *body,
                          uint64_t now)
{
    user_t *u = &r->users[q->user];
    lt_results_t *res = r->res;
    uint64_t lat_us = (now - q->sched_ns) / 1000u;
    res->answers[a]++;
    cm_hist_record(&res->hist[a], lat_us);
    cm_hist_record(&res->buy_all, lat_us);
    bool good = a == LT_ANS_A202 || a == LT_ANS_A409 || a == LT_ANS_A410;
    if (good)
        cm_hist_record(&res->buy_good, lat_us);
    if (q->sent_ns && now >= q->sent_ns)
        cm_hist_record(&res->buy_sent, (now - q->sent_ns) / 1000u);
    fine_record(r, q, a, lat_us, good);
    lt_second_t *s = second_at(r, now);
    s->counts[a]++;
    cm_hist_record(&s->buy, lat_us);
    uint32_t max_retries = is_aggressive(u) ? r->sc->bot_max_retries : r->sc->max_retries;
    switch (a) {
    case LT_ANS_A202:
        if (body && strstr(body, "\"status\":\"entered\"")) {
            /* A lottery entry: poll it just after the draw, whatever poll_max says. */
            record_entry(r, q->user, body);
            if (u->entry >= 0 && u->order < 0) {
                u->state = U_POLLING;
                u->polls = 0;
                schedule(r, draw_time(body, now) + 100000000ull, q->user, EV_POLL);
            } else {
                u->state = U_DONE;
            }
            break;
        }
        record_order(r, q->user, body ? body : "", now);
        if (u->order >= 0 && r->sc->poll_max > 0) {
            u->state = U_POLLING;
            schedule(r, now + (uint64_t)r->sc->poll_interval_ms * 1000000ull, q->user, EV_POLL);
        } else {
            u->state = U_DONE;
        }
        break;
    case LT_ANS_A425:
    case LT_ANS_A429:
    case LT_ANS_A503:
    case LT_ANS_A5XX:
    case LT_ANS_ERROR:
    case LT_ANS_TIMEOUT:
        if (u->attempts < max_retries) {
            u->attempts++;
            uint64_t at = now + retry_delay_ns(r, u, retry_after_s);
            if (a == LT_ANS_A425 && !is_aggressive(u) && at < r->sale_start_ns)
                at = r->sale_start_ns;
            schedule(r, at, q->user, EV_BUY);
        } else {
            u->state = U_DONE;
        }
        break;
    default: /* 409, 410, 404, other 4xx: final */
        if (a == LT_ANS_A4XX && body && strstr(body, "\"not_registered\""))
            u->not_reg = true;
        u->state = U_DONE;
        break;
    }
}

/*
 * A registration's answer: 200/201 registered; another 4xx (403
 * registration_closed, 409 registration_full) final; 429, 503, 5xx, no
 * answer and 404 tried again while the window is open, at most REG_MAX_TRIES
 * times (a fleet's gateways learn of a sale created through another one
 * within a configuration poll, and answer 404 until then).
 */
static void on_reg_answer(run_t *r, req_t *q, int status, int retry_after_s, uint64_t now)
{
    user_t *u = &r->users[q->user];
    lt_results_t *res = r->res;
    if (status == 200 || status == 201) {
        u->reg = RG_OK;
        if (status == 201)
            res->reg_new++;
        else
            res->reg_again++;
        return;
    }
    if (status >= 400 && status < 500 && status != 429 && status != 404) {
        u->reg = RG_REFUSED;
        res->reg_refused++;
        return;
    }
    if (status == 0 || status >= 500) /* a timed-out write may have been recorded */
        u->reg_maybe = true;
    uint64_t at = now + retry_delay_ns(r, u, retry_after_s);
    if (++u->reg_tries >= REG_MAX_TRIES || at >= r->reg_closes_ns) {
        u->reg = RG_FAILED;
        res->reg_failed++;
        return;
    }
    schedule(r, at, q->user, EV_REG);
}

static void on_poll_answer(run_t *r, req_t *q, int status, const char *body, uint64_t now)
{
    user_t *u = &r->users[q->user];
    lt_results_t *res = r->res;
    uint64_t lat_us = (now - q->sched_ns) / 1000u;
    res->answers[LT_ANS_POLL]++;
    cm_hist_record(&res->hist[LT_ANS_POLL], lat_us);
    second_at(r, now)->counts[LT_ANS_POLL]++;
    u->polls++;
    const char *st = NULL;
    json_t *j = NULL;
    if (status == 200 && body) {
        j = json_loads(body, 0, NULL);
        st = json_string_value(json_object_get(j, "status"));
    }
    if (u->order < 0 && u->entry >= 0) {
        /* an undecided lottery entry */
        lt_entry_t *e = &res->entries[u->entry];
        if (status == 410) {
            json_t *lj = body ? json_loads(body, 0, NULL) : NULL;
            e->outcome = 2;
            e->position = (uint32_t)json_integer_value(json_object_get(lj, "draw_position"));
            res->entries_lost++;
            json_decref(lj);
            u->state = U_DONE;
        } else if (st && strcmp(st, "entered") != 0) {
            entry_won(r, q->user, now);
            u->polls = 0; /* from here on, an order's polls */
        }
        if (u->state != U_DONE && u->order < 0) {
            /* still entered (the draw is running) or a failed poll */
            if (u->polls < 60)
                schedule(r, now + (uint64_t)r->sc->poll_interval_ms * 1000000ull, q->user,
                         EV_POLL);
            else
                u->state = U_DONE;
            json_decref(j);
            return;
        }
        if (u->state == U_DONE) {
            json_decref(j);
            return;
        }
    }
    if (st && u->order >= 0)
        snprintf(res->orders[u->order].status, sizeof(res->orders[0].status), "%s", st);
    int sv = st ? oq_status_parse(st, strlen(st)) : -1;
    if (sv == OQ_STATUS_SETTLED || (sv >= 0 && oq_status_releases((oq_status_t)sv))) {
        if (sv == OQ_STATUS_SETTLED)
            res->polls_settled++;
        else if (sv == OQ_STATUS_FAILED)
            res->polls_failed++;
        else
            res->polls_cancelled++;
        u->state = U_DONE;
    } else if (u->polls < r->sc->poll_max) {
        schedule(r, now + (uint64_t)r->sc->poll_interval_ms * 1000000ull, q->user, EV_POLL);
    } else {
        res->polls_unfinished++;
        u->state = U_DONE;
    }
    json_decref(j);
}

static void finish_req(run_t *r, req_t *q, int status, int retry_after_s, const char *body,
                       bool degraded, lt_ans_t transport)
{
    uint64_t now = now_rel(r);
    r->inflight--;
    if (q->kind == EV_PAGE) {
        on_page_answer(r, q, status, degraded, transport, now);
    } else if (q->kind == EV_REG) {
        on_reg_answer(r, q, status, retry_after_s, now);
    } else if (q->kind == EV_BUY) {
        /* a transport failure counts under its own type and is retried like a 503 */
        on_buy_answer(r, q, status == 0 ? transport : lt_ans_of_status(status), retry_after_s,
                      body, now);
    } else {
        if (status == 0)
            r->res->answers[transport]++;
        on_poll_answer(r, q, status, body, now);
    }
    free(q);
}

/*---- connections ----*/

static void idle_push(target_t *tg, conn_t *c)
{
    c->state = C_IDLE;
    c->idle_pos = (int32_t)tg->n_idle;
    tg->idle[tg->n_idle++] = (uint32_t)(c - tg->conns);
}

static void idle_remove(target_t *tg, conn_t *c)
{
    if (c->idle_pos < 0)
        return;
    uint32_t last = tg->idle[--tg->n_idle];
    tg->idle[c->idle_pos] = last;
    tg->conns[last].idle_pos = c->idle_pos;
    c->idle_pos = -1;
}

static void on_close(uv_handle_t *h)
{
    conn_t *c = h->data;
    target_t *tg = c->tg;
    c->state = C_FREE;
    tg->open--;
    tg->run->open_total--;
    tg->free_[tg->n_free++] = (uint32_t)(c - tg->conns);
    if (!tg->run->stopping)
        target_pump(tg);
}

static void conn_close(conn_t *c)
{
    if (c->state == C_FREE || c->state == C_CLOSING)
        return;
    target_t *tg = c->tg;
    if (c->state == C_CONNECTING)
        tg->connecting--;
    idle_remove(tg, c);
    uv_timer_stop(&c->deadline);
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void conn_fail(conn_t *c, lt_ans_t why)
{
    req_t *q = c->cur;
    c->cur = NULL;
    run_t *r = c->tg->run;
    conn_close(c);
    if (q)
        finish_req(r, q, 0, -1, NULL, false, why);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)sz;
    conn_t *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

/* After an answer on a keep-alive connection: idle again, or closed when the idle cache is full. */
static void conn_done(conn_t *c)
{
    target_t *tg = c->tg;
    if (tg->keep_idle && tg->n_idle >= tg->keep_idle && !tg->qhead) {
        tg->run->res->idle_closed++;
        conn_close(c);
        return;
    }
    idle_push(tg, c);
    target_pump(tg);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    run_t *r = c->tg->run;
    if (n < 0) {
        conn_fail(c, LT_ANS_ERROR);
        return;
    }
    if (n == 0)
        return;
    if (!c->cur) { /* bytes nobody asked for */
        conn_fail(c, LT_ANS_ERROR);
        return;
    }
    size_t used;
    int rc = lt_http_parser_feed(&c->parser, buf->base, (size_t)n, &used);
    if (rc < 0 || (rc == LT_HTTP_DONE && used != (size_t)n)) {
        if (!r->quiet)
            fprintf(stderr, "flashgate-load: protocol error from %s:%d: %s\n", c->tg->host,
                    c->tg->port, c->parser.error ? c->parser.error : "bytes after the answer");
        conn_fail(c, LT_ANS_ERROR);
        return;
    }
    if (rc != LT_HTTP_DONE)
        return;
    req_t *q = c->cur;
    c->cur = NULL;
    uv_timer_stop(&c->deadline);
    lt_http_resp_t *resp = &c->parser.resp;
    bool close_it = resp->conn_close;
    finish_req(r, q, resp->status, resp->retry_after_s, resp->body, resp->degraded,
               LT_ANS_ERROR);
    if (close_it)
        conn_close(c);
    else if (c->state == C_BUSY)
        conn_done(c);
}

static void on_write(uv_write_t *w, int status)
{
    wreq_t *wq = w->data;
    conn_t *c = wq->c;
    free(wq);
    /* a closed connection cancels its writes (status < 0, state closing): nothing to do */
    if (status < 0 && c->state == C_BUSY)
        conn_fail(c, LT_ANS_ERROR);
}

/* The person gives up: the request counts as a timeout and its connection is closed. */
static void on_deadline(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->state != C_BUSY || !c->cur)
        return;
    run_t *r = c->tg->run;
    /* libuv's timers run on its cached millisecond clock: never give up early */
    uint64_t due = c->cur->sched_ns + (uint64_t)r->sc->give_up_ms * 1000000ull, now = now_rel(r);
    if (now < due) {
        uv_timer_start(&c->deadline, on_deadline, (due - now + 999999) / 1000000ull, 0);
        return;
    }
    r->res->gave_up++;
    conn_fail(c, LT_ANS_TIMEOUT);
}

static void conn_send(conn_t *c, req_t *q)
{
    run_t *r = c->tg->run;
    const lt_scenario_t *sc = r->sc;
    char uid[64], addr[32];
    user_id(r, q->user, uid, sizeof(uid));
    user_addr(r, q->user, addr, sizeof(addr));
    wreq_t *wq = cm_xmalloc(sizeof(*wq));
    wq->c = c;
    wq->wr.data = wq;
    /* A balancer that queued the request says when it took it: here, when it was due
     * (on the run's wall-clock zero, which has millisecond steps). */
    char stamp[64] = "";
    if (sc->request_start) {
        int64_t us = r->res->wall_t0_ms * 1000 + (int64_t)(q->sched_ns / 1000u);
        snprintf(stamp, sizeof(stamp), "X-Request-Start: t=%lld.%06lld\r\n",
                 (long long)(us / 1000000), (long long)(us % 1000000));
    }
    /* the account's token, before the stamp (which stays last in the head) */
    char auth[LT_TOKEN_MAX + 32 + 64] = "";
    if (r->crowd->tokens.arena)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n%s",
                 lt_tokens_get(&r->crowd->tokens, q->user), stamp);
    const char *extra = auth[0] ? auth : stamp;
    int n;
    if (q->kind == EV_BUY) {
        char body[160];
        int bl = snprintf(body, sizeof(body), "{\"user_id\":\"%s\",\"qty\":%u}", uid, sc->qty);
        n = snprintf(wq->data, sizeof(wq->data),
                     "POST /v1/sales/%s/orders HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n"
                     "X-Forwarded-For: %s\r\nIdempotency-Key: lt-%s-%s\r\n%s\r\n%s",
                     sc->sale_id, c->tg->host, c->tg->port, bl, addr, sc->sale_id, uid, extra,
                     body);
    } else if (q->kind == EV_REG) {
        /* user_id for a gateway with identity.mode=none; with identity on, the
         * token's account (the same) and person register */
        n = snprintf(wq->data, sizeof(wq->data),
                     "POST /v1/sales/%s/registrations?user_id=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Content-Length: 0\r\nX-Forwarded-For: %s\r\n%s\r\n",
                     sc->sale_id, uid, c->tg->host, c->tg->port, addr, extra);
    } else if (q->kind == EV_PAGE) {
        n = snprintf(wq->data, sizeof(wq->data),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nX-Forwarded-For: %s\r\n%s\r\n",
                     sc->noncore_path, c->tg->host, c->tg->port, addr, extra);
    } else if (r->users[q->user].order < 0) {
        const lt_entry_t *e = &r->res->entries[r->users[q->user].entry];
        n = snprintf(wq->data, sizeof(wq->data),
                     "GET /v1/orders/%s?token=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "X-Forwarded-For: %s\r\n%s\r\n",
                     e->id, e->token, c->tg->host, c->tg->port, addr, extra);
    } else {
        const lt_order_t *o = &r->res->orders[r->users[q->user].order];
        n = snprintf(wq->data, sizeof(wq->data),
                     "GET /v1/orders/%s?token=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "X-Forwarded-For: %s\r\n%s\r\n",
                     o->id, o->token, c->tg->host, c->tg->port, addr, extra);
    }
    c->cur = q;
    c->state = C_BUSY;
    q->sent_ns = now_rel(r);
    lt_http_parser_reset(&c->parser, false);
    second_at(r, q->sent_ns)->sent++;
    if (sc->give_up_ms) {
        uint64_t due = q->sched_ns + (uint64_t)sc->give_up_ms * 1000000ull;
        uint64_t left_ms = due > q->sent_ns ? (due - q->sent_ns + 999999) / 1000000ull : 0;
        uv_timer_start(&c->deadline, on_deadline, left_ms, 0);
    }
    if (n < 0 || (size_t)n >= sizeof(wq->data)) /* cannot happen: ids and paths are bounded */
        n = 0;
    uv_buf_t b = uv_buf_init(wq->data, (unsigned)n);
    if (uv_write(&wq->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        free(wq);
        conn_fail(c, LT_ANS_ERROR);
    }
}

static req_t *queue_pop(target_t *tg)
{
    req_t *q = tg->qhead;
    if (q) {
        tg->qhead = q->next;
        if (!tg->qhead)
            tg->qtail = NULL;
        tg->qlen--;
        q->next = NULL;
    }
    return q;
}

static void on_connect(uv_connect_t *cr, int status)
{
    conn_t *c = cr->data;
    run_t *r = c->tg->run;
    target_t *tg = c->tg;
    if (c->state != C_CONNECTING)
        return;
    if (status < 0) {
        r->res->connect_errors++;
        conn_close(c);
        /* fail the oldest waiting request so a dead target does not stall the run */
        req_t *q = queue_pop(tg);
        if (q) {
            r->refusing = true; /* the fine timeline tells refused from reset */
            finish_req(r, q, 0, -1, NULL, false, LT_ANS_ERROR);
            r->refusing = false;
        }
        return;
    }
    tg->connecting--;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    idle_push(tg, c);
    target_pump(tg);
}

static void conn_open(conn_t *c)
{
    target_t *tg = c->tg;
    run_t *r = tg->run;
    uv_tcp_init(&r->loop, &c->tcp);
    c->tcp.data = c;
    c->cr.data = c;
    c->state = C_CONNECTING;
    c->idle_pos = -1;
    tg->connecting++;
    tg->open++;
    if (++r->open_total > r->res->max_open)
        r->res->max_open = r->open_total;
    r->res->connects++;
    if (uv_tcp_connect(&c->cr, &c->tcp, (struct sockaddr *)&tg->addr, on_connect) < 0) {
        /* no socket or no local port (EMFILE, EADDRNOTAVAIL): the oldest waiting request
         * fails, as after a refused connect, so the pump does not retry in a loop */
        r->res->connect_errors++;
        conn_close(c);
        req_t *q = queue_pop(tg);
        if (q)
            finish_req(r, q, 0, -1, NULL, false, LT_ANS_ERROR);
    }
}

/*
 * Hands waiting requests to idle connections; opens connections while more
 * requests wait than connections are being opened. A request past its
 * give_up_ms is not sent: the person has left.
 */
static void target_pump(target_t *tg)
{
    run_t *r = tg->run;
    uint64_t give_up = (uint64_t)r->sc->give_up_ms * 1000000ull;
    while (tg->qhead && tg->n_idle) {
        req_t *q = queue_pop(tg);
        if (give_up && now_rel(r) - q->sched_ns >= give_up) {
            r->res->gave_up++;
            finish_req(r, q, 0, -1, NULL, false, LT_ANS_TIMEOUT);
            continue;
        }
        conn_t *c = &tg->conns[tg->idle[tg->n_idle - 1]];
        idle_remove(tg, c);
        conn_send(c, q);
    }
    while (tg->qlen > tg->connecting && tg->n_free)
        conn_open(&tg->conns[tg->free_[--tg->n_free]]);
}

/* Requests still waiting in a FIFO when their person gives up (every 5 ms). */
static void on_giveup_sweep(uv_timer_t *t)
{
    run_t *r = t->data;
    uint64_t give_up = (uint64_t)r->sc->give_up_ms * 1000000ull;
    uint64_t now = now_rel(r);
    for (size_t i = 0; i < r->sc->n_targets; i++) {
        target_t *tg = &r->targets[i];
        /* the FIFO is in dispatch order, which is scheduled order */
        while (tg->qhead && now - tg->qhead->sched_ns >= give_up) {
            req_t *q = queue_pop(tg);
            r->res->gave_up++;
            finish_req(r, q, 0, -1, NULL, false, LT_ANS_TIMEOUT);
        }
    }
}

/*
 * Opens `warm` connections per target (this loop's share of
 * sc->warm_connections) and runs the loop until each is
 * connected or has failed (5 s at most), before the first arrival: a CDN
 * edge's keep-alive pool to the origin is warm when a sale opens (the sale's
 * page, its countdown and the polls used it), and a crowd that starts with no
 * connection makes every request of the first milliseconds a connect. At
 * 30,000 arrivals/s that cold start alone (300 connects in the first 10 ms,
 * on both sides of loopback) put the whole dependency-bound run 100-400 ms
 * late from its first bin on (bench/README.md "The load generator").
 */
static void on_warm_timer(uv_timer_t *t)
{
    (void)t; /* its firing is what ends the wait */
}

static void warm_up(run_t *r, uint32_t warm)
{
    const lt_scenario_t *sc = r->sc;
    if (!warm)
        return;
    for (size_t t = 0; t < sc->n_targets; t++) {
        target_t *tg = &r->targets[t];
        for (uint32_t i = 0; i < warm && tg->n_free; i++)
            conn_open(&tg->conns[tg->free_[--tg->n_free]]);
    }
    /* a connect that hangs (a target dropping SYNs) would block UV_RUN_ONCE:
     * the timer wakes the loop when the 5 s are up */
    uv_timer_init(&r->loop, &r->warm_timer);
    r->warm_timer_init = true;
    uv_timer_start(&r->warm_timer, on_warm_timer, 5000, 0);
    uint64_t t0 = cm_mono_ns();
    for (;;) {
        uint32_t connecting = 0;
        for (size_t t = 0; t < sc->n_targets; t++)
            connecting += r->targets[t].connecting;
        if (!connecting || cm_mono_ns() - t0 >= 5000000000ull)
            break;
        uv_run(&r->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&r->warm_timer);
    /* what the run counts starts now; the warm connections stay open, idle */
    r->res->warm_open = r->open_total;
    r->res->connects = 0;
    r->res->connect_errors = 0;
}

/*---- the crowd ----*/

static void press_time_for(run_t *r, uint64_t user, uint64_t arrival_ns, uint64_t *press_ns)
{
    user_t *u = &r->users[user];
    if (arrival_ns >= r->sale_start_ns) {
        *press_ns = arrival_ns;
        return;
    }
    double ms;
    switch (u->kind) {
    case U_SCALPER:
    case U_AGGRESSIVE:
        ms = -r->sc->bot_early_ms * cm_rand_unit(&r->rng);
        break;
    case U_BOT:
        ms = r->sc->bot_reaction_ms * cm_rand_unit(&r->rng);
        break;
    default:
        ms = -log1p(-cm_rand_unit(&r->rng)) * r->sc->person_reaction_ms;
        break;
    }
    int64_t t = (int64_t)r->sale_start_ns + (int64_t)(ms * 1e6);
    if (t < (int64_t)arrival_ns)
        t = (int64_t)arrival_ns;
    *press_ns = (uint64_t)t;
}

static void on_fire(void *ctx, uint64_t sched_ns, uint64_t now_ns, bool is_arrival,
                    uint64_t payload)
{
    run_t *r = ctx;
    if (r->stopping)
        return;
    if (is_arrival) {
        uint64_t press;
        press_time_for(r, payload, sched_ns, &press);
        r->res->arrivals++;
        if (r->users[payload].page) { /* a page view does not wait for the sale */
            r->users[payload].state = U_BUYING;
            cm_hist_record(&r->res->send_lag, (now_ns - sched_ns) / 1000u);
            dispatch(r, payload, EV_PAGE, sched_ns);
            return;
        }
        r->users[payload].state = U_BUYING;
        if (press > sched_ns) {
            schedule(r, press, payload, EV_BUY);
            return;
        }
        cm_hist_record(&r->res->send_lag, (now_ns - sched_ns) / 1000u);
        dispatch(r, payload, EV_BUY, sched_ns);
        return;
    }
    cm_hist_record(&r->res->send_lag, (now_ns - sched_ns) / 1000u);
    dispatch(r, payload >> EV_BITS, (int)(payload & ((1u << EV_BITS) - 1)), sched_ns);
}

static void stop_run(run_t *r)
{
    r->stopping = true;
    lt_ticker_close(&r->ticker);
    uv_timer_stop(&r->progress);
    uv_close((uv_handle_t *)&r->progress, NULL);
    uv_close((uv_handle_t *)&r->giveup_sweep, NULL);
    if (r->warm_timer_init)
        uv_close((uv_handle_t *)&r->warm_timer, NULL);
    r->res->unfinished = r->inflight;
    for (size_t t = 0; t < r->sc->n_targets; t++) {
        target_t *tg = &r->targets[t];
        while (tg->qhead) {
            req_t *q = tg->qhead;
            tg->qhead = q->next;
            free(q);
        }
        tg->qtail = NULL;
        for (uint32_t i = 0; i < tg->n_conns; i++) {
            conn_t *c = &tg->conns[i];
            CM_FREE(c->cur);
            conn_close(c);
            uv_close((uv_handle_t *)&c->deadline, NULL);
        }
    }
}

/* This loop's figures for loop 0's progress line. */
static void publish(run_t *r)
{
    pub_t *p = &r->pub;
    for (int a = 0; a < LT_ANS_N; a++)
        atomic_store_explicit(&p->answers[a], r->res->answers[a], memory_order_relaxed);
    for (int a = 0; a < LT_PAGE_N; a++)
        atomic_store_explicit(&p->pages[a], r->res->page_answers[a], memory_order_relaxed);
    atomic_store_explicit(&p->inflight, r->inflight, memory_order_relaxed);
    atomic_store_explicit(&p->open, r->open_total, memory_order_relaxed);
    atomic_store_explicit(&p->p99_us, cm_hist_percentile(&r->res->buy_all, 99),
                          memory_order_relaxed);
}

/* Loop 0 prints the crowd's progress: the sum of every loop's last figures (the
 * p99 is the worst loop's). */
static void print_progress(run_t *r, uint64_t now)
{
    crowd_t *cw = r->crowd;
    publish(r);
    uint64_t ans[LT_ANS_N] = {0}, pg[LT_PAGE_N] = {0}, inflight = 0, open = 0, p99 = 0;
    for (size_t k = 0; k < cw->n_loops; k++) {
        pub_t *p = &cw->loops[k]->pub;
        for (int a = 0; a < LT_ANS_N; a++)
            ans[a] += atomic_load_explicit(&p->answers[a], memory_order_relaxed);
        for (int a = 0; a < LT_PAGE_N; a++)
            pg[a] += atomic_load_explicit(&p->pages[a], memory_order_relaxed);
        inflight += atomic_load_explicit(&p->inflight, memory_order_relaxed);
        open += atomic_load_explicit(&p->open, memory_order_relaxed);
        uint64_t q = atomic_load_explicit(&p->p99_us, memory_order_relaxed);
        if (q > p99)
            p99 = q;
    }
    uint64_t total = 0;
    for (int a = 0; a < LT_ANS_N; a++)
        total += ans[a];
    double dt = (double)(now - r->last_t_ns) / 1e9;
    double rate = dt > 0 ? (double)(total - r->last_answers) / dt : 0;
    r->last_answers = total;
    r->last_t_ns = now;
    char pages[200] = "";
    if (r->sc->noncore_share > 0)
        snprintf(pages, sizeof(pages), " | pages 200 %llu degraded %llu 503 %llu other %llu",
                 (unsigned long long)pg[LT_PAGE_OK], (unsigned long long)pg[LT_PAGE_DEGRADED],
                 (unsigned long long)pg[LT_PAGE_P503],
                 (unsigned long long)(pg[LT_PAGE_P4XX] + pg[LT_PAGE_P5XX] + pg[LT_PAGE_ERROR] +
                                      pg[LT_PAGE_TIMEOUT]));
    if (r->sc->connection_mode == LT_CONN_OPEN)
        snprintf(pages + strlen(pages), sizeof(pages) - strlen(pages), " | open %llu",
                 (unsigned long long)open);
    fprintf(stderr,
            "[%5.1fs] %7.0f ans/s | 202 %llu 409 %llu 410 %llu 425 %llu 429 %llu 503 %llu "
            "other %llu neterr %llu tmo %llu poll %llu | inflight %llu | p99 %.1f ms%s\n",
            (double)now / 1e9, rate, (unsigned long long)ans[LT_ANS_A202],
            (unsigned long long)ans[LT_ANS_A409], (unsigned long long)ans[LT_ANS_A410],
            (unsigned long long)ans[LT_ANS_A425], (unsigned long long)ans[LT_ANS_A429],
            (unsigned long long)ans[LT_ANS_A503],
            (unsigned long long)(ans[LT_ANS_A5XX] + ans[LT_ANS_A4XX] + ans[LT_ANS_A404]),
            (unsigned long long)ans[LT_ANS_ERROR], (unsigned long long)ans[LT_ANS_TIMEOUT],
            (unsigned long long)ans[LT_ANS_POLL], (unsigned long long)inflight,
            (double)p99 / 1000.0, pages);
}

/* 100 ms housekeeping: timeouts, end of run, progress once a second. */
static void on_progress(uv_timer_t *t)
{
    run_t *r = t->data;
    uint64_t now = now_rel(r);
    uint64_t tmo = (uint64_t)r->sc->request_timeout_ms * 1000000ull;
    for (size_t i = 0; i < r->sc->n_targets; i++) {
        target_t *tg = &r->targets[i];
        for (uint32_t k = 0; k < tg->n_conns; k++) {
            conn_t *c = &tg->conns[k];
            if (c->state == 3 && c->cur && now - c->cur->sched_ns > tmo)
                conn_fail(c, LT_ANS_TIMEOUT);
        }
        while (tg->qhead && now - tg->qhead->sched_ns > tmo) {
            req_t *q = tg->qhead;
            tg->qhead = q->next;
            if (!tg->qhead)
                tg->qtail = NULL;
            tg->qlen--;
            finish_req(r, q, 0, -1, NULL, false, LT_ANS_TIMEOUT);
        }
    }
    if (now - r->last_pub_ns >= 500000000ull) {
        publish(r);
        r->last_pub_ns = now;
    }
    if (!r->quiet && now - r->last_t_ns >= 1000000000ull)
        print_progress(r, now);
    bool done = now >= r->stop_ns ||
                (now >= r->profile_end_ns && lt_ticker_idle(&r->ticker) && r->inflight == 0);
    if (done) {
        publish(r);
        if (!r->quiet)
            print_progress(r, now);
        r->res->elapsed_s = (double)now / 1e9;
        stop_run(r);
    }
}

/* The sale's lottery window in an admin API sale body ("fair_window_ms",
 * absent for a first-come sale). */
static uint32_t sale_fair_window(const json_t *sale)
{
    json_int_t w = json_integer_value(json_object_get(sale, "fair_window_ms"));
    return w > 0 && w <= UINT32_MAX ? (uint32_t)w : 0;
}

/* PUTs the sale; with reg_opens_ms > 0 it requires registration in [opens, closes).
 * *window_ms: the lottery window the sale got (the scenario's, or the gateway's
 * default when the scenario names none). */
static int create_sale(const lt_scenario_t *sc, int64_t start_ms, int64_t reg_opens_ms,
                       int64_t reg_closes_ms, uint32_t *window_ms, char *eb, size_t el)
{
    char starts[40], ends[40], body[512], path[160];
    cm_time_format_rfc3339(start_ms, starts, sizeof(starts));
    cm_time_format_rfc3339(start_ms + (int64_t)(sc->sale_duration_s * 1000), ends, sizeof(ends));
    int bl = snprintf(body, sizeof(body),
                      "{\"stock\":%lld,\"per_user_limit\":%u,\"starts_at\":\"%s\",\"ends_at\":\"%s\"",
                      (long long)sc->sale_stock, sc->per_user_limit, starts, ends);
    /* Only what the scenario says: a sale created without a window gets the
     * gateway's default (sales.default_fair_window_ms), as an operator's PUT
     * does, so the rehearsal rehearses the sale the product makes. */
    if (sc->has_fair_window)
        bl += snprintf(body + bl, sizeof(body) - (size_t)bl, ",\"fair_window_ms\":%u",
                       sc->fair_window_ms);
    if (sc->has_fair_early)
        bl += snprintf(body + bl, sizeof(body) - (size_t)bl, ",\"fair_early_ms\":%u",
                       sc->fair_early_ms);
    if (reg_opens_ms > 0)
        bl += snprintf(body + bl, sizeof(body) - (size_t)bl,
                       ",\"registration_opens_at\":%lld,\"registration_closes_at\":%lld",
                       (long long)reg_opens_ms, (long long)reg_closes_ms);
    snprintf(body + bl, sizeof(body) - (size_t)bl, "}");
    snprintf(path, sizeof(path), "/admin/v1/sales/%s", sc->sale_id);
    int status;
    char *resp;
    int rc = lt_http_simple("PUT", sc->admin_url, path, sc->admin_token, body, 5000, &status,
                            &resp, eb, el);
    if (rc < 0)
        return rc;
    if (status < 200 || status > 299) {
        snprintf(eb, el, "PUT %s%s: HTTP %d: %.200s", sc->admin_url, path, status, resp);
        free(resp);
        return CM_EBACKEND;
    }
    json_t *j = json_loads(resp, 0, NULL);
    *window_ms = sale_fair_window(j);
    json_decref(j);
    free(resp);
    return 0;
}

/* When the sale is not ours to create, ask the admin API when it starts. */
static int64_t existing_start_ms(const lt_scenario_t *sc, uint32_t *window_ms)
{
    if (!sc->admin_url)
        return 0;
    char path[160], eb[256];
    snprintf(path, sizeof(path), "/admin/v1/sales/%s", sc->sale_id);
    int status;
    char *resp;
    if (lt_http_simple("GET", sc->admin_url, path, sc->admin_token, NULL, 5000, &status, &resp,
                       eb, sizeof(eb)) < 0)
        return 0;
    int64_t ms = 0;
    json_t *j = json_loads(resp, 0, NULL);
    const char *s = json_string_value(json_object_get(j, "starts_at"));
    if (s)
        cm_time_parse_rfc3339(s, &ms);
    *window_ms = sale_fair_window(j);
    json_decref(j);
    free(resp);
    return ms;
}

static void results_init(lt_results_t *res)
{
    memset(res, 0, sizeof(*res));
    for (int a = 0; a < LT_ANS_N; a++)
        cm_hist_init(&res->hist[a]);
    for (int a = 0; a < LT_PAGE_N; a++)
        cm_hist_init(&res->page_hist[a]);
    cm_hist_init(&res->buy_all);
    cm_hist_init(&res->buy_good);
    cm_hist_init(&res->buy_sent);
    cm_hist_init(&res->send_lag);
}

/* Adds one loop's results into d (the run's); s keeps nothing afterwards. */
static void results_merge(lt_results_t *d, lt_results_t *s)
{
    d->arrivals += s->arrivals;
    d->sent_buy += s->sent_buy;
    d->sent_poll += s->sent_poll;
    for (int a = 0; a < LT_ANS_N; a++) {
        d->answers[a] += s->answers[a];
        cm_hist_merge(&d->hist[a], &s->hist[a]);
    }
    cm_hist_merge(&d->buy_all, &s->buy_all);
    cm_hist_merge(&d->buy_good, &s->buy_good);
    cm_hist_merge(&d->buy_sent, &s->buy_sent);
    d->page_sent += s->page_sent;
    for (int a = 0; a < LT_PAGE_N; a++) {
        d->page_answers[a] += s->page_answers[a];
        cm_hist_merge(&d->page_hist[a], &s->page_hist[a]);
    }
    if (s->n_fine > d->n_fine) {
        d->fine = cm_xrealloc(d->fine, s->n_fine * sizeof(*d->fine));
        memset(d->fine + d->n_fine, 0, (s->n_fine - d->n_fine) * sizeof(*d->fine));
        d->n_fine = s->n_fine;
    }
    for (size_t i = 0; i < s->n_fine; i++) {
        lt_fine_t *f = &d->fine[i];
        const lt_fine_t *g = &s->fine[i];
        f->n += g->n;
        f->good += g->good;
        f->shed += g->shed;
        f->slow += g->slow;
        f->error += g->error;
        f->refused += g->refused;
        f->timeout += g->timeout;
        if (g->max_ms > f->max_ms)
            f->max_ms = g->max_ms;
        if (g->lag_max_ms > f->lag_max_ms)
            f->lag_max_ms = g->lag_max_ms;
    }
    cm_hist_merge(&d->send_lag, &s->send_lag);
    if (s->n_secs > d->n_secs) {
        d->secs = cm_xrealloc(d->secs, s->n_secs * sizeof(*d->secs));
        for (size_t i = d->n_secs; i < s->n_secs; i++) {
            memset(&d->secs[i], 0, offsetof(lt_second_t, buy));
            cm_hist_init(&d->secs[i].buy);
        }
        d->n_secs = s->n_secs;
    }
    for (size_t i = 0; i < s->n_secs; i++) {
        d->secs[i].sent += s->secs[i].sent;
        for (int a = 0; a < LT_ANS_N; a++)
            d->secs[i].counts[a] += s->secs[i].counts[a];
        for (int a = 0; a < LT_PAGE_N; a++)
            d->secs[i].page[a] += s->secs[i].page[a];
        cm_hist_merge(&d->secs[i].buy, &s->secs[i].buy);
    }
    if (s->n_orders) {
        d->orders = cm_xrealloc(d->orders, (d->n_orders + s->n_orders) * sizeof(*d->orders));
        memcpy(d->orders + d->n_orders, s->orders, s->n_orders * sizeof(*d->orders));
        d->n_orders += s->n_orders;
    }
    if (s->n_entries) {
        d->entries =
            cm_xrealloc(d->entries, (d->n_entries + s->n_entries) * sizeof(*d->entries));
        memcpy(d->entries + d->n_entries, s->entries, s->n_entries * sizeof(*d->entries));
        d->n_entries += s->n_entries;
    }
    d->dup_202 += s->dup_202;
    d->second_202 += s->second_202;
    d->polls_settled += s->polls_settled;
    d->polls_failed += s->polls_failed;
    d->polls_cancelled += s->polls_cancelled;
    d->polls_unfinished += s->polls_unfinished;
    d->unfinished += s->unfinished;
    d->connects += s->connects;
    d->connect_errors += s->connect_errors;
    d->warm_open += s->warm_open;
    d->gave_up += s->gave_up;
    d->max_open += s->max_open; /* each loop's most at once: an upper bound of the crowd's */
    d->idle_closed += s->idle_closed;
    if (s->elapsed_s > d->elapsed_s)
        d->elapsed_s = s->elapsed_s;
    d->orders_bots += s->orders_bots;
    d->dup_entries += s->dup_entries;
    d->entries_won += s->entries_won;
    d->entries_lost += s->entries_lost;
    for (int c = 0; c < LT_CLASS_N; c++) {
        d->class_users[c] += s->class_users[c];
        d->class_tried[c] += s->class_tried[c];
        d->class_entrants[c] += s->class_entrants[c];
        d->class_won_orders[c] += s->class_won_orders[c];
        d->class_won_units[c] += s->class_won_units[c];
        d->class_registered[c] += s->class_registered[c];
        d->class_not_registered[c] += s->class_not_registered[c];
    }
    d->reg_sent += s->reg_sent;
    d->reg_new += s->reg_new;
    d->reg_again += s->reg_again;
    d->reg_refused += s->reg_refused;
    d->reg_failed += s->reg_failed;
    d->registered_refused += s->registered_refused;
    lt_results_free(s);
}

/* Loop k's share of n (k < loops): n split as evenly as it goes, the first loops
 * taking the remainder. */
static uint32_t share_of(uint32_t n, size_t k, size_t loops)
{
    return (uint32_t)(n / loops + (k < n % loops ? 1 : 0));
}

static int user_class(const user_t *u)
{
    switch (u->kind) {
    case U_PERSON:
        return LT_CLASS_PERSON;
    case U_BOT:
        return LT_CLASS_BOT;
    case U_AGGRESSIVE:
        return LT_CLASS_AGGRESSIVE;
    default:
        return LT_CLASS_SCALPER;
    }
}

/* The crowd classes of this loop's users (every loops-th from idx), for the audit. */
static void class_stats(run_t *r)
{
    lt_results_t *res = r->res;
    size_t n = r->crowd->n_loops;
    uint64_t accounts = lt_scenario_accounts(r->sc);
    for (uint64_t i = r->idx; i < accounts; i += n) {
        const user_t *u = &r->users[i];
        if (u->page)
            continue;
        int c = user_class(u);
        res->class_users[c]++;
        if (u->state != U_WAITING)
            res->class_tried[c]++;
        if (u->entry >= 0)
            res->class_entrants[c]++;
        if (u->reg == RG_OK)
            res->class_registered[c]++;
        if (u->not_reg)
            res->class_not_registered[c]++;
        if (u->not_reg && u->reg == RG_OK)
            res->registered_refused++;
        if (u->order >= 0) {
            res->class_won_orders[c]++;
            res->class_won_units[c] += res->orders[u->order].qty;
            r->crowd->won_units[i] = res->orders[u->order].qty;
        }
    }
}

static int cmp_operator(const void *x, const void *y)
{
    const lt_operator_stat_t *a = x, *b = y;
    if (a->won_units != b->won_units)
        return a->won_units > b->won_units ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/*
 * The crowd per person, after every loop has ended: which persons pressed,
 * entered, won (any of their accounts did), the most units one person of a
 * class won, and the operators that won the most units.
 */
static void person_stats(const lt_scenario_t *sc, const crowd_t *cw, lt_results_t *res)
{
    uint64_t accounts = lt_scenario_accounts(sc), persons = lt_scenario_persons(sc);
    /* P_REG: an account's registration was answered 200/201, or may have been
     * recorded (a try without an answer) */
    enum { P_TRIED = 1, P_ENTERED = 2, P_COUNTED = 4, P_REG_OK = 8, P_REG = 16 };
    uint8_t *flags = cm_xcalloc(persons ? persons : 1, 1);
    uint32_t *units = cm_xcalloc(persons ? persons : 1, sizeof(uint32_t));
    uint8_t *cls = cm_xcalloc(persons ? persons : 1, 1);
    lt_operator_stat_t *ops = cm_xcalloc(sc->operators ? sc->operators : 1, sizeof(*ops));
    for (uint64_t o = 0; o < sc->operators; o++) {
        ops[o].id = o;
        ops[o].accounts = sc->accounts_per_operator;
        ops[o].persons = sc->persons_per_operator;
    }
    for (uint64_t i = 0; i < accounts; i++) {
        const user_t *u = &cw->users[i];
        if (u->page)
            continue;
        uint32_t p = u->person;
        flags[p] |= P_COUNTED;
        cls[p] = (uint8_t)user_class(u);
        if (u->state != U_WAITING)
            flags[p] |= P_TRIED;
        if (u->entry >= 0)
            flags[p] |= P_ENTERED;
        if (u->reg == RG_OK)
            flags[p] |= P_REG_OK;
        if (u->reg == RG_OK || u->reg_maybe)
            flags[p] |= P_REG;
        units[p] += cw->won_units[i];
        if (u->kind == U_SCALPER) {
            lt_operator_stat_t *op = &ops[(p - sc->users) / sc->persons_per_operator];
            op->entrants += u->entry >= 0;
            op->won_orders += cw->won_units[i] > 0;
            op->won_units += cw->won_units[i];
        }
    }
    for (uint64_t p = 0; p < persons; p++) {
        if (!(flags[p] & P_COUNTED))
            continue;
        int c = cls[p];
        res->class_persons[c]++;
        res->class_person_tried[c] += (flags[p] & P_TRIED) != 0;
        res->class_person_entrants[c] += (flags[p] & P_ENTERED) != 0;
        res->class_person_registered[c] += (flags[p] & P_REG_OK) != 0;
        res->class_person_reg_entrants[c] += (flags[p] & (P_ENTERED | P_REG)) == (P_ENTERED | P_REG);
        if (sc->reg && (flags[p] & (P_ENTERED | P_REG)) == P_ENTERED)
            res->unregistered_entrants++;
        res->class_person_winners[c] += units[p] > 0;
        if (units[p] > res->class_max_person_units[c])
            res->class_max_person_units[c] = units[p];
    }
    qsort(ops, sc->operators, sizeof(*ops), cmp_operator);
    res->n_top_operators = sc->operators < LT_TOP_OPERATORS ? sc->operators : LT_TOP_OPERATORS;
    memcpy(res->top_operators, ops, res->n_top_operators * sizeof(*ops));
    free(ops);
    free(cls);
    free(units);
    free(flags);
}

/*
 * This loop's registrations: each registering account sends its own at a time
 * drawn uniformly from the first half of the window (the second half leaves
 * room for retries); none when the run started after the window closed.
 */
static void schedule_registrations(run_t *r)
{
    crowd_t *cw = r->crowd;
    int64_t opens = cw->reg_opens_ms - cw->wall_t0_ms, closes = cw->reg_closes_ms - cw->wall_t0_ms;
    if (opens < 0)
        opens = 0;
    r->reg_closes_ns = closes > 0 ? (uint64_t)closes * 1000000ull : 0;
    uint64_t from = (uint64_t)opens * 1000000ull;
    uint64_t span = closes > opens ? (uint64_t)(closes - opens) * 1000000ull / 2 : 0;
    uint64_t accounts = lt_scenario_accounts(r->sc);
    for (uint64_t i = r->idx; i < accounts; i += cw->n_loops) {
        user_t *u = &r->users[i];
        if (u->reg != RG_WANT)
            continue;
        if (!span) {
            u->reg = RG_FAILED;
            r->res->reg_failed++;
            continue;
        }
        schedule(r, from + (uint64_t)(cm_rand_unit(&r->rng) * (double)span), i, EV_REG);
    }
}

/* One loop: its connections, its warm-up, then its deal of the crowd to the end. */
static void *loop_main(void *arg)
{
    run_t *r = arg;
    crowd_t *cw = r->crowd;
    const lt_scenario_t *sc = r->sc;
    size_t k = r->idx, n = cw->n_loops;
    bool open_mode = sc->connection_mode == LT_CONN_OPEN;
    int rc = uv_loop_init(&r->loop);
    if (rc < 0) /* cannot happen short of no file descriptors: the loop sits the run out */
        fprintf(stderr, "flashgate-load: loop %zu: uv_loop_init: %s\n", k, uv_strerror(rc));
    for (size_t t = 0; rc == 0 && t < sc->n_targets; t++) {
        target_t *tg = &r->targets[t];
        tg->run = r;
        snprintf(tg->host, sizeof(tg->host), "%s", cw->host[t]);
        tg->port = cw->port[t];
        tg->addr = cw->addr[t];
        tg->n_conns = share_of(open_mode ? sc->connections_max : sc->connections, k, n);
        tg->keep_idle = open_mode ? share_of(sc->connections, k, n) : 0;
        tg->conns = cm_xcalloc(tg->n_conns, sizeof(conn_t));
        tg->idle = cm_xcalloc(tg->n_conns, sizeof(uint32_t));
        tg->free_ = cm_xcalloc(tg->n_conns, sizeof(uint32_t));
        for (uint32_t i = 0; i < tg->n_conns; i++) {
            conn_t *c = &tg->conns[i];
            c->tg = tg;
            c->idle_pos = -1;
            lt_http_parser_init(&c->parser, false);
            uv_timer_init(&r->loop, &c->deadline);
            c->deadline.data = c;
            tg->free_[tg->n_free++] = tg->n_conns - 1 - i; /* slot 0 is used first */
        }
    }
    if (rc == 0)
        warm_up(r, share_of(sc->warm_connections, k, n));
    /* the clock starts when every loop is warm: loop 0 reads it between two barriers */
    pthread_barrier_wait(&cw->go);
    if (k == 0) {
        cw->t0_ns = cm_mono_ns();
        cw->wall_t0_ms = cm_wall_ms();
    }
    pthread_barrier_wait(&cw->go);
    if (rc < 0)
        return NULL;
    lt_results_t *res = r->res;
    lt_ticker_init(&r->ticker, &r->loop, cw->arrivals, cw->n_arrivals, on_fire, r);
    lt_ticker_deal(&r->ticker, k, n);
    lt_ticker_start_at(&r->ticker, cw->t0_ns);
    res->wall_t0_ms = cw->wall_t0_ms;
    if (sc->reg)
        schedule_registrations(r);
    int64_t rel = cw->start_ms - cw->wall_t0_ms;
    r->sale_start_ns = rel > 0 ? (uint64_t)rel * 1000000ull : 0;
    res->sale_start_s = (double)r->sale_start_ns / 1e9;
    double prof = lt_scenario_profile_s(sc);
    r->profile_end_ns = (uint64_t)(prof * 1e9);
    if (r->profile_end_ns < r->sale_start_ns)
        r->profile_end_ns = r->sale_start_ns;
    r->stop_ns = r->profile_end_ns + (uint64_t)(sc->drain_s * 1e9);
    uv_timer_init(&r->loop, &r->progress);
    r->progress.data = r;
    uv_timer_start(&r->progress, on_progress, 100, 100);
    uv_timer_init(&r->loop, &r->giveup_sweep);
    r->giveup_sweep.data = r;
    if (sc->give_up_ms)
        uv_timer_start(&r->giveup_sweep, on_giveup_sweep, 5, 5);
    if (!r->quiet)
        fprintf(stderr,
                "flashgate-load: %s: %zu arrivals of %llu users (%llu bots) over %.1fs, sale %s "
                "starts at +%.1fs, %zu target(s) x %u connections (%s%s)%s\n",
                sc->name, cw->n_arrivals, (unsigned long long)lt_scenario_accounts(sc),
                (unsigned long long)cw->users_bots, prof, sc->sale_id, res->sale_start_s,
                sc->n_targets, sc->connections, lt_conn_mode_name(sc->connection_mode),
                open_mode ? ", more opened on demand" : "",
                n > 1 ? ", dealt over several loops" : "");
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_run(&r->loop, UV_RUN_DEFAULT); /* the closes stop_run started */
    uv_loop_close(&r->loop);
    class_stats(r);
    return NULL;
}

/* A uniform draw in [0, 1) from (seed, person): the same for every account of a person. */
static double person_unit(uint64_t seed, uint32_t person)
{
    uint64_t z = (seed ^ 0x7265676973746572ull) + (uint64_t)person * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

/* Which persons register: each with its class's share (sc->reg_share), all of
 * a person's accounts alike. */
static void draw_registrants(const lt_scenario_t *sc, user_t *users, uint64_t accounts)
{
    _Static_assert(LT_CLASS_N == LT_SCENARIO_CLASSES, "the scenario's classes are the run's");
    for (uint64_t i = 0; i < accounts; i++) {
        user_t *u = &users[i];
        if (!u->page && person_unit(sc->seed, u->person) < sc->reg_share[user_class(u)])
            u->reg = RG_WANT;
    }
}

int lt_run(const lt_scenario_t *sc, bool quiet, lt_results_t *res, char *eb, size_t el)
{
    results_init(res);
    crowd_t *cw = cm_xcalloc(1, sizeof(*cw));
    cw->n_loops = sc->loops ? sc->loops : 1;
    if (cw->n_loops > LT_MAX_LOOPS)
        cw->n_loops = LT_MAX_LOOPS;
    cm_rand_t rng;
    cm_rand_seed(&rng, sc->seed ^ 0x5eedull);
    uint64_t accounts = lt_scenario_accounts(sc);
    cw->users = cm_xmalloc((accounts ? accounts : 1) * sizeof(*cw->users));
    cw->won_units = cm_xcalloc(accounts ? accounts : 1, sizeof(*cw->won_units));
    uint32_t *persons = cm_xmalloc((accounts ? accounts : 1) * sizeof(uint32_t));
    lt_crowd_persons(sc, persons);
    for (uint64_t i = 0; i < accounts; i++) {
        user_t *u = &cw->users[i];
        *u = (user_t){.order = -1, .entry = -1, .person = persons[i]};
        if (persons[i] >= sc->users) {
            u->kind = U_SCALPER; /* an operator's account */
            res->users_bots++;
            continue;
        }
        /* drawn only when asked for, so scenarios without pages keep their crowd */
        if (sc->noncore_share > 0 && cm_rand_unit(&rng) < sc->noncore_share) {
            u->page = true;
            continue;
        }
        if (cm_rand_unit(&rng) < sc->bot_fraction) {
            u->kind = cm_rand_unit(&rng) < sc->aggressive_fraction ? U_AGGRESSIVE : U_BOT;
            res->users_bots++;
            if (u->kind == U_AGGRESSIVE)
                res->users_aggressive++;
        }
    }
    cw->users_bots = res->users_bots;
    if (sc->reg)
        draw_registrants(sc, cw->users, accounts);
    cw->arrivals = lt_sched_arrivals(sc->segments, sc->n_segments, sc->duration_s, accounts,
                                     sc->seed, &cw->n_arrivals);
    int rc = 0;
    for (size_t k = 0; k < cw->n_loops; k++) {
        run_t *r = cm_xcalloc(1, sizeof(*r));
        r->sc = sc;
        r->crowd = cw;
        r->idx = k;
        r->quiet = quiet || k > 0; /* loop 0 speaks for the crowd */
        r->users = cw->users;
        r->res = cm_xmalloc(sizeof(*r->res));
        results_init(r->res);
        /* loop 0 goes on with the crowd's draw (one loop: the same run as ever) */
        r->rng = rng;
        if (k > 0)
            cm_rand_seed(&r->rng, sc->seed ^ 0x5eedull ^ (0x9e3779b97f4a7c15ull * k));
        cw->loops[k] = r;
    }
    if (sc->identity_key) {
        rc = lt_tokens_mint(&cw->tokens, sc, persons, cw->n_loops > 2 ? (unsigned)cw->n_loops : 2,
                            eb, el);
        if (rc < 0)
            goto out;
        if (!quiet)
            fprintf(stderr, "flashgate-load: minted %llu tokens with %s in %.2f s\n",
                    (unsigned long long)cw->tokens.n, sc->identity_key, cw->tokens.mint_s);
    }
    for (size_t t = 0; t < sc->n_targets; t++) {
        if (lt_http_parse_url(sc->targets[t], cw->host[t], sizeof(cw->host[t]), &cw->port[t]) < 0 ||
            (uv_ip4_addr(cw->host[t], cw->port[t], (struct sockaddr_in *)&cw->addr[t]) < 0 &&
             uv_ip6_addr(cw->host[t], cw->port[t], (struct sockaddr_in6 *)&cw->addr[t]) < 0)) {
            snprintf(eb, el, "target %s: need http://IP:port (numeric address)", sc->targets[t]);
            rc = CM_EINVAL;
            goto out;
        }
    }
    int64_t wall_now = cm_wall_ms();
    if (sc->sale_create) {
        cw->start_ms = wall_now + (int64_t)(sc->start_offset_s * 1000);
        if (sc->reg) {
            cw->reg_opens_ms = wall_now + (int64_t)(sc->reg_opens_s * 1000);
            cw->reg_closes_ms = wall_now + (int64_t)(sc->reg_closes_s * 1000);
        }
        rc = create_sale(sc, cw->start_ms, cw->reg_opens_ms, cw->reg_closes_ms,
                         &res->fair_window_ms, eb, el);
        if (rc < 0)
            goto out;
    } else {
        res->fair_window_ms = sc->fair_window_ms;
        cw->start_ms = existing_start_ms(sc, &res->fair_window_ms);
        if (cw->start_ms == 0)
            cw->start_ms = wall_now + (int64_t)(sc->start_offset_s * 1000);
    }
    pthread_barrier_init(&cw->go, NULL, (unsigned)cw->n_loops);
    pthread_t th[LT_MAX_LOOPS];
    size_t started = 0;
    for (size_t k = 1; k < cw->n_loops; k++) {
        if (pthread_create(&th[k], NULL, loop_main, cw->loops[k]) != 0) {
            /* the barrier counts every loop: with one missing, nobody would start */
            fprintf(stderr, "flashgate-load: cannot start loop %zu of %zu\n", k + 1, cw->n_loops);
            abort();
        }
        started++;
    }
    loop_main(cw->loops[0]);
    for (size_t k = 1; k <= started; k++)
        pthread_join(th[k], NULL);
    pthread_barrier_destroy(&cw->go);
    for (size_t k = 0; k < cw->n_loops; k++) {
        lt_results_t *lr = cw->loops[k]->res;
        if (k == 0) {
            res->wall_t0_ms = lr->wall_t0_ms;
            res->sale_start_s = lr->sale_start_s;
        }
        results_merge(res, lr);
    }
    person_stats(sc, cw, res);
out:
    for (size_t k = 0; k < cw->n_loops; k++) {
        run_t *r = cw->loops[k];
        for (size_t t = 0; t < sc->n_targets; t++) {
            target_t *tg = &r->targets[t];
            for (uint32_t i = 0; tg->conns && i < tg->n_conns; i++)
                lt_http_parser_free(&tg->conns[i].parser);
            free(tg->conns);
            free(tg->idle);
            free(tg->free_);
        }
        if (rc < 0)
            lt_results_free(r->res);
        free(r->res);
        free(r);
    }
    free(cw->arrivals);
    free(persons);
    free(cw->users);
    free(cw->won_units);
    lt_tokens_free(&cw->tokens);
    free(cw);
    return rc;
}

void lt_results_free(lt_results_t *res)
{
    CM_FREE(res->secs);
    CM_FREE(res->fine);
    res->n_fine = 0;
    CM_FREE(res->orders);
    CM_FREE(res->entries);
    res->n_secs = res->n_orders = res->n_entries = 0;
}
