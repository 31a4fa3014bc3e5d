/* thunder — NBD listeners, connection threads and limits; see server.h.
 *
 * Threads: the thread in server_run() polls the listeners and a wake-up
 * pipe and accepts.  Each connection has a detached thread that owns it:
 * handshake (under a deadline), then it starts threads - 1 helpers and
 * serves requests itself; it joins the helpers, closes the socket and
 * unlinks the connection.  s->lock guards the connection list and the
 * counters; s->cond signals a connection's end to server_run().
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "nbdsrv.h"
#include "netaddr.h"

#define COMPONENT "server"
#define LISTENERS_MAX 16
#define CONN_STACK_SIZE (1024 * 1024)
/* How long server_run() waits for connections to end at shutdown. */
#define SHUTDOWN_WAIT_MS 5000

struct conn {
  struct conn *prev, *next;
  struct server *s;
  int fd;
  _Atomic int64_t deadline_ms; /* monotonic; 0: none */
  char peer[INET6_ADDRSTRLEN + 16];
  struct nbdsrv_conn *nc;
};

struct server {
  struct exports *reg;
  struct server_config cfg;
  char *socket_path; /* owned copy; unlinked on free */
  int lfds[LISTENERS_MAX];
  bool lunix[LISTENERS_MAX];
  size_t nl;
  int wake[2];

  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct conn *conns;
  unsigned nconns, nhandshakes;
  unsigned long refused;
};

static int64_t
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready (events) before the connection's deadline.
 * 0 when ready or no deadline; -1 with ETIMEDOUT. */
static int
wait_deadline(struct conn *cn, short events)
{
  int64_t deadline = atomic_load(&cn->deadline_ms);
  if (deadline == 0)
    return 0;
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    struct pollfd pfd = { .fd = cn->fd, .events = events };
    int r = poll(&pfd, 1, (int)left);
    if (r > 0)
      return 0;
    if (r == -1 && errno != EINTR)
      return -1;
  }
}

static int
sock_read(void *opaque, void *buf, size_t len)
{
  struct conn *cn = opaque;
  size_t got = 0;
  while (got < len) {
    if (wait_deadline(cn, POLLIN) == -1)
      return -1;
    ssize_t n = recv(cn->fd, (char *)buf + got, len - got, 0);
    if (n == 0)
      return got == 0 ? 0 : -1;
    if (n == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    got += (size_t)n;
  }
  return 1;
}

static int
sock_writev(void *opaque, const struct iovec *iov_in, int iovcnt)
{
  struct conn *cn = opaque;
  struct iovec iov[8];
  if (iovcnt > 8)
    return -1;
  memcpy(iov, iov_in, (size_t)iovcnt * sizeof *iov);
  struct iovec *v = iov;
  while (iovcnt > 0) {
    if (wait_deadline(cn, POLLOUT) == -1)
      return -1;
    struct msghdr msg = { .msg_iov = v, .msg_iovlen = (size_t)iovcnt };
    ssize_t n = sendmsg(cn->fd, &msg, MSG_NOSIGNAL);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    while (iovcnt > 0 && (size_t)n >= v->iov_len) {
      n -= (ssize_t)v->iov_len;
      v++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      v->iov_base = (char *)v->iov_base + n;
      v->iov_len -= (size_t)n;
    }
  }
  return 0;
}

static void *
worker_main(void *arg)
{
  struct conn *cn = arg;
  struct nbdsrv_buf buf = { 0 };
  while (nbdsrv_serve_one(cn->nc, &buf) == 1)
    ;
  nbdsrv_buf_free(&buf);
  return NULL;
}

/* Unlinks cn from the server and frees it; wakes server_run(). */
static void
conn_end(struct conn *cn)
{
  struct server *s = cn->s;
  close(cn->fd);
  nbdsrv_conn_free(cn->nc);
  pthread_mutex_lock(&s->lock);
  if (cn->prev)
    cn->prev->next = cn->next;
  else
    s->conns = cn->next;
  if (cn->next)
    cn->next->prev = cn->prev;
  s->nconns--;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
  free(cn);
}

static void *
conn_main(void *arg)
{
  struct conn *cn = arg;
  struct server *s = cn->s;

  int r = nbdsrv_handshake(cn->nc);
  atomic_store(&cn->deadline_ms, 0);
  pthread_mutex_lock(&s->lock);
  s->nhandshakes--;
  pthread_mutex_unlock(&s->lock);

  if (r == 1) {
    log_debug(COMPONENT, "%s: serving '%s'", cn->peer,
              export_name(nbdsrv_conn_export(cn->nc)));
    unsigned nhelpers = s->cfg.threads > 1 ? s->cfg.threads - 1 : 0;
    pthread_t *helpers = calloc(nhelpers ? nhelpers : 1, sizeof *helpers);
    unsigned started = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, CONN_STACK_SIZE);
    for (; helpers && started < nhelpers; started++) {
      if (pthread_create(&helpers[started], &attr, worker_main, cn) != 0) {
        log_warn(COMPONENT, "%s: pthread_create: only %u request threads",
                 cn->peer, started + 1);
        break;
      }
    }
    pthread_attr_destroy(&attr);
    worker_main(cn);
    for (unsigned i = 0; i < started; i++)
      pthread_join(helpers[i], NULL);
    free(helpers);
  } else if (r == -1) {
    log_debug(COMPONENT, "%s: handshake failed: %s", cn->peer,
              errno == ETIMEDOUT ? "timed out" : "protocol error");
  }
  log_debug(COMPONENT, "%s: closed", cn->peer);
  conn_end(cn);
  return NULL;
}

static void
peer_name(int fd, bool is_unix, char *out, size_t len)
{
  if (is_unix) {
    struct ucred cred;
    socklen_t cl = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
      snprintf(out, len, "unix:pid=%d", (int)cred.pid);
    else
      snprintf(out, len, "unix");
    return;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, port,
                sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
  snprintf(out, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
           port);
}

/* Applies cfg.tcp_congestion to TCP socket fd.  Replies (the blocks a
 * child fetches) are sent on these sockets, in bursts of one block per
 * request with idle gaps between a child's reads: traffic that is
 * application-limited.  With BBR (v1, internal pacing, no fq qdisc) such a
 * socket was seen to hold a reply's unsent bytes for 80-100 ms with
 * nothing in flight and the window open, after which it resumed on a
 * timer; in a relay chain each hop adds its own stalls, so the lag behind
 * the chain's head grew with depth (docs/benchmarks.md, finding 2).  The
 * listener was checked in server_new, so a failure here is unexpected:
 * logged once, the connection keeps the default. */
static void
set_congestion(struct server *s, int fd)
{
  const char *cc = s->cfg.tcp_congestion;
  if (cc == NULL ||
      setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc))
          == 0)
    return;
  static atomic_bool warned;
  if (!atomic_exchange(&warned, true))
    log_warn(COMPONENT, "setsockopt TCP_CONGESTION '%s': %m; keeping the"
             " system's default", cc);
}

static void
accept_one(struct server *s, int lfd, bool is_unix)
{
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd == -1) {
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
      log_warn(COMPONENT, "accept: %m");
    if (errno == EMFILE || errno == ENFILE)
      usleep(100 * 1000); /* let connections end rather than spin */
    return;
  }

  pthread_mutex_lock(&s->lock);
  bool full = s->nconns >= s->cfg.max_connections ||
              s->nhandshakes >= s->cfg.max_handshakes;
  if (full) {
    unsigned long refused = ++s->refused;
    unsigned nc = s->nconns, nh = s->nhandshakes;
    pthread_mutex_unlock(&s->lock);
    close(fd);
    /* One line per power of two, so a flood cannot flood the log. */
    if ((refused & (refused - 1)) == 0)
      log_warn(COMPONENT, "connection refused: %u connections, %u negotiating"
               " (limits %u, %u); %lu refused so far", nc, nh,
               s->cfg.max_connections, s->cfg.max_handshakes, refused);
    return;
  }
  s->nconns++;
  s->nhandshakes++;
  pthread_mutex_unlock(&s->lock);

  if (!is_unix) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_congestion(s, fd);
  }

  struct conn *cn = calloc(1, sizeof *cn);
  if (cn == NULL)
    goto fail;
  cn->s = s;
  cn->fd = fd;
  atomic_init(&cn->deadline_ms, now_ms() + s->cfg.handshake_timeout_ms);
  peer_name(fd, is_unix, cn->peer, sizeof cn->peer);
  struct nbdsrv_io io = { .read = sock_read, .writev = sock_writev,
                          .opaque = cn };
  cn->nc = nbdsrv_conn_new(s->reg, &io, cn->peer);
  if (cn->nc == NULL)
    goto fail;
  nbdsrv_conn_set_local(cn->nc, is_unix);

  pthread_mutex_lock(&s->lock);
  cn->next = s->conns;
  if (s->conns)
    s->conns->prev = cn;
  s->conns = cn;
  pthread_mutex_unlock(&s->lock);

  pthread_attr_t attr;
  pthread_t tid;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, CONN_STACK_SIZE);
  int r = pthread_create(&tid, &attr, conn_main, cn);
  pthread_attr_destroy(&attr);
  if (r == 0) {
    log_debug(COMPONENT, "%s: connected", cn->peer);
    return;
  }
  errno = r;
  log_warn(COMPONENT, "pthread_create: %m");
  pthread_mutex_lock(&s->lock);
  s->nhandshakes--;
  pthread_mutex_unlock(&s->lock);
  conn_end(cn); /* closes fd, decrements nconns */
  return;

fail:
  log_warn(COMPONENT, "connection: out of memory");
  if (cn)
    nbdsrv_conn_free(cn->nc);
  free(cn);
  close(fd);
  pthread_mutex_lock(&s->lock);
  s->nconns--;
  s->nhandshakes--;
  pthread_mutex_unlock(&s->lock);
}

/* ---- listeners ------------------------------------------------------ */

static int
add_listener(struct server *s, int fd, bool is_unix)
{
  if (s->nl == LISTENERS_MAX) {
    log_error(COMPONENT, "too many listening addresses");
    close(fd);
    return -1;
  }
  if (listen(fd, 1024) == -1) {
    log_error(COMPONENT, "listen: %m");
    close(fd);
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  s->lfds[s->nl] = fd;
  s->lunix[s->nl] = is_unix;
  s->nl++;
  return 0;
}

/* Creates dir's missing parents with mode 0755. */
static int
mkdir_parents(const char *path)
{
  CLEANUP_FREE char *copy = strdup(path);
  if (copy == NULL)
    return -1;
  for (char *p = copy + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(copy, 0755) == -1 && errno != EEXIST) {
      log_error(COMPONENT, "mkdir: %s: %m", copy);
      return -1;
    }
    *p = '/';
  }
  return 0;
}

static int
listen_unix(struct server *s, const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  if (strlen(path) >= sizeof sun.sun_path) {
    log_error(COMPONENT, "socket %s: path longer than %zu bytes", path,
              sizeof sun.sun_path - 1);
    return -1;
  }
  strcpy(sun.sun_path, path);

  gid_t gid = (gid_t)-1;
  if (s->cfg.socket_group && *s->cfg.socket_group) {
    struct group gr, *res = NULL;
    char buf[4096];
    getgrnam_r(s->cfg.socket_group, &gr, buf, sizeof buf, &res);
    if (res)
      gid = gr.gr_gid;
    else if (s->cfg.socket_group_optional)
      log_warn(COMPONENT, "socket %s: group '%s' does not exist; keeping the"
               " process's group (QEMU run by libvirt may be unable to"
               " connect)", path, s->cfg.socket_group);
    else {
      log_error(COMPONENT, "socket-group: group '%s' does not exist",
                s->cfg.socket_group);
      return -1;
    }
  }

  if (mkdir_parents(path) == -1)
    return -1;

  /* A socket file left by a dead server is replaced; a live one is not. */
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      log_error(COMPONENT, "socket %s: exists and is not a socket", path);
      return -1;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0) {
      close(probe);
      log_error(COMPONENT, "socket %s: another server is listening on it",
                path);
      return -1;
    }
    if (probe >= 0)
      close(probe);
    unlink(path);
  }

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    log_error(COMPONENT, "socket: %m");
    return -1;
  }
  /* Create it with its final mode: no window where it is more open. */
  mode_t old = umask(0777 & ~s->cfg.socket_mode);
  int r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
  umask(old);
  if (r == -1) {
    log_error(COMPONENT, "bind: %s: %m", path);
    close(fd);
    return -1;
  }
  /* sun.sun_path is path; using the local copy also keeps gcc's
   * -Wformat-overflow (confused by UBSan's checks) quiet. */
  if ((gid != (gid_t)-1 && chown(sun.sun_path, (uid_t)-1, gid) == -1) ||
      chmod(sun.sun_path, s->cfg.socket_mode) == -1) {
    log_error(COMPONENT, "socket %s: chown/chmod: %m", sun.sun_path);
    close(fd);
    unlink(sun.sun_path);
    return -1;
  }
  s->socket_path = strdup(path);
  if (add_listener(s, fd, true) == -1)
    return -1;
  log_info(COMPONENT, "listening on unix socket %s (mode %04o)", path,
           (unsigned)s->cfg.socket_mode);
  return 0;
}

static int
listen_tcp(struct server *s, const char *spec)
{
  struct addrinfo *res = netaddr_listen(spec, COMPONENT, NULL);
  if (res == NULL)
    return -1;
  int bound = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd == -1)
      continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    char h[INET6_ADDRSTRLEN], p[8];
    getnameinfo(ai->ai_addr, ai->ai_addrlen, h, sizeof h, p, sizeof p,
                NI_NUMERICHOST | NI_NUMERICSERV);
    /* Checks tcp-congestion early (an unknown name, or one outside
     * net.ipv4.tcp_allowed_congestion_control without CAP_NET_ADMIN);
     * accepted sockets get it again in accept_one. */
    const char *cc = s->cfg.tcp_congestion;
    if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc,
                         (socklen_t)strlen(cc)) == -1) {
      if (errno == ENOENT)
        log_error(COMPONENT, "tcp-congestion: '%s': not available (see"
                  " /proc/sys/net/ipv4/tcp_available_congestion_control)", cc);
      else
        log_error(COMPONENT, "tcp-congestion: '%s': %m (unprivileged, only"
                  " net.ipv4.tcp_allowed_congestion_control)", cc);
      close(fd);
      freeaddrinfo(res);
      return -1;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
      log_error(COMPONENT, "bind: %s port %s: %m", h, p);
      close(fd);
      continue;
    }
    /* Report the real port when port 0 asked for any free one. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
      getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p,
                  NI_NUMERICHOST | NI_NUMERICSERV);
    if (add_listener(s, fd, false) == -1)
      continue;
    log_info(COMPONENT, "listening on tcp %s port %s", h, p);
    bound++;
  }
  freeaddrinfo(res);
  if (bound == 0) {
    log_error(COMPONENT, "listen: '%s': no address could be bound", spec);
    return -1;
  }
  return 0;
}

struct server *
server_new(struct exports *reg, const struct server_config *cfg)
{
  struct server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    log_error(COMPONENT, "calloc: %m");
    return NULL;
  }
  s->reg = reg;
  s->cfg = *cfg;
  if (s->cfg.threads == 0)
    s->cfg.threads = 1;
  s->wake[0] = s->wake[1] = -1;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->cond, NULL);
  if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) == -1) {
    log_error(COMPONENT, "pipe2: %m");
    goto fail;
  }
  /* TCP_CONGESTION takes at most 15 bytes and cuts longer names. */
  if (cfg->tcp_congestion && (cfg->tcp_congestion[0] == '\0' ||
                              strlen(cfg->tcp_congestion) > 15)) {
    log_error(COMPONENT, "tcp-congestion: '%s': not a congestion control"
              " name (1-15 characters)", cfg->tcp_congestion);
    goto fail;
  }
  if (cfg->socket_path && listen_unix(s, cfg->socket_path) == -1)
    goto fail;
  if (cfg->tcp_listen && listen_tcp(s, cfg->tcp_listen) == -1)
    goto fail;
  if (s->nl == 0) {
    log_error(COMPONENT, "nothing to listen on: set socket or listen");
    goto fail;
  }
  return s;

fail:
  server_free(s);
  return NULL;
}

void
server_stop(struct server *s)
{
  char c = 1;
  ssize_t r = write(s->wake[1], &c, 1);
  (void)r;
}

int
server_run(struct server *s)
{
  struct pollfd pfds[LISTENERS_MAX + 1];
  for (size_t i = 0; i < s->nl; i++)
    pfds[i] = (struct pollfd){ .fd = s->lfds[i], .events = POLLIN };
  pfds[s->nl] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };

  for (;;) {
    int r = poll(pfds, s->nl + 1, -1);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      log_error(COMPONENT, "poll: %m");
      break;
    }
    if (pfds[s->nl].revents)
      break;
    for (size_t i = 0; i < s->nl; i++)
      if (pfds[i].revents & POLLIN)
        accept_one(s, s->lfds[i], s->lunix[i]);
  }

  /* Shut down: no new connections; wake every connection's threads. */
  for (size_t i = 0; i < s->nl; i++) {
    close(s->lfds[i]);
    s->lfds[i] = -1;
  }
  pthread_mutex_lock(&s->lock);
  unsigned n = s->nconns;
  for (struct conn *cn = s->conns; cn; cn = cn->next)
    shutdown(cn->fd, SHUT_RDWR);
  if (n)
    log_info(COMPONENT, "closing %u connections", n);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += SHUTDOWN_WAIT_MS / 1000;
  int r = 0;
  while (s->nconns > 0 && r == 0)
    r = pthread_cond_timedwait(&s->cond, &s->lock, &until);
  n = s->nconns;
  pthread_mutex_unlock(&s->lock);
  if (n > 0) {
    log_error(COMPONENT, "%u connections did not end within %d ms", n,
              SHUTDOWN_WAIT_MS);
    return -1;
  }
  return 0;
}

void
server_free(struct server *s)
{
  if (s == NULL)
    return;
  for (size_t i = 0; i < s->nl; i++)
    if (s->lfds[i] >= 0)
      close(s->lfds[i]);
  if (s->socket_path) {
    unlink(s->socket_path);
    free(s->socket_path);
  }
  if (s->wake[0] >= 0)
    close(s->wake[0]);
  if (s->wake[1] >= 0)
    close(s->wake[1]);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->cond);
  free(s);
}
