/* thunder — unit tests of the block cache (src/daemon/blkcache.c).
 *
 * Each test builds images in a private temporary directory from a seeded
 * generator, hashes them with manifest_build() (4 KiB blocks, so images
 * stay small) and opens caches under a root of its own.  Crash tests fork
 * a child that stores blocks and dies (_exit, or SIGKILL at a random time)
 * without closing its cache; the parent then reopens the cache and checks
 * that every block it claims verifies and reads back right.  Tests that
 * check a logged message capture stderr.
 */
#include <CUnit/Basic.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "blkcache.h"
#include "log.h"
#include "manifest.h"
#include "cunit-run.h"

#define BS 4096u
#define HDR 4096u /* bitmap header size (the design note in blkcache.c) */

static char tmpdir[PATH_MAX];
static unsigned test_no;

/* ---- Helpers ----------------------------------------------------------- */

/* snprintf into a PATH_MAX buffer; aborts rather than truncate. */
static void __attribute__((format(printf, 2, 3)))
xpath(char out[PATH_MAX], const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out, PATH_MAX, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= PATH_MAX)
    abort();
}

/* Deterministic bytes: a 64-bit LCG seeded by seed, one byte per step. */
static void
gen_bytes(uint8_t *buf, size_t len, uint64_t seed)
{
  uint64_t x = seed * 0x9e3779b97f4a7c15u + 1;
  for (size_t i = 0; i < len; i++) {
    x = x * 6364136223846793005u + 1442695040888963407u;
    buf[i] = (uint8_t)(x >> 56);
  }
}

static bool
write_file(const char *path, const void *data, size_t len)
{
  FILE *fp = fopen(path, "wb");
  if (fp == NULL)
    return false;
  bool ok = fwrite(data, 1, len, fp) == len;
  return fclose(fp) == 0 && ok;
}

/* An image, its bytes and its manifest. */
struct img {
  char path[PATH_MAX];
  uint8_t *bytes;
  size_t size;
  struct manifest *m;
  char *mbytes;
  size_t mlen;
};

/* Makes image name (size bytes from seed) and its manifest. */
static struct img *
img_new(const char *name, size_t size, uint64_t seed)
{
  struct img *im = calloc(1, sizeof *im);
  CU_ASSERT_PTR_NOT_NULL_FATAL(im);
  xpath(im->path, "%s/%s.img", tmpdir, name);
  im->bytes = malloc(size);
  CU_ASSERT_PTR_NOT_NULL_FATAL(im->bytes);
  im->size = size;
  gen_bytes(im->bytes, size, seed);
  CU_ASSERT_FATAL(write_file(im->path, im->bytes, size));
  im->m = manifest_build(name, im->path, BS, 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(im->m);
  im->mbytes = manifest_serialize(im->m, &im->mlen);
  CU_ASSERT_PTR_NOT_NULL_FATAL(im->mbytes);
  return im;
}

static void
img_free(struct img *im)
{
  if (im == NULL)
    return;
  unlink(im->path);
  manifest_free(im->m);
  free(im->mbytes);
  free(im->bytes);
  free(im);
}

static const uint8_t *
blk(const struct img *im, uint64_t i)
{
  return im->bytes + i * BS;
}

static uint32_t
blen(const struct img *im, uint64_t i)
{
  return manifest_block_len(im->m, i);
}

/* A fresh cache root for this test: tmpdir/rootN. */
static void
new_root(char root[PATH_MAX])
{
  xpath(root, "%s/root%u", tmpdir, ++test_no);
}

/* out = root/<version>/name. */
static void
cpath(char out[PATH_MAX], const char *root, const struct img *im,
      const char *name)
{
  xpath(out, "%s/%s/%s", root, im->m->version_hex, name);
}

static struct blkcache *
open_cache(const char *root, const struct img *im, unsigned interval_ms)
{
  return blkcache_open(root, im->m, im->mbytes, im->mlen, interval_ms);
}

static void
stats(struct blkcache *bc, struct blkcache_stats *st)
{
  memset(st, 0xff, sizeof *st);
  blkcache_get_stats(bc, st);
}

/* Reads block i whole and checks it equals the image; returns the read's
 * result. */
static int
read_check(struct blkcache *bc, const struct img *im, uint64_t i)
{
  uint8_t buf[BS];
  int err = 0;
  memset(buf, 0, sizeof buf);
  int r = blkcache_read(bc, i, buf, 0, blen(im, i), &err);
  if (r == 1)
    CU_ASSERT(memcmp(buf, blk(im, i), blen(im, i)) == 0);
  return r;
}

/* Flips one byte of a file at pos. */
static void
flip_byte(const char *path, uint64_t pos)
{
  int fd = open(path, O_RDWR | O_CLOEXEC);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t b;
  CU_ASSERT_FATAL(pread(fd, &b, 1, (off_t)pos) == 1);
  b ^= 0x5a;
  CU_ASSERT_FATAL(pwrite(fd, &b, 1, (off_t)pos) == 1);
  close(fd);
}

/* Bit i of the on-disk bitmap of the cache of im under root. */
static int
disk_bit(const char *root, const struct img *im, uint64_t i)
{
  char path[PATH_MAX];
  cpath(path, root, im, "bitmap");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  uint8_t b;
  ssize_t r = pread(fd, &b, 1, (off_t)(HDR + i / 8));
  close(fd);
  return r == 1 ? (b >> (i % 8)) & 1 : -1;
}

static off_t
file_size(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? st.st_size : -1;
}

/* stderr capture: what is logged between capture_begin and capture_end. */
static int saved_stderr = -1;
static char captured[16384];

static void
capture_begin(void)
{
  char path[PATH_MAX];
  xpath(path, "%s/stderr.txt", tmpdir);
  fflush(stderr);
  saved_stderr = dup(STDERR_FILENO);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  dup2(fd, STDERR_FILENO);
  close(fd);
}

static const char *
capture_end(void)
{
  char path[PATH_MAX];
  xpath(path, "%s/stderr.txt", tmpdir);
  fflush(stderr);
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  saved_stderr = -1;
  memset(captured, 0, sizeof captured);
  FILE *fp = fopen(path, "r");
  if (fp) {
    size_t n = fread(captured, 1, sizeof captured - 1, fp);
    captured[n] = '\0';
    fclose(fp);
  }
  unlink(path);
  return captured;
}

/* The same through a pipe (at most 64 KiB), for a test that limits the
 * size of files it may write. */
static int pipe_rd = -1;

static void
capture_pipe_begin(void)
{
  int p[2];
  fflush(stderr);
  if (pipe(p) == -1)
    abort();
  saved_stderr = dup(STDERR_FILENO);
  dup2(p[1], STDERR_FILENO);
  close(p[1]);
  pipe_rd = p[0];
}

static const char *
capture_pipe_end(void)
{
  fflush(stderr);
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  saved_stderr = -1;
  memset(captured, 0, sizeof captured);
  size_t got = 0;
  ssize_t n;
  while (got < sizeof captured - 1 &&
         (n = read(pipe_rd, captured + got, sizeof captured - 1 - got)) > 0)
    got += (size_t)n;
  close(pipe_rd);
  pipe_rd = -1;
  return captured;
}

static int
count_lines(const char *s)
{
  int n = 0;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

/* Stores every block of im. */
static void
store_all(struct blkcache *bc, const struct img *im)
{
  for (uint64_t i = 0; i < im->m->nblocks; i++)
    CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);
}

/* ---- Basic store and read ---------------------------------------------- */

static void
test_store_has_read_whole(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("whole", 8 * BS, 1);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);

  for (uint64_t i = 0; i < 8; i += 2) {
    CU_ASSERT_FALSE(blkcache_has(bc, i));
    CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);
    CU_ASSERT_TRUE(blkcache_has(bc, i));
  }
  for (uint64_t i = 0; i < 8; i++) {
    CU_ASSERT_EQUAL(blkcache_has(bc, i), i % 2 == 0);
    CU_ASSERT_EQUAL(read_check(bc, im, i), i % 2 == 0 ? 1 : 0);
  }
  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_blocks, 4);
  CU_ASSERT_EQUAL(st.present_bytes, 4 * BS);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 0);
  CU_ASSERT_EQUAL(blkcache_sync(bc), 0);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.valid_blocks, 4);
  CU_ASSERT(st.commits >= 1);
  blkcache_close(bc);
  img_free(im);
}

static void
test_read_parts(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("parts", 4 * BS, 2);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_EQUAL(blkcache_store(bc, 2, blk(im, 2)), 0);

  static const uint32_t parts[][2] = {
    { 0, 1 }, { 0, 512 }, { 1, 1 }, { 100, 3000 }, { BS - 1, 1 },
    { 512, BS - 512 }, { BS, 0 }, { 7, 0 }, { 0, BS },
  };
  for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
    uint8_t buf[BS + 16];
    int err = 0;
    memset(buf, 0xee, sizeof buf);
    CU_ASSERT_EQUAL(blkcache_read(bc, 2, buf, parts[k][0], parts[k][1], &err), 1);
    CU_ASSERT(memcmp(buf, blk(im, 2) + parts[k][0], parts[k][1]) == 0);
    CU_ASSERT_EQUAL(buf[parts[k][1]], 0xee); /* nothing written past len */
  }
  blkcache_close(bc);
  img_free(im);
}

static void
test_short_last_block(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("short", 5 * BS + 1000, 3);
  CU_ASSERT_EQUAL_FATAL(im->m->nblocks, 6);
  CU_ASSERT_EQUAL(blen(im, 5), 1000);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_EQUAL(blkcache_store(bc, 5, blk(im, 5)), 0);
  CU_ASSERT_EQUAL(read_check(bc, im, 5), 1);

  uint8_t buf[BS];
  int err = 0;
  CU_ASSERT_EQUAL(blkcache_read(bc, 5, buf, 990, 10, &err), 1);
  CU_ASSERT(memcmp(buf, blk(im, 5) + 990, 10) == 0);
  /* Past the end of the short block: refused. */
  err = 0;
  capture_begin();
  CU_ASSERT_EQUAL(blkcache_read(bc, 5, buf, 990, 11, &err), -1);
  const char *msg = capture_end();
  CU_ASSERT_EQUAL(err, EINVAL);
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "error: cache: read: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "block 5"));

  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_bytes, 1000);
  blkcache_close(bc);

  /* After reopening, the short block verifies too. */
  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_EQUAL(blkcache_read(bc, 5, buf, 500, 500, &err), 1);
  CU_ASSERT(memcmp(buf, blk(im, 5) + 500, 500) == 0);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 0);
  blkcache_close(bc);
  img_free(im);
}

/* blkcache_read_run: one pread over the verified blocks from the first
 * on, clipped to len; a block absent or not verified yet ends the run. */
static void
test_read_run(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("run", 5 * BS + 1000, 4);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  for (uint64_t i = 1; i <= 5; i++)
    if (i != 4)
      CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);

  static uint8_t buf[4 * BS];
  int err = 0;
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 0, 0, BS, buf, &err), 0);
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 4, 0, 2 * BS, buf, &err), 0);
  /* Blocks 1-3 from 100 on, in one read; block 4 is absent. */
  memset(buf, 0xee, sizeof buf);
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 1, 100, 4 * BS - 100, buf, &err),
                  3 * BS - 100);
  CU_ASSERT(memcmp(buf, blk(im, 1) + 100, BS - 100) == 0);
  CU_ASSERT(memcmp(buf + BS - 100, blk(im, 2), BS) == 0);
  CU_ASSERT(memcmp(buf + 2 * BS - 100, blk(im, 3), BS) == 0);
  CU_ASSERT_EQUAL(buf[3 * BS - 100], 0xee);
  /* Clipped to len, inside block 2. */
  memset(buf, 0xee, sizeof buf);
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 1, 0, BS + 10, buf, &err), BS + 10);
  CU_ASSERT(memcmp(buf + BS, blk(im, 2), 10) == 0);
  CU_ASSERT_EQUAL(buf[BS + 10], 0xee);
  /* The short last block, and an offset past it. */
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 5, 990, 100, buf, &err), 10);
  CU_ASSERT(memcmp(buf, blk(im, 5) + 990, 10) == 0);
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 5, 1000, 10, buf, &err), 0);
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 6, 0, 10, buf, &err), 0);
  CU_ASSERT_EQUAL(blkcache_sync(bc), 0);
  blkcache_close(bc);

  /* Reopened: valid on disk but not verified yet, so no run until a
   * blkcache_read has verified the block. */
  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 1, 0, 2 * BS, buf, &err), 0);
  CU_ASSERT_EQUAL(read_check(bc, im, 1), 1);
  CU_ASSERT_EQUAL(blkcache_read_run(bc, 1, 0, 2 * BS, buf, &err), BS);
  CU_ASSERT(memcmp(buf, blk(im, 1), BS) == 0);
  blkcache_close(bc);
  img_free(im);
}

/* A disk that refuses every write (RLIMIT_FSIZE: EFBIG, as ENOSPC would
 * be) fails every store; the log gets one line per 10 s, not one a
 * block, and the next line counts the ones suppressed. */
static void
test_store_errors_ratelimited(void)
{
  char root[PATH_MAX];
  new_root(root);
  const uint64_t n = 64;
  struct img *im = img_new("full", n * BS, 6);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);

  struct rlimit old, rl;
  CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &old), 0);
  rl = old;
  rl.rlim_cur = 1;
  signal(SIGXFSZ, SIG_IGN);
  log_set_ratelimit_ms(LOG_RATELIMIT_MS);
  CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &rl), 0);
  capture_pipe_begin();
  unsigned failed = 0;
  for (uint64_t i = 1; i < n; i++)
    failed += blkcache_store(bc, i, blk(im, i)) == -1;
  const char *msg = capture_pipe_end();
  setrlimit(RLIMIT_FSIZE, &old);
  CU_ASSERT_EQUAL(failed, n - 1);
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "error: cache: write: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "File too large"));

  /* With no limit (as in the other tests) each failure is a line, and
   * the first one says how many were suppressed before it. */
  log_set_ratelimit_ms(0);
  CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &rl), 0);
  capture_pipe_begin();
  for (uint64_t i = 1; i < 4; i++)
    CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), -1);
  msg = capture_pipe_end();
  setrlimit(RLIMIT_FSIZE, &old);
  CU_ASSERT_EQUAL(count_lines(msg), 3);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "(62 similar messages suppressed)"));

  CU_ASSERT_EQUAL(blkcache_store(bc, 1, blk(im, 1)), 0);
  blkcache_close(bc);
  img_free(im);
}

static void
test_not_stored(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("absent", 3 * BS, 4);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  uint8_t buf[BS];
  int err = 0;
  for (uint64_t i = 0; i < 3; i++) {
    CU_ASSERT_FALSE(blkcache_has(bc, i));
    CU_ASSERT_EQUAL(blkcache_read(bc, i, buf, 0, BS, &err), 0);
    CU_ASSERT_EQUAL(blkcache_read(bc, i, buf, 10, 20, &err), 0);
  }
  CU_ASSERT_FALSE(blkcache_has(bc, 3));
  CU_ASSERT_FALSE(blkcache_has(bc, UINT64_MAX));
  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_blocks, 0);
  CU_ASSERT_EQUAL(st.present_bytes, 0);
  CU_ASSERT_EQUAL(st.valid_blocks, 0);
  CU_ASSERT_EQUAL(st.commits, 0);
  blkcache_close(bc);
  img_free(im);
}

static void
test_bad_index(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("badidx", 3 * BS, 5);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  uint8_t buf[BS];
  int err = 0;

  capture_begin();
  CU_ASSERT_EQUAL(blkcache_read(bc, 3, buf, 0, 1, &err), -1);
  const char *msg = capture_end();
  CU_ASSERT_EQUAL(err, EINVAL);
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "Invalid argument"));

  capture_begin();
  CU_ASSERT_EQUAL(blkcache_store(bc, 3, blk(im, 0)), -1);
  msg = capture_end();
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "error: cache: store: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "block 3: Invalid argument"));

  /* off + len overflowing 32 bits is refused, not wrapped. */
  err = 0;
  capture_begin();
  CU_ASSERT_EQUAL(blkcache_read(bc, 0, buf, 1, UINT32_MAX, &err), -1);
  capture_end();
  CU_ASSERT_EQUAL(err, EINVAL);
  blkcache_close(bc);
  img_free(im);
}

/* ---- Layout ------------------------------------------------------------ */

static void
test_layout(void)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new("layout", 20 * BS + 5, 6); /* 21 blocks */
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);

  xpath(path, "%s/%s", root, im->m->version_hex);
  struct stat st;
  CU_ASSERT_FATAL(stat(path, &st) == 0);
  CU_ASSERT(S_ISDIR(st.st_mode));
  CU_ASSERT_EQUAL(st.st_mode & 07777, 0700);

  cpath(path, root, im, "data");
  CU_ASSERT_EQUAL(file_size(path), (off_t)im->size);
  CU_ASSERT_FATAL(stat(path, &st) == 0);
  CU_ASSERT_EQUAL(st.st_blocks, 0); /* sparse */

  cpath(path, root, im, "bitmap");
  CU_ASSERT_EQUAL(file_size(path), HDR + 3);
  FILE *fp = fopen(path, "rb");
  CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
  uint8_t hdr[56];
  CU_ASSERT_EQUAL(fread(hdr, 1, sizeof hdr, fp), sizeof hdr);
  fclose(fp);
  CU_ASSERT(memcmp(hdr, "THNDBMP1", 8) == 0);
  CU_ASSERT_EQUAL(hdr[8], 1);             /* format, LE */
  CU_ASSERT_EQUAL(hdr[12] | hdr[13] << 8, BS); /* block size */
  CU_ASSERT_EQUAL(hdr[16], 21);           /* nblocks */
  CU_ASSERT(memcmp(hdr + 24, im->m->version, 32) == 0);

  cpath(path, root, im, "manifest.json");
  CU_ASSERT_EQUAL(file_size(path), (off_t)im->mlen);
  fp = fopen(path, "rb");
  CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
  char *buf = malloc(im->mlen);
  CU_ASSERT_EQUAL(fread(buf, 1, im->mlen, fp), im->mlen);
  fclose(fp);
  CU_ASSERT(memcmp(buf, im->mbytes, im->mlen) == 0);
  free(buf);

  /* Block 9's bit (byte 1, bit 1) once synced. */
  CU_ASSERT_EQUAL(blkcache_store(bc, 9, blk(im, 9)), 0);
  CU_ASSERT_EQUAL(blkcache_sync(bc), 0);
  CU_ASSERT_EQUAL(disk_bit(root, im, 9), 1);
  CU_ASSERT_EQUAL(disk_bit(root, im, 8), 0);
  CU_ASSERT_EQUAL(disk_bit(root, im, 10), 0);
  blkcache_close(bc);
  img_free(im);
}

static void
test_open_bad_manifest_bytes(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("badbytes", 2 * BS, 7);
  im->mbytes[10] ^= 1;
  capture_begin();
  struct blkcache *bc = open_cache(root, im, 5);
  const char *msg = capture_end();
  CU_ASSERT_PTR_NULL(bc);
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "error: cache: open: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not this version"));
  im->mbytes[10] ^= 1;
  img_free(im);
}

static void
test_open_twice_busy(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("busy", 2 * BS, 8);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  capture_begin();
  struct blkcache *bc2 = open_cache(root, im, 5);
  const char *msg = capture_end();
  CU_ASSERT_PTR_NULL(bc2);
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "error: cache: lock: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "busy"));
  blkcache_close(bc);
  bc2 = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL(bc2);
  blkcache_close(bc2);
  img_free(im);
}

/* ---- Persistence and verification ---------------------------------------- */

static void
test_reopen_verified_on_first_read(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("reopen", 10 * BS + 77, 9);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  for (uint64_t i = 0; i < 11; i += 3)
    CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);
  CU_ASSERT_EQUAL(blkcache_sync(bc), 0);
  blkcache_close(bc);

  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_blocks, 4);
  CU_ASSERT_EQUAL(st.valid_blocks, 4);
  CU_ASSERT_EQUAL(st.present_bytes, 4 * BS);
  for (uint64_t i = 0; i < 11; i++) {
    CU_ASSERT_EQUAL(blkcache_has(bc, i), i % 3 == 0);
    CU_ASSERT_EQUAL(read_check(bc, im, i), i % 3 == 0 ? 1 : 0);
    CU_ASSERT_EQUAL(read_check(bc, im, i), i % 3 == 0 ? 1 : 0);
  }
  /* A part read as the first read verifies the whole block. */
  blkcache_close(bc);
  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  uint8_t buf[16];
  int err = 0;
  CU_ASSERT_EQUAL(blkcache_read(bc, 3, buf, 4000, 16, &err), 1);
  CU_ASSERT(memcmp(buf, blk(im, 3) + 4000, 16) == 0);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 0);
  CU_ASSERT_EQUAL(st.commits, 0); /* nothing to commit */
  blkcache_close(bc);
  img_free(im);
}

/* Flips a byte of block 4 after it was cached; reads it (whole or a part)
 * after reopening. */
static void
flipped_byte(bool whole)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new(whole ? "flipw" : "flipp", 8 * BS, 10);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  store_all(bc, im);
  blkcache_close(bc);

  cpath(path, root, im, "data");
  flip_byte(path, 4 * BS + 1234);

  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_TRUE(blkcache_has(bc, 4));
  uint8_t buf[BS];
  int err = 0;
  capture_begin();
  int r = whole ? blkcache_read(bc, 4, buf, 0, BS, &err)
                : blkcache_read(bc, 4, buf, 10, 100, &err);
  const char *msg = capture_end();
  CU_ASSERT_EQUAL(r, 0);
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "warn: cache: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "block 4 "));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, im->m->version_hex));
  CU_ASSERT_FALSE(blkcache_has(bc, 4));
  CU_ASSERT_EQUAL(blkcache_read(bc, 4, buf, 0, BS, &err), 0);

  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 1);
  CU_ASSERT_EQUAL(st.present_blocks, 7);
  CU_ASSERT_EQUAL(st.valid_blocks, 7);
  /* The others are fine. */
  for (uint64_t i = 0; i < 8; i++)
    if (i != 4)
      CU_ASSERT_EQUAL(read_check(bc, im, i), 1);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 1);
  blkcache_close(bc);

  /* The eviction was persisted. */
  CU_ASSERT_EQUAL(disk_bit(root, im, 4), 0);
  CU_ASSERT_EQUAL(disk_bit(root, im, 3), 1);
  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_FALSE(blkcache_has(bc, 4));
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_blocks, 7);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 0);
  /* Refetched: stored again, served again. */
  CU_ASSERT_EQUAL(blkcache_store(bc, 4, blk(im, 4)), 0);
  CU_ASSERT_EQUAL(read_check(bc, im, 4), 1);
  blkcache_close(bc);
  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_EQUAL(read_check(bc, im, 4), 1);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 0);
  blkcache_close(bc);
  img_free(im);
}

static void
test_flipped_byte_whole_read(void)
{
  flipped_byte(true);
}

static void
test_flipped_byte_part_read(void)
{
  flipped_byte(false);
}

static void
test_eviction_persisted_without_close(void)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new("evsync", 4 * BS, 11);
  struct blkcache *bc = open_cache(root, im, 10000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  store_all(bc, im);
  blkcache_close(bc);
  cpath(path, root, im, "data");
  flip_byte(path, 2 * BS);

  bc = open_cache(root, im, 10000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  capture_begin();
  CU_ASSERT_EQUAL(read_check(bc, im, 2), 0);
  capture_end();
  CU_ASSERT_EQUAL(disk_bit(root, im, 2), 1); /* not yet: interval 10 s */
  CU_ASSERT_EQUAL(blkcache_sync(bc), 0);
  CU_ASSERT_EQUAL(disk_bit(root, im, 2), 0);
  CU_ASSERT_EQUAL(disk_bit(root, im, 1), 1);
  blkcache_close(bc);
  img_free(im);
}

/* ---- Crashes -------------------------------------------------------------- */

/* Reopens and reads every block: each present one must verify and match.
 * Returns the number present. */
static uint64_t
check_after_crash(const char *root, const struct img *im)
{
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  uint64_t present = 0;
  for (uint64_t i = 0; i < im->m->nblocks; i++) {
    bool has = blkcache_has(bc, i);
    int r = read_check(bc, im, i);
    CU_ASSERT_EQUAL(r, has ? 1 : 0);
    present += r == 1;
  }
  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 0);
  CU_ASSERT_EQUAL(st.present_blocks, present);
  blkcache_close(bc);
  return present;
}

static void
test_crash_exit_without_sync(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("crash1", 64 * BS, 12);

  fflush(NULL);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    struct blkcache *bc = open_cache(root, im, 3);
    if (bc == NULL)
      _exit(2);
    for (uint64_t i = 0; i < im->m->nblocks; i++)
      if (blkcache_store(bc, i, blk(im, i)) < 0)
        _exit(3);
    _exit(0); /* no sync, no close */
  }
  int status;
  CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  uint64_t present = check_after_crash(root, im);
  CU_ASSERT(present <= im->m->nblocks);

  /* Now store what is missing and close properly: all there. */
  struct blkcache *bc = open_cache(root, im, 3);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  for (uint64_t i = 0; i < im->m->nblocks; i++)
    if (!blkcache_has(bc, i))
      CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);
  blkcache_close(bc);
  CU_ASSERT_EQUAL(check_after_crash(root, im), im->m->nblocks);
  img_free(im);
}

/* Child of the kill test: stores the missing blocks in random order, then
 * (if forever) keeps rewriting random ones (identical bytes), syncing now
 * and then, until it is killed. */
static void __attribute__((noreturn))
kill_child(const char *root, const struct img *im, unsigned seed, bool forever)
{
  struct blkcache *bc = open_cache(root, im, 1);
  if (bc == NULL)
    _exit(2);
  uint64_t n = im->m->nblocks;
  uint64_t *order = malloc(n * sizeof *order);
  if (order == NULL)
    _exit(2);
  for (uint64_t i = 0; i < n; i++)
    order[i] = i;
  for (uint64_t i = n - 1; i > 0; i--) {
    uint64_t j = (uint64_t)rand_r(&seed) % (i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (uint64_t i = 0; i < n; i++)
    if (!blkcache_has(bc, order[i]) &&
        blkcache_store(bc, order[i], blk(im, order[i])) < 0)
      _exit(3);
  if (!forever) {
    blkcache_close(bc);
    free(order);
    _exit(0);
  }
  for (unsigned k = 0;; k++) {
    uint64_t i = (uint64_t)rand_r(&seed) % n;
    if (blkcache_store(bc, i, blk(im, i)) < 0)
      _exit(3);
    if (k % 64 == 0)
      blkcache_sync(bc);
  }
}

static void
test_crash_kill_rounds(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("crashk", 2048 * BS, 13);
  unsigned seed = (unsigned)time(NULL);
  unsigned full = 0, empty = 0, failures = CU_get_number_of_failures();

  /* How long one child takes to fill the cache here: kills land anywhere
   * in [0, 1.25 × that). */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  fflush(NULL);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0)
    kill_child(root, im, seed, false);
  int status;
  CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
  CU_ASSERT_FATAL(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long fill_us = (t1.tv_sec - t0.tv_sec) * 1000000L +
                 (t1.tv_nsec - t0.tv_nsec) / 1000;
  CU_ASSERT_EQUAL(check_after_crash(root, im), im->m->nblocks);
  CU_ASSERT_EQUAL(blkcache_remove(root, im->m->version_hex), 0);

  for (int round = 0; round < 50; round++) {
    fflush(NULL);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0)
      kill_child(root, im, seed + (unsigned)round, true);
    long us = (long)((uint64_t)rand_r(&seed) * (uint64_t)(fill_us * 5 / 4) /
                     ((uint64_t)RAND_MAX + 1));
    struct timespec ts = { us / 1000000, us % 1000000 * 1000 };
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    uint64_t present = check_after_crash(root, im);
    if (getenv("TEST_VERBOSE"))
      fprintf(stderr, " %" PRIu64, present);
    full += present == im->m->nblocks;
    empty += present == 0;
    /* Start again from empty now and then, so that kills keep landing
     * while blocks are being filled in. */
    if (present == im->m->nblocks || round % 5 == 4)
      CU_ASSERT_EQUAL(blkcache_remove(root, im->m->version_hex), 0);
  }
  if (CU_get_number_of_failures() > failures)
    fprintf(stderr, "crash rounds: seed %u\n", seed);
  if (getenv("TEST_VERBOSE"))
    fprintf(stderr, "crash rounds: fill %ld us, %u full, %u empty of 50\n",
            fill_us, full, empty);
  img_free(im);
}

/* ---- Versions and hostile directories -------------------------------------- */

static void
test_new_version_new_dir(void)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *a = img_new("ver", 6 * BS, 14);
  struct blkcache *bc = open_cache(root, a, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  store_all(bc, a);
  blkcache_close(bc);

  /* The same image name with one byte changed: a new version. */
  struct img *b = img_new("ver", 6 * BS, 14);
  b->bytes[3 * BS] ^= 1;
  CU_ASSERT_FATAL(write_file(b->path, b->bytes, b->size));
  manifest_free(b->m);
  free(b->mbytes);
  b->m = manifest_build("ver", b->path, BS, 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b->m);
  b->mbytes = manifest_serialize(b->m, &b->mlen);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b->mbytes);
  CU_ASSERT_STRING_NOT_EQUAL(a->m->version_hex, b->m->version_hex);

  bc = open_cache(root, b, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  for (uint64_t i = 0; i < 6; i++) {
    CU_ASSERT_FALSE(blkcache_has(bc, i));
    CU_ASSERT_EQUAL(read_check(bc, b, i), 0);
  }
  CU_ASSERT_EQUAL(blkcache_store(bc, 3, blk(b, 3)), 0);
  CU_ASSERT_EQUAL(read_check(bc, b, 3), 1);
  blkcache_close(bc);

  /* The old version's cache is untouched. */
  cpath(path, root, a, "data");
  CU_ASSERT_EQUAL(file_size(path), (off_t)a->size);
  CU_ASSERT_EQUAL(check_after_crash(root, a), 6);
  img_free(b);
  img_free(a);
}

/* Stores blocks 0..3 of a 6-block image, closes, lets damage() spoil the
 * directory, then reopens: the cache must be empty, with one warning
 * containing why (none if why is NULL), and work normally afterwards. */
static void
reset_case(const char *name, void (*damage)(const char *root,
                                            const struct img *im),
           const char *why)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new(name, 6 * BS - 100, 15);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  for (uint64_t i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);
  blkcache_close(bc);

  damage(root, im);

  capture_begin();
  bc = open_cache(root, im, 5);
  const char *msg = capture_end();
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_EQUAL(count_lines(msg), why ? 1 : 0);
  if (why) {
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "warn: cache: "));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, why));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, im->m->version_hex));
  }
  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_blocks, 0);
  CU_ASSERT_EQUAL(st.valid_blocks, 0);
  for (uint64_t i = 0; i < 6; i++) {
    CU_ASSERT_FALSE(blkcache_has(bc, i));
    CU_ASSERT_EQUAL(read_check(bc, im, i), 0);
  }
  /* Reset for real: right sizes, right manifest, empty bitmap. */
  cpath(path, root, im, "data");
  CU_ASSERT_EQUAL(file_size(path), (off_t)im->size);
  cpath(path, root, im, "bitmap");
  CU_ASSERT_EQUAL(file_size(path), HDR + 1);
  cpath(path, root, im, "manifest.json");
  CU_ASSERT_EQUAL(file_size(path), (off_t)im->mlen);
  CU_ASSERT_EQUAL(disk_bit(root, im, 0), 0);

  CU_ASSERT_EQUAL(blkcache_store(bc, 5, blk(im, 5)), 0);
  blkcache_close(bc);
  capture_begin();
  CU_ASSERT_EQUAL(check_after_crash(root, im), 1);
  msg = capture_end();
  CU_ASSERT_EQUAL(count_lines(msg), 0); /* no second reset */
  img_free(im);
}

static void
overwrite(const char *root, const struct img *im, const char *name,
          const void *bytes, size_t len)
{
  char path[PATH_MAX];
  cpath(path, root, im, name);
  CU_ASSERT_FATAL(write_file(path, bytes, len));
}

static void
damage_bitmap_garbage(const char *root, const struct img *im)
{
  uint8_t junk[HDR + 1];
  gen_bytes(junk, sizeof junk, 99);
  overwrite(root, im, "bitmap", junk, sizeof junk);
}

static void
damage_bitmap_short(const char *root, const struct img *im)
{
  char path[PATH_MAX];
  cpath(path, root, im, "bitmap");
  CU_ASSERT_FATAL(truncate(path, 100) == 0);
}

static void
damage_bitmap_long(const char *root, const struct img *im)
{
  char path[PATH_MAX];
  cpath(path, root, im, "bitmap");
  CU_ASSERT_FATAL(truncate(path, HDR + 2) == 0);
}

static void
damage_bitmap_empty(const char *root, const struct img *im)
{
  overwrite(root, im, "bitmap", "", 0);
}

/* Patches 8 bytes of the bitmap header at off with v (LE). */
static void
patch_header(const char *root, const struct img *im, off_t off, uint64_t v)
{
  char path[PATH_MAX];
  cpath(path, root, im, "bitmap");
  int fd = open(path, O_RDWR | O_CLOEXEC);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(v >> (8 * i));
  CU_ASSERT_FATAL(pwrite(fd, b, 8, off) == 8);
  close(fd);
}

static void
damage_bitmap_magic(const char *root, const struct img *im)
{
  patch_header(root, im, 0, 0x32504d42444e4854u); /* "THNDBMP2" */
}

static void
damage_bitmap_nblocks(const char *root, const struct img *im)
{
  patch_header(root, im, 16, 7);
}

static void
damage_bitmap_block_size(const char *root, const struct img *im)
{
  patch_header(root, im, 8, (uint64_t)8192 << 32 | 1);
}

static void
damage_bitmap_digest(const char *root, const struct img *im)
{
  patch_header(root, im, 40, 0x0123456789abcdefu);
}

static void
damage_bitmap_missing(const char *root, const struct img *im)
{
  char path[PATH_MAX];
  cpath(path, root, im, "bitmap");
  CU_ASSERT_FATAL(unlink(path) == 0);
}

static void
damage_bitmap_symlink(const char *root, const struct img *im)
{
  char path[PATH_MAX], target[PATH_MAX];
  cpath(path, root, im, "bitmap");
  xpath(target, "%s.keep", path);
  CU_ASSERT_FATAL(rename(path, target) == 0);
  CU_ASSERT_FATAL(symlink(target, path) == 0);
}

static void
damage_data_short(const char *root, const struct img *im)
{
  char path[PATH_MAX];
  cpath(path, root, im, "data");
  CU_ASSERT_FATAL(truncate(path, (off_t)im->size - 1) == 0);
}

static void
damage_data_long(const char *root, const struct img *im)
{
  char path[PATH_MAX];
  cpath(path, root, im, "data");
  CU_ASSERT_FATAL(truncate(path, (off_t)im->size + BS) == 0);
}

static void
damage_data_dir(const char *root, const struct img *im)
{
  char path[PATH_MAX];
  cpath(path, root, im, "data");
  CU_ASSERT_FATAL(unlink(path) == 0);
  CU_ASSERT_FATAL(mkdir(path, 0700) == 0);
}

static void
damage_data_missing(const char *root, const struct img *im)
{
  char path[PATH_MAX];
  cpath(path, root, im, "data");
  CU_ASSERT_FATAL(unlink(path) == 0);
}

static void
damage_manifest_other(const char *root, const struct img *im)
{
  char *copy = malloc(im->mlen);
  CU_ASSERT_FATAL(copy != NULL);
  memcpy(copy, im->mbytes, im->mlen);
  copy[im->mlen / 2] ^= 1;
  overwrite(root, im, "manifest.json", copy, im->mlen);
  free(copy);
}

static void
damage_manifest_garbage(const char *root, const struct img *im)
{
  uint8_t junk[300];
  gen_bytes(junk, sizeof junk, 7);
  overwrite(root, im, "manifest.json", junk, sizeof junk);
}

static void
damage_manifest_fifo(const char *root, const struct img *im)
{
  char path[PATH_MAX];
  cpath(path, root, im, "manifest.json");
  CU_ASSERT_FATAL(unlink(path) == 0);
  CU_ASSERT_FATAL(mkfifo(path, 0600) == 0);
}

#define RESET_TEST(what, why)                                                  \
  static void test_reset_##what(void)                                         \
  {                                                                            \
    reset_case(#what, damage_##what, why);                                     \
  }
RESET_TEST(bitmap_garbage, "bad magic")
RESET_TEST(bitmap_short, "bitmap has the wrong size")
RESET_TEST(bitmap_long, "bitmap has the wrong size")
RESET_TEST(bitmap_empty, "bitmap has the wrong size")
RESET_TEST(bitmap_magic, "bad magic")
RESET_TEST(bitmap_nblocks, "bitmap header does not match")
RESET_TEST(bitmap_block_size, "bitmap header does not match")
RESET_TEST(bitmap_digest, "bitmap header does not match")
RESET_TEST(bitmap_missing, NULL) /* nothing was valid: quiet */
RESET_TEST(bitmap_symlink, "bitmap is not a regular file")
RESET_TEST(data_short, "data has the wrong size")
RESET_TEST(data_long, "data has the wrong size")
RESET_TEST(data_dir, "data is not a regular file")
RESET_TEST(data_missing, "data is missing")
RESET_TEST(manifest_other, "manifest.json differs")
RESET_TEST(manifest_garbage, "manifest.json differs")
RESET_TEST(manifest_fifo, "manifest.json is not a regular file")

/* A valid header over a body of all ones: every block claims to be there.
 * The stored ones verify; the others are evicted, never served. */
static void
test_bitmap_body_all_ones(void)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new("ones", 13 * BS, 16);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  for (uint64_t i = 0; i < 13; i += 4)
    CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);
  blkcache_close(bc);

  cpath(path, root, im, "bitmap");
  int fd = open(path, O_RDWR | O_CLOEXEC);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t ones[2] = { 0xff, 0xff };
  CU_ASSERT_FATAL(pwrite(fd, ones, 2, HDR) == 2);
  close(fd);

  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_blocks, 13); /* bits past block 12 ignored */
  capture_begin();
  for (uint64_t i = 0; i < 13; i++)
    CU_ASSERT_EQUAL(read_check(bc, im, i), i % 4 == 0 ? 1 : 0);
  const char *msg = capture_end();
  CU_ASSERT_EQUAL(count_lines(msg), 9);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 9);
  CU_ASSERT_EQUAL(st.present_blocks, 4);
  blkcache_close(bc);
  CU_ASSERT_EQUAL(check_after_crash(root, im), 4);
  img_free(im);
}

static void
test_manifest_json_missing_kept(void)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new("mfmissing", 3 * BS, 17);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  store_all(bc, im);
  blkcache_close(bc);
  cpath(path, root, im, "manifest.json");
  CU_ASSERT_FATAL(unlink(path) == 0);

  capture_begin();
  bc = open_cache(root, im, 5);
  const char *msg = capture_end();
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_EQUAL(count_lines(msg), 0);
  CU_ASSERT_EQUAL(file_size(path), (off_t)im->mlen);
  for (uint64_t i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(read_check(bc, im, i), 1);
  blkcache_close(bc);
  img_free(im);
}

static void
test_read_error_truncated_data(void)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new("trunc", 4 * BS, 18);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  store_all(bc, im);
  cpath(path, root, im, "data");
  CU_ASSERT_FATAL(truncate(path, 2 * BS + 10) == 0);

  uint8_t buf[BS];
  int err = 0;
  capture_begin();
  CU_ASSERT_EQUAL(blkcache_read(bc, 3, buf, 0, BS, &err), -1);
  const char *msg = capture_end();
  CU_ASSERT_EQUAL(err, EIO);
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "error: cache: read: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "/data: block 3: Input/output error"));
  /* Reading up to the new end still works. */
  CU_ASSERT_EQUAL(blkcache_read(bc, 2, buf, 0, 10, &err), 1);
  blkcache_close(bc);

  /* Reopen notices the size and resets. */
  capture_begin();
  bc = open_cache(root, im, 5);
  msg = capture_end();
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "data has the wrong size"));
  CU_ASSERT_FALSE(blkcache_has(bc, 0));
  blkcache_close(bc);
  img_free(im);
}

/* ---- Commits ----------------------------------------------------------- */

static void
test_commit_batching(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("batch", 600 * BS, 19);
  struct blkcache *bc = open_cache(root, im, 60000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  struct blkcache_stats st;

  for (uint64_t i = 0; i < 10; i++)
    CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);
  usleep(50000);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_blocks, 10);
  CU_ASSERT_EQUAL(st.valid_blocks, 0); /* waiting for its interval */
  CU_ASSERT_EQUAL(st.commits, 0);
  CU_ASSERT_EQUAL(disk_bit(root, im, 0), 0);
  CU_ASSERT_EQUAL(blkcache_sync(bc), 0);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.valid_blocks, 10);
  CU_ASSERT_EQUAL(st.commits, 1);
  CU_ASSERT_EQUAL(disk_bit(root, im, 9), 1);
  CU_ASSERT_EQUAL(blkcache_sync(bc), 0); /* nothing to do */
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.commits, 1);

  /* 256 pending commit without waiting for the interval. */
  for (uint64_t i = 10; i < 10 + 256; i++)
    CU_ASSERT_EQUAL(blkcache_store(bc, i, blk(im, i)), 0);
  for (int k = 0; k < 500; k++) {
    stats(bc, &st);
    if (st.valid_blocks == 266)
      break;
    usleep(10000);
  }
  CU_ASSERT_EQUAL(st.valid_blocks, 266);
  CU_ASSERT(st.commits >= 2);
  blkcache_close(bc);
  img_free(im);
}

static void
test_commit_interval(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("interval", 4 * BS, 20);
  struct blkcache *bc = open_cache(root, im, 20);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  CU_ASSERT_EQUAL(blkcache_store(bc, 1, blk(im, 1)), 0);
  struct blkcache_stats st;
  for (int k = 0; k < 300; k++) {
    stats(bc, &st);
    if (st.valid_blocks == 1)
      break;
    usleep(10000);
  }
  CU_ASSERT_EQUAL(st.valid_blocks, 1);
  CU_ASSERT_EQUAL(st.commits, 1);
  CU_ASSERT_EQUAL(disk_bit(root, im, 1), 1);
  blkcache_close(bc);
  img_free(im);
}

static void
test_close_commits(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("closec", 4 * BS, 21);
  struct blkcache *bc = open_cache(root, im, 60000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  store_all(bc, im);
  blkcache_close(bc); /* must not wait a minute */
  for (uint64_t i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(disk_bit(root, im, i), 1);
  img_free(im);
}

/* ---- Remove ------------------------------------------------------------ */

static void
test_remove(void)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new("rm", 3 * BS, 22);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  store_all(bc, im);

  /* Open: refused. */
  capture_begin();
  CU_ASSERT_EQUAL(blkcache_remove(root, im->m->version_hex), -1);
  const char *msg = capture_end();
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "error: cache: lock: "));
  blkcache_close(bc);

  CU_ASSERT_EQUAL(blkcache_remove(root, im->m->version_hex), 0);
  xpath(path, "%s/%s", root, im->m->version_hex);
  CU_ASSERT(access(path, F_OK) != 0 && errno == ENOENT);
  /* Already gone: fine. */
  CU_ASSERT_EQUAL(blkcache_remove(root, im->m->version_hex), 0);
  /* Opening again starts empty. */
  CU_ASSERT_EQUAL(check_after_crash(root, im), 0);
  img_free(im);
}

static void
test_remove_bad_version(void)
{
  char root[PATH_MAX], victim[PATH_MAX];
  new_root(root);
  CU_ASSERT_FATAL(mkdir(root, 0700) == 0);
  xpath(victim, "%s/victim", root);
  CU_ASSERT_FATAL(mkdir(victim, 0700) == 0);

  char upper[65], long_[66], short_[64], nonhex[65], traversal[65];
  memset(upper, 'A', 64);
  upper[64] = '\0';
  memset(long_, 'a', 65);
  long_[65] = '\0';
  memset(short_, 'a', 63);
  short_[63] = '\0';
  memset(nonhex, 'a', 64);
  nonhex[63] = 'g';
  nonhex[64] = '\0';
  memset(traversal, 'a', 64);
  memcpy(traversal, "../victim/", 10);
  traversal[64] = '\0';
  const char *bad[] = { "", ".", "..", "../victim", "victim", "/etc", upper,
                        long_, short_, nonhex, traversal, "a/b", NULL };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    errno = 0;
    capture_begin();
    int r = blkcache_remove(root, bad[k]);
    int e = errno;
    const char *msg = capture_end();
    CU_ASSERT_EQUAL(r, -1);
    CU_ASSERT_EQUAL(e, EINVAL);
    CU_ASSERT_EQUAL(count_lines(msg), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "error: cache: remove: "));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "64 lowercase hex digits"));
  }
  CU_ASSERT(access(victim, F_OK) == 0);
}

/* ---- Concurrency ----------------------------------------------------------- */

struct worker {
  pthread_t tid;
  struct blkcache *bc;
  const struct img *im;
  unsigned id;
  _Atomic unsigned *wrong, *errors;
  unsigned hits;
};

/* Stores its own quarter of the image (disjoint), then the first quarter
 * again, which all threads store at once from different starting points
 * (overlapping: identical bytes, so concurrent stores of one block are
 * harmless), reading random parts of random blocks in between. */
static void *
worker_main(void *arg)
{
  struct worker *w = arg;
  uint64_t n = w->im->m->nblocks, q = n / 4;
  unsigned seed = w->id * 7919u + 1;
  uint8_t buf[BS];

  for (uint64_t k = 0; k < 2 * q; k++) {
    uint64_t i = k < q ? w->id * q + k : (k - q + w->id * (q / 4)) % q;
    if (blkcache_store(w->bc, i, blk(w->im, i)) < 0)
      atomic_fetch_add(w->errors, 1);
    for (int r = 0; r < 8; r++) {
      uint64_t j = (uint64_t)rand_r(&seed) % n;
      uint32_t len = blen(w->im, j);
      uint32_t off = (uint32_t)rand_r(&seed) % len;
      uint32_t l = (uint32_t)rand_r(&seed) % (len - off) + 1;
      int err = 0;
      int res = blkcache_read(w->bc, j, buf, off, l, &err);
      if (res < 0)
        atomic_fetch_add(w->errors, 1);
      else if (res == 1) {
        w->hits++;
        if (memcmp(buf, blk(w->im, j) + off, l) != 0)
          atomic_fetch_add(w->wrong, 1);
      }
    }
    if (k % 50 == 0 && blkcache_sync(w->bc) < 0)
      atomic_fetch_add(w->errors, 1);
  }
  return NULL;
}

static void
run_workers(struct blkcache *bc, const struct img *im, _Atomic unsigned *wrong,
            _Atomic unsigned *errors)
{
  struct worker w[4];
  for (unsigned t = 0; t < 4; t++) {
    w[t] = (struct worker){ .bc = bc, .im = im, .id = t, .wrong = wrong,
                            .errors = errors };
    CU_ASSERT_FATAL(pthread_create(&w[t].tid, NULL, worker_main, &w[t]) == 0);
  }
  for (unsigned t = 0; t < 4; t++)
    pthread_join(w[t].tid, NULL);
}

static void
test_concurrent_store_read(void)
{
  char root[PATH_MAX];
  new_root(root);
  struct img *im = img_new("conc", 400 * BS, 23);
  struct blkcache *bc = open_cache(root, im, 2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  _Atomic unsigned wrong = 0, errors = 0;
  run_workers(bc, im, &wrong, &errors);
  CU_ASSERT_EQUAL(atomic_load(&wrong), 0);
  CU_ASSERT_EQUAL(atomic_load(&errors), 0);
  CU_ASSERT_EQUAL(blkcache_sync(bc), 0);
  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.present_blocks, 400);
  CU_ASSERT_EQUAL(st.present_bytes, 400 * BS);
  CU_ASSERT_EQUAL(st.valid_blocks, 400);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 0);
  blkcache_close(bc);

  /* Reopened, the same threads verify concurrently while they read. */
  bc = open_cache(root, im, 2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  run_workers(bc, im, &wrong, &errors);
  CU_ASSERT_EQUAL(atomic_load(&wrong), 0);
  CU_ASSERT_EQUAL(atomic_load(&errors), 0);
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 0);
  CU_ASSERT_EQUAL(st.present_blocks, 400);
  blkcache_close(bc);
  CU_ASSERT_EQUAL(check_after_crash(root, im), 400);
  img_free(im);
}

/* Several threads read the same unverified, corrupt block at once: it is
 * evicted once, never served. */
static void *
corrupt_reader(void *arg)
{
  struct worker *w = arg;
  uint8_t buf[BS];
  for (int k = 0; k < 50; k++) {
    int err = 0;
    int r = blkcache_read(w->bc, 1, buf, 0, BS, &err);
    if (r == 1)
      atomic_fetch_add(w->wrong, 1);
    if (r < 0)
      atomic_fetch_add(w->errors, 1);
  }
  return NULL;
}

static void
test_concurrent_verify_corrupt(void)
{
  char root[PATH_MAX], path[PATH_MAX];
  new_root(root);
  struct img *im = img_new("concbad", 4 * BS, 24);
  struct blkcache *bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  store_all(bc, im);
  blkcache_close(bc);
  cpath(path, root, im, "data");
  flip_byte(path, BS + 7);

  bc = open_cache(root, im, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bc);
  _Atomic unsigned wrong = 0, errors = 0;
  struct worker w[4];
  capture_begin();
  for (unsigned t = 0; t < 4; t++) {
    w[t] = (struct worker){ .bc = bc, .im = im, .id = t, .wrong = &wrong,
                            .errors = &errors };
    CU_ASSERT_FATAL(pthread_create(&w[t].tid, NULL, corrupt_reader, &w[t]) == 0);
  }
  for (unsigned t = 0; t < 4; t++)
    pthread_join(w[t].tid, NULL);
  const char *msg = capture_end();
  CU_ASSERT_EQUAL(count_lines(msg), 1);
  CU_ASSERT_EQUAL(atomic_load(&wrong), 0);
  CU_ASSERT_EQUAL(atomic_load(&errors), 0);
  struct blkcache_stats st;
  stats(bc, &st);
  CU_ASSERT_EQUAL(st.corrupt_evicted, 1);
  blkcache_close(bc);
  img_free(im);
}

/* ---- Suite ---------------------------------------------------------------- */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  return remove(path);
}

static int
suite_init(void)
{
  const char *t = getenv("TMPDIR");
  xpath(tmpdir, "%s/test-blkcache-XXXXXX", t && *t ? t : "/tmp");
  /* The tests check each message; test_store_errors_ratelimited turns
   * the rate limit on for itself. */
  log_set_ratelimit_ms(0);
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int
suite_clean(void)
{
  return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define TEST(fn) { #fn, fn }
static const struct cunit_test tests[] = {
  TEST(test_store_has_read_whole),
  TEST(test_read_parts),
  TEST(test_short_last_block),
  TEST(test_read_run),
  TEST(test_not_stored),
  TEST(test_store_errors_ratelimited),
  TEST(test_bad_index),
  TEST(test_layout),
  TEST(test_open_bad_manifest_bytes),
  TEST(test_open_twice_busy),
  TEST(test_reopen_verified_on_first_read),
  TEST(test_flipped_byte_whole_read),
  TEST(test_flipped_byte_part_read),
  TEST(test_eviction_persisted_without_close),
  TEST(test_crash_exit_without_sync),
  TEST(test_crash_kill_rounds),
  TEST(test_new_version_new_dir),
  TEST(test_reset_bitmap_garbage),
  TEST(test_reset_bitmap_short),
  TEST(test_reset_bitmap_long),
  TEST(test_reset_bitmap_empty),
  TEST(test_reset_bitmap_magic),
  TEST(test_reset_bitmap_nblocks),
  TEST(test_reset_bitmap_block_size),
  TEST(test_reset_bitmap_digest),
  TEST(test_reset_bitmap_missing),
  TEST(test_reset_bitmap_symlink),
  TEST(test_reset_data_short),
  TEST(test_reset_data_long),
  TEST(test_reset_data_dir),
  TEST(test_reset_data_missing),
  TEST(test_reset_manifest_other),
  TEST(test_reset_manifest_garbage),
  TEST(test_reset_manifest_fifo),
  TEST(test_bitmap_body_all_ones),
  TEST(test_manifest_json_missing_kept),
  TEST(test_read_error_truncated_data),
  TEST(test_commit_batching),
  TEST(test_commit_interval),
  TEST(test_close_commits),
  TEST(test_remove),
  TEST(test_remove_bad_version),
  TEST(test_concurrent_store_read),
  TEST(test_concurrent_verify_corrupt),
};

int
main(void)
{
  static const struct cunit_suite suite = {
    "blkcache", suite_init, suite_clean, NULL, NULL,
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
