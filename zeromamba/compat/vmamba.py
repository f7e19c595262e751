"""VMamba's entry points on the zeromamba kernels.

* ``selective_scan_fn`` — the signature of VMamba's ``selective_scan_fn(u, delta, A, B, C, D,
  delta_bias, delta_softplus, oflex, backend)`` (positional ``oflex``; ``delta_softplus``
  defaults to True as in VMamba). Assign it to ``models.vmamba.selective_scan_fn`` and VMamba's
  own (unfused) flow runs on our selective scan.
* ``patch_vssm(model)`` — one call that switches every SS2D of a model to the fused four-way
  ``ss2d_scan`` in place: official VMamba SS2D modules (``forward_core`` replaced by a fused core
  that reads the same parameters) and ``zeromamba.models`` ones (``pipeline = "fused"``). Each
  module is verified on a probe (outputs and gradients equal to the unfused flow) before the call
  returns; on any mismatch every module is restored and the error raised.
* ``scan_to_spatial`` — per-direction tensors in VMamba's scan order (b, 4, X, L) to the spatial
  layout (b, 4, X, H, W) that ``ss2d_scan`` takes (a plain reshape is the silent layout mistake).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .. import layout_check, ops
from ..backends import NAMES

__all__ = ["patch_vssm", "scan_to_spatial", "selective_scan_fn"]

# VMamba's backend names (its own CUDA extensions and its PyTorch loop).
VMAMBA_BACKENDS = ("oflex", "core", "mamba", "torch")
_noted: set[str] = set()


def _backend(name: str | None) -> str | None:
    """Our backend for a backend argument: ours pass through, VMamba's are ignored (noted once
    per name), anything else is refused."""
    if name is None or name in NAMES:
        return name
    if name in VMAMBA_BACKENDS:
        if name not in _noted:
            _noted.add(name)
            warnings.warn(
                f"zeromamba.compat.vmamba: VMamba backend {name!r} ignored; zeromamba runs its "
                f"own kernels (the fastest available, or $ZEROMAMBA_BACKEND). Pass one of "
                f"{NAMES} to force one. (Noted once per name.)",
                stacklevel=3,
            )
        return None
    raise ValueError(
        f"backend must be None, one of VMamba's {VMAMBA_BACKENDS} or one of zeromamba's "
        f"{NAMES}, got {name!r}"
    )


def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    oflex: bool = True,
    backend: str | None = None,
) -> Tensor:
    """VMamba's selective scan (csms6s.selective_scan_fn) on ``zeromamba.ops.selective_scan``.

    Args:
        u, delta: (b, d, L); VMamba passes its n_dir = 4 directions' channels, d = 4C.
        A: (d, N) float32; B, C: (b, G, N, L) B/C groups (VMamba: one per direction, G = 4)
            or (b, N, L): one group;
        D, delta_bias: optional (d,) float32.
        delta_softplus: default True, as VMamba (``zeromamba.ops.selective_scan``: False).
        oflex: float32 output for float16/bfloat16 inputs (VMamba's "output flexible").
        backend: VMamba's names ("oflex", "core", "mamba", "torch") are ignored with a one-time
            note; zeromamba's ("reference", "cpu", "triton", "cuda") force that backend.
    Returns:
        y: (b, d, L).
    """
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    return ops.selective_scan(
        u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32=oflex,
        backend=_backend(backend),
    )  # fmt: skip


def scan_to_spatial(ts: Tensor, H: int, W: int) -> Tensor:
    """(b, 4, X, H*W) in the four scan orders -> (b, 4, X, H, W) in spatial order.

    Direction k's step t visits position k=0: h*W + w; k=1: w*H + h; k=2, k=3: those reversed.
    This puts every step's value back at its position, the layout ``ss2d_scan`` reads.
    """
    b, n_dir, X, L = ts.shape
    if n_dir != 4 or L != H * W:
        raise ValueError(
            f"scan_to_spatial: ts must be (b, 4, X, H*W) with H*W = {H * W}, got {tuple(ts.shape)}"
        )
    row = ts[:, 0::2]  # k = 0, 2
    col = ts[:, 1::2]  # k = 1, 3
    row = torch.stack([row[:, 0], row[:, 1].flip(-1)], 1).view(b, 2, X, H, W)
    col = torch.stack([col[:, 0], col[:, 1].flip(-1)], 1).view(b, 2, X, W, H).transpose(-1, -2)
    return torch.stack([row[:, 0], col[:, 0], row[:, 1], col[:, 1]], 1)


# --------------------------------------------------------------------------- official SS2D


def _official_core_kwargs(name: str, m: nn.Module) -> dict:
    """The keyword arguments bound into an official SS2D's ``forward_core`` (a partial of
    ``forward_corev2``), after checking that the module has a fused equivalent."""
    core = m.forward_core
    kw = dict(getattr(core, "keywords", {}) or {})
    func = getattr(core, "func", core)
    if getattr(func, "__name__", "") != "forward_corev2":
        raise ValueError(
            f"patch_vssm: {name}.forward_core is {getattr(func, '__name__', func)!r}; only "
            f"VMamba's forward_corev2 (forward types v01..v05, v2, v3) has a fused equivalent"
        )
    for key in ("CrossScan", "CrossMerge"):  # older VMamba: ablations bind other scans
        scan = getattr(kw.get(key), "__name__", key)
        if "_Ab_" in scan:
            raise ValueError(f"patch_vssm: {name} binds {key}={scan}, not the four-way scan")
    mode = kw.get("scan_mode", "cross2d")
    if mode not in ("cross2d", 0):
        raise ValueError(f"patch_vssm: {name} scans with scan_mode={mode!r}; the fused ss2d_scan "
                         f"is the four-way 'cross2d' scan")  # fmt: skip
    for attr in ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds", "out_norm"):
        if not hasattr(m, attr):
            raise ValueError(f"patch_vssm: {name} has no {attr!r}, which the fused core reads")
    if m.x_proj_weight.shape[0] != 4 or getattr(m, "k_group", 4) != 4:
        raise ValueError(f"patch_vssm: {name} has {m.x_proj_weight.shape[0]} scan directions; "
                         f"ss2d_scan fuses 4")  # fmt: skip
    return kw


def _fused_core(
    m: nn.Module,
    backend: str | None,
    x: Tensor,
    force_fp32: bool = False,
    ssoflex: bool = True,
    no_einsum: bool = False,
    selective_scan_backend: str | None = None,
    scan_mode: str | int = "cross2d",
    scan_force_torch: bool = False,
    **kwargs,
) -> Tensor:
    """VMamba's forward_corev2 (cross2d) with the scan fused: x (b, D, H, W) after the depthwise
    conv and activation -> out_norm(y), (b, D, H, W) if m.channel_first else (b, H, W, D), in x's
    dtype. The per-direction projections are pointwise, so they are computed once from x in
    spatial order (the layout ss2d_scan reads) instead of from four scan-ordered copies."""
    b, d, H, W = x.shape
    n_dir, N, R = 4, m.A_logs.shape[1], m.dt_projs_weight.shape[2]
    force_fp32 = force_fp32 or ((not ssoflex) and m.training)
    x_dbl = torch.einsum("bdl,kcd->bkcl", x.reshape(b, d, H * W), m.x_proj_weight)
    bias = getattr(m, "x_proj_bias", None)
    if bias is not None:
        x_dbl = x_dbl + bias.view(1, n_dir, -1, 1)
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, m.dt_projs_weight)
    xs = x.float() if force_fp32 else x
    y = ops.ss2d_scan(
        xs,
        dts.to(xs.dtype).reshape(b, n_dir, d, H, W),
        -torch.exp(m.A_logs.float()),
        Bs.to(xs.dtype).reshape(b, n_dir, N, H, W),
        Cs.to(xs.dtype).reshape(b, n_dir, N, H, W),
        m.Ds.float(),
        m.dt_projs_bias.reshape(-1).float(),
        True,
        out_float32=ssoflex,
        backend=backend,
    )
    if getattr(m, "channel_first", False):
        return m.out_norm(y).to(x.dtype)
    if getattr(m, "out_norm_shape", None) == "v1":  # older VMamba: norm on (b, D, H, W) first
        return m.out_norm(y).permute(0, 2, 3, 1).to(x.dtype)
    return m.out_norm(y.permute(0, 2, 3, 1).contiguous()).to(x.dtype)


class _PatchedCore:
    """m.forward_core after patching: the fused core with the original's bound keywords, which
    checks itself against the original with ZEROMAMBA_CHECK_LAYOUT=1. A class, not a closure,
    so that a patched model still pickles and deep-copies."""

    zeromamba_fused = True  # marks a patched module (patch_vssm is idempotent)

    def __init__(self, name: str, m: nn.Module, original: Callable, kw: dict, backend):
        self.name, self.module, self.original, self.kw, self.backend = (
            name, m, original, kw, backend,
        )  # fmt: skip

    def fused(self, x: Tensor, **overrides) -> Tensor:
        return _fused_core(self.module, self.backend, x, **{**self.kw, **overrides})

    def __call__(self, x: Tensor, **overrides) -> Tensor:
        if not overrides:
            layout_check.check_once(
                self.module, x, self.fused, self.original, f"patched SS2D {self.name}"
            )
        return self.fused(x, **overrides)


# --------------------------------------------------------------------------- patch_vssm


def _is_ours(m: nn.Module) -> bool:
    from ..models.vmamba import SS2D

    return isinstance(m, SS2D)


def _is_official(m: nn.Module) -> bool:
    return hasattr(m, "forward_core") and hasattr(m, "A_logs") and hasattr(m, "x_proj_weight")


def _trainable(m: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in m.named_parameters() if p.requires_grad}


def _probe(shape: tuple[int, ...], like: Tensor) -> Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(like)


def _patch_ours(name, m, backend, verify, hw):
    saved = (m.pipeline, m.backend)

    def restore():
        m.pipeline, m.backend = saved

    m.pipeline = "fused"
    if backend is not None:
        m.backend = backend
    if verify:
        x = _probe((2, m.in_proj.in_features, *hw), m.A_logs)
        try:
            layout_check.compare_paths(
                m._forward_with("fused"), m._forward_with("unfused"), (x,), _trainable(m),
                what=f"fused SS2D {name}",
            )  # fmt: skip
        except BaseException:
            restore()
            raise
    return restore


def _patch_official(name, m, backend, verify, hw):
    original = m.forward_core
    if getattr(original, "zeromamba_fused", False):
        return lambda: None  # patched before
    kw = _official_core_kwargs(name, m)

    def restore():
        m.forward_core = original

    m.forward_core = _PatchedCore(name, m, original, kw, backend)
    if verify:
        x = _probe((2, m.x_proj_weight.shape[2], *hw), m.A_logs)
        try:
            try:
                original(x[:1, :, :1, :1])
            except Exception as e:
                raise RuntimeError(
                    f"patch_vssm: the original core of {name} cannot run here to verify the "
                    f"patch ({type(e).__name__}: {e}). On a machine without VMamba's CUDA "
                    f"extensions, first route its scan through zeromamba: "
                    f"`models.vmamba.selective_scan_fn = zeromamba.compat.vmamba."
                    f"selective_scan_fn` (or pass verify=False)"
                ) from e
            layout_check.compare_paths(
                m.forward_core.fused, original, (x,), _trainable(m), what=f"patched SS2D {name}",
            )  # fmt: skip
        except BaseException:
            restore()
            raise
    return restore


def patch_vssm(
    model: nn.Module,
    *,
    backend: str | None = None,
    verify: bool = True,
    probe_hw: tuple[int, int] = (3, 5),
) -> list[str]:
    """Switch every SS2D module of ``model`` to the fused ``ss2d_scan`` path, in place.

    Official VMamba SS2D modules (``forward_core`` = ``forward_corev2`` with scan_mode
    "cross2d") get a fused core that reads the same parameters (the state dict is unchanged);
    ``zeromamba.models`` SS2D modules get ``pipeline = "fused"``. With ``verify`` (default),
    each module runs a probe input (b=2, H x W = ``probe_hw``, odd and non-square so that a
    transposed or reversed layout cannot pass) through the fused and the original flow and
    compares outputs and the gradients of the input and of every parameter; if any differs
    beyond rounding, every module patched so far is restored and the error (LayoutMismatch, a
    RuntimeError) raised.

    Args:
        model: a VMamba ``VSSM`` (official or ``zeromamba.models``) or anything containing SS2Ds.
        backend: zeromamba backend for the fused scans (None: the fastest available).
        verify: run the probe comparison (a few ms per module on CPU).
        probe_hw: the probe's spatial size.
    Returns:
        The qualified names of the patched modules.
    """
    targets = [(n, m) for n, m in model.named_modules() if _is_ours(m) or _is_official(m)]
    if not targets:
        raise ValueError(
            f"patch_vssm: no SS2D module in {type(model).__name__} (looked for VMamba's SS2D, "
            f"with forward_core, A_logs and x_proj_weight, and zeromamba.models.SS2D)"
        )
    undo = []
    try:
        for name, m in targets:
            patch = _patch_ours if _is_ours(m) else _patch_official
            undo.append(patch(name or type(m).__name__, m, backend, verify, probe_hw))
    except BaseException:
        for restore in reversed(undo):
            restore()
        raise
    return [n for n, _ in targets]
