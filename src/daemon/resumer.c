/* thunder — resuming the VMs QEMU paused on an I/O error; see resumer.h.
 *
 * The thread owns its libvirt connection (a struct pool): opened when
 * first needed, closed after a libvirt error and opened again on the next
 * round.  The back-off table (name, last resume, wait) is the thread's
 * own; entries idle for a minute are dropped.
 */
#include "resumer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define COMPONENT "resume"
/* A pause within this long of a resume counts as the same episode. */
#define EPISODE_MS 10000
/* The longest wait between two resumes of one VM. */
#define WAIT_MAX_MS 10000
/* Back-off entries idle this long are dropped. */
#define FORGET_MS 60000

struct backoff {
  char *name;
  int64_t last_ms; /* last resume */
  int64_t wait_ms; /* before the next one */
};

struct resumer {
  struct pool_config cfg;
  char *uri, *name, *path;
  unsigned interval_ms;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* CLOCK_MONOTONIC */
  bool stopping;       /* under lock */
  /* The thread's own: */
  struct pool *pool;
  bool warned; /* libvirt unreachable, said once */
  bool policies_done; /* pool_vm_stop_on_error ran */
  struct backoff *bo;
  size_t nbo;
  int64_t now;
};

static int64_t
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct backoff *
backoff_find(struct resumer *r, const char *name)
{
  for (size_t i = 0; i < r->nbo; i++)
    if (strcmp(r->bo[i].name, name) == 0)
      return &r->bo[i];
  return NULL;
}

/* pool_vm_resume_io_paused's filter: resume name now?  A resume allowed
 * is recorded (the caller resumes it at once). */
static bool
allow(const char *name, void *opaque)
{
  struct resumer *r = opaque;
  struct backoff *b = backoff_find(r, name);
  if (b == NULL) {
    struct backoff *v = realloc(r->bo, (r->nbo + 1) * sizeof *v);
    if (v == NULL)
      return true;
    r->bo = v;
    b = &r->bo[r->nbo];
    if ((b->name = strdup(name)) == NULL)
      return true;
    r->nbo++;
    b->last_ms = r->now;
    b->wait_ms = 0;
    return true;
  }
  if (r->now - b->last_ms > EPISODE_MS) {
    b->wait_ms = 0;
  } else {
    if (r->now < b->last_ms + b->wait_ms)
      return false;
    int64_t w = b->wait_ms ? b->wait_ms * 2 : r->interval_ms;
    b->wait_ms = w > WAIT_MAX_MS ? WAIT_MAX_MS : w;
    if (b->wait_ms == WAIT_MAX_MS)
      log_warn(COMPONENT, "VM %s keeps pausing on I/O errors; resuming it"
               " every %d s", name, WAIT_MAX_MS / 1000);
  }
  b->last_ms = r->now;
  return true;
}

static void
backoff_prune(struct resumer *r)
{
  for (size_t i = 0; i < r->nbo;) {
    if (r->now - r->bo[i].last_ms > FORGET_MS) {
      free(r->bo[i].name);
      r->bo[i] = r->bo[--r->nbo];
    } else {
      i++;
    }
  }
}

/* One round: resume what is paused on an I/O error. */
static void
round_once(struct resumer *r)
{
  struct pool_error pe = { 0 };
  if (r->pool == NULL && (r->pool = pool_open(&r->cfg, &pe)) == NULL) {
    if (!r->warned)
      log_warn(COMPONENT, "%s (VMs paused on I/O errors are resumed once"
               " it answers)", pe.msg);
    r->warned = true;
    return;
  }
  if (r->warned)
    log_info(COMPONENT, "libvirt answers again");
  r->warned = false;
  if (!r->policies_done) {
    char **names = NULL;
    int n = pool_vm_stop_on_error(r->pool, &names, &pe);
    for (int i = 0; i < n; i++)
      log_info(COMPONENT, "VM %s: its disk pauses on I/O errors from its"
               " next start (error_policy 'stop' added)", names[i]);
    pool_strv_free(names);
    r->policies_done = n >= 0;
  }
  r->now = now_ms();
  char **names = NULL;
  int n = pool_vm_resume_io_paused(r->pool, allow, r, &names, &pe);
  if (n < 0) {
    log_warn(COMPONENT, "%s", pe.msg);
    pool_close(r->pool);
    r->pool = NULL;
    return;
  }
  for (int i = 0; i < n; i++) {
    struct backoff *b = backoff_find(r, names[i]);
    if (b && b->wait_ms > 0)
      log_debug(COMPONENT, "resumed VM %s again (paused on an I/O error)",
                names[i]);
    else
      log_info(COMPONENT, "resumed VM %s (paused on an I/O error)",
               names[i]);
  }
  pool_strv_free(names);
  backoff_prune(r);
}

static void *
resumer_main(void *arg)
{
  struct resumer *r = arg;
  pthread_mutex_lock(&r->lock);
  while (!r->stopping) {
    pthread_mutex_unlock(&r->lock);
    round_once(r);
    pthread_mutex_lock(&r->lock);
    int64_t next = now_ms() + r->interval_ms;
    struct timespec ts = { .tv_sec = next / 1000,
                           .tv_nsec = (long)(next % 1000) * 1000000 };
    while (!r->stopping &&
           pthread_cond_timedwait(&r->cond, &r->lock, &ts) != ETIMEDOUT)
      ;
  }
  pthread_mutex_unlock(&r->lock);
  return NULL;
}

static void
resumer_free(struct resumer *r)
{
  pool_close(r->pool);
  for (size_t i = 0; i < r->nbo; i++)
    free(r->bo[i].name);
  free(r->bo);
  free(r->uri);
  free(r->name);
  free(r->path);
  pthread_cond_destroy(&r->cond);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

struct resumer *
resumer_start(const struct pool_config *cfg, unsigned interval_ms)
{
  struct resumer *r = calloc(1, sizeof *r);
  if (r == NULL) {
    log_error(COMPONENT, "calloc: %m");
    return NULL;
  }
  pthread_mutex_init(&r->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&r->cond, &ca);
  pthread_condattr_destroy(&ca);
  r->interval_ms = interval_ms ? interval_ms : 1;
  r->uri = cfg->uri ? strdup(cfg->uri) : NULL;
  r->name = cfg->name ? strdup(cfg->name) : NULL;
  r->path = cfg->path ? strdup(cfg->path) : NULL;
  if ((cfg->uri && !r->uri) || (cfg->name && !r->name) ||
      (cfg->path && !r->path)) {
    log_error(COMPONENT, "out of memory");
    resumer_free(r);
    return NULL;
  }
  r->cfg = (struct pool_config){ .uri = r->uri, .name = r->name,
                                 .path = r->path };
  int e = pthread_create(&r->thread, NULL, resumer_main, r);
  if (e != 0) {
    errno = e;
    log_error(COMPONENT, "pthread_create: %m");
    resumer_free(r);
    return NULL;
  }
  pthread_setname_np(r->thread, "resumer");
  return r;
}

void
resumer_stop(struct resumer *r)
{
  if (r == NULL)
    return;
  pthread_mutex_lock(&r->lock);
  r->stopping = true;
  pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->lock);
  pthread_join(r->thread, NULL);
  resumer_free(r);
}
