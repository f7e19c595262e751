"""Triton kernels of zeromamba (installed as zeromamba.kernels): the ``triton`` backend.

Six functions with the positional signatures of the C++ kernel ops of csrc/ops.cpp, each a
``torch.library.triton_op`` (``zeromamba::<name>_triton``) so torch.compile traces into the
launches on a GPU. They run on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1.
"""

from .selective_scan import selective_scan_bwd, selective_scan_fwd
from .slp_project import slp_project_bwd, slp_project_fwd
from .ss2d_scan import ss2d_scan_bwd, ss2d_scan_fwd

__all__ = [
    "selective_scan_bwd",
    "selective_scan_fwd",
    "slp_project_bwd",
    "slp_project_fwd",
    "ss2d_scan_bwd",
    "ss2d_scan_fwd",
]
