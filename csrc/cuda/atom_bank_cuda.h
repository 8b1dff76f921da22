// The atom bank's kernels (atom_bank_cuda.cu), called from atom_bank_cuda_ops.cpp.
#pragma once

#include <cuda_runtime.h>

namespace inik_fast {
namespace cuda {

template <typename T>
struct BankParams {
  const T* coords;  // [npts, D]: the G x K x K grid points
  const T* mask;    // [npts]
  const T *w1, *b1, *w2, *b2, *w3, *omega;
  const T* grad;  // [G, M, K, K], backward only
  T* out;         // forward: atoms [G, M, K, K]; backward: partial sums [splits, M, BankLayout::size]
  int npts, KK, D, Hd, M;
};

// Offsets of the gradients in one partial-sum record of an atom.
struct BankLayout {
  int dw1, db1, dw2, db2, dw3, domega, size;
  __host__ __device__ BankLayout(int Hd, int D)
      : dw1(0), db1(Hd * D), dw2(db1 + Hd), db2(dw2 + Hd * Hd), dw3(db2 + Hd), domega(dw3 + Hd), size(domega + 1) {}
};

// Writes p.out = atoms.
template <typename T>
void atom_bank_forward_launch(const BankParams<T>& p, cudaStream_t stream);
// Adds the gradients to p.out: `splits` zero-initialised records per atom (bank_splits(p)).
template <typename T>
int atom_bank_splits(const BankParams<T>& p);
template <typename T>
void atom_bank_backward_launch(const BankParams<T>& p, int splits, cudaStream_t stream);

}  // namespace cuda
}  // namespace inik_fast
