/* thunder — image manifests.
 *
 * A manifest describes one image file: its size, format (raw or qcow2,
 * detected from the content), block size and the SHA-256 of every block
 * (the last block may be short).  It is a JSON document (docs/manifest.md,
 * schemas/manifest.schema.json) stored beside the image as
 * NAME.manifest.json.  The SHA-256 of the manifest file's exact bytes is
 * the image's version: caches are keyed by it.
 *
 * A struct manifest is immutable once built or parsed, so any number of
 * threads may read it without locking.
 */
#ifndef THUNDER_MANIFEST_H
#define THUNDER_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"

#define MANIFEST_FORMAT_VERSION 1
#define MANIFEST_SUFFIX ".manifest.json"
#define MANIFEST_BLOCK_SIZE_DEFAULT (64u * 1024)
#define MANIFEST_BLOCK_SIZE_MIN (4u * 1024)
#define MANIFEST_BLOCK_SIZE_MAX (4u * 1024 * 1024)
/* At most this many blocks (256 GiB at 64 KiB blocks, 16 TiB at 4 MiB). */
#define MANIFEST_BLOCKS_MAX (1u << 22)
/* Largest manifest file accepted: the JSON of MANIFEST_BLOCKS_MAX blocks. */
#define MANIFEST_FILE_MAX ((size_t)MANIFEST_BLOCKS_MAX * 70 + 65536)
/* Longest image name. */
#define MANIFEST_NAME_MAX 255
/* Every server of an image (origin or node) also serves its manifest's
 * bytes as the NBD export NAME@manifest ('@' is never in an image name),
 * so a node fetches the manifest along the same upstream path as blocks. */
#define MANIFEST_EXPORT_SUFFIX "@manifest"
/* Room for an export name NAME@manifest. */
#define MANIFEST_EXPORT_NAME_MAX (MANIFEST_NAME_MAX + sizeof MANIFEST_EXPORT_SUFFIX)

enum image_format {
  IMAGE_FORMAT_RAW,
  IMAGE_FORMAT_QCOW2,
};

struct manifest {
  char *name;           /* image name = NBD export name */
  char *file;           /* image file name, in the manifest's directory */
  uint64_t size;        /* image size in bytes, > 0 */
  enum image_format format;
  uint32_t block_size;  /* power of two, MIN..MAX */
  uint64_t nblocks;     /* ceil(size / block_size) */
  uint8_t (*digests)[DIGEST_LEN]; /* nblocks digests */
  uint8_t version[DIGEST_LEN];    /* SHA-256 of the manifest's bytes */
  char version_hex[DIGEST_HEX_LEN + 1];
};

/* "raw" or "qcow2". */
const char *image_format_name(enum image_format format);

/* True if name is a valid image name: 1..MANIFEST_NAME_MAX bytes of
 * [A-Za-z0-9._-], not starting with '.' or '-'. */
bool manifest_name_valid(const char *name);
/* That rule in words, for error messages. */
#define MANIFEST_NAME_RULE \
  "1-255 characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'"

/* The name of image name's manifest export, NAME@manifest, into buf
 * (MANIFEST_EXPORT_NAME_MAX bytes).  Returns buf. */
char *manifest_export_name(const char *name,
                           char buf[MANIFEST_EXPORT_NAME_MAX]);

/* Detects the format of the open image from its first bytes (qcow2 magic
 * "QFI\xfb" with version 2 or 3, else raw).  -1 with a logged error if
 * the file cannot be read. */
int manifest_detect_format(int fd, const char *path, enum image_format *out);

/* Hashes the image at path into a new manifest named name, using up to
 * threads threads (0 = one per CPU).  The version is not set until the
 * manifest is serialized (manifest_write or manifest_serialize).
 * NULL with a logged error on failure. */
struct manifest *manifest_build(const char *name, const char *path,
                                uint32_t block_size, unsigned threads);

/* Serializes m as JSON and sets m->version from the bytes.  Returns a
 * heap buffer of *len bytes, or NULL on failure. */
char *manifest_serialize(struct manifest *m, size_t *len);

/* Writes m to path atomically (temporary file, fsync, rename, fsync of
 * the directory) and sets m->version.  0, or -1 with a logged error. */
int manifest_write(struct manifest *m, const char *path);

/* Parses and validates a manifest; origin names it in error messages
 * ("FILE: field 'blocks': ...").  The version is SHA-256(buf).  NULL with
 * a logged error if anything is wrong. */
struct manifest *manifest_parse(const char *buf, size_t len,
                                const char *origin);

/* Reads and parses the manifest file at path (at most MANIFEST_FILE_MAX
 * bytes). */
struct manifest *manifest_load(const char *path);

/* Like manifest_load, and on success also hands over the file's exact
 * bytes (*bytes, heap; their SHA-256 is the version). */
struct manifest *manifest_load_bytes(const char *path, char **bytes,
                                     size_t *len);

/* True if data[0..len) is block idx of the image: len is that block's
 * length and its SHA-256 matches. */
bool manifest_block_ok(const struct manifest *m, uint64_t idx,
                       const void *data, size_t len);

/* Length of block idx (block_size, or less for the last block). */
uint32_t manifest_block_len(const struct manifest *m, uint64_t idx);

void manifest_free(struct manifest *m);

#endif
