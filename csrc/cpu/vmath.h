// Vector sin, cos, exp and tanh of simd.h vectors through SLEEF's 1-ULP functions (the ones
// torch uses on CPU; libtorch_cpu ships and exports them) where -march enables AVX-512 or AVX2:
// INIK_FAST_SLEEF is then defined. Callers keep a scalar std:: path for other targets and tails.
#pragma once

#include "simd.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#include <sleef.h>
#define INIK_FAST_SLEEF 1

namespace inik_fast::cpu {

#if defined(__AVX512F__)
#define INIK_FAST_VMATH(fn)                                                          \
  inline vec_t<float> v##fn(vec_t<float> v) { return Sleef_##fn##f16_u10(v); }      \
  inline vec_t<double> v##fn(vec_t<double> v) { return Sleef_##fn##d8_u10(v); }
#else
#define INIK_FAST_VMATH(fn)                                                          \
  inline vec_t<float> v##fn(vec_t<float> v) { return Sleef_##fn##f8_u10avx2(v); }   \
  inline vec_t<double> v##fn(vec_t<double> v) { return Sleef_##fn##d4_u10avx2(v); }
#endif
INIK_FAST_VMATH(sin)
INIK_FAST_VMATH(cos)
INIK_FAST_VMATH(exp)
INIK_FAST_VMATH(tanh)
#undef INIK_FAST_VMATH

}  // namespace inik_fast::cpu
#endif
