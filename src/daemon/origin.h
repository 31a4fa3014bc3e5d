/* thunder — origin mode: the images of a directory as NBD exports.
 *
 * Each NAME.manifest.json in the directory whose image file matches it
 * (same size, same detected format) becomes the read-only export NAME,
 * backed by the image file.  A bad manifest or image is logged and
 * skipped; the others are still served.
 *
 * Locking: one thread scans at a time (the caller serialises); the
 * registry has its own lock.
 */
#ifndef THUNDER_ORIGIN_H
#define THUNDER_ORIGIN_H

#include "export.h"

/* Brings reg in line with dir: serves every valid image, replaces an
 * export whose manifest version changed (its open connections keep the
 * old one), and withdraws origin exports whose manifest is gone or
 * invalid.  Other exports are left alone.  Returns the number of images
 * served, or -1 with a logged error if dir cannot be read (then nothing
 * is withdrawn).  Call it at start-up and on SIGHUP. */
int origin_scan(struct exports *reg, const char *dir);

struct json_object;

/* The state and counters of origin image name (schemas/node-image.schema.json,
 * state "origin"), or NULL if reg serves no such image. */
struct json_object *origin_image_json(struct exports *reg, const char *name);

/* {"images": [state of each origin image]}. */
struct json_object *origin_list_json(struct exports *reg);

#endif
