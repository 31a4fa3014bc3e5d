/* thunder — logging with levels, a component prefix and per-component debug.
 *
 * Messages go to stderr (default) or syslog.  Each message carries a
 * component ("nbd", "origin", "manifest", ...).  Debug messages are emitted
 * when the level is debug, or when their component is switched on with
 * log_set_debug(); both can change while the program runs.
 * All functions are thread-safe and preserve errno, so "%m" works.
 */
#ifndef THUNDER_LOG_H
#define THUNDER_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level {
  LOG_LEVEL_ERROR,
  LOG_LEVEL_WARN,
  LOG_LEVEL_INFO,
  LOG_LEVEL_DEBUG,
};

/* Sets the program name and target ("stderr" or "syslog").  -1 on an
 * unknown target. */
int log_init(const char *ident, const char *target);

/* Parses a level's name (error, warn, info, debug); -1 if unknown. */
int log_level_from_name(const char *name, enum log_level *out);

/* Sets the level. */
void log_set_level(enum log_level level);

/* Switches debug on for a comma-separated list of components ("all" for
 * every one, "" for none).  Replaces the previous list.  -1 if too long. */
int log_set_debug(const char *components);

/* True when debug messages of this component would be emitted. */
bool log_debug_enabled(const char *component);

/* Emits one message. */
void log_msg(enum log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(comp, ...) log_msg(LOG_LEVEL_ERROR, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_msg(LOG_LEVEL_WARN, comp, __VA_ARGS__)
#define log_info(comp, ...) log_msg(LOG_LEVEL_INFO, comp, __VA_ARGS__)
#define log_debug(comp, ...)                                                   \
  do {                                                                         \
    if (log_debug_enabled(comp))                                               \
      log_msg(LOG_LEVEL_DEBUG, comp, __VA_ARGS__);                             \
  } while (0)

/* ---- rate-limited messages --------------------------------------------
 * For errors that can repeat per request or per block (a full disk, a
 * failing upstream, a flood of refused connections): at most one line per
 * call site per interval; the lines in between are counted, and the next
 * line emitted says how many were suppressed ("(N similar messages
 * suppressed)").  A call site's state is a static struct log_ratelimit,
 * zero-initialised; the macros below declare it. */
struct log_ratelimit {
  _Atomic int64_t next_ms;          /* monotonic ms; earlier lines counted */
  _Atomic unsigned long suppressed; /* since the last line emitted */
};

/* Default interval of the log_*_rl macros, in milliseconds. */
#define LOG_RATELIMIT_MS 10000

/* Sets the interval of the log_*_rl macros (0: no limit, every line is
 * emitted, e.g. in unit tests that check each message). */
void log_set_ratelimit_ms(unsigned ms);

/* Emits one message through rl (see above); interval_ms 0 means the
 * interval set by log_set_ratelimit_ms.  Thread-safe, keeps errno. */
void log_msg_ratelimited(struct log_ratelimit *rl, unsigned interval_ms,
                         enum log_level level, const char *component,
                         const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define log_ratelimited_(level, comp, ...)                                     \
  do {                                                                         \
    static struct log_ratelimit log_rl_;                                       \
    log_msg_ratelimited(&log_rl_, 0, level, comp, __VA_ARGS__);                \
  } while (0)
#define log_error_rl(comp, ...) log_ratelimited_(LOG_LEVEL_ERROR, comp, __VA_ARGS__)
#define log_warn_rl(comp, ...) log_ratelimited_(LOG_LEVEL_WARN, comp, __VA_ARGS__)

#endif
