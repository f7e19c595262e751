"""A stand-in for official VMamba v2 SS2D modules, for testing patch_vssm without VMamba's code.

It has the official attribute names and structure: ``forward`` = in_proj -> depthwise conv ->
act -> ``self.forward_core`` -> out_proj, with ``forward_core`` a ``functools.partial`` of a
method named ``forward_corev2`` taking VMamba's keywords (force_fp32, ssoflex, no_einsum,
selective_scan_backend, scan_mode), which runs VMamba's unfused flow: projections of the four
scan-ordered copies of x, a 1D selective scan over 4 d_inner sequences through
``selective_scan_fn(u, delta, A, B, C, D, delta_bias, softplus, oflex, backend=...)``, the
merge, and out_norm (channel-first LayerNorm2d or channel-last LayerNorm). Written for these
tests from VMamba's documented data flow.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from zeromamba import ops
from zeromamba.compat.vmamba import selective_scan_fn
from zeromamba.models import LayerNorm2d, Linear2d


class StandinSS2D(nn.Module):
    def __init__(self, d_model, d_state=1, ssm_ratio=2.0, channel_first=True, **core_kwargs):
        super().__init__()
        self.k_group = 4
        self.d_model, self.d_state = d_model, d_state
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.dt_rank = R = math.ceil(d_model / 16)
        self.channel_first = channel_first
        Linear = Linear2d if channel_first else nn.Linear
        self.in_proj = Linear(d_model, d_inner, bias=False)  # "_noz": no z half
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=True)
        g = torch.Generator().manual_seed(d_model)
        self.x_proj_weight = nn.Parameter(torch.randn(4, R + 2 * d_state, d_inner, generator=g)
                                          * d_inner**-0.5)  # fmt: skip
        self.dt_projs_weight = nn.Parameter(torch.randn(4, d_inner, R, generator=g) * R**-0.5)
        self.dt_projs_bias = nn.Parameter(torch.randn(4, d_inner, generator=g) * 0.5 - 3.0)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(4 * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(A) + 0.3 * torch.randn(A.shape, generator=g))
        self.Ds = nn.Parameter(
            torch.ones(4 * d_inner) + 0.1 * torch.randn(4 * d_inner, generator=g)
        )
        self.out_norm = LayerNorm2d(d_inner) if channel_first else nn.LayerNorm(d_inner)
        self.out_proj = Linear(d_inner, d_model, bias=False)
        kw = {"force_fp32": False, "no_einsum": True, **core_kwargs}
        self.forward_core = functools.partial(self.forward_corev2, **kw)

    def forward_corev2(
        self,
        x,
        force_fp32=False,
        ssoflex=True,
        no_einsum=False,
        selective_scan_backend=None,
        scan_mode="cross2d",
        scan_force_torch=False,
        **kwargs,
    ):
        assert scan_mode == "cross2d", "the stand-in implements the four-way scan only"
        b, d, H, W = x.shape
        n_dir, N, R, L = 4, self.d_state, self.dt_rank, H * W
        force_fp32 = force_fp32 or ((not ssoflex) and self.training)
        xs = ops.cross_scan(x)  # (b, 4, d, L), the four scan orders
        if no_einsum:  # grouped 1x1 convolutions, one conv group per direction
            x_dbl = F.conv1d(
                xs.reshape(b, -1, L), self.x_proj_weight.reshape(-1, d, 1), groups=n_dir
            )
            dts, Bs, Cs = torch.split(x_dbl.view(b, n_dir, -1, L), [R, N, N], dim=2)
            dts = F.conv1d(dts.reshape(b, -1, L), self.dt_projs_weight.reshape(n_dir * d, -1, 1),
                           groups=n_dir)  # fmt: skip
        else:
            x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
            dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
            dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        us, dts = xs.reshape(b, -1, L), dts.reshape(b, -1, L)
        Bs, Cs = Bs.reshape(b, n_dir, N, L), Cs.reshape(b, n_dir, N, L)
        if force_fp32:
            us, dts, Bs, Cs = (t.float() for t in (us, dts, Bs, Cs))
        ys = selective_scan_fn(
            us, dts, -torch.exp(self.A_logs.float()), Bs, Cs, self.Ds.float(),
            self.dt_projs_bias.reshape(-1).float(), True, ssoflex,
            backend=selective_scan_backend,
        )  # fmt: skip
        y = ops.cross_merge(ys.view(b, n_dir, d, L), H, W)
        if not self.channel_first:
            y = y.permute(0, 2, 3, 1)
        return self.out_norm(y).to(x.dtype)

    def forward(self, x):
        x = self.in_proj(x)
        if not self.channel_first:
            x = x.permute(0, 3, 1, 2)
        x = self.act(self.conv2d(x))
        return self.out_proj(self.forward_core(x))


class StandinVSSM(nn.Module):
    """Two stages of residual SS2D blocks with a downsample: enough structure for patch_vssm."""

    def __init__(self, dims=(8, 16), channel_first=True, **ss2d_kwargs):
        super().__init__()
        self.channel_first = channel_first
        self.stem = nn.Conv2d(3, dims[0], 2, stride=2)
        self.blocks1 = nn.ModuleList(
            [StandinSS2D(dims[0], channel_first=channel_first, **ss2d_kwargs) for _ in range(2)]
        )
        self.down = nn.Conv2d(dims[0], dims[1], 2, stride=2)
        self.blocks2 = nn.ModuleList([StandinSS2D(dims[1], channel_first=channel_first,
                                                  **ss2d_kwargs)])  # fmt: skip
        self.head = nn.Linear(dims[1], 5)

    def _stage(self, x, blocks):
        if not self.channel_first:
            x = x.permute(0, 2, 3, 1)
        for blk in blocks:
            x = x + blk(x)
        return x if self.channel_first else x.permute(0, 3, 1, 2)

    def forward(self, images):
        x = self._stage(self.stem(images), self.blocks1)
        x = self._stage(self.down(x), self.blocks2)
        return self.head(x.mean((2, 3)))
