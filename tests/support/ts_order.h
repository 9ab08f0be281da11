/*
 * Random ids and record comparison for the order codec's tests
 * (unit.oq_order_fast, unit.st_order_parse): a xorshift generator each test
 * seeds for a sequence of its own, ids of the codec's id alphabet, and a
 * field-by-field cmocka comparison of two records. Single-threaded.
 */
#ifndef TS_ORDER_H
#define TS_ORDER_H

#include "queue/oq_order.h"

#include <stddef.h>
#include <stdint.h>

void ts_rnd_seed(uint64_t seed);
/* A number in [0, n), n > 0. */
uint32_t ts_rnd(uint32_t n);
/* An id of [A-Za-z0-9._-], 1..max characters (max a quarter of the time). */
void ts_rnd_id(char *dst, size_t max);
/* Fails the running cmocka test unless every field of a and b is the same. */
void ts_order_assert_same(const oq_order_t *a, const oq_order_t *b);

#endif
