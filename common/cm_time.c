#include "common/cm_time.h"
#include "common/cm_err.h"

#include <ctype.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_bool fake_on;
static _Atomic uint64_t fake_mono;
static _Atomic int64_t fake_wall;

void cm_time_set_fake(bool on, uint64_t fake_mono_ns, int64_t fake_wall_ms)
{
    atomic_store(&fake_mono, fake_mono_ns);
    atomic_store(&fake_wall, fake_wall_ms);
    atomic_store(&fake_on, on);
}

void cm_time_advance_fake(uint64_t ns)
{
    atomic_fetch_add(&fake_mono, ns);
    atomic_fetch_add(&fake_wall, (int64_t)(ns / 1000000));
}

uint64_t cm_mono_ns(void)
{
    if (atomic_load_explicit(&fake_on, memory_order_relaxed))
        return atomic_load(&fake_mono);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t cm_mono_us(void)
{
    return cm_mono_ns() / 1000u;
}

uint64_t cm_mono_ms(void)
{
    return cm_mono_ns() / 1000000u;
}

/* Fault-injection seam (tests only): a step of the wall clock without touching
 * the system's. Set at start from debug.wall_offset_ms and at run time by the
 * admin API's PUT /admin/v1/debug/clock, both only with the debug routes on. */
static _Atomic int64_t wall_offset;

void cm_time_set_wall_offset(int64_t offset_ms)
{
    atomic_store(&wall_offset, offset_ms);
}

int64_t cm_time_wall_offset(void)
{
    return atomic_load_explicit(&wall_offset, memory_order_relaxed);
}

int64_t cm_wall_ms(void)
{
    if (atomic_load_explicit(&fake_on, memory_order_relaxed))
        return atomic_load(&fake_wall);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + cm_time_wall_offset();
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (H. Hinnant). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int cm_time_parse_rfc3339(const char *s, int64_t *out_ms)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    int y, mo, d, h, mi, sec, ms = 0;
    if (!s || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return CM_EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return CM_EINVAL;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return CM_EINVAL;
    if (*p == '.') {
        p++;
        int n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n < 3)
                ms = ms * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return CM_EINVAL;
        for (; n < 3; n++)
            ms *= 10;
    }
    int off_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return CM_EINVAL;
        off_min = sign * (oh * 60 + om);
    } else {
        return CM_EINVAL;
    }
    if (*p != '\0')
        return CM_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return CM_EINVAL;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return CM_EINVAL;
    if (sec == 60)
        sec = 59; /* leap second: clamp */
    int64_t days = days_from_civil(y, mo, d);
    int64_t t = ((days * 24 + h) * 60 + mi) * 60 + sec - (int64_t)off_min * 60;
    *out_ms = t * 1000 + ms;
    return 0;
}

size_t cm_time_format_rfc3339(int64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return n < 0 ? 0 : (size_t)n;
}
