// Schemas of the inik_fast ops (docs/ops.md). The kernels register per device in
// csrc/cpu and csrc/cuda; fake kernels and autograd are registered in inik_fast/ops.py.
#include <Python.h>
#include <torch/library.h>

// setup.py passes the CUDA archs as a bare token, e.g. sm_80.sm_90; absent without CUDA kernels.
#define INIK_FAST_STR2(x) #x
#define INIK_FAST_STR(x) INIK_FAST_STR2(x)
#ifdef INIK_FAST_CUDA_ARCHS
static const char* kCudaArchs = INIK_FAST_STR(INIK_FAST_CUDA_ARCHS);
#else
static const char* kCudaArchs = "";
#endif

extern "C" {
// Importing inik_fast._C from Python loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}

static std::string cuda_archs() { return kCudaArchs; }

TORCH_LIBRARY(inik_fast, m) {
  m.def(
      "atom_bank_forward(Tensor coords, Tensor mask, Tensor w1, Tensor b1, Tensor w2, Tensor b2, "
      "Tensor w3, Tensor omega) -> Tensor");
  m.def(
      "atom_bank_backward(Tensor grad_atoms, Tensor coords, Tensor mask, Tensor w1, Tensor b1, "
      "Tensor w2, Tensor b2, Tensor w3, Tensor omega) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "ikconv_forward(Tensor x, Tensor atoms, Tensor scale, Tensor basis, Tensor weight, Tensor? bias, "
      "bool residual) -> Tensor");
  m.def(
      "ikconv_backward(Tensor grad_y, Tensor x, Tensor atoms, Tensor scale, Tensor basis, Tensor weight, "
      "bool residual, bool need_x_grad, bool deterministic) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The ConvLSTM cell's update in one pass (trunk.lstm_cell, CPU): (h, c') from the gate conv's
  // output without its bias, [N, 4 * hidden], and the state c [N, hidden] (None: zero).
  m.def("lstm_gates(Tensor gates, Tensor bias, Tensor? c) -> (Tensor, Tensor)");
  // Its gradient: (d gates, d c) from d h and d c' (None: zero); d c is None when c is. The
  // bias's gradient is d gates summed over the rows.
  m.def(
      "lstm_gates_backward(Tensor gates, Tensor bias, Tensor? c, Tensor? grad_h, Tensor? grad_c) "
      "-> (Tensor, Tensor?)");
  // A 3x3 convolution, zero padding 1, stride 1, no bias, of cat(xs, 1) [B, C, H, W] with weight
  // [O, C, 3, 3], by Winograd's F(2x2, 3x3) (trunk.conv3_reflect, CPU, float32/float64; eval and
  // the training forward).
  m.def("conv3x3_winograd(Tensor[] xs, Tensor weight) -> Tensor");
  // The CUDA architectures the extension was compiled for ("" without CUDA kernels).
  m.def("cuda_archs() -> str", &cuda_archs);
}
