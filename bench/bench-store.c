/* thunder — benchmark of thunder-api's SQLite store (src/api/store.c).
 *
 *   bench-store [--runs R] [--nodes N] [--vms V] [--dir DIR]
 *
 * It registers N nodes (default 1,000: 40 per rack, 4 zones) and an image
 * in a new database under DIR (default $BENCH_TMPDIR or /var/tmp: a file
 * on disk, as on a real host), then R times (default 9) plans a cluster of
 * V VMs (default 1,000, spread: VM i on node i mod N) with the relay tree
 * planner and persists it with store_cluster_create: the cluster row, V VM
 * rows and one tree row per node, in one durable transaction (synchronous
 * FULL: the WAL is fdatasync'ed before it returns).  Each run adds a new
 * cluster, so the file grows as it would.
 *
 * Printed, as medians with their spread ((max − min) / median):
 *  - the store part (store_cluster_create) and plan + persist against the
 *    issue's target: planning and persisting a 1,000-VM cluster over 1,000
 *    nodes in < 100 ms; "of target" is median / 100 ms;
 *  - baselines measured in the same run on the same disk: the same rows
 *    inserted with raw sqlite3 into tables with no index, constraint or
 *    JSON work, in one FULL transaction (the floor of any SQLite store,
 *    "ratio" = store / floor); one small durable commit (an fdatasync of
 *    a few pages);
 *  - the reads and updates thunder-api makes around it (info): the cluster
 *    with its VM counts, its VM list, its tree, the node list with usage
 *    (the scheduler's query), and V VM state updates one by one and in one
 *    batch.
 *
 * Exit status: 0 if it ran (targets met or not), 1 on an error.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "tree.h"

#define TARGET_S 0.100

static double
now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

struct stats {
  double median, spread;
};

static struct stats
summarise(double *t, int runs)
{
  qsort(t, (size_t)runs, sizeof *t, cmp_double);
  struct stats s = { t[runs / 2], 0 };
  if (s.median > 0)
    s.spread = (t[runs - 1] - t[0]) / s.median;
  return s;
}

static void
die(const char *what, const char *msg)
{
  fprintf(stderr, "bench-store: %s: %s\n", what, msg);
  exit(1);
}

/* The world: node ids, URIs, labels; the planner's input. */
struct world {
  size_t n;
  char (*ids)[16];
  char (*uris)[40];
  char (*racks)[16];
  char (*zones)[8];
  struct tree_node *tnodes;
};

/* A plan turned into what store_cluster_create takes. */
struct plan_rows {
  const char **vm_nodes;
  struct store_tree_row *rows;
  const char **ups; /* n × TREE_MAX_UPSTREAMS */
  size_t n_rows;
};

static const char origin_uri[] = "nbd://origin.example:10809";

static void
plan_to_rows(const struct world *w, const struct tree_plan *plan,
             struct plan_rows *pr, size_t vms)
{
  for (size_t v = 0; v < vms; v++)
    pr->vm_nodes[v] = w->ids[v % w->n];
  size_t n = tree_plan_count(plan);
  for (size_t i = 0; i < n; i++) {
    int up[TREE_MAX_UPSTREAMS];
    size_t k = tree_plan_upstreams(plan, i, up);
    const char **u = pr->ups + i * TREE_MAX_UPSTREAMS;
    for (size_t j = 0; j < k; j++)
      u[j] = up[j] == TREE_ORIGIN ? origin_uri : w->uris[up[j]];
    int parent = tree_plan_parent(plan, i);
    pr->rows[i] = (struct store_tree_row){
      .node_id = w->ids[i], /* plan indices are input indices */
      .parent = parent >= 0 ? w->ids[parent] : NULL,
      .depth = tree_plan_depth(plan, i),
      .upstreams = u,
      .n_upstreams = k,
    };
  }
  pr->n_rows = n;
}

/* The floor: the same rows through raw sqlite3, no index or constraint. */
static double
raw_insert(sqlite3 *db, const struct plan_rows *pr, size_t vms, int run)
{
  char *msg = NULL;
  sqlite3_stmt *sv, *st;
  if (sqlite3_prepare_v2(db, "INSERT INTO v VALUES (?1, ?2, ?3, ?4, ?5)", -1,
                         &sv, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)", -1,
                         &st, NULL) != SQLITE_OK)
    die("raw prepare", sqlite3_errmsg(db));
  char cid[40];
  snprintf(cid, sizeof cid, "%032x", run);
  double t0 = now();
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
    die("raw begin", msg);
  for (size_t v = 0; v < vms; v++) {
    char id[64], name[64];
    snprintf(id, sizeof id, "%s-%04zu", cid, v);
    snprintf(name, sizeof name, "bench%d-%04zu", run, v);
    sqlite3_bind_text(sv, 1, cid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(sv, 2, (int64_t)v);
    sqlite3_bind_text(sv, 3, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(sv, 4, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(sv, 5, pr->vm_nodes[v], -1, SQLITE_STATIC);
    if (sqlite3_step(sv) != SQLITE_DONE)
      die("raw insert", sqlite3_errmsg(db));
    sqlite3_reset(sv);
  }
  char json[4096];
  for (size_t i = 0; i < pr->n_rows; i++) {
    const struct store_tree_row *r = &pr->rows[i];
    size_t len = 0;
    json[len++] = '[';
    for (size_t j = 0; j < r->n_upstreams; j++)
      len += (size_t)snprintf(json + len, sizeof json - len, "%s\"%s\"",
                              j ? "," : "", r->upstreams[j]);
    snprintf(json + len, sizeof json - len, "]");
    sqlite3_bind_text(st, 1, cid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->node_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->parent, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, r->depth);
    sqlite3_bind_text(st, 5, json, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
      die("raw insert", sqlite3_errmsg(db));
    sqlite3_reset(st);
  }
  if (sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK)
    die("raw commit", msg);
  double t = now() - t0;
  sqlite3_finalize(sv);
  sqlite3_finalize(st);
  return t;
}

static int
count_vm(const struct store_vm *v, void *opaque)
{
  (*(size_t *)opaque)++;
  return 0;
}

static int
count_tree(const struct store_tree_row *r, void *opaque)
{
  (*(size_t *)opaque)++;
  return 0;
}

static int
count_node(const struct store_node *node, void *opaque)
{
  (*(size_t *)opaque)++;
  return 0;
}

static void
row_print(const char *name, struct stats s, double base, bool target)
{
  char ratio[16] = "", of[16] = "", res[8] = "(info)";
  if (base > 0)
    snprintf(ratio, sizeof ratio, "%.2f", s.median / base);
  if (target) {
    snprintf(of, sizeof of, "%.3f", s.median / TARGET_S);
    snprintf(res, sizeof res, "%s", s.median < TARGET_S ? "pass" : "FAIL");
  }
  printf("%-46s %10.3f %6.0f%% %7s %9s %7s\n", name, s.median * 1000,
         s.spread * 100, ratio, of, res);
}

int
main(int argc, char **argv)
{
  int runs = 9;
  size_t n = 1000, vms = 1000;
  const char *dir = getenv("BENCH_TMPDIR");
  if (dir == NULL || dir[0] == '\0')
    dir = "/var/tmp";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--nodes") == 0 && i + 1 < argc)
      n = strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--vms") == 0 && i + 1 < argc)
      vms = strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      dir = argv[++i];
    else {
      fprintf(stderr,
              "usage: %s [--runs R] [--nodes N] [--vms V] [--dir DIR]\n",
              argv[0]);
      return 1;
    }
  }
  if (runs < 1 || n < 1 || n > 100000 || vms < 1 || vms > 100000) {
    fprintf(stderr, "bench-store: bad --runs, --nodes or --vms\n");
    return 1;
  }

  char tmp[512], path[600], rawpath[600];
  snprintf(tmp, sizeof tmp, "%s/bench-store.XXXXXX", dir);
  if (mkdtemp(tmp) == NULL) {
    perror(tmp);
    return 1;
  }
  snprintf(path, sizeof path, "%s/api.db", tmp);
  snprintf(rawpath, sizeof rawpath, "%s/raw.db", tmp);

  struct store_err e;
  struct store *st = store_open(path, &e);
  if (st == NULL)
    die("open", e.msg);

  /* The world. */
  struct world w = { .n = n };
  w.ids = calloc(n, sizeof *w.ids);
  w.uris = calloc(n, sizeof *w.uris);
  w.racks = calloc(n, sizeof *w.racks);
  w.zones = calloc(n, sizeof *w.zones);
  w.tnodes = calloc(n, sizeof *w.tnodes);
  struct plan_rows pr = {
    .vm_nodes = calloc(vms, sizeof(char *)),
    .rows = calloc(n, sizeof(struct store_tree_row)),
    .ups = calloc(n * TREE_MAX_UPSTREAMS, sizeof(char *)),
  };
  double *t_plan = calloc((size_t)runs, sizeof(double));
  double *t_store = calloc((size_t)runs, sizeof(double));
  double *t_total = calloc((size_t)runs, sizeof(double));
  double *t_raw = calloc((size_t)runs, sizeof(double));
  double *t_commit = calloc((size_t)runs, sizeof(double));
  double *t_get = calloc((size_t)runs, sizeof(double));
  double *t_vml = calloc((size_t)runs, sizeof(double));
  double *t_tree = calloc((size_t)runs, sizeof(double));
  double *t_nodes = calloc((size_t)runs, sizeof(double));
  double *t_upd = calloc((size_t)runs, sizeof(double));
  double *t_updb = calloc((size_t)runs, sizeof(double));
  if (!w.ids || !w.uris || !w.racks || !w.zones || !w.tnodes ||
      !pr.vm_nodes || !pr.rows || !pr.ups || !t_plan || !t_store ||
      !t_total || !t_raw || !t_commit || !t_get || !t_vml ||
      !t_tree || !t_nodes || !t_upd || !t_updb)
    die("setup", "out of memory");

  double t0 = now();
  if (store_begin(st, true, &e) < 0)
    die("begin", e.msg);
  for (size_t i = 0; i < n; i++) {
    snprintf(w.ids[i], sizeof w.ids[i], "node-%06zu", i);
    snprintf(w.uris[i], sizeof w.uris[i], "nbd://node-%06zu:10809", i);
    snprintf(w.racks[i], sizeof w.racks[i], "rack-%zu", i / 40);
    snprintf(w.zones[i], sizeof w.zones[i], "z%zu", (i / 40) % 4);
    char url[64];
    snprintf(url, sizeof url, "http://node-%06zu:8080", i);
    struct store_node node = {
      .id = w.ids[i], .nbd_uri = w.uris[i], .control_url = url,
      .rack = w.racks[i], .zone = w.zones[i], .vcpus = 64,
      .memory_mib = 262144, .disk_bytes = (uint64_t)4 << 40,
    };
    if (store_node_register(st, &node, NULL, &e) < 0)
      die("register node", e.msg);
    w.tnodes[i] = (struct tree_node){
      .id = w.ids[i], .rack = w.racks[i], .zone = w.zones[i],
    };
  }
  struct store_image img = {
    .name = "debian-12", .origin_nbd = origin_uri,
    .version = "5f2b0c1e9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b",
    .size = (uint64_t)2 << 30,
  };
  if (store_image_put(st, &img, NULL, &e) < 0 || store_commit(st, &e) < 0)
    die("register", e.msg);
  double t_reg = now() - t0;

  sqlite3 *raw;
  char *msg = NULL;
  if (sqlite3_open(rawpath, &raw) != SQLITE_OK ||
      sqlite3_exec(raw,
                   "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
                   "CREATE TABLE v (c TEXT, i INTEGER, id TEXT, name TEXT, "
                   "node TEXT); CREATE TABLE t (c TEXT, node TEXT, parent "
                   "TEXT, depth INTEGER, ups TEXT);",
                   NULL, NULL, &msg) != SQLITE_OK)
    die("raw setup", msg ? msg : sqlite3_errmsg(raw));

  struct tree_params tp;
  tree_params_init(&tp);
  char terr[256];
  char last[STORE_ID_LEN + 1] = "";
  for (int r = 0; r < runs; r++) {
    /* plan + persist */
    char name[32];
    snprintf(name, sizeof name, "bench%d", r);
    struct store_cluster c = {
      .name = name, .image = "debian-12", .count = (uint32_t)vms, .vcpus = 2,
      .memory_mib = 2048, .placement = STORE_PLACEMENT_SPREAD,
    };
    t0 = now();
    struct tree_plan *plan = tree_plan_build(w.tnodes, n, &tp, terr,
                                             sizeof terr);
    if (plan == NULL)
      die("plan", terr);
    plan_to_rows(&w, plan, &pr, vms);
    double t1 = now();
    if (store_cluster_create(st, &c, pr.vm_nodes, pr.rows, pr.n_rows, last,
                             NULL, &e) < 0)
      die("create", e.msg);
    double t2 = now();
    tree_plan_free(plan);
    t_plan[r] = t1 - t0;
    t_store[r] = t2 - t1;
    t_total[r] = t2 - t0;

    /* the floor */
    t_raw[r] = raw_insert(raw, &pr, vms, r);

    /* one small durable commit */
    t0 = now();
    if (store_cluster_set_state(st, last, 0, STORE_CLUSTER_PROVISIONING, NULL,
                                &e) < 0)
      die("set state", e.msg);
    t_commit[r] = now() - t0;

    /* reads */
    t0 = now();
    struct store_cluster *got = store_cluster_get(st, last, &e);
    t_get[r] = now() - t0;
    if (got == NULL || got->vms[STORE_VM_PENDING] != vms)
      die("get", got ? "wrong counts" : e.msg);
    free(got);
    size_t cnt = 0;
    t0 = now();
    if (store_vm_list_cluster(st, last, count_vm, &cnt, &e) < 0)
      die("list VMs", e.msg);
    t_vml[r] = now() - t0;
    if (cnt != vms)
      die("list VMs", "wrong count");
    cnt = 0;
    t0 = now();
    if (store_tree_list(st, last, count_tree, &cnt, &e) < 0)
      die("tree", e.msg);
    t_tree[r] = now() - t0;
    if (cnt != n)
      die("tree", "wrong count");
    cnt = 0;
    t0 = now();
    if (store_node_list(st, STORE_MASK(STORE_NODE_READY),
                        count_node, &cnt, &e) < 0)
      die("nodes", e.msg);
    t_nodes[r] = now() - t0;
    if (cnt != n)
      die("nodes", "wrong count");

    /* VM state updates: one by one (autocommit, NORMAL), then batched */
    char vid[64];
    t0 = now();
    for (size_t v = 0; v < vms; v++) {
      snprintf(vid, sizeof vid, "%s-%04zu", last, v);
      if (store_vm_set_state(st, vid, 0, STORE_VM_VOLUME_READY, NULL, &e) < 0)
        die("vm state", e.msg);
    }
    t_upd[r] = now() - t0;
    t0 = now();
    if (store_begin(st, false, &e) < 0)
      die("begin", e.msg);
    for (size_t v = 0; v < vms; v++) {
      snprintf(vid, sizeof vid, "%s-%04zu", last, v);
      if (store_vm_set_state(st, vid, 0, STORE_VM_RUNNING, NULL, &e) < 0)
        die("vm state", e.msg);
    }
    if (store_commit(st, &e) < 0)
      die("commit", e.msg);
    t_updb[r] = now() - t0;
  }

  struct stats s_store = summarise(t_store, runs);
  struct stats s_raw = summarise(t_raw, runs);
  printf("thunder store benchmark; SQLite %s; %d runs per row, medians\n",
         sqlite3_libversion(), runs);
  printf("%zu nodes (registered in %.1f ms, one batch), a cluster of %zu "
         "VMs spread over them, %zu tree rows;\nfile %s (WAL; FULL for the "
         "create)\n\n",
         n, t_reg * 1000, vms, pr.n_rows, path);
  printf("%-46s %10s %7s %7s %9s %7s\n", "row", "median ms", "spread",
         "ratio", "of 100ms", "result");
  row_print("store_cluster_create (the store part)", s_store, s_raw.median,
            true);
  row_print("tree_plan_build + rows (the planner part)",
            summarise(t_plan, runs), 0, false);
  row_print("plan + persist", summarise(t_total, runs), 0, true);
  printf("baselines, same run, same disk:\n");
  row_print("  raw sqlite3 inserts, no index (floor)", s_raw, 0, false);
  row_print("  one small durable commit (fdatasync)",
            summarise(t_commit, runs), 0, false);
  printf("around it (info):\n");
  row_print("  store_cluster_get (VM counts)", summarise(t_get, runs), 0,
            false);
  row_print("  store_vm_list_cluster", summarise(t_vml, runs), 0, false);
  row_print("  store_tree_list", summarise(t_tree, runs), 0, false);
  row_print("  store_node_list with usage", summarise(t_nodes, runs), 0,
            false);
  row_print("  VM state updates, one commit each", summarise(t_upd, runs), 0,
            false);
  row_print("  VM state updates, one batch", summarise(t_updb, runs), 0,
            false);
  struct stat sb;
  if (stat(path, &sb) == 0)
    printf("\nat the end the file held %d clusters of %zu VMs, all live: "
           "%.1f MiB\n",
           runs, vms, (double)sb.st_size / (1 << 20));
  printf("ratio: / the raw floor; of 100ms: median / 100 ms (issue 5: plan "
         "and persist a 1,000-VM cluster over 1,000 nodes in < 100 ms)\n");

  sqlite3_close(raw);
  store_close(st);
  const char *sfx[] = { "", "-wal", "-shm" };
  for (size_t i = 0; i < 3; i++) {
    char p[700];
    snprintf(p, sizeof p, "%s%s", path, sfx[i]);
    unlink(p);
    snprintf(p, sizeof p, "%s%s", rawpath, sfx[i]);
    unlink(p);
  }
  rmdir(tmp);
  free(w.ids);
  free(w.uris);
  free(w.racks);
  free(w.zones);
  free(w.tnodes);
  free(pr.vm_nodes);
  free(pr.rows);
  free(pr.ups);
  double *ts[] = { t_plan, t_store, t_total, t_raw, t_commit, t_get,
                   t_vml, t_tree, t_nodes, t_upd, t_updb };
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
    free(ts[i]);
  return 0;
}
