/* thunder — the relay tree planner; see tree.h and docs/planner.md.
 *
 * Design note.
 *
 * Keys.  Every node gets three small integers, all derived from the
 * strings and numbers of the input, never from its order or from pointers:
 *   zone  1 + rank of its zone among the distinct non-empty zones, 0 if none
 *   rack  1 + rank of (zone, rack) among the distinct labelled racks, 0 if none
 *   tier  ceil((1 − cached) · TREE_CACHE_TIERS): 0 = whole image cached
 * and a rank: its position in the order (tier, zone, rack, id).  Every sort
 * below ends in the id (unique), so no order in the input survives.
 *
 * Shape.  For each c in 1..min(origin_cap, n) (while the origin's load,
 * Σ (1 − cached) over the c lowest ranks, stays within origin_copies) and
 * k in 1..TREE_FANOUT_MAX
 * (or the forced k) the level widths are n(1) = c, n(L+1) = min(k·n(L),
 * what is left); level L's nodes share n(L+1) children, at most
 * f(L) = ceil(n(L+1) / n(L)) each, so ceil(n(L+1) / f(L)) of them relay:
 * I relays in all.  shape_eval() gives the model's time for those widths,
 * with B the I-th fastest uplink (the fastest nodes relay); the smallest
 * time wins (ties: smaller k, then smaller c).  That B is leaf_below.
 *
 * Levels.  Positions 0..n−1 number that forest breadth-first; position j
 * of level L+1 hangs under position j / f(L) of level L.  Breadth-first,
 * the I parent positions come first: only the last two levels hold
 * leaves.  A caching node slower than leaf_below is demoted to the
 * uncached tier.  The caching nodes (tier < TREE_CACHE_TIERS) then take
 * positions 0, 1, … in rank order, so a lower tier is never deeper.  The
 * others take the remaining positions in depth-first preorder, in rank
 * order, those slower than leaf_below (leaf-only) into leaf positions: a
 * run of nodes of one rack fills a subtree, so most of a rack sits in one
 * branch.  A node's level is its position's; positions decide levels only.
 *
 * Parents.  Per level, the children are matched to the level above, each
 * parent (leaf-only ones excepted) taking at most f(L): pass 1 within each rack, pass 2 within each
 * zone, pass 3 anyone, each pass dealing children round-robin over the
 * parents with a free slot (so parents stay balanced).  A child left over
 * after pass 1 means every parent of its rack was filled in pass 1, with
 * children of that rack; likewise for zones after pass 2.
 *
 * State after tree_reparent: failed nodes have parent TREE_NONE, depth 0
 * and no children; every other node's parent chain reaches the origin.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "tree.h"

struct tnode {
  const char *id;     /* in plan->ids */
  double cached;
  double uplink;      /* effective: the node's, or params.node_bw */
  int zone;           /* 0 = unknown */
  int rack;           /* 0 = unknown */
  int tier;
  int parent;         /* input index, TREE_ORIGIN or TREE_NONE */
  bool leaf_only;     /* too slow to relay: never given children */
  unsigned depth;     /* 0 = failed */
  unsigned nchildren;
  unsigned rank;      /* in (tier, zone, rack, id) order */
};

struct tree_plan {
  size_t n;
  struct tree_params p;
  unsigned k;         /* the chosen fan-out */
  double leaf_below;  /* uncached nodes slower than this stay leaves */
  struct tnode *v;    /* [n], input order */
  int *by_id;         /* [n] indices, sorted by id */
  int *by_rank;       /* [n] indices, sorted by rank */
  char *ids;          /* the ids, NUL-terminated, back to back */
  struct tree_figures fig;
};

static void __attribute__((format(printf, 3, 4)))
seterr(char *err, size_t errlen, const char *fmt, ...)
{
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

void
tree_params_init(struct tree_params *p)
{
  memset(p, 0, sizeof *p);
  p->origin_bw = 100e6 / 8;
  p->node_bw = 100e6 / 8;
  p->rtt = 0.0004;
  p->local_time = 0;
  p->working_set = 64u << 20;
  p->block_size = 64u << 10;
  p->read_size = 96u << 10;
  p->burst_size = 1u << 20;
  p->origin_cap = 4;
  p->origin_copies = 1;
  p->max_upstreams = TREE_MAX_UPSTREAMS;
  p->max_depth = 1024;
  p->fanout = 0;
}

static int
check_params(const struct tree_params *p, char *err, size_t errlen)
{
  const char *bad = NULL;
  if (p == NULL)
    bad = "params: missing";
  else if (!isfinite(p->origin_bw) || p->origin_bw <= 0)
    bad = "params: origin_bw must be a positive number of bytes/s";
  else if (!isfinite(p->node_bw) || p->node_bw <= 0)
    bad = "params: node_bw must be a positive number of bytes/s";
  else if (!isfinite(p->rtt) || p->rtt < 0)
    bad = "params: rtt must be a number of seconds >= 0";
  else if (!isfinite(p->local_time) || p->local_time < 0)
    bad = "params: local_time must be a number of seconds >= 0";
  else if (p->working_set == 0)
    bad = "params: working_set must be > 0";
  else if (p->block_size == 0)
    bad = "params: block_size must be > 0";
  else if (p->read_size == 0)
    bad = "params: read_size must be > 0";
  else if (p->burst_size == 0)
    bad = "params: burst_size must be > 0";
  else if (p->origin_cap == 0)
    bad = "params: origin_cap must be >= 1";
  else if (!isfinite(p->origin_copies) || p->origin_copies < 1)
    bad = "params: origin_copies must be a number >= 1";
  else if (p->max_upstreams < 2 || p->max_upstreams > TREE_MAX_UPSTREAMS)
    bad = "params: max_upstreams must be 2..16 (a parent, then the origin)";
  else if (p->max_depth == 0)
    bad = "params: max_depth must be >= 1";
  else if (p->fanout > TREE_FANOUT_MAX)
    bad = "params: fanout must be 0 (the model's choice) or 1..64";
  if (bad == NULL)
    return 0;
  seterr(err, errlen, "%s", bad);
  errno = EINVAL;
  return -1;
}

/* ---- The model ---------------------------------------------------------- */

/* The model's time for n nodes in levels of widths n(1) = min(c, n),
 * n(L+1) = min(k·n(L), rest); load is Σ (1 − cached) over the c origin
 * children.  Level L's per-parent fan-out is f(L) = ceil(n(L+1) / n(L)),
 * what the built tree has at most, and ceil(n(L+1) / f(L)) of its nodes
 * are parents: I in all.  The fastest I nodes relay, so B is the I-th
 * fastest uplink of up_desc (sorted fastest first), or params.node_bw if
 * up_desc is NULL.  Fills f (f->leaf_below = that B); returns f->depth. */
static unsigned
shape_eval(const struct tree_params *p, size_t n, unsigned c, unsigned k,
           const double *up_desc, double load, struct tree_figures *f)
{
  const double W = (double) p->working_set;
  const double S = (double) p->block_size;
  const double R = ceil((double) p->burst_size / S);
  const double M = W / (double) p->read_size;
  size_t width = c < n ? c : n;
  size_t placed = width, interior = 0;
  unsigned depth = 1, maxch = 0;
  double hops = 0, bursts = 0;   /* lag = hops·(S/B + rtt) + bursts·R·S/B */

  memset(f, 0, sizeof *f);
  if (k == 1) {                  /* chains: closed form, no loop over n/c */
    size_t d = (n + width - 1) / width;
    depth = d > 1000000 ? 1000000 : (unsigned) d;
    maxch = depth > 1 ? 1 : 0;
    hops = (double) (depth - 1);
    interior = d > 1 ? n - width : 0;   /* every level but the first */
  } else {
    while (placed < n) {
      size_t next = width * k;
      if (next > n - placed)
        next = n - placed;
      unsigned fl = (unsigned) ((next + width - 1) / width);
      if (fl > maxch)
        maxch = fl;
      interior += (next + fl - 1) / fl;
      depth++;
      hops += 1;
      if (depth >= 3)
        bursts += fl - 1;
      placed += next;
      width = next;
    }
  }
  double B = p->node_bw;
  if (up_desc != NULL)
    B = up_desc[interior > 0 ? interior - 1 : 0];
  double serial = W / (depth > 1 && B < p->origin_bw ? B : p->origin_bw) +
                  M * p->rtt;
  double bw = load * W / p->origin_bw;
  if (maxch * W / B > bw)
    bw = maxch * W / B;
  if (serial > bw)
    bw = serial;
  double lag = hops * (S / B + p->rtt) + bursts * R * S / B;
  double N = (double) n;
  double lb = W / p->origin_bw;
  double share = N * W / (p->origin_bw + (N - 1) * p->node_bw);
  f->fanout = k;
  f->origin_children = (unsigned) (c < n ? c : n);
  f->depth = depth;
  f->max_children = maxch;
  f->nodes = n;
  f->interior = interior;
  f->origin_load = load;
  f->leaf_below = B;
  f->t_bandwidth = bw;
  f->t_latency = lag;
  f->t_predicted = bw + lag + p->local_time;
  f->t_lb = (share > lb ? share : lb) + p->local_time;
  return depth;
}

int
tree_model_estimate(const struct tree_params *p, size_t n, unsigned c,
                    unsigned k, struct tree_figures *out, char *err,
                    size_t errlen)
{
  if (check_params(p, err, errlen) == -1)
    return -1;
  if (n == 0 || n > TREE_MAX_NODES || c == 0 || k == 0 ||
      k > TREE_FANOUT_MAX || out == NULL) {
    seterr(err, errlen, "tree_model_estimate: need 1..%d nodes, c >= 1, "
           "k in 1..%d", TREE_MAX_NODES, TREE_FANOUT_MAX);
    errno = EINVAL;
    return -1;
  }
  shape_eval(p, n, c, k, NULL, (double) (c < n ? c : n), out);
  return 0;
}

/* ---- Input -------------------------------------------------------------- */

static const char *
str_or_empty(const char *s)
{
  return s ? s : "";
}

static int
check_label(const char *what, size_t i, const char *id, const char *s,
            char *err, size_t errlen)
{
  if (s != NULL && strnlen(s, TREE_ID_MAX + 1) > TREE_ID_MAX) {
    seterr(err, errlen, "node %zu (\"%s\"): %s is longer than %d bytes", i,
           id, what, TREE_ID_MAX);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

static int
check_nodes(const struct tree_node *nodes, size_t n, char *err, size_t errlen)
{
  if (n == 0 || nodes == NULL) {
    seterr(err, errlen, "no nodes to plan");
    errno = EINVAL;
    return -1;
  }
  if (n > TREE_MAX_NODES) {
    seterr(err, errlen, "%zu nodes: at most %d", n, TREE_MAX_NODES);
    errno = EINVAL;
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    const struct tree_node *t = &nodes[i];
    if (t->id == NULL || t->id[0] == '\0') {
      seterr(err, errlen, "node %zu: id is empty", i);
      errno = EINVAL;
      return -1;
    }
    if (strnlen(t->id, TREE_ID_MAX + 1) > TREE_ID_MAX) {
      seterr(err, errlen, "node %zu (\"%.16s…\"): id is longer than %d bytes",
             i, t->id, TREE_ID_MAX);
      errno = EINVAL;
      return -1;
    }
    if (check_label("rack", i, t->id, t->rack, err, errlen) == -1 ||
        check_label("zone", i, t->id, t->zone, err, errlen) == -1)
      return -1;
    if (!(t->cached >= 0 && t->cached <= 1)) {   /* NaN fails too */
      seterr(err, errlen, "node %zu (\"%s\"): cached is %g, not in 0..1", i,
             t->id, t->cached);
      errno = EINVAL;
      return -1;
    }
    if (!isfinite(t->uplink) || t->uplink < 0) {
      seterr(err, errlen, "node %zu (\"%s\"): uplink is %g bytes/s; it must "
             "be > 0, or 0 for the default", i, t->id, t->uplink);
      errno = EINVAL;
      return -1;
    }
  }
  return 0;
}

/* ---- Sorting (qsort_r over index arrays) ------------------------------- */

static int
cmp_id(const void *a, const void *b, void *ctx)
{
  const struct tree_node *in = ctx;
  int ia = *(const int *) a, ib = *(const int *) b;
  int r = strcmp(in[ia].id, in[ib].id);
  return r ? r : (ia > ib) - (ia < ib);   /* duplicates: by index */
}

static int
cmp_zone(const void *a, const void *b, void *ctx)
{
  const struct tree_node *in = ctx;
  return strcmp(str_or_empty(in[*(const int *) a].zone),
                str_or_empty(in[*(const int *) b].zone));
}

static int
cmp_rack(const void *a, const void *b, void *ctx)
{
  const struct tree_node *in = ctx;
  int ia = *(const int *) a, ib = *(const int *) b;
  int r = strcmp(str_or_empty(in[ia].zone), str_or_empty(in[ib].zone));
  return r ? r : strcmp(str_or_empty(in[ia].rack), str_or_empty(in[ib].rack));
}

struct keyctx {
  const struct tnode *v;
  const unsigned *idrank;
};

static int
cmp_key(const void *a, const void *b, void *ctx)
{
  const struct keyctx *k = ctx;
  int ia = *(const int *) a, ib = *(const int *) b;
  const struct tnode *x = &k->v[ia], *y = &k->v[ib];
  if (x->tier != y->tier)
    return x->tier < y->tier ? -1 : 1;
  if (x->zone != y->zone)
    return x->zone < y->zone ? -1 : 1;
  if (x->rack != y->rack)
    return x->rack < y->rack ? -1 : 1;
  return k->idrank[ia] < k->idrank[ib] ? -1 : k->idrank[ia] > k->idrank[ib];
}

static int
cmp_double_desc(const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x > y ? -1 : x < y;
}

/* ---- Figures of a built tree ------------------------------------------- */

/* Recomputes plan->fig from the tree as it is: the same formula as
 * shape_eval, with each parent's own uplink, child count and cache. */
static int
compute_figures(struct tree_plan *plan)
{
  const struct tree_params *p = &plan->p;
  const size_t n = plan->n;
  struct tree_figures *f = &plan->fig;
  const double W = (double) p->working_set;
  const double S = (double) p->block_size;
  const double R = ceil((double) p->burst_size / S);
  const double M = W / (double) p->read_size;
  unsigned k = plan->k;

  memset(f, 0, sizeof *f);
  f->fanout = k;
  for (size_t i = 0; i < n; i++)
    plan->v[i].nchildren = 0;
  unsigned maxdepth = 0;
  for (size_t r = 0; r < n; r++) {           /* rank order: sums repeat */
    const struct tnode *x = &plan->v[plan->by_rank[r]];
    if (x->parent == TREE_NONE) {
      f->failed++;
      continue;
    }
    f->nodes++;
    if (x->depth > maxdepth)
      maxdepth = x->depth;
    if (x->parent == TREE_ORIGIN) {
      f->origin_children++;
      f->origin_load += 1 - x->cached;
      continue;
    }
    const struct tnode *y = &plan->v[x->parent];
    plan->v[x->parent].nchildren++;
    if (x->rack != 0 && x->rack == y->rack)
      f->same_rack++;
    else if (x->zone != 0 && x->zone == y->zone)
      f->same_zone++;
    else
      f->cross_zone++;
  }
  f->depth = maxdepth;
  f->leaf_below = plan->leaf_below;
  if (f->nodes == 0)
    return 0;

  double bw = f->origin_load * W / p->origin_bw;
  double slowest = p->origin_bw;
  for (size_t i = 0; i < n; i++) {
    const struct tnode *x = &plan->v[i];
    if (x->nchildren == 0)
      continue;
    f->interior++;
    if (x->nchildren > f->max_children)
      f->max_children = x->nchildren;
    if (x->nchildren * W / x->uplink > bw)
      bw = x->nchildren * W / x->uplink;
    if (x->uplink < slowest)
      slowest = x->uplink;
  }
  if (W / slowest + M * p->rtt > bw)
    bw = W / slowest + M * p->rtt;

  /* Lags, parents before children: order the live nodes by depth. */
  CLEANUP_FREE size_t *start = calloc(maxdepth + 2, sizeof *start);
  CLEANUP_FREE int *order = malloc(n * sizeof *order);
  CLEANUP_FREE double *lag = malloc(n * sizeof *lag);
  if (start == NULL || order == NULL || lag == NULL)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (plan->v[i].depth > 0)
      start[plan->v[i].depth + 1]++;
  for (unsigned d = 1; d <= maxdepth + 1; d++)
    start[d] += start[d - 1];
  for (size_t i = 0; i < n; i++)
    if (plan->v[i].depth > 0)
      order[start[plan->v[i].depth]++] = (int) i;
  double maxlag = 0;
  for (size_t j = 0; j < f->nodes; j++) {
    int i = order[j];
    const struct tnode *x = &plan->v[i];
    lag[i] = 0;
    if (x->parent == TREE_ORIGIN)
      continue;
    const struct tnode *y = &plan->v[x->parent];
    double base = y->cached >= 1 ? 0 : lag[x->parent];
    double hop = S / y->uplink + p->rtt;
    if (x->depth >= 3)
      hop += (double) (y->nchildren - 1) * R * S / y->uplink;
    lag[i] = base + hop;
    if (lag[i] > maxlag)
      maxlag = lag[i];
  }
  double N = (double) f->nodes;
  double lb = W / p->origin_bw;
  double share = N * W / (p->origin_bw + (N - 1) * p->node_bw);
  f->t_bandwidth = bw;
  f->t_latency = maxlag;
  f->t_predicted = bw + maxlag + p->local_time;
  f->t_lb = (share > lb ? share : lb) + p->local_time;
  return 0;
}

/* ---- Building ----------------------------------------------------------- */

/* Deals children[0..nc) round-robin over the parents[0..np) that have a
 * free slot (count < cap), as long as any has one.  Assigned children are
 * set to -1 in children[]. */
static void
deal(struct tree_plan *plan, int *children, size_t nc, int *parents,
     size_t np, unsigned *count, unsigned cap)
{
  size_t c = 0;
  while (c < nc && np > 0) {
    size_t live = 0;
    for (size_t j = 0; j < np && c < nc; j++) {
      int par = parents[j];
      if (count[plan->v[par].rank] >= cap)
        continue;
      parents[live++] = par;
      plan->v[children[c]].parent = par;
      count[plan->v[par].rank]++;
      children[c++] = -1;
    }
    if (live == 0)
      break;
    /* keep the parents still open, in order, for the next round */
    size_t keep = 0;
    for (size_t j = 0; j < live; j++)
      if (count[plan->v[parents[j]].rank] < cap)
        parents[keep++] = parents[j];
    np = keep;
  }
}

static int
cmp_rack_rank(const void *a, const void *b, void *ctx)
{
  const struct tnode *v = ctx;
  const struct tnode *x = &v[*(const int *) a], *y = &v[*(const int *) b];
  if (x->rack != y->rack)
    return x->rack < y->rack ? -1 : 1;
  return x->rank < y->rank ? -1 : x->rank > y->rank;
}

static int
cmp_zone_rank(const void *a, const void *b, void *ctx)
{
  const struct tnode *v = ctx;
  const struct tnode *x = &v[*(const int *) a], *y = &v[*(const int *) b];
  if (x->zone != y->zone)
    return x->zone < y->zone ? -1 : 1;
  return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* One matching pass: children and parents are grouped by the label that
 * group() returns (0 = unlabelled, matched only when all is set). */
static void
match_pass(struct tree_plan *plan, int *ch, size_t nch, int *par, size_t npar,
           unsigned *count, unsigned cap, int which, int *tmp_c, int *tmp_p)
{
  /* which: 0 rack, 1 zone, 2 anyone */
  size_t nc = 0, np = 0;
  for (size_t i = 0; i < nch; i++)
    if (ch[i] >= 0 && plan->v[ch[i]].parent == TREE_NONE)
      tmp_c[nc++] = ch[i];
  for (size_t i = 0; i < npar; i++)
    if (count[plan->v[par[i]].rank] < cap && !plan->v[par[i]].leaf_only)
      tmp_p[np++] = par[i];
  if (nc == 0 || np == 0)
    return;
  if (which == 2) {
    deal(plan, tmp_c, nc, tmp_p, np, count, cap);
    return;
  }
  int (*cmp)(const void *, const void *, void *) =
      which == 0 ? cmp_rack_rank : cmp_zone_rank;
  qsort_r(tmp_c, nc, sizeof *tmp_c, cmp, plan->v);
  qsort_r(tmp_p, np, sizeof *tmp_p, cmp, plan->v);
#define LABEL(i) (which == 0 ? plan->v[i].rack : plan->v[i].zone)
  size_t a = 0, b = 0;
  while (a < nc && b < np) {
    int la = LABEL(tmp_c[a]), lb = LABEL(tmp_p[b]);
    if (la == 0 || la < lb) {
      a++;
      continue;
    }
    if (lb < la) {
      b++;
      continue;
    }
    size_t a2 = a, b2 = b;
    while (a2 < nc && LABEL(tmp_c[a2]) == la)
      a2++;
    while (b2 < np && LABEL(tmp_p[b2]) == la)
      b2++;
    deal(plan, tmp_c + a, a2 - a, tmp_p + b, b2 - b, count, cap);
    a = a2;
    b = b2;
  }
#undef LABEL
}

/* Picks c and k; returns the depth, or 0 if no shape fits the caps. */
static unsigned
choose_shape(struct tree_plan *plan, unsigned *cp, unsigned *kp,
             char *err, size_t errlen)
{
  const struct tree_params *p = &plan->p;
  const size_t n = plan->n;
  CLEANUP_FREE double *up = malloc(n * sizeof *up);
  if (up == NULL)
    return 0;
  for (size_t i = 0; i < n; i++)
    up[i] = plan->v[i].uplink;
  qsort(up, n, sizeof *up, cmp_double_desc);

  unsigned cmax = p->origin_cap < n ? p->origin_cap : (unsigned) n;
  unsigned klo = p->fanout ? p->fanout : 1;
  unsigned khi = p->fanout ? p->fanout : TREE_FANOUT_MAX;
  struct tree_figures f, best = { 0 };
  unsigned bc = 0, bk = 0;
  double load = 0;
  for (unsigned c = 1; c <= cmax; c++) {
    /* level 1 is the c lowest ranks: the most cached first */
    const struct tnode *x = &plan->v[plan->by_rank[c - 1]];
    load += x->tier < TREE_CACHE_TIERS ? 1 - x->cached : 1;
    if (c > 1 && load > p->origin_copies + 1e-9)
      break;                          /* the origin would send more copies */
    if (bc != 0 && load * (double) p->working_set / p->origin_bw >=
                       best.t_predicted)
      break;                          /* the origin term only grows with c */
    for (unsigned k = klo; k <= khi; k++) {
      unsigned d = shape_eval(p, n, c, k, up, load, &f);
      if (d > p->max_depth)
        continue;
      if (bc == 0 || f.t_predicted < best.t_predicted) {
        best = f;
        bc = c;
        bk = k;
      }
      if ((size_t) c * k >= n - c && k > 1)
        break;                        /* larger k: the same levels */
    }
  }
  if (bc == 0) {
    if (p->fanout)
      seterr(err, errlen, "fan-out %u with at most %u origin children needs "
             "more than max_depth %u levels for %zu nodes", p->fanout,
             cmax, p->max_depth, n);
    else
      seterr(err, errlen, "no tree of %zu nodes fits max_depth %u", n,
             p->max_depth);
    errno = EINVAL;
    return 0;
  }
  *cp = bc;
  *kp = bk;
  plan->leaf_below = best.leaf_below;
  return best.depth;
}

/* Lays the nodes out in levels and matches parents (see the note). */
static int
build_tree(struct tree_plan *plan, unsigned c, unsigned k, unsigned depth)
{
  const size_t n = plan->n;
  CLEANUP_FREE size_t *lstart = calloc(depth + 2, sizeof *lstart);
  CLEANUP_FREE unsigned *fl = calloc(depth + 1, sizeof *fl);
  CLEANUP_FREE int *stack = malloc(n * sizeof *stack);
  CLEANUP_FREE int *atpos = malloc(n * sizeof *atpos);
  CLEANUP_FREE unsigned *posl = malloc(n * sizeof *posl);
  CLEANUP_FREE bool *leaf = malloc(n * sizeof *leaf);
  CLEANUP_FREE unsigned *count = calloc(n, sizeof *count);
  CLEANUP_FREE int *lv = malloc(n * sizeof *lv);
  CLEANUP_FREE int *tmp_c = malloc(n * sizeof *tmp_c);
  CLEANUP_FREE int *tmp_p = malloc(n * sizeof *tmp_p);
  if (!lstart || !fl || !stack || !atpos || !posl || !leaf || !count ||
      !lv || !tmp_c || !tmp_p)
    return -1;

  /* level L (1-based) holds positions [lstart[L], lstart[L+1]) */
  size_t width = c < n ? c : n;
  unsigned L = 1;
  lstart[1] = 0;
  lstart[2] = width;
  while (lstart[L + 1] < n) {
    size_t next = width * k;
    if (next > n - lstart[L + 1])
      next = n - lstart[L + 1];
    fl[L] = (unsigned) ((next + width - 1) / width);
    L++;
    lstart[L + 1] = lstart[L] + next;
    width = next;
  }
  if (L != depth)
    abort();                       /* shape_eval and this loop must agree */

  /* Leaf slots: the last level, and positions without children. */
  for (unsigned d = 1; d <= depth; d++)
    for (size_t pos = lstart[d]; pos < lstart[d + 1]; pos++) {
      posl[pos] = d;
      leaf[pos] = d == depth ||
                  lstart[d + 1] + (pos - lstart[d]) * fl[d] >= lstart[d + 2];
    }

  /* The caching nodes, breadth-first. */
  size_t m = 0;
  while (m < n && plan->v[plan->by_rank[m]].tier < TREE_CACHE_TIERS)
    m++;
  for (size_t pos = 0; pos < m; pos++)
    atpos[pos] = plan->by_rank[pos];

  /* Leaf-only: the others below leaf_below.  There are leaf slots for all
   * of them: every level above the last two is full, so breadth-first all
   * I parent positions come before the n − I leaf positions, and at most
   * n − I uplinks are below the I-th fastest, and at most n − m nodes are
   * left. */
  size_t nslow = 0, nnorm = 0;
  for (size_t r = m; r < n; r++) {
    int i = plan->by_rank[r];
    plan->v[i].leaf_only = plan->v[i].uplink < plan->leaf_below;
    if (plan->v[i].leaf_only)
      tmp_c[nslow++] = i;
    else
      tmp_p[nnorm++] = i;
  }

  /* The rest, depth-first preorder, each list in rank order: leaf-only
   * nodes into leaf slots (there are enough), the others anywhere. */
  size_t si = 0, ni = 0, sp = 0;
  for (size_t r = lstart[2]; r-- > 0;)
    stack[sp++] = (int) r;
  while (sp > 0) {
    size_t pos = (size_t) stack[--sp];
    if (pos >= m) {
      if ((leaf[pos] && si < nslow) || ni == nnorm)
        atpos[pos] = tmp_c[si++];
      else
        atpos[pos] = tmp_p[ni++];
    }
    unsigned pl = posl[pos];
    if (pl == depth)
      continue;
    size_t lo = lstart[pl + 1] + (pos - lstart[pl]) * fl[pl];
    size_t hi = lo + fl[pl];
    if (hi > lstart[pl + 2])
      hi = lstart[pl + 2];
    for (size_t q = hi; q-- > lo;)
      stack[sp++] = (int) q;
  }
  for (unsigned d = 1; d <= depth; d++)
    for (size_t pos = lstart[d]; pos < lstart[d + 1]; pos++) {
      plan->v[atpos[pos]].depth = d;
      plan->v[atpos[pos]].parent = d == 1 ? TREE_ORIGIN : TREE_NONE;
    }

  /* lv: the nodes level by level, each level in rank order */
  CLEANUP_FREE size_t *fill = malloc((depth + 2) * sizeof *fill);
  if (fill == NULL)
    return -1;
  memcpy(fill, lstart, (depth + 2) * sizeof *fill);
  for (size_t r = 0; r < n; r++) {
    int i = plan->by_rank[r];
    lv[fill[plan->v[i].depth]++] = i;
  }
  for (unsigned d = 2; d <= depth; d++) {
    int *ch = lv + lstart[d];
    size_t nch = lstart[d + 1] - lstart[d];
    int *par = lv + lstart[d - 1];
    size_t npar = lstart[d] - lstart[d - 1];
    for (int which = 0; which < 3; which++)
      match_pass(plan, ch, nch, par, npar, count, fl[d - 1], which, tmp_c,
                 tmp_p);
  }
  return 0;
}

struct tree_plan *
tree_plan_build(const struct tree_node *nodes, size_t n,
                const struct tree_params *p, char *err, size_t errlen)
{
  if (check_params(p, err, errlen) == -1 ||
      check_nodes(nodes, n, err, errlen) == -1)
    return NULL;

  struct tree_plan *plan = calloc(1, sizeof *plan);
  CLEANUP_FREE int *tmp = malloc(n * sizeof *tmp);
  CLEANUP_FREE unsigned *idrank = malloc(n * sizeof *idrank);
  size_t idbytes = 0;
  for (size_t i = 0; i < n; i++)
    idbytes += strlen(nodes[i].id) + 1;
  if (plan == NULL || tmp == NULL || idrank == NULL)
    goto nomem;
  plan->n = n;
  plan->p = *p;
  plan->v = calloc(n, sizeof *plan->v);
  plan->by_id = malloc(n * sizeof *plan->by_id);
  plan->by_rank = malloc(n * sizeof *plan->by_rank);
  plan->ids = malloc(idbytes);
  if (!plan->v || !plan->by_id || !plan->by_rank || !plan->ids)
    goto nomem;

  char *s = plan->ids;
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(nodes[i].id) + 1;
    memcpy(s, nodes[i].id, len);
    plan->v[i].id = s;
    s += len;
    plan->v[i].cached = nodes[i].cached;
    plan->v[i].uplink = nodes[i].uplink > 0 ? nodes[i].uplink : p->node_bw;
    double t = ceil((1 - nodes[i].cached) * TREE_CACHE_TIERS);
    plan->v[i].tier = t < 0 ? 0 : (int) t;
    plan->v[i].parent = TREE_NONE;
    plan->by_id[i] = (int) i;
  }

  /* ids: sorted, unique */
  qsort_r(plan->by_id, n, sizeof *plan->by_id, cmp_id, (void *) nodes);
  for (size_t r = 0; r < n; r++) {
    idrank[plan->by_id[r]] = (unsigned) r;
    if (r > 0 && strcmp(nodes[plan->by_id[r]].id,
                        nodes[plan->by_id[r - 1]].id) == 0) {
      seterr(err, errlen, "node %d: duplicate id \"%s\" (also node %d)",
             plan->by_id[r], nodes[plan->by_id[r]].id, plan->by_id[r - 1]);
      tree_plan_free(plan);
      errno = EINVAL;
      return NULL;
    }
  }

  /* zones, then racks as (zone, rack), numbered in sorted order */
  for (size_t i = 0; i < n; i++)
    tmp[i] = (int) i;
  qsort_r(tmp, n, sizeof *tmp, cmp_zone, (void *) nodes);
  int id = 0;
  for (size_t r = 0; r < n; r++) {
    const char *z = str_or_empty(nodes[tmp[r]].zone);
    if (z[0] != '\0' &&
        (r == 0 || strcmp(z, str_or_empty(nodes[tmp[r - 1]].zone)) != 0))
      id++;
    plan->v[tmp[r]].zone = z[0] ? id : 0;
  }
  qsort_r(tmp, n, sizeof *tmp, cmp_rack, (void *) nodes);
  id = 0;
  for (size_t r = 0; r < n; r++) {
    const char *rk = str_or_empty(nodes[tmp[r]].rack);
    if (rk[0] != '\0' &&
        (r == 0 || cmp_rack(&tmp[r], &tmp[r - 1], (void *) nodes) != 0))
      id++;
    plan->v[tmp[r]].rack = rk[0] ? id : 0;
  }

  for (size_t i = 0; i < n; i++)
    plan->by_rank[i] = (int) i;
  struct keyctx kc = { plan->v, idrank };
  qsort_r(plan->by_rank, n, sizeof *plan->by_rank, cmp_key, &kc);
  for (size_t r = 0; r < n; r++)
    plan->v[plan->by_rank[r]].rank = (unsigned) r;

  unsigned c, k;
  errno = 0;
  unsigned depth = choose_shape(plan, &c, &k, err, errlen);
  if (depth == 0) {
    if (errno == 0)
      goto nomem;
    int e = errno;
    tree_plan_free(plan);
    errno = e;
    return NULL;
  }
  plan->k = k;

  /* A caching node too slow to relay for the shape is placed as if it
   * cached nothing: near the root it would slow its whole subtree. */
  bool demoted = false;
  for (size_t i = 0; i < n; i++)
    if (plan->v[i].tier < TREE_CACHE_TIERS &&
        plan->v[i].uplink < plan->leaf_below) {
      plan->v[i].tier = TREE_CACHE_TIERS;
      demoted = true;
    }
  if (demoted) {
    qsort_r(plan->by_rank, n, sizeof *plan->by_rank, cmp_key, &kc);
    for (size_t r = 0; r < n; r++)
      plan->v[plan->by_rank[r]].rank = (unsigned) r;
  }
  if (build_tree(plan, c, k, depth) == -1 || compute_figures(plan) == -1)
    goto nomem;
  return plan;

nomem:
  tree_plan_free(plan);
  seterr(err, errlen, "tree_plan_build: out of memory");
  errno = ENOMEM;
  return NULL;
}

void
tree_plan_free(struct tree_plan *plan)
{
  if (plan == NULL)
    return;
  free(plan->v);
  free(plan->by_id);
  free(plan->by_rank);
  free(plan->ids);
  free(plan);
}

/* ---- Queries ------------------------------------------------------------ */

size_t
tree_plan_count(const struct tree_plan *plan)
{
  return plan->n;
}

int
tree_plan_find(const struct tree_plan *plan, const char *id)
{
  size_t lo = 0, hi = plan->n;
  if (id == NULL)
    return -1;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int r = strcmp(plan->v[plan->by_id[mid]].id, id);
    if (r == 0)
      return plan->by_id[mid];
    if (r < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

const char *
tree_plan_id(const struct tree_plan *plan, size_t i)
{
  return i < plan->n ? plan->v[i].id : NULL;
}

int
tree_plan_parent(const struct tree_plan *plan, size_t i)
{
  return i < plan->n ? plan->v[i].parent : TREE_NONE;
}

unsigned
tree_plan_depth(const struct tree_plan *plan, size_t i)
{
  return i < plan->n ? plan->v[i].depth : 0;
}

unsigned
tree_plan_children(const struct tree_plan *plan, size_t i)
{
  return i < plan->n ? plan->v[i].nchildren : 0;
}

bool
tree_plan_leaf_only(const struct tree_plan *plan, size_t i)
{
  return i < plan->n && plan->v[i].leaf_only;
}

bool
tree_plan_failed(const struct tree_plan *plan, size_t i)
{
  return i < plan->n && plan->v[i].parent == TREE_NONE;
}

size_t
tree_plan_upstreams(const struct tree_plan *plan, size_t i,
                    int out[TREE_MAX_UPSTREAMS])
{
  if (i >= plan->n || plan->v[i].parent == TREE_NONE)
    return 0;
  size_t len = 0;
  int a = plan->v[i].parent;
  while (a != TREE_ORIGIN && len + 1 < plan->p.max_upstreams) {
    out[len++] = a;
    a = plan->v[a].parent;
  }
  out[len++] = TREE_ORIGIN;
  return len;
}

const struct tree_figures *
tree_plan_figures(const struct tree_plan *plan)
{
  return &plan->fig;
}

/* ---- Reparenting -------------------------------------------------------- */

/* Children lists in rank order (CSR: kids[first[i] .. first[i+1])), and the
 * origin's children in roots[0..*nroots). */
static void
build_children(const struct tree_plan *plan, size_t *first, int *kids,
               int *roots, size_t *nroots)
{
  const size_t n = plan->n;
  memset(first, 0, (n + 1) * sizeof *first);
  for (size_t i = 0; i < n; i++)
    if (plan->v[i].parent >= 0)
      first[plan->v[i].parent + 1]++;
  for (size_t i = 0; i < n; i++)
    first[i + 1] += first[i];
  *nroots = 0;
  /* fill in rank order: reuse first[] as cursors, then shift back */
  for (size_t r = 0; r < n; r++) {
    int i = plan->by_rank[r];
    int par = plan->v[i].parent;
    if (par == TREE_ORIGIN)
      roots[(*nroots)++] = i;
    else if (par >= 0)
      kids[first[par]++] = i;
  }
  for (size_t i = n; i > 0; i--)
    first[i] = first[i - 1];
  first[0] = 0;
}

/* 0 same rack, 1 same zone, 2 otherwise (unlabelled matches nothing) */
static int
affinity(const struct tnode *a, const struct tnode *b)
{
  if (a->rack != 0 && a->rack == b->rack)
    return 0;
  if (a->zone != 0 && a->zone == b->zone)
    return 1;
  return 2;
}

struct orphctx {
  const struct tnode *v;
  const struct tnode *newparent;  /* NULL: the origin */
};

static int
cmp_orphan(const void *a, const void *b, void *ctx)
{
  const struct orphctx *o = ctx;
  const struct tnode *x = &o->v[*(const int *) a], *y = &o->v[*(const int *) b];
  if (x->tier != y->tier)
    return x->tier < y->tier ? -1 : 1;
  if (o->newparent) {
    int ax = affinity(x, o->newparent), ay = affinity(y, o->newparent);
    if (ax != ay)
      return ax < ay ? -1 : 1;
  }
  return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Depths from the roots down; failed nodes keep 0. */
static void
set_depths(struct tree_plan *plan, const size_t *first, const int *kids,
           const int *roots, size_t nroots, int *queue)
{
  size_t qh = 0, qt = 0;
  for (size_t r = 0; r < nroots; r++) {
    plan->v[roots[r]].depth = 1;
    queue[qt++] = roots[r];
  }
  while (qh < qt) {
    int x = queue[qh++];
    for (size_t j = first[x]; j < first[x + 1]; j++) {
      plan->v[kids[j]].depth = plan->v[x].depth + 1;
      queue[qt++] = kids[j];
    }
  }
}

long
tree_reparent(struct tree_plan *plan, size_t i, int *changed, size_t cap,
              char *err, size_t errlen)
{
  const size_t n = plan ? plan->n : 0;
  if (plan == NULL || i >= n) {
    seterr(err, errlen, "tree_reparent: node %zu: no such node (%zu nodes)",
           i, n);
    errno = EINVAL;
    return -1;
  }
  if (plan->v[i].parent == TREE_NONE) {
    seterr(err, errlen, "tree_reparent: node %zu (\"%s\") already failed", i,
           plan->v[i].id);
    errno = EALREADY;
    return -1;
  }

  CLEANUP_FREE size_t *first = malloc((n + 1) * sizeof *first);
  CLEANUP_FREE int *kids = malloc(n * sizeof *kids);
  CLEANUP_FREE int *roots = malloc(n * sizeof *roots);
  CLEANUP_FREE int *queue = malloc(n * sizeof *queue);
  CLEANUP_FREE int *desc = malloc(n * sizeof *desc);
  CLEANUP_FREE int *orph = malloc(n * sizeof *orph);
  CLEANUP_FREE int *old = malloc(n * TREE_MAX_UPSTREAMS * sizeof *old);
  CLEANUP_FREE unsigned char *oldlen = malloc(n);
  if (!first || !kids || !roots || !queue || !desc || !orph || !old ||
      !oldlen) {
    seterr(err, errlen, "tree_reparent: out of memory");
    errno = ENOMEM;
    return -1;
  }
  size_t nroots;
  build_children(plan, first, kids, roots, &nroots);

  /* The descendants of i and their lists now. */
  size_t nd = 0;
  for (size_t j = first[i]; j < first[i + 1]; j++)
    desc[nd++] = kids[j];
  for (size_t h = 0; h < nd; h++)
    for (size_t j = first[desc[h]]; j < first[desc[h] + 1]; j++)
      desc[nd++] = kids[j];
  for (size_t h = 0; h < nd; h++)
    oldlen[h] = (unsigned char) tree_plan_upstreams(
        plan, (size_t) desc[h], old + h * TREE_MAX_UPSTREAMS);

  /* The cap for a node: the most children any node has now (<= k). */
  unsigned nodecap = 1;
  for (size_t x = 0; x < n; x++)
    if (plan->v[x].nchildren > nodecap)
      nodecap = plan->v[x].nchildren;

  int P = plan->v[i].parent;
  size_t norph = 0;
  for (size_t j = first[i]; j < first[i + 1]; j++)
    orph[norph++] = kids[j];
  struct orphctx oc = { plan->v, P >= 0 ? &plan->v[P] : NULL };
  qsort_r(orph, norph, sizeof *orph, cmp_orphan, &oc);

  plan->v[i].parent = TREE_NONE;
  plan->v[i].depth = 0;
  plan->v[i].nchildren = 0;
  unsigned pcount = 0;
  for (size_t x = 0; x < n; x++)
    if (plan->v[x].parent == P)
      pcount++;
  unsigned pcap = P == TREE_ORIGIN ? plan->p.origin_cap : nodecap;
  size_t o = 0;
  for (; o < norph && pcount < pcap; o++, pcount++)
    plan->v[orph[o]].parent = P;

  /* The rest: under the shallowest node with a free slot below P. */
  for (; o < norph; o++) {
    const struct tnode *me = &plan->v[orph[o]];
    plan->v[orph[o]].parent = TREE_NONE;      /* detached while searching */
    build_children(plan, first, kids, roots, &nroots);
    size_t qh, qt;
    /* leaf-only nodes only if no other node below P has room */
    int best = -1, besta = 3;
    for (int pass = 0; pass < 2 && best < 0; pass++) {
      qh = 0;
      qt = 0;
      if (P == TREE_ORIGIN) {
        memcpy(queue, roots, nroots * sizeof *queue);
        qt = nroots;
      } else {
        for (size_t j = first[P]; j < first[P + 1]; j++)
          queue[qt++] = kids[j];
      }
      while (qh < qt && best < 0) {
        size_t lvl_end = qt;
        for (; qh < lvl_end; qh++) {
          int x = queue[qh];
          unsigned cnt = (unsigned) (first[x + 1] - first[x]);
          if (cnt < nodecap && (pass == 1 || !plan->v[x].leaf_only)) {
            int a = affinity(me, &plan->v[x]);
            if (a < besta) {
              besta = a;
              best = x;
            }
          }
          for (size_t j = first[x]; j < first[x + 1]; j++)
            queue[qt++] = kids[j];
        }
      }
    }
    if (best < 0)
      abort();         /* a leaf always has a free slot (nodecap >= 1) */
    plan->v[orph[o]].parent = best;
  }

  build_children(plan, first, kids, roots, &nroots);
  for (size_t x = 0; x < n; x++)
    if (plan->v[x].parent != TREE_NONE)
      plan->v[x].depth = 0;
  set_depths(plan, first, kids, roots, nroots, queue);
  if (compute_figures(plan) == -1) {
    seterr(err, errlen, "tree_reparent: out of memory");
    errno = ENOMEM;
    return -1;
  }

  long nchanged = 0;
  for (size_t h = 0; h < nd; h++) {
    int now[TREE_MAX_UPSTREAMS];
    size_t len = tree_plan_upstreams(plan, (size_t) desc[h], now);
    if (len != oldlen[h] ||
        memcmp(now, old + h * TREE_MAX_UPSTREAMS, len * sizeof *now) != 0) {
      if (changed != NULL && (size_t) nchanged < cap)
        changed[nchanged] = desc[h];
      nchanged++;
    }
  }
  return nchanged;
}
