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
#include <stdint.h>

#include "cachemgr.h"
#include "export.h"
#include "fetch.h"

struct json_object;

struct node_params {
  struct fetch_params fetch;
  unsigned readahead;          /* blocks fetched ahead of a miss; 0: none */
  unsigned commit_interval_ms; /* cache commit batching */
  struct cachemgr_params cache; /* capacity (cachemgr.h) */
};

struct node;
struct manifest;

/* What an attach or detach did, or why it failed (the node speaks no
 * HTTP: thunderd's control ops map these for control.c). */
enum node_result {
  NODE_OK,          /* done: updated, unchanged or detached */
  NODE_ATTACHED,    /* a new attachment (or a new version) */
  NODE_INVALID,     /* a bad name, version or upstream list */
  NODE_NOT_FOUND,   /* not attached; or no upstream has the image */
  NODE_CONFLICT,    /* refused in the current state (another version,
                       VMs depend on the image, ...) */
  NODE_UPSTREAM,    /* no upstream could be asked, or it sent garbage */
  NODE_UNAVAILABLE, /* libvirt does not answer (the hooks) */
  NODE_INTERNAL,    /* a local failure */
  NODE_NO_SPACE,    /* the cache cannot hold the version's manifest and
                       bitmap (cachemgr.h: cap, free-space floor) */
};

/* What the node does beside serving an image — thunderd makes and removes
 * the image's libvirt anchor volume (src/pool).  Both are called with the
 * node's lock held, so they must not call back into node_*. */
struct node_hooks {
  /* Before image name is attached at manifest m (also when it is
   * already attached; replacing says a different version is attached
   * now).  NODE_OK, or a failure with err filled: the attach fails and
   * nothing changes.  At restore a failure is only logged. */
  enum node_result (*attach)(void *opaque, const char *name,
                             const struct manifest *m, bool replacing,
                             char *err, size_t errlen);
  /* Before image name is detached, or to undo an attach hook whose
   * attach failed (undo true; failure then only logged).  NODE_OK, or a
   * failure (NODE_CONFLICT while VMs depend on the image) with err
   * filled. */
  enum node_result (*detach)(void *opaque, const char *name, bool undo,
                             char *err, size_t errlen);
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
 * one until they end; the old cache stays on disk).  Returns
 * NODE_ATTACHED, NODE_OK (updated or unchanged), NODE_NOT_FOUND (no
 * upstream has the image), NODE_CONFLICT (they serve another version),
 * NODE_UPSTREAM (no upstream could be asked), NODE_NO_SPACE (the cache
 * cannot hold the version's manifest and bitmap), NODE_INTERNAL, or a hook's
 * failure; on failure err (errlen) says why and nothing is left attached
 * half-way.  *reply gets the image's state. */
enum node_result node_attach(struct node *n, const char *name,
                             const char *version, const char *const *uris,
                             size_t nuris, struct json_object **reply,
                             char *err, size_t errlen);

/* Detaches an image: withdraws its exports and forgets the attachment
 * (its cache stays on disk for a later attach).  NODE_OK,
 * NODE_NOT_FOUND, or the detach hook's failure (NODE_CONFLICT while VMs
 * depend on the image) and nothing changes. */
enum node_result node_detach(struct node *n, const char *name, char *err,
                             size_t errlen);

/* The state and counters of an attached image (schemas/node-image.schema.json),
 * or NULL if it is not attached. */
struct json_object *node_image_json(struct node *n, const char *name);

/* Adds the latency histograms of attached image name's reads to hit
 * (served whole from the cache) and miss (waited for a fetch), which the
 * caller set up with histogram_io_bounds.  -1 if it is not attached. */
struct histogram;
int node_image_histograms(struct node *n, const char *name,
                          struct histogram *hit, struct histogram *miss);

/* {"images": [state of each attached image]}. */
struct json_object *node_list_json(struct node *n);

/* The daemon is stopping: reads waiting out an upstream outage fail now,
 * and no read waits for one any more (fetch_stop_stalling), so that none
 * holds the shutdown up for a stall timeout. */
void node_stop_stalling(struct node *n);

/* The node's cache as a whole (cachemgr_json): capacity, totals, each
 * version on disk with its bytes and whether it is attached.  NULL on
 * allocation failure.  For GET /v1/cache and thunderctl cache show. */
struct json_object *node_cache_json(struct node *n);

/* Frees space now: removes every version no image is attached at (its
 * blocks and directory).  Returns the bytes freed.  For POST
 * /v1/cache/gc and thunderctl cache gc. */
uint64_t node_cache_gc(struct node *n);

/* Detaches everything (keeping attachments recorded) and frees n. */
void node_free(struct node *n);

#endif
