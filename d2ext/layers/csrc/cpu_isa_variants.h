// Compiles the launcher loops of D2EXT_CPU_KERNELS_FILE once per CPU variant (cpu_isa.h), each
// in its own namespace d2ext::isa_<variant>, so the variants are distinct functions. Included once
// by a launcher file after all its other includes: the headers (ATen, std, the shared per-element
// bodies) are compiled for the baseline ISA, and only the functions defined in the kernels file
// get the variant's target; the always-inline bodies they call are inlined and vectorised with it.
// No include guard: one use per launcher file.
//
// The kernels file has no includes and may use `kVectorBytes` (the variant's SIMD width).
#ifndef D2EXT_CPU_KERNELS_FILE
#error "define D2EXT_CPU_KERNELS_FILE before including cpu_isa_variants.h"
#endif

#include "cpu_isa.h"
#include "simd_transpose.h"

namespace d2ext {
namespace isa_default {
constexpr int kVectorBytes = simd::kTargetVectorBytes;
#include D2EXT_CPU_KERNELS_FILE
}  // namespace isa_default
}  // namespace d2ext

#if D2EXT_CPU_VARIANTS
#pragma GCC push_options
#pragma GCC target("avx2,fma")  // exactly what cpu_isa.cpp checks
namespace d2ext {
namespace isa_avx2 {
constexpr int kVectorBytes = 32;
#include D2EXT_CPU_KERNELS_FILE
}  // namespace isa_avx2
}  // namespace d2ext
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")  // likewise
namespace d2ext {
namespace isa_avx512 {
constexpr int kVectorBytes = 64;
#include D2EXT_CPU_KERNELS_FILE
}  // namespace isa_avx512
}  // namespace d2ext
#pragma GCC pop_options
#endif

#undef D2EXT_CPU_KERNELS_FILE
