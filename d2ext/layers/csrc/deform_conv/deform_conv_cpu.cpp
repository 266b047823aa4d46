// CPU launcher of d2ext::deform_conv2d and its backward: the driver's chunks and matrix products
// (deform_conv_driver.h) around parallel channels-last loops over the shared per-element bodies
// (deform_conv_cpu_kernels.inc, one copy per CPU variant: cpu_isa.h).
#include <algorithm>
#include <array>
#include <optional>
#include <tuple>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "deform_conv.h"
#include "deform_conv_driver.h"
#include "../cpu_isa.h"

// Four sums in one SIMD loop (the offset gradient's four corners).
#if defined(D2EXT_OMP_SIMD)
#define D2EXT_SIMD_SUM4(a, b, c, d) D2EXT_PRAGMA(omp simd reduction(+ : a, b, c, d))
#else
#define D2EXT_SIMD_SUM4(a, b, c, d)
#endif

#define D2EXT_CPU_KERNELS_FILE "deform_conv/deform_conv_cpu_kernels.inc"
#include "../cpu_isa_variants.h"

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("deform_conv2d", D2EXT_CPU_KERNEL(deform_conv2d_cpu));
  m.impl("_deform_conv2d_backward", D2EXT_CPU_KERNEL(deform_conv2d_backward_cpu));
}
