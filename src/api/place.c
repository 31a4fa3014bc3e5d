/* thunder — the VM scheduler of thunder-api; see sched.h.
 *
 * Design note.
 *
 * Order.  The nodes are sorted by id (bytewise) once; every later step
 * walks that order or breaks ties by id, so the input's order never
 * matters.  The sort also finds duplicate ids, and req->nodes is looked up
 * in it by binary search.
 *
 * Counting first.  All VMs of a request have one size, so how many VMs a
 * node can take does not depend on where the others go:
 *   room(i) = min(cap_v / v, cap_m / m, cap_d / d, max_per_node)
 *   fit(i)  = min(free_v / v, free_m / m, free_d / d, max_per_node)
 *             (0 for a down node; a dimension with d = 0 does not limit)
 * and any order of placement puts exactly min(count, Σ fit) VMs.  So
 * Σ room < count is SCHED_NEVER, Σ fit < count is SCHED_SHORT, and both
 * are known before placing anything; the argmin of each node (the first
 * of vCPUs, memory, disk, or max_per_node when strictly smaller) is what
 * the message names as short.  Sums saturate at UINT64_MAX.
 *
 * Spread.  A binary heap holds the nodes with fit > placed, keyed by the
 * dominant share the node would have after one more VM,
 *   max over d of (used_d + (placed + 1)·need_d) / cap_d,
 * kept as one fraction num/den (num ≤ den: placed + 1 ≤ fit keeps the
 * usage within capacity; a dimension the VM does not need counts as
 * min(used, cap) / cap; cap 0 counts as 0/1 if unused, else 1/1).
 * Fractions are compared by cross-multiplying in 128 bits, so equal shares
 * are equal and the tie goes to the smaller id.  Each VM pops the top,
 * which is re-keyed and sifted down, or dropped when full: O(count log n).
 *
 * Pack.  The nodes in id order, each given min(fit, what is left).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "place.h"

#define NAMES_MAX 3       /* node names listed per group in a message */
#define NAME_BYTES 64     /* bytes of an id shown in a message */

typedef unsigned __int128 u128;

enum dim { DIM_VCPUS, DIM_MEMORY, DIM_DISK, DIMS };

/* Why a node takes no more VMs: a dimension, the cap, or it is down. */
enum lim { LIM_VCPUS, LIM_MEMORY, LIM_DISK, LIM_CAP, LIM_DOWN, LIMS };

struct idref {
  const char *id;
  size_t idx;          /* into nodes[] */
};

/* A node matching the request's hints, in id order. */
struct cand {
  size_t idx;          /* into nodes[] */
  uint64_t room;       /* VMs it would hold empty */
  uint64_t fit;        /* VMs it takes now (0 if down) */
  uint64_t placed;     /* VMs of this request on it so far */
  uint64_t num, den;   /* spread: dominant share after one more VM */
  enum lim room_lim, fit_lim;
};

/* ---- Messages ------------------------------------------------------------ */

struct msg {
  char *buf;
  size_t cap;
  size_t len;
};

static void
msg_init(struct msg *m, char *err, size_t errlen)
{
  m->buf = errlen > 0 ? err : NULL;
  m->cap = m->buf ? errlen : 0;
  m->len = 0;
  if (m->buf)
    m->buf[0] = '\0';
}

static void __attribute__((format(printf, 2, 3)))
msg_add(struct msg *m, const char *fmt, ...)
{
  if (m->buf == NULL || m->len + 1 >= m->cap)
    return;
  va_list ap;
  va_start(ap, fmt);
  int r = vsnprintf(m->buf + m->len, m->cap - m->len, fmt, ap);
  va_end(ap);
  if (r < 0)
    return;
  m->len += (size_t) r;
  if (m->len > m->cap - 1)
    m->len = m->cap - 1;
}

static void
msg_putc(struct msg *m, char c)
{
  if (m->buf == NULL || m->len + 1 >= m->cap)
    return;
  m->buf[m->len++] = c;
  m->buf[m->len] = '\0';
}

/* An id from outside: at most NAME_BYTES bytes, non-printable bytes as
 * '?', in double quotes (with \" and \\) when quoted. */
static void
msg_id(struct msg *m, const char *id, bool quoted)
{
  if (quoted)
    msg_putc(m, '"');
  size_t i;
  for (i = 0; id[i] != '\0' && i < NAME_BYTES; i++) {
    unsigned char c = (unsigned char) id[i];
    if (quoted && (c == '"' || c == '\\'))
      msg_putc(m, '\\');
    msg_putc(m, c < 0x20 || c >= 0x7f ? '?' : (char) c);
  }
  if (id[i] != '\0')
    msg_add(m, "...");
  if (quoted)
    msg_putc(m, '"');
}

static const char *
plural(uint64_t n)
{
  return n == 1 ? "" : "s";
}

/* value·unit bytes as "N UNIT", exact when it divides, else one decimal. */
static void
msg_size(struct msg *m, uint64_t value, uint64_t unit_bytes)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB",
                                       "PiB", "EiB" };
  /* unit_bytes is 1 or 1 MiB; reduce to the largest unit that value fits */
  unsigned u = unit_bytes == 1 ? 0 : 2;
  long double v = (long double) value;
  uint64_t exact = value;
  bool is_exact = true;
  while (u + 1 < sizeof units / sizeof units[0] && v >= 1024) {
    if (is_exact && exact % 1024 == 0)
      exact /= 1024;
    else
      is_exact = false;
    v /= 1024;
    u++;
  }
  if (is_exact)
    msg_add(m, "%llu %s", (unsigned long long) exact, units[u]);
  else
    msg_add(m, "%.1Lf %s", v, units[u]);
}

/* "1 vCPU, 512 MiB memory, 1 GiB disk" */
static void
msg_vm(struct msg *m, const struct sched_request *req)
{
  msg_add(m, "%u vCPU%s, ", req->vcpus, plural(req->vcpus));
  msg_size(m, req->memory_mib, 1048576);
  msg_add(m, " memory");
  if (req->disk_bytes > 0) {
    msg_add(m, ", ");
    msg_size(m, req->disk_bytes, 1);
    msg_add(m, " disk");
  }
}

static void
msg_need(struct msg *m, const struct sched_request *req)
{
  msg_add(m, "need %u VM%s of ", req->count, plural(req->count));
  msg_vm(m, req);
}

/* Names the candidates whose limit (fit_lim if now, else room_lim) is l:
 * "a, b, c and 4 more".  Returns how many there are. */
static size_t
msg_names(struct msg *m, const struct sched_node *nodes,
          const struct cand *c, size_t nc, bool now, enum lim l, bool write)
{
  size_t k = 0;
  for (size_t i = 0; i < nc; i++) {
    if ((now ? c[i].fit_lim : c[i].room_lim) != l)
      continue;
    if (write && k < NAMES_MAX) {
      if (k > 0)
        msg_add(m, ", ");
      msg_id(m, nodes[c[i].idx].id, false);
    }
    k++;
  }
  if (write && k > NAMES_MAX)
    msg_add(m, " and %zu more", k - NAMES_MAX);
  return k;
}

/* The groups of nodes by what limits them: now (free capacity, SHORT):
 * "memory short on node2; max_per_node 2 reached on node1"; else (whole
 * capacity, NEVER): "limited by memory on node2; by max_per_node 2 on
 * node1". */
static void
msg_groups(struct msg *m, const struct sched_node *nodes,
           const struct cand *c, size_t nc, bool now, uint32_t mpn)
{
  static const char *const what[] = { "vCPUs", "memory", "disk" };
  bool first = true;
  for (enum lim l = LIM_VCPUS; l <= LIM_CAP; l++) {
    if (msg_names(m, nodes, c, nc, now, l, false) == 0)
      continue;
    msg_add(m, first ? (now ? "" : "limited ") : "; ");
    first = false;
    if (now && l == LIM_CAP)
      msg_add(m, "max_per_node %u reached on ", mpn);
    else if (now)
      msg_add(m, "%s short on ", what[l]);
    else if (l == LIM_CAP)
      msg_add(m, "by max_per_node %u on ", mpn);
    else
      msg_add(m, "by %s on ", what[l]);
    msg_names(m, nodes, c, nc, now, l, true);
  }
}

/* "nodes a, b and 3 more; zone "z1"; rack "r1"" */
static void
msg_hints(struct msg *m, const struct sched_request *req)
{
  const char *sep = "";
  if (req->n_nodes > 0) {
    msg_add(m, "nodes ");
    for (size_t j = 0; j < req->n_nodes && j < NAMES_MAX; j++) {
      msg_add(m, "%s", j ? ", " : "");
      msg_id(m, req->nodes[j], true);
    }
    if (req->n_nodes > NAMES_MAX)
      msg_add(m, " and %zu more", req->n_nodes - NAMES_MAX);
    sep = "; ";
  }
  if (req->zone) {
    msg_add(m, "%szone ", sep);
    msg_id(m, req->zone, true);
    sep = "; ";
  }
  if (req->rack) {
    msg_add(m, "%srack ", sep);
    msg_id(m, req->rack, true);
  }
}

/* ---- Counting ------------------------------------------------------------ */

static void
node_dims(const struct sched_node *nd, uint64_t cap[DIMS], uint64_t used[DIMS])
{
  cap[DIM_VCPUS] = nd->vcpus;
  cap[DIM_MEMORY] = nd->memory_mib;
  cap[DIM_DISK] = nd->disk_bytes;
  used[DIM_VCPUS] = nd->used_vcpus;
  used[DIM_MEMORY] = nd->used_memory_mib;
  used[DIM_DISK] = nd->used_disk_bytes;
}

/* How many VMs of need[] fit in avail[] under the cap mpn (0 = none), and
 * what limits it. */
static uint64_t
how_many(const uint64_t avail[DIMS], const uint64_t need[DIMS], uint32_t mpn,
         enum lim *lim)
{
  uint64_t best = UINT64_MAX;
  enum lim l = LIM_DISK;
  for (enum dim d = DIM_VCPUS; d < DIMS; d++) {
    if (need[d] == 0)
      continue;
    uint64_t k = avail[d] / need[d];
    if (k < best) {
      best = k;
      l = (enum lim) d;
    }
  }
  if (mpn > 0 && mpn < best) {
    best = mpn;
    l = LIM_CAP;
  }
  *lim = l;
  return best;
}

static uint64_t
sat_add(uint64_t a, uint64_t b)
{
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- Spread -------------------------------------------------------------- */

/* c's dominant share after k VMs of need[] (k ≤ c->fit) into num/den. */
static void
share_after(const struct sched_node *nd, const uint64_t need[DIMS],
            uint64_t k, uint64_t *num, uint64_t *den)
{
  uint64_t cap[DIMS], used[DIMS];
  node_dims(nd, cap, used);
  *num = 0;
  *den = 1;
  for (enum dim d = DIM_VCPUS; d < DIMS; d++) {
    uint64_t a, b;
    if (cap[d] == 0) {
      a = used[d] > 0;
      b = 1;
    } else if (need[d] == 0) {
      a = used[d] < cap[d] ? used[d] : cap[d];
      b = cap[d];
    } else {
      a = used[d] + k * need[d];   /* k ≤ fit: within cap, no overflow */
      b = cap[d];
    }
    if ((u128) a * *den > (u128) *num * b) {
      *num = a;
      *den = b;
    }
  }
}

/* True if candidate a goes before b: smaller share, then smaller id. */
static bool
before(const struct sched_node *nodes, const struct cand *a,
       const struct cand *b)
{
  u128 l = (u128) a->num * b->den, r = (u128) b->num * a->den;
  if (l != r)
    return l < r;
  return strcmp(nodes[a->idx].id, nodes[b->idx].id) < 0;
}

static void
sift_down(const struct sched_node *nodes, const struct cand *c, size_t *heap,
          size_t len, size_t i)
{
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < len && before(nodes, &c[heap[l]], &c[heap[m]]))
      m = l;
    if (r < len && before(nodes, &c[heap[r]], &c[heap[m]]))
      m = r;
    if (m == i)
      return;
    size_t t = heap[i];
    heap[i] = heap[m];
    heap[m] = t;
    i = m;
  }
}

/* Places count VMs; Σ fit ≥ count. */
static int
place_spread(const struct sched_node *nodes, struct cand *c, size_t nc,
             const uint64_t need[DIMS], uint32_t count, size_t *out,
             struct msg *m)
{
  size_t *heap = malloc((nc ? nc : 1) * sizeof *heap);
  if (heap == NULL) {
    msg_add(m, "scheduler: %s", strerror(ENOMEM));
    errno = ENOMEM;
    return SCHED_ERROR;
  }
  size_t len = 0;
  for (size_t i = 0; i < nc; i++) {
    if (c[i].fit == 0)
      continue;
    share_after(&nodes[c[i].idx], need, 1, &c[i].num, &c[i].den);
    heap[len++] = i;
  }
  for (size_t i = len / 2; i-- > 0;)
    sift_down(nodes, c, heap, len, i);
  for (uint32_t v = 0; v < count; v++) {
    struct cand *top = &c[heap[0]];
    out[v] = top->idx;
    top->placed++;
    if (top->placed < top->fit)
      share_after(&nodes[top->idx], need, top->placed + 1, &top->num,
                  &top->den);
    else
      heap[0] = heap[--len];
    if (len > 0)
      sift_down(nodes, c, heap, len, 0);
    else if (v + 1 < count)
      abort();                     /* Σ fit ≥ count was checked */
  }
  free(heap);
  return SCHED_OK;
}

static void
place_pack(struct cand *c, size_t nc, uint32_t count, size_t *out)
{
  uint32_t v = 0;
  for (size_t i = 0; i < nc && v < count; i++)
    for (; c[i].placed < c[i].fit && v < count; c[i].placed++)
      out[v++] = c[i].idx;
}

/* ---- Checks -------------------------------------------------------------- */

static int
cmp_idref(const void *a, const void *b)
{
  const struct idref *x = a, *y = b;
  return strcmp(x->id, y->id);
}

static int
invalid(struct msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
invalid(struct msg *m, const char *fmt, ...)
{
  if (m->buf != NULL) {
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(m->buf, m->cap, fmt, ap);
    va_end(ap);
    m->len = r < 0 ? 0 : (size_t) r < m->cap ? (size_t) r : m->cap - 1;
    m->buf[m->len] = '\0';
  }
  errno = EINVAL;
  return SCHED_ERROR;
}

/* The checks of the request alone. */
static int
check_request(const struct sched_request *req, size_t *out, struct msg *m)
{
  if (req == NULL)
    return invalid(m, "scheduler: no request");
  if (req->count == 0)
    return invalid(m, "count is 0: at least one VM is needed");
  if (out == NULL)
    return invalid(m, "scheduler: no output array for %u VMs", req->count);
  if (req->vcpus == 0)
    return invalid(m, "vcpus is 0: a VM needs at least one");
  if (req->memory_mib == 0)
    return invalid(m, "memory_mib is 0: a VM needs some memory");
  if (req->strategy != SCHED_SPREAD && req->strategy != SCHED_PACK)
    return invalid(m, "placement strategy %d is unknown (spread, pack)",
                   (int) req->strategy);
  if (req->n_nodes > 0 && req->nodes == NULL)
    return invalid(m, "placement nodes: %zu ids announced, none given",
                   req->n_nodes);
  for (size_t j = 0; j < req->n_nodes; j++)
    if (req->nodes[j] == NULL || req->nodes[j][0] == '\0')
      return invalid(m, "placement nodes[%zu] is empty", j);
  if (req->zone != NULL && req->zone[0] == '\0')
    return invalid(m, "placement zone is empty");
  if (req->rack != NULL && req->rack[0] == '\0')
    return invalid(m, "placement rack is empty");
  return SCHED_OK;
}

static bool
label_eq(const char *label, const char *hint)
{
  return hint == NULL || (label != NULL && strcmp(label, hint) == 0);
}

static int
cmp_str(const void *a, const void *b)
{
  return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Marks in selected[] the nodes req->nodes names (refs sorted by id), or
 * SCHED_NEVER naming the first unknown ids (in request order) and how many
 * distinct ones there are; SCHED_ERROR (ENOMEM). */
static int
check_known(const struct idref *refs, size_t n, const struct sched_request *req,
            bool *selected, struct msg *m)
{
  const char **unknown = NULL;
  size_t n_unknown = 0;
  for (size_t j = 0; j < req->n_nodes; j++) {
    struct idref key = { .id = req->nodes[j] };
    const struct idref *r = n ? bsearch(&key, refs, n, sizeof *refs,
                                        cmp_idref)
                              : NULL;
    if (r != NULL) {
      selected[r - refs] = true;
      continue;
    }
    if (unknown == NULL) {
      unknown = malloc((req->n_nodes - j) * sizeof *unknown);
      if (unknown == NULL) {
        msg_add(m, "scheduler: %zu placement nodes: %s", req->n_nodes,
                strerror(ENOMEM));
        errno = ENOMEM;
        return SCHED_ERROR;
      }
    }
    unknown[n_unknown++] = req->nodes[j];
  }
  if (n_unknown == 0)
    return SCHED_OK;
  /* The first NAMES_MAX distinct ones, in request order. */
  const char *first[NAMES_MAX];
  size_t n_first = 0;
  for (size_t k = 0; k < n_unknown && n_first < NAMES_MAX; k++) {
    bool seen = false;
    for (size_t l = 0; l < n_first; l++)
      seen = seen || strcmp(first[l], unknown[k]) == 0;
    if (!seen)
      first[n_first++] = unknown[k];
  }
  qsort(unknown, n_unknown, sizeof *unknown, cmp_str);
  size_t distinct = 1;
  for (size_t k = 1; k < n_unknown; k++)
    distinct += strcmp(unknown[k - 1], unknown[k]) != 0;
  free(unknown);
  msg_add(m, "placement nodes: ");
  for (size_t k = 0; k < n_first; k++) {
    msg_add(m, "%s", k ? ", " : "");
    msg_id(m, first[k], true);
  }
  if (distinct > n_first)
    msg_add(m, " and %zu more", distinct - n_first);
  msg_add(m, " %s not registered (%zu node%s registered)",
          distinct == 1 ? "is" : "are", n, plural(n));
  return SCHED_NEVER;
}

/* SCHED_NEVER: nothing matches the hints. */
static int
never_no_match(const struct sched_node *nodes, const struct idref *refs,
               size_t n, const struct sched_request *req,
               const bool *selected, struct msg *m)
{
  if (n == 0) {
    msg_add(m, "no node is registered");
    return SCHED_NEVER;
  }
  size_t base = 0, in_zone = 0, in_rack = 0;
  for (size_t i = 0; i < n; i++) {
    if (req->n_nodes > 0 && !selected[i])
      continue;
    const struct sched_node *nd = &nodes[refs[i].idx];
    base++;
    in_zone += label_eq(nd->zone, req->zone);
    in_rack += label_eq(nd->rack, req->rack);
  }
  msg_add(m, "no node matches the placement (");
  msg_hints(m, req);
  msg_add(m, "): of the %zu %s node%s", base,
          req->n_nodes > 0 ? "listed" : "registered", plural(base));
  if (req->zone) {
    msg_add(m, ", %zu in zone ", in_zone);
    msg_id(m, req->zone, true);
  }
  if (req->rack) {
    msg_add(m, ", %zu in rack ", in_rack);
    msg_id(m, req->rack, true);
  }
  return SCHED_NEVER;
}

/* SCHED_NEVER: a VM bigger than every matching node. */
static int
never_too_big(const struct sched_node *nodes, const struct cand *c, size_t nc,
              const struct sched_request *req, const uint64_t need[DIMS],
              struct msg *m)
{
  static const char *const what[] = { "vCPUs", "memory", "disk" };
  uint64_t most[DIMS] = { 0 };
  const char *who[DIMS] = { NULL };
  for (size_t i = 0; i < nc; i++) {
    uint64_t cap[DIMS], used[DIMS];
    node_dims(&nodes[c[i].idx], cap, used);
    for (enum dim d = DIM_VCPUS; d < DIMS; d++)
      if (who[d] == NULL || cap[d] > most[d]) {
        most[d] = cap[d];
        who[d] = nodes[c[i].idx].id;
      }
  }
  msg_add(m, "a VM of ");
  msg_vm(m, req);
  if (nc == 1)
    msg_add(m, " is bigger than the whole capacity of the one node "
               "matching the request (");
  else
    msg_add(m, " is bigger than the whole capacity of each of the %zu "
               "nodes matching the request (largest: ", nc);
  for (enum dim d = DIM_VCPUS; d < DIMS; d++) {
    if (d == DIM_DISK && need[d] == 0)
      continue;
    if (d > DIM_VCPUS)
      msg_add(m, ", ");
    if (d == DIM_VCPUS)
      msg_add(m, "%llu vCPU%s", (unsigned long long) most[d],
              plural(most[d]));
    else {
      msg_size(m, most[d], d == DIM_MEMORY ? 1048576 : 1);
      msg_add(m, " %s", what[d]);
    }
    msg_add(m, " on ");
    msg_id(m, who[d], false);
  }
  msg_add(m, ")");
  return SCHED_NEVER;
}

/* ---- Entry --------------------------------------------------------------- */

const char *
sched_strategy_name(enum sched_strategy s)
{
  switch (s) {
  case SCHED_SPREAD: return "spread";
  case SCHED_PACK: return "pack";
  }
  return NULL;
}

int
sched_place(const struct sched_node *nodes, size_t n,
            const struct sched_request *req, size_t *out, char *err,
            size_t errlen)
{
  struct msg m;
  msg_init(&m, err, errlen);
  int r = check_request(req, out, &m);
  if (r != SCHED_OK)
    return r;
  if (n > 0 && nodes == NULL)
    return invalid(&m, "scheduler: %zu nodes announced, none given", n);
  for (size_t i = 0; i < n; i++)
    if (nodes[i].id == NULL || nodes[i].id[0] == '\0')
      return invalid(&m, "node %zu: id is missing", i);

  struct idref *refs = malloc((n ? n : 1) * sizeof *refs);
  bool *selected = calloc(n ? n : 1, sizeof *selected);
  struct cand *c = malloc((n ? n : 1) * sizeof *c);
  if (refs == NULL || selected == NULL || c == NULL) {
    msg_add(&m, "scheduler: %zu nodes: %s", n, strerror(ENOMEM));
    errno = ENOMEM;
    r = SCHED_ERROR;
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    refs[i] = (struct idref) { .id = nodes[i].id, .idx = i };
  qsort(refs, n, sizeof *refs, cmp_idref);
  for (size_t i = 1; i < n; i++)
    if (strcmp(refs[i - 1].id, refs[i].id) == 0) {
      size_t a = refs[i - 1].idx, b = refs[i].idx;
      invalid(&m, "nodes %zu and %zu have the same id ", a < b ? a : b,
              a < b ? b : a);
      msg_id(&m, refs[i].id, true);
      r = SCHED_ERROR;
      goto out;
    }

  r = check_known(refs, n, req, selected, &m);
  if (r != SCHED_OK)
    goto out;

  /* The candidates, in id order, with their room and fit. */
  const uint64_t need[DIMS] = { req->vcpus, req->memory_mib, req->disk_bytes };
  size_t nc = 0, n_ready = 0;
  uint64_t room = 0, fit = 0;
  for (size_t i = 0; i < n; i++) {
    const struct sched_node *nd = &nodes[refs[i].idx];
    if ((req->n_nodes > 0 && !selected[i]) || !label_eq(nd->zone, req->zone) ||
        !label_eq(nd->rack, req->rack))
      continue;
    struct cand *k = &c[nc++];
    uint64_t cap[DIMS], used[DIMS], avail[DIMS];
    node_dims(nd, cap, used);
    for (enum dim d = DIM_VCPUS; d < DIMS; d++)
      avail[d] = used[d] < cap[d] ? cap[d] - used[d] : 0;
    *k = (struct cand) { .idx = refs[i].idx };
    k->room = how_many(cap, need, req->max_per_node, &k->room_lim);
    if (nd->ready) {
      k->fit = how_many(avail, need, req->max_per_node, &k->fit_lim);
      n_ready++;
    } else {
      k->fit = 0;
      k->fit_lim = LIM_DOWN;
    }
    room = sat_add(room, k->room);
    fit = sat_add(fit, k->fit);
  }

  if (nc == 0) {
    r = never_no_match(nodes, refs, n, req, selected, &m);
    goto out;
  }
  if (room < req->count) {
    if (room == 0) {             /* max_per_node ≥ 1: a dimension is short */
      r = never_too_big(nodes, c, nc, req, need, &m);
      goto out;
    }
    msg_need(&m, req);
    msg_add(&m, "; the %zu node%s matching the request hold%s at most "
                "%llu even when empty (", nc, plural(nc), nc == 1 ? "s" : "",
            (unsigned long long) room);
    msg_groups(&m, nodes, c, nc, false, req->max_per_node);
    msg_add(&m, ")");
    r = SCHED_NEVER;
    goto out;
  }
  if (fit < req->count) {
    msg_need(&m, req);
    if (n_ready == 0) {
      msg_add(&m, "; none of the %zu node%s matching the request is ready "
                  "(down: ", nc, plural(nc));
      msg_names(&m, nodes, c, nc, true, LIM_DOWN, true);
      msg_add(&m, ")");
    } else {
      if (n_ready == 1)
        msg_add(&m, "; the one ready node matching the request fits");
      else
        msg_add(&m, "; the %zu ready nodes matching the request fit",
                n_ready);
      msg_add(&m, " %llu now (", (unsigned long long) fit);
      msg_groups(&m, nodes, c, nc, true, req->max_per_node);
      msg_add(&m, ")");
      if (nc > n_ready) {
        msg_add(&m, "; %zu matching node%s %s down (", nc - n_ready,
                plural(nc - n_ready), nc - n_ready == 1 ? "is" : "are");
        msg_names(&m, nodes, c, nc, true, LIM_DOWN, true);
        msg_add(&m, ")");
      }
    }
    r = SCHED_SHORT;
    goto out;
  }

  if (req->strategy == SCHED_PACK) {
    place_pack(c, nc, req->count, out);
    r = SCHED_OK;
  } else {
    r = place_spread(nodes, c, nc, need, req->count, out, &m);
  }

out:
  free(refs);
  free(selected);
  free(c);
  return r;
}
