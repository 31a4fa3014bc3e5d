/* thunder — latency histograms for the Prometheus exposition (promtext.h).
 *
 * A histogram has fixed upper bounds in seconds (ascending, at most
 * HISTOGRAM_BOUNDS_MAX) and counts each observation in the first bucket
 * whose bound it does not exceed, or in the +Inf bucket.  Observing is
 * lock-free (relaxed atomics), so it costs a few nanoseconds on the I/O
 * path; a snapshot taken while others observe may be off by the
 * observations in flight, which Prometheus tolerates.
 */
#ifndef THUNDER_HISTOGRAM_H
#define THUNDER_HISTOGRAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HISTOGRAM_BOUNDS_MAX 16

struct histogram {
  const double *bounds;  /* seconds, ascending; static storage */
  size_t nbounds;
  _Atomic uint64_t counts[HISTOGRAM_BOUNDS_MAX + 1]; /* per bucket, +Inf last */
  _Atomic uint64_t sum_ns;
};

/* Bounds for the I/O path: 100 µs to 30 s. */
extern const double histogram_io_bounds[];
extern const size_t histogram_io_nbounds;

/* Sets h up empty with bounds (nbounds <= HISTOGRAM_BOUNDS_MAX). */
void histogram_init(struct histogram *h, const double *bounds, size_t nbounds);

/* Counts one observation of ns nanoseconds. */
void histogram_observe_ns(struct histogram *h, uint64_t ns);

/* Adds src's counts and sum to dst (same bounds): a per-image histogram
 * summed over images. */
void histogram_add(struct histogram *dst, const struct histogram *src);

/* Now on CLOCK_MONOTONIC, in nanoseconds (observe now - start). */
uint64_t histogram_now_ns(void);

#endif
