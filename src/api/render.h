/* thunder — thunder-api's JSON of the store's rows (schemas/api-*.schema.json).
 * Each function returns a new object, or NULL when out of memory.  Pure:
 * no store, no HTTP. */
#ifndef THUNDER_RENDER_H
#define THUNDER_RENDER_H

#include <stdint.h>

#include "store.h"

struct json_object;

/* A node (schemas/api-node.schema.json). */
struct json_object *render_node(const struct store_node *n);

/* An image (schemas/api-image.schema.json). */
struct json_object *render_image(const struct store_image *im);

/* A VM, as an element of a cluster's "vms". */
struct json_object *render_vm(const struct store_vm *vm);

/* A cluster without its "vms" (schemas/api-cluster.schema.json);
 * origin_bytes is what its nodes fetched from the origin. */
struct json_object *render_cluster(const struct store_cluster *c,
                                   uint64_t origin_bytes);

/* One node of a cluster's relay tree. */
struct json_object *render_tree_row(const struct store_tree_row *row,
                                    const uint64_t *bytes);

/* The tree of cluster id (schemas/api-cluster-tree.schema.json) from its
 * rows (an array of render_tree_row, taken): depth, fan-out and the
 * origin's children are counted from them.  origin may be NULL. */
struct json_object *render_tree(const char *id, const char *image,
                                const char *origin, struct json_object *rows);

#endif
