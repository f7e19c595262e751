"""VMamba v2 backbone (``VSSM``) on the zeromamba ops, DESIGN §3.

Architecture and parameter names follow VMamba's ``vmambav2*_224`` models (forward type
``v05_noz``, patch-embed v2, downsample v3, channel-first LayerNorm2d), so an official ImageNet
checkpoint loads with ``load_state_dict(..., strict=True)``. Inside the backbone every map is
channel-last (b, H, W, C), end to end: LayerNorms and the pointwise projections (Linear) then
act on contiguous rows with no permute copies, the depthwise and strided convolutions take the
same memory as a channels_last (b, C, H, W) view, and the scan runs in its channel_last layout.
The backbone's input images and its output map x_pre are channel-first (b, C, H, W) (x_pre is a
view of the channel-last map).

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
import torch.utils.checkpoint
from torch import Tensor, nn

from .. import ops

PIPELINES = ("fused", "unfused")

# VMamba's vmambav2v_tiny_224, vmambav2_small_224, vmambav2_base_224, and a small CPU config.
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"dims": 96, "depths": (2, 2, 8, 2), "ssm_ratio": 1.0, "drop_path_rate": 0.2},
    "small": {"dims": 96, "depths": (2, 2, 15, 2), "ssm_ratio": 2.0, "drop_path_rate": 0.3},
    "base": {"dims": 128, "depths": (2, 2, 15, 2), "ssm_ratio": 2.0, "drop_path_rate": 0.6},
    # not a VMamba model: a few thousand parameters per block, for CPU tests on 32-64 px images
    "nano": {"dims": 32, "depths": (1, 1, 2, 1), "ssm_ratio": 1.0, "drop_path_rate": 0.0},
}


TO_LAST = (0, 2, 3, 1)  # (b, C, H, W) -> (b, H, W, C)
TO_FIRST = (0, 3, 1, 2)  # (b, H, W, C) -> (b, C, H, W)


class Permute(nn.Module):
    """A permutation of the dimensions, as a module (a view: no copy). VMamba's channel-last
    models hold their layout switches at these places of their Sequentials."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

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
    """VMamba's 2D selective scan, forward type ``v05_noz`` (no z gate), on channel-last maps.

    in_proj (Linear) -> depthwise conv -> SiLU -> per-direction projections -> four-way scan ->
    out_norm (LayerNorm) -> out_proj (Linear).

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

        self.in_proj = nn.Linear(d_model, d_inner, bias=False)
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
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def extra_repr(self) -> str:
        return (
            f"d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, "
            f"pipeline={self.pipeline!r}, backend={self.backend!r}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """(b, H, W, d_model) -> (b, H, W, d_model)."""
        # The convolution reads the channel-last rows as a channels_last (b, d, H, W) map and
        # writes one; permuting back is again a view.
        x = self.conv2d(self.in_proj(x).permute(TO_FIRST))
        x = self.act(x).permute(TO_LAST)  # (b, H, W, d_inner)
        scan = self._scan_fused if self.pipeline == "fused" else self._scan_unfused
        y = self.out_norm(scan(x)).to(x.dtype)
        return self.out_proj(y)

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
        spatial order (one matmul over the channel-last rows with the four directions' weights
        stacked, then one batched matmul per direction for delta), they feed ss2d_scan in its
        channel_last layout. (b, H, W, d_inner) -> float32 (b, H, W, d_inner)."""
        b, H, W, d = x.shape
        R, N = self.dt_rank, self.d_state
        x_dbl = torch.matmul(x.reshape(b, H * W, d), self.x_proj_weight.flatten(0, 1).t())
        x_dbl = x_dbl.view(b, H, W, 4, R + 2 * N)
        dt_low, B, C = torch.split(x_dbl, [R, N, N], dim=4)
        # delta[b, k, h, w] = dt_projs_weight[k] @ dt_low[b, h, w, k]: a matmul batched over
        # (b, k) whose output is (b, 4, L, d_inner) contiguous, the scan's channel_last layout
        # (only the small (b, 4, L, R) operand is reordered).
        dt_rows = dt_low.permute(0, 3, 1, 2, 4).reshape(b, 4, H * W, R)
        delta = torch.matmul(dt_rows, self.dt_projs_weight.transpose(1, 2))
        delta = delta.view(b, 4, H, W, d)
        dtype = x.dtype
        A, D, delta_bias = self._ssm_params(dtype)
        return ops.ss2d_scan(
            x,
            delta.to(dtype),
            A,
            B.permute(0, 3, 1, 2, 4).to(dtype),
            C.permute(0, 3, 1, 2, 4).to(dtype),
            D,
            delta_bias,
            True,
            channel_last=True,
            out_float32=True,
            backend=self.backend,
        )

    def _scan_unfused(self, x: Tensor) -> Tensor:
        """VMamba's original data flow (channel-first): four laid-out copies of x, projections
        on each, a 1D selective scan over the 4 d_inner sequences, then the merge.
        (b, H, W, d_inner) -> float32 (b, H, W, d_inner)."""
        x = x.permute(TO_FIRST).contiguous()
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
        return ops.cross_merge(ys.view(b, 4, d, H * W), H, W).permute(TO_LAST)


class Mlp(nn.Module):
    """MLP over the channels of (b, H, W, C): fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

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
        self.norm = nn.LayerNorm(dim)
        self.op = SS2D(dim, **ssm)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor) -> Tensor:
        """(b, H, W, dim) -> (b, H, W, dim)."""
        if self.use_checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


def _patch_embed(in_chans: int, dim: int, patch_size: int) -> nn.Sequential:
    """Patch-embed v2: two stride-(patch/2) 3x3 convs with LayerNorm and GELU between;
    (b, in_chans, H, W) -> (b, H/patch, W/patch, dim). The permutes sit where VMamba's
    channel-last models have them, so the parameter names (patch_embed.0/2/5/7) match its
    checkpoints."""
    stride = patch_size // 2
    return nn.Sequential(
        nn.Conv2d(in_chans, dim // 2, stride + 1, stride=stride, padding=1),
        Permute(*TO_LAST),
        nn.LayerNorm(dim // 2),
        Permute(*TO_FIRST),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, stride + 1, stride=stride, padding=1),
        Permute(*TO_LAST),
        nn.LayerNorm(dim),
    )


def _downsample(dim: int, out_dim: int) -> nn.Sequential:
    """Downsample v3: 3x3 stride-2 conv, then LayerNorm (names downsample.1 / downsample.3),
    (b, H, W, dim) -> (b, H/2, W/2, out_dim)."""
    return nn.Sequential(
        Permute(*TO_FIRST),
        nn.Conv2d(dim, out_dim, 3, stride=2, padding=1),
        Permute(*TO_LAST),
        nn.LayerNorm(out_dim),
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
                norm=nn.LayerNorm(self.num_features),
                permute=Permute(*TO_FIRST),
                avgpool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                head=nn.Linear(self.num_features, num_classes),
            )
        )
        self.apply(_init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        """(b, in_chans, H, W) -> last-stage map (b, dims[-1], H/32, W/32), a channel-first view
        of the channel-last map the stages compute."""
        return self._features_last(x).permute(TO_FIRST)

    def _features_last(self, x: Tensor) -> Tensor:
        """(b, in_chans, H, W) -> (b, H/32, W/32, dims[-1])."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(b, in_chans, H, W) -> (x_pre (b, dims[-1], h, w), logits (b, num_classes))."""
        x_last = self._features_last(x)
        return x_last.permute(TO_FIRST), self.classifier(x_last)

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
    """VMamba's init: Linear weights truncated normal std 0.02, biases 0;
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
