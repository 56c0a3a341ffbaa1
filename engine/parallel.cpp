#include "engine/parallel.h"

#include <cblas.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "engine/error.h"

namespace kd {

namespace {

// 0 until the first set_num_threads() or num_threads() call.
std::atomic<int> g_threads{0};

int default_threads() {
  if (const char* v = std::getenv("KDLAB_NUM_THREADS"); v && *v) {
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    KD_CHECK(end && *end == '\0' && n >= 1 && n <= 1024,
             "KDLAB_NUM_THREADS='{}' is not a thread count; set it to a whole number >= 1 (or unset it)", v);
    return (int)n;
  }
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

void set_num_threads(int n) {
  KD_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got {}", n);
  g_threads = n;
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  openblas_set_num_threads(n);
}

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = default_threads();
    set_num_threads(n);
  }
  return n;
}

}  // namespace kd
