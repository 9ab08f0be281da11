/*
 * The rehearsal itself: a crowd of users storming one sale through a pool of
 * keep-alive HTTP/1.1 connections per target, on one libuv loop, open-loop.
 * Every answer is counted by type, its latency (from the scheduled send
 * time) recorded in cm_hist, per type and per second; every 202 order id is
 * kept for the audit.
 */
#ifndef LT_RUN_H
#define LT_RUN_H

#include "common/cm_hist.h"
#include "loadtest/lt_scenario.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Answer types of the buy request, then the status polls. */
#define LT_ANS_MAP(XX)                                                                             \
    XX(A202, "202") XX(A409, "409") XX(A410, "410") XX(A425, "425") XX(A429, "429")              \
    XX(A503, "503") XX(A404, "404") XX(A4XX, "4xx") XX(A5XX, "5xx") XX(ERROR, "error")           \
    XX(TIMEOUT, "timeout") XX(POLL, "poll")

typedef enum {
#define XX(n, s) LT_ANS_##n,
    LT_ANS_MAP(XX)
#undef XX
        LT_ANS_N
} lt_ans_t;

/* "202", "timeout", ... */
const char *lt_ans_name(lt_ans_t a);
/* Answer type of a buy answer with HTTP status (0 = transport error). */
lt_ans_t lt_ans_of_status(int status);

/* Answer types of a non-core page view (GET noncore.path). */
#define LT_PAGE_MAP(XX)                                                                            \
    XX(OK, "200") XX(DEGRADED, "degraded") XX(P503, "503") XX(P4XX, "4xx") XX(P5XX, "5xx")      \
    XX(ERROR, "error") XX(TIMEOUT, "timeout")

typedef enum {
#define XX(n, s) LT_PAGE_##n,
    LT_PAGE_MAP(XX)
#undef XX
        LT_PAGE_N
} lt_page_t;

/* "200", "degraded", ... */
const char *lt_page_name(lt_page_t a);
/* Answer type of a page view: 2xx is OK unless X-Flashgate-Degraded: 1 says it is a fallback. */
lt_page_t lt_page_of_status(int status, bool degraded);

typedef struct lt_second {
    uint64_t sent; /* requests of any kind handed to a connection this second */
    uint64_t counts[LT_ANS_N];
    uint64_t page[LT_PAGE_N];
    cm_hist_t buy; /* latency of buy answers completed this second */
} lt_second_t;

/*
 * One bin of the fine timeline: buy answers by the bin of their *scheduled*
 * time (LT_FINE_BIN_MS wide), so that the effect of a step in the arrival
 * rate shows on the requests that arrived after it.
 */
#define LT_FINE_BIN_MS 10
#define LT_FINE_SLOW_MS 50 /* an answer slower than this (or none) is "slow" */
typedef struct lt_fine {
    uint32_t n;     /* buy answers, timeouts and errors included */
    uint32_t good;  /* 202, 409, 410 */
    uint32_t shed;  /* 503 */
    uint32_t slow;  /* later than LT_FINE_SLOW_MS, or timeout / error */
    uint32_t error; /* transport errors: refused, reset, closed under the request */
    uint32_t refused; /* ... of them, failed because a new connection was refused */
    uint32_t timeout; /* the person gave up */
    uint32_t max_ms;
    /* The latest a request of the bin was written to a connection after its
     * scheduled time: the generator's own lag, a new connection's connect, and
     * in queue mode the wait for a pooled connection (0: never sent). */
    uint32_t lag_max_ms;
} lt_fine_t;

typedef struct lt_order {
    char id[48];
    char token[32]; /* status_token from the 202: GET /v1/orders/{id}?token= */
    uint64_t user;
    uint32_t qty;
    char status[12]; /* last polled status: "", queued, settled, failed, cancelled */
    /* when it was accepted, seconds on the run's clock: its 202 arrived (a
     * lottery entry: the poll that found it won) */
    double at_s;
} lt_order_t;

/* A start-window lottery entry (202 "entered"), polled until it is decided. */
typedef struct lt_entry {
    char id[48];
    char token[32];
    uint64_t user;
    uint32_t qty;
    uint8_t outcome;   /* 0 undecided, 1 won (then also in orders), 2 lost */
    uint32_t position; /* draw position of a loser */
} lt_entry_t;

/* Crowd classes for the fairness audit: people and bots hold one account each
 * and are one person each; a scalper operator's accounts are held by a few persons. */
enum {
    LT_CLASS_PERSON = 0,
    LT_CLASS_BOT = 1,
    LT_CLASS_AGGRESSIVE = 2,
    LT_CLASS_SCALPER = 3,
    LT_CLASS_N = 4
};
/* "people", "bots", "aggressive_bots", "scalpers": the names the audit and the report print. */
const char *lt_class_name(int c);

/* What one scalper operator's accounts did (the top ones by units won are kept). */
#define LT_TOP_OPERATORS 5
typedef struct lt_operator_stat {
    uint64_t id;          /* operator index, 0 .. operators-1 */
    uint32_t accounts, persons;
    uint32_t entrants;    /* its accounts that got a lottery entry */
    uint32_t won_orders, won_units;
} lt_operator_stat_t;

typedef struct lt_results {
    /* The sale's start-window lottery as the gateway answered (0 = first-come):
     * the scenario's, or the gateway's default when the scenario names none.
     * The audit enforces fairness when it is > 0. */
    uint32_t fair_window_ms;
    uint64_t arrivals;     /* first presses scheduled */
    uint64_t sent_buy, sent_poll;
    uint64_t answers[LT_ANS_N];
    cm_hist_t hist[LT_ANS_N];
    cm_hist_t buy_all;  /* every buy answer */
    cm_hist_t buy_good; /* 202, 409, 410: admitted and answered */
    /* every buy answer to a request that went out, from its send rather than
     * its scheduled time: the crowd's own lateness (its CPU, a connect, the
     * pool's queue) left out, the target's accept queue and answer kept in */
    cm_hist_t buy_sent;
    uint64_t page_sent;
    uint64_t page_answers[LT_PAGE_N];
    cm_hist_t page_hist[LT_PAGE_N];
    lt_fine_t *fine;
    size_t n_fine;
    cm_hist_t send_lag; /* actual dispatch - scheduled time (scheduler accuracy) */
    lt_second_t *secs;
    size_t n_secs;
    lt_order_t *orders;
    size_t n_orders;
    uint64_t dup_202;      /* a retry answered 202 with an order id already seen */
    uint64_t second_202;   /* a user got 202 with a different order id again */
    uint64_t polls_settled, polls_failed, polls_cancelled, polls_unfinished;
    uint64_t unfinished;   /* requests still in flight when the run stopped */
    uint64_t connects, connect_errors; /* during the run (not the warm-up's) */
    uint32_t warm_open;      /* connections the warm-up had open when the first arrival came */
    uint64_t gave_up;        /* requests abandoned at give_up_ms (also counted as timeout) */
    uint32_t max_open;       /* most connections open at once, all targets */
    uint64_t idle_closed;    /* open mode: closed after an answer, the idle cache being full */
    double elapsed_s;
    double sale_start_s;   /* when the sale started, on the run's clock */
    int64_t wall_t0_ms;
    uint64_t users_bots, users_aggressive;
    uint64_t orders_bots; /* accepted orders that went to bots */
    /* the start-window lottery */
    lt_entry_t *entries;
    size_t n_entries;
    uint64_t dup_entries; /* a retry answered with the user's entry again */
    uint64_t entries_won, entries_lost;
    /* per crowd class (LT_CLASS_*): users, users who pressed buy, users who got an
     * entry, orders and units they won */
    uint64_t class_users[LT_CLASS_N], class_tried[LT_CLASS_N], class_entrants[LT_CLASS_N],
        class_won_orders[LT_CLASS_N], class_won_units[LT_CLASS_N];
    /* the same per person (an operator's accounts count as its few persons): persons,
     * persons with an account that pressed buy, that got an entry, that won; and the
     * most units one person of the class won */
    uint64_t class_persons[LT_CLASS_N], class_person_tried[LT_CLASS_N],
        class_person_entrants[LT_CLASS_N], class_person_winners[LT_CLASS_N],
        class_max_person_units[LT_CLASS_N];
    /* registration (sc->reg): the answers to the crowd's registrations (201 new, 200
     * registered already, refused: a 4xx such as 403 registration_closed, failed:
     * retries ran out or the window closed while the last try had no answer), and
     * per class the accounts whose registration was answered 200/201, the persons
     * with such an account, the accounts whose buy was refused 403 not_registered,
     * and the entrant persons that registered (the fairness base); unregistered
     * entrants: persons none of whose accounts can have registered (no try, or only
     * refusals) that got an entry anyway; registered refused: accounts answered
     * 200/201 whose buy was refused not_registered */
    uint64_t reg_sent, reg_new, reg_again, reg_refused, reg_failed;
    uint64_t class_registered[LT_CLASS_N], class_person_registered[LT_CLASS_N],
        class_not_registered[LT_CLASS_N], class_person_reg_entrants[LT_CLASS_N];
    uint64_t unregistered_entrants, registered_refused;
    lt_operator_stat_t top_operators[LT_TOP_OPERATORS]; /* by units won, most first */
    size_t n_top_operators;
} lt_results_t;

/*
 * Runs the scenario to the end (arrivals + drain). Creates the sale first
 * when sc->sale_create. Returns 0, or a negative cm_err_t with a message in
 * errbuf when the run could not start. res is filled either way; release it
 * with lt_results_free. Single-threaded; prints progress to stderr each
 * second unless quiet.
 */
int lt_run(const lt_scenario_t *sc, bool quiet, lt_results_t *res, char *errbuf, size_t errlen);
void lt_results_free(lt_results_t *res);

#endif
