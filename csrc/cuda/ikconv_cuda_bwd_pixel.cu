// Backward of the inverse-kernel convolution, part 1: the gradients that need the window sums D
// (docs/ops.md), recomputed per tile as in the forward:
//   dS[b,g,p] = sum_{c,m} E Bt D,  dBt[b,m,p] = sum_{g,c} E S D,  dWt[o,g,c,m] = sum_{b,p} Gam S Bt D
// with E[b,g,c,m,p] = sum_o Gam[b,o,p] Wt[o,g,c,m].
#include "ikconv_tile.cuh"

namespace inik_fast {
namespace cuda {
namespace {

constexpr int kOG = 4;  // output channels per pass over the thread's pixels

// Persistent blocks loop over tiles. Per tile: for each chunk of MC atoms, group g and channel c,
// D and E of the thread's kPix pixels live in registers; dBt of the chunk accumulates in
// registers, dS in shared memory (each thread owns its entries), and dWt is summed over the
// warp's pixels and added to the warp's own slot of the partial sums (or with atomics).
template <typename T, int MC>
__global__ void __launch_bounds__(kThreads, 1) ikconv_bwd_pixel_kernel(const IkParams<T> p) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* at_sh = reinterpret_cast<T*>(smem);  // [kw * kw][MC]: one chunk of group g's windows
  T* xs = at_sh + p.K * p.K * MC;         // x's tile and halo, one channel
  T* ds_sh = xs + halo_size(p.G);         // [G][kPix][kThreads]: dS of each thread's pixels
  const int nch = (p.M + MC - 1) / MC;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, col = warp * kPix;
  const int64_t HW = p.hw();
  const int64_t dw_size = static_cast<int64_t>(p.O) * p.G * p.C * p.M;
  T* dw = p.dweight + (p.atomic ? 0 : (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * dw_size);

  for (int64_t t = blockIdx.x; t < p.tiles(); t += gridDim.x) {
    const Tile tile = tile_at(p, t);
    const int y = tile.y0 + lane;
    const int nvalid = y < p.H ? min(kPix, p.W - tile.x0 - col) : 0;
    const int64_t pix0 = static_cast<int64_t>(y) * p.W + tile.x0 + col;
    for (int i = 0; i < p.G * kPix; ++i) ds_sh[i * kThreads + threadIdx.x] = T(0);

    for (int ch = 0; ch < nch; ++ch) {
      T db[kPix][MC] = {};
      for (int g = 0; g < p.G; ++g) {
        const int r = g + 1, stride = halo_stride(r);
        T s[kPix], ds[kPix] = {};
        load_pixels(s, p.scale + (static_cast<int64_t>(tile.b) * p.G + g) * HW + pix0, nvalid);
        for (int c = 0; c < p.C; ++c) {
          __syncthreads();  // the previous step's tiles are no longer read
          if (c == 0) stage_atoms<T, MC>(at_sh, p.atoms, g, ch * MC, 1, p.M, p.K, false);
          stage_window(xs, stride, p.x + (static_cast<int64_t>(tile.b) * p.C + c) * HW, p.H, p.W, tile.y0 - r,
                       tile.x0 - r, kTile + 2 * r, kTile + 2 * r);
          __syncthreads();
          T d[kPix][MC] = {};
          with_window(g, [&](auto kwc) { window_sum<decltype(kwc)::value>(d, xs + lane * stride + col, stride, at_sh); });

          // With E = sum_o Gam[o] Wt[o]: dS += E Bt D, dBt += E S D and dWt[o] += Gam[o] S Bt D,
          // one output channel at a time.
          T bd[kPix][MC], sd[kPix][MC];
#pragma unroll
          for (int mm = 0; mm < MC; ++mm) {
            const int m = ch * MC + mm;
            T bv[kPix];
            load_pixels(bv, p.basis + (static_cast<int64_t>(tile.b) * p.M + m) * HW + pix0, m < p.M ? nvalid : 0);
#pragma unroll
            for (int q = 0; q < kPix; ++q) {
              bd[q][mm] = bv[q] * d[q][mm];
              sd[q][mm] = s[q] * d[q][mm];
            }
          }
          for (int o0 = 0; o0 < p.O; o0 += kOG) {
            T part[kOG][MC] = {};
#pragma unroll
            for (int oo = 0; oo < kOG; ++oo) {
              const int o = o0 + oo;
              T gv[kPix], w[MC];
              load_pixels(gv, p.gy + (static_cast<int64_t>(tile.b) * p.O + o) * HW + pix0, o < p.O ? nvalid : 0);
#pragma unroll
              for (int mm = 0; mm < MC; ++mm) {
                const int m = ch * MC + mm;
                w[mm] = o < p.O && m < p.M ? p.weight[((static_cast<int64_t>(o) * p.G + g) * p.C + c) * p.M + m] : T(0);
              }
#pragma unroll
              for (int q = 0; q < kPix; ++q) {
                const T gs = gv[q] * s[q];
#pragma unroll
                for (int mm = 0; mm < MC; ++mm) {
                  const T e = gv[q] * w[mm];
                  ds[q] += e * bd[q][mm];
                  db[q][mm] += e * sd[q][mm];
                  part[oo][mm] += gs * bd[q][mm];
                }
              }
            }
            // Sum over the warp's pixels; lane l adds value l = (oo, mm) to the warp's partial sums.
            T mine = T(0);
#pragma unroll
            for (int k = 0; k < kOG * MC; ++k) {
              const T v = warp_sum(part[k / MC][k % MC]);
              if (lane == k) mine = v;
            }
            const int o = o0 + lane / MC, m = ch * MC + lane % MC;
            if (lane < kOG * MC && o < p.O && m < p.M) {
              T* dst = dw + ((static_cast<int64_t>(o) * p.G + g) * p.C + c) * p.M + m;
              if (p.atomic) {
                atomicAdd(dst, mine);
              } else {
                *dst += mine;
              }
            }
          }
        }
#pragma unroll
        for (int q = 0; q < kPix; ++q) ds_sh[(g * kPix + q) * kThreads + threadIdx.x] += ds[q];
      }
#pragma unroll
      for (int mm = 0; mm < MC; ++mm) {
        const int m = ch * MC + mm;
        if (m >= p.M) break;
        T* dst = p.dbasis + (static_cast<int64_t>(tile.b) * p.M + m) * HW + pix0;
#pragma unroll
        for (int q = 0; q < kPix; ++q)
          if (q < nvalid) dst[q] = db[q][mm];
      }
    }
    for (int g = 0; g < p.G; ++g) {
      T* dst = p.dscale + (static_cast<int64_t>(tile.b) * p.G + g) * HW + pix0;
#pragma unroll
      for (int q = 0; q < kPix; ++q)
        if (q < nvalid) dst[q] = ds_sh[(g * kPix + q) * kThreads + threadIdx.x];
    }
  }
}

template <typename T, int MC>
size_t pixel_smem(const IkParams<T>& p) {
  return (static_cast<size_t>(p.K) * p.K * MC + halo_size(p.G) + static_cast<size_t>(p.G) * kPix * kThreads) *
         sizeof(T);
}

// Calls f(kernel, smem) with the kernel instance for p.
template <typename T, typename F>
void with_pixel_kernel(const IkParams<T>& p, F&& f) {
  if constexpr (std::is_same<T, double>::value) {
    f(ikconv_bwd_pixel_kernel<T, 2>, pixel_smem<T, 2>(p));
  } else if (atom_chunk(p.M, false) == 4) {
    f(ikconv_bwd_pixel_kernel<T, 4>, pixel_smem<T, 4>(p));
  } else {
    f(ikconv_bwd_pixel_kernel<T, 2>, pixel_smem<T, 2>(p));
  }
}

}  // namespace

template <typename T>
int ikconv_backward_pixel_slots(const IkParams<T>& p) {
  int blocks = 0;
  with_pixel_kernel(p, [&](auto kernel, size_t smem) {
    const void* fn = reinterpret_cast<const void*>(kernel);
    allow_shared_memory(fn, smem, "inverse_kernel_conv backward");
    blocks = persistent_grid(fn, kThreads, smem, p.tiles());
  });
  return blocks * kWarps;
}

template <typename T>
void ikconv_backward_pixel_launch(const IkParams<T>& p, int slots, cudaStream_t stream) {
  with_pixel_kernel(p, [&](auto kernel, size_t smem) {
    kernel<<<slots / kWarps, kThreads, smem, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template int ikconv_backward_pixel_slots<float>(const IkParams<float>&);
template int ikconv_backward_pixel_slots<double>(const IkParams<double>&);
template void ikconv_backward_pixel_launch<float>(const IkParams<float>&, int, cudaStream_t);
template void ikconv_backward_pixel_launch<double>(const IkParams<double>&, int, cudaStream_t);

}  // namespace cuda
}  // namespace inik_fast
