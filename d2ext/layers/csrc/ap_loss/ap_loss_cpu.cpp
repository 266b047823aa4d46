// CPU launcher of d2ext::ap_loss: the two per-element loops of ap_loss_driver.h, in parallel
// (ap_loss_cpu_kernels.inc, one copy per CPU variant: cpu_isa.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ap_loss.h"
#include "ap_loss_driver.h"
#include "../cpu_isa.h"

#define D2EXT_CPU_KERNELS_FILE "ap_loss/ap_loss_cpu_kernels.inc"
#include "../cpu_isa_variants.h"

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  m.impl("ap_loss", D2EXT_CPU_KERNEL(ap_loss_cpu));
}
