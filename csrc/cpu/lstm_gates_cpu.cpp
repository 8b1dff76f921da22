// The ConvLSTM cell's update in one pass over the pixels. From the gate conv's output without its
// bias, a = [i | f | o | g] (4H channels a pixel, pixels as rows):
//   c' = sigmoid(f + bf) * c + sigmoid(i + bi) * tanh(g + bg),   h = sigmoid(o + bo) * tanh(c')
// with c absent for the zero state (c' = sigmoid(i) * tanh(g)). PyTorch's eager form is five
// passes over hidden-wide or wider maps plus the bias's own copy, each writing its result; here
// each pixel's row is read once and h, c' written once. sigmoid is torch.sigmoid's formula
// (1 / (1 + exp(-x))) on SLEEF's exp, and tanh SLEEF's (vmath.h), the functions torch uses, so
// float32 agrees with the eager ops to rounding. Half types compute in float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#include "checks.h"
#include "convert.h"
#include "vmath.h"

namespace inik_fast::cpu {
namespace {

constexpr const char* kOp = "lstm_gates";

// h, c' at j .. j + n of one row: `Vec` a simd.h vector of A (n its lanes) or A itself (n = 1).
template <class A, class Vec, class Load, class Exp, class Tanh>
inline void update(const A* a, const A* bias, const A* c, A* h, A* cn, int64_t H, int64_t j, Load load, Exp exp,
                   Tanh tanh) {
  auto pre = [&](int64_t k) { return load(a + k * H + j) + load(bias + k * H + j); };
  auto sig = [&](Vec x) { return A(1) / (A(1) + exp(-x)); };
  const Vec i = sig(pre(0)), o = sig(pre(2)), g = tanh(pre(3));
  const Vec cnew = c ? sig(pre(1)) * load(c + j) + i * g : i * g;
  const Vec hv = o * tanh(cnew);
  std::memcpy(h + j, &hv, sizeof hv);
  std::memcpy(cn + j, &cnew, sizeof cnew);
}

// Rows [begin, end) of the update; bias in the compute dtype A.
template <class S>
void update_rows(const S* a, const acc_t<S>* bias, const S* c, S* h, S* cn, int64_t H, int64_t begin, int64_t end) {
  using A = acc_t<S>;
  constexpr bool kSame = std::is_same_v<S, A>;
  std::vector<A> buf(kSame ? 0 : 7 * H);  // a row's gates, c, h and c' in A
  for (int64_t r = begin; r < end; ++r) {
    const A *ar, *cr = nullptr;
    A *hr, *cnr;
    if constexpr (kSame) {
      ar = a + r * 4 * H;
      if (c) cr = c + r * H;
      hr = h + r * H;
      cnr = cn + r * H;
    } else {
      A* g = buf.data();
      convert(a + r * 4 * H, g, 4 * H);
      ar = g;
      if (c) {
        convert(c + r * H, g + 4 * H, H);
        cr = g + 4 * H;
      }
      hr = g + 5 * H;
      cnr = g + 6 * H;
    }
    int64_t j = 0;
#ifdef INIK_FAST_SLEEF
    for (; j + Simd<A>::N <= H; j += Simd<A>::N)
      update<A, vec_t<A>>(ar, bias, cr, hr, cnr, H, j, [](const A* p) { return load(p); },
                          [](vec_t<A> v) { return vexp(v); }, [](vec_t<A> v) { return vtanh(v); });
#endif
    for (; j < H; ++j)
      update<A, A>(ar, bias, cr, hr, cnr, H, j, [](const A* p) { return *p; }, [](A v) { return std::exp(v); },
                   [](A v) { return std::tanh(v); });
    if constexpr (!kSame) {
      convert(hr, h + r * H, H);
      convert(cnr, cn + r * H, H);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> lstm_gates(const at::Tensor& gates, const at::Tensor& bias,
                                              const std::optional<at::Tensor>& c) {
  const auto dtype = float_dtype(kOp, "gates", gates);
  check_cpu(kOp, "gates", gates, dtype);
  check_dim(kOp, "gates", gates, 2, "2-D [N, 4 * hidden]");
  const int64_t N = gates.size(0), H = gates.size(1) / 4;
  TORCH_CHECK(gates.size(1) % 4 == 0, kOp, ": gates must be [N, 4 * hidden], got ", shape_str(gates.sizes()));
  check_cpu(kOp, "bias", bias, dtype);
  check_shape(kOp, "bias", bias, {4 * H}, "[4 * hidden]");
  if (c) {
    check_cpu(kOp, "c", *c, dtype);
    check_shape(kOp, "c", *c, {N, H}, "[N, hidden]");
  }
  const at::Tensor a = gates.contiguous(), ca = c ? c->contiguous() : at::Tensor();
  const at::Tensor b = bias.to(acc_dtype(dtype)).contiguous();
  at::Tensor h = at::empty({N, H}, gates.options()), cn = at::empty({N, H}, gates.options());
  if (N * H == 0) return {h, cn};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, kOp, [&] {
    const scalar_t* cp = ca.defined() ? ca.const_data_ptr<scalar_t>() : nullptr;
    // ~64 KiB of gates per task: enough work to pay for a task, small enough to split any map
    const int64_t grain = std::max<int64_t>(1, 16384 / (4 * H));
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      update_rows<scalar_t>(a.const_data_ptr<scalar_t>(), b.const_data_ptr<acc_t<scalar_t>>(), cp,
                            h.data_ptr<scalar_t>(), cn.data_ptr<scalar_t>(), H, begin, end);
    });
  });
  return {h, cn};
}

}  // namespace

TORCH_LIBRARY_IMPL(inik_fast, CPU, m) { m.impl("lstm_gates", &lstm_gates); }

}  // namespace inik_fast::cpu
