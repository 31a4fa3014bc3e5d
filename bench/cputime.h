/* thunder — the clocks the C benchmarks read (header only). */
#ifndef THUNDER_BENCH_CPUTIME_H
#define THUNDER_BENCH_CPUTIME_H

#include <sys/resource.h>
#include <time.h>

/* This process's user + system CPU so far, in seconds. */
static inline double
process_cpu_s(void)
{
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/* The calling thread's CPU so far, in seconds. */
static inline double
thread_cpu_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Monotonic time, in seconds. */
static inline double
monotonic_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
