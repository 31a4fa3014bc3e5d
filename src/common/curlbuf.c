/* thunder — the libcurl reply collector; see curlbuf.h. */
#include "curlbuf.h"

#include <stdlib.h>
#include <string.h>

void
curlbuf_init(struct curlbuf *b, size_t max, bool truncate)
{
  free(b->data);
  *b = (struct curlbuf){ .max = max, .truncate = truncate };
}

void
curlbuf_clear(struct curlbuf *b)
{
  curlbuf_init(b, b->max, b->truncate);
}

/* CURLOPT_WRITEFUNCTION: n bytes taken, or 0 to fail the transfer. */
static size_t
on_data(char *data, size_t size, size_t nmemb, void *opaque)
{
  struct curlbuf *b = opaque;
  size_t n = size * nmemb, keep = n;
  if (b->len + n > b->max || n > b->max) {
    b->too_large = true;
    if (!b->truncate)
      return 0;
    keep = b->max - b->len;
  }
  if (keep > 0 || b->data == NULL) {
    char *p = realloc(b->data, b->len + keep + 1);
    if (p == NULL) {
      b->no_memory = true;
      return 0;
    }
    memcpy(p + b->len, data, keep);
    b->len += keep;
    p[b->len] = '\0';
    b->data = p;
  }
  return n;
}

CURLcode
curlbuf_attach(CURL *c, struct curlbuf *b)
{
  CURLcode rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
  return rc;
}
