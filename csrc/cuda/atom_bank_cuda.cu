// The atom bank's kernels (docs/ops.md, op 1): every atom's 2-layer sine MLP at every
// point of the G x K x K grid in one launch, and its parameter gradients as per-block partial
// sums in another.
#include "atom_bank_cuda.h"
#include "cuda_common.cuh"

namespace inik_fast {
namespace cuda {
namespace {

constexpr int kBankThreads = 256;
constexpr int kBankPts = 16;  // grid points per block step

// z1 = w1[m] p + b1[m] and h1 = sin(omega z1) at the block's points pt0 .. pt0 + kBankPts - 1
// ([kBankPts][Hd] each; zero past the last point).
template <typename T>
__device__ void first_layer(T* z1, T* h1, const BankParams<T>& p, int m, int pt0, T om) {
  for (int i = threadIdx.x; i < kBankPts * p.Hd; i += blockDim.x) {
    const int pt = i / p.Hd, h = i % p.Hd, gp = pt0 + pt;
    T z = T(0);
    if (gp < p.npts) {
      z = p.b1[m * p.Hd + h];
      for (int d = 0; d < p.D; ++d) z += p.w1[(m * p.Hd + h) * p.D + d] * p.coords[gp * p.D + d];
    }
    z1[i] = z;
    h1[i] = sin(om * z);
  }
}

// z2 = w2[m] h1 + b2[m] at one point and hidden unit k.
template <typename T>
__device__ __forceinline__ T second_layer(const T* h1, const BankParams<T>& p, int m, int pt, int k) {
  const T* w = p.w2 + (static_cast<int64_t>(m) * p.Hd + k) * p.Hd;
  const T* h = h1 + pt * p.Hd;
  T z = p.b2[m * p.Hd + k];
  for (int i = 0; i < p.Hd; ++i) z += w[i] * h[i];
  return z;
}

// Grid (point blocks, M). atoms[g, m, i, j] = mask * (w3 . h2), exactly 0 where the mask is 0.
template <typename T>
__global__ void __launch_bounds__(kBankThreads) atom_bank_fwd_kernel(const BankParams<T> p) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* z1 = reinterpret_cast<T*>(smem);
  T* h1 = z1 + kBankPts * p.Hd;
  T* out3 = h1 + kBankPts * p.Hd;  // w3[k] h2[pt][k]
  const int m = blockIdx.y, pt0 = blockIdx.x * kBankPts;
  const T om = p.omega[m];
  first_layer(z1, h1, p, m, pt0, om);
  __syncthreads();
  for (int i = threadIdx.x; i < kBankPts * p.Hd; i += blockDim.x) {
    const int pt = i / p.Hd, k = i % p.Hd;
    out3[i] = p.w3[m * p.Hd + k] * sin(om * second_layer(h1, p, m, pt, k));
  }
  __syncthreads();
  const int gp = pt0 + threadIdx.x;
  if (threadIdx.x < kBankPts && gp < p.npts) {
    T s = T(0);
    for (int k = 0; k < p.Hd; ++k) s += out3[threadIdx.x * p.Hd + k];
    const T q = p.mask[gp];
    p.out[(static_cast<int64_t>(gp / p.KK) * p.M + m) * p.KK + gp % p.KK] = q == T(0) ? T(0) : q * s;
  }
}

// Grid (splits, M): block (s, m) takes the point blocks s, s + splits, ... of atom m and adds
// their gradients to its own partial-sum record, each sum in a fixed order.
template <typename T>
__global__ void __launch_bounds__(kBankThreads) atom_bank_bwd_kernel(const BankParams<T> p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int n = kBankPts * p.Hd;
  T* z1 = reinterpret_cast<T*>(smem);
  T* h1 = z1 + n;
  T* dz2 = h1 + n;
  T* dw3_t = dz2 + n;  // da h2: terms of dw3
  T* om2_t = dw3_t + n;  // dh2 cos(omega z2) z2: terms of domega
  T* dz1 = om2_t + n;
  T* om1_t = dz1 + n;  // dh1 cos(omega z1) z1
  T* red = om1_t + n;  // [kBankThreads]
  const int m = blockIdx.y, Hd = p.Hd;
  const BankLayout L(Hd, p.D);
  T* part = p.out + (static_cast<int64_t>(blockIdx.x) * p.M + m) * L.size;
  const T om = p.omega[m];
  const T* w2 = p.w2 + static_cast<int64_t>(m) * Hd * Hd;
  T db1 = T(0), db2 = T(0), dw3 = T(0), dom = T(0);  // of hidden unit threadIdx.x < Hd
  const int nblocks = (p.npts + kBankPts - 1) / kBankPts;

  for (int q = blockIdx.x; q < nblocks; q += gridDim.x) {
    const int pt0 = q * kBankPts;
    __syncthreads();  // the previous step's values are no longer read
    first_layer(z1, h1, p, m, pt0, om);
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int pt = i / Hd, k = i % Hd, gp = pt0 + pt;
      const T da = gp < p.npts ? p.grad[(static_cast<int64_t>(gp / p.KK) * p.M + m) * p.KK + gp % p.KK] * p.mask[gp]
                               : T(0);
      const T z = second_layer(h1, p, m, pt, k);
      const T c2 = cos(om * z), dh2 = da * p.w3[m * Hd + k];
      dz2[i] = dh2 * c2 * om;
      dw3_t[i] = da * sin(om * z);
      om2_t[i] = dh2 * c2 * z;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < Hd * Hd; e += blockDim.x) {  // dw2[k, h] += sum_pt dz2[pt, k] h1[pt, h]
      const int k = e / Hd, h = e % Hd;
      T s = T(0);
      for (int pt = 0; pt < kBankPts; ++pt) s += dz2[pt * Hd + k] * h1[pt * Hd + h];
      part[L.dw2 + e] += s;
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int pt = i / Hd, h = i % Hd;
      T dh1 = T(0);
      for (int k = 0; k < Hd; ++k) dh1 += dz2[pt * Hd + k] * w2[k * Hd + h];
      const T c1 = cos(om * z1[i]);
      dz1[i] = dh1 * c1 * om;
      om1_t[i] = dh1 * c1 * z1[i];
    }
    __syncthreads();
    if (threadIdx.x < Hd) {
      const int h = threadIdx.x;
      for (int pt = 0; pt < kBankPts; ++pt) {
        db1 += dz1[pt * Hd + h];
        db2 += dz2[pt * Hd + h];
        dw3 += dw3_t[pt * Hd + h];
        dom += om2_t[pt * Hd + h] + om1_t[pt * Hd + h];
      }
      for (int d = 0; d < p.D; ++d) {
        T s = T(0);
        for (int pt = 0; pt < kBankPts && pt0 + pt < p.npts; ++pt) s += dz1[pt * Hd + h] * p.coords[(pt0 + pt) * p.D + d];
        part[L.dw1 + h * p.D + d] += s;
      }
    }
  }
  red[threadIdx.x] = threadIdx.x < Hd ? dom : T(0);
  if (threadIdx.x < Hd) {
    part[L.db1 + threadIdx.x] = db1;
    part[L.db2 + threadIdx.x] = db2;
    part[L.dw3 + threadIdx.x] = dw3;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    T s = T(0);
    for (int i = 0; i < Hd; ++i) s += red[i];
    part[L.domega] = s;
  }
}

}  // namespace

template <typename T>
void atom_bank_forward_launch(const BankParams<T>& p, cudaStream_t stream) {
  const size_t smem = 3 * static_cast<size_t>(kBankPts) * p.Hd * sizeof(T);
  const dim3 grid((p.npts + kBankPts - 1) / kBankPts, p.M);
  atom_bank_fwd_kernel<T><<<grid, kBankThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
int atom_bank_splits(const BankParams<T>& p) {
  return std::min(8, (p.npts + kBankPts - 1) / kBankPts);
}

template <typename T>
void atom_bank_backward_launch(const BankParams<T>& p, int splits, cudaStream_t stream) {
  const size_t smem = (7 * static_cast<size_t>(kBankPts) * p.Hd + kBankThreads) * sizeof(T);
  auto kernel = atom_bank_bwd_kernel<T>;
  allow_shared_memory(reinterpret_cast<const void*>(kernel), smem, "atom_bank backward");
  kernel<<<dim3(splits, p.M), kBankThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void atom_bank_forward_launch<float>(const BankParams<float>&, cudaStream_t);
template void atom_bank_forward_launch<double>(const BankParams<double>&, cudaStream_t);
template int atom_bank_splits<float>(const BankParams<float>&);
template int atom_bank_splits<double>(const BankParams<double>&);
template void atom_bank_backward_launch<float>(const BankParams<float>&, int, cudaStream_t);
template void atom_bank_backward_launch<double>(const BankParams<double>&, int, cudaStream_t);

}  // namespace cuda
}  // namespace inik_fast
