"""Output allocation shared by the Triton launchers: poisoned with NaN under ZEROMAMBA_POISON=1,
so an element a kernel forgets to write fails the tests."""

import os

import torch


def empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A fresh contiguous tensor; NaN-filled when $ZEROMAMBA_POISON is 1."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if os.environ.get("ZEROMAMBA_POISON", "0") == "1":
        out.fill_(float("nan"))
    return out
