/* thunder — thunderd's Prometheus exposition; see dmetrics.h.
 *
 * Per-image families come from a table: each row names a member of an
 * image's JSON ("counters.hits", "cache.version_bytes"), the family, its
 * type and help, a scale (milliseconds to seconds) and at most one extra
 * label.  Rows of one family follow each other (served bytes: client
 * local, then remote), so the family's HELP and TYPE are written once and
 * its samples stay together, as the format requires.  A family is written
 * only when some image has its member (an origin has no fetch counters).
 */
#include "dmetrics.h"

#include <dirent.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "histogram.h"
#include "node.h"
#include "promtext.h"
#include "server.h"
#include "thunder-build.h"

struct row {
  const char *member;  /* "counters.KEY" or "cache.KEY" */
  const char *name;
  const char *type;
  const char *help;
  double scale;        /* 0: as is (an integer) */
  const char *label, *value; /* an extra label, or NULL */
};

static const struct row image_rows[] = {
  { "counters.served_local_bytes", "thunder_nbd_served_bytes_total", "counter",
    "Bytes served over NBD, by client: local (QEMU on the Unix socket) or remote (child nodes over TCP).",
    0, "client", "local" },
  { "counters.served_remote_bytes", "thunder_nbd_served_bytes_total", "counter",
    NULL, 0, "client", "remote" },
  { "counters.reads", "thunder_nbd_reads_total", "counter",
    "NBD read requests served.", 0, NULL, NULL },
  { "counters.hits", "thunder_cache_hits_total", "counter",
    "Block reads answered from the cache (reused and zero blocks included).", 0, NULL, NULL },
  { "counters.misses", "thunder_cache_misses_total", "counter",
    "Block reads that needed a fetch.", 0, NULL, NULL },
  { "counters.fetches", "thunder_fetch_blocks_total", "counter",
    "Blocks fetched from upstreams (readahead included).", 0, NULL, NULL },
  { "counters.joined", "thunder_fetch_joined_total", "counter",
    "Misses that joined a fetch already in flight (single flight).", 0, NULL, NULL },
  { "counters.prefetches", "thunder_fetch_prefetches_total", "counter",
    "Blocks fetched by readahead.", 0, NULL, NULL },
  { "counters.verify_failures", "thunder_fetch_verify_failures_total", "counter",
    "Fetched blocks whose SHA-256 did not match the manifest.", 0, NULL, NULL },
  { "counters.failovers", "thunder_fetch_failovers_total", "counter",
    "Fetches moved on to the next upstream.", 0, NULL, NULL },
  { "counters.fetch_failures", "thunder_fetch_failures_total", "counter",
    "Blocks no upstream could deliver.", 0, NULL, NULL },
  { "counters.stalls", "thunder_fetch_stalls_total", "counter",
    "Blocks that waited because no upstream could deliver them.", 0, NULL, NULL },
  { "counters.stall_failures", "thunder_fetch_stall_failures_total", "counter",
    "Stalled blocks that failed when the stall timeout ran out.", 0, NULL, NULL },
  { "counters.outages", "thunder_fetch_outages_total", "counter",
    "Spells in which no upstream delivered.", 0, NULL, NULL },
  { "counters.outage_ms", "thunder_fetch_outage_seconds_total", "counter",
    "Total duration of the outages, the current one included.", 0.001, NULL, NULL },
  { "counters.stalled_now", "thunder_fetch_stalled_blocks", "gauge",
    "Blocks waiting for an upstream now.", 0, NULL, NULL },
  { "counters.valid_cache_bytes", "thunder_cache_valid_bytes", "gauge",
    "Bytes of the image held verified in the cache.", 0, NULL, NULL },
  { "counters.cache_corrupt_evicted", "thunder_cache_corrupt_blocks_total", "counter",
    "Cached blocks found corrupt when first read after a restart (evicted and fetched again).", 0, NULL, NULL },
  { "cache.version_bytes", "thunder_cache_version_bytes", "gauge",
    "Block bytes this image version holds in the cache.", 0, NULL, NULL },
  { "cache.evicted_blocks", "thunder_cache_evicted_blocks_total", "counter",
    "Blocks of this version evicted to keep the cache within its limit.", 0, NULL, NULL },
  { "cache.evicted_bytes", "thunder_cache_evicted_bytes_total", "counter",
    "Bytes of this version evicted.", 0, NULL, NULL },
  { "cache.reused_blocks", "thunder_cache_reused_blocks_total", "counter",
    "Blocks taken from another cached version or image with the same SHA-256 instead of fetched.", 0, NULL, NULL },
  { "cache.reused_bytes", "thunder_cache_reused_bytes_total", "counter",
    "Bytes taken from another cached version or image.", 0, NULL, NULL },
  { "cache.zero_blocks_skipped", "thunder_cache_zero_blocks_total", "counter",
    "Reads of all-zero blocks, never fetched nor stored.", 0, NULL, NULL },
  { "cache.uncached_blocks", "thunder_cache_uncached_blocks_total", "counter",
    "Blocks served without being cached (the cache was full).", 0, NULL, NULL },
};
#define N_IMAGE_ROWS (sizeof image_rows / sizeof image_rows[0])

static const struct row upstream_rows[] = {
  { "bytes", "thunder_upstream_bytes_total", "counter",
    "Verified bytes fetched from each upstream.", 0, NULL, NULL },
  { "blocks", "thunder_upstream_blocks_total", "counter",
    "Verified blocks fetched from each upstream.", 0, NULL, NULL },
  { "verify_failures", "thunder_upstream_verify_failures_total", "counter",
    "Blocks from each upstream that failed verification.", 0, NULL, NULL },
  { "errors", "thunder_upstream_errors_total", "counter",
    "Failed requests, connects and lost connections of each upstream.", 0, NULL, NULL },
};

static const struct row cache_rows[] = {
  { "cap_bytes", "thunder_cache_capacity_bytes", "gauge",
    "The cache's cap (--cache-max).", 0, NULL, NULL },
  { "min_free_bytes", "thunder_cache_min_free_bytes", "gauge",
    "Free space the cache leaves on its file system (--cache-min-free).", 0, NULL, NULL },
  { "limit_bytes", "thunder_cache_limit_bytes", "gauge",
    "What the cache may hold now: the cap or less when the file system is short of space.", 0, NULL, NULL },
  { "used_bytes", "thunder_cache_used_bytes", "gauge",
    "Bytes the cache holds, all versions.", 0, NULL, NULL },
  { "evicted_blocks", "thunder_cache_all_evicted_blocks_total", "counter",
    "Blocks evicted, all versions (detached ones included).", 0, NULL, NULL },
  { "evicted_bytes", "thunder_cache_all_evicted_bytes_total", "counter",
    "Bytes evicted, all versions.", 0, NULL, NULL },
  { "versions_removed", "thunder_cache_versions_removed_total", "counter",
    "Detached versions removed whole from the cache.", 0, NULL, NULL },
};

/* Member "a.b" of o as a non-negative integer. */
static bool
member_u64(struct json_object *o, const char *path, uint64_t *out)
{
  char head[32];
  const char *dot = strchr(path, '.');
  struct json_object *v;
  if (dot) {
    size_t n = (size_t)(dot - path);
    if (n >= sizeof head)
      return false;
    memcpy(head, path, n);
    head[n] = '\0';
    if (!json_object_object_get_ex(o, head, &o))
      return false;
    path = dot + 1;
  }
  if (!json_object_object_get_ex(o, path, &v) ||
      !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
    return false;
  *out = (uint64_t)json_object_get_int64(v);
  return true;
}

static const char *
member_str(struct json_object *o, const char *key)
{
  struct json_object *v;
  return json_object_object_get_ex(o, key, &v) &&
                 json_object_is_type(v, json_type_string)
             ? json_object_get_string(v)
             : NULL;
}

/* The labels of an image: its name and the first 16 hex digits of its
 * version (buf holds them). */
static size_t
image_labels(struct json_object *img, char buf[17],
             struct promtext_label *l)
{
  const char *v = member_str(img, "version");
  snprintf(buf, 17, "%s", v ? v : "");
  l[0] = (struct promtext_label){ "image", member_str(img, "name") };
  l[1] = (struct promtext_label){ "image_version", buf };
  return 2;
}

static void
sample(struct promtext *p, const struct row *r, struct promtext_label *l,
       size_t n, uint64_t v)
{
  if (r->label)
    l[n++] = (struct promtext_label){ r->label, r->value };
  if (r->scale)
    promtext_double(p, r->name, l, n, (double)v * r->scale);
  else
    promtext_uint(p, r->name, l, n, v);
}

static void
image_families(struct promtext *p, struct json_object *arr)
{
  size_t n = json_object_array_length(arr);
  for (size_t i = 0; i < N_IMAGE_ROWS; i++) {
    const struct row *r = &image_rows[i];
    bool head = i == 0 || strcmp(image_rows[i - 1].name, r->name) != 0;
    bool any = false;
    for (size_t k = 0; k < n && !any; k++) {
      uint64_t v;
      any = member_u64(json_object_array_get_idx(arr, k), r->member, &v);
    }
    if (!any)
      continue;
    if (head || r->help)
      promtext_family(p, r->name, r->type, r->help ? r->help : "");
    for (size_t k = 0; k < n; k++) {
      struct json_object *img = json_object_array_get_idx(arr, k);
      struct promtext_label l[4];
      char ver[17];
      uint64_t v;
      if (member_u64(img, r->member, &v))
        sample(p, r, l, image_labels(img, ver, l), v);
    }
  }
}

static void
upstream_families(struct promtext *p, struct json_object *arr)
{
  size_t n = json_object_array_length(arr);
  bool any = false;
  for (size_t k = 0; k < n && !any; k++)
    any = json_object_object_get_ex(json_object_array_get_idx(arr, k),
                                    "upstreams", NULL);
  if (!any)
    return;
  for (size_t i = 0; i <= sizeof upstream_rows / sizeof upstream_rows[0];
       i++) {
    bool faulty = i == sizeof upstream_rows / sizeof upstream_rows[0];
    const struct row *r = faulty ? NULL : &upstream_rows[i];
    if (faulty)
      promtext_family(p, "thunder_upstream_faulty", "gauge",
                      "1 while an upstream is held off as faulty.");
    else
      promtext_family(p, r->name, r->type, r->help);
    for (size_t k = 0; k < n; k++) {
      struct json_object *img = json_object_array_get_idx(arr, k), *ups;
      if (!json_object_object_get_ex(img, "upstreams", &ups) ||
          !json_object_is_type(ups, json_type_array))
        continue;
      for (size_t j = 0; j < json_object_array_length(ups); j++) {
        struct json_object *u = json_object_array_get_idx(ups, j), *f;
        struct promtext_label l[4];
        char ver[17];
        size_t nl = image_labels(img, ver, l);
        l[nl++] = (struct promtext_label){ "upstream", member_str(u, "uri") };
        uint64_t v;
        if (faulty)
          promtext_uint(p, "thunder_upstream_faulty", l, nl,
                        json_object_object_get_ex(u, "faulty", &f) &&
                            json_object_get_boolean(f));
        else if (member_u64(u, r->member, &v))
          promtext_uint(p, r->name, l, nl, v);
      }
    }
  }
}

static void
latency_family(struct promtext *p, struct json_object *arr, struct node *node)
{
  if (node == NULL)
    return;
  promtext_family(p, "thunder_nbd_read_duration_seconds", "histogram",
                  "Time to serve an NBD read from the node's data path: cache=hit served whole from the cache, cache=miss waited for at least one fetch (the fetch latency a guest sees).");
  for (size_t k = 0; k < json_object_array_length(arr); k++) {
    struct json_object *img = json_object_array_get_idx(arr, k);
    const char *name = member_str(img, "name");
    struct histogram hit, miss;
    histogram_init(&hit, histogram_io_bounds, histogram_io_nbounds);
    histogram_init(&miss, histogram_io_bounds, histogram_io_nbounds);
    if (name == NULL || node_image_histograms(node, name, &hit, &miss) == -1)
      continue;
    struct promtext_label l[3];
    char ver[17];
    size_t nl = image_labels(img, ver, l);
    l[nl] = (struct promtext_label){ "cache", "hit" };
    promtext_histogram(p, "thunder_nbd_read_duration_seconds", l, nl + 1,
                       &hit);
    l[nl] = (struct promtext_label){ "cache", "miss" };
    promtext_histogram(p, "thunder_nbd_read_duration_seconds", l, nl + 1,
                       &miss);
  }
}

static void
cache_families(struct promtext *p, struct json_object *cache)
{
  if (cache == NULL)
    return;
  for (size_t i = 0; i < sizeof cache_rows / sizeof cache_rows[0]; i++) {
    uint64_t v;
    if (!member_u64(cache, cache_rows[i].member, &v))
      continue;
    promtext_family(p, cache_rows[i].name, cache_rows[i].type,
                    cache_rows[i].help);
    promtext_uint(p, cache_rows[i].name, NULL, 0, v);
  }
  struct json_object *vs, *a;
  uint64_t attached = 0, detached = 0;
  if (json_object_object_get_ex(cache, "versions", &vs) &&
      json_object_is_type(vs, json_type_array))
    for (size_t i = 0; i < json_object_array_length(vs); i++) {
      struct json_object *v = json_object_array_get_idx(vs, i);
      if (json_object_object_get_ex(v, "attached", &a) &&
          json_object_get_boolean(a))
        attached++;
      else
        detached++;
    }
  promtext_family(p, "thunder_cache_versions", "gauge",
                  "Image versions on the cache's disk, attached or not.");
  const struct promtext_label la = { "attached", "true" };
  const struct promtext_label ld = { "attached", "false" };
  promtext_uint(p, "thunder_cache_versions", &la, 1, attached);
  promtext_uint(p, "thunder_cache_versions", &ld, 1, detached);
}

/* The conventional process_* gauges, from /proc/self. */
static void
process_families(struct promtext *p)
{
  char buf[1024];
  FILE *fp = fopen("/proc/self/stat", "r");
  size_t n = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
  if (fp)
    fclose(fp);
  buf[n] = '\0';
  /* After the command's closing parenthesis: field 3 (state) onward. */
  char *s = strrchr(buf, ')');
  unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
  long long threads = 0, rss = 0;
  if (s == NULL ||
      sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                    "%*d %*d %*d %*d %lld %*d %llu %llu %lld",
             &utime, &stime, &threads, &start, &vsize, &rss) != 6)
    return;
  double hz = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
  /* Boot time, for the start time in seconds since the epoch. */
  struct timespec rt, bt;
  clock_gettime(CLOCK_REALTIME, &rt);
  clock_gettime(CLOCK_BOOTTIME, &bt);
  double boot = (double)rt.tv_sec - (double)bt.tv_sec +
                ((double)rt.tv_nsec - (double)bt.tv_nsec) / 1e9;

  unsigned fds = 0;
  DIR *d = opendir("/proc/self/fd");
  for (struct dirent *e; d && (e = readdir(d));)
    fds += e->d_name[0] != '.';
  if (d)
    closedir(d);
  fds = fds > 0 ? fds - 1 : 0; /* opendir's own */
  struct rlimit rl = { 0, 0 };
  getrlimit(RLIMIT_NOFILE, &rl);

  promtext_family(p, "process_cpu_seconds_total", "counter",
                  "User and system CPU time spent, in seconds.");
  promtext_double(p, "process_cpu_seconds_total", NULL, 0,
                  (double)(utime + stime) / hz);
  promtext_family(p, "process_resident_memory_bytes", "gauge",
                  "Resident memory size in bytes.");
  promtext_double(p, "process_resident_memory_bytes", NULL, 0,
                  (double)rss * page);
  promtext_family(p, "process_virtual_memory_bytes", "gauge",
                  "Virtual memory size in bytes.");
  promtext_uint(p, "process_virtual_memory_bytes", NULL, 0, vsize);
  promtext_family(p, "process_start_time_seconds", "gauge",
                  "Start time of the process since the epoch, in seconds.");
  promtext_double(p, "process_start_time_seconds", NULL, 0,
                  boot + (double)start / hz);
  promtext_family(p, "process_threads", "gauge", "Number of OS threads.");
  promtext_uint(p, "process_threads", NULL, 0, (uint64_t)threads);
  promtext_family(p, "process_open_fds", "gauge",
                  "Number of open file descriptors.");
  promtext_uint(p, "process_open_fds", NULL, 0, fds);
  promtext_family(p, "process_max_fds", "gauge",
                  "Maximum number of open file descriptors.");
  promtext_uint(p, "process_max_fds", NULL, 0, (uint64_t)rl.rlim_cur);
}

static void
conn_family(struct promtext *p, const struct server_conn_counts *c)
{
  static const char *const kinds[] = { "tcp", "unix", "handshaking" };
  const unsigned v[] = { c->tcp, c->local, c->handshaking };
  promtext_family(p, "thunder_nbd_connections", "gauge",
                  "NBD connections open, by kind: tcp and unix (past the handshake), handshaking (still negotiating, both transports).");
  for (size_t i = 0; i < 3; i++) {
    const struct promtext_label l = { "kind", kinds[i] };
    promtext_uint(p, "thunder_nbd_connections", &l, 1, v[i]);
  }
  static const char *const classes[] = { "tcp", "unix" };
  const uint64_t replies[] = { c->tcp_replies, c->local_replies };
  const uint64_t sends[] = { c->tcp_reply_sends, c->local_reply_sends };
  promtext_family(p, "thunder_nbd_replies_total", "counter",
                  "NBD replies sent whole, by kind of connection (tcp, unix).");
  for (size_t i = 0; i < 2; i++) {
    const struct promtext_label l = { "kind", classes[i] };
    promtext_uint(p, "thunder_nbd_replies_total", &l, 1, replies[i]);
  }
  promtext_family(p, "thunder_nbd_reply_sends_total", "counter",
                  "Send calls that carried NBD reply bytes, by kind of connection: fewer than the replies when several go out in one.");
  for (size_t i = 0; i < 2; i++) {
    const struct promtext_label l = { "kind", classes[i] };
    promtext_uint(p, "thunder_nbd_reply_sends_total", &l, 1, sends[i]);
  }
}

char *
dmetrics_render(struct json_object *images, struct node *node,
                struct json_object *cache,
                const struct server_conn_counts *conns, size_t *len)
{
  struct promtext *p = promtext_new();
  struct json_object *arr = NULL;
  if (p == NULL)
    return NULL;
  if (!json_object_object_get_ex(images, "images", &arr) ||
      !json_object_is_type(arr, json_type_array))
    arr = NULL;

  const struct promtext_label info[] = {
    { "version", THUNDER_VERSION }, { "mode", node ? "node" : "origin" },
  };
  promtext_family(p, "thunder_build_info", "gauge",
                  "1, with thunderd's version and mode as labels.");
  promtext_uint(p, "thunder_build_info", info, 2, 1);
  promtext_family(p, "thunder_images", "gauge",
                  "Images served (attached on a node, with a manifest on an origin).");
  promtext_uint(p, "thunder_images", NULL, 0,
                arr ? json_object_array_length(arr) : 0);
  if (arr) {
    image_families(p, arr);
    upstream_families(p, arr);
    latency_family(p, arr, node);
  }
  if (conns)
    conn_family(p, conns);
  cache_families(p, cache);
  process_families(p);
  return promtext_finish(p, len);
}
