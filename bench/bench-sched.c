/* thunder — benchmark of the VM scheduler (src/api/sched.c).
 *
 *   bench-sched [--runs R] [--sizes N,N,...] [--seed S]
 *
 * For each size N (default 1000 and 10000) it makes one seeded set of N
 * nodes ("node-NNNNNN" in shuffled order; 16–64 vCPUs, 64–256 GiB, 1 TB,
 * 0–7 vCPUs already used, 2% down) and places N VMs of 2 vCPUs, 4 GiB,
 * 20 GiB with spread and with pack.  It times R runs (default 15) of each
 * and, as the baseline measured in the same run, qsort of the same ids
 * with strcmp: the O(n log n) floor of a scheduler that orders nodes by id.
 * It prints the medians, the spread ((max − min) / median), the ratio to
 * the baseline and to the target (100 ms for 10,000 nodes × 10,000 VMs).
 *
 * Exit status: 0 if it ran (targets met or not), 1 on an error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "place.h"

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

/* Sorts t and returns the median; *spread gets (max − min) / median. */
static double
summarise(double *t, int runs, double *spread)
{
  qsort(t, (size_t) runs, sizeof *t, cmp_double);
  double median = t[runs / 2];
  *spread = median > 0 ? (t[runs - 1] - t[0]) / median : 0;
  return median;
}

static int
bench_size(size_t n, int runs)
{
  struct sched_node *nodes = calloc(n, sizeof *nodes);
  char (*ids)[32] = calloc(n, sizeof *ids);
  const char **keys = calloc(n, sizeof *keys);
  size_t *out = calloc(n, sizeof *out);
  double *t = calloc((size_t) runs, sizeof *t);
  int ret = 1;
  if (!nodes || !ids || !keys || !out || !t) {
    fprintf(stderr, "bench-sched: out of memory\n");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    snprintf(ids[i], sizeof ids[i], "node-%06zu", i);
    nodes[i] = (struct sched_node) {
      .id = ids[i], .ready = rng() % 50 != 0,
      .vcpus = 16 * (1 + (uint32_t) (rng() % 4)),
      .memory_mib = 65536 * (1 + rng() % 4),
      .disk_bytes = 1000000000000ull, .used_vcpus = rng() % 8,
    };
  }
  for (size_t i = n; i-- > 1;) {           /* the store's order is by id */
    size_t j = rng() % (i + 1);
    struct sched_node x = nodes[i];
    nodes[i] = nodes[j];
    nodes[j] = x;
  }

  double spread, base;
  for (int r = 0; r < runs; r++) {
    for (size_t i = 0; i < n; i++)
      keys[i] = nodes[i].id;
    double t0 = now();
    qsort(keys, n, sizeof *keys, cmp_str);
    t[r] = now() - t0;
  }
  base = summarise(t, runs, &spread);
  printf("%-8zu %-22s %9.3f %7.0f%% %9s %7s %8s  (baseline)\n", n,
         "qsort of the ids", base * 1e3, spread * 100, "", "", "");

  for (int s = 0; s < 2; s++) {
    struct sched_request req = {
      .count = (uint32_t) n, .vcpus = 2, .memory_mib = 4096,
      .disk_bytes = 20000000000ull,
      .strategy = s ? SCHED_PACK : SCHED_SPREAD,
    };
    char err[512];
    for (int r = 0; r < runs; r++) {
      double t0 = now();
      int rc = sched_place(nodes, n, &req, out, err, sizeof err);
      t[r] = now() - t0;
      if (rc != SCHED_OK) {
        fprintf(stderr, "bench-sched: %zu nodes: %s\n", n, err);
        goto out;
      }
    }
    double med = summarise(t, runs, &spread);
    double target = 0.1 * (double) n / 10000;
    char what[32];
    snprintf(what, sizeof what, "sched_place (%s)",
             sched_strategy_name(req.strategy));
    printf("%-8zu %-22s %9.3f %7.0f%% %9.1f %5.0f ms %8.4f  %s\n",
           n, what, med * 1e3, spread * 100,
           base > 0 ? med / base : 0, target * 1e3, med / target,
           med < target ? "pass" : "FAIL");
  }
  ret = 0;
out:
  free(nodes);
  free(ids);
  free(keys);
  free(out);
  free(t);
  return ret;
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
  rng_state = seed ? seed : 1;
  printf("thunder scheduler benchmark; %d runs per row, medians; seed %llu\n"
         "N nodes, N VMs of 2 vCPUs, 4 GiB, 20 GB; target 100 ms per "
         "10,000 (scaled linearly)\n\n", runs, (unsigned long long) seed);
  printf("%-8s %-22s %9s %8s %9s %8s %8s  %s\n", "nodes", "what", "ms",
         "spread", "x base", "target", "x tgt", "verdict");
  for (const char *p = sizes; *p != '\0';) {
    char *end;
    unsigned long long n = strtoull(p, &end, 10);
    if (end == p || n == 0 || n > 10000000 || (*end != ',' && *end != '\0')) {
      fprintf(stderr, "bench-sched: --sizes: \"%s\" is not a list of sizes "
              "1..10000000\n", sizes);
      return 1;
    }
    if (bench_size((size_t) n, runs) != 0)
      return 1;
    p = *end == ',' ? end + 1 : end;
  }
  return 0;
}
