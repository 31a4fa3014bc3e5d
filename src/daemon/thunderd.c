/* thunderd — thunder's node and origin daemon.
 *
 * This file is wiring only: options, logging, signals, and the control
 * endpoint's requests routed to the mode's module.  In origin mode the
 * images of a directory become exports (origin.c); in node mode images
 * are attached at run time and served from the block cache, fetched on
 * demand from upstream (node.c).  Either way the NBD listeners
 * (server.c) serve the exports.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <json-c/json.h>

#include "anchor.h"
#include "cleanup.h"
#include "config.h"
#include "control.h"
#include "curlbuf.h"
#include "dmetrics.h"
#include "export.h"
#include "log.h"
#include "manclient.h"
#include "node.h"
#include "origin.h"
#include "pki.h"
#include "pool.h"
#include "register.h"
#include "resumer.h"
#include "server.h"
#include "vms.h"

#define TLS_DEFAULT_DIR "/etc/thunder/pki"

#define COMPONENT "thunderd"
#define DEFAULT_CONFIG "/etc/thunder/thunderd.conf"
#define DEFAULT_SOCKET "/run/thunder/thunderd.sock"
#define DEFAULT_SOCKET_GROUP "kvm"

static struct {
  char *config;
  bool origin;
  char *images;
  char *cache;
  char *control;
  char *token_file;
  char *node_token_file;
  uint64_t readahead;
  uint64_t fetch_connections;
  uint64_t fetch_depth;
  uint64_t fetch_timeout;
  uint64_t fault_holdoff;
  uint64_t stall_timeout;
  uint64_t commit_interval;
  char *cache_max;
  char *cache_min_free;
  char *listen;
  char *socket;
  char *socket_group;
  uint64_t socket_mode;
  uint64_t threads;
  uint64_t workers;
  uint64_t local_workers;
  uint64_t max_connections;
  uint64_t local_max_connections;
  uint64_t max_handshakes;
  uint64_t local_max_handshakes;
  uint64_t max_connections_per_address;
  uint64_t max_handshakes_per_address;
  uint64_t handshake_timeout;
  uint64_t idle_timeout;
  uint64_t send_timeout;
  uint64_t inflight_per_connection;
  uint64_t inflight_per_address;
  uint64_t inflight_total;
  uint64_t local_inflight_total;
  char *tcp_congestion;
  char *pool;
  char *pool_path;
  char *libvirt_uri;
  uint64_t resume_interval;
  char *log;
  char *log_level;
  char *debug;
  char *api;
  char *node_name;
  char *advertise_nbd;
  char *advertise_control;
  char *rack;
  char *zone;
  uint64_t capacity_vcpus;
  uint64_t capacity_memory_mib;
  uint64_t capacity_disk_gib;
  uint64_t heartbeat_interval;
  char *control_tls;
  char *nbd_tls;
  char *tls_certificates;
} opt = {
  .socket_mode = 0660,
  .threads = 16,
  .workers = 16,
  .local_workers = 16,
  .max_connections = 1024,
  .local_max_connections = 256,
  .max_handshakes = 64,
  .local_max_handshakes = 16,
  .max_connections_per_address = 128,
  .max_handshakes_per_address = 16,
  .handshake_timeout = 10,
  .idle_timeout = 600,
  .send_timeout = 30,
  .inflight_per_connection = 64,
  .inflight_per_address = 64,
  .inflight_total = 256,
  .local_inflight_total = 256,
  .readahead = 8,
  .fetch_connections = 2,
  .fetch_depth = 16,
  .fetch_timeout = 1500,
  .fault_holdoff = 5000,
  .stall_timeout = 120,
  .resume_interval = 200,
  .commit_interval = 20,
  .heartbeat_interval = REGISTER_DEFAULT_INTERVAL_MS,
};

static const struct config_opt options[] = {
  { "config", CONFIG_TYPE_STRING, &opt.config, 0, 0, "FILE",
    "config file (default " DEFAULT_CONFIG ")" },
  { "origin", CONFIG_TYPE_BOOL, &opt.origin, 0, 0, NULL,
    "origin mode: serve the images of --images" },
  { "images", CONFIG_TYPE_STRING, &opt.images, 0, 0, "DIR",
    "origin: directory of images with manifests" },
  { "cache", CONFIG_TYPE_STRING, &opt.cache, 0, 0, "DIR",
    "node mode: cache root (images are attached through --control)" },
  { "control", CONFIG_TYPE_STRING, &opt.control, 0, 0, "HOST:PORT",
    "control endpoint (HTTP/JSON); needs --token-file" },
  { "token-file", CONFIG_TYPE_STRING, &opt.token_file, 0, 0, "FILE",
    "bearer token of the control endpoint (mode 0600 or 0640)" },
  { "readahead", CONFIG_TYPE_UINT, &opt.readahead, 0, 1024, "BLOCKS",
    "node: blocks fetched ahead of a sequential miss, 0 for none (default 8)" },
  { "fetch-connections", CONFIG_TYPE_UINT, &opt.fetch_connections, 1, 16, "N",
    "node: connections per upstream (default 2)" },
  { "fetch-depth", CONFIG_TYPE_UINT, &opt.fetch_depth, 1, 256, "N",
    "node: requests in flight per upstream connection (default 16)" },
  { "fetch-timeout", CONFIG_TYPE_UINT, &opt.fetch_timeout, 50, 600000, "MS",
    "node: a connect, or a request whose connection received nothing for"
    " this long, fails over (default 1500)" },
  { "fault-holdoff", CONFIG_TYPE_UINT, &opt.fault_holdoff, 0, 3600000, "MS",
    "node: a faulty upstream is skipped this long (default 5000)" },
  { "stall-timeout", CONFIG_TYPE_UINT, &opt.stall_timeout, 0, 86400,
    "SECONDS", "node: how long a read waits while no upstream can deliver"
    " its block (retried, origin last) before it fails; 0 fails at once"
    " (default 120)" },
  { "commit-interval", CONFIG_TYPE_UINT, &opt.commit_interval, 1, 10000, "MS",
    "node: how long a fetched block may wait to be marked valid on disk"
    " (default 20)" },
  { "cache-max", CONFIG_TYPE_STRING, &opt.cache_max, 0, 0, "SIZE",
    "node: most the cache may hold, bytes (K/M/G/T suffixes) or N% of its"
    " filesystem (default " CACHEMGR_DEFAULT_MAX ")" },
  { "cache-min-free", CONFIG_TYPE_STRING, &opt.cache_min_free, 0, 0, "SIZE",
    "node: free space the cache leaves on its filesystem, bytes or N%"
    " (default " CACHEMGR_DEFAULT_MIN_FREE ")" },
  { "listen", CONFIG_TYPE_STRING, &opt.listen, 0, 0, "HOST:PORT",
    "NBD over TCP for peers, or 'none' (default 0.0.0.0:10809)" },
  { "socket", CONFIG_TYPE_STRING, &opt.socket, 0, 0, "PATH",
    "NBD over a Unix socket for local QEMU, or 'none' (default "
    DEFAULT_SOCKET ")" },
  { "socket-group", CONFIG_TYPE_STRING, &opt.socket_group, 0, 0, "GROUP",
    "group of the Unix socket (default " DEFAULT_SOCKET_GROUP ")" },
  { "socket-mode", CONFIG_TYPE_OCTAL, &opt.socket_mode, 0, 0777, "MODE",
    "mode of the Unix socket (default 0660)" },
  { "threads", CONFIG_TYPE_UINT, &opt.threads, 1, 256, "N",
    "requests of one connection carried out at once (default 16)" },
  { "workers", CONFIG_TYPE_UINT, &opt.workers, 1, 1024, "N",
    "threads carrying out the requests of TCP clients (default 16)" },
  { "local-workers", CONFIG_TYPE_UINT, &opt.local_workers, 1, 1024, "N",
    "threads carrying out the requests of Unix-socket clients (default 16)" },
  { "max-connections", CONFIG_TYPE_UINT, &opt.max_connections, 1, 1000000,
    "N", "most TCP connections at once (default 1024)" },
  { "local-max-connections", CONFIG_TYPE_UINT, &opt.local_max_connections, 1,
    1000000, "N", "most Unix-socket connections at once (default 256)" },
  { "max-handshakes", CONFIG_TYPE_UINT, &opt.max_handshakes, 1, 65536, "N",
    "most TCP connections still negotiating (default 64)" },
  { "local-max-handshakes", CONFIG_TYPE_UINT, &opt.local_max_handshakes, 1,
    65536, "N", "most Unix-socket connections still negotiating (default 16)" },
  { "max-connections-per-address", CONFIG_TYPE_UINT,
    &opt.max_connections_per_address, 1, 1000000, "N",
    "most TCP connections from one remote address (default 128)" },
  { "max-handshakes-per-address", CONFIG_TYPE_UINT,
    &opt.max_handshakes_per_address, 1, 65536, "N",
    "most TCP connections from one remote address still negotiating"
    " (default 16)" },
  { "handshake-timeout", CONFIG_TYPE_UINT, &opt.handshake_timeout, 1, 3600,
    "SECONDS", "drop clients that have not chosen an export by then"
    " (default 10)" },
  { "idle-timeout", CONFIG_TYPE_UINT, &opt.idle_timeout, 0, 2592000,
    "SECONDS", "close TCP connections without a request for this long,"
    " 0 for never (default 600)" },
  { "send-timeout", CONFIG_TYPE_UINT, &opt.send_timeout, 0, 3600, "SECONDS",
    "close TCP connections whose reply made no progress for this long,"
    " 0 for never (default 30)" },
  { "inflight-per-connection", CONFIG_TYPE_UINT, &opt.inflight_per_connection,
    32, 65536, "MIB", "reply data in flight per connection; more requests"
    " are not read until it drains (default 64)" },
  { "inflight-per-address", CONFIG_TYPE_UINT, &opt.inflight_per_address,
    32, 1048576, "MIB", "reply data in flight for all TCP connections from"
    " one remote address (default 64)" },
  { "inflight-total", CONFIG_TYPE_UINT, &opt.inflight_total, 32, 1048576,
    "MIB", "reply data in flight for all TCP clients (default 256)" },
  { "local-inflight-total", CONFIG_TYPE_UINT, &opt.local_inflight_total, 32,
    1048576, "MIB", "reply data in flight for all Unix-socket clients"
    " (default 256)" },
  { "tcp-congestion", CONFIG_TYPE_STRING, &opt.tcp_congestion, 0, 0, "NAME",
    "TCP congestion control of the NBD connections it serves, e.g. cubic"
    " (default: the system's)" },
  { "pool", CONFIG_TYPE_STRING, &opt.pool, 0, 0, "NAME",
    "node mode: libvirt pool for the images' anchor volumes, or 'none'"
    " (default " POOL_DEFAULT_NAME ")" },
  { "pool-path", CONFIG_TYPE_STRING, &opt.pool_path, 0, 0, "DIR",
    "directory of that pool (default " POOL_DEFAULT_PATH ")" },
  { "libvirt-uri", CONFIG_TYPE_STRING, &opt.libvirt_uri, 0, 0, "URI",
    "libvirt connection (default " POOL_DEFAULT_URI ")" },
  { "resume-interval", CONFIG_TYPE_UINT, &opt.resume_interval, 0, 60000,
    "MS", "node with a pool: how often to look for VMs of the pool that"
    " QEMU paused on an I/O error, to resume them; 0: never (default 200)" },
  { "log", CONFIG_TYPE_STRING, &opt.log, 0, 0, "stderr|syslog",
    "log target (default stderr)" },
  { "log-level", CONFIG_TYPE_STRING, &opt.log_level, 0, 0, "LEVEL",
    "error, warn, info or debug (default info)" },
  { "debug", CONFIG_TYPE_STRING, &opt.debug, 0, 0, "COMPONENTS",
    "debug messages of these components (nbd,server,origin,... or all);"
    " SIGUSR1 toggles all debug at run time" },
  { "api", CONFIG_TYPE_STRING, &opt.api, 0, 0, "URL",
    "node: register with thunder-api at http://HOST:PORT and heartbeat;"
    " needs --control" },
  { "node-name", CONFIG_TYPE_STRING, &opt.node_name, 0, 0, "NAME",
    "node: name registered with the API (default: the host name)" },
  { "node-token-file", CONFIG_TYPE_STRING, &opt.node_token_file, 0, 0, "FILE",
    "node: the token it registers and heartbeats with: its enrolment token"
    " (thunderctl api node enrol; mode 0600 or 0640) (default: --token-file's)" },
  { "advertise-nbd", CONFIG_TYPE_STRING, &opt.advertise_nbd, 0, 0,
    "nbd[s]://HOST:PORT", "node: where other nodes reach --listen"
    " (default: --listen, unless its host is a wildcard; nbds:// when"
    " --tls is on or require, which refuses nbd://)" },
  { "advertise-control", CONFIG_TYPE_STRING, &opt.advertise_control, 0, 0,
    "http://HOST:PORT", "node: where the API reaches --control"
    " (default: --control, unless its host is a wildcard)" },
  { "rack", CONFIG_TYPE_STRING, &opt.rack, 0, 0, "LABEL",
    "node: rack label registered with the API" },
  { "zone", CONFIG_TYPE_STRING, &opt.zone, 0, 0, "LABEL",
    "node: zone label registered with the API" },
  { "capacity-vcpus", CONFIG_TYPE_UINT, &opt.capacity_vcpus, 1,
    REGISTER_VCPUS_MAX, "N",
    "node: vCPUs offered to VMs (default: the online CPUs)" },
  { "capacity-memory-mib", CONFIG_TYPE_UINT, &opt.capacity_memory_mib,
    REGISTER_MEMORY_MIB_MIN, REGISTER_MEMORY_MIB_MAX, "N",
    "node: MiB of memory offered to VMs (default: MemTotal)" },
  { "capacity-disk-gib", CONFIG_TYPE_UINT, &opt.capacity_disk_gib, 1,
    REGISTER_DISK_GIB_MAX, "N", "node: GiB of disk offered to VMs (default:"
    " the free space of the pool's directory; 0 with --pool none)" },
  { "heartbeat-interval", CONFIG_TYPE_UINT, &opt.heartbeat_interval, 100,
    3600000, "MS", "node: time between heartbeats to the API (default 5000)" },
  { "control-tls", CONFIG_TYPE_STRING, &opt.control_tls, 0, 0,
    "off|on|require", "HTTPS on --control with --tls-certificates; require:"
    " only clients with a certificate of the fleet CA (default off)" },
  { "tls", CONFIG_TYPE_STRING, &opt.nbd_tls, 0, 0, "off|on|require",
    "NBD over TLS on --listen (NBD_OPT_STARTTLS) with --tls-certificates;"
    " a TLS client must present a certificate of the fleet CA; require:"
    " nothing but TLS (the Unix socket stays plaintext; default off)" },
  { "tls-certificates", CONFIG_TYPE_STRING, &opt.tls_certificates, 0, 0,
    "DIR", "certificates (thunderctl pki issue): the NBD listener's and"
    " the control endpoint's,"
    " and the CA and client certificate used with an https:// --api"
    " (default " TLS_DEFAULT_DIR ")" },
  { NULL },
};

/* Signals are taken by one thread with sigwait(), so their work runs in
 * ordinary thread context: every other thread blocks them. */
struct signal_ctx {
  struct server *server;
  struct node *node;           /* NULL: origin mode */
  struct registrar *registrar; /* NULL: no --api */
  struct exports *reg;
  enum log_level level; /* the configured level, restored by SIGUSR1 */
};

/* The signals signal_main() takes. */
static void
handled_signals(sigset_t *set)
{
  sigemptyset(set);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGHUP);
  sigaddset(set, SIGUSR1);
}

static void *
signal_main(void *arg)
{
  struct signal_ctx *ctx = arg;
  sigset_t set;
  handled_signals(&set);
  bool debug = false;
  for (;;) {
    int sig;
    if (sigwait(&set, &sig) != 0)
      continue;
    switch (sig) {
    case SIGHUP:
      if (opt.origin) {
        log_info(COMPONENT, "SIGHUP: rescanning %s", opt.images);
        origin_scan(ctx->reg, opt.images);
      }
      break;
    case SIGUSR1:
      debug = !debug;
      log_set_level(debug ? LOG_LEVEL_DEBUG : ctx->level);
      log_info(COMPONENT, "SIGUSR1: debug logging %s", debug ? "on" : "off");
      break;
    default:
      log_info(COMPONENT, "%s: stopping", strsignal(sig));
      register_cancel(ctx->registrar);
      /* Reads waiting out an upstream outage end now: their connections
       * are shut down anyway (QEMU retries them after a reconnect). */
      if (ctx->node)
        node_stop_stalling(ctx->node);
      server_stop(ctx->server);
      return NULL;
    }
  }
}

/* ---- control requests, routed to the mode's module ---------------------- */

/* The control ops' opaque. */
struct ctl_ctx {
  struct node *node; /* NULL: origin mode */
  struct vms *vms;
  struct server *server;
};

/* The control result and error code of a node result. */
static enum control_result
control_of(enum node_result r, const char **code)
{
  switch (r) {
  case NODE_OK: return CONTROL_OK;
  case NODE_ATTACHED: return CONTROL_CREATED;
  case NODE_INVALID: *code = "invalid"; return CONTROL_INVALID;
  case NODE_NOT_FOUND: *code = "not_found"; return CONTROL_NOT_FOUND;
  case NODE_CONFLICT: *code = "conflict"; return CONTROL_CONFLICT;
  case NODE_UPSTREAM: *code = "bad_gateway"; return CONTROL_UPSTREAM;
  case NODE_UNAVAILABLE: *code = "unavailable"; return CONTROL_UNAVAILABLE;
  case NODE_NO_SPACE: *code = "insufficient_storage"; return CONTROL_NO_SPACE;
  case NODE_INTERNAL: break;
  }
  *code = "internal";
  return CONTROL_INTERNAL;
}

static enum control_result
ctl_attach(void *opaque, const struct control_attach *req,
           struct json_object **reply, const char **code, char *err,
           size_t errlen)
{
  struct node *node = ((struct ctl_ctx *)opaque)->node;
  if (node == NULL) {
    *code = "origin_mode";
    snprintf(err, errlen, "this thunderd is an origin: it serves its image directory and attaches nothing");
    return CONTROL_CONFLICT;
  }
  return control_of(node_attach(node, req->name, req->version, req->upstreams,
                                req->nupstreams, reply, err, errlen),
                    code);
}

static enum control_result
ctl_detach(void *opaque, const char *name, struct json_object **reply,
           const char **code, char *err, size_t errlen)
{
  struct node *node = ((struct ctl_ctx *)opaque)->node;
  if (node == NULL) {
    *code = "origin_mode";
    snprintf(err, errlen, "this thunderd is an origin: remove the image's manifest and send SIGHUP instead");
    return CONTROL_CONFLICT;
  }
  enum control_result r = control_of(node_detach(node, name, err, errlen),
                                     code);
  if (r == CONTROL_OK)
    *reply = json_object_new_object();
  return r;
}

static struct exports *the_reg;

static enum control_result
ctl_get(void *opaque, const char *name, struct json_object **reply,
        const char **code, char *err, size_t errlen)
{
  struct node *node = ((struct ctl_ctx *)opaque)->node;
  *reply = node ? node_image_json(node, name) : origin_image_json(the_reg, name);
  if (*reply == NULL) {
    *code = "not_found";
    snprintf(err, errlen, "no image '%s' here", name);
    return CONTROL_NOT_FOUND;
  }
  return CONTROL_OK;
}

static enum control_result
ctl_list(void *opaque, struct json_object **reply, const char **code,
         char *err, size_t errlen)
{
  struct node *node = ((struct ctl_ctx *)opaque)->node;
  *reply = node ? node_list_json(node) : origin_list_json(the_reg);
  if (*reply == NULL) {
    *code = "internal";
    snprintf(err, errlen, "out of memory");
    return CONTROL_INTERNAL;
  }
  return CONTROL_OK;
}

/* The VM requests and /v1/node: vms.c (an origin's are refused there). */
static enum control_result
ctl_vm_put(void *opaque, const struct control_vm *req,
           struct json_object **reply, const char **code, char *err,
           size_t errlen)
{
  return vms_put(((struct ctl_ctx *)opaque)->vms, req, reply, code, err,
                 errlen);
}

static enum control_result
ctl_vm_get(void *opaque, const char *name, struct json_object **reply,
           const char **code, char *err, size_t errlen)
{
  return vms_get(((struct ctl_ctx *)opaque)->vms, name, reply, code, err,
                 errlen);
}

static enum control_result
ctl_vm_delete(void *opaque, const char *name, struct json_object **reply,
              const char **code, char *err, size_t errlen)
{
  return vms_delete(((struct ctl_ctx *)opaque)->vms, name, reply, code, err,
                    errlen);
}

static enum control_result
ctl_vm_list(void *opaque, struct json_object **reply, const char **code,
            char *err, size_t errlen)
{
  return vms_list(((struct ctl_ctx *)opaque)->vms, reply, code, err, errlen);
}

/* GET /v1/cache and POST /v1/cache/gc: node mode only. */
static enum control_result
ctl_cache(void *opaque, bool gc, struct json_object **reply,
          const char **code, char *err, size_t errlen)
{
  struct node *node = ((struct ctl_ctx *)opaque)->node;
  if (node == NULL) {
    *code = "origin_mode";
    snprintf(err, errlen, "this thunderd is an origin: it has no cache");
    return CONTROL_CONFLICT;
  }
  if (gc) {
    uint64_t freed = node_cache_gc(node);
    *reply = json_object_new_object();
    if (*reply)
      json_object_object_add(*reply, "freed_bytes",
                             json_object_new_uint64(freed));
  } else {
    *reply = node_cache_json(node);
  }
  if (*reply == NULL) {
    snprintf(err, errlen, "out of memory");
    return CONTROL_INTERNAL;
  }
  return CONTROL_OK;
}

/* GET /metrics (dmetrics.h). */
static enum control_result
ctl_metrics(void *opaque, char **text, size_t *len, const char **code,
            char *err, size_t errlen)
{
  struct ctl_ctx *ctx = opaque;
  struct node *node = ctx->node;
  CLEANUP_JSON_PUT struct json_object *images =
      node ? node_list_json(node) : origin_list_json(the_reg);
  CLEANUP_JSON_PUT struct json_object *cache =
      node ? node_cache_json(node) : NULL;
  struct server_conn_counts conns;
  server_get_conn_counts(ctx->server, &conns);
  *text = images ? dmetrics_render(images, node, cache, &conns, len) : NULL;
  if (*text == NULL) {
    *code = "internal";
    snprintf(err, errlen, "out of memory");
    return CONTROL_INTERNAL;
  }
  return CONTROL_OK;
}

static enum control_result
ctl_cache_get(void *opaque, struct json_object **reply, const char **code,
              char *err, size_t errlen)
{
  return ctl_cache(opaque, false, reply, code, err, errlen);
}

static enum control_result
ctl_cache_gc(void *opaque, struct json_object **reply, const char **code,
             char *err, size_t errlen)
{
  return ctl_cache(opaque, true, reply, code, err, errlen);
}

static enum control_result
ctl_node_info(void *opaque, struct json_object **reply, const char **code,
              char *err, size_t errlen)
{
  return vms_node_info(((struct ctl_ctx *)opaque)->vms, reply, code, err,
                       errlen);
}

/* Raises the soft limit on open files to the hard one: each connection
 * is an fd, and the server's own limits (max-connections, ...) are the
 * ones meant to refuse clients. */
static void
raise_nofile(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= rl.rlim_max)
    return;
  rlim_t old = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
    log_warn(COMPONENT, "setrlimit RLIMIT_NOFILE %llu: %m",
             (unsigned long long)rl.rlim_max);
  else
    log_debug(COMPONENT, "open files: limit raised from %llu to %llu",
              (unsigned long long)old, (unsigned long long)rl.rlim_max);
}

/* path made absolute (its directory resolved; the file itself may be a
 * socket that comes and goes). */
static int
absolute_path(const char *path, char *out, size_t len)
{
  CLEANUP_FREE char *copy = strdup(path);
  if (copy == NULL)
    return -1;
  char *slash = strrchr(copy, '/');
  const char *dir = slash == NULL ? "." : slash == copy ? "/" : copy;
  const char *base = slash ? slash + 1 : copy;
  if (slash && slash != copy)
    *slash = '\0';
  char real[PATH_MAX];
  if (realpath(dir, real) == NULL) {
    log_error(COMPONENT, "socket: %s: %m", path);
    return -1;
  }
  if ((size_t)snprintf(out, len, "%s/%s", strcmp(real, "/") ? real : "",
                       base) >= len) {
    log_error(COMPONENT, "socket: %s: path too long", path);
    return -1;
  }
  return 0;
}

static bool
is_none(const char *s)
{
  return s && (strcmp(s, "none") == 0 || *s == '\0');
}

/* --api's options are only for a node with a control endpoint; -1 with a
 * logged error otherwise. */
static int
check_api_options(void)
{
  if (opt.api) {
    if (opt.cache == NULL || opt.control == NULL) {
      log_error(COMPONENT, "--api: registering with thunder-api is for node"
                " mode (--cache DIR) with --control HOST:PORT");
      return -1;
    }
    return 0;
  }
  const char *given = opt.node_name ? "node-name"
                      : opt.node_token_file ? "node-token-file"
                      : opt.advertise_nbd ? "advertise-nbd"
                      : opt.advertise_control ? "advertise-control"
                      : opt.rack ? "rack"
                      : opt.zone ? "zone"
                      : opt.capacity_vcpus ? "capacity-vcpus"
                      : opt.capacity_memory_mib ? "capacity-memory-mib"
                      : opt.capacity_disk_gib ? "capacity-disk-gib"
                      : NULL;
  if (given) {
    log_error(COMPONENT, "--%s: only with --api URL", given);
    return -1;
  }
  return 0;
}

/* The directory where the node's VM disks go: the pool's, as libvirt has
 * it, else as configured.  NULL when out of memory. */
static char *
vm_disk_path(void)
{
  struct pool_config pc = { .uri = opt.libvirt_uri, .name = opt.pool,
                            .path = opt.pool_path };
  struct pool_error pe = { 0 };
  struct pool *p = pool_open(&pc, &pe);
  char *path;
  if (p != NULL) {
    path = strdup(pool_path(p));
    pool_close(p);
  } else {
    const char *dir = opt.pool_path ? opt.pool_path : POOL_DEFAULT_PATH;
    path = strdup(dir);
    log_warn(COMPONENT, "capacity: pool: %s; measuring the free space of %s",
             pe.msg, dir);
  }
  return path;
}

/* The TLS settings: --control-tls into *mode and, unless off, the
 * control endpoint's certificates into *pem; with an https:// --api the
 * client's files into *cl.  -1 with a logged error naming the option or
 * the file. */
/* --tls into *mode and, unless off, the NBD listener's certificates into
 * *pem.  -1 with a logged error naming the option or the file. */
static int
load_nbd_tls(enum tlsdir_mode *mode, struct tlsdir_server *pem)
{
  const char *dir = opt.tls_certificates ? opt.tls_certificates
                                         : TLS_DEFAULT_DIR;
  char err[1024];
  if (tlsdir_mode_parse(opt.nbd_tls, mode) == -1) {
    log_error(COMPONENT, "tls: '%s': expected off, on or require",
              opt.nbd_tls);
    return -1;
  }
  if (*mode != TLSDIR_OFF && is_none(opt.listen)) {
    log_error(COMPONENT, "tls: %s needs the TCP listener (--listen)",
              opt.nbd_tls);
    return -1;
  }
  if (*mode != TLSDIR_OFF &&
      tlsdir_load_server(dir, pem, err, sizeof err) == -1) {
    log_error(COMPONENT, "tls: %s (tls-certificates)", err);
    return -1;
  }
  return 0;
}

static int
load_tls(enum tlsdir_mode *mode, struct tlsdir_server *pem,
         struct tlsdir_client *cl, bool *client)
{
  const char *dir = opt.tls_certificates ? opt.tls_certificates
                                         : TLS_DEFAULT_DIR;
  char err[1024];
  *client = false;
  if (tlsdir_mode_parse(opt.control_tls, mode) == -1) {
    log_error(COMPONENT, "control-tls: '%s': expected off, on or require",
              opt.control_tls);
    return -1;
  }
  if (*mode != TLSDIR_OFF && opt.control == NULL) {
    log_error(COMPONENT, "control-tls: %s needs --control HOST:PORT",
              opt.control_tls);
    return -1;
  }
  if (*mode != TLSDIR_OFF &&
      tlsdir_load_server(dir, pem, err, sizeof err) == -1) {
    log_error(COMPONENT, "control-tls: %s (tls-certificates)", err);
    return -1;
  }
  if (opt.api && strncmp(opt.api, "https://", 8) == 0) {
    if (tlsdir_load_client(dir, cl, err, sizeof err) == -1) {
      log_error(COMPONENT, "api: %s (tls-certificates)", err);
      return -1;
    }
    *client = true;
    /* The API takes a node only under its certificate's CN: that is the
     * default name, and another is refused here rather than there. */
    char cn[REGISTER_NAME_MAX + 1];
    if (cl->cert[0] &&
        pki_cert_name(dir, PKI_CLIENT_CERT, cn, sizeof cn) == -1)
      return -1;
    if (cl->cert[0] && opt.node_name && strcmp(opt.node_name, cn) != 0) {
      log_error(COMPONENT, "node-name: '%s', but the client certificate %s names '%s': thunder-api accepts a node only under its certificate's name",
                opt.node_name, cl->cert, cn);
      return -1;
    }
    if (cl->cert[0] && opt.node_name == NULL &&
        (opt.node_name = strdup(cn)) == NULL) {
      log_error(COMPONENT, "out of memory");
      return -1;
    }
  }
  return 0;
}

/* Starts registering with thunder-api (--api); NULL with a logged error. */
static struct registrar *
start_registration(const char *token, const char *tcp_listen,
                   unsigned control_port, bool pool, bool control_https,
                   enum tlsdir_mode nbd_tls, const struct curlbuf_tls *tls)
{
  CLEANUP_FREE char *disk_path = NULL;
  if (pool && opt.capacity_disk_gib == 0 &&
      (disk_path = vm_disk_path()) == NULL) {
    log_error(COMPONENT, "out of memory");
    return NULL;
  }
  struct register_options ro = {
    .api = opt.api, .token = token, .name = opt.node_name,
    .advertise_nbd = opt.advertise_nbd,
    .advertise_control = opt.advertise_control,
    .rack = opt.rack, .zone = opt.zone,
    .vcpus = opt.capacity_vcpus, .memory_mib = opt.capacity_memory_mib,
    .disk_gib = opt.capacity_disk_gib, .interval_ms = opt.heartbeat_interval,
    .listen = tcp_listen, .control = opt.control,
    .control_port = control_port, .disk_path = disk_path,
    .control_https = control_https, .nbd_tls = (int)nbd_tls, .tls = tls,
  };
  char err[1024];
  struct register_config *rc = register_config_new(&ro, err, sizeof err);
  if (rc == NULL) {
    log_error(COMPONENT, "%s", err);
    return NULL;
  }
  return register_start(rc);
}

int
main(int argc, char **argv)
{
  int r = config_load(options, "thunderd", DEFAULT_CONFIG, argc, argv);
  if (r != 0) {
    config_free(options);
    return r == 1 ? EXIT_SUCCESS : EXIT_FAILURE;
  }

  int status = EXIT_FAILURE;
  struct exports *reg = NULL;
  struct server *server = NULL;
  struct node *node = NULL;
  struct control *control = NULL;
  struct anchors *anchors = NULL;
  struct vms *vms = NULL;
  struct registrar *registrar = NULL;
  struct resumer *resumer = NULL;
  struct ctl_ctx ctx = { NULL, NULL, NULL };
  char *token = NULL, *node_token = NULL;
  int nimages = 0;
  enum tlsdir_mode control_tls = TLSDIR_OFF;
  struct tlsdir_server tls_pem = { 0 };
  struct tlsdir_server nbd_pem = { 0 };
  enum tlsdir_mode nbd_tls = TLSDIR_OFF;
  struct tlsdir_client tls_client = { 0 };
  bool tls_api = false;
  enum log_level level = LOG_LEVEL_INFO;

  if (log_init("thunderd", opt.log) == -1) {
    fprintf(stderr, "log: '%s': expected stderr or syslog\n", opt.log);
    goto out;
  }
  if (opt.log_level && log_level_from_name(opt.log_level, &level) == -1) {
    fprintf(stderr, "log-level: '%s': expected error, warn, info or debug\n",
            opt.log_level);
    goto out;
  }
  log_set_level(level);
  if (opt.debug && log_set_debug(opt.debug) == -1) {
    fprintf(stderr, "debug: list too long\n");
    goto out;
  }

  if (opt.origin == (opt.cache != NULL)) {
    log_error(COMPONENT, "choose one mode: --origin --images DIR, or --cache"
              " DIR (node)");
    goto out;
  }
  if (opt.origin && opt.images == NULL) {
    log_error(COMPONENT, "--origin needs --images DIR");
    goto out;
  }
  if (check_api_options() == -1)
    goto out;
  if (opt.cache && opt.control == NULL)
    log_warn(COMPONENT, "node mode without --control: only images attached"
             " before (recorded under %s) can be served", opt.cache);
  if (opt.control && opt.token_file == NULL) {
    log_error(COMPONENT, "--control needs --token-file FILE");
    goto out;
  }
  if (opt.control && (token = control_read_token(opt.token_file)) == NULL)
    goto out;
  if (opt.node_token_file &&
      (node_token = control_read_token(opt.node_token_file)) == NULL)
    goto out;
  if (load_tls(&control_tls, &tls_pem, &tls_client, &tls_api) == -1)
    goto out;
  if (load_nbd_tls(&nbd_tls, &nbd_pem) == -1)
    goto out;

  raise_nofile();
  /* Blocked before any thread starts (node_new starts the cache's
   * reclaimer), so that every thread inherits the mask and only the
   * signal thread takes them. */
  struct sigaction sa = { .sa_handler = SIG_IGN };
  sigaction(SIGPIPE, &sa, NULL);
  sigset_t set;
  handled_signals(&set);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  reg = the_reg = exports_new();
  if (reg == NULL)
    goto out;
  if (opt.origin) {
    if ((nimages = origin_scan(reg, opt.images)) == -1)
      goto out;
    if (nimages == 0)
      log_warn(COMPONENT, "%s: no image with a valid manifest; serving none",
               opt.images);
  } else {
    struct node_params np = {
      .fetch = {
        .conns_per_upstream = (unsigned)opt.fetch_connections,
        .depth = (unsigned)opt.fetch_depth,
        .timeout_ms = (unsigned)opt.fetch_timeout,
        .holdoff_ms = (unsigned)opt.fault_holdoff,
        .stall_timeout_ms = (unsigned)opt.stall_timeout * 1000,
      },
      .readahead = (unsigned)opt.readahead,
      .commit_interval_ms = (unsigned)opt.commit_interval,
    };
    const char *cmax = opt.cache_max ? opt.cache_max : CACHEMGR_DEFAULT_MAX;
    const char *cfree = opt.cache_min_free ? opt.cache_min_free
                                           : CACHEMGR_DEFAULT_MIN_FREE;
    if (cachemgr_parse_size(cmax, &np.cache.max_bytes, &np.cache.max_pct) ||
        cachemgr_parse_size(cfree, &np.cache.min_free_bytes,
                            &np.cache.min_free_pct)) {
      log_error(COMPONENT, "--cache-max %s, --cache-min-free %s: want bytes"
                " (K/M/G/T/P suffixes) or N%%", cmax, cfree);
      goto out;
    }
    if (np.cache.max_bytes == 0 && np.cache.max_pct == 0) {
      log_error(COMPONENT, "--cache-max: must be more than 0");
      goto out;
    }
    /* nbds:// upstreams (TLS) use the node's certificates. */
    manclient_set_tls_certificates(opt.tls_certificates ? opt.tls_certificates
                                                        : TLS_DEFAULT_DIR);
    node = node_new(reg, opt.cache, &np);
    if (node == NULL)
      goto out;
  }

  struct server_config sc = {
    .socket_path = is_none(opt.socket) ? NULL
                   : opt.socket ? opt.socket : DEFAULT_SOCKET,
    .socket_group = opt.socket_group ? opt.socket_group : DEFAULT_SOCKET_GROUP,
    .socket_group_optional = opt.socket_group == NULL,
    .socket_mode = (mode_t)opt.socket_mode,
    .tcp_listen = is_none(opt.listen) ? NULL
                  : opt.listen ? opt.listen : "0.0.0.0:10809",
    .tcp = {
      .max_connections = (unsigned)opt.max_connections,
      .max_handshakes = (unsigned)opt.max_handshakes,
      .workers = (unsigned)opt.workers,
      .inflight_bytes = opt.inflight_total << 20,
    },
    .local = {
      .max_connections = (unsigned)opt.local_max_connections,
      .max_handshakes = (unsigned)opt.local_max_handshakes,
      .workers = (unsigned)opt.local_workers,
      .inflight_bytes = opt.local_inflight_total << 20,
    },
    .conn_requests = (unsigned)opt.threads,
    .conn_inflight_bytes = opt.inflight_per_connection << 20,
    .addr_inflight_bytes = opt.inflight_per_address << 20,
    .max_connections_per_addr = (unsigned)opt.max_connections_per_address,
    .max_handshakes_per_addr = (unsigned)opt.max_handshakes_per_address,
    .handshake_timeout_ms = (unsigned)opt.handshake_timeout * 1000,
    .idle_timeout_ms = (unsigned)opt.idle_timeout * 1000,
    .send_timeout_ms = (unsigned)opt.send_timeout * 1000,
    .tcp_congestion = opt.tcp_congestion,
    .tls = nbd_tls,
    .tls_pem = &nbd_pem,
  };
  server = server_new(reg, &sc);
  tlsdir_server_free(&nbd_pem);
  if (server == NULL)
    goto out;

  if (node && !is_none(opt.pool)) {
    if (sc.socket_path == NULL) {
      log_error(COMPONENT, "pool '%s' needs the Unix socket (--socket) for"
                " its anchor volumes; or set --pool none",
                opt.pool ? opt.pool : POOL_DEFAULT_NAME);
      goto out;
    }
    /* The anchors name the socket: absolute, as QEMU will open it. */
    char sock[PATH_MAX];
    if (absolute_path(sc.socket_path, sock, sizeof sock) == -1)
      goto out;
    anchors = anchors_new(opt.libvirt_uri, opt.pool, opt.pool_path, sock);
    if (anchors == NULL)
      goto out;
    struct node_hooks hooks;
    anchors_hooks(anchors, &hooks);
    node_set_hooks(node, &hooks);
  }
  if (node)
    node_restore(node);
  /* Serving again: guests paused on I/O errors while this node was away
   * (a restart) can go on. */
  if (anchors && opt.resume_interval > 0) {
    struct pool_config pc = { .uri = opt.libvirt_uri, .name = opt.pool,
                              .path = opt.pool_path };
    resumer = resumer_start(&pc, (unsigned)opt.resume_interval);
    if (resumer == NULL)
      goto out;
  }
  if (opt.control) {
    vms = vms_new(opt.libvirt_uri, opt.pool, opt.pool_path, anchors != NULL,
                  node, reg);
    if (vms == NULL)
      goto out;
    ctx = (struct ctl_ctx){ .node = node, .vms = vms, .server = server };
    struct control_ops ops = {
      .attach = ctl_attach, .detach = ctl_detach, .get = ctl_get,
      .list = ctl_list, .vm_put = ctl_vm_put, .vm_get = ctl_vm_get,
      .vm_delete = ctl_vm_delete, .vm_list = ctl_vm_list,
      .node_info = ctl_node_info, .cache_get = ctl_cache_get,
      .cache_gc = ctl_cache_gc, .metrics = ctl_metrics, .opaque = &ctx,
    };
    control = control_new_tls(opt.control, token, &ops, control_tls,
                              &tls_pem);
    if (control == NULL)
      goto out;
    log_info(COMPONENT, "control endpoint on %s port %u (%s, tls %s)",
             opt.control, control_port(control),
             control_tls ? "https" : "http", tlsdir_mode_name(control_tls));
  }
  if (opt.api) {
    struct curlbuf_tls ct = {
      tls_client.cacert, tls_client.cert[0] ? tls_client.cert : NULL,
      tls_client.key[0] ? tls_client.key : NULL,
    };
    registrar = start_registration(node_token ? node_token : token,
                                   sc.tcp_listen,
                                   control_port(control), anchors != NULL,
                                   control_tls != TLSDIR_OFF, nbd_tls,
                                   tls_api ? &ct : NULL);
    if (registrar == NULL)
      goto out;
  }

  struct signal_ctx sctx = { .server = server, .node = node,
                             .registrar = registrar,
                             .reg = reg, .level = level };
  pthread_t sig_thread;
  if ((errno = pthread_create(&sig_thread, NULL, signal_main, &sctx)) != 0) {
    log_error(COMPONENT, "pthread_create: %m");
    goto out;
  }
  pthread_setname_np(sig_thread, "signals");

  if (opt.origin)
    log_info(COMPONENT, "ready: origin mode, %d images", nimages);
  else
    log_info(COMPONENT, "ready: node mode, cache %s", opt.cache);
  if (server_run(server) == 0)
    status = EXIT_SUCCESS;
  else {
    /* Connections that would not end still use the exports: leave
     * everything allocated rather than free it under them. */
    log_error(COMPONENT, "exiting with connections still open");
    _exit(EXIT_FAILURE);
  }
  /* If the server stopped by itself, wake the signal thread to end it. */
  pthread_kill(sig_thread, SIGTERM);
  pthread_join(sig_thread, NULL);
  log_info(COMPONENT, "stopped");

out:
  resumer_stop(resumer);
  register_stop(registrar);
  control_free(control);
  vms_free(vms);
  server_free(server);
  node_free(node);
  anchors_free(anchors);
  exports_free(reg);
  free(token);
  if (node_token)
    explicit_bzero(node_token, strlen(node_token));
  free(node_token);
  tlsdir_server_free(&tls_pem);
  tlsdir_server_free(&nbd_pem);
  config_free(options);
  return status;
}
