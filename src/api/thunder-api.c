/* thunder-api — thunder's central REST service (docs/api.md).
 *
 * Wiring only: options, logging, tokens, signals; the HTTP side is
 * apiserver.c, the background work converge.c, the state store.c.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "converge.h"
#include "apiserver.h"
#include "config.h"
#include "curlbuf.h"
#include "log.h"
#include "manclient.h"
#include "thunder-build.h"
#include "nodecall.h"
#include "tlsdir.h"
#include "token.h"

#define COMPONENT "thunder-api"
#define DEFAULT_CONFIG "/etc/thunder/thunder-api.conf"
#define TLS_DEFAULT_DIR "/etc/thunder/pki"

static struct {
  char *config;
  char *listen;
  char *db;
  char *token_file;
  char *node_token_file;
  bool require_enrolment;
  uint64_t node_timeout;
  uint64_t poll_interval;
  uint64_t detach_grace;
  uint64_t push_timeout;
  uint64_t push_retries;
  uint64_t push_parallel;
  uint64_t max_body;
  uint64_t max_depth;
  uint64_t max_count;
  uint64_t max_connections;
  uint64_t connection_timeout;
  uint64_t threads;
  uint64_t link_mbit;
  uint64_t origin_mbit;
  uint64_t origin_cap;
  uint64_t origin_copies;
  uint64_t working_set_mib;
  char *ui_dir;
  char *log;
  char *log_level;
  char *debug;
  char *tls;
  char *tls_certificates;
} opt = {
  .node_timeout = 15,
  .poll_interval = 500,
  .detach_grace = 600,
  .push_timeout = 60000,
  .push_retries = 3,
  .push_parallel = 32,
  .max_body = 64 * 1024,
  .max_depth = 8,
  .max_count = 10000,
  .max_connections = 256,
  .connection_timeout = 30,
  .threads = 4,
  .link_mbit = 1000,
  .origin_mbit = 1000,
  .origin_cap = 4,
  .origin_copies = 1,
  .working_set_mib = 64,
};

static const struct config_opt options[] = {
  { "config", CONFIG_TYPE_STRING, &opt.config, 0, 0, "FILE",
    "config file (default " DEFAULT_CONFIG ")" },
  { "listen", CONFIG_TYPE_STRING, &opt.listen, 0, 0, "HOST:PORT",
    "the REST endpoint (default 127.0.0.1:7080)" },
  { "db", CONFIG_TYPE_STRING, &opt.db, 0, 0, "PATH",
    "the SQLite database (default /var/lib/thunder/api.db)" },
  { "token-file", CONFIG_TYPE_STRING, &opt.token_file, 0, 0, "FILE",
    "the operator's bearer token (required)" },
  { "node-token-file", CONFIG_TYPE_STRING, &opt.node_token_file, 0, 0, "FILE",
    "the nodes' token: they register with it, thunder-api calls their"
    " control endpoints with it (default: the operator's)" },
  { "require-enrolment", CONFIG_TYPE_BOOL, &opt.require_enrolment, 0, 0, NULL,
    "register and heartbeat a node only with its enrolment token (POST"
    " /v1/nodes/NAME/enrolment) or a client certificate naming it, never"
    " with the fleet node token alone" },
  { "node-timeout", CONFIG_TYPE_UINT, &opt.node_timeout, 2, 86400, "S",
    "a node without a heartbeat this long is down (default 15)" },
  { "poll-interval", CONFIG_TYPE_UINT, &opt.poll_interval, 50, 60000, "MS",
    "how often unfinished clusters are stepped (default 500)" },
  { "detach-grace", CONFIG_TYPE_UINT, &opt.detach_grace, 0, 2592000, "S",
    "an image version no VM of a node has used for this long is detached"
    " there, its blocks the first to evict (default 600)" },
  { "push-timeout", CONFIG_TYPE_UINT, &opt.push_timeout, 100, 600000, "MS",
    "one call to a node's control endpoint (default 60000)" },
  { "push-retries", CONFIG_TYPE_UINT, &opt.push_retries, 0, 20, "N",
    "retries of a call failing with no answer or 5xx (default 3)" },
  { "push-parallel", CONFIG_TYPE_UINT, &opt.push_parallel, 1, 1024, "N",
    "calls to nodes in flight at once (default 32)" },
  { "max-body", CONFIG_TYPE_UINT, &opt.max_body, 1024, 16 * 1024 * 1024,
    "BYTES", "largest request body, else 413 (default 65536)" },
  { "max-depth", CONFIG_TYPE_UINT, &opt.max_depth, 2, 64, "N",
    "deepest JSON nesting, else 400 (default 8)" },
  { "max-count", CONFIG_TYPE_UINT, &opt.max_count, 1, 1000000, "N",
    "most VMs in a cluster and elements in an array (default 10000)" },
  { "max-connections", CONFIG_TYPE_UINT, &opt.max_connections, 1, 65536, "N",
    "HTTP connections at once (default 256)" },
  { "connection-timeout", CONFIG_TYPE_UINT, &opt.connection_timeout, 1, 3600,
    "S", "an idle HTTP connection is closed after (default 30)" },
  { "threads", CONFIG_TYPE_UINT, &opt.threads, 1, 256, "N",
    "HTTP worker threads (default 4)" },
  { "link-mbit", CONFIG_TYPE_UINT, &opt.link_mbit, 1, 1000000, "MBIT",
    "planner: a node's uplink (default 1000)" },
  { "origin-mbit", CONFIG_TYPE_UINT, &opt.origin_mbit, 1, 10000000, "MBIT",
    "planner: the origin's uplink (default 1000)" },
  { "origin-copies", CONFIG_TYPE_UINT, &opt.origin_copies, 1, 1024, "N",
    "planner: most copies of an image the origin sends per cluster; more"
    " than 1 lets uncached subtrees start at the origin (default 1)" },
  { "origin-cap", CONFIG_TYPE_UINT, &opt.origin_cap, 1, 1024, "N",
    "planner: most children of the origin (default 4)" },
  { "working-set-mib", CONFIG_TYPE_UINT, &opt.working_set_mib, 1, 1048576,
    "MIB", "planner: bytes a boot reads (default 64)" },
  { "ui-dir", CONFIG_TYPE_STRING, &opt.ui_dir, 0, 0, "DIR",
    "the status page's files, served at /ui/ (default " THUNDER_UI_DIR
    "; none: no page)" },
  { "log", CONFIG_TYPE_STRING, &opt.log, 0, 0, "stderr|syslog",
    "where to log (default stderr)" },
  { "log-level", CONFIG_TYPE_STRING, &opt.log_level, 0, 0, "LEVEL",
    "error, warn, info or debug (default info)" },
  { "debug", CONFIG_TYPE_STRING, &opt.debug, 0, 0, "COMPONENTS",
    "debug logging for these components (comma separated)" },
  { "tls", CONFIG_TYPE_STRING, &opt.tls, 0, 0, "off|on|require",
    "HTTPS with --tls-certificates; a client certificate of the fleet CA"
    " is the node's identity; require: clients without one are refused"
    " (default off)" },
  { "tls-certificates", CONFIG_TYPE_STRING, &opt.tls_certificates, 0, 0,
    "DIR", "certificates (thunderctl pki issue): this server's, and the"
    " CA and client certificate used to call https:// nodes and to read"
    " an nbds:// origin's manifests (default "
    TLS_DEFAULT_DIR ")" },
  { NULL, 0, NULL, 0, 0, NULL, NULL },
};

int
main(int argc, char **argv)
{
  int r = config_load(options, "thunder-api", DEFAULT_CONFIG, argc, argv);
  if (r != 0) {
    config_free(options);
    return r == 1 ? EXIT_SUCCESS : EXIT_FAILURE;
  }
  int status = EXIT_FAILURE;
  char *token = NULL, *node_token = NULL;
  struct converger *cv = NULL;
  struct api_server *srv = NULL;
  enum log_level level = LOG_LEVEL_INFO;
  char err[1024];
  enum tlsdir_mode tls;
  struct tlsdir_server pem = { 0 };
  struct tlsdir_client cl = { 0 };
  bool client_tls = false;

  if (log_init("thunder-api", opt.log) == -1) {
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
  if (opt.token_file == NULL) {
    log_error(COMPONENT, "--token-file FILE is required");
    goto out;
  }
  if ((token = token_read_file(opt.token_file, err, sizeof err)) == NULL) {
    log_error(COMPONENT, "%s", err);
    goto out;
  }
  if (opt.node_token_file &&
      (node_token = token_read_file(opt.node_token_file, err, sizeof err)) == NULL) {
    log_error(COMPONENT, "%s", err);
    goto out;
  }
  const char *tls_dir = opt.tls_certificates ? opt.tls_certificates
                                             : TLS_DEFAULT_DIR;
  if (tlsdir_mode_parse(opt.tls, &tls) == -1) {
    log_error(COMPONENT, "tls: '%s': expected off, on or require", opt.tls);
    goto out;
  }
  if (tls != TLSDIR_OFF &&
      tlsdir_load_server(tls_dir, &pem, err, sizeof err) == -1) {
    log_error(COMPONENT, "tls: %s (tls-certificates)", err);
    goto out;
  }
  /* Calls to the nodes verify them with the fleet CA whenever one is
   * configured. */
  if (tls != TLSDIR_OFF || opt.tls_certificates) {
    if (tlsdir_load_client(tls_dir, &cl, err, sizeof err) == -1) {
      log_error(COMPONENT, "tls-certificates: %s", err);
      goto out;
    }
    client_tls = true;
  }
  /* An nbds:// origin's manifest is read with this directory's CA and
   * client certificate (an origin under --tls require verifies it). */
  manclient_set_tls_certificates(tls_dir);
  struct curlbuf_tls node_tls = {
    cl.cacert, cl.cert[0] ? cl.cert : NULL, cl.key[0] ? cl.key : NULL,
  };
  if (nodecall_global_init() == -1)
    goto out;

  struct api_config cfg = {
    .listen = opt.listen ? opt.listen : "127.0.0.1:7080",
    .db = opt.db ? opt.db : "/var/lib/thunder/api.db",
    .token = token,
    .node_token = node_token,
    .require_enrolment = opt.require_enrolment,
    .node_timeout_s = (unsigned)opt.node_timeout,
    .poll_ms = (unsigned)opt.poll_interval,
    .detach_grace_s = (unsigned)opt.detach_grace,
    .push_timeout_ms = (unsigned)opt.push_timeout,
    .push_retries = (unsigned)opt.push_retries,
    .push_parallel = (unsigned)opt.push_parallel,
    .max_body = (size_t)opt.max_body,
    .max_depth = (unsigned)opt.max_depth,
    .max_count = (unsigned)opt.max_count,
    .max_connections = (unsigned)opt.max_connections,
    .connection_timeout_s = (unsigned)opt.connection_timeout,
    .threads = (unsigned)opt.threads,
    .link_bps = (double)opt.link_mbit * 1e6 / 8,
    .origin_bps = (double)opt.origin_mbit * 1e6 / 8,
    .origin_cap = (unsigned)opt.origin_cap,
    .origin_copies = (unsigned)opt.origin_copies,
    .working_set = opt.working_set_mib << 20,
    .ui_dir = opt.ui_dir,
    .tls = tls,
    .tls_pem = &pem,
    .node_tls = client_tls ? &node_tls : NULL,
  };

  /* Every thread but this one blocks the signals; this one waits. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  if ((cv = converger_new(&cfg)) == NULL)
    goto out;
  if ((srv = api_server_new(&cfg, cv)) == NULL)
    goto out;
  log_info(COMPONENT, "ready: %s://%s (port %u, tls %s), database %s",
           tls ? "https" : "http", cfg.listen, api_server_port(srv),
           tlsdir_mode_name(tls), cfg.db);
  for (;;) {
    int sig;
    if (sigwait(&set, &sig) != 0)
      continue;
    if (sig == SIGHUP) {
      log_info(COMPONENT, "SIGHUP: nothing to reload (restart to apply a new configuration)");
      continue;
    }
    log_info(COMPONENT, "%s: stopping", strsignal(sig));
    break;
  }
  status = EXIT_SUCCESS;
out:
  api_server_free(srv);
  converger_free(cv);
  free(token);
  free(node_token);
  tlsdir_server_free(&pem);
  config_free(options);
  return status;
}
