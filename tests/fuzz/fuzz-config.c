/* thunder — libFuzzer target for config files (src/common/config.c).
 *
 * The input is a config file's bytes ("key = value" lines), read through
 * config_parse_file from a memfd, as thunderd and thunder-api read
 * theirs.  The table has one option of each type with the ranges the
 * programs use.  A file is accepted or refused with a message naming the
 * line; either way nothing leaks and every string option holds a
 * NUL-terminated string no longer than a line.
 *
 * Seeds: tests/fuzz/corpus/config/ (the Ansible templates' shapes and
 * error cases).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool f_origin;
static char *f_images, *f_listen, *f_token_file;
static uint64_t f_port, f_mode, f_size;

static const struct config_opt opts[] = {
  { "origin", CONFIG_TYPE_BOOL, &f_origin, 0, 0, NULL, "origin mode" },
  { "images", CONFIG_TYPE_STRING, &f_images, 0, 0, "DIR", "images" },
  { "listen", CONFIG_TYPE_STRING, &f_listen, 0, 0, "HOST:PORT", "listen" },
  { "token-file", CONFIG_TYPE_STRING, &f_token_file, 0, 0, "FILE", "token" },
  { "max-connections", CONFIG_TYPE_UINT, &f_port, 1, 65535, "N", "conns" },
  { "socket-mode", CONFIG_TYPE_OCTAL, &f_mode, 0, 0777, "MODE", "mode" },
  { "cache-max", CONFIG_TYPE_UINT, &f_size, 0, UINT64_MAX, "BYTES", "size" },
  { NULL },
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  log_init("fuzz-config", "stderr");
  return 0;
}

static void
check_string(const char *s)
{
  if (s && strnlen(s, CONFIG_LINE_MAX) >= CONFIG_LINE_MAX)
    abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  int fd = memfd_create("fuzz-config", MFD_CLOEXEC);
  if (fd == -1 || (size && write(fd, data, size) != (ssize_t)size))
    abort();
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  config_parse_file(opts, path);
  close(fd);
  check_string(f_images);
  check_string(f_listen);
  check_string(f_token_file);
  if (f_mode > 0777 || (f_port != 0 && (f_port < 1 || f_port > 65535)))
    abort();
  config_free(opts);
  f_origin = false;
  f_port = f_mode = f_size = 0;
  return 0;
}
