/*
 * A small, strict HTTP/1.1 response parser for the load generator: status
 * line, headers (Content-Length, Retry-After, Connection, X-Flashgate-Degraded) and a
 * Content-Length body. Chunked bodies, obsolete line folding, bare LF line
 * ends and headers over 8 KiB are refused: the gateway never sends them, so
 * meeting one is a finding, not something to tolerate.
 */
#ifndef LT_HTTP_H
#define LT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LT_HTTP_LINE_MAX 8192
#define LT_HTTP_BODY_MAX (1u << 20)

typedef enum {
    LT_HTTP_NEED_MORE = 0, /* feed more bytes */
    LT_HTTP_DONE = 1,      /* a whole response is in p->resp */
} lt_http_state_t;

typedef struct lt_http_resp {
    int status;
    int64_t content_length; /* -1 when absent */
    int retry_after_s;      /* -1 when absent or not delta-seconds */
    bool conn_close;
    bool degraded; /* X-Flashgate-Degraded: 1 (a fallback or shed answer) */
    char *body; /* NUL-terminated, owned by the parser until reset */
    size_t body_len;
} lt_http_resp_t;

typedef struct lt_http_parser {
    int phase; /* 0 status line, 1 headers, 2 body, 3 done */
    bool head_request;
    char line[LT_HTTP_LINE_MAX];
    size_t line_len;
    size_t header_bytes;
    size_t body_cap;
    lt_http_resp_t resp;
    const char *error; /* static text after a failure */
} lt_http_parser_t;

/* Caller-provided storage. head_request: the answer has no body whatever it says. */
void lt_http_parser_init(lt_http_parser_t *p, bool head_request);
/* Forgets the last response (keeps the body buffer) for the next one on the connection. */
void lt_http_parser_reset(lt_http_parser_t *p, bool head_request);
void lt_http_parser_free(lt_http_parser_t *p);
/*
 * Consumes up to len bytes, setting *consumed. Returns LT_HTTP_DONE when a
 * whole response is parsed (bytes after it are left unconsumed: a strict
 * client sends no pipelined requests, so extra bytes mean a broken server),
 * LT_HTTP_NEED_MORE, or CM_EINVAL with p->error set.
 */
int lt_http_parser_feed(lt_http_parser_t *p, const char *data, size_t len, size_t *consumed);

/* URL "http://host:port[/path]" -> host, port. Returns 0 or CM_EINVAL. */
int lt_http_parse_url(const char *url, char *host, size_t hostlen, int *port);

/*
 * One blocking request on a new connection (for setup and the audit, not the
 * load): method, url base + path, optional bearer token and JSON body.
 * Returns 0 and fills *status and *body (new string, caller frees), or a
 * negative cm_err_t with a message in errbuf. Blocks at most timeout_ms.
 */
int lt_http_simple(const char *method, const char *base_url, const char *path,
                   const char *token, const char *json_body, int timeout_ms, int *status,
                   char **body, char *errbuf, size_t errlen);

#endif
