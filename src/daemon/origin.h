/* thunder — origin mode: the images of a directory as NBD exports.
 *
 * Each NAME.manifest.json in the directory whose image file matches it
 * (same size, same detected format) becomes the read-only export NAME,
 * backed by the image file.  A bad manifest or image is logged and
 * skipped; the others are still served.
 */
#ifndef THUNDER_ORIGIN_H
#define THUNDER_ORIGIN_H

#include "export.h"

/* Adds an export to reg for every valid image in dir.  Returns the
 * number of exports added, or -1 with a logged error if dir cannot be
 * read. */
int origin_scan(struct exports *reg, const char *dir);

#endif
