/*
 * The admin listener's TLS: the PEM files of server.admin_tls_cert, _key and
 * _client_ca, read into memory for libmicrohttpd, and the check of a client's
 * certificate.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "gateway/base/gw_base.h"
#include "gateway/ctl/gw_admin_internal.h"
#include "gateway/ctl/gw_ctl.h"
#include "inventory/inv.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/*---- TLS (server.admin_tls_cert, _key, _client_ca) ----*/

gw_admin_tls_t gw__admin_tls;

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

void gw__admin_tls_free(void)
{
    free(gw__admin_tls.cert);
    free(gw__admin_tls.ca);
    if (gw__admin_tls.key)
        gw_secret_free(gw__admin_tls.key, gw__admin_tls.key_cap);
    memset(&gw__admin_tls, 0, sizeof(gw__admin_tls));
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
    gnutls_datum_t c = {(unsigned char *)gw__admin_tls.cert, (unsigned)strlen(gw__admin_tls.cert)};
    gnutls_datum_t k = {(unsigned char *)gw__admin_tls.key, (unsigned)strlen(gw__admin_tls.key)};
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

/* Loads the configured PEM files into gw__admin_tls (none: plain HTTP). */
int gw__admin_tls_load(const gw_config_t *cfg, char *errbuf, size_t errlen)
{
    int rc = 0;
    if (cfg->admin_tls_cert[0] &&
        ((rc = pem_read("server.admin_tls_cert", cfg->admin_tls_cert, false, &gw__admin_tls.cert,
                        NULL, errbuf, errlen)) ||
         (rc = pem_read("server.admin_tls_key", cfg->admin_tls_key, true, &gw__admin_tls.key,
                        &gw__admin_tls.key_cap, errbuf, errlen)) ||
         (rc = tls_pair_check(cfg, errbuf, errlen)) ||
         (cfg->admin_tls_client_ca[0] &&
          (rc = pem_read("server.admin_tls_client_ca", cfg->admin_tls_client_ca, false,
                         &gw__admin_tls.ca, NULL, errbuf, errlen)))))
        gw__admin_tls_free();
    return rc;
}

/*
 * With server.admin_tls_client_ca, libmicrohttpd asks for a client
 * certificate (GnuTLS's GNUTLS_CERT_REQUEST) but does not require one: a
 * request on a connection without a certificate that chains to the CAs is
 * refused here. True: verified.
 */
bool gw__admin_tls_client_verified(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    unsigned status = 0;
    return ci && ci->tls_session &&
           gnutls_certificate_verify_peers2((gnutls_session_t)ci->tls_session, &status) == 0 &&
           status == 0;
}
