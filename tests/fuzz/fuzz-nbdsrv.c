/* thunder — libFuzzer target for the NBD protocol engine (nbdsrv.c).
 *
 * The input is the client's whole byte stream on one fresh connection:
 * the handshake, then nbdsrv_serve_one() until it stops.  The server's
 * output is read (so that the sanitizers check every byte it points at)
 * and discarded.  The io follows the nbdsrv_io contract: 1 when enough
 * bytes remain, 0 at exactly the end of the input, -1 part way.
 *
 * Exports, made once: "img" (a small memory image), "err" (every read
 * fails), and one whose name is NBDSRV_NAME_MAX bytes long ('a'..'z'
 * repeating), the longest a client may send.
 *
 * TLS: the io offers NBD_OPT_STARTTLS (the upgrade itself succeeds in
 * memory: the bytes after it are the client's stream "decrypted"), and
 * the input's length modulo 3 picks the mode (off, on, require), so the
 * seeds keep their meaning and every input is run under one mode: the
 * refusals before the upgrade and the options after it are explored.
 * The TLS records themselves are GnuTLS's (daemon/nbdtls.c), tested end
 * to end in tests/integration/test-nbd-tls.sh.
 *
 * Seeds: tests/fuzz/corpus/nbdsrv/ (written by make-corpus.py).  Set
 * FUZZ_NBDSRV_DEBUG=1 to also run the debug log messages.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "export.h"
#include "log.h"
#include "nbdsrv.h"

#define IMG_SIZE (64 * 1024 + 3)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t img[IMG_SIZE];
static struct exports *reg;

static int
img_pread(void *handle, void *buf, uint32_t len, uint64_t off, int *err)
{
  const uint8_t *p = handle;
  if (off > IMG_SIZE || len > IMG_SIZE - off)
    abort(); /* nbdsrv must have checked the range */
  memcpy(buf, p + off, len);
  return 0;
}

static int
img_cache(void *handle, uint64_t len, uint64_t off, int *err)
{
  if (off > IMG_SIZE || len > IMG_SIZE - off)
    abort();
  return 0;
}

static int
err_pread(void *handle, void *buf, uint32_t len, uint64_t off, int *err)
{
  if (off > IMG_SIZE || len > IMG_SIZE - off)
    abort();
  *err = off % 2 ? ENOMEM : EIO;
  return -1;
}

static int
err_cache(void *handle, uint64_t len, uint64_t off, int *err)
{
  if (off > IMG_SIZE || len > IMG_SIZE - off)
    abort();
  *err = ESHUTDOWN;
  return -1;
}

static const struct export_ops img_ops = {
  .pread = img_pread, .cache = img_cache,
};
static const struct export_ops err_ops = {
  .pread = err_pread, .cache = err_cache,
};

static void
add(const char *name, const char *desc, const struct export_ops *ops)
{
  struct export *exp = export_new(name, IMG_SIZE, 4096, desc, ops, img);
  if (exp == NULL || exports_add(reg, exp) == -1)
    abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  for (size_t i = 0; i < IMG_SIZE; i++)
    img[i] = (uint8_t)(i * 131 + (i >> 8));
  reg = exports_new();
  if (reg == NULL)
    abort();
  add("img", "fuzz image", &img_ops);
  add("err", NULL, &err_ops);
  char name[NBDSRV_NAME_MAX + 1];
  for (size_t i = 0; i < NBDSRV_NAME_MAX; i++)
    name[i] = (char)('a' + i % 26);
  name[NBDSRV_NAME_MAX] = '\0';
  add(name, "long name", &img_ops);
  const char *debug = getenv("FUZZ_NBDSRV_DEBUG");
  if (debug && *debug == '1')
    log_set_debug("nbd");
  return 0;
}

struct input {
  const uint8_t *p;
  size_t len, pos;
  bool upgraded;             /* NBD_OPT_STARTTLS was acknowledged */
};

static int
in_read(void *opaque, void *buf, size_t len)
{
  struct input *in = opaque;
  if (in->pos == in->len)
    return 0;
  if (in->len - in->pos < len) {
    in->pos = in->len;
    return -1;
  }
  memcpy(buf, in->p + in->pos, len);
  in->pos += len;
  return 1;
}

/* Where sink_writev leaves its checksum, so the reads are not optimised
 * away. */
static volatile uint8_t sink_sum;

/* Reads every byte the server sends, then drops it. */
static int
sink_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
  uint8_t s = 0;
  for (int i = 0; i < iovcnt; i++) {
    const uint8_t *p = iov[i].iov_base;
    for (size_t j = 0; j < iov[i].iov_len; j++)
      s += p[j];
  }
  sink_sum += s;
  return 0;
}

/* The upgrade: succeeds, at most once per connection. */
static int
mem_starttls(void *opaque)
{
  struct input *in = opaque;
  if (in->upgraded)
    abort(); /* nbdsrv must refuse a second STARTTLS */
  in->upgraded = true;
  return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct input in = { .p = data, .len = size };
  struct nbdsrv_io io = { .read = in_read, .writev = sink_writev,
                          .starttls = mem_starttls, .opaque = &in };
  struct nbdsrv_conn *c = nbdsrv_conn_new(reg, &io, "fuzz");
  if (c == NULL)
    abort();
  enum tlsdir_mode mode = (enum tlsdir_mode)(size % 3);
  nbdsrv_conn_set_tls(c, mode);
  int hs = nbdsrv_handshake(c);
  /* require: no export is ever chosen without the upgrade. */
  if (hs == 1 && mode == TLSDIR_REQUIRE && !in.upgraded)
    abort();
  if (in.upgraded != nbdsrv_conn_tls_active(c) ||
      (in.upgraded && mode == TLSDIR_OFF))
    abort();
  if (hs == 1) {
    if (nbdsrv_conn_export(c) == NULL)
      abort();
    struct nbdsrv_buf buf = { 0 };
    while (nbdsrv_serve_one(c, &buf) == 1)
      ;
    /* Once stopped, it stays stopped. */
    if (nbdsrv_serve_one(c, &buf) != 0)
      abort();
    nbdsrv_buf_free(&buf);
  }
  nbdsrv_conn_free(c);
  return 0;
}
