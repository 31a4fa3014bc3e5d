/* thunder — the node's cache as a whole; see cachemgr.h.
 *
 * Design note.
 *
 * Objects: struct cachemgr holds the list of open versions (struct
 * cachever: manifest, blkcache, lru stamps, zero-block bitmap), the digest
 * index over all of them, and one blkcache_quota that every version's
 * cache counts its blocks in.  A version's states:
 *
 *   state        refs   in list   how it is reached
 *   attached     >= 1   yes       cachemgr_acquire
 *   unattached   0      yes       cachemgr_release of the last image, or
 *                                 found on disk at start
 *   removed      -      no        the reclaimer emptied it, cachemgr_gc
 *
 * Reuse: on a miss (cachemgr_read, cachemgr_has) the index gives every
 * (version, block) with the same digest; the first present one is read
 * with blkcache_read (so it is verified if it was not yet; equal digests
 * mean equal bytes) under the shared lock, which keeps its version open,
 * and stored in the missing version.  Copying a 64 KiB block costs a
 * pread and a pwrite; FICLONERANGE (sharing the extent) was considered
 * but ext4, the common node filesystem, does not support it and a clone
 * would still need the same fdatasync before its bit; see docs/node.md.
 *
 * Crash safety adds nothing to blkcache's rules: a reused block is stored
 * like a fetched one (data, fdatasync, bit), an evicted one is cleared
 * before its hole is punched, and a version is removed manifest.json
 * first (blkcache_remove), so a directory cut short is recognised and
 * removed at the next start.
 */
#include "cachemgr.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "cacheint.h"
#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "reclaim.h"

#define COMP "cache"
/* A full cache is logged at most once per this interval. */
/* The bitmap's header (blkcache.c BITMAP_HDR_SIZE). */
#define BITMAP_HDR 4096u

/* ---- sizes ---------------------------------------------------------- */

int
cachemgr_parse_size(const char *s, uint64_t *bytes, unsigned *pct)
{
  if (s == NULL || !isdigit((unsigned char)s[0]))
    return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno)
    return -1;
  if (strcmp(end, "%") == 0) {
    if (v > 100)
      return -1;
    *pct = (unsigned)v;
    *bytes = 0;
    return 0;
  }
  unsigned shift = 0;
  switch (toupper((unsigned char)*end)) {
  case '\0': break;
  case 'K': shift = 10; break;
  case 'M': shift = 20; break;
  case 'G': shift = 30; break;
  case 'T': shift = 40; break;
  case 'P': shift = 50; break;
  default: return -1;
  }
  if (*end) {
    end++;
    if (*end && strcasecmp(end, "B") != 0 && strcasecmp(end, "iB") != 0)
      return -1;
  }
  if (shift && v > (UINT64_MAX >> shift))
    return -1;
  *bytes = (uint64_t)v << shift;
  *pct = 0;
  return 0;
}

uint64_t
cachemgr_internal_limits(struct cachemgr *cm)
{
  struct statvfs sv;
  uint64_t total = 0, avail = 0;
  if (statvfs(cm->root, &sv) == 0) {
    total = (uint64_t)sv.f_blocks * sv.f_frsize;
    avail = (uint64_t)sv.f_bavail * sv.f_frsize;
  } else {
    log_warn(COMP, "statvfs: %s: %m", cm->root);
    return atomic_load(&cm->allowed);
  }
  uint64_t cap = cm->p.max_bytes ? cm->p.max_bytes
                                 : total / 100 * cm->p.max_pct;
  uint64_t floor = cm->p.min_free_bytes ? cm->p.min_free_bytes
                                        : total / 100 * cm->p.min_free_pct;
  pthread_rwlock_rdlock(&cm->lock);
  uint64_t meta = cm->meta_bytes;
  pthread_rwlock_unlock(&cm->lock);
  uint64_t held = atomic_load(&cm->quota.used) + meta;
  uint64_t room = avail + held > floor ? avail + held - floor : 0;
  uint64_t allowed = cap < room ? cap : room;
  atomic_store(&cm->cap, cap);
  atomic_store(&cm->floor, floor);
  atomic_store(&cm->allowed, allowed);
  atomic_store(&cm->quota.limit, allowed > meta ? allowed - meta : 0);
  return allowed;
}

/* ---- versions ---------------------------------------------------------- */

static void
version_free(struct cachever *cv)
{
  if (cv == NULL)
    return;
  if (cv->bc) {
    blkcache_set_quota(cv->bc, NULL);
    blkcache_close(cv->bc);
  }
  lru_free(cv->lru);
  free(cv->zero);
  manifest_free(cv->m);
  pthread_mutex_destroy(&cv->from_lock);
  free(cv);
}

/* Parses and opens a version; NULL with errno (ENOSPC: no room on disk)
 * and a logged error. */
static struct cachever *
version_open(struct cachemgr *cm, const char *mbytes, size_t mlen)
{
  struct cachever *cv = calloc(1, sizeof *cv);
  if (cv == NULL)
    return NULL;
  pthread_mutex_init(&cv->from_lock, NULL);
  cv->cm = cm;
  cv->m = manifest_parse(mbytes, mlen, "cached manifest");
  if (cv->m == NULL) {
    errno = EINVAL;
    goto fail;
  }
  const struct manifest *m = cv->m;
  cv->meta_bytes = mlen + BITMAP_HDR + (m->nblocks + 7) / 8;
  cv->lru = lru_new(m->nblocks);
  cv->zero = calloc((size_t)((m->nblocks + 7) / 8), 1);
  if (cv->lru == NULL || cv->zero == NULL)
    goto fail;
  {
    CLEANUP_FREE uint8_t *zeros = calloc(1, m->block_size);
    if (zeros == NULL)
      goto fail;
    uint8_t zfull[DIGEST_LEN], zlast[DIGEST_LEN];
    uint32_t last = manifest_block_len(m, m->nblocks - 1);
    digest_sha256(zeros, m->block_size, zfull);
    digest_sha256(zeros, last, zlast);
    for (uint64_t i = 0; i < m->nblocks; i++) {
      const uint8_t *z = i == m->nblocks - 1 ? zlast : zfull;
      if (memcmp(m->digests[i], z, DIGEST_LEN) == 0)
        cv->zero[i / 8] |= (uint8_t)(1u << (i % 8));
    }
  }
  int saved;
  cv->bc = blkcache_open(cm->root, m, mbytes, mlen, cm->p.commit_interval_ms);
  if (cv->bc == NULL)
    goto fail;
  return cv;

fail:
  saved = errno;
  version_free(cv);
  errno = saved;
  return NULL;
}

/* Adds an open version to the list and the index.  Exclusive lock. */
static int
version_insert(struct cachemgr *cm, struct cachever *cv)
{
  if (blkindex_add(cm->index, cv, cv->m, cv->zero) < 0)
    return -1;
  blkcache_set_quota(cv->bc, &cm->quota);
  cm->meta_bytes += cv->meta_bytes;
  cv->next = cm->versions;
  cm->versions = cv;
  return 0;
}

void
cachemgr_internal_remove(struct cachemgr *cm, struct cachever *cv)
{
  char hex[DIGEST_HEX_LEN + 1];
  memcpy(hex, cv->m->version_hex, sizeof hex);
  struct blkcache_stats st;
  blkcache_get_stats(cv->bc, &st);
  atomic_fetch_add(&cm->evicted_blocks, st.present_blocks);
  atomic_fetch_add(&cm->evicted_bytes, st.present_bytes);
  atomic_fetch_add(&cm->versions_removed, 1);
  version_free(cv);
  if (blkcache_remove(cm->root, hex) == 0)
    log_info(COMP, "removed unattached version %.16s (%" PRIu64 " bytes)",
             hex, st.present_bytes);
}

/* Opens every version directory found under the root, unattached. */
static void
scan(struct cachemgr *cm)
{
  DIR *d = opendir(cm->root);
  if (d == NULL) {
    log_error(COMP, "opendir: %s: %m", cm->root);
    return;
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    uint8_t v[DIGEST_LEN];
    if (strlen(de->d_name) != DIGEST_HEX_LEN ||
        digest_from_hex(de->d_name, v) < 0)
      continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/manifest.json", cm->root, de->d_name);
    char *bytes = NULL;
    size_t len = 0;
    struct manifest *m = manifest_load_bytes(path, &bytes, &len);
    bool ok = m && strcmp(m->version_hex, de->d_name) == 0;
    manifest_free(m);
    struct cachever *cv = ok ? version_open(cm, bytes, len) : NULL;
    free(bytes);
    if (cv == NULL || version_insert(cm, cv) < 0) {
      version_free(cv);
      if (!ok) {
        log_warn(COMP, "%s/%s: no valid manifest.json (a removal cut short?):"
                 " removing it", cm->root, de->d_name);
        blkcache_remove(cm->root, de->d_name);
      }
      continue;
    }
    cv->released_ms = 0; /* unattached since before this start */
  }
  closedir(d);
}

struct cachemgr *
cachemgr_new(const char *root, const struct cachemgr_params *p)
{
  if (mkdir(root, 0700) < 0 && errno != EEXIST) {
    log_error(COMP, "mkdir: %s: %m", root);
    return NULL;
  }
  struct cachemgr *cm = calloc(1, sizeof *cm);
  if (cm == NULL || (cm->root = strdup(root)) == NULL ||
      (cm->index = blkindex_new()) == NULL ||
      (cm->flights = flights_new()) == NULL) {
    if (cm) {
      free(cm->root);
      blkindex_free(cm->index);
    }
    free(cm);
    log_error(COMP, "calloc: %m");
    return NULL;
  }
  cm->p = *p;
  if (cm->p.local_recent_ms == 0)
    cm->p.local_recent_ms = CACHEMGR_DEFAULT_LOCAL_RECENT_MS;
  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  pthread_rwlockattr_setkind_np(&ra,
                                PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&cm->lock, &ra);
  pthread_rwlockattr_destroy(&ra);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&cm->qlock, NULL);
  pthread_cond_init(&cm->qwake, &ca);
  pthread_condattr_destroy(&ca);

  scan(cm);
  uint64_t allowed = cachemgr_internal_limits(cm);
  log_info(COMP, "%s: cap %" PRIu64 " bytes, free floor %" PRIu64
           " bytes: %" PRIu64 " bytes usable, %" PRIu64 " cached",
           root, atomic_load(&cm->cap), atomic_load(&cm->floor), allowed,
           atomic_load(&cm->quota.used));
  int r = pthread_create(&cm->reclaimer, NULL, reclaim_main, cm);
  if (r != 0) {
    errno = r;
    log_error(COMP, "pthread_create: %m");
    cachemgr_free(cm);
    return NULL;
  }
  cm->reclaimer_started = true;
  pthread_setname_np(cm->reclaimer, "cache-reclaim");
  return cm;
}

void
cachemgr_free(struct cachemgr *cm)
{
  if (cm == NULL)
    return;
  if (cm->reclaimer_started) {
    pthread_mutex_lock(&cm->qlock);
    cm->stop = true;
    pthread_cond_signal(&cm->qwake);
    pthread_mutex_unlock(&cm->qlock);
    pthread_join(cm->reclaimer, NULL);
  }
  while (cm->versions) {
    struct cachever *cv = cm->versions;
    cm->versions = cv->next;
    if (cv->refs)
      log_error(COMP, "version %.16s still held at exit", cv->m->version_hex);
    version_free(cv);
  }
  blkindex_free(cm->index);
  flights_free(cm->flights);
  pthread_rwlock_destroy(&cm->lock);
  pthread_cond_destroy(&cm->qwake);
  pthread_mutex_destroy(&cm->qlock);
  free(cm->root);
  free(cm);
}

/* The open version hex, with one more reference; NULL if none.
 * Exclusive lock. */
static struct cachever *
find_ref(struct cachemgr *cm, const char *hex)
{
  for (struct cachever *cv = cm->versions; cv; cv = cv->next) {
    if (strcmp(cv->m->version_hex, hex) == 0) {
      cv->refs++;
      return cv;
    }
  }
  return NULL;
}

struct cachever *
cachemgr_acquire(struct cachemgr *cm, const char *mbytes, size_t mlen,
                 enum cachemgr_result *res, char *err, size_t errlen)
{
  uint8_t v[DIGEST_LEN];
  char hex[DIGEST_HEX_LEN + 1];
  digest_sha256(mbytes, mlen, v);
  digest_to_hex(v, hex);

  pthread_rwlock_wrlock(&cm->lock);
  struct cachever *found = find_ref(cm, hex);
  if (found) {
    pthread_rwlock_unlock(&cm->lock);
    *res = CACHEMGR_OK;
    return found;
  }
  pthread_rwlock_unlock(&cm->lock);

  /* Room for the metadata at least (data can be evicted, metadata of
   * attached versions cannot). */
  uint64_t allowed = cachemgr_internal_limits(cm);
  pthread_rwlock_rdlock(&cm->lock);
  uint64_t meta = cm->meta_bytes;
  pthread_rwlock_unlock(&cm->lock);
  struct manifest *m = manifest_parse(mbytes, mlen, "manifest");
  if (m == NULL) {
    *res = CACHEMGR_ERROR;
    snprintf(err, errlen, "invalid manifest");
    return NULL;
  }
  uint64_t need = mlen + BITMAP_HDR + (m->nblocks + 7) / 8;
  manifest_free(m);
  if (need > (allowed > meta ? allowed - meta : 0)) {
    *res = CACHEMGR_NO_ROOM;
    snprintf(err, errlen, "the cache cannot hold version %.16s: its manifest"
             " and bitmap need %" PRIu64 " bytes, %" PRIu64 " of the %"
             PRIu64 " allowed (cap %" PRIu64 ", free-space floor %" PRIu64
             ") are taken by other versions' metadata", hex, need, meta,
             allowed, atomic_load(&cm->cap), atomic_load(&cm->floor));
    return NULL;
  }

  pthread_rwlock_wrlock(&cm->lock);
  /* Another acquire may have opened it meanwhile. */
  if ((found = find_ref(cm, hex)) != NULL) {
    pthread_rwlock_unlock(&cm->lock);
    *res = CACHEMGR_OK;
    return found;
  }
  struct cachever *cv = version_open(cm, mbytes, mlen);
  if (cv == NULL || version_insert(cm, cv) < 0) {
    int e = errno;
    pthread_rwlock_unlock(&cm->lock);
    version_free(cv);
    if (e == ENOSPC || e == EDQUOT) {
      *res = CACHEMGR_NO_ROOM;
      snprintf(err, errlen, "the cache filesystem is full: cannot create the"
               " cache of version %.16s", hex);
    } else {
      *res = CACHEMGR_ERROR;
      snprintf(err, errlen, "cannot open the cache of version %.16s", hex);
    }
    return NULL;
  }
  cv->refs = 1;
  pthread_rwlock_unlock(&cm->lock);
  *res = CACHEMGR_OK;
  return cv;
}

void
cachemgr_release(struct cachever *cv)
{
  if (cv == NULL)
    return;
  struct cachemgr *cm = cv->cm;
  pthread_rwlock_wrlock(&cm->lock);
  if (--cv->refs == 0)
    cv->released_ms = lru_now();
  pthread_rwlock_unlock(&cm->lock);
}

struct blkcache *
cachemgr_blkcache(struct cachever *cv)
{
  return cv->bc;
}

/* ---- the data path ---------------------------------------------------- */

static inline bool
is_zero(const struct cachever *cv, uint64_t idx)
{
  return idx < cv->m->nblocks && (cv->zero[idx / 8] & (1u << (idx % 8)));
}

struct reuse_ctx {
  struct cachever *dst;
  uint64_t idx;
  uint8_t *buf;
  uint32_t len;
  struct cachever *src;
};

static bool
try_source(void *owner, uint64_t sidx, void *opaque)
{
  struct reuse_ctx *c = opaque;
  struct cachever *src = owner;
  if ((src == c->dst && sidx == c->idx) || !blkcache_has(src->bc, sidx) ||
      manifest_block_len(src->m, sidx) != c->len)
    return false;
  int err;
  if (blkcache_read(src->bc, sidx, c->buf, 0, c->len, &err) != 1)
    return false;
  c->src = src;
  return true;
}

static void
count_reuse(struct cachever *dst, const struct cachever *src, uint32_t len)
{
  atomic_fetch_add(&dst->reused_blocks, 1);
  atomic_fetch_add(&dst->reused_bytes, len);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&dst->from_lock);
  for (int i = 0; i < CACHEMGR_REUSE_FROM_MAX; i++) {
    struct cachemgr_reuse_from *f = &dst->from[i];
    if (f->version[0] == '\0')
      snprintf(f->version, sizeof f->version, "%.16s", src->m->version_hex);
    if (strncmp(f->version, src->m->version_hex, 16) == 0) {
      atomic_fetch_add(&f->blocks, 1);
      atomic_fetch_add(&f->bytes, len);
      return;
    }
  }
}

/* Copies block idx from an identical cached block into buf (a whole
 * block) and stores it in cv.  true if found.  may_wait false: give up
 * rather than wait for the lock (fetch's is_cached runs under the
 * fetcher's lock, which must not wait on an attach or a reclaim pass). */
static bool
reuse(struct cachever *cv, uint64_t idx, uint8_t *buf, bool may_wait)
{
  struct cachemgr *cm = cv->cm;
  struct reuse_ctx c = { cv, idx, buf, manifest_block_len(cv->m, idx), NULL };
  if (may_wait)
    pthread_rwlock_rdlock(&cm->lock);
  else if (pthread_rwlock_tryrdlock(&cm->lock) != 0)
    return false;
  bool found = blkindex_find(cm->index, cv->m->digests[idx], try_source, &c);
  pthread_rwlock_unlock(&cm->lock);
  if (!found)
    return false;
  count_reuse(cv, c.src, c.len);
  cachemgr_store(cv, idx, buf);
  return true;
}

int
cachemgr_read(struct cachever *cv, uint64_t idx, void *buf, uint32_t off,
              uint32_t len, bool local, int *err)
{
  if (is_zero(cv, idx)) {
    memset(buf, 0, len);
    atomic_fetch_add_explicit(&cv->zero_reads, 1, memory_order_relaxed);
    return 1;
  }
  int r = blkcache_read(cv->bc, idx, buf, off, len, err);
  if (r == 1) {
    if (local)
      lru_touch_local(cv->lru, idx);
    else
      lru_touch(cv->lru, idx);
    return 1;
  }
  if (r < 0)
    return r;
  uint32_t blen = manifest_block_len(cv->m, idx);
  CLEANUP_FREE uint8_t *tmp = NULL;
  if (off == 0 && len == blen) {
    if (!reuse(cv, idx, buf, true))
      return 0;
  } else {
    if ((tmp = malloc(blen)) == NULL || !reuse(cv, idx, tmp, true))
      return 0;
    memcpy(buf, tmp + off, len);
  }
  if (local)
    lru_touch_local(cv->lru, idx);
  return 1;
}

ssize_t
cachemgr_read_run(struct cachever *cv, uint64_t first, uint32_t off,
                  size_t len, void *buf, bool local, uint64_t *nblocks,
                  int *err)
{
  *nblocks = 0;
  ssize_t n = blkcache_read_run(cv->bc, first, off, len, buf, err);
  if (n > 0) {
    *nblocks = (off + (uint64_t)n + cv->m->block_size - 1) /
               cv->m->block_size;
    for (uint64_t b = first; b < first + *nblocks; b++) {
      if (local)
        lru_touch_local(cv->lru, b);
      else
        lru_touch(cv->lru, b);
    }
  }
  return n;
}

struct flight *
cachemgr_flight_begin(struct cachever *cv, uint64_t idx, bool *own)
{
  *own = false;
  if (idx >= cv->m->nblocks)
    return NULL;
  return flight_begin(cv->cm->flights, cv->m->digests[idx], cv, idx, own);
}

void
cachemgr_flight_done(struct cachever *cv, uint64_t idx)
{
  if (idx < cv->m->nblocks)
    flight_done(cv->cm->flights, cv->m->digests[idx], cv, idx);
}

void
cachemgr_flight_put(struct cachever *cv, struct flight *fl)
{
  flight_put(cv->cm->flights, fl);
}

void
cachemgr_flight_wait(struct cachever *cv, struct flight *fl)
{
  atomic_fetch_add_explicit(&cv->shared_fetches, 1, memory_order_relaxed);
  flight_wait(cv->cm->flights, fl);
  flight_put(cv->cm->flights, fl);
}

void
cachemgr_touch_local(struct cachever *cv, uint64_t idx)
{
  if (idx < cv->m->nblocks)
    lru_touch_local(cv->lru, idx);
}

bool
cachemgr_cached(struct cachever *cv, uint64_t idx)
{
  return blkcache_has(cv->bc, idx) || is_zero(cv, idx);
}

bool
cachemgr_has(struct cachever *cv, uint64_t idx)
{
  if (blkcache_has(cv->bc, idx) || is_zero(cv, idx))
    return true;
  if (idx >= cv->m->nblocks)
    return false;
  CLEANUP_FREE uint8_t *tmp = malloc(manifest_block_len(cv->m, idx));
  return tmp && reuse(cv, idx, tmp, false);
}

/* Counts a store refused for room, logs it (rate-limited: one line per
 * interval, with the count of those in between), wakes the reclaimer. */
static void
count_full(struct cachever *cv, int e)
{
  struct cachemgr *cm = cv->cm;
  atomic_fetch_add(&cv->uncached, 1);
  atomic_fetch_add(&cm->uncached, 1);
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&cm->qlock);
    cm->kicked = true;
    pthread_cond_signal(&cm->qwake);
  }
  log_warn_rl(COMP, "%s: %s: a block served without caching (cap %" PRIu64
              ", free floor %" PRIu64 ", %" PRIu64 " bytes cached)", cm->root,
              e == ENOSPC ? "the filesystem is full" : "the cache is full",
              atomic_load(&cm->cap), atomic_load(&cm->floor),
              atomic_load(&cm->quota.used));
}

void
cachemgr_store(struct cachever *cv, uint64_t idx, const void *data)
{
  if (is_zero(cv, idx))
    return;
  if (blkcache_store(cv->bc, idx, data) == 0) {
    lru_touch(cv->lru, idx);
    return;
  }
  int e = errno;
  if (e == ENOSPC || e == EDQUOT || e == EBUSY)
    count_full(cv, e);
  else
    atomic_fetch_add(&cv->uncached, 1);
}

/* ---- stats and gc ----------------------------------------------------- */

static void
add_u64(struct json_object *o, const char *k, uint64_t v)
{
  json_object_object_add(o, k, json_object_new_uint64(v));
}

static void
add_capacity(struct cachemgr *cm, struct json_object *o)
{
  add_u64(o, "cap_bytes", atomic_load(&cm->cap));
  add_u64(o, "min_free_bytes", atomic_load(&cm->floor));
  add_u64(o, "limit_bytes", atomic_load(&cm->allowed));
  add_u64(o, "used_bytes", atomic_load(&cm->quota.used));
}

struct json_object *
cachemgr_version_json(struct cachever *cv)
{
  struct json_object *o = json_object_new_object();
  struct json_object *from = json_object_new_array();
  if (o == NULL || from == NULL) {
    json_object_put(o);
    json_object_put(from);
    return NULL;
  }
  struct blkcache_stats st;
  blkcache_get_stats(cv->bc, &st);
  add_capacity(cv->cm, o);
  add_u64(o, "version_bytes", st.present_bytes);
  add_u64(o, "evicted_blocks", st.evicted_blocks);
  add_u64(o, "evicted_bytes", st.evicted_bytes);
  add_u64(o, "reused_blocks", atomic_load(&cv->reused_blocks));
  add_u64(o, "reused_bytes", atomic_load(&cv->reused_bytes));
  pthread_mutex_lock(&cv->from_lock);
  for (int i = 0; i < CACHEMGR_REUSE_FROM_MAX && cv->from[i].version[0]; i++) {
    struct json_object *f = json_object_new_object();
    if (f == NULL)
      break;
    json_object_object_add(f, "version",
                           json_object_new_string(cv->from[i].version));
    add_u64(f, "blocks", atomic_load(&cv->from[i].blocks));
    add_u64(f, "bytes", atomic_load(&cv->from[i].bytes));
    json_object_array_add(from, f);
  }
  pthread_mutex_unlock(&cv->from_lock);
  json_object_object_add(o, "reused_from", from);
  add_u64(o, "zero_blocks_skipped", atomic_load(&cv->zero_reads));
  add_u64(o, "shared_fetch_blocks", atomic_load(&cv->shared_fetches));
  add_u64(o, "uncached_blocks", atomic_load(&cv->uncached));
  return o;
}

struct json_object *
cachemgr_json(struct cachemgr *cm)
{
  cachemgr_internal_limits(cm);
  struct json_object *o = json_object_new_object();
  struct json_object *vs = json_object_new_array();
  if (o == NULL || vs == NULL) {
    json_object_put(o);
    json_object_put(vs);
    return NULL;
  }
  add_capacity(cm, o);
  add_u64(o, "evicted_blocks", atomic_load(&cm->evicted_blocks));
  add_u64(o, "evicted_bytes", atomic_load(&cm->evicted_bytes));
  add_u64(o, "versions_removed", atomic_load(&cm->versions_removed));
  add_u64(o, "uncached_blocks", atomic_load(&cm->uncached));
  pthread_rwlock_rdlock(&cm->lock);
  for (struct cachever *cv = cm->versions; cv; cv = cv->next) {
    struct json_object *v = json_object_new_object();
    if (v == NULL)
      break;
    struct blkcache_stats st;
    blkcache_get_stats(cv->bc, &st);
    json_object_object_add(v, "name", json_object_new_string(cv->m->name));
    json_object_object_add(v, "version",
                           json_object_new_string(cv->m->version_hex));
    json_object_object_add(v, "attached", json_object_new_boolean(cv->refs > 0));
    add_u64(v, "bytes", st.present_bytes);
    add_u64(v, "blocks", st.present_blocks);
    add_u64(v, "image_bytes", cv->m->size);
    add_u64(v, "evicted_blocks", st.evicted_blocks);
    add_u64(v, "reused_blocks", atomic_load(&cv->reused_blocks));
    json_object_array_add(vs, v);
  }
  pthread_rwlock_unlock(&cm->lock);
  json_object_object_add(o, "versions", vs);
  return o;
}

uint64_t
cachemgr_gc(struct cachemgr *cm)
{
  return reclaim_run(cm, UINT64_MAX, true);
}
