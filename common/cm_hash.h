/*
 * SipHash-2-4 (Aumasson & Bernstein, 2012): a keyed 64-bit hash for tables
 * whose keys come from clients (user ids, IPs). With a secret random key an
 * attacker cannot choose keys that collide, so open-addressing tables keep
 * their bounded probe windows under hostile input (hash flooding).
 *
 * One-shot (cm_hash_sip24) and incremental (init/update/final, same result for
 * any split of the input) forms. Pure functions, no allocation.
 */
#ifndef CM_HASH_H
#define CM_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The 128-bit key: k0 = bytes 0..7 and k1 = bytes 8..15, little-endian. */
typedef struct cm_hash_key {
    uint64_t k0, k1;
} cm_hash_key_t;

/* Incremental state; treat as opaque. Caller-provided storage. */
typedef struct cm_hash_sip {
    uint64_t v0, v1, v2, v3;
    uint64_t tail;  /* pending bytes, little-endian */
    uint64_t total; /* bytes absorbed so far */
} cm_hash_sip_t;

/*
 * SipHash-2-4 of `len` bytes at `data` under `key`. Returns the 64-bit hash
 * (the paper's 8 output bytes read little-endian). Thread-safe.
 */
uint64_t cm_hash_sip24(const cm_hash_key_t *key, const void *data, size_t len);

/* Starts an incremental hash. Not thread-safe on one state. */
void cm_hash_sip_init(cm_hash_sip_t *s, const cm_hash_key_t *key);
/* Absorbs `len` bytes (any length, any number of calls). */
void cm_hash_sip_update(cm_hash_sip_t *s, const void *data, size_t len);
/* Returns the hash of everything absorbed; the state must be re-initialised before reuse. */
uint64_t cm_hash_sip_final(cm_hash_sip_t *s);

/*
 * The one string/byte hash for in-memory tables (instead of hand-copied
 * FNV-1a): SipHash-2-4 under a key drawn at random once per process (first
 * use), so keys a client chooses (user ids, addresses) cannot be made to
 * collide. The value differs from process to process: never store or send it.
 * Thread-safe.
 */
uint64_t cm_hash_mem(const void *data, size_t len);
/* cm_hash_mem of a NUL-terminated string. */
uint64_t cm_hash_str(const char *s);

/*
 * An unkeyed hash (a multiply-xorshift mix of 8-byte words, then MurmurHash3's
 * 64-bit finaliser): ~30 instructions for a 20-byte id against ~200 for
 * cm_hash_mem. Deterministic for a given build and machine (it reads words in
 * the host's byte order): never store or send it.
 *
 * When a keyed hash is required, and when this one is allowed:
 *  - cm_hash_mem (keyed) wherever the hash of a client-chosen key decides
 *    where the key goes: a hash table's bucket or probe sequence, a shard.
 *    There an attacker who can compute the hash chooses keys that all land
 *    in one place, and the cost of every operation (a probe window, a chain
 *    walk) or the memory of one bucket grows with the number of such keys:
 *    hash flooding. The key makes the placement unpredictable.
 *  - cm_hash_fast is allowed only where the hash merely pre-filters an exact
 *    compare of the key and the worst case does not depend on it: a fixed,
 *    small structure scanned in full whatever the hash (cm_topk's 64 slots).
 *    Colliding keys there cost at most one memcmp per slot, a bound known in
 *    advance (64 compares of at most 64 bytes), and change no result, since
 *    equality is decided by the compare. Placement never follows this hash.
 * In doubt, cm_hash_mem.
 */
uint64_t cm_hash_fast(const void *data, size_t len);

/*
 * SipHash-2-4 under a fixed, public key: the same value in every process and
 * on every host (e.g. a node id derived from a host name). Not for keys a
 * client chooses. Thread-safe.
 */
uint64_t cm_hash_stable(const void *data, size_t len);

/*
 * Fills *out with 16 random bytes from getrandom(2) (blocks only until the
 * kernel's pool is initialised, at early boot). Returns 0, or CM_EIO if the
 * kernel cannot provide them (*out is then unspecified). Thread-safe.
 */
int cm_hash_seed_random(cm_hash_key_t *out);
/*
 * Test seam (the simulator's, as cm_time_set_fake is): with fn set,
 * cm_hash_seed_random takes its two words from fn(arg), so a run is the same
 * from the same seed; NULL: the kernel's. Single-threaded setup only.
 */
void cm_hash_seed_set_fake(uint64_t (*fn)(void *arg), void *arg);

#endif
