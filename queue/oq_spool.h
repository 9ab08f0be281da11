/*
 * The durable order spool: a local write-ahead log in <data-dir>/spool/ that
 * holds every accepted order from before its 202 goes out until it is
 * released (relayed to Kafka and, with the embedded broker, settled).
 *
 * Files are segments "spool-<16 hex digits>.log" of framed records
 * (length, CRC-32C, type, payload); a torn or corrupt tail is detected on
 * open and cut off. Records: ORDER (an accepted order) and EVENT (a small
 * JSON event appended by the gateway, e.g. a cancellation, replayed on start).
 * The release point is kept in <data-dir>/spool/released (a position,
 * written atomically); segments wholly before it are deleted.
 *
 * Durability: OQ_DURABILITY_WRITE returns once the record is in the kernel's
 * page cache (survives a process crash, kill -9); OQ_DURABILITY_FSYNC makes
 * the caller also call oq_spool_sync_to() (fdatasync) up to its own records
 * before answering, which survives power loss. In durability write a rolled segment is fdatasynced
 * in the background by the preparer thread, waited for by nobody, so that a
 * power loss tears the spool's tail and not its middle (one whose fdatasync
 * failed is written again before the next try, and the open writes again and
 * fdatasyncs what is not wholly released: pages a failed fdatasync dropped
 * are never taken as written). Such a write-again goes to a new file renamed
 * over the segment once it is durable, so that its own failure drops none of
 * the segment's pages. In durability write the spool also keeps in memory the
 * bytes it appended that no fdatasync covered yet (the preparer fdatasyncs the
 * current segment every 4 MiB, or half a segment if less, and lets them go):
 * after a failed fdatasync the kernel may evict the pages it dropped, so the
 * segment is written again from that copy, never from a read-back. Past 64 MiB
 * of such bytes (the preparer's fdatasyncs fall behind) orders are refused
 * with CM_EBUSY until it catches up. Appends are one write(2) each and may come from
 * several threads at once (O_APPEND; records never interleave). A roll to the
 * next segment swaps in a spare that a thread of the spool created ahead (the
 * directory fsync that makes its name durable happens there, never on the
 * append path).
 */
#ifndef OQ_SPOOL_H
#define OQ_SPOOL_H

#include "queue/oq_fs.h"
#include "queue/oq_order.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct oq_spool oq_spool_t;

typedef enum { OQ_DURABILITY_WRITE = 0, OQ_DURABILITY_FSYNC = 1 } oq_durability_t;

/* A position in the spool: segment number and byte offset in it. */
typedef struct oq_pos {
    uint64_t seg;
    uint64_t off;
} oq_pos_t;

typedef enum { OQ_REC_ORDER = 1, OQ_REC_EVENT = 2 } oq_rec_type_t;

typedef struct oq_spool_opts {
    const char *dir;          /* <data-dir>/spool; created if missing */
    oq_durability_t durability;
    uint64_t segment_bytes;   /* roll to a new segment past this size */
    uint64_t max_bytes;       /* unreleased bytes past which appends fail with CM_EBUSY */
    bool read_only;           /* inspect only (flashgate-spool): no recovery cut, no lock,
                                 appends and releases fail with CM_EINVAL; segments are
                                 read into memory, not mapped (a live writer may cut them) */
    const oq_fs_ops_t *fs;    /* file operations; NULL = the real ones (oq_fs_posix) */
    bool stepped;             /* no preparer thread: its work (the spare segment, the flush
                                 of rolled ones) happens in oq_spool_step() calls (the
                                 simulator's one thread); a roll without a spare creates it */
} oq_spool_opts_t;

/* Opens (recovering a torn tail). Returns 0 or a negative cm_err_t with a reason. */
int oq_spool_open(oq_spool_t **out, const oq_spool_opts_t *opts, char *errbuf, size_t errlen);
void oq_spool_close(oq_spool_t *sp);

/*
 * Encodes and appends orders as ORDER records with one write(2), all or
 * nothing: returns 0, CM_EBUSY (past max_bytes, or durability write's copy of
 * what no fdatasync covered yet past its cap: nothing written), or CM_EIO
 * (a short write is cut back; if that cut fails, only a single record is
 * sure to be torn and dropped at the next open: callers with n > 1 whose
 * records answer clients use oq_spool_append_batch). Thread-safe.
 * Does not fsync: in fsync durability, call oq_spool_sync() before answering
 * (callers that answer clients use oq_spool_append_batch, whose end lets
 * oq_spool_sync_to wait for their own records only).
 */
int oq_spool_append(oq_spool_t *sp, const oq_order_t *orders, size_t n);
/*
 * The same for orders that do not lie in one array (a worker's batch of
 * requests, each answered by its own record), and not all or nothing:
 * *kept is set to how many leading orders are in the spool whatever the
 * result (n on 0). On CM_EBUSY those that fit under max_bytes were written;
 * on CM_EIO after a short write the whole records that reached the file are
 * kept (as durable as any other) and only the torn tail is cut (if that cut
 * fails too, the spool refuses appends and a restart's recovery drops the torn
 * tail). So orders [0, *kept) are written and the others are not, whatever
 * happened. *end (if not NULL) is set to where order *kept - 1's record ends,
 * {0,0} when *kept is 0: in fsync durability those orders are accepted once
 * oq_spool_sync_to(sp, *end) returns 0. Thread-safe.
 */
int oq_spool_append_batch(oq_spool_t *sp, const oq_order_t *const *orders, size_t n,
                          size_t *kept, oq_pos_t *end);
/*
 * Would an ORDER record for o fit now, after `pending` bytes the caller holds
 * for records not yet appended (oq_spool_order_bound of each)? Returns 0,
 * CM_EBUSY (past max_bytes) or CM_EIO (the spool refuses appends after a
 * failed write or fsync). An upper bound of the record's size is used, so a 0
 * here and a CM_EBUSY from the append that follows happen only when other
 * threads appended in between. The buy path asks before it reserves stock, so
 * a full spool costs no reserve. Thread-safe, never blocks beyond the append
 * mutex.
 */
int oq_spool_room(oq_spool_t *sp, const oq_order_t *o, uint64_t pending);
/* The upper bound of o's ORDER record that oq_spool_room counts. */
size_t oq_spool_order_bound(const oq_order_t *o);
/*
 * Appends one EVENT record (payload: a JSON object text). Events may go past
 * max_bytes by an eighth of it (a release must fit when orders filled the
 * spool). Returns 0, CM_EBUSY, CM_EIO or CM_EINVAL. Thread-safe.
 */
int oq_spool_append_event(oq_spool_t *sp, const char *json, size_t len);
/*
 * oq_spool_append_event, and on 0 sets *end to where the record ends (for
 * oq_spool_commit_to); on an error *end is {0,0}. Thread-safe.
 */
int oq_spool_append_event_end(oq_spool_t *sp, const char *json, size_t len, oq_pos_t *end);
/*
 * fdatasync of the records before `upto` (an end an append returned): returns
 * 0 once they are durable, CM_EIO if an fdatasync failed before they were
 * (sticky, see oq_spool_scan: such records are cut and never relayed). A
 * round that made them durable answers 0 even when a later round failed:
 * a durable record is relayed, settled and replayed at a restart, so its
 * client must never hear that it is not confirmed. Concurrent callers share
 * one fdatasync (group commit): a caller waits for the round in progress when
 * that round covers `upto`, and leads the next one when it does not. Blocks
 * (ms): call from a thread that serves no HTTP; after a CM_EIO it never
 * blocks (it answers at once, for any position), so a batch whose end got
 * CM_EIO may ask again for each of its records' ends. Out of file
 * descriptors (EMFILE, ENFILE: the sync opens the rolled segments by name
 * and dups the current one) is no disk failure: nothing was synced, so
 * nothing is known lost; the round is tried again 1 to 100 ms apart until a
 * descriptor is free, and the call blocks meanwhile (stats.sync_fd_waits).
 * Thread-safe.
 */
int oq_spool_sync_to(oq_spool_t *sp, oq_pos_t upto);
/*
 * oq_spool_sync_to the spool's current end (everything appended before the
 * call), except that once any fdatasync failed it returns CM_EIO at once,
 * whether or not the caller's own records were durable before it: callers
 * that hold their records' end use oq_spool_sync_to. Thread-safe; blocks as
 * oq_spool_sync_to.
 */
int oq_spool_sync(oq_spool_t *sp);

/*
 * Makes the records before `upto` (an end an append returned) visible to
 * readers: in fsync durability oq_spool_sync_to(sp, upto) (blocks; 0 once
 * they are durable, even if a later round, another thread's, failed; CM_EIO
 * if they were not made durable), in write durability 0 at once. For writers
 * off the worker loops that hold their own records' end (the lottery's
 * winners, waitlist promotions, releases, cancels). Thread-safe.
 */
int oq_spool_commit_to(oq_spool_t *sp, oq_pos_t upto);

/* One record met while reading. `order` is set for ORDER, `event` for EVENT. */
typedef struct oq_rec {
    oq_rec_type_t type;
    oq_pos_t pos;   /* where the record starts */
    oq_pos_t next;  /* where the following record starts */
    const oq_order_t *order;
    const char *event;
    size_t event_len;
} oq_rec_t;

/*
 * Reads records from `from` (use oq_spool_released() for "everything not yet
 * released", or {0,0} for everything still on disk) up to the current end,
 * calling fn for each; fn returns 0 to go on, non-zero to stop. Returns the
 * number of records read, or a negative cm_err_t. Thread-safe against
 * concurrent appends (reads only what was complete when it began each segment).
 * In fsync durability a writable spool shows only records an fdatasync
 * confirmed (oq_spool_sync): the relay never sends an order before its client
 * could be told it is safe, and after a failed fdatasync the unconfirmed
 * records are cut off the spool (their clients hear 503 "not confirmed").
 */
long oq_spool_scan(oq_spool_t *sp, oq_pos_t from, int (*fn)(const oq_rec_t *rec, void *ctx),
                   void *ctx);

/* The release point: everything before it is released. Thread-safe. */
oq_pos_t oq_spool_released(oq_spool_t *sp);
/*
 * Moves the release point forward to `upto` (never backwards), persists it
 * atomically, and deletes segments wholly before it. If the point cannot be
 * written (a full disk), those segments are deleted first and the write tried
 * once more: they hold only records that are done, and they are the space a
 * spool that filled its disk can give back. Returns 0 or CM_EIO. Thread-safe.
 */
int oq_spool_release(oq_spool_t *sp, oq_pos_t upto);
/*
 * As oq_spool_release, but keeps the wholly released segments on disk (a
 * scan from {0,0} still reads them, e.g. to rebuild the memory inventory);
 * they are not counted in unreleased_bytes, and the next oq_spool_release
 * deletes them. Returns 0, CM_EINVAL (past the end, read-only) or CM_EIO.
 * Thread-safe.
 */
int oq_spool_release_keep(oq_spool_t *sp, oq_pos_t upto);

/*
 * A stepped spool (opts.stepped): does one round of the preparer's work
 * (create the spare segment, or fdatasync segments rolled in durability
 * write). Returns true if it did something (call again), false when idle or
 * not stepped. Never blocks on a condition variable. Owner's thread only.
 */
bool oq_spool_step(oq_spool_t *sp);

/* Stats: bytes and records not yet released, segments on disk. Thread-safe. */
typedef struct oq_spool_stats {
    uint64_t unreleased_bytes;
    uint64_t appended_records;
    uint64_t segments;
    oq_pos_t end;
    oq_pos_t released;
    oq_pos_t synced;          /* fsync durability: readers see records before it (else = end) */
    uint64_t rolls;           /* segment rolls */
    uint64_t rolls_inline;    /* rolls that had to create the segment on the append path
                                 (no spare was ready: appends faster than the preparer) */
    bool spare_ready;         /* the next segment is created and waiting */
    uint64_t segment_flushes; /* durability write: rolled segments fdatasynced off the append
                                 path (by the preparer thread) */
    uint64_t syncs;           /* oq_spool_sync(), _sync_to() calls that returned 0 */
    uint64_t fsyncs;          /* fdatasync rounds they needed (group commit: fewer), and
                                 the open's in fsync durability */
    uint64_t sync_fd_waits;   /* sync rounds put off because no file could be opened
                                 (EMFILE, ENFILE): tried again, not a disk failure */
    uint64_t cut_failures;    /* cuts of unsynced records after a failed fdatasync that
                                 could not be made durable: those records may come back
                                 at the next start */
    uint64_t copy_bytes;      /* durability write: bytes appended that no fdatasync covered
                                 yet, kept in memory to write again after a failed one */
    uint64_t copy_syncs;      /* durability write: the preparer's fdatasyncs of the current
                                 segment that let their copy go */
    uint64_t copy_rewrites;   /* segments written again from that copy (a failed fdatasync) */
} oq_spool_stats_t;
void oq_spool_stats(oq_spool_t *sp, oq_spool_stats_t *out);

/* -1, 0 or 1 as a is before, at or after b. Thread-safe. */
int oq_pos_cmp(oq_pos_t a, oq_pos_t b);

/* Test seam: the next fdatasync round reports failure (as a disk error would). */
void oq__spool_fail_next_sync(oq_spool_t *sp);
/* Test seam: the next append longer than `bytes` writes only its first `bytes`
 * (as a full disk would), and with cut_fails the ftruncate that undoes it fails. */
void oq__spool_short_next_write(oq_spool_t *sp, size_t bytes, bool cut_fails);

/* Module-private (exposed for the unit test): CRC-32C (Castagnoli) of buf,
 * continuing from crc (start with 0). SSE4.2 when the CPU has it. Thread-safe. */
uint32_t oq__crc32c(uint32_t crc, const void *buf, size_t len);
/* Test seam: oq__crc32c uses its table code from now on, whatever the CPU
 * has, so a test can check the fallback on a machine with SSE4.2.
 * Single-threaded: before any other thread computes a CRC. */
void oq__crc32c_force_table(void);

#endif
