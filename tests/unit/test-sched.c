/* thunder — unit tests of the VM scheduler (src/api/sched.c).
 *
 * Example tests pin placements and whole messages for a few nodes; the
 * property test builds 500 seeded random inputs (1..40 nodes with random
 * labels, states, capacities and usage, some over capacity; random
 * requests and hints) and compares every outcome with a naive reference
 * written from the rules in sched.h (one VM at a time, every node scanned),
 * checks capacity, caps, hints and down nodes on every placement, and runs
 * it again on a shuffled copy of the input.  Error tests check errno and
 * message.  The last test prints the time for 10,000 nodes × 10,000 VMs.
 */
#include <CUnit/Basic.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cunit-run.h"
#include "place.h"

#define GIB 1073741824ull

typedef unsigned __int128 u128;

/* ---- Helpers ----------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t
rng(void)
{
  /* xorshift64*: deterministic for a seed */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

static uint64_t
rng_below(uint64_t n)
{
  return rng() % n;
}

static char errbuf[1024];

/* A node with capacity and nothing used, ready. */
static struct sched_node
node(const char *id, uint32_t vcpus, uint64_t mib, uint64_t disk)
{
  return (struct sched_node) { .id = id, .ready = true, .vcpus = vcpus,
                               .memory_mib = mib, .disk_bytes = disk };
}

/* A request for count VMs of 1 vCPU, 512 MiB, 1 GiB. */
static struct sched_request
request(uint32_t count, enum sched_strategy s)
{
  return (struct sched_request) { .count = count, .vcpus = 1,
                                  .memory_mib = 512, .disk_bytes = GIB,
                                  .strategy = s };
}

/* Places and asserts success; the node ids of the VMs go into ids. */
static void
place_ok(const struct sched_node *nodes, size_t n,
         const struct sched_request *req, const char **ids)
{
  size_t *out = calloc(req->count, sizeof *out);
  CU_ASSERT_PTR_NOT_NULL_FATAL(out);
  errbuf[0] = '\0';
  int r = sched_place(nodes, n, req, out, errbuf, sizeof errbuf);
  if (r != SCHED_OK)
    fprintf(stderr, "sched_place: %d: %s\n", r, errbuf);
  CU_ASSERT_EQUAL_FATAL(r, SCHED_OK);
  for (uint32_t v = 0; v < req->count; v++) {
    CU_ASSERT_FATAL(out[v] < n);
    ids[v] = nodes[out[v]].id;
  }
  free(out);
}

/* Asserts the placement of VM i on want[i]. */
static void
check_ids(const char *const *got, const char *const *want, size_t count)
{
  for (size_t v = 0; v < count; v++)
    if (strcmp(got[v], want[v]) != 0) {
      fprintf(stderr, "VM %zu on %s, expected %s\n", v, got[v], want[v]);
      CU_FAIL("wrong node");
    }
}

/* Asserts the outcome code and the whole message (or a part of it when
 * whole is false). */
static void
place_fails(const struct sched_node *nodes, size_t n,
            const struct sched_request *req, int code, const char *msg,
            bool whole)
{
  size_t out[64];
  errbuf[0] = '\0';
  errno = 0;
  int r = sched_place(nodes, n, req, out, errbuf, sizeof errbuf);
  CU_ASSERT_EQUAL(r, code);
  if (code == SCHED_ERROR)
    CU_ASSERT_EQUAL(errno, EINVAL);
  if (whole ? strcmp(errbuf, msg) != 0 : strstr(errbuf, msg) == NULL) {
    fprintf(stderr, "code %d, message\n  \"%s\"\n%s\n  \"%s\"\n", r, errbuf,
            whole ? "expected" : "lacks", msg);
    CU_FAIL("wrong message");
  }
}

static size_t
count_on(const char *const *ids, size_t count, const char *id)
{
  size_t k = 0;
  for (size_t v = 0; v < count; v++)
    k += strcmp(ids[v], id) == 0;
  return k;
}

/* ---- Examples ------------------------------------------------------------ */

static void
test_spread_even(void)
{
  /* Equal nodes: round robin in id order, whatever the input order. */
  struct sched_node n[] = {
    node("n3", 8, 8192, 100 * GIB), node("n1", 8, 8192, 100 * GIB),
    node("n4", 8, 8192, 100 * GIB), node("n2", 8, 8192, 100 * GIB),
  };
  struct sched_request req = request(10, SCHED_SPREAD);
  const char *ids[10];
  place_ok(n, 4, &req, ids);
  static const char *const want[] = { "n1", "n2", "n3", "n4", "n1",
                                      "n2", "n3", "n4", "n1", "n2" };
  check_ids(ids, want, 10);

  /* A node four times as big takes four times as many: shares equal at
   * 8/16 = 2/4; ties go to the smaller id ("big" < "small"). */
  struct sched_node h[] = {
    node("small", 4, 16384, 0), node("big", 16, 65536, 0),
  };
  req = request(10, SCHED_SPREAD);
  req.memory_mib = 4096;
  req.disk_bytes = 0;
  place_ok(h, 2, &req, ids);
  CU_ASSERT_EQUAL(count_on(ids, 10, "big"), 8);
  CU_ASSERT_EQUAL(count_on(ids, 10, "small"), 2);
  static const char *const want_h[] = { "big", "big", "big", "big", "small",
                                        "big", "big", "big", "big", "small" };
  check_ids(ids, want_h, 10);

  /* Existing usage counts, and the dominant dimension decides: a's
   * memory is half used, b's vCPUs a quarter, c is empty. */
  struct sched_node u[] = {
    node("a", 8, 8192, 0), node("b", 8, 8192, 0), node("c", 8, 8192, 0),
  };
  u[0].used_memory_mib = 4096;
  u[1].used_vcpus = 2;
  req = request(4, SCHED_SPREAD);
  req.memory_mib = 1024;
  req.disk_bytes = 0;
  /* shares after one: a 5/8 (memory), b 3/8 (vCPUs), c 1/8; c takes VMs
   * until 3/8: c (1/8), c (2/8), then b 3/8 ties c 3/8: b, then c. */
  place_ok(u, 3, &req, ids);
  static const char *const want_u[] = { "c", "c", "b", "c" };
  check_ids(ids, want_u, 4);

  /* An unused dimension still counts: b's disk is 90% used. */
  struct sched_node d[] = { node("a", 8, 8192, 10 * GIB),
                            node("b", 8, 8192, 10 * GIB) };
  d[0].used_disk_bytes = 1 * GIB;
  d[1].used_disk_bytes = 9 * GIB;
  req = request(3, SCHED_SPREAD);
  req.disk_bytes = 0;
  place_ok(d, 2, &req, ids);
  CU_ASSERT_EQUAL(count_on(ids, 3, "a"), 3);
}

static void
test_pack_order(void)
{
  /* Bytewise: "N2" < "n10" < "n2"; each takes 2 (vCPUs). */
  struct sched_node n[] = {
    node("n2", 2, 8192, 100 * GIB), node("n10", 2, 8192, 100 * GIB),
    node("N2", 2, 8192, 100 * GIB),
  };
  struct sched_request req = request(5, SCHED_PACK);
  const char *ids[5];
  place_ok(n, 3, &req, ids);
  static const char *const want[] = { "N2", "N2", "n10", "n10", "n2" };
  check_ids(ids, want, 5);

  /* A full node is skipped, a partly used one filled first. */
  n[2].used_vcpus = 2;   /* N2 full */
  n[1].used_vcpus = 1;   /* n10 takes one */
  req = request(3, SCHED_PACK);
  place_ok(n, 3, &req, ids);
  static const char *const want2[] = { "n10", "n2", "n2" };
  check_ids(ids, want2, 3);

  /* With max_per_node, pack moves on at the cap. */
  n[2].used_vcpus = n[1].used_vcpus = 0;
  req = request(3, SCHED_PACK);
  req.max_per_node = 1;
  place_ok(n, 3, &req, ids);
  static const char *const want3[] = { "N2", "n10", "n2" };
  check_ids(ids, want3, 3);
}

static void
test_capacity_dims(void)
{
  /* Each node is short of one dimension: vc of vCPUs, mem of memory,
   * dsk of disk; a VM needs 2 vCPUs, 1 GiB memory, 10 GiB disk. */
  struct sched_node n[] = {
    node("vc", 4, 65536, 1000 * GIB),      /* 2 VMs */
    node("mem", 64, 3072, 1000 * GIB),     /* 3 VMs */
    node("dsk", 64, 65536, 45 * GIB),      /* 4 VMs */
  };
  struct sched_request req = request(9, SCHED_SPREAD);
  req.vcpus = 2;
  req.memory_mib = 1024;
  req.disk_bytes = 10 * GIB;
  const char *ids[9];
  place_ok(n, 3, &req, ids);
  CU_ASSERT_EQUAL(count_on(ids, 9, "vc"), 2);
  CU_ASSERT_EQUAL(count_on(ids, 9, "mem"), 3);
  CU_ASSERT_EQUAL(count_on(ids, 9, "dsk"), 4);

  /* One more is short now (usage of other clusters), never when empty. */
  n[0].used_vcpus = 1;      /* vc: 3 free vCPUs, 1 VM */
  req.count = 9;
  place_fails(n, 3, &req, SCHED_SHORT,
              "need 9 VMs of 2 vCPUs, 1 GiB memory, 10 GiB disk; the 3 "
              "ready nodes matching the request fit 8 now (vCPUs short on "
              "vc; memory short on mem; disk short on dsk)", true);
  req.count = 10;
  place_fails(n, 3, &req, SCHED_NEVER,
              "need 10 VMs of 2 vCPUs, 1 GiB memory, 10 GiB disk; the 3 "
              "nodes matching the request hold at most 9 even when empty "
              "(limited by vCPUs on vc; by memory on mem; by disk on dsk)",
              true);

  /* Usage above capacity (a node re-registered smaller) frees nothing. */
  n[0].used_vcpus = 100;
  n[1].used_memory_mib = UINT64_MAX;
  n[2].used_disk_bytes = 46 * GIB;
  req.count = 1;
  place_fails(n, 3, &req, SCHED_SHORT, "fit 0 now", false);

  /* A dimension the VM does not need does not limit it (disk 0). */
  n[0].used_vcpus = 0;
  n[0].disk_bytes = 0;
  req.disk_bytes = 0;
  req.count = 2;
  place_ok(n, 1, &req, ids);
}

static void
test_down_skipped(void)
{
  struct sched_node n[] = {
    node("a", 8, 8192, 100 * GIB), node("b", 8, 8192, 100 * GIB),
    node("c", 1, 512, 100 * GIB),
  };
  n[0].ready = false;       /* the emptiest and first: never chosen */
  n[1].used_vcpus = 6;
  struct sched_request req = request(3, SCHED_SPREAD);
  const char *ids[3];
  place_ok(n, 3, &req, ids);
  CU_ASSERT_EQUAL(count_on(ids, 3, "a"), 0);
  req.strategy = SCHED_PACK;
  place_ok(n, 3, &req, ids);
  static const char *const want[] = { "b", "b", "c" };
  check_ids(ids, want, 3);

  /* Four would fit on a when it comes back: short, not never. */
  req.count = 4;
  place_fails(n, 3, &req, SCHED_SHORT,
              "need 4 VMs of 1 vCPU, 512 MiB memory, 1 GiB disk; the 2 "
              "ready nodes matching the request fit 3 now (vCPUs short on "
              "b, c); 1 matching node is down (a)", true);
  n[1].ready = n[2].ready = false;
  req.count = 1;
  place_fails(n, 3, &req, SCHED_SHORT,
              "need 1 VM of 1 vCPU, 512 MiB memory, 1 GiB disk; none of "
              "the 3 nodes matching the request is ready (down: a, b, c)",
              true);
}

static void
test_hints(void)
{
  struct sched_node n[] = {
    node("a", 8, 8192, 100 * GIB), node("b", 8, 8192, 100 * GIB),
    node("c", 8, 8192, 100 * GIB), node("d", 8, 8192, 100 * GIB),
    node("e", 8, 8192, 100 * GIB),
  };
  n[0].zone = "z1"; n[0].rack = "r1";
  n[1].zone = "z1"; n[1].rack = "r2";
  n[2].zone = "z2"; n[2].rack = "r1";
  n[3].zone = "z2"; n[3].rack = "";
  /* e: no labels */
  const char *ids[8];

  static const char *const only[] = { "e", "b", "e" };  /* duplicates ok */
  struct sched_request req = request(4, SCHED_SPREAD);
  req.nodes = only;
  req.n_nodes = 3;
  place_ok(n, 5, &req, ids);
  CU_ASSERT_EQUAL(count_on(ids, 4, "b"), 2);
  CU_ASSERT_EQUAL(count_on(ids, 4, "e"), 2);

  req = request(4, SCHED_SPREAD);
  req.zone = "z2";
  place_ok(n, 5, &req, ids);
  CU_ASSERT_EQUAL(count_on(ids, 4, "c") + count_on(ids, 4, "d"), 4);

  /* A rack alone matches that label in every zone. */
  req.zone = NULL;
  req.rack = "r1";
  place_ok(n, 5, &req, ids);
  CU_ASSERT_EQUAL(count_on(ids, 4, "a"), 2);
  CU_ASSERT_EQUAL(count_on(ids, 4, "c"), 2);
  req.zone = "z1";
  place_ok(n, 5, &req, ids);
  CU_ASSERT_EQUAL(count_on(ids, 4, "a"), 4);

  /* max_per_node spreads a pack; counts only this request's VMs. */
  req = request(8, SCHED_PACK);
  req.max_per_node = 2;
  n[0].used_vcpus = 5;      /* a has 3 free vCPUs, holds 2 */
  place_ok(n, 5, &req, ids);
  static const char *const want[] = { "a", "a", "b", "b", "c", "c",
                                      "d", "d" };
  check_ids(ids, want, 8);
  req.count = 11;
  place_fails(n, 5, &req, SCHED_NEVER,
              "need 11 VMs of 1 vCPU, 512 MiB memory, 1 GiB disk; the 5 "
              "nodes matching the request hold at most 10 even when empty "
              "(limited by max_per_node 2 on a, b, c and 2 more)", true);
  n[0].used_vcpus = 7;      /* a holds 1 now */
  req.count = 10;
  place_fails(n, 5, &req, SCHED_SHORT,
              "need 10 VMs of 1 vCPU, 512 MiB memory, 1 GiB disk; the 5 "
              "ready nodes matching the request fit 9 now (vCPUs short on "
              "a; max_per_node 2 reached on b, c, d and 1 more)", true);

  /* No match: the message says which hint excluded what. */
  req = request(1, SCHED_SPREAD);
  req.zone = "z1";
  req.rack = "r9";
  place_fails(n, 5, &req, SCHED_NEVER,
              "no node matches the placement (zone \"z1\"; rack \"r9\"): "
              "of the 5 registered nodes, 2 in zone \"z1\", 0 in rack "
              "\"r9\"", true);
  static const char *const de[] = { "d", "e" };
  req = request(1, SCHED_SPREAD);
  req.nodes = de;
  req.n_nodes = 2;
  req.zone = "z1";
  place_fails(n, 5, &req, SCHED_NEVER,
              "no node matches the placement (nodes \"d\", \"e\"; zone "
              "\"z1\"): of the 2 listed nodes, 0 in zone \"z1\"", true);

  /* Unknown ids: never, named (hostile bytes neutralised). */
  static const char *const unknown[] = { "a", "x\n\"y", "b", "zz", "x\n\"y",
                                         "q", "r", "q", "r", "zz" };
  req = request(1, SCHED_SPREAD);
  req.nodes = unknown;
  req.n_nodes = 2;
  place_fails(n, 5, &req, SCHED_NEVER,
              "placement nodes: \"x?\\\"y\" is not registered (5 nodes "
              "registered)", true);
  req.n_nodes = 10;
  place_fails(n, 5, &req, SCHED_NEVER,
              "placement nodes: \"x?\\\"y\", \"zz\", \"q\" and 1 more are "
              "not registered (5 nodes registered)", true);
  place_fails(n, 0, &req, SCHED_NEVER, "(0 nodes registered)", false);
}

static void
test_short_vs_never(void)
{
  /* The brief's example: 6 VMs, 3 nodes fit 4 now. */
  struct sched_node n[] = {
    node("node1", 2, 8192, 100 * GIB), node("node2", 8, 1024, 100 * GIB),
    node("node3", 8, 8192, 100 * GIB),
  };
  n[2].used_vcpus = 8;
  n[2].used_memory_mib = 8192;
  n[2].used_disk_bytes = 100 * GIB;
  struct sched_request req = request(6, SCHED_SPREAD);
  place_fails(n, 3, &req, SCHED_SHORT,
              "need 6 VMs of 1 vCPU, 512 MiB memory, 1 GiB disk; the 3 "
              "ready nodes matching the request fit 4 now (vCPUs short on "
              "node1, node3; memory short on node2)", true);
  req.count = 4;
  const char *ids[4];
  place_ok(n, 3, &req, ids);

  /* A VM bigger than every node: never, with the largest of each. */
  req = request(2, SCHED_SPREAD);
  req.vcpus = 4;
  req.memory_mib = 16384;
  req.disk_bytes = 3 * GIB / 2;
  place_fails(n, 3, &req, SCHED_NEVER,
              "a VM of 4 vCPUs, 16 GiB memory, 1.5 GiB disk is bigger than "
              "the whole capacity of each of the 3 nodes matching the "
              "request (largest: 8 vCPUs on node2, 8 GiB memory on node1, "
              "100 GiB disk on node1)", true);
  req.disk_bytes = 0;
  req.memory_mib = 1024;
  req.vcpus = 3;
  req.n_nodes = 1;
  static const char *const one[] = { "node1" };
  req.nodes = one;
  place_fails(n, 3, &req, SCHED_NEVER,
              "a VM of 3 vCPUs, 1 GiB memory is bigger than the whole "
              "capacity of the one node matching the request (2 vCPUs on "
              "node1, 8 GiB memory on node1)", true);

  /* Bigger than what is free on each, but not than node3's capacity:
   * short.  Each dimension fits node1 or node2 but none fits both:
   * never. */
  req = request(1, SCHED_SPREAD);
  req.vcpus = 8;
  req.memory_mib = 2048;
  place_fails(n, 3, &req, SCHED_SHORT,
              "the 3 ready nodes matching the request fit 0 now (vCPUs "
              "short on node1, node3; memory short on node2)", false);
  static const char *const two[] = { "node2", "node1" };
  req.nodes = two;
  req.n_nodes = 2;
  req.vcpus = 3;
  req.memory_mib = 4096;
  place_fails(n, 3, &req, SCHED_NEVER,
              "a VM of 3 vCPUs, 4 GiB memory, 1 GiB disk is bigger than the "
              "whole capacity of each of the 2 nodes matching the request "
              "(largest: 8 vCPUs on node2, 8 GiB memory on node1, 100 GiB "
              "disk on node1)", true);

  /* No node at all. */
  req.n_nodes = 0;
  place_fails(n, 0, &req, SCHED_NEVER, "no node is registered", true);

  /* A short buffer: truncated, terminated; err NULL is fine. */
  size_t out[1];
  char small[16];
  CU_ASSERT_EQUAL(sched_place(n, 0, &req, out, small, sizeof small),
                  SCHED_NEVER);
  CU_ASSERT_STRING_EQUAL(small, "no node is regi");
  req.nodes = two;
  req.n_nodes = 2;
  CU_ASSERT_EQUAL(sched_place(n, 3, &req, out, NULL, 0), SCHED_NEVER);
  small[0] = 'x';
  CU_ASSERT_EQUAL(sched_place(n, 3, &req, out, small, 0), SCHED_NEVER);
  CU_ASSERT_EQUAL(small[0], 'x');
}

static void
test_overflow(void)
{
  struct sched_node n[] = {
    { .id = "a", .ready = true, .vcpus = UINT32_MAX,
      .memory_mib = UINT64_MAX, .disk_bytes = UINT64_MAX },
    { .id = "b", .ready = true, .vcpus = UINT32_MAX,
      .memory_mib = UINT64_MAX, .disk_bytes = UINT64_MAX,
      .used_vcpus = UINT64_MAX, .used_memory_mib = UINT64_MAX - 1,
      .used_disk_bytes = UINT64_MAX },
    { .id = "c", .ready = true, .vcpus = UINT32_MAX,
      .memory_mib = UINT64_MAX, .disk_bytes = UINT64_MAX,
      .used_vcpus = 0, .used_memory_mib = UINT64_MAX / 2 + 1,
      .used_disk_bytes = 1 },
  };
  /* Half of everything per VM: a holds 1 (2·2^63 > 2^64 − 1); b is used
   * beyond its vCPUs; c has 2^63 − 1 MiB free, one short of a VM. */
  struct sched_request req = {
    .count = 1, .vcpus = UINT32_MAX / 2 + 1,
    .memory_mib = UINT64_MAX / 2 + 1, .disk_bytes = UINT64_MAX / 2 + 1,
    .strategy = SCHED_SPREAD,
  };
  const char *ids[2];
  place_ok(n, 3, &req, ids);
  CU_ASSERT_STRING_EQUAL(ids[0], "a");
  req.count = 2;
  place_fails(n, 3, &req, SCHED_SHORT,
              "need 2 VMs of 2147483648 vCPUs, 8388608 EiB memory, 8 EiB "
              "disk; the 3 ready nodes matching the request fit 1 now "
              "(vCPUs short on a, b; memory short on c)", true);
  req.count = 4;
  place_fails(n, 3, &req, SCHED_NEVER, "hold at most 3 even when empty",
              false);

  /* Tiny VMs on huge nodes: spread shares need 128-bit products; pack
   * fills a. */
  req = (struct sched_request) { .count = 50, .vcpus = 1, .memory_mib = 1,
                                 .disk_bytes = 1, .strategy = SCHED_SPREAD };
  n[1].used_vcpus = 0;
  n[1].used_memory_mib = UINT64_MAX - 100;
  n[1].used_disk_bytes = 0;
  const char *many[50];
  place_ok(n, 3, &req, many);
  CU_ASSERT_EQUAL(count_on(many, 50, "b"), 0);   /* b is nearly full */
  CU_ASSERT_EQUAL(count_on(many, 50, "a"), 50);  /* c is half used */
  req.strategy = SCHED_PACK;
  req.max_per_node = UINT32_MAX;
  place_ok(n, 3, &req, many);
  CU_ASSERT_EQUAL(count_on(many, 50, "a"), 50);

  /* Shares that differ by less than a double can tell: y's is
   * (2^61 + 1) / 2^62 after one VM, x's (2^61 + 2) / 2^62; both round to
   * 0.5 as doubles, which would hand the tie to x. */
  struct sched_node e[] = { node("y", 64, 1ull << 62, 0),
                            node("x", 64, 1ull << 62, 0) };
  e[0].used_memory_mib = 1ull << 61;
  e[1].used_memory_mib = (1ull << 61) + 1;
  req = request(2, SCHED_SPREAD);
  req.memory_mib = 1;
  req.disk_bytes = 0;
  place_ok(e, 2, &req, ids);
  CU_ASSERT_STRING_EQUAL(ids[0], "y");
  CU_ASSERT_STRING_EQUAL(ids[1], "x");   /* then equal: the smaller id */

  /* Capacity 0 with nothing used counts as empty, with something used as
   * full. */
  struct sched_node z[] = { node("p", 4, 4096, 0), node("q", 4, 4096, 0) };
  z[0].used_disk_bytes = 1;
  req = request(1, SCHED_SPREAD);
  req.disk_bytes = 0;
  place_ok(z, 2, &req, ids);
  CU_ASSERT_STRING_EQUAL(ids[0], "q");
}

static void
test_bad_input(void)
{
  struct sched_node n[] = { node("a", 8, 8192, 100 * GIB),
                            node("b", 8, 8192, 100 * GIB),
                            node("a", 8, 8192, 100 * GIB) };
  struct sched_request req = request(1, SCHED_SPREAD);
  size_t out[1];

  place_fails(n, 3, &req, SCHED_ERROR,
              "nodes 0 and 2 have the same id \"a\"", true);
  n[2].id = NULL;
  place_fails(n, 3, &req, SCHED_ERROR, "node 2: id is missing", true);
  n[2].id = "";
  place_fails(n, 3, &req, SCHED_ERROR, "node 2: id is missing", true);
  n[2].id = "c";
  place_fails(NULL, 3, &req, SCHED_ERROR, "3 nodes announced, none given",
              false);

  req.count = 0;
  place_fails(n, 3, &req, SCHED_ERROR, "count is 0", false);
  req = request(1, SCHED_SPREAD);
  req.vcpus = 0;
  place_fails(n, 3, &req, SCHED_ERROR, "vcpus is 0", false);
  req = request(1, SCHED_SPREAD);
  req.memory_mib = 0;
  place_fails(n, 3, &req, SCHED_ERROR, "memory_mib is 0", false);
  req = request(1, (enum sched_strategy) 7);
  place_fails(n, 3, &req, SCHED_ERROR,
              "placement strategy 7 is unknown (spread, pack)", true);
  req = request(1, SCHED_SPREAD);
  req.n_nodes = 2;
  place_fails(n, 3, &req, SCHED_ERROR, "2 ids announced, none given",
              false);
  static const char *const holes[] = { "a", NULL };
  req.nodes = holes;
  place_fails(n, 3, &req, SCHED_ERROR, "placement nodes[1] is empty", true);
  static const char *const empty[] = { "" };
  req.nodes = empty;
  req.n_nodes = 1;
  place_fails(n, 3, &req, SCHED_ERROR, "placement nodes[0] is empty", true);
  req = request(1, SCHED_SPREAD);
  req.zone = "";
  place_fails(n, 3, &req, SCHED_ERROR, "placement zone is empty", true);
  req.zone = NULL;
  req.rack = "";
  place_fails(n, 3, &req, SCHED_ERROR, "placement rack is empty", true);

  req = request(1, SCHED_SPREAD);
  errno = 0;
  CU_ASSERT_EQUAL(sched_place(n, 3, NULL, out, errbuf, sizeof errbuf),
                  SCHED_ERROR);
  CU_ASSERT_EQUAL(errno, EINVAL);
  errno = 0;
  CU_ASSERT_EQUAL(sched_place(n, 3, &req, NULL, errbuf, sizeof errbuf),
                  SCHED_ERROR);
  CU_ASSERT_EQUAL(errno, EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, "no output array"));

  CU_ASSERT_STRING_EQUAL(sched_strategy_name(SCHED_SPREAD), "spread");
  CU_ASSERT_STRING_EQUAL(sched_strategy_name(SCHED_PACK), "pack");
  CU_ASSERT_PTR_NULL(sched_strategy_name((enum sched_strategy) 9));
}

/* ---- Properties ---------------------------------------------------------- */

#define PROP_ROUNDS 500
#define PROP_NODES 40
#define PROP_COUNT 60

/* The naive reference, one VM at a time from the rules in sched.h. */
struct ref_node {
  const struct sched_node *nd;
  bool match;
  uint64_t placed;
};

static bool
ref_fits(const struct ref_node *r, const struct sched_request *req,
         bool empty)
{
  const struct sched_node *nd = r->nd;
  if (!r->match || (!empty && !nd->ready))
    return false;
  if (req->max_per_node && r->placed >= req->max_per_node)
    return false;
  const u128 cap[3] = { nd->vcpus, nd->memory_mib, nd->disk_bytes };
  const u128 used[3] = { empty ? 0 : nd->used_vcpus,
                         empty ? 0 : nd->used_memory_mib,
                         empty ? 0 : nd->used_disk_bytes };
  const u128 need[3] = { req->vcpus, req->memory_mib, req->disk_bytes };
  for (int d = 0; d < 3; d++)
    if (need[d] > 0 && used[d] + (r->placed + 1) * need[d] > cap[d])
      return false;
  return true;
}

/* r's dominant share after one more VM, as num/den. */
static void
ref_share(const struct ref_node *r, const struct sched_request *req,
          u128 *num, u128 *den)
{
  const struct sched_node *nd = r->nd;
  const u128 cap[3] = { nd->vcpus, nd->memory_mib, nd->disk_bytes };
  const u128 used[3] = { nd->used_vcpus, nd->used_memory_mib,
                         nd->used_disk_bytes };
  const u128 need[3] = { req->vcpus, req->memory_mib, req->disk_bytes };
  *num = 0;
  *den = 1;
  for (int d = 0; d < 3; d++) {
    u128 a = used[d] + (r->placed + 1) * need[d], b = cap[d];
    if (a > b)
      a = b;                      /* only for need 0: over capacity */
    if (b == 0) {
      a = used[d] > 0;
      b = 1;
    }
    if (a * *den > *num * b) {
      *num = a;
      *den = b;
    }
  }
}

/* Returns the reference's outcome; on success ids[v] = VM v's node id. */
static int
ref_place(const struct sched_node *nodes, size_t n,
          const struct sched_request *req, const char **ids)
{
  struct ref_node r[PROP_NODES];
  size_t nmatch = 0;
  for (size_t i = 0; i < n; i++) {
    bool listed = req->n_nodes == 0;
    for (size_t j = 0; j < req->n_nodes; j++)
      listed = listed || strcmp(req->nodes[j], nodes[i].id) == 0;
    r[i] = (struct ref_node) {
      .nd = &nodes[i],
      .match = listed &&
               (!req->zone || (nodes[i].zone &&
                               strcmp(nodes[i].zone, req->zone) == 0)) &&
               (!req->rack || (nodes[i].rack &&
                               strcmp(nodes[i].rack, req->rack) == 0)),
    };
    nmatch += r[i].match;
  }
  for (size_t j = 0; j < req->n_nodes; j++) {
    bool known = false;
    for (size_t i = 0; i < n; i++)
      known = known || strcmp(req->nodes[j], nodes[i].id) == 0;
    if (!known)
      return SCHED_NEVER;
  }
  if (nmatch == 0)
    return SCHED_NEVER;
  /* Never: could count VMs fit on the empty matching nodes? */
  for (uint32_t v = 0; v < req->count; v++) {
    size_t i;
    for (i = 0; i < n && !ref_fits(&r[i], req, true); i++)
      ;
    if (i == n)
      return SCHED_NEVER;
    r[i].placed++;
  }
  for (size_t i = 0; i < n; i++)
    r[i].placed = 0;
  for (uint32_t v = 0; v < req->count; v++) {
    size_t best = n;
    u128 bn = 0, bd = 1;
    for (size_t i = 0; i < n; i++) {
      if (!ref_fits(&r[i], req, false))
        continue;
      if (req->strategy == SCHED_PACK) {
        if (best == n || strcmp(nodes[i].id, nodes[best].id) < 0)
          best = i;
        continue;
      }
      u128 num, den;
      ref_share(&r[i], req, &num, &den);
      if (best == n || num * bd < bn * den ||
          (num * bd == bn * den && strcmp(nodes[i].id, nodes[best].id) < 0)) {
        best = i;
        bn = num;
        bd = den;
      }
    }
    if (best == n)
      return SCHED_SHORT;
    r[best].placed++;
    ids[v] = nodes[best].id;
  }
  return SCHED_OK;
}

static const char *const zones[] = { "z0", "z1", "z2" };
static const char *const racks[] = { "r0", "r1", "r2" };

static const char *
maybe_label(const char *const *labels)
{
  uint64_t k = rng_below(8);
  return k < 3 ? labels[k] : k == 3 ? "" : k == 4 ? NULL : labels[0];
}

static uint64_t
scaled(uint64_t max)
{
  /* 0, max, or uniform, with small values common */
  uint64_t k = rng_below(10);
  return k == 0 ? 0 : k == 1 ? max : rng_below(max + 1);
}

/* Checks one successful placement against the rules. */
static void
check_placement(const struct sched_node *nodes, size_t n,
                const struct sched_request *req, const size_t *out)
{
  uint64_t placed[PROP_NODES] = { 0 };
  for (uint32_t v = 0; v < req->count; v++) {
    CU_ASSERT_FATAL(out[v] < n);
    placed[out[v]]++;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    total += placed[i];
    if (placed[i] == 0)
      continue;
    const struct sched_node *nd = &nodes[i];
    CU_ASSERT(nd->ready);
    CU_ASSERT(!req->zone || (nd->zone && !strcmp(nd->zone, req->zone)));
    CU_ASSERT(!req->rack || (nd->rack && !strcmp(nd->rack, req->rack)));
    bool listed = req->n_nodes == 0;
    for (size_t j = 0; j < req->n_nodes; j++)
      listed = listed || strcmp(req->nodes[j], nd->id) == 0;
    CU_ASSERT(listed);
    CU_ASSERT(!req->max_per_node || placed[i] <= req->max_per_node);
    CU_ASSERT((u128) nd->used_vcpus + (u128) placed[i] * req->vcpus <=
              nd->vcpus);
    CU_ASSERT((u128) nd->used_memory_mib +
                  (u128) placed[i] * req->memory_mib <= nd->memory_mib);
    if (req->disk_bytes)
      CU_ASSERT((u128) nd->used_disk_bytes +
                    (u128) placed[i] * req->disk_bytes <= nd->disk_bytes);
  }
  CU_ASSERT_EQUAL(total, req->count);
}

static void
test_properties(void)
{
  static char names[PROP_NODES][16];
  struct sched_node nodes[PROP_NODES], shuffled[PROP_NODES];
  const char *list[PROP_NODES + 2];
  const char *want[PROP_COUNT], *got[PROP_COUNT];
  size_t out[PROP_COUNT];
  unsigned outcomes[4] = { 0 };
  unsigned failures_before = CU_get_number_of_failures();

  for (unsigned round = 0; round < PROP_ROUNDS; round++) {
    rng_state = 0x9e3779b97f4a7c15ull + round;
    size_t n = 1 + rng_below(PROP_NODES);
    for (size_t i = 0; i < n; i++) {
      /* unique ids of mixed lengths and case: bytewise order matters */
      snprintf(names[i], sizeof names[i], "%c%zu", rng_below(4) ? 'n' : 'N',
               i * 7 % 101);
      uint32_t vcpus = (uint32_t) scaled(64);
      uint64_t mib = scaled(256) * 512, disk = scaled(100) * GIB;
      nodes[i] = (struct sched_node) {
        .id = names[i], .zone = maybe_label(zones),
        .rack = maybe_label(racks), .ready = rng_below(8) != 0,
        .vcpus = vcpus, .memory_mib = mib, .disk_bytes = disk,
        .used_vcpus = scaled(vcpus + 4),
        .used_memory_mib = scaled(mib / 512 + 2) * 512,
        .used_disk_bytes = scaled(disk / GIB + 1) * GIB,
      };
    }
    struct sched_request req = {
      .count = 1 + (uint32_t) rng_below(1 + rng_below(PROP_COUNT)),
      .vcpus = 1 + (uint32_t) rng_below(8),
      .memory_mib = (1 + rng_below(16)) * 512,
      .disk_bytes = rng_below(3) ? (1 + rng_below(20)) * GIB : 0,
      .strategy = rng_below(2) ? SCHED_SPREAD : SCHED_PACK,
      .max_per_node = rng_below(3) ? 0 : 1 + (uint32_t) rng_below(5),
    };
    if (rng_below(4) == 0) {
      size_t m = 0;
      for (size_t i = 0; i < n; i++)
        if (rng_below(2))
          list[m++] = nodes[i].id;
      if (rng_below(10) == 0)
        list[m++] = "unregistered";
      if (m > 0 && rng_below(5) == 0)
        list[m++] = list[0];
      req.nodes = list;
      req.n_nodes = m;
    }
    if (rng_below(5) == 0)
      req.zone = zones[rng_below(3)];
    if (rng_below(5) == 0)
      req.rack = racks[rng_below(3)];

    int expect = ref_place(nodes, n, &req, want);
    errbuf[0] = '\0';
    int r = sched_place(nodes, n, &req, out, errbuf, sizeof errbuf);
    CU_ASSERT_EQUAL(r, expect);
    outcomes[-r]++;
    if (r != SCHED_OK) {
      CU_ASSERT(strlen(errbuf) > 10);
    } else {
      check_placement(nodes, n, &req, out);
      for (uint32_t v = 0; v < req.count; v++)
        got[v] = nodes[out[v]].id;
      if (expect == SCHED_OK)
        check_ids(got, want, req.count);
    }

    /* A shuffled copy gives the same VMs on the same node ids. */
    memcpy(shuffled, nodes, n * sizeof *nodes);
    for (size_t i = n; i > 1; i--) {
      size_t j = rng_below(i);
      struct sched_node t = shuffled[i - 1];
      shuffled[i - 1] = shuffled[j];
      shuffled[j] = t;
    }
    char errbuf2[sizeof errbuf];
    int r2 = sched_place(shuffled, n, &req, out, errbuf2, sizeof errbuf2);
    CU_ASSERT_EQUAL(r2, r);
    if (r2 == SCHED_OK && r == SCHED_OK) {
      for (uint32_t v = 0; v < req.count; v++)
        CU_ASSERT_STRING_EQUAL(shuffled[out[v]].id, got[v]);
    } else {
      CU_ASSERT_STRING_EQUAL(errbuf2, errbuf);
    }

    if (CU_get_number_of_failures() != failures_before) {
      fprintf(stderr, "round %u: n %zu, count %u, code %d (reference %d): "
              "%s\n", round, n, req.count, r, expect, errbuf);
      return;
    }
  }
  printf("\n  outcomes of %u rounds: %u placed, %u short, %u never ",
         PROP_ROUNDS, outcomes[0], outcomes[-SCHED_SHORT],
         outcomes[-SCHED_NEVER]);
  /* The generator must exercise every outcome. */
  CU_ASSERT(outcomes[0] >= PROP_ROUNDS / 10);
  CU_ASSERT(outcomes[-SCHED_SHORT] >= PROP_ROUNDS / 10);
  CU_ASSERT(outcomes[-SCHED_NEVER] >= PROP_ROUNDS / 10);
  CU_ASSERT_EQUAL(outcomes[1], 0);
}

/* ---- Scale --------------------------------------------------------------- */

static double
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
test_scale(void)
{
  enum { N = 10000, COUNT = 10000 };
  struct sched_node *nodes = calloc(N, sizeof *nodes);
  char (*names)[16] = calloc(N, sizeof *names);
  size_t *out = calloc(COUNT, sizeof *out);
  uint32_t *per = calloc(N, sizeof *per);
  CU_ASSERT_FATAL(nodes && names && out && per);
  rng_state = 42;
  for (size_t i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "node%05zu", (i * 7919) % N);
    nodes[i] = node(names[i], 16 + 16 * (uint32_t) rng_below(4),
                    65536 * (1 + rng_below(4)), 1000 * GIB);
    nodes[i].used_vcpus = rng_below(8);
    nodes[i].ready = rng_below(50) != 0;
  }
  struct sched_request req = request(COUNT, SCHED_SPREAD);
  req.vcpus = 2;
  req.memory_mib = 4096;
  uint32_t most_of[2] = { 0 };
  for (int s = 0; s < 2; s++) {
    req.strategy = s ? SCHED_PACK : SCHED_SPREAD;
    double t0 = now_ms();
    int r = sched_place(nodes, N, &req, out, errbuf, sizeof errbuf);
    double t = now_ms() - t0;
    CU_ASSERT_EQUAL_FATAL(r, SCHED_OK);
    memset(per, 0, N * sizeof *per);
    uint32_t most = 0;
    for (size_t v = 0; v < COUNT; v++)
      if (++per[out[v]] > most)
        most = per[out[v]];
    most_of[s] = most;
    printf("\n  %s: %d nodes x %d VMs in %.1f ms (most on a node: %u) ",
           sched_strategy_name(req.strategy), N, COUNT, t, most);
  }
  CU_ASSERT(most_of[0] < most_of[1]);
  free(nodes);
  free(names);
  free(out);
  free(per);
}

#define TEST(fn) { #fn, fn }
static const struct cunit_test tests[] = {
  TEST(test_spread_even),
  TEST(test_pack_order),
  TEST(test_capacity_dims),
  TEST(test_down_skipped),
  TEST(test_hints),
  TEST(test_short_vs_never),
  TEST(test_overflow),
  TEST(test_bad_input),
  TEST(test_properties),
  TEST(test_scale),
};

int
main(void)
{
  static const struct cunit_suite suite = { "sched", NULL, NULL, NULL, NULL };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
