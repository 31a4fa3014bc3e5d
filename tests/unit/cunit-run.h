/* thunder — the one runner of every CUnit suite under tests/unit.
 *
 * A test file declares its cases as a table of struct cunit_test and
 * ends with: return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
 * The run passes only if every case ran (a failed suite init runs none)
 * and none failed.  Exit status: 0 pass, 1 fail.
 */
#ifndef THUNDER_CUNIT_RUN_H
#define THUNDER_CUNIT_RUN_H

#include <CUnit/Basic.h>
#include <stddef.h>
#include <stdio.h>

struct cunit_test {
  const char *name;
  CU_TestFunc fn;
};

struct cunit_suite {
  const char *name;
  CU_InitializeFunc init;   /* may be NULL */
  CU_CleanupFunc clean;     /* may be NULL */
  CU_SetUpFunc setup;       /* before each test; may be NULL */
  CU_TearDownFunc teardown; /* after each test; may be NULL */
};

static inline int
cunit_run(const struct cunit_suite *s, const struct cunit_test *tests,
          size_t n)
{
  if (CU_initialize_registry() != CUE_SUCCESS) {
    fprintf(stderr, "%s: CUnit: %s\n", s->name, CU_get_error_msg());
    return 1;
  }
  CU_pSuite suite = CU_add_suite_with_setup_and_teardown(
      s->name, s->init, s->clean, s->setup, s->teardown);
  for (size_t i = 0; suite && i < n; i++)
    if (CU_add_test(suite, tests[i].name, tests[i].fn) == NULL)
      suite = NULL;
  if (suite == NULL) {
    fprintf(stderr, "%s: CUnit: %s\n", s->name, CU_get_error_msg());
    CU_cleanup_registry();
    return 1;
  }
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() +
                    CU_get_number_of_tests_failed() +
                    CU_get_number_of_suites_failed();
  unsigned run = CU_get_number_of_tests_run();
  CU_cleanup_registry();
  return failed == 0 && run == n ? 0 : 1;
}

#endif
