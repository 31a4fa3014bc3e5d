/* thunder — fetching verified blocks of one image from its upstreams.
 *
 * A fetcher holds an ordered upstream list (parent, grandparent, ...,
 * origin), each an NBD URI (nbd://HOST:PORT/EXPORT or
 * nbd+unix:///EXPORT?socket=PATH), with a small pool of libnbd connections
 * per upstream driven through libnbd's asynchronous API (several requests
 * in flight per connection, one I/O thread per connection).
 *
 * A block is asked of the first healthy upstream.  Its bytes are checked
 * against the manifest (manifest_block_ok) before anyone sees them.  A
 * mismatch, short read, error or timeout marks that upstream faulty for
 * holdoff_ms (logged with its URI, counted) and the block is asked of the
 * next one; when every upstream is faulty they are all tried again in
 * order before the fetch fails with EIO.
 *
 * Single flight: concurrent requests for one block share one fetch.  The
 * deliver callback runs once per fetched block, before any waiter wakes
 * and while the block still counts as in flight, so a block is never
 * fetched twice: the caller's is_cached callback, checked under the same
 * lock by fetch_start and fetch_prefetch, sees it from then on.
 *
 * Threads: every function is thread-safe; callbacks run on the fetcher's
 * I/O threads and must not call back into the fetcher.
 */
#ifndef THUNDER_FETCH_H
#define THUNDER_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manifest.h"

struct fetch_params {
  unsigned conns_per_upstream; /* connections per upstream, >= 1 (2) */
  unsigned depth;              /* requests in flight per connection (16) */
  unsigned timeout_ms;         /* per request, and per connect (1500) */
  unsigned holdoff_ms;         /* a faulty upstream is skipped this long (5000) */
};

struct fetch_callbacks {
  /* True if block idx is in the caller's cache. */
  bool (*is_cached)(void *opaque, uint64_t idx);
  /* A verified block arrived from upstream number from (0 = parent):
   * store it.  data holds manifest_block_len(m, idx) bytes. */
  void (*deliver)(void *opaque, uint64_t idx, const void *data,
                  unsigned from);
  void *opaque;
};

struct fetch_upstream_stats {
  const char *uri;          /* valid while the fetcher lives */
  uint64_t blocks, bytes;   /* verified blocks received from it */
  uint64_t verify_failures; /* blocks whose bytes did not match */
  uint64_t errors;          /* errors, short reads, timeouts, lost connections */
  bool faulty;              /* inside its hold-off now */
};

struct fetch_stats {
  uint64_t fetches;     /* blocks fetched (each once) */
  uint64_t joined;      /* requests that joined a fetch in flight */
  uint64_t prefetches;  /* fetches started by fetch_prefetch */
  uint64_t failovers;   /* blocks that had to go past their first choice */
  uint64_t failed;      /* blocks no upstream could give */
  size_t nupstreams;
  struct fetch_upstream_stats *upstreams; /* nupstreams entries, caller frees */
};

struct fetcher;
struct fetch_req;

/* A fetcher for the image m (which must outlive it) from uris[0..n).
 * Connections are made lazily.  NULL with a logged error. */
struct fetcher *fetcher_new(const struct manifest *m, const char *const *uris,
                            size_t n, const struct fetch_params *p,
                            const struct fetch_callbacks *cb);

/* Fails every fetch in flight with ESHUTDOWN, waits for the I/O threads,
 * frees f. */
void fetcher_free(struct fetcher *f);

/* Joins or starts the fetch of block idx; never waits on the network.
 * Returns NULL with *cached = true if the block is in the cache (read it
 * there), or NULL with *cached = false on allocation failure. */
struct fetch_req *fetch_start(struct fetcher *f, uint64_t idx, bool *cached);

/* Waits for the fetch, copies len bytes at offset off of the block into
 * buf and releases req.  0, or -1 with *err (EIO: no upstream could give
 * a valid block; ESHUTDOWN: the fetcher is closing). */
int fetch_wait(struct fetch_req *req, void *buf, uint32_t off, uint32_t len,
               int *err);

/* Starts fetching block idx unless it is cached or in flight, without
 * waiting (readahead).  Dropped when the fetcher is busy. */
void fetch_prefetch(struct fetcher *f, uint64_t idx);

/* Fills st; free st->upstreams. */
void fetch_get_stats(struct fetcher *f, struct fetch_stats *st);

/* Fetches the manifest of image name from the first upstream that has
 * it, as the export "NAME@manifest" (see MANIFEST_EXPORT_SUFFIX), and
 * accepts it only if its SHA-256 is version_hex.  On success *bytes (heap)
 * and *len are set and 0 is returned; else -1 with a logged error per
 * upstream tried. */
int fetch_manifest(const char *const *uris, size_t n, const char *name,
                   const char *version_hex, unsigned timeout_ms,
                   char **bytes, size_t *len);

#endif
