/* thunder — the relay tree planner (pure: no I/O, no clocks, no globals).
 *
 * Given the nodes that will run an image, it decides who fetches from whom:
 * for each node an ordered upstream list (parent, grandparent, …, origin)
 * for the node control endpoint, which takes 1–16 upstream URIs.
 *
 * The shape is a forest under the origin: c origin children (c ≤ the
 * origin cap), every interior node with at most k children (k = 1: c
 * pipelined chains), levels filled in turn: n(1) = c, n(L+1) =
 * min(k·n(L), the rest), and level L's nodes take at most f(L) =
 * ceil(n(L+1) / n(L)) children each.  c and k minimise a closed-form model
 * of the time until every node has booted (docs/planner.md, calibrated
 * against /work/shared/tools/provmodel.py on a real boot trace):
 *
 *   T(c, k) = max(load·W/Bo, f·W/B, W/min(Bo, B) + M·rtt)
 *           + Σ over levels L = 2..D of (S/B + rtt + [L ≥ 3]·(f(L−1) − 1)·R·S/B)
 *           + T_local
 *
 * (for full levels: (D−1)·(S/B + rtt) + (D−2)·(k−1)·R·S/B), with D the
 * depth, f the largest f(L), S the block size, R the largest read in
 * blocks, M = W / read_size the reads that miss, load = Σ (1 − cached)
 * over the origin's children, and B the I-th fastest uplink, where I is
 * the number of nodes that relay (have children) in the shape: the
 * fastest nodes relay.  That B is the figure leaf_below.
 *
 * Placement rules, each tested (tests/unit/test-tree.c):
 *  - slow nodes stay leaves: a node with an uplink below leaf_below is
 *    leaf-only (tree_plan_leaf_only): it gets no children, and it is
 *    placed as uncached whatever it caches;
 *  - caching nodes near the root: a node's cache tier is
 *    ceil((1 − cached) · TREE_CACHE_TIERS) (0 = the whole image), or
 *    TREE_CACHE_TIERS (uncached) for a leaf-only node; a node of a lower
 *    tier is never deeper than a node of a higher tier;
 *  - same rack, then same zone: if a node with a rack label has a parent
 *    outside its rack, every node of its rack one level up that is not
 *    leaf-only has f(L) children, all of that rack (likewise for zones:
 *    f(L) children, all of that zone); unlabelled ("" or NULL) racks and
 *    zones match nothing;
 *  - origin bytes: Σ (1 − cached) over the origin's children is at most
 *    origin_copies (default 1: the origin sends the image once, whatever
 *    the model would gain from a second uncached subtree; caching nodes
 *    may join it under the origin);
 *  - caps: the origin has at most origin_cap children, a node of level L
 *    at most f(L) ≤ k, the depth is at most max_depth when planned;
 *  - determinism: the plan depends on the set of nodes, not on their
 *    order in the array (ties are broken by id, bytewise).
 *
 * Errors: functions that can fail return -1 (or NULL), set errno (EINVAL
 * for bad input, ENOMEM, EALREADY for a node already failed) and write one
 * message into err[errlen] (if err is not NULL) that names the field:
 * "node 3 (\"n3\"): cached is 1.5, not in 0..1".
 *
 * Threads: a plan has no internal locking.  Concurrent readers of the same
 * plan are safe; the caller serialises tree_reparent() with every other
 * call on that plan.
 */
#ifndef THUNDER_TREE_H
#define THUNDER_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TREE_ID_MAX 64          /* bytes in a node id, rack or zone */
#define TREE_MAX_UPSTREAMS 16   /* the control endpoint's limit */
#define TREE_MAX_NODES 1000000
#define TREE_FANOUT_MAX 64      /* the largest k the model considers */
#define TREE_CACHE_TIERS 8

#define TREE_ORIGIN (-1)        /* the origin, as a parent or list entry */
#define TREE_NONE (-2)          /* the parent of a failed node */

/* One node that will run the image; the caller's, read during
 * tree_plan_build() only (the plan copies the id). */
struct tree_node {
  const char *id;     /* 1..TREE_ID_MAX bytes, unique in the input */
  const char *rack;   /* NULL or "" = unknown; a rack is (zone, rack) */
  const char *zone;   /* NULL or "" = unknown */
  double cached;      /* fraction of the image already cached, 0..1 */
  double uplink;      /* bytes/s this node can send; 0 = params.node_bw */
};

/* The model's inputs and the caps.  tree_params_init() sets the defaults;
 * every field must then be valid (a cap of 0 is an error, not "none"). */
struct tree_params {
  double origin_bw;        /* Bo: the origin's uplink, bytes/s, > 0 */
  double node_bw;          /* B: a node's uplink unless given, bytes/s */
  double rtt;              /* seconds per hop and request, >= 0 */
  double local_time;       /* T_local: the boot's own time, seconds >= 0 */
  uint64_t working_set;    /* W: bytes the boot reads, > 0 */
  uint32_t block_size;     /* S, bytes, > 0 */
  uint32_t read_size;      /* mean bytes of a read that misses, > 0 */
  uint32_t burst_size;     /* the largest read, bytes, > 0 */
  unsigned origin_cap;     /* most children of the origin, >= 1 */
  double origin_copies;    /* most image copies the origin sends: the
                              origin's children are added while
                              Σ (1 − cached) over them stays <= this
                              (the first child always), >= 1 */
  unsigned max_upstreams;  /* list length, 2..TREE_MAX_UPSTREAMS */
  unsigned max_depth;      /* deepest level allowed, >= 1 */
  unsigned fanout;         /* 0: the model picks k; else k, forced */
};

/* What the model predicts for a shape (tree_model_estimate), or for the
 * tree a plan holds (tree_plan_figures).  Seconds unless named. */
struct tree_figures {
  unsigned fanout;           /* k: the most children a node may have */
  unsigned origin_children;  /* c: children of the origin now */
  unsigned depth;            /* levels; origin children are at depth 1 */
  unsigned max_children;     /* the most children any node has now */
  size_t nodes;              /* live (not failed) nodes */
  size_t interior;           /* nodes with at least one child */
  size_t failed;             /* nodes marked failed by tree_reparent */
  size_t same_rack;          /* node→node edges inside a rack */
  size_t same_zone;          /* … inside a zone, across racks */
  size_t cross_zone;         /* … across zones or unlabelled */
  double origin_load;        /* Σ (1 − cached) over the origin's children */
  double leaf_below;         /* B: the I-th fastest uplink, I = the relays
                                the shape needs; nodes slower than B are
                                kept as leaves (tree_plan_leaf_only) */
  double t_bandwidth;        /* max(load·W/Bo, children·W/uplink of every
                                relay, W/slowest + M·rtt) */
  double t_latency;          /* the largest lag behind level 1 */
  double t_predicted;        /* t_bandwidth + t_latency + T_local */
  double t_lb;               /* max(W/Bo, N·W/(Bo+(N−1)·B)) + T_local */
};

struct tree_plan;

/* Fills p with the defaults: Bo = B = 100 Mbit/s, rtt 0.4 ms, W 64 MiB,
 * S 64 KiB, reads of 96 KiB, bursts of 1 MiB, origin cap 4, one origin
 * copy, 16 upstreams,
 * depth up to 1024, fan-out chosen by the model. */
void tree_params_init(struct tree_params *p);

/* The closed-form model for n nodes in c trees of fan-out k (k = 1:
 * chains) with every node at params.node_bw and nothing cached.  Fills
 * *out (interior = I; same_*, cross_zone and failed are 0).  -1 (errno,
 * err) on bad input. */
int tree_model_estimate(const struct tree_params *p, size_t n, unsigned c,
                        unsigned k, struct tree_figures *out, char *err,
                        size_t errlen);

/* Plans the tree of nodes[0..n).  Returns a new plan (free it with
 * tree_plan_free), or NULL (errno, err) on bad input or memory.
 * O(n log n) time, O(n) memory. */
struct tree_plan *tree_plan_build(const struct tree_node *nodes, size_t n,
                                  const struct tree_params *p, char *err,
                                  size_t errlen);

/* Frees a plan; NULL is fine. */
void tree_plan_free(struct tree_plan *plan);

/* The number of nodes, failed ones included.  Node indices in the calls
 * below are the indices in the input array. */
size_t tree_plan_count(const struct tree_plan *plan);

/* The index of the node with this id, or -1. */
int tree_plan_find(const struct tree_plan *plan, const char *id);

/* Node i's id (the plan's copy). */
const char *tree_plan_id(const struct tree_plan *plan, size_t i);

/* Node i's parent: an index, TREE_ORIGIN, or TREE_NONE if i failed. */
int tree_plan_parent(const struct tree_plan *plan, size_t i);

/* Node i's depth (1 under the origin), 0 if i failed. */
unsigned tree_plan_depth(const struct tree_plan *plan, size_t i);

/* Node i's number of children. */
unsigned tree_plan_children(const struct tree_plan *plan, size_t i);

/* True if node i is too slow to relay: its uplink is below leaf_below
 * (it is then placed as uncached, whatever it caches), and the plan gives
 * it no children. */
bool tree_plan_leaf_only(const struct tree_plan *plan, size_t i);

/* True if tree_reparent() removed node i. */
bool tree_plan_failed(const struct tree_plan *plan, size_t i);

/* Writes node i's upstream list into out (indices, TREE_ORIGIN last) and
 * returns its length: parent, grandparent, … origin; when the depth exceeds
 * max_upstreams − 1 the list keeps the max_upstreams − 1 nearest ancestors
 * and then the origin.  0 for a failed node. */
size_t tree_plan_upstreams(const struct tree_plan *plan, size_t i,
                           int out[TREE_MAX_UPSTREAMS]);

/* The figures of the tree as it is now (after any reparenting). */
const struct tree_figures *tree_plan_figures(const struct tree_plan *plan);

/* Removes failed node i from the plan: its children move to i's parent
 * while the parent's cap allows (preferring the most-cached, then same
 * rack, then same zone); the others move under the shallowest node with a
 * spare child slot among the parent's remaining subtrees (same rack, then
 * same zone preferred), taking their subtrees along.  The caps hold after;
 * the depth can grow by one level per move.  Writes the indices of the
 * nodes whose upstream list changed into changed[0..cap) (changed may be
 * NULL) and returns how many there are (that number may exceed cap), or -1
 * (errno, err) if i is out of range (EINVAL) or already failed (EALREADY).
 * O(n) time. */
long tree_reparent(struct tree_plan *plan, size_t i, int *changed, size_t cap,
                   char *err, size_t errlen);

#endif
