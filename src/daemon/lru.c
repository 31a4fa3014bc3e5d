/* thunder — recency of the blocks of one cached image version; see lru.h. */
#include "lru.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"

/* stamp[i]: block i's last use; stamp[n + i]: its last local read. */
struct lru {
  uint64_t n;
  _Atomic uint64_t stamp[];
};

struct lru *
lru_new(uint64_t n)
{
  struct lru *l = calloc(1, sizeof *l + 2 * (size_t)n * sizeof l->stamp[0]);
  if (l == NULL) {
    log_error("lru", "calloc: %m");
    return NULL;
  }
  l->n = n;
  return l;
}

void
lru_free(struct lru *l)
{
  free(l);
}

uint64_t
lru_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + 1;
}

static inline void
set_stamp(_Atomic uint64_t *s, uint64_t now)
{
  if (atomic_load_explicit(s, memory_order_relaxed) != now)
    atomic_store_explicit(s, now, memory_order_relaxed);
}

void
lru_touch(struct lru *l, uint64_t idx)
{
  set_stamp(&l->stamp[idx], lru_now());
}

void
lru_touch_local(struct lru *l, uint64_t idx)
{
  uint64_t now = lru_now();
  set_stamp(&l->stamp[idx], now);
  set_stamp(&l->stamp[l->n + idx], now);
}

uint64_t
lru_stamp(const struct lru *l, uint64_t idx)
{
  return atomic_load_explicit(&((struct lru *)l)->stamp[idx],
                              memory_order_relaxed);
}

uint64_t
lru_local_stamp(const struct lru *l, uint64_t idx)
{
  return atomic_load_explicit(&((struct lru *)l)->stamp[l->n + idx],
                              memory_order_relaxed);
}
