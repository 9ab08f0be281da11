#include "common/cm_log.h"
#include "common/cm_err.h"
#include "common/cm_time.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

_Atomic int cm_log_level_current = CM_LOG_INFO;
static int log_fd = 2;
static bool log_json;

const char *const cm_log_level_names[] = {"error", "warn", "info", "debug", NULL};
#define level_names cm_log_level_names

void cm_log_set_level(cm_log_level_t level)
{
    atomic_store(&cm_log_level_current, (int)level);
}

int cm_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

const char *cm_log_level_name(cm_log_level_t level)
{
    return (unsigned)level < 4 ? level_names[level] : "?";
}

void cm_log_set_fd(int fd)
{
    log_fd = fd;
}

int cm_log_set_format(const char *fmt)
{
    if (strcmp(fmt, "logfmt") == 0)
        log_json = false;
    else if (strcmp(fmt, "json") == 0)
        log_json = true;
    else
        return CM_EINVAL;
    return 0;
}

static size_t put(char *buf, size_t len, size_t cap, char c)
{
    if (len + 1 < cap)
        buf[len++] = c;
    return len;
}

static size_t put_escaped(char *buf, size_t len, size_t cap, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            len = put(buf, len, cap, '\\');
            len = put(buf, len, cap, (char)c);
        } else if (c == '\n') {
            len = put(buf, len, cap, '\\');
            len = put(buf, len, cap, 'n');
        } else if (c < 0x20) {
            len = put(buf, len, cap, '?');
        } else {
            len = put(buf, len, cap, (char)c);
        }
    }
    return len;
}

size_t cm_log_quote(char *buf, size_t len, size_t cap, const char *s)
{
    bool bare = *s != '\0';
    for (const char *p = s; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
            bare = false;
    if (bare) {
        for (const char *p = s; *p; p++)
            len = put(buf, len, cap, *p);
        return len;
    }
    len = put(buf, len, cap, '"');
    len = put_escaped(buf, len, cap, s);
    return put(buf, len, cap, '"');
}

void cm__log(cm_log_level_t level, const char *mod, const char *msg, const char *fields, ...)
{
    char line[4096];
    char ts[40];
    cm_time_format_rfc3339(cm_wall_ms(), ts, sizeof(ts));
    const size_t cap = sizeof(line) - 1; /* room for '\n' */
    size_t len;
    char extra[3072];
    extra[0] = '\0';
    if (fields) {
        va_list ap;
        va_start(ap, fields);
        vsnprintf(extra, sizeof(extra), fields, ap);
        va_end(ap);
    }
    if (!log_json) {
        len = (size_t)snprintf(line, cap, "ts=%s level=%s mod=%s msg=", ts,
                               cm_log_level_name(level), mod);
        if (len >= cap)
            len = cap - 1;
        len = cm_log_quote(line, len, cap, msg);
        if (extra[0]) {
            len = put(line, len, cap, ' ');
            for (const char *p = extra; *p; p++)
                len = put(line, len, cap, *p);
        }
    } else {
        /* JSON: the logfmt pairs travel as one "fields" string to stay cheap. */
        len = (size_t)snprintf(line, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":\"%s\",\"msg\":\"",
                               ts, cm_log_level_name(level), mod);
        if (len >= cap)
            len = cap - 1;
        len = put_escaped(line, len, cap, msg);
        len = put(line, len, cap, '"');
        if (extra[0]) {
            const char *k = ",\"fields\":\"";
            for (; *k; k++)
                len = put(line, len, cap, *k);
            len = put_escaped(line, len, cap, extra);
            len = put(line, len, cap, '"');
        }
        len = put(line, len, cap, '}');
    }
    line[len++] = '\n';
    ssize_t r = write(log_fd, line, len);
    (void)r;
}
