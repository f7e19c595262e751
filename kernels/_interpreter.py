"""Triton 3.6's CPU interpreter (TRITON_INTERPRET=1) with NumPy 2: a loop bound that is a kernel
argument fails there.

The interpreter wraps an integer argument in a 1-element array and converts it back with
``int(array)``, which NumPy 2 refuses for arrays that are not 0-d ("only 0-dimensional arrays can
be converted to Python scalars"), so ``range(0, F, BLOCK_F)`` raises; Triton 3.7+ squeezes the
array first. We apply the same conversion to the 3.6 interpreter, once, so that the kernels keep
``for`` loops over runtime bounds (which the compiler software-pipelines on a GPU) and still run
on the CPU. Compiled kernels are untouched.
"""

import os

import triton


def _needs_fix() -> bool:
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return False
    major, minor = (int(v) for v in triton.__version__.split(".")[:2])
    return (major, minor) < (3, 7)


def apply() -> None:
    """Patch the interpreter's ``tensor.__index__`` (Triton < 3.7 under TRITON_INTERPRET=1 only)."""
    if not _needs_fix():
        return
    from triton.runtime import interpreter

    patch_tensor = interpreter._patch_lang_tensor
    if getattr(patch_tensor, "_zeromamba", False):
        return

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched._zeromamba = True
    interpreter._patch_lang_tensor = patched
