/* thunder — eviction; see reclaim.h.
 *
 * Design note.  One pass (reclaim_run):
 *
 *   1. under the shared lock, collect candidates (stamp, version, block)
 *      of the phase's blocks: present and durable blocks (a block still
 *      waiting for its commit was stored a moment ago) of unattached
 *      versions (phase 1), of attached versions that no local VM read in
 *      the last local_recent_ms (phase 2: read by child nodes only, or
 *      fetched ahead, or not read for long), of attached versions that
 *      a local VM did (phase 3); in attached versions only blocks not
 *      used for RECLAIM_GUARD_MS; and only those
 *      at or below a stamp cutoff found from a histogram of the stamps
 *      (two scans, no allocation per block), so a pass over a large cache
 *      sorts about what it evicts, not every block;
 *   2. sort them by stamp (least recent first), take the shortest prefix
 *      that frees what is needed, group it by version and evict each
 *      group with one blkcache_evict (one bitmap commit per version);
 *   3. each phase only if the ones before did not free enough;
 *   4. under the exclusive lock, take unattached versions left with no
 *      block (or all of them for cachemgr_gc) out of the list and the
 *      index; close and remove them without the lock.
 *
 * The shared lock keeps every version open while its blocks are evicted;
 * attaching waits for a pass to end (writers are preferred, so a pass
 * does not starve them for longer than one pass).
 */
#include "reclaim.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cacheint.h"
#include "cleanup.h"
#include "log.h"

#define COMP "cache"

struct cand {
  uint64_t stamp;
  struct cachever *cv;
  uint64_t idx;
};

struct cands {
  struct cand *v;
  size_t n, cap;
};

static int
cand_push(struct cands *c, uint64_t stamp, struct cachever *cv, uint64_t idx)
{
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 1024;
    struct cand *v = realloc(c->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    c->v = v;
    c->cap = cap;
  }
  c->v[c->n++] = (struct cand){ stamp, cv, idx };
  return 0;
}

static int
by_stamp(const void *a, const void *b)
{
  const struct cand *x = a, *y = b;
  if (x->stamp != y->stamp)
    return x->stamp < y->stamp ? -1 : 1;
  if (x->cv != y->cv)
    return (uintptr_t)x->cv < (uintptr_t)y->cv ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int
by_version(const void *a, const void *b)
{
  const struct cand *x = a, *y = b;
  if (x->cv != y->cv)
    return (uintptr_t)x->cv < (uintptr_t)y->cv ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

enum phase {
  PHASE_UNATTACHED,   /* versions no image holds */
  PHASE_NOT_LOCAL,    /* attached; no local VM read it lately */
  PHASE_LOCAL,        /* attached; a local VM read it lately */
};

/* True if cv's blocks are this phase's candidates at all. */
static inline bool
in_phase(const struct cachever *cv, enum phase ph)
{
  return (cv->refs > 0) == (ph != PHASE_UNATTACHED);
}

/* True if block i of cv (in_phase) may be evicted in phase ph; *stamp
 * gets its stamp. */
static inline bool
eligible(struct cachever *cv, uint64_t i, enum phase ph, uint64_t now,
         uint64_t *stamp)
{
  if (!blkcache_evictable(cv->bc, i))
    return false;
  *stamp = lru_stamp(cv->lru, i);
  if (ph == PHASE_UNATTACHED)
    return true;
  if (*stamp + RECLAIM_GUARD_MS > now)
    return false;
  uint64_t l = lru_local_stamp(cv->lru, i);
  bool local = l != 0 && l + cv->cm->p.local_recent_ms > now;
  return local == (ph == PHASE_LOCAL);
}

/* The stamp at or below which the least recently used eligible blocks add
 * up to need bytes (roughly: to a histogram bucket), so that only those
 * are collected and sorted, not every block of a large cache. */
static uint64_t
cutoff(struct cachemgr *cm, enum phase ph, uint64_t need, uint64_t now)
{
  enum { NBUCKETS = 4096 };
  uint64_t lo = UINT64_MAX, hi = 0, s;
  for (struct cachever *cv = cm->versions; cv; cv = cv->next)
    if (in_phase(cv, ph))
      for (uint64_t i = 0; i < cv->m->nblocks; i++)
        if (eligible(cv, i, ph, now, &s)) {
          lo = s < lo ? s : lo;
          hi = s > hi ? s : hi;
        }
  if (lo >= hi)
    return hi;
  uint64_t width = (hi - lo) / NBUCKETS + 1;
  CLEANUP_FREE uint64_t *bytes = calloc(NBUCKETS, sizeof *bytes);
  if (bytes == NULL)
    return hi;
  for (struct cachever *cv = cm->versions; cv; cv = cv->next)
    if (in_phase(cv, ph))
      for (uint64_t i = 0; i < cv->m->nblocks; i++)
        if (eligible(cv, i, ph, now, &s))
          bytes[(s - lo) / width] += manifest_block_len(cv->m, i);
  uint64_t sum = 0;
  for (unsigned b = 0; b < NBUCKETS; b++) {
    sum += bytes[b];
    if (sum >= need)
      return lo + (b + 1) * width - 1;
  }
  return hi;
}

/* Evicts least recently used blocks of the versions of one phase until
 * need bytes are freed.  Shared lock held.  Returns the bytes freed. */
static uint64_t
evict_phase(struct cachemgr *cm, enum phase ph, uint64_t need)
{
  static const char *const names[] = {
    "unattached", "attached (not read locally lately)",
    "attached (read locally lately)",
  };
  struct cands c = { 0 };
  uint64_t now = lru_now(), freed = 0, s;
  uint64_t upto = cutoff(cm, ph, need, now);
  for (struct cachever *cv = cm->versions; cv; cv = cv->next) {
    if (!in_phase(cv, ph))
      continue;
    for (uint64_t i = 0; i < cv->m->nblocks; i++) {
      if (!eligible(cv, i, ph, now, &s) || s > upto)
        continue;
      if (cand_push(&c, s, cv, i) < 0) {
        log_error(COMP, "reclaim: realloc: %m");
        goto done;
      }
    }
  }
  if (c.n == 0)
    goto done;
  qsort(c.v, c.n, sizeof *c.v, by_stamp);
  size_t take = 0;
  uint64_t sum = 0;
  while (take < c.n && sum < need)
    sum += manifest_block_len(c.v[take].cv->m, c.v[take].idx), take++;
  qsort(c.v, take, sizeof *c.v, by_version);

  uint64_t *idx = malloc(take * sizeof *idx);
  if (idx == NULL) {
    log_error(COMP, "reclaim: malloc: %m");
    goto done;
  }
  for (size_t i = 0; i < take;) {
    size_t j = i, n = 0;
    while (j < take && c.v[j].cv == c.v[i].cv)
      idx[n++] = c.v[j++].idx;
    uint64_t f = blkcache_evict(c.v[i].cv->bc, idx, n);
    freed += f;
    atomic_fetch_add(&cm->evicted_blocks, n);
    atomic_fetch_add(&cm->evicted_bytes, f);
    log_debug(COMP, "evicted %zu blocks (%" PRIu64 " bytes) of %s version"
              " %.16s", n, f, names[ph],
              c.v[i].cv->m->version_hex);
    i = j;
  }
  free(idx);

done:
  free(c.v);
  return freed;
}

uint64_t
reclaim_run(struct cachemgr *cm, uint64_t target, bool all_unattached)
{
  uint64_t freed = 0, used = atomic_load(&cm->quota.used);
  if (used > target) {
    pthread_rwlock_rdlock(&cm->lock);
    for (enum phase ph = PHASE_UNATTACHED; ph <= PHASE_LOCAL && used > target;
         ph++) {
      freed += evict_phase(cm, ph, used - target);
      used = atomic_load(&cm->quota.used);
    }
    pthread_rwlock_unlock(&cm->lock);
  }

  /* Unattached versions with nothing left go (all of them for gc).  A
   * look under the shared lock first: the exclusive one only when there
   * is something to remove, not at every poll. */
  bool any = false;
  pthread_rwlock_rdlock(&cm->lock);
  for (struct cachever *cv = cm->versions; cv && !any; cv = cv->next) {
    struct blkcache_stats st;
    blkcache_get_stats(cv->bc, &st);
    any = cv->refs == 0 && (all_unattached || st.present_blocks == 0);
  }
  pthread_rwlock_unlock(&cm->lock);
  if (!any)
    return freed;
  struct cachever *gone = NULL;
  pthread_rwlock_wrlock(&cm->lock);
  for (struct cachever **pp = &cm->versions; *pp;) {
    struct cachever *cv = *pp;
    struct blkcache_stats st;
    blkcache_get_stats(cv->bc, &st);
    if (cv->refs == 0 && (all_unattached || st.present_blocks == 0)) {
      *pp = cv->next;
      blkindex_remove(cm->index, cv);
      cm->meta_bytes -= cv->meta_bytes;
      cv->next = gone;
      gone = cv;
      freed += st.present_bytes;
    } else {
      pp = &cv->next;
    }
  }
  pthread_rwlock_unlock(&cm->lock);
  while (gone) {
    struct cachever *cv = gone;
    gone = cv->next;
    cachemgr_internal_remove(cm, cv);
  }
  return freed;
}

void *
reclaim_main(void *arg)
{
  struct cachemgr *cm = arg;
  pthread_mutex_lock(&cm->qlock);
  while (!cm->stop) {
    if (!cm->kicked) {
      struct timespec t;
      clock_gettime(CLOCK_MONOTONIC, &t);
      t.tv_nsec += RECLAIM_POLL_MS * 1000000L;
      if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&cm->qwake, &cm->qlock, &t);
    }
    if (cm->stop)
      break;
    cm->kicked = false;
    pthread_mutex_unlock(&cm->qlock);

    cachemgr_internal_limits(cm);
    uint64_t limit = atomic_load(&cm->quota.limit);
    uint64_t used = atomic_load(&cm->quota.used);
    if (used > limit / 100 * RECLAIM_HIGH_PCT)
      reclaim_run(cm, limit / 100 * RECLAIM_LOW_PCT, false);
    else
      reclaim_run(cm, UINT64_MAX, false); /* empty versions only */

    /* Kicks come with every refused store: one pass per 10 ms at most. */
    nanosleep(&(struct timespec){ 0, 10 * 1000000L }, NULL);
    pthread_mutex_lock(&cm->qlock);
  }
  pthread_mutex_unlock(&cm->qlock);
  return NULL;
}
