/* thunder — image manifests; see manifest.h and docs/manifest.md.
 *
 * Design note.
 *
 * Building.  The image is cut into chunks of HASH_CHUNK bytes, a multiple
 * of every allowed block size, so a block never straddles two chunks.
 * Worker threads (the calling thread is one of them) take chunk numbers
 * from one atomic counter, read each chunk with one large pread into a
 * private buffer and hash its blocks into digests[].  Every digest slot is
 * written by exactly one thread, so there is no lock; pthread_join orders
 * those writes before the caller reads them.  The first failure sets
 * job.failed, is logged once, and stops the other workers at their next
 * chunk.
 *
 * The file.  manifest_serialize writes one exact byte layout so that the
 * same image always gives the same version (the SHA-256 of those bytes):
 *
 *   {\n
 *     "thunder_manifest": 1,\n
 *     "name": "NAME",\n
 *     "file": "FILE",\n
 *     "format": "raw",\n
 *     "size": N,\n
 *     "block_size": N,\n
 *     "hash": "sha256",\n
 *     "blocks": [\n
 *     "<64 hex>",\n          one line of 70 bytes per block (69 for the
 *     "<64 hex>"\n           last), which is what MANIFEST_FILE_MAX allows
 *     ]\n
 *   }\n
 *
 * Parsing.  Input is hostile.  The layers, in order: the size cap; no NUL
 * byte anywhere; json-c with a nesting limit, strict mode and UTF-8
 * validation; nothing but whitespace after the document; a scan of the raw
 * text for what json-c lets through (single-quoted strings, duplicate keys
 * — json-c silently keeps the last one —, keys containing \u0000, which
 * json-c truncates); then every field's presence, type and range.  json-c
 * clamps integers that overflow 64 bits to INT64_MIN or UINT64_MAX, so an
 * overflowing number fails the range check of its field.
 */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "jsonutil.h"
#include "log.h"

#define COMP "manifest"

/* Bytes one worker reads and hashes at a time; a multiple of
 * MANIFEST_BLOCK_SIZE_MAX. */
#define HASH_CHUNK (8u * 1024 * 1024)
_Static_assert(HASH_CHUNK % MANIFEST_BLOCK_SIZE_MAX == 0,
               "a block must not straddle two chunks");

/* Most threads manifest_build starts, whatever the caller asks. */
#define HASH_THREADS_MAX 256

/* json-c nesting limit: the object and the blocks array need 2. */
#define PARSE_DEPTH 4

/* Longest image file name, as for a file name on Linux. */
#define FILE_NAME_MAX 255

/* Bytes of one block line "  \"<hex>\",\n" of the serialized form. */
#define BLOCK_LINE_LEN (2 + 1 + DIGEST_HEX_LEN + 1 + 1 + 1)
_Static_assert(BLOCK_LINE_LEN == 70, "MANIFEST_FILE_MAX assumes 70");

/* The top-level fields, in the order they are written. */
static const char *const fields[] = {
  "thunder_manifest", "name", "file", "format",
  "size", "block_size", "hash", "blocks", NULL,
};

const char *
image_format_name(enum image_format format)
{
  switch (format) {
  case IMAGE_FORMAT_RAW:
    return "raw";
  case IMAGE_FORMAT_QCOW2:
    return "qcow2";
  }
  return "unknown";
}

char *
manifest_export_name(const char *name, char buf[MANIFEST_EXPORT_NAME_MAX])
{
  snprintf(buf, MANIFEST_EXPORT_NAME_MAX, "%.*s%s", MANIFEST_NAME_MAX, name,
           MANIFEST_EXPORT_SUFFIX);
  return buf;
}

bool
manifest_name_valid(const char *name)
{
  if (name == NULL || name[0] == '\0' || name[0] == '.' || name[0] == '-')
    return false;

  size_t len = 0;
  for (const char *p = name; *p; p++, len++) {
    char c = *p;
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok || len >= MANIFEST_NAME_MAX)
      return false;
  }
  return true;
}

/* True if s[0..len) is well-formed UTF-8: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static bool
utf8_valid(const unsigned char *s, size_t len)
{
  size_t i = 0;

  while (i < len) {
    unsigned char c = s[i];
    size_t n;
    uint32_t cp, min;

    if (c < 0x80) {
      i++;
      continue;
    }
    if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (len - i - 1 < n)
      return false;
    for (size_t k = 1; k <= n; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return false;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

/* NULL if s[0..len) may be the manifest's "file": a plain file name in
 * the manifest's directory.  Otherwise what is wrong with it. */
static const char *
file_name_problem(const char *s, size_t len)
{
  if (len == 0)
    return "must not be empty";
  if (len > FILE_NAME_MAX)
    return "longer than 255 bytes";
  if (memchr(s, '\0', len))
    return "contains a NUL byte";
  if (memchr(s, '/', len))
    return "must be a plain file name, without '/'";
  if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
    return "must not be '.' or '..'";
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f)
      return "contains a control character";
  }
  if (!utf8_valid((const unsigned char *)s, len))
    return "not valid UTF-8";
  return NULL;
}

/* Copies s[0..len) into out[outsz] for a log message: printable ASCII
 * kept, anything else '?', cut at outsz - 1 bytes with "..." at the end. */
static const char *
printable(const char *s, size_t len, char *out, size_t outsz)
{
  size_t n = 0;

  for (size_t i = 0; i < len && n + 1 < outsz; i++) {
    unsigned char c = (unsigned char)s[i];
    out[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  out[n] = '\0';
  if (n < len && outsz >= 4)
    memcpy(out + outsz - 4, "...", 4);
  return out;
}

/* Reads up to len bytes at off, retrying short reads and EINTR.  Returns
 * the bytes read (less than len only at end of file) or -1 with errno. */
static ssize_t
pread_full(int fd, void *buf, size_t len, uint64_t off)
{
  size_t done = 0;

  while (done < len) {
    ssize_t r = pread(fd, (char *)buf + done, len - done,
                      (off_t)(off + done));
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0)
      break;
    done += (size_t)r;
  }
  return (ssize_t)done;
}

/* Writes all of buf, retrying short writes and EINTR; -1 with errno. */
static int
write_full(int fd, const void *buf, size_t len)
{
  size_t done = 0;

  while (done < len) {
    ssize_t r = write(fd, (const char *)buf + done, len - done);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    done += (size_t)r;
  }
  return 0;
}

int
manifest_detect_format(int fd, const char *path, enum image_format *out)
{
  unsigned char hdr[8];

  ssize_t r = pread_full(fd, hdr, sizeof hdr, 0);
  if (r < 0) {
    log_error(COMP, "read: %s: %m", path);
    return -1;
  }
  *out = IMAGE_FORMAT_RAW;
  if ((size_t)r < sizeof hdr || memcmp(hdr, "QFI\xfb", 4) != 0)
    return 0;
  uint32_t version = (uint32_t)hdr[4] << 24 | (uint32_t)hdr[5] << 16 |
                     (uint32_t)hdr[6] << 8 | (uint32_t)hdr[7];
  if (version == 2 || version == 3)
    *out = IMAGE_FORMAT_QCOW2;
  return 0;
}

/* The number of blocks of an image, ceil(size / block_size), without
 * overflow. */
static uint64_t
blocks_of(uint64_t size, uint32_t block_size)
{
  return size / block_size + (size % block_size != 0);
}

static bool
block_size_valid(uint64_t bs)
{
  return bs >= MANIFEST_BLOCK_SIZE_MIN && bs <= MANIFEST_BLOCK_SIZE_MAX &&
         (bs & (bs - 1)) == 0;
}

uint32_t
manifest_block_len(const struct manifest *m, uint64_t idx)
{
  if (idx >= m->nblocks)
    return 0;
  uint64_t start = idx * m->block_size;
  uint64_t left = m->size - start;
  return left < m->block_size ? (uint32_t)left : m->block_size;
}

bool
manifest_block_ok(const struct manifest *m, uint64_t idx, const void *data,
                  size_t len)
{
  uint8_t d[DIGEST_LEN];

  if (idx >= m->nblocks || len != manifest_block_len(m, idx))
    return false;
  digest_sha256(data, len, d);
  return memcmp(d, m->digests[idx], DIGEST_LEN) == 0;
}

void
manifest_free(struct manifest *m)
{
  if (m == NULL)
    return;
  free(m->name);
  free(m->file);
  free(m->digests);
  free(m);
}

/* ---- Building ---------------------------------------------------------- */

/* Shared by the workers of one manifest_build. */
struct hash_job {
  int fd;
  const char *path;
  uint64_t size;
  uint32_t block_size;
  uint64_t nchunks;
  uint8_t (*digests)[DIGEST_LEN];
  _Atomic uint64_t next_chunk;
  atomic_bool failed;
};

/* Marks the job failed; true for the first caller only, who logs. */
static bool
hash_job_fail(struct hash_job *job)
{
  return !atomic_exchange(&job->failed, true);
}

/* A worker: hashes chunks until none are left or some worker failed. */
static void *
hash_worker(void *arg)
{
  struct hash_job *job = arg;
  size_t buf_len = job->size < HASH_CHUNK ? (size_t)job->size : HASH_CHUNK;
  CLEANUP_FREE void *buf = NULL;

  int r = posix_memalign(&buf, 4096, buf_len);
  if (r != 0) {
    buf = NULL;
    errno = r;
    if (hash_job_fail(job))
      log_error(COMP, "malloc: hash buffer for %s: %m", job->path);
    return NULL;
  }

  while (!atomic_load(&job->failed)) {
    uint64_t chunk = atomic_fetch_add(&job->next_chunk, 1);
    if (chunk >= job->nchunks)
      break;

    uint64_t off = chunk * HASH_CHUNK;
    size_t len = job->size - off < HASH_CHUNK ? (size_t)(job->size - off)
                                              : HASH_CHUNK;
    ssize_t got = pread_full(job->fd, buf, len, off);
    if (got < 0) {
      if (hash_job_fail(job))
        log_error(COMP, "read: %s: %m", job->path);
      break;
    }
    if ((size_t)got < len) {
      if (hash_job_fail(job))
        log_error(COMP, "read: %s: file shrank while hashing (end at offset %" PRIu64 ", expected %" PRIu64 " bytes)",
                  job->path, off + (uint64_t)got, job->size);
      break;
    }

    uint64_t idx = off / job->block_size;
    for (size_t pos = 0; pos < len; pos += job->block_size, idx++) {
      size_t n = len - pos < job->block_size ? len - pos : job->block_size;
      digest_sha256((const char *)buf + pos, n, job->digests[idx]);
    }
  }
  return NULL;
}

/* Runs hash_worker on up to threads threads, this one included.  A
 * thread that cannot be started is not an error: fewer do the work. */
static int
hash_blocks(struct hash_job *job, unsigned threads)
{
  pthread_t tids[HASH_THREADS_MAX];
  unsigned started = 0;

  if (threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (unsigned)(n < HASH_THREADS_MAX ? n : HASH_THREADS_MAX)
                    : 1;
  }
  if (threads > HASH_THREADS_MAX)
    threads = HASH_THREADS_MAX;
  if (threads > job->nchunks)
    threads = (unsigned)job->nchunks;

  for (unsigned i = 1; i < threads; i++) {
    int r = pthread_create(&tids[started], NULL, hash_worker, job);
    if (r != 0) {
      errno = r;
      log_warn(COMP, "pthread_create: hash worker %u of %u: %m; continuing with fewer", i, threads);
      break;
    }
    started++;
  }
  hash_worker(job);
  for (unsigned i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  return atomic_load(&job->failed) ? -1 : 0;
}

/* The size of an open regular file or block device; -1 with a logged
 * error for anything else. */
static int
image_size(int fd, const char *path, uint64_t *size)
{
  struct stat st;

  if (fstat(fd, &st) < 0) {
    log_error(COMP, "fstat: %s: %m", path);
    return -1;
  }
  if (S_ISREG(st.st_mode)) {
    *size = (uint64_t)st.st_size;
  } else if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, size) < 0) {
      log_error(COMP, "ioctl BLKGETSIZE64: %s: %m", path);
      return -1;
    }
  } else {
    log_error(COMP, "%s: %s, not a regular file or block device", path,
              S_ISDIR(st.st_mode) ? "is a directory" : "is a special file");
    return -1;
  }
  if (*size == 0) {
    log_error(COMP, "%s: image is empty", path);
    return -1;
  }
  return 0;
}

/* The file name part of path (after the last '/'). */
static const char *
base_name(const char *path)
{
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

struct manifest *
manifest_build(const char *name, const char *path, uint32_t block_size,
               unsigned threads)
{
  if (!manifest_name_valid(name)) {
    char shown[80];
    log_error(COMP, "image name '%s': must be 1 to %d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
              name ? printable(name, strlen(name), shown, sizeof shown) : "",
              MANIFEST_NAME_MAX);
    return NULL;
  }
  if (!block_size_valid(block_size)) {
    log_error(COMP, "block size %" PRIu32 ": must be a power of two from %u to %u",
              block_size, MANIFEST_BLOCK_SIZE_MIN, MANIFEST_BLOCK_SIZE_MAX);
    return NULL;
  }

  /* O_NONBLOCK: opening a FIFO must not hang; image_size rejects it. */
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    log_error(COMP, "open: %s: %m", path);
    return NULL;
  }
  uint64_t size;
  if (image_size(fd, path, &size) < 0)
    return NULL;
  if (size > (uint64_t)MANIFEST_BLOCKS_MAX * block_size) {
    log_error(COMP, "%s: image of %" PRIu64 " bytes has more than %u blocks of %" PRIu32 " bytes; use a larger block size",
              path, size, MANIFEST_BLOCKS_MAX, block_size);
    return NULL;
  }
  const char *file = base_name(path);
  const char *why = file_name_problem(file, strlen(file));
  if (why) {
    char shown[80];
    log_error(COMP, "%s: file name '%s': %s", path,
              printable(file, strlen(file), shown, sizeof shown), why);
    return NULL;
  }

  enum image_format format;
  if (manifest_detect_format(fd, path, &format) < 0)
    return NULL;

  /* Advice only: a failure changes nothing but speed. */
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

  struct manifest *m = calloc(1, sizeof *m);
  if (m == NULL) {
    log_error(COMP, "calloc: manifest of %s: %m", path);
    return NULL;
  }
  m->size = size;
  m->format = format;
  m->block_size = block_size;
  m->nblocks = blocks_of(size, block_size);
  m->name = strdup(name);
  m->file = strdup(file);
  m->digests = calloc(m->nblocks, DIGEST_LEN);
  if (m->name == NULL || m->file == NULL || m->digests == NULL) {
    log_error(COMP, "malloc: manifest of %s: %m", path);
    manifest_free(m);
    return NULL;
  }

  struct hash_job job = {
    .fd = fd,
    .path = path,
    .size = size,
    .block_size = block_size,
    .nchunks = size / HASH_CHUNK + (size % HASH_CHUNK != 0),
    .digests = m->digests,
  };
  atomic_init(&job.next_chunk, 0);
  atomic_init(&job.failed, false);
  if (hash_blocks(&job, threads) < 0) {
    manifest_free(m);
    return NULL;
  }
  log_debug(COMP, "%s: %" PRIu64 " blocks of %" PRIu32 " bytes hashed", path,
            m->nblocks, block_size);
  return m;
}

/* ---- Serializing ------------------------------------------------------- */

/* Appends s[0..len) to out as the body of a JSON string (no quotes):
 * '"' and '\\' escaped, control characters as \u00XX.  out must have
 * room for 6 * len bytes.  Returns the bytes written. */
static size_t
json_escape(const char *s, size_t len, char *out)
{
  static const char digits[] = "0123456789abcdef";
  size_t n = 0;

  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      memcpy(out + n, "\\u00", 4);
      out[n + 4] = digits[c >> 4];
      out[n + 5] = digits[c & 0xf];
      n += 6;
    } else {
      out[n++] = (char)c;
    }
  }
  return n;
}

char *
manifest_serialize(struct manifest *m, size_t *len)
{
  const char *name = m->name ? m->name : "";
  const char *file = m->file ? m->file : "";

  /* Refuse what manifest_parse would refuse, so a written manifest is
   * always readable; this also bounds the buffer size below. */
  if (!manifest_name_valid(name) ||
      file_name_problem(file, strlen(file)) != NULL ||
      !block_size_valid(m->block_size) || m->size == 0 ||
      m->size > (uint64_t)MANIFEST_BLOCKS_MAX * m->block_size ||
      m->nblocks != blocks_of(m->size, m->block_size) || m->digests == NULL ||
      (m->format != IMAGE_FORMAT_RAW && m->format != IMAGE_FORMAT_QCOW2)) {
    errno = EINVAL;
    log_error(COMP, "serialize: manifest of image '%s': %m", name);
    return NULL;
  }

  size_t name_len = strlen(name), file_len = strlen(file);
  char name_esc[6 * MANIFEST_NAME_MAX + 1], file_esc[6 * FILE_NAME_MAX + 1];
  name_esc[json_escape(name, name_len, name_esc)] = '\0';
  file_esc[json_escape(file, file_len, file_esc)] = '\0';

  CLEANUP_FREE char *head = NULL;
  int head_len = asprintf(&head,
                          "{\n"
                          "  \"thunder_manifest\": %d,\n"
                          "  \"name\": \"%s\",\n"
                          "  \"file\": \"%s\",\n"
                          "  \"format\": \"%s\",\n"
                          "  \"size\": %" PRIu64 ",\n"
                          "  \"block_size\": %" PRIu32 ",\n"
                          "  \"hash\": \"sha256\",\n"
                          "  \"blocks\": [\n",
                          MANIFEST_FORMAT_VERSION, name_esc, file_esc,
                          image_format_name(m->format), m->size,
                          m->block_size);
  if (head_len < 0) {
    head = NULL;
    log_error(COMP, "asprintf: manifest of image '%s': %m", name);
    return NULL;
  }

  static const char tail[] = "  ]\n}\n";
  /* nblocks <= MANIFEST_BLOCKS_MAX, so this cannot overflow. */
  size_t total = (size_t)head_len + (size_t)m->nblocks * BLOCK_LINE_LEN - 1 +
                 (sizeof tail - 1);
  char *buf = malloc(total + 1);
  if (buf == NULL) {
    log_error(COMP, "malloc: manifest of image '%s': %m", name);
    return NULL;
  }

  char *p = buf;
  memcpy(p, head, (size_t)head_len);
  p += head_len;
  for (uint64_t i = 0; i < m->nblocks; i++) {
    memcpy(p, "  \"", 3);
    digest_to_hex(m->digests[i], p + 3);
    p += 3 + DIGEST_HEX_LEN;
    *p++ = '"';
    if (i + 1 < m->nblocks)
      *p++ = ',';
    *p++ = '\n';
  }
  memcpy(p, tail, sizeof tail - 1);
  p += sizeof tail - 1;
  *p = '\0';

  *len = (size_t)(p - buf);
  digest_sha256(buf, *len, m->version);
  digest_to_hex(m->version, m->version_hex);
  return buf;
}

/* Splits path into its directory (newly allocated, "." if none) and its
 * last component.  NULL with a logged error. */
static char *
dir_of(const char *path, const char **base)
{
  const char *slash = strrchr(path, '/');
  char *dir;

  if (slash == NULL)
    dir = strdup(".");
  else if (slash == path)
    dir = strdup("/");
  else
    dir = strndup(path, (size_t)(slash - path));
  if (dir == NULL)
    log_error(COMP, "malloc: directory of %s: %m", path);
  *base = slash ? slash + 1 : path;
  return dir;
}

/* Makes the entries of directory dir durable (after a rename). */
static int
fsync_dir(const char *dir)
{
  CLEANUP_CLOSE int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    log_error(COMP, "open: %s: %m", dir);
    return -1;
  }
  if (fsync(dfd) < 0) {
    log_error(COMP, "fsync: %s: %m", dir);
    return -1;
  }
  return 0;
}

/* Writes buf to a new temporary file beside path, makes it durable and
 * renames it to path, then makes the rename durable.  On a failure before
 * the rename the temporary file is removed and path is untouched; if only
 * the directory fsync fails, path holds the complete new manifest. */
static int
write_atomic(const char *path, const char *buf, size_t len)
{
  const char *base;
  CLEANUP_FREE char *dir = dir_of(path, &base);
  if (dir == NULL)
    return -1;
  if (*base == '\0') {
    errno = EISDIR;
    log_error(COMP, "write: %s: %m", path);
    return -1;
  }

  CLEANUP_FREE char *tmp = NULL;
  if (asprintf(&tmp, "%s/.%s.XXXXXX", dir, base) < 0) {
    tmp = NULL;
    log_error(COMP, "asprintf: temporary name for %s: %m", path);
    return -1;
  }
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    log_error(COMP, "mkostemp: %s: %m", tmp);
    return -1;
  }

  const char *op = NULL;
  int err = 0;
  /* mkostemp makes the file 0600; manifests are public. */
  if (fchmod(fd, 0644) < 0)
    op = "fchmod";
  else if (write_full(fd, buf, len) < 0)
    op = "write";
  else if (fsync(fd) < 0)
    op = "fsync";
  if (op != NULL)
    err = errno;
  if (close(fd) < 0 && op == NULL) {
    op = "close";
    err = errno;
  }
  if (op == NULL && rename(tmp, path) < 0) {
    op = "rename";
    err = errno;
  }
  if (op != NULL) {
    errno = err;
    log_error(COMP, "%s: %s: %m", op, tmp);
    unlink(tmp);
    return -1;
  }
  return fsync_dir(dir);
}

int
manifest_write(struct manifest *m, const char *path)
{
  size_t len;
  CLEANUP_FREE char *buf = manifest_serialize(m, &len);
  if (buf == NULL)
    return -1;
  return write_atomic(path, buf, len);
}

/* ---- Parsing ----------------------------------------------------------- */

/* Finds the required field and checks its type; NULL with a logged
 * error.  The object stays owned by root. */
static struct json_object *
get_field(struct json_object *root, const char *origin, const char *field,
          enum json_type type)
{
  struct json_object *v;

  if (!json_object_object_get_ex(root, field, &v)) {
    log_error(COMP, "%s: field '%s': missing", origin, field);
    return NULL;
  }
  if (!json_object_is_type(v, type)) {
    log_error(COMP, "%s: field '%s': must be of type %s, not %s", origin,
              field, type == json_type_int ? "integer" : json_type_to_name(type),
              json_type_to_name(json_object_get_type(v)));
    return NULL;
  }
  return v;
}

/* Reads an integer field within [min, max].  Negative numbers and numbers
 * beyond 64 bits (clamped by json-c) fail the range check. */
static int
get_uint(struct json_object *root, const char *origin, const char *field,
         uint64_t min, uint64_t max, uint64_t *out)
{
  struct json_object *v = get_field(root, origin, field, json_type_int);
  if (v == NULL)
    return -1;
  int64_t s = json_object_get_int64(v);
  uint64_t u = json_object_get_uint64(v);
  if (s < 0 || u < min || u > max) {
    if (s < 0)
      log_error(COMP, "%s: field '%s': %" PRId64 " is out of range %" PRIu64 "..%" PRIu64,
                origin, field, s, min, max);
    else
      log_error(COMP, "%s: field '%s': %" PRIu64 " is out of range %" PRIu64 "..%" PRIu64,
                origin, field, u, min, max);
    return -1;
  }
  *out = u;
  return 0;
}

/* Reads a string field; *len is its length, which may exceed strlen if
 * it holds a \u0000. */
static const char *
get_string(struct json_object *root, const char *origin, const char *field,
           size_t *len)
{
  struct json_object *v = get_field(root, origin, field, json_type_string);
  if (v == NULL)
    return NULL;
  *len = (size_t)json_object_get_string_len(v);
  return json_object_get_string(v);
}

static bool
is_lower_hex(const char *s, size_t len)
{
  if (len != DIGEST_HEX_LEN)
    return false;
  for (size_t i = 0; i < len; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return true;
}

/* Checks the fields of a parsed document and fills m. */
static int
parse_fields(struct json_object *root, const char *origin,
             struct manifest *m)
{
  size_t len;
  const char *s;
  char shown[80];

  struct json_object *fv = get_field(root, origin, "thunder_manifest",
                                     json_type_int);
  if (fv == NULL)
    return -1;
  if (json_object_get_int64(fv) != MANIFEST_FORMAT_VERSION) {
    log_error(COMP, "%s: field 'thunder_manifest': unsupported manifest format version %" PRId64 ", this program reads version %d",
              origin, json_object_get_int64(fv), MANIFEST_FORMAT_VERSION);
    return -1;
  }

  s = get_string(root, origin, "name", &len);
  if (s == NULL)
    return -1;
  if (strlen(s) != len || !manifest_name_valid(s)) {
    log_error(COMP, "%s: field 'name': '%s' is not a valid image name (1 to %d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-')",
              origin, printable(s, len, shown, sizeof shown),
              MANIFEST_NAME_MAX);
    return -1;
  }
  m->name = strdup(s);
  if (m->name == NULL) {
    log_error(COMP, "%s: strdup: name: %m", origin);
    return -1;
  }

  s = get_string(root, origin, "file", &len);
  if (s == NULL)
    return -1;
  const char *why = file_name_problem(s, len);
  if (why) {
    log_error(COMP, "%s: field 'file': '%s': %s", origin,
              printable(s, len, shown, sizeof shown), why);
    return -1;
  }
  m->file = strdup(s);
  if (m->file == NULL) {
    log_error(COMP, "%s: strdup: file: %m", origin);
    return -1;
  }

  s = get_string(root, origin, "format", &len);
  if (s == NULL)
    return -1;
  if (len == 3 && strcmp(s, "raw") == 0) {
    m->format = IMAGE_FORMAT_RAW;
  } else if (len == 5 && strcmp(s, "qcow2") == 0) {
    m->format = IMAGE_FORMAT_QCOW2;
  } else {
    log_error(COMP, "%s: field 'format': '%s' is not \"raw\" or \"qcow2\"",
              origin, printable(s, len, shown, sizeof shown));
    return -1;
  }

  s = get_string(root, origin, "hash", &len);
  if (s == NULL)
    return -1;
  if (len != 6 || strcmp(s, "sha256") != 0) {
    log_error(COMP, "%s: field 'hash': '%s' is not \"sha256\"", origin,
              printable(s, len, shown, sizeof shown));
    return -1;
  }

  struct json_object *bs = get_field(root, origin, "block_size", json_type_int);
  if (bs == NULL)
    return -1;
  int64_t bs_s = json_object_get_int64(bs);
  uint64_t bs_u = json_object_get_uint64(bs);
  if (bs_s < 0 || !block_size_valid(bs_u)) {
    log_error(COMP, "%s: field 'block_size': %s%" PRIu64 " is not a power of two from %u to %u",
              origin, bs_s < 0 ? "-" : "",
              bs_s < 0 ? (uint64_t)0 - (uint64_t)bs_s : bs_u,
              MANIFEST_BLOCK_SIZE_MIN, MANIFEST_BLOCK_SIZE_MAX);
    return -1;
  }
  m->block_size = (uint32_t)bs_u;

  if (get_uint(root, origin, "size", 1,
               (uint64_t)MANIFEST_BLOCKS_MAX * m->block_size, &m->size) < 0)
    return -1;
  m->nblocks = blocks_of(m->size, m->block_size);

  struct json_object *blocks = get_field(root, origin, "blocks",
                                         json_type_array);
  if (blocks == NULL)
    return -1;
  size_t n = json_object_array_length(blocks);
  if (n != m->nblocks) {
    log_error(COMP, "%s: field 'blocks': %zu digests, but %" PRIu64 " bytes in blocks of %" PRIu32 " make %" PRIu64,
              origin, n, m->size, m->block_size, m->nblocks);
    return -1;
  }
  m->digests = calloc(m->nblocks, DIGEST_LEN);
  if (m->digests == NULL) {
    log_error(COMP, "%s: calloc: %" PRIu64 " digests: %m", origin, m->nblocks);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    struct json_object *d = json_object_array_get_idx(blocks, i);
    if (!json_object_is_type(d, json_type_string) ||
        !is_lower_hex(json_object_get_string(d),
                      (size_t)json_object_get_string_len(d)) ||
        digest_from_hex(json_object_get_string(d), m->digests[i]) < 0) {
      log_error(COMP, "%s: field 'blocks': item %zu: must be a string of %d lowercase hex digits",
                origin, i, DIGEST_HEX_LEN);
      return -1;
    }
  }
  return 0;
}

struct manifest *
manifest_parse(const char *buf, size_t len, const char *origin)
{
  if (origin == NULL)
    origin = "manifest";
  if (len > MANIFEST_FILE_MAX) {
    log_error(COMP, "%s: too large: %zu bytes, at most %zu", origin, len,
              MANIFEST_FILE_MAX);
    return NULL;
  }
  /* Strict JSON, one object, no key twice (jsonutil), only known keys. */
  char err[1024];
  CLEANUP_JSON_PUT struct json_object *root =
      jsonutil_parse(buf, len, PARSE_DEPTH, JSONUTIL_OBJECT, origin, err,
                     sizeof err);
  if (root == NULL ||
      jsonutil_known_keys(root, "", fields, NULL, err, sizeof err) < 0) {
    if (root != NULL)
      log_error(COMP, "%s: %s", origin, err);
    else
      log_error(COMP, "%s", err);
    return NULL;
  }

  struct manifest *m = calloc(1, sizeof *m);
  if (m == NULL) {
    log_error(COMP, "%s: calloc: manifest: %m", origin);
    return NULL;
  }
  if (parse_fields(root, origin, m) < 0) {
    manifest_free(m);
    return NULL;
  }
  digest_sha256(buf, len, m->version);
  digest_to_hex(m->version, m->version_hex);
  return m;
}

struct manifest *
manifest_load(const char *path)
{
  return manifest_load_bytes(path, NULL, NULL);
}

struct manifest *
manifest_load_bytes(const char *path, char **bytes, size_t *bytes_len)
{
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    log_error(COMP, "open: %s: %m", path);
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    log_error(COMP, "fstat: %s: %m", path);
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    log_error(COMP, "%s: not a regular file", path);
    return NULL;
  }
  if ((uint64_t)st.st_size > MANIFEST_FILE_MAX) {
    log_error(COMP, "%s: too large: %" PRIu64 " bytes, at most %zu", path,
              (uint64_t)st.st_size, MANIFEST_FILE_MAX);
    return NULL;
  }

  /* Read to end of file, not just st_size bytes: the file may change
   * under us; one byte past the cap tells a file that grew too large. */
  size_t cap = (size_t)st.st_size + 1, len = 0;
  CLEANUP_FREE char *buf = malloc(cap);
  if (buf == NULL) {
    log_error(COMP, "malloc: %s: %m", path);
    return NULL;
  }
  for (;;) {
    if (len == cap) {
      if (cap > MANIFEST_FILE_MAX) {
        log_error(COMP, "%s: too large: more than %zu bytes", path,
                  MANIFEST_FILE_MAX);
        return NULL;
      }
      size_t ncap = cap * 2 > MANIFEST_FILE_MAX + 1 ? MANIFEST_FILE_MAX + 1
                                                    : cap * 2;
      char *nbuf = realloc(buf, ncap);
      if (nbuf == NULL) {
        log_error(COMP, "realloc: %s: %m", path);
        return NULL;
      }
      buf = nbuf;
      cap = ncap;
    }
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      log_error(COMP, "read: %s: %m", path);
      return NULL;
    }
    if (r == 0)
      break;
    len += (size_t)r;
  }
  struct manifest *m = manifest_parse(buf, len, path);
  if (m && bytes) {
    *bytes = buf;
    *bytes_len = len;
    buf = NULL;
  }
  return m;
}
