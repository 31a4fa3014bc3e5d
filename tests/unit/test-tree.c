/* thunder — unit tests of the relay tree planner (src/api/tree.c).
 *
 * Example tests pin exact trees for a few nodes; property tests build
 * 2,000 seeded random inputs (1..2,000 nodes, log-uniform; random zones,
 * racks, caches, uplinks and caps) and check every rule tree.h promises,
 * the determinism (twice, and on a shuffled copy of the input) and the
 * reparenting rules after random failures.  The model tests compare
 * tree_model_estimate with figures from /work/shared/tools/provmodel.py
 * (the table in docs/planner.md).  Error tests check errno and message.
 */
#include <CUnit/Basic.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit-run.h"
#include "tree.h"

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

static double
rng_unit(void)
{
  return (double) (rng() >> 11) / 9007199254740992.0;
}

static unsigned
rng_below(unsigned n)
{
  return (unsigned) (rng() % n);
}

static char errbuf[512];

/* A plan that must build. */
static struct tree_plan *
build_ok(const struct tree_node *nodes, size_t n, const struct tree_params *p)
{
  errbuf[0] = '\0';
  struct tree_plan *plan = tree_plan_build(nodes, n, p, errbuf, sizeof errbuf);
  if (plan == NULL)
    fprintf(stderr, "tree_plan_build: %s\n", errbuf);
  CU_ASSERT_PTR_NOT_NULL_FATAL(plan);
  return plan;
}

/* Asserts that building fails with errno e and a message containing msg. */
static void
build_fails(const struct tree_node *nodes, size_t n,
            const struct tree_params *p, int e, const char *msg)
{
  errbuf[0] = '\0';
  errno = 0;
  struct tree_plan *plan = tree_plan_build(nodes, n, p, errbuf, sizeof errbuf);
  CU_ASSERT_PTR_NULL(plan);
  CU_ASSERT_EQUAL(errno, e);
  if (strstr(errbuf, msg) == NULL) {
    fprintf(stderr, "message \"%s\" lacks \"%s\"\n", errbuf, msg);
    CU_FAIL("wrong message");
  }
  tree_plan_free(plan);
}

/* The parent's id, "origin" or "none". */
static const char *
parent_id(const struct tree_plan *plan, size_t i)
{
  int p = tree_plan_parent(plan, i);
  return p == TREE_ORIGIN ? "origin" : p == TREE_NONE ? "none"
                                                      : tree_plan_id(plan, (size_t) p);
}

/* Asserts each node's parent: expect[i] is node i's parent id. */
static void
check_parents(const struct tree_plan *plan, const char *const *expect)
{
  for (size_t i = 0; i < tree_plan_count(plan); i++) {
    if (strcmp(parent_id(plan, i), expect[i]) != 0) {
      fprintf(stderr, "node %s: parent %s, expected %s\n",
              tree_plan_id(plan, i), parent_id(plan, i), expect[i]);
      CU_FAIL("wrong parent");
    }
  }
}

/* Equal within a relative tolerance. */
static bool
near(double got, double want, double rel)
{
  return fabs(got - want) <= rel * fabs(want);
}

/* ---- Examples ------------------------------------------------------------ */

static void
test_one_node(void)
{
  struct tree_params p;
  tree_params_init(&p);
  struct tree_node n[] = { { .id = "solo" } };
  struct tree_plan *plan = build_ok(n, 1, &p);
  int up[TREE_MAX_UPSTREAMS];
  CU_ASSERT_EQUAL(tree_plan_count(plan), 1);
  CU_ASSERT_EQUAL(tree_plan_parent(plan, 0), TREE_ORIGIN);
  CU_ASSERT_EQUAL(tree_plan_depth(plan, 0), 1);
  CU_ASSERT_EQUAL(tree_plan_upstreams(plan, 0, up), 1);
  CU_ASSERT_EQUAL(up[0], TREE_ORIGIN);
  const struct tree_figures *f = tree_plan_figures(plan);
  CU_ASSERT_EQUAL(f->origin_children, 1);
  CU_ASSERT_EQUAL(f->depth, 1);
  CU_ASSERT_EQUAL(f->interior, 0);
  /* one node: W/Bo + M·rtt, and T_lb = W/Bo */
  double W = 64.0 * 1048576, Bo = 100e6 / 8;
  CU_ASSERT(near(f->t_predicted, W / Bo + W / (96 * 1024) * 0.0004, 1e-9));
  CU_ASSERT(near(f->t_lb, W / Bo, 1e-12));
  CU_ASSERT_EQUAL(tree_plan_find(plan, "solo"), 0);
  CU_ASSERT_EQUAL(tree_plan_find(plan, "other"), -1);
  tree_plan_free(plan);
}

static void
test_two_nodes(void)
{
  struct tree_params p;
  tree_params_init(&p);               /* Bo = B: the chain wins */
  struct tree_node n[] = { { .id = "b" }, { .id = "a" } };
  struct tree_plan *plan = build_ok(n, 2, &p);
  static const char *const want[] = { "a", "origin" };
  check_parents(plan, want);
  int up[TREE_MAX_UPSTREAMS];
  CU_ASSERT_EQUAL(tree_plan_upstreams(plan, 0, up), 2);
  CU_ASSERT_EQUAL(up[0], 1);
  CU_ASSERT_EQUAL(up[1], TREE_ORIGIN);
  CU_ASSERT_EQUAL(tree_plan_children(plan, 1), 1);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->fanout, 1);
  tree_plan_free(plan);

  /* An origin four times as fast still feeds one of them: by default it
   * sends the image once (origin_copies 1). */
  p.origin_bw *= 4;
  plan = build_ok(n, 2, &p);
  check_parents(plan, want);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->origin_load, 1);
  tree_plan_free(plan);

  /* Allowed two copies, it feeds both directly. */
  p.origin_copies = 2;
  plan = build_ok(n, 2, &p);
  static const char *const flat[] = { "origin", "origin" };
  check_parents(plan, flat);
  tree_plan_free(plan);
}

static void
test_five_chain(void)
{
  struct tree_params p;
  tree_params_init(&p);
  struct tree_node n[] = {
    { .id = "n3" }, { .id = "n5" }, { .id = "n1" }, { .id = "n4" },
    { .id = "n2" },
  };
  struct tree_plan *plan = build_ok(n, 5, &p);
  static const char *const want[] = { "n2", "n4", "origin", "n3", "n1" };
  check_parents(plan, want);
  int up[TREE_MAX_UPSTREAMS];
  CU_ASSERT_EQUAL(tree_plan_upstreams(plan, 1, up), 5);   /* n5 */
  CU_ASSERT_STRING_EQUAL(tree_plan_id(plan, (size_t) up[0]), "n4");
  CU_ASSERT_STRING_EQUAL(tree_plan_id(plan, (size_t) up[3]), "n1");
  CU_ASSERT_EQUAL(up[4], TREE_ORIGIN);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->depth, 5);
  tree_plan_free(plan);
}

static void
test_five_fast_origin(void)
{
  /* Bo = 4B: three or four chains under the origin give the same time
   * (depth 2, the origin's share W/B either way); the tie goes to fewer
   * origin children: levels of 3 and 2.  Positions 0..2 are level 1,
   * positions 3 and 4 hang under 0 and 1; depth-first: 0 n1, 3 n2, 1 n3,
   * 4 n4, 2 n5.  Level 2 (n2, n4) is dealt over n1, n3. */
  struct tree_params p;
  tree_params_init(&p);
  p.origin_bw *= 4;
  p.origin_copies = 4;
  struct tree_node n[] = {
    { .id = "n1" }, { .id = "n2" }, { .id = "n3" }, { .id = "n4" },
    { .id = "n5" },
  };
  struct tree_plan *plan = build_ok(n, 5, &p);
  static const char *const want[] = { "origin", "n1", "origin", "n3",
                                      "origin" };
  check_parents(plan, want);
  const struct tree_figures *f = tree_plan_figures(plan);
  CU_ASSERT_EQUAL(f->origin_children, 3);
  CU_ASSERT_EQUAL(f->fanout, 1);
  CU_ASSERT_EQUAL(f->depth, 2);
  tree_plan_free(plan);
}

static void
test_five_cached_first(void)
{
  /* n4 (whole image, tier 0) and n5 (half, tier 4) take the first
   * positions.  Two chains: the origin sends only n5's missing half, so
   * its load is 0.5·W, and the depth halves.  Levels 2, 2, 1; depth-first
   * the uncached fill 2 (under n4) n1, 4 (under 2) n2, 3 (under n5) n3. */
  struct tree_params p;
  tree_params_init(&p);
  struct tree_node n[] = {
    { .id = "n1" }, { .id = "n2" }, { .id = "n3" },
    { .id = "n4", .cached = 1 }, { .id = "n5", .cached = 0.5 },
  };
  struct tree_plan *plan = build_ok(n, 5, &p);
  static const char *const want[] = { "n4", "n1", "n5", "origin",
                                      "origin" };
  check_parents(plan, want);
  const struct tree_figures *f = tree_plan_figures(plan);
  CU_ASSERT_DOUBLE_EQUAL(f->origin_load, 0.5, 1e-12);
  CU_ASSERT_EQUAL(f->origin_children, 2);
  CU_ASSERT_EQUAL(f->depth, 3);
  tree_plan_free(plan);
}

static void
test_five_racks(void)
{
  /* Forced binary tree under one origin child: levels 1, 2, 2.  Ranks
   * (zone z, racks r1 then r2): a c e | b d.  Depth-first positions:
   * a (L1), c (L2), e (L3 under c), b (L2), d (L3 under b).  Matching:
   * c, b under a; e (r1) under c (r1); d (r2) under b (r2). */
  struct tree_params p;
  tree_params_init(&p);
  p.fanout = 2;
  p.origin_cap = 1;
  struct tree_node n[] = {
    { .id = "a", .zone = "z", .rack = "r1" },
    { .id = "b", .zone = "z", .rack = "r2" },
    { .id = "c", .zone = "z", .rack = "r1" },
    { .id = "d", .zone = "z", .rack = "r2" },
    { .id = "e", .zone = "z", .rack = "r1" },
  };
  struct tree_plan *plan = build_ok(n, 5, &p);
  static const char *const want[] = { "origin", "a", "a", "b", "c" };
  check_parents(plan, want);
  const struct tree_figures *f = tree_plan_figures(plan);
  CU_ASSERT_EQUAL(f->same_rack, 3);
  CU_ASSERT_EQUAL(f->same_zone, 1);
  CU_ASSERT_EQUAL(f->cross_zone, 0);
  CU_ASSERT_EQUAL(f->fanout, 2);
  tree_plan_free(plan);
}

static void
test_rack_before_order(void)
{
  /* One parent slot per level (chain): the child of a rack follows its
   * rack-mate even when another id sorts first. */
  struct tree_params p;
  tree_params_init(&p);
  p.fanout = 1;
  p.origin_cap = 2;
  p.origin_copies = 2;
  p.origin_bw *= 2;
  struct tree_node n[] = {
    { .id = "a1", .zone = "z", .rack = "A" },
    { .id = "b1", .zone = "z", .rack = "B" },
    { .id = "a2", .zone = "z", .rack = "A" },
    { .id = "b2", .zone = "z", .rack = "B" },
  };
  struct tree_plan *plan = build_ok(n, 4, &p);
  static const char *const want[] = { "origin", "origin", "a1", "b1" };
  check_parents(plan, want);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->same_rack, 2);
  tree_plan_free(plan);
}

static void
test_slow_node_is_leaf(void)
{
  /* One chain (origin cap 1) of four needs three relays; the third
   * fastest uplink is B, so n1 (B/2) is kept as the leaf at the tail,
   * although it caches the whole image: at the head it would halve the
   * chain's rate. */
  struct tree_params p;
  tree_params_init(&p);
  p.origin_cap = 1;
  struct tree_node n[] = {
    { .id = "n1", .cached = 1, .uplink = p.node_bw / 2 },
    { .id = "n2" }, { .id = "n3" }, { .id = "n4" },
  };
  struct tree_plan *plan = build_ok(n, 4, &p);
  static const char *const want[] = { "n4", "origin", "n2", "n3" };
  check_parents(plan, want);
  CU_ASSERT(tree_plan_leaf_only(plan, 0));
  CU_ASSERT(!tree_plan_leaf_only(plan, 1));
  const struct tree_figures *f = tree_plan_figures(plan);
  CU_ASSERT_DOUBLE_EQUAL(f->leaf_below, p.node_bw, 1e-6);
  /* the chain runs at B: the closed form for 1 chain of 4 */
  struct tree_figures e;
  CU_ASSERT_EQUAL(tree_model_estimate(&p, 4, 1, 1, &e, NULL, 0), 0);
  CU_ASSERT(near(f->t_predicted, e.t_predicted, 1e-9));
  tree_plan_free(plan);

  /* all as slow: nobody is slower than the rest, n1 leads */
  for (int i = 1; i < 4; i++)
    n[i].uplink = p.node_bw / 2;
  plan = build_ok(n, 4, &p);
  static const char *const head[] = { "origin", "n1", "n2", "n3" };
  CU_ASSERT_DOUBLE_EQUAL(tree_plan_figures(plan)->leaf_below, p.node_bw / 2,
                         1e-6);
  check_parents(plan, head);
  CU_ASSERT(!tree_plan_leaf_only(plan, 0));
  tree_plan_free(plan);
}

static void
test_truncated_list(void)
{
  struct tree_params p;
  tree_params_init(&p);
  p.fanout = 1;
  p.origin_cap = 1;
  p.max_upstreams = 4;
  struct tree_node n[20];
  char ids[20][8];
  for (int i = 0; i < 20; i++) {
    snprintf(ids[i], sizeof ids[i], "n%02d", i);
    n[i] = (struct tree_node) { .id = ids[i] };
  }
  struct tree_plan *plan = build_ok(n, 20, &p);
  int up[TREE_MAX_UPSTREAMS];
  /* n19 is at depth 20: n18 n17 n16, then the origin */
  CU_ASSERT_EQUAL(tree_plan_depth(plan, 19), 20);
  CU_ASSERT_EQUAL(tree_plan_upstreams(plan, 19, up), 4);
  CU_ASSERT_EQUAL(up[0], 18);
  CU_ASSERT_EQUAL(up[1], 17);
  CU_ASSERT_EQUAL(up[2], 16);
  CU_ASSERT_EQUAL(up[3], TREE_ORIGIN);
  /* n02 at depth 3: the whole list */
  CU_ASSERT_EQUAL(tree_plan_upstreams(plan, 2, up), 3);
  CU_ASSERT_EQUAL(up[0], 1);
  CU_ASSERT_EQUAL(up[1], 0);
  CU_ASSERT_EQUAL(up[2], TREE_ORIGIN);
  tree_plan_free(plan);
}

static void
test_reparent_chain(void)
{
  struct tree_params p;
  tree_params_init(&p);
  struct tree_node n[] = { { .id = "n1" }, { .id = "n2" }, { .id = "n3" },
                           { .id = "n4" } };
  struct tree_plan *plan = build_ok(n, 4, &p);
  int changed[4];
  long r = tree_reparent(plan, 1, changed, 4, errbuf, sizeof errbuf);
  CU_ASSERT_EQUAL(r, 2);                  /* n3 and n4 lose n2 */
  CU_ASSERT_EQUAL(changed[0], 2);
  CU_ASSERT_EQUAL(changed[1], 3);
  static const char *const want[] = { "origin", "none", "n1", "n3" };
  check_parents(plan, want);
  CU_ASSERT(tree_plan_failed(plan, 1));
  CU_ASSERT_EQUAL(tree_plan_depth(plan, 1), 0);
  CU_ASSERT_EQUAL(tree_plan_depth(plan, 3), 3);
  int up[TREE_MAX_UPSTREAMS];
  CU_ASSERT_EQUAL(tree_plan_upstreams(plan, 1, up), 0);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->failed, 1);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->nodes, 3);

  /* the head: n3 moves up to the origin */
  r = tree_reparent(plan, 0, NULL, 0, errbuf, sizeof errbuf);
  CU_ASSERT_EQUAL(r, 2);
  static const char *const want2[] = { "none", "none", "origin", "n3" };
  check_parents(plan, want2);

  errno = 0;
  CU_ASSERT_EQUAL(tree_reparent(plan, 0, NULL, 0, errbuf, sizeof errbuf), -1);
  CU_ASSERT_EQUAL(errno, EALREADY);
  CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, "already failed"));
  errno = 0;
  CU_ASSERT_EQUAL(tree_reparent(plan, 4, NULL, 0, errbuf, sizeof errbuf), -1);
  CU_ASSERT_EQUAL(errno, EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, "no such node"));
  tree_plan_free(plan);
}

static void
test_reparent_full_parent(void)
{
  /* Binary, origin cap 1, racks A (n01 n02 n03 n04 n06 n13) and B (the
   * rest), one zone.  Ranks: A by id, then B by id.  Levels 1, 2, 4, 6;
   * depth-first: n01 | n02 n08 | n03 n13 n09 n12 | n04 n06 n05 n07 n10 n11.
   * Each rack fills its own parents: n01 → {n02, n08}, n02 → {n03, n13},
   * n08 → {n09, n12}, n03 → n04, n13 → n06, n09 → {n05, n10},
   * n12 → {n07, n11}.
   * n08 fails: n01 has one free slot, for n09 (the orphans tie on rack,
   * n09 ranks first).  n12 goes one level down: n01's children n02 and n09
   * are full; below them n03 and n13 (A) and n05 and n10 (B) have room,
   * and n12 (B) takes n05, the first of its rack, although n03 comes
   * first breadth-first. */
  struct tree_params p;
  tree_params_init(&p);
  p.fanout = 2;
  p.origin_cap = 1;
  static const char *const racks = "AAAABABBBBBBA";
  struct tree_node n[13];
  char ids[13][8], rk[13][2];
  for (int i = 0; i < 13; i++) {
    snprintf(ids[i], sizeof ids[i], "n%02d", i + 1);
    rk[i][0] = racks[i];
    rk[i][1] = '\0';
    n[i] = (struct tree_node) { .id = ids[i], .zone = "z", .rack = rk[i] };
  }
  struct tree_plan *plan = build_ok(n, 13, &p);
  static const char *const before[] = {
    "origin", "n01", "n02", "n03", "n09", "n13", "n12", "n01", "n08",
    "n09", "n12", "n08", "n02",
  };
  check_parents(plan, before);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->same_rack, 11);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->same_zone, 1);

  int changed[13];
  long r = tree_reparent(plan, 7, changed, 13, errbuf, sizeof errbuf);
  static const char *const after[] = {
    "origin", "n01", "n02", "n03", "n09", "n13", "n12", "none", "n01",
    "n09", "n12", "n05", "n02",
  };
  check_parents(plan, after);
  /* every node below n08 has a new list: n09, n05, n10, n12, n07, n11 */
  CU_ASSERT_EQUAL(r, 6);
  CU_ASSERT_EQUAL(tree_plan_depth(plan, 11), 4);     /* n12 */
  CU_ASSERT_EQUAL(tree_plan_depth(plan, 6), 5);      /* n07 */
  CU_ASSERT(tree_plan_figures(plan)->max_children <= 2);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->failed, 1);
  tree_plan_free(plan);
}

/* ---- The model against provmodel.py ----------------------------------- */

/* trace-a.csv: 661 distinct 64 KiB blocks, 407 reads that miss, the
 * largest read 1 MiB; 100 Mbit/s links, rtt 0.4 ms (docs/planner.md). */
static void
trace_a_params(struct tree_params *p)
{
  tree_params_init(p);
  p->working_set = 661ull * 65536;
  p->read_size = (uint32_t) (661ull * 65536 / 407);
  p->burst_size = 1u << 20;
}

static double
estimate(const struct tree_params *p, size_t n, unsigned c, unsigned k)
{
  struct tree_figures f;
  CU_ASSERT_EQUAL_FATAL(tree_model_estimate(p, n, c, k, &f, errbuf,
                                            sizeof errbuf), 0);
  return f.t_predicted;
}

static void
test_model_vs_provmodel(void)
{
  struct tree_params p;
  trace_a_params(&p);
  /* provmodel.py trace-a.csv (seconds until all booted) */
  static const struct {
    size_t n;
    unsigned c, k;
    double bo_mult, sim;
  } rows[] = {
    { 1, 1, 1, 1, 3.628 },    { 16, 1, 1, 1, 3.713 },
    { 64, 1, 1, 1, 3.984 },   { 256, 1, 1, 1, 5.067 },
    { 1000, 1, 1, 1, 9.266 }, { 16, 1, 2, 1, 7.116 },
    { 64, 1, 2, 1, 7.295 },   { 256, 1, 2, 1, 7.474 },
    { 1000, 1, 2, 1, 7.570 }, { 16, 1, 4, 1, 13.958 },
    { 64, 1, 4, 1, 14.215 },  { 256, 1, 4, 1, 14.472 },
    { 1024, 4, 1, 4, 5.068 }, { 1000, 4, 1, 2, 8.337 },
    { 1024, 4, 2, 4, 7.474 }, { 64, 4, 1, 1, 13.947 },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    struct tree_params q = p;
    q.origin_bw = p.node_bw * rows[i].bo_mult;
    double t = estimate(&q, rows[i].n, rows[i].c, rows[i].k);
    if (!near(t, rows[i].sim, 0.02)) {
      fprintf(stderr, "N=%zu c=%u k=%u Bo=%gB: model %.3f, provmodel %.3f\n",
              rows[i].n, rows[i].c, rows[i].k, rows[i].bo_mult, t,
              rows[i].sim);
      CU_FAIL("model off by more than 2%");
    }
  }
}

static void
test_model_choices(void)
{
  /* The shape the planner picks for the DESIGN.md scenario and beyond. */
  struct tree_params p;
  trace_a_params(&p);
  static const struct {
    size_t n;
    double bo_mult;
    unsigned c, k;
  } rows[] = {
    { 64, 1, 1, 1 },      /* the pipelined chain: 1.15× T_lb */
    { 256, 1, 1, 1 },
    { 1000, 1, 2, 2 },    /* depth costs more than 2·W/B now; two
                             binary trees tie the origin's 2·W/Bo */
    { 1000, 4, 4, 1 },    /* four chains of 250 */
    { 10000, 4, 4, 2 },
    { 16, 10, 4, 1 },
  };
  /* The time model's own choice: the origin may send up to origin_cap
   * copies here; by default (one copy) every row has c = 1, checked
   * below. */
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    struct tree_params q = p;
    q.origin_bw = p.node_bw * rows[i].bo_mult;
    q.origin_copies = q.origin_cap;
    struct tree_params one = q;
    one.origin_copies = 1;
    struct tree_node *n = calloc(rows[i].n, sizeof *n);
    char (*ids)[32] = calloc(rows[i].n, sizeof *ids);
    CU_ASSERT_PTR_NOT_NULL_FATAL(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    for (size_t j = 0; j < rows[i].n; j++) {
      snprintf(ids[j], sizeof ids[j], "node%05zu", j);
      n[j].id = ids[j];
    }
    struct tree_plan *plan1 = build_ok(n, rows[i].n, &one);
    CU_ASSERT_EQUAL(tree_plan_figures(plan1)->origin_children, 1);
    CU_ASSERT(tree_plan_figures(plan1)->origin_load <= 1);
    tree_plan_free(plan1);
    struct tree_plan *plan = build_ok(n, rows[i].n, &q);
    const struct tree_figures *f = tree_plan_figures(plan);
    if (f->origin_children != rows[i].c || f->fanout != rows[i].k) {
      fprintf(stderr, "N=%zu Bo=%gB: c=%u k=%u, expected c=%u k=%u\n",
              rows[i].n, rows[i].bo_mult, f->origin_children, f->fanout,
              rows[i].c, rows[i].k);
      CU_FAIL("unexpected shape");
    }
    /* the built tree's figures equal the closed form for its shape */
    struct tree_figures e;
    CU_ASSERT_EQUAL(tree_model_estimate(&q, rows[i].n, f->origin_children,
                                        f->fanout, &e, NULL, 0), 0);
    CU_ASSERT(near(f->t_predicted, e.t_predicted, 1e-9));
    CU_ASSERT_EQUAL(f->depth, e.depth);
    CU_ASSERT(f->t_predicted >= f->t_lb);
    tree_plan_free(plan);
    free(ids);
    free(n);
  }
}

/* ---- Properties over random inputs ------------------------------------ */

#define CASES 2000
#define MAXN 2000
#define LABELS 512    /* rack numbers 1 + zone·100 + rack, zones 1..3 */

struct gen {
  size_t n;
  struct tree_node nodes[MAXN];
  char ids[MAXN][TREE_ID_MAX + 1];
  char racks[MAXN][16];
  char zones[MAXN][16];
  int rack_of[MAXN];      /* the test's own rack number, 0 = none */
  int zone_of[MAXN];
  struct tree_params p;
};

static struct gen g, shuffled;

static void
generate(uint64_t seed)
{
  rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int i = 0; i < 4; i++)
    rng();
  /* log-uniform n: many small trees, some of 2,000 */
  g.n = (size_t) exp(rng_unit() * log(MAXN + 0.999));
  if (g.n < 1)
    g.n = 1;
  if (g.n > MAXN)
    g.n = MAXN;
  unsigned zones = rng_below(4);          /* 0: no zone labels */
  unsigned racks = 1 + rng_below(12);
  unsigned unlabelled = rng_below(4) == 0 ? rng_below(30) : 0;  /* % */
  unsigned cached_pct = rng_below(3) == 0 ? 0 : rng_below(40);
  bool uplinks = rng_below(3) == 0;
  tree_params_init(&g.p);
  static const double bo[] = { 1, 1, 2, 4, 10, 0.5 };
  g.p.origin_bw = g.p.node_bw * bo[rng_below(6)];
  g.p.origin_cap = 1 + rng_below(8);
  g.p.max_upstreams = 2 + rng_below(15);
  g.p.rtt = rng_unit() * 0.005;
  g.p.working_set = (16ull + rng_below(200)) << 20;
  if (rng_below(4) == 0)
    g.p.fanout = 2 + rng_below(7);       /* forced; depth always fits */
  if (rng_below(5) == 0)
    g.p.max_depth = 4 + rng_below(60);
  for (size_t i = 0; i < g.n; i++) {
    /* ids of random length 1..64; a unique counter inside */
    size_t len = 1 + rng_below(TREE_ID_MAX);
    int w = snprintf(g.ids[i], sizeof g.ids[i], "%zx-", i);
    for (size_t j = (size_t) w; j < len; j++)
      g.ids[i][j] = (char) ('a' + rng_below(26));
    g.ids[i][len > (size_t) w ? len : (size_t) w] = '\0';
    unsigned z = zones ? rng_below(zones) : 0;
    unsigned r = rng_below(racks);
    g.zone_of[i] = zones ? 1 + (int) z : 0;
    snprintf(g.zones[i], sizeof g.zones[i], "zone-%u", z);
    /* the same rack names recur in every zone: a rack is (zone, rack) */
    snprintf(g.racks[i], sizeof g.racks[i], "rack-%u", r);
    bool norack = rng_below(100) < unlabelled;
    g.rack_of[i] = norack ? 0 : 1 + (int) (z * 100 + r);
    double cached = 0;
    if (rng_below(100) < cached_pct)
      cached = rng_below(2) ? 1.0 : rng_unit();
    g.nodes[i] = (struct tree_node) {
      .id = g.ids[i],
      .rack = norack ? (rng_below(2) ? "" : NULL) : g.racks[i],
      .zone = zones ? g.zones[i] : NULL,
      .cached = cached,
      .uplink = uplinks ? g.p.node_bw * (0.5 + 3.5 * rng_unit()) : 0,
    };
  }
}

/* Node i's uplink as the planner sees it. */
static double
uplink_of(const struct gen *in, size_t i)
{
  return in->nodes[i].uplink > 0 ? in->nodes[i].uplink : in->p.node_bw;
}

static unsigned
tier_of(double cached)
{
  return (unsigned) ceil((1 - cached) * TREE_CACHE_TIERS);
}

/* Everything tree.h promises about a freshly built plan. */
static void
check_plan(const struct tree_plan *plan, const struct gen *in,
           unsigned *level_count, unsigned *levelcap)
{
  const size_t n = in->n;
  const struct tree_params *p = &in->p;
  const struct tree_figures *f = tree_plan_figures(plan);
  unsigned origin_children = 0, maxdepth = 0;

  CU_ASSERT_EQUAL_FATAL(tree_plan_count(plan), n);
  memset(level_count, 0, (n + 2) * sizeof *level_count);
  for (size_t i = 0; i < n; i++) {
    int par = tree_plan_parent(plan, i);
    unsigned d = tree_plan_depth(plan, i);
    CU_ASSERT_FATAL(d >= 1 && d <= n);
    /* depth = parent's + 1: every chain of parents strictly climbs to the
     * origin, so there is no cycle */
    if (par == TREE_ORIGIN) {
      CU_ASSERT_EQUAL_FATAL(d, 1);
      origin_children++;
    } else {
      CU_ASSERT_FATAL(par >= 0 && (size_t) par < n && (size_t) par != i);
      CU_ASSERT_EQUAL_FATAL(tree_plan_depth(plan, (size_t) par) + 1, d);
    }
    if (d > maxdepth)
      maxdepth = d;
    level_count[d]++;
    /* the list: nearest ancestors, origin last, at most max_upstreams */
    int up[TREE_MAX_UPSTREAMS];
    size_t len = tree_plan_upstreams(plan, i, up);
    CU_ASSERT_EQUAL(len, d < p->max_upstreams ? d : p->max_upstreams);
    CU_ASSERT_EQUAL(up[len - 1], TREE_ORIGIN);
    CU_ASSERT_EQUAL(up[0], par);
    int a = par;
    for (size_t j = 0; j + 1 < len; j++) {
      CU_ASSERT_EQUAL(up[j], a);
      a = tree_plan_parent(plan, (size_t) a);
    }
    CU_ASSERT_STRING_EQUAL(tree_plan_id(plan, i), in->ids[i]);
    CU_ASSERT_EQUAL(tree_plan_find(plan, in->ids[i]), (int) i);
  }
  CU_ASSERT(origin_children <= p->origin_cap);
  CU_ASSERT_EQUAL(origin_children, f->origin_children);
  CU_ASSERT_EQUAL(maxdepth, f->depth);
  CU_ASSERT(maxdepth <= p->max_depth);
  if (p->fanout)
    CU_ASSERT_EQUAL(f->fanout, p->fanout);

  /* balanced caps: level L's nodes have ≤ ceil(n(L+1)/n(L)) ≤ k children */
  for (unsigned d = 1; d <= maxdepth; d++)
    levelcap[d] = d < maxdepth ? (level_count[d + 1] + level_count[d] - 1) /
                                     level_count[d]
                               : 0;
  for (unsigned d = 1; d < maxdepth; d++)
    CU_ASSERT(levelcap[d] <= f->fanout);
  for (size_t i = 0; i < n; i++)
    CU_ASSERT(tree_plan_children(plan, i) <=
              levelcap[tree_plan_depth(plan, i)]);

  /* tiers: a more-cached tier is never deeper than a less-cached one */
  unsigned tmin[TREE_CACHE_TIERS + 1], tmax[TREE_CACHE_TIERS + 1];
  for (int t = 0; t <= TREE_CACHE_TIERS; t++) {
    tmin[t] = UINT32_MAX;
    tmax[t] = 0;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned t = tier_of(in->nodes[i].cached), d = tree_plan_depth(plan, i);
    if (uplink_of(in, i) < f->leaf_below)
      t = TREE_CACHE_TIERS;        /* too slow to relay: placed as uncached */
    if (d < tmin[t])
      tmin[t] = d;
    if (d > tmax[t])
      tmax[t] = d;
  }
  for (int t = 0; t <= TREE_CACHE_TIERS; t++)
    for (int u = t + 1; u <= TREE_CACHE_TIERS; u++)
      if (tmax[t] > 0 && tmin[u] != UINT32_MAX)
        CU_ASSERT(tmax[t] <= tmin[u]);

  /* leaf-only: exactly the nodes slower than leaf_below; childless */
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT_EQUAL(tree_plan_leaf_only(plan, i),
                    uplink_of(in, i) < f->leaf_below);
    if (tree_plan_leaf_only(plan, i))
      CU_ASSERT_EQUAL(tree_plan_children(plan, i), 0);
  }
}

/* Rack (which 0) and zone (1) rule: a labelled node whose parent is
 * outside its rack (zone) finds every node of its rack (zone) one level up
 * that may relay (not leaf-only) with a full set of children, all of that
 * rack (zone). */
static void
check_locality(const struct tree_plan *plan, const struct gen *in,
               const unsigned *levelcap, int which)
{
  const size_t n = in->n;
  const int *lab = which == 0 ? in->rack_of : in->zone_of;
  /* open[i]: node i has a free slot or a child from elsewhere */
  bool *open = calloc(n, sizeof *open);
  CU_ASSERT_PTR_NOT_NULL_FATAL(open);
  for (size_t i = 0; i < n; i++)
    open[i] = !tree_plan_leaf_only(plan, i) &&
              tree_plan_children(plan, i) < levelcap[tree_plan_depth(plan, i)];
  for (size_t i = 0; i < n; i++) {
    int par = tree_plan_parent(plan, i);
    if (par >= 0 && lab[i] != lab[par])
      open[par] = true;
  }
  /* openat[d·LABELS + label]: some node of that label at depth d is open */
  unsigned maxdepth = tree_plan_figures(plan)->depth;
  bool *openat = calloc((size_t) (maxdepth + 1) * LABELS, sizeof *openat);
  CU_ASSERT_PTR_NOT_NULL_FATAL(openat);
  for (size_t u = 0; u < n; u++)
    if (open[u])
      openat[tree_plan_depth(plan, u) * LABELS + (unsigned) lab[u]] = true;
  for (size_t v = 0; v < n; v++) {
    int par = tree_plan_parent(plan, v);
    if (par < 0 || lab[v] == 0 || lab[v] == lab[par])
      continue;
    unsigned d = tree_plan_depth(plan, v) - 1;
    if (openat[d * LABELS + (unsigned) lab[v]]) {
      fprintf(stderr, "%s: %s has its parent %s elsewhere, but a node of "
              "its %s at depth %u has room\n", which ? "zone" : "rack",
              in->ids[v], in->ids[par], which ? "zone" : "rack", d);
      CU_FAIL("locality rule broken");
      break;
    }
  }
  free(openat);
  free(open);
}

/* Shuffles g into shuffled (ids keep their strings). */
static void
shuffle_input(void)
{
  shuffled.n = g.n;
  shuffled.p = g.p;
  for (size_t i = 0; i < g.n; i++)
    shuffled.nodes[i] = g.nodes[i];
  for (size_t i = g.n; i-- > 1;) {
    size_t j = rng() % (i + 1);
    struct tree_node t = shuffled.nodes[i];
    shuffled.nodes[i] = shuffled.nodes[j];
    shuffled.nodes[j] = t;
  }
}

/* Same tree by ids: parents, depths, lists and figures. */
static void
check_same_tree(const struct tree_plan *a, const struct tree_plan *b)
{
  CU_ASSERT_EQUAL_FATAL(tree_plan_count(a), tree_plan_count(b));
  for (size_t i = 0; i < tree_plan_count(a); i++) {
    int j = tree_plan_find(b, tree_plan_id(a, i));
    CU_ASSERT_FATAL(j >= 0);
    CU_ASSERT_STRING_EQUAL(parent_id(a, i), parent_id(b, (size_t) j));
    CU_ASSERT_EQUAL(tree_plan_depth(a, i), tree_plan_depth(b, (size_t) j));
    int ua[TREE_MAX_UPSTREAMS], ub[TREE_MAX_UPSTREAMS];
    size_t la = tree_plan_upstreams(a, i, ua);
    size_t lb = tree_plan_upstreams(b, (size_t) j, ub);
    CU_ASSERT_EQUAL_FATAL(la, lb);
    for (size_t h = 0; h < la; h++) {
      if (ua[h] == TREE_ORIGIN || ub[h] == TREE_ORIGIN) {
        CU_ASSERT_EQUAL(ua[h], ub[h]);
      } else {
        CU_ASSERT_STRING_EQUAL(tree_plan_id(a, (size_t) ua[h]),
                               tree_plan_id(b, (size_t) ub[h]));
      }
    }
  }
  CU_ASSERT_EQUAL(memcmp(tree_plan_figures(a), tree_plan_figures(b),
                         sizeof(struct tree_figures)), 0);
}

/* Fails a few random nodes and checks the reparenting rules. */
static size_t reparented;

static void
check_reparent(struct tree_plan *plan, const struct gen *in)
{
  const size_t n = in->n;
  static int before[MAXN][TREE_MAX_UPSTREAMS], blen[MAXN];
  static int changed[MAXN];
  static bool seen[MAXN];
  unsigned fails = 1 + rng_below(3);
  for (unsigned t = 0; t < fails; t++) {
    if (tree_plan_figures(plan)->nodes <= 1)
      return;
    size_t victim;
    do
      victim = rng() % n;
    while (tree_plan_failed(plan, victim));
    unsigned cap = tree_plan_figures(plan)->max_children;
    int P = tree_plan_parent(plan, victim);
    unsigned nkids = tree_plan_children(plan, victim);
    for (size_t i = 0; i < n; i++)
      blen[i] = (int) tree_plan_upstreams(plan, i, before[i]);

    long r = tree_reparent(plan, victim, changed, n, errbuf, sizeof errbuf);
    CU_ASSERT_FATAL(r >= 0);
    reparented++;
    CU_ASSERT(tree_plan_failed(plan, victim));

    /* changed[] names exactly the nodes whose list changed */
    memset(seen, 0, n * sizeof *seen);
    for (long j = 0; j < r; j++)
      seen[changed[j]] = true;
    unsigned origin_children = 0, moved_up = 0;
    for (size_t i = 0; i < n; i++) {
      int up[TREE_MAX_UPSTREAMS];
      size_t len = tree_plan_upstreams(plan, i, up);
      bool diff = (int) len != blen[i] ||
                  memcmp(up, before[i], len * sizeof *up) != 0;
      if (i == victim) {
        CU_ASSERT_EQUAL(len, 0);
        continue;
      }
      if (tree_plan_failed(plan, i))
        continue;
      CU_ASSERT_EQUAL(diff, seen[i]);
      /* no list names a failed node; depth = parent's + 1 (no cycle) */
      for (size_t h = 0; h + 1 < len; h++)
        CU_ASSERT_FATAL(!tree_plan_failed(plan, (size_t) up[h]));
      CU_ASSERT_EQUAL_FATAL(up[len - 1], TREE_ORIGIN);
      CU_ASSERT(len <= in->p.max_upstreams);
      int par = tree_plan_parent(plan, i);
      if (par == TREE_ORIGIN) {
        CU_ASSERT_EQUAL_FATAL(tree_plan_depth(plan, i), 1);
        origin_children++;
      } else {
        CU_ASSERT_EQUAL_FATAL(tree_plan_depth(plan, (size_t) par) + 1,
                              tree_plan_depth(plan, i));
      }
      CU_ASSERT(tree_plan_children(plan, i) <= (cap ? cap : 1));
      if (par == P && blen[i] > 0 && before[i][0] == (int) victim)
        moved_up++;
    }
    CU_ASSERT(origin_children <= in->p.origin_cap);
    CU_ASSERT_EQUAL(origin_children,
                    tree_plan_figures(plan)->origin_children);
    /* at least one orphan takes the victim's place under its parent */
    if (nkids > 0)
      CU_ASSERT(moved_up >= 1);
    /* chains: every orphan (one) moves up */
    if (cap <= 1 && nkids == 1)
      CU_ASSERT_EQUAL(moved_up, 1);
  }
}

static void
test_properties(void)
{
  unsigned *level_count = malloc((MAXN + 2) * sizeof *level_count);
  unsigned *levelcap = malloc((MAXN + 2) * sizeof *levelcap);
  CU_ASSERT_PTR_NOT_NULL_FATAL(level_count);
  CU_ASSERT_PTR_NOT_NULL_FATAL(levelcap);
  size_t total = 0, failures_before = CU_get_number_of_failures();
  size_t leaf_only = 0, cross_rack = 0, edges = 0;
  for (uint64_t seed = 1; seed <= CASES; seed++) {
    generate(seed);
    total += g.n;
    struct tree_plan *a = build_ok(g.nodes, g.n, &g.p);
    check_plan(a, &g, level_count, levelcap);
    check_locality(a, &g, levelcap, 0);
    check_locality(a, &g, levelcap, 1);

    struct tree_plan *b = build_ok(g.nodes, g.n, &g.p);
    check_same_tree(a, b);
    tree_plan_free(b);

    shuffle_input();
    struct tree_plan *c = build_ok(shuffled.nodes, shuffled.n, &shuffled.p);
    check_same_tree(a, c);
    tree_plan_free(c);

    for (size_t i = 0; i < g.n; i++) {
      leaf_only += tree_plan_leaf_only(a, i);
      if (tree_plan_parent(a, i) >= 0 &&
          (g.rack_of[i] == 0 ||
           g.rack_of[i] != g.rack_of[tree_plan_parent(a, i)]))
        cross_rack++;
    }
    edges += g.n - tree_plan_figures(a)->origin_children;
    check_reparent(a, &g);
    tree_plan_free(a);
    if (CU_get_number_of_failures() != failures_before) {
      fprintf(stderr, "first failing seed: %llu (n = %zu)\n",
              (unsigned long long) seed, g.n);
      break;
    }
  }
  fprintf(stderr, "\n    %d random plans, %zu nodes in all, %zu leaf-only; "
          "%zu of %zu parent edges leave a rack (or are unlabelled); "
          "%zu nodes failed and reparented ", CASES, total, leaf_only,
          cross_rack, edges, reparented);
  free(level_count);
  free(levelcap);
}

/* ---- Bad input --------------------------------------------------------- */

static void
test_bad_nodes(void)
{
  struct tree_params p;
  tree_params_init(&p);
  struct tree_node ok[] = { { .id = "a" }, { .id = "b" } };
  char longid[TREE_ID_MAX + 2];
  memset(longid, 'x', sizeof longid - 1);
  longid[sizeof longid - 1] = '\0';

  build_fails(ok, 0, &p, EINVAL, "no nodes");
  build_fails(NULL, 2, &p, EINVAL, "no nodes");

  struct tree_node dup[] = { { .id = "a" }, { .id = "b" }, { .id = "a" } };
  build_fails(dup, 3, &p, EINVAL, "node 2: duplicate id \"a\" (also node 0)");

  struct tree_node empty[] = { { .id = "a" }, { .id = "" } };
  build_fails(empty, 2, &p, EINVAL, "node 1: id is empty");
  struct tree_node nullid[] = { { .id = NULL } };
  build_fails(nullid, 1, &p, EINVAL, "node 0: id is empty");

  struct tree_node big[] = { { .id = longid } };
  build_fails(big, 1, &p, EINVAL, "id is longer than 64 bytes");
  longid[TREE_ID_MAX] = '\0';                     /* exactly 64: fine */
  struct tree_plan *plan = build_ok(big, 1, &p);
  tree_plan_free(plan);
  longid[TREE_ID_MAX] = 'x';

  struct tree_node rack[] = { { .id = "a", .rack = longid } };
  build_fails(rack, 1, &p, EINVAL, "node 0 (\"a\"): rack is longer");
  struct tree_node zone[] = { { .id = "a", .zone = longid } };
  build_fails(zone, 1, &p, EINVAL, "node 0 (\"a\"): zone is longer");

  struct tree_node c1[] = { { .id = "a", .cached = 1.5 } };
  build_fails(c1, 1, &p, EINVAL, "cached is 1.5, not in 0..1");
  struct tree_node c2[] = { { .id = "a", .cached = -0.1 } };
  build_fails(c2, 1, &p, EINVAL, "cached is -0.1");
  struct tree_node c3[] = { { .id = "a", .cached = NAN } };
  build_fails(c3, 1, &p, EINVAL, "cached is nan");

  struct tree_node u1[] = { { .id = "a" }, { .id = "b", .uplink = -1 } };
  build_fails(u1, 2, &p, EINVAL, "node 1 (\"b\"): uplink is -1 bytes/s");
  struct tree_node u2[] = { { .id = "a", .uplink = INFINITY } };
  build_fails(u2, 1, &p, EINVAL, "uplink is inf");
  struct tree_node u3[] = { { .id = "a", .uplink = NAN } };
  build_fails(u3, 1, &p, EINVAL, "uplink is nan");
}

static void
test_bad_params(void)
{
  struct tree_node ok[] = { { .id = "a" }, { .id = "b" } };
  struct tree_params p;
#define BAD(expr, msg)                                                         \
  do {                                                                         \
    tree_params_init(&p);                                                      \
    expr;                                                                      \
    build_fails(ok, 2, &p, EINVAL, msg);                                       \
  } while (0)
  BAD(p.origin_bw = 0, "origin_bw must be a positive");
  BAD(p.origin_bw = -5, "origin_bw must be a positive");
  BAD(p.origin_bw = NAN, "origin_bw must be a positive");
  BAD(p.origin_bw = INFINITY, "origin_bw must be a positive");
  BAD(p.node_bw = 0, "node_bw must be a positive");
  BAD(p.node_bw = -1, "node_bw must be a positive");
  BAD(p.rtt = -0.001, "rtt must be");
  BAD(p.rtt = NAN, "rtt must be");
  BAD(p.local_time = -1, "local_time must be");
  BAD(p.working_set = 0, "working_set must be > 0");
  BAD(p.block_size = 0, "block_size must be > 0");
  BAD(p.read_size = 0, "read_size must be > 0");
  BAD(p.burst_size = 0, "burst_size must be > 0");
  BAD(p.origin_cap = 0, "origin_cap must be >= 1");
  BAD(p.origin_copies = 0.5, "origin_copies must be a number >= 1");
  BAD(p.origin_copies = NAN, "origin_copies must be a number >= 1");
  BAD(p.max_upstreams = 0, "max_upstreams must be 2..16");
  BAD(p.max_upstreams = 1, "max_upstreams must be 2..16");
  BAD(p.max_upstreams = 17, "max_upstreams must be 2..16");
  BAD(p.max_depth = 0, "max_depth must be >= 1");
  BAD(p.fanout = 65, "fanout must be 0");
#undef BAD
  build_fails(ok, 2, NULL, EINVAL, "params: missing");

  /* a forced chain too deep for max_depth */
  struct tree_node n[20];
  char ids[20][8];
  for (int i = 0; i < 20; i++) {
    snprintf(ids[i], sizeof ids[i], "n%02d", i);
    n[i] = (struct tree_node) { .id = ids[i] };
  }
  tree_params_init(&p);
  p.fanout = 1;
  p.origin_cap = 2;
  p.origin_copies = 2;
  p.max_depth = 9;
  build_fails(n, 20, &p, EINVAL,
              "fan-out 1 with at most 2 origin children needs more than "
              "max_depth 9 levels for 20 nodes");
  p.max_depth = 10;                              /* two chains of 10 fit */
  struct tree_plan *plan = build_ok(n, 20, &p);
  CU_ASSERT_EQUAL(tree_plan_figures(plan)->depth, 10);
  tree_plan_free(plan);

  /* a NULL or empty message buffer is fine */
  tree_params_init(&p);
  p.origin_cap = 0;
  errno = 0;
  CU_ASSERT_PTR_NULL(tree_plan_build(ok, 2, &p, NULL, 0));
  CU_ASSERT_EQUAL(errno, EINVAL);

  struct tree_figures f;
  tree_params_init(&p);
  errno = 0;
  CU_ASSERT_EQUAL(tree_model_estimate(&p, 0, 1, 1, &f, errbuf,
                                      sizeof errbuf), -1);
  CU_ASSERT_EQUAL(errno, EINVAL);
  CU_ASSERT_EQUAL(tree_model_estimate(&p, 10, 1, 0, &f, NULL, 0), -1);
  CU_ASSERT_EQUAL(tree_model_estimate(&p, 10, 0, 1, &f, NULL, 0), -1);
}

#define TEST(fn) { #fn, fn }
static const struct cunit_test tests[] = {
  TEST(test_one_node),
  TEST(test_two_nodes),
  TEST(test_five_chain),
  TEST(test_five_fast_origin),
  TEST(test_five_cached_first),
  TEST(test_five_racks),
  TEST(test_rack_before_order),
  TEST(test_slow_node_is_leaf),
  TEST(test_truncated_list),
  TEST(test_reparent_chain),
  TEST(test_reparent_full_parent),
  TEST(test_model_vs_provmodel),
  TEST(test_model_choices),
  TEST(test_properties),
  TEST(test_bad_nodes),
  TEST(test_bad_params),
};

int
main(void)
{
  static const struct cunit_suite suite = { "tree", NULL, NULL, NULL, NULL };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
