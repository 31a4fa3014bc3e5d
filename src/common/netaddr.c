/* thunder — listening addresses; see netaddr.h. */
#include "netaddr.h"

#include <netdb.h>
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
