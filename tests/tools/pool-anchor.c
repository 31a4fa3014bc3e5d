/* thunder tests — pool-anchor: anchors in a libvirt pool through pool.h,
 * standing in for thunderd's attach and detach.
 *
 * Usage: pool-anchor ensure POOL PATH IMAGE SIZE FORMAT SOCKET
 *        pool-anchor remove POOL PATH IMAGE
 *        pool-anchor dependents POOL PATH IMAGE
 *        pool-anchor kvm
 *   POOL, PATH  the pool's name and directory (pool_open ensures it)
 *   IMAGE       the image; its anchor is PATH/IMAGE.base
 *   SIZE        the image's virtual size in bytes (K, M, G, T suffixes)
 *   FORMAT      raw or qcow2
 *   SOCKET      the thunderd Unix socket serving IMAGE
 * The libvirt URI comes from $THUNDER_LIBVIRT_URI (default qemu:///system).
 *
 * dependents prints one volume name per line; kvm prints "usable" or
 * "unusable" (pool_kvm_usable) and the milliseconds it took.  Errors:
 * "pool-anchor: CODE: message" on stderr, CODE being the pool_errcode
 * (BUSY, NOT_FOUND, ...), and exit 1; bad usage exits 2.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool.h"

static const char *
code_name(enum pool_errcode c)
{
  switch (c) {
  case POOL_ERR_NONE: return "NONE";
  case POOL_ERR_LIBVIRT: return "LIBVIRT";
  case POOL_ERR_CONFLICT: return "CONFLICT";
  case POOL_ERR_NOT_FOUND: return "NOT_FOUND";
  case POOL_ERR_BUSY: return "BUSY";
  case POOL_ERR_INVALID: return "INVALID";
  case POOL_ERR_SYSTEM: return "SYSTEM";
  }
  return "?";
}

static int
failed(const struct pool_error *e)
{
  fprintf(stderr, "pool-anchor: %s: %s\n", code_name(e->code), e->msg);
  return 1;
}

static int
usage(void)
{
  fprintf(stderr, "usage: pool-anchor ensure POOL PATH IMAGE SIZE FORMAT SOCKET\n"
                  "       pool-anchor remove|dependents POOL PATH IMAGE\n"
                  "       pool-anchor kvm\n");
  return 2;
}

int
main(int argc, char **argv)
{
  if (argc == 2 && strcmp(argv[1], "kvm") == 0) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    bool ok = pool_kvm_usable();
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%s %ld\n", ok ? "usable" : "unusable",
           (long)((b.tv_sec - a.tv_sec) * 1000 +
                  (b.tv_nsec - a.tv_nsec) / 1000000));
    return 0;
  }
  if (argc < 5)
    return usage();
  const char *cmd = argv[1];
  bool ensure = strcmp(cmd, "ensure") == 0;
  if (ensure ? argc != 8
             : argc != 5 || (strcmp(cmd, "remove") != 0 &&
                             strcmp(cmd, "dependents") != 0))
    return usage();

  struct pool_anchor_spec spec = { .image = argv[4] };
  if (ensure) {
    if (pool_parse_size(argv[5], &spec.size) < 0) {
      fprintf(stderr, "pool-anchor: SIZE '%s' is not a size\n", argv[5]);
      return 2;
    }
    spec.format = argv[6];
    spec.socket_path = argv[7];
  }

  struct pool_config cfg = {
    .uri = getenv("THUNDER_LIBVIRT_URI"),
    .name = argv[2],
    .path = argv[3],
  };
  struct pool_error e;
  struct pool *p = pool_open(&cfg, &e);
  if (p == NULL)
    return failed(&e);
  int r = 0;
  if (ensure) {
    if (pool_anchor_ensure(p, &spec, &e) < 0)
      r = failed(&e);
  } else if (strcmp(cmd, "remove") == 0) {
    if (pool_anchor_remove(p, spec.image, &e) < 0)
      r = failed(&e);
  } else {
    size_t n;
    char **v = pool_dependents(p, spec.image, &n, &e);
    if (v == NULL) {
      r = failed(&e);
    } else {
      for (size_t i = 0; i < n; i++)
        printf("%s\n", v[i]);
      pool_strv_free(v);
    }
  }
  pool_close(p);
  return r;
}
