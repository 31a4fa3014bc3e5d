/* thunder — thunderd registers itself with thunder-api and heartbeats
 * (docs/api.md "Nodes", docs/thunderd.md "Registration").  See register.c.
 *
 * register_config_new() turns thunderd's options into a checked
 * configuration (defaults filled in); register_start() runs one
 * background thread that POSTs /v1/nodes until the API accepts the node,
 * then POSTs /v1/nodes/{name}/heartbeat every interval, registering again
 * when the API answers 404.  register_stop() ends it at once, even in the
 * middle of a request.
 *
 * Threads: register_start and register_stop are called from one thread
 * (thunderd's main), register_cancel from any; nothing else is shared.  The helpers above them are
 * pure or read only the host's state, and are thread-safe.
 */
#ifndef THUNDER_REGISTER_H
#define THUNDER_REGISTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;
struct curlbuf_tls;

/* Longest node name (the planner's limit), and of a label. */
#define REGISTER_NAME_MAX 64
/* The capacity the API takes (schemas/api-node-register.schema.json). */
#define REGISTER_VCPUS_MAX 65536
#define REGISTER_MEMORY_MIB_MIN 16
#define REGISTER_MEMORY_MIB_MAX (UINT64_C(1) << 36)
#define REGISTER_DISK_GIB_MAX ((UINT64_C(1) << 33) - 1)
/* Default heartbeat interval, in milliseconds. */
#define REGISTER_DEFAULT_INTERVAL_MS 5000

/* thunderd's options as given: NULL or 0 when not given. */
struct register_options {
  const char *api;               /* --api http://HOST:PORT */
  const char *token;             /* the node token (--token-file's) */
  const char *name;              /* --node-name; NULL: the host name */
  const char *advertise_nbd;     /* NULL: from listen */
  const char *advertise_control; /* NULL: from control */
  const char *rack, *zone;       /* NULL: no label */
  uint64_t vcpus, memory_mib, disk_gib; /* 0: measured */
  uint64_t interval_ms;          /* 0: REGISTER_DEFAULT_INTERVAL_MS */
  const char *listen;            /* thunderd's NBD --listen; NULL: none */
  const char *control;           /* thunderd's --control HOST:PORT */
  unsigned control_port;         /* the port control listens on */
  const char *disk_path;         /* the pool's directory; NULL: no pool,
                                    0 GiB of disk unless disk_gib */
  bool control_https;            /* the control endpoint speaks HTTPS: the
                                    advertised URL is https:// */
  int nbd_tls;                   /* the NBD listener's --tls (enum
                                    tlsdir_mode): on or require advertise
                                    nbds:// by default; require refuses an
                                    nbd:// --advertise-nbd, off an nbds:// */
  const struct curlbuf_tls *tls; /* the API's CA and this node's client
                                    certificate (copied); NULL: libcurl's
                                    defaults */
};

struct register_config;

/* A checked configuration with every default filled in; NULL with one
 * message naming the option in err (errlen bytes). */
struct register_config *register_config_new(const struct register_options *o,
                                            char *err, size_t errlen);

void register_config_free(struct register_config *c);

/* The registration request body of c (docs/api.md): a new object, or NULL
 * when out of memory. */
struct json_object *register_body(const struct register_config *c);

/* One line describing c, for the log. */
void register_config_describe(const struct register_config *c, char *out,
                              size_t outlen);

/* 0 when name is 1..REGISTER_NAME_MAX of A-Za-z0-9._-, not starting with
 * '.' or '-'; else -1 with a message naming what in err. */
int register_check_name(const char *name, const char *what, char *err,
                        size_t errlen);

/* 0 when url is exactly SCHEME://HOST:PORT (HOST a name, IPv4 or
 * [IPv6] address, PORT 1..65535, nothing after it); with wildcard_ok
 * false the host must not be 0.0.0.0 or [::].  -1 with a message naming
 * what in err. */
int register_check_url(const char *url, const char *scheme, int wildcard_ok,
                       const char *what, char *err, size_t errlen);

/* The URL SCHEME://HOST:PORT where a listener on listen ("HOST:PORT",
 * "[V6]:PORT", ":PORT") is reached, port replaced by port when not 0;
 * -1 with a message in err when the host is a wildcard (or empty) or the
 * port is 0, naming what (the option to set instead). */
int register_advertise(const char *scheme, const char *listen, unsigned port,
                       const char *what, char *out, size_t outlen, char *err,
                       size_t errlen);

/* "CODE: MESSAGE" of an API error body {"error": {"code", "message"}}
 * (body[0..len), untrusted: parsed depth-limited, non-printable
 * characters replaced, cut to outlen).  -1 (out "no error message")
 * when body is not such an object. */
int register_api_error(const char *body, size_t len, char *out,
                       size_t outlen);

/* The host as thunderd offers it: to thunder-api here, and in GET /v1/node
 * (vms.c). */

/* The host's online CPUs (at least 1). */
uint64_t register_host_vcpus(void);

/* MemTotal of /proc/meminfo in MiB; 0 when it cannot be read. */
uint64_t register_host_memory_mib(void);

/* Free space for unprivileged users of the file system of path, in GiB
 * rounded down; -1 (errno set) when statvfs fails. */
int register_host_disk_gib(const char *path, uint64_t *gib);

struct registrar;

/* Starts the thread, which takes c (freed by register_stop, or here on
 * failure).  NULL with a logged error. */
struct registrar *register_start(struct register_config *c);

/* Tells the thread to stop and aborts a request in flight, without
 * waiting; r (NULL: nothing) stays valid.  Safe from another thread
 * than register_start's, and more than once. */
void register_cancel(struct registrar *r);

/* Stops the thread (register_cancel, then waits for it) and frees r
 * (NULL: nothing). */
void register_stop(struct registrar *r);

#endif
