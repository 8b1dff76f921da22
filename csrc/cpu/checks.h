// Device and dtype checks of the CPU ops; the shapes are checked by ../op_checks.h.
#pragma once

#include <ATen/ATen.h>

#include "../op_checks.h"

namespace inik_fast::cpu {

// t is a CPU tensor of `dtype`.
inline void check_cpu(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  check_dtype(op, name, t, dtype);
}

// The op's storage dtype, read off argument `name`: float16, bfloat16, float32 or float64.
inline at::ScalarType float_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
  const auto d = t.scalar_type();
  TORCH_CHECK(d == at::kFloat || d == at::kDouble || d == at::kHalf || d == at::kBFloat16, op, ": ", name,
              " must be float16, bfloat16, float32 or float64, got ", d);
  return d;
}

// The dtype the kernels compute in for storage dtype d: float64 stays, the others are float32.
inline at::ScalarType acc_dtype(at::ScalarType d) { return d == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace inik_fast::cpu
