/* thunder — what thunderctl's command files share; see cliutil.h. */
#include "cliutil.h"

#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"
#include "pool.h"

struct cli_global cli_global = { NULL, NULL, NULL, NULL, NULL, NULL };

/* ---- options ---------------------------------------------------------------- */

void
cli_getopt_start(void)
{
  optind = 0; /* glibc: restart scanning */
  opterr = 0;
}

int
cli_option_error(const char *cmd, char **argv, int c)
{
  /* optopt is the letter of an unknown short option, 0 for a long one
   * (then argv[optind - 1] is the whole argument). */
  if (c == ':')
    fprintf(stderr, PROG ": %s: option '%s' needs a value\n", cmd,
            argv[optind - 1]);
  else if (optopt != 0)
    fprintf(stderr, PROG ": %s: unknown option '-%c'; see '" PROG " %s --help'\n",
            cmd, optopt, cmd);
  else
    fprintf(stderr, PROG ": %s: unknown option '%s'; see '" PROG " %s --help'\n",
            cmd, argv[optind - 1], cmd);
  return 1;
}

bool
cli_args_left(const char *cmd, int argc, char **argv, int want,
              const char *what)
{
  if (argc - optind == want)
    return true;
  if (what)
    fprintf(stderr, PROG ": %s: expected %s; see '" PROG " %s --help'\n", cmd,
            what, cmd);
  else
    fprintf(stderr, PROG ": %s: unexpected argument '%s'; see '" PROG " %s --help'\n",
            cmd, argv[optind], cmd);
  return false;
}

bool
cli_name_arg(const char *cmd, int argc, char **argv, const char **name)
{
  if (!cli_args_left(cmd, argc, argv, 1, "one NAME"))
    return false;
  *name = argv[optind];
  return cli_check_name(*name);
}

const char *
cli_env(const char *name)
{
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

int
cli_parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
  uint64_t v = 0;
  if (*s == '\0')
    return -1;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    v = v * 10 + (uint64_t)(*p - '0');
    if (v > max)
      return -1;
  }
  if (v < min)
    return -1;
  *out = (unsigned)v;
  return 0;
}

int
cli_uint_option(const char *opt, const char *s, const char *unit,
                unsigned min, unsigned max, unsigned *out)
{
  if (cli_parse_uint(s, min, max, out) == 0)
    return 0;
  fprintf(stderr, PROG ": %s '%s': expected %s from %u to %u\n", opt, s, unit,
          min, max);
  return -1;
}

int
cli_parse_memory(const char *s, unsigned *mib)
{
  size_t l = strlen(s);
  if (l > 0 && (s[l - 1] < '0' || s[l - 1] > '9')) {
    uint64_t bytes;
    if (pool_parse_size(s, &bytes) < 0 || bytes == 0 ||
        bytes % (1024 * 1024) != 0 || bytes / (1024 * 1024) > 16u * 1024 * 1024)
      return -1;
    *mib = (unsigned)(bytes / (1024 * 1024));
    return 0;
  }
  return cli_parse_uint(s, 1, 16u * 1024 * 1024, mib);
}

bool
cli_check_name(const char *name)
{
  if (manifest_name_valid(name))
    return true;
  fprintf(stderr, PROG ": image name '%s' is not valid: use 1-%d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'\n",
          name, MANIFEST_NAME_MAX);
  return false;
}

int
cli_parse_version(const char *version, char hex[DIGEST_HEX_LEN + 1])
{
  uint8_t d[DIGEST_LEN];
  /* digest_from_hex wants exactly DIGEST_HEX_LEN digits. */
  if (digest_from_hex(version, d) == -1) {
    fprintf(stderr, PROG ": --version '%s': expected 64 hex digits (the version printed by 'image add')\n",
            version);
    return -1;
  }
  digest_to_hex(d, hex);
  return 0;
}

/* ---- printing ---------------------------------------------------------------- */

void
cli_print_json(struct json_object *o)
{
  printf("%s\n", json_object_to_json_string_ext(
                     o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                            JSON_C_TO_STRING_NOSLASHESCAPE));
}

const char *
cli_get_str(struct json_object *o, const char *key, const char *fallback)
{
  struct json_object *v;
  if (o && json_object_object_get_ex(o, key, &v) &&
      json_object_is_type(v, json_type_string))
    return json_object_get_string(v);
  return fallback;
}

bool
cli_get_u64(struct json_object *o, const char *key, uint64_t *out)
{
  struct json_object *v;
  if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
      !json_object_is_type(v, json_type_int))
    return false;
  *out = json_object_get_uint64(v);
  return true;
}

const char *
cli_human_bytes(uint64_t n, char *buf, size_t len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double v = (double)n;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%" PRIu64 " B", n);
  else
    snprintf(buf, len, "%.1f %s", v, units[u]);
  return buf;
}

void
cli_widen(int *w, const char *s)
{
  int l = (int)strlen(s);
  if (l > *w)
    *w = l;
}
