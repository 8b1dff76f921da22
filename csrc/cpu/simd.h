// Portable SIMD vectors for the CPU kernels (GCC/Clang vector extensions), sized to the widest
// registers that -march enables: 64 bytes with AVX-512, 32 with AVX, else 16 (SSE, NEON).
// Loads and stores go through memcpy, which compiles to one unaligned vector move.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace inik_fast::cpu {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kVecRegs = 32;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kVecRegs = 16;
#elif defined(__aarch64__)
constexpr int kVecBytes = 16;
constexpr int kVecRegs = 32;
#else
constexpr int kVecBytes = 16;
constexpr int kVecRegs = 16;
#endif

template <class T>
struct Simd {
  typedef T V __attribute__((vector_size(kVecBytes)));
  static constexpr int N = kVecBytes / sizeof(T);  // lanes
};

template <class T>
using vec_t = typename Simd<T>::V;

template <class T>
inline vec_t<T> load(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
inline void store(T* p, vec_t<T> v) {
  std::memcpy(p, &v, sizeof v);
}

// s in every lane: one broadcast. (`V{} + s` would also add a zero, which the compiler must keep
// for -0.0 + 0 = +0, on the FP pipes the FMAs need; s - 0 is s for every s, so it folds away.)
template <class T>
inline vec_t<T> splat(T s) {
  return s - vec_t<T>{};
}

// Sum of the `Bytes / sizeof(T)` lanes at p, adding halves as vectors: a fixed order
// (deterministic) and short dependency chains.
template <class T, int Bytes>
inline T hsum_lanes(const T* p) {
  if constexpr (Bytes == 2 * sizeof(T)) {
    T two[2];
    std::memcpy(two, p, sizeof two);
    return two[0] + two[1];
  } else {
    typedef T Half __attribute__((vector_size(Bytes / 2)));
    Half lo, hi;
    std::memcpy(&lo, p, sizeof lo);
    std::memcpy(&hi, p + Bytes / 2 / sizeof(T), sizeof hi);
    const Half s = lo + hi;
    return hsum_lanes<T, Bytes / 2>(reinterpret_cast<const T*>(&s));
  }
}

template <class T>
inline T hsum(vec_t<T> v) {
  return hsum_lanes<T, kVecBytes>(reinterpret_cast<const T*>(&v));
}

// v, forced into a register: stops the compiler from folding one load into every FMA that
// uses it (which multiplies the loads of a register tile). A no-op where a vector does not fit
// one register (no AVX) or on other architectures.
template <class V>
inline V in_register(V v) {
#if defined(__AVX__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+v"(v));
#endif
  return v;
}

// Zero-initialised, cache-line aligned scratch memory owned by one thread, handed out in
// consecutive pieces.
template <class T>
class Arena {
 public:
  explicit Arena(int64_t n) : p_(alloc(n)), next_(p_.get()) {}
  T* take(int64_t n) {
    T* p = next_;
    next_ += n;
    return p;
  }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  static T* alloc(int64_t n) {
    const size_t bytes = ((sizeof(T) * (n > 0 ? n : 1) + 63) / 64) * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    return static_cast<T*>(p);
  }
  std::unique_ptr<T, Free> p_;
  T* next_;
};

}  // namespace inik_fast::cpu
