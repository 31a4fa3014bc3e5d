/* thunder — POST /v1/clusters' decision; see provision.h for the steps.
 *
 * Memory: the node rows are copied out of the store's callback (their
 * strings live only until it returns); the placement, the distinct nodes
 * in order of first use, the warm-node scan and the tree rows are freed
 * at the one cleanup label of provision_cluster, whatever the outcome.
 */
#include "provision.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiutil.h"
#include "log.h"
#include "place.h"
#include "tree.h"

#define COMPONENT "api"

struct node_vec {
  struct store_node **v;
  size_t n, cap;
};

static int
take_node(const struct store_node *n, void *opaque)
{
  struct node_vec *nv = opaque;
  if (nv->n == nv->cap) {
    size_t cap = nv->cap ? nv->cap * 2 : 64;
    struct store_node **v = realloc(nv->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    nv->v = v;
    nv->cap = cap;
  }
  /* The row's strings live until the callback returns: copy them. */
  struct store_node *c = malloc(sizeof *c);
  if (c == NULL)
    return -1;
  *c = *n;
  c->id = strdup(n->id);
  c->nbd_uri = strdup(n->nbd_uri);
  c->control_url = strdup(n->control_url);
  c->rack = n->rack ? strdup(n->rack) : NULL;
  c->zone = n->zone ? strdup(n->zone) : NULL;
  nv->v[nv->n++] = c;
  return 0;
}

static void
node_vec_free(struct node_vec *nv)
{
  for (size_t i = 0; i < nv->n; i++) {
    free((char *)nv->v[i]->id);
    free((char *)nv->v[i]->nbd_uri);
    free((char *)nv->v[i]->control_url);
    free((char *)nv->v[i]->rack);
    free((char *)nv->v[i]->zone);
    free(nv->v[i]);
  }
  free(nv->v);
}

/* Nodes that already hold version in their cache: members of the trees of
 * other live clusters of that version. */
struct cached_scan {
  struct store *st;
  const char *version;
  char **ids;
  size_t n, cap;
};

static int
note_cached_row(const struct store_tree_row *row, void *opaque)
{
  struct cached_scan *cs = opaque;
  if (cs->n == cs->cap) {
    size_t cap = cs->cap ? cs->cap * 2 : 32;
    char **v = realloc(cs->ids, cap * sizeof *v);
    if (v == NULL)
      return -1;
    cs->ids = v;
    cs->cap = cap;
  }
  cs->ids[cs->n] = strdup(row->node_id);
  if (cs->ids[cs->n] == NULL)
    return -1;
  cs->n++;
  return 0;
}

static int
note_cluster(const struct store_cluster *c, void *opaque)
{
  struct cached_scan *cs = opaque;
  if (strcmp(c->image_version, cs->version) != 0 ||
      c->vms[STORE_VM_RUNNING] == 0)
    return 0;
  struct store_err err;
  return store_tree_list(cs->st, c->id, note_cached_row, cs, &err) ==
                 STORE_OK ? 0 : -1;
}

static bool
is_cached(const struct cached_scan *cs, const char *id)
{
  for (size_t i = 0; i < cs->n; i++)
    if (strcmp(cs->ids[i], id) == 0)
      return true;
  return false;
}

/* The tree over the distinct nodes of the placement: rows[0..*n_rows). */
static int
plan_tree(const struct provision_params *pp, const struct store_image *im,
          const struct provision_request *q, struct store_node **used, size_t n_used,
          const struct cached_scan *cs, struct store_tree_row **rows_out,
          char *err, size_t errlen)
{
  struct tree_node *tn = calloc(n_used, sizeof *tn);
  struct store_tree_row *rows = calloc(n_used, sizeof *rows);
  if (tn == NULL || rows == NULL) {
    free(tn);
    free(rows);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < n_used; i++) {
    tn[i].id = used[i]->id;
    tn[i].rack = used[i]->rack;
    tn[i].zone = used[i]->zone;
    tn[i].cached = is_cached(cs, used[i]->id) ? 1.0 : 0.0;
  }
  struct tree_params p;
  tree_params_init(&p);
  p.node_bw = pp->link_bps;
  p.origin_bw = pp->origin_bps;
  p.origin_cap = pp->origin_cap;
  p.origin_copies = pp->origin_copies;
  p.working_set = pp->working_set < im->size ? pp->working_set
                                             : (im->size ? im->size : 1);
  p.fanout = (unsigned)q->fanout;
  struct tree_plan *plan = tree_plan_build(tn, n_used, &p, err, errlen);
  free(tn);
  if (plan == NULL) {
    free(rows);
    return -1;
  }
  char *origin_uri = apiutil_export_uri(im->origin_nbd, im->name);
  for (size_t i = 0; i < n_used; i++) {
    int ups[TREE_MAX_UPSTREAMS];
    size_t k = tree_plan_upstreams(plan, i, ups);
    const char **list = calloc(k, sizeof *list);
    for (size_t j = 0; list && j < k; j++)
      list[j] = ups[j] == TREE_ORIGIN ? strdup(origin_uri)
                                      : apiutil_export_uri(used[ups[j]]->nbd_uri,
                                                       im->name);
    int parent = tree_plan_parent(plan, i);
    rows[i].node_id = used[i]->id;
    rows[i].parent = parent >= 0 ? used[parent]->id : NULL;
    rows[i].depth = tree_plan_depth(plan, i);
    rows[i].upstreams = list;
    rows[i].n_upstreams = k;
  }
  free(origin_uri);
  tree_plan_free(plan);
  *rows_out = rows;
  return 0;
}

static void
rows_free(struct store_tree_row *rows, size_t n)
{
  for (size_t i = 0; rows && i < n; i++) {
    for (size_t j = 0; j < rows[i].n_upstreams; j++)
      free((char *)rows[i].upstreams[j]);
    free((void *)rows[i].upstreams);
  }
  free(rows);
}

/* Everything provision_cluster holds; freed by work_free. */
struct work {
  struct node_vec nv;
  struct store_image *im;
  size_t *place;             /* VM i → index in nv */
  struct store_node **used;  /* distinct nodes, in order of first use */
  size_t n_used;
  const char **vm_nodes;     /* VM i → node id */
  struct cached_scan cs;
  struct store_tree_row *rows;
};

static void
work_free(struct work *w)
{
  for (size_t i = 0; i < w->cs.n; i++)
    free(w->cs.ids[i]);
  free(w->cs.ids);
  rows_free(w->rows, w->n_used);
  free(w->im);
  free(w->vm_nodes);
  free(w->used);
  free(w->place);
  node_vec_free(&w->nv);
}

/* Places q's VMs on the loaded nodes: w->place, w->used, w->vm_nodes. */
static enum provision_result
place_vms(struct work *w, const struct provision_request *q, char *msg,
          size_t msglen)
{
  struct sched_node *sn = calloc(w->nv.n ? w->nv.n : 1, sizeof *sn);
  w->place = calloc(q->count, sizeof *w->place);
  if (sn == NULL || w->place == NULL) {
    free(sn);
    snprintf(msg, msglen, "out of memory");
    return PROVISION_INTERNAL;
  }
  for (size_t i = 0; i < w->nv.n; i++) {
    const struct store_node *n = w->nv.v[i];
    sn[i] = (struct sched_node){
      .id = n->id, .rack = n->rack, .zone = n->zone,
      .ready = n->state == STORE_NODE_READY,
      .vcpus = n->vcpus, .memory_mib = n->memory_mib,
      .disk_bytes = n->disk_bytes, .used_vcpus = n->used_vcpus,
      .used_memory_mib = n->used_memory_mib,
      .used_disk_bytes = n->used_disk_bytes,
    };
  }
  struct sched_request sr = {
    .count = (uint32_t)q->count, .vcpus = (uint32_t)q->vcpus,
    .memory_mib = q->memory_mib,
    .disk_bytes = q->disk_gib ? q->disk_gib << 30 : w->im->size,
    .strategy = q->placement == STORE_PLACEMENT_PACK ? SCHED_PACK : SCHED_SPREAD,
    .nodes = q->n_nodes ? q->nodes : NULL, .n_nodes = q->n_nodes,
    .zone = q->zone, .rack = q->rack, .max_per_node = (uint32_t)q->max_per_node,
  };
  int pr = sched_place(sn, w->nv.n, &sr, w->place, msg, msglen);
  free(sn);
  if (pr == SCHED_SHORT)
    return PROVISION_INSUFFICIENT_CAPACITY;
  if (pr == SCHED_NEVER)
    return PROVISION_NEVER_FITS;
  if (pr != SCHED_OK)
    return PROVISION_INVALID;

  /* The distinct nodes, in the order of first use. */
  w->used = calloc(w->nv.n, sizeof *w->used);
  w->vm_nodes = calloc(q->count, sizeof *w->vm_nodes);
  bool *seen = calloc(w->nv.n, sizeof *seen);
  if (w->used == NULL || w->vm_nodes == NULL || seen == NULL) {
    free(seen);
    snprintf(msg, msglen, "out of memory");
    return PROVISION_INTERNAL;
  }
  for (size_t i = 0; i < q->count; i++) {
    w->vm_nodes[i] = w->nv.v[w->place[i]]->id;
    if (!seen[w->place[i]]) {
      seen[w->place[i]] = true;
      w->used[w->n_used++] = w->nv.v[w->place[i]];
    }
  }
  free(seen);
  return PROVISION_CREATED;
}

enum provision_result
provision_cluster(struct store *st, const struct provision_params *p,
                  const struct provision_request *q, char id[STORE_ID_LEN + 1],
                  struct store_err *serr, char *msg, size_t msglen)
{
  struct work w = { .cs.st = st };
  enum provision_result r = PROVISION_STORE_ERROR;

  msg[0] = '\0';
  if (q->key) {
    bool same;
    int rc = store_cluster_find_key(st, q->key, q->hash, id, &same, serr);
    if (rc == STORE_OK) {
      if (!same)
        snprintf(msg, msglen, "Idempotency-Key '%s' was used for another request (cluster %s)",
                 q->key, id);
      return same ? PROVISION_REPLAYED : PROVISION_KEY_CONFLICT;
    }
    if (rc != STORE_NOT_FOUND)
      return PROVISION_STORE_ERROR;
  }
  w.im = store_image_get(st, q->image, serr);
  if (w.im == NULL) {
    if (serr->code != STORE_NOT_FOUND)
      return PROVISION_STORE_ERROR;
    snprintf(msg, msglen, "image '%s' is not registered: POST /v1/images first",
             q->image);
    return PROVISION_UNKNOWN_IMAGE;
  }
  if (store_node_list(st, 0, take_node, &w.nv, serr) != STORE_OK)
    goto cleanup;
  if ((r = place_vms(&w, q, msg, msglen)) != PROVISION_CREATED)
    goto cleanup;
  r = PROVISION_STORE_ERROR;
  w.cs.version = w.im->version;
  if (store_cluster_list(st, STORE_MASK(STORE_CLUSTER_RUNNING) |
                                 STORE_MASK(STORE_CLUSTER_PROVISIONING),
                         note_cluster, &w.cs, serr) != STORE_OK)
    goto cleanup;
  char why[512];
  if (plan_tree(p, w.im, q, w.used, w.n_used, &w.cs, &w.rows, why,
                sizeof why) == -1) {
    snprintf(msg, msglen, "planning the relay tree: %s", why);
    r = PROVISION_INTERNAL;
    goto cleanup;
  }
  struct store_cluster c = {
    .name = q->name, .image = q->image, .image_version = w.im->version,
    .count = (uint32_t)q->count, .vcpus = (uint32_t)q->vcpus,
    .memory_mib = q->memory_mib, .disk_gib = q->disk_gib,
    .placement = q->placement, .fanout = (uint32_t)q->fanout,
    .idempotency_key = q->key, .request_hash = q->hash,
  };
  bool replayed = false;
  if (store_cluster_create(st, &c, w.vm_nodes, w.rows, w.n_used, id,
                           &replayed, serr) != STORE_OK) {
    if (serr->code == STORE_CONFLICT) {
      snprintf(msg, msglen, "%s", serr->msg);
      r = PROVISION_NAME_CONFLICT;
    }
    goto cleanup;
  }
  log_info(COMPONENT, "cluster %s (%s): %u VMs of %s on %zu nodes", id,
           q->name, (unsigned)q->count, q->image, w.n_used);
  r = replayed ? PROVISION_REPLAYED : PROVISION_CREATED;
cleanup:
  work_free(&w);
  return r;
}
