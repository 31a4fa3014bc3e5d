/* thunder — what the pool module's files share (pool.c, anchor.c,
 * domain.c); not for use outside src/pool.
 *
 * The same rule as pool.h: a struct pool is used by one thread at a time,
 * so nothing here locks.
 */
#ifndef THUNDER_POOLINT_H
#define THUNDER_POOLINT_H

#include <libvirt/libvirt.h>
#include <stdbool.h>

#include "pool.h"
#include "poolxml.h"

struct pool {
  virConnectPtr conn;
  virStoragePoolPtr pool;
  char *uri;  /* as given (for messages) */
  char *name; /* the pool's name */
  char *path; /* its target directory, as libvirt has it */
};

/* At the start of a public function: points e at a local struct if the
 * caller gave NULL, and clears it. */
#define POOL_ERROR_START(e)                                                    \
  struct pool_error e##_local_;                                                \
  if ((e) == NULL)                                                             \
    (e) = &e##_local_;                                                         \
  (e)->code = POOL_ERR_NONE;                                                   \
  (e)->msg[0] = '\0'

/* Sets e (if not NULL) to code and the formatted message. */
void pool_internal_error(struct pool_error *e, enum pool_errcode code,
                         const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets e to POOL_ERR_LIBVIRT with the formatted message followed by ": "
 * and libvirt's last error message of this thread. */
void pool_internal_virerror(struct pool_error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Refreshes the pool so that files made behind libvirt's back are seen.
 * libvirt refuses while a volume of the pool is being created; that is
 * retried for a few seconds.  -1 with e set. */
int pool_internal_refresh(struct pool *p, struct pool_error *e);

/* Looks up volume name; if libvirt does not know it and refresh is true,
 * refreshes the pool and looks again.  NULL with e->code POOL_ERR_NONE
 * if there is no such volume, NULL with e set on failure. */
virStorageVolPtr pool_internal_vol_lookup(struct pool *p, const char *name,
                                          bool refresh, struct pool_error *e);

/* Reads a volume's XML into info.  -1 with e set. */
int pool_internal_vol_info(struct pool *p, virStorageVolPtr vol,
                           const char *name, struct poolxml_vol_info *info,
                           struct pool_error *e);

/* pool_vol_create, e already started; the capacity given to the volume
 * (the image's size when capacity is 0) goes to *capacity_out if not
 * NULL. */
int pool_internal_vol_create(struct pool *p, const char *name,
                             const char *image, uint64_t capacity,
                             uint64_t *capacity_out, char *path,
                             size_t pathlen, struct pool_error *e);

/* Sets *name to the anchor volume name of image ("IMAGE.base") and
 * *path to its file in the pool (both malloc'd).  -1 with e set. */
int pool_internal_anchor_names(struct pool *p, const char *image, char **name,
                               char **path, struct pool_error *e);

/* Checks a name for a pool, volume, image or domain; -1 with e set
 * (POOL_ERR_INVALID) naming what it is (what: "image", "volume", ...). */
int pool_internal_check_name(const char *what, const char *name,
                             struct pool_error *e);

/* Locks the pool directory against anchor changes by other thunder
 * processes or handles: exclusive (anchor ensure/remove) or shared (VM
 * volume creation).  The descriptor to close to unlock, or -1 with e set. */
int pool_internal_lock(struct pool *p, bool exclusive, struct pool_error *e);

/* mkdir -p the directory of file, new directories mode 0755.  -1 with
 * errno. */
int pool_internal_make_parent(const char *file);

#endif
