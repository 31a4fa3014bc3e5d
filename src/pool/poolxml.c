/* thunder — the pool module's XML (libxml2) and its pure helpers: names,
 * socket paths, sizes.  See poolxml.h for the rules on input. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlsave.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "manifest.h"
#include "pool.h"
#include "poolxml.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void
init_libxml(void)
{
  xmlInitParser();
}

void
poolxml_init(void)
{
  pthread_once(&init_once, init_libxml);
}

/* ---- Builders ---------------------------------------------------------- */

/* A builder's state: the document and whether every step succeeded, so a
 * builder is a straight list of steps with one check at the end. */
struct builder {
  xmlDocPtr doc;
  bool ok;
};

/* True if s is valid UTF-8 (libxml2 would write broken XML otherwise). */
static bool
utf8_ok(const char *s)
{
  return s != NULL && xmlCheckUTF8((const xmlChar *)s) != 0;
}

/* A new element name under parent (the root if parent is NULL), with
 * text content (escaped) if text is not NULL. */
static xmlNodePtr
elem(struct builder *b, xmlNodePtr parent, const char *name, const char *text)
{
  if (!b->ok)
    return NULL;
  if (text != NULL && !utf8_ok(text)) {
    b->ok = false;
    errno = EINVAL;
    return NULL;
  }
  xmlNodePtr n;
  if (parent == NULL) {
    n = xmlNewDocNode(b->doc, NULL, (const xmlChar *)name, NULL);
    if (n != NULL) {
      xmlDocSetRootElement(b->doc, n);
      if (text != NULL)
        xmlNodeAddContent(n, (const xmlChar *)text);
    }
  } else {
    n = xmlNewTextChild(parent, NULL, (const xmlChar *)name,
                        (const xmlChar *)text);
  }
  if (n == NULL) {
    b->ok = false;
    errno = ENOMEM;
  }
  return n;
}

/* Element with a decimal number as its text. */
static xmlNodePtr
elem_u64(struct builder *b, xmlNodePtr parent, const char *name, uint64_t v)
{
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  return elem(b, parent, name, buf);
}

/* Sets attribute name=value on n (escaped). */
static void
attr(struct builder *b, xmlNodePtr n, const char *name, const char *value)
{
  if (!b->ok)
    return;
  if (!utf8_ok(value)) {
    b->ok = false;
    errno = EINVAL;
    return;
  }
  if (xmlSetProp(n, (const xmlChar *)name, (const xmlChar *)value) == NULL) {
    b->ok = false;
    errno = ENOMEM;
  }
}

static bool
builder_start(struct builder *b)
{
  b->doc = xmlNewDoc((const xmlChar *)"1.0");
  b->ok = b->doc != NULL;
  if (!b->ok)
    errno = ENOMEM;
  return b->ok;
}

/* Serialises the document (indented, no XML declaration) and frees it. */
static char *
builder_finish(struct builder *b)
{
  char *out = NULL;
  int saved = errno;

  if (b->ok) {
    xmlBufferPtr buf = xmlBufferCreate();
    xmlSaveCtxtPtr save = buf ? xmlSaveToBuffer(buf, "UTF-8",
                                                XML_SAVE_FORMAT |
                                                    XML_SAVE_NO_DECL)
                              : NULL;
    if (save != NULL) {
      long r = xmlSaveDoc(save, b->doc);
      if (xmlSaveClose(save) >= 0 && r >= 0)
        out = strdup((const char *)xmlBufferContent(buf));
    }
    if (buf != NULL)
      xmlBufferFree(buf);
    if (out == NULL)
      saved = ENOMEM;
  }
  xmlFreeDoc(b->doc);
  b->doc = NULL;
  errno = saved;
  return out;
}

char *
poolxml_pool(const char *name, const char *path)
{
  struct builder b;
  if (!builder_start(&b))
    return NULL;
  xmlNodePtr root = elem(&b, NULL, "pool", NULL);
  attr(&b, root, "type", "dir");
  elem(&b, root, "name", name);
  xmlNodePtr target = elem(&b, root, "target", NULL);
  elem(&b, target, "path", path);
  xmlNodePtr perms = elem(&b, target, "permissions", NULL);
  elem(&b, perms, "mode", "0755");
  return builder_finish(&b);
}

char *
poolxml_volume(const char *name, uint64_t capacity, const char *backing_path)
{
  struct builder b;
  if (!builder_start(&b))
    return NULL;
  xmlNodePtr root = elem(&b, NULL, "volume", NULL);
  elem(&b, root, "name", name);
  xmlNodePtr cap = elem_u64(&b, root, "capacity", capacity);
  attr(&b, cap, "unit", "bytes");
  xmlNodePtr target = elem(&b, root, "target", NULL);
  attr(&b, elem(&b, target, "format", NULL), "type", "qcow2");
  elem(&b, elem(&b, target, "permissions", NULL), "mode", "0600");
  xmlNodePtr bs = elem(&b, root, "backingStore", NULL);
  elem(&b, bs, "path", backing_path);
  attr(&b, elem(&b, bs, "format", NULL), "type", "qcow2");
  return builder_finish(&b);
}

char *
poolxml_domain(const struct poolxml_domain *d)
{
  struct builder b;
  if (!builder_start(&b))
    return NULL;
  xmlNodePtr root = elem(&b, NULL, "domain", NULL);
  attr(&b, root, "type", d->kvm ? "kvm" : "qemu");
  elem(&b, root, "name", d->name);
  if (d->image != NULL) {
    /* <thunder:vm xmlns:thunder=NS>, its fields in no namespace. */
    xmlNodePtr md = elem(&b, root, "metadata", NULL);
    xmlNodePtr vm = elem(&b, md, "vm", NULL);
    if (b.ok) {
      xmlNsPtr ns = xmlNewNs(vm, (const xmlChar *)POOLXML_VM_NS,
                             (const xmlChar *)POOLXML_VM_PREFIX);
      if (ns == NULL) {
        b.ok = false;
        errno = ENOMEM;
      } else {
        xmlSetNs(vm, ns);
      }
    }
    xmlNodePtr f[3] = {
      elem(&b, vm, "image", d->image),
      elem_u64(&b, vm, "disk_bytes", d->disk_bytes),
      elem(&b, vm, "accel", d->kvm ? "kvm" : "tcg"),
    };
    for (size_t i = 0; i < 3; i++)
      if (f[i] != NULL)
        xmlSetNs(f[i], NULL);
  }
  attr(&b, elem_u64(&b, root, "memory", d->memory_mib), "unit", "MiB");
  elem_u64(&b, root, "vcpu", d->vcpus);

  xmlNodePtr os = elem(&b, root, "os", NULL);
  xmlNodePtr type = elem(&b, os, "type", "hvm");
  attr(&b, type, "arch", "x86_64");
  attr(&b, type, "machine", "pc");
  attr(&b, elem(&b, os, "boot", NULL), "dev", "hd");
  /* Without ACPI (libvirt passes -no-acpi unless asked) a guest cannot
   * power off: it halts and the domain stays running. */
  xmlNodePtr features = elem(&b, root, "features", NULL);
  elem(&b, features, "acpi", NULL);
  elem(&b, features, "apic", NULL);
  if (d->kvm)
    attr(&b, elem(&b, root, "cpu", NULL), "mode", "host-passthrough");
  elem(&b, root, "on_poweroff", "destroy");
  elem(&b, root, "on_reboot", "destroy");
  elem(&b, root, "on_crash", "destroy");

  xmlNodePtr devices = elem(&b, root, "devices", NULL);
  xmlNodePtr disk = elem(&b, devices, "disk", NULL);
  attr(&b, disk, "type", "volume");
  attr(&b, disk, "device", "disk");
  xmlNodePtr driver = elem(&b, disk, "driver", NULL);
  attr(&b, driver, "name", "qemu");
  attr(&b, driver, "type", "qcow2");
  /* A read or write error (thunderd restarting, its socket gone for a
   * moment) pauses the guest instead of reaching it; thunderd resumes
   * the domain when it serves again and QEMU retries the request
   * (docs/libvirt.md "Restarts"). */
  attr(&b, driver, "error_policy", "stop");
  attr(&b, driver, "rerror_policy", "stop");
  xmlNodePtr source = elem(&b, disk, "source", NULL);
  attr(&b, source, "pool", d->pool);
  attr(&b, source, "volume", d->volume);
  xmlNodePtr target = elem(&b, disk, "target", NULL);
  attr(&b, target, "dev", "vda");
  attr(&b, target, "bus", "virtio");

  xmlNodePtr serial = elem(&b, devices, "serial", NULL);
  attr(&b, serial, "type", "pty");
  xmlNodePtr log = elem(&b, serial, "log", NULL);
  attr(&b, log, "file", d->console_log);
  attr(&b, log, "append", "off");
  attr(&b, elem(&b, serial, "target", NULL), "port", "0");
  xmlNodePtr console = elem(&b, devices, "console", NULL);
  attr(&b, console, "type", "pty");
  xmlNodePtr ctarget = elem(&b, console, "target", NULL);
  attr(&b, ctarget, "type", "serial");
  attr(&b, ctarget, "port", "0");

  attr(&b, elem(&b, devices, "memballoon", NULL), "model", "none");
  return builder_finish(&b);
}

/* ---- Parsers ------------------------------------------------------------ */

static void __attribute__((format(printf, 3, 4)))
seterr(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Parses xml into a document whose root element is root_name, and an
 * XPath context on it.  NULL with err set. */
static xmlDocPtr
parse(const char *xml, size_t len, const char *root_name,
      xmlXPathContextPtr *ctx, char *err, size_t errlen)
{
  poolxml_init();
  *ctx = NULL;
  if (xml == NULL || len == 0) {
    seterr(err, errlen, "the %s XML is empty", root_name);
    return NULL;
  }
  if (len > POOLXML_MAX) {
    seterr(err, errlen, "the %s XML is %zu bytes; at most %d are accepted",
           root_name, len, POOLXML_MAX);
    return NULL;
  }
  /* No XML_PARSE_NOENT (no entity substitution), no DTD loading, no
   * network. */
  xmlResetLastError();
  xmlDocPtr doc = xmlReadMemory(xml, (int)len, "libvirt.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR |
                                    XML_PARSE_NOWARNING | XML_PARSE_NOCDATA);
  if (doc == NULL) {
    const xmlError *xe = xmlGetLastError();
    char msg[256] = "malformed";
    if (xe != NULL && xe->message != NULL) {
      snprintf(msg, sizeof msg, "%s", xe->message);
      size_t l = strlen(msg);
      while (l > 0 && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
        msg[--l] = '\0';
    }
    seterr(err, errlen, "the %s XML does not parse: line %d: %s", root_name,
           xe ? xe->line : 0, msg);
    return NULL;
  }
  if (doc->intSubset != NULL || doc->extSubset != NULL) {
    seterr(err, errlen, "the %s XML has a DTD (<!DOCTYPE ...>); libvirt never writes one, refused",
           root_name);
    xmlFreeDoc(doc);
    return NULL;
  }
  xmlNodePtr root = xmlDocGetRootElement(doc);
  if (root == NULL || root->ns != NULL ||
      strcmp((const char *)root->name, root_name) != 0) {
    seterr(err, errlen, "the XML's root element is <%.64s>, expected <%s>",
           root ? (const char *)root->name : "", root_name);
    xmlFreeDoc(doc);
    return NULL;
  }
  *ctx = xmlXPathNewContext(doc);
  if (*ctx == NULL) {
    seterr(err, errlen, "the %s XML: out of memory", root_name);
    xmlFreeDoc(doc);
    return NULL;
  }
  return doc;
}

/* The text of the one node expr selects: 0 with *out (malloc'd, or NULL if
 * none and optional), -1 with err if there are several, none (unless
 * optional), or out of memory. */
static int
xpath_string(xmlXPathContextPtr ctx, const char *expr, bool optional,
             char **out, const char *what, char *err, size_t errlen)
{
  *out = NULL;
  xmlXPathObjectPtr o = xmlXPathEvalExpression((const xmlChar *)expr, ctx);
  if (o == NULL) {
    seterr(err, errlen, "%s: XPath %s failed", what, expr);
    return -1;
  }
  int n = o->type == XPATH_NODESET && o->nodesetval ? o->nodesetval->nodeNr
                                                      : 0;
  int r = -1;
  if (n == 0) {
    if (optional)
      r = 0;
    else
      seterr(err, errlen, "%s: no %s", what, expr);
  } else if (n > 1) {
    seterr(err, errlen, "%s: %d nodes match %s, expected one", what, n, expr);
  } else {
    xmlChar *s = xmlNodeGetContent(o->nodesetval->nodeTab[0]);
    if (s == NULL) {
      seterr(err, errlen, "%s: %s: out of memory", what, expr);
    } else {
      *out = strdup((const char *)s);
      xmlFree(s);
      if (*out == NULL)
        seterr(err, errlen, "%s: %s: out of memory", what, expr);
      else
        r = 0;
    }
  }
  xmlXPathFreeObject(o);
  return r;
}

/* Checks that a path read from XML is absolute and of sane length. */
static int
check_path(const char *path, const char *what, char *err, size_t errlen)
{
  size_t l = strlen(path);
  if (l == 0 || path[0] != '/') {
    seterr(err, errlen, "%s '%.200s' is not an absolute path", what, path);
    return -1;
  }
  if (l >= PATH_MAX) {
    seterr(err, errlen, "%s is %zu bytes long; at most %d are accepted", what,
           l, PATH_MAX - 1);
    return -1;
  }
  return 0;
}

int
poolxml_parse_pool(const char *xml, size_t len, struct poolxml_pool_info *out,
                   char *err, size_t errlen)
{
  xmlXPathContextPtr ctx;
  memset(out, 0, sizeof *out);
  xmlDocPtr doc = parse(xml, len, "pool", &ctx, err, errlen);
  if (doc == NULL)
    return -1;
  int r = -1;
  if (xpath_string(ctx, "/pool/@type", false, &out->type, "pool", err,
                   errlen) < 0 ||
      xpath_string(ctx, "/pool/target/path", false, &out->path, "pool", err,
                   errlen) < 0)
    goto out;
  if (out->type[0] == '\0' || strlen(out->type) > 64) {
    seterr(err, errlen, "pool: the type '%.64s' is not valid", out->type);
    goto out;
  }
  if (check_path(out->path, "pool target path", err, errlen) < 0)
    goto out;
  r = 0;
out:
  if (r < 0)
    poolxml_pool_info_free(out);
  xmlXPathFreeContext(ctx);
  xmlFreeDoc(doc);
  return r;
}

void
poolxml_pool_info_free(struct poolxml_pool_info *info)
{
  free(info->type);
  free(info->path);
  info->type = info->path = NULL;
}

/* Parses a non-negative decimal number (no sign, no spaces). */
static int
parse_u64(const char *s, uint64_t *out)
{
  uint64_t v = 0;
  if (*s == '\0')
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

int
poolxml_parse_volume(const char *xml, size_t len, struct poolxml_vol_info *out,
                     char *err, size_t errlen)
{
  xmlXPathContextPtr ctx;
  memset(out, 0, sizeof *out);
  xmlDocPtr doc = parse(xml, len, "volume", &ctx, err, errlen);
  if (doc == NULL)
    return -1;
  int r = -1;
  char *cap = NULL, *unit = NULL;
  if (xpath_string(ctx, "/volume/capacity", false, &cap, "volume", err,
                   errlen) < 0 ||
      xpath_string(ctx, "/volume/capacity/@unit", true, &unit, "volume", err,
                   errlen) < 0 ||
      xpath_string(ctx, "/volume/target/path", true, &out->path, "volume",
                   err, errlen) < 0 ||
      xpath_string(ctx, "/volume/backingStore/path", true, &out->backing_path,
                   "volume", err, errlen) < 0 ||
      xpath_string(ctx, "/volume/backingStore/format/@type", true,
                   &out->backing_format, "volume", err, errlen) < 0)
    goto out;
  if (unit != NULL && strcmp(unit, "bytes") != 0 && strcmp(unit, "B") != 0 &&
      strcmp(unit, "b") != 0) {
    seterr(err, errlen, "volume: capacity unit '%.32s', expected bytes", unit);
    goto out;
  }
  if (parse_u64(cap, &out->capacity) < 0) {
    seterr(err, errlen, "volume: capacity '%.32s' is not a number of bytes",
           cap);
    goto out;
  }
  if (out->path != NULL &&
      check_path(out->path, "volume target path", err, errlen) < 0)
    goto out;
  /* A backing store may be a URL (an anchor's) or a relative file name;
   * only its length is checked. */
  if (out->backing_path != NULL && strlen(out->backing_path) >= PATH_MAX) {
    seterr(err, errlen, "volume: backing store path is %zu bytes long",
           strlen(out->backing_path));
    goto out;
  }
  r = 0;
out:
  if (r < 0)
    poolxml_vol_info_free(out);
  free(cap);
  free(unit);
  xmlXPathFreeContext(ctx);
  xmlFreeDoc(doc);
  return r;
}

void
poolxml_vol_info_free(struct poolxml_vol_info *info)
{
  free(info->path);
  free(info->backing_path);
  free(info->backing_format);
  info->path = info->backing_path = info->backing_format = NULL;
}

/* Scales v by a libvirt size unit, as libvirt reads them (virScaleInteger:
 * b/bytes, then k m g t p e alone or with iB (powers of 1024) or B
 * (powers of 1000), any case).  -1 if the unit is unknown or the result
 * overflows. */
static int
scale_unit(uint64_t v, const char *unit, uint64_t *out)
{
  uint64_t factor = 1;
  if (strcasecmp(unit, "b") != 0 && strcasecmp(unit, "byte") != 0 &&
      strcasecmp(unit, "bytes") != 0) {
    static const char powers[] = "kmgtpe";
    const char *pos = unit[0] ? strchr(powers, tolower((unsigned char)unit[0]))
                              : NULL;
    if (pos == NULL)
      return -1;
    uint64_t base;
    if (unit[1] == '\0' || strcasecmp(unit + 1, "iB") == 0)
      base = 1024;
    else if (strcasecmp(unit + 1, "B") == 0)
      base = 1000;
    else
      return -1;
    for (const char *p = powers; p <= pos; p++)
      factor *= base;
  }
  if (v > UINT64_MAX / factor)
    return -1;
  *out = v * factor;
  return 0;
}

int
poolxml_parse_domain(const char *xml, size_t len,
                     struct poolxml_domain_info *out, char *err,
                     size_t errlen)
{
  xmlXPathContextPtr ctx;
  memset(out, 0, sizeof *out);
  xmlDocPtr doc = parse(xml, len, "domain", &ctx, err, errlen);
  if (doc == NULL)
    return -1;
  int r = -1;
  char *vcpu = NULL, *mem = NULL, *unit = NULL;
  char *disk = NULL, *accel = NULL;
  uint64_t v;

  if (xmlXPathRegisterNs(ctx, (const xmlChar *)"t",
                         (const xmlChar *)POOLXML_VM_NS) != 0) {
    seterr(err, errlen, "domain: out of memory");
    goto out;
  }
  if (xpath_string(ctx, "/domain/name", false, &out->name, "domain", err,
                   errlen) < 0 ||
      xpath_string(ctx, "/domain/vcpu", false, &vcpu, "domain", err,
                   errlen) < 0 ||
      xpath_string(ctx, "/domain/memory", false, &mem, "domain", err,
                   errlen) < 0 ||
      xpath_string(ctx, "/domain/memory/@unit", true, &unit, "domain", err,
                   errlen) < 0 ||
      xpath_string(ctx, "(/domain/devices/disk[@device='disk'])[1]/source/@pool",
                   true, &out->pool, "domain", err, errlen) < 0 ||
      xpath_string(ctx, "(/domain/devices/disk[@device='disk'])[1]/source/@volume",
                   true, &out->volume, "domain", err, errlen) < 0 ||
      xpath_string(ctx, "(/domain/devices/serial)[1]/log/@file", true,
                   &out->console_log, "domain", err, errlen) < 0)
    goto out;
  if (parse_u64(vcpu, &v) < 0 || v == 0 || v > UINT_MAX) {
    seterr(err, errlen, "domain: vcpu '%.32s' is not a number of vCPUs", vcpu);
    goto out;
  }
  out->vcpus = (unsigned)v;
  if (parse_u64(mem, &v) < 0 || scale_unit(v, unit ? unit : "KiB", &v) < 0) {
    seterr(err, errlen, "domain: memory '%.32s' (unit '%.16s') is not a size",
           mem, unit ? unit : "KiB");
    goto out;
  }
  v >>= 20;
  out->memory_mib = v > UINT_MAX ? UINT_MAX : (unsigned)v;

  /* thunder's metadata: all of it or none. */
  char ignored[8];
  if (xpath_string(ctx, "/domain/metadata/t:vm/*[local-name()='image']", true,
                   &out->image, "domain", ignored, sizeof ignored) == 0 &&
      xpath_string(ctx, "/domain/metadata/t:vm/*[local-name()='disk_bytes']",
                   true, &disk, "domain", ignored, sizeof ignored) == 0 &&
      xpath_string(ctx, "/domain/metadata/t:vm/*[local-name()='accel']", true,
                   &accel, "domain", ignored, sizeof ignored) == 0 &&
      out->image != NULL && poolxml_name_valid(out->image) && disk != NULL &&
      parse_u64(disk, &out->disk_bytes) == 0 && accel != NULL &&
      (strcmp(accel, "kvm") == 0 || strcmp(accel, "tcg") == 0)) {
    out->thunder = true;
    out->kvm = strcmp(accel, "kvm") == 0;
  } else {
    free(out->image);
    out->image = NULL;
    out->disk_bytes = 0;
  }
  r = 0;
out:
  if (r < 0)
    poolxml_domain_info_free(out);
  free(vcpu);
  free(mem);
  free(unit);
  free(disk);
  free(accel);
  xmlXPathFreeContext(ctx);
  xmlFreeDoc(doc);
  return r;
}

void
poolxml_domain_info_free(struct poolxml_domain_info *info)
{
  free(info->name);
  free(info->pool);
  free(info->volume);
  free(info->console_log);
  free(info->image);
  memset(info, 0, sizeof *info);
}

/* ---- Names, socket paths, sizes -------------------------------------------- */

bool
poolxml_name_valid(const char *name)
{
  return name != NULL && manifest_name_valid(name);
}

bool
poolxml_socket_path_valid(const char *path)
{
  if (path == NULL || path[0] != '/' || strlen(path) > 107)
    return false;
  for (const char *p = path; *p; p++) {
    char c = *p;
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
          (c >= '0' && c <= '9') || c == '/' || c == '.' || c == '_' ||
          c == '-' || c == '+'))
      return false;
  }
  return true;
}

int
pool_parse_size(const char *s, uint64_t *out)
{
  uint64_t v = 0;
  const char *p = s;

  if (s == NULL || *p < '0' || *p > '9')
    return -1;
  for (; *p >= '0' && *p <= '9'; p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  unsigned shift = 0;
  switch (*p) {
  case 'K': case 'k': shift = 10; break;
  case 'M': case 'm': shift = 20; break;
  case 'G': case 'g': shift = 30; break;
  case 'T': case 't': shift = 40; break;
  case '\0': break;
  default: return -1;
  }
  if (shift) {
    p++;
    if (strcmp(p, "iB") == 0)
      p += 2;
    if (v > (UINT64_MAX >> shift))
      return -1;
    v <<= shift;
  }
  if (*p != '\0')
    return -1;
  *out = v;
  return 0;
}

int
poolxml_domain_stop_on_error(const char *xml, size_t len, const char *pool,
                             char **out, char *err, size_t errlen)
{
  xmlXPathContextPtr ctx;
  *out = NULL;
  xmlDocPtr doc = parse(xml, len, "domain", &ctx, err, errlen);
  if (doc == NULL)
    return -1;
  int r = -1;
  xmlXPathObjectPtr res =
      xmlXPathEvalExpression((const xmlChar *)"/domain/devices/disk[@device='disk']",
                             ctx);
  xmlNodePtr disk = NULL;
  for (int i = 0; res && res->nodesetval && i < res->nodesetval->nodeNr &&
                  disk == NULL; i++) {
    xmlNodePtr d = res->nodesetval->nodeTab[i];
    for (xmlNodePtr c = d->children; c; c = c->next) {
      if (c->type != XML_ELEMENT_NODE ||
          strcmp((const char *)c->name, "source") != 0)
        continue;
      xmlChar *p = xmlGetProp(c, (const xmlChar *)"pool");
      if (p && strcmp((const char *)p, pool) == 0)
        disk = d;
      xmlFree(p);
    }
  }
  if (disk == NULL) {
    seterr(err, errlen, "domain: no disk in storage pool %s", pool);
    goto out;
  }
  xmlNodePtr driver = NULL;
  for (xmlNodePtr c = disk->children; c && driver == NULL; c = c->next)
    if (c->type == XML_ELEMENT_NODE &&
        strcmp((const char *)c->name, "driver") == 0)
      driver = c;
  if (driver == NULL) {
    seterr(err, errlen, "domain: its disk in storage pool %s has no <driver>",
           pool);
    goto out;
  }
  bool changed = false;
  static const char *const attrs[] = { "error_policy", "rerror_policy" };
  for (size_t i = 0; i < 2; i++) {
    if (xmlHasProp(driver, (const xmlChar *)attrs[i]))
      continue;
    if (xmlSetProp(driver, (const xmlChar *)attrs[i],
                   (const xmlChar *)"stop") == NULL) {
      seterr(err, errlen, "domain: out of memory");
      goto out;
    }
    changed = true;
  }
  r = 0;
  if (changed) {
    xmlChar *mem = NULL;
    int n = 0;
    xmlDocDumpMemory(doc, &mem, &n);
    if (mem == NULL || (*out = strndup((const char *)mem, (size_t)n)) == NULL) {
      seterr(err, errlen, "domain: out of memory");
      r = -1;
    } else {
      r = 1;
    }
    xmlFree(mem);
  }
out:
  xmlXPathFreeObject(res);
  xmlXPathFreeContext(ctx);
  xmlFreeDoc(doc);
  return r;
}
