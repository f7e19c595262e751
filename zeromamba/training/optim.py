"""The optimiser and schedule: one learning rate per parameter group (backbone, GRL, SLP-MLP)
and MultiStepLR. The official recipe uses SGD with momentum; the from-scratch recipes use AdamW,
as VMamba's own from-scratch (ImageNet) training does: it fits the small model's attributes in
far fewer epochs (docs/design.md §8.6)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(
    groups: Mapping[str, Iterable[nn.Parameter]],
    lrs: Mapping[str, float],
    *,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    kind: str = "sgd",
) -> torch.optim.Optimizer:
    """SGD (``kind="sgd"``, with ``momentum``) or AdamW (``kind="adamw"``, decoupled
    ``weight_decay``, default betas) over named parameter groups; ``lrs[name]`` is each group's
    learning rate.

    Every group must have a learning rate and no parameter may sit in two groups. Groups keep
    their name (``param_group["name"]``) so logs and checkpoints can tell them apart.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
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
    if kind == "adamw":
        return torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    return torch.optim.SGD(param_groups, momentum=momentum, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, milestones: Sequence[int], factor: float
) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply every group's learning rate by ``factor`` after each epoch in ``milestones``
    (stepped once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(milestones), gamma=factor
    )
