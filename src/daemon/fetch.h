/* thunder — fetching verified blocks of one image from its upstreams.
 *
 * A fetcher holds an ordered upstream list (parent, grandparent, ...,
 * origin), each an NBD URI (nbd://HOST:PORT/EXPORT or
 * nbd+unix:///EXPORT?socket=PATH), with a small pool of libnbd connections
 * per upstream driven through libnbd's asynchronous API (several requests
 * in flight per connection, one I/O thread per connection).  Connections
 * are made when first needed and made again after a failure.  An upstream
 * whose export size differs from the manifest's is faulty.  A HOST is
 * resolved (getaddrinfo, inside libnbd) on the connection's I/O thread
 * and outside the connect deadline: prefer addresses to names.
 *
 * Consecutive blocks queued on one connection are asked for in one NBD
 * read of up to 256 KiB (blocks with waiters only with each other,
 * prefetches with prefetches); each block is still verified on its own
 * and fails over alone.
 *
 * A block is asked of the first healthy upstream.  Its bytes are checked
 * against the manifest (manifest_block_ok) before anyone sees them.  A
 * mismatch, error reply, short read, lost connection or timeout marks that
 * upstream faulty for holdoff_ms (logged with its URI, counted) and the
 * block is asked of the next one; when every upstream it has not yet
 * failed on is faulty, they are tried anyway, in order.  Each upstream is
 * tried at most once per round; when all have failed a block that
 * someone waits for, the block stalls: it is asked again, of every
 * upstream in order (the origin last), after a backoff (100 ms doubling
 * to 1 s), until one delivers or stall_timeout_ms have passed since it
 * first stalled, when it fails with EIO (stall_timeout_ms 0: at once).
 * A prefetch nobody waits for fails at once.  A timeout or lost
 * connection closes that connection and every request on it fails over.
 *
 * Outages: the time from the first stalled block until a block arrives
 * again is one outage, logged once when it starts and once when it ends
 * (with its duration), and counted; the connection failures inside it
 * are logged at debug level only.
 *
 * Single flight: concurrent requests for one block share one fetch.  The
 * deliver callback runs once per fetched block, before any waiter wakes
 * and while the block still counts as in flight, so a block is never
 * fetched twice: the caller's is_cached callback, checked under the same
 * lock by fetch_start and fetch_prefetch, sees it from then on (so
 * is_cached must be true as soon as deliver has returned).
 *
 * Threads: every function is thread-safe.  deliver runs on the fetcher's
 * I/O threads with no fetcher lock held; is_cached runs on the thread
 * calling fetch_start or fetch_prefetch, under the fetcher's lock, so it
 * must be quick and must not wait for anything that deliver holds.
 * Neither may call back into the fetcher.
 */
#ifndef THUNDER_FETCH_H
#define THUNDER_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manifest.h"

/* At most this many upstreams per fetcher. */
#define FETCH_UPSTREAMS_MAX 64

/* Defaults in parentheses.  conns_per_upstream, depth and timeout_ms must
 * be >= 1; holdoff_ms 0 means a faulty upstream is not skipped at all. */
struct fetch_params {
  unsigned conns_per_upstream; /* connections per upstream, >= 1 (2) */
  unsigned depth;              /* requests in flight per connection (16) */
  unsigned timeout_ms;         /* per request (from its issue on the
                                * connection), and per connect (1500) */
  unsigned holdoff_ms;         /* a faulty upstream is skipped this
                                * long (5000) */
  unsigned stall_timeout_ms;   /* a block no upstream can deliver is
                                * retried this long before EIO (0) */
};

/* An initializer with the defaults. */
#define FETCH_PARAMS_DEFAULT { 2, 16, 1500, 5000, 0 }

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
  uint64_t errors;          /* error replies and short reads (one per block),
                             * failed connects, timeouts and lost
                             * connections (one per connection) */
  bool faulty;              /* inside its hold-off now */
};

struct fetch_stats {
  uint64_t fetches;     /* fetches started (a block at most once at a
                         * time), prefetches included */
  uint64_t joined;      /* requests that joined a fetch in flight */
  uint64_t prefetches;  /* fetches started by fetch_prefetch */
  uint64_t failovers;   /* blocks that had to go past their first choice */
  uint64_t failed;      /* blocks no upstream could give */
  uint64_t stalls;      /* blocks that had to wait for an upstream */
  uint64_t stall_failures; /* of those, failed at stall_timeout_ms */
  uint64_t outages;     /* outages: every upstream failing (see above) */
  uint64_t outage_ms;   /* their total duration, the current one included */
  uint64_t stalled_now; /* blocks waiting for an upstream now */
  bool in_outage;       /* an outage is going on */
  size_t nupstreams;
  struct fetch_upstream_stats *upstreams; /* nupstreams entries, caller frees */
};

struct fetcher;
struct fetch_req;

/* A fetcher for the image m (which must outlive it) from uris[0..n),
 * 1 <= n <= FETCH_UPSTREAMS_MAX (copied).  p NULL means the defaults.
 * Starts the I/O threads; connections are made lazily.  NULL with a
 * logged error. */
struct fetcher *fetcher_new(const struct manifest *m, const char *const *uris,
                            size_t n, const struct fetch_params *p,
                            const struct fetch_callbacks *cb);

/* Fails every fetch in flight with ESHUTDOWN, waits for the I/O threads
 * and for every request handed out by fetch_start to go through
 * fetch_wait (so a thread holding one must not be the one calling
 * fetcher_free), frees f.  No other call on f may start once this has. */
void fetcher_free(struct fetcher *f);

/* Fails the blocks stalled now with ESHUTDOWN, and from now on fails a
 * block with EIO as soon as every upstream failed it (no stall): for a
 * daemon that stops and must not wait out an outage.  Fetches that go
 * well are not touched. */
void fetch_stop_stalling(struct fetcher *f);

/* Joins or starts the fetch of block idx; never waits on the network.
 * Every request returned must be passed to fetch_wait exactly once.
 * Returns NULL with *cached = true if the block is in the cache (read it
 * there), or NULL with *cached = false and errno set on allocation
 * failure (ENOMEM), idx out of range (EINVAL) or a closing fetcher
 * (ESHUTDOWN). */
struct fetch_req *fetch_start(struct fetcher *f, uint64_t idx, bool *cached);

/* Waits for the fetch (up to stall_timeout_ms and a fetch timeout or so
 * while no upstream delivers), copies len bytes at offset off of the
 * block into buf and releases req.  0, or -1 with *err (EIO: no upstream
 * could give a valid block; ESHUTDOWN: the fetcher is closing; EINVAL:
 * off + len exceeds the block). */
int fetch_wait(struct fetch_req *req, void *buf, uint32_t off, uint32_t len,
               int *err);

/* A fetch buffer a caller holds (fetch_wait_hold). */
struct fetch_hold;

/* Bytes of fetch buffers held at once, process-wide; beyond it
 * fetch_wait_hold copies.  A hold keeps the whole buffer of the NBD read
 * its block came in (up to 256 KiB), so this, not the reply sizes,
 * bounds the memory held. */
#define FETCH_HELD_MAX (64u * 1024 * 1024)

/* fetch_wait without the copy where it can: on success *data points at
 * the len bytes at offset off of the verified block, either inside the
 * fetch's buffer, which *hold then keeps (release it with fetch_hold_put
 * once the bytes are sent; it outlives the request and the fetcher), or,
 * with *hold NULL, copied into buf (beyond FETCH_HELD_MAX).  hold NULL:
 * exactly fetch_wait. */
int fetch_wait_hold(struct fetch_req *req, void *buf, uint32_t off,
                    uint32_t len, const void **data, struct fetch_hold **hold,
                    int *err);

/* Releases a hold of fetch_wait_hold (NULL: nothing); any thread. */
void fetch_hold_put(struct fetch_hold *h);

/* Waits until every request in reqs[0..n) (NULL entries are skipped) is
 * done or failed, sleeping at most once: the thread that finishes the
 * last of them wakes the caller (one wake-up per read, not one per
 * block).  Releases nothing: pass each to fetch_wait afterwards, which
 * then copies without waiting.  On allocation failure it returns at once
 * and fetch_wait waits for each in turn. */
void fetch_wait_ready(struct fetch_req *const *reqs, size_t n);

/* Starts fetching block idx unless it is cached or in flight, without
 * waiting (readahead).  Dropped when the fetcher is busy: nupstreams *
 * conns_per_upstream * depth blocks in flight. */
void fetch_prefetch(struct fetcher *f, uint64_t idx);

/* Plugging (issue 17): between fetch_plug and fetch_unplug, the calling
 * thread's fetch_start and fetch_prefetch queue their blocks without
 * waking the connections' threads; fetch_unplug wakes each that got work
 * once.  A read of several missing blocks queues them all first, so a
 * connection takes them as runs (one NBD read of up to 256 KiB each)
 * instead of waking at the first and issuing them one or two at a time.
 * Other threads are not affected.  A thread plugs one fetcher at a time
 * (plugging another unplugs the first) and must unplug it before it waits
 * for any of its fetches; while plugged it must not block (a pread, a
 * lock another thread may hold for long), or a block it queued early
 * waits as long, and so does every reader that joined it. */
void fetch_plug(struct fetcher *f);
void fetch_unplug(struct fetcher *f);

/* Fills st; free st->upstreams. */
void fetch_get_stats(struct fetcher *f, struct fetch_stats *st);

/* Fetches the manifest of image name from the first upstream that has
 * it, as the export "NAME@manifest" (see MANIFEST_EXPORT_SUFFIX), and
 * accepts it only if its SHA-256 is version_hex.  Synchronous; each step
 * (connect and handshake, opening the export, every 4 MiB read) has
 * timeout_ms.  On success *bytes (heap) and *len are set and 0 is
 * returned; else a negative value, with a warning logged per upstream
 * tried (with its URI and why) and an error at the end.  The value says
 * why: FETCH_MANIFEST_UNKNOWN when every upstream
 * answered that it has no such image, FETCH_MANIFEST_OTHER_VERSION when
 * every one answered and some serve another version, else -1.  why
 * (whylen bytes; NULL: none) gets the last upstream failure that was not
 * a version mismatch ("" if none): its URI and the client's reason (for
 * example a refused TLS handshake). */
#define FETCH_MANIFEST_UNKNOWN (-2)
#define FETCH_MANIFEST_OTHER_VERSION (-3)
int fetch_manifest(const char *const *uris, size_t n, const char *name,
                   const char *version_hex, unsigned timeout_ms,
                   char **bytes, size_t *len, char *why, size_t whylen);

#endif
