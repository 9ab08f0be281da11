/*
 * What the unit tests of option tables share (common/cm_config.c's engine
 * and the gateway's and settle's tables): the environment variables a table
 * reads, saved, cleared and restored around each test, so that a CI
 * runner's own FLASHGATE_* cannot leak in; a config file in /tmp; and a
 * temporary descriptor to read back what a print wrote. Static functions in
 * a header: each test file is an executable of its own. Include it after
 * <cmocka.h> (it asserts).
 */
#ifndef FLASHGATE_TESTS_CONF_FIXTURE_H
#define FLASHGATE_TESTS_CONF_FIXTURE_H

#include "common/cm_config.h"

#include <stdarg.h>
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

#endif
