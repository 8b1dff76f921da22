// sin or cos of a scaled array, with SLEEF's vector functions (1-ULP, the ones torch.sin uses on
// CPU; libtorch_cpu ships and exports them) where -march enables AVX-512 or AVX2, else std::sin.
// The atom bank's sines are most of its time: one call covers the Hd units of a layer.
#pragma once

#include <cmath>
#include <cstdint>

#include "simd.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#include <sleef.h>
#define INIK_FAST_SLEEF 1
#endif

namespace inik_fast::cpu {

#ifdef INIK_FAST_SLEEF
// One simd.h vector (the -march width, as SLEEF's __m512 / __m256 types) through SLEEF.
template <bool Cos>
inline vec_t<float> sleef(vec_t<float> v) {
#if defined(__AVX512F__)
  return Cos ? Sleef_cosf16_u10(v) : Sleef_sinf16_u10(v);
#else
  return Cos ? Sleef_cosf8_u10avx2(v) : Sleef_sinf8_u10avx2(v);
#endif
}

template <bool Cos>
inline vec_t<double> sleef(vec_t<double> v) {
#if defined(__AVX512F__)
  return Cos ? Sleef_cosd8_u10(v) : Sleef_sind8_u10(v);
#else
  return Cos ? Sleef_cosd4_u10avx2(v) : Sleef_sind4_u10avx2(v);
#endif
}
#endif

// out[i] = cos(omega * z[i]) if Cos else sin(omega * z[i]), for i < n.
template <bool Cos, class T>
inline void sincos_scaled(const T* z, T omega, T* out, int64_t n) {
  int64_t i = 0;
#ifdef INIK_FAST_SLEEF
  for (; i + Simd<T>::N <= n; i += Simd<T>::N) store(out + i, sleef<Cos>(omega * load(z + i)));
#endif
  for (; i < n; ++i) out[i] = Cos ? std::cos(omega * z[i]) : std::sin(omega * z[i]);
}

}  // namespace inik_fast::cpu
