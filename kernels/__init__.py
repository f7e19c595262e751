"""Triton kernels of zeromamba (installed as zeromamba.kernels): the ``triton`` backend.

Six functions with the positional signatures of the C++ kernel ops of csrc/ops.cpp, each a
``torch.library.triton_op`` (``zeromamba::<name>_triton``) whose launches go through
``wrap_triton``. They run on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1.

What torch.compile sees: the public ops (``zeromamba.ops.ss2d_scan`` ...) are opaque custom ops
with fake kernels, so a compiled graph holds one node per op (and one per backward) and calls
these functions eagerly from it; Inductor does not trace into the Triton kernels there. Called
directly inside a compiled function, a ``*_triton`` op is traced by Inductor, which then launches
the kernels itself. Either way the launchers never sync with the host (no ``.item()``, no
data-dependent shapes), so ``torch.compile(mode="reduce-overhead")`` captures them in CUDA graphs.
"""

from . import _interpreter

_interpreter.apply()

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
