/* thunder — the node's block cache of one image version.
 *
 * On disk, one directory per image version under the cache root:
 *
 *   ROOT/<version hex>/manifest.json   the manifest's exact bytes
 *   ROOT/<version hex>/data            sparse file, image-sized; block i at
 *                                      offset i * block_size
 *   ROOT/<version hex>/bitmap          header + one bit per block: 1 = the
 *                                      block's data is durable and valid
 *
 * Crash safety: a block's bit is set on disk only after its data was
 * written and fdatasync'ed (blkcache_store() writes; a committer thread
 * batches fdatasync(data), then the bitmap write and fdatasync(bitmap)).
 * So after a crash every set bit names durable data; blocks whose bit is
 * clear are fetched again.  A block that was valid at open is verified
 * against the manifest the first time it is read, so a corrupted data file
 * is detected: the block is evicted (bit cleared), counted, and reported
 * absent so the caller fetches it again.
 *
 * A block's states, in memory:
 *   absent → stored (data written, served, not yet durable) → valid
 *   valid-unverified (at open) → valid (verified on first read) | absent
 *
 * Threads: all functions are thread-safe.  The caller stores a given block
 * at most once at a time (the fetch layer's single flight guarantees it).
 */
#ifndef THUNDER_BLKCACHE_H
#define THUNDER_BLKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manifest.h"

struct blkcache;

struct blkcache_stats {
  uint64_t present_blocks;   /* stored or valid */
  uint64_t present_bytes;
  uint64_t valid_blocks;     /* durable (bit set on disk) */
  uint64_t corrupt_evicted;  /* cached blocks that failed verification */
  uint64_t commits;          /* bitmap commits done */
};

/* Opens (creating if needed) the cache of manifest m under root.
 * manifest_bytes[0..len) are the manifest's exact bytes (their SHA-256 is
 * m->version).  An existing directory whose manifest differs, or whose
 * bitmap is malformed or of the wrong size, is reset (its data dropped,
 * logged).  commit_interval_ms bounds how long a stored block waits to
 * become durable.  NULL with a logged error. */
struct blkcache *blkcache_open(const char *root, const struct manifest *m,
                               const void *manifest_bytes, size_t len,
                               unsigned commit_interval_ms);

/* Commits what is pending, stops the committer, frees bc. */
void blkcache_close(struct blkcache *bc);

/* True if block idx can be read from the cache now. */
bool blkcache_has(struct blkcache *bc, uint64_t idx);

/* Reads len bytes at offset off inside block idx.  1: read; 0: the block
 * is absent (never stored, or it failed its first verification and was
 * evicted): fetch it; -1: I/O error, *err set. */
int blkcache_read(struct blkcache *bc, uint64_t idx, void *buf, uint32_t off,
                  uint32_t len, int *err);

/* Stores block idx, which the caller has verified (data holds the whole
 * block, manifest_block_len bytes).  Afterwards blkcache_has() is true;
 * the block becomes durable within commit_interval_ms.  0, or -1 with a
 * logged error (the block stays absent). */
int blkcache_store(struct blkcache *bc, uint64_t idx, const void *data);

/* Makes every stored block durable now.  0 or -1. */
int blkcache_sync(struct blkcache *bc);

void blkcache_get_stats(struct blkcache *bc, struct blkcache_stats *st);

/* Removes the cache directory of a version (it must not be open).
 * 0, or -1 with a logged error. */
int blkcache_remove(const char *root, const char *version_hex);

#endif
