// Python bindings: argument checks, GIL release and m.def lines only.
// CPU kernels take NumPy views of torch tensors (noconvert: never a silent copy, which would break
// out=); CUDA kernels take device pointers and the current torch stream, validated in Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "common.h"
#include "kernels.h"
#include "schedule_coefs.h"

namespace py = pybind11;
using farray = py::array_t<float, py::array::c_style>;

namespace ddmini {
namespace {

float* mutable_data(farray& a, const char* name) {
  DDMINI_CHECK_ARG(a.writeable(), std::string(name) + " must be writeable");
  return a.mutable_data();
}

template <typename T>
py::array_t<T, py::array::c_style> as_array(const py::handle& o, const char* name, const char* dtype) {
  if (!py::isinstance<py::array_t<T, py::array::c_style>>(o))
    throw py::type_error(std::string(name) + " must be a C-contiguous " + dtype + " array");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(o);
}

// The scalar part of a step's arguments, shared by the CPU and CUDA bindings; pointers are set by each.
StepArgs step_args(int op, int64_t batch, int64_t inner, int64_t T, int64_t t_scalar, int64_t t_prev_scalar,
                   double eta, bool philox, uint64_t seed, uint64_t offset, bool has_noise_array) {
  DDMINI_CHECK_ARG(op >= kQSample && op <= kDDIM, "unknown step op");
  DDMINI_CHECK_ARG(!(philox && has_noise_array), "give either a noise array or in-kernel noise, not both");
  StepArgs s;
  s.op = op;
  s.batch = batch;
  s.inner = inner;
  s.T = T;
  s.t_scalar = t_scalar;
  s.t_prev_scalar = t_prev_scalar;
  s.eta = eta;
  s.philox = philox;
  s.seed = seed;
  s.offset = offset;
  return s;
}

int cpu_isa_from_name(const std::string& name) {
  for (int isa : {kIsaAVX512, kIsaAVX2, kIsaBaseline})
    if (name == cpu_isa_name(isa)) return isa;
  throw std::invalid_argument("CPU kernel variant must be one of avx512, avx2, baseline; got '" + name + "'");
}

// CPU step: a, b, out (and c unless None) float32 of equal size; abar float64 (T,); t / t_prev
// either an int64 array (B,) or None (then the scalar is used).
void schedule_step_cpu_py(int op, const farray& a, const farray& b, const py::object& c, farray& out,
                          int64_t batch, const py::array_t<double, py::array::c_style>& abar,
                          const py::object& t, int64_t t_scalar, const py::object& t_prev,
                          int64_t t_prev_scalar, double eta, int num_threads, bool philox, uint64_t seed,
                          uint64_t offset) {
  const int64_t total = a.size();
  DDMINI_CHECK_ARG(b.size() == total && out.size() == total, "step: tensors must have the same number of elements");
  DDMINI_CHECK_ARG(batch >= 1 && total % batch == 0, "step: batch must divide the number of elements");
  DDMINI_CHECK_ARG(abar.ndim() == 1, "alphas_cumprod must be 1-D");
  StepArgs s = step_args(op, batch, total / batch, abar.size(), t_scalar, t_prev_scalar, eta, philox, seed, offset,
                         !c.is_none());
  s.a = a.data();
  s.b = b.data();
  s.out = mutable_data(out, "out");
  s.abar = abar.data();
  py::array_t<float, py::array::c_style> ca;
  py::array_t<int64_t, py::array::c_style> ta, tpa;
  if (!c.is_none()) {
    ca = as_array<float>(c, "noise", "float32");
    DDMINI_CHECK_ARG(ca.size() == total, "noise must have as many elements as x");
    s.c = ca.data();
  }
  if (!t.is_none()) {
    ta = as_array<int64_t>(t, "t", "int64");
    DDMINI_CHECK_ARG(ta.size() == batch, "t must have one entry per sample");
    s.t = ta.data();
  }
  if (!t_prev.is_none()) {
    tpa = as_array<int64_t>(t_prev, "t_prev", "int64");
    DDMINI_CHECK_ARG(tpa.size() == batch, "t_prev must have one entry per sample");
    s.t_prev = tpa.data();
  }
  check_schedule_table(s.abar, s.T);
  py::gil_scoped_release nogil;
  schedule_step_cpu(s, num_threads);
}

// Batched trace-sqrt: C1, C2 float64 (B, d, d) C-contiguous; returns float64 (B,).
py::array_t<double> trace_sqrt_product_cpu_py(const py::array_t<double, py::array::c_style>& C1,
                                              const py::array_t<double, py::array::c_style>& C2,
                                              int num_threads) {
  DDMINI_CHECK_ARG(C1.ndim() == 3 && C2.ndim() == 3, "covariances must be (B, d, d)");
  DDMINI_CHECK_ARG(C1.shape(1) == C1.shape(2), "covariances must be square");
  for (int i = 0; i < 3; ++i)
    DDMINI_CHECK_ARG(C1.shape(i) == C2.shape(i), "cov1 and cov2 must have the same shape");
  const int64_t B = C1.shape(0), d = C1.shape(1);
  py::array_t<double> out(B);
  const double* a = C1.data();
  const double* b = C2.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    trace_sqrt_product_cpu(a, b, B, d, o, num_threads);
  }
  return out;
}

void philox_normal_cpu_py(farray& out, uint64_t seed, uint64_t offset, int num_threads) {
  float* o = mutable_data(out, "out");
  const int64_t n = out.size();
  py::gil_scoped_release nogil;
  philox_normal_cpu(o, 0, n, seed, offset, num_threads);
}

// Arrays overlap when their byte ranges do (then a __restrict kernel could read what it wrote).
bool overlap(const py::array& a, const py::array& b) {
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// An activation of group_norm_silu: C-contiguous float32, or bfloat16 bits as int16 / uint16.
bool activation_is_bf16(const py::array& a, const char* name) {
  DDMINI_CHECK_ARG(a.flags() & py::array::c_style, std::string("group_norm_silu: ") + name + " must be C-contiguous");
  if (py::isinstance<py::array_t<float>>(a) && a.itemsize() == 4) return false;
  DDMINI_CHECK_ARG(a.itemsize() == 2 && (a.dtype().kind() == 'i' || a.dtype().kind() == 'u'),
                   std::string("group_norm_silu: ") + name + " must be float32 or bfloat16 bits (int16)");
  return true;
}

GroupNormSiluArgs gns_args(const py::array& x, const farray& A, const farray& B, int64_t N, int64_t C, int64_t HW,
                           int64_t G, bool channels_last, float eps) {
  DDMINI_CHECK_ARG(N >= 0 && C >= 1 && HW >= 1 && x.size() == N * C * HW,
                   "group_norm_silu: x must hold N * C * HW elements");
  DDMINI_CHECK_ARG(A.size() == N * C && B.size() == N * C, "group_norm_silu: A and B must be (N, C)");
  GroupNormSiluArgs s;
  s.N = N;
  s.C = C;
  s.HW = HW;
  s.G = G;
  s.channels_last = channels_last;
  s.bf16 = activation_is_bf16(x, "x");
  s.eps = eps;
  s.A = A.data();
  s.B = B.data();
  return s;
}

void check_like_x(const GroupNormSiluArgs& s, const py::array& x, const py::array& a, const char* name) {
  DDMINI_CHECK_ARG(a.size() == x.size() && activation_is_bf16(a, name) == s.bf16,
                   std::string("group_norm_silu: ") + name + " must have the shape and dtype of x");
}

void group_norm_silu_forward_cpu_py(const py::array& x, const farray& A, const farray& B, py::array& y, farray& mean,
                                    farray& rstd, int64_t N, int64_t C, int64_t HW, int64_t G, bool channels_last,
                                    float eps, int num_threads) {
  GroupNormSiluArgs s = gns_args(x, A, B, N, C, HW, G, channels_last, eps);
  check_like_x(s, x, y, "y");
  DDMINI_CHECK_ARG(y.writeable(), "y must be writeable");
  DDMINI_CHECK_ARG(G >= 1 && mean.size() == N * G && rstd.size() == N * G, "group_norm_silu: mean and rstd must be (N, G)");
  DDMINI_CHECK_ARG(!overlap(x, y), "group_norm_silu: y must not overlap x");
  const void* px = x.data();
  void* py_ = y.mutable_data();
  float* pm = mutable_data(mean, "mean");
  float* pr = mutable_data(rstd, "rstd");
  py::gil_scoped_release nogil;
  group_norm_silu_forward_cpu(s, px, py_, pm, pr, num_threads);
}

void group_norm_silu_backward_cpu_py(const py::array& dy, const py::array& x, const farray& A, const farray& B,
                                     const farray& mean, const farray& rstd, py::array& dx, farray& dA, farray& dB,
                                     int64_t N, int64_t C, int64_t HW, int64_t G, bool channels_last,
                                     int num_threads) {
  GroupNormSiluArgs s = gns_args(x, A, B, N, C, HW, G, channels_last, 1e-5f);
  check_like_x(s, x, dy, "dy");
  check_like_x(s, x, dx, "dx");
  DDMINI_CHECK_ARG(dx.writeable(), "dx must be writeable");
  DDMINI_CHECK_ARG(G >= 1 && mean.size() == N * G && rstd.size() == N * G, "group_norm_silu: mean and rstd must be (N, G)");
  DDMINI_CHECK_ARG(dA.size() == N * C && dB.size() == N * C, "group_norm_silu: dA and dB must be (N, C)");
  DDMINI_CHECK_ARG(!overlap(dx, x) && !overlap(dx, dy), "group_norm_silu: dx must not overlap x or dy");
  const void *pg = dy.data(), *px = x.data();
  const float *pm = mean.data(), *pr = rstd.data();
  void* pdx = dx.mutable_data();
  float* pda = mutable_data(dA, "dA");
  float* pdb = mutable_data(dB, "dB");
  py::gil_scoped_release nogil;
  group_norm_silu_backward_cpu(s, pg, px, pm, pr, pdx, pda, pdb, num_threads);
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
  m.def("cpu_isa", []() { return std::string(cpu_isa_name(cpu_isa_active())); },
        "The CPU variant of the hot loops in use: avx512, avx2 or baseline.");
  m.def("cpu_isas", []() {
    py::list names;
    for (int isa : {kIsaAVX512, kIsaAVX2, kIsaBaseline})
      if (cpu_isa_supported(isa)) names.append(cpu_isa_name(isa));
    return names;
  }, "The CPU variants this machine and build can run, widest first.");
  m.def("set_cpu_isa", [](const std::string& name) { set_cpu_isa(cpu_isa_from_name(name)); }, py::arg("name"),
        "Use this CPU variant of the hot loops from now on (ValueError if the CPU lacks it).");

  m.def("axpy_cpu", &axpy_cpu_py, py::arg("a"), py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("num_threads") = 1, "y <- a*x + y (float32, C-contiguous).");
  m.def("schedule_step_cpu", &schedule_step_cpu_py, py::arg("op"), py::arg("a").noconvert(),
        py::arg("b").noconvert(), py::arg("c"), py::arg("out").noconvert(), py::arg("batch"),
        py::arg("abar").noconvert(), py::arg("t"), py::arg("t_scalar"), py::arg("t_prev"),
        py::arg("t_prev_scalar"), py::arg("eta"), py::arg("num_threads") = 1, py::arg("philox") = false,
        py::arg("seed") = 0, py::arg("offset") = 0,
        "Fused noise-schedule step on the CPU: out = ca*a + cb*b (+ cc*c, c an array or in-kernel Philox noise).");
  m.def("philox_normal_cpu", &philox_normal_cpu_py, py::arg("out").noconvert(), py::arg("seed"), py::arg("offset"),
        py::arg("num_threads") = 1, "Fill out with N(0, 1) noise of the Philox stream (seed, offset).");
  m.def("group_norm_silu_forward_cpu", &group_norm_silu_forward_cpu_py, py::arg("x").noconvert(),
        py::arg("A").noconvert(), py::arg("B").noconvert(), py::arg("y").noconvert(), py::arg("mean").noconvert(),
        py::arg("rstd").noconvert(), py::arg("N"), py::arg("C"), py::arg("HW"), py::arg("G"),
        py::arg("channels_last"), py::arg("eps"), py::arg("num_threads") = 1,
        "y = silu(A * GroupNorm(x) + B) per sample and channel; writes the groups' mean and rstd.");
  m.def("group_norm_silu_backward_cpu", &group_norm_silu_backward_cpu_py, py::arg("dy").noconvert(),
        py::arg("x").noconvert(), py::arg("A").noconvert(), py::arg("B").noconvert(), py::arg("mean").noconvert(),
        py::arg("rstd").noconvert(), py::arg("dx").noconvert(), py::arg("dA").noconvert(), py::arg("dB").noconvert(),
        py::arg("N"), py::arg("C"), py::arg("HW"), py::arg("G"), py::arg("channels_last"),
        py::arg("num_threads") = 1, "Gradients of group_norm_silu with respect to x, A and B.");
  m.def("trace_sqrt_product_cpu", &trace_sqrt_product_cpu_py, py::arg("cov1").noconvert(),
        py::arg("cov2").noconvert(), py::arg("num_threads") = 1,
        "tr((C1 C2)^{1/2}) for a batch of symmetric PSD float64 matrices (B, d, d) -> (B,).");
  m.attr("OP_Q_SAMPLE") = int(kQSample);
  m.attr("OP_DDPM_SMALL") = int(kDDPMSmall);
  m.attr("OP_DDPM_LARGE") = int(kDDPMLarge);
  m.attr("OP_DDIM") = int(kDDIM);
#ifdef DDMINI_WITH_CUDA
  m.def("schedule_step_cuda", [](int op, uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t out, int64_t batch,
                                 int64_t inner, uintptr_t abar, int64_t T, uintptr_t t, int64_t t_scalar,
                                 uintptr_t t_prev, int64_t t_prev_scalar, double eta, uintptr_t stream,
                                 bool philox, uint64_t seed, uint64_t offset) {
    StepArgs s = step_args(op, batch, inner, T, t_scalar, t_prev_scalar, eta, philox, seed, offset, c != 0);
    s.a = reinterpret_cast<const float*>(a);
    s.b = reinterpret_cast<const float*>(b);
    s.c = reinterpret_cast<const float*>(c);
    s.out = reinterpret_cast<float*>(out);
    s.abar = reinterpret_cast<const double*>(abar);
    s.t = reinterpret_cast<const int64_t*>(t);
    s.t_prev = reinterpret_cast<const int64_t*>(t_prev);
    py::gil_scoped_release nogil;
    schedule_step_cuda(s, stream);
  }, "Fused noise-schedule step on the GPU (device pointers; 0 for an absent one).");
  m.def("philox_normal_cuda", [](uintptr_t out, int64_t n, uint64_t seed, uint64_t offset, uintptr_t stream) {
    py::gil_scoped_release nogil;
    philox_normal_cuda(reinterpret_cast<float*>(out), n, seed, offset, stream);
  }, "Fill a device float32 buffer with N(0, 1) noise of the Philox stream (seed, offset).");
  m.def("axpy_cuda", [](float a, uintptr_t x, uintptr_t y, int64_t n, uintptr_t stream) {
    py::gil_scoped_release nogil;
    axpy_cuda(a, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y), n, stream);
  }, py::arg("a"), py::arg("x_ptr"), py::arg("y_ptr"), py::arg("n"), py::arg("stream"));
#endif
}
