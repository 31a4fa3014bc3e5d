/* thunder — small helpers every part of thunder-api uses: the clock, the
 * time format of the API, and the name of an image's export on a node or
 * the origin.  No HTTP, no store. */
#ifndef THUNDER_APIUTIL_H
#define THUNDER_APIUTIL_H

#include <stdint.h>

/* UNIX ms now (CLOCK_REALTIME). */
int64_t apiutil_now_ms(void);

/* RFC 3339 UTC with milliseconds: 2026-11-25T06:00:00.000Z. */
void apiutil_time(int64_t ms, char buf[32]);

/* The image's NBD URI on a node or origin base (nbd://H:P): BASE/IMAGE,
 * malloc'ed, or NULL when out of memory. */
char *apiutil_export_uri(const char *base, const char *image);

#endif
