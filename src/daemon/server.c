/* thunder — NBD listeners, the event loop, workers and limits; see server.h.
 *
 * Design note.
 *
 * A connection that finished the handshake and idles must cost a few
 * hundred bytes and an fd, not threads; and a client that pipelines large
 * reads and never reads the replies must stop being read from rather than
 * make the server allocate.  So the work is split by what it waits for:
 *
 *   handshake   one short-lived thread per negotiating connection, blocking
 *               I/O under the handshake deadline (nbdsrv_handshake).  At
 *               most max_handshakes per class and max_handshakes_per_addr
 *               per TCP address at once, so these threads are bounded.
 *   workers     a fixed pool per class (TCP, local), all waiting in
 *               epoll_wait on the class's epoll set, which holds its open
 *               connections (EPOLLONESHOT) and an eventfd counting queued
 *               jobs.  The worker that gets EPOLLIN of a connection takes
 *               its read token and serves it in a loop: it reads a request
 *               header (28 bytes); if it is an ordinary request that fits
 *               the budgets it carries it out itself (nbdsrv_execute: pread
 *               from the cache or the image; in node mode this may wait for
 *               a fetch), sends the reply and reads the next header, at
 *               most READ_BATCH requests; then, or when no request is
 *               buffered, it re-arms the connection.  No epoll call and no
 *               hand-off between threads per request on the hot path (one
 *               wake-up and re-arm per request cost ~45% of the server's
 *               time).  When the input is empty the worker waits for the
 *               next request in recv, up to READ_LINGER_US (SO_RCVTIMEO),
 *               but only while another worker of the class is idle in
 *               epoll_wait (pool.idle), so other connections still find a
 *               worker: at worst an event waits READ_LINGER_US.  A request
 *               that may wait for an upstream (nbdsrv_may_block: in node
 *               mode a read of a block not cached; a lock-free look at the
 *               cache's state, no syscall) is the exception: the worker
 *               gives the read token back and re-arms EPOLLIN *before*
 *               carrying it out, so another worker reads and serves the
 *               requests pipelined behind it while it waits (QEMU keeps
 *               many in flight on one connection; a miss must not hold
 *               up the cached reads behind it).  Replies then go out of
 *               order, each whole (cn->writing: one writer at a time,
 *               the others park theirs).  The fast path (cached reads,
 *               the origin's preads) keeps the token: no hand-off.  A
 *               reader whose reply had to be parked (the client is slow,
 *               or another worker is writing) stops reading until the
 *               queue is empty (cn->hold_read; whoever empties it
 *               re-arms EPOLLIN): reading on would park reply after reply
 *               until conn_requests were taken, and from then on the loop
 *               read every request and queued it for the pool, a hand-off
 *               and a buffer of its own per request for as long as the
 *               client kept its reads in flight (issue 17: cached
 *               serving cost 1.5 x nbdkit's CPU, 2 x with this).  The
 *               first read of a wake-up and reads while no worker is idle
 *               pass MSG_DONTWAIT.
 *               Then it sends the reply (a read's data may be in parts
 *               the export lent, node mode's fetch buffers: the iovecs
 *               point at them and the job releases them when it ends); a
 *               writer that finds more replies parked behind its own sends
 *               up to SEND_JOBS of them in one sendmsg: the sockets are blocking with
 *               SO_SNDTIMEO = WRITE_WAIT_MS (the loop's reads pass
 *               MSG_DONTWAIT), so
 *               the kernel copies a reply as the client takes it; a worker
 *               gives up after WRITE_WAIT_MS in all, and the rest of the
 *               reply is parked on the connection's queue for EPOLLOUT: a
 *               client that does not read cannot hold a worker.
 *   loop        one thread (server_run): epoll over the listeners and a
 *               wake-up eventfd.  It accepts, admits or refuses, and takes
 *               every slow path: a request a worker left to it (a write's
 *               payload, DISC, a protocol error, end of stream, a request
 *               that does not fit its budget: "pending"), hang-ups,
 *               connections that must close, and once a second the idle and
 *               send timeouts.  Workers tell it through the kick list.
 *
 * TLS (TCP, --tls on|require; nbdtls.h).  The handshake thread runs
 * NBD_OPT_STARTTLS's TLS handshake under the same deadline; afterwards
 * cn->tls is set and every recv/sendmsg of the connection goes through
 * conn_recv/conn_sendv, which are the system calls themselves when
 * cn->tls is NULL (plaintext connections take the same path as before).
 * GnuTLS allows one reader and one writer at a time, which the read token
 * and cn->writing already guarantee.  Decrypted bytes GnuTLS holds are
 * invisible to epoll: rearm_locked kicks the loop to read them instead of
 * waiting for EPOLLIN, and a worker's next read takes them directly.
 *
 * Why not one thread per connection (as before): idle connections cost
 * 16 threads each, and buffers grew with each client's largest read.  Why
 * not the loop alone: a read may wait for the disk or an upstream; those
 * waits belong on threads, and the pool bounds them.
 *
 * Budgets (struct server_config): a request costs the data its reply
 * carries (a read's length, else 0), and over TLS the ciphertext of it
 * the session's send batch may hold (request_cost).  It is taken from the connection's
 * budget (conn_inflight_bytes, >= the largest read, so one request always
 * fits an idle connection), its remote address's (addr_inflight_bytes,
 * TCP) and its class's (inflight_bytes); it is given back when the last
 * byte of the reply is sent, or the connection fails.  A request that
 * does not fit waits on its connection ("pending"), and the connection is
 * not read until it fits; a connection waiting for its class's or
 * address's budget is queued (FIFO) and retried when any reply of the
 * class completes; one waiting for its address lets the others pass, so
 * one address cannot hold the class.  At most conn_requests requests of
 * one connection are in flight.  Memory for reply data is therefore bounded
 * by the two classes' inflight_bytes plus NBDSRV_BUF_KEEP per worker
 * (scratch buffers kept between requests); larger buffers are mapped per
 * request and unmapped after it.
 *
 * Connection states (struct conn):
 *
 *   HANDSHAKE   owned by its handshake thread; on s->conns for shutdown.
 *   OPEN        in its class's epoll set (EPOLLONESHOT; re-armed under
 *               cn->lock for what it waits for: IN while reading is
 *               allowed and no one holds the read token, OUT while parked
 *               replies wait and no one is writing).  cn->armed: an event
 *               may still be delivered; cn->handlers: workers handling one.
 *   CLOSING     no more requests are read (DISC, end of stream, error,
 *               timeout, shutdown); what was accepted finishes.  On an
 *               error the socket is shut down and unsent replies dropped
 *               ("broken").  The loop frees the connection once no request
 *               is in flight, no one is writing, reading or handling an
 *               event of it, no event can come (if one still may, the
 *               socket is shut down so that it comes now) and it is not on
 *               the kick list.
 *
 * Locking: s->lock guards the connection list, the counters and the
 * per-address table.  cn->lock guards a connection's shared state (jobs,
 * inflight, the reply queue, writing, the flags the interest depends on);
 * fields marked "loop" are the loop thread's alone; the input state
 * (hdr, discard) belongs to the holder of the read token (cn->reader:
 * a worker on EPOLLIN, or the loop).  A pool's lock guards
 * its job queue.  Order: s->lock, cn->lock, s->kick_lock (s->lock is
 * taken before cn->lock only to scan connections and to open one).
 * Only the loop frees a connection; a worker that finishes the last job
 * of a connection needing attention puts it on the kick list (under
 * cn->lock) and touches it no more; a worker handling an event counts in
 * cn->handlers until it is done.
 *
 * Shutdown (server_stop): listeners close, handshakes are cut, every open
 * connection goes CLOSING without error replies: requests taken finish
 * and their replies are sent; requests read but not yet started are
 * dropped unanswered (a client may resend them after reconnecting).  A
 * request that fails while the server stops (node mode: the stop fails
 * the reads waiting for an upstream, node_stop_stalling) is not answered
 * either: its connection is shut down, so QEMU resends it to the next
 * thunderd instead of failing it (libvirt.md, "Restarts and outages").
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "nbdsrv.h"
#include "nbdtls.h"
#include "netaddr.h"

#define COMPONENT "server"
#define LISTENERS_MAX 16
/* epoll data of the listeners are their index; of the eventfd this. */
#define EV_WAKE LISTENERS_MAX
#define HANDSHAKE_STACK_SIZE (256 * 1024)
#define WORKER_STACK_SIZE (1024 * 1024)
/* How long server_run() waits for connections to end at shutdown. */
#define SHUTDOWN_WAIT_MS 5000
/* Total time a worker waits for a client to make room for a reply (and
 * the sockets' SO_SNDTIMEO); then the loop finishes the reply. */
#define WRITE_WAIT_MS 20

/* SO_SNDBUF of a Unix-socket client's connection (accept_one). */
#define UNIX_SNDBUF (512 * 1024)
/* How long a worker that emptied a connection's input waits in recv for
 * its next request (the sockets' SO_RCVTIMEO), while another worker of
 * the class waits in epoll_wait; then it re-arms the connection. */
#define READ_LINGER_US 2000
#define SEND_CHUNK (1024 * 1024)
/* Parked replies one sendmsg carries at most, and its iovecs. */
#define SEND_JOBS 16
#define IOV_SEND 64
/* Unread input a connection closed without error may leave, read and
 * dropped so that the close does not reset it (drain_input). */
#define DRAIN_MAX (1024 * 1024)

/* Accepts per listener and loop iteration, so a flood cannot starve
 * the connections' events. */
#define ACCEPT_BATCH 64
/* Requests read from one connection per event, for fairness. */
#define READ_BATCH 64
#define ADDR_BUCKETS 1024
#define LOG_INTERVAL_MS 10000

enum class_id { CLASS_TCP, CLASS_LOCAL, CLASS_N };
static const char *const class_names[CLASS_N] = { "tcp", "local" };

struct server;
struct conn;

/* A request from reading to its reply's last byte. */
struct job {
  struct job *next;
  struct conn *cn;
  struct pool *pool;         /* its class's: where its buffer goes back */
  struct nbdsrv_request req;
  uint64_t cost;             /* budget taken */
  struct nbdsrv_buf buf;     /* owned once parked */
  /* The reply: its header, then its data (rep.data[0..rep.len) in buf,
   * or parts the export lent, released with the job); off: bytes sent. */
  struct nbdsrv_reply rep;
  size_t len, off;
};

/* The workers of one class: they wait in epoll_wait on the class's
 * epoll set (its connections, and qefd for queued jobs). */
struct pool {
  int epfd;                  /* the class's connections and qefd */
  int qefd;                  /* eventfd (semaphore): one count per job */
  pthread_mutex_t lock;
  struct job *head, *tail;   /* under lock */
  /* Read buffers (<= NBDSRV_BUF_KEEP) of finished replies, for the next
   * requests: at most one per worker.  Under lock. */
  struct nbdsrv_buf *spare;
  unsigned nspare;
  _Atomic bool stop;
  _Atomic unsigned idle;     /* workers in epoll_wait */
  pthread_t *threads;
  unsigned nthreads;
};

struct class {
  enum class_id id;
  struct server_class_limits lim;
  unsigned nconns, nhandshakes;     /* under s->lock */
  _Atomic uint64_t inflight;        /* taken by the loop, given back by any */
  _Atomic unsigned nwaiting;        /* connections on the wait list */
  struct conn *wait_head, *wait_tail; /* loop */
  struct pool pool;
  unsigned long refused;            /* under s->lock */
  /* Replies sent whole, and the send calls that carried reply bytes
   * (several replies share one when parked ones are flushed). */
  _Atomic uint64_t replies, reply_sends;
};

/* Connections and negotiations of one remote address (TCP). */
struct addr_entry {
  struct addr_entry *next;
  uint8_t key[17];           /* family byte + address */
  unsigned nconns, nhandshakes;
  _Atomic uint64_t inflight; /* reply data in flight of its connections */
};

enum conn_state { CONN_HANDSHAKE, CONN_OPEN };

struct conn {
  struct conn *prev, *next;  /* s->conns; under s->lock */
  struct server *s;
  struct class *cl;
  struct addr_entry *addr;   /* TCP; under s->lock */
  int fd;
  enum conn_state state;     /* set under s->lock */
  _Atomic int64_t deadline_ms; /* the handshake's; monotonic */
  char peer[INET6_ADDRSTRLEN + 16];
  struct nbdsrv_conn *nc;
  /* NULL: plaintext.  Set by the handshake thread (NBD_OPT_STARTTLS)
   * before the connection opens; then read by the holder of the read
   * token and written by the one writer (cn->writing) at once, as
   * GnuTLS allows (nbdtls.h). */
  struct nbdtls_session *tls;

  /* the holder of the read token (cn->reader): the loop, or a worker
   * that just answered cn */
  uint8_t hdr[NBDSRV_REQUEST_LEN];
  unsigned hdr_got;
  uint32_t discard;          /* write payload bytes still to drop */
  _Atomic int64_t last_active_ms; /* last request read */

  /* loop */
  struct job *pending;       /* read, waiting for budget */
  bool waiting;              /* on cl's wait list */
  struct conn *wait_next;

  pthread_mutex_t lock;
  unsigned jobs;             /* requests taken, reply not fully sent */
  uint64_t inflight;         /* their cost */
  struct job *outq, *outq_tail; /* parked replies, in order */
  bool writing;              /* a thread is sending on fd */
  bool want_read;            /* the loop wants EPOLLIN */
  bool need_kick;            /* the loop wants to hear when a job ends */
  bool kicked;               /* on s->kick list */
  bool reader;               /* someone holds the read token */
  bool armed;                /* an epoll event may be delivered */
  /* A reader stopped because replies were parked: no EPOLLIN until the
   * queue is empty (whoever empties it re-arms), so one connection's
   * cached reads go back to one worker serving them in turn. */
  bool hold_read;
  unsigned handlers;         /* workers handling an event of cn */
  bool hup;                  /* a worker saw EPOLLHUP/EPOLLERR */
  bool closing, broken;
  int64_t out_progress_ms;   /* last progress of a parked reply */
  struct conn *kick_next;
};

struct server {
  struct exports *reg;
  struct server_config cfg;
  char *socket_path; /* owned copy; unlinked on free */
  int lfds[LISTENERS_MAX];
  bool lunix[LISTENERS_MAX];
  size_t nl;
  int epfd, efd;
  _Atomic bool stopping;
  struct nbdtls *tls;        /* TCP's credentials; NULL: TLS off */

  pthread_mutex_t lock;
  struct conn *conns;
  struct class classes[CLASS_N];
  struct addr_entry *addrs[ADDR_BUCKETS];

  pthread_mutex_t kick_lock;
  struct conn *kick_head;    /* under kick_lock */
};

enum start_result {
  START_OK,
  START_WAIT_CONN,   /* the connection's budget: its own replies free it */
  START_WAIT_CLASS,  /* the class's: any reply of the class frees it */
  START_WAIT_ADDR,   /* the address's: a reply of its connections */
};

static enum start_result take_budget_locked(struct conn *cn, uint64_t cost,
                                            bool head);

static int64_t
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wakes the loop. */
static void
wake_loop(struct server *s)
{
  uint64_t one = 1;
  ssize_t r = write(s->efd, &one, sizeof one);
  (void)r;
}

/* ---- per-address table (under s->lock) ----------------------------- */

static void
addr_key(const struct sockaddr_storage *ss, uint8_t key[17])
{
  memset(key, 0, 17);
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    /* A v4-mapped address counts as the v4 address. */
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      key[0] = AF_INET;
      memcpy(key + 1, a->sin6_addr.s6_addr + 12, 4);
    } else {
      key[0] = AF_INET6;
      memcpy(key + 1, a->sin6_addr.s6_addr, 16);
    }
  } else if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    key[0] = AF_INET;
    memcpy(key + 1, &a->sin_addr, 4);
  }
}

static unsigned
addr_hash(const uint8_t key[17])
{
  uint32_t h = 2166136261u; /* FNV-1a */
  for (int i = 0; i < 17; i++)
    h = (h ^ key[i]) * 16777619u;
  return h % ADDR_BUCKETS;
}

/* The entry of key, made if absent (NULL when out of memory). */
static struct addr_entry *
addr_get(struct server *s, const uint8_t key[17])
{
  unsigned h = addr_hash(key);
  for (struct addr_entry *e = s->addrs[h]; e; e = e->next)
    if (memcmp(e->key, key, 17) == 0)
      return e;
  struct addr_entry *e = calloc(1, sizeof *e);
  if (e == NULL)
    return NULL;
  memcpy(e->key, key, 17);
  e->next = s->addrs[h];
  s->addrs[h] = e;
  return e;
}

/* Frees e when nothing counts on it any more. */
static void
addr_release(struct server *s, struct addr_entry *e)
{
  if (e == NULL || e->nconns > 0 || e->nhandshakes > 0)
    return;
  struct addr_entry **pp = &s->addrs[addr_hash(e->key)];
  while (*pp != e)
    pp = &(*pp)->next;
  *pp = e->next;
  free(e);
}

/* ---- the transport: the socket, or TLS on it ---------------------- */

/* recv(2) on cn, through TLS once it is negotiated.  The plaintext path
 * is the system call itself. */
static inline ssize_t
conn_recv(struct conn *cn, void *buf, size_t len, int flags)
{
  if (cn->tls == NULL)
    return recv(cn->fd, buf, len, flags);
  return nbdtls_recv(cn->tls, buf, len, flags);
}

/* sendmsg(2) of iov on cn (MSG_NOSIGNAL), through TLS once negotiated. */
static inline ssize_t
conn_sendv(struct conn *cn, struct iovec *iov, int iovcnt, int flags)
{
  if (cn->tls == NULL) {
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
    return sendmsg(cn->fd, &msg, MSG_NOSIGNAL | flags);
  }
  return nbdtls_sendv(cn->tls, iov, iovcnt, flags);
}

/* The budget a request takes: the data its reply carries, and over TLS
 * the ciphertext of it the session's send batch may hold meanwhile
 * (nbdtls_send_cost), so slow TLS readers stay within the budgets too. */
static uint64_t
request_cost(struct conn *cn, const struct nbdsrv_request *req)
{
  uint64_t len = nbdsrv_reply_data_len(cn->nc, req);
  if (cn->tls == NULL)
    return len;
  return len + nbdtls_send_cost(cn->tls, len + NBDSRV_REPLY_LEN);
}

/* ---- the handshake (its own thread, blocking I/O under a deadline) -- */

/* Waits for fd to be ready (events) before the connection's deadline.
 * 0 when ready or no deadline; -1 with ETIMEDOUT. */
static int
wait_deadline(struct conn *cn, short events)
{
  int64_t deadline = atomic_load(&cn->deadline_ms);
  for (;;) {
    int64_t left = deadline == 0 ? -1 : deadline - now_ms();
    if (deadline != 0 && left <= 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    struct pollfd pfd = { .fd = cn->fd, .events = events };
    int r = poll(&pfd, 1, (int)left);
    if (r > 0)
      return 0;
    if (r == -1 && errno != EINTR)
      return -1;
  }
}

static int
sock_read(void *opaque, void *buf, size_t len)
{
  struct conn *cn = opaque;
  size_t got = 0;
  while (got < len) {
    /* Bytes TLS decrypted already are not seen by poll. */
    if ((cn->tls == NULL || nbdtls_pending(cn->tls) == 0) &&
        wait_deadline(cn, POLLIN) == -1)
      return -1;
    ssize_t n = conn_recv(cn, (char *)buf + got, len - got, MSG_DONTWAIT);
    if (n == 0)
      return got == 0 ? 0 : -1;
    if (n == -1) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return -1;
    }
    got += (size_t)n;
  }
  return 1;
}

static int
sock_writev(void *opaque, const struct iovec *iov_in, int iovcnt)
{
  struct conn *cn = opaque;
  struct iovec iov[8];
  if (iovcnt > 8)
    return -1;
  memcpy(iov, iov_in, (size_t)iovcnt * sizeof *iov);
  struct iovec *v = iov;
  while (iovcnt > 0) {
    if (wait_deadline(cn, POLLOUT) == -1)
      return -1;
    ssize_t n = conn_sendv(cn, v, iovcnt, MSG_DONTWAIT);
    if (n == -1) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return -1;
    }
    while (iovcnt > 0 && (size_t)n >= v->iov_len) {
      n -= (ssize_t)v->iov_len;
      v++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      v->iov_base = (char *)v->iov_base + n;
      v->iov_len -= (size_t)n;
    }
  }
  return 0;
}

static int
tls_wait(void *opaque, short events)
{
  return wait_deadline(opaque, events);
}

/* NBD_OPT_STARTTLS was acknowledged: the TLS handshake, under the
 * connection's deadline.  From here on sock_read/sock_writev and the
 * workers go through cn->tls. */
static int
sock_starttls(void *opaque)
{
  struct conn *cn = opaque;
  char err[512];
  cn->tls = nbdtls_accept(cn->s->tls, cn->fd, tls_wait, cn, err, sizeof err);
  if (cn->tls == NULL) {
    log_warn_rl(COMPONENT, "%s: %s", cn->peer, err);
    return -1;
  }
  log_debug(COMPONENT, "%s: TLS, client certificate '%s'", cn->peer,
            nbdtls_peer_name(cn->tls));
  return 0;
}

/* ---- connections: lifetime ------------------------------------------ */

/* Frees cn: its socket and its slots.  Called by the loop once nothing
 * refers to cn any more, or by the handshake thread before cn opened. */
static void
conn_destroy(struct conn *cn)
{
  struct server *s = cn->s;
  pthread_mutex_lock(&s->lock);
  if (cn->prev)
    cn->prev->next = cn->next;
  else
    s->conns = cn->next;
  if (cn->next)
    cn->next->prev = cn->prev;
  cn->cl->nconns--;
  if (cn->addr) {
    cn->addr->nconns--;
    addr_release(s, cn->addr);
  }
  pthread_mutex_unlock(&s->lock);
  log_debug(COMPONENT, "%s: closed", cn->peer);
  nbdtls_session_free(cn->tls);
  close(cn->fd);
  nbdsrv_conn_free(cn->nc);
  pthread_mutex_destroy(&cn->lock);
  free(cn);
}

/* Frees j; its buffer goes back to its class for reuse if it is small
 * and the class keeps fewer than one per worker (a buffer sent on by the
 * loop or another worker would else be unmapped and faulted in again). */
static void
job_free(struct job *j)
{
  struct pool *p = j->pool;
  if (p && j->buf.cap > 0 && !j->buf.mapped) {
    pthread_mutex_lock(&p->lock);
    if (p->spare && p->nspare < p->nthreads) {
      p->spare[p->nspare++] = j->buf;
      j->buf = (struct nbdsrv_buf){ 0 };
    }
    pthread_mutex_unlock(&p->lock);
  }
  nbdsrv_reply_release(&j->rep);
  nbdsrv_buf_free(&j->buf);
  free(j);
}

static void
job_free_list(struct job *j)
{
  while (j) {
    struct job *next = j->next;
    job_free(j);
    j = next;
  }
}

/* Puts cn on the kick list (the loop looks at it again soon); the caller
 * holds cn->lock and wakes the loop after unlocking. */
static void
kick_locked(struct conn *cn)
{
  struct server *s = cn->s;
  if (cn->kicked)
    return;
  cn->kicked = true;
  pthread_mutex_lock(&s->kick_lock);
  cn->kick_next = s->kick_head;
  s->kick_head = cn;
  pthread_mutex_unlock(&s->kick_lock);
}

/* Ends job j of cn: gives its budget back and moves it to *done (freed
 * by the caller after unlocking).  The caller holds cn->lock; returns
 * true when the loop must be woken. */
static bool
job_end_locked(struct conn *cn, struct job *j, struct job **done)
{
  cn->jobs--;
  cn->inflight -= j->cost;
  atomic_fetch_sub(&cn->cl->inflight, j->cost);
  if (cn->addr)
    atomic_fetch_sub(&cn->addr->inflight, j->cost);
  j->next = *done;
  *done = j;
  bool wake = atomic_load(&cn->cl->nwaiting) > 0;
  if (cn->need_kick) {
    kick_locked(cn);
    wake = true;
  }
  return wake;
}

/* Re-arms cn in its class's epoll set for what it waits for now (none:
 * left as it is); the caller holds cn->lock. */
static void
rearm_locked(struct conn *cn)
{
  uint32_t ev = 0;
  if (cn->outq == NULL)
    cn->hold_read = false;
  if (cn->want_read && !cn->reader && !cn->hold_read) {
    if (cn->tls && nbdtls_pending(cn->tls) > 0) {
      /* Requests TLS decrypted already: epoll would not report them.
       * The loop reads them (conn_kicked); no reader holds the token,
       * so the session's input is not being touched. */
      kick_locked(cn);
      wake_loop(cn->s);
    } else
      ev |= EPOLLIN;
  }
  if (cn->outq && !cn->writing && !cn->broken)
    ev |= EPOLLOUT;
  if (ev == 0)
    return;
  struct epoll_event e = { .events = ev | EPOLLONESHOT, .data.ptr = cn };
  if (epoll_ctl(cn->cl->pool.epfd, EPOLL_CTL_MOD, cn->fd, &e) == 0)
    cn->armed = true;
}

/* The connection failed: no more reads or writes, unsent replies are
 * dropped (their budget given back) -- by the writer when one is sending
 * (it holds a parked reply outside the lock; its send now fails and it
 * drops them when it stops writing).  The caller holds cn->lock. */
static bool
break_locked(struct conn *cn, struct job **done)
{
  bool wake = false;
  if (!cn->broken)
    shutdown(cn->fd, SHUT_RDWR);
  cn->broken = cn->closing = true;
  cn->want_read = false;
  cn->need_kick = true;
  while (cn->outq && !cn->writing) {
    struct job *j = cn->outq;
    cn->outq = j->next;
    wake |= job_end_locked(cn, j, done);
  }
  cn->outq_tail = NULL;
  return wake;
}

/* ---- replies ---------------------------------------------------------- */

static int64_t
now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Appends the unsent part of j's reply (hdr, then its data) to iov[*n..),
 * at most *room bytes and IOV_SEND entries in all. */
static void
job_iov(struct job *j, struct iovec *iov, int *n, size_t *room)
{
  struct iovec all[1 + NBDSRV_REPLY_IOV_MAX];
  all[0] = (struct iovec){ j->rep.hdr, NBDSRV_REPLY_LEN };
  int nall = 1 + (j->len ? nbdsrv_reply_iov(&j->rep, all + 1) : 0);
  size_t skip = j->off;
  for (int i = 0; i < nall && *room > 0 && *n < IOV_SEND; i++) {
    if (skip >= all[i].iov_len) {
      skip -= all[i].iov_len;
      continue;
    }
    size_t l = all[i].iov_len - skip;
    if (l > *room)
      l = *room;
    iov[(*n)++] = (struct iovec){ (char *)all[i].iov_base + skip, l };
    *room -= l;
    skip = 0;
  }
}

/* Sends what is left of the replies v[0..nv), in order, several in one
 * sendmsg (issue 17: a worker with more than one reply ready makes one
 * call): blocks in the kernel while the client takes the bytes (the
 * socket's SO_SNDTIMEO bounds each wait, WRITE_WAIT_MS) but gives up at
 * deadline_us.  *ndone: replies sent whole; *moved: some byte was sent.
 * 1: all sent; 0: the client is not reading fast enough; -1: error. */
static int
jobs_send(struct conn *cn, struct job *const *v, int nv, int64_t deadline_us,
          int *ndone, bool *moved)
{
  *ndone = 0;
  while (*ndone < nv) {
    if (*moved && now_us() >= deadline_us)
      return 0;
    /* A blocking call waits a send timeout per chunk it queues on a Unix
     * socket: at most SEND_CHUNK a call, so the deadline is looked at. */
    struct iovec iov[IOV_SEND];
    int n = 0;
    size_t room = NBDSRV_REPLY_LEN + SEND_CHUNK;
    for (int i = *ndone; i < nv && room > 0 && n < IOV_SEND; i++)
      job_iov(v[i], iov, &n, &room);
    ssize_t w = conn_sendv(cn, iov, n, 0);
    if (w > 0) {
      *moved = true;
      atomic_fetch_add_explicit(&cn->cl->reply_sends, 1,
                                memory_order_relaxed);
      int was = *ndone;
      for (size_t left = (size_t)w; left > 0 && *ndone < nv;) {
        struct job *j = v[*ndone];
        size_t rem = NBDSRV_REPLY_LEN + j->len - j->off;
        size_t t = left < rem ? left : rem;
        j->off += t;
        left -= t;
        if (t == rem)
          (*ndone)++;
      }
      atomic_fetch_add_explicit(&cn->cl->replies, (uint64_t)(*ndone - was),
                                memory_order_relaxed);
      continue;
    }
    if (w == -1 && errno == EINTR)
      continue;
    if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    return -1;
  }
  return 1;
}

/* The writer (cn->writing, the caller's) sends cn's parked replies, up to
 * SEND_JOBS per sendmsg, while the client takes them, until deadline_us;
 * the caller holds cn->lock (dropped while sending).  Sent replies go to
 * *done; returns true when the loop must be woken. */
static bool
flush_locked(struct conn *cn, int64_t deadline_us, struct job **done)
{
  bool wake = false;
  while (cn->outq && !cn->broken) {
    struct job *v[SEND_JOBS];
    int nv = 0;
    for (struct job *q = cn->outq; q && nv < SEND_JOBS; q = q->next)
      v[nv++] = q;
    pthread_mutex_unlock(&cn->lock);
    int ndone = 0;
    bool moved = false;
    int r = now_us() < deadline_us
                ? jobs_send(cn, v, nv, deadline_us, &ndone, &moved) : 0;
    pthread_mutex_lock(&cn->lock);
    if (moved)
      cn->out_progress_ms = now_ms();
    for (int i = 0; i < ndone; i++) {
      cn->outq = v[i]->next;
      wake |= job_end_locked(cn, v[i], done);
    }
    if (cn->outq == NULL)
      cn->outq_tail = NULL;
    if (r == 0)
      break;
    if (r == -1) {
      log_debug(COMPONENT, "%s: send: %m", cn->peer);
      wake |= break_locked(cn, done);
      break;
    }
  }
  return wake;
}

/* A worker sends j's reply, and any parked behind it, while the client
 * keeps up; what is left waits on cn's queue for the loop.  keep receives
 * j's buffer when it is small enough to reuse.  drop: the reply is an
 * error caused by the server's stop (a read waiting for an upstream is
 * failed by it): the connection is shut down without it, so the client
 * (QEMU) resends the request after reconnecting instead of failing it. */
static void
worker_reply(struct job *j, struct nbdsrv_buf *keep, bool drop)
{
  struct conn *cn = j->cn;
  struct server *s = cn->s; /* cn may be freed once unlocked */
  struct job *done = NULL;
  bool wake = false;

  pthread_mutex_lock(&cn->lock);
  if (drop && !cn->broken) {
    log_debug(COMPONENT, "%s: stopping: a request failed, closing without"
              " its reply", cn->peer);
    wake = break_locked(cn, &done);
  }
  if (cn->broken) {
    wake |= job_end_locked(cn, j, &done);
    goto out;
  }
  if (cn->writing || cn->outq) {
    /* Replies go out whole and one at a time: park it behind them. */
    j->next = NULL;
    if (cn->outq_tail)
      cn->outq_tail->next = j;
    else {
      cn->outq = j;
      cn->out_progress_ms = now_ms();
    }
    cn->outq_tail = j;
    if (!cn->writing)
      rearm_locked(cn);
    pthread_mutex_unlock(&cn->lock);
    return;
  }
  cn->writing = true;
  pthread_mutex_unlock(&cn->lock);

  int64_t deadline = now_us() + WRITE_WAIT_MS * 1000;
  int ndone;
  bool moved = false;
  int r = jobs_send(cn, &j, 1, deadline, &ndone, &moved);
  pthread_mutex_lock(&cn->lock);
  if (r == 1) {
    if (keep->cap == 0 && j->buf.cap <= NBDSRV_BUF_KEEP) {
      *keep = j->buf;
      j->buf = (struct nbdsrv_buf){ 0 };
    }
    wake |= job_end_locked(cn, j, &done);
    /* Replies parked meanwhile, several per call. */
    wake |= flush_locked(cn, deadline, &done);
  } else if (r == 0) {
    j->next = cn->outq;
    cn->outq = j;
    if (cn->outq_tail == NULL)
      cn->outq_tail = j;
    cn->out_progress_ms = now_ms();
  } else {
    wake |= job_end_locked(cn, j, &done);
    log_debug(COMPONENT, "%s: send: %m", cn->peer);
    wake |= break_locked(cn, &done);
  }
  cn->writing = false;
  if (cn->broken)
    wake |= break_locked(cn, &done); /* what it left while this wrote */
  else if (cn->outq || cn->hold_read)
    rearm_locked(cn); /* EPOLLOUT, or EPOLLIN once the queue is empty */

out:
  pthread_mutex_unlock(&cn->lock);
  job_free_list(done);
  if (wake)
    wake_loop(s);
}

/* A worker (on EPOLLOUT) sends parked replies of cn as the client takes
 * them, for WRITE_WAIT_MS at most; the caller handles an event of cn
 * (cn->handlers). */
static void
conn_flush(struct conn *cn)
{
  struct server *s = cn->s;
  struct job *done = NULL;
  bool wake = false;
  pthread_mutex_lock(&cn->lock);
  if (cn->writing || cn->broken || cn->outq == NULL)
    goto out;
  cn->writing = true;
  wake |= flush_locked(cn, now_us() + WRITE_WAIT_MS * 1000, &done);
  cn->writing = false;
  if (cn->broken)
    wake |= break_locked(cn, &done); /* what it left while this wrote */
out:
  rearm_locked(cn);
  pthread_mutex_unlock(&cn->lock);
  job_free_list(done);
  if (wake)
    wake_loop(s);
}

/* ---- workers ------------------------------------------------------------ */

static void
pool_push(struct pool *p, struct job *j)
{
  j->next = NULL;
  pthread_mutex_lock(&p->lock);
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  pthread_mutex_unlock(&p->lock);
  uint64_t one = 1;
  ssize_t r = write(p->qefd, &one, sizeof one);
  (void)r;
}

/* Carries out j and sends its reply. */
static void
serve_job(struct job *j, struct nbdsrv_buf *buf)
{
  if (buf->cap == 0) {
    pthread_mutex_lock(&j->pool->lock);
    if (j->pool->nspare > 0)
      *buf = j->pool->spare[--j->pool->nspare];
    pthread_mutex_unlock(&j->pool->lock);
  }
  j->buf = *buf;
  *buf = (struct nbdsrv_buf){ 0 };
  nbdsrv_execute(j->cn->nc, &j->req, &j->buf, &j->rep);
  j->len = j->rep.len;
  j->off = 0;
  uint32_t error;
  memcpy(&error, j->rep.hdr + 4, sizeof error); /* magic, error, cookie */
  worker_reply(j, buf,
               error != 0 && atomic_load_explicit(&j->cn->s->stopping,
                                                  memory_order_relaxed));
}

/* Ends a worker's handling of an event of cn: kicks the loop if cn needs
 * it (a hang-up, closing, or what the worker left to it). */
static void
event_end(struct conn *cn, bool kick)
{
  struct server *s = cn->s;
  pthread_mutex_lock(&cn->lock);
  cn->handlers--;
  if (cn->closing || cn->hup)
    kick = true;
  if (kick)
    kick_locked(cn);
  pthread_mutex_unlock(&cn->lock);
  if (kick)
    wake_loop(s);
}

/* A worker got EPOLLIN for cn: it holds the read token and serves cn's
 * requests one after the other (read a header, carry it out, send the
 * reply) while requests come, READ_BATCH at most (waiting READ_LINGER_US
 * for the next one while another worker of the class is idle); then it
 * re-arms cn.  No epoll round trip and no hand-off between threads per
 * request on the hot path.  Anything else (a write's payload, DISC, an
 * error, end of stream, no budget) is left to the loop. */
static void
worker_read(struct conn *cn, struct nbdsrv_buf *buf)
{
  pthread_mutex_lock(&cn->lock);
  if (cn->reader || cn->closing || !cn->want_read) {
    pthread_mutex_unlock(&cn->lock);
    event_end(cn, false);
    return;
  }
  cn->reader = true;
  pthread_mutex_unlock(&cn->lock);

  bool kick = false;
  for (unsigned n = 0;; n++) {
    struct job *j = NULL;
    ssize_t r = 0;
    bool more = false; /* keep the token: serve j, then read again */
    /* Wait for the next request (SO_RCVTIMEO, READ_LINGER_US) only
     * while another worker of the class is free to take other events. */
    int flags = n > 0 && atomic_load_explicit(&cn->cl->pool.idle,
                                              memory_order_relaxed) > 0
                ? 0 : MSG_DONTWAIT;
    if (cn->discard > 0 || cn->hdr_got == NBDSRV_REQUEST_LEN)
      kick = true; /* a write's payload to drop, or a request left over */
    else
      r = conn_recv(cn, cn->hdr + cn->hdr_got,
                    NBDSRV_REQUEST_LEN - cn->hdr_got, flags);
    if (r > 0)
      cn->hdr_got += (unsigned)r;
    else if (!kick && (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
                                  errno != EINTR)))
      kick = true; /* the loop reads it again and sees why */
    if (!kick && cn->hdr_got == NBDSRV_REQUEST_LEN) {
      struct nbdsrv_request req;
      uint32_t payload = 0;
      /* Decoded again by the loop if it is left to it. */
      if (nbdsrv_decode_request(cn->nc, cn->hdr, &req, &payload) == 1 &&
          payload == 0 && (j = calloc(1, sizeof *j)) != NULL) {
        j->cn = cn;
        j->pool = &cn->cl->pool;
        j->req = req;
        j->cost = request_cost(cn, &req);
      } else
        kick = true;
    }

    pthread_mutex_lock(&cn->lock);
    if (j && !cn->closing &&
        take_budget_locked(cn, j->cost, false) == START_OK) {
      cn->hdr_got = 0;
      atomic_store(&cn->last_active_ms, now_ms());
      if (cn->jobs >= cn->s->cfg.conn_requests) {
        cn->want_read = false;
        cn->need_kick = true;
      }
      /* A request that may wait for an upstream gives the read token
       * back before it is carried out (re-armed below), so another
       * worker reads and serves the next requests meanwhile: a miss
       * does not hold up the cached reads pipelined behind it. */
      more = n + 1 < READ_BATCH && cn->want_read &&
             !atomic_load_explicit(&cn->s->stopping, memory_order_relaxed) &&
             !nbdsrv_may_block(cn->nc, &j->req);
    } else if (j) {
      free(j);
      j = NULL;
      kick = true;
    }
    if (!more) {
      cn->reader = false;
      if (!kick)
        rearm_locked(cn);
    }
    pthread_mutex_unlock(&cn->lock);
    /* cn stays alive while this worker handles its event. */
    if (j)
      serve_job(j, buf);
    if (more) {
      /* Its reply was parked (the client is slow, or another worker is
       * writing): reading on would park reply after reply, each with a
       * buffer of its own, until conn_requests hand every request to
       * the loop and the pool (issue 17: cached serving's CPU x 1.5).
       * Stop until the queue drains; its last writer re-arms. */
      pthread_mutex_lock(&cn->lock);
      if (cn->outq) {
        more = false;
        cn->reader = false;
        cn->hold_read = true;
        rearm_locked(cn);
      }
      pthread_mutex_unlock(&cn->lock);
    }
    if (!more)
      break;
  }
  event_end(cn, kick);
}

static void *
worker_main(void *arg)
{
  struct pool *p = arg;
  struct nbdsrv_buf buf = { 0 };
  while (!atomic_load(&p->stop)) {
    struct epoll_event ev;
    atomic_fetch_add_explicit(&p->idle, 1, memory_order_relaxed);
    int n = epoll_wait(p->epfd, &ev, 1, -1);
    atomic_fetch_sub_explicit(&p->idle, 1, memory_order_relaxed);
    if (n <= 0)
      continue;
    if (ev.data.ptr == NULL) {
      /* A queued job (or stop). */
      uint64_t v;
      if (atomic_load(&p->stop) || read(p->qefd, &v, sizeof v) != sizeof v)
        continue;
      pthread_mutex_lock(&p->lock);
      struct job *j = p->head;
      if (j) {
        p->head = j->next;
        if (p->head == NULL)
          p->tail = NULL;
      }
      pthread_mutex_unlock(&p->lock);
      if (j)
        serve_job(j, &buf);
      continue;
    }
    struct conn *cn = ev.data.ptr;
    pthread_mutex_lock(&cn->lock);
    cn->armed = false;
    cn->handlers++;
    if (ev.events & (EPOLLERR | EPOLLHUP) && !(ev.events & EPOLLIN))
      cn->hup = true;
    pthread_mutex_unlock(&cn->lock);
    if (ev.events & EPOLLOUT)
      conn_flush(cn);
    if (ev.events & EPOLLIN)
      worker_read(cn, &buf);
    else
      event_end(cn, false);
  }
  nbdsrv_buf_free(&buf);
  return NULL;
}

static int
pool_start(struct pool *p, unsigned n, const char *name)
{
  pthread_mutex_init(&p->lock, NULL);
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  p->qefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
  struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };
  if (p->epfd == -1 || p->qefd == -1 ||
      epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->qefd, &e) == -1) {
    log_error(COMPONENT, "%s workers: epoll/eventfd: %m", name);
    return -1;
  }
  p->threads = calloc(n, sizeof *p->threads);
  p->spare = calloc(n, sizeof *p->spare);
  if (p->threads == NULL || p->spare == NULL) {
    log_error(COMPONENT, "calloc: %m");
    return -1;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, WORKER_STACK_SIZE);
  for (; p->nthreads < n; p->nthreads++) {
    int r = pthread_create(&p->threads[p->nthreads], &attr, worker_main, p);
    if (r != 0) {
      errno = r;
      log_error(COMPONENT, "%s workers: pthread_create: %m", name);
      pthread_attr_destroy(&attr);
      return -1;
    }
    pthread_setname_np(p->threads[p->nthreads], "nbd-worker");
  }
  pthread_attr_destroy(&attr);
  return 0;
}

static void
pool_stop(struct pool *p)
{
  if (p->threads != NULL) {
    atomic_store(&p->stop, true);
    uint64_t n = p->nthreads + 1;
    ssize_t r = write(p->qefd, &n, sizeof n);
    (void)r;
    for (unsigned i = 0; i < p->nthreads; i++)
      pthread_join(p->threads[i], NULL);
    free(p->threads);
    p->threads = NULL;
    job_free_list(p->head);
    p->head = p->tail = NULL;
  }
  while (p->nspare > 0)
    nbdsrv_buf_free(&p->spare[--p->nspare]);
  free(p->spare);
  p->spare = NULL;
  if (p->epfd >= 0)
    close(p->epfd);
  if (p->qefd >= 0)
    close(p->qefd);
  p->epfd = p->qefd = -1;
}

/* ---- the loop: requests in ---------------------------------------------- */


/* Takes the budget of a request of cost bytes, if it fits.  head: cn is
 * first on its class's wait list (others may not pass it).  The caller
 * holds cn->lock. */
static enum start_result
take_budget_locked(struct conn *cn, uint64_t cost, bool head)
{
  struct server *s = cn->s;
  struct class *cl = cn->cl;
  if (cn->jobs >= s->cfg.conn_requests ||
      (cn->jobs > 0 && cn->inflight + cost > s->cfg.conn_inflight_bytes))
    return START_WAIT_CONN;
  uint64_t used = atomic_load(&cl->inflight);
  if ((!head && atomic_load(&cl->nwaiting) > 0) ||
      (used > 0 && used + cost > cl->lim.inflight_bytes))
    return START_WAIT_CLASS;
  uint64_t aused = cn->addr ? atomic_load(&cn->addr->inflight) : 0;
  if (aused > 0 && aused + cost > s->cfg.addr_inflight_bytes)
    return START_WAIT_ADDR;
  cn->jobs++;
  cn->inflight += cost;
  atomic_fetch_add(&cl->inflight, cost);
  if (cn->addr)
    atomic_fetch_add(&cn->addr->inflight, cost);
  return START_OK;
}

/* Takes j's budget and queues it for a worker, if it fits. */
static enum start_result
try_start(struct conn *cn, struct job *j, bool head)
{
  pthread_mutex_lock(&cn->lock);
  enum start_result r = take_budget_locked(cn, j->cost, head);
  pthread_mutex_unlock(&cn->lock);
  if (r == START_OK)
    pool_push(&cn->cl->pool, j);
  return r;
}

static void
wait_list_add(struct conn *cn)
{
  struct class *cl = cn->cl;
  cn->waiting = true;
  cn->wait_next = NULL;
  if (cl->wait_tail)
    cl->wait_tail->wait_next = cn;
  else
    cl->wait_head = cn;
  cl->wait_tail = cn;
  atomic_fetch_add(&cl->nwaiting, 1);
}

static void
wait_list_remove(struct conn *cn)
{
  struct class *cl = cn->cl;
  struct conn **pp = &cl->wait_head, *prev = NULL;
  while (*pp && *pp != cn) {
    prev = *pp;
    pp = &(*pp)->wait_next;
  }
  if (*pp == NULL)
    return;
  *pp = cn->wait_next;
  if (cl->wait_tail == cn)
    cl->wait_tail = prev;
  cn->waiting = false;
  atomic_fetch_sub(&cl->nwaiting, 1);
}

/* Bytes the loop reads and drops (a write's payload, input left at a
 * close); the loop's alone. */
static uint8_t loop_sink[64 * 1024];

/* Reads and drops what cn's client sent that was never read, before a
 * close without error: close(2) of a socket with unread input resets the
 * connection (TCP sends RST, which may discard reply bytes still on their
 * way, cutting a reply; a Unix-socket client gets ECONNRESET instead of
 * end of file).  Requests are left unread whenever a connection closes
 * with more in flight than it took -- always so at shutdown when a reader
 * stopped behind parked replies (hold_read).  Bounded: a client that keeps
 * sending is reset after DRAIN_MAX bytes.  The loop's alone. */
static void
drain_input(struct conn *cn)
{
  for (size_t n = 0; n < DRAIN_MAX;) {
    ssize_t r = recv(cn->fd, loop_sink, sizeof loop_sink, MSG_DONTWAIT);
    if (r > 0)
      n += (size_t)r;
    else if (r != -1 || errno != EINTR)
      return;
  }
}

/* Frees cn, or re-arms it, after the loop worked on it.  cn may be gone
 * on return. */
static void
conn_update(struct conn *cn)
{
  pthread_mutex_lock(&cn->lock);
  if (cn->closing) {
    cn->want_read = false;
    if (cn->jobs == 0 && !cn->writing && !cn->kicked && !cn->reader &&
        cn->handlers == 0 && cn->armed) {
      /* An event may still come to a worker: make it come now (a hang-up
       * on a socket shut down); the worker kicks the loop back. */
      shutdown(cn->fd, SHUT_RDWR);
      cn->need_kick = true;
      pthread_mutex_unlock(&cn->lock);
      return;
    }
    if (cn->jobs == 0 && !cn->writing && !cn->kicked && !cn->reader &&
        cn->handlers == 0) {
      pthread_mutex_unlock(&cn->lock);
      if (cn->pending) {
        if (cn->waiting)
          wait_list_remove(cn);
        job_free(cn->pending);
        cn->pending = NULL;
      }
      if (!cn->broken)
        drain_input(cn);
      conn_destroy(cn);
      return;
    }
    cn->need_kick = true;
  } else {
    cn->want_read = cn->pending == NULL &&
                    cn->jobs < cn->s->cfg.conn_requests;
    cn->need_kick = (cn->pending && !cn->waiting) || !cn->want_read;
  }
  rearm_locked(cn);
  pthread_mutex_unlock(&cn->lock);
}

/* Stops reading cn; with error, also drops its unsent replies and shuts
 * the socket down.  Requests taken finish either way.  cn may be gone on
 * return. */
static void
conn_close(struct conn *cn, bool error, const char *why)
{
  log_debug(COMPONENT, "%s: closing: %s", cn->peer, why);
  struct job *done = NULL;
  bool wake = false;
  if (cn->pending) {
    if (cn->waiting)
      wait_list_remove(cn);
    job_free(cn->pending);
    cn->pending = NULL;
  }
  pthread_mutex_lock(&cn->lock);
  cn->closing = true;
  cn->want_read = false;
  if (error)
    wake = break_locked(cn, &done);
  pthread_mutex_unlock(&cn->lock);
  job_free_list(done);
  (void)wake; /* the loop is awake: it checks the wait lists next */
  conn_update(cn);
}

/* Reads the requests cn has sent, as far as the socket has them and the
 * budgets allow, and queues them.  The caller holds the read token.
 * NULL, or why cn must close (*error: as a failure). */
static const char *
read_requests(struct conn *cn, bool *error)
{
  struct server *s = cn->s;
  int64_t now = now_ms();
  *error = true;
  for (int n = 0; n < READ_BATCH;) {
    if (cn->discard > 0) {
      size_t want = cn->discard < sizeof loop_sink ? cn->discard
                                                   : sizeof loop_sink;
      ssize_t r = conn_recv(cn, loop_sink, want, MSG_DONTWAIT);
      if (r > 0) {
        cn->discard -= (uint32_t)r;
        continue;
      }
      if (r == -1 && errno == EINTR)
        continue;
      if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return NULL;
      return r == 0 ? "end of stream in a write payload" : "recv failed";
    }
    if (cn->hdr_got < NBDSRV_REQUEST_LEN) {
      ssize_t r = conn_recv(cn, cn->hdr + cn->hdr_got,
                            NBDSRV_REQUEST_LEN - cn->hdr_got, MSG_DONTWAIT);
      if (r == -1 && errno == EINTR)
        continue;
      if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return NULL;
      if (r == 0 && cn->hdr_got == 0) {
        *error = false;
        return "end of stream";
      }
      if (r <= 0)
        return r == 0 ? "end of stream in a request" : "recv failed";
      cn->hdr_got += (unsigned)r;
      if (cn->hdr_got < NBDSRV_REQUEST_LEN)
        continue;
    }
    cn->hdr_got = 0;
    n++;

    struct nbdsrv_request req;
    uint32_t payload;
    int d = nbdsrv_decode_request(cn->nc, cn->hdr, &req, &payload);
    if (d != 1) {
      *error = d == -1;
      return d == 0 ? "NBD_CMD_DISC" : "protocol error";
    }
    cn->discard = payload;
    atomic_store(&cn->last_active_ms, now);
    struct job *j = calloc(1, sizeof *j);
    if (j == NULL) {
      log_error_rl(COMPONENT, "%s: calloc: %m", cn->peer);
      return "out of memory";
    }
    j->cn = cn;
    j->pool = &cn->cl->pool;
    j->req = req;
    j->cost = request_cost(cn, &req);
    enum start_result sr = try_start(cn, j, false);
    if (sr != START_OK) {
      cn->pending = j;
      if (sr != START_WAIT_CONN)
        wait_list_add(cn);
      return NULL;
    }
    pthread_mutex_lock(&cn->lock);
    bool more = cn->jobs < s->cfg.conn_requests;
    pthread_mutex_unlock(&cn->lock);
    if (!more)
      return NULL;
  }
  return NULL;
}

/* The loop reads cn's requests (see read_requests), unless a worker is
 * reading them (it re-arms or kicks when it is done).  cn may be gone on
 * return. */
static void
conn_read(struct conn *cn)
{
  pthread_mutex_lock(&cn->lock);
  bool skip = cn->closing || cn->pending;
  if (!skip && cn->reader) {
    pthread_mutex_unlock(&cn->lock);
    return;
  }
  cn->reader = !skip;
  pthread_mutex_unlock(&cn->lock);
  if (skip) {
    conn_update(cn);
    return;
  }
  bool error;
  const char *why = read_requests(cn, &error);
  pthread_mutex_lock(&cn->lock);
  cn->reader = false;
  pthread_mutex_unlock(&cn->lock);
  if (why)
    conn_close(cn, error, why);
  else
    conn_update(cn);
}

/* A job of cn ended and the loop asked to hear of it.  cn may be gone
 * on return. */
static void
conn_kicked(struct conn *cn)
{
  pthread_mutex_lock(&cn->lock);
  bool hup = cn->hup && !cn->closing;
  pthread_mutex_unlock(&cn->lock);
  if (hup) {
    conn_close(cn, true, "hung up");
    return;
  }
  if (cn->pending && !cn->waiting) {
    enum start_result sr = try_start(cn, cn->pending, false);
    if (sr == START_OK)
      cn->pending = NULL;
    else if (sr != START_WAIT_CONN)
      wait_list_add(cn);
  }
  /* Reading may go on: read what is there now rather than wait for
   * epoll to say so (conn_read re-arms if nothing is). */
  if (cn->pending == NULL)
    conn_read(cn);
  else
    conn_update(cn);
}

static void
process_kicks(struct server *s)
{
  pthread_mutex_lock(&s->kick_lock);
  struct conn *cn = s->kick_head;
  s->kick_head = NULL;
  pthread_mutex_unlock(&s->kick_lock);
  while (cn) {
    struct conn *next = cn->kick_next;
    pthread_mutex_lock(&cn->lock);
    cn->kicked = false;
    pthread_mutex_unlock(&cn->lock);
    conn_kicked(cn);
    cn = next;
  }
}

/* Starts the requests waiting for their class's or address's budget, in
 * order; one that waits for its address does not hold up the others. */
static void
process_waiters(struct class *cl)
{
  struct conn *cn = cl->wait_head;
  while (cn) {
    struct conn *next = cn->wait_next;
    enum start_result sr = try_start(cn, cn->pending, true);
    if (sr == START_WAIT_CLASS)
      return;
    if (sr != START_WAIT_ADDR) {
      wait_list_remove(cn);
      if (sr == START_OK)
        cn->pending = NULL;
      conn_update(cn);
    }
    cn = next;
  }
}

/* ---- handshakes ------------------------------------------------------ */

static void *
handshake_main(void *arg)
{
  struct conn *cn = arg;
  struct server *s = cn->s;
  /* Named here: the thread is detached and may be gone before its
   * creator could name it.  The names show in top -H and perf. */
  pthread_setname_np(pthread_self(), "nbd-handshake");

  int r = nbdsrv_handshake(cn->nc);
  int err = errno;
  if (r == 1)
    log_debug(COMPONENT, "%s: serving '%s'", cn->peer,
              export_name(nbdsrv_conn_export(cn->nc)));
  bool wake = false; /* the loop must look at cn at once */
  /* Under s->lock, so the loop cannot see cn open (and close it) before
   * it is in epoll; from the unlock on the loop owns cn. */
  pthread_mutex_lock(&s->lock);
  cn->cl->nhandshakes--;
  if (cn->addr)
    cn->addr->nhandshakes--;
  bool open = r == 1 && !atomic_load(&s->stopping);
  if (open) {
    cn->state = CONN_OPEN;
    atomic_store(&cn->last_active_ms, now_ms());
    pthread_mutex_lock(&cn->lock);
    cn->want_read = true;
    struct epoll_event e = { .events = EPOLLIN | EPOLLONESHOT,
                             .data.ptr = cn };
    if (epoll_ctl(cn->cl->pool.epfd, EPOLL_CTL_ADD, cn->fd, &e) == 0) {
      cn->armed = true;
      /* Requests sent in the TLS record of the last option are decrypted
       * already, out of epoll's sight: the loop reads them. */
      if (cn->tls && nbdtls_pending(cn->tls) > 0) {
        kick_locked(cn);
        wake = true;
      }
    } else {
      log_warn_rl(COMPONENT, "%s: epoll_ctl: %m", cn->peer);
      wake = true;
      cn->closing = true;
      cn->want_read = false;
      kick_locked(cn);
    }
    pthread_mutex_unlock(&cn->lock);
  }
  pthread_mutex_unlock(&s->lock);

  if (!open) {
    if (r == -1)
      log_debug(COMPONENT, "%s: handshake failed: %s", cn->peer,
                err == ETIMEDOUT ? "timed out" : "protocol error");
    conn_destroy(cn);
  } else if (wake)
    wake_loop(s);
  return NULL;
}

static void
peer_name(int fd, bool is_unix, char *out, size_t len)
{
  if (is_unix) {
    struct ucred cred;
    socklen_t cl = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
      snprintf(out, len, "unix:pid=%d", (int)cred.pid);
    else
      snprintf(out, len, "unix");
    return;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, port,
                sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
  snprintf(out, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
           port);
}

/* Applies cfg.tcp_congestion to TCP socket fd.  Replies (the blocks a
 * child fetches) are sent on these sockets, in bursts of one block per
 * request with idle gaps between a child's reads: traffic that is
 * application-limited.  With BBR (v1, internal pacing, no fq qdisc) such a
 * socket was seen to hold a reply's unsent bytes for 80-100 ms with
 * nothing in flight and the window open, after which it resumed on a
 * timer; in a relay chain each hop adds its own stalls, so the lag behind
 * the chain's head grew with depth (docs/benchmarks.md, finding 2).  The
 * listener was checked in server_new, so a failure here is unexpected:
 * logged once, the connection keeps the default. */
static void
set_congestion(struct server *s, int fd)
{
  const char *cc = s->cfg.tcp_congestion;
  if (cc == NULL ||
      setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc))
          == 0)
    return;
  static atomic_bool warned;
  if (!atomic_exchange(&warned, true))
    log_warn(COMPONENT, "setsockopt TCP_CONGESTION '%s': %m; keeping the"
             " system's default", cc);
}


/* Admits the new connection fd of class cl, or closes it when a limit is
 * reached.  The loop. */
static void
admit(struct server *s, int fd, const struct sockaddr_storage *ss,
      struct class *cl)
{
  bool is_unix = cl->id == CLASS_LOCAL;
  struct conn *cn = calloc(1, sizeof *cn);
  if (cn == NULL) {
    log_error_rl(COMPONENT, "connection: calloc: %m");
    close(fd);
    return;
  }
  cn->s = s;
  cn->cl = cl;
  cn->fd = fd;
  cn->state = CONN_HANDSHAKE;
  pthread_mutex_init(&cn->lock, NULL);
  atomic_init(&cn->deadline_ms, now_ms() + s->cfg.handshake_timeout_ms);
  peer_name(fd, is_unix, cn->peer, sizeof cn->peer);
  struct nbdsrv_io io = { .read = sock_read, .writev = sock_writev,
                          .starttls = !is_unix && s->tls ? sock_starttls
                                                         : NULL,
                          .opaque = cn };
  cn->nc = nbdsrv_conn_new(s->reg, &io, cn->peer);
  if (cn->nc == NULL) {
    log_error_rl(COMPONENT, "connection: out of memory");
    pthread_mutex_destroy(&cn->lock);
    free(cn);
    close(fd);
    return;
  }
  nbdsrv_conn_set_local(cn->nc, is_unix);
  nbdsrv_conn_set_tls(cn->nc, is_unix ? TLSDIR_OFF : s->cfg.tls);

  const char *full = NULL;
  pthread_mutex_lock(&s->lock);
  struct addr_entry *addr = NULL;
  if (!is_unix) {
    uint8_t key[17];
    addr_key(ss, key);
    addr = addr_get(s, key);
    if (addr == NULL)
      full = "out of memory";
  }
  if (full)
    ;
  else if (cl->nconns >= cl->lim.max_connections)
    full = "max-connections";
  else if (cl->nhandshakes >= cl->lim.max_handshakes)
    full = "max-handshakes";
  else if (addr && addr->nconns >= s->cfg.max_connections_per_addr)
    full = "max-connections-per-address";
  else if (addr && addr->nhandshakes >= s->cfg.max_handshakes_per_addr)
    full = "max-handshakes-per-address";
  if (full) {
    unsigned long refused = ++cl->refused;
    unsigned nc = cl->nconns, nh = cl->nhandshakes;
    addr_release(s, addr);
    pthread_mutex_unlock(&s->lock);
    log_warn_rl(COMPONENT, "%s: connection refused (%s): %s class has %u"
                " connections, %u negotiating; %lu refused so far", cn->peer,
                full, class_names[cl->id], nc, nh, refused);
    nbdsrv_conn_free(cn->nc);
    pthread_mutex_destroy(&cn->lock);
    free(cn);
    close(fd);
    return;
  }
  cl->nconns++;
  cl->nhandshakes++;
  if (addr) {
    addr->nconns++;
    addr->nhandshakes++;
  }
  cn->addr = addr;
  cn->next = s->conns;
  if (s->conns)
    s->conns->prev = cn;
  s->conns = cn;
  pthread_mutex_unlock(&s->lock);

  if (!is_unix) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_congestion(s, fd);
  }
  else {
    /* A local reader's replies (up to 32 MiB each) in fewer pieces: with
     * the default 208 KiB a 1 MiB reply waited ~5 times for the reader,
     * a sleep and a wake-up each (issue 17: half of a cold relay's
     * context switches).  The kernel doubles it: 1 MiB per connection,
     * 256 MiB at local-max-connections' default. */
    int sndbuf = UNIX_SNDBUF;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  }
  struct timeval tv = { .tv_sec = 0, .tv_usec = WRITE_WAIT_MS * 1000 };
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  tv.tv_usec = READ_LINGER_US;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  pthread_attr_t attr;
  pthread_t tid;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, HANDSHAKE_STACK_SIZE);
  int r = pthread_create(&tid, &attr, handshake_main, cn);
  pthread_attr_destroy(&attr);
  if (r == 0) {
    log_debug(COMPONENT, "%s: connected", cn->peer);
    return;
  }
  errno = r;
  log_warn_rl(COMPONENT, "%s: pthread_create: %m", cn->peer);
  pthread_mutex_lock(&s->lock);
  cl->nhandshakes--;
  if (addr)
    addr->nhandshakes--;
  pthread_mutex_unlock(&s->lock);
  conn_destroy(cn);
}

/* Accepts what listener i has waiting, up to ACCEPT_BATCH. */
static void
accept_some(struct server *s, size_t i, int64_t *paused_until)
{
  for (int k = 0; k < ACCEPT_BATCH; k++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    /* Blocking, with a send timeout: a worker's reply is written by the
     * kernel as the client takes it; reads pass MSG_DONTWAIT. */
    int fd = accept4(s->lfds[i], (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
          errno == ECONNABORTED)
        return;
      log_warn_rl(COMPONENT, "accept: %m");
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* Let connections end rather than spin: listeners pause. */
        *paused_until = now_ms() + 100;
        for (size_t l = 0; l < s->nl; l++) {
          struct epoll_event e = { .events = 0, .data.u64 = l };
          epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->lfds[l], &e);
        }
      }
      return;
    }
    admit(s, fd, &ss, &s->classes[s->lunix[i] ? CLASS_LOCAL : CLASS_TCP]);
  }
}

/* Once a second: closes TCP connections idle for idle_timeout and those
 * whose replies made no progress for send_timeout. */
static void
check_timeouts(struct server *s, int64_t now)
{
  unsigned idle = s->cfg.idle_timeout_ms, send = s->cfg.send_timeout_ms;
  if (idle == 0 && send == 0)
    return;
  struct conn **v = NULL;
  bool *err = NULL;
  size_t n = 0, cap = 0;
  pthread_mutex_lock(&s->lock);
  for (struct conn *cn = s->conns; cn; cn = cn->next) {
    if (cn->state != CONN_OPEN || cn->cl->id != CLASS_TCP)
      continue;
    pthread_mutex_lock(&cn->lock);
    bool idle_out = idle && !cn->closing && cn->jobs == 0 &&
                    cn->pending == NULL &&
                    now - atomic_load(&cn->last_active_ms) >= idle;
    bool send_out = send && cn->outq && !cn->broken &&
                    now - cn->out_progress_ms >= send;
    pthread_mutex_unlock(&cn->lock);
    if (!idle_out && !send_out)
      continue;
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 64;
      struct conn **nv = realloc(v, nc * sizeof *v);
      bool *ne = nv ? realloc(err, nc * sizeof *ne) : NULL;
      if (nv)
        v = nv;
      if (ne == NULL)
        break;
      err = ne;
      cap = nc;
    }
    v[n] = cn;
    err[n++] = send_out;
  }
  pthread_mutex_unlock(&s->lock);
  for (size_t i = 0; i < n; i++) {
    if (err[i])
      log_warn_rl(COMPONENT, "%s: a reply made no progress for %u ms:"
                  " closing the connection", v[i]->peer, send);
    conn_close(v[i], err[i], err[i] ? "send timeout" : "idle timeout");
  }
  free(v);
  free(err);
}

/* Shutdown: every open connection stops reading (error: also drops its
 * unsent replies); negotiating ones are cut. */
static void
close_all(struct server *s, bool error)
{
  struct conn **v = NULL;
  size_t n = 0, cap = 0;
  pthread_mutex_lock(&s->lock);
  for (struct conn *cn = s->conns; cn; cn = cn->next) {
    if (cn->state != CONN_OPEN) {
      shutdown(cn->fd, SHUT_RDWR);
      continue;
    }
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 64;
      struct conn **nv = realloc(v, nc * sizeof *v);
      if (nv == NULL)
        break;
      v = nv;
      cap = nc;
    }
    v[n++] = cn;
  }
  pthread_mutex_unlock(&s->lock);
  for (size_t i = 0; i < n; i++)
    conn_close(v[i], error, "shutting down");
  free(v);
}

/* ---- listeners ------------------------------------------------------ */

static int
add_listener(struct server *s, int fd, bool is_unix)
{
  if (s->nl == LISTENERS_MAX) {
    log_error(COMPONENT, "too many listening addresses");
    close(fd);
    return -1;
  }
  if (listen(fd, 1024) == -1) {
    log_error(COMPONENT, "listen: %m");
    close(fd);
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  s->lfds[s->nl] = fd;
  s->lunix[s->nl] = is_unix;
  s->nl++;
  return 0;
}

/* Creates dir's missing parents with mode 0755. */
static int
mkdir_parents(const char *path)
{
  CLEANUP_FREE char *copy = strdup(path);
  if (copy == NULL)
    return -1;
  for (char *p = copy + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(copy, 0755) == -1 && errno != EEXIST) {
      log_error(COMPONENT, "mkdir: %s: %m", copy);
      return -1;
    }
    *p = '/';
  }
  return 0;
}

static int
listen_unix(struct server *s, const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  if (strlen(path) >= sizeof sun.sun_path) {
    log_error(COMPONENT, "socket %s: path longer than %zu bytes", path,
              sizeof sun.sun_path - 1);
    return -1;
  }
  strcpy(sun.sun_path, path);

  gid_t gid = (gid_t)-1;
  if (s->cfg.socket_group && *s->cfg.socket_group) {
    struct group gr, *res = NULL;
    char buf[4096];
    getgrnam_r(s->cfg.socket_group, &gr, buf, sizeof buf, &res);
    if (res)
      gid = gr.gr_gid;
    else if (s->cfg.socket_group_optional)
      log_warn(COMPONENT, "socket %s: group '%s' does not exist; keeping the"
               " process's group (QEMU run by libvirt may be unable to"
               " connect)", path, s->cfg.socket_group);
    else {
      log_error(COMPONENT, "socket-group: group '%s' does not exist",
                s->cfg.socket_group);
      return -1;
    }
  }

  if (mkdir_parents(path) == -1)
    return -1;

  /* A socket file left by a dead server is replaced; a live one is not. */
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      log_error(COMPONENT, "socket %s: exists and is not a socket", path);
      return -1;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0) {
      close(probe);
      log_error(COMPONENT, "socket %s: another server is listening on it",
                path);
      return -1;
    }
    if (probe >= 0)
      close(probe);
    unlink(path);
  }

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    log_error(COMPONENT, "socket: %m");
    return -1;
  }
  /* Create it with its final mode: no window where it is more open. */
  mode_t old = umask(0777 & ~s->cfg.socket_mode);
  int r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
  umask(old);
  if (r == -1) {
    log_error(COMPONENT, "bind: %s: %m", path);
    close(fd);
    return -1;
  }
  /* sun.sun_path is path; using the local copy also keeps gcc's
   * -Wformat-overflow (confused by UBSan's checks) quiet. */
  if ((gid != (gid_t)-1 && chown(sun.sun_path, (uid_t)-1, gid) == -1) ||
      chmod(sun.sun_path, s->cfg.socket_mode) == -1) {
    log_error(COMPONENT, "socket %s: chown/chmod: %m", sun.sun_path);
    close(fd);
    unlink(sun.sun_path);
    return -1;
  }
  s->socket_path = strdup(path);
  if (add_listener(s, fd, true) == -1)
    return -1;
  log_info(COMPONENT, "listening on unix socket %s (mode %04o)", path,
           (unsigned)s->cfg.socket_mode);
  return 0;
}

static int
listen_tcp(struct server *s, const char *spec)
{
  struct addrinfo *res = netaddr_listen(spec, COMPONENT, NULL);
  if (res == NULL)
    return -1;
  int bound = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd == -1)
      continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    char h[INET6_ADDRSTRLEN], p[8];
    getnameinfo(ai->ai_addr, ai->ai_addrlen, h, sizeof h, p, sizeof p,
                NI_NUMERICHOST | NI_NUMERICSERV);
    /* Checks tcp-congestion early (an unknown name, or one outside
     * net.ipv4.tcp_allowed_congestion_control without CAP_NET_ADMIN);
     * accepted sockets get it again in accept_one. */
    const char *cc = s->cfg.tcp_congestion;
    if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc,
                         (socklen_t)strlen(cc)) == -1) {
      if (errno == ENOENT)
        log_error(COMPONENT, "tcp-congestion: '%s': not available (see"
                  " /proc/sys/net/ipv4/tcp_available_congestion_control)", cc);
      else
        log_error(COMPONENT, "tcp-congestion: '%s': %m (unprivileged, only"
                  " net.ipv4.tcp_allowed_congestion_control)", cc);
      close(fd);
      freeaddrinfo(res);
      return -1;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
      log_error(COMPONENT, "bind: %s port %s: %m", h, p);
      close(fd);
      continue;
    }
    /* Report the real port when port 0 asked for any free one. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
      getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p,
                  NI_NUMERICHOST | NI_NUMERICSERV);
    if (add_listener(s, fd, false) == -1)
      continue;
    log_info(COMPONENT, "listening on tcp %s port %s", h, p);
    bound++;
  }
  freeaddrinfo(res);
  if (bound == 0) {
    log_error(COMPONENT, "listen: '%s': no address could be bound", spec);
    return -1;
  }
  return 0;
}

struct server *
server_new(struct exports *reg, const struct server_config *cfg)
{
  struct server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    log_error(COMPONENT, "calloc: %m");
    return NULL;
  }
  s->reg = reg;
  s->cfg = *cfg;
  if (s->cfg.conn_requests == 0)
    s->cfg.conn_requests = 1;
  if (s->cfg.conn_inflight_bytes < NBDSRV_REQUEST_MAX)
    s->cfg.conn_inflight_bytes = NBDSRV_REQUEST_MAX;
  if (s->cfg.addr_inflight_bytes < NBDSRV_REQUEST_MAX)
    s->cfg.addr_inflight_bytes = NBDSRV_REQUEST_MAX;
  s->epfd = s->efd = -1;
  pthread_mutex_init(&s->lock, NULL);
  pthread_mutex_init(&s->kick_lock, NULL);
  for (int i = 0; i < CLASS_N; i++) {
    struct class *cl = &s->classes[i];
    cl->id = (enum class_id)i;
    cl->lim = i == CLASS_TCP ? cfg->tcp : cfg->local;
    if (cl->lim.workers == 0)
      cl->lim.workers = 1;
    if (cl->lim.inflight_bytes < NBDSRV_REQUEST_MAX)
      cl->lim.inflight_bytes = NBDSRV_REQUEST_MAX;
    atomic_init(&cl->inflight, 0);
    atomic_init(&cl->nwaiting, 0);
    cl->pool.epfd = cl->pool.qefd = -1;
  }
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->epfd == -1 || s->efd == -1) {
    log_error(COMPONENT, "epoll/eventfd: %m");
    goto fail;
  }
  /* TCP_CONGESTION takes at most 15 bytes and cuts longer names. */
  if (cfg->tcp_congestion && (cfg->tcp_congestion[0] == '\0' ||
                              strlen(cfg->tcp_congestion) > 15)) {
    log_error(COMPONENT, "tcp-congestion: '%s': not a congestion control"
              " name (1-15 characters)", cfg->tcp_congestion);
    goto fail;
  }
  if (cfg->tls != TLSDIR_OFF && cfg->tcp_listen) {
    char err[1024];
    if (cfg->tls_pem == NULL) {
      log_error(COMPONENT, "tls: no certificates");
      goto fail;
    }
    if ((s->tls = nbdtls_new(cfg->tls_pem, err, sizeof err)) == NULL) {
      log_error(COMPONENT, "tls: %s (tls-certificates)", err);
      goto fail;
    }
  }
  s->cfg.tls_pem = NULL; /* read; the caller may free it */
  if (cfg->socket_path && listen_unix(s, cfg->socket_path) == -1)
    goto fail;
  if (cfg->tcp_listen && listen_tcp(s, cfg->tcp_listen) == -1)
    goto fail;
  if (s->nl == 0) {
    log_error(COMPONENT, "nothing to listen on: set socket or listen");
    goto fail;
  }
  for (int i = 0; i < CLASS_N; i++) {
    struct class *cl = &s->classes[i];
    bool used = false;
    for (size_t l = 0; l < s->nl; l++)
      used |= s->lunix[l] == (i == CLASS_LOCAL);
    if (used && pool_start(&cl->pool, cl->lim.workers, class_names[i]) == -1)
      goto fail;
  }
  return s;

fail:
  server_free(s);
  return NULL;
}

void
server_stop(struct server *s)
{
  atomic_store(&s->stopping, true);
  wake_loop(s);
}

/* Connections and negotiations still alive. */
static unsigned
live_conns(struct server *s)
{
  pthread_mutex_lock(&s->lock);
  unsigned n = s->classes[CLASS_TCP].nconns + s->classes[CLASS_LOCAL].nconns;
  pthread_mutex_unlock(&s->lock);
  return n;
}

int
server_run(struct server *s)
{

  struct epoll_event e = { .events = EPOLLIN, .data.u64 = EV_WAKE };
  if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->efd, &e) == -1) {
    log_error(COMPONENT, "epoll_ctl: %m");
    return -1;
  }
  for (size_t i = 0; i < s->nl; i++) {
    e = (struct epoll_event){ .events = EPOLLIN, .data.u64 = i };
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfds[i], &e) == -1) {
      log_error(COMPONENT, "epoll_ctl: %m");
      return -1;
    }
  }

  int64_t next_tick = now_ms() + 1000, paused_until = 0;
  int64_t stop_at = 0; /* when the shutdown began */
  bool forced = false;
  int status = 0;
  for (;;) {
    int64_t now = now_ms();
    int timeout = (int)(next_tick - now);
    if (paused_until && paused_until - now < timeout)
      timeout = (int)(paused_until - now);
    if (stop_at)
      timeout = 50;
    if (timeout < 0)
      timeout = 0;
    struct epoll_event evs[256];
    int n = epoll_wait(s->epfd, evs, 256, timeout);
    if (n == -1 && errno != EINTR) {
      log_error(COMPONENT, "epoll_wait: %m");
      atomic_store(&s->stopping, true);
    }
    for (int i = 0; i < n; i++) {
      uint64_t tag = evs[i].data.u64;
      if (tag == EV_WAKE) {
        uint64_t v;
        ssize_t r = read(s->efd, &v, sizeof v);
        (void)r;
      } else if (tag < LISTENERS_MAX) {
        if (!stop_at)
          accept_some(s, (size_t)tag, &paused_until);
      }
    }
    process_kicks(s);
    for (int c = 0; c < CLASS_N; c++)
      process_waiters(&s->classes[c]);

    now = now_ms();
    if (paused_until && now >= paused_until && !stop_at) {
      paused_until = 0;
      for (size_t l = 0; l < s->nl; l++) {
        e = (struct epoll_event){ .events = EPOLLIN, .data.u64 = l };
        epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->lfds[l], &e);
      }
    }
    if (now >= next_tick) {
      next_tick = now + 1000;
      check_timeouts(s, now);
    }

    if (atomic_load(&s->stopping) && !stop_at) {
      stop_at = now;
      for (size_t i = 0; i < s->nl; i++) {
        close(s->lfds[i]);
        s->lfds[i] = -1;
      }
      unsigned live = live_conns(s);
      if (live)
        log_info(COMPONENT, "closing %u connections", live);
      close_all(s, false);
    }
    if (stop_at) {
      if (live_conns(s) == 0)
        break;
      if (!forced && now - stop_at >= SHUTDOWN_WAIT_MS) {
        /* Clients that do not take their replies: drop them. */
        forced = true;
        close_all(s, true);
      }
      if (now - stop_at >= SHUTDOWN_WAIT_MS + 1000) {
        log_error(COMPONENT, "%u connections did not end within %d ms",
                  live_conns(s), SHUTDOWN_WAIT_MS);
        return -1;
      }
    }
  }
  for (int c = 0; c < CLASS_N; c++)
    pool_stop(&s->classes[c].pool);
  return status;
}

void
server_get_conn_counts(struct server *s, struct server_conn_counts *c)
{
  pthread_mutex_lock(&s->lock);
  const struct class *t = &s->classes[CLASS_TCP], *l = &s->classes[CLASS_LOCAL];
  c->tcp = t->nconns - t->nhandshakes;
  c->local = l->nconns - l->nhandshakes;
  c->handshaking = t->nhandshakes + l->nhandshakes;
  pthread_mutex_unlock(&s->lock);
  c->tcp_replies = atomic_load(&t->replies);
  c->tcp_reply_sends = atomic_load(&t->reply_sends);
  c->local_replies = atomic_load(&l->replies);
  c->local_reply_sends = atomic_load(&l->reply_sends);
}

void
server_free(struct server *s)
{
  if (s == NULL)
    return;
  for (int c = 0; c < CLASS_N; c++)
    pool_stop(&s->classes[c].pool);
  for (size_t i = 0; i < s->nl; i++)
    if (s->lfds[i] >= 0)
      close(s->lfds[i]);
  if (s->socket_path) {
    unlink(s->socket_path);
    free(s->socket_path);
  }
  if (s->epfd >= 0)
    close(s->epfd);
  if (s->efd >= 0)
    close(s->efd);
  for (size_t b = 0; b < ADDR_BUCKETS; b++) {
    while (s->addrs[b]) {
      struct addr_entry *e = s->addrs[b];
      s->addrs[b] = e->next;
      free(e);
    }
  }
  nbdtls_free(s->tls);
  pthread_mutex_destroy(&s->lock);
  pthread_mutex_destroy(&s->kick_lock);
  free(s);
}
