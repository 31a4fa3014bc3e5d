/* thunder — the one manifest client; see manclient.h.
 *
 * The steps, each under its own deadline of timeout_ms:
 *   nbd_aio_connect_uri (option mode: stops once the greeting is in)
 *   nbd_aio_opt_go on NAME@manifest (an error ENOENT: no such export)
 *   nbd_aio_pread of each chunk of at most MANCLIENT_CHUNK bytes
 * run_until drives the state machine with nbd_poll(timeout) until the
 * step is done, the handle dies or the deadline passes.
 */
#include "manclient.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "clock.h"
#include "manifest.h"

#define MANCLIENT_CHUNK (4u * 1024 * 1024)

/* Runs h until *flag (or, without a flag, the end of the handshake or of
 * option mode's first stop).  0, or -1 with *why. */
static int
run_until(struct nbd_handle *h, const bool *flag, int64_t deadline,
          const char **why)
{
  for (;;) {
    if (flag ? *flag
             : nbd_aio_is_negotiating(h) == 1 || nbd_aio_is_ready(h) == 1)
      return 0;
    if (nbd_aio_is_dead(h) == 1 || nbd_aio_is_closed(h) == 1) {
      *why = nbd_get_error();
      if (*why == NULL)
        *why = "connection closed";
      return -1;
    }
    int64_t left = deadline - clock_mono_ms();
    if (left <= 0) {
      *why = "timed out";
      return -1;
    }
    if (nbd_poll(h, left > INT_MAX ? INT_MAX : (int)left) == -1) {
      *why = nbd_get_error();
      return -1;
    }
  }
}

struct op_result {
  bool done;
  int err;
};

static int
op_done(void *user_data, int *error)
{
  struct op_result *o = user_data;
  o->done = true;
  o->err = *error;
  return 1;
}

static const char *tls_certificates;

void
manclient_set_tls_certificates(const char *dir)
{
  tls_certificates = dir;
}

int
manclient_tls(struct nbd_handle *h, const char *uri)
{
  if (tls_certificates == NULL || strncmp(uri, "nbds", 4) != 0)
    return 0;
  return nbd_set_tls_certificates(h, tls_certificates);
}

/* A connection to an nbds:// uri lost before the export opened: under
 * TLS 1.3 the server checks the client's certificate after the client's
 * side of the handshake ended, so a refused certificate shows here only
 * as a closed connection.  Says so in msg, and points *why at it. */
static void
tls_hint(const char *uri, const char **why, char *msg, size_t msglen)
{
  if (strncmp(uri, "nbds", 4) != 0 ||
      strcmp(*why, "timed out") == 0)
    return;
  char reason[256];
  snprintf(reason, sizeof reason, "%.200s", *why);
  snprintf(msg, msglen, "%s (the TLS server closed the connection: it may"
           " have refused this client's certificate; %s%s should hold a"
           " client-cert.pem of the server's CA)", reason,
           tls_certificates ? tls_certificates : "libnbd's default directory",
           tls_certificates ? "" : " (none set)");
  *why = msg;
}

/* Connects h to uri and opens export; MANCLIENT_OK, or a failure with
 * *why (msg holds it when it is ours). */
static enum manclient_result
open_export(struct nbd_handle *h, const char *uri, const char *export,
            unsigned timeout_ms, unsigned flags, const char **why, char *msg,
            size_t msglen)
{
  if (((flags & MANCLIENT_REMOTE) &&
       (nbd_set_uri_allow_local_file(h, false) == -1 ||
        nbd_set_uri_allow_transports(h, LIBNBD_ALLOW_TRANSPORT_TCP) == -1)) ||
      nbd_set_opt_mode(h, true) == -1 ||
      nbd_set_request_structured_replies(h, false) == -1 ||
      manclient_tls(h, uri) == -1 ||
      nbd_aio_connect_uri(h, uri) == -1) {
    *why = nbd_get_error();
    return MANCLIENT_FAILED;
  }
  if (run_until(h, NULL, clock_mono_ms() + timeout_ms, why) == -1)
    return MANCLIENT_FAILED;
  struct op_result go = { 0 };
  if (nbd_set_export_name(h, export) == -1 ||
      nbd_aio_opt_go(h, (nbd_completion_callback){ .callback = op_done,
                                                   .user_data = &go }) == -1) {
    *why = nbd_get_error();
    return MANCLIENT_FAILED;
  }
  if (run_until(h, &go.done, clock_mono_ms() + timeout_ms, why) == -1)
    return MANCLIENT_FAILED;
  if (go.err != 0 || nbd_aio_is_ready(h) != 1) {
    /* libnbd reports NBD_REP_ERR_TLS_REQD as ENOTSUP and keeps the
     * server's message to its debug output: say what it likely is. */
    bool plain = strncmp(uri, "nbd://", 6) == 0;
    snprintf(msg, msglen, "%s%s", go.err ? strerror(go.err) : "not available",
             go.err == ENOTSUP && plain
                 ? " (what a server that requires TLS answers a plaintext"
                   " client: is it nbds://?)"
                 : "");
    *why = msg;
    /* NBD_REP_ERR_UNKNOWN arrives as ENOENT. */
    return go.err == ENOENT ? MANCLIENT_UNKNOWN : MANCLIENT_FAILED;
  }
  return MANCLIENT_OK;
}

/* Reads size bytes of h into buf, a chunk at a time, each under the
 * deadline.  0, or -1 with *why. */
static int
read_all(struct nbd_handle *h, char *buf, uint64_t size, unsigned timeout_ms,
         const char **why, char *msg, size_t msglen)
{
  for (uint64_t off = 0; off < size;) {
    uint64_t left = size - off;
    size_t n = left < MANCLIENT_CHUNK ? (size_t)left : MANCLIENT_CHUNK;
    struct op_result rd = { 0 };
    if (nbd_aio_pread(h, buf + off, n, off,
                      (nbd_completion_callback){ .callback = op_done,
                                                 .user_data = &rd },
                      0) == -1) {
      *why = nbd_get_error();
      return -1;
    }
    if (run_until(h, &rd.done, clock_mono_ms() + timeout_ms, why) == -1)
      return -1;
    if (rd.err) {
      snprintf(msg, msglen, "read: %s", strerror(rd.err));
      *why = msg;
      return -1;
    }
    off += n;
  }
  return 0;
}

enum manclient_result
manclient_fetch(const char *uri, const char *name, unsigned timeout_ms,
                unsigned flags, char **bytes, size_t *len, char *err,
                size_t errlen)
{
  char export[MANIFEST_EXPORT_NAME_MAX], msg[1024];
  const char *why = NULL;
  char *buf = NULL;
  enum manclient_result r = MANCLIENT_FAILED;

  manifest_export_name(name, export);
  if (timeout_ms == 0)
    timeout_ms = 1;
  struct nbd_handle *h = nbd_create();
  if (h == NULL) {
    snprintf(err, errlen, "%s export %s: nbd_create: %s", uri, export,
             nbd_get_error());
    return MANCLIENT_FAILED;
  }
  r = open_export(h, uri, export, timeout_ms, flags, &why, msg, sizeof msg);
  if (r == MANCLIENT_FAILED)
    tls_hint(uri, &why, msg, sizeof msg);
  if (r != MANCLIENT_OK)
    goto cleanup;
  r = MANCLIENT_FAILED;
  int64_t size = nbd_get_size(h);
  if (size <= 0 || (uint64_t)size > MANIFEST_FILE_MAX) {
    snprintf(msg, sizeof msg, "size %" PRId64 " is not that of a manifest (1 to %zu bytes)",
             size, (size_t)MANIFEST_FILE_MAX);
    why = msg;
    goto cleanup;
  }
  buf = malloc((size_t)size);
  if (buf == NULL) {
    snprintf(msg, sizeof msg, "malloc: %s", strerror(errno));
    why = msg;
    goto cleanup;
  }
  if (read_all(h, buf, (uint64_t)size, timeout_ms, &why, msg, sizeof msg) == -1)
    goto cleanup;
  nbd_aio_disconnect(h, 0);
  *bytes = buf;
  *len = (size_t)size;
  buf = NULL;
  r = MANCLIENT_OK;
cleanup:
  if (r != MANCLIENT_OK)
    snprintf(err, errlen, "%.512s export %s: %s", uri, export,
             why ? why : "unknown error");
  free(buf);
  nbd_close(h);
  return r;
}

enum manclient_result
manclient_version(const char *uri, const char *name, unsigned timeout_ms,
                  unsigned flags, char version[DIGEST_HEX_LEN + 1],
                  uint64_t *size, char *err, size_t errlen)
{
  char *bytes = NULL;
  size_t len = 0;
  enum manclient_result r = manclient_fetch(uri, name, timeout_ms, flags,
                                            &bytes, &len, err, errlen);
  if (r != MANCLIENT_OK)
    return r;
  char where[640], export[MANIFEST_EXPORT_NAME_MAX];
  snprintf(where, sizeof where, "%.512s export %s", uri,
           manifest_export_name(name, export));
  struct manifest *m = manifest_parse(bytes, len, where);
  if (m == NULL) {
    snprintf(err, errlen, "%s is not a valid manifest", where);
    r = MANCLIENT_FAILED;
  } else if (strcmp(m->name, name) != 0) {
    snprintf(err, errlen, "%s is the manifest of image '%s'", where, m->name);
    r = MANCLIENT_FAILED;
  } else {
    *size = m->size;
    uint8_t d[DIGEST_LEN];
    digest_sha256(bytes, len, d);
    digest_to_hex(d, version);
  }
  manifest_free(m);
  free(bytes);
  return r;
}
