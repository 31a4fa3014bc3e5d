/* thunder tests — make-image: writes a deterministic test image.
 *
 * Usage: make-image PATH SIZE_BYTES
 *
 * The image is cut into 64 KiB blocks.  Block i is either
 *   - a "pattern" block: every byte is 1 + ((i * 37 + (i >> 8)) % 255),
 *     never zero, so a block read from the wrong place or a hole shows; or
 *   - a "random" block, when i % 16 == 7: bytes from an xorshift64*
 *     generator seeded with i, so its content is fixed but has no pattern.
 * The last block may be short.  tests/integration/functions.sh has the same
 * rule in shell (pattern_byte, is_random_block); keep them in step.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK (64u * 1024)

static unsigned
pattern_byte (uint64_t i)
{
  return 1 + (unsigned) ((i * 37 + (i >> 8)) % 255);
}

static void
fill_random (unsigned char *buf, uint64_t i)
{
  uint64_t x = (i + 1) * UINT64_C (0x9E3779B97F4A7C15);

  for (size_t k = 0; k < BLOCK; k += 8) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t v = x * UINT64_C (0x2545F4914F6CDD1D);
    memcpy (buf + k, &v, 8);
  }
}

int
main (int argc, char **argv)
{
  if (argc != 3) {
    fprintf (stderr, "usage: make-image PATH SIZE_BYTES\n");
    return 2;
  }
  const char *path = argv[1];
  char *end;
  errno = 0;
  uint64_t size = strtoull (argv[2], &end, 10);
  if (errno || *end || end == argv[2]) {
    fprintf (stderr, "make-image: bad size '%s'\n", argv[2]);
    return 2;
  }

  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1) {
    fprintf (stderr, "make-image: open: %s: %m\n", path);
    return 1;
  }
  static unsigned char buf[BLOCK];
  for (uint64_t i = 0, off = 0; off < size; i++, off += BLOCK) {
    size_t len = size - off < BLOCK ? (size_t) (size - off) : BLOCK;
    if (i % 16 == 7)
      fill_random (buf, i);
    else
      memset (buf, pattern_byte (i), BLOCK);
    for (size_t done = 0; done < len;) {
      ssize_t r = pwrite (fd, buf + done, len - done, off + done);
      if (r == -1) {
        if (errno == EINTR)
          continue;
        fprintf (stderr, "make-image: write: %s: %m\n", path);
        close (fd);
        return 1;
      }
      done += r;
    }
  }
  if (close (fd) == -1) {
    fprintf (stderr, "make-image: close: %s: %m\n", path);
    return 1;
  }
  return 0;
}
