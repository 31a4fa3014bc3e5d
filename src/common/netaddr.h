/* thunder — listening addresses: "HOST:PORT", "[V6]:PORT" or ":PORT". */
#ifndef THUNDER_NETADDR_H
#define THUNDER_NETADDR_H

#include <stdbool.h>

struct addrinfo;

/* Resolves a listening address for bind(): an empty host means every
 * address (then *any_host is set, if any_host is given).  Returns the
 * getaddrinfo list (free it with freeaddrinfo), or NULL with one error
 * logged under component, naming spec. */
struct addrinfo *netaddr_listen(const char *spec, const char *component,
                                bool *any_host);

/* Binds and listens on spec (TCP, backlog 64, non-blocking, close on
 * exec); returns the socket and sets *port_out, or -1 with an error logged
 * under component.  With no host, the IPv6 wildcard (dual stack) is tried
 * first, then IPv4's. */
int netaddr_listen_tcp(const char *spec, const char *component,
                       unsigned *port_out);

#endif
