// Conversions between an image's storage dtype S (float16, bfloat16, float32, float64) and the
// dtype the CPU kernels compute in, at::opmath_type<S> (float32 for the half types). The tile
// loads and stores go through convert(), so the kernels read and write half-precision images
// directly and never hold a float32 copy of a whole tensor.
//
// Vector paths: widening bfloat16 is a 16-bit shift, in GCC/Clang vector extensions for any
// -march; float16 uses AVX-512F, rounding float32 to bfloat16 AVX512-BF16, where -march enables
// them. Otherwise the c10 scalar conversions, which round to nearest even. VCVTNEPS2BF16 flushes
// float32 denormals (< 1.2e-38) to zero.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace inik_fast::cpu {

// The compute dtype of storage dtype S.
template <class S>
using acc_t = at::opmath_type<S>;

namespace detail {

constexpr int64_t kLanes = 16;

// 16 bfloat16 to float32: a bfloat16 is the upper half of a float32.
inline void convert16(const c10::BFloat16* src, float* dst) {
  typedef uint16_t Half16 __attribute__((vector_size(32)));
  typedef uint32_t Word16 __attribute__((vector_size(64)));
  Half16 h;
  std::memcpy(&h, src, sizeof h);
  const Word16 w = __builtin_convertvector(h, Word16) << 16;
  std::memcpy(dst, &w, sizeof w);
}

// The maskz forms with every lane set: GCC 12 warns about the undefined pass-through of the plain ones.
#if defined(__AVX512F__)
inline void convert16(const c10::Half* src, float* dst) {
  _mm512_storeu_ps(dst, _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))));
}
inline void convert16(const float* src, c10::Half* dst) {
  const __m256i h = _mm512_maskz_cvtps_ph(0xFFFF, _mm512_loadu_ps(src), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), h);
}
#endif
#if defined(__AVX512BF16__)
inline void convert16(const float* src, c10::BFloat16* dst) {
  const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src));
  std::memcpy(dst, &h, sizeof h);
}
#endif

// From -> To has a convert16 above.
template <class From, class To>
constexpr bool kVector = std::is_same_v<From, c10::BFloat16> && std::is_same_v<To, float>
#if defined(__AVX512F__)
                         || std::is_same_v<From, c10::Half> && std::is_same_v<To, float>
                         || std::is_same_v<From, float> && std::is_same_v<To, c10::Half>
#endif
#if defined(__AVX512BF16__)
                         || std::is_same_v<From, float> && std::is_same_v<To, c10::BFloat16>
#endif
    ;

}  // namespace detail

// dst[i] = src[i] converted, for i < n.
template <class From, class To>
inline void convert(const From* src, To* dst, int64_t n) {
  if constexpr (std::is_same_v<From, To>) {
    std::copy(src, src + n, dst);
  } else {
    int64_t i = 0;
    if constexpr (detail::kVector<From, To>)
      for (; i + detail::kLanes <= n; i += detail::kLanes) detail::convert16(src + i, dst + i);
    for (; i < n; ++i) dst[i] = static_cast<To>(src[i]);
  }
}

}  // namespace inik_fast::cpu
