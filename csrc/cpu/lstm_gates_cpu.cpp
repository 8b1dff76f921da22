// The ConvLSTM cell's update in one pass over the pixels, and its gradient in one more. From the
// gate conv's output without its bias, a = [i | f | o | g] (4H channels a pixel, pixels as rows):
//   c' = sigmoid(f + bf) * c + sigmoid(i + bi) * tanh(g + bg),   h = sigmoid(o + bo) * tanh(c')
// with c absent for the zero state (c' = sigmoid(i) * tanh(g)). PyTorch's eager form is five
// passes over hidden-wide or wider maps plus the bias's own copy, each writing its result, and
// its autograd as many again plus the zero-filled slices of the gates' gradient; here each
// pixel's row is read once and its results written once. The backward recomputes the gates
// (as the trunk's checkpoint would) instead of saving them. sigmoid is torch.sigmoid's formula
// (1 / (1 + exp(-x))) on SLEEF's exp, and tanh SLEEF's (vmath.h), the functions torch uses, so
// float32 agrees with the eager ops to rounding. Half types compute in float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "checks.h"
#include "convert.h"
#include "simd.h"
#include "vmath.h"

namespace inik_fast::cpu {
namespace {

// The lanes j .. j + n of one row: `Vec` a simd.h vector of A (n its lanes) or A itself (n = 1).
template <class A, class Vec>
struct Lanes {
  int64_t j;
  Vec get(const A* p) const {
    if constexpr (std::is_same_v<Vec, A>) return p[j];
    else return load(p + j);
  }
  Vec get_or_zero(const A* p) const { return p ? get(p) : Vec{}; }
  void put(A* p, Vec v) const {
    if constexpr (std::is_same_v<Vec, A>) p[j] = v;
    else store(p + j, v);
  }
  // SLEEF on vectors (each_lane forms them only where it is there), std:: on scalars.
  static Vec exp(Vec v) {
    if constexpr (std::is_same_v<Vec, A>) return std::exp(v);
#ifdef INIK_FAST_SLEEF
    else return vexp(v);
#endif
  }
  static Vec tanh(Vec v) {
    if constexpr (std::is_same_v<Vec, A>) return std::tanh(v);
#ifdef INIK_FAST_SLEEF
    else return vtanh(v);
#endif
  }
  static Vec sigmoid(Vec x) { return A(1) / (A(1) + exp(-x)); }
};

// A row's four gate activations at lanes L, and c' (f is zero without a state).
template <class A, class Vec>
struct Gates {
  Vec i, f{}, o, g, c{}, cn;
  Gates(const Lanes<A, Vec>& L, const A* a, const A* bias, const A* c_row, int64_t H) {
    auto pre = [&](int k) { return L.get(a + k * H) + L.get(bias + k * H); };
    using Lv = Lanes<A, Vec>;
    i = Lv::sigmoid(pre(0));
    o = Lv::sigmoid(pre(2));
    g = Lv::tanh(pre(3));
    if (c_row) {
      f = Lv::sigmoid(pre(1));
      c = L.get(c_row);
      cn = f * c + i * g;
    } else {
      cn = i * g;
    }
  }
};

// Calls fn(Lanes) over a row of H lanes: whole vectors where SLEEF is there, then scalars.
template <class A, class Fn>
inline void each_lane(int64_t H, Fn fn) {
  int64_t j = 0;
#ifdef INIK_FAST_SLEEF
  for (; j + Simd<A>::N <= H; j += Simd<A>::N) fn(Lanes<A, vec_t<A>>{j});
#endif
  for (; j < H; ++j) fn(Lanes<A, A>{j});
}

// Rows [begin, end) of row-major operands of storage dtype S, handed to fn(in, out) as rows in
// the compute dtype A = acc_t<S>: the tensors' own rows for float and double, rows converted
// into a buffer (and outputs converted back) for the half types. Absent operands are nullptr.
template <class S, size_t NI, size_t NO, class Fn>
void each_row(int64_t begin, int64_t end, const std::array<const S*, NI>& in, const std::array<int64_t, NI>& in_width,
              const std::array<S*, NO>& out, const std::array<int64_t, NO>& out_width, Fn fn) {
  using A = acc_t<S>;
  constexpr bool kSame = std::is_same_v<S, A>;
  int64_t width = 0;
  for (auto w : in_width) width += w;
  for (auto w : out_width) width += w;
  std::vector<A> buf(kSame ? 0 : width);
  for (int64_t r = begin; r < end; ++r) {
    std::array<const A*, NI> ir{};
    std::array<A*, NO> orow{};
    A* next = buf.data();
    for (size_t k = 0; k < NI; ++k) {
      if (!in[k]) continue;
      if constexpr (kSame) {
        ir[k] = in[k] + r * in_width[k];
      } else {
        convert(in[k] + r * in_width[k], next, in_width[k]);
        ir[k] = next;
        next += in_width[k];
      }
    }
    for (size_t k = 0; k < NO; ++k) {
      if (!out[k]) continue;
      if constexpr (kSame) {
        orow[k] = out[k] + r * out_width[k];
      } else {
        orow[k] = next;
        next += out_width[k];
      }
    }
    fn(ir, orow);
    if constexpr (!kSame)
      for (size_t k = 0; k < NO; ++k)
        if (out[k]) convert(orow[k], out[k] + r * out_width[k], out_width[k]);
  }
}

template <class S>
const S* ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<S>() : nullptr;
}

template <class S>
S* mut_ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<S>() : nullptr;
}

// ~64 KiB of gates per task: enough work to pay for a task, small enough to split any map.
int64_t grain(int64_t H) { return std::max<int64_t>(1, 16384 / (4 * H)); }

// The checks both ops share; returns the dtype and hidden width.
std::tuple<at::ScalarType, int64_t> check_gates(const char* op, const at::Tensor& gates, const at::Tensor& bias,
                                                const std::optional<at::Tensor>& c) {
  const auto dtype = float_dtype(op, "gates", gates);
  check_cpu(op, "gates", gates, dtype);
  check_dim(op, "gates", gates, 2, "2-D [N, 4 * hidden]");
  const int64_t N = gates.size(0), H = gates.size(1) / 4;
  TORCH_CHECK(gates.size(1) % 4 == 0, op, ": gates must be [N, 4 * hidden], got ", shape_str(gates.sizes()));
  check_cpu(op, "bias", bias, dtype);
  check_shape(op, "bias", bias, {4 * H}, "[4 * hidden]");
  if (c) {
    check_cpu(op, "c", *c, dtype);
    check_shape(op, "c", *c, {N, H}, "[N, hidden]");
  }
  return {dtype, H};
}

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) { return t ? t->contiguous() : at::Tensor(); }

std::tuple<at::Tensor, at::Tensor> lstm_gates(const at::Tensor& gates, const at::Tensor& bias,
                                              const std::optional<at::Tensor>& c) {
  constexpr const char* kOp = "lstm_gates";
  const auto [dtype, H] = check_gates(kOp, gates, bias, c);
  const int64_t N = gates.size(0);
  const at::Tensor a = gates.contiguous(), ca = contiguous_or_undefined(c);
  const at::Tensor b = bias.to(acc_dtype(dtype)).contiguous();
  at::Tensor h = at::empty({N, H}, gates.options()), cn = at::empty({N, H}, gates.options());
  if (N * H == 0) return {h, cn};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, kOp, [&] {
    using A = acc_t<scalar_t>;
    const A* bp = b.const_data_ptr<A>();
    at::parallel_for(0, N, grain(H), [&](int64_t begin, int64_t end) {
      each_row<scalar_t, 2, 2>(
          begin, end, {ptr<scalar_t>(a), ptr<scalar_t>(ca)}, {4 * H, H}, {mut_ptr<scalar_t>(h), mut_ptr<scalar_t>(cn)},
          {H, H}, [&](const auto& in, const auto& out) {
            each_lane<A>(H, [&](auto L) {
              const Gates<A, decltype(L.get(bp))> s(L, in[0], bp, in[1], H);
              L.put(out[0], s.o * L.tanh(s.cn));
              L.put(out[1], s.cn);
            });
          });
    });
  });
  return {h, cn};
}

// d(gates) [N, 4H] and d(c) [N, H] (None without c) from the gradients of h and c' (None: zero):
//   dc' = dh * o * (1 - tanh(c')^2) + d(c'),  d(c) = dc' * f,
//   da = [dc' * g * i(1 - i) | dc' * c * f(1 - f) | dh * tanh(c') * o(1 - o) | dc' * i * (1 - g^2)]
// The bias's gradient is da summed over the rows, left to the caller.
std::tuple<at::Tensor, std::optional<at::Tensor>> lstm_gates_backward(const at::Tensor& gates, const at::Tensor& bias,
                                                                      const std::optional<at::Tensor>& c,
                                                                      const std::optional<at::Tensor>& grad_h,
                                                                      const std::optional<at::Tensor>& grad_c) {
  constexpr const char* kOp = "lstm_gates_backward";
  const auto [dtype, H] = check_gates(kOp, gates, bias, c);
  const int64_t N = gates.size(0);
  for (const auto& [name, t] : {std::pair{"grad_h", &grad_h}, std::pair{"grad_c", &grad_c}}) {
    if (!*t) continue;
    check_cpu(kOp, name, **t, dtype);
    check_shape(kOp, name, **t, {N, H}, "[N, hidden]");
  }
  const at::Tensor a = gates.contiguous(), ca = contiguous_or_undefined(c);
  const at::Tensor dh = contiguous_or_undefined(grad_h), dcn = contiguous_or_undefined(grad_c);
  const at::Tensor b = bias.to(acc_dtype(dtype)).contiguous();
  at::Tensor da = at::empty({N, 4 * H}, gates.options());
  at::Tensor dc = c ? at::empty({N, H}, gates.options()) : at::Tensor();
  if (N * H > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, kOp, [&] {
      using A = acc_t<scalar_t>;
      const A* bp = b.const_data_ptr<A>();
      at::parallel_for(0, N, grain(H), [&](int64_t begin, int64_t end) {
        each_row<scalar_t, 4, 2>(
            begin, end, {ptr<scalar_t>(a), ptr<scalar_t>(ca), ptr<scalar_t>(dh), ptr<scalar_t>(dcn)},
            {4 * H, H, H, H}, {mut_ptr<scalar_t>(da), mut_ptr<scalar_t>(dc)}, {4 * H, H},
            [&](const auto& in, const auto& out) {
              each_lane<A>(H, [&](auto L) {
                const Gates<A, decltype(L.get(bp))> s(L, in[0], bp, in[1], H);
                const auto t = L.tanh(s.cn), dhv = L.get_or_zero(in[2]);
                const auto dcv = dhv * s.o * (A(1) - t * t) + L.get_or_zero(in[3]);
                A* d = out[0];
                L.put(d, dcv * s.g * s.i * (A(1) - s.i));
                L.put(d + H, dcv * s.c * s.f * (A(1) - s.f));
                L.put(d + 2 * H, dhv * t * s.o * (A(1) - s.o));
                L.put(d + 3 * H, dcv * s.i * (A(1) - s.g * s.g));
                if (out[1]) L.put(out[1], dcv * s.f);
              });
            });
      });
    });
  }
  return {da, c ? std::optional<at::Tensor>(dc) : std::nullopt};
}

}  // namespace

TORCH_LIBRARY_IMPL(inik_fast, CPU, m) {
  m.impl("lstm_gates", &lstm_gates);
  m.impl("lstm_gates_backward", &lstm_gates_backward);
}

}  // namespace inik_fast::cpu
