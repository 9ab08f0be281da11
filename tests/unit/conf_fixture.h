/*
 * What the unit tests of option tables share (common/cm_config.c's engine
 * and the gateway's and settle's tables): the environment variables a table
 * reads, saved, cleared and restored around each test, so that a CI
 * runner's own FLASHGATE_* cannot leak in; a config file in /tmp; a
 * temporary descriptor to read back what a print wrote; and the check of a
 * committed sample config against its table. Static functions in a header:
 * each test file is an executable of its own. Include it after <cmocka.h>
 * (it asserts).
 */
#ifndef FLASHGATE_TESTS_CONF_FIXTURE_H
#define FLASHGATE_TESTS_CONF_FIXTURE_H

#include "common/cm_config.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONF_ENV_MAX 200

typedef struct conf_env {
    struct {
        char *name;
        char *value; /* NULL = was unset */
    } var[CONF_ENV_MAX];
    int n;
} conf_env_t;

/* Saves name's value (once) and unsets it. */
static inline void conf_env_save(conf_env_t *e, const char *name)
{
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->var[i].name, name) == 0)
            return;
    assert_true(e->n < CONF_ENV_MAX);
    const char *v = getenv(name);
    e->var[e->n].name = strdup(name);
    e->var[e->n].value = v ? strdup(v) : NULL;
    e->n++;
    unsetenv(name);
}

/* FLASHGATE_CONFIG and every variable (key and alias) of the table. */
static inline void conf_env_save_table(conf_env_t *e, const cm_opt_t *opts)
{
    conf_env_save(e, "FLASHGATE_CONFIG");
    for (const cm_opt_t *o = opts; o->key; o++)
        for (int a = 0; a < 2; a++) {
            char name[128];
            if (cm_conf_env_name(o, "FLASHGATE_", a, name, sizeof(name)))
                conf_env_save(e, name);
        }
}

/* Puts every saved variable back as it was (set or unset). */
static inline void conf_env_restore(conf_env_t *e)
{
    for (int i = 0; i < e->n; i++) {
        if (e->var[i].value)
            setenv(e->var[i].name, e->var[i].value, 1);
        else
            unsetenv(e->var[i].name);
        free(e->var[i].name);
        free(e->var[i].value);
    }
    e->n = 0;
}

/* text in a new file /tmp/<tag>-XXXXXX, named in path (the file path named
 * before, if any, is removed first). */
static inline void conf_write_file(char path[64], const char *tag, const char *text)
{
    if (path[0])
        unlink(path);
    snprintf(path, 64, "/tmp/%s-XXXXXX", tag);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* An unlinked temporary file to print into. */
static inline int conf_tmpfd(void)
{
    char p[] = "/tmp/conftest-out-XXXXXX";
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    unlink(p);
    return fd;
}

/* All that fd holds, NUL-terminated (free it). */
static inline char *conf_read_all(int fd)
{
    off_t n = lseek(fd, 0, SEEK_END);
    assert_true(n >= 0);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, s, (size_t)n, 0), n);
    return s;
}

/* argv for a load: prog, then ap's arguments up to its NULL (at most max - 2
 * of them), then NULL. Returns argc. */
static inline int conf_argv(char **argv, int max, const char *prog, va_list ap)
{
    int argc = 0;
    argv[argc++] = (char *)prog;
    char *a;
    while (argc < max - 1 && (a = va_arg(ap, char *)) != NULL)
        argv[argc++] = a;
    argv[argc] = NULL;
    return argc;
}

/*
 * deploy/<name> in the source tree (free it): from FLASHGATE_SRC, which ctest
 * sets (tests/CMakeLists.txt), else, for a test run by hand, from this
 * header's own path. NULL when neither tells.
 */
static inline char *conf_sample_path(const char *name)
{
    static const char self[] = "tests/unit/conf_fixture.h";
    const char *src = getenv("FLASHGATE_SRC");
    char buf[1024];
    if (src && *src) {
        snprintf(buf, sizeof(buf), "%s/deploy/%s", src, name);
    } else {
        size_t n = strlen(__FILE__), sn = sizeof(self) - 1;
        if (n < sn || strcmp(__FILE__ + n - sn, self) != 0)
            return NULL;
        snprintf(buf, sizeof(buf), "%.*sdeploy/%s", (int)(n - sn), __FILE__, name);
    }
    return strdup(buf);
}

/*
 * The committed sample config deploy/<name> is exactly what
 * cm_conf_print_sample prints for `conf`'s table (the table's defaults,
 * whatever conf holds), and it documents every key: a "// KEY: HELP" line
 * with a help text. With FLASHGATE_REGEN_SAMPLE set the file is rewritten
 * first. A failure names the file and the command that regenerates it:
 * FLASHGATE_REGEN_SAMPLE=1 build/tests/<test>. Returns the file's path (free
 * it): the caller then loads it with --config through its own table's load
 * and checks what came out (conf_check_all_from_file). Skips the test when
 * the source tree cannot be found.
 */
static inline char *conf_check_sample(const cm_conf_t *conf, const char *name, const char *test)
{
    char *path = conf_sample_path(name);
    if (!path)
        skip();
    int fd = conf_tmpfd();
    cm_conf_print_sample(conf, fd);
    char *gen = conf_read_all(fd);
    close(fd);
    if (getenv("FLASHGATE_REGEN_SAMPLE")) {
        FILE *w = fopen(path, "w");
        if (!w || fputs(gen, w) < 0 || fclose(w) != 0)
            fail_msg("cannot write %s", path);
    }
    int rfd = open(path, O_RDONLY);
    if (rfd < 0)
        fail_msg("cannot open %s: run FLASHGATE_REGEN_SAMPLE=1 build/tests/%s", path, test);
    char *committed = conf_read_all(rfd);
    close(rfd);
    if (strcmp(gen, committed) != 0)
        fail_msg("%s is not what the option table generates: run "
                 "FLASHGATE_REGEN_SAMPLE=1 build/tests/%s and commit it",
                 path, test);
    for (const cm_opt_t *o = conf->opts; o->key; o++) {
        char needle[256];
        snprintf(needle, sizeof(needle), "// %s: ", o->key);
        if (!strstr(committed, needle))
            fail_msg("%s does not document %s", path, o->key);
        if (!o->help || !*o->help)
            fail_msg("%s has no help line (in --help and %s)", o->key, path);
    }
    free(gen);
    free(committed);
    return path;
}

/* Every key of a conf loaded with --config path took its value from that
 * file: the sample sets them all, none is left to the defaults. */
static inline void conf_check_all_from_file(const cm_conf_t *conf, const char *path)
{
    for (const cm_opt_t *o = conf->opts; o->key; o++)
        if (cm_conf_source(conf, o->key) != CM_SRC_FILE)
            fail_msg("%s: %s not set by %s", conf->prog, o->key, path);
}

#endif
