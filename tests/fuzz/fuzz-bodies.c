/* thunder — libFuzzer target for the JSON request bodies of both HTTP
 * endpoints: thunderd's control (PUT /v1/images/NAME, PUT /v1/vms/NAME;
 * src/daemon/ctlbody.c) and thunder-api (POST /v1/nodes, /v1/images,
 * /v1/clusters; src/api/validate.c), and the bearer token of a node's
 * register or heartbeat (src/api/enrol.c: whose enrolment token it is,
 * and the rule that accepts or refuses it).
 *
 * The first byte picks the body kind; the rest is the body (for TOKEN:
 * the bearer token, as httpsvc_bearer hands it over), parsed as
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
#include "enrol.h"
#include "jsonutil.h"
#include "log.h"
#include "manifest.h"
#include "token.h"
#include "validate.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum kind { ATTACH, VM, NODE, IMAGE, CLUSTER, TOKEN, KINDS };

/* The routes' depth limit (CONTROL_JSON_DEPTH, thunder-api's max-depth). */
#define DEPTH 8
#define MAX_COUNT 1000

static char tok1[ENROL_TOKEN_MAX], tok2[ENROL_TOKEN_MAX];
static struct enrol_record rec1, rec2;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_init("fuzz-bodies", "stderr");
  /* node1's enrolment, and node2's: a token the fuzzer cannot guess. */
  if (enrol_token_new("node1", tok1, &rec1) == -1 ||
      enrol_token_new("node2", tok2, &rec2) == -1)
    abort();
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

/* A bearer token for a heartbeat of node1 (enrolled) and of node3 (not
 * enrolled): its owner, if it has the form, is a node name in front of
 * it; the rule never accepts a token it was not given, and every refusal
 * says why. */
static void
check_token(const uint8_t *data, size_t size)
{
  char bearer[TOKEN_MAX + 1], owner[ENROL_NAME_MAX + 1];
  size_t n = size < TOKEN_MAX ? size : TOKEN_MAX;
  memcpy(bearer, data, n);
  bearer[n] = '\0';
  bool form = enrol_token_owner(bearer, owner);
  if (form) {
    size_t o = strlen(owner);
    need(validate_node_name(owner));
    need(strncmp(bearer, owner, o) == 0 && bearer[o] == ':');
  }
  const char *names[] = { "node1", "node3" };
  for (size_t i = 0; i < 2; i++) {
    struct enrol_ask a = {
      .name = names[i], .bearer = bearer, .fleet = false,
      .require = i == 1, .mine = i == 0 ? &rec1 : NULL,
      .owner = form ? owner : NULL,
      .owners = form && strcmp(owner, "node2") == 0 ? &rec2 : NULL,
    };
    char msg[512] = "";
    enum enrol_verdict v = enrol_decide(&a, msg, sizeof msg);
    need(v != ENROL_OK || (i == 0 && strcmp(bearer, tok1) == 0));
    need(v == ENROL_OK || msg[0] != '\0');
  }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  enum kind kind = (enum kind)(data[0] % KINDS);
  if (kind == TOKEN) {
    check_token(data + 1, size - 1);
    return 0;
  }
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
  case TOKEN:
  case KINDS: break;
  }
  json_object_put(root);
  return 0;
}
