/*
 * Redis Cluster, the small client layer of our own: Debian 12 packages no C
 * cluster client (hiredis-cluster is not in bookworm), so the inventory and
 * the fleet code route their commands here. Private to inventory/.
 *
 * What it does, and no more:
 * - the key slot as Redis defines it: CRC16 (XMODEM) of the key, or of its
 *   hash tag (the part between the first '{' and the next '}', when not
 *   empty), modulo 16384;
 * - a slot map from CLUSTER SLOTS (masters only), asked of any known node or
 *   seed, shared by every thread of the process (a rwlock);
 * - the MOVED and ASK redirections: MOVED sets the slot's node at once and
 *   marks the map stale (its owner refreshes it), ASK is followed once with
 *   ASKING and changes nothing;
 * - a blocking routed client (admin paths, the sync thread, the fleet):
 *   one connection per master, connected on demand, bounded retries.
 * The asynchronous buy path keeps its own connections (inv_redis_worker.c) and uses
 * the map, the slot function and the redirect parser from here.
 *
 * A plain redis:// address is a "cluster" of one node that owns every slot
 * and never refreshes, so callers have one code path.
 */
#ifndef INV_CLUSTER_H
#define INV_CLUSTER_H

#include "common/cm_url.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INV_CLUSTER_SLOTS 16384
#define INV_CLUSTER_NODES_MAX 64   /* masters (and former masters) a process ever learns */
#define INV_CLUSTER_REDIRECTS_MAX 5 /* MOVED/ASK followed per command before giving up */

/* CRC16-CCITT (XMODEM), the cluster spec's: "123456789" -> 0x31C3. Thread-safe. */
uint16_t inv_cluster_crc16(const char *buf, size_t len);

/* The slot of key (len bytes), hash tags honoured. Thread-safe. */
uint16_t inv_cluster_key_slot(const char *key, size_t len);

enum { INV_CLUSTER_REDIR_NONE = 0, INV_CLUSTER_REDIR_MOVED = 1, INV_CLUSTER_REDIR_ASK = 2 };

/*
 * Parses an error reply "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>"
 * (host may be an IPv6 literal: the port follows the last ':'; an empty host
 * means "the node you asked"). Returns INV_CLUSTER_REDIR_MOVED or _ASK with
 * *slot, host (cap bytes) and *port set, else INV_CLUSTER_REDIR_NONE. Thread-safe.
 */
int inv_cluster_redirect_parse(const char *err, size_t len, uint16_t *slot, char *host,
                               size_t cap, int *port);

/* true for the transient error replies of a cluster in motion (TRYAGAIN, CLUSTERDOWN). */
bool inv_cluster_is_transient(const char *err);

typedef struct inv_cluster inv_cluster_t;

/*
 * The slot map of addr: for redis-cluster:// it is read from the seeds at once
 * (NULL with the reason in errbuf if none answers); for redis:// it is the one
 * node. timeout_ms bounds each connect and command of a refresh. Thread-safe.
 */
inv_cluster_t *inv_cluster_open(const cm_redis_url_t *addr, uint32_t timeout_ms, char *errbuf,
                                size_t errlen);
void inv_cluster_close(inv_cluster_t *cl);
/* true for redis-cluster:// */
bool inv_cluster_enabled(const inv_cluster_t *cl);
/* The address it was opened with (credentials for every node). */
const cm_redis_url_t *inv_cluster_addr(const inv_cluster_t *cl);

/* Re-reads the map (blocking, serialised). 0 or CM_EBACKEND with why. Thread-safe. */
int inv_cluster_refresh(inv_cluster_t *cl, char *errbuf, size_t errlen);
/* Marks the map stale (a redirect, a lost node); inv_cluster_take_stale clears and tells. */
void inv_cluster_mark_stale(inv_cluster_t *cl);
bool inv_cluster_take_stale(inv_cluster_t *cl);
/* Number of map refreshes that changed something (stats, tests). */
uint64_t inv_cluster_changes(const inv_cluster_t *cl);

/* The node serving slot (an index < INV_CLUSTER_NODES_MAX), or -1. Thread-safe. */
int inv_cluster_route(inv_cluster_t *cl, uint16_t slot);
/* Any node (for keyless commands: SCRIPT LOAD, SUBSCRIBE); `hint` rotates. -1 if none. */
int inv_cluster_any(inv_cluster_t *cl, unsigned hint);
/* Copies node idx's address. 0, or -1 if idx is unknown. Thread-safe. */
int inv_cluster_node(inv_cluster_t *cl, int idx, char *host, size_t cap, int *port);
/* The index of host:port, added if new; -1 when the table is full. Thread-safe. */
int inv_cluster_intern(inv_cluster_t *cl, const char *host, int port);
/* A MOVED: slot now lives on host:port; marks the map stale. The node's index or -1. */
int inv_cluster_moved(inv_cluster_t *cl, uint16_t slot, const char *host, int port);

/* A blocking connection to node idx (AUTH, SELECT as the address says), or NULL with why. */
redisContext *inv_cluster_connect_node(inv_cluster_t *cl, int idx, uint32_t timeout_ms,
                                       char *errbuf, size_t errlen);

/*---- the transport seam (the simulator's; hiredis when none is set) ----*/

/*
 * What the blocking routed client talks through. Unset (production): hiredis
 * blocking contexts. The simulator (sim/sim_redis.c) sets one so that the real
 * backend runs against a simulated Redis in one thread.
 */
typedef struct inv_cluster_transport {
    /* A connection to host:port: a handle, or NULL with why in errbuf. */
    void *(*open)(void *arg, const char *host, int port, char *errbuf, size_t errlen);
    /* Sends one command (RESP, len bytes) on conn and waits for its reply: 0 with
     * *out (freed by freeReplyObject), CM_ETIMEOUT (no reply in time) or
     * CM_EBACKEND (the connection broke): then the command may or may not have
     * run, and the caller closes conn. */
    int (*call)(void *arg, void *conn, const char *cmd, size_t len, redisReply **out);
    void (*close)(void *arg, void *conn);
    void *arg;
    /* The monotonic clock the client's idle PING reads (ms). */
    uint64_t (*now_ms)(void *arg);
    /* No background thread: the Redis backend starts no sync thread, and its
     * owner calls inv_redis_sync_step (inv_redis.h) instead. */
    bool stepped;
    /* The worker loops' connections (inv_redis_worker.c); NULL: hiredis on libuv. */
    const struct inv_cluster_async *async;
} inv_cluster_transport_t;

/*
 * The asynchronous side of the seam: where a worker loop hands a formatted
 * command to hiredis and where replies come back. Production uses hiredis's
 * async contexts on libuv; the simulator's (sim/sim_redis.c) hands out
 * contexts of its own (only `data` and `errstr` are read; no hiredis call is
 * made on them) and, from its owner's step, calls the callbacks as hiredis
 * would: on_conn once (REDIS_ERR: the context is then freed, and the
 * commands queued on it get a NULL reply), each command's callback once and
 * in order (the reply is freed after the callback; NULL when the connection
 * goes away), then on_disc (REDIS_ERR for a lost connection, REDIS_OK after
 * free) and the context is freed. The clock of the worker's timers is then
 * the transport's now_ms, and its owner runs them with inv_redis_worker_step.
 */
typedef struct inv_cluster_async {
    /* A connection to host:port whose ac->data is data, or NULL (nothing sent). */
    redisAsyncContext *(*open)(void *arg, const char *host, int port, void *data,
                               redisConnectCallback *on_conn, redisDisconnectCallback *on_disc);
    /* Queues one command (RESP, len bytes; cb may be NULL): REDIS_OK, or REDIS_ERR
     * (the context is going away; cb will not be called). */
    int (*send)(void *arg, redisAsyncContext *ac, redisCallbackFn *cb, void *priv,
                const char *cmd, size_t len);
    /* Hands over the replies that have arrived (redisAsyncHandleRead). */
    void (*read)(void *arg, redisAsyncContext *ac);
    /* Closes and frees the context (redisAsyncFree). */
    void (*free)(void *arg, redisAsyncContext *ac);
} inv_cluster_async_t;

/*
 * Sets the process's transport (NULL: hiredis). Set it before any open and
 * clear it after the last close; t must outlive them. Not thread-safe: the
 * simulator's single thread and unit tests only.
 */
void inv_cluster_transport_set(const inv_cluster_transport_t *t);
/* The transport set, or NULL (hiredis). */
const inv_cluster_transport_t *inv_cluster_transport(void);

/*---- the blocking routed client: one thread at a time per instance ----*/

typedef struct inv_cluster_sync inv_cluster_sync_t;

inv_cluster_sync_t *inv_cluster_sync_new(inv_cluster_t *cl, uint32_t timeout_ms);
void inv_cluster_sync_free(inv_cluster_sync_t *s);

/*
 * Sends one command to the node of `key` (NULL: any node) and returns its
 * reply (the caller frees it; error replies included), following MOVED and
 * ASK up to INV_CLUSTER_REDIRECTS_MAX times and waiting out TRYAGAIN,
 * CLUSTERDOWN and unreachable nodes (connect refused: nothing was sent) for
 * up to the timeout, refreshing the map. Returns NULL with *err CM_ETIMEOUT
 * or CM_EBACKEND when the command may or may not have run (lost connection)
 * or no node could be reached: a command is never sent twice after its
 * fate became unknown. A connection idle for a while is PINGed first, so a
 * restarted server's dead socket is found before a command is risked on it;
 * a PING that times out fails the call (CM_EBACKEND, nothing sent) rather
 * than wait out the timeout again on a new connection to a hung server.
 */
redisReply *inv_cluster_sync_argv(inv_cluster_sync_t *s, const char *key, int argc,
                                  const char **argv, const size_t *argl, int *err);
redisReply *inv_cluster_sync_cmd(inv_cluster_sync_t *s, const char *key, int *err,
                                 const char *fmt, ...);
redisReply *inv_cluster_sync_vcmd(inv_cluster_sync_t *s, const char *key, int *err,
                                  const char *fmt, va_list ap);
/* The same for a command hiredis formatted already (cmd, len bytes of RESP). */
redisReply *inv_cluster_sync_formatted(inv_cluster_sync_t *s, const char *key, const char *cmd,
                                       size_t len, int *err);

/*
 * A Lua script by its SHA1 (EVALSHA sha1 ...), sent once more with its text
 * (EVAL text ..., which loads it) when the node answers NOSCRIPT: a restarted
 * or flushed Redis, a Cluster node that never ran it. The text crosses the
 * network once per node and flush instead of with every call. sha1: 40 hex
 * digits of the text's SHA1. argv/argl: what follows the script (numkeys, the
 * keys, the arguments), borrowed; the v form formats them as hiredis does.
 * Returns as inv_cluster_sync_argv.
 */
redisReply *inv_cluster_sync_script(inv_cluster_sync_t *s, const char *key, const char *sha1,
                                    const char *text, int argc, const char **argv,
                                    const size_t *argl, int *err);
redisReply *inv_cluster_sync_vscript(inv_cluster_sync_t *s, const char *key, const char *sha1,
                                     const char *text, int *err, const char *fmt, va_list ap);
/* True for a NOSCRIPT error reply (the script is not in the node's cache). */
bool inv_cluster_is_noscript(const redisReply *r);
/*
 * inv_cluster_sync_script's fallback for a call sent from a loop: true when r
 * is NOSCRIPT and the call went by SHA1 (*reloaded false); *reloaded is then
 * set and the caller sends it again, with its text. At most once per call.
 */
bool inv_cluster_script_retry(const redisReply *r, bool *reloaded);
/* The name Redis gives a script: the SHA1 of its text in 40 lowercase hex
 * digits and a NUL, what inv_cluster_sync_script's sha1 takes. */
void inv_cluster_script_sha1(const char *text, char sha1[41]);

/*
 * A connected context on key's node (NULL key: any node), for what needs the
 * raw connection (a pipeline on one slot, a subscriber). NULL with *err. After
 * a transport error on it, call inv_cluster_sync_drop.
 */
redisContext *inv_cluster_sync_ctx(inv_cluster_sync_t *s, const char *key, int *err);
void inv_cluster_sync_drop(inv_cluster_sync_t *s, redisContext *c);
/* The last transport error ("" if none since the last success). */
const char *inv_cluster_sync_errstr(const inv_cluster_sync_t *s);

#endif
