/*
 * One framing, one recovery path and one upgrade for the append-only files
 * the product keeps, a journal per file: the waiting room's <sale>.room and
 * the registrations' <sale>.reg (cm_journal_t: appends from many threads, one
 * fdatasync for them all, compaction beside the appends), the lottery's
 * <sale>.log (cm_journal_attach, cm_journal_frame, cm_journal_lines_open).
 * A journal is the magic line CM_JOURNAL_MAGIC followed by frames:
 *
 *     "%08x %08x " length, CRC-32C, then the record's bytes, then "\n"
 *
 * the length is the record's (hex, lowercase), the CRC-32C (common/cm_crc32c.h)
 * covers the eight length digits and the record. A record may hold any bytes;
 * a text record without a newline keeps the file readable with grep and less.
 *
 * Recovery: the file is read frame by frame from the magic line. A frame that
 * is not whole or whose checksum fails (a write cut short, a block a power cut
 * zero-filled, pages a failed fdatasync dropped) is skipped up to the next
 * whole frame, found after a newline or a NUL (a false one passes the length,
 * the newline and the CRC-32C: about 1 in 2^32): a frame after a hole may have
 * been reported durable by a later fdatasync, after the one that failed. Bad
 * bytes with no whole frame after them are the torn tail: the file is cut
 * there. Both are logged with their offset and length. A file that starts
 * with a NUL is a journal whose magic line a power cut zero-filled (the
 * magic line is written unsynced with the first frames, and a later
 * fdatasync can succeed where theirs failed): its frames after the hole are
 * read; it is a line log only if it has no whole frame and holds more than NULs.
 *
 * Upgrade: a file that does not start with the magic line is a line log of the
 * format before it (one record per line): cm_journal_upgrade_lines rewrites it
 * framed, one record per whole line, its torn last line dropped, atomically
 * (beside it, fdatasync'd, renamed over it, the directory fsync'd).
 *
 * Compaction replaces the file the same way: its new content is written to
 * "<path>.tmp", fdatasync'd, renamed over the file and the directory fsync'd;
 * a crash before the rename leaves the old file whole and a stale ".tmp" that
 * the next cm_journal_open removes, one after it leaves the new file whole.
 */
#ifndef CM_JOURNAL_H
#define CM_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#define CM_JOURNAL_MAGIC "flashgate journal 1\n"
#define CM_JOURNAL_MAGIC_LEN 20
/* A frame's bytes besides its record's: "%08x %08x " and "\n". */
#define CM_JOURNAL_FRAME_OVERHEAD 19
/* The longest record a journal holds; a longer length field is a bad frame. */
#define CM_JOURNAL_RECORD_MAX (1u << 20)

/* Frames rec (len bytes) into out: returns the frame's length (len +
 * CM_JOURNAL_FRAME_OVERHEAD), or 0 if it does not fit in cap or len is over
 * CM_JOURNAL_RECORD_MAX. Thread-safe. */
size_t cm_journal_frame(char *out, size_t cap, const void *rec, size_t len);

/* n bytes written at fd's offset (O_APPEND: its end), retried on EINTR and
 * short writes: what every journal writer uses. 0 or -1 (errno). */
int cm_journal_write_all(int fd, const void *buf, size_t n);

/* Called with each whole record in file order: rec is a copy of its len bytes
 * followed by a NUL, which the callee may modify; borrowed, valid until it returns. */
typedef void (*cm_journal_record_fn)(void *arg, char *rec, size_t len);

typedef struct cm_journal_scan {
    off_t size;      /* the file's length */
    off_t end;       /* the end of its last whole frame (0: no magic line whole) */
    size_t records;  /* whole frames read */
    size_t holes;    /* runs of bad bytes with a whole frame after them, skipped */
    off_t hole_bytes, first_hole;
    bool is_legacy;  /* does not start with the magic line: nothing was read */
} cm_journal_scan_t;

/* Reads the journal open at fd from its start (pread: fd's offset is not used)
 * and hands every whole frame's record to fn (NULL: none), skipping holes;
 * changes nothing. 0 or CM_EIO. Single-threaded per file. */
int cm_journal_scan(int fd, cm_journal_record_fn fn, void *arg, cm_journal_scan_t *out);

/* cm_journal_scan of a file held in memory (its n bytes at buf): the same
 * frames, holes and end. buf is borrowed; each record is handed to fn in place
 * (followed by a NUL written over its frame's newline, put back after fn
 * returns). For a file on a simulated disk (sim/sim_disk.h). 0. */
int cm_journal_scan_mem(char *buf, size_t n, cm_journal_record_fn fn, void *arg,
                        cm_journal_scan_t *out);

/* cm_journal_scan, then the file is cut at the end of its last whole frame
 * (logged with path, offset and the bytes cut; a torn magic line leaves it
 * empty; holes are logged and stay), and *len is its length. A file that is not framed (is_legacy) is left
 * as it is: CM_ECORRUPT. fd open for reading and writing. 0, CM_EIO or
 * CM_ECORRUPT. Single-threaded per file. */
int cm_journal_recover(int fd, const char *path, cm_journal_record_fn fn, void *arg,
                       off_t *len);

/* For a writer that keeps its own descriptor (fd open O_RDWR | O_APPEND):
 * cm_journal_recover with no callback, then a file left empty gets its magic
 * line (written, not synced: a torn one reads back as an empty journal, so the
 * writer's own fdatasync of its first frames covers it). *len: the file's
 * length. 0, CM_EIO or CM_ECORRUPT (a line log: left as it is).
 * Single-threaded per file. */
int cm_journal_attach(int fd, const char *path, off_t *len);

/* The upgrade: a file at path that is not empty and does not start with the
 * magic line is rewritten framed, a record per whole line (its newline not
 * kept), atomically (cm_journal_replace); a last line without its newline is
 * dropped and logged. Returns 1 if it converted the file (*records: the records
 * it wrote; records may be NULL), 0 if there was nothing to do (no file, an
 * empty one or a journal), CM_EIO (logged; the file is left as it was).
 * Single-threaded per file. */
int cm_journal_upgrade_lines(const char *path, size_t *records);

/* For a load that parses lines (a line log's grammar): cm_journal_upgrade_lines,
 * then cm_journal_recover, and every record followed by a newline, read from a
 * stream in memory (its fclose frees it). NULL for no file, an empty journal, or
 * one that cannot be converted or read (logged; left as it is, and
 * cm_journal_attach refuses a line log). Single-threaded per file. */
FILE *cm_journal_lines_open(const char *path);
/* cm_journal_lines_open, with the line hole (its newline added) where the scan
 * skipped a hole between whole frames: records were lost there (pages a failed
 * fdatasync dropped and the kernel evicted, a block a power cut zero-filled),
 * and a load that must not read the records after it as following the ones
 * before learns where. hole must be no line the log's writer writes but for such a
 * hole it carries over into a log it writes anew (gw_fair__log_sync). */
FILE *cm_journal_lines_open_holes(const char *path, const char *hole);

/* Replaces the file at path by the magic line and frames (n bytes of whole
 * frames, as cm_journal_frame writes them): written to "<path>.tmp",
 * fdatasync'd, renamed over path, the directory fsync'd. If fd_out, *fd_out is
 * the new file open for appends (O_RDWR | O_APPEND), else it is closed.
 * 0 or CM_EIO (logged; path is left as it was, the ".tmp" removed).
 * Single-threaded per file. */
int cm_journal_replace(const char *path, const void *frames, size_t n, int *fd_out);
/* The same atomic rewrite of a whole file that is not a journal (a JSON state
 * file): path holds exactly buf (n bytes), created with mode. 0 or CM_EIO
 * (logged; path is left as it was, or renamed and its directory's fsync failed:
 * not durable, a retry writes it again). Single-threaded per file. */
int cm_journal_replace_file(const char *path, const void *buf, size_t n, mode_t mode);

/* fsync of the directory that holds path: a new name, a removal or a rename
 * in it survives a power cut. 0 or CM_EIO. Thread-safe. */
int cm_journal_dir_sync(const char *path);

/* The small files beside the journals (a JSON state file, an id) read and
 * removed on the same disk (the table's), so that a power cut reaches them as
 * it does the journals. cm_journal_read_file: the whole file at path in *buf
 * (malloc'd, *len bytes and a NUL after them; the caller frees it). 0,
 * CM_ENOTFOUND (no file) or CM_EIO. cm_journal_remove: path unlinked and its
 * directory fsync'd, so that the removal survives a power cut (a file that is
 * not there is removed too). 0 or CM_EIO. cm_journal_mkdir: the directory at
 * path made (one that exists is made). 0 or CM_EIO. Thread-safe. */
int cm_journal_read_file(const char *path, char **buf, size_t *len);
int cm_journal_remove(const char *path);
int cm_journal_mkdir(const char *path, mode_t mode);

/* A growable run of frames: a batch of appends, or a compaction's image. */
typedef struct cm_journal_buf {
    char *p;
    size_t len, cap;
} cm_journal_buf_t;

/* Appends rec's frame (aborts on OOM). 0 or CM_EINVAL (over CM_JOURNAL_RECORD_MAX). */
int cm_journal_buf_add(cm_journal_buf_t *b, const void *rec, size_t len);
void cm_journal_buf_free(cm_journal_buf_t *b);

/*
 * One journal file, its fdatasync shared by every thread that appends to it
 * (a group commit). Appends are framed into a batch and written with one
 * write(2) (cm_journal_write, cm_journal_put); one fdatasync covers every
 * frame written before it started (cm_journal_sync_to), run with no lock held,
 * so appends go on meanwhile. A frame's place is its offset in the journal
 * counted from the first byte it ever held (a logical offset): a compaction
 * that rewrites the file keeps the offsets of the frames it copies, so an
 * offset a writer waits for stays right across it.
 *
 * A failed fdatasync may have dropped what it was for: Linux marks the pages
 * of a failed writeback clean, so they read back from the page cache (a
 * restart after a kill -9 sees them) and a later fdatasync succeeds without
 * writing them; a power loss then loses them. So after one, the journal is
 * dropped (cm_journal_dropped): no end that was not covered before it is
 * durable, and cm_journal_sync_to refuses such ends, until the file is
 * written again (cm_journal_compact_from from the writer's state, or
 * cm_journal_rewrite from its own frames). Those read the frames they copy
 * back from the file; if the kernel evicted the clean-marked pages, what reads
 * back is the disk's stale bytes (zeros, older ones), so every byte copied is
 * checked as it passes, frame by frame (length, CRC-32C, newline: recovery's
 * check, without its skipping), and a copy that is not whole frames fails the
 * rewrite (CM_EIO: the journal stays dropped). Only the holes open skipped are
 * copied as they are (holes_to): that part is scanned as open scanned it and
 * may hold no more hole bytes than open found.
 *
 * Thread safety: cm_journal_put, cm_journal_put_frames, cm_journal_sync_to,
 * cm_journal_lens, cm_journal_broken, cm_journal_dropped, cm_journal_rewrite
 * and cm_journal_compact_from may run on any threads at
 * once (j->mu, held for a write(2) or a pread of the tail, never across an
 * fdatasync, an image's write or a directory fsync). cm_journal_append,
 * cm_journal_write, cm_journal_sync and cm_journal_compact are one writer's:
 * their caller serializes them against every other call. cm_journal_open and
 * cm_journal_close run alone (no other call on j before or after them).
 */
typedef struct cm_journal {
    pthread_mutex_t mu; /* every field below but path */
    pthread_cond_t cv;  /* an fdatasync's end */
    int fd;            /* -1: closed, or a failed cut-off of a short write */
    char *path;
    off_t len;         /* the logical end of the last whole frame written */
    off_t delta;       /* logical offset - the file's offset (a compaction's shift) */
    off_t synced_len;  /* what an fdatasync of this process covered (logical) */
    unsigned gen;      /* a new file (a compaction's): a sync of the old one covers none of it */
    unsigned failures; /* failed fdatasyncs: one while a sync waited may have been its own */
    bool dropped;      /* awaits a rewrite (cm_journal_dropped) */
    /* open skipped holes before this logical end (0: none), hole_bytes of them:
     * a compaction copies those as they are and checks the rest frame by frame */
    off_t holes_to, hole_bytes;
    bool syncing;      /* an fdatasync runs (without mu); cv: its end */
    /* the directory entry is fsync'd by the next sync: a new file's name, a
     * compaction's rename, or a file a crash left unsynced survives a power cut */
    bool dir_unsynced;
    bool sync_hold; /* a compaction syncs the last frames it copied: no sync starts */
    cm_journal_buf_t batch; /* frames appended, not yet written */
} cm_journal_t;

/*
 * The file calls every function of this file makes, as a table: the seam
 * through which the simulator (sim/sim_journal_fs.h) runs the real journal,
 * and the stores over it, on a simulated disk that tears writes, fails
 * fdatasync and loses what was not synced at a power cut. Each entry has the
 * POSIX call's signature and contract (-1 with errno); open takes a path
 * (O_DIRECTORY: a directory, for its fsync), dup is fcntl(F_DUPFD_CLOEXEC).
 * Descriptors are the table's: a journal passes them back only to it.
 */
typedef struct cm_journal_fs {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    int (*dup)(int fd);
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    ssize_t (*write)(int fd, const void *buf, size_t n);
    int (*ftruncate)(int fd, off_t len);
    int (*fstat)(int fd, struct stat *st);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd); /* a directory's */
    int (*rename)(const char *from, const char *to);
    int (*unlink)(const char *path);
    int (*mkdir)(const char *path, mode_t mode);
} cm_journal_fs_t;

/* Every journal's calls go through fs from now on (NULL: the real calls, the
 * table every product binary uses). Also sets cm_journal__datasync to its
 * fdatasync. Set before any journal is opened, and never while one is in use
 * on another thread. */
void cm_journal_set_fs(const cm_journal_fs_t *fs);
/* The table in force: for a store that opens, renames or removes its
 * journal's file itself (gw_room_store.c), so that it acts on the same disk. */
const cm_journal_fs_t *cm_journal_fs(void);

/* Every fdatasync of a journal: the table's (cm_journal_set_fs), and a test's
 * fault seam (a test sets it after the table, and puts fdatasync back). */
extern int (*cm_journal__datasync)(int fd);

/* Upgrade a line log of the format before the journal at open (cm_journal_upgrade_lines). */
#define CM_JOURNAL_UPGRADE_LINES 1u
/* A new or empty file's magic line is written, not synced, and its directory
 * not fsync'd at open: the first cm_journal_sync_to covers both (an open under
 * a lock the worker loops wait for makes no fdatasync). */
#define CM_JOURNAL_DEFER_SYNC 2u
/* Records found at open are dropped (cm_journal_dropped) until a rewrite: a
 * process before this one may have had an fdatasync of them fail, and no
 * fdatasync of this one writes what that one dropped. */
#define CM_JOURNAL_REWRITE_FOUND 4u

/* Opens (creates) the journal at path: removes a stale "<path>.tmp", upgrades a
 * line log if flags has CM_JOURNAL_UPGRADE_LINES, reads every record into fn
 * (NULL: none) and cuts a bad tail (cm_journal_recover); a new or empty file
 * gets its magic line, fdatasync'd, and its directory fsync'd (unless
 * CM_JOURNAL_DEFER_SYNC). Nothing it found is taken as durable (a crash may
 * have left it in the page cache only): the first sync covers it, and the
 * directory (with CM_JOURNAL_REWRITE_FOUND, the first after a rewrite). 0,
 * CM_EIO or CM_ECORRUPT (a file not framed, without the upgrade flag); errbuf
 * says why. With CM_JOURNAL_REWRITE_FOUND also CM_EIO while the file reads
 * back otherwise than the last cm_journal_lines_open of path read it (pages a
 * failed fdatasync dropped, evicted in between: the rewrite would make durable
 * what the caller's state did not read), until a load reads it again or
 * cm_journal_replace writes it anew. On failure j holds nothing to close. */
int cm_journal_open(cm_journal_t *j, const char *path, unsigned flags, cm_journal_record_fn fn,
                    void *arg, char *errbuf, size_t errlen);
/* Adds a record to the batch (no I/O). 0 or CM_EINVAL (too long). One writer. */
int cm_journal_append(cm_journal_t *j, const void *rec, size_t len);
/* Writes the batch with one write(2) at the file's end; a short write is cut
 * back off the file (if that fails too, the journal is broken: every later call
 * is CM_EIO). The batch is emptied either way. 0 or CM_EIO. One writer. */
int cm_journal_write(cm_journal_t *j);
/* cm_journal_write, then cm_journal_sync_to its end. 0 or CM_EIO. One writer. */
int cm_journal_sync(cm_journal_t *j);
/* One record written as one frame with one write(2) (a short one cut back as
 * cm_journal_write does); *end (may be NULL): the logical offset the caller
 * passes to cm_journal_sync_to for it. 0, CM_EINVAL (too long) or CM_EIO.
 * Thread-safe; the order of two puts is the order the caller's lock gives them. */
int cm_journal_put(cm_journal_t *j, const void *rec, size_t len, off_t *end);
/* cm_journal_put of n bytes of whole frames (a batch built with
 * cm_journal_buf_add), with one write(2). Thread-safe. */
int cm_journal_put_frames(cm_journal_t *j, const cm_journal_buf_t *frames, off_t *end);
/* Durable through end (a logical offset from cm_journal_put, or the end
 * cm_journal_lens gave): returns 0 at once if an fdatasync covered it (and the
 * directory is synced); else waits for the one running, if any, and looks
 * again; else runs one itself, without j->mu, for every frame written so far
 * (one at a time: the callers that came while one ran share the next). CM_EIO if one of them
 * failed after this call started (a failed fdatasync may drop the pages it was
 * for: it is never retried into a success for the same waiter), the journal
 * is broken, or it is dropped (no fdatasync is run: see above). Thread-safe:
 * any number of callers, against every call but open and close. */
int cm_journal_sync_to(cm_journal_t *j, off_t end);
/* The logical end of the last whole frame, what an fdatasync covered of it,
 * and the logical offset of the file's first byte (the file's length is
 * *len - *delta); each may be NULL. Thread-safe. */
void cm_journal_lens(cm_journal_t *j, off_t *len, off_t *synced, off_t *delta);
/* Whether an fdatasync covered end (a logical offset) and the directory is
 * synced: cm_journal_sync_to(j, end) would return at once. Thread-safe. */
bool cm_journal_durable(cm_journal_t *j, off_t end);
/* Whether a short write's cut-off failed (the file is closed: reopen it). Thread-safe. */
bool cm_journal_broken(cm_journal_t *j);
/* Whether an fdatasync failed (or CM_JOURNAL_REWRITE_FOUND found records)
 * since the file was last written again: what it held then is durable only
 * once a rewrite succeeded. Thread-safe. */
bool cm_journal_dropped(cm_journal_t *j);
/* The journal's own frames written again as they read back (from the page
 * cache, where a failed fdatasync left them), by cm_journal_compact_from with
 * no image: the frames it held at the call are durable after it, the journal
 * is no longer dropped, and offsets stay. For a writer that keeps no state to
 * write the file from. 0 or CM_EIO (also for frames that read back stale:
 * the journal stays dropped; see above). Thread-safe; one compaction at a time. */
int cm_journal_rewrite(cm_journal_t *j);
/* Replaces every record appended so far (written or in the batch, which is
 * dropped) by image's frames (cm_journal_compact_from at the end); the new
 * file is durable. 0 or CM_EIO (the file stays as it was). One writer. */
int cm_journal_compact(cm_journal_t *j, const cm_journal_buf_t *image);
/* Compaction while other threads append and sync: image holds the frames of the
 * state the records before mark (a logical end the caller read with
 * cm_journal_lens while no append could change that state) stand for. Written
 * to "<path>.tmp" with the frames after mark copied behind it and
 * fdatasync'd without j->mu; then the frames appended meanwhile, copied and
 * fdatasync'd while no new sync of the journal may start (a sync_to that
 * would start one waits about one fdatasync of that tail; appends go on), so
 * the new file holds synced every frame a sync reported durable; then under
 * j->mu the last frames copied (page cache only) and the file renamed over
 * the journal. The directory is fsync'd after (a sync before that fsyncs it
 * too).
 * Every frame copied is checked as it is read (see above: one that reads back
 * stale fails the compaction).
 * The frames after mark keep their logical offsets; the journal is no longer
 * dropped. 0 or CM_EIO (logged; the journal stays as it was). Thread-safe;
 * one compaction at a time. */
int cm_journal_compact_from(cm_journal_t *j, const cm_journal_buf_t *image, off_t mark);
/* cm_journal_sync, close, free. 0 or CM_EIO (what the sync said). */
int cm_journal_close(cm_journal_t *j);
/* Close and free with no sync: for a file its owner removed. */
void cm_journal_discard(cm_journal_t *j);

#endif
