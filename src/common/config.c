/* thunder — options from a config file and the command line; see config.h. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "thunder-build.h"

static const struct config_opt *
find_opt(const struct config_opt *opts, const char *name)
{
  for (; opts->name; opts++)
    if (strcmp(opts->name, name) == 0)
      return opts;
  return NULL;
}

static int
parse_bool(const char *s, bool *out)
{
  static const char *const yes[] = { "1", "true", "yes", "on" };
  static const char *const no[] = { "0", "false", "no", "off" };
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return -1;
}

static int
parse_uint(const char *s, int base, uint64_t *out)
{
  char *end;
  if (*s == '\0' || *s == '-' || *s == '+' || isspace((unsigned char)*s))
    return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, base);
  if (errno != 0 || *end != '\0')
    return -1;
  *out = v;
  return 0;
}

int
config_set(const struct config_opt *opts, const char *origin, const char *key,
           const char *value)
{
  const struct config_opt *o = find_opt(opts, key);
  if (o == NULL) {
    fprintf(stderr, "%s: unknown option '%s'\n", origin, key);
    return -1;
  }

  switch (o->type) {
  case CONFIG_TYPE_BOOL:
    if (parse_bool(value, o->value) == -1) {
      fprintf(stderr, "%s: option '%s': '%s' is not a boolean (true/false)\n",
              origin, key, value);
      return -1;
    }
    return 0;
  case CONFIG_TYPE_STRING: {
    char **dst = o->value;
    char *copy = strdup(value);
    if (copy == NULL) {
      fprintf(stderr, "%s: option '%s': %m\n", origin, key);
      return -1;
    }
    free(*dst);
    *dst = copy;
    return 0;
  }
  case CONFIG_TYPE_UINT:
  case CONFIG_TYPE_OCTAL: {
    uint64_t v;
    int base = o->type == CONFIG_TYPE_OCTAL ? 8 : 10;
    if (parse_uint(value, base, &v) == -1) {
      fprintf(stderr, "%s: option '%s': '%s' is not %s number\n", origin,
              key, value, base == 8 ? "an octal" : "a decimal");
      return -1;
    }
    if (v < o->min || v > o->max) {
      fprintf(stderr,
              base == 8
                  ? "%s: option '%s': %s is out of range (%" PRIo64
                    " to %" PRIo64 ")\n"
                  : "%s: option '%s': %s is out of range (%" PRIu64
                    " to %" PRIu64 ")\n",
              origin, key, value, o->min, o->max);
      return -1;
    }
    *(uint64_t *)o->value = v;
    return 0;
  }
  }
  return -1;
}

static char *
trim(char *s)
{
  while (isspace((unsigned char)*s))
    s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1]))
    *--e = '\0';
  return s;
}

int
config_parse_file(const struct config_opt *opts, const char *path)
{
  FILE *fp = fopen(path, "re");
  if (fp == NULL) {
    fprintf(stderr, "%s: %m\n", path);
    return -1;
  }

  struct stat st;
  if (fstat(fileno(fp), &st) == -1 || !S_ISREG(st.st_mode) ||
      st.st_size > CONFIG_FILE_MAX) {
    fprintf(stderr, "%s: not a regular file of at most %d bytes\n", path,
            CONFIG_FILE_MAX);
    fclose(fp);
    return -1;
  }

  CLEANUP_FREE char *line = NULL;
  size_t linecap = 0;
  ssize_t n;
  unsigned lineno = 0;
  int r = 0;
  /* Keys seen so far, to refuse duplicates (a likely mistake). */
  size_t nopts = 0;
  while (opts[nopts].name)
    nopts++;
  CLEANUP_FREE bool *seen = calloc(nopts + 1, sizeof *seen);
  if (seen == NULL) {
    fprintf(stderr, "%s: %m\n", path);
    fclose(fp);
    return -1;
  }

  while ((n = getline(&line, &linecap, fp)) != -1) {
    lineno++;
    if (n > CONFIG_LINE_MAX) {
      fprintf(stderr, "%s:%u: line longer than %d bytes\n", path, lineno,
              CONFIG_LINE_MAX);
      r = -1;
      break;
    }
    if (strlen(line) != (size_t)n) {
      fprintf(stderr, "%s:%u: NUL byte in line\n", path, lineno);
      r = -1;
      break;
    }
    char *s = trim(line);
    if (*s == '\0' || *s == '#')
      continue;
    char *eq = strchr(s, '=');
    if (eq == NULL) {
      fprintf(stderr, "%s:%u: expected 'key = value'\n", path, lineno);
      r = -1;
      break;
    }
    *eq = '\0';
    char *key = trim(s);
    char *value = trim(eq + 1);
    char origin[4200];
    snprintf(origin, sizeof origin, "%s:%u", path, lineno);
    const struct config_opt *o = find_opt(opts, key);
    if (o && strcmp(key, "config") != 0) {
      size_t idx = (size_t)(o - opts);
      if (seen[idx]) {
        fprintf(stderr, "%s: option '%s' given twice\n", origin, key);
        r = -1;
        break;
      }
      seen[idx] = true;
    } else if (o) {
      fprintf(stderr, "%s: option 'config' cannot be set in a config file\n",
              origin);
      r = -1;
      break;
    }
    if (config_set(opts, origin, key, value) == -1) {
      r = -1;
      break;
    }
  }
  if (r == 0 && ferror(fp)) {
    fprintf(stderr, "%s: read error\n", path);
    r = -1;
  }
  fclose(fp);
  return r;
}

void
config_usage(FILE *fp, const char *prog, const struct config_opt *opts)
{
  fprintf(fp, "Usage: %s [OPTION]...\n\nOptions (each also a config-file key):\n",
          prog);
  for (; opts->name; opts++) {
    char flag[96];
    if (opts->type == CONFIG_TYPE_BOOL)
      snprintf(flag, sizeof flag, "--%s", opts->name);
    else
      snprintf(flag, sizeof flag, "--%s %s", opts->name,
               opts->metavar ? opts->metavar : "VALUE");
    fprintf(fp, "  %-32s %s\n", flag, opts->help ? opts->help : "");
  }
  fprintf(fp, "  %-32s %s\n  %-32s %s\n", "--help", "show this help",
          "--version", "show the version");
}

/* Splits "--name=value" / "--name value"; returns the option or NULL. */
static int
arg_split(const struct config_opt *opts, int argc, char **argv, int *i,
          const char **key_out, char *keybuf, size_t keylen,
          const char **value_out)
{
  const char *arg = argv[*i];
  if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
    fprintf(stderr, "unexpected argument '%s'\n", arg);
    return -1;
  }
  arg += 2;
  const char *eq = strchr(arg, '=');
  size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
  if (n >= keylen) {
    fprintf(stderr, "--%.*s: unknown option\n", 64, arg);
    return -1;
  }
  memcpy(keybuf, arg, n);
  keybuf[n] = '\0';
  *key_out = keybuf;
  const struct config_opt *o = find_opt(opts, keybuf);
  if (o == NULL) {
    fprintf(stderr, "--%s: unknown option (see --help)\n", keybuf);
    return -1;
  }
  if (eq)
    *value_out = eq + 1;
  else if (o->type == CONFIG_TYPE_BOOL)
    *value_out = "true";
  else if (*i + 1 < argc)
    *value_out = argv[++*i];
  else {
    fprintf(stderr, "--%s: missing value\n", keybuf);
    return -1;
  }
  return 0;
}

int
config_load(const struct config_opt *opts, const char *prog,
            const char *default_path, int argc, char **argv)
{
  const char *config_path = NULL;

  /* Pass 1: --help, --version, --config. */
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      config_usage(stdout, prog, opts);
      return 1;
    }
    if (strcmp(argv[i], "--version") == 0) {
      printf("%s %s\n", prog, THUNDER_VERSION);
      return 1;
    }
    if (strcmp(argv[i], "--config") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "--config: missing value\n");
        return -1;
      }
      config_path = argv[++i];
    } else if (strncmp(argv[i], "--config=", 9) == 0) {
      config_path = argv[i] + 9;
    }
  }

  if (config_path) {
    if (config_parse_file(opts, config_path) == -1)
      return -1;
  } else if (default_path && access(default_path, F_OK) == 0) {
    if (config_parse_file(opts, default_path) == -1)
      return -1;
  }

  /* Pass 2: every flag, overriding the file. */
  for (int i = 1; i < argc; i++) {
    char keybuf[64];
    const char *key, *value;
    if (arg_split(opts, argc, argv, &i, &key, keybuf, sizeof keybuf,
                  &value) == -1)
      return -1;
    if (strcmp(key, "config") == 0)
      continue;
    char origin[80];
    snprintf(origin, sizeof origin, "--%s", key);
    if (config_set(opts, origin, key, value) == -1)
      return -1;
  }
  return 0;
}

void
config_free(const struct config_opt *opts)
{
  for (; opts->name; opts++) {
    if (opts->type == CONFIG_TYPE_STRING) {
      char **p = opts->value;
      free(*p);
      *p = NULL;
    }
  }
}
