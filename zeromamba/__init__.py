"""zeromamba: ZeroMamba zero-shot learning on a Vision Mamba backbone, built on fused kernels.

``import zeromamba`` loads the op library (``torch.ops.zeromamba.*``) and its Python
registrations; the public ops live in ``zeromamba.ops``.
"""

import torch  # noqa: F401  (loads libtorch/libc10, which _C links against)

try:
    from . import _C  # noqa: F401  (registers the op schemas and the C++/CUDA kernels)
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "zeromamba._C is not built. Install the package with "
        "`pip install --no-build-isolation -e .` (see README)."
    ) from e

from . import ops
from .backends import available_backends

__version__ = "0.1.0"
__all__ = ["available_backends", "ops"]
