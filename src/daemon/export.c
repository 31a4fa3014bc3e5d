/* thunder — NBD exports and their registry; see export.h.
 *
 * The registry is a sorted array under a rwlock: lookups (one per
 * handshake) share it, adds and removes are rare.
 */
#include "export.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct export {
  _Atomic unsigned refs;
  char *name;
  size_t name_len;
  char *description;
  uint64_t size;
  uint32_t pref_block;
  const struct export_ops *ops;
  void *handle;
  _Atomic uint64_t reads, served_local, served_remote;
};

struct exports {
  pthread_rwlock_t lock;
  struct export **v; /* sorted by name */
  size_t n, cap;
};

struct export *
export_new(const char *name, uint64_t size, uint32_t pref_block,
           const char *description, const struct export_ops *ops,
           void *handle)
{
  struct export *exp = calloc(1, sizeof *exp);
  if (exp == NULL) {
    log_error("export", "calloc: %m");
    return NULL;
  }
  exp->name = strdup(name);
  exp->description = strdup(description ? description : "");
  if (exp->name == NULL || exp->description == NULL) {
    log_error("export", "strdup: %m");
    free(exp->name);
    free(exp->description);
    free(exp);
    return NULL;
  }
  atomic_init(&exp->refs, 1);
  exp->name_len = strlen(name);
  exp->size = size;
  exp->pref_block = pref_block;
  exp->ops = ops;
  exp->handle = handle;
  return exp;
}

/* The backend of export_new_bytes: a private copy of the bytes. */
struct bytes_handle {
  size_t len;
  char data[];
};

static int
bytes_pread(void *handle, void *buf, uint32_t len, uint64_t off, int *err)
{
  struct bytes_handle *b = handle;
  if (off > b->len || len > b->len - off) {
    *err = EINVAL;
    return -1;
  }
  memcpy(buf, b->data + off, len);
  return 0;
}

static const struct export_ops bytes_ops = {
  .pread = bytes_pread,
  .close = free,
};

struct export *
export_new_bytes(const char *name, const void *data, size_t len,
                 const char *description)
{
  struct bytes_handle *b = malloc(sizeof *b + len);
  if (b == NULL) {
    log_error("export", "malloc: %m");
    return NULL;
  }
  b->len = len;
  memcpy(b->data, data, len);
  struct export *exp = export_new(name, len, 4096, description, &bytes_ops, b);
  if (exp == NULL)
    free(b);
  return exp;
}

void
export_count_read(struct export *exp, bool local, uint64_t bytes)
{
  atomic_fetch_add_explicit(&exp->reads, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(local ? &exp->served_local : &exp->served_remote,
                            bytes, memory_order_relaxed);
}

void
export_get_counters(const struct export *exp, struct export_counters *c)
{
  c->reads = atomic_load(&exp->reads);
  c->served_local_bytes = atomic_load(&exp->served_local);
  c->served_remote_bytes = atomic_load(&exp->served_remote);
}

void
export_get(struct export *exp)
{
  atomic_fetch_add(&exp->refs, 1);
}

void
export_put(struct export *exp)
{
  if (exp == NULL || atomic_fetch_sub(&exp->refs, 1) != 1)
    return;
  if (exp->ops->close)
    exp->ops->close(exp->handle);
  free(exp->name);
  free(exp->description);
  free(exp);
}

const char *
export_name(const struct export *exp)
{
  return exp->name;
}

const char *
export_description(const struct export *exp)
{
  return exp->description;
}

uint64_t
export_size(const struct export *exp)
{
  return exp->size;
}

uint32_t
export_pref_block(const struct export *exp)
{
  return exp->pref_block;
}

void *
export_handle_if(const struct export *exp, const struct export_ops *ops)
{
  return exp->ops == ops ? exp->handle : NULL;
}

int
export_pread_lent(struct export *exp, void *buf, uint32_t len, uint64_t off,
                  bool local, struct export_lent *lent, int *err)
{
  if (lent)
    lent->n = 0;
  if (exp->ops->pread_from)
    return exp->ops->pread_from(exp->handle, buf, len, off, local, lent,
                                err);
  return exp->ops->pread(exp->handle, buf, len, off, err);
}

int
export_pread(struct export *exp, void *buf, uint32_t len, uint64_t off,
             bool local, int *err)
{
  return export_pread_lent(exp, buf, len, off, local, NULL, err);
}

void
export_lent_release(struct export_lent *l)
{
  for (unsigned i = 0; i < l->n; i++)
    l->put(l->v[i].hold);
  l->n = 0;
}

int
export_cache(struct export *exp, uint64_t len, uint64_t off, int *err)
{
  if (exp->ops->cache == NULL)
    return 0;
  return exp->ops->cache(exp->handle, len, off, err);
}

bool
export_may_block(struct export *exp, uint32_t len, uint64_t off)
{
  return exp->ops->may_block != NULL &&
         exp->ops->may_block(exp->handle, len, off);
}

struct exports *
exports_new(void)
{
  struct exports *reg = calloc(1, sizeof *reg);
  if (reg == NULL) {
    log_error("export", "calloc: %m");
    return NULL;
  }
  pthread_rwlock_init(&reg->lock, NULL);
  return reg;
}

/* Compares name[0..len) with exp's name, as memcmp then length. */
static int
name_cmp(const char *name, size_t len, const struct export *exp)
{
  size_t n = len < exp->name_len ? len : exp->name_len;
  int c = memcmp(name, exp->name, n);
  if (c != 0)
    return c;
  return (len > exp->name_len) - (len < exp->name_len);
}

/* Index of the first entry >= name; *found if equal.  Caller holds lock. */
static size_t
find_slot(const struct exports *reg, const char *name, size_t len,
          bool *found)
{
  size_t lo = 0, hi = reg->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (name_cmp(name, len, reg->v[mid]) > 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = lo < reg->n && name_cmp(name, len, reg->v[lo]) == 0;
  return lo;
}

/* Inserts exp at slot i, growing the array; the caller holds the write
 * lock.  -1 on allocation failure. */
static int
insert_at(struct exports *reg, size_t i, struct export *exp)
{
  if (reg->n == reg->cap) {
    size_t cap = reg->cap ? reg->cap * 2 : 8;
    struct export **v = realloc(reg->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    reg->v = v;
    reg->cap = cap;
  }
  memmove(&reg->v[i + 1], &reg->v[i], (reg->n - i) * sizeof *reg->v);
  reg->v[i] = exp;
  reg->n++;
  return 0;
}

int
exports_add(struct exports *reg, struct export *exp)
{
  pthread_rwlock_wrlock(&reg->lock);
  bool found;
  size_t i = find_slot(reg, exp->name, exp->name_len, &found);
  int r;
  if (found) {
    errno = EEXIST;
    r = -1;
  } else
    r = insert_at(reg, i, exp);
  pthread_rwlock_unlock(&reg->lock);
  return r;
}

int
exports_replace(struct exports *reg, struct export *exp)
{
  struct export *old = NULL;
  pthread_rwlock_wrlock(&reg->lock);
  bool found;
  size_t i = find_slot(reg, exp->name, exp->name_len, &found);
  int r = 0;
  if (found) {
    old = reg->v[i];
    reg->v[i] = exp;
  } else
    r = insert_at(reg, i, exp);
  pthread_rwlock_unlock(&reg->lock);
  export_put(old);
  return r;
}

int
exports_remove(struct exports *reg, const char *name)
{
  pthread_rwlock_wrlock(&reg->lock);
  bool found;
  size_t i = find_slot(reg, name, strlen(name), &found);
  if (!found) {
    pthread_rwlock_unlock(&reg->lock);
    errno = ENOENT;
    return -1;
  }
  struct export *exp = reg->v[i];
  memmove(&reg->v[i], &reg->v[i + 1], (reg->n - i - 1) * sizeof *reg->v);
  reg->n--;
  pthread_rwlock_unlock(&reg->lock);
  export_put(exp);
  return 0;
}

struct export *
exports_lookup(struct exports *reg, const char *name, size_t len)
{
  struct export *exp = NULL;
  pthread_rwlock_rdlock(&reg->lock);
  bool found;
  size_t i = find_slot(reg, name, len, &found);
  if (found) {
    exp = reg->v[i];
    export_get(exp);
  }
  pthread_rwlock_unlock(&reg->lock);
  return exp;
}

int
exports_foreach(struct exports *reg, int (*fn)(struct export *, void *),
                void *opaque)
{
  int r = 0;
  pthread_rwlock_rdlock(&reg->lock);
  for (size_t i = 0; i < reg->n && r == 0; i++)
    r = fn(reg->v[i], opaque);
  pthread_rwlock_unlock(&reg->lock);
  return r;
}

size_t
exports_count(struct exports *reg)
{
  pthread_rwlock_rdlock(&reg->lock);
  size_t n = reg->n;
  pthread_rwlock_unlock(&reg->lock);
  return n;
}

void
exports_free(struct exports *reg)
{
  if (reg == NULL)
    return;
  for (size_t i = 0; i < reg->n; i++)
    export_put(reg->v[i]);
  free(reg->v);
  pthread_rwlock_destroy(&reg->lock);
  free(reg);
}
