/* thunder tests — blkcache-crash: crash-consistency checks of the block
 * cache (src/daemon/blkcache.c) beyond what a unit test can afford.
 *
 * Usage: blkcache-crash order|faults|kill [-v] [-r ROUNDS] [-s SEED] DIR
 *
 * The program is linked with -Wl,--wrap for pwrite64, pread64, fdatasync
 * and fsync, so every write and sync blkcache.c does passes through a
 * checker first.  The checker models what a power cut may leave behind:
 * data written to the cache's data file is "dirty" until an fdatasync (or
 * fsync) of it that began after the write returned has succeeded; after an
 * fdatasync fails, the dirty blocks count as lost until written again.
 * Every write to the bitmap file is compared with the bytes it replaces,
 * and a bit that goes from 0 to 1 while its block is dirty is a violation:
 * after a power cut at that moment the bitmap could name data that never
 * reached the disk.  A process kill cannot show this (the page cache
 * survives it); the checker can.
 *
 *   order   rounds of 4 threads storing, rewriting and reading random
 *           blocks with random commit intervals, a few cached blocks
 *           tampered with between rounds; after each round the cache is
 *           reopened and every present block must verify, except exactly
 *           the tampered ones, which must be evicted.
 *   faults  the same with injected failures: fdatasync and writes of data
 *           and bitmap, reads of data (EIO/ENOSPC, roughly one call in 20).
 *           Operations may fail; nothing wrong may ever be served or
 *           marked valid.
 *   kill    a child stores blocks until it is SIGKILLed at a random time
 *           (calibrated to the time a fill takes); the parent reopens and
 *           checks every present block (none may fail verification).  The
 *           checker also runs in the child and aborts it on a violation.
 *
 * DIR must exist; the program works in DIR/blkcache-crash.XXXXXX and
 * removes it.  Exit status: 0 all good, 1 violations or wrong data, 2
 * usage or setup error.  The seed is printed so that a run can be
 * repeated.  Everything this program reports goes to stdout; the cache's
 * own log (a warning per tampered block, an error per injected fault, as
 * it should) goes to /dev/null unless -v.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "blkcache.h"
#include "log.h"
#include "manifest.h"

#define BS 4096u          /* block size of the test image */
#define NBLOCKS 1500u     /* blocks; the last one is short */
#define LAST_LEN 1234u
#define HDR 4096u         /* bitmap header size (blkcache.c) */
#define THREADS 4

int __real_fallocate64(int fd, int mode, off_t off, off_t len);
int __wrap_fallocate64(int fd, int mode, off_t off, off_t len);
ssize_t __real_pwrite64(int fd, const void *buf, size_t n, off_t off);
ssize_t __real_pread64(int fd, void *buf, size_t n, off_t off);
int __real_fdatasync(int fd);
int __real_fsync(int fd);
ssize_t __wrap_pwrite64(int fd, const void *buf, size_t n, off_t off);
ssize_t __wrap_pread64(int fd, void *buf, size_t n, off_t off);
int __wrap_fdatasync(int fd);
int __wrap_fsync(int fd);

/* The test image: NBLOCKS blocks, generated in setup_image. */
static uint8_t *image;

static uint32_t
blen(uint64_t b)
{
  return b == NBLOCKS - 1 ? LAST_LEN : BS;
}

/* ---- The checker ---------------------------------------------------------- */

static pthread_mutex_t ck_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned writing[NBLOCKS]; /* data pwrites in progress */
static bool dirty[NBLOCKS];       /* written, not yet known durable */
static bool lost[NBLOCKS];        /* an fdatasync failed since the write */
static uint64_t gen[NBLOCKS];     /* data writes so far */
static bool content_ok[NBLOCKS];  /* the last write had the right bytes */
/* Right bytes are in the page cache: a write of the right bytes returned
 * and no write of other bytes began since.  Writes still in flight then
 * write the same bytes, so a sync beginning now makes the block durable
 * whatever they do.  Without this, two stores of one block racing (the
 * second passes the "right over right" shortcut while the first is still
 * in pwrite) look like an unsynced block to the model. */
static bool settled[NBLOCKS];
static unsigned wrong_epoch[NBLOCKS]; /* writes of other bytes begun */
/* Eviction: a bit cleared in the bitmap file not yet covered by an
 * fdatasync of it.  Punching the block's hole then is a violation: after
 * a power cut the old bit could name a hole. */
static bool clear_unsynced[NBLOCKS];
static _Atomic uint64_t punches;
static _Atomic uint64_t violations, bits_checked, bitmap_writes, syncs;
static _Atomic uint64_t faults_injected;
static bool abort_on_violation;

/* Fault injection: one call in fault_every fails (0: never). */
static _Atomic unsigned fault_every;
static _Atomic unsigned fault_seed = 1;

static bool
inject(void)
{
  unsigned every = atomic_load(&fault_every);
  if (every == 0)
    return false;
  unsigned s = atomic_fetch_add(&fault_seed, 0x9e3779b9u) * 2654435761u;
  if ((s >> 16) % every != 0)
    return false;
  atomic_fetch_add(&faults_injected, 1);
  return true;
}

enum kind { KIND_OTHER, KIND_DATA, KIND_BITMAP };

/* What fd is: the cache's data file, its bitmap, or something else. */
static enum kind
fd_kind(int fd)
{
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0)
    return KIND_OTHER;
  path[n] = '\0';
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    return KIND_OTHER;
  if (strcmp(slash, "/data") == 0)
    return KIND_DATA;
  if (strcmp(slash, "/bitmap") == 0)
    return KIND_BITMAP;
  return KIND_OTHER;
}

static void
violation(uint64_t b, const char *why)
{
  atomic_fetch_add(&violations, 1);
  fprintf(stdout, "blkcache-crash: VIOLATION: block %" PRIu64 ": bit set"
                  " while its data is %s, or data %s\n",
          b, why, why);
  fflush(stdout);
  if (abort_on_violation)
    abort();
}

ssize_t
__wrap_pwrite64(int fd, const void *buf, size_t n, off_t off)
{
  enum kind k = fd_kind(fd);
  if (k == KIND_DATA) {
    if (inject()) {
      errno = ENOSPC;
      return -1;
    }
    uint64_t first = (uint64_t)off / BS, last = ((uint64_t)off + n - 1) / BS;
    /* Rewriting a block with the right bytes over the right bytes changes
     * nothing a power cut could reveal (a torn mix of equal bytes is the
     * same bytes), so it leaves the model alone. */
    bool right = (uint64_t)off % BS == 0 && first < NBLOCKS &&
                 n == blen(first) && memcmp(buf, image + off, n) == 0;
    pthread_mutex_lock(&ck_lock);
    if (right && content_ok[first] && !lost[first]) {
      /* Its completion still settles the block: a store racing a first
       * write over other bytes may return before that write does. */
      unsigned epoch = wrong_epoch[first];
      pthread_mutex_unlock(&ck_lock);
      ssize_t r = __real_pwrite64(fd, buf, n, off);
      int e = errno;
      pthread_mutex_lock(&ck_lock);
      if (r == (ssize_t)n && wrong_epoch[first] == epoch && !lost[first])
        settled[first] = true;
      pthread_mutex_unlock(&ck_lock);
      errno = e;
      return r;
    }
    unsigned epoch = right ? wrong_epoch[first] : 0;
    for (uint64_t b = first; n > 0 && b <= last && b < NBLOCKS; b++) {
      writing[b]++;
      dirty[b] = true;
      lost[b] = false;
      content_ok[b] = right;
      gen[b]++;
      if (!right) {
        wrong_epoch[b]++;
        settled[b] = false;
      }
    }
    pthread_mutex_unlock(&ck_lock);
    ssize_t r = __real_pwrite64(fd, buf, n, off);
    int e = errno;
    pthread_mutex_lock(&ck_lock);
    for (uint64_t b = first; n > 0 && b <= last && b < NBLOCKS; b++)
      writing[b]--;
    if (right && r == (ssize_t)n && wrong_epoch[first] == epoch)
      settled[first] = true;
    pthread_mutex_unlock(&ck_lock);
    errno = e;
    return r;
  }
  if (k == KIND_BITMAP && (uint64_t)off + n > HDR) {
    if (inject()) {
      errno = EIO;
      return -1;
    }
    /* Compare with what is there now: every 0 → 1 bit needs durable data. */
    size_t skip = off < (off_t)HDR ? HDR - (size_t)off : 0;
    uint64_t body = (uint64_t)off + skip - HDR;
    size_t len = n - skip;
    uint8_t *old = calloc(1, len);
    if (old == NULL)
      abort();
    ssize_t got = __real_pread64(fd, old, len, (off_t)(HDR + body));
    pthread_mutex_lock(&ck_lock);
    atomic_fetch_add(&bitmap_writes, 1);
    for (size_t j = 0; j < len; j++) {
      uint8_t nb = ((const uint8_t *)buf)[skip + j];
      uint8_t ob = got > 0 && j < (size_t)got ? old[j] : 0;
      uint8_t up = nb & (uint8_t)~ob, down = ob & (uint8_t)~nb;
      for (unsigned bit = 0; down && bit < 8; bit++)
        if ((down & (1u << bit)) && (body + j) * 8 + bit < NBLOCKS)
          clear_unsynced[(body + j) * 8 + bit] = true;
      for (unsigned bit = 0; up && bit < 8; bit++) {
        if (!(up & (1u << bit)))
          continue;
        uint64_t b = (body + j) * 8 + bit;
        atomic_fetch_add(&bits_checked, 1);
        if (b >= NBLOCKS)
          continue;
        if (lost[b])
          violation(b, "lost (its fdatasync failed)");
        else if (dirty[b])
          violation(b, "not yet synced");
      }
    }
    ssize_t r = __real_pwrite64(fd, buf, n, off);
    int e = errno;
    pthread_mutex_unlock(&ck_lock);
    free(old);
    errno = e;
    return r;
  }
  return __real_pwrite64(fd, buf, n, off);
}

ssize_t
__wrap_pread64(int fd, void *buf, size_t n, off_t off)
{
  if (atomic_load(&fault_every) && fd_kind(fd) == KIND_DATA && inject()) {
    errno = EIO;
    return -1;
  }
  return __real_pread64(fd, buf, n, off);
}

/* real(fd), or an injected EIO. */
static int
sync_or_fail(int fd, int (*real)(int))
{
  if (inject()) {
    errno = EIO;
    return -1;
  }
  return real(fd);
}

/* A sync of the data file: what was fully written before it began is
 * durable once it succeeds; if it fails, what was dirty is lost. */
static int
data_sync(int fd, int (*real)(int))
{
  static uint64_t snap[NBLOCKS];
  static bool in[NBLOCKS];
  static pthread_mutex_t one_at_a_time = PTHREAD_MUTEX_INITIALIZER;

  pthread_mutex_lock(&one_at_a_time);
  pthread_mutex_lock(&ck_lock);
  for (unsigned b = 0; b < NBLOCKS; b++) {
    in[b] = dirty[b] && (writing[b] == 0 || settled[b]) && !lost[b];
    snap[b] = gen[b];
  }
  pthread_mutex_unlock(&ck_lock);

  int r = sync_or_fail(fd, real);
  int e = errno;
  atomic_fetch_add(&syncs, 1);

  pthread_mutex_lock(&ck_lock);
  for (unsigned b = 0; b < NBLOCKS; b++) {
    if (r == 0 && in[b] && gen[b] == snap[b])
      dirty[b] = false;
    if (r < 0 && dirty[b]) {
      lost[b] = true;
      settled[b] = false;
    }
  }
  pthread_mutex_unlock(&ck_lock);
  pthread_mutex_unlock(&one_at_a_time);
  errno = e;
  return r;
}

/* A sync of the bitmap: the clears written before it began are durable
 * once it succeeds. */
static int
bitmap_sync(int fd, int (*real)(int))
{
  static bool in[NBLOCKS];
  static pthread_mutex_t one_at_a_time = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&one_at_a_time);
  pthread_mutex_lock(&ck_lock);
  memcpy(in, clear_unsynced, sizeof in);
  pthread_mutex_unlock(&ck_lock);
  int r = sync_or_fail(fd, real);
  int e = errno;
  if (r == 0) {
    pthread_mutex_lock(&ck_lock);
    for (unsigned b = 0; b < NBLOCKS; b++)
      if (in[b])
        clear_unsynced[b] = false;
    pthread_mutex_unlock(&ck_lock);
  }
  pthread_mutex_unlock(&one_at_a_time);
  errno = e;
  return r;
}

int
__wrap_fdatasync(int fd)
{
  if (fd_kind(fd) == KIND_DATA)
    return data_sync(fd, __real_fdatasync);
  if (fd_kind(fd) == KIND_BITMAP)
    return bitmap_sync(fd, __real_fdatasync);
  return __real_fdatasync(fd);
}

/* A hole punched in the data file (eviction, or the sweep at open): the
 * block's bit must be clear in the bitmap file and that clear durable. */
int
__wrap_fallocate64(int fd, int mode, off_t off, off_t len)
{
  if (fd_kind(fd) != KIND_DATA || (uint64_t)off % BS != 0)
    return __real_fallocate64(fd, mode, off, len);
  uint64_t b = (uint64_t)off / BS;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 8);
  bool bit = false;
  if (n > 5 && b < NBLOCKS) {
    path[n - 5] = '\0'; /* drop "/data" */
    strcat(path, "/bitmap");
    int bfd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t v = 0;
    if (bfd >= 0 && __real_pread64(bfd, &v, 1, (off_t)(HDR + b / 8)) == 1)
      bit = v & (1u << (b % 8));
    if (bfd >= 0)
      close(bfd);
  }
  pthread_mutex_lock(&ck_lock);
  atomic_fetch_add(&punches, 1);
  if (b < NBLOCKS) {
    if (bit)
      violation(b, "punched (hole) while its bit is set");
    else if (clear_unsynced[b])
      violation(b, "punched while its bit's clear is not synced");
  }
  int r = __real_fallocate64(fd, mode, off, len);
  int e = errno;
  if (r == 0 && b < NBLOCKS)
    content_ok[b] = settled[b] = false; /* zeros now */
  pthread_mutex_unlock(&ck_lock);
  errno = e;
  return r;
}

int
__wrap_fsync(int fd)
{
  if (fd_kind(fd) == KIND_DATA)
    return data_sync(fd, __real_fsync);
  return __real_fsync(fd);
}

/* Forgets everything: the cache directory was removed. */
static void
checker_reset(void)
{
  pthread_mutex_lock(&ck_lock);
  memset(dirty, 0, sizeof dirty);
  memset(lost, 0, sizeof lost);
  memset(content_ok, 0, sizeof content_ok);
  memset(settled, 0, sizeof settled);
  memset(clear_unsynced, 0, sizeof clear_unsynced);
  pthread_mutex_unlock(&ck_lock);
}

/* ---- The image ------------------------------------------------------------- */

static char workdir[PATH_MAX], root[PATH_MAX + 16], image_path[PATH_MAX + 16];
static struct manifest *man;
static char *man_bytes;
static size_t man_len;
static _Atomic uint64_t wrong_bytes, bad_errors, stores, reads, hits;
static _Atomic uint64_t evictions;

static int
setup_image(void)
{
  size_t size = (size_t)(NBLOCKS - 1) * BS + LAST_LEN;
  image = malloc(size);
  if (image == NULL)
    return -1;
  uint64_t x = 0x243f6a8885a308d3u;
  for (size_t i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    image[i] = (uint8_t)x;
  }
  snprintf(image_path, sizeof image_path, "%s/image", workdir);
  FILE *fp = fopen(image_path, "wb");
  if (fp == NULL || fwrite(image, 1, size, fp) != size || fclose(fp) != 0) {
    fprintf(stdout, "blkcache-crash: write: %s: %m\n", image_path);
    return -1;
  }
  man = manifest_build("crash", image_path, BS, 1);
  if (man == NULL)
    return -1;
  man_bytes = manifest_serialize(man, &man_len);
  return man_bytes ? 0 : -1;
}

static struct blkcache *
open_cache(unsigned interval_ms)
{
  return blkcache_open(root, man, man_bytes, man_len, interval_ms);
}

/* Flips a byte of block b in the data file, behind the cache's back. */
static void
tamper(uint64_t b)
{
  char path[sizeof root + 80];
  snprintf(path, sizeof path, "%s/%s/data", root, man->version_hex);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  uint8_t v;
  off_t pos = (off_t)(b * BS + blen(b) / 2);
  if (fd < 0 || __real_pread64(fd, &v, 1, pos) != 1) {
    fprintf(stdout, "blkcache-crash: tamper: %s: %m\n", path);
    exit(2);
  }
  v ^= 0x80;
  if (__real_pwrite64(fd, &v, 1, pos) != 1) {
    fprintf(stdout, "blkcache-crash: tamper: %s: %m\n", path);
    exit(2);
  }
  close(fd);
  /* As if synced: the bytes on disk are wrong now. */
  pthread_mutex_lock(&ck_lock);
  content_ok[b] = false;
  pthread_mutex_unlock(&ck_lock);
}

/* Opens the cache with faults off and reads every block: each present
 * block must read back right, except the tampered ones (tampered[b]),
 * which must be evicted.  Returns the number present, or -1. */
static long
check_cache(const bool *tampered, bool quiet)
{
  unsigned saved = atomic_exchange(&fault_every, 0);
  struct blkcache *bc = open_cache(5);
  if (bc == NULL)
    return -1;
  long present = 0;
  uint64_t expect_evicted = 0, bad = 0;
  uint8_t buf[BS];
  for (uint64_t b = 0; b < NBLOCKS; b++) {
    bool has = blkcache_has(bc, b);
    bool t = tampered && tampered[b] && has;
    expect_evicted += t;
    int err = 0;
    int r = blkcache_read(bc, b, buf, 0, blen(b), &err);
    if (r < 0 || (t && r != 0) || (!t && r != (has ? 1 : 0)) ||
        (r == 1 && memcmp(buf, image + b * BS, blen(b)) != 0)) {
      fprintf(stdout, "blkcache-crash: block %" PRIu64 ": read %d (has %d, tampered %d)\n",
              b, r, has, t);
      bad++;
    }
    present += r == 1;
  }
  struct blkcache_stats st;
  blkcache_get_stats(bc, &st);
  if (st.corrupt_evicted != expect_evicted) {
    fprintf(stdout, "blkcache-crash: %" PRIu64 " blocks evicted as corrupt, %" PRIu64 " expected\n",
            st.corrupt_evicted, expect_evicted);
    bad++;
  }
  blkcache_close(bc);
  atomic_store(&fault_every, saved);
  if (!quiet && bad)
    fprintf(stdout, "blkcache-crash: %" PRIu64 " problems after reopen\n", bad);
  return bad ? -1 : present;
}

/* ---- order and faults ---------------------------------------------------- */

struct worker {
  pthread_t tid;
  struct blkcache *bc;
  unsigned seed;
  unsigned ops;
  bool faults;
};

static void *
worker_main(void *arg)
{
  struct worker *w = arg;
  uint8_t buf[BS];

  for (unsigned k = 0; k < w->ops; k++) {
    uint64_t b = (uint64_t)rand_r(&w->seed) % NBLOCKS;
    unsigned what = (unsigned)rand_r(&w->seed) % 100;
    if (what < 40) {
      /* Store if missing (the fetch layer's way); rewrite now and then. */
      if (!blkcache_has(w->bc, b) || what < 4) {
        /* EBUSY: the block is being evicted right now. */
        if (blkcache_store(w->bc, b, image + b * BS) < 0 && !w->faults &&
            errno != EBUSY)
          atomic_fetch_add(&bad_errors, 1);
        atomic_fetch_add(&stores, 1);
      }
    } else if (what < 98) {
      uint32_t off = (uint32_t)rand_r(&w->seed) % blen(b);
      uint32_t len = (uint32_t)rand_r(&w->seed) % (blen(b) - off) + 1;
      if (what < 60) {
        off = 0;
        len = blen(b);
      }
      int err = 0;
      int r = blkcache_read(w->bc, b, buf, off, len, &err);
      atomic_fetch_add(&reads, 1);
      if (r < 0 && (!w->faults || err != EIO))
        atomic_fetch_add(&bad_errors, 1);
      if (r == 1) {
        atomic_fetch_add(&hits, 1);
        if (memcmp(buf, image + b * BS + off, len) != 0)
          atomic_fetch_add(&wrong_bytes, 1);
      }
    } else if (what < 99) {
      /* Evict a few blocks (the reclaimer's way). */
      uint64_t v[8];
      for (unsigned j = 0; j < 8; j++)
        v[j] = (uint64_t)rand_r(&w->seed) % NBLOCKS;
      blkcache_evict(w->bc, v, 8);
      atomic_fetch_add(&evictions, 1);
    } else {
      if (blkcache_sync(w->bc) < 0 && !w->faults)
        atomic_fetch_add(&bad_errors, 1);
    }
  }
  return NULL;
}

static int
run_order(unsigned rounds, unsigned seed, bool faults)
{
  static bool tampered[NBLOCKS];
  unsigned nt = 0;

  for (unsigned round = 0; round < rounds; round++) {
    if (round % 10 == 9) {
      if (blkcache_remove(root, man->version_hex) < 0)
        return 2;
      checker_reset();
      memset(tampered, 0, sizeof tampered);
    }
    atomic_store(&fault_every, faults ? 20 : 0);
    atomic_store(&fault_seed, seed + round);
    unsigned interval = (unsigned)rand_r(&seed) % 6;
    struct blkcache *bc = open_cache(interval);
    if (bc == NULL) {
      if (faults)
        continue; /* an injected fault during open: fine */
      return 2;
    }
    struct worker w[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
      w[t] = (struct worker){ .bc = bc, .seed = seed * 31 + round * 7 + t,
                              .ops = 3000, .faults = faults };
      if (pthread_create(&w[t].tid, NULL, worker_main, &w[t]) != 0)
        return 2;
    }
    for (unsigned t = 0; t < THREADS; t++)
      pthread_join(w[t].tid, NULL);
    blkcache_close(bc);

    /* Spoil a few blocks that are on disk now, then check everything. */
    memset(tampered, 0, sizeof tampered);
    for (unsigned k = 0; k < 3; k++) {
      uint64_t b = (uint64_t)rand_r(&seed) % NBLOCKS;
      if (!tampered[b]) {
        tamper(b);
        tampered[b] = true;
        nt++;
      }
    }
    long present = check_cache(tampered, false);
    if (present < 0)
      return 1;
    memset(tampered, 0, sizeof tampered);
  }
  printf("rounds %u, stores %" PRIu64 ", reads %" PRIu64 " (hits %" PRIu64
         "), tampered %u, data syncs %" PRIu64 ", bitmap writes %" PRIu64
         ", bits checked %" PRIu64 ", faults injected %" PRIu64
         ", evictions %" PRIu64 " (holes punched %" PRIu64 ")\n",
         rounds, atomic_load(&stores), atomic_load(&reads), atomic_load(&hits),
         nt, atomic_load(&syncs), atomic_load(&bitmap_writes),
         atomic_load(&bits_checked), atomic_load(&faults_injected),
         atomic_load(&evictions), atomic_load(&punches));
  printf("violations %" PRIu64 ", wrong bytes served %" PRIu64
         ", unexpected errors %" PRIu64 "\n",
         atomic_load(&violations), atomic_load(&wrong_bytes),
         atomic_load(&bad_errors));
  return atomic_load(&violations) || atomic_load(&wrong_bytes) ||
                 atomic_load(&bad_errors)
             ? 1
             : 0;
}

/* ---- kill ------------------------------------------------------------------- */

static void __attribute__((noreturn))
kill_child(unsigned seed, bool forever)
{
  abort_on_violation = true;
  struct blkcache *bc = open_cache((unsigned)rand_r(&seed) % 4);
  if (bc == NULL)
    _exit(2);
  for (unsigned k = 0;; k++) {
    uint64_t b = (uint64_t)rand_r(&seed) % NBLOCKS;
    if (!blkcache_has(bc, b) && blkcache_store(bc, b, image + b * BS) < 0 &&
        errno != EBUSY)
      _exit(3);
    if (k % 256 == 255) {
      /* Evictions too: after the kill, no evicted block may be valid. */
      uint64_t v[16];
      for (unsigned j = 0; j < 16; j++)
        v[j] = (uint64_t)rand_r(&seed) % NBLOCKS;
      blkcache_evict(bc, v, 16);
    }
    if (!forever && k >= 4 * NBLOCKS) {
      blkcache_close(bc);
      _exit(0);
    }
    if (k % 500 == 0)
      blkcache_sync(bc);
  }
}

static int
run_kill(unsigned rounds, unsigned seed)
{
  struct timespec t0, t1;
  int status;

  clock_gettime(CLOCK_MONOTONIC, &t0);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return 2;
  if (pid == 0)
    kill_child(seed, false);
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    fprintf(stdout, "blkcache-crash: calibration child failed (status %d)\n",
            status);
    return 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long fill_us = (t1.tv_sec - t0.tv_sec) * 1000000L +
                 (t1.tv_nsec - t0.tv_nsec) / 1000;
  if (check_cache(NULL, false) < 0 ||
      blkcache_remove(root, man->version_hex) < 0)
    return 1;

  unsigned full = 0, empty = 0, failed = 0;
  uint64_t present_sum = 0;
  for (unsigned round = 0; round < rounds; round++) {
    fflush(NULL);
    pid = fork();
    if (pid < 0)
      return 2;
    if (pid == 0)
      kill_child(seed + round + 1, true);
    long us = (long)((uint64_t)rand_r(&seed) * (uint64_t)(fill_us * 5 / 4) /
                     ((uint64_t)RAND_MAX + 1));
    struct timespec ts = { us / 1000000, us % 1000000 * 1000 };
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    if (waitpid(pid, &status, 0) != pid)
      return 2;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
      fprintf(stdout, "blkcache-crash: round %u: child ended with status %d\n",
              round, status);
      failed++;
    }
    long present = check_cache(NULL, false);
    if (present < 0) {
      fprintf(stdout, "blkcache-crash: round %u: bad cache after kill\n", round);
      failed++;
      present = 0;
    }
    present_sum += (uint64_t)present;
    full += present == NBLOCKS;
    empty += present == 0;
    if (present == NBLOCKS || round % 5 == 4) {
      if (blkcache_remove(root, man->version_hex) < 0)
        return 2;
    }
  }
  printf("rounds %u (fill takes %ld us): %u ended full, %u empty, %" PRIu64
         " blocks present on average; failed rounds %u\n",
         rounds, fill_us, full, empty, rounds ? present_sum / rounds : 0,
         failed);
  return failed ? 1 : 0;
}

/* ---- main ------------------------------------------------------------------- */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  return remove(path);
}

static void
usage(void)
{
  fprintf(stderr,
          "usage: blkcache-crash order|faults|kill [-v] [-r ROUNDS] [-s SEED] DIR\n");
  exit(2);
}

int
main(int argc, char **argv)
{
  unsigned rounds = 0, seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  bool verbose = false;
  int opt;

  if (argc < 2)
    usage();
  const char *mode = argv[1];
  optind = 2;
  while ((opt = getopt(argc, argv, "r:s:v")) != -1) {
    if (opt == 'v')
      verbose = true;
    else if (opt == 'r')
      rounds = (unsigned)strtoul(optarg, NULL, 10);
    else if (opt == 's')
      seed = (unsigned)strtoul(optarg, NULL, 10);
    else
      usage();
  }
  if (optind != argc - 1)
    usage();
  bool order = strcmp(mode, "order") == 0, faults = strcmp(mode, "faults") == 0;
  bool killm = strcmp(mode, "kill") == 0;
  if (!order && !faults && !killm)
    usage();
  if (rounds == 0)
    rounds = killm ? 200 : 30;

  snprintf(workdir, sizeof workdir, "%s/blkcache-crash.XXXXXX", argv[optind]);
  if (mkdtemp(workdir) == NULL) {
    fprintf(stdout, "blkcache-crash: mkdtemp: %s: %m\n", workdir);
    return 2;
  }
  snprintf(root, sizeof root, "%s/cache", workdir);
  printf("blkcache-crash %s: seed %u\n", mode, seed);
  fflush(stdout);
  /* Tampering and injected faults make the cache log by design: unless
   * -v, its log goes to /dev/null (this program reports on stdout). */
  if (!verbose) {
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) {
      fprintf(stdout, "blkcache-crash: /dev/null: %m\n");
      return 2;
    }
    close(fd);
  }

  int r = setup_image() < 0 ? 2
          : killm           ? run_kill(rounds, seed)
                            : run_order(rounds, seed, faults);

  manifest_free(man);
  free(man_bytes);
  free(image);
  nftw(workdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  printf("blkcache-crash %s: %s\n", mode, r == 0 ? "ok" : "FAILED");
  return r;
}
