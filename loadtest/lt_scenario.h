/*
 * Scenario files for flashgate-load: what the crowd looks like, how it
 * arrives, which sale it storms and where the systems under test are.
 * See loadtest/README.md for every field; loadtest/scenarios/ has examples.
 */
#ifndef LT_SCENARIO_H
#define LT_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LT_MAX_TARGETS 16
#define LT_MAX_SEGMENTS 32
#define LT_MAX_CONNECTIONS 20000 /* per target, either mode */
#define LT_MAX_LOOPS 16
#define LT_MAX_PROXY_ADDRESSES 1000000 /* operators x operator_addresses: 100.64.0.0/10 */
#define LT_SCENARIO_CLASSES 4 /* the crowd classes (lt_run.h LT_CLASS_*) */

typedef enum { LT_SEG_RAMP, LT_SEG_SPIKE, LT_SEG_PLATEAU, LT_SEG_DECAY, LT_SEG_PAUSE } lt_seg_kind_t;

/*
 * What a request that finds no idle connection does: wait in the target's
 * FIFO for one of `connections` (queue), or open a new connection up to
 * `connections_max` and keep at most `connections` idle afterwards (open), as
 * a CDN edge or an nginx upstream with `keepalive N` and no max_conns does.
 */
typedef enum { LT_CONN_QUEUE = 0, LT_CONN_OPEN = 1 } lt_conn_mode_t;

/* One piece of the arrival profile: the rate moves linearly from rate to rate_end. */
typedef struct lt_segment {
    lt_seg_kind_t kind;
    double duration_s;
    double rate;     /* arrivals per second at the segment's start */
    double rate_end; /* at its end (= rate unless given) */
} lt_segment_t;

typedef struct lt_scenario {
    char name[64];
    uint64_t seed;
    double duration_s; /* arrivals are generated within [0, duration_s) */
    double drain_s;    /* time allowed after that for retries, polls, in-flight answers */
    char *targets[LT_MAX_TARGETS];
    size_t n_targets;
    char *admin_url;   /* NULL: no admin API (audit of stock skipped) */
    char *admin_token; /* NULL: none */
    char *kafka_brokers;
    char *db_url;
    char *topic;
    uint32_t connections;         /* per target: the pool (queue) or the idle keep-alive cache (open) */
    uint32_t request_timeout_ms;
    lt_conn_mode_t connection_mode;
    uint32_t connections_max;     /* open mode: most connections per target at once */
    uint32_t give_up_ms;          /* per-request deadline from the scheduled time, 0 = none */
    uint32_t warm_connections;    /* per target: opened before the first arrival, 0 = none */
    uint32_t loops;               /* event loops (threads) the crowd is dealt over, 1 = one */
    /* every request says when it was due, as a balancer that queues them says when it took
     * each: X-Request-Start: t=<seconds.micros> of its scheduled time */
    bool request_start;
    /* identity: with a key, every request of an account carries Authorization: Bearer
     * <a token minted for it with this key> (one per simulated account, minted before the run) */
    char *identity_key;           /* private key file (PEM), NULL = no tokens (body user_id only) */
    char identity_issuer[256];    /* iss of the minted tokens, "" = "flashgate" */
    char identity_audience[256];  /* aud, "" = "flashgate" */
    char identity_person_claim[64]; /* the claim naming the account's person ("person") */
    /* non-core page views mixed into the crowd */
    double noncore_share;         /* share of users who GET noncore_path instead of buying */
    char noncore_path[256];
    /* sale */
    char sale_id[64];
    bool sale_create;       /* PUT the sale through the admin API before the run */
    int64_t sale_stock;
    uint32_t per_user_limit;
    double start_offset_s;  /* the sale starts this long after the run starts */
    double sale_duration_s;
    uint32_t fair_window_ms; /* start-window lottery of the sale (0 = none) */
    uint32_t fair_early_ms;  /* entries accepted this long before the start */
    /* Whether the scenario names them: a field it does not name is not sent,
     * so the sale gets the gateway's default (sales.default_fair_*). */
    bool has_fair_window, has_fair_early;
    /* registration (sale.registration): the sale takes lottery entries only from
     * persons who registered in [reg_opens_s, reg_closes_s) (seconds after the run
     * starts, as start_offset_s); a person of crowd class c registers with
     * probability reg_share[c] (LT_CLASS_* order: people, bots, aggressive_bots,
     * scalpers), every account of theirs sending its registration */
    bool reg;
    double reg_opens_s, reg_closes_s;
    double reg_share[LT_SCENARIO_CLASSES];
    /* crowd */
    uint64_t users;
    uint64_t addresses;      /* distinct X-Forwarded-For values for persons */
    double bot_fraction;     /* share of users that are bots */
    double aggressive_fraction; /* share of bots that ignore Retry-After */
    uint64_t bot_addresses;  /* bots share this many addresses */
    uint32_t qty;
    double person_reaction_ms; /* mean delay between the start and the press */
    double bot_reaction_ms;    /* bots press within this many ms of the start */
    double bot_early_ms;       /* aggressive bots start hammering this early */
    /* scalper operators: each runs accounts_per_operator accounts held by
     * persons_per_operator persons, from operator_addresses proxy addresses of its own;
     * their accounts come on top of `users` (one account, one person each) */
    uint64_t operators;
    uint32_t accounts_per_operator;
    uint32_t persons_per_operator;
    uint32_t operator_addresses;
    /* behaviour */
    uint32_t max_retries;      /* persons and honest bots */
    uint32_t retry_default_ms; /* when an answer has no Retry-After */
    uint32_t bot_retry_ms;     /* aggressive bots: fixed retry interval */
    uint32_t bot_max_retries;
    uint32_t poll_interval_ms;
    uint32_t poll_max;
    double settle_wait_s;      /* audit: how long to wait for the DB to catch up */
    /* arrival profile */
    lt_segment_t segments[LT_MAX_SEGMENTS];
    size_t n_segments;
} lt_scenario_t;

/*
 * Fills sc with defaults, then with the JSON text in `json` (the file name
 * is used in messages only). On a bad file returns CM_EINVAL and writes one
 * line naming the field at fault into errbuf, e.g.
 * "scenario: crowd.users: must be an integer >= 1". sc owns its strings:
 * release them with lt_scenario_free (also after a failure).
 */
int lt_scenario_parse(lt_scenario_t *sc, const char *json, char *errbuf, size_t errlen);
/* Reads a file and parses it (see lt_scenario_parse). */
int lt_scenario_load(lt_scenario_t *sc, const char *path, char *errbuf, size_t errlen);
/* Cross-field checks after flags have overridden fields. Same error contract. */
int lt_scenario_validate(const lt_scenario_t *sc, char *errbuf, size_t errlen);
/* Frees the strings sc owns; sc stays a valid, empty scenario. */
void lt_scenario_free(lt_scenario_t *sc);
/* Replaces targets with a comma-separated list. */
void lt_scenario_set_targets(lt_scenario_t *sc, const char *csv);
/* The crowd class named s ("people", "bots", "aggressive_bots", "scalpers"), or -1. */
int lt_scenario_class(const char *s);
/* Every account of the crowd: users + operators x accounts_per_operator. */
uint64_t lt_scenario_accounts(const lt_scenario_t *sc);
/* Every person of the crowd: users + operators x persons_per_operator. */
uint64_t lt_scenario_persons(const lt_scenario_t *sc);
/* Sum of the profile's durations, capped at duration_s. */
double lt_scenario_profile_s(const lt_scenario_t *sc);
const char *lt_seg_kind_name(lt_seg_kind_t k);
/* "queue" / "open" */
const char *lt_conn_mode_name(lt_conn_mode_t m);
/* Parses "queue" or "open" into *out. Returns 0 or CM_EINVAL. */
int lt_conn_mode_parse(const char *s, lt_conn_mode_t *out);

#endif
