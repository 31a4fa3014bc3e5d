/* thunder — scope-bound cleanup helpers; see cleanup.h. */
#include "cleanup.h"

#include <json-c/json.h>

void
cleanup_free(void *ptr)
{
  free(*(void **)ptr);
}

void
cleanup_close(int *fd)
{
  if (*fd >= 0)
    close(*fd);
}

void
cleanup_json_put(void *obj)
{
  json_object_put(*(struct json_object **)obj);
}

void
cleanup_mutex_unlock(pthread_mutex_t **mutex)
{
  if (pthread_mutex_unlock(*mutex) != 0)
    abort();
}
