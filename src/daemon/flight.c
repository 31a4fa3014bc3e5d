/* thunder — single flight across identical blocks; see flight.h.
 *
 * A hand-written hash table (chained, FLIGHT_BUCKETS lists indexed by the
 * digest's first bytes, which SHA-256 spreads evenly): the flights are
 * short-lived, keyed by a 32-byte digest, and need a condition variable
 * per table, which no library map here offers better than these few
 * lines.  (One list was scanned by every begin and done: with a cold
 * relay's hundreds of blocks in flight that was ~3.5% of its CPU, issue
 * 17.) */
#include "flight.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define FLIGHT_BUCKETS 1024

struct flight {
  uint8_t digest[32];
  const void *owner;
  uint64_t idx;
  unsigned refs; /* the owner's and each waiter's */
  bool done;
  struct flight *next; /* in the table while not done */
};

struct flights {
  pthread_mutex_t lock;
  pthread_cond_t cond; /* broadcast when a flight is done */
  struct flight *buckets[FLIGHT_BUCKETS];
};

static struct flight **
bucket(struct flights *t, const uint8_t digest[32])
{
  uint64_t h;
  memcpy(&h, digest, sizeof h);
  return &t->buckets[h & (FLIGHT_BUCKETS - 1)];
}

struct flights *
flights_new(void)
{
  struct flights *t = calloc(1, sizeof *t);
  if (t == NULL) {
    log_error("flight", "calloc: %m");
    return NULL;
  }
  pthread_mutex_init(&t->lock, NULL);
  pthread_cond_init(&t->cond, NULL);
  return t;
}

void
flights_free(struct flights *t)
{
  if (t == NULL)
    return;
  pthread_mutex_destroy(&t->lock);
  pthread_cond_destroy(&t->cond);
  free(t);
}

struct flight *
flight_begin(struct flights *t, const uint8_t digest[32], const void *owner,
             uint64_t idx, bool *own)
{
  *own = false;
  pthread_mutex_lock(&t->lock);
  struct flight **head = bucket(t, digest);
  struct flight *f = *head;
  while (f && memcmp(f->digest, digest, 32) != 0)
    f = f->next;
  if (f && f->owner == owner && f->idx == idx) {
    f = NULL; /* the same block: the fetcher joins it */
  } else if (f) {
    f->refs++;
  } else if ((f = calloc(1, sizeof *f)) != NULL) {
    memcpy(f->digest, digest, 32);
    f->owner = owner;
    f->idx = idx;
    f->refs = 1;
    f->next = *head;
    *head = f;
    *own = true;
  }
  pthread_mutex_unlock(&t->lock);
  return f;
}

void
flight_done(struct flights *t, const uint8_t digest[32], const void *owner,
            uint64_t idx)
{
  pthread_mutex_lock(&t->lock);
  for (struct flight **pp = bucket(t, digest); *pp; pp = &(*pp)->next) {
    struct flight *f = *pp;
    if (f->owner == owner && f->idx == idx &&
        memcmp(f->digest, digest, 32) == 0) {
      *pp = f->next;
      f->next = NULL;
      f->done = true;
      pthread_cond_broadcast(&t->cond);
      break;
    }
  }
  pthread_mutex_unlock(&t->lock);
}

void
flight_wait(struct flights *t, struct flight *fl)
{
  pthread_mutex_lock(&t->lock);
  while (!fl->done)
    pthread_cond_wait(&t->cond, &t->lock);
  pthread_mutex_unlock(&t->lock);
}

void
flight_put(struct flights *t, struct flight *fl)
{
  pthread_mutex_lock(&t->lock);
  bool last = --fl->refs == 0;
  pthread_mutex_unlock(&t->lock);
  if (last)
    free(fl);
}
