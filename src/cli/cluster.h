/* thunder — thunderctl's commands on thunder-api (cluster.c): cluster
 * create|show|tree|list|delete and api node list, api image
 * register|list, as the tables thunderctl.c's top table points to. */
#ifndef THUNDER_CLUSTER_H
#define THUNDER_CLUSTER_H

#include "cliutil.h"

/* The "cluster" group and the "api" group (NULL-name terminated). */
extern const struct command cluster_commands[];
extern const struct command api_commands[];

#endif
