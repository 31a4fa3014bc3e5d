/* thunder — bearer tokens; see token.h. */
#include "digest.h"
#include "token.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"

static bool
is_space(char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

char *
token_parse(const char *s, size_t len, const char *from, char *err,
            size_t errlen)
{
  size_t start = 0, end = len;
  while (start < end && is_space(s[start]))
    start++;
  while (end > start && is_space(s[end - 1]))
    end--;
  for (size_t i = start; i < end; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 0x20 || c >= 0x7f) {
      snprintf(err, errlen, "%s: byte 0x%02x at offset %zu; the token must be"
               " one line of printable characters without spaces", from, c, i);
      return NULL;
    }
  }
  size_t tlen = end - start;
  if (tlen < TOKEN_MIN || tlen > TOKEN_MAX) {
    snprintf(err, errlen, "%s: token of %zu characters; it must have %d to %d",
             from, tlen, TOKEN_MIN, TOKEN_MAX);
    return NULL;
  }
  char *t = strndup(s + start, tlen);
  if (t == NULL)
    snprintf(err, errlen, "%s: strndup: %s", from, strerror(errno));
  return t;
}

char *
token_read_file(const char *path, char *err, size_t errlen)
{
  CLEANUP_CLOSE int fd =
      open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) == -1) {
    snprintf(err, errlen, "token file %s: fstat: %s", path, strerror(errno));
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "token file %s: not a regular file", path);
    return NULL;
  }
  if ((st.st_mode & 0007) != 0) {
    snprintf(err, errlen, "token file %s: mode %04o lets other users read or"
             " write it; use 0600 or 0640 (chmod o-rwx)", path,
             (unsigned)(st.st_mode & 07777));
    return NULL;
  }
  char buf[TOKEN_FILE_MAX + 1];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, sizeof buf - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(err, errlen, "token file %s: read: %s", path, strerror(errno));
      explicit_bzero(buf, sizeof buf);
      return NULL;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len > TOKEN_FILE_MAX) {
      snprintf(err, errlen, "token file %s: larger than %d bytes", path,
               TOKEN_FILE_MAX);
      explicit_bzero(buf, sizeof buf);
      return NULL;
    }
  }
  char from[256];
  snprintf(from, sizeof from, "token file %s", path);
  char *t = token_parse(buf, len, from, err, errlen);
  explicit_bzero(buf, sizeof buf);
  return t;
}

bool
token_bearer_ok(const char *h, const uint8_t digest[32])
{
  if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
    return false;
  const char *t = h + 7;
  while (*t == ' ' || *t == '\t')
    t++;
  size_t n = strlen(t);
  while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
    n--;
  uint8_t d[DIGEST_LEN];
  digest_sha256(t, n, d);
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < DIGEST_LEN; i++)
    diff |= (uint8_t)(d[i] ^ digest[i]);
  return diff == 0;
}
