// Argument checks of the CUDA ops (host code, shared by the *_ops.cpp files).
#pragma once

#include <ATen/ATen.h>

namespace inik_fast {
namespace cuda {

// Accumulation dtype: float64 stays float64, float32/float16/bfloat16 accumulate in float32.
inline at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_cuda_tensor(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " is on ", ref.device());
}

inline void check_dtype(const at::Tensor& t, const char* name, at::ScalarType expected) {
  TORCH_CHECK(t.scalar_type() == expected, name, " must be ", expected, ", got ", t.scalar_type());
}

}  // namespace cuda
}  // namespace inik_fast
