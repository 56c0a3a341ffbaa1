// parallel.h: the one threading runtime of kdlab (OpenMP), shared with OpenBLAS.
//
// Our kernels split their outer loops (images of a convolution, channels of a batch norm,
// rows of a big elementwise op) over OpenMP threads with parallel_for. OpenBLAS is linked in
// its OpenMP build (see CMakeLists.txt), so a GEMM called outside a parallel region uses the
// same thread pool, and a GEMM called inside one runs on the calling thread: the two never
// oversubscribe the cores.
//
// The thread count comes from set_num_threads() (`--threads N`), else from the environment
// variable KDLAB_NUM_THREADS, else from OpenMP's default (OMP_NUM_THREADS or the core count).
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace kd {

// Threads for our kernels and for OpenBLAS together. n >= 1.
void set_num_threads(int n);
int num_threads();  // reads KDLAB_NUM_THREADS on first use

// Whether the caller already runs inside a parallel region (then work stays on this thread).
inline bool in_parallel_region() {
#ifdef _OPENMP
  return omp_in_parallel();
#else
  return false;
#endif
}

// How many chunks parallel_for(n, grain, ...) splits [0, n) into, called right before it: one
// per thread, at most n / grain, and 1 inside a parallel region (nested loops stay serial).
inline int64_t parallel_chunks(int64_t n, int64_t grain) {
  if (n <= 0) return 0;
  const int64_t chunks = std::min<int64_t>(num_threads(), n / std::max<int64_t>(grain, 1));
  return (chunks <= 1 || in_parallel_region()) ? 1 : chunks;
}

// Calls fn(chunk, begin, end) for the parallel_chunks(n, grain) chunks covering [0, n), in
// parallel. The chunks are contiguous and fixed by n and the thread count (a static schedule),
// so a kernel that writes only inside its chunk, or into per-chunk buffers it then adds up in
// chunk order, gives the same result on every run. If fn throws, the first exception is
// rethrown on the calling thread once every chunk has finished.
template <typename F>
void parallel_for_chunks(int64_t n, int64_t grain, F&& fn) {
  const int64_t chunks = parallel_chunks(n, grain);
  if (chunks == 0) return;
  if (chunks == 1) {
    fn(int64_t(0), int64_t(0), n);
    return;
  }
#ifdef _OPENMP
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel for schedule(static, 1) num_threads((int)chunks)
  for (int64_t c = 0; c < chunks; ++c) {
    try {
      fn(c, n * c / chunks, n * (c + 1) / chunks);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
#else
  fn(int64_t(0), int64_t(0), n);
#endif
}

// Calls fn(begin, end) on the chunks of [0, n), in parallel when n is at least 2 * grain
// (grain: the smallest chunk worth a thread). As parallel_for_chunks, without the index.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  parallel_for_chunks(n, grain, [&fn](int64_t, int64_t begin, int64_t end) { fn(begin, end); });
}

}  // namespace kd
