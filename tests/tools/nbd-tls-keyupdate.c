/* thunder — a test client: NBD over TLS 1.3 asking for key updates while
 * 1 MiB replies stream (from a review's probe, /work/notes/ku-probe.c).
 *
 *   nbd-tls-keyupdate HOST PORT EXPORT IMAGE PKI-DIR CONNECTIONS MS
 *
 * Each of CONNECTIONS processes connects (NBD_OPT_STARTTLS, then a TLS
 * handshake with PKI-DIR/ca-cert.pem, client-cert.pem, client-key.pem;
 * TLS 1.3 is required), opens EXPORT (NBD_OPT_EXPORT_NAME), and for MS
 * milliseconds: asks for 8 reads of 1 MiB at once, and reads the
 * replies, comparing every byte with IMAGE (at least 1 MiB); between
 * replies, while at least 2 more stream, it sends a KeyUpdate asking for
 * the server's (gnutls_session_key_update(GNUTLS_KU_PEER)), 4 a second
 * (see KU_GAP_MS).
 *
 * Prints "ok: C connections over TLS1.3, R replies of 1 MiB, K key
 * updates" and exits 0, or says what failed on stderr and exits 1.  A
 * connection gives up after 60 s (alarm). GnuTLS is used as a client
 * here because libnbd cannot send key updates.
 *
 *   nbd-tls-keyupdate --coalesced HOST PORT EXPORT IMAGE PKI-DIR 1 ROUNDS
 *
 * One connection, ROUNDS times: a KeyUpdate and a 4 KiB read request sent
 * in one TCP segment (TCP_CORK), so the server reads both records in one
 * recv(2); the reply must come within 5 s and equal IMAGE's bytes.
 * Prints "coalesced: ROUNDS".  At most 6 rounds (GnuTLS ends a connection
 * after 8 key updates within a second). */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"

#define MIB (1u << 20)
#define IN_FLIGHT 8
/* 4 a second: GnuTLS ends a connection after 8 within 1000 ms as the
 * server reads them, and a server that stops reading while its replies
 * are queued reads several at once afterwards. */
#define KU_GAP_MS 250

static int conn_no;

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "nbd-tls-keyupdate: connection %d: ", conn_no);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static void
raw_read(int fd, void *buf, size_t n)
{
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      die("negotiation: %s", r == 0 ? "connection closed" : strerror(errno));
    got += (size_t)r;
  }
}

static void
raw_write(int fd, const void *buf, size_t n)
{
  if (write(fd, buf, n) != (ssize_t)n)
    die("negotiation: write: %s", strerror(errno));
}

static void
tls_read(gnutls_session_t s, void *buf, size_t n, const char *what)
{
  size_t got = 0;
  while (got < n) {
    ssize_t r = gnutls_record_recv(s, (char *)buf + got, n - got);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
      continue; /* also after a KeyUpdate from the server */
    if (r <= 0)
      die("%s: %s after %zu of %zu bytes", what,
          r == 0 ? "end of stream" : gnutls_strerror((int)r), got, n);
    got += (size_t)r;
  }
}

static void
tls_write(gnutls_session_t s, const void *buf, size_t n)
{
  size_t done = 0;
  while (done < n) {
    ssize_t r = gnutls_record_send(s, (const char *)buf + done, n - done);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
      continue;
    if (r < 0)
      die("send: %s", gnutls_strerror((int)r));
    done += (size_t)r;
  }
}

/* Connects, upgrades with NBD_OPT_STARTTLS to TLS 1.3 and opens export
 * (at least nblocks MiB); *fdp: the socket, *credp: the session's
 * credentials. */
static gnutls_session_t
open_session(const char *host, const char *port, const char *export,
             size_t nblocks, const char *pki, int *fdp,
             gnutls_certificate_credentials_t *credp)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
  int e = getaddrinfo(host, port, &hints, &ai);
  if (e != 0)
    die("%s:%s: %s", host, port, gai_strerror(e));
  int fd = socket(ai->ai_family, SOCK_STREAM, 0);
  if (fd == -1 || connect(fd, ai->ai_addr, ai->ai_addrlen) == -1)
    die("connect %s:%s: %s", host, port, strerror(errno));
  freeaddrinfo(ai);

  /* Fixed newstyle, no zeroes, then NBD_OPT_STARTTLS. */
  unsigned char b[20];
  raw_read(fd, b, 18);
  if (memcmp(b, "NBDMAGICIHAVEOPT", 16) != 0)
    die("not an NBD newstyle server");
  uint32_t cflags = htonl(3);
  raw_write(fd, &cflags, 4);
  struct __attribute__((packed)) {
    uint64_t magic;
    uint32_t opt, len;
  } opt = { htobe64(0x49484156454F5054ULL), htonl(5), 0 };
  raw_write(fd, &opt, sizeof opt);
  raw_read(fd, b, 20);
  uint32_t type;
  memcpy(&type, b + 12, 4);
  if (ntohl(type) != 1)
    die("NBD_OPT_STARTTLS refused (reply type 0x%x)", ntohl(type));

  char ca[4096], cert[4096], key[4096];
  snprintf(ca, sizeof ca, "%s/ca-cert.pem", pki);
  snprintf(cert, sizeof cert, "%s/client-cert.pem", pki);
  snprintf(key, sizeof key, "%s/client-key.pem", pki);
  gnutls_certificate_credentials_t cred;
  gnutls_session_t s;
  int r;
  if ((r = gnutls_certificate_allocate_credentials(&cred)) < 0 ||
      (r = gnutls_certificate_set_x509_trust_file(cred, ca,
                                                  GNUTLS_X509_FMT_PEM)) <= 0)
    die("%s: %s", ca, r < 0 ? gnutls_strerror(r) : "no certificate");
  if ((r = gnutls_certificate_set_x509_key_file(cred, cert, key,
                                                GNUTLS_X509_FMT_PEM)) < 0)
    die("%s: %s", cert, gnutls_strerror(r));
  if ((r = gnutls_init(&s, GNUTLS_CLIENT)) < 0 ||
      (r = gnutls_set_default_priority(s)) < 0 ||
      (r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred)) < 0)
    die("TLS session: %s", gnutls_strerror(r));
  gnutls_session_set_verify_cert(s, NULL, 0);
  gnutls_transport_set_int(s, fd);
  do
    r = gnutls_handshake(s);
  while (r < 0 && gnutls_error_is_fatal(r) == 0);
  if (r < 0)
    die("TLS handshake: %s", gnutls_strerror(r));
  if (gnutls_protocol_get_version(s) != GNUTLS_TLS1_3)
    die("negotiated %s, not TLS1.3",
        gnutls_protocol_get_name(gnutls_protocol_get_version(s)));

  /* NBD_OPT_EXPORT_NAME: the size and flags follow (no zeroes). */
  size_t elen = strlen(export);
  opt.opt = htonl(1);
  opt.len = htonl((uint32_t)elen);
  tls_write(s, &opt, sizeof opt);
  tls_write(s, export, elen);
  tls_read(s, b, 10, "NBD_OPT_EXPORT_NAME");
  uint64_t size;
  memcpy(&size, b, 8);
  if (be64toh(size) < nblocks * MIB)
    die("export %s: %llu bytes, less than the image", export,
        (unsigned long long)be64toh(size));
  *fdp = fd;
  *credp = cred;
  return s;
}

/* NBD_CMD_READ of len bytes at offset, cookie as given. */
static void
send_read(gnutls_session_t s, uint64_t cookie, uint64_t offset, uint32_t len)
{
  struct __attribute__((packed)) {
    uint32_t magic;
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t len;
  } q = { htonl(0x25609513), 0, 0, htobe64(cookie), htobe64(offset),
          htonl(len) };
  tls_write(s, &q, sizeof q);
}

/* Reads a simple reply's header; dies unless it is a success for a
 * cookie below ncookies.  Returns the cookie. */
static uint64_t
read_reply_header(gnutls_session_t s, uint64_t ncookies, unsigned round)
{
  unsigned char h[16];
  tls_read(s, h, sizeof h, "reply header");
  uint32_t magic, err;
  uint64_t cookie;
  memcpy(&magic, h, 4);
  memcpy(&err, h + 4, 4);
  memcpy(&cookie, h + 8, 8);
  cookie = be64toh(cookie);
  if (ntohl(magic) != 0x67446698 || err != 0 || cookie >= ncookies)
    die("round %u: bad reply (magic 0x%x, error %u, cookie %llu)", round,
        ntohl(magic), ntohl(err), (unsigned long long)cookie);
  return cookie;
}

static unsigned coalesced_round;

static void
coalesced_timeout(int sig)
{
  (void)sig;
  char m[128];
  int n = snprintf(m, sizeof m, "nbd-tls-keyupdate: round %u: no reply"
                   " within 5 s of a KeyUpdate and a request sent"
                   " together\n", coalesced_round);
  if (write(STDERR_FILENO, m, (size_t)n) < 0)
    _exit(1);
  _exit(1);
}

/* --coalesced: ROUNDS times, a KeyUpdate and a 4 KiB read request in one
 * TCP segment (TCP_CORK), so the server reads both records at once; the
 * reply must come within 5 s (SIGALRM).  Prints "coalesced: ROUNDS". */
static void
coalesced(const char *host, const char *port, const char *export,
          const unsigned char *img, size_t nblocks, const char *pki,
          unsigned rounds)
{
  int fd;
  gnutls_certificate_credentials_t cred;
  alarm(60);
  gnutls_session_t s = open_session(host, port, export, nblocks, pki, &fd,
                                    &cred);
  signal(SIGALRM, coalesced_timeout);
  static unsigned char data[4096];
  for (unsigned k = 0; k < rounds; k++) {
    coalesced_round = k;
    int on = 1, off = 0;
    if (setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == -1)
      die("TCP_CORK: %s", strerror(errno));
    int r;
    do
      r = gnutls_session_key_update(s, 0);
    while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
    if (r < 0)
      die("key update: %s", gnutls_strerror(r));
    uint64_t at = (uint64_t)k * 4096 % (nblocks * MIB);
    send_read(s, 0, at, sizeof data);
    if (setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off) == -1)
      die("TCP_CORK: %s", strerror(errno));
    alarm(5);
    read_reply_header(s, 1, k);
    tls_read(s, data, sizeof data, "reply data");
    alarm(0);
    if (memcmp(data, img + at, sizeof data) != 0)
      die("round %u: the reply differs from the image", k);
  }
  printf("coalesced: %u\n", rounds);
  gnutls_bye(s, GNUTLS_SHUT_WR);
  gnutls_deinit(s);
  gnutls_certificate_free_credentials(cred);
  close(fd);
}

/* One connection; returns through exit(): 0 and "REPLIES KEYUPDATES" on
 * stdout. */
static void
connection(const char *host, const char *port, const char *export,
           const unsigned char *img, size_t nblocks, const char *pki,
           int64_t ms)
{
  alarm(60);
  int fd;
  gnutls_certificate_credentials_t cred;
  gnutls_session_t s = open_session(host, port, export, nblocks, pki, &fd,
                                    &cred);
  int r;
  static unsigned char data[MIB];
  unsigned long replies = 0, kus = 0;
  int64_t start = clock_mono_ms(), last_ku = start - KU_GAP_MS;
  for (unsigned k = 0; clock_mono_ms() - start < ms; k++) {
    for (unsigned i = 0; i < IN_FLIGHT; i++)
      send_read(s, i, (uint64_t)((i + k) % nblocks) * MIB, MIB);
    for (unsigned i = 0; i < IN_FLIGHT; i++) {
      /* While at least 2 more replies are to come (the server is
       * encrypting or sending them). */
      if (i + 2 < IN_FLIGHT && clock_mono_ms() - last_ku >= KU_GAP_MS) {
        do
          r = gnutls_session_key_update(s, GNUTLS_KU_PEER);
        while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
        if (r < 0)
          die("key update: %s", gnutls_strerror(r));
        last_ku = clock_mono_ms();
        kus++;
      }
      uint64_t cookie = read_reply_header(s, IN_FLIGHT, k);
      tls_read(s, data, sizeof data, "reply data");
      size_t blk = (size_t)((cookie + k) % nblocks);
      if (memcmp(data, img + blk * MIB, MIB) != 0)
        die("round %u: the reply to read %llu (MiB %zu) differs from the"
            " image", k, (unsigned long long)cookie, blk);
      replies++;
    }
  }
  printf("%lu %lu\n", replies, kus);
  fflush(stdout);
  gnutls_bye(s, GNUTLS_SHUT_WR);
  exit(0);
}

int
main(int argc, char **argv)
{
  bool coalesce = argc > 1 && strcmp(argv[1], "--coalesced") == 0;
  if (coalesce) {
    argv++;
    argc--;
  }
  if (argc != 8) {
    fprintf(stderr, "usage: nbd-tls-keyupdate [--coalesced] HOST PORT"
            " EXPORT IMAGE PKI-DIR CONNECTIONS MS|ROUNDS\n");
    return 2;
  }
  int nconn = atoi(argv[6]);
  int64_t ms = atoll(argv[7]);
  if (coalesce && (nconn != 1 || ms > 6)) {
    /* GnuTLS ends a connection after 8 key updates within 1000 ms. */
    fprintf(stderr, "nbd-tls-keyupdate: --coalesced: 1 connection, 1-6"
            " rounds\n");
    return 2;
  }
  if (nconn < 1 || nconn > 64 || ms < 1) {
    fprintf(stderr, "nbd-tls-keyupdate: CONNECTIONS 1-64, MS > 0\n");
    return 2;
  }
  FILE *f = fopen(argv[4], "rb");
  struct stat st;
  if (f == NULL || fstat(fileno(f), &st) == -1) {
    fprintf(stderr, "nbd-tls-keyupdate: %s: %s\n", argv[4], strerror(errno));
    return 1;
  }
  size_t nblocks = (size_t)st.st_size / MIB;
  if (nblocks == 0 || nblocks > 1024) {
    fprintf(stderr, "nbd-tls-keyupdate: %s: 1 MiB to 1 GiB\n", argv[4]);
    return 1;
  }
  unsigned char *img = malloc(nblocks * MIB);
  if (img == NULL || fread(img, MIB, nblocks, f) != nblocks) {
    fprintf(stderr, "nbd-tls-keyupdate: %s: cannot read\n", argv[4]);
    return 1;
  }
  fclose(f);

  signal(SIGPIPE, SIG_IGN); /* a closed connection is told as an error */
  if (coalesce) {
    coalesced(argv[1], argv[2], argv[3], img, nblocks, argv[5],
              (unsigned)ms);
    free(img);
    return 0;
  }
  int pipefd[2];
  if (pipe(pipefd) == -1)
    return 1;
  for (int c = 0; c < nconn; c++) {
    pid_t pid = fork();
    if (pid == -1) {
      perror("nbd-tls-keyupdate: fork");
      return 1;
    }
    if (pid == 0) {
      conn_no = c;
      close(pipefd[0]);
      dup2(pipefd[1], STDOUT_FILENO);
      connection(argv[1], argv[2], argv[3], img, nblocks, argv[5], ms);
    }
  }
  close(pipefd[1]);
  free(img);
  int failed = 0;
  for (int c = 0; c < nconn; c++) {
    int status;
    if (wait(&status) == -1 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      failed++;
      if (WIFSIGNALED(status))
        fprintf(stderr, "nbd-tls-keyupdate: a connection died of signal"
                " %d%s\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (60 s timeout)" : "");
    }
  }
  FILE *in = fdopen(pipefd[0], "r");
  unsigned long replies = 0, kus = 0, r1, k1;
  while (in != NULL && fscanf(in, "%lu %lu", &r1, &k1) == 2) {
    replies += r1;
    kus += k1;
  }
  if (failed > 0) {
    fprintf(stderr, "nbd-tls-keyupdate: %d of %d connections failed\n",
            failed, nconn);
    return 1;
  }
  printf("ok: %d connections over TLS1.3, %lu replies of 1 MiB, %lu key"
         " updates\n", nconn, replies, kus);
  return 0;
}
