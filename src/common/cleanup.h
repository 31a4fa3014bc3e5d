/* thunder — scope-bound cleanup helpers (after nbdkit common/utils/cleanup.h).
 *
 * Declare a variable with one of these attributes and it is released when
 * it leaves scope.  Hand ownership over by setting the variable to NULL
 * (or -1 for descriptors) before the scope ends.
 */
#ifndef THUNDER_CLEANUP_H
#define THUNDER_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* Frees *ptr (a pointer to any heap pointer). */
void cleanup_free(void *ptr);
#define CLEANUP_FREE __attribute__((cleanup(cleanup_free)))

/* Closes *fd when it is >= 0. */
void cleanup_close(int *fd);
#define CLEANUP_CLOSE __attribute__((cleanup(cleanup_close)))

/* Drops the reference held in *obj (a struct json_object *). */
void cleanup_json_put(void *obj);
#define CLEANUP_JSON_PUT __attribute__((cleanup(cleanup_json_put)))

/* Unlocks *mutex; used by ACQUIRE_LOCK_FOR_CURRENT_SCOPE. */
void cleanup_mutex_unlock(pthread_mutex_t **mutex);
#define CLEANUP_MUTEX_UNLOCK __attribute__((cleanup(cleanup_mutex_unlock)))

#define THUNDER_CONCAT_(a, b) a##b
#define THUNDER_CONCAT(a, b) THUNDER_CONCAT_(a, b)

/* Locks mutex now and unlocks it when the enclosing scope ends. */
#define ACQUIRE_LOCK_FOR_CURRENT_SCOPE(mutex)                                  \
  CLEANUP_MUTEX_UNLOCK pthread_mutex_t *THUNDER_CONCAT(_lock_, __LINE__) =     \
      (mutex);                                                                 \
  do {                                                                         \
    int _r = pthread_mutex_lock(THUNDER_CONCAT(_lock_, __LINE__));             \
    if (_r != 0)                                                               \
      abort();                                                                 \
  } while (0)

#endif
