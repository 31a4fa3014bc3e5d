/* thunder — domains on VM volumes: "vm create" makes volume NAME.qcow2 over
 * an image's anchor, defines domain NAME on it and starts it; "vm delete"
 * undoes all three.  A create that fails part way undoes what it did, in
 * reverse order, and reports libvirt's message of the step that failed.
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

  if (pool_vol_create(p, vname, spec->image, spec->capacity, NULL, 0, e) < 0)
    return -1;

  struct poolxml_domain d = {
    .name = spec->name,
    .memory_mib = spec->memory_mib,
    .vcpus = spec->vcpus,
    .kvm = kvm,
    .pool = p->name,
    .volume = vname,
    .console_log = log,
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
