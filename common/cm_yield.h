/*
 * Yield points: the places in the product's code where another thread's
 * work, run in between, makes a difference (a restock between a reservation's
 * read of the stock and its store of the sold-out flag). The deterministic
 * simulation (sim/, one thread) installs a hook that may run such work there,
 * so that the interleaving a second thread would produce happens from a seed.
 *
 * Outside the simulation no hook is installed: CM_YIELD is a load of a null
 * pointer and an untaken branch, and the code does what it did without it.
 */
#ifndef CM_YIELD_H
#define CM_YIELD_H

/* The yield points (where the code is). */
typedef enum {
    CM_YIELD_SOLD_OUT_SYNC = 1, /* inv_mem.c sold_out_sync: stock read, flag not yet stored */
} cm_yield_t;

typedef void (*cm_yield_fn)(cm_yield_t at);

/* The installed hook, or NULL (every product binary). */
extern cm_yield_fn cm_yield_hook;

/*
 * Installs fn (NULL: none) as the hook every CM_YIELD calls. Single-threaded
 * setup only: the simulation, before it runs the code; never the product.
 */
void cm_yield_set(cm_yield_fn fn);

#define CM_YIELD(at)                                                                               \
    do {                                                                                           \
        if (__builtin_expect(cm_yield_hook != NULL, 0))                                            \
            cm_yield_hook(at);                                                                     \
    } while (0)

#endif
