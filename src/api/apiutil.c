/* thunder — thunder-api's small helpers; see apiutil.h. */
#include "apiutil.h"

#include <stdio.h>
#include <time.h>

int64_t
apiutil_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
apiutil_time(int64_t ms, char buf[32])
{
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

char *
apiutil_export_uri(const char *base, const char *image)
{
  char *s;
  if (asprintf(&s, "%s/%s", base, image) == -1)
    return NULL;
  return s;
}
