/*
 * The planted-bug switch (cm_plant.h). Compiled to nothing but a type name
 * outside the plant build.
 */
#include "common/cm_plant.h"

#ifdef FLASHGATE_PLANTS
#include <string.h>

cm_plant_t cm_plant_active = CM_PLANT_NONE;

const char *const cm_plant_names[CM_PLANT_COUNT] = {
    [CM_PLANT_NONE] = "none",
    [CM_PLANT_INV_CAS_ONE_MORE] = "inv_cas_one_more",
    [CM_PLANT_INV_IDEM_RESERVES] = "inv_idem_reserves",
    [CM_PLANT_INV_RELEASE_TWICE] = "inv_release_twice",
    [CM_PLANT_INV_REPLAY_NO_MARK] = "inv_replay_no_mark",
    [CM_PLANT_INV_RESTOCK_LOST] = "inv_restock_lost",
    [CM_PLANT_SPOOL_RELEASE_EARLY] = "spool_release_early",
    [CM_PLANT_SPOOL_SKIP_LAST_SEG] = "spool_skip_last_seg",
    [CM_PLANT_SPOOL_PAST_POINT] = "spool_past_point",
    [CM_PLANT_SPOOL_SYNC_IGNORED] = "spool_sync_ignored",
    [CM_PLANT_SPOOL_TEAR_KEPT] = "spool_tear_kept",
    [CM_PLANT_SETTLE_NO_DEDUPE] = "settle_no_dedupe",
    [CM_PLANT_SETTLE_CANCEL_SETTLED] = "settle_cancel_settled",
};

void cm_plant_set(cm_plant_t p)
{
    cm_plant_active = p;
}

int cm_plant_find(const char *name)
{
    for (int i = 0; i < CM_PLANT_COUNT; i++)
        if (strcmp(cm_plant_names[i], name) == 0)
            return i;
    return -1;
}
#else
typedef int cm_plant_unused_t; /* ISO C wants a declaration in every file */
#endif
