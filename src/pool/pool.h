/* thunder — the libvirt storage pool named "thunder", its anchor volumes,
 * VM volumes and the domains on them.
 *
 * libvirt has no out-of-tree pool types, so the thunder pool is a libvirt
 * "dir" pool (default name "thunder", path /var/lib/thunder/pool) and
 * thunder gives it its meaning:
 *
 *   IMAGE.base   the anchor of an attached image: an empty qcow2 whose
 *                backing file is this node's own NBD export of IMAGE over
 *                its Unix socket (a json: name with NBD reconnect options,
 *                pool_anchor_backing), backing
 *                format raw or qcow2 as the manifest says.  Made by
 *                thunderd when the image is attached, removed on detach.
 *   anything     VM volumes: qcow2 overlays whose backing store is an
 *                anchor (virsh vol-create / vol-create-as, thunderctl vol
 *                create, thunderctl vm create).  The VM's writes stay in
 *                its overlay; the base never changes.
 *
 * Everything goes through libvirt's public API (one connection per call
 * of pool_open, so a restarted libvirtd costs nothing but a reconnect);
 * XML is built and read with libxml2.  The anchor file itself is made by
 * "qemu-img create -u" in the pool directory followed by a pool refresh,
 * because libvirt refuses a backing store that is not a local file.
 *
 * Errors: every function that can fail returns -1 (or an errno-like
 * negative code where documented) and fills a struct pool_error with one
 * human-readable sentence naming what failed (the pool, the volume, the
 * file, libvirt's own message).  Nothing is left half-made on failure.
 *
 * Thread safety: a struct pool may be used by one thread at a time;
 * separate handles may be used concurrently.
 */
#ifndef THUNDER_POOL_H
#define THUNDER_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POOL_DEFAULT_NAME "thunder"
#define POOL_DEFAULT_PATH "/var/lib/thunder/pool"
#define POOL_DEFAULT_URI "qemu:///system"
#define POOL_ANCHOR_SUFFIX ".base"

struct pool_config {
  const char *uri;  /* libvirt URI; NULL: POOL_DEFAULT_URI */
  const char *name; /* pool name; NULL: POOL_DEFAULT_NAME */
  const char *path; /* pool directory; NULL: an existing pool's own, or
                       POOL_DEFAULT_PATH for a new one */
};

enum pool_errcode {
  POOL_ERR_NONE = 0,
  POOL_ERR_LIBVIRT,   /* libvirt unreachable or failed */
  POOL_ERR_CONFLICT,  /* wrong pool type/path; volume or domain exists */
  POOL_ERR_NOT_FOUND, /* no such volume, anchor or domain */
  POOL_ERR_BUSY,      /* VM volumes depend on the anchor */
  POOL_ERR_INVALID,   /* bad argument (name, size, ...) */
  POOL_ERR_SYSTEM,    /* local failure: qemu-img, files, memory */
};

struct pool_error {
  enum pool_errcode code;
  char msg[1024];
};

struct pool;

/* Connects to libvirt and ensures the pool: defined (type dir, the
 * configured path), built (directory made), started and autostarted.  A
 * pool of that name with another type or another target path is refused
 * (POOL_ERR_CONFLICT), as is a path that exists and is not a directory.
 * NULL on failure. */
struct pool *pool_open(const struct pool_config *cfg, struct pool_error *e);
void pool_close(struct pool *p);

/* The pool's target directory ("/var/lib/thunder/pool"). */
const char *pool_path(const struct pool *p);

/* ---- anchors (thunderd) ---------------------------------------------------- */

struct pool_anchor_spec {
  const char *image;       /* image (export) name */
  uint64_t size;           /* virtual size of the image, bytes */
  const char *format;      /* "raw" or "qcow2": the image's own format */
  const char *socket_path; /* thunderd's Unix socket */
};

/* The NBD client options of an anchor's backing (pool_anchor_backing):
 * QEMU holds a request up to RECONNECT_DELAY seconds while it reconnects
 * to a thunderd that went away, and retries the first connect for up to
 * OPEN_TIMEOUT seconds. */
#define POOL_ANCHOR_RECONNECT_DELAY 60
#define POOL_ANCHOR_OPEN_TIMEOUT 5

/* The backing file name of the anchor of image served on socket_path:
 * json:{"file":{"driver":"nbd","server":{"type":"unix","path":SOCKET},
 * "export":IMAGE,"reconnect-delay":60,"open-timeout":5}} (malloc'd; NULL
 * when out of memory).  Both must be valid names (no quoting is done). */
char *pool_anchor_backing(const char *image, const char *socket_path);

/* Makes IMAGE.base (or keeps it when it already has exactly this backing
 * file, backing format and size), then refreshes the pool.  An existing
 * anchor of the same export, format and size under an older backing name
 * (the plain nbd+unix:// URL) is made again, dependents or not; one with
 * another backing is replaced only if no VM volume depends on it (else
 * POOL_ERR_BUSY naming them). */
int pool_anchor_ensure(struct pool *p, const struct pool_anchor_spec *spec,
                       struct pool_error *e);

/* Removes IMAGE.base.  POOL_ERR_BUSY, listing the volumes, if VM volumes
 * depend on it; success if it does not exist. */
int pool_anchor_remove(struct pool *p, const char *image, struct pool_error *e);

/* The names of the pool's volumes whose backing store is IMAGE.base, or
 * another such volume (an overlay of a VM volume), sorted, as a
 * NULL-terminated array (free with pool_strv_free); *n gets the count.
 * The pool is refreshed first, so files made by hand count too.  NULL on
 * failure. */
char **pool_dependents(struct pool *p, const char *image, size_t *n,
                       struct pool_error *e);
void pool_strv_free(char **v);

/* ---- VM volumes and domains (thunderctl; thunderd's /v1/vms) ------------------- */

/* Creates VM volume name: qcow2 backed by IMAGE.base (format qcow2),
 * capacity bytes (0: the image's size; smaller than the image: refused).
 * The volume XML is built with libxml2 and created with
 * virStorageVolCreateXML.  Its path goes to path (pathlen) if not NULL.
 * A name ending in POOL_ANCHOR_SUFFIX is refused (POOL_ERR_INVALID), a
 * taken one too (POOL_ERR_CONFLICT); no anchor: POOL_ERR_NOT_FOUND. */
int pool_vol_create(struct pool *p, const char *name, const char *image,
                    uint64_t capacity, char *path, size_t pathlen,
                    struct pool_error *e);

/* Deletes VM volume name.  POOL_ERR_NOT_FOUND if there is none; an anchor
 * is refused (POOL_ERR_INVALID): pool_anchor_remove is for those. */
int pool_vol_delete(struct pool *p, const char *name, struct pool_error *e);

enum pool_accel { POOL_ACCEL_AUTO, POOL_ACCEL_KVM, POOL_ACCEL_TCG };

struct pool_vm_spec {
  const char *name;
  const char *image;
  unsigned vcpus;
  unsigned memory_mib;
  uint64_t capacity;       /* 0: image size */
  enum pool_accel accel;   /* AUTO: KVM if it really runs a vCPU, else TCG */
  const char *console_log; /* serial console log file; NULL: default */
};

/* Creates the VM volume "NAME.qcow2" (pool_vol_create), then defines and
 * starts domain NAME on it (serial console logged to a file).  The domain
 * carries thunder's <metadata> (poolxml.h: the image, the volume's
 * capacity and the accelerator), which marks it as made by thunder (see
 * pool_vm_info).  On failure nothing stays: a defined domain is
 * undefined, the volume deleted. */
int pool_vm_create(struct pool *p, const struct pool_vm_spec *spec,
                   struct pool_error *e);

/* Destroys (if running) and undefines domain NAME and deletes its volume
 * NAME.qcow2.  POOL_ERR_NOT_FOUND if neither exists. */
int pool_vm_delete(struct pool *p, const char *name, struct pool_error *e);

/* A domain's state, from libvirt's virDomainState (and its reason):
 *   RUNNING, BLOCKED                    running
 *   PAUSED (reason STARTING_UP)         starting
 *   PAUSED (other reasons), PMSUSPENDED paused
 *   SHUTOFF (reason CRASHED), CRASHED   crashed
 *   SHUTOFF (other reasons)             shutoff
 *   NOSTATE, SHUTDOWN (shutting down)   other */
enum pool_vm_state {
  POOL_VM_RUNNING,
  POOL_VM_SHUTOFF,
  POOL_VM_PAUSED,
  POOL_VM_CRASHED,
  POOL_VM_STARTING,
  POOL_VM_OTHER,
};

/* "running", "shutoff", "paused", "crashed", "starting" or "other". */
const char *pool_vm_state_name(enum pool_vm_state s);

/* "auto", "kvm" or "tcg". */
const char *pool_accel_name(enum pool_accel a);

/* A VM made by thunder (pool_vm_create): its domain's configuration, the
 * spec recorded in its metadata and its state now.  Strings are malloc'd;
 * free with pool_vm_info_free. */
struct pool_vm_info {
  char *name;
  char *image;             /* metadata: the image */
  unsigned vcpus;          /* the domain's vCPUs */
  unsigned memory_mib;     /* the domain's memory */
  uint64_t disk_bytes;     /* metadata: the volume's capacity at create */
  enum pool_accel accel;   /* metadata: POOL_ACCEL_KVM or POOL_ACCEL_TCG */
  enum pool_vm_state state;
  char *volume;            /* the volume's file: POOL-PATH/VOLUME */
  char *console_log;       /* the serial console's log file, or NULL */
};

/* Reads VM name into *out.  POOL_ERR_NOT_FOUND if there is no domain
 * name; POOL_ERR_CONFLICT if there is one but thunder did not make it
 * (no thunder metadata) or its disk is not a volume of this pool.  -1
 * with e set on failure (out is then empty). */
int pool_vm_info(struct pool *p, const char *name, struct pool_vm_info *out,
                 struct pool_error *e);
void pool_vm_info_free(struct pool_vm_info *info);

/* The VMs thunder made in this pool (the domains pool_vm_info accepts),
 * sorted by name; *n gets the count.  Domains that vanish while listed
 * are left out.  A new array (free with pool_vm_list_free), or NULL with
 * e set. */
struct pool_vm_info *pool_vm_list(struct pool *p, size_t *n,
                                  struct pool_error *e);
void pool_vm_list_free(struct pool_vm_info *v, size_t n);

/* Resumes the VMs thunder made in this pool that QEMU paused on an I/O
 * error (libvirt: paused, reason I/O error; the disk has
 * error_policy='stop'), unless libvirt reports a disk of theirs out of
 * space (resuming would only pause them again) or allow (if not NULL)
 * returns false for the name.  QEMU then retries the failed requests.
 * The names of those resumed go to *resumed (a NULL-terminated array,
 * free with pool_strv_free; NULL when none) and their count is returned; a VM that could not be resumed is skipped
 * (it is tried again next time).  -1 with e set if the domains could not
 * be listed. */
int pool_vm_resume_io_paused(struct pool *p,
                             bool (*allow)(const char *name, void *opaque),
                             void *opaque, char ***resumed,
                             struct pool_error *e);

/* Gives the persistent definition of every VM thunder made in this pool
 * the disk error policies of pool_vm_create's domains (error_policy and
 * rerror_policy 'stop', where absent): VMs made by an older thunder get
 * them from their next start (a running domain keeps its live ones).
 * Transient domains are left alone.  The names of the VMs changed go to
 * *changed (NULL-terminated, free with pool_strv_free; NULL when none)
 * and their count is returned; a VM that cannot be read or redefined is
 * skipped.  -1 with e set if the domains could not be listed. */
int pool_vm_stop_on_error(struct pool *p, char ***changed,
                          struct pool_error *e);

/* The size of attached image IMAGE: its anchor's capacity, bytes.
 * POOL_ERR_NOT_FOUND if the pool has no anchor for it. */
int pool_image_size(struct pool *p, const char *image, uint64_t *size,
                    struct pool_error *e);

/* Whether KVM actually runs a guest here: /dev/kvm opens and a tiny vCPU
 * executing HLT exits within a short deadline (checked in a child process,
 * some hosts expose a /dev/kvm that hangs). */
bool pool_kvm_usable(void);

/* The default serial console log of a VM: /var/log/thunder/vm/NAME.log. */
void pool_console_log_path(const char *vm, char *buf, size_t len);

/* Parses a size: decimal bytes with an optional binary suffix K, M, G or T
 * (any case, optionally followed by "iB": 10G, 512MiB).  -1 if malformed
 * or above UINT64_MAX. */
int pool_parse_size(const char *s, uint64_t *out);

#endif
