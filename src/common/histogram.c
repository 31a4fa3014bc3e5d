/* thunder — latency histograms; see histogram.h. */
#include "histogram.h"

#include <time.h>

const double histogram_io_bounds[] = {
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
  0.25, 0.5, 1, 2.5, 10, 30,
};
const size_t histogram_io_nbounds =
    sizeof histogram_io_bounds / sizeof histogram_io_bounds[0];

void
histogram_init(struct histogram *h, const double *bounds, size_t nbounds)
{
  h->bounds = bounds;
  h->nbounds = nbounds > HISTOGRAM_BOUNDS_MAX ? HISTOGRAM_BOUNDS_MAX : nbounds;
  for (size_t i = 0; i <= HISTOGRAM_BOUNDS_MAX; i++)
    atomic_init(&h->counts[i], 0);
  atomic_init(&h->sum_ns, 0);
}

void
histogram_observe_ns(struct histogram *h, uint64_t ns)
{
  double s = (double)ns / 1e9;
  size_t i = 0;

  while (i < h->nbounds && s > h->bounds[i])
    i++;
  atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

void
histogram_add(struct histogram *dst, const struct histogram *src)
{
  for (size_t i = 0; i <= src->nbounds && i <= dst->nbounds; i++)
    atomic_fetch_add_explicit(
        &dst->counts[i],
        atomic_load_explicit(&src->counts[i], memory_order_relaxed),
        memory_order_relaxed);
  atomic_fetch_add_explicit(
      &dst->sum_ns, atomic_load_explicit(&src->sum_ns, memory_order_relaxed),
      memory_order_relaxed);
}

uint64_t
histogram_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
