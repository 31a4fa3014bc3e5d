/* thunder — unit tests of options from config files and the command line
 * (src/common/config.c).
 *
 * The table t_opts has one option of each type plus "config".  Config
 * files are written into a private temp directory; stderr (and stdout for
 * --help) is captured into a file around each call with dup2, so every
 * error test checks the exact message: it names FILE:LINE and the key, or
 * the flag.
 */
#include <CUnit/Basic.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "cunit-run.h"

static bool t_verbose;
static char *t_name;
static uint64_t t_port;
static uint64_t t_mode;
static uint64_t t_size;
static char *t_config;

static const struct config_opt t_opts[] = {
  { "config", CONFIG_TYPE_STRING, &t_config, 0, 0, "FILE", "config file" },
  { "verbose", CONFIG_TYPE_BOOL, &t_verbose, 0, 0, NULL, "talk more" },
  { "name", CONFIG_TYPE_STRING, &t_name, 0, 0, "NAME", "export name" },
  { "port", CONFIG_TYPE_UINT, &t_port, 1, 65535, "PORT", "TCP port" },
  { "mode", CONFIG_TYPE_OCTAL, &t_mode, 0, 0777, "MODE", "socket mode" },
  { "size", CONFIG_TYPE_UINT, &t_size, 0, UINT64_MAX, "BYTES", "a size" },
  { NULL },
};

static char t_dir[64];
static char t_path[128];     /* the test's config file */
static char t_capture[128];  /* where stderr/stdout go while captured */
static char t_msg[8192];     /* what was captured */

static int
suite_init(void)
{
  snprintf(t_dir, sizeof t_dir, "/tmp/test-config.XXXXXX");
  if (mkdtemp(t_dir) == NULL)
    return -1;
  snprintf(t_path, sizeof t_path, "%s/thunder.conf", t_dir);
  snprintf(t_capture, sizeof t_capture, "%s/capture", t_dir);
  return 0;
}

static int
suite_clean(void)
{
  unlink(t_path);
  unlink(t_capture);
  rmdir(t_dir);
  return 0;
}

static void
test_setup(void)
{
  t_verbose = false;
  t_name = NULL;
  t_config = NULL;
  t_port = 10809;
  t_mode = 0600;
  t_size = 0;
  unlink(t_path);
  t_msg[0] = '\0';
}

static void
test_teardown(void)
{
  config_free(t_opts);
}

/* Writes the config file (len bytes, may hold NULs). */
static void
write_file(const char *text, size_t len)
{
  FILE *fp = fopen(t_path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
  CU_ASSERT_EQUAL_FATAL(fwrite(text, 1, len, fp), len);
  CU_ASSERT_EQUAL_FATAL(fclose(fp), 0);
}

#define WRITE_FILE(s) write_file(s, sizeof s - 1)

/* Redirects fd (1 or 2) to the capture file; returns the saved fd. */
static int
capture_begin(int fd)
{
  fflush(stdout);
  fflush(stderr);
  int saved = dup(fd);
  int cap = open(t_capture, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (saved == -1 || cap == -1 || dup2(cap, fd) == -1)
    abort();
  close(cap);
  return saved;
}

/* Restores fd and loads what was written into t_msg. */
static void
capture_end(int fd, int saved)
{
  fflush(stdout);
  fflush(stderr);
  if (dup2(saved, fd) == -1)
    abort();
  close(saved);
  FILE *fp = fopen(t_capture, "r");
  if (fp == NULL)
    abort();
  size_t n = fread(t_msg, 1, sizeof t_msg - 1, fp);
  t_msg[n] = '\0';
  fclose(fp);
}

static int
parse_file(void)
{
  int saved = capture_begin(2);
  int r = config_parse_file(t_opts, t_path);
  capture_end(2, saved);
  return r;
}

/* config_load with a NULL-terminated argument list; captures stderr
 * (fd) or stdout. */
static int
load_fd(int fd, const char *default_path, const char *const *argv)
{
  int argc = 0;
  while (argv[argc])
    argc++;
  int saved = capture_begin(fd);
  int r = config_load(t_opts, "prog", default_path, argc, (char **)argv);
  capture_end(fd, saved);
  return r;
}

#define LOAD(default_path, ...)                                                \
  load_fd(2, default_path, (const char *const[]){ "prog", __VA_ARGS__, NULL })
#define LOAD_STDOUT(...)                                                       \
  load_fd(1, NULL, (const char *const[]){ "prog", __VA_ARGS__, NULL })

/* Checks the captured message is exactly the config file's path followed
 * by rest. */
static void
expect_msg(const char *rest)
{
  char want[8192];
  snprintf(want, sizeof want, "%s%s", t_path, rest);
  CU_ASSERT_STRING_EQUAL(t_msg, want);
  if (strcmp(t_msg, want) != 0)
    fprintf(stdout, "\n    got:  %s    want: %s", t_msg, want);
}

/* ==== config_set ========================================================== */

static void
test_set_each_type(void)
{
  CU_ASSERT_EQUAL(config_set(t_opts, "here", "verbose", "yes"), 0);
  CU_ASSERT_EQUAL(t_verbose, true);
  CU_ASSERT_EQUAL(config_set(t_opts, "here", "name", "disk one"), 0);
  CU_ASSERT_STRING_EQUAL(t_name, "disk one");
  CU_ASSERT_EQUAL(config_set(t_opts, "here", "name", "disk two"), 0);
  CU_ASSERT_STRING_EQUAL(t_name, "disk two");
  CU_ASSERT_EQUAL(config_set(t_opts, "here", "port", "65535"), 0);
  CU_ASSERT_EQUAL(t_port, 65535);
  CU_ASSERT_EQUAL(config_set(t_opts, "here", "mode", "0750"), 0);
  CU_ASSERT_EQUAL(t_mode, 0750);
  CU_ASSERT_EQUAL(config_set(t_opts, "here", "mode", "777"), 0);
  CU_ASSERT_EQUAL(t_mode, 0777);
  CU_ASSERT_EQUAL(config_set(t_opts, "here", "size", "18446744073709551615"),
                  0);
  CU_ASSERT_EQUAL(t_size, UINT64_MAX);
}

static void
test_set_bool_spellings(void)
{
  static const char *const yes[] = { "1", "true", "yes", "on", "TRUE", "Yes" };
  static const char *const no[] = { "0", "false", "no", "off", "OFF", "No" };
  for (size_t i = 0; i < 6; i++) {
    t_verbose = false;
    CU_ASSERT_EQUAL(config_set(t_opts, "o", "verbose", yes[i]), 0);
    CU_ASSERT_EQUAL(t_verbose, true);
    CU_ASSERT_EQUAL(config_set(t_opts, "o", "verbose", no[i]), 0);
    CU_ASSERT_EQUAL(t_verbose, false);
  }
}

static void
test_set_bad_values_keep_old(void)
{
  static const struct {
    const char *key, *value, *msg;
  } cases[] = {
    { "verbose", "maybe",
      "o: option 'verbose': 'maybe' is not a boolean (true/false)\n" },
    { "verbose", "",
      "o: option 'verbose': '' is not a boolean (true/false)\n" },
    { "port", "", "o: option 'port': '' is not a decimal number\n" },
    { "port", "-1", "o: option 'port': '-1' is not a decimal number\n" },
    { "port", "+80", "o: option 'port': '+80' is not a decimal number\n" },
    { "port", " 80", "o: option 'port': ' 80' is not a decimal number\n" },
    { "port", "80 ", "o: option 'port': '80 ' is not a decimal number\n" },
    { "port", "0x50", "o: option 'port': '0x50' is not a decimal number\n" },
    { "port", "0", "o: option 'port': 0 is out of range (1 to 65535)\n" },
    { "port", "65536",
      "o: option 'port': 65536 is out of range (1 to 65535)\n" },
    { "size", "18446744073709551616",
      "o: option 'size': '18446744073709551616' is not a decimal number\n" },
    { "mode", "8", "o: option 'mode': '8' is not an octal number\n" },
    { "mode", "1000", "o: option 'mode': 1000 is out of range (0 to 777)\n" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    t_port = 10809;
    t_mode = 0600;
    t_size = 5;
    t_verbose = false;
    int saved = capture_begin(2);
    int r = config_set(t_opts, "o", cases[i].key, cases[i].value);
    capture_end(2, saved);
    CU_ASSERT_EQUAL(r, -1);
    CU_ASSERT_STRING_EQUAL(t_msg, cases[i].msg);
    CU_ASSERT_EQUAL(t_port, 10809);
    CU_ASSERT_EQUAL(t_mode, 0600);
    CU_ASSERT_EQUAL(t_size, 5);
    CU_ASSERT_EQUAL(t_verbose, false);
  }
}

static void
test_set_unknown(void)
{
  int saved = capture_begin(2);
  int r = config_set(t_opts, "o", "bogus", "1");
  capture_end(2, saved);
  CU_ASSERT_EQUAL(r, -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "o: unknown option 'bogus'\n");
}

/* ==== config files =========================================================== */

static void
test_file_good(void)
{
  WRITE_FILE("# a comment\n"
             "\n"
             "   \t\n"
             "  # indented comment = with equals\n"
             "verbose = yes\n"
             "name=disk one\n"
             "  port   =   8080  \n"
             "mode\t=\t0750\n"
             "size = 0\n");
  CU_ASSERT_EQUAL(parse_file(), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_verbose, true);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_name);
  CU_ASSERT_STRING_EQUAL(t_name, "disk one");
  CU_ASSERT_EQUAL(t_port, 8080);
  CU_ASSERT_EQUAL(t_mode, 0750);
  CU_ASSERT_EQUAL(t_size, 0);
}

static void
test_file_empty(void)
{
  WRITE_FILE("");
  CU_ASSERT_EQUAL(parse_file(), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 10809);
}

static void
test_file_no_final_newline(void)
{
  WRITE_FILE("port = 99");
  CU_ASSERT_EQUAL(parse_file(), 0);
  CU_ASSERT_EQUAL(t_port, 99);
}

/* The value keeps inner '=' signs and spaces; an empty value is allowed
 * for strings. */
static void
test_file_value_with_equals(void)
{
  WRITE_FILE("name = a = b  c\n");
  CU_ASSERT_EQUAL(parse_file(), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_name);
  CU_ASSERT_STRING_EQUAL(t_name, "a = b  c");
}

static void
test_file_crlf(void)
{
  WRITE_FILE("port = 77\r\nverbose = on\r\n");
  CU_ASSERT_EQUAL(parse_file(), 0);
  CU_ASSERT_EQUAL(t_port, 77);
  CU_ASSERT_EQUAL(t_verbose, true);
}

static void
test_file_unknown_key(void)
{
  WRITE_FILE("port = 1\n\n# x\nbogus = 1\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":4: unknown option 'bogus'\n");
}

static void
test_file_bad_bool(void)
{
  WRITE_FILE("verbose = maybe\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: option 'verbose': 'maybe' is not a boolean "
             "(true/false)\n");
  CU_ASSERT_EQUAL(t_verbose, false);
}

static void
test_file_not_a_number(void)
{
  WRITE_FILE("# port\nport = eighty\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":2: option 'port': 'eighty' is not a decimal number\n");
  CU_ASSERT_EQUAL(t_port, 10809);
}

static void
test_file_trailing_garbage(void)
{
  WRITE_FILE("port = 80x\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: option 'port': '80x' is not a decimal number\n");
}

static void
test_file_empty_number(void)
{
  WRITE_FILE("port =\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: option 'port': '' is not a decimal number\n");
}

static void
test_file_out_of_range(void)
{
  WRITE_FILE("port = 70000\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: option 'port': 70000 is out of range (1 to 65535)\n");
  CU_ASSERT_EQUAL(t_port, 10809);
}

static void
test_file_below_range(void)
{
  WRITE_FILE("port = 0\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: option 'port': 0 is out of range (1 to 65535)\n");
}

static void
test_file_bad_octal(void)
{
  WRITE_FILE("mode = 0789\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: option 'mode': '0789' is not an octal number\n");
  CU_ASSERT_EQUAL(t_mode, 0600);
}

static void
test_file_octal_out_of_range(void)
{
  WRITE_FILE("mode = 01000\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: option 'mode': 01000 is out of range (0 to 777)\n");
}

static void
test_file_duplicate_key(void)
{
  WRITE_FILE("port = 1\nname = x\nport = 2\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":3: option 'port' given twice\n");
}

static void
test_file_missing_equals(void)
{
  WRITE_FILE("port = 1\nverbose\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":2: expected 'key = value'\n");
}

static void
test_file_empty_key(void)
{
  WRITE_FILE(" = 5\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: unknown option ''\n");
}

static void
test_file_config_key(void)
{
  WRITE_FILE("port = 1\nconfig = /etc/other.conf\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":2: option 'config' cannot be set in a config file\n");
  CU_ASSERT_PTR_NULL(t_config);
}

/* Writes a file of: head, then a comment line of len bytes counting its
 * newline (if newline), then tail. */
static void
write_with_line(const char *head, size_t len, bool newline, const char *tail)
{
  size_t hl = strlen(head), tl = strlen(tail);
  char *text = malloc(hl + len + tl + 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  memcpy(text, head, hl);
  memset(text + hl, 'x', len);
  text[hl] = '#';
  if (newline)
    text[hl + len - 1] = '\n';
  memcpy(text + hl + len, tail, tl);
  write_file(text, hl + len + tl);
  free(text);
}

/* "FILE:LINE: line longer than CONFIG_LINE_MAX bytes\n" */
static void
expect_too_long(unsigned lineno)
{
  char rest[128];
  snprintf(rest, sizeof rest, ":%u: line longer than %d bytes\n", lineno,
           CONFIG_LINE_MAX);
  expect_msg(rest);
}

/* The longest line accepted is CONFIG_LINE_MAX bytes with its newline. */
static void
test_file_longest_line(void)
{
  write_with_line("", CONFIG_LINE_MAX, true, "port = 3\n");
  CU_ASSERT_EQUAL(parse_file(), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 3);
}

/* ... or without one, at the end of the file. */
static void
test_file_longest_last_line(void)
{
  write_with_line("port = 3\n", CONFIG_LINE_MAX, false, "");
  CU_ASSERT_EQUAL(parse_file(), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 3);
}

static void
test_file_line_too_long(void)
{
  write_with_line("port = 3\n# next line is too long\n", CONFIG_LINE_MAX + 1,
                  true, "mode = 0700\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_too_long(3);
  CU_ASSERT_EQUAL(t_mode, 0600);
}

static void
test_file_last_line_too_long(void)
{
  write_with_line("", CONFIG_LINE_MAX + 1, false, "");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_too_long(1);
}

/* A long value must not be cut at some buffer boundary and its tail read
 * as another line. */
static void
test_file_long_value(void)
{
  char *text = malloc(16384);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  strcpy(text, "name = ");
  size_t n = strlen(text);
  memset(text + n, 'v', 9000);
  strcpy(text + n + 9000, "\n");
  write_file(text, strlen(text));
  free(text);
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_too_long(1);
  CU_ASSERT_PTR_NULL(t_name);
}

/* A NUL byte would silently cut the value: refused, naming the line. */
static void
test_file_nul_byte(void)
{
  WRITE_FILE("port = 1\nname = ab\0cd\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":2: NUL byte in line\n");
}

static void
test_file_nul_in_comment(void)
{
  WRITE_FILE("# a\0b\nport = 1\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":1: NUL byte in line\n");
}

static void
test_file_too_large(void)
{
  size_t len = CONFIG_FILE_MAX + 1;
  char *text = malloc(len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  for (size_t i = 0; i < len; i++)
    text[i] = (i % 64 == 63) ? '\n' : '#';
  write_file(text, len);
  free(text);
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(": not a regular file of at most 1048576 bytes\n");
}

static void
test_file_largest(void)
{
  size_t len = CONFIG_FILE_MAX;
  char *text = malloc(len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  for (size_t i = 0; i < len; i++)
    text[i] = (i % 64 == 63) ? '\n' : '#';
  write_file(text, len);
  free(text);
  CU_ASSERT_EQUAL(parse_file(), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
}

static void
test_file_directory(void)
{
  int saved = capture_begin(2);
  int r = config_parse_file(t_opts, t_dir);
  capture_end(2, saved);
  CU_ASSERT_EQUAL(r, -1);
  char want[256];
  snprintf(want, sizeof want,
           "%s: not a regular file of at most 1048576 bytes\n", t_dir);
  CU_ASSERT_STRING_EQUAL(t_msg, want);
}

static void
test_file_missing(void)
{
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(": No such file or directory\n");
}

/* An error stops the parse: later lines are not applied. */
static void
test_file_error_stops(void)
{
  WRITE_FILE("port = 5\nbogus = 1\nmode = 0700\n");
  CU_ASSERT_EQUAL(parse_file(), -1);
  expect_msg(":2: unknown option 'bogus'\n");
  CU_ASSERT_EQUAL(t_mode, 0600);
}

/* ==== command line ============================================================ */

static void
test_args_separate_value(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--port", "8080", "--name", "disk"), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 8080);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_name);
  CU_ASSERT_STRING_EQUAL(t_name, "disk");
}

static void
test_args_equals_value(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--port=8081", "--mode=0640", "--name="), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 8081);
  CU_ASSERT_EQUAL(t_mode, 0640);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_name);
  CU_ASSERT_STRING_EQUAL(t_name, "");
}

static void
test_args_bool_alone(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--verbose", "--port", "1"), 0);
  CU_ASSERT_EQUAL(t_verbose, true);
  CU_ASSERT_EQUAL(t_port, 1);
}

static void
test_args_bool_value(void)
{
  t_verbose = true;
  CU_ASSERT_EQUAL(LOAD(NULL, "--verbose=no"), 0);
  CU_ASSERT_EQUAL(t_verbose, false);
}

/* A value that looks like a flag is still the value. */
static void
test_args_value_like_flag(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--name", "--verbose"), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_name);
  CU_ASSERT_STRING_EQUAL(t_name, "--verbose");
  CU_ASSERT_EQUAL(t_verbose, false);
}

static void
test_args_override_file(void)
{
  WRITE_FILE("port = 1\nname = from-file\nmode = 0700\n");
  CU_ASSERT_EQUAL(LOAD(NULL, "--port", "2", "--config", t_path,
                       "--name=from-args"),
                  0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_name);
  CU_ASSERT_STRING_EQUAL(t_name, "from-args");
  CU_ASSERT_EQUAL(t_mode, 0700); /* from the file */
}

static void
test_args_config_equals(void)
{
  WRITE_FILE("port = 4\n");
  char arg[256];
  snprintf(arg, sizeof arg, "--config=%s", t_path);
  CU_ASSERT_EQUAL(LOAD(NULL, arg), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 4);
}

static void
test_args_default_path(void)
{
  WRITE_FILE("port = 5\n");
  CU_ASSERT_EQUAL(LOAD(t_path, "--verbose"), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 5);
  CU_ASSERT_EQUAL(t_verbose, true);
}

static void
test_args_default_path_missing(void)
{
  CU_ASSERT_EQUAL(LOAD(t_path, "--port", "6"), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 6);
}

/* --config replaces the default file, which is not read. */
static void
test_args_config_replaces_default(void)
{
  WRITE_FILE("port = 7\n");
  char other[256];
  snprintf(other, sizeof other, "%s/other.conf", t_dir);
  FILE *fp = fopen(other, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
  fputs("mode = 0711\n", fp);
  fclose(fp);
  CU_ASSERT_EQUAL(LOAD(t_path, "--config", other), 0);
  unlink(other);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_mode, 0711);
  CU_ASSERT_EQUAL(t_port, 10809);
}

static void
test_args_config_missing_file(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--config", t_path), -1);
  expect_msg(": No such file or directory\n");
}

static void
test_args_config_bad_file(void)
{
  WRITE_FILE("port = 1\nport = 2\n");
  CU_ASSERT_EQUAL(LOAD(NULL, "--port", "9", "--config", t_path), -1);
  expect_msg(":2: option 'port' given twice\n");
}

static void
test_args_missing_value(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--verbose", "--port"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "--port: missing value\n");
}

static void
test_args_config_missing_value(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--config"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "--config: missing value\n");
}

static void
test_args_unknown_flag(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--bogus", "1"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "--bogus: unknown option (see --help)\n");
}

static void
test_args_unknown_flag_equals(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--bogus=1"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "--bogus: unknown option (see --help)\n");
}

static void
test_args_very_long_flag(void)
{
  char arg[300];
  memset(arg, 'k', sizeof arg - 1);
  arg[0] = arg[1] = '-';
  arg[sizeof arg - 1] = '\0';
  CU_ASSERT_EQUAL(LOAD(NULL, arg), -1);
  char want[128];
  snprintf(want, sizeof want, "--%.64s: unknown option\n", arg + 2);
  CU_ASSERT_STRING_EQUAL(t_msg, want);
}

static void
test_args_positional(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--port", "1", "extra"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "unexpected argument 'extra'\n");
}

static void
test_args_single_dash(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "-p"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "unexpected argument '-p'\n");
}

static void
test_args_double_dash_alone(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "unexpected argument '--'\n");
}

static void
test_args_bad_value(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--port", "http"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg,
                         "--port: option 'port': 'http' is not a decimal "
                         "number\n");
  CU_ASSERT_EQUAL(t_port, 10809);
}

static void
test_args_bad_bool(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--verbose=maybe"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "--verbose: option 'verbose': 'maybe' is not "
                                "a boolean (true/false)\n");
}

static void
test_args_out_of_range(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--mode", "01777"), -1);
  CU_ASSERT_STRING_EQUAL(t_msg, "--mode: option 'mode': 01777 is out of range "
                                "(0 to 777)\n");
}

/* A flag given twice on the command line: the last one wins. */
static void
test_args_repeated(void)
{
  CU_ASSERT_EQUAL(LOAD(NULL, "--port", "1", "--port=2"), 0);
  CU_ASSERT_EQUAL(t_port, 2);
}

static void
test_args_none(void)
{
  static const char *const argv[] = { "prog", NULL };
  CU_ASSERT_EQUAL(load_fd(2, NULL, argv), 0);
  CU_ASSERT_STRING_EQUAL(t_msg, "");
  CU_ASSERT_EQUAL(t_port, 10809);
}

static void
test_args_help(void)
{
  int r = LOAD_STDOUT("--port", "--help");
  CU_ASSERT_EQUAL(r, 1);
  CU_ASSERT(strncmp(t_msg, "Usage: prog [OPTION]...\n", 24) == 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, "--port PORT"));
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, "TCP port"));
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, "--verbose "));
  CU_ASSERT_PTR_NULL(strstr(t_msg, "--verbose VALUE"));
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, "--help"));
  CU_ASSERT_EQUAL(t_port, 10809); /* nothing was applied */
}

/* --help wins even over a broken config file, which is not read. */
static void
test_args_help_before_errors(void)
{
  WRITE_FILE("bogus\n");
  int r = LOAD_STDOUT("--config", t_path, "-h");
  CU_ASSERT_EQUAL(r, 1);
  CU_ASSERT(strncmp(t_msg, "Usage: prog", 11) == 0);
}

static void
test_args_version(void)
{
  int r = LOAD_STDOUT("--version");
  CU_ASSERT_EQUAL(r, 1);
  CU_ASSERT(strncmp(t_msg, "prog ", 5) == 0);
  CU_ASSERT(strlen(t_msg) > 6 && t_msg[strlen(t_msg) - 1] == '\n');
}

static void
test_free_strings(void)
{
  CU_ASSERT_EQUAL(config_set(t_opts, "o", "name", "x"), 0);
  CU_ASSERT_EQUAL(config_set(t_opts, "o", "config", "y"), 0);
  config_free(t_opts);
  CU_ASSERT_PTR_NULL(t_name);
  CU_ASSERT_PTR_NULL(t_config);
  config_free(t_opts); /* twice is harmless */
}

#define T(name) { #name, test_##name }

static const struct cunit_test tests[] = {
  T(set_each_type),
  T(set_bool_spellings),
  T(set_bad_values_keep_old),
  T(set_unknown),
  T(file_good),
  T(file_empty),
  T(file_no_final_newline),
  T(file_value_with_equals),
  T(file_crlf),
  T(file_unknown_key),
  T(file_bad_bool),
  T(file_not_a_number),
  T(file_trailing_garbage),
  T(file_empty_number),
  T(file_out_of_range),
  T(file_below_range),
  T(file_bad_octal),
  T(file_octal_out_of_range),
  T(file_duplicate_key),
  T(file_missing_equals),
  T(file_empty_key),
  T(file_config_key),
  T(file_longest_line),
  T(file_longest_last_line),
  T(file_line_too_long),
  T(file_last_line_too_long),
  T(file_long_value),
  T(file_nul_byte),
  T(file_nul_in_comment),
  T(file_too_large),
  T(file_largest),
  T(file_directory),
  T(file_missing),
  T(file_error_stops),
  T(args_separate_value),
  T(args_equals_value),
  T(args_bool_alone),
  T(args_bool_value),
  T(args_value_like_flag),
  T(args_override_file),
  T(args_config_equals),
  T(args_default_path),
  T(args_default_path_missing),
  T(args_config_replaces_default),
  T(args_config_missing_file),
  T(args_config_bad_file),
  T(args_missing_value),
  T(args_config_missing_value),
  T(args_unknown_flag),
  T(args_unknown_flag_equals),
  T(args_very_long_flag),
  T(args_positional),
  T(args_single_dash),
  T(args_double_dash_alone),
  T(args_bad_value),
  T(args_bad_bool),
  T(args_out_of_range),
  T(args_repeated),
  T(args_none),
  T(args_help),
  T(args_help_before_errors),
  T(args_version),
  T(free_strings),
};

int
main(void)
{
  static const struct cunit_suite suite = {
    "config", suite_init, suite_clean, test_setup, test_teardown,
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
