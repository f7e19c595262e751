"""The ESZSL baseline of a training run: the same splits, the same validation protocol.

Two feature kinds, each fitted in closed form (:mod:`zeromamba.baselines.eszsl`):

* ``eszsl_pixels``: the images at the training resolution (eval transform: resize + ImageNet
  normalisation), flattened; images larger than ``MAX_PIXEL_SIDE`` are area-averaged down to it
  to bound the (n, 3 S^2) matrix.
* ``eszsl_features``: the trained backbone's last-stage map, average-pooled (n, F), from the run's
  own models: the stage-1 model for the validation choices, the final model for the test.

Protocol (:func:`eszsl_protocol`), mirroring the trainer's: fit on the validation task's training
images, pick (alpha, beta) maximising validation CZSL and, separately, validation H (with the
H-maximising gamma) over ``DEFAULT_GRID`` x ``DEFAULT_GRID``, and record the held-out seen
images' median switching threshold (:mod:`zeromamba.calibration`). Then refit on the final
task's training images and evaluate the test splits once: CZSL with the CZSL choice, S/U/H/AUSUC
with the H choice and the validation gamma scaled by the final task's held-out seen images'
median threshold over the validation one. No choice looks at the test splits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .. import calibration
from .eszsl import DEFAULT_GRID, EszslFit, FeatureScaler

MAX_PIXEL_SIDE = 64


@dataclass
class ZslTask:
    """One zero-shot task for a closed-form model: what it fits on, what calibrates it, and what
    it is scored on. Labels are global class ids; attributes index rows by them."""

    train: Dataset  # items (image, label)
    train_labels: Tensor
    heldout_seen: Dataset  # seen-class images the fit never sees (calibration)
    heldout_labels: Tensor
    unseen: Dataset | None  # unseen-class images (None: not scored, calibration only)
    unseen_labels: Tensor | None
    eval_seen: Dataset  # seen-class images scored for S
    eval_seen_labels: Tensor
    seen_classes: Tensor
    unseen_classes: Tensor


Features = Callable[[str, Dataset], Tensor]  # (task name "val"/"test", dataset) -> (n, d)


def _batches(dataset: Dataset, batch_size: int):
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


@torch.no_grad()
def pixel_features(dataset: Dataset, batch_size: int = 256) -> Tensor:
    """The dataset's images flattened (n, 3 S^2) float32, S = min(image side, MAX_PIXEL_SIDE)."""
    rows = []
    for images, _ in _batches(dataset, batch_size):
        if images.shape[-1] > MAX_PIXEL_SIDE:
            images = F.adaptive_avg_pool2d(images, MAX_PIXEL_SIDE)
        rows.append(images.flatten(1).float())
    return torch.cat(rows)


@torch.no_grad()
def pooled_features(
    model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 128
) -> Tensor:
    """The backbone's last-stage map average-pooled over space (n, F) float32.

    model: a ZeroMamba (its ``backbone`` returns ``(x_pre (b, F, h, w), logits)``)."""
    backbone = model.backbone
    was_training = backbone.training
    backbone.eval()
    rows = []
    for images, _ in _batches(dataset, batch_size):
        x_pre, _ = backbone(images.to(device))
        rows.append(x_pre.float().mean(dim=(2, 3)).cpu())
    backbone.train(was_training)
    return torch.cat(rows)


def _metrics(
    pred_seen: Tensor,
    seen_labels: Tensor,
    pred_unseen: Tensor,
    unseen_labels: Tensor,
    task: ZslTask,
    attributes: Tensor,
    gamma: float | None,
) -> dict[str, float]:
    """CZSL, S, U, H, AUSUC and gamma (the H-maximising one when None), as the trainer's."""
    from ..training.scoring import score_metrics

    return score_metrics(
        pred_seen,
        seen_labels,
        pred_unseen,
        unseen_labels,
        task.seen_classes,
        task.unseen_classes,
        attributes,
        gamma,
    )


def eszsl_protocol(
    features: Features,
    val: ZslTask,
    test: ZslTask,
    attributes: Tensor,
    grid: tuple[float, ...] = DEFAULT_GRID,
) -> dict[str, Any]:
    """ESZSL chosen on ``val`` and scored once on ``test`` (module docstring).

    ``val.heldout_seen`` doubles as the validation seen set (as in the trainer). Returns
    ``{"czsl", "S", "U", "H", "ausuc", "gamma", "hyper"}`` with ``hyper`` = the chosen
    ``alpha_czsl``, ``beta_czsl``, ``alpha_h``, ``beta_h``, the validation gamma ``val_gamma``,
    the median thresholds ``val_typical`` / ``final_typical`` and the validation ``val_czsl`` /
    ``val_H``.
    """
    # ---- validation: choose (alpha, beta) for CZSL and for H, and the median threshold
    x = features("val", val.train)
    scaler = FeatureScaler.fit(x)
    fit = EszslFit(scaler(x), val.train_labels, attributes, val.seen_classes)
    p_seen = fit.project(scaler(features("val", val.heldout_seen)))
    p_unseen = fit.project(scaler(features("val", val.unseen)))
    best_c, best_h = None, None
    for alpha in grid:
        for beta in grid:
            ps, pu = p_seen.predict(alpha, beta), p_unseen.predict(alpha, beta)
            m = _metrics(ps, val.heldout_labels, pu, val.unseen_labels, val, attributes, None)
            if best_c is None or m["czsl"] > best_c[0]["czsl"]:
                best_c = (m, alpha, beta)
            if best_h is None or m["H"] > best_h[0]["H"]:
                t = calibration.thresholds(
                    ps @ attributes.float().T, val.seen_classes, val.unseen_classes
                )
                best_h = (m, alpha, beta, calibration.typical_threshold(t))
    (m_c, a_c, b_c), (m_h, a_h, b_h, typical_val) = best_c, best_h

    # ---- test: refit on the final training images, calibrate on held-out seen images
    x = features("test", test.train)
    scaler = FeatureScaler.fit(x)
    fit = EszslFit(scaler(x), test.train_labels, attributes, test.seen_classes)
    att = attributes.float()
    p_cal = fit.project(scaler(features("test", test.heldout_seen))).predict(a_h, b_h)
    typical_final = calibration.typical_threshold(
        calibration.thresholds(p_cal @ att.T, test.seen_classes, test.unseen_classes)
    )
    gamma = calibration.transfer_gamma(m_h["gamma"], typical_val, typical_final)
    p_seen = fit.project(scaler(features("test", test.eval_seen)))
    p_unseen = fit.project(scaler(features("test", test.unseen)))

    def scored(alpha: float, beta: float) -> dict[str, float]:
        return _metrics(
            p_seen.predict(alpha, beta),
            test.eval_seen_labels,
            p_unseen.predict(alpha, beta),
            test.unseen_labels,
            test,
            attributes,
            gamma,
        )

    czsl, gz = scored(a_c, b_c), scored(a_h, b_h)
    return {
        "czsl": czsl["czsl"],
        "S": gz["S"],
        "U": gz["U"],
        "H": gz["H"],
        "ausuc": gz["ausuc"],
        "gamma": gamma,
        "hyper": {
            "alpha_czsl": a_c,
            "beta_czsl": b_c,
            "alpha_h": a_h,
            "beta_h": b_h,
            "val_gamma": m_h["gamma"],
            "val_typical": typical_val,
            "final_typical": typical_final,
            "val_czsl": m_c["czsl"],
            "val_H": m_h["H"],
        },
    }


def zsl_tasks(data, holdout_fraction: float, seed: int) -> tuple[ZslTask, ZslTask]:
    """The trainer's validation and test tasks for a closed-form baseline, eval transform.

    val: fit on the "train" images minus a held-out ``holdout_fraction`` of each class (the
    trainer's stage-1 split), score the held-out images as seen and "val" as unseen. test: fit
    on "trainval" minus a held-out fraction of each class (the calibration images, as the
    trainer's final stage), score "test_seen" and "test_unseen".

    data: a :class:`zeromamba.data.ZeroShotData`.
    """
    from ..data.transforms import eval_transform
    from ..training.trainer import holdout_split

    tf = eval_transform(data.image_size)
    out = []
    for fit_split, unseen_split, seen_eval in (
        ("train", "val", None),
        ("trainval", "test_unseen", "test_seen"),
    ):
        split = data.splits[fit_split].with_transform(tf)
        kept, held = holdout_split(split.labels, holdout_fraction, seed)
        train, heldout = split.subset(kept), split.subset(held)
        unseen = data.splits[unseen_split].with_transform(tf)
        seen_set = heldout if seen_eval is None else data.splits[seen_eval].with_transform(tf)
        out.append(
            ZslTask(
                train,
                train.labels,
                heldout,
                heldout.labels,
                unseen,
                unseen.labels,
                seen_set,
                seen_set.labels,
                data.classes(fit_split),
                torch.unique(unseen.labels),
            )
        )
    return out[0], out[1]


def run_baselines(
    data,
    holdout_fraction: float,
    seed: int,
    models: dict[str, torch.nn.Module | None],
    device: torch.device,
    batch_size: int = 128,
) -> dict[str, dict[str, Any]]:
    """``{"eszsl_pixels": ..., "eszsl_features": ...}`` (each as :func:`eszsl_protocol`).

    models: the ZeroMamba whose pooled features serve the "val" and the "test" task (the run's
    stage-1 and final models); ``eszsl_features`` is left out when either is None."""
    val, test = zsl_tasks(data, holdout_fraction, seed)
    att = data.attributes
    out = {"eszsl_pixels": eszsl_protocol(lambda _task, ds: pixel_features(ds), val, test, att)}
    if all(models.get(k) is not None for k in ("val", "test")):
        for m in models.values():
            m.to(device)

        def backbone(task: str, ds: Dataset) -> Tensor:
            return pooled_features(models[task], ds, device, batch_size)

        out["eszsl_features"] = eszsl_protocol(backbone, val, test, att)
    return out


def format_baselines(baseline: dict[str, dict[str, Any]]) -> list[str]:
    """Table rows (as the trainer's results table) for each baseline."""
    return [
        f"  {b['czsl']:6.2f} | {b['S']:6.2f} {b['U']:6.2f} {b['H']:6.2f} | {b['ausuc']:6.2f} |"
        f" {name} (gamma {b['gamma']:.3f})"
        for name, b in baseline.items()
    ]
