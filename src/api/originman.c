/* thunder — thunder-api reads an image's manifest from the origin (export
 * NAME@manifest, docs/manifest.md) to learn its version and size.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "cleanup.h"
#include "digest.h"
#include "manifest.h"
#include "originman.h"

int
origin_manifest(const char *origin, const char *name,
                char version[DIGEST_HEX_LEN + 1], uint64_t *size, char *err,
                size_t errlen)
{
  char export[MANIFEST_NAME_MAX + sizeof MANIFEST_EXPORT_SUFFIX];
  snprintf(export, sizeof export, "%s%s", name, MANIFEST_EXPORT_SUFFIX);

  struct nbd_handle *h = nbd_create();
  if (h == NULL) {
    snprintf(err, errlen, "nbd_create: %s", nbd_get_error());
    errno = ENOMEM;
    return -1;
  }
  CLEANUP_FREE char *buf = NULL;
  int r = -1, e = EIO;
  int64_t msize;

  nbd_set_uri_allow_local_file(h, false);
  if (nbd_set_opt_mode(h, true) == -1 || nbd_connect_uri(h, origin) == -1) {
    snprintf(err, errlen, "cannot connect to the origin %s: %s", origin,
             nbd_get_error());
    e = ECONNREFUSED;
    goto out;
  }
  if (nbd_set_export_name(h, export) == -1 || nbd_opt_go(h) == -1) {
    snprintf(err, errlen, "the origin %s has no image '%s' (no export %s)",
             origin, name, export);
    e = ENOENT;
    goto out;
  }
  msize = nbd_get_size(h);
  if (msize <= 0 || (uint64_t)msize > MANIFEST_FILE_MAX) {
    snprintf(err, errlen, "the origin %s: export %s has size %" PRId64
             "; a manifest is 1 to %zu bytes", origin, export, msize,
             (size_t)MANIFEST_FILE_MAX);
    e = EPROTO;
    goto out;
  }
  buf = malloc((size_t)msize);
  if (buf == NULL) {
    snprintf(err, errlen, "out of memory for a manifest of %" PRId64 " bytes",
             msize);
    e = ENOMEM;
    goto out;
  }
  for (int64_t off = 0; off < msize;) {
    size_t n = (size_t)(msize - off) < 4u * 1024 * 1024
                   ? (size_t)(msize - off) : 4u * 1024 * 1024;
    if (nbd_pread(h, buf + off, n, (uint64_t)off, 0) == -1) {
      snprintf(err, errlen, "reading %s from the origin %s: %s", export,
               origin, nbd_get_error());
      e = EIO;
      goto out;
    }
    off += (int64_t)n;
  }
  nbd_shutdown(h, 0);

  char where[512];
  snprintf(where, sizeof where, "%.200s export %s", origin, export);
  struct manifest *m = manifest_parse(buf, (size_t)msize, where);
  if (m == NULL) {
    snprintf(err, errlen, "%s is not a valid manifest", where);
    e = EPROTO;
    goto out;
  }
  if (strcmp(m->name, name) != 0) {
    snprintf(err, errlen, "%s is the manifest of image '%s'", where, m->name);
    manifest_free(m);
    e = EPROTO;
    goto out;
  }
  *size = m->size;
  manifest_free(m);
  uint8_t d[DIGEST_LEN];
  digest_sha256(buf, (size_t)msize, d);
  digest_to_hex(d, version);
  r = 0;
out:
  nbd_close(h);
  if (r == -1)
    errno = e;
  return r;
}
