/* thunder — unit tests of thunder-api's SQLite store (src/api/store.c).
 *
 * Every test works on its own file in a private temp directory.  Round
 * trips of every function; migrations from an empty file and from a
 * hand-made version 1; refusals (newer schema, garbage, another program's
 * database) with their messages; idempotency keys; the cascade of a
 * delete; batches; a crash test (a child creating clusters is killed with
 * SIGKILL at random times: every cluster it reported is there, and every
 * cluster has all its VMs and tree rows); two handles, one writing and one
 * reading, in two threads, without errors.
 */
#include <CUnit/Basic.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cunit-run.h"
#include "store.h"

#define VERSION_A                                                              \
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define VERSION_B                                                              \
  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static char t_dir[64];
static char t_path[128];
static int t_seq;

static int
suite_init(void)
{
  snprintf(t_dir, sizeof t_dir, "/tmp/test-store.XXXXXX");
  return mkdtemp(t_dir) ? 0 : -1;
}

static void
remove_db(const char *path)
{
  char p[160];
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-journal", path);
  unlink(p);
}

static int
suite_clean(void)
{
  remove_db(t_path);
  rmdir(t_dir);
  return 0;
}

/* Each test gets a new file name. */
static void
test_setup(void)
{
  if (t_path[0])
    remove_db(t_path);
  snprintf(t_path, sizeof t_path, "%s/t%d.db", t_dir, ++t_seq);
}

/* ---- helpers ---- */

static struct store *
open_ok(void)
{
  struct store_err e;
  struct store *st = store_open(t_path, &e);
  if (st == NULL)
    fprintf(stderr, "store_open: %s\n", e.msg);
  CU_ASSERT_FATAL(st != NULL);
  return st;
}

/* Runs SQL on the file through a separate raw handle. */
static void
raw_exec(const char *sql)
{
  sqlite3 *db;
  CU_ASSERT_FATAL(sqlite3_open(t_path, &db) == SQLITE_OK);
  char *msg = NULL;
  int r = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (r != SQLITE_OK)
    fprintf(stderr, "raw_exec: %s: %s\n", sql, msg);
  sqlite3_free(msg);
  sqlite3_close(db);
  CU_ASSERT_FATAL(r == SQLITE_OK);
}

/* The first column of the first row of sql, as an integer. */
static int64_t
raw_int(const char *sql)
{
  sqlite3 *db;
  sqlite3_stmt *s;
  int64_t v = -1;
  CU_ASSERT_FATAL(sqlite3_open(t_path, &db) == SQLITE_OK);
  CU_ASSERT_FATAL(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK);
  if (sqlite3_step(s) == SQLITE_ROW)
    v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

static char *
raw_text(const char *sql)
{
  sqlite3 *db;
  sqlite3_stmt *s;
  char *v = NULL;
  CU_ASSERT_FATAL(sqlite3_open(t_path, &db) == SQLITE_OK);
  CU_ASSERT_FATAL(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK);
  if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
    v = strdup((const char *)sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

static void
add_node(struct store *st, const char *id, const char *rack)
{
  char uri[128], url[128];
  snprintf(uri, sizeof uri, "nbd://%s:10809", id);
  snprintf(url, sizeof url, "http://%s:8080", id);
  struct store_node n = {
    .id = id, .nbd_uri = uri, .control_url = url, .rack = rack,
    .zone = "z1", .vcpus = 16, .memory_mib = 65536,
    .disk_bytes = (uint64_t)1 << 40,
  };
  struct store_err e;
  CU_ASSERT_EQUAL_FATAL(store_node_register(st, &n, NULL, &e), STORE_OK);
}

static void
add_image(struct store *st, const char *name, const char *version,
          uint64_t size)
{
  struct store_image img = { .name = name, .origin_nbd = "nbd://origin:10809",
                             .version = version, .size = size };
  struct store_err e;
  CU_ASSERT_EQUAL_FATAL(store_image_put(st, &img, NULL, &e), STORE_OK);
}

/* A standard world: image "deb" (1 GiB), nodes n0..n(k−1) in racks r0/r1. */
static void
world(struct store *st, int k)
{
  add_image(st, "deb", VERSION_A, (uint64_t)1 << 30);
  for (int i = 0; i < k; i++) {
    char id[16];
    snprintf(id, sizeof id, "n%d", i);
    add_node(st, id, i % 2 ? "r1" : "r0");
  }
}

/* Creates cluster name of count VMs over nodes n0..n(k−1) round-robin, with
 * a chain tree over the nodes used; returns the code. */
static int
create(struct store *st, const char *name, uint32_t count, int k,
       const char *key, const char *hash, char id[STORE_ID_LEN + 1],
       bool *replayed, struct store_err *e)
{
  static char node_names[64][16];
  const char *vm_nodes[512];
  int used = (int)count < k ? (int)count : k;
  for (int i = 0; i < k && i < 64; i++)
    snprintf(node_names[i], sizeof node_names[i], "n%d", i);
  for (uint32_t i = 0; i < count && i < 512; i++)
    vm_nodes[i] = node_names[i % (uint32_t)k];
  struct store_tree_row rows[64];
  static char uris[64][32];
  const char *ups[64][64];
  for (int i = 0; i < used; i++) {
    snprintf(uris[i], sizeof uris[i], "nbd://n%d:10809", i);
    rows[i].node_id = node_names[i];
    rows[i].parent = i == 0 ? NULL : node_names[i - 1];
    rows[i].depth = (uint32_t)i + 1;
    size_t n = 0;
    for (int a = i - 1; a >= 0; a--)
      ups[i][n++] = uris[a];
    ups[i][n++] = "nbd://origin:10809";
    rows[i].upstreams = ups[i];
    rows[i].n_upstreams = n;
    rows[i].upstreams_json = NULL;
  }
  struct store_cluster c = {
    .name = name, .image = "deb", .count = count, .vcpus = 2,
    .memory_mib = 1024, .placement = STORE_PLACEMENT_SPREAD,
    .idempotency_key = key, .request_hash = hash,
  };
  return store_cluster_create(st, &c, vm_nodes, rows, (size_t)used, id,
                              replayed, e);
}

/* Collects names and states from the list callbacks. */
struct seen {
  int n;
  char ids[64][80];
  int states[64];
};

static int
seen_node(const struct store_node *n, void *opaque)
{
  struct seen *s = opaque;
  if (s->n < 64) {
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", n->id);
    s->states[s->n] = (int)n->state;
  }
  s->n++;
  return 0;
}

static int
seen_cluster(const struct store_cluster *c, void *opaque)
{
  struct seen *s = opaque;
  if (s->n < 64) {
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", c->id);
    s->states[s->n] = (int)c->state;
  }
  s->n++;
  return 0;
}

static int
seen_vm(const struct store_vm *v, void *opaque)
{
  struct seen *s = opaque;
  if (s->n < 64) {
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", v->name);
    s->states[s->n] = (int)v->state;
  }
  s->n++;
  return 0;
}

static int
seen_image(const struct store_image *i, void *opaque)
{
  struct seen *s = opaque;
  if (s->n < 64)
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", i->name);
  s->n++;
  return 0;
}

static int
seen_id(const char *id, void *opaque)
{
  struct seen *s = opaque;
  if (s->n < 64)
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", id);
  s->n++;
  return 0;
}

static int
stop_first(const struct store_vm *v, void *opaque)
{
  (*(int *)opaque)++;
  return 1;
}

/* ---- the file ---- */

static void
test_open_new(void)
{
  struct store *st = open_ok();
  CU_ASSERT_STRING_EQUAL(store_path(st), t_path);
  store_close(st);
  CU_ASSERT_EQUAL(raw_int("PRAGMA user_version"),
                  (int64_t)store_schema_version());
  CU_ASSERT_EQUAL(raw_int("PRAGMA application_id"), 0x54484e44);
  char *mode = raw_text("PRAGMA journal_mode");
  CU_ASSERT_STRING_EQUAL(mode, "wal");
  free(mode);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM sqlite_schema WHERE "
                          "type = 'table' AND name IN ('nodes', 'images', "
                          "'clusters', 'vms', 'tree', 'events')"),
                  6);
  /* Opening again migrates nothing and keeps the version. */
  st = open_ok();
  store_close(st);
  CU_ASSERT_EQUAL(raw_int("PRAGMA user_version"),
                  (int64_t)store_schema_version());
  CU_ASSERT_PTR_NULL(store_migration_sql(0));
  CU_ASSERT_PTR_NULL(store_migration_sql(store_schema_version() + 1));
  store_close(NULL);
}

static void
test_open_empty_file(void)
{
  int fd = open(t_path, O_CREAT | O_WRONLY, 0600);
  CU_ASSERT_FATAL(fd >= 0);
  close(fd);
  struct store *st = open_ok();
  store_close(st);
  CU_ASSERT_EQUAL(raw_int("PRAGMA user_version"),
                  (int64_t)store_schema_version());
}

static void
test_migrate_from_v1(void)
{
  CU_ASSERT_FATAL(store_schema_version() >= 2);
  /* A version-1 file made from the first step alone, with data. */
  raw_exec(store_migration_sql(1));
  raw_exec("PRAGMA user_version = 1");
  raw_exec("INSERT INTO nodes VALUES ('old', 'nbd://old:10809', "
           "'http://old:8080', 'r', 'z', 4, 4096, 1000, 1, 2, 'ready')");
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM sqlite_schema WHERE "
                          "name = 'events'"),
                  0);
  struct store *st = open_ok();
  struct store_err e;
  struct store_node *n = store_node_get(st, "old", &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  CU_ASSERT_STRING_EQUAL(n->nbd_uri, "nbd://old:10809");
  CU_ASSERT_EQUAL(n->vcpus, 4);
  CU_ASSERT_EQUAL(n->registered_at, 1);
  free(n);
  store_close(st);
  CU_ASSERT_EQUAL(raw_int("PRAGMA user_version"),
                  (int64_t)store_schema_version());
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM sqlite_schema WHERE "
                          "name = 'events'"),
                  1);
}

static void
test_refuse_newer(void)
{
  store_close(open_ok());
  char sql[64];
  unsigned newer = store_schema_version() + 5;
  snprintf(sql, sizeof sql, "PRAGMA user_version = %u", newer);
  raw_exec(sql);
  struct store_err e;
  CU_ASSERT_PTR_NULL(store_open(t_path, &e));
  CU_ASSERT_EQUAL(e.code, STORE_ERROR);
  char want[256];
  snprintf(want, sizeof want,
           "%s: schema version %u is newer than this program's %u; refusing "
           "to open it (use a newer thunder-api)",
           t_path, newer, store_schema_version());
  CU_ASSERT_STRING_EQUAL(e.msg, want);
  /* Nothing was changed. */
  CU_ASSERT_EQUAL(raw_int("PRAGMA user_version"), newer);
}

static void
test_refuse_garbage(void)
{
  FILE *f = fopen(t_path, "w");
  CU_ASSERT_FATAL(f != NULL);
  for (int i = 0; i < 1000; i++)
    fprintf(f, "this is not a database, line %d\n", i);
  fclose(f);
  struct store_err e;
  CU_ASSERT_PTR_NULL(store_open(t_path, &e));
  CU_ASSERT_EQUAL(e.code, STORE_ERROR);
  char want[256];
  snprintf(want, sizeof want,
           "%s: not a SQLite database (file is not a database)", t_path);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
}

static void
test_refuse_foreign(void)
{
  raw_exec("CREATE TABLE t (x)");
  struct store_err e;
  CU_ASSERT_PTR_NULL(store_open(t_path, &e));
  CU_ASSERT_EQUAL(e.code, STORE_ERROR);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, t_path));
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "another program"));
  remove_db(t_path);
  raw_exec("PRAGMA application_id = 1234");
  CU_ASSERT_PTR_NULL(store_open(t_path, &e));
  char want[256];
  snprintf(want, sizeof want,
           "%s: a SQLite database of another program (application_id "
           "0x000004d2), not thunder-api's",
           t_path);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
}

static void
test_refuse_unopenable(void)
{
  struct store_err e;
  char p[200];
  snprintf(p, sizeof p, "%s/no/such/dir/x.db", t_dir);
  CU_ASSERT_PTR_NULL(store_open(p, &e));
  CU_ASSERT_EQUAL(e.code, STORE_ERROR);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, p));
  CU_ASSERT_PTR_NULL(store_open("", &e));
  CU_ASSERT_EQUAL(e.code, STORE_INVALID);
}

/* ---- names ---- */

static void
test_names(void)
{
  for (int i = 0; i < STORE_CLUSTER_STATES; i++) {
    enum store_cluster_state s;
    CU_ASSERT_EQUAL(store_cluster_state_from_name(
                        store_cluster_state_name((enum store_cluster_state)i),
                        &s),
                    0);
    CU_ASSERT_EQUAL((int)s, i);
  }
  for (int i = 0; i < STORE_VM_STATES; i++) {
    enum store_vm_state s;
    CU_ASSERT_EQUAL(store_vm_state_from_name(
                        store_vm_state_name((enum store_vm_state)i), &s),
                    0);
    CU_ASSERT_EQUAL((int)s, i);
  }
  enum store_placement p;
  CU_ASSERT_EQUAL(store_placement_from_name("pack", &p), 0);
  CU_ASSERT_EQUAL(p, STORE_PLACEMENT_PACK);
  CU_ASSERT_EQUAL(store_placement_from_name("random", &p), -1);
  CU_ASSERT_STRING_EQUAL(store_node_state_name(STORE_NODE_DOWN), "down");
  CU_ASSERT_STRING_EQUAL(store_vm_state_name(STORE_VM_VOLUME_READY),
                         "volume_ready");
  CU_ASSERT_STRING_EQUAL(store_placement_name(STORE_PLACEMENT_SPREAD),
                         "spread");
}

/* ---- nodes ---- */

static void
test_nodes(void)
{
  struct store *st = open_ok();
  struct store_err e;
  struct store_node n = {
    .id = "a", .nbd_uri = "nbd://10.0.0.5:10809",
    .control_url = "http://10.0.0.5:8080", .rack = "r1", .zone = "z1",
    .vcpus = 8, .memory_mib = 32768, .disk_bytes = 500000000000,
  };
  bool created = false;
  CU_ASSERT_EQUAL(store_node_register(st, &n, &created, &e), STORE_OK);
  CU_ASSERT_TRUE(created);
  struct store_node *g = store_node_get(st, "a", &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(g);
  CU_ASSERT_STRING_EQUAL(g->id, "a");
  CU_ASSERT_STRING_EQUAL(g->nbd_uri, "nbd://10.0.0.5:10809");
  CU_ASSERT_STRING_EQUAL(g->control_url, "http://10.0.0.5:8080");
  CU_ASSERT_STRING_EQUAL(g->rack, "r1");
  CU_ASSERT_STRING_EQUAL(g->zone, "z1");
  CU_ASSERT_EQUAL(g->vcpus, 8);
  CU_ASSERT_EQUAL(g->memory_mib, 32768);
  CU_ASSERT_EQUAL(g->disk_bytes, 500000000000);
  CU_ASSERT_EQUAL(g->state, STORE_NODE_READY);
  CU_ASSERT_EQUAL(g->live_vms, 0);
  CU_ASSERT_EQUAL(g->used_vcpus, 0);
  CU_ASSERT_TRUE(g->registered_at > 1600000000000);
  CU_ASSERT_EQUAL(g->registered_at, g->last_heartbeat_at);
  int64_t reg = g->registered_at;
  free(g);

  /* Re-registering updates; registered_at stays; NULL labels are "". */
  usleep(2000);
  n.nbd_uri = "nbd://10.0.0.6:10809";
  n.rack = NULL;
  n.vcpus = 4;
  CU_ASSERT_EQUAL(store_node_mark_down(st, "a", &e), STORE_OK);
  CU_ASSERT_EQUAL(store_node_register(st, &n, &created, &e), STORE_OK);
  CU_ASSERT_FALSE(created);
  g = store_node_get(st, "a", &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(g);
  CU_ASSERT_STRING_EQUAL(g->nbd_uri, "nbd://10.0.0.6:10809");
  CU_ASSERT_STRING_EQUAL(g->rack, "");
  CU_ASSERT_EQUAL(g->vcpus, 4);
  CU_ASSERT_EQUAL(g->registered_at, reg);
  CU_ASSERT_TRUE(g->last_heartbeat_at > reg);
  CU_ASSERT_EQUAL(g->state, STORE_NODE_READY);
  free(g);

  /* Another node may not advertise a's NBD address (any case of its
   * host) while a is ready; once a is down it may. */
  struct store_node b = n;
  b.id = "b";
  b.control_url = "http://10.0.0.7:8080";
  b.nbd_uri = "nbd://10.0.0.6:10809";
  CU_ASSERT_EQUAL(store_node_register(st, &b, &created, &e), STORE_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "already advertised by node \"a\""));
  b.nbd_uri = "NBD://10.0.0.6:10809";
  CU_ASSERT_EQUAL(store_node_register(st, &b, &created, &e), STORE_CONFLICT);
  CU_ASSERT_PTR_NULL(store_node_get(st, "b", &e));
  CU_ASSERT_EQUAL(store_node_mark_down(st, "a", &e), STORE_OK);
  CU_ASSERT_EQUAL(store_node_register(st, &b, &created, &e), STORE_OK);
  CU_ASSERT_TRUE(created);
  /* a, back with b's address, is refused now. */
  CU_ASSERT_EQUAL(store_node_register(st, &n, &created, &e), STORE_CONFLICT);
  /* ... and so is its heartbeat (it stays down), naming b. */
  CU_ASSERT_EQUAL(store_node_heartbeat(st, "a", &e), STORE_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "heartbeat of node \"a\": nbd_uri "
                                "NBD://10.0.0.6:10809 is already advertised "
                                "by node \"b\", which is ready"));
  g = store_node_get(st, "a", &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(g);
  CU_ASSERT_EQUAL(g->state, STORE_NODE_DOWN);
  free(g);
  /* The same for a control URL (any case): the calls for one node would
   * go to the other. */
  b.nbd_uri = "nbd://10.0.0.7:10809";
  b.control_url = "HTTP://10.0.0.5:8080";
  CU_ASSERT_EQUAL(store_node_register(st, &b, &created, &e), STORE_OK);
  CU_ASSERT_EQUAL(store_node_heartbeat(st, "a", &e), STORE_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "control_url HTTP://10.0.0.5:8080 is "
                                "already advertised by node \"b\""));
  CU_ASSERT_EQUAL(store_node_register(st, &n, &created, &e), STORE_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "registration of node \"a\": "
                                "control_url HTTP://10.0.0.5:8080"));
  b.control_url = "http://10.0.0.7:8080";
  CU_ASSERT_EQUAL(store_node_register(st, &b, &created, &e), STORE_OK);
  CU_ASSERT_EQUAL(store_node_register(st, &n, &created, &e), STORE_OK);

  /* Heartbeat; unknown nodes. */
  CU_ASSERT_EQUAL(store_node_heartbeat(st, "a", &e), STORE_OK);
  CU_ASSERT_EQUAL(store_node_heartbeat(st, "zz", &e), STORE_NOT_FOUND);
  char want[256];
  snprintf(want, sizeof want, "%s: heartbeat: node \"zz\" is not registered",
           t_path);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
  CU_ASSERT_EQUAL(store_node_mark_down(st, "zz", &e), STORE_NOT_FOUND);
  CU_ASSERT_PTR_NULL(store_node_get(st, "zz", &e));
  CU_ASSERT_EQUAL(e.code, STORE_NOT_FOUND);
  n.id = NULL;
  CU_ASSERT_EQUAL(store_node_register(st, &n, NULL, &e), STORE_INVALID);

  /* Down, list by state, heartbeat brings it back. */
  add_node(st, "b", "r2");
  add_node(st, "c", "r2");
  CU_ASSERT_EQUAL(store_node_mark_down(st, "b", &e), STORE_OK);
  struct seen s = { 0 };
  CU_ASSERT_EQUAL(store_node_list(st, 0, seen_node, &s, &e), STORE_OK);
  CU_ASSERT_EQUAL(s.n, 3);
  CU_ASSERT_STRING_EQUAL(s.ids[0], "a");
  CU_ASSERT_STRING_EQUAL(s.ids[1], "b");
  CU_ASSERT_EQUAL(s.states[1], STORE_NODE_DOWN);
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_node_list(st, STORE_MASK(STORE_NODE_READY), seen_node,
                                  &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(s.n, 2);
  CU_ASSERT_STRING_EQUAL(s.ids[1], "c");
  CU_ASSERT_EQUAL(store_node_heartbeat(st, "b", &e), STORE_OK);

  /* Expiry: nothing is older than 0; everything is older than the future. */
  size_t count = 99;
  CU_ASSERT_EQUAL(store_nodes_expire(st, 0, NULL, NULL, &count, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(count, 0);
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_nodes_expire(st, INT64_MAX, seen_id, &s, &count, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(count, 3);
  CU_ASSERT_EQUAL(s.n, 3);
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_node_list(st, STORE_MASK(STORE_NODE_DOWN), seen_node,
                                  &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(s.n, 3);
  store_close(st);
}

/* ---- images ---- */

static void
test_images(void)
{
  struct store *st = open_ok();
  struct store_err e;
  struct store_image img = { .name = "deb12", .origin_nbd = "nbd://o:10809",
                             .version = VERSION_A, .size = 123456789 };
  bool created = false;
  CU_ASSERT_EQUAL(store_image_put(st, &img, &created, &e), STORE_OK);
  CU_ASSERT_TRUE(created);
  struct store_image *g = store_image_get(st, "deb12", &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(g);
  CU_ASSERT_STRING_EQUAL(g->name, "deb12");
  CU_ASSERT_STRING_EQUAL(g->origin_nbd, "nbd://o:10809");
  CU_ASSERT_STRING_EQUAL(g->version, VERSION_A);
  CU_ASSERT_EQUAL(g->size, 123456789);
  int64_t at = g->registered_at;
  free(g);

  /* The same again: not created, registered_at kept; a new version: kept
   * name, new fields, new time. */
  usleep(2000);
  CU_ASSERT_EQUAL(store_image_put(st, &img, &created, &e), STORE_OK);
  CU_ASSERT_FALSE(created);
  g = store_image_get(st, "deb12", &e);
  CU_ASSERT_EQUAL(g->registered_at, at);
  free(g);
  img.version = VERSION_B;
  img.size = 5;
  CU_ASSERT_EQUAL(store_image_put(st, &img, &created, &e), STORE_OK);
  CU_ASSERT_FALSE(created);
  g = store_image_get(st, "deb12", &e);
  CU_ASSERT_STRING_EQUAL(g->version, VERSION_B);
  CU_ASSERT_EQUAL(g->size, 5);
  CU_ASSERT_TRUE(g->registered_at > at);
  free(g);

  img.version = "abc";
  CU_ASSERT_EQUAL(store_image_put(st, &img, NULL, &e), STORE_INVALID);
  char want[256];
  snprintf(want, sizeof want,
           "%s: register image \"deb12\": version is not 64 hex digits",
           t_path);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
  CU_ASSERT_PTR_NULL(store_image_get(st, "nope", &e));
  CU_ASSERT_EQUAL(e.code, STORE_NOT_FOUND);

  add_image(st, "alpine", VERSION_A, 1);
  struct seen s = { 0 };
  CU_ASSERT_EQUAL(store_image_list(st, seen_image, &s, &e), STORE_OK);
  CU_ASSERT_EQUAL(s.n, 2);
  CU_ASSERT_STRING_EQUAL(s.ids[0], "alpine");
  CU_ASSERT_STRING_EQUAL(s.ids[1], "deb12");
  store_close(st);
}

/* ---- clusters ---- */

struct tree_seen {
  int n;
  char node[8][16];
  char parent[8][16];
  uint32_t depth[8];
  size_t n_up[8];
  char up[8][4][64];
  char json[8][256];
};

static int
seen_tree(const struct store_tree_row *r, void *opaque)
{
  struct tree_seen *t = opaque;
  if (t->n < 8) {
    snprintf(t->node[t->n], 16, "%s", r->node_id);
    snprintf(t->parent[t->n], 16, "%s", r->parent ? r->parent : "(origin)");
    t->depth[t->n] = r->depth;
    t->n_up[t->n] = r->n_upstreams;
    for (size_t i = 0; i < r->n_upstreams && i < 4; i++)
      snprintf(t->up[t->n][i], 64, "%s", r->upstreams[i]);
    snprintf(t->json[t->n], 256, "%s", r->upstreams_json);
  }
  t->n++;
  return 0;
}

static void
test_cluster_create_get(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 3);
  const char *vm_nodes[5] = { "n0", "n1", "n2", "n0", "n1" };
  const char *up0[] = { "nbd://origin:10809" };
  const char *up1[] = { "nbd://n0:10809", "nbd://origin:10809" };
  const char *up2[] = { "nbd://n1:10809?x=\"q\"\\\x01é", "nbd://n0:10809",
                        "nbd://origin:10809" };
  struct store_tree_row tree[] = {
    { .node_id = "n0", .depth = 1, .upstreams = up0, .n_upstreams = 1 },
    { .node_id = "n1", .parent = "n0", .depth = 2, .upstreams = up1,
      .n_upstreams = 2 },
    { .node_id = "n2", .parent = "n1", .depth = 3, .upstreams = up2,
      .n_upstreams = 3 },
  };
  struct store_cluster c = {
    .name = "web", .image = "deb", .count = 5, .vcpus = 2,
    .memory_mib = 2048, .disk_gib = 20, .placement = STORE_PLACEMENT_PACK,
    .fanout = 3, .request_hash = "h1",
  };
  char id[STORE_ID_LEN + 1];
  bool replayed = true;
  CU_ASSERT_EQUAL_FATAL(
      store_cluster_create(st, &c, vm_nodes, tree, 3, id, &replayed, &e),
      STORE_OK);
  CU_ASSERT_FALSE(replayed);
  CU_ASSERT_EQUAL(strlen(id), STORE_ID_LEN);
  CU_ASSERT_EQUAL(strspn(id, "0123456789abcdef"), STORE_ID_LEN);

  struct store_cluster *g = store_cluster_get(st, id, &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(g);
  CU_ASSERT_STRING_EQUAL(g->id, id);
  CU_ASSERT_STRING_EQUAL(g->name, "web");
  CU_ASSERT_STRING_EQUAL(g->image, "deb");
  CU_ASSERT_STRING_EQUAL(g->image_version, VERSION_A);
  CU_ASSERT_EQUAL(g->count, 5);
  CU_ASSERT_EQUAL(g->vcpus, 2);
  CU_ASSERT_EQUAL(g->memory_mib, 2048);
  CU_ASSERT_EQUAL(g->disk_gib, 20);
  CU_ASSERT_EQUAL(g->placement, STORE_PLACEMENT_PACK);
  CU_ASSERT_EQUAL(g->fanout, 3);
  CU_ASSERT_PTR_NULL(g->idempotency_key);
  CU_ASSERT_STRING_EQUAL(g->request_hash, "h1");
  CU_ASSERT_EQUAL(g->state, STORE_CLUSTER_PENDING);
  CU_ASSERT_TRUE(g->created_at > 1600000000000);
  CU_ASSERT_EQUAL(g->created_at, g->updated_at);
  CU_ASSERT_EQUAL(g->finished_at, 0);
  CU_ASSERT_PTR_NULL(g->error);
  CU_ASSERT_EQUAL(g->vms[STORE_VM_PENDING], 5);
  CU_ASSERT_EQUAL(g->vms[STORE_VM_RUNNING], 0);
  free(g);

  /* The VMs, by index, named NAME-IIII and with ids ID-IIII. */
  struct seen s = { 0 };
  CU_ASSERT_EQUAL(store_vm_list_cluster(st, id, seen_vm, &s, &e), STORE_OK);
  CU_ASSERT_EQUAL(s.n, 5);
  CU_ASSERT_STRING_EQUAL(s.ids[0], "web-0000");
  CU_ASSERT_STRING_EQUAL(s.ids[4], "web-0004");
  char vid[64];
  snprintf(vid, sizeof vid, "%s-0003", id);
  struct store_vm *v = store_vm_get(st, vid, &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(v);
  CU_ASSERT_STRING_EQUAL(v->id, vid);
  CU_ASSERT_STRING_EQUAL(v->cluster_id, id);
  CU_ASSERT_EQUAL(v->index, 3);
  CU_ASSERT_STRING_EQUAL(v->name, "web-0003");
  CU_ASSERT_STRING_EQUAL(v->node_id, "n0");
  CU_ASSERT_EQUAL(v->state, STORE_VM_PENDING);
  CU_ASSERT_PTR_NULL(v->reason);
  CU_ASSERT_EQUAL(v->running_at, 0);
  free(v);
  int calls = 0;
  CU_ASSERT_EQUAL(store_vm_list_cluster(st, id, stop_first, &calls, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(calls, 1);
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_vm_list_cluster(st, "nope", seen_vm, &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(s.n, 0);

  /* The tree, by depth, upstream lists exactly as given. */
  struct tree_seen t = { 0 };
  CU_ASSERT_EQUAL(store_tree_list(st, id, seen_tree, &t, &e), STORE_OK);
  CU_ASSERT_EQUAL_FATAL(t.n, 3);
  CU_ASSERT_STRING_EQUAL(t.node[0], "n0");
  CU_ASSERT_STRING_EQUAL(t.parent[0], "(origin)");
  CU_ASSERT_EQUAL(t.depth[0], 1);
  CU_ASSERT_STRING_EQUAL(t.json[0], "[\"nbd://origin:10809\"]");
  CU_ASSERT_STRING_EQUAL(t.node[2], "n2");
  CU_ASSERT_STRING_EQUAL(t.parent[2], "n1");
  CU_ASSERT_EQUAL(t.depth[2], 3);
  CU_ASSERT_EQUAL(t.n_up[2], 3);
  CU_ASSERT_STRING_EQUAL(t.up[2][0], up2[0]);
  CU_ASSERT_STRING_EQUAL(t.up[2][2], "nbd://origin:10809");
  CU_ASSERT_STRING_EQUAL(t.up[1][0], "nbd://n0:10809");

  /* Usage: n0 has VMs 0 and 3, n2 one; disk_gib 20 each. */
  struct store_node *n = store_node_get(st, "n0", &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  CU_ASSERT_EQUAL(n->live_vms, 2);
  CU_ASSERT_EQUAL(n->used_vcpus, 4);
  CU_ASSERT_EQUAL(n->used_memory_mib, 4096);
  CU_ASSERT_EQUAL(n->used_disk_bytes, (uint64_t)40 << 30);
  free(n);

  /* A second cluster without disk_gib reserves the image's size. */
  CU_ASSERT_EQUAL(create(st, "db", 1, 3, NULL, NULL, id, NULL, &e), STORE_OK);
  n = store_node_get(st, "n0", &e);
  CU_ASSERT_EQUAL(n->live_vms, 3);
  CU_ASSERT_EQUAL(n->used_vcpus, 6);
  CU_ASSERT_EQUAL(n->used_disk_bytes, ((uint64_t)40 << 30) + (1u << 30));
  free(n);
  n = store_node_get(st, "n2", &e);
  CU_ASSERT_EQUAL(n->live_vms, 1);
  free(n);

  /* Failed and deleted VMs free their share. */
  snprintf(vid, sizeof vid, "%s-0000", id);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid, 0, STORE_VM_FAILED, "boom", &e),
                  STORE_OK);
  n = store_node_get(st, "n0", &e);
  CU_ASSERT_EQUAL(n->live_vms, 2);
  CU_ASSERT_EQUAL(n->used_vcpus, 4);
  free(n);
  store_close(st);
}

static int
usage_cb(const struct store_node *n, void *opaque)
{
  uint64_t *sum = opaque;
  sum[0] += n->used_vcpus;
  sum[1] += n->live_vms;
  return 0;
}

static void
test_node_usage_list(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 4);
  char id[STORE_ID_LEN + 1];
  CU_ASSERT_EQUAL(create(st, "a", 10, 4, NULL, NULL, id, NULL, &e), STORE_OK);
  CU_ASSERT_EQUAL(create(st, "b", 3, 2, NULL, NULL, id, NULL, &e), STORE_OK);
  uint64_t sum[2] = { 0, 0 };
  CU_ASSERT_EQUAL(store_node_list(st, 0, usage_cb, sum, &e), STORE_OK);
  CU_ASSERT_EQUAL(sum[0], 13 * 2);
  CU_ASSERT_EQUAL(sum[1], 13);
  /* Live VMs on a node, by state. */
  struct seen s = { 0 };
  CU_ASSERT_EQUAL(store_vm_list_node(st, "n1", 0, seen_vm, &s, &e), STORE_OK);
  CU_ASSERT_EQUAL_FATAL(s.n, 3 + 1);
  /* by cluster (ids are random) and index */
  int a0 = strcmp(s.ids[0], "b-0001") == 0 ? 1 : 0;
  CU_ASSERT_STRING_EQUAL(s.ids[a0], "a-0001");
  CU_ASSERT_STRING_EQUAL(s.ids[a0 + 1], "a-0005");
  CU_ASSERT_STRING_EQUAL(s.ids[a0 + 2], "a-0009");
  CU_ASSERT_STRING_EQUAL(s.ids[a0 ? 0 : 3], "b-0001");
  char vid[64];
  snprintf(vid, sizeof vid, "%s-0001", id); /* b-0001 */
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid, 0, STORE_VM_RUNNING, NULL, &e),
                  STORE_OK);
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_vm_list_node(st, "n1", STORE_MASK(STORE_VM_RUNNING),
                                     seen_vm, &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(s.n, 1);
  CU_ASSERT_STRING_EQUAL(s.ids[0], "b-0001");
  /* n1 fails: its pending VMs first, then the rest. */
  size_t moved = 0;
  CU_ASSERT_EQUAL(store_vm_set_state_on_node(
                      st, "n1", STORE_MASK(STORE_VM_PENDING), STORE_VM_FAILED,
                      "node n1 is down", &moved, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(moved, 3);
  CU_ASSERT_EQUAL(store_vm_set_state_on_node(st, "n1", 0, STORE_VM_FAILED,
                                             "node n1 is down", &moved, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(moved, 1);
  struct store_vm *v = store_vm_get(st, vid, &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(v);
  CU_ASSERT_EQUAL(v->state, STORE_VM_FAILED);
  CU_ASSERT_STRING_EQUAL(v->reason, "node n1 is down");
  free(v);
  /* Failed VMs are history: not listed, not moved again. */
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_vm_list_node(st, "n1", 0, seen_vm, &s, &e), STORE_OK);
  CU_ASSERT_EQUAL(s.n, 0);
  sum[0] = sum[1] = 0;
  CU_ASSERT_EQUAL(store_node_list(st, 0, usage_cb, sum, &e), STORE_OK);
  CU_ASSERT_EQUAL(sum[1], 9);
  /* Nothing left to move. */
  CU_ASSERT_EQUAL(store_vm_set_state_on_node(
                      st, "n1", STORE_VM_LIVE, STORE_VM_FAILED, "again",
                      &moved, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(moved, 0);
  store_close(st);
}

static void
test_cluster_errors(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 2);
  char id[STORE_ID_LEN + 1];
  char want[512];

  /* Unknown image: 404; nothing written. */
  const char *vm_nodes[2] = { "n0", "n1" };
  struct store_cluster c = { .name = "x", .image = "nope", .count = 2,
                             .vcpus = 1, .memory_mib = 1 };
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, NULL, 0, id, NULL,
                                       &e),
                  STORE_NOT_FOUND);
  snprintf(want, sizeof want,
           "%s: create cluster \"x\": image \"nope\" is not registered",
           t_path);
  CU_ASSERT_STRING_EQUAL(e.msg, want);

  /* Unknown node of a VM: invalid; the cluster row is rolled back. */
  c.image = "deb";
  vm_nodes[1] = "ghost";
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, NULL, 0, id, NULL,
                                       &e),
                  STORE_INVALID);
  snprintf(want, sizeof want,
           "%s: create cluster \"x\": VM 1: node \"ghost\" is not registered",
           t_path);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
  vm_nodes[1] = "n1";

  /* Bad tree rows: a node twice, an unknown node, a depth without parent,
   * no upstreams. */
  const char *up[] = { "nbd://origin:10809" };
  struct store_tree_row rows[2] = {
    { .node_id = "n0", .depth = 1, .upstreams = up, .n_upstreams = 1 },
    { .node_id = "n0", .depth = 1, .upstreams = up, .n_upstreams = 1 },
  };
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, rows, 2, id, NULL,
                                       &e),
                  STORE_INVALID);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "node \"n0\" appears twice"));
  rows[1].node_id = "ghost";
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, rows, 2, id, NULL,
                                       &e),
                  STORE_INVALID);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "node \"ghost\" is not registered"));
  rows[1].node_id = "n1";
  rows[1].depth = 2;
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, rows, 2, id, NULL,
                                       &e),
                  STORE_INVALID);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "disagree"));
  rows[1].parent = "n0";
  rows[1].n_upstreams = 0;
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, rows, 2, id, NULL,
                                       &e),
                  STORE_INVALID);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "0 upstreams"));
  rows[1].n_upstreams = 1;

  /* Bad fields. */
  c.count = 0;
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, NULL, 0, id, NULL,
                                       &e),
                  STORE_INVALID);
  c.count = 2;
  c.vcpus = 0;
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, NULL, 0, id, NULL,
                                       &e),
                  STORE_INVALID);
  c.vcpus = 1;
  c.placement = (enum store_placement)7;
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, NULL, 0, id, NULL,
                                       &e),
                  STORE_INVALID);
  c.placement = STORE_PLACEMENT_SPREAD;

  /* None of the failures left anything behind. */
  st = (store_close(st), open_ok());
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM clusters"), 0);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM vms"), 0);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM tree"), 0);

  /* A live name is taken until that cluster is deleted. */
  char first[STORE_ID_LEN + 1];
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, rows, 2, first, NULL,
                                       &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, rows, 2, id, NULL,
                                       &e),
                  STORE_CONFLICT);
  snprintf(want, sizeof want,
           "%s: create cluster \"x\": cluster %s of that name is not deleted",
           t_path, first);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
  CU_ASSERT_EQUAL(store_cluster_set_state(st, first, 0, STORE_CLUSTER_DELETED,
                                          NULL, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_cluster_create(st, &c, vm_nodes, rows, 2, id, NULL,
                                       &e),
                  STORE_OK);
  CU_ASSERT_STRING_NOT_EQUAL(id, first);
  store_close(st);
}

static void
test_idempotency(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 2);
  char id1[STORE_ID_LEN + 1], id2[STORE_ID_LEN + 1];
  bool replayed = true, same = false;
  CU_ASSERT_EQUAL(store_cluster_find_key(st, "k1", "h", id1, &same, &e),
                  STORE_NOT_FOUND);
  CU_ASSERT_EQUAL(create(st, "a", 4, 2, "k1", "hash-a", id1, &replayed, &e),
                  STORE_OK);
  CU_ASSERT_FALSE(replayed);
  /* The same request again: the same cluster, nothing new. */
  CU_ASSERT_EQUAL(create(st, "a", 4, 2, "k1", "hash-a", id2, &replayed, &e),
                  STORE_OK);
  CU_ASSERT_TRUE(replayed);
  CU_ASSERT_STRING_EQUAL(id1, id2);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM clusters"), 1);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM vms"), 4);
  /* The key with another body: 409, naming the key and the cluster. */
  CU_ASSERT_EQUAL(create(st, "b", 4, 2, "k1", "hash-b", id2, &replayed, &e),
                  STORE_CONFLICT);
  char want[512];
  snprintf(want, sizeof want,
           "%s: create cluster \"b\": idempotency key \"k1\" was used by "
           "cluster %s for another request",
           t_path, id1);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
  /* Lookup. */
  CU_ASSERT_EQUAL(store_cluster_find_key(st, "k1", "hash-a", id2, &same, &e),
                  STORE_OK);
  CU_ASSERT_STRING_EQUAL(id2, id1);
  CU_ASSERT_TRUE(same);
  CU_ASSERT_EQUAL(store_cluster_find_key(st, "k1", "hash-b", id2, &same, &e),
                  STORE_OK);
  CU_ASSERT_FALSE(same);
  CU_ASSERT_EQUAL(store_cluster_find_key(st, "k1", NULL, id2, &same, &e),
                  STORE_OK);
  CU_ASSERT_FALSE(same);
  CU_ASSERT_EQUAL(store_cluster_find_key(st, "", NULL, id2, &same, &e),
                  STORE_INVALID);
  /* Another key for a new cluster; no key at all twice → two clusters
   * would need two names. */
  CU_ASSERT_EQUAL(create(st, "c", 1, 2, "k2", NULL, id2, &replayed, &e),
                  STORE_OK);
  CU_ASSERT_FALSE(replayed);
  CU_ASSERT_EQUAL(create(st, "c", 1, 2, "k2", NULL, id1, &replayed, &e),
                  STORE_OK);
  CU_ASSERT_TRUE(replayed);
  CU_ASSERT_STRING_EQUAL(id1, id2);
  /* A replay still answers after the cluster was deleted (soft). */
  CU_ASSERT_EQUAL(store_cluster_set_state(st, id2, 0, STORE_CLUSTER_DELETED,
                                          NULL, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(create(st, "c", 1, 2, "k2", NULL, id1, &replayed, &e),
                  STORE_OK);
  CU_ASSERT_TRUE(replayed);
  CU_ASSERT_STRING_EQUAL(id1, id2);
  store_close(st);
}

static void
test_states(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 2);
  char id[STORE_ID_LEN + 1], other[STORE_ID_LEN + 1];
  CU_ASSERT_EQUAL(create(st, "a", 3, 2, NULL, NULL, id, NULL, &e), STORE_OK);
  usleep(2000); /* lists are by creation time */
  CU_ASSERT_EQUAL(create(st, "b", 1, 2, NULL, NULL, other, NULL, &e),
                  STORE_OK);

  /* Cluster transitions with a from mask. */
  CU_ASSERT_EQUAL(store_cluster_set_state(
                      st, id, STORE_MASK(STORE_CLUSTER_PENDING),
                      STORE_CLUSTER_PROVISIONING, NULL, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_cluster_set_state(
                      st, id, STORE_MASK(STORE_CLUSTER_PENDING),
                      STORE_CLUSTER_RUNNING, NULL, &e),
                  STORE_CONFLICT);
  char want[256];
  snprintf(want, sizeof want,
           "%s: cluster %s is provisioning, which cannot become running",
           t_path, id);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
  CU_ASSERT_EQUAL(store_cluster_set_state(st, "nope", 0,
                                          STORE_CLUSTER_RUNNING, NULL, &e),
                  STORE_NOT_FOUND);
  snprintf(want, sizeof want, "%s: no cluster nope", t_path);
  CU_ASSERT_STRING_EQUAL(e.msg, want);

  /* Unfinished clusters: both, oldest first. */
  struct seen s = { 0 };
  CU_ASSERT_EQUAL(store_cluster_list(st, STORE_CLUSTER_UNFINISHED,
                                     seen_cluster, &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(s.n, 2);
  CU_ASSERT_STRING_EQUAL(s.ids[0], id);
  CU_ASSERT_EQUAL(s.states[0], STORE_CLUSTER_PROVISIONING);
  CU_ASSERT_EQUAL(s.states[1], STORE_CLUSTER_PENDING);

  /* VM states: running sets running_at once; a mask guards. */
  char vid[64];
  snprintf(vid, sizeof vid, "%s-0001", id);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid, 0, STORE_VM_VOLUME_READY, NULL,
                                     &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid,
                                     STORE_MASK(STORE_VM_VOLUME_READY),
                                     STORE_VM_RUNNING, NULL, &e),
                  STORE_OK);
  struct store_vm *v = store_vm_get(st, vid, &e);
  CU_ASSERT_PTR_NOT_NULL_FATAL(v);
  CU_ASSERT_EQUAL(v->state, STORE_VM_RUNNING);
  CU_ASSERT_TRUE(v->running_at > 0);
  CU_ASSERT_EQUAL(v->running_at, v->updated_at);
  int64_t ran = v->running_at;
  free(v);
  usleep(2000);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid, 0, STORE_VM_FAILED,
                                     "domain crashed", &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid, STORE_VM_LIVE, STORE_VM_RUNNING,
                                     NULL, &e),
                  STORE_CONFLICT);
  snprintf(want, sizeof want, "%s: VM %s is failed, which cannot become "
           "running", t_path, vid);
  CU_ASSERT_STRING_EQUAL(e.msg, want);
  v = store_vm_get(st, vid, &e);
  CU_ASSERT_EQUAL(v->state, STORE_VM_FAILED);
  CU_ASSERT_STRING_EQUAL(v->reason, "domain crashed");
  CU_ASSERT_EQUAL(v->running_at, ran);
  CU_ASSERT_TRUE(v->updated_at > ran);
  free(v);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid, 0, STORE_VM_RUNNING, NULL, &e),
                  STORE_OK);
  v = store_vm_get(st, vid, &e);
  CU_ASSERT_PTR_NULL(v->reason);
  CU_ASSERT_EQUAL(v->running_at, ran);
  free(v);
  CU_ASSERT_EQUAL(store_vm_set_state(st, "nope", 0, STORE_VM_RUNNING, NULL,
                                     &e),
                  STORE_NOT_FOUND);
  CU_ASSERT_PTR_NULL(store_vm_get(st, "nope", &e));
  CU_ASSERT_EQUAL(e.code, STORE_NOT_FOUND);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid, 0, (enum store_vm_state)99,
                                     NULL, &e),
                  STORE_INVALID);

  /* Counts follow. */
  struct store_cluster *c = store_cluster_get(st, id, &e);
  CU_ASSERT_EQUAL(c->vms[STORE_VM_RUNNING], 1);
  CU_ASSERT_EQUAL(c->vms[STORE_VM_PENDING], 2);
  free(c);

  /* Running, with an error text; finished_at set once. */
  CU_ASSERT_EQUAL(store_cluster_set_state(st, id, 0, STORE_CLUSTER_FAILED,
                                          "2 VMs failed", &e),
                  STORE_OK);
  c = store_cluster_get(st, id, &e);
  CU_ASSERT_EQUAL(c->state, STORE_CLUSTER_FAILED);
  CU_ASSERT_STRING_EQUAL(c->error, "2 VMs failed");
  CU_ASSERT_TRUE(c->finished_at >= c->created_at);
  int64_t fin = c->finished_at;
  free(c);
  usleep(2000);
  CU_ASSERT_EQUAL(store_cluster_set_state(st, id, 0, STORE_CLUSTER_DELETING,
                                          NULL, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_cluster_set_state(st, id, 0, STORE_CLUSTER_DELETED,
                                          NULL, &e),
                  STORE_OK);
  c = store_cluster_get(st, id, &e);
  CU_ASSERT_EQUAL(c->finished_at, fin);
  CU_ASSERT_PTR_NULL(c->error);
  free(c);

  /* Lists by mask. */
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_cluster_list(st, STORE_MASK(STORE_CLUSTER_DELETED),
                                     seen_cluster, &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(s.n, 1);
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_cluster_list(st, 0, seen_cluster, &s, &e), STORE_OK);
  CU_ASSERT_EQUAL(s.n, 2);
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_cluster_list(st, STORE_CLUSTER_UNFINISHED,
                                     seen_cluster, &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(s.n, 1);
  CU_ASSERT_STRING_EQUAL(s.ids[0], other);
  store_close(st);
}

static int
seen_event(const struct store_event *ev, void *opaque)
{
  struct seen *s = opaque;
  if (s->n < 64) {
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s:%s:%s", ev->kind,
             ev->vm_id ? ev->vm_id : "-", ev->message);
    s->states[s->n] = (int)ev->seq;
  }
  s->n++;
  return 0;
}

static void
test_delete_cascade_events(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 3);
  char id[STORE_ID_LEN + 1], keep[STORE_ID_LEN + 1];
  CU_ASSERT_EQUAL(create(st, "a", 6, 3, NULL, NULL, id, NULL, &e), STORE_OK);
  CU_ASSERT_EQUAL(create(st, "b", 2, 3, NULL, NULL, keep, NULL, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_event_add(st, id, NULL, "created", "6 VMs", &e),
                  STORE_OK);
  char vid[64];
  snprintf(vid, sizeof vid, "%s-0002", id);
  CU_ASSERT_EQUAL(store_event_add(st, id, vid, "vm_failed", "no space", &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_event_add(st, id, NULL, "reparent", "n1 → n0", &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_event_add(st, keep, NULL, "created", "2 VMs", &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_event_add(st, "nope", NULL, "x", "y", &e),
                  STORE_NOT_FOUND);
  CU_ASSERT_EQUAL(store_event_add(st, id, NULL, "", "y", &e), STORE_INVALID);

  struct seen s = { 0 };
  CU_ASSERT_EQUAL(store_event_list(st, id, 0, 0, seen_event, &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL_FATAL(s.n, 3);
  CU_ASSERT_STRING_EQUAL(s.ids[0], "created:-:6 VMs");
  char want[128];
  snprintf(want, sizeof want, "vm_failed:%s:no space", vid);
  CU_ASSERT_STRING_EQUAL(s.ids[1], want);
  CU_ASSERT_TRUE(s.states[0] < s.states[1] && s.states[1] < s.states[2]);
  int after = s.states[0];
  memset(&s, 0, sizeof s);
  CU_ASSERT_EQUAL(store_event_list(st, id, after, 1, seen_event, &s, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(s.n, 1);
  CU_ASSERT_STRING_EQUAL(s.ids[0], want);

  /* Delete: the VMs, tree rows and events of id go, keep's stay. */
  CU_ASSERT_EQUAL(store_cluster_delete(st, id, &e), STORE_OK);
  CU_ASSERT_PTR_NULL(store_cluster_get(st, id, &e));
  CU_ASSERT_EQUAL(e.code, STORE_NOT_FOUND);
  CU_ASSERT_EQUAL(store_cluster_delete(st, id, &e), STORE_NOT_FOUND);
  store_close(st);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM clusters"), 1);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM vms"), 2);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM tree"), 2);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM events"), 1);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM vms WHERE cluster_id <> "
                          "(SELECT id FROM clusters)"),
                  0);
}

static void
test_tree_update(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 3);
  char id[STORE_ID_LEN + 1];
  CU_ASSERT_EQUAL(create(st, "a", 3, 3, NULL, NULL, id, NULL, &e), STORE_OK);
  /* n1 failed: n2 moves under n0. */
  const char *up[] = { "nbd://n0:10809", "nbd://origin:10809" };
  struct store_tree_row row = { .node_id = "n2", .parent = "n0", .depth = 2,
                                .upstreams = up, .n_upstreams = 2 };
  CU_ASSERT_EQUAL(store_tree_update(st, id, &row, 1, &e), STORE_OK);
  struct tree_seen t = { 0 };
  CU_ASSERT_EQUAL(store_tree_list(st, id, seen_tree, &t, &e), STORE_OK);
  CU_ASSERT_EQUAL_FATAL(t.n, 3);
  /* by depth then node: n0 (1), n1 (2), n2 (2) */
  CU_ASSERT_STRING_EQUAL(t.node[2], "n2");
  CU_ASSERT_STRING_EQUAL(t.parent[2], "n0");
  CU_ASSERT_EQUAL(t.depth[2], 2);
  CU_ASSERT_EQUAL(t.n_up[2], 2);
  CU_ASSERT_STRING_EQUAL(t.up[2][0], "nbd://n0:10809");
  CU_ASSERT_EQUAL(store_tree_update(st, "nope", &row, 1, &e),
                  STORE_NOT_FOUND);
  row.depth = 0;
  CU_ASSERT_EQUAL(store_tree_update(st, id, &row, 1, &e), STORE_INVALID);
  store_close(st);
}

/* Collects the attachments store_attachments_age calls back with. */
struct due_seen {
  int n;
  char node[8][16];
  int64_t idle_since[8];
};

static int
seen_due(const struct store_attachment *a, void *opaque)
{
  struct due_seen *d = opaque;
  if (d->n < 8) {
    snprintf(d->node[d->n], sizeof d->node[0], "%s", a->node_id);
    d->idle_since[d->n] = a->idle_since;
  }
  d->n++;
  return 0;
}

static struct due_seen
age(struct store *st, int64_t now, int64_t grace)
{
  struct due_seen d = { 0 };
  struct store_err e;
  CU_ASSERT_EQUAL(store_attachments_age(st, now, grace, seen_due, &d, &e),
                  STORE_OK);
  return d;
}

static void
set_vm(const char *cluster, int idx, enum store_vm_state to,
       struct store *st)
{
  char vm[STORE_ID_LEN + 8];
  struct store_err e;
  snprintf(vm, sizeof vm, "%s-%04d", cluster, idx);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vm, 0, to, NULL, &e), STORE_OK);
}

/* Attachments are in use while a live VM of their version is on the node
 * or below it in the tree, or the cluster is being provisioned; idle time
 * survives a reopen. */
static void
test_attachments(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 3);
  char id[STORE_ID_LEN + 1];
  /* VMs on n0, n1, n2; the chain origin → n0 → n1 → n2. */
  CU_ASSERT_EQUAL_FATAL(create(st, "a", 3, 3, NULL, NULL, id, NULL, &e),
                        STORE_OK);
  const char *nodes[] = { "n0", "n1", "n2" };
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(store_attachment_put(st, nodes[i], "deb", VERSION_A, &e),
                    STORE_OK);
  CU_ASSERT_EQUAL(store_attachment_put(st, "n9", "deb", VERSION_A, &e),
                  STORE_NOT_FOUND);
  CU_ASSERT_EQUAL(store_attachment_put(st, "n0", "deb", "abc", &e),
                  STORE_INVALID);
  /* Pending: the tree's nodes are in use, even at grace 0. */
  CU_ASSERT_EQUAL(age(st, 1000, 0).n, 0);
  CU_ASSERT_EQUAL(store_cluster_set_state(st, id, 0, STORE_CLUSTER_RUNNING,
                                          NULL, &e), STORE_OK);
  /* Only n2's VM lives: n0 and n1 relay to it. */
  set_vm(id, 0, STORE_VM_FAILED, st);
  set_vm(id, 1, STORE_VM_FAILED, st);
  set_vm(id, 2, STORE_VM_RUNNING, st);
  CU_ASSERT_EQUAL(age(st, 2000, 0).n, 0);
  /* n1's VM lives: n2 (below it, no VM) is idle, n0 and n1 not. */
  set_vm(id, 1, STORE_VM_RUNNING, st);
  set_vm(id, 2, STORE_VM_FAILED, st);
  struct due_seen d = age(st, 2500, 0);
  CU_ASSERT_EQUAL_FATAL(d.n, 1);
  CU_ASSERT_STRING_EQUAL(d.node[0], "n2");
  CU_ASSERT_EQUAL(d.idle_since[0], 2500);
  /* Nothing lives: idle since 3000 (n2 since 2500), due after the grace. */
  set_vm(id, 1, STORE_VM_DELETED, st);
  CU_ASSERT_EQUAL(age(st, 3000, 500).n, 1);
  CU_ASSERT_EQUAL(age(st, 3499, 500).n, 1);
  store_close(st);
  st = open_ok();
  d = age(st, 3500, 500);
  CU_ASSERT_EQUAL_FATAL(d.n, 3);
  CU_ASSERT_STRING_EQUAL(d.node[0], "n0");
  CU_ASSERT_EQUAL(d.idle_since[0], 3000);
  CU_ASSERT_EQUAL(d.idle_since[2], 2500);
  /* n0 refused: its grace starts again; n1 detached; a forget of another
   * version changes nothing. */
  CU_ASSERT_EQUAL(store_attachment_retry(st, "n0", "deb", VERSION_A, 4000,
                                         &e), STORE_OK);
  CU_ASSERT_EQUAL(store_attachment_forget(st, "n1", "deb", VERSION_A, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_attachment_forget(st, "n2", "deb", VERSION_B, &e),
                  STORE_OK);
  d = age(st, 4200, 500);
  CU_ASSERT_EQUAL_FATAL(d.n, 1);
  CU_ASSERT_STRING_EQUAL(d.node[0], "n2");
  /* A new version's cluster being provisioned on n0..n2 uses B, not A:
   * n2's A stays idle until n2 is attached with B. */
  add_image(st, "deb", VERSION_B, (uint64_t)1 << 30);
  char id2[STORE_ID_LEN + 1];
  CU_ASSERT_EQUAL_FATAL(create(st, "b", 3, 3, NULL, NULL, id2, NULL, &e),
                        STORE_OK);
  CU_ASSERT_EQUAL(age(st, 4300, 500).n, 1);
  CU_ASSERT_EQUAL(store_attachment_put(st, "n2", "deb", VERSION_B, &e),
                  STORE_OK);
  d = age(st, 4400, 0);
  CU_ASSERT_EQUAL_FATAL(d.n, 1); /* n0's A: b's tree holds n0, but for B */
  CU_ASSERT_STRING_EQUAL(d.node[0], "n0");
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM attachments"), 2);
  store_close(st);
}

/* A schema-2 database (before attachments were recorded) with a live
 * cluster: the upgrade records its tree's nodes as attached, so they age;
 * a node that is down is not in the due batch. */
static void
test_attachments_upgrade(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 3);
  char id[STORE_ID_LEN + 1];
  CU_ASSERT_EQUAL_FATAL(create(st, "a", 3, 3, NULL, NULL, id, NULL, &e),
                        STORE_OK);
  store_close(st);
  raw_exec("DROP TABLE enrolments; DROP TABLE attachments; "
           "PRAGMA user_version = 2;");
  st = open_ok();
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM attachments"), 3);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM attachments WHERE "
                          "idle_since IS NULL AND version = '" VERSION_A "'"),
                  3);
  CU_ASSERT_EQUAL(store_cluster_set_state(st, id, 0, STORE_CLUSTER_DELETED,
                                          NULL, &e), STORE_OK);
  raw_exec("UPDATE nodes SET state = 'down' WHERE id = 'n1'");
  struct due_seen d = age(st, 5000, 0);
  CU_ASSERT_EQUAL(d.n, 2);
  store_close(st);
}

/* Enrolments: one per node name, a second refused unless rotating, which
 * replaces the salt and hash; revoke; the blobs kept exactly. */
static void
test_enrolments(void)
{
  struct store *st = open_ok();
  struct store_err e;
  uint8_t s1[STORE_SALT_LEN], h1[STORE_HASH_LEN], s2[STORE_SALT_LEN],
      h2[STORE_HASH_LEN], gs[STORE_SALT_LEN], gh[STORE_HASH_LEN];
  memset(s1, 0x11, sizeof s1);
  memset(h1, 0x00, sizeof h1); /* NULs inside: blobs, not strings */
  h1[5] = 0xa1;
  memset(s2, 0x22, sizeof s2);
  memset(h2, 0xb2, sizeof h2);
  bool created = false;
  int64_t at = 0;

  CU_ASSERT_EQUAL(store_enrolment_get(st, "n1", gs, gh, &at, &e),
                  STORE_NOT_FOUND);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "node 'n1' is not enrolled"));
  /* Enrolled before it ever registered: no node row needed. */
  CU_ASSERT_EQUAL(store_enrolment_put(st, "n1", s1, h1, false, &created, &e),
                  STORE_OK);
  CU_ASSERT_TRUE(created);
  CU_ASSERT_EQUAL(store_enrolment_get(st, "n1", gs, gh, &at, &e), STORE_OK);
  CU_ASSERT_EQUAL(memcmp(gs, s1, sizeof gs), 0);
  CU_ASSERT_EQUAL(memcmp(gh, h1, sizeof gh), 0);
  CU_ASSERT_TRUE(at > 0);
  /* Twice without rotate: 409, the first kept. */
  CU_ASSERT_EQUAL(store_enrolment_put(st, "n1", s2, h2, false, &created, &e),
                  STORE_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "already enrolled"));
  CU_ASSERT_EQUAL(store_enrolment_get(st, "n1", gs, gh, NULL, &e), STORE_OK);
  CU_ASSERT_EQUAL(memcmp(gh, h1, sizeof gh), 0);
  /* Rotate replaces. */
  CU_ASSERT_EQUAL(store_enrolment_put(st, "n1", s2, h2, true, &created, &e),
                  STORE_OK);
  CU_ASSERT_FALSE(created);
  CU_ASSERT_EQUAL(store_enrolment_get(st, "n1", gs, gh, NULL, &e), STORE_OK);
  CU_ASSERT_EQUAL(memcmp(gs, s2, sizeof gs), 0);
  CU_ASSERT_EQUAL(memcmp(gh, h2, sizeof gh), 0);
  /* Rotate of a name not enrolled enrols it. */
  CU_ASSERT_EQUAL(store_enrolment_put(st, "n2", s1, h1, true, &created, &e),
                  STORE_OK);
  CU_ASSERT_TRUE(created);
  /* Revoke: gone, a second revoke is 404; n2 untouched. */
  CU_ASSERT_EQUAL(store_enrolment_delete(st, "n1", &e), STORE_OK);
  CU_ASSERT_EQUAL(store_enrolment_get(st, "n1", gs, gh, NULL, &e),
                  STORE_NOT_FOUND);
  CU_ASSERT_EQUAL(store_enrolment_delete(st, "n1", &e), STORE_NOT_FOUND);
  CU_ASSERT_EQUAL(store_enrolment_get(st, "n2", gs, gh, NULL, &e), STORE_OK);
  CU_ASSERT_EQUAL(store_enrolment_put(st, "", s1, h1, false, NULL, &e),
                  STORE_INVALID);
  store_close(st);
  /* The schema's checks hold the lengths. */
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM enrolments WHERE "
                          "length(salt) = 16 AND length(hash) = 32"),
                  1);
}

/* A schema-3 file (before enrolments) with a registered node: the upgrade
 * adds the table, keeps the node, and the node can be enrolled. */
static void
test_enrolments_upgrade(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 2);
  store_close(st);
  raw_exec("DROP TABLE enrolments; PRAGMA user_version = 3;");
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM sqlite_schema WHERE "
                          "name = 'enrolments'"),
                  0);
  st = open_ok();
  CU_ASSERT_EQUAL(raw_int("PRAGMA user_version"),
                  (int64_t)store_schema_version());
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM nodes"), 2);
  uint8_t salt[STORE_SALT_LEN] = { 1 }, hash[STORE_HASH_LEN] = { 2 };
  CU_ASSERT_EQUAL(store_enrolment_put(st, "n1", salt, hash, false, NULL, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_enrolment_get(st, "n1", salt, hash, NULL, &e),
                  STORE_OK);
  store_close(st);
}

static void
test_batch(void)
{
  struct store *st = open_ok();
  struct store_err e;
  world(st, 2);
  char id[STORE_ID_LEN + 1];
  CU_ASSERT_EQUAL(create(st, "a", 4, 2, NULL, NULL, id, NULL, &e), STORE_OK);
  char vid[64];

  /* A batch: the failed call in the middle undoes only itself. */
  CU_ASSERT_EQUAL(store_begin(st, false, &e), STORE_OK);
  CU_ASSERT_EQUAL(store_begin(st, false, &e), STORE_INVALID);
  for (int i = 0; i < 4; i++) {
    snprintf(vid, sizeof vid, "%s-%04d", id, i);
    CU_ASSERT_EQUAL(store_vm_set_state(st, vid, 0, STORE_VM_RUNNING, NULL,
                                       &e),
                    STORE_OK);
  }
  CU_ASSERT_EQUAL(create(st, "a", 1, 2, NULL, NULL, id, NULL, &e),
                  STORE_CONFLICT);
  CU_ASSERT_EQUAL(store_cluster_set_state(st, id, 0, STORE_CLUSTER_RUNNING,
                                          NULL, &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(store_commit(st, &e), STORE_OK);
  CU_ASSERT_EQUAL(store_commit(st, &e), STORE_INVALID);
  struct store_cluster *c = store_cluster_get(st, id, &e);
  CU_ASSERT_EQUAL(c->state, STORE_CLUSTER_RUNNING);
  CU_ASSERT_EQUAL(c->vms[STORE_VM_RUNNING], 4);
  free(c);

  /* A rolled back batch leaves nothing. */
  CU_ASSERT_EQUAL(store_begin(st, true, &e), STORE_OK);
  snprintf(vid, sizeof vid, "%s-0000", id);
  CU_ASSERT_EQUAL(store_vm_set_state(st, vid, 0, STORE_VM_FAILED, "x", &e),
                  STORE_OK);
  CU_ASSERT_EQUAL(create(st, "b", 2, 2, NULL, NULL, id, NULL, &e), STORE_OK);
  store_rollback(st);
  store_rollback(st);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM clusters"), 1);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM vms WHERE state = 'failed'"),
                  0);
  store_close(st);
}

/* ---- crash: SIGKILL during creates ---- */

#define CRASH_NODES 8

static void
crash_child(int wfd, int round)
{
  struct store_err e;
  struct store *st = store_open(t_path, &e);
  if (st == NULL)
    _exit(2);
  for (int i = 0;; i++) {
    char name[64], id[STORE_ID_LEN + 1];
    snprintf(name, sizeof name, "c%d-%d", round, i);
    uint32_t count = 1 + (uint32_t)((i * 7 + round) % 40);
    if (create(st, name, count, CRASH_NODES, NULL, NULL, id, NULL, &e) !=
        STORE_OK)
      _exit(3);
    /* The 202: only now does the client learn the id. */
    char line[STORE_ID_LEN + 2];
    snprintf(line, sizeof line, "%s\n", id);
    if (write(wfd, line, STORE_ID_LEN + 1) != STORE_ID_LEN + 1)
      _exit(4);
  }
}

static void
test_crash(void)
{
  struct store *st = open_ok();
  world(st, CRASH_NODES);
  store_close(st);
  unsigned seed = (unsigned)time(NULL);
  fprintf(stderr, "\ntest_crash: seed %u\n", seed);
  srand(seed);
  size_t reported = 0;
  static char ids[20000][STORE_ID_LEN + 1];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int rounds = 0;
  for (int round = 0; round < 30; round++) {
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      crash_child(p[1], round);
    }
    close(p[1]);
    usleep((useconds_t)(5000 + rand() % 150000));
    CU_ASSERT_EQUAL(kill(pid, SIGKILL), 0);
    int status;
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    if (!WIFSIGNALED(status))
      fprintf(stderr, "child exit status %d\n", WEXITSTATUS(status));
    char line[STORE_ID_LEN + 1];
    ssize_t r;
    while ((r = read(p[0], line, sizeof line)) == (ssize_t)sizeof line &&
           reported < 20000) {
      memcpy(ids[reported], line, STORE_ID_LEN);
      ids[reported++][STORE_ID_LEN] = '\0';
    }
    CU_ASSERT_TRUE(r == 0);
    close(p[0]);
    rounds++;
    /* Reopen after every kill (recovery of the WAL). */
    st = open_ok();
    store_close(st);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (t1.tv_sec - t0.tv_sec > 7)
      break;
  }
  fprintf(stderr, "test_crash: %d rounds, %zu clusters reported\n", rounds,
          reported);
  CU_ASSERT_TRUE(reported > 0);

  char *check = raw_text("PRAGMA integrity_check");
  CU_ASSERT_STRING_EQUAL(check, "ok");
  free(check);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM pragma_foreign_key_check"),
                  0);
  /* Atomicity: every cluster has exactly count VMs and min(count, nodes)
   * tree rows; no VM or tree row without its cluster. */
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM clusters c WHERE count <> "
                          "(SELECT count(*) FROM vms v WHERE v.cluster_id = "
                          "c.id)"),
                  0);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM clusters c WHERE min(count, "
                          "8) <> (SELECT count(*) FROM tree t WHERE "
                          "t.cluster_id = c.id)"),
                  0);
  CU_ASSERT_EQUAL(raw_int("SELECT count(*) FROM vms WHERE cluster_id NOT IN "
                          "(SELECT id FROM clusters)"),
                  0);
  /* Durability: every id a child reported exists.  Clusters created but
   * not yet reported may exist too (killed between commit and write). */
  int64_t total = raw_int("SELECT count(*) FROM clusters");
  CU_ASSERT_TRUE(total >= (int64_t)reported);
  CU_ASSERT_TRUE(total <= (int64_t)reported + rounds);
  st = open_ok();
  struct store_err e;
  size_t missing = 0;
  for (size_t i = 0; i < reported; i++) {
    struct store_cluster *c = store_cluster_get(st, ids[i], &e);
    if (c == NULL || c->vms[STORE_VM_PENDING] != c->count)
      missing++;
    free(c);
  }
  CU_ASSERT_EQUAL(missing, 0);
  store_close(st);
  fprintf(stderr, "test_crash: %" PRId64 " clusters in the file\n", total);
}

/* ---- two handles, two threads ---- */

struct conc {
  const char *path;
  pthread_barrier_t *both_open;
  bool done;          /* atomic: the writer has finished */
  int errors;
  int ops;
  char msg[2 * STORE_ERR_MAX];
};

static void *
writer(void *arg)
{
  struct conc *cc = arg;
  struct store_err e;
  struct store *st = store_open(cc->path, &e);
  if (st == NULL) {
    snprintf(cc->msg, sizeof cc->msg, "%s", e.msg);
    cc->errors++;
  }
  pthread_barrier_wait(cc->both_open);
  if (st == NULL)
    return NULL;
  for (int i = 0; i < 40; i++) {
    char name[32], id[STORE_ID_LEN + 1];
    snprintf(name, sizeof name, "w%d", i);
    if (create(st, name, 20, 4, NULL, NULL, id, NULL, &e) != STORE_OK) {
      snprintf(cc->msg, sizeof cc->msg, "%s", e.msg);
      cc->errors++;
      continue;
    }
    cc->ops++;
    for (int v = 0; v < 20; v++) {
      char vid[64];
      snprintf(vid, sizeof vid, "%s-%04d", id, v);
      if (store_vm_set_state(st, vid, 0, STORE_VM_RUNNING, NULL, &e) !=
          STORE_OK) {
        snprintf(cc->msg, sizeof cc->msg, "%s", e.msg);
        cc->errors++;
      }
      cc->ops++;
    }
    if (store_node_heartbeat(st, "n1", &e) != STORE_OK) {
      snprintf(cc->msg, sizeof cc->msg, "%s", e.msg);
      cc->errors++;
    }
  }
  store_close(st);
  return NULL;
}

static int
count_cluster(const struct store_cluster *c, void *opaque)
{
  (*(int *)opaque)++;
  return 0;
}

static int
count_node(const struct store_node *n, void *opaque)
{
  (*(int *)opaque)++;
  return 0;
}

static int
count_vm(const struct store_vm *v, void *opaque)
{
  (*(int *)opaque)++;
  return 0;
}

static void *
reader(void *arg)
{
  struct conc *cc = arg;
  struct store_err e;
  struct store *st = store_open(cc->path, &e);
  if (st == NULL) {
    snprintf(cc->msg, sizeof cc->msg, "%s", e.msg);
    cc->errors++;
  }
  pthread_barrier_wait(cc->both_open);
  if (st == NULL)
    return NULL;
  while (!__atomic_load_n(&cc->done, __ATOMIC_ACQUIRE)) {
    int n = 0, nodes = 0;
    if (store_cluster_list(st, 0, count_cluster, &n, &e) != STORE_OK ||
        store_node_list(st, 0, count_node, &nodes, &e) != STORE_OK ||
        nodes != 4) {
      snprintf(cc->msg, sizeof cc->msg, "%s", e.msg);
      cc->errors++;
    }
    char id[STORE_ID_LEN + 1];
    int vms = 0;
    struct seen s = { 0 };
    if (store_cluster_list(st, 0, seen_cluster, &s, &e) == STORE_OK &&
        s.n > 0) {
      snprintf(id, sizeof id, "%s", s.ids[s.n > 64 ? 63 : s.n - 1]);
      struct store_cluster *c = store_cluster_get(st, id, &e);
      if (c == NULL ||
          store_vm_list_cluster(st, id, count_vm, &vms, &e) != STORE_OK ||
          vms != 20 || c->count != 20) {
        snprintf(cc->msg, sizeof cc->msg, "read cluster %s: %s (%d VMs)", id,
                 e.msg, vms);
        cc->errors++;
      }
      free(c);
    }
    cc->ops++;
  }
  store_close(st);
  return NULL;
}

static void
test_concurrent(void)
{
  struct store *st = open_ok();
  world(st, 4);
  store_close(st);
  pthread_barrier_t both_open;
  pthread_barrier_init(&both_open, NULL, 2);
  struct conc w = { .path = t_path, .both_open = &both_open };
  struct conc r = { .path = t_path, .both_open = &both_open };
  pthread_t tw, tr;
  CU_ASSERT_FATAL(pthread_create(&tr, NULL, reader, &r) == 0);
  CU_ASSERT_FATAL(pthread_create(&tw, NULL, writer, &w) == 0);
  pthread_join(tw, NULL);
  __atomic_store_n(&r.done, true, __ATOMIC_RELEASE);
  pthread_join(tr, NULL);
  pthread_barrier_destroy(&both_open);
  if (w.errors)
    fprintf(stderr, "writer: %s\n", w.msg);
  if (r.errors)
    fprintf(stderr, "reader: %s\n", r.msg);
  fprintf(stderr, "\ntest_concurrent: writer %d ops, reader %d rounds\n",
          w.ops, r.ops);
  CU_ASSERT_EQUAL(w.errors, 0);
  CU_ASSERT_EQUAL(r.errors, 0);
  CU_ASSERT_EQUAL(w.ops, 40 * 21);
  CU_ASSERT_TRUE(r.ops > 0);
}

/* Two handles opening a new file at once: one migrates, both work. */
static void *
opener(void *arg)
{
  struct store_err e;
  struct store *st = store_open(t_path, &e);
  if (st == NULL)
    snprintf((char *)arg, STORE_ERR_MAX, "%s", e.msg);
  store_close(st);
  return NULL;
}

static void
test_concurrent_open(void)
{
  char m1[STORE_ERR_MAX] = "", m2[STORE_ERR_MAX] = "";
  pthread_t a, b;
  CU_ASSERT_FATAL(pthread_create(&a, NULL, opener, m1) == 0);
  CU_ASSERT_FATAL(pthread_create(&b, NULL, opener, m2) == 0);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  if (m1[0] || m2[0])
    fprintf(stderr, "\nconcurrent open: '%s' / '%s'\n", m1, m2);
  CU_ASSERT_STRING_EQUAL(m1, "");
  CU_ASSERT_STRING_EQUAL(m2, "");
  CU_ASSERT_EQUAL(raw_int("PRAGMA user_version"),
                  (int64_t)store_schema_version());
}

int
main(void)
{
  static const struct cunit_suite suite = {
    "store", suite_init, suite_clean, test_setup, NULL,
  };
  static const struct cunit_test tests[] = {
    { "open a new file", test_open_new },
    { "open an empty file", test_open_empty_file },
    { "migrate a version 1 file", test_migrate_from_v1 },
    { "refuse a newer schema", test_refuse_newer },
    { "refuse a file that is not SQLite", test_refuse_garbage },
    { "refuse another program's database", test_refuse_foreign },
    { "refuse a path that cannot be opened", test_refuse_unopenable },
    { "state names", test_names },
    { "nodes", test_nodes },
    { "images", test_images },
    { "create and read a cluster", test_cluster_create_get },
    { "node usage and VMs by node", test_node_usage_list },
    { "cluster creation errors", test_cluster_errors },
    { "idempotency keys", test_idempotency },
    { "cluster and VM states", test_states },
    { "delete cascades; events", test_delete_cascade_events },
    { "tree update", test_tree_update },
    { "attachments in use and idle", test_attachments },
    { "attachments recorded by the upgrade", test_attachments_upgrade },
    { "enrolments", test_enrolments },
    { "enrolments added by the upgrade", test_enrolments_upgrade },
    { "batches", test_batch },
    { "SIGKILL while creating clusters", test_crash },
    { "a writer and a reader on two handles", test_concurrent },
    { "two handles open a new file at once", test_concurrent_open },
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
