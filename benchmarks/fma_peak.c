/* The CPU's fp32 FMA ceiling: independent FMA chains held in vector registers, on every core.
 * Built and run by benchmarks/floor.py (cc -O3 -march=native -fopenmp); prints FMA/s. */
#include <omp.h>
#include <stdio.h>
#include <time.h>

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
#define CHAINS 12 /* enough independent FMAs in flight to cover the FMA latency on 2 pipes */
typedef float vec __attribute__((vector_size(4 * LANES)));

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(void) {
  const long iters = 200000000L / CHAINS;
  double best = 0;
  float sink = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double t0 = now();
#pragma omp parallel reduction(+ : sink)
    {
      vec acc[CHAINS], a, b;
      for (int l = 0; l < LANES; ++l) a[l] = 0.999999f, b[l] = 1e-7f * (omp_get_thread_num() + 1);
      for (int c = 0; c < CHAINS; ++c) acc[c] = b * (float)(c + 1);
      for (long i = 0; i < iters; ++i)
        for (int c = 0; c < CHAINS; ++c) acc[c] = acc[c] * a + b;
      for (int c = 0; c < CHAINS; ++c)
        for (int l = 0; l < LANES; ++l) sink += acc[c][l];
    }
    double rate = (double)omp_get_max_threads() * iters * CHAINS * LANES / (now() - t0);
    if (rate > best) best = rate;
  }
  printf("%.6e %d %d %g\n", best, omp_get_max_threads(), LANES, sink);
  return 0;
}
