/* thunder — thunder-api's background work (converge.c): pushes trees and
 * VMs to the nodes, follows them to running, deletes, expires silent
 * nodes.  It has its own store connection and thread. */
#ifndef THUNDER_CONVERGE_H
#define THUNDER_CONVERGE_H

#include <stdint.h>

struct api_config;
struct converger;

/* Starts the background work on its own store connection to cfg->db; it
 * resumes every unfinished cluster at once.  NULL (logged). */
struct converger *converger_new(const struct api_config *cfg);
/* Wakes it: a cluster was created or is to be deleted. */
void converger_kick(struct converger *cv);
/* Stops it (the work in progress ends at its next step) and frees it. */
void converger_free(struct converger *cv);
/* Bytes the nodes of cluster id last reported fetching from the origin;
 * 0 if none reported. */
uint64_t converger_origin_bytes(struct converger *cv, const char *id);
/* Bytes node (an id) of cluster id last reported fetching from upstream
 * uri (the status page draws them on the tree's edges); 0 if none. */
uint64_t converger_upstream_bytes(struct converger *cv, const char *id,
                                  const char *node, const char *uri);

#endif
