/* thunder — thunderd's anchor volumes in the libvirt pool (src/pool):
 * node hooks that make IMAGE.base when an image is attached and remove
 * it when it is detached.  See anchor.c. */
#ifndef THUNDER_ANCHOR_H
#define THUNDER_ANCHOR_H

#include "node.h"

struct anchors;

/* Anchors in pool (NULL: default name) at path (NULL: default) through
 * libvirt uri (NULL: default), backed by the Unix socket socket_path
 * (absolute).  Ensures the pool at once: NULL with a logged error if it is
 * misconfigured (another type or path); libvirt not answering yet is
 * only a warning. */
struct anchors *anchors_new(const char *uri, const char *pool,
                            const char *path, const char *socket_path);

/* The hooks to give node_set_hooks. */
void anchors_hooks(struct anchors *a, struct node_hooks *h);

void anchors_free(struct anchors *a);

#endif
