/* thunder — NBD exports and the registry of them.
 *
 * An export is a named, read-only byte range with a backend behind it
 * (origin: an image file; node mode: the block cache).  Exports are
 * reference counted: the registry holds one reference, each connection
 * that selected it another, so an export removed from the registry stays
 * valid until its last connection ends.
 *
 * Locking: the registry has its own lock; callers hold none.  Backend
 * callbacks may be called from many threads at once.
 */
#ifndef THUNDER_EXPORT_H
#define THUNDER_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parts of a read's reply a backend lends instead of copying them into
 * the caller's buffer (node mode: blocks just fetched, sent from the
 * fetch's buffer; issue 17).  In ascending, disjoint order: bytes
 * [at, at + len) of the read are at p, valid until put(hold), which the
 * reader calls for each (export_lent_release) once they are sent.  The
 * rest of the read is in the caller's buffer as usual. */
#define EXPORT_LENT_MAX 16
struct export_lent_part {
  uint32_t at, len;
  const void *p;
  void *hold;
};
struct export_lent {
  unsigned n;
  void (*put)(void *hold);
  struct export_lent_part v[EXPORT_LENT_MAX];
};

/* Releases every part of l (n = 0 after). */
void export_lent_release(struct export_lent *l);

struct export_ops {
  /* Reads len bytes at off into buf; the range is inside the export.
   * Returns 0, or -1 with *err set to the errno for the client. */
  int (*pread)(void *handle, void *buf, uint32_t len, uint64_t off, int *err);
  /* Optional, used instead of pread when set: the same, told whether the
   * reader is local (a Unix-socket client: this node's VMs) or not (a
   * child node over TCP) — node mode keeps the blocks local VMs read.
   * lent (NULL: copy everything into buf) is empty on entry; the backend
   * may lend parts there instead of copying them (and releases them
   * itself when it fails). */
  int (*pread_from)(void *handle, void *buf, uint32_t len, uint64_t off,
                    bool local, struct export_lent *lent, int *err);
  /* Hints that [off, off + len) will be read soon.  0, or -1 and *err. */
  int (*cache)(void *handle, uint64_t len, uint64_t off, int *err);
  /* Releases the backend when the export's last reference is dropped. */
  void (*close)(void *handle);
  /* Optional (NULL: never): true when a read of [off, off + len) may
   * wait for something slower than the local disk (a fetch from an
   * upstream).  Called for every read before it is carried out, so it
   * must be cheap (no syscall, no lock held long); a wrong "false" costs
   * head-of-line blocking on the client's connection, a wrong "true" a
   * hand-off (see server.c). */
  bool (*may_block)(void *handle, uint32_t len, uint64_t off);
};

struct export;
struct exports;

/* A new export holding one reference; pref_block is the preferred I/O
 * size advertised to clients (a power of two).  On failure, NULL (the
 * handle is not closed). */
struct export *export_new(const char *name, uint64_t size, uint32_t pref_block,
                          const char *description,
                          const struct export_ops *ops, void *handle);

/* A new export serving a copy of data[0..len) (for manifests). */
struct export *export_new_bytes(const char *name, const void *data, size_t len,
                                const char *description);

/* Takes / drops a reference. */
void export_get(struct export *exp);
void export_put(struct export *exp);

const char *export_name(const struct export *exp);
const char *export_description(const struct export *exp);
uint64_t export_size(const struct export *exp);
uint32_t export_pref_block(const struct export *exp);

/* The backend's handle if exp was made with ops, else NULL: lets a
 * backend recognise its own exports. */
void *export_handle_if(const struct export *exp, const struct export_ops *ops);

/* Backend calls; the caller has checked the range.  local: the reader is
 * a Unix-socket client. */
int export_pread(struct export *exp, void *buf, uint32_t len, uint64_t off,
                 bool local, int *err);
/* export_pread that may lend parts of the reply in lent (emptied first;
 * see struct export_lent); release them after sending. */
int export_pread_lent(struct export *exp, void *buf, uint32_t len,
                      uint64_t off, bool local, struct export_lent *lent,
                      int *err);
int export_cache(struct export *exp, uint64_t len, uint64_t off, int *err);
bool export_may_block(struct export *exp, uint32_t len, uint64_t off);

/* Bytes served by reads of this export, counted by the NBD server. */
struct export_counters {
  uint64_t reads;               /* successful read requests */
  uint64_t served_local_bytes;  /* to Unix-socket clients (local QEMU) */
  uint64_t served_remote_bytes; /* to TCP clients (child nodes) */
};

/* Counts one successful read of bytes bytes. */
void export_count_read(struct export *exp, bool local, uint64_t bytes);

void export_get_counters(const struct export *exp, struct export_counters *c);

/* An empty registry, or NULL. */
struct exports *exports_new(void);

/* Adds exp (the registry takes the caller's reference).  -1 with
 * errno EEXIST if the name is taken. */
int exports_add(struct exports *reg, struct export *exp);

/* Adds exp, or replaces the export of the same name (dropping the
 * registry's reference to it) in one step, so no lookup misses both. */
int exports_replace(struct exports *reg, struct export *exp);

/* Removes the export named name; -1 with errno ENOENT if absent. */
int exports_remove(struct exports *reg, const char *name);

/* The export whose name is exactly name[0..len) with a new reference,
 * or NULL. */
struct export *exports_lookup(struct exports *reg, const char *name,
                              size_t len);

/* Calls fn for each export, in name order, under the registry's lock;
 * stops early when fn returns non-zero and returns that value. */
int exports_foreach(struct exports *reg,
                    int (*fn)(struct export *exp, void *opaque),
                    void *opaque);

/* Number of exports. */
size_t exports_count(struct exports *reg);

/* Drops every export and frees the registry. */
void exports_free(struct exports *reg);

#endif
