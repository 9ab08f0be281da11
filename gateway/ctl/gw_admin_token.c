/*
 * The admin tokens' sources: server.admin_tokens_file (named tokens with
 * roles), server.admin_token_file, server.admin_token, or a token made and
 * kept in the data dir. Each lands in a secret page (gw_secret_alloc).
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

void gw__admin_token_add(gw_server_t *srv, const char *name, gw_role_t role, const char *tok,
                         size_t len)
{
    /* Tokens live in a secret page (no core dump, mlock'ed, wiped on free). */
    gw_admin_token_t *v = gw_secret_alloc((srv->admin->ntokens + 1) * sizeof(*srv->admin->tokens));
    if (!v)
        abort(); /* out of memory, as cm_xmalloc */
    if (srv->admin->ntokens)
        memcpy(v, srv->admin->tokens, srv->admin->ntokens * sizeof(*srv->admin->tokens));
    gw_secret_free(srv->admin->tokens, srv->admin->ntokens * sizeof(*srv->admin->tokens));
    srv->admin->tokens = v;
    gw_admin_token_t *t = &srv->admin->tokens[srv->admin->ntokens++];
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
int gw__admin_tokens_load(gw_server_t *srv, bool quiet, char *errbuf, size_t errlen)
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
            for (size_t i = 0; !why && i < srv->admin->ntokens; i++)
                if (strcmp(srv->admin->tokens[i].name, name) == 0)
                    why = "duplicate name";
            if (!why)
                gw__admin_token_add(srv, name, r, tok, tl);
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
                    srv->admin->ntokens - 1);
    return 0;
}

/* Reads or creates <data-dir>/admin.token (0600). Never logs the token itself. */
int gw__admin_token_make(gw_server_t *srv, char *errbuf, size_t errlen)
{
    snprintf(srv->admin->token_path, sizeof(srv->admin->token_path), "%s/admin.token",
             srv->cfg->data_dir);
    int fd = open(srv->admin->token_path, O_RDONLY | O_NOFOLLOW);
    if (fd >= 0) {
        struct stat st;
        char buf[256];
        ssize_t n = fstat(fd, &st) == 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        close(fd);
        if (n > 0 && (st.st_mode & 077) == 0) {
            while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
                n--;
            if (n >= 32) {
                gw__admin_token_add(srv, "admin", GW_ROLE_WRITE, buf, (size_t)n);
                explicit_bzero(buf, sizeof(buf));
                cm_log_info("admin", "admin token loaded", "path=%s", srv->admin->token_path);
                return 0;
            }
        }
        explicit_bzero(buf, sizeof(buf));
        if (n > 0 && (st.st_mode & 077) != 0)
            cm_log_warn("admin", "admin token file is readable by others; replacing it",
                        "path=%s", srv->admin->token_path);
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
    gw__admin_token_add(srv, "admin", GW_ROLE_WRITE, tokbuf, 2 * sizeof(rnd));
    char tmp[640];
    snprintf(tmp, sizeof(tmp), "%s.tmp", srv->admin->token_path);
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
    if (!ok || rename(tmp, srv->admin->token_path) != 0) {
        snprintf(errbuf, errlen, "cannot write %s: %s", srv->admin->token_path, strerror(errno));
        unlink(tmp);
        return CM_EIO;
    }
    cm_log_info("admin", "generated an admin token", "path=%s mode=0600",
                srv->admin->token_path);
    return 0;
}

/*
 * server.admin_token_file: one line, the token (16..255 printable characters;
 * trailing spaces and the newline are dropped). Read once, here, straight into
 * the secret page gw__admin_token_add copies from; the read buffer is wiped. Mounted
 * secrets come as 0400 or 0440 (a Kubernetes fsGroup adds the group), so the
 * rule is: no access for others, and the file must be a regular file.
 */
int gw__admin_token_file_load(gw_server_t *srv, bool quiet, char *errbuf, size_t errlen)
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
        gw__admin_token_add(srv, "admin", GW_ROLE_WRITE, buf, n);
    gw_secret_free(buf, CAP);
    if (why) {
        snprintf(errbuf, errlen, "server.admin_token_file %s: %s", path, why);
        return CM_EINVAL;
    }
    if (!quiet)
        cm_log_info("admin", "admin token loaded", "path=%s", path);
    return 0;
}
