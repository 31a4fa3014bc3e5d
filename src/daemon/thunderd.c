/* thunderd — thunder's node and origin daemon.
 *
 * This file is wiring only: options, logging, signals; the origin's
 * images become exports (origin.c) served by the NBD listeners
 * (server.c).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "export.h"
#include "log.h"
#include "origin.h"
#include "server.h"

#define COMPONENT "thunderd"
#define DEFAULT_CONFIG "/etc/thunder/thunderd.conf"
#define DEFAULT_SOCKET "/run/thunder/thunderd.sock"
#define DEFAULT_SOCKET_GROUP "kvm"

static struct {
  char *config;
  bool origin;
  char *images;
  char *listen;
  char *socket;
  char *socket_group;
  uint64_t socket_mode;
  uint64_t threads;
  uint64_t max_connections;
  uint64_t max_handshakes;
  uint64_t handshake_timeout;
  char *log;
  char *log_level;
  char *debug;
} opt = {
  .socket_mode = 0660,
  .threads = 16,
  .max_connections = 1024,
  .max_handshakes = 64,
  .handshake_timeout = 10,
};

static const struct config_opt options[] = {
  { "config", CONFIG_TYPE_STRING, &opt.config, 0, 0, "FILE",
    "config file (default " DEFAULT_CONFIG ")" },
  { "origin", CONFIG_TYPE_BOOL, &opt.origin, 0, 0, NULL,
    "origin mode: serve the images of --images" },
  { "images", CONFIG_TYPE_STRING, &opt.images, 0, 0, "DIR",
    "origin: directory of images with manifests" },
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
    "request threads per connection (default 16)" },
  { "max-connections", CONFIG_TYPE_UINT, &opt.max_connections, 1, 65536, "N",
    "most connections at once (default 1024)" },
  { "max-handshakes", CONFIG_TYPE_UINT, &opt.max_handshakes, 1, 65536, "N",
    "most connections still negotiating (default 64)" },
  { "handshake-timeout", CONFIG_TYPE_UINT, &opt.handshake_timeout, 1, 3600,
    "SECONDS", "drop clients that have not chosen an export by then"
    " (default 10)" },
  { "log", CONFIG_TYPE_STRING, &opt.log, 0, 0, "stderr|syslog",
    "log target (default stderr)" },
  { "log-level", CONFIG_TYPE_STRING, &opt.log_level, 0, 0, "LEVEL",
    "error, warn, info or debug (default info)" },
  { "debug", CONFIG_TYPE_STRING, &opt.debug, 0, 0, "COMPONENTS",
    "debug messages of these components (nbd,server,origin,... or all);"
    " SIGUSR1 toggles all debug at run time" },
  { NULL },
};

/* Signals are taken by one thread with sigwait(), so their work runs in
 * ordinary thread context: every other thread blocks them. */
struct signal_ctx {
  struct server *server;
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
      log_info(COMPONENT, "SIGHUP: rescanning %s", opt.images);
      origin_scan(ctx->reg, opt.images);
      break;
    case SIGUSR1:
      debug = !debug;
      log_set_level(debug ? LOG_LEVEL_DEBUG : ctx->level);
      log_info(COMPONENT, "SIGUSR1: debug logging %s", debug ? "on" : "off");
      break;
    default:
      log_info(COMPONENT, "%s: stopping", strsignal(sig));
      server_stop(ctx->server);
      return NULL;
    }
  }
}

static bool
is_none(const char *s)
{
  return s && (strcmp(s, "none") == 0 || *s == '\0');
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

  if (!opt.origin) {
    log_error(COMPONENT, "no mode given: use --origin --images DIR (this"
              " version has the origin mode only)");
    goto out;
  }
  if (opt.images == NULL) {
    log_error(COMPONENT, "--origin needs --images DIR");
    goto out;
  }

  reg = exports_new();
  if (reg == NULL)
    goto out;
  if (origin_scan(reg, opt.images) == -1)
    goto out;
  if (exports_count(reg) == 0)
    log_warn(COMPONENT, "%s: no image with a valid manifest; serving none",
             opt.images);

  struct sigaction sa = { .sa_handler = SIG_IGN };
  sigaction(SIGPIPE, &sa, NULL);
  sigset_t set;
  handled_signals(&set);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  struct server_config sc = {
    .socket_path = is_none(opt.socket) ? NULL
                   : opt.socket ? opt.socket : DEFAULT_SOCKET,
    .socket_group = opt.socket_group ? opt.socket_group : DEFAULT_SOCKET_GROUP,
    .socket_group_optional = opt.socket_group == NULL,
    .socket_mode = (mode_t)opt.socket_mode,
    .tcp_listen = is_none(opt.listen) ? NULL
                  : opt.listen ? opt.listen : "0.0.0.0:10809",
    .threads = (unsigned)opt.threads,
    .max_connections = (unsigned)opt.max_connections,
    .max_handshakes = (unsigned)opt.max_handshakes,
    .handshake_timeout_ms = (unsigned)opt.handshake_timeout * 1000,
  };
  server = server_new(reg, &sc);
  if (server == NULL)
    goto out;

  struct signal_ctx sctx = { .server = server, .reg = reg, .level = level };
  pthread_t sig_thread;
  if ((errno = pthread_create(&sig_thread, NULL, signal_main, &sctx)) != 0) {
    log_error(COMPONENT, "pthread_create: %m");
    goto out;
  }

  log_info(COMPONENT, "ready: origin mode, %zu images", exports_count(reg));
  if (server_run(server) == 0)
    status = EXIT_SUCCESS;
  /* If the server stopped by itself, wake the signal thread to end it. */
  pthread_kill(sig_thread, SIGTERM);
  pthread_join(sig_thread, NULL);
  log_info(COMPONENT, "stopped");

out:
  server_free(server);
  exports_free(reg);
  config_free(options);
  return status;
}
