"""A GZSL calibration rule that transfers from the validation task to the test task.

Calibrated stacking subtracts gamma from the seen classes' softmax probabilities. The best
absolute gamma depends on how confident the model is, so a gamma tuned on the validation task
(the "train" classes plus a few "val" classes, scored by the stage-1 model) lands somewhere else
on the test task (all seen plus the unseen classes, scored by the final model, which is trained
on more classes and images and is often more or less confident).

Each image has a switching threshold t = p(best seen) - p(best unseen)
(:func:`zeromamba.evaluation.stacking_thresholds`): calibrated stacking with gamma predicts the
unseen class exactly when gamma > t. The rule scales gamma with the *typical* threshold of
held-out seen images, their median, which measures how confidently a model keeps a seen image
on its seen side:

1. on validation, find the H-maximising gamma* and the median threshold m_val of the held-out
   seen images (the stage-1 model's own held-out "train" images);
2. on the final task, score held-out images of the seen classes with the final model over the
   test label space (seen + unseen classes: only the unseen classes' attribute vectors are
   used, no unseen image), take their median threshold m_final, and set
   gamma = gamma* x m_final / m_val.

Why the median and not a rate: an earlier rule moved the same *fraction* q of held-out seen
images to an unseen class on both tasks. The fraction is set by the few seen images whose
classes look like an unseen class, and which classes those are changes with the task: on a
digits task the test's unseen 9 resembles the seen 8 while no validation class did, q = 8% fell
in that tail and gamma collapsed from 0.49 to 0.04 (U 2%). The median follows the bulk of the
seen images, so a handful of look-alikes cannot move it. When either median is not positive
(a model that sends most seen images to unseen classes), the ratio has no meaning and the
validation gamma is used as is. ``--gamma`` fixes gamma instead, and ``--select test`` keeps
the official fixed gamma.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import evaluation

# below this median threshold a model is not confidently seen-side: the ratio is meaningless
MIN_TYPICAL = 1e-3


def typical_threshold(thresholds: Tensor) -> float:
    """The median switching threshold of held-out seen images, thresholds (n,) from
    :func:`thresholds`."""
    return float(torch.quantile(_check_thresholds(thresholds).to(torch.float64), 0.5))


def transfer_gamma(gamma_val: float, typical_val: float, typical_final: float) -> float:
    """The final model's gamma: ``gamma_val * typical_final / typical_val``, clamped to
    [-1, 1]; ``gamma_val`` itself when either typical threshold is below ``MIN_TYPICAL``."""
    for name, v in (("gamma_val", gamma_val), ("typical_val", typical_val)):
        if not torch.isfinite(torch.tensor(float(v))):
            raise ValueError(f"{name} must be finite, got {v}")
    if not torch.isfinite(torch.tensor(float(typical_final))):
        raise ValueError(f"typical_final must be finite, got {typical_final}")
    if typical_val < MIN_TYPICAL or typical_final < MIN_TYPICAL:
        return float(gamma_val)
    return float(min(1.0, max(-1.0, gamma_val * typical_final / typical_val)))


def switched_fraction(gamma: float, thresholds: Tensor) -> float:
    """The fraction of images whose switching threshold is below ``gamma``, i.e. that
    calibrated stacking with ``gamma`` moves from their best seen to their best unseen class.

    thresholds: (n,) from :func:`thresholds`."""
    t = _check_thresholds(thresholds)
    return float((t < gamma).to(torch.float64).mean())


def thresholds(scores: Tensor, seen: Tensor, unseen: Tensor) -> Tensor:
    """Switching thresholds (n,) float64 of images with raw class scores (n, n_classes) in the
    label space seen + unseen (global class ids)."""
    return evaluation.stacking_thresholds(scores, seen, unseen)


def _check_thresholds(t: Tensor) -> Tensor:
    t = torch.as_tensor(t)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    return t
