/* thunder — the one check of a TLS client's certificate, for the HTTPS
 * services (httpsvc.c) and NBD over TLS (daemon/nbdtls.c): it must chain
 * to the CA the credentials trust, carry the TLS client purpose, and name
 * the client in its CN.
 */
#ifndef THUNDER_TLSPEER_H
#define THUNDER_TLSPEER_H

#include <stddef.h>

#include <gnutls/gnutls.h>

/* Checks the client certificate of session (after or during its
 * handshake).  1: verified, its CN (non-empty, at most cnlen - 1 bytes,
 * no NUL) in cn; 0: the client presented none; -1: refused, why (without
 * a "client certificate refused" prefix) in why. */
int tlspeer_check_client(gnutls_session_t session, char *cn, size_t cnlen,
                         char *why, size_t whylen);

#endif
