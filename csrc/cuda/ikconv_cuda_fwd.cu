// Forward of the inverse-kernel convolution on CUDA (docs/ops.md, op 2):
//   y[b,o,p] = bias[o] + (x[b,o,p] if residual) + sum_{g,c,m} Wt[o,g,c,m] S[b,g,p] Bt[b,m,p] D[b,g,c,m,p]
// with the window sums D computed per tile in registers and mixed into y at once.
#include <climits>

#include "ikconv_tile.cuh"

namespace inik_fast {
namespace cuda {
namespace {

constexpr int kOC = 4;  // output channels a block accumulates in registers

// One block per (tile, batch item, group of kOC output channels). For every group g and channel
// c the block stages x's tile with a halo of g+1 pixels; each thread then computes D for its kPix
// pixels, MC atoms at a time, and mixes it into its y accumulators.
template <typename T, int MC>
__global__ void __launch_bounds__(kThreads) ikconv_fwd_kernel(const IkParams<T> p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int nch = (p.M + MC - 1) / MC;
  T* at_sh = reinterpret_cast<T*>(smem);  // [nch][kw * kw][MC]: group g's windows
  T* xs = at_sh + nch * p.K * p.K * MC;   // x's tile and halo, one channel
  const int noc = (p.O + kOC - 1) / kOC;
  const int oc = blockIdx.x % noc;
  const Tile tile = tile_at(p, blockIdx.x / noc);
  const int lane = threadIdx.x % 32, col = (threadIdx.x / 32) * kPix;
  const int y = tile.y0 + lane;
  const int nvalid = y < p.H ? min(kPix, p.W - tile.x0 - col) : 0;  // pixels of this thread in the image
  const int64_t HW = p.hw(), pix0 = static_cast<int64_t>(y) * p.W + tile.x0 + col;

  T acc[kPix][kOC];
#pragma unroll
  for (int q = 0; q < kPix; ++q)
#pragma unroll
    for (int o = 0; o < kOC; ++o) acc[q][o] = T(0);

  for (int g = 0; g < p.G; ++g) {
    const int r = g + 1, kw = 2 * r + 1, stride = halo_stride(r);
    T s[kPix];
    load_pixels(s, p.scale + (static_cast<int64_t>(tile.b) * p.G + g) * HW + pix0, nvalid);
    for (int c = 0; c < p.C; ++c) {
      __syncthreads();  // the previous step's tiles are no longer read
      if (c == 0) stage_atoms<T, MC>(at_sh, p.atoms, g, 0, nch, p.M, p.K, false);
      stage_window(xs, stride, p.x + (static_cast<int64_t>(tile.b) * p.C + c) * HW, p.H, p.W, tile.y0 - r,
                   tile.x0 - r, kTile + 2 * r, kTile + 2 * r);
      __syncthreads();
      for (int ch = 0; ch < nch; ++ch) {
        T d[kPix][MC] = {};
        with_window(g, [&](auto kwc) {
          window_sum<decltype(kwc)::value>(d, xs + lane * stride + col, stride, at_sh + ch * kw * kw * MC);
        });
        T w[kOC][MC];
#pragma unroll
        for (int o = 0; o < kOC; ++o)
#pragma unroll
          for (int mm = 0; mm < MC; ++mm) {
            const int oo = oc * kOC + o, m = ch * MC + mm;
            w[o][mm] = oo < p.O && m < p.M ? p.weight[((static_cast<int64_t>(oo) * p.G + g) * p.C + c) * p.M + m] : T(0);
          }
#pragma unroll
        for (int mm = 0; mm < MC; ++mm) {
          const int m = ch * MC + mm;
          T bv[kPix];
          load_pixels(bv, p.basis + (static_cast<int64_t>(tile.b) * p.M + m) * HW + pix0, m < p.M ? nvalid : 0);
#pragma unroll
          for (int q = 0; q < kPix; ++q) {
            const T sbd = bv[q] * s[q] * d[q][mm];
#pragma unroll
            for (int o = 0; o < kOC; ++o) acc[q][o] += w[o][mm] * sbd;
          }
        }
      }
    }
  }

#pragma unroll
  for (int o = 0; o < kOC; ++o) {
    const int oo = oc * kOC + o;
    if (oo >= p.O) break;
    const T bias = p.bias ? p.bias[oo] : T(0);
#pragma unroll
    for (int q = 0; q < kPix; ++q) {
      if (q >= nvalid) break;
      T v = acc[q][o] + bias;
      if (p.residual) v += p.x[(static_cast<int64_t>(tile.b) * p.C + oo) * HW + pix0 + q];
      p.out[(static_cast<int64_t>(tile.b) * p.O + oo) * HW + pix0 + q] = v;
    }
  }
}

template <typename T, int MC>
void forward_launch_mc(const IkParams<T>& p, cudaStream_t stream) {
  const int nch = (p.M + MC - 1) / MC;
  const int64_t blocks = p.tiles() * ((p.O + kOC - 1) / kOC);
  TORCH_CHECK(blocks <= INT_MAX, "inverse_kernel_conv: the image is too large (", blocks, " tiles)");
  const size_t smem = (static_cast<size_t>(nch) * p.K * p.K * MC + halo_size(p.G)) * sizeof(T);
  auto kernel = ikconv_fwd_kernel<T, MC>;
  allow_shared_memory(reinterpret_cast<const void*>(kernel), smem, "inverse_kernel_conv forward");
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// INIK_FAST_CUDA_FWD_MC=4: float chunks of 4 atoms whatever M (M = 10: 3 chunks, 2 of 12 atoms
// zero, but 3 instead of 5 passes over the staged image per group and channel).
// INIK_FAST_CUDA_FWD_MMA=1: float window sums on tensor cores (ikconv_cuda_fwd_mma.cu). float64
// never takes it: TF32 products cannot give float64 accuracy.
template <typename T>
void ikconv_forward_launch(const IkParams<T>& p, cudaStream_t stream) {
  if (p.tiles() == 0) return;
  if constexpr (std::is_same<T, double>::value) {
    forward_launch_mc<T, 2>(p, stream);
  } else if (variant("INIK_FAST_CUDA_FWD_MMA", 0) == 1 && p.M <= 16) {
    ikconv_forward_mma_launch(p, stream);
  } else if (atom_chunk(p.M, false) == 4 || variant("INIK_FAST_CUDA_FWD_MC", 0) == 4) {
    forward_launch_mc<T, 4>(p, stream);
  } else {
    forward_launch_mc<T, 2>(p, stream);
  }
}

template void ikconv_forward_launch<float>(const IkParams<float>&, cudaStream_t);
template void ikconv_forward_launch<double>(const IkParams<double>&, cudaStream_t);

}  // namespace cuda
}  // namespace inik_fast
