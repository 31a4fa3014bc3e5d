/* trace — block-level read traces for the benchmarks: load and check a
 * trace file, describe it, generate a synthetic one, and make an image
 * that holds data wherever traces read.
 *
 * A trace is CSV text: the header "t_ms,offset,length", then one row per
 * read in the order it was issued.  t_ms is milliseconds since the first
 * read (a decimal number, never decreasing from row to row); offset and
 * length are bytes (decimal integers; 1 <= length <= TRACE_MAX_LENGTH).
 * See ../shared/traces/README.md for the real traces.
 *
 * Errors are printed once, where they are found, as
 * "PROGRAM: FILE:LINE: what is wrong" (or "PROGRAM: FILE: ..." when no
 * line is concerned); the functions then return -1 or NULL.
 * Nothing here keeps global state: no locking rule.
 */
#ifndef THUNDER_BENCH_TRACE_H
#define THUNDER_BENCH_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The longest read a trace may ask for (the NBD servers' own limit). */
#define TRACE_MAX_LENGTH (32u * 1024 * 1024)

/* The most rows a trace may have (a hostile file cannot make us allocate
 * without bound: 2^26 rows are about 1.6 GB of memory). */
#define TRACE_MAX_READS (1u << 26)

struct trace_read {
  double t_ms;                /* milliseconds since the first read */
  uint64_t offset;
  uint32_t length;
  unsigned line;              /* line in the file, for messages */
};

struct trace {
  char *path;                 /* as given, for messages */
  struct trace_read *reads;
  size_t n;
  uint64_t bytes;             /* sum of the lengths */
  uint64_t max_end;           /* largest offset + length */
  uint32_t max_length;
};

/* Reads and checks the trace in PATH ("-" is stdin).  Returns NULL after
 * printing "FILE:LINE: reason" for the first bad row: a missing or wrong
 * header, a field that is not a plain decimal number, a negative or
 * overflowing offset, a length of 0 or above TRACE_MAX_LENGTH, an offset +
 * length past 2^63 - 1, a t_ms before the previous row's, or no rows. */
struct trace *trace_load(const char *path);

/* Frees T (NULL is fine). */
void trace_free(struct trace *t);

/* Returns 0 if every read of T ends within SIZE bytes; otherwise prints
 * the first read that does not, with its file and line, and returns -1. */
int trace_check_size(const struct trace *t, uint64_t size);

/* The number of distinct bytes T reads (overlapping reads counted once). */
uint64_t trace_distinct_bytes(const struct trace *t);

/* The number of distinct BLOCK-byte blocks T touches (BLOCK > 0). */
uint64_t trace_distinct_blocks(const struct trace *t, uint64_t block);

/* What a synthetic trace looks like. */
struct trace_synth {
  uint64_t size;              /* image size in bytes */
  uint64_t working_set;       /* distinct bytes read, rounded up to blocks */
  uint64_t block;             /* every read is one aligned block of this size */
  double locality;            /* fraction of reads that follow the previous one */
  double gap_ms;              /* t_ms of row i is i * gap_ms */
  uint64_t seed;
};

/* Writes a synthetic trace to OUT: the working set is cut into runs of
 * consecutive blocks (geometric lengths with mean 1 / (1 - locality)),
 * placed at random non-overlapping positions in the image; the runs are
 * read in random order, each from its first block to its last, every
 * block exactly once.  The same parameters and seed give the same bytes.
 * Returns -1 (after a message) for parameters that make no sense. */
int trace_synthesize(const struct trace_synth *s, FILE *out);

/* Creates (or truncates) the image PATH of SIZE bytes, sparse, with
 * pseudo-random bytes (fixed by SEED and the block's index) in every
 * BLOCK-byte block that one of the N traces reads, and holes elsewhere.
 * Every trace must fit in SIZE.  Returns the number of blocks written, or
 * -1 after a message. */
int64_t trace_make_image(const char *path, uint64_t size, uint64_t block,
                         uint64_t seed, struct trace *const *traces, size_t n);

#endif
