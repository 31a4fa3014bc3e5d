/* thunder — recency of the blocks of one cached image version.
 *
 * Two 64-bit stamps per block: the time (milliseconds of a monotonic
 * clock, plus one) of its last read (by anyone: a local VM or a child
 * node) or store through the cache manager, and of its last read by a
 * local VM (the Unix socket); 0 for never since the version was opened.  Stamps live in memory only: after a
 * restart every block is "never", so blocks read since the restart are
 * kept over those that were not.  The reclaimer (reclaim.h) evicts
 * blocks no local VM read recently before the others, each group with the
 * smallest (first) stamps first.
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

/* Block idx (< n) was used now (read by a child node, stored). */
void lru_touch(struct lru *l, uint64_t idx);

/* Block idx (< n) was read now by a local VM: both stamps. */
void lru_touch_local(struct lru *l, uint64_t idx);

/* Block idx's stamp (0: not used since open). */
uint64_t lru_stamp(const struct lru *l, uint64_t idx);

/* Block idx's last local read (0: none since open). */
uint64_t lru_local_stamp(const struct lru *l, uint64_t idx);

#endif
