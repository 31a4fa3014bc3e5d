/* thunder — thunderd's VMs: the control endpoint's /v1/vms requests carried
 * out on the node's libvirt pool (src/pool), and /v1/node, what the node
 * reports about itself.  See vms.c and docs/control.md.
 *
 * Each function returns an HTTP status and, like the control ops
 * (control.h), sets *reply on success, or writes err (errlen) and *code
 * on failure.
 *
 * Threads: every function is thread-safe.  Creates and deletes of one VM
 * name are serialised; different names proceed in parallel.
 */
#ifndef THUNDER_VMS_H
#define THUNDER_VMS_H

#include <stdbool.h>
#include <stddef.h>

#include "control.h"
#include "export.h"
#include "node.h"

struct json_object;
struct vms;

/* VMs in the libvirt pool named pool (NULL: the default) at path (NULL:
 * default) through libvirt uri (NULL: default); enabled false for a node
 * without a pool (--pool none) or an origin, whose VM requests are then
 * refused (CONTROL_CONFLICT, code no_pool).  node (NULL on an origin) tells which images
 * are attached; reg (the origin's) which images an origin has.  NULL
 * when out of memory. */
struct vms *vms_new(const char *uri, const char *pool, const char *path,
                    bool enabled, struct node *node, struct exports *reg);

/* PUT /v1/vms/{name}: CREATED (and started), OK a VM of that name and
 * spec exists (its state as it is), CONFLICT it exists with another spec
 * or is not thunder's, NOT_FOUND the image is not attached, CONFLICT
 * no_pool, UNAVAILABLE libvirt unreachable.  *reply: the VM (schemas/node-vm-state.schema.json). */
enum control_result vms_put(struct vms *v, const struct control_vm *req,
            struct json_object **reply, const char **code, char *err,
            size_t errlen);

/* GET /v1/vms/{name}: OK with the VM, NOT_FOUND absent or not thunder's. */
enum control_result vms_get(struct vms *v, const char *name, struct json_object **reply,
            const char **code, char *err, size_t errlen);

/* DELETE /v1/vms/{name}: destroy, undefine, delete its volume; OK {},
 * NOT_FOUND absent or not thunder's. */
enum control_result vms_delete(struct vms *v, const char *name, struct json_object **reply,
               const char **code, char *err, size_t errlen);

/* GET /v1/vms: OK {"vms": [...]}, thunder's VMs of this pool. */
enum control_result vms_list(struct vms *v, struct json_object **reply, const char **code,
             char *err, size_t errlen);

/* GET /v1/node: OK with schemas/node-info.schema.json. */
enum control_result vms_node_info(struct vms *v, struct json_object **reply,
                  const char **code, char *err, size_t errlen);

void vms_free(struct vms *v);

#endif
