// cpu_isa(): which CPU variant of the launchers runs (cpu_isa.h), and the op
// d2ext::cpu_capability() that reports it to Python.
#include "cpu_isa.h"

#include <cctype>
#include <cstdlib>
#include <optional>
#include <string>

#include <c10/util/Exception.h>
#include <torch/library.h>

namespace d2ext {
namespace {

bool supported(CpuIsa isa) {
#if D2EXT_CPU_VARIANTS
  __builtin_cpu_init();
  switch (isa) {
    case CpuIsa::Avx512:  // cpu_isa_variants.h's target, which ATen's avx512 needs too
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuIsa::Avx2:  // cpu_isa_variants.h's target
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default:
      return true;
  }
#else
  return isa == CpuIsa::Default;
#endif
}

CpuIsa choose_best() {
  for (CpuIsa isa : {CpuIsa::Avx512, CpuIsa::Avx2}) {
    if (supported(isa)) {
      return isa;
    }
  }
  return CpuIsa::Default;
}

// The variable forcing the variant and its value, or nullptr: D2EXT_CPU_CAPABILITY, else ATen's.
const char* forced(const char** variable) {
  for (const char* name : {"D2EXT_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && value[0] != '\0') {
      *variable = name;
      return value;
    }
  }
  return nullptr;
}

// The variant named `name` (any case), if d2ext has one of that name.
std::optional<CpuIsa> parse(std::string name) {
  for (auto& c : name) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  for (CpuIsa isa : {CpuIsa::Default, CpuIsa::Avx2, CpuIsa::Avx512}) {
    if (name == cpu_isa_name(isa)) {
      return isa;
    }
  }
  return std::nullopt;
}

CpuIsa choose() {
  const char* variable = nullptr;
  const char* value = forced(&variable);
  if (value == nullptr) {
    return choose_best();
  }
  const auto isa = parse(value);
  // ATen's variable is a request, as in ATen: a value d2ext has no variant for (e.g. zvector) or
  // that the CPU lacks gives the best supported variant. d2ext's own variable is an order.
  if (std::string(variable) == "ATEN_CPU_CAPABILITY" && !(isa && supported(*isa))) {
    return choose_best();
  }
  TORCH_CHECK(isa.has_value(), variable, "=", value, ": d2ext's CPU variants are default, avx2 and avx512");
  TORCH_CHECK(supported(*isa), variable, "=", value, ": this CPU does not support ", cpu_isa_name(*isa),
              " (d2ext was built ", D2EXT_CPU_VARIANTS ? "with" : "without", " the x86-64 variants)");
  return *isa;
}

}  // namespace

CpuIsa cpu_isa() {
  static const CpuIsa isa = choose();
  return isa;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512:
      return "avx512";
    case CpuIsa::Avx2:
      return "avx2";
    default:
      return "default";
  }
}

}  // namespace d2ext

TORCH_LIBRARY_FRAGMENT(d2ext, m) {
  // The CPU variant of d2ext's launchers in this process: "default", "avx2" or "avx512".
  m.def("cpu_capability() -> str", [] { return std::string(d2ext::cpu_isa_name(d2ext::cpu_isa())); });
}
