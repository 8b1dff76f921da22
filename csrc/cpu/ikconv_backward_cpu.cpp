// CPU kernel of inik_fast::ikconv_backward (gradient formulas in docs/ops.md, op 2).
//
// Per tile, group g and channel c:
//   E[m] = sum_o Gam[o] weight[o,g,c,m] and F[m] = E[m] S[g] Bt[m] on the tile (and its halo
//   when dx is wanted): cheap, no D needed;
//   D is recomputed in register tiles (window_dot) and used at once for dscale, dbasis, dweight;
//   datoms[g,m,tap] += sum_p F[m,p] x[p + tap]: register tiles of atoms x taps, summed over the tile;
//   dx[q] += sum_{m,tap} atom[g,m,tap] F[m, q - tap] (gather form, from the F halo).
// Reductions over pixels (datoms, dweight, dbias) go into one partial sum per chunk of tiles;
// chunks are a fixed split of the tiles (not of the threads) and are summed in order, so the
// result does not depend on the thread count.
#include <torch/library.h>

#include "ikconv_tile.h"
#include "parallel.h"

namespace inik_fast::cpu {
namespace {

constexpr const char* kOp = "ikconv_backward";
// datoms register tile: kMaxMA atoms x kMaxNT taps of one window row.
constexpr int kMaxMA = kVecRegs >= 32 ? 5 : 2;
constexpr int kMaxNT = 5;
// dx register tile: kDxRows rows x kP vectors.
constexpr int kDxRows = kVecRegs >= 32 ? 3 : 4;
// Partial sums per chunk of tiles: at most this many chunks (fixed, whatever the thread count).
constexpr int64_t kMaxChunks = 32;

// Offsets of one chunk's partial sums: datoms [G, M, K, K], dweight [O, G, C, M], dbias [O].
struct PartialLayout {
  int64_t atoms, weight, bias, size;
  PartialLayout(const IkArgs& a)
      : atoms(0), weight(a.G * a.M * a.K * a.K), bias(weight + a.O * a.G * a.C * a.M), size(bias + a.O) {}
};

// For dx: each atom's window columns atom[g, m, :, v] as tables [M][k][k + 2 (kDxRows - 1)],
// zero-padded by kDxRows - 1 on both ends, so a row block may index past the window.
template <class T>
struct DxColumns {
  std::vector<T> data;
  std::vector<int64_t> offset;

  DxColumns() = default;
  DxColumns(const IkArgs& a, const PackedAtoms<T>& atoms) {
    const int pad = kDxRows - 1;
    for (int64_t g = 0; g < a.G; ++g) {
      offset.push_back(int64_t(data.size()));
      const int k = 2 * int(g) + 3, len = k + 2 * pad;
      const T* ag = atoms.group(g);
      for (int64_t m = 0; m < a.M; ++m)
        for (int v = 0; v < k; ++v)
          for (int j = 0; j < len; ++j) {
            const int u = j - pad;
            data.push_back(u >= 0 && u < k ? ag[(int64_t(u) * k + v) * a.M + m] : T(0));
          }
    }
  }
  const T* group(int64_t g) const { return data.data() + offset[g]; }
};

// S: the images' dtype; T: the compute dtype (ikconv_tile.h).
template <class S, class T = acc_t<S>>
struct Backward {
  using V = vec_t<T>;
  static constexpr int N = Simd<T>::N;
  const IkArgs& a;
  const Tiles<T>& tiles;
  const PackedAtoms<T>& atoms;
  const DxColumns<T>& dx_cols;
  const PartialLayout& L;
  const S* grad;  // grad_y [B, O, H, W]
  const bool need_dx;
  const int64_t P = tiles.plane();
  const std::vector<Block> m_blocks = split(int(a.M), kMaxMB), ma_blocks = split(int(a.M), kMaxMA);
  // per-thread planes: x [C], gam [O], s [G], bt [M], e [M], f [M], ds [G], db [M], dx [C];
  // dw: O x kMaxMB vectors of dweight sums
  Arena<T> mem{(2 * a.C + a.O + 2 * a.G + 4 * a.M) * P + a.O * kMaxMB * N};
  T *x = mem.take(a.C * P), *gam = mem.take(a.O * P), *s = mem.take(a.G * P), *bt = mem.take(a.M * P),
    *e = mem.take(a.M * P), *f = mem.take(a.M * P), *ds = mem.take(a.G * P), *db = mem.take(a.M * P),
    *dx = mem.take(a.C * P), *dw = mem.take(a.O * kMaxMB * N);

  // E and F of (g, c) for all atoms on plane rows [i0, i1) and vectors [v0, v1) of each row.
  void ef(int64_t g, int64_t c, int i0, int i1, int v0, int v1) const {
    const T* wt = a.weight.data_ptr<T>() + (g * a.C + c) * a.M;
    const int64_t GCM = a.G * a.C * a.M;
    const T* sg = s + g * P;
    for (int i = i0; i < i1; ++i)
      for (int vi = v0; vi < v1; ++vi) {
        const int64_t q = tiles.at(i, 0) - tiles.CO + int64_t(vi) * N;
        const V sv = load(sg + q);
        for (int64_t m = 0; m < a.M; ++m) {
          V ev{};
          for (int64_t o = 0; o < a.O; ++o) ev += load(gam + o * P + q) * wt[o * GCM + m];
          store(e + m * P + q, ev);
          store(f + m * P + q, ev * sv * load(bt + m * P + q));
        }
      }
  }

  // D of atoms m0 .. m0+MB-1 for (g, c), consumed at once:
  // ds[g] += sum E Bt D, db[m] += E S D, dweight[o,g,c,m] += sum_p Gam[o] S Bt D.
  template <int MB>
  void d_terms(int64_t g, int64_t c, int m0, int rows, T* part) const {
    const int r = int(g) + 1, k = 2 * r + 1;
    const T* xc = x + c * P;
    const T* sg = s + g * P;
    T* dsg = ds + g * P;
    std::fill(dw, dw + a.O * kMaxMB * N, T(0));
    for (int i = 0; i < rows; ++i) {
      V acc[MB][kP];
      window_dot<T, MB>(xc + tiles.at(i - r, -r), tiles.stride, k, atoms.group(g) + m0, a.M, acc);
      const int64_t pix = tiles.at(i, 0);
#pragma GCC unroll 4
      for (int p = 0; p < kP; ++p) {
        const int64_t q = pix + p * N;
        const V sv = load(sg + q);
        V dsv = load(dsg + q);
#pragma GCC unroll 16
        for (int mi = 0; mi < MB; ++mi) {
          const int64_t mq = (m0 + mi) * P + q;
          const V bv = load(bt + mq), ed = load(e + mq) * acc[mi][p];
          dsv += ed * bv;
          store(db + mq, load(db + mq) + ed * sv);
          acc[mi][p] *= sv * bv;  // S Bt D, for dweight
        }
        store(dsg + q, dsv);
      }
      for (int64_t o = 0; o < a.O; ++o) {
        V go[kP];
#pragma GCC unroll 4
        for (int p = 0; p < kP; ++p) go[p] = load(gam + o * P + pix + p * N);
#pragma GCC unroll 16
        for (int mi = 0; mi < MB; ++mi) {
          T* w = dw + (o * kMaxMB + mi) * N;
          V wv = load(w);
#pragma GCC unroll 4
          for (int p = 0; p < kP; ++p) wv += go[p] * acc[mi][p];
          store(w, wv);
        }
      }
    }
    T* pw = part + L.weight + (g * a.C + c) * a.M + m0;
    for (int64_t o = 0; o < a.O; ++o)
      for (int mi = 0; mi < MB; ++mi) pw[o * a.G * a.C * a.M + mi] += hsum<T>(load(dw + (o * kMaxMB + mi) * N));
  }

  // datoms[g, m0+mi, R-r+u, R-r+v0+t] += sum over the tile of F[m0+mi, p] x[c, p + (u-r, v0+t-r)].
  template <int MA, int NT>
  __attribute__((noinline)) void atom_taps(int64_t g, int64_t c, int m0, int u, int v0, int rows, T* part) const {
    const int r = int(g) + 1;
    const T* xc = x + c * P;
    V acc[MA][NT];
#pragma GCC unroll 8
    for (int mi = 0; mi < MA; ++mi)
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) acc[mi][t] = V{};
    for (int i = 0; i < rows; ++i)
      for (int p = 0; p < kP; ++p) {
        const int64_t q = tiles.at(i, p * N);
        const T* xr = xc + tiles.at(i + u - r, p * N + v0 - r);
        V fv[MA];
#pragma GCC unroll 8
        for (int mi = 0; mi < MA; ++mi) fv[mi] = load(f + (m0 + mi) * P + q);
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
          const V xv = in_register(load(xr + t));
#pragma GCC unroll 8
          for (int mi = 0; mi < MA; ++mi) acc[mi][t] += fv[mi] * xv;
        }
      }
    const int64_t K = a.K, off = K / 2 - r;
    for (int mi = 0; mi < MA; ++mi) {
      T* pa = part + L.atoms + ((g * a.M + m0 + mi) * K + off + u) * K + off + v0;
      for (int t = 0; t < NT; ++t) pa[t] += hsum<T>(acc[mi][t]);
    }
  }

  // dx[c] += sum_{m, tap} atom[g, m, tap] F[m, q - tap] for tile rows i .. i+RB-1. The block
  // slides down the F rows: each loaded F vector feeds all RB output rows, with the atom of
  // the matching window row, read from a column table that is zero beyond the window.
  template <int RB>
  __attribute__((noinline)) void dx_rows(int64_t g, int64_t c, int i, const T* cols) const {
    const int r = int(g) + 1, k = 2 * r + 1, len = k + 2 * (kDxRows - 1);
    V acc[RB][kP];
#pragma GCC unroll 8
    for (int ri = 0; ri < RB; ++ri)
#pragma GCC unroll 4
      for (int p = 0; p < kP; ++p) acc[ri][p] = V{};
    for (int64_t m = 0; m < a.M; ++m)
      for (int v = 0; v < k; ++v) {
        // F row i - r + qi, column p N - (v - r); output row i + ri takes window row u = k-1 - qi + ri
        const T* fr = f + m * P + tiles.at(i - r, r - v);
        const T* col = cols + (m * k + v) * len + (kDxRows - 1) + (k - 1);
        for (int qi = 0; qi < RB + k - 1; ++qi, fr += tiles.stride, --col) {
          V fv[kP];
#pragma GCC unroll 4
          for (int p = 0; p < kP; ++p) fv[p] = in_register(load(fr + p * N));
#pragma GCC unroll 8
          for (int ri = 0; ri < RB; ++ri) {
            const T w = col[ri];
#pragma GCC unroll 4
            for (int p = 0; p < kP; ++p) acc[ri][p] += fv[p] * w;
          }
        }
      }
#pragma GCC unroll 8
    for (int ri = 0; ri < RB; ++ri)
#pragma GCC unroll 4
      for (int p = 0; p < kP; ++p) {
        T* d = dx + c * P + tiles.at(i + ri, p * N);
        store(d, load(d) + acc[ri][p]);
      }
  }

  void tile(int64_t t, T* part, at::Tensor& dxo, at::Tensor& dso, at::Tensor& dbo) {
    const auto tl = tiles.tile(t);
    const int64_t HW = a.H * a.W;
    const int halo = need_dx ? tiles.R : 0;
    for (int64_t c = 0; c < a.C; ++c) tiles.load(a.x.data_ptr<S>() + (tl.b * a.C + c) * HW, tl, tiles.R, x + c * P);
    for (int64_t o = 0; o < a.O; ++o) tiles.load(grad + (tl.b * a.O + o) * HW, tl, halo, gam + o * P);
    for (int64_t g = 0; g < a.G; ++g) tiles.load(a.scale.data_ptr<S>() + (tl.b * a.G + g) * HW, tl, halo, s + g * P);
    for (int64_t m = 0; m < a.M; ++m) tiles.load(a.basis.data_ptr<S>() + (tl.b * a.M + m) * HW, tl, halo, bt + m * P);
    std::fill(ds, ds + a.G * P, T(0));
    std::fill(db, db + a.M * P, T(0));
    if (need_dx) {
      if (a.residual)  // O == C
        std::copy(gam, gam + a.C * P, dx);
      else
        std::fill(dx, dx + a.C * P, T(0));
    }
    for (int64_t o = 0; o < a.O; ++o) {
      V acc{};
      for (int i = 0; i < tl.rows; ++i)
        for (int p = 0; p < kP; ++p) acc += load(gam + o * P + tiles.at(i, p * N));
      part[L.bias + o] += hsum<T>(acc);
    }
    for (int64_t g = 0; g < a.G; ++g) {
      const int r = int(g) + 1, k = 2 * r + 1;
      // E/F region: the tile, and for dx its halo of r pixels (whole vectors).
      const int h = need_dx ? r : 0;
      const auto tap_blocks = split(k, kMaxNT);
      const int i0 = -h, i1 = tl.rows + h, v0 = (tiles.CO - h) / N, v1 = (tiles.CO + tiles.TW + h + N - 1) / N;
      for (int64_t c = 0; c < a.C; ++c) {
        ef(g, c, i0, i1, v0, v1);
        for (const Block mb : m_blocks)
          with_const<kMaxMB>(mb.count, [&](auto MB) {
            this->template d_terms<decltype(MB)::value>(g, c, mb.first, tl.rows, part);
          });
        for (const Block ma : ma_blocks)
          for (int u = 0; u < k; ++u)
            for (const Block nt : tap_blocks)
              with_const<kMaxMA>(ma.count, [&](auto MA) {
                with_const<kMaxNT>(nt.count, [&](auto NT) {
                  constexpr int ma_n = decltype(MA)::value, nt_n = decltype(NT)::value;
                  this->template atom_taps<ma_n, nt_n>(g, c, ma.first, u, nt.first, tl.rows, part);
                });
              });
        if (need_dx) {
          const T* cols = dx_cols.group(g);
          int i = 0;
          for (; i + kDxRows <= tl.rows; i += kDxRows) dx_rows<kDxRows>(g, c, i, cols);
          if (i < tl.rows)
            with_const<kDxRows - 1>(tl.rows - i, [&](auto RB) {
              this->template dx_rows<decltype(RB)::value>(g, c, i, cols);
            });
        }
      }
    }
    for (int64_t g = 0; g < a.G; ++g) tiles.store(ds + g * P, tl, dso.data_ptr<S>() + (tl.b * a.G + g) * HW);
    for (int64_t m = 0; m < a.M; ++m) tiles.store(db + m * P, tl, dbo.data_ptr<S>() + (tl.b * a.M + m) * HW);
    if (need_dx)
      for (int64_t c = 0; c < a.C; ++c) tiles.store(dx + c * P, tl, dxo.data_ptr<S>() + (tl.b * a.C + c) * HW);
  }
};

template <class S, class T = acc_t<S>>
void backward(const IkArgs& a, const at::Tensor& grad, bool need_dx, at::Tensor& dx, at::Tensor& datoms,
              at::Tensor& dscale, at::Tensor& dbasis, at::Tensor& dweight, at::Tensor& dbias) {
  const Tiles<T> tiles(a);
  const PackedAtoms<T> atoms(a);
  const DxColumns<T> dx_cols = need_dx ? DxColumns<T>(a, atoms) : DxColumns<T>{};
  const PartialLayout L(a);
  const int64_t ntiles = tiles.count();
  const int64_t chunks = std::min(ntiles, kMaxChunks);
  at::Tensor partial = at::zeros({std::max<int64_t>(chunks, 1), L.size}, a.atoms.options());
  T* parts = partial.data_ptr<T>();
  parallel_items(
      chunks, [&] { return Backward<S>{a, tiles, atoms, dx_cols, L, grad.data_ptr<S>(), need_dx}; },
      [&](Backward<S>& bw, int64_t ch) {
        for (int64_t t = ch * ntiles / chunks; t < (ch + 1) * ntiles / chunks; ++t)
          bw.tile(t, parts + ch * L.size, dx, dscale, dbasis);
      });
  // Sum the chunks' partials in chunk order.
  std::vector<T> total(L.size, T(0));
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (int64_t i = 0; i < L.size; ++i) total[i] += parts[ch * L.size + i];
  std::copy(total.begin() + L.atoms, total.begin() + L.weight, datoms.data_ptr<T>());
  std::copy(total.begin() + L.weight, total.begin() + L.bias, dweight.data_ptr<T>());
  std::copy(total.begin() + L.bias, total.end(), dbias.data_ptr<T>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ikconv_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& atoms, const at::Tensor& scale,
    const at::Tensor& basis, const at::Tensor& weight, bool residual, bool need_x_grad, bool deterministic) {
  (void)deterministic;  // the CPU reduction is always deterministic
  const IkArgs a = check_ikconv(kOp, x, atoms, scale, basis, weight, std::nullopt, residual);
  check_cpu(kOp, "grad_y", grad_y, a.x.scalar_type());
  check_shape(kOp, "grad_y", grad_y, {a.B, a.O, a.H, a.W}, "[B, O, H, W]");
  const at::Tensor grad = grad_y.contiguous();
  at::Tensor dx = need_x_grad ? at::empty_like(a.x) : at::empty({0}, a.x.options());
  at::Tensor datoms = at::empty_like(a.atoms), dweight = at::empty_like(a.weight);
  at::Tensor dscale = at::empty_like(a.scale), dbasis = at::empty_like(a.basis);
  at::Tensor dbias = at::empty({a.O}, a.weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), kOp, [&] {
    backward<scalar_t>(a, grad, need_x_grad, dx, datoms, dscale, dbasis, dweight, dbias);
  });
  return {dx, datoms, dscale, dbasis, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(inik_fast, CPU, m) { m.impl("ikconv_backward", &ikconv_backward); }

}  // namespace inik_fast::cpu
