/* thunder — benchmark of the relay tree planner (src/api/tree.c).
 *
 *   bench-tree [--runs R] [--sizes N,N,...] [--seed S]
 *
 * For each size (default 1000 and 10000) it makes one seeded cluster: ids
 * "node-NNNNNN" in shuffled order, 40 nodes per rack, 4 zones, 5% of the
 * nodes caching the image (half of them whole), uplinks 0.5–2× the
 * default.  It times R runs (default 15) of tree_plan_build and of
 * tree_reparent of a level-1 node (the largest subtree to move), and, as
 * the baseline measured in the same run, qsort of the same ids with
 * strcmp: the O(n log n) floor any planner that sorts by id pays.  It
 * prints the medians, the spread ((max − min) / median), the ratio to the
 * baseline and to the target (the planner alone: 10,000 nodes < 1 s, from
 * issue 5; 1,000 nodes < 100 ms, the whole budget of "plan and persist"),
 * and the model's figures for the tree it built.
 *
 * Exit status: 0 if it ran (targets met or not), 1 on an error.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tree.h"

static uint64_t rng_state;

static uint64_t
rng(void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

static double
now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static int
cmp_str(const void *a, const void *b)
{
  return strcmp(*(const char *const *) a, *(const char *const *) b);
}

struct stats {
  double median, spread;
};

static struct stats
summarise(double *t, int runs)
{
  qsort(t, (size_t) runs, sizeof *t, cmp_double);
  struct stats s = { t[runs / 2], 0 };
  if (s.median > 0)
    s.spread = (t[runs - 1] - t[0]) / s.median;
  return s;
}

struct cluster {
  size_t n;
  struct tree_node *nodes;
  char (*ids)[16];
  char (*racks)[16];
  char (*zones)[8];
};

static int
make_cluster(struct cluster *c, size_t n, const struct tree_params *p)
{
  c->n = n;
  c->nodes = calloc(n, sizeof *c->nodes);
  c->ids = calloc(n, sizeof *c->ids);
  c->racks = calloc(n, sizeof *c->racks);
  c->zones = calloc(n, sizeof *c->zones);
  if (!c->nodes || !c->ids || !c->racks || !c->zones)
    return -1;
  for (size_t i = 0; i < n; i++) {
    snprintf(c->ids[i], sizeof c->ids[i], "node-%06zu", i);
    snprintf(c->racks[i], sizeof c->racks[i], "rack-%zu", i / 40);
    snprintf(c->zones[i], sizeof c->zones[i], "z%zu", (i / 40) % 4);
    uint64_t r = rng();
    double cached = r % 100 < 5 ? (r % 2 ? 1.0 : (double) (r % 97) / 97) : 0;
    c->nodes[i] = (struct tree_node) {
      .id = c->ids[i], .rack = c->racks[i], .zone = c->zones[i],
      .cached = cached,
      .uplink = p->node_bw * (0.5 + 1.5 * (double) (rng() % 1000) / 1000),
    };
  }
  for (size_t i = n; i-- > 1;) {           /* the API's order is arbitrary */
    size_t j = rng() % (i + 1);
    struct tree_node t = c->nodes[i];
    c->nodes[i] = c->nodes[j];
    c->nodes[j] = t;
  }
  return 0;
}

static void
free_cluster(struct cluster *c)
{
  free(c->nodes);
  free(c->ids);
  free(c->racks);
  free(c->zones);
}

int
main(int argc, char **argv)
{
  int runs = 15;
  uint64_t seed = 1;
  const char *sizes = "1000,10000";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc)
      sizes = argv[++i];
    else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
      seed = strtoull(argv[++i], NULL, 10);
    else {
      fprintf(stderr, "usage: %s [--runs R] [--sizes N,N,...] [--seed S]\n",
              argv[0]);
      return 1;
    }
  }
  if (runs < 1)
    runs = 1;

  struct tree_params p;
  tree_params_init(&p);
  printf("thunder tree planner benchmark; %d runs per row, medians; "
         "seed %llu\n", runs, (unsigned long long) seed);
  printf("cluster: 40 nodes per rack, 4 zones, 5%% caching, uplinks "
         "0.5-2x of %.0f Mbit/s; origin %.0f Mbit/s, cap %u, W %llu MiB\n\n",
         p.node_bw * 8 / 1e6, p.origin_bw * 8 / 1e6, p.origin_cap,
         (unsigned long long) (p.working_set >> 20));
  printf("%-8s %-22s %10s %7s %10s %7s %8s %9s %7s\n", "nodes", "row",
         "median ms", "spread", "qsort ms", "ratio", "target", "of target",
         "result");

  bool all_met = true;
  char *list = strdup(sizes);
  if (list == NULL)
    return 1;
  double *t = calloc((size_t) runs, sizeof *t);
  double *tb = calloc((size_t) runs, sizeof *tb);
  double *tr = calloc((size_t) runs, sizeof *tr);
  if (t == NULL || tb == NULL || tr == NULL)
    return 1;
  char *save = NULL;
  for (char *tok = strtok_r(list, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    size_t n = strtoull(tok, NULL, 10);
    if (n == 0 || n > TREE_MAX_NODES) {
      fprintf(stderr, "bench-tree: bad size %s\n", tok);
      return 1;
    }
    rng_state = seed * 0x9E3779B97F4A7C15ull + n;
    struct cluster c;
    if (make_cluster(&c, n, &p) == -1) {
      fprintf(stderr, "bench-tree: out of memory\n");
      return 1;
    }
    const char **ids = malloc(n * sizeof *ids);
    if (ids == NULL)
      return 1;
    char err[256];
    struct tree_plan *plan = NULL;
    int victim = -1;
    for (int r = 0; r < runs; r++) {
      /* baseline: sort the ids */
      for (size_t i = 0; i < n; i++)
        ids[i] = c.nodes[i].id;
      double t0 = now();
      qsort(ids, n, sizeof *ids, cmp_str);
      tb[r] = now() - t0;

      tree_plan_free(plan);
      t0 = now();
      plan = tree_plan_build(c.nodes, n, &p, err, sizeof err);
      t[r] = now() - t0;
      if (plan == NULL) {
        fprintf(stderr, "bench-tree: %s\n", err);
        return 1;
      }
      /* the level-1 node with the most descendants: the depth-1 node
       * whose subtree is the largest (counted once) */
      if (victim < 0) {
        size_t *sub = calloc(n, sizeof *sub);
        if (sub == NULL)
          return 1;
        for (size_t i = 0; i < n; i++) {
          size_t x = i;
          while (tree_plan_parent(plan, x) >= 0)
            x = (size_t) tree_plan_parent(plan, x);
          sub[x]++;
        }
        for (size_t i = 0; i < n; i++)
          if (tree_plan_depth(plan, i) == 1 &&
              (victim < 0 || sub[i] > sub[victim]))
            victim = (int) i;
        free(sub);
      }
      struct tree_plan *copy = tree_plan_build(c.nodes, n, &p, err,
                                               sizeof err);
      if (copy == NULL)
        return 1;
      t0 = now();
      long ch = tree_reparent(copy, (size_t) victim, NULL, 0, err, sizeof err);
      tr[r] = now() - t0;
      tree_plan_free(copy);
      if (ch < 0) {
        fprintf(stderr, "bench-tree: %s\n", err);
        return 1;
      }
    }
    struct stats sp = summarise(t, runs), sb = summarise(tb, runs),
                 sr = summarise(tr, runs);
    double target = n <= 1000 ? 0.1 : n <= 10000 ? 1.0 : 0;
    char tgt[16] = "-", of[16] = "-";
    const char *res = "(info)";
    if (target > 0) {
      snprintf(tgt, sizeof tgt, "%.0f ms", target * 1000);
      snprintf(of, sizeof of, "%.4f", sp.median / target);
      res = sp.median < target ? "pass" : "FAIL";
      if (sp.median >= target)
        all_met = false;
    }
    printf("%-8zu %-22s %10.3f %6.0f%% %10.3f %7.1f %8s %9s %7s\n", n,
           "tree_plan_build", sp.median * 1000, sp.spread * 100,
           sb.median * 1000, sp.median / sb.median, tgt, of, res);
    printf("%-8zu %-22s %10.3f %6.0f%% %10s %7.1f %8s %9s %7s\n", n,
           "tree_reparent (level 1)", sr.median * 1000, sr.spread * 100, "",
           sr.median / sb.median, "-", "-", "(info)");

    const struct tree_figures *f = tree_plan_figures(plan);
    printf("         model: c=%u k=%u depth %u; same rack %zu, same zone "
           "%zu, cross %zu; predicted %.2f s = %.2fx T_lb %.2f s\n",
           f->origin_children, f->fanout, f->depth, f->same_rack,
           f->same_zone, f->cross_zone, f->t_predicted,
           f->t_predicted / f->t_lb, f->t_lb);
    tree_plan_free(plan);
    free(ids);
    free_cluster(&c);
  }
  free(list);
  free(t);
  free(tb);
  free(tr);
  printf("\ntargets: %s\n", all_met ? "met" : "NOT met");
  return 0;
}
