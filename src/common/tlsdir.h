/* thunder — TLS settings shared by thunder's HTTP servers and clients: the
 * mode (--tls off|on|require) and the certificate directory in the layout
 * of common/pki.h (ca-cert.pem, server-cert.pem, server-key.pem,
 * client-cert.pem, client-key.pem), the one QEMU, nbdkit and libnbd read.
 *
 *   off       plain HTTP; no certificates read
 *   on        HTTPS with the server certificate; a client certificate is
 *             asked for and, when presented, must chain to ca-cert.pem and
 *             is the client's identity (its CN); clients without one are
 *             served (they authenticate with bearer tokens only)
 *   require   as on, and a request without a valid client certificate of
 *             the fleet CA is refused (403)
 *
 * Pure file handling: no TLS library here.  Errors name the file.
 */
#ifndef THUNDER_TLSDIR_H
#define THUNDER_TLSDIR_H

#include <stdbool.h>
#include <stddef.h>

enum tlsdir_mode {
  TLSDIR_OFF,
  TLSDIR_ON,
  TLSDIR_REQUIRE,
};

/* The largest PEM file read (a certificate chain or key). */
#define TLSDIR_PEM_MAX (64 * 1024)

/* Parses "off", "on" or "require" (NULL: off).  -1 if s is none. */
int tlsdir_mode_parse(const char *s, enum tlsdir_mode *mode);

/* "off", "on" or "require". */
const char *tlsdir_mode_name(enum tlsdir_mode mode);

/* A server's certificate, key and the CA it trusts, as PEM text. */
struct tlsdir_server {
  char *ca;    /* ca-cert.pem */
  char *cert;  /* server-cert.pem */
  char *key;   /* server-key.pem */
};

/* Reads dir's ca-cert.pem, server-cert.pem and server-key.pem into *out
 * (each a regular file of at most TLSDIR_PEM_MAX bytes holding a PEM
 * block; the key without access for others, as thunderctl pki writes it).  0, or -1 with a message naming the file in err. */
int tlsdir_load_server(const char *dir, struct tlsdir_server *out, char *err,
                       size_t errlen);

/* Frees what s holds. */
void tlsdir_server_free(struct tlsdir_server *s);

/* A client's files of dir, as paths. */
struct tlsdir_client {
  char cacert[4096];  /* ca-cert.pem */
  char cert[4096];    /* client-cert.pem; "" when dir has none */
  char key[4096];     /* client-key.pem; "" when dir has no certificate */
};

/* The client's files of dir: ca-cert.pem must be readable; client-cert.pem
 * and client-key.pem are taken when client-cert.pem exists (then the key
 * must be readable too, and not readable or writable by others, as the
 * server key).  0, or -1 with a message naming the file. */
int tlsdir_load_client(const char *dir, struct tlsdir_client *out, char *err,
                       size_t errlen);

/* The path of file in dir, written to buf; -1 (err names it) if it does
 * not fit or the file is not readable. */
int tlsdir_path(const char *dir, const char *file, char *buf, size_t len,
                char *err, size_t errlen);

#endif
