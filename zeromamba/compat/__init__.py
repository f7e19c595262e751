"""Drop-in entry points for code written against mamba_ssm or VMamba.

* ``zeromamba.compat.mamba.selective_scan_fn`` — mamba_ssm's ``selective_scan_fn`` (z gating,
  last state, (b, N, L) / (b, G, N, L) / constant B and C, N up to 256);
* ``zeromamba.compat.vmamba.selective_scan_fn`` — VMamba's (positional ``oflex``, its backend
  names), and ``patch_vssm(model)``, which switches a VMamba model's SS2D modules to the fused
  ``ss2d_scan`` in place after verifying them on a probe;
* ``compare_paths`` / ``LayoutMismatch`` — the fused-against-unfused check behind
  ``patch_vssm`` and ``ZEROMAMBA_CHECK_LAYOUT=1``, for hand-written fused call sites.
"""

from ..layout_check import LayoutMismatch, compare_paths
from . import mamba, vmamba

__all__ = ["LayoutMismatch", "compare_paths", "mamba", "vmamba"]
