/*
 * Error codes shared by every module.
 *
 * Functions return 0 on success and a negative cm_err_t on failure (libuv
 * style). Functions that also make decisions (sold out, rate limited) return
 * those as non-negative enum values of their own module, never as errors.
 */
#ifndef CM_ERR_H
#define CM_ERR_H

#define CM_ERR_MAP(XX)                                                                             \
    XX(NOMEM, -1, "out of memory")                                                                 \
    XX(INVAL, -2, "invalid argument")                                                              \
    XX(TIMEOUT, -3, "timed out")                                                                   \
    XX(BACKEND, -4, "backend unavailable")                                                         \
    XX(BUSY, -5, "queue full")                                                                     \
    XX(IO, -6, "input/output error")                                                               \
    XX(NOTFOUND, -7, "not found")                                                                  \
    XX(EXISTS, -8, "already exists")                                                               \
    XX(CORRUPT, -9, "corrupt data")                                                                \
    XX(AGAIN, -10, "try again")                                                                    \
    XX(CONFLICT, -11, "conflict")                                                                  \
    XX(FULL, -12, "capacity reached")

typedef enum {
    CM_OK = 0,
#define XX(n, v, s) CM_E##n = (v),
    CM_ERR_MAP(XX)
#undef XX
} cm_err_t;

/* "timed out"; "unknown error" for a value outside the map. Thread-safe. */
const char *cm_strerror(int err);
/* "CM_ETIMEOUT". Thread-safe. */
const char *cm_errname(int err);

#include <stddef.h>
/*
 * Formats a reason into a caller's error buffer (librdkafka's errstr habit);
 * a NULL buffer or zero length is fine. Thread-safe.
 */
void cm_errbuf_set(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
