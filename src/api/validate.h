/* thunder — thunder-api's request validation: a parsed body (json-c)
 * becomes a plain struct, field by field, or one message naming the
 * field ("field 'placement.strategy': 'random' is not spread or pack")
 * that the route answers with 400.  Unknown fields are refused.  Pure:
 * no store, no HTTP. */
#ifndef THUNDER_VALIDATE_H
#define THUNDER_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "provision.h"
#include "store.h"

struct json_object;

#define VALIDATE_NODE_NAME_MAX 64   /* the planner's limit */
#define VALIDATE_CLUSTER_NAME_MAX 48
#define VALIDATE_URL_MAX 1024
#define VALIDATE_KEY_MAX 255        /* Idempotency-Key */

/* POST /v1/nodes into *n (pointers into body): name, nbd_uri
 * (nbd://HOST:PORT, or nbds://HOST:PORT: NBD over TLS), control_url (http://HOST:PORT), capacity, labels.
 * 0, or -1 with err. */
int validate_node(struct json_object *body, struct store_node *n, char *err,
                  size_t errlen);

/* POST /v1/images: name, origin (nbd:// or nbds://HOST:PORT), optional version (64
 * lowercase hex digits; *version NULL when absent).  0 or -1. */
int validate_image(struct json_object *body, const char **name,
                   const char **origin, const char **version, char *err,
                   size_t errlen);

/* POST /v1/clusters into *q (pointers into body; key and hash left
 * NULL); counts up to max_count.  0 or -1. */
int validate_cluster(struct json_object *body, unsigned max_count,
                     struct provision_request *q, char *err, size_t errlen);

/* An Idempotency-Key header: 1 to VALIDATE_KEY_MAX printable ASCII
 * characters without spaces.  0 or -1. */
int validate_idempotency_key(const char *key, char *err, size_t errlen);

/* A node name: the image name rule, at most VALIDATE_NODE_NAME_MAX. */
bool validate_node_name(const char *s);

/* A cluster id: STORE_ID_LEN lowercase hex digits. */
bool validate_cluster_id(const char *id);

/* "nbd://HOST:PORT" or "nbds://HOST:PORT" (NBD over TLS) with nothing
 * after the port. */
bool validate_nbd_base(const char *s);

#endif
