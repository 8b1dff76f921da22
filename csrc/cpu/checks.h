// Argument checks of the C++ ops, one-line TORCH_CHECK messages that name the op and argument.
// The ops can be called directly (torch.ops.inik_fast.*), bypassing ops.py's validation.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace inik_fast::cpu {

inline std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// t is a CPU tensor of `dtype`.
inline void check_cpu(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
}

// t has exactly the shape `expected`, described as e.g. "[B, G, H, W]".
inline void check_shape(const char* op, const char* name, const at::Tensor& t, const std::vector<int64_t>& expected,
                        const char* dims) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(expected), op, ": ", name, " must be ", dims, " = ", shape_str(expected),
              ", got ", shape_str(t.sizes()));
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim, const char* dims) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dims, ", got ", shape_str(t.sizes()));
}

// The dtype every tensor of the op shares: float32 or float64 (the CPU kernels accumulate in it).
inline at::ScalarType float_dtype(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
  const auto d = t.scalar_type();
  TORCH_CHECK(d == at::kFloat || d == at::kDouble, op, ": ", name, " must be float32 or float64 on CPU, got ", d);
  return d;
}

}  // namespace inik_fast::cpu
