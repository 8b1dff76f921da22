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

// The dtype every tensor of the op shares: float32 or float64 (the CPU kernels accumulate in it).
inline at::ScalarType float_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
  const auto d = t.scalar_type();
  TORCH_CHECK(d == at::kFloat || d == at::kDouble, op, ": ", name, " must be float32 or float64 on CPU, got ", d);
  return d;
}

}  // namespace inik_fast::cpu
