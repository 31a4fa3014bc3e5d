/* thunder — SHA-256 helpers over nettle (GnuTLS's hashing library, which
 * uses the CPU's SHA extensions where present). */
#ifndef THUNDER_DIGEST_H
#define THUNDER_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_LEN 32
#define DIGEST_HEX_LEN 64

/* out = SHA-256(data[0..len)). */
void digest_sha256(const void *data, size_t len, uint8_t out[DIGEST_LEN]);

/* Writes the lowercase hex form and a NUL into hex[DIGEST_HEX_LEN + 1]. */
void digest_to_hex(const uint8_t d[DIGEST_LEN], char hex[DIGEST_HEX_LEN + 1]);

/* Parses exactly 64 hex digits (either case); -1 if s is anything else. */
int digest_from_hex(const char *s, uint8_t out[DIGEST_LEN]);

/* The value of one hex digit (either case), or -1. */
int digest_hex_value(char c);

#endif
