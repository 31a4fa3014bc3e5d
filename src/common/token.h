/* thunder — bearer tokens: reading and checking them.
 *
 * A token is 16..256 printable ASCII characters without spaces.  A token
 * file holds one, surrounding whitespace ignored, and must not be
 * readable or writable by others (mode & 0007 == 0) since it grants
 * control of the node.
 */
#ifndef THUNDER_TOKEN_H
#define THUNDER_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKEN_MIN 16
#define TOKEN_MAX 256
/* Largest token file read. */
#define TOKEN_FILE_MAX 4096

/* Checks the token in s[0..len) (surrounding whitespace ignored) and
 * returns a heap copy; from names its source in the message.  NULL with
 * one message in err (errlen bytes). */
char *token_parse(const char *s, size_t len, const char *from, char *err,
                  size_t errlen);

/* Reads and checks the token file at path.  NULL with one message naming
 * the file in err. */
char *token_read_file(const char *path, char *err, size_t errlen);

/* Checks an Authorization header value ("Bearer TOKEN", the scheme in any
 * case, blanks around the token ignored) against a token's SHA-256
 * (digest_sha256 of the token).  Both sides are hashed and the digests
 * compared in full, so the time taken says nothing about the token. */
bool token_bearer_ok(const char *header, const uint8_t digest[32]);

#endif
