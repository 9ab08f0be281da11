/*
 * gw_token: the order status key file as flashgate finds it on disk (a key it
 * wrote, one an operator wrote, a corrupt, short, padded, world-readable,
 * linked or special file), and the status token's binding to the whole order
 * id. Each case loads the key the way a start does (gw_status_key_load, the
 * memory inventory: no Redis). And the number a waiting-room token starts with.
 */
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#define KEY_HEX "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

typedef struct tk {
    char dir[64];
    char path[128];
    gw_config_t cfg;
    gw_server_t srv;
    char why[512];
} tk_t;

static tk_t *tk_new(void)
{
    tk_t *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    snprintf(t->dir, sizeof(t->dir), "/tmp/fg-token-unit-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof(t->path), "%s/status.key", t->dir);
    snprintf(t->cfg.data_dir, sizeof(t->cfg.data_dir), "%s", t->dir);
    snprintf(t->cfg.inventory, sizeof(t->cfg.inventory), "memory");
    t->srv.cfg = &t->cfg;
    return t;
}

static void tk_free(tk_t *t)
{
    gw_status_key_free(&t->srv);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    assert_int_equal(system(cmd), 0);
    free(t);
}

static void put_file(const tk_t *t, const char *bytes, size_t n, mode_t mode)
{
    int fd = open(t->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static int load(tk_t *t)
{
    t->why[0] = '\0';
    return gw_status_key_load(&t->srv, t->why, sizeof(t->why));
}

/* The file holds what the next start must read back: the same key (tokens
 * given before a restart still read), either case of hex digits, with or
 * without its newline. */
static void test_key_file_read_back(void **st)
{
    (void)st;
    tk_t *t = tk_new();
    put_file(t, KEY_HEX "\n", 65, 0600);
    assert_int_equal(load(t), 0);
    char a[GW_TOKEN_LEN + 1], b[GW_TOKEN_LEN + 1];
    assert_int_equal(gw_status_token(&t->srv, "0AM0AZFQKEG00", a), GW_TOKEN_LEN);
    gw_status_key_free(&t->srv);

    char upper[] = KEY_HEX;
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    put_file(t, upper, 64, 0600);
    assert_int_equal(load(t), 0);
    assert_int_equal(gw_status_token(&t->srv, "0AM0AZFQKEG00", b), GW_TOKEN_LEN);
    assert_string_equal(a, b);
    tk_free(t);
}

/* A file that does not hold exactly a key is refused, with the reason, and no
 * key is loaded: not its first 64 digits (a second key or a longer secret
 * pasted in, a CRLF file), not a short or non-hex one. */
static void test_key_file_not_a_key(void **st)
{
    (void)st;
    static const struct {
        const char *bytes;
        const char *what;
    } bad[] = {
        {KEY_HEX "junk", "trailing junk"},
        {KEY_HEX KEY_HEX "\n", "two keys"},
        {KEY_HEX "\r\n", "CRLF"},
        {KEY_HEX "\n\n", "a second line"},
        {"00112233445566778899aabbccddeeff\n", "a 16-byte key"},
        {"", "empty"},
        {"zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", "not hex"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tk_t *t = tk_new();
        put_file(t, bad[i].bytes, strlen(bad[i].bytes), 0600);
        int rc = load(t);
        if (rc == 0)
            fail_msg("a key file with %s was loaded", bad[i].what);
        assert_non_null(strstr(t->why, "does not hold a key"));
        assert_null(t->srv.node.status_key);
        tk_free(t);
    }
}

/* Readable by the group or others: refused (the key reads every order). */
static void test_key_file_readable_by_others(void **st)
{
    (void)st;
    tk_t *t = tk_new();
    put_file(t, KEY_HEX "\n", 65, 0640);
    assert_int_not_equal(load(t), 0);
    assert_non_null(strstr(t->why, "readable by others"));
    assert_null(t->srv.node.status_key);
    tk_free(t);
}

/* A symbolic link is not followed (whoever can change it chooses the key),
 * and the refusal says that it is one. */
static void test_key_file_symlink(void **st)
{
    (void)st;
    tk_t *t = tk_new();
    char target[160];
    snprintf(target, sizeof(target), "%s/elsewhere", t->dir);
    int fd = open(target, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, KEY_HEX "\n", 65), 65);
    close(fd);
    assert_int_equal(symlink(target, t->path), 0);
    assert_int_not_equal(load(t), 0);
    assert_non_null(strstr(t->why, "is a symbolic link"));
    assert_null(t->srv.node.status_key);
    tk_free(t);
}

/* A FIFO (or a directory) at the path is refused at once; the FIFO's open
 * blocked the start for ever waiting for a writer. The alarm turns a hang into
 * a failure. */
static void test_key_file_not_regular(void **st)
{
    (void)st;
    tk_t *t = tk_new();
    assert_int_equal(mkfifo(t->path, 0600), 0);
    alarm(10);
    int rc = load(t);
    alarm(0);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(t->why, "not a regular file"));
    assert_int_equal(unlink(t->path), 0);
    assert_int_equal(mkdir(t->path, 0700), 0);
    assert_int_not_equal(load(t), 0);
    assert_non_null(strstr(t->why, "not a regular file"));
    assert_null(t->srv.node.status_key);
    tk_free(t);
}

/* The token is bound to the whole order id. The path takes up to 64
 * characters; the MAC was made over the first 31 of a longer one, so the
 * token of any 31 characters was good for them followed by anything. */
static void test_token_whole_id(void **st)
{
    (void)st;
    tk_t *t = tk_new();
    assert_int_equal(load(t), 0); /* none on disk: generated, and written 0600 */
    struct stat sb;
    assert_int_equal(stat(t->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char tok[GW_TOKEN_LEN + 1];
    assert_int_equal(gw_status_token(&t->srv, "0AM0AZFQKEG00", tok), GW_TOKEN_LEN);
    assert_true(gw_status_token_ok(&t->srv, "0AM0AZFQKEG00", tok));
    assert_false(gw_status_token_ok(&t->srv, "0AM0AZFQKEG00x", tok));
    assert_false(gw_status_token_ok(&t->srv, "0AM0AZFQKEG0", tok));
    assert_false(gw_status_token_ok(&t->srv, "0am0azfqkeg00", tok));

    char id31[INV_ORDER_ID_MAX + 1], longer[INV_SALE_ID_MAX + 1];
    memset(id31, 'A', INV_ORDER_ID_MAX);
    id31[INV_ORDER_ID_MAX] = '\0';
    assert_int_equal(gw_status_token(&t->srv, id31, tok), GW_TOKEN_LEN);
    assert_true(gw_status_token_ok(&t->srv, id31, tok));
    snprintf(longer, sizeof(longer), "%sjunk", id31);
    assert_false(gw_status_token_ok(&t->srv, longer, tok));
    memset(longer, 'A', INV_SALE_ID_MAX);
    longer[INV_SALE_ID_MAX] = '\0';
    assert_false(gw_status_token_ok(&t->srv, longer, tok));
    char none[GW_TOKEN_LEN + 1] = "x";
    assert_int_equal(gw_status_token(&t->srv, longer, none), 0);
    assert_string_equal(none, "");
    tk_free(t);
}

/* A waiting-room token's number: only the spelling the MAC was made over
 * (1..19 digits, no sign, blank or leading zero) reads as one. */
static uint64_t num(const char *s)
{
    const char *dot = strchr(s, '.');
    assert_non_null(dot);
    return gw_token_number(s, dot);
}

static void test_token_number(void **st)
{
    (void)st;
    assert_int_equal(num("5.mac"), 5);
    assert_int_equal(num("1234567890.x"), 1234567890);
    assert_true(num("9999999999999999999.x") == 9999999999999999999ull); /* 19 digits */
    assert_int_equal(num("10000000000000000000.x"), 0);                  /* 20 digits */
    assert_int_equal(num(".x"), 0);
    assert_int_equal(num("0.x"), 0);
    assert_int_equal(num("05.x"), 0);
    assert_int_equal(num("+5.x"), 0);
    assert_int_equal(num(" 5.x"), 0);
    assert_int_equal(num("-5.x"), 0);
    assert_int_equal(num("5a.x"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_file_read_back),
        cmocka_unit_test(test_key_file_not_a_key),
        cmocka_unit_test(test_key_file_readable_by_others),
        cmocka_unit_test(test_key_file_symlink),
        cmocka_unit_test(test_key_file_not_regular),
        cmocka_unit_test(test_token_whole_id),
        cmocka_unit_test(test_token_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
