/* trace — block-level read traces: load and check, describe, generate,
 * and the image the traces read from.  See trace.h.
 *
 * The loader trusts nothing in the file: every field must be a plain
 * decimal number (no sign, no exponent, no hex, no "nan"), checked for
 * overflow before it is converted, and every row must have exactly three
 * fields.  The first bad row stops the load with its line number.
 *
 * The generator and the image filler draw from splitmix64 streams, so
 * their output depends only on their parameters and the seed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace.h"

#define HEADER        "t_ms,offset,length"
#define MAX_LINE      4096
#define MAX_T_MS      1e12            /* about 31 years: nothing real */
#define MAX_OFFSET    ((uint64_t) INT64_MAX)
#define MAX_BLOCKS    (UINT64_C(1) << 28)   /* bitmaps of at most 32 MiB */

static void __attribute__((format(printf, 3, 4)))
trace_error(const char *path, unsigned line, const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "%s: %s", program_invocation_short_name, path);
  if (line > 0)
    fprintf(stderr, ":%u", line);
  fputs(": ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* ---- parsing ---------------------------------------------------------- */

/* Trims blanks (spaces, tabs) from both ends of S[0..*len). */
static const char *
trim(const char *s, size_t *len)
{
  while (*len > 0 && (s[0] == ' ' || s[0] == '\t')) {
    s++;
    (*len)--;
  }
  while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
    (*len)--;
  return s;
}

/* A non-negative decimal integer of LEN characters, at most MAX.
 * Returns 0, -1 if it is not a number, -2 if it is above MAX. */
static int
parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out)
{
  uint64_t v = 0;
  if (len == 0)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned d = (unsigned) (s[i] - '0');
    if (v > (max - d) / 10)
      return -2;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* A non-negative decimal number "DIGITS[.DIGITS]" of LEN characters, at
 * most MAX_T_MS.  Returns 0, -1 if it is not such a number, -2 if too big. */
static int
parse_ms(const char *s, size_t len, double *out)
{
  size_t digits = 0, dots = 0;
  char buf[64];

  if (len == 0 || len >= sizeof buf)
    return len == 0 ? -1 : -2;
  for (size_t i = 0; i < len; i++) {
    if (s[i] >= '0' && s[i] <= '9')
      digits++;
    else if (s[i] == '.' && dots == 0 && i > 0 && i + 1 < len)
      dots++;
    else
      return -1;
  }
  if (digits == 0)
    return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  double v = strtod(buf, NULL);
  if (!isfinite(v) || v > MAX_T_MS)
    return -2;
  *out = v;
  return 0;
}

/* Prints a field for a message: at most 40 characters of it. */
#define FIELD_FMT "'%.*s%s'"
#define FIELD_ARGS(s, len) (int) ((len) > 40 ? 40 : (len)), (s), \
                           ((len) > 40 ? "..." : "")

/* Parses one data row into R.  Returns 0 or -1 after a message. */
static int
parse_row(const char *path, unsigned line, const char *s, size_t len,
          struct trace_read *r)
{
  const char *field[3];
  size_t flen[3];
  unsigned nf = 0;
  size_t start = 0;

  for (size_t i = 0; i <= len; i++) {
    if (i == len || s[i] == ',') {
      if (nf == 3) {
        trace_error(path, line, "more than 3 fields; want t_ms,offset,length");
        return -1;
      }
      flen[nf] = i - start;
      field[nf] = trim(s + start, &flen[nf]);
      nf++;
      start = i + 1;
    }
  }
  if (nf != 3) {
    trace_error(path, line, "%u field%s; want 3: t_ms,offset,length",
                nf, nf == 1 ? "" : "s");
    return -1;
  }

  int e = parse_ms(field[0], flen[0], &r->t_ms);
  if (e == -1) {
    trace_error(path, line, "t_ms " FIELD_FMT " is not a non-negative decimal number",
                FIELD_ARGS(field[0], flen[0]));
    return -1;
  }
  if (e == -2) {
    trace_error(path, line, "t_ms " FIELD_FMT " is out of range (at most %.0f)",
                FIELD_ARGS(field[0], flen[0]), MAX_T_MS);
    return -1;
  }

  e = parse_uint(field[1], flen[1], MAX_OFFSET, &r->offset);
  if (e == -1) {
    trace_error(path, line, "offset " FIELD_FMT " is not a non-negative integer",
                FIELD_ARGS(field[1], flen[1]));
    return -1;
  }
  if (e == -2) {
    trace_error(path, line, "offset " FIELD_FMT " is out of range (at most 2^63 - 1)",
                FIELD_ARGS(field[1], flen[1]));
    return -1;
  }

  uint64_t length;
  e = parse_uint(field[2], flen[2], UINT64_MAX, &length);
  if (e == -1) {
    trace_error(path, line, "length " FIELD_FMT " is not a non-negative integer",
                FIELD_ARGS(field[2], flen[2]));
    return -1;
  }
  if (e == -2 || length == 0 || length > TRACE_MAX_LENGTH) {
    trace_error(path, line, "length " FIELD_FMT " is out of range (1 to %u bytes)",
                FIELD_ARGS(field[2], flen[2]), TRACE_MAX_LENGTH);
    return -1;
  }
  if (r->offset > MAX_OFFSET - length) {
    trace_error(path, line, "read %" PRIu64 "+%" PRIu64 " ends past 2^63 - 1",
                r->offset, length);
    return -1;
  }
  r->length = (uint32_t) length;
  r->line = line;
  return 0;
}

struct trace *
trace_load(const char *path)
{
  struct trace *t = calloc(1, sizeof *t);
  FILE *f = NULL;
  char *buf = NULL;
  size_t cap = 0, alloc = 0;
  unsigned line = 0;

  if (t == NULL || (t->path = strdup(path)) == NULL) {
    trace_error(path, 0, "out of memory");
    goto fail;
  }
  f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
  if (f == NULL) {
    trace_error(path, 0, "open: %m");
    goto fail;
  }

  for (;;) {
    errno = 0;
    ssize_t got = getline(&buf, &cap, f);
    if (got == -1) {
      if (errno != 0 || ferror(f)) {
        trace_error(path, line + 1, "read: %m");
        goto fail;
      }
      break;
    }
    line++;
    size_t len = (size_t) got;
    if (len > 0 && buf[len - 1] == '\n')
      len--;
    if (len > 0 && buf[len - 1] == '\r')
      len--;
    if (len > MAX_LINE) {
      trace_error(path, line, "line longer than %d bytes", MAX_LINE);
      goto fail;
    }
    if (memchr(buf, '\0', len) != NULL) {
      trace_error(path, line, "NUL byte in the line");
      goto fail;
    }
    if (line == 1) {
      size_t hlen = len;
      const char *h = trim(buf, &hlen);
      if (hlen != strlen(HEADER) || memcmp(h, HEADER, hlen) != 0) {
        trace_error(path, line, "header " FIELD_FMT "; want '" HEADER "'",
                    FIELD_ARGS(h, hlen));
        goto fail;
      }
      continue;
    }
    if (len == 0) {
      trace_error(path, line, "empty line");
      goto fail;
    }
    if (t->n == TRACE_MAX_READS) {
      trace_error(path, line, "more than %u reads", TRACE_MAX_READS);
      goto fail;
    }
    if (t->n == alloc) {
      size_t na = alloc ? alloc * 2 : 1024;
      struct trace_read *nr = reallocarray(t->reads, na, sizeof *nr);
      if (nr == NULL) {
        trace_error(path, line, "out of memory");
        goto fail;
      }
      t->reads = nr;
      alloc = na;
    }
    struct trace_read *r = &t->reads[t->n];
    if (parse_row(path, line, buf, len, r) == -1)
      goto fail;
    if (t->n > 0 && r->t_ms < t->reads[t->n - 1].t_ms) {
      trace_error(path, line, "t_ms %.3f is before the previous row's %.3f",
                  r->t_ms, t->reads[t->n - 1].t_ms);
      goto fail;
    }
    t->n++;
    t->bytes += r->length;
    if (r->offset + r->length > t->max_end)
      t->max_end = r->offset + r->length;
    if (r->length > t->max_length)
      t->max_length = r->length;
  }
  if (line == 0) {
    trace_error(path, 0, "empty file; want the header '" HEADER "'");
    goto fail;
  }
  if (t->n == 0) {
    trace_error(path, 0, "no reads after the header");
    goto fail;
  }
  free(buf);
  if (f != stdin)
    fclose(f);
  return t;

fail:
  free(buf);
  if (f != NULL && f != stdin)
    fclose(f);
  trace_free(t);
  return NULL;
}

void
trace_free(struct trace *t)
{
  if (t == NULL)
    return;
  free(t->reads);
  free(t->path);
  free(t);
}

int
trace_check_size(const struct trace *t, uint64_t size)
{
  if (t->max_end <= size)
    return 0;
  for (size_t i = 0; i < t->n; i++) {
    const struct trace_read *r = &t->reads[i];
    if (r->offset + r->length > size) {
      trace_error(t->path, r->line,
                  "read %" PRIu64 "+%" PRIu32 " ends past the export's size %" PRIu64,
                  r->offset, r->length, size);
      return -1;
    }
  }
  return 0;
}

/* ---- description ------------------------------------------------------ */

struct span {
  uint64_t lo, hi;            /* [lo, hi) */
};

static int
span_cmp(const void *a, const void *b)
{
  const struct span *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Total length of the union of the reads, each widened to whole units of
 * UNIT bytes, in units. */
static uint64_t
union_units(const struct trace *t, uint64_t unit)
{
  struct span *s = malloc(t->n * sizeof *s);
  uint64_t total = 0;

  if (s == NULL) {
    trace_error(t->path, 0, "out of memory");
    exit(EXIT_FAILURE);
  }
  for (size_t i = 0; i < t->n; i++) {
    s[i].lo = t->reads[i].offset / unit;
    s[i].hi = (t->reads[i].offset + t->reads[i].length - 1) / unit + 1;
  }
  qsort(s, t->n, sizeof *s, span_cmp);
  uint64_t lo = s[0].lo, hi = s[0].hi;
  for (size_t i = 1; i < t->n; i++) {
    if (s[i].lo <= hi) {
      if (s[i].hi > hi)
        hi = s[i].hi;
    } else {
      total += hi - lo;
      lo = s[i].lo;
      hi = s[i].hi;
    }
  }
  total += hi - lo;
  free(s);
  return total;
}

uint64_t
trace_distinct_bytes(const struct trace *t)
{
  return union_units(t, 1);
}

uint64_t
trace_distinct_blocks(const struct trace *t, uint64_t block)
{
  return union_units(t, block);
}

/* ---- generator -------------------------------------------------------- */

/* splitmix64 */
static uint64_t
rng_next(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double
rng_unit(uint64_t *s)
{
  return (double) (rng_next(s) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n), n > 0 (the bias of % is below 2^-35 for n < 2^28). */
static uint64_t
rng_below(uint64_t *s, uint64_t n)
{
  return rng_next(s) % n;
}

static bool
bit_get(const uint64_t *map, uint64_t i)
{
  return (map[i / 64] >> (i % 64)) & 1;
}

static void
bit_set(uint64_t *map, uint64_t i)
{
  map[i / 64] |= UINT64_C(1) << (i % 64);
}

static uint64_t *
bitmap_new(uint64_t bits)
{
  return calloc((size_t) ((bits + 63) / 64), sizeof(uint64_t));
}

int
trace_synthesize(const struct trace_synth *s, FILE *out)
{
  const char *me = "--synthetic";

  if (s->block == 0 || s->block > TRACE_MAX_LENGTH) {
    trace_error(me, 0, "block %" PRIu64 ": must be 1 to %u bytes", s->block,
                TRACE_MAX_LENGTH);
    return -1;
  }
  uint64_t nb = s->size / s->block;
  if (nb == 0 || s->size > MAX_OFFSET) {
    trace_error(me, 0, "size %" PRIu64 ": must hold at least one block of %"
                PRIu64 " bytes and be below 2^63", s->size, s->block);
    return -1;
  }
  if (nb > MAX_BLOCKS) {
    trace_error(me, 0, "size %" PRIu64 ": more than 2^28 blocks of %" PRIu64
                " bytes; use larger blocks", s->size, s->block);
    return -1;
  }
  if (s->working_set == 0 || s->working_set > nb * s->block) {
    trace_error(me, 0, "working set %" PRIu64 ": must be 1 to %" PRIu64
                " bytes (the image's whole blocks)", s->working_set, nb * s->block);
    return -1;
  }
  if (!(s->locality >= 0 && s->locality <= 1)) {
    trace_error(me, 0, "locality %g: must be 0 to 1", s->locality);
    return -1;
  }
  if (!(s->gap_ms >= 0 && s->gap_ms <= 1e6)) {
    trace_error(me, 0, "gap %g ms: must be 0 to 1000000", s->gap_ms);
    return -1;
  }

  uint64_t wb = (s->working_set + s->block - 1) / s->block;
  uint64_t *used = bitmap_new(nb);
  struct span *runs = malloc(wb * sizeof *runs);   /* at most one per block */
  size_t nruns = 0;
  uint64_t rng = s->seed;
  int ret = -1;

  if (used == NULL || runs == NULL) {
    trace_error(me, 0, "out of memory");
    goto out;
  }
  for (uint64_t left = wb; left > 0;) {
    uint64_t want = 1;
    while (want < left && rng_unit(&rng) < s->locality)
      want++;
    /* The first free block at or after a random start that leaves room
     * for the run, wrapping; there is one, since wb <= nb. */
    uint64_t b = rng_below(&rng, nb - (want < nb ? want : nb) + 1);
    while (bit_get(used, b))
      b = b + 1 == nb ? 0 : b + 1;
    uint64_t len = 0;
    while (len < want && b + len < nb && !bit_get(used, b + len)) {
      bit_set(used, b + len);
      len++;
    }
    runs[nruns].lo = b;
    runs[nruns].hi = b + len;
    nruns++;
    left -= len;
  }
  for (size_t i = nruns; i > 1; i--) {              /* Fisher-Yates */
    size_t j = (size_t) rng_below(&rng, i);
    struct span tmp = runs[i - 1];
    runs[i - 1] = runs[j];
    runs[j] = tmp;
  }

  uint64_t row = 0;
  if (fprintf(out, HEADER "\n") < 0)
    goto write_error;
  for (size_t i = 0; i < nruns; i++) {
    for (uint64_t b = runs[i].lo; b < runs[i].hi; b++, row++) {
      if (fprintf(out, "%.3f,%" PRIu64 ",%" PRIu64 "\n",
                  (double) row * s->gap_ms, b * s->block, s->block) < 0)
        goto write_error;
    }
  }
  if (fflush(out) == EOF)
    goto write_error;
  ret = 0;
  goto out;

write_error:
  trace_error(me, 0, "write: %m");
out:
  free(used);
  free(runs);
  return ret;
}

/* ---- the image -------------------------------------------------------- */

/* Fills BUF (LEN bytes, a multiple of 8) with the bytes of block I. */
static void
fill_block(unsigned char *buf, size_t len, uint64_t seed, uint64_t i)
{
  uint64_t x = seed * 0xd1b54a32d192ed03ull ^ (i + 1) * 0x9e3779b97f4a7c15ull;
  for (size_t k = 0; k < len; k += 8) {
    uint64_t v = rng_next(&x);
    memcpy(buf + k, &v, 8);
  }
}

int64_t
trace_make_image(const char *path, uint64_t size, uint64_t block,
                 uint64_t seed, struct trace *const *traces, size_t n)
{
  if (block == 0 || block % 8 != 0 || block > TRACE_MAX_LENGTH) {
    trace_error(path, 0, "block %" PRIu64 ": must be a multiple of 8 up to %u",
                block, TRACE_MAX_LENGTH);
    return -1;
  }
  if (size == 0 || size > MAX_OFFSET) {
    trace_error(path, 0, "size %" PRIu64 ": must be 1 to 2^63 - 1 bytes", size);
    return -1;
  }
  uint64_t nb = (size + block - 1) / block;
  if (nb > MAX_BLOCKS) {
    trace_error(path, 0, "size %" PRIu64 ": more than 2^28 blocks of %" PRIu64
                " bytes", size, block);
    return -1;
  }
  for (size_t k = 0; k < n; k++) {
    if (trace_check_size(traces[k], size) == -1)
      return -1;
  }

  uint64_t *touched = bitmap_new(nb);
  unsigned char *buf = malloc(block);
  int fd = -1;
  int64_t written = -1;

  if (touched == NULL || buf == NULL) {
    trace_error(path, 0, "out of memory");
    goto out;
  }
  for (size_t k = 0; k < n; k++) {
    const struct trace *t = traces[k];
    for (size_t i = 0; i < t->n; i++) {
      uint64_t lo = t->reads[i].offset / block;
      uint64_t hi = (t->reads[i].offset + t->reads[i].length - 1) / block;
      for (uint64_t b = lo; b <= hi; b++)
        bit_set(touched, b);
    }
  }

  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1) {
    trace_error(path, 0, "open: %m");
    goto out;
  }
  if (ftruncate(fd, (off_t) size) == -1) {
    trace_error(path, 0, "ftruncate to %" PRIu64 " bytes: %m", size);
    goto out;
  }
  int64_t count = 0;
  for (uint64_t b = 0; b < nb; b++) {
    if (!bit_get(touched, b))
      continue;
    uint64_t off = b * block;
    size_t len = size - off < block ? (size_t) (size - off) : (size_t) block;
    fill_block(buf, (size_t) block, seed, b);
    for (size_t done = 0; done < len;) {
      ssize_t r = pwrite(fd, buf + done, len - done, (off_t) (off + done));
      if (r == -1 && errno == EINTR)
        continue;
      if (r <= 0) {
        trace_error(path, 0, "write at %" PRIu64 ": %m", off + done);
        goto out;
      }
      done += (size_t) r;
    }
    count++;
  }
  if (close(fd) == -1) {
    fd = -1;
    trace_error(path, 0, "close: %m");
    goto out;
  }
  fd = -1;
  written = count;

out:
  if (fd != -1)
    close(fd);
  free(buf);
  free(touched);
  return written;
}
