/* thunder — the one manifest client: reads an image's manifest (the NBD
 * export NAME@manifest, docs/manifest.md) from an origin or node over
 * libnbd, bounded in time and size.  Used by thunder-api (originman.c),
 * thunderctl (image attach without --version) and thunderd's fetcher
 * (fetch_manifest).
 *
 * Bounded: libnbd's aio calls with poll timeouts, so a peer that accepts
 * and never answers cannot hang the caller: the connection and the
 * handshake, the option request and each read of at most 4 MiB must each
 * finish within timeout_ms.  The export's size must be that of a manifest
 * (1 to MANIFEST_FILE_MAX bytes).  A remote-facing caller (thunder-api,
 * whose URIs come from requests) passes MANCLIENT_REMOTE: only TCP
 * transports and no URI parameter that reads a local file.
 *
 * Thread-safe: each call has its own handle.
 */
#ifndef THUNDER_MANCLIENT_H
#define THUNDER_MANCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

enum manclient_result {
  MANCLIENT_OK,
  MANCLIENT_UNKNOWN, /* the server has no such export (no such image) */
  MANCLIENT_FAILED,  /* unreachable, timed out, refused, or not a manifest */
};

/* Flags. */
enum {
  MANCLIENT_REMOTE = 1, /* TCP only, no local files named by the URI */
};

/* Reads image name's manifest from the NBD server at uri (any export in
 * the URI is replaced by NAME@manifest) into *bytes (malloc'ed) and *len.
 * On failure a message naming uri and the export in err. */
enum manclient_result manclient_fetch(const char *uri, const char *name,
                                      unsigned timeout_ms, unsigned flags,
                                      char **bytes, size_t *len, char *err,
                                      size_t errlen);

/* manclient_fetch, then checks that the bytes are a valid manifest of
 * image name, and writes its SHA-256 (the image version) and the image's
 * size.  MANCLIENT_FAILED also for a manifest that is invalid or of
 * another image. */
enum manclient_result manclient_version(const char *uri, const char *name,
                                        unsigned timeout_ms, unsigned flags,
                                        char version[DIGEST_HEX_LEN + 1],
                                        uint64_t *size, char *err,
                                        size_t errlen);

#endif
