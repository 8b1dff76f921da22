// sin or cos of a scaled array, with SLEEF's vector functions (1-ULP, the ones torch.sin uses on
// CPU; libtorch_cpu ships and exports them) where -march enables AVX-512 or AVX2, else std::sin.
// The atom bank's sines are most of its time: one call covers the Hd units of a layer.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#include <sleef.h>
#endif

namespace inik_fast::cpu {

// out[i] = cos(omega * z[i]) if Cos else sin(omega * z[i]), for i < n.
template <bool Cos, class T>
inline void sincos_scaled(const T* z, T omega, T* out, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    const __m512 w = _mm512_set1_ps(omega);
    for (; i + 16 <= n; i += 16) {
      const __m512 v = _mm512_mul_ps(w, _mm512_loadu_ps(z + i));
      _mm512_storeu_ps(out + i, Cos ? Sleef_cosf16_u10(v) : Sleef_sinf16_u10(v));
    }
  } else {
    const __m512d w = _mm512_set1_pd(omega);
    for (; i + 8 <= n; i += 8) {
      const __m512d v = _mm512_mul_pd(w, _mm512_loadu_pd(z + i));
      _mm512_storeu_pd(out + i, Cos ? Sleef_cosd8_u10(v) : Sleef_sind8_u10(v));
    }
  }
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    const __m256 w = _mm256_set1_ps(omega);
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_mul_ps(w, _mm256_loadu_ps(z + i));
      _mm256_storeu_ps(out + i, Cos ? Sleef_cosf8_u10avx2(v) : Sleef_sinf8_u10avx2(v));
    }
  } else {
    const __m256d w = _mm256_set1_pd(omega);
    for (; i + 4 <= n; i += 4) {
      const __m256d v = _mm256_mul_pd(w, _mm256_loadu_pd(z + i));
      _mm256_storeu_pd(out + i, Cos ? Sleef_cosd4_u10avx2(v) : Sleef_sind4_u10avx2(v));
    }
  }
#endif
  for (; i < n; ++i) out[i] = Cos ? std::cos(omega * z[i]) : std::sin(omega * z[i]);
}

}  // namespace inik_fast::cpu
