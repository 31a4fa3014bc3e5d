/* thunder — the NBD protocol engine of one connection; see nbdsrv.h.
 *
 * Phases and what ends them:
 *
 *   greeting    server: NBDMAGIC IHAVEOPT flags(FIXED_NEWSTYLE|NO_ZEROES)
 *               client: flags — unknown bits or no FIXED_NEWSTYLE → drop
 *   options     client: IHAVEOPT opt len data   (len <= NBDSRV_OPTION_MAX;
 *               up to NBDSRV_OPTION_DRAIN_MAX is read and refused with
 *               NBD_REP_ERR_TOO_BIG, more is dropped)
 *               EXPORT_NAME ok → transmission; unknown name → drop
 *               GO ok → transmission; INFO, LIST → reply, stay
 *               ABORT → ACK, end;  other options → NBD_REP_ERR_UNSUP
 *               STARTTLS (TLS on or require) → ACK, TLS handshake, the
 *               options go on encrypted; with require, before it every
 *               option but STARTTLS and ABORT → NBD_REP_ERR_TLS_REQD
 *               (EXPORT_NAME → drop)
 *               bad magic, too long, too many options → drop
 *   transmission  request magic flags type cookie offset count
 *               READ/FLUSH/CACHE served; WRITE/TRIM/WRITE_ZEROES → EPERM
 *               (a WRITE payload is read and discarded to stay in step);
 *               DISC → end; bad magic or unreadable payload → drop
 *
 * Only simple replies are sent (structured replies are refused), so a
 * reply is a 16-byte header, plus the data for a successful read.
 */
#include "nbdsrv.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "nbd-protocol.h"

#define COMPONENT "nbd"

struct nbdsrv_conn {
  struct exports *reg;
  struct nbdsrv_io io;
  char *peer;
  bool no_zeroes;          /* client asked for NBD_FLAG_NO_ZEROES */
  bool local;              /* a local client, for the counters */
  enum tlsdir_mode tls;    /* what the client may or must do */
  bool tls_active;         /* upgraded with NBD_OPT_STARTTLS */
  struct export *exp;      /* set when transmission starts */
  uint64_t size;           /* exp's size, cached */

  pthread_mutex_t read_lock;  /* one reader of requests at a time */
  pthread_mutex_t write_lock; /* one writer of replies at a time */
  bool closing;               /* under read_lock */
};

/* Transmission flags of every export: read-only, multi-conn safe. */
static const uint16_t export_flags =
    NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH |
    NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;

void
nbdsrv_buf_free(struct nbdsrv_buf *buf)
{
  if (buf->mapped)
    munmap(buf->p, buf->cap);
  else
    free(buf->p);
  buf->p = NULL;
  buf->cap = 0;
  buf->mapped = false;
}

void
nbdsrv_buf_trim(struct nbdsrv_buf *buf)
{
  if (buf->cap > NBDSRV_BUF_KEEP)
    nbdsrv_buf_free(buf);
}

/* Makes buf hold at least len bytes; -1 on allocation failure.  Up to
 * NBDSRV_BUF_KEEP from malloc (kept by the caller between requests),
 * larger ones mapped (populated at once: cheaper than a fault a page). */
static int
buf_reserve(struct nbdsrv_buf *buf, size_t len)
{
  if (buf->cap >= len)
    return 0;
  nbdsrv_buf_free(buf);
  if (len > NBDSRV_BUF_KEEP) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
      return -1;
    buf->p = p;
    buf->mapped = true;
  } else if ((buf->p = malloc(len)) == NULL)
    return -1;
  buf->cap = len;
  return 0;
}

struct nbdsrv_conn *
nbdsrv_conn_new(struct exports *reg, const struct nbdsrv_io *io,
                const char *peer)
{
  struct nbdsrv_conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->peer = strdup(peer ? peer : "client");
  if (c->peer == NULL) {
    free(c);
    return NULL;
  }
  c->reg = reg;
  c->io = *io;
  pthread_mutex_init(&c->read_lock, NULL);
  pthread_mutex_init(&c->write_lock, NULL);
  return c;
}

void
nbdsrv_conn_free(struct nbdsrv_conn *c)
{
  if (c == NULL)
    return;
  export_put(c->exp);
  pthread_mutex_destroy(&c->read_lock);
  pthread_mutex_destroy(&c->write_lock);
  free(c->peer);
  free(c);
}

void
nbdsrv_conn_set_local(struct nbdsrv_conn *c, bool local)
{
  c->local = local;
}

void
nbdsrv_conn_set_tls(struct nbdsrv_conn *c, enum tlsdir_mode mode)
{
  c->tls = c->io.starttls ? mode : TLSDIR_OFF;
}

bool
nbdsrv_conn_tls_active(struct nbdsrv_conn *c)
{
  return c->tls_active;
}

struct export *
nbdsrv_conn_export(struct nbdsrv_conn *c)
{
  return c->exp;
}

/* ---- handshake ---------------------------------------------------- */

static int
send_all(struct nbdsrv_conn *c, const void *p, size_t len)
{
  struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
  return c->io.writev(c->io.opaque, &iov, 1);
}

/* Sends an option reply header and its payload. */
static int
send_opt_reply(struct nbdsrv_conn *c, uint32_t opt, uint32_t type,
               const void *data, uint32_t len)
{
  struct {
    uint64_t magic;
    uint32_t opt, type, len;
  } __attribute__((packed)) hdr = {
    htobe64(NBD_REP_MAGIC), htobe32(opt), htobe32(type), htobe32(len),
  };
  struct iovec iov[2] = {
    { .iov_base = &hdr, .iov_len = sizeof hdr },
    { .iov_base = (void *)data, .iov_len = len },
  };
  return c->io.writev(c->io.opaque, iov, len ? 2 : 1);
}

/* Sends an error reply with a human-readable message. */
static int
send_opt_error(struct nbdsrv_conn *c, uint32_t opt, uint32_t type,
               const char *msg)
{
  log_debug(COMPONENT, "%s: option %" PRIu32 " refused: %s", c->peer, opt,
            msg);
  return send_opt_reply(c, opt, type, msg, (uint32_t)strlen(msg));
}

static int
send_info_export(struct nbdsrv_conn *c, uint32_t opt, struct export *exp)
{
  struct {
    uint16_t type;
    uint64_t size;
    uint16_t flags;
  } __attribute__((packed)) info = {
    htobe16(NBD_INFO_EXPORT), htobe64(export_size(exp)),
    htobe16(export_flags),
  };
  return send_opt_reply(c, opt, NBD_REP_INFO, &info, sizeof info);
}

static int
send_info_block_size(struct nbdsrv_conn *c, uint32_t opt, struct export *exp)
{
  uint32_t pref = export_pref_block(exp);
  if (pref < 512 || pref > NBDSRV_REQUEST_MAX || (pref & (pref - 1)))
    pref = 4096;
  struct {
    uint16_t type;
    uint32_t min, pref, max;
  } __attribute__((packed)) info = {
    htobe16(NBD_INFO_BLOCK_SIZE), htobe32(1), htobe32(pref),
    htobe32(NBDSRV_REQUEST_MAX),
  };
  return send_opt_reply(c, opt, NBD_REP_INFO, &info, sizeof info);
}

/* NBD_INFO_NAME or NBD_INFO_DESCRIPTION with its string. */
static int
send_info_string(struct nbdsrv_conn *c, uint32_t opt, uint16_t type,
                 const char *s)
{
  size_t len = strlen(s);
  if (len > NBDSRV_NAME_MAX)
    len = NBDSRV_NAME_MAX;
  uint8_t buf[2 + NBDSRV_NAME_MAX];
  uint16_t t = htobe16(type);
  memcpy(buf, &t, 2);
  memcpy(buf + 2, s, len);
  return send_opt_reply(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + len));
}

static int
send_list_entry(struct export *exp, void *opaque)
{
  struct nbdsrv_conn *c = opaque;
  const char *name = export_name(exp);
  const char *desc = export_description(exp);
  size_t nlen = strlen(name), dlen = strlen(desc);
  if (nlen > NBDSRV_NAME_MAX)
    return 0; /* cannot be named by a client; not listed */
  if (strchr(name, '@'))
    return 0; /* an image's side export (NAME@manifest): not an image */
  if (dlen > NBDSRV_NAME_MAX)
    dlen = NBDSRV_NAME_MAX;
  uint8_t buf[4 + 2 * NBDSRV_NAME_MAX];
  uint32_t be = htobe32((uint32_t)nlen);
  memcpy(buf, &be, 4);
  memcpy(buf + 4, name, nlen);
  memcpy(buf + 4 + nlen, desc, dlen);
  return send_opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf,
                        (uint32_t)(4 + nlen + dlen)) == -1 ? -1 : 0;
}

/* NBD_OPT_INFO and NBD_OPT_GO.  Returns 1 when GO succeeded, 0 to go on
 * haggling, -1 to disconnect. */
static int
opt_info_go(struct nbdsrv_conn *c, uint32_t opt, const uint8_t *data,
            uint32_t len)
{
  uint32_t namelen;
  uint16_t nreq;

  if (len < 6) {
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID,
                          "option data too short");
  }
  memcpy(&namelen, data, 4);
  namelen = be32toh(namelen);
  if (namelen > len - 6) {
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID,
                          "export name length exceeds option length");
  }
  memcpy(&nreq, data + 4 + namelen, 2);
  nreq = be16toh(nreq);
  if ((uint64_t)4 + namelen + 2 + 2 * (uint64_t)nreq != len) {
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID,
                          "information request count does not match option length");
  }
  if (namelen > NBDSRV_NAME_MAX) {
    return send_opt_error(c, opt, NBD_REP_ERR_TOO_BIG,
                          "export name longer than 4096 bytes");
  }

  struct export *exp = exports_lookup(c->reg, (const char *)data + 4, namelen);
  if (exp == NULL) {
    log_debug(COMPONENT, "%s: unknown export '%.*s'", c->peer,
              (int)(namelen > 256 ? 256 : namelen), (const char *)data + 4);
    return send_opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "unknown export");
  }

  bool want_name = false, want_desc = false;
  for (uint16_t i = 0; i < nreq; i++) {
    uint16_t t;
    memcpy(&t, data + 4 + namelen + 2 + 2 * i, 2);
    t = be16toh(t);
    if (t == NBD_INFO_NAME)
      want_name = true;
    else if (t == NBD_INFO_DESCRIPTION)
      want_desc = true;
  }

  if (send_info_export(c, opt, exp) == -1 ||
      send_info_block_size(c, opt, exp) == -1 ||
      (want_name && send_info_string(c, opt, NBD_INFO_NAME,
                                     export_name(exp)) == -1) ||
      (want_desc && *export_description(exp) &&
       send_info_string(c, opt, NBD_INFO_DESCRIPTION,
                        export_description(exp)) == -1) ||
      send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0) == -1) {
    export_put(exp);
    return -1;
  }

  if (opt == NBD_OPT_INFO) {
    export_put(exp);
    return 0;
  }
  c->exp = exp;
  c->size = export_size(exp);
  return 1;
}

/* NBD_OPT_EXPORT_NAME: no error reply exists, so failure disconnects. */
static int
opt_export_name(struct nbdsrv_conn *c, const uint8_t *data, uint32_t len)
{
  if (len > NBDSRV_NAME_MAX) {
    log_debug(COMPONENT, "%s: export name of %" PRIu32 " bytes refused",
              c->peer, len);
    return -1;
  }
  struct export *exp = exports_lookup(c->reg, (const char *)data, len);
  if (exp == NULL) {
    log_debug(COMPONENT, "%s: unknown export '%.*s'", c->peer,
              (int)(len > 256 ? 256 : len), (const char *)data);
    return -1;
  }
  struct {
    uint64_t size;
    uint16_t flags;
    uint8_t zeroes[124];
  } __attribute__((packed)) reply = {
    htobe64(export_size(exp)), htobe16(export_flags), { 0 },
  };
  size_t n = c->no_zeroes ? 10 : sizeof reply;
  if (send_all(c, &reply, n) == -1) {
    export_put(exp);
    return -1;
  }
  c->exp = exp;
  c->size = export_size(exp);
  return 1;
}

int
nbdsrv_handshake(struct nbdsrv_conn *c)
{
  struct {
    uint64_t magic, ihaveopt;
    uint16_t flags;
  } __attribute__((packed)) greeting = {
    htobe64(NBD_MAGIC), htobe64(NBD_IHAVEOPT),
    htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
  };
  if (send_all(c, &greeting, sizeof greeting) == -1)
    return -1;

  uint32_t cflags;
  int r = c->io.read(c->io.opaque, &cflags, 4);
  if (r <= 0)
    return r;
  cflags = be32toh(cflags);
  if (cflags & ~(uint32_t)(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)) {
    log_debug(COMPONENT, "%s: unknown client flags 0x%" PRIx32, c->peer,
              cflags);
    return -1;
  }
  if (!(cflags & NBD_FLAG_FIXED_NEWSTYLE)) {
    log_debug(COMPONENT, "%s: client is not fixed-newstyle", c->peer);
    return -1;
  }
  c->no_zeroes = cflags & NBD_FLAG_NO_ZEROES;

  uint8_t data[NBDSRV_OPTION_MAX];
  for (unsigned nopt = 0; nopt < NBDSRV_OPTIONS_MAX; nopt++) {
    struct {
      uint64_t magic;
      uint32_t opt, len;
    } __attribute__((packed)) hdr;
    r = c->io.read(c->io.opaque, &hdr, sizeof hdr);
    if (r <= 0)
      return r;
    uint64_t magic = be64toh(hdr.magic);
    uint32_t opt = be32toh(hdr.opt), len = be32toh(hdr.len);
    if (magic != NBD_IHAVEOPT) {
      log_debug(COMPONENT, "%s: bad option magic 0x%" PRIx64, c->peer,
                magic);
      return -1;
    }
    if (len > NBDSRV_OPTION_MAX) {
      /* Too long to use.  Read it and say so while that is cheap; an
       * export name has no error reply, and a huge payload is abuse. */
      if (opt == NBD_OPT_EXPORT_NAME || len > NBDSRV_OPTION_DRAIN_MAX) {
        log_debug(COMPONENT, "%s: option %" PRIu32 " length %" PRIu32
                  " too large, disconnecting", c->peer, opt, len);
        return -1;
      }
      for (uint32_t left = len; left > 0;) {
        uint32_t n = left < sizeof data ? left : (uint32_t)sizeof data;
        if (c->io.read(c->io.opaque, data, n) != 1)
          return -1;
        left -= n;
      }
      if (send_opt_error(c, opt, NBD_REP_ERR_TOO_BIG,
                         "option data too long") == -1)
        return -1;
      continue;
    }
    if (len > 0 && c->io.read(c->io.opaque, data, len) != 1)
      return -1;

    if (c->tls == TLSDIR_REQUIRE && !c->tls_active &&
        opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT) {
      /* Nothing but the upgrade before TLS: no export list, no export. */
      if (opt == NBD_OPT_EXPORT_NAME) {
        log_debug(COMPONENT, "%s: NBD_OPT_EXPORT_NAME before TLS,"
                  " disconnecting (TLS is required)", c->peer);
        return -1;
      }
      if (send_opt_error(c, opt, NBD_REP_ERR_TLS_REQD,
                         "TLS is required: use NBD_OPT_STARTTLS") == -1)
        return -1;
      continue;
    }

    switch (opt) {
    case NBD_OPT_STARTTLS:
      if (c->tls == TLSDIR_OFF)
        r = send_opt_error(c, opt, NBD_REP_ERR_UNSUP,
                           "TLS is not enabled on this server");
      else if (c->tls_active)
        r = send_opt_error(c, opt, NBD_REP_ERR_INVALID,
                           "TLS is already negotiated");
      else if (len != 0)
        r = send_opt_error(c, opt, NBD_REP_ERR_INVALID,
                           "NBD_OPT_STARTTLS takes no data");
      else {
        /* Nothing read ahead of the upgrade is kept (io reads exactly
         * what is asked), so no plaintext can be injected into the
         * encrypted phase. */
        if (send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0) == -1 ||
            c->io.starttls(c->io.opaque) == -1)
          return -1;
        c->tls_active = true;
        r = 0;
      }
      if (r == -1)
        return -1;
      break;

    case NBD_OPT_EXPORT_NAME:
      return opt_export_name(c, data, len);

    case NBD_OPT_ABORT:
      send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
      return 0;

    case NBD_OPT_LIST:
      if (len != 0)
        r = send_opt_error(c, opt, NBD_REP_ERR_INVALID,
                           "NBD_OPT_LIST takes no data");
      else if (exports_foreach(c->reg, send_list_entry, c) != 0)
        r = -1;
      else
        r = send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
      if (r == -1)
        return -1;
      break;

    case NBD_OPT_INFO:
    case NBD_OPT_GO:
      r = opt_info_go(c, opt, data, len);
      if (r != 0)
        return r;
      break;

    case NBD_OPT_STRUCTURED_REPLY:
      if (send_opt_error(c, opt, NBD_REP_ERR_UNSUP,
                         "structured replies are not supported") == -1)
        return -1;
      break;

    default:
      if (send_opt_error(c, opt, NBD_REP_ERR_UNSUP,
                         "option not supported") == -1)
        return -1;
      break;
    }
  }
  log_debug(COMPONENT, "%s: more than %d options, disconnecting", c->peer,
            NBDSRV_OPTIONS_MAX);
  return -1;
}

/* ---- transmission -------------------------------------------------- */

uint32_t
nbdsrv_check_request(const struct nbdsrv_request *req, uint64_t export_size)
{
  /* FUA is valid on any command and meaningless on a read-only export. */
  if (req->flags & ~(uint16_t)NBD_CMD_FLAG_FUA)
    return NBD_EINVAL;

  switch (req->type) {
  case NBD_CMD_READ:
    if (req->count == 0 || req->count > NBDSRV_REQUEST_MAX)
      return NBD_EINVAL;
    __attribute__((fallthrough));
  case NBD_CMD_CACHE:
    if (req->count == 0 || req->offset > export_size ||
        req->count > export_size - req->offset)
      return NBD_EINVAL;
    return 0;
  case NBD_CMD_FLUSH:
    if (req->offset != 0 || req->count != 0)
      return NBD_EINVAL;
    return 0;
  case NBD_CMD_WRITE:
  case NBD_CMD_TRIM:
  case NBD_CMD_WRITE_ZEROES:
    return NBD_EPERM;
  default:
    return NBD_EINVAL;
  }
}

/* Maps a local errno to the NBD error set. */
static uint32_t
nbd_errno(int err)
{
  switch (err) {
  case EPERM:
  case EROFS:
    return NBD_EPERM;
  case ENOMEM:
    return NBD_ENOMEM;
  case EINVAL:
    return NBD_EINVAL;
  case ENOSPC:
    return NBD_ENOSPC;
  case EOVERFLOW:
    return NBD_EOVERFLOW;
  case ENOTSUP:
    return NBD_ENOTSUP;
  case ESHUTDOWN:
    return NBD_ESHUTDOWN;
  default:
    return NBD_EIO;
  }
}

/* Reads and discards len bytes of payload; the caller holds read_lock. */
static int
discard_payload(struct nbdsrv_conn *c, uint32_t len)
{
  uint8_t chunk[16 * 1024];
  while (len > 0) {
    size_t n = len < sizeof chunk ? len : sizeof chunk;
    if (c->io.read(c->io.opaque, chunk, n) != 1)
      return -1;
    len -= (uint32_t)n;
  }
  return 0;
}

int
nbdsrv_decode_request(struct nbdsrv_conn *c, const void *wire_p,
                      struct nbdsrv_request *req, uint32_t *payload)
{
  struct {
    uint32_t magic;
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t count;
  } __attribute__((packed)) wire;
  _Static_assert(sizeof wire == NBDSRV_REQUEST_LEN, "request header size");
  memcpy(&wire, wire_p, sizeof wire);

  *payload = 0;
  if (be32toh(wire.magic) != NBD_REQUEST_MAGIC) {
    log_debug(COMPONENT, "%s: bad request magic 0x%" PRIx32 ", disconnecting",
              c->peer, be32toh(wire.magic));
    return -1;
  }
  req->flags = be16toh(wire.flags);
  req->type = be16toh(wire.type);
  req->cookie = be64toh(wire.cookie);
  req->offset = be64toh(wire.offset);
  req->count = be32toh(wire.count);

  if (req->type == NBD_CMD_DISC)
    return 0;
  if (req->type == NBD_CMD_WRITE) {
    /* The payload follows the header: consume it to stay in step, or
     * drop a client whose payload is too large to consume. */
    if (req->count > NBDSRV_REQUEST_MAX) {
      log_debug(COMPONENT, "%s: write payload of %" PRIu32
                " bytes, disconnecting", c->peer, req->count);
      return -1;
    }
    *payload = req->count;
  }
  return 1;
}

uint32_t
nbdsrv_reply_data_len(struct nbdsrv_conn *c, const struct nbdsrv_request *req)
{
  if (req->type != NBD_CMD_READ || nbdsrv_check_request(req, c->size) != 0)
    return 0;
  return req->count;
}

bool
nbdsrv_may_block(struct nbdsrv_conn *c, const struct nbdsrv_request *req)
{
  return req->type == NBD_CMD_READ &&
         nbdsrv_check_request(req, c->size) == 0 &&
         export_may_block(c->exp, req->count, req->offset);
}

void
nbdsrv_execute(struct nbdsrv_conn *c, const struct nbdsrv_request *req,
               struct nbdsrv_buf *buf, struct nbdsrv_reply *reply)
{
  uint32_t error = nbdsrv_check_request(req, c->size);
  int err = 0;

  reply->data = NULL;
  reply->len = 0;
  reply->lent.n = 0;
  if (error) {
    log_debug(COMPONENT, "%s: request type %" PRIu16 " flags 0x%" PRIx16
              " offset %" PRIu64 " count %" PRIu32 ": error %" PRIu32,
              c->peer, req->type, req->flags, req->offset, req->count, error);
  } else if (req->type == NBD_CMD_READ) {
    if (buf_reserve(buf, req->count) == -1)
      error = NBD_ENOMEM;
    else if (export_pread_lent(c->exp, buf->p, req->count, req->offset,
                               c->local, &reply->lent, &err) == -1)
      error = nbd_errno(err);
    else {
      reply->data = buf->p;
      reply->len = req->count;
      export_count_read(c->exp, c->local, req->count);
    }
  } else if (req->type == NBD_CMD_CACHE) {
    if (export_cache(c->exp, req->count, req->offset, &err) == -1)
      error = nbd_errno(err);
  }
  /* NBD_CMD_FLUSH: nothing is ever written, so nothing to flush. */

  struct {
    uint32_t magic, error;
    uint64_t cookie;
  } __attribute__((packed)) hdr = {
    htobe32(NBD_SIMPLE_REPLY_MAGIC), htobe32(error), htobe64(req->cookie),
  };
  _Static_assert(sizeof hdr == NBDSRV_REPLY_LEN, "reply header size");
  memcpy(reply->hdr, &hdr, sizeof hdr);
}

int
nbdsrv_reply_iov(const struct nbdsrv_reply *reply, struct iovec *iov)
{
  const struct export_lent *l = &reply->lent;
  const char *data = reply->data;
  uint32_t at = 0;
  int n = 0;
  for (unsigned i = 0; i < l->n; i++) {
    if (l->v[i].at > at)
      iov[n++] = (struct iovec){ (void *)(data + at), l->v[i].at - at };
    iov[n++] = (struct iovec){ (void *)l->v[i].p, l->v[i].len };
    at = l->v[i].at + l->v[i].len;
  }
  if (reply->len > at)
    iov[n++] = (struct iovec){ (void *)(data + at), reply->len - at };
  return n;
}

void
nbdsrv_reply_release(struct nbdsrv_reply *reply)
{
  export_lent_release(&reply->lent);
}

/* Reads one request under read_lock.  1: *req is valid; 0: the client
 * is gone (DISC, end of stream, or closing); -1: protocol error. */
static int
read_request(struct nbdsrv_conn *c, struct nbdsrv_request *req)
{
  uint8_t wire[NBDSRV_REQUEST_LEN];
  uint32_t payload;

  pthread_mutex_lock(&c->read_lock);
  if (c->closing) {
    pthread_mutex_unlock(&c->read_lock);
    return 0;
  }
  int r = c->io.read(c->io.opaque, wire, sizeof wire);
  if (r <= 0)
    goto close;
  r = nbdsrv_decode_request(c, wire, req, &payload);
  if (r != 1)
    goto close;
  if (payload > 0 && discard_payload(c, payload) == -1) {
    r = -1;
    goto close;
  }
  pthread_mutex_unlock(&c->read_lock);
  return 1;

close:
  c->closing = true;
  pthread_mutex_unlock(&c->read_lock);
  return r;
}

int
nbdsrv_serve_one(struct nbdsrv_conn *c, struct nbdsrv_buf *buf)
{
  struct nbdsrv_request req;
  int r = read_request(c, &req);
  if (r != 1)
    return r;

  struct nbdsrv_reply reply;
  nbdsrv_execute(c, &req, buf, &reply);
  struct iovec iov[1 + NBDSRV_REPLY_IOV_MAX];
  iov[0] = (struct iovec){ .iov_base = reply.hdr, .iov_len = sizeof reply.hdr };
  int n = 1 + nbdsrv_reply_iov(&reply, iov + 1);
  pthread_mutex_lock(&c->write_lock);
  r = c->io.writev(c->io.opaque, iov, n);
  pthread_mutex_unlock(&c->write_lock);
  nbdsrv_reply_release(&reply);
  if (r == -1) {
    pthread_mutex_lock(&c->read_lock);
    c->closing = true;
    pthread_mutex_unlock(&c->read_lock);
    return -1;
  }
  return 1;
}
