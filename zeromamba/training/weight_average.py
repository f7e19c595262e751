"""An exponential moving average of the weights, evaluated instead of the last step's weights.

From scratch with large learning rates the zero-shot metrics of consecutive epochs jump (on the
built-in validation task CZSL went 75, 50, 75 over three epochs): an epoch chosen on validation
is partly chosen by that noise, and the model retrained for that many epochs in the final stage
lands somewhere else. The average over the last ``horizon`` optimiser steps moves smoothly, so
the chosen epoch and the retrained model agree better. Training itself is unchanged: the
optimiser steps the raw weights; only evaluation and the saved ``best_*`` models use the average.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """``avg <- d avg + (1 - d) w`` after every optimiser step, with ``d = 1 - 1/horizon``
    (``horizon`` in steps), warmed up as ``d_t = min(d, (1 + t) / (10 + t))`` so that the first
    steps do not drag the random initialisation along. Integer buffers are copied."""

    def __init__(self, model: nn.Module, horizon: float):
        if not horizon >= 1.0:
            raise ValueError(f"horizon must be >= 1 optimiser step, got {horizon}")
        self.decay = 1.0 - 1.0 / horizon
        self.steps = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        src = model.state_dict()
        for name, avg in self.model.state_dict().items():
            new = src[name].detach()
            if avg.dtype.is_floating_point:
                avg.lerp_(new.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "decay": self.decay, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.decay = float(state["decay"])
        self.model.load_state_dict(state["model"])
