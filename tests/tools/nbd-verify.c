/* thunder tests — nbd-verify: random reads with several requests in
 * flight on one connection, each checked against the image file.
 *
 * Usage: nbd-verify URI FILE REQUESTS INFLIGHT SEED
 *   URI       an NBD URI (nbd+unix:///NAME?socket=S or nbd://H:P/NAME)
 *   FILE      the image file the export is served from
 *   REQUESTS  how many reads in all
 *   INFLIGHT  how many at once (libnbd aio)
 *   SEED      seeds the offsets and lengths, so a failure can be replayed
 *
 * Lengths run from 1 byte to 1 MiB, offsets anywhere in the image, with a
 * quarter of the reads aligned to 64 KiB blocks.  Exits 0 when every read
 * succeeded with the file's bytes, 1 otherwise (the first few differences
 * are printed).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LEN (1024 * 1024)
#define BLOCK (64 * 1024)

struct req {
  char *buf;
  uint64_t off;
  size_t len;
  bool busy;
};

static int file_fd;
static uint64_t size;
static char *want;          /* the file's bytes for the read being checked */
static unsigned long done, bad;
static uint64_t rng;

static uint64_t
next_rand (void)
{
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * UINT64_C (0x2545F4914F6CDD1D);
}

static int
completed (void *opaque, int *error)
{
  struct req *r = opaque;

  done++;
  r->busy = false;
  if (*error) {
    if (bad++ < 5)
      fprintf (stderr, "nbd-verify: read %zu at %" PRIu64 ": %s\n", r->len,
               r->off, strerror (*error));
    return 1;
  }
  if (pread (file_fd, want, r->len, r->off) != (ssize_t) r->len) {
    fprintf (stderr, "nbd-verify: pread of the file: %m\n");
    exit (1);
  }
  if (memcmp (want, r->buf, r->len) != 0) {
    size_t i = 0;
    while (want[i] == r->buf[i])
      i++;
    if (bad++ < 5)
      fprintf (stderr, "nbd-verify: read %zu at %" PRIu64 ": byte %" PRIu64
               " is 0x%02x, the file has 0x%02x\n", r->len, r->off,
               r->off + i, (unsigned char) r->buf[i], (unsigned char) want[i]);
  }
  return 1;   /* retire the command */
}

static void
pick (struct req *r)
{
  uint64_t x = next_rand ();

  if (x % 4 == 0) {
    uint64_t nblocks = (size + BLOCK - 1) / BLOCK;
    r->off = (next_rand () % nblocks) * BLOCK;
    r->len = BLOCK;
  }
  else {
    r->off = next_rand () % size;
    r->len = 1 + next_rand () % (x % 4 == 1 ? MAX_LEN : 4096);
  }
  if (r->len > size - r->off)
    r->len = size - r->off;
}

int
main (int argc, char **argv)
{
  if (argc != 6) {
    fprintf (stderr, "usage: nbd-verify URI FILE REQUESTS INFLIGHT SEED\n");
    return 2;
  }
  const char *uri = argv[1], *file = argv[2];
  unsigned long total = strtoul (argv[3], NULL, 10);
  unsigned inflight = strtoul (argv[4], NULL, 10);
  rng = strtoull (argv[5], NULL, 10) * 2 + 1;
  if (inflight == 0 || inflight > 256) {
    fprintf (stderr, "nbd-verify: INFLIGHT must be 1..256\n");
    return 2;
  }

  file_fd = open (file, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (file_fd == -1 || fstat (file_fd, &st) == -1) {
    fprintf (stderr, "nbd-verify: %s: %m\n", file);
    return 2;
  }
  size = st.st_size;

  struct nbd_handle *h = nbd_create ();
  /* nbds:// URIs name their certificates (tls-certificates=DIR). */
  if (!h || nbd_set_uri_allow_local_file (h, true) == -1 ||
      nbd_connect_uri (h, uri) == -1) {
    fprintf (stderr, "nbd-verify: %s\n", nbd_get_error ());
    return 1;
  }
  int64_t esize = nbd_get_size (h);
  if (esize < 0 || (uint64_t) esize != size) {
    fprintf (stderr, "nbd-verify: export size %" PRId64 ", file size %"
             PRIu64 "\n", esize, size);
    return 1;
  }

  struct req *reqs = calloc (inflight, sizeof *reqs);
  want = malloc (MAX_LEN);
  if (!reqs || !want) {
    perror ("calloc");
    return 1;
  }
  for (unsigned i = 0; i < inflight; i++)
    if (!(reqs[i].buf = malloc (MAX_LEN))) {
      perror ("malloc");
      return 1;
    }

  unsigned long issued = 0;
  while (done < total) {
    for (unsigned i = 0; i < inflight && issued < total; i++) {
      if (reqs[i].busy)
        continue;
      pick (&reqs[i]);
      reqs[i].busy = true;
      if (nbd_aio_pread (h, reqs[i].buf, reqs[i].len, reqs[i].off,
                         (nbd_completion_callback) { .callback = completed,
                                                     .user_data = &reqs[i] },
                         0) == -1) {
        fprintf (stderr, "nbd-verify: aio_pread: %s\n", nbd_get_error ());
        return 1;
      }
      issued++;
    }
    if (nbd_poll (h, -1) == -1) {
      fprintf (stderr, "nbd-verify: poll: %s (%lu of %lu reads done)\n",
               nbd_get_error (), done, total);
      return 1;
    }
  }

  if (nbd_shutdown (h, 0) == -1) {
    fprintf (stderr, "nbd-verify: shutdown: %s\n", nbd_get_error ());
    bad++;
  }
  nbd_close (h);
  for (unsigned i = 0; i < inflight; i++)
    free (reqs[i].buf);
  free (reqs);
  free (want);
  close (file_fd);
  printf ("nbd-verify: %lu reads, %u in flight, %lu bad\n", done, inflight,
          bad);
  return bad ? 1 : 0;
}
