/* thunder — thunder-api's HTTP routes (apiserver.c) on the service core
 * (common/httpsvc.h).  Every route that touches the store takes the
 * server's lock. */
#ifndef THUNDER_APISERVER_H
#define THUNDER_APISERVER_H

struct api_config;
struct api_server;
struct converger;

/* Opens the store at cfg->db and serves cfg->listen; cv is kicked when a
 * cluster is created or deleted.  NULL (logged). */
struct api_server *api_server_new(const struct api_config *cfg,
                                  struct converger *cv);
/* The TCP port it listens on. */
unsigned api_server_port(const struct api_server *s);
/* Stops serving (waiting for requests in progress) and frees s. */
void api_server_free(struct api_server *s);

#endif
