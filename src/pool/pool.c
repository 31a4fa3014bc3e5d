/* thunder — the libvirt pool: connection, the pool itself, VM volumes.
 *
 * Design note
 * -----------
 * The pool is a libvirt "dir" pool (libvirt's pool types are a closed
 * enum).  Its directory holds two kinds of files, told apart by name:
 *
 *   IMAGE.base   anchor of image IMAGE (anchor.c): qcow2, no data, mode
 *                0644, backing file the node's own thunderd export of
 *                IMAGE on socket SOCK, as a QEMU json: name with NBD
 *                reconnect options (pool_anchor_backing; older anchors:
 *                nbd+unix:///IMAGE?socket=SOCK), backing format raw or
 *                qcow2.  Made
 *                by qemu-img as .IMAGE.base.XXXXXX and renamed into place,
 *                so an anchor is either the old one or the whole new one.
 *   anything     VM volumes (this file, domain.c): qcow2 overlays, mode
 *                0600, backing store PATH/IMAGE.base (format qcow2), made
 *                by libvirt itself (virStorageVolCreateXML), which runs
 *                "qemu-img create -b ANCHOR" and so opens the whole chain
 *                down to thunderd: it fails when the image is not served.
 *
 * pool_open, by the state libvirt has of the pool called NAME:
 *
 *   absent                  path exists and is not a dir → CONFLICT, nothing
 *                           defined; else define (dir, path, 0755), build,
 *                           start, autostart; any failure undefines it again
 *                           (and removes the directory if build made it)
 *   another type            CONFLICT (never touched)
 *   another path            CONFLICT (paths compared canonicalised: symlinks,
 *                           "..", trailing slashes)
 *   inactive                build if the directory is missing, start
 *   active                  nothing
 *   not autostarted         autostart
 *
 * Two processes may ensure the pool at once: a define or start that loses
 * the race is followed by a fresh look at the pool, not an error.
 *
 * libvirt quirks relied on or worked around (libvirt 9.0):
 *  - vol-create refuses a backing store that is not a local file, hence the
 *    anchors made by qemu-img.
 *  - pool-refresh is refused while a volume of the pool is being created
 *    ("has asynchronous jobs running"): retried (pool_internal_refresh).
 *  - libvirt prints every error to stderr unless an error handler is set:
 *    a no-op one is, and messages come from virGetLastErrorMessage().
 *
 * Ownership: one virConnect per pool_open, closed by pool_close; the pool
 * handle belongs to it.  Not thread-safe per handle (pool.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/virterror.h>

#include "cleanup.h"
#include "poolint.h"

/* ---- Errors ------------------------------------------------------------- */

/* Formats the message into e, then makes it one line: libvirt's messages
 * (qemu-img's stderr) may hold several, joined here with "; ". */
static void __attribute__((format(printf, 4, 0)))
verror(struct pool_error *e, enum pool_errcode code, const char *suffix,
       const char *fmt, va_list ap)
{
  if (e == NULL)
    return;
  e->code = code;
  char raw[sizeof e->msg];
  int n = vsnprintf(raw, sizeof raw, fmt, ap);
  if (suffix != NULL && n >= 0 && (size_t)n < sizeof raw)
    snprintf(raw + n, sizeof raw - (size_t)n, ": %s", suffix);

  size_t o = 0;
  for (const char *r = raw; *r && o + 1 < sizeof e->msg; r++) {
    if (*r != '\n') {
      e->msg[o++] = *r;
      continue;
    }
    while (o > 0 && (e->msg[o - 1] == ' ' || e->msg[o - 1] == '.'))
      o--;
    if (r[1] != '\0' && o + 2 < sizeof e->msg) {
      e->msg[o++] = ';';
      e->msg[o++] = ' ';
    }
  }
  while (o > 0 && e->msg[o - 1] == ' ')
    o--;
  e->msg[o] = '\0';
}

void
pool_internal_error(struct pool_error *e, enum pool_errcode code,
                    const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  verror(e, code, NULL, fmt, ap);
  va_end(ap);
}

void
pool_internal_virerror(struct pool_error *e, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  verror(e, POOL_ERR_LIBVIRT, virGetLastErrorMessage(), fmt, ap);
  va_end(ap);
}

static void
clear_error(struct pool_error *e)
{
  if (e) {
    e->code = POOL_ERR_NONE;
    e->msg[0] = '\0';
  }
}

/* libvirt's errors are read with virGetLastErrorMessage(); this handler
 * only keeps libvirt from printing them to stderr too. */
static void
silent_error_handler(void *opaque, virErrorPtr err)
{
}

static pthread_once_t libvirt_once = PTHREAD_ONCE_INIT;

static void
libvirt_init(void)
{
  virSetErrorFunc(NULL, silent_error_handler);
}

int
pool_internal_check_name(const char *what, const char *name,
                         struct pool_error *e)
{
  if (poolxml_name_valid(name))
    return 0;
  pool_internal_error(e, POOL_ERR_INVALID,
                      "%s name '%.300s' is not valid: use 1-255 characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
                      what, name ? name : "");
  return -1;
}

/* ---- Paths -------------------------------------------------------------- */

/* Writes the canonical form of the absolute path into out (PATH_MAX):
 * realpath() of its longest existing prefix, the rest appended with "."
 * and ".." resolved lexically.  -1 with errno. */
static int
canonical_path(const char *path, char out[PATH_MAX])
{
  if (realpath(path, out) != NULL)
    return 0;
  if (errno != ENOENT && errno != ENOTDIR)
    return -1;

  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
    errno = ENAMETOOLONG;
    return -1;
  }
  size_t l = strlen(tmp);
  while (l > 1 && tmp[l - 1] == '/')
    tmp[--l] = '\0';
  char *slash = strrchr(tmp, '/');
  if (slash == NULL) {
    errno = EINVAL;
    return -1;
  }
  const char *base = slash + 1;
  char parent[PATH_MAX];
  if (slash == tmp)
    snprintf(parent, sizeof parent, "/");
  else
    snprintf(parent, sizeof parent, "%.*s", (int)(slash - tmp), tmp);
  if (canonical_path(parent, out) < 0)
    return -1;
  if (strcmp(base, ".") == 0 || base[0] == '\0')
    return 0;
  if (strcmp(base, "..") == 0) {
    char *s = strrchr(out, '/');
    if (s == out)
      out[1] = '\0';
    else if (s)
      *s = '\0';
    return 0;
  }
  l = strlen(out);
  if (snprintf(out + l, PATH_MAX - l, "%s%s", l > 1 ? "/" : "", base) >=
      (int)(PATH_MAX - l)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return 0;
}

/* mkdir -p path, each new directory with mode. */
static int
make_dirs(const char *path, mode_t mode)
{
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
    errno = ENAMETOOLONG;
    return -1;
  }
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  if (mkdir(tmp, mode) < 0 && errno != EEXIST)
    return -1;
  return 0;
}

/* ---- The pool ------------------------------------------------------------- */

static bool
last_error_is(int code)
{
  return virGetLastErrorCode() == code;
}

/* Reads the pool's type and path from its XML. */
static int
pool_info(struct pool *p, virStoragePoolPtr pool, struct poolxml_pool_info *info,
          struct pool_error *e)
{
  CLEANUP_FREE char *xml = virStoragePoolGetXMLDesc(pool, 0);
  if (xml == NULL) {
    pool_internal_virerror(e, "storage pool %s: reading its XML", p->name);
    return -1;
  }
  char err[512];
  if (poolxml_parse_pool(xml, strlen(xml), info, err, sizeof err) < 0) {
    pool_internal_error(e, POOL_ERR_LIBVIRT, "storage pool %s: %s", p->name,
                        err);
    return -1;
  }
  return 0;
}

/* Checks that an existing pool is a dir pool at the configured path
 * (canonical: want).  Stores libvirt's path in p->path. */
static int
check_existing(struct pool *p, virStoragePoolPtr pool, const char *want,
               struct pool_error *e)
{
  struct poolxml_pool_info info;
  if (pool_info(p, pool, &info, e) < 0)
    return -1;
  int r = -1;
  char have[PATH_MAX];
  if (strcmp(info.type, "dir") != 0) {
    pool_internal_error(e, POOL_ERR_CONFLICT,
                        "storage pool %s exists with type '%s' (path %s); thunder needs a pool of type 'dir': choose another pool name, or remove that pool (virsh pool-destroy/pool-undefine %s)",
                        p->name, info.type, info.path, p->name);
  } else if (canonical_path(info.path, have) < 0) {
    pool_internal_error(e, POOL_ERR_SYSTEM,
                        "storage pool %s: its path %s: %s", p->name,
                        info.path, strerror(errno));
  } else if (want != NULL && strcmp(have, want) != 0) {
    pool_internal_error(e, POOL_ERR_CONFLICT,
                        "storage pool %s exists with path %s, not %s: choose another pool name or path, or remove that pool (virsh pool-destroy/pool-undefine %s)",
                        p->name, info.path, want, p->name);
  } else {
    p->path = info.path;
    info.path = NULL;
    r = 0;
  }
  poolxml_pool_info_free(&info);
  return r;
}

/* Makes an existing, matching pool active and autostarted. */
static int
activate(struct pool *p, struct pool_error *e)
{
  int active = virStoragePoolIsActive(p->pool);
  if (active < 0) {
    pool_internal_virerror(e, "storage pool %s", p->name);
    return -1;
  }
  if (!active) {
    struct stat st;
    if (stat(p->path, &st) < 0 && errno == ENOENT &&
        virStoragePoolBuild(p->pool, 0) < 0) {
      pool_internal_virerror(e, "storage pool %s: building %s", p->name,
                             p->path);
      return -1;
    }
    if (stat(p->path, &st) == 0 && !S_ISDIR(st.st_mode)) {
      pool_internal_error(e, POOL_ERR_CONFLICT,
                          "storage pool %s: its path %s exists and is not a directory",
                          p->name, p->path);
      return -1;
    }
    /* Another process may have started it meanwhile. */
    if (virStoragePoolCreate(p->pool, 0) < 0 &&
        virStoragePoolIsActive(p->pool) != 1) {
      pool_internal_virerror(e, "storage pool %s: starting it", p->name);
      return -1;
    }
  }
  int autostart = 0;
  if (virStoragePoolGetAutostart(p->pool, &autostart) < 0) {
    pool_internal_virerror(e, "storage pool %s", p->name);
    return -1;
  }
  if (!autostart && virStoragePoolSetAutostart(p->pool, 1) < 0) {
    pool_internal_virerror(e, "storage pool %s: setting autostart", p->name);
    return -1;
  }
  return 0;
}

/* Defines, builds, starts and autostarts a new pool at path (canonical).
 * 1 if another process defined it first (look again), 0 done, -1 failed
 * with everything undone. */
static int
define_new(struct pool *p, const char *path, struct pool_error *e)
{
  struct stat st;
  bool existed = stat(path, &st) == 0;
  if (existed && !S_ISDIR(st.st_mode)) {
    pool_internal_error(e, POOL_ERR_CONFLICT,
                        "storage pool %s: its path %s exists and is not a directory; nothing was defined",
                        p->name, path);
    return -1;
  }
  if (!existed && errno != ENOENT) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "storage pool %s: %s: %s",
                        p->name, path, strerror(errno));
    return -1;
  }

  CLEANUP_FREE char *xml = poolxml_pool(p->name, path);
  if (xml == NULL) {
    pool_internal_error(e, POOL_ERR_SYSTEM,
                        "storage pool %s: building its XML: %s", p->name,
                        strerror(errno));
    return -1;
  }
  p->pool = virStoragePoolDefineXML(p->conn, xml, 0);
  if (p->pool == NULL) {
    virStoragePoolPtr other = virStoragePoolLookupByName(p->conn, p->name);
    if (other != NULL) {
      virStoragePoolFree(other);
      return 1;
    }
    pool_internal_virerror(e, "storage pool %s: defining it (dir, %s)",
                           p->name, path);
    return -1;
  }
  p->path = strdup(path);
  if (p->path == NULL) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "storage pool %s: out of memory",
                        p->name);
    goto undo;
  }
  if (virStoragePoolBuild(p->pool, 0) < 0) {
    pool_internal_virerror(e, "storage pool %s: building %s", p->name, path);
    goto undo;
  }
  if (virStoragePoolCreate(p->pool, 0) < 0) {
    pool_internal_virerror(e, "storage pool %s: starting it", p->name);
    goto undo;
  }
  if (virStoragePoolSetAutostart(p->pool, 1) < 0) {
    pool_internal_virerror(e, "storage pool %s: setting autostart", p->name);
    goto undo;
  }
  return 0;

undo:
  if (virStoragePoolIsActive(p->pool) == 1)
    virStoragePoolDestroy(p->pool);
  virStoragePoolUndefine(p->pool);
  virStoragePoolFree(p->pool);
  p->pool = NULL;
  if (!existed)
    rmdir(path);
  return -1;
}

struct pool *
pool_open(const struct pool_config *cfg, struct pool_error *e)
{
  const char *uri = cfg && cfg->uri ? cfg->uri : POOL_DEFAULT_URI;
  const char *name = cfg && cfg->name ? cfg->name : POOL_DEFAULT_NAME;
  const char *path = cfg && cfg->path ? cfg->path : POOL_DEFAULT_PATH;

  POOL_ERROR_START(e);
  pthread_once(&libvirt_once, libvirt_init);
  poolxml_init();
  if (pool_internal_check_name("pool", name, e) < 0)
    return NULL;
  if (path[0] != '/') {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "storage pool %s: path '%.300s' is not absolute",
                        name, path);
    return NULL;
  }
  char want[PATH_MAX];
  if (canonical_path(path, want) < 0) {
    pool_internal_error(e, POOL_ERR_INVALID, "storage pool %s: path %.300s: %s",
                        name, path, strerror(errno));
    return NULL;
  }

  struct pool *p = calloc(1, sizeof *p);
  if (p == NULL || (p->uri = strdup(uri)) == NULL ||
      (p->name = strdup(name)) == NULL) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "storage pool %s: out of memory",
                        name);
    pool_close(p);
    return NULL;
  }
  p->conn = virConnectOpen(uri);
  if (p->conn == NULL) {
    pool_internal_virerror(e, "libvirt %s: cannot connect", uri);
    pool_close(p);
    return NULL;
  }
  virConnSetErrorFunc(p->conn, NULL, silent_error_handler);

  for (int attempt = 0; attempt < 3; attempt++) {
    p->pool = virStoragePoolLookupByName(p->conn, name);
    if (p->pool == NULL) {
      if (!last_error_is(VIR_ERR_NO_STORAGE_POOL)) {
        pool_internal_virerror(e, "storage pool %s: looking it up", name);
        break;
      }
      int r = define_new(p, want, e);
      if (r == 0)
        return p;
      if (r < 0)
        break;
      continue; /* defined by someone else meanwhile */
    }
    /* No path configured: an existing pool is taken where it is. */
    if (check_existing(p, p->pool, cfg && cfg->path ? want : NULL, e) < 0 ||
        activate(p, e) < 0)
      break;
    return p;
  }
  if (e->code == POOL_ERR_NONE)
    pool_internal_error(e, POOL_ERR_LIBVIRT,
                        "storage pool %s: it keeps appearing and disappearing",
                        name);
  pool_close(p);
  return NULL;
}

void
pool_close(struct pool *p)
{
  if (p == NULL)
    return;
  if (p->pool)
    virStoragePoolFree(p->pool);
  if (p->conn)
    virConnectClose(p->conn);
  free(p->uri);
  free(p->name);
  free(p->path);
  free(p);
}

const char *
pool_path(const struct pool *p)
{
  return p->path;
}

void
pool_strv_free(char **v)
{
  if (v == NULL)
    return;
  for (char **s = v; *s; s++)
    free(*s);
  free(v);
}

int
pool_internal_refresh(struct pool *p, struct pool_error *e)
{
  for (int i = 0;; i++) {
    if (virStoragePoolRefresh(p->pool, 0) == 0)
      return 0;
    /* Refused while a volume is being created: wait up to ~10 s. */
    if (i >= 100 ||
        strstr(virGetLastErrorMessage(), "asynchronous jobs") == NULL)
      break;
    struct timespec ts = { 0, 100 * 1000 * 1000 };
    nanosleep(&ts, NULL);
  }
  pool_internal_virerror(e, "storage pool %s: refreshing it", p->name);
  return -1;
}

virStorageVolPtr
pool_internal_vol_lookup(struct pool *p, const char *name, bool refresh,
                         struct pool_error *e)
{
  clear_error(e);
  for (int pass = 0; pass < 2; pass++) {
    virStorageVolPtr vol = virStorageVolLookupByName(p->pool, name);
    if (vol != NULL)
      return vol;
    if (!last_error_is(VIR_ERR_NO_STORAGE_VOL)) {
      pool_internal_virerror(e, "storage pool %s: volume %s", p->name, name);
      return NULL;
    }
    if (!refresh || pass == 1 || pool_internal_refresh(p, e) < 0)
      break;
  }
  return NULL;
}

int
pool_internal_vol_info(struct pool *p, virStorageVolPtr vol, const char *name,
                       struct poolxml_vol_info *info, struct pool_error *e)
{
  CLEANUP_FREE char *xml = virStorageVolGetXMLDesc(vol, 0);
  if (xml == NULL) {
    pool_internal_virerror(e, "storage pool %s: volume %s: reading its XML",
                           p->name, name);
    return -1;
  }
  char err[512];
  if (poolxml_parse_volume(xml, strlen(xml), info, err, sizeof err) < 0) {
    pool_internal_error(e, POOL_ERR_LIBVIRT, "storage pool %s: volume %s: %s",
                        p->name, name, err);
    return -1;
  }
  return 0;
}

int
pool_internal_anchor_names(struct pool *p, const char *image, char **name,
                           char **path, struct pool_error *e)
{
  *name = *path = NULL;
  if (pool_internal_check_name("image", image, e) < 0)
    return -1;
  if (asprintf(name, "%s" POOL_ANCHOR_SUFFIX, image) < 0) {
    *name = NULL;
    goto nomem;
  }
  if (asprintf(path, "%s/%s", p->path, *name) < 0) {
    *path = NULL;
    goto nomem;
  }
  return 0;
nomem:
  free(*name);
  *name = NULL;
  pool_internal_error(e, POOL_ERR_SYSTEM, "image %s: out of memory", image);
  return -1;
}

/* ---- VM volumes ----------------------------------------------------------- */

/* True if name ends with the anchor suffix. */
static bool
is_anchor_name(const char *name)
{
  size_t l = strlen(name), s = strlen(POOL_ANCHOR_SUFFIX);
  return l >= s && strcmp(name + l - s, POOL_ANCHOR_SUFFIX) == 0;
}

int
pool_vol_create(struct pool *p, const char *name, const char *image,
                uint64_t capacity, char *path, size_t pathlen,
                struct pool_error *e)
{
  POOL_ERROR_START(e);
  return pool_internal_vol_create(p, name, image, capacity, NULL, path,
                                  pathlen, e);
}

int
pool_internal_vol_create(struct pool *p, const char *name, const char *image,
                         uint64_t capacity, uint64_t *capacity_out,
                         char *path, size_t pathlen, struct pool_error *e)
{
  if (pool_internal_check_name("volume", name, e) < 0)
    return -1;
  if (is_anchor_name(name)) {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "volume name '%s' ends with '" POOL_ANCHOR_SUFFIX "', which names the anchors of images; choose another name",
                        name);
    return -1;
  }
  CLEANUP_FREE char *aname = NULL;
  CLEANUP_FREE char *apath = NULL;
  if (pool_internal_anchor_names(p, image, &aname, &apath, e) < 0)
    return -1;

  /* No anchor changes until the volume is made on it. */
  CLEANUP_CLOSE int lock = pool_internal_lock(p, false, e);
  if (lock < 0)
    return -1;

  /* The name is taken if libvirt knows it or a file has it. */
  virStorageVolPtr old = pool_internal_vol_lookup(p, name, false, e);
  if (old == NULL && e->code != POOL_ERR_NONE)
    return -1;
  CLEANUP_FREE char *vpath = NULL;
  if (asprintf(&vpath, "%s/%s", p->path, name) < 0) {
    vpath = NULL;
    pool_internal_error(e, POOL_ERR_SYSTEM, "volume %s: out of memory", name);
    if (old)
      virStorageVolFree(old);
    return -1;
  }
  struct stat st;
  if (old != NULL || lstat(vpath, &st) == 0) {
    if (old)
      virStorageVolFree(old);
    pool_internal_error(e, POOL_ERR_CONFLICT,
                        "volume %s already exists in storage pool %s", name,
                        p->name);
    return -1;
  }

  virStorageVolPtr anchor = pool_internal_vol_lookup(p, aname, true, e);
  if (anchor == NULL) {
    if (e->code == POOL_ERR_NONE)
      pool_internal_error(e, POOL_ERR_NOT_FOUND,
                          "image %s is not attached on this node: storage pool %s has no anchor volume %s (attach the image to this node's thunderd first)",
                          image, p->name, aname);
    return -1;
  }
  struct poolxml_vol_info ainfo;
  int r = pool_internal_vol_info(p, anchor, aname, &ainfo, e);
  virStorageVolFree(anchor);
  if (r < 0)
    return -1;
  uint64_t image_size = ainfo.capacity;
  poolxml_vol_info_free(&ainfo);
  if (capacity == 0) {
    capacity = image_size;
  } else if (capacity < image_size) {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "volume %s: capacity %" PRIu64 " bytes is smaller than image %s (%" PRIu64 " bytes)",
                        name, capacity, image, image_size);
    return -1;
  }

  CLEANUP_FREE char *xml = poolxml_volume(name, capacity, apath);
  if (xml == NULL) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "volume %s: building its XML: %s",
                        name, strerror(errno));
    return -1;
  }
  virStorageVolPtr vol = virStorageVolCreateXML(p->pool, xml, 0);
  if (vol == NULL) {
    bool exists = last_error_is(VIR_ERR_STORAGE_VOL_EXIST);
    pool_internal_virerror(e, "volume %s (image %s) in storage pool %s",
                           name, image, p->name);
    if (exists)
      e->code = POOL_ERR_CONFLICT;
    return -1;
  }
  if (capacity_out != NULL)
    *capacity_out = capacity;
  if (path != NULL && pathlen > 0) {
    CLEANUP_FREE char *vp = virStorageVolGetPath(vol);
    snprintf(path, pathlen, "%s", vp ? vp : vpath);
  }
  virStorageVolFree(vol);
  return 0;
}

int
pool_vol_delete(struct pool *p, const char *name, struct pool_error *e)
{
  POOL_ERROR_START(e);
  if (pool_internal_check_name("volume", name, e) < 0)
    return -1;
  if (is_anchor_name(name)) {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "volume %s is the anchor of an image; it goes when the image is detached from this node",
                        name);
    return -1;
  }
  virStorageVolPtr vol = pool_internal_vol_lookup(p, name, true, e);
  if (vol == NULL) {
    if (e->code == POOL_ERR_NONE)
      pool_internal_error(e, POOL_ERR_NOT_FOUND,
                          "storage pool %s has no volume %s", p->name, name);
    return -1;
  }
  int r = virStorageVolDelete(vol, 0);
  if (r < 0)
    pool_internal_virerror(e, "storage pool %s: deleting volume %s", p->name,
                           name);
  virStorageVolFree(vol);
  return r;
}

/* ---- Small public helpers ---------------------------------------------------- */

#define CONSOLE_LOG_DIR "/var/log/thunder/vm"

void
pool_console_log_path(const char *vm, char *buf, size_t len)
{
  snprintf(buf, len, CONSOLE_LOG_DIR "/%s.log", vm);
}

int
pool_internal_make_parent(const char *file)
{
  char dir[PATH_MAX];
  const char *slash = strrchr(file, '/');
  if (slash == NULL || slash == file)
    return 0;
  if (snprintf(dir, sizeof dir, "%.*s", (int)(slash - file), file) >=
      (int)sizeof dir) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return make_dirs(dir, 0755);
}
