/* thunder — cachewrite: the CPU cost of a node's cache write (issue 17),
 * three ways, in one run:
 *
 *   cachewrite DIR [MIB [BLOCK_SIZE]]        (defaults 512, 65536)
 *
 * Writes MIB MiB in blocks of BLOCK_SIZE bytes (as blkcache_store does,
 * one pwrite per block at block * BLOCK_SIZE) into a new file in DIR,
 * then fdatasyncs it (as the committer does), for each mode:
 *   sparse    an image-sized sparse file (what blkcache does today)
 *   falloc    the same file fallocate()d first, whole (preallocation
 *             against the first-touch cost of delayed allocation)
 *   falloc1   each block fallocate()d just before its pwrite
 *   direct    O_DIRECT from a 4 KiB-aligned buffer (bypasses the page
 *             cache: no copy into it, but cached reads then go to disk)
 * and "sparse" again last (the first run's order effect shows there).
 * Prints per mode the CPU-seconds (user + system of this process) and
 * wall seconds per GiB for the writes, and for the fdatasync, and the
 * CPU ratio to "sparse".  The file is removed after each mode.  Exit 1
 * on errors (e.g. O_DIRECT not supported by DIR's file system). */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cputime.h"

static int
run(const char *dir, const char *mode, size_t total, size_t bs, void *buf,
    double *write_cpu)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/cachewrite.%d", dir, (int)getpid());
  int flags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC;
  if (strcmp(mode, "direct") == 0)
    flags |= O_DIRECT;
  int fd = open(path, flags, 0600);
  if (fd < 0) {
    fprintf(stderr, "cachewrite: %s: open (%s): %s\n", path, mode,
            strerror(errno));
    return -1;
  }
  int rc = -1;
  if (ftruncate(fd, (off_t)total) < 0) {
    fprintf(stderr, "cachewrite: %s: ftruncate: %s\n", path, strerror(errno));
    goto out;
  }
  if (strcmp(mode, "falloc") == 0 && fallocate(fd, 0, 0, (off_t)total) < 0) {
    fprintf(stderr, "cachewrite: %s: fallocate: %s\n", path, strerror(errno));
    goto out;
  }
  double c0 = process_cpu_s(), w0 = monotonic_s();
  bool each = strcmp(mode, "falloc1") == 0;
  for (size_t off = 0; off < total; off += bs)
    if ((each && fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)bs) < 0) ||
        pwrite(fd, buf, bs, (off_t)off) != (ssize_t)bs) {
      fprintf(stderr, "cachewrite: %s: pwrite (%s): %s\n", path, mode,
              strerror(errno));
      goto out;
    }
  double c1 = process_cpu_s(), w1 = monotonic_s();
  if (fdatasync(fd) < 0) {
    fprintf(stderr, "cachewrite: %s: fdatasync: %s\n", path, strerror(errno));
    goto out;
  }
  double c2 = process_cpu_s(), w2 = monotonic_s();
  double per_gib = (double)(1u << 30) / (double)total;
  *write_cpu = (c1 - c0) * per_gib;
  printf("%-8s %10.3f %10.3f %10.3f %10.3f", mode, *write_cpu,
         (w1 - w0) * per_gib, (c2 - c1) * per_gib, (w2 - w1) * per_gib);
  rc = 0;
out:
  close(fd);
  unlink(path);
  return rc;
}

int
main(int argc, char **argv)
{
  if (argc < 2 || argc > 4) {
    fprintf(stderr, "usage: cachewrite DIR [MIB [BLOCK_SIZE]]\n");
    return 1;
  }
  long mib = argc > 2 ? strtol(argv[2], NULL, 10) : 512;
  long bs = argc > 3 ? strtol(argv[3], NULL, 10) : 65536;
  if (mib < 1 || mib > 65536 || bs < 4096 || bs > (64 << 20) || bs % 4096) {
    fprintf(stderr, "cachewrite: MIB 1..65536, BLOCK_SIZE a multiple of 4096"
            " up to 64 MiB\n");
    return 1;
  }
  size_t total = (size_t)mib << 20;
  total -= total % (size_t)bs;
  void *buf;
  if (total == 0 || posix_memalign(&buf, 4096, (size_t)bs) != 0) {
    fprintf(stderr, "cachewrite: no memory or empty size\n");
    return 1;
  }
  memset(buf, 0x5a, (size_t)bs);
  printf("%zu MiB in blocks of %ld bytes into %s; per GiB:\n", total >> 20, bs,
         argv[1]);
  printf("%-8s %10s %10s %10s %10s %8s\n", "mode", "write-cpu", "write-s",
         "sync-cpu", "sync-s", "cpu/sparse");
  const char *modes[] = { "sparse", "falloc", "falloc1", "direct", "sparse" };
  double base = 0;
  for (int i = 0; i < 5; i++) {
    double c;
    if (run(argv[1], modes[i], total, (size_t)bs, buf, &c) < 0)
      return 1;
    if (i == 0)
      base = c;
    printf(" %8.2f\n", base > 0 ? c / base : 0.0);
  }
  free(buf);
  return 0;
}
