/* thunder — TLS mode and certificate directory; see tlsdir.h. */
#include "tlsdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pki.h" /* the file names only */

int
tlsdir_mode_parse(const char *s, enum tlsdir_mode *mode)
{
  if (s == NULL || strcmp(s, "off") == 0)
    *mode = TLSDIR_OFF;
  else if (strcmp(s, "on") == 0)
    *mode = TLSDIR_ON;
  else if (strcmp(s, "require") == 0)
    *mode = TLSDIR_REQUIRE;
  else
    return -1;
  return 0;
}

const char *
tlsdir_mode_name(enum tlsdir_mode mode)
{
  return mode == TLSDIR_REQUIRE ? "require" : mode == TLSDIR_ON ? "on" : "off";
}

int
tlsdir_path(const char *dir, const char *file, char *buf, size_t len,
            char *err, size_t errlen)
{
  int n = snprintf(buf, len, "%s/%s", dir, file);
  if (n < 0 || (size_t)n >= len) {
    snprintf(err, errlen, "%s/%s: path too long", dir, file);
    return -1;
  }
  if (access(buf, R_OK) == -1) {
    snprintf(err, errlen, "%s: %s", buf, strerror(errno));
    return -1;
  }
  return 0;
}

/* Reads dir/file whole (a PEM block); a secret (a key) must not be
 * readable or writable by others, as token files.  NULL with err. */
static char *
read_pem(const char *dir, const char *file, bool secret, char *err,
         size_t errlen)
{
  char path[4096];
  if (tlsdir_path(dir, file, path, sizeof path, err, errlen) == -1)
    return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd == -1 || fstat(fd, &st) == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    if (fd != -1)
      close(fd);
    return NULL;
  }
  if (secret && (st.st_mode & 0007) != 0) {
    snprintf(err, errlen, "%s: a key readable or writable by others (mode %04o): chmod o-rwx it",
             path, (unsigned)(st.st_mode & 07777));
    close(fd);
    return NULL;
  }
  if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > TLSDIR_PEM_MAX) {
    snprintf(err, errlen, "%s: not a regular file of 1 to %d bytes", path,
             TLSDIR_PEM_MAX);
    close(fd);
    return NULL;
  }
  size_t len = (size_t)st.st_size, got = 0;
  char *buf = malloc(len + 1);
  while (buf && got < len) {
    ssize_t r = read(fd, buf + got, len - got);
    if (r <= 0) {
      snprintf(err, errlen, "%s: %s", path, r == 0 ? "shorter than its size" : strerror(errno));
      free(buf);
      close(fd);
      return NULL;
    }
    got += (size_t)r;
  }
  close(fd);
  if (buf == NULL) {
    snprintf(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  buf[len] = '\0';
  if (strlen(buf) != len || strstr(buf, "-----BEGIN ") == NULL) {
    snprintf(err, errlen, "%s: not a PEM file", path);
    free(buf);
    return NULL;
  }
  return buf;
}

int
tlsdir_load_server(const char *dir, struct tlsdir_server *out, char *err,
                   size_t errlen)
{
  memset(out, 0, sizeof *out);
  if ((out->ca = read_pem(dir, PKI_CA_CERT, false, err, errlen)) == NULL ||
      (out->cert = read_pem(dir, PKI_SERVER_CERT, false, err, errlen)) == NULL ||
      (out->key = read_pem(dir, PKI_SERVER_KEY, true, err, errlen)) == NULL) {
    tlsdir_server_free(out);
    return -1;
  }
  return 0;
}

void
tlsdir_server_free(struct tlsdir_server *s)
{
  free(s->ca);
  free(s->cert);
  if (s->key) {
    explicit_bzero(s->key, strlen(s->key));
    free(s->key);
  }
  memset(s, 0, sizeof *s);
}

int
tlsdir_load_client(const char *dir, struct tlsdir_client *out, char *err,
                   size_t errlen)
{
  memset(out, 0, sizeof *out);
  if (tlsdir_path(dir, PKI_CA_CERT, out->cacert, sizeof out->cacert, err,
                  errlen) == -1)
    return -1;
  char probe[4096];
  int n = snprintf(probe, sizeof probe, "%s/%s", dir, PKI_CLIENT_CERT);
  if (n < 0 || (size_t)n >= sizeof probe || access(probe, F_OK) == -1)
    return 0;
  /* The key is handed to libcurl by name; read it once here for the rule
   * read_pem applies to the server key (not readable by others). */
  char *key = NULL;
  if (tlsdir_path(dir, PKI_CLIENT_CERT, out->cert, sizeof out->cert, err,
                  errlen) == -1 ||
      tlsdir_path(dir, PKI_CLIENT_KEY, out->key, sizeof out->key, err,
                  errlen) == -1 ||
      (key = read_pem(dir, PKI_CLIENT_KEY, true, err, errlen)) == NULL) {
    out->cert[0] = out->key[0] = '\0';
    return -1;
  }
  explicit_bzero(key, strlen(key));
  free(key);
  return 0;
}
