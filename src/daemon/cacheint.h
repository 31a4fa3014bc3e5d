/* thunder — what cachemgr.c and reclaim.c share (internal: nothing else
 * includes it).  Names are cachemgr_internal_*.
 *
 * Locking: cm->lock (rwlock, writers preferred).  The version list, refs,
 * released_ms and meta_bytes change under it exclusively; a version is
 * never closed while anyone holds the lock shared.  Counters are atomics.
 * cm->qlock guards the reclaimer's wake-up and the rate-limited log.
 */
#ifndef THUNDER_CACHEINT_H
#define THUNDER_CACHEINT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "blkcache.h"
#include "blkindex.h"
#include "cachemgr.h"
#include "flight.h"
#include "lru.h"
#include "manifest.h"

#define CACHEMGR_REUSE_FROM_MAX 4

struct cachemgr_reuse_from {
  char version[17]; /* first 16 hex digits; "" unused */
  _Atomic uint64_t blocks, bytes;
};

struct cachever {
  struct cachemgr *cm;
  struct manifest *m; /* owned */
  struct blkcache *bc;
  struct lru *lru;
  uint8_t *zero;       /* bit per block: all zeros */
  uint64_t meta_bytes; /* manifest.json + bitmap on disk */
  unsigned refs;       /* images holding it (under cm->lock) */
  uint64_t released_ms; /* lru_now() when refs went to 0 */
  struct cachever *next;

  _Atomic uint64_t reused_blocks, reused_bytes, zero_reads, uncached;
  _Atomic uint64_t shared_fetches; /* misses that waited for another
                                      version's fetch of the same digest */
  pthread_mutex_t from_lock;
  struct cachemgr_reuse_from from[CACHEMGR_REUSE_FROM_MAX];
};

struct cachemgr {
  char *root;
  struct cachemgr_params p;
  pthread_rwlock_t lock;
  struct cachever *versions;
  struct blkindex *index;
  struct flights *flights; /* fetches in flight by digest (flight.h) */
  uint64_t meta_bytes; /* of every open version */

  struct blkcache_quota quota; /* data bytes; limit set by the reclaimer */
  /* Last computed by cachemgr_internal_limits. */
  _Atomic uint64_t cap, floor, allowed;
  _Atomic uint64_t evicted_blocks, evicted_bytes, versions_removed;
  _Atomic uint64_t uncached;

  pthread_mutex_t qlock;
  pthread_cond_t qwake;
  bool stop, kicked;
  pthread_t reclaimer;
  bool reclaimer_started;
};

/* Computes the cap, floor and allowed bytes from the filesystem now and
 * sets quota.limit.  Returns allowed. */
uint64_t cachemgr_internal_limits(struct cachemgr *cm);

/* Closes and removes version cv, which the caller has unlinked from the
 * list and the index (under the exclusive lock, refs 0); called without
 * the lock. */
void cachemgr_internal_remove(struct cachemgr *cm, struct cachever *cv);

#endif
