// Per-tile building blocks of the inverse-kernel convolution kernels (device code); the tile
// geometry is described in ikconv_cuda.h.
#pragma once

#include "cuda_common.cuh"
#include "ikconv_cuda.h"

namespace inik_fast {
namespace cuda {

struct Tile {
  int b, y0, x0;
};

template <typename T>
__device__ __forceinline__ Tile tile_at(const IkParams<T>& p, int64_t t) {
  Tile tile;
  tile.x0 = static_cast<int>(t % p.tiles_x) * kTile;
  t /= p.tiles_x;
  tile.y0 = static_cast<int>(t % p.tiles_y) * kTile;
  tile.b = static_cast<int>(t / p.tiles_y);
  return tile;
}

// Calls f(std::integral_constant<int, 2g + 3>()): group g's window size as a compile-time constant.
template <typename F>
__device__ __forceinline__ void with_window(int g, F&& f) {
  switch (g) {
    case 0: f(std::integral_constant<int, 3>()); break;
    case 1: f(std::integral_constant<int, 5>()); break;
    case 2: f(std::integral_constant<int, 7>()); break;
    case 3: f(std::integral_constant<int, 9>()); break;
    case 4: f(std::integral_constant<int, 11>()); break;
    case 5: f(std::integral_constant<int, 13>()); break;
    case 6: f(std::integral_constant<int, 15>()); break;
    case 7: f(std::integral_constant<int, 17>()); break;
    default: f(std::integral_constant<int, 19>()); break;
  }
}

// Copies rows x cols pixels (cols <= 64) of one image plane, from (y0, x0) on (may be negative),
// into shared memory with row stride `stride`; pixels outside the image are zero (the zero
// padding). Thread t takes column t % 64 of rows t / 64, t / 64 + nt / 64, ...: coalesced loads,
// kRound of them in flight before the first store.
template <typename T>
__device__ __forceinline__ void stage_window(T* dst, int stride, const T* __restrict__ plane, int H, int W, int y0,
                                             int x0, int rows, int cols) {
  constexpr int kRound = 8;
  const int hx = threadIdx.x % 64, step = blockDim.x / 64, x = x0 + hx;
  if (hx >= cols) return;
  const bool col_in = x >= 0 && x < W;
  for (int hy0 = threadIdx.x / 64; hy0 < rows; hy0 += kRound * step) {
    T v[kRound];
#pragma unroll
    for (int k = 0; k < kRound; ++k) {
      const int hy = hy0 + k * step, y = y0 + hy;
      v[k] = hy < rows && col_in && y >= 0 && y < H ? plane[static_cast<int64_t>(y) * W + x] : T(0);
    }
#pragma unroll
    for (int k = 0; k < kRound; ++k)
      if (hy0 + k * step < rows) dst[(hy0 + k * step) * stride + hx] = v[k];
  }
}

// The kPix values src[0 .. kPix) of one thread's pixels (zero from nvalid on): two 16-byte loads
// when all are in the image and src is 16-byte aligned, else one load per pixel.
template <typename T, int P>
__device__ __forceinline__ void load_pixels(T (&out)[P], const T* src, int nvalid) {
  constexpr int kV = 16 / sizeof(T);
  static_assert(P % kV == 0, "whole vectors");
  if (nvalid == P && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
#pragma unroll
    for (int v = 0; v < P / kV; ++v) {
      const Vec<T, kV> t = reinterpret_cast<const Vec<T, kV>*>(src)[v];
#pragma unroll
      for (int k = 0; k < kV; ++k) out[v * kV + k] = t.v[k];
    }
  } else {
#pragma unroll
    for (int q = 0; q < P; ++q) out[q] = q < nvalid ? src[q] : T(0);
  }
}

// Group g's window of atoms m0 .. m0 + nch * MC - 1 into dst[ch][tap][mm] (tap = i * kw + j of
// the (2g+3)^2 window, zero for m >= M). flip stores the window rotated by 180 degrees.
template <typename T, int MC>
__device__ __forceinline__ void stage_atoms(T* dst, const T* __restrict__ atoms, int g, int m0, int nch, int M, int K,
                                            bool flip) {
  const int r = g + 1, kw = 2 * r + 1, off = K / 2 - r;
  for (int i = threadIdx.x; i < nch * kw * kw * MC; i += blockDim.x) {
    const int mm = i % MC, rest = i / MC;
    const int tap = rest % (kw * kw), m = m0 + (rest / (kw * kw)) * MC + mm;
    int ti = tap / kw, tj = tap % kw;
    if (flip) {
      ti = kw - 1 - ti;
      tj = kw - 1 - tj;
    }
    dst[i] = m < M ? atoms[((static_cast<int64_t>(g) * M + m) * K + off + ti) * K + off + tj] : T(0);
  }
}

// d[p][mm] += sum over the KW x KW window of at[i * KW + j][mm] * xs[i * stride + p + j]: the
// window sums of MC atoms at P consecutive pixels; xs is the top-left of pixel 0's window.
template <int KW, int P, int MC, typename T>
__device__ __forceinline__ void window_sum(T (&d)[P][MC], const T* xs, int stride, const T* at) {
  const Vec<T, MC>* a = reinterpret_cast<const Vec<T, MC>*>(at);
#pragma unroll 1
  for (int i = 0; i < KW; ++i) {
    T xv[P + KW - 1];
#pragma unroll
    for (int q = 0; q < P + KW - 1; ++q) xv[q] = xs[i * stride + q];
#pragma unroll
    for (int j = 0; j < KW; ++j) {
      const Vec<T, MC> w = a[i * KW + j];
#pragma unroll
      for (int p = 0; p < P; ++p)
#pragma unroll
        for (int mm = 0; mm < MC; ++mm) d[p][mm] += w.v[mm] * xv[p + j];
    }
  }
}

// F[g, c, m, (y, x)] = S[g] Bt[m] sum_o Gam[o] Wt[o, g, c, m] for atoms m0 .. m0 + MC - 1 at the
// rows x cols pixels (cols <= CW) from (y0, x0) on, passed as put(hy, hx, Vec) (zero outside the
// image and for m >= M). Thread t takes column t % CW of every (nt / CW)-th row, kBatch rows at
// a time, so that their loads are in flight together.
template <typename T, int MC, int CW, int kBatch, typename Put>
__device__ __forceinline__ void stage_f(const IkParams<T>& p, int b, int g, int c, int m0, int y0, int x0, int rows,
                                        int cols, Put put) {
  const int hx = threadIdx.x % CW, step = blockDim.x / CW, x = x0 + hx;
  if (hx >= cols) return;
  const bool col_in = x >= 0 && x < p.W;
  const int64_t HW = p.hw();
  T wm[MC];
  for (int hy0 = threadIdx.x / CW; hy0 < rows; hy0 += kBatch * step) {
    int pix[kBatch];  // offsets in a plane (the ops check H * W < 2^31)
    bool ok[kBatch];
    T f[kBatch][MC], sb[kBatch][MC];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int hy = hy0 + k * step, y = y0 + hy;
      ok[k] = hy < rows && col_in && y >= 0 && y < p.H;
      pix[k] = ok[k] ? y * p.W + x : 0;
      const T s = ok[k] ? p.scale[(static_cast<int64_t>(b) * p.G + g) * HW + pix[k]] : T(0);
#pragma unroll
      for (int mm = 0; mm < MC; ++mm) {
        const int m = m0 + mm;
        sb[k][mm] = ok[k] && m < p.M ? s * p.basis[(static_cast<int64_t>(b) * p.M + m) * HW + pix[k]] : T(0);
        f[k][mm] = T(0);
      }
    }
#pragma unroll 2
    for (int o = 0; o < p.O; ++o) {
      const T* w = p.weight + ((static_cast<int64_t>(o) * p.G + g) * p.C + c) * p.M;
#pragma unroll
      for (int mm = 0; mm < MC; ++mm) wm[mm] = m0 + mm < p.M ? w[m0 + mm] : T(0);
      const T* gam = p.gy + (static_cast<int64_t>(b) * p.O + o) * HW;
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const T gv = ok[k] ? gam[pix[k]] : T(0);
#pragma unroll
        for (int mm = 0; mm < MC; ++mm) f[k][mm] += gv * wm[mm];
      }
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (hy0 + k * step >= rows) break;
      Vec<T, MC> v;
#pragma unroll
      for (int mm = 0; mm < MC; ++mm) v.v[mm] = f[k][mm] * sb[k][mm];
      put(hy0 + k * step, hx, v);
    }
  }
}

}  // namespace cuda
}  // namespace inik_fast
