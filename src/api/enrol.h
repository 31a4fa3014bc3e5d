/* thunder — per-node enrolment tokens (docs/security.md "Node identity").
 *
 * With TLS off a node has no certificate to prove its name; instead the
 * operator enrols the name (POST /v1/nodes/NAME/enrolment) and hands the
 * node the token shown once.  A token is "NAME:" and 64 hex digits (32
 * bytes of getrandom): the name in front lets thunder-api say whose token
 * a misused one is without scanning every enrolment; only the hex part is
 * secret.
 *
 * Stored: a random 16-byte salt and SHA-256(salt ‖ token) (nettle).  Why
 * a salt and not an HMAC with a server key: a key would be one more
 * secret for thunder-api to keep, back up and rotate beside its database,
 * and it buys nothing here — the tokens carry 256 random bits, so nobody
 * brute-forces a hash, and the salt keeps equal tokens from having equal
 * rows.  The lookup is by the node name the request speaks for, so no
 * deterministic index of tokens is needed.  Hashes are compared in
 * constant time (nettle's memeql_sec).
 *
 * enrol_decide is the whole rule for a register or heartbeat, pure (no
 * HTTP, no store): the route gathers what it needs and maps the verdict.
 */
#ifndef THUNDER_ENROL_H
#define THUNDER_ENROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* "NAME:" + 64 hex digits + NUL, NAME at most 64 characters. */
#define ENROL_TOKEN_MAX (64 + 1 + 64 + 1)
#define ENROL_NAME_MAX 64

/* A node's enrolment as stored. */
struct enrol_record {
  uint8_t salt[STORE_SALT_LEN];
  uint8_t hash[STORE_HASH_LEN];
};

/* Makes a new token for node name into token (ENROL_TOKEN_MAX bytes) and
 * its record.  -1 with errno set (getrandom failed, EINVAL: a name that
 * is not a node name). */
int enrol_token_new(const char *name, char token[ENROL_TOKEN_MAX],
                    struct enrol_record *rec);

/* Whether token is the one rec was made from (constant time in the
 * token's content). */
bool enrol_token_matches(const char *token, const struct enrol_record *rec);

/* The node name in front of an enrolment token into name
 * (ENROL_NAME_MAX + 1 bytes); false if token does not have the form. */
bool enrol_token_owner(const char *token, char name[ENROL_NAME_MAX + 1]);

enum enrol_verdict {
  ENROL_OK,         /* the request may speak for the node */
  ENROL_FORBIDDEN,  /* 403: a known caller, not for this node */
  ENROL_BAD_TOKEN,  /* 401: not a token thunder-api knows */
};

/* What a register or heartbeat presents. */
struct enrol_ask {
  const char *name;     /* the node it speaks for */
  const char *bearer;   /* the bearer token (NULL: none) */
  bool fleet;           /* bearer is the operator's or the fleet node token */
  bool certified;       /* a verified client certificate names this node */
  bool require;         /* thunder-api --require-enrolment */
  const struct enrol_record *mine;   /* name's enrolment; NULL: none */
  const char *owner;    /* enrol_token_owner of bearer; NULL: not the form */
  const struct enrol_record *owners; /* owner's enrolment when owner is
                                        not name; NULL: none */
};

/* The rule (docs/security.md):
 *   an enrolled name is accepted only with its current token — never the
 *   fleet or operator token, never a rotated or revoked one;
 *   a name not enrolled is accepted with the fleet (or operator) token,
 *   unless require is set and no certificate names the node;
 *   another node's enrolment token is refused, naming its node.
 * A refusal's reason goes to msg (one sentence). */
enum enrol_verdict enrol_decide(const struct enrol_ask *a, char *msg,
                                size_t msglen);

#endif
