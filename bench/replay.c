/* replay — replays a block-level boot trace against an NBD export (libnbd),
 * and the tools around it: trace facts, synthetic traces, trace images.
 *
 *   replay [--fast|--think|--think-gap] [--max-in-flight N] [--timeout S]
 *          [--start-at T]
 *          [--verify FILE] [--log FILE] [--block-size N] [--label TEXT]
 *          [--json] TRACE NBD-URI
 *   replay --info [--block-size N] [--json] TRACE
 *   replay --synthetic --size BYTES --working-set BYTES --locality F
 *          [--seed N] [--block BYTES] [--gap-ms MS]           > TRACE
 *   replay --make-image IMAGE --size BYTES [--seed N] [--block BYTES] TRACE...
 *
 * Replaying: the reads are issued in the trace's order, closed loop: with
 * --max-in-flight 1 (the default; the real traces have queue depth 1-2)
 * each read is issued once the previous one has completed.  --fast (the
 * default) issues it at once; --think waits until the read's t_ms has
 * passed since the start (relative to the first row), but never issues it
 * before the previous read completed, so a slow export stretches the
 * trace instead of piling reads up; --think-gap waits the gap between
 * the read's t_ms and the previous row's after the previous read
 * completed, so every stall adds to the total, as when a guest's work
 * between two reads depends on the first (the model in provmodel.py).  With --max-in-flight N > 1, up to N
 * reads are in flight, still issued in order.
 *
 * The clock starts after the connection is made (and after --start-at, a
 * wall-clock time in seconds since the epoch at which several replayers
 * start together) and stops when the last read completes.  Latency is from
 * nbd_aio_pread to the completion callback.  Every read is checked: a
 * failed read, a lost connection or --timeout seconds without a completion
 * fails the run (exit 1).  --verify FILE also compares each reply with the
 * same bytes of FILE (it costs time: for correctness runs).
 *
 * Exit status: 0 done, 1 a read or the connection failed, 2 bad usage or
 * a bad trace (the message names the file and line).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "trace.h"

#define DEFAULT_BLOCK_SIZE 65536   /* thunder's block size: W is counted in it */
#define DEFAULT_TIMEOUT_S  60

enum mode { MODE_REPLAY, MODE_INFO, MODE_SYNTHETIC, MODE_MAKE_IMAGE };

/* When a read may be issued (it is never issued before the previous one
 * completed while --max-in-flight is 1). */
enum pace {
  PACE_FAST,                  /* at once */
  PACE_THINK,                 /* at its t_ms since the start */
  PACE_GAP,                   /* its t_ms gap after the previous read completed */
};

static struct {
  enum mode mode;
  enum pace pace;
  unsigned max_in_flight;
  double timeout_s;
  double start_at;            /* 0: at once */
  const char *verify;
  const char *log;            /* --log: one line per read */
  const char *label;
  bool json;
  uint64_t block_size;        /* --block-size: for W in the report */
  /* --synthetic and --make-image */
  uint64_t size;
  uint64_t working_set;
  double locality;
  uint64_t seed;
  uint64_t block;             /* --block */
  double gap_ms;
  const char *image;
  bool have_size, have_ws, have_locality;
} opt = {
  .max_in_flight = 1, .timeout_s = DEFAULT_TIMEOUT_S,
  .block_size = DEFAULT_BLOCK_SIZE, .block = DEFAULT_BLOCK_SIZE, .seed = 1,
  .locality = -1,
};

/* ---- helpers ---------------------------------------------------------- */

static uint64_t
mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static double
wall_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void
sleep_until_mono(uint64_t t_ns)
{
  struct timespec ts = { .tv_sec = (time_t) (t_ns / 1000000000ull),
                         .tv_nsec = (long) (t_ns % 1000000000ull) };
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

static void
sleep_until_wall(double t)
{
  struct timespec ts = { .tv_sec = (time_t) t,
                         .tv_nsec = (long) ((t - floor(t)) * 1e9) };
  while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

static void
json_string(const char *s)
{
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char) *s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

/* A byte count: decimal, with an optional K, M, G or T suffix (powers of
 * 1024, "KiB" and "KB" alike).  Returns 0 or -1. */
static int
parse_bytes(const char *s, uint64_t *out)
{
  char *end;
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s)
    return -1;
  unsigned shift = 0;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: break;
  }
  if (shift && *end == 'i')
    end++;
  if (shift && *end == 'B')
    end++;
  if (*end || (shift && v > (UINT64_MAX >> shift)))
    return -1;
  *out = (uint64_t) v << shift;
  return 0;
}

static int
parse_number(const char *s, double *out)
{
  char *end;
  if ((*s < '0' || *s > '9') && *s != '.')
    return -1;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v))
    return -1;
  *out = v;
  return 0;
}

/* ---- replay ----------------------------------------------------------- */

struct slot {
  void *buf;
  size_t idx;                 /* the trace row it reads */
  uint64_t t_issue;
  int err;
};

static uint64_t *issue_ns;          /* per trace row, since the start (--log) */

static struct slot *slots;
static size_t *free_slots, nfree;   /* stack of idle slots */
static size_t *done_slots, ndone;   /* stack of completed, not yet handled */
static uint64_t *latency_ns;        /* per trace row */

/* Runs inside libnbd: records only; the main loop handles it. */
static int
on_complete(void *user_data, int *error)
{
  struct slot *s = user_data;
  latency_ns[s->idx] = mono_ns() - s->t_issue;
  s->err = *error;
  done_slots[ndone++] = (size_t) (s - slots);
  return 1;                   /* retire the command */
}

static int
cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the sorted V[0..n). */
static uint64_t
percentile(const uint64_t *v, size_t n, double p)
{
  size_t rank = (size_t) ceil(p * (double) n);
  if (rank < 1)
    rank = 1;
  if (rank > n)
    rank = n;
  return v[rank - 1];
}

/* --log FILE: "line,offset,length,issue_ms,latency_us" per read, in the
 * trace's order (issue_ms since the start). */
static int
write_log(const struct trace *t)
{
  FILE *f = fopen(opt.log, "we");
  if (f == NULL) {
    fprintf(stderr, "replay: --log: %s: %m\n", opt.log);
    return -1;
  }
  fprintf(f, "line,offset,length,issue_ms,latency_us\n");
  for (size_t i = 0; i < t->n; i++)
    fprintf(f, "%u,%" PRIu64 ",%" PRIu32 ",%.3f,%.1f\n", t->reads[i].line,
            t->reads[i].offset, t->reads[i].length, (double) issue_ns[i] / 1e6,
            (double) latency_ns[i] / 1e3);
  if (fclose(f) == EOF) {
    fprintf(stderr, "replay: --log: %s: %m\n", opt.log);
    return -1;
  }
  return 0;
}

/* When read I may be issued, by --fast, --think or --think-gap; START is
 * when the replay started, LAST_DONE when the latest read completed. */
static uint64_t
due_ns(const struct trace *t, size_t i, uint64_t start, uint64_t last_done)
{
  switch (opt.pace) {
  case PACE_THINK:
    return start + (uint64_t) ((t->reads[i].t_ms - t->reads[0].t_ms) * 1e6);
  case PACE_GAP:
    if (i == 0)
      return start;
    return last_done + (uint64_t) ((t->reads[i].t_ms - t->reads[i - 1].t_ms) * 1e6);
  case PACE_FAST:
  default:
    return 0;
  }
}

static int
replay(const struct trace *t, const char *uri)
{
  struct nbd_handle *h = NULL;
  int verify_fd = -1;
  void *scratch = NULL;
  int ret = 1;

  if (opt.verify) {
    verify_fd = open(opt.verify, O_RDONLY | O_CLOEXEC);
    if (verify_fd == -1) {
      fprintf(stderr, "replay: --verify: open: %s: %m\n", opt.verify);
      return 2;
    }
    scratch = malloc(t->max_length);
    if (scratch == NULL) {
      fprintf(stderr, "replay: out of memory\n");
      goto out;
    }
  }

  latency_ns = calloc(t->n, sizeof *latency_ns);
  if (opt.log && (issue_ns = calloc(t->n, sizeof *issue_ns)) == NULL) {
    fprintf(stderr, "replay: out of memory\n");
    goto out;
  }
  slots = calloc(opt.max_in_flight, sizeof *slots);
  free_slots = calloc(opt.max_in_flight, sizeof *free_slots);
  done_slots = calloc(opt.max_in_flight, sizeof *done_slots);
  if (!latency_ns || !slots || !free_slots || !done_slots) {
    fprintf(stderr, "replay: out of memory\n");
    goto out;
  }
  for (size_t i = 0; i < opt.max_in_flight; i++) {
    slots[i].buf = malloc(t->max_length);
    if (slots[i].buf == NULL) {
      fprintf(stderr, "replay: out of memory\n");
      goto out;
    }
    free_slots[nfree++] = opt.max_in_flight - 1 - i;
  }

  uint64_t t_conn = mono_ns();
  h = nbd_create();
  if (h == NULL || nbd_connect_uri(h, uri) == -1) {
    fprintf(stderr, "replay: %s: %s\n", uri, nbd_get_error());
    goto out;
  }
  int64_t size = nbd_get_size(h);
  if (size < 0) {
    fprintf(stderr, "replay: %s: %s\n", uri, nbd_get_error());
    goto out;
  }
  double connect_s = (double) (mono_ns() - t_conn) / 1e9;
  if (trace_check_size(t, (uint64_t) size) == -1) {
    ret = 2;
    goto out;
  }

  /* Sleeps end within 1 us, not the default 50 us of timer slack: a
   * trace has hundreds of think gaps. */
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  if (opt.start_at > 0)
    sleep_until_wall(opt.start_at);

  const uint64_t timeout_ns = (uint64_t) (opt.timeout_s * 1e9);
  const double t0_ms = t->reads[0].t_ms;
  double start_unix = wall_s();
  uint64_t start = mono_ns(), last_progress = start, think_ns = 0;
  uint64_t last_done = start;       /* completion of the latest read */
  size_t next = 0, completed = 0;

  while (completed < t->n) {
    uint64_t now = mono_ns();

    /* Issue what may go now. */
    while (next < t->n && nfree > 0) {
      const struct trace_read *r = &t->reads[next];
      uint64_t due = due_ns(t, next, start, last_done);
      if (due > now) {
        if (nfree < opt.max_in_flight)
          break;              /* poll the reads in flight until then */
        think_ns += due - now;
        sleep_until_mono(due);
        now = mono_ns();
        last_progress = now;
      }
      struct slot *s = &slots[free_slots[--nfree]];
      s->idx = next;
      s->err = 0;
      s->t_issue = mono_ns();
      if (issue_ns)
        issue_ns[next] = s->t_issue - start;
      nbd_completion_callback cb = { .callback = on_complete, .user_data = s };
      if (nbd_aio_pread(h, s->buf, r->length, r->offset, cb, 0) == -1) {
        fprintf(stderr, "replay: %s:%u: read %" PRIu64 "+%" PRIu32 ": %s\n",
                t->path, r->line, r->offset, r->length, nbd_get_error());
        goto out;
      }
      next++;
    }

    /* Wait for a completion, or for the next read's time. */
    int wait_ms = -1;
    if (opt.pace != PACE_FAST && next < t->n && nfree > 0) {
      uint64_t due = due_ns(t, next, start, last_done);
      wait_ms = due > now ? (int) ((due - now + 999999) / 1000000) : 0;
    }
    uint64_t left = last_progress + timeout_ns > now ? last_progress + timeout_ns - now : 0;
    int left_ms = (int) ((left + 999999) / 1000000);
    if (wait_ms < 0 || wait_ms > left_ms)
      wait_ms = left_ms;
    if (ndone == 0 && nbd_poll(h, wait_ms) == -1) {
      fprintf(stderr, "replay: %s: %s\n", uri, nbd_get_error());
      goto out;
    }

    now = mono_ns();
    if (ndone > 0)
      last_progress = now;
    while (ndone > 0) {
      struct slot *s = &slots[done_slots[--ndone]];
      const struct trace_read *r = &t->reads[s->idx];
      if (s->err != 0) {
        fprintf(stderr, "replay: %s:%u: read %" PRIu64 "+%" PRIu32 " failed: %s\n",
                t->path, r->line, r->offset, r->length, strerror(s->err));
        goto out;
      }
      if (verify_fd >= 0) {
        ssize_t got = pread(verify_fd, scratch, r->length, (off_t) r->offset);
        if (got != (ssize_t) r->length) {
          fprintf(stderr, "replay: --verify: %s: short read at %" PRIu64 "\n",
                  opt.verify, r->offset);
          goto out;
        }
        if (memcmp(scratch, s->buf, r->length) != 0) {
          fprintf(stderr, "replay: %s:%u: read %" PRIu64 "+%" PRIu32
                  " returned other bytes than %s\n",
                  t->path, r->line, r->offset, r->length, opt.verify);
          goto out;
        }
      }
      uint64_t done_at = s->t_issue + latency_ns[s->idx];
      if (done_at > last_done)
        last_done = done_at;
      free_slots[nfree++] = (size_t) (s - slots);
      completed++;
    }
    if (nfree < opt.max_in_flight && now - last_progress >= timeout_ns) {
      size_t oldest = t->n;
      for (size_t i = 0; i < opt.max_in_flight; i++) {
        bool idle = false;
        for (size_t k = 0; k < nfree; k++)
          idle |= free_slots[k] == i;
        if (!idle && slots[i].idx < oldest)
          oldest = slots[i].idx;
      }
      const struct trace_read *r = &t->reads[oldest];
      fprintf(stderr, "replay: %s:%u: read %" PRIu64 "+%" PRIu32
              " not completed after %g s\n", t->path, r->line, r->offset,
              r->length, opt.timeout_s);
      goto out;
    }
  }
  uint64_t end = mono_ns();
  double end_unix = wall_s();

  double elapsed = (double) (end - start) / 1e9;
  if (opt.log && write_log(t) == -1)
    goto out;
  uint64_t wait_sum = 0;
  for (size_t i = 0; i < t->n; i++)
    wait_sum += latency_ns[i];
  qsort(latency_ns, t->n, sizeof *latency_ns, cmp_u64);
  double p50 = (double) percentile(latency_ns, t->n, 0.50) / 1e3;
  double p99 = (double) percentile(latency_ns, t->n, 0.99) / 1e3;
  double lmax = (double) latency_ns[t->n - 1] / 1e3;
  double mean = (double) wait_sum / (double) t->n / 1e3;
  uint64_t distinct = trace_distinct_bytes(t);
  uint64_t blocks = trace_distinct_blocks(t, opt.block_size);
  double mbps = elapsed > 0 ? (double) t->bytes / elapsed / 1e6 : 0;
  const char *mode = opt.pace == PACE_THINK ? "think"
                   : opt.pace == PACE_GAP ? "think-gap" : "fast";

  if (opt.json) {
    printf("{\"trace\":");
    json_string(t->path);
    printf(",\"uri\":");
    json_string(uri);
    if (opt.label) {
      printf(",\"label\":");
      json_string(opt.label);
    }
    printf(",\"mode\":\"%s\",\"max_in_flight\":%u,\"export_size\":%" PRId64
           ",\"reads\":%zu,\"bytes\":%" PRIu64 ",\"distinct_bytes\":%" PRIu64
           ",\"block_size\":%" PRIu64 ",\"working_set_blocks\":%" PRIu64
           ",\"working_set_bytes\":%" PRIu64
           ",\"connect_s\":%.6f,\"start_unix\":%.6f,\"end_unix\":%.6f"
           ",\"elapsed_s\":%.6f,\"read_wait_s\":%.6f,\"think_s\":%.6f"
           ",\"trace_span_s\":%.6f,\"mbps\":%.3f"
           ",\"latency_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}"
           ",\"verified\":%s}\n",
           mode, opt.max_in_flight, size, t->n, t->bytes, distinct,
           opt.block_size, blocks, blocks * opt.block_size,
           connect_s, start_unix, end_unix, elapsed, (double) wait_sum / 1e9,
           (double) think_ns / 1e9, (t->reads[t->n - 1].t_ms - t0_ms) / 1e3,
           mbps, mean, p50, p99, lmax, verify_fd >= 0 ? "true" : "false");
  }
  else {
    printf("replay: %s%s%s: %zu reads, %" PRIu64 " bytes in %.3f s (%s, %u in flight,"
           " %.2f MB/s); latency p50 %.3f ms, p99 %.3f ms, max %.3f ms%s\n",
           opt.label ? opt.label : "", opt.label ? " " : "", t->path, t->n,
           t->bytes, elapsed, mode, opt.max_in_flight, mbps, p50 / 1e3,
           p99 / 1e3, lmax / 1e3, verify_fd >= 0 ? " (verified)" : "");
  }
  if (fflush(stdout) == EOF) {
    fprintf(stderr, "replay: write: %m\n");
    goto out;
  }
  ret = 0;

out:
  if (h != NULL) {
    /* Queue NBD_CMD_DISC and close; nbd_shutdown could wait without bound
     * for a server that does not hang up. */
    if (ret == 0)
      nbd_aio_disconnect(h, 0);
    nbd_close(h);
  }
  if (slots != NULL) {
    for (size_t i = 0; i < opt.max_in_flight; i++)
      free(slots[i].buf);
  }
  free(slots);
  free(free_slots);
  free(done_slots);
  free(latency_ns);
  free(issue_ns);
  free(scratch);
  if (verify_fd >= 0)
    close(verify_fd);
  return ret;
}

/* ---- --info ----------------------------------------------------------- */

static int
info(const struct trace *t)
{
  uint64_t distinct = trace_distinct_bytes(t);
  uint64_t blocks = trace_distinct_blocks(t, opt.block_size);
  double span = (t->reads[t->n - 1].t_ms - t->reads[0].t_ms) / 1e3;

  if (opt.json) {
    printf("{\"trace\":");
    json_string(t->path);
    printf(",\"reads\":%zu,\"bytes\":%" PRIu64 ",\"distinct_bytes\":%" PRIu64
           ",\"block_size\":%" PRIu64 ",\"working_set_blocks\":%" PRIu64
           ",\"working_set_bytes\":%" PRIu64 ",\"max_end\":%" PRIu64
           ",\"max_length\":%" PRIu32 ",\"trace_span_s\":%.6f}\n",
           t->n, t->bytes, distinct, opt.block_size, blocks,
           blocks * opt.block_size, t->max_end, t->max_length, span);
  }
  else {
    printf("%s: %zu reads, %" PRIu64 " bytes, %" PRIu64 " distinct; %" PRIu64
           " blocks of %" PRIu64 " (W = %" PRIu64 " bytes); reads end by %"
           PRIu64 "; largest read %" PRIu32 "; span %.3f s\n",
           t->path, t->n, t->bytes, distinct, blocks, opt.block_size,
           blocks * opt.block_size, t->max_end, t->max_length, span);
  }
  return fflush(stdout) == EOF ? 1 : 0;
}

/* ---- command line ----------------------------------------------------- */

static void
usage(FILE *f)
{
  fprintf(f,
"usage: replay [--fast|--think|--think-gap] [--max-in-flight N] [--timeout S]\n"
"              [--start-at UNIX-TIME] [--verify FILE] [--log FILE]\n"
"              [--block-size N] [--label TEXT] [--json] TRACE.csv NBD-URI\n"
"       replay --info [--block-size N] [--json] TRACE.csv\n"
"       replay --synthetic --size BYTES --working-set BYTES --locality F\n"
"              [--seed N] [--block BYTES] [--gap-ms MS] > TRACE.csv\n"
"       replay --make-image IMAGE --size BYTES [--seed N] [--block BYTES]\n"
"              TRACE.csv...\n"
"\n"
"Replays the reads of TRACE.csv (header t_ms,offset,length) against the\n"
"NBD export in their order, each after the previous one completed, and\n"
"prints the time, the reads, the bytes and the read latency.\n"
"\n"
"  --fast             issue each read at once (default)\n"
"  --think            issue each read no earlier than its t_ms after the start\n"
"  --think-gap        issue each read its t_ms gap after the previous one\n"
"                     completed (the trace's think time added to every read)\n"
"  --max-in-flight N  reads in flight at most (default 1: closed loop)\n"
"  --timeout S        fail when no read completes for S seconds (default %d)\n"
"  --start-at T       connect, then start at wall-clock time T (seconds since\n"
"                     the epoch, fractions allowed): replayers start together\n"
"  --verify FILE      compare every reply with the same bytes of FILE\n"
"  --log FILE         write line,offset,length,issue_ms,latency_us per read\n"
"  --block-size N     block size W is counted in (default %d)\n"
"  --label TEXT       carried into the output\n"
"  --json             one JSON object instead of a line of text\n"
"  --info             the trace's facts (reads, bytes, W, extent); no NBD\n"
"  --synthetic        write a synthetic trace to stdout: reads of --block\n"
"                     bytes (default %d) covering --working-set bytes of an\n"
"                     image of --size bytes, each block once; --locality is\n"
"                     the fraction of reads that follow the previous one;\n"
"                     t_ms of row i is i * --gap-ms (default 0); --seed N\n"
"  --make-image IMAGE write a sparse IMAGE of --size bytes with pseudo-random\n"
"                     data (fixed by --seed) in every --block-byte block the\n"
"                     traces read, holes elsewhere\n"
"Sizes take K, M, G, T suffixes (powers of 1024).\n",
          DEFAULT_TIMEOUT_S, DEFAULT_BLOCK_SIZE, DEFAULT_BLOCK_SIZE);
}

static void __attribute__((noreturn, format(printf, 1, 2)))
usage_error(const char *fmt, ...)
{
  va_list ap;
  fputs("replay: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs(" (replay --help)\n", stderr);
  exit(2);
}

int
main(int argc, char **argv)
{
  enum {
    OPT_FAST = 256, OPT_THINK, OPT_MAX_IN_FLIGHT, OPT_TIMEOUT, OPT_START_AT,
    OPT_VERIFY, OPT_BLOCK_SIZE, OPT_LABEL, OPT_JSON, OPT_INFO, OPT_SYNTHETIC,
    OPT_MAKE_IMAGE, OPT_SIZE, OPT_WORKING_SET, OPT_LOCALITY, OPT_SEED,
    OPT_BLOCK, OPT_GAP_MS, OPT_LOG, OPT_THINK_GAP, OPT_HELP,
  };
  static const struct option longopts[] = {
    { "fast", no_argument, NULL, OPT_FAST },
    { "think", no_argument, NULL, OPT_THINK },
    { "think-gap", no_argument, NULL, OPT_THINK_GAP },
    { "max-in-flight", required_argument, NULL, OPT_MAX_IN_FLIGHT },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "start-at", required_argument, NULL, OPT_START_AT },
    { "verify", required_argument, NULL, OPT_VERIFY },
    { "log", required_argument, NULL, OPT_LOG },
    { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
    { "label", required_argument, NULL, OPT_LABEL },
    { "json", no_argument, NULL, OPT_JSON },
    { "info", no_argument, NULL, OPT_INFO },
    { "synthetic", no_argument, NULL, OPT_SYNTHETIC },
    { "make-image", required_argument, NULL, OPT_MAKE_IMAGE },
    { "size", required_argument, NULL, OPT_SIZE },
    { "working-set", required_argument, NULL, OPT_WORKING_SET },
    { "locality", required_argument, NULL, OPT_LOCALITY },
    { "seed", required_argument, NULL, OPT_SEED },
    { "block", required_argument, NULL, OPT_BLOCK },
    { "gap-ms", required_argument, NULL, OPT_GAP_MS },
    { "help", no_argument, NULL, OPT_HELP },
    { NULL, 0, NULL, 0 },
  };
  bool modes[4] = { false };
  uint64_t u;
  double d;
  int c;

  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_FAST: opt.pace = PACE_FAST; break;
    case OPT_THINK: opt.pace = PACE_THINK; break;
    case OPT_THINK_GAP: opt.pace = PACE_GAP; break;
    case OPT_MAX_IN_FLIGHT:
      if (parse_bytes(optarg, &u) == -1 || u < 1 || u > 1024)
        usage_error("--max-in-flight '%s': want 1 to 1024", optarg);
      opt.max_in_flight = (unsigned) u;
      break;
    case OPT_TIMEOUT:
      if (parse_number(optarg, &d) == -1 || d <= 0 || d > 86400)
        usage_error("--timeout '%s': want seconds above 0, at most 86400", optarg);
      opt.timeout_s = d;
      break;
    case OPT_START_AT:
      if (parse_number(optarg, &d) == -1 || d <= 0 || d > 1e11)
        usage_error("--start-at '%s': want seconds since the epoch", optarg);
      opt.start_at = d;
      break;
    case OPT_VERIFY: opt.verify = optarg; break;
    case OPT_LOG: opt.log = optarg; break;
    case OPT_BLOCK_SIZE:
      if (parse_bytes(optarg, &u) == -1 || u < 1 || u > TRACE_MAX_LENGTH)
        usage_error("--block-size '%s': want 1 to %u bytes", optarg, TRACE_MAX_LENGTH);
      opt.block_size = u;
      break;
    case OPT_LABEL: opt.label = optarg; break;
    case OPT_JSON: opt.json = true; break;
    case OPT_INFO: modes[MODE_INFO] = true; break;
    case OPT_SYNTHETIC: modes[MODE_SYNTHETIC] = true; break;
    case OPT_MAKE_IMAGE: modes[MODE_MAKE_IMAGE] = true; opt.image = optarg; break;
    case OPT_SIZE:
      if (parse_bytes(optarg, &opt.size) == -1)
        usage_error("--size '%s': not a byte count", optarg);
      opt.have_size = true;
      break;
    case OPT_WORKING_SET:
      if (parse_bytes(optarg, &opt.working_set) == -1)
        usage_error("--working-set '%s': not a byte count", optarg);
      opt.have_ws = true;
      break;
    case OPT_LOCALITY:
      if (parse_number(optarg, &opt.locality) == -1 || opt.locality > 1)
        usage_error("--locality '%s': want a fraction from 0 to 1", optarg);
      opt.have_locality = true;
      break;
    case OPT_SEED:
      if (parse_bytes(optarg, &opt.seed) == -1)
        usage_error("--seed '%s': not a non-negative integer", optarg);
      break;
    case OPT_BLOCK:
      if (parse_bytes(optarg, &opt.block) == -1)
        usage_error("--block '%s': not a byte count", optarg);
      break;
    case OPT_GAP_MS:
      if (parse_number(optarg, &opt.gap_ms) == -1)
        usage_error("--gap-ms '%s': not a number", optarg);
      break;
    case OPT_HELP:
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  unsigned nmodes = 0;
  for (int m = MODE_INFO; m <= MODE_MAKE_IMAGE; m++) {
    if (modes[m]) {
      opt.mode = (enum mode) m;
      nmodes++;
    }
  }
  if (nmodes > 1)
    usage_error("--info, --synthetic and --make-image exclude each other");
  if (opt.pace == PACE_GAP && opt.max_in_flight != 1)
    usage_error("--think-gap needs --max-in-flight 1");
  int nargs = argc - optind;

  switch (opt.mode) {
  case MODE_SYNTHETIC: {
    if (nargs != 0)
      usage_error("--synthetic takes no arguments");
    if (!opt.have_size || !opt.have_ws || !opt.have_locality)
      usage_error("--synthetic needs --size, --working-set and --locality");
    struct trace_synth s = {
      .size = opt.size, .working_set = opt.working_set, .block = opt.block,
      .locality = opt.locality, .gap_ms = opt.gap_ms, .seed = opt.seed,
    };
    return trace_synthesize(&s, stdout) == 0 ? 0 : 2;
  }

  case MODE_MAKE_IMAGE: {
    if (nargs < 1)
      usage_error("--make-image needs at least one trace");
    if (!opt.have_size)
      usage_error("--make-image needs --size");
    struct trace **ts = calloc((size_t) nargs, sizeof *ts);
    int ret = 2;
    if (ts == NULL) {
      fprintf(stderr, "replay: out of memory\n");
      return 1;
    }
    for (int i = 0; i < nargs; i++) {
      if ((ts[i] = trace_load(argv[optind + i])) == NULL)
        goto made;
    }
    int64_t n = trace_make_image(opt.image, opt.size, opt.block, opt.seed,
                                 ts, (size_t) nargs);
    if (n >= 0) {
      printf("%s: %" PRIu64 " bytes, %" PRId64 " blocks of %" PRIu64
             " with data (%" PRIu64 " bytes), holes elsewhere\n",
             opt.image, opt.size, n, opt.block, (uint64_t) n * opt.block);
      ret = 0;
    }
  made:
    for (int i = 0; i < nargs; i++)
      trace_free(ts[i]);
    free(ts);
    return ret;
  }

  case MODE_INFO: {
    if (nargs != 1)
      usage_error("--info takes one trace");
    struct trace *t = trace_load(argv[optind]);
    if (t == NULL)
      return 2;
    int ret = info(t);
    trace_free(t);
    return ret;
  }

  case MODE_REPLAY:
  default: {
    if (nargs != 2)
      usage_error("want a trace and an NBD URI");
    struct trace *t = trace_load(argv[optind]);
    if (t == NULL)
      return 2;
    int ret = replay(t, argv[optind + 1]);
    trace_free(t);
    return ret;
  }
  }
}
