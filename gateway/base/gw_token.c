/*
 * Order status tokens. Order ids are time-ordered with a 12-bit sequence, so
 * they can be enumerated; GET /v1/orders/{id} therefore needs the token the
 * 202 gave: HMAC-SHA256(key, "order:" + id), its first 16 bytes in base64url
 * (22 characters). The 32-byte key lives in <data-dir>/status.key (64 hex
 * digits, mode 0600; created at first start). With a Redis inventory the
 * fleet shares one key through Redis ({flashgate:fleet}:status_key, set once
 * with SET NX by whichever gateway starts first), so any gateway answers for
 * any order; the local file then holds the fleet's key.
 *
 * The key sits in its own page, kept out of core dumps (MADV_DONTDUMP), locked
 * in memory when the process may (mlock), and wiped (explicit_bzero) when freed.
 * SHA-256 and the constant-time compare are OpenSSL's libcrypto.
 *
 * Every 202 carries a token, so the MAC is on the buy path: OpenSSL 3's HMAC()
 * fetches the digest, allocates and frees its contexts and hashes the key's two
 * pad blocks again on every call, 3.3 us here (a fifth of an accepted order's
 * CPU, bench/README.md). The pad blocks depend only on the key: their SHA-256
 * states are computed once at load and kept next to the key in the secret page
 * (they are as secret as the key), and a MAC copies them and hashes the message
 * and the inner digest: 0.22 us, the same bytes as HMAC(). That takes the
 * low-level SHA256_* calls (deprecated in OpenSSL 3): the EVP contexts live
 * on OpenSSL's heap, where a core dump would carry them.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_*: see above */
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_url.h"
#include "gateway/base/gw_base.h"
#include "inventory/inv_fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_LEN 32
#define REDIS_KEY INV_FLEET_KEY_STATUS
#define STATUS_POWER "can read every order's status"
#define HMAC_BLOCK 64 /* SHA-256's block: the key is zero-padded to it (RFC 2104) */

/* The key and the SHA-256 states after its inner and outer pad blocks, in one secret page. */
struct gw_status_key {
    uint8_t key[KEY_LEN];
    SHA256_CTX inner; /* after (key ^ ipad) */
    SHA256_CTX outer; /* after (key ^ opad) */
};

void *gw_secret_alloc(size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t sz = (len + page - 1) / page * page;
    void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, sz, MADV_DONTDUMP);
    if (mlock(p, sz) != 0)
        cm_log_debug("gw", "mlock of a secret page failed (kept out of core dumps only)",
                     "errno=%d", errno);
    return p;
}

void gw_secret_free(void *p, size_t len)
{
    if (!p)
        return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t sz = (len + page - 1) / page * page;
    explicit_bzero(p, sz);
    munlock(p, sz);
    munmap(p, sz);
}

static int hex_decode(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + (size_t)k];
            /* either case: the file's rule is "64 hex digits", and A-F are */
            unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                         : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                         : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                                : 16;
            if (d == 16)
                return CM_EINVAL;
            v = v << 4 | d;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Whether the n bytes read from a key file are the key as key_write writes it:
 * 64 hex digits and at most a newline. Anything more (a second key pasted
 * after the first, a longer secret, a CRLF file's CR) is not what the file
 * should hold, and reading its first 64 digits as the key would hide that. */
static bool key_text_ok(const char *buf, ssize_t n)
{
    return n == 2 * KEY_LEN || (n == 2 * KEY_LEN + 1 && buf[2 * KEY_LEN] == '\n');
}

int gw_key_file_read(const char *path, uint8_t *key, const char *power, char *errbuf,
                     size_t errlen)
{
    /* O_NONBLOCK: a FIFO at the path would block the open, and the start, until
     * someone wrote to it; it is refused below as not a regular file. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            return CM_ENOTFOUND;
        if (errno == ELOOP)
            snprintf(errbuf, errlen,
                     "%s is a symbolic link: the key is read only from a regular file of its "
                     "own (whoever can change the link chooses the key)",
                     path);
        else
            snprintf(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
        return CM_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(errbuf, errlen, "%s is not a regular file: it must hold the key (64 hex digits)",
                 path);
        close(fd);
        return CM_EINVAL;
    }
    char buf[2 * KEY_LEN + 3]; /* one byte past a key and its newline: junk shows */
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    int rc = 0;
    if ((st.st_mode & 077) != 0) {
        snprintf(errbuf, errlen,
                 "%s is readable by others (mode %03o): anyone who reads it %s; chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777), power);
        rc = CM_EINVAL;
    } else if (!key_text_ok(buf, n) || hex_decode(buf, 2 * KEY_LEN, key) != 0) {
        snprintf(errbuf, errlen,
                 "%s does not hold a key: it must be 64 hex digits and at most a newline "
                 "(%zd bytes read)",
                 path, n);
        rc = CM_EINVAL;
    }
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

static int key_write(const char *path, const uint8_t *key, char *errbuf, size_t errlen)
{
    char tmp[700], line[2 * KEY_LEN + 2];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return CM_EIO;
    }
    hex_encode(key, KEY_LEN, line);
    line[2 * KEY_LEN] = '\n';
    bool ok = write(fd, line, 2 * KEY_LEN + 1) == 2 * KEY_LEN + 1 && fsync(fd) == 0;
    explicit_bzero(line, sizeof(line));
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        snprintf(errbuf, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return CM_EIO;
    }
    return 0;
}

int gw_key_fleet(const gw_config_t *cfg, const char *redis_key, uint8_t *key, bool *changed,
                 char *errbuf, size_t errlen)
{
    cm_redis_url_t addr;
    if (cm_redis_url_parse(cfg->inventory, &addr, errbuf, errlen) != 0 ||
        cm_redis_url_default_password(&addr, cfg->redis_password) != 0)
        return CM_EINVAL;
    uint32_t timeout_ms = (uint32_t)(cfg->redis_timeout_ms < 1000 ? 1000 : cfg->redis_timeout_ms);
    inv_fleet_conn_t *c = inv_fleet_connect(&addr, timeout_ms, errbuf, errlen);
    if (!c)
        return CM_EBACKEND;
    char hex[2 * KEY_LEN + 1], got[2 * KEY_LEN];
    hex_encode(key, KEY_LEN, hex);
    int rc = 0;
    if (inv_fleet_secret(c, redis_key, hex, 2 * KEY_LEN, got) < 0) {
        const char *e = inv_fleet_errstr(c);
        snprintf(errbuf, errlen, "redis: cannot read the fleet's key %s: %s", redis_key,
                 *e ? e : "bad value");
        rc = CM_EBACKEND;
    } else {
        *changed = memcmp(got, hex, 2 * KEY_LEN) != 0;
        if (hex_decode(got, 2 * KEY_LEN, key) != 0) {
            snprintf(errbuf, errlen, "redis: %s does not hold 64 hex digits", redis_key);
            rc = CM_EBACKEND;
        }
    }
    explicit_bzero(hex, sizeof(hex));
    explicit_bzero(got, sizeof(got));
    inv_fleet_close(c);
    return rc;
}

/* The pad blocks' states (RFC 2104: H(K ^ opad, H(K ^ ipad, msg))), from sk->key. */
static void key_pads(struct gw_status_key *sk)
{
    uint8_t pad[HMAC_BLOCK];
    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < KEY_LEN; i++)
        pad[i] ^= sk->key[i];
    SHA256_Init(&sk->inner);
    SHA256_Update(&sk->inner, pad, sizeof(pad));
    memset(pad, 0x5c, sizeof(pad));
    for (size_t i = 0; i < KEY_LEN; i++)
        pad[i] ^= sk->key[i];
    SHA256_Init(&sk->outer);
    SHA256_Update(&sk->outer, pad, sizeof(pad));
    explicit_bzero(pad, sizeof(pad));
}

int gw_status_key_check(const gw_config_t *cfg, char *errbuf, size_t errlen)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/status.key", cfg->data_dir);
    uint8_t key[KEY_LEN];
    int rc = gw_key_file_read(path, key, STATUS_POWER, errbuf, errlen);
    explicit_bzero(key, sizeof(key));
    return rc == CM_ENOTFOUND ? 0 : rc;
}

int gw_status_key_load(gw_server_t *srv, char *errbuf, size_t errlen)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/status.key", srv->cfg->data_dir);
    struct gw_status_key *sk = gw_secret_alloc(sizeof(*sk));
    if (!sk) {
        snprintf(errbuf, errlen, "cannot map a page for the status key");
        return CM_ENOMEM;
    }
    uint8_t *key = sk->key;
    int rc = gw_key_file_read(path, key, STATUS_POWER, errbuf, errlen);
    bool fresh = rc == CM_ENOTFOUND;
    if (fresh) {
        if (RAND_bytes(key, KEY_LEN) != 1) {
            snprintf(errbuf, errlen, "RAND_bytes failed");
            rc = CM_EIO;
        } else {
            rc = 0;
        }
    }
    bool changed = fresh;
    if (rc == 0 && cm_redis_url_is(srv->cfg->inventory)) {
        bool from_fleet = false;
        rc = gw_key_fleet(srv->cfg, REDIS_KEY, key, &from_fleet, errbuf, errlen);
        if (rc == 0 && from_fleet) {
            if (!fresh)
                cm_log_warn("gw", "status key replaced by the fleet's (tokens this gateway gave "
                            "before it joined no longer read)", "path=%s", path);
            changed = true;
        }
    }
    if (rc == 0 && changed)
        rc = key_write(path, key, errbuf, errlen);
    if (rc != 0) {
        gw_secret_free(sk, sizeof(*sk));
        return rc;
    }
    key_pads(sk);
    srv->node.status_key = sk;
    cm_log_info("gw", fresh ? "generated the order status key" : "order status key loaded",
                "path=%s mode=0600", path);
    return 0;
}

void gw_status_key_free(gw_server_t *srv)
{
    gw_secret_free(srv->node.status_key, sizeof(*srv->node.status_key));
    srv->node.status_key = NULL;
}

size_t gw_status_token(const gw_server_t *srv, const char *order_id, char *out)
{
    char msg[INV_ORDER_ID_MAX + 8] = "order:"; /* once per 202: no snprintf */
    size_t n = strnlen(order_id, INV_ORDER_ID_MAX + 1);
    if (n > INV_ORDER_ID_MAX) {
        /* No order id is this long (the path takes up to 64 characters). Cut
         * to fit, the MAC was the one of its first 31: a token made for those
         * was good for them followed by anything. None is made. */
        out[0] = '\0';
        return 0;
    }
    memcpy(msg + 6, order_id, n);
    msg[6 + n] = '\0';
    return gw_token_mac(srv, msg, out);
}

int gw_status_key_derive(const gw_server_t *srv, const char *label, uint8_t *out, size_t len)
{
    const struct gw_status_key *sk = srv->node.status_key;
    if (!sk || len > SHA256_DIGEST_LENGTH)
        return CM_EINVAL;
    /* HMAC-SHA256(status key, "derive:" label): a key of its own per use */
    uint8_t mac[SHA256_DIGEST_LENGTH];
    SHA256_CTX c = sk->inner;
    SHA256_Update(&c, "derive:", 7);
    SHA256_Update(&c, label, strlen(label));
    SHA256_Final(mac, &c);
    c = sk->outer;
    SHA256_Update(&c, mac, sizeof(mac));
    SHA256_Final(mac, &c);
    memcpy(out, mac, len);
    explicit_bzero(&c, sizeof(c));
    explicit_bzero(mac, sizeof(mac));
    return 0;
}

bool gw_token_mac_ok(const gw_server_t *srv, const char *msg, const char *mac, size_t len)
{
    char want[GW_TOKEN_LEN + 1];
    size_t n = gw_token_mac(srv, msg, want);
    bool ok = n == GW_TOKEN_LEN && mac && len == n && CRYPTO_memcmp(want, mac, n) == 0;
    explicit_bzero(want, sizeof(want));
    return ok;
}

uint64_t gw_token_number(const char *s, const char *dot)
{
    size_t n = (size_t)(dot - s);
    if (n == 0 || n > 19 || s[0] == '0')
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    return v;
}

size_t gw_token_mac(const gw_server_t *srv, const char *msg, char *out)
{
    const struct gw_status_key *sk = srv->node.status_key;
    if (!sk) {
        out[0] = '\0';
        return 0;
    }
    /* HMAC-SHA256 from the pads' states (key_pads): copies on the stack, wiped after. */
    uint8_t mac[SHA256_DIGEST_LENGTH];
    SHA256_CTX c = sk->inner;
    SHA256_Update(&c, msg, strlen(msg));
    SHA256_Final(mac, &c);
    c = sk->outer;
    SHA256_Update(&c, mac, sizeof(mac));
    SHA256_Final(mac, &c);
    explicit_bzero(&c, sizeof(c));
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    /* 16 bytes -> 22 base64url characters, no padding. */
    size_t o = 0;
    for (size_t i = 0; i < GW_TOKEN_BYTES; i += 3) {
        uint32_t v = (uint32_t)mac[i] << 16;
        if (i + 1 < GW_TOKEN_BYTES)
            v |= (uint32_t)mac[i + 1] << 8;
        if (i + 2 < GW_TOKEN_BYTES)
            v |= mac[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        if (i + 1 < GW_TOKEN_BYTES)
            out[o++] = b64[(v >> 6) & 63];
        if (i + 2 < GW_TOKEN_BYTES)
            out[o++] = b64[v & 63];
    }
    out[o] = '\0';
    explicit_bzero(mac, sizeof(mac));
    return o;
}

bool gw_status_token_ok(const gw_server_t *srv, const char *order_id, const char *token)
{
    char want[GW_TOKEN_LEN + 1];
    size_t n = gw_status_token(srv, order_id, want);
    /* The length is public (always 22); the bytes are compared in constant time. */
    bool ok = n == GW_TOKEN_LEN && token && strlen(token) == n &&
              CRYPTO_memcmp(want, token, n) == 0;
    explicit_bzero(want, sizeof(want));
    return ok;
}
