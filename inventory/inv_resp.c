/*
 * The Redis backend's wire text (see inv_resp.h): commands in RESP, written
 * by hand, and the small text helpers of the call path. A leaf: it calls
 * nothing else of inventory/.
 */
#include "inventory/inv_resp.h"

#include <string.h>

void inv__redis_resp_put(resp_t *b, const char *s, size_t n)
{
    if (b->need + n <= b->cap)
        memcpy(b->p + b->need, s, n);
    b->need += n;
}

static void resp_num(resp_t *b, char tag, size_t v)
{
    char t[24];
    size_t i = sizeof(t);
    t[--i] = '\n';
    t[--i] = '\r';
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    t[--i] = tag;
    inv__redis_resp_put(b, t + i, sizeof(t) - i);
}

/* The multibulk header of a command of nargs arguments. */
void inv__redis_resp_head(resp_t *b, size_t nargs)
{
    resp_num(b, '*', nargs);
}

void inv__redis_resp_arg(resp_t *b, const char *s, size_t n)
{
    resp_num(b, '$', n);
    inv__redis_resp_put(b, s, n);
    inv__redis_resp_put(b, "\r\n", 2);
}

/* The key "{sale:ID}:part" (inv__redis_sale_key's layout) as one argument. */
void inv__redis_resp_key(resp_t *b, const char *sale_id, size_t idlen, const char *part)
{
    size_t plen = strlen(part);
    resp_num(b, '$', 6 + idlen + 2 + plen);
    inv__redis_resp_put(b, "{sale:", 6);
    inv__redis_resp_put(b, sale_id, idlen);
    inv__redis_resp_put(b, "}:", 2);
    inv__redis_resp_put(b, part, plen);
    inv__redis_resp_put(b, "\r\n", 2);
}

/* strlcpy: the request's fields are NUL-terminated within their sizes already. */
void inv__redis_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* A uint32 in decimal, NUL-terminated, into 11+ bytes (no snprintf on the buy path). */
void inv__redis_u32_text(uint32_t v, char *out)
{
    char t[10];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = t[n - 1 - i];
    out[n] = '\0';
}
