// Shape checks of the two ops (docs/ops.md), shared by the CPU and CUDA backends: the C++
// ops can be called directly (torch.ops.inik_fast.*), bypassing ops.py's validation. Messages are
// one line, "<op>: <argument> must be ..., got ...". Devices and dtypes differ per backend and
// are checked there (cpu/checks.h, cuda/cuda_checks.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace inik_fast {

inline std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim, const char* dims) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dims, ", got ", shape_str(t.sizes()));
}

// t has exactly the shape `expected`, described as e.g. "[B, G, H, W]".
inline void check_shape(const char* op, const char* name, const at::Tensor& t, const std::vector<int64_t>& expected,
                        const char* dims) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(expected), op, ": ", name, " must be ", dims, " = ", shape_str(expected),
              ", got ", shape_str(t.sizes()));
}

inline void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype) {
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
}

// The supported range: G groups (windows 3..19) and M atoms per group.
constexpr int64_t kMaxGroups = 9;
constexpr int64_t kMaxAtoms = 16;
constexpr int64_t kMaxHidden = 128;

struct BankShape {
  int64_t G, K, D, M, Hd;
};

// atom_bank(coords [G, K, K, D], mask [G, K, K], w1 [M, Hd, D], b1 [M, Hd], w2 [M, Hd, Hd],
// b2 [M, Hd], w3 [M, Hd], omega [M]) with K = 2G + 1.
inline BankShape check_bank_shapes(const char* op, const at::Tensor& coords, const at::Tensor& mask,
                                   const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                                   const at::Tensor& b2, const at::Tensor& w3, const at::Tensor& omega) {
  check_dim(op, "coords", coords, 4, "[G, K, K, D]");
  check_dim(op, "w1", w1, 3, "[M, Hd, D]");
  const int64_t G = coords.size(0), K = 2 * G + 1, D = coords.size(3), M = w1.size(0), Hd = w1.size(1);
  TORCH_CHECK(G >= 1 && G <= kMaxGroups && coords.size(1) == K && coords.size(2) == K, op,
              ": coords must be [G, 2G+1, 2G+1, D] with G in 1..", kMaxGroups, ", got ", shape_str(coords.sizes()));
  TORCH_CHECK(M >= 1 && M <= kMaxAtoms, op, ": w1 must have M in 1..", kMaxAtoms, " atoms, got M=", M);
  TORCH_CHECK(Hd >= 1 && Hd <= kMaxHidden, op, ": w1 must have a hidden width Hd in 1..", kMaxHidden, ", got Hd=", Hd);
  check_shape(op, "mask", mask, {G, K, K}, "[G, K, K]");
  check_shape(op, "w1", w1, {M, Hd, D}, "[M, Hd, D]");
  check_shape(op, "b1", b1, {M, Hd}, "[M, Hd]");
  check_shape(op, "w2", w2, {M, Hd, Hd}, "[M, Hd, Hd]");
  check_shape(op, "b2", b2, {M, Hd}, "[M, Hd]");
  check_shape(op, "w3", w3, {M, Hd}, "[M, Hd]");
  check_shape(op, "omega", omega, {M}, "[M]");
  return {G, K, D, M, Hd};
}

struct IkShape {
  int64_t B, C, H, W, G, M, K, O;
};

// inverse_kernel_conv(x [B, C, H, W], atoms [G, M, K, K], scale [B, G, H, W], basis [B, M, H, W],
// weight [O, G, C, M], bias [O] or none, residual: O == C) with K = 2G + 1.
inline IkShape check_ikconv_shapes(const char* op, const at::Tensor& x, const at::Tensor& atoms,
                                   const at::Tensor& scale, const at::Tensor& basis, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, bool residual) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_dim(op, "atoms", atoms, 4, "[G, M, K, K]");
  check_dim(op, "weight", weight, 4, "[O, G, C, M]");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t G = atoms.size(0), M = atoms.size(1), K = 2 * G + 1, O = weight.size(0);
  TORCH_CHECK(G >= 1 && G <= kMaxGroups && M >= 1 && M <= kMaxAtoms && atoms.size(2) == K && atoms.size(3) == K, op,
              ": atoms must be [G, M, 2G+1, 2G+1] with G in 1..", kMaxGroups, ", M in 1..", kMaxAtoms, ", got ",
              shape_str(atoms.sizes()));
  check_shape(op, "scale", scale, {B, G, H, W}, "[B, G, H, W]");
  check_shape(op, "basis", basis, {B, M, H, W}, "[B, M, H, W]");
  TORCH_CHECK(O >= 1, op, ": weight must have O >= 1 output channels, got ", shape_str(weight.sizes()));
  check_shape(op, "weight", weight, {O, G, C, M}, "[O, G, C, M]");
  if (bias.has_value() && bias->defined()) check_shape(op, "bias", *bias, {O}, "[O]");
  TORCH_CHECK(!residual || O == C, op, ": residual=True needs O == C, got O=", O, ", C=", C);
  return {B, C, H, W, G, M, K, O};
}

}  // namespace inik_fast
