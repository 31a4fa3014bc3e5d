/* thunder — node mode: images attached to this node, served from the
 * block cache and fetched on demand from upstream.
 *
 * An attached image is one NBD export NAME (and NAME@manifest, so this
 * node can be a child's upstream) backed by a block cache (blkcache.h)
 * and a fetcher (fetch.h):
 *
 *   read → for each block: cached? read it (a hit)
 *                          else join or start its fetch (a miss)
 *        → readahead: start fetches of the next blocks
 *        → wait for the fetches; each fetched block was verified, stored
 *          in the cache and is copied out
 *
 * Attachments persist in ROOT/attached/NAME.json, so a restarted node
 * serves the same images with the same cache at once; the manifest is
 * taken from the cache directory when it is there and matches the
 * version, else fetched from the upstreams (fetch_manifest).
 *
 * Threads: every function is thread-safe; n->lock serialises attach and
 * detach, the registry has its own lock.
 */
#ifndef THUNDER_NODE_H
#define THUNDER_NODE_H

#include <stdbool.h>
#include <stddef.h>

#include "export.h"
#include "fetch.h"

struct json_object;

struct node_params {
  struct fetch_params fetch;
  unsigned readahead;          /* blocks fetched ahead of a miss; 0: none */
  unsigned commit_interval_ms; /* cache commit batching */
};

struct node;
struct manifest;

/* What the node does beside serving an image — thunderd makes and removes
 * the image's libvirt anchor volume (src/pool).  Both are called with the
 * node's lock held, so they must not call back into node_*. */
struct node_hooks {
  /* Before image name is attached at manifest m (also when it is
   * already attached; replacing says a different version is attached
   * now).  0, or an HTTP status with err filled: the attach fails and
   * nothing changes.  At restore a failure is only logged. */
  int (*attach)(void *opaque, const char *name, const struct manifest *m,
                bool replacing, char *err, size_t errlen);
  /* Before image name is detached, or to undo an attach hook whose
   * attach failed (undo true; failure then only logged).  0, or an HTTP
   * status (409 while VMs depend on the image) with err filled. */
  int (*detach)(void *opaque, const char *name, bool undo, char *err,
                size_t errlen);
  void *opaque;
};

/* A node serving its images through reg, caching under cache_root (made
 * if missing).  NULL with a logged error. */
struct node *node_new(struct exports *reg, const char *cache_root,
                      const struct node_params *p);

/* Sets the hooks (copied); call before node_restore. */
void node_set_hooks(struct node *n, const struct node_hooks *h);

/* Re-attaches every image recorded under the cache root.  Returns how
 * many; images that fail are logged and skipped. */
int node_restore(struct node *n);

/* Attaches image name at version with upstreams (parent first, origin
 * last), or updates the upstreams of an image attached at that version.
 * A different version replaces the image (open connections keep the old
 * one until they end; the old cache stays on disk).  Returns an HTTP
 * status: 201 attached, 200 updated or unchanged, 404 no upstream has
 * the image, 409 they serve another version, 502 no upstream could be
 * asked, 500 local failure; on failure err (errlen) says why and
 * nothing is left attached half-way.  *reply gets the image's state. */
int node_attach(struct node *n, const char *name, const char *version,
                const char *const *uris, size_t nuris,
                struct json_object **reply, char *err, size_t errlen);

/* Detaches an image: withdraws its exports and forgets the attachment
 * (its cache stays on disk for a later attach).  200, 404, or the detach
 * hook's status (409 while VMs depend on the image) and nothing changes. */
int node_detach(struct node *n, const char *name, char *err, size_t errlen);

/* The state and counters of an attached image (schemas/node-image.schema.json),
 * or NULL if it is not attached. */
struct json_object *node_image_json(struct node *n, const char *name);

/* {"images": [state of each attached image]}. */
struct json_object *node_list_json(struct node *n);

/* The daemon is stopping: reads waiting out an upstream outage fail now,
 * and no read waits for one any more (fetch_stop_stalling), so that none
 * holds the shutdown up for a stall timeout. */
void node_stop_stalling(struct node *n);

/* Detaches everything (keeping attachments recorded) and frees n. */
void node_free(struct node *n);

#endif
