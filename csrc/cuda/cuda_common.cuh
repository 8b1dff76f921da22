// Pieces shared by the CUDA kernel files of inik_fast: small device utilities and launch
// helpers. Kernel files include only CUDA and c10's error macros (no ATen), which keeps their
// compile time low; the ops themselves are in the *_ops.cpp files. Design: benchmarks/NOTES.md.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

namespace inik_fast {
namespace cuda {

// N values of T loaded and stored as one vector (8 or 16 bytes).
template <typename T, int N>
struct alignas(N * sizeof(T)) Vec {
  T v[N];
};

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

inline int device_attribute(cudaDeviceAttr attr) {
  int dev = 0, value = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, dev));
  return value;
}

// Allows `bytes` of dynamic shared memory for `kernel` (above 48 KB this needs an opt-in).
inline void allow_shared_memory(const void* kernel, size_t bytes, const char* what) {
  if (bytes <= 48 * 1024) return;
  const int optin = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  TORCH_CHECK(bytes <= static_cast<size_t>(optin), what, ": needs ", bytes,
              " bytes of shared memory per block, the device allows ", optin);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// A kernel variant knob: the integer in the environment variable `name` (INIK_FAST_CUDA_*), or
// `fallback` when it is unset. Read at every launch, so benchmarks/sweep.py can time the variants
// built into one binary side by side in one process; the defaults are the sweep's winners.
inline int variant(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// Blocks per multiprocessor that can run `kernel` at once (at least 1).
inline int blocks_per_sm(const void* kernel, int threads, size_t smem) {
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return std::max(per_sm, 1);
}

// Blocks of a persistent kernel: as many as run at once on the device, at most `work`.
inline int persistent_grid(const void* kernel, int threads, size_t smem, int64_t work) {
  const int64_t sms = device_attribute(cudaDevAttrMultiProcessorCount);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(work, blocks_per_sm(kernel, threads, smem) * sms)));
}

}  // namespace cuda
}  // namespace inik_fast
