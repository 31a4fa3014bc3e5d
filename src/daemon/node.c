/* thunder — node mode; see node.h.
 *
 * Objects and lifetimes:
 *   struct node        the node: registry, cache root, parameters, and the
 *                      set of image versions whose cache is open.
 *   struct node_image  one attached image version: manifest, block cache,
 *                      fetcher.  It is the handle of its export; the
 *                      export's last reference (the registry's, or the last
 *                      connection's after a detach or a replace) closes it.
 *
 * A version's cache directory is open in at most one node_image at a time
 * (two committers on one bitmap would race); an attach of a version still
 * held open by connections to a detached image is refused (NODE_CONFLICT).
 *
 * Locks: node->lock serialises attach, detach and the open-version set.
 * img->flock guards img->f and img->uris: a read shares it while it
 * starts its fetches, an upstream update takes it exclusively to swap the
 * fetcher.  A read waits for its fetches without it: a block may stall
 * for minutes while no upstream delivers (fetch.h), and an upstream
 * update must not wait for that.  fetcher_free fails the old fetcher's
 * requests with ESHUTDOWN and waits until their readers let go of them;
 * those readers then start their read again on the new fetcher.
 */
#include "node.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkcache.h"
#include "cachemgr.h"
#include "cleanup.h"
#include "digest.h"
#include "jsonutil.h"
#include "histogram.h"
#include "log.h"
#include "manifest.h"

#define COMPONENT "node"
#define ATTACHED_DIR "attached"
/* Largest attachment record accepted. */
#define ATTACH_FILE_MAX (128 * 1024)
/* Blocks hinted by one NBD_CMD_CACHE at most. */
#define CACHE_HINT_MAX 1024

struct node {
  struct exports *reg;
  char *root;
  struct node_params p;
  struct cachemgr *cm; /* every cached version, capacity, reuse */
  pthread_mutex_t lock;
  char **open_versions; /* hex versions with an open cache */
  size_t nopen, capopen;
  struct node_hooks hooks;
  bool restoring; /* under lock: hook failures only warn */
};

struct node_image {
  struct node *node;
  char *name;
  struct manifest *m;
  struct cachever *cv;  /* the version in the cache manager */
  struct blkcache *bc;  /* its block cache */
  pthread_rwlock_t flock;
  struct fetcher *f;   /* under flock */
  char **uris;         /* under flock */
  size_t nuris;
  _Atomic uint64_t hits, misses;
  /* Reads served whole from the cache, and reads that waited for at
   * least one fetch (node_image_histograms, /metrics). */
  struct histogram read_hit, read_miss;
};

/* ---- the set of open cache versions (node->lock held) ---------------- */

static bool
version_open(struct node *n, const char *v)
{
  for (size_t i = 0; i < n->nopen; i++)
    if (strcmp(n->open_versions[i], v) == 0)
      return true;
  return false;
}

static int
version_add(struct node *n, const char *v)
{
  if (n->nopen == n->capopen) {
    size_t cap = n->capopen ? n->capopen * 2 : 8;
    char **a = realloc(n->open_versions, cap * sizeof *a);
    if (a == NULL)
      return -1;
    n->open_versions = a;
    n->capopen = cap;
  }
  if ((n->open_versions[n->nopen] = strdup(v)) == NULL)
    return -1;
  n->nopen++;
  return 0;
}

static void
version_del(struct node *n, const char *v)
{
  for (size_t i = 0; i < n->nopen; i++) {
    if (strcmp(n->open_versions[i], v) == 0) {
      free(n->open_versions[i]);
      n->open_versions[i] = n->open_versions[--n->nopen];
      return;
    }
  }
}

/* ---- uris ------------------------------------------------------------ */

static void
uris_free(char **uris, size_t n)
{
  for (size_t i = 0; uris && i < n; i++)
    free(uris[i]);
  free(uris);
}

static char **
uris_dup(const char *const *uris, size_t n)
{
  char **v = calloc(n, sizeof *v);
  if (v == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if ((v[i] = strdup(uris[i])) == NULL) {
      uris_free(v, n);
      return NULL;
    }
  }
  return v;
}

static bool
uris_equal(char *const *a, size_t na, const char *const *b, size_t nb)
{
  if (na != nb)
    return false;
  for (size_t i = 0; i < na; i++)
    if (strcmp(a[i], b[i]) != 0)
      return false;
  return true;
}

/* ---- the image's export backend ----------------------------------------- */

static bool
cb_is_cached(void *opaque, uint64_t idx)
{
  struct node_image *img = opaque;
  return cachemgr_has(img->cv, idx);
}

static void
cb_deliver(void *opaque, uint64_t idx, const void *data, unsigned from)
{
  struct node_image *img = opaque;
  (void)from;
  /* A failed store is logged by blkcache; the block is served from the
   * fetch anyway and fetched again next time. */
  cachemgr_store(img->cv, idx, data);
  cachemgr_flight_done(img->cv, idx);
}

/* Where block b meets the read [off, off + len): the part inside the
 * block and where it goes in the caller's buffer. */
struct part {
  uint32_t in_block; /* offset inside the block */
  uint32_t n;        /* bytes */
  uint64_t in_buf;   /* offset in the read's buffer */
};

static struct part
block_part(const struct manifest *m, uint64_t b, uint64_t off, uint32_t len)
{
  uint64_t bstart = b * m->block_size;
  uint64_t bend = bstart + manifest_block_len(m, b);
  uint64_t s = off > bstart ? off : bstart;
  uint64_t e = off + len < bend ? off + len : bend;
  return (struct part){ (uint32_t)(s - bstart), (uint32_t)(e - s), s - off };
}

/* A read whose fetches were failed by an upstream update (ESHUTDOWN)
 * starts again on the new fetcher, at most this many times. */
#define READ_RESTARTS 3

static int
read_once(struct node_image *img, void *buf, uint32_t len, uint64_t off,
          bool local, struct export_lent *lent, bool *missed, int *err);

static void
hold_put(void *hold)
{
  fetch_hold_put(hold);
}

/* Bytes [at, at + n) of the read are at p in the fetch buffer h holds:
 * lent (merged with the part before when h holds that one too and the
 * bytes follow on, dropping the extra reference). */
static void
lend(struct export_lent *l, uint64_t at, uint32_t n, const void *p,
     struct fetch_hold *h)
{
  l->put = hold_put;
  if (l->n > 0) {
    struct export_lent_part *e = &l->v[l->n - 1];
    if (e->hold == (void *)h && e->at + e->len == at &&
        (const char *)e->p + e->len == (const char *)p) {
      e->len += n;
      fetch_hold_put(h);
      return;
    }
  }
  l->v[l->n++] = (struct export_lent_part){ (uint32_t)at, n, p, h };
}

static int
node_pread(void *handle, void *buf, uint32_t len, uint64_t off, bool local,
           struct export_lent *lent, int *err)
{
  struct node_image *img = handle;
  uint64_t t0 = histogram_now_ns();
  bool missed = false;
  for (int i = 0;; i++) {
    int r = read_once(img, buf, len, off, local, lent, &missed, err);
    if (r == -1 && lent)
      export_lent_release(lent);
    if (r == 0 || *err != ESHUTDOWN || i == READ_RESTARTS) {
      if (r == -1 && *err == ESHUTDOWN)
        *err = EIO;
      if (r == 0)
        histogram_observe_ns(missed ? &img->read_miss : &img->read_hit,
                             histogram_now_ns() - t0);
      return r;
    }
    log_debug(COMPONENT, "image '%s': read at %" PRIu64 " restarted: its"
              " upstreams changed while it waited", img->name, off);
  }
}

/* What read_once does for one block of the read: a fetch it waits for
 * (owning the block's flight or not), or another version's flight of the
 * same digest it waits for before copying the block. */
struct slot {
  struct fetch_req *req;
  struct flight *own, *other;
  bool pending; /* its fetch is to start (pass 1b), own flight held */
  bool retry;   /* fetch_start refused it (retry_cached: it was stored) */
  bool retry_cached;
};

/* fetch_wait_ready over the slots' requests (a copy of their pointers;
 * without memory for it, fetch_wait waits for each in turn). */
static void
wait_ready(const struct slot *slots, size_t nb)
{
  struct fetch_req *small[64];
  struct fetch_req **reqs = nb <= 64 ? small : malloc(nb * sizeof *reqs);
  if (reqs == NULL)
    return;
  for (size_t i = 0; i < nb; i++)
    reqs[i] = slots[i].req;
  fetch_wait_ready(reqs, nb);
  if (reqs != small)
    free(reqs);
}

/* Fetches block b for a read whose other version's flight came to
 * nothing (failed, or its store was refused): the part pt into dst. */
static int
fetch_alone(struct node_image *img, uint64_t b, char *dst, struct part pt,
            int *err)
{
  bool cached;
  pthread_rwlock_rdlock(&img->flock);
  struct fetch_req *q = fetch_start(img->f, b, &cached);
  pthread_rwlock_unlock(&img->flock);
  if (q == NULL) {
    int c = cached ? cachemgr_read(img->cv, b, dst, pt.in_block, pt.n, false,
                                   err) : -1;
    if (c == 1)
      return 0;
    if (c == 0 || !cached)
      *err = cached ? EIO : ENOMEM;
    return -1;
  }
  return fetch_wait(q, dst, pt.in_block, pt.n, err);
}

/* Pass 1 for block b of a read, outside a cached run: the part pt is
 * copied from the cache, or another version's flight of the same digest
 * is joined (sl->other), or the block's fetch is started (sl->req, its
 * own flight in sl->own) — with defer, only marked for it (sl->pending),
 * so that read_once starts all of a read's fetches together without a
 * call that may block in between.  0, or -1 with *err. */
static int
block_miss(struct node_image *img, uint64_t b, char *dst, struct part pt,
           bool local, bool defer, struct slot *sl, bool *missed, int *err)
{
  for (int tries = 0;; tries++) {
    int c = cachemgr_read(img->cv, b, dst, pt.in_block, pt.n, local, err);
    if (c == 1) {
      atomic_fetch_add_explicit(&img->hits, 1, memory_order_relaxed);
      return 0;
    }
    if (c == -1)
      return -1;
    bool own, cached;
    struct flight *fl = cachemgr_flight_begin(img->cv, b, &own);
    if (fl && !own && !local) {
      /* A child's read never waits for another version's fetch: two
       * nodes relaying two versions to each other (a rolling update
       * whose trees cross) would each wait for the other's, a cycle
       * broken only by the fetch timeout.  It fetches for its own
       * version instead (still one fetch per block of the version). */
      cachemgr_flight_put(img->cv, fl);
      fl = NULL;
    }
    if (fl && !own) {
      sl->other = fl;
      atomic_fetch_add_explicit(&img->misses, 1, memory_order_relaxed);
      *missed = true;
      return 0;
    }
    if (defer) {
      sl->own = fl;
      sl->pending = true;
      return 0;
    }
    sl->req = fetch_start(img->f, b, &cached);
    if (sl->req) {
      sl->own = fl;
      atomic_fetch_add_explicit(&img->misses, 1, memory_order_relaxed);
      *missed = true;
      return 0;
    }
    if (fl) {
      cachemgr_flight_done(img->cv, b);
      cachemgr_flight_put(img->cv, fl);
    }
    if (!cached || tries == 2) {
      *err = cached ? EIO : ENOMEM;
      return -1;
    }
    /* Stored between our look and the fetcher's: read it again. */
  }
}

/* One attempt of node_pread: the cached parts are copied, the missing
 * blocks fetched (then *missed is set) — or, when another version is
 * fetching a block of the same digest, copied once it is stored (single
 * flight across versions, flight.h); a local reader's blocks are marked
 * read locally (cachemgr.h).  0, or -1 with *err (ESHUTDOWN: the fetcher
 * was replaced meanwhile). */
static int
read_once(struct node_image *img, void *buf, uint32_t len, uint64_t off,
          bool local, struct export_lent *lent, bool *missed_out, int *err)
{
  const struct manifest *m = img->m;
  uint64_t first = off / m->block_size;
  uint64_t last = (off + len - 1) / m->block_size;
  size_t nb = (size_t)(last - first + 1);

  struct slot small[64];
  struct slot *slots = small;
  if (nb > 64 && (slots = calloc(nb, sizeof *slots)) == NULL) {
    *err = ENOMEM;
    return -1;
  }
  memset(slots, 0, (nb > 64 ? nb : 64) * sizeof *slots);

  int r = 0;
  bool missed = false;
  pthread_rwlock_rdlock(&img->flock);

  /* Pass 1: cached parts are copied now; misses start (or join) fetches,
   * so every missing block of the read is in flight at once.  The
   * fetches start together once the cache has been looked at (1b), the
   * connection threads woken once at the end (fetch_plug: runs of blocks
   * per NBD read instead of one or two); nothing that may block (a
   * pread, a cache lock an eviction holds) runs while their wake-up is
   * held back, or a block queued early would wait for it. */
  for (uint64_t b = first; b <= last && r == 0; b++) {
    struct part pt = block_part(m, b, off, len);
    char *dst = (char *)buf + pt.in_buf;
    if (b < last) {
      /* The cached blocks from b on in one pread (issue 17: a pread per
       * block was 16 system calls per 1 MiB read). */
      uint64_t nblk;
      ssize_t got = cachemgr_read_run(img->cv, b, pt.in_block,
                                      len - pt.in_buf, dst, local, &nblk,
                                      err);
      if (got < 0) {
        r = -1;
        break;
      }
      if (got > 0) {
        atomic_fetch_add_explicit(&img->hits, nblk, memory_order_relaxed);
        b += nblk - 1;
        continue;
      }
    }
    r = block_miss(img, b, dst, pt, local, true, &slots[b - first], &missed,
                   err);
  }

  /* Pass 1b: the fetches, queued without a wake-up in between. */
  fetch_plug(img->f);
  for (uint64_t b = first; b <= last && r == 0; b++) {
    struct slot *sl = &slots[b - first];
    if (!sl->pending)
      continue;
    sl->pending = false;
    bool cached;
    sl->req = fetch_start(img->f, b, &cached);
    if (sl->req) {
      atomic_fetch_add_explicit(&img->misses, 1, memory_order_relaxed);
      missed = true;
    } else {
      sl->retry = true;
      sl->retry_cached = cached;
    }
  }
  /* Readahead, for sequential readers only: the block before the read is
   * cached, so the reader is walking forward. */
  if (r == 0 && missed && img->node->p.readahead > 0 &&
      (first == 0 || blkcache_has(img->bc, first - 1))) {
    for (uint64_t b = last + 1;
         b <= last + img->node->p.readahead && b < m->nblocks; b++)
      fetch_prefetch(img->f, b);
  }
  fetch_unplug(img->f);

  /* Pass 1c: what fetch_start refused (stored meanwhile: read again), and
   * after an error, the flights of fetches never started. */
  for (uint64_t b = first; b <= last; b++) {
    struct slot *sl = &slots[b - first];
    if (!sl->pending && !sl->retry)
      continue;
    if (sl->own) {
      cachemgr_flight_done(img->cv, b);
      cachemgr_flight_put(img->cv, sl->own);
      sl->own = NULL;
    }
    bool again = sl->retry && r == 0;
    sl->pending = sl->retry = false;
    if (!again)
      continue;
    if (!sl->retry_cached) {
      *err = ENOMEM;
      r = -1;
      continue;
    }
    struct part pt = block_part(m, b, off, len);
    r = block_miss(img, b, (char *)buf + pt.in_buf, pt, local, false, sl,
                   &missed, err);
  }
  pthread_rwlock_unlock(&img->flock);

  /* Pass 2: wait for the fetches (each releases its request), without
   * the lock: see the note at the top; the flights this read owns end
   * before it waits for any other (flight.h).  One wake-up for all of
   * them (issue 17: a wake-up per block cost ~6% of a cold relay's CPU). */
  if (missed)
    wait_ready(slots, nb);
  for (uint64_t b = first; b <= last; b++) {
    struct slot *sl = &slots[b - first];
    if (sl->req == NULL)
      continue;
    struct part pt = block_part(m, b, off, len);
    int e2 = 0;
    /* Lent from the fetch's buffer, not copied (while there is room). */
    bool can_lend = lent && lent->n < EXPORT_LENT_MAX;
    const void *p = NULL;
    struct fetch_hold *h = NULL;
    if (fetch_wait_hold(sl->req, (char *)buf + pt.in_buf, pt.in_block, pt.n,
                        can_lend ? &p : NULL, can_lend ? &h : NULL,
                        &e2) == -1) {
      if (r == 0) {
        *err = e2;
        r = -1;
      }
    } else {
      if (h)
        lend(lent, pt.in_buf, pt.n, p, h);
      if (local)
        cachemgr_touch_local(img->cv, b);
    }
    if (sl->own) {
      cachemgr_flight_done(img->cv, b);
      cachemgr_flight_put(img->cv, sl->own);
    }
  }
  /* Pass 3: blocks another version was fetching: copied once stored. */
  for (uint64_t b = first; b <= last; b++) {
    struct slot *sl = &slots[b - first];
    if (sl->other == NULL)
      continue;
    cachemgr_flight_wait(img->cv, sl->other);
    if (r != 0)
      continue;
    struct part pt = block_part(m, b, off, len);
    char *dst = (char *)buf + pt.in_buf;
    int c = cachemgr_read(img->cv, b, dst, pt.in_block, pt.n, local, err);
    if (c == 0 && (c = fetch_alone(img, b, dst, pt, err) == 0 ? 1 : -1) == 1 &&
        local)
      cachemgr_touch_local(img->cv, b);
    if (c == -1)
      r = -1;
  }
  if (slots != small)
    free(slots);
  if (missed)
    *missed_out = true;
  return r;
}

static int
node_cache(void *handle, uint64_t len, uint64_t off, int *err)
{
  struct node_image *img = handle;
  const struct manifest *m = img->m;
  uint64_t first = off / m->block_size;
  uint64_t last = (off + len - 1) / m->block_size;
  if (last - first >= CACHE_HINT_MAX)
    last = first + CACHE_HINT_MAX - 1;
  pthread_rwlock_rdlock(&img->flock);
  for (uint64_t b = first; b <= last; b++)
    fetch_prefetch(img->f, b);
  pthread_rwlock_unlock(&img->flock);
  return 0;
}

static void
image_free(struct node_image *img)
{
  if (img->f)
    fetcher_free(img->f);
  cachemgr_release(img->cv);
  if (img->m) {
    pthread_mutex_lock(&img->node->lock);
    version_del(img->node, img->m->version_hex);
    pthread_mutex_unlock(&img->node->lock);
    log_info(COMPONENT, "image '%s' version %.16s closed", img->name,
             img->m->version_hex);
  }
  manifest_free(img->m);
  uris_free(img->uris, img->nuris);
  pthread_rwlock_destroy(&img->flock);
  free(img->name);
  free(img);
}

static void
node_close(void *handle)
{
  image_free(handle);
}

/* export_ops.may_block: a read waits for a fetch unless every block of
 * it is cached or zero (a block copied from another version by digest
 * counts as a wait: that copy reads the disk, rarely). */
static bool
node_may_block(void *handle, uint32_t len, uint64_t off)
{
  struct node_image *img = handle;
  uint32_t bs = img->m->block_size;
  for (uint64_t b = off / bs, last = (off + len - 1) / bs; b <= last; b++)
    if (!cachemgr_cached(img->cv, b))
      return true;
  return false;
}

static const struct export_ops node_ops = {
  .pread_from = node_pread,
  .cache = node_cache,
  .close = node_close,
  .may_block = node_may_block,
};

/* ---- attachment records --------------------------------------------------- */

static int
write_file_atomic(const char *dir, const char *name, const char *data,
                  size_t len)
{
  char path[PATH_MAX], tmp[PATH_MAX];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path ||
      (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= sizeof tmp) {
    log_error(COMPONENT, "%s/%s: path too long", dir, name);
    return -1;
  }
  CLEANUP_CLOSE int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                              0600);
  if (fd == -1) {
    log_error(COMPONENT, "open: %s: %m", tmp);
    return -1;
  }
  size_t done = 0;
  while (done < len) {
    ssize_t w = write(fd, data + done, len - done);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      log_error(COMPONENT, "write: %s: %m", tmp);
      unlink(tmp);
      return -1;
    }
    done += (size_t)w;
  }
  if (fsync(fd) == -1 || rename(tmp, path) == -1) {
    log_error(COMPONENT, "fsync/rename: %s: %m", path);
    unlink(tmp);
    return -1;
  }
  CLEANUP_CLOSE int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0)
    fsync(dfd);
  return 0;
}

static int
record_attachment(struct node *n, const char *name, const char *version,
                  char *const *uris, size_t nuris)
{
  CLEANUP_JSON_PUT struct json_object *o = json_object_new_object();
  struct json_object *a = json_object_new_array();
  if (o == NULL || a == NULL) {
    json_object_put(a);
    return -1;
  }
  json_object_object_add(o, "name", json_object_new_string(name));
  json_object_object_add(o, "version", json_object_new_string(version));
  for (size_t i = 0; i < nuris; i++)
    json_object_array_add(a, json_object_new_string(uris[i]));
  json_object_object_add(o, "upstreams", a);
  const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
  char dir[PATH_MAX], file[MANIFEST_NAME_MAX + 8];
  snprintf(dir, sizeof dir, "%s/" ATTACHED_DIR, n->root);
  snprintf(file, sizeof file, "%s.json", name);
  return write_file_atomic(dir, file, s, strlen(s));
}

static void
forget_attachment(struct node *n, const char *name)
{
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/" ATTACHED_DIR "/%s.json", n->root, name);
  if (unlink(path) == -1 && errno != ENOENT)
    log_warn(COMPONENT, "unlink: %s: %m", path);
}

/* Reads a whole small file; NULL (logged) on error or if over max. */
static char *
read_small_file(const char *path, size_t max, size_t *len)
{
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd == -1) {
    if (errno != ENOENT)
      log_error(COMPONENT, "open: %s: %m", path);
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
      (uint64_t)st.st_size > max) {
    log_error(COMPONENT, "%s: not a regular file of at most %zu bytes", path,
              max);
    return NULL;
  }
  size_t sz = (size_t)st.st_size;
  char *buf = malloc(sz + 1);
  if (buf == NULL)
    return NULL;
  size_t got = 0;
  while (got < sz) {
    ssize_t r = read(fd, buf + got, sz - got);
    if (r <= 0) {
      if (r == -1 && errno == EINTR)
        continue;
      log_error(COMPONENT, "read: %s: %s", path,
                r == 0 ? "file shrank" : strerror(errno));
      free(buf);
      return NULL;
    }
    got += (size_t)r;
  }
  buf[sz] = '\0';
  *len = sz;
  return buf;
}

/* The manifest bytes of version from the cache directory, if there and
 * intact; NULL otherwise. */
static char *
cached_manifest(struct node *n, const char *version, size_t *len)
{
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s/manifest.json", n->root, version);
  char *bytes = read_small_file(path, MANIFEST_FILE_MAX, len);
  if (bytes == NULL)
    return NULL;
  uint8_t d[DIGEST_LEN];
  char hex[DIGEST_HEX_LEN + 1];
  digest_sha256(bytes, *len, d);
  digest_to_hex(d, hex);
  if (strcmp(hex, version) != 0) {
    log_warn(COMPONENT, "%s: does not match version %s; fetching it again",
             path, version);
    free(bytes);
    return NULL;
  }
  return bytes;
}

/* ---- JSON views ------------------------------------------------------------ */

static void
add_u64(struct json_object *o, const char *k, uint64_t v)
{
  json_object_object_add(o, k, json_object_new_uint64(v));
}

static struct json_object *
image_json(struct node_image *img, struct export *exp)
{
  struct json_object *o = json_object_new_object();
  struct json_object *ups = json_object_new_array();
  struct json_object *c = json_object_new_object();
  if (o == NULL || ups == NULL || c == NULL) {
    json_object_put(o);
    json_object_put(ups);
    json_object_put(c);
    return NULL;
  }
  const struct manifest *m = img->m;
  json_object_object_add(o, "name", json_object_new_string(img->name));
  json_object_object_add(o, "version", json_object_new_string(m->version_hex));
  json_object_object_add(o, "state", json_object_new_string("attached"));
  add_u64(o, "size", m->size);
  add_u64(o, "block_size", m->block_size);
  add_u64(o, "blocks", m->nblocks);

  struct fetch_stats fs = { 0 };
  pthread_rwlock_rdlock(&img->flock);
  fetch_get_stats(img->f, &fs);
  pthread_rwlock_unlock(&img->flock);
  uint64_t verify_failures = 0;
  for (size_t i = 0; i < fs.nupstreams; i++) {
    struct fetch_upstream_stats *u = &fs.upstreams[i];
    struct json_object *uo = json_object_new_object();
    if (uo == NULL)
      continue;
    json_object_object_add(uo, "uri", json_object_new_string(u->uri));
    add_u64(uo, "blocks", u->blocks);
    add_u64(uo, "bytes", u->bytes);
    add_u64(uo, "verify_failures", u->verify_failures);
    add_u64(uo, "errors", u->errors);
    json_object_object_add(uo, "faulty", json_object_new_boolean(u->faulty));
    json_object_array_add(ups, uo);
    verify_failures += u->verify_failures;
  }
  free(fs.upstreams);
  json_object_object_add(o, "upstreams", ups);

  struct export_counters ec;
  export_get_counters(exp, &ec);
  struct blkcache_stats bs;
  blkcache_get_stats(img->bc, &bs);
  add_u64(c, "served_local_bytes", ec.served_local_bytes);
  add_u64(c, "served_remote_bytes", ec.served_remote_bytes);
  add_u64(c, "reads", ec.reads);
  add_u64(c, "hits", atomic_load(&img->hits));
  add_u64(c, "misses", atomic_load(&img->misses));
  add_u64(c, "fetches", fs.fetches);
  add_u64(c, "joined", fs.joined);
  add_u64(c, "prefetches", fs.prefetches);
  add_u64(c, "verify_failures", verify_failures);
  add_u64(c, "failovers", fs.failovers);
  add_u64(c, "fetch_failures", fs.failed);
  add_u64(c, "stalls", fs.stalls);
  add_u64(c, "stall_failures", fs.stall_failures);
  add_u64(c, "outages", fs.outages);
  add_u64(c, "outage_ms", fs.outage_ms);
  add_u64(c, "stalled_now", fs.stalled_now);
  add_u64(c, "cache_corrupt_evicted", bs.corrupt_evicted);
  add_u64(c, "valid_cache_bytes", bs.valid_bytes);
  add_u64(c, "present_cache_bytes", bs.present_bytes);
  add_u64(c, "cached_blocks", bs.present_blocks);
  json_object_object_add(o, "counters", c);
  json_object_object_add(o, "cache", cachemgr_version_json(img->cv));
  return o;
}

struct json_object *
node_image_json(struct node *n, const char *name)
{
  struct export *exp = exports_lookup(n->reg, name, strlen(name));
  if (exp == NULL)
    return NULL;
  struct node_image *img = export_handle_if(exp, &node_ops);
  struct json_object *o = img ? image_json(img, exp) : NULL;
  export_put(exp);
  return o;
}

int
node_image_histograms(struct node *n, const char *name, struct histogram *hit,
                      struct histogram *miss)
{
  struct export *exp = exports_lookup(n->reg, name, strlen(name));
  if (exp == NULL)
    return -1;
  struct node_image *img = export_handle_if(exp, &node_ops);
  if (img) {
    histogram_add(hit, &img->read_hit);
    histogram_add(miss, &img->read_miss);
  }
  export_put(exp);
  return img ? 0 : -1;
}

struct list_ctx {
  struct json_object *arr;
};

static int
list_one(struct export *exp, void *opaque)
{
  struct list_ctx *ctx = opaque;
  struct node_image *img = export_handle_if(exp, &node_ops);
  if (img) {
    struct json_object *o = image_json(img, exp);
    if (o)
      json_object_array_add(ctx->arr, o);
  }
  return 0;
}

struct json_object *
node_list_json(struct node *n)
{
  struct json_object *o = json_object_new_object();
  struct list_ctx ctx = { json_object_new_array() };
  if (o == NULL || ctx.arr == NULL) {
    json_object_put(o);
    json_object_put(ctx.arr);
    return NULL;
  }
  exports_foreach(n->reg, list_one, &ctx);
  json_object_object_add(o, "images", ctx.arr);
  return o;
}

/* ---- attach / detach ------------------------------------------------------------ */

static struct fetch_callbacks
callbacks(struct node_image *img)
{
  return (struct fetch_callbacks){ .is_cached = cb_is_cached,
                                   .deliver = cb_deliver, .opaque = img };
}

/* Replaces the upstreams of an attached image; the caller holds n->lock. */
static enum node_result
update_upstreams(struct node *n, struct node_image *img,
                 const char *const *uris, size_t nuris, char *err,
                 size_t errlen)
{
  char **copy = uris_dup(uris, nuris);
  struct fetch_callbacks cb = callbacks(img);
  struct fetcher *f = copy ? fetcher_new(img->m, uris, nuris, &n->p.fetch, &cb)
                           : NULL;
  if (f == NULL) {
    uris_free(copy, nuris);
    snprintf(err, errlen, "cannot start fetching from the new upstreams");
    return NODE_INTERNAL;
  }
  pthread_rwlock_wrlock(&img->flock);
  struct fetcher *old = img->f;
  char **old_uris = img->uris;
  size_t old_n = img->nuris;
  img->f = f;
  img->uris = copy;
  img->nuris = nuris;
  pthread_rwlock_unlock(&img->flock);
  fetcher_free(old);
  uris_free(old_uris, old_n);
  log_info(COMPONENT, "image '%s': upstreams updated (%zu, parent %s)",
           img->name, nuris, uris[0]);
  return NODE_OK;
}

void
node_set_hooks(struct node *n, const struct node_hooks *h)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&n->lock);
  n->hooks = *h;
}

/* Runs the attach hook: NODE_OK or the failure to fail with.  Under
 * lock. */
static enum node_result
run_attach_hook(struct node *n, const char *name, const struct manifest *m,
                bool replacing, char *err, size_t errlen)
{
  if (n->hooks.attach == NULL)
    return NODE_OK;
  enum node_result status = n->hooks.attach(n->hooks.opaque, name, m, replacing, err,
                               errlen);
  if (status != NODE_OK && n->restoring) {
    log_warn(COMPONENT, "'%s': %s (serving it anyway)", name, err);
    return NODE_OK;
  }
  return status;
}

static enum node_result attach_new(struct node *n, const char *name, struct manifest *m,
                      const char *mbytes, size_t mlen,
                      const char *const *uris, size_t nuris,
                      struct json_object **reply, char *err, size_t errlen);

enum node_result
node_attach(struct node *n, const char *name, const char *version,
            const char *const *uris, size_t nuris, struct json_object **reply,
            char *err, size_t errlen)
{
  if (!manifest_name_valid(name)) {
    snprintf(err, errlen, "invalid image name");
    return NODE_INVALID;
  }
  uint8_t vd[DIGEST_LEN];
  if (digest_from_hex(version, vd) == -1 || nuris == 0) {
    snprintf(err, errlen, nuris ? "invalid version" : "no upstream");
    return NODE_INVALID;
  }

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&n->lock);

  /* Already attached? */
  struct export *cur = exports_lookup(n->reg, name, strlen(name));
  struct node_image *cimg = cur ? export_handle_if(cur, &node_ops) : NULL;
  if (cur && cimg == NULL) {
    export_put(cur);
    snprintf(err, errlen, "an export named '%s' exists and is not a node image",
             name);
    return NODE_CONFLICT;
  }
  if (cimg && strcmp(cimg->m->version_hex, version) == 0) {
    enum node_result status = run_attach_hook(n, name, cimg->m, false, err, errlen);
    if (status != NODE_OK) {
      export_put(cur);
      return status;
    }
    pthread_rwlock_rdlock(&cimg->flock);
    bool same = uris_equal(cimg->uris, cimg->nuris, uris, nuris);
    pthread_rwlock_unlock(&cimg->flock);
    if (!same)
      status = update_upstreams(n, cimg, uris, nuris, err, errlen);
    if (status == NODE_OK) {
      record_attachment(n, name, version, (char *const *)uris, nuris);
      if (reply)
        *reply = image_json(cimg, cur);
    }
    export_put(cur);
    return status;
  }
  bool replacing = cur != NULL;
  if (cur)
    export_put(cur);
  if (version_open(n, version)) {
    snprintf(err, errlen, "version %.16s of '%s' is still open by connections"
             " to a detached image; retry when they end", version, name);
    return NODE_CONFLICT;
  }

  /* The manifest: from the cache when it is there, else from upstream. */
  size_t mlen = 0;
  CLEANUP_FREE char *mbytes = cached_manifest(n, version, &mlen);
  if (mbytes == NULL) {
    char why[1024];
    int fr = fetch_manifest(uris, nuris, name, version,
                            n->p.fetch.timeout_ms, &mbytes, &mlen, why,
                            sizeof why);
    if (fr == FETCH_MANIFEST_UNKNOWN) {
      snprintf(err, errlen, "no upstream has an image '%s'", name);
      return NODE_NOT_FOUND;
    }
    if (fr == FETCH_MANIFEST_OTHER_VERSION) {
      snprintf(err, errlen, "the upstreams serve another version of '%s'"
               " than %.16s", name, version);
      return NODE_CONFLICT;
    }
    if (fr != 0) {
      snprintf(err, errlen, "no upstream gave the manifest of '%s' version"
               " %.16s (unreachable or failing%s%.700s)", name, version,
               why[0] ? "; last: " : "", why);
      return NODE_UPSTREAM;
    }
  }
  char origin[128];
  snprintf(origin, sizeof origin, "manifest of '%s'", name);
  struct manifest *m = manifest_parse(mbytes, mlen, origin);
  if (m == NULL) {
    snprintf(err, errlen, "the manifest of '%s' is invalid", name);
    return NODE_UPSTREAM;
  }
  if (strcmp(m->name, name) != 0) {
    snprintf(err, errlen, "the manifest of version %.16s names image '%s'",
             version, m->name);
    manifest_free(m);
    return NODE_CONFLICT;
  }
  enum node_result hs = run_attach_hook(n, name, m, replacing, err, errlen);
  if (hs != NODE_OK) {
    manifest_free(m);
    return hs;
  }
  /* From here a failure undoes the hook of a new attachment. */
  enum node_result status = attach_new(n, name, m, mbytes, mlen, uris, nuris, reply,
                                      err, errlen);
  if (status != NODE_ATTACHED && !replacing && n->hooks.detach) {
    char uerr[256];
    if (n->hooks.detach(n->hooks.opaque, name, true, uerr, sizeof uerr) !=
        NODE_OK)
      log_warn(COMPONENT, "'%s': undoing the attach: %s", name, uerr);
  }
  return status;
}

/* The second half of node_attach: a new image (or a new version) with its
 * manifest m (taken over), cache, fetcher and exports.  Under n->lock. */
static enum node_result
attach_new(struct node *n, const char *name, struct manifest *m,
           const char *mbytes, size_t mlen, const char *const *uris,
           size_t nuris, struct json_object **reply, char *err, size_t errlen)
{
  const char *version = m->version_hex;
  enum node_result fail_status = NODE_INTERNAL;
  struct node_image *img = calloc(1, sizeof *img);
  if (img == NULL || (img->name = strdup(name)) == NULL ||
      (img->uris = uris_dup(uris, nuris)) == NULL) {
    if (img)
      free(img->name);
    free(img);
    manifest_free(m);
    snprintf(err, errlen, "out of memory");
    return NODE_INTERNAL;
  }
  img->node = n;
  img->nuris = nuris;
  histogram_init(&img->read_hit, histogram_io_bounds, histogram_io_nbounds);
  histogram_init(&img->read_miss, histogram_io_bounds, histogram_io_nbounds);
  pthread_rwlock_init(&img->flock, NULL);
  img->m = m;
  if (version_add(n, version) == -1) {
    img->m = NULL; /* not registered: image_free must not remove it */
    manifest_free(m);
    image_free(img);
    snprintf(err, errlen, "out of memory");
    return NODE_INTERNAL;
  }
  enum cachemgr_result cres;
  img->cv = cachemgr_acquire(n->cm, mbytes, mlen, &cres, err, errlen);
  if (img->cv == NULL) {
    /* NODE_NO_SPACE (507): the cache cannot hold even the manifest (docs/control.md). */
    fail_status = cres == CACHEMGR_NO_ROOM ? NODE_NO_SPACE : NODE_INTERNAL;
    goto fail_unlocked_image;
  }
  img->bc = cachemgr_blkcache(img->cv);
  struct fetch_callbacks cb = callbacks(img);
  img->f = fetcher_new(m, uris, nuris, &n->p.fetch, &cb);
  if (img->f == NULL) {
    snprintf(err, errlen, "cannot start fetching");
    goto fail_unlocked_image;
  }

  char desc[128], mname[MANIFEST_EXPORT_NAME_MAX];
  snprintf(desc, sizeof desc, "thunder image (%s, version %.16s, node cache)",
           image_format_name(m->format), m->version_hex);
  manifest_export_name(name, mname);
  struct export *exp = export_new(name, m->size, m->block_size, desc,
                                  &node_ops, img);
  if (exp == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail_unlocked_image;
  }
  struct export *mexp = export_new_bytes(mname, mbytes, mlen,
                                         "thunder manifest");
  if (mexp == NULL || exports_replace(n->reg, mexp) == -1) {
    export_put(mexp);
    snprintf(err, errlen, "out of memory");
    goto fail_export;
  }
  /* At restore the record is what was just read: rewriting it (two
   * fsyncs) would only slow the restart down. */
  if (!n->restoring &&
      record_attachment(n, name, version, (char *const *)uris, nuris) == -1) {
    exports_remove(n->reg, mname);
    snprintf(err, errlen, "cannot record the attachment under %s", n->root);
    goto fail_export;
  }
  if (reply)
    *reply = image_json(img, exp);
  export_get(exp); /* for the log line below */
  /* The image replaced, if any: its last reference may close it, which
   * takes n->lock, so it is dropped below with the lock released. */
  struct export *old = exports_lookup(n->reg, name, strlen(name));
  if (exports_replace(n->reg, exp) == -1) {
    if (old)
      export_put(old);
    export_put(exp);
    exports_remove(n->reg, mname);
    forget_attachment(n, name);
    if (reply) {
      json_object_put(*reply);
      *reply = NULL;
    }
    snprintf(err, errlen, "out of memory");
    goto fail_export;
  }
  log_info(COMPONENT, "attached '%s' version %s (%" PRIu64 " bytes, %"
           PRIu64 " blocks of %" PRIu32 "), parent %s, %zu upstreams",
           name, version, m->size, m->nblocks, m->block_size, uris[0], nuris);
  export_put(exp);
  if (old) {
    pthread_mutex_unlock(&n->lock);
    export_put(old);
    pthread_mutex_lock(&n->lock);
  }
  return NODE_ATTACHED;

fail_export:
  /* The export owns img now; dropping it closes img (which takes
   * n->lock to forget the version), so release the lock around it. */
  pthread_mutex_unlock(&n->lock);
  export_put(exp);
  pthread_mutex_lock(&n->lock);
  return NODE_INTERNAL;

fail_unlocked_image:
  pthread_mutex_unlock(&n->lock);
  image_free(img);
  pthread_mutex_lock(&n->lock);
  return fail_status;
}

enum node_result
node_detach(struct node *n, const char *name, char *err, size_t errlen)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&n->lock);
  struct export *cur = exports_lookup(n->reg, name, strlen(name));
  bool ours = cur && export_handle_if(cur, &node_ops);
  if (!ours) {
    if (cur)
      export_put(cur);
    snprintf(err, errlen, "image '%s' is not attached", name);
    return NODE_NOT_FOUND;
  }
  if (n->hooks.detach) {
    enum node_result status =
        n->hooks.detach(n->hooks.opaque, name, false, err, errlen);
    if (status != NODE_OK) {
      export_put(cur);
      return status;
    }
  }
  char mname[MANIFEST_EXPORT_NAME_MAX];
  manifest_export_name(name, mname);
  exports_remove(n->reg, mname);
  exports_remove(n->reg, name);
  forget_attachment(n, name);
  log_info(COMPONENT, "detached '%s'", name);
  /* The last reference may close the image, which takes n->lock. */
  pthread_mutex_unlock(&n->lock);
  export_put(cur);
  pthread_mutex_lock(&n->lock);
  return NODE_OK;
}

/* ---- restore, new, free ----------------------------------------------------- */

/* Re-attaches the image recorded in one attachment file. */
static void
restore_one(struct node *n, const char *path)
{
  size_t len;
  CLEANUP_FREE char *text = read_small_file(path, ATTACH_FILE_MAX, &len);
  if (text == NULL)
    return;
  char perr[256];
  CLEANUP_JSON_PUT struct json_object *o =
      jsonutil_parse(text, len, 4, JSONUTIL_OBJECT, path, perr, sizeof perr);
  struct json_object *jn, *jv, *ju;
  if (o == NULL ||
      !json_object_object_get_ex(o, "name", &jn) ||
      !json_object_is_type(jn, json_type_string) ||
      !json_object_object_get_ex(o, "version", &jv) ||
      !json_object_is_type(jv, json_type_string) ||
      !json_object_object_get_ex(o, "upstreams", &ju) ||
      !json_object_is_type(ju, json_type_array) ||
      json_object_array_length(ju) == 0 ||
      json_object_array_length(ju) > 64) {
    log_error(COMPONENT, "%s: not an attachment record; ignored", path);
    return;
  }
  size_t nu = json_object_array_length(ju);
  const char *uris[64];
  for (size_t i = 0; i < nu; i++) {
    struct json_object *e = json_object_array_get_idx(ju, i);
    if (!json_object_is_type(e, json_type_string)) {
      log_error(COMPONENT, "%s: field 'upstreams[%zu]': not a string", path, i);
      return;
    }
    uris[i] = json_object_get_string(e);
  }
  char err[512];
  enum node_result status = node_attach(n, json_object_get_string(jn),
                                       json_object_get_string(jv), uris, nu,
                                       NULL, err, sizeof err);
  if (status != NODE_OK && status != NODE_ATTACHED)
    log_error(COMPONENT, "%s: cannot re-attach: %s", path, err);
}

int
node_restore(struct node *n)
{
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/" ATTACHED_DIR, n->root);
  DIR *d = opendir(dir);
  if (d == NULL) {
    log_error(COMPONENT, "opendir: %s: %m", dir);
    return -1;
  }
  pthread_mutex_lock(&n->lock);
  n->restoring = true;
  pthread_mutex_unlock(&n->lock);
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t l = strlen(de->d_name);
    if (de->d_name[0] == '.' || l <= 5 || strcmp(de->d_name + l - 5, ".json"))
      continue;
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, de->d_name) <
        sizeof path)
      restore_one(n, path);
  }
  closedir(d);
  pthread_mutex_lock(&n->lock);
  n->restoring = false;
  pthread_mutex_unlock(&n->lock);
  struct json_object *l = node_list_json(n);
  int count = l ? (int)json_object_array_length(
                      json_object_object_get(l, "images"))
                : 0;
  json_object_put(l);
  return count;
}

struct node *
node_new(struct exports *reg, const char *cache_root,
         const struct node_params *p)
{
  char dir[PATH_MAX];
  if ((size_t)snprintf(dir, sizeof dir, "%s/" ATTACHED_DIR, cache_root) >=
      sizeof dir - 80) {
    log_error(COMPONENT, "cache: %s: path too long", cache_root);
    return NULL;
  }
  if ((mkdir(cache_root, 0700) == -1 && errno != EEXIST) ||
      (mkdir(dir, 0700) == -1 && errno != EEXIST)) {
    log_error(COMPONENT, "mkdir: %s: %m", dir);
    return NULL;
  }
  struct stat st;
  if (stat(cache_root, &st) == -1 || !S_ISDIR(st.st_mode)) {
    log_error(COMPONENT, "cache: %s: not a directory", cache_root);
    return NULL;
  }
  struct node *n = calloc(1, sizeof *n);
  if (n == NULL || (n->root = strdup(cache_root)) == NULL) {
    free(n);
    log_error(COMPONENT, "calloc: %m");
    return NULL;
  }
  n->reg = reg;
  n->p = *p;
  n->p.cache.commit_interval_ms = p->commit_interval_ms;
  if ((n->cm = cachemgr_new(cache_root, &n->p.cache)) == NULL) {
    free(n->root);
    free(n);
    return NULL;
  }
  pthread_mutex_init(&n->lock, NULL);
  return n;
}

struct json_object *
node_cache_json(struct node *n)
{
  return cachemgr_json(n->cm);
}

uint64_t
node_cache_gc(struct node *n)
{
  return cachemgr_gc(n->cm);
}

static int
collect_names(struct export *exp, void *opaque)
{
  struct json_object *arr = opaque;
  if (export_handle_if(exp, &node_ops))
    json_object_array_add(arr, json_object_new_string(export_name(exp)));
  return 0;
}

static int
stop_stalling_one(struct export *exp, void *opaque)
{
  struct node_image *img = export_handle_if(exp, &node_ops);
  (void)opaque;
  if (img) {
    pthread_rwlock_rdlock(&img->flock);
    fetch_stop_stalling(img->f);
    pthread_rwlock_unlock(&img->flock);
  }
  return 0;
}

void
node_stop_stalling(struct node *n)
{
  exports_foreach(n->reg, stop_stalling_one, NULL);
}

void
node_free(struct node *n)
{
  if (n == NULL)
    return;
  /* Withdraw every image; attachments stay recorded for the next start. */
  struct json_object *names = json_object_new_array();
  if (names) {
    exports_foreach(n->reg, collect_names, names);
    for (size_t i = 0; i < json_object_array_length(names); i++) {
      const char *name = json_object_get_string(
          json_object_array_get_idx(names, i));
      char mname[MANIFEST_EXPORT_NAME_MAX];
      manifest_export_name(name, mname);
      exports_remove(n->reg, mname);
      exports_remove(n->reg, name);
    }
    json_object_put(names);
  }
  cachemgr_free(n->cm);
  for (size_t i = 0; i < n->nopen; i++)
    free(n->open_versions[i]);
  free(n->open_versions);
  pthread_mutex_destroy(&n->lock);
  free(n->root);
  free(n);
}
