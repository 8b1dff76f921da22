// TF32 tensor-core products with float32 accuracy (sm_80 and later): the rounding to TF32, the
// hi/lo split and the m16n8k8 mma.sync. tests/test_cuda_mma_layout.py mirrors these formulas.
#pragma once

#include <cstdint>

namespace inik_fast {
namespace cuda {

// v rounded to TF32 (10-bit mantissa), ties away from zero, as cvt.rna.tf32.f32: the float32 bit
// pattern with its low 13 bits cleared. Two integer instructions, on a different pipe from the MMAs.
__device__ __forceinline__ float tf32_round(float v) {
  return __uint_as_float((__float_as_uint(v) + 0x1000u) & 0xffffe000u);
}

// v = hi + lo with hi = v in TF32 and lo the rest (|lo| <= 2^-11 |v|, exact in float32); the MMA
// reads lo's top 19 bits only, an error of at most 2^-21 |v|.
struct Tf32Split {
  float hi, lo;
};
__device__ __forceinline__ Tf32Split tf32_split(float v) {
  const float hi = tf32_round(v);
  return {hi, v - hi};
}

// d (16 x 8, fp32) += a (16 x 8, TF32, row-major) * b (8 x 8, TF32). With gq = lane / 4 and
// t = lane % 4, the lane holds a[gq][t], a[gq + 8][t], a[gq][t + 4], a[gq + 8][t + 4];
// b[t][gq], b[t + 4][gq]; d[gq][2t], d[gq][2t + 1], d[gq + 8][2t], d[gq + 8][2t + 1].
__device__ __forceinline__ void mma_tf32(float (&d)[4], const float (&a)[4], float b0, float b1) {
  asm(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
        "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)));
}

}  // namespace cuda
}  // namespace inik_fast
