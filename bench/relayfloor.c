/* thunder — relayfloor: the least CPU any relay node could spend per GiB on
 * this host (issue 17), next to which bench-relay.sh's thunderd figure is
 * read.
 *
 *   relayfloor FILE CACHE_DIR [BLOCK_SIZE [READ_SIZE]]
 *                                      (defaults 65536, 1048576)
 *
 * Three processes, as in bench-relay.sh's cold relay: a feeder that
 * sends FILE (in the page cache) over loopback TCP in READ_SIZE pieces
 * (the origin answering the node's reads), this process in the middle,
 * and a sink that reads and drops everything from a Unix socket (the
 * node's reader).  The middle does only what a node must do with every
 * byte, with no threads, no protocol and no bookkeeping: recv a piece
 * (MSG_WAITALL), SHA-256 each BLOCK_SIZE block of it (nettle, via
 * src/common/digest.c, as thunderd), pwrite each block into a sparse
 * cache file at its offset, send the piece on; fdatasync at the end.
 * Measured for the steps added one at a time, each a fresh run:
 *   move         recv + send
 *   +hash        recv + SHA-256 + send
 *   +cache       recv + SHA-256 + pwrite + send, then fdatasync
 *   mmap         as +cache, but each piece received straight into a
 *                shared mapping of the cache file (populated first with
 *                MADV_POPULATE_WRITE), hashed and sent from there: no
 *                copy into the page cache, its pages touched instead
 * Prints per step this process's CPU-seconds (user + system, getrusage)
 * per GiB, the CPU inside the hash alone (CLOCK_THREAD_CPUTIME_ID around
 * each digest), and the step's CPU over the hash's: "+cache" is the
 * floor of a cold relay with a page-cache write, against which
 * bench-relay.sh's target (cold relay <= 1.5 x the hash) is read.
 * Exit 1 on errors. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cputime.h"
#include "digest.h"

static void
die(const char *what)
{
  fprintf(stderr, "relayfloor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void
send_all(int fd, const char *p, size_t len)
{
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      die("send");
    p += n;
    len -= (size_t)n;
  }
}

/* The feeder: FILE over the connected TCP socket FD, READ_SIZE at a time. */
static void
feed(const char *file, int fd, size_t rs)
{
  int in = open(file, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    die(file);
  char *buf = malloc(rs);
  if (buf == NULL)
    die("malloc");
  ssize_t n;
  while ((n = read(in, buf, rs)) > 0)
    send_all(fd, buf, (size_t)n);
  if (n < 0)
    die("read");
  _exit(0);
}

static void
sink(int fd)
{
  static char buf[1 << 20];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) != 0)
    if (n < 0 && errno != EINTR)
      die("sink recv");
  _exit(0);
}

enum step { MOVE, HASH, CACHE, MMAP };
static const char *const step_name[] = { "move", "+hash", "+cache", "mmap" };

/* One fresh run of STEP: prints its line, returns its CPU-s per GiB. */
static double
run(enum step step, const char *file, const char *dir, size_t bs, size_t rs,
    uint64_t size, double *hash_gib)
{
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t alen = sizeof a;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
      listen(lfd, 1) < 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
    die("listen");
  pid_t feeder = fork();
  if (feeder < 0)
    die("fork");
  if (feeder == 0) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0)
      die("connect");
    feed(file, c, rs);
  }
  int up = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (up < 0)
    die("accept");
  close(lfd);
  /* Wake-ups cost CPU too (a context switch each): the receive wakes
   * only once a whole piece is in, and the send does not wait for the
   * sink while a few pieces fit. */
  int lowat = (int)rs, sndbuf = (int)(4 * rs);
  if (setsockopt(up, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) < 0)
    die("SO_RCVLOWAT");
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
      setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) < 0)
    die("socketpair");
  pid_t sinker = fork();
  if (sinker < 0)
    die("fork");
  if (sinker == 0) {
    close(sv[0]);
    sink(sv[1]);
  }
  close(sv[1]);

  char path[4096];
  snprintf(path, sizeof path, "%s/relayfloor.%d", dir, (int)getpid());
  int cfd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (cfd < 0 || ftruncate(cfd, (off_t)size) < 0)
    die(path);
  char *own, *buf, *map = NULL;
  if (posix_memalign((void **)&own, 4096, rs) != 0)
    die("posix_memalign");
  buf = own;
  if (step == MMAP) {
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
    if (map == MAP_FAILED)
      die("mmap");
  }

  double c0 = process_cpu_s(), hash_s = 0;
  uint8_t d[DIGEST_LEN];
  uint64_t pos = 0;
  for (;;) {
    if (map != NULL) {
      buf = map + pos;
      if (pos < size && madvise(buf, rs, MADV_POPULATE_WRITE) < 0)
        die("madvise");
    }
    ssize_t n = pos < size || map == NULL ? recv(up, buf, rs, MSG_WAITALL) : 0;
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      die("recv");
    if (n == 0)
      break;
    for (size_t off = 0; step != MOVE && off < (size_t)n; off += bs) {
      size_t len = (size_t)n - off < bs ? (size_t)n - off : bs;
      double h0 = thread_cpu_s();
      digest_sha256(buf + off, len, d);
      hash_s += thread_cpu_s() - h0;
      if (step == CACHE &&
          pwrite(cfd, buf + off, len, (off_t)(pos + off)) != (ssize_t)len)
        die("pwrite");
    }
    send_all(sv[0], buf, (size_t)n);
    pos += (uint64_t)n;
  }
  if ((step == CACHE || step == MMAP) && fdatasync(cfd) < 0)
    die("fdatasync");
  double cpu = process_cpu_s() - c0;
  if (pos != size) {
    fprintf(stderr, "relayfloor: relayed %llu of %llu bytes\n",
            (unsigned long long)pos, (unsigned long long)size);
    exit(1);
  }
  close(sv[0]);
  close(up);
  close(cfd);
  unlink(path);
  if (map != NULL)
    munmap(map, size);
  free(own);
  int st;
  if (waitpid(feeder, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
      waitpid(sinker, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "relayfloor: feeder or sink failed\n");
    exit(1);
  }
  double per_gib = (double)(1u << 30) / (double)size;
  if (step != MOVE)
    *hash_gib = hash_s * per_gib;
  return cpu * per_gib;
}

static unsigned long
size_arg(const char *s, const char *what)
{
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v < 4096 || v > 64UL << 20 || v % 4096) {
    fprintf(stderr, "relayfloor: %s '%s': a multiple of 4096 up to 64 MiB\n",
            what, s);
    exit(1);
  }
  return v;
}

int
main(int argc, char **argv)
{
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: relayfloor FILE CACHE_DIR [BLOCK_SIZE [READ_SIZE]]\n");
    return 1;
  }
  size_t bs = argc > 3 ? size_arg(argv[3], "BLOCK_SIZE") : 65536;
  size_t rs = argc > 4 ? size_arg(argv[4], "READ_SIZE") : 1048576;
  if (rs % bs) {
    fprintf(stderr, "relayfloor: READ_SIZE must be a multiple of BLOCK_SIZE\n");
    return 1;
  }
  struct stat st;
  if (stat(argv[1], &st) < 0)
    die(argv[1]);
  if (st.st_size <= 0 || st.st_size % (off_t)rs) {
    fprintf(stderr, "relayfloor: %s: size must be a positive multiple of READ_SIZE\n",
            argv[1]);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  double cpu[4], hash[4] = { 0 };
  for (enum step s = MOVE; s <= MMAP; s++)
    cpu[s] = run(s, argv[1], argv[2], bs, rs, (uint64_t)st.st_size, &hash[s]);
  printf("%llu MiB, blocks of %zu, reads of %zu; per GiB:\n",
         (unsigned long long)(st.st_size >> 20), bs, rs);
  printf("%-8s %10s %10s %10s\n", "step", "cpu-s", "hash-cpu-s", "cpu/hash");
  for (enum step s = MOVE; s <= MMAP; s++)
    printf("%-8s %10.3f %10.3f %10.2f\n", step_name[s], cpu[s], hash[s],
           cpu[s] / hash[CACHE]);
  return 0;
}
