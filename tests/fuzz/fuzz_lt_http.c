/*
 * Fuzz target: the load tester's HTTP/1.1 response parser. Byte 0 picks the
 * chunk size the bytes are fed in (1..64, as a slow server would send them)
 * and whether the response answers a HEAD request.
 * Promises: never crashes or reads past its input; a parsed response has a
 * status 100..999 and a body of exactly its Content-Length; feeding the same
 * bytes in one piece gives the same verdict.
 */
#include "common/cm_err.h"
#include "loadtest/lt_http.h"
#include "tests/fuzz/fuzz.h"

#include <string.h>

static int feed(lt_http_parser_t *p, const uint8_t *d, size_t n, size_t chunk, size_t *used)
{
    size_t off = 0;
    int rc = LT_HTTP_NEED_MORE;
    while (off < n) {
        size_t len = n - off < chunk ? n - off : chunk;
        uint8_t *piece = malloc(len); /* exact-size copy: ASan sees any over-read */
        memcpy(piece, d + off, len);
        size_t c = 0;
        rc = lt_http_parser_feed(p, (const char *)piece, len, &c);
        free(piece);
        FZ_CHECK(c <= len);
        off += c;
        if (rc != LT_HTTP_NEED_MORE)
            break;
        FZ_CHECK(c == len);
    }
    *used = off;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    size_t chunk = (size_t)(data[0] & 63) + 1;
    bool head = (data[0] & 64) != 0;
    data++;
    size--;
    lt_http_parser_t *p = malloc(sizeof(*p));
    lt_http_parser_init(p, head);
    size_t used = 0;
    int rc = feed(p, data, size, chunk, &used);
    FZ_CHECK(rc == LT_HTTP_NEED_MORE || rc == LT_HTTP_DONE || rc == CM_EINVAL);
    if (rc == LT_HTTP_DONE) {
        FZ_CHECK(p->resp.status >= 100 && p->resp.status <= 999);
        if (!head && p->resp.content_length >= 0)
            FZ_CHECK(p->resp.body_len == (size_t)p->resp.content_length);
    }
    if (rc == CM_EINVAL)
        FZ_CHECK(p->error != NULL);
    lt_http_parser_t *q = malloc(sizeof(*q));
    lt_http_parser_init(q, head);
    size_t used2 = 0;
    int rc2 = feed(q, data, size, size ? size : 1, &used2);
    FZ_CHECK(rc2 == rc);
    if (rc == LT_HTTP_DONE)
        FZ_CHECK(used2 == used && q->resp.status == p->resp.status);
    lt_http_parser_free(q);
    free(q);
    lt_http_parser_free(p);
    free(p);
    return 0;
}
