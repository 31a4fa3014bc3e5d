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
 * The bitmap starts with a header ("THNDBMP1", format, block size, block
 * count, version digest); a directory whose manifest.json, bitmap header or
 * file sizes do not match is reset (see the design note in blkcache.c).
 * The directory is created 0700 and flock'ed while open, so a second open
 * of the same version, in this process or another, fails (EBUSY).
 *
 * A block's states, in memory:
 *   absent → stored (data written, served, not yet durable) → valid
 *   valid-unverified (at open) → valid (verified on first read) | absent
 *   stored | valid | valid-unverified → evicting (blkcache_evict: bit
 *     cleared on disk, then the hole punched) → absent
 *
 * At open, space of blocks whose bit is clear (a store or an eviction cut
 * short by a crash) is released (hole punched).  A shared quota
 * (blkcache_set_quota) counts blocks present or being evicted and refuses
 * stores beyond its limit: the node's capacity (cachemgr.h).
 *
 * Threads: all functions are thread-safe.  The caller stores a given block
 * at most once at a time (the fetch layer's single flight guarantees it);
 * storing it again, even concurrently, is harmless, as the bytes are the
 * same verified bytes.  Reads of verified blocks take no lock: one atomic
 * load and one pread into the caller's buffer.
 */
#ifndef THUNDER_BLKCACHE_H
#define THUNDER_BLKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "manifest.h"

struct blkcache;

struct blkcache_stats {
  uint64_t present_blocks;   /* stored or valid */
  uint64_t present_bytes;
  uint64_t valid_blocks;     /* durable (bit set on disk) */
  uint64_t valid_bytes;
  uint64_t corrupt_evicted;  /* cached blocks that failed verification */
  uint64_t commits;          /* bitmap commits done */
  uint64_t evicted_blocks;   /* blocks blkcache_evict released */
  uint64_t evicted_bytes;
};

/* A capacity account shared by caches (the node's, cachemgr.h): used
 * counts the bytes of blocks present or being evicted in every cache
 * using it; a store of an absent block that would take used past limit is
 * refused with EDQUOT.  The check is not a reservation, so stores running
 * at once may pass limit by one block each (the slack of blocks in
 * flight). */
struct blkcache_quota {
  _Atomic uint64_t used;
  _Atomic uint64_t limit;
};

/* Opens (creating root and the directory if needed) the cache of
 * manifest m under root.  m must stay valid until blkcache_close.
 * manifest_bytes[0..len) are the manifest's exact bytes; their SHA-256
 * must be m->version (checked).  An existing directory whose manifest
 * differs, whose bitmap is malformed or of the wrong size, or whose data
 * file has the wrong size is reset (its data dropped, a warning logged).
 * commit_interval_ms bounds how long a stored block waits to become
 * durable (0: commit at once); 256 pending blocks commit at once too.
 * NULL with a logged error (EBUSY if the cache is open already). */
struct blkcache *blkcache_open(const char *root, const struct manifest *m,
                               const void *manifest_bytes, size_t len,
                               unsigned commit_interval_ms);

/* Commits what is pending, stops the committer, closes and frees bc.
 * No other call on bc may be running or follow.  NULL is a no-op. */
void blkcache_close(struct blkcache *bc);

/* True if block idx can be read from the cache now (false when idx is
 * out of range). */
bool blkcache_has(struct blkcache *bc, uint64_t idx);

/* Reads len bytes at offset off inside block idx.  1: read; 0: the block
 * is absent (never stored, or it failed its first verification and was
 * evicted, which is logged and counted): fetch it; -1: I/O error, short
 * read (EIO) or a range outside the block (EINVAL), logged, *err set.
 * buf's content is undefined unless 1 is returned.  The first read of a
 * block valid at open reads and hashes the whole block. */
int blkcache_read(struct blkcache *bc, uint64_t idx, void *buf, uint32_t off,
                  uint32_t len, int *err);

/* Reads up to len bytes from offset off inside block first on, as far as
 * the blocks from first on are verified, in one pread (a cached read of
 * several blocks is one system call, not one per block).  The number of
 * bytes read (the verified blocks' bytes, at most len), 0 when block first
 * is not verified (or off is outside it), -1 on an I/O error (logged,
 * *err set).  A block not yet verified ends the run: blkcache_read it. */
ssize_t blkcache_read_run(struct blkcache *bc, uint64_t first, uint32_t off,
                          size_t len, void *buf, int *err);

/* Stores block idx, which the caller has verified (data holds the whole
 * block, manifest_block_len bytes).  Afterwards blkcache_has() is true;
 * the block becomes durable within commit_interval_ms (plus the time of
 * the syncs).  0, or -1 with errno and the block absent: logged, except
 * EDQUOT (over the quota), ENOSPC (the disk is full) and EBUSY (being
 * evicted), which the caller counts. */
int blkcache_store(struct blkcache *bc, uint64_t idx, const void *data);

/* Waits until every block stored and every eviction made before the call
 * is on disk.  0, or -1 if a commit failed meanwhile (logged by the
 * committer; blocks whose data sync failed are dropped, so they are fetched
 * again; after a failed bitmap write the blocks stay cached and their bits
 * are written by the next commit). */
int blkcache_sync(struct blkcache *bc);

/* Current counters (each read atomically; not one snapshot). */
void blkcache_get_stats(struct blkcache *bc, struct blkcache_stats *st);

/* Makes bc count its blocks in q (moving them from a previous quota);
 * NULL stops counting. */
void blkcache_set_quota(struct blkcache *bc, struct blkcache_quota *q);

/* True if block idx is present and durable: a candidate for eviction. */
bool blkcache_evictable(struct blkcache *bc, uint64_t idx);

/* Evicts the blocks idx[0..n) that are present (others are skipped):
 * they stop being readable at once, their bits are cleared on disk
 * (bitmap written and fdatasync'ed), and only then their space is
 * released (FALLOC_FL_PUNCH_HOLE).  Reads that overlap the release read
 * again and find the block absent; a store of a block while it is being
 * evicted is refused (EBUSY), later stores cache it again.  Waits for the
 * bitmap commit.  Returns the bytes evicted. */
uint64_t blkcache_evict(struct blkcache *bc, const uint64_t *idx, size_t n);

/* Removes the cache directory root/version_hex and its files.
 * version_hex must be 64 lowercase hex digits (EINVAL otherwise: no path
 * can be smuggled in); a cache that is open fails with EBUSY; a directory
 * that does not exist is not an error.  0, or -1 with a logged error. */
int blkcache_remove(const char *root, const char *version_hex);

#endif
