/*
 * The yield-point hook (cm_yield.h).
 */
#include "common/cm_yield.h"

#include <stddef.h>

cm_yield_fn cm_yield_hook = NULL;

void cm_yield_set(cm_yield_fn fn)
{
    cm_yield_hook = fn;
}
