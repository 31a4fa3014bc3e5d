/* thunder — digest → cached location index; see blkindex.h.
 *
 * Design note: a chained hash table keyed by the digest's first 8 bytes
 * (SHA-256 output, so already uniform).  Each owner's entries are one
 * array (struct part), each entry linked into its bucket's chain; removal
 * filters the owner's entries out of the chains of the buckets they are
 * in.  The table grows (doubling) to keep at most two entries per bucket
 * on average; entries point into the owner's manifest, so an owner is
 * removed before its manifest is freed.
 */
#include "blkindex.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

#define COMP "cache"

struct entry {
  struct entry *next;
  const uint8_t *digest; /* in the owner's manifest */
  uint64_t idx;
  void *owner;
};

struct part {
  void *owner;
  struct entry *entries;
  uint64_t n;
  struct part *next;
};

struct blkindex {
  struct entry **buckets;
  size_t nbuckets; /* power of two */
  uint64_t nentries;
  struct part *parts;
};

static inline size_t
bucket_of(const struct blkindex *ix, const uint8_t *d)
{
  uint64_t k;
  memcpy(&k, d, sizeof k);
  return (size_t)(k & (ix->nbuckets - 1));
}

struct blkindex *
blkindex_new(void)
{
  struct blkindex *ix = calloc(1, sizeof *ix);
  if (ix == NULL || (ix->buckets = calloc(1024, sizeof *ix->buckets)) == NULL) {
    free(ix);
    log_error(COMP, "calloc: %m");
    return NULL;
  }
  ix->nbuckets = 1024;
  return ix;
}

void
blkindex_free(struct blkindex *ix)
{
  if (ix == NULL)
    return;
  while (ix->parts) {
    struct part *p = ix->parts;
    ix->parts = p->next;
    free(p->entries);
    free(p);
  }
  free(ix->buckets);
  free(ix);
}

/* Grows the table to hold want entries at two per bucket; best effort. */
static void
grow(struct blkindex *ix, uint64_t want)
{
  size_t nb = ix->nbuckets;
  while (nb * 2 < want)
    nb *= 2;
  if (nb == ix->nbuckets)
    return;
  struct entry **b = calloc(nb, sizeof *b);
  if (b == NULL)
    return; /* longer chains, still right */
  struct entry **old = ix->buckets;
  size_t oldn = ix->nbuckets;
  ix->buckets = b;
  ix->nbuckets = nb;
  for (size_t i = 0; i < oldn; i++) {
    for (struct entry *e = old[i], *next; e; e = next) {
      next = e->next;
      size_t k = bucket_of(ix, e->digest);
      e->next = b[k];
      b[k] = e;
    }
  }
  free(old);
}

int
blkindex_add(struct blkindex *ix, void *owner, const struct manifest *m,
             const uint8_t *skip)
{
  struct part *p = calloc(1, sizeof *p);
  struct entry *e = calloc((size_t)m->nblocks, sizeof *e);
  if (p == NULL || e == NULL) {
    free(p);
    free(e);
    log_error(COMP, "index: calloc: %m");
    return -1;
  }
  p->owner = owner;
  p->entries = e;
  grow(ix, ix->nentries + m->nblocks);
  for (uint64_t i = 0; i < m->nblocks; i++) {
    if (skip && (skip[i / 8] & (1u << (i % 8))))
      continue;
    struct entry *x = &e[p->n++];
    x->digest = m->digests[i];
    x->idx = i;
    x->owner = owner;
    size_t k = bucket_of(ix, x->digest);
    x->next = ix->buckets[k];
    ix->buckets[k] = x;
  }
  ix->nentries += p->n;
  p->next = ix->parts;
  ix->parts = p;
  return 0;
}

void
blkindex_remove(struct blkindex *ix, void *owner)
{
  struct part **pp = &ix->parts;
  while (*pp && (*pp)->owner != owner)
    pp = &(*pp)->next;
  struct part *p = *pp;
  if (p == NULL)
    return;
  *pp = p->next;
  for (uint64_t i = 0; i < p->n; i++) {
    size_t k = bucket_of(ix, p->entries[i].digest);
    struct entry **ep = &ix->buckets[k];
    while (*ep) {
      if ((*ep)->owner == owner)
        *ep = (*ep)->next;
      else
        ep = &(*ep)->next;
    }
  }
  ix->nentries -= p->n;
  free(p->entries);
  free(p);
}

bool
blkindex_find(struct blkindex *ix, const uint8_t d[DIGEST_LEN],
              bool (*fn)(void *owner, uint64_t idx, void *opaque),
              void *opaque)
{
  for (struct entry *e = ix->buckets[bucket_of(ix, d)]; e; e = e->next)
    if (memcmp(e->digest, d, DIGEST_LEN) == 0 && fn(e->owner, e->idx, opaque))
      return true;
  return false;
}
