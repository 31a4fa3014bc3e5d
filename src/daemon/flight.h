/* thunder — single flight across identical blocks: one upstream fetch per
 * SHA-256 in flight on the node, whichever version, image or offset
 * misses it (docs/node.md "Reuse across versions and images").
 *
 * The fetcher (fetch.h) already fetches each block of one image once
 * however many readers miss it; this table extends that to blocks of
 * equal digest elsewhere.  A reader about to fetch block idx of a version
 * (the owner key: any pointer, and idx) begins a flight for the block's
 * digest:
 *
 *   no flight of that digest ──────────▶ a new one, *own = true: fetch,
 *                                        then flight_done and flight_put
 *   a flight of that digest, same key ─▶ NULL: fetch (the fetcher joins
 *                                        the reads of one block)
 *   a flight of that digest, other key ▶ that flight: flight_wait, then
 *                                        flight_put, then copy the block
 *                                        from where it was stored (or
 *                                        fetch it if it was not)
 *
 * flight_done (the owner's store, or the owner reader once its fetch
 * ended, delivered or failed: both may call it) takes the flight out of
 * the table and wakes its waiters; it is freed with its last reference.
 * An owner calls flight_done before it waits for any other flight, so
 * no two readers wait for each other.
 *
 * Size: one entry per block being fetched on readers' behalf (bounded by
 * the readers' requests in flight), searched linearly under one mutex: a
 * fetch costs milliseconds, the scan of some hundred entries a few
 * microseconds.
 *
 * Threads: every function is thread-safe.
 */
#ifndef THUNDER_FLIGHT_H
#define THUNDER_FLIGHT_H

#include <stdbool.h>
#include <stdint.h>

struct flights;
struct flight;

/* An empty table, or NULL (logged). */
struct flights *flights_new(void);

/* Frees the table; no flight may be left. */
void flights_free(struct flights *t);

/* See the top.  NULL with *own false also when memory is short (the
 * caller then fetches on its own). */
struct flight *flight_begin(struct flights *t, const uint8_t digest[32],
                            const void *owner, uint64_t idx, bool *own);

/* The flight of digest owned by (owner, idx), if any, is over. */
void flight_done(struct flights *t, const uint8_t digest[32],
                 const void *owner, uint64_t idx);

/* Waits until fl is done. */
void flight_wait(struct flights *t, struct flight *fl);

/* Drops a reference to fl (the owner's, or a waiter's). */
void flight_put(struct flights *t, struct flight *fl);

#endif
