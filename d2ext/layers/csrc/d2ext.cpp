// The one registration file of d2ext's ops: every schema lives here, the kernels register
// themselves per dispatch key next to their launchers, and fake (Meta) kernels and autograd
// formulas are registered from Python in d2ext/layers/_fake.py.
#include <Python.h>
#include <torch/library.h>

// An importable module so that `import d2ext._C` loads the library (and runs the registrations
// below) without pybind11.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(d2ext, m) {
  m.set_python_module("d2ext.layers._fake");
  // (N, 4) x (M, 4) -> (N, M); mode 0 = IoU, 1 = GIoU. Not differentiable (used for matching).
  m.def("pairwise_iou(Tensor boxes1, Tensor boxes2, int mode=0) -> Tensor");
}
