/* thunder — the monotonic clock in milliseconds, for deadlines and
 * timeouts (never for wall time: see apiutil_now_ms). */
#ifndef THUNDER_CLOCK_H
#define THUNDER_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in ms. */
int64_t clock_mono_ms(void);

#endif
