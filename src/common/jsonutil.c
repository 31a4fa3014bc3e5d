/* thunder — JSON helpers; see jsonutil.h.
 *
 * Duplicate keys (and single-quoted strings, which json-c's strict mode
 * lets through): json-c has accepted the text (well-formed, within the
 * depth), so a second pass over the text can be simple.  It walks the
 * values recursively (depth bounded by the parse), collects the keys of
 * each object (decoded by json-c when they hold an escape, so "a\u0062"
 * and "ab" are the same key), sorts them and refuses two equal neighbours:
 * O(k log k) per object, whatever a client sends.
 */
#include "jsonutil.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"

#define PATH_MAX_SHOWN 200

const char *
jsonutil_shown(const char *s, size_t len, char *buf, size_t buflen)
{
  size_t n = 0;
  for (size_t i = 0; i < len && n + 4 < buflen; i++, n++) {
    if (n == 64) {
      memcpy(buf + n, "...", 3);
      n += 3;
      break;
    }
    unsigned char c = (unsigned char)s[i];
    buf[n] = c >= 0x20 && c < 0x7f ? (char)c : '?';
  }
  buf[n] = '\0';
  return buf;
}

const char *
jsonutil_text(struct json_object *o)
{
  return json_object_to_json_string_ext(
      o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

bool
jsonutil_add(struct json_object *o, const char *key, struct json_object *val)
{
  if (o == NULL || val == NULL || json_object_object_add(o, key, val) != 0) {
    json_object_put(val);
    return false;
  }
  return true;
}

bool
jsonutil_add_nullable(struct json_object *o, const char *key,
                      struct json_object *val)
{
  if (o == NULL || json_object_object_add(o, key, val) != 0) {
    json_object_put(val);
    return false;
  }
  return true;
}

/* ---- duplicate keys ----------------------------------------------------- */

struct key {
  const char *s;  /* decoded */
  size_t len;
  char *owned;    /* s when it had to be decoded */
};

struct scan {
  const char *t;
  size_t len, i;
  char *err;
  size_t errlen;
  const char *what;  /* for messages */
  bool dups_ok;      /* do not check for duplicate keys */
};

/* json-c's strict mode still takes 'single-quoted' strings: refuse them. */
static int
single_quoted(struct scan *sc)
{
  snprintf(sc->err, sc->errlen, "%s: not JSON: single-quoted string at offset %zu (the %s is not valid JSON)",
           sc->what, sc->i, sc->what);
  return -1;
}

static int scan_value(struct scan *sc, char *path, size_t plen);

static void
skip_ws(struct scan *sc)
{
  while (sc->i < sc->len && strchr(" \t\r\n", sc->t[sc->i]) && sc->t[sc->i])
    sc->i++;
}

/* Skips the string at sc->i (its opening quote); *start and *end span
 * its content. */
static void
skip_string(struct scan *sc, size_t *start, size_t *end)
{
  *start = ++sc->i;
  while (sc->i < sc->len && sc->t[sc->i] != '"')
    sc->i += sc->t[sc->i] == '\\' ? 2 : 1;
  *end = sc->i < sc->len ? sc->i : sc->len;
  sc->i++;
}

static int
key_cmp(const void *a, const void *b)
{
  const struct key *x = a, *y = b;
  if (x->len != y->len)
    return x->len < y->len ? -1 : 1;
  return memcmp(x->s, y->s, x->len);
}

/* Decodes the key text[start..end) into *k; -1 on no memory. */
static int
key_decode(struct scan *sc, size_t start, size_t end, struct key *k)
{
  k->owned = NULL;
  if (memchr(sc->t + start, '\\', end - start) == NULL) {
    k->s = sc->t + start;
    k->len = end - start;
    return 0;
  }
  struct json_tokener *tok = json_tokener_new_ex(1);
  if (tok == NULL)
    return -1;
  CLEANUP_JSON_PUT struct json_object *o =
      json_tokener_parse_ex(tok, sc->t + start - 1, (int)(end - start + 2));
  json_tokener_free(tok);
  if (o == NULL || !json_object_is_type(o, json_type_string))
    return -1;
  k->len = (size_t)json_object_get_string_len(o);
  k->owned = malloc(k->len + 1);
  if (k->owned == NULL)
    return -1;
  memcpy(k->owned, json_object_get_string(o), k->len + 1);
  k->s = k->owned;
  return 0;
}

/* Appends to path (plen bytes, NUL-terminated) for a member or an element;
 * returns the old length to restore. */
static size_t
path_push(char *path, size_t plen, const char *key, size_t klen, long idx)
{
  size_t old = strlen(path);
  char shown[80];
  if (key)
    snprintf(path + old, plen - old, "%s%s", old ? "." : "",
             jsonutil_shown(key, klen, shown, sizeof shown));
  else
    snprintf(path + old, plen - old, "[%ld]", idx);
  return old;
}

static int
scan_object(struct scan *sc, char *path, size_t plen)
{
  struct key *keys = NULL;
  size_t n = 0, cap = 0;
  int r = -1;

  sc->i++; /* '{' */
  for (;;) {
    skip_ws(sc);
    if (sc->i >= sc->len || sc->t[sc->i] == '}') {
      sc->i++;
      break;
    }
    if (sc->t[sc->i] == ',') {
      sc->i++;
      continue;
    }
    if (sc->t[sc->i] != '"') {
      single_quoted(sc);
      goto cleanup;
    }
    size_t start, end;
    skip_string(sc, &start, &end);
    if (n == cap) {
      size_t c = cap ? cap * 2 : 8;
      struct key *nk = realloc(keys, c * sizeof *nk);
      if (nk == NULL)
        goto nomem;
      keys = nk;
      cap = c;
    }
    if (key_decode(sc, start, end, &keys[n]) == -1)
      goto nomem;
    n++;
    if (memchr(keys[n - 1].s, '\0', keys[n - 1].len)) {
      /* json-c would cut the key at its \u0000.  Shown with the NUL as
       * '?': field 'name?x'. */
      path_push(path, plen, keys[n - 1].s, keys[n - 1].len, 0);
      snprintf(sc->err, sc->errlen, "%s: field '%s': unknown field (its key holds a NUL byte)",
               sc->what, path);
      goto cleanup;
    }
    skip_ws(sc);
    sc->i++; /* ':' */
    skip_ws(sc);
    size_t old = path_push(path, plen, keys[n - 1].s, keys[n - 1].len, 0);
    int v = scan_value(sc, path, plen);
    path[old] = '\0';
    if (v == -1)
      goto cleanup;
  }
  if (n > 1 && !sc->dups_ok)
    qsort(keys, n, sizeof *keys, key_cmp);
  for (size_t i = 1; i < n && !sc->dups_ok; i++)
    if (key_cmp(&keys[i - 1], &keys[i]) == 0) {
      path_push(path, plen, keys[i].s, keys[i].len, 0);
      snprintf(sc->err, sc->errlen, "%s: field '%s': appears more than once",
               sc->what, path);
      goto cleanup;
    }
  r = 0;
  goto cleanup;
nomem:
  snprintf(sc->err, sc->errlen, "out of memory checking the keys");
cleanup:
  for (size_t i = 0; i < n; i++)
    free(keys[i].owned);
  free(keys);
  return r;
}

static int
scan_value(struct scan *sc, char *path, size_t plen)
{
  skip_ws(sc);
  if (sc->i >= sc->len)
    return 0;
  char c = sc->t[sc->i];
  if (c == '{')
    return scan_object(sc, path, plen);
  if (c == '\'')
    return single_quoted(sc);
  if (c == '"') {
    size_t s, e;
    skip_string(sc, &s, &e);
    return 0;
  }
  if (c == '[') {
    sc->i++;
    for (long idx = 0;; idx++) {
      skip_ws(sc);
      if (sc->i >= sc->len || sc->t[sc->i] == ']') {
        sc->i++;
        return 0;
      }
      if (sc->t[sc->i] == ',') {
        sc->i++;
        skip_ws(sc);
      }
      size_t old = path_push(path, plen, NULL, 0, idx);
      int v = scan_value(sc, path, plen);
      path[old] = '\0';
      if (v == -1)
        return -1;
    }
  }
  while (sc->i < sc->len && !strchr(",]} \t\r\n", sc->t[sc->i]))
    sc->i++;
  return 0;
}

/* ---- parsing ------------------------------------------------------------- */

/* Whether s[0..len) is well-formed UTF-8 (RFC 3629, Unicode table 3-7): no
 * overlong form, no surrogate (U+D800..DFFF), nothing past U+10FFFF.
 * json-c's own check lets overlong forms through.  *bad: the offset of
 * the first byte of an ill-formed sequence. */
static bool
utf8_valid(const unsigned char *s, size_t len, size_t *bad)
{
  for (size_t i = 0; i < len;) {
    unsigned char c = s[i];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0)
        lo = 0xa0;
      else if (c == 0xed)
        hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0)
        lo = 0x90;
      else if (c == 0xf4)
        hi = 0x8f;
    } else {
      *bad = i;
      return false;
    }
    if (i + n >= len || s[i + 1] < lo || s[i + 1] > hi) {
      *bad = i;
      return false;
    }
    for (size_t k = 2; k <= n; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xbf) {
        *bad = i;
        return false;
      }
    i += n + 1;
  }
  return true;
}

struct json_object *
jsonutil_parse(const char *text, size_t len, int depth, unsigned flags,
               const char *what, char *err, size_t errlen)
{
  if (len == 0) {
    snprintf(err, errlen, "%s: not JSON: document ends early at offset 0 (empty; expected a JSON %s)",
             what, flags & JSONUTIL_OBJECT ? "object" : "value");
    return NULL;
  }
  const char *nul = memchr(text, '\0', len);
  if (nul) {
    snprintf(err, errlen, "%s: not JSON: NUL byte at offset %td", what,
             nul - text);
    return NULL;
  }
  if (len > (size_t)INT32_MAX) {
    snprintf(err, errlen, "%s: %zu bytes, too large to parse", what, len);
    return NULL;
  }
  size_t bad;
  if (!utf8_valid((const unsigned char *)text, len, &bad)) {
    snprintf(err, errlen, "%s: not JSON: invalid utf-8 at offset %zu (the %s is not valid JSON)",
             what, bad, what);
    return NULL;
  }
  struct json_tokener *tok = json_tokener_new_ex(depth);
  if (tok == NULL) {
    snprintf(err, errlen, "%s: out of memory", what);
    return NULL;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  struct json_object *root = json_tokener_parse_ex(tok, text, (int)len);
  enum json_tokener_error je = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  if (root == NULL && je == json_tokener_continue) {
    /* A top-level scalar is only complete at a terminator. */
    root = json_tokener_parse_ex(tok, "", 1);
    je = json_tokener_get_error(tok);
    end = len;
  }
  json_tokener_free(tok);

  if (root == NULL) {
    if (je == json_tokener_success && (flags & JSONUTIL_OBJECT))
      snprintf(err, errlen, "%s: not a JSON object but null; expected a JSON object",
               what);
    else if (je == json_tokener_success)
      snprintf(err, errlen, "%s: the JSON value is null", what);
    else if (je == json_tokener_error_depth)
      snprintf(err, errlen, "%s: nesting too deep: nested deeper than %d levels",
               what, depth);
    else if (je == json_tokener_continue || je == json_tokener_error_parse_eof)
      snprintf(err, errlen, "%s: not JSON: document ends early at offset %zu (the %s is not valid JSON)",
               what, len, what);
    else
      snprintf(err, errlen, "%s: not JSON: %s at offset %zu (the %s is not valid JSON)",
               what, json_tokener_error_desc(je), end, what);
    return NULL;
  }
  for (size_t i = end; i < len; i++)
    if (!strchr(" \t\r\n", text[i])) {
      snprintf(err, errlen, "%s: not JSON: data after its JSON value at offset %zu (the %s is not valid JSON)",
               what, i, what);
      json_object_put(root);
      return NULL;
    }
  if ((flags & JSONUTIL_OBJECT) && !json_object_is_type(root, json_type_object)) {
    snprintf(err, errlen, "%s: not a JSON object but %s; expected a JSON object",
             what, json_type_to_name(json_object_get_type(root)));
    json_object_put(root);
    return NULL;
  }
  char path[PATH_MAX_SHOWN] = "";
  struct scan sc = { .t = text, .len = end, .err = err, .errlen = errlen,
                     .what = what, .dups_ok = (flags & JSONUTIL_DUPS_OK) != 0 };
  if (scan_value(&sc, path, sizeof path) == -1) {
    json_object_put(root);
    return NULL;
  }
  return root;
}

/* ---- getters ---------------------------------------------------------------- */

int
jsonutil_known_keys(struct json_object *o, const char *at,
                    const char *const *allowed, const char *expected,
                    char *err, size_t errlen)
{
  json_object_object_foreach(o, key, val) {
    (void)val;
    bool ok = false;
    for (const char *const *a = allowed; *a && !ok; a++)
      ok = strcmp(key, *a) == 0;
    if (!ok) {
      char s[80];
      /* The unknown key quoted after its object's path: field
       * placement.'colour'. */
      snprintf(err, errlen, "field %s'%s': unknown field%s%s", at,
               jsonutil_shown(key, strlen(key), s, sizeof s),
               expected ? "; " : "", expected ? expected : "");
      return -1;
    }
  }
  return 0;
}

/* Whether o has the member key (a JSON null is a member, of type null:
 * the schemas allow no null), into *v. */
static bool
member(struct json_object *o, const char *key, struct json_object **v)
{
  *v = NULL;
  return json_object_object_get_ex(o, key, v);
}

int
jsonutil_get_string(struct json_object *o, const char *at, const char *key,
                    bool required, size_t max, const char **out, char *err,
                    size_t errlen)
{
  struct json_object *v;
  *out = NULL;
  if (!member(o, key, &v)) {
    if (!required)
      return 1;
    snprintf(err, errlen, "field '%s%s': missing; expected a string", at, key);
    return -1;
  }
  if (!json_object_is_type(v, json_type_string)) {
    snprintf(err, errlen, "field '%s%s': expected a string, not %s", at, key,
             json_type_to_name(json_object_get_type(v)));
    return -1;
  }
  size_t len = (size_t)json_object_get_string_len(v);
  const char *s = json_object_get_string(v);
  if (len == 0 || len > max || strlen(s) != len) {
    snprintf(err, errlen, "field '%s%s': %zu bytes; expected 1 to %zu bytes without NUL",
             at, key, len, max);
    return -1;
  }
  *out = s;
  return 0;
}

int
jsonutil_get_uint(struct json_object *o, const char *at, const char *key,
                  bool required, uint64_t min, uint64_t max, uint64_t *out,
                  char *err, size_t errlen)
{
  struct json_object *v;
  char s[80];
  if (!member(o, key, &v)) {
    if (!required)
      return 1;
    snprintf(err, errlen, "field '%s%s': missing; expected an integer from %" PRIu64 " to %" PRIu64,
             at, key, min, max);
    return -1;
  }
  enum json_type t = json_object_get_type(v);
  const char *text = json_object_to_json_string(v);
  bool in_range;
  uint64_t x = 0;
  if (t == json_type_int) {
    /* A number beyond int64 saturates (errno ERANGE): out of range. */
    errno = 0;
    int64_t i = json_object_get_int64(v);
    in_range = errno != ERANGE && i >= 0 && (uint64_t)i >= min &&
               (uint64_t)i <= max;
    x = (uint64_t)i;
  } else if (t == json_type_double) {
    double d = json_object_get_double(v);
    if (!(d >= -1e18 && d <= 1e18) || d != (double)(int64_t)d) {
      snprintf(err, errlen, "field '%s%s': %s is not an integer; expected an integer from %" PRIu64 " to %" PRIu64,
               at, key, jsonutil_shown(text, strlen(text), s, sizeof s), min,
               max);
      return -1;
    }
    in_range = d >= (double)min && d <= (double)max;
    x = in_range ? (uint64_t)d : 0; /* a negative double is no uint64_t */
  } else {
    snprintf(err, errlen, "field '%s%s': expected an integer from %" PRIu64 " to %" PRIu64 ", not %s",
             at, key, min, max, json_type_to_name(t));
    return -1;
  }
  if (!in_range) {
    snprintf(err, errlen, "field '%s%s': %s is out of range; expected %" PRIu64 " to %" PRIu64,
             at, key, jsonutil_shown(text, strlen(text), s, sizeof s), min,
             max);
    return -1;
  }
  *out = x;
  return 0;
}

static int
get_typed(struct json_object *o, const char *at, const char *key,
          bool required, enum json_type want, const char *name,
          struct json_object **out, char *err, size_t errlen)
{
  struct json_object *v;
  *out = NULL;
  if (!member(o, key, &v)) {
    if (!required)
      return 1;
    snprintf(err, errlen, "field '%s%s': missing; expected an %s", at, key,
             name);
    return -1;
  }
  if (!json_object_is_type(v, want)) {
    snprintf(err, errlen, "field '%s%s': expected an %s, not %s", at, key,
             name, json_type_to_name(json_object_get_type(v)));
    return -1;
  }
  *out = v;
  return 0;
}

int
jsonutil_get_object(struct json_object *o, const char *at, const char *key,
                    bool required, struct json_object **out, char *err,
                    size_t errlen)
{
  return get_typed(o, at, key, required, json_type_object, "object", out, err,
                   errlen);
}

int
jsonutil_get_array(struct json_object *o, const char *at, const char *key,
                   bool required, struct json_object **out, char *err,
                   size_t errlen)
{
  return get_typed(o, at, key, required, json_type_array, "array", out, err,
                   errlen);
}
