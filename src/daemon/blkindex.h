/* thunder — the node-wide index from a block's SHA-256 to where the node
 * may hold it: (cached version, block index) pairs.
 *
 * Every block of every version the cache manager has open is indexed from
 * its manifest when the version opens (zero blocks excepted: they are
 * never stored), whether or not the block is cached; a lookup walks the
 * pairs of a digest and the caller takes the first one whose block is
 * present.  So the index never has to follow stores and evictions, and it
 * is rebuilt from the manifests at every start: nothing of it is on disk.
 * Cost: one 32-byte entry per block of each open version (4 MiB for a
 * 8 GiB image of 64 KiB blocks).
 *
 * Threads: none of its own; the caller serialises blkindex_add and
 * blkindex_remove against everything, lookups may run together (the cache
 * manager's rwlock).
 */
#ifndef THUNDER_BLKINDEX_H
#define THUNDER_BLKINDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "digest.h"
#include "manifest.h"

struct blkindex;

/* An empty index.  NULL on allocation failure (logged). */
struct blkindex *blkindex_new(void);

/* Frees ix (owners stay the caller's).  NULL is a no-op. */
void blkindex_free(struct blkindex *ix);

/* Indexes every block i of m (which must outlive its entries) for which
 * skip is NULL or bit i of skip (LSB first) is clear, as (owner, i).
 * 0, or -1 on allocation failure (logged; nothing added). */
int blkindex_add(struct blkindex *ix, void *owner, const struct manifest *m,
                 const uint8_t *skip);

/* Drops every entry of owner. */
void blkindex_remove(struct blkindex *ix, void *owner);

/* Calls fn(owner, idx, opaque) for each indexed block whose digest is d
 * until fn returns true; returns whether one did. */
bool blkindex_find(struct blkindex *ix, const uint8_t d[DIGEST_LEN],
                   bool (*fn)(void *owner, uint64_t idx, void *opaque),
                   void *opaque);

#endif
