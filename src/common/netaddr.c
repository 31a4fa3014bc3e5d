/* thunder — listening addresses; see netaddr.h. */
#include "netaddr.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"

/* Splits "HOST:PORT", "[V6]:PORT" or ":PORT"; -1 if malformed (an
 * unbracketed IPv6 address, empty brackets, a port over 65535). */
static int
split_hostport(const char *spec, char *host, size_t hlen, char *port,
               size_t plen)
{
  const char *colon;
  if (spec[0] == '[') {
    const char *close_ = strchr(spec, ']');
    if (close_ == NULL || close_[1] != ':' ||
        (size_t)(close_ - spec - 1) >= hlen || close_ == spec + 1)
      return -1;
    memcpy(host, spec + 1, (size_t)(close_ - spec - 1));
    host[close_ - spec - 1] = '\0';
    colon = close_ + 1;
  } else {
    colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= hlen ||
        memchr(spec, ':', (size_t)(colon - spec)) != NULL)
      return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
  }
  const char *p = colon + 1;
  size_t n = strlen(p);
  if (n == 0 || n >= plen || n > 5 || strspn(p, "0123456789") != n ||
      strtoul(p, NULL, 10) > 65535)
    return -1;
  memcpy(port, p, n + 1);
  return 0;
}

struct addrinfo *
netaddr_listen(const char *spec, const char *component, bool *any_host)
{
  char host[256], port[8];
  if (split_hostport(spec, host, sizeof host, port, sizeof port) == -1) {
    log_error(component, "listen: '%s': expected HOST:PORT, [IPV6]:PORT or"
              " :PORT", spec);
    return NULL;
  }
  struct addrinfo hints = { .ai_family = AF_UNSPEC,
                            .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
  struct addrinfo *res;
  int e = getaddrinfo(*host ? host : NULL, port, &hints, &res);
  if (e != 0) {
    log_error(component, "listen: '%s': %s", spec, gai_strerror(e));
    return NULL;
  }
  if (any_host)
    *any_host = *host == '\0';
  return res;
}

int
netaddr_listen_tcp(const char *spec, const char *component, unsigned *port_out)
{
  bool any_host;
  struct addrinfo *res = netaddr_listen(spec, component, &any_host);
  if (res == NULL)
    return -1;
  int fd = -1;
  for (int pass = 0; pass < 2 && fd < 0; pass++) {
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
      /* Without a host: IPv6 in the first pass, the rest in the second. */
      if (any_host && (ai->ai_family == AF_INET6) != (pass == 0))
        continue;
      if (!any_host && pass == 1)
        break;
      char h[NI_MAXHOST], p[NI_MAXSERV] = "?";
      if (getnameinfo(ai->ai_addr, ai->ai_addrlen, h, sizeof h, p, sizeof p,
                      NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(h, sizeof h, "?");
      int s = socket(ai->ai_family,
                     ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                     ai->ai_protocol);
      if (s == -1) {
        log_warn(component, "socket: %s: %m", h);
        continue;
      }
      int one = 1, zero = 0;
      setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (ai->ai_family == AF_INET6)
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY,
                   any_host ? &zero : &one, sizeof one);
      if (bind(s, ai->ai_addr, ai->ai_addrlen) == -1) {
        log_warn(component, "bind: %s port %s: %m", h, p);
        close(s);
        continue;
      }
      if (listen(s, 64) == -1) {
        log_warn(component, "listen: %s port %s: %m", h, p);
        close(s);
        continue;
      }
      struct sockaddr_storage ss;
      socklen_t sl = sizeof ss;
      if (getsockname(s, (struct sockaddr *)&ss, &sl) == -1) {
        log_warn(component, "getsockname: %s: %m", h);
        close(s);
        continue;
      }
      *port_out = ntohs(ss.ss_family == AF_INET6
                            ? ((struct sockaddr_in6 *)&ss)->sin6_port
                            : ((struct sockaddr_in *)&ss)->sin_port);
      log_info(component, "listening on %s%s%s:%u",
               ai->ai_family == AF_INET6 ? "[" : "", h,
               ai->ai_family == AF_INET6 ? "]" : "", *port_out);
      fd = s;
    }
  }
  freeaddrinfo(res);
  if (fd < 0)
    log_error(component, "listen: '%s': no address could be bound", spec);
  return fd;
}
