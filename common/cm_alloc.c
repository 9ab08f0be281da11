#include "common/cm_alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void oom(size_t n)
{
    char buf[96];
    int len = snprintf(buf, sizeof(buf), "fatal: out of memory allocating %zu bytes\n", n);
    if (len > 0 && write(2, buf, (size_t)len) < 0) {
        /* nothing more we can do */
    }
    abort();
}

void *cm_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *cm_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        oom(nmemb * size);
    return p;
}

void *cm_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *cm_xstrdup(const char *s)
{
    return cm_xstrndup(s, strlen(s));
}

char *cm_xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = cm_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

#define HUGE_PAGE ((size_t)2 << 20)

void *cm_xmap_huge(size_t n, size_t *len)
{
    void *p = cm_map_huge(n, len);
    if (!p)
        oom(n);
    return p;
}

void *cm_map_huge(size_t n, size_t *len)
{
    if (n <= HUGE_PAGE / 4) {
        /* a small table gains nothing from a huge page, which its prefault would
         * zero and touch whole (2 MiB: a status table of a few thousand orders,
         * made again at each of the simulator's restarts) */
        size_t page = (size_t)sysconf(_SC_PAGESIZE), want = (n + page - 1) / page * page;
        void *p = mmap(NULL, want ? want : page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        *len = want ? want : page;
        return p;
    }
    size_t want = (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    /* one huge page more, so that an aligned start fits; the ends are given back */
    char *p = mmap(NULL, want + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *a = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (a > p)
        munmap(p, (size_t)(a - p));
    if (a + want < p + want + HUGE_PAGE)
        munmap(a + want, (size_t)(p + want + HUGE_PAGE - (a + want)));
    (void)madvise(a, want, MADV_HUGEPAGE); /* advice: EINVAL where THP is not built in */
    *len = want;
    return a;
}

void cm_unmap(void *p, size_t len)
{
    if (p)
        munmap(p, len);
}

void cm_prefault(void *p, size_t n)
{
    volatile char *c = p;
    for (size_t i = 0; i < n; i += 4096)
        c[i] = 0;
}
