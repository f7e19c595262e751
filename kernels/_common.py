"""Helpers shared by the Triton launchers and kernels: the accepted activation dtypes, the output
dtype rule, the exp2/log2 conversion constants and tile-size rounding."""

import torch
import triton.language as tl
from torch import Tensor

# The Triton kernels compute in fp32; fp64 activations belong to the cpu and reference backends.
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# exp(x) = exp2(x * LOG2E) and log(x) = log2(x) * LN2: the exp2/log2 forms are the fast ones.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


def check_dtype(op: str, x: Tensor) -> None:
    """The Triton kernels compute in fp32 and take fp32/fp16/bf16 activations (no fp64)."""
    if x.dtype not in DTYPES:
        raise ValueError(
            f"{op}: the triton backend takes float32, float16 or bfloat16 "
            f"activations, got {x.dtype} (use the cpu or reference backend)"
        )


def out_dtype(dtype: torch.dtype, out_float32: bool) -> torch.dtype:
    """The input dtype, or float32 for half inputs when ``out_float32``."""
    return torch.float32 if out_float32 and dtype in (torch.float16, torch.bfloat16) else dtype


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (and >= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()
