/* thunder — shacost: the CPU cost of SHA-256 over a file, block by block,
 * with the library thunder hashes with (nettle, via src/common/digest.c).
 *
 *   shacost FILE BLOCK_SIZE
 *
 * Reads FILE in blocks of BLOCK_SIZE bytes (as a node receives them) and
 * hashes each with digest_sha256.  Prints one line:
 *   bytes=N hash_cpu_s=S total_cpu_s=T
 * hash_cpu_s is this thread's CPU time inside digest_sha256 only
 * (CLOCK_THREAD_CPUTIME_ID around each call); total_cpu_s is the
 * process's user + system time, reading included.  bench/bench-relay.sh
 * runs it on a file in the page cache.  Exit 1 on errors. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cputime.h"
#include "digest.h"

int
main(int argc, char **argv)
{
  if (argc != 3) {
    fprintf(stderr, "usage: shacost FILE BLOCK_SIZE\n");
    return 1;
  }
  char *end;
  errno = 0;
  unsigned long bs = strtoul(argv[2], &end, 10);
  if (errno || *end || bs == 0 || bs > 64UL << 20) {
    fprintf(stderr, "shacost: BLOCK_SIZE '%s': 1 .. 64 MiB\n", argv[2]);
    return 1;
  }
  int fd = open(argv[1], O_RDONLY);
  if (fd == -1) {
    fprintf(stderr, "shacost: %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  char *buf = malloc(bs);
  if (buf == NULL) {
    fprintf(stderr, "shacost: out of memory\n");
    return 1;
  }
  uint64_t total = 0;
  double hash_s = 0;
  uint8_t d[DIGEST_LEN];
  for (;;) {
    size_t have = 0;
    while (have < bs) {
      ssize_t n = read(fd, buf + have, bs - have);
      if (n == -1 && errno == EINTR)
        continue;
      if (n == -1) {
        fprintf(stderr, "shacost: %s: read: %s\n", argv[1], strerror(errno));
        return 1;
      }
      if (n == 0)
        break;
      have += (size_t)n;
    }
    if (have == 0)
      break;
    double t0 = thread_cpu_s();
    digest_sha256(buf, have, d);
    hash_s += thread_cpu_s() - t0;
    total += have;
  }
  close(fd);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double tot = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  printf("bytes=%" PRIu64 " hash_cpu_s=%.3f total_cpu_s=%.3f\n", total, hash_s,
         tot);
  free(buf);
  return 0;
}
