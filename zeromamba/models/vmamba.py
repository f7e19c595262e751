"""VMamba v2 backbone (``VSSM``) on the zeromamba ops, docs/design.md §7.1.

Architecture and parameter names follow VMamba's ``vmambav2*_224`` models (forward type
``v05_noz``, patch-embed v2, downsample v3, channel-first LayerNorm2d), so an official ImageNet
checkpoint loads with ``load_state_dict(..., strict=True)``. Every module works on channel-first
maps (b, C, H, W).

The SS2D core computes the pointwise projections once, in spatial order, and hands them to the
fused four-way scan ``zeromamba.ops.ss2d_scan``. The ``"unfused"`` pipeline runs the same
parameters through VMamba's original data flow (``cross_scan`` -> projections on the four
laid-out copies -> ``selective_scan`` -> ``cross_merge``); it is the baseline of the benchmarks and
gives the same output.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .. import layout_check, ops

PIPELINES = ("fused", "unfused")

# VMamba's vmambav2v_tiny_224, vmambav2_small_224, vmambav2_base_224, and a small CPU config.
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"dims": 96, "depths": (2, 2, 8, 2), "ssm_ratio": 1.0, "drop_path_rate": 0.2},
    "small": {"dims": 96, "depths": (2, 2, 15, 2), "ssm_ratio": 2.0, "drop_path_rate": 0.3},
    "base": {"dims": 128, "depths": (2, 2, 15, 2), "ssm_ratio": 2.0, "drop_path_rate": 0.6},
    # not a VMamba model: a few thousand parameters per block, for CPU tests on 32-64 px images
    "nano": {"dims": 32, "depths": (1, 1, 2, 1), "ssm_ratio": 1.0, "drop_path_rate": 0.0},
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a channel-first map (b, C, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps
        )
        return x.permute(0, 3, 1, 2)


class Linear2d(nn.Linear):
    """A Linear over the channels of (b, C, H, W), as a 1x1 convolution; weight (out, in) like
    nn.Linear, so checkpoints of channel-last VMamba models load too."""

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        # the mask scaled first (timm's order): one pass over x instead of two
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _dt_params(
    dt_rank: int, d_inner: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4
) -> tuple[Tensor, Tensor]:
    """Mamba's dt projection init for one direction: weight (d_inner, dt_rank) uniform in
    +-dt_rank^-0.5 (keeps the variance of delta), bias = softplus^-1(dt) with dt log-uniform in
    [dt_min, dt_max], so the initial time steps span two decades."""
    bound = dt_rank**-0.5
    weight = torch.empty(d_inner, dt_rank).uniform_(-bound, bound)
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
    return weight, bias


class SS2D(nn.Module):
    """VMamba's 2D selective scan, forward type ``v05_noz`` (no z gate), channel-first.

    in_proj (1x1) -> depthwise conv -> SiLU -> per-direction projections -> four-way scan ->
    out_norm (LayerNorm2d) -> out_proj (1x1).

    Parameters (VMamba's names): ``x_proj_weight`` (4, R + 2N, d_inner), ``dt_projs_weight``
    (4, d_inner, R), ``dt_projs_bias`` (4, d_inner), ``A_logs`` (4 d_inner, N), ``Ds`` (4 d_inner,);
    A = -exp(A_logs). Direction k owns rows k*d_inner .. (k+1)*d_inner - 1 of A_logs and Ds.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = False,
        pipeline: str = "fused",
        backend: str | None = None,
    ):
        super().__init__()
        d_inner = int(ssm_ratio * d_model)
        dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.pipeline = _check_pipeline(pipeline)
        self.backend = backend

        self.in_proj = Linear2d(d_model, d_inner, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(
            d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias
        )
        # nn.Linear's default init per direction: uniform in +-1/sqrt(d_inner)
        bound = d_inner**-0.5
        self.x_proj_weight = nn.Parameter(
            torch.empty(4, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound)
        )
        dts = [_dt_params(dt_rank, d_inner) for _ in range(4)]
        self.dt_projs_weight = nn.Parameter(torch.stack([w for w, _ in dts]))
        self.dt_projs_bias = nn.Parameter(torch.stack([b for _, b in dts]))
        # S4D-real init: A[c, n] = -(n + 1)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(4 * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(A))
        self.Ds = nn.Parameter(torch.ones(4 * d_inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = LayerNorm2d(d_inner)
        self.out_proj = Linear2d(d_inner, d_model, bias=False)

    def extra_repr(self) -> str:
        return (
            f"d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, "
            f"pipeline={self.pipeline!r}, backend={self.backend!r}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """(b, d_model, H, W) -> (b, d_model, H, W)."""
        if self.pipeline == "fused" and layout_check.enabled():
            layout_check.check_once(
                self, x, self._forward_with("fused"), self._forward_with("unfused"), "SS2D"
            )
        x = self.act(self.conv2d(self.in_proj(x)))  # (b, d_inner, H, W)
        scan = self._scan_fused if self.pipeline == "fused" else self._scan_unfused
        y = self.out_norm(scan(x)).to(x.dtype)
        return self.out_proj(y)

    def _forward_with(self, pipeline: str):
        """forward run through ``pipeline`` whatever self.pipeline is (for layout checks)."""

        def run(x: Tensor) -> Tensor:
            saved, self.pipeline = self.pipeline, pipeline
            try:
                return self.forward(x)
            finally:
                self.pipeline = saved

        return run

    def _ssm_params(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """A, D, delta_bias in float32 (float64 for float64 activations), as the ops want."""
        pdtype = torch.float64 if dtype == torch.float64 else torch.float32
        A = -torch.exp(self.A_logs.to(pdtype))
        return A, self.Ds.to(pdtype), self.dt_projs_bias.to(pdtype).flatten()

    def _dt_B_C(self, x_dbl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Split the x projection (b, 4, R + 2N, L) into delta (b, 4, d_inner, L) (through the
        per-direction dt projection) and B, C (b, 4, N, L). The batched matmul gives a
        contiguous delta, whose gradient layout then agrees with every backend's."""
        R, N = self.dt_rank, self.d_state
        dt_low, B, C = torch.split(x_dbl, [R, N, N], dim=2)
        return torch.matmul(self.dt_projs_weight, dt_low), B, C

    def _scan_fused(self, x: Tensor) -> Tensor:
        """The projections are pointwise, so they commute with the scan orders: computed once in
        spatial order (one matmul with the four directions' weights stacked), they feed
        ss2d_scan directly. Returns float32 (b, d_inner, H, W)."""
        b, d, H, W = x.shape
        x_dbl = torch.matmul(self.x_proj_weight.flatten(0, 1), x.view(b, d, H * W))
        delta, B, C = self._dt_B_C(x_dbl.view(b, 4, -1, H * W))
        dtype = x.dtype
        A, D, delta_bias = self._ssm_params(dtype)
        return ops.ss2d_scan(
            x,
            delta.to(dtype).view(b, 4, d, H, W),
            A,
            B.to(dtype).unflatten(3, (H, W)),
            C.to(dtype).unflatten(3, (H, W)),
            D,
            delta_bias,
            True,
            out_float32=True,
            backend=self.backend,
        )

    def _scan_unfused(self, x: Tensor) -> Tensor:
        """VMamba's original data flow: four laid-out copies of x, projections on each, a 1D
        selective scan over the 4 d_inner sequences, then the merge."""
        b, d, H, W = x.shape
        xs = ops.cross_scan(x)  # (b, 4, d, L)
        delta, B, C = self._dt_B_C(torch.matmul(self.x_proj_weight, xs))
        dtype = x.dtype
        A, D, delta_bias = self._ssm_params(dtype)
        ys = ops.selective_scan(
            xs.reshape(b, 4 * d, H * W),
            delta.to(dtype).reshape(b, 4 * d, H * W),
            A,
            B.to(dtype).contiguous(),
            C.to(dtype).contiguous(),
            D,
            delta_bias,
            True,
            out_float32=True,
            backend=self.backend,
        )
        return ops.cross_merge(ys.view(b, 4, d, H * W), H, W)


class Mlp(nn.Module):
    """1x1 conv MLP: fc1 -> GELU -> fc2 on (b, C, H, W)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """Pre-norm residual block: x + SS2D(norm(x)), then x + MLP(norm2(x)), with drop-path."""

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        mlp_ratio: float = 4.0,
        use_checkpoint: bool = False,
        **ssm: Any,
    ):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, **ssm)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor) -> Tensor:
        """(b, dim, H, W) -> (b, dim, H, W)."""
        if self.use_checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


def _patch_embed(in_chans: int, dim: int, patch_size: int) -> nn.Sequential:
    """Patch-embed v2: two stride-(patch/2) 3x3 convs with LayerNorm2d and GELU between.
    The identities hold the indices of VMamba's channel-last permutes, so the parameter names
    (patch_embed.0/2/5/7) match its checkpoints."""
    stride = patch_size // 2
    return nn.Sequential(
        nn.Conv2d(in_chans, dim // 2, stride + 1, stride=stride, padding=1),
        nn.Identity(),
        LayerNorm2d(dim // 2),
        nn.Identity(),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, stride + 1, stride=stride, padding=1),
        nn.Identity(),
        LayerNorm2d(dim),
    )


def _downsample(dim: int, out_dim: int) -> nn.Sequential:
    """Downsample v3: 3x3 stride-2 conv, then LayerNorm2d (names downsample.1 / downsample.3)."""
    return nn.Sequential(
        nn.Identity(),
        nn.Conv2d(dim, out_dim, 3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(out_dim),
    )


class VSSM(nn.Module):
    """VMamba v2 image model.

    ``forward(images (b, in_chans, H, W)) -> (x_pre (b, dims[-1], H/32, W/32), logits (b,
    num_classes))``: x_pre is the last stage's map before the classifier norm (ZeroMamba's
    region features), logits the ImageNet head's output.

    Args:
        dims: channels per stage, or the first stage's (doubled at each stage).
        depths: blocks per stage.
        d_state, ssm_ratio, dt_rank: SS2D sizes (d_inner = ssm_ratio * dim,
            dt_rank "auto" = ceil(dim / 16)).
        drop_path_rate: stochastic depth, linear from 0 to this over all blocks.
        use_checkpoint: gradient checkpointing per block.
        pipeline: "fused" (ss2d_scan) or "unfused" (cross_scan + selective_scan + cross_merge).
        backend: kernel backend of the ops (None: $ZEROMAMBA_BACKEND or the fastest).
    """

    def __init__(
        self,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 15, 2),
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = False,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.3,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        use_checkpoint: bool = False,
        pipeline: str = "fused",
        backend: str | None = None,
    ):
        super().__init__()
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(len(depths))]
        self.dims = list(dims)
        self.num_features = self.dims[-1]
        self.num_classes = num_classes
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()

        self.patch_embed = _patch_embed(in_chans, self.dims[0], patch_size)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            blocks = nn.Sequential(
                *[
                    VSSBlock(
                        self.dims[i],
                        drop_path=dpr[start + j],
                        mlp_ratio=mlp_ratio,
                        use_checkpoint=use_checkpoint,
                        d_state=d_state,
                        ssm_ratio=ssm_ratio,
                        dt_rank=dt_rank,
                        d_conv=d_conv,
                        conv_bias=conv_bias,
                        pipeline=pipeline,
                        backend=backend,
                    )
                    for j in range(depth)
                ]
            )
            last = i == len(depths) - 1
            down = nn.Identity() if last else _downsample(self.dims[i], self.dims[i + 1])
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=down)))
        self.classifier = nn.Sequential(
            OrderedDict(
                norm=LayerNorm2d(self.num_features),
                permute=nn.Identity(),  # VMamba's channel-last permute; keeps the names
                avgpool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                head=nn.Linear(self.num_features, num_classes),
            )
        )
        self.apply(_init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        """(b, in_chans, H, W) -> last-stage map (b, dims[-1], H/32, W/32)."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(b, in_chans, H, W) -> (x_pre (b, dims[-1], h, w), logits (b, num_classes))."""
        x_pre = self.forward_features(x)
        return x_pre, self.classifier(x_pre)

    def ss2d_modules(self) -> list[SS2D]:
        return [m for m in self.modules() if isinstance(m, SS2D)]

    def set_pipeline(self, pipeline: str) -> None:
        """Run every SS2D through "fused" (ss2d_scan) or "unfused" (VMamba's original flow)."""
        _check_pipeline(pipeline)
        for m in self.ss2d_modules():
            m.pipeline = pipeline

    def set_backend(self, backend: str | None) -> None:
        """Kernel backend of every SS2D (None: $ZEROMAMBA_BACKEND or the fastest available)."""
        for m in self.ss2d_modules():
            m.backend = backend

    def set_checkpointing(self, enabled: bool) -> None:
        """Gradient checkpointing per block (torch.utils.checkpoint, non-reentrant)."""
        for m in self.modules():
            if isinstance(m, VSSBlock):
                m.use_checkpoint = enabled

    def no_weight_decay(self) -> set[str]:
        """Names of parameters VMamba excludes from weight decay (A_logs, Ds)."""
        return {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}


def _init_weights(m: nn.Module) -> None:
    """VMamba's init: Linear (and Linear2d) weights truncated normal std 0.02, biases 0;
    LayerNorms 1/0; convolutions and the SS2D parameters keep their own init."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _check_pipeline(pipeline: str) -> str:
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    return pipeline


def vssm(name: str, **overrides: Any) -> VSSM:
    """Build a VSSM by config name ("tiny", "small", "base" = VMamba's vmambav2v_tiny_224,
    vmambav2_small_224, vmambav2_base_224; "nano" for CPU tests), any VSSM argument overridden,
    e.g. ``vssm("small", num_classes=200, use_checkpoint=True)``."""
    if name not in CONFIGS:
        raise ValueError(f"unknown VSSM config {name!r}; choose from {sorted(CONFIGS)}")
    return VSSM(**{**CONFIGS[name], **overrides})
