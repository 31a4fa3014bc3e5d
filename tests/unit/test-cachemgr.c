/* thunder — unit tests of the node cache's capacity, eviction and reuse
 * (src/daemon/cachemgr.c, reclaim.c, blkindex.c, lru.c and
 * blkcache_evict).
 *
 * Images are built in a private temporary directory (4 KiB blocks) from
 * a seeded generator; a second version shares all but a few blocks with
 * the first, and some blocks are all zeros.
 */
#include <CUnit/Basic.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "blkcache.h"
#include "blkindex.h"
#include "cachemgr.h"
#include "flight.h"
#include "log.h"
#include "lru.h"
#include "manifest.h"
#include "cunit-run.h"

#define BS 4096u
#define NB 64u

static char tmpdir[256];
static unsigned test_no;

struct img {
  uint8_t data[NB * BS];
  struct manifest *m;
  char *bytes;
  size_t len;
};

static void
gen(uint8_t *buf, size_t len, uint64_t seed)
{
  uint64_t x = seed * 0x9e3779b97f4a7c15u + 1;
  for (size_t i = 0; i < len; i++) {
    x = x * 6364136223846793005u + 1442695040888963407u;
    buf[i] = (uint8_t)(x >> 56);
  }
}

/* Image seed: blocks 10..13 zero; v2 (changed) differs in blocks 0, 30. */
static void
make_img(struct img *im, const char *name, uint64_t seed, bool changed)
{
  gen(im->data, sizeof im->data, seed);
  memset(im->data + 10 * BS, 0, 4 * BS);
  if (changed) {
    gen(im->data, BS, seed + 100);
    gen(im->data + 30 * BS, BS, seed + 101);
  }
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s-%u.raw", tmpdir, name, test_no);
  FILE *fp = fopen(path, "wb");
  CU_ASSERT_FATAL(fp != NULL);
  CU_ASSERT_FATAL(fwrite(im->data, 1, sizeof im->data, fp) == sizeof im->data);
  fclose(fp);
  im->m = manifest_build(name, path, BS, 1);
  CU_ASSERT_FATAL(im->m != NULL);
  im->bytes = manifest_serialize(im->m, &im->len);
  CU_ASSERT_FATAL(im->bytes != NULL);
}

static void
free_img(struct img *im)
{
  manifest_free(im->m);
  free(im->bytes);
}

static void
root_path(char *out)
{
  snprintf(out, PATH_MAX, "%s/root%u", tmpdir, ++test_no);
}

static struct cachemgr_params
params(uint64_t max)
{
  return (struct cachemgr_params){ .max_bytes = max, .min_free_bytes = 4096,
                                   .commit_interval_ms = 1 };
}

/* ---- tests ------------------------------------------------------------- */

static void
test_parse_size(void)
{
  uint64_t b;
  unsigned p;
  CU_ASSERT(cachemgr_parse_size("123", &b, &p) == 0 && b == 123 && p == 0);
  CU_ASSERT(cachemgr_parse_size("4K", &b, &p) == 0 && b == 4096);
  CU_ASSERT(cachemgr_parse_size("2GiB", &b, &p) == 0 && b == 2ull << 30);
  CU_ASSERT(cachemgr_parse_size("3mb", &b, &p) == 0 && b == 3ull << 20);
  CU_ASSERT(cachemgr_parse_size("80%", &b, &p) == 0 && p == 80 && b == 0);
  CU_ASSERT(cachemgr_parse_size("101%", &b, &p) == -1);
  CU_ASSERT(cachemgr_parse_size("-1", &b, &p) == -1);
  CU_ASSERT(cachemgr_parse_size("5X", &b, &p) == -1);
  CU_ASSERT(cachemgr_parse_size("5Kx", &b, &p) == -1);
  CU_ASSERT(cachemgr_parse_size("", &b, &p) == -1);
  CU_ASSERT(cachemgr_parse_size("99999999999P", &b, &p) == -1);
}

static bool
collect(void *owner, uint64_t idx, void *opaque)
{
  uint64_t *hits = opaque;
  hits[0]++;
  hits[1] += (uintptr_t)owner * 1000 + idx;
  return false;
}

static void
test_blkindex(void)
{
  struct img a, b;
  make_img(&a, "a", 1, false);
  make_img(&b, "a", 1, true);
  struct blkindex *ix = blkindex_new();
  CU_ASSERT_FATAL(ix != NULL);
  CU_ASSERT(blkindex_add(ix, (void *)1, a.m, NULL) == 0);
  CU_ASSERT(blkindex_add(ix, (void *)2, b.m, NULL) == 0);
  uint64_t hits[2] = { 0 };
  blkindex_find(ix, a.m->digests[5], collect, hits);
  CU_ASSERT(hits[0] == 2 && hits[1] == 1005 + 2005);
  hits[0] = hits[1] = 0;
  blkindex_find(ix, b.m->digests[0], collect, hits); /* changed in b */
  CU_ASSERT(hits[0] == 1 && hits[1] == 2000);
  hits[0] = hits[1] = 0;
  blkindex_find(ix, a.m->digests[10], collect, hits); /* 4 zero blocks x 2 */
  CU_ASSERT(hits[0] == 8);
  blkindex_remove(ix, (void *)1);
  hits[0] = hits[1] = 0;
  blkindex_find(ix, a.m->digests[5], collect, hits);
  CU_ASSERT(hits[0] == 1 && hits[1] == 2005);
  blkindex_free(ix);
  free_img(&a);
  free_img(&b);
}

static void
test_lru(void)
{
  struct lru *l = lru_new(4);
  CU_ASSERT_FATAL(l != NULL);
  CU_ASSERT(lru_stamp(l, 2) == 0);
  lru_touch(l, 2);
  CU_ASSERT(lru_stamp(l, 2) >= 1 && lru_stamp(l, 2) <= lru_now());
  CU_ASSERT(lru_local_stamp(l, 2) == 0);
  lru_touch_local(l, 3);
  CU_ASSERT(lru_local_stamp(l, 3) >= 1 && lru_stamp(l, 3) >= 1);
  CU_ASSERT(lru_local_stamp(l, 2) == 0);
  lru_free(l);
}

struct flight_waiter {
  struct flights *t;
  struct flight *fl;
  _Atomic int woke;
};

static void *
flight_waiter_main(void *arg)
{
  struct flight_waiter *w = arg;
  flight_wait(w->t, w->fl);
  atomic_store(&w->woke, 1);
  flight_put(w->t, w->fl);
  return NULL;
}

/* One flight per digest: the first key owns it, the same key again is
 * told to fetch (NULL), another key waits until the owner is done. */
static void
test_flight(void)
{
  struct flights *t = flights_new();
  CU_ASSERT_FATAL(t != NULL);
  uint8_t d1[32], d2[32];
  memset(d1, 1, sizeof d1);
  memset(d2, 2, sizeof d2);
  int a, b; /* two owners (versions) */
  bool own;
  struct flight *f = flight_begin(t, d1, &a, 5, &own);
  CU_ASSERT_FATAL(f != NULL);
  CU_ASSERT(own);
  CU_ASSERT(flight_begin(t, d1, &a, 5, &own) == NULL && !own);
  struct flight *g = flight_begin(t, d2, &a, 6, &own); /* another digest */
  CU_ASSERT(g != NULL && own);
  struct flight_waiter w = { t, flight_begin(t, d1, &b, 9, &own), 0 };
  CU_ASSERT_FATAL(w.fl == f);
  CU_ASSERT(!own);
  pthread_t th;
  CU_ASSERT_FATAL(pthread_create(&th, NULL, flight_waiter_main, &w) == 0);
  usleep(50000);
  CU_ASSERT(atomic_load(&w.woke) == 0);
  flight_done(t, d1, &b, 9); /* not the owner: nothing */
  flight_done(t, d2, &a, 6);
  usleep(50000);
  CU_ASSERT(atomic_load(&w.woke) == 0);
  flight_done(t, d1, &a, 5);
  pthread_join(th, NULL);
  CU_ASSERT(atomic_load(&w.woke) == 1);
  flight_put(t, f);
  flight_put(t, g);
  /* Done flights left the table: the digest starts a new one. */
  f = flight_begin(t, d1, &b, 9, &own);
  CU_ASSERT(f != NULL && own);
  flight_done(t, d1, &b, 9);
  flight_put(t, f);
  flights_free(t);
}

/* blkcache_evict: absent at once, bit clear on disk, space released,
 * counted; stored again afterwards; quota follows. */
static void
test_evict(void)
{
  char root[PATH_MAX];
  root_path(root);
  struct img a;
  make_img(&a, "a", 2, false);
  struct blkcache *bc = blkcache_open(root, a.m, a.bytes, a.len, 1);
  CU_ASSERT_FATAL(bc != NULL);
  struct blkcache_quota q = { 0, UINT64_MAX };
  blkcache_set_quota(bc, &q);
  for (uint64_t i = 0; i < NB; i++)
    CU_ASSERT(blkcache_store(bc, i, a.data + i * BS) == 0);
  CU_ASSERT(blkcache_sync(bc) == 0);
  CU_ASSERT(q.used == NB * BS);
  uint64_t v[] = { 3, 4, 5, 3, 999 };
  CU_ASSERT(blkcache_evict(bc, v, 5) == 3 * BS);
  CU_ASSERT(q.used == (NB - 3) * BS);
  uint8_t buf[BS];
  int err;
  CU_ASSERT(blkcache_read(bc, 4, buf, 0, BS, &err) == 0);
  CU_ASSERT(blkcache_read(bc, 6, buf, 0, BS, &err) == 1);
  struct blkcache_stats st;
  blkcache_get_stats(bc, &st);
  CU_ASSERT(st.evicted_blocks == 3 && st.evicted_bytes == 3 * BS);
  /* A hole where block 4 was. */
  char path[PATH_MAX + 80];
  snprintf(path, sizeof path, "%s/%s/data", root, a.m->version_hex);
  int fd = open(path, O_RDONLY);
  CU_ASSERT(fd >= 0);
  CU_ASSERT(lseek(fd, 3 * BS, SEEK_DATA) == 6 * BS);
  close(fd);
  /* Quota: a store past the limit is refused with EDQUOT. */
  q.limit = q.used;
  CU_ASSERT(blkcache_store(bc, 4, a.data + 4 * BS) == -1 && errno == EDQUOT);
  q.limit = UINT64_MAX;
  CU_ASSERT(blkcache_store(bc, 4, a.data + 4 * BS) == 0);
  CU_ASSERT(blkcache_read(bc, 4, buf, 0, BS, &err) == 1 &&
            memcmp(buf, a.data + 4 * BS, BS) == 0);
  blkcache_set_quota(bc, NULL);
  CU_ASSERT(q.used == 0);
  blkcache_close(bc);
  /* Reopened: evicted blocks absent, the rest valid. */
  bc = blkcache_open(root, a.m, a.bytes, a.len, 1);
  CU_ASSERT_FATAL(bc != NULL);
  CU_ASSERT(!blkcache_has(bc, 3) && !blkcache_has(bc, 5));
  CU_ASSERT(blkcache_has(bc, 4) && blkcache_has(bc, 6));
  blkcache_close(bc);
  free_img(&a);
}

static void
add_json_u64(struct json_object *o, const char *k, uint64_t *out)
{
  struct json_object *v;
  *out = json_object_object_get_ex(o, k, &v) ? json_object_get_uint64(v)
                                             : UINT64_MAX;
}

/* Reuse across versions, zero blocks, stats. */
static void
test_reuse_and_zero(void)
{
  char root[PATH_MAX];
  root_path(root);
  struct img a, b;
  make_img(&a, "a", 3, false);
  make_img(&b, "a", 3, true);
  struct cachemgr_params p = params(1 << 30);
  struct cachemgr *cm = cachemgr_new(root, &p);
  CU_ASSERT_FATAL(cm != NULL);
  enum cachemgr_result res;
  char err[256];
  struct cachever *va = cachemgr_acquire(cm, a.bytes, a.len, &res, err,
                                         sizeof err);
  CU_ASSERT_FATAL(va != NULL);
  for (uint64_t i = 0; i < NB; i++)
    cachemgr_store(va, i, a.data + i * BS);
  /* Zero blocks were not stored. */
  CU_ASSERT(!blkcache_has(cachemgr_blkcache(va), 10));
  CU_ASSERT(cachemgr_has(va, 10));
  cachemgr_release(va); /* unattached now, still reusable */

  struct cachever *vb = cachemgr_acquire(cm, b.bytes, b.len, &res, err,
                                         sizeof err);
  CU_ASSERT_FATAL(vb != NULL);
  uint8_t buf[BS];
  int e;
  unsigned found = 0;
  for (uint64_t i = 0; i < NB; i++) {
    int r = cachemgr_read(vb, i, buf + 7, 7, BS - 7, false, &e) == 1 ? 1 : 0;
    if (r)
      CU_ASSERT(memcmp(buf + 7, b.data + i * BS + 7, BS - 7) == 0);
    found += r;
  }
  CU_ASSERT(found == NB - 2); /* all but the two changed blocks */
  struct json_object *o = cachemgr_version_json(vb);
  CU_ASSERT_FATAL(o != NULL);
  uint64_t reused, zeros, cap;
  add_json_u64(o, "reused_blocks", &reused);
  add_json_u64(o, "zero_blocks_skipped", &zeros);
  add_json_u64(o, "cap_bytes", &cap);
  CU_ASSERT(reused == NB - 2 - 4);
  CU_ASSERT(zeros == 4);
  CU_ASSERT(cap == 1 << 30);
  json_object_put(o);

  /* gc removes the unattached version, directory and all. */
  CU_ASSERT(cachemgr_gc(cm) > 0);
  char path[PATH_MAX + 80];
  snprintf(path, sizeof path, "%s/%s", root, a.m->version_hex);
  CU_ASSERT(access(path, F_OK) == -1);
  cachemgr_release(vb);
  cachemgr_free(cm);
  free_img(&a);
  free_img(&b);
}

/* No room for the manifest: CACHEMGR_NO_ROOM and a message saying so. */
static void
test_no_room(void)
{
  char root[PATH_MAX];
  root_path(root);
  struct img a;
  make_img(&a, "a", 4, false);
  struct cachemgr_params p = params(1024);
  struct cachemgr *cm = cachemgr_new(root, &p);
  CU_ASSERT_FATAL(cm != NULL);
  enum cachemgr_result res;
  char err[512];
  CU_ASSERT(cachemgr_acquire(cm, a.bytes, a.len, &res, err, sizeof err) ==
            NULL);
  CU_ASSERT(res == CACHEMGR_NO_ROOM);
  CU_ASSERT(strstr(err, "cannot hold") != NULL);
  cachemgr_free(cm);
  free_img(&a);
}

/* The reclaimer keeps the data under the cap, unattached first. */
static void
test_reclaim(void)
{
  char root[PATH_MAX];
  root_path(root);
  struct img a, c;
  make_img(&a, "a", 5, false);
  make_img(&c, "c", 6, false);
  /* Metadata (~2 x (4096 + manifest)) plus 40 blocks. */
  uint64_t meta = 2 * (4096 + 8) + a.len + c.len;
  struct cachemgr_params p = params(meta + 40 * BS);
  struct cachemgr *cm = cachemgr_new(root, &p);
  CU_ASSERT_FATAL(cm != NULL);
  enum cachemgr_result res;
  char err[256];
  struct cachever *va = cachemgr_acquire(cm, a.bytes, a.len, &res, err,
                                         sizeof err);
  struct cachever *vc = cachemgr_acquire(cm, c.bytes, c.len, &res, err,
                                         sizeof err);
  CU_ASSERT_FATAL(va && vc);
  for (uint64_t i = 0; i < 30; i++)
    cachemgr_store(va, i, a.data + i * BS);
  blkcache_sync(cachemgr_blkcache(va));
  cachemgr_release(va);
  for (uint64_t i = 30; i < NB; i++)
    cachemgr_store(vc, i, c.data + i * BS);
  /* Wait for the reclaimer (polls every 100 ms). */
  struct json_object *o = NULL;
  uint64_t used = UINT64_MAX, limit = 0;
  for (int t = 0; t < 50; t++) {
    usleep(100000);
    json_object_put(o);
    o = cachemgr_json(cm);
    add_json_u64(o, "used_bytes", &used);
    add_json_u64(o, "limit_bytes", &limit);
    if (used <= limit - meta)
      break;
  }
  CU_ASSERT(used <= 40 * BS);
  json_object_put(o);
  struct blkcache_stats st;
  blkcache_get_stats(cachemgr_blkcache(vc), &st);
  /* The attached version lost nothing while the unattached one had
   * blocks to give (30 + 30 stored, 40 allowed, so at least 20 of a's
   * went, the unattached version's, and c's 30 - minus refusals - stay). */
  CU_ASSERT(st.evicted_blocks == 0);
  cachemgr_release(vc);
  cachemgr_free(cm);
  free_img(&a);
  free_img(&c);
}

/* Stores the blocks of v that are not zero blocks, from *next on, until n
 * are stored; their indexes go to blk. */
static void
store_some(struct cachever *v, const struct img *a, uint64_t *next,
           uint64_t *blk, unsigned n)
{
  for (unsigned k = 0; k < n && *next < NB; (*next)++)
    if (!cachemgr_has(v, *next)) { /* absent, not zero */
      cachemgr_store(v, *next, a->data + *next * BS);
      blk[k++] = *next;
    }
}

/* Waits (up to 5 s) for the evicted-blocks count to pass *evicted. */
static void
wait_evicted(struct cachemgr *cm, uint64_t *evicted)
{
  uint64_t before = *evicted;
  for (int t = 0; t < 50 && *evicted == before; t++) {
    usleep(100000);
    struct json_object *o = cachemgr_json(cm);
    add_json_u64(o, "evicted_blocks", evicted);
    json_object_put(o);
  }
}

/* Blocks of an attached version that local VMs read (the Unix socket)
 * outlast blocks read later by child nodes only; past local_recent_ms
 * the local reads no longer count and the order is plain LRU. */
static void
test_reclaim_local_first(void)
{
  char root[PATH_MAX];
  root_path(root);
  struct img a;
  make_img(&a, "a", 7, false);
  uint64_t meta = 4096 + 8 + a.len;
  struct cachemgr_params p = params(meta + 40 * BS);
  p.local_recent_ms = 1500;
  struct cachemgr *cm = cachemgr_new(root, &p);
  CU_ASSERT_FATAL(cm != NULL);
  enum cachemgr_result res;
  char err[256];
  struct cachever *va = cachemgr_acquire(cm, a.bytes, a.len, &res, err,
                                         sizeof err);
  CU_ASSERT_FATAL(va != NULL);
  struct blkcache *bc = cachemgr_blkcache(va);
  /* 32 blocks (the reclaimer starts at 38 of 40): blk[0..16) read by a
   * local VM, then blk[16..32) by a child node, so plain LRU would take
   * the local ones first. */
  uint64_t blk[40], next = 0, evicted = 0;
  store_some(va, &a, &next, blk, 32);
  blkcache_sync(bc);
  uint8_t buf[BS];
  int e;
  for (unsigned i = 0; i < 32; i++) {
    CU_ASSERT(cachemgr_read(va, blk[i], buf, 0, BS, i < 16, &e) == 1);
    if (i == 15)
      usleep(20000);
  }
  usleep(100000); /* past the guard of reads in progress */
  /* 8 more: 40 held, evicted down to 36. */
  store_some(va, &a, &next, blk + 32, 8);
  wait_evicted(cm, &evicted);
  CU_ASSERT(evicted >= 4);
  for (unsigned i = 0; i < 16; i++)
    CU_ASSERT(blkcache_has(bc, blk[i]));
  unsigned gone = 0;
  for (unsigned i = 16; i < 40; i++)
    gone += !blkcache_has(bc, blk[i]);
  CU_ASSERT(gone == evicted);

  /* Past the window the local reads are old reads like any: the child's
   * blocks, read again now, outlast them. */
  usleep(1600 * 1000);
  for (unsigned i = 16; i < 40; i++)
    if (blkcache_has(bc, blk[i]))
      CU_ASSERT(cachemgr_read(va, blk[i], buf, 0, BS, false, &e) == 1);
  usleep(100000);
  uint64_t before = evicted;
  for (unsigned i = 16; i < 40; i++)
    if (!blkcache_has(bc, blk[i]))
      cachemgr_store(va, blk[i], a.data + blk[i] * BS);
  wait_evicted(cm, &evicted);
  CU_ASSERT(evicted > before);
  unsigned local_gone = 0;
  for (unsigned i = 0; i < 16; i++)
    local_gone += !blkcache_has(bc, blk[i]);
  CU_ASSERT(local_gone == evicted - before);
  cachemgr_release(va);
  cachemgr_free(cm);
  free_img(&a);
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int
suite_init(void)
{
  snprintf(tmpdir, sizeof tmpdir, "/tmp/test-cachemgr.XXXXXX");
  if (mkdtemp(tmpdir) == NULL)
    return -1;
  log_set_level(LOG_LEVEL_ERROR);
  return 0;
}

static int
suite_clean(void)
{
  nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}

int
main(void)
{
  static const struct cunit_suite suite = { "cachemgr", suite_init,
                                            suite_clean, NULL, NULL };
  static const struct cunit_test tests[] = {
    { "cachemgr_parse_size", test_parse_size },
    { "blkindex add, find, remove", test_blkindex },
    { "lru stamps", test_lru },
    { "single flight across identical blocks", test_flight },
    { "blkcache_evict: absent, hole, quota, reopen", test_evict },
    { "reuse across versions, zero blocks, gc", test_reuse_and_zero },
    { "attach with no room", test_no_room },
    { "reclaimer: cap kept, unattached first", test_reclaim },
    { "reclaimer: blocks local VMs read recently last",
      test_reclaim_local_first },
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
