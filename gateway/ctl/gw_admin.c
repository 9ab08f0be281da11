/*
 * The admin API on its own listener (default 127.0.0.1:9090). Every route but
 * the dashboard's static page needs "Authorization: Bearer <token>",
 * compared in constant time against the named tokens (role read or write; see
 * load_tokens). A read token on a write route gets 403 and changes nothing.
 *
 * Admin traffic is small and its operations may block (a Redis round trip),
 * so this daemon uses MHD's thread-per-connection mode, away from the worker
 * loops; it never stalls the buy path. Changes are serialised by admin_lock,
 * validated completely before anything is applied (atomic), and each one is
 * versioned and appended to the audit log (gw_audit.h) before the answer.
 *
 * GW_ADMIN_ROUTES is the route table the dispatcher answers from;
 * tests/integration/19-openapi.py reads it to check docs/openapi.yaml.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/base/gw_limit_json.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_elig.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/ctl/gw_audit.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/ctl/gw_ring.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"
#include "queue/oq_order.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct admin_req {
    char *body;
    size_t len;
    bool too_large;
} admin_req_t;

static pthread_mutex_t admin_lock = PTHREAD_MUTEX_INITIALIZER;

/*---- libmicrohttpd: the admin listener's (the public one is gw_h1.c's) ----*/

/* MHD's per-connection pool: request line, headers and buffers (more gets MHD's 431). */
#define ADMIN_CONN_MEMORY (8 * 1024)

static struct MHD_Response *resp_build(const gw_resp_t *r)
{
    struct MHD_Response *mr =
        MHD_create_response_from_buffer(r->body_len, (void *)r->body, MHD_RESPMEM_MUST_COPY);
    if (!mr)
        return NULL;
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    bool cache_control = false;
    for (unsigned i = 0; i < r->nheaders; i++) {
        MHD_add_response_header(mr, r->headers[i][0], r->headers[i][1]);
        cache_control |= strcasecmp(r->headers[i][0], "Cache-Control") == 0;
    }
    if (!cache_control)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return mr;
}

/* Queues r on the connection; counts it. Returns the MHD result. */
static enum MHD_Result gw_resp_send(struct MHD_Connection *c, gw_counters_t *ctr,
                                    const gw_resp_t *r)
{
    struct MHD_Response *mr = resp_build(r);
    if (!mr)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    if (ctr)
        atomic_fetch_add_explicit(&ctr->replies[r->reply], 1, memory_order_relaxed);
    return ret;
}

static struct MHD_Daemon *mhd_start(const struct sockaddr *sa, unsigned flags,
                                    MHD_AccessHandlerCallback cb, void *cls, unsigned max_conn,
                                    unsigned timeout_s, MHD_RequestCompletedCallback done,
                                    struct MHD_OptionItem *extra)
{
    if (sa->sa_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Without MHD_OPTION_LISTENING_ADDRESS_REUSE, libmicrohttpd sets SO_REUSEADDR
     * alone on the listening socket: a restart binds over its predecessor's
     * connections in TIME_WAIT, while a second live process on the port is
     * still refused (Linux lets two listeners share a port only when both set
     * SO_REUSEPORT, which the option's 1 would add; its 0 means "disallow" and
     * leaves SO_REUSEADDR out: the restart then fails for a minute). */
    return MHD_start_daemon(flags, 0, NULL, NULL, cb, cls, MHD_OPTION_SOCK_ADDR, sa,
                            MHD_OPTION_ARRAY, extra,
                            MHD_OPTION_CONNECTION_LIMIT, max_conn, MHD_OPTION_CONNECTION_TIMEOUT,
                            timeout_s, MHD_OPTION_NOTIFY_COMPLETED, done, cls,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)GW_LISTEN_BACKLOG,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ADMIN_CONN_MEMORY,
                            MHD_OPTION_END);
}

/*---- TLS (server.admin_tls_cert, _key, _client_ca) ----*/

/* The PEM texts libmicrohttpd serves from (it keeps pointers: they live until
 * gw_admin_stop). One admin listener per process. */
static struct {
    char *cert, *key, *ca;
    size_t key_cap;
} admin_tls;

#define ADMIN_PEM_MAX (1u << 20)

/* Reads a PEM file whole into *out (NUL-terminated; a key into a secret page,
 * *cap its size). secret: the file must have no access for others, as the
 * token files. */
static int pem_read(const char *key, const char *path, bool secret, char **out, size_t *cap,
                    char *errbuf, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(errbuf, errlen, "cannot read %s %s: %s", key, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return CM_EIO;
    }
    const char *why = !S_ISREG(st.st_mode)                 ? "is not a regular file"
                      : st.st_size <= 0                    ? "is empty"
                      : st.st_size >= (off_t)ADMIN_PEM_MAX ? "is larger than 1 MiB"
                      : secret && (st.st_mode & 007) != 0
                          ? "must have no access for others (chmod 0400 or 0440)"
                          : NULL;
    if (why) {
        close(fd);
        snprintf(errbuf, errlen, "%s %s %s", key, path, why);
        return CM_EINVAL;
    }
    size_t n = (size_t)st.st_size + 1;
    char *buf = secret ? gw_secret_alloc(n) : cm_xmalloc(n);
    if (!buf)
        abort(); /* out of memory, as cm_xmalloc */
    size_t got = 0;
    while (got < n - 1) {
        ssize_t r = read(fd, buf + got, n - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    if (got != n - 1 || !strstr(buf, "-----BEGIN ")) {
        snprintf(errbuf, errlen, "%s %s is not a PEM file (no -----BEGIN line)", key, path);
        if (secret)
            gw_secret_free(buf, n);
        else
            free(buf);
        return CM_EINVAL;
    }
    *out = buf;
    if (cap)
        *cap = n;
    return 0;
}

static void tls_free(void)
{
    free(admin_tls.cert);
    free(admin_tls.ca);
    if (admin_tls.key)
        gw_secret_free(admin_tls.key, admin_tls.key_cap);
    memset(&admin_tls, 0, sizeof(admin_tls));
}

/*
 * The certificate and key as GnuTLS will take them (PEM, a matching pair), so
 * a bad pair is refused by name, by --check-config too, rather than as the
 * daemon's start failing without an errno.
 */
static int tls_pair_check(const gw_config_t *cfg, char *errbuf, size_t errlen)
{
    gnutls_certificate_credentials_t cred;
    if (gnutls_certificate_allocate_credentials(&cred) < 0) {
        snprintf(errbuf, errlen, "server.admin_tls_cert: out of memory");
        return CM_ENOMEM;
    }
    gnutls_datum_t c = {(unsigned char *)admin_tls.cert, (unsigned)strlen(admin_tls.cert)};
    gnutls_datum_t k = {(unsigned char *)admin_tls.key, (unsigned)strlen(admin_tls.key)};
    int g = gnutls_certificate_set_x509_key_mem(cred, &c, &k, GNUTLS_X509_FMT_PEM);
    gnutls_certificate_free_credentials(cred);
    if (g < 0) {
        snprintf(errbuf, errlen,
                 "server.admin_tls_cert %s and server.admin_tls_key %s: not a PEM certificate "
                 "and its private key (%s)",
                 cfg->admin_tls_cert, cfg->admin_tls_key, gnutls_strerror(g));
        return CM_EINVAL;
    }
    return 0;
}

/* Loads the configured PEM files into admin_tls (none: plain HTTP). */
static int tls_load(const gw_config_t *cfg, char *errbuf, size_t errlen)
{
    int rc = 0;
    if (cfg->admin_tls_cert[0] &&
        ((rc = pem_read("server.admin_tls_cert", cfg->admin_tls_cert, false, &admin_tls.cert,
                        NULL, errbuf, errlen)) ||
         (rc = pem_read("server.admin_tls_key", cfg->admin_tls_key, true, &admin_tls.key,
                        &admin_tls.key_cap, errbuf, errlen)) ||
         (rc = tls_pair_check(cfg, errbuf, errlen)) ||
         (cfg->admin_tls_client_ca[0] &&
          (rc = pem_read("server.admin_tls_client_ca", cfg->admin_tls_client_ca, false,
                         &admin_tls.ca, NULL, errbuf, errlen)))))
        tls_free();
    return rc;
}

/*
 * With server.admin_tls_client_ca, libmicrohttpd asks for a client
 * certificate (GnuTLS's GNUTLS_CERT_REQUEST) but does not require one: a
 * request on a connection without a certificate that chains to the CAs is
 * refused here. True: verified.
 */
static bool tls_client_verified(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    unsigned status = 0;
    return ci && ci->tls_session &&
           gnutls_certificate_verify_peers2((gnutls_session_t)ci->tls_session, &status) == 0 &&
           status == 0;
}

/*---- auth failure backoff ----*/

/*
 * Wrong tokens are counted per client address (IPv6 /128, IPv4 /32) in a
 * window of AUTH_WINDOW_MS: the AUTH_FAILS_MAX-th blocks the address for
 * AUTH_BLOCK_MS, doubled at each block in a row up to AUTH_BLOCK_MAX_MS; a
 * blocked address gets 429 with Retry-After on every route that needs a
 * token, the right token too (else the answer would tell a right guess). A
 * request without an Authorization header is not a guess and is not counted.
 * The table is fixed (AUTH_SLOTS): a new address takes the slot seen longest
 * ago. A success clears the address.
 */
#define AUTH_SLOTS 256
#define AUTH_FAILS_MAX 64
#define AUTH_WINDOW_MS 60000
#define AUTH_BLOCK_MS 5000
#define AUTH_BLOCK_MAX_MS 300000

typedef struct auth_slot {
    uint8_t addr[16];
    bool used;
    uint32_t fails, blocks;
    int64_t win_start_ms, blocked_until_ms, seen_ms;
} auth_slot_t;

static struct {
    pthread_mutex_t mu;
    auth_slot_t slot[AUTH_SLOTS];
} auth_fails = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The client's address as 16 bytes (IPv4 as ::ffff:a.b.c.d); false: none. */
static bool client_addr16(struct MHD_Connection *c, uint8_t out[16])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return false;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    if (sa->sa_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    return false;
}

/* The slot of addr; create: take a free one or the one seen longest ago. auth_fails.mu held. */
static auth_slot_t *auth_slot(const uint8_t addr[16], bool create)
{
    auth_slot_t *oldest = NULL;
    for (size_t i = 0; i < AUTH_SLOTS; i++) {
        auth_slot_t *e = &auth_fails.slot[i];
        if (e->used && memcmp(e->addr, addr, 16) == 0)
            return e;
        if (!oldest || !e->used || (oldest->used && e->seen_ms < oldest->seen_ms))
            oldest = e;
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof(*oldest));
    memcpy(oldest->addr, addr, 16);
    oldest->used = true;
    return oldest;
}

/* Milliseconds addr stays blocked from now (0: not blocked). */
static int64_t auth_blocked_ms(const uint8_t addr[16])
{
    int64_t now = (int64_t)cm_mono_ms(), left = 0;
    pthread_mutex_lock(&auth_fails.mu);
    auth_slot_t *e = auth_slot(addr, false);
    if (e && e->blocked_until_ms > now)
        left = e->blocked_until_ms - now;
    pthread_mutex_unlock(&auth_fails.mu);
    return left;
}

/* Counts a wrong token from addr (ok: a right one, which clears it). */
static void auth_note(const uint8_t addr[16], bool ok)
{
    int64_t now = (int64_t)cm_mono_ms();
    pthread_mutex_lock(&auth_fails.mu);
    auth_slot_t *e = auth_slot(addr, !ok);
    if (e && ok) {
        e->used = false;
    } else if (e) {
        e->seen_ms = now;
        if (now - e->win_start_ms >= AUTH_WINDOW_MS) {
            e->win_start_ms = now;
            e->fails = 0;
        }
        if (++e->fails >= AUTH_FAILS_MAX) {
            int64_t block = AUTH_BLOCK_MS;
            for (uint32_t i = 0; i < e->blocks && block < AUTH_BLOCK_MAX_MS; i++)
                block *= 2;
            if (block > AUTH_BLOCK_MAX_MS)
                block = AUTH_BLOCK_MAX_MS;
            e->blocks++;
            e->blocked_until_ms = now + block;
            e->fails = 0;
            e->win_start_ms = now;
        }
    }
    pthread_mutex_unlock(&auth_fails.mu);
}

/*---- tokens ----*/

static bool token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Constant time in the length of the configured token b. */
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)((i < alen ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return diff == 0;
}

/* The token the request presents, or NULL (every token is compared: no early exit). */
static const gw_admin_token_t *authenticate(gw_server_t *srv, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    const gw_admin_token_t *found = NULL;
    for (size_t i = 0; i < srv->ntokens; i++)
        if (token_equal(h, n, srv->tokens[i].token, srv->tokens[i].len) && !found)
            found = &srv->tokens[i];
    /* The header value lies in MHD's connection memory, which goes back to the
     * heap unwiped when the connection ends: a core dump would show the token
     * of every admin request made. Nothing reads the header after this. */
    explicit_bzero((char *)(uintptr_t)h, n);
    return found;
}

static void add_token(gw_server_t *srv, const char *name, gw_role_t role, const char *tok,
                      size_t len)
{
    /* Tokens live in a secret page (no core dump, mlock'ed, wiped on free). */
    gw_admin_token_t *v = gw_secret_alloc((srv->ntokens + 1) * sizeof(*srv->tokens));
    if (!v)
        abort(); /* out of memory, as cm_xmalloc */
    if (srv->ntokens)
        memcpy(v, srv->tokens, srv->ntokens * sizeof(*srv->tokens));
    gw_secret_free(srv->tokens, srv->ntokens * sizeof(*srv->tokens));
    srv->tokens = v;
    gw_admin_token_t *t = &srv->tokens[srv->ntokens++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->role = role;
    memcpy(t->token, tok, len);
    t->token[len] = '\0';
    t->len = len;
}

/*
 * Named tokens: server.admin_tokens_file (default <data-dir>/admin.tokens if
 * it exists), mode 0600, one "name:role:token" per line (role read|write,
 * token 16..256 printable characters), '#' starts a comment. The single
 * server.admin_token (or the generated admin.token) is the write token "admin".
 */
static int load_tokens(gw_server_t *srv, bool quiet, char *errbuf, size_t errlen)
{
    char path[700];
    bool explicit_path = srv->cfg->admin_tokens_file[0] != '\0';
    if (explicit_path)
        snprintf(path, sizeof(path), "%s", srv->cfg->admin_tokens_file);
    else
        snprintf(path, sizeof(path), "%s/admin.tokens", srv->cfg->data_dir);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && !explicit_path)
            return 0;
        snprintf(errbuf, errlen, "cannot read admin tokens file %s: %s", path, strerror(errno));
        return CM_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
        close(fd);
        snprintf(errbuf, errlen, "admin tokens file %s must not be readable by others (chmod 600)",
                 path);
        return CM_EINVAL;
    }
    FILE *f = fdopen(fd, "r");
    /* stdio's own buffer would go back to the heap with the tokens in it */
    char iobuf[4096];
    setvbuf(f, iobuf, _IOFBF, sizeof(iobuf));
    char line[512];
    unsigned lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        char *p = line;
        while (*p == ' ')
            p++;
        if (!*p || *p == '#')
            continue;
        char *c1 = strchr(p, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        const char *why = NULL;
        if (!c2) {
            why = "expected name:role:token";
        } else {
            *c1 = *c2 = '\0';
            const char *name = p, *role = c1 + 1, *tok = c2 + 1;
            size_t nl = strlen(name), tl = strlen(tok);
            gw_role_t r = strcmp(role, "read") == 0    ? GW_ROLE_READ
                          : strcmp(role, "write") == 0 ? GW_ROLE_WRITE
                                                       : GW_ROLE_NONE;
            if (nl == 0 || nl > 32 || !inv_id_valid(name, nl, 32))
                why = "name must be 1..32 characters of A-Z a-z 0-9 . _ -";
            else if (r == GW_ROLE_NONE)
                why = "role must be read or write";
            else if (tl < GW_ADMIN_TOKEN_MIN || tl > 256)
                why = "token must be 16..256 characters";
            for (size_t i = 0; !why && i < tl; i++)
                if (!isgraph((unsigned char)tok[i]))
                    why = "token must be printable ASCII without spaces";
            for (size_t i = 0; !why && i < srv->ntokens; i++)
                if (strcmp(srv->tokens[i].name, name) == 0)
                    why = "duplicate name";
            if (!why)
                add_token(srv, name, r, tok, tl);
        }
        if (why) {
            fclose(f);
            explicit_bzero(iobuf, sizeof(iobuf));
            explicit_bzero(line, sizeof(line));
            snprintf(errbuf, errlen, "admin tokens file %s line %u: %s", path, lineno, why);
            return CM_EINVAL;
        }
    }
    fclose(f);
    explicit_bzero(iobuf, sizeof(iobuf));
    explicit_bzero(line, sizeof(line));
    if (!quiet)
        cm_log_info("admin", "named admin tokens loaded", "path=%s tokens=%zu", path,
                    srv->ntokens - 1);
    return 0;
}

/* Reads or creates <data-dir>/admin.token (0600). Never logs the token itself. */
static int load_or_make_token(gw_server_t *srv, char *errbuf, size_t errlen)
{
    snprintf(srv->admin_token_path, sizeof(srv->admin_token_path), "%s/admin.token",
             srv->cfg->data_dir);
    int fd = open(srv->admin_token_path, O_RDONLY | O_NOFOLLOW);
    if (fd >= 0) {
        struct stat st;
        char buf[256];
        ssize_t n = fstat(fd, &st) == 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        close(fd);
        if (n > 0 && (st.st_mode & 077) == 0) {
            while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
                n--;
            if (n >= 32) {
                add_token(srv, "admin", GW_ROLE_WRITE, buf, (size_t)n);
                explicit_bzero(buf, sizeof(buf));
                cm_log_info("admin", "admin token loaded", "path=%s", srv->admin_token_path);
                return 0;
            }
        }
        explicit_bzero(buf, sizeof(buf));
        if (n > 0 && (st.st_mode & 077) != 0)
            cm_log_warn("admin", "admin token file is readable by others; replacing it",
                        "path=%s", srv->admin_token_path);
    }
    uint8_t rnd[32];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        snprintf(errbuf, errlen, "getrandom: %s", strerror(errno));
        return CM_EIO;
    }
    static const char hex[] = "0123456789abcdef";
    char tokbuf[2 * sizeof(rnd) + 1];
    for (size_t i = 0; i < sizeof(rnd); i++) {
        tokbuf[2 * i] = hex[rnd[i] >> 4];
        tokbuf[2 * i + 1] = hex[rnd[i] & 15];
    }
    tokbuf[2 * sizeof(rnd)] = '\0';
    explicit_bzero(rnd, sizeof(rnd));
    add_token(srv, "admin", GW_ROLE_WRITE, tokbuf, 2 * sizeof(rnd));
    char tmp[640];
    snprintf(tmp, sizeof(tmp), "%s.tmp", srv->admin_token_path);
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return CM_EIO;
    }
    char line[300];
    int len = snprintf(line, sizeof(line), "%s\n", tokbuf);
    bool ok = write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    close(fd);
    explicit_bzero(line, sizeof(line));
    explicit_bzero(tokbuf, sizeof(tokbuf));
    if (!ok || rename(tmp, srv->admin_token_path) != 0) {
        snprintf(errbuf, errlen, "cannot write %s: %s", srv->admin_token_path, strerror(errno));
        unlink(tmp);
        return CM_EIO;
    }
    cm_log_info("admin", "generated an admin token", "path=%s mode=0600",
                srv->admin_token_path);
    return 0;
}

/*
 * server.admin_token_file: one line, the token (16..255 printable characters;
 * trailing spaces and the newline are dropped). Read once, here, straight into
 * the secret page add_token copies from; the read buffer is wiped. Mounted
 * secrets come as 0400 or 0440 (a Kubernetes fsGroup adds the group), so the
 * rule is: no access for others, and the file must be a regular file.
 */
static int load_token_file(gw_server_t *srv, bool quiet, char *errbuf, size_t errlen)
{
    const char *path = srv->cfg->admin_token_file;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot read server.admin_token_file %s: %s", path,
                 strerror(errno));
        return CM_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 007) != 0) {
        close(fd);
        snprintf(errbuf, errlen,
                 "server.admin_token_file %s must be a regular file without access for others "
                 "(chmod 0400 or 0440)",
                 path);
        return CM_EINVAL;
    }
    enum { CAP = 260 };
    char *buf = gw_secret_alloc(CAP);
    if (!buf)
        abort(); /* out of memory, as cm_xmalloc */
    size_t n = 0;
    ssize_t r;
    while (n < CAP - 1 && (r = read(fd, buf + n, CAP - 1 - n)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                 buf[n - 1] == '\t'))
        n--;
    const char *why =
        n < GW_ADMIN_TOKEN_MIN || n > 255 ? "must hold one token of 16..255 characters" : NULL;
    for (size_t i = 0; !why && i < n; i++)
        if (!isgraph((unsigned char)buf[i]))
            why = "the token must be printable ASCII without spaces, on one line";
    if (!why)
        add_token(srv, "admin", GW_ROLE_WRITE, buf, n);
    gw_secret_free(buf, CAP);
    if (why) {
        snprintf(errbuf, errlen, "server.admin_token_file %s: %s", path, why);
        return CM_EINVAL;
    }
    if (!quiet)
        cm_log_info("admin", "admin token loaded", "path=%s", path);
    return 0;
}

/*---- helpers ----*/

static void sale_reply(gw_resp_t *p, gw_reply_t r, const inv_sale_info_t *info)
{
    gw_resp_init(p, r);
    p->body_len = gw_sale_json(info, true, cm_wall_ms(), p->body, sizeof(p->body));
}

/*---- the call of one route ----*/

static json_t *sale_obj(const inv_sale_info_t *info)
{
    char buf[1024];
    gw_sale_json(info, true, cm_wall_ms(), buf, sizeof(buf));
    return json_loads(buf, 0, NULL);
}

/*---- sales ----*/

/* Adds a sale's eligibility rule to its answer (only when it has one):
 * "require_claims":{"name":true,...},"min_account_age_days":N; an answer
 * longer than the small body (16 long names) goes out as a big one. */
static void elig_fields(gw_admin_call_t *a, const char *sale_id)
{
    gw_elig_rule_t el;
    gw_resp_t *p = a->p;
    if (!gw_elig_get(a->srv, sale_id, &el))
        return;
    json_t *o = json_loadb(p->body, p->body_len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return;
    }
    json_t *rq = json_object();
    for (uint32_t i = 0; i < el.n_claims; i++)
        json_object_set_new(rq, el.claims[i], json_true());
    json_object_set_new(o, "require_claims", rq);
    json_object_set_new(o, "min_account_age_days", json_integer(el.min_age_days));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    size_t n = s ? strlen(s) : 0;
    if (s && n < sizeof(p->body)) {
        memcpy(p->body, s, n + 1);
        p->body_len = n;
        free(s);
    } else {
        gw_admin_set_big(a, s);
    }
}

/*
 * A PUT's require_claims and min_account_age_days (absent: as they were)
 * checked into *out (gw_elig_parse), or 400 naming the problem.
 */
static bool elig_arg(gw_admin_call_t *a, json_t *j, const char *id, gw_elig_rule_t *out)
{
    gw_elig_rule_t old;
    bool had = gw_elig_get(a->srv, id, &old);
    int64_t days = had ? old.min_age_days : 0;
    if (!gw_admin_get_int(j, "min_account_age_days", 0, GW_ELIG_AGE_MAX_DAYS, false, &days, a->p))
        return false;
    json_t *rq = json_object_get(j, "require_claims"), *own = NULL;
    if (json_is_null(rq))
        rq = NULL;
    else if (!rq && had && old.n_claims) {
        rq = own = json_object();
        for (uint32_t i = 0; i < old.n_claims; i++)
            json_object_set_new(own, old.claims[i], json_true());
    }
    char why[512];
    int rc = gw_elig_parse(a->srv, id, rq, days, out, why, sizeof(why));
    json_decref(own);
    if (rc) {
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL, "%s", why);
        return false;
    }
    return true;
}

/* Appends the lottery's window to a sale body (only when the sale has one). */
static void fair_fields(gw_server_t *srv, gw_resp_t *p, const char *sale_id)
{
    int64_t w = 0, e = 0, wr = gw_fair_room_rate(srv->fair, sale_id);
    gw_fair_conf_get(srv->fair, sale_id, &w, &e);
    if (w > 0 && p->body_len >= 2 && p->body[p->body_len - 1] == '}') {
        p->body_len--;
        p->body_len += (size_t)snprintf(p->body + p->body_len, sizeof(p->body) - p->body_len,
                                        ",\"fair_window_ms\":%lld,\"fair_early_ms\":%lld}",
                                        (long long)w, (long long)e);
    }
    if (wr > 0 && p->body_len >= 2 && p->body[p->body_len - 1] == '}') {
        p->body_len--;
        p->body_len += (size_t)snprintf(p->body + p->body_len, sizeof(p->body) - p->body_len,
                                        ",\"waiting_room_rate\":%lld}", (long long)wr);
    }
}

/* Appends the registration window and count to a sale body (only when the sale has one). */
static void reg_fields(gw_server_t *srv, gw_resp_t *p, const char *sale_id)
{
    int64_t o = 0, c = 0;
    gw_reg_conf_get(srv, sale_id, &o, &c);
    if (o <= 0 || p->body_len < 2 || p->body[p->body_len - 1] != '}')
        return;
    long long n = 0;
    char why[160], os[40], cs[40];
    bool counted = gw_reg_count(srv, sale_id, &n, why, sizeof(why)) == 0;
    cm_time_format_rfc3339(o, os, sizeof(os));
    cm_time_format_rfc3339(c, cs, sizeof(cs));
    p->body_len--;
    p->body_len += (size_t)snprintf(
        p->body + p->body_len, sizeof(p->body) - p->body_len,
        ",\"registration_opens_at\":\"%s\",\"registration_closes_at\":\"%s\","
        "\"registrations\":%lld%s}",
        os, cs, n, counted ? "" : ",\"registrations_unknown\":true");
}

/*
 * h_sale_put's answer when the sale was saved and its lottery part then failed
 * (rc from gw_fair_configure): the audit line says what changed (the sale as
 * saved; "lottery_error" says why its lottery settings may not have been),
 * and so does the answer: the lottery failure's status, with "sale_saved":true
 * and a message naming both. Not "unchanged": a lottery applied here but not
 * saved to fair.json, or put in Redis but not applied here, is partly set.
 */
static void sale_saved_error(gw_admin_call_t *a, const char *id, int rc, const char *why,
                             const inv_sale_info_t *before, const inv_sale_info_t *info)
{
    json_t *now = sale_obj(info);
    if (now)
        json_object_set_new(now, "lottery_error", json_string(why[0] ? why : cm_strerror(rc)));
    gw_admin_audit(a, "sale.put", id, before ? sale_obj(before) : NULL, now);
    cm_log_warn("admin", "sale saved but its lottery settings were not", "sale=%s reason=\"%s\"",
                id, why);
    gw_reply_t st = rc == CM_ECONFLICT ? GW_R_CONFLICT
                    : rc == CM_EINVAL  ? GW_R_BAD_REQUEST
                                       : GW_R_UNAVAILABLE;
    gw_resp_error(a->p, st,
                  rc == CM_ECONFLICT ? "\"reason\":\"lottery_drawn\",\"sale_saved\":true"
                                     : "\"sale_saved\":true",
                  "sale %s is saved, but setting its lottery and waiting room failed (%s): "
                  "PUT again to set them",
                  id, why[0] ? why : cm_strerror(rc));
}

static void h_sale_put(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    gw_resp_t *p = a->p;
    if (!gw_admin_sale_arg(a))
        return;
    const char *id = a->arg;
    json_t *j = gw_admin_parse_object(a, p);
    if (!j)
        return;
    static const char *const keys[] = {"stock",          "per_user_limit", "starts_at",
                                       "ends_at",        "fair_window_ms", "fair_early_ms",
                                       "waiting_room_rate", "registration_opens_at",
                                       "registration_closes_at", "require_claims",
                                       "min_account_age_days", NULL};
    inv_sale_def_t d;
    memset(&d, 0, sizeof(d));
    memcpy(d.sale_id, id, strlen(id) + 1); /* id was checked: <= 64 chars */
    int64_t stock = 0, limit = 1, fwin = 0, fearly = 0;
    gw_fair_conf_get(srv->fair, id, &fwin, &fearly); /* absent: unchanged */
    int64_t wr = gw_fair_room_rate(srv->fair, id);
    int64_t ropen = 0, rclose = 0;
    gw_reg_conf_get(srv, id, &ropen, &rclose); /* absent: unchanged */
    gw_elig_rule_t elig; /* checked by elig_arg, set once all is valid */
    if (gw_admin_only_keys(j, keys, p) && gw_admin_get_int(j, "stock", 0, 1000000000000LL, true, &stock, p) &&
        gw_admin_get_int(j, "per_user_limit", 1, 1000000, false, &limit, p) &&
        gw_admin_get_time(j, "starts_at", &d.starts_at_ms, p) && gw_admin_get_time(j, "ends_at", &d.ends_at_ms, p) &&
        gw_admin_get_int(j, "fair_window_ms", 0, GW_FAIR_WINDOW_MAX_MS, false, &fwin, p) &&
        gw_admin_get_int(j, "fair_early_ms", 0, GW_FAIR_EARLY_MAX_MS, false, &fearly, p) &&
        gw_admin_get_int(j, "waiting_room_rate", 0, GW_WR_RATE_MAX, false, &wr, p) &&
        gw_admin_get_reg_time(j, "registration_opens_at", &ropen, p) &&
        gw_admin_get_reg_time(j, "registration_closes_at", &rclose, p) &&
        elig_arg(a, j, id, &elig)) {
        if (d.starts_at_ms && d.ends_at_ms && d.ends_at_ms <= d.starts_at_ms) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "ends_at must be after starts_at");
        } else if (fwin > 0 && !d.starts_at_ms) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                          "fair_window_ms needs starts_at: the window opens at the start");
        } else {
            d.stock = stock;
            d.per_user_limit = (uint32_t)limit;
            inv_sale_info_t before;
            bool existed = inv_sale_get(srv->inv, id, &before) == 0;
            inv_sale_info_t info;
            char why[256] = "";
            /* Fair by default: a new sale with a start and no word on its lottery gets
             * sales.default_fair_window_ms and, unless it says fair_early_ms,
             * sales.default_fair_early_ms (not with a waiting room, which orders its
             * buyers itself; not when the window would be over already). */
            int64_t dflt = (int64_t)srv->cfg->default_fair_window_ms;
            bool by_default = !existed && !json_object_get(j, "fair_window_ms") && fwin == 0 &&
                              wr == 0 && d.starts_at_ms && dflt > 0 &&
                              d.starts_at_ms + dflt > cm_wall_ms();
            if (by_default) {
                fwin = dflt;
                if (!json_object_get(j, "fair_early_ms"))
                    fearly = (int64_t)srv->cfg->default_fair_early_ms;
            }
            /* The lottery's refusals first: a 400 must leave the sale as it
             * was (a new sale not made, an existing one's stock and start
             * not moved under the entries it has taken). */
            int rc = gw_reg_window_check(ropen, rclose, fwin, d.starts_at_ms - fearly, why,
                                         sizeof(why));
            if (rc == 0)
                rc = gw_fair_configure_check(srv, id, d.starts_at_ms, fwin, fearly, wr, why,
                                             sizeof(why));
            if (rc == CM_EINVAL && by_default) {
                size_t wl = strlen(why);
                snprintf(why + wl, sizeof(why) - wl,
                         "; a sale created without fair_window_ms gets a %lld ms lottery "
                         "(sales.default_fair_window_ms): say \"fair_window_ms\":0 for first-come",
                         (long long)dflt);
            }
            bool drawn = rc == CM_ECONFLICT; /* the lottery has had its one draw */
            if (rc == 0)
                rc = inv_sale_put(srv->inv, &d, &info, why, sizeof(why));
            if (rc == 0 && (rc = gw_elig_set(srv, &elig, why, sizeof(why))) != 0) {
                sale_saved_error(a, id, rc, why, existed ? &before : NULL, &info);
                json_decref(j);
                return;
            }
            if (rc == 0) {
                rc = gw_fair_configure(srv, id, fwin, fearly, wr, why, sizeof(why));
                if (rc == 0)
                    rc = gw_reg_configure(srv, id, ropen, rclose, why, sizeof(why));
                if (rc != 0) {
                    /* The check passed but the lottery's part failed after the sale was
                     * saved: Redis failed, an entry or the draw raced the check. The sale
                     * cannot be put back safely (units may have sold meanwhile; a new sale
                     * cannot be deleted while live), so the change that was made is
                     * audited and the error says it: the sale is saved, its lottery and
                     * waiting room may not be (PUT again to set them). */
                    sale_saved_error(a, id, rc, why, existed ? &before : NULL, &info);
                    json_decref(j);
                    return;
                }
            }
            if (drawn) {
                gw_resp_error(p, GW_R_CONFLICT, "\"reason\":\"lottery_drawn\"", "%s", why);
            } else if (rc == 0) {
                sale_reply(p, existed ? GW_R_OK : GW_R_CREATED, &info);
                fair_fields(srv, p, id);
                reg_fields(srv, p, id);
                elig_fields(a, id);
                gw_admin_audit(a, "sale.put", id, existed ? sale_obj(&before) : NULL,
                                sale_obj(&info));
                cm_log_info("admin", "sale defined", "sale=%s stock=%lld per_user_limit=%u",
                            id, (long long)stock, d.per_user_limit);
            } else {
                gw_admin_inv_error(p, rc, why, id);
            }
        }
    }
    json_decref(j);
}

static void h_sale_get(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    inv_sale_info_t info;
    int rc = inv_sale_get(a->srv->inv, a->arg, &info);
    if (rc == 0) {
        sale_reply(a->p, GW_R_OK, &info);
        fair_fields(a->srv, a->p, a->arg);
        reg_fields(a->srv, a->p, a->arg);
        elig_fields(a, a->arg);
    } else {
        gw_admin_inv_error(a->p, rc, "", a->arg);
    }
}

/* DELETE /admin/v1/sales/{id}: an ended sale only (409 for a live or upcoming one). */
static void h_sale_delete(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    gw_server_t *srv = a->srv;
    inv_sale_info_t before;
    bool had = inv_sale_get(srv->inv, a->arg, &before) == 0;
    char why[256] = "";
    int rc = inv_sale_delete(srv->inv, a->arg, cm_wall_ms(), why, sizeof(why));
    if (rc == 0 || rc == CM_ENOTFOUND) {
        /* The sale's lottery goes with it (gw_fair_sale_deleted): left behind, it would make
         * a sale created again under the id answer 409 lottery_drawn, or take its draw. A
         * DELETE of a sale that is gone clears what a failed clean-up left. */
        char fwhy[256] = "";
        gw_elig_sale_deleted(srv, a->arg);
        int frc = gw_fair_sale_deleted(srv, a->arg, rc == CM_ENOTFOUND, fwhy, sizeof(fwhy));
        if (frc != 0 && frc != CM_ENOTFOUND) {
            gw_resp_error(a->p, GW_R_UNAVAILABLE, NULL,
                          "sale %s %s, but its lottery could not be cleared (%s): DELETE it "
                          "again",
                          a->arg, rc == 0 ? "is deleted" : "was deleted", fwhy);
            if (rc == 0)
                gw_admin_audit(a, "sale.delete", a->arg,
                                had ? sale_obj(&before) : NULL, NULL);
            return;
        }
        if (rc == CM_ENOTFOUND && frc == 0)
            rc = 0; /* what its lottery left is gone now */
    }
    if (rc != 0) {
        gw_admin_inv_error(a->p, rc, why, a->arg);
        return;
    }
    gw_admin_resp_json(a->p, GW_R_OK, "{\"deleted\":true}");
    gw_admin_audit(a, "sale.delete", a->arg, had ? sale_obj(&before) : NULL, NULL);
    cm_log_info("admin", "sale deleted", "sale=%s", a->arg);
}

/* GET /admin/v1/sales/{id}/draw: the start-window draw, auditable (gw_fair.h). */
static void h_sale_draw(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    json_t *o = gw_fair_draw_json(a->srv->fair, a->arg);
    if (!o) {
        gw_resp_error(a->p, GW_R_UNKNOWN_SALE, NULL, "sale %s has no start-window lottery",
                      a->arg);
        return;
    }
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

static void h_sale_restock(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    gw_resp_t *p = a->p;
    if (!gw_admin_sale_arg(a))
        return;
    const char *id = a->arg;
    const char *key = gw_admin_header(a, "Idempotency-Key");
    json_t *j = gw_admin_parse_object(a, p);
    if (!j)
        return;
    static const char *const keys[] = {"add", NULL};
    int64_t add = 0;
    if (gw_admin_only_keys(j, keys, p) && gw_admin_get_int(j, "add", 1, 1000000000000LL, true, &add, p)) {
        inv_sale_info_t before, info;
        bool known = inv_sale_get(srv->inv, id, &before) == 0;
        char why[256] = "";
        int rc = inv_restock_keyed(srv->inv, id, add, key, &info, why, sizeof(why));
        if (rc == 0) {
            sale_reply(p, GW_R_OK, &info);
            gw_admin_audit(a, "sale.restock", id,
                            known ? json_pack("{s:I,s:I}", "stock_total",
                                              (json_int_t)before.stock_total, "stock_left",
                                              (json_int_t)before.stock_left)
                                  : NULL,
                            json_pack("{s:I,s:I,s:I}", "add", (json_int_t)add, "stock_total",
                                      (json_int_t)info.stock_total, "stock_left",
                                      (json_int_t)info.stock_left));
            cm_log_info("admin", "sale restocked", "sale=%s add=%lld", id, (long long)add);
        } else if (rc == INV_RESTOCK_REPLAYED) {
            /* A retry of a restock that was applied: the same answer, nothing added. */
            sale_reply(p, GW_R_OK, &info);
            gw_resp_header(p, "Idempotent-Replayed", "true");
        } else {
            gw_admin_inv_error(p, rc, why, id);
        }
    }
    json_decref(j);
}

typedef struct list_ctx {
    gw_server_t *srv;
    json_t *arr;
} list_ctx_t;

/* A sale of a list, with its eligibility rule when it has one. */
static void list_one(inv_sale_t *sale, void *ctx)
{
    list_ctx_t *lc = ctx;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    json_t *o = sale_obj(&info);
    gw_elig_rule_t el;
    if (o && gw_elig_get(lc->srv, info.sale_id, &el)) {
        json_t *rq = json_object();
        for (uint32_t i = 0; i < el.n_claims; i++)
            json_object_set_new(rq, el.claims[i], json_true());
        json_object_set_new(o, "require_claims", rq);
        json_object_set_new(o, "min_account_age_days", json_integer(el.min_age_days));
    }
    json_array_append_new(lc->arr, o);
}

static void h_sales_list(gw_admin_call_t *a)
{
    json_t *arr = json_array();
    inv_sale_foreach(a->srv->inv, list_one, &(list_ctx_t){a->srv, arr});
    json_t *o = json_pack("{s:o}", "sales", arr);
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

/*---- limits ----*/

static char *limits_json(gw_server_t *srv)
{
    json_t *o = gw_limits_json(srv->limits);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(o);
    return s;
}

/* Parses a rate in req/s with at most 3 decimals into thousandths. */
static bool rate_milli(json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || (uint64_t)i > CM_RATE_MILLI_MAX / 1000)
            return false;
        *out = (uint64_t)i * 1000;
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v) * 1000.0;
        if (!(d >= 0) || d > (double)CM_RATE_MILLI_MAX)
            return false;
        uint64_t m = (uint64_t)(d + 0.5);
        if (d - (double)m > 1e-6 || (double)m - d > 1e-6)
            return false; /* more than 3 decimals */
        if (m == 0 && d != 0)
            return false; /* a rate > 0 below 0.001: the slack above must not make it "off" */
        *out = m;
        return true;
    }
    return false;
}

static bool rate_field(json_t *v, const char *k, uint64_t *out, gw_resp_t *p)
{
    if (!rate_milli(v, out)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "%s must be a number of requests per second >= 0 with at most 3 "
                      "decimals (0 = off)",
                      k);
        return false;
    }
    return true;
}

static bool burst_field(json_t *v, const char *k, uint64_t *out, gw_resp_t *p)
{
    json_int_t b = json_is_integer(v) ? json_integer_value(v) : -1;
    if (b < 0 || (uint64_t)b > CM_RATE_BURST_MAX) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s must be an integer from 0 to %llu", k,
                      (unsigned long long)CM_RATE_BURST_MAX);
        return false;
    }
    *out = (uint64_t)b;
    return true;
}

/* Applies the members of j over pol (the current policies). False with p set. */
static bool limits_parse(json_t *j, cm_rate_policy_t *pol, gw_resp_t *p)
{
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        size_t i;
        for (i = 0; i < CM_ARRAY_LEN(gw_limit_keys); i++)
            if (strcmp(k, gw_limit_keys[i].name) == 0)
                break;
        if (i == CM_ARRAY_LEN(gw_limit_keys)) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "unknown field %s", k);
            return false;
        }
        cm_rate_policy_t *pp = &pol[gw_limit_keys[i].scope];
        if (gw_limit_keys[i].rate ? !rate_field(v, k, &pp->rate_milli, p)
                               : !burst_field(v, k, &pp->burst, p))
            return false;
    }
    for (int s = 0; s < GW_SCOPE_COUNT; s++) {
        if (pol[s].rate_milli > 0 && pol[s].burst < 1) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "%s_burst must be >= 1 when %s_rps > 0",
                          gw_scope_name((gw_scope_t)s), gw_scope_name((gw_scope_t)s));
            return false;
        }
    }
    return true;
}

/* srv->cfg's field of gw_limit_keys[i]. */
static uint64_t *limit_field(gw_config_t *c, size_t i)
{
    uint64_t *const f[] = {&c->global_rps, &c->global_burst, &c->sale_rps, &c->sale_burst,
                           &c->user_rps,   &c->user_burst,   &c->ip_rps,   &c->ip_burst,
                           &c->subnet_rps, &c->subnet_burst};
    _Static_assert(CM_ARRAY_LEN(f) == CM_ARRAY_LEN(gw_limit_keys), "one field per limit key");
    return f[i];
}

/* What a change of the limits replaced, for its audit: taken before the change,
 * and again by the fleet each time the fleet's newer version came in under the
 * change and the change was merged over it (gw_fleet_publish_limits). */
typedef struct {
    gw_server_t *srv;
    json_t *old;
    bool rules; /* old is gw_config_snapshot (limits and rules), else gw_limits_json */
} replaced_t;

static void replaced_take(void *ctx)
{
    replaced_t *r = ctx;
    json_decref(r->old);
    r->old = r->rules ? (json_t *)gw_config_snapshot(r->srv) : gw_limits_json(r->srv->limits);
}

/* All valid: apply at once (buckets keep their tokens), record, publish. */
/*
 * Applies and publishes pol, a change that set `fields` (gw_fleet_limit_bit).
 * Caller holds gw_fleet_limits_lock (why: its connect error). Returns 0 (also
 * when Redis is away: the change stays here and is published later), or
 * CM_ECONFLICT (why says why, for a 409): the fleet's limits moved on and this
 * change could not be merged over them; the fleet's version is in force.
 */
static int limits_apply(gw_server_t *srv, const cm_rate_policy_t *pol, uint32_t fields,
                        replaced_t *r, char *why, size_t whylen)
{
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        gw_limits_set(srv->limits, (gw_scope_t)s, pol[s]);
    pthread_mutex_lock(&srv->cfg_mu);
    for (size_t i = 0; i < CM_ARRAY_LEN(gw_limit_keys); i++) {
        const cm_rate_policy_t *pp = &pol[gw_limit_keys[i].scope];
        uint64_t v = gw_limit_keys[i].rate ? pp->rate_milli : pp->burst, *f = limit_field(srv->cfg, i);
        if (*f == v)
            continue;
        *f = v;
        /* GET /admin/v1/config showed a changed limit with the source of the
         * value it replaced ("default", "file"): it says "runtime" now. */
        char key[48];
        snprintf(key, sizeof(key), "limits.%s", gw_limit_keys[i].name);
        gw_config_mark_runtime(srv->conf, key);
    }
    pthread_mutex_unlock(&srv->cfg_mu);
    int rc = gw_fleet_publish_limits(srv, fields, true, replaced_take, r, why, whylen);
    if (rc == CM_ECONFLICT)
        return rc;
    if (rc != 0)
        cm_log_warn("admin", "limits changed here but not published to the fleet",
                    "reason=\"%s\"", why);
    return 0;
}

/* The 409 of a change the fleet's newer limits refused (why: gw_fleet's reason). */
static void fleet_conflict(gw_resp_t *p, const char *why)
{
    gw_resp_error(p, GW_R_CONFLICT, "\"reason\":\"fleet_config_conflict\"", "%s", why);
}

static void h_limits_get(gw_admin_call_t *a)
{
    gw_admin_set_big(a, limits_json(a->srv));
}

static void h_limits_patch(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    json_t *j = gw_admin_parse_object(a, a->p);
    if (!j)
        return;
    /* The fields not in the body keep the limits in force: read, merged, applied,
     * published and audited under the fleet's limits lock, so another gateway's
     * change the fleet thread applies meanwhile comes before this one or after it,
     * and is not written back over with the values it replaced. A version another
     * gateway published that this one has not read yet (~5 ms; a tick when the
     * message is lost) refuses the publish (a compare-and-set): the fleet then
     * applies it and lays the body's fields over it (gw_fleet_publish_limits). */
    char why[512] = "";
    gw_fleet_limits_lock(srv, why, sizeof(why));
    cm_rate_policy_t pol[GW_SCOPE_COUNT];
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        pol[s] = gw_limits_get(srv->limits, (gw_scope_t)s);
    if (limits_parse(j, pol, a->p)) {
        uint32_t fields = 0;
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            fields |= gw_fleet_limit_bit(k);
        }
        replaced_t r = {.srv = srv, .old = gw_limits_json(srv->limits)};
        if (limits_apply(srv, pol, fields, &r, why, sizeof(why)) == CM_ECONFLICT) {
            json_decref(r.old);
            fleet_conflict(a->p, why);
        } else {
            gw_admin_audit(a, "limits.patch", "limits", r.old, gw_limits_json(srv->limits));
            char *s = limits_json(srv);
            cm_log_info("admin", "limits changed", "limits=%s", s);
            gw_admin_set_big(a, s);
        }
    }
    gw_fleet_limits_unlock(srv);
    json_decref(j);
}

/*---- per-sale rules ----*/

/* Parses one rule body (sale id given). False with p set. */
static bool rule_parse(json_t *j, const char *sale_id, gw_rule_t *r, gw_resp_t *p)
{
    static const char *const keys[] = {"sale_id",  "user_rps", "user_burst", "sale_rps",
                                       "sale_burst", "dry_run", "rejected", "dry_run_rejected",
                                       NULL};
    memset(r, 0, sizeof(*r));
    if (!gw_admin_only_keys(j, keys, p))
        return false;
    size_t n = strlen(sale_id);
    if (n == 0 || n > INV_SALE_ID_MAX || !inv_id_valid(sale_id, n, INV_SALE_ID_MAX)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "sale_id must be 1..64 characters of A-Z a-z 0-9 . _ -");
        return false;
    }
    memcpy(r->sale_id, sale_id, n + 1);
    json_t *v;
    bool has_ub = false, has_sb = false;
    if ((v = json_object_get(j, "user_rps")) && !rate_field(v, "user_rps", &r->user.rate_milli, p))
        return false;
    if ((v = json_object_get(j, "sale_rps")) && !rate_field(v, "sale_rps", &r->sale.rate_milli, p))
        return false;
    if ((v = json_object_get(j, "user_burst")) &&
        !(has_ub = burst_field(v, "user_burst", &r->user.burst, p)))
        return false;
    if ((v = json_object_get(j, "sale_burst")) &&
        !(has_sb = burst_field(v, "sale_burst", &r->sale.burst, p)))
        return false;
    /* "sale_id" is allowed so that a rule from GET goes back as it is; another
     * sale's id there was ignored and the path's sale got the rule. */
    if ((v = json_object_get(j, "sale_id")) &&
        !(json_is_string(v) && strcmp(json_string_value(v), sale_id) == 0)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "sale_id in the body must be the path's (%s) or left out", sale_id);
        return false;
    }
    if ((v = json_object_get(j, "dry_run")) && !json_is_boolean(v)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "dry_run must be true or false");
        return false;
    }
    r->dry_run = json_is_true(v);
    /* An omitted burst defaults to one second's worth (at least 1). */
    if (!has_ub && r->user.rate_milli)
        r->user.burst = (r->user.rate_milli + 999) / 1000;
    if (!has_sb && r->sale.rate_milli)
        r->sale.burst = (r->sale.rate_milli + 999) / 1000;
    if (r->user.rate_milli == 0 && r->sale.rate_milli == 0) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "a rule needs user_rps or sale_rps > 0");
        return false;
    }
    if ((r->user.rate_milli && r->user.burst < 1) || (r->sale.rate_milli && r->sale.burst < 1)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "a burst must be >= 1 when its rate is > 0");
        return false;
    }
    /* A part that is off keeps no burst (gw_limits_set_rules stores it as 0):
     * the answer and the audit's "new" show the rule as it is in force. */
    if (!r->user.rate_milli)
        r->user.burst = 0;
    if (!r->sale.rate_milli)
        r->sale.burst = 0;
    return true;
}

static void h_rules_list(gw_admin_call_t *a)
{
    json_t *o = json_pack("{s:o}", "rules", gw_rules_json(a->srv->limits, true));
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)));
    json_decref(o);
}

static void h_rule_put(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    json_t *j = gw_admin_parse_object(a, a->p);
    if (!j)
        return;
    gw_rule_t r;
    if (rule_parse(j, a->arg, &r, a->p)) {
        gw_rule_t rules[GW_LIMIT_RULES_MAX + 1];
        size_t n = gw_limits_get_rules(srv->limits, rules, GW_LIMIT_RULES_MAX);
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(rules[i].sale_id, r.sale_id) == 0)
                break;
        json_t *old = i < n ? gw_rule_json(&rules[i], false) : NULL;
        if (i == n && n == GW_LIMIT_RULES_MAX) {
            gw_resp_error(a->p, GW_R_CONFLICT, NULL, "at most %d rules", GW_LIMIT_RULES_MAX);
            json_decref(old);
        } else {
            rules[i] = r;
            gw_limits_set_rules(srv->limits, rules, i == n ? n + 1 : n);
            gw_admin_audit(a, "rule.put", r.sale_id, old, gw_rule_json(&r, false));
            json_t *o = gw_rule_json(&r, false);
            gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)));
            json_decref(o);
            if (i == n)
                gw_resp_init(a->p, GW_R_CREATED); /* the body is set_big's */
            cm_log_info("admin", "rule set", "sale=%s dry_run=%d", r.sale_id, r.dry_run);
        }
    }
    json_decref(j);
}

static void h_rule_delete(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    gw_rule_t rules[GW_LIMIT_RULES_MAX];
    size_t n = gw_limits_get_rules(srv->limits, rules, GW_LIMIT_RULES_MAX);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rules[i].sale_id, a->arg) != 0)
            continue;
        json_t *old = gw_rule_json(&rules[i], false);
        rules[i] = rules[n - 1];
        gw_limits_set_rules(srv->limits, rules, n - 1);
        gw_admin_audit(a, "rule.delete", a->arg, old, NULL);
        gw_resp_init(a->p, GW_R_OK);
        a->p->body_len = (size_t)snprintf(a->p->body, sizeof(a->p->body),
                                          "{\"deleted\":true}");
        return;
    }
    gw_resp_error(a->p, GW_R_UNKNOWN_RULE, NULL, "no rule for sale %.64s", a->arg);
}

/*---- audit and rollback ----*/


static void h_audit(gw_admin_call_t *a)
{
    uint64_t since = 0, limit = 100;
    if (!gw_admin_query_u64(a, "since", UINT64_MAX / 2, &since) || !gw_admin_query_u64(a, "limit", 10000, &limit))
        return;
    json_t *arr = gw_audit_list(a->srv, since, limit ? limit : 1);
    if (!arr) {
        gw_resp_error(a->p, GW_R_INTERNAL, NULL, "cannot read the audit log");
        return;
    }
    json_t *o = json_pack("{s:I,s:o}", "version", (json_int_t)gw_audit_version(a->srv),
                          "entries", arr);
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)));
    json_decref(o);
}

static void h_rollback(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    json_t *j = gw_admin_parse_object(a, a->p);
    if (!j)
        return;
    static const char *const keys[] = {"version", NULL};
    int64_t version = 0;
    json_t *cfg = NULL;
    if (!gw_admin_only_keys(j, keys, a->p) || !gw_admin_get_int(j, "version", 1, INT64_MAX, true, &version, a->p))
        goto out;
    if (gw_audit_config_at(srv, (uint64_t)version, (void **)&cfg) != 0) {
        gw_resp_error(a->p, GW_R_INTERNAL, NULL, "cannot read the audit log");
        goto out;
    }
    if (!cfg) {
        gw_resp_error(a->p, GW_R_NOT_FOUND, NULL, "no version %lld in the audit log",
                      (long long)version);
        goto out;
    }
    /* Validate everything first; apply only a complete, valid set. */
    cm_rate_policy_t pol[GW_SCOPE_COUNT];
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        pol[s] = gw_limits_get(srv->limits, (gw_scope_t)s);
    json_t *lim = json_object_get(cfg, "limits"), *rl = json_object_get(cfg, "rules");
    if (!json_is_object(lim) || !json_is_array(rl) || !limits_parse(lim, pol, a->p)) {
        gw_resp_error(a->p, GW_R_CONFLICT, NULL, "version %lld holds no usable limits",
                      (long long)version);
        goto out;
    }
    gw_rule_t rules[GW_LIMIT_RULES_MAX];
    size_t n = 0;
    size_t i;
    json_t *rv;
    json_array_foreach(rl, i, rv) {
        const char *sid = json_string_value(json_object_get(rv, "sale_id"));
        if (n == GW_LIMIT_RULES_MAX || !json_is_object(rv) || !sid ||
            !rule_parse(rv, sid, &rules[n], a->p)) {
            gw_resp_error(a->p, GW_R_CONFLICT, NULL, "version %lld holds an unusable rule",
                          (long long)version);
            goto out;
        }
        n++;
    }
    /* under the limits lock, as a PATCH: the audit's old and new are the limits
     * this change replaced and set, with no peer's change landing between. It
     * sets every limit field: merged over a newer version of the fleet's (the
     * compare-and-set refused it), it still restores exactly `version`'s
     * limits, and the audit's old shows the newer version it replaced. */
    char why[512] = "";
    gw_fleet_limits_lock(srv, why, sizeof(why));
    replaced_t r = {.srv = srv, .old = gw_config_snapshot(srv), .rules = true};
    if (limits_apply(srv, pol, GW_FLEET_LIMITS_ALL, &r, why, sizeof(why)) == CM_ECONFLICT) {
        gw_fleet_limits_unlock(srv);
        json_decref(r.old);
        fleet_conflict(a->p, why);
        goto out;
    }
    gw_limits_set_rules(srv->limits, rules, n);
    char target[48];
    snprintf(target, sizeof(target), "version %lld", (long long)version);
    uint64_t v =
        gw_admin_audit(a, "config.rollback", target, r.old, gw_config_snapshot(srv));
    gw_fleet_limits_unlock(srv);
    json_t *o = json_pack("{s:I,s:I,s:o}", "version", (json_int_t)v, "restored", (json_int_t)version,
                          "config", (json_t *)gw_config_snapshot(srv));
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)));
    json_decref(o);
    cm_log_info("admin", "limits and rules rolled back", "to_version=%lld version=%llu",
                (long long)version, (unsigned long long)v);
out:
    json_decref(cfg);
    json_decref(j);
}

/*---- stats, config, metrics ----*/

/* The top `max` by guaranteed rejections (count - error: space-saving's lower
 * bound), rows at or below 1 left out: a user who sent one request and took
 * over a slot reads "5 rejections, error 4", which says nothing. */
static json_t *hitters_arr(const cm_topk_t *t, bool ip, size_t max)
{
    cm_topk_entry_t top[CM_TOPK_SLOTS];
    size_t n = cm_topk_sorted(t, top, CM_TOPK_SLOTS);
    /* by lower bound, count breaking ties (n is at most 64: an insertion sort) */
    for (size_t i = 1; i < n; i++) {
        cm_topk_entry_t e = top[i];
        size_t j = i;
        for (; j > 0; j--) {
            uint64_t lj = top[j - 1].count - top[j - 1].error, le = e.count - e.error;
            if (lj > le || (lj == le && top[j - 1].count >= e.count))
                break;
            top[j] = top[j - 1];
        }
        top[j] = e;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n && json_array_size(arr) < max; i++) {
        uint64_t lower = top[i].count - top[i].error;
        if (lower <= 1)
            continue;
        char key[80];
        if (ip)
            gw_client_key_format((const uint8_t *)top[i].key, top[i].len, key, sizeof(key));
        else
            snprintf(key, sizeof(key), "%.*s", (int)top[i].len, top[i].key);
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:I}", "key", key, "count",
                                             (json_int_t)top[i].count, "error",
                                             (json_int_t)top[i].error, "lower_bound",
                                             (json_int_t)lower));
    }
    return arr;
}

static json_t *latency_obj(const gw_counters_t *c)
{
    static const uint64_t bounds[GW_LAT_NBOUNDS] = GW_LAT_BOUNDS_US;
    json_t *o = json_object();
    json_t *b = json_array();
    for (int i = 0; i < GW_LAT_NBOUNDS; i++)
        json_array_append_new(b, json_integer((json_int_t)bounds[i]));
    json_object_set_new(o, "bounds_us", b);
    for (int r = 0; r < GW_ROUTE_COUNT; r++) {
        json_t *counts = json_array();
        uint64_t total = 0;
        for (int i = 0; i <= GW_LAT_NBOUNDS; i++) {
            uint64_t n = atomic_load(&c->lat_buckets[r][i]);
            total += n;
            json_array_append_new(counts, json_integer((json_int_t)n));
        }
        json_object_set_new(o, gw_route_name((gw_route_t)r),
                            json_pack("{s:o,s:I,s:I}", "counts", counts, "count",
                                      (json_int_t)total, "sum_us",
                                      (json_int_t)atomic_load(&c->lat_sum_us[r])));
    }
    return o;
}

static char *stats_json(gw_server_t *srv)
{
    gw_counters_t c;
    gw_server_counters(srv, &c);
    json_t *replies = json_object();
    for (int i = 0; i < GW_R_COUNT; i++) {
        uint64_t n = atomic_load(&c.replies[i]);
        if (!n)
            continue;
        char key[48];
        int kind = gw_px_kind((gw_reply_t)i);
        if (kind < 0) {
            snprintf(key, sizeof(key), "%d_%s", gw_reply_status((gw_reply_t)i),
                     gw_reply_code((gw_reply_t)i));
            json_object_set_new(replies, key, json_integer((json_int_t)n));
            continue;
        }
        /* proxied: by the status sent ("404_proxied", "503_fallback") */
        for (int s = 0; s < GW_PX_STATUS_SPAN; s++) {
            uint64_t m = atomic_load(&c.px_status[kind][s]);
            if (m) {
                snprintf(key, sizeof(key), "%d_%s", GW_PX_STATUS_MIN + s,
                         gw_reply_code((gw_reply_t)i));
                json_object_set_new(replies, key, json_integer((json_int_t)m));
            }
        }
    }
    json_t *rl = json_object();
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        json_object_set_new(rl, gw_scope_name((gw_scope_t)s),
                            json_integer((json_int_t)atomic_load(&c.rate_limited[s])));
    oq_spool_stats_t ss;
    oq_spool_stats(srv->spool, &ss);
    gw_limits_stats_t ls;
    gw_limits_stats(srv->limits, &ls);
    gw_orders_stats_t os;
    gw_orders_stats(srv->orders, &os);
    static cm_topk_t users, ips; /* ~12 KiB: off the small admin thread stack; under stats_mu */
    static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&stats_mu);
    gw_hitters_merge(srv, &users, &ips);
    json_t *hh = json_pack("{s:o,s:o,s:I}", "users", hitters_arr(&users, false, 10), "ips",
                           hitters_arr(&ips, true, 10), "counted", (json_int_t)users.total);
    pthread_mutex_unlock(&stats_mu);
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:o,s:o,s:{s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I,s:I},s:I,s:s,s:I}",
        "uptime_ms", (json_int_t)(cm_wall_ms() - srv->started_ms), "requests",
        (json_int_t)atomic_load(&c.requests), "accepted_units",
        (json_int_t)atomic_load(&c.accepted_units), "replies", replies, "rate_limited", rl,
        "spool", "unreleased_bytes", (json_int_t)ss.unreleased_bytes, "appended_records",
        (json_int_t)ss.appended_records, "segments", (json_int_t)ss.segments, "limiter", "keys",
        (json_int_t)ls.keys, "capacity", (json_int_t)ls.capacity, "bytes", (json_int_t)ls.bytes,
        "evicted_idle", (json_int_t)ls.evicted_idle, "evicted_busy", (json_int_t)ls.evicted_busy,
        "rule_sets", (json_int_t)ls.rule_sets, "orders_known", (json_int_t)os.known, "inventory",
        inv_backend_name(srv->inv), "workers", (json_int_t)srv->nworkers);
    json_t *spj = json_object_get(o, "spool");
    if (spj) { /* a roll that had to wait for its segment stalled the appending loop */
        json_object_set_new(spj, "rolls", json_integer((json_int_t)ss.rolls));
        json_object_set_new(spj, "rolls_inline", json_integer((json_int_t)ss.rolls_inline));
        json_object_set_new(spj, "segment_flushes",
                            json_integer((json_int_t)ss.segment_flushes));
        /* out of file descriptors at a sync: put off and tried again, not a disk failure */
        json_object_set_new(spj, "sync_fd_waits", json_integer((json_int_t)ss.sync_fd_waits));
    }
    uint64_t rp, rd, rr;
    gw_releaser_stats(srv, &rp, &rd, &rr);
    json_object_set_new(o, "releases",
                        json_pack("{s:I,s:I,s:I}", "pending", (json_int_t)rp, "done",
                                  (json_int_t)rd, "retries", (json_int_t)rr));
    json_object_set_new(
        o, "orders",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "known", (json_int_t)os.known,
                  "max_known", (json_int_t)os.max_known, "evicted", (json_int_t)os.evicted,
                  "evicted_queued", (json_int_t)os.evicted_queued, "expired_queries",
                  (json_int_t)os.expired_queries, "reasons_lost", (json_int_t)os.reasons_lost,
                  "unindexed", (json_int_t)os.unindexed, "table_bytes",
                  (json_int_t)os.table_bytes, "bytes_per_order",
                  (json_int_t)(os.table_bytes / (os.capacity ? os.capacity : 1))));
    inv_mem_stats_t ims;
    if (inv_mem_stats(srv->inv, &ims) == 0) /* the memory backend's held-order tables */
        json_object_set_new(
            o, "inventory_memory",
            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "held_orders", (json_int_t)ims.held_orders,
                      "max_held_orders", (json_int_t)ims.max_held_orders, "table_bytes",
                      (json_int_t)ims.table_bytes, "bytes_per_order",
                      (json_int_t)(ims.held_orders ? ims.table_bytes / ims.held_orders : 0),
                      "refused_full", (json_int_t)ims.refused_full, "over_cap_replayed",
                      (json_int_t)ims.over_cap_replayed, "key_fingerprints",
                      (json_int_t)ims.key_fingerprints));
    json_object_set_new(o, "heavy_hitters", hh);
    json_object_set_new(o, "rules", gw_rules_json(srv->limits, true));
    json_object_set_new(o, "latency", latency_obj(&c));
    json_object_set_new(o, "config_version", json_integer((json_int_t)gw_audit_version(srv)));
    json_object_set_new(o, "access_logged", json_integer((json_int_t)c.access_logged));
    json_object_set_new(o, "proxy_client_aborts", json_integer((json_int_t)c.proxy_client_aborts));
    json_object_set_new(o, "proxy_stale_conns", json_integer((json_int_t)c.proxy_stale_conns));
    json_t *sales = json_array();
    inv_sale_foreach(srv->inv, list_one, &(list_ctx_t){srv, sales});
    json_object_set_new(o, "sales", sales);
    gw_kafka_stats(srv, o);
    gw_fleet_stats(srv, o);
    gw_overload_stats(srv, o);
    gw_conn_stats(srv, o);
    gw_fair_stats(srv->fair, o);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(o);
    return s;
}

static void h_stats(gw_admin_call_t *a)
{
    gw_admin_set_big(a, stats_json(a->srv));
}

static void h_config(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    json_t *o = json_object();
    pthread_mutex_lock(&srv->cfg_mu);
    for (const cm_opt_t *opt = srv->conf->opts; opt->key; opt++) {
        char val[4200];
        cm_conf_format(srv->conf, opt, val, sizeof(val));
        json_object_set_new(o, opt->key,
                            json_pack("{s:s,s:s}", "value", val, "source",
                                      cm_src_name(srv->conf->src[opt - srv->conf->opts])));
    }
    pthread_mutex_unlock(&srv->cfg_mu);
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS));
    json_decref(o);
}

static void h_metrics(gw_admin_call_t *a)
{
    size_t len;
    a->big = gw_metrics_text(a->srv, &len);
    a->big_type = "text/plain; version=0.0.4; charset=utf-8";
}

static void h_whoami(gw_admin_call_t *a)
{
    gw_resp_init(a->p, GW_R_OK);
    const gw_admin_token_t *t = NULL;
    for (size_t i = 0; i < a->srv->ntokens; i++)
        if (strcmp(a->srv->tokens[i].name, a->who) == 0)
            t = &a->srv->tokens[i];
    a->p->body_len = (size_t)snprintf(a->p->body, sizeof(a->p->body),
                                      "{\"name\":\"%s\",\"role\":\"%s\"}", a->who,
                                      t && t->role == GW_ROLE_WRITE ? "write" : "read");
}

/*---- the dashboard's history and fleet view (gw_ring.h) ----*/

static void h_history(gw_admin_call_t *a)
{
    uint64_t since = 0;
    if (!gw_admin_query_u64(a, "since", (uint64_t)INT64_MAX, &since))
        return;
    gw_admin_set_big(a, gw_ring_history_json(a->srv, (int64_t)since));
}

static void h_fleet(gw_admin_call_t *a)
{
    gw_admin_set_big(a, gw_ring_fleet_json(a->srv));
}

/*---- health on the admin listener (no token) ----*/

/*
 * The same answers as GET /healthz and /readyz on the public port, from the
 * admin listener's own thread: under a crowd the public port's workers may
 * shut their door (overload.accept_pause) or queue, and a load balancer's
 * probe must not read that as a dead process (docs/ops/runbook.md: probe here).
 */
static void h_healthz(gw_admin_call_t *a)
{
    gw_http_health(a->srv, false, a->p);
}

static void h_readyz(gw_admin_call_t *a)
{
    gw_http_health(a->srv, true, a->p);
}

/*---- the dashboard (static, embedded; holds no data, so no token) ----*/

static void h_dashboard(gw_admin_call_t *a)
{
    for (size_t i = 0; i < gw_nassets; i++)
        if (strcmp(gw_assets[i].name, "index.html") == 0)
            a->asset = &gw_assets[i];
    if (!a->asset)
        gw_resp_error(a->p, GW_R_NOT_FOUND, NULL, "dashboard not built in");
}

static void h_asset(gw_admin_call_t *a)
{
    for (size_t i = 0; i < gw_nassets; i++)
        if (strcmp(gw_assets[i].name, a->arg) == 0)
            a->asset = &gw_assets[i];
    if (!a->asset)
        gw_resp_error(a->p, GW_R_NOT_FOUND, NULL, "no such resource: %s", a->url);
}

/*---- debug and orders ----*/

static void h_broker(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    static const char *const keys[] = {"down", "rtt_ms", NULL};
    if (j && !gw_admin_only_keys(j, keys, p)) { /* unknown fields: 400 naming them, as every route */
        json_decref(j);
        return;
    }
    json_t *d = j ? json_object_get(j, "down") : NULL;
    json_t *rtt = j ? json_object_get(j, "rtt_ms") : NULL;
    if (j && rtt && d) {
        /* one or the other: with both, rtt_ms was dropped and the answer said nothing */
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"down\": true|false} or {\"rtt_ms\": 0..60000}, not both");
    } else if (j && rtt) {
        /* A slow broker: every request answered rtt_ms late. */
        json_int_t ms = json_is_integer(rtt) ? json_integer_value(rtt) : -1;
        int rc = ms < 0 || ms > 60000 ? CM_EINVAL : gw_kafka_broker_set_rtt(a->srv, (int)ms);
        if (rc == CM_EINVAL) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "rtt_ms must be an integer of 0..60000");
        } else if (rc == CM_ENOTFOUND) {
            gw_resp_error(p, GW_R_CONFLICT, NULL, "no embedded broker in this process");
        } else if (rc) {
            gw_resp_error(p, GW_R_INTERNAL, NULL, "%s", cm_strerror(rc));
        } else {
            char buf[64];
            snprintf(buf, sizeof(buf), "{\"broker\":\"up\",\"rtt_ms\":%lld}", (long long)ms);
            gw_admin_resp_json(p, GW_R_OK, buf);
            gw_admin_audit(a, "debug.broker", "embedded", NULL,
                            json_pack("{s:I}", "rtt_ms", (json_int_t)ms));
        }
    } else if (j && !json_is_boolean(d)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"down\": true|false} or {\"rtt_ms\": 0..60000}");
    } else if (j) {
        int rc = gw_kafka_broker_set_down(a->srv, json_is_true(d));
        if (rc == CM_ENOTFOUND) {
            gw_resp_error(p, GW_R_CONFLICT, NULL, "no embedded broker in this process");
        } else if (rc) {
            gw_resp_error(p, GW_R_INTERNAL, NULL, "%s", cm_strerror(rc));
        } else {
            gw_admin_resp_json(p, GW_R_OK, json_is_true(d) ? "{\"broker\":\"down\"}" : "{\"broker\":\"up\"}");
            gw_admin_audit(a, "debug.broker", "embedded", NULL,
                            json_pack("{s:b}", "down", json_is_true(d)));
        }
    }
    json_decref(j);
}

/* Fault injection: steps this process's wall clock (tests; see cm_time.h). */
static void h_clock(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    static const char *const keys[] = {"wall_offset_ms", NULL};
    if (j && !gw_admin_only_keys(j, keys, p)) { /* unknown fields: 400 naming them, as every route */
        json_decref(j);
        return;
    }
    json_t *d = j ? json_object_get(j, "wall_offset_ms") : NULL;
    /* A century either way: far enough for any test, and cm_wall_ms cannot overflow. */
    const json_int_t lim = 100ll * 366 * 24 * 3600 * 1000;
    if (j && (!json_is_integer(d) || json_integer_value(d) > lim || json_integer_value(d) < -lim)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"wall_offset_ms\": <integer within +-100 years>}");
    } else if (j) {
        cm_time_set_wall_offset((int64_t)json_integer_value(d));
        char buf[96];
        snprintf(buf, sizeof(buf), "{\"wall_offset_ms\":%lld}",
                 (long long)cm_time_wall_offset());
        gw_admin_resp_json(p, GW_R_OK, buf);
        gw_admin_audit(a, "debug.clock", "wall", NULL,
                        json_pack("{s:I}", "wall_offset_ms", (json_int_t)cm_time_wall_offset()));
    }
    json_decref(j);
}

/* PUT /admin/v1/debug/overload {"user_cut": -1..128}: pins the buy path's user cut (gw_ol.h). */
static void h_debug_overload(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    static const char *const keys[] = {"user_cut", NULL};
    if (!j || !gw_admin_only_keys(j, keys, p)) {
        json_decref(j);
        return;
    }
    json_t *c = json_object_get(j, "user_cut");
    if (!json_is_integer(c) || json_integer_value(c) < -1 ||
        json_integer_value(c) > GW_UPRIO_LEVELS) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"user_cut\": -1 (DAGOR decides) or 0..%d (buys of a user "
                      "priority below it pass)}",
                      GW_UPRIO_LEVELS);
    } else {
        gw_ol_debug_user_cut(a->srv, (int)json_integer_value(c));
        char buf[48];
        snprintf(buf, sizeof(buf), "{\"user_cut\":%d}", gw_ol_debug_user_cut_get(a->srv));
        gw_admin_resp_json(p, GW_R_OK, buf);
        gw_admin_audit(a, "debug.overload", "user_cut", NULL,
                        json_pack("{s:i}", "user_cut", gw_ol_debug_user_cut_get(a->srv)));
    }
    json_decref(j);
}

static void h_order_cancel(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    gw_resp_t *p = a->p;
    const char *id = a->arg;
    if (strlen(id) > INV_ORDER_ID_MAX) {
        gw_resp_error(p, GW_R_NOT_FOUND, NULL, "no such resource: %s", a->url);
        return;
    }
    char reason[128] = "cancelled by operator";
    if (a->body_len || a->body_too_large) { /* too large: 413 (a body, though none kept) */
        json_t *j = gw_admin_parse_object(a, p);
        if (!j)
            return;
        static const char *const keys[] = {"reason", NULL};
        if (!gw_admin_only_keys(j, keys, p)) {
            json_decref(j);
            return;
        }
        json_t *r = json_object_get(j, "reason");
        if (r && !json_is_string(r)) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "reason must be a string");
            json_decref(j);
            return;
        }
        /* Cut before a character, never inside one: a cut UTF-8 sequence
         * made the cancel event invalid (a 503 for a long reason). */
        if (r)
            oq_reason_copy(reason, sizeof(reason), json_string_value(r));
        json_decref(j);
    }
    oq_order_t ord;
    if (!gw_orders_get(srv->orders, id, &ord)) {
        gw_resp_error(p, GW_R_UNKNOWN_ORDER, NULL, "no order %s", id);
        return;
    }
    if (!oq_status_releases(ord.status)) {
        /* the status table keeps no user ids. Ask the inventory: it knows
         * the person whose mark the order holds (inv.h), not the account;
         * if it cannot answer now, "" releases by order id. */
        char who[INV_USER_ID_MAX + 1];
        ord.user_id[0] = '\0';
        oq_order_person_set(
            &ord, inv_order_user(srv->inv, ord.sale_id, ord.order_id, who) == 0 ? who : NULL);
    }
    int rc = gw_server_cancel(srv, &ord, reason);
    if (rc < 0) {
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL, "cancel failed: %s", cm_strerror(rc));
        return;
    }
    const char *before = oq_status_name(ord.status);
    gw_orders_get(srv->orders, id, &ord);
    gw_resp_init(p, rc == 0 ? GW_R_ACCEPTED : GW_R_OK);
    p->body_len = (size_t)snprintf(p->body, sizeof(p->body),
                                   "{\"order_id\":\"%s\",\"status\":\"%s\",\"cancel\":\"%s\"}", id,
                                   oq_status_name(ord.status),
                                   rc == 0 ? "requested" : "already_final");
    if (rc == 0)
        gw_admin_audit(a, "order.cancel", id, json_pack("{s:s}", "status", before),
                        json_pack("{s:s,s:s}", "cancel", "requested", "reason", reason));
}

/*---- degradation level ----*/

static void degrade_json(gw_server_t *srv, gw_resp_t *p)
{
    gw_ol_snapshot_t *s = cm_xmalloc(sizeof(*s));
    gw_overload_snapshot(srv, s);
    gw_resp_init(p, GW_R_OK);
    size_t n = (size_t)snprintf(p->body, sizeof(p->body),
                                "{\"level\":%d,\"level_name\":\"%s\",\"mode\":\"%s\","
                                "\"reason\":\"",
                                s->level, gw_level_name((gw_level_t)s->level),
                                s->pinned ? "pinned" : "auto");
    gw_json_escape(p->body, sizeof(p->body) - 8, &n, s->reason);
    n += (size_t)snprintf(p->body + n, sizeof(p->body) - n, "\"}");
    p->body_len = n;
    free(s);
}

static void h_degrade_get(gw_admin_call_t *a)
{
    degrade_json(a->srv, a->p);
}

/* PUT /admin/v1/degrade {"level":"auto"|0|1|2|3}: bad input changes nothing. */
static void h_degrade_put(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    if (!j)
        return;
    static const char *const keys[] = {"level", NULL};
    if (!gw_admin_only_keys(j, keys, p)) {
        json_decref(j);
        return;
    }
    json_t *v = json_object_get(j, "level");
    int level;
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0) {
        level = -1;
    } else if (json_is_integer(v) && json_integer_value(v) >= 0 &&
               json_integer_value(v) < GW_LEVEL_COUNT) {
        level = (int)json_integer_value(v);
    } else {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "level must be \"auto\" or an integer from 0 to 3");
        json_decref(j);
        return;
    }
    json_decref(j);
    int before = (int)gw_ol_level(a->srv);
    gw_ol_pin(a->srv, level);
    degrade_json(a->srv, p);
    gw_admin_audit(a, "degrade.set", "level", json_pack("{s:i}", "level", before),
                    level < 0 ? json_pack("{s:s}", "level", "auto")
                              : json_pack("{s:i}", "level", level));
}

/*---- proxied routes: their latency targets, live ----*/

static json_t *route_obj(gw_server_t *srv, size_t i)
{
    size_t n = 0;
    const gw_proxy_route_t *r = gw_ol_upstreams(srv, &n) + i;
    uint32_t t = gw_ol_upstream_target_ms(srv, i);
    return json_pack("{s:s,s:s,s:i,s:s,s:o,s:o}", "prefix", r->prefix, "upstream", r->upstream,
                     "timeout_ms", (int)r->timeout_ms, "criticality",
                     gw_crit_name((gw_crit_t)r->crit), "latency_target_ms",
                     t ? json_integer(t) : json_null(), "latency_target_ms_configured",
                     r->latency_target_ms ? json_integer(r->latency_target_ms) : json_null());
}

static void h_routes_get(gw_admin_call_t *a)
{
    size_t n = 0;
    gw_ol_upstreams(a->srv, &n);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, route_obj(a->srv, i));
    json_t *o = json_pack("{s:o}", "routes", list);
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

/*
 * PATCH /admin/v1/routes {"prefix":"/v1/recs/","latency_target_ms":20|null}:
 * a route's latency target, in force at each worker's next tick, until a
 * restart (the configured one comes back). This gateway only, as the
 * degradation pin. Bad input changes nothing.
 */
static void h_routes_patch(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    if (!j)
        return;
    static const char *const keys[] = {"prefix", "latency_target_ms", NULL};
    if (!gw_admin_only_keys(j, keys, p)) {
        json_decref(j);
        return;
    }
    const char *prefix = json_string_value(json_object_get(j, "prefix"));
    json_t *t = json_object_get(j, "latency_target_ms");
    size_t n = 0, at = 0;
    const gw_proxy_route_t *routes = gw_ol_upstreams(a->srv, &n);
    while (prefix && at < n && strcmp(routes[at].prefix, prefix) != 0)
        at++;
    if (!prefix) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "prefix must be the prefix of a proxied route");
    } else if (at == n) {
        gw_resp_error(p, GW_R_NOT_FOUND, NULL, "no proxied route has the prefix %.128s", prefix);
    } else if (!t || !(json_is_null(t) || (json_is_integer(t) && json_integer_value(t) >= 1 &&
                                           json_integer_value(t) <= routes[at].timeout_ms))) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "latency_target_ms must be null (none) or an integer from 1 to the "
                      "route's timeout_ms (%u)",
                      (unsigned)routes[at].timeout_ms);
    } else {
        uint32_t want = json_is_null(t) ? 0 : (uint32_t)json_integer_value(t);
        uint32_t before = gw_ol_upstream_set_target(a->srv, at, want);
        json_t *o = route_obj(a->srv, at);
        gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
        json_decref(o);
        gw_admin_audit(a, "route.target", prefix,
                        json_pack("{s:o}", "latency_target_ms",
                                  before ? json_integer(before) : json_null()),
                        json_pack("{s:o}", "latency_target_ms",
                                  want ? json_integer(want) : json_null()));
        cm_log_info("admin", "route latency target changed", "prefix=%s before_ms=%u ms=%u",
                    prefix, (unsigned)before, (unsigned)want);
    }
    json_decref(j);
}

/* GET /admin/v1/sales/{id}/registrations?cursor=C&limit=N: the registered persons (gw_reg.h). */
static void h_sale_registrations(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    uint64_t cursor = 0, limit = 100;
    if (!gw_admin_query_u64(a, "cursor", UINT64_MAX / 2, &cursor) ||
        !gw_admin_query_u64(a, "limit", GW_REG_PAGE_MAX, &limit))
        return;
    if (limit == 0) {
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL, "limit must be an integer from 1 to %d",
                      GW_REG_PAGE_MAX);
        return;
    }
    int rc = 0;
    char why[256] = "";
    json_t *o = gw_reg_export_json(a->srv, a->arg, cursor, limit, &rc, why, sizeof(why));
    if (!o) {
        if (rc == CM_ENOTFOUND)
            gw_resp_error(a->p, GW_R_UNKNOWN_SALE, NULL, "%s", why);
        else
            gw_resp_error(a->p, GW_R_UNAVAILABLE, NULL, "%s", why);
        return;
    }
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

/* GET /admin/v1/sales/{id}/room/persons?cursor=C&limit=N: the sealed pre-queue by rank
 * (gw_fair.h). */
static void h_sale_room_persons(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    uint64_t cursor = 0, limit = 100;
    if (!gw_admin_query_u64(a, "cursor", UINT64_MAX / 2, &cursor) ||
        !gw_admin_query_u64(a, "limit", GW_WR_PAGE_MAX, &limit))
        return;
    if (limit == 0) {
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL, "limit must be an integer from 1 to %d",
                      GW_WR_PAGE_MAX);
        return;
    }
    int rc = 0;
    char why[256] = "";
    json_t *o = gw_fair_room_persons_json(a->srv->fair, a->arg, cursor, limit, &rc, why,
                                          sizeof(why));
    if (!o) {
        gw_resp_error(a->p,
                      rc == CM_ENOTFOUND   ? GW_R_UNKNOWN_SALE
                      : rc == CM_ECONFLICT ? GW_R_CONFLICT
                                           : GW_R_UNAVAILABLE,
                      rc == CM_ECONFLICT ? "\"reason\":\"not_sealed\"" : NULL, "%s", why);
        return;
    }
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

/*---- the route table and the dispatcher ----*/

/* method, path ({name} = one segment), role needed, handler */
static const gw_admin_route_t admin_routes[] = {
    GW_ADMIN_ROUTE("GET", "/admin/", NONE, h_dashboard),
    GW_ADMIN_ROUTE("GET", "/healthz", NONE, h_healthz),
    GW_ADMIN_ROUTE("GET", "/readyz", NONE, h_readyz),
    GW_ADMIN_ROUTE("GET", "/admin/assets/{file}", NONE, h_asset),
    GW_ADMIN_ROUTE("GET", "/metrics", READ, h_metrics),
    GW_ADMIN_ROUTE("GET", "/admin/v1/whoami", READ, h_whoami),
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales", READ, h_sales_list),
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales/{sale_id}", READ, h_sale_get),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/sales/{sale_id}", WRITE, h_sale_put),
    GW_ADMIN_ROUTE("DELETE", "/admin/v1/sales/{sale_id}", WRITE, h_sale_delete),
    GW_ADMIN_ROUTE("POST", "/admin/v1/sales/{sale_id}/restock", WRITE, h_sale_restock),
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales/{sale_id}/draw", READ, h_sale_draw),
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales/{sale_id}/registrations", READ, h_sale_registrations),
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales/{sale_id}/room/persons", READ, h_sale_room_persons),
    GW_ADMIN_ROUTE("GET", "/admin/v1/limits", READ, h_limits_get),
    GW_ADMIN_ROUTE("PATCH", "/admin/v1/limits", WRITE, h_limits_patch),
    GW_ADMIN_ROUTE("GET", "/admin/v1/rules", READ, h_rules_list),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/rules/{sale_id}", WRITE, h_rule_put),
    GW_ADMIN_ROUTE("DELETE", "/admin/v1/rules/{sale_id}", WRITE, h_rule_delete),
    GW_ADMIN_ROUTE("GET", "/admin/v1/stats", READ, h_stats),
    GW_ADMIN_ROUTE("GET", "/admin/v1/history", READ, h_history),
    GW_ADMIN_ROUTE("GET", "/admin/v1/fleet", READ, h_fleet),
    GW_ADMIN_ROUTE("GET", "/admin/v1/degrade", READ, h_degrade_get),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/degrade", WRITE, h_degrade_put),
    GW_ADMIN_ROUTE("GET", "/admin/v1/routes", READ, h_routes_get),
    GW_ADMIN_ROUTE("PATCH", "/admin/v1/routes", WRITE, h_routes_patch),
    GW_ADMIN_ROUTE("GET", "/admin/v1/config", READ, h_config),
    GW_ADMIN_ROUTE("POST", "/admin/v1/config/rollback", WRITE, h_rollback),
    GW_ADMIN_ROUTE("GET", "/admin/v1/audit", READ, h_audit),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/broker", WRITE, h_broker),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/clock", WRITE, h_clock),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/overload", WRITE, h_debug_overload),
    GW_ADMIN_ROUTE("POST", "/admin/v1/orders/{order_id}/cancel", WRITE, h_order_cancel),
};

/* Matches url against a pattern; copies the {param} segment (if any) to arg. */
static bool path_match(const char *pat, const char *url, char *arg, size_t cap)
{
    while (*pat && *url) {
        if (*pat == '{') {
            const char *pe = strchr(pat, '}');
            size_t n = strcspn(url, "/");
            if (!pe || n == 0 || n >= cap)
                return false; /* empty, or far too long for any id */
            memcpy(arg, url, n);
            arg[n] = '\0';
            pat = pe + 1;
            url += n;
            continue;
        }
        if (*pat != *url)
            return false;
        pat++;
        url++;
    }
    return *pat == '\0' && *url == '\0';
}

void gw__admin_match(const char *method, const char *url, bool debug_routes,
                     gw_admin_match_t *m)
{
    memset(m, 0, sizeof(*m));
    m->route = -1;
    bool open_path = false;
    for (size_t i = 0; i < CM_ARRAY_LEN(admin_routes); i++) {
        char arg[sizeof(m->arg)];
        /* fault injection only on a gateway started with it (--enable-debug-routes) */
        if (!debug_routes && strncmp(admin_routes[i].path, "/admin/v1/debug/", 16) == 0)
            continue;
        if (!path_match(admin_routes[i].path, url, arg, sizeof(arg)))
            continue;
        m->any = true;
        open_path |= admin_routes[i].role == GW_ROLE_NONE;
        size_t n = strlen(m->allow);
        snprintf(m->allow + n, sizeof(m->allow) - n, "%s%s", n ? ", " : "",
                 admin_routes[i].method);
        if (m->route < 0 && strcmp(method, admin_routes[i].method) == 0) {
            m->route = (int)i;
            m->role = admin_routes[i].role;
            memcpy(m->arg, arg, sizeof(arg));
        }
    }
    m->needs_token = !(m->route >= 0 ? m->role == GW_ROLE_NONE : open_path);
}

gw_reply_t gw__admin_verdict(const gw_admin_match_t *m, gw_role_t token_role)
{
    if (m->needs_token && token_role == GW_ROLE_NONE)
        return GW_R_UNAUTHORIZED;
    if (!m->any)
        return GW_R_NOT_FOUND;
    if (m->route < 0)
        return GW_R_METHOD;
    if (m->role == GW_ROLE_WRITE && token_role != GW_ROLE_WRITE)
        return GW_R_FORBIDDEN;
    return GW_R_OK;
}

static enum MHD_Result send_call(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    /* a body of our own (set_big) or an asset: 200, or 201 for a creation,
     * counted under its own code */
    bool ok = a->p->reply == GW_R_OK || a->p->reply == GW_R_CREATED;
    if (a->big_type && !a->big && ok) {
        /* json_dumps (or the metrics buffer) failed to allocate: a 500 from
         * the reply table rather than an empty 200 */
        gw_resp_error(a->p, GW_R_INTERNAL, NULL, "cannot build the response (out of memory)");
    }
    if (a->asset || a->big) {
        struct MHD_Response *mr =
            a->asset ? MHD_create_response_from_buffer(a->asset->len, (void *)a->asset->data,
                                                       MHD_RESPMEM_PERSISTENT)
                     : MHD_create_response_from_buffer(strlen(a->big), a->big,
                                                       MHD_RESPMEM_MUST_FREE);
        if (!mr) {
            free(a->big);
            return MHD_NO;
        }
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                                a->asset ? a->asset->type : a->big_type);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        if (a->asset)
            MHD_add_response_header(mr, "Content-Security-Policy",
                                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:");
        gw_reply_t k = a->p->reply == GW_R_CREATED ? GW_R_CREATED : GW_R_OK;
        enum MHD_Result ret = MHD_queue_response(a->conn, (unsigned)gw_reply_status(k), mr);
        MHD_destroy_response(mr);
        atomic_fetch_add_explicit(&srv->admin_ctr.replies[k], 1, memory_order_relaxed);
        return ret;
    }
    return gw_resp_send(a->conn, &srv->admin_ctr, a->p);
}

/* The call's hooks (gw_admin_route.h): the connection's header or query
 * argument, and the audit log. */
static const char *conn_lookup(void *conn, bool query, const char *name)
{
    return MHD_lookup_connection_value(conn, query ? MHD_GET_ARGUMENT_KIND : MHD_HEADER_KIND,
                                       name);
}

static uint64_t audit_hook(gw_server_t *srv, const char *who, const char *what,
                           const char *target, void *old_json, void *new_json)
{
    return gw_audit_record(srv, who, what, target, old_json, new_json);
}

static enum MHD_Result admin_cb(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *data,
                                size_t *data_size, void **req_cls)
{
    (void)version;
    gw_server_t *srv = cls;
    admin_req_t *ar = *req_cls;
    if (!ar) {
        *req_cls = cm_xcalloc(1, sizeof(*ar));
        return MHD_YES;
    }
    if (*data_size) {
        if (ar->len + *data_size > GW_ADMIN_BODY_MAX) {
            ar->too_large = true;
        } else if (!ar->too_large) {
            ar->body = cm_xrealloc(ar->body, ar->len + *data_size + 1);
            memcpy(ar->body + ar->len, data, *data_size);
            ar->len += *data_size;
            ar->body[ar->len] = '\0';
        }
        *data_size = 0;
        return MHD_YES;
    }
    gw_resp_t resp;
    gw_resp_init(&resp, GW_R_OK);
    gw_admin_call_t a = {.srv = srv,
                         .method = method,
                         .url = url,
                         .body = ar->body,
                         .body_len = ar->len,
                         .body_too_large = ar->too_large,
                         .p = &resp,
                         .conn = c,
                         .lookup = conn_lookup,
                         .audit = audit_hook};

    if (admin_tls.ca && !tls_client_verified(c)) {
        gw_resp_error(&resp, GW_R_FORBIDDEN, NULL,
                      "this admin listener needs a client certificate signed by "
                      "server.admin_tls_client_ca");
        return gw_resp_send(c, &srv->admin_ctr, &resp);
    }
    /* Which routes have this path, and which of them this method. */
    gw_admin_match_t m;
    gw__admin_match(method, url, srv->cfg->admin_debug_routes, &m);
    const gw_admin_route_t *hit = m.route >= 0 ? &admin_routes[m.route] : NULL;
    const char *allow = m.allow;
    memcpy(a.arg, m.arg, sizeof(a.arg));
    const gw_admin_token_t *tok = NULL;
    if (m.needs_token) {
        uint8_t addr[16];
        bool have_addr = client_addr16(c, addr);
        int64_t blocked = have_addr ? auth_blocked_ms(addr) : 0;
        if (blocked) {
            gw_resp_error(&resp, GW_R_RATE_LIMITED, NULL,
                          "too many wrong admin tokens from this address: try again later");
            gw_resp_retry_after(&resp, (unsigned long long)((blocked + 999) / 1000));
            return gw_resp_send(c, &srv->admin_ctr, &resp);
        }
        tok = authenticate(srv, c);
        if (have_addr &&
            (tok || MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
            auth_note(addr, tok != NULL);
        if (!tok) {
            gw_resp_error(&resp, GW_R_UNAUTHORIZED, NULL,
                          "missing or wrong bearer token (Authorization: Bearer <token>)");
            gw_resp_header(&resp, "WWW-Authenticate", "Bearer realm=\"flashgate-admin\"");
            return gw_resp_send(c, &srv->admin_ctr, &resp);
        }
        a.who = tok->name;
    }
    switch (gw__admin_verdict(&m, tok ? tok->role : GW_ROLE_NONE)) {
    case GW_R_NOT_FOUND:
        gw_resp_error(&resp, GW_R_NOT_FOUND, NULL, "no such resource: %s", url);
        return gw_resp_send(c, &srv->admin_ctr, &resp);
    case GW_R_METHOD:
        gw_resp_error(&resp, GW_R_METHOD, NULL, "method %s is not allowed here; use %s", method,
                      allow);
        gw_resp_header(&resp, "Allow", "%s", allow);
        return gw_resp_send(c, &srv->admin_ctr, &resp);
    case GW_R_FORBIDDEN:
        gw_resp_error(&resp, GW_R_FORBIDDEN, NULL,
                      "token %s has the read role; %s %s needs a write token", tok->name, method,
                      url);
        return gw_resp_send(c, &srv->admin_ctr, &resp);
    default:
        break;
    }
    if (!hit) { /* GW_R_OK has a route (gw__admin_verdict: METHOD otherwise) */
        gw_resp_error(&resp, GW_R_NOT_FOUND, NULL, "no such resource: %s", url);
        return gw_resp_send(c, &srv->admin_ctr, &resp);
    }
    /* Changes are serialised: validate, apply, audit as one step. */
    bool lock = hit->role == GW_ROLE_WRITE;
    if (lock)
        pthread_mutex_lock(&admin_lock);
    hit->fn(&a);
    if (lock)
        pthread_mutex_unlock(&admin_lock);
    return send_call(&a);
}

static void admin_done(void *cls, struct MHD_Connection *c, void **req_cls,
                       enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    admin_req_t *ar = *req_cls;
    if (ar) {
        free(ar->body);
        free(ar);
        *req_cls = NULL;
    }
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* An address plain HTTP may listen on with a warning: private (RFC 1918,
 * RFC 6598 shared, RFC 4193 unique local, link-local) or the wildcard (a
 * container's: its interfaces are the pod's or the bridge's). */
static bool is_private_or_any(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        return a == 0 || (a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) ||
               (a >> 16) == (192u << 8 | 168) || (a >> 22) == (100u << 2 | 1) ||
               (a >> 16) == (169u << 8 | 254);
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_UNSPECIFIED(a) || (a->s6_addr[0] & 0xfe) == 0xfc ||
               IN6_IS_ADDR_LINKLOCAL(a);
    }
    return false;
}

/*
 * server.admin_cgroup. Under a CPU quota every thread of the process shares
 * it, and a gateway that uses all of it makes its own admin listener wait
 * whole quota periods for a turn (docs/runbook.md, "CPU quotas"). A thread
 * inherits its creator's cgroup, and libmicrohttpd starts the listener's thread
 * from the thread that calls MHD_start_daemon (the per-connection threads come
 * from the listener's): so a short-lived thread joins the cgroup first, by its
 * own id, and starts the daemon. No other thread of the process moves.
 */
typedef struct admin_boot {
    const char *cgroup;
    const struct sockaddr *sa;
    gw_server_t *srv;
    struct MHD_Daemon *daemon;
    int err;        /* MHD_start_daemon's errno (thread-local: carried back) */
    int rc;         /* joining the cgroup failed: CM_E* and what[] */
    char what[768];
} admin_boot_t;

static int join_cgroup(const char *dir, char *what, size_t len)
{
    /* cgroup v1 moves one thread through `tasks`; v2 through `cgroup.threads`
     * of a threaded group. */
    static const char *const files[] = {"tasks", "cgroup.threads"};
    char path[600], tid[24];
    int n = snprintf(tid, sizeof(tid), "%ld\n", (long)syscall(SYS_gettid));
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
            continue;
        ssize_t w = fd < 0 ? -1 : write(fd, tid, (size_t)n);
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (w == n)
            return 0;
        snprintf(what, len, "server.admin_cgroup: cannot move the admin listener's thread into %s: %s",
                 path, strerror(e));
        return CM_EIO;
    }
    snprintf(what, len,
             "server.admin_cgroup: %s has neither tasks (cgroup v1) nor cgroup.threads (v2)", dir);
    return CM_EINVAL;
}

static struct MHD_Daemon *admin_daemon(gw_server_t *srv, const struct sockaddr *sa)
{
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, admin_tls.cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, admin_tls.key},
        {admin_tls.ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, admin_tls.ca},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem *extra = admin_tls.cert ? tls : tls + 3;
    return mhd_start(sa,
                     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                         (admin_tls.cert ? MHD_USE_TLS : 0),
                     admin_cb, srv, 64, 30, admin_done, extra);
}

static void *admin_boot(void *arg)
{
    admin_boot_t *b = arg;
    b->rc = join_cgroup(b->cgroup, b->what, sizeof(b->what));
    if (b->rc == 0) {
        errno = 0;
        b->daemon = admin_daemon(b->srv, b->sa);
        b->err = errno;
    }
    return NULL;
}

/* The admin daemon, its threads in server.admin_cgroup when one is set. */
static int admin_listen(gw_server_t *srv, const struct sockaddr *sa, char *errbuf, size_t errlen)
{
    const char *cg = srv->cfg->admin_cgroup;
    if (!cg[0]) {
        srv->admin = admin_daemon(srv, sa);
        return srv->admin ? 0 : (errno ? errno : EADDRINUSE);
    }
    admin_boot_t b = {.cgroup = cg, .sa = sa, .srv = srv};
    pthread_t t;
    int e = pthread_create(&t, NULL, admin_boot, &b);
    if (e)
        return e;
    pthread_join(t, NULL);
    if (b.rc) {
        snprintf(errbuf, errlen, "%s", b.what);
        return -1;
    }
    srv->admin = b.daemon;
    return srv->admin ? 0 : (b.err ? b.err : EADDRINUSE);
}

/* The tokens, the listener's address and its TLS files, as a start needs
 * them; ss is the address. dry (--check-config): an absent
 * <data-dir>/admin.token is not generated, nothing is logged. */
static int admin_prepare(gw_server_t *srv, bool dry, struct sockaddr_storage *ss, char *errbuf,
                         size_t errlen)
{
    /* The token main sealed away from argv and the environment, else the
     * token file, else (an embedded server that never sealed) the config's own,
     * else <data-dir>/admin.token, generated at first start. */
    size_t sealed_len;
    const char *sealed = gw_config_admin_token(&sealed_len);
    bool chosen = true;
    int rc = 0;
    if (sealed)
        add_token(srv, "admin", GW_ROLE_WRITE, sealed, sealed_len);
    else if (srv->cfg->admin_token_file[0])
        rc = load_token_file(srv, dry, errbuf, errlen);
    else if (srv->cfg->admin_token[0]) {
        /* gw_config_check refuses it at load; a struct filled another way too */
        size_t n = strlen(srv->cfg->admin_token);
        if (n < GW_ADMIN_TOKEN_MIN) {
            snprintf(errbuf, errlen, "server.admin_token must be at least %d characters",
                     GW_ADMIN_TOKEN_MIN);
            return CM_EINVAL;
        }
        add_token(srv, "admin", GW_ROLE_WRITE, srv->cfg->admin_token, n);
    } else {
        chosen = false;
        rc = dry ? 0 : load_or_make_token(srv, errbuf, errlen);
    }
    if (rc)
        return rc;
    rc = load_tokens(srv, dry, errbuf, errlen);
    if (rc)
        return rc;
    rc = gw_addr_parse_listen(srv->cfg->admin_listen, ss, errbuf, errlen);
    if (rc)
        return rc;
    /* A generated token is fine on loopback (whoever reads the data dir is the
     * operator); anywhere else an operator must have chosen the tokens. */
    size_t generated = chosen ? 0 : 1;
    const struct sockaddr *sa = (const struct sockaddr *)ss;
    if (!is_loopback(sa) && srv->ntokens <= generated) {
        snprintf(errbuf, errlen,
                 "admin listener %s is not on loopback: set server.admin_token_file "
                 "(--admin-token-file), server.admin_token or server.admin_tokens_file first",
                 srv->cfg->admin_listen);
        return CM_EINVAL;
    }
    if ((rc = tls_load(srv->cfg, errbuf, errlen)))
        return rc;
    /* Bearer tokens in clear text: never on a public address; on a private
     * one (or every address, a container's wildcard), said loudly. */
    if (!is_loopback(sa) && !admin_tls.cert) {
        if (!is_private_or_any(sa)) {
            snprintf(errbuf, errlen,
                     "admin listener %s is a public address and speaks plain HTTP: set "
                     "server.admin_tls_cert and server.admin_tls_key (or listen on loopback or "
                     "a private address)",
                     srv->cfg->admin_listen);
            tls_free();
            return CM_EINVAL;
        }
        if (!dry)
            cm_log_warn("admin",
                        "ADMIN API IN PLAIN HTTP OFF LOOPBACK: bearer tokens cross the network in "
                        "clear text; set server.admin_tls_cert and server.admin_tls_key",
                        "admin_listen=%s", srv->cfg->admin_listen);
    }
    return 0;
}

int gw_admin_check(const gw_config_t *cfg, char *errbuf, size_t errlen)
{
    gw_server_t *srv = cm_xcalloc(1, sizeof(*srv));
    srv->cfg = (gw_config_t *)cfg;
    struct sockaddr_storage ss;
    int rc = admin_prepare(srv, true, &ss, errbuf, errlen);
    tls_free();
    gw_secret_free(srv->tokens, srv->ntokens * sizeof(*srv->tokens));
    free(srv);
    return rc;
}

int gw_admin_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    struct sockaddr_storage ss;
    int rc = admin_prepare(srv, false, &ss, errbuf, errlen);
    if (rc)
        return rc;
    if ((rc = gw_audit_open(srv, errbuf, errlen)))
        return rc;
    if (admin_tls.cert)
        cm_log_info("admin", "admin listener serves HTTPS", "cert=%s client_ca=%s",
                    srv->cfg->admin_tls_cert,
                    srv->cfg->admin_tls_client_ca[0] ? srv->cfg->admin_tls_client_ca : "none");
    int e = admin_listen(srv, (struct sockaddr *)&ss, errbuf, errlen);
    if (e < 0)
        return CM_EINVAL; /* errbuf says why: the cgroup */
    if (e) {
        snprintf(errbuf, errlen, "cannot listen on %s (admin): %s", srv->cfg->admin_listen,
                 strerror(e));
        return CM_EIO;
    }
    return 0;
}

void gw_admin_stop(gw_server_t *srv)
{
    if (srv->admin) {
        MHD_stop_daemon(srv->admin);
        srv->admin = NULL;
    }
    gw_audit_close(srv);
    tls_free();
    gw_secret_free(srv->tokens, srv->ntokens * sizeof(*srv->tokens));
    srv->tokens = NULL;
    srv->ntokens = 0;
}
