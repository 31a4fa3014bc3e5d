/* thunder — the fleet's PKI (see pki.h for the file layout).
 *
 * Every certificate is built the same way (make_cert): version 3, a random
 * 128-bit serial with the top bit clear (RFC 5280: positive, at most 20
 * octets), valid from a minute ago (clocks drift) for the given days, the
 * subject key identifier from the public key and, for host certificates,
 * the authority key identifier of the CA.  The CA has basic constraints
 * CA:TRUE with path length 0 (it signs hosts only) and may sign
 * certificates and CRLs; a host certificate has CA:FALSE, digital
 * signature as its only key usage (ECDSA does not encipher keys) and one
 * extended key usage, TLS server or TLS client, as QEMU checks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "manifest.h"
#include "pki.h"

#define PKI_NAME_MAX 64
#define PKI_DAYS_MAX (100 * 366)

/* Releases a certificate or a key held in a scope. */
static void
crt_deinit(gnutls_x509_crt_t *crt)
{
  if (*crt)
    gnutls_x509_crt_deinit(*crt);
}
#define CLEANUP_CRT __attribute__((cleanup(crt_deinit)))

static void
key_deinit(gnutls_x509_privkey_t *key)
{
  if (*key)
    gnutls_x509_privkey_deinit(*key);
}
#define CLEANUP_KEY __attribute__((cleanup(key_deinit)))

static void
datum_free(gnutls_datum_t *d)
{
  gnutls_free(d->data);
  d->data = NULL;
}
#define CLEANUP_DATUM __attribute__((cleanup(datum_free)))

bool
pki_dns_name_valid(const char *s)
{
  size_t len = strlen(s), label = 0;

  if (len == 0 || len > 253)
    return false;
  for (size_t i = 0; i <= len; i++) {
    char c = s[i];
    if (c == '.' || c == '\0') {
      if (label == 0 || label > 63 || s[i - 1] == '-')
        return false;
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c >= '0' && c <= '9') || (c == '-' && label > 0)) {
      label++;
    } else {
      return false;
    }
  }
  return true;
}

/* Parses an IPv4 or IPv6 address into buf (4 or 16 bytes); its length,
 * or 0 if s is not an address. */
static size_t
parse_ip(const char *s, unsigned char buf[16])
{
  if (inet_pton(AF_INET, s, buf) == 1)
    return 4;
  if (inet_pton(AF_INET6, s, buf) == 1)
    return 16;
  return 0;
}

/* dir/name into buf; -1 if too long. */
static int
join(char *buf, size_t size, const char *dir, const char *name)
{
  int n = snprintf(buf, size, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= size) {
    log_error("pki", "%s/%s: path too long", dir, name);
    return -1;
  }
  return 0;
}

/* Creates dir (mode 0700) unless it exists as a directory. */
static int
ensure_dir(const char *dir)
{
  struct stat st;

  if (mkdir(dir, 0700) == 0)
    return 0;
  if (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
    return 0;
  if (errno == EEXIST)
    errno = ENOTDIR;
  log_error("pki", "mkdir: %s: %m", dir);
  return -1;
}

/* Fails if dir/name exists and force is false. */
static int
check_absent(const char *dir, const char *name, bool force)
{
  char path[PATH_MAX];

  if (join(path, sizeof path, dir, name) == -1)
    return -1;
  if (!force && access(path, F_OK) == 0) {
    log_error("pki", "%s: exists; pass --force to replace it", path);
    return -1;
  }
  return 0;
}

/* Writes data to dir/name whole: a temporary file of the given mode,
 * fsync, rename over the name. */
static int
write_file(const char *dir, const char *name, const gnutls_datum_t *data,
           mode_t mode)
{
  char path[PATH_MAX], tmp[PATH_MAX];
  CLEANUP_CLOSE int fd = -1;
  size_t done = 0;

  if (join(path, sizeof path, dir, name) == -1 ||
      join(tmp, sizeof tmp, dir, ".pki.tmp") == -1)
    return -1;
  unlink(tmp);
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd == -1) {
    log_error("pki", "open: %s: %m", tmp);
    return -1;
  }
  while (done < data->size) {
    ssize_t n = write(fd, data->data + done, data->size - done);
    if (n == -1 && errno == EINTR)
      continue;
    if (n == -1) {
      log_error("pki", "write: %s: %m", tmp);
      unlink(tmp);
      return -1;
    }
    done += (size_t)n;
  }
  if (fchmod(fd, mode) == -1 || fsync(fd) == -1 || rename(tmp, path) == -1) {
    log_error("pki", "%s: %m", path);
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* Writes a certificate (0644) or a key (0600) as PEM. */
static int
write_crt(const char *dir, const char *name, gnutls_x509_crt_t crt)
{
  CLEANUP_DATUM gnutls_datum_t pem = { NULL, 0 };
  int r = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem);

  if (r < 0) {
    log_error("pki", "%s/%s: exporting the certificate: %s", dir, name,
              gnutls_strerror(r));
    return -1;
  }
  return write_file(dir, name, &pem, 0644);
}

static int
write_key(const char *dir, const char *name, gnutls_x509_privkey_t key)
{
  CLEANUP_DATUM gnutls_datum_t pem = { NULL, 0 };
  int r = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL,
                                            GNUTLS_PKCS_PLAIN, &pem);

  if (r < 0) {
    log_error("pki", "%s/%s: exporting the key: %s", dir, name,
              gnutls_strerror(r));
    return -1;
  }
  return write_file(dir, name, &pem, 0600);
}

/* A new ECDSA P-256 key in *out. */
static int
new_key(gnutls_x509_privkey_t *out)
{
  CLEANUP_KEY gnutls_x509_privkey_t key = NULL;
  int r = gnutls_x509_privkey_init(&key);

  if (r >= 0)
    r = gnutls_x509_privkey_generate(
        key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
        0);
  if (r < 0) {
    log_error("pki", "generating a key: %s", gnutls_strerror(r));
    return -1;
  }
  *out = key;
  key = NULL;
  return 0;
}

/* A certificate for key with subject CN=cn, O=thunder: version, serial,
 * validity, subject key identifier (the common part of every certificate;
 * see the note at the top).  The caller adds extensions and signs. */
static int
make_cert(gnutls_x509_privkey_t key, const char *cn, unsigned days,
          gnutls_x509_crt_t *out)
{
  CLEANUP_CRT gnutls_x509_crt_t crt = NULL;
  unsigned char serial[16], keyid[64];
  size_t keyid_size = sizeof keyid;
  time_t now = time(NULL);
  int r;

  if ((r = gnutls_x509_crt_init(&crt)) < 0 ||
      (r = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial)) < 0)
    goto cleanup;
  serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x01);
  if ((r = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
      (r = gnutls_x509_crt_set_serial(crt, serial, sizeof serial)) < 0 ||
      (r = gnutls_x509_crt_set_activation_time(crt, now - 60)) < 0 ||
      (r = gnutls_x509_crt_set_expiration_time(
           crt, now + (time_t)days * 86400)) < 0 ||
      (r = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0,
                                         cn, (unsigned)strlen(cn))) < 0 ||
      (r = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME,
                                         0, "thunder", 7)) < 0 ||
      (r = gnutls_x509_crt_set_key(crt, key)) < 0 ||
      (r = gnutls_x509_crt_get_key_id(crt, 0, keyid, &keyid_size)) < 0 ||
      (r = gnutls_x509_crt_set_subject_key_id(crt, keyid, keyid_size)) < 0)
    goto cleanup;
  *out = crt;
  crt = NULL;
  return 0;

cleanup:
  log_error("pki", "making the certificate of '%s': %s", cn,
            gnutls_strerror(r));
  return -1;
}

/* Signs crt with issuer's key (SHA-256). */
static int
sign(gnutls_x509_crt_t crt, gnutls_x509_crt_t issuer,
     gnutls_x509_privkey_t issuer_key, const char *cn)
{
  int r = gnutls_x509_crt_sign2(crt, issuer, issuer_key, GNUTLS_DIG_SHA256, 0);

  if (r < 0) {
    log_error("pki", "signing the certificate of '%s': %s", cn,
              gnutls_strerror(r));
    return -1;
  }
  return 0;
}

int
pki_init_ca(const char *dir, const char *cn, unsigned days, bool force)
{
  CLEANUP_KEY gnutls_x509_privkey_t key = NULL;
  CLEANUP_CRT gnutls_x509_crt_t crt = NULL;
  int r;

  if (cn[0] == '\0' || strlen(cn) > PKI_NAME_MAX) {
    log_error("pki", "CA name '%s': expected 1 to %d bytes", cn, PKI_NAME_MAX);
    return -1;
  }
  if (days == 0 || days > PKI_DAYS_MAX) {
    log_error("pki", "validity %u days: expected 1 to %d", days, PKI_DAYS_MAX);
    return -1;
  }
  if (ensure_dir(dir) == -1 || check_absent(dir, PKI_CA_CERT, force) == -1 ||
      check_absent(dir, PKI_CA_KEY, force) == -1)
    return -1;
  if (new_key(&key) == -1 || make_cert(key, cn, days, &crt) == -1)
    return -1;
  if ((r = gnutls_x509_crt_set_basic_constraints(crt, 1, 0)) < 0 ||
      (r = gnutls_x509_crt_set_key_usage(
           crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN)) < 0) {
    log_error("pki", "making the CA certificate: %s", gnutls_strerror(r));
    return -1;
  }
  if (sign(crt, crt, key, cn) == -1)
    return -1;
  /* The key first: a certificate without its key is of no use. */
  if (write_key(dir, PKI_CA_KEY, key) == -1 ||
      write_crt(dir, PKI_CA_CERT, crt) == -1)
    return -1;
  return 0;
}

/* Reads dir/name into *out (freed with gnutls_free). */
static int
load(const char *dir, const char *name, gnutls_datum_t *out)
{
  char path[PATH_MAX];
  int r;

  if (join(path, sizeof path, dir, name) == -1)
    return -1;
  r = gnutls_load_file(path, out);
  if (r < 0) {
    log_error("pki", "%s: cannot read: %s", path, gnutls_strerror(r));
    return -1;
  }
  return 0;
}

/* Loads the CA of dir and checks that its key is the certificate's and
 * that the certificate is a CA. */
static int
load_ca(const char *dir, gnutls_x509_crt_t *crt_out,
        gnutls_x509_privkey_t *key_out)
{
  CLEANUP_DATUM gnutls_datum_t crt_pem = { NULL, 0 }, key_pem = { NULL, 0 };
  CLEANUP_CRT gnutls_x509_crt_t crt = NULL;
  CLEANUP_KEY gnutls_x509_privkey_t key = NULL;
  unsigned char crt_id[64], key_id[64];
  size_t crt_id_size = sizeof crt_id, key_id_size = sizeof key_id;
  unsigned critical = 0;
  int r;

  if (load(dir, PKI_CA_CERT, &crt_pem) == -1 ||
      load(dir, PKI_CA_KEY, &key_pem) == -1)
    return -1;
  if ((r = gnutls_x509_crt_init(&crt)) < 0 ||
      (r = gnutls_x509_crt_import(crt, &crt_pem, GNUTLS_X509_FMT_PEM)) < 0) {
    log_error("pki", "%s/%s: not a PEM certificate: %s", dir, PKI_CA_CERT,
              gnutls_strerror(r));
    return -1;
  }
  if ((r = gnutls_x509_privkey_init(&key)) < 0 ||
      (r = gnutls_x509_privkey_import2(key, &key_pem, GNUTLS_X509_FMT_PEM,
                                       NULL, 0)) < 0) {
    log_error("pki", "%s/%s: not a PEM private key: %s", dir, PKI_CA_KEY,
              gnutls_strerror(r));
    return -1;
  }
  if (gnutls_x509_crt_get_ca_status(crt, &critical) <= 0) {
    log_error("pki", "%s/%s: not a CA certificate", dir, PKI_CA_CERT);
    return -1;
  }
  if (gnutls_x509_crt_get_key_id(crt, 0, crt_id, &crt_id_size) < 0 ||
      gnutls_x509_privkey_get_key_id(key, 0, key_id, &key_id_size) < 0 ||
      crt_id_size != key_id_size ||
      memcmp(crt_id, key_id, crt_id_size) != 0) {
    log_error("pki", "%s/%s: not the key of %s", dir, PKI_CA_KEY, PKI_CA_CERT);
    return -1;
  }
  *crt_out = crt;
  *key_out = key;
  crt = NULL;
  key = NULL;
  return 0;
}

/* Checks what host asks for before anything is written. */
static int
check_host(const struct pki_host *host)
{
  unsigned char ip[16];

  if (!manifest_name_valid(host->name) || strlen(host->name) > PKI_NAME_MAX) {
    log_error("pki", "host name '%s': expected 1 to %d of A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
              host->name, PKI_NAME_MAX);
    return -1;
  }
  for (size_t i = 0; i < host->n_dns; i++)
    if (!pki_dns_name_valid(host->dns[i])) {
      log_error("pki", "DNS name '%s': not a DNS name", host->dns[i]);
      return -1;
    }
  for (size_t i = 0; i < host->n_ips; i++)
    if (parse_ip(host->ips[i], ip) == 0) {
      log_error("pki", "IP address '%s': not an IPv4 or IPv6 address",
                host->ips[i]);
      return -1;
    }
  if (host->days == 0 || host->days > PKI_DAYS_MAX) {
    log_error("pki", "validity %u days: expected 1 to %d", host->days,
              PKI_DAYS_MAX);
    return -1;
  }
  if (host->role < PKI_ROLE_SERVER || host->role > PKI_ROLE_BOTH) {
    log_error("pki", "role %d: expected server, client or both", host->role);
    return -1;
  }
  return 0;
}

/* The host's subject alternative names: its DNS names, and its name too
 * when that is a DNS name and not among them; then its addresses. */
static int
set_alt_names(gnutls_x509_crt_t crt, const struct pki_host *host)
{
  bool name_listed = !pki_dns_name_valid(host->name);
  unsigned char ip[16];
  int r = 0;

  for (size_t i = 0; i < host->n_dns && r >= 0; i++) {
    if (strcmp(host->dns[i], host->name) == 0)
      name_listed = true;
    r = gnutls_x509_crt_set_subject_alt_name(
        crt, GNUTLS_SAN_DNSNAME, host->dns[i], (unsigned)strlen(host->dns[i]),
        GNUTLS_FSAN_APPEND);
  }
  if (r >= 0 && !name_listed)
    r = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME,
                                             host->name,
                                             (unsigned)strlen(host->name),
                                             GNUTLS_FSAN_APPEND);
  for (size_t i = 0; i < host->n_ips && r >= 0; i++) {
    size_t len = parse_ip(host->ips[i], ip);
    r = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip,
                                             (unsigned)len, GNUTLS_FSAN_APPEND);
  }
  if (r < 0) {
    log_error("pki", "the alternative names of '%s': %s", host->name,
              gnutls_strerror(r));
    return -1;
  }
  return 0;
}

/* Makes, signs and writes one host certificate and its key. */
static int
issue_one(gnutls_x509_crt_t ca, gnutls_x509_privkey_t ca_key,
          const struct pki_host *host, const char *purpose,
          const char *out_dir, const char *cert_name, const char *key_name)
{
  CLEANUP_KEY gnutls_x509_privkey_t key = NULL;
  CLEANUP_CRT gnutls_x509_crt_t crt = NULL;
  unsigned char ca_id[64];
  size_t ca_id_size = sizeof ca_id;
  unsigned critical = 0;
  int r;

  if (new_key(&key) == -1 ||
      make_cert(key, host->name, host->days, &crt) == -1)
    return -1;
  if ((r = gnutls_x509_crt_set_basic_constraints(crt, 0, -1)) < 0 ||
      (r = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) <
          0 ||
      (r = gnutls_x509_crt_set_key_purpose_oid(crt, purpose, 0)) < 0 ||
      (r = gnutls_x509_crt_get_subject_key_id(ca, ca_id, &ca_id_size,
                                              &critical)) < 0 ||
      (r = gnutls_x509_crt_set_authority_key_id(crt, ca_id, ca_id_size)) < 0) {
    log_error("pki", "making the certificate of '%s': %s", host->name,
              gnutls_strerror(r));
    return -1;
  }
  if (set_alt_names(crt, host) == -1 || sign(crt, ca, ca_key, host->name) == -1)
    return -1;
  if (write_key(out_dir, key_name, key) == -1 ||
      write_crt(out_dir, cert_name, crt) == -1)
    return -1;
  return 0;
}

int
pki_issue(const char *ca_dir, const char *out_dir,
          const struct pki_host *host, bool force)
{
  CLEANUP_CRT gnutls_x509_crt_t ca = NULL;
  CLEANUP_KEY gnutls_x509_privkey_t ca_key = NULL;
  bool server = host->role & PKI_ROLE_SERVER;
  bool client = host->role & PKI_ROLE_CLIENT;

  if (check_host(host) == -1 || load_ca(ca_dir, &ca, &ca_key) == -1)
    return -1;
  if (ensure_dir(out_dir) == -1)
    return -1;
  /* The CA directory may be the output directory: its certificate is
   * then already there. */
  bool same_dir = strcmp(ca_dir, out_dir) == 0;
  if ((!same_dir && check_absent(out_dir, PKI_CA_CERT, force) == -1) ||
      (server && (check_absent(out_dir, PKI_SERVER_CERT, force) == -1 ||
                  check_absent(out_dir, PKI_SERVER_KEY, force) == -1)) ||
      (client && (check_absent(out_dir, PKI_CLIENT_CERT, force) == -1 ||
                  check_absent(out_dir, PKI_CLIENT_KEY, force) == -1)))
    return -1;
  if (server && issue_one(ca, ca_key, host, GNUTLS_KP_TLS_WWW_SERVER, out_dir,
                          PKI_SERVER_CERT, PKI_SERVER_KEY) == -1)
    return -1;
  if (client && issue_one(ca, ca_key, host, GNUTLS_KP_TLS_WWW_CLIENT, out_dir,
                          PKI_CLIENT_CERT, PKI_CLIENT_KEY) == -1)
    return -1;
  if (!same_dir && write_crt(out_dir, PKI_CA_CERT, ca) == -1)
    return -1;
  return 0;
}
