/* thunder — the fleet's PKI: a certificate authority and per-host
 * certificates, made with GnuTLS.
 *
 * Files use the directory layout QEMU (tls-creds-x509), nbdkit
 * (--tls-certificates) and libnbd (tls-certificates=) read, so one
 * directory per host serves every program on it:
 *   ca-cert.pem                   the fleet CA (every host)
 *   ca-key.pem                    the CA's key (the CA directory only)
 *   server-cert.pem, server-key.pem   the host as a TLS server
 *   client-cert.pem, client-key.pem   the host as a TLS client
 * Keys are ECDSA P-256 in unencrypted PKCS#8 PEM, mode 0600; certificates
 * X.509 v3 signed with SHA-256, mode 0644.  A host certificate's subject
 * is CN=NAME (the node's identity), with the DNS names and IP addresses
 * given as subject alternative names; a server certificate has the TLS
 * server purpose, a client certificate the TLS client purpose.
 *
 * Files are written whole (temporary file, fsync, rename) and never
 * replace an existing file unless asked to.  Errors are reported once
 * through log.h ("pki: ..."), naming the file.  Not thread-safe.
 */
#ifndef THUNDER_PKI_H
#define THUNDER_PKI_H

#include <stdbool.h>
#include <stddef.h>

#define PKI_CA_CERT "ca-cert.pem"
#define PKI_CA_KEY "ca-key.pem"
#define PKI_SERVER_CERT "server-cert.pem"
#define PKI_SERVER_KEY "server-key.pem"
#define PKI_CLIENT_CERT "client-cert.pem"
#define PKI_CLIENT_KEY "client-key.pem"

/* Which certificates a host gets. */
enum pki_role {
  PKI_ROLE_SERVER = 1,
  PKI_ROLE_CLIENT = 2,
  PKI_ROLE_BOTH = 3,
};

/* What a host certificate says. */
struct pki_host {
  const char *name;         /* CN; manifest_name_valid, at most 64 bytes */
  const char *const *dns;   /* subject alternative DNS names */
  size_t n_dns;
  const char *const *ips;   /* subject alternative IP addresses (text) */
  size_t n_ips;
  unsigned days;            /* validity from now */
  enum pki_role role;
};

/* Makes a CA in dir (created 0700 if missing): ca-cert.pem and ca-key.pem,
 * subject CN=cn, valid for days.  Fails if either file exists and force
 * is false.  0 or -1. */
int pki_init_ca(const char *dir, const char *cn, unsigned days, bool force);

/* Issues host's certificates with the CA of ca_dir (ca-cert.pem,
 * ca-key.pem) into out_dir (created 0700 if missing), with a copy of
 * ca-cert.pem.  Checks every name and address first and fails before
 * writing anything if one is malformed, if the CA's key does not match its
 * certificate, or if a file to be written exists and force is false.
 * 0 or -1. */
int pki_issue(const char *ca_dir, const char *out_dir,
              const struct pki_host *host, bool force);

/* True if s is a DNS name: dot-separated labels of 1-63 letters, digits
 * and '-', not starting or ending with '-', 253 bytes at most. */
bool pki_dns_name_valid(const char *s);

#endif
