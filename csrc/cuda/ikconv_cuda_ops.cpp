// The inverse-kernel convolution ops on CUDA (docs/ops.md, op 2): argument checks,
// allocation and the reductions of partial sums around the kernels of ikconv_cuda_*.cu.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <optional>
#include <tuple>

#include "cuda_checks.h"
#include "ikconv_cuda.h"

namespace inik_fast {
namespace cuda {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

constexpr const char* kFwd = "ikconv_forward";
constexpr const char* kBwd = "ikconv_backward";

// Checks the arguments the forward and the backward share; returns the accumulation dtype. Shapes
// come first: they need no device, so tests/test_cuda_build.py runs these checks on CPU tensors.
at::ScalarType check_args(const char* op, const at::Tensor& x, const at::Tensor& atoms, const at::Tensor& scale,
                          const at::Tensor& basis, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          bool residual) {
  const IkShape s = check_ikconv_shapes(op, x, atoms, scale, basis, weight, bias, residual);
  TORCH_CHECK(s.B < INT_MAX && s.C < INT_MAX && s.O < INT_MAX && s.H * s.W < INT_MAX, op,
              ": x and weight must have fewer than 2^31 pixels per plane, images, channels and outputs, got x ",
              shape_str(x.sizes()), " and weight ", shape_str(weight.sizes()));
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got one on ", x.device());
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16, op,
              ": x must be float16, bfloat16, float32 or float64, got ", t);
  const auto acc = acc_type(t);
  // scale and basis come in x's dtype; atoms, weight and bias in the accumulation dtype.
  const std::tuple<const at::Tensor*, const char*, at::ScalarType> named[] = {
      {&atoms, "atoms", acc}, {&scale, "scale", t}, {&basis, "basis", t}, {&weight, "weight", acc}};
  for (const auto& [tensor, name, dtype] : named) {
    check_cuda_tensor(op, name, *tensor, x, "x");
    check_dtype(op, name, *tensor, dtype);
  }
  if (bias.has_value()) {
    check_cuda_tensor(op, "bias", *bias, x, "x");
    check_dtype(op, "bias", *bias, acc);
  }
  return acc;
}

// The kernels' arguments with the shapes of x, atoms and weight (pointers left null).
template <typename T>
IkParams<T> shape_params(const at::Tensor& x, const at::Tensor& atoms, const at::Tensor& weight, bool residual) {
  IkParams<T> p{};
  p.B = static_cast<int>(x.size(0));
  p.C = static_cast<int>(x.size(1));
  p.H = static_cast<int>(x.size(2));
  p.W = static_cast<int>(x.size(3));
  p.G = static_cast<int>(atoms.size(0));
  p.M = static_cast<int>(atoms.size(1));
  p.K = static_cast<int>(atoms.size(2));
  p.O = static_cast<int>(weight.size(0));
  p.tiles_x = (p.W + kTile - 1) / kTile;
  p.tiles_y = (p.H + kTile - 1) / kTile;
  p.residual = residual;
  return p;
}

// float16/bfloat16 inputs are computed from float32 copies: the kernels read the accumulation dtype only.
at::Tensor as_acc(const at::Tensor& t, const at::TensorOptions& acc) { return t.to(acc).contiguous(); }

template <typename T>
at::Tensor forward_typed(const at::Tensor& x, const at::Tensor& atoms, const at::Tensor& scale,
                         const at::Tensor& basis, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         bool residual) {
  IkParams<T> p = shape_params<T>(x, atoms, weight, residual);
  const auto acc = x.options().dtype(c10::CppTypeToScalarType<T>::value);
  const at::Tensor xa = as_acc(x, acc), sa = as_acc(scale, acc), ba = as_acc(basis, acc);
  const at::Tensor aa = atoms.contiguous(), wa = weight.contiguous();
  const at::Tensor bb = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({p.B, p.O, p.H, p.W}, acc);
  p.x = xa.data_ptr<T>();
  p.atoms = aa.data_ptr<T>();
  p.scale = sa.data_ptr<T>();
  p.basis = ba.data_ptr<T>();
  p.weight = wa.data_ptr<T>();
  p.bias = bb.defined() ? bb.data_ptr<T>() : nullptr;
  p.out = y.data_ptr<T>();
  p.x_tf32 = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  ikconv_forward_launch<T>(p, at::cuda::getCurrentCUDAStream());
  return y.to(x.scalar_type());
}

template <typename T>
Grads backward_typed(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& atoms, const at::Tensor& scale,
                     const at::Tensor& basis, const at::Tensor& weight, bool residual, bool need_x_grad,
                     bool deterministic) {
  IkParams<T> p = shape_params<T>(x, atoms, weight, residual);
  p.atomic = !deterministic;
  const auto acc = x.options().dtype(c10::CppTypeToScalarType<T>::value);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor xa = as_acc(x, acc), sa = as_acc(scale, acc), ba = as_acc(basis, acc), ga = as_acc(grad_y, acc);
  const at::Tensor aa = atoms.contiguous(), wa = weight.contiguous();
  at::Tensor dscale = at::empty(scale.sizes(), acc), dbasis = at::empty(basis.sizes(), acc);
  at::Tensor dx = need_x_grad ? at::empty(x.sizes(), acc) : x.new_empty({0});
  at::Tensor datoms = at::zeros(atoms.sizes(), acc), dweight = at::zeros(weight.sizes(), acc);
  if (p.tiles() > 0) {
    p.x = xa.data_ptr<T>();
    p.atoms = aa.data_ptr<T>();
    p.scale = sa.data_ptr<T>();
    p.basis = ba.data_ptr<T>();
    p.weight = wa.data_ptr<T>();
    p.gy = ga.data_ptr<T>();
    p.dscale = dscale.data_ptr<T>();
    p.dbasis = dbasis.data_ptr<T>();
    // Deterministic: per-warp / per-block partial sums, then a fixed-order sum over them.
    const int slots = ikconv_backward_pixel_slots<T>(p);
    at::Tensor dweight_part = p.atomic ? dweight : at::zeros({slots, p.O, p.G, p.C, p.M}, acc);
    p.dweight = dweight_part.data_ptr<T>();
    ikconv_backward_pixel_launch<T>(p, slots, stream);
    const int blocks = ikconv_backward_atoms_blocks<T>(p);
    at::Tensor datoms_part = p.atomic ? datoms : at::empty({blocks, p.G, p.M, p.K, p.K}, acc);
    p.datoms = datoms_part.data_ptr<T>();
    ikconv_backward_atoms_launch<T>(p, blocks, stream);
    if (!p.atomic) {
      dweight = dweight_part.sum(0);
      datoms = datoms_part.sum(0);
    }
    if (need_x_grad) {
      p.out = dx.data_ptr<T>();
      ikconv_backward_dx_launch<T>(p, stream);
    }
  }
  const auto t = x.scalar_type();
  return {need_x_grad ? dx.to(t) : dx, datoms, dscale.to(t), dbasis.to(t), dweight, ga.sum({0, 2, 3})};
}

at::Tensor ikconv_forward_cuda(const at::Tensor& x, const at::Tensor& atoms, const at::Tensor& scale,
                               const at::Tensor& basis, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, bool residual) {
  const auto acc = check_args(kFwd, x, atoms, scale, basis, weight, bias, residual);
  const c10::cuda::CUDAGuard guard(x.device());
  return acc == at::kDouble ? forward_typed<double>(x, atoms, scale, basis, weight, bias, residual)
                            : forward_typed<float>(x, atoms, scale, basis, weight, bias, residual);
}

Grads ikconv_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& atoms,
                           const at::Tensor& scale, const at::Tensor& basis, const at::Tensor& weight, bool residual,
                           bool need_x_grad, bool deterministic) {
  check_args(kBwd, x, atoms, scale, basis, weight, std::nullopt, residual);
  check_shape(kBwd, "grad_y", grad_y, {x.size(0), weight.size(0), x.size(2), x.size(3)}, "[B, O, H, W]");
  check_cuda_tensor(kBwd, "grad_y", grad_y, x, "x");
  check_dtype(kBwd, "grad_y", grad_y, x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  return x.scalar_type() == at::kDouble
             ? backward_typed<double>(grad_y, x, atoms, scale, basis, weight, residual, need_x_grad, deterministic)
             : backward_typed<float>(grad_y, x, atoms, scale, basis, weight, residual, need_x_grad, deterministic);
}

}  // namespace
}  // namespace cuda
}  // namespace inik_fast

TORCH_LIBRARY_IMPL(inik_fast, CUDA, m) {
  m.impl("ikconv_forward", &inik_fast::cuda::ikconv_forward_cuda);
  m.impl("ikconv_backward", &inik_fast::cuda::ikconv_backward_cuda);
}
