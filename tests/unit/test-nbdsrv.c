/* thunder — unit tests of the NBD protocol engine (src/daemon/nbdsrv.c).
 *
 * Every test scripts the client's bytes into t_in, runs nbdsrv over an
 * in-memory struct nbdsrv_io (mem_read / mem_writev) and parses what the
 * server wrote into t_out, asserting exact bytes.  The memory io follows
 * the nbdsrv_io contract: a read returns 1 when enough bytes remain, 0 at
 * exactly the end of the script, -1 when the script ends part way (and
 * the rest of the script is then gone).
 *
 * Fixture (per test): a registry holding "img", IMG_SIZE bytes of
 * pattern() in a byte array, preferred block IMG_PREF; and a connection
 * t_conn over the memory io.  Other exports are added by the tests that
 * need them.  One multi-threaded test drives a connection over a
 * socketpair instead.
 *
 * The protocol constants are spelled out here from the NBD specification
 * (doc/proto.md) and not taken from nbd-protocol.h, so that a wrong
 * constant in the server cannot hide itself.
 */
#include <CUnit/Basic.h>

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "export.h"
#include "nbdsrv.h"
#include "cunit-run.h"

/* ---- wire constants (NBD protocol specification) ------------------ */

#define W_NBDMAGIC UINT64_C(0x4e42444d41474943)
#define W_IHAVEOPT UINT64_C(0x49484156454f5054)
#define W_REP_MAGIC UINT64_C(0x0003e889045565a9)
#define W_REQ_MAGIC UINT32_C(0x25609513)
#define W_REPLY_MAGIC UINT32_C(0x67446698)

#define W_FLAG_FIXED_NEWSTYLE 1u
#define W_FLAG_NO_ZEROES 2u

#define W_OPT_EXPORT_NAME 1u
#define W_OPT_ABORT 2u
#define W_OPT_LIST 3u
#define W_OPT_STARTTLS 5u
#define W_OPT_INFO 6u
#define W_OPT_GO 7u
#define W_OPT_STRUCTURED_REPLY 8u

#define W_REP_ACK 1u
#define W_REP_SERVER 2u
#define W_REP_INFO 3u
#define W_REP_ERR_UNSUP 0x80000001u
#define W_REP_ERR_INVALID 0x80000003u
#define W_REP_ERR_TLS_REQD 0x80000005u
#define W_REP_ERR_UNKNOWN 0x80000006u
#define W_REP_ERR_TOO_BIG 0x80000009u

#define W_INFO_EXPORT 0
#define W_INFO_NAME 1
#define W_INFO_DESCRIPTION 2
#define W_INFO_BLOCK_SIZE 3

#define W_TF_HAS_FLAGS 0x0001u
#define W_TF_READ_ONLY 0x0002u
#define W_TF_SEND_FLUSH 0x0004u
#define W_TF_CAN_MULTI_CONN 0x0100u
#define W_TF_SEND_CACHE 0x0400u

#define W_CMD_READ 0
#define W_CMD_WRITE 1
#define W_CMD_DISC 2
#define W_CMD_FLUSH 3
#define W_CMD_TRIM 4
#define W_CMD_CACHE 5
#define W_CMD_WRITE_ZEROES 6
#define W_CMD_BLOCK_STATUS 7
#define W_CMD_RESIZE 8

#define W_CMD_FLAG_FUA 0x01
#define W_CMD_FLAG_NO_HOLE 0x02
#define W_CMD_FLAG_DF 0x04
#define W_CMD_FLAG_REQ_ONE 0x08
#define W_CMD_FLAG_FAST_ZERO 0x10

#define W_EPERM 1u
#define W_EIO 5u
#define W_ENOMEM 12u
#define W_EINVAL 22u
#define W_ENOSPC 28u
#define W_EOVERFLOW 75u
#define W_ENOTSUP 95u
#define W_ESHUTDOWN 108u

/* ---- the memory export -------------------------------------------- */

#define IMG_SIZE (1024 * 1024 + 123)
#define IMG_PREF 65536u
#define BIG_SIZE (UINT64_C(64) * 1024 * 1024)

/* The byte at offset off of every test export. */
static uint8_t
pattern(uint64_t off)
{
  return (uint8_t)((off * UINT64_C(0x9e3779b97f4a7c15)) >> 56);
}

struct mem_backend {
  const uint8_t *data;    /* NULL: bytes computed by pattern() */
  uint64_t size;
  int pread_err;          /* non-zero: pread fails with it (-1: *err unset) */
  int cache_err;          /* non-zero: cache fails with it */
  atomic_uint preads, caches, closes, bad_ranges;
  uint64_t cache_len, cache_off; /* of the last cache call */
  uint64_t slow_from;     /* non-zero: reads reaching it may block */
  atomic_uint may_blocks; /* may_block calls */
};

static int
mem_pread(void *handle, void *buf, uint32_t len, uint64_t off, int *err)
{
  struct mem_backend *b = handle;
  atomic_fetch_add(&b->preads, 1);
  if (off > b->size || len > b->size - off || len == 0) {
    atomic_fetch_add(&b->bad_ranges, 1);
    *err = EIO;
    return -1;
  }
  if (b->pread_err) {
    if (b->pread_err != -1)
      *err = b->pread_err;
    return -1;
  }
  if (b->data) {
    memcpy(buf, b->data + off, len);
  } else {
    uint8_t *p = buf;
    for (uint32_t i = 0; i < len; i++)
      p[i] = pattern(off + i);
  }
  return 0;
}

static int
mem_cache(void *handle, uint64_t len, uint64_t off, int *err)
{
  struct mem_backend *b = handle;
  atomic_fetch_add(&b->caches, 1);
  b->cache_len = len;
  b->cache_off = off;
  if (off > b->size || len > b->size - off)
    atomic_fetch_add(&b->bad_ranges, 1);
  if (b->cache_err) {
    *err = b->cache_err;
    return -1;
  }
  return 0;
}

static void
mem_close(void *handle)
{
  struct mem_backend *b = handle;
  atomic_fetch_add(&b->closes, 1);
}

static bool
mem_may_block(void *handle, uint32_t len, uint64_t off)
{
  struct mem_backend *b = handle;
  atomic_fetch_add(&b->may_blocks, 1);
  return b->slow_from != 0 && off + len > b->slow_from;
}

static const struct export_ops mem_ops = {
  .pread = mem_pread,
  .cache = mem_cache,
  .close = mem_close,
  .may_block = mem_may_block,
};

static void
backend_reset(struct mem_backend *b, const uint8_t *data, uint64_t size)
{
  b->data = data;
  b->size = size;
  b->pread_err = 0;
  b->cache_err = 0;
  atomic_store(&b->preads, 0);
  atomic_store(&b->caches, 0);
  atomic_store(&b->closes, 0);
  atomic_store(&b->bad_ranges, 0);
  b->cache_len = b->cache_off = 0;
  b->slow_from = 0;
  atomic_store(&b->may_blocks, 0);
}

/* ---- growing byte buffers ------------------------------------------ */

struct bytes {
  uint8_t *p;
  size_t len, cap;
};

static void
bytes_reserve(struct bytes *b, size_t n)
{
  if (b->cap - b->len >= n)
    return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < n)
    cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  if (p == NULL)
    abort();
  b->p = p;
  b->cap = cap;
}

static void
bytes_put(struct bytes *b, const void *p, size_t n)
{
  if (n == 0)
    return;
  bytes_reserve(b, n);
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void
bytes_fill(struct bytes *b, uint8_t byte, size_t n)
{
  bytes_reserve(b, n);
  memset(b->p + b->len, byte, n);
  b->len += n;
}

static void
bytes_be16(struct bytes *b, uint16_t v)
{
  v = htobe16(v);
  bytes_put(b, &v, 2);
}

static void
bytes_be32(struct bytes *b, uint32_t v)
{
  v = htobe32(v);
  bytes_put(b, &v, 4);
}

static void
bytes_be64(struct bytes *b, uint64_t v)
{
  v = htobe64(v);
  bytes_put(b, &v, 8);
}

static void
bytes_free(struct bytes *b)
{
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

static uint16_t
get_be16(const uint8_t *p)
{
  uint16_t v;
  memcpy(&v, p, 2);
  return be16toh(v);
}

static uint32_t
get_be32(const uint8_t *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return be32toh(v);
}

static uint64_t
get_be64(const uint8_t *p)
{
  uint64_t v;
  memcpy(&v, p, 8);
  return be64toh(v);
}

/* ---- fixture and memory io ------------------------------------------ */

static uint8_t *t_img_data;
static struct mem_backend t_img, t_other, t_big, t_spare;
static struct exports *t_reg;
static struct nbdsrv_conn *t_conn;
static struct nbdsrv_buf t_buf;
static struct bytes t_in, t_out;  /* client script, server output */
static size_t t_in_pos, t_out_pos;
static int t_writes_left;         /* writev calls that succeed; -1: all */

static int
mem_read(void *opaque, void *buf, size_t len)
{
  (void)opaque;
  if (t_in_pos == t_in.len)
    return 0;
  if (t_in.len - t_in_pos < len) {
    t_in_pos = t_in.len;
    return -1;
  }
  memcpy(buf, t_in.p + t_in_pos, len);
  t_in_pos += len;
  return 1;
}

static int
mem_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
  (void)opaque;
  if (t_writes_left == 0)
    return -1;
  if (t_writes_left > 0)
    t_writes_left--;
  for (int i = 0; i < iovcnt; i++)
    bytes_put(&t_out, iov[i].iov_base, iov[i].iov_len);
  return 0;
}

static const struct nbdsrv_io mem_io = {
  .read = mem_read,
  .writev = mem_writev,
  .opaque = NULL,
};

/* Registers a memory export; fatal on failure. */
static void
add_export(const char *name, uint64_t size, uint32_t pref, const char *desc,
           struct mem_backend *b)
{
  struct export *exp = export_new(name, size, pref, desc, &mem_ops, b);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_EQUAL_FATAL(exports_add(t_reg, exp), 0);
}

static int
suite_init(void)
{
  t_img_data = malloc(IMG_SIZE);
  if (t_img_data == NULL)
    return -1;
  for (uint64_t i = 0; i < IMG_SIZE; i++)
    t_img_data[i] = pattern(i);
  return 0;
}

static int
suite_clean(void)
{
  free(t_img_data);
  t_img_data = NULL;
  return 0;
}

static void
test_setup(void)
{
  backend_reset(&t_img, t_img_data, IMG_SIZE);
  backend_reset(&t_other, NULL, 4096);
  backend_reset(&t_big, NULL, BIG_SIZE);
  backend_reset(&t_spare, NULL, 512);
  t_in_pos = t_out_pos = 0;
  t_writes_left = -1;
  t_reg = exports_new();
  if (t_reg == NULL)
    abort();
  struct export *exp =
      export_new("img", IMG_SIZE, IMG_PREF, "test image", &mem_ops, &t_img);
  if (exp == NULL || exports_add(t_reg, exp) == -1)
    abort();
  t_conn = nbdsrv_conn_new(t_reg, &mem_io, "test");
  if (t_conn == NULL)
    abort();
}

static void
test_teardown(void)
{
  nbdsrv_conn_free(t_conn);
  t_conn = NULL;
  exports_free(t_reg);
  t_reg = NULL;
  nbdsrv_buf_free(&t_buf);
  bytes_free(&t_in);
  bytes_free(&t_out);
}

/* ---- client script --------------------------------------------------- */

static void
cl_flags(uint32_t flags)
{
  bytes_be32(&t_in, flags);
}

/* An option header with any magic and length, then datalen bytes. */
static void
cl_opt_raw(uint64_t magic, uint32_t opt, uint32_t len, const void *data,
           size_t datalen)
{
  bytes_be64(&t_in, magic);
  bytes_be32(&t_in, opt);
  bytes_be32(&t_in, len);
  bytes_put(&t_in, data, datalen);
}

static void
cl_opt(uint32_t opt, const void *data, uint32_t len)
{
  cl_opt_raw(W_IHAVEOPT, opt, len, data, len);
}

/* NBD_OPT_INFO / NBD_OPT_GO with a consistent length. */
static void
cl_info_go(uint32_t opt, const char *name, uint32_t namelen, uint16_t nreq,
           const uint16_t *reqs)
{
  bytes_be64(&t_in, W_IHAVEOPT);
  bytes_be32(&t_in, opt);
  bytes_be32(&t_in, 4 + namelen + 2 + 2u * nreq);
  bytes_be32(&t_in, namelen);
  bytes_put(&t_in, name, namelen);
  bytes_be16(&t_in, nreq);
  for (uint16_t i = 0; i < nreq; i++)
    bytes_be16(&t_in, reqs[i]);
}

static void
cl_req(uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset,
       uint32_t count)
{
  bytes_be32(&t_in, W_REQ_MAGIC);
  bytes_be16(&t_in, flags);
  bytes_be16(&t_in, type);
  bytes_be64(&t_in, cookie);
  bytes_be64(&t_in, offset);
  bytes_be32(&t_in, count);
}

/* A name of len bytes, 'a'..'z' repeating; free it. */
static char *
long_name(size_t len)
{
  char *s = malloc(len + 1);
  if (s == NULL)
    abort();
  for (size_t i = 0; i < len; i++)
    s[i] = (char)('a' + i % 26);
  s[len] = '\0';
  return s;
}

/* ---- server output --------------------------------------------------- */

/* The next n bytes the server wrote; fatal if fewer are left. */
static const uint8_t *
sv_take(size_t n)
{
  CU_ASSERT_FATAL(t_out.len - t_out_pos >= n);
  const uint8_t *p = t_out.p + t_out_pos;
  t_out_pos += n;
  return p;
}

/* The server wrote nothing more. */
static void
sv_end(void)
{
  CU_ASSERT_EQUAL(t_out.len, t_out_pos);
}

static void
sv_greeting(void)
{
  const uint8_t *p = sv_take(18);
  CU_ASSERT_EQUAL(memcmp(p, "NBDMAGICIHAVEOPT\0\3", 18), 0);
}

struct opt_reply {
  uint32_t opt, type, len;
  const uint8_t *data;
};

static struct opt_reply
sv_opt_reply(void)
{
  struct opt_reply r;
  const uint8_t *h = sv_take(20);
  CU_ASSERT_EQUAL_FATAL(get_be64(h), W_REP_MAGIC);
  r.opt = get_be32(h + 8);
  r.type = get_be32(h + 12);
  r.len = get_be32(h + 16);
  r.data = sv_take(r.len);
  return r;
}

/* An option reply of this option and type; returns it. */
static struct opt_reply
sv_expect(uint32_t opt, uint32_t type)
{
  struct opt_reply r = sv_opt_reply();
  CU_ASSERT_EQUAL(r.opt, opt);
  CU_ASSERT_EQUAL_FATAL(r.type, type);
  return r;
}

/* An error reply: the type and a non-empty printable message. */
static void
sv_expect_error(uint32_t opt, uint32_t type)
{
  struct opt_reply r = sv_expect(opt, type);
  CU_ASSERT(r.len > 0);
  for (uint32_t i = 0; i < r.len; i++)
    CU_ASSERT(r.data[i] >= 0x20 && r.data[i] < 0x7f);
}

/* What the INFO replies of one NBD_OPT_INFO / NBD_OPT_GO said. */
struct info {
  int n_export, n_block, n_name, n_desc, n_other;
  uint64_t size;
  uint16_t flags;
  uint32_t bmin, bpref, bmax;
  uint32_t name_len, desc_len;
  const uint8_t *name, *desc;
};

/* Reads NBD_REP_INFO replies up to the NBD_REP_ACK. */
static void
sv_info_until_ack(uint32_t opt, struct info *info)
{
  memset(info, 0, sizeof *info);
  for (;;) {
    struct opt_reply r = sv_opt_reply();
    CU_ASSERT_EQUAL(r.opt, opt);
    if (r.type == W_REP_ACK) {
      CU_ASSERT_EQUAL(r.len, 0);
      return;
    }
    CU_ASSERT_EQUAL_FATAL(r.type, W_REP_INFO);
    CU_ASSERT_FATAL(r.len >= 2);
    switch (get_be16(r.data)) {
    case W_INFO_EXPORT:
      CU_ASSERT_EQUAL_FATAL(r.len, 12);
      info->n_export++;
      info->size = get_be64(r.data + 2);
      info->flags = get_be16(r.data + 10);
      break;
    case W_INFO_BLOCK_SIZE:
      CU_ASSERT_EQUAL_FATAL(r.len, 14);
      info->n_block++;
      info->bmin = get_be32(r.data + 2);
      info->bpref = get_be32(r.data + 6);
      info->bmax = get_be32(r.data + 10);
      break;
    case W_INFO_NAME:
      info->n_name++;
      info->name = r.data + 2;
      info->name_len = r.len - 2;
      break;
    case W_INFO_DESCRIPTION:
      info->n_desc++;
      info->desc = r.data + 2;
      info->desc_len = r.len - 2;
      break;
    default:
      info->n_other++;
      break;
    }
  }
}

/* A simple reply: magic, error, cookie, then datalen bytes (returned). */
static const uint8_t *
sv_reply(uint64_t cookie, uint32_t error, uint32_t datalen)
{
  const uint8_t *h = sv_take(16);
  CU_ASSERT_EQUAL(get_be32(h), W_REPLY_MAGIC);
  CU_ASSERT_EQUAL(get_be32(h + 4), error);
  CU_ASSERT_EQUAL(get_be64(h + 8), cookie);
  return sv_take(datalen);
}

/* A successful read reply carrying img[off, off + count). */
static void
sv_read_reply(uint64_t cookie, uint64_t off, uint32_t count)
{
  const uint8_t *d = sv_reply(cookie, 0, count);
  CU_ASSERT_EQUAL(memcmp(d, t_img_data + off, count), 0);
}

/* ---- shortcuts ---------------------------------------------------------- */

static int
serve(void)
{
  return nbdsrv_serve_one(t_conn, &t_buf);
}

/* Handshake with NBD_OPT_GO "img"; leaves t_out after the ACK. */
static void
go_img(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT_EQUAL_FATAL(info.size, IMG_SIZE);
  CU_ASSERT_PTR_NOT_NULL_FATAL(nbdsrv_conn_export(t_conn));
  sv_end();
}

/* Sends one request that must not return data and returns the error of
 * its reply (the cookie is checked). */
static uint32_t
req_error(uint16_t flags, uint16_t type, uint64_t off, uint32_t count)
{
  static uint64_t cookie = 0x1000;
  cookie++;
  cl_req(flags, type, cookie, off, count);
  CU_ASSERT_EQUAL_FATAL(serve(), 1);
  const uint8_t *h = sv_take(16);
  CU_ASSERT_EQUAL(get_be32(h), W_REPLY_MAGIC);
  CU_ASSERT_EQUAL(get_be64(h + 8), cookie);
  uint32_t e = get_be32(h + 4);
  sv_end();
  return e;
}

/* A read that must succeed. */
static void
read_ok(uint16_t flags, uint64_t off, uint32_t count)
{
  cl_req(flags, W_CMD_READ, 0xabcdef, off, count);
  CU_ASSERT_EQUAL_FATAL(serve(), 1);
  sv_read_reply(0xabcdef, off, count);
  sv_end();
}

/* ==== handshake =========================================================== */

static void
test_greeting(void)
{
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0); /* no client bytes */
  CU_ASSERT_EQUAL(t_out.len, 18);
  sv_greeting();
  sv_end();
}

static void
test_go_then_read(void)
{
  go_img();
  cl_req(0, W_CMD_READ, 1, 0, 4096);
  cl_req(0, W_CMD_READ, 2, 1000, 65536);
  cl_req(0, W_CMD_READ, 3, IMG_SIZE - 1, 1);
  CU_ASSERT_EQUAL(serve(), 1);
  CU_ASSERT_EQUAL(serve(), 1);
  CU_ASSERT_EQUAL(serve(), 1);
  CU_ASSERT_EQUAL(serve(), 0); /* end of the script */
  sv_read_reply(1, 0, 4096);
  sv_read_reply(2, 1000, 65536);
  sv_read_reply(3, IMG_SIZE - 1, 1);
  sv_end();
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 3);
  CU_ASSERT_EQUAL(atomic_load(&t_img.bad_ranges), 0);
}

/* NBD_OPT_EXPORT_NAME without NO_ZEROES: size, flags and 124 zeroes. */
static void
test_export_name_zeroes(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_EXPORT_NAME, "img", 3);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  CU_ASSERT_EQUAL_FATAL(t_out.len - t_out_pos, 134);
  const uint8_t *p = sv_take(134);
  CU_ASSERT_EQUAL(get_be64(p), IMG_SIZE);
  CU_ASSERT_EQUAL(get_be16(p + 8), W_TF_HAS_FLAGS | W_TF_READ_ONLY |
                                       W_TF_SEND_FLUSH | W_TF_CAN_MULTI_CONN |
                                       W_TF_SEND_CACHE);
  static const uint8_t zeroes[124];
  CU_ASSERT_EQUAL(memcmp(p + 10, zeroes, 124), 0);
  read_ok(0, 4096, 512);
}

static void
test_export_name_no_zeroes(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_opt(W_OPT_EXPORT_NAME, "img", 3);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  CU_ASSERT_EQUAL_FATAL(t_out.len - t_out_pos, 10);
  const uint8_t *p = sv_take(10);
  CU_ASSERT_EQUAL(get_be64(p), IMG_SIZE);
  CU_ASSERT_EQUAL(get_be16(p + 8), 0x0507);
  read_ok(0, 0, 512);
}

static void
test_info_then_go(void)
{
  static const uint16_t reqs[] = { W_INFO_NAME, W_INFO_DESCRIPTION,
                                   0x7777 /* unknown: ignored */ };
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_info_go(W_OPT_INFO, "img", 3, 3, reqs);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();

  struct info info;
  sv_info_until_ack(W_OPT_INFO, &info);
  CU_ASSERT_EQUAL(info.n_export, 1);
  CU_ASSERT_EQUAL(info.size, IMG_SIZE);
  CU_ASSERT_EQUAL(info.n_name, 1);
  CU_ASSERT_EQUAL(info.name_len, 3);
  CU_ASSERT(info.name && memcmp(info.name, "img", 3) == 0);
  CU_ASSERT_EQUAL(info.n_desc, 1);
  CU_ASSERT_EQUAL(info.desc_len, 10);
  CU_ASSERT(info.desc && memcmp(info.desc, "test image", 10) == 0);
  CU_ASSERT_EQUAL(info.n_other, 0);

  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT_EQUAL(info.n_export, 1);
  CU_ASSERT_EQUAL(info.n_name, 0); /* not asked for */
  CU_ASSERT_EQUAL(info.n_desc, 0);
  sv_end();
  CU_ASSERT_PTR_NOT_NULL(nbdsrv_conn_export(t_conn));
  read_ok(0, 123, 4567);
}

/* NBD_OPT_INFO alone does not pick the export. */
static void
test_info_then_abort(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_INFO, "img", 3, 0, NULL);
  cl_opt(W_OPT_ABORT, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  struct info info;
  sv_info_until_ack(W_OPT_INFO, &info);
  CU_ASSERT_EQUAL(info.n_export, 1);
  sv_expect(W_OPT_ABORT, W_REP_ACK);
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

static void
test_block_size_info(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  static const uint16_t reqs[] = { W_INFO_BLOCK_SIZE };
  cl_info_go(W_OPT_GO, "img", 3, 1, reqs);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT_EQUAL(info.n_block, 1);
  CU_ASSERT_EQUAL(info.bmin, 1);
  CU_ASSERT_EQUAL(info.bpref, IMG_PREF);
  CU_ASSERT_EQUAL(info.bmax, NBDSRV_REQUEST_MAX);
  CU_ASSERT_EQUAL(info.bmax, 32u * 1024 * 1024);
}

/* An export with an unusable preferred size (0, not a power of two,
 * above the maximum) still advertises sizes the NBD spec allows: the
 * preferred one a power of two, at least 512, at least the minimum and
 * at most the maximum. */
static void
block_size_sane(uint32_t export_pref)
{
  add_export("odd", 4096, export_pref, NULL, &t_other);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, "odd", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT_EQUAL(info.n_block, 1);
  CU_ASSERT_EQUAL(info.bmin, 1);
  CU_ASSERT(info.bpref >= 512);
  CU_ASSERT_EQUAL(info.bpref & (info.bpref - 1), 0);
  CU_ASSERT(info.bpref <= info.bmax);
  CU_ASSERT_EQUAL(info.bmax, NBDSRV_REQUEST_MAX);
}

static void
test_block_size_pref_zero(void)
{
  block_size_sane(0);
}

static void
test_block_size_pref_odd(void)
{
  block_size_sane(3000);
}

static void
test_block_size_pref_huge(void)
{
  block_size_sane(UINT32_C(1) << 31);
}

/* Sent even when the client did not ask for it. */
static void
test_block_size_unrequested(void)
{
  go_img(); /* asserts the ACK */
  t_out_pos = 0;
  sv_greeting();
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT_EQUAL(info.n_block, 1);
  CU_ASSERT_EQUAL(info.bmin, 1);
  CU_ASSERT_EQUAL(info.bpref, IMG_PREF);
  CU_ASSERT_EQUAL(info.bmax, NBDSRV_REQUEST_MAX);
}

static void
test_transmission_flags(void)
{
  go_img();
  t_out_pos = 0;
  sv_greeting();
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT(info.flags & W_TF_HAS_FLAGS);
  CU_ASSERT(info.flags & W_TF_READ_ONLY);
  CU_ASSERT(info.flags & W_TF_CAN_MULTI_CONN);
  CU_ASSERT(info.flags & W_TF_SEND_CACHE);
  CU_ASSERT(info.flags & W_TF_SEND_FLUSH);
  /* Nothing else: no FUA, TRIM, WRITE_ZEROES, DF, RESIZE, ROTATIONAL. */
  CU_ASSERT_EQUAL(info.flags, 0x0507);
}

static void
test_list(void)
{
  add_export("zeta", 4096, 4096, NULL, &t_other);
  add_export("alpha", 512, 4096, "first", &t_spare);

  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_LIST, NULL, 0);
  cl_info_go(W_OPT_GO, "zeta", 4, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();

  static const struct {
    const char *name, *desc;
  } want[] = { { "alpha", "first" }, { "img", "test image" }, { "zeta", "" } };
  for (size_t i = 0; i < 3; i++) {
    struct opt_reply r = sv_expect(W_OPT_LIST, W_REP_SERVER);
    size_t nl = strlen(want[i].name), dl = strlen(want[i].desc);
    CU_ASSERT_EQUAL_FATAL(r.len, 4 + nl + dl);
    CU_ASSERT_EQUAL(get_be32(r.data), nl);
    CU_ASSERT_EQUAL(memcmp(r.data + 4, want[i].name, nl), 0);
    CU_ASSERT_EQUAL(memcmp(r.data + 4 + nl, want[i].desc, dl), 0);
  }
  struct opt_reply r = sv_expect(W_OPT_LIST, W_REP_ACK);
  CU_ASSERT_EQUAL(r.len, 0);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT_EQUAL(info.size, 4096);
  sv_end();
}

/* An export whose name no client can send is not listed. */
static void
test_list_skips_overlong_name(void)
{
  char *name = long_name(NBDSRV_NAME_MAX + 1);
  add_export(name, 4096, 4096, NULL, &t_other);
  free(name);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_LIST, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  struct opt_reply r = sv_expect(W_OPT_LIST, W_REP_SERVER);
  CU_ASSERT_EQUAL(r.len, 4 + 3 + 10);
  sv_expect(W_OPT_LIST, W_REP_ACK);
  sv_end();
}

static void
test_list_with_data(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_LIST, "xyz", 3);
  cl_opt(W_OPT_LIST, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect_error(W_OPT_LIST, W_REP_ERR_INVALID);
  sv_expect(W_OPT_LIST, W_REP_SERVER); /* and it goes on */
  sv_expect(W_OPT_LIST, W_REP_ACK);
  sv_end();
}

static void
test_abort(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_ABORT, NULL, 0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL); /* never read */
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  struct opt_reply r = sv_expect(W_OPT_ABORT, W_REP_ACK);
  CU_ASSERT_EQUAL(r.len, 0);
  sv_end();
  CU_ASSERT_EQUAL(t_in_pos, 4 + 16);
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

static void
test_structured_reply_refused(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_STRUCTURED_REPLY, NULL, 0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  sv_expect_error(W_OPT_STRUCTURED_REPLY, W_REP_ERR_UNSUP);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
  /* Replies stay simple. */
  read_ok(0, 77, 7);
}

static void
test_unknown_option(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(42, "some data", 9);
  cl_opt(0, NULL, 0);
  cl_opt(0xffffffffu, NULL, 0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  sv_expect_error(42, W_REP_ERR_UNSUP);
  sv_expect_error(0, W_REP_ERR_UNSUP);
  sv_expect_error(0xffffffffu, W_REP_ERR_UNSUP);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
}

static void
test_starttls_unsupported(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_STARTTLS, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect_error(W_OPT_STARTTLS, W_REP_ERR_UNSUP);
  sv_end();
}

/* ---- NBD_OPT_STARTTLS and the TLS modes (the state machine; the TLS
 * itself is tested end to end in tests/integration/test-nbd-tls.sh) -- */

static int t_starttls_calls, t_starttls_result;
static size_t t_starttls_at; /* client bytes read when it was called */

static int
mem_starttls(void *opaque)
{
  (void)opaque;
  t_starttls_calls++;
  t_starttls_at = t_in_pos;
  return t_starttls_result;
}

/* Replaces t_conn by one whose io offers TLS, in mode. */
static void
tls_conn(enum tlsdir_mode mode)
{
  nbdsrv_conn_free(t_conn);
  struct nbdsrv_io io = mem_io;
  io.starttls = mem_starttls;
  t_conn = nbdsrv_conn_new(t_reg, &io, "test");
  CU_ASSERT_PTR_NOT_NULL_FATAL(t_conn);
  nbdsrv_conn_set_tls(t_conn, mode);
  t_starttls_calls = t_starttls_result = 0;
  t_starttls_at = 0;
}

static void
test_tls_require_nothing_before_starttls(void)
{
  tls_conn(TLSDIR_REQUIRE);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_LIST, NULL, 0);
  cl_info_go(W_OPT_INFO, "img", 3, 0, NULL);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  cl_opt(42, NULL, 0);
  cl_opt(W_OPT_STARTTLS, NULL, 0);
  size_t upgrade_at = t_in.len;
  cl_opt(W_OPT_LIST, NULL, 0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  /* No list, no size: only the refusal. */
  sv_expect_error(W_OPT_LIST, W_REP_ERR_TLS_REQD);
  sv_expect_error(W_OPT_INFO, W_REP_ERR_TLS_REQD);
  sv_expect_error(W_OPT_GO, W_REP_ERR_TLS_REQD);
  sv_expect_error(42, W_REP_ERR_TLS_REQD);
  struct opt_reply r = sv_expect(W_OPT_STARTTLS, W_REP_ACK);
  CU_ASSERT_EQUAL(r.len, 0);
  CU_ASSERT_EQUAL(t_starttls_calls, 1);
  /* The upgrade starts right after the option: nothing read ahead. */
  CU_ASSERT_EQUAL(t_starttls_at, upgrade_at);
  CU_ASSERT(nbdsrv_conn_tls_active(t_conn));
  r = sv_expect(W_OPT_LIST, W_REP_SERVER);
  CU_ASSERT(r.len >= 4 + 3);
  CU_ASSERT_EQUAL(memcmp(r.data + 4, "img", 3), 0);
  sv_expect(W_OPT_LIST, W_REP_ACK);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT_EQUAL(info.size, IMG_SIZE);
  sv_end();
}

static void
test_tls_require_export_name_disconnects(void)
{
  tls_conn(TLSDIR_REQUIRE);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_EXPORT_NAME, "img", 3);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

static void
test_tls_require_abort(void)
{
  tls_conn(TLSDIR_REQUIRE);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_ABORT, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect(W_OPT_ABORT, W_REP_ACK);
  sv_end();
}

static void
test_tls_on_plaintext_served(void)
{
  tls_conn(TLSDIR_ON);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
  CU_ASSERT_EQUAL(t_starttls_calls, 0);
  CU_ASSERT(!nbdsrv_conn_tls_active(t_conn));
}

static void
test_starttls_bad_uses(void)
{
  tls_conn(TLSDIR_ON);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_STARTTLS, "x", 1);    /* takes no data */
  cl_opt(W_OPT_STARTTLS, NULL, 0);
  cl_opt(W_OPT_STARTTLS, NULL, 0);   /* already negotiated */
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  sv_expect_error(W_OPT_STARTTLS, W_REP_ERR_INVALID);
  sv_expect(W_OPT_STARTTLS, W_REP_ACK);
  sv_expect_error(W_OPT_STARTTLS, W_REP_ERR_INVALID);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
  CU_ASSERT_EQUAL(t_starttls_calls, 1);
}

static void
test_starttls_handshake_fails(void)
{
  tls_conn(TLSDIR_REQUIRE);
  t_starttls_result = -1;
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_STARTTLS, NULL, 0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_expect(W_OPT_STARTTLS, W_REP_ACK);
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

/* Without a starttls in its io (the Unix socket) a mode is ignored. */
static void
test_tls_mode_without_starttls_io(void)
{
  nbdsrv_conn_set_tls(t_conn, TLSDIR_REQUIRE);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_STARTTLS, NULL, 0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  sv_expect_error(W_OPT_STARTTLS, W_REP_ERR_UNSUP);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
}

static void
test_unknown_client_flags(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE | 4);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_EQUAL(t_in_pos, 4);
}

static void
test_client_flags_high_bit(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE | 0x80000000u);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

static void
test_no_fixed_newstyle(void)
{
  cl_flags(0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

static void
test_no_zeroes_without_fixed(void)
{
  cl_flags(W_FLAG_NO_ZEROES);
  cl_opt(W_OPT_EXPORT_NAME, "img", 3);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

/* ---- short reads in the handshake ---- */

static void
test_eof_before_client_flags(void)
{
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_end();
}

static void
test_short_client_flags(void)
{
  bytes_put(&t_in, "\0\0", 2);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

static void
test_eof_before_option(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_end();
}

/* End of stream after a complete option: clean end as well. */
static void
test_eof_after_option(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_LIST, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect(W_OPT_LIST, W_REP_SERVER);
  sv_expect(W_OPT_LIST, W_REP_ACK);
  sv_end();
}

static void
test_short_option_header(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  bytes_be64(&t_in, W_IHAVEOPT);
  bytes_be32(&t_in, W_OPT_GO); /* 12 of 16 bytes */
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

static void
test_short_option_data(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_IHAVEOPT, W_OPT_GO, 9, "\0\0\0\3im", 6);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

/* The stream ends between the option header and its data: that is part
 * way through an option, so an error, not a clean end. */
static void
test_eof_before_option_data(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_IHAVEOPT, W_OPT_EXPORT_NAME, 3, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

/* ---- malformed options ---- */

static void
test_bad_option_magic(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_IHAVEOPT ^ 1, W_OPT_LIST, 0, NULL, 0);
  cl_opt(W_OPT_LIST, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

/* The client answers the greeting with "NBDMAGIC" (an old-style client
 * or a loop-back). */
static void
test_nbdmagic_as_option(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_NBDMAGIC, W_OPT_LIST, 0, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

/* Longer than NBDSRV_OPTION_MAX but within NBDSRV_OPTION_DRAIN_MAX: the
 * data is read and refused with NBD_REP_ERR_TOO_BIG; the handshake goes
 * on. */
static void
test_option_too_long(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  bytes_be64(&t_in, W_IHAVEOPT);
  bytes_be32(&t_in, 42);
  bytes_be32(&t_in, NBDSRV_OPTION_MAX + 1);
  /* data that looks like an option, to catch a parser out of step */
  while (t_in.len < 4 + 16 + NBDSRV_OPTION_MAX + 1)
    cl_opt(W_OPT_ABORT, NULL, 0);
  t_in.len = 4 + 16 + NBDSRV_OPTION_MAX + 1;
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  sv_expect_error(42, W_REP_ERR_TOO_BIG);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
}

/* The same for NBD_OPT_GO: its name cannot be looked at, so TOO_BIG. */
static void
test_go_option_too_long(void)
{
  char *name = long_name(NBDSRV_OPTION_MAX);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, name, NBDSRV_OPTION_MAX, 0, NULL);
  cl_opt(W_OPT_ABORT, NULL, 0);
  free(name);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect_error(W_OPT_GO, W_REP_ERR_TOO_BIG);
  sv_expect(W_OPT_ABORT, W_REP_ACK);
  sv_end();
}

/* NBD_OPT_EXPORT_NAME has no error reply: too long drops the client
 * without reading the data. */
static void
test_export_name_option_too_long(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_IHAVEOPT, W_OPT_EXPORT_NAME, NBDSRV_OPTION_MAX + 1, NULL, 0);
  bytes_fill(&t_in, 'a', NBDSRV_OPTION_MAX + 1);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_EQUAL(t_in_pos, 4 + 16);
}

/* Exactly NBDSRV_OPTION_DRAIN_MAX is still drained. */
static void
test_option_drain_max(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_IHAVEOPT, W_OPT_LIST, NBDSRV_OPTION_DRAIN_MAX, NULL, 0);
  bytes_fill(&t_in, 0, NBDSRV_OPTION_DRAIN_MAX);
  cl_opt(W_OPT_ABORT, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect_error(W_OPT_LIST, W_REP_ERR_TOO_BIG);
  sv_expect(W_OPT_ABORT, W_REP_ACK);
  sv_end();
  CU_ASSERT_EQUAL(t_in_pos, t_in.len);
}

/* Beyond NBDSRV_OPTION_DRAIN_MAX: dropped at once, the data not read. */
static void
test_option_over_drain_max(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_IHAVEOPT, 42, NBDSRV_OPTION_DRAIN_MAX + 1, NULL, 0);
  bytes_fill(&t_in, 0, 4096);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_EQUAL(t_in_pos, 4 + 16);
}

static void
test_option_length_huge(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_IHAVEOPT, W_OPT_GO, 0xffffffffu, NULL, 0);
  bytes_fill(&t_in, 0, 4096);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_EQUAL(t_in_pos, 4 + 16);
}

/* The stream ends while a too-long option is being drained. */
static void
test_short_drained_option(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt_raw(W_IHAVEOPT, 42, NBDSRV_OPTION_MAX * 3, NULL, 0);
  bytes_fill(&t_in, 0, NBDSRV_OPTION_MAX * 2 + 5);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

/* Drained options count towards NBDSRV_OPTIONS_MAX too. */
static void
test_too_many_drained_options(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  for (int i = 0; i < NBDSRV_OPTIONS_MAX; i++) {
    cl_opt_raw(W_IHAVEOPT, 42, NBDSRV_OPTION_MAX + 1, NULL, 0);
    bytes_fill(&t_in, 0, NBDSRV_OPTION_MAX + 1);
  }
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  for (int i = 0; i < NBDSRV_OPTIONS_MAX; i++)
    sv_expect(42, W_REP_ERR_TOO_BIG);
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

/* Exactly NBDSRV_OPTION_MAX bytes is still read and answered. */
static void
test_option_max_length(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  bytes_be64(&t_in, W_IHAVEOPT);
  bytes_be32(&t_in, 42);
  bytes_be32(&t_in, NBDSRV_OPTION_MAX);
  bytes_fill(&t_in, 0x5a, NBDSRV_OPTION_MAX);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  sv_expect_error(42, W_REP_ERR_UNSUP);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
}

/* NBDSRV_OPTIONS_MAX options are answered; the next one is not read. */
static void
test_too_many_options(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  for (int i = 0; i < NBDSRV_OPTIONS_MAX; i++)
    cl_opt(42, NULL, 0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  for (int i = 0; i < NBDSRV_OPTIONS_MAX; i++)
    sv_expect(42, W_REP_ERR_UNSUP);
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

static void
test_options_max_then_go(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  for (int i = 0; i < NBDSRV_OPTIONS_MAX - 1; i++)
    cl_opt(42, NULL, 0);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  for (int i = 0; i < NBDSRV_OPTIONS_MAX - 1; i++)
    sv_expect(42, W_REP_ERR_UNSUP);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
}

/* Runs one malformed GO/INFO payload: NBD_REP_ERR_INVALID, then an
 * NBD_OPT_ABORT is still read and acknowledged. */
static void
bad_go_payload(uint32_t opt, const void *data, uint32_t len)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(opt, data, len);
  cl_opt(W_OPT_ABORT, NULL, 0);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect_error(opt, W_REP_ERR_INVALID);
  sv_expect(W_OPT_ABORT, W_REP_ACK);
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

static void
test_go_empty(void)
{
  bad_go_payload(W_OPT_GO, NULL, 0);
}

static void
test_go_len_5(void)
{
  bad_go_payload(W_OPT_GO, "\0\0\0\0\0", 5);
}

static void
test_info_len_5(void)
{
  bad_go_payload(W_OPT_INFO, "\0\0\0\0\0", 5);
}

/* namelen 4 but only 3 name bytes before the count. */
static void
test_go_namelen_too_big(void)
{
  bad_go_payload(W_OPT_GO, "\0\0\0\4img\0\0", 9);
}

static void
test_go_namelen_huge(void)
{
  bad_go_payload(W_OPT_GO, "\xff\xff\xff\xff\0\0", 6);
}

/* namelen 0xfffffffa + 6 wraps to 0 in 32 bits. */
static void
test_go_namelen_wraps(void)
{
  bad_go_payload(W_OPT_GO, "\xff\xff\xff\xfa\0\0", 6);
}

static void
test_go_count_too_big(void)
{
  bad_go_payload(W_OPT_GO, "\0\0\0\3img\0\2\0\1", 11);
}

static void
test_go_count_too_small(void)
{
  bad_go_payload(W_OPT_GO, "\0\0\0\3img\0\0\0\1", 11);
}

static void
test_go_count_huge(void)
{
  bad_go_payload(W_OPT_GO, "\0\0\0\3img\xff\xff", 9);
}

/* An odd trailing byte after the information requests. */
static void
test_info_trailing_byte(void)
{
  bad_go_payload(W_OPT_INFO, "\0\0\0\3img\0\1\0\1\0", 12);
}

static void
test_go_unknown_export(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, "nope", 4, 0, NULL);
  cl_info_go(W_OPT_GO, "im", 2, 0, NULL);     /* prefix */
  cl_info_go(W_OPT_GO, "img2", 4, 0, NULL);   /* longer */
  cl_info_go(W_OPT_GO, "IMG", 3, 0, NULL);    /* case */
  cl_info_go(W_OPT_GO, "img\0", 4, 0, NULL);  /* NUL inside */
  cl_info_go(W_OPT_GO, "", 0, 0, NULL);       /* default export */
  cl_info_go(W_OPT_INFO, "nope", 4, 0, NULL);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  for (int i = 0; i < 6; i++)
    sv_expect_error(W_OPT_GO, W_REP_ERR_UNKNOWN);
  sv_expect_error(W_OPT_INFO, W_REP_ERR_UNKNOWN);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
}

static void
test_export_name_unknown(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_EXPORT_NAME, "nope", 4);
  cl_opt(W_OPT_EXPORT_NAME, "img", 3); /* never read */
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

static void
test_export_name_prefix(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_EXPORT_NAME, "im", 2);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

/* A 4096-byte name is looked up (and not found). */
static void
test_go_name_4096_unknown(void)
{
  char *name = long_name(NBDSRV_NAME_MAX);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, name, NBDSRV_NAME_MAX, 0, NULL);
  cl_opt(W_OPT_ABORT, NULL, 0);
  free(name);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect_error(W_OPT_GO, W_REP_ERR_UNKNOWN);
  sv_expect(W_OPT_ABORT, W_REP_ACK);
  sv_end();
}

static void
test_go_name_4096_registered(void)
{
  char *name = long_name(NBDSRV_NAME_MAX);
  add_export(name, 4096, 4096, NULL, &t_other);
  static const uint16_t reqs[] = { W_INFO_NAME };
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, name, NBDSRV_NAME_MAX, 1, reqs);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  CU_ASSERT_EQUAL(info.size, 4096);
  CU_ASSERT_EQUAL(info.n_name, 1);
  CU_ASSERT_EQUAL(info.name_len, NBDSRV_NAME_MAX);
  CU_ASSERT(info.name && memcmp(info.name, name, NBDSRV_NAME_MAX) == 0);
  sv_end();
  struct export *exp = nbdsrv_conn_export(t_conn);
  CU_ASSERT(exp && strcmp(export_name(exp), name) == 0);
  free(name);

  cl_req(0, W_CMD_READ, 9, 4000, 96);
  CU_ASSERT_EQUAL(serve(), 1);
  const uint8_t *d = sv_reply(9, 0, 96);
  for (uint32_t i = 0; i < 96; i++)
    CU_ASSERT_EQUAL(d[i], pattern(4000 + i));
  CU_ASSERT_EQUAL(atomic_load(&t_other.preads), 1);
}

static void
test_export_name_4096_registered(void)
{
  char *name = long_name(NBDSRV_NAME_MAX);
  add_export(name, 4096, 4096, NULL, &t_other);
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_opt(W_OPT_EXPORT_NAME, name, NBDSRV_NAME_MAX);
  free(name);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  const uint8_t *p = sv_take(10);
  CU_ASSERT_EQUAL(get_be64(p), 4096);
  sv_end();
}

static void
test_go_name_5000(void)
{
  char *name = long_name(5000);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, name, 5000, 0, NULL);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  free(name);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 1);
  sv_greeting();
  sv_expect_error(W_OPT_GO, W_REP_ERR_TOO_BIG);
  struct info info;
  sv_info_until_ack(W_OPT_GO, &info);
  sv_end();
}

static void
test_go_name_4097(void)
{
  char *name = long_name(NBDSRV_NAME_MAX + 1);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_INFO, name, NBDSRV_NAME_MAX + 1, 0, NULL);
  free(name);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), 0);
  sv_greeting();
  sv_expect_error(W_OPT_INFO, W_REP_ERR_TOO_BIG);
  sv_end();
}

static void
test_export_name_5000(void)
{
  char *name = long_name(5000);
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_opt(W_OPT_EXPORT_NAME, name, 5000);
  free(name);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
}

/* Request bytes where the client flags belong. */
static void
test_request_instead_of_flags(void)
{
  cl_req(0, W_CMD_READ, 1, 0, 512);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

/* Request bytes where an option belongs. */
static void
test_request_instead_of_option(void)
{
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_req(0, W_CMD_READ, 1, 0, 512);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  sv_greeting();
  sv_end();
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

/* A caller that skips the handshake: no export, so nothing is served. */
static void
test_serve_before_handshake(void)
{
  cl_req(0, W_CMD_READ, 5, 0, 512);
  CU_ASSERT_EQUAL(serve(), 1);
  sv_reply(5, W_EINVAL, 0);
  sv_end();
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

/* An option sent in the transmission phase. */
static void
test_option_in_transmission(void)
{
  go_img();
  cl_opt(W_OPT_LIST, NULL, 0);
  CU_ASSERT_EQUAL(serve(), -1);
  sv_end();
  CU_ASSERT_EQUAL(serve(), 0);
}

static void
test_greeting_write_error(void)
{
  t_writes_left = 0;
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  CU_ASSERT_EQUAL(t_out.len, 0);
  CU_ASSERT_EQUAL(t_in_pos, 0);
}

/* The GO reply cannot be sent: no export is kept (and nothing leaks). */
static void
test_go_reply_write_error(void)
{
  t_writes_left = 2; /* the greeting and the first INFO */
  cl_flags(W_FLAG_FIXED_NEWSTYLE);
  cl_info_go(W_OPT_GO, "img", 3, 0, NULL);
  CU_ASSERT_EQUAL(nbdsrv_handshake(t_conn), -1);
  CU_ASSERT_PTR_NULL(nbdsrv_conn_export(t_conn));
}

/* The connection keeps its export alive after removal from the registry. */
static void
test_export_removed_while_connected(void)
{
  go_img();
  CU_ASSERT_EQUAL(exports_remove(t_reg, "img"), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_img.closes), 0);
  read_ok(0, 100, 100);
  nbdsrv_conn_free(t_conn);
  t_conn = NULL;
  CU_ASSERT_EQUAL(atomic_load(&t_img.closes), 1);
}

/* ==== transmission ========================================================= */

static void
test_short_request(void)
{
  go_img();
  bytes_put(&t_in, "\x25\x60\x95\x13\0\0\0\0\0\0", 10);
  CU_ASSERT_EQUAL(serve(), -1);
  sv_end();
  CU_ASSERT_EQUAL(serve(), 0);
}

static void
test_eof_before_request(void)
{
  go_img();
  CU_ASSERT_EQUAL(serve(), 0);
  CU_ASSERT_EQUAL(serve(), 0);
  sv_end();
}

static void
test_bad_request_magic(void)
{
  go_img();
  bytes_be32(&t_in, W_REPLY_MAGIC); /* a reply magic, not a request's */
  bytes_be16(&t_in, 0);
  bytes_be16(&t_in, W_CMD_READ);
  bytes_be64(&t_in, 1);
  bytes_be64(&t_in, 0);
  bytes_be32(&t_in, 512);
  cl_req(0, W_CMD_READ, 2, 0, 512);
  CU_ASSERT_EQUAL(serve(), -1);
  sv_end();
  /* Once dropped, every later call returns 0 without reading. */
  size_t pos = t_in_pos;
  CU_ASSERT_EQUAL(serve(), 0);
  CU_ASSERT_EQUAL(t_in_pos, pos);
  sv_end();
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

static void
test_read_at_end(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, IMG_SIZE, 1), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

static void
test_read_past_end(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, IMG_SIZE + 4096, 512), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

static void
test_read_straddling_end(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, IMG_SIZE - 10, 20), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, IMG_SIZE - 122, 123), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

static void
test_read_up_to_end(void)
{
  go_img();
  read_ok(0, IMG_SIZE - 123, 123);
  read_ok(0, 0, IMG_SIZE);
}

static void
test_read_zero_length(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, 0, 0), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, IMG_SIZE, 0), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

/* Over the advertised maximum on an export large enough to hold it. */
static void
test_read_too_long(void)
{
  add_export("big", BIG_SIZE, 4096, NULL, &t_big);
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_opt(W_OPT_EXPORT_NAME, "big", 3);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  t_out_pos = t_out.len;
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, 0, NBDSRV_REQUEST_MAX + 1),
                  W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, 0, 0xffffffffu), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_big.preads), 0);
}

/* The steps server.c runs: decode, the cost of a request, execute; a
 * buffer over NBDSRV_BUF_KEEP is released by nbdsrv_buf_trim, a small one
 * kept. */
static void
test_steps_and_buffers(void)
{
  add_export("big", BIG_SIZE, 4096, NULL, &t_big);
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_opt(W_OPT_EXPORT_NAME, "big", 3);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);

  uint8_t wire[NBDSRV_REQUEST_LEN] = { 0x25, 0x60, 0x95, 0x13 };
  struct nbdsrv_request req;
  uint32_t payload = 99;
  /* READ, cookie 5, offset 0, NBDSRV_BUF_KEEP + 1 bytes */
  wire[7] = W_CMD_READ;
  wire[15] = 5;
  uint32_t n = htobe32(NBDSRV_BUF_KEEP + 1);
  memcpy(wire + 24, &n, 4);
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), 1);
  CU_ASSERT_EQUAL(payload, 0);
  CU_ASSERT_EQUAL(req.cookie, 5);
  CU_ASSERT_EQUAL(nbdsrv_reply_data_len(t_conn, &req), NBDSRV_BUF_KEEP + 1);

  struct nbdsrv_buf buf = { 0 };
  struct nbdsrv_reply rep;
  nbdsrv_execute(t_conn, &req, &buf, &rep);
  CU_ASSERT_EQUAL(rep.len, NBDSRV_BUF_KEEP + 1);
  CU_ASSERT_PTR_EQUAL(rep.data, buf.p);
  CU_ASSERT_EQUAL(get_be32(rep.hdr), W_REPLY_MAGIC);
  CU_ASSERT_EQUAL(get_be32(rep.hdr + 4), 0);
  CU_ASSERT_EQUAL(get_be64(rep.hdr + 8), 5);
  CU_ASSERT_TRUE(buf.mapped);
  nbdsrv_buf_trim(&buf);
  CU_ASSERT_PTR_NULL(buf.p);
  CU_ASSERT_EQUAL(buf.cap, 0);

  /* A small read keeps its buffer. */
  n = htobe32(4096);
  memcpy(wire + 24, &n, 4);
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), 1);
  nbdsrv_execute(t_conn, &req, &buf, &rep);
  CU_ASSERT_FALSE(buf.mapped);
  nbdsrv_buf_trim(&buf);
  CU_ASSERT_PTR_NOT_NULL(buf.p);
  nbdsrv_buf_free(&buf);

  /* Whether a request may block is the backend's word for valid reads
   * only (the server hands the connection on before such a read). */
  t_big.slow_from = 8192;
  CU_ASSERT_FALSE(nbdsrv_may_block(t_conn, &req)); /* 4096 at 0 */
  uint64_t o64 = htobe64(8192 - 100);
  memcpy(wire + 16, &o64, 8);
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), 1);
  CU_ASSERT_TRUE(nbdsrv_may_block(t_conn, &req));
  wire[7] = W_CMD_FLUSH;
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), 1);
  CU_ASSERT_FALSE(nbdsrv_may_block(t_conn, &req));
  wire[7] = W_CMD_READ;
  o64 = htobe64(BIG_SIZE);
  memcpy(wire + 16, &o64, 8);
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), 1);
  CU_ASSERT_FALSE(nbdsrv_may_block(t_conn, &req)); /* outside: EINVAL */
  CU_ASSERT_EQUAL(atomic_load(&t_big.may_blocks), 2);
  o64 = 0;
  memcpy(wire + 16, &o64, 8);

  /* An invalid read costs nothing; a write's payload is announced; a bad
   * magic and an oversized write payload are protocol errors; DISC is 0. */
  n = htobe32(0);
  memcpy(wire + 24, &n, 4);
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), 1);
  CU_ASSERT_EQUAL(nbdsrv_reply_data_len(t_conn, &req), 0);
  wire[7] = W_CMD_WRITE;
  n = htobe32(1000);
  memcpy(wire + 24, &n, 4);
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), 1);
  CU_ASSERT_EQUAL(payload, 1000);
  CU_ASSERT_EQUAL(nbdsrv_reply_data_len(t_conn, &req), 0);
  n = htobe32(NBDSRV_REQUEST_MAX + 1);
  memcpy(wire + 24, &n, 4);
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), -1);
  wire[7] = W_CMD_DISC;
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), 0);
  wire[0] = 0;
  CU_ASSERT_EQUAL(nbdsrv_decode_request(t_conn, wire, &req, &payload), -1);
}

static void
test_read_max_length(void)
{
  add_export("big", BIG_SIZE, 4096, NULL, &t_big);
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_opt(W_OPT_EXPORT_NAME, "big", 3);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  t_out_pos = t_out.len;
  uint64_t off = BIG_SIZE - NBDSRV_REQUEST_MAX;
  cl_req(0, W_CMD_READ, 77, off, NBDSRV_REQUEST_MAX);
  CU_ASSERT_EQUAL(serve(), 1);
  const uint8_t *d = sv_reply(77, 0, NBDSRV_REQUEST_MAX);
  size_t bad = 0;
  for (uint32_t i = 0; i < NBDSRV_REQUEST_MAX; i++)
    bad += d[i] != pattern(off + i);
  CU_ASSERT_EQUAL(bad, 0);
  sv_end();
}

static void
test_read_offset_overflow(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, UINT64_MAX, 1), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, UINT64_MAX - 10, 100), W_EINVAL);
  /* offset + count wraps to a small number */
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, UINT64_MAX - 511, 1024), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_READ, UINT64_C(1) << 63, 512), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

/* The WRITE payload (made of valid-looking requests) is consumed and the
 * next request is parsed from the right place. */
static void
test_write_eperm(void)
{
  go_img();
  cl_req(0, W_CMD_WRITE, 1, 0, 28 * 20);
  for (int i = 0; i < 20; i++)
    cl_req(0, W_CMD_READ, 500 + (uint64_t)i, 0, 1); /* payload */
  cl_req(0, W_CMD_READ, 2, 8192, 1000);
  CU_ASSERT_EQUAL(serve(), 1);
  CU_ASSERT_EQUAL(serve(), 1);
  CU_ASSERT_EQUAL(serve(), 0);
  sv_reply(1, W_EPERM, 0);
  sv_read_reply(2, 8192, 1000);
  sv_end();
}

static void
test_write_fua_eperm(void)
{
  go_img();
  cl_req(W_CMD_FLAG_FUA, W_CMD_WRITE, 1, 512, 3);
  bytes_put(&t_in, "abc", 3);
  CU_ASSERT_EQUAL(serve(), 1);
  sv_reply(1, W_EPERM, 0);
  read_ok(0, 0, 3);
}

/* A WRITE with invalid flags still has its payload consumed. */
static void
test_write_bad_flags_payload_consumed(void)
{
  go_img();
  cl_req(0x8000, W_CMD_WRITE, 1, 0, 28);
  cl_req(0, W_CMD_DISC, 99, 0, 0); /* payload, not a DISC */
  CU_ASSERT_EQUAL(serve(), 1);
  const uint8_t *h = sv_take(16);
  CU_ASSERT_EQUAL(get_be32(h), W_REPLY_MAGIC);
  CU_ASSERT(get_be32(h + 4) == W_EINVAL || get_be32(h + 4) == W_EPERM);
  CU_ASSERT_EQUAL(get_be64(h + 8), 1);
  sv_end();
  read_ok(0, 1, 1);
}

static void
test_write_max_payload(void)
{
  go_img();
  cl_req(0, W_CMD_WRITE, 1, 0, NBDSRV_REQUEST_MAX);
  bytes_fill(&t_in, 0x25, NBDSRV_REQUEST_MAX);
  cl_req(0, W_CMD_READ, 2, 0, 16);
  CU_ASSERT_EQUAL(serve(), 1);
  CU_ASSERT_EQUAL(serve(), 1);
  sv_reply(1, W_EPERM, 0);
  sv_read_reply(2, 0, 16);
  sv_end();
}

static void
test_write_too_long(void)
{
  go_img();
  cl_req(0, W_CMD_WRITE, 1, 0, NBDSRV_REQUEST_MAX + 1);
  bytes_fill(&t_in, 0, 4096);
  CU_ASSERT_EQUAL(serve(), -1);
  sv_end();
  CU_ASSERT_EQUAL(serve(), 0);
  sv_end();
}

static void
test_write_short_payload(void)
{
  go_img();
  cl_req(0, W_CMD_WRITE, 1, 0, 4096);
  bytes_fill(&t_in, 0, 1000);
  CU_ASSERT_EQUAL(serve(), -1);
  sv_end();
  CU_ASSERT_EQUAL(serve(), 0);
}

static void
test_write_eof_before_payload(void)
{
  go_img();
  cl_req(0, W_CMD_WRITE, 1, 0, 4096);
  CU_ASSERT_EQUAL(serve(), -1);
  sv_end();
}

static void
test_write_zero_length(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_WRITE, 0, 0), W_EPERM);
  read_ok(0, 0, 1);
}

static void
test_trim_eperm(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_TRIM, 0, 4096), W_EPERM);
  read_ok(0, 0, 64); /* no payload was read */
}

static void
test_write_zeroes_eperm(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_WRITE_ZEROES, 4096, 4096), W_EPERM);
  CU_ASSERT_EQUAL(req_error(W_CMD_FLAG_NO_HOLE, W_CMD_WRITE_ZEROES, 0, 512),
                  W_EINVAL); /* NO_HOLE was never advertised */
  read_ok(0, 0, 64);
}

static void
test_flush(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_FLUSH, 0, 0), 0);
  CU_ASSERT_EQUAL(req_error(W_CMD_FLAG_FUA, W_CMD_FLUSH, 0, 0), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

static void
test_flush_with_range(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_FLUSH, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_FLUSH, 512, 0), W_EINVAL);
}

static void
test_cache(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, 4096, 65536), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_img.caches), 1);
  CU_ASSERT_EQUAL(t_img.cache_off, 4096);
  CU_ASSERT_EQUAL(t_img.cache_len, 65536);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, IMG_SIZE - 123, 123), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_img.caches), 2);
  CU_ASSERT_EQUAL(t_img.cache_off, IMG_SIZE - 123);
  CU_ASSERT_EQUAL(t_img.cache_len, 123);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_img.bad_ranges), 0);
}

/* CACHE is not limited by the read maximum: the whole export is fine. */
static void
test_cache_whole_big_export(void)
{
  add_export("big", BIG_SIZE, 4096, NULL, &t_big);
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_opt(W_OPT_EXPORT_NAME, "big", 3);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  t_out_pos = t_out.len;
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, 0, NBDSRV_REQUEST_MAX + 1), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_big.caches), 1);
  CU_ASSERT_EQUAL(t_big.cache_len, NBDSRV_REQUEST_MAX + 1);
}

static void
test_cache_past_end(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, IMG_SIZE, 1), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, IMG_SIZE - 1, 2), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, UINT64_MAX - 1, 4), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, 0, 0), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.caches), 0);
}

static void
test_cache_error(void)
{
  go_img();
  t_img.cache_err = ENOMEM;
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, 0, 4096), W_ENOMEM);
  t_img.cache_err = EIO;
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, 0, 4096), W_EIO);
  t_img.cache_err = 0;
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, 0, 4096), 0);
}

/* An export without a cache callback answers CACHE with success. */
static void
test_cache_without_callback(void)
{
  static const struct export_ops ops = { .pread = mem_pread };
  struct export *exp = export_new("nocache", 4096, 4096, NULL, &ops, &t_other);
  CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
  CU_ASSERT_EQUAL_FATAL(exports_add(t_reg, exp), 0);
  cl_flags(W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  cl_opt(W_OPT_EXPORT_NAME, "nocache", 7);
  CU_ASSERT_EQUAL_FATAL(nbdsrv_handshake(t_conn), 1);
  t_out_pos = t_out.len;
  CU_ASSERT_EQUAL(req_error(0, W_CMD_CACHE, 0, 4096), 0);
}

static void
test_block_status_einval(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_BLOCK_STATUS, 0, 4096), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(W_CMD_FLAG_REQ_ONE, W_CMD_BLOCK_STATUS, 0, 4096),
                  W_EINVAL);
  read_ok(0, 0, 1); /* still in step */
}

static void
test_unknown_commands_einval(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0, W_CMD_RESIZE, 0, 0), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, 9, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, 0x100, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0, 0xffff, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
  read_ok(0, 0, 1);
}

static void
test_unknown_flags_einval(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(0x8000, W_CMD_READ, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0x0020, W_CMD_READ, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(W_CMD_FLAG_NO_HOLE, W_CMD_READ, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(W_CMD_FLAG_REQ_ONE, W_CMD_READ, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(W_CMD_FLAG_FAST_ZERO, W_CMD_READ, 0, 512),
                  W_EINVAL);
  CU_ASSERT_EQUAL(req_error(0x8000, W_CMD_FLUSH, 0, 0), W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

/* DF needs structured replies, which were refused. */
static void
test_df_flag_einval(void)
{
  go_img();
  CU_ASSERT_EQUAL(req_error(W_CMD_FLAG_DF, W_CMD_READ, 0, 512), W_EINVAL);
  CU_ASSERT_EQUAL(req_error(W_CMD_FLAG_DF | W_CMD_FLAG_FUA, W_CMD_READ, 0, 512),
                  W_EINVAL);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

static void
test_read_fua(void)
{
  go_img();
  read_ok(W_CMD_FLAG_FUA, 4096, 4096);
}

static void
test_disc(void)
{
  go_img();
  cl_req(0, W_CMD_DISC, 1, 0, 0);
  size_t after_disc = t_in.len;
  cl_req(0, W_CMD_READ, 2, 0, 512); /* after DISC: never read */
  CU_ASSERT_EQUAL(serve(), 0);
  sv_end();
  CU_ASSERT_EQUAL(t_in_pos, after_disc);
  CU_ASSERT_EQUAL(serve(), 0);
  CU_ASSERT_EQUAL(t_in_pos, after_disc);
  sv_end();
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 0);
}

/* DISC with flags or a range still disconnects, without a reply. */
static void
test_disc_with_junk(void)
{
  go_img();
  cl_req(0x8000, W_CMD_DISC, 1, 12345, 678);
  CU_ASSERT_EQUAL(serve(), 0);
  sv_end();
}

static void
test_cookie_bytes_echoed(void)
{
  go_img();
  static const uint8_t cookies[][8] = {
    { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08 },
    { 0xff, 0xfe, 0xfd, 0xfc, 0x00, 0x00, 0x00, 0x80 },
    { 0, 0, 0, 0, 0, 0, 0, 0 },
    { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff },
  };
  static const uint16_t types[] = { W_CMD_READ, W_CMD_WRITE, W_CMD_FLUSH,
                                    0x99 };
  for (size_t i = 0; i < 4; i++) {
    bytes_be32(&t_in, W_REQ_MAGIC);
    bytes_be16(&t_in, 0);
    bytes_be16(&t_in, types[i]);
    bytes_put(&t_in, cookies[i], 8);
    bytes_be64(&t_in, 0);
    bytes_be32(&t_in, types[i] == W_CMD_FLUSH ? 0 : 16);
    if (types[i] == W_CMD_WRITE)
      bytes_fill(&t_in, 0, 16);
  }
  for (size_t i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(serve(), 1);
  for (size_t i = 0; i < 4; i++) {
    const uint8_t *h = sv_take(16);
    CU_ASSERT_EQUAL(memcmp(h + 8, cookies[i], 8), 0);
    if (types[i] == W_CMD_READ)
      sv_take(16);
  }
  sv_end();
}

/* Exact bytes of one read reply. */
static void
test_reply_bytes(void)
{
  go_img();
  cl_req(0, W_CMD_READ, 0x1122334455667788, 10, 4);
  CU_ASSERT_EQUAL(serve(), 1);
  uint8_t want[20] = { 0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0,
                       0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 };
  for (int i = 0; i < 4; i++)
    want[16 + i] = pattern(10 + (uint64_t)i);
  CU_ASSERT_EQUAL_FATAL(t_out.len - t_out_pos, 20);
  CU_ASSERT_EQUAL(memcmp(sv_take(20), want, 20), 0);
}

/* A failed backend read: the mapped error, a header only, and the
 * connection goes on. */
static void
pread_error_case(int err, uint32_t wire)
{
  go_img();
  t_img.pread_err = err;
  cl_req(0, W_CMD_READ, 31, 0, 4096);
  CU_ASSERT_EQUAL(serve(), 1);
  sv_reply(31, wire, 0);
  sv_end();
  t_img.pread_err = 0;
  read_ok(0, 0, 4096);
}

#define PREAD_ERROR_TEST(name, err, wire)                                      \
  static void test_pread_##name(void) { pread_error_case(err, wire); }

PREAD_ERROR_TEST(eio, EIO, W_EIO)
PREAD_ERROR_TEST(enomem, ENOMEM, W_ENOMEM)
PREAD_ERROR_TEST(einval, EINVAL, W_EINVAL)
PREAD_ERROR_TEST(eperm, EPERM, W_EPERM)
PREAD_ERROR_TEST(erofs, EROFS, W_EPERM)
PREAD_ERROR_TEST(enospc, ENOSPC, W_ENOSPC)
PREAD_ERROR_TEST(eoverflow, EOVERFLOW, W_EOVERFLOW)
PREAD_ERROR_TEST(enotsup, ENOTSUP, W_ENOTSUP)
PREAD_ERROR_TEST(eshutdown, ESHUTDOWN, W_ESHUTDOWN)
PREAD_ERROR_TEST(other_errno, EBADF, W_EIO)
PREAD_ERROR_TEST(errno_unset, -1, W_EIO)

static void
test_pipelined(void)
{
  go_img();
  cl_req(0, W_CMD_READ, 1, 0, 512);
  cl_req(0, W_CMD_FLUSH, 2, 0, 0);
  cl_req(0, W_CMD_CACHE, 3, 100, 1000);
  cl_req(0, W_CMD_WRITE, 4, 0, 16);
  bytes_fill(&t_in, 0xee, 16);
  cl_req(0, W_CMD_READ, 5, IMG_SIZE, 1);
  cl_req(0, W_CMD_READ, 6, IMG_SIZE - 123, 123);
  cl_req(0, W_CMD_TRIM, 7, 0, 512);
  cl_req(0, W_CMD_BLOCK_STATUS, 8, 0, 512);
  cl_req(W_CMD_FLAG_FUA, W_CMD_READ, 9, 5000, 4096);
  cl_req(0, W_CMD_DISC, 10, 0, 0);
  int n = 0, r;
  while ((r = serve()) == 1)
    n++;
  CU_ASSERT_EQUAL(r, 0);
  CU_ASSERT_EQUAL(n, 9);
  CU_ASSERT_EQUAL(t_in_pos, t_in.len);
  sv_read_reply(1, 0, 512);
  sv_reply(2, 0, 0);
  sv_reply(3, 0, 0);
  sv_reply(4, W_EPERM, 0);
  sv_reply(5, W_EINVAL, 0);
  sv_read_reply(6, IMG_SIZE - 123, 123);
  sv_reply(7, W_EPERM, 0);
  sv_reply(8, W_EINVAL, 0);
  sv_read_reply(9, 5000, 4096);
  sv_end();
  CU_ASSERT_EQUAL(atomic_load(&t_img.caches), 1);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), 3);
}

static void
test_reply_write_error(void)
{
  go_img();
  t_writes_left = 0;
  cl_req(0, W_CMD_READ, 1, 0, 512);
  cl_req(0, W_CMD_READ, 2, 0, 512);
  CU_ASSERT_EQUAL(serve(), -1);
  size_t pos = t_in_pos;
  CU_ASSERT_EQUAL(serve(), 0);
  CU_ASSERT_EQUAL(t_in_pos, pos);
  sv_end();
}

/* The read buffer grows with the largest request and is reused. */
static void
test_buffer_reuse(void)
{
  go_img();
  read_ok(0, 0, 100);
  read_ok(0, 1, IMG_SIZE - 1);
  size_t cap = t_buf.cap;
  CU_ASSERT(cap >= IMG_SIZE - 1);
  read_ok(0, 7, 10);
  CU_ASSERT_EQUAL(t_buf.cap, cap);
}

/* ==== nbdsrv_check_request ================================================= */

static uint32_t
check(uint16_t flags, uint16_t type, uint64_t off, uint32_t count,
      uint64_t size)
{
  struct nbdsrv_request req = {
    .flags = flags, .type = type, .cookie = 1, .offset = off, .count = count,
  };
  return nbdsrv_check_request(&req, size);
}

static void
test_check_read(void)
{
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, 1, 1), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, 1000, 1000), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 999, 1, 1000), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 999, 2, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 1000, 1, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 1001, 1, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, 1001, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(W_CMD_FLAG_FUA, W_CMD_READ, 0, 1, 1), 0);
}

static void
test_check_read_zero(void)
{
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, 0, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 1000, 0, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, 0, 0), W_EINVAL);
}

static void
test_check_read_max(void)
{
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, NBDSRV_REQUEST_MAX, UINT64_MAX), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, NBDSRV_REQUEST_MAX + 1, UINT64_MAX),
                  W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, UINT32_MAX, UINT64_MAX), W_EINVAL);
}

static void
test_check_read_overflow(void)
{
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, UINT64_MAX, 1, UINT64_MAX), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, UINT64_MAX - 1, 1, UINT64_MAX), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, UINT64_MAX - 1, 2, UINT64_MAX),
                  W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, UINT64_MAX - 511, 1024, 1 << 20),
                  W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, UINT64_MAX - 511, 1024, UINT64_MAX),
                  W_EINVAL);
}

static void
test_check_flags(void)
{
  static const uint16_t bad[] = { W_CMD_FLAG_NO_HOLE, W_CMD_FLAG_DF,
                                  W_CMD_FLAG_REQ_ONE, W_CMD_FLAG_FAST_ZERO,
                                  0x0020, 0x4000, 0x8000, 0xffff };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_EQUAL(check(bad[i], W_CMD_READ, 0, 1, 100), W_EINVAL);
    CU_ASSERT_EQUAL(check(bad[i], W_CMD_FLUSH, 0, 0, 100), W_EINVAL);
    CU_ASSERT_EQUAL(check(bad[i], W_CMD_CACHE, 0, 1, 100), W_EINVAL);
  }
  CU_ASSERT_EQUAL(check(W_CMD_FLAG_FUA, W_CMD_FLUSH, 0, 0, 100), 0);
  CU_ASSERT_EQUAL(check(W_CMD_FLAG_FUA, W_CMD_CACHE, 0, 1, 100), 0);
}

static void
test_check_writes(void)
{
  static const uint16_t types[] = { W_CMD_WRITE, W_CMD_TRIM,
                                    W_CMD_WRITE_ZEROES };
  for (size_t i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(check(0, types[i], 0, 512, 1000), W_EPERM);
    CU_ASSERT_EQUAL(check(W_CMD_FLAG_FUA, types[i], 0, 512, 1000), W_EPERM);
    CU_ASSERT_EQUAL(check(0, types[i], 0, 0, 1000), W_EPERM);
    CU_ASSERT_EQUAL(check(0, types[i], 5000, 512, 1000), W_EPERM);
  }
}

static void
test_check_flush(void)
{
  CU_ASSERT_EQUAL(check(0, W_CMD_FLUSH, 0, 0, 1000), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_FLUSH, 0, 0, 0), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_FLUSH, 1, 0, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_FLUSH, 0, 1, 1000), W_EINVAL);
}

static void
test_check_cache(void)
{
  CU_ASSERT_EQUAL(check(0, W_CMD_CACHE, 0, 1000, 1000), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_CACHE, 999, 1, 1000), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_CACHE, 0, UINT32_MAX, UINT64_MAX), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_CACHE, 0, 0, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_CACHE, 1000, 1, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_CACHE, 999, 2, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_CACHE, UINT64_MAX, 2, UINT64_MAX), W_EINVAL);
}

static void
test_check_other(void)
{
  CU_ASSERT_EQUAL(check(0, W_CMD_BLOCK_STATUS, 0, 512, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_RESIZE, 0, 0, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, 9, 0, 512, 1000), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, 0xffff, 0, 512, 1000), W_EINVAL);
}

static void
test_check_empty_export(void)
{
  CU_ASSERT_EQUAL(check(0, W_CMD_READ, 0, 1, 0), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_CACHE, 0, 1, 0), W_EINVAL);
  CU_ASSERT_EQUAL(check(0, W_CMD_FLUSH, 0, 0, 0), 0);
  CU_ASSERT_EQUAL(check(0, W_CMD_WRITE, 0, 1, 0), W_EPERM);
}

/* ==== many threads on one connection ======================================= */

#define MT_THREADS 4
#define MT_REQUESTS 1000

struct fd_io {
  int fd;
};

static int
fd_read(void *opaque, void *buf, size_t len)
{
  struct fd_io *io = opaque;
  size_t got = 0;
  while (got < len) {
    ssize_t r = read(io->fd, (char *)buf + got, len - got);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return -1;
    if (r == 0)
      return got == 0 ? 0 : -1;
    got += (size_t)r;
  }
  return 1;
}

static int
fd_write_all(int fd, const void *p, size_t len)
{
  const char *c = p;
  while (len > 0) {
    ssize_t r = send(fd, c, len, MSG_NOSIGNAL);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return -1;
    c += r;
    len -= (size_t)r;
  }
  return 0;
}

static int
fd_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
  struct fd_io *io = opaque;
  for (int i = 0; i < iovcnt; i++)
    if (fd_write_all(io->fd, iov[i].iov_base, iov[i].iov_len) == -1)
      return -1;
  return 0;
}

struct mt_state {
  struct nbdsrv_conn *conn;
  int client_fd;
  struct bytes script;
  int handshake;
  atomic_int served, bad_returns;
  atomic_int threads_serving; /* workers that served at least one */
};

static void *
mt_worker(void *arg)
{
  struct mt_state *st = arg;
  struct nbdsrv_buf buf = { 0 };
  int r, n = 0;
  while ((r = nbdsrv_serve_one(st->conn, &buf)) == 1)
    n++;
  atomic_fetch_add(&st->served, n);
  if (n > 0)
    atomic_fetch_add(&st->threads_serving, 1);
  if (r != 0)
    atomic_fetch_add(&st->bad_returns, 1);
  nbdsrv_buf_free(&buf);
  return NULL;
}

/* The server side: handshake, then MT_THREADS workers. */
static void *
mt_server(void *arg)
{
  struct mt_state *st = arg;
  st->handshake = nbdsrv_handshake(st->conn);
  if (st->handshake != 1)
    return NULL;
  pthread_t th[MT_THREADS];
  for (int i = 0; i < MT_THREADS; i++)
    if (pthread_create(&th[i], NULL, mt_worker, st) != 0)
      abort();
  for (int i = 0; i < MT_THREADS; i++)
    pthread_join(th[i], NULL);
  return NULL;
}

static void *
mt_writer(void *arg)
{
  struct mt_state *st = arg;
  fd_write_all(st->client_fd, st->script.p, st->script.len);
  return NULL;
}

static void
test_threads_pipelined(void)
{
  int sv[2];
  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  struct timeval tv = { .tv_sec = 60 };
  setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  static struct { uint64_t off; uint32_t count; } reqs[MT_REQUESTS];
  static bool seen[MT_REQUESTS];
  struct mt_state st = { .client_fd = sv[1] };
  bytes_be32(&st.script, W_FLAG_FIXED_NEWSTYLE | W_FLAG_NO_ZEROES);
  bytes_be64(&st.script, W_IHAVEOPT);
  bytes_be32(&st.script, W_OPT_GO);
  bytes_be32(&st.script, 4 + 3 + 2);
  bytes_be32(&st.script, 3);
  bytes_put(&st.script, "img", 3);
  bytes_be16(&st.script, 0);
  uint64_t rnd = 42;
  for (int i = 0; i < MT_REQUESTS; i++) {
    rnd = rnd * UINT64_C(6364136223846793005) + 1442695040888963407u;
    uint32_t count = 1 + (uint32_t)((rnd >> 33) % 65536);
    rnd = rnd * UINT64_C(6364136223846793005) + 1442695040888963407u;
    uint64_t off = (rnd >> 20) % (IMG_SIZE - count + 1);
    reqs[i].off = off;
    reqs[i].count = count;
    seen[i] = false;
    bytes_be32(&st.script, W_REQ_MAGIC);
    bytes_be16(&st.script, 0);
    bytes_be16(&st.script, W_CMD_READ);
    bytes_be64(&st.script, UINT64_C(0xc0de000000000000) | (uint64_t)i);
    bytes_be64(&st.script, off);
    bytes_be32(&st.script, count);
  }
  bytes_be32(&st.script, W_REQ_MAGIC);
  bytes_be16(&st.script, 0);
  bytes_be16(&st.script, W_CMD_DISC);
  bytes_fill(&st.script, 0, 8 + 8 + 4);

  struct fd_io io_state = { .fd = sv[0] };
  struct nbdsrv_io io = { .read = fd_read, .writev = fd_writev,
                          .opaque = &io_state };
  st.conn = nbdsrv_conn_new(t_reg, &io, "threads");
  CU_ASSERT_PTR_NOT_NULL_FATAL(st.conn);

  pthread_t server, writer;
  CU_ASSERT_FATAL(pthread_create(&server, NULL, mt_server, &st) == 0);
  CU_ASSERT_FATAL(pthread_create(&writer, NULL, mt_writer, &st) == 0);

  /* The client's reading side, here. */
  struct fd_io cl = { .fd = sv[1] };
  int ok = 1;
  uint8_t hdr[20];
  ok = fd_read(&cl, hdr, 18) == 1 && memcmp(hdr, "NBDMAGICIHAVEOPT\0\3", 18) == 0;
  int infos = 0;
  while (ok) { /* option replies up to the ACK */
    ok = fd_read(&cl, hdr, 20) == 1 && get_be64(hdr) == W_REP_MAGIC &&
         get_be32(hdr + 8) == W_OPT_GO;
    if (!ok || get_be32(hdr + 12) == W_REP_ACK)
      break;
    uint8_t skip[64];
    uint32_t len = get_be32(hdr + 16);
    ok = get_be32(hdr + 12) == W_REP_INFO && len <= sizeof skip &&
         fd_read(&cl, skip, len) == 1;
    infos++;
  }
  CU_ASSERT(ok);
  CU_ASSERT(infos >= 1);

  uint8_t *data = malloc(65536);
  CU_ASSERT_PTR_NOT_NULL(data);
  int replies = 0, bad_data = 0, bad_hdr = 0, dup = 0, in_order = 1;
  for (int i = 0; ok && data && i < MT_REQUESTS; i++) {
    if (fd_read(&cl, hdr, 16) != 1) {
      ok = 0;
      break;
    }
    uint64_t cookie = get_be64(hdr + 8);
    uint64_t idx = cookie & 0xffffffff;
    if (get_be32(hdr) != W_REPLY_MAGIC || get_be32(hdr + 4) != 0 ||
        (cookie >> 48) != 0xc0de || idx >= MT_REQUESTS) {
      bad_hdr++;
      ok = 0;
      break;
    }
    if (idx != (uint64_t)i)
      in_order = 0;
    dup += seen[idx];
    seen[idx] = true;
    if (fd_read(&cl, data, reqs[idx].count) != 1) {
      ok = 0;
      break;
    }
    bad_data += memcmp(data, t_img_data + reqs[idx].off, reqs[idx].count) != 0;
    replies++;
  }
  free(data);
  if (!ok)
    shutdown(sv[1], SHUT_RDWR); /* unblock the server and the writer */
  pthread_join(writer, NULL);
  pthread_join(server, NULL);

  /* Nothing after the last reply: the workers have ended, so after the
   * server's end is shut the client reads end of stream at once. */
  shutdown(sv[0], SHUT_WR);
  if (ok)
    CU_ASSERT_EQUAL(fd_read(&cl, hdr, 1), 0);

  CU_ASSERT(ok);
  CU_ASSERT_EQUAL(st.handshake, 1);
  CU_ASSERT_EQUAL(replies, MT_REQUESTS);
  CU_ASSERT_EQUAL(bad_hdr, 0);
  CU_ASSERT_EQUAL(bad_data, 0);
  CU_ASSERT_EQUAL(dup, 0);
  CU_ASSERT_EQUAL(atomic_load(&st.served), MT_REQUESTS);
  CU_ASSERT_EQUAL(atomic_load(&st.bad_returns), 0);
  CU_ASSERT_EQUAL(atomic_load(&t_img.preads), MT_REQUESTS);
  CU_ASSERT_EQUAL(atomic_load(&t_img.bad_ranges), 0);
  printf("(%d workers served, replies %s) ",
         atomic_load(&st.threads_serving), in_order ? "in order" : "reordered");

  nbdsrv_conn_free(st.conn);
  bytes_free(&st.script);
  close(sv[0]);
  close(sv[1]);
}

/* ==== registration ========================================================= */

#define T(name) { #name, test_##name }

static const struct cunit_test tests[] = {
  /* handshake */
  T(greeting),
  T(go_then_read),
  T(export_name_zeroes),
  T(export_name_no_zeroes),
  T(info_then_go),
  T(info_then_abort),
  T(block_size_info),
  T(block_size_unrequested),
  T(block_size_pref_zero),
  T(block_size_pref_odd),
  T(block_size_pref_huge),
  T(transmission_flags),
  T(list),
  T(list_skips_overlong_name),
  T(list_with_data),
  T(abort),
  T(structured_reply_refused),
  T(unknown_option),
  T(starttls_unsupported),
  T(tls_require_nothing_before_starttls),
  T(tls_require_export_name_disconnects),
  T(tls_require_abort),
  T(tls_on_plaintext_served),
  T(starttls_bad_uses),
  T(starttls_handshake_fails),
  T(tls_mode_without_starttls_io),
  T(unknown_client_flags),
  T(client_flags_high_bit),
  T(no_fixed_newstyle),
  T(no_zeroes_without_fixed),
  T(eof_before_client_flags),
  T(short_client_flags),
  T(eof_before_option),
  T(eof_after_option),
  T(short_option_header),
  T(short_option_data),
  T(eof_before_option_data),
  T(bad_option_magic),
  T(nbdmagic_as_option),
  T(option_too_long),
  T(go_option_too_long),
  T(export_name_option_too_long),
  T(option_drain_max),
  T(option_over_drain_max),
  T(option_length_huge),
  T(short_drained_option),
  T(too_many_drained_options),
  T(option_max_length),
  T(too_many_options),
  T(options_max_then_go),
  T(go_empty),
  T(go_len_5),
  T(info_len_5),
  T(go_namelen_too_big),
  T(go_namelen_huge),
  T(go_namelen_wraps),
  T(go_count_too_big),
  T(go_count_too_small),
  T(go_count_huge),
  T(info_trailing_byte),
  T(go_unknown_export),
  T(export_name_unknown),
  T(export_name_prefix),
  T(go_name_4096_unknown),
  T(go_name_4096_registered),
  T(export_name_4096_registered),
  T(go_name_5000),
  T(go_name_4097),
  T(export_name_5000),
  T(request_instead_of_flags),
  T(request_instead_of_option),
  T(serve_before_handshake),
  T(option_in_transmission),
  T(greeting_write_error),
  T(go_reply_write_error),
  T(export_removed_while_connected),
  /* transmission */
  T(short_request),
  T(eof_before_request),
  T(bad_request_magic),
  T(read_at_end),
  T(read_past_end),
  T(read_straddling_end),
  T(read_up_to_end),
  T(read_zero_length),
  T(read_too_long),
  T(read_max_length),
  T(read_offset_overflow),
  T(write_eperm),
  T(write_fua_eperm),
  T(write_bad_flags_payload_consumed),
  T(write_max_payload),
  T(write_too_long),
  T(write_short_payload),
  T(write_eof_before_payload),
  T(write_zero_length),
  T(trim_eperm),
  T(write_zeroes_eperm),
  T(flush),
  T(flush_with_range),
  T(cache),
  T(cache_whole_big_export),
  T(cache_past_end),
  T(cache_error),
  T(cache_without_callback),
  T(block_status_einval),
  T(unknown_commands_einval),
  T(unknown_flags_einval),
  T(df_flag_einval),
  T(read_fua),
  T(disc),
  T(disc_with_junk),
  T(cookie_bytes_echoed),
  T(reply_bytes),
  T(pread_eio),
  T(pread_enomem),
  T(pread_einval),
  T(pread_eperm),
  T(pread_erofs),
  T(pread_enospc),
  T(pread_eoverflow),
  T(pread_enotsup),
  T(pread_eshutdown),
  T(pread_other_errno),
  T(pread_errno_unset),
  T(pipelined),
  T(reply_write_error),
  T(buffer_reuse),
  T(steps_and_buffers),
  /* nbdsrv_check_request */
  T(check_read),
  T(check_read_zero),
  T(check_read_max),
  T(check_read_overflow),
  T(check_flags),
  T(check_writes),
  T(check_flush),
  T(check_cache),
  T(check_other),
  T(check_empty_export),
  /* threads */
  T(threads_pipelined),
};

int
main(void)
{
  signal(SIGPIPE, SIG_IGN);
  static const struct cunit_suite suite = {
    "nbdsrv", suite_init, suite_clean, test_setup, test_teardown,
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
