// sin or cos of a scaled array, with SLEEF's vector functions (vmath.h) where -march enables
// AVX-512 or AVX2, else std::sin.
// The atom bank's sines are most of its time: one call covers the Hd units of a layer.
#pragma once

#include <cmath>
#include <cstdint>

#include "vmath.h"

namespace inik_fast::cpu {

// out[i] = cos(omega * z[i]) if Cos else sin(omega * z[i]), for i < n.
template <bool Cos, class T>
inline void sincos_scaled(const T* z, T omega, T* out, int64_t n) {
  int64_t i = 0;
#ifdef INIK_FAST_SLEEF
  for (; i + Simd<T>::N <= n; i += Simd<T>::N) store(out + i, Cos ? vcos(omega * load(z + i)) : vsin(omega * load(z + i)));
#endif
  for (; i < n; ++i) out[i] = Cos ? std::cos(omega * z[i]) : std::sin(omega * z[i]);
}

}  // namespace inik_fast::cpu
