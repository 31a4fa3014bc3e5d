/* thunder — validation of thunderd's control request bodies; see
 * ctlbody.c. */
#ifndef THUNDER_CTLBODY_H
#define THUNDER_CTLBODY_H

#include <stddef.h>

#include "control.h"

struct json_object;

/* The attach body root (version, upstreams) into *out, for image name;
 * out's strings point into root and ups, which must outlive it.  0, or -1
 * with a message naming the field. */
int ctlbody_attach(struct json_object *root, const char *name,
                   const char *ups[CONTROL_UPSTREAMS_MAX],
                   struct control_attach *out, char *err, size_t errlen);

/* The VM body root (image, vcpus, memory_mib, disk_gib, accel) into *out
 * for VM name; out's strings point into root.  0, or -1 with a message
 * naming the field. */
int ctlbody_vm(struct json_object *root, const char *name,
               struct control_vm *out, char *err, size_t errlen);

#endif
