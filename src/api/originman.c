/* thunder — thunder-api reads an image's manifest from the origin; see
 * originman.h. */
#include "originman.h"

#include <errno.h>
#include <stdio.h>

#include "manclient.h"
#include "manifest.h"

int
originman_manifest(const char *origin, const char *name,
                   char version[DIGEST_HEX_LEN + 1], uint64_t *size,
                   char *err, size_t errlen)
{
  enum manclient_result r =
      manclient_version(origin, name, ORIGINMAN_TIMEOUT_MS, MANCLIENT_REMOTE,
                        version, size, err, errlen);
  if (r == MANCLIENT_OK)
    return 0;
  if (r == MANCLIENT_UNKNOWN) {
    char export[MANIFEST_EXPORT_NAME_MAX];
    snprintf(err, errlen, "the origin %.512s has no image '%s' (no export %s)",
             origin, name, manifest_export_name(name, export));
    errno = ENOENT;
    return -1;
  }
  errno = EPROTO;
  return -1;
}
