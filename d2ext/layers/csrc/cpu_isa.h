// CPU instruction-set variants of the launchers, chosen at load time from the CPU's features, as
// ATen does for its own kernels. The library itself is built for the baseline x86-64 ISA (no
// -march=native unless D2EXT_CPU_ARCH asks for it), so it loads on any CPU torch runs on; each
// launcher file compiles its loops three times (cpu_isa_variants.h): for the baseline, for AVX2 and
// for AVX-512, and registers a dispatcher that calls the variant cpu_isa() picks:
//   D2EXT_CPU_CAPABILITY (default | avx2 | avx512), else ATEN_CPU_CAPABILITY (the variable that
//   forces ATen's choice), else the best variant this CPU supports. A forced variant the CPU
//   lacks is an error naming the variable, never an illegal instruction.
// Variants exist where GCC targets x86-64 (per-function `#pragma GCC target`); elsewhere there
// is the one default variant, built for the compiler's target.
#pragma once

#include <utility>

#include "host_device.h"  // D2EXT_CPU_VARIANTS

namespace d2ext {

enum class CpuIsa : int { Default = 0, Avx2 = 1, Avx512 = 2 };

// The variant every launcher uses in this process (decided once, on first use).
CpuIsa cpu_isa();
const char* cpu_isa_name(CpuIsa isa);

// IsaDispatch<&isa_default::f, &isa_avx2::f, &isa_avx512::f>::call: a function with f's
// signature that calls the variant of cpu_isa(); registered as the CPU kernel.
template <auto Default, auto Avx2, auto Avx512>
struct IsaDispatch;

template <typename R, typename... Args, R (*Default)(Args...), R (*Avx2)(Args...), R (*Avx512)(Args...)>
struct IsaDispatch<Default, Avx2, Avx512> {
  static R call(Args... args) {
    switch (cpu_isa()) {
      case CpuIsa::Avx512:
        return Avx512(std::forward<Args>(args)...);
      case CpuIsa::Avx2:
        return Avx2(std::forward<Args>(args)...);
      default:
        return Default(std::forward<Args>(args)...);
    }
  }
};

}  // namespace d2ext

// The CPU kernel to register for launcher `name` (a function of the kernels file).
#if D2EXT_CPU_VARIANTS
#define D2EXT_CPU_KERNEL(...) \
  (&::d2ext::IsaDispatch<&::d2ext::isa_default::__VA_ARGS__, &::d2ext::isa_avx2::__VA_ARGS__, \
                         &::d2ext::isa_avx512::__VA_ARGS__>::call)
#else
#define D2EXT_CPU_KERNEL(...) (&::d2ext::isa_default::__VA_ARGS__)
#endif
