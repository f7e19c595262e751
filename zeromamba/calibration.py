"""A GZSL calibration rule that transfers from the validation task to the test task.

Calibrated stacking subtracts gamma from the seen classes' softmax probabilities. The best
absolute gamma depends on how confident the model is and on how many classes share the softmax,
so a gamma tuned on the validation task (the "train" classes plus a few "val" classes, scored
by the stage-1 model) lands somewhere else on the test task (all seen plus the unseen classes,
scored by the final model): on the built-in data the validation-optimal 0.15 sent only 7% of
the test-seen images to a seen class (S 7.2, H 13.0) where the test-optimal gamma was 0.05.

What transfers is a *rate*: the fraction of held-out seen images that calibration moves to an
unseen class. Each image has a switching threshold t = p(best seen) - p(best unseen)
(:func:`zeromamba.evaluation.stacking_thresholds`); calibrated stacking with gamma predicts
the unseen class exactly when gamma > t. The rule:

1. on validation, find the H-maximising gamma* and record q = the fraction of held-out seen
   images (the stage-1 model's own held-out "train" images) with t < gamma*;
2. on the final task, score held-out images of the seen classes with the final model over the
   test label space (seen + unseen classes: only the unseen classes' attribute vectors are used,
   no unseen image) and set gamma to the q-quantile of their thresholds.

Both steps use only seen-class images that the model did not train on, in the label space the
model will be judged in, so the same q means the same operating point. ``--gamma`` fixes gamma
instead, and ``--select test`` keeps the official fixed gamma.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import evaluation


def switched_fraction(gamma: float, thresholds: Tensor) -> float:
    """The fraction q of images whose switching threshold is below ``gamma``, i.e. that
    calibrated stacking with ``gamma`` moves from their best seen to their best unseen class.

    thresholds: (n,) from :func:`zeromamba.evaluation.stacking_thresholds`."""
    t = _check_thresholds(thresholds)
    return float((t < gamma).to(torch.float64).mean())


def gamma_for_fraction(q: float, thresholds: Tensor) -> float:
    """The gamma that switches a fraction ``q`` (0..1) of the images: the midpoint between the
    thresholds on either side of the q-th position (below all of them for q = 0, above all for
    q = 1), so that ``switched_fraction(gamma, thresholds)`` is the nearest achievable to q."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be a fraction in [0, 1], got {q}")
    t = torch.sort(_check_thresholds(thresholds).to(torch.float64)).values
    k = round(q * t.numel())  # images to switch
    if k == 0:
        return float(t[0]) - 1e-6
    if k == t.numel():
        return float(t[-1]) + 1e-6
    return float((t[k - 1] + t[k]) / 2)


def thresholds(scores: Tensor, seen: Tensor, unseen: Tensor) -> Tensor:
    """Switching thresholds (n,) float64 of images with raw class scores (n, n_classes) in the
    label space seen + unseen (global class ids)."""
    return evaluation.stacking_thresholds(scores, seen, unseen)


def _check_thresholds(t: Tensor) -> Tensor:
    t = torch.as_tensor(t)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    return t
