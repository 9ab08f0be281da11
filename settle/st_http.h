/*
 * flashgate-settle's HTTP listener (settle.metrics_listen): GET /healthz,
 * GET /readyz and GET /metrics (Prometheus text format), no token. The
 * listener itself (address, libmicrohttpd daemon) is main_settle.c's; this
 * file answers its requests from the worker's counters (st_settle_stats_t).
 */
#ifndef ST_HTTP_H
#define ST_HTTP_H

#include "settle/st_settle.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Whether the worker can settle: its Kafka clients are up with the brokers
 * reachable, and its last database write did not fail. On false, *why (when
 * not NULL) names the first missing part ("kafka", "database"), a static
 * string. Thread-safe (reads atomics).
 */
bool st_http_ready(const st_settle_stats_t *s, const char **why);

/*
 * Writes the worker's metrics into b (at most cap bytes, NUL-terminated when
 * cap > 0) in the Prometheus text format 0.0.4; start_time_s is the process's
 * start (process_start_time_seconds). Returns the length written; a text cut
 * short by cap ends at a whole line. Thread-safe.
 */
size_t st_http_metrics_text(const st_settle_stats_t *s, double start_time_s, char *b, size_t cap);

/*
 * The process's start time in seconds since the epoch, from /proc (the kernel's
 * boot time plus the process's start ticks); the current time when /proc cannot
 * tell. Thread-safe.
 */
double st_http_process_start_time(void);

/*
 * libmicrohttpd access handler (MHD_AccessHandlerCallback) for the listener;
 * cls is the worker's st_settle_stats_t (st_settle_stats), read only. /healthz answers 200 while the process serves;
 * /readyz 200 when st_http_ready, else 503 with the reason; /metrics the text
 * above. Other paths 404, other methods 405, all as JSON errors. Called on
 * libmicrohttpd's thread.
 */
enum MHD_Result st_http_answer(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *data_size, void **req_cls);

#endif
