// CPU kernel of inik_fast::ikconv_forward: y = bias + (x if residual)
//   + sum_{g,c,m} weight[o,g,c,m] * scale[g] * basis[m] * D[g,c,m],  D = atom[g,m] (*) x[c].
//
// Parallel over tiles (dynamically scheduled). Per tile, group g and channel c, register tiles
// of up to kMaxMB atoms x kP pixel vectors accumulate D over the window taps (one x load per
// tap feeds MB FMAs), then are mixed straight into the tile's y accumulators: D is never stored.
#include <torch/library.h>

#include "ikconv_tile.h"
#include "parallel.h"

namespace inik_fast::cpu {
namespace {

constexpr const char* kOp = "ikconv_forward";

// S: the images' dtype; T: the compute dtype (ikconv_tile.h).
template <class S, class T = acc_t<S>>
struct Forward {
  const IkArgs& a;
  const Tiles<T>& tiles;
  const PackedAtoms<T>& atoms;
  const std::vector<Block> m_blocks = split(int(a.M), kMaxMB);
  // per-thread planes: x [C], scale [G], basis [M], y [O]
  Arena<T> mem{(a.C + a.G + a.M + a.O) * tiles.plane()};
  T *x = mem.take(a.C * tiles.plane()), *s = mem.take(a.G * tiles.plane()), *bt = mem.take(a.M * tiles.plane()),
    *y = mem.take(a.O * tiles.plane());

  // y[o] += sum_{mi} weight[o,g,c,m0+mi] * scale[g] * basis[m0+mi] * D[g,c,m0+mi] on the tile.
  template <int MB>
  void mix_atoms(int64_t g, int64_t c, int m0, int rows) const {
    constexpr int N = Simd<T>::N;
    const int r = int(g) + 1, k = 2 * r + 1;
    const int64_t P = tiles.plane(), GCM = a.G * a.C * a.M;
    const T* wt = a.weight.data_ptr<T>() + (g * a.C + c) * a.M + m0;
    const T* xc = x + c * P;
    const T* sg = s + g * P;
    for (int i = 0; i < rows; ++i) {
      vec_t<T> acc[MB][kP];
      window_dot<T, MB>(xc + tiles.at(i - r, -r), tiles.stride, k, atoms.group(g) + m0, a.M, acc);
      const int64_t pix = tiles.at(i, 0);
#pragma GCC unroll 4
      for (int p = 0; p < kP; ++p) {
        const vec_t<T> sv = load(sg + pix + p * N);
#pragma GCC unroll 16
        for (int mi = 0; mi < MB; ++mi) acc[mi][p] *= sv * load(bt + (m0 + mi) * P + pix + p * N);
      }
      for (int64_t o = 0; o < a.O; ++o) {
        T* yo = y + o * P + pix;
#pragma GCC unroll 4
        for (int p = 0; p < kP; ++p) {
          vec_t<T> yv = load(yo + p * N);
#pragma GCC unroll 16
          for (int mi = 0; mi < MB; ++mi) yv += acc[mi][p] * wt[o * GCM + mi];
          store(yo + p * N, yv);
        }
      }
    }
  }

  void tile(int64_t t, S* out) {
    const auto tl = tiles.tile(t);
    const int64_t HW = a.H * a.W, P = tiles.plane();
    for (int64_t c = 0; c < a.C; ++c) tiles.load(a.x.data_ptr<S>() + (tl.b * a.C + c) * HW, tl, tiles.R, x + c * P);
    for (int64_t g = 0; g < a.G; ++g) tiles.load(a.scale.data_ptr<S>() + (tl.b * a.G + g) * HW, tl, 0, s + g * P);
    for (int64_t m = 0; m < a.M; ++m) tiles.load(a.basis.data_ptr<S>() + (tl.b * a.M + m) * HW, tl, 0, bt + m * P);
    for (int64_t o = 0; o < a.O; ++o) {
      const T bias = a.bias.defined() ? a.bias.data_ptr<T>()[o] : T(0);
      for (int64_t q = o * P + tiles.at(0, 0); q < o * P + tiles.at(tiles.TH, 0); ++q)
        y[q] = bias + (a.residual ? x[q] : T(0));  // residual: O == C, x planes match y planes
    }
    for (int64_t g = 0; g < a.G; ++g)
      for (int64_t c = 0; c < a.C; ++c)
        for (const Block mb : m_blocks)
          with_const<kMaxMB>(mb.count, [&](auto MB) {
            this->template mix_atoms<decltype(MB)::value>(g, c, mb.first, tl.rows);
          });
    for (int64_t o = 0; o < a.O; ++o) tiles.store(y + o * P, tl, out + (tl.b * a.O + o) * HW);
  }
};

template <class S, class T = acc_t<S>>
void forward(const IkArgs& a, at::Tensor& out) {
  const Tiles<T> tiles(a);
  const PackedAtoms<T> atoms(a);
  S* y = out.data_ptr<S>();
  parallel_items(
      tiles.count(), [&] { return Forward<S>{a, tiles, atoms}; }, [&](Forward<S>& f, int64_t t) { f.tile(t, y); });
}

at::Tensor ikconv_forward(const at::Tensor& x, const at::Tensor& atoms, const at::Tensor& scale,
                          const at::Tensor& basis, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          bool residual) {
  const IkArgs a = check_ikconv(kOp, x, atoms, scale, basis, weight, bias, residual);
  at::Tensor out = at::empty({a.B, a.O, a.H, a.W}, a.x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), kOp, [&] { forward<scalar_t>(a, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(inik_fast, CPU, m) { m.impl("ikconv_forward", &ikconv_forward); }

}  // namespace inik_fast::cpu
