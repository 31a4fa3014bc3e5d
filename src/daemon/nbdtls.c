/* thunder — TLS for the NBD server's TCP connections; see nbdtls.h. */
#include "nbdtls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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
 * push appends each record to s->out, and one send(2) writes up to
 * BATCH_RECORDS of them.  The copy into s->out is the cost (memcpy runs
 * several times faster than AES-GCM); s->out is allocated per batch and
 * freed once written, so an idle session holds none of it.
 *
 * A record counts as sent (in nbdtls_sendv's result) only when its last
 * byte is on the socket: when send(2) would block part way, the records
 * left stay in s->out and the next call writes them before encrypting
 * anything, which is what the caller's "call again from the same byte"
 * gives: the bytes it passes again were encrypted already. */
#define BATCH_RECORDS 16
/* One record's ciphertext: 16 KiB of data, the header, the AEAD tag and
 * the content type, with room for a TLS 1.3 key update GnuTLS may send
 * before it (lib/tls13/key_update.c). */
#define RECORD_ROOM (16 * 1024 + 512)
#define BATCH_CAP (BATCH_RECORDS * RECORD_ROOM)

/* Longest client CN kept for log messages. */
#define PEER_NAME_MAX 256

struct nbdtls {
  gnutls_certificate_credentials_t cred;
};

struct nbdtls_session {
  gnutls_session_t session;
  int fd;
  int rflags, wflags;        /* of the current recv / send call */
  char why[256];             /* why the client's certificate was refused */
  char peer[PEER_NAME_MAX + 1];
  /* The batch being sent (see BATCH_RECORDS); only the sender touches
   * it: the receiver never writes (nbdtls.h, "Threads"). */
  bool batching;             /* push appends to out instead of sending */
  uint8_t *out;              /* NULL: no batch */
  size_t out_cap, out_len, out_off; /* allocated, encrypted, on the socket */
  int nrec, rec_done;        /* records in out, records wholly sent */
  struct {
    size_t end;              /* offset in out after the record */
    size_t plain;            /* bytes of data it carries */
  } rec[BATCH_RECORDS];
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
  ssize_t r = recv(s->fd, buf, len, s->rflags);
  if (r == -1)
    gnutls_transport_set_errno(s->session,
                               errno == EWOULDBLOCK ? EAGAIN : errno);
  return r;
}

static ssize_t
push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
  struct nbdtls_session *s = p;
  if (s->batching) {
    /* nbdtls_sendv leaves RECORD_ROOM before each record; grown only if
     * a record were larger than that (one record: bounded). */
    if (len > s->out_cap - s->out_len) {
      uint8_t *n = realloc(s->out, s->out_len + len);
      if (n == NULL) {
        gnutls_transport_set_errno(s->session, ENOMEM);
        return -1;
      }
      s->out = n;
      s->out_cap = s->out_len + len;
    }
    memcpy(s->out + s->out_len, buf, len);
    s->out_len += len;
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
  /* No session tickets: every connection is authenticated afresh. */
  int r = gnutls_init(&s->session, GNUTLS_SERVER | GNUTLS_NO_TICKETS);
  if (r < 0) {
    snprintf(err, errlen, "gnutls_init: %s", gnutls_strerror(r));
    free(s);
    return NULL;
  }
  gnutls_session_set_ptr(s->session, s);
  /* TLS 1.2 only (see nbdtls.h, "Threads"): TLS 1.3 lets the client ask
   * for a key update at any time, which GnuTLS handles in the receiving
   * thread while the sending one encrypts. */
  if ((r = gnutls_set_default_priority_append(s->session, "-VERS-TLS1.3",
                                              NULL, 0)) < 0 ||
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
  return s;

fail:
  gnutls_deinit(s->session);
  free(s);
  return NULL;
}

ssize_t
nbdtls_recv(struct nbdtls_session *s, void *buf, size_t len, int flags)
{
  s->rflags = flags & MSG_DONTWAIT;
  ssize_t r = gnutls_record_recv(s->session, buf, len);
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

/* Encrypts one record of len bytes at buf into the batch.  Bytes of data
 * taken, or a GnuTLS error. */
static ssize_t
batch_record(struct nbdtls_session *s, const void *buf, size_t len)
{
  ssize_t r = gnutls_record_send(s->session, buf, len);
  if (r > 0) {
    s->rec[s->nrec].end = s->out_len;
    s->rec[s->nrec].plain = (size_t)r;
    s->nrec++;
  }
  return r;
}

/* Encrypts the start of iov into a new batch: up to BATCH_RECORDS
 * records.  0, or -1 with errno when not one record was made. */
static int
batch_fill(struct nbdtls_session *s, const struct iovec *iov, int iovcnt)
{
  s->out = malloc(BATCH_CAP);
  if (s->out == NULL) {
    errno = ENOMEM;
    return -1;
  }
  s->out_cap = BATCH_CAP;
  s->out_len = s->out_off = 0;
  s->nrec = s->rec_done = 0;
  s->batching = true;
  ssize_t r = 1;
  int i = 0;
  size_t off = 0; /* taken of iov[i] */
  uint8_t rec[NBDTLS_MERGE_MAX];
  while (i < iovcnt && r > 0 && s->nrec < BATCH_RECORDS &&
         s->out_cap - s->out_len >= RECORD_ROOM) {
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
  free(s->out);
  s->out = NULL;
  send_errno(r);
  return -1;
}

/* Writes what is left of the batch: the first send(2) with flags (it may
 * wait for the socket's send timeout), the others with MSG_DONTWAIT.
 * Returns the bytes of data of the records now wholly sent (0: none),
 * or -1 with errno on a socket error.  The batch is freed when written. */
static ssize_t
batch_flush(struct nbdtls_session *s, int flags)
{
  while (s->out_off < s->out_len) {
    ssize_t w = send(s->fd, s->out + s->out_off, s->out_len - s->out_off,
                     MSG_NOSIGNAL | flags);
    if (w > 0) {
      s->out_off += (size_t)w;
      flags = MSG_DONTWAIT;
      continue;
    }
    if (w == -1 && errno == EINTR)
      continue;
    if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    return -1;
  }
  size_t done = 0;
  while (s->rec_done < s->nrec && s->rec[s->rec_done].end <= s->out_off)
    done += s->rec[s->rec_done++].plain;
  if (s->out_off == s->out_len) {
    free(s->out);
    s->out = NULL;
  }
  return (ssize_t)done;
}

ssize_t
nbdtls_sendv(struct nbdtls_session *s, const struct iovec *iov, int iovcnt,
             int flags)
{
  if (s->out == NULL && batch_fill(s, iov, iovcnt) == -1)
    return -1;
  ssize_t done = batch_flush(s, flags & MSG_DONTWAIT);
  if (done == 0)
    errno = EAGAIN;
  return done > 0 ? done : -1;
}

size_t
nbdtls_pending(struct nbdtls_session *s)
{
  return gnutls_record_check_pending(s->session);
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
  free(s->out);
  free(s);
}
