/* thunder — anchor volumes: IMAGE.base, an empty qcow2 whose backing file
 * is the node's own NBD export of IMAGE (see the design note in pool.c).
 *
 * The backing file name is a QEMU json: name (pool_anchor_backing), not a
 * plain nbd+unix:// URL, so that it can carry the NBD client's
 * reconnect-delay and open-timeout: QEMU programs opening the chain
 * themselves (qemu-img, qemu-io, a QEMU started by hand) hold their
 * requests across a thunderd restart.  libvirt parses the name and makes
 * its own -blockdev from it, dropping both options (docs/libvirt.md); its
 * guests rely on error_policy='stop' and thunderd's resumer instead.
 * An anchor made before, with the plain URL of the same export, is
 * upgraded (made again and renamed over) even while volumes depend on it:
 * both names read the same bytes, and running QEMUs keep the file they
 * opened.
 *
 * libvirt refuses to create a volume whose backing store is not a local
 * file, so the anchor is made by "qemu-img create -u" (-u: do not open the
 * backing file, thunderd need not serve the image yet) as a hidden
 * temporary file in the pool directory, then renamed over IMAGE.base and
 * the pool refreshed.  Readers see the old anchor or the whole new one.
 *
 * A volume depends on the anchor if its backing store is the anchor's file
 * (compared by device and inode when the files exist, else by path; a
 * relative backing path is taken from the volume's directory), or if it
 * depends on a volume that does: an overlay of a VM volume counts too.
 *
 * Anchor changes and VM volume creation (pool.c) are serialised between
 * thunder processes by flock() on the pool directory: exclusive here,
 * shared while a VM volume is made, so a detach cannot remove an anchor a
 * volume is being made on.  (virsh users are not covered.)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "poolint.h"

extern char **environ;

int
pool_internal_lock(struct pool *p, bool exclusive, struct pool_error *e)
{
  int fd = open(p->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "storage pool %s: opening %s: %s",
                        p->name, p->path, strerror(errno));
    return -1;
  }
  while (flock(fd, exclusive ? LOCK_EX : LOCK_SH) < 0) {
    if (errno == EINTR)
      continue;
    pool_internal_error(e, POOL_ERR_SYSTEM, "storage pool %s: locking %s: %s",
                        p->name, p->path, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

/* ---- qemu-img ------------------------------------------------------------- */

/* Runs argv[0] from $PATH with argv, no shell; stdin and stdout are
 * /dev/null and stderr is kept (its start) in out, newlines turned into
 * "; ".  Returns the wait status, or -1 with errno if it could not run. */
static int
run_capture(char *const argv[], char *out, size_t outlen)
{
  int pfd[2];
  out[0] = '\0';
  if (pipe2(pfd, O_CLOEXEC) < 0)
    return -1;

  posix_spawn_file_actions_t fa;
  int r = posix_spawn_file_actions_init(&fa);
  if (r == 0)
    r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (r == 0)
    r = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (r == 0)
    r = posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
  pid_t pid = -1;
  if (r == 0)
    r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pfd[1]);
  if (r != 0) {
    close(pfd[0]);
    errno = r;
    return -1;
  }

  size_t used = 0;
  char buf[512];
  for (;;) {
    ssize_t n = read(pfd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    for (ssize_t i = 0; i < n && used + 3 < outlen; i++) {
      if (buf[i] == '\n') {
        memcpy(out + used, "; ", 2);
        used += 2;
      } else {
        out[used++] = buf[i];
      }
    }
  }
  close(pfd[0]);
  while (used > 0 && (out[used - 1] == ' ' || out[used - 1] == ';'))
    used--;
  out[used] = '\0';

  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      return -1;
  }
  return status;
}

/* Makes the anchor file at apath: qcow2, backing url (format fmt), size
 * bytes, mode 0644, replacing any file there atomically. */
static int
make_anchor(struct pool *p, const char *aname, const char *apath,
            const char *url, const char *fmt, uint64_t size,
            struct pool_error *e)
{
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", p->path, aname) >=
      (int)sizeof tmp) {
    pool_internal_error(e, POOL_ERR_INVALID, "anchor %s: path too long",
                        aname);
    return -1;
  }
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    pool_internal_error(e, POOL_ERR_SYSTEM,
                        "anchor %s: creating a temporary file in %s: %s",
                        aname, p->path, strerror(errno));
    return -1;
  }
  close(fd);

  char sizebuf[32];
  snprintf(sizebuf, sizeof sizebuf, "%" PRIu64, size);
  char *const argv[] = {
    (char *)"qemu-img", (char *)"create", (char *)"-q", (char *)"-f",
    (char *)"qcow2", (char *)"-u", (char *)"-F", (char *)fmt, (char *)"-b",
    (char *)url, tmp, sizebuf, NULL,
  };
  char msg[768];
  int status = run_capture(argv, msg, sizeof msg);
  if (status == -1) {
    pool_internal_error(e, POOL_ERR_SYSTEM,
                        "anchor %s: cannot run qemu-img (is qemu-utils installed?): %s",
                        aname, strerror(errno));
    goto fail;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    pool_internal_error(e, POOL_ERR_SYSTEM,
                        "anchor %s: qemu-img create failed (%s %d): %s", aname,
                        WIFEXITED(status) ? "exit" : "signal",
                        WIFEXITED(status) ? WEXITSTATUS(status)
                                          : WTERMSIG(status),
                        msg[0] ? msg : "no message");
    goto fail;
  }
  if (chmod(tmp, 0644) < 0 || rename(tmp, apath) < 0) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "anchor %s: installing %s: %s",
                        aname, apath, strerror(errno));
    goto fail;
  }
  return 0;

fail:
  unlink(tmp);
  return -1;
}

/* ---- Dependents ------------------------------------------------------------ */

struct volent {
  char *name;
  char *path;    /* the volume's file */
  char *backing; /* its backing store, absolute, or NULL */
  bool has_st;   /* st of path is valid */
  struct stat st;
  bool dep;
};

/* True if backing names the file whose path is path and stat is st
 * (has_st: st valid). */
static bool
same_file(const char *backing, const char *path, bool has_st,
          const struct stat *st)
{
  struct stat bst;
  if (has_st && stat(backing, &bst) == 0)
    return bst.st_dev == st->st_dev && bst.st_ino == st->st_ino;
  return strcmp(backing, path) == 0;
}

static int
cmp_str(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of the volumes depending on the anchor at apath, sorted. */
static char **
dependents(struct pool *p, const char *apath, size_t *count,
           struct pool_error *e)
{
  *count = 0;
  if (pool_internal_refresh(p, e) < 0)
    return NULL;
  virStorageVolPtr *vols = NULL;
  int nvols = virStoragePoolListAllVolumes(p->pool, &vols, 0);
  if (nvols < 0) {
    pool_internal_virerror(e, "storage pool %s: listing its volumes",
                           p->name);
    return NULL;
  }

  char **out = NULL;
  struct volent *v = calloc((size_t)nvols + 1, sizeof *v);
  size_t n = 0;
  if (v == NULL)
    goto nomem;
  for (int i = 0; i < nvols; i++) {
    const char *name = virStorageVolGetName(vols[i]);
    struct poolxml_vol_info info;
    struct pool_error ignored;
    /* A volume deleted meanwhile, or one whose XML is odd, depends on
     * nothing. */
    if (name == NULL ||
        pool_internal_vol_info(p, vols[i], name, &info, &ignored) < 0)
      continue;
    struct volent *ve = &v[n];
    ve->name = strdup(name);
    ve->path = info.path;
    info.path = NULL;
    if (info.backing_path && info.backing_path[0] != '/' &&
        strstr(info.backing_path, "://") == NULL) {
      /* Relative to the volume's own directory (the pool's). */
      if (asprintf(&ve->backing, "%s/%s", p->path, info.backing_path) < 0)
        ve->backing = NULL;
    } else if (info.backing_path) {
      ve->backing = info.backing_path;
      info.backing_path = NULL;
    }
    poolxml_vol_info_free(&info);
    n++;
    if (ve->name == NULL)
      goto nomem;
    ve->has_st = ve->path && stat(ve->path, &ve->st) == 0;
  }

  struct stat ast;
  bool has_ast = stat(apath, &ast) == 0;
  size_t ndep = 0;
  for (size_t i = 0; i < n; i++)
    if (v[i].backing && same_file(v[i].backing, apath, has_ast, &ast)) {
      v[i].dep = true;
      ndep++;
    }
  /* Volumes over dependents, until nothing changes. */
  for (bool changed = ndep > 0; changed;) {
    changed = false;
    for (size_t i = 0; i < n; i++) {
      if (v[i].dep || v[i].backing == NULL)
        continue;
      for (size_t j = 0; j < n; j++) {
        if (v[j].dep && v[j].path &&
            same_file(v[i].backing, v[j].path, v[j].has_st, &v[j].st)) {
          v[i].dep = changed = true;
          ndep++;
          break;
        }
      }
    }
  }

  out = calloc(ndep + 1, sizeof *out);
  if (out == NULL)
    goto nomem;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (v[i].dep) {
      out[k++] = v[i].name;
      v[i].name = NULL;
    }
  qsort(out, k, sizeof *out, cmp_str);
  *count = k;
  goto done;

nomem:
  pool_internal_error(e, POOL_ERR_SYSTEM, "storage pool %s: out of memory",
                      p->name);
  pool_strv_free(out);
  out = NULL;
done:
  for (size_t i = 0; v && i < n; i++) {
    free(v[i].name);
    free(v[i].path);
    free(v[i].backing);
  }
  free(v);
  for (int i = 0; i < nvols; i++)
    virStorageVolFree(vols[i]);
  free(vols);
  return out;
}

/* Writes "a, b, c" (as many as fit, then "...") into buf. */
static void
join_names(char **names, size_t n, char *buf, size_t len)
{
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(names[i]);
    if (used + l + 8 >= len) {
      snprintf(buf + used, len - used, "%s...", i ? ", " : "");
      return;
    }
    used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
                             names[i]);
  }
}

/* Sets e to POOL_ERR_BUSY: anchor aname cannot be verb ("removed") since
 * the volumes names depend on it; detail (may be "") follows the list. */
static void
busy_error(struct pool *p, const char *aname, const char *verb,
           char **names, size_t n, const char *detail, struct pool_error *e)
{
  char list[600];
  join_names(names, n, list, sizeof list);
  pool_internal_error(e, POOL_ERR_BUSY,
                      "anchor %s in storage pool %s cannot be %s: %zu volume%s depend%s on it: %s%s",
                      aname, p->name, verb, n, n == 1 ? "" : "s",
                      n == 1 ? "s" : "", list, detail);
}

char **
pool_dependents(struct pool *p, const char *image, size_t *n,
                struct pool_error *e)
{
  size_t dummy;
  if (n == NULL)
    n = &dummy;
  *n = 0;
  POOL_ERROR_START(e);
  CLEANUP_FREE char *aname = NULL;
  CLEANUP_FREE char *apath = NULL;
  if (pool_internal_anchor_names(p, image, &aname, &apath, e) < 0)
    return NULL;
  return dependents(p, apath, n, e);
}

/* ---- Ensure and remove -------------------------------------------------------- */

char *
pool_anchor_backing(const char *image, const char *socket_path)
{
  char *s;
  if (asprintf(&s, "json:{\"file\":{\"driver\":\"nbd\",\"server\":"
               "{\"type\":\"unix\",\"path\":\"%s\"},\"export\":\"%s\","
               "\"reconnect-delay\":%d,\"open-timeout\":%d}}",
               socket_path, image, POOL_ANCHOR_RECONNECT_DELAY,
               POOL_ANCHOR_OPEN_TIMEOUT) < 0)
    return NULL;
  return s;
}

/* True if backing is a name thunder gave an anchor of image on
 * socket_path before (the plain URL, or a json: name with other
 * options): the same export, so the same bytes. */
static bool
same_export(const char *backing, const char *image, const char *socket_path)
{
  CLEANUP_FREE char *url = NULL, *prefix = NULL;
  if (asprintf(&url, "nbd+unix:///%s?socket=%s", image, socket_path) < 0) {
    url = NULL;
    return false;
  }
  if (asprintf(&prefix, "json:{\"file\":{\"driver\":\"nbd\",\"server\":"
               "{\"type\":\"unix\",\"path\":\"%s\"},\"export\":\"%s\",",
               socket_path, image) < 0) {
    prefix = NULL;
    return false;
  }
  return strcmp(backing, url) == 0 ||
         strncmp(backing, prefix, strlen(prefix)) == 0;
}

int
pool_anchor_ensure(struct pool *p, const struct pool_anchor_spec *spec,
                   struct pool_error *e)
{
  POOL_ERROR_START(e);
  CLEANUP_FREE char *aname = NULL;
  CLEANUP_FREE char *apath = NULL;
  if (pool_internal_anchor_names(p, spec->image, &aname, &apath, e) < 0)
    return -1;
  if (spec->format == NULL ||
      (strcmp(spec->format, "raw") != 0 && strcmp(spec->format, "qcow2") != 0)) {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "anchor %s: image format '%.32s' is not raw or qcow2",
                        aname, spec->format ? spec->format : "");
    return -1;
  }
  if (spec->size == 0) {
    pool_internal_error(e, POOL_ERR_INVALID, "anchor %s: image size is 0",
                        aname);
    return -1;
  }
  if (!poolxml_socket_path_valid(spec->socket_path)) {
    pool_internal_error(e, POOL_ERR_INVALID,
                        "anchor %s: socket path '%.300s' must be absolute, at most 107 bytes, of A-Z a-z 0-9 / . _ - +",
                        aname, spec->socket_path ? spec->socket_path : "");
    return -1;
  }
  CLEANUP_FREE char *url = pool_anchor_backing(spec->image,
                                                spec->socket_path);
  if (url == NULL) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "anchor %s: out of memory", aname);
    return -1;
  }

  CLEANUP_CLOSE int lock = pool_internal_lock(p, true, e);
  if (lock < 0)
    return -1;

  struct stat st;
  if (lstat(apath, &st) == 0) {
    virStorageVolPtr vol = pool_internal_vol_lookup(p, aname, true, e);
    if (vol == NULL && e->code != POOL_ERR_NONE)
      return -1;
    char have[PATH_MAX + 128] = "a file libvirt does not read as a volume";
    if (vol != NULL) {
      struct poolxml_vol_info info;
      int r = pool_internal_vol_info(p, vol, aname, &info, e);
      virStorageVolFree(vol);
      if (r < 0)
        return -1;
      bool same_bytes = info.backing_path && info.backing_format &&
                        same_export(info.backing_path, spec->image,
                                    spec->socket_path) &&
                        strcmp(info.backing_format, spec->format) == 0 &&
                        info.capacity == spec->size;
      bool same = same_bytes && strcmp(info.backing_path, url) == 0;
      snprintf(have, sizeof have, "backing %s (format %s), %" PRIu64 " bytes",
               info.backing_path ? info.backing_path : "none",
               info.backing_format ? info.backing_format : "none",
               info.capacity);
      poolxml_vol_info_free(&info);
      if (same)
        return pool_internal_refresh(p, e);
      if (same_bytes) {
        /* An older anchor of the same export: upgrade it in place. */
        if (make_anchor(p, aname, apath, url, spec->format, spec->size, e) < 0)
          return -1;
        return pool_internal_refresh(p, e);
      }
    }
    size_t n;
    char **deps = dependents(p, apath, &n, e);
    if (deps == NULL)
      return -1;
    if (n > 0) {
      char detail[2 * PATH_MAX];
      snprintf(detail, sizeof detail,
               " (it has %s; wanted %s (format %s), %" PRIu64 " bytes)",
               have, url, spec->format, spec->size);
      busy_error(p, aname, "replaced", deps, n, detail, e);
      pool_strv_free(deps);
      return -1;
    }
    pool_strv_free(deps);
  } else if (errno != ENOENT) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "anchor %s: %s", apath,
                        strerror(errno));
    return -1;
  }

  if (make_anchor(p, aname, apath, url, spec->format, spec->size, e) < 0)
    return -1;
  return pool_internal_refresh(p, e);
}

int
pool_anchor_remove(struct pool *p, const char *image, struct pool_error *e)
{
  POOL_ERROR_START(e);
  CLEANUP_FREE char *aname = NULL;
  CLEANUP_FREE char *apath = NULL;
  if (pool_internal_anchor_names(p, image, &aname, &apath, e) < 0)
    return -1;
  CLEANUP_CLOSE int lock = pool_internal_lock(p, true, e);
  if (lock < 0)
    return -1;

  size_t n;
  char **deps = dependents(p, apath, &n, e);
  if (deps == NULL)
    return -1;
  if (n > 0) {
    busy_error(p, aname, "removed", deps, n, "", e);
    pool_strv_free(deps);
    return -1;
  }
  pool_strv_free(deps);

  virStorageVolPtr vol = pool_internal_vol_lookup(p, aname, false, e);
  if (vol == NULL && e->code != POOL_ERR_NONE)
    return -1;
  if (vol != NULL) {
    int r = virStorageVolDelete(vol, 0);
    virStorageVolFree(vol);
    if (r < 0) {
      pool_internal_virerror(e, "storage pool %s: deleting anchor %s",
                             p->name, aname);
      return -1;
    }
  }
  /* A file libvirt does not list (not a readable volume) goes too. */
  if (unlink(apath) < 0 && errno != ENOENT) {
    pool_internal_error(e, POOL_ERR_SYSTEM, "anchor %s: removing %s: %s",
                        aname, apath, strerror(errno));
    return -1;
  }
  return pool_internal_refresh(p, e);
}

int
pool_image_size(struct pool *p, const char *image, uint64_t *size,
                struct pool_error *e)
{
  POOL_ERROR_START(e);
  CLEANUP_FREE char *aname = NULL;
  CLEANUP_FREE char *apath = NULL;
  if (pool_internal_anchor_names(p, image, &aname, &apath, e) < 0)
    return -1;
  virStorageVolPtr anchor = pool_internal_vol_lookup(p, aname, true, e);
  if (anchor == NULL) {
    if (e->code == POOL_ERR_NONE)
      pool_internal_error(e, POOL_ERR_NOT_FOUND,
                          "image %s is not attached on this node: storage pool %s has no anchor volume %s",
                          image, p->name, aname);
    return -1;
  }
  struct poolxml_vol_info info;
  int r = pool_internal_vol_info(p, anchor, aname, &info, e);
  virStorageVolFree(anchor);
  if (r < 0)
    return -1;
  *size = info.capacity;
  poolxml_vol_info_free(&info);
  return 0;
}
