/* thunder — the node's block cache of one image version; see blkcache.h.
 *
 * Design note.
 *
 * On disk (ROOT/<version hex>/, mode 0700, flock'ed while open):
 *
 *   manifest.json  the manifest's exact bytes, written atomically (temporary
 *                  file, fsync, rename, fsync of the directory)
 *   data           image-sized sparse file; block i at i * block_size
 *   bitmap         BITMAP_HDR_SIZE bytes of header, then ceil(nblocks / 8)
 *                  bytes, bit i (byte i / 8, bit i % 8, LSB first) = 1 when
 *                  block i's data is durable and was valid when written
 *
 *   bitmap header, little-endian, zero-padded to BITMAP_HDR_SIZE:
 *     0  "THNDBMP1"          8  u32 format (1)     12 u32 block_size
 *     16 u64 nblocks          24 u8[32] version (SHA-256 of manifest.json)
 *
 * The header is compared byte for byte with the one this version would
 * write, and the three files' sizes must be exact.  Anything else (missing
 * bitmap, other manifest.json bytes, wrong sizes, not regular files) resets
 * the directory: a fresh zero bitmap is written (temporary file, fsync,
 * rename, fsync of the directory) before data is truncated to zero and back
 * to the image size.  Both orders are safe, since a stale set bit over
 * wrong data is caught by verify-on-first-read; this one never even leaves
 * such a bit.  Random bytes in the bitmap body with a valid header cannot
 * serve a wrong byte either, for the same reason.
 *
 * In memory, one atomic byte per block (ST_*):
 *
 *   state          PRESENT DURABLE VERIFIED EVICTING  how it is reached
 *   absent            0       0       0       0     start; eviction
 *   valid at open     1       1       0       0     bit set on disk at open
 *   stored            1       0       1       0     blkcache_store (data written)
 *   valid             1       1       1       0     committed, or verified on read
 *   evicting          0       0       0       1     blkcache_evict, until the
 *                                                   hole is punched
 *
 *   blkcache_read of an unverified present block reads the whole block and
 *   checks it against the manifest: match → CAS to +VERIFIED; mismatch →
 *   CAS to absent (only from the exact unverified state it read, so a
 *   concurrent store always wins) and a bit clear is queued.  Once VERIFIED
 *   a block stays present for the life of the handle (except after a failed
 *   fdatasync of its data, below), so the hot path is one acquire load and
 *   one pread into the caller's buffer.
 *
 * Crash safety, the one rule: a bit is written to the bitmap file only after
 * an fdatasync(data) that began after the block's pwrite returned.  Stores
 * pwrite, set the state, then append the index to the pending list under the
 * lock; the committer takes the whole list, fdatasyncs data, and only then
 * sets the bits in its private image of the on-disk bitmap (disk_bits),
 * pwrites the changed 4 KiB pages, fdatasyncs the bitmap and marks the
 * blocks DURABLE.  Bit clears (evictions) need no data sync and ride in the
 * same commit; sets and clears are one list (ops, a clear flagged OP_CLEAR)
 * applied in the order they happened, so a store followed by an eviction
 * of the same block ends clear, and an eviction followed by a store ends
 * set (the store was refused while the block was EVICTING, so its data is
 * the new write's).  A torn bitmap page write is harmless: each bit is
 * either its old or its new value, and both are safe.
 *
 * Eviction (blkcache_evict), the second rule: no hole is punched before the
 * bitmap write that clears its bit was fdatasync'ed.  Under the lock the
 * blocks go to EVICTING (not readable; stores of them are refused, EBUSY)
 * and their clears are queued; blkcache_sync waits for the commit, and
 * only if a commit covering them wrote and synced the bitmap (bits_seq)
 * punch_gen is made odd, the holes are punched (else the data stays: a
 * bit still set names intact data), punch_gen is made even and the blocks
 * become absent.  Nothing but the eviction moves a block out of EVICTING.  punch_gen is a seqlock for readers, which take
 * no lock: a read that saw punch_gen odd or changed reads again (and finds
 * the block absent), so a hole is never served as data.  A store compares
 * punch_gen around its pwrite too: if holes were punched meanwhile, the
 * write may have landed before the punch, so it writes again.
 * tests/tools/blkcache-crash models the punch (bit set, or its clear not
 * yet synced, is a violation) and evicts in all its modes.
 *
 * Commits are batched: the committer sleeps until something is pending, then
 * up to commit_interval_ms more, unless COMMIT_BATCH_MAX stores are pending,
 * a blkcache_sync is waiting, or the cache is closing.  Every store and
 * eviction takes a sequence number (op_seq); a finished commit publishes the
 * last number it covered (done_seq), which is what blkcache_sync waits for.
 *
 * Failures: after a failed fdatasync(data), any page written before it may
 * be lost (Linux reports a writeback error once and marks the pages clean),
 * so every block stored but not yet durable is dropped from memory and its
 * bit cleared, the batch's and those still pending alike (a block being
 * evicted stays EVICTING: its eviction ends it); a store whose
 * pwrite overlapped the failure (sync_failures changed meanwhile) writes its
 * block again before it queues it.  If the bitmap write fails, the whole
 * bitmap is rewritten by the next commit (or at close).  A blkcache_sync
 * that overlaps a failed commit returns -1.  tests/tools/blkcache-crash
 * checks these rules by wrapping pwrite and fdatasync and modelling what a
 * power cut may keep.
 *
 * Locking: lock guards the pending lists, the sequence numbers and the
 * committer's flags.  disk_bits, dirty and the batch lists belong to the
 * committer thread alone (and to open/close, before it starts and after it
 * stops).  The state bytes and counters are atomics, touched without lock,
 * except that store and eviction change a state under lock so that the
 * pending lists see events in state order.
 */
#include "blkcache.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "log.h"

#define COMP "cache"

#define BITMAP_MAGIC "THNDBMP1"
#define BITMAP_FORMAT 1u
#define BITMAP_HDR_SIZE 4096u
#define BITMAP_PAGE 4096u
/* Commit at once when this many stores are pending. */
#define COMMIT_BATCH_MAX 256u
/* In a pending operation: clear the bit rather than set it. */
#define OP_CLEAR (UINT64_C(1) << 63)
/* Writes a store makes again when an eviction punched holes meanwhile. */
#define STORE_PUNCH_RETRIES 8

#define NAME_MANIFEST "manifest.json"
#define NAME_DATA "data"
#define NAME_BITMAP "bitmap"
#define NAME_MANIFEST_TMP "manifest.json.tmp"
#define NAME_BITMAP_TMP "bitmap.tmp"

enum {
  ST_PRESENT = 1,  /* readable now */
  ST_DURABLE = 2,  /* bit set on disk, data synced */
  ST_VERIFIED = 4, /* matched the manifest since open (or stored) */
  ST_EVICTING = 8, /* blkcache_evict: bit being cleared, then hole punched;
                    * alone (not present), stores are refused */
};

struct idx_list {
  uint64_t *v;
  size_t n, cap;
};

struct blkcache {
  const struct manifest *m;
  char *dir; /* ROOT/<version hex>, for messages */
  int dirfd, data_fd, bitmap_fd;
  uint64_t nblocks;
  uint32_t block_size;
  uint32_t last_len;
  unsigned interval_ms;

  _Atomic uint8_t *state; /* nblocks ST_* bytes */
  _Atomic uint64_t present_blocks, present_bytes, valid_blocks, valid_bytes;
  _Atomic uint64_t corrupt_evicted, commits;
  _Atomic uint64_t evicted_blocks, evicted_bytes;
  /* Shared capacity account (blkcache_set_quota), or NULL. */
  struct blkcache_quota *quota;
  /* Odd while blkcache_evict punches holes; readers that saw it change
   * read again (a seqlock over the data file's content). */
  _Atomic uint64_t punch_gen;

  pthread_mutex_t lock;
  pthread_cond_t wake; /* committer: something to do */
  pthread_cond_t done; /* sync: a commit finished */
  pthread_t committer;
  bool committer_started;
  /* Under lock. */
  struct idx_list ops; /* block indexes to set, | OP_CLEAR to clear */
  uint64_t op_seq, done_seq, nfailures;
  /* Operations up to this one are in the bitmap on disk (its write and
   * fdatasync succeeded); blkcache_evict punches only below it. */
  uint64_t bits_seq;
  unsigned sync_waiters;
  bool stop;

  /* Failed fdatasyncs of data so far; a store whose write overlapped one
   * writes again. */
  _Atomic uint64_t sync_failures;

  /* Committer thread only. */
  struct idx_list batch;
  uint8_t *disk_bits; /* image of the bitmap body on disk */
  size_t bits_len;
  bool *dirty; /* per BITMAP_PAGE of the body */
  size_t npages;
  bool rewrite_all;
};

/* ---- Small helpers ------------------------------------------------------ */

static inline uint32_t
block_len(const struct blkcache *bc, uint64_t idx)
{
  return idx == bc->nblocks - 1 ? bc->last_len : bc->block_size;
}

/* Adds one block's counts for the bits that differ between old and new. */
static void
account(struct blkcache *bc, uint64_t idx, uint8_t old, uint8_t new)
{
  uint8_t on = new & ~old, off = old & ~new;
  /* The quota counts a block until its space is released: present, or
   * being evicted. */
  bool held_old = (old & (ST_PRESENT | ST_EVICTING)) != 0;
  bool held_new = (new & (ST_PRESENT | ST_EVICTING)) != 0;
  if (bc->quota && held_old != held_new) {
    if (held_new)
      atomic_fetch_add(&bc->quota->used, block_len(bc, idx));
    else
      atomic_fetch_sub(&bc->quota->used, block_len(bc, idx));
  }
  if (on & ST_PRESENT) {
    atomic_fetch_add(&bc->present_blocks, 1);
    atomic_fetch_add(&bc->present_bytes, block_len(bc, idx));
  }
  if (off & ST_PRESENT) {
    atomic_fetch_sub(&bc->present_blocks, 1);
    atomic_fetch_sub(&bc->present_bytes, block_len(bc, idx));
  }
  if (on & ST_DURABLE) {
    atomic_fetch_add(&bc->valid_blocks, 1);
    atomic_fetch_add(&bc->valid_bytes, block_len(bc, idx));
  }
  if (off & ST_DURABLE) {
    atomic_fetch_sub(&bc->valid_blocks, 1);
    atomic_fetch_sub(&bc->valid_bytes, block_len(bc, idx));
  }
}

static int
list_push(struct idx_list *l, uint64_t idx)
{
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    uint64_t *v = realloc(l->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = idx;
  return 0;
}

static void
list_swap(struct idx_list *a, struct idx_list *b)
{
  struct idx_list t = *a;
  *a = *b;
  *b = t;
}

/* pread of exactly len bytes; -1 with errno (EIO on a short file). */
static int
pread_full(int fd, void *buf, size_t len, uint64_t pos)
{
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t r = pread(fd, p, len, (off_t)pos);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = EIO;
      return -1;
    }
    p += r;
    len -= (size_t)r;
    pos += (uint64_t)r;
  }
  return 0;
}

static int
pwrite_full(int fd, const void *buf, size_t len, uint64_t pos)
{
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t r = pwrite(fd, p, len, (off_t)pos);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = EIO;
      return -1;
    }
    p += r;
    len -= (size_t)r;
    pos += (uint64_t)r;
  }
  return 0;
}

/* The header this version's bitmap must start with. */
static void
bitmap_header(const struct blkcache *bc, uint8_t hdr[BITMAP_HDR_SIZE])
{
  memset(hdr, 0, BITMAP_HDR_SIZE);
  memcpy(hdr, BITMAP_MAGIC, 8);
  uint32_t format = htole32(BITMAP_FORMAT);
  uint32_t bs = htole32(bc->block_size);
  uint64_t nb = htole64(bc->nblocks);
  memcpy(hdr + 8, &format, 4);
  memcpy(hdr + 12, &bs, 4);
  memcpy(hdr + 16, &nb, 8);
  memcpy(hdr + 24, bc->m->version, DIGEST_LEN);
}

/* ---- Opening: checks, reset, manifest.json ------------------------------ */

enum entry {
  ENTRY_ERROR = -1,
  ENTRY_OK,      /* a regular file, open in *fd */
  ENTRY_MISSING,
  ENTRY_ODD,     /* something else: a link, a directory, a FIFO... */
};

/* Opens dir/name (never following a link, never blocking on a FIFO). */
static enum entry
open_entry(struct blkcache *bc, const char *name, int flags, int *fd,
           struct stat *st)
{
  *fd = openat(bc->dirfd, name,
               flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (*fd < 0) {
    if (errno == ENOENT)
      return ENTRY_MISSING;
    if (errno == ELOOP || errno == EISDIR || errno == ENXIO ||
        errno == ENODEV || errno == ETXTBSY)
      return ENTRY_ODD;
    log_error(COMP, "open: %s/%s: %m", bc->dir, name);
    return ENTRY_ERROR;
  }
  if (fstat(*fd, st) < 0) {
    log_error(COMP, "fstat: %s/%s: %m", bc->dir, name);
    close(*fd);
    *fd = -1;
    return ENTRY_ERROR;
  }
  if (!S_ISREG(st->st_mode)) {
    close(*fd);
    *fd = -1;
    return ENTRY_ODD;
  }
  /* Back to blocking I/O for a regular file (a no-op, but explicit). */
  int fl = fcntl(*fd, F_GETFL);
  if (fl >= 0)
    (void)fcntl(*fd, F_SETFL, fl & ~O_NONBLOCK);
  return ENTRY_OK;
}

/* Removes dir/name whatever it is (an empty directory too); ENOENT is
 * fine. */
static int
remove_entry(struct blkcache *bc, const char *name)
{
  if (unlinkat(bc->dirfd, name, 0) == 0 || errno == ENOENT)
    return 0;
  if (errno == EISDIR &&
      (unlinkat(bc->dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT))
    return 0;
  log_error(COMP, "unlink: %s/%s: %m", bc->dir, name);
  return -1;
}

/* 1 if the regular file fd holds exactly bytes[0..len), 0 if not, -1 on
 * error. */
static int
same_bytes(struct blkcache *bc, int fd, const struct stat *st,
           const void *bytes, size_t len)
{
  if ((uint64_t)st->st_size != len)
    return 0;
  enum { CHUNK = 64 * 1024 };
  CLEANUP_FREE uint8_t *buf = malloc(CHUNK);
  if (buf == NULL) {
    log_error(COMP, "malloc: %m");
    return -1;
  }
  for (size_t pos = 0; pos < len;) {
    size_t n = len - pos < CHUNK ? len - pos : CHUNK;
    if (pread_full(fd, buf, n, pos) < 0) {
      if (errno == EIO)
        return 0; /* shrank under us */
      log_error(COMP, "read: %s/" NAME_MANIFEST ": %m", bc->dir);
      return -1;
    }
    if (memcmp(buf, (const uint8_t *)bytes + pos, n) != 0)
      return 0;
    pos += n;
  }
  return 1;
}

/* Reads and checks the bitmap in bc->bitmap_fd into disk_bits.  NULL if it
 * is good, else why not.  *error on an I/O error (logged). */
static const char *
load_bitmap(struct blkcache *bc, const struct stat *st, bool *error)
{
  uint8_t want[BITMAP_HDR_SIZE], got[BITMAP_HDR_SIZE];

  if ((uint64_t)st->st_size != BITMAP_HDR_SIZE + (uint64_t)bc->bits_len)
    return "bitmap has the wrong size";
  bitmap_header(bc, want);
  if (pread_full(bc->bitmap_fd, got, sizeof got, 0) < 0 ||
      pread_full(bc->bitmap_fd, bc->disk_bits, bc->bits_len,
                 BITMAP_HDR_SIZE) < 0) {
    if (errno == EIO)
      return "bitmap is short";
    log_error(COMP, "read: %s/" NAME_BITMAP ": %m", bc->dir);
    *error = true;
    return "error";
  }
  if (memcmp(got, BITMAP_MAGIC, 8) != 0)
    return "bitmap has a bad magic";
  if (memcmp(got, want, sizeof want) != 0)
    return "bitmap header does not match the manifest";
  /* Bits past the last block mean nothing: drop them. */
  if (bc->nblocks % 8)
    bc->disk_bits[bc->bits_len - 1] &= (uint8_t)((1u << (bc->nblocks % 8)) - 1);
  return NULL;
}

/* Writes bytes[0..len) to dir/final atomically through dir/tmp; returns the
 * still-open descriptor if keep, else closes it.  -1 on error (logged). */
static int
write_atomically(struct blkcache *bc, const char *tmp, const char *final,
                 const void *bytes, size_t len, uint64_t size, bool keep)
{
  if (remove_entry(bc, tmp) < 0)
    return -1;
  CLEANUP_CLOSE int fd = openat(bc->dirfd, tmp,
                                O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
                                    O_CLOEXEC,
                                0600);
  if (fd < 0) {
    log_error(COMP, "open: %s/%s: %m", bc->dir, tmp);
    return -1;
  }
  if (pwrite_full(fd, bytes, len, 0) < 0) {
    log_error(COMP, "write: %s/%s: %m", bc->dir, tmp);
    goto fail;
  }
  if (size > len && ftruncate(fd, (off_t)size) < 0) {
    log_error(COMP, "ftruncate: %s/%s: %m", bc->dir, tmp);
    goto fail;
  }
  if (fsync(fd) < 0) {
    log_error(COMP, "fsync: %s/%s: %m", bc->dir, tmp);
    goto fail;
  }
  if (renameat(bc->dirfd, tmp, bc->dirfd, final) < 0) {
    log_error(COMP, "rename: %s/%s: %m", bc->dir, final);
    goto fail;
  }
  if (fsync(bc->dirfd) < 0) {
    log_error(COMP, "fsync: %s: %m", bc->dir);
    return -1;
  }
  if (keep) {
    int r = fd;
    fd = -1;
    return r;
  }
  return 0;

fail:
  unlinkat(bc->dirfd, tmp, 0);
  return -1;
}

/* Drops everything cached: a fresh bitmap first, then empty data. */
static int
reset(struct blkcache *bc)
{
  uint8_t hdr[BITMAP_HDR_SIZE];

  if (bc->bitmap_fd >= 0) {
    close(bc->bitmap_fd);
    bc->bitmap_fd = -1;
  }
  if (remove_entry(bc, NAME_BITMAP) < 0)
    return -1;
  bitmap_header(bc, hdr);
  bc->bitmap_fd = write_atomically(bc, NAME_BITMAP_TMP, NAME_BITMAP, hdr,
                                   sizeof hdr,
                                   BITMAP_HDR_SIZE + (uint64_t)bc->bits_len,
                                   true);
  if (bc->bitmap_fd < 0)
    return -1;
  memset(bc->disk_bits, 0, bc->bits_len);

  if (bc->data_fd < 0) {
    struct stat st;
    enum entry e = open_entry(bc, NAME_DATA, O_RDWR, &bc->data_fd, &st);
    if (e == ENTRY_ERROR)
      return -1;
    if (e == ENTRY_ODD && remove_entry(bc, NAME_DATA) < 0)
      return -1;
    if (e != ENTRY_OK) {
      bc->data_fd = openat(bc->dirfd, NAME_DATA,
                           O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (bc->data_fd < 0) {
        log_error(COMP, "open: %s/" NAME_DATA ": %m", bc->dir);
        return -1;
      }
    }
  }
  if (ftruncate(bc->data_fd, 0) < 0 ||
      ftruncate(bc->data_fd, (off_t)bc->m->size) < 0) {
    log_error(COMP, "ftruncate: %s/" NAME_DATA ": %m", bc->dir);
    return -1;
  }
  return 0;
}

/* Opens and checks the three files.  Returns NULL if the cache can be used
 * as it is (*manifest_ok tells whether manifest.json must be written), a
 * reason to reset it, or sets *error. */
static const char *
check_dir(struct blkcache *bc, const void *bytes, size_t len,
          bool *manifest_ok, bool *fresh, bool *error)
{
  struct stat st;
  int fd;
  const char *why = NULL;

  *manifest_ok = false;
  *fresh = false;

  enum entry me = open_entry(bc, NAME_MANIFEST, O_RDONLY, &fd, &st);
  if (me == ENTRY_ERROR)
    goto error;
  if (me == ENTRY_OK) {
    int same = same_bytes(bc, fd, &st, bytes, len);
    close(fd);
    if (same < 0)
      goto error;
    if (same == 0)
      why = "manifest.json differs from the manifest";
    *manifest_ok = same == 1;
  } else if (me == ENTRY_ODD) {
    why = "manifest.json is not a regular file";
    if (remove_entry(bc, NAME_MANIFEST) < 0)
      goto error;
  }

  enum entry be = open_entry(bc, NAME_BITMAP, O_RDWR, &bc->bitmap_fd, &st);
  if (be == ENTRY_ERROR)
    goto error;
  if (be == ENTRY_OK && why == NULL) {
    why = load_bitmap(bc, &st, error);
    if (*error)
      return why;
  } else if (be == ENTRY_ODD && why == NULL) {
    why = "bitmap is not a regular file";
  }

  enum entry de = open_entry(bc, NAME_DATA, O_RDWR, &bc->data_fd, &st);
  if (de == ENTRY_ERROR)
    goto error;
  if (de == ENTRY_OK && why == NULL && (uint64_t)st.st_size != bc->m->size)
    why = "data has the wrong size";
  else if (de == ENTRY_ODD && why == NULL)
    why = "data is not a regular file";

  if (be == ENTRY_MISSING && why == NULL) {
    /* No bitmap, so nothing was valid: a new cache, or one whose creation
     * was interrupted.  Nothing to warn about. */
    why = "bitmap is missing";
    *fresh = true;
  } else if (de == ENTRY_MISSING && why == NULL) {
    why = "data is missing";
    /* Interrupted creation (before any block was stored) is quiet too. */
    *fresh = true;
    for (size_t i = 0; i < bc->bits_len && *fresh; i++)
      *fresh = bc->disk_bits[i] == 0;
  }
  return why;

error:
  *error = true;
  return "error";
}

/* ---- Committer ---------------------------------------------------------- */

/* Sets or clears bit idx of disk_bits, marking its page dirty if it
 * changes.  Committer only. */
static void
bit_put(struct blkcache *bc, uint64_t idx, bool on)
{
  uint8_t *b = &bc->disk_bits[idx / 8];
  uint8_t mask = (uint8_t)(1u << (idx % 8));
  uint8_t v = on ? (uint8_t)(*b | mask) : (uint8_t)(*b & ~mask);
  if (v != *b) {
    *b = v;
    bc->dirty[(idx / 8) / BITMAP_PAGE] = true;
  }
}

/* Writes the dirty pages of disk_bits (all of it after a failure) and
 * fdatasyncs the bitmap.  Committer only. */
static int
write_bitmap(struct blkcache *bc)
{
  bool any = bc->rewrite_all;
  for (size_t p = 0; p < bc->npages;) {
    if (!bc->dirty[p] && !bc->rewrite_all) {
      p++;
      continue;
    }
    size_t q = p + 1;
    while (q < bc->npages && (bc->dirty[q] || bc->rewrite_all))
      q++;
    size_t start = p * BITMAP_PAGE;
    size_t end = q * BITMAP_PAGE < bc->bits_len ? q * BITMAP_PAGE : bc->bits_len;
    if (pwrite_full(bc->bitmap_fd, bc->disk_bits + start, end - start,
                    BITMAP_HDR_SIZE + (uint64_t)start) < 0) {
      log_error(COMP, "write: %s/" NAME_BITMAP ": %m", bc->dir);
      return -1;
    }
    any = true;
    p = q;
  }
  if (!any)
    return 0;
  if (fdatasync(bc->bitmap_fd) < 0) {
    log_error(COMP, "fdatasync: %s/" NAME_BITMAP ": %m", bc->dir);
    return -1;
  }
  memset(bc->dirty, 0, bc->npages * sizeof *bc->dirty);
  return 0;
}

/* Drops a block from memory whatever its state (its data may be lost),
 * except while it is being evicted: the eviction owns it until its hole
 * is punched (were it absent meanwhile, a store could cache it again just
 * before the punch). */
static void
drop_block(struct blkcache *bc, uint64_t idx)
{
  uint8_t old = atomic_load(&bc->state[idx]);
  while (old != 0 && !(old & ST_EVICTING) &&
         !atomic_compare_exchange_weak(&bc->state[idx], &old, 0))
    ;
  if (!(old & ST_EVICTING))
    account(bc, idx, old, 0);
}

static void
mark_durable(struct blkcache *bc, uint64_t idx)
{
  uint8_t old = atomic_load(&bc->state[idx]);
  uint8_t new;
  do {
    if ((old & ST_PRESENT) == 0 || (old & ST_DURABLE))
      return;
    new = old | ST_DURABLE;
  } while (!atomic_compare_exchange_weak(&bc->state[idx], &old, new));
  account(bc, idx, old, new);
}

/* After a failed fdatasync(data): any page written before it may be lost,
 * so every block stored but not durable is dropped, those still pending
 * included; stores in flight see sync_failures change and write again.
 * *upto then covers the pending operations taken here. */
static void
data_sync_failed(struct blkcache *bc, uint64_t *upto)
{
  struct idx_list *batch = &bc->batch;

  for (size_t i = 0; i < batch->n; i++)
    if (!(batch->v[i] & OP_CLEAR))
      drop_block(bc, batch->v[i]);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&bc->lock);
  atomic_fetch_add(&bc->sync_failures, 1);
  for (size_t i = 0; i < bc->ops.n; i++) {
    uint64_t idx = bc->ops.v[i] & ~OP_CLEAR;
    if (!(bc->ops.v[i] & OP_CLEAR))
      drop_block(bc, idx);
    bit_put(bc, idx, false);
  }
  bc->ops.n = 0;
  *upto = bc->op_seq;
}

/* Commits the taken batch, covering operations up to *upto.  false if
 * anything failed (logged); *bits_ok tells whether the bitmap was written
 * and synced. */
static bool
commit_batch(struct blkcache *bc, uint64_t *upto, bool *bits_ok)
{
  struct idx_list *batch = &bc->batch;
  bool data_ok = true, ok = true, any_set = false;
  bool was_rewrite = bc->rewrite_all;

  for (size_t i = 0; i < batch->n && !any_set; i++)
    any_set = !(batch->v[i] & OP_CLEAR);
  /* The rule: no bit before the fdatasync covering its data returned. */
  if (any_set && fdatasync(bc->data_fd) < 0) {
    log_error(COMP, "fdatasync: %s/" NAME_DATA ": %m", bc->dir);
    data_ok = ok = false;
    data_sync_failed(bc, upto);
  }
  /* In the order the operations happened.  A block dropped since it was
   * stored (a failed rewrite) or being evicted gets no bit. */
  for (size_t i = 0; i < batch->n; i++) {
    uint64_t idx = batch->v[i] & ~OP_CLEAR;
    bool on = !(batch->v[i] & OP_CLEAR) && data_ok &&
              (atomic_load(&bc->state[idx]) & ST_PRESENT);
    bit_put(bc, idx, on);
  }

  *bits_ok = false;
  if (write_bitmap(bc) < 0) {
    bc->rewrite_all = true;
    ok = false;
  } else {
    *bits_ok = true;
    bc->rewrite_all = false;
    if (data_ok)
      for (size_t i = 0; i < batch->n; i++)
        if (!(batch->v[i] & OP_CLEAR))
          mark_durable(bc, batch->v[i]);
    if (was_rewrite)
      for (uint64_t i = 0; i < bc->nblocks; i++)
        if (bc->disk_bits[i / 8] & (1u << (i % 8)))
          mark_durable(bc, i);
    atomic_fetch_add(&bc->commits, 1);
  }
  batch->n = 0;
  return ok;
}

/* Whether to commit now rather than wait for the interval.  Under lock. */
static bool
commit_now(const struct blkcache *bc)
{
  return bc->stop || bc->sync_waiters > 0 || bc->interval_ms == 0 ||
         bc->ops.n >= COMMIT_BATCH_MAX;
}

static void *
committer_main(void *arg)
{
  struct blkcache *bc = arg;

  pthread_mutex_lock(&bc->lock);
  for (;;) {
    while (bc->ops.n == 0 && !bc->stop)
      pthread_cond_wait(&bc->wake, &bc->lock);
    if (bc->ops.n == 0) {
      /* Stopping, nothing left; one last try after a failed bitmap write
       * (bits whose data is durable; no new bits). */
      if (bc->rewrite_all) {
        pthread_mutex_unlock(&bc->lock);
        if (write_bitmap(bc) == 0)
          bc->rewrite_all = false;
        pthread_mutex_lock(&bc->lock);
      }
      break;
    }

    if (!commit_now(bc)) {
      struct timespec deadline;
      clock_gettime(CLOCK_MONOTONIC, &deadline);
      deadline.tv_sec += bc->interval_ms / 1000;
      deadline.tv_nsec += (long)(bc->interval_ms % 1000) * 1000000;
      if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
      }
      while (!commit_now(bc) &&
             pthread_cond_timedwait(&bc->wake, &bc->lock, &deadline) !=
                 ETIMEDOUT)
        ;
    }

    list_swap(&bc->ops, &bc->batch);
    uint64_t upto = bc->op_seq;
    pthread_mutex_unlock(&bc->lock);

    bool bits_ok;
    bool ok = commit_batch(bc, &upto, &bits_ok);

    pthread_mutex_lock(&bc->lock);
    bc->done_seq = upto;
    if (bits_ok)
      bc->bits_seq = upto;
    if (!ok)
      bc->nfailures++;
    pthread_cond_broadcast(&bc->done);
  }
  pthread_mutex_unlock(&bc->lock);
  return NULL;
}

/* ---- Public functions --------------------------------------------------- */

static void
free_cache(struct blkcache *bc)
{
  if (bc->data_fd >= 0)
    close(bc->data_fd);
  if (bc->bitmap_fd >= 0)
    close(bc->bitmap_fd);
  if (bc->dirfd >= 0)
    close(bc->dirfd); /* drops the flock */
  pthread_cond_destroy(&bc->wake);
  pthread_cond_destroy(&bc->done);
  pthread_mutex_destroy(&bc->lock);
  free(bc->ops.v);
  free(bc->batch.v);
  free(bc->disk_bits);
  free(bc->dirty);
  free((void *)bc->state);
  free(bc->dir);
  free(bc);
}

/* Sets up everything but the directory; NULL on error (logged). */
static struct blkcache *
alloc_cache(const char *root, const struct manifest *m, unsigned interval_ms)
{
  struct blkcache *bc = calloc(1, sizeof *bc);
  if (bc == NULL) {
    log_error(COMP, "calloc: %m");
    return NULL;
  }
  bc->dirfd = bc->data_fd = bc->bitmap_fd = -1;
  bc->m = m;
  bc->nblocks = m->nblocks;
  bc->block_size = m->block_size;
  bc->last_len = manifest_block_len(m, m->nblocks - 1);
  bc->interval_ms = interval_ms;
  bc->bits_len = (size_t)((m->nblocks + 7) / 8);
  bc->npages = (bc->bits_len + BITMAP_PAGE - 1) / BITMAP_PAGE;

  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&bc->lock, NULL);
  pthread_cond_init(&bc->wake, &ca);
  pthread_cond_init(&bc->done, NULL);
  pthread_condattr_destroy(&ca);

  if (asprintf(&bc->dir, "%s/%s", root, m->version_hex) < 0) {
    bc->dir = NULL;
    log_error(COMP, "asprintf: %m");
    goto fail;
  }
  bc->state = calloc((size_t)m->nblocks, sizeof *bc->state);
  bc->disk_bits = calloc(bc->bits_len, 1);
  bc->dirty = calloc(bc->npages, sizeof *bc->dirty);
  if (bc->state == NULL || bc->disk_bits == NULL || bc->dirty == NULL) {
    log_error(COMP, "calloc: %m");
    goto fail;
  }
  return bc;

fail:
  free_cache(bc);
  return NULL;
}

/* Releases the space of blocks whose bit is clear but that hold data: a
 * store or an eviction cut short by a crash.  Only space: those blocks are
 * absent either way.  Failures are logged and ignored. */
static void
sweep_unmarked(struct blkcache *bc)
{
  off_t size = (off_t)bc->m->size, pos = 0;
  uint64_t swept = 0;
  /* The bitmap as read must be on disk before a hole is punched under a
   * clear bit (a clear whose sync failed before a restart may not be). */
  if (fdatasync(bc->bitmap_fd) < 0) {
    log_warn(COMP, "fdatasync: %s/" NAME_BITMAP ": %m", bc->dir);
    return;
  }
  while (pos < size) {
    off_t start = lseek(bc->data_fd, pos, SEEK_DATA);
    if (start < 0)
      break; /* ENXIO: no data after pos */
    off_t end = lseek(bc->data_fd, start, SEEK_HOLE);
    if (end < 0 || end > size)
      end = size;
    for (uint64_t i = (uint64_t)start / bc->block_size;
         i < bc->nblocks && i * bc->block_size < (uint64_t)end; i++) {
      if (bc->disk_bits[i / 8] & (1u << (i % 8)))
        continue;
      if (fallocate(bc->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    (off_t)(i * bc->block_size), (off_t)block_len(bc, i)) < 0) {
        log_warn(COMP, "fallocate: %s/" NAME_DATA ": punching block %" PRIu64
                       ": %m", bc->dir, i);
        return;
      }
      swept++;
    }
    pos = end;
  }
  if (swept)
    log_debug(COMP, "%s: released %" PRIu64 " blocks not marked valid",
              bc->dir, swept);
}

/* True if m looks like what manifest_parse/manifest_build produce. */
static bool
manifest_sane(const struct manifest *m)
{
  if (m == NULL || m->size == 0 || m->block_size == 0 ||
      (m->block_size & (m->block_size - 1)) != 0 || m->nblocks == 0 ||
      m->nblocks > MANIFEST_BLOCKS_MAX || m->digests == NULL)
    return false;
  if (m->nblocks != (m->size + m->block_size - 1) / m->block_size)
    return false;
  if (strlen(m->version_hex) != DIGEST_HEX_LEN)
    return false;
  return true;
}

struct blkcache *
blkcache_open(const char *root, const struct manifest *m,
              const void *manifest_bytes, size_t len,
              unsigned commit_interval_ms)
{
  uint8_t d[DIGEST_LEN];

  if (!manifest_sane(m) || manifest_bytes == NULL) {
    errno = EINVAL;
    log_error(COMP, "open: %s: manifest: %m", root);
    return NULL;
  }
  digest_sha256(manifest_bytes, len, d);
  if (memcmp(d, m->version, DIGEST_LEN) != 0) {
    errno = EINVAL;
    log_error(COMP, "open: %s/%s: manifest bytes are not this version: %m",
              root, m->version_hex);
    return NULL;
  }

  struct blkcache *bc = alloc_cache(root, m, commit_interval_ms);
  if (bc == NULL)
    return NULL;

  if (mkdir(root, 0700) < 0 && errno != EEXIST) {
    log_error(COMP, "mkdir: %s: %m", root);
    goto fail;
  }
  if (mkdir(bc->dir, 0700) < 0 && errno != EEXIST) {
    log_error(COMP, "mkdir: %s: %m", bc->dir);
    goto fail;
  }
  bc->dirfd = open(bc->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (bc->dirfd < 0) {
    log_error(COMP, "open: %s: %m", bc->dir);
    goto fail;
  }
  if (flock(bc->dirfd, LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK)
      errno = EBUSY;
    log_error(COMP, "lock: %s: %m", bc->dir);
    goto fail;
  }
  /* Leftovers of an interrupted atomic write. */
  if (remove_entry(bc, NAME_MANIFEST_TMP) < 0 ||
      remove_entry(bc, NAME_BITMAP_TMP) < 0)
    goto fail;

  bool manifest_ok, fresh, error = false;
  const char *why = check_dir(bc, manifest_bytes, len, &manifest_ok, &fresh,
                              &error);
  if (error)
    goto fail;
  if (why) {
    if (fresh)
      log_debug(COMP, "%s: new cache (%s)", bc->dir, why);
    else
      log_warn(COMP, "%s: %s: dropping its blocks", bc->dir, why);
    if (reset(bc) < 0)
      goto fail;
  }
  if (!manifest_ok &&
      write_atomically(bc, NAME_MANIFEST_TMP, NAME_MANIFEST, manifest_bytes,
                       len, len, false) < 0)
    goto fail;

  sweep_unmarked(bc);
  for (uint64_t i = 0; i < bc->nblocks; i++)
    if (bc->disk_bits[i / 8] & (1u << (i % 8))) {
      atomic_store_explicit(&bc->state[i], ST_PRESENT | ST_DURABLE,
                            memory_order_relaxed);
      account(bc, i, 0, ST_PRESENT | ST_DURABLE);
    }

  int r = pthread_create(&bc->committer, NULL, committer_main, bc);
  if (r != 0) {
    errno = r;
    log_error(COMP, "pthread_create: %s: %m", bc->dir);
    goto fail;
  }
  bc->committer_started = true;
  pthread_setname_np(bc->committer, "cache-commit");
  log_debug(COMP, "%s: open, %" PRIu64 " of %" PRIu64 " blocks valid",
            bc->dir, atomic_load(&bc->valid_blocks), bc->nblocks);
  return bc;

fail:
  free_cache(bc);
  return NULL;
}

void
blkcache_close(struct blkcache *bc)
{
  if (bc == NULL)
    return;
  if (bc->committer_started) {
    blkcache_sync(bc); /* a failure is logged; nothing more to do */
    pthread_mutex_lock(&bc->lock);
    bc->stop = true;
    pthread_cond_signal(&bc->wake);
    pthread_mutex_unlock(&bc->lock);
    pthread_join(bc->committer, NULL);
  }
  free_cache(bc);
}

bool
blkcache_has(struct blkcache *bc, uint64_t idx)
{
  return idx < bc->nblocks &&
         (atomic_load_explicit(&bc->state[idx], memory_order_acquire) &
          ST_PRESENT);
}

/* Logs and reports a read request outside the block. */
static int
bad_range(struct blkcache *bc, uint64_t idx, uint32_t off, uint32_t len,
          int *err)
{
  errno = *err = EINVAL;
  log_error_rl(COMP, "read: %s/" NAME_DATA ": block %" PRIu64 " bytes %" PRIu32
                  "+%" PRIu32 ": %m",
            bc->dir, idx, off, len);
  return -1;
}

static int
read_error(struct blkcache *bc, uint64_t idx, int *err)
{
  *err = errno;
  log_error_rl(COMP, "read: %s/" NAME_DATA ": block %" PRIu64 ": %m", bc->dir,
            idx);
  return -1;
}

/* Evicts block idx if it is still in state old (present, unverified). */
static bool
evict(struct blkcache *bc, uint64_t idx, uint8_t old)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&bc->lock);
  if (!atomic_compare_exchange_strong(&bc->state[idx], &old, 0))
    return false;
  account(bc, idx, old, 0);
  atomic_fetch_add(&bc->corrupt_evicted, 1);
  if (list_push(&bc->ops, idx | OP_CLEAR) < 0)
    /* The bit stays on disk; the block is verified again (and evicted
     * again) after the next open. */
    log_error_rl(COMP, "evict: %s: block %" PRIu64 ": %m", bc->dir, idx);
  else {
    bc->op_seq++;
    pthread_cond_signal(&bc->wake);
  }
  return true;
}

/* blkcache_read of a block that is not verified (yet). */
static int __attribute__((noinline))
read_slow(struct blkcache *bc, uint64_t idx, void *buf, uint32_t off,
          uint32_t len, int *err)
{
  uint32_t blen = block_len(bc, idx);
  uint64_t pos = idx * bc->block_size;
  CLEANUP_FREE uint8_t *tmp = NULL;

  for (;;) {
    uint8_t s = atomic_load_explicit(&bc->state[idx], memory_order_acquire);
    if (s & ST_VERIFIED) {
      if (pread_full(bc->data_fd, buf, len, pos + off) < 0)
        return read_error(bc, idx, err);
      return 1;
    }
    if ((s & ST_PRESENT) == 0)
      return 0;

    /* Verify the whole block, in the caller's buffer if it is whole. */
    uint8_t *blk = buf;
    if (off != 0 || len != blen) {
      if (tmp == NULL && (tmp = malloc(blen)) == NULL) {
        *err = errno;
        log_error_rl(COMP, "malloc: %m");
        return -1;
      }
      blk = tmp;
    }
    if (pread_full(bc->data_fd, blk, blen, pos) < 0)
      return read_error(bc, idx, err);

    if (manifest_block_ok(bc->m, idx, blk, blen)) {
      if (!atomic_compare_exchange_strong(&bc->state[idx], &s,
                                          (uint8_t)(s | ST_VERIFIED)))
        continue; /* changed meanwhile (a store): look again */
      if (blk != buf)
        memcpy(buf, blk + off, len);
      return 1;
    }
    if (!evict(bc, idx, s))
      continue;
    log_warn_rl(COMP, "%s: block %" PRIu64 " failed verification: evicted",
             bc->dir, idx);
    return 0;
  }
}

/* One read attempt; blkcache_read checks that no hole was punched
 * meanwhile. */
static inline int
read_once(struct blkcache *bc, uint64_t idx, void *buf, uint32_t off,
          uint32_t len, int *err)
{
  /* The hot path: a verified block is one load and one pread. */
  uint8_t s = atomic_load_explicit(&bc->state[idx], memory_order_acquire);
  if (__builtin_expect((s & ST_VERIFIED) != 0, 1)) {
    uint64_t pos = idx * bc->block_size + off;
    ssize_t r = pread(bc->data_fd, buf, len, (off_t)pos);
    if (__builtin_expect(r == (ssize_t)len, 1))
      return 1;
    if (r >= 0 || errno == EINTR) {
      if (r < 0)
        r = 0;
      if (pread_full(bc->data_fd, (uint8_t *)buf + r, len - (size_t)r,
                     pos + (uint64_t)r) == 0)
        return 1;
    }
    return read_error(bc, idx, err);
  }
  return read_slow(bc, idx, buf, off, len, err);
}

int
blkcache_read(struct blkcache *bc, uint64_t idx, void *buf, uint32_t off,
              uint32_t len, int *err)
{
  if (__builtin_expect(idx >= bc->nblocks, 0))
    return bad_range(bc, idx, off, len, err);
  uint32_t blen = block_len(bc, idx);
  if (__builtin_expect(off > blen || len > blen - off, 0))
    return bad_range(bc, idx, off, len, err);

  /* A seqlock against blkcache_evict: if holes were punched while this
   * read ran, what it read may be a hole; the state tells again. */
  for (;;) {
    uint64_t gen = atomic_load_explicit(&bc->punch_gen, memory_order_acquire);
    if (__builtin_expect(gen & 1, 0)) {
      sched_yield();
      continue;
    }
    int r = read_once(bc, idx, buf, off, len, err);
    atomic_thread_fence(memory_order_acquire);
    if (__builtin_expect(
            atomic_load_explicit(&bc->punch_gen, memory_order_relaxed) == gen,
            1))
      return r;
  }
}

ssize_t
blkcache_read_run(struct blkcache *bc, uint64_t first, uint32_t off,
                  size_t len, void *buf, int *err)
{
  if (first >= bc->nblocks || off >= block_len(bc, first))
    return 0;
  /* The seqlock of blkcache_read: a run read while holes were punched is
   * looked at again. */
  for (;;) {
    uint64_t gen = atomic_load_explicit(&bc->punch_gen, memory_order_acquire);
    if (__builtin_expect(gen & 1, 0)) {
      sched_yield();
      continue;
    }
    size_t n = 0;
    for (uint64_t b = first; n < len && b < bc->nblocks; b++) {
      uint8_t st = atomic_load_explicit(&bc->state[b], memory_order_acquire);
      if ((st & ST_VERIFIED) == 0)
        break;
      n += block_len(bc, b) - (b == first ? off : 0);
    }
    if (n > len)
      n = len;
    if (n == 0)
      return 0;
    if (pread_full(bc->data_fd, buf, n, first * bc->block_size + off) < 0)
      return read_error(bc, first, err);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&bc->punch_gen, memory_order_relaxed) == gen)
      return (ssize_t)n;
  }
}

int
blkcache_store(struct blkcache *bc, uint64_t idx, const void *data)
{
  if (idx >= bc->nblocks) {
    errno = EINVAL;
    log_error_rl(COMP, "store: %s: block %" PRIu64 ": %m", bc->dir, idx);
    return -1;
  }
  uint32_t len = block_len(bc, idx);
  for (int attempt = 0, punched = 0;;) {
    uint8_t s0 = atomic_load(&bc->state[idx]);
    if (s0 & ST_EVICTING) {
      errno = EBUSY; /* being evicted: served, not cached this time */
      return -1;
    }
    if (bc->quota && !(s0 & ST_PRESENT) &&
        atomic_load(&bc->quota->used) + len > atomic_load(&bc->quota->limit)) {
      errno = EDQUOT; /* over the quota: the caller counts it */
      return -1;
    }
    uint64_t failures = atomic_load(&bc->sync_failures);
    uint64_t gen = atomic_load(&bc->punch_gen);
    if (pwrite_full(bc->data_fd, data, len, idx * bc->block_size) < 0) {
      int e = errno;
      /* A full disk is counted and logged (rate-limited) by the caller. */
      if (e != ENOSPC && e != EDQUOT)
        log_error_rl(COMP, "write: %s/" NAME_DATA ": block %" PRIu64 ": %m",
                  bc->dir, idx);
      /* If it was cached, its bytes may now be torn. */
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&bc->lock);
      uint8_t st = atomic_load(&bc->state[idx]);
      if (st != 0 && !(st & ST_EVICTING)) {
        drop_block(bc, idx);
        if (list_push(&bc->ops, idx | OP_CLEAR) == 0)
          bc->op_seq++;
        pthread_cond_signal(&bc->wake);
      }
      errno = e;
      return -1;
    }

    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&bc->lock);
    if (atomic_load(&bc->punch_gen) != gen || (gen & 1)) {
      /* An eviction punched holes while this was written, maybe over
       * it: write again (the block is not pending, so no bit is set). */
      if (++punched < STORE_PUNCH_RETRIES)
        continue;
      errno = EBUSY;
      return -1;
    }
    if (atomic_load(&bc->sync_failures) != failures) {
      /* An fdatasync failed while this was written: the pages may be
       * gone.  Write them again (no bit is set meanwhile: the block is
       * not pending). */
      if (++attempt < 3)
        continue;
      errno = EIO;
      log_error_rl(COMP, "store: %s: block %" PRIu64 ": data sync keeps failing: %m",
                bc->dir, idx);
      return -1;
    }
    uint8_t old = atomic_load(&bc->state[idx]);
    if (old & ST_EVICTING) {
      errno = EBUSY;
      return -1;
    }
    if (list_push(&bc->ops, idx) < 0) {
      log_error_rl(COMP, "store: %s: block %" PRIu64 ": %m", bc->dir, idx);
      return -1; /* not marked: the bytes written are right anyway */
    }
    bc->op_seq++;
    old = atomic_fetch_or_explicit(&bc->state[idx], ST_PRESENT | ST_VERIFIED,
                                   memory_order_release);
    account(bc, idx, old, old | ST_PRESENT | ST_VERIFIED);
    if (bc->ops.n == 1 || bc->ops.n >= COMMIT_BATCH_MAX)
      pthread_cond_signal(&bc->wake);
    return 0;
  }
}

int
blkcache_sync(struct blkcache *bc)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&bc->lock);
  uint64_t target = bc->op_seq, failures = bc->nfailures;
  if (bc->done_seq >= target)
    return 0;
  bc->sync_waiters++;
  pthread_cond_signal(&bc->wake);
  while (bc->done_seq < target)
    pthread_cond_wait(&bc->done, &bc->lock);
  bc->sync_waiters--;
  return bc->nfailures == failures ? 0 : -1;
}

void
blkcache_get_stats(struct blkcache *bc, struct blkcache_stats *st)
{
  st->present_blocks = atomic_load(&bc->present_blocks);
  st->present_bytes = atomic_load(&bc->present_bytes);
  st->valid_blocks = atomic_load(&bc->valid_blocks);
  st->valid_bytes = atomic_load(&bc->valid_bytes);
  st->corrupt_evicted = atomic_load(&bc->corrupt_evicted);
  st->commits = atomic_load(&bc->commits);
  st->evicted_blocks = atomic_load(&bc->evicted_blocks);
  st->evicted_bytes = atomic_load(&bc->evicted_bytes);
}

void
blkcache_set_quota(struct blkcache *bc, struct blkcache_quota *q)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&bc->lock);
  uint64_t held = 0;
  for (uint64_t i = 0; i < bc->nblocks; i++)
    if (atomic_load(&bc->state[i]) & (ST_PRESENT | ST_EVICTING))
      held += block_len(bc, i);
  if (bc->quota)
    atomic_fetch_sub(&bc->quota->used, held);
  bc->quota = q;
  if (q)
    atomic_fetch_add(&q->used, held);
}

bool
blkcache_evictable(struct blkcache *bc, uint64_t idx)
{
  uint8_t s = atomic_load_explicit(&bc->state[idx], memory_order_relaxed);
  return (s & ST_PRESENT) && (s & ST_DURABLE);
}

uint64_t
blkcache_evict(struct blkcache *bc, const uint64_t *idx, size_t n)
{
  CLEANUP_FREE uint64_t *taken = malloc(n * sizeof *taken);
  size_t ntaken = 0;
  if (taken == NULL) {
    log_error(COMP, "evict: %s: %m", bc->dir);
    return 0;
  }

  /* 1. Not readable any more, and the bit clear queued (in order after
   *    any store of the block that came first). */
  pthread_mutex_lock(&bc->lock);
  for (size_t i = 0; i < n; i++) {
    if (idx[i] >= bc->nblocks)
      continue;
    uint8_t s = atomic_load(&bc->state[idx[i]]);
    if (!(s & ST_PRESENT) || (s & ST_EVICTING))
      continue;
    if (list_push(&bc->ops, idx[i] | OP_CLEAR) < 0)
      break;
    bc->op_seq++;
    /* Under lock: stores change states under it too; read_slow's CAS of
     * the verified bit fails and looks again. */
    while (!atomic_compare_exchange_weak(&bc->state[idx[i]], &s, ST_EVICTING))
      ;
    account(bc, idx[i], s, ST_EVICTING);
    taken[ntaken++] = idx[i];
  }
  uint64_t seq = bc->op_seq;
  pthread_cond_signal(&bc->wake);
  pthread_mutex_unlock(&bc->lock);
  if (ntaken == 0)
    return 0;

  /* 2. The clears on disk before any space is released: a commit covered
   *    them and its bitmap write succeeded (blkcache_sync alone is not
   *    enough: a commit that failed before it was called is not seen). */
  blkcache_sync(bc);
  pthread_mutex_lock(&bc->lock);
  bool synced = bc->bits_seq >= seq;
  pthread_mutex_unlock(&bc->lock);

  /* 3. Release the space; readers that overlapped read again. */
  uint64_t freed = 0;
  if (synced) {
    atomic_fetch_add(&bc->punch_gen, 1);
    for (size_t i = 0; i < ntaken; i++) {
      if (fallocate(bc->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    (off_t)(taken[i] * bc->block_size),
                    (off_t)block_len(bc, taken[i])) < 0) {
        log_error(COMP, "fallocate: %s/" NAME_DATA ": punching block %" PRIu64
                        ": %m", bc->dir, taken[i]);
        break;
      }
    }
    atomic_fetch_add(&bc->punch_gen, 1);
  }
  /* If the bitmap could not be written, the blocks stay absent in memory
   * (their bits may still be set on disk over intact data: valid after a
   * restart, which is right). */
  for (size_t i = 0; i < ntaken; i++) {
    uint8_t s = ST_EVICTING;
    if (atomic_compare_exchange_strong(&bc->state[taken[i]], &s, 0))
      account(bc, taken[i], ST_EVICTING, 0);
    freed += block_len(bc, taken[i]);
  }
  atomic_fetch_add(&bc->evicted_blocks, ntaken);
  atomic_fetch_add(&bc->evicted_bytes, freed);
  return freed;
}

/* True for exactly 64 lowercase hex digits (how directories are named). */
static bool
version_hex_valid(const char *s)
{
  size_t i;
  for (i = 0; s[i] && i <= DIGEST_HEX_LEN; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return i == DIGEST_HEX_LEN;
}

int
blkcache_remove(const char *root, const char *version_hex)
{
  static const char *const names[] = {
    NAME_MANIFEST, NAME_BITMAP, NAME_DATA, NAME_MANIFEST_TMP, NAME_BITMAP_TMP,
  };

  if (version_hex == NULL || !version_hex_valid(version_hex)) {
    errno = EINVAL;
    log_error(COMP, "remove: %s: image version is not 64 lowercase hex digits: %m",
              root);
    return -1;
  }
  CLEANUP_FREE char *dir = NULL;
  if (asprintf(&dir, "%s/%s", root, version_hex) < 0) {
    dir = NULL;
    log_error(COMP, "asprintf: %m");
    return -1;
  }
  CLEANUP_CLOSE int dirfd =
      open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dirfd < 0) {
    if (errno == ENOENT)
      return 0;
    log_error(COMP, "open: %s: %m", dir);
    return -1;
  }
  if (flock(dirfd, LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK)
      errno = EBUSY;
    log_error(COMP, "lock: %s: %m", dir);
    return -1;
  }
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (unlinkat(dirfd, names[i], 0) < 0 && errno != ENOENT) {
      log_error(COMP, "unlink: %s/%s: %m", dir, names[i]);
      return -1;
    }
  if (rmdir(dir) < 0) {
    log_error(COMP, "rmdir: %s: %m", dir);
    return -1;
  }
  return 0;
}
