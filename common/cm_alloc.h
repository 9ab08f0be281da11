/*
 * Allocation that aborts on out-of-memory (redis zmalloc, h2o). Admission
 * control and bounded tables are the defence against memory exhaustion, not
 * NULL checks sprinkled through the hot path.
 */
#ifndef CM_ALLOC_H
#define CM_ALLOC_H

#include <stddef.h>

void *cm_xmalloc(size_t n);
void *cm_xcalloc(size_t nmemb, size_t size);
void *cm_xrealloc(void *p, size_t n);
char *cm_xstrdup(const char *s);
char *cm_xstrndup(const char *s, size_t n);

/*
 * A large table that every request probes at random (the known orders, the rate limiter's
 * buckets): zeroed anonymous memory aligned to 2 MiB and advised for transparent huge
 * pages (madvise(MADV_HUGEPAGE), as memcached's -L asks for large pages for its slabs).
 * At 4 KiB pages a 20-30 MiB table is thousands of pages and every probe is a TLB miss;
 * in a VM each miss walks two page tables. Under a CPU quota the caches are cold at every
 * slice and the walks showed as the largest user-space cost of an accepted order
 * (PROFILE_CAP=1000/20000 python3 bench/profile.py build acc perf 4 64). Where THP is
 * "never" the advice is ignored and the table is plain 4 KiB pages, as is a table of
 * 512 KiB or less (a few TLB entries; a huge page would be 2 MiB to zero). Aborts on
 * out-of-memory like cm_xmalloc; *len gets the mapped length for cm_unmap.
 */
void *cm_xmap_huge(size_t n, size_t *len);
void *cm_map_huge(size_t n, size_t *len); /* the same, NULL on out-of-memory */
void cm_unmap(void *p, size_t len);

/*
 * Writes one byte of every page of [p, p+n): a table made resident at start,
 * so that RSS does not creep up a page per new key over a sale's first hours
 * (the soak saw that as growth), no request pays a page fault (a 4 KiB zeroing,
 * or 2 MiB with huge pages), and a machine without the memory fails at start,
 * not mid-sale.
 */
void cm_prefault(void *p, size_t n);

/* Frees and NULLs (HAProxy ha_free, Varnish FREE_OBJ). */
#define CM_FREE(p)                                                                                 \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

#define CM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
