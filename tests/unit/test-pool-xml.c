/* thunder — unit tests of the pool module's pure parts (src/pool/poolxml.c):
 * the pool, volume and domain XML built for libvirt, the pool and volume
 * XML read back from it, names, socket paths and sizes; and the KVM probe
 * (src/pool/kvm.c), which must answer within its deadline.
 *
 * Built XML is compared with golden files in tests/data/pool/ and also
 * checked element by element with XPath, independently of the builder.
 * THUNDER_UPDATE_GOLDEN=1 rewrites the golden files instead.  Parsers are
 * fed real libvirt 9.0 output and hostile documents: malformed, wrong root,
 * missing or repeated elements, huge values, entities (internal, external,
 * nested), oversized input; each must fail with its message.
 *
 * THUNDER_TEST_KVM=usable|unusable, when set, is what pool_kvm_usable()
 * must answer on this host.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/xpath.h>

#include "cunit-run.h"
#include "pool.h"
#include "poolxml.h"

#ifndef TEST_DATADIR
#error "TEST_DATADIR must name tests/data/pool in the source tree"
#endif

/* ---- Helpers ----------------------------------------------------------- */

static char *
read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  char *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n + 4096 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *nb = realloc(buf, cap + 1);
      if (nb == NULL) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0)
      break;
  }
  fclose(f);
  buf[n] = '\0';
  *len = n;
  return buf;
}

static bool
write_file(const char *path, const char *buf)
{
  FILE *f = fopen(path, "wb");
  if (f == NULL)
    return false;
  bool ok = fwrite(buf, 1, strlen(buf), f) == strlen(buf);
  return fclose(f) == 0 && ok;
}

/* Compares xml with the golden file TEST_DATADIR/name (or rewrites it). */
static void
check_golden(const char *name, const char *xml)
{
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", TEST_DATADIR, name);
  if (getenv("THUNDER_UPDATE_GOLDEN")) {
    CU_ASSERT(write_file(path, xml));
    return;
  }
  size_t len;
  char *golden = read_file(path, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(golden);
  CU_ASSERT_STRING_EQUAL(xml, golden);
  free(golden);
}

/* A parsed document to query: xp_open, then xp_str / xp_count. */
struct xp {
  xmlDocPtr doc;
  xmlXPathContextPtr ctx;
};

static void
xp_open(struct xp *x, const char *xml)
{
  x->doc = xmlReadMemory(xml, (int)strlen(xml), "t.xml", NULL,
                         XML_PARSE_NONET);
  CU_ASSERT_PTR_NOT_NULL_FATAL(x->doc);
  x->ctx = xmlXPathNewContext(x->doc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(x->ctx);
}

static void
xp_close(struct xp *x)
{
  xmlXPathFreeContext(x->ctx);
  xmlFreeDoc(x->doc);
}

/* The string value of expr ("" if it selects nothing), in buf. */
static const char *
xp_str(struct xp *x, const char *expr, char *buf, size_t len)
{
  char e[512];
  snprintf(e, sizeof e, "string(%s)", expr);
  xmlXPathObjectPtr o = xmlXPathEvalExpression((const xmlChar *)e, x->ctx);
  snprintf(buf, len, "%s", o && o->stringval ? (const char *)o->stringval : "");
  xmlXPathFreeObject(o);
  return buf;
}

static int
xp_count(struct xp *x, const char *expr)
{
  char e[512];
  snprintf(e, sizeof e, "count(%s)", expr);
  xmlXPathObjectPtr o = xmlXPathEvalExpression((const xmlChar *)e, x->ctx);
  int n = o ? (int)o->floatval : -1;
  xmlXPathFreeObject(o);
  return n;
}

#define XP_EQ(x, expr, want)                                                   \
  do {                                                                         \
    char b_[4096];                                                             \
    CU_ASSERT_STRING_EQUAL(xp_str(x, expr, b_, sizeof b_), want);              \
  } while (0)

/* ---- Builders --------------------------------------------------------------- */

static void
test_pool_build(void)
{
  char *xml = poolxml_pool("thunder", "/var/lib/thunder/pool");
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  check_golden("pool.xml", xml);

  struct xp x;
  xp_open(&x, xml);
  XP_EQ(&x, "/pool/@type", "dir");
  XP_EQ(&x, "/pool/name", "thunder");
  XP_EQ(&x, "/pool/target/path", "/var/lib/thunder/pool");
  XP_EQ(&x, "/pool/target/permissions/mode", "0755");
  CU_ASSERT_EQUAL(xp_count(&x, "/pool/*"), 2);
  CU_ASSERT_EQUAL(xp_count(&x, "/pool/source"), 0);
  xp_close(&x);

  /* And it reads back. */
  struct poolxml_pool_info info;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(poolxml_parse_pool(xml, strlen(xml), &info, err,
                                           sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(info.type, "dir");
  CU_ASSERT_STRING_EQUAL(info.path, "/var/lib/thunder/pool");
  poolxml_pool_info_free(&info);
  free(xml);
}

static void
test_volume_build(void)
{
  char *xml = poolxml_volume("vm1.qcow2", 8589934592ULL,
                             "/var/lib/thunder/pool/debian12.base");
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  check_golden("volume.xml", xml);

  struct xp x;
  xp_open(&x, xml);
  XP_EQ(&x, "/volume/name", "vm1.qcow2");
  XP_EQ(&x, "/volume/capacity", "8589934592");
  XP_EQ(&x, "/volume/capacity/@unit", "bytes");
  XP_EQ(&x, "/volume/target/format/@type", "qcow2");
  XP_EQ(&x, "/volume/target/permissions/mode", "0600");
  XP_EQ(&x, "/volume/backingStore/path", "/var/lib/thunder/pool/debian12.base");
  XP_EQ(&x, "/volume/backingStore/format/@type", "qcow2");
  CU_ASSERT_EQUAL(xp_count(&x, "/volume/allocation"), 0);
  xp_close(&x);

  struct poolxml_vol_info info;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(poolxml_parse_volume(xml, strlen(xml), &info, err,
                                             sizeof err), 0);
  CU_ASSERT_EQUAL(info.capacity, 8589934592ULL);
  CU_ASSERT_PTR_NULL(info.path);
  CU_ASSERT_STRING_EQUAL(info.backing_path, "/var/lib/thunder/pool/debian12.base");
  CU_ASSERT_STRING_EQUAL(info.backing_format, "qcow2");
  poolxml_vol_info_free(&info);
  free(xml);
}

static const struct poolxml_domain dom_tcg = {
  .name = "vm1",
  .memory_mib = 512,
  .vcpus = 2,
  .kvm = false,
  .pool = "thunder",
  .volume = "vm1.qcow2",
  .console_log = "/var/log/thunder/vm/vm1.log",
  .image = "debian12",
  .disk_bytes = 8589934592ULL,
};

/* thunder's metadata element, selected by namespace. */
#define VM_MD "/domain/metadata/*[local-name()='vm' and namespace-uri()='" POOLXML_VM_NS "']"

/* The elements both accelerators share. */
static void
check_domain_common(struct xp *x)
{
  XP_EQ(x, "/domain/name", "vm1");
  XP_EQ(x, "/domain/memory", "512");
  XP_EQ(x, "/domain/memory/@unit", "MiB");
  XP_EQ(x, "/domain/vcpu", "2");
  XP_EQ(x, "/domain/os/type", "hvm");
  XP_EQ(x, "/domain/os/type/@arch", "x86_64");
  XP_EQ(x, "/domain/os/type/@machine", "pc");
  XP_EQ(x, "/domain/os/boot/@dev", "hd");
  /* ACPI, so that a guest can power itself off. */
  CU_ASSERT_EQUAL(xp_count(x, "/domain/features/acpi"), 1);
  CU_ASSERT_EQUAL(xp_count(x, "/domain/features/apic"), 1);
  XP_EQ(x, "/domain/on_poweroff", "destroy");
  XP_EQ(x, "/domain/on_reboot", "destroy");
  XP_EQ(x, "/domain/on_crash", "destroy");
  CU_ASSERT_EQUAL(xp_count(x, "/domain/devices/disk"), 1);
  XP_EQ(x, "/domain/devices/disk/@type", "volume");
  XP_EQ(x, "/domain/devices/disk/@device", "disk");
  XP_EQ(x, "/domain/devices/disk/driver/@name", "qemu");
  XP_EQ(x, "/domain/devices/disk/driver/@type", "qcow2");
  XP_EQ(x, "/domain/devices/disk/source/@pool", "thunder");
  XP_EQ(x, "/domain/devices/disk/source/@volume", "vm1.qcow2");
  XP_EQ(x, "/domain/devices/disk/target/@dev", "vda");
  XP_EQ(x, "/domain/devices/disk/target/@bus", "virtio");
  XP_EQ(x, "/domain/devices/serial/@type", "pty");
  XP_EQ(x, "/domain/devices/serial/log/@file", "/var/log/thunder/vm/vm1.log");
  XP_EQ(x, "/domain/devices/serial/log/@append", "off");
  XP_EQ(x, "/domain/devices/serial/target/@port", "0");
  XP_EQ(x, "/domain/devices/console/@type", "pty");
  XP_EQ(x, "/domain/devices/console/target/@type", "serial");
  XP_EQ(x, "/domain/devices/console/target/@port", "0");
  XP_EQ(x, "/domain/devices/memballoon/@model", "none");
  CU_ASSERT_EQUAL(xp_count(x, "/domain/devices/interface"), 0);
  CU_ASSERT_EQUAL(xp_count(x, "/domain/devices/graphics"), 0);
  CU_ASSERT_EQUAL(xp_count(x, "/domain/devices/video"), 0);
  /* thunder's metadata: one element in its namespace, with the prefix
   * "thunder", its fields in no namespace. */
  CU_ASSERT_EQUAL(xp_count(x, "/domain/metadata/*"), 1);
  CU_ASSERT_EQUAL(xp_count(x, VM_MD), 1);
  XP_EQ(x, "name(" VM_MD ")", "thunder:vm");
  CU_ASSERT_EQUAL(xp_count(x, VM_MD "/*"), 3);
  XP_EQ(x, VM_MD "/image", "debian12");
  XP_EQ(x, VM_MD "/disk_bytes", "8589934592");
}

static void
test_domain_build_tcg(void)
{
  char *xml = poolxml_domain(&dom_tcg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  check_golden("domain-tcg.xml", xml);
  struct xp x;
  xp_open(&x, xml);
  XP_EQ(&x, "/domain/@type", "qemu");
  CU_ASSERT_EQUAL(xp_count(&x, "/domain/cpu"), 0);
  XP_EQ(&x, VM_MD "/accel", "tcg");
  check_domain_common(&x);
  xp_close(&x);
  free(xml);
}

static void
test_domain_build_kvm(void)
{
  struct poolxml_domain d = dom_tcg;
  d.kvm = true;
  char *xml = poolxml_domain(&d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  check_golden("domain-kvm.xml", xml);
  struct xp x;
  xp_open(&x, xml);
  XP_EQ(&x, "/domain/@type", "kvm");
  CU_ASSERT_EQUAL(xp_count(&x, "/domain/cpu"), 1);
  XP_EQ(&x, "/domain/cpu/@mode", "host-passthrough");
  XP_EQ(&x, VM_MD "/accel", "kvm");
  check_domain_common(&x);
  xp_close(&x);
  free(xml);
}

/* Without an image there is no metadata. */
static void
test_domain_build_no_metadata(void)
{
  struct poolxml_domain d = dom_tcg;
  d.image = NULL;
  char *xml = poolxml_domain(&d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  struct xp x;
  xp_open(&x, xml);
  CU_ASSERT_EQUAL(xp_count(&x, "/domain/metadata"), 0);
  XP_EQ(&x, "/domain/name", "vm1");
  xp_close(&x);
  free(xml);
}

/* What the builder writes, the parser reads back. */
static void
test_domain_roundtrip(void)
{
  for (int kvm = 0; kvm < 2; kvm++) {
    struct poolxml_domain d = dom_tcg;
    d.kvm = kvm;
    char *xml = poolxml_domain(&d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
    struct poolxml_domain_info info;
    char err[256] = "";
    CU_ASSERT_EQUAL_FATAL(poolxml_parse_domain(xml, strlen(xml), &info, err,
                                               sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(info.name, "vm1");
    CU_ASSERT_EQUAL(info.vcpus, 2);
    CU_ASSERT_EQUAL(info.memory_mib, 512);
    CU_ASSERT_STRING_EQUAL(info.pool, "thunder");
    CU_ASSERT_STRING_EQUAL(info.volume, "vm1.qcow2");
    CU_ASSERT_STRING_EQUAL(info.console_log, "/var/log/thunder/vm/vm1.log");
    CU_ASSERT_TRUE(info.thunder);
    CU_ASSERT_STRING_EQUAL(info.image, "debian12");
    CU_ASSERT_EQUAL(info.disk_bytes, 8589934592ULL);
    CU_ASSERT_EQUAL(info.kvm, (bool)kvm);
    poolxml_domain_info_free(&info);
    CU_ASSERT_PTR_NULL(info.name);
    free(xml);
  }
}

/* Markup in values is escaped: it reads back as the same string and adds
 * no elements. */
static void
test_build_escapes(void)
{
  const char *nasty = "a&b<c>'\"]]><x/>&amp;";
  char *xml = poolxml_pool(nasty, "/p/<path>&'\"");
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  struct xp x;
  xp_open(&x, xml);
  XP_EQ(&x, "/pool/name", nasty);
  XP_EQ(&x, "/pool/target/path", "/p/<path>&'\"");
  CU_ASSERT_EQUAL(xp_count(&x, "//x"), 0);
  xp_close(&x);
  free(xml);

  struct poolxml_domain d = dom_tcg;
  d.console_log = "/tmp/it's \"here\" & <there>.log";
  xml = poolxml_domain(&d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  xp_open(&x, xml);
  XP_EQ(&x, "/domain/devices/serial/log/@file", d.console_log);
  xp_close(&x);
  free(xml);
}

/* Text that is not UTF-8 is refused (EINVAL), not written as broken XML. */
static void
test_build_not_utf8(void)
{
  errno = 0;
  CU_ASSERT_PTR_NULL(poolxml_pool("bad\xff", "/p"));
  CU_ASSERT_EQUAL(errno, EINVAL);
  errno = 0;
  CU_ASSERT_PTR_NULL(poolxml_volume("v", 1, "/p/\xc3(x"));
  CU_ASSERT_EQUAL(errno, EINVAL);
  struct poolxml_domain d = dom_tcg;
  d.console_log = "/log/\x80";
  errno = 0;
  CU_ASSERT_PTR_NULL(poolxml_domain(&d));
  CU_ASSERT_EQUAL(errno, EINVAL);
}

/* A huge name is still escaped and built whole (names are checked before
 * building, not by it). */
static void
test_build_huge(void)
{
  size_t n = 200000;
  char *name = malloc(n + 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(name);
  memset(name, 'n', n);
  name[n] = '\0';
  char *xml = poolxml_volume(name, 1, "/p/x.base");
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  CU_ASSERT(strstr(xml, name) != NULL);
  free(xml);
  free(name);
}

/* ---- Parsing pool XML ------------------------------------------------------- */

/* virsh pool-dumpxml of a running dir pool (libvirt 9.0). */
static const char libvirt_dir_pool[] =
    "<pool type='dir'>\n"
    "  <name>thunder</name>\n"
    "  <uuid>2605d041-73fc-4ed2-81bc-5c161f0116f3</uuid>\n"
    "  <capacity unit='bytes'>270554185728</capacity>\n"
    "  <allocation unit='bytes'>18864709632</allocation>\n"
    "  <available unit='bytes'>251689476096</available>\n"
    "  <source>\n"
    "  </source>\n"
    "  <target>\n"
    "    <path>/var/lib/thunder/pool</path>\n"
    "    <permissions>\n"
    "      <mode>0755</mode>\n"
    "      <owner>0</owner>\n"
    "      <group>0</group>\n"
    "    </permissions>\n"
    "  </target>\n"
    "</pool>\n";

/* An 'fs' pool defined but never started. */
static const char libvirt_fs_pool[] =
    "<pool type='fs'>\n"
    "  <name>exp-fs</name>\n"
    "  <uuid>49155f2a-da8b-45c9-8cfb-b24b1457f94a</uuid>\n"
    "  <capacity unit='bytes'>0</capacity>\n"
    "  <allocation unit='bytes'>0</allocation>\n"
    "  <available unit='bytes'>0</available>\n"
    "  <source>\n"
    "    <device path='/dev/null'/>\n"
    "    <format type='auto'/>\n"
    "  </source>\n"
    "  <target>\n"
    "    <path>/tmp/exp/fs</path>\n"
    "  </target>\n"
    "</pool>\n";

static void
test_parse_pool_libvirt(void)
{
  struct poolxml_pool_info info;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(poolxml_parse_pool(libvirt_dir_pool,
                                           strlen(libvirt_dir_pool), &info,
                                           err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(info.type, "dir");
  CU_ASSERT_STRING_EQUAL(info.path, "/var/lib/thunder/pool");
  poolxml_pool_info_free(&info);

  CU_ASSERT_EQUAL_FATAL(poolxml_parse_pool(libvirt_fs_pool,
                                           strlen(libvirt_fs_pool), &info,
                                           err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(info.type, "fs");
  CU_ASSERT_STRING_EQUAL(info.path, "/tmp/exp/fs");
  poolxml_pool_info_free(&info);
}

struct bad_case {
  const char *xml;
  const char *want; /* a substring of the error */
};

/* Each document fails with its message; nothing is returned. */
static void
check_bad_pools(const struct bad_case *cases, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    struct poolxml_pool_info info = { (char *)"x", (char *)"y" };
    char err[512] = "";
    int r = poolxml_parse_pool(cases[i].xml, strlen(cases[i].xml), &info, err,
                               sizeof err);
    CU_ASSERT_EQUAL(r, -1);
    CU_ASSERT_PTR_NULL(info.type);
    CU_ASSERT_PTR_NULL(info.path);
    if (strstr(err, cases[i].want) == NULL) {
      fprintf(stderr, "\ncase %zu: error \"%s\" lacks \"%s\"\n", i, err,
              cases[i].want);
      CU_FAIL("error message");
    }
  }
}

static void
test_parse_pool_hostile(void)
{
  static const struct bad_case cases[] = {
    { "", "empty" },
    { "not xml at all", "does not parse" },
    { "<pool type='dir'><name>x</name>", "does not parse" },
    { "<volume type='dir'/>", "root element is <volume>, expected <pool>" },
    { "<p:pool xmlns:p='urn:x' type='dir'><target><path>/a</path></target></p:pool>",
      "expected <pool>" },
    { "<pool><target><path>/a</path></target></pool>", "no /pool/@type" },
    { "<pool type=''><target><path>/a</path></target></pool>", "type '' is not valid" },
    { "<pool type='dir'><name>x</name></pool>", "no /pool/target/path" },
    { "<pool type='dir'><target/></pool>", "no /pool/target/path" },
    { "<pool type='dir'><target><path>/a</path><path>/b</path></target></pool>",
      "2 nodes match /pool/target/path" },
    { "<pool type='dir'><target><path>/a</path></target><target><path>/b</path></target></pool>",
      "2 nodes match" },
    { "<pool type='dir'><target><path>rel/a</path></target></pool>",
      "not an absolute path" },
    { "<pool type='dir'><target><path></path></target></pool>",
      "not an absolute path" },
    /* Entities of every kind: any DTD is refused. */
    { "<!DOCTYPE pool [<!ENTITY p '/etc'>]><pool type='dir'><target><path>&p;</path></target></pool>",
      "DTD" },
    { "<!DOCTYPE pool [<!ENTITY p SYSTEM 'file:///etc/passwd'>]><pool type='dir'><target><path>&p;</path></target></pool>",
      "DTD" },
    { "<!DOCTYPE pool SYSTEM 'http://127.0.0.1:1/pool.dtd'><pool type='dir'><target><path>/a</path></target></pool>",
      "DTD" },
    { "<!DOCTYPE pool [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
      "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>"
      "<!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'><!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;'>"
      "<!ENTITY g '&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;'><!ENTITY h '&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;'>]>"
      "<pool type='&h;'><target><path>/&h;</path></target></pool>",
      "" /* refused one way or another */ },
    { "<pool type='dir'><target><path>/&undefined;</path></target></pool>",
      "does not parse" },
    { "<pool type='dir'><target><path>/a\xff</path></target></pool>",
      "does not parse" },
  };
  check_bad_pools(cases, sizeof cases / sizeof cases[0]);
}

/* A type or path too long, input over POOLXML_MAX. */
static void
test_parse_pool_huge(void)
{
  size_t n = PATH_MAX + 10;
  char *xml = malloc(n + 200);
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  int l = sprintf(xml, "<pool type='dir'><target><path>/");
  memset(xml + l, 'a', n);
  strcpy(xml + l + n, "</path></target></pool>");
  struct bad_case c1 = { xml, "at most 4095 are accepted" };
  check_bad_pools(&c1, 1);

  l = sprintf(xml, "<pool type='");
  memset(xml + l, 't', 100);
  strcpy(xml + l + 100, "'><target><path>/a</path></target></pool>");
  struct bad_case c2 = { xml, "is not valid" };
  check_bad_pools(&c2, 1);
  free(xml);

  size_t big = POOLXML_MAX + 1;
  char *huge = malloc(big + 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(huge);
  memset(huge, ' ', big);
  memcpy(huge, "<pool type='dir'>", 17);
  huge[big] = '\0';
  struct bad_case c3 = { huge, "at most 1048576 are accepted" };
  check_bad_pools(&c3, 1);
  free(huge);
}

/* ---- Parsing volume XML ------------------------------------------------------ */

/* virsh vol-dumpxml of an anchor and of a VM volume (libvirt 9.0). */
static const char libvirt_anchor[] =
    "<volume type='file'>\n"
    "  <name>img.base</name>\n"
    "  <key>/tmp/exp/pool/img.base</key>\n"
    "  <capacity unit='bytes'>8388608</capacity>\n"
    "  <allocation unit='bytes'>200704</allocation>\n"
    "  <physical unit='bytes'>196616</physical>\n"
    "  <target>\n"
    "    <path>/tmp/exp/pool/img.base</path>\n"
    "    <format type='qcow2'/>\n"
    "    <permissions>\n"
    "      <mode>0644</mode>\n"
    "      <owner>0</owner>\n"
    "      <group>0</group>\n"
    "    </permissions>\n"
    "    <compat>1.1</compat>\n"
    "    <clusterSize unit='B'>65536</clusterSize>\n"
    "    <features/>\n"
    "  </target>\n"
    "  <backingStore>\n"
    "    <path>nbd+unix:///img?socket=/tmp/exp/origin.sock</path>\n"
    "    <format type='raw'/>\n"
    "  </backingStore>\n"
    "</volume>\n";

static const char libvirt_vm_volume[] =
    "<volume type='file'>\n"
    "  <name>vm1.qcow2</name>\n"
    "  <key>/tmp/exp/pool/vm1.qcow2</key>\n"
    "  <capacity unit='bytes'>8388608</capacity>\n"
    "  <allocation unit='bytes'>200704</allocation>\n"
    "  <physical unit='bytes'>196616</physical>\n"
    "  <target>\n"
    "    <path>/tmp/exp/pool/vm1.qcow2</path>\n"
    "    <format type='qcow2'/>\n"
    "  </target>\n"
    "  <backingStore>\n"
    "    <path>/tmp/exp/pool/img.base</path>\n"
    "    <format type='qcow2'/>\n"
    "    <permissions>\n"
    "      <mode>0644</mode>\n"
    "    </permissions>\n"
    "  </backingStore>\n"
    "</volume>\n";

static void
test_parse_volume_libvirt(void)
{
  struct poolxml_vol_info info;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(poolxml_parse_volume(libvirt_anchor,
                                             strlen(libvirt_anchor), &info,
                                             err, sizeof err), 0);
  CU_ASSERT_EQUAL(info.capacity, 8388608);
  CU_ASSERT_STRING_EQUAL(info.path, "/tmp/exp/pool/img.base");
  CU_ASSERT_STRING_EQUAL(info.backing_path,
                         "nbd+unix:///img?socket=/tmp/exp/origin.sock");
  CU_ASSERT_STRING_EQUAL(info.backing_format, "raw");
  poolxml_vol_info_free(&info);

  CU_ASSERT_EQUAL_FATAL(poolxml_parse_volume(libvirt_vm_volume,
                                             strlen(libvirt_vm_volume), &info,
                                             err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(info.path, "/tmp/exp/pool/vm1.qcow2");
  CU_ASSERT_STRING_EQUAL(info.backing_path, "/tmp/exp/pool/img.base");
  CU_ASSERT_STRING_EQUAL(info.backing_format, "qcow2");
  poolxml_vol_info_free(&info);

  /* No backing store: both NULL. */
  const char *plain = "<volume><name>a</name><capacity>42</capacity></volume>";
  CU_ASSERT_EQUAL_FATAL(poolxml_parse_volume(plain, strlen(plain), &info, err,
                                             sizeof err), 0);
  CU_ASSERT_EQUAL(info.capacity, 42);
  CU_ASSERT_PTR_NULL(info.path);
  CU_ASSERT_PTR_NULL(info.backing_path);
  CU_ASSERT_PTR_NULL(info.backing_format);
  poolxml_vol_info_free(&info);

  /* The largest capacity. */
  const char *max = "<volume><capacity unit='bytes'>18446744073709551615</capacity></volume>";
  CU_ASSERT_EQUAL_FATAL(poolxml_parse_volume(max, strlen(max), &info, err,
                                             sizeof err), 0);
  CU_ASSERT_EQUAL(info.capacity, UINT64_MAX);
  poolxml_vol_info_free(&info);
}

static void
test_parse_volume_hostile(void)
{
  static const struct bad_case cases[] = {
    { "<pool/>", "root element is <pool>, expected <volume>" },
    { "<volume><name>a</name></volume>", "no /volume/capacity" },
    { "<volume><capacity>12abc</capacity></volume>", "is not a number" },
    { "<volume><capacity>-1</capacity></volume>", "is not a number" },
    { "<volume><capacity> 1</capacity></volume>", "is not a number" },
    { "<volume><capacity></capacity></volume>", "is not a number" },
    { "<volume><capacity>18446744073709551616</capacity></volume>",
      "is not a number" },
    { "<volume><capacity unit='KiB'>1</capacity></volume>", "unit 'KiB'" },
    { "<volume><capacity>1</capacity><capacity>2</capacity></volume>",
      "2 nodes match /volume/capacity" },
    { "<volume><capacity>1</capacity><target><path>x</path></target></volume>",
      "not an absolute path" },
    { "<volume><capacity>1</capacity><backingStore><path>/a</path><path>/b</path></backingStore></volume>",
      "2 nodes match /volume/backingStore/path" },
    { "<!DOCTYPE volume [<!ENTITY c '1'>]><volume><capacity>&c;</capacity></volume>",
      "DTD" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct poolxml_vol_info info;
    char err[512] = "";
    CU_ASSERT_EQUAL(poolxml_parse_volume(cases[i].xml, strlen(cases[i].xml),
                                         &info, err, sizeof err), -1);
    CU_ASSERT_PTR_NULL(info.path);
    CU_ASSERT_PTR_NULL(info.backing_path);
    CU_ASSERT_PTR_NULL(info.backing_format);
    if (strstr(err, cases[i].want) == NULL) {
      fprintf(stderr, "\ncase %zu: error \"%s\" lacks \"%s\"\n", i, err,
              cases[i].want);
      CU_FAIL("error message");
    }
  }
}

/* ---- Parsing domain XML ------------------------------------------------------ */

/* virsh dumpxml of a running domain made by thunderd (libvirt 9.0). */
static void
test_parse_domain_libvirt(void)
{
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/domain-libvirt.xml", TEST_DATADIR);
  size_t len;
  char *xml = read_file(path, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(xml);
  struct poolxml_domain_info info;
  char err[256] = "";
  CU_ASSERT_EQUAL_FATAL(poolxml_parse_domain(xml, len, &info, err, sizeof err),
                        0);
  CU_ASSERT_STRING_EQUAL(info.name, "vm1");
  CU_ASSERT_EQUAL(info.vcpus, 2);
  CU_ASSERT_EQUAL(info.memory_mib, 300); /* <memory unit='KiB'>307200 */
  CU_ASSERT_STRING_EQUAL(info.pool, "thunder");
  CU_ASSERT_STRING_EQUAL(info.volume, "vm1.qcow2");
  CU_ASSERT_STRING_EQUAL(info.console_log, "/var/log/thunder/vm/vm1.log");
  CU_ASSERT_TRUE(info.thunder);
  CU_ASSERT_STRING_EQUAL(info.image, "guest");
  CU_ASSERT_EQUAL(info.disk_bytes, 67108864);
  CU_ASSERT_FALSE(info.kvm);
  poolxml_domain_info_free(&info);
  free(xml);
}

/* The error policies added to an older domain's disk of the pool: both
 * when absent, one kept when set by hand, nothing when both are there; a
 * domain without a disk in the pool is an error. */
static void
test_domain_stop_on_error(void)
{
  static const char old[] =
      "<domain type='qemu'><name>vm1</name><devices>"
      "<disk type='file' device='cdrom'><driver name='qemu'/></disk>"
      "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
      "<source pool='thunder' volume='vm1.qcow2'/><target dev='vda'/></disk>"
      "</devices></domain>";
  char *out = NULL;
  char err[256] = "";
  CU_ASSERT_EQUAL_FATAL(poolxml_domain_stop_on_error(old, strlen(old),
                                                     "thunder", &out, err,
                                                     sizeof err), 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(out);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "<driver name=\"qemu\" type=\"qcow2\""
                                     " error_policy=\"stop\""
                                     " rerror_policy=\"stop\"/>"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "<driver name=\"qemu\"/>"));
  char *again = NULL;
  CU_ASSERT_EQUAL(poolxml_domain_stop_on_error(out, strlen(out), "thunder",
                                               &again, err, sizeof err), 0);
  CU_ASSERT_PTR_NULL(again);
  free(out);

  static const char by_hand[] =
      "<domain><name>vm1</name><devices><disk device='disk'>"
      "<driver name='qemu' error_policy='report'/><source pool='thunder'/>"
      "</disk></devices></domain>";
  CU_ASSERT_EQUAL_FATAL(poolxml_domain_stop_on_error(by_hand, strlen(by_hand),
                                                     "thunder", &out, err,
                                                     sizeof err), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "error_policy=\"report\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "rerror_policy=\"stop\""));
  free(out);

  CU_ASSERT_EQUAL(poolxml_domain_stop_on_error(old, strlen(old), "other",
                                               &out, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "no disk in storage pool other"));
  CU_ASSERT_EQUAL(poolxml_domain_stop_on_error("<domain>", 8, "thunder",
                                               &out, err, sizeof err), -1);
  CU_ASSERT_PTR_NULL(out);
}

/* A domain document: "<domain><name>d</name>" MID "</domain>", with
 * memory and vcpu unless MID has them. */
#define DOM(mid) "<domain type='qemu'><name>d</name>" mid "</domain>"
#define DOM_BASIC(mid) DOM("<memory>262144</memory><vcpu>1</vcpu>" mid)
#define MD_OPEN "<metadata><thunder:vm xmlns:thunder='" POOLXML_VM_NS "'>"
#define MD_CLOSE "</thunder:vm></metadata>"

/* Parses xml (which must succeed) and returns whether it is thunder's. */
static bool
parse_thunder(const char *xml)
{
  struct poolxml_domain_info info;
  char err[256] = "";
  int r = poolxml_parse_domain(xml, strlen(xml), &info, err, sizeof err);
  CU_ASSERT_EQUAL(r, 0);
  if (r != 0) {
    fprintf(stderr, "\n%s: %s\n", xml, err);
    return false;
  }
  bool t = info.thunder;
  if (!t) {
    CU_ASSERT_PTR_NULL(info.image);
    CU_ASSERT_EQUAL(info.disk_bytes, 0);
  }
  poolxml_domain_info_free(&info);
  return t;
}

static void
test_parse_domain_metadata(void)
{
  /* The metadata complete: thunder's, fields in no namespace or in
   * thunder's (prefixed), in any order. */
  CU_ASSERT_TRUE(parse_thunder(DOM_BASIC(
      MD_OPEN "<image>img</image><disk_bytes>1</disk_bytes><accel>kvm</accel>" MD_CLOSE)));
  CU_ASSERT_TRUE(parse_thunder(DOM_BASIC(
      MD_OPEN "<thunder:accel>tcg</thunder:accel><thunder:image>img</thunder:image>"
      "<thunder:disk_bytes>0</thunder:disk_bytes>" MD_CLOSE)));
  CU_ASSERT_TRUE(parse_thunder(DOM_BASIC(
      "<metadata><vm xmlns='" POOLXML_VM_NS "'><image>i</image>"
      "<disk_bytes>5</disk_bytes><accel>tcg</accel></vm></metadata>")));

  /* Anything less is not thunder's. */
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC("")));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC("<metadata/>")));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      "<metadata><x:vm xmlns:x='https://example.com/other'><image>img</image>"
      "<disk_bytes>1</disk_bytes><accel>kvm</accel></x:vm></metadata>")));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      "<metadata><vm><image>img</image><disk_bytes>1</disk_bytes><accel>kvm</accel></vm></metadata>")));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      MD_OPEN "<image>img</image><disk_bytes>1</disk_bytes>" MD_CLOSE)));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      MD_OPEN "<disk_bytes>1</disk_bytes><accel>kvm</accel>" MD_CLOSE)));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      MD_OPEN "<image>img</image><accel>kvm</accel>" MD_CLOSE)));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      MD_OPEN "<image>img</image><disk_bytes>1</disk_bytes><accel>hvf</accel>" MD_CLOSE)));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      MD_OPEN "<image>.img</image><disk_bytes>1</disk_bytes><accel>kvm</accel>" MD_CLOSE)));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      MD_OPEN "<image>img</image><disk_bytes>-1</disk_bytes><accel>kvm</accel>" MD_CLOSE)));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      MD_OPEN "<image>img</image><disk_bytes>18446744073709551616</disk_bytes><accel>kvm</accel>" MD_CLOSE)));
  CU_ASSERT_FALSE(parse_thunder(DOM_BASIC(
      MD_OPEN "<image>img</image><image>img2</image><disk_bytes>1</disk_bytes><accel>kvm</accel>" MD_CLOSE)));
}

/* Sizes in libvirt's units; the disk, the console log: optional. */
static void
test_parse_domain_units(void)
{
  static const struct {
    const char *xml;
    unsigned mib;
  } cases[] = {
    { DOM("<memory>262144</memory><vcpu>1</vcpu>"), 256 },
    { DOM("<memory unit='KiB'>262144</memory><vcpu>1</vcpu>"), 256 },
    { DOM("<memory unit='k'>2048</memory><vcpu>1</vcpu>"), 2 },
    { DOM("<memory unit='MiB'>512</memory><vcpu>1</vcpu>"), 512 },
    { DOM("<memory unit='M'>512</memory><vcpu>1</vcpu>"), 512 },
    { DOM("<memory unit='G'>2</memory><vcpu>1</vcpu>"), 2048 },
    { DOM("<memory unit='gib'>2</memory><vcpu>1</vcpu>"), 2048 },
    { DOM("<memory unit='TiB'>1</memory><vcpu>1</vcpu>"), 1048576 },
    { DOM("<memory unit='bytes'>1048576</memory><vcpu>1</vcpu>"), 1 },
    { DOM("<memory unit='b'>1048575</memory><vcpu>1</vcpu>"), 0 },
    { DOM("<memory unit='KB'>1048576</memory><vcpu>1</vcpu>"), 1000 },
    { DOM("<memory unit='MB'>1000</memory><vcpu>1</vcpu>"), 953 },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct poolxml_domain_info info;
    char err[256] = "";
    CU_ASSERT_EQUAL_FATAL(poolxml_parse_domain(cases[i].xml,
                                               strlen(cases[i].xml), &info,
                                               err, sizeof err), 0);
    CU_ASSERT_EQUAL(info.memory_mib, cases[i].mib);
    if (info.memory_mib != cases[i].mib)
      fprintf(stderr, "\ncase %zu: %u MiB, expected %u\n", i,
              info.memory_mib, cases[i].mib);
    CU_ASSERT_EQUAL(info.vcpus, 1);
    CU_ASSERT_PTR_NULL(info.pool);
    CU_ASSERT_PTR_NULL(info.volume);
    CU_ASSERT_PTR_NULL(info.console_log);
    CU_ASSERT_FALSE(info.thunder);
    poolxml_domain_info_free(&info);
  }
}

static void
test_parse_domain_hostile(void)
{
  static const struct bad_case cases[] = {
    { "", "empty" },
    { "<domain>", "does not parse" },
    { "<pool type='dir'/>", "root element is <pool>, expected <domain>" },
    { "<domain><memory>1</memory><vcpu>1</vcpu></domain>", "no /domain/name" },
    { DOM("<vcpu>1</vcpu>"), "no /domain/memory" },
    { DOM("<memory>1</memory>"), "no /domain/vcpu" },
    { DOM("<memory>1</memory><vcpu>0</vcpu>"), "not a number of vCPUs" },
    { DOM("<memory>1</memory><vcpu>x</vcpu>"), "not a number of vCPUs" },
    { DOM("<memory>1</memory><vcpu>4294967296</vcpu>"), "not a number of vCPUs" },
    { DOM("<memory>-1</memory><vcpu>1</vcpu>"), "is not a size" },
    { DOM("<memory unit='furlongs'>1</memory><vcpu>1</vcpu>"), "is not a size" },
    { DOM("<memory unit='KiBB'>1</memory><vcpu>1</vcpu>"), "is not a size" },
    { DOM("<memory unit='EiB'>16</memory><vcpu>1</vcpu>"), "is not a size" },
    { DOM("<memory>1</memory><memory>2</memory><vcpu>1</vcpu>"), "2 nodes match" },
    { "<!DOCTYPE domain [<!ENTITY n 'x'>]><domain><name>&n;</name><memory>1</memory><vcpu>1</vcpu></domain>",
      "DTD" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct poolxml_domain_info info;
    char err[512] = "";
    int r = poolxml_parse_domain(cases[i].xml, strlen(cases[i].xml), &info,
                                 err, sizeof err);
    CU_ASSERT_EQUAL(r, -1);
    CU_ASSERT_PTR_NULL(info.name);
    CU_ASSERT_PTR_NULL(info.image);
    if (strstr(err, cases[i].want) == NULL) {
      fprintf(stderr, "\ncase %zu: error \"%s\" lacks \"%s\"\n", i, err,
              cases[i].want);
      CU_FAIL("error message");
    }
  }
}

static void
test_vm_names(void)
{
  CU_ASSERT_STRING_EQUAL(pool_vm_state_name(POOL_VM_RUNNING), "running");
  CU_ASSERT_STRING_EQUAL(pool_vm_state_name(POOL_VM_SHUTOFF), "shutoff");
  CU_ASSERT_STRING_EQUAL(pool_vm_state_name(POOL_VM_PAUSED), "paused");
  CU_ASSERT_STRING_EQUAL(pool_vm_state_name(POOL_VM_CRASHED), "crashed");
  CU_ASSERT_STRING_EQUAL(pool_vm_state_name(POOL_VM_STARTING), "starting");
  CU_ASSERT_STRING_EQUAL(pool_vm_state_name(POOL_VM_OTHER), "other");
  CU_ASSERT_STRING_EQUAL(pool_accel_name(POOL_ACCEL_AUTO), "auto");
  CU_ASSERT_STRING_EQUAL(pool_accel_name(POOL_ACCEL_KVM), "kvm");
  CU_ASSERT_STRING_EQUAL(pool_accel_name(POOL_ACCEL_TCG), "tcg");
}

/* ---- Names, socket paths, sizes ---------------------------------------------- */

static void
test_names(void)
{
  static const char *const good[] = {
    "thunder", "vm1.qcow2", "debian-12_x86.64", "a", "A9",
  };
  static const char *const bad[] = {
    "", ".hidden", "-opt", "a/b", "..", "a b", "a\nb", "vm1;rm", "n\xc3\xa9",
    "a'b", "<x>",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    CU_ASSERT(poolxml_name_valid(good[i]));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CU_ASSERT(!poolxml_name_valid(bad[i]));
  CU_ASSERT(!poolxml_name_valid(NULL));

  char longname[300];
  memset(longname, 'x', sizeof longname);
  longname[255] = '\0';
  CU_ASSERT(poolxml_name_valid(longname));
  longname[255] = 'x';
  longname[256] = '\0';
  CU_ASSERT(!poolxml_name_valid(longname));
}

static void
test_socket_paths(void)
{
  CU_ASSERT(poolxml_socket_path_valid("/run/thunder/nbd.sock"));
  CU_ASSERT(poolxml_socket_path_valid("/tmp/thunder-test.Ab3_x/node1.sock"));
  CU_ASSERT(poolxml_socket_path_valid("/a+b"));
  CU_ASSERT(!poolxml_socket_path_valid(NULL));
  CU_ASSERT(!poolxml_socket_path_valid(""));
  CU_ASSERT(!poolxml_socket_path_valid("relative.sock"));
  CU_ASSERT(!poolxml_socket_path_valid("/a?b"));
  CU_ASSERT(!poolxml_socket_path_valid("/a&export=x"));
  CU_ASSERT(!poolxml_socket_path_valid("/a#b"));
  CU_ASSERT(!poolxml_socket_path_valid("/a%20b"));
  CU_ASSERT(!poolxml_socket_path_valid("/a b"));
  char p[200];
  p[0] = '/';
  memset(p + 1, 's', 106);
  p[107] = '\0';
  CU_ASSERT(poolxml_socket_path_valid(p)); /* 107 bytes: fits sun_path */
  p[107] = 's';
  p[108] = '\0';
  CU_ASSERT(!poolxml_socket_path_valid(p));
}

static void
test_parse_size(void)
{
  static const struct {
    const char *s;
    uint64_t v;
  } good[] = {
    { "0", 0 },
    { "1", 1 },
    { "512", 512 },
    { "1K", 1024 },
    { "1k", 1024 },
    { "64M", 64ULL << 20 },
    { "10G", 10ULL << 30 },
    { "10g", 10ULL << 30 },
    { "2T", 2ULL << 40 },
    { "512MiB", 512ULL << 20 },
    { "1GiB", 1ULL << 30 },
    { "18446744073709551615", UINT64_MAX },
    { "16777215T", 16777215ULL << 40 },
  };
  static const char *const bad[] = {
    "", "G", "-1", "+1", " 1", "1 ", "1.5G", "1GB", "1Gi", "1X", "1KK",
    "0x10", "18446744073709551616", "16777216T", "99999999999999999999K",
    "1iB",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    uint64_t v = 7;
    CU_ASSERT_EQUAL(pool_parse_size(good[i].s, &v), 0);
    CU_ASSERT_EQUAL(v, good[i].v);
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 7;
    if (pool_parse_size(bad[i], &v) != -1) {
      fprintf(stderr, "\n'%s' parsed as %" PRIu64 "\n", bad[i], v);
      CU_FAIL("bad size accepted");
    }
    CU_ASSERT_EQUAL(v, 7);
  }
  CU_ASSERT_EQUAL(pool_parse_size(NULL, &(uint64_t){ 0 }), -1);
}

static void
test_console_log_path(void)
{
  char buf[256];
  pool_console_log_path("vm1", buf, sizeof buf);
  CU_ASSERT_STRING_EQUAL(buf, "/var/log/thunder/vm/vm1.log");
  char small[10];
  pool_console_log_path("vm1", small, sizeof small);
  CU_ASSERT_EQUAL(strlen(small), sizeof small - 1);
}

/* ---- The KVM probe ------------------------------------------------------------ */

/* It answers within its 2 s deadline (plus reaping), whatever /dev/kvm
 * does; without /dev/kvm it says no; THUNDER_TEST_KVM says what it must
 * answer on this host. */
static void
test_kvm_probe(void)
{
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  bool usable = pool_kvm_usable();
  clock_gettime(CLOCK_MONOTONIC, &b);
  double secs = (double)(b.tv_sec - a.tv_sec) +
                (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  CU_ASSERT(secs < 3.5);
  if (access("/dev/kvm", F_OK) != 0)
    CU_ASSERT(!usable);
  const char *want = getenv("THUNDER_TEST_KVM");
  if (want && strcmp(want, "usable") == 0)
    CU_ASSERT(usable);
  if (want && strcmp(want, "unusable") == 0)
    CU_ASSERT(!usable);
  fprintf(stderr, " [kvm %s in %.3f s] ", usable ? "usable" : "unusable",
          secs);
}

/* ---- Suite ----------------------------------------------------------------------- */

static int
suite_init(void)
{
  poolxml_init();
  return 0;
}

static int
suite_clean(void)
{
  xmlCleanupParser();
  return 0;
}

#define T(name) { #name, test_##name }

static const struct cunit_test tests[] = {
  T(pool_build),
  T(volume_build),
  T(domain_build_tcg),
  T(domain_build_kvm),
  T(domain_build_no_metadata),
  T(domain_roundtrip),
  T(build_escapes),
  T(build_not_utf8),
  T(build_huge),
  T(parse_pool_libvirt),
  T(parse_pool_hostile),
  T(parse_pool_huge),
  T(parse_volume_libvirt),
  T(parse_volume_hostile),
  T(parse_domain_libvirt),
  T(parse_domain_metadata),
  T(parse_domain_units),
  T(parse_domain_hostile),
  T(domain_stop_on_error),
  T(vm_names),
  T(names),
  T(socket_paths),
  T(parse_size),
  T(console_log_path),
  T(kvm_probe),
};

int
main(void)
{
  static const struct cunit_suite suite = {
    "pool-xml", suite_init, suite_clean, NULL, NULL,
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
