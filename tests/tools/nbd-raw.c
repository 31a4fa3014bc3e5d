/* thunder tests — nbd-raw: a raw-socket NBD client for hostile and
 * malformed traffic that libnbd will not send.
 *
 * Usage: nbd-raw ADDR SCENARIO [ARGS...]
 *   ADDR is a Unix socket path (anything containing '/') or HOST:PORT.
 *
 * Each scenario prints what it saw and exits 0 when the server behaved as
 * the contract says, 1 when it did not (with the reason on stderr), 2 on a
 * usage error.  The protocol constants are spelled out here on purpose,
 * from the NBD specification, and not taken from the server's header, so
 * a wrong constant in thunderd cannot hide itself.
 *
 * Scenarios:
 *   garbage N            send N random bytes at once; the server must close
 *   truncated-greeting   read 8 bytes of the greeting, then hang up
 *   partial-option       greet, then send half an option header, hang up
 *   bad-magic NAME       handshake, then a request with a wrong magic; the
 *                        server must close the connection
 *   garbage-requests NAME N
 *                        handshake, then N random bytes; the server must
 *                        close the connection (it may reply first)
 *   huge-read NAME       handshake, READ of 0xffffffff bytes: the reply must
 *                        be EINVAL, and a 4 KiB READ afterwards must work
 *   read-hang-up NAME    handshake, 8 READs of 32 MiB, hang up at once
 *                        (the server writes into a closed socket)
 *   huge-write NAME      handshake, a WRITE header claiming 2 GiB with 1 MiB
 *                        of it sent: the server must reply EPERM/EINVAL or
 *                        close, never hang
 *   export-name NAME     NBD_OPT_EXPORT_NAME NAME, then a 4 KiB READ and
 *                        NBD_CMD_DISC; prints the export size
 *   opt OPTION LEN       greet, send OPTION (go, info, export-name, list,
 *                        structured-reply, abort, or a number) with an
 *                        export name of LEN bytes; prints the reply type
 *                        (e.g. "reply ERR_TOO_BIG") or "closed"
 *   opt-length LEN       greet, then an NBD_OPT_GO header claiming LEN
 *                        bytes of data followed by up to 1 MiB of junk:
 *                        the server must answer with an error or close
 *                        within 5 s, never wait for (or allocate) LEN
 *   idle SECONDS         greet, then idle: prints how long until the server
 *                        closed; fails if it did not within SECONDS
 *   cap N SECONDS [NAME M]
 *                        first open M connections that finish the handshake
 *                        on export NAME (they must not count); then hold N
 *                        connections that got the greeting; the (N+1)th
 *                        must be closed without a byte within 2 s; then the
 *                        N must be closed by the server within SECONDS, and
 *                        the M must still serve a READ
 *   drain NAME N SECONDS
 *                        a connection with a 64 KiB receive buffer sends N
 *                        READs of 1 MiB and reads nothing for SECONDS (the
 *                        test stops the server meanwhile: the replies it
 *                        could not send are parked); then it reads: every
 *                        reply must be whole and without error, and the
 *                        stream must end with end of file, not a reset (a
 *                        reset may discard reply bytes the server sent);
 *                        prints how many replies came
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* From the NBD protocol specification (doc/proto.md). */
#define MAGIC_NBDMAGIC UINT64_C(0x4e42444d41474943)
#define MAGIC_IHAVEOPT UINT64_C(0x49484156454F5054)
#define MAGIC_REP UINT64_C(0x0003e889045565a9)
#define MAGIC_REQUEST UINT32_C(0x25609513)
#define MAGIC_SIMPLE_REPLY UINT32_C(0x67446698)
#define MAGIC_STRUCTURED_REPLY UINT32_C(0x668e33ef)

#define FLAG_FIXED_NEWSTYLE 1u
#define FLAG_NO_ZEROES 2u

#define OPT_EXPORT_NAME 1
#define OPT_ABORT 2
#define OPT_LIST 3
#define OPT_INFO 6
#define OPT_GO 7
#define OPT_STRUCTURED_REPLY 8

#define REP_ACK 1u
#define REP_SERVER 2u
#define REP_INFO 3u
#define REP_ERR(n) ((UINT32_C(1) << 31) | (n))

#define CMD_READ 0
#define CMD_WRITE 1
#define CMD_DISC 2

#define ERR_EPERM 1
#define ERR_EINVAL 22

#define TIMEOUT_MS 5000

static const char *addr;

static void fail (const char *fmt, ...)
    __attribute__ ((format (printf, 1, 2)));

static void
fail (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "nbd-raw: FAIL: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  exit (1);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Opens a connection to addr (from $NBD_RAW_SRC if set, for TCP); -1
 * with errno set on failure. */
static int
conn_try_open (void)
{
  int fd;

  if (strchr (addr, '/')) {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen (addr) >= sizeof sun.sun_path)
      fail ("socket path too long: %s", addr);
    strcpy (sun.sun_path, addr);
    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
      return -1;
    if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1) {
      int e = errno;
      close (fd);
      errno = e;
      return -1;
    }
    return fd;
  }

  char host[256];
  const char *colon = strrchr (addr, ':');
  if (!colon || (size_t) (colon - addr) >= sizeof host)
    fail ("bad address '%s' (want PATH or HOST:PORT)", addr);
  memcpy (host, addr, colon - addr);
  host[colon - addr] = '\0';
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
  struct addrinfo *res;
  int r = getaddrinfo (host, colon + 1, &hints, &res);
  if (r != 0)
    fail ("getaddrinfo: %s: %s", addr, gai_strerror (r));
  fd = socket (res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    freeaddrinfo (res);
    return -1;
  }
  const char *src = getenv ("NBD_RAW_SRC");
  if (src && *src && res->ai_family == AF_INET) {
    struct sockaddr_in sin = { .sin_family = AF_INET };
    if (inet_pton (AF_INET, src, &sin.sin_addr) != 1)
      fail ("NBD_RAW_SRC '%s': not an IPv4 address", src);
    if (bind (fd, (struct sockaddr *) &sin, sizeof sin) == -1)
      fail ("bind %s: %m", src);
  }
  if (connect (fd, res->ai_addr, res->ai_addrlen) == -1) {
    int e = errno;
    close (fd);
    freeaddrinfo (res);
    errno = e;
    return -1;
  }
  freeaddrinfo (res);
  return fd;
}

static int
conn_open (void)
{
  int fd = conn_try_open ();

  if (fd == -1)
    fail ("connect: %s: %m", addr);
  return fd;
}

/* Reads up to len bytes, waiting at most timeout_ms in all.  Returns the
 * number of bytes read (less than len at EOF or on a reset); -1 with
 * errno ETIMEDOUT if the time ran out first. */
static ssize_t
read_some (int fd, void *buf, size_t len, int timeout_ms)
{
  size_t got = 0;
  double deadline = now () + timeout_ms / 1000.0;

  while (got < len) {
    int left = (int) ((deadline - now ()) * 1000);
    if (left < 0)
      left = 0;
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int r = poll (&pfd, 1, left);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      fail ("poll: %m");
    }
    if (r == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    ssize_t n = read (fd, (char *) buf + got, len - got);
    if (n == -1) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      if (errno == ECONNRESET)
        return got;
      fail ("read: %m");
    }
    if (n == 0)
      return got;
    got += n;
  }
  return got;
}

/* Reads exactly len bytes or fails with what. */
static void
read_exact (int fd, void *buf, size_t len, const char *what)
{
  ssize_t n = read_some (fd, buf, len, TIMEOUT_MS);

  if (n == -1)
    fail ("%s: no reply within %d ms", what, TIMEOUT_MS);
  if ((size_t) n < len)
    fail ("%s: server closed the connection after %zd of %zu bytes",
          what, n, len);
}

/* Writes all of buf.  Returns 0, or -1 if the server has gone (EPIPE,
 * ECONNRESET). */
static int
write_all (int fd, const void *buf, size_t len)
{
  size_t done = 0;

  while (done < len) {
    ssize_t n = send (fd, (const char *) buf + done, len - done, MSG_NOSIGNAL);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EPIPE || errno == ECONNRESET)
        return -1;
      fail ("send: %m");
    }
    done += n;
  }
  return 0;
}

static void
write_exact (int fd, const void *buf, size_t len, const char *what)
{
  if (write_all (fd, buf, len) == -1)
    fail ("%s: server closed the connection", what);
}

/* Waits up to timeout_ms for the server to close, discarding any data.
 * Returns true if it closed, and the number of bytes discarded. */
static bool
wait_closed (int fd, int timeout_ms, size_t *discarded)
{
  char buf[65536];
  double deadline = now () + timeout_ms / 1000.0;

  *discarded = 0;
  for (;;) {
    int left = (int) ((deadline - now ()) * 1000);
    if (left < 0)
      return false;
    ssize_t n = read_some (fd, buf, sizeof buf, left);
    if (n == -1)
      return false;
    if ((size_t) n < sizeof buf)
      return true;
    *discarded += n;
  }
}

static void
random_bytes (void *buf, size_t len)
{
  int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);

  if (fd == -1)
    fail ("open /dev/urandom: %m");
  if (read_some (fd, buf, len, TIMEOUT_MS) != (ssize_t) len)
    fail ("read /dev/urandom");
  close (fd);
}

/* Reads and checks the greeting; returns the handshake flags. */
static uint16_t
read_greeting (int fd)
{
  unsigned char g[18];
  uint64_t m1, m2;
  uint16_t flags;

  read_exact (fd, g, sizeof g, "greeting");
  memcpy (&m1, g, 8);
  memcpy (&m2, g + 8, 8);
  memcpy (&flags, g + 16, 2);
  if (be64toh (m1) != MAGIC_NBDMAGIC)
    fail ("greeting: bad NBDMAGIC 0x%016" PRIx64, be64toh (m1));
  if (be64toh (m2) != MAGIC_IHAVEOPT)
    fail ("greeting: not fixed newstyle (magic 0x%016" PRIx64 ")",
          be64toh (m2));
  flags = be16toh (flags);
  if (!(flags & FLAG_FIXED_NEWSTYLE))
    fail ("greeting: NBD_FLAG_FIXED_NEWSTYLE not set (flags 0x%x)", flags);
  return flags;
}

/* Greeting plus client flags. */
static void
greet (int fd)
{
  uint16_t sflags = read_greeting (fd);
  uint32_t cflags = htobe32 (FLAG_FIXED_NEWSTYLE |
                             (sflags & FLAG_NO_ZEROES));

  write_exact (fd, &cflags, 4, "client flags");
}

/* Sends an option; -1 if the server closed the connection meanwhile. */
static int
try_send_option (int fd, uint32_t opt, const void *data, uint32_t len)
{
  unsigned char h[16];
  uint64_t m = htobe64 (MAGIC_IHAVEOPT);
  uint32_t o = htobe32 (opt), l = htobe32 (len);

  memcpy (h, &m, 8);
  memcpy (h + 8, &o, 4);
  memcpy (h + 12, &l, 4);
  if (write_all (fd, h, sizeof h) == -1)
    return -1;
  return len ? write_all (fd, data, len) : 0;
}

static void
send_option (int fd, uint32_t opt, const void *data, uint32_t len)
{
  unsigned char h[16];
  uint64_t m = htobe64 (MAGIC_IHAVEOPT);
  uint32_t o = htobe32 (opt), l = htobe32 (len);

  memcpy (h, &m, 8);
  memcpy (h + 8, &o, 4);
  memcpy (h + 12, &l, 4);
  write_exact (fd, h, sizeof h, "option header");
  if (len)
    write_exact (fd, data, len, "option data");
}

/* Reads one option reply: returns false if the server closed instead.
 * Up to cap bytes of the payload land in payload (may be NULL). */
static bool
read_option_reply (int fd, uint32_t want_opt, uint32_t *type,
                   void *payload, uint32_t cap, uint32_t *len)
{
  unsigned char h[20];
  uint64_t m;
  uint32_t o, t, l;
  ssize_t n = read_some (fd, h, sizeof h, TIMEOUT_MS);

  if (n == -1)
    fail ("option %u: no reply within %d ms", want_opt, TIMEOUT_MS);
  if (n == 0)
    return false;
  if (n < (ssize_t) sizeof h)
    fail ("option %u: reply header cut short (%zd bytes)", want_opt, n);
  memcpy (&m, h, 8);
  memcpy (&o, h + 8, 4);
  memcpy (&t, h + 12, 4);
  memcpy (&l, h + 16, 4);
  if (be64toh (m) != MAGIC_REP)
    fail ("option %u: bad reply magic 0x%016" PRIx64, want_opt, be64toh (m));
  if (be32toh (o) != want_opt)
    fail ("option %u: reply is for option %u", want_opt, be32toh (o));
  *type = be32toh (t);
  *len = be32toh (l);
  if (*len > 64 * 1024 * 1024)
    fail ("option %u: absurd reply length %u", want_opt, *len);

  char *buf = malloc (*len + 1);
  if (!buf)
    fail ("malloc: %m");
  read_exact (fd, buf, *len, "option reply payload");
  if (payload)
    memcpy (payload, buf, *len < cap ? *len : cap);
  free (buf);
  return true;
}

static const char *
rep_name (uint32_t type)
{
  static char other[32];

  switch (type) {
  case REP_ACK: return "ACK";
  case REP_SERVER: return "SERVER";
  case REP_INFO: return "INFO";
  case REP_ERR (1): return "ERR_UNSUP";
  case REP_ERR (2): return "ERR_POLICY";
  case REP_ERR (3): return "ERR_INVALID";
  case REP_ERR (4): return "ERR_PLATFORM";
  case REP_ERR (5): return "ERR_TLS_REQD";
  case REP_ERR (6): return "ERR_UNKNOWN";
  case REP_ERR (7): return "ERR_SHUTDOWN";
  case REP_ERR (8): return "ERR_BLOCK_SIZE_REQD";
  case REP_ERR (9): return "ERR_TOO_BIG";
  }
  snprintf (other, sizeof other, "0x%08x", type);
  return other;
}

/* Builds the OPT_GO / OPT_INFO payload for a name: length, name, no info
 * requests.  Returns a heap buffer of *len bytes. */
static char *
go_payload (const char *name, uint32_t namelen, uint32_t *len)
{
  char *p = malloc (namelen + 6);
  uint32_t nl = htobe32 (namelen);
  uint16_t ninfo = 0;

  if (!p)
    fail ("malloc: %m");
  memcpy (p, &nl, 4);
  memcpy (p + 4, name, namelen);
  memcpy (p + 4 + namelen, &ninfo, 2);
  *len = namelen + 6;
  return p;
}

/* Full handshake with OPT_GO name; returns the export size. */
static uint64_t
handshake (int fd, const char *name)
{
  uint32_t plen, type, len;
  char *p = go_payload (name, strlen (name), &plen);
  unsigned char info[12];
  uint64_t size = UINT64_MAX;

  greet (fd);
  send_option (fd, OPT_GO, p, plen);
  free (p);
  for (;;) {
    if (!read_option_reply (fd, OPT_GO, &type, info, sizeof info, &len))
      fail ("OPT_GO %s: server closed the connection", name);
    if (type == REP_ACK)
      break;
    if (type != REP_INFO)
      fail ("OPT_GO %s: reply %s", name, rep_name (type));
    if (len >= 12 && info[0] == 0 && info[1] == 0) {  /* NBD_INFO_EXPORT */
      memcpy (&size, info + 2, 8);
      size = be64toh (size);
    }
  }
  if (size == UINT64_MAX)
    fail ("OPT_GO %s: no NBD_INFO_EXPORT before the ACK", name);
  return size;
}

static void
send_request (int fd, uint16_t type, uint64_t handle, uint64_t off,
              uint32_t len)
{
  unsigned char r[28];
  uint32_t m = htobe32 (MAGIC_REQUEST), l = htobe32 (len);
  uint16_t f = 0, t = htobe16 (type);
  uint64_t h = htobe64 (handle), o = htobe64 (off);

  memcpy (r, &m, 4);
  memcpy (r + 4, &f, 2);
  memcpy (r + 6, &t, 2);
  memcpy (r + 8, &h, 8);
  memcpy (r + 16, &o, 8);
  memcpy (r + 24, &l, 4);
  write_exact (fd, r, sizeof r, "request");
}

/* Reads a simple reply header: false if the server closed instead. */
static bool
read_simple_reply (int fd, uint64_t want_handle, uint32_t *error)
{
  unsigned char r[16];
  uint32_t m, e;
  uint64_t h;
  ssize_t n = read_some (fd, r, sizeof r, TIMEOUT_MS);

  if (n == -1)
    fail ("no reply to request %" PRIu64 " within %d ms", want_handle,
          TIMEOUT_MS);
  if (n == 0)
    return false;
  if (n < (ssize_t) sizeof r)
    fail ("reply header cut short (%zd bytes)", n);
  memcpy (&m, r, 4);
  memcpy (&e, r + 4, 4);
  memcpy (&h, r + 8, 8);
  if (be32toh (m) != MAGIC_SIMPLE_REPLY)
    fail ("reply magic 0x%08x, want simple reply 0x%08x", be32toh (m),
          MAGIC_SIMPLE_REPLY);
  if (be64toh (h) != want_handle)
    fail ("reply handle %" PRIu64 ", want %" PRIu64, be64toh (h),
          want_handle);
  *error = be32toh (e);
  return true;
}

static void
disconnect (int fd)
{
  send_request (fd, CMD_DISC, 99, 0, 0);
  close (fd);
}

static unsigned long
parse_num (const char *s, const char *what)
{
  char *end;
  errno = 0;
  unsigned long v = strtoul (s, &end, 0);

  if (errno || *end || end == s) {
    fprintf (stderr, "nbd-raw: bad %s '%s'\n", what, s);
    exit (2);
  }
  return v;
}

static int
do_garbage (size_t n)
{
  int fd = conn_open ();
  char *buf = malloc (n);
  size_t discarded;

  if (!buf)
    fail ("malloc: %m");
  random_bytes (buf, n);
  write_all (fd, buf, n);   /* the server may close part way */
  free (buf);
  if (!wait_closed (fd, TIMEOUT_MS, &discarded))
    fail ("garbage %zu: server kept the connection open %d ms", n,
          TIMEOUT_MS);
  printf ("garbage %zu: closed by server (%zu bytes received)\n", n,
          discarded);
  close (fd);
  return 0;
}

static int
do_truncated_greeting (void)
{
  int fd = conn_open ();
  char g[8];

  read_exact (fd, g, sizeof g, "greeting");
  close (fd);
  printf ("truncated-greeting: hung up after 8 bytes\n");
  return 0;
}

static int
do_partial_option (void)
{
  int fd = conn_open ();
  unsigned char h[8];
  uint64_t m = htobe64 (MAGIC_IHAVEOPT);

  greet (fd);
  memcpy (h, &m, 8);
  write_exact (fd, h, sizeof h, "half an option header");
  close (fd);
  printf ("partial-option: hung up after half an option header\n");
  return 0;
}

static int
do_bad_magic (const char *name)
{
  int fd = conn_open ();
  unsigned char r[28] = { 0xde, 0xad, 0xbe, 0xef };
  size_t discarded;

  handshake (fd, name);
  write_all (fd, r, sizeof r);
  if (!wait_closed (fd, TIMEOUT_MS, &discarded))
    fail ("bad-magic: server kept the connection open after a request "
          "with a bad magic");
  printf ("bad-magic: closed by server\n");
  close (fd);
  return 0;
}

static int
do_garbage_requests (const char *name, size_t n)
{
  int fd = conn_open ();
  char *buf = malloc (n);
  size_t discarded;

  if (!buf)
    fail ("malloc: %m");
  handshake (fd, name);
  random_bytes (buf, n);
  buf[0] = 0x5a;   /* never the request magic's first byte (0x25) */
  write_all (fd, buf, n);
  free (buf);
  if (!wait_closed (fd, TIMEOUT_MS, &discarded))
    fail ("garbage-requests: server kept the connection open after %zu "
          "random bytes", n);
  printf ("garbage-requests %zu: closed by server\n", n);
  close (fd);
  return 0;
}

static int
do_huge_read (const char *name)
{
  int fd = conn_open ();
  uint64_t size = handshake (fd, name);
  uint32_t err;
  static char buf[4096];

  send_request (fd, CMD_READ, 1, 0, UINT32_MAX);
  if (!read_simple_reply (fd, 1, &err))
    fail ("huge-read: server closed the connection instead of replying "
          "EINVAL to a 4 GiB read");
  if (err != ERR_EINVAL)
    fail ("huge-read: 4 GiB read: error %u, want EINVAL (%d)", err,
          ERR_EINVAL);

  uint32_t len = size < sizeof buf ? (uint32_t) size : sizeof buf;
  send_request (fd, CMD_READ, 2, 0, len);
  if (!read_simple_reply (fd, 2, &err))
    fail ("huge-read: server closed the connection after the EINVAL");
  if (err != 0)
    fail ("huge-read: read of %u bytes after the EINVAL: error %u", len, err);
  read_exact (fd, buf, len, "read data");
  disconnect (fd);
  printf ("huge-read: EINVAL, then a %u-byte read worked\n", len);
  return 0;
}

static int
do_read_hang_up (const char *name)
{
  int fd = conn_open ();

  handshake (fd, name);
  for (uint64_t i = 0; i < 8; i++)
    send_request (fd, CMD_READ, i, 0, 32 * 1024 * 1024);
  close (fd);
  printf ("read-hang-up: sent 8 x 32 MiB READs and hung up\n");
  return 0;
}

static int
do_huge_write (const char *name)
{
  int fd = conn_open ();
  size_t chunk = 1024 * 1024, discarded;
  char *buf = calloc (1, chunk);
  uint32_t err;

  if (!buf)
    fail ("calloc: %m");
  handshake (fd, name);
  send_request (fd, CMD_WRITE, 7, 0, UINT32_C (0x80000000));
  if (write_all (fd, buf, chunk) == -1) {
    printf ("huge-write: closed by server\n");
    free (buf);
    close (fd);
    return 0;
  }
  free (buf);
  if (!read_simple_reply (fd, 7, &err)) {
    printf ("huge-write: closed by server\n");
    close (fd);
    return 0;
  }
  if (err != ERR_EPERM && err != ERR_EINVAL)
    fail ("huge-write: error %u, want EPERM (%d) or EINVAL (%d)", err,
          ERR_EPERM, ERR_EINVAL);
  /* Whatever the server does with the rest, it must not hang. */
  shutdown (fd, SHUT_WR);
  if (!wait_closed (fd, TIMEOUT_MS, &discarded))
    fail ("huge-write: server did not close after our EOF");
  printf ("huge-write: error %u, then closed\n", err);
  close (fd);
  return 0;
}

static int
do_export_name (const char *name)
{
  int fd = conn_open ();
  uint16_t sflags = read_greeting (fd);
  uint32_t cflags = htobe32 (FLAG_FIXED_NEWSTYLE |
                             (sflags & FLAG_NO_ZEROES));
  unsigned char buf[4096];
  uint64_t size;
  uint16_t tflags;
  uint32_t err;

  write_exact (fd, &cflags, 4, "client flags");
  send_option (fd, OPT_EXPORT_NAME, name, strlen (name));
  read_exact (fd, buf, 10, "NBD_OPT_EXPORT_NAME answer");
  memcpy (&size, buf, 8);
  memcpy (&tflags, buf + 8, 2);
  size = be64toh (size);
  tflags = be16toh (tflags);
  if (!(sflags & FLAG_NO_ZEROES))
    read_exact (fd, buf, 124, "NBD_OPT_EXPORT_NAME padding");
  if (!(tflags & 2))
    fail ("export-name %s: read-only flag missing (flags 0x%x)", name, tflags);

  uint32_t len = size < sizeof buf ? (uint32_t) size : sizeof buf;
  send_request (fd, CMD_READ, 1, 0, len);
  if (!read_simple_reply (fd, 1, &err))
    fail ("export-name %s: server closed the connection on a READ", name);
  if (err != 0)
    fail ("export-name %s: READ of %u bytes: error %u", name, len, err);
  read_exact (fd, buf, len, "read data");
  disconnect (fd);
  printf ("export-name: size %" PRIu64 " flags 0x%x, read %u bytes\n", size,
          tflags, len);
  return 0;
}

static uint32_t
option_number (const char *s)
{
  if (!strcmp (s, "go")) return OPT_GO;
  if (!strcmp (s, "info")) return OPT_INFO;
  if (!strcmp (s, "export-name")) return OPT_EXPORT_NAME;
  if (!strcmp (s, "list")) return OPT_LIST;
  if (!strcmp (s, "abort")) return OPT_ABORT;
  if (!strcmp (s, "structured-reply")) return OPT_STRUCTURED_REPLY;
  return parse_num (s, "option");
}

static int
do_opt (const char *optname, size_t namelen)
{
  uint32_t opt = option_number (optname);
  int fd = conn_open ();
  char *name = malloc (namelen + 1);
  uint32_t type, len, plen;
  char *p;

  if (!name)
    fail ("malloc: %m");
  memset (name, 'x', namelen);
  name[namelen] = '\0';
  greet (fd);
  if (opt == OPT_GO || opt == OPT_INFO)
    p = go_payload (name, namelen, &plen);
  else {
    p = strdup (name);
    plen = namelen;
  }
  free (name);
  if (try_send_option (fd, opt, p, plen) == -1) {
    /* The server hung up while we were still sending. */
    printf ("closed\n");
    free (p);
    close (fd);
    return 0;
  }
  free (p);

  if (opt == OPT_EXPORT_NAME) {
    /* No option reply: on success the export size and flags follow. */
    unsigned char buf[10];
    ssize_t n = read_some (fd, buf, sizeof buf, TIMEOUT_MS);
    if (n == -1)
      fail ("opt export-name %zu: no answer within %d ms", namelen,
            TIMEOUT_MS);
    if (n == 0)
      printf ("closed\n");
    else
      printf ("export (%zd bytes)\n", n);
    close (fd);
    return 0;
  }

  if (!read_option_reply (fd, opt, &type, NULL, 0, &len)) {
    printf ("closed\n");
    close (fd);
    return 0;
  }
  printf ("reply %s\n", rep_name (type));
  fflush (stdout);
  /* The connection must still be usable after an error: abort cleanly. */
  if (type & REP_ERR (0)) {
    send_option (fd, OPT_ABORT, NULL, 0);
    if (!read_option_reply (fd, OPT_ABORT, &type, NULL, 0, &len))
      fail ("opt %s %zu: server closed instead of answering OPT_ABORT "
            "after the error", optname, namelen);
    if (type != REP_ACK)
      fail ("opt %s %zu: OPT_ABORT after the error got %s", optname, namelen,
            rep_name (type));
  }
  close (fd);
  return 0;
}

static int
do_opt_length (uint32_t len)
{
  int fd = conn_open ();
  unsigned char h[16];
  uint64_t m = htobe64 (MAGIC_IHAVEOPT);
  uint32_t o = htobe32 (OPT_GO), l = htobe32 (len);
  size_t junk = len < 1024 * 1024 ? len : 1024 * 1024, discarded;
  char *buf = malloc (junk + 1);
  uint32_t type, rlen;

  if (!buf)
    fail ("malloc: %m");
  greet (fd);
  memcpy (h, &m, 8);
  memcpy (h + 8, &o, 4);
  memcpy (h + 12, &l, 4);
  write_exact (fd, h, sizeof h, "option header");
  memset (buf, 'j', junk);
  if (write_all (fd, buf, junk) == -1) {
    printf ("opt-length %u: closed by server\n", len);
    free (buf);
    close (fd);
    return 0;
  }
  free (buf);
  if (len <= junk) {
    /* The whole option was sent: a (probably error) reply must come. */
    if (!read_option_reply (fd, OPT_GO, &type, NULL, 0, &rlen))
      printf ("opt-length %u: closed by server\n", len);
    else
      printf ("opt-length %u: reply %s\n", len, rep_name (type));
    close (fd);
    return 0;
  }
  /* The server cannot have the whole option: it must give up on it. */
  if (!wait_closed (fd, TIMEOUT_MS, &discarded))
    fail ("opt-length %u: server still waiting for the option data after "
          "%d ms", len, TIMEOUT_MS);
  printf ("opt-length %u: closed by server (%zu bytes received)\n", len,
          discarded);
  close (fd);
  return 0;
}

static int
do_idle (double seconds)
{
  int fd = conn_open ();
  double t0 = now ();
  size_t discarded;

  read_greeting (fd);
  if (!wait_closed (fd, (int) (seconds * 1000), &discarded))
    fail ("idle: server kept an idle negotiating connection open for more "
          "than %.1f s", seconds);
  printf ("idle: closed by server after %.2f s\n", now () - t0);
  close (fd);
  return 0;
}

static int
do_cap (unsigned n, double seconds, const char *name, unsigned m)
{
  int *fds = calloc (n, sizeof *fds), *est = calloc (m + 1, sizeof *est);
  double t0;
  size_t discarded;
  char c;
  static char buf[4096];

  if (!fds || !est)
    fail ("calloc: %m");
  for (unsigned i = 0; i < m; i++) {
    est[i] = conn_open ();
    handshake (est[i], name);
  }
  if (m)
    printf ("cap: %u connections finished the handshake\n", m);
  for (unsigned i = 0; i < n; i++) {
    fds[i] = conn_open ();
    read_greeting (fds[i]);
  }
  printf ("cap: %u connections got the greeting\n", n);

  int extra = conn_open ();
  t0 = now ();
  ssize_t got = read_some (extra, &c, 1, 2000);
  if (got == -1)
    fail ("cap: negotiating connection %u was not closed within 2 s", n + 1);
  if (got != 0)
    fail ("cap: negotiating connection %u got a greeting; it must be "
          "closed at once", n + 1);
  printf ("cap: negotiating connection %u closed after %.2f s without a "
          "byte\n", n + 1, now () - t0);
  close (extra);

  t0 = now ();
  for (unsigned i = 0; i < n; i++) {
    int left = (int) ((seconds - (now () - t0)) * 1000);
    if (left < 0)
      left = 0;
    if (!wait_closed (fds[i], left, &discarded))
      fail ("cap: held connection %u still open after %.1f s", i + 1,
            seconds);
    close (fds[i]);
  }
  printf ("cap: the %u held connections were closed by the server within "
          "%.2f s\n", n, now () - t0);

  for (unsigned i = 0; i < m; i++) {
    uint32_t err;
    send_request (est[i], CMD_READ, i, 0, sizeof buf);
    if (!read_simple_reply (est[i], i, &err))
      fail ("cap: established connection %u was closed", i + 1);
    if (err != 0)
      fail ("cap: established connection %u: READ error %u", i + 1, err);
    read_exact (est[i], buf, sizeof buf, "read data");
    disconnect (est[i]);
  }
  if (m)
    printf ("cap: the %u established connections still serve reads\n", m);
  free (fds);
  free (est);
  return 0;
}

/* ---- floods ---------------------------------------------------------- */

static void
raise_nofile (void)
{
  struct rlimit rl;

  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit (RLIMIT_NOFILE, &rl);
  }
}

/* True if the server has closed fd (end of stream or reset), without
 * waiting; data that arrived is discarded. */
static bool
is_closed (int fd)
{
  char buf[4096];

  for (;;) {
    ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0)
      return true;
    if (n > 0)
      continue;
    if (errno == EINTR)
      continue;
    return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

static int
do_pipeline (const char *name, unsigned conns, unsigned reads, double seconds)
{
  int *fds = calloc (conns, sizeof *fds);

  if (!fds)
    fail ("calloc: %m");
  for (unsigned c = 0; c < conns; c++) {
    fds[c] = conn_open ();
    uint64_t size = handshake (fds[c], name);
    if (size < 32 * 1024 * 1024)
      fail ("pipeline: export %s is smaller than 32 MiB", name);
    for (unsigned i = 0; i < reads; i++)
      send_request (fds[c], CMD_READ, i, 0, 32 * 1024 * 1024);
  }
  printf ("pipeline: %u connections sent %u READs of 32 MiB each and read "
          "nothing\n", conns, reads);
  usleep ((useconds_t) (seconds * 1e6));
  unsigned closed = 0;
  for (unsigned c = 0; c < conns; c++) {
    closed += is_closed (fds[c]);
    close (fds[c]);
  }
  printf ("pipeline: %u of %u connections closed by the server\n", closed,
          conns);
  free (fds);
  return 0;
}

static int
do_hold (const char *name, unsigned n, double seconds)
{
  int *fds = calloc (n, sizeof *fds);

  if (!fds)
    fail ("calloc: %m");
  raise_nofile ();
  double t0 = now ();
  for (unsigned i = 0; i < n; i++) {
    fds[i] = conn_open ();
    handshake (fds[i], name);
  }
  printf ("hold: %u connections finished the handshake in %.2f s\n", n,
          now () - t0);
  usleep ((useconds_t) (seconds * 1e6));
  unsigned closed = 0;
  for (unsigned i = 0; i < n; i++) {
    closed += is_closed (fds[i]);
    close (fds[i]);
  }
  printf ("hold: %u of %u connections closed by the server\n", closed, n);
  free (fds);
  return 0;
}

static int
do_half_open (unsigned n, double seconds)
{
  int *fds = calloc (n, sizeof *fds);
  unsigned long opened = 0, refused = 0;

  if (!fds)
    fail ("calloc: %m");
  raise_nofile ();
  double end = now () + seconds;
  for (unsigned i = 0; i < n; i++)
    fds[i] = -1;
  bool reported = false;
  while (now () < end) {
    for (unsigned i = 0; i < n; i++) {
      if (fds[i] >= 0 && !is_closed (fds[i]))
        continue;
      if (fds[i] >= 0) {
        close (fds[i]);
        refused++;
      }
      fds[i] = conn_try_open ();
      opened += fds[i] >= 0;
    }
    if (!reported) {
      printf ("half-open: %u connections opened\n", n);
      reported = true;
    }
    usleep (50 * 1000);
  }
  for (unsigned i = 0; i < n; i++)
    if (fds[i] >= 0)
      close (fds[i]);
  printf ("half-open: %lu connections opened in %.1f s, %lu closed by the "
          "server\n", opened, seconds, refused);
  free (fds);
  return 0;
}

static int
do_first_read (const char *name)
{
  static char buf[4096];
  uint32_t err;
  double t0 = now ();
  int fd = conn_open ();

  handshake (fd, name);
  send_request (fd, CMD_READ, 1, 0, sizeof buf);
  if (!read_simple_reply (fd, 1, &err))
    fail ("first-read: connection closed");
  if (err != 0)
    fail ("first-read: READ error %u", err);
  read_exact (fd, buf, sizeof buf, "read data");
  printf ("first-read: %.3f s\n", now () - t0);
  disconnect (fd);
  return 0;
}

static int
do_idle_open (const char *name, double seconds)
{
  int fd = conn_open ();
  size_t discarded;

  handshake (fd, name);
  double t0 = now ();
  if (!wait_closed (fd, (int) (seconds * 1000), &discarded))
    fail ("idle-open: server kept an idle connection open for more than "
          "%.1f s", seconds);
  printf ("idle-open: closed by server after %.2f s\n", now () - t0);
  close (fd);
  return 0;
}

/* Reads exactly len bytes; 1: read, 0: end of file before the first byte,
 * -1: a reset before the first byte; fails on a timeout, or on end of
 * file or a reset part way (a cut reply). */
static int
read_whole_or_end (int fd, void *buf, size_t len, const char *what)
{
  size_t got = 0;

  while (got < len) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int r = poll (&pfd, 1, TIMEOUT_MS);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      fail ("poll: %m");
    if (r == 0)
      fail ("%s: nothing for %d ms", what, TIMEOUT_MS);
    ssize_t n = read (fd, (char *) buf + got, len - got);
    if (n == -1 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n > 0) {
      got += n;
      continue;
    }
    if (n == -1 && errno != ECONNRESET)
      fail ("%s: read: %m", what);
    if (got > 0)
      fail ("%s: cut after %zu of %zu bytes by %s", what, got, len,
            n == 0 ? "end of file" : "a reset");
    return n == 0 ? 0 : -1;
  }
  return 1;
}

static int
do_drain (const char *name, unsigned n, double seconds)
{
  static char data[1024 * 1024];
  int fd = conn_open ();
  int rcv = 64 * 1024;

  /* Small, so that the replies fill it and the server parks the rest. */
  if (setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv) == -1)
    fail ("SO_RCVBUF: %m");
  uint64_t size = handshake (fd, name);
  if (size < sizeof data)
    fail ("drain: export %s is smaller than 1 MiB", name);
  unsigned nblk = (unsigned) (size / sizeof data);
  for (unsigned i = 0; i < n; i++)
    send_request (fd, CMD_READ, i, (uint64_t) (i % nblk) * sizeof data,
                  sizeof data);
  printf ("drain: sent %u READs of 1 MiB, reading nothing for %.1f s\n", n,
          seconds);
  usleep ((useconds_t) (seconds * 1e6));
  unsigned got = 0;
  for (;;) {
    unsigned char r[16];
    uint32_t m, e;
    uint64_t h;
    int w = read_whole_or_end (fd, r, sizeof r, "reply header");
    if (w == -1)
      fail ("drain: the connection was reset after %u whole replies (not "
            "ended: reply bytes sent may be lost)", got);
    if (w == 0)
      break;
    memcpy (&m, r, 4);
    memcpy (&e, r + 4, 4);
    memcpy (&h, r + 8, 8);
    if (be32toh (m) != MAGIC_SIMPLE_REPLY || be64toh (h) >= n)
      fail ("drain: reply %u: magic 0x%08x handle %" PRIu64, got,
            be32toh (m), be64toh (h));
    if (e != 0)
      fail ("drain: reply %u: error %u", got, be32toh (e));
    if (read_whole_or_end (fd, data, sizeof data, "reply data") != 1)
      fail ("drain: reply %u: header without data", got);
    got++;
    if (got == n)
      break;
  }
  printf ("drain: %u of %u replies whole, then end of file\n", got, n);
  close (fd);
  return 0;
}

static void
usage (void)
{
  fprintf (stderr,
           "usage: nbd-raw ADDR SCENARIO [ARGS...]\n"
           "scenarios: garbage N | truncated-greeting | partial-option |\n"
           "  bad-magic NAME | garbage-requests NAME N | huge-read NAME |\n"
           "  read-hang-up NAME | huge-write NAME | export-name NAME |\n"
           "  opt OPTION LEN | opt-length LEN | idle SECONDS |\n"
           "  cap N SECONDS [NAME M] | pipeline NAME C R SECONDS |\n"
           "  hold NAME N SECONDS | half-open N SECONDS | first-read NAME |\n"
           "  idle-open NAME SECONDS | drain NAME N SECONDS\n");
  exit (2);
}

int
main (int argc, char **argv)
{
  if (argc < 3)
    usage ();
  signal (SIGPIPE, SIG_IGN);
  setvbuf (stdout, NULL, _IOLBF, 0);
  addr = argv[1];
  const char *s = argv[2];
  int nargs = argc - 3;
  char **a = argv + 3;

  if (!strcmp (s, "garbage") && nargs == 1)
    return do_garbage (parse_num (a[0], "byte count"));
  if (!strcmp (s, "truncated-greeting") && nargs == 0)
    return do_truncated_greeting ();
  if (!strcmp (s, "partial-option") && nargs == 0)
    return do_partial_option ();
  if (!strcmp (s, "bad-magic") && nargs == 1)
    return do_bad_magic (a[0]);
  if (!strcmp (s, "garbage-requests") && nargs == 2)
    return do_garbage_requests (a[0], parse_num (a[1], "byte count"));
  if (!strcmp (s, "huge-read") && nargs == 1)
    return do_huge_read (a[0]);
  if (!strcmp (s, "read-hang-up") && nargs == 1)
    return do_read_hang_up (a[0]);
  if (!strcmp (s, "opt-length") && nargs == 1)
    return do_opt_length (parse_num (a[0], "length"));
  if (!strcmp (s, "huge-write") && nargs == 1)
    return do_huge_write (a[0]);
  if (!strcmp (s, "export-name") && nargs == 1)
    return do_export_name (a[0]);
  if (!strcmp (s, "opt") && nargs == 2)
    return do_opt (a[0], parse_num (a[1], "name length"));
  if (!strcmp (s, "idle") && nargs == 1)
    return do_idle (strtod (a[0], NULL));
  if (!strcmp (s, "cap") && nargs == 2)
    return do_cap (parse_num (a[0], "count"), strtod (a[1], NULL), NULL, 0);
  if (!strcmp (s, "cap") && nargs == 4)
    return do_cap (parse_num (a[0], "count"), strtod (a[1], NULL), a[2],
                   parse_num (a[3], "count"));
  if (!strcmp (s, "pipeline") && nargs == 4)
    return do_pipeline (a[0], parse_num (a[1], "count"),
                        parse_num (a[2], "count"), strtod (a[3], NULL));
  if (!strcmp (s, "hold") && nargs == 3)
    return do_hold (a[0], parse_num (a[1], "count"), strtod (a[2], NULL));
  if (!strcmp (s, "half-open") && nargs == 2)
    return do_half_open (parse_num (a[0], "count"), strtod (a[1], NULL));
  if (!strcmp (s, "first-read") && nargs == 1)
    return do_first_read (a[0]);
  if (!strcmp (s, "idle-open") && nargs == 2)
    return do_idle_open (a[0], strtod (a[1], NULL));
  if (!strcmp (s, "drain") && nargs == 3)
    return do_drain (a[0], parse_num (a[1], "count"), strtod (a[2], NULL));
  usage ();
}
