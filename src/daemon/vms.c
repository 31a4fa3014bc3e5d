/* thunder — thunderd's VMs (see vms.h): the /v1/vms requests on the
 * node's libvirt pool, and /v1/node.  Results are control_result kinds
 * (control.c maps them to HTTP; the usual status in brackets):
 *
 *   PUT     pool_vm_info NAME ─ found, same spec ──────▶ OK [200], its state
 *                         │     found, other spec ─────▶ CONFLICT [409] (the fields)
 *                         │     not thunder's ─────────▶ CONFLICT [409]
 *                         └ none ─ image attached? no ─▶ NOT_FOUND [404]
 *                                  pool_vm_create ─────▶ CREATED [201], its state
 *   GET     pool_vm_info NAME ─────────────────────────▶ OK / NOT_FOUND
 *   DELETE  pool_vm_info NAME, then pool_vm_delete ────▶ OK {} / NOT_FOUND
 *
 * "Same spec": the image, vCPUs and memory equal; the disk equal to
 * disk_gib GiB, or to the image's size when disk_gib is not given; and
 * an accelerator asked for (kvm or tcg, not auto) equal to the one the VM
 * runs with.  A PUT never starts or stops an existing VM: its state is
 * reported and the caller decides.
 *
 * Every request opens its own libvirt connection (pool_open also ensures
 * the pool), as the anchors do (anchor.c); pool_open failing because
 * libvirt does not answer is UNAVAILABLE [503].  A PUT or DELETE holds its VM name in
 * v->busy for its whole length, so two requests for one name run one
 * after the other and the second sees what the first did.  "auto" is
 * resolved once per process (pool_kvm_usable probes for up to 2 s).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "jsonutil.h"
#include "log.h"
#include "origin.h"
#include "pool.h"
#include "register.h"
#include "vms.h"

#define COMPONENT "vms"
#define GIB (1024ULL * 1024 * 1024)

/* A VM name a PUT or DELETE is working on (on that request's stack). */
struct busy {
  const char *name;
  struct busy *next;
};

struct vms {
  struct pool_config cfg;
  char *uri, *pool, *path;
  bool enabled;
  struct node *node;      /* NULL on an origin */
  struct exports *reg;

  pthread_mutex_t lock;   /* busy */
  pthread_cond_t cond;    /* a name left busy */
  struct busy *busy;

  pthread_mutex_t kvm_lock;
  int kvm;                /* -1 not asked yet, else pool_kvm_usable() */
};

/* ---- helpers ------------------------------------------------------------- */

/* Waits until no other request works on name, then claims it with b. */
static void
name_claim(struct vms *v, const char *name, struct busy *b)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&v->lock);
  for (;;) {
    struct busy *o = v->busy;
    while (o && strcmp(o->name, name) != 0)
      o = o->next;
    if (o == NULL)
      break;
    pthread_cond_wait(&v->cond, &v->lock);
  }
  b->name = name;
  b->next = v->busy;
  v->busy = b;
}

static void
name_release(struct vms *v, struct busy *b)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&v->lock);
  for (struct busy **pp = &v->busy; *pp; pp = &(*pp)->next) {
    if (*pp == b) {
      *pp = b->next;
      break;
    }
  }
  pthread_cond_broadcast(&v->cond);
}

/* The result kind and error code of a pool error. */
static enum control_result
pool_status(const struct pool_error *pe, const char **code, char *err,
            size_t errlen)
{
  snprintf(err, errlen, "%s", pe->msg);
  switch (pe->code) {
  case POOL_ERR_INVALID:
    *code = "invalid";
    return CONTROL_INVALID;
  case POOL_ERR_NOT_FOUND:
    *code = "not_found";
    return CONTROL_NOT_FOUND;
  case POOL_ERR_CONFLICT:
  case POOL_ERR_BUSY:
    *code = "conflict";
    return CONTROL_CONFLICT;
  default:
    *code = "internal";
    return CONTROL_INTERNAL;
  }
}

/* CONFLICT no_pool for a node without a pool (or an origin). */
static enum control_result
no_pool(const struct vms *v, const char **code, char *err, size_t errlen)
{
  *code = "no_pool";
  snprintf(err, errlen, "%s",
           v->node ? "this node has no libvirt pool (thunderd --pool none): it runs no VMs"
                   : "this thunderd is an origin: it runs no VMs");
  return CONTROL_CONFLICT;
}

/* Opens the pool into *p: CONTROL_OK, or a failure (UNAVAILABLE when
 * libvirt does not answer) with err set. */
static enum control_result
open_pool(struct vms *v, struct pool **p, const char **code, char *err,
          size_t errlen)
{
  if (!v->enabled)
    return no_pool(v, code, err, errlen);
  struct pool_error pe = { 0 };
  *p = pool_open(&v->cfg, &pe);
  if (*p != NULL)
    return CONTROL_OK;
  if (pe.code == POOL_ERR_LIBVIRT) {
    *code = "unavailable";
    snprintf(err, errlen, "%s", pe.msg);
    return CONTROL_UNAVAILABLE;
  }
  *code = "internal";
  snprintf(err, errlen, "%s", pe.msg);
  return CONTROL_INTERNAL;
}

/* A VM's JSON (schemas/node-vm-state.schema.json), or NULL. */
static struct json_object *
vm_json(const struct pool_vm_info *i)
{
  struct json_object *o = json_object_new_object();
  bool ok =
      jsonutil_add(o, "name", json_object_new_string(i->name)) &&
      jsonutil_add(o, "image", json_object_new_string(i->image)) &&
      jsonutil_add(o, "vcpus", json_object_new_int64(i->vcpus)) &&
      jsonutil_add(o, "memory_mib", json_object_new_int64(i->memory_mib)) &&
      jsonutil_add(o, "disk_bytes", json_object_new_uint64(i->disk_bytes)) &&
      jsonutil_add(o, "state", json_object_new_string(pool_vm_state_name(i->state))) &&
      jsonutil_add(o, "volume", json_object_new_string(i->volume)) &&
      jsonutil_add_nullable(o, "console_log",
                   i->console_log ? json_object_new_string(i->console_log)
                                  : NULL) &&
      jsonutil_add(o, "accel", json_object_new_string(pool_accel_name(i->accel)));
  if (!ok) {
    json_object_put(o);
    return NULL;
  }
  return o;
}

/* Sets *reply to the VM's JSON: res, or INTERNAL when out of memory. */
static enum control_result
reply_vm(const struct pool_vm_info *i, enum control_result status, struct json_object **reply,
         const char **code, char *err, size_t errlen)
{
  *reply = vm_json(i);
  if (*reply == NULL) {
    *code = "internal";
    snprintf(err, errlen, "out of memory");
    return CONTROL_INTERNAL;
  }
  return status;
}

/* pool_kvm_usable(), asked once. */
static bool
kvm_usable(struct vms *v)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&v->kvm_lock);
  if (v->kvm < 0) {
    v->kvm = pool_kvm_usable();
    log_info(COMPONENT, "accel auto: %s", v->kvm ? "kvm" : "tcg (KVM does not run a guest here)");
  }
  return v->kvm;
}

static const char *
accel_name(enum control_accel a)
{
  return a == CONTROL_ACCEL_KVM ? "kvm" : a == CONTROL_ACCEL_TCG ? "tcg" : "auto";
}

/* Compares an existing VM with a request: CONTROL_OK the same,
 * CONTROL_CONFLICT different (err lists how), or another failure. */
static enum control_result
compare_spec(struct pool *p, const struct pool_vm_info *i,
             const struct control_vm *req, const char **code, char *err,
             size_t errlen)
{
  char diff[768] = "";
  size_t n = 0;
#define DIFF(...)                                                              \
  do {                                                                         \
    if (n < sizeof diff)                                                       \
      n += (size_t)snprintf(diff + n, sizeof diff - n, "%s", n ? ", " : "");  \
    if (n < sizeof diff)                                                       \
      n += (size_t)snprintf(diff + n, sizeof diff - n, __VA_ARGS__);          \
  } while (0)

  if (strcmp(i->image, req->image) != 0)
    DIFF("image %s (asked: %s)", i->image, req->image);
  if (i->vcpus != req->vcpus)
    DIFF("vcpus %u (asked: %u)", i->vcpus, req->vcpus);
  if (i->memory_mib != req->memory_mib)
    DIFF("memory_mib %u (asked: %u)", i->memory_mib, req->memory_mib);
  if (strcmp(i->image, req->image) == 0) {
    uint64_t want = (uint64_t)req->disk_gib * GIB;
    if (req->disk_gib == 0) {
      struct pool_error pe = { 0 };
      if (pool_image_size(p, req->image, &want, &pe) < 0)
        return pool_status(&pe, code, err, errlen);
    }
    if (i->disk_bytes != want) {
      if (req->disk_gib)
        DIFF("disk_bytes %" PRIu64 " (asked: disk_gib %u)", i->disk_bytes,
             req->disk_gib);
      else
        DIFF("disk_bytes %" PRIu64 " (asked: the image's size, %" PRIu64 ")",
             i->disk_bytes, want);
    }
  }
  if (req->accel != CONTROL_ACCEL_AUTO &&
      strcmp(accel_name(req->accel), pool_accel_name(i->accel)) != 0)
    DIFF("accel %s (asked: %s)", pool_accel_name(i->accel),
         accel_name(req->accel));
#undef DIFF
  if (n == 0)
    return CONTROL_OK;
  *code = "conflict";
  snprintf(err, errlen, "VM %s exists with another spec: %s; delete it first or choose another name",
           i->name, diff);
  return CONTROL_CONFLICT;
}

/* ---- requests ------------------------------------------------------------- */

/* PUT with the name claimed and the pool open. */
static enum control_result
put_locked(struct vms *v, struct pool *p, const struct control_vm *req,
           struct json_object **reply, const char **code, char *err,
           size_t errlen)
{
  struct pool_error pe = { 0 };
  struct pool_vm_info info;
  if (pool_vm_info(p, req->name, &info, &pe) == 0) {
    enum control_result r = compare_spec(p, &info, req, code, err, errlen);
    if (r == CONTROL_OK)
      r = reply_vm(&info, CONTROL_OK, reply, code, err, errlen);
    pool_vm_info_free(&info);
    return r;
  }
  if (pe.code == POOL_ERR_CONFLICT) {
    *code = "conflict";
    snprintf(err, errlen, "%s; a VM of that name cannot be made here", pe.msg);
    return CONTROL_CONFLICT;
  }
  if (pe.code != POOL_ERR_NOT_FOUND)
    return pool_status(&pe, code, err, errlen);

  /* Only whether the image is attached counts.  (A detach racing this
   * create makes the create fail, or is refused once the volume is on
   * the anchor: the pool's lock orders them.) */
  CLEANUP_JSON_PUT struct json_object *image =
      v->node ? node_image_json(v->node, req->image) : NULL;
  if (image == NULL) {
    *code = "not_found";
    snprintf(err, errlen, "image %s is not attached on this node: attach it first (PUT /v1/images/%s)",
             req->image, req->image);
    return CONTROL_NOT_FOUND;
  }

  bool kvm = req->accel == CONTROL_ACCEL_KVM ||
             (req->accel == CONTROL_ACCEL_AUTO && kvm_usable(v));
  struct pool_vm_spec spec = {
    .name = req->name,
    .image = req->image,
    .vcpus = req->vcpus,
    .memory_mib = req->memory_mib,
    .capacity = (uint64_t)req->disk_gib * GIB,
    .accel = kvm ? POOL_ACCEL_KVM : POOL_ACCEL_TCG,
  };
  if (pool_vm_create(p, &spec, &pe) < 0) {
    enum control_result status = pool_status(&pe, code, err, errlen);
    log_warn(COMPONENT, "VM %s: %s", req->name, pe.msg);
    return status;
  }
  if (pool_vm_info(p, req->name, &info, &pe) < 0)
    return pool_status(&pe, code, err, errlen);
  log_info(COMPONENT, "VM %s: created on image %s (%u vCPUs, %u MiB, disk %" PRIu64 " bytes, %s), %s",
           info.name, info.image, info.vcpus, info.memory_mib, info.disk_bytes,
           pool_accel_name(info.accel), pool_vm_state_name(info.state));
  enum control_result r = reply_vm(&info, CONTROL_CREATED, reply, code, err, errlen);
  pool_vm_info_free(&info);
  return r;
}

enum control_result
vms_put(struct vms *v, const struct control_vm *req,
        struct json_object **reply, const char **code, char *err,
        size_t errlen)
{
  if (!v->enabled)
    return no_pool(v, code, err, errlen);
  struct busy b;
  name_claim(v, req->name, &b);
  struct pool *p = NULL;
  enum control_result status = open_pool(v, &p, code, err, errlen);
  if (status == CONTROL_OK)
    status = put_locked(v, p, req, reply, code, err, errlen);
  pool_close(p);
  name_release(v, &b);
  return status;
}

/* pool_vm_info for GET and DELETE: CONTROL_OK with *info, or NOT_FOUND
 * (absent or not thunder's) or another failure with err set. */
static enum control_result
find_vm(struct pool *p, const char *name, struct pool_vm_info *info,
        const char **code, char *err, size_t errlen)
{
  struct pool_error pe = { 0 };
  if (pool_vm_info(p, name, info, &pe) == 0)
    return CONTROL_OK;
  if (pe.code == POOL_ERR_NOT_FOUND) {
    *code = "not_found";
    snprintf(err, errlen, "no VM %s here", name);
    return CONTROL_NOT_FOUND;
  }
  if (pe.code == POOL_ERR_CONFLICT) {
    *code = "not_found";
    snprintf(err, errlen, "no VM %s here: %s", name, pe.msg);
    return CONTROL_NOT_FOUND;
  }
  return pool_status(&pe, code, err, errlen);
}

enum control_result
vms_get(struct vms *v, const char *name, struct json_object **reply,
        const char **code, char *err, size_t errlen)
{
  struct pool *p = NULL;
  enum control_result status = open_pool(v, &p, code, err, errlen);
  if (status != CONTROL_OK)
    return status;
  struct pool_vm_info info;
  status = find_vm(p, name, &info, code, err, errlen);
  if (status == CONTROL_OK) {
    status = reply_vm(&info, CONTROL_OK, reply, code, err, errlen);
    pool_vm_info_free(&info);
  }
  pool_close(p);
  return status;
}

enum control_result
vms_delete(struct vms *v, const char *name, struct json_object **reply,
           const char **code, char *err, size_t errlen)
{
  if (!v->enabled)
    return no_pool(v, code, err, errlen);
  struct busy b;
  name_claim(v, name, &b);
  struct pool *p = NULL;
  enum control_result status = open_pool(v, &p, code, err, errlen);
  struct pool_vm_info info;
  if (status == CONTROL_OK &&
      (status = find_vm(p, name, &info, code, err, errlen)) == CONTROL_OK) {
    pool_vm_info_free(&info);
    struct pool_error pe = { 0 };
    if (pool_vm_delete(p, name, &pe) < 0) {
      status = pool_status(&pe, code, err, errlen);
      log_warn(COMPONENT, "VM %s: %s", name, pe.msg);
    } else {
      log_info(COMPONENT, "VM %s: deleted (domain and volume)", name);
      *reply = json_object_new_object();
      status = CONTROL_OK;
    }
  }
  pool_close(p);
  name_release(v, &b);
  return status;
}

enum control_result
vms_list(struct vms *v, struct json_object **reply, const char **code,
         char *err, size_t errlen)
{
  struct pool *p = NULL;
  enum control_result status = open_pool(v, &p, code, err, errlen);
  if (status != CONTROL_OK)
    return status;
  struct pool_error pe = { 0 };
  size_t n = 0;
  struct pool_vm_info *list = pool_vm_list(p, &n, &pe);
  if (list == NULL) {
    status = pool_status(&pe, code, err, errlen);
  } else {
    struct json_object *o = json_object_new_object();
    struct json_object *a = json_object_new_array();
    bool ok = jsonutil_add(o, "vms", a);
    for (size_t i = 0; ok && i < n; i++) {
      struct json_object *j = vm_json(&list[i]);
      ok = j != NULL && json_object_array_add(a, j) == 0;
      if (!ok)
        json_object_put(j);
    }
    if (ok) {
      *reply = o;
      status = CONTROL_OK;
    } else {
      json_object_put(o);
      *code = "internal";
      snprintf(err, errlen, "out of memory");
      status = CONTROL_INTERNAL;
    }
    pool_vm_list_free(list, n);
  }
  pool_close(p);
  return status;
}

/* ---- the node --------------------------------------------------------------- */

/* The names of the images this thunderd serves, as a new array. */
static struct json_object *
image_names(struct vms *v)
{
  CLEANUP_JSON_PUT struct json_object *list =
      v->node ? node_list_json(v->node) : origin_list_json(v->reg);
  struct json_object *images, *names = json_object_new_array();
  if (list == NULL || names == NULL ||
      !json_object_object_get_ex(list, "images", &images)) {
    json_object_put(names);
    return NULL;
  }
  size_t n = json_object_array_length(images);
  for (size_t i = 0; i < n; i++) {
    struct json_object *name;
    if (!json_object_object_get_ex(json_object_array_get_idx(images, i),
                                   "name", &name))
      continue;
    if (json_object_array_add(names, json_object_get(name)) != 0) {
      json_object_put(name);
      json_object_put(names);
      return NULL;
    }
  }
  return names;
}

enum control_result
vms_node_info(struct vms *v, struct json_object **reply, const char **code,
              char *err, size_t errlen)
{
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) < 0)
    snprintf(host, sizeof host, "localhost");

  const char *libvirt = "disabled";
  char libvirt_error[1024] = "";
  CLEANUP_FREE char *path = NULL;
  struct json_object *vms = json_object_new_int64(0);
  if (v->enabled) {
    struct pool_error pe = { 0 };
    struct pool *p = pool_open(&v->cfg, &pe);
    if (p == NULL) {
      libvirt = "unreachable";
      snprintf(libvirt_error, sizeof libvirt_error, "%s", pe.msg);
      json_object_put(vms);
      vms = NULL;
      path = strdup(v->path ? v->path : POOL_DEFAULT_PATH);
    } else {
      libvirt = "ok";
      path = strdup(pool_path(p));
      size_t n = 0;
      struct pool_vm_info *list = pool_vm_list(p, &n, &pe);
      json_object_put(vms);
      vms = NULL;
      if (list != NULL)
        vms = json_object_new_int64((int64_t)n);
      else
        snprintf(libvirt_error, sizeof libvirt_error, "%s", pe.msg);
      pool_vm_list_free(list, n);
      pool_close(p);
    }
  }
  struct json_object *disk_free = NULL;
  struct statvfs st;
  if (path && statvfs(path, &st) == 0)
    disk_free = json_object_new_uint64((uint64_t)st.f_bavail * st.f_frsize);

  /* Every value is added or dropped by add: none is left over. */
  struct json_object *o = json_object_new_object();
  bool ok = jsonutil_add(o, "hostname", json_object_new_string(host));
  ok = jsonutil_add(o, "mode", json_object_new_string(v->node ? "node" : "origin")) && ok;
  ok = jsonutil_add(o, "vcpus", json_object_new_uint64(register_host_vcpus())) && ok;
  ok = jsonutil_add(o, "memory_mib",
           json_object_new_uint64(register_host_memory_mib())) && ok;
  ok = jsonutil_add_nullable(o, "pool",
                    v->enabled ? json_object_new_string(
                                     v->pool ? v->pool : POOL_DEFAULT_NAME)
                               : NULL) && ok;
  ok = jsonutil_add_nullable(o, "pool_path",
                    path ? json_object_new_string(path) : NULL) && ok;
  ok = jsonutil_add_nullable(o, "disk_free_bytes", disk_free) && ok;
  ok = jsonutil_add(o, "libvirt", json_object_new_string(libvirt)) && ok;
  if (libvirt_error[0] != '\0')
    ok = jsonutil_add(o, "libvirt_error", json_object_new_string(libvirt_error)) && ok;
  ok = jsonutil_add(o, "images", image_names(v)) && ok;
  ok = jsonutil_add_nullable(o, "vms", vms) && ok;
  if (!ok) {
    json_object_put(o);
    *code = "internal";
    snprintf(err, errlen, "out of memory");
    return CONTROL_INTERNAL;
  }
  *reply = o;
  return CONTROL_OK;
}

/* ---- life ---------------------------------------------------------------------- */

struct vms *
vms_new(const char *uri, const char *pool, const char *path, bool enabled,
        struct node *node, struct exports *reg)
{
  struct vms *v = calloc(1, sizeof *v);
  if (v == NULL)
    goto oom;
  v->uri = uri ? strdup(uri) : NULL;
  v->pool = pool ? strdup(pool) : NULL;
  v->path = path ? strdup(path) : NULL;
  if ((uri && !v->uri) || (pool && !v->pool) || (path && !v->path)) {
    free(v->uri);
    free(v->pool);
    free(v->path);
    free(v);
    goto oom;
  }
  v->cfg = (struct pool_config){ .uri = v->uri, .name = v->pool,
                                 .path = v->path };
  v->enabled = enabled;
  v->node = node;
  v->reg = reg;
  v->kvm = -1;
  pthread_mutex_init(&v->lock, NULL);
  pthread_cond_init(&v->cond, NULL);
  pthread_mutex_init(&v->kvm_lock, NULL);
  return v;

oom:
  log_error(COMPONENT, "vms: out of memory");
  return NULL;
}

void
vms_free(struct vms *v)
{
  if (v == NULL)
    return;
  pthread_mutex_destroy(&v->lock);
  pthread_cond_destroy(&v->cond);
  pthread_mutex_destroy(&v->kvm_lock);
  free(v->uri);
  free(v->pool);
  free(v->path);
  free(v);
}
