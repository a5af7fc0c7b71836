// Python bindings: argument checks, GIL release and m.def lines only.
// CPU kernels take NumPy views of torch tensors (noconvert: never a silent copy, which would break
// out=); CUDA kernels take device pointers and the current torch stream, validated in Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "common.h"
#include "kernels.h"

namespace py = pybind11;
using farray = py::array_t<float, py::array::c_style>;

namespace ddmini {
namespace {

float* mutable_data(farray& a, const char* name) {
  DDMINI_CHECK_ARG(a.writeable(), std::string(name) + " must be writeable");
  return a.mutable_data();
}

void axpy_cpu_py(float a, const farray& x, farray& y, int num_threads) {
  DDMINI_CHECK_ARG(x.size() == y.size(), "axpy: x and y must have the same number of elements");
  const float* px = x.data();
  float* py_ = mutable_data(y, "y");
  py::gil_scoped_release nogil;
  axpy_cpu(a, px, py_, x.size(), num_threads);
}

}  // namespace
}  // namespace ddmini

PYBIND11_MODULE(_C, m) {
  using namespace ddmini;
  m.doc() = "ddmini compiled kernels (C++/OpenMP, and CUDA when built with a CUDA compiler)";
  m.def("has_cuda", []() {
#ifdef DDMINI_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "True when the CUDA kernels were compiled into this module.");
  m.def("has_openmp", []() { return kHasOpenMP; }, "True when the CPU kernels use OpenMP.");

  m.def("axpy_cpu", &axpy_cpu_py, py::arg("a"), py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("num_threads") = 1, "y <- a*x + y (float32, C-contiguous).");
#ifdef DDMINI_WITH_CUDA
  m.def("axpy_cuda", [](float a, uintptr_t x, uintptr_t y, int64_t n, uintptr_t stream) {
    py::gil_scoped_release nogil;
    axpy_cuda(a, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y), n, stream);
  }, py::arg("a"), py::arg("x_ptr"), py::arg("y_ptr"), py::arg("n"), py::arg("stream"));
#endif
}
