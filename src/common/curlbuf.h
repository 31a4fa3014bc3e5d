/* thunder — the one libcurl reply collector of thunder's HTTP clients
 * (thunderctl's httpjson.c, thunderd's register.c, thunder-api's
 * nodecall.c): a reply body gathered into one NUL-terminated heap buffer,
 * bounded.  Past the bound the transfer fails (too_large), or with
 * truncate the rest is read and dropped (a client that only shows the
 * start of an error body).  Not thread-safe: one buffer per transfer. */
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

/* Empties b (freeing what it held) and sets its bound. */
void curlbuf_init(struct curlbuf *b, size_t max, bool truncate);

/* Frees what b holds and empties it (the bound stays). */
void curlbuf_clear(struct curlbuf *b);

/* Sets c's CURLOPT_WRITEFUNCTION and CURLOPT_WRITEDATA to collect into b.
 * CURLE_OK or libcurl's error. */
CURLcode curlbuf_attach(CURL *c, struct curlbuf *b);

#endif
