/* thunder — unit tests of the Prometheus exposition writer and the latency
 * histograms (src/common/promtext.c, histogram.c): exact output (golden
 * text), label escaping, cumulative buckets, +Inf. */
#include <CUnit/Basic.h>

#include <stdlib.h>
#include <string.h>

#include "cunit-run.h"
#include "histogram.h"
#include "promtext.h"

static void
test_counter_and_labels(void)
{
  struct promtext *p = promtext_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  const struct promtext_label l[] = { { "image", "deb\"ian\\12\nx" },
                                      { "kind", "local" } };
  promtext_family(p, "thunder_node_served_bytes_total", "counter",
                  "Bytes served\\read.\nSecond line");
  promtext_uint(p, "thunder_node_served_bytes_total", l, 2, 18446744073709551615u);
  promtext_family(p, "process_threads", "gauge", "Threads.");
  promtext_uint(p, "process_threads", NULL, 0, 7);
  promtext_double(p, "process_cpu_seconds_total", NULL, 0, 1.5);
  size_t len = 0;
  char *body = promtext_finish(p, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(body);
  const char *want =
      "# HELP thunder_node_served_bytes_total Bytes served\\\\read.\\nSecond line\n"
      "# TYPE thunder_node_served_bytes_total counter\n"
      "thunder_node_served_bytes_total{image=\"deb\\\"ian\\\\12\\nx\",kind=\"local\"} 18446744073709551615\n"
      "# HELP process_threads Threads.\n"
      "# TYPE process_threads gauge\n"
      "process_threads 7\n"
      "process_cpu_seconds_total 1.5\n";
  CU_ASSERT_STRING_EQUAL(body, want);
  CU_ASSERT_EQUAL(len, strlen(want));
  free(body);
}

static void
test_histogram(void)
{
  static const double bounds[] = { 0.001, 0.01, 1 };
  struct histogram h, total;
  histogram_init(&h, bounds, 3);
  histogram_init(&total, bounds, 3);
  histogram_observe_ns(&h, 500000);      /* 0.5 ms  -> le 0.001 */
  histogram_observe_ns(&h, 1000000);     /* 1 ms    -> le 0.001 (bound inclusive) */
  histogram_observe_ns(&h, 5000000);     /* 5 ms    -> le 0.01 */
  histogram_observe_ns(&h, 2000000000);  /* 2 s     -> +Inf */
  histogram_add(&total, &h);
  histogram_add(&total, &h);
  struct promtext *p = promtext_new();
  const struct promtext_label l[] = { { "kind", "tcp" } };
  promtext_family(p, "thunder_node_read_duration_seconds", "histogram", "Reads.");
  promtext_histogram(p, "thunder_node_read_duration_seconds", l, 1, &total);
  size_t len;
  char *body = promtext_finish(p, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(body);
  const char *want =
      "# HELP thunder_node_read_duration_seconds Reads.\n"
      "# TYPE thunder_node_read_duration_seconds histogram\n"
      "thunder_node_read_duration_seconds_bucket{kind=\"tcp\",le=\"0.001\"} 4\n"
      "thunder_node_read_duration_seconds_bucket{kind=\"tcp\",le=\"0.01\"} 6\n"
      "thunder_node_read_duration_seconds_bucket{kind=\"tcp\",le=\"1\"} 6\n"
      "thunder_node_read_duration_seconds_bucket{kind=\"tcp\",le=\"+Inf\"} 8\n"
      "thunder_node_read_duration_seconds_sum{kind=\"tcp\"} 4.013000000\n"
      "thunder_node_read_duration_seconds_count{kind=\"tcp\"} 8\n";
  CU_ASSERT_STRING_EQUAL(body, want);
  free(body);
}

static void
test_empty(void)
{
  size_t len = 1;
  char *body = promtext_finish(promtext_new(), &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(body);
  CU_ASSERT_EQUAL(len, 0);
  CU_ASSERT_STRING_EQUAL(body, "");
  free(body);
  promtext_free(NULL);
}

int
main(void)
{
  static const struct cunit_suite suite = { "promtext", NULL, NULL, NULL, NULL };
  static const struct cunit_test tests[] = {
    { "families, samples, escaping", test_counter_and_labels },
    { "histogram: cumulative buckets, +Inf, sum, count", test_histogram },
    { "an empty body", test_empty },
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
