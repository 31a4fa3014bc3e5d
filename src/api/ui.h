/* thunder — thunder-api's status page: the static files of src/api/ui/
 * (index.html, app.js, app.css), served at /ui/.
 *
 * The files are read once, at start, from a directory (--ui-dir; the
 * installed copy by default) and kept in memory; only those three names
 * are ever served, so no request path reaches the file system.  The page
 * itself needs no token: it asks the operator for one and sends it with
 * its REST calls.
 */
#ifndef THUNDER_UI_H
#define THUNDER_UI_H

#include <stddef.h>

struct ui;

/* Reads the page's files from dir.  NULL (logged) if one is missing or
 * unreadable. */
struct ui *ui_load(const char *dir);

/* The file name ("" or NULL: index.html): its bytes, length and content
 * type, or NULL if there is no such file. */
const char *ui_file(const struct ui *ui, const char *name, size_t *len,
                    const char **content_type);

void ui_free(struct ui *ui);

#endif
