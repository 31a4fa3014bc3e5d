/* thunder — TLS for the NBD server's TCP connections; see nbdtls.h. */
#include "nbdtls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "clock.h"
#include "tlspeer.h"

/* Most bytes of small pieces (headers, small reads, several replies)
 * nbdtls_sendv gathers into one record (a TLS record holds at most 16 KiB
 * of data; the copy is on the sender's stack). */
#define NBDTLS_MERGE_MAX (16 * 1024)

/* Sending: GnuTLS hands every record it encrypts (at most 16 KiB of data)
 * to the push function at once and waits for it to be written, so a 1 MiB
 * reply was 64 send(2) calls -- 66 per 1 MiB read measured with strace,
 * and on this (virtualised) host a system call is dear.  GnuTLS cannot
 * queue records and write them together (gnutls_record_uncork sends them
 * one by one again), so the batch is ours: while nbdtls_sendv encrypts,
 * push keeps each record it is given (a copy, allocated to its size) in
 * s->out, and one sendmsg(2) writes up to BATCH_RECORDS of them.  The copy
 * is the cost (memcpy runs several times faster than AES-GCM).
 *
 * A record counts as sent (in nbdtls_sendv's result) only when its last
 * byte is on the socket: when sendmsg would block part way, the records
 * left stay in s->out and the next call writes them before encrypting
 * anything, which is what the caller's "call again from the same byte"
 * gives: the bytes it passes again were encrypted already.
 *
 * Memory: each record is freed as soon as it is wholly written, so what a
 * session holds is the ciphertext of records not yet sent -- bytes of
 * replies the server has not finished, at most BATCH_RECORDS records of
 * 16 KiB and their overhead.  The server counts it in its reply budgets
 * (nbdtls_send_cost): a client that reads slowly cannot make it hold more
 * than what it was allowed to have in flight.  (It was one 272 KiB buffer
 * per batch, held whole until its last byte was written, whatever the
 * batch carried, and counted nowhere.) */
#define BATCH_RECORDS 16
#define RECORD_DATA (16 * 1024)
/* Pieces a batch may hold: its records, and a TLS 1.3 KeyUpdate GnuTLS
 * may write before one (lib/tls13/key_update.c): at most one per record. */
#define BATCH_PIECES (2 * BATCH_RECORDS)

/* Receiving: GnuTLS pulls each record with two reads, its 5-byte header
 * and then its body, and a client's requests come as one small record
 * each (50 bytes for a 28-byte NBD request under TLS 1.3): two recv(2) per
 * request.  So pull reads up to IN_CAP bytes at once into s->in and
 * serves GnuTLS's reads from there; a read of IN_CAP bytes or more with
 * nothing buffered (a large record's body) goes to the socket directly.
 * s->in is allocated when the socket is read and freed when emptied
 * (nbdtls_recv), so an idle session holds none of it: at most IN_CAP
 * bytes per session, while bytes wait in it.
 *
 * epoll cannot see those bytes, nor the decrypted ones GnuTLS keeps:
 * nbdtls_pending counts them when s->in holds a whole record (GnuTLS reads
 * exactly a record's header and body, so between calls s->in starts at a
 * record's first byte; the part of a record cut short stays on the
 * socket's side of epoll: pull says EAGAIN only with s->in empty). */
#define IN_CAP (16 * 1024)
#define RECORD_HEADER 5

/* Threads (nbdtls.h): the session's GnuTLS state is shared by the
 * receiving and the sending thread, and under TLS 1.3 receiving changes
 * the sending side.  In GnuTLS 3.7.9, a KeyUpdate from the client is
 * handled inside gnutls_record_recv (lib/tls13/key_update.c,
 * _gnutls13_recv_key_update -> update_keys(STAGE_UPD_PEERS)): it makes
 * a new epoch whose write state -- key, IV and *sequence number* -- is a
 * copy of the current write epoch's (lib/constate.c, _tls13_update_keys),
 * switches epoch_write as well as epoch_read to it
 * (_tls13_connection_state_init), garbage-collects unused epochs
 * (_gnutls_epoch_gc), and, when the client asked for our update
 * (update_requested), sets rsend_state to RECORD_SEND_KEY_UPDATE_1.  A
 * record the sender encrypts meanwhile advances the old epoch's sequence
 * number after the copy, so the next one goes out under a number already
 * used: a nonce used twice with the same AES-GCM key, and the client's
 * "Decryption has failed".
 *
 * The receiving thread never writes a record itself: the server's
 * KeyUpdate is only marked, and the next gnutls_record_send writes it
 * first (lib/record.c, gnutls_record_send2: KEY_UPDATE_1..3 call
 * gnutls_session_key_update, then send the data), through push into the
 * batch, so it goes out in order after the records before it.  The other
 * post-handshake messages a server may receive (lib/handshake-tls13.c,
 * _gnutls13_recv_async_handshake) are errors, heartbeats are not enabled
 * (a heartbeat record is then an error), and a TLS 1.2 ClientHello gives
 * GNUTLS_E_REHANDSHAKE without an answer: push is only ever called by the
 * sender (or the handshake, before any worker).
 *
 * So every GnuTLS call on an established session is made under s->lock:
 * gnutls_record_recv, each gnutls_record_send of batch_fill (one record
 * at a time: a receiver waits at most one record's encryption),
 * gnutls_record_check_pending.  No one waits for the socket under it:
 * receiving pulls with MSG_DONTWAIT, and a caller that asked to block
 * waits with poll() outside the lock, as long as the socket's
 * SO_RCVTIMEO would have let recv(2) wait (read once the handshake is
 * done; 0: no limit).  Writing the batch (batch_flush: send(2) of s->out)
 * needs no GnuTLS call and is done without it. */

/* Longest client CN kept for log messages. */
#define PEER_NAME_MAX 256

struct nbdtls {
  gnutls_certificate_credentials_t cred;
};

struct nbdtls_session {
  gnutls_session_t session;
  pthread_mutex_t lock;      /* around every GnuTLS call (see above) */
  int fd;
  int rflags, wflags;        /* of the current recv / send call */
  int rcv_timeout_ms;        /* the socket's SO_RCVTIMEO; 0: none */
  char why[256];             /* why the client's certificate was refused */
  char peer[PEER_NAME_MAX + 1];
  size_t rec_overhead;       /* most bytes a record adds to its data */
  /* Bytes read from the socket that GnuTLS has not pulled yet (see
   * IN_CAP): in[in_off..in_len); NULL when empty.  The receiver's, under
   * lock. */
  uint8_t *in;
  size_t in_off, in_len;
  bool in_stale;             /* a whole record in it gave nothing: do not
                              * count it as pending until the next read */
  uint64_t pulled;           /* bytes pull has given GnuTLS, ever */
  /* The batch being sent (see BATCH_RECORDS); only the sender touches
   * it: the receiver never writes (see "Threads" above).  out[first..n)
   * are not yet wholly written; out_off bytes of out[first] are. */
  bool batching;             /* push appends to out instead of sending */
  int nrec;                  /* records encrypted into this batch */
  int first, n;
  size_t out_off;
  struct {
    uint8_t *buf;            /* the piece's ciphertext */
    size_t len;
    size_t plain;            /* bytes of data it carries (0: a KeyUpdate) */
  } out[BATCH_PIECES];
};

/* Verifies the client's certificate during the handshake: it must chain
 * to the fleet CA and carry the TLS client purpose.  Non-zero fails the
 * handshake (the client gets a TLS alert, nothing else). */
static int
verify_client(gnutls_session_t session)
{
  struct nbdtls_session *s = gnutls_session_get_ptr(session);
  char why[200];
  int r = tlspeer_check_client(session, s->peer, sizeof s->peer, why,
                               sizeof why);
  if (r == 1)
    return 0;
  snprintf(s->why, sizeof s->why, "%s%s", r == 0 ? "no client certificate"
           : "client certificate refused: ", r == 0 ? "" : why);
  return -1;
}

struct nbdtls *
nbdtls_new(const struct tlsdir_server *pem, char *err, size_t errlen)
{
  struct nbdtls *t = calloc(1, sizeof *t);
  if (t == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  int r = gnutls_certificate_allocate_credentials(&t->cred);
  if (r < 0) {
    snprintf(err, errlen, "TLS credentials: %s", gnutls_strerror(r));
    free(t);
    return NULL;
  }
  gnutls_datum_t ca = { (unsigned char *)pem->ca, (unsigned)strlen(pem->ca) };
  gnutls_datum_t cert = { (unsigned char *)pem->cert,
                          (unsigned)strlen(pem->cert) };
  gnutls_datum_t key = { (unsigned char *)pem->key,
                         (unsigned)strlen(pem->key) };
  r = gnutls_certificate_set_x509_key_mem(t->cred, &cert, &key,
                                          GNUTLS_X509_FMT_PEM);
  if (r < 0) {
    snprintf(err, errlen, "server-cert.pem/server-key.pem: %s",
             gnutls_strerror(r));
    goto fail;
  }
  r = gnutls_certificate_set_x509_trust_mem(t->cred, &ca, GNUTLS_X509_FMT_PEM);
  if (r <= 0) {
    snprintf(err, errlen, "ca-cert.pem: %s",
             r < 0 ? gnutls_strerror(r) : "no certificate");
    goto fail;
  }
  gnutls_certificate_set_verify_function(t->cred, verify_client);
  return t;

fail:
  gnutls_certificate_free_credentials(t->cred);
  free(t);
  return NULL;
}

void
nbdtls_free(struct nbdtls *t)
{
  if (t == NULL)
    return;
  gnutls_certificate_free_credentials(t->cred);
  free(t);
}

/* ---- transport: the socket, with the flags of the current call ------ */

static ssize_t
pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
  struct nbdtls_session *s = p;
  if (s->in_off == s->in_len && len < IN_CAP) {
    if (s->in == NULL && (s->in = malloc(IN_CAP)) == NULL) {
      gnutls_transport_set_errno(s->session, ENOMEM);
      return -1;
    }
    ssize_t r = recv(s->fd, s->in, IN_CAP, s->rflags);
    if (r <= 0) {
      if (r == -1)
        gnutls_transport_set_errno(s->session,
                                   errno == EWOULDBLOCK ? EAGAIN : errno);
      return r;
    }
    s->in_off = 0;
    s->in_len = (size_t)r;
    s->in_stale = false;
  }
  if (s->in_off < s->in_len) {
    size_t n = s->in_len - s->in_off < len ? s->in_len - s->in_off : len;
    memcpy(buf, s->in + s->in_off, n);
    s->in_off += n;
    s->pulled += n;
    return (ssize_t)n;
  }
  ssize_t r = recv(s->fd, buf, len, s->rflags);
  if (r == -1)
    gnutls_transport_set_errno(s->session,
                               errno == EWOULDBLOCK ? EAGAIN : errno);
  if (r > 0)
    s->pulled += (size_t)r;
  return r;
}

/* Whether s->in holds a whole record.  The caller holds s->lock. */
static bool
in_has_record(const struct nbdtls_session *s)
{
  size_t avail = s->in_len - s->in_off;
  if (s->in_stale || avail < RECORD_HEADER)
    return false;
  const uint8_t *h = s->in + s->in_off;
  return avail >= RECORD_HEADER + ((size_t)h[3] << 8 | h[4]);
}

/* After gnutls_record_recv returned r, having pulled bytes or not
 * (progress): frees s->in once emptied.  Returns whether to call it again:
 * GNUTLS_E_AGAIN after a record that carried no data (a TLS 1.3
 * KeyUpdate: gnutls_record_recv handles it and returns GNUTLS_E_AGAIN)
 * while s->in holds a whole record more -- bytes epoll will never report,
 * so the caller must not wait for them.  The caller holds s->lock. */
static bool
in_settle(struct nbdtls_session *s, ssize_t r, bool progress)
{
  if (s->in_off == s->in_len) {
    free(s->in);
    s->in = NULL;
    s->in_off = s->in_len = 0;
  } else if (r == GNUTLS_E_AGAIN && in_has_record(s)) {
    if (progress)
      return true; /* each call takes a record: bounded by s->in */
    /* Never seen (pull says EAGAIN only with s->in empty); were it so,
     * counting the record as pending would spin the event loop. */
    s->in_stale = true;
  }
  return false;
}

static ssize_t
push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
  struct nbdtls_session *s = p;
  if (s->batching) {
    /* batch_fill leaves room for a record and a KeyUpdate before it. */
    uint8_t *copy = s->n < BATCH_PIECES ? malloc(len) : NULL;
    if (copy == NULL) {
      gnutls_transport_set_errno(s->session, ENOMEM);
      return -1;
    }
    memcpy(copy, buf, len);
    s->out[s->n].buf = copy;
    s->out[s->n].len = len;
    s->out[s->n].plain = 0;
    s->n++;
    return (ssize_t)len;
  }
  ssize_t r = send(s->fd, buf, len, MSG_NOSIGNAL | s->wflags);
  if (r == -1)
    gnutls_transport_set_errno(s->session,
                               errno == EWOULDBLOCK ? EAGAIN : errno);
  return r;
}

static int
pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
  struct nbdtls_session *s = p;
  if (s->in_off < s->in_len)
    return 1;
  struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
  int r = poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
  if (r == -1)
    gnutls_transport_set_errno(s->session, errno);
  return r;
}

struct nbdtls_session *
nbdtls_accept(struct nbdtls *t, int fd,
              int (*wait)(void *opaque, short events), void *opaque,
              char *err, size_t errlen)
{
  struct nbdtls_session *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->fd = fd;
  pthread_mutex_init(&s->lock, NULL);
  /* No session tickets: every connection is authenticated afresh. */
  int r = gnutls_init(&s->session, GNUTLS_SERVER | GNUTLS_NO_TICKETS);
  if (r < 0) {
    snprintf(err, errlen, "gnutls_init: %s", gnutls_strerror(r));
    free(s);
    return NULL;
  }
  gnutls_session_set_ptr(s->session, s);
  if ((r = gnutls_set_default_priority(s->session)) < 0 ||
      (r = gnutls_credentials_set(s->session, GNUTLS_CRD_CERTIFICATE,
                                  t->cred)) < 0) {
    snprintf(err, errlen, "TLS session: %s", gnutls_strerror(r));
    goto fail;
  }
  gnutls_certificate_server_set_request(s->session, GNUTLS_CERT_REQUIRE);
  gnutls_transport_set_ptr(s->session, s);
  gnutls_transport_set_pull_function(s->session, pull);
  gnutls_transport_set_pull_timeout_function(s->session, pull_timeout);
  gnutls_transport_set_push_function(s->session, push);

  s->rflags = s->wflags = MSG_DONTWAIT;
  for (;;) {
    r = gnutls_handshake(s->session);
    if (r == 0)
      break;
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
      short ev = gnutls_record_get_direction(s->session) ? POLLOUT : POLLIN;
      if (wait(opaque, ev) == -1) {
        snprintf(err, errlen, "TLS handshake: %s",
                 errno == ETIMEDOUT ? "timed out" : strerror(errno));
        goto fail;
      }
      continue;
    }
    if (gnutls_error_is_fatal(r) == 0)
      continue; /* a warning alert */
    snprintf(err, errlen, "TLS handshake: %s%s%s", gnutls_strerror(r),
             s->why[0] ? ": " : "", s->why);
    goto fail;
  }
  s->rflags = s->wflags = 0;
  /* The record layer's overhead under the negotiated cipher (its most,
   * for CBC) and the 5-byte header; 512 if GnuTLS cannot tell. */
  size_t ov = gnutls_record_overhead_size(s->session);
  s->rec_overhead = ov > 0 ? ov + 5 : 512;
  struct timeval tv = { 0 };
  socklen_t tvlen = sizeof tv;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &tvlen) == 0) {
    long long ms = (long long)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
    s->rcv_timeout_ms = ms > INT32_MAX ? INT32_MAX : (int)ms;
  }
  return s;

fail:
  gnutls_deinit(s->session);
  pthread_mutex_destroy(&s->lock);
  free(s->in);
  free(s);
  return NULL;
}

ssize_t
nbdtls_recv(struct nbdtls_session *s, void *buf, size_t len, int flags)
{
  int64_t deadline = -1; /* of a blocking call, once it must wait */
  ssize_t r;
  for (;;) {
    pthread_mutex_lock(&s->lock);
    s->rflags = MSG_DONTWAIT;
    uint64_t pulled;
    do {
      pulled = s->pulled;
      r = gnutls_record_recv(s->session, buf, len);
    } while (in_settle(s, r, s->pulled != pulled));
    pthread_mutex_unlock(&s->lock);
    /* GNUTLS_E_AGAIN also after a KeyUpdate alone was read: then the
     * socket may have nothing more, and a blocking caller waits. */
    if (r != GNUTLS_E_AGAIN || (flags & MSG_DONTWAIT))
      break;
    int64_t now = clock_mono_ms();
    if (deadline == -1)
      deadline = s->rcv_timeout_ms > 0 ? now + s->rcv_timeout_ms : 0;
    else if (deadline != 0 && now >= deadline)
      break; /* as recv(2) at SO_RCVTIMEO: EAGAIN */
    struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
    int p = poll(&pfd, 1, deadline == 0 ? -1 : (int)(deadline - now));
    if (p == -1)
      return -1; /* EINTR, as recv(2) */
    if (p == 0)
      break;
  }
  if (r >= 0)
    return r;
  switch (r) {
  case GNUTLS_E_AGAIN:
    errno = EAGAIN;
    return -1;
  case GNUTLS_E_INTERRUPTED:
    errno = EINTR;
    return -1;
  case GNUTLS_E_PREMATURE_TERMINATION:
    /* Closed without close_notify, as NBD clients do after NBD_CMD_DISC;
     * a cut inside a request is caught by the NBD framing. */
    return 0;
  case GNUTLS_E_REHANDSHAKE:
    errno = EPROTO; /* renegotiation is refused */
    return -1;
  default:
    errno = gnutls_error_is_fatal((int)r) ? ECONNRESET : EAGAIN;
    return -1;
  }
}

/* errno for a failed gnutls_record_send. */
static void
send_errno(ssize_t r)
{
  errno = r == GNUTLS_E_AGAIN ? EAGAIN : r == GNUTLS_E_INTERRUPTED ? EINTR
          : r == GNUTLS_E_MEMORY_ERROR ? ENOMEM : EPIPE;
}

/* Frees the pieces of the batch not yet written. */
static void
batch_drop(struct nbdtls_session *s)
{
  while (s->first < s->n)
    free(s->out[s->first++].buf);
  s->first = s->n = 0;
}

/* Encrypts one record of len bytes at buf into the batch.  Bytes of data
 * taken, or a GnuTLS error. */
static ssize_t
batch_record(struct nbdtls_session *s, const void *buf, size_t len)
{
  int before = s->n;
  pthread_mutex_lock(&s->lock);
  ssize_t r = gnutls_record_send(s->session, buf, len);
  pthread_mutex_unlock(&s->lock);
  if (r > 0 && s->n == before)
    return GNUTLS_E_INTERNAL_ERROR; /* nothing pushed: never seen */
  if (r > 0) {
    s->out[s->n - 1].plain = (size_t)r; /* the record is pushed last */
    s->nrec++;
  }
  return r;
}

/* Encrypts the start of iov into a new batch: up to BATCH_RECORDS
 * records.  0, or -1 with errno when not one record was made. */
static int
batch_fill(struct nbdtls_session *s, const struct iovec *iov, int iovcnt)
{
  s->first = s->n = s->nrec = 0;
  s->out_off = 0;
  s->batching = true;
  ssize_t r = 1;
  int i = 0;
  size_t off = 0; /* taken of iov[i] */
  uint8_t rec[NBDTLS_MERGE_MAX];
  while (i < iovcnt && r > 0 && s->nrec < BATCH_RECORDS &&
         s->n <= BATCH_PIECES - 2) {
    if (iov[i].iov_len == off) { /* an empty piece */
      i++;
      off = 0;
      continue;
    }
    const char *base = (const char *)iov[i].iov_base + off;
    size_t left = iov[i].iov_len - off;
    if (left >= NBDTLS_MERGE_MAX) {
      r = batch_record(s, base, left); /* encrypted where it lies */
    } else {
      /* Small pieces -- a reply's header and a small read's data, or
       * several such replies the server sends at once -- are gathered
       * into one record while they fit: one encryption and one record
       * header for all of them instead of one per piece. */
      size_t n = 0;
      for (int j = i; j < iovcnt; j++) {
        size_t l = iov[j].iov_len - (j == i ? off : 0);
        if (n + l > sizeof rec)
          break;
        memcpy(rec + n, j == i ? base : iov[j].iov_base, l);
        n += l;
      }
      r = batch_record(s, rec, n);
    }
    /* Step over the r bytes taken (r <= what was offered). */
    size_t k = r > 0 ? (size_t)r : 0;
    while (k > 0) {
      size_t l = iov[i].iov_len - off;
      if (k < l) {
        off += k;
        break;
      }
      k -= l;
      i++;
      off = 0;
    }
  }
  s->batching = false;
  if (s->nrec > 0)
    return 0; /* an error, if any, comes again at the next call */
  batch_drop(s);
  send_errno(r);
  return -1;
}

/* Writes what is left of the batch: the first sendmsg(2) with flags (it
 * may wait for the socket's send timeout), the others with MSG_DONTWAIT.
 * Returns the bytes of data of the records now wholly sent (0: none), or
 * -1 with errno on a socket error.  Each piece is freed once written. */
static ssize_t
batch_flush(struct nbdtls_session *s, int flags)
{
  size_t done = 0;
  while (s->first < s->n) {
    struct iovec iov[BATCH_PIECES];
    int k = 0;
    for (int i = s->first; i < s->n; i++, k++) {
      size_t skip = i == s->first ? s->out_off : 0;
      iov[k] = (struct iovec){ s->out[i].buf + skip, s->out[i].len - skip };
    }
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)k };
    ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL | flags);
    if (w == -1 && errno == EINTR)
      continue;
    if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (w <= 0)
      return -1;
    flags = MSG_DONTWAIT;
    size_t left = (size_t)w;
    while (left > 0) {
      size_t rest = s->out[s->first].len - s->out_off;
      if (left < rest) {
        s->out_off += left;
        break;
      }
      left -= rest;
      done += s->out[s->first].plain;
      free(s->out[s->first].buf);
      s->out[s->first++].buf = NULL;
      s->out_off = 0;
    }
  }
  return (ssize_t)done;
}

ssize_t
nbdtls_sendv(struct nbdtls_session *s, const struct iovec *iov, int iovcnt,
             int flags)
{
  if (s->first == s->n && batch_fill(s, iov, iovcnt) == -1)
    return -1;
  ssize_t done = batch_flush(s, flags & MSG_DONTWAIT);
  if (done == 0)
    errno = EAGAIN;
  return done > 0 ? done : -1;
}

size_t
nbdtls_send_cost(const struct nbdtls_session *s, size_t len)
{
  size_t m = len < BATCH_RECORDS * RECORD_DATA ? len
             : BATCH_RECORDS * RECORD_DATA;
  return m + BATCH_PIECES * s->rec_overhead;
}

size_t
nbdtls_pending(struct nbdtls_session *s)
{
  pthread_mutex_lock(&s->lock);
  size_t n = gnutls_record_check_pending(s->session);
  if (n == 0 && in_has_record(s))
    n = s->in_len - s->in_off;
  pthread_mutex_unlock(&s->lock);
  return n;
}

const char *
nbdtls_peer_name(struct nbdtls_session *s)
{
  return s->peer;
}

void
nbdtls_session_free(struct nbdtls_session *s)
{
  if (s == NULL)
    return;
  gnutls_deinit(s->session);
  pthread_mutex_destroy(&s->lock);
  batch_drop(s);
  free(s->in);
  free(s);
}
