/* thunder — thunderd's anchor volumes: the node hooks (node.h) that keep
 * one anchor volume IMAGE.base in the libvirt pool per attached image.
 *
 *   attach   pool_anchor_ensure: an empty qcow2 whose backing file is this
 *            daemon's own export of the image over its Unix socket.  A new
 *            version of an image some VM volume is built on is refused
 *            (NODE_CONFLICT): their overlays hold blocks written over the
 *            old base.
 *   detach   pool_anchor_remove, refused (NODE_CONFLICT, naming the
 *            volumes) while VM volumes depend on the anchor.  When
 *            libvirt cannot be asked the detach is refused too
 *            (NODE_UNAVAILABLE): nobody can tell
 *            whether a VM still reads the image.
 *
 * Every call opens its own libvirt connection (pool_open also ensures the
 * pool), so a libvirtd restarted meanwhile costs nothing but a reconnect;
 * the node's lock serialises the calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anchor.h"
#include "log.h"
#include "manifest.h"
#include "pool.h"

#define COMPONENT "anchor"

struct anchors {
  struct pool_config cfg;
  char *uri, *name, *path, *socket_path;
};

/* The node result of a pool error. */
static enum node_result
result_of(enum pool_errcode code)
{
  switch (code) {
  case POOL_ERR_BUSY:
  case POOL_ERR_CONFLICT:
    return NODE_CONFLICT;
  case POOL_ERR_NOT_FOUND:
    return NODE_NOT_FOUND;
  case POOL_ERR_INVALID:
    return NODE_INVALID;
  case POOL_ERR_LIBVIRT:
    return NODE_UNAVAILABLE;
  default:
    return NODE_INTERNAL;
  }
}

static enum node_result
fail(const struct pool_error *pe, char *err, size_t errlen)
{
  snprintf(err, errlen, "%s", pe->msg);
  return result_of(pe->code);
}

static enum node_result
on_attach(void *opaque, const char *name, const struct manifest *m,
          bool replacing, char *err, size_t errlen)
{
  struct anchors *a = opaque;
  struct pool_error pe = { 0 };
  struct pool *p = pool_open(&a->cfg, &pe);
  if (p == NULL)
    return fail(&pe, err, errlen);

  enum node_result status = NODE_OK;
  if (replacing) {
    size_t n = 0;
    char **deps = pool_dependents(p, name, &n, &pe);
    if (deps == NULL)
      status = fail(&pe, err, errlen);
    else if (n > 0) {
      size_t used = (size_t)snprintf(err, errlen,
                                     "VM volumes are built on %s"
                                     POOL_ANCHOR_SUFFIX ":",
                                     name);
      for (size_t i = 0; i < n && used < errlen; i++)
        used += (size_t)snprintf(err + used, errlen - used, " %s", deps[i]);
      if (used < errlen)
        snprintf(err + used, errlen - used,
                 "; a new version would change their base under them:"
                 " delete them first, or attach it under another name");
      status = NODE_CONFLICT;
    }
    pool_strv_free(deps);
  }
  if (status == NODE_OK) {
    struct pool_anchor_spec spec = {
      .image = name,
      .size = m->size,
      .format = image_format_name(m->format),
      .socket_path = a->socket_path,
    };
    if (pool_anchor_ensure(p, &spec, &pe) == -1)
      status = fail(&pe, err, errlen);
    else
      log_info(COMPONENT, "%s/%s" POOL_ANCHOR_SUFFIX " backed by export"
               " %s on %s (%s, reconnect-delay %d s)", pool_path(p), name,
               name, a->socket_path, spec.format,
               POOL_ANCHOR_RECONNECT_DELAY);
  }
  pool_close(p);
  return status;
}

static enum node_result
on_detach(void *opaque, const char *name, bool undo, char *err,
          size_t errlen)
{
  struct anchors *a = opaque;
  struct pool_error pe = { 0 };
  struct pool *p = pool_open(&a->cfg, &pe);
  if (p == NULL)
    return fail(&pe, err, errlen);
  enum node_result status = NODE_OK;
  if (pool_anchor_remove(p, name, &pe) == -1)
    status = fail(&pe, err, errlen);
  else if (!undo)
    log_info(COMPONENT, "removed the anchor of '%s'", name);
  pool_close(p);
  return status;
}

struct anchors *
anchors_new(const char *uri, const char *pool, const char *path,
            const char *socket_path)
{
  struct anchors *a = calloc(1, sizeof *a);
  if (a == NULL)
    goto oom;
  a->uri = uri ? strdup(uri) : NULL;
  a->name = pool ? strdup(pool) : NULL;
  a->path = path ? strdup(path) : NULL;
  a->socket_path = strdup(socket_path);
  if ((uri && !a->uri) || (pool && !a->name) || (path && !a->path) ||
      !a->socket_path) {
    anchors_free(a);
    goto oom;
  }
  a->cfg = (struct pool_config){ .uri = a->uri, .name = a->name,
                                 .path = a->path };

  /* Ensure the pool now, so a misconfiguration shows at start; libvirt
   * may also come up later (every hook call ensures it again). */
  struct pool_error pe = { 0 };
  struct pool *p = pool_open(&a->cfg, &pe);
  if (p) {
    log_info(COMPONENT, "libvirt pool '%s' at %s",
             a->name ? a->name : POOL_DEFAULT_NAME, pool_path(p));
    pool_close(p);
  } else if (pe.code == POOL_ERR_LIBVIRT)
    log_warn(COMPONENT, "%s (anchors are made when it answers)", pe.msg);
  else {
    log_error(COMPONENT, "%s", pe.msg);
    anchors_free(a);
    return NULL;
  }
  return a;

oom:
  log_error(COMPONENT, "anchors: out of memory");
  return NULL;
}

void
anchors_hooks(struct anchors *a, struct node_hooks *h)
{
  *h = (struct node_hooks){ .attach = on_attach, .detach = on_detach,
                            .opaque = a };
}

void
anchors_free(struct anchors *a)
{
  if (a == NULL)
    return;
  free(a->uri);
  free(a->name);
  free(a->path);
  free(a->socket_path);
  free(a);
}
