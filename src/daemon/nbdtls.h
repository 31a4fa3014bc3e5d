/* thunder — TLS for the NBD server's TCP connections (NBD_OPT_STARTTLS),
 * with GnuTLS.
 *
 * The server's credentials come from the certificate directory
 * (common/tlsdir.h): server-cert.pem and server-key.pem are presented,
 * and every client must present a certificate that chains to
 * ca-cert.pem and carries the TLS client purpose (as the HTTPS control
 * endpoint checks them, common/httpsvc.c): mutual X.509.  A client
 * without one fails the TLS handshake.
 *
 * Kernel TLS is not used (this kernel has no "tls" TCP ULP), so after the
 * handshake the data passes through gnutls_record_recv/send: the server
 * reads and writes a TLS connection through nbdtls_recv/nbdtls_sendv, with
 * the flags and errno of recv(2)/sendmsg(2), so the event loop and the
 * workers keep one code path for both transports.
 *
 * Threads: one thread may receive while another sends on the same
 * session, never two receivers or two senders at once (the server's read
 * token and cn->writing guarantee that).  GnuTLS allows one sender and
 * one receiver only as long as receiving does not change the sending
 * side, which TLS 1.3 does: a client's KeyUpdate, handled in
 * gnutls_record_recv, re-keys the write direction too (and schedules our
 * KeyUpdate for the next send).  So the session serialises its GnuTLS
 * calls with a lock of its own (nbdtls.c, "Threads"), held around the
 * record calls only and never while waiting for the socket; the listener
 * negotiates TLS 1.3 or 1.2 (GnuTLS's default priority).  More than 8
 * KeyUpdates a second from a client end its connection (GnuTLS's limit).
 * Renegotiation (TLS 1.2's rehandshake) is refused: the connection
 * ends.
 */
#ifndef THUNDER_NBDTLS_H
#define THUNDER_NBDTLS_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "tlsdir.h"

struct nbdtls;
struct nbdtls_session;

/* The credentials of pem (which may be freed afterwards).  NULL with a
 * message in err. */
struct nbdtls *nbdtls_new(const struct tlsdir_server *pem, char *err,
                          size_t errlen);

void nbdtls_free(struct nbdtls *t);

/* Runs the server side of a TLS handshake on socket fd (blocking or not:
 * every call passes MSG_DONTWAIT during the handshake), calling
 * wait(opaque, POLLIN or POLLOUT) whenever it must wait for the socket
 * (wait returns -1 to give up: a deadline).  The client's certificate is
 * verified during the handshake.  Returns the session, or NULL with why
 * in err (the connection must then be closed). */
struct nbdtls_session *nbdtls_accept(struct nbdtls *t, int fd,
                                     int (*wait)(void *opaque, short events),
                                     void *opaque, char *err, size_t errlen);

/* As recv(2) on the session: bytes read; 0 at the end of the stream (a
 * close_notify, or the TCP connection closed without one); -1 with errno
 * EAGAIN (flags MSG_DONTWAIT, or the socket's receive timeout), EINTR, or
 * EPROTO/ECONNRESET (a TLS error: close the connection).  Bytes already
 * buffered (nbdtls_pending) are returned without reading the socket. */
ssize_t nbdtls_recv(struct nbdtls_session *s, void *buf, size_t len,
                    int flags);

/* As sendmsg(2) of iov on the session: bytes sent (those of the records
 * written whole; up to 16 records of 16 KiB go out in one sendmsg(2)), or -1
 * with errno EAGAIN (flags MSG_DONTWAIT or the socket's send timeout),
 * EINTR, ENOMEM or EPIPE.  The caller must call again with iov starting
 * at the first byte not counted as sent (records encrypted but not yet
 * wholly written are kept in the session and finished first; their bytes
 * in iov are not read again); every caller of the server does, as it
 * resends from its offset.  Only the first send(2) of a call may wait for
 * the socket (flags 0), so one call blocks no longer than a send(2). */
ssize_t nbdtls_sendv(struct nbdtls_session *s, const struct iovec *iov,
                     int iovcnt, int flags);

/* The most memory the session's send batch may hold of a reply of len
 * bytes (header and data) at once: its ciphertext, up to a batch of 16
 * records, and the records' overhead.  Unsent records are held until
 * written (nbdtls_sendv), so the server counts this in the reply's budget,
 * with the reply's own data; the batch never holds bytes of a reply whose
 * last byte was counted as sent. */
size_t nbdtls_send_cost(const struct nbdtls_session *s, size_t len);

/* Bytes buffered in the session, which epoll cannot see: decrypted ones,
 * or whole records read from the socket ahead (a pull reads up to 16 KiB
 * at once; nbdtls.c, "Receiving").  The reader must take them before
 * waiting for EPOLLIN. */
size_t nbdtls_pending(struct nbdtls_session *s);

/* The client certificate's CN ("" if none), for log messages. */
const char *nbdtls_peer_name(struct nbdtls_session *s);

void nbdtls_session_free(struct nbdtls_session *s);

#endif
