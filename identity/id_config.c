/*
 * identity.* settings: defaults and validation, and the algorithm table.
 */
#include "identity/id_internal.h"

#include "common/cm_err.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const id_alg_t id__algs[] = {
    {"RS256", ID_KT_RSA, "SHA256", false},   {"RS384", ID_KT_RSA, "SHA384", false},
    {"RS512", ID_KT_RSA, "SHA512", false},   {"PS256", ID_KT_RSA, "SHA256", true},
    {"ES256", ID_KT_EC256, "SHA256", false}, {"ES384", ID_KT_EC384, "SHA384", false},
    {"EdDSA", ID_KT_ED25519, NULL, false},   {"HS256", ID_KT_HMAC, "SHA256", false},
};
const size_t id__n_algs = sizeof(id__algs) / sizeof(id__algs[0]);

int id__alg_find(const char *name, size_t len)
{
    for (size_t i = 0; i < id__n_algs; i++)
        if (strlen(id__algs[i].name) == len && memcmp(id__algs[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

int id__algs_parse(const char *list, unsigned *mask, char *err, size_t errlen)
{
    unsigned m = 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        int i = id__alg_find(p, (size_t)(e - p));
        if (i < 0) {
            snprintf(err, errlen,
                     "identity.algorithms: unknown algorithm \"%.*s\" (known: RS256 RS384 RS512 "
                     "PS256 ES256 ES384 EdDSA HS256)",
                     (int)(e - p > 32 ? 32 : e - p), p);
            return -1;
        }
        m |= 1u << i;
        p = e;
    }
    if (!m) {
        snprintf(err, errlen, "identity.algorithms: empty (name at least one algorithm)");
        return -1;
    }
    *mask = m;
    return 0;
}

void id_config_defaults(id_config_t *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->issuer, sizeof(c->issuer), "flashgate");
    snprintf(c->audience, sizeof(c->audience), "flashgate");
    snprintf(c->algorithms, sizeof(c->algorithms), "RS256,ES256,EdDSA");
    snprintf(c->user_claim, sizeof(c->user_claim), "sub");
    c->leeway_s = 30;
    c->jwks_refresh_s = 300;
    c->jwks_min_refetch_s = 30;
    c->jwks_timeout_ms = 5000;
    c->max_token_bytes = ID_TOKEN_LIMIT;
}

/* The host of an http:// URL is loopback: 127.0.0.0/8, [::1] or localhost. */
static bool url_loopback(const char *url)
{
    const char *h = url + 7;
    size_t n = strcspn(h, "/?#");
    const char *at = memchr(h, '@', n);
    if (at) {
        n -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    if (n >= 5 && strncmp(h, "[::1]", 5) == 0)
        return n == 5 || h[5] == ':';
    size_t hl = strcspn(h, ":/?#");
    if (hl > n)
        hl = n;
    if (hl == 9 && strncasecmp(h, "localhost", 9) == 0)
        return true;
    char ip[16];
    if (hl >= sizeof(ip))
        return false;
    memcpy(ip, h, hl);
    ip[hl] = '\0';
    unsigned char a[4];
    return inet_pton(AF_INET, ip, a) == 1 && a[0] == 127;
}

static bool claim_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] >= 127)
            return false;
    return true;
}

/* The next item of a comma-separated list at *p: true with it in [*p, *t)
 * (spaces around it left out) and *e at its end (the comma or the NUL); false
 * at the list's end. */
static bool list_item(const char **p, const char **e, const char **t)
{
    while (**p == ' ' || **p == ',')
        (*p)++;
    if (!**p)
        return false;
    *e = *p;
    while (**e && **e != ',')
        (*e)++;
    *t = *e;
    while (*t > *p && (*t)[-1] == ' ')
        (*t)--;
    return true;
}

int id__elig_names(const char *list, char out[][ID_CLAIM_NAME_MAX + 1], size_t *n, char *err,
                   size_t errlen)
{
    size_t k = 0;
    const char *p = list, *e, *t;
    while (list_item(&p, &e, &t)) {
        size_t len = (size_t)(t - p);
        char name[ID_CLAIM_NAME_MAX + 2];
        if (len > ID_CLAIM_NAME_MAX)
            len = ID_CLAIM_NAME_MAX + 1; /* too long: claim_name_ok refuses it */
        memcpy(name, p, len);
        name[len] = '\0';
        if (!claim_name_ok(name)) {
            snprintf(err, errlen,
                     "identity.eligibility_claims: \"%.32s\" is not 1..63 printable characters "
                     "without quotes, backslashes or spaces",
                     name);
            return -1;
        }
        for (size_t i = 0; i < k; i++)
            if (strcmp(out[i], name) == 0) {
                snprintf(err, errlen, "identity.eligibility_claims: \"%s\" named twice", name);
                return -1;
            }
        if (k == ID_ELIG_MAX) {
            snprintf(err, errlen, "identity.eligibility_claims: more than %d claims", ID_ELIG_MAX);
            return -1;
        }
        memcpy(out[k], name, len + 1);
        k++;
        p = e;
    }
    *n = k;
    return 0;
}

int id_config_claim_bit(const id_config_t *c, const char *name, size_t len)
{
    char names[ID_ELIG_MAX][ID_CLAIM_NAME_MAX + 1], err[160];
    size_t n = 0;
    if (id__elig_names(c->eligibility_claims, names, &n, err, sizeof(err)) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return (int)i;
    return -1;
}

bool id_config_claim_name(const id_config_t *c, int i, char *out)
{
    char names[ID_ELIG_MAX][ID_CLAIM_NAME_MAX + 1], err[160];
    size_t n = 0;
    if (i < 0 || id__elig_names(c->eligibility_claims, names, &n, err, sizeof(err)) < 0 ||
        (size_t)i >= n)
        return false;
    memcpy(out, names[i], strlen(names[i]) + 1);
    return true;
}

int id__audiences(const char *list, char out[][ID_STR_MAX], size_t *n, char *err, size_t errlen)
{
    size_t k = 0;
    const char *p = list, *e, *t;
    while (list_item(&p, &e, &t)) {
        if (k == ID_AUDIENCES_MAX) {
            snprintf(err, errlen, "identity.audience: more than %d audiences", ID_AUDIENCES_MAX);
            return -1;
        }
        memcpy(out[k], p, (size_t)(t - p));
        out[k][t - p] = '\0';
        k++;
        p = e;
    }
    if (!k) {
        snprintf(err, errlen, "identity.audience: empty (tokens must name this gateway's audience)");
        return -1;
    }
    *n = k;
    return 0;
}

int id_config_validate(const id_config_t *c, char *err, size_t errlen)
{
    unsigned mask;
    if (id__algs_parse(c->algorithms, &mask, err, errlen) < 0)
        return CM_EINVAL;
    int hs = id__alg_find("HS256", 5);
    if ((mask & (1u << hs)) && !c->hmac_secret_file[0]) {
        snprintf(err, errlen, "identity.algorithms: HS256 needs identity.hmac_secret_file");
        return CM_EINVAL;
    }
    if (c->hmac_secret_file[0] && !(mask & (1u << hs))) {
        snprintf(err, errlen,
                 "identity.hmac_secret_file is set but identity.algorithms does not allow HS256");
        return CM_EINVAL;
    }
    if (!c->issuer[0]) {
        snprintf(err, errlen, "identity.issuer: empty (tokens must name their issuer)");
        return CM_EINVAL;
    }
    char aud[ID_AUDIENCES_MAX][ID_STR_MAX];
    size_t naud;
    if (id__audiences(c->audience, aud, &naud, err, errlen) < 0)
        return CM_EINVAL;
    if (!claim_name_ok(c->user_claim)) {
        snprintf(err, errlen, "identity.user_claim: must be 1..63 printable characters");
        return CM_EINVAL;
    }
    if (c->person_claim[0] && !claim_name_ok(c->person_claim)) {
        snprintf(err, errlen, "identity.person_claim: must be 1..63 printable characters");
        return CM_EINVAL;
    }
    char elig[ID_ELIG_MAX][ID_CLAIM_NAME_MAX + 1];
    size_t nelig;
    if (id__elig_names(c->eligibility_claims, elig, &nelig, err, errlen) < 0)
        return CM_EINVAL;
    if (c->account_created_claim[0] && !claim_name_ok(c->account_created_claim)) {
        snprintf(err, errlen, "identity.account_created_claim: must be 1..63 printable characters");
        return CM_EINVAL;
    }
    if (c->leeway_s > 600) {
        snprintf(err, errlen, "identity.leeway_s=%u: must be between 0 and 600", c->leeway_s);
        return CM_EINVAL;
    }
    if (c->jwks_url[0] && strncmp(c->jwks_url, "https://", 8) != 0 &&
        strncmp(c->jwks_url, "http://", 7) != 0) {
        snprintf(err, errlen, "identity.jwks_url: must start with https:// or http://");
        return CM_EINVAL;
    }
    /* whoever is on the path of a plain http:// fetch publishes the keys, and
     * with them mints any buyer: loopback only, unless opted in */
    if (strncmp(c->jwks_url, "http://", 7) == 0 && !c->jwks_allow_http &&
        !url_loopback(c->jwks_url)) {
        snprintf(err, errlen,
                 "identity.jwks_url: plain http:// off loopback lets anyone on the path publish "
                 "keys: use https://, or set identity.jwks_allow_http=true");
        return CM_EINVAL;
    }
    if (c->jwks_max_stale_s > 30 * 86400) {
        snprintf(err, errlen, "identity.jwks_max_stale=%u: must be at most 30 days",
                 c->jwks_max_stale_s);
        return CM_EINVAL;
    }
    if (c->typ[0]) {
        for (const char *t = c->typ; *t; t++)
            if ((unsigned char)*t <= ' ' || *t == '"' || *t == '\\' || (unsigned char)*t >= 127) {
                snprintf(err, errlen, "identity.typ: must be 1..%d printable characters",
                         ID_TYP_MAX);
                return CM_EINVAL;
            }
    }
    if (c->jwks_cache_file[0] && !c->jwks_url[0]) {
        snprintf(err, errlen, "identity.jwks_cache_file is set without identity.jwks_url");
        return CM_EINVAL;
    }
    if (c->jwks_refresh_s < 1 || c->jwks_refresh_s > 86400) {
        snprintf(err, errlen, "identity.jwks_refresh_s=%u: must be between 1 and 86400",
                 c->jwks_refresh_s);
        return CM_EINVAL;
    }
    if (c->jwks_min_refetch_s < 1 || c->jwks_min_refetch_s > 3600) {
        snprintf(err, errlen, "identity.jwks_min_refetch=%u: must be between 1 and 3600",
                 c->jwks_min_refetch_s);
        return CM_EINVAL;
    }
    if (c->jwks_timeout_ms < 100 || c->jwks_timeout_ms > 60000) {
        snprintf(err, errlen, "identity.jwks_timeout_ms=%u: must be between 100 and 60000",
                 c->jwks_timeout_ms);
        return CM_EINVAL;
    }
    if (c->max_token_bytes < 256 || c->max_token_bytes > ID_TOKEN_LIMIT) {
        snprintf(err, errlen, "identity.max_token_bytes=%u: must be between 256 and %d",
                 c->max_token_bytes, ID_TOKEN_LIMIT);
        return CM_EINVAL;
    }
    return 0;
}
