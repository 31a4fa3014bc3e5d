/* thunder — the one libcurl reply collector of thunder's HTTP clients
 * (thunderctl's httpjson.c, thunderd's register.c, thunder-api's
 * nodecall.c): a reply body gathered into one NUL-terminated heap buffer,
 * bounded.  Past the bound the transfer fails (too_large), or with
 * truncate the rest is read and dropped (a client that only shows the
 * start of an error body).  Not thread-safe: one buffer per transfer.
 * Also the one place that sets a client's TLS files (curlbuf_tls). */
#ifndef THUNDER_CURLBUF_H
#define THUNDER_CURLBUF_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

struct curlbuf {
  char *data;      /* NUL-terminated; NULL until something came */
  size_t len;
  size_t max;      /* bytes kept at the most */
  bool truncate;   /* past max: drop the rest instead of failing */
  bool too_large;  /* the body passed max */
  bool no_memory;
};

/* A client's TLS files (paths): the CA that must have signed the server's
 * certificate (NULL: the system's CAs), and a client certificate with its
 * key (NULL: none), PEM. */
struct curlbuf_tls {
  const char *cacert;
  const char *cert;
  const char *key;
};

/* Sets c's CURLOPT_CAINFO (and no CA directory), CURLOPT_SSLCERT and
 * CURLOPT_SSLKEY from t; t NULL: nothing.  The server's certificate is
 * verified with the name of the URL's host either way (libcurl's
 * default, never turned off here).  CURLE_OK or libcurl's error. */
CURLcode curlbuf_tls(CURL *c, const struct curlbuf_tls *t);

/* A hint for a TLS failure rc of a transfer with t ("" for other
 * errors): which file to check. */
const char *curlbuf_tls_hint(CURLcode rc, const struct curlbuf_tls *t);

/* Empties b (freeing what it held) and sets its bound. */
void curlbuf_init(struct curlbuf *b, size_t max, bool truncate);

/* Frees what b holds and empties it (the bound stays). */
void curlbuf_clear(struct curlbuf *b);

/* Sets c's CURLOPT_WRITEFUNCTION and CURLOPT_WRITEDATA to collect into b.
 * CURLE_OK or libcurl's error. */
CURLcode curlbuf_attach(CURL *c, struct curlbuf *b);

#endif
