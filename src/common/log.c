/* thunder — logging; see log.h. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_DEBUG_LIST_MAX 512

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *log_ident = "thunder";
static bool log_to_syslog;
static _Atomic int log_level = LOG_LEVEL_INFO;
static _Atomic bool log_debug_any;
/* ",comp1,comp2," or ",all,"; guarded by log_lock. */
static char log_debug_list[LOG_DEBUG_LIST_MAX + 3];

static const char *const level_names[] = {
  [LOG_LEVEL_ERROR] = "error",
  [LOG_LEVEL_WARN] = "warn",
  [LOG_LEVEL_INFO] = "info",
  [LOG_LEVEL_DEBUG] = "debug",
};

int
log_init(const char *ident, const char *target)
{
  if (ident)
    log_ident = ident;
  if (target == NULL || strcmp(target, "stderr") == 0) {
    log_to_syslog = false;
    return 0;
  }
  if (strcmp(target, "syslog") == 0) {
    log_to_syslog = true;
    openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
    return 0;
  }
  return -1;
}

int
log_level_from_name(const char *name, enum log_level *out)
{
  for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *out = (enum log_level)i;
      return 0;
    }
  }
  return -1;
}

void
log_set_level(enum log_level level)
{
  atomic_store(&log_level, (int)level);
}

int
log_set_debug(const char *components)
{
  size_t len = strlen(components);
  if (len > LOG_DEBUG_LIST_MAX)
    return -1;
  pthread_mutex_lock(&log_lock);
  snprintf(log_debug_list, sizeof log_debug_list, ",%s,", components);
  atomic_store(&log_debug_any, len > 0);
  pthread_mutex_unlock(&log_lock);
  return 0;
}

bool
log_debug_enabled(const char *component)
{
  if (atomic_load(&log_level) >= LOG_LEVEL_DEBUG)
    return true;
  if (!atomic_load(&log_debug_any))
    return false;

  char key[128];
  int n = snprintf(key, sizeof key, ",%s,", component);
  if (n < 0 || (size_t)n >= sizeof key)
    return false;
  pthread_mutex_lock(&log_lock);
  bool on = strstr(log_debug_list, key) != NULL ||
            strstr(log_debug_list, ",all,") != NULL;
  pthread_mutex_unlock(&log_lock);
  return on;
}

/* Formats and emits one message; suppressed > 0 adds their count.  The
 * caller has checked the level; errno is the caller's (for %m). */
static void log_vemit(enum log_level level, const char *component,
                      unsigned long suppressed, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void
log_vemit(enum log_level level, const char *component, unsigned long suppressed,
          const char *fmt, va_list ap)
{
  int saved_errno = errno;
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (suppressed > 0) {
    size_t len = strlen(msg);
    snprintf(msg + len, sizeof msg - len, " (%lu similar messages suppressed)",
             suppressed);
  }

  if (log_to_syslog) {
    static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
    syslog(prio[level], "%s: %s: %s", level_names[level], component, msg);
  } else {
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s.%03ldZ %s[%d]: %s: %s: %s\n", stamp,
            ts.tv_nsec / 1000000, log_ident, (int)getpid(),
            level_names[level], component, msg);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
  }
  errno = saved_errno;
}

void
log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
  int saved_errno = errno;

  if ((int)level > atomic_load(&log_level) &&
      !(level == LOG_LEVEL_DEBUG && log_debug_enabled(component))) {
    errno = saved_errno;
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  errno = saved_errno; /* for %m */
  log_vemit(level, component, 0, fmt, ap);
  va_end(ap);
  errno = saved_errno;
}

static _Atomic unsigned log_ratelimit_ms = LOG_RATELIMIT_MS;

void
log_set_ratelimit_ms(unsigned ms)
{
  atomic_store(&log_ratelimit_ms, ms);
}

void
log_msg_ratelimited(struct log_ratelimit *rl, unsigned interval_ms,
                    enum log_level level, const char *component,
                    const char *fmt, ...)
{
  int saved_errno = errno;
  if ((int)level > atomic_load(&log_level))
    return;
  if (interval_ms == 0)
    interval_ms = atomic_load(&log_ratelimit_ms);

  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  int64_t next = atomic_load(&rl->next_ms);
  if (interval_ms > 0 &&
      (now < next ||
       !atomic_compare_exchange_strong(&rl->next_ms, &next,
                                       now + (int64_t)interval_ms))) {
    atomic_fetch_add(&rl->suppressed, 1);
    errno = saved_errno;
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  errno = saved_errno; /* for %m */
  log_vemit(level, component, atomic_exchange(&rl->suppressed, 0), fmt, ap);
  va_end(ap);
  errno = saved_errno;
}
