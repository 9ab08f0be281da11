/*
 * Registration's store, private to gateway/buy/: one gateway's (gw_reg_local.c:
 * the set in memory and the <sale>.reg journal) or a fleet's (gw_reg_fleet.c: a
 * ZSET in Redis), picked when the sale's slot is made (fs->reg_ops). Each steps
 * registration's core itself around its own I/O.
 */
#ifndef GW_REG_BACKEND_H
#define GW_REG_BACKEND_H

#include "gateway/buy/gw_fair.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_reg_ops {
    /* Registers person, stepping the sale's machine (fs->sale: the window, the
     * cap) under reg_mu: a gw_reg_outcome_t or a negative cm_err_t with a
     * reason in why. *sync true: the outcome stands only once sync() returns 0
     * (gw_reg_sync). Loop thread (a fleet's: one round trip, without reg_mu). */
    int (*add)(gw_fair_t *f, gw_fair_sale_t *fs, const char *person, bool *sync, char *why,
               size_t whylen);
    /* The log made durable through its length now (a group commit across the
     * worker loops): 0 or CM_EIO. NULL: add never asks for it. Thread-safe; blocks
     * on the disk (off the loops). */
    int (*sync)(gw_fair_sale_t *fs);
    /* Whether person is registered (*has): 0 or CM_EBACKEND with a reason. Loop thread. */
    int (*has)(gw_fair_t *f, gw_fair_sale_t *fs, const char *person, bool *has, char *why,
               size_t whylen);
    /* *total persons, and those of the page from cursor (at most limit; 0: none)
     * handed to fn in registration order, *end after the last. 0 or CM_EBACKEND. */
    int (*page)(gw_fair_t *f, gw_fair_sale_t *fs, uint64_t cursor, uint64_t limit, uint64_t *total,
                uint64_t *end, void (*fn)(void *, const char *), void *arg, char *why,
                size_t whylen);
    /* The persons this gateway counts without asking anyone (NULL: none here, a
     * fleet's are Redis'). */
    long long (*persons)(gw_fair_sale_t *fs);
    /* The window's token (" r=<opens>:<closes>", "" for none) made the shared
     * configuration's too (NULL: none, fair.json holds it). 0 or CM_EBACKEND with a
     * reason. Admin thread. */
    int (*publish)(gw_fair_t *f, gw_fair_sale_t *fs, const char *token, char *why, size_t whylen);
    /* load, drop and free: NULL where the store keeps nothing here (a fleet's).
     * A start's read of what the store keeps here. Single-threaded (open). */
    void (*load)(gw_fair_t *f, gw_fair_sale_t *fs);
    /* A deleted sale's registrations dropped: fs->reg_mu held. 0 or CM_EIO. */
    int (*drop)(gw_fair_t *f, gw_fair_sale_t *fs);
    /* What fs holds of the store, freed. Single-threaded (close) or reg_mu held. */
    void (*free)(gw_fair_sale_t *fs);
} gw_reg_ops_t;

extern const gw_reg_ops_t gw_reg__local_ops, gw_reg__fleet_ops;

#endif
