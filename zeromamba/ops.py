"""The public ops (docs/design.md §2): ``selective_scan``, ``cross_scan``, ``cross_merge``, ``ss2d_scan``,
``slp_project``.

Each is a registered torch op (``torch.ops.zeromamba.<name>``, schema in csrc/ops.cpp) with a
fake kernel and autograd, so it works in eager mode, under ``torch.compile(fullgraph=True)`` and
through ``torch.library.opcheck``. The scan and SLP ops take a ``backend`` name (see
``zeromamba.backends``); their backward passes are registered ops too
(``*_backward``), run by the same backend as the forward.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from . import backends, checks, state_chunks
from .backends import available_backends
from .reference import output_dtype

__all__ = [
    "available_backends",
    "cross_merge",
    "cross_scan",
    "selective_scan",
    "slp_project",
    "ss2d_scan",
]

_ops = torch.ops.zeromamba


# --------------------------------------------------------------------------- public functions


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    out_float32: bool = False,
    backend: str | None = None,
) -> Tensor:
    """Mamba's selective scan (S6), docs/design.md §2.1.

    Args:
        u, delta: (b, d, L) inputs and time steps.
        A: (d, N) fp32 state matrix, 1 <= N <= 256 (N <= 16 runs the kernels' specialised
            paths; larger N runs as chunks of 16 states, exactly). Mamba's A is negative (a decaying state);
            A >= 0 is accepted and defined by the same recurrence (the state grows, and
            exp(dt A) overflows to inf as torch.exp does); every backend computes the same result
            (not refused: checking values would cost a device sync on every call).
        Empty inputs (L = 0, b = 0) give an empty output. NaN and Inf propagate as through the
        reference's arithmetic on every backend, forward and backward.
        B, C: (b, G, N, L), d % G == 0; channel c uses group c // (d // G).
        D, delta_bias: optional (d,) fp32 skip weight and time-step bias.
        delta_softplus: apply softplus to delta + delta_bias. Default False, as in mamba_ssm's
            ``selective_scan_fn``; ``ss2d_scan`` defaults to True, as VMamba.
        out_float32: return float32 for float16/bfloat16 inputs.
        backend: "reference", "cpu", "triton" or "cuda"; default $ZEROMAMBA_BACKEND or the
            fastest available for the device.
    Returns:
        y: (b, d, L).
    """
    return _ops.selective_scan(
        u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32, backend
    )


def cross_scan(x: Tensor) -> Tensor:
    """(b, C, H, W) -> (b, 4, C, H*W): row-major, column-major, and both reversed (docs/design.md §2.2)."""
    return _ops.cross_scan(x)


def cross_merge(ys: Tensor, H: int, W: int) -> Tensor:
    """(b, 4, C, H*W) -> (b, C, H, W): adds the four direction sequences back at their positions."""
    return _ops.cross_merge(ys, H, W)


def ss2d_scan(
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    *,
    channel_last: bool = False,
    out_float32: bool = False,
    backend: str | None = None,
) -> Tensor:
    """The fused four-way selective scan of VMamba's SS2D (docs/design.md §2.3).

    Equals ``cross_merge(selective_scan(cross_scan(x), ...))`` with every per-direction input
    given in spatial order; direction k owns rows k*C .. k*C+C-1 of A, D and delta_bias.

    LAYOUT WARNING: delta[:, k], B[:, k] and C[:, k] hold direction k's values at each
    *spatial* position (h, w), not in direction k's scan order. Tensors computed in VMamba's
    scan order (e.g. projections of ``cross_scan(x)``) and reshaped to (b, 4, ..., H, W) have the
    right shapes, pass every check and barely change the output at initialisation, but give
    wrong gradients (100%+ off). Compute them from x in spatial order (the projections are
    pointwise), or convert with ``zeromamba.compat.vmamba.scan_to_spatial``; verify a call site
    with ``zeromamba.compat.compare_paths`` or ``ZEROMAMBA_CHECK_LAYOUT=1``, or let
    ``zeromamba.compat.vmamba.patch_vssm`` do the switch.

    ``delta_softplus`` defaults to True here (VMamba) but to False in ``selective_scan``
    (mamba_ssm); the compat entry points follow their upstream defaults.

    Args (channel-first / ``channel_last=True``):
        x: (b, C, H, W) / (b, H, W, C).
        delta: (b, 4, C, H, W) / (b, 4, H, W, C).
        A: (4C, N) fp32, 1 <= N <= 16; any sign, as in ``selective_scan``. H = 0 or W = 0 gives
            an empty output; NaN and Inf propagate as in ``selective_scan``.
        B, C: (b, 4, N, H, W) / (b, 4, H, W, N).
        D, delta_bias: optional (4C,) fp32.
        delta_softplus: apply softplus to delta + delta_bias (VMamba: True).
        out_float32: return float32 for float16/bfloat16 inputs.
        backend: as in ``selective_scan``.
    Returns:
        y: (b, C, H, W) / (b, H, W, C).
    """
    return _ops.ss2d_scan(
        x, delta, A, B, C, D, delta_bias, delta_softplus, channel_last, out_float32, backend
    )


def slp_project(feat: Tensor, q1: Tensor, q2: Tensor, *, backend: str | None = None) -> Tensor:
    """ZeroMamba's Semantic-aware Local Projection, fused (docs/design.md §2.4).

    Args:
        feat: (b, F, R) region features, L2-normalised over F by the caller.
        q1, q2: (A, F) attribute queries (normalize(V) @ W1, normalize(V) @ W2).
        backend: as in ``selective_scan``.
    Returns:
        out: (b, A), out[b, i] = sum_r softmax_r(q1[i] . feat[b, :, r]) * (q2[i] . feat[b, :, r]).
    """
    return _ops.slp_project(feat, q1, q2, backend)


# --------------------------------------------------------------------------- implementations
# One Python implementation per public op for every device: it picks the backend and runs
# that backend's kernel function.


def _run(kernel: str, device: torch.device, backend: str | None, *args):
    # The kernels choose their own compute dtype: autocast must not recast the aten ops they
    # call inside (their float32 matmuls would come back in half precision).
    with torch.autocast(device.type, enabled=False):
        out = getattr(backends.kernels(backends.resolve(backend, device)), kernel)(*args)
    # Contiguous outputs on every backend, as the fake kernels promise (a compiled graph relies
    # on the strides the fakes report).
    if isinstance(out, torch.Tensor):
        return out.contiguous()
    return tuple(t.contiguous() for t in out)


def _in_state_chunks(A, device, backend) -> bool:
    """N > 16 on a kernel backend: run as chunks of <= 16 states (zeromamba/state_chunks.py);
    the reference takes any N directly."""
    return state_chunks.needs_chunks(A) and backends.resolve(backend, device) != "reference"


def _with_defaults(op: str, args: tuple) -> tuple:
    """The arguments of ``torch.ops.zeromamba.<op>`` completed with the schema's defaults
    (csrc/ops.cpp): the dispatcher drops trailing arguments left at their defaults before it
    calls a Python kernel, so the defaults are read from the one place that states them."""
    schema = getattr(_ops, op).default._schema
    return (*args, *(a.default_value for a in schema.arguments[len(args) :]))


# Each public op's kernel takes the device kernel op's arguments followed by ``backend``.


@torch.library.register_kernel("zeromamba::selective_scan", None)
def _selective_scan(*args):
    *inputs, backend = _with_defaults("selective_scan", args)
    u, delta, A, B, C, D, delta_bias, _, _ = inputs
    checks.selective_scan(u, delta, A, B, C, D, delta_bias)
    run = functools.partial(_run, "selective_scan_fwd", u.device, backend)
    if _in_state_chunks(A, u.device, backend):
        return state_chunks.forward(run, *inputs)
    return run(*inputs)


@torch.library.register_kernel("zeromamba::selective_scan_backward", None)
def _selective_scan_backward(*args):
    *inputs, backend = _with_defaults("selective_scan_backward", args)
    dy, u, delta, A, B, C, D, delta_bias, _ = inputs
    checks.selective_scan(u, delta, A, B, C, D, delta_bias)
    checks.grad_output("selective_scan_backward", dy, tuple(u.shape))
    run = functools.partial(_run, "selective_scan_bwd", u.device, backend)
    if _in_state_chunks(A, u.device, backend):
        return state_chunks.backward(run, *inputs)
    return run(*inputs)


@torch.library.register_kernel("zeromamba::ss2d_scan", None)
def _ss2d_scan(*args):
    *inputs, backend = _with_defaults("ss2d_scan", args)
    x, delta, A, B, C, D, delta_bias, _, channel_last, _ = inputs
    checks.ss2d_scan(x, delta, A, B, C, D, delta_bias, channel_last)
    return _run("ss2d_scan_fwd", x.device, backend, *inputs)


@torch.library.register_kernel("zeromamba::ss2d_scan_backward", None)
def _ss2d_scan_backward(*args):
    *inputs, backend = _with_defaults("ss2d_scan_backward", args)
    dy, x, delta, A, B, C, D, delta_bias, _, channel_last = inputs
    checks.ss2d_scan(x, delta, A, B, C, D, delta_bias, channel_last)
    checks.grad_output("ss2d_scan_backward", dy, tuple(x.shape))
    return _run("ss2d_scan_bwd", x.device, backend, *inputs)


@torch.library.register_kernel("zeromamba::slp_project", None)
def _slp_project(feat, q1, q2, backend=None):
    checks.slp_project(feat, q1, q2)
    return _run("slp_project_fwd", feat.device, backend, feat, q1, q2)


@torch.library.register_kernel("zeromamba::slp_project_backward", None)
def _slp_project_backward(dout, feat, q1, q2, backend=None):
    checks.slp_project(feat, q1, q2)
    checks.grad_output("slp_project_backward", dout, (feat.shape[0], q1.shape[0]))
    return _run("slp_project_bwd", feat.device, backend, dout, feat, q1, q2)


# --------------------------------------------------------------------------- fake kernels
# Shared by the public ops and the device kernel ops (which lack the trailing `backend`): both
# read their arguments as the public op's, with its defaults.


def _scan_grads(u, A, B, C, delta):
    """Empty gradients (du, ddelta, dA, dB, dC, dD, ddelta_bias) of a scan op."""
    return tuple(t.new_empty(t.shape) for t in (u, delta, A, B, C)) + (
        A.new_empty(A.shape[0]),
        A.new_empty(A.shape[0]),
    )


def _fake_selective_scan(*args):
    u, delta, A, B, C, D, delta_bias, _, out_float32, _ = _with_defaults("selective_scan", args)
    checks.selective_scan(u, delta, A, B, C, D, delta_bias)
    return u.new_empty(u.shape, dtype=output_dtype(u.dtype, out_float32))


def _fake_selective_scan_backward(*args):
    _, u, delta, A, B, C, D, delta_bias, _, _ = _with_defaults("selective_scan_backward", args)
    checks.selective_scan(u, delta, A, B, C, D, delta_bias)
    return _scan_grads(u, A, B, C, delta)


def _fake_ss2d_scan(*args):
    x, delta, A, B, C, D, delta_bias, _, channel_last, out_float32, _ = _with_defaults(
        "ss2d_scan", args
    )
    checks.ss2d_scan(x, delta, A, B, C, D, delta_bias, channel_last)
    return x.new_empty(x.shape, dtype=output_dtype(x.dtype, out_float32))


def _fake_ss2d_scan_backward(*args):
    _, x, delta, A, B, C, D, delta_bias, _, channel_last, _ = _with_defaults(
        "ss2d_scan_backward", args
    )
    checks.ss2d_scan(x, delta, A, B, C, D, delta_bias, channel_last)
    return _scan_grads(x, A, B, C, delta)


def _fake_slp_project(feat, q1, q2, backend=None):
    checks.slp_project(feat, q1, q2)
    return feat.new_empty(feat.shape[0], q1.shape[0])


def _fake_slp_project_backward(dout, feat, q1, q2, backend=None):
    checks.slp_project(feat, q1, q2)
    return feat.new_empty(feat.shape), q1.new_empty(q1.shape), q2.new_empty(q2.shape)


for _public, _kernel, _fake in (
    ("selective_scan", "selective_scan_fwd", _fake_selective_scan),
    ("selective_scan_backward", "selective_scan_bwd", _fake_selective_scan_backward),
    ("ss2d_scan", "ss2d_scan_fwd", _fake_ss2d_scan),
    ("ss2d_scan_backward", "ss2d_scan_bwd", _fake_ss2d_scan_backward),
    ("slp_project", "slp_project_fwd", _fake_slp_project),
    ("slp_project_backward", "slp_project_bwd", _fake_slp_project_backward),
):
    torch.library.register_fake(f"zeromamba::{_public}", _fake)
    torch.library.register_fake(f"zeromamba::{_kernel}", _fake)


# --------------------------------------------------------------------------- autograd
# The backward of each public op is its registered *_backward op on the same backend.
# What is saved: every input tensor, whichever gradients ``ctx.needs_input_grad`` asks for
# (setup runs only when some input needs one), because any one gradient needs all of them: the
# scan backward recomputes the forward states from x/u, delta, A, B and delta_bias and scans the
# adjoint through C and dy for every gradient; D enters only du, but it is (d,) and the backward
# kernels take it whole. Each SLP gradient needs the softmax over q1 feat and the values q2 feat.
# The output is never saved. Gradients are returned where ``ctx.needs_input_grad`` asks for them
# and the input is a tensor (D / delta_bias get None when absent).


def _setup_selective_scan(ctx, inputs, output):
    u, delta, A, B, C, D, delta_bias, delta_softplus, _out_float32, backend = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
    ctx.delta_softplus = delta_softplus
    ctx.backend = backend


def _setup_ss2d_scan(ctx, inputs, output):
    x, delta, A, B, C, D, delta_bias, delta_softplus, channel_last, _out_float32, backend = inputs
    ctx.save_for_backward(x, delta, A, B, C, D, delta_bias)
    ctx.delta_softplus = delta_softplus
    ctx.channel_last = channel_last
    ctx.backend = backend


def _requested(ctx, grads, inputs) -> tuple:
    """``grads`` with None where the input is absent or needs no gradient. The dispatcher drops
    trailing arguments left at their defaults, so ``needs_input_grad`` may be shorter than
    ``inputs``: a missing entry is an absent (None) input."""
    needs = ctx.needs_input_grad
    return tuple(
        g if t is not None and i < len(needs) and needs[i] else None
        for i, (g, t) in enumerate(zip(grads, inputs))
    )


def _selective_scan_bwd(ctx, dy):
    u, delta, A, B, C, D, delta_bias = inputs = ctx.saved_tensors
    grads = _ops.selective_scan_backward(
        dy, u, delta, A, B, C, D, delta_bias, ctx.delta_softplus, ctx.backend
    )
    return *_requested(ctx, grads, inputs), None, None, None


def _ss2d_scan_bwd(ctx, dy):
    x, delta, A, B, C, D, delta_bias = inputs = ctx.saved_tensors
    grads = _ops.ss2d_scan_backward(
        dy, x, delta, A, B, C, D, delta_bias, ctx.delta_softplus, ctx.channel_last, ctx.backend
    )
    return *_requested(ctx, grads, inputs), None, None, None, None


def _setup_slp(ctx, inputs, output):
    feat, q1, q2, backend = inputs
    ctx.save_for_backward(feat, q1, q2)
    ctx.backend = backend


def _slp_project_bwd(ctx, dout):
    inputs = ctx.saved_tensors
    grads = _ops.slp_project_backward(dout, *inputs, ctx.backend)
    return *_requested(ctx, grads, inputs), None


torch.library.register_autograd(
    "zeromamba::selective_scan", _selective_scan_bwd, setup_context=_setup_selective_scan
)
torch.library.register_autograd(
    "zeromamba::ss2d_scan", _ss2d_scan_bwd, setup_context=_setup_ss2d_scan
)
torch.library.register_autograd(
    "zeromamba::slp_project", _slp_project_bwd, setup_context=_setup_slp
)
