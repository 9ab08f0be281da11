/*
 * The journal framing, its recovery, its upgrade and its atomic replacement
 * (common/cm_journal.h says what each promises).
 */
#include "common/cm_journal.h"

#include "common/cm_alloc.h"
#include "common/cm_crc32c.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HDR 18u /* "%08x %08x " */
#define READ_CHUNK (64u * 1024u)

/*---- the file calls (cm_journal_fs_t): the real ones unless a simulator sets its own ----*/

static int posix_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

static int posix_dup(int fd)
{
    return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

static const cm_journal_fs_t posix_fs = {
    .open = posix_open,
    .close = close,
    .dup = posix_dup,
    .pread = pread,
    .write = write,
    .ftruncate = ftruncate,
    .fstat = fstat,
    .fdatasync = fdatasync,
    .fsync = fsync,
    .rename = rename,
    .unlink = unlink,
    .mkdir = mkdir,
};

/* The table in force: one pointer read per call (the real path's only cost). */
static const cm_journal_fs_t *jfs = &posix_fs;

int (*cm_journal__datasync)(int fd) = fdatasync;

void cm_journal_set_fs(const cm_journal_fs_t *fs)
{
    jfs = fs ? fs : &posix_fs;
    cm_journal__datasync = jfs->fdatasync;
}

const cm_journal_fs_t *cm_journal_fs(void)
{
    return jfs;
}

static const char hexd[] = "0123456789abcdef";

static void put_hex8(char *p, uint32_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 4)
        p[i] = hexd[v & 15];
}

/* Eight lowercase hex digits. */
static bool get_hex8(const char *p, uint32_t *v)
{
    uint32_t x = 0;
    for (int i = 0; i < 8; i++) {
        char c = p[i];
        if (c >= '0' && c <= '9')
            x = x << 4 | (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            x = x << 4 | (uint32_t)(c - 'a' + 10);
        else
            return false;
    }
    *v = x;
    return true;
}

size_t cm_journal_frame(char *out, size_t cap, const void *rec, size_t len)
{
    if (len > CM_JOURNAL_RECORD_MAX || cap < len + CM_JOURNAL_FRAME_OVERHEAD)
        return 0;
    put_hex8(out, (uint32_t)len);
    out[8] = ' ';
    uint32_t crc = cm_crc32c(cm_crc32c(0, out, 8), rec, len);
    put_hex8(out + 9, crc);
    out[17] = ' ';
    if (len)
        memcpy(out + HDR, rec, len);
    out[HDR + len] = '\n';
    return len + CM_JOURNAL_FRAME_OVERHEAD;
}

/* n bytes at off, retried on EINTR and short reads. 0 or -1. */
static int pread_all(int fd, char *p, size_t n, off_t off)
{
    while (n > 0) {
        ssize_t r = jfs->pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

int cm_journal_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = jfs->write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A window of the file being scanned: buf holds [at, at + len). A file held
 * in memory (mem) is its own window: nothing is read. */
typedef struct window {
    int fd;
    off_t size, at;
    char *buf;
    size_t cap, len;
    char *mem;
} window_t;

/* The file's bytes [off, off + need) (all within size) in the window, read
 * from off on if they are not. Returns them, or NULL on a read error. */
static char *window_get(window_t *w, off_t off, size_t need)
{
    if (w->mem)
        return w->mem + off;
    if (off < w->at || off + (off_t)need > w->at + (off_t)w->len) {
        if (need > w->cap) {
            free(w->buf);
            w->cap = need;
            w->buf = cm_xmalloc(w->cap);
        }
        size_t want = w->size - off < (off_t)w->cap ? (size_t)(w->size - off) : w->cap;
        if (pread_all(w->fd, w->buf, want, off) != 0)
            return NULL;
        w->at = off;
        w->len = want;
    }
    return w->buf + (off - w->at);
}

/* Whether a whole frame with its checksum right starts at off: 1 (*f its bytes in
 * the window, *len its record's length), 0 not, CM_EIO. */
static int frame_at(window_t *w, off_t off, char **f, uint32_t *len)
{
    if (w->size - off < (off_t)HDR)
        return 0;
    char *h = window_get(w, off, HDR);
    uint32_t crc;
    if (!h)
        return CM_EIO;
    if (!get_hex8(h, len) || h[8] != ' ' || !get_hex8(h + 9, &crc) || h[17] != ' ' ||
        *len > CM_JOURNAL_RECORD_MAX)
        return 0;
    size_t need = HDR + *len + 1;
    if (w->size - off < (off_t)need)
        return 0;
    if (!(h = window_get(w, off, need)))
        return CM_EIO;
    if (h[HDR + *len] != '\n' || cm_crc32c(cm_crc32c(0, h, 8), h + HDR, *len) != crc)
        return 0;
    *f = h;
    return 1;
}

/* The first whole frame after a bad one at bad: it starts after a newline (a frame's
 * end) or a NUL (a zero-filled block's). Its offset, -1 if none, or CM_EIO. */
static off_t resync(window_t *w, off_t bad)
{
    for (off_t p = bad + 1; w->size - p >= (off_t)HDR; p++) {
        char *c = window_get(w, p - 1, 1);
        if (!c)
            return CM_EIO;
        if (*c != '\n' && *c != '\0')
            continue;
        char *f;
        uint32_t len;
        int r = frame_at(w, p, &f, &len);
        if (r != 0)
            return r < 0 ? CM_EIO : p;
    }
    return -1;
}

/* The frames from start on (a whole frame or a hole there): each whole one to
 * fn, the holes skipped, out's counts and end. 0 or CM_EIO. */
static int scan_frames(window_t *w, off_t start, cm_journal_record_fn fn, void *arg,
                       cm_journal_scan_t *out)
{
    off_t size = w->size;
    off_t off = out->end = start;
    int rc = 0;
    while (size - off >= (off_t)HDR) {
        char *f;
        uint32_t len;
        int r = frame_at(w, off, &f, &len);
        if (r < 0) {
            rc = CM_EIO;
            break;
        }
        if (r == 0) { /* a bad frame: a hole with whole frames after it, or the torn tail */
            off_t next = resync(w, off);
            if (next == CM_EIO) {
                rc = CM_EIO;
                break;
            }
            if (next < 0)
                break;
            if (!out->holes)
                out->first_hole = off;
            out->holes++;
            out->hole_bytes += next - off;
            off = next;
            continue;
        }
        f[HDR + len] = '\0'; /* the record's NUL, for the callee */
        if (fn)
            fn(arg, f + HDR, len);
        f[HDR + len] = '\n';
        off += (off_t)(HDR + len + 1);
        out->end = off;
        out->records++;
    }
    return rc;
}

/* Do the k bytes at p begin a frame's header ("%08x %08x ", or its first k bytes)? */
static bool frame_head_prefix(const char *p, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        bool sp = i == 8 || i == 17;
        if (sp ? p[i] != ' ' : !((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    }
    return true;
}

/* The scan of the file in w (size set): the magic line, then its frames.
 * A file that starts with a NUL is a journal whose magic line's block a power
 * cut zero-filled (its fdatasync failed, a later one of the frames after it
 * did not): its frames are read after the hole. It is a line log only if it
 * has none and its first bytes after the NULs are not a torn frame's header
 * (no line log's line has a space after 8 hex digits; a torn frame, a write
 * cut short after the frames before it were evicted, is the torn tail). */
static int scan_window(window_t *w, cm_journal_record_fn fn, void *arg, cm_journal_scan_t *out)
{
    off_t size = out->size = w->size;
    if (size == 0)
        return 0;
    size_t m = size < CM_JOURNAL_MAGIC_LEN ? (size_t)size : CM_JOURNAL_MAGIC_LEN;
    const char *magic = window_get(w, 0, m);
    if (!magic)
        return CM_EIO;
    if (magic[0] == '\0') {
        int rc = scan_frames(w, 0, fn, arg, out);
        if (rc != 0 || out->records > 0)
            return rc;
        for (off_t p = 0; p < size; p++) { /* no whole frame: NULs, then a torn one? */
            const char *c = window_get(w, p, 1);
            if (!c)
                return CM_EIO;
            if (*c == '\0')
                continue;
            size_t k = size - p < (off_t)HDR ? (size_t)(size - p) : HDR;
            if (!(c = window_get(w, p, k)))
                return CM_EIO;
            if (!frame_head_prefix(c, k)) {
                memset(out, 0, sizeof(*out));
                out->size = size;
                out->is_legacy = true;
            }
            return 0;
        }
        return 0; /* end 0: an empty journal */
    }
    if (memcmp(magic, CM_JOURNAL_MAGIC, m) != 0) {
        out->is_legacy = true;
        return 0;
    }
    if (m < CM_JOURNAL_MAGIC_LEN) /* a torn magic line: an empty journal */
        return 0;
    return scan_frames(w, CM_JOURNAL_MAGIC_LEN, fn, arg, out);
}

int cm_journal_scan(int fd, cm_journal_record_fn fn, void *arg, cm_journal_scan_t *out)
{
    memset(out, 0, sizeof(*out));
    struct stat sb;
    if (jfs->fstat(fd, &sb) != 0)
        return CM_EIO;
    window_t w = {.fd = fd, .size = sb.st_size, .cap = READ_CHUNK};
    w.buf = cm_xmalloc(w.cap);
    int rc = scan_window(&w, fn, arg, out);
    free(w.buf);
    return rc;
}

int cm_journal_scan_mem(char *buf, size_t n, cm_journal_record_fn fn, void *arg,
                        cm_journal_scan_t *out)
{
    memset(out, 0, sizeof(*out));
    window_t w = {.fd = -1, .size = (off_t)n, .mem = buf};
    return scan_window(&w, fn, arg, out);
}

/* cm_journal_recover, its scan in *sc. */
static int recover_scan(int fd, const char *path, cm_journal_record_fn fn, void *arg,
                        cm_journal_scan_t *sc)
{
    int rc = cm_journal_scan(fd, fn, arg, sc);
    if (rc != 0)
        return rc;
    if (sc->is_legacy)
        return CM_ECORRUPT;
    if (sc->holes)
        cm_log_warn("journal", "corrupt frames between whole ones: skipped",
                    "path=%s at=%lld holes=%zu bytes=%lld records=%zu", path,
                    (long long)sc->first_hole, sc->holes, (long long)sc->hole_bytes, sc->records);
    if (sc->end < sc->size) {
        cm_log_warn("journal", "torn or corrupt frame: the file is cut there",
                    "path=%s at=%lld cut_bytes=%lld records=%zu", path, (long long)sc->end,
                    (long long)(sc->size - sc->end), sc->records);
        if (jfs->ftruncate(fd, sc->end) != 0)
            return CM_EIO;
    }
    return 0;
}

int cm_journal_recover(int fd, const char *path, cm_journal_record_fn fn, void *arg, off_t *len)
{
    cm_journal_scan_t sc;
    int rc = recover_scan(fd, path, fn, arg, &sc);
    if (rc == 0)
        *len = sc.end;
    return rc;
}

int cm_journal_attach(int fd, const char *path, off_t *len)
{
    int rc = cm_journal_recover(fd, path, NULL, NULL, len);
    if (rc != 0 || *len > 0)
        return rc;
    if (jfs->ftruncate(fd, 0) != 0 ||
        cm_journal_write_all(fd, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN) != 0)
        return CM_EIO;
    *len = CM_JOURNAL_MAGIC_LEN;
    return 0;
}

int cm_journal_dir_sync(const char *path)
{
    char dir[1024];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    int dfd = jfs->open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    int rc = dfd >= 0 && jfs->fsync(dfd) == 0 ? 0 : CM_EIO;
    if (dfd >= 0)
        jfs->close(dfd);
    return rc;
}

int cm_journal_read_file(const char *path, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = jfs->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? CM_ENOTFOUND : CM_EIO;
    struct stat sb;
    if (jfs->fstat(fd, &sb) != 0 || sb.st_size < 0) {
        jfs->close(fd);
        return CM_EIO;
    }
    size_t n = (size_t)sb.st_size;
    char *p = cm_xmalloc(n + 1);
    if (pread_all(fd, p, n, 0) != 0) {
        jfs->close(fd);
        free(p);
        return CM_EIO;
    }
    jfs->close(fd);
    p[n] = '\0';
    *buf = p;
    *len = n;
    return 0;
}

int cm_journal_remove(const char *path)
{
    if (jfs->unlink(path) != 0 && errno != ENOENT)
        return CM_EIO;
    return cm_journal_dir_sync(path);
}

int cm_journal_mkdir(const char *path, mode_t mode)
{
    return jfs->mkdir(path, mode) == 0 || errno == EEXIST ? 0 : CM_EIO;
}

/*
 * What the last load read (cm_journal_lines_open), for the open after it
 * (cm_journal_open with CM_JOURNAL_REWRITE_FOUND), which reads the file again
 * and whose rewrite copies what it read: pages a failed fdatasync dropped may
 * be evicted between the two reads, and the second then finds the disk's stale
 * bytes (a hole) where the load read records. A rewrite would make durable a
 * file without records the caller's state holds (an entry log without the
 * entries its draw resumed over). So the open compares its scan with the
 * load's and refuses (CM_EIO) while they differ, until a load reads the file
 * again. One load remembered: the last one's path.
 */
static struct {
    pthread_mutex_t mu;
    char path[1100];
    off_t end, hole_bytes;
    size_t records;
    bool differs; /* an open found the file changed since this load */
} last_load = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void load_note(const char *path, const cm_journal_scan_t *sc)
{
    pthread_mutex_lock(&last_load.mu);
    snprintf(last_load.path, sizeof(last_load.path), "%s", sc ? path : "");
    if (sc) {
        last_load.end = sc->end;
        last_load.hole_bytes = sc->hole_bytes;
        last_load.records = sc->records;
    }
    last_load.differs = false;
    pthread_mutex_unlock(&last_load.mu);
}

/* The file at path written anew from its writer's state (replace_file): what
 * a load read of it before is no longer the file's. */
static void load_forget(const char *path)
{
    pthread_mutex_lock(&last_load.mu);
    if (strcmp(last_load.path, path) == 0)
        last_load.path[0] = '\0';
    pthread_mutex_unlock(&last_load.mu);
}

/* true if path's last load read other records than sc found (forgotten once
 * they agree: the file changes from then on by its writes). */
static bool load_differs(const char *path, const cm_journal_scan_t *sc)
{
    pthread_mutex_lock(&last_load.mu);
    bool differs = false;
    if (strcmp(last_load.path, path) == 0) {
        differs = last_load.differs || last_load.end != sc->end ||
                  last_load.hole_bytes != sc->hole_bytes || last_load.records != sc->records;
        if (differs)
            last_load.differs = true;
        else
            last_load.path[0] = '\0';
    }
    pthread_mutex_unlock(&last_load.mu);
    return differs;
}

/* The one atomic rewrite: head (hn bytes) then body (n bytes) to "<path>.tmp"
 * (a stale one removed first, so mode holds), fdatasync, rename, directory fsync.
 * name_durable: a failed directory fsync is a failure (the new name may not survive a
 * power cut, and the old file under it lacks what the caller answered for). */
static int replace_file(const char *path, const void *head, size_t hn, const void *body, size_t n,
                        mode_t mode, int *fd_out, bool name_durable)
{
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    load_forget(path);
    (void)jfs->unlink(tmp);
    int fd = jfs->open(tmp, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, mode);
    const char *what = "open";
    if (fd < 0)
        goto fail;
    what = "write";
    if (cm_journal_write_all(fd, head, hn) != 0 || cm_journal_write_all(fd, body, n) != 0)
        goto fail;
    what = "fdatasync";
    if (cm_journal__datasync(fd) != 0)
        goto fail;
    what = "rename";
    if (jfs->rename(tmp, path) != 0)
        goto fail;
    /* a journal's records are whole under either name: a failed directory fsync only
     * leaves which one a power cut brings back open; a state file's old one is not
     * what its writer saved (the rename stands: its retry writes and syncs again) */
    what = "directory fsync";
    if (cm_journal_dir_sync(path) != 0) {
        if (name_durable)
            goto fail_renamed;
        cm_log_warn("journal", "directory fsync after a rewrite failed", "path=%s err=%s", path,
                    strerror(errno));
    }
    if (fd_out)
        *fd_out = fd;
    else
        jfs->close(fd);
    return 0;
fail_renamed:
    jfs->close(fd);
    fd = -1;
fail:
    cm_log_error("journal", "cannot rewrite", "path=%s what=%s err=%s", path, what,
                 strerror(errno));
    if (fd >= 0) {
        jfs->close(fd);
        (void)jfs->unlink(tmp);
    }
    return CM_EIO;
}

int cm_journal_replace(const char *path, const void *frames, size_t n, int *fd_out)
{
    return replace_file(path, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN, frames, n, 0644, fd_out,
                        false);
}

int cm_journal_replace_file(const char *path, const void *buf, size_t n, mode_t mode)
{
    return replace_file(path, "", 0, buf, n, mode, NULL, true);
}

void cm_journal_buf_free(cm_journal_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int cm_journal_buf_add(cm_journal_buf_t *b, const void *rec, size_t len)
{
    if (len > CM_JOURNAL_RECORD_MAX)
        return CM_EINVAL;
    size_t need = b->len + len + CM_JOURNAL_FRAME_OVERHEAD;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap *= 2;
        b->p = cm_xrealloc(b->p, cap);
        b->cap = cap;
    }
    b->len += cm_journal_frame(b->p + b->len, b->cap - b->len, rec, len);
    return 0;
}

int cm_journal_upgrade_lines(const char *path, size_t *records)
{
    int fd = jfs->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? 0 : CM_EIO;
    char magic[CM_JOURNAL_MAGIC_LEN];
    struct stat sb;
    if (jfs->fstat(fd, &sb) != 0) {
        jfs->close(fd);
        return CM_EIO;
    }
    size_t m = sb.st_size < CM_JOURNAL_MAGIC_LEN ? (size_t)sb.st_size : CM_JOURNAL_MAGIC_LEN;
    if (m == 0 || (pread_all(fd, magic, m, 0) == 0 && memcmp(magic, CM_JOURNAL_MAGIC, m) == 0)) {
        jfs->close(fd);
        return 0;
    }
    cm_journal_scan_t sc; /* a zero-filled magic line: a journal unless the scan says not */
    if (m > 0 && magic[0] == '\0' && cm_journal_scan(fd, NULL, NULL, &sc) == 0 && !sc.is_legacy) {
        jfs->close(fd);
        return 0;
    }
    /* the whole file read through the table (a line log is read once, at its
     * upgrade), then a record per line */
    size_t size = (size_t)sb.st_size;
    char *text = cm_xmalloc(size ? size : 1);
    int rc = pread_all(fd, text, size, 0) == 0 ? 0 : CM_EIO;
    jfs->close(fd);
    cm_journal_buf_t b = {0};
    size_t n_rec = 0;
    bool torn = false;
    for (size_t at = 0; rc == 0 && at < size;) {
        const char *nl = memchr(text + at, '\n', size - at);
        if (!nl) { /* a write cut short: never answered */
            torn = true;
            break;
        }
        size_t n = (size_t)(nl - (text + at));
        if (cm_journal_buf_add(&b, text + at, n) != 0) {
            torn = true; /* a line over CM_JOURNAL_RECORD_MAX is none of ours: the tail goes */
            break;
        }
        n_rec++;
        at += n + 1;
    }
    free(text);
    if (rc == 0)
        rc = cm_journal_replace(path, b.p ? b.p : "", b.len, NULL);
    cm_journal_buf_free(&b);
    if (rc != 0) {
        cm_log_error("journal", "cannot upgrade a line log to the journal framing", "path=%s",
                     path);
        return CM_EIO;
    }
    cm_log_info("journal", "line log upgraded to the journal framing", "path=%s records=%zu%s",
                path, n_rec, torn ? " torn_tail=dropped" : "");
    if (records)
        *records = n_rec;
    return 1;
}

/* Where a load's lines go: the stream, and the scan filling sc (its hole count
 * read at each record: a hole skipped since the last one is marked first). */
typedef struct lines_out {
    FILE *m;
    const cm_journal_scan_t *sc;
    size_t holes; /* the holes marked so far */
    const char *hole;
} lines_out_t;

/* A record as the line a load parses (cm_journal_lines_open). */
static void line_record(void *arg, char *rec, size_t len)
{
    lines_out_t *o = arg;
    if (o->hole && o->sc->holes != o->holes) {
        o->holes = o->sc->holes;
        fputs(o->hole, o->m);
        fputc('\n', o->m);
    }
    fwrite(rec, 1, len, o->m);
    fputc('\n', o->m);
}

/* The stream cm_journal_lines_open returns: its text, freed by its fclose. */
typedef struct lines {
    char *text;
    size_t n, at;
} lines_t;

static ssize_t lines_read(void *cookie, char *buf, size_t size)
{
    lines_t *l = cookie;
    size_t k = l->n - l->at < size ? l->n - l->at : size;
    memcpy(buf, l->text + l->at, k);
    l->at += k;
    return (ssize_t)k;
}

static int lines_close(void *cookie)
{
    lines_t *l = cookie;
    free(l->text);
    free(l);
    return 0;
}

FILE *cm_journal_lines_open(const char *path)
{
    return cm_journal_lines_open_holes(path, NULL);
}

FILE *cm_journal_lines_open_holes(const char *path, const char *hole)
{
    load_note(path, NULL);
    if (cm_journal_upgrade_lines(path, NULL) < 0) /* logged */
        return NULL;
    int fd = jfs->open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    char *text = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&text, &n);
    cm_journal_scan_t sc;
    lines_out_t o = {.m = m, .sc = &sc, .hole = hole};
    int rc = m ? recover_scan(fd, path, line_record, &o, &sc) : CM_EIO; /* logs a cut */
    if (rc == 0)
        load_note(path, &sc);
    jfs->close(fd);
    if (m && fclose(m) != 0)
        rc = CM_EIO;
    if (rc != 0)
        cm_log_error("journal", "cannot read", "path=%s err=%s", path, cm_strerror(rc));
    if (rc == 0 && n) {
        lines_t *l = cm_xmalloc(sizeof(*l));
        *l = (lines_t){.text = text, .n = n};
        FILE *fp =
            fopencookie(l, "r", (cookie_io_functions_t){.read = lines_read, .close = lines_close});
        if (fp)
            return fp; /* its fclose frees text */
        free(l);
    }
    free(text);
    return NULL;
}

/*---- one journal, its appends from many threads, one fdatasync for them ----*/

int cm_journal_open(cm_journal_t *j, const char *path, unsigned flags, cm_journal_record_fn fn,
                    void *arg, char *errbuf, size_t errlen)
{
    memset(j, 0, sizeof(*j));
    j->fd = -1;
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (jfs->unlink(tmp) == 0) /* a rewrite a crash cut before its rename: the file is whole */
        cm_log_warn("journal", "removed a rewrite cut short", "path=%s", tmp);
    if ((flags & CM_JOURNAL_UPGRADE_LINES) && cm_journal_upgrade_lines(path, NULL) < 0) {
        cm_errbuf_set(errbuf, errlen, "%s: cannot upgrade the line log", path);
        return CM_EIO;
    }
    int fd = jfs->open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        cm_errbuf_set(errbuf, errlen, "%s: %s", path, strerror(errno));
        return CM_EIO;
    }
    cm_journal_scan_t sc;
    int rc = recover_scan(fd, path, fn, arg, &sc);
    off_t len = sc.end;
    if (rc != 0) {
        cm_errbuf_set(errbuf, errlen, "%s: %s", path,
                      rc == CM_ECORRUPT ? "not a journal" : "cannot read or cut its tail");
        jfs->close(fd);
        return rc;
    }
    if ((flags & CM_JOURNAL_REWRITE_FOUND) && load_differs(path, &sc)) {
        cm_errbuf_set(errbuf, errlen, "%s: reads back otherwise than its load read it", path);
        jfs->close(fd);
        return CM_EIO;
    }
    bool synced = false;
    if (len == 0) {
        synced = !(flags & CM_JOURNAL_DEFER_SYNC);
        if (jfs->ftruncate(fd, 0) != 0 ||
            cm_journal_write_all(fd, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN) != 0 ||
            (synced && (cm_journal__datasync(fd) != 0 || cm_journal_dir_sync(path) != 0))) {
            cm_errbuf_set(errbuf, errlen, "%s: cannot start the journal: %s", path,
                          strerror(errno));
            jfs->close(fd);
            return CM_EIO;
        }
        len = CM_JOURNAL_MAGIC_LEN;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->fd = fd;
    j->path = cm_xstrdup(path);
    j->len = len;
    /* what a crash left may be in the page cache only, its name too */
    j->synced_len = synced ? len : 0;
    j->dir_unsynced = !synced;
    j->dropped = (flags & CM_JOURNAL_REWRITE_FOUND) && len > CM_JOURNAL_MAGIC_LEN;
    if (sc.holes) { /* a rewrite copies them as they are (compact_from checks the rest) */
        j->holes_to = len;
        j->hole_bytes = sc.hole_bytes;
    }
    return 0;
}

int cm_journal_append(cm_journal_t *j, const void *rec, size_t len)
{
    return cm_journal_buf_add(&j->batch, rec, len);
}

/* n bytes of whole frames with one write(2) (cm_journal_write's contract). j->mu held. */
static int write_frames_locked(cm_journal_t *j, const char *p, size_t n)
{
    if (n == 0 || j->fd < 0)
        return j->fd >= 0 ? 0 : CM_EIO;
    ssize_t w = jfs->write(j->fd, p, n);
    if (w == (ssize_t)n) {
        j->len += (off_t)n;
        return 0;
    }
    /* part of a frame would glue the next batch to it: both cut at the next
     * open. Cut it off now; if that fails too, no more appends. */
    cm_log_error("journal", "write", "path=%s err=%s", j->path, w < 0 ? strerror(errno) : "short");
    if (w > 0 && jfs->ftruncate(j->fd, j->len - j->delta) != 0) {
        jfs->close(j->fd);
        j->fd = -1;
    }
    return CM_EIO;
}

/* The batch, emptied either way. j->mu held. */
static int write_locked(cm_journal_t *j)
{
    size_t n = j->batch.len;
    j->batch.len = 0;
    return write_frames_locked(j, j->batch.p, n);
}

int cm_journal_write(cm_journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    int rc = write_locked(j);
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int cm_journal_put(cm_journal_t *j, const void *rec, size_t len, off_t *end)
{
    pthread_mutex_lock(&j->mu);
    int rc = cm_journal_buf_add(&j->batch, rec, len);
    if (rc == 0)
        rc = write_locked(j);
    if (end)
        *end = j->len;
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int cm_journal_put_frames(cm_journal_t *j, const cm_journal_buf_t *frames, off_t *end)
{
    pthread_mutex_lock(&j->mu);
    int rc = write_frames_locked(j, frames->p, frames->len);
    if (end)
        *end = j->len;
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int cm_journal_sync_to(cm_journal_t *j, off_t end)
{
    pthread_mutex_lock(&j->mu);
    unsigned failures = j->failures;
    int rc = 0;
    while (j->synced_len < end || j->dir_unsynced) {
        /* one ran while this waited (it may have been its own), or one since the
         * last rewrite may have dropped what this covers */
        if (j->failures != failures || j->dropped) {
            rc = CM_EIO;
            break;
        }
        /* one at a time: the frames written while one runs wait for its end,
         * then one of them syncs them all (a compaction may hold it back) */
        if (j->syncing || j->sync_hold) {
            pthread_cond_wait(&j->cv, &j->mu);
            continue;
        }
        /* a dup: a compaction may close j->fd meanwhile (its gen then tells) */
        int fd = j->fd >= 0 ? jfs->dup(j->fd) : -1;
        if (fd < 0) {
            rc = CM_EIO;
            break;
        }
        off_t upto = j->len;
        unsigned gen = j->gen;
        bool dir = j->dir_unsynced;
        j->syncing = true;
        pthread_mutex_unlock(&j->mu);
        int r = cm_journal__datasync(fd);
        const char *what = "fdatasync";
        int e = errno;
        jfs->close(fd);
        if (r == 0 && dir && (r = cm_journal_dir_sync(j->path)) != 0) {
            what = "directory fsync";
            e = errno;
        }
        pthread_mutex_lock(&j->mu);
        j->syncing = false;
        if (r == 0 && j->gen == gen) { /* a compaction's new file: not this sync's */
            if (upto > j->synced_len)
                j->synced_len = upto;
            if (dir)
                j->dir_unsynced = false;
        }
        if (r != 0) {
            j->failures++;
            j->dropped = j->dropped || j->gen == gen; /* an old file's: the rewrite has it all */
            cm_log_error("journal", what, "path=%s err=%s", j->path, strerror(e));
        }
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int cm_journal_sync(cm_journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    int rc = write_locked(j);
    off_t end = j->len;
    pthread_mutex_unlock(&j->mu);
    return rc != 0 ? rc : cm_journal_sync_to(j, end);
}

void cm_journal_lens(cm_journal_t *j, off_t *len, off_t *synced, off_t *delta)
{
    pthread_mutex_lock(&j->mu);
    if (delta)
        *delta = j->delta;
    if (len)
        *len = j->len;
    if (synced)
        *synced = j->synced_len;
    pthread_mutex_unlock(&j->mu);
}

bool cm_journal_durable(cm_journal_t *j, off_t end)
{
    pthread_mutex_lock(&j->mu);
    bool durable = j->synced_len >= end && !j->dir_unsynced;
    pthread_mutex_unlock(&j->mu);
    return durable;
}

bool cm_journal_dropped(cm_journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    bool dropped = j->dropped;
    pthread_mutex_unlock(&j->mu);
    return dropped;
}

bool cm_journal_broken(cm_journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    bool broken = j->fd < 0;
    pthread_mutex_unlock(&j->mu);
    return broken;
}

/* The check of frames streamed through it in pieces (a copy's reads): every
 * byte is part of a whole frame with its checksum right, as frame_at checks
 * one, with no resync: a bad byte fails the whole run. */
typedef struct frame_check {
    char hdr[HDR];
    size_t have;   /* header bytes held: HDR while the record and its newline come */
    uint32_t left; /* record bytes still to come, then the newline */
    uint32_t crc, want;
    bool bad;
    bool failed; /* a copy_range's check failed (bad, or its range ended mid-frame) */
} frame_check_t;

static void check_feed(frame_check_t *c, const char *p, size_t n)
{
    while (n > 0 && !c->bad) {
        if (c->have < HDR) {
            size_t k = HDR - c->have < n ? HDR - c->have : n;
            memcpy(c->hdr + c->have, p, k);
            c->have += k;
            p += k;
            n -= k;
            if (c->have == HDR) {
                c->bad = !get_hex8(c->hdr, &c->left) || c->hdr[8] != ' ' ||
                         !get_hex8(c->hdr + 9, &c->want) || c->hdr[17] != ' ' ||
                         c->left > CM_JOURNAL_RECORD_MAX;
                c->crc = cm_crc32c(0, c->hdr, 8);
            }
        } else if (c->left > 0) {
            size_t k = c->left < n ? c->left : n;
            c->crc = cm_crc32c(c->crc, p, k);
            c->left -= (uint32_t)k;
            p += k;
            n -= k;
        } else {
            c->bad = *p != '\n' || c->crc != c->want;
            c->have = 0;
            p++;
            n--;
        }
    }
}

/* The file's bytes [from, to) of fd at the end of tfd, the ones from strict on
 * (a frame's start) checked by c as they pass: a failed writeback's pages the
 * kernel marked clean and then evicted read back as the disk's stale bytes, and
 * a copy must not call those durable. Each of a copy's ranges ends at a frame's
 * end. 0 or -1 (a read, a write or the check failed; errno EIO for the check). */
static int copy_range(int fd, int tfd, off_t from, off_t to, off_t strict, frame_check_t *c)
{
    char buf[16384];
    while (from < to) {
        size_t n = to - from < (off_t)sizeof(buf) ? (size_t)(to - from) : sizeof(buf);
        ssize_t r = jfs->pread(fd, buf, n, from);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (from + r > strict && !CM_PLANT(JOURNAL_COPY_UNCHECKED)) {
            off_t skip = strict > from ? strict - from : 0;
            check_feed(c, buf + skip, (size_t)(r - skip));
        }
        if (c->bad || cm_journal_write_all(tfd, buf, (size_t)r) != 0)
            break;
        from += r;
    }
    if (from < to && !c->bad)
        return -1;
    if (c->bad || c->have != 0) {
        c->failed = true;
        errno = EIO;
        return -1;
    }
    return 0;
}

/* The bytes [from, to) of fd, among which open found holes (j->holes_to): the
 * same scan as open's, whole frames up to to and no more hole bytes than open
 * skipped (a rewrite copies those as they are). 0 or -1 (errno EIO). */
static int check_holes(int fd, off_t from, off_t to, off_t hole_bytes)
{
    window_t w = {.fd = fd, .size = to, .cap = READ_CHUNK};
    w.buf = cm_xmalloc(w.cap);
    cm_journal_scan_t sc = {0};
    int rc = scan_frames(&w, from, NULL, NULL, &sc);
    free(w.buf);
    if (rc != 0 || sc.end != to || sc.hole_bytes > hole_bytes) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* Lets syncs start again after a compaction held them. j->mu held. */
static void release_syncs(cm_journal_t *j)
{
    j->sync_hold = false;
    pthread_cond_broadcast(&j->cv);
}

int cm_journal_compact_from(cm_journal_t *j, const cm_journal_buf_t *image, off_t mark)
{
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", j->path);
    pthread_mutex_lock(&j->mu);
    unsigned gen = j->gen;
    off_t delta = j->delta, to = j->len, holes_to = j->holes_to, hole_bytes = j->hole_bytes;
    /* a dup to read the tail from: j->fd is j->mu's */
    int fd = j->fd >= 0 && mark - delta >= (off_t)CM_JOURNAL_MAGIC_LEN && mark <= j->len
                 ? jfs->dup(j->fd)
                 : -1;
    pthread_mutex_unlock(&j->mu);
    const char *what = "no such mark";
    int tfd = -1;
    bool held = false;
    /* the copy's frames from strict on are checked as they pass; the holes
     * open skipped before it are scanned for as open did */
    frame_check_t check = {0};
    off_t strict = holes_to > mark ? holes_to - delta : mark - delta;
    if (fd < 0)
        goto fail;
    what = "frames read back are not whole";
    if (holes_to > mark && check_holes(fd, mark - delta, strict, hole_bytes) != 0)
        goto fail;
    (void)jfs->unlink(tmp);
    what = "open";
    tfd = jfs->open(tmp, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (tfd < 0)
        goto fail;
    /* the image and the frames appended since mark, synced with no lock held */
    what = "write";
    if (cm_journal_write_all(tfd, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN) != 0 ||
        cm_journal_write_all(tfd, image->p ? image->p : "", image->len) != 0 ||
        copy_range(fd, tfd, mark - delta, to - delta, strict, &check) != 0)
        goto fail;
    what = "fdatasync";
    if (cm_journal__datasync(tfd) != 0)
        goto fail;
    /* the frames appended meanwhile, synced while no sync of the journal may
     * start (one running covers at most its length now: then every frame a
     * sync reported durable is in what the new file has synced); appends go on */
    pthread_mutex_lock(&j->mu);
    what = "the journal was replaced";
    if (j->gen != gen || j->fd < 0)
        goto fail_locked;
    j->sync_hold = held = true;
    off_t held_to = j->len;
    pthread_mutex_unlock(&j->mu);
    what = "copy";
    if (copy_range(fd, tfd, to - delta, held_to - delta, strict, &check) != 0)
        goto fail;
    what = "fdatasync";
    if (cm_journal__datasync(tfd) != 0)
        goto fail;
    /* the frames appended since, copied unsynced (no sync reported them), and the rename */
    pthread_mutex_lock(&j->mu);
    what = "the journal was replaced";
    if (j->gen != gen || j->fd < 0 || j->synced_len > held_to)
        goto fail_locked;
    what = "copy";
    if (copy_range(fd, tfd, held_to - delta, j->len - delta, strict, &check) != 0)
        goto fail_locked;
    what = "rename";
    if (jfs->rename(tmp, j->path) != 0)
        goto fail_locked;
    jfs->close(j->fd);
    j->fd = tfd;
    j->delta = mark - (off_t)(CM_JOURNAL_MAGIC_LEN + image->len);
    j->synced_len = held_to;
    j->gen++; /* a sync in flight on the old file covers nothing of this one */
    /* the new file was written from state and the page cache, and synced */
    j->dropped = false;
    j->dir_unsynced = true;
    if (mark >= holes_to) /* the holes open found were not copied */
        j->holes_to = j->hole_bytes = 0;
    release_syncs(j);
    unsigned new_gen = j->gen;
    pthread_mutex_unlock(&j->mu);
    jfs->close(fd);
    /* the new file is whole under either name: until its name is durable, a
     * sync fsyncs the directory before it counts */
    if (cm_journal_dir_sync(j->path) == 0) {
        pthread_mutex_lock(&j->mu);
        if (j->gen == new_gen)
            j->dir_unsynced = false;
        pthread_mutex_unlock(&j->mu);
    } else {
        cm_log_warn("journal", "directory fsync after a rewrite failed", "path=%s err=%s",
                    j->path, strerror(errno));
    }
    return 0;
fail:
    pthread_mutex_lock(&j->mu);
fail_locked:
    if (held)
        release_syncs(j);
    pthread_mutex_unlock(&j->mu);
    if (check.failed)
        what = "frames read back are not whole";
    cm_log_error("journal", "cannot compact", "path=%s what=%s err=%s", j->path, what,
                 strerror(errno));
    if (fd >= 0)
        jfs->close(fd);
    if (tfd >= 0) {
        jfs->close(tfd);
        (void)jfs->unlink(tmp);
    }
    return CM_EIO;
}

int cm_journal_rewrite(cm_journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    off_t first = j->delta + CM_JOURNAL_MAGIC_LEN;
    pthread_mutex_unlock(&j->mu);
    const cm_journal_buf_t none = {0};
    return cm_journal_compact_from(j, &none, first);
}

int cm_journal_compact(cm_journal_t *j, const cm_journal_buf_t *image)
{
    pthread_mutex_lock(&j->mu);
    off_t mark = j->len;
    pthread_mutex_unlock(&j->mu);
    if (cm_journal_compact_from(j, image, mark) != 0)
        return CM_EIO;
    /* nothing was copied after the image: one writer's offsets start again */
    pthread_mutex_lock(&j->mu);
    j->batch.len = 0;
    j->len = j->synced_len = (off_t)(CM_JOURNAL_MAGIC_LEN + image->len);
    j->delta = 0;
    pthread_mutex_unlock(&j->mu);
    return 0;
}

int cm_journal_close(cm_journal_t *j)
{
    int rc = j->fd >= 0 ? cm_journal_sync(j) : j->path ? CM_EIO : 0;
    cm_journal_discard(j);
    return rc;
}

void cm_journal_discard(cm_journal_t *j)
{
    if (j->fd >= 0)
        jfs->close(j->fd);
    if (j->path) {
        pthread_cond_destroy(&j->cv);
        pthread_mutex_destroy(&j->mu);
    }
    j->fd = -1;
    cm_journal_buf_free(&j->batch);
    free(j->path);
    j->path = NULL;
}
