/* thunder — thunder-api's persistent state in SQLite; see store.h and
 * docs/api-store.md.
 *
 * Design note.
 *
 * Schema (version 4; every table STRICT, times UNIX ms, ids text):
 *
 *   nodes    id PK, nbd_uri, control_url, rack, zone, vcpus, memory_mib,
 *            disk_bytes, registered_at, last_heartbeat_at,
 *            state ('ready' | 'down')
 *   images   name PK, origin_nbd, version (64 hex digits), size,
 *            registered_at
 *   clusters id PK (32 hex digits from getrandom), name, image → images,
 *            image_version (the image's version at creation), count,
 *            vcpus, memory_mib, disk_gib (NULL), placement ('spread' |
 *            'pack'), fanout (NULL), state, idempotency_key (UNIQUE, NULL),
 *            request_hash (NULL), created_at, updated_at, finished_at
 *            (NULL), error (NULL)
 *            UNIQUE (name) WHERE state <> 'deleted': a VM's name is
 *            CLUSTERNAME-IIII and becomes its domain's name on a node, so
 *            two live clusters of one name would collide there.
 *   vms      PK (cluster_id → clusters ON DELETE CASCADE, idx), WITHOUT
 *            ROWID so a cluster's VMs sit together; id UNIQUE
 *            (CLUSTERID-IIII), name UNIQUE per cluster (CLUSTERNAME-IIII,
 *            at least 4 digits, the same width in a cluster), node_id →
 *            nodes, vcpus, memory_mib, disk_bytes (the VM's reservation,
 *            copied from its cluster: disk_gib GiB, else the image's size),
 *            state, reason (NULL), created_at, updated_at, running_at
 *            (NULL); INDEX vms_node (node_id, state, vcpus, memory_mib,
 *            disk_bytes) WHERE the state is live: it covers the usage
 *            query and the VMs of a node, and history (failed, deleted
 *            VMs) does not grow it.
 *   tree     PK (cluster_id → clusters ON DELETE CASCADE, node_id →
 *            nodes), parent (NULL = the origin, exactly when depth = 1),
 *            depth, upstreams (a JSON array of NBD URIs, parent first,
 *            origin last).
 *   events   seq (AUTOINCREMENT), at, cluster_id → clusters ON DELETE
 *            CASCADE, vm_id (NULL), kind, message; INDEX (cluster_id, seq).
 *   attachments  PK (node_id → nodes, image), version, attached_at,
 *            idle_since (NULL = in use): what the converger attached, and
 *            since when nothing uses it (store_attachments_age's one
 *            recursive query: live VMs, their ancestors in the tree, the
 *            trees of clusters being provisioned).
 *   enrolments  node_id PK (no foreign key: enrolled before it
 *            registers), salt (16 random bytes), hash (SHA-256 of salt ‖
 *            token, 32 bytes), enrolled_at: a node's enrolment token
 *            (api/enrol.h), stored only as its salted hash.
 *
 * A node's usage is a query, not a column: the sums of the reservations of
 * its VMs in a live state (pending, volume_ready, running, deleting: they
 * hold or will hold a domain), read from vms_node alone (4 ms for 1,000
 * nodes and 19,000 live VMs; joining clusters per VM took 3× longer).  A
 * spread cluster adds an entry to nearly every leaf of vms_node, so a
 * create writes more pages as live VMs grow (8 ms empty, 15–25 ms at
 * 40,000 live VMs, for 1,000 VMs).
 * States are stored as their names, checked by CHECK constraints, so the
 * file reads well in the sqlite3 shell.
 *
 * Migrations.  migrations[v − 1] takes the file from version v − 1 to v;
 * PRAGMA user_version holds the version, PRAGMA application_id 'THND'
 * marks the file as thunder-api's (set by step 1).  store_open runs each
 * missing step in its own BEGIN IMMEDIATE transaction that re-reads the
 * version first (two processes opening one file migrate it once), with
 * foreign keys off and PRAGMA foreign_key_check before the commit (SQLite's
 * procedure for table rebuilds).  A version above the code's, another
 * application_id, or tables without a version are refused, naming the
 * file and both versions.  Steps are append-only: never edit a released
 * one, add the next.
 *
 * Durability.  journal_mode=WAL; synchronous=NORMAL by default and FULL for
 * the commits a client is told about: store_cluster_create (the 202),
 * store_cluster_set_state and _delete, store_image_put,
 * store_node_register, the migrations, and a store_begin(durable) batch.
 * In WAL mode a commit appends its pages to the -wal file before COMMIT
 * returns; with NORMAL the file is only fsynced at checkpoints, with FULL
 * at every commit.  A kill -9 of the process loses nothing committed in
 * either mode (the pages are in the kernel's page cache, which survives the
 * process).  A power loss or kernel crash can lose the last NORMAL commits
 * but not a FULL one (its fdatasync of the WAL also covers every frame
 * before it); the file stays consistent either way.  So a 202 survives
 * power loss, while heartbeats and VM states, which are many and which the
 * converger re-reads from the nodes after a restart, cost no fsync (one
 * fdatasync measured 0.4–1.1 ms on the development VM's disk; a VM state
 * update 20 µs).  The level cannot change inside a transaction, so it is
 * set before BEGIN and set back after the end, through sqlite3_exec each
 * time (SQLite applies this pragma when it compiles it); inside a
 * store_begin batch the batch's level applies.  Verified with strace: one
 * fdatasync per durable call, none for heartbeats and VM states.
 *
 * Concurrency.  Writes start with BEGIN IMMEDIATE (taking the write lock at
 * once, so a transaction never has to upgrade a read snapshot, the case
 * where SQLite returns SQLITE_BUSY without waiting); single-statement
 * updates run in autocommit; every read is one statement, so it sees one
 * snapshot.  busy_timeout makes waiting writers retry for 5 s.  store_open
 * reads the version without a lock and takes the write lock only to
 * migrate.  Inside a store_begin batch each multi-statement call runs in a
 * SAVEPOINT (a single statement is atomic by itself), so a failed call
 * undoes only itself.
 *
 * Uniqueness (STORE_CONFLICT, the API's 409): an idempotency key belongs
 * to one cluster for as long as its row exists, deleted state included (a
 * replay answers with that cluster; store_cluster_delete frees the key); a
 * name belongs to one cluster not in state deleted.
 *
 * Statements are prepared once (SQLITE_PREPARE_PERSISTENT) into st->stmts
 * and reset by a cleanup attribute when the function using them returns;
 * values are always bound, never formatted into SQL (the one exception is
 * PRAGMA user_version = N, N an integer of the code).
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "jsonutil.h"
#include "log.h"

#define STORE_APP_ID 0x54484e44 /* 'THND' */
#define GIB ((int64_t)1 << 30)

/* ---- the schema ---- */

static const char *const migrations[] = {
  /* 1: nodes, images, clusters, VMs, trees. */
  "PRAGMA application_id = 1414024772;\n"
  "CREATE TABLE nodes (\n"
  "  id TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),\n"
  "  nbd_uri TEXT NOT NULL,\n"
  "  control_url TEXT NOT NULL,\n"
  "  rack TEXT NOT NULL DEFAULT '',\n"
  "  zone TEXT NOT NULL DEFAULT '',\n"
  "  vcpus INTEGER NOT NULL CHECK (vcpus >= 0),\n"
  "  memory_mib INTEGER NOT NULL CHECK (memory_mib >= 0),\n"
  "  disk_bytes INTEGER NOT NULL CHECK (disk_bytes >= 0),\n"
  "  registered_at INTEGER NOT NULL,\n"
  "  last_heartbeat_at INTEGER NOT NULL,\n"
  "  state TEXT NOT NULL CHECK (state IN ('ready', 'down'))\n"
  ") STRICT;\n"
  "CREATE TABLE images (\n"
  "  name TEXT PRIMARY KEY NOT NULL CHECK (name <> ''),\n"
  "  origin_nbd TEXT NOT NULL,\n"
  "  version TEXT NOT NULL CHECK (length(version) = 64),\n"
  "  size INTEGER NOT NULL CHECK (size >= 0),\n"
  "  registered_at INTEGER NOT NULL\n"
  ") STRICT;\n"
  "CREATE TABLE clusters (\n"
  "  id TEXT PRIMARY KEY NOT NULL,\n"
  "  name TEXT NOT NULL CHECK (name <> ''),\n"
  "  image TEXT NOT NULL REFERENCES images (name),\n"
  "  image_version TEXT NOT NULL,\n"
  "  count INTEGER NOT NULL CHECK (count >= 1),\n"
  "  vcpus INTEGER NOT NULL CHECK (vcpus >= 1),\n"
  "  memory_mib INTEGER NOT NULL CHECK (memory_mib >= 1),\n"
  "  disk_gib INTEGER CHECK (disk_gib >= 1),\n"
  "  placement TEXT NOT NULL CHECK (placement IN ('spread', 'pack')),\n"
  "  fanout INTEGER CHECK (fanout >= 1),\n"
  "  state TEXT NOT NULL CHECK (state IN ('pending', 'provisioning',\n"
  "    'running', 'failed', 'deleting', 'deleted')),\n"
  "  idempotency_key TEXT UNIQUE,\n"
  "  request_hash TEXT,\n"
  "  created_at INTEGER NOT NULL,\n"
  "  updated_at INTEGER NOT NULL,\n"
  "  finished_at INTEGER,\n"
  "  error TEXT\n"
  ") STRICT;\n"
  "CREATE UNIQUE INDEX clusters_live_name ON clusters (name)\n"
  "  WHERE state <> 'deleted';\n"
  "CREATE TABLE vms (\n"
  "  cluster_id TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,\n"
  "  idx INTEGER NOT NULL CHECK (idx >= 0),\n"
  "  id TEXT NOT NULL UNIQUE,\n"
  "  name TEXT NOT NULL,\n"
  "  node_id TEXT NOT NULL REFERENCES nodes (id),\n"
  "  vcpus INTEGER NOT NULL CHECK (vcpus >= 0),\n"
  "  memory_mib INTEGER NOT NULL CHECK (memory_mib >= 0),\n"
  "  disk_bytes INTEGER NOT NULL CHECK (disk_bytes >= 0),\n"
  "  state TEXT NOT NULL CHECK (state IN ('pending', 'volume_ready',\n"
  "    'running', 'failed', 'deleting', 'deleted')),\n"
  "  reason TEXT,\n"
  "  created_at INTEGER NOT NULL,\n"
  "  updated_at INTEGER NOT NULL,\n"
  "  running_at INTEGER,\n"
  "  PRIMARY KEY (cluster_id, idx),\n"
  "  UNIQUE (cluster_id, name)\n"
  ") STRICT, WITHOUT ROWID;\n"
  "CREATE INDEX vms_node ON vms (node_id, state, vcpus, memory_mib,\n"
  "  disk_bytes) WHERE state IN ('pending', 'volume_ready', 'running',\n"
  "  'deleting');\n"
  "CREATE TABLE tree (\n"
  "  cluster_id TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,\n"
  "  node_id TEXT NOT NULL REFERENCES nodes (id),\n"
  "  parent TEXT,\n"
  "  depth INTEGER NOT NULL CHECK (depth >= 1),\n"
  "  upstreams TEXT NOT NULL CHECK (json_type(upstreams) = 'array'),\n"
  "  CHECK ((parent IS NULL) = (depth = 1)),\n"
  "  PRIMARY KEY (cluster_id, node_id)\n"
  ") STRICT, WITHOUT ROWID;\n",

  /* 2: a history per cluster. */
  "CREATE TABLE events (\n"
  "  seq INTEGER PRIMARY KEY AUTOINCREMENT,\n"
  "  at INTEGER NOT NULL,\n"
  "  cluster_id TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,\n"
  "  vm_id TEXT,\n"
  "  kind TEXT NOT NULL CHECK (kind <> ''),\n"
  "  message TEXT NOT NULL\n"
  ") STRICT;\n"
  "CREATE INDEX events_cluster ON events (cluster_id, seq);\n",

  /* 3: the image versions thunder-api attached on nodes, for detaching
   * them once unused (docs/api.md "Detaching unused images"). */
  "CREATE TABLE attachments (\n"
  "  node_id TEXT NOT NULL REFERENCES nodes (id),\n"
  "  image TEXT NOT NULL CHECK (image <> ''),\n"
  "  version TEXT NOT NULL CHECK (length(version) = 64),\n"
  "  attached_at INTEGER NOT NULL,\n"
  "  idle_since INTEGER,\n"
  "  PRIMARY KEY (node_id, image)\n"
  ") STRICT, WITHOUT ROWID;\n"
  /* What schema 2 attached for clusters still there, so that a database
   * upgraded with live clusters ages those attachments too. */
  "INSERT OR IGNORE INTO attachments\n"
  "  SELECT t.node_id, c.image, c.image_version,\n"
  "         CAST(strftime('%s', 'now') AS INTEGER) * 1000, NULL\n"
  "  FROM tree t JOIN clusters c ON c.id = t.cluster_id\n"
  "  WHERE c.state <> 'deleted';\n",

  /* 4: per-node enrolment tokens (docs/security.md "Node identity"):
   * only a salted SHA-256 of each token, never the token.  No foreign
   * key: a node is enrolled before it first registers. */
  "CREATE TABLE enrolments (\n"
  "  node_id TEXT PRIMARY KEY NOT NULL CHECK (node_id <> ''),\n"
  "  salt BLOB NOT NULL CHECK (length(salt) = 16),\n"
  "  hash BLOB NOT NULL CHECK (length(hash) = 32),\n"
  "  enrolled_at INTEGER NOT NULL\n"
  ") STRICT, WITHOUT ROWID;\n",
};

#define N_MIGRATIONS (sizeof migrations / sizeof migrations[0])

/* ---- state names (the CHECK constraints and the *_BITS below agree) ---- */

static const char *const node_states[STORE_NODE_STATES] = { "ready", "down" };
static const char *const cluster_states[STORE_CLUSTER_STATES] = {
  "pending", "provisioning", "running", "failed", "deleting", "deleted",
};
static const char *const vm_states[STORE_VM_STATES] = {
  "pending", "volume_ready", "running", "failed", "deleting", "deleted",
};
static const char *const placements[] = { "spread", "pack" };

/* SQL giving STORE_MASK(state) of a row's state column. */
#define NODE_BIT(col) "(CASE " col " WHEN 'ready' THEN 1 WHEN 'down' THEN 2 END)"
#define STATE6_BIT(col, s1)                                                    \
  "(CASE " col " WHEN 'pending' THEN 1 WHEN '" s1 "' THEN 2 "                  \
  "WHEN 'running' THEN 4 WHEN 'failed' THEN 8 WHEN 'deleting' THEN 16 "        \
  "WHEN 'deleted' THEN 32 END)"
#define CLUSTER_BIT(col) STATE6_BIT(col, "provisioning")
#define VM_BIT(col) STATE6_BIT(col, "volume_ready")
/* "the row's state is in mask ?N (0 = all)" */
#define IN_MASK(n, bit) "(?" n " = 0 OR (?" n " & " bit ") <> 0)"
#define VM_LIVE_SQL "('pending', 'volume_ready', 'running', 'deleting')"

/* ---- statements ---- */

#define NODE_SELECT                                                            \
  "SELECT n.id, n.nbd_uri, n.control_url, n.rack, n.zone, n.vcpus, "           \
  "n.memory_mib, n.disk_bytes, n.registered_at, n.last_heartbeat_at, "         \
  "n.state, count(v.node_id), coalesce(sum(v.vcpus), 0), "                     \
  "coalesce(sum(v.memory_mib), 0), coalesce(sum(v.disk_bytes), 0) "            \
  "FROM nodes n LEFT JOIN vms v ON v.node_id = n.id AND v.state IN "           \
  VM_LIVE_SQL " "

#define COUNT_STATE(s) "count(CASE v.state WHEN '" s "' THEN 1 END)"
#define CLUSTER_SELECT                                                         \
  "SELECT c.id, c.name, c.image, c.image_version, c.count, c.vcpus, "          \
  "c.memory_mib, c.disk_gib, c.placement, c.fanout, c.idempotency_key, "       \
  "c.request_hash, c.state, c.created_at, c.updated_at, c.finished_at, "       \
  "c.error, " COUNT_STATE("pending") ", " COUNT_STATE("volume_ready") ", "     \
  COUNT_STATE("running") ", " COUNT_STATE("failed") ", "                       \
  COUNT_STATE("deleting") ", " COUNT_STATE("deleted")                          \
  " FROM clusters c LEFT JOIN vms v ON v.cluster_id = c.id "

#define VM_SELECT                                                              \
  "SELECT id, cluster_id, idx, name, node_id, state, reason, created_at, "     \
  "updated_at, running_at FROM vms "

#define IMAGE_SELECT                                                           \
  "SELECT name, origin_nbd, version, size, registered_at FROM images "

enum stmt_id {
  S_BEGIN,
  S_COMMIT,
  S_ROLLBACK,
  S_SAVEPOINT,
  S_RELEASE,
  S_ROLLBACK_TO,
  S_NODE_EXISTS,
  S_NODE_NBD_HOLDER,
  S_NODE_HB_HOLDER,
  S_NODE_UPSERT,
  S_NODE_HEARTBEAT,
  S_NODE_DOWN,
  S_NODE_EXPIRE,
  S_NODE_GET,
  S_NODE_LIST,
  S_IMAGE_GET,
  S_IMAGE_UPSERT,
  S_IMAGE_LIST,
  S_KEY_FIND,
  S_CLUSTER_LIVE_NAME,
  S_CLUSTER_INSERT,
  S_VM_INSERT,
  S_TREE_INSERT,
  S_CLUSTER_GET,
  S_CLUSTER_LIST,
  S_CLUSTER_STATE,
  S_CLUSTER_SET_STATE,
  S_CLUSTER_DELETE,
  S_VM_STATE,
  S_VM_SET_STATE,
  S_VM_SET_STATE_NODE,
  S_VM_GET,
  S_VM_LIST_CLUSTER,
  S_VM_LIST_NODE,
  S_TREE_LIST,
  S_TREE_UPSERT,
  S_EVENT_INSERT,
  S_EVENT_LIST,
  S_ATT_PUT,
  S_ATT_AGE,
  S_ATT_DUE,
  S_ATT_FORGET,
  S_ATT_RETRY,
  S_ENROL_GET,
  S_ENROL_INSERT,
  S_ENROL_UPSERT,
  S_ENROL_DELETE,
  S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
  [S_BEGIN] = "BEGIN IMMEDIATE",
  [S_COMMIT] = "COMMIT",
  [S_ROLLBACK] = "ROLLBACK",
  [S_SAVEPOINT] = "SAVEPOINT store_call",
  [S_RELEASE] = "RELEASE store_call",
  [S_ROLLBACK_TO] = "ROLLBACK TO store_call",
  [S_NODE_EXISTS] = "SELECT 1 FROM nodes WHERE id = ?1",
  /* The ready node other than ?1 holding ?2 (NBD address) or ?3 (control
   * URL): its id, which of the two, and the address. */
  [S_NODE_NBD_HOLDER] =
      "SELECT id, CASE WHEN nbd_uri = ?2 COLLATE NOCASE THEN 'nbd_uri' "
      "ELSE 'control_url' END, CASE WHEN nbd_uri = ?2 COLLATE NOCASE "
      "THEN nbd_uri ELSE control_url END FROM nodes WHERE id <> ?1 AND "
      "state = 'ready' AND (nbd_uri = ?2 COLLATE NOCASE OR "
      "control_url = ?3 COLLATE NOCASE) LIMIT 1",
  /* The same for the registered addresses of node ?1 (its heartbeat). */
  [S_NODE_HB_HOLDER] =
      "SELECT o.id, CASE WHEN o.nbd_uri = n.nbd_uri COLLATE NOCASE THEN "
      "'nbd_uri' ELSE 'control_url' END, CASE WHEN o.nbd_uri = n.nbd_uri "
      "COLLATE NOCASE THEN o.nbd_uri ELSE o.control_url END FROM nodes n "
      "JOIN nodes o ON o.id <> n.id AND o.state = 'ready' AND "
      "(o.nbd_uri = n.nbd_uri COLLATE NOCASE OR "
      "o.control_url = n.control_url COLLATE NOCASE) WHERE n.id = ?1 LIMIT 1",
  [S_NODE_UPSERT] =
      "INSERT INTO nodes (id, nbd_uri, control_url, rack, zone, vcpus, "
      "memory_mib, disk_bytes, registered_at, last_heartbeat_at, state) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, 'ready') "
      "ON CONFLICT (id) DO UPDATE SET nbd_uri = excluded.nbd_uri, "
      "control_url = excluded.control_url, rack = excluded.rack, "
      "zone = excluded.zone, vcpus = excluded.vcpus, "
      "memory_mib = excluded.memory_mib, disk_bytes = excluded.disk_bytes, "
      "last_heartbeat_at = excluded.last_heartbeat_at, state = 'ready'",
  [S_NODE_HEARTBEAT] = "UPDATE nodes SET last_heartbeat_at = ?2, "
                       "state = 'ready' WHERE id = ?1",
  [S_NODE_DOWN] = "UPDATE nodes SET state = 'down' WHERE id = ?1",
  [S_NODE_EXPIRE] = "UPDATE nodes SET state = 'down' WHERE state = 'ready' "
                    "AND last_heartbeat_at < ?1 RETURNING id",
  [S_NODE_GET] = NODE_SELECT "WHERE n.id = ?1 GROUP BY n.id",
  [S_NODE_LIST] = NODE_SELECT "WHERE " IN_MASK("1", NODE_BIT("n.state"))
                  " GROUP BY n.id ORDER BY n.id",
  [S_IMAGE_GET] = IMAGE_SELECT "WHERE name = ?1",
  [S_IMAGE_UPSERT] =
      "INSERT INTO images (name, origin_nbd, version, size, registered_at) "
      "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET "
      "origin_nbd = excluded.origin_nbd, version = excluded.version, "
      "size = excluded.size, registered_at = CASE WHEN origin_nbd IS NOT "
      "excluded.origin_nbd OR version IS NOT excluded.version OR size IS NOT "
      "excluded.size THEN excluded.registered_at ELSE registered_at END",
  [S_IMAGE_LIST] = IMAGE_SELECT "ORDER BY name",
  [S_KEY_FIND] =
      "SELECT id, request_hash FROM clusters WHERE idempotency_key = ?1",
  [S_CLUSTER_LIVE_NAME] =
      "SELECT id FROM clusters WHERE name = ?1 AND state <> 'deleted'",
  [S_CLUSTER_INSERT] =
      "INSERT INTO clusters (id, name, image, image_version, count, vcpus, "
      "memory_mib, disk_gib, placement, fanout, state, idempotency_key, "
      "request_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, "
      "?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13, ?13)",
  [S_VM_INSERT] =
      "INSERT INTO vms (cluster_id, idx, id, name, node_id, vcpus, "
      "memory_mib, disk_bytes, state, created_at, updated_at) VALUES (?1, "
      "?2, ?3, ?4, ?5, ?7, ?8, ?9, 'pending', ?6, ?6)",
  [S_TREE_INSERT] = "INSERT INTO tree (cluster_id, node_id, parent, depth, "
                    "upstreams) VALUES (?1, ?2, ?3, ?4, ?5)",
  [S_CLUSTER_GET] = CLUSTER_SELECT "WHERE c.id = ?1 GROUP BY c.id",
  [S_CLUSTER_LIST] = CLUSTER_SELECT "WHERE " IN_MASK("1", CLUSTER_BIT("c.state"))
                     " GROUP BY c.id ORDER BY c.created_at, c.id",
  [S_CLUSTER_STATE] = "SELECT state FROM clusters WHERE id = ?1",
  [S_CLUSTER_SET_STATE] =
      "UPDATE clusters SET state = ?2, error = ?3, updated_at = ?4, "
      "finished_at = CASE WHEN ?2 IN ('running', 'failed', 'deleted') "
      "THEN coalesce(finished_at, ?4) ELSE finished_at END "
      "WHERE id = ?1 AND " IN_MASK("5", CLUSTER_BIT("state")),
  [S_CLUSTER_DELETE] = "DELETE FROM clusters WHERE id = ?1",
  [S_VM_STATE] = "SELECT state FROM vms WHERE id = ?1",
  [S_VM_SET_STATE] =
      "UPDATE vms SET state = ?2, reason = ?3, updated_at = ?4, "
      "running_at = CASE WHEN ?2 = 'running' THEN coalesce(running_at, ?4) "
      "ELSE running_at END WHERE id = ?1 AND " IN_MASK("5", VM_BIT("state")),
  [S_VM_SET_STATE_NODE] =
      "UPDATE vms SET state = ?2, reason = ?3, updated_at = ?4, "
      "running_at = CASE WHEN ?2 = 'running' THEN coalesce(running_at, ?4) "
      "ELSE running_at END WHERE node_id = ?1 AND state IN " VM_LIVE_SQL
      " AND " IN_MASK("5", VM_BIT("state")),
  [S_VM_GET] = VM_SELECT "WHERE id = ?1",
  [S_VM_LIST_CLUSTER] = VM_SELECT "WHERE cluster_id = ?1 ORDER BY idx",
  [S_VM_LIST_NODE] = VM_SELECT "WHERE node_id = ?1 AND state IN "
                     VM_LIVE_SQL " AND " IN_MASK("2", VM_BIT("state"))
                     " ORDER BY cluster_id, idx",
  [S_TREE_LIST] = "SELECT node_id, parent, depth, upstreams FROM tree "
                  "WHERE cluster_id = ?1 ORDER BY depth, node_id",
  [S_TREE_UPSERT] =
      "INSERT INTO tree (cluster_id, node_id, parent, depth, upstreams) "
      "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (cluster_id, node_id) DO "
      "UPDATE SET parent = excluded.parent, depth = excluded.depth, "
      "upstreams = excluded.upstreams",
  [S_EVENT_INSERT] = "INSERT INTO events (at, cluster_id, vm_id, kind, "
                     "message) VALUES (?1, ?2, ?3, ?4, ?5)",
  [S_EVENT_LIST] = "SELECT seq, at, cluster_id, vm_id, kind, message "
                   "FROM events WHERE cluster_id = ?1 AND seq > ?2 "
                   "ORDER BY seq LIMIT ?3",
  [S_ATT_PUT] =
      "INSERT INTO attachments (node_id, image, version, attached_at, "
      "idle_since) VALUES (?1, ?2, ?3, ?4, NULL) ON CONFLICT (node_id, image) "
      "DO UPDATE SET version = excluded.version, attached_at = CASE WHEN "
      "version IS excluded.version THEN attached_at ELSE excluded.attached_at "
      "END, idle_since = NULL",
  /* In use: (cluster, node) pairs of live VMs, every ancestor of them in
   * the cluster's tree (it relays to them), and every node of the tree of
   * a cluster still being provisioned; a pair counts for the cluster's
   * image version. */
  [S_ATT_AGE] =
      "WITH RECURSIVE used (cluster_id, node_id) AS ("
      "SELECT cluster_id, node_id FROM vms WHERE state IN " VM_LIVE_SQL " "
      "UNION SELECT t.cluster_id, t.node_id FROM tree t JOIN clusters c ON "
      "c.id = t.cluster_id WHERE c.state IN ('pending', 'provisioning') "
      "UNION SELECT t.cluster_id, t.parent FROM tree t JOIN used u ON "
      "t.cluster_id = u.cluster_id AND t.node_id = u.node_id "
      "WHERE t.parent IS NOT NULL) "
      "UPDATE attachments SET idle_since = CASE WHEN EXISTS (SELECT 1 FROM "
      "used u JOIN clusters c ON c.id = u.cluster_id WHERE u.node_id = "
      "attachments.node_id AND c.image = attachments.image AND "
      "c.image_version = attachments.version AND c.state <> 'deleted') "
      "THEN NULL ELSE coalesce(idle_since, ?1) END",
  /* Nodes that are down are left out (they cannot be asked), so that
   * they cannot fill the batch the converger takes. */
  [S_ATT_DUE] = "SELECT a.node_id, a.image, a.version, a.attached_at, "
                "a.idle_since FROM attachments a JOIN nodes n ON "
                "n.id = a.node_id AND n.state = 'ready' "
                "WHERE a.idle_since <= ?1 ORDER BY a.node_id, a.image",
  [S_ATT_FORGET] = "DELETE FROM attachments WHERE node_id = ?1 AND "
                   "image = ?2 AND version = ?3 AND idle_since IS NOT NULL",
  [S_ATT_RETRY] = "UPDATE attachments SET idle_since = ?4 WHERE node_id = ?1 "
                  "AND image = ?2 AND version = ?3 AND idle_since IS NOT NULL",
  [S_ENROL_GET] = "SELECT salt, hash, enrolled_at FROM enrolments "
                  "WHERE node_id = ?1",
  [S_ENROL_INSERT] = "INSERT INTO enrolments (node_id, salt, hash, enrolled_at) "
                     "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (node_id) DO NOTHING",
  [S_ENROL_UPSERT] = "INSERT INTO enrolments (node_id, salt, hash, enrolled_at) "
                     "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (node_id) DO UPDATE "
                     "SET salt = excluded.salt, hash = excluded.hash, "
                     "enrolled_at = excluded.enrolled_at",
  [S_ENROL_DELETE] = "DELETE FROM enrolments WHERE node_id = ?1",
};

struct store {
  sqlite3 *db;
  char *path;
  sqlite3_stmt *stmts[S_COUNT];
  bool in_batch;        /* inside store_begin … store_commit */
  bool batch_durable;   /* that batch commits with synchronous=FULL */
  char *jbuf;           /* JSON of an upstream list */
  size_t jcap;
};

/* ---- errors ---- */

static int __attribute__((format(printf, 3, 4)))
fail(struct store_err *err, enum store_code code, const char *fmt, ...)
{
  if (err) {
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* A failed SQLite call: "PATH: WHAT: SQLite's message". */
static int __attribute__((format(printf, 3, 4)))
fail_db(struct store *st, struct store_err *err, const char *fmt, ...)
{
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return fail(err, STORE_ERROR, "%s: %s: %s", st->path, what,
              sqlite3_errmsg(st->db));
}

static void
ok(struct store_err *err)
{
  if (err) {
    err->code = STORE_OK;
    err->msg[0] = '\0';
  }
}

/* ---- helpers ---- */

static int64_t
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool
empty(const char *s)
{
  return s == NULL || s[0] == '\0';
}

/* Resets a statement when it leaves scope, so no read stays open. */
static void
stmt_done(sqlite3_stmt **s)
{
  if (*s) {
    sqlite3_reset(*s);
    sqlite3_clear_bindings(*s);
  }
}
#define CLEANUP_STMT __attribute__((cleanup(stmt_done)))

static sqlite3_stmt *
stmt(struct store *st, enum stmt_id id, struct store_err *err)
{
  if (st->stmts[id] == NULL &&
      sqlite3_prepare_v3(st->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                         &st->stmts[id], NULL) != SQLITE_OK) {
    fail_db(st, err, "prepare statement %d", (int)id);
    st->stmts[id] = NULL;
  }
  return st->stmts[id];
}

/* Runs a statement that returns no rows (BEGIN, PRAGMA …). */
static int
run(struct store *st, enum stmt_id id, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, id, err);
  if (s == NULL)
    return STORE_ERROR;
  int r = sqlite3_step(s);
  if (r != SQLITE_DONE && r != SQLITE_ROW)
    return fail_db(st, err, "%s", stmt_sql[id]);
  return STORE_OK;
}

static const char *
col_text(sqlite3_stmt *s, int i)
{
  return (const char *)sqlite3_column_text(s, i);
}

static uint64_t
col_u64(sqlite3_stmt *s, int i)
{
  int64_t v = sqlite3_column_int64(s, i);
  return v < 0 ? 0 : (uint64_t)v;
}

static uint32_t
col_u32(sqlite3_stmt *s, int i)
{
  int64_t v = sqlite3_column_int64(s, i);
  return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static int
name_index(const char *const *names, size_t n, const char *name)
{
  for (size_t i = 0; name && i < n; i++)
    if (strcmp(names[i], name) == 0)
      return (int)i;
  return -1;
}

/* Copies row (size bytes) and the strings its fields at offs point to
 * into one heap block: free() frees all. */
static void *
pack(const void *row, size_t size, const size_t *offs, size_t n)
{
  size_t total = size;
  for (size_t i = 0; i < n; i++) {
    const char *sp;
    memcpy(&sp, (const char *)row + offs[i], sizeof sp);
    if (sp)
      total += strlen(sp) + 1;
  }
  char *out = malloc(total);
  if (out == NULL)
    return NULL;
  memcpy(out, row, size);
  char *p = out + size;
  for (size_t i = 0; i < n; i++) {
    const char *sp;
    memcpy(&sp, out + offs[i], sizeof sp);
    if (sp) {
      size_t len = strlen(sp) + 1;
      memcpy(p, sp, len);
      memcpy(out + offs[i], &p, sizeof p);
      p += len;
    }
  }
  return out;
}

/* ---- transactions ---- */

/* Sets the synchronous level.  Run through sqlite3_exec each time, not a
 * cached statement: SQLite applies this pragma when it compiles it. */
static int
set_sync(struct store *st, bool full, struct store_err *err)
{
  const char *sql = full ? "PRAGMA synchronous = FULL"
                         : "PRAGMA synchronous = NORMAL";
  if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return fail_db(st, err, "%s", sql);
  return STORE_OK;
}

/* Starts the write of one call: BEGIN IMMEDIATE (after raising the level
 * to FULL when durable), or a savepoint inside a batch. */
static int
tx_begin(struct store *st, bool durable, struct store_err *err)
{
  if (st->in_batch)
    return run(st, S_SAVEPOINT, err);
  if (durable && set_sync(st, true, err) < 0)
    return STORE_ERROR;
  if (run(st, S_BEGIN, err) < 0) {
    if (durable)
      set_sync(st, false, NULL);
    return STORE_ERROR;
  }
  return STORE_OK;
}

/* Ends the write of one call: commits if rc is STORE_OK, else rolls back;
 * returns rc or the commit's failure. */
static int
tx_end(struct store *st, bool durable, int rc, struct store_err *err)
{
  if (st->in_batch) {
    if (rc == STORE_OK)
      return run(st, S_RELEASE, err) < 0 ? STORE_ERROR : STORE_OK;
    run(st, S_ROLLBACK_TO, NULL);
    run(st, S_RELEASE, NULL);
    return rc;
  }
  if (rc == STORE_OK && run(st, S_COMMIT, err) < 0)
    rc = STORE_ERROR;
  if (rc != STORE_OK && !sqlite3_get_autocommit(st->db))
    run(st, S_ROLLBACK, NULL);
  if (durable)
    set_sync(st, false, NULL);
  return rc;
}

int
store_begin(struct store *st, bool durable, struct store_err *err)
{
  if (st->in_batch)
    return fail(err, STORE_INVALID, "%s: begin: a transaction is open",
                st->path);
  if (tx_begin(st, durable, err) < 0)
    return STORE_ERROR;
  st->in_batch = true;
  st->batch_durable = durable;
  ok(err);
  return STORE_OK;
}

int
store_commit(struct store *st, struct store_err *err)
{
  if (!st->in_batch)
    return fail(err, STORE_INVALID, "%s: commit: no transaction is open",
                st->path);
  st->in_batch = false;
  int rc = tx_end(st, st->batch_durable, STORE_OK, err);
  if (rc == STORE_OK)
    ok(err);
  return rc;
}

void
store_rollback(struct store *st)
{
  if (!st->in_batch)
    return;
  st->in_batch = false;
  if (!sqlite3_get_autocommit(st->db))
    run(st, S_ROLLBACK, NULL);
  if (st->batch_durable)
    set_sync(st, false, NULL);
}

/* ---- opening and migrating ---- */

static int
pragma_int(struct store *st, const char *sql, int64_t *out,
           struct store_err *err)
{
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
    return fail_db(st, err, "%s", sql);
  int r = sqlite3_step(s);
  if (r == SQLITE_ROW)
    *out = sqlite3_column_int64(s, 0);
  else if (r != SQLITE_DONE) {
    fail_db(st, err, "%s", sql);
    sqlite3_finalize(s);
    return STORE_ERROR;
  }
  sqlite3_finalize(s);
  return STORE_OK;
}

static int
exec(struct store *st, const char *sql, struct store_err *err)
{
  if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return fail_db(st, err, "%.*s", (int)strcspn(sql, "\n"), sql);
  return STORE_OK;
}

/* Checks that the file is thunder-api's (or new) and not newer than the
 * code.  Called inside the migration's transaction. */
static int
check_owner(struct store *st, int64_t version, struct store_err *err)
{
  int64_t app = 0, tables = 0;
  if (pragma_int(st, "PRAGMA application_id", &app, err) < 0 ||
      pragma_int(st, "SELECT count(*) FROM sqlite_schema", &tables, err) < 0)
    return STORE_ERROR;
  if (app != 0 && app != STORE_APP_ID)
    return fail(err, STORE_ERROR,
                "%s: a SQLite database of another program (application_id "
                "0x%08" PRIx64 "), not thunder-api's",
                st->path, (uint64_t)app);
  if (app == 0 && (version != 0 || tables != 0))
    return fail(err, STORE_ERROR,
                "%s: a SQLite database of another program (%" PRId64
                " tables, schema version %" PRId64
                ", no thunder-api mark), not thunder-api's",
                st->path, tables, version);
  if (version > (int64_t)N_MIGRATIONS)
    return fail(err, STORE_ERROR,
                "%s: schema version %" PRId64
                " is newer than this program's %zu; refusing to open it "
                "(use a newer thunder-api)",
                st->path, version, N_MIGRATIONS);
  return STORE_OK;
}

static int
migrate(struct store *st, struct store_err *err)
{
  /* Most opens find the current version: read it without the write lock,
   * which a busy writer on another handle could hold for a while. */
  int64_t from = -1, cur = 0;
  /* One read transaction, so that the version, the mark and the table
   * count come from one snapshot: read one by one, another handle's
   * migration could commit between them (version 0 and no mark, then its
   * tables: "a database of another program"). */
  if (exec(st, "BEGIN DEFERRED", err) < 0)
    return STORE_ERROR;
  if (pragma_int(st, "PRAGMA user_version", &cur, err) < 0 ||
      check_owner(st, cur, err) < 0)
    goto fail;
  if (exec(st, "COMMIT", err) < 0)
    goto fail;
  while (cur != (int64_t)N_MIGRATIONS) {
    int64_t v = 0, bad = 0;
    if (exec(st, "PRAGMA foreign_keys = OFF", err) < 0 ||
        exec(st, "PRAGMA synchronous = FULL", err) < 0 ||
        exec(st, "BEGIN IMMEDIATE", err) < 0)
      return STORE_ERROR;
    if (pragma_int(st, "PRAGMA user_version", &v, err) < 0 ||
        check_owner(st, v, err) < 0)
      goto fail;
    if (v == (int64_t)N_MIGRATIONS) {
      if (exec(st, "COMMIT", err) < 0)
        goto fail;
      break;
    }
    if (from < 0)
      from = v;
    if (sqlite3_exec(st->db, migrations[v], NULL, NULL, NULL) != SQLITE_OK) {
      fail_db(st, err, "migrate schema from version %" PRId64 " to %" PRId64,
              v, v + 1);
      goto fail;
    }
    if (pragma_int(st, "SELECT count(*) FROM pragma_foreign_key_check", &bad,
                   err) < 0)
      goto fail;
    if (bad != 0) {
      fail(err, STORE_ERROR,
           "%s: migrate schema from version %" PRId64 " to %" PRId64
           ": %" PRId64 " rows break a foreign key",
           st->path, v, v + 1, bad);
      goto fail;
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %" PRId64, v + 1);
    if (exec(st, sql, err) < 0 || exec(st, "COMMIT", err) < 0)
      goto fail;
    cur = v + 1;
  }
  if (from >= 0)
    log_info("store", "%s: schema migrated from version %" PRId64 " to %zu",
             st->path, from, N_MIGRATIONS);
  if (exec(st, "PRAGMA synchronous = NORMAL", err) < 0 ||
      exec(st, "PRAGMA foreign_keys = ON", err) < 0)
    return STORE_ERROR;
  return STORE_OK;

fail:
  if (!sqlite3_get_autocommit(st->db))
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
  return STORE_ERROR;
}

struct store *
store_open(const char *path, struct store_err *err)
{
  if (empty(path)) {
    fail(err, STORE_INVALID, "store: open: no database path given");
    return NULL;
  }
  /* STRICT tables need 3.37, json_type() in a CHECK a build with JSON
   * (built in since 3.38). */
  if (sqlite3_libversion_number() < 3038000) {
    fail(err, STORE_ERROR, "%s: SQLite %s is too old (3.38 or newer needed)",
         path, sqlite3_libversion());
    return NULL;
  }
  struct store *st = calloc(1, sizeof *st);
  if (st == NULL || (st->path = strdup(path)) == NULL) {
    fail(err, STORE_ERROR, "%s: open: %s", path, strerror(ENOMEM));
    free(st);
    return NULL;
  }
  int r = sqlite3_open_v2(path, &st->db,
                          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                              SQLITE_OPEN_NOMUTEX,
                          NULL);
  if (r != SQLITE_OK) {
    if (st->db)
      fail_db(st, err, "open");
    else
      fail(err, STORE_ERROR, "%s: open: %s", path, sqlite3_errstr(r));
    goto fail;
  }
  sqlite3_extended_result_codes(st->db, 1);
  sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
  sqlite3_db_config(st->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
  sqlite3_db_config(st->db, SQLITE_DBCONFIG_DQS_DML, 0, NULL);
  sqlite3_db_config(st->db, SQLITE_DBCONFIG_DQS_DDL, 0, NULL);

  /* The first read of the header tells a SQLite file from anything else. */
  int64_t dummy;
  if (pragma_int(st, "PRAGMA schema_version", &dummy, err) < 0) {
    int code = sqlite3_errcode(st->db);
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
      fail(err, STORE_ERROR, "%s: not a SQLite database (%s)", path,
           sqlite3_errmsg(st->db));
    goto fail;
  }
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL) !=
      SQLITE_OK) {
    fail_db(st, err, "PRAGMA journal_mode = WAL");
    goto fail;
  }
  /* Turning a new file to WAL takes an exclusive lock, and SQLite answers
   * SQLITE_BUSY at once (no busy handler) when another handle opening the
   * same new file holds a shared one: retry within the busy timeout. */
  r = sqlite3_step(s);
  for (int waited = 0; (r & 0xff) == SQLITE_BUSY &&
                       waited < STORE_BUSY_TIMEOUT_MS; waited += 10) {
    sqlite3_reset(s);
    usleep(10 * 1000);
    r = sqlite3_step(s);
  }
  bool wal = r == SQLITE_ROW && strcmp(col_text(s, 0) ? col_text(s, 0) : "",
                                       "wal") == 0;
  if (r != SQLITE_ROW)
    fail_db(st, err, "PRAGMA journal_mode = WAL");
  else if (!wal)
    fail(err, STORE_ERROR, "%s: cannot use WAL mode (journal mode is %s)",
         path, col_text(s, 0));
  sqlite3_finalize(s);
  if (!wal)
    goto fail;
  if (migrate(st, err) < 0)
    goto fail;
  ok(err);
  return st;

fail:
  store_close(st);
  return NULL;
}

void
store_close(struct store *st)
{
  if (st == NULL)
    return;
  for (size_t i = 0; i < S_COUNT; i++)
    sqlite3_finalize(st->stmts[i]);
  if (st->db && sqlite3_close(st->db) != SQLITE_OK)
    log_warn("store", "%s: close: %s", st->path, sqlite3_errmsg(st->db));
  free(st->jbuf);
  free(st->path);
  free(st);
}

const char *
store_path(const struct store *st)
{
  return st->path;
}

unsigned
store_schema_version(void)
{
  return N_MIGRATIONS;
}

const char *
store_migration_sql(unsigned v)
{
  return v >= 1 && v <= N_MIGRATIONS ? migrations[v - 1] : NULL;
}

/* ---- names ---- */

const char *
store_node_state_name(enum store_node_state s)
{
  return (unsigned)s < STORE_NODE_STATES ? node_states[s] : "?";
}

const char *
store_cluster_state_name(enum store_cluster_state s)
{
  return (unsigned)s < STORE_CLUSTER_STATES ? cluster_states[s] : "?";
}

const char *
store_vm_state_name(enum store_vm_state s)
{
  return (unsigned)s < STORE_VM_STATES ? vm_states[s] : "?";
}

const char *
store_placement_name(enum store_placement p)
{
  return (unsigned)p < 2 ? placements[p] : "?";
}

int
store_cluster_state_from_name(const char *name, enum store_cluster_state *out)
{
  int i = name_index(cluster_states, STORE_CLUSTER_STATES, name);
  if (i >= 0)
    *out = (enum store_cluster_state)i;
  return i < 0 ? -1 : 0;
}

int
store_vm_state_from_name(const char *name, enum store_vm_state *out)
{
  int i = name_index(vm_states, STORE_VM_STATES, name);
  if (i >= 0)
    *out = (enum store_vm_state)i;
  return i < 0 ? -1 : 0;
}

int
store_placement_from_name(const char *name, enum store_placement *out)
{
  int i = name_index(placements, 2, name);
  if (i >= 0)
    *out = (enum store_placement)i;
  return i < 0 ? -1 : 0;
}

/* ---- nodes ---- */

static void
row_node(sqlite3_stmt *s, struct store_node *n)
{
  memset(n, 0, sizeof *n);
  n->id = col_text(s, 0);
  n->nbd_uri = col_text(s, 1);
  n->control_url = col_text(s, 2);
  n->rack = col_text(s, 3);
  n->zone = col_text(s, 4);
  n->vcpus = col_u32(s, 5);
  n->memory_mib = col_u64(s, 6);
  n->disk_bytes = col_u64(s, 7);
  n->registered_at = sqlite3_column_int64(s, 8);
  n->last_heartbeat_at = sqlite3_column_int64(s, 9);
  int st = name_index(node_states, STORE_NODE_STATES, col_text(s, 10));
  n->state = st < 0 ? STORE_NODE_DOWN : (enum store_node_state)st;
  n->live_vms = col_u32(s, 11);
  n->used_vcpus = col_u64(s, 12);
  n->used_memory_mib = col_u64(s, 13);
  n->used_disk_bytes = col_u64(s, 14);
}

static const size_t node_strings[] = {
  offsetof(struct store_node, id), offsetof(struct store_node, nbd_uri),
  offsetof(struct store_node, control_url), offsetof(struct store_node, rack),
  offsetof(struct store_node, zone),
};

/* 1 if node id exists, 0 if not, STORE_ERROR. */
static int
node_exists(struct store *st, const char *id, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_NODE_EXISTS, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_ROW)
    return 1;
  if (r == SQLITE_DONE)
    return 0;
  return fail_db(st, err, "look up node \"%s\"", id);
}

/* STORE_OK unless another node that is ready advertises node id's NBD
 * address or control URL (STORE_CONFLICT naming it): two nodes of one NBD
 * address would let one serve, or refuse, the other's children; two of
 * one control URL would send one's VMs and attachments to the other.
 * Register: s is S_NODE_NBD_HOLDER bound to n's addresses; heartbeat: s
 * is S_NODE_HB_HOLDER (the addresses id registered).  A down node's
 * addresses may be taken: the node that held them then gets this 409 on
 * its next heartbeat or registration, and stays down. */
static int
addresses_free(struct store *st, enum stmt_id which, const char *id,
               const struct store_node *n, const char *what,
               struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, which, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  if (n) {
    sqlite3_bind_text(s, 2, n->nbd_uri, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, n->control_url, -1, SQLITE_STATIC);
  }
  int r = sqlite3_step(s);
  if (r == SQLITE_ROW)
    return fail(err, STORE_CONFLICT, "%s of node \"%s\": %s %s is already advertised by node \"%s\", which is ready; node \"%s\" stays down until it registers with its own address or \"%s\" is stopped and marked down",
                what, id, col_text(s, 1), col_text(s, 2), col_text(s, 0), id,
                col_text(s, 0));
  if (r == SQLITE_DONE)
    return STORE_OK;
  return fail_db(st, err, "look up the nodes sharing the addresses of node \"%s\"", id);
}

int
store_node_register(struct store *st, const struct store_node *n,
                    bool *created, struct store_err *err)
{
  if (empty(n->id) || empty(n->nbd_uri) || empty(n->control_url))
    return fail(err, STORE_INVALID,
                "%s: register node: id, nbd_uri and control_url are required",
                st->path);
  if (n->memory_mib > INT64_MAX || n->disk_bytes > INT64_MAX)
    return fail(err, STORE_INVALID, "%s: register node \"%s\": capacity too "
                "large", st->path, n->id);
  if (tx_begin(st, true, err) < 0)
    return STORE_ERROR;
  int rc = addresses_free(st, S_NODE_NBD_HOLDER, n->id, n, "registration",
                          err);
  if (rc == STORE_OK)
    rc = node_exists(st, n->id, err);
  bool is_new = rc == 0;
  if (rc >= 0) {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_NODE_UPSERT, err);
    rc = STORE_ERROR;
    if (s) {
      int b = 0;
      b |= sqlite3_bind_text(s, 1, n->id, -1, SQLITE_STATIC);
      b |= sqlite3_bind_text(s, 2, n->nbd_uri, -1, SQLITE_STATIC);
      b |= sqlite3_bind_text(s, 3, n->control_url, -1, SQLITE_STATIC);
      b |= sqlite3_bind_text(s, 4, n->rack ? n->rack : "", -1, SQLITE_STATIC);
      b |= sqlite3_bind_text(s, 5, n->zone ? n->zone : "", -1, SQLITE_STATIC);
      b |= sqlite3_bind_int64(s, 6, n->vcpus);
      b |= sqlite3_bind_int64(s, 7, (int64_t)n->memory_mib);
      b |= sqlite3_bind_int64(s, 8, (int64_t)n->disk_bytes);
      b |= sqlite3_bind_int64(s, 9, now_ms());
      if (b != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
        fail_db(st, err, "register node \"%s\"", n->id);
      else
        rc = STORE_OK;
    }
  }
  rc = tx_end(st, true, rc, err);
  if (rc == STORE_OK) {
    if (created)
      *created = is_new;
    ok(err);
  }
  return rc;
}

/* Runs an UPDATE of one node by id (?1), ?2 = now. */
static int
node_update(struct store *st, enum stmt_id id, const char *node,
            const char *what, struct store_err *err)
{
  if (empty(node))
    return fail(err, STORE_INVALID, "%s: %s: no node id", st->path, what);
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, id, err);
  if (s == NULL)
    return STORE_ERROR;
  int b = sqlite3_bind_text(s, 1, node, -1, SQLITE_STATIC);
  if (sqlite3_bind_parameter_count(s) >= 2)
    b |= sqlite3_bind_int64(s, 2, now_ms());
  if (b != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
    return fail_db(st, err, "%s of node \"%s\"", what, node);
  if (sqlite3_changes(st->db) == 0)
    return fail(err, STORE_NOT_FOUND, "%s: %s: node \"%s\" is not registered",
                st->path, what, node);
  ok(err);
  return STORE_OK;
}

int
store_node_heartbeat(struct store *st, const char *id, struct store_err *err)
{
  if (empty(id))
    return node_update(st, S_NODE_HEARTBEAT, id, "heartbeat", err);
  if (tx_begin(st, false, err) < 0)
    return STORE_ERROR;
  int rc = addresses_free(st, S_NODE_HB_HOLDER, id, NULL, "heartbeat", err);
  if (rc == STORE_OK)
    rc = node_update(st, S_NODE_HEARTBEAT, id, "heartbeat", err);
  return tx_end(st, false, rc, err);
}

int
store_node_mark_down(struct store *st, const char *id, struct store_err *err)
{
  return node_update(st, S_NODE_DOWN, id, "mark down", err);
}

int
store_nodes_expire(struct store *st, int64_t before_ms, store_id_fn *fn,
                   void *opaque, size_t *n, struct store_err *err)
{
  size_t count = 0;
  if (tx_begin(st, false, err) < 0)
    return STORE_ERROR;
  int rc = STORE_ERROR;
  {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_NODE_EXPIRE, err);
    if (s) {
      sqlite3_bind_int64(s, 1, before_ms);
      int r;
      bool stop = false;
      while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        count++;
        if (fn && !stop && fn(col_text(s, 0), opaque) != 0)
          stop = true; /* keep stepping: the update must complete */
      }
      if (r != SQLITE_DONE)
        fail_db(st, err, "mark down nodes silent since %" PRId64, before_ms);
      else
        rc = STORE_OK;
    }
  }
  rc = tx_end(st, false, rc, err);
  if (rc == STORE_OK) {
    if (n)
      *n = count;
    ok(err);
  }
  return rc;
}

struct store_node *
store_node_get(struct store *st, const char *id, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_NODE_GET, err);
  if (s == NULL)
    return NULL;
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE) {
    fail(err, STORE_NOT_FOUND, "%s: node \"%s\" is not registered", st->path,
         id ? id : "");
    return NULL;
  }
  if (r != SQLITE_ROW) {
    fail_db(st, err, "read node \"%s\"", id ? id : "");
    return NULL;
  }
  struct store_node n;
  row_node(s, &n);
  struct store_node *out =
      pack(&n, sizeof n, node_strings,
           sizeof node_strings / sizeof node_strings[0]);
  if (out == NULL)
    fail(err, STORE_ERROR, "%s: read node \"%s\": %s", st->path, id,
         strerror(ENOMEM));
  else
    ok(err);
  return out;
}

/* Steps s, turning each row into a callback; what names the list. */
#define LIST_ROWS(st, s, type, rowfn, fn, opaque, err, ...)                    \
  do {                                                                         \
    int r_;                                                                    \
    while ((r_ = sqlite3_step(s)) == SQLITE_ROW) {                             \
      type row_;                                                               \
      rowfn(s, &row_);                                                         \
      if (fn(&row_, opaque) != 0) {                                            \
        r_ = SQLITE_DONE;                                                      \
        break;                                                                 \
      }                                                                        \
    }                                                                          \
    if (r_ != SQLITE_DONE)                                                     \
      return fail_db(st, err, __VA_ARGS__);                                    \
    ok(err);                                                                   \
    return STORE_OK;                                                           \
  } while (0)

int
store_node_list(struct store *st, unsigned mask, store_node_fn *fn,
                void *opaque, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_NODE_LIST, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_int64(s, 1, mask);
  LIST_ROWS(st, s, struct store_node, row_node, fn, opaque, err, "list nodes");
}

/* ---- images ---- */

static void
row_image(sqlite3_stmt *s, struct store_image *i)
{
  i->name = col_text(s, 0);
  i->origin_nbd = col_text(s, 1);
  i->version = col_text(s, 2);
  i->size = col_u64(s, 3);
  i->registered_at = sqlite3_column_int64(s, 4);
}

static const size_t image_strings[] = {
  offsetof(struct store_image, name),
  offsetof(struct store_image, origin_nbd),
  offsetof(struct store_image, version),
};

static bool
is_hex64(const char *s)
{
  if (s == NULL || strlen(s) != 64)
    return false;
  return strspn(s, "0123456789abcdefABCDEF") == 64;
}

/* Reads image name's version and size: 1 found, 0 not, STORE_ERROR. */
static int
image_lookup(struct store *st, const char *name, char version[65],
             int64_t *size, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_IMAGE_GET, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE)
    return 0;
  if (r != SQLITE_ROW)
    return fail_db(st, err, "read image \"%s\"", name);
  const char *v = col_text(s, 2);
  snprintf(version, 65, "%s", v ? v : "");
  *size = sqlite3_column_int64(s, 3);
  return 1;
}

int
store_image_put(struct store *st, const struct store_image *img,
                bool *created, struct store_err *err)
{
  if (empty(img->name) || empty(img->origin_nbd))
    return fail(err, STORE_INVALID,
                "%s: register image: name and origin_nbd are required",
                st->path);
  if (!is_hex64(img->version))
    return fail(err, STORE_INVALID,
                "%s: register image \"%s\": version is not 64 hex digits",
                st->path, img->name);
  if (img->size > INT64_MAX)
    return fail(err, STORE_INVALID, "%s: register image \"%s\": size too "
                "large", st->path, img->name);
  if (tx_begin(st, true, err) < 0)
    return STORE_ERROR;
  char version[65];
  int64_t size;
  int rc = image_lookup(st, img->name, version, &size, err);
  bool is_new = rc == 0;
  if (rc >= 0) {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_IMAGE_UPSERT, err);
    rc = STORE_ERROR;
    if (s) {
      int b = 0;
      b |= sqlite3_bind_text(s, 1, img->name, -1, SQLITE_STATIC);
      b |= sqlite3_bind_text(s, 2, img->origin_nbd, -1, SQLITE_STATIC);
      b |= sqlite3_bind_text(s, 3, img->version, -1, SQLITE_STATIC);
      b |= sqlite3_bind_int64(s, 4, (int64_t)img->size);
      b |= sqlite3_bind_int64(s, 5, now_ms());
      if (b != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
        fail_db(st, err, "register image \"%s\"", img->name);
      else
        rc = STORE_OK;
    }
  }
  rc = tx_end(st, true, rc, err);
  if (rc == STORE_OK) {
    if (created)
      *created = is_new;
    ok(err);
  }
  return rc;
}

struct store_image *
store_image_get(struct store *st, const char *name, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_IMAGE_GET, err);
  if (s == NULL)
    return NULL;
  sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE) {
    fail(err, STORE_NOT_FOUND, "%s: image \"%s\" is not registered",
         st->path, name ? name : "");
    return NULL;
  }
  if (r != SQLITE_ROW) {
    fail_db(st, err, "read image \"%s\"", name ? name : "");
    return NULL;
  }
  struct store_image i;
  row_image(s, &i);
  struct store_image *out =
      pack(&i, sizeof i, image_strings,
           sizeof image_strings / sizeof image_strings[0]);
  if (out == NULL)
    fail(err, STORE_ERROR, "%s: read image \"%s\": %s", st->path, name,
         strerror(ENOMEM));
  else
    ok(err);
  return out;
}

int
store_image_list(struct store *st, store_image_fn *fn, void *opaque,
                 struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_IMAGE_LIST, err);
  if (s == NULL)
    return STORE_ERROR;
  LIST_ROWS(st, s, struct store_image, row_image, fn, opaque, err,
            "list images");
}

/* ---- trees (encoding) ---- */

/* Writes s at o as a JSON string (at most 6 · strlen(s) + 2 bytes);
 * returns the end. */
static char *
json_string(char *o, const char *s)
{
  *o++ = '"';
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      *o++ = '\\';
      *o++ = (char)*c;
    } else if (*c < 0x20) {
      o += sprintf(o, "\\u%04x", *c);
    } else {
      *o++ = (char)*c;
    }
  }
  *o++ = '"';
  return o;
}

/* Checks row and writes its upstream list as a JSON array into st->jbuf. */
static int
tree_row_json(struct store *st, const char *cluster,
              const struct store_tree_row *row, size_t i,
              struct store_err *err)
{
  if (empty(row->node_id))
    return fail(err, STORE_INVALID, "%s: cluster %s: tree row %zu: no node id",
                st->path, cluster, i);
  if (row->depth < 1 || (row->parent == NULL) != (row->depth == 1) ||
      (row->parent && row->parent[0] == '\0'))
    return fail(err, STORE_INVALID,
                "%s: cluster %s: tree row %zu (node \"%s\"): depth %" PRIu32
                " and parent %s%s%s disagree (parent NULL exactly at depth 1)",
                st->path, cluster, i, row->node_id, row->depth,
                row->parent ? "\"" : "", row->parent ? row->parent : "NULL",
                row->parent ? "\"" : "");
  if (row->n_upstreams < 1 || row->n_upstreams > STORE_UPSTREAMS_MAX ||
      row->upstreams == NULL)
    return fail(err, STORE_INVALID,
                "%s: cluster %s: tree row %zu (node \"%s\"): %zu upstreams, "
                "not 1..%d",
                st->path, cluster, i, row->node_id, row->n_upstreams,
                STORE_UPSTREAMS_MAX);
  size_t need = 3; /* [ ] NUL */
  for (size_t u = 0; u < row->n_upstreams; u++) {
    if (empty(row->upstreams[u]))
      return fail(err, STORE_INVALID,
                  "%s: cluster %s: tree row %zu (node \"%s\"): upstream %zu "
                  "is empty",
                  st->path, cluster, i, row->node_id, u);
    need += 6 * strlen(row->upstreams[u]) + 3; /* "…" , */
  }
  if (need > st->jcap) {
    char *p = realloc(st->jbuf, need);
    if (p == NULL)
      return fail(err, STORE_ERROR, "%s: cluster %s: tree row %zu: %s",
                  st->path, cluster, i, strerror(ENOMEM));
    st->jbuf = p;
    st->jcap = need;
  }
  char *o = st->jbuf;
  *o++ = '[';
  for (size_t u = 0; u < row->n_upstreams; u++) {
    if (u > 0)
      *o++ = ',';
    o = json_string(o, row->upstreams[u]);
  }
  *o++ = ']';
  *o = '\0';
  return STORE_OK;
}

/* Writes tree rows with statement sid (insert or upsert). */
static int
tree_write(struct store *st, enum stmt_id sid, const char *cluster,
           const struct store_tree_row *rows, size_t n, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, sid, err);
  if (s == NULL)
    return STORE_ERROR;
  for (size_t i = 0; i < n; i++) {
    int rc = tree_row_json(st, cluster, &rows[i], i, err);
    if (rc < 0)
      return rc;
    int b = 0;
    b |= sqlite3_bind_text(s, 1, cluster, -1, SQLITE_STATIC);
    b |= sqlite3_bind_text(s, 2, rows[i].node_id, -1, SQLITE_STATIC);
    b |= sqlite3_bind_text(s, 3, rows[i].parent, -1, SQLITE_STATIC);
    b |= sqlite3_bind_int64(s, 4, rows[i].depth);
    b |= sqlite3_bind_text(s, 5, st->jbuf, -1, SQLITE_STATIC);
    int r = b == SQLITE_OK ? sqlite3_step(s) : b;
    sqlite3_reset(s);
    if (r != SQLITE_DONE) {
      int x = sqlite3_extended_errcode(st->db);
      if (x == SQLITE_CONSTRAINT_FOREIGNKEY)
        return fail(err, STORE_INVALID,
                    "%s: cluster %s: tree row %zu: node \"%s\" is not "
                    "registered",
                    st->path, cluster, i, rows[i].node_id);
      if (x == SQLITE_CONSTRAINT_PRIMARYKEY)
        return fail(err, STORE_INVALID,
                    "%s: cluster %s: tree row %zu: node \"%s\" appears twice",
                    st->path, cluster, i, rows[i].node_id);
      return fail_db(st, err, "cluster %s: write tree row %zu (node \"%s\")",
                     cluster, i, rows[i].node_id);
    }
  }
  return STORE_OK;
}

/* ---- clusters ---- */

static const size_t cluster_strings[] = {
  offsetof(struct store_cluster, id),
  offsetof(struct store_cluster, name),
  offsetof(struct store_cluster, image),
  offsetof(struct store_cluster, image_version),
  offsetof(struct store_cluster, idempotency_key),
  offsetof(struct store_cluster, request_hash),
  offsetof(struct store_cluster, error),
};

static void
row_cluster(sqlite3_stmt *s, struct store_cluster *c)
{
  memset(c, 0, sizeof *c);
  c->id = col_text(s, 0);
  c->name = col_text(s, 1);
  c->image = col_text(s, 2);
  c->image_version = col_text(s, 3);
  c->count = col_u32(s, 4);
  c->vcpus = col_u32(s, 5);
  c->memory_mib = col_u64(s, 6);
  c->disk_gib = col_u64(s, 7);
  int p = name_index(placements, 2, col_text(s, 8));
  c->placement = p < 0 ? STORE_PLACEMENT_SPREAD : (enum store_placement)p;
  c->fanout = col_u32(s, 9);
  c->idempotency_key = col_text(s, 10);
  c->request_hash = col_text(s, 11);
  int st = name_index(cluster_states, STORE_CLUSTER_STATES, col_text(s, 12));
  c->state = st < 0 ? STORE_CLUSTER_FAILED : (enum store_cluster_state)st;
  c->created_at = sqlite3_column_int64(s, 13);
  c->updated_at = sqlite3_column_int64(s, 14);
  c->finished_at = sqlite3_column_int64(s, 15);
  c->error = col_text(s, 16);
  for (int i = 0; i < STORE_VM_STATES; i++)
    c->vms[i] = col_u32(s, 17 + i);
}

static int
new_id(char out[STORE_ID_LEN + 1])
{
  unsigned char b[STORE_ID_LEN / 2];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = getrandom(b + got, sizeof b - got, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    got += (size_t)r;
  }
  for (size_t i = 0; i < sizeof b; i++)
    sprintf(out + 2 * i, "%02x", b[i]);
  return 0;
}

/* Looks up key: 1 found (id, hash copied), 0 not, STORE_ERROR. */
static int
key_lookup(struct store *st, const char *key, char id[STORE_ID_LEN + 1],
           char **hash, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_KEY_FIND, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE)
    return 0;
  if (r != SQLITE_ROW)
    return fail_db(st, err, "look up idempotency key \"%s\"", key);
  snprintf(id, STORE_ID_LEN + 1, "%s", col_text(s, 0) ? col_text(s, 0) : "");
  *hash = NULL;
  if (col_text(s, 1) && (*hash = strdup(col_text(s, 1))) == NULL)
    return fail(err, STORE_ERROR, "%s: look up idempotency key: %s",
                st->path, strerror(ENOMEM));
  return 1;
}

static bool
same_hash(const char *a, const char *b)
{
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static int
check_spec(struct store *st, const struct store_cluster *c,
           const char *const *vm_nodes, const struct store_tree_row *tree,
           size_t n_tree, struct store_err *err)
{
  const char *name = c->name ? c->name : "";
  if (empty(c->name) || empty(c->image))
    return fail(err, STORE_INVALID,
                "%s: create cluster: name and image are required", st->path);
  if (c->count < 1 || vm_nodes == NULL)
    return fail(err, STORE_INVALID,
                "%s: create cluster \"%s\": count must be at least 1 with "
                "a node for each VM",
                st->path, name);
  if (c->vcpus < 1 || c->memory_mib < 1 || c->memory_mib > INT64_MAX)
    return fail(err, STORE_INVALID,
                "%s: create cluster \"%s\": vcpus and memory_mib must be "
                "positive",
                st->path, name);
  if (c->disk_gib > (uint64_t)(INT64_MAX / GIB))
    return fail(err, STORE_INVALID,
                "%s: create cluster \"%s\": disk_gib %" PRIu64 " too large",
                st->path, name, c->disk_gib);
  if ((unsigned)c->placement > STORE_PLACEMENT_PACK)
    return fail(err, STORE_INVALID,
                "%s: create cluster \"%s\": unknown placement %d", st->path,
                name, (int)c->placement);
  if (c->idempotency_key && c->idempotency_key[0] == '\0')
    return fail(err, STORE_INVALID,
                "%s: create cluster \"%s\": empty idempotency key", st->path,
                name);
  for (uint32_t i = 0; i < c->count; i++)
    if (empty(vm_nodes[i]))
      return fail(err, STORE_INVALID,
                  "%s: create cluster \"%s\": VM %" PRIu32 " has no node",
                  st->path, name, i);
  if (n_tree > 0 && tree == NULL)
    return fail(err, STORE_INVALID,
                "%s: create cluster \"%s\": no tree rows given", st->path,
                name);
  return STORE_OK;
}

/* The body of store_cluster_create, inside its transaction. */
static int
cluster_insert(struct store *st, const struct store_cluster *c,
               const char *const *vm_nodes, const struct store_tree_row *tree,
               size_t n_tree, char id[STORE_ID_LEN + 1], bool *replayed,
               struct store_err *err)
{
  *replayed = false;
  if (c->idempotency_key) {
    CLEANUP_FREE char *hash = NULL;
    int r = key_lookup(st, c->idempotency_key, id, &hash, err);
    if (r < 0)
      return r;
    if (r == 1) {
      if (!same_hash(hash, c->request_hash))
        return fail(err, STORE_CONFLICT,
                    "%s: create cluster \"%s\": idempotency key \"%s\" was "
                    "used by cluster %s for another request",
                    st->path, c->name, c->idempotency_key, id);
      *replayed = true;
      return STORE_OK;
    }
  }

  char version[65];
  int64_t image_size;
  int r = image_lookup(st, c->image, version, &image_size, err);
  if (r < 0)
    return r;
  if (r == 0)
    return fail(err, STORE_NOT_FOUND,
                "%s: create cluster \"%s\": image \"%s\" is not registered",
                st->path, c->name, c->image);

  {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_CLUSTER_LIVE_NAME, err);
    if (s == NULL)
      return STORE_ERROR;
    sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
    r = sqlite3_step(s);
    if (r == SQLITE_ROW)
      return fail(err, STORE_CONFLICT,
                  "%s: create cluster \"%s\": cluster %s of that name is not "
                  "deleted",
                  st->path, c->name, col_text(s, 0));
    if (r != SQLITE_DONE)
      return fail_db(st, err, "create cluster \"%s\": look up its name",
                     c->name);
  }

  if (new_id(id) < 0)
    return fail(err, STORE_ERROR, "%s: create cluster \"%s\": getrandom: %s",
                st->path, c->name, strerror(errno));
  int64_t now = now_ms();
  int64_t disk = c->disk_gib ? (int64_t)c->disk_gib * GIB : image_size;
  {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_CLUSTER_INSERT, err);
    if (s == NULL)
      return STORE_ERROR;
    int b = 0;
    b |= sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    b |= sqlite3_bind_text(s, 2, c->name, -1, SQLITE_STATIC);
    b |= sqlite3_bind_text(s, 3, c->image, -1, SQLITE_STATIC);
    b |= sqlite3_bind_text(s, 4, version, -1, SQLITE_STATIC);
    b |= sqlite3_bind_int64(s, 5, c->count);
    b |= sqlite3_bind_int64(s, 6, c->vcpus);
    b |= sqlite3_bind_int64(s, 7, (int64_t)c->memory_mib);
    if (c->disk_gib)
      b |= sqlite3_bind_int64(s, 8, (int64_t)c->disk_gib);
    b |= sqlite3_bind_text(s, 9, placements[c->placement], -1, SQLITE_STATIC);
    if (c->fanout)
      b |= sqlite3_bind_int64(s, 10, c->fanout);
    b |= sqlite3_bind_text(s, 11, c->idempotency_key, -1, SQLITE_STATIC);
    b |= sqlite3_bind_text(s, 12, c->request_hash, -1, SQLITE_STATIC);
    b |= sqlite3_bind_int64(s, 13, now);
    r = b == SQLITE_OK ? sqlite3_step(s) : b;
    if (r != SQLITE_DONE) {
      /* The checks above run in this transaction; only a change of the
       * schema's rules could get here. */
      if (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_UNIQUE)
        return fail(err, STORE_CONFLICT, "%s: create cluster \"%s\": %s",
                    st->path, c->name, sqlite3_errmsg(st->db));
      return fail_db(st, err, "create cluster \"%s\"", c->name);
    }
  }

  /* VM i: id CLUSTERID-IIII, name NAME-IIII, the same width for all. */
  int width = 4;
  for (uint32_t lim = 10000; width < 10 && c->count > lim; lim *= 10)
    width++;
  size_t namelen = strlen(c->name) + 16;
  CLEANUP_FREE char *vname = malloc(namelen);
  if (vname == NULL)
    return fail(err, STORE_ERROR, "%s: create cluster \"%s\": %s", st->path,
                c->name, strerror(ENOMEM));
  {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_VM_INSERT, err);
    if (s == NULL)
      return STORE_ERROR;
    for (uint32_t i = 0; i < c->count; i++) {
      char vid[STORE_ID_LEN + 16];
      snprintf(vid, sizeof vid, "%s-%0*" PRIu32, id, width, i);
      snprintf(vname, namelen, "%s-%0*" PRIu32, c->name, width, i);
      int b = 0;
      b |= sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
      b |= sqlite3_bind_int64(s, 2, i);
      b |= sqlite3_bind_text(s, 3, vid, -1, SQLITE_STATIC);
      b |= sqlite3_bind_text(s, 4, vname, -1, SQLITE_STATIC);
      b |= sqlite3_bind_text(s, 5, vm_nodes[i], -1, SQLITE_STATIC);
      b |= sqlite3_bind_int64(s, 6, now);
      b |= sqlite3_bind_int64(s, 7, c->vcpus);
      b |= sqlite3_bind_int64(s, 8, (int64_t)c->memory_mib);
      b |= sqlite3_bind_int64(s, 9, disk);
      r = b == SQLITE_OK ? sqlite3_step(s) : b;
      sqlite3_reset(s);
      if (r != SQLITE_DONE) {
        if (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
          return fail(err, STORE_INVALID,
                      "%s: create cluster \"%s\": VM %" PRIu32
                      ": node \"%s\" is not registered",
                      st->path, c->name, i, vm_nodes[i]);
        return fail_db(st, err, "create cluster \"%s\": insert VM %" PRIu32,
                       c->name, i);
      }
    }
  }
  return tree_write(st, S_TREE_INSERT, id, tree, n_tree, err);
}

int
store_cluster_create(struct store *st, const struct store_cluster *c,
                     const char *const *vm_nodes,
                     const struct store_tree_row *tree, size_t n_tree,
                     char id_out[STORE_ID_LEN + 1], bool *replayed,
                     struct store_err *err)
{
  int rc = check_spec(st, c, vm_nodes, tree, n_tree, err);
  if (rc < 0)
    return rc;
  if (tx_begin(st, true, err) < 0)
    return STORE_ERROR;
  char id[STORE_ID_LEN + 1] = "";
  bool again = false;
  rc = cluster_insert(st, c, vm_nodes, tree, n_tree, id, &again, err);
  rc = tx_end(st, true, rc, err);
  if (rc == STORE_OK) {
    memcpy(id_out, id, sizeof id);
    if (replayed)
      *replayed = again;
    ok(err);
  }
  return rc;
}

int
store_cluster_find_key(struct store *st, const char *key,
                       const char *request_hash,
                       char id_out[STORE_ID_LEN + 1], bool *same_request,
                       struct store_err *err)
{
  if (empty(key))
    return fail(err, STORE_INVALID, "%s: look up idempotency key: empty key",
                st->path);
  CLEANUP_FREE char *hash = NULL;
  char id[STORE_ID_LEN + 1];
  int r = key_lookup(st, key, id, &hash, err);
  if (r < 0)
    return r;
  if (r == 0)
    return fail(err, STORE_NOT_FOUND, "%s: idempotency key \"%s\" is unused",
                st->path, key);
  memcpy(id_out, id, sizeof id);
  if (same_request)
    *same_request = same_hash(hash, request_hash);
  ok(err);
  return STORE_OK;
}

struct store_cluster *
store_cluster_get(struct store *st, const char *id, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_CLUSTER_GET, err);
  if (s == NULL)
    return NULL;
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE) {
    fail(err, STORE_NOT_FOUND, "%s: no cluster %s", st->path, id ? id : "");
    return NULL;
  }
  if (r != SQLITE_ROW) {
    fail_db(st, err, "read cluster %s", id ? id : "");
    return NULL;
  }
  struct store_cluster c;
  row_cluster(s, &c);
  struct store_cluster *out =
      pack(&c, sizeof c, cluster_strings,
           sizeof cluster_strings / sizeof cluster_strings[0]);
  if (out == NULL)
    fail(err, STORE_ERROR, "%s: read cluster %s: %s", st->path, id,
         strerror(ENOMEM));
  else
    ok(err);
  return out;
}

int
store_cluster_list(struct store *st, unsigned mask, store_cluster_fn *fn,
                   void *opaque, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_CLUSTER_LIST, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_int64(s, 1, mask);
  LIST_ROWS(st, s, struct store_cluster, row_cluster, fn, opaque, err,
            "list clusters");
}

/* After an UPDATE … WHERE id AND state in mask changed nothing: which
 * of the two failed.  sid selects the state of the row by id. */
static int
explain_no_change(struct store *st, enum stmt_id sid, const char *what,
                  const char *id, const char *to, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, sid, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE)
    return fail(err, STORE_NOT_FOUND, "%s: no %s %s", st->path, what, id);
  if (r != SQLITE_ROW)
    return fail_db(st, err, "read %s %s", what, id);
  return fail(err, STORE_CONFLICT, "%s: %s %s is %s, which cannot become %s",
              st->path, what, id, col_text(s, 0), to);
}

/* Runs UPDATE sid with ?1 key, ?2 state name, ?3 text, ?4 now, ?5 mask;
 * *changed gets the rows changed. */
static int
set_state(struct store *st, enum stmt_id sid, const char *key,
          const char *to, const char *text, unsigned mask, size_t *changed,
          const char *what, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, sid, err);
  if (s == NULL)
    return STORE_ERROR;
  int b = 0;
  b |= sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 2, to, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 3, text, -1, SQLITE_STATIC);
  b |= sqlite3_bind_int64(s, 4, now_ms());
  b |= sqlite3_bind_int64(s, 5, mask);
  if (b != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
    return fail_db(st, err, "set %s %s to %s", what, key, to);
  *changed = (size_t)sqlite3_changes64(st->db);
  return STORE_OK;
}

int
store_cluster_set_state(struct store *st, const char *id, unsigned from_mask,
                        enum store_cluster_state to, const char *error,
                        struct store_err *err)
{
  if (empty(id) || (unsigned)to >= STORE_CLUSTER_STATES)
    return fail(err, STORE_INVALID, "%s: set cluster state: bad id or state",
                st->path);
  if (tx_begin(st, true, err) < 0)
    return STORE_ERROR;
  size_t changed = 0;
  int rc = set_state(st, S_CLUSTER_SET_STATE, id, cluster_states[to], error,
                     from_mask, &changed, "cluster", err);
  if (rc == STORE_OK && changed == 0)
    rc = explain_no_change(st, S_CLUSTER_STATE, "cluster", id,
                           cluster_states[to], err);
  rc = tx_end(st, true, rc, err);
  if (rc == STORE_OK)
    ok(err);
  return rc;
}

int
store_cluster_delete(struct store *st, const char *id, struct store_err *err)
{
  if (empty(id))
    return fail(err, STORE_INVALID, "%s: delete cluster: no id", st->path);
  if (tx_begin(st, true, err) < 0)
    return STORE_ERROR;
  int rc = STORE_ERROR;
  {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_CLUSTER_DELETE, err);
    if (s) {
      sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
      if (sqlite3_step(s) != SQLITE_DONE)
        fail_db(st, err, "delete cluster %s", id);
      else if (sqlite3_changes(st->db) == 0)
        rc = fail(err, STORE_NOT_FOUND, "%s: no cluster %s", st->path, id);
      else
        rc = STORE_OK;
    }
  }
  rc = tx_end(st, true, rc, err);
  if (rc == STORE_OK)
    ok(err);
  return rc;
}

/* ---- VMs ---- */

static const size_t vm_strings[] = {
  offsetof(struct store_vm, id), offsetof(struct store_vm, cluster_id),
  offsetof(struct store_vm, name), offsetof(struct store_vm, node_id),
  offsetof(struct store_vm, reason),
};

static void
row_vm(sqlite3_stmt *s, struct store_vm *v)
{
  v->id = col_text(s, 0);
  v->cluster_id = col_text(s, 1);
  v->index = col_u32(s, 2);
  v->name = col_text(s, 3);
  v->node_id = col_text(s, 4);
  int st = name_index(vm_states, STORE_VM_STATES, col_text(s, 5));
  v->state = st < 0 ? STORE_VM_FAILED : (enum store_vm_state)st;
  v->reason = col_text(s, 6);
  v->created_at = sqlite3_column_int64(s, 7);
  v->updated_at = sqlite3_column_int64(s, 8);
  v->running_at = sqlite3_column_int64(s, 9);
}

int
store_vm_set_state(struct store *st, const char *id, unsigned from_mask,
                   enum store_vm_state to, const char *reason,
                   struct store_err *err)
{
  if (empty(id) || (unsigned)to >= STORE_VM_STATES)
    return fail(err, STORE_INVALID, "%s: set VM state: bad id or state",
                st->path);
  size_t changed = 0;
  int rc = set_state(st, S_VM_SET_STATE, id, vm_states[to], reason,
                     from_mask, &changed, "VM", err);
  if (rc == STORE_OK && changed == 0)
    rc = explain_no_change(st, S_VM_STATE, "VM", id, vm_states[to], err);
  if (rc == STORE_OK)
    ok(err);
  return rc;
}

int
store_vm_set_state_on_node(struct store *st, const char *node_id,
                           unsigned from_mask, enum store_vm_state to,
                           const char *reason, size_t *n,
                           struct store_err *err)
{
  if (empty(node_id) || (unsigned)to >= STORE_VM_STATES)
    return fail(err, STORE_INVALID,
                "%s: set VM states on a node: bad node id or state",
                st->path);
  size_t changed = 0;
  int rc = set_state(st, S_VM_SET_STATE_NODE, node_id, vm_states[to], reason,
                     from_mask, &changed, "VMs on node", err);
  if (rc == STORE_OK) {
    if (n)
      *n = changed;
    ok(err);
  }
  return rc;
}

struct store_vm *
store_vm_get(struct store *st, const char *id, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_VM_GET, err);
  if (s == NULL)
    return NULL;
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE) {
    fail(err, STORE_NOT_FOUND, "%s: no VM %s", st->path, id ? id : "");
    return NULL;
  }
  if (r != SQLITE_ROW) {
    fail_db(st, err, "read VM %s", id ? id : "");
    return NULL;
  }
  struct store_vm v;
  row_vm(s, &v);
  struct store_vm *out = pack(&v, sizeof v, vm_strings,
                              sizeof vm_strings / sizeof vm_strings[0]);
  if (out == NULL)
    fail(err, STORE_ERROR, "%s: read VM %s: %s", st->path, id,
         strerror(ENOMEM));
  else
    ok(err);
  return out;
}

int
store_vm_list_cluster(struct store *st, const char *cluster_id,
                      store_vm_fn *fn, void *opaque, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_VM_LIST_CLUSTER, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, cluster_id, -1, SQLITE_STATIC);
  LIST_ROWS(st, s, struct store_vm, row_vm, fn, opaque, err,
            "list VMs of cluster %s", cluster_id ? cluster_id : "");
}

int
store_vm_list_node(struct store *st, const char *node_id, unsigned mask,
                   store_vm_fn *fn, void *opaque, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_VM_LIST_NODE, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, node_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 2, mask);
  LIST_ROWS(st, s, struct store_vm, row_vm, fn, opaque, err,
            "list VMs on node \"%s\"", node_id ? node_id : "");
}

/* ---- trees ---- */

int
store_tree_list(struct store *st, const char *cluster_id, store_tree_fn *fn,
                void *opaque, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_TREE_LIST, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, cluster_id, -1, SQLITE_STATIC);
  int r;
  while ((r = sqlite3_step(s)) == SQLITE_ROW) {
    struct store_tree_row row = {
      .node_id = col_text(s, 0),
      .parent = col_text(s, 1),
      .depth = col_u32(s, 2),
      .upstreams_json = col_text(s, 3),
    };
    const char *ups[STORE_UPSTREAMS_MAX];
    char perr[128];
    CLEANUP_JSON_PUT struct json_object *a =
        row.upstreams_json
            ? jsonutil_parse(row.upstreams_json, strlen(row.upstreams_json), 2,
                             JSONUTIL_DUPS_OK, "upstreams", perr, sizeof perr)
            : NULL;
    size_t n = a && json_object_is_type(a, json_type_array)
                   ? json_object_array_length(a)
                   : 0;
    if (n < 1 || n > STORE_UPSTREAMS_MAX)
      return fail(err, STORE_ERROR,
                  "%s: cluster %s: tree row of node \"%s\": upstreams is not "
                  "a JSON array of 1..%d strings",
                  st->path, cluster_id, row.node_id, STORE_UPSTREAMS_MAX);
    for (size_t i = 0; i < n; i++) {
      struct json_object *e = json_object_array_get_idx(a, i);
      if (!json_object_is_type(e, json_type_string))
        return fail(err, STORE_ERROR,
                    "%s: cluster %s: tree row of node \"%s\": upstream %zu "
                    "is not a string",
                    st->path, cluster_id, row.node_id, i);
      ups[i] = json_object_get_string(e);
    }
    row.upstreams = ups;
    row.n_upstreams = n;
    if (fn(&row, opaque) != 0) {
      r = SQLITE_DONE;
      break;
    }
  }
  if (r != SQLITE_DONE)
    return fail_db(st, err, "read tree of cluster %s", cluster_id);
  ok(err);
  return STORE_OK;
}

/* 1 if cluster id exists, 0 if not, STORE_ERROR. */
static int
cluster_exists(struct store *st, const char *id, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_CLUSTER_STATE, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_ROW)
    return 1;
  if (r == SQLITE_DONE)
    return 0;
  return fail_db(st, err, "read cluster %s", id);
}

int
store_tree_update(struct store *st, const char *cluster_id,
                  const struct store_tree_row *rows, size_t n,
                  struct store_err *err)
{
  if (empty(cluster_id) || (n > 0 && rows == NULL))
    return fail(err, STORE_INVALID, "%s: update tree: bad arguments",
                st->path);
  if (tx_begin(st, false, err) < 0)
    return STORE_ERROR;
  int rc = cluster_exists(st, cluster_id, err);
  if (rc == 0)
    rc = fail(err, STORE_NOT_FOUND, "%s: no cluster %s", st->path,
              cluster_id);
  else if (rc == 1)
    rc = tree_write(st, S_TREE_UPSERT, cluster_id, rows, n, err);
  rc = tx_end(st, false, rc, err);
  if (rc == STORE_OK)
    ok(err);
  return rc;
}

/* ---- events ---- */

int
store_event_add(struct store *st, const char *cluster_id, const char *vm_id,
                const char *kind, const char *message, struct store_err *err)
{
  if (empty(cluster_id) || empty(kind) || message == NULL)
    return fail(err, STORE_INVALID,
                "%s: add event: cluster id, kind and message are required",
                st->path);
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_EVENT_INSERT, err);
  if (s == NULL)
    return STORE_ERROR;
  int b = 0;
  b |= sqlite3_bind_int64(s, 1, now_ms());
  b |= sqlite3_bind_text(s, 2, cluster_id, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 3, vm_id, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 4, kind, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 5, message, -1, SQLITE_STATIC);
  if (b != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE) {
    if (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
      return fail(err, STORE_NOT_FOUND, "%s: add event: no cluster %s",
                  st->path, cluster_id);
    return fail_db(st, err, "add event to cluster %s", cluster_id);
  }
  ok(err);
  return STORE_OK;
}

static void
row_event(sqlite3_stmt *s, struct store_event *e)
{
  e->seq = sqlite3_column_int64(s, 0);
  e->at = sqlite3_column_int64(s, 1);
  e->cluster_id = col_text(s, 2);
  e->vm_id = col_text(s, 3);
  e->kind = col_text(s, 4);
  e->message = col_text(s, 5);
}

int
store_event_list(struct store *st, const char *cluster_id, int64_t after_seq,
                 size_t limit, store_event_fn *fn, void *opaque,
                 struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_EVENT_LIST, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, cluster_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 2, after_seq);
  sqlite3_bind_int64(s, 3, limit == 0 || limit > INT64_MAX ? -1
                                                           : (int64_t)limit);
  LIST_ROWS(st, s, struct store_event, row_event, fn, opaque, err,
            "list events of cluster %s", cluster_id ? cluster_id : "");
}

/* ---- attachments ---- */

int
store_attachment_put(struct store *st, const char *node_id, const char *image,
                     const char *version, struct store_err *err)
{
  if (empty(node_id) || empty(image) || version == NULL ||
      strlen(version) != 64)
    return fail(err, STORE_INVALID,
                "%s: record attachment: node, image and a 64-digit version"
                " are required", st->path);
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_ATT_PUT, err);
  if (s == NULL)
    return STORE_ERROR;
  int b = 0;
  b |= sqlite3_bind_text(s, 1, node_id, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 2, image, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 3, version, -1, SQLITE_STATIC);
  b |= sqlite3_bind_int64(s, 4, now_ms());
  if (b != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE) {
    if (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
      return fail(err, STORE_NOT_FOUND, "%s: record attachment: no node %s",
                  st->path, node_id);
    return fail_db(st, err, "record attachment of %s on node %s", image,
                   node_id);
  }
  ok(err);
  return STORE_OK;
}

int
store_attachments_age(struct store *st, int64_t now, int64_t grace_ms,
                      store_attachment_fn *fn, void *opaque,
                      struct store_err *err)
{
  {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_ATT_AGE, err);
    if (s == NULL)
      return STORE_ERROR;
    sqlite3_bind_int64(s, 1, now);
    if (sqlite3_step(s) != SQLITE_DONE)
      return fail_db(st, err, "age attachments");
  }
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_ATT_DUE, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_int64(s, 1, now - grace_ms);
  int r;
  while ((r = sqlite3_step(s)) == SQLITE_ROW) {
    struct store_attachment a = {
      .node_id = col_text(s, 0), .image = col_text(s, 1),
      .version = col_text(s, 2), .attached_at = sqlite3_column_int64(s, 3),
      .idle_since = sqlite3_column_int64(s, 4),
    };
    if (fn(&a, opaque) != 0)
      break;
  }
  if (r != SQLITE_DONE && r != SQLITE_ROW)
    return fail_db(st, err, "list idle attachments");
  ok(err);
  return STORE_OK;
}

/* Runs an attachment statement keyed by node, image, version (and ?4 when
 * at >= 0). */
static int
attachment_update(struct store *st, enum stmt_id sid, const char *node_id,
                  const char *image, const char *version, int64_t at,
                  struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, sid, err);
  if (s == NULL)
    return STORE_ERROR;
  int b = 0;
  b |= sqlite3_bind_text(s, 1, node_id, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 2, image, -1, SQLITE_STATIC);
  b |= sqlite3_bind_text(s, 3, version, -1, SQLITE_STATIC);
  if (at >= 0)
    b |= sqlite3_bind_int64(s, 4, at);
  if (b != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
    return fail_db(st, err, "update attachment of %s on node %s", image,
                   node_id);
  ok(err);
  return STORE_OK;
}

int
store_attachment_forget(struct store *st, const char *node_id,
                        const char *image, const char *version,
                        struct store_err *err)
{
  return attachment_update(st, S_ATT_FORGET, node_id, image, version, -1, err);
}

int
store_attachment_retry(struct store *st, const char *node_id,
                       const char *image, const char *version, int64_t at,
                       struct store_err *err)
{
  return attachment_update(st, S_ATT_RETRY, node_id, image, version, at, err);
}

/* ---- enrolments ---- */

int
store_enrolment_put(struct store *st, const char *node,
                    const uint8_t salt[STORE_SALT_LEN],
                    const uint8_t hash[STORE_HASH_LEN], bool rotate,
                    bool *created, struct store_err *err)
{
  if (empty(node))
    return fail(err, STORE_INVALID, "%s: enrol: no node name", st->path);
  if (tx_begin(st, true, err) < 0)
    return STORE_ERROR;
  int rc = STORE_ERROR;
  bool existed = false;
  {
    CLEANUP_STMT sqlite3_stmt *g = stmt(st, S_ENROL_GET, err);
    int r = SQLITE_ERROR;
    if (g && sqlite3_bind_text(g, 1, node, -1, SQLITE_STATIC) == SQLITE_OK)
      r = sqlite3_step(g);
    existed = r == SQLITE_ROW;
    if (r != SQLITE_ROW && r != SQLITE_DONE)
      fail_db(st, err, "enrol node \"%s\"", node);
    else if (existed && !rotate)
      rc = fail(err, STORE_CONFLICT, "node '%s' is already enrolled: rotate its token (?rotate=true) or revoke it (DELETE) first",
                node);
    else
      rc = STORE_OK;
  }
  if (rc == STORE_OK) {
    CLEANUP_STMT sqlite3_stmt *s =
        stmt(st, existed ? S_ENROL_UPSERT : S_ENROL_INSERT, err);
    rc = STORE_ERROR;
    if (s) {
      int b = sqlite3_bind_text(s, 1, node, -1, SQLITE_STATIC);
      b |= sqlite3_bind_blob(s, 2, salt, STORE_SALT_LEN, SQLITE_STATIC);
      b |= sqlite3_bind_blob(s, 3, hash, STORE_HASH_LEN, SQLITE_STATIC);
      b |= sqlite3_bind_int64(s, 4, now_ms());
      if (b != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
        fail_db(st, err, "enrol node \"%s\"", node);
      else
        rc = STORE_OK;
    }
  }
  rc = tx_end(st, true, rc, err);
  if (rc == STORE_OK) {
    if (created)
      *created = !existed;
    ok(err);
  }
  return rc;
}

int
store_enrolment_get(struct store *st, const char *node,
                    uint8_t salt[STORE_SALT_LEN], uint8_t hash[STORE_HASH_LEN],
                    int64_t *enrolled_at, struct store_err *err)
{
  CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_ENROL_GET, err);
  if (s == NULL)
    return STORE_ERROR;
  sqlite3_bind_text(s, 1, node ? node : "", -1, SQLITE_STATIC);
  int r = sqlite3_step(s);
  if (r == SQLITE_DONE)
    return fail(err, STORE_NOT_FOUND, "node '%s' is not enrolled",
                node ? node : "");
  if (r != SQLITE_ROW)
    return fail_db(st, err, "read the enrolment of node \"%s\"", node);
  /* The CHECK constraints hold the lengths; a file edited by hand that
   * breaks them is an error, not a token check against short bytes. */
  if (sqlite3_column_bytes(s, 0) != STORE_SALT_LEN ||
      sqlite3_column_bytes(s, 1) != STORE_HASH_LEN)
    return fail(err, STORE_ERROR, "%s: the enrolment of node \"%s\" has a salt or hash of the wrong length",
                st->path, node);
  memcpy(salt, sqlite3_column_blob(s, 0), STORE_SALT_LEN);
  memcpy(hash, sqlite3_column_blob(s, 1), STORE_HASH_LEN);
  if (enrolled_at)
    *enrolled_at = sqlite3_column_int64(s, 2);
  ok(err);
  return STORE_OK;
}

int
store_enrolment_delete(struct store *st, const char *node,
                       struct store_err *err)
{
  if (empty(node))
    return fail(err, STORE_INVALID, "%s: revoke: no node name", st->path);
  if (tx_begin(st, true, err) < 0)
    return STORE_ERROR;
  int rc = STORE_ERROR;
  {
    CLEANUP_STMT sqlite3_stmt *s = stmt(st, S_ENROL_DELETE, err);
    if (s == NULL)
      ;
    else if (sqlite3_bind_text(s, 1, node, -1, SQLITE_STATIC) != SQLITE_OK ||
             sqlite3_step(s) != SQLITE_DONE)
      fail_db(st, err, "revoke the enrolment of node \"%s\"", node);
    else if (sqlite3_changes(st->db) == 0)
      rc = fail(err, STORE_NOT_FOUND, "node '%s' is not enrolled", node);
    else
      rc = STORE_OK;
  }
  rc = tx_end(st, true, rc, err);
  if (rc == STORE_OK)
    ok(err);
  return rc;
}
