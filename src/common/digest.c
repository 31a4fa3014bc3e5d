/* thunder — SHA-256 helpers over nettle; see digest.h. */
#include "digest.h"

#include <nettle/sha2.h>

_Static_assert(SHA256_DIGEST_SIZE == DIGEST_LEN, "DIGEST_LEN is not SHA-256's");
_Static_assert(DIGEST_HEX_LEN == 2 * DIGEST_LEN, "DIGEST_HEX_LEN");

void
digest_sha256(const void *data, size_t len, uint8_t out[DIGEST_LEN])
{
  struct sha256_ctx ctx;

  sha256_init(&ctx);
  sha256_update(&ctx, len, data);
  sha256_digest(&ctx, DIGEST_LEN, out);
}

void
digest_to_hex(const uint8_t d[DIGEST_LEN], char hex[DIGEST_HEX_LEN + 1])
{
  static const char digits[] = "0123456789abcdef";

  for (size_t i = 0; i < DIGEST_LEN; i++) {
    hex[2 * i] = digits[d[i] >> 4];
    hex[2 * i + 1] = digits[d[i] & 0xf];
  }
  hex[DIGEST_HEX_LEN] = '\0';
}

int
digest_hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Reads at most DIGEST_HEX_LEN + 1 bytes of s: a NUL anywhere before that
 * ends the scan, so a short string is never overrun. */
int
digest_from_hex(const char *s, uint8_t out[DIGEST_LEN])
{
  uint8_t d[DIGEST_LEN];

  if (s == NULL)
    return -1;
  for (size_t i = 0; i < DIGEST_LEN; i++) {
    int hi = digest_hex_value(s[2 * i]);
    if (hi < 0)
      return -1;
    int lo = digest_hex_value(s[2 * i + 1]);
    if (lo < 0)
      return -1;
    d[i] = (uint8_t)(hi << 4 | lo);
  }
  if (s[DIGEST_HEX_LEN] != '\0')
    return -1;
  for (size_t i = 0; i < DIGEST_LEN; i++)
    out[i] = d[i];
  return 0;
}
