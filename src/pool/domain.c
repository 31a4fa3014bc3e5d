/* thunder — domains on VM volumes: "vm create" makes volume NAME.qcow2 over
 * an image's anchor, defines domain NAME on it and starts it; "vm delete"
 * undoes all three.  A create that fails part way undoes what it did, in
 * reverse order, and reports libvirt's message of the step that failed.
 *
 * The domains thunder makes carry its <metadata> element (namespace
 * POOLXML_VM_NS): the image, the volume's capacity and the accelerator.
 * pool_vm_info and pool_vm_list read the domain's XML back and count a
 * domain as thunder's only with that element and a disk in this pool;
 * anything else is left alone.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/virterror.h>

#include "cleanup.h"
#include "poolint.h"

#define VM_VOLUME_SUFFIX ".qcow2"
#define VM_VCPUS_MAX 1024
#define VM_MEMORY_MAX_MIB (16u * 1024 * 1024) /* 16 TiB */

/* The volume name of VM name into buf; -1 with e set if too long. */
static int
vm_volume_name(const char *name, char *buf, size_t len, struct pool_error *e)
{
  if (snprintf(buf, len, "%s" VM_VOLUME_SUFFIX, name) >= (int)len ||
      !poolxml_name_valid(buf)) {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "domain name '%.300s' is too long for its volume name (at most %zu characters)",
                        name, (size_t)255 - strlen(VM_VOLUME_SUFFIX));
    return -1;
  }
  return 0;
}

/* Deletes volume name if libvirt has it; errors are dropped (this only
 * undoes a failed create, whose error e already holds). */
static void
undo_volume(struct pool *p, const char *name)
{
  struct pool_error ignored;
  virStorageVolPtr vol = pool_internal_vol_lookup(p, name, false, &ignored);
  if (vol) {
    virStorageVolDelete(vol, 0);
    virStorageVolFree(vol);
  }
}

int
pool_vm_create(struct pool *p, const struct pool_vm_spec *spec,
               struct pool_error *e)
{
  POOL_ERROR_START(e);
  if (pool_internal_check_name("domain", spec->name, e) < 0)
    return -1;
  char vname[256];
  if (vm_volume_name(spec->name, vname, sizeof vname, e) < 0)
    return -1;
  if (spec->vcpus < 1 || spec->vcpus > VM_VCPUS_MAX) {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "domain %s: %u vCPUs; give 1 to %d", spec->name,
                        spec->vcpus, VM_VCPUS_MAX);
    return -1;
  }
  if (spec->memory_mib < 1 || spec->memory_mib > VM_MEMORY_MAX_MIB) {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "domain %s: %u MiB of memory; give 1 to %u",
                        spec->name, spec->memory_mib, VM_MEMORY_MAX_MIB);
    return -1;
  }
  char log[PATH_MAX];
  if (spec->console_log) {
    if (spec->console_log[0] != '/' ||
        snprintf(log, sizeof log, "%s", spec->console_log) >= (int)sizeof log) {
      pool_internal_error(e, POOL_ERR_INVALID,
                          "domain %s: console log '%.300s' is not an absolute path",
                          spec->name, spec->console_log);
      return -1;
    }
  } else {
    pool_console_log_path(spec->name, log, sizeof log);
  }

  virDomainPtr dom = virDomainLookupByName(p->conn, spec->name);
  if (dom != NULL) {
    virDomainFree(dom);
    pool_internal_error(e, POOL_ERR_CONFLICT, "domain %s already exists",
                        spec->name);
    return -1;
  }
  if (virGetLastErrorCode() != VIR_ERR_NO_DOMAIN) {
    pool_internal_virerror(e, "domain %s: looking it up", spec->name);
    return -1;
  }

  bool kvm = spec->accel == POOL_ACCEL_KVM ||
             (spec->accel == POOL_ACCEL_AUTO && pool_kvm_usable());
  if (pool_internal_make_parent(log) < 0) {
    pool_internal_error(e, POOL_ERR_SYSTEM,
                        "domain %s: making the directory of its console log %s: %s",
                        spec->name, log, strerror(errno));
    return -1;
  }

  uint64_t capacity;
  if (pool_internal_vol_create(p, vname, spec->image, spec->capacity,
                               &capacity, NULL, 0, e) < 0)
    return -1;

  struct poolxml_domain d = {
    .name = spec->name,
    .memory_mib = spec->memory_mib,
    .vcpus = spec->vcpus,
    .kvm = kvm,
    .pool = p->name,
    .volume = vname,
    .console_log = log,
    .image = spec->image,
    .disk_bytes = capacity,
  };
  CLEANUP_FREE char *xml = poolxml_domain(&d);
  if (xml == NULL) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "domain %s: building its XML: %s",
                        spec->name, strerror(errno));
    undo_volume(p, vname);
    return -1;
  }
  dom = virDomainDefineXML(p->conn, xml);
  if (dom == NULL) {
    pool_internal_virerror(e, "domain %s: defining it", spec->name);
    undo_volume(p, vname);
    return -1;
  }
  if (virDomainCreate(dom) < 0) {
    pool_internal_virerror(e, "domain %s: starting it (%s)", spec->name,
                           kvm ? "kvm" : "tcg");
    if (virDomainIsActive(dom) == 1)
      virDomainDestroy(dom);
    virDomainUndefine(dom);
    virDomainFree(dom);
    undo_volume(p, vname);
    return -1;
  }
  virDomainFree(dom);
  return 0;
}

int
pool_vm_delete(struct pool *p, const char *name, struct pool_error *e)
{
  POOL_ERROR_START(e);
  if (pool_internal_check_name("domain", name, e) < 0)
    return -1;
  char vname[256];
  if (vm_volume_name(name, vname, sizeof vname, e) < 0)
    return -1;

  bool found = false;
  virDomainPtr dom = virDomainLookupByName(p->conn, name);
  if (dom == NULL && virGetLastErrorCode() != VIR_ERR_NO_DOMAIN) {
    pool_internal_virerror(e, "domain %s: looking it up", name);
    return -1;
  }
  if (dom != NULL) {
    found = true;
    int persistent = virDomainIsPersistent(dom);
    if (virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0 &&
        virDomainIsActive(dom) == 1) {
      pool_internal_virerror(e, "domain %s: stopping it", name);
      virDomainFree(dom);
      return -1;
    }
    /* A transient domain is gone once stopped. */
    if (persistent == 1 &&
        virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                        VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                        VIR_DOMAIN_UNDEFINE_NVRAM) < 0) {
      pool_internal_virerror(e, "domain %s: undefining it", name);
      virDomainFree(dom);
      return -1;
    }
    virDomainFree(dom);
  }

  virStorageVolPtr vol = pool_internal_vol_lookup(p, vname, true, e);
  if (vol == NULL && e->code != POOL_ERR_NONE)
    return -1;
  if (vol != NULL) {
    found = true;
    int r = virStorageVolDelete(vol, 0);
    virStorageVolFree(vol);
    if (r < 0) {
      pool_internal_virerror(e, "domain %s: deleting its volume %s", name,
                             vname);
      return -1;
    }
  }
  if (!found) {
    pool_internal_error(e, POOL_ERR_NOT_FOUND,
                        "no domain %s and no volume %s in storage pool %s",
                        name, vname, p->name);
    return -1;
  }
  return 0;
}

/* ---- Reading VMs back ------------------------------------------------------ */

const char *
pool_vm_state_name(enum pool_vm_state s)
{
  switch (s) {
  case POOL_VM_RUNNING: return "running";
  case POOL_VM_SHUTOFF: return "shutoff";
  case POOL_VM_PAUSED: return "paused";
  case POOL_VM_CRASHED: return "crashed";
  case POOL_VM_STARTING: return "starting";
  case POOL_VM_OTHER: break;
  }
  return "other";
}

const char *
pool_accel_name(enum pool_accel a)
{
  switch (a) {
  case POOL_ACCEL_KVM: return "kvm";
  case POOL_ACCEL_TCG: return "tcg";
  case POOL_ACCEL_AUTO: break;
  }
  return "auto";
}

/* The pool_vm_state of libvirt's state and reason. */
static enum pool_vm_state
vm_state(int state, int reason)
{
  switch (state) {
  case VIR_DOMAIN_RUNNING:
  case VIR_DOMAIN_BLOCKED:
    return POOL_VM_RUNNING;
  case VIR_DOMAIN_PAUSED:
    return reason == VIR_DOMAIN_PAUSED_STARTING_UP ? POOL_VM_STARTING
                                                   : POOL_VM_PAUSED;
  case VIR_DOMAIN_PMSUSPENDED:
    return POOL_VM_PAUSED;
  case VIR_DOMAIN_SHUTOFF:
    return reason == VIR_DOMAIN_SHUTOFF_CRASHED ? POOL_VM_CRASHED
                                                : POOL_VM_SHUTOFF;
  case VIR_DOMAIN_CRASHED:
    return POOL_VM_CRASHED;
  default:
    return POOL_VM_OTHER;
  }
}

void
pool_vm_info_free(struct pool_vm_info *info)
{
  if (info == NULL)
    return;
  free(info->name);
  free(info->image);
  free(info->volume);
  free(info->console_log);
  memset(info, 0, sizeof *info);
}

void
pool_vm_list_free(struct pool_vm_info *v, size_t n)
{
  if (v == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    pool_vm_info_free(&v[i]);
  free(v);
}

/* Reads domain dom (named name) into *out.  -1 with e set: NOT_FOUND if
 * it vanished meanwhile, CONFLICT if it is not one of thunder's in this
 * pool. */
static int
vm_read(struct pool *p, virDomainPtr dom, const char *name,
        struct pool_vm_info *out, struct pool_error *e)
{
  memset(out, 0, sizeof *out);
  CLEANUP_FREE char *xml = virDomainGetXMLDesc(dom, 0);
  if (xml == NULL) {
    if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN)
      pool_internal_error(e, POOL_ERR_NOT_FOUND, "no domain %s", name);
    else
      pool_internal_virerror(e, "domain %s: reading its XML", name);
    return -1;
  }
  struct poolxml_domain_info di;
  char err[512];
  if (poolxml_parse_domain(xml, strlen(xml), &di, err, sizeof err) < 0) {
    /* Not one thunder made: those always read back. */
    pool_internal_error(e, POOL_ERR_CONFLICT, "domain %s: %s", name, err);
    return -1;
  }
  int r = -1;
  if (!di.thunder) {
    pool_internal_error(e, POOL_ERR_CONFLICT,
                        "domain %s was not made by thunder (it has no thunder metadata)",
                        name);
    goto out;
  }
  if (di.pool == NULL || strcmp(di.pool, p->name) != 0 || di.volume == NULL) {
    pool_internal_error(e, POOL_ERR_CONFLICT,
                        "domain %s has no disk in storage pool %s", name,
                        p->name);
    goto out;
  }
  int state, reason;
  if (virDomainGetState(dom, &state, &reason, 0) < 0) {
    if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN)
      pool_internal_error(e, POOL_ERR_NOT_FOUND, "no domain %s", name);
    else
      pool_internal_virerror(e, "domain %s: reading its state", name);
    goto out;
  }
  out->state = vm_state(state, reason);
  out->vcpus = di.vcpus;
  out->memory_mib = di.memory_mib;
  out->disk_bytes = di.disk_bytes;
  out->accel = di.kvm ? POOL_ACCEL_KVM : POOL_ACCEL_TCG;
  out->name = di.name;
  out->image = di.image;
  out->console_log = di.console_log;
  di.name = di.image = di.console_log = NULL;
  if (asprintf(&out->volume, "%s/%s", p->path, di.volume) < 0) {
    out->volume = NULL;
    pool_internal_error(e, POOL_ERR_SYSTEM, "domain %s: out of memory", name);
    pool_vm_info_free(out);
    goto out;
  }
  r = 0;
out:
  poolxml_domain_info_free(&di);
  return r;
}

int
pool_vm_info(struct pool *p, const char *name, struct pool_vm_info *out,
             struct pool_error *e)
{
  POOL_ERROR_START(e);
  memset(out, 0, sizeof *out);
  if (pool_internal_check_name("domain", name, e) < 0)
    return -1;
  virDomainPtr dom = virDomainLookupByName(p->conn, name);
  if (dom == NULL) {
    if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN)
      pool_internal_error(e, POOL_ERR_NOT_FOUND, "no domain %s", name);
    else
      pool_internal_virerror(e, "domain %s: looking it up", name);
    return -1;
  }
  int r = vm_read(p, dom, name, out, e);
  virDomainFree(dom);
  return r;
}

static int
cmp_vm(const void *a, const void *b)
{
  const struct pool_vm_info *x = a, *y = b;
  return strcmp(x->name, y->name);
}

struct pool_vm_info *
pool_vm_list(struct pool *p, size_t *n, struct pool_error *e)
{
  POOL_ERROR_START(e);
  *n = 0;
  virDomainPtr *doms = NULL;
  int nd = virConnectListAllDomains(p->conn, &doms, 0);
  if (nd < 0) {
    pool_internal_virerror(e, "libvirt %s: listing domains", p->uri);
    return NULL;
  }
  struct pool_vm_info *v = calloc((size_t)nd + 1, sizeof *v);
  size_t k = 0;
  bool failed = v == NULL;
  if (failed)
    pool_internal_error(e, POOL_ERR_SYSTEM, "listing domains: out of memory");
  for (int i = 0; i < nd; i++) {
    if (!failed) {
      const char *name = virDomainGetName(doms[i]);
      struct pool_error skip;
      if (name != NULL && vm_read(p, doms[i], name, &v[k], &skip) == 0)
        k++;
      else if (name != NULL && skip.code != POOL_ERR_NOT_FOUND &&
               skip.code != POOL_ERR_CONFLICT) {
        *e = skip;
        failed = true;
      }
    }
    virDomainFree(doms[i]);
  }
  free(doms);
  if (failed) {
    pool_vm_list_free(v, k);
    return NULL;
  }
  qsort(v, k, sizeof *v, cmp_vm);
  *n = k;
  return v;
}

/* Appends a copy of s to the NULL-terminated array *v of *k names; on
 * allocation failure s is left out. */
static void
strv_append(char ***v, int *k, const char *s)
{
  char **nv = realloc(*v, (size_t)(*k + 2) * sizeof *nv);
  if (nv == NULL)
    return;
  *v = nv;
  nv[*k] = strdup(s);
  nv[*k + 1] = NULL;
  if (nv[*k] != NULL)
    (*k)++;
}

/* True if libvirt reports a disk of dom out of space. */
static bool
disk_out_of_space(virDomainPtr dom)
{
  virDomainDiskError errs[16];
  int n = virDomainGetDiskErrors(dom, errs, 16, 0);
  bool full = false;
  for (int i = 0; i < n; i++) {
    if (errs[i].error == VIR_DOMAIN_DISK_ERROR_NO_SPACE)
      full = true;
    free(errs[i].disk);
  }
  return full;
}

int
pool_vm_resume_io_paused(struct pool *p,
                         bool (*allow)(const char *name, void *opaque),
                         void *opaque, char ***resumed, struct pool_error *e)
{
  POOL_ERROR_START(e);
  *resumed = NULL;
  virDomainPtr *doms = NULL;
  int nd = virConnectListAllDomains(p->conn, &doms,
                                    VIR_CONNECT_LIST_DOMAINS_PAUSED);
  if (nd < 0) {
    pool_internal_virerror(e, "libvirt %s: listing paused domains", p->uri);
    return -1;
  }
  char **names = NULL;
  int k = 0;
  for (int i = 0; i < nd; i++) {
    int state, reason;
    const char *name = virDomainGetName(doms[i]);
    struct pool_vm_info info;
    struct pool_error skip;
    if (name != NULL && virDomainGetState(doms[i], &state, &reason, 0) == 0 &&
        state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_IOERROR &&
        vm_read(p, doms[i], name, &info, &skip) == 0) {
      pool_vm_info_free(&info);
      if ((allow == NULL || allow(name, opaque)) &&
          !disk_out_of_space(doms[i]) && virDomainResume(doms[i]) == 0) {
        strv_append(&names, &k, name);
      }
    }
    virDomainFree(doms[i]);
  }
  free(doms);
  *resumed = names;
  return k;
}

int
pool_vm_stop_on_error(struct pool *p, char ***changed, struct pool_error *e)
{
  POOL_ERROR_START(e);
  *changed = NULL;
  virDomainPtr *doms = NULL;
  int nd = virConnectListAllDomains(p->conn, &doms,
                                    VIR_CONNECT_LIST_DOMAINS_PERSISTENT);
  if (nd < 0) {
    pool_internal_virerror(e, "libvirt %s: listing domains", p->uri);
    return -1;
  }
  char **names = NULL;
  int k = 0;
  for (int i = 0; i < nd; i++) {
    const char *name = virDomainGetName(doms[i]);
    struct pool_vm_info info;
    struct pool_error skip;
    CLEANUP_FREE char *xml = NULL;
    CLEANUP_FREE char *fixed = NULL;
    char err[256];
    if (name != NULL && vm_read(p, doms[i], name, &info, &skip) == 0) {
      pool_vm_info_free(&info);
      xml = virDomainGetXMLDesc(doms[i], VIR_DOMAIN_XML_INACTIVE |
                                             VIR_DOMAIN_XML_SECURE);
      virDomainPtr d = NULL;
      if (xml != NULL &&
          poolxml_domain_stop_on_error(xml, strlen(xml), p->name, &fixed, err,
                                       sizeof err) == 1 &&
          (d = virDomainDefineXML(p->conn, fixed)) != NULL) {
        virDomainFree(d);
        strv_append(&names, &k, name);
      }
    }
    virDomainFree(doms[i]);
  }
  free(doms);
  *changed = names;
  return k;
}
