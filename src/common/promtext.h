/* thunder — the Prometheus text exposition format 0.0.4, written.
 *
 * One writer builds one scrape's body in memory: a family's "# HELP" and
 * "# TYPE" lines once (promtext_family), then its samples, each with its
 * labels (values escaped: backslash, double quote, newline).  Names are
 * the caller's constants (thunder_…_total, base units: seconds, bytes).
 * A histogram writes its cumulative _bucket{le=…} samples, _sum and
 * _count.  Out of memory makes promtext_finish return NULL; the calls
 * before it need no checks.  Not thread-safe: one writer per scrape.
 */
#ifndef THUNDER_PROMTEXT_H
#define THUNDER_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "histogram.h"

#define PROMTEXT_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct promtext;

struct promtext_label {
  const char *name;
  const char *value;
};

/* A new, empty writer; NULL if out of memory. */
struct promtext *promtext_new(void);

/* Starts the family name of type ("counter", "gauge", "histogram"). */
void promtext_family(struct promtext *p, const char *name, const char *type,
                     const char *help);

/* One sample of name with labels[0..n) (n may be 0). */
void promtext_uint(struct promtext *p, const char *name,
                   const struct promtext_label *labels, size_t n, uint64_t v);
void promtext_double(struct promtext *p, const char *name,
                     const struct promtext_label *labels, size_t n, double v);

/* The samples of histogram h as family name (name_bucket, _sum, _count). */
void promtext_histogram(struct promtext *p, const char *name,
                        const struct promtext_label *labels, size_t n,
                        const struct histogram *h);

/* Hands over the body (heap, NUL-terminated; *len its length) and frees
 * p; NULL if any step ran out of memory. */
char *promtext_finish(struct promtext *p, size_t *len);

/* Frees p without a body. */
void promtext_free(struct promtext *p);

#endif
