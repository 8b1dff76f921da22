// Shapes, tile geometry and launchers of the inverse-kernel convolution kernels
// (docs/ops.md, op 2): the forward (ikconv_cuda_fwd.cu) and the three backward kernels
// (ikconv_cuda_bwd_*.cu), called from ikconv_cuda_ops.cpp.
//
// Image tiles are kTile x kTile pixels. In the forward and pixel-gradient kernels lane l of warp
// w owns row l of the tile and the kPix pixels [w * kPix, (w + 1) * kPix) of that row, so a
// warp's 32 lanes read 32 different rows of a shared-memory tile: with an odd row stride these
// fall in 32 different banks. Atoms are processed in chunks of MC (2 or 4) per pass, vectors of
// MC values in shared memory, read by all lanes at once (a broadcast).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace inik_fast {
namespace cuda {

constexpr int kTile = 32;
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kPix = kTile / kWarps;

// Arguments of every ikconv kernel. All tensors are contiguous and in the accumulation dtype T.
template <typename T>
struct IkParams {
  const T* x;       // [B, C, H, W]
  const T* atoms;   // [G, M, K, K]
  const T* scale;   // [B, G, H, W]
  const T* basis;   // [B, M, H, W]
  const T* weight;  // [O, G, C, M]
  const T* bias;    // [O] or null
  const T* gy;      // [B, O, H, W], backward only
  T* out;           // forward: y [B, O, H, W]; backward: dx [B, C, H, W]
  T* dscale;        // [B, G, H, W]
  T* dbasis;        // [B, M, H, W]
  T* dweight;       // per-warp partial sums [slots, O, G, C, M], or [O, G, C, M] with atomics
  T* datoms;        // per-block partial sums [blocks, G, M, K, K], or [G, M, K, K] with atomics
  int B, C, O, H, W, G, M, K;
  int tiles_x, tiles_y;
  bool residual;
  bool x_tf32;  // forward: x's values are exact in TF32 (they came from float16/bfloat16)
  bool atomic;  // accumulate dweight/datoms with atomics (non-deterministic) instead of partials

  __host__ __device__ int64_t tiles() const { return static_cast<int64_t>(B) * tiles_x * tiles_y; }
  __host__ __device__ int64_t hw() const { return static_cast<int64_t>(H) * W; }
};

// Row stride and size of a tile with a halo of r pixels: the stride is odd (see above).
__host__ __device__ constexpr int halo_stride(int r) { return kTile + 2 * r + 1; }
__host__ __device__ constexpr int halo_size(int r) { return (kTile + 2 * r) * halo_stride(r); }

// Atoms per chunk: 4 when the chunks of 4 cover M with little padding, else 2 (M = 10 -> 5 x 2).
// float64 uses 2 so that a chunk is one 16-byte vector.
inline int atom_chunk(int M, bool is_double) { return !is_double && (M % 4 == 0 || M % 4 == 3) ? 4 : 2; }

// Launchers, one per kernel file, instantiated for float and double; they run on `stream`.
// Forward (ikconv_cuda_fwd.cu): writes y to p.out.
template <typename T>
void ikconv_forward_launch(const IkParams<T>& p, cudaStream_t stream);
// The same with the window sums on tensor cores, 3xTF32 (ikconv_cuda_fwd_mma.cu; M <= 16, sm_80+).
void ikconv_forward_mma_launch(const IkParams<float>& p, cudaStream_t stream);
// Pixel gradients (ikconv_cuda_bwd_pixel.cu): writes p.dscale and p.dbasis and adds dweight to
// p.dweight: [pixel_slots, O, G, C, M] zero-initialised partial sums, or [O, G, C, M] with atomics.
template <typename T>
int ikconv_backward_pixel_slots(const IkParams<T>& p);
template <typename T>
void ikconv_backward_pixel_launch(const IkParams<T>& p, int slots, cudaStream_t stream);
// Atom gradient (ikconv_cuda_bwd_atoms.cu): writes per-block partial sums [blocks, G, M, K, K] to
// p.datoms, or adds to [G, M, K, K] (zero-initialised) with atomics.
template <typename T>
int ikconv_backward_atoms_blocks(const IkParams<T>& p);
template <typename T>
void ikconv_backward_atoms_launch(const IkParams<T>& p, int blocks, cudaStream_t stream);
// Image gradient (ikconv_cuda_bwd_dx.cu): writes dx to p.out.
template <typename T>
void ikconv_backward_dx_launch(const IkParams<T>& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace inik_fast
