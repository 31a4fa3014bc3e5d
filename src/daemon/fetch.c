/* thunder — fetching verified blocks of one image from its upstreams; see
 * fetch.h.
 *
 * Threads.  One I/O thread per upstream connection (nupstreams *
 * conns_per_upstream threads, started by fetcher_new).  Each owns its
 * libnbd handle outright: it alone connects it (lazily, when work arrives),
 * issues nbd_aio_pread, runs poll(2) over nbd_aio_get_fd() in the
 * direction nbd_aio_get_direction() asks for plus its eventfd, verifies
 * what arrives, calls deliver, and closes the handle.  Other threads never
 * touch a handle: they append a request to the connection's queue and
 * write its eventfd ("kick").
 *
 * Lock.  One mutex, f->lock, guards the in-flight table (idx -> request,
 * chained hash), every request's state, refs, tried mask and queue links,
 * every connection's queue and load, every upstream's counters and
 * hold-off, and the fetcher's counters.  It is never held across network
 * I/O, SHA-256 or deliver; is_cached is called under it (that is what
 * makes "in flight or cached" atomic for fetch_start).  libnbd completion
 * callbacks only set two fields of the request that the owning I/O thread
 * reads afterwards; they run on that thread.
 *
 * A request (struct fetch_req, one per block in flight) goes through:
 *
 *   QUEUED   on connection c's queue (c chosen by dispatch_locked: the
 *            first upstream this block has not failed on and that is not
 *            in hold-off, else the first it has not failed on; within the
 *            upstream the least loaded connection)
 *   ISSUED   taken by c's thread into c->issued[] (at most depth),
 *            consecutive blocks chained (bnext) into runs that are one
 *            NBD read into one shared buffer (conn_take_locked), and
 *            handed to libnbd with a deadline of now + timeout_ms per
 *            block of the run (runs within the server's maximum block
 *            size, conn_ready); when
 *            the bytes are in, the thread verifies them and calls deliver
 *            with the lock dropped, the request still in the table
 *   DONE     buf holds the verified block; out of the table; waiters woken
 *   STALLED  every upstream failed it this round and someone waits for
 *            it: on f->stalled (linked through qnext) until retry_at,
 *            when the retry thread clears tried and dispatches it again
 *            (or fails it with EIO once stall_timeout_ms have passed
 *            since stall_since)
 *   FAILED   err is EIO (every upstream failed this block and it may not
 *            stall, or its stall ran out; out of the table) or ESHUTDOWN
 *            (fetcher_free; left in the table, which fetcher_free empties
 *            after joining the threads)
 *
 *   QUEUED/ISSUED --failure on upstream u--> tried |= u, u held off,
 *            dispatch_locked again: QUEUED elsewhere, STALLED, or
 *            FAILED(EIO)
 *   ISSUED --error reply to a read of several blocks--> QUEUED on the
 *            same connection, solo (req_split): asked for alone, so
 *            only a block that fails on its own fails over
 *   STALLED --retry_at--> QUEUED (tried = 0), or FAILED(EIO) at the bound
 *
 * A failure is a SHA-256 mismatch or an error reply to a read of that
 * block alone (that request only; a read of several is split first),
 * or a lost connection, a failed connect or a timeout (the connection is
 * closed and every request on it, issued or queued, fails over).  Each
 * upstream is tried at most once per round, so a round ends within
 * nupstreams attempts; a block stalls for at most stall_timeout_ms (plus
 * the round in flight at the bound, at most nupstreams timeouts).
 *
 * Outage.  f->outage_since is set when a block stalls and no outage is
 * going on, and cleared when a block arrives: one warning at each end,
 * and while it lasts conn_fail and req_failed log at debug level (every
 * retry round would otherwise log a line per connection).  The retry
 * thread (one per fetcher, only with stall_timeout_ms) sleeps on
 * f->retry_cond (CLOCK_MONOTONIC) until the nearest retry_at.
 *
 * Noticing a dead connection.  Every libnbd call that runs the state
 * machine (aio_connect_uri, aio_pread, aio_notify_read/write) may leave
 * the handle dead even when it returned success (aio_pread returns a
 * cookie and the send then fails), so after each one conn_reap collects
 * finished reads and checks nbd_aio_is_dead/is_closed; a dead handle has
 * no fd, and polling it would only end at the request deadline.
 * Timeouts: a request's deadline runs from its issue, but is pushed back
 * while its connection keeps receiving (req_deadline: a congested
 * upstream is slow, not dead); the connect's runs from
 * nbd_aio_connect_uri.  Poll sleeps until the nearest one.
 *
 * Waking.  A reader waiting for one block sleeps on the request's cond
 * (fetch_wait); a reader waiting for several (fetch_wait_ready, a node
 * read spanning blocks) sleeps once on a group of its own that every one
 * of those requests links to, and is woken only by the thread finishing
 * the last of them: one wake-up per read instead of one per block
 * (issue 17; a wake-up is a futex call and a context switch).  The I/O
 * thread signals after dropping the lock, holding a reference on the
 * group as on the request.
 *
 * Ownership.  A request holds one reference for the table (dropped when
 * it leaves the table) and one per waiter (dropped by fetch_wait).  The
 * I/O thread works under the table's reference, and a request leaves the
 * table only from the thread that holds it (or in dispatch_locked when it
 * is on no connection, or in fetcher_free after the threads are joined),
 * so libnbd never writes into a freed buffer.  A request fails over only
 * once libnbd is done with its buffer: its command completed (mismatch,
 * error reply) or its handle was closed (conn_fail closes first), so two
 * handles never fill one buffer.
 */
#include "fetch.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "manclient.h"

#define COMPONENT "fetch"

enum req_state {
  REQ_QUEUED,
  REQ_ISSUED,
  REQ_STALLED,
  REQ_DONE,
  REQ_FAILED,
};

struct conn;
struct fetch_group;

/* Consecutive blocks queued on one connection are asked for in one NBD
 * read of at most this many bytes (at least one block), received into
 * one buffer they share (issue 17: a request sent upstream cost ~14 us
 * of the node's CPU on loopback TCP, a reply's receive as much again;
 * per 64 KiB block that was ~15% of a cold relay).  Only blocks someone
 * waits for are merged with each other, and prefetches with prefetches,
 * so a read never waits for a readahead block's bytes. */
#define BATCH_BYTES (256u * 1024)
/* Spare read buffers kept process-wide (beyond that they are freed). */
#define SPARE_BUFS_MAX 16

/* A buffer one NBD read fills: requests point into it, one reference
 * each, and a reply that sends a block straight from it (fetch_wait_hold)
 * another.  The count is atomic: the last holder may be a server thread
 * after the fetcher is gone.  Reused through the process-wide spare list
 * (no page faults and no malloc of 256 KiB per read). */
struct fetch_buf {
  _Atomic unsigned refs;
  size_t size;            /* bytes of data */
  struct fetch_buf *next; /* on spares */
  char data[];
};

/* Spare read buffers of all fetchers (exact sizes are reused). */
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fetch_buf *spares;
static size_t nspares;
/* Bytes of the buffers replies hold now (FETCH_HELD_MAX at most). */
static _Atomic uint64_t held_bytes;

/* Drops a reference to b; the last one keeps it as a spare or frees it. */
static void
buf_put(struct fetch_buf *b)
{
  if (b == NULL || atomic_fetch_sub(&b->refs, 1) != 1)
    return;
  /* Kept first; when the list is full its oldest goes instead, so that
   * spares of a size no longer asked for (single blocks, after a burst of
   * short runs) do not hold every place. */
  struct fetch_buf *old = NULL;
  pthread_mutex_lock(&spare_lock);
  if (nspares == SPARE_BUFS_MAX) {
    struct fetch_buf **pp = &spares;
    while ((*pp)->next)
      pp = &(*pp)->next;
    old = *pp;
    *pp = NULL;
    nspares--;
  }
  b->next = spares;
  spares = b;
  nspares++;
  pthread_mutex_unlock(&spare_lock);
  free(old);
}

/* A group's entry on one of its requests' lists. */
struct fetch_link {
  struct fetch_group *g;
  struct fetch_link *next;
};

/* One fetch_wait_ready call: its caller sleeps on cond until pending
 * reaches 0, woken once by whichever thread finishes its last request.
 * Allocated with its links (one per request it waits for).  refs: the
 * caller's, plus one per thread that signals it with the lock dropped
 * (req_arrived), so cond outlives the signal.  Under f->lock. */
struct fetch_group {
  pthread_cond_t cond;
  size_t pending;            /* its requests not yet DONE or FAILED */
  unsigned refs;
  struct fetch_group *wnext; /* on a waker's list (groups_wake) */
  struct fetch_link links[];
};

struct fetch_req {
  struct fetcher *f;
  uint64_t idx;
  uint32_t len;
  /* Under f->lock: */
  enum req_state state;
  int err;                 /* with REQ_FAILED */
  unsigned refs;           /* 1 for the table + 1 per waiter */
  uint64_t tried;          /* bit i: upstream i failed this block */
  bool failed_over;        /* counted in f->failovers */
  bool solo;               /* its merged read failed: the next one is
                            * its own (req_split_locked) */
  int64_t stall_since;     /* ms: first stalled (0: never) */
  int64_t retry_at;        /* ms, while STALLED */
  unsigned backoff_ms;     /* the last stall's wait */
  struct conn *conn;       /* QUEUED or ISSUED on this connection */
  struct fetch_req *hnext; /* table chain */
  struct fetch_req *qnext; /* connection queue, or f->stalled */
  pthread_cond_t cond;     /* broadcast at DONE / FAILED */
  struct fetch_link *links; /* groups waiting for it (fetch_wait_ready) */
  unsigned sleepers;        /* fetch_wait callers asleep on cond */
  struct fetch_buf *fb;    /* holds buf (from its last issue), or NULL */
  char *buf;               /* len bytes in fb, once issued */
  /* The owning I/O thread's, while ISSUED: */
  struct fetch_req *bnext; /* the next block of the same NBD read */
  bool bhead;              /* the first block of its NBD read */
  int64_t deadline;        /* ms, monotonic */
  bool io_done;            /* set by the libnbd completion callback */
  int io_err;
};

struct upstream;

struct conn {
  struct fetcher *f;
  struct upstream *up;
  pthread_t thread;
  bool started;
  int wake_fd; /* eventfd */
  /* Under f->lock: */
  struct fetch_req *qhead, *qtail;
  unsigned load; /* requests queued or issued here */
  bool kicked;   /* wake_fd written since the thread last looked */
  bool kick_deferred; /* work queued by a plugged thread (fetch_plug) */
  /* The I/O thread's own: */
  struct nbd_handle *h;
  bool ready;               /* h finished its handshake */
  uint32_t batch_blocks;    /* blocks per NBD read at most on h: the
                             * fetcher's, capped by the server's maximum
                             * block size (conn_ready) */
  int64_t connect_deadline; /* while h is connecting */
  int64_t last_rx;          /* ms: h last received bytes (or connected) */
  struct fetch_req **issued; /* depth slots */
  unsigned nissued;
  struct fetch_req **heads;  /* depth slots: conn_issue's scratch */
};

struct upstream {
  char *uri;
  unsigned index;
  struct conn *conns;
  /* Under f->lock: */
  int64_t holdoff_until; /* ms, monotonic; faulty while now < this */
  uint64_t blocks, bytes, verify_failures, errors;
};

struct fetcher {
  const struct manifest *m;
  struct fetch_params p;
  struct fetch_callbacks cb;
  struct upstream *ups;
  size_t nups;
  size_t prefetch_limit; /* prefetches are dropped at this many in flight */
  uint32_t batch_blocks;  /* blocks per NBD read at most (BATCH_BYTES) */
  pthread_mutex_t lock;
  /* Under lock: */
  struct fetch_req **table;
  size_t nbuckets; /* power of two */
  unsigned shift;  /* 64 - log2(nbuckets) */
  size_t nentries;
  size_t nwaiters; /* requests handed out, not yet through fetch_wait */
  pthread_cond_t drained; /* nwaiters reached 0 while stopping */
  bool stopping;
  uint64_t fetches, joined, prefetches, failovers, failed;
  /* Stalls (under lock): */
  struct fetch_req *stalled; /* STALLED requests, linked through qnext */
  size_t nstalled;
  pthread_cond_t retry_cond; /* CLOCK_MONOTONIC; wakes the retry thread */
  pthread_t retry_thread;
  bool retry_started;
  bool no_stall;             /* fetch_stop_stalling was called */
  int64_t outage_since;      /* ms; 0: no outage */
  bool outage_failed_logged; /* a stall ran out in this outage */
  uint64_t stalls, stall_failures, outages, outage_ms;
};

static int64_t
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
lock(struct fetcher *f)
{
  if (pthread_mutex_lock(&f->lock) != 0)
    abort();
}

static void
unlock(struct fetcher *f)
{
  pthread_mutex_unlock(&f->lock);
}

/* ---- In-flight table (caller holds f->lock) ---------------------------- */

static size_t
bucket(const struct fetcher *f, uint64_t idx)
{
  return (size_t)((idx * UINT64_C(0x9E3779B97F4A7C15)) >> f->shift);
}

static struct fetch_req *
table_find(struct fetcher *f, uint64_t idx)
{
  for (struct fetch_req *r = f->table[bucket(f, idx)]; r; r = r->hnext)
    if (r->idx == idx)
      return r;
  return NULL;
}

/* Doubles the table; on allocation failure it just stays as it is. */
static void
table_grow(struct fetcher *f)
{
  size_t n = f->nbuckets * 2;
  struct fetch_req **t = calloc(n, sizeof *t);
  if (t == NULL)
    return;
  struct fetch_req **old = f->table;
  size_t oldn = f->nbuckets;
  f->table = t;
  f->nbuckets = n;
  f->shift--;
  for (size_t i = 0; i < oldn; i++) {
    struct fetch_req *r = old[i];
    while (r) {
      struct fetch_req *next = r->hnext;
      size_t b = bucket(f, r->idx);
      r->hnext = t[b];
      t[b] = r;
      r = next;
    }
  }
  free(old);
}

static void
table_insert(struct fetcher *f, struct fetch_req *r)
{
  if (f->nentries >= f->nbuckets)
    table_grow(f);
  size_t b = bucket(f, r->idx);
  r->hnext = f->table[b];
  f->table[b] = r;
  f->nentries++;
}

static void
table_remove(struct fetcher *f, struct fetch_req *r)
{
  for (struct fetch_req **p = &f->table[bucket(f, r->idx)]; *p;
       p = &(*p)->hnext)
    if (*p == r) {
      *p = r->hnext;
      r->hnext = NULL;
      f->nentries--;
      return;
    }
}

/* ---- Requests (caller holds f->lock) ----------------------------------- */

/* A new request for idx, in the table, holding the table's reference. */
static struct fetch_req *
req_new_locked(struct fetcher *f, uint64_t idx)
{
  uint32_t len = manifest_block_len(f->m, idx);
  struct fetch_req *r = malloc(sizeof *r);
  if (r == NULL) {
    log_error(COMPONENT, "block %" PRIu64 ": malloc: %m", idx);
    return NULL;
  }
  memset(r, 0, sizeof *r);
  r->f = f;
  r->idx = idx;
  r->len = len;
  r->refs = 1;
  if (pthread_cond_init(&r->cond, NULL) != 0) {
    free(r);
    errno = ENOMEM;
    return NULL;
  }
  table_insert(f, r);
  return r;
}

static bool
req_finished(const struct fetch_req *r)
{
  return r->state == REQ_DONE || r->state == REQ_FAILED;
}

/* Drops r's reference to its buffer. */
static void
req_unbuf_locked(struct fetcher *f, struct fetch_req *r)
{
  (void)f;
  buf_put(r->fb);
  r->fb = NULL;
  r->buf = NULL;
}

static void
req_put_locked(struct fetch_req *r)
{
  if (--r->refs > 0)
    return;
  req_unbuf_locked(r->f, r);
  pthread_cond_destroy(&r->cond);
  free(r);
}

static void
group_put_locked(struct fetch_group *g)
{
  if (--g->refs > 0)
    return;
  pthread_cond_destroy(&g->cond);
  free(g);
}

/* r reached DONE or FAILED: counts it off every group waiting for it.
 * A group whose last request it was is signalled now (wake NULL: the
 * caller keeps the lock) or chained on *wake with a reference, for
 * groups_wake to signal once the lock is dropped. */
static void
req_groups_locked(struct fetch_req *r, struct fetch_group **wake)
{
  for (struct fetch_link *l = r->links; l; l = l->next) {
    struct fetch_group *g = l->g;
    if (--g->pending > 0)
      continue;
    if (wake == NULL) {
      pthread_cond_signal(&g->cond);
      continue;
    }
    g->refs++;
    g->wnext = *wake;
    *wake = g;
  }
  r->links = NULL;
}

/* Signals the groups req_groups_locked chained (lock not held), then
 * drops their references. */
static void
groups_wake(struct fetcher *f, struct fetch_group *wake)
{
  for (struct fetch_group *g = wake; g; g = g->wnext)
    pthread_cond_signal(&g->cond);
  if (wake == NULL)
    return;
  lock(f);
  while (wake) {
    struct fetch_group *next = wake->wnext;
    group_put_locked(wake);
    wake = next;
  }
  unlock(f);
}

/* Ends r with err (0: DONE), takes it out of the table and wakes its
 * waiters. */
static void
req_finish_locked(struct fetcher *f, struct fetch_req *r, int err)
{
  r->state = err ? REQ_FAILED : REQ_DONE;
  r->err = err;
  r->conn = NULL;
  table_remove(f, r);
  pthread_cond_broadcast(&r->cond);
  req_groups_locked(r, NULL);
  req_put_locked(r);
}

/* The fetcher this thread has plugged (fetch_plug), or NULL, and whether
 * a kick was deferred since. */
static _Thread_local struct fetcher *plugged;
static _Thread_local bool plug_deferred;

static void
kick_locked(struct conn *c)
{
  if (plugged == c->f && !c->f->stopping) {
    c->kick_deferred = true;
    plug_deferred = true;
    return;
  }
  if (c->kicked)
    return;
  c->kicked = true;
  uint64_t one = 1;
  if (write(c->wake_fd, &one, sizeof one) != sizeof one && errno != EAGAIN)
    log_error(COMPONENT, "upstream %s: eventfd write: %m", c->up->uri);
}

/* Stall backoff: the first wait, and the longest. */
#define STALL_BACKOFF_MIN_MS 100
#define STALL_BACKOFF_MAX_MS 1000

/* Every upstream failed r this round: parks it on f->stalled until its
 * next round, if someone waits for it and its stall has time left.
 * true if parked. */
static bool
stall_locked(struct fetcher *f, struct fetch_req *r)
{
  if (f->p.stall_timeout_ms == 0 || f->no_stall || r->refs < 2)
    return false;
  int64_t now = now_ms();
  if (r->stall_since == 0) {
    r->stall_since = now;
    r->backoff_ms = STALL_BACKOFF_MIN_MS;
    f->stalls++;
  } else if ((r->backoff_ms *= 2) > STALL_BACKOFF_MAX_MS) {
    r->backoff_ms = STALL_BACKOFF_MAX_MS;
  }
  int64_t end = r->stall_since + f->p.stall_timeout_ms;
  if (now >= end)
    return false;
  if (f->outage_since == 0) {
    f->outage_since = now;
    f->outage_failed_logged = false;
    f->outages++;
    log_warn(COMPONENT, "no upstream of %zu can deliver block %" PRIu64
             " (last tried %s); holding reads up to %u ms while they"
             " are retried", f->nups, r->idx, f->ups[f->nups - 1].uri,
             f->p.stall_timeout_ms);
  }
  r->retry_at = now + r->backoff_ms < end ? now + r->backoff_ms : end;
  r->state = REQ_STALLED;
  r->conn = NULL;
  r->qnext = f->stalled;
  f->stalled = r;
  f->nstalled++;
  pthread_cond_signal(&f->retry_cond);
  return true;
}

/* Fails r, whose stall ran out, with EIO. */
static void
stall_expired_locked(struct fetcher *f, struct fetch_req *r)
{
  f->failed++;
  f->stall_failures++;
  if (!f->outage_failed_logged) {
    f->outage_failed_logged = true;
    log_error(COMPONENT, "block %" PRIu64 ": no upstream delivered it for"
              " %u ms (stall-timeout); failing it and every read that"
              " waits as long (EIO)", r->idx, f->p.stall_timeout_ms);
  }
  req_finish_locked(f, r, EIO);
}

/* Queues r on the first upstream it has not failed on, preferring those
 * out of hold-off; when there is none, stalls it (stall_locked) or fails
 * it with EIO (the caller logs that).  true if queued or stalled. */
static bool
dispatch_locked(struct fetcher *f, struct fetch_req *r)
{
  int64_t now = now_ms();
  struct upstream *up = NULL, *fallback = NULL;
  for (size_t i = 0; i < f->nups && up == NULL; i++) {
    if (r->tried & (UINT64_C(1) << i))
      continue;
    if (f->ups[i].holdoff_until <= now)
      up = &f->ups[i];
    else if (fallback == NULL)
      fallback = &f->ups[i];
  }
  if (up == NULL)
    up = fallback;
  if (up == NULL) {
    if (stall_locked(f, r))
      return true;
    if (r->stall_since != 0 && !f->no_stall) {
      stall_expired_locked(f, r);
      return false;
    }
    f->failed++;
    req_finish_locked(f, r, EIO);
    return false;
  }
  /* The block after one still queued joins it (one NBD read, conn_take);
   * else the least loaded connection. */
  struct conn *c = NULL;
  for (unsigned i = 0; i < f->p.conns_per_upstream && c == NULL; i++)
    if (up->conns[i].qtail && up->conns[i].qtail->idx + 1 == r->idx)
      c = &up->conns[i];
  if (c == NULL) {
    c = &up->conns[0];
    for (unsigned i = 1; i < f->p.conns_per_upstream; i++)
      if (up->conns[i].load < c->load)
        c = &up->conns[i];
  }
  r->state = REQ_QUEUED;
  r->conn = c;
  r->qnext = NULL;
  if (c->qtail)
    c->qtail->qnext = r;
  else
    c->qhead = r;
  c->qtail = r;
  c->load++;
  kick_locked(c);
  return true;
}

/* r failed on upstream up (and has left its connection): try the next. */
static bool
redispatch_locked(struct fetcher *f, struct fetch_req *r, struct upstream *up)
{
  r->tried |= UINT64_C(1) << up->index;
  if (!dispatch_locked(f, r))
    return false;
  if (!r->failed_over) {
    r->failed_over = true;
    f->failovers++;
  }
  return true;
}

static void
hold_off_locked(struct fetcher *f, struct upstream *up)
{
  if (f->p.holdoff_ms > 0)
    up->holdoff_until = now_ms() + f->p.holdoff_ms;
}

/* ---- The I/O thread of a connection ------------------------------------ */

/* Removes slot i of c->issued. */
static struct fetch_req *
issued_take(struct conn *c, unsigned i)
{
  struct fetch_req *r = c->issued[i];
  c->issued[i] = c->issued[--c->nissued];
  return r;
}

/* Request r, taken out of c->issued, failed on c's upstream; the
 * connection stays. */
static void
req_failed(struct conn *c, struct fetch_req *r, bool mismatch,
           const char *reason)
{
  struct fetcher *f = c->f;
  struct upstream *up = c->up;
  uint64_t idx = r->idx;

  lock(f);
  if (f->stopping) {
    unlock(f);
    return;
  }
  c->load--;
  if (mismatch)
    up->verify_failures++;
  else
    up->errors++;
  hold_off_locked(f, up);
  bool over = redispatch_locked(f, r, up);
  bool quiet = f->outage_since != 0;
  unlock(f);
  log_msg(quiet ? LOG_LEVEL_DEBUG : over ? LOG_LEVEL_WARN : LOG_LEVEL_ERROR,
          COMPONENT,
          "upstream %s: block %" PRIu64 ": %s; %s", up->uri, idx, reason,
          over ? "failing over" : "no upstream left, failing it (EIO)");
}

/* The connection failed (connect, lost, timeout): closes it and fails
 * every request on it, issued or queued, over to the next upstream. */
static void
conn_fail(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
conn_fail(struct conn *c, const char *fmt, ...)
{
  struct fetcher *f = c->f;
  struct upstream *up = c->up;
  char reason[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);

  /* Closed first: libnbd must be done with every buffer before another
   * connection may fill it. */
  if (c->h) {
    nbd_close(c->h);
    c->h = NULL;
  }
  c->ready = false;

  lock(f);
  if (f->stopping) {
    unlock(f);
    c->nissued = 0;
    return;
  }
  up->errors++;
  hold_off_locked(f, up);
  unsigned n = 0, over = 0;
  uint64_t first = 0;
  while (c->nissued > 0 || c->qhead) {
    struct fetch_req *r;
    if (c->nissued > 0) {
      r = issued_take(c, 0);
    } else {
      r = c->qhead;
      c->qhead = r->qnext;
      if (c->qhead == NULL)
        c->qtail = NULL;
    }
    c->load--;
    if (n++ == 0)
      first = r->idx;
    if (redispatch_locked(f, r, up))
      over++;
  }
  bool quiet = f->outage_since != 0;
  unlock(f);

  if (quiet)
    log_debug(COMPONENT, "upstream %s: %s (%u blocks)", up->uri, reason, n);
  else if (n == 0)
    log_warn(COMPONENT, "upstream %s: %s", up->uri, reason);
  else if (n == 1)
    log_msg(over ? LOG_LEVEL_WARN : LOG_LEVEL_ERROR, COMPONENT,
            "upstream %s: block %" PRIu64 ": %s; %s", up->uri, first, reason,
            over ? "failing over" : "no upstream left, failing it (EIO)");
  else if (over == n)
    log_warn(COMPONENT,
             "upstream %s: block %" PRIu64 " and %u more: %s; failing over",
             up->uri, first, n - 1, reason);
  else
    log_error(COMPONENT,
              "upstream %s: block %" PRIu64 " and %u more: %s; "
              "failing over %u, failing %u with no upstream left (EIO)",
              up->uri, first, n - 1, reason, over, n - over);
}

/* Starts connecting c.  0, or -1 after conn_fail. */
static int
conn_start(struct conn *c)
{
  struct fetcher *f = c->f;

  c->h = nbd_create();
  if (c->h == NULL) {
    conn_fail(c, "nbd_create: %s", nbd_get_error());
    return -1;
  }
  c->ready = false;
  c->connect_deadline = now_ms() + f->p.timeout_ms;
  c->last_rx = now_ms();
  if (nbd_set_request_structured_replies(c->h, false) == -1 ||
      nbd_set_pread_initialize(c->h, false) == -1 ||
      manclient_tls(c->h, c->up->uri) == -1 ||
      nbd_aio_connect_uri(c->h, c->up->uri) == -1) {
    conn_fail(c, "%s", nbd_get_error());
    return -1;
  }
  return 0;
}

/* c's handshake finished: checks the export.  0, or -1 after conn_fail. */
static int
conn_ready(struct conn *c)
{
  int64_t size = nbd_get_size(c->h);
  if (size == -1) {
    conn_fail(c, "size: %s", nbd_get_error());
    return -1;
  }
  if ((uint64_t)size != c->f->m->size) {
    conn_fail(c, "export size %" PRId64 ", the manifest says %" PRIu64, size,
              c->f->m->size);
    return -1;
  }
  /* A server that advertises a maximum block size may reject (or
   * split) a larger read: runs stay within it, but never below one
   * block (a server whose maximum is smaller gets single blocks, as it
   * did before reads were merged). */
  c->batch_blocks = c->f->batch_blocks;
  int64_t max = nbd_get_block_size(c->h, LIBNBD_SIZE_MAXIMUM);
  if (max > 0) {
    uint64_t n = (uint64_t)max / c->f->m->block_size;
    if (n < c->batch_blocks)
      c->batch_blocks = n > 0 ? (uint32_t)n : 1;
  }
  c->ready = true;
  return 0;
}

/* An NBD read finished: every block it carried is in (or failed). */
static int
pread_done(void *user_data, int *error)
{
  for (struct fetch_req *r = user_data; r; r = r->bnext) {
    r->io_done = true;
    r->io_err = *error;
  }
  return 1; /* retire the command */
}

/* The bytes of r (taken out of c->issued) are in: verify, deliver, wake. */
static void
req_arrived(struct conn *c, struct fetch_req *r)
{
  struct fetcher *f = c->f;

  if (!manifest_block_ok(f->m, r->idx, r->buf, r->len)) {
    req_failed(c, r, true, "SHA-256 mismatch");
    return;
  }
  /* Still in the table: fetch_start joins r instead of asking is_cached
   * while deliver stores the block. */
  if (f->cb.deliver)
    f->cb.deliver(f->cb.opaque, r->idx, r->buf, c->up->index);
  lock(f);
  c->up->blocks++;
  c->up->bytes += r->len;
  if (f->outage_since != 0) {
    int64_t took = now_ms() - f->outage_since;
    f->outage_ms += (uint64_t)took;
    f->outage_since = 0;
    log_warn(COMPONENT, "upstream %s delivers again: the outage lasted %"
             PRId64 " ms; %zu blocks still waiting are retried", c->up->uri,
             took, f->nstalled);
  }
  bool wake = false;
  struct fetch_group *groups = NULL;
  if (!f->stopping) {
    c->load--;
    /* Waiters hold every reference but the table's.  Wake them after the
     * lock is dropped, so they do not wake only to block on it; an extra
     * reference keeps r (and its condition) alive until then.  State is
     * set under the lock, so no waiter can miss the broadcast.  A reader
     * waiting for several blocks (fetch_wait_ready) sleeps on its group
     * instead, woken only by its last block. */
    req_groups_locked(r, &groups);
    wake = r->refs > 1 && r->sleepers > 0;
    if (wake)
      r->refs++;
    r->state = REQ_DONE;
    r->err = 0;
    r->conn = NULL;
    table_remove(f, r);
    req_put_locked(r);
  }
  unlock(f);
  groups_wake(f, groups);
  if (wake) {
    pthread_cond_broadcast(&r->cond);
    lock(f);
    req_put_locked(r);
    unlock(f);
  }
}

/* r (taken out of c->issued) came in a read of several blocks that
 * failed without the connection: puts it back at the head of c's queue
 * to be asked for alone (solo), on the same upstream and without
 * marking it tried, so that only a block that fails on its own fails
 * over (one bad block must not send its whole run to the next upstream
 * and hold the parent off).  A solo read that fails again fails over as
 * any other.  The error is counted then, not now. */
static void
req_split(struct conn *c, struct fetch_req *r)
{
  struct fetcher *f = c->f;

  lock(f);
  if (f->stopping) {
    unlock(f);
    return;
  }
  r->solo = true;
  r->state = REQ_QUEUED;
  r->conn = c;
  r->qnext = c->qhead;
  c->qhead = r;
  if (c->qtail == NULL)
    c->qtail = r;
  kick_locked(c); /* the thread takes it on its next round */
  unlock(f);
}

/* True if r was issued as part of a read of several blocks. */
static bool
req_merged(const struct fetch_req *r)
{
  return !r->bhead || r->bnext != NULL;
}

/* Collects what libnbd finished on c after a call that ran its state
 * machine (why: that call's error, or NULL if it succeeded): completed
 * reads are verified and delivered, failed ones fail over; if the handle
 * is dead, the connection fails.  0, or -1 after conn_fail. */
static int
conn_reap(struct conn *c, const char *why)
{
  bool dead = why != NULL || nbd_aio_is_dead(c->h) == 1 ||
              nbd_aio_is_closed(c->h) == 1;
  char reason[256];
  snprintf(reason, sizeof reason, "%s", why ? why : "connection closed");

  /* Completed reads first: their bytes are whole even if the connection
   * died right after them. */
  for (unsigned i = 0; i < c->nissued;) {
    struct fetch_req *r = c->issued[i];
    if (!r->io_done || (r->io_err != 0 && dead)) {
      i++;
      continue;
    }
    issued_take(c, i);
    if (r->io_err == 0) {
      req_arrived(c, r);
    } else if (req_merged(r)) {
      if (r->bhead)
        log_debug(COMPONENT, "upstream %s: read from block %" PRIu64
                  ": %s; asking for its blocks one by one", c->up->uri,
                  r->idx, strerror(r->io_err));
      req_split(c, r);
    } else {
      char msg[128];
      snprintf(msg, sizeof msg, "read: %s", strerror(r->io_err));
      req_failed(c, r, false, msg);
    }
  }
  if (dead) {
    conn_fail(c, "%s: %s", c->ready ? "connection lost" : "connect", reason);
    return -1;
  }
  return 0;
}

/* Takes r out of c->issued, wherever it is. */
static struct fetch_req *
issued_remove(struct conn *c, struct fetch_req *r)
{
  for (unsigned i = 0; i < c->nissued; i++)
    if (c->issued[i] == r)
      return issued_take(c, i);
  abort(); /* an issued request is in c->issued */
}

/* Hands the requests in c->issued[from..] to libnbd, one NBD read per
 * run of blocks (conn_take), into their shared buffer.  0, or -1 after
 * conn_fail. */
static int
conn_issue(struct conn *c, unsigned from)
{
  struct fetcher *f = c->f;
  int64_t now = now_ms();
  unsigned nheads = 0;

  /* Failures below reorder c->issued: the runs first. */
  for (unsigned i = from; i < c->nissued; i++)
    if (c->issued[i]->bhead)
      c->heads[nheads++] = c->issued[i];
  for (unsigned k = 0; k < nheads; k++) {
    struct fetch_req *h = c->heads[k];
    uint64_t bytes = 0;
    unsigned n = 0;
    for (struct fetch_req *r = h; r; r = r->bnext) {
      bytes += r->len;
      n++;
    }
    /* timeout_ms per block: an upstream (an nbdkit rate filter, a node
     * fetching the run itself) may send nothing until the whole run is
     * there. */
    for (struct fetch_req *r = h; r; r = r->bnext) {
      r->io_done = false;
      r->io_err = 0;
      r->deadline = now + (int64_t)f->p.timeout_ms * n;
    }
    nbd_completion_callback cb = { .callback = pread_done, .user_data = h };
    if (nbd_aio_pread(c->h, h->buf, bytes, h->idx * f->m->block_size, cb,
                      0) != -1)
      continue;
    if (nbd_aio_is_dead(c->h) == 1 || nbd_aio_is_closed(c->h) == 1)
      return conn_reap(c, nbd_get_error());
    char reason[256];
    snprintf(reason, sizeof reason, "read: %s", nbd_get_error());
    for (struct fetch_req *r = h, *next; r; r = next) {
      next = r->bnext;
      if (req_merged(r))
        req_split(c, issued_remove(c, r));
      else
        req_failed(c, issued_remove(c, r), false, reason);
    }
  }
  return 0;
}

/* A buffer for a run of n blocks: a spare of that size if there is one
 * (any size: issue 17, shorter runs malloc'ed and freed each time were
 * faulted in again, thousands of page faults per GiB relayed).  NULL if
 * out of memory. */
static struct fetch_buf *
buf_get_locked(struct fetcher *f, unsigned n)
{
  size_t size = (size_t)n * f->m->block_size;
  struct fetch_buf *b = NULL;
  pthread_mutex_lock(&spare_lock);
  for (struct fetch_buf **pp = &spares; *pp; pp = &(*pp)->next)
    if ((*pp)->size == size) {
      b = *pp;
      *pp = b->next;
      nspares--;
      break;
    }
  pthread_mutex_unlock(&spare_lock);
  if (b == NULL && (b = malloc(sizeof *b + size)) == NULL)
    return NULL;
  b->size = size;
  atomic_init(&b->refs, 0);
  b->next = NULL;
  return b;
}

/* Whether r (solo: asked for alone) may follow prev (prev_solo) in one
 * NBD read: the next block, blocks with waiters with each other,
 * prefetches with prefetches, and neither alone. */
static bool
joins_run(const struct fetch_req *prev, bool prev_solo,
          const struct fetch_req *r, bool solo)
{
  return !prev_solo && !solo && prev->idx + 1 == r->idx &&
         (prev->refs > 1) == (r->refs > 1);
}

/* Moves up to depth requests from c's queue into c->issued, chaining
 * consecutive blocks into runs of at most c->batch_blocks (blocks with
 * waiters with each other, prefetches with prefetches; a solo block
 * alone), and gives each run a buffer.  A run with no buffer fails (EIO).  Lock held. */
static void
conn_take_locked(struct conn *c)
{
  struct fetcher *f = c->f;
  unsigned from = c->nissued, run = 0;
  struct fetch_req *prev = NULL;
  bool prev_solo = false;

  /* Not while fewer slots are free than the run at the queue's head has
   * blocks: once the connection is busy, slots free one block at a time,
   * and taking at each would issue a sequential reader's blocks as reads
   * of their own (issue 17: 16 NBD reads per 1 MiB relayed instead of 4,
   * each a request, a reply header, a poll and a wake-up of the origin).
   * A head with no successor queued (random reads) is taken at once. */
  if (c->nissued > 0 && c->ready && c->qhead) {
    unsigned want = 1;
    for (const struct fetch_req *r = c->qhead;
         want < c->batch_blocks && want < f->p.depth && r->qnext &&
         joins_run(r, r->solo, r->qnext, r->qnext->solo);
         r = r->qnext)
      want++;
    if (f->p.depth - c->nissued < want)
      return;
  }
  /* Blocks are merged into runs only when more are queued than the
   * connection has free slots (a backlog: throughput-bound, as a bulk
   * relay is; a run saves a request, a reply and a wake-up per block).
   * Otherwise each is asked for alone: a relay parent answers a read only
   * once it has all of its blocks, so in a chain of relays a run travels
   * hop by hop whole, while single blocks pipeline — a guest's read of 8
   * blocks at the end of a 64-deep chain waited ~60 ms more per hop
   * merged (bench/provision.sh, N = 64: max 15.5 s against 10.5). */
  unsigned free_slots = f->p.depth - c->nissued, queued = 0;
  for (const struct fetch_req *r = c->qhead; r && queued <= free_slots;
       r = r->qnext)
    queued++;
  bool merge = queued > free_slots;
  while (c->ready && c->qhead && c->nissued < f->p.depth) {
    struct fetch_req *r = c->qhead;
    c->qhead = r->qnext;
    if (c->qhead == NULL)
      c->qtail = NULL;
    r->qnext = NULL;
    r->state = REQ_ISSUED;
    r->bnext = NULL;
    bool solo = r->solo;
    r->solo = false;
    if (merge && prev && run < c->batch_blocks &&
        joins_run(prev, prev_solo, r, solo)) {
      prev->bnext = r;
      r->bhead = false;
      run++;
    } else {
      r->bhead = true;
      run = 1;
    }
    prev = r;
    prev_solo = solo;
    c->issued[c->nissued++] = r;
  }
  bool failed = false;
  for (unsigned i = from; i < c->nissued; i++) {
    struct fetch_req *h = c->issued[i];
    if (!h->bhead)
      continue;
    unsigned n = 0;
    for (struct fetch_req *r = h; r; r = r->bnext)
      n++;
    struct fetch_buf *b = buf_get_locked(f, n);
    size_t off = 0;
    for (struct fetch_req *r = h; r; r = r->bnext) {
      req_unbuf_locked(f, r); /* its last issue's, if it failed over */
      if (b) {
        r->fb = b;
        r->buf = b->data + off;
        atomic_fetch_add(&b->refs, 1);
        off += r->len;
      }
    }
    failed |= b == NULL;
  }
  if (!failed)
    return;
  /* From the end down: issued_take moves the last slot into i. */
  for (unsigned i = c->nissued; i-- > from;) {
    struct fetch_req *r = c->issued[i];
    if (r->buf)
      continue;
    issued_take(c, i);
    c->load--;
    f->failed++;
    req_finish_locked(f, r, EIO);
  }
  log_error(COMPONENT, "upstream %s: no memory for a read buffer: failing"
            " blocks (EIO)", c->up->uri);
}

/* Runs the state machine after poll said which way the socket is ready,
 * then collects the results.  0, or -1 after conn_fail. */
static int
conn_notify(struct conn *c, short revents, unsigned dir)
{
  int rc = 0;

  if ((revents & POLLIN) ||
      ((revents & POLLHUP) && (dir & LIBNBD_AIO_DIRECTION_READ)))
    rc = nbd_aio_notify_read(c->h);
  else if ((revents & POLLOUT) ||
           ((revents & (POLLHUP | POLLERR)) &&
            (dir & LIBNBD_AIO_DIRECTION_WRITE)))
    rc = nbd_aio_notify_write(c->h);
  else if (revents & (POLLERR | POLLHUP | POLLNVAL))
    return conn_reap(c, "socket error");
  return conn_reap(c, rc == -1 ? nbd_get_error() : NULL);
}

/* A request waits at most this many timeouts while its connection keeps
 * receiving. */
#define REQ_PATIENCE 16

/* When issued request r times out: timeout_ms after its issue, but not
 * while its connection still receives (up to REQ_PATIENCE timeouts).  A congested upstream (many
 * children sharing its uplink, replies queued behind others) delivers
 * slowly but steadily; failing over from it would only move the load to
 * the next upstream (in the end the origin).  A connection that goes
 * silent for timeout_ms fails all its requests. */
static int64_t
req_deadline(const struct conn *c, const struct fetch_req *r)
{
  int64_t t = (int64_t)c->f->p.timeout_ms;
  int64_t quiet = c->last_rx + t;
  int64_t d = r->deadline > quiet ? r->deadline : quiet;
  /* An upstream that trickles bytes cannot hold a request forever. */
  int64_t cap = r->deadline + (REQ_PATIENCE - 1) * t;
  return d < cap ? d : cap;
}

static void *
conn_thread(void *arg)
{
  struct conn *c = arg;
  struct fetcher *f = c->f;

  for (;;) {
    lock(f);
    if (f->stopping) {
      unlock(f);
      break;
    }
    c->kicked = false;
    bool want = c->qhead != NULL;
    unsigned from = c->nissued;
    conn_take_locked(c);
    unlock(f);

    if (want && c->h == NULL && conn_start(c) == -1)
      continue;
    if (c->nissued > from && conn_issue(c, from) == -1)
      continue;
    /* Issuing runs the state machine, which may find the connection
     * dead (a cookie is returned all the same). */
    if (c->h && conn_reap(c, NULL) == -1)
      continue;
    /* The handshake may have finished inside nbd_aio_connect_uri (or
     * while issuing): the socket then has nothing to say, and without
     * this check the connection would wait for its connect deadline. */
    if (c->h && !c->ready && nbd_aio_is_ready(c->h) == 1) {
      conn_ready(c); /* on failure it has called conn_fail */
      continue;
    }

    /* Wait for the socket, a kick, or the nearest deadline. */
    struct pollfd pfd[2] = { { .fd = c->wake_fd, .events = POLLIN },
                             { .fd = -1 } };
    unsigned dir = 0;
    int64_t deadline = INT64_MAX;
    if (c->h) {
      pfd[1].fd = nbd_aio_get_fd(c->h);
      if (pfd[1].fd == -1) {
        conn_fail(c, "connection lost: %s", nbd_get_error());
        continue;
      }
      dir = nbd_aio_get_direction(c->h);
      if (dir & LIBNBD_AIO_DIRECTION_READ)
        pfd[1].events |= POLLIN;
      if (dir & LIBNBD_AIO_DIRECTION_WRITE)
        pfd[1].events |= POLLOUT;
      if (!c->ready)
        deadline = c->connect_deadline;
      for (unsigned i = 0; i < c->nissued; i++)
        if (req_deadline(c, c->issued[i]) < deadline)
          deadline = req_deadline(c, c->issued[i]);
    }
    int timeout = -1;
    if (deadline != INT64_MAX) {
      int64_t left = deadline - now_ms();
      timeout = left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
    }
    int prc = poll(pfd, 2, timeout);
    if (prc == -1 && errno != EINTR) {
      log_error(COMPONENT, "upstream %s: poll: %m", c->up->uri);
      conn_fail(c, "poll failed");
      continue;
    }
    if (pfd[0].revents & POLLIN) {
      uint64_t v;
      if (read(c->wake_fd, &v, sizeof v) == -1 && errno != EAGAIN)
        log_error(COMPONENT, "upstream %s: eventfd read: %m", c->up->uri);
    }
    if (c->h == NULL)
      continue;
    if (pfd[1].revents & POLLIN)
      c->last_rx = now_ms();
    if (pfd[1].revents && conn_notify(c, pfd[1].revents, dir) == -1)
      continue;
    if (!c->ready && nbd_aio_is_ready(c->h) && conn_ready(c) == -1)
      continue;

    /* Deadlines (req_deadline): a request fails over when it had no
     * reply within timeout_ms and the connection received nothing for
     * timeout_ms either. */
    int64_t now = now_ms();
    if (!c->ready && now >= c->connect_deadline) {
      conn_fail(c, "connect: no handshake within %u ms", f->p.timeout_ms);
      continue;
    }
    for (unsigned i = 0; i < c->nissued; i++)
      if (now >= req_deadline(c, c->issued[i])) {
        conn_fail(c, "no reply within %u ms and nothing received for as long",
                  f->p.timeout_ms);
        break;
      }
  }

  /* The requests still here belong to fetcher_free now; closing the
   * handle ends libnbd's use of their buffers. */
  if (c->h) {
    nbd_close(c->h);
    c->h = NULL;
  }
  return NULL;
}

/* ---- The retry thread (stalled blocks) --------------------------------- */

static void *
retry_thread(void *arg)
{
  struct fetcher *f = arg;

  lock(f);
  while (!f->stopping) {
    int64_t now = now_ms(), next = INT64_MAX;
    for (struct fetch_req **pp = &f->stalled; *pp;) {
      struct fetch_req *r = *pp;
      if (r->retry_at > now) {
        if (r->retry_at < next)
          next = r->retry_at;
        pp = &r->qnext;
        continue;
      }
      *pp = r->qnext;
      r->qnext = NULL;
      f->nstalled--;
      if (now >= r->stall_since + (int64_t)f->p.stall_timeout_ms) {
        stall_expired_locked(f, r);
      } else {
        r->tried = 0;
        dispatch_locked(f, r); /* queues it: no upstream is tried yet */
      }
    }
    if (next == INT64_MAX) {
      pthread_cond_wait(&f->retry_cond, &f->lock);
    } else {
      struct timespec ts = { .tv_sec = next / 1000,
                             .tv_nsec = (long)(next % 1000) * 1000000 };
      pthread_cond_timedwait(&f->retry_cond, &f->lock, &ts);
    }
  }
  unlock(f);
  return NULL;
}

/* ---- Public ------------------------------------------------------------ */

static void
fetcher_destroy(struct fetcher *f)
{
  /* Threads first: they may still reach the lock and the conns. */
  lock(f);
  f->stopping = true;
  for (size_t i = 0; i < f->nups; i++)
    for (unsigned j = 0; f->ups[i].conns && j < f->p.conns_per_upstream; j++)
      if (f->ups[i].conns[j].started)
        kick_locked(&f->ups[i].conns[j]);
  pthread_cond_signal(&f->retry_cond);
  unlock(f);
  if (f->retry_started)
    pthread_join(f->retry_thread, NULL);
  for (size_t i = 0; i < f->nups; i++)
    for (unsigned j = 0; f->ups[i].conns && j < f->p.conns_per_upstream; j++)
      if (f->ups[i].conns[j].started)
        pthread_join(f->ups[i].conns[j].thread, NULL);

  lock(f);
  while (f->nwaiters > 0)
    pthread_cond_wait(&f->drained, &f->lock);
  f->stalled = NULL; /* each is in the table too */
  for (size_t b = 0; b < f->nbuckets; b++) {
    while (f->table[b]) {
      struct fetch_req *r = f->table[b];
      f->table[b] = r->hnext;
      req_put_locked(r);
    }
  }
  unlock(f);

  for (size_t i = 0; i < f->nups; i++) {
    struct upstream *up = &f->ups[i];
    for (unsigned j = 0; up->conns && j < f->p.conns_per_upstream; j++) {
      if (up->conns[j].wake_fd >= 0)
        close(up->conns[j].wake_fd);
      free(up->conns[j].issued);
      free(up->conns[j].heads);
    }
    free(up->conns);
    free(up->uri);
  }
  free(f->ups);
  free(f->table);
  pthread_cond_destroy(&f->retry_cond);
  pthread_cond_destroy(&f->drained);
  pthread_mutex_destroy(&f->lock);
  free(f);
}

struct fetcher *
fetcher_new(const struct manifest *m, const char *const *uris, size_t n,
            const struct fetch_params *p, const struct fetch_callbacks *cb)
{
  static const struct fetch_params defaults = FETCH_PARAMS_DEFAULT;

  if (p == NULL)
    p = &defaults;
  if (n == 0 || n > FETCH_UPSTREAMS_MAX) {
    log_error(COMPONENT, "%zu upstreams: between 1 and %d are supported", n,
              FETCH_UPSTREAMS_MAX);
    return NULL;
  }
  if (p->conns_per_upstream == 0 || p->depth == 0 || p->timeout_ms == 0) {
    log_error(COMPONENT,
              "connections, depth and timeout must be at least 1 (%u, %u, %u)",
              p->conns_per_upstream, p->depth, p->timeout_ms);
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    if (uris[i] == NULL || strncmp(uris[i], "nbd", 3) != 0 ||
        strstr(uris[i], "://") == NULL) {
      log_error(COMPONENT, "upstream %zu: '%s' is not an NBD URI", i,
                uris[i] ? uris[i] : "(null)");
      return NULL;
    }

  struct fetcher *f = calloc(1, sizeof *f);
  if (f == NULL) {
    log_error(COMPONENT, "calloc: %m");
    return NULL;
  }
  f->m = m;
  f->p = *p;
  if (cb)
    f->cb = *cb;
  f->prefetch_limit = n * p->conns_per_upstream * p->depth;
  f->batch_blocks = m->block_size >= BATCH_BYTES ? 1
                                                 : BATCH_BYTES / m->block_size;
  if (pthread_mutex_init(&f->lock, NULL) != 0) {
    free(f);
    return NULL;
  }
  pthread_cond_init(&f->drained, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&f->retry_cond, &ca);
  pthread_condattr_destroy(&ca);
  f->table = calloc(256, sizeof *f->table);
  if (f->table) {
    f->nbuckets = 256;
    f->shift = 64 - 8;
  }
  f->ups = calloc(n, sizeof *f->ups);
  if (f->table == NULL || f->ups == NULL) {
    log_error(COMPONENT, "calloc: %m");
    fetcher_destroy(f);
    return NULL;
  }
  f->nups = n;
  for (size_t i = 0; i < n; i++) {
    struct upstream *up = &f->ups[i];
    up->index = (unsigned)i;
    up->uri = strdup(uris[i]);
    up->conns = calloc(p->conns_per_upstream, sizeof *up->conns);
    if (up->uri == NULL || up->conns == NULL) {
      log_error(COMPONENT, "upstream %s: %m", uris[i]);
      fetcher_destroy(f);
      return NULL;
    }
    for (unsigned j = 0; j < p->conns_per_upstream; j++)
      up->conns[j].wake_fd = -1;
    for (unsigned j = 0; j < p->conns_per_upstream; j++) {
      struct conn *c = &up->conns[j];
      c->f = f;
      c->up = up;
      c->issued = calloc(p->depth, sizeof *c->issued);
      c->heads = calloc(p->depth, sizeof *c->heads);
      c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (c->issued == NULL || c->heads == NULL || c->wake_fd == -1) {
        log_error(COMPONENT, "upstream %s: connection %u: %m", up->uri, j);
        fetcher_destroy(f);
        return NULL;
      }
      int e = pthread_create(&c->thread, NULL, conn_thread, c);
      if (e != 0) {
        errno = e;
        log_error(COMPONENT, "upstream %s: pthread_create: %m", up->uri);
        fetcher_destroy(f);
        return NULL;
      }
      c->started = true;
      pthread_setname_np(c->thread, "fetch");
    }
  }
  if (p->stall_timeout_ms > 0) {
    int e = pthread_create(&f->retry_thread, NULL, retry_thread, f);
    if (e != 0) {
      errno = e;
      log_error(COMPONENT, "retry thread: pthread_create: %m");
      fetcher_destroy(f);
      return NULL;
    }
    f->retry_started = true;
    pthread_setname_np(f->retry_thread, "fetch-retry");
  }
  return f;
}

void
fetch_stop_stalling(struct fetcher *f)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&f->lock);
  f->no_stall = true;
  while (f->stalled) {
    struct fetch_req *r = f->stalled;
    f->stalled = r->qnext;
    r->qnext = NULL;
    f->nstalled--;
    req_finish_locked(f, r, ESHUTDOWN);
  }
}

void
fetcher_free(struct fetcher *f)
{
  if (f == NULL)
    return;
  lock(f);
  f->stopping = true;
  for (size_t b = 0; b < f->nbuckets; b++)
    for (struct fetch_req *r = f->table[b]; r; r = r->hnext)
      if (r->state != REQ_DONE && r->state != REQ_FAILED) {
        r->state = REQ_FAILED;
        r->err = ESHUTDOWN;
        pthread_cond_broadcast(&r->cond);
        req_groups_locked(r, NULL);
      }
  unlock(f);
  fetcher_destroy(f);
}

struct fetch_req *
fetch_start(struct fetcher *f, uint64_t idx, bool *cached)
{
  *cached = false;
  if (idx >= f->m->nblocks) {
    errno = EINVAL;
    return NULL;
  }
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&f->lock);
  if (f->stopping) {
    errno = ESHUTDOWN;
    return NULL;
  }
  struct fetch_req *r = table_find(f, idx);
  if (r) {
    f->joined++;
  } else {
    if (f->cb.is_cached && f->cb.is_cached(f->cb.opaque, idx)) {
      *cached = true;
      return NULL;
    }
    if ((r = req_new_locked(f, idx)) == NULL)
      return NULL;
    f->fetches++;
    dispatch_locked(f, r); /* never fails: r has tried no upstream yet */
  }
  r->refs++;
  f->nwaiters++;
  return r;
}

int
fetch_wait_hold(struct fetch_req *r, void *buf, uint32_t off, uint32_t len,
                const void **data, struct fetch_hold **hold, int *err)
{
  struct fetcher *f = r->f;
  int e;

  if (hold)
    *hold = NULL;
  lock(f);
  while (!req_finished(r)) {
    r->sleepers++;
    pthread_cond_wait(&r->cond, &f->lock);
    r->sleepers--;
  }
  e = r->state == REQ_FAILED ? r->err : 0;
  unlock(f);

  /* A DONE buffer never changes again, and our reference keeps it. */
  if (e == 0) {
    struct fetch_buf *b = r->fb;
    if (off > r->len || len > r->len - off) {
      e = EINVAL;
    } else if (hold && atomic_fetch_add(&held_bytes, b->size) + b->size <=
                           FETCH_HELD_MAX) {
      /* Sent from the fetch's buffer: no copy (issue 17, ~7% of a cold
       * relay's CPU). */
      atomic_fetch_add(&b->refs, 1);
      *hold = (struct fetch_hold *)b;
      *data = r->buf + off;
    } else {
      if (hold)
        atomic_fetch_sub(&held_bytes, b->size);
      memcpy(buf, r->buf + off, len);
      if (data)
        *data = buf;
    }
  }

  lock(f);
  req_put_locked(r);
  if (--f->nwaiters == 0 && f->stopping)
    pthread_cond_broadcast(&f->drained);
  unlock(f);

  if (e) {
    *err = e;
    return -1;
  }
  return 0;
}

int
fetch_wait(struct fetch_req *r, void *buf, uint32_t off, uint32_t len,
           int *err)
{
  return fetch_wait_hold(r, buf, off, len, NULL, NULL, err);
}

void
fetch_hold_put(struct fetch_hold *h)
{
  struct fetch_buf *b = (struct fetch_buf *)h;
  if (b == NULL)
    return;
  atomic_fetch_sub(&held_bytes, b->size);
  buf_put(b);
}

void
fetch_wait_ready(struct fetch_req *const *reqs, size_t n)
{
  struct fetcher *f = NULL;
  for (size_t i = 0; i < n && f == NULL; i++)
    if (reqs[i])
      f = reqs[i]->f;
  if (f == NULL)
    return;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&f->lock);
  size_t pending = 0;
  for (size_t i = 0; i < n; i++)
    if (reqs[i] && !req_finished(reqs[i]))
      pending++;
  if (pending == 0)
    return;
  struct fetch_group *g =
      malloc(sizeof *g + pending * sizeof(struct fetch_link));
  if (g == NULL)
    return; /* fetch_wait then waits for each in turn */
  if (pthread_cond_init(&g->cond, NULL) != 0) {
    free(g);
    return;
  }
  g->pending = pending;
  g->refs = 1;
  g->wnext = NULL;
  struct fetch_link *l = g->links;
  for (size_t i = 0; i < n; i++)
    if (reqs[i] && !req_finished(reqs[i])) {
      l->g = g;
      l->next = reqs[i]->links;
      reqs[i]->links = l++;
    }
  /* Every link is gone from its request once pending is 0. */
  while (g->pending > 0)
    pthread_cond_wait(&g->cond, &f->lock);
  group_put_locked(g);
}

void
fetch_prefetch(struct fetcher *f, uint64_t idx)
{
  if (idx >= f->m->nblocks)
    return;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&f->lock);
  if (f->stopping || f->nentries >= f->prefetch_limit || table_find(f, idx))
    return;
  if (f->cb.is_cached && f->cb.is_cached(f->cb.opaque, idx))
    return;
  struct fetch_req *r = req_new_locked(f, idx);
  if (r == NULL)
    return;
  f->fetches++;
  f->prefetches++;
  dispatch_locked(f, r);
}

void
fetch_plug(struct fetcher *f)
{
  if (plugged && plugged != f)
    fetch_unplug(plugged); /* one fetcher at a time: the other's wake-ups go */
  plugged = f;
}

void
fetch_unplug(struct fetcher *f)
{
  plugged = NULL;
  if (!plug_deferred)
    return; /* nothing queued (a read of cached blocks): no lock */
  plug_deferred = false;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&f->lock);
  for (size_t i = 0; i < f->nups; i++)
    for (unsigned j = 0; j < f->p.conns_per_upstream; j++) {
      struct conn *c = &f->ups[i].conns[j];
      if (c->kick_deferred) {
        c->kick_deferred = false;
        kick_locked(c);
      }
    }
}

void
fetch_get_stats(struct fetcher *f, struct fetch_stats *st)
{
  struct fetch_upstream_stats *u = calloc(f->nups, sizeof *u);
  int64_t now = now_ms();

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&f->lock);
  st->fetches = f->fetches;
  st->joined = f->joined;
  st->prefetches = f->prefetches;
  st->failovers = f->failovers;
  st->failed = f->failed;
  st->stalls = f->stalls;
  st->stall_failures = f->stall_failures;
  st->outages = f->outages;
  st->outage_ms = f->outage_ms +
                  (f->outage_since ? (uint64_t)(now - f->outage_since) : 0);
  st->stalled_now = f->nstalled;
  st->in_outage = f->outage_since != 0;
  st->nupstreams = u ? f->nups : 0;
  st->upstreams = u;
  for (size_t i = 0; u && i < f->nups; i++) {
    const struct upstream *up = &f->ups[i];
    u[i].uri = up->uri;
    u[i].blocks = up->blocks;
    u[i].bytes = up->bytes;
    u[i].verify_failures = up->verify_failures;
    u[i].errors = up->errors;
    u[i].faulty = now < up->holdoff_until;
  }
}

/* ---- Manifest ---------------------------------------------------------- */

/* Fetches and checks the manifest from one upstream (common/manclient.h:
 * bounded by timeout_ms per step).  0, or with a logged warning
 * FETCH_MANIFEST_UNKNOWN (the upstream has no such export),
 * FETCH_MANIFEST_OTHER_VERSION (it has another version) or -1 (any
 * other failure). */
static int
manifest_from(const char *uri, const char *name, const char *version_hex,
              unsigned timeout_ms, char **bytes, size_t *len, char *why,
              size_t whylen)
{
  char err[1024];
  char *buf = NULL;
  size_t size = 0;
  enum manclient_result mr = manclient_fetch(uri, name, timeout_ms, 0, &buf,
                                             &size, err, sizeof err);
  if (mr != MANCLIENT_OK) {
    log_warn(COMPONENT, "upstream %s: manifest: %s", uri, err);
    if (why && whylen)
      snprintf(why, whylen, "%s", err);
    return mr == MANCLIENT_UNKNOWN ? FETCH_MANIFEST_UNKNOWN : -1;
  }
  uint8_t d[DIGEST_LEN];
  char hex[DIGEST_HEX_LEN + 1];
  digest_sha256(buf, size, d);
  digest_to_hex(d, hex);
  if (strcasecmp(hex, version_hex) != 0) {
    log_warn(COMPONENT, "upstream %s: manifest: version %.16s, expected %.16s",
             uri, hex, version_hex);
    free(buf);
    return FETCH_MANIFEST_OTHER_VERSION;
  }
  *bytes = buf;
  *len = size;
  return 0;
}

int
fetch_manifest(const char *const *uris, size_t n, const char *name,
               const char *version_hex, unsigned timeout_ms, char **bytes,
               size_t *len, char *why, size_t whylen)
{
  if (why && whylen)
    why[0] = '\0';
  if (!manifest_name_valid(name)) {
    log_error(COMPONENT, "manifest: '%s' is not an image name", name);
    return -1;
  }
  if (timeout_ms == 0)
    timeout_ms = 1;
  /* The verdict: UNKNOWN if every upstream said so, OTHER_VERSION if
   * every one answered and one had another version, else -1. */
  int verdict = FETCH_MANIFEST_UNKNOWN;
  for (size_t i = 0; i < n; i++) {
    int r = manifest_from(uris[i], name, version_hex, timeout_ms, bytes, len,
                          why, whylen);
    if (r == 0)
      return 0;
    if (r == -1)
      verdict = -1;
    else if (r == FETCH_MANIFEST_OTHER_VERSION && verdict != -1)
      verdict = FETCH_MANIFEST_OTHER_VERSION;
  }
  log_error(COMPONENT,
            "manifest of '%s' version %.16s: no upstream of %zu has it%s",
            name, version_hex, n,
            verdict == FETCH_MANIFEST_UNKNOWN ? " (no such image)"
            : verdict == FETCH_MANIFEST_OTHER_VERSION
                ? " (they serve another version)"
                : "");
  return verdict;
}
