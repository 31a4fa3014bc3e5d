/* thunder — unit tests of thunder-api's request validation (validate.c):
 * good bodies become the right structs; each bad one is refused with a
 * message naming its field. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit-run.h"
#include "jsonutil.h"
#include "validate.h"

#define MAX_COUNT 10000

static struct json_object *
parse(const char *s)
{
  char err[512];
  struct json_object *o =
      jsonutil_parse(s, strlen(s), 8, JSONUTIL_OBJECT, "body", err, sizeof err);
  if (o == NULL)
    fprintf(stderr, "\nparse: %s: %s\n", s, err);
  return o;
}

/* body must be refused by validate_cluster with word in the message. */
static void
bad_cluster(const char *body, const char *word)
{
  struct json_object *o = parse(body);
  CU_ASSERT_FATAL(o != NULL);
  struct provision_request q;
  char err[512] = "";
  CU_ASSERT_EQUAL(validate_cluster(o, MAX_COUNT, &q, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, word));
  if (strstr(err, word) == NULL)
    fprintf(stderr, "\n%s: '%s' lacks '%s'\n", body, err, word);
  json_object_put(o);
}

#define GOOD "\"name\":\"web\",\"image\":\"img\",\"count\":3,\"vcpus\":1,\"memory_mib\":128"

static void
test_cluster_good(void)
{
  struct json_object *o = parse(
      "{" GOOD ",\"disk_gib\":8,\"fanout\":2,\"placement\":{\"strategy\":\"pack\","
      "\"nodes\":[\"n1\",\"n2\"],\"zone\":\"z1\",\"rack\":\"r1\",\"max_per_node\":2}}");
  CU_ASSERT_FATAL(o != NULL);
  struct provision_request q;
  char err[512];
  CU_ASSERT_EQUAL_FATAL(validate_cluster(o, MAX_COUNT, &q, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(q.name, "web");
  CU_ASSERT_STRING_EQUAL(q.image, "img");
  CU_ASSERT_EQUAL(q.count, 3);
  CU_ASSERT_EQUAL(q.vcpus, 1);
  CU_ASSERT_EQUAL(q.memory_mib, 128);
  CU_ASSERT_EQUAL(q.disk_gib, 8);
  CU_ASSERT_EQUAL(q.fanout, 2);
  CU_ASSERT_EQUAL(q.placement, STORE_PLACEMENT_PACK);
  CU_ASSERT_EQUAL(q.n_nodes, 2);
  CU_ASSERT_STRING_EQUAL(q.nodes[1], "n2");
  CU_ASSERT_STRING_EQUAL(q.zone, "z1");
  CU_ASSERT_EQUAL(q.max_per_node, 2);
  CU_ASSERT_PTR_NULL(q.key);
  json_object_put(o);

  o = parse("{" GOOD "}");
  CU_ASSERT_EQUAL(validate_cluster(o, MAX_COUNT, &q, err, sizeof err), 0);
  CU_ASSERT_EQUAL(q.placement, STORE_PLACEMENT_SPREAD);
  CU_ASSERT_EQUAL(q.disk_gib, 0);
  CU_ASSERT_EQUAL(q.n_nodes, 0);
  json_object_put(o);
}

static void
test_cluster_bad(void)
{
  bad_cluster("{\"image\":\"img\",\"count\":3,\"vcpus\":1,\"memory_mib\":128}",
              "field 'name': missing");
  bad_cluster("{" GOOD ",\"owner\":\"me\"}", "field 'owner': unknown field");
  bad_cluster("{\"name\":\"a b\",\"image\":\"img\",\"count\":3,\"vcpus\":1,\"memory_mib\":128}",
              "field 'name'");
  bad_cluster("{\"name\":\"web\",\"image\":\"img\",\"count\":0,\"vcpus\":1,\"memory_mib\":128}",
              "field 'count': 0 is out of range");
  bad_cluster("{\"name\":\"web\",\"image\":\"img\",\"count\":10001,\"vcpus\":1,\"memory_mib\":128}",
              "field 'count'");
  bad_cluster("{\"name\":\"web\",\"image\":\"img\",\"count\":1.5,\"vcpus\":1,\"memory_mib\":128}",
              "field 'count': 1.5 is not an integer");
  bad_cluster("{\"name\":\"web\",\"image\":\"img\",\"count\":3,\"vcpus\":1,\"memory_mib\":\"1G\"}",
              "field 'memory_mib'");
  bad_cluster("{" GOOD ",\"disk_gib\":null}", "field 'disk_gib'");
  bad_cluster("{" GOOD ",\"placement\":[]}", "field 'placement': expected an object");
  bad_cluster("{" GOOD ",\"placement\":{\"strategy\":\"random\"}}",
              "field 'placement.strategy': 'random' is not spread or pack");
  bad_cluster("{" GOOD ",\"placement\":{\"colour\":\"red\"}}",
              "field placement.'colour': unknown field");
  bad_cluster("{" GOOD ",\"placement\":{\"nodes\":\"n1\"}}",
              "field 'placement.nodes'");
  bad_cluster("{" GOOD ",\"placement\":{\"nodes\":[]}}", "field 'placement.nodes'");
  bad_cluster("{" GOOD ",\"placement\":{\"nodes\":[\"n1\",7]}}",
              "field 'placement.nodes[1]'");
  bad_cluster("{" GOOD ",\"placement\":{\"max_per_node\":0}}",
              "field 'placement.max_per_node'");
  bad_cluster("{" GOOD ",\"fanout\":0}", "field 'fanout'");
}

static void
test_node(void)
{
  struct json_object *o = parse(
      "{\"name\":\"node1\",\"nbd_uri\":\"nbd://10.0.0.5:10809\","
      "\"control_url\":\"http://10.0.0.5:7000\","
      "\"capacity\":{\"vcpus\":16,\"memory_mib\":65536,\"disk_gib\":500},"
      "\"labels\":{\"rack\":\"r1\"}}");
  struct store_node n;
  char err[512];
  CU_ASSERT_EQUAL_FATAL(validate_node(o, &n, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(n.id, "node1");
  CU_ASSERT_EQUAL(n.vcpus, 16);
  CU_ASSERT_EQUAL(n.disk_bytes, 500ULL << 30);
  CU_ASSERT_STRING_EQUAL(n.rack, "r1");
  CU_ASSERT_PTR_NULL(n.zone);
  json_object_put(o);
  /* A node whose listener speaks TLS (--tls on|require). */
  o = parse("{\"name\":\"node2\",\"nbd_uri\":\"nbds://[fd00::5]:10809\","
            "\"control_url\":\"https://node2.example:7000\","
            "\"capacity\":{\"vcpus\":1,\"memory_mib\":16,\"disk_gib\":0}}");
  CU_ASSERT_EQUAL_FATAL(validate_node(o, &n, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(n.nbd_uri, "nbds://[fd00::5]:10809");
  json_object_put(o);

  static const struct { const char *body, *word; } bad[] = {
    { "{\"name\":\"node1\",\"nbd_uri\":\"nbd://h:1/x\",\"control_url\":\"http://h:1\",\"capacity\":{\"vcpus\":1,\"memory_mib\":16,\"disk_gib\":0}}",
      "field 'nbd_uri'" },
    { "{\"name\":\"node1\",\"nbd_uri\":\"nbdss://h:1\",\"control_url\":\"http://h:1\",\"capacity\":{\"vcpus\":1,\"memory_mib\":16,\"disk_gib\":0}}",
      "is not nbd://HOST:PORT or nbds://HOST:PORT" },
    { "{\"name\":\"node1\",\"nbd_uri\":\"nbds://h:1?tls-certificates=/etc\",\"control_url\":\"http://h:1\",\"capacity\":{\"vcpus\":1,\"memory_mib\":16,\"disk_gib\":0}}",
      "field 'nbd_uri'" },
    { "{\"name\":\"node1\",\"nbd_uri\":\"nbd://h:1\",\"control_url\":\"ftp://h:1\",\"capacity\":{\"vcpus\":1,\"memory_mib\":16,\"disk_gib\":0}}",
      "field 'control_url'" },
    { "{\"name\":\"node1\",\"nbd_uri\":\"nbd://h:1\",\"control_url\":\"http://h:1\"}",
      "field 'capacity': missing" },
    { "{\"name\":\"node1\",\"nbd_uri\":\"nbd://h:1\",\"control_url\":\"http://h:1\",\"capacity\":{\"vcpus\":1,\"memory_mib\":16,\"disk_gib\":0,\"gpus\":1}}",
      "capacity.'gpus'" },
    { "{\"name\":\"node1\",\"nbd_uri\":\"nbd://h:1\",\"control_url\":\"http://h:1\",\"capacity\":{\"vcpus\":0,\"memory_mib\":16,\"disk_gib\":0}}",
      "field 'capacity.vcpus'" },
    { "{\"name\":\"n23456789012345678901234567890123456789012345678901234567890123456\",\"nbd_uri\":\"nbd://h:1\",\"control_url\":\"http://h:1\",\"capacity\":{\"vcpus\":1,\"memory_mib\":16,\"disk_gib\":0}}",
      "field 'name'" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    o = parse(bad[i].body);
    CU_ASSERT_EQUAL(validate_node(o, &n, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].word));
    if (strstr(err, bad[i].word) == NULL)
      fprintf(stderr, "\n'%s' lacks '%s'\n", err, bad[i].word);
    json_object_put(o);
  }
}

static void
test_image(void)
{
  const char *name, *origin, *version;
  char err[512];
  struct json_object *o = parse("{\"name\":\"img\",\"origin\":\"nbd://o:10809\"}");
  CU_ASSERT_EQUAL(validate_image(o, &name, &origin, &version, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(name, "img");
  CU_ASSERT_PTR_NULL(version);
  json_object_put(o);
  o = parse("{\"name\":\"img\",\"origin\":\"nbd://o:10809\",\"version\":\"ABC\"}");
  CU_ASSERT_EQUAL(validate_image(o, &name, &origin, &version, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 'version'"));
  json_object_put(o);
  o = parse("{\"name\":\"img\",\"origin\":\"nbds://origin.example:10809\"}");
  CU_ASSERT_EQUAL(validate_image(o, &name, &origin, &version, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(origin, "nbds://origin.example:10809");
  json_object_put(o);
  o = parse("{\"name\":\"img\",\"origin\":\"nbds+unix:///x?socket=/s\"}");
  CU_ASSERT_EQUAL(validate_image(o, &name, &origin, &version, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 'origin'"));
  json_object_put(o);
  o = parse("{\"name\":\".img\",\"origin\":\"nbd://o:10809\"}");
  CU_ASSERT_EQUAL(validate_image(o, &name, &origin, &version, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 'name'"));
  json_object_put(o);
}

static void
test_small_rules(void)
{
  char err[512];
  CU_ASSERT_EQUAL(validate_idempotency_key("web-1", err, sizeof err), 0);
  CU_ASSERT_EQUAL(validate_idempotency_key("a b", err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "Idempotency-Key"));
  char longkey[300];
  memset(longkey, 'k', 299);
  longkey[299] = '\0';
  CU_ASSERT_EQUAL(validate_idempotency_key(longkey, err, sizeof err), -1);
  CU_ASSERT_TRUE(validate_cluster_id("0123456789abcdef0123456789abcdef"));
  CU_ASSERT_FALSE(validate_cluster_id("0123456789ABCDEF0123456789abcdef"));
  CU_ASSERT_FALSE(validate_cluster_id("0123"));
  CU_ASSERT_TRUE(validate_nbd_base("nbd://[::1]:10809"));
  CU_ASSERT_FALSE(validate_nbd_base("nbd://h:0"));
  CU_ASSERT_FALSE(validate_nbd_base("nbd+unix:///x?socket=/s"));
  CU_ASSERT_TRUE(validate_nbd_base("nbds://h:1"));
  CU_ASSERT_FALSE(validate_nbd_base("nbds://h:65536"));
  CU_ASSERT_FALSE(validate_nbd_base("nbds:/h:1"));
  CU_ASSERT_FALSE(validate_nbd_base("nbds://:1"));
  CU_ASSERT_FALSE(validate_nbd_base("https://h:1"));
  CU_ASSERT_TRUE(validate_node_name("node-1"));
  CU_ASSERT_FALSE(validate_node_name("-node"));
}

#define TEST(fn) { #fn, fn }
static const struct cunit_test tests[] = {
  TEST(test_cluster_good),
  TEST(test_cluster_bad),
  TEST(test_node),
  TEST(test_image),
  TEST(test_small_rules),
};

int
main(void)
{
  static const struct cunit_suite suite = { "validate", NULL, NULL, NULL, NULL };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
