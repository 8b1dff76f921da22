// Shared pieces of the CPU inverse-kernel convolution (docs/ops.md, op 2): argument
// checks, the tile geometry, tile buffers with a zero-padded halo, and the windowed
// multiply-accumulate that computes D = atom (*) x for a few atoms at once.
//
// Images (x, scale, basis, y and their gradients) are stored in S, any of float16, bfloat16,
// float32 and float64; atoms, weight, bias and the tile buffers are in the compute dtype
// T = acc_t<S> (float32 for the half types): tiles are converted as they are loaded and stored.
//
// The image is cut into fixed tiles of TH rows x TW columns (TW = kP vectors). Each tile is
// copied, with a halo of R = K // 2 pixels that is zero outside the image, into thread-local
// buffers ("planes") of (TH + 2R) rows x `stride` columns, so the inner loops have no branches.
// Tile pixel (i, j) sits at plane offset (i + R) * stride + CO + j, CO = R rounded up to a
// vector, so that unshifted rows are vector aligned.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "checks.h"
#include "convert.h"
#include "simd.h"

namespace inik_fast::cpu {

// Vectors per tile row; also the pixel-vector count of the register tiles below.
constexpr int kP = kVecRegs >= 32 ? 4 : 2;
// Atoms per register tile in the D computation: kMaxMB x kP accumulators + kP x vectors.
constexpr int kMaxMB = 5;
// Rows per tile (the tile is TH x kP vectors; 16 x 64 px for float32 with AVX-512).
constexpr int kTileRows = 16;

// f(std::integral_constant<int, n>) for a runtime n in 1..Max, so that register tiles have
// compile-time sizes.
template <int Max, class F>
inline void with_const(int n, F&& f) {
  if constexpr (Max >= 1) {
    if (n == Max) {
      f(std::integral_constant<int, Max>{});
      return;
    }
    with_const<Max - 1>(n, std::forward<F>(f));
  }
}

// Consecutive pieces of 0..n-1, each at most `most` long, as equal as possible.
struct Block {
  int first, count;
};
inline std::vector<Block> split(int n, int most) {
  const int pieces = (n + most - 1) / most;
  std::vector<Block> out;
  for (int i = 0, first = 0; i < pieces; ++i) {
    const int count = n / pieces + (i < n % pieces ? 1 : 0);
    out.push_back({first, count});
    first += count;
  }
  return out;
}

// The op's arguments, contiguous (bias undefined when absent), and their sizes.
struct IkArgs : IkShape {
  at::Tensor x, atoms, scale, basis, weight, bias;
  bool residual;
};

// x, scale and basis share a dtype; atoms, weight and bias are in its compute dtype.
inline IkArgs check_ikconv(const char* op, const at::Tensor& x, const at::Tensor& atoms, const at::Tensor& scale,
                           const at::Tensor& basis, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           bool residual) {
  const auto dt = float_dtype(op, "x", x), acc = acc_dtype(dt);
  check_cpu(op, "x", x, dt);
  check_cpu(op, "atoms", atoms, acc);
  check_cpu(op, "scale", scale, dt);
  check_cpu(op, "basis", basis, dt);
  check_cpu(op, "weight", weight, acc);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) check_cpu(op, "bias", *bias, acc);
  const IkShape shape = check_ikconv_shapes(op, x, atoms, scale, basis, weight, bias, residual);
  return {shape,          x.contiguous(),      atoms.contiguous(),
          scale.contiguous(), basis.contiguous(), weight.contiguous(),
          has_bias ? bias->contiguous() : at::Tensor(), residual};
}

// Where tile pixels live in a plane (of compute dtype T), and which tile of the image a work item is.
template <class T>
struct Tiles {
  static constexpr int N = Simd<T>::N;
  static constexpr int TW = kP * N;
  static constexpr int TH = kTileRows;
  int64_t H, W, B, ny, nx;
  int R, CO, stride;

  explicit Tiles(const IkArgs& a)
      : H(a.H), W(a.W), B(a.B), ny((a.H + TH - 1) / TH), nx((a.W + TW - 1) / TW), R(int(a.K / 2)) {
    CO = (R + N - 1) / N * N;
    stride = (CO + TW + R + N - 1) / N * N;
  }
  int64_t count() const { return B * ny * nx; }
  int64_t plane() const { return int64_t(TH + 2 * R) * stride; }
  int64_t at(int i, int j) const { return int64_t(i + R) * stride + CO + j; }

  struct Tile {
    int64_t b, h0, w0;
    int rows, cols;  // pixels of the tile inside the image
  };
  Tile tile(int64_t t) const {
    const int64_t b = t / (ny * nx), y = t / nx % ny, x = t % nx;
    const int64_t h0 = y * TH, w0 = x * TW;
    return {b, h0, w0, int(std::min<int64_t>(TH, H - h0)), int(std::min<int64_t>(TW, W - w0))};
  }

  // Copy image plane `src` [H, W] around tile `tl` into `dst`: rows -halo .. TH+halo-1 of the
  // plane, every column, zero outside the image.
  template <class S>
  void load(const S* src, const Tile& tl, int halo, T* dst) const {
    const int64_t c0 = tl.w0 - CO;  // image column of plane column 0
    const int64_t lo = std::max<int64_t>(0, c0), hi = std::min<int64_t>(W, c0 + stride);
    for (int i = -halo; i < TH + halo; ++i) {
      T* row = dst + int64_t(i + R) * stride;
      std::fill(row, row + stride, T(0));
      const int64_t h = tl.h0 + i;
      if (h >= 0 && h < H && lo < hi) convert(src + h * W + lo, row + (lo - c0), hi - lo);
    }
  }

  // Copy the tile's pixels inside the image from plane `src` to image plane `dst` [H, W].
  template <class S>
  void store(const T* src, const Tile& tl, S* dst) const {
    for (int i = 0; i < tl.rows; ++i) convert(src + at(i, 0), dst + (tl.h0 + i) * W + tl.w0, tl.cols);
  }
};

// Each group's window of the atoms, tap-major for the inner loops: group g's block holds
// atoms[g, m, R + du, R + dv] at [(du + r) * k + (dv + r)) * M + m], r = g + 1, k = 2r + 1.
template <class T>
struct PackedAtoms {
  std::vector<T> data;
  std::vector<int64_t> offset;  // start of group g's block

  PackedAtoms(const IkArgs& a) {
    const T* src = a.atoms.data_ptr<T>();
    const int64_t M = a.M, K = a.K, R = K / 2;
    for (int64_t g = 0; g < a.G; ++g) {
      offset.push_back(int64_t(data.size()));
      const int64_t r = g + 1, k = 2 * r + 1;
      for (int64_t u = 0; u < k; ++u)
        for (int64_t v = 0; v < k; ++v)
          for (int64_t m = 0; m < M; ++m) data.push_back(src[((g * M + m) * K + R - r + u) * K + R - r + v]);
    }
  }
  const T* group(int64_t g) const { return data.data() + offset[g]; }
};

// acc[mi][p] = sum over the k x k taps of atom[m0 + mi] * x at the tap's shift, for kP pixel
// vectors. `x` points at the plane position of tap (0, 0) for the first pixel (the tile pixel
// shifted by (-r, -r)); `a` at the packed atoms of the group, offset by m0, with `lda` = M.
template <class T, int MB>
inline void window_dot(const T* __restrict x, int64_t stride, int k, const T* __restrict a, int64_t lda,
                       vec_t<T> (&acc)[MB][kP]) {
  constexpr int N = Simd<T>::N;
#pragma GCC unroll 16
  for (int mi = 0; mi < MB; ++mi)
#pragma GCC unroll 4
    for (int p = 0; p < kP; ++p) acc[mi][p] = vec_t<T>{};
  for (int u = 0; u < k; ++u, x += stride) {
    for (int v = 0; v < k; ++v, a += lda) {
      vec_t<T> xv[kP];
#pragma GCC unroll 4
      for (int p = 0; p < kP; ++p) xv[p] = in_register(load(x + v + p * N));
#pragma GCC unroll 16
      for (int mi = 0; mi < MB; ++mi) {
        const T w = a[mi];
#pragma GCC unroll 4
        for (int p = 0; p < kP; ++p) acc[mi][p] += xv[p] * w;
      }
    }
  }
}

}  // namespace inik_fast::cpu
