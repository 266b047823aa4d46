// CPU launchers of the focal-family losses: parallel loops over rows calling the shared bodies
// of focal_losses.h. Registered for d2ext::{sigmoid_focal,quality_focal,varifocal,
// distribution_focal}_loss and their _backward ops. The loops: focal_losses_cpu_kernels.inc, one
// copy per CPU variant (cpu_isa.h).
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "focal_losses.h"
#include "focal_losses_checks.h"
#include "focal_losses_registration.h"
#include "../simd_transpose.h"
#include "../cpu_isa.h"

#define D2EXT_CPU_KERNELS_FILE "focal_losses/focal_losses_cpu_kernels.inc"
#include "../cpu_isa_variants.h"

TORCH_LIBRARY_IMPL(d2ext, CPU, m) {
  d2ext::register_focal_losses<D2EXT_CPU_KERNEL(sigmoid_loss_cpu), D2EXT_CPU_KERNEL(dfl_cpu)>(m);
}
