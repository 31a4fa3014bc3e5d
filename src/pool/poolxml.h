/* thunder — the XML the pool module exchanges with libvirt, built and read
 * with libxml2, and the other pure helpers of the module (names, sizes).
 * Nothing here talks to libvirt, so all of it is unit-tested alone
 * (tests/unit/test-pool-xml.c).
 *
 * Builders return a malloc'd NUL-terminated document (free with free()),
 * or NULL when out of memory; every text and attribute goes through
 * libxml2, so it is escaped.  Parsers read XML that came from libvirt but
 * trust none of it: the input is limited to POOLXML_MAX bytes, parsed with
 * XML_PARSE_NONET and without entity substitution, and a document with a
 * DTD (the only place entities can come from) is refused.  They return 0,
 * or -1 with one sentence in err.
 *
 * All functions are thread-safe once poolxml_init() has run (pool_open
 * calls it; it is idempotent).
 */
#ifndef THUNDER_POOLXML_H
#define THUNDER_POOLXML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest XML document parsed, in bytes. */
#define POOLXML_MAX (1024 * 1024)

/* Initialises libxml2 for use from several threads; idempotent. */
void poolxml_init(void);

/* <pool type='dir'> named name with target path (mode 0755). */
char *poolxml_pool(const char *name, const char *path);

/* A qcow2 volume (mode 0600) of capacity bytes backed by the qcow2 file
 * backing_path. */
char *poolxml_volume(const char *name, uint64_t capacity,
                     const char *backing_path);

/* The namespace of thunder's <metadata> element in the domains it makes:
 *
 *   <metadata>
 *     <thunder:vm xmlns:thunder="https://thunder.example/xmlns/vm/1">
 *       <image>IMAGE</image>             the image the VM volume is built on
 *       <disk_bytes>N</disk_bytes>       the VM volume's capacity
 *       <accel>kvm|tcg</accel>           the accelerator chosen at create
 *     </thunder:vm>
 *   </metadata>
 *
 * Its presence marks a domain as made by thunder. */
#define POOLXML_VM_NS "https://thunder.example/xmlns/vm/1"
#define POOLXML_VM_PREFIX "thunder"

struct poolxml_domain {
  const char *name;
  unsigned memory_mib;
  unsigned vcpus;
  bool kvm;                /* type 'kvm' + host-passthrough CPU, else 'qemu' */
  const char *pool;        /* the disk: volume of pool */
  const char *volume;
  const char *console_log; /* the serial console's log file */
  const char *image;       /* metadata: the image (NULL: no metadata) */
  uint64_t disk_bytes;     /* metadata: the volume's capacity */
};

/* A domain: x86_64 'pc' machine booting from virtio disk vda, serial
 * console logged to a file, no network, no graphics, no balloon; every
 * lifecycle event destroys it.  With d->image, thunder's <metadata>
 * (POOLXML_VM_NS) records the image, disk_bytes and the accelerator. */
char *poolxml_domain(const struct poolxml_domain *d);

struct poolxml_pool_info {
  char *type; /* /pool/@type */
  char *path; /* /pool/target/path */
};

/* Reads a pool's type and target path (both required, path absolute). */
int poolxml_parse_pool(const char *xml, size_t len,
                       struct poolxml_pool_info *out, char *err,
                       size_t errlen);
void poolxml_pool_info_free(struct poolxml_pool_info *info);

struct poolxml_vol_info {
  char *path;           /* /volume/target/path, or NULL */
  uint64_t capacity;    /* /volume/capacity in bytes */
  char *backing_path;   /* /volume/backingStore/path, or NULL if none */
  char *backing_format; /* /volume/backingStore/format/@type, or NULL */
};

/* Reads a volume's capacity (required) and its path and backing store
 * (optional). */
int poolxml_parse_volume(const char *xml, size_t len,
                         struct poolxml_vol_info *out, char *err,
                         size_t errlen);
void poolxml_vol_info_free(struct poolxml_vol_info *info);

struct poolxml_domain_info {
  char *name;           /* /domain/name */
  unsigned vcpus;       /* /domain/vcpu */
  unsigned memory_mib;  /* /domain/memory, in MiB (rounded down) */
  char *pool;           /* the first disk's source/@pool, or NULL */
  char *volume;         /* the first disk's source/@volume, or NULL */
  char *console_log;    /* the serial console's log/@file, or NULL */
  /* thunder's metadata (POOLXML_VM_NS); thunder is false, and the rest
   * NULL or 0, when there is none or it lacks a field. */
  bool thunder;
  char *image;
  uint64_t disk_bytes;
  bool kvm;             /* <accel> is "kvm" (else "tcg") */
};

/* Reads what thunder needs of a domain's XML (as virDomainGetXMLDesc
 * gives it): name, vCPUs and memory (required), the disk's source, the
 * console log and thunder's metadata (optional). */
int poolxml_parse_domain(const char *xml, size_t len,
                         struct poolxml_domain_info *out, char *err,
                         size_t errlen);
void poolxml_domain_info_free(struct poolxml_domain_info *info);

/* Gives the disk of pool pool in a domain's XML (the first <disk
 * device='disk'> whose <source pool=...> is pool) the error policies
 * thunder's domains have: error_policy and rerror_policy 'stop' on its
 * <driver>, each only where it is absent (a policy set by hand is kept).
 * 1 with *out the new XML (malloc'd), 0 when nothing was missing (*out
 * NULL), -1 with err (no such disk, or the XML does not parse). */
int poolxml_domain_stop_on_error(const char *xml, size_t len, const char *pool,
                                 char **out, char *err, size_t errlen);

/* True if name may be a pool, volume, image or domain name: the image name
 * rule (manifest_name_valid: 1-255 bytes of A-Z a-z 0-9 . _ -, not
 * starting with '.' or '-'). */
bool poolxml_name_valid(const char *name);

/* True if path can go unescaped into the query of an nbd+unix URI: an
 * absolute path of A-Z a-z 0-9 / . _ - + characters, at most 107 bytes
 * (sun_path). */
bool poolxml_socket_path_valid(const char *path);

#endif
