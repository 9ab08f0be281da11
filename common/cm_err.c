#include "common/cm_err.h"

#include <stdarg.h>
#include <stdio.h>

const char *cm_strerror(int err)
{
    switch (err) {
    case CM_OK:
        return "success";
#define XX(n, v, s)                                                                                \
    case CM_E##n:                                                                                  \
        return s;
        CM_ERR_MAP(XX)
#undef XX
    }
    return "unknown error";
}

const char *cm_errname(int err)
{
    switch (err) {
    case CM_OK:
        return "CM_OK";
#define XX(n, v, s)                                                                                \
    case CM_E##n:                                                                                  \
        return "CM_E" #n;
        CM_ERR_MAP(XX)
#undef XX
    }
    return "CM_EUNKNOWN";
}

void cm_errbuf_set(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (!errbuf || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}
