// A 3x3 convolution, zero padding 1, stride 1, no bias, on channels_last maps, by Winograd's
// F(2x2, 3x3): each 2x2 block of outputs from its 4x4 input patch with 16 multiplies a channel
// pair instead of 36, so 2.25x fewer multiply-adds than a direct convolution, the trunk's
// eval-time bottleneck (oneDNN's direct convolutions run at about 80% of the FMA peak, so no
// direct form could gain more than 1.25x). The transforms' coefficients are 0, +-1 and 1/2, so
// float32 rounds about as a direct convolution does.
//
//   V = B^T d B (input patch),  U = G g G^T (weight),  y = A^T (sum_c U .* V) A.
//
// A work item is one row of 2x2 output tiles. It goes through the row in blocks of kRows tiles:
// their 16 transformed patches (V, [16][kRows][Cp]) into thread scratch, then for each of the 16
// positions a [kRows x Cp] x [Cp x Op] product, in register blocks of R tiles x NC vectors of
// outputs (U stays in L2), written to scratch M, then the output transform of M into y. Nothing
// of map size goes through memory but the input and the output.
// Channels are padded to whole vectors in V, U and M (zeros), so any C and O work. xs are the
// channel pieces of the input (conv(cat(xs))) without forming the concatenation.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "checks.h"
#include "parallel.h"
#include "simd.h"

namespace inik_fast::cpu {
namespace {

constexpr int kRows = 12;  // tiles per block

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The first n (< a vector's) lanes at p, the rest zero; and their store.
template <class T>
vec_t<T> load_n(const T* p, int64_t n) {
  T buf[Simd<T>::N] = {};
  std::copy(p, p + n, buf);
  return load(buf);
}
template <class T>
void store_n(T* p, vec_t<T> v, int64_t n) {
  T buf[Simd<T>::N];
  store(buf, v);
  std::copy(buf, buf + n, p);
}

// U[p][c'][o] = (G g G^T)[p] for weight g [O, C, 3, 3], C's pieces placed at their padded offsets.
template <class T>
std::vector<T> transform_weight(const at::Tensor& weight, const std::vector<int64_t>& piece_c,
                                const std::vector<int64_t>& piece_off, int64_t Cp, int64_t Op) {
  std::vector<T> U(16 * Cp * Op, T(0));
  const at::Tensor w = weight.to(c10::CppTypeToScalarType<T>::value).contiguous();
  const T* g = w.const_data_ptr<T>();
  const int64_t O = weight.size(0), C = weight.size(1);
  for (int64_t o = 0; o < O; ++o) {
    int64_t c = 0;
    for (size_t k = 0; k < piece_c.size(); ++k) {
      for (int64_t j = 0; j < piece_c[k]; ++j, ++c) {
        const T* k3 = g + (o * C + c) * 9;
        T t[4][3];  // G g: rows of G = [1,0,0], [1/2,1/2,1/2], [1/2,-1/2,1/2], [0,0,1]
        for (int i = 0; i < 3; ++i) {
          const T a = k3[i], b = k3[3 + i], d = k3[6 + i];
          t[0][i] = a;
          t[1][i] = T(0.5) * (a + b + d);
          t[2][i] = T(0.5) * (a - b + d);
          t[3][i] = d;
        }
        for (int r = 0; r < 4; ++r) {  // (G g) G^T
          const T a = t[r][0], b = t[r][1], d = t[r][2];
          const T row[4] = {a, T(0.5) * (a + b + d), T(0.5) * (a - b + d), d};
          for (int s = 0; s < 4; ++s) U[((r * 4 + s) * Cp + piece_off[k] + j) * Op + o] = row[s];
        }
      }
    }
  }
  return U;
}

template <class T>
struct Conv {
  using V = vec_t<T>;
  static constexpr int L = Simd<T>::N;
  std::vector<const T*> xp;            // pieces, channels_last [B, H, W, C_k]
  std::vector<int64_t> xc, xoff;       // their channels and offsets in the padded K
  int64_t H, W, Cp, O, Op, tiles_w;
  const T* U;
  T* y;                                // channels_last [B, H, W, O]

  // V[p][r][:] for the kRows tiles from tile column tx0 of tile row ty (outside the map: zeros).
  void input_transform(T* Vs, int64_t b, int64_t ty, int64_t tx0) const {
    const V zero{};
    for (int r = 0; r < kRows; ++r) {
      const int64_t h0 = 2 * ty - 1, w0 = 2 * (tx0 + r) - 1;
      for (size_t k = 0; k < xp.size(); ++k) {
        const int64_t C = xc[k];
        const T* base = xp[k] + b * H * W * C;
        for (int64_t c = 0; c < C; c += L) {
          const int64_t n = std::min<int64_t>(L, C - c);
          V d[4][4];
          for (int i = 0; i < 4; ++i) {
            const int64_t h = h0 + i;
            for (int j = 0; j < 4; ++j) {
              const int64_t w = w0 + j;
              if (h < 0 || h >= H || w < 0 || w >= W) d[i][j] = zero;
              else {
                const T* p = base + (h * W + w) * C + c;
                d[i][j] = n == L ? load(p) : load_n(p, n);
              }
            }
          }
          V t[4][4];  // B^T d: rows of B^T = [1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]
          for (int j = 0; j < 4; ++j) {
            t[0][j] = d[0][j] - d[2][j];
            t[1][j] = d[1][j] + d[2][j];
            t[2][j] = d[2][j] - d[1][j];
            t[3][j] = d[1][j] - d[3][j];
          }
          T* out = Vs + r * Cp + xoff[k] + c;
          for (int i = 0; i < 4; ++i) {  // (B^T d) B
            const V v[4] = {t[i][0] - t[i][2], t[i][1] + t[i][2], t[i][2] - t[i][1], t[i][1] - t[i][3]};
            for (int j = 0; j < 4; ++j) store(out + (i * 4 + j) * kRows * Cp, v[j]);
          }
        }
      }
    }
  }

  // M[p][r][o0 : o0 + NC * L] = V[p][r][:] . U[p][:][o0 : ...] for all kRows tiles, the
  // products in R x NC registers (R * NC + NC + 1 of them).
  template <int R, int NC>
  void product(const T* Vs, T* Ms, int64_t o0) const {
    static_assert(kRows % R == 0 && R * NC + NC + 1 <= kVecRegs);
    for (int p = 0; p < 16; ++p) {
      const T* u = U + p * Cp * Op + o0;
      for (int r0 = 0; r0 < kRows; r0 += R) {
        const T* v = Vs + (p * kRows + r0) * Cp;
        V acc[R][NC] = {};
        for (int64_t k = 0; k < Cp; ++k) {
          V w[NC];
          for (int j = 0; j < NC; ++j) w[j] = in_register(load(u + k * Op + j * L));
          for (int r = 0; r < R; ++r) {
            const V a = in_register(splat(v[r * Cp + k]));
            for (int j = 0; j < NC; ++j) acc[r][j] += a * w[j];
          }
        }
        T* m = Ms + (p * kRows + r0) * Op + o0;
        for (int r = 0; r < R; ++r)
          for (int j = 0; j < NC; ++j) store(m + r * Op + j * L, acc[r][j]);
      }
    }
  }

  // y's 2x2 blocks of the kRows tiles from M: A^T m A, rows of A^T = [1,1,1,0], [0,1,-1,-1].
  void output_transform(const T* Ms, int64_t b, int64_t ty, int64_t tx0) const {
    for (int r = 0; r < kRows; ++r) {
      const int64_t h0 = 2 * ty, w0 = 2 * (tx0 + r);
      if (w0 >= W) break;
      for (int64_t o = 0; o < O; o += L) {
        V m[16];
        for (int p = 0; p < 16; ++p) m[p] = load(Ms + (p * kRows + r) * Op + o);
        V t[2][4];
        for (int j = 0; j < 4; ++j) {
          t[0][j] = m[j] + m[4 + j] + m[8 + j];
          t[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
        }
        const int64_t n = std::min<int64_t>(L, O - o);
        for (int i = 0; i < 2 && h0 + i < H; ++i) {
          const V out[2] = {t[i][0] + t[i][1] + t[i][2], t[i][1] - t[i][2] - t[i][3]};
          for (int j = 0; j < 2 && w0 + j < W; ++j) {
            T* q = y + ((b * H + h0 + i) * W + w0 + j) * O + o;
            if (n == L) store(q, out[j]);
            else store_n(q, out[j], n);
          }
        }
      }
    }
  }

  void row(T* Vs, T* Ms, int64_t b, int64_t ty) const {
    for (int64_t tx0 = 0; tx0 < tiles_w; tx0 += kRows) {
      input_transform(Vs, b, ty, tx0);
      // 6 x 4 or 12 x 2 of AVX-512's 32 registers, 6 x 2 of AVX2's 16; 12 x 1 for the rest.
      int64_t o0 = 0;
      if constexpr (kVecRegs >= 32)
        for (; o0 + 4 * L <= Op; o0 += 4 * L) product<6, 4>(Vs, Ms, o0);
      for (; o0 + 2 * L <= Op; o0 += 2 * L) product<kVecRegs >= 32 ? 12 : 6, 2>(Vs, Ms, o0);
      for (; o0 < Op; o0 += L) product<12, 1>(Vs, Ms, o0);
      output_transform(Ms, b, ty, tx0);
    }
  }
};

at::Tensor conv3x3_winograd(const std::vector<at::Tensor>& xs, const at::Tensor& weight) {
  constexpr const char* kOp = "conv3x3_winograd";
  TORCH_CHECK(!xs.empty(), kOp, ": xs must hold at least one tensor, got an empty list");
  const at::ScalarType dtype = xs[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, kOp, ": xs[0] must be float32 or float64, got ", dtype);
  int64_t C = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    const std::string name = "xs[" + std::to_string(k) + "]";
    check_cpu(kOp, name.c_str(), xs[k], dtype);
    check_dim(kOp, name.c_str(), xs[k], 4, "[B, C, H, W]");
    TORCH_CHECK(k == 0 || (xs[k].size(0) == xs[0].size(0) && xs[k].size(2) == xs[0].size(2) &&
                           xs[k].size(3) == xs[0].size(3)),
                kOp, ": ", name, " has shape ", shape_str(xs[k].sizes()), " but xs[0] has ", shape_str(xs[0].sizes()),
                "; expected the same batch and size");
    C += xs[k].size(1);
  }
  check_cpu(kOp, "weight", weight, dtype);
  check_dim(kOp, "weight", weight, 4, "[O, C, 3, 3]");
  TORCH_CHECK(weight.size(1) == C && weight.size(2) == 3 && weight.size(3) == 3, kOp, ": weight has shape ",
              shape_str(weight.sizes()), "; expected [O, ", C, ", 3, 3] (C the channels of xs together)");
  const int64_t B = xs[0].size(0), H = xs[0].size(2), W = xs[0].size(3), O = weight.size(0);
  at::Tensor y = at::empty({B, O, H, W}, xs[0].options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(dtype, kOp, [&] {
    using T = scalar_t;
    constexpr int L = Simd<T>::N;
    Conv<T> cv;
    std::vector<at::Tensor> keep;
    int64_t off = 0;
    for (const auto& x : xs) {
      keep.push_back(x.contiguous(at::MemoryFormat::ChannelsLast));
      cv.xp.push_back(keep.back().const_data_ptr<T>());
      cv.xc.push_back(x.size(1));
      cv.xoff.push_back(off);
      off += round_up(x.size(1), L);
    }
    cv.H = H, cv.W = W, cv.Cp = off, cv.O = O, cv.Op = round_up(O, L), cv.tiles_w = (W + 1) / 2;
    const std::vector<T> U = transform_weight<T>(weight, cv.xc, cv.xoff, cv.Cp, cv.Op);
    cv.U = U.data();
    cv.y = y.mutable_data_ptr<T>();
    const int64_t tiles_h = (H + 1) / 2;
    // per thread: V [16][kRows][Cp], then M [16][kRows][Op]
    parallel_items(
        B * tiles_h, [&] { return std::vector<T>(16 * kRows * (cv.Cp + cv.Op)); },
        [&](std::vector<T>& scratch, int64_t item) {
          cv.row(scratch.data(), scratch.data() + 16 * kRows * cv.Cp, item / tiles_h, item % tiles_h);
        });
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(inik_fast, CPU, m) { m.impl("conv3x3_winograd", &conv3x3_winograd); }

}  // namespace inik_fast::cpu
