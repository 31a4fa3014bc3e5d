/* thunder — unit tests of the fleet's PKI (src/common/pki.c).
 *
 * Each case makes a CA and host certificates in a private temp directory
 * and reads them back with GnuTLS: the chain verifies against the CA, the
 * subject and the alternative names are what was asked, each certificate
 * has its one purpose and keys are 0600.  The error cases check the
 * message (stderr captured around the call) and that nothing was written.
 */
#include <CUnit/Basic.h>

#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cunit-run.h"
#include "log.h"
#include "pki.h"

static char t_dir[64];
static char t_capture[128];
static char t_msg[4096];
static int t_saved_stderr = -1;

static int
suite_init(void)
{
  snprintf(t_dir, sizeof t_dir, "/tmp/test-pki.XXXXXX");
  if (mkdtemp(t_dir) == NULL)
    return -1;
  snprintf(t_capture, sizeof t_capture, "%s/stderr", t_dir);
  log_init("test-pki", "stderr");
  return 0;
}

static int
suite_clean(void)
{
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", t_dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Sends stderr to t_capture until capture_end, which reads it into t_msg. */
static void
capture_begin(void)
{
  fflush(stderr);
  t_saved_stderr = dup(2);
  int fd = open(t_capture, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  dup2(fd, 2);
  close(fd);
}

static void
capture_end(void)
{
  fflush(stderr);
  dup2(t_saved_stderr, 2);
  close(t_saved_stderr);
  FILE *fp = fopen(t_capture, "r");
  size_t n = fp ? fread(t_msg, 1, sizeof t_msg - 1, fp) : 0;
  t_msg[n] = '\0';
  if (fp)
    fclose(fp);
}

static const char *
path(const char *sub, const char *name)
{
  static char buf[8][256];
  static int i;
  i = (i + 1) % 8;
  snprintf(buf[i], sizeof buf[i], "%s/%s%s%s", t_dir, sub, *name ? "/" : "",
           name);
  return buf[i];
}

static bool
exists(const char *sub, const char *name)
{
  return access(path(sub, name), F_OK) == 0;
}

static gnutls_x509_crt_t
load_crt(const char *sub, const char *name)
{
  gnutls_datum_t d = { NULL, 0 };
  gnutls_x509_crt_t crt = NULL;
  if (gnutls_load_file(path(sub, name), &d) < 0)
    return NULL;
  if (gnutls_x509_crt_init(&crt) < 0 ||
      gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) < 0) {
    gnutls_x509_crt_deinit(crt);
    crt = NULL;
  }
  gnutls_free(d.data);
  return crt;
}

/* True if crt verifies against the CA certificate ca. */
static bool
verifies(gnutls_x509_crt_t crt, gnutls_x509_crt_t ca)
{
  unsigned status = 1;
  return gnutls_x509_crt_verify(crt, &ca, 1, 0, &status) == 0 && status == 0;
}

/* True if crt has the extended key usage oid (and only that one). */
static bool
only_purpose(gnutls_x509_crt_t crt, const char *oid)
{
  char buf[128];
  size_t size = sizeof buf;
  if (gnutls_x509_crt_get_key_purpose_oid(crt, 0, buf, &size, NULL) < 0 ||
      strcmp(buf, oid) != 0)
    return false;
  size = sizeof buf;
  return gnutls_x509_crt_get_key_purpose_oid(crt, 1, buf, &size, NULL) ==
         GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE;
}

static void
test_ca(void)
{
  CU_ASSERT_EQUAL_FATAL(pki_init_ca(path("ca", ""), "test CA", 30, false), 0);
  gnutls_x509_crt_t ca = load_crt("ca", PKI_CA_CERT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
  unsigned critical;
  CU_ASSERT(gnutls_x509_crt_get_ca_status(ca, &critical) > 0);
  CU_ASSERT(verifies(ca, ca));
  char cn[64];
  size_t size = sizeof cn;
  CU_ASSERT_EQUAL(gnutls_x509_crt_get_dn_by_oid(ca, GNUTLS_OID_X520_COMMON_NAME,
                                                0, 0, cn, &size), 0);
  CU_ASSERT_STRING_EQUAL(cn, "test CA");
  time_t left = gnutls_x509_crt_get_expiration_time(ca) - time(NULL);
  CU_ASSERT(left > 29 * 86400 && left <= 30 * 86400);
  struct stat st;
  CU_ASSERT_EQUAL(stat(path("ca", PKI_CA_KEY), &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
  gnutls_x509_crt_deinit(ca);

  /* A second init refuses to replace the CA; --force does. */
  capture_begin();
  CU_ASSERT_EQUAL(pki_init_ca(path("ca", ""), "test CA", 30, false), -1);
  capture_end();
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, "ca-cert.pem: exists; pass --force"));
}

static void
test_issue(void)
{
  static const char *const dns[] = { "node1.example.org" };
  static const char *const ips[] = { "127.0.0.1", "::1" };
  struct pki_host host = { .name = "node1", .dns = dns, .n_dns = 1,
                           .ips = ips, .n_ips = 2, .days = 10,
                           .role = PKI_ROLE_BOTH };

  CU_ASSERT_EQUAL_FATAL(pki_issue(path("ca", ""), path("n1", ""), &host,
                                  false), 0);
  gnutls_x509_crt_t ca = load_crt("ca", PKI_CA_CERT);
  gnutls_x509_crt_t server = load_crt("n1", PKI_SERVER_CERT);
  gnutls_x509_crt_t client = load_crt("n1", PKI_CLIENT_CERT);
  gnutls_x509_crt_t ca_copy = load_crt("n1", PKI_CA_CERT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
  CU_ASSERT_PTR_NOT_NULL_FATAL(server);
  CU_ASSERT_PTR_NOT_NULL_FATAL(client);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ca_copy);
  CU_ASSERT(gnutls_x509_crt_equals(ca, ca_copy));
  CU_ASSERT(verifies(server, ca));
  CU_ASSERT(verifies(client, ca));
  CU_ASSERT(only_purpose(server, GNUTLS_KP_TLS_WWW_SERVER));
  CU_ASSERT(only_purpose(client, GNUTLS_KP_TLS_WWW_CLIENT));
  unsigned critical;
  CU_ASSERT_EQUAL(gnutls_x509_crt_get_ca_status(server, &critical), 0);
  /* The names a TLS client checks: the DNS names (the node name too) and
   * both addresses. */
  CU_ASSERT(gnutls_x509_crt_check_hostname(server, "node1"));
  CU_ASSERT(gnutls_x509_crt_check_hostname(server, "node1.example.org"));
  CU_ASSERT(gnutls_x509_crt_check_hostname(server, "127.0.0.1"));
  CU_ASSERT(gnutls_x509_crt_check_hostname(server, "::1"));
  CU_ASSERT(!gnutls_x509_crt_check_hostname(server, "node2"));
  CU_ASSERT(!gnutls_x509_crt_check_hostname(server, "127.0.0.2"));
  char cn[64];
  size_t size = sizeof cn;
  CU_ASSERT_EQUAL(gnutls_x509_crt_get_dn_by_oid(
                      client, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &size), 0);
  CU_ASSERT_STRING_EQUAL(cn, "node1");
  /* Two certificates, two keys, two serials. */
  unsigned char s1[32], s2[32];
  size_t n1 = sizeof s1, n2 = sizeof s2;
  CU_ASSERT_EQUAL(gnutls_x509_crt_get_serial(server, s1, &n1), 0);
  CU_ASSERT_EQUAL(gnutls_x509_crt_get_serial(client, s2, &n2), 0);
  CU_ASSERT(n1 != n2 || memcmp(s1, s2, n1) != 0);
  CU_ASSERT(s1[0] < 0x80);
  struct stat st;
  CU_ASSERT_EQUAL(stat(path("n1", PKI_SERVER_KEY), &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
  CU_ASSERT_EQUAL(stat(path("n1", PKI_SERVER_CERT), &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0644);
  gnutls_x509_crt_deinit(ca);
  gnutls_x509_crt_deinit(server);
  gnutls_x509_crt_deinit(client);
  gnutls_x509_crt_deinit(ca_copy);
}

static void
test_roles(void)
{
  struct pki_host host = { .name = "api_host", .days = 10,
                           .role = PKI_ROLE_SERVER };
  CU_ASSERT_EQUAL_FATAL(pki_issue(path("ca", ""), path("srv", ""), &host,
                                  false), 0);
  CU_ASSERT(exists("srv", PKI_SERVER_CERT));
  CU_ASSERT(!exists("srv", PKI_CLIENT_CERT));
  CU_ASSERT(!exists("srv", PKI_CLIENT_KEY));
  /* "api_host" is no DNS name: no DNS alternative name. */
  gnutls_x509_crt_t crt = load_crt("srv", PKI_SERVER_CERT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(crt);
  char buf[256];
  size_t size = sizeof buf;
  CU_ASSERT_EQUAL(gnutls_x509_crt_get_subject_alt_name(crt, 0, buf, &size,
                                                       NULL),
                  GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE);
  gnutls_x509_crt_deinit(crt);

  host.role = PKI_ROLE_CLIENT;
  CU_ASSERT_EQUAL(pki_issue(path("ca", ""), path("cli", ""), &host, false),
                  0);
  CU_ASSERT(exists("cli", PKI_CLIENT_CERT));
  CU_ASSERT(!exists("cli", PKI_SERVER_CERT));
}

/* pki_issue fails with a message containing want, and writes nothing into
 * a fresh directory. */
static void
expect_issue_error(const struct pki_host *host, const char *ca_sub,
                   const char *want)
{
  static int n;
  char sub[32];
  snprintf(sub, sizeof sub, "bad%d", n++);
  capture_begin();
  int r = pki_issue(path(ca_sub, ""), path(sub, ""), host, false);
  capture_end();
  CU_ASSERT_EQUAL(r, -1);
  if (strstr(t_msg, want) == NULL)
    fprintf(stderr, "want '%s' in: %s\n", want, t_msg);
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, want));
  CU_ASSERT(!exists(sub, PKI_SERVER_CERT));
  CU_ASSERT(!exists(sub, PKI_CLIENT_KEY));
}

static void
test_errors(void)
{
  static const char *const bad_dns[] = { "-x.example" };
  static const char *const bad_ip[] = { "10.0.0.256" };
  static const char *const ok_ip[] = { "10.0.0.1" };
  struct pki_host host = { .name = "node1", .days = 10,
                           .role = PKI_ROLE_BOTH };

  host.name = ".hidden";
  expect_issue_error(&host, "ca", "host name '.hidden': expected 1 to 64");
  host.name = "node1";
  host.dns = bad_dns;
  host.n_dns = 1;
  expect_issue_error(&host, "ca", "DNS name '-x.example': not a DNS name");
  host.n_dns = 0;
  host.ips = bad_ip;
  host.n_ips = 1;
  expect_issue_error(&host, "ca", "IP address '10.0.0.256': not an IPv4");
  host.ips = ok_ip;
  host.days = 0;
  expect_issue_error(&host, "ca", "validity 0 days");
  host.days = 10;
  expect_issue_error(&host, "nowhere", "nowhere/ca-cert.pem: cannot read");
  /* Files exist: refused as a whole, before anything is written. */
  capture_begin();
  CU_ASSERT_EQUAL(pki_issue(path("ca", ""), path("n1", ""), &host, false), -1);
  capture_end();
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, "n1/ca-cert.pem: exists; pass --force"));
  CU_ASSERT_EQUAL(pki_issue(path("ca", ""), path("n1", ""), &host, true), 0);

  /* A CA whose key is another's. */
  CU_ASSERT_EQUAL_FATAL(pki_init_ca(path("ca2", ""), "other", 30, false), 0);
  char cmd[1024];
  CU_ASSERT_EQUAL_FATAL(pki_init_ca(path("mixed", ""), "mixed", 30, false), 0);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path("ca2", PKI_CA_KEY),
           path("mixed", PKI_CA_KEY));
  CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
  expect_issue_error(&host, "mixed", "mixed/ca-key.pem: not the key of ca-cert.pem");
  /* A host certificate is no CA. */
  snprintf(cmd, sizeof cmd, "mkdir '%s' && cp '%s' '%s' && cp '%s' '%s'",
           path("notca", ""), path("n1", PKI_SERVER_CERT),
           path("notca", PKI_CA_CERT), path("n1", PKI_SERVER_KEY),
           path("notca", PKI_CA_KEY));
  CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
  expect_issue_error(&host, "notca", "notca/ca-cert.pem: not a CA certificate");
}

static void
test_dns_names(void)
{
  CU_ASSERT(pki_dns_name_valid("node1"));
  CU_ASSERT(pki_dns_name_valid("a-b.c-d.example"));
  CU_ASSERT(!pki_dns_name_valid(""));
  CU_ASSERT(!pki_dns_name_valid("a..b"));
  CU_ASSERT(!pki_dns_name_valid("a."));
  CU_ASSERT(!pki_dns_name_valid("a-.b"));
  CU_ASSERT(!pki_dns_name_valid("a_b"));
  char long_label[70];
  memset(long_label, 'a', 64);
  long_label[64] = '\0';
  CU_ASSERT(!pki_dns_name_valid(long_label));
  long_label[63] = '\0';
  CU_ASSERT(pki_dns_name_valid(long_label));
}

int
main(void)
{
  static const struct cunit_suite suite = { "pki", suite_init, suite_clean,
                                            NULL, NULL };
  static const struct cunit_test tests[] = {
    { "a CA: self-signed, CA:TRUE, its validity, key 0600", test_ca },
    { "host certificates: chain, purposes, names, modes", test_issue },
    { "server-only and client-only hosts", test_roles },
    { "bad names, addresses, CA; existing files", test_errors },
    { "DNS name rule", test_dns_names },
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
