/* thunder — per-node enrolment tokens; see enrol.h. */
#include "enrol.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <nettle/memops.h>
#include <nettle/sha2.h>

#include "validate.h"

#define SECRET_LEN 32

/* Fills buf with n bytes of getrandom; -1 with errno. */
static int
random_bytes(uint8_t *buf, size_t n)
{
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(buf + got, n - got, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -1;
    got += (size_t)r;
  }
  return 0;
}

static void
hash_token(const char *token, const uint8_t salt[STORE_SALT_LEN],
           uint8_t hash[STORE_HASH_LEN])
{
  struct sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, STORE_SALT_LEN, salt);
  sha256_update(&c, strlen(token), (const uint8_t *)token);
  sha256_digest(&c, SHA256_DIGEST_SIZE, hash);
}

int
enrol_token_new(const char *name, char token[ENROL_TOKEN_MAX],
                struct enrol_record *rec)
{
  if (!validate_node_name(name) || strlen(name) > ENROL_NAME_MAX) {
    errno = EINVAL;
    return -1;
  }
  uint8_t secret[SECRET_LEN];
  if (random_bytes(secret, sizeof secret) == -1 ||
      random_bytes(rec->salt, sizeof rec->salt) == -1)
    return -1;
  size_t n = (size_t)snprintf(token, ENROL_TOKEN_MAX, "%s:", name);
  for (size_t i = 0; i < SECRET_LEN; i++, n += 2)
    snprintf(token + n, ENROL_TOKEN_MAX - n, "%02x", secret[i]);
  explicit_bzero(secret, sizeof secret);
  hash_token(token, rec->salt, rec->hash);
  return 0;
}

bool
enrol_token_matches(const char *token, const struct enrol_record *rec)
{
  if (token == NULL || rec == NULL)
    return false;
  uint8_t h[STORE_HASH_LEN];
  hash_token(token, rec->salt, h);
  return memeql_sec(h, rec->hash, sizeof h) != 0;
}

bool
enrol_token_owner(const char *token, char name[ENROL_NAME_MAX + 1])
{
  const char *colon = token ? strchr(token, ':') : NULL;
  if (colon == NULL || colon == token ||
      (size_t)(colon - token) > ENROL_NAME_MAX ||
      strlen(colon + 1) != 2 * SECRET_LEN)
    return false;
  for (const char *p = colon + 1; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return false;
  memcpy(name, token, (size_t)(colon - token));
  name[colon - token] = '\0';
  return validate_node_name(name);
}

enum enrol_verdict
enrol_decide(const struct enrol_ask *a, char *msg, size_t msglen)
{
  bool others = a->owner && strcmp(a->owner, a->name) != 0 && a->owners &&
                enrol_token_matches(a->bearer, a->owners);
  if (others) {
    snprintf(msg, msglen, "node '%s': this is the enrolment token of node '%s'; a node may only speak for itself",
             a->name, a->owner);
    return ENROL_FORBIDDEN;
  }
  if (a->mine) {
    if (enrol_token_matches(a->bearer, a->mine))
      return ENROL_OK;
    if (a->fleet) {
      snprintf(msg, msglen, "node '%s' is enrolled: it is accepted only with its own current enrolment token, not the fleet or operator token",
               a->name);
      return ENROL_FORBIDDEN;
    }
  } else if (a->fleet) {
    if (!a->require || a->certified)
      return ENROL_OK;
    snprintf(msg, msglen, "node '%s' is not enrolled, and this thunder-api requires enrolment (--require-enrolment): enrol it (thunderctl api node enrol %s) or give it a client certificate",
             a->name, a->name);
    return ENROL_FORBIDDEN;
  }
  /* Any other token: one answer, whether the name is enrolled or not
   * (a caller without a valid token learns nothing of the enrolments). */
  snprintf(msg, msglen, "wrong bearer token (an enrolment token stops working when it is rotated or revoked)");
  return ENROL_BAD_TOKEN;
}
