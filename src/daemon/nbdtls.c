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

/* Largest reply sent as one record by nbdtls_sendv (a TLS record holds
 * at most 16 KiB; the copy is on the caller's stack). */
#define NBDTLS_MERGE_MAX (16 * 1024)

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

/* GnuTLS writes at most one record (16 KiB) per call.  Only the first
 * record may wait for the socket (its send timeout, with flags 0): the
 * others pass MSG_DONTWAIT, so one call blocks no longer than a send(2)
 * would, and the caller's deadline is looked at between calls. */
ssize_t
nbdtls_sendv(struct nbdtls_session *s, const struct iovec *iov, int iovcnt,
             int flags)
{
  /* A reply that fits one record (a header and a small read's data) goes
   * out as one: one encryption and one send instead of two.  Retried
   * after EAGAIN with the same bytes, as GnuTLS wants. */
  if (iovcnt == 2 && iov[0].iov_len + iov[1].iov_len <= NBDTLS_MERGE_MAX) {
    uint8_t rec[NBDTLS_MERGE_MAX];
    memcpy(rec, iov[0].iov_base, iov[0].iov_len);
    memcpy(rec + iov[0].iov_len, iov[1].iov_base, iov[1].iov_len);
    s->wflags = flags & MSG_DONTWAIT;
    ssize_t r = gnutls_record_send(s->session, rec,
                                   iov[0].iov_len + iov[1].iov_len);
    if (r > 0)
      return r;
    errno = r == GNUTLS_E_AGAIN ? EAGAIN
            : r == GNUTLS_E_INTERRUPTED ? EINTR : EPIPE;
    return -1;
  }
  size_t sent = 0;
  for (int i = 0; i < iovcnt; i++) {
    size_t off = 0;
    while (off < iov[i].iov_len) {
      int wait = sent + off == 0 ? (flags & MSG_DONTWAIT) : MSG_DONTWAIT;
      /* A small record (a reply header) followed by more waits for it in
       * the kernel: one segment, not two (the sockets have TCP_NODELAY). */
      s->wflags = wait | (i + 1 < iovcnt ? MSG_MORE : 0);
      ssize_t r = gnutls_record_send(s->session,
                                     (const char *)iov[i].iov_base + off,
                                     iov[i].iov_len - off);
      if (r > 0) {
        off += (size_t)r;
        continue;
      }
      if (sent + off > 0)
        return (ssize_t)(sent + off);
      errno = r == GNUTLS_E_AGAIN ? EAGAIN
              : r == GNUTLS_E_INTERRUPTED ? EINTR : EPIPE;
      return -1;
    }
    sent += off;
  }
  return (ssize_t)sent;
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
  free(s);
}
