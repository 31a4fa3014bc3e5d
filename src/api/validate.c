/* thunder — thunder-api's request validation; see validate.h.  The
 * getters are common/jsonutil.h's, so every message names its field the
 * same way. */
#include "validate.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "digest.h"
#include "jsonutil.h"
#include "manifest.h"
#include "tree.h"

#define NAME_RULE "characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'"

bool
validate_node_name(const char *s)
{
  return manifest_name_valid(s) && strlen(s) <= VALIDATE_NODE_NAME_MAX;
}

bool
validate_cluster_id(const char *id)
{
  if (strlen(id) != STORE_ID_LEN)
    return false;
  for (const char *p = id; *p; p++)
    if (!(('0' <= *p && *p <= '9') || ('a' <= *p && *p <= 'f')))
      return false;
  return true;
}

/* The length of "PLAIN://" or "TLS://" that s starts with; 0: neither. */
static size_t
scheme_len(const char *s, const char *plain, const char *tls)
{
  size_t pl = strlen(plain), tl = strlen(tls);
  if (strncmp(s, plain, pl) == 0 && strncmp(s + pl, "://", 3) == 0)
    return pl + 3;
  if (strncmp(s, tls, tl) == 0 && strncmp(s + tl, "://", 3) == 0)
    return tl + 3;
  return 0;
}

/* "HOST:PORT" with nothing after the port. */
static bool
host_port_ok(const char *h)
{
  const char *colon = strrchr(h, ':');
  if (colon == NULL || colon == h)
    return false;
  for (const char *p = h; p < colon; p++)
    if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') ||
          ('0' <= *p && *p <= '9') || strchr(".-[]:", *p)))
      return false;
  char *end;
  errno = 0;
  unsigned long port = strtoul(colon + 1, &end, 10);
  return colon[1] >= '0' && colon[1] <= '9' && *end == '\0' && errno == 0 &&
         port >= 1 && port <= 65535;
}

bool
validate_nbd_base(const char *s)
{
  size_t skip = scheme_len(s, "nbd", "nbds");
  return skip != 0 && host_port_ok(s + skip);
}

/* "http://HOST:PORT" or "https://HOST:PORT" (a node with
 * --control-tls). */
static bool
http_base_ok(const char *s)
{
  size_t skip = scheme_len(s, "http", "https");
  return skip != 0 && strlen(s) < VALIDATE_URL_MAX && host_port_ok(s + skip);
}

int
validate_idempotency_key(const char *key, char *err, size_t errlen)
{
  size_t kl = strlen(key);
  bool ok = kl >= 1 && kl <= VALIDATE_KEY_MAX;
  for (const char *p = key; ok && *p; p++)
    ok = *p > ' ' && *p < 127;
  if (!ok) {
    snprintf(err, errlen, "header 'Idempotency-Key': 1 to %d printable ASCII characters",
             VALIDATE_KEY_MAX);
    return -1;
  }
  return 0;
}

/* capacity and labels of a node. */
static int
node_parts(struct json_object *body, struct store_node *n, char *err,
           size_t errlen)
{
  static const char *const capk[] = { "vcpus", "memory_mib", "disk_gib", NULL };
  static const char *const labk[] = { "rack", "zone", NULL };
  struct json_object *cap, *lab;
  uint64_t vcpus, mem, disk;
  if (jsonutil_get_object(body, "", "capacity", true, &cap, err, errlen) < 0 ||
      jsonutil_known_keys(cap, "capacity.", capk, NULL, err, errlen) < 0 ||
      jsonutil_get_uint(cap, "capacity.", "vcpus", true, 1, 1u << 20, &vcpus,
                        err, errlen) < 0 ||
      jsonutil_get_uint(cap, "capacity.", "memory_mib", true, 16, 1ULL << 40,
                        &mem, err, errlen) < 0 ||
      jsonutil_get_uint(cap, "capacity.", "disk_gib", true, 0, 1ULL << 30,
                        &disk, err, errlen) < 0)
    return -1;
  n->vcpus = (uint32_t)vcpus;
  n->memory_mib = mem;
  n->disk_bytes = disk << 30;
  int r = jsonutil_get_object(body, "", "labels", false, &lab, err, errlen);
  if (r < 0)
    return -1;
  if (r == 0 &&
      (jsonutil_known_keys(lab, "labels.", labk, NULL, err, errlen) < 0 ||
       jsonutil_get_string(lab, "labels.", "rack", false,
                           VALIDATE_NODE_NAME_MAX, &n->rack, err, errlen) < 0 ||
       jsonutil_get_string(lab, "labels.", "zone", false,
                           VALIDATE_NODE_NAME_MAX, &n->zone, err, errlen) < 0))
    return -1;
  return 0;
}

int
validate_node(struct json_object *body, struct store_node *n, char *err,
              size_t errlen)
{
  static const char *const top[] = { "name", "nbd_uri", "control_url",
                                     "capacity", "labels", NULL };
  memset(n, 0, sizeof *n);
  if (jsonutil_known_keys(body, "", top, NULL, err, errlen) < 0 ||
      jsonutil_get_string(body, "", "name", true, VALIDATE_NODE_NAME_MAX,
                          &n->id, err, errlen) < 0)
    return -1;
  if (!validate_node_name(n->id)) {
    snprintf(err, errlen, "field 'name': '%s' must be 1-%d " NAME_RULE, n->id,
             VALIDATE_NODE_NAME_MAX);
    return -1;
  }
  if (jsonutil_get_string(body, "", "nbd_uri", true, VALIDATE_URL_MAX,
                          &n->nbd_uri, err, errlen) < 0)
    return -1;
  if (!validate_nbd_base(n->nbd_uri)) {
    snprintf(err, errlen, "field 'nbd_uri': '%s' is not nbd://HOST:PORT"
             " or nbds://HOST:PORT", n->nbd_uri);
    return -1;
  }
  if (jsonutil_get_string(body, "", "control_url", true, VALIDATE_URL_MAX,
                          &n->control_url, err, errlen) < 0)
    return -1;
  if (!http_base_ok(n->control_url)) {
    snprintf(err, errlen, "field 'control_url': '%s' is not http(s)://HOST:PORT",
             n->control_url);
    return -1;
  }
  return node_parts(body, n, err, errlen);
}

int
validate_image(struct json_object *body, const char **name,
               const char **origin, const char **version, char *err,
               size_t errlen)
{
  static const char *const keys[] = { "name", "origin", "version", NULL };
  if (jsonutil_known_keys(body, "", keys, NULL, err, errlen) < 0 ||
      jsonutil_get_string(body, "", "name", true, MANIFEST_NAME_MAX, name, err,
                          errlen) < 0 ||
      jsonutil_get_string(body, "", "origin", true, VALIDATE_URL_MAX, origin,
                          err, errlen) < 0 ||
      jsonutil_get_string(body, "", "version", false, DIGEST_HEX_LEN, version,
                          err, errlen) < 0)
    return -1;
  if (!manifest_name_valid(*name)) {
    snprintf(err, errlen, "field 'name': '%s' must be 1-255 " NAME_RULE, *name);
    return -1;
  }
  if (!validate_nbd_base(*origin)) {
    snprintf(err, errlen, "field 'origin': '%s' is not nbd://HOST:PORT or"
             " nbds://HOST:PORT", *origin);
    return -1;
  }
  if (*version) {
    bool hex = strlen(*version) == DIGEST_HEX_LEN;
    for (const char *p = *version; hex && *p; p++)
      hex = ('0' <= *p && *p <= '9') || ('a' <= *p && *p <= 'f');
    if (!hex) {
      snprintf(err, errlen, "field 'version': must be 64 lowercase hex digits");
      return -1;
    }
  }
  return 0;
}

/* placement.nodes into q. */
static int
placement_nodes(struct json_object *arr, unsigned max_count,
                struct provision_request *q, char *err, size_t errlen)
{
  size_t n = json_object_array_length(arr);
  if (n == 0 || n > PROVISION_NODES_MAX || n > max_count) {
    snprintf(err, errlen, "field 'placement.nodes': 1 to %d node names",
             PROVISION_NODES_MAX);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    struct json_object *e = json_object_array_get_idx(arr, i);
    const char *id = json_object_get_string(e);
    if (!json_object_is_type(e, json_type_string) || !validate_node_name(id)) {
      snprintf(err, errlen, "field 'placement.nodes[%zu]': not a node name", i);
      return -1;
    }
    q->nodes[q->n_nodes++] = id;
  }
  return 0;
}

/* The placement object of a cluster request into q. */
static int
placement(struct json_object *p, unsigned max_count,
          struct provision_request *q, char *err, size_t errlen)
{
  static const char *const pkeys[] = { "strategy", "nodes", "zone", "rack",
                                       "max_per_node", NULL };
  const char *strategy;
  struct json_object *arr;
  if (jsonutil_known_keys(p, "placement.", pkeys, NULL, err, errlen) < 0 ||
      jsonutil_get_string(p, "placement.", "strategy", false, 16, &strategy,
                          err, errlen) < 0)
    return -1;
  if (strategy && store_placement_from_name(strategy, &q->placement) == -1) {
    snprintf(err, errlen, "field 'placement.strategy': '%s' is not spread or pack",
             strategy);
    return -1;
  }
  int r;
  if (jsonutil_get_string(p, "placement.", "zone", false,
                          VALIDATE_NODE_NAME_MAX, &q->zone, err, errlen) < 0 ||
      jsonutil_get_string(p, "placement.", "rack", false,
                          VALIDATE_NODE_NAME_MAX, &q->rack, err, errlen) < 0 ||
      jsonutil_get_uint(p, "placement.", "max_per_node", false, 1, max_count,
                        &q->max_per_node, err, errlen) < 0 ||
      (r = jsonutil_get_array(p, "placement.", "nodes", false, &arr, err,
                              errlen)) < 0)
    return -1;
  return r == 0 ? placement_nodes(arr, max_count, q, err, errlen) : 0;
}

int
validate_cluster(struct json_object *body, unsigned max_count,
                 struct provision_request *q, char *err, size_t errlen)
{
  static const char *const keys[] = { "name", "image", "count", "vcpus",
                                      "memory_mib", "disk_gib", "placement",
                                      "fanout", NULL };
  memset(q, 0, sizeof *q);
  q->placement = STORE_PLACEMENT_SPREAD;
  if (jsonutil_known_keys(body, "", keys, NULL, err, errlen) < 0 ||
      jsonutil_get_string(body, "", "name", true, VALIDATE_CLUSTER_NAME_MAX,
                          &q->name, err, errlen) < 0)
    return -1;
  if (!manifest_name_valid(q->name)) {
    snprintf(err, errlen, "field 'name': '%s' must be 1-%d " NAME_RULE, q->name,
             VALIDATE_CLUSTER_NAME_MAX);
    return -1;
  }
  if (jsonutil_get_string(body, "", "image", true, MANIFEST_NAME_MAX,
                          &q->image, err, errlen) < 0)
    return -1;
  if (!manifest_name_valid(q->image)) {
    snprintf(err, errlen, "field 'image': '%s' is not a valid image name",
             q->image);
    return -1;
  }
  struct json_object *p;
  int r;
  if (jsonutil_get_uint(body, "", "count", true, 1, max_count, &q->count, err,
                        errlen) < 0 ||
      jsonutil_get_uint(body, "", "vcpus", true, 1, 256, &q->vcpus, err,
                        errlen) < 0 ||
      jsonutil_get_uint(body, "", "memory_mib", true, 16, 4194304,
                        &q->memory_mib, err, errlen) < 0 ||
      jsonutil_get_uint(body, "", "disk_gib", false, 1, 65536, &q->disk_gib,
                        err, errlen) < 0 ||
      jsonutil_get_uint(body, "", "fanout", false, 1, TREE_FANOUT_MAX,
                        &q->fanout, err, errlen) < 0 ||
      (r = jsonutil_get_object(body, "", "placement", false, &p, err,
                               errlen)) < 0)
    return -1;
  return r == 0 ? placement(p, max_count, q, err, errlen) : 0;
}
