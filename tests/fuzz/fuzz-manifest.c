/* thunder — libFuzzer target for the manifest parser (src/common/manifest.c).
 *
 * The input is a manifest file's bytes, as a node reads them from its
 * upstream (NAME@manifest) or an origin from its image directory.
 * manifest_parse must refuse anything malformed with a message and no
 * leak; what it accepts must serialize and parse again to the same
 * manifest (size, block size, format, digests; the version of the
 * re-serialized bytes is their own SHA-256), and every block length must
 * lie within the image.
 *
 * Seeds: tests/fuzz/corpus/manifest/ (manifests thunderctl image add
 * wrote, and variants).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manifest.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  log_init("fuzz-manifest", "stderr");
  return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct manifest *m = manifest_parse((const char *)data, size, "fuzz");
  if (m == NULL)
    return 0;
  size_t len = 0;
  char *again = manifest_serialize(m, &len);
  if (again == NULL)
    abort();
  struct manifest *m2 = manifest_parse(again, len, "fuzz (re-serialized)");
  if (m2 == NULL || m2->size != m->size || m2->block_size != m->block_size ||
      m2->format != m->format || m2->nblocks != m->nblocks ||
      strcmp(m2->name, m->name) != 0 || strcmp(m2->file, m->file) != 0 ||
      memcmp(m2->digests, m->digests, m->nblocks * DIGEST_LEN) != 0)
    abort();
  uint64_t total = 0;
  for (uint64_t i = 0; i < m->nblocks; i++)
    total += manifest_block_len(m, i);
  if (total != m->size)
    abort();
  free(again);
  manifest_free(m2);
  manifest_free(m);
  return 0;
}
