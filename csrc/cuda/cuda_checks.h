// Device and dtype checks of the CUDA ops (host code, shared by the *_ops.cpp files); the shapes
// are checked by ../op_checks.h.
#pragma once

#include <ATen/ATen.h>

#include "../op_checks.h"

namespace inik_fast {
namespace cuda {

// Accumulation dtype: float64 stays float64, float32/float16/bfloat16 accumulate in float32.
inline at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// t is a CUDA tensor on the device of `ref`.
inline void check_cuda_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                              const char* ref_name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device());
}

}  // namespace cuda
}  // namespace inik_fast
