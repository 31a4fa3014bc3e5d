/* thunder — the NBD protocol engine of one connection (read-only server).
 *
 * nbdsrv speaks the fixed-newstyle handshake and the transmission phase
 * over an abstract byte stream (struct nbdsrv_io), so the same code runs
 * on sockets (server.c), on memory buffers (unit tests) and under the
 * fuzzer.  It never trusts the client: every length is checked before it
 * is used, and anything it cannot answer ends the connection.
 *
 * Threads: nbdsrv_handshake() runs in one thread.  Afterwards any number
 * of threads may call nbdsrv_serve_one() on the same connection at once:
 * reading a request takes the connection's read lock, sending a reply
 * its write lock, and the work between runs unlocked, so replies may go
 * out of order.  Each thread passes its own struct nbdsrv_buf.
 */
#ifndef THUNDER_NBDSRV_H
#define THUNDER_NBDSRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "export.h"
#include "tlsdir.h"

/* Longest export name handled; longer ones are refused. */
#define NBDSRV_NAME_MAX 4096
/* Longest option payload read during the handshake. */
#define NBDSRV_OPTION_MAX (16 * 1024)
/* Longer option payloads up to this size are read and refused with
 * NBD_REP_ERR_TOO_BIG; longer still end the connection. */
#define NBDSRV_OPTION_DRAIN_MAX (1024 * 1024)
/* Most options one client may send before it is disconnected. */
#define NBDSRV_OPTIONS_MAX 1024
/* Largest read (and write payload) accepted; advertised as the maximum
 * block size. */
#define NBDSRV_REQUEST_MAX (32u * 1024 * 1024)
/* Size of a request header on the wire, and of a simple reply header. */
#define NBDSRV_REQUEST_LEN 28
#define NBDSRV_REPLY_LEN 16
/* A scratch buffer up to this size is kept for the next request; a
 * larger one is mapped for its request only and unmapped after it, so
 * no buffer stays at a client's high-water mark. */
#define NBDSRV_BUF_KEEP (2u * 1024 * 1024)

struct nbdsrv_io {
  /* Reads exactly len bytes.  1 on success; 0 on end of stream before
   * the first byte; -1 on error, timeout or end of stream part way. */
  int (*read)(void *opaque, void *buf, size_t len);
  /* Writes all of iov.  0, or -1 on error or timeout. */
  int (*writev)(void *opaque, const struct iovec *iov, int iovcnt);
  /* NBD_OPT_STARTTLS was acknowledged: runs the TLS handshake, after which
   * read and writev carry TLS.  0, or -1 (disconnect).  NULL: TLS is not
   * offered on this stream. */
  int (*starttls)(void *opaque);
  void *opaque;
};

/* A scratch buffer for read replies; zero-initialise it and release it
 * with nbdsrv_buf_free().  A buffer may be moved (copied by value, the
 * old one zeroed) to whoever sends the reply. */
struct nbdsrv_buf {
  void *p;
  size_t cap;
  bool mapped; /* cap > NBDSRV_BUF_KEEP: mmap()ed, released after use */
};

void nbdsrv_buf_free(struct nbdsrv_buf *buf);

/* Releases buf if it is larger than NBDSRV_BUF_KEEP (call it after each
 * request, once the reply is sent). */
void nbdsrv_buf_trim(struct nbdsrv_buf *buf);

struct nbdsrv_conn;

/* A connection serving the exports of reg over io; peer names the client
 * in log messages.  NULL on allocation failure. */
struct nbdsrv_conn *nbdsrv_conn_new(struct exports *reg,
                                    const struct nbdsrv_io *io,
                                    const char *peer);

/* Marks the client as local (a Unix-socket peer, i.e. this node's QEMU)
 * for the export's counters; the default is remote (a child node). */
void nbdsrv_conn_set_local(struct nbdsrv_conn *c, bool local);

/* TLS on this connection (the default is off; needs io->starttls):
 *   off      NBD_OPT_STARTTLS is refused (NBD_REP_ERR_UNSUP)
 *   on       the client may upgrade with NBD_OPT_STARTTLS, or not
 *   require  before the upgrade every option but NBD_OPT_STARTTLS and
 *            NBD_OPT_ABORT is refused with NBD_REP_ERR_TLS_REQD
 *            (NBD_OPT_EXPORT_NAME, which has no error reply, disconnects):
 *            no export name, list or data before TLS. */
void nbdsrv_conn_set_tls(struct nbdsrv_conn *c, enum tlsdir_mode mode);

/* True once the client upgraded to TLS. */
bool nbdsrv_conn_tls_active(struct nbdsrv_conn *c);

/* Runs the handshake.  1: the client chose an export and transmission
 * begins; 0: the client ended the handshake cleanly (NBD_OPT_ABORT or
 * end of stream); -1: a protocol or I/O error (disconnect). */
int nbdsrv_handshake(struct nbdsrv_conn *c);

/* Reads one request, handles it and sends its reply.  1: go on;
 * 0: the client disconnected (NBD_CMD_DISC or end of stream); -1: a
 * protocol or I/O error (disconnect).  Once any call has returned 0 or
 * -1, every later call returns 0 at once. */
int nbdsrv_serve_one(struct nbdsrv_conn *c, struct nbdsrv_buf *buf);

/* The request fields after the magic, in host order. */
struct nbdsrv_request {
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint32_t count;
};

/* ---- the transmission phase in steps, for an event loop ------------
 * nbdsrv_serve_one() is these steps over io; server.c reads request
 * headers itself (without blocking) and runs them on worker threads. */

/* Decodes the request header wire (NBDSRV_REQUEST_LEN bytes).
 * 1: *req is a request to carry out; *payload bytes of a write payload
 * follow it, which the caller reads and discards; 0: NBD_CMD_DISC;
 * -1: a protocol error (bad magic, oversized payload): disconnect.
 * Any thread; the connection must be past the handshake. */
int nbdsrv_decode_request(struct nbdsrv_conn *c, const void *wire,
                          struct nbdsrv_request *req, uint32_t *payload);

/* Bytes of data the reply to req will carry at most (the read's length
 * if it is a valid read, else 0): what the request costs in memory. */
uint32_t nbdsrv_reply_data_len(struct nbdsrv_conn *c,
                               const struct nbdsrv_request *req);

/* A simple reply: the header, and the data of a successful read (which
 * points into the buffer passed to nbdsrv_execute). */
struct nbdsrv_reply {
  uint8_t hdr[NBDSRV_REPLY_LEN];
  const void *data;
  uint32_t len;
  /* Parts of data[0..len) the export lent instead of copying (node mode:
   * blocks sent straight from the fetch's buffer); their bytes in data
   * are not set.  nbdsrv_reply_iov gives the data to send,
   * nbdsrv_reply_release frees the parts once it is sent. */
  struct export_lent lent;
};

/* Most iovecs nbdsrv_reply_iov fills: lent parts and the gaps between. */
#define NBDSRV_REPLY_IOV_MAX (2 * EXPORT_LENT_MAX + 1)

/* The reply's data as iovecs (at most NBDSRV_REPLY_IOV_MAX, none for no
 * data); returns their number. */
int nbdsrv_reply_iov(const struct nbdsrv_reply *reply, struct iovec *iov);

/* Releases what the reply's data holds (its lent parts). */
void nbdsrv_reply_release(struct nbdsrv_reply *reply);

/* True when carrying out req may wait for an upstream (a read of a
 * block the export does not hold yet); cheap, no syscall.  The server
 * lets other workers read the connection's next requests meanwhile. */
bool nbdsrv_may_block(struct nbdsrv_conn *c, const struct nbdsrv_request *req);

/* Carries out a decoded request and builds its reply; a read's data goes
 * into buf.  Any number of threads at once, no lock held. */
void nbdsrv_execute(struct nbdsrv_conn *c, const struct nbdsrv_request *req,
                    struct nbdsrv_buf *buf, struct nbdsrv_reply *reply);

/* Checks a request against an export of the given size (the rules of the
 * NBD spec for a read-only export without structured replies).  Returns
 * 0 if it may be carried out, else the NBD error for the reply
 * (NBD_EINVAL, NBD_EPERM). */
uint32_t nbdsrv_check_request(const struct nbdsrv_request *req,
                              uint64_t export_size);

/* The export chosen in the handshake, or NULL before. */
struct export *nbdsrv_conn_export(struct nbdsrv_conn *c);

void nbdsrv_conn_free(struct nbdsrv_conn *c);

#endif
