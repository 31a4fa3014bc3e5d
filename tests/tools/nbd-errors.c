/* thunder tests — nbd-errors: checks each error a read-only origin export
 * must return, and its errno, through libnbd (libnbd tests/errors-*.c).
 *
 * Usage: nbd-errors SOCKET NAME FILE BLOCK_SIZE
 *   SOCKET      thunderd's Unix socket
 *   NAME        an export served from FILE
 *   FILE        the image file, to compare data and take the size from
 *   BLOCK_SIZE  the manifest block size (the preferred block size)
 *
 * Strict mode is off (nbd_set_strict_mode (h, 0)) so that libnbd sends
 * what the server must refuse instead of refusing it itself.  Prints one
 * "ok - ..." or "FAIL - ..." line per check; exits 1 if any failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_REQUEST (32u * 1024 * 1024)

static const char *sock, *name, *file;
static uint64_t size;
static uint32_t block_size;
static int file_fd;
static int failures;

static void check (bool ok, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
check (bool ok, const char *fmt, ...)
{
  va_list ap;

  printf ("%s - ", ok ? "ok" : "FAIL");
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  putchar ('\n');
  if (!ok)
    failures++;
}

static const char *
errname (int e)
{
  switch (e) {
  case 0: return "0";
  case EPERM: return "EPERM";
  case EINVAL: return "EINVAL";
  case ENOENT: return "ENOENT";
  case EIO: return "EIO";
  case ENOTSUP: return "ENOTSUP";
  case ERANGE: return "ERANGE";
  case ENOTCONN: return "ENOTCONN";
  case ESHUTDOWN: return "ESHUTDOWN";
  default: return strerror (e);
  }
}

/* A handle with strict mode off; NULL (and a FAIL) on error. */
static struct nbd_handle *
new_handle (void)
{
  struct nbd_handle *h = nbd_create ();

  if (!h) {
    check (false, "nbd_create: %s", nbd_get_error ());
    return NULL;
  }
  if (nbd_set_strict_mode (h, 0) == -1) {
    check (false, "nbd_set_strict_mode: %s", nbd_get_error ());
    nbd_close (h);
    return NULL;
  }
  return h;
}

/* A connected handle on export n; NULL (and a FAIL) on error. */
static struct nbd_handle *
connect_to (const char *n)
{
  struct nbd_handle *h = new_handle ();

  if (!h)
    return NULL;
  if (nbd_set_export_name (h, n) == -1 || nbd_connect_unix (h, sock) == -1) {
    check (false, "connect to export '%s': %s", n, nbd_get_error ());
    nbd_close (h);
    return NULL;
  }
  return h;
}

/* Reads len bytes at off through h and compares them with the file. */
static bool
read_matches (struct nbd_handle *h, uint64_t off, size_t len)
{
  char *a = malloc (len), *b = malloc (len);
  bool ok = false;

  if (!a || !b) {
    perror ("malloc");
    exit (1);
  }
  if (nbd_pread (h, a, len, off, 0) == -1)
    printf ("# pread %zu at %" PRIu64 ": %s\n", len, off, nbd_get_error ());
  else if (pread (file_fd, b, len, off) != (ssize_t) len)
    printf ("# pread of the file at %" PRIu64 ": %m\n", off);
  else if (memcmp (a, b, len) != 0)
    printf ("# data at %" PRIu64 " (%zu bytes) differs from the file\n", off,
            len);
  else
    ok = true;
  free (a);
  free (b);
  return ok;
}

/* Runs op and checks that it fails with errno want, then that the
 * connection still serves a correct read. */
#define EXPECT_ERRNO(h, want, call, ...)                                 \
  do {                                                                   \
    int r_ = (call);                                                     \
    int e_ = r_ == -1 ? nbd_get_errno () : 0;                            \
    char desc_[256];                                                     \
    snprintf (desc_, sizeof desc_, __VA_ARGS__);                         \
    if (r_ != -1)                                                        \
      check (false, "%s: succeeded, want %s", desc_, errname (want));    \
    else                                                                 \
      check (e_ == (want), "%s: %s (%s)", desc_, errname (e_),           \
             nbd_get_error ());                                          \
    check (read_matches ((h), 0, 4096),                                  \
           "the connection still reads correctly after: %s", desc_);     \
  } while (0)

static void
check_flags_and_sizes (struct nbd_handle *h)
{
  int64_t s = nbd_get_size (h);

  check (s >= 0 && (uint64_t) s == size, "export size %" PRId64
         " (file size %" PRIu64 ")", s, size);
  check (nbd_is_read_only (h) == 1, "read-only flag");
  check (nbd_can_multi_conn (h) == 1, "multi-conn flag");
  check (nbd_can_flush (h) == 1, "flush flag");
  check (nbd_can_cache (h) == 1, "cache flag");
  check (nbd_can_trim (h) == 0, "no trim flag");
  check (nbd_can_zero (h) == 0, "no write-zeroes flag");

  int64_t min = nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM);
  int64_t pref = nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED);
  int64_t max = nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM);
  check (min == 1, "NBD_INFO_BLOCK_SIZE minimum %" PRId64 " (want 1)", min);
  check (pref == block_size, "NBD_INFO_BLOCK_SIZE preferred %" PRId64
         " (want %" PRIu32 ")", pref, block_size);
  check (max == MAX_REQUEST, "NBD_INFO_BLOCK_SIZE maximum %" PRId64
         " (want %u)", max, MAX_REQUEST);
}

static void
check_io_errors (void)
{
  struct nbd_handle *h = connect_to (name);
  static char buf[4096];
  char *big;

  if (!h)
    return;
  check_flags_and_sizes (h);
  check (read_matches (h, 0, 4096), "read 4096 at 0 matches the file");
  check (read_matches (h, size - 1, 1), "read of the last byte matches");
  check (read_matches (h, size > 100000 ? size - 100000 : 0,
                       size > 100000 ? 100000 : size),
         "read of the unaligned tail matches");

  EXPECT_ERRNO (h, EINVAL, nbd_pread (h, buf, 512, size - 256, 0),
                "read 512 at size-256 (past the end)");
  EXPECT_ERRNO (h, EINVAL, nbd_pread (h, buf, 1, size, 0),
                "read 1 at size (past the end)");
  EXPECT_ERRNO (h, EINVAL, nbd_pread (h, buf, 512, UINT64_MAX - 100, 0),
                "read 512 at 2^64-101 (offset overflow)");
  EXPECT_ERRNO (h, EINVAL, nbd_pread (h, buf, 512, (uint64_t) INT64_MAX, 0),
                "read 512 at 2^63-1");

  big = malloc (MAX_REQUEST + 1);
  if (!big) {
    perror ("malloc");
    exit (1);
  }
  EXPECT_ERRNO (h, EINVAL, nbd_pread (h, big, MAX_REQUEST + 1, 0, 0),
                "read of 32 MiB + 1");
  if (size >= MAX_REQUEST)
    check (read_matches (h, 0, MAX_REQUEST),
           "read of exactly 32 MiB matches the file");
  free (big);

  EXPECT_ERRNO (h, EPERM, nbd_pwrite (h, buf, 512, 0, 0), "write 512 at 0");
  EXPECT_ERRNO (h, EPERM, nbd_pwrite (h, buf, 4096, size - 4096, 0),
                "write 4096 at the end");
  EXPECT_ERRNO (h, EPERM, nbd_trim (h, 65536, 0, 0), "trim 64 KiB at 0");
  EXPECT_ERRNO (h, EPERM, nbd_zero (h, 65536, 0, 0),
                "write-zeroes 64 KiB at 0");

  int r = nbd_flush (h, 0);
  check (r == 0, "flush succeeds%s%s", r ? ": " : "", r ? nbd_get_error () : "");
  r = nbd_cache (h, 1024 * 1024, 0, 0);
  check (r == 0, "cache 1 MiB at 0 succeeds%s%s", r ? ": " : "",
         r ? nbd_get_error () : "");
  check (read_matches (h, 512, 8192), "read after flush and cache matches");

  r = nbd_shutdown (h, 0);
  check (r == 0, "clean NBD_CMD_DISC%s%s", r ? ": " : "",
         r ? nbd_get_error () : "");
  nbd_close (h);
}

static void
check_unknown_export (const char *n, const char *what)
{
  struct nbd_handle *h = new_handle ();

  if (!h)
    return;
  if (nbd_set_export_name (h, n) == -1) {
    check (false, "%s: nbd_set_export_name: %s", what, nbd_get_error ());
    nbd_close (h);
    return;
  }
  if (nbd_connect_unix (h, sock) != -1) {
    check (false, "%s: connect succeeded, want unknown export", what);
  }
  else {
    int e = nbd_get_errno ();
    const char *msg = nbd_get_error ();
    /* libnbd turns NBD_REP_ERR_UNKNOWN into ENOENT and "no export named";
     * any other errno means another reply or a protocol failure. */
    check (e == ENOENT && strstr (msg, "export"),
           "%s: connect fails with ENOENT naming the export (got %s: %.200s)",
           what, errname (e), msg);
  }
  nbd_close (h);
}

static void
check_structured_refused (void)
{
  struct nbd_handle *h = new_handle ();

  if (!h)
    return;
  if (nbd_set_request_structured_replies (h, true) == -1 ||
      nbd_set_export_name (h, name) == -1 ||
      nbd_connect_unix (h, sock) == -1) {
    check (false, "connect requesting structured replies: %s",
           nbd_get_error ());
    nbd_close (h);
    return;
  }
  check (nbd_get_structured_replies_negotiated (h) == 0,
         "structured replies requested but not negotiated");
  check (read_matches (h, 65536 * 7, 65536),
         "simple-reply read after the refusal matches");
  nbd_shutdown (h, 0);
  nbd_close (h);
}

struct list_state {
  int count;
  bool found;
};

static int
list_cb (void *opaque, const char *n, const char *description)
{
  struct list_state *st = opaque;

  printf ("# listed export '%s' description '%s'\n", n, description);
  st->count++;
  if (!strcmp (n, name))
    st->found = true;
  return 0;
}

static void
check_opt_mode (void)
{
  struct nbd_handle *h = new_handle ();
  struct list_state st = { 0 };

  if (!h)
    return;
  if (nbd_set_opt_mode (h, true) == -1 || nbd_connect_unix (h, sock) == -1) {
    check (false, "connect in option mode: %s", nbd_get_error ());
    nbd_close (h);
    return;
  }
  check (nbd_aio_is_negotiating (h) == 1, "option mode: negotiating");

  int r = nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb,
                                                 .user_data = &st });
  check (r >= 1 && st.found, "NBD_OPT_LIST: %d exports, '%s' %s%s%s", r,
         name, st.found ? "listed" : "missing", r == -1 ? ": " : "",
         r == -1 ? nbd_get_error () : "");

  r = nbd_set_export_name (h, name);
  if (r == 0)
    r = nbd_opt_info (h);
  check (r == 0, "NBD_OPT_INFO '%s'%s%s", name, r ? ": " : "",
         r ? nbd_get_error () : "");
  if (r == 0) {
    int64_t s = nbd_get_size (h);
    check (s >= 0 && (uint64_t) s == size, "NBD_OPT_INFO size %" PRId64
           " (want %" PRIu64 ")", s, size);
    check (nbd_is_read_only (h) == 1, "NBD_OPT_INFO read-only flag");
    int64_t pref = nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED);
    check (pref == block_size, "NBD_OPT_INFO preferred block size %" PRId64,
           pref);
  }

  r = nbd_set_export_name (h, "no-such-export");
  if (r == 0)
    r = nbd_opt_info (h);
  check (r == -1 && nbd_get_errno () == ENOENT,
         "NBD_OPT_INFO of an unknown export fails with ENOENT (got %s)",
         r == -1 ? errname (nbd_get_errno ()) : "success");
  check (nbd_aio_is_negotiating (h) == 1,
         "still negotiating after the failed NBD_OPT_INFO");

  r = nbd_set_export_name (h, name);
  if (r == 0)
    r = nbd_opt_go (h);
  check (r == 0, "NBD_OPT_GO '%s' after LIST and INFO%s%s", name,
         r ? ": " : "", r ? nbd_get_error () : "");
  if (r == 0)
    check (read_matches (h, 3 * 65536 + 17, 65536),
           "read after NBD_OPT_GO matches");
  nbd_shutdown (h, 0);
  nbd_close (h);

  /* NBD_OPT_ABORT ends the negotiation cleanly. */
  h = new_handle ();
  if (!h)
    return;
  if (nbd_set_opt_mode (h, true) == -1 || nbd_connect_unix (h, sock) == -1) {
    check (false, "connect in option mode: %s", nbd_get_error ());
    nbd_close (h);
    return;
  }
  r = nbd_opt_abort (h);
  check (r == 0 && nbd_aio_is_closed (h) == 1, "NBD_OPT_ABORT%s%s",
         r ? ": " : "", r ? nbd_get_error () : "");
  nbd_close (h);
}

int
main (int argc, char **argv)
{
  if (argc != 5) {
    fprintf (stderr, "usage: nbd-errors SOCKET NAME FILE BLOCK_SIZE\n");
    return 2;
  }
  sock = argv[1];
  name = argv[2];
  file = argv[3];
  block_size = strtoul (argv[4], NULL, 0);
  setvbuf (stdout, NULL, _IOLBF, 0);

  file_fd = open (file, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (file_fd == -1 || fstat (file_fd, &st) == -1) {
    fprintf (stderr, "nbd-errors: %s: %m\n", file);
    return 2;
  }
  size = st.st_size;
  if (size < 128 * 1024) {
    fprintf (stderr, "nbd-errors: %s: want an image of at least 128 KiB\n",
             file);
    return 2;
  }

  check_io_errors ();
  check_unknown_export ("no-such-export", "unknown export");
  char *longname = malloc (4097);
  if (!longname) {
    perror ("malloc");
    return 1;
  }
  memset (longname, 'n', 4096);
  longname[4096] = '\0';
  check_unknown_export (longname, "4096-byte export name");
  free (longname);
  check_structured_refused ();
  check_opt_mode ();

  /* The server survived all of it. */
  struct nbd_handle *h = connect_to (name);
  if (h) {
    check (read_matches (h, size / 2, 65536), "a fresh connection works");
    nbd_shutdown (h, 0);
    nbd_close (h);
  }

  close (file_fd);
  if (failures)
    printf ("%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
