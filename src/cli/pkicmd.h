/* thunder — thunderctl's pki commands (pkicmd.c): the fleet's CA and the
 * hosts' certificates, made by src/common/pki.c. */
#ifndef THUNDER_PKICMD_H
#define THUNDER_PKICMD_H

#include "cliutil.h"

/* The "pki" group: init, issue. */
extern const struct command pkicmd_commands[];

#endif
