/*
 * Private to inventory/inv_redis_*.c: the Redis backend's wire text, a leaf
 * under the connections (inv_redis_conn.c), the worker loops
 * (inv_redis_worker.c) and the batches (inv_redis_batch.c). It includes and
 * calls nothing else of inventory/, so the files above it can all use it
 * without calling one another for it.
 */
#ifndef INV_RESP_H
#define INV_RESP_H

#include <stddef.h>
#include <stdint.h>

/*
 * RESP written by hand: hiredis's argv formatter grows an sds argument by argument
 * (sdscatfmt, realloc) and our keys went through snprintf: together ~17k instructions of
 * the ~33k that a Redis order cost the gateway more than a memory order (callgrind:
 * python3 bench/profile.py build {mem,redis} calls). `need` counts past the end, so a
 * caller can retry with a buffer that fits (EVAL carries the script text).
 */
typedef struct resp {
    char *p;
    size_t cap, need;
} resp_t;

/* Appends n bytes of s (counted in need even past cap). */
void inv__redis_resp_put(resp_t *b, const char *s, size_t n);
/* The multibulk header of a command of nargs arguments. */
void inv__redis_resp_head(resp_t *b, size_t nargs);
/* One bulk argument. */
void inv__redis_resp_arg(resp_t *b, const char *s, size_t n);
/* The key "{sale:ID}:part" (inv__redis_sale_key's layout) as one argument. */
void inv__redis_resp_key(resp_t *b, const char *sale_id, size_t idlen, const char *part);
/* strlcpy for fields NUL-terminated within their sizes already. */
void inv__redis_copy_str(char *dst, size_t cap, const char *src);
/* A uint32 in decimal, NUL-terminated, into 11+ bytes (no snprintf on the buy path). */
void inv__redis_u32_text(uint32_t v, char *out);

#endif
