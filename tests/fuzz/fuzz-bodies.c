/* thunder — libFuzzer target for the JSON request bodies of both HTTP
 * endpoints: thunderd's control (PUT /v1/images/NAME, PUT /v1/vms/NAME;
 * src/daemon/ctlbody.c) and thunder-api (POST /v1/nodes, /v1/images,
 * /v1/clusters; src/api/validate.c).
 *
 * The first byte picks the body kind; the rest is the body, parsed as
 * the service core parses it (jsonutil_parse, depth 8, an object) and
 * then validated as the route validates it.  A body is accepted or
 * refused with a message naming the field; either way nothing leaks, an
 * accepted body's fields hold what the routes rely on (names valid,
 * counts within their limits, strings NUL-terminated), and a refusal
 * carries a message.
 *
 * Seeds: tests/fuzz/corpus/bodies/ (the bodies thunder-api, thunderctl
 * and the tests send, and refusals).
 */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctlbody.h"
#include "jsonutil.h"
#include "log.h"
#include "manifest.h"
#include "validate.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum kind { ATTACH, VM, NODE, IMAGE, CLUSTER, KINDS };

/* The routes' depth limit (CONTROL_JSON_DEPTH, thunder-api's max-depth). */
#define DEPTH 8
#define MAX_COUNT 1000

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_init("fuzz-bodies", "stderr");
  return 0;
}

static void
need(bool ok)
{
  if (!ok)
    abort();
}

static void
check_attach(struct json_object *root)
{
  char err[512] = "";
  const char *ups[CONTROL_UPSTREAMS_MAX];
  struct control_attach at;
  if (ctlbody_attach(root, "img", ups, &at, err, sizeof err) < 0) {
    need(err[0] != '\0');
    return;
  }
  need(strlen(at.version) == 64);
  need(at.nupstreams >= 1 && at.nupstreams <= CONTROL_UPSTREAMS_MAX);
  for (size_t i = 0; i < at.nupstreams; i++)
    need(strlen(at.upstreams[i]) <= CONTROL_URI_MAX);
}

static void
check_vm(struct json_object *root)
{
  char err[512] = "";
  struct control_vm vm;
  if (ctlbody_vm(root, "vm1", &vm, err, sizeof err) < 0) {
    need(err[0] != '\0');
    return;
  }
  need(manifest_name_valid(vm.image));
  need(vm.vcpus >= 1 && vm.vcpus <= CONTROL_VCPUS_MAX);
  need(vm.memory_mib >= CONTROL_MEMORY_MIN_MIB &&
       vm.memory_mib <= CONTROL_MEMORY_MAX_MIB);
  need(vm.disk_gib <= CONTROL_DISK_MAX_GIB);
}

static void
check_node(struct json_object *root)
{
  char err[512] = "";
  struct store_node n;
  memset(&n, 0, sizeof n);
  if (validate_node(root, &n, err, sizeof err) < 0) {
    need(err[0] != '\0');
    return;
  }
  need(validate_node_name(n.id));
  need(validate_nbd_base(n.nbd_uri));
  need(strlen(n.control_url) <= VALIDATE_URL_MAX);
}

static void
check_image(struct json_object *root)
{
  char err[512] = "";
  const char *name, *origin, *version;
  if (validate_image(root, &name, &origin, &version, err, sizeof err) < 0) {
    need(err[0] != '\0');
    return;
  }
  need(manifest_name_valid(name));
  need(validate_nbd_base(origin));
  need(version == NULL || strlen(version) == 64);
}

static void
check_cluster(struct json_object *root)
{
  char err[512] = "";
  struct provision_request q;
  memset(&q, 0, sizeof q);
  if (validate_cluster(root, MAX_COUNT, &q, err, sizeof err) < 0) {
    need(err[0] != '\0');
    return;
  }
  need(q.count >= 1 && q.count <= MAX_COUNT);
  need(manifest_name_valid(q.image));
  need(q.n_nodes <= PROVISION_NODES_MAX);
  for (size_t i = 0; i < q.n_nodes; i++)
    need(validate_node_name(q.nodes[i]));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  enum kind kind = (enum kind)(data[0] % KINDS);
  char err[512] = "";
  struct json_object *root =
      jsonutil_parse((const char *)data + 1, size - 1, DEPTH, JSONUTIL_OBJECT,
                     "body", err, sizeof err);
  if (root == NULL) {
    need(err[0] != '\0');
    return 0;
  }
  switch (kind) {
  case ATTACH: check_attach(root); break;
  case VM: check_vm(root); break;
  case NODE: check_node(root); break;
  case IMAGE: check_image(root); break;
  case CLUSTER: check_cluster(root); break;
  case KINDS: break;
  }
  json_object_put(root);
  return 0;
}
