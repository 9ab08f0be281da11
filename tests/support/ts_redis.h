/*
 * A real redis-server for tests: started on 127.0.0.1 at a free port in a
 * fresh temp dir, stopped by PID, restartable on the same port and dir (for
 * AOF restart tests), paused with SIGSTOP to play a hung server.
 *
 *     ts_redis_t r;
 *     if (ts_redis_start(&r, false) != 0) return 1;   // no redis-server: a failure, not a skip
 *     ...  ts_redis_url(&r, buf, sizeof(buf), "timeout_ms=50") ...
 *     ts_redis_free(&r);                       // stop + remove the dir
 *
 * The binary is $FLASHGATE_REDIS_SERVER, else /usr/bin/redis-server, else
 * redis-server on PATH. Single-threaded use (one test thread drives it).
 */
#ifndef TS_REDIS_H
#define TS_REDIS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct ts_redis {
    pid_t pid;             /* 0 when stopped */
    int port;
    bool is_aof;           /* --appendonly yes */
    bool is_paused;        /* SIGSTOPped */
    char dir[PATH_MAX];    /* the temp dir (redis.log, appendonly files) */
    char bin[PATH_MAX];
} ts_redis_t;

/*
 * Starts a server and waits (up to 10 s) until it answers PING. Returns 0, or
 * -1 with a line on stderr (no redis-server binary, or it would not start).
 */
int ts_redis_start(ts_redis_t *r, bool aof);
/* Stops it: SIGTERM, then SIGKILL after 5 s; reaps it. Keeps the dir. Returns 0 or -1. */
int ts_redis_stop(ts_redis_t *r);
/* Kills it at once with SIGKILL (a crash); keeps the dir. */
int ts_redis_kill(ts_redis_t *r);
/* Starts it again on the same port and dir (AOF state is reloaded). Returns 0 or -1. */
int ts_redis_restart(ts_redis_t *r);
/* SIGSTOP / SIGCONT: a server that holds its connections but never answers. */
int ts_redis_pause(ts_redis_t *r);
int ts_redis_resume(ts_redis_t *r);
/* Stops the server if running and removes its dir. */
void ts_redis_free(ts_redis_t *r);

/* "redis://127.0.0.1:PORT" plus "?query" when query is non-empty. Returns buf. */
char *ts_redis_url(const ts_redis_t *r, char *buf, size_t len, const char *query);

/*
 * Runs one redis-cli-like command on a fresh blocking connection and returns
 * the reply as text in buf (integer as digits, string as is, status as is,
 * error as "ERR...", nil as ""). Format as hiredis redisCommand. Returns 0 or
 * -1 if the server did not answer.
 */
int ts_redis_cmd(const ts_redis_t *r, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * A number of INFO's `section`: the one after "name:" (stats: total_net_input_bytes), or
 * after "name=" on the line "line:" (commandstats: cmdstat_evalsha's calls, usec_per_call);
 * 0 if absent or the server did not answer.
 */
double ts_redis_info_num(const ts_redis_t *r, const char *section, const char *line,
                         const char *name);

#endif
