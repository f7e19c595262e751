"""Builds zeromamba._C: the op schemas and C++ CPU kernels always, the CUDA kernels when a CUDA
toolkit and a CUDA build of torch are present.

Switches (environment):
  ZEROMAMBA_CUDA=0      never build the CUDA part
  ZEROMAMBA_CUDA=1      build it or fail (no silent CPU-only build)
  TORCH_CUDA_ARCH_LIST  architectures, default "8.0;9.0"
  MAX_JOBS              parallel compile jobs (ninja), default: all cores

The gate is the toolkit and torch.version.cuda, never torch.cuda.is_available(): a GPU-less build
machine with nvcc and a CUDA torch builds the CUDA kernels too.
"""

import glob
import os

from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_wanted() -> bool:
    switch = os.environ.get("ZEROMAMBA_CUDA", "auto").lower()
    have = cpp_extension.CUDA_HOME is not None and __import__("torch").version.cuda is not None
    if switch in ("0", "false", "off", "no"):
        return False
    if switch in ("1", "true", "on", "yes"):
        if not have:
            raise RuntimeError(
                "ZEROMAMBA_CUDA=1 but the CUDA part cannot be built: "
                f"CUDA_HOME={cpp_extension.CUDA_HOME!r}, torch.version.cuda="
                f"{__import__('torch').version.cuda!r} (a CUDA toolkit and a CUDA build of torch "
                "are both needed)"
            )
        return True
    return have


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    with_cuda = _cuda_wanted()
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    ldflags = ["-fopenmp"]
    if not with_cuda:
        return cpp_extension.CppExtension(
            "zeromamba._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=ldflags
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources += _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu")
    nvcc = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr"]
    return cpp_extension.CUDAExtension(
        "zeromamba._C",
        sources,
        define_macros=[("ZEROMAMBA_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx + ["-DZEROMAMBA_WITH_CUDA"], "nvcc": nvcc},
        extra_link_args=ldflags,
    )


setup(
    packages=[
        "zeromamba",
        "zeromamba.kernels",
        "zeromamba.models",
        "zeromamba.data",
        "zeromamba.training",
        "zeromamba.report",
        "zeromamba.compat",
        "zeromamba.baselines",
    ],
    package_dir={"zeromamba.kernels": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
