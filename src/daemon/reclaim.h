/* thunder — eviction: keeps the node's cache (cachemgr.h) within its
 * capacity.
 *
 * A thread wakes every RECLAIM_POLL_MS, or at once when a store was
 * refused, recomputes the limit from the filesystem (cap, free floor) and,
 * when the data held passes RECLAIM_HIGH_PCT of the limit, evicts down to
 * RECLAIM_LOW_PCT, in this order:
 *
 *   1. versions no longer attached: their blocks, least recently used
 *      first; a version left with no block is removed (its directory
 *      too);
 *   2. blocks of attached versions that no local VM (the Unix socket)
 *      read in the last local_recent_ms (cachemgr_params, 1 h by
 *      default): read by child nodes only, fetched ahead, or not read for
 *      long; least recently used (by anyone) first;
 *   3. the other blocks of attached versions, least recently used first.
 *   In 2 and 3 never a block used in the last RECLAIM_GUARD_MS (a read in
 *      progress).  A read that still overlaps an eviction (a slow one)
 *      sees the hole being punched (blkcache's seqlock), reads again,
 *      finds the block absent and fetches it: never wrong bytes.
 *
 * Each block is evicted crash-safely by blkcache_evict (bit cleared on
 * disk, then the hole punched); a read overlapping it reads again and
 * fetches.  Stores that would pass the limit are refused meanwhile (the
 * block is served, not cached), so the cap holds at all times up to the
 * slack of blocks being stored at that instant (one per fetch connection
 * at most) plus the filesystem's rounding.
 *
 * Threads: reclaim_* run on the manager's thread or under its rules
 * (cacheint.h).
 */
#ifndef THUNDER_RECLAIM_H
#define THUNDER_RECLAIM_H

#include <stdbool.h>
#include <stdint.h>

struct cachemgr;

#define RECLAIM_POLL_MS 100
#define RECLAIM_HIGH_PCT 95
#define RECLAIM_LOW_PCT 90
#define RECLAIM_GUARD_MS 50

/* The reclaimer thread's body (arg: the cachemgr). */
void *reclaim_main(void *arg);

/* Evicts until the data held is at most target bytes (or nothing more
 * may go), in the order above.  all_unattached: also removes every
 * unattached version whatever the target (cachemgr_gc).  Returns the
 * bytes freed.  The caller holds no lock. */
uint64_t reclaim_run(struct cachemgr *cm, uint64_t target, bool all_unattached);

#endif
