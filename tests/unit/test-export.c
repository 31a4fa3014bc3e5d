/* thunder — unit tests of the export registry (src/daemon/export.c).
 *
 * Exports here are backed by a counting stub: each handle is a struct
 * stub recording how many times its close callback ran, so a test can
 * check that an export is released exactly once, at its last reference.
 */
#include <CUnit/Basic.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export.h"
#include "cunit-run.h"

struct stub {
  atomic_int closes;
  atomic_int preads, caches;
  uint64_t last_off, last_len;
};

static int
stub_pread(void *handle, void *buf, uint32_t len, uint64_t off, int *err)
{
  struct stub *s = handle;
  atomic_fetch_add(&s->preads, 1);
  s->last_off = off;
  s->last_len = len;
  if (off == 666) {
    *err = EIO;
    return -1;
  }
  memset(buf, 0xab, len);
  return 0;
}

static int
stub_cache(void *handle, uint64_t len, uint64_t off, int *err)
{
  struct stub *s = handle;
  atomic_fetch_add(&s->caches, 1);
  s->last_off = off;
  s->last_len = len;
  if (off == 666) {
    *err = ENOMEM;
    return -1;
  }
  return 0;
}

static void
stub_close(void *handle)
{
  struct stub *s = handle;
  atomic_fetch_add(&s->closes, 1);
}

static const struct export_ops stub_ops = {
  .pread = stub_pread,
  .cache = stub_cache,
  .close = stub_close,
};

#define NSTUBS 8
static struct stub t_stubs[NSTUBS];
static struct exports *t_reg;

static void
test_setup(void)
{
  memset(t_stubs, 0, sizeof t_stubs);
  t_reg = exports_new();
  if (t_reg == NULL)
    abort();
}

static void
test_teardown(void)
{
  exports_free(t_reg);
  t_reg = NULL;
}

/* A new export on stub i; fatal on failure. */
static struct export *
new_export(const char *name, int i)
{
  struct export *exp =
      export_new(name, 1000 + (uint64_t)i, 4096, NULL, &stub_ops, &t_stubs[i]);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  return exp;
}

static void
add(const char *name, int i)
{
  CU_ASSERT_EQUAL_FATAL(exports_add(t_reg, new_export(name, i)), 0);
}

static void
test_new_accessors(void)
{
  struct export *exp =
      export_new("disk", 12345, 65536, "a disk", &stub_ops, &t_stubs[0]);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_STRING_EQUAL(export_name(exp), "disk");
  CU_ASSERT_STRING_EQUAL(export_description(exp), "a disk");
  CU_ASSERT_EQUAL(export_size(exp), 12345);
  CU_ASSERT_EQUAL(export_pref_block(exp), 65536);
  export_put(exp);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 1);
}

static void
test_null_description(void)
{
  struct export *exp = new_export("disk", 0);
  CU_ASSERT_PTR_NOT_NULL(export_description(exp));
  CU_ASSERT_STRING_EQUAL(export_description(exp), "");
  export_put(exp);
}

/* The strings are copied: the caller's buffers may change. */
static void
test_name_copied(void)
{
  char name[] = "disk", desc[] = "text";
  struct export *exp = export_new(name, 1, 512, desc, &stub_ops, &t_stubs[0]);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  name[0] = 'X';
  desc[0] = 'X';
  CU_ASSERT_STRING_EQUAL(export_name(exp), "disk");
  CU_ASSERT_STRING_EQUAL(export_description(exp), "text");
  export_put(exp);
}

static void
test_pread_and_cache_pass_through(void)
{
  struct export *exp = new_export("disk", 0);
  uint8_t buf[16] = { 0 };
  int err = 0;
  CU_ASSERT_EQUAL(export_pread(exp, buf, 16, 32, false, &err), 0);
  CU_ASSERT_EQUAL(buf[0], 0xab);
  CU_ASSERT_EQUAL(buf[15], 0xab);
  CU_ASSERT_EQUAL(t_stubs[0].last_off, 32);
  CU_ASSERT_EQUAL(t_stubs[0].last_len, 16);
  CU_ASSERT_EQUAL(export_pread(exp, buf, 1, 666, false, &err), -1);
  CU_ASSERT_EQUAL(err, EIO);
  CU_ASSERT_EQUAL(export_cache(exp, 100, 200, &err), 0);
  CU_ASSERT_EQUAL(t_stubs[0].last_off, 200);
  CU_ASSERT_EQUAL(t_stubs[0].last_len, 100);
  CU_ASSERT_EQUAL(export_cache(exp, 1, 666, &err), -1);
  CU_ASSERT_EQUAL(err, ENOMEM);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].preads), 2);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].caches), 2);
  export_put(exp);
}

static void
test_cache_without_callback(void)
{
  static const struct export_ops ops = { .pread = stub_pread };
  struct export *exp = export_new("disk", 10, 512, NULL, &ops, &t_stubs[0]);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  int err = 0;
  CU_ASSERT_EQUAL(export_cache(exp, 10, 0, &err), 0);
  CU_ASSERT_EQUAL(err, 0);
  export_put(exp); /* no close callback: nothing to call */
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 0);
}

static void
test_put_null(void)
{
  export_put(NULL);
  exports_free(NULL);
}

static void
test_add_lookup(void)
{
  CU_ASSERT_EQUAL(exports_count(t_reg), 0);
  add("disk", 0);
  CU_ASSERT_EQUAL(exports_count(t_reg), 1);
  struct export *exp = exports_lookup(t_reg, "disk", 4);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_STRING_EQUAL(export_name(exp), "disk");
  CU_ASSERT_EQUAL(export_size(exp), 1000);
  export_put(exp);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 0);
}

static void
test_add_duplicate(void)
{
  add("disk", 0);
  struct export *dup = new_export("disk", 1);
  errno = 0;
  CU_ASSERT_EQUAL(exports_add(t_reg, dup), -1);
  CU_ASSERT_EQUAL(errno, EEXIST);
  CU_ASSERT_EQUAL(exports_count(t_reg), 1);
  /* The caller still owns the refused export. */
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[1].closes), 0);
  export_put(dup);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[1].closes), 1);
  /* The registered one is untouched. */
  struct export *exp = exports_lookup(t_reg, "disk", 4);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_EQUAL(export_size(exp), 1000);
  export_put(exp);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 0);
}

/* The same export object added twice is refused as well. */
static void
test_add_same_object_twice(void)
{
  struct export *exp = new_export("disk", 0);
  CU_ASSERT_EQUAL_FATAL(exports_add(t_reg, exp), 0);
  export_get(exp);
  errno = 0;
  CU_ASSERT_EQUAL(exports_add(t_reg, exp), -1);
  CU_ASSERT_EQUAL(errno, EEXIST);
  export_put(exp);
  CU_ASSERT_EQUAL(exports_count(t_reg), 1);
}

static void
test_lookup_exact_bytes(void)
{
  add("img", 0);
  add("img2", 1);
  add("", 2);

  struct export *exp;
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "im", 2));  /* prefix */
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "img23", 5)); /* longer */
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "IMG", 3));
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "img\0", 4)); /* NUL inside */
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "imh", 3));

  /* The name need not be NUL-terminated: only len bytes count. */
  exp = exports_lookup(t_reg, "img2XYZ", 3);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_STRING_EQUAL(export_name(exp), "img");
  export_put(exp);

  exp = exports_lookup(t_reg, "img2XYZ", 4);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_STRING_EQUAL(export_name(exp), "img2");
  export_put(exp);

  exp = exports_lookup(t_reg, "ignored", 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_STRING_EQUAL(export_name(exp), "");
  export_put(exp);
}

static void
test_lookup_empty_registry(void)
{
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "disk", 4));
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "", 0));
}

/* Bytes above 0x7f sort and match as unsigned bytes. */
static void
test_lookup_high_bytes(void)
{
  add("\xc3\xa9t\xc3\xa9", 0);
  add("zzz", 1);
  add("\x01", 2);
  struct export *exp = exports_lookup(t_reg, "\xc3\xa9t\xc3\xa9", 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_EQUAL(export_size(exp), 1000);
  export_put(exp);
  exp = exports_lookup(t_reg, "zzz", 3);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  export_put(exp);
  exp = exports_lookup(t_reg, "\x01", 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  export_put(exp);
}

static void
test_remove(void)
{
  add("a", 0);
  add("b", 1);
  CU_ASSERT_EQUAL(exports_remove(t_reg, "a"), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 1);
  CU_ASSERT_EQUAL(exports_count(t_reg), 1);
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "a", 1));
  errno = 0;
  CU_ASSERT_EQUAL(exports_remove(t_reg, "a"), -1);
  CU_ASSERT_EQUAL(errno, ENOENT);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 1);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[1].closes), 0);
  struct export *exp = exports_lookup(t_reg, "b", 1);
  CU_ASSERT_PTR_NOT_NULL(exp);
  export_put(exp);
}

static void
test_remove_unknown(void)
{
  add("abc", 0);
  errno = 0;
  CU_ASSERT_EQUAL(exports_remove(t_reg, "ab"), -1);
  CU_ASSERT_EQUAL(errno, ENOENT);
  errno = 0;
  CU_ASSERT_EQUAL(exports_remove(t_reg, "abcd"), -1);
  CU_ASSERT_EQUAL(errno, ENOENT);
  CU_ASSERT_EQUAL(exports_count(t_reg), 1);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 0);
}

/* A removed export stays valid while referenced; close runs once, at the
 * last put. */
static void
test_reference_outlives_removal(void)
{
  add("disk", 0);
  struct export *a = exports_lookup(t_reg, "disk", 4);
  struct export *b = exports_lookup(t_reg, "disk", 4);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT_PTR_EQUAL(a, b);
  CU_ASSERT_EQUAL(exports_remove(t_reg, "disk"), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 0);
  CU_ASSERT_PTR_NULL(exports_lookup(t_reg, "disk", 4));
  CU_ASSERT_STRING_EQUAL(export_name(a), "disk");
  uint8_t buf[4];
  int err;
  CU_ASSERT_EQUAL(export_pread(a, buf, 4, 0, false, &err), 0);
  export_put(a);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 0);
  export_put(b);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 1);
}

/* A name can be registered again after removal, while the old export is
 * still referenced; the two are distinct. */
static void
test_readd_after_remove(void)
{
  add("disk", 0);
  struct export *old = exports_lookup(t_reg, "disk", 4);
  CU_ASSERT_PTR_NOT_NULL_FATAL(old);
  CU_ASSERT_EQUAL(exports_remove(t_reg, "disk"), 0);
  add("disk", 1);
  struct export *cur = exports_lookup(t_reg, "disk", 4);
  CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
  CU_ASSERT(cur != old);
  CU_ASSERT_EQUAL(export_size(cur), 1001);
  CU_ASSERT_EQUAL(export_size(old), 1000);
  export_put(old);
  export_put(cur);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 1);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[1].closes), 0);
}

/* exports_free drops the registry's references only. */
static void
test_free_with_references(void)
{
  add("a", 0);
  add("b", 1);
  struct export *a = exports_lookup(t_reg, "a", 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  exports_free(t_reg);
  t_reg = NULL;
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[1].closes), 1);
  CU_ASSERT_STRING_EQUAL(export_name(a), "a");
  export_put(a);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 1);
}

static void
test_handle_if(void)
{
  static const struct export_ops other_ops = { .pread = stub_pread };
  struct export *exp = new_export("disk", 3);
  CU_ASSERT_PTR_EQUAL(export_handle_if(exp, &stub_ops), &t_stubs[3]);
  CU_ASSERT_PTR_NULL(export_handle_if(exp, &other_ops));
  export_put(exp);
}

/* Replacing an export: the old one loses the registry's reference (and
 * closes if that was the last), lookups find the new one. */
static void
test_replace(void)
{
  add("disk", 0);
  add("other", 2);
  struct export *held = exports_lookup(t_reg, "disk", 4);
  CU_ASSERT_PTR_NOT_NULL_FATAL(held);
  CU_ASSERT_EQUAL(exports_replace(t_reg, new_export("disk", 1)), 0);
  CU_ASSERT_EQUAL(exports_count(t_reg), 2);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 0); /* still held */
  struct export *cur = exports_lookup(t_reg, "disk", 4);
  CU_ASSERT_PTR_NOT_NULL_FATAL(cur);
  CU_ASSERT_EQUAL(export_size(cur), 1001);
  export_put(cur);
  export_put(held);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 1);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[1].closes), 0);

  /* Not held by anyone: closed by the replacement itself. */
  CU_ASSERT_EQUAL(exports_replace(t_reg, new_export("disk", 3)), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[1].closes), 1);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[2].closes), 0);
  CU_ASSERT_EQUAL(exports_count(t_reg), 2);
}

/* Replacing a name that is absent adds it, in order. */
static void
test_replace_adds(void)
{
  add("b", 0);
  CU_ASSERT_EQUAL(exports_replace(t_reg, new_export("a", 1)), 0);
  CU_ASSERT_EQUAL(exports_replace(t_reg, new_export("c", 2)), 0);
  CU_ASSERT_EQUAL(exports_count(t_reg), 3);
  struct export *exp = exports_lookup(t_reg, "a", 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_EQUAL(export_size(exp), 1001);
  export_put(exp);
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(atomic_load(&t_stubs[i].closes), 0);
}

/* Lookups racing with replacements always find one of the two. */
#define REPLACE_LOOPS 2000

static atomic_int replace_done;
static atomic_int replace_missed;

static void *
replace_lookup(void *arg)
{
  (void)arg;
  while (!atomic_load(&replace_done)) {
    struct export *exp = exports_lookup(t_reg, "disk", 4);
    if (exp == NULL)
      atomic_fetch_add(&replace_missed, 1);
    else
      export_put(exp);
  }
  return NULL;
}

static void
test_threads_replace(void)
{
  static struct stub stubs[REPLACE_LOOPS + 1];
  memset(stubs, 0, sizeof stubs);
  struct export *exp =
      export_new("disk", 1, 512, NULL, &stub_ops, &stubs[REPLACE_LOOPS]);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_EQUAL_FATAL(exports_add(t_reg, exp), 0);
  atomic_store(&replace_done, 0);
  atomic_store(&replace_missed, 0);
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    CU_ASSERT_FATAL(pthread_create(&th[i], NULL, replace_lookup, NULL) == 0);
  for (int i = 0; i < REPLACE_LOOPS; i++) {
    exp = export_new("disk", 1, 512, NULL, &stub_ops, &stubs[i]);
    if (exp == NULL || exports_replace(t_reg, exp) == -1)
      abort();
  }
  atomic_store(&replace_done, 1);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  CU_ASSERT_EQUAL(atomic_load(&replace_missed), 0);
  /* Every replaced export closed once; the last one is still registered. */
  int bad = 0;
  for (int i = 0; i < REPLACE_LOOPS - 1; i++)
    bad += atomic_load(&stubs[i].closes) != 1;
  bad += atomic_load(&stubs[REPLACE_LOOPS].closes) != 1;
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(atomic_load(&stubs[REPLACE_LOOPS - 1].closes), 0);
  exports_free(t_reg);
  t_reg = NULL;
  CU_ASSERT_EQUAL(atomic_load(&stubs[REPLACE_LOOPS - 1].closes), 1);
}

struct collect {
  char names[NSTUBS][16];
  int n, stop_at;
};

static int
collect_fn(struct export *exp, void *opaque)
{
  struct collect *c = opaque;
  if (c->n < NSTUBS)
    snprintf(c->names[c->n], sizeof c->names[0], "%s", export_name(exp));
  c->n++;
  return c->n == c->stop_at ? 42 : 0;
}

static void
test_foreach_order(void)
{
  /* Added out of order; listed by bytes, a prefix before its extensions. */
  static const char *const added[] = { "b", "ab", "c", "a", "B", "a0" };
  static const char *const want[] = { "B", "a", "a0", "ab", "b", "c" };
  for (int i = 0; i < 6; i++)
    add(added[i], i);
  CU_ASSERT_EQUAL(exports_count(t_reg), 6);
  struct collect c = { .stop_at = -1 };
  CU_ASSERT_EQUAL(exports_foreach(t_reg, collect_fn, &c), 0);
  CU_ASSERT_EQUAL_FATAL(c.n, 6);
  for (int i = 0; i < 6; i++)
    CU_ASSERT_STRING_EQUAL(c.names[i], want[i]);
}

static void
test_foreach_stops(void)
{
  add("x", 0);
  add("y", 1);
  add("z", 2);
  struct collect c = { .stop_at = 2 };
  CU_ASSERT_EQUAL(exports_foreach(t_reg, collect_fn, &c), 42);
  CU_ASSERT_EQUAL(c.n, 2);
  CU_ASSERT_STRING_EQUAL(c.names[1], "y");
}

static void
test_foreach_empty(void)
{
  struct collect c = { .stop_at = -1 };
  CU_ASSERT_EQUAL(exports_foreach(t_reg, collect_fn, &c), 0);
  CU_ASSERT_EQUAL(c.n, 0);
}

/* Growth past the initial capacity keeps every entry findable. */
static void
test_many_exports(void)
{
  static struct stub stubs[200];
  memset(stubs, 0, sizeof stubs);
  for (int i = 0; i < 200; i++) {
    char name[16];
    snprintf(name, sizeof name, "e%03d", (i * 37) % 200);
    struct export *exp = export_new(name, (uint64_t)(i * 37) % 200, 512,
                                    NULL, &stub_ops, &stubs[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
    CU_ASSERT_EQUAL_FATAL(exports_add(t_reg, exp), 0);
  }
  CU_ASSERT_EQUAL(exports_count(t_reg), 200);
  for (int i = 0; i < 200; i++) {
    char name[16];
    snprintf(name, sizeof name, "e%03d", i);
    struct export *exp = exports_lookup(t_reg, name, strlen(name));
    CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
    CU_ASSERT_EQUAL(export_size(exp), (uint64_t)i);
    export_put(exp);
  }
  for (int i = 0; i < 200; i += 2) {
    char name[16];
    snprintf(name, sizeof name, "e%03d", i);
    CU_ASSERT_EQUAL(exports_remove(t_reg, name), 0);
  }
  CU_ASSERT_EQUAL(exports_count(t_reg), 100);
  int closed = 0;
  for (int i = 0; i < 200; i++)
    closed += atomic_load(&stubs[i].closes);
  CU_ASSERT_EQUAL(closed, 100);
  exports_free(t_reg);
  t_reg = NULL;
  closed = 0;
  for (int i = 0; i < 200; i++) {
    CU_ASSERT_EQUAL(atomic_load(&stubs[i].closes), 1);
    closed += atomic_load(&stubs[i].closes);
  }
  CU_ASSERT_EQUAL(closed, 200);
}

/* Lookups and puts racing with a removal: close runs exactly once. */
#define RACE_THREADS 4
#define RACE_LOOPS 20000

static atomic_int race_found;

static void *
race_lookup(void *arg)
{
  (void)arg;
  for (int i = 0; i < RACE_LOOPS; i++) {
    struct export *exp = exports_lookup(t_reg, "disk", 4);
    if (exp) {
      atomic_fetch_add(&race_found, 1);
      if (export_size(exp) != 1000)
        abort();
      export_put(exp);
    }
  }
  return NULL;
}

static void
test_threads_lookup_remove(void)
{
  add("disk", 0);
  atomic_store(&race_found, 0);
  pthread_t th[RACE_THREADS];
  for (int i = 0; i < RACE_THREADS; i++)
    CU_ASSERT_FATAL(pthread_create(&th[i], NULL, race_lookup, NULL) == 0);
  while (atomic_load(&race_found) < 100)
    ;
  CU_ASSERT_EQUAL(exports_remove(t_reg, "disk"), 0);
  for (int i = 0; i < RACE_THREADS; i++)
    pthread_join(th[i], NULL);
  CU_ASSERT_EQUAL(atomic_load(&t_stubs[0].closes), 1);
  CU_ASSERT(atomic_load(&race_found) >= 100);
}

#define T(name) { #name, test_##name }

static const struct cunit_test tests[] = {
  T(new_accessors),
  T(null_description),
  T(name_copied),
  T(pread_and_cache_pass_through),
  T(cache_without_callback),
  T(put_null),
  T(add_lookup),
  T(add_duplicate),
  T(add_same_object_twice),
  T(lookup_exact_bytes),
  T(lookup_empty_registry),
  T(lookup_high_bytes),
  T(remove),
  T(remove_unknown),
  T(reference_outlives_removal),
  T(readd_after_remove),
  T(free_with_references),
  T(handle_if),
  T(replace),
  T(replace_adds),
  T(threads_replace),
  T(foreach_order),
  T(foreach_stops),
  T(foreach_empty),
  T(many_exports),
  T(threads_lookup_remove),
};

int
main(void)
{
  static const struct cunit_suite suite = {
    "export", NULL, NULL, test_setup, test_teardown,
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
