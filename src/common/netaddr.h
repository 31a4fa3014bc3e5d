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

#endif
