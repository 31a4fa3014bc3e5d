/* thunder — thunder-api's persistent state in SQLite (see store.c's design
 * note and docs/api-store.md).
 *
 * Nodes, images, clusters with their VMs and relay tree, and events live in
 * one SQLite file (WAL).  store_cluster_create() persists a cluster, all its
 * VMs and all its tree rows in one durable transaction, so thunder-api can
 * answer 202 as soon as it returns, and resume the work after a kill -9.
 *
 * Errors: every function that can fail returns STORE_OK (0) or a negative
 * enum store_code (or NULL for the getters; then err->code says why) and,
 * when err is not NULL, fills err with the code and one sentence that names
 * the database file and what failed.  STORE_CONFLICT is a uniqueness rule
 * (the API answers 409), STORE_NOT_FOUND a missing row (404),
 * STORE_INVALID an argument the store refuses (400/422), STORE_ERROR
 * anything else (500).
 *
 * Durability: every call that returns STORE_OK has committed, and the
 * commit survives a kill -9 of the process.  Calls marked "Durable" also
 * survive a power loss or kernel crash (the WAL is fdatasync'ed before
 * they return); the others (heartbeats, VM states, trees, events) may lose
 * their commits since the last sync then (the next durable commit or WAL
 * checkpoint syncs them too), which the converger re-learns from the nodes.
 *
 * Getters return one heap block (the struct and its strings): free() it.
 * Strings handed to a callback, and the const char * fields of the rows it
 * receives, are valid until the callback returns.  A callback returns 0 to
 * go on and anything else to stop (the list function then returns
 * STORE_OK); it must not call the store it is listing.
 *
 * Threads: a struct store has no internal locking.  Use one struct store
 * per thread, or the caller serialises every call on it.  Several struct
 * store (threads or processes) may share one file: WAL lets readers run
 * beside the one writer, writers queue (busy timeout), and no SQLITE_BUSY
 * reaches the caller unless a writer waits longer than the timeout.
 */
#ifndef THUNDER_STORE_H
#define THUNDER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum store_code {
  STORE_OK = 0,
  STORE_ERROR = -1,      /* I/O, SQLite, memory: 500 */
  STORE_NOT_FOUND = -2,  /* no such node, image, cluster or VM: 404 */
  STORE_CONFLICT = -3,   /* idempotency key, live cluster name, state: 409 */
  STORE_INVALID = -4,    /* a bad argument: 400 or 422 */
};

#define STORE_ERR_MAX 512
#define STORE_ID_LEN 32          /* hex digits of a cluster id */
#define STORE_BUSY_TIMEOUT_MS 5000

/* What a failed call reports. */
struct store_err {
  enum store_code code;
  char msg[STORE_ERR_MAX];
};

enum store_node_state {
  STORE_NODE_READY,
  STORE_NODE_DOWN,
  STORE_NODE_STATES
};

enum store_cluster_state {
  STORE_CLUSTER_PENDING,
  STORE_CLUSTER_PROVISIONING,
  STORE_CLUSTER_RUNNING,
  STORE_CLUSTER_FAILED,
  STORE_CLUSTER_DELETING,
  STORE_CLUSTER_DELETED,
  STORE_CLUSTER_STATES
};

enum store_vm_state {
  STORE_VM_PENDING,
  STORE_VM_VOLUME_READY,
  STORE_VM_RUNNING,
  STORE_VM_FAILED,
  STORE_VM_DELETING,
  STORE_VM_DELETED,
  STORE_VM_STATES
};

enum store_placement {
  STORE_PLACEMENT_SPREAD,
  STORE_PLACEMENT_PACK,
};

/* A set of states for the *_mask arguments: STORE_MASK(s1) | STORE_MASK(s2);
 * 0 means every state. */
#define STORE_MASK(state) (1u << (state))
/* Clusters that thunder-api must carry on with after a restart. */
#define STORE_CLUSTER_UNFINISHED                                               \
  (STORE_MASK(STORE_CLUSTER_PENDING) | STORE_MASK(STORE_CLUSTER_PROVISIONING) | \
   STORE_MASK(STORE_CLUSTER_DELETING))
/* VMs that hold their node's capacity (counted in the usage). */
#define STORE_VM_LIVE                                                          \
  (STORE_MASK(STORE_VM_PENDING) | STORE_MASK(STORE_VM_VOLUME_READY) |          \
   STORE_MASK(STORE_VM_RUNNING) | STORE_MASK(STORE_VM_DELETING))

/* A node.  Input of store_node_register (id … disk_bytes); the rest is
 * filled by the getters.  used_* sum the VMs in STORE_VM_LIVE states placed
 * on the node: free = capacity − used. */
struct store_node {
  const char *id;           /* the node's name */
  const char *nbd_uri;      /* how children reach it: nbd://10.0.0.5:10809 */
  const char *control_url;  /* its thunderd control endpoint */
  const char *rack;         /* "" or NULL = unknown */
  const char *zone;         /* "" or NULL = unknown */
  uint32_t vcpus;
  uint64_t memory_mib;
  uint64_t disk_bytes;      /* capacity for VM disks */
  int64_t registered_at;    /* UNIX ms, first registration */
  int64_t last_heartbeat_at;
  enum store_node_state state;
  uint32_t live_vms;
  uint64_t used_vcpus;
  uint64_t used_memory_mib;
  uint64_t used_disk_bytes; /* disk_gib, or the image size when none */
};

/* An image held by the origin. */
struct store_image {
  const char *name;
  const char *origin_nbd;   /* NBD URI base of the origin */
  const char *version;      /* hex SHA-256 of the manifest, 64 digits */
  uint64_t size;            /* bytes */
  int64_t registered_at;    /* UNIX ms of the last change */
};

/* A cluster.  Input of store_cluster_create: name … request_hash (the other
 * fields are ignored); the getters fill everything. */
struct store_cluster {
  const char *id;           /* 32 hex digits, made by the store */
  const char *name;
  const char *image;
  const char *image_version; /* the image's version when created */
  uint32_t count;           /* VMs */
  uint32_t vcpus;           /* per VM */
  uint64_t memory_mib;      /* per VM */
  uint64_t disk_gib;        /* per VM; 0 = none given (the image's size) */
  enum store_placement placement;
  uint32_t fanout;          /* 0 = none given (the planner chooses) */
  const char *idempotency_key; /* NULL = none */
  const char *request_hash; /* the caller's digest of the request; NULL */
  enum store_cluster_state state;
  int64_t created_at;       /* UNIX ms */
  int64_t updated_at;
  int64_t finished_at;      /* 0 = not finished (running, failed, deleted) */
  const char *error;        /* NULL = none */
  uint32_t vms[STORE_VM_STATES]; /* VMs per state */
};

/* A VM of a cluster. */
struct store_vm {
  const char *id;           /* CLUSTERID-IIII */
  const char *cluster_id;
  uint32_t index;           /* 0 .. count−1 */
  const char *name;         /* CLUSTERNAME-IIII (at least 4 digits) */
  const char *node_id;
  enum store_vm_state state;
  const char *reason;       /* NULL = none */
  int64_t created_at;       /* UNIX ms */
  int64_t updated_at;
  int64_t running_at;       /* 0 = never ran */
};

/* One node's place in a cluster's relay tree. */
struct store_tree_row {
  const char *node_id;
  const char *parent;       /* a node id; NULL = the origin */
  uint32_t depth;           /* 1 under the origin */
  const char *const *upstreams; /* NBD URIs: parent first, origin last */
  size_t n_upstreams;       /* 1 .. STORE_UPSTREAMS_MAX */
  const char *upstreams_json; /* filled by store_tree_list: a JSON array */
};
#define STORE_UPSTREAMS_MAX 64

/* A line of a cluster's history. */
struct store_event {
  int64_t seq;              /* increasing, unique */
  int64_t at;               /* UNIX ms */
  const char *cluster_id;
  const char *vm_id;        /* NULL = the cluster's */
  const char *kind;         /* short word: "vm_failed", "reparent", … */
  const char *message;
};

struct store;

typedef int store_node_fn(const struct store_node *node, void *opaque);
typedef int store_image_fn(const struct store_image *image, void *opaque);
typedef int store_cluster_fn(const struct store_cluster *cluster,
                             void *opaque);
typedef int store_vm_fn(const struct store_vm *vm, void *opaque);
typedef int store_tree_fn(const struct store_tree_row *row, void *opaque);
typedef int store_event_fn(const struct store_event *event, void *opaque);
typedef int store_id_fn(const char *id, void *opaque);

/* ---- the file ---- */

/* Opens or creates the database at path and migrates it to the current
 * schema.  NULL (err) if it is not a SQLite database, belongs to another
 * program, has a newer schema than this code knows, or cannot be opened. */
struct store *store_open(const char *path, struct store_err *err);

/* Closes the store; NULL is fine. */
void store_close(struct store *st);

/* The path given to store_open. */
const char *store_path(const struct store *st);

/* The schema version this code writes (the number of migrations). */
unsigned store_schema_version(void);

/* The SQL of migration step v (1-based: it takes the file from version v−1
 * to v), or NULL; for tests and tools. */
const char *store_migration_sql(unsigned v);

/* Starts a transaction grouping the calls up to store_commit (one commit
 * for many small updates).  durable: the commit survives power loss (see
 * store.c); the batch's level applies to every call inside it.  Each call
 * inside stays atomic (a failed one undoes only itself). */
int store_begin(struct store *st, bool durable, struct store_err *err);

/* Commits the transaction of store_begin. */
int store_commit(struct store *st, struct store_err *err);

/* Rolls back the transaction of store_begin; harmless without one. */
void store_rollback(struct store *st);

/* ---- names of states ---- */

/* The state's name as stored and shown ("ready", "provisioning", …). */
const char *store_node_state_name(enum store_node_state s);
const char *store_cluster_state_name(enum store_cluster_state s);
const char *store_vm_state_name(enum store_vm_state s);
const char *store_placement_name(enum store_placement p);

/* Parses a name back; -1 if unknown. */
int store_cluster_state_from_name(const char *name,
                                  enum store_cluster_state *out);
int store_vm_state_from_name(const char *name, enum store_vm_state *out);
int store_placement_from_name(const char *name, enum store_placement *out);

/* ---- nodes ---- */

/* Registers node n (id … disk_bytes), or updates its addresses, labels and
 * capacity if known; either way it becomes ready with a heartbeat now.
 * *created (may be NULL) tells which.  Durable.  STORE_CONFLICT if another
 * ready node advertises n's NBD address or control URL. */
int store_node_register(struct store *st, const struct store_node *n,
                        bool *created, struct store_err *err);

/* Records a heartbeat of node id now; a down node becomes ready.
 * STORE_NOT_FOUND if it never registered; STORE_CONFLICT (nothing
 * changes) if another ready node now advertises its NBD address or control
 * URL (taken while it was down), as store_node_register refuses. */
int store_node_heartbeat(struct store *st, const char *id,
                         struct store_err *err);

/* Marks node id down. */
int store_node_mark_down(struct store *st, const char *id,
                         struct store_err *err);

/* Marks down every ready node whose last heartbeat is before before_ms;
 * calls fn (may be NULL) with each one's id; *n (may be NULL) gets how
 * many. */
int store_nodes_expire(struct store *st, int64_t before_ms, store_id_fn *fn,
                       void *opaque, size_t *n, struct store_err *err);

/* Node id with its usage; free() it.  NULL (err: STORE_NOT_FOUND, …). */
struct store_node *store_node_get(struct store *st, const char *id,
                                  struct store_err *err);

/* Calls fn for each node in a state of mask (0 = all), by id, with its
 * usage: the scheduler's view of free capacity. */
int store_node_list(struct store *st, unsigned mask, store_node_fn *fn,
                    void *opaque, struct store_err *err);

/* ---- images ---- */

/* Registers image img, or replaces the origin, version and size of the
 * image of that name.  *created (may be NULL) tells which.  Durable. */
int store_image_put(struct store *st, const struct store_image *img,
                    bool *created, struct store_err *err);

/* Image name; free() it.  NULL (err) if unknown. */
struct store_image *store_image_get(struct store *st, const char *name,
                                    struct store_err *err);

/* Calls fn for each image, by name. */
int store_image_list(struct store *st, store_image_fn *fn, void *opaque,
                     struct store_err *err);

/* ---- clusters ---- */

/* Creates cluster c (state pending) with its c->count VMs, VM i placed on
 * vm_nodes[i], and its tree rows tree[0..n_tree), in one durable
 * transaction; writes the new id to id_out.  With an idempotency key
 * already used by the same request_hash, creates nothing, writes that
 * cluster's id and sets *replayed (may be NULL).  STORE_CONFLICT: the key
 * was used with another request_hash, or a cluster of that name is not
 * deleted; STORE_NOT_FOUND: unknown image; STORE_INVALID: bad fields, an
 * unknown node.  Nothing is written unless it returns STORE_OK. */
int store_cluster_create(struct store *st, const struct store_cluster *c,
                         const char *const *vm_nodes,
                         const struct store_tree_row *tree, size_t n_tree,
                         char id_out[STORE_ID_LEN + 1], bool *replayed,
                         struct store_err *err);

/* Looks up an idempotency key: writes the id of its cluster to id_out and
 * sets *same_request when request_hash equals the stored one (both NULL
 * counts as equal).  STORE_NOT_FOUND if the key is unused. */
int store_cluster_find_key(struct store *st, const char *key,
                           const char *request_hash,
                           char id_out[STORE_ID_LEN + 1], bool *same_request,
                           struct store_err *err);

/* Cluster id with its VM counts per state; free() it.  NULL (err). */
struct store_cluster *store_cluster_get(struct store *st, const char *id,
                                        struct store_err *err);

/* Calls fn for each cluster in a state of mask (0 = all), oldest first,
 * with its VM counts.  STORE_CLUSTER_UNFINISHED gives what to resume. */
int store_cluster_list(struct store *st, unsigned mask, store_cluster_fn *fn,
                       void *opaque, struct store_err *err);

/* Moves cluster id to state to if it is in a state of from_mask (0 = any;
 * else STORE_CONFLICT), with error (NULL clears it).  Entering running,
 * failed or deleted sets finished_at.  Durable. */
int store_cluster_set_state(struct store *st, const char *id,
                            unsigned from_mask, enum store_cluster_state to,
                            const char *error, struct store_err *err);

/* Removes cluster id with its VMs, tree rows and events, freeing its
 * name and idempotency key (state deleted keeps the row and the key).
 * Durable. */
int store_cluster_delete(struct store *st, const char *id,
                         struct store_err *err);

/* ---- VMs ---- */

/* Moves VM id to state to if it is in a state of from_mask (0 = any; else
 * STORE_CONFLICT), with reason (NULL clears it).  The first move to
 * running sets running_at. */
int store_vm_set_state(struct store *st, const char *id, unsigned from_mask,
                       enum store_vm_state to, const char *reason,
                       struct store_err *err);

/* Moves every live VM (STORE_VM_LIVE) on node_id in a state of from_mask
 * (0 = any live state) to state to, with reason: a node failed.  *n (may
 * be NULL) gets how many moved.  Failed and deleted VMs are history and
 * stay as they are. */
int store_vm_set_state_on_node(struct store *st, const char *node_id,
                               unsigned from_mask, enum store_vm_state to,
                               const char *reason, size_t *n,
                               struct store_err *err);

/* VM id; free() it.  NULL (err) if unknown. */
struct store_vm *store_vm_get(struct store *st, const char *id,
                              struct store_err *err);

/* Calls fn for each VM of cluster_id, by index.  STORE_OK with no call if
 * the cluster has none or does not exist. */
int store_vm_list_cluster(struct store *st, const char *cluster_id,
                          store_vm_fn *fn, void *opaque,
                          struct store_err *err);

/* Calls fn for each live VM (STORE_VM_LIVE) placed on node_id in a state
 * of mask (0 = any live state), by cluster and index. */
int store_vm_list_node(struct store *st, const char *node_id, unsigned mask,
                       store_vm_fn *fn, void *opaque, struct store_err *err);

/* ---- relay trees ---- */

/* Calls fn for each tree row of cluster_id, by depth then node id. */
int store_tree_list(struct store *st, const char *cluster_id,
                    store_tree_fn *fn, void *opaque, struct store_err *err);

/* Writes rows[0..n) of cluster_id's tree (adds new nodes, replaces the
 * parent, depth and upstreams of known ones) in one transaction: a
 * reparenting.  STORE_NOT_FOUND if the cluster does not exist. */
int store_tree_update(struct store *st, const char *cluster_id,
                      const struct store_tree_row *rows, size_t n,
                      struct store_err *err);

/* ---- attachments (docs/api.md "Detaching unused images") ---- */

/* An image version thunder-api attached on a node.  idle_since: UNIX ms
 * since when nothing uses it (0: in use). */
struct store_attachment {
  const char *node_id, *image, *version;
  int64_t attached_at, idle_since;
};
typedef int store_attachment_fn(const struct store_attachment *a,
                                void *opaque);

/* Records that node_id has image at version attached (replacing another
 * version of it there), in use. */
int store_attachment_put(struct store *st, const char *node_id,
                         const char *image, const char *version,
                         struct store_err *err);

/* Marks every attachment in use or idle as of now (ms): in use while a
 * live VM of a cluster of that image version is on the node or below it
 * in the cluster's tree (the node relays to it), or while such a cluster
 * is pending or provisioning with the node in its tree; an idle one keeps
 * the time it became idle.  Then calls fn with each one idle for at least
 * grace_ms (fn returning non-zero stops). */
int store_attachments_age(struct store *st, int64_t now, int64_t grace_ms,
                          store_attachment_fn *fn, void *opaque,
                          struct store_err *err);

/* Forgets the attachment (detached), unless it is of another version now
 * or in use again. */
int store_attachment_forget(struct store *st, const char *node_id,
                            const char *image, const char *version,
                            struct store_err *err);

/* Restarts the idle attachment's grace period at at (ms): the node refused
 * to detach it. */
int store_attachment_retry(struct store *st, const char *node_id,
                           const char *image, const char *version, int64_t at,
                           struct store_err *err);

/* ---- events ---- */

/* Appends an event to cluster_id's history (vm_id may be NULL). */
int store_event_add(struct store *st, const char *cluster_id,
                    const char *vm_id, const char *kind, const char *message,
                    struct store_err *err);

/* Calls fn for each event of cluster_id with seq > after_seq, oldest
 * first, at most limit (0 = all). */
int store_event_list(struct store *st, const char *cluster_id,
                     int64_t after_seq, size_t limit, store_event_fn *fn,
                     void *opaque, struct store_err *err);

/* ---- enrolments (per-node tokens, api/enrol.h) ---- */

#define STORE_SALT_LEN 16
#define STORE_HASH_LEN 32

/* Records node's enrolment: the salt and the SHA-256 of salt ‖ token.
 * A node already enrolled is STORE_CONFLICT unless rotate, which replaces
 * its salt and hash (the old token stops matching).  *created: it was not
 * enrolled.  Durable. */
int store_enrolment_put(struct store *st, const char *node,
                        const uint8_t salt[STORE_SALT_LEN],
                        const uint8_t hash[STORE_HASH_LEN], bool rotate,
                        bool *created, struct store_err *err);

/* Reads node's enrolment into salt, hash and *enrolled_at (UNIX ms; may be
 * NULL).  STORE_NOT_FOUND: node is not enrolled. */
int store_enrolment_get(struct store *st, const char *node,
                        uint8_t salt[STORE_SALT_LEN],
                        uint8_t hash[STORE_HASH_LEN], int64_t *enrolled_at,
                        struct store_err *err);

/* Revokes node's enrolment.  STORE_NOT_FOUND: it was not enrolled.
 * Durable. */
int store_enrolment_delete(struct store *st, const char *node,
                           struct store_err *err);

#endif
