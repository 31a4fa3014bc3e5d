/* thunder — thunder-api reads an image's manifest from the origin to learn
 * its version and size (common/manclient.h, remote-facing: TCP only). */
#ifndef THUNDER_ORIGINMAN_H
#define THUNDER_ORIGINMAN_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

/* Seconds each step of reading a manifest from the origin may take. */
#define ORIGINMAN_TIMEOUT_MS 10000

/* Reads image name's manifest from the origin at origin (nbd://HOST:PORT,
 * or nbds://HOST:PORT over TLS with thunder-api's --tls-certificates,
 * export NAME@manifest), checks it is a valid manifest of that image, and
 * writes its SHA-256 (the image version) and the image's size.  0, or -1
 * with err and errno: ENOENT (the origin has no such image), EPROTO (it
 * cannot be reached, does not answer in time, or what it serves is not
 * that image's manifest). */
int originman_manifest(const char *origin, const char *name,
                       char version[DIGEST_HEX_LEN + 1], uint64_t *size,
                       char *err, size_t errlen);

#endif
