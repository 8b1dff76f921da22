// Forward of the inverse-kernel convolution with the window sums on tensor cores
// (INIK_FAST_CUDA_FWD_MMA=1, float32 accumulation). For group g, channel c and every run of 16
// pixels of a tile row (a segment):
//   D (16 pixels x 16 atoms) = X (16 pixels x taps) * A (taps x 16 atoms),
// X the Toeplitz slab of the staged x tile, X[q][tap] = xs[q + (tap / kw) * stride + tap % kw],
// its taps flattened over the window and padded to a multiple of 8, A the group's windows (M <= 16
// atoms, zero-padded to two n8 tiles). 3xTF32: x = xh + xl, a = ah + al, D += xl ah + xh al + xh ah
// (xl al dropped: float32 accuracy). x from float16/bfloat16 is exact in TF32 (8-bit exponent,
// 10-bit mantissa): xl = 0 and its product is skipped. D is mixed into y as in ikconv_cuda_fwd.cu.
// tests/test_cuda_mma_layout.py emulates this index mapping on the CPU.
#include <climits>

#include "ikconv_tile.cuh"
#include "mma_tf32.cuh"

namespace inik_fast {
namespace cuda {
namespace {

constexpr int kSegPix = 16;                               // pixels of a segment: the MMA's rows
constexpr int kSegs = kTile * kTile / kSegPix / kWarps;  // segments per warp: 8 tile rows of 2
constexpr int kBatch = 4;  // segments whose D a warp holds at once (kBatch x 2 x 4 registers)
constexpr int kMmaOC = 4;  // output channels a block computes: lane t of each quad ends with channel t

// Steps of 8 taps over the kw x kw window.
__host__ __device__ constexpr int tap_steps(int kw) { return (kw * kw + 7) / 8; }

// Offset in the staged tile of tap `tap` of a kw-window; padding taps (their atoms are zero) read
// the window's first pixel, which is staged and finite.
__device__ __forceinline__ int tap_offset(int tap, int kw, int stride) {
  return tap < kw * kw ? (tap / kw) * stride + tap % kw : 0;
}

// Atom of fragment entry k = 0..3 of lane quad position t: the D columns 2t, 2t + 1 of n-tiles 0, 1.
__device__ __forceinline__ int lane_atom(int t, int k) { return (k / 2) * 8 + 2 * t + k % 2; }

// Group g's MMA operands, staged once per group: frag[step][hi, lo][lane] = the lane's B fragments
// {b0, b1 of n-tile 0, b0, b1 of n-tile 1} for taps 8 step .. 8 step + 7, split in TF32 hi + lo;
// toff[step][t] = X offsets of taps 8 step + t and 8 step + t + 4.
__device__ __forceinline__ void stage_mma_atoms(float4* frag, int2* toff, const float* __restrict__ atoms, int g,
                                                int M, int K, int stride) {
  const int r = g + 1, kw = 2 * r + 1, off = K / 2 - r, steps = tap_steps(kw);
  for (int i = threadIdx.x; i < steps * 32; i += blockDim.x) {
    const int step = i / 32, lane = i % 32, gq = lane / 4, t = lane % 4;
    float hi[4], lo[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int tap = step * 8 + t + 4 * (k % 2), m = (k / 2) * 8 + gq;
      const float v =
          tap < kw * kw && m < M ? atoms[((static_cast<int64_t>(g) * M + m) * K + off + tap / kw) * K + off + tap % kw]
                                 : 0.f;
      const Tf32Split s = tf32_split(v);
      hi[k] = s.hi;
      lo[k] = tf32_round(s.lo);
    }
    frag[(2 * step) * 32 + lane] = make_float4(hi[0], hi[1], hi[2], hi[3]);
    frag[(2 * step + 1) * 32 + lane] = make_float4(lo[0], lo[1], lo[2], lo[3]);
  }
  for (int i = threadIdx.x; i < steps * 4; i += blockDim.x)
    toff[i] = make_int2(tap_offset((i / 4) * 8 + i % 4, kw, stride), tap_offset((i / 4) * 8 + i % 4 + 4, kw, stride));
}

// v[o][h] summed over the 4 lanes of a quad, scattered: lane t returns channel t's two values.
__device__ __forceinline__ void quad_reduce_scatter(float (&v)[kMmaOC][2], int t, float (&out)[2]) {
  const bool up2 = t & 2, up1 = t & 1;
  float r[2][2];
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // keep channels (t & 2) + {0, 1}, send the other pair
      const float keep = up2 ? v[2 + j][h] : v[j][h], send = up2 ? v[j][h] : v[2 + j][h];
      r[j][h] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float keep = up1 ? r[1][h] : r[0][h], send = up1 ? r[0][h] : r[1][h];
    out[h] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
  }
}

// One block per (tile, batch item, group of kMmaOC output channels), 4 warps; warp w owns tile
// rows 8w .. 8w + 7. Per (g, c) the block stages x's tile as the FMA kernel does; each warp then
// computes D for its segments, kBatch at a time, and mixes it into per-lane partial sums of y that
// the quad's lanes reduce at once (each lane holds 4 of the 16 atom columns of 2 pixels).
template <bool kSplitX>
__global__ void __launch_bounds__(kThreads) ikconv_fwd_mma_kernel(const IkParams<float> p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int max_steps = tap_steps(2 * p.G + 1);
  float4* frag = reinterpret_cast<float4*>(smem);
  int2* toff = reinterpret_cast<int2*>(frag + max_steps * 2 * 32);
  float* xs = reinterpret_cast<float*>(toff + max_steps * 4);
  const int noc = (p.O + kMmaOC - 1) / kMmaOC;
  const int oc = blockIdx.x % noc;
  const Tile tile = tile_at(p, blockIdx.x / noc);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, t = lane % 4;
  const int64_t HW = p.hw();

  float acc[kSegs][2];  // y of channel oc * kMmaOC + t at pixels gq, gq + 8 of each segment
#pragma unroll
  for (int s = 0; s < kSegs; ++s) acc[s][0] = acc[s][1] = 0.f;

  for (int g = 0; g < p.G; ++g) {
    const int r = g + 1, stride = halo_stride(r), steps = tap_steps(2 * r + 1);
    for (int c = 0; c < p.C; ++c) {
      __syncthreads();  // the previous step's tiles are no longer read
      if (c == 0) stage_mma_atoms(frag, toff, p.atoms, g, p.M, p.K, stride);
      stage_window(xs, stride, p.x + (static_cast<int64_t>(tile.b) * p.C + c) * HW, p.H, p.W, tile.y0 - r,
                   tile.x0 - r, kTile + 2 * r, kTile + 2 * r);
      __syncthreads();
      float w[kMmaOC][4];  // Wt[oc * kMmaOC + o, g, c, m] for the lane's 4 atoms
#pragma unroll
      for (int o = 0; o < kMmaOC; ++o)
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int oo = oc * kMmaOC + o, m = lane_atom(t, k);
          w[o][k] = oo < p.O && m < p.M ? p.weight[((static_cast<int64_t>(oo) * p.G + g) * p.C + c) * p.M + m] : 0.f;
        }
#pragma unroll
      for (int s0 = 0; s0 < kSegs; s0 += kBatch) {
        float d[kBatch][2][4] = {};
        const float* xp[kBatch];  // pixel gq of each segment: the top-left of its window
#pragma unroll
        for (int s = 0; s < kBatch; ++s)
          xp[s] = xs + (warp * (kSegs / 2) + (s0 + s) / 2) * stride + ((s0 + s) % 2) * kSegPix + gq;
#pragma unroll 2
        for (int step = 0; step < steps; ++step) {
          const float4 bh = frag[(2 * step) * 32 + lane], bl = frag[(2 * step + 1) * 32 + lane];
          const int2 o = toff[step * 4 + t];
#pragma unroll
          for (int s = 0; s < kBatch; ++s) {
            float xh[4] = {xp[s][o.x], xp[s][o.x + 8], xp[s][o.y], xp[s][o.y + 8]};
            if constexpr (kSplitX) {
              float xl[4];
#pragma unroll
              for (int k = 0; k < 4; ++k) {
                const Tf32Split sp = tf32_split(xh[k]);
                xh[k] = sp.hi;
                xl[k] = sp.lo;
              }
              mma_tf32(d[s][0], xl, bh.x, bh.y);
              mma_tf32(d[s][1], xl, bh.z, bh.w);
            }
            mma_tf32(d[s][0], xh, bl.x, bl.y);
            mma_tf32(d[s][1], xh, bl.z, bl.w);
            mma_tf32(d[s][0], xh, bh.x, bh.y);
            mma_tf32(d[s][1], xh, bh.z, bh.w);
          }
        }
        // y += Wt S Bt D for the lane's 4 atoms at pixels gq, gq + 8 of each segment.
#pragma unroll
        for (int s = 0; s < kBatch; ++s) {
          const int y = tile.y0 + warp * (kSegs / 2) + (s0 + s) / 2;
          float part[kMmaOC][2];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int x = tile.x0 + ((s0 + s) % 2) * kSegPix + gq + 8 * h;
            const bool in = y < p.H && x < p.W;
            const int64_t pix = static_cast<int64_t>(y) * p.W + x;
            const float sv = in ? p.scale[(static_cast<int64_t>(tile.b) * p.G + g) * HW + pix] : 0.f;
#pragma unroll
            for (int o = 0; o < kMmaOC; ++o) part[o][h] = 0.f;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const int m = lane_atom(t, k);
              const float bv = in && m < p.M ? p.basis[(static_cast<int64_t>(tile.b) * p.M + m) * HW + pix] : 0.f;
              const float e = sv * bv * d[s][k / 2][2 * h + k % 2];
#pragma unroll
              for (int o = 0; o < kMmaOC; ++o) part[o][h] += w[o][k] * e;
            }
          }
          float sum[2];
          quad_reduce_scatter(part, t, sum);
          acc[s0 + s][0] += sum[0];
          acc[s0 + s][1] += sum[1];
        }
      }
    }
  }

  const int oo = oc * kMmaOC + t;
  if (oo >= p.O) return;
  const float bias = p.bias ? p.bias[oo] : 0.f;
#pragma unroll
  for (int s = 0; s < kSegs; ++s) {
    const int y = tile.y0 + warp * (kSegs / 2) + s / 2;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int x = tile.x0 + (s % 2) * kSegPix + gq + 8 * h;
      if (y >= p.H || x >= p.W) continue;
      const int64_t pix = static_cast<int64_t>(y) * p.W + x;
      float v = acc[s][h] + bias;
      if (p.residual) v += p.x[(static_cast<int64_t>(tile.b) * p.C + oo) * HW + pix];
      p.out[(static_cast<int64_t>(tile.b) * p.O + oo) * HW + pix] = v;
    }
  }
}

}  // namespace

void ikconv_forward_mma_launch(const IkParams<float>& p, cudaStream_t stream) {
  TORCH_CHECK(p.M <= 16, "inverse_kernel_conv forward (tensor cores): at most 16 atoms, got ", p.M);
  const int64_t blocks = p.tiles() * ((p.O + kMmaOC - 1) / kMmaOC);
  TORCH_CHECK(blocks <= INT_MAX, "inverse_kernel_conv: the image is too large (", blocks, " tiles)");
  const int max_steps = tap_steps(2 * p.G + 1);
  const size_t smem = max_steps * (2 * 32 * sizeof(float4) + 4 * sizeof(int2)) + halo_size(p.G) * sizeof(float);
  auto kernel = p.x_tf32 ? ikconv_fwd_mma_kernel<false> : ikconv_fwd_mma_kernel<true>;
  allow_shared_memory(reinterpret_cast<const void*>(kernel), smem, "inverse_kernel_conv forward (tensor cores)");
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace inik_fast
