/*
 * Structured logging: one logfmt line per event, built in a stack buffer and
 * written with a single write(2) so threads never interleave and no lock is
 * taken. The level is checked before anything is formatted (redis serverLog).
 *
 *   ts=2026-11-22T10:00:00.123Z level=warn mod=inv msg="redis timeout" sale=s1 elapsed_ms=52
 *
 * Never log per request on the hot path at INFO or above: count and summarise.
 */
#ifndef CM_LOG_H
#define CM_LOG_H

#include <stdatomic.h>
#include <stddef.h>

typedef enum { CM_LOG_ERROR = 0, CM_LOG_WARN = 1, CM_LOG_INFO = 2, CM_LOG_DEBUG = 3 } cm_log_level_t;

extern _Atomic int cm_log_level_current;

/* Sets the threshold; lines above it are dropped before formatting. Thread-safe. */
void cm_log_set_level(cm_log_level_t level);
/* Parses "error|warn|info|debug"; returns the level or -1. */
int cm_log_level_parse(const char *s);
const char *cm_log_level_name(cm_log_level_t level);
/* The level names in level order, NULL-terminated: the one table (config enums use it). */
extern const char *const cm_log_level_names[];
/* Sends lines to fd (default 2, stderr). Single-threaded init. */
void cm_log_set_fd(int fd);
/* "logfmt" (default) or "json". Single-threaded init. Returns 0 or CM_EINVAL. */
int cm_log_set_format(const char *fmt);

/*
 * Writes one line. `msg` is the human text (quoted for you); `fields` is a
 * printf format producing extra logfmt pairs ("sale=%s qty=%d"), or NULL.
 * Thread-safe; never blocks beyond one write(2).
 */
void cm__log(cm_log_level_t level, const char *mod, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 4, 5)));

#define CM_LOG(level, mod, msg, ...)                                                               \
    do {                                                                                           \
        if ((int)(level) <= atomic_load_explicit(&cm_log_level_current, memory_order_relaxed))     \
            cm__log((level), (mod), (msg), __VA_ARGS__);                                           \
    } while (0)

#define cm_log_error(mod, msg, ...) CM_LOG(CM_LOG_ERROR, mod, msg, __VA_ARGS__)
#define cm_log_warn(mod, msg, ...) CM_LOG(CM_LOG_WARN, mod, msg, __VA_ARGS__)
#define cm_log_info(mod, msg, ...) CM_LOG(CM_LOG_INFO, mod, msg, __VA_ARGS__)
#define cm_log_debug(mod, msg, ...) CM_LOG(CM_LOG_DEBUG, mod, msg, __VA_ARGS__)

/*
 * Appends `s` to buf as a logfmt value: bare when it has no space, quote or
 * '=', else double-quoted with escapes. Returns the new length (clamped).
 */
size_t cm_log_quote(char *buf, size_t len, size_t cap, const char *s);

#endif
