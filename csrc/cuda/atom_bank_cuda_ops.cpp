// The atom bank ops on CUDA (docs/ops.md, op 1): argument checks, allocation and the
// reduction of the backward's partial sums around the kernels of atom_bank_cuda.cu.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>
#include <utility>

#include "atom_bank_cuda.h"
#include "cuda_checks.h"

namespace inik_fast {
namespace cuda {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

constexpr const char* kFwd = "atom_bank_forward";
constexpr const char* kBwd = "atom_bank_backward";

void check_bank_args(const char* op, const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1,
                     const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3,
                     const at::Tensor& omega) {
  const std::pair<const at::Tensor*, const char*> named[] = {{&coords, "coords"}, {&mask, "mask"}, {&w1, "w1"},
                                                             {&b1, "b1"},         {&w2, "w2"},     {&b2, "b2"},
                                                             {&w3, "w3"},         {&omega, "omega"}};
  check_bank_shapes(op, coords, mask, w1, b1, w2, b2, w3, omega);  // first: testable on CPU tensors
  TORCH_CHECK(w1.scalar_type() == at::kFloat || w1.scalar_type() == at::kDouble, op,
              ": w1 must be float32 or float64, got ", w1.scalar_type());
  for (const auto& [t, name] : named) {
    check_cuda_tensor(op, name, *t, w1, "w1");
    check_dtype(op, name, *t, w1.scalar_type());
  }
}

template <typename T>
BankParams<T> bank_params(const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1, const at::Tensor& b1,
                          const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3, const at::Tensor& omega) {
  BankParams<T> p{};
  p.coords = coords.data_ptr<T>();
  p.mask = mask.data_ptr<T>();
  p.w1 = w1.data_ptr<T>();
  p.b1 = b1.data_ptr<T>();
  p.w2 = w2.data_ptr<T>();
  p.b2 = b2.data_ptr<T>();
  p.w3 = w3.data_ptr<T>();
  p.omega = omega.data_ptr<T>();
  p.KK = static_cast<int>(coords.size(1) * coords.size(2));
  p.npts = static_cast<int>(coords.size(0)) * p.KK;
  p.D = static_cast<int>(coords.size(3));
  p.M = static_cast<int>(w1.size(0));
  p.Hd = static_cast<int>(w1.size(1));
  return p;
}

template <typename T>
at::Tensor forward_typed(const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1, const at::Tensor& b1,
                         const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3, const at::Tensor& omega) {
  BankParams<T> p = bank_params<T>(coords, mask, w1, b1, w2, b2, w3, omega);
  at::Tensor atoms = at::empty({coords.size(0), p.M, coords.size(1), coords.size(2)}, w1.options());
  p.out = atoms.data_ptr<T>();
  atom_bank_forward_launch<T>(p, at::cuda::getCurrentCUDAStream());
  return atoms;
}

template <typename T>
Grads backward_typed(const at::Tensor& grad, const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1,
                     const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3,
                     const at::Tensor& omega) {
  BankParams<T> p = bank_params<T>(coords, mask, w1, b1, w2, b2, w3, omega);
  p.grad = grad.data_ptr<T>();
  const BankLayout L(p.Hd, p.D);
  const int splits = atom_bank_splits<T>(p);
  at::Tensor part = at::zeros({splits, p.M, L.size}, w1.options());
  p.out = part.data_ptr<T>();
  atom_bank_backward_launch<T>(p, splits, at::cuda::getCurrentCUDAStream());
  const at::Tensor s = part.sum(0);  // [M, L.size], a fixed-order sum over the splits
  auto piece = [&](int off, const at::Tensor& like) {
    return s.narrow(1, off, like.numel() / p.M).reshape(like.sizes()).contiguous();
  };
  return {piece(L.dw1, w1), piece(L.db1, b1), piece(L.dw2, w2), piece(L.db2, b2), piece(L.dw3, w3), piece(L.domega, omega)};
}

at::Tensor atom_bank_forward_cuda(const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1,
                                  const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                                  const at::Tensor& w3, const at::Tensor& omega) {
  check_bank_args(kFwd, coords, mask, w1, b1, w2, b2, w3, omega);
  const c10::cuda::CUDAGuard guard(w1.device());
  const auto c = [](const at::Tensor& t) { return t.contiguous(); };
  return w1.scalar_type() == at::kDouble
             ? forward_typed<double>(c(coords), c(mask), c(w1), c(b1), c(w2), c(b2), c(w3), c(omega))
             : forward_typed<float>(c(coords), c(mask), c(w1), c(b1), c(w2), c(b2), c(w3), c(omega));
}

Grads atom_bank_backward_cuda(
    const at::Tensor& grad_atoms, const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1,
    const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3, const at::Tensor& omega) {
  check_bank_args(kBwd, coords, mask, w1, b1, w2, b2, w3, omega);
  check_shape(kBwd, "grad_atoms", grad_atoms, {coords.size(0), w1.size(0), coords.size(1), coords.size(2)},
              "[G, M, K, K]");
  check_cuda_tensor(kBwd, "grad_atoms", grad_atoms, w1, "w1");
  check_dtype(kBwd, "grad_atoms", grad_atoms, w1.scalar_type());
  const c10::cuda::CUDAGuard guard(w1.device());
  const auto c = [](const at::Tensor& t) { return t.contiguous(); };
  return w1.scalar_type() == at::kDouble
             ? backward_typed<double>(c(grad_atoms), c(coords), c(mask), c(w1), c(b1), c(w2), c(b2), c(w3), c(omega))
             : backward_typed<float>(c(grad_atoms), c(coords), c(mask), c(w1), c(b1), c(w2), c(b2), c(w3), c(omega));
}

}  // namespace
}  // namespace cuda
}  // namespace inik_fast

TORCH_LIBRARY_IMPL(inik_fast, CUDA, m) {
  m.impl("atom_bank_forward", &inik_fast::cuda::atom_bank_forward_cuda);
  m.impl("atom_bank_backward", &inik_fast::cuda::atom_bank_backward_cuda);
}
