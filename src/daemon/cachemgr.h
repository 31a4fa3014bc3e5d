/* thunder — the node's cache as a whole: every cached image version under
 * the cache root, their capacity, eviction, and reuse of blocks across
 * versions and images.
 *
 * The cache manager owns the block caches (blkcache.h) of every version
 * on disk, attached or not.  An attached image (node.c) acquires its
 * version, reads and stores through the manager, and releases it when the
 * image closes; a released version stays open here, unattached, so its
 * blocks can still be reused, and is the first to be evicted.
 *
 *   capacity   --cache-max (bytes or % of the cache filesystem) and
 *              --cache-min-free (a floor of free space there): the data
 *              and metadata of all versions stay within
 *              min(cap, free + cached - floor); see reclaim.h for the
 *              eviction that keeps it so, and the slack.
 *   reuse      a block absent from its version is taken from any open
 *              version holding a block with the same SHA-256 (blkindex.h),
 *              copied and stored, instead of being fetched.
 *   zeros      a block whose digest is that of all zeros is never fetched
 *              nor stored: reads return zeros.
 *
 * On disk nothing is added to the block caches' own layout (ROOT/<version
 * hex>/{manifest.json,bitmap,data}, blkcache.h): which versions are
 * attached is node.c's (ROOT/attached/), the digest index and recency are
 * rebuilt in memory at start.  A version directory without a valid
 * manifest.json at start (a removal cut short) is removed.
 *
 * Threads: every function is thread-safe.  The manager's rwlock is held
 * shared by reuse lookups and by the reclaimer while it evicts blocks, and
 * exclusively to open, attach, release and remove versions.
 */
#ifndef THUNDER_CACHEMGR_H
#define THUNDER_CACHEMGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct json_object;
struct blkcache;

/* Defaults of --cache-max and --cache-min-free. */
#define CACHEMGR_DEFAULT_MAX "80%"
#define CACHEMGR_DEFAULT_MIN_FREE "1G"
/* A block a local VM read within this long is evicted after every block
 * of an attached version that no local VM read as recently (reclaim.h,
 * docs/node.md). */
#define CACHEMGR_DEFAULT_LOCAL_RECENT_MS (3600 * 1000)

struct cachemgr_params {
  uint64_t max_bytes;      /* cap in bytes, or 0 to use max_pct */
  unsigned max_pct;        /* cap in % of the filesystem's size */
  uint64_t min_free_bytes; /* free-space floor, or 0 to use min_free_pct */
  unsigned min_free_pct;
  unsigned commit_interval_ms; /* the block caches' commit batching */
  uint64_t local_recent_ms; /* 0: CACHEMGR_DEFAULT_LOCAL_RECENT_MS */
};

/* Parses SIZE: a number of bytes with an optional suffix K, M, G, T, P
 * (powers of 1024; "KiB", "KB" and "k" spellings too), or N% (0..100)
 * into *pct with *bytes = 0.  0, or -1 (nothing set). */
int cachemgr_parse_size(const char *s, uint64_t *bytes, unsigned *pct);

struct cachemgr;
struct cachever;

/* Opens every version cached under root (made if missing) and starts the
 * reclaimer.  NULL with a logged error. */
struct cachemgr *cachemgr_new(const char *root, const struct cachemgr_params *p);

/* Stops the reclaimer, closes every version (keeping them on disk), frees
 * cm.  Every acquired version must have been released. */
void cachemgr_free(struct cachemgr *cm);

enum cachemgr_result {
  CACHEMGR_OK = 0,
  CACHEMGR_NO_ROOM, /* the cap or the free space cannot hold the version's
                     * manifest and bitmap */
  CACHEMGR_ERROR,   /* anything else (logged) */
};

/* Acquires the version whose manifest bytes are mbytes[0..mlen) (valid,
 * already checked by the caller), opening its cache if needed.  NULL with
 * *res and err (errlen) saying why. */
struct cachever *cachemgr_acquire(struct cachemgr *cm, const char *mbytes,
                                  size_t mlen, enum cachemgr_result *res,
                                  char *err, size_t errlen);

/* Releases a version acquired before: when no image holds it any more it
 * is unattached (kept, evicted first).  NULL is a no-op. */
void cachemgr_release(struct cachever *cv);

/* Reads len bytes at off inside block idx: from the cache, as zeros, or
 * from an identical block elsewhere in the cache (which is then stored in
 * this version).  local: the reader is a local VM (the Unix socket), whose
 * reads keep a block in the tier evicted last; a child node's are not.
 * 1: read; 0: not in the cache, fetch it; -1: I/O error with *err (as
 * blkcache_read). */
int cachemgr_read(struct cachever *cv, uint64_t idx, void *buf, uint32_t off,
                  uint32_t len, bool local, int *err);

/* blkcache_read_run of this version's cache (the blocks read are touched
 * as cachemgr_read does): bytes read from offset off inside block first
 * on, and in *nblocks the blocks they touch; 0 when block first is not
 * verified in the cache, -1 with *err. */
ssize_t cachemgr_read_run(struct cachever *cv, uint64_t first, uint32_t off,
                          size_t len, void *buf, bool local,
                          uint64_t *nblocks, int *err);

/* Single flight across versions (flight.h): before fetching block idx,
 * begin its flight.  *own: fetch it, then cachemgr_flight_done and
 * cachemgr_flight_put once the fetch ended; NULL: fetch it (the same
 * block is in flight, the fetcher joins it); else another block of the
 * same digest is being fetched: cachemgr_flight_wait (it drops the
 * reference), then cachemgr_read copies the block, or fetch it if that
 * fetch failed. */
struct flight;
struct flight *cachemgr_flight_begin(struct cachever *cv, uint64_t idx,
                                     bool *own);
void cachemgr_flight_done(struct cachever *cv, uint64_t idx);
void cachemgr_flight_put(struct cachever *cv, struct flight *fl);
void cachemgr_flight_wait(struct cachever *cv, struct flight *fl);

/* A local VM read block idx now (one it waited for a fetch of). */
void cachemgr_touch_local(struct cachever *cv, uint64_t idx);

/* True if block idx needs no fetch: cached, zero, or copied now from an
 * identical cached block.  Quick enough for fetch's is_cached. */
bool cachemgr_has(struct cachever *cv, uint64_t idx);

/* True if block idx is cached or zero: a read of it needs neither a
 * fetch nor a copy.  Lock-free, no syscall (the NBD server asks it per
 * read, see export_ops.may_block). */
bool cachemgr_cached(struct cachever *cv, uint64_t idx);

/* Stores verified block idx (a whole block).  A refusal (over capacity,
 * disk full, being evicted) is counted as served uncached; a full cache is
 * logged once per interval with the count. */
void cachemgr_store(struct cachever *cv, uint64_t idx, const void *data);

/* The version's block cache (for its counters). */
struct blkcache *cachemgr_blkcache(struct cachever *cv);

/* {"cap_bytes", "min_free_bytes", "limit_bytes", "used_bytes",
 *  "version_bytes", "evicted_blocks", "evicted_bytes", "reused_blocks",
 *  "reused_bytes", "reused_from": [{"version", "blocks", "bytes"}],
 *  "zero_blocks_skipped", "shared_fetch_blocks", "uncached_blocks"}: the
 * version's cache and the
 * node's capacity.  NULL on allocation failure. */
struct json_object *cachemgr_version_json(struct cachever *cv);

/* The whole cache: capacity, totals and each version on disk with its
 * bytes and whether it is attached.  NULL on allocation failure. */
struct json_object *cachemgr_json(struct cachemgr *cm);

/* Removes every unattached version now (their blocks and directories).
 * Returns the bytes freed. */
uint64_t cachemgr_gc(struct cachemgr *cm);

#endif
