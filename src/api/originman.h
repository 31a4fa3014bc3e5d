/* thunder — an image's manifest as the origin serves it. */
#ifndef THUNDER_ORIGINMAN_H
#define THUNDER_ORIGINMAN_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

/* Reads image name's manifest from the origin at origin (nbd://HOST:PORT,
 * export NAME@manifest), checks it is a valid manifest of that image, and
 * writes its SHA-256 (the image version) and the image's size.  0, or -1
 * with err and errno: ECONNREFUSED (the origin cannot be reached), ENOENT
 * (it has no such image), EPROTO (what it serves is not that image's
 * manifest), EIO, ENOMEM. */
int origin_manifest(const char *origin, const char *name,
                    char version[DIGEST_HEX_LEN + 1], uint64_t *size,
                    char *err, size_t errlen);

#endif
