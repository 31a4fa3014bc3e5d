/* thunder — the VM scheduler of thunder-api (pure: no I/O, no clocks, no
 * globals).
 *
 * Given the registered nodes with their capacity and usage (as
 * store_node_list() reports them) and a cluster request (docs/api.md,
 * "Clusters": count, vcpus, memory_mib, disk and "placement"), it decides
 * which node runs each VM, or says why it cannot: now (SCHED_SHORT, the API
 * answers 409 insufficient_capacity) or ever (SCHED_NEVER, 422
 * unsatisfiable).
 *
 * Rules, each tested (tests/unit/test-sched.c):
 *  - eligible nodes: ready, and matching every hint: id in req->nodes (if
 *    any), zone equal to req->zone, rack equal to req->rack (if given; a
 *    rack hint alone matches that rack label in every zone);
 *  - a VM fits a node if its free vCPUs, memory and disk (capacity − used,
 *    0 if used exceeds capacity) all suffice, and the node holds fewer
 *    than max_per_node of this request's VMs (0 = no cap); the usage grows
 *    as VMs are placed;
 *  - SCHED_SPREAD: each next VM goes to the node whose dominant share is
 *    smallest after placing it — the largest of used/capacity over vCPUs,
 *    memory and disk, compared exactly (no floating point); ties go to the
 *    smaller id, bytewise;
 *  - SCHED_PACK: nodes in id order (bytewise), each filled until it cannot
 *    take one more VM, then the next;
 *  - determinism: the result (as node ids) depends on the set of nodes, not
 *    on their order in the array.
 *
 * Outcome, in this order of checks:
 *  - -1 (SCHED_ERROR), errno EINVAL: bad input (a NULL or empty id, two
 *    nodes with one id, count, vcpus or memory_mib 0, an unknown strategy,
 *    a NULL or empty id in req->nodes, an empty zone or rack hint);
 *    ENOMEM: out of memory;
 *  - SCHED_NEVER: req->nodes names an unregistered node; no node matches
 *    the hints; a VM is bigger than the whole capacity of every matching
 *    node; or the matching nodes, empty, would hold fewer than count VMs
 *    (max_per_node included).  Down nodes count here: they may come back;
 *  - SCHED_SHORT: the ready matching nodes lack free capacity now; the
 *    message says how many VMs fit and what is short on which node;
 *  - 0 (SCHED_OK): out[i] is the index in nodes[] of VM i's node.
 * On every failure one message goes into err[errlen] (if err is not NULL,
 * truncated to fit), written for an operator, e.g. "need 6 VMs of 1 vCPU,
 * 512 MiB memory, 1 GiB disk; the 3 ready nodes matching the request fit
 * 4 now (memory short on node2; max_per_node 2 reached on node1, node3)".
 * errno is set for SCHED_ERROR only.  out[] is undefined after a failure.
 *
 * Cost: O(n log n + m log n + count log n) time for n nodes, m ids in
 * req->nodes, O(n) memory (10,000 nodes × 10,000 VMs: a few ms).
 *
 * Threads: no state; any number of concurrent calls is safe.
 */
#ifndef THUNDER_SCHED_H
#define THUNDER_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sched_strategy {
  SCHED_SPREAD,     /* the default: the node with the most free capacity */
  SCHED_PACK,       /* fill nodes in id order */
};

enum sched_code {
  SCHED_OK = 0,
  SCHED_ERROR = -1, /* bad input (EINVAL) or memory (ENOMEM) */
  SCHED_SHORT = -2, /* not now: 409 insufficient_capacity */
  SCHED_NEVER = -3, /* not ever with these nodes: 422 unsatisfiable */
};

/* A registered node; the caller's, read only during sched_place(). */
struct sched_node {
  const char *id;           /* non-empty, unique in the input */
  const char *rack;         /* NULL or "" = unknown (matches no hint) */
  const char *zone;         /* NULL or "" = unknown (matches no hint) */
  bool ready;               /* heartbeating; down nodes get no VM */
  uint32_t vcpus;           /* capacity */
  uint64_t memory_mib;
  uint64_t disk_bytes;
  uint64_t used_vcpus;      /* the live VMs already on it */
  uint64_t used_memory_mib;
  uint64_t used_disk_bytes;
};

/* A cluster request: count VMs of the same size. */
struct sched_request {
  uint32_t count;           /* VMs, >= 1 */
  uint32_t vcpus;           /* per VM, >= 1 */
  uint64_t memory_mib;      /* per VM, >= 1 */
  uint64_t disk_bytes;      /* per VM, 0 = none */
  enum sched_strategy strategy;
  const char *const *nodes; /* restrict to these ids (duplicates are fine) */
  size_t n_nodes;           /* 0 = any node */
  const char *zone;         /* NULL = any */
  const char *rack;         /* NULL = any */
  uint32_t max_per_node;    /* this request's VMs per node; 0 = no cap */
};

/* Places req->count VMs on nodes[0..n): out[0..count) gets, for each VM in
 * order, the index in nodes[] of its node.  Returns SCHED_OK, SCHED_SHORT,
 * SCHED_NEVER or SCHED_ERROR (errno) with a message in err, as above. */
int sched_place(const struct sched_node *nodes, size_t n,
                const struct sched_request *req, size_t *out, char *err,
                size_t errlen);

/* "spread", "pack", or NULL for a value outside the enum. */
const char *sched_strategy_name(enum sched_strategy s);

#endif
