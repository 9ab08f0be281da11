/*
 * Fuzz target: the buy path's header inputs: Idempotency-Key, the trusted
 * proxy list (server.trusted_proxies) and X-Forwarded-For resolution
 * (gw_client_key, gw_client_addr). Input: byte 0 picks the peer; then three
 * fields separated by '\n': Idempotency-Key, trusted proxies, X-Forwarded-For
 * (also read as an X-Request-Start value: gw_request_start_us,
 * gw_upstream_waited).
 * Promises: a valid key is 1..128 visible ASCII; a client key is 0, 4 or 8
 * bytes, the start of gw_client_addr's address; an untrusted peer is always
 * its own client whatever XFF says; an address gw_ipv4_parse reads is one
 * inet_pton reads the same.
 */
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"
#include "tests/fuzz/fuzz.h"

#include <arpa/inet.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    unsigned pick = data[0];
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    char *fields[3] = {s, "", ""};
    for (int i = 1; i < 3; i++) {
        char *nl = strchr(fields[i - 1], '\n');
        if (!nl)
            break;
        *nl = '\0';
        fields[i] = nl + 1;
    }
    size_t iklen = strlen(fields[0]);
    if (gw_idem_key_valid(fields[0], iklen)) {
        FZ_CHECK(iklen >= 1 && iklen <= INV_IDEM_KEY_MAX);
        for (size_t i = 0; i < iklen; i++)
            FZ_CHECK(fields[0][i] > 0x20 && fields[0][i] < 0x7f);
    }

    gw_proxies_t px = {0};
    char err[256];
    if (gw_proxies_parse(&px, fields[1], err, sizeof(err)) != 0) {
        gw_proxies_free(&px);
        memset(&px, 0, sizeof(px));
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    static const char *peers[] = {"127.0.0.1", "10.1.2.3", "192.168.0.1", "::1", "2001:db8::7"};
    const char *peer = peers[pick % 5];
    if (strchr(peer, ':')) {
        a6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, peer, &a6->sin6_addr);
    } else {
        a4->sin_family = AF_INET;
        inet_pton(AF_INET, peer, &a4->sin_addr);
    }
    /* The hand-read IPv4 takes only what inet_pton takes, with the same bytes. */
    for (int i = 0; i < 3; i++) {
        uint8_t a[4], b[4];
        if (gw_ipv4_parse(fields[i], a))
            FZ_CHECK(inet_pton(AF_INET, fields[i], b) == 1 && memcmp(a, b, 4) == 0);
    }
    uint8_t key[16], own[16];
    size_t n = gw_client_key(&px, (struct sockaddr *)&ss, (pick & 0x80) ? NULL : fields[2], key);
    FZ_CHECK(n == 4 || n == 8);
    gw_proxies_t none = {0};
    size_t own_n = gw_client_key(&none, (struct sockaddr *)&ss, fields[2], own);
    if (!gw_proxies_match(&px, (struct sockaddr *)&ss))
        FZ_CHECK(own_n == n && memcmp(own, key, n) == 0);
    /* The whole address (the proxy's X-Real-IP) is the one the limiter keys
     * on: the key is its first 4 (IPv4) or 8 (an IPv6 /64) bytes. */
    uint8_t addr[16];
    int fam = gw_client_addr(&px, (struct sockaddr *)&ss, (pick & 0x80) ? NULL : fields[2], addr);
    FZ_CHECK((fam == AF_INET && n == 4) || (fam == AF_INET6 && n == 8));
    FZ_CHECK(memcmp(addr, key, n) == 0);
    /* The third field as an X-Request-Start value: read or refused, never a
     * wait longer than its distance from now, never a start a minute ahead. */
    uint64_t start, waited;
    const uint64_t now = 1732269600000000ull;
    bool read = gw_request_start_us(fields[2], &start);
    if (gw_upstream_waited(fields[2], now, &waited)) {
        FZ_CHECK(read && start <= now + 60u * 1000000u);
        FZ_CHECK(waited == (start >= now ? 0 : now - start));
    }
    gw_proxies_free(&px);
    free(s);
    return 0;
}
