/* thunder — thunderd resumes the VMs of its pool that QEMU paused on an
 * I/O error.
 *
 * thunder's VM disks have error_policy='stop' (src/pool/poolxml.c): when
 * a read through the anchor's NBD backing fails — thunderd restarting,
 * upgraded, killed, or a stall that ran out (fetch.h) — QEMU pauses the
 * guest instead of failing its request.  The resumer, running while
 * thunderd serves, resumes those domains; QEMU then retries the failed
 * requests (its NBD client reconnects on the next request).  So a guest
 * sees a pause, never an I/O error.
 *
 * VMs made by an older thunder have no error policy: once libvirt
 * answers, their persistent definitions get it (pool_vm_stop_on_error),
 * effective at their next start.
 *
 * One thread polls libvirt (a paused-domain listing every interval_ms,
 * one RPC) and resumes pool_vm_resume_io_paused's choice.  A VM that
 * pauses again within 10 s of a resume waits longer before the next one
 * (doubling from interval_ms up to 10 s): QEMU's NBD client without a
 * reconnect delay fails the first request after a reconnect starts (it
 * reconnects in the background), so a second resume is normal; one
 * failing for good is resumed every 10 s, with a warning.  libvirt down
 * is retried quietly (one warning).
 */
#ifndef THUNDER_RESUMER_H
#define THUNDER_RESUMER_H

#include "pool.h"

struct resumer;

/* Starts resuming the VMs of pool cfg (copied) every interval_ms.  NULL
 * with a logged error. */
struct resumer *resumer_start(const struct pool_config *cfg,
                              unsigned interval_ms);

/* Stops the thread and frees r (NULL: nothing). */
void resumer_stop(struct resumer *r);

#endif
