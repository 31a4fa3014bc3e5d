/* thunder — unit tests of POST /v1/clusters' decision (provision.c) on a
 * real store in a temp directory: every result kind, and what a created
 * cluster holds (VMs placed, tree stored). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cunit-run.h"
#include "provision.h"

#define VERSION_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static char t_dir[64];
static char t_path[128];
static struct store *t_st;
static const struct provision_params t_params = {
  .link_bps = 12.5e6, .origin_bps = 12.5e6, .origin_cap = 1,
  .origin_copies = 1, .working_set = 64 << 20,
};

static void
add_node(const char *id, unsigned vcpus)
{
  char uri[128], url[128];
  snprintf(uri, sizeof uri, "nbd://%s:10809", id);
  snprintf(url, sizeof url, "http://%s:7000", id);
  struct store_node n = {
    .id = id, .nbd_uri = uri, .control_url = url, .rack = "r1",
    .zone = "z1", .vcpus = vcpus, .memory_mib = 4096,
    .disk_bytes = (uint64_t)100 << 30,
  };
  struct store_err e;
  CU_ASSERT_EQUAL_FATAL(store_node_register(t_st, &n, NULL, &e), STORE_OK);
}

static int
suite_init(void)
{
  snprintf(t_dir, sizeof t_dir, "/tmp/test-provision.XXXXXX");
  if (mkdtemp(t_dir) == NULL)
    return -1;
  snprintf(t_path, sizeof t_path, "%s/api.db", t_dir);
  return 0;
}

/* Removes the database and its WAL files. */
static void
remove_db(void)
{
  char p[160];
  static const char *const sfx[] = { "", "-wal", "-shm" };
  for (size_t i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s%s", t_path, sfx[i]);
    unlink(p);
  }
}

static int
suite_clean(void)
{
  remove_db();
  rmdir(t_dir);
  return 0;
}

/* Every test: a fresh store with image "img" and nodes n1, n2 (4 vCPUs). */
static void
setup(void)
{
  remove_db();
  struct store_err e;
  t_st = store_open(t_path, &e);
  if (t_st == NULL) {
    fprintf(stderr, "store_open: %s\n", e.msg);
    return;
  }
  struct store_image img = { .name = "img", .origin_nbd = "nbd://origin:10809",
                             .version = VERSION_A, .size = 1 << 30 };
  store_image_put(t_st, &img, NULL, &e);
  add_node("n1", 4);
  add_node("n2", 4);
}

static void
teardown(void)
{
  store_close(t_st);
  t_st = NULL;
}

static struct provision_request
request(const char *name, unsigned count, unsigned vcpus)
{
  return (struct provision_request){
    .name = name, .image = "img", .count = count, .vcpus = vcpus,
    .memory_mib = 128, .placement = STORE_PLACEMENT_SPREAD,
  };
}

static enum provision_result
run(const struct provision_request *q, char id[STORE_ID_LEN + 1], char *msg,
    size_t msglen)
{
  struct store_err serr = { 0 };
  return provision_cluster(t_st, &t_params, q, id, &serr, msg, msglen);
}

static void
test_created(void)
{
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_st);
  struct provision_request q = request("web", 4, 1);
  char id[STORE_ID_LEN + 1], msg[512];
  CU_ASSERT_EQUAL_FATAL(run(&q, id, msg, sizeof msg), PROVISION_CREATED);
  struct store_err e;
  struct store_cluster *c = store_cluster_get(t_st, id, &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  CU_ASSERT_STRING_EQUAL(c->name, "web");
  CU_ASSERT_EQUAL(c->count, 4);
  CU_ASSERT_STRING_EQUAL(c->image_version, VERSION_A);
  free(c);
  /* Spread: two VMs on each node; a tree over both. */
  struct store_node *n1 = store_node_get(t_st, "n1", &e);
  CU_ASSERT_EQUAL(n1->used_vcpus, 2);
  free(n1);
}

static void
test_idempotency(void)
{
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_st);
  struct provision_request q = request("web", 2, 1);
  q.key = "web-1";
  q.hash = "1111111111111111111111111111111111111111111111111111111111111111";
  char id[STORE_ID_LEN + 1], id2[STORE_ID_LEN + 1], msg[512];
  CU_ASSERT_EQUAL_FATAL(run(&q, id, msg, sizeof msg), PROVISION_CREATED);
  CU_ASSERT_EQUAL(run(&q, id2, msg, sizeof msg), PROVISION_REPLAYED);
  CU_ASSERT_STRING_EQUAL(id, id2);
  q.hash = "2222222222222222222222222222222222222222222222222222222222222222";
  CU_ASSERT_EQUAL(run(&q, id2, msg, sizeof msg), PROVISION_KEY_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "Idempotency-Key"));
}

static void
test_name_conflict(void)
{
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_st);
  struct provision_request q = request("web", 1, 1);
  char id[STORE_ID_LEN + 1], msg[512];
  CU_ASSERT_EQUAL_FATAL(run(&q, id, msg, sizeof msg), PROVISION_CREATED);
  CU_ASSERT_EQUAL(run(&q, id, msg, sizeof msg), PROVISION_NAME_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "web"));
}

static void
test_unknown_image(void)
{
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_st);
  struct provision_request q = request("web", 1, 1);
  q.image = "nosuch";
  char id[STORE_ID_LEN + 1], msg[512];
  CU_ASSERT_EQUAL(run(&q, id, msg, sizeof msg), PROVISION_UNKNOWN_IMAGE);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not registered"));
}

static void
test_capacity(void)
{
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_st);
  char id[STORE_ID_LEN + 1], msg[512];
  /* A VM bigger than any node: never. */
  struct provision_request q = request("big", 1, 8);
  CU_ASSERT_EQUAL(run(&q, id, msg, sizeof msg), PROVISION_NEVER_FITS);
  /* More than is free now (8 vCPUs in all, 4 taken): insufficient. */
  q = request("first", 4, 1);
  CU_ASSERT_EQUAL_FATAL(run(&q, id, msg, sizeof msg), PROVISION_CREATED);
  q = request("many", 4, 2);
  CU_ASSERT_EQUAL(run(&q, id, msg, sizeof msg),
                  PROVISION_INSUFFICIENT_CAPACITY);
  CU_ASSERT(msg[0] != '\0');
  /* A hint naming an unknown node: never. */
  q = request("hint", 1, 1);
  const char *nodes[] = { "n9" };
  q.nodes[0] = nodes[0];
  q.n_nodes = 1;
  CU_ASSERT_EQUAL(run(&q, id, msg, sizeof msg), PROVISION_NEVER_FITS);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "n9"));
}

#define TEST(fn) { #fn, fn }
static const struct cunit_test tests[] = {
  TEST(test_created),
  TEST(test_idempotency),
  TEST(test_name_conflict),
  TEST(test_unknown_image),
  TEST(test_capacity),
};

int
main(void)
{
  static const struct cunit_suite suite = { "provision", suite_init,
                                            suite_clean, setup, teardown };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
