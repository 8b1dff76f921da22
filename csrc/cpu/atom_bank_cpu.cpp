// CPU kernels of inik_fast::atom_bank_{forward,backward} (docs/ops.md, op 1).
//
// Each of the G*M (group, atom) pairs is one work item that evaluates atom m's sine MLP at the
// grid points of group g's window (mask != 0) only. The backward keeps one partial gradient per
// item and sums the items over g in a fixed order, so results do not depend on the thread count.
// float16/bfloat16 arguments are computed in float32 (the parameters are small: upcast copies
// cost nothing next to the sines) and the results rounded back to the arguments' dtype.
#include <torch/library.h>

#include <vector>

#include "checks.h"
#include "parallel.h"
#include "sincos.h"

namespace inik_fast::cpu {
namespace {

constexpr const char* kFwd = "atom_bank_forward";
constexpr const char* kBwd = "atom_bank_backward";

// The op's arguments, contiguous and in the compute dtype, their sizes, and their own dtype.
struct BankArgs : BankShape {
  at::Tensor coords, mask, w1, b1, w2, b2, w3, omega;
  at::ScalarType dtype;
};

BankArgs check_bank(const char* op, const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1,
                    const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3,
                    const at::Tensor& omega) {
  const auto dt = float_dtype(op, "w1", w1);
  const std::pair<const char*, const at::Tensor*> all[] = {{"coords", &coords}, {"mask", &mask}, {"w1", &w1},
                                                           {"b1", &b1},         {"w2", &w2},     {"b2", &b2},
                                                           {"w3", &w3},         {"omega", &omega}};
  for (const auto& [name, t] : all) check_cpu(op, name, *t, dt);
  const BankShape shape = check_bank_shapes(op, coords, mask, w1, b1, w2, b2, w3, omega);
  const auto acc = acc_dtype(dt);
  const auto in = [acc](const at::Tensor& t) { return t.to(acc).contiguous(); };
  return {shape, in(coords), in(mask), in(w1), in(b1), in(w2), in(b2), in(w3), in(omega), dt};
}

// The MLP of one atom at one point: z1, h1, z2, h2 (each [Hd]); returns w3 . h2.
template <class T>
struct AtomMlp {
  const T *w1, *b1, *w2t, *b2, *w3;  // w2t = w2[m] transposed, [Hd_in][Hd_out], for contiguous axpys
  T omega;
  int64_t D, Hd;

  T eval(const T* p, T* z1, T* h1, T* z2, T* h2) const {
    for (int64_t h = 0; h < Hd; ++h) {
      T s = b1[h];
      for (int64_t d = 0; d < D; ++d) s += w1[h * D + d] * p[d];
      z1[h] = s;
    }
    sincos_scaled<false>(z1, omega, h1, Hd);
    for (int64_t k = 0; k < Hd; ++k) z2[k] = b2[k];
    for (int64_t h = 0; h < Hd; ++h) {
      const T a = h1[h];
      const T* col = w2t + h * Hd;
      for (int64_t k = 0; k < Hd; ++k) z2[k] += col[k] * a;
    }
    sincos_scaled<false>(z2, omega, h2, Hd);
    T out = 0;
    for (int64_t k = 0; k < Hd; ++k) out += w3[k] * h2[k];
    return out;
  }
};

template <class T>
AtomMlp<T> atom_mlp(const BankArgs& a, const at::Tensor& w2t, int64_t m) {
  const int64_t D = a.D, Hd = a.Hd;
  return {a.w1.data_ptr<T>() + m * Hd * D, a.b1.data_ptr<T>() + m * Hd, w2t.data_ptr<T>() + m * Hd * Hd,
          a.b2.data_ptr<T>() + m * Hd,     a.w3.data_ptr<T>() + m * Hd, a.omega.data_ptr<T>()[m], D, Hd};
}

template <class T>
void bank_forward(const BankArgs& a, at::Tensor& out) {
  const int64_t KK = a.K * a.K, M = a.M, Hd = a.Hd, D = a.D;
  const at::Tensor w2t = a.w2.transpose(1, 2).contiguous();
  const T* coords = a.coords.data_ptr<T>();
  const T* mask = a.mask.data_ptr<T>();
  T* y = out.data_ptr<T>();
  parallel_items(
      a.G * M, [&] { return std::vector<T>(4 * Hd); },
      [&](std::vector<T>& buf, int64_t item) {
        const int64_t g = item / M, m = item % M;
        const AtomMlp<T> mlp = atom_mlp<T>(a, w2t, m);
        T *z1 = buf.data(), *h1 = z1 + Hd, *z2 = h1 + Hd, *h2 = z2 + Hd;
        for (int64_t q = 0; q < KK; ++q) {
          const T w = mask[g * KK + q];
          y[item * KK + q] = w == 0 ? T(0) : w * mlp.eval(coords + (g * KK + q) * D, z1, h1, z2, h2);
        }
      });
}

// Offsets of the parameter gradients inside one item's partial-sum row.
struct GradLayout {
  int64_t w1, b1, w2, b2, w3, omega, size;
  GradLayout(int64_t Hd, int64_t D)
      : w1(0), b1(Hd * D), w2(b1 + Hd), b2(w2 + Hd * Hd), w3(b2 + Hd), omega(w3 + Hd), size(omega + 1) {}
};

template <class T>
void bank_backward(const BankArgs& a, const at::Tensor& grad, std::vector<at::Tensor>& out) {
  const int64_t KK = a.K * a.K, M = a.M, Hd = a.Hd, D = a.D, G = a.G;
  const GradLayout L(Hd, D);
  const at::Tensor w2t = a.w2.transpose(1, 2).contiguous();
  at::Tensor partial = at::zeros({G, M, L.size}, a.w1.options());
  const T* coords = a.coords.data_ptr<T>();
  const T* mask = a.mask.data_ptr<T>();
  const T* ga = grad.data_ptr<T>();
  T* part = partial.data_ptr<T>();
  parallel_items(
      G * M, [&] { return std::vector<T>(8 * Hd); },
      [&](std::vector<T>& buf, int64_t item) {
        T *z1 = buf.data(), *h1 = z1 + Hd, *z2 = h1 + Hd, *h2 = z2 + Hd, *dz2 = h2 + Hd, *dh1 = dz2 + Hd;
        T *c1 = dh1 + Hd, *c2 = c1 + Hd;  // cos(omega z1), cos(omega z2)
        const int64_t g = item / M, m = item % M;
        const AtomMlp<T> mlp = atom_mlp<T>(a, w2t, m);
        const T* w2 = a.w2.data_ptr<T>() + m * Hd * Hd;
        const T om = mlp.omega;
        T* P = part + item * L.size;
        for (int64_t q = 0; q < KK; ++q) {
          if (mask[g * KK + q] == 0) continue;
          const T da = ga[item * KK + q] * mask[g * KK + q];
          const T* p = coords + (g * KK + q) * D;
          mlp.eval(p, z1, h1, z2, h2);
          sincos_scaled<true>(z1, om, c1, Hd);
          sincos_scaled<true>(z2, om, c2, Hd);
          T domega = 0;
          for (int64_t k = 0; k < Hd; ++k) {
            P[L.w3 + k] += da * h2[k];
            const T dh2 = da * mlp.w3[k];
            dz2[k] = dh2 * c2[k] * om;
            domega += dh2 * c2[k] * z2[k];
            P[L.b2 + k] += dz2[k];
          }
          for (int64_t h = 0; h < Hd; ++h) dh1[h] = 0;
          for (int64_t k = 0; k < Hd; ++k) {
            const T d = dz2[k];
            T* dw2 = P + L.w2 + k * Hd;
            const T* w2row = w2 + k * Hd;
            for (int64_t h = 0; h < Hd; ++h) {
              dw2[h] += d * h1[h];
              dh1[h] += d * w2row[h];
            }
          }
          for (int64_t h = 0; h < Hd; ++h) {
            const T dz1 = dh1[h] * c1[h] * om;
            domega += dh1[h] * c1[h] * z1[h];
            P[L.b1 + h] += dz1;
            for (int64_t d = 0; d < D; ++d) P[L.w1 + h * D + d] += dz1 * p[d];
          }
          P[L.omega] += domega;
        }
      });
  // Sum the items over g, in order, for each atom m.
  at::Tensor total = partial[0].clone();
  T* tot = total.data_ptr<T>();
  for (int64_t g = 1; g < G; ++g) {
    const T* src = part + g * M * L.size;
    for (int64_t i = 0; i < M * L.size; ++i) tot[i] += src[i];
  }
  using at::indexing::Slice;
  auto piece = [&](int64_t off, int64_t n) { return total.index({Slice(), Slice(off, off + n)}); };
  out = {piece(L.w1, Hd * D).reshape({M, Hd, D}).contiguous(), piece(L.b1, Hd).contiguous(),
         piece(L.w2, Hd * Hd).reshape({M, Hd, Hd}).contiguous(), piece(L.b2, Hd).contiguous(),
         piece(L.w3, Hd).contiguous(), piece(L.omega, 1).reshape({M}).contiguous()};
}

at::Tensor atom_bank_forward(const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1,
                             const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3,
                             const at::Tensor& omega) {
  const BankArgs a = check_bank(kFwd, coords, mask, w1, b1, w2, b2, w3, omega);
  at::Tensor out = at::empty({a.G, a.M, a.K, a.K}, a.w1.options());
  AT_DISPATCH_FLOATING_TYPES(a.w1.scalar_type(), kFwd, [&] { bank_forward<scalar_t>(a, out); });
  return out.to(a.dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> atom_bank_backward(
    const at::Tensor& grad_atoms, const at::Tensor& coords, const at::Tensor& mask, const at::Tensor& w1,
    const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3, const at::Tensor& omega) {
  const BankArgs a = check_bank(kBwd, coords, mask, w1, b1, w2, b2, w3, omega);
  check_cpu(kBwd, "grad_atoms", grad_atoms, a.dtype);
  check_shape(kBwd, "grad_atoms", grad_atoms, {a.G, a.M, a.K, a.K}, "[G, M, K, K]");
  const at::Tensor grad = grad_atoms.to(a.w1.scalar_type()).contiguous();
  std::vector<at::Tensor> g;
  AT_DISPATCH_FLOATING_TYPES(a.w1.scalar_type(), kBwd, [&] { bank_backward<scalar_t>(a, grad, g); });
  for (auto& t : g) t = t.to(a.dtype);
  return {g[0], g[1], g[2], g[3], g[4], g[5]};
}

}  // namespace

TORCH_LIBRARY_IMPL(inik_fast, CPU, m) {
  m.impl("atom_bank_forward", &atom_bank_forward);
  m.impl("atom_bank_backward", &atom_bank_backward);
}

}  // namespace inik_fast::cpu
