"""The moving average of the weights that from-scratch runs evaluate (training/weight_average)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zeromamba.training.weight_average import WeightAverage


def _steps(seed: int, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 2, generator=g, dtype=torch.float64) for _ in range(n)]


def test_average_follows_the_warmed_up_recurrence():
    net = nn.Linear(2, 3, bias=False).double()
    avg = WeightAverage(net, horizon=4.0)
    expect = net.weight.detach().clone()
    for t, w in enumerate(_steps(0, 12), start=1):
        with torch.no_grad():
            net.weight.copy_(w)
        avg.update(net)
        d = min(0.75, (1 + t) / (10 + t))
        expect = d * expect + (1 - d) * w
        torch.testing.assert_close(avg.model.weight, expect, rtol=0, atol=1e-12)
    # the live weights are untouched and the average takes no gradient
    torch.testing.assert_close(net.weight.detach(), _steps(0, 12)[-1])
    assert not any(p.requires_grad for p in avg.model.parameters())


def test_average_state_round_trip_continues_identically():
    net = nn.Linear(2, 3, bias=False).double()
    a, ws = WeightAverage(net, 5.0), _steps(1, 8)
    for w in ws[:4]:
        with torch.no_grad():
            net.weight.copy_(w)
        a.update(net)
    b = WeightAverage(nn.Linear(2, 3, bias=False).double(), 5.0)
    b.load_state_dict(a.state_dict())
    for w in ws[4:]:
        with torch.no_grad():
            net.weight.copy_(w)
        a.update(net)
        b.update(net)
    assert a.steps == b.steps == 8
    torch.testing.assert_close(a.model.weight, b.model.weight, rtol=0, atol=0)


def test_horizon_below_one_step_is_refused():
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        WeightAverage(nn.Linear(2, 2), 0.5)
