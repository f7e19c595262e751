"""The fp32 transcendentals of the CPU scan kernels (csrc/cpu/common.h: polynomial exp and log1p,
softplus and its derivative) against fp64 libm, over their whole input ranges.

They are reached through ``selective_scan`` itself, on inputs that make one output element equal
to one function value: with u = B = C = 1 and no D, the first step gives y = dt (softplus of
delta when delta_softplus), and d y / d delta = sigmoid(delta); with dt = 1 at step 0 and u = 0
at step 1, the second step gives y = exp(dt_1 A). Each channel carries one argument."""

import pytest
import torch

import zeromamba
from zeromamba import ops

pytestmark = pytest.mark.skipif(
    not zeromamba.available_backends()["cpu"].available, reason="CPU kernels not built"
)

# Bounds stated in csrc/cpu/common.h (a few ulp of fp32: 2^-23 = 1.2e-7).
EXP_REL = 2.4e-7
SOFTPLUS_REL = 3e-7
SIGMOID_REL = 2.4e-7


def _rel(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return (got.double() - want).abs() / want.abs()


def _first_step(x: torch.Tensor, softplus: bool):
    """y[c] = dt(x[c]) for L = 1, u = B = C = 1; returns y and d y / d delta."""
    d = x.numel()
    delta = x.float().view(1, d, 1).requires_grad_()
    ones = torch.ones(1, 1, 1, 1)
    y = ops.selective_scan(
        torch.ones(1, d, 1),
        delta,
        -torch.ones(d, 1),
        ones,
        ones,
        delta_softplus=softplus,
        backend="cpu",
    )
    (g,) = torch.autograd.grad(y.sum(), delta)
    return y.detach().view(-1), g.view(-1)


def test_softplus_and_sigmoid_match_libm():
    """Dense over [-30, 30] (both branches, the threshold 20 of torch's softplus) and far tails."""
    x = torch.cat([torch.linspace(-30, 30, 6001), torch.tensor([-80.0, -50.0, 0.0, 20.0, 45.0])])
    x = x.float()
    y, sig = _first_step(x, softplus=True)
    xd = x.double()
    want = torch.where(xd > 20, xd, torch.nn.functional.softplus(xd, threshold=1e9))
    assert _rel(y, want).max() <= SOFTPLUS_REL
    want_sig = torch.where(xd > 20, torch.ones_like(xd), torch.sigmoid(xd))
    assert _rel(sig, want_sig).max() <= SIGMOID_REL


def test_exp_matches_libm():
    """exp(z) for z over the whole finite range of fp32 results, negative (the decays) and positive
    (dt * A > 0 without softplus), and gradual underflow below -87.3."""
    z = torch.cat([torch.linspace(-87.3, 88.7, 8001), torch.tensor([-1e-6, 0.0, 1e-6])]).float()
    d = z.numel()
    sign = torch.where(z > 0, -1.0, 1.0)  # dt_1 = sign, A = sign * z, so dt_1 A = z exactly
    delta = torch.stack([torch.ones(d), sign], dim=-1).view(1, d, 2)
    u = torch.tensor([1.0, 0.0]).expand(1, d, 2).contiguous()
    ones = torch.ones(1, 1, 1, 2)
    A = (sign * z).view(d, 1)
    y = ops.selective_scan(u, delta, A, ones, ones, backend="cpu")[0, :, 1]
    assert _rel(y, torch.exp(z.double())).max() <= EXP_REL

    tails = torch.tensor([-103.0, -100.0, -95.0, -90.0])
    d = tails.numel()
    delta = torch.ones(1, d, 2)
    u = torch.tensor([1.0, 0.0]).expand(1, d, 2).contiguous()
    y = ops.selective_scan(u, delta, tails.view(d, 1), ones, ones, backend="cpu")[0, :, 1]
    want = torch.exp(tails.double())
    # Subnormal results: within a few units of the smallest subnormal (2^-149 = 1.4e-45).
    assert ((y.double() - want).abs() <= 4 * 2.0**-149 + 1e-6 * want).all()
    assert (y > 0).all()  # gradual underflow, not a flush to zero


def test_nan_propagates():
    x = torch.tensor([float("nan"), 1.0])
    y, sig = _first_step(x, softplus=True)
    assert torch.isnan(y[0]) and torch.isnan(sig[0]) and y[1].isfinite()
