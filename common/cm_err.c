#include "common/cm_err.h"

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
