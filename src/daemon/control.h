/* thunder — thunderd's control endpoint: HTTP/JSON over libmicrohttpd.
 *
 *   GET    /healthz                 200 {"status":"ok"}          (no token)
 *   GET    /v1/images               200 {"images":[...]}
 *   PUT    /v1/images/{name}        attach: body schemas/node-attach.schema.json
 *   GET    /v1/images/{name}        state and counters
 *   DELETE /v1/images/{name}        detach
 *   GET    /v1/vms                  200 {"vms":[...]}
 *   PUT    /v1/vms/{name}           create: body schemas/node-vm.schema.json
 *   GET    /v1/vms/{name}           state (schemas/node-vm-state.schema.json)
 *   DELETE /v1/vms/{name}           destroy, undefine, delete the volume
 *   GET    /v1/node                 the node (schemas/node-info.schema.json)
 *
 * Every /v1 request needs "Authorization: Bearer TOKEN" (compared in
 * constant time); else 401.  Bodies are capped (CONTROL_BODY_MAX, 413),
 * parsed with a nesting limit and validated field by field (400 naming
 * the field).  Every error reply is {"error":{"code":C,"message":M}}.
 * This module is the endpoint's routes and validation on the shared
 * service core (common/httpsvc.h); what the requests do is the caller's
 * (struct control_ops), which report a result kind, never an HTTP status.
 *
 * Threads: the ops are called from libmicrohttpd's threads, several at
 * once; they must be thread-safe.
 */
#ifndef THUNDER_CONTROL_H
#define THUNDER_CONTROL_H

#include <stddef.h>

struct json_object;

#define CONTROL_BODY_MAX (64 * 1024)
#define CONTROL_UPSTREAMS_MAX 16
#define CONTROL_URI_MAX 4096

/* A validated attach request. */
struct control_attach {
  const char *name;
  const char *version;           /* 64 lowercase hex digits */
  const char *const *upstreams;  /* NBD URIs, parent first, origin last */
  size_t nupstreams;             /* 1..CONTROL_UPSTREAMS_MAX */
};

/* Limits of a VM request (PUT /v1/vms/{name}). */
#define CONTROL_VCPUS_MAX 256
#define CONTROL_MEMORY_MIN_MIB 16
#define CONTROL_MEMORY_MAX_MIB 4194304
#define CONTROL_DISK_MAX_GIB 65536

enum control_accel {
  CONTROL_ACCEL_AUTO, /* also when the body does not say */
  CONTROL_ACCEL_KVM,
  CONTROL_ACCEL_TCG,
};

/* A validated VM request. */
struct control_vm {
  const char *name;         /* the VM (domain) name */
  const char *image;        /* an image name (manifest_name_valid) */
  unsigned vcpus;           /* 1..CONTROL_VCPUS_MAX */
  unsigned memory_mib;      /* CONTROL_MEMORY_MIN_MIB..CONTROL_MEMORY_MAX_MIB */
  unsigned disk_gib;        /* 1..CONTROL_DISK_MAX_GIB; 0: not given */
  enum control_accel accel;
};

/* What an op did; control.c alone maps it to an HTTP status (in
 * brackets). */
enum control_result {
  CONTROL_OK,          /* done; *reply is the body [200] */
  CONTROL_CREATED,     /* made something new [201] */
  CONTROL_INVALID,     /* the request cannot be done as asked [400] */
  CONTROL_NOT_FOUND,   /* no such image or VM [404] */
  CONTROL_CONFLICT,    /* refused in the current state [409] */
  CONTROL_INTERNAL,    /* a local failure [500] */
  CONTROL_UPSTREAM,    /* no upstream could be asked [502] */
  CONTROL_UNAVAILABLE, /* libvirt does not answer [503] */
  CONTROL_NO_SPACE,    /* the cache cannot hold it [507] */
};

/* Each op returns what it did.  On success it may set *reply to a new
 * JSON object (the body); on failure it writes a message into err
 * (errlen bytes) and may set *code to a static error code string
 * ("not_found", "conflict", "bad_gateway", "no_pool", ...). */
struct control_ops {
  enum control_result (*attach)(void *opaque,
                                const struct control_attach *req,
                                struct json_object **reply,
                                const char **code, char *err, size_t errlen);
  enum control_result (*detach)(void *opaque, const char *name,
                                struct json_object **reply,
                                const char **code, char *err, size_t errlen);
  enum control_result (*get)(void *opaque, const char *name,
                             struct json_object **reply, const char **code,
                             char *err, size_t errlen);
  enum control_result (*list)(void *opaque, struct json_object **reply,
                              const char **code, char *err, size_t errlen);
  /* PUT, GET and DELETE /v1/vms/{name}, GET /v1/vms and GET /v1/node.
   * NULL: 501. */
  enum control_result (*vm_put)(void *opaque, const struct control_vm *req,
                                struct json_object **reply,
                                const char **code, char *err, size_t errlen);
  enum control_result (*vm_get)(void *opaque, const char *name,
                                struct json_object **reply,
                                const char **code, char *err, size_t errlen);
  enum control_result (*vm_delete)(void *opaque, const char *name,
                                   struct json_object **reply,
                                   const char **code, char *err,
                                   size_t errlen);
  enum control_result (*vm_list)(void *opaque, struct json_object **reply,
                                 const char **code, char *err,
                                 size_t errlen);
  enum control_result (*node_info)(void *opaque, struct json_object **reply,
                                   const char **code, char *err,
                                   size_t errlen);
  /* GET /v1/cache (the node's cache) and POST /v1/cache/gc (remove the
   * unattached versions).  NULL: 501. */
  enum control_result (*cache_get)(void *opaque, struct json_object **reply,
                                   const char **code, char *err,
                                   size_t errlen);
  enum control_result (*cache_gc)(void *opaque, struct json_object **reply,
                                  const char **code, char *err,
                                  size_t errlen);
  /* GET /metrics: the Prometheus text exposition into *text (heap) and
   * *len.  NULL: 501. */
  enum control_result (*metrics)(void *opaque, char **text, size_t *len,
                                 const char **code, char *err,
                                 size_t errlen);
  void *opaque;
};

struct control;

/* Starts the endpoint on listen ("HOST:PORT", "[V6]:PORT"; port 0 picks
 * one, see control_port) requiring token.  NULL with a logged error. */
struct control *control_new(const char *listen, const char *token,
                            const struct control_ops *ops);

/* The TCP port it listens on. */
unsigned control_port(const struct control *c);

/* Stops it (waiting for requests in progress) and frees c. */
void control_free(struct control *c);

/* Reads a token file: one line, 16..256 printable ASCII characters,
 * surrounding whitespace ignored.  The file must not be readable or
 * writable by others (mode & 0007 == 0).  Returns a heap string, or NULL
 * with a logged error naming the file. */
char *control_read_token(const char *path);

#endif
