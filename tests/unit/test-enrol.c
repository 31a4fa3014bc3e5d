/* thunder — unit tests of api/enrol.c: enrolment tokens (form, salted
 * hash, matching) and enrol_decide, the rule thunder-api applies to every
 * register and heartbeat (docs/security.md "Node identity"), case by case.
 * The same rule through real thunder-api and thunderd processes is
 * tests/integration/test-api-enrol.sh. */
#include <regex.h>
#include <stdbool.h>
#include <string.h>

#include "cunit-run.h"
#include "enrol.h"

#define FLEET "fleet-token-0123456789"

static char tok_a[ENROL_TOKEN_MAX], tok_b[ENROL_TOKEN_MAX];
static struct enrol_record rec_a, rec_b;

static int
suite_init(void)
{
  return enrol_token_new("node-a", tok_a, &rec_a) == 0 &&
                 enrol_token_new("node-b", tok_b, &rec_b) == 0
             ? 0
             : -1;
}

static void
test_token_form(void)
{
  regex_t re;
  CU_ASSERT_FATAL(regcomp(&re, "^node-a:[0-9a-f]{64}$", REG_EXTENDED) == 0);
  CU_ASSERT_EQUAL(regexec(&re, tok_a, 0, NULL, 0), 0);
  regfree(&re);
  char name[ENROL_NAME_MAX + 1];
  CU_ASSERT_TRUE(enrol_token_owner(tok_a, name));
  CU_ASSERT_STRING_EQUAL(name, "node-a");
  /* Not the form: no colon, an invalid name, short or upper-case hex. */
  CU_ASSERT_FALSE(enrol_token_owner(FLEET, name));
  CU_ASSERT_FALSE(enrol_token_owner(":0000000000000000000000000000000000000000000000000000000000000000", name));
  CU_ASSERT_FALSE(enrol_token_owner("-x:0000000000000000000000000000000000000000000000000000000000000000", name));
  CU_ASSERT_FALSE(enrol_token_owner("a:00", name));
  CU_ASSERT_FALSE(enrol_token_owner("a:000000000000000000000000000000000000000000000000000000000000000A", name));
  CU_ASSERT_FALSE(enrol_token_owner(NULL, name));
  /* 65 characters of name: longer than a node name. */
  char longer[200];
  memset(longer, 'n', 65);
  snprintf(longer + 65, sizeof longer - 65, ":%064d", 0);
  CU_ASSERT_FALSE(enrol_token_owner(longer, name));
  /* Names that are not node names get no token. */
  char t[ENROL_TOKEN_MAX];
  struct enrol_record r;
  CU_ASSERT_EQUAL(enrol_token_new("a/b", t, &r), -1);
  CU_ASSERT_EQUAL(enrol_token_new(longer, t, &r), -1);
}

static void
test_token_hash(void)
{
  CU_ASSERT_TRUE(enrol_token_matches(tok_a, &rec_a));
  CU_ASSERT_FALSE(enrol_token_matches(tok_a, &rec_b));
  CU_ASSERT_FALSE(enrol_token_matches(tok_b, &rec_a));
  CU_ASSERT_FALSE(enrol_token_matches(NULL, &rec_a));
  CU_ASSERT_FALSE(enrol_token_matches(tok_a, NULL));
  /* One character changed, or one more. */
  char t[ENROL_TOKEN_MAX + 1];
  snprintf(t, sizeof t, "%s", tok_a);
  t[strlen(t) - 1] ^= 1;
  CU_ASSERT_FALSE(enrol_token_matches(t, &rec_a));
  snprintf(t, sizeof t, "%s0", tok_a);
  CU_ASSERT_FALSE(enrol_token_matches(t, &rec_a));
  /* Salted: the same token under another salt is another hash, and two
   * tokens of one name differ. */
  struct enrol_record other = rec_a;
  other.salt[0] ^= 1;
  CU_ASSERT_FALSE(enrol_token_matches(tok_a, &other));
  char t2[ENROL_TOKEN_MAX];
  struct enrol_record r2;
  CU_ASSERT_EQUAL(enrol_token_new("node-a", t2, &r2), 0);
  CU_ASSERT_STRING_NOT_EQUAL(t2, tok_a);
  CU_ASSERT_NOT_EQUAL(memcmp(r2.salt, rec_a.salt, sizeof r2.salt), 0);
  CU_ASSERT_FALSE(enrol_token_matches(tok_a, &r2));
}

/* enrol_decide for name with bearer; mine/owners as the route would look
 * them up; want the verdict and, in msg, the text want_msg. */
static void
decide(const char *name, const char *bearer, bool fleet, bool certified,
       bool require, enum enrol_verdict want, const char *want_msg)
{
  char owner[ENROL_NAME_MAX + 1];
  struct enrol_ask a = { .name = name, .bearer = bearer, .fleet = fleet,
                         .certified = certified, .require = require };
  if (strcmp(name, "node-a") == 0)
    a.mine = &rec_a;
  else if (strcmp(name, "node-b") == 0)
    a.mine = &rec_b;
  if (enrol_token_owner(bearer, owner)) {
    a.owner = owner;
    if (strcmp(owner, name) != 0)
      a.owners = strcmp(owner, "node-a") == 0   ? &rec_a
                 : strcmp(owner, "node-b") == 0 ? &rec_b
                                                : NULL;
  }
  char msg[512] = "";
  enum enrol_verdict v = enrol_decide(&a, msg, sizeof msg);
  CU_ASSERT_EQUAL(v, want);
  if (want_msg && strstr(msg, want_msg) == NULL) {
    fprintf(stderr, "\n%s with %s: '%s' lacks '%s'\n", name, bearer, msg,
            want_msg);
    CU_FAIL("message");
  }
}

static void
test_decide(void)
{
  /* Enrolled names: their own token only. */
  decide("node-a", tok_a, false, false, false, ENROL_OK, NULL);
  decide("node-a", tok_a, false, false, true, ENROL_OK, NULL);
  decide("node-a", FLEET, true, false, false, ENROL_FORBIDDEN,
         "not the fleet or operator token");
  /* ... even with a certificate naming it. */
  decide("node-a", FLEET, true, true, false, ENROL_FORBIDDEN,
         "node 'node-a' is enrolled");
  decide("node-a", tok_b, false, false, false, ENROL_FORBIDDEN,
         "this is the enrolment token of node 'node-b'");
  decide("node-a",
         "node-a:0000000000000000000000000000000000000000000000000000000000000000",
         false, false, false, ENROL_BAD_TOKEN, "wrong bearer token");
  /* Not the enrolled name's token, not the fleet's: 401, the answer a
   * name never enrolled gets (no oracle of enrolments). */
  decide("node-a", "garbage-token-xyz", false, false, false, ENROL_BAD_TOKEN,
         "wrong bearer token");
  /* Names not enrolled: the fleet token, unless enrolment is required
   * (then only with a certificate naming the node). */
  decide("node-c", FLEET, true, false, false, ENROL_OK, NULL);
  decide("node-c", FLEET, true, false, true, ENROL_FORBIDDEN,
         "requires enrolment");
  decide("node-c", FLEET, true, true, true, ENROL_OK, NULL);
  decide("node-c", tok_a, false, false, false, ENROL_FORBIDDEN,
         "enrolment token of node 'node-a'");
  decide("node-c", tok_a, false, false, true, ENROL_FORBIDDEN,
         "enrolment token of node 'node-a'");
  /* A revoked token of node-c itself (or one never issued). */
  decide("node-c",
         "node-c:0000000000000000000000000000000000000000000000000000000000000000",
         false, false, false, ENROL_BAD_TOKEN, "rotated or revoked");
  /* The form of a token of a node that is not enrolled: unknown, 401. */
  decide("node-c",
         "node-z:0000000000000000000000000000000000000000000000000000000000000000",
         false, false, false, ENROL_BAD_TOKEN, "wrong bearer token");
  /* A forged token naming node-a but not node-a's: not node-a's, 401. */
  decide("node-c",
         "node-a:0000000000000000000000000000000000000000000000000000000000000000",
         false, false, false, ENROL_BAD_TOKEN, "wrong bearer token");
  decide("node-c", "garbage-token-xyz", false, false, false, ENROL_BAD_TOKEN,
         "wrong bearer token");
  decide("node-c", NULL, false, false, false, ENROL_BAD_TOKEN, NULL);
}

int
main(void)
{
  static const struct cunit_suite suite = {
    "enrol", suite_init, NULL, NULL, NULL,
  };
  static const struct cunit_test tests[] = {
    { "token form and owner", test_token_form },
    { "salted hash and matching", test_token_hash },
    { "the rule for register and heartbeat", test_decide },
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
