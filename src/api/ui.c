/* thunder — thunder-api's status page files; see ui.h. */
#include "ui.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"

#define COMPONENT "ui"
/* Largest page file read. */
#define UI_FILE_MAX (1024 * 1024)

static const struct {
  const char *name;
  const char *type;
} files[] = {
  { "index.html", "text/html; charset=utf-8" },
  { "app.js", "text/javascript; charset=utf-8" },
  { "app.css", "text/css; charset=utf-8" },
};
#define NFILES (sizeof files / sizeof files[0])

struct ui {
  char *data[NFILES];
  size_t len[NFILES];
};

/* Reads dir/name whole into *out (at most UI_FILE_MAX bytes). */
static int
read_file(const char *dir, const char *name, char **out, size_t *len)
{
  char path[PATH_MAX];
  struct stat st;
  int n = snprintf(path, sizeof path, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= sizeof path) {
    log_error(COMPONENT, "%s/%s: path too long", dir, name);
    return -1;
  }
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd == -1 || fstat(fd, &st) == -1) {
    log_error(COMPONENT, "%s: %m (the status page's files; see --ui-dir)",
              path);
    return -1;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > UI_FILE_MAX) {
    log_error(COMPONENT, "%s: not a regular file of at most %d bytes", path,
              UI_FILE_MAX);
    return -1;
  }
  char *buf = malloc((size_t)st.st_size + 1);
  if (buf == NULL) {
    log_error(COMPONENT, "%s: out of memory", path);
    return -1;
  }
  size_t done = 0;
  while (done < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + done, (size_t)st.st_size - done);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      log_error(COMPONENT, "read: %s: %s", path, r == 0 ? "short file" : strerror(errno));
      free(buf);
      return -1;
    }
    done += (size_t)r;
  }
  buf[done] = '\0';
  *out = buf;
  *len = done;
  return 0;
}

struct ui *
ui_load(const char *dir)
{
  struct ui *ui = calloc(1, sizeof *ui);
  if (ui == NULL) {
    log_error(COMPONENT, "calloc: %m");
    return NULL;
  }
  for (size_t i = 0; i < NFILES; i++)
    if (read_file(dir, files[i].name, &ui->data[i], &ui->len[i]) == -1) {
      ui_free(ui);
      return NULL;
    }
  return ui;
}

const char *
ui_file(const struct ui *ui, const char *name, size_t *len,
        const char **content_type)
{
  if (name == NULL || name[0] == '\0')
    name = "index.html";
  for (size_t i = 0; i < NFILES; i++)
    if (strcmp(name, files[i].name) == 0) {
      *len = ui->len[i];
      *content_type = files[i].type;
      return ui->data[i];
    }
  return NULL;
}

void
ui_free(struct ui *ui)
{
  if (ui == NULL)
    return;
  for (size_t i = 0; i < NFILES; i++)
    free(ui->data[i]);
  free(ui);
}
