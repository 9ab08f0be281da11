/*
 * Table-driven configuration: defaults < JSON file < environment < flags.
 *
 * Every value goes through one path (apply_text): parse into a temporary,
 * check range and the option's own validator, and only then copy it into the
 * caller's struct, so a rejected value never changes anything. Problems are
 * collected in an error list and reported together.
 */
#include "common/cm_config.h"
#include "common/cm_alloc.h"
#include "common/cm_build.h"
#include "common/cm_err.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_MAX_BYTES (4u << 20) /* a config file larger than this is a mistake */
#define TEXT_MAX 8192             /* longest value text we format or parse */

/*---- Error collection ----*/

typedef struct errlist {
    char *buf;
    size_t cap, len;
    int count;
    bool truncated;
} errlist_t;

static void err_init(errlist_t *e, char *buf, size_t cap)
{
    e->buf = buf;
    e->cap = buf ? cap : 0;
    e->len = 0;
    e->count = 0;
    e->truncated = false;
    if (e->cap)
        buf[0] = '\0';
}

__attribute__((format(printf, 2, 3))) static void err_add(errlist_t *e, const char *fmt, ...)
{
    e->count++;
    if (e->cap == 0 || e->truncated)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t ln = strlen(line);
    /* Keep room for a final "config: ...\n" marker when the buffer fills up. */
    static const char more[] = "config: (more errors not shown)\n";
    if (e->len + ln + 1 + sizeof(more) > e->cap) {
        e->truncated = true;
        if (e->len + sizeof(more) <= e->cap) {
            memcpy(e->buf + e->len, more, sizeof(more));
            e->len += sizeof(more) - 1;
        }
        return;
    }
    memcpy(e->buf + e->len, line, ln);
    e->len += ln;
    e->buf[e->len++] = '\n';
    e->buf[e->len] = '\0';
}

/*---- Names ----*/

static size_t copy_trunc(char *buf, size_t len, const char *s)
{
    if (len == 0)
        return 0;
    size_t n = strlen(s);
    if (n >= len)
        n = len - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return n;
}

size_t cm_conf_env_name(const cm_opt_t *opt, const char *env_prefix, bool alias, char *buf,
                        size_t len)
{
    const char *name = alias ? opt->alias : opt->key;
    if (len == 0)
        return 0;
    buf[0] = '\0';
    if (!name || !*name)
        return 0;
    size_t n = copy_trunc(buf, len, env_prefix ? env_prefix : "");
    for (const char *p = name; *p && n + 1 < len; p++) {
        char c = *p;
        buf[n++] = (c == '.' || c == '-') ? '_' : (char)toupper((unsigned char)c);
    }
    buf[n] = '\0';
    return n;
}

size_t cm_conf_flag_name(const cm_opt_t *opt, bool alias, char *buf, size_t len)
{
    const char *name = alias ? opt->alias : opt->key;
    if (len == 0)
        return 0;
    buf[0] = '\0';
    if (!name || !*name)
        return 0;
    size_t n = 0;
    for (const char *p = name; *p && n + 1 < len; p++)
        buf[n++] = (*p == '.' || *p == '_') ? '-' : *p;
    buf[n] = '\0';
    return n;
}

const char *cm_src_name(cm_src_t src)
{
    switch (src) {
    case CM_SRC_DEFAULT:
        return "default";
    case CM_SRC_FILE:
        return "file";
    case CM_SRC_ENV:
        return "env";
    case CM_SRC_FLAG:
        return "flag";
    case CM_SRC_RUNTIME:
        return "runtime";
    }
    return "?";
}

static size_t opt_count(const cm_opt_t *opts)
{
    size_t n = 0;
    while (opts[n].key)
        n++;
    return n;
}

const cm_opt_t *cm_conf_find(const cm_opt_t *opts, const char *key)
{
    for (const cm_opt_t *o = opts; o->key; o++)
        if (strcmp(o->key, key) == 0)
            return o;
    return NULL;
}

/* Levenshtein distance, capped: enough to suggest "did you mean". */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 99;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* Writes " (did you mean X?)" into buf if some key or flag is close to `name`. */
static void suggest(const cm_opt_t *opts, const char *name, bool as_flag, char *buf, size_t len)
{
    buf[0] = '\0';
    size_t best = 3;
    char cand[128], pick[128] = "";
    for (const cm_opt_t *o = opts; o->key; o++) {
        for (int a = 0; a < 2; a++) {
            if (as_flag)
                cm_conf_flag_name(o, a, cand, sizeof(cand));
            else
                copy_trunc(cand, sizeof(cand), a ? "" : o->key);
            if (!cand[0])
                continue;
            size_t d = edit_distance(name, cand);
            if (d < best) {
                best = d;
                copy_trunc(pick, sizeof(pick), cand);
            }
        }
    }
    if (pick[0])
        snprintf(buf, len, " (did you mean %s%s?)", as_flag ? "--" : "", pick);
}

/*---- Parsing and formatting of values ----*/

static const char *trim(const char *s, char *buf, size_t len)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n >= len)
        n = len - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* Parses leading decimal digits into *v. Returns the count of digits, or -1 on overflow. */
static int parse_digits(const char **p, uint64_t *v)
{
    int n = 0;
    uint64_t x = 0;
    while (isdigit((unsigned char)**p)) {
        if (__builtin_mul_overflow(x, 10u, &x) || __builtin_add_overflow(x, (uint64_t)(**p - '0'), &x))
            return -1;
        (*p)++;
        n++;
    }
    *v = x;
    return n;
}

static int parse_uint(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t v;
    if (parse_digits(&p, &v) <= 0 || *p)
        return -1;
    *out = v;
    return 0;
}

/* "2.5" -> 2500. Returns 0, -1 malformed, -2 more than 3 decimals. */
static int parse_milli(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t whole = 0, frac = 0;
    int nw = parse_digits(&p, &whole);
    if (nw < 0)
        return -1;
    int nf = 0;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            if (nf >= 3) {
                if (*p != '0')
                    return -2;
            } else {
                frac = frac * 10 + (uint64_t)(*p - '0');
            }
            nf++;
            p++;
        }
        if (nf == 0 && nw == 0)
            return -1;
    }
    if (*p || (nw == 0 && nf == 0))
        return -1;
    for (int i = nf; i < 3; i++)
        frac *= 10;
    uint64_t v;
    if (__builtin_mul_overflow(whole, 1000u, &v) || __builtin_add_overflow(v, frac, &v))
        return -1;
    *out = v;
    return 0;
}

static int parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t v;
    if (parse_digits(&p, &v) <= 0)
        return -1;
    uint64_t mul = 1;
    switch (tolower((unsigned char)*p)) {
    case 'k':
        mul = 1ull << 10;
        p++;
        break;
    case 'm':
        mul = 1ull << 20;
        p++;
        break;
    case 'g':
        mul = 1ull << 30;
        p++;
        break;
    case 't':
        mul = 1ull << 40;
        p++;
        break;
    default:
        break;
    }
    if (mul > 1 && *p == 'i')
        p++;
    if (*p == 'b' || *p == 'B')
        p++;
    if (*p || __builtin_mul_overflow(v, mul, &v))
        return -1;
    *out = v;
    return 0;
}

static int parse_ms(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t v;
    if (parse_digits(&p, &v) <= 0)
        return -1;
    uint64_t mul;
    if (*p == '\0' || strcmp(p, "ms") == 0)
        mul = 1;
    else if (strcmp(p, "s") == 0)
        mul = 1000;
    else if (strcmp(p, "m") == 0 || strcmp(p, "min") == 0)
        mul = 60000;
    else if (strcmp(p, "h") == 0)
        mul = 3600000;
    else
        return -1;
    if (__builtin_mul_overflow(v, mul, &v))
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < CM_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static size_t fmt_milli(uint64_t v, char *buf, size_t len)
{
    uint64_t frac = v % 1000;
    int n;
    if (frac == 0)
        n = snprintf(buf, len, "%" PRIu64, v / 1000);
    else if (frac % 100 == 0)
        n = snprintf(buf, len, "%" PRIu64 ".%" PRIu64, v / 1000, frac / 100);
    else if (frac % 10 == 0)
        n = snprintf(buf, len, "%" PRIu64 ".%02" PRIu64, v / 1000, frac / 10);
    else
        n = snprintf(buf, len, "%" PRIu64 ".%03" PRIu64, v / 1000, frac);
    return n < 0 ? 0 : (size_t)n;
}

static size_t fmt_size(uint64_t v, char *buf, size_t len)
{
    static const char units[] = "tgmk";
    for (int i = 0; i < 4; i++) {
        uint64_t u = 1ull << (10 * (4 - i));
        if (v && v % u == 0) {
            int n = snprintf(buf, len, "%" PRIu64 "%c", v / u, units[i]);
            return n < 0 ? 0 : (size_t)n;
        }
    }
    int n = snprintf(buf, len, "%" PRIu64, v);
    return n < 0 ? 0 : (size_t)n;
}

static size_t fmt_ms(uint64_t v, char *buf, size_t len)
{
    int n;
    if (v == 0)
        n = snprintf(buf, len, "0");
    else if (v % 3600000 == 0)
        n = snprintf(buf, len, "%" PRIu64 "h", v / 3600000);
    else if (v % 60000 == 0)
        n = snprintf(buf, len, "%" PRIu64 "m", v / 60000);
    else if (v % 1000 == 0)
        n = snprintf(buf, len, "%" PRIu64 "s", v / 1000);
    else
        n = snprintf(buf, len, "%" PRIu64 "ms", v);
    return n < 0 ? 0 : (size_t)n;
}

static size_t fmt_num(const cm_opt_t *o, uint64_t v, char *buf, size_t len)
{
    switch (o->type) {
    case CM_OPT_MILLI:
        return fmt_milli(v, buf, len);
    case CM_OPT_SIZE:
        return fmt_size(v, buf, len);
    case CM_OPT_MS:
        return fmt_ms(v, buf, len);
    default: {
        int n = snprintf(buf, len, "%" PRIu64, v);
        return n < 0 ? 0 : (size_t)n;
    }
    }
}

static bool kv_key_ok(const char *k, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)k[i]) && k[i] != '.' && k[i] != '_' && k[i] != '-')
            return false;
    return true;
}

/*
 * Normalises KV text into "k=v\n" lines appended to out (cap bytes).
 * `commas`: split on ',' too, where a piece without '=' continues the
 * previous value ("bootstrap.servers=a:1,b:2,linger.ms=5").
 * Returns NULL or the rule broken.
 */
static const char *kv_normalise(const char *in, bool commas, char *out, size_t cap)
{
    size_t len = strlen(out);
    const char *p = in;
    bool have_pair = false;
    while (*p) {
        size_t n = strcspn(p, commas ? ",\n" : "\n");
        const char *eq = memchr(p, '=', n);
        char piece[TEXT_MAX];
        if (n >= sizeof(piece))
            return "is too long";
        memcpy(piece, p, n);
        piece[n] = '\0';
        char tb[TEXT_MAX];
        const char *t = trim(piece, tb, sizeof(tb));
        if (*t) {
            if (!eq) {
                if (!(commas && have_pair && p[-1] == ','))
                    return "must be key=value pairs";
                /* continuation of the previous value: replace the '\n' with ',' */
                if (len + strlen(t) + 2 > cap)
                    return "is too long";
                out[len - 1] = ',';
                len += (size_t)sprintf(out + len, "%s\n", t);
            } else {
                const char *teq = strchr(t, '=');
                char key[256];
                size_t kn = (size_t)(teq - t);
                while (kn > 0 && isspace((unsigned char)t[kn - 1]))
                    kn--;
                if (!kv_key_ok(t, kn) || kn >= sizeof(key))
                    return "keys must be non-empty [A-Za-z0-9._-]";
                memcpy(key, t, kn);
                key[kn] = '\0';
                const char *val = teq + 1;
                while (isspace((unsigned char)*val))
                    val++;
                if (len + kn + strlen(val) + 3 > cap)
                    return "is too long";
                len += (size_t)sprintf(out + len, "%s=%s\n", key, val);
                have_pair = true;
            }
        }
        p += n;
        if (*p)
            p++;
    }
    return NULL;
}

static bool kv_secret_key(const char *k, size_t n)
{
    char key[256];
    if (n >= sizeof(key))
        n = sizeof(key) - 1;
    for (size_t i = 0; i < n; i++)
        key[i] = (char)tolower((unsigned char)k[i]);
    key[n] = '\0';
    return strstr(key, "password") || strstr(key, "secret");
}

/* "k=v\nk2=v2\n" -> "k=v,k2=v2"; secret-looking values become <set>. */
static size_t fmt_kv(const char *kv, char *buf, size_t len, bool redact)
{
    size_t n = 0;
    buf[0] = '\0';
    for (const char *p = kv; *p;) {
        size_t ln = strcspn(p, "\n");
        const char *eq = memchr(p, '=', ln);
        char item[TEXT_MAX];
        if (eq && redact && kv_secret_key(p, (size_t)(eq - p)))
            snprintf(item, sizeof(item), "%.*s=<set>", (int)(eq - p), p);
        else
            snprintf(item, sizeof(item), "%.*s", (int)ln, p);
        int w = snprintf(buf + n, len - n, "%s%s", n ? "," : "", item);
        if (w < 0 || (size_t)w >= len - n) {
            n = strlen(buf);
            break;
        }
        n += (size_t)w;
        p += ln;
        if (*p)
            p++;
    }
    return n;
}

/*---- Applying a value ----*/

typedef union parsed {
    uint64_t u;
    bool b;
    int e;
} parsed_t;

static size_t opt_index(const cm_conf_t *conf, const cm_opt_t *o)
{
    return (size_t)(o - conf->opts);
}

static void *field(const cm_conf_t *conf, const cm_opt_t *o)
{
    return (char *)conf->base + o->offset;
}

static void fmt_range(const cm_opt_t *o, char *buf, size_t len)
{
    char lo[64], hi[64];
    fmt_num(o, o->min, lo, sizeof(lo));
    fmt_num(o, o->max, hi, sizeof(hi));
    if (o->max)
        snprintf(buf, len, "must be between %s and %s", lo, hi);
    else
        snprintf(buf, len, "must be >= %s", lo);
}

/*
 * Parses `text` for option `o` and, if valid, stores it. `kv_append` adds
 * KV pairs to the current value instead of replacing it; `kv_commas` lets
 * KV text separate pairs with commas. Returns NULL or the rule broken
 * (rulebuf may be used for it).
 */
static const char *apply_trimmed(cm_conf_t *conf, const cm_opt_t *o, const char *text,
                                 const char *t, bool kv_append, bool kv_commas, char *rulebuf,
                                 size_t rulelen)
{
    parsed_t v = {0};
    int r;
    switch (o->type) {
    case CM_OPT_STR: {
        if (strlen(text) >= o->size) {
            snprintf(rulebuf, rulelen, "must be shorter than %zu bytes", o->size);
            return rulebuf;
        }
        for (const char *p = text; *p; p++)
            if ((unsigned char)*p < 0x20)
                return "must not contain control characters";
        if (o->validate) {
            const char *rule = o->validate(text);
            if (rule)
                return rule;
        }
        memcpy(field(conf, o), text, strlen(text) + 1);
        return NULL;
    }
    case CM_OPT_KV: {
        char *out = cm_xcalloc(1, o->size);
        if (kv_append)
            memcpy(out, field(conf, o), strlen(field(conf, o)) + 1);
        const char *rule = kv_normalise(text, kv_commas, out, o->size);
        if (!rule && o->validate)
            rule = o->validate(out);
        if (rule == NULL)
            memcpy(field(conf, o), out, strlen(out) + 1);
        free(out);
        if (rule && strcmp(rule, "is too long") == 0) {
            snprintf(rulebuf, rulelen, "must be shorter than %zu bytes in all", o->size);
            return rulebuf;
        }
        return rule;
    }
    case CM_OPT_BOOL:
        if (parse_bool(t, &v.b))
            return "must be true or false (also 1/0, yes/no, on/off)";
        break;
    case CM_OPT_ENUM: {
        v.e = -1;
        for (int i = 0; o->choices && o->choices[i]; i++)
            if (strcmp(t, o->choices[i]) == 0)
                v.e = i;
        if (v.e < 0) {
            size_t n = (size_t)snprintf(rulebuf, rulelen, "must be one of:");
            for (int i = 0; o->choices && o->choices[i] && n < rulelen; i++)
                n += (size_t)snprintf(rulebuf + n, rulelen - n, "%s %s", i ? "," : "",
                                      o->choices[i]);
            return rulebuf;
        }
        break;
    }
    case CM_OPT_UINT:
        if (parse_uint(t, &v.u))
            return "must be a whole number >= 0";
        break;
    case CM_OPT_MILLI:
        r = parse_milli(t, &v.u);
        if (r == -2)
            return "must have at most 3 decimal places (steps of 0.001)";
        if (r)
            return "must be a number >= 0";
        break;
    case CM_OPT_SIZE:
        if (parse_size(t, &v.u))
            return "must be a size in bytes like 4096, 4k, 64m, 1g";
        break;
    case CM_OPT_MS:
        if (parse_ms(t, &v.u))
            return "must be a duration like 250ms, 2s, 1m, 1h (a bare number is ms)";
        break;
    }
    if (o->type == CM_OPT_UINT || o->type == CM_OPT_MILLI || o->type == CM_OPT_SIZE ||
        o->type == CM_OPT_MS) {
        if (v.u < o->min || (o->max && v.u > o->max)) {
            fmt_range(o, rulebuf, rulelen);
            return rulebuf;
        }
    }
    if (o->validate) {
        const void *p = o->type == CM_OPT_BOOL ? (const void *)&v.b
                        : o->type == CM_OPT_ENUM ? (const void *)&v.e
                                                 : (const void *)&v.u;
        const char *rule = o->validate(p);
        if (rule)
            return rule;
    }
    switch (o->type) {
    case CM_OPT_BOOL:
        *(bool *)field(conf, o) = v.b;
        break;
    case CM_OPT_ENUM:
        *(int *)field(conf, o) = v.e;
        break;
    default:
        *(uint64_t *)field(conf, o) = v.u;
        break;
    }
    return NULL;
}

static void shown_value(const cm_opt_t *o, const char *text, char *buf, size_t len)
{
    if ((o->flags & CM_OPT_SECRET) && text[0])
        copy_trunc(buf, len, "<set>");
    else
        snprintf(buf, len, "%s", text);
    /* one line per error: flatten newlines of KV text */
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = ',';
}

/* apply_trimmed with `t`, the text without its surrounding whitespace, in a
 * stack copy wiped after: the value may be a secret (the admin token). The
 * copy stayed readable in the process (integration.21-admin-token found it
 * once link-time optimisation moved the stack frames). */
static const char *apply_text(cm_conf_t *conf, const cm_opt_t *o, const char *text,
                              bool kv_append, bool kv_commas, char *rulebuf, size_t rulelen)
{
    char tb[TEXT_MAX];
    const char *rule = apply_trimmed(conf, o, text, trim(text, tb, sizeof(tb)), kv_append,
                                     kv_commas, rulebuf, rulelen);
    explicit_bzero(tb, sizeof(tb));
    return rule;
}

/* Applies text from a source; records the source or reports the problem. */
static bool set_from(cm_conf_t *conf, errlist_t *errs, const cm_opt_t *o, const char *text,
                     cm_src_t src, const char *detail, bool kv_commas, bool kv_may_append)
{
    size_t i = opt_index(conf, o);
    /* Repeated KV flags add pairs; anything else replaces. */
    bool append = kv_may_append && o->type == CM_OPT_KV && src == CM_SRC_FLAG &&
                  conf->src[i] == CM_SRC_FLAG;
    char rulebuf[256];
    const char *rule = apply_text(conf, o, text, append, kv_commas, rulebuf, sizeof(rulebuf));
    if (rule) {
        char shown[512], where[700];
        shown_value(o, text, shown, sizeof(shown));
        if (src == CM_SRC_FILE)
            snprintf(where, sizeof(where), "file %s", conf->config_file);
        else if (detail && *detail)
            snprintf(where, sizeof(where), "%s %s", cm_src_name(src), detail);
        else
            snprintf(where, sizeof(where), "%s", cm_src_name(src));
        err_add(errs, "config: %s=%s (%s): %s", o->key, shown, where, rule);
        return false;
    }
    conf->src[i] = src;
    copy_trunc(conf->src_detail[i], sizeof(conf->src_detail[i]), detail ? detail : "");
    return true;
}

/*---- The JSON file ----*/

/* Converts a JSON scalar (or, for KV, an object; for STR, an array) to option text. */
static const char *json_to_text(const cm_opt_t *o, json_t *v, char *buf, size_t len)
{
    buf[0] = '\0';
    switch (json_typeof(v)) {
    case JSON_STRING:
        if (strlen(json_string_value(v)) != json_string_length(v))
            return "must not contain NUL characters";
        copy_trunc(buf, len, json_string_value(v));
        return NULL;
    case JSON_INTEGER:
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return NULL;
    case JSON_REAL:
        snprintf(buf, len, "%.15g", json_real_value(v));
        return NULL;
    case JSON_TRUE:
    case JSON_FALSE:
        copy_trunc(buf, len, json_is_true(v) ? "true" : "false");
        return NULL;
    case JSON_NULL:
        return "must not be null";
    case JSON_ARRAY: {
        if (o->type != CM_OPT_STR)
            return "must not be a list";
        size_t n = 0, i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (json_is_object(item)) {
                /* A list of objects (e.g. proxy.routes) stays JSON text: the
                 * option's own validator parses it. */
                char *dump = json_dumps(v, JSON_COMPACT);
                bool fits = dump && strlen(dump) < len;
                if (fits)
                    copy_trunc(buf, len, dump);
                free(dump);
                return fits ? NULL : "is too long";
            }
        }
        json_array_foreach(v, i, item)
        {
            char one[TEXT_MAX];
            if (!json_is_string(item) && !json_is_number(item))
                return "list items must be strings or numbers";
            json_to_text(o, item, one, sizeof(one));
            int w = snprintf(buf + n, len - n, "%s%s", i ? "," : "", one);
            if (w < 0 || (size_t)w >= len - n)
                return "is too long";
            n += (size_t)w;
        }
        return NULL;
    }
    case JSON_OBJECT: {
        if (o->type != CM_OPT_KV)
            return "must not be an object";
        size_t n = 0;
        const char *k;
        json_t *item;
        json_object_foreach(v, k, item)
        {
            char one[TEXT_MAX];
            if (json_is_object(item) || json_is_array(item) || json_is_null(item))
                return "values must be strings, numbers or booleans";
            json_to_text(o, item, one, sizeof(one));
            if (strchr(one, '\n'))
                return "values must not contain newlines";
            int w = snprintf(buf + n, len - n, "%s=%s\n", k, one);
            if (w < 0 || (size_t)w >= len - n)
                return "is too long";
            n += (size_t)w;
        }
        return NULL;
    }
    }
    return "has an unsupported type";
}

static bool has_prefix_key(const cm_opt_t *opts, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const cm_opt_t *o = opts; o->key; o++)
        if (strncmp(o->key, prefix, n) == 0 && o->key[n] == '.')
            return true;
    return false;
}

static void walk_json(cm_conf_t *conf, errlist_t *errs, bool *seen, json_t *obj,
                      const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        char full[512];
        snprintf(full, sizeof(full), "%s%s%s", prefix, *prefix ? "." : "", k);
        const cm_opt_t *o = cm_conf_find(conf->opts, full);
        if (!o) {
            if (json_is_object(v) && has_prefix_key(conf->opts, full)) {
                walk_json(conf, errs, seen, v, full);
                continue;
            }
            char hint[200];
            suggest(conf->opts, full, false, hint, sizeof(hint));
            err_add(errs, "config: %s (file %s): unknown key%s", full, conf->config_file, hint);
            continue;
        }
        size_t i = opt_index(conf, o);
        if (seen[i]) {
            err_add(errs, "config: %s (file %s): set twice in the file", full, conf->config_file);
            continue;
        }
        seen[i] = true;
        char *text = cm_xmalloc(TEXT_MAX);
        const char *rule = json_to_text(o, v, text, TEXT_MAX);
        if (rule) {
            char *dump = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            char shown[200];
            shown_value(o, dump ? dump : "?", shown, sizeof(shown));
            err_add(errs, "config: %s=%s (file %s): %s", full, shown, conf->config_file, rule);
            free(dump);
        } else {
            set_from(conf, errs, o, text, CM_SRC_FILE, "", false, false);
        }
        free(text);
    }
}

/* Blanks whole-line comments ("//" or "#" first on the line), keeping line numbers. */
static void strip_comments(char *s)
{
    char *line = s;
    while (*line) {
        char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        char *end = strchr(p, '\n');
        if (!end)
            end = p + strlen(p);
        if (*p == '#' || (p[0] == '/' && p[1] == '/'))
            memset(p, ' ', (size_t)(end - p));
        line = *end ? end + 1 : end;
    }
}

/*
 * jansson's allocator for the whole process: frees wipe the block first. A
 * config file may hold a secret (server.admin_token), and jansson keeps the
 * string in its tree and in the parser's buffers; a freed block stays in the
 * heap, and so in a core dump, until it is reused. jansson is off the hot
 * path (the buy body is read in place), so the wipe costs nothing that counts.
 */
static void wiping_free(void *p)
{
    if (p) {
        explicit_bzero(p, malloc_usable_size(p));
        free(p);
    }
}

static void install_wiping_json_alloc(void)
{
    static bool done;
    if (!done) {
        json_set_alloc_funcs(malloc, wiping_free);
        done = true;
    }
}

static void load_file(cm_conf_t *conf, errlist_t *errs, const char *path)
{
    copy_trunc(conf->config_file, sizeof(conf->config_file), path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_add(errs, "config: --config %s: cannot open: %s", path, strerror(errno));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > FILE_MAX_BYTES) {
        err_add(errs, "config: --config %s: not a regular file of at most %u bytes", path,
                FILE_MAX_BYTES);
        close(fd);
        return;
    }
    size_t size = (size_t)st.st_size, got = 0;
    char *text = cm_xmalloc(size + 1);
    while (got < size) {
        ssize_t r = read(fd, text + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    text[got] = '\0';
    if (strlen(text) != got) {
        err_add(errs, "config: --config %s: contains a NUL byte", path);
        free(text);
        return;
    }
    strip_comments(text);
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    explicit_bzero(text, got); /* it may hold a secret */
    free(text);
    if (!root) {
        err_add(errs, "config: --config %s: line %d column %d: %s", path, jerr.line, jerr.column,
                jerr.text);
        return;
    }
    if (!json_is_object(root)) {
        err_add(errs, "config: --config %s: must hold one JSON object", path);
    } else {
        bool *seen = cm_xcalloc(opt_count(conf->opts) + 1, sizeof(bool));
        walk_json(conf, errs, seen, root, "");
        free(seen);
    }
    json_decref(root);
}

/*---- Loading ----*/

static void load_env(cm_conf_t *conf, errlist_t *errs)
{
    for (const cm_opt_t *o = conf->opts; o->key; o++) {
        /* The alias first, so that the key's own variable wins when both are set. */
        for (int a = 1; a >= 0; a--) {
            char name[160];
            if (!cm_conf_env_name(o, conf->env_prefix, a, name, sizeof(name)))
                continue;
            if (a == 1) {
                char own[160];
                cm_conf_env_name(o, conf->env_prefix, false, own, sizeof(own));
                if (strcmp(own, name) == 0)
                    continue;
            }
            const char *v = getenv(name);
            if (v)
                set_from(conf, errs, o, v, CM_SRC_ENV, name, true, false);
        }
    }
}

static const cm_opt_t *find_flag(const cm_opt_t *opts, const char *name, size_t n)
{
    char cand[160];
    for (const cm_opt_t *o = opts; o->key; o++)
        for (int a = 0; a < 2; a++)
            if (cm_conf_flag_name(o, a, cand, sizeof(cand)) == n && memcmp(cand, name, n) == 0)
                return o;
    return NULL;
}

/* Finds --config among argv (the file must be read before env and flags apply). */
static const char *find_config_arg(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            break;
        if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) {
            if (i + 1 < argc)
                path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            path = a + 9;
        }
    }
    return path;
}

static void add_arg(cm_conf_t *conf, char *a)
{
    conf->args = cm_xrealloc(conf->args, sizeof(char *) * (size_t)(conf->nargs + 1));
    conf->args[conf->nargs++] = a;
}

static void load_flags(cm_conf_t *conf, errlist_t *errs, int argc, char **argv)
{
    bool only_args = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_args || a[0] != '-' || a[1] == '\0') {
            add_arg(conf, a);
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            conf->want_help = true;
            continue;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            conf->want_version = true;
            continue;
        }
        if (strcmp(a, "--check-config") == 0) {
            conf->want_check = true;
            continue;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc)
                err_add(errs, "config: %s (flag): needs a value (FILE)", a);
            i++;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0)
            continue;
        if (a[1] != '-') {
            err_add(errs, "config: %s (flag): unknown flag", a);
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const char *val = eq ? eq + 1 : NULL;
        bool is_set = nlen == 3 && memcmp(name, "set", 3) == 0;
        const cm_opt_t *o = is_set ? NULL : find_flag(conf->opts, name, nlen);
        if (!is_set && !o) {
            char hint[200], nm[160];
            snprintf(nm, sizeof(nm), "%.*s", (int)nlen, name);
            suggest(conf->opts, nm, true, hint, sizeof(hint));
            err_add(errs, "config: --%s (flag): unknown flag%s", nm, hint);
            continue;
        }
        bool b;
        if (!val && o && o->type == CM_OPT_BOOL) {
            /* "--flag false" means what it says: a boolean word right after a
             * BOOL flag is its value (no sub-command is named like one);
             * anything else leaves the flag true and is an argument. */
            if (i + 1 < argc && parse_bool(argv[i + 1], &b) == 0)
                val = argv[++i];
            else
                val = "true";
        } else if (!val) {
            if (i + 1 >= argc) {
                err_add(errs, "config: --%.*s (flag): needs a value", (int)nlen, name);
                continue;
            }
            val = argv[++i];
        }
        if (is_set) {
            const char *e2 = strchr(val, '=');
            if (!e2) {
                err_add(errs, "config: --set %s (flag): needs KEY=VALUE", val);
                continue;
            }
            char key[256];
            snprintf(key, sizeof(key), "%.*s", (int)(e2 - val), val);
            const cm_opt_t *so = cm_conf_find(conf->opts, key);
            if (!so) {
                char hint[200];
                suggest(conf->opts, key, false, hint, sizeof(hint));
                err_add(errs, "config: %s (flag --set): unknown key%s", val, hint);
                continue;
            }
            set_from(conf, errs, so, e2 + 1, CM_SRC_FLAG, "--set", true, true);
        } else {
            char detail[96];
            snprintf(detail, sizeof(detail), "--%.*s", (int)nlen, name);
            set_from(conf, errs, o, val, CM_SRC_FLAG, detail, true, true);
        }
    }
}

int cm_conf_load(cm_conf_t *conf, const cm_opt_t *opts, void *base, const char *prog,
                 const char *env_prefix, int argc, char **argv, char *errbuf, size_t errlen)
{
    install_wiping_json_alloc(); /* before any JSON: the first call is in main, single-threaded */
    memset(conf, 0, sizeof(*conf));
    conf->opts = opts;
    conf->base = base;
    conf->prog = prog;
    conf->env_prefix = env_prefix ? env_prefix : "";
    size_t n = opt_count(opts);
    conf->src = cm_xcalloc(n + 1, sizeof(cm_src_t));
    conf->src_detail = cm_xcalloc(n + 1, sizeof(conf->src_detail[0]));
    errlist_t errs;
    err_init(&errs, errbuf, errlen);

    for (const cm_opt_t *o = opts; o->key; o++) {
        if (o->type == CM_OPT_STR || o->type == CM_OPT_KV)
            memset(field(conf, o), 0, o->size);
        /* A bad default is a table bug; it is reported like any other error. */
        set_from(conf, &errs, o, o->def ? o->def : "", CM_SRC_DEFAULT, "", true, false);
    }

    const char *path = find_config_arg(argc, argv);
    char envname[160];
    snprintf(envname, sizeof(envname), "%sCONFIG", conf->env_prefix);
    if (!path) {
        path = getenv(envname);
        if (path && !*path)
            path = NULL;
    }
    if (path)
        load_file(conf, &errs, path);

    load_env(conf, &errs);
    load_flags(conf, &errs, argc, argv);
    return errs.count ? CM_EINVAL : 0;
}

void cm_conf_free(cm_conf_t *conf)
{
    if (!conf)
        return;
    CM_FREE(conf->src);
    CM_FREE(conf->src_detail);
    CM_FREE(conf->args);
    conf->nargs = 0;
}

int cm_conf_check_args(const cm_conf_t *conf, int max_args, char *errbuf, size_t errlen)
{
    if (conf->nargs <= max_args)
        return 0;
    size_t had = errbuf && errlen ? strnlen(errbuf, errlen - 1) : 0;
    errlist_t errs;
    err_init(&errs, errbuf + had, errlen - had);
    for (int i = max_args; i < conf->nargs; i++)
        err_add(&errs, "config: \"%s\" (argument): unexpected argument (%s takes %s; values go "
                "as --FLAG VALUE or --FLAG=VALUE)", conf->args[i], conf->prog ? conf->prog : "",
                max_args ? "one command" : "no arguments");
    return CM_EINVAL;
}

int cm_conf_set(cm_conf_t *conf, const char *key, const char *value, cm_src_t src, char *errbuf,
                size_t errlen)
{
    errlist_t errs;
    err_init(&errs, errbuf, errlen);
    const cm_opt_t *o = cm_conf_find(conf->opts, key);
    if (!o) {
        char hint[200];
        suggest(conf->opts, key, false, hint, sizeof(hint));
        err_add(&errs, "config: %s (%s): unknown key%s", key, cm_src_name(src), hint);
    } else if (src == CM_SRC_RUNTIME && !(o->flags & CM_OPT_RUNTIME)) {
        char shown[512];
        shown_value(o, value, shown, sizeof(shown));
        err_add(&errs, "config: %s=%s (runtime): cannot be changed at run time (restart needed)",
                key, shown);
    } else {
        set_from(conf, &errs, o, value, src, "", true, false);
    }
    if (errs.len && errbuf[errs.len - 1] == '\n')
        errbuf[errs.len - 1] = '\0';
    if (!o)
        return CM_ENOTFOUND;
    return errs.count ? CM_EINVAL : 0;
}

/*---- Output ----*/

size_t cm_conf_format(const cm_conf_t *conf, const cm_opt_t *o, char *buf, size_t len)
{
    if (len == 0)
        return 0;
    const void *f = field(conf, o);
    if (o->flags & CM_OPT_SECRET) {
        if (o->type == CM_OPT_STR || o->type == CM_OPT_KV)
            return copy_trunc(buf, len, *(const char *)f ? "<set>" : "");
        return copy_trunc(buf, len, "<set>");
    }
    switch (o->type) {
    case CM_OPT_STR:
        return copy_trunc(buf, len, f);
    case CM_OPT_KV:
        return fmt_kv(f, buf, len, true);
    case CM_OPT_BOOL:
        return copy_trunc(buf, len, *(const bool *)f ? "true" : "false");
    case CM_OPT_ENUM: {
        int e = *(const int *)f;
        int nc = 0;
        while (o->choices && o->choices[nc])
            nc++;
        return copy_trunc(buf, len, e >= 0 && e < nc ? o->choices[e] : "?");
    }
    default:
        return fmt_num(o, *(const uint64_t *)f, buf, len);
    }
}

size_t cm_conf_describe_source(const cm_conf_t *conf, const cm_opt_t *o, char *buf, size_t len)
{
    size_t i = opt_index(conf, o);
    cm_src_t s = conf->src[i];
    int n;
    if (s == CM_SRC_FILE)
        n = snprintf(buf, len, "file %s", conf->config_file);
    else if (conf->src_detail[i][0])
        n = snprintf(buf, len, "%s %s", cm_src_name(s), conf->src_detail[i]);
    else
        n = snprintf(buf, len, "%s", cm_src_name(s));
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len ? len - 1 : 0;
}

int cm_conf_source(const cm_conf_t *conf, const char *key)
{
    const cm_opt_t *o = cm_conf_find(conf->opts, key);
    return o ? (int)conf->src[opt_index(conf, o)] : CM_ENOTFOUND;
}

void cm_conf_report(const cm_conf_t *conf, const char *key, const char *rule, char *errbuf,
                    size_t errlen)
{
    if (!errbuf || errlen == 0)
        return;
    const cm_opt_t *o = cm_conf_find(conf->opts, key);
    errlist_t errs;
    errs.buf = errbuf;
    errs.cap = errlen;
    errs.len = strnlen(errbuf, errlen - 1);
    errbuf[errs.len] = '\0';
    errs.count = 0;
    errs.truncated = strstr(errbuf, "config: (more errors not shown)") != NULL;
    if (!o) {
        err_add(&errs, "config: %s: %s", key, rule);
        return;
    }
    char val[1024], where[700];
    cm_conf_format(conf, o, val, sizeof(val));
    cm_conf_describe_source(conf, o, where, sizeof(where));
    err_add(&errs, "config: %s=%s (%s): %s", key, val, where, rule);
}

static void out(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

__attribute__((format(printf, 2, 3))) static void outf(int fd, const char *fmt, ...)
{
    char line[TEXT_MAX + 1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        out(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static const char *metavar(const cm_opt_t *o, char *buf, size_t len)
{
    if (o->metavar)
        return o->metavar;
    switch (o->type) {
    case CM_OPT_STR:
        return "TEXT";
    case CM_OPT_UINT:
        return "N";
    case CM_OPT_BOOL:
        return "[=BOOL]";
    case CM_OPT_ENUM: {
        size_t n = 0;
        buf[0] = '\0';
        for (int i = 0; o->choices && o->choices[i] && n < len; i++)
            n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? "|" : "", o->choices[i]);
        return buf;
    }
    case CM_OPT_MILLI:
        return "NUM";
    case CM_OPT_SIZE:
        return "SIZE";
    case CM_OPT_MS:
        return "DURATION";
    case CM_OPT_KV:
        return "KEY=VALUE";
    }
    return "VALUE";
}

#define HELP_WIDTH 99 /* every line of --help is shorter than 100 characters */
#define HELP_COL 36
#define HELP_NBSP "\x01" /* a space help_item does not break a line at */

/* "  <col> <text>", the text wrapped at spaces into lines of at most
 * HELP_WIDTH characters, continued under the text's column (a column wider
 * than HELP_COL puts the text on the next line). A word longer than a line
 * is cut where the line ends. */
static void help_line(int fd, char *line, size_t len, const char *tail, int tlen)
{
    for (size_t i = 0; i < len; i++)
        if (line[i] == HELP_NBSP[0])
            line[i] = ' ';
    char t[HELP_WIDTH + 1];
    snprintf(t, sizeof(t), "%.*s", tlen, tail);
    for (char *c = t; *c; c++)
        if (*c == HELP_NBSP[0])
            *c = ' ';
    outf(fd, "%.*s%s\n", (int)len, line, t);
}

static void help_item(int fd, const char *col, const char *text)
{
    char line[HELP_WIDTH + 1];
    const size_t indent = 2 + HELP_COL + 1;
    size_t len;
    bool shown = false; /* a line of this item is out */
    if (strlen(col) > HELP_COL) {
        outf(fd, "  %s\n", col);
        shown = true;
        len = (size_t)snprintf(line, sizeof(line), "%*s", (int)indent, "");
    } else {
        len = (size_t)snprintf(line, sizeof(line), "  %-*s ", HELP_COL, col);
    }
    bool first = true;
    for (const char *p = text; *p;) {
        while (*p == ' ')
            p++;
        size_t w = strcspn(p, " ");
        if (!w)
            break;
        if (!first && len + 1 + w > HELP_WIDTH) {
            help_line(fd, line, len, "", 0);
            shown = true;
            len = (size_t)snprintf(line, sizeof(line), "%*s", (int)indent, "");
            first = true;
        }
        if (len + !first + w > HELP_WIDTH) {
            /* longer than a line (a JSON example): cut where the line ends */
            w = HELP_WIDTH - len;
            help_line(fd, line, len, p, (int)w);
            shown = true;
            len = (size_t)snprintf(line, sizeof(line), "%*s", (int)indent, "");
            first = true;
        } else {
            len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%.*s", first ? "" : " ",
                                    (int)w, p);
            first = false;
        }
        p += w;
    }
    if (!first || !shown)
        help_line(fd, line, len, "", 0);
}

void cm_conf_print_help(const cm_conf_t *conf, const char *usage, int fd)
{
    if (usage)
        outf(fd, "%s\n", usage);
    outf(fd, "\nGeneral:\n");
    char cfgline[200];
    snprintf(cfgline, sizeof(cfgline), "JSON config file; also env %sCONFIG", conf->env_prefix);
    help_item(fd, "--config FILE, -c FILE", cfgline);
    help_item(fd, "--set KEY=VALUE", "set any key below (repeatable)");
    help_item(fd, "--check-config", "validate, print the effective configuration, exit");
    help_item(fd, "--help, --version", "this text; the version and commit");
    help_item(fd, "--FLAG [=BOOL]",
              "a BOOL flag alone is true; its value as --FLAG=false or --FLAG false");
    outf(fd,
         "\nOptions (later wins: default < --config file < environment < flags; each key also\n"
         "has --KEY-WITH-DASHES and %sKEY_UPPER_CASE):\n",
         conf->env_prefix);
    for (const cm_opt_t *o = conf->opts; o->key; o++) {
        char flag[160], mv[160], col[360], def[512], envs[400], e1[160], e2[160];
        cm_conf_flag_name(o, o->alias != NULL, flag, sizeof(flag));
        snprintf(col, sizeof(col), "--%s %s", flag, metavar(o, mv, sizeof(mv)));
        cm_conf_env_name(o, conf->env_prefix, false, e1, sizeof(e1));
        if (cm_conf_env_name(o, conf->env_prefix, true, e2, sizeof(e2)) && strcmp(e1, e2) != 0)
            snprintf(envs, sizeof(envs), "%s, %s", e2, e1);
        else
            snprintf(envs, sizeof(envs), "%s", e1);
        if (o->flags & CM_OPT_SECRET)
            snprintf(def, sizeof(def), "secret");
        else
            snprintf(def, sizeof(def), "default" HELP_NBSP "%s", o->def && *o->def ? o->def : "\"\"");
        char *text = cm_xmalloc(TEXT_MAX);
        /* HELP_NBSP keeps "env NAME" and "default VALUE" on one line */
        snprintf(text, TEXT_MAX, "%s [%s; %s; env" HELP_NBSP "%s%s]", o->help ? o->help : "",
                 o->key, def, envs, (o->flags & CM_OPT_RUNTIME) ? "; runtime" : "");
        help_item(fd, col, text);
        free(text);
    }
}

bool cm_conf_answer_info(const cm_conf_t *conf, const char *prog, const char *usage)
{
    if (conf->want_help) {
        cm_conf_print_help(conf, usage, 1);
        return true;
    }
    if (conf->want_version) {
        printf("%s %s (commit %s)\n", prog, FLASHGATE_VERSION, cm_build_commit);
        fflush(stdout);
        return true;
    }
    return false;
}

void cm_conf_print_effective(const cm_conf_t *conf, int fd)
{
    for (const cm_opt_t *o = conf->opts; o->key; o++) {
        char *val = cm_xmalloc(TEXT_MAX);
        char where[700];
        cm_conf_format(conf, o, val, TEXT_MAX);
        cm_conf_describe_source(conf, o, where, sizeof(where));
        bool quote = val[0] == '\0' || strchr(val, ' ') || strchr(val, '#');
        outf(fd, "%s = %s%s%s  # %s\n", o->key, quote ? "\"" : "", val, quote ? "\"" : "", where);
        free(val);
    }
}

/* Writes the default of `o` as a JSON value. */
static void sample_value(const cm_opt_t *o, int fd)
{
    const char *def = o->def ? o->def : "";
    json_t *j = NULL;
    uint64_t u;
    switch (o->type) {
    case CM_OPT_UINT:
        if (parse_uint(def, &u) == 0 && u <= (uint64_t)INT64_MAX)
            j = json_integer((json_int_t)u);
        break;
    case CM_OPT_MILLI:
        /* a number, written exactly as the table has it */
        if (parse_milli(def, &u) == 0) {
            char b[64];
            fmt_milli(u, b, sizeof(b));
            outf(fd, "%s", b);
            return;
        }
        break;
    case CM_OPT_BOOL: {
        bool b = false;
        parse_bool(def, &b);
        j = json_boolean(b);
        break;
    }
    case CM_OPT_KV: {
        char norm[TEXT_MAX] = "";
        j = json_object();
        if (kv_normalise(def, true, norm, sizeof(norm)) == NULL) {
            for (char *p = norm; *p;) {
                char *nl = strchr(p, '\n');
                *nl = '\0';
                char *eq = strchr(p, '=');
                *eq = '\0';
                json_object_set_new(j, p, json_string(eq + 1));
                p = nl + 1;
            }
        }
        break;
    }
    default:
        break;
    }
    if (!j)
        j = json_string(def);
    char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    if (s)
        outf(fd, "%s", s);
    free(s);
    json_decref(j);
}

static void sample_comment(const cm_conf_t *conf, const cm_opt_t *o, const char *indent, int fd)
{
    char flag[160], env[160], mv[160], range[200] = "";
    outf(fd, "%s// %s: %s\n", indent, o->key, o->help ? o->help : "");
    if ((o->type == CM_OPT_UINT || o->type == CM_OPT_MILLI || o->type == CM_OPT_SIZE ||
         o->type == CM_OPT_MS) &&
        (o->min || o->max)) {
        char lo[64], hi[64];
        fmt_num(o, o->min, lo, sizeof(lo));
        fmt_num(o, o->max, hi, sizeof(hi));
        if (o->max)
            snprintf(range, sizeof(range), " %s..%s;", lo, hi);
        else
            snprintf(range, sizeof(range), " min %s;", lo);
    }
    cm_conf_flag_name(o, o->alias != NULL, flag, sizeof(flag));
    if (!cm_conf_env_name(o, conf->env_prefix, true, env, sizeof(env)))
        cm_conf_env_name(o, conf->env_prefix, false, env, sizeof(env));
    char line[1024];
    snprintf(line, sizeof(line), "flag --%s %s; env %s;%s%s%s", flag, metavar(o, mv, sizeof(mv)),
             env, range, (o->flags & CM_OPT_RUNTIME) ? " changeable at run time;" : "",
             (o->flags & CM_OPT_SECRET) ? " secret: better set in the environment;" : "");
    line[strlen(line) - 1] = '\0'; /* the last ';' */
    outf(fd, "%s//   %s\n", indent, line);
}

void cm_conf_print_sample(const cm_conf_t *conf, int fd)
{
    size_t n = opt_count(conf->opts);
    bool *done = cm_xcalloc(n + 1, sizeof(bool));
    /* The flat-key example is one of this table's own keys at its default: the
     * gateway's limits.user_rps in flashgate-settle's sample would be refused
     * there as an unknown key. */
    const cm_opt_t *flat = NULL;
    for (size_t i = 0; i < n && !flat; i++)
        if (strchr(conf->opts[i].key, '.') && !(conf->opts[i].flags & CM_OPT_SECRET) &&
            conf->opts[i].type != CM_OPT_KV)
            flat = &conf->opts[i];
    outf(fd, "// %s sample configuration, generated from the option table: every key at its\n"
             "// default. Later sources win: this file < environment < flags.\n",
         conf->prog ? conf->prog : "sample");
    if (flat) {
        outf(fd, "// Keys may also be written flat (\"%s\": ", flat->key);
        sample_value(flat, fd);
        outf(fd, ").\n");
    }
    outf(fd, "// Whole-line comments start with // or #.\n{\n");
    bool first_section = true;
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        const char *key = conf->opts[i].key;
        const char *dot = strchr(key, '.');
        if (!dot) {
            done[i] = true;
            outf(fd, "%s\n", first_section ? "" : ",\n");
            sample_comment(conf, &conf->opts[i], "  ", fd);
            outf(fd, "  \"%s\": ", key);
            sample_value(&conf->opts[i], fd);
            first_section = false;
            continue;
        }
        size_t plen = (size_t)(dot - key);
        outf(fd, "%s  \"%.*s\": {\n", first_section ? "" : ",\n", (int)plen, key);
        first_section = false;
        bool first = true;
        for (size_t j = i; j < n; j++) {
            const char *k2 = conf->opts[j].key;
            if (done[j] || strncmp(k2, key, plen) != 0 || k2[plen] != '.')
                continue;
            done[j] = true;
            outf(fd, "%s", first ? "" : ",\n");
            first = false;
            sample_comment(conf, &conf->opts[j], "    ", fd);
            outf(fd, "    \"%s\": ", k2 + plen + 1);
            sample_value(&conf->opts[j], fd);
        }
        outf(fd, "\n  }");
    }
    outf(fd, "\n}\n");
    free(done);
}
