/* thunder — origin mode; see origin.h.
 *
 * Images changed in place.  A manifest is only true of the bytes it was
 * made from.  An image edited after it (dd conv=notrunc, rsync --inplace,
 * a VM booted on it by mistake) would be served to direct clients as is,
 * and nodes would reject every changed block and blame their parent.  So:
 *
 *   at a scan   an image whose mtime is later than its manifest file's
 *               was changed after `thunderctl image add`: not served (an
 *               export served already is withdrawn).
 *   at a read   the image's size, mtime and ctime are remembered when it
 *               is opened; after a pread the file is fstat()ed (at most
 *               once per CHECK_INTERVAL_NS, 5 ms, per image: the reader
 *               that finds the check due does it), and any difference
 *               marks the image changed for good: this read and every
 *               later one fail with EIO (an NBD error reply), and one
 *               error says how to republish it.
 *
 * Why fstat after the pread is enough: a write to a file updates its
 * mtime and ctime before it copies the data (file_modified() in the
 * kernel's write path, also for mmap via page_mkwrite), so bytes a pread
 * saw changed imply a changed timestamp by the time it returns.  Not
 * seen: a change within the same clock tick (a few ms) as the open, or by
 * a writer that forges both mtime and ctime (needs to be root), and reads
 * that end within 5 ms of a check that passed: a change is noticed at
 * most CHECK_INTERVAL_NS after it (plus the time of one read); from then
 * on nothing is served.  Cost: one fstat per 5 ms and image (an fstat
 * per read cost ~5% of the server's time at 4 KiB reads; the
 * alternative, hashing every block served, costs a SHA-256 of up to a
 * 64 KiB block per read).
 * A chmod or chown changes ctime too, and is treated as a change; a
 * change of the link count (the old file unlinked by a rename over it)
 * is not.
 */
#include "origin.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "manifest.h"

#define COMPONENT "origin"

struct origin_image {
  int fd;
  struct manifest *m;
  char *path;              /* the image file, for messages */
  struct stat st;          /* at open: size, mtime */
  _Atomic int64_t ctime_ns; /* ctime and link count at open, or when the */
  _Atomic uint64_t nlink;   /* link count last changed (see image_check) */
  _Atomic bool changed;    /* set once, never cleared */
  _Atomic int64_t next_check_ns; /* CLOCK_MONOTONIC: next image_check due */
};

/* At most one fstat per image in this time (see the note at the top). */
#define CHECK_INTERVAL_NS (5 * 1000000LL)

static int64_t
mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool
same_time(const struct timespec *a, const struct timespec *b)
{
  return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* Marks img changed; the first time, says so and how to republish. */
static void
image_changed(struct origin_image *img, const char *what)
{
  if (atomic_exchange(&img->changed, true))
    return;
  log_error(COMPONENT, "'%s': image file %s changed after its manifest was"
            " written (%s): refusing to serve it; republish it with"
            " 'thunderctl image add %s %s', then send SIGHUP", img->m->name,
            img->path, what, img->m->name, img->path);
}

/* Checks that img's file is as it was opened: 0, or -1 (image_changed). */
static int
image_check(struct origin_image *img)
{
  struct stat st;
  if (fstat(img->fd, &st) == -1) {
    log_error_rl(COMPONENT, "fstat: %s: %m", img->path);
    return -1;
  }
  const char *what = NULL;
  int64_t ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 +
                     st.st_ctim.tv_nsec;
  if (st.st_size != img->st.st_size)
    what = "its size changed";
  else if (!same_time(&st.st_mtim, &img->st.st_mtim))
    what = "its mtime changed";
  else if (ctime_ns != atomic_load_explicit(&img->ctime_ns,
                                            memory_order_relaxed)) {
    /* A rename over it or a new hard link changes the link count, and
     * the ctime with it, not the bytes: the old file of a republished
     * image is unlinked so.  Anything else (chmod, a write that put the
     * mtime back as rsync --inplace -t does) counts as a change. */
    uint64_t nlink = st.st_nlink;
    if (nlink == atomic_load(&img->nlink))
      what = "its ctime changed";
    else {
      atomic_store(&img->nlink, nlink);
      atomic_store(&img->ctime_ns, ctime_ns);
    }
  }
  if (what == NULL)
    return 0;
  image_changed(img, what);
  return -1;
}

static int
origin_pread(void *handle, void *buf, uint32_t len, uint64_t off, int *err)
{
  struct origin_image *img = handle;
  char *p = buf;
  if (atomic_load_explicit(&img->changed, memory_order_relaxed)) {
    *err = EIO;
    return -1;
  }
  while (len > 0) {
    ssize_t n = pread(img->fd, p, len, (off_t)off);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      *err = errno;
      log_error_rl(COMPONENT, "pread: %s at %" PRIu64 ": %m", img->path, off);
      return -1;
    }
    if (n == 0) {
      /* The file shrank under us: never serve zeroes for real data. */
      *err = EIO;
      image_changed(img, "it is shorter than its manifest says");
      return -1;
    }
    p += n;
    off += (uint64_t)n;
    len -= (uint32_t)n;
  }
  /* After the bytes are read, at most once per CHECK_INTERVAL_NS (the
   * thread that moves next_check_ns on checks): see the note at the top. */
  int64_t now = mono_ns();
  int64_t due = atomic_load_explicit(&img->next_check_ns,
                                     memory_order_relaxed);
  if (now >= due &&
      atomic_compare_exchange_strong(&img->next_check_ns, &due,
                                     now + CHECK_INTERVAL_NS) &&
      image_check(img) == -1) {
    *err = EIO;
    return -1;
  }
  if (atomic_load_explicit(&img->changed, memory_order_relaxed)) {
    *err = EIO;
    return -1;
  }
  return 0;
}

static int
origin_cache(void *handle, uint64_t len, uint64_t off, int *err)
{
  struct origin_image *img = handle;
  int r = posix_fadvise(img->fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
  if (r != 0) {
    *err = r;
    return -1;
  }
  return 0;
}

static void
origin_close(void *handle)
{
  struct origin_image *img = handle;
  close(img->fd);
  manifest_free(img->m);
  free(img->path);
  free(img);
}

static const struct export_ops origin_ops = {
  .pread = origin_pread,
  .cache = origin_cache,
  .close = origin_close,
};

/* Opens the image a manifest describes and checks it against the
 * manifest (mpath, made at mtime mtime).  Returns the fd and its stat in
 * *st, or -1 with a logged error. */
static int
open_image(int dirfd, const char *dir, const struct manifest *m,
           const char *mpath, const struct timespec *mtime, struct stat *st_out)
{
  CLEANUP_CLOSE int fd = openat(dirfd, m->file, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    log_error(COMPONENT, "open: %s/%s: %m", dir, m->file);
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) == -1) {
    log_error(COMPONENT, "fstat: %s/%s: %m", dir, m->file);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    log_error(COMPONENT, "%s/%s: not a regular file", dir, m->file);
    return -1;
  }
  if ((uint64_t)st.st_size != m->size) {
    log_error(COMPONENT, "%s/%s: size %" PRIu64 " differs from its manifest's"
              " %" PRIu64 " (image changed? run thunderctl image add again)",
              dir, m->file, (uint64_t)st.st_size, m->size);
    return -1;
  }
  if (st.st_mtim.tv_sec > mtime->tv_sec ||
      (st.st_mtim.tv_sec == mtime->tv_sec &&
       st.st_mtim.tv_nsec > mtime->tv_nsec)) {
    log_error(COMPONENT, "'%s': image file %s/%s changed after its manifest"
              " %s was written (its mtime is later): not serving it;"
              " republish it with 'thunderctl image add %s %s/%s', then send"
              " SIGHUP", m->name, dir, m->file, mpath, m->name, dir, m->file);
    return -1;
  }
  *st_out = st;
  enum image_format fmt;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, m->file);
  if (manifest_detect_format(fd, path, &fmt) == -1)
    return -1;
  if (fmt != m->format) {
    log_error(COMPONENT, "%s: format %s differs from its manifest's %s",
              path, image_format_name(fmt), image_format_name(m->format));
    return -1;
  }
  int r = fd;
  fd = -1;
  return r;
}

/* Names of the images a scan found valid; a growing array. */
struct seen {
  char **v;
  size_t n, cap;
};

static int
seen_add(struct seen *seen, const char *name)
{
  if (seen->n == seen->cap) {
    size_t cap = seen->cap ? seen->cap * 2 : 16;
    char **v = realloc(seen->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    seen->v = v;
    seen->cap = cap;
  }
  if ((seen->v[seen->n] = strdup(name)) == NULL)
    return -1;
  seen->n++;
  return 0;
}

static bool
seen_has(const struct seen *seen, const char *name)
{
  for (size_t i = 0; i < seen->n; i++)
    if (strcmp(seen->v[i], name) == 0)
      return true;
  return false;
}

static void
seen_free(struct seen *seen)
{
  for (size_t i = 0; i < seen->n; i++)
    free(seen->v[i]);
  free(seen->v);
}

/* Serves the image of one manifest file, unless the same version is
 * served already.  Records its name in seen.  0 or -1 (logged). */
static int
scan_one(struct exports *reg, int dirfd, const char *dir, const char *entry,
         struct seen *seen)
{
  size_t elen = strlen(entry), slen = strlen(MANIFEST_SUFFIX);
  char path[PATH_MAX];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, entry) >= sizeof path) {
    log_error(COMPONENT, "%s/%s: path too long", dir, entry);
    return -1;
  }
  struct stat mst;
  if (stat(path, &mst) == -1) {
    log_error(COMPONENT, "stat: %s: %m", path);
    return -1;
  }
  CLEANUP_FREE char *bytes = NULL;
  size_t blen;
  struct manifest *m = manifest_load_bytes(path, &bytes, &blen);
  if (m == NULL)
    return -1;
  if (strlen(m->name) != elen - slen || strncmp(m->name, entry, elen - slen)) {
    log_error(COMPONENT, "%s: field 'name': '%s' does not match the file name",
              path, m->name);
    manifest_free(m);
    return -1;
  }

  struct export *cur = exports_lookup(reg, m->name, strlen(m->name));
  if (cur) {
    struct origin_image *old = export_handle_if(cur, &origin_ops);
    bool same = old && strcmp(old->m->version_hex, m->version_hex) == 0;
    /* Served already, but changed since: withdrawn (not marked seen). */
    bool changed = same && (atomic_load(&old->changed) ||
                            image_check(old) == -1);
    export_put(cur);
    if (changed) {
      manifest_free(m);
      return -1;
    }
    if (old == NULL) {
      log_error(COMPONENT, "%s: an export named '%s' exists already", path,
                m->name);
      manifest_free(m);
      return -1;
    }
    if (same) {
      manifest_free(m);
      return seen_add(seen, entry) == -1 ? -1 : 0;
    }
  }

  struct stat st;
  int fd = open_image(dirfd, dir, m, path, &mst.st_mtim, &st);
  if (fd == -1) {
    manifest_free(m);
    return -1;
  }
  struct origin_image *img = calloc(1, sizeof *img);
  char ipath[PATH_MAX];
  snprintf(ipath, sizeof ipath, "%s/%s", dir, m->file);
  if (img == NULL || (img->path = strdup(ipath)) == NULL) {
    log_error(COMPONENT, "malloc: %m");
    free(img);
    close(fd);
    manifest_free(m);
    return -1;
  }
  img->fd = fd;
  img->m = m;
  img->st = st;
  atomic_init(&img->ctime_ns, (int64_t)st.st_ctim.tv_sec * 1000000000 +
                                  st.st_ctim.tv_nsec);
  atomic_init(&img->nlink, (uint64_t)st.st_nlink);
  atomic_init(&img->changed, false);
  atomic_init(&img->next_check_ns, 0);
  char desc[128];
  snprintf(desc, sizeof desc, "thunder image (%s, version %.16s)",
           image_format_name(m->format), m->version_hex);
  struct export *exp = export_new(m->name, m->size, m->block_size, desc,
                                  &origin_ops, img);
  if (exp == NULL) {
    origin_close(img);
    return -1;
  }
  char mname[MANIFEST_EXPORT_NAME_MAX];
  manifest_export_name(m->name, mname);
  struct export *mexp = export_new_bytes(mname, bytes, blen, "thunder manifest");
  if (mexp == NULL) {
    export_put(exp);
    return -1;
  }
  /* The manifest first, so a node that sees the image finds it.
   * Connections to a replaced version keep it until they end. */
  if (exports_replace(reg, mexp) == -1) {
    log_error(COMPONENT, "%s: export '%s': %m", path, mname);
    export_put(mexp);
    export_put(exp);
    return -1;
  }
  if (exports_replace(reg, exp) == -1) {
    log_error(COMPONENT, "%s: export '%s': %m", path, m->name);
    export_put(exp);
    exports_remove(reg, mname);
    return -1;
  }
  log_info(COMPONENT, "%s '%s' (%s, %" PRIu64 " bytes, %" PRIu64
           " blocks of %" PRIu32 ", version %s)",
           cur ? "serving new version of" : "serving", m->name,
           image_format_name(m->format), m->size, m->nblocks, m->block_size,
           m->version_hex);
  return seen_add(seen, entry) == -1 ? -1 : 0;
}

struct stale {
  const struct seen *seen;
  struct seen names; /* origin exports to remove */
};

static int
find_stale(struct export *exp, void *opaque)
{
  struct stale *st = opaque;
  if (export_handle_if(exp, &origin_ops) == NULL)
    return 0;
  char entry[MANIFEST_NAME_MAX + sizeof MANIFEST_SUFFIX];
  snprintf(entry, sizeof entry, "%s%s", export_name(exp), MANIFEST_SUFFIX);
  if (!seen_has(st->seen, entry) &&
      seen_add(&st->names, export_name(exp)) == -1)
    return -1;
  return 0;
}

int
origin_scan(struct exports *reg, const char *dir)
{
  DIR *d = opendir(dir);
  if (d == NULL) {
    log_error(COMPONENT, "opendir: %s: %m", dir);
    return -1;
  }
  int dirfd_ = dirfd(d);
  size_t slen = strlen(MANIFEST_SUFFIX);
  struct seen seen = { 0 };
  struct dirent *de;
  errno = 0;
  while ((de = readdir(d)) != NULL) {
    size_t len = strlen(de->d_name);
    if (de->d_name[0] != '.' && len > slen &&
        strcmp(de->d_name + len - slen, MANIFEST_SUFFIX) == 0)
      scan_one(reg, dirfd_, dir, de->d_name, &seen);
    errno = 0;
  }
  int r = (int)seen.n;
  if (errno != 0) {
    /* An incomplete listing must not withdraw images. */
    log_error(COMPONENT, "readdir: %s: %m", dir);
    r = -1;
  } else {
    /* Withdraw the images whose manifest is gone or no longer valid. */
    struct stale st = { .seen = &seen };
    exports_foreach(reg, find_stale, &st);
    for (size_t i = 0; i < st.names.n; i++) {
      log_info(COMPONENT, "withdrawing '%s': no valid manifest in %s",
               st.names.v[i], dir);
      exports_remove(reg, st.names.v[i]);
      char mname[MANIFEST_EXPORT_NAME_MAX];
      manifest_export_name(st.names.v[i], mname);
      exports_remove(reg, mname);
    }
    seen_free(&st.names);
  }
  seen_free(&seen);
  closedir(d);
  return r;
}

static struct json_object *
image_json(struct export *exp, const struct origin_image *img)
{
  struct json_object *o = json_object_new_object();
  struct json_object *c = json_object_new_object();
  if (o == NULL || c == NULL) {
    json_object_put(o);
    json_object_put(c);
    return NULL;
  }
  const struct manifest *m = img->m;
  struct export_counters ec;
  export_get_counters(exp, &ec);
  json_object_object_add(o, "name", json_object_new_string(m->name));
  json_object_object_add(o, "version", json_object_new_string(m->version_hex));
  json_object_object_add(o, "state", json_object_new_string("origin"));
  json_object_object_add(o, "size", json_object_new_uint64(m->size));
  json_object_object_add(o, "block_size", json_object_new_uint64(m->block_size));
  json_object_object_add(o, "blocks", json_object_new_uint64(m->nblocks));
  json_object_object_add(c, "served_local_bytes",
                         json_object_new_uint64(ec.served_local_bytes));
  json_object_object_add(c, "served_remote_bytes",
                         json_object_new_uint64(ec.served_remote_bytes));
  json_object_object_add(c, "reads", json_object_new_uint64(ec.reads));
  json_object_object_add(o, "counters", c);
  return o;
}

struct json_object *
origin_image_json(struct exports *reg, const char *name)
{
  struct export *exp = exports_lookup(reg, name, strlen(name));
  if (exp == NULL)
    return NULL;
  struct origin_image *img = export_handle_if(exp, &origin_ops);
  struct json_object *o = img ? image_json(exp, img) : NULL;
  export_put(exp);
  return o;
}

static int
list_one(struct export *exp, void *opaque)
{
  struct origin_image *img = export_handle_if(exp, &origin_ops);
  struct json_object *o = img ? image_json(exp, img) : NULL;
  if (o)
    json_object_array_add(opaque, o);
  return 0;
}

struct json_object *
origin_list_json(struct exports *reg)
{
  struct json_object *o = json_object_new_object();
  struct json_object *arr = json_object_new_array();
  if (o == NULL || arr == NULL) {
    json_object_put(o);
    json_object_put(arr);
    return NULL;
  }
  exports_foreach(reg, list_one, arr);
  json_object_object_add(o, "images", arr);
  return o;
}
