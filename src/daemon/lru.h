/* thunder — recency of the blocks of one cached image version.
 *
 * One 64-bit stamp per block: the time (milliseconds of a monotonic clock,
 * plus one) of its last read or store through the cache manager, 0 for
 * never since the version was opened.  Stamps live in memory only: after a
 * restart every block is "never", so blocks read since the restart are
 * kept over those that were not.  The reclaimer (reclaim.h) evicts the
 * blocks with the smallest stamps first.
 *
 * Threads: no locks.  lru_touch stores only when the stamp changes, so a
 * hot block costs one load; a stamp read while it is touched is the old
 * or the new value, both fine for an ordering this coarse.
 */
#ifndef THUNDER_LRU_H
#define THUNDER_LRU_H

#include <stdint.h>

struct lru;

/* Stamps for n blocks, all 0.  NULL on allocation failure (logged). */
struct lru *lru_new(uint64_t n);

/* NULL is a no-op. */
void lru_free(struct lru *l);

/* The clock stamps are taken from (>= 1). */
uint64_t lru_now(void);

/* Block idx (< n) was used now. */
void lru_touch(struct lru *l, uint64_t idx);

/* Block idx's stamp (0: not used since open). */
uint64_t lru_stamp(const struct lru *l, uint64_t idx);

#endif
