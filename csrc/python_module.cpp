// The Python module zeromamba._C: loading it registers the ops (csrc/ops.cpp and the kernels);
// build_info() tells Python what this build contains.

#include <pybind11/pybind11.h>
#include <torch/extension.h>

PYBIND11_MODULE(_C, m) {
  m.doc() = "zeromamba op library (schemas, CPU and CUDA kernels)";
  m.def("build_info", [] {
    pybind11::dict info;
#ifdef ZEROMAMBA_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
#ifdef _OPENMP
    info["openmp"] = true;
#else
    info["openmp"] = false;
#endif
    return info;
  });
}
