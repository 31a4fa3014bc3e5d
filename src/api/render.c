/* thunder — thunder-api's JSON of the store's rows; see render.h. */
#include "render.h"

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "apiutil.h"

static struct json_object *
time_or_null(int64_t ms)
{
  if (ms <= 0)
    return NULL;
  char b[32];
  apiutil_time(ms, b);
  return json_object_new_string(b);
}

static struct json_object *
string_or_null(const char *s)
{
  return s ? json_object_new_string(s) : NULL;
}

struct json_object *
render_node(const struct store_node *n)
{
  struct json_object *o = json_object_new_object(), *lab, *cap, *used;
  json_object_object_add(o, "name", json_object_new_string(n->id));
  json_object_object_add(o, "nbd_uri", json_object_new_string(n->nbd_uri));
  json_object_object_add(o, "control_url",
                         json_object_new_string(n->control_url));
  lab = json_object_new_object();
  if (n->rack && n->rack[0])
    json_object_object_add(lab, "rack", json_object_new_string(n->rack));
  if (n->zone && n->zone[0])
    json_object_object_add(lab, "zone", json_object_new_string(n->zone));
  json_object_object_add(o, "labels", lab);
  cap = json_object_new_object();
  json_object_object_add(cap, "vcpus", json_object_new_int64(n->vcpus));
  json_object_object_add(cap, "memory_mib",
                         json_object_new_int64((int64_t)n->memory_mib));
  json_object_object_add(cap, "disk_gib",
                         json_object_new_int64((int64_t)(n->disk_bytes >> 30)));
  json_object_object_add(o, "capacity", cap);
  used = json_object_new_object();
  json_object_object_add(used, "vcpus",
                         json_object_new_int64((int64_t)n->used_vcpus));
  json_object_object_add(used, "memory_mib",
                         json_object_new_int64((int64_t)n->used_memory_mib));
  json_object_object_add(used, "disk_gib",
      json_object_new_int64((int64_t)((n->used_disk_bytes + (1ULL << 30) - 1) >> 30)));
  json_object_object_add(used, "vms", json_object_new_int64(n->live_vms));
  json_object_object_add(o, "used", used);
  json_object_object_add(o, "state",
                         json_object_new_string(store_node_state_name(n->state)));
  json_object_object_add(o, "registered_at", time_or_null(n->registered_at));
  json_object_object_add(o, "last_heartbeat_at",
                         time_or_null(n->last_heartbeat_at));
  return o;
}

struct json_object *
render_image(const struct store_image *im)
{
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "name", json_object_new_string(im->name));
  json_object_object_add(o, "origin", json_object_new_string(im->origin_nbd));
  json_object_object_add(o, "version", json_object_new_string(im->version));
  json_object_object_add(o, "size", json_object_new_int64((int64_t)im->size));
  json_object_object_add(o, "registered_at", time_or_null(im->registered_at));
  return o;
}

struct json_object *
render_vm(const struct store_vm *vm)
{
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "id", json_object_new_string(vm->id));
  json_object_object_add(o, "name", json_object_new_string(vm->name));
  json_object_object_add(o, "index", json_object_new_int64(vm->index));
  json_object_object_add(o, "node", json_object_new_string(vm->node_id));
  json_object_object_add(o, "state",
                         json_object_new_string(store_vm_state_name(vm->state)));
  json_object_object_add(o, "reason", string_or_null(vm->reason));
  json_object_object_add(o, "created_at", time_or_null(vm->created_at));
  json_object_object_add(o, "updated_at", time_or_null(vm->updated_at));
  json_object_object_add(o, "running_at", time_or_null(vm->running_at));
  return o;
}

struct json_object *
render_cluster(const struct store_cluster *c, uint64_t origin_bytes)
{
  struct json_object *o = json_object_new_object(), *counts;
  json_object_object_add(o, "id", json_object_new_string(c->id));
  json_object_object_add(o, "name", json_object_new_string(c->name));
  json_object_object_add(o, "image", json_object_new_string(c->image));
  json_object_object_add(o, "image_version",
                         json_object_new_string(c->image_version));
  json_object_object_add(o, "count", json_object_new_int64(c->count));
  json_object_object_add(o, "vcpus", json_object_new_int64(c->vcpus));
  json_object_object_add(o, "memory_mib",
                         json_object_new_int64((int64_t)c->memory_mib));
  json_object_object_add(o, "disk_gib",
                         c->disk_gib ? json_object_new_int64((int64_t)c->disk_gib)
                                     : NULL);
  json_object_object_add(o, "placement",
                         json_object_new_string(store_placement_name(c->placement)));
  json_object_object_add(o, "fanout",
                         c->fanout ? json_object_new_int64(c->fanout) : NULL);
  json_object_object_add(o, "state",
                         json_object_new_string(store_cluster_state_name(c->state)));
  json_object_object_add(o, "error", string_or_null(c->error));
  json_object_object_add(o, "created_at", time_or_null(c->created_at));
  json_object_object_add(o, "updated_at", time_or_null(c->updated_at));
  json_object_object_add(o, "finished_at", time_or_null(c->finished_at));
  counts = json_object_new_object();
  for (int s = 0; s < STORE_VM_STATES; s++)
    json_object_object_add(counts, store_vm_state_name(s),
                           json_object_new_int64(c->vms[s]));
  json_object_object_add(o, "counts", counts);
  json_object_object_add(o, "origin_bytes",
                         json_object_new_int64((int64_t)origin_bytes));
  return o;
}


struct json_object *
render_tree_row(const struct store_tree_row *row, const uint64_t *bytes)
{
  struct json_object *o = json_object_new_object();
  if (o == NULL)
    return NULL;
  json_object_object_add(o, "node", json_object_new_string(row->node_id));
  json_object_object_add(o, "parent", string_or_null(row->parent));
  json_object_object_add(o, "depth", json_object_new_int64(row->depth));
  struct json_object *ups = json_object_new_array();
  for (size_t i = 0; ups && i < row->n_upstreams; i++)
    json_object_array_add(ups, json_object_new_string(row->upstreams[i]));
  json_object_object_add(o, "upstreams", ups);
  struct json_object *b = json_object_new_array();
  for (size_t i = 0; b && i < row->n_upstreams; i++)
    json_object_array_add(b, json_object_new_int64(
                                 bytes ? (int64_t)bytes[i] : 0));
  json_object_object_add(o, "upstream_bytes", b);
  return o;
}

/* Member key of o as a string, or NULL. */
static const char *
string_of(struct json_object *o, const char *key)
{
  struct json_object *v;
  return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v)
                                               : NULL;
}

struct json_object *
render_tree(const char *id, const char *image, const char *origin,
            struct json_object *rows)
{
  unsigned depth = 0, origin_children = 0, fanout = 0;
  size_t n = json_object_array_length(rows);
  for (size_t i = 0; i < n; i++) {
    struct json_object *row = json_object_array_get_idx(rows, i), *d;
    const char *nid = string_of(row, "node");
    if (json_object_object_get_ex(row, "depth", &d) &&
        (unsigned)json_object_get_int64(d) > depth)
      depth = (unsigned)json_object_get_int64(d);
    if (string_of(row, "parent") == NULL)
      origin_children++;
    /* The fan-out: the most children any node has. */
    unsigned kids = 0;
    for (size_t j = 0; nid && j < n; j++) {
      const char *p = string_of(json_object_array_get_idx(rows, j), "parent");
      if (p && strcmp(p, nid) == 0)
        kids++;
    }
    if (kids > fanout)
      fanout = kids;
  }
  if (fanout == 0)
    fanout = 1; /* nobody relays: every node is a chain of one */
  struct json_object *o = json_object_new_object();
  if (o == NULL) {
    json_object_put(rows);
    return NULL;
  }
  json_object_object_add(o, "cluster", json_object_new_string(id));
  json_object_object_add(o, "image", json_object_new_string(image));
  json_object_object_add(o, "origin", string_or_null(origin));
  json_object_object_add(o, "fanout", json_object_new_int64(fanout));
  json_object_object_add(o, "depth", json_object_new_int64(depth));
  json_object_object_add(o, "origin_children",
                         json_object_new_int64(origin_children));
  json_object_object_add(o, "nodes", rows);
  return o;
}
