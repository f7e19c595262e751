"""The official optimiser and schedule: SGD with one learning rate per parameter group
(backbone, GRL, SLP-MLP) and MultiStepLR."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn


def build_optimizer(
    groups: Mapping[str, Iterable[nn.Parameter]],
    lrs: Mapping[str, float],
    *,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
) -> torch.optim.SGD:
    """SGD over named parameter groups; ``lrs[name]`` is each group's learning rate.

    Every group must have a learning rate and no parameter may sit in two groups. Groups keep
    their name (``param_group["name"]``) so logs and checkpoints can tell them apart.
    """
    missing = set(groups) - set(lrs)
    if missing:
        raise ValueError(f"no learning rate for parameter group(s) {sorted(missing)}")
    seen: set[int] = set()
    param_groups = []
    for name, params in groups.items():
        params = [p for p in params if p.requires_grad]
        for p in params:
            if id(p) in seen:
                raise ValueError(f"a parameter of group {name!r} is also in an earlier group")
            seen.add(id(p))
        param_groups.append({"name": name, "params": params, "lr": float(lrs[name])})
    return torch.optim.SGD(param_groups, momentum=momentum, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, milestones: Sequence[int], factor: float
) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply every group's learning rate by ``factor`` after each epoch in ``milestones``
    (stepped once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(milestones), gamma=factor
    )
