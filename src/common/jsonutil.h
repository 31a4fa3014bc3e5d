/* thunder — JSON helpers on json-c: one strict, limited parser and typed
 * getters whose messages name the field.
 *
 * Parsing (jsonutil_parse) is json-c's tokener with a nesting limit,
 * JSON_TOKENER_STRICT and UTF-8 validation, plus what json-c does not
 * check: a NUL byte, data after the value, and a key given twice in one
 * object (json-c keeps the last one silently; we refuse it, naming the
 * key with its path, e.g. "field 'placement.strategy': appears more than
 * once").
 *
 * Getters take the object, the path of the object ("" at the top,
 * "placement." inside a member) and the key, and write one whole-line
 * message into err: "field 'placement.max_per_node': 0 is out of range;
 * expected 1 to 10000".  They return 0 (found and valid), 1 (absent and
 * optional) or -1 (the message written).
 *
 * Pure: no I/O, no globals; thread-safe.
 */
#ifndef THUNDER_JSONUTIL_H
#define THUNDER_JSONUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

/* jsonutil_parse flags. */
enum {
  JSONUTIL_OBJECT = 1,   /* the value must be an object */
  JSONUTIL_DUPS_OK = 2,  /* keep json-c's "last key wins" */
};

/* Parses text[0..len) as exactly one JSON value nested at most depth
 * levels.  what names the text in messages ("body").  Returns a new
 * value, or NULL with a message in err: "body: not JSON: document ends
 * early at offset 0 (empty; expected a JSON object)", "body: nesting too
 * deep: nested deeper than 8 levels", "body: not JSON: ... (the body is
 * not valid JSON)" (also ill-formed UTF-8, a single-quoted string),
 * "body: not a JSON object but array; expected a JSON object", "field
 * 'a.b': appears more than once", "body: a key at offset 9 holds a NUL
 * byte".  The wording keeps the phrases the services' documents and tests
 * name. */
struct json_object *jsonutil_parse(const char *text, size_t len, int depth,
                                   unsigned flags, const char *what,
                                   char *err, size_t errlen);

/* Checks that every key of o is one of allowed (NULL-terminated); at is
 * the path of o ("" or "placement.").  The message quotes the unknown key
 * after its object's path ("field 'x': unknown field", "field
 * placement.'colour': unknown field"); expected (may be NULL) is added:
 * "...; expected version and upstreams".  0 or -1. */
int jsonutil_known_keys(struct json_object *o, const char *at,
                        const char *const *allowed, const char *expected,
                        char *err, size_t errlen);

/* The string member key of o: 1 to max bytes, no NUL.  *out points into
 * o; NULL when absent. */
int jsonutil_get_string(struct json_object *o, const char *at,
                        const char *key, bool required, size_t max,
                        const char **out, char *err, size_t errlen);

/* The integer member key of o within [min, max] (a number with a zero
 * fraction, 2.0, is an integer, as in JSON Schema).  *out untouched when
 * absent. */
int jsonutil_get_uint(struct json_object *o, const char *at, const char *key,
                      bool required, uint64_t min, uint64_t max,
                      uint64_t *out, char *err, size_t errlen);

/* The object (or array, for jsonutil_get_array) member key of o; NULL
 * when absent.  In every getter a JSON null is a value of the wrong type
 * (the schemas allow none), not an absent field. */
int jsonutil_get_object(struct json_object *o, const char *at,
                        const char *key, bool required,
                        struct json_object **out, char *err, size_t errlen);
int jsonutil_get_array(struct json_object *o, const char *at,
                       const char *key, bool required,
                       struct json_object **out, char *err, size_t errlen);

/* Adds key: val to o (val taken); false, val dropped, when o or val is
 * NULL or the add fails.  For building replies with one check at the end
 * (ndctl's json builders). */
bool jsonutil_add(struct json_object *o, const char *key,
                  struct json_object *val);

/* As jsonutil_add, but val NULL is added as a JSON null. */
bool jsonutil_add_nullable(struct json_object *o, const char *key,
                           struct json_object *val);

/* Copies s[0..len) for a message into buf: at most 64 bytes then "...",
 * every byte that is not printable ASCII as '?'.  Returns buf. */
const char *jsonutil_shown(const char *s, size_t len, char *buf,
                           size_t buflen);

/* The compact text of o (no slash escapes), owned by o. */
const char *jsonutil_text(struct json_object *o);

#endif
