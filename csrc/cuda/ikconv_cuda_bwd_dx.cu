// Backward of the inverse-kernel convolution, part 3: the image gradient (docs/ops.md)
//   dx[b,c,q] = (Gam[b,c,q] if residual) + sum_{g,m,u,v} atoms[g,m,R+u,R+v] F~[b,g,c,m,q-(u,v)]
// with F = S Bt sum_o Gam Wt recomputed per tile and halo, never stored in device memory.
#include <climits>

#include "ikconv_tile.cuh"

namespace inik_fast {
namespace cuda {
namespace {

// Two warps per tile; lane l of warp w owns row l and the kDxPix pixels from w * kDxPix on.
// One output per pixel and channel, so each thread takes twice the forward's pixels to reuse
// the F values it loads across more taps.
constexpr int kDxWarps = 2;
constexpr int kDxThreads = 32 * kDxWarps;
constexpr int kDxPix = kTile / kDxWarps;

// acc[p] += sum over the KW x KW window of dot(at[i * KW + j], fs[i * stride + p + j]): the
// correlation of MC planes of F (vectors fs) with MC flipped atoms, at P consecutive pixels.
template <int KW, int P, int MC, typename T>
__device__ __forceinline__ void window_dot(T (&acc)[P], const Vec<T, MC>* fs, int stride, const Vec<T, MC>* at) {
#pragma unroll 1
  for (int i = 0; i < KW; ++i) {
    Vec<T, MC> fv[P + KW - 1];
#pragma unroll
    for (int q = 0; q < P + KW - 1; ++q) fv[q] = fs[i * stride + q];
#pragma unroll
    for (int j = 0; j < KW; ++j) {
      const Vec<T, MC> a = at[i * KW + j];
#pragma unroll
      for (int p = 0; p < P; ++p)
#pragma unroll
        for (int mm = 0; mm < MC; ++mm) acc[p] += a.v[mm] * fv[p + j].v[mm];
    }
  }
}

// One block per (tile, run of `cpb` channels). For every channel c, group g and chunk of MC atoms
// it stages F of the tile and a halo of g+1 pixels and group g's flipped windows, then correlates
// them: a gather, so every dx value is summed by one thread in a fixed order. One channel per
// block (the default) gives C times the blocks of one block per tile: at 4 x 256^2 a block per
// tile leaves most of an H200's warp slots empty.
// kMinBlocks as in the atoms kernel: 1 (~168 registers, 6 blocks of 2 warps per SM) or 8 (128).
template <typename T, int MC, int kMinBlocks>
__global__ void __launch_bounds__(kDxThreads, kMinBlocks) ikconv_bwd_dx_kernel(const IkParams<T> p, int cpb) {
  using V = Vec<T, MC>;
  extern __shared__ __align__(16) unsigned char smem[];
  V* fs = reinterpret_cast<V*>(smem);  // F of the tile and halo
  V* at_sh = fs + halo_size(p.G);      // [kw * kw]: the chunk's flipped windows of group g
  const int nch = (p.M + MC - 1) / MC;
  const int runs = (p.C + cpb - 1) / cpb, c0 = static_cast<int>(blockIdx.x % runs) * cpb;
  const Tile tile = tile_at(p, blockIdx.x / runs);
  const int lane = threadIdx.x % 32, col = (threadIdx.x / 32) * kDxPix;
  const int y = tile.y0 + lane;
  const int nvalid = y < p.H ? min(kDxPix, p.W - tile.x0 - col) : 0;
  const int64_t HW = p.hw(), pix0 = static_cast<int64_t>(y) * p.W + tile.x0 + col;

  for (int c = c0; c < min(c0 + cpb, p.C); ++c) {
    T acc[kDxPix] = {};
    for (int g = 0; g < p.G; ++g) {
      const int r = g + 1, stride = halo_stride(r), side = kTile + 2 * r;
      for (int ch = 0; ch < nch; ++ch) {
        __syncthreads();  // the previous step's tiles are no longer read
        stage_atoms<T, MC>(reinterpret_cast<T*>(at_sh), p.atoms, g, ch * MC, 1, p.M, p.K, true);
        stage_f<T, MC, 64, 8>(p, tile.b, g, c, ch * MC, tile.y0 - r, tile.x0 - r, side, side,
                           [&](int hy, int hx, const V& v) { fs[hy * stride + hx] = v; });
        __syncthreads();
        with_window(g, [&](auto kwc) {
          window_dot<decltype(kwc)::value>(acc, fs + lane * stride + col, stride, at_sh);
        });
      }
    }
    const T* gam = p.gy + (static_cast<int64_t>(tile.b) * p.O + c) * HW + pix0;
    T* dst = p.out + (static_cast<int64_t>(tile.b) * p.C + c) * HW + pix0;
#pragma unroll
    for (int q = 0; q < kDxPix; ++q)
      if (q < nvalid) dst[q] = acc[q] + (p.residual ? gam[q] : T(0));
  }
}

}  // namespace

// Chunks of 2 atoms: a thread holds kDxPix + KW - 1 vectors of F, twice as many registers with 4.
// INIK_FAST_CUDA_DX_CHANNELS: channels per block (default 1; C is one block per tile).
template <typename T>
void ikconv_backward_dx_launch(const IkParams<T>& p, cudaStream_t stream) {
  if (p.tiles() == 0) return;
  const int cpb = std::min(std::max(variant("INIK_FAST_CUDA_DX_CHANNELS", 1), 1), p.C);
  const int64_t blocks = p.tiles() * ((p.C + cpb - 1) / cpb);
  TORCH_CHECK(blocks <= INT_MAX, "inverse_kernel_conv: the image is too large (", p.tiles(), " tiles)");
  constexpr int MC = 2;
  const size_t smem = (static_cast<size_t>(halo_size(p.G)) + p.K * p.K) * sizeof(Vec<T, MC>);
  // INIK_FAST_CUDA_DX_MINBLOCKS=8: the float instance built for 8 blocks per SM (default 1), given
  // all the SM's shared memory, the next limit at ~19 KB a block
  auto kernel = ikconv_bwd_dx_kernel<T, MC, 1>;
  if constexpr (!std::is_same<T, double>::value) {
    if (variant("INIK_FAST_CUDA_DX_MINBLOCKS", 1) == 8) {
      kernel = ikconv_bwd_dx_kernel<T, MC, 8>;
      C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                          cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    }
  }
  allow_shared_memory(reinterpret_cast<const void*>(kernel), smem, "inverse_kernel_conv backward");
  kernel<<<static_cast<unsigned>(blocks), kDxThreads, smem, stream>>>(p, cpb);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void ikconv_backward_dx_launch<float>(const IkParams<float>&, cudaStream_t);
template void ikconv_backward_dx_launch<double>(const IkParams<double>&, cudaStream_t);

}  // namespace cuda
}  // namespace inik_fast
