/* thunder — the Prometheus text exposition format; see promtext.h. */
#include "promtext.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct promtext {
  char *buf;
  size_t len, cap;
  bool failed;
};

struct promtext *
promtext_new(void)
{
  return calloc(1, sizeof(struct promtext));
}

/* Makes room for need more bytes (and a NUL). */
static bool
reserve(struct promtext *p, size_t need)
{
  if (p->failed)
    return false;
  if (p->len + need + 1 <= p->cap)
    return true;
  size_t cap = p->cap ? p->cap : 4096;
  while (cap < p->len + need + 1)
    cap *= 2;
  char *b = realloc(p->buf, cap);
  if (b == NULL) {
    p->failed = true;
    return false;
  }
  p->buf = b;
  p->cap = cap;
  return true;
}

static void __attribute__((format(printf, 2, 3)))
put(struct promtext *p, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || !reserve(p, (size_t)n)) {
    p->failed = true;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(p->buf + p->len, p->cap - p->len, fmt, ap);
  va_end(ap);
  p->len += (size_t)n;
}

/* A label value or help text with \, " (values only) and newline escaped. */
static void
put_escaped(struct promtext *p, const char *s, bool quote)
{
  for (; *s; s++) {
    if (*s == '\\')
      put(p, "\\\\");
    else if (*s == '\n')
      put(p, "\\n");
    else if (*s == '"' && quote)
      put(p, "\\\"");
    else
      put(p, "%c", *s);
  }
}

void
promtext_family(struct promtext *p, const char *name, const char *type,
                const char *help)
{
  put(p, "# HELP %s ", name);
  put_escaped(p, help, false);
  put(p, "\n# TYPE %s %s\n", name, type);
}

/* name{labels[, extra]} — extra is the histogram's le. */
static void
put_name(struct promtext *p, const char *name, const char *suffix,
         const struct promtext_label *labels, size_t n, const char *le)
{
  put(p, "%s%s", name, suffix);
  if (n == 0 && le == NULL)
    return;
  put(p, "{");
  for (size_t i = 0; i < n; i++) {
    put(p, "%s%s=\"", i ? "," : "", labels[i].name);
    put_escaped(p, labels[i].value ? labels[i].value : "", true);
    put(p, "\"");
  }
  if (le)
    put(p, "%sle=\"%s\"", n ? "," : "", le);
  put(p, "}");
}

void
promtext_uint(struct promtext *p, const char *name,
              const struct promtext_label *labels, size_t n, uint64_t v)
{
  put_name(p, name, "", labels, n, NULL);
  put(p, " %" PRIu64 "\n", v);
}

void
promtext_double(struct promtext *p, const char *name,
                const struct promtext_label *labels, size_t n, double v)
{
  put_name(p, name, "", labels, n, NULL);
  if (isnan(v))
    put(p, " NaN\n");
  else if (isinf(v))
    put(p, " %sInf\n", v > 0 ? "+" : "-");
  else
    put(p, " %.17g\n", v);
}

void
promtext_histogram(struct promtext *p, const char *name,
                   const struct promtext_label *labels, size_t n,
                   const struct histogram *h)
{
  uint64_t cum = 0;
  char le[32];

  for (size_t i = 0; i <= h->nbounds; i++) {
    cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    if (i < h->nbounds)
      snprintf(le, sizeof le, "%g", h->bounds[i]);
    else
      snprintf(le, sizeof le, "+Inf");
    put_name(p, name, "_bucket", labels, n, le);
    put(p, " %" PRIu64 "\n", cum);
  }
  put_name(p, name, "_sum", labels, n, NULL);
  put(p, " %.9f\n",
      (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9);
  put_name(p, name, "_count", labels, n, NULL);
  put(p, " %" PRIu64 "\n", cum);
}

char *
promtext_finish(struct promtext *p, size_t *len)
{
  char *body = NULL;

  if (!p->failed && reserve(p, 0)) {
    p->buf[p->len] = '\0';
    body = p->buf;
    *len = p->len;
    p->buf = NULL;
  }
  promtext_free(p);
  return body;
}

void
promtext_free(struct promtext *p)
{
  if (p == NULL)
    return;
  free(p->buf);
  free(p);
}
