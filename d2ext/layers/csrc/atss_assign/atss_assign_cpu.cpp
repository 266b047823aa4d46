// CPU launcher of d2ext::atss_assign: candidates and thresholds per GT in parallel, then one
// pass resolving anchors claimed by several GTs. Extra memory O(R + M * levels * k). The loops:
// atss_assign_cpu_kernels.inc, one copy per CPU variant (cpu_isa.h).
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "atss_assign.h"
#include "atss_assign_checks.h"
#include "../cpu_isa.h"

#define D2EXT_CPU_KERNELS_FILE "atss_assign/atss_assign_cpu_kernels.inc"
#include "../cpu_isa_variants.h"

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("atss_assign", D2EXT_CPU_KERNEL(atss_assign_cpu));
}
