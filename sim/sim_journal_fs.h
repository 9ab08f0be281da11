/*
 * The journal's file calls (common/cm_journal.h, cm_journal_fs_t) on the
 * simulated disk (sim_disk.h): the real journal, and the room's store over
 * it, run on the disk sim_disk_use selected, with its torn writes, failed
 * fdatasyncs and power cuts. The disk has one directory: a path's last
 * component names the file, the directories before it are that one. One
 * simulated thread.
 */
#ifndef SIM_JOURNAL_FS_H
#define SIM_JOURNAL_FS_H

#include "common/cm_journal.h"

/* The table (static): pass it to cm_journal_set_fs, and NULL back after the run. */
const cm_journal_fs_t *sim_journal_fs(void);

#endif
