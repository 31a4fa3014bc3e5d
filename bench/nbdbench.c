/* nbdbench — a read load generator for NBD servers, on libnbd's async API.
 *
 *   nbdbench --uri URI --clients N --depth D --size BYTES
 *            --pattern rand|seq --seconds S [--warmup S] [--threads T]
 *            [--seed N] [--verify FILE] [--json]
 *
 * N connections, each keeping D reads of BYTES in flight.  The connections
 * are spread over T event-loop threads (default T = N: one thread per
 * connection, like N independent clients); each thread polls its handles
 * and drives them with nbd_aio_pread and nbd_aio_notify_read/write.
 * (On a 2-core host, multiplexing 8 connections on 2 threads measured
 * 2-3x fewer IOPS against nbdkit than one thread each: the load generator
 * itself became the bottleneck, hiding the server's speed.)
 *
 * Offsets are aligned to BYTES.  rand: uniform over the whole export, one
 * PRNG stream per connection.  seq: the export is cut into N equal regions
 * and each connection walks its own region in order, wrapping at its end.
 *
 * Only reads that complete inside the measured window (after --warmup) are
 * counted; reads in flight when the window closes are drained and dropped.
 * Every reply is checked: a read that fails, a dead connection or a stall
 * (no completion for 15 s) fails the run (exit 1).  With --verify FILE each
 * reply is also compared with the same range of FILE (slower: for
 * correctness runs, not timing runs).
 *
 * Output: one human-readable line, or one JSON object with --json.  MB/s is
 * 10^6 bytes per second.  Latency is from nbd_aio_pread to the completion
 * being seen by the event loop, in microseconds.  The JSON object also
 * has cpu_ms, the process's CPU time (user + system) in the measured
 * window: what the client costs (over TLS, its decryption).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define STALL_NS   (15ull * 1000000000ull)   /* no completion at all: fail */
#define DRAIN_NS   (15ull * 1000000000ull)   /* in-flight reads at the end */

/* ---- options ---------------------------------------------------------- */

enum pattern { PAT_RAND, PAT_SEQ };

static struct {
  const char *uri;
  unsigned clients;
  unsigned depth;
  uint64_t size;
  enum pattern pattern;
  double seconds;
  double warmup;
  unsigned threads;
  uint64_t seed;
  const char *verify;
  bool json;
} opt = {
  .clients = 1, .depth = 1, .size = 4096, .pattern = PAT_RAND,
  .seconds = 10, .warmup = 1, .seed = 1,
};

/* ---- time ------------------------------------------------------------- */

static uint64_t
now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

/* This process's CPU time (user + system), in ns. */
static uint64_t
cpu_ns(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((uint64_t) ru.ru_utime.tv_sec + (uint64_t) ru.ru_stime.tv_sec) *
         1000000000ull +
         ((uint64_t) ru.ru_utime.tv_usec + (uint64_t) ru.ru_stime.tv_usec) *
         1000ull;
}

/* Sleeps until now_ns() reaches t. */
static void
sleep_until(uint64_t t)
{
  for (uint64_t n; (n = now_ns()) < t;) {
    struct timespec ts = { (time_t) ((t - n) / 1000000000ull),
                           (long) ((t - n) % 1000000000ull) };
    nanosleep(&ts, NULL);
  }
}

/* ---- latency histogram (log-linear, ~1.6% resolution) ----------------- */

#define HIST_SUB_BITS 6
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
  uint64_t count[HIST_BUCKETS];
};

static unsigned
hist_index(uint64_t v)
{
  if (v < HIST_SUB)
    return (unsigned) v;
  unsigned e = 63 - (unsigned) __builtin_clzll(v);     /* >= HIST_SUB_BITS */
  unsigned sub = (unsigned) (v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1);
  return (e - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

/* The midpoint of the values that fall into bucket i. */
static double
hist_value(unsigned i)
{
  if (i < HIST_SUB)
    return i;
  unsigned e = i / HIST_SUB + HIST_SUB_BITS - 1;
  unsigned sub = i % HIST_SUB;
  double width = (double) (1ull << (e - HIST_SUB_BITS));
  double lo = (double) (1ull << e) + sub * width;
  return lo + width / 2;
}

static double
hist_percentile(const struct hist *h, uint64_t total, double p)
{
  if (total == 0)
    return 0;
  uint64_t rank = (uint64_t) (p * (double) total);
  if (rank >= total)
    rank = total - 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->count[i];
    if (seen > rank)
      return hist_value(i);
  }
  return 0;
}

/* ---- state ------------------------------------------------------------ */

struct client;

struct slot {
  struct client *c;
  void *buf;
  uint64_t off;
  uint64_t t_issue;
  int err;                    /* errno from the completion callback */
};

struct client {
  unsigned idx;
  struct nbd_handle *h;
  struct slot *slots;
  unsigned *done;             /* stack of slot indexes completed, not handled */
  unsigned ndone;
  unsigned inflight;
  uint64_t rng;
  uint64_t region_start;      /* seq: in blocks */
  uint64_t region_blocks;
  uint64_t seq_next;
  uint64_t ops;               /* counted in the window */
};

struct worker {
  pthread_t tid;
  unsigned first, n;          /* its clients: clients[first .. first+n) */
  struct hist hist;
  uint64_t ops;
  uint64_t lat_sum_ns;
  uint64_t lat_max_ns;
  void *scratch;              /* --verify */
};

static struct client *clients;
static struct worker *workers;
static uint64_t export_size;
static uint64_t nblocks;
static int verify_fd = -1;
static uint64_t t_start, t_meas, t_end;   /* set before the workers start */
static pthread_barrier_t barrier;
static atomic_bool failed;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;

static void __attribute__((format(printf, 1, 2)))
fail(const char *fmt, ...)
{
  va_list ap;
  pthread_mutex_lock(&err_lock);
  if (!atomic_exchange(&failed, true)) {
    fputs("nbdbench: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  }
  pthread_mutex_unlock(&err_lock);
}

/* splitmix64 */
static uint64_t
rng_next(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t
next_offset(struct client *c)
{
  uint64_t blk;
  if (opt.pattern == PAT_RAND)
    blk = rng_next(&c->rng) % nblocks;
  else {
    blk = c->region_start + c->seq_next;
    if (++c->seq_next == c->region_blocks)
      c->seq_next = 0;
  }
  return blk * opt.size;
}

/* Runs inside libnbd (nbd_aio_notify_*): only records; the event loop
 * handles the completion, since libnbd calls must not be made from here. */
static int
on_complete(void *user_data, int *error)
{
  struct slot *s = user_data;
  struct client *c = s->c;
  s->err = *error;
  c->done[c->ndone++] = (unsigned) (s - c->slots);
  return 1;                   /* retire the command */
}

static int
issue(struct client *c, struct slot *s)
{
  s->off = next_offset(c);
  s->err = 0;
  s->t_issue = now_ns();
  nbd_completion_callback cb = { .callback = on_complete, .user_data = s };
  if (nbd_aio_pread(c->h, s->buf, opt.size, s->off, cb, 0) == -1) {
    fail("client %u: nbd_aio_pread: %s", c->idx, nbd_get_error());
    return -1;
  }
  c->inflight++;
  return 0;
}

static int
handle_done(struct worker *w, struct client *c, uint64_t t, bool stopping)
{
  while (c->ndone > 0) {
    struct slot *s = &c->slots[c->done[--c->ndone]];
    c->inflight--;
    if (s->err != 0) {
      fail("client %u: read of %" PRIu64 " bytes at %" PRIu64 " failed: %s",
           c->idx, opt.size, s->off, strerror(s->err));
      return -1;
    }
    if (verify_fd >= 0) {
      ssize_t r = pread(verify_fd, w->scratch, opt.size, (off_t) s->off);
      if (r != (ssize_t) opt.size) {
        fail("--verify: short read of the file at %" PRIu64, s->off);
        return -1;
      }
      if (memcmp(w->scratch, s->buf, opt.size) != 0) {
        fail("client %u: data mismatch at offset %" PRIu64 " (%" PRIu64
             " bytes)", c->idx, s->off, opt.size);
        return -1;
      }
    }
    if (t >= t_meas && t <= t_end && s->t_issue >= t_start) {
      uint64_t lat = t - s->t_issue;
      w->hist.count[hist_index(lat)]++;
      w->ops++;
      w->lat_sum_ns += lat;
      if (lat > w->lat_max_ns)
        w->lat_max_ns = lat;
      c->ops++;
    }
    if (!stopping && issue(c, s) == -1)
      return -1;
  }
  return 0;
}

static void *
worker_main(void *arg)
{
  struct worker *w = arg;
  struct pollfd *pfd = calloc(w->n, sizeof *pfd);
  if (!pfd) {
    fail("out of memory");
    pthread_barrier_wait(&barrier);
    return NULL;
  }
  pthread_barrier_wait(&barrier);

  for (unsigned i = 0; i < w->n && !failed; i++) {
    struct client *c = &clients[w->first + i];
    for (unsigned d = 0; d < opt.depth; d++)
      if (issue(c, &c->slots[d]) == -1)
        break;
  }

  uint64_t last_progress = now_ns();
  bool stopping = false;
  while (!failed) {
    uint64_t t = now_ns();
    if (!stopping && t >= t_end)
      stopping = true;

    unsigned inflight = 0;
    for (unsigned i = 0; i < w->n; i++) {
      struct client *c = &clients[w->first + i];
      inflight += c->inflight;
      pfd[i].fd = nbd_aio_get_fd(c->h);
      pfd[i].events = 0;
      pfd[i].revents = 0;
      if (pfd[i].fd == -1 || nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
        fail("client %u: connection lost: %s", c->idx, nbd_get_error());
        goto out;
      }
      unsigned dir = nbd_aio_get_direction(c->h);
      if (dir & LIBNBD_AIO_DIRECTION_READ)
        pfd[i].events |= POLLIN;
      if (dir & LIBNBD_AIO_DIRECTION_WRITE)
        pfd[i].events |= POLLOUT;
    }
    if (stopping && inflight == 0)
      break;
    if (t - last_progress > (stopping ? DRAIN_NS : STALL_NS)) {
      fail("no reply for %.0f s with %u reads in flight",
           (double) (t - last_progress) / 1e9, inflight);
      goto out;
    }

    int timeout = 200;
    if (!stopping && t_end - t < 200000000ull)
      timeout = (int) ((t_end - t) / 1000000ull) + 1;
    int r = poll(pfd, w->n, timeout);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      fail("poll: %s", strerror(errno));
      goto out;
    }
    if (r == 0)
      continue;

    for (unsigned i = 0; i < w->n; i++) {
      struct client *c = &clients[w->first + i];
      short rev = pfd[i].revents;
      if (rev & (POLLIN | POLLHUP | POLLERR)) {
        if (nbd_aio_notify_read(c->h) == -1) {
          fail("client %u: %s", c->idx, nbd_get_error());
          goto out;
        }
      }
      else if (rev & POLLOUT) {
        if (nbd_aio_notify_write(c->h) == -1) {
          fail("client %u: %s", c->idx, nbd_get_error());
          goto out;
        }
      }
    }
    t = now_ns();
    for (unsigned i = 0; i < w->n; i++) {
      struct client *c = &clients[w->first + i];
      if (c->ndone > 0) {
        last_progress = t;
        if (handle_done(w, c, t, stopping || t >= t_end) == -1)
          goto out;
      }
    }
  }
out:
  free(pfd);
  return NULL;
}

/* ---- main ------------------------------------------------------------- */

static void
usage(FILE *f)
{
  fprintf(f,
"usage: nbdbench --uri URI [--clients N] [--depth D] [--size BYTES]\n"
"                [--pattern rand|seq] [--seconds S] [--warmup S]\n"
"                [--threads T] [--seed N] [--verify FILE] [--json]\n"
"\n"
"  --uri URI        NBD URI (nbd://HOST:PORT/NAME, nbd+unix:///NAME?socket=P)\n"
"  --clients N      connections (default 1)\n"
"  --depth D        reads in flight per connection (default 1)\n"
"  --size BYTES     read size, also the offset alignment; K/M suffixes (4096)\n"
"  --pattern P      rand: uniform over the export; seq: each connection walks\n"
"                   its own 1/N of the export, wrapping (default rand)\n"
"  --seconds S      measured time (default 10)\n"
"  --warmup S       unmeasured time before it (default 1)\n"
"  --threads T      event-loop threads the connections are spread over\n"
"                   (default N: one thread per connection)\n"
"  --seed N         PRNG seed (default 1)\n"
"  --verify FILE    compare every reply with FILE (correctness runs)\n"
"  --json           print one JSON object instead of a line of text\n");
}

static int
parse_u64(const char *s, uint64_t *out)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s || *s == '-')
    return -1;
  switch (*end) {
  case 'k': case 'K': v <<= 10; end++; break;
  case 'm': case 'M': v <<= 20; end++; break;
  case 'g': case 'G': v <<= 30; end++; break;
  default: break;
  }
  if (*end == 'i' || *end == 'B')
    end++;
  if (*end == 'B')
    end++;
  if (*end)
    return -1;
  *out = v;
  return 0;
}

static int
parse_double(const char *s, double *out)
{
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < 0)
    return -1;
  *out = v;
  return 0;
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

int
main(int argc, char **argv)
{
  enum { OPT_WARMUP = 256, OPT_SEED, OPT_VERIFY, OPT_JSON, OPT_THREADS };
  static const struct option longopts[] = {
    { "uri",     required_argument, NULL, 'u' },
    { "clients", required_argument, NULL, 'c' },
    { "depth",   required_argument, NULL, 'd' },
    { "size",    required_argument, NULL, 's' },
    { "pattern", required_argument, NULL, 'p' },
    { "seconds", required_argument, NULL, 't' },
    { "warmup",  required_argument, NULL, OPT_WARMUP },
    { "threads", required_argument, NULL, OPT_THREADS },
    { "seed",    required_argument, NULL, OPT_SEED },
    { "verify",  required_argument, NULL, OPT_VERIFY },
    { "json",    no_argument,       NULL, OPT_JSON },
    { "help",    no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  uint64_t v;
  int ch;

  while ((ch = getopt_long(argc, argv, "u:c:d:s:p:t:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'u': opt.uri = optarg; break;
    case 'c':
      if (parse_u64(optarg, &v) || v < 1 || v > 4096) goto bad;
      opt.clients = (unsigned) v;
      break;
    case 'd':
      if (parse_u64(optarg, &v) || v < 1 || v > 1024) goto bad;
      opt.depth = (unsigned) v;
      break;
    case 's':
      if (parse_u64(optarg, &v) || v < 1 || v > (32u << 20)) goto bad;
      opt.size = v;
      break;
    case 'p':
      if (strcmp(optarg, "rand") == 0) opt.pattern = PAT_RAND;
      else if (strcmp(optarg, "seq") == 0) opt.pattern = PAT_SEQ;
      else goto bad;
      break;
    case 't':
      if (parse_double(optarg, &opt.seconds) || opt.seconds <= 0) goto bad;
      break;
    case OPT_WARMUP:
      if (parse_double(optarg, &opt.warmup)) goto bad;
      break;
    case OPT_THREADS:
      if (parse_u64(optarg, &v) || v < 1 || v > 4096) goto bad;
      opt.threads = (unsigned) v;
      break;
    case OPT_SEED:
      if (parse_u64(optarg, &opt.seed)) goto bad;
      break;
    case OPT_VERIFY: opt.verify = optarg; break;
    case OPT_JSON: opt.json = true; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
    continue;
  bad:
    fprintf(stderr, "nbdbench: bad value for %s: %s\n", argv[optind - 1],
            optarg);
    usage(stderr);
    return 2;
  }
  if (optind != argc || !opt.uri) {
    usage(stderr);
    return 2;
  }
  if (opt.threads == 0 || opt.threads > opt.clients)
    opt.threads = opt.clients;

  /* Connect every client before the clock starts. */
  clients = calloc(opt.clients, sizeof *clients);
  workers = calloc(opt.threads, sizeof *workers);
  if (!clients || !workers) {
    perror("calloc");
    return 1;
  }
  for (unsigned i = 0; i < opt.clients; i++) {
    struct client *c = &clients[i];
    c->idx = i;
    c->h = nbd_create();
    /* The URI is the operator's own (a bench): nbds:// URIs may name
     * their certificates (tls-certificates=DIR). */
    if (c->h)
      nbd_set_uri_allow_local_file(c->h, true);
    if (!c->h || nbd_connect_uri(c->h, opt.uri) == -1) {
      fprintf(stderr, "nbdbench: connect %s: %s\n", opt.uri, nbd_get_error());
      return 1;
    }
    int64_t sz = nbd_get_size(c->h);
    if (sz < 0) {
      fprintf(stderr, "nbdbench: nbd_get_size: %s\n", nbd_get_error());
      return 1;
    }
    if (i == 0)
      export_size = (uint64_t) sz;
    else if ((uint64_t) sz != export_size) {
      fprintf(stderr, "nbdbench: connections disagree on the export size\n");
      return 1;
    }
    c->slots = calloc(opt.depth, sizeof *c->slots);
    c->done = calloc(opt.depth, sizeof *c->done);
    if (!c->slots || !c->done) {
      perror("calloc");
      return 1;
    }
    for (unsigned d = 0; d < opt.depth; d++) {
      c->slots[d].c = c;
      if (posix_memalign(&c->slots[d].buf, 4096, opt.size)) {
        perror("posix_memalign");
        return 1;
      }
      memset(c->slots[d].buf, 0, opt.size);
    }
    c->rng = opt.seed * 0x100000001b3ull + i;
  }

  nblocks = export_size / opt.size;
  if (nblocks == 0) {
    fprintf(stderr, "nbdbench: export (%" PRIu64 " bytes) is smaller than "
            "--size\n", export_size);
    return 1;
  }
  if (opt.pattern == PAT_SEQ) {
    uint64_t per = nblocks / opt.clients;
    if (per == 0) {
      fprintf(stderr, "nbdbench: export too small for %u sequential "
              "regions of %" PRIu64 " bytes\n", opt.clients, opt.size);
      return 1;
    }
    for (unsigned i = 0; i < opt.clients; i++) {
      clients[i].region_start = i * per;
      clients[i].region_blocks = per;
    }
  }

  if (opt.verify) {
    struct stat st;
    verify_fd = open(opt.verify, O_RDONLY | O_CLOEXEC);
    if (verify_fd == -1 || fstat(verify_fd, &st) == -1) {
      fprintf(stderr, "nbdbench: %s: %s\n", opt.verify, strerror(errno));
      return 1;
    }
    if ((uint64_t) st.st_size != export_size) {
      fprintf(stderr, "nbdbench: %s is %jd bytes, the export %" PRIu64 "\n",
              opt.verify, (intmax_t) st.st_size, export_size);
      return 1;
    }
  }

  unsigned per = opt.clients / opt.threads, extra = opt.clients % opt.threads;
  for (unsigned t = 0, first = 0; t < opt.threads; t++) {
    workers[t].first = first;
    workers[t].n = per + (t < extra);
    first += workers[t].n;
    if (opt.verify && posix_memalign(&workers[t].scratch, 4096, opt.size)) {
      perror("posix_memalign");
      return 1;
    }
  }

  pthread_barrier_init(&barrier, NULL, opt.threads + 1);
  for (unsigned t = 0; t < opt.threads; t++) {
    int e = pthread_create(&workers[t].tid, NULL, worker_main, &workers[t]);
    if (e) {
      fprintf(stderr, "nbdbench: pthread_create: %s\n", strerror(e));
      return 1;
    }
  }
  t_start = now_ns();
  t_meas = t_start + (uint64_t) (opt.warmup * 1e9);
  t_end = t_meas + (uint64_t) (opt.seconds * 1e9);
  pthread_barrier_wait(&barrier);
  /* The client's own CPU time in the measured window (the time libnbd
   * and the TLS decryption cost, against the server's). */
  sleep_until(t_meas);
  uint64_t cpu0 = cpu_ns();
  sleep_until(t_end);
  uint64_t cpu_window = cpu_ns() - cpu0;
  for (unsigned t = 0; t < opt.threads; t++)
    pthread_join(workers[t].tid, NULL);

  /* Queue NBD_CMD_DISC (sent at once: nothing is in flight) and close;
   * nbd_shutdown would wait for the server to hang up, without bound. */
  for (unsigned i = 0; i < opt.clients; i++) {
    if (!failed)
      nbd_aio_disconnect(clients[i].h, 0);
    nbd_close(clients[i].h);
  }
  if (failed)
    return 1;

  /* Merge. */
  static struct hist hist;
  uint64_t ops = 0, lat_sum = 0, lat_max = 0;
  for (unsigned t = 0; t < opt.threads; t++) {
    struct worker *w = &workers[t];
    ops += w->ops;
    lat_sum += w->lat_sum_ns;
    if (w->lat_max_ns > lat_max)
      lat_max = w->lat_max_ns;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
      hist.count[i] += w->hist.count[i];
  }
  uint64_t cmin = UINT64_MAX, cmax = 0;
  for (unsigned i = 0; i < opt.clients; i++) {
    if (clients[i].ops < cmin) cmin = clients[i].ops;
    if (clients[i].ops > cmax) cmax = clients[i].ops;
  }
  if (ops == 0) {
    fprintf(stderr, "nbdbench: error: no read completed in the window\n");
    return 1;
  }
  double iops = (double) ops / opt.seconds;
  double mbps = iops * (double) opt.size / 1e6;
  double mean_us = (double) lat_sum / (double) ops / 1e3;
  double p50_us = hist_percentile(&hist, ops, 0.50) / 1e3;
  double p99_us = hist_percentile(&hist, ops, 0.99) / 1e3;
  double max_us = (double) lat_max / 1e3;
  const char *pat = opt.pattern == PAT_RAND ? "rand" : "seq";

  if (opt.json) {
    printf("{\"uri\":");
    json_string(opt.uri);
    printf(",\"clients\":%u,\"depth\":%u,\"threads\":%u,\"size\":%" PRIu64
           ",\"pattern\":\"%s\",\"seconds\":%g,\"warmup\":%g"
           ",\"export_size\":%" PRIu64 ",\"ops\":%" PRIu64
           ",\"iops\":%.1f,\"mbps\":%.2f,\"lat_mean_us\":%.1f"
           ",\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_max_us\":%.1f"
           ",\"client_ops_min\":%" PRIu64 ",\"client_ops_max\":%" PRIu64
           ",\"cpu_ms\":%.1f,\"verified\":%s}\n",
           opt.clients, opt.depth, opt.threads, opt.size, pat, opt.seconds,
           opt.warmup, export_size, ops, iops, mbps, mean_us, p50_us, p99_us,
           max_us, cmin, cmax, (double) cpu_window / 1e6,
           opt.verify ? "true" : "false");
  }
  else {
    printf("%s size=%" PRIu64 " clients=%u depth=%u: ops=%" PRIu64
           " iops=%.0f MB/s=%.1f lat_us mean=%.1f p50=%.1f p99=%.1f "
           "max=%.1f%s\n",
           pat, opt.size, opt.clients, opt.depth, ops, iops, mbps, mean_us,
           p50_us, p99_us, max_us, opt.verify ? " (verified)" : "");
  }
  return 0;
}
