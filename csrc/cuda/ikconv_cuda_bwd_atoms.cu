// Backward of the inverse-kernel convolution, part 2: the atoms' gradient (docs/ops.md)
//   datoms[g,m,R+u,R+v] = sum_{b,c,p} F[b,g,c,m,p] x~[b,c,p+(u,v)],  F = S Bt sum_o Gam Wt
// a matrix product over pixels per tile: [MC atoms x pixels] x [pixels x window taps].
#include "ikconv_tile.cuh"

namespace inik_fast {
namespace cuda {
namespace {

constexpr int kRun = 8;                          // pixels of a row a thread takes in one go
constexpr int kRuns = kTile * kTile / kRun;      // runs per tile
template <int MC>
constexpr int run_stride() {  // F values per run, padded so that runs fall in different banks
  return kRun * MC + 4;
}

// Persistent blocks. Block (x, y) takes the (chunk of MC atoms, group g) items y, y + gridDim.y,
// ... and the tiles x, x + gridDim.x, ...; for each item (window KW), thread t takes the window
// row u = t % KW (all KW taps of it) for the runs t / KW, t / KW + KW', ... of every tile
// (KW' = kThreads / KW), accumulating acc[j][mm] over the block's tiles and channels. The block
// then sums its threads' accumulators in a fixed order and writes the item's window into partial
// record x. With gridDim.y = 1 a block walks every item over a share of the tiles; with one item
// per y, a few tiles per block suffice to fill the device (see atoms_grid).
// kMinBlocks: blocks per SM that the registers must allow (launch bounds); 1 leaves the compiler
// free (~168 registers: 3 blocks, 12 warps per SM), 4 caps them at 128 for 16 warps.
template <typename T, int MC, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks) ikconv_bwd_atoms_kernel(const IkParams<T> p) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* f_sh = reinterpret_cast<T*>(smem);  // F of the tile's pixels, [kRuns][run_stride]
  T* red = f_sh;                         // after the tiles: the block's sums [kw * kw][MC]
  T* xs = f_sh + kRuns * run_stride<MC>();
  const int nch = (p.M + MC - 1) / MC;
  const int64_t HW = p.hw();

  for (int item = blockIdx.y; item < nch * p.G; item += gridDim.y) {
    const int ch = item / p.G, g = item % p.G;
    with_window(g, [&](auto kwc) {
      constexpr int KW = decltype(kwc)::value;
      constexpr int kSplits = kThreads / KW;
      const int r = g + 1, stride = halo_stride(r);
      const int u = threadIdx.x % KW, split = threadIdx.x / KW;
      T acc[KW][MC] = {};
      for (int64_t t = blockIdx.x; t < p.tiles(); t += gridDim.x) {
        const Tile tile = tile_at(p, t);
        for (int c = 0; c < p.C; ++c) {
          __syncthreads();  // the previous step's tiles are no longer read
          stage_window(xs, stride, p.x + (static_cast<int64_t>(tile.b) * p.C + c) * HW, p.H, p.W, tile.y0 - r,
                       tile.x0 - r, kTile + 2 * r, kTile + 2 * r);
          stage_f<T, MC, kTile, 8 / MC>(p, tile.b, g, c, ch * MC, tile.y0, tile.x0, kTile, kTile,
                                [&](int row, int col, const Vec<T, MC>& v) {
                                  const int i = row * kTile + col;
                                  *reinterpret_cast<Vec<T, MC>*>(f_sh + (i / kRun) * run_stride<MC>() +
                                                                 (i % kRun) * MC) = v;
                                });
          __syncthreads();
          if (split < kSplits) {
            for (int run = split; run < kRuns; run += kSplits) {
              const int row = run / (kTile / kRun), x0 = (run % (kTile / kRun)) * kRun;
              const T* xr = xs + (row + u) * stride + x0;
              T xv[kRun + KW - 1];
#pragma unroll
              for (int q = 0; q < kRun + KW - 1; ++q) xv[q] = xr[q];
              const Vec<T, MC>* fr = reinterpret_cast<const Vec<T, MC>*>(f_sh + run * run_stride<MC>());
#pragma unroll
              for (int px = 0; px < kRun; ++px) {
                const Vec<T, MC> f = fr[px];
#pragma unroll
                for (int j = 0; j < KW; ++j)
#pragma unroll
                  for (int mm = 0; mm < MC; ++mm) acc[j][mm] += f.v[mm] * xv[px + j];
              }
            }
          }
        }
      }
      // The block's sum over its threads, split by split in a fixed order.
      __syncthreads();
      for (int i = threadIdx.x; i < KW * KW * MC; i += blockDim.x) red[i] = T(0);
      for (int s = 0; s < kSplits; ++s) {
        __syncthreads();
        if (split == s) {
#pragma unroll
          for (int j = 0; j < KW; ++j)
#pragma unroll
            for (int mm = 0; mm < MC; ++mm) red[(u * KW + j) * MC + mm] += acc[j][mm];
        }
      }
      __syncthreads();
      // Group g's window of the chunk's atoms; the block writes zeros outside the window.
      const int KK = p.K * p.K, off = p.K / 2 - r;
      T* dst = p.datoms + (p.atomic ? 0 : static_cast<int64_t>(blockIdx.x) * p.G * p.M * KK);
      for (int i = threadIdx.x; i < MC * KK; i += blockDim.x) {
        const int mm = i / KK, cell = i % KK, m = ch * MC + mm;
        if (m >= p.M) continue;
        const int wi = cell / p.K - off, wj = cell % p.K - off;
        const bool inside = wi >= 0 && wi < KW && wj >= 0 && wj < KW;
        const T v = inside ? red[(wi * KW + wj) * MC + mm] : T(0);
        T* out = dst + (static_cast<int64_t>(g) * p.M + m) * KK + cell;
        if (!p.atomic) {
          *out = v;
        } else if (inside) {
          atomicAdd(out, v);
        }
      }
    });
  }
}

// Calls f(kernel, smem) with the kernel instance for p. INIK_FAST_CUDA_ATOMS_MINBLOCKS=4 takes
// the float MC = 2 instance built for 4 blocks per SM (default 1; with MC = 4 it spills ~1 KB).
template <typename T, typename F>
void with_atoms_kernel(const IkParams<T>& p, F&& f) {
  auto smem = [&](int stride) { return (static_cast<size_t>(kRuns) * stride + halo_size(p.G)) * sizeof(T); };
  const bool capped = variant("INIK_FAST_CUDA_ATOMS_MINBLOCKS", 1) == 4;
  if constexpr (std::is_same<T, double>::value) {
    f(ikconv_bwd_atoms_kernel<T, 2, 1>, smem(run_stride<2>()));
  } else if (atom_chunk(p.M, false) == 4) {
    f(ikconv_bwd_atoms_kernel<T, 4, 1>, smem(run_stride<4>()));
  } else {
    capped ? f(ikconv_bwd_atoms_kernel<T, 2, 4>, smem(run_stride<2>()))
           : f(ikconv_bwd_atoms_kernel<T, 2, 1>, smem(run_stride<2>()));
  }
}

}  // namespace

// The grid: x splits the tiles (one partial record each), y the (chunk, group) items.
// INIK_FAST_CUDA_ATOMS_SPLIT=0: y = 1 and x as many blocks as run at once (the first version);
// 1 (default): y = every item and x enough splits for 4 waves of blocks, at most one per tile.
template <typename T>
dim3 atoms_grid(const IkParams<T>& p) {
  dim3 grid(1, 1, 1);
  with_atoms_kernel(p, [&](auto kernel, size_t smem) {
    const void* fn = reinterpret_cast<const void*>(kernel);
    allow_shared_memory(fn, smem, "inverse_kernel_conv backward");
    if (variant("INIK_FAST_CUDA_ATOMS_SPLIT", 1) == 0) {
      grid.x = persistent_grid(fn, kThreads, smem, p.tiles());
      return;
    }
    const int mc = std::is_same<T, double>::value ? 2 : atom_chunk(p.M, false);  // as with_atoms_kernel
    const int items = ((p.M + mc - 1) / mc) * p.G;
    const int64_t slots = 4LL * blocks_per_sm(fn, kThreads, smem) * device_attribute(cudaDevAttrMultiProcessorCount);
    grid.x = static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(p.tiles(), (slots + items - 1) / items)));
    grid.y = static_cast<unsigned>(std::min(items, 65535));
  });
  return grid;
}

template <typename T>
int ikconv_backward_atoms_blocks(const IkParams<T>& p) {
  return static_cast<int>(atoms_grid(p).x);
}

template <typename T>
void ikconv_backward_atoms_launch(const IkParams<T>& p, int blocks, cudaStream_t stream) {
  dim3 grid = atoms_grid(p);
  grid.x = blocks;  // the partial records the caller allocated
  with_atoms_kernel(p, [&](auto kernel, size_t smem) {
    kernel<<<grid, kThreads, smem, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template int ikconv_backward_atoms_blocks<float>(const IkParams<float>&);
template int ikconv_backward_atoms_blocks<double>(const IkParams<double>&);
template void ikconv_backward_atoms_launch<float>(const IkParams<float>&, int, cudaStream_t);
template void ikconv_backward_atoms_launch<double>(const IkParams<double>&, int, cudaStream_t);

}  // namespace cuda
}  // namespace inik_fast
