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

/* Frees and NULLs (HAProxy ha_free, Varnish FREE_OBJ). */
#define CM_FREE(p)                                                                                 \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

#define CM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
