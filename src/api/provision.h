/* thunder — what POST /v1/clusters decides (docs/api.md): the request,
 * already validated, becomes a stored cluster with its VMs placed and its
 * relay tree planned, or a reason why not.
 *
 *   idempotency key known? ─ same body ─▶ PROVISION_REPLAYED
 *                          └ other body ▶ PROVISION_KEY_CONFLICT
 *   image registered? no ─────────────▶ PROVISION_UNKNOWN_IMAGE
 *   load nodes → place (sched_place) ─▶ PROVISION_INSUFFICIENT_CAPACITY (now)
 *                                      PROVISION_NEVER_FITS (ever)
 *                                      PROVISION_INVALID (a bad hint)
 *   scan nodes that hold the version (trees of live clusters)
 *   plan the tree (tree_plan_build) over the distinct nodes
 *   store the cluster, VMs and tree ──▶ PROVISION_CREATED
 *                                      (PROVISION_REPLAYED when a racing
 *                                      request with the key stored it)
 *                                      PROVISION_NAME_CONFLICT
 *
 * No HTTP and no JSON: the route maps the result to a status.  The
 * caller holds the lock that serialises the store's users, so two
 * requests cannot both take the last free capacity.
 */
#ifndef THUNDER_PROVISION_H
#define THUNDER_PROVISION_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define PROVISION_NODES_MAX 1024

/* A validated POST /v1/clusters (validate_cluster). */
struct provision_request {
  const char *name, *image;
  uint64_t count, vcpus, memory_mib, disk_gib, fanout, max_per_node;
  enum store_placement placement;
  const char *zone, *rack;
  const char *nodes[PROVISION_NODES_MAX]; /* placement.nodes */
  size_t n_nodes;
  const char *key;    /* Idempotency-Key, or NULL */
  const char *hash;   /* the request's digest (hex), for the key */
};

/* The planner's view of the fleet (api_config). */
struct provision_params {
  double link_bps, origin_bps;
  unsigned origin_cap, origin_copies;
  uint64_t working_set;
};

enum provision_result {
  PROVISION_CREATED,               /* stored: id */
  PROVISION_REPLAYED,              /* the key's cluster: id */
  PROVISION_KEY_CONFLICT,          /* the key was used for another body */
  PROVISION_UNKNOWN_IMAGE,         /* the image is not registered */
  PROVISION_INSUFFICIENT_CAPACITY, /* not enough free capacity now */
  PROVISION_NEVER_FITS,            /* can never fit these nodes */
  PROVISION_INVALID,               /* the placement refuses the request */
  PROVISION_NAME_CONFLICT,         /* a live cluster has the name */
  PROVISION_STORE_ERROR,           /* the store failed: serr */
  PROVISION_INTERNAL,              /* no memory, or the planner failed */
};

/* Provisions q on st.  Writes the cluster's id (CREATED, REPLAYED,
 * KEY_CONFLICT) and a message for every failure into msg; with
 * PROVISION_STORE_ERROR, serr holds the store's error.  The caller holds
 * st's lock. */
enum provision_result provision_cluster(struct store *st,
                                        const struct provision_params *p,
                                        const struct provision_request *q,
                                        char id[STORE_ID_LEN + 1],
                                        struct store_err *serr, char *msg,
                                        size_t msglen);

#endif
