"""Scoring a model on a zero-shot task: predictions, CZSL / GZSL metrics, the seen-unseen curve.

One path for every place that scores a model (the trainer's epochs, ``zeromamba eval``, the
report page, the ESZSL baseline): attribute predictions (n, A) become class scores
``pred @ attributes^T`` and every metric of :mod:`zeromamba.evaluation` is computed from them.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .. import calibration, evaluation
from .. import data as zdata
from . import distributed


def show_progress(progress: bool | None) -> bool:
    """Progress bars on (True), off (False), or only when stdout is a terminal (None): redirected
    to a file, a bar writes a carriage-return update per batch; the per-epoch lines remain."""
    if progress is None:
        return sys.stdout.isatty()
    return progress


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; nothing otherwise."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    env: distributed.DistEnv,
    batch_size: int,
    amp: bool,
    desc: str = "eval",
    progress: bool | None = False,
) -> Tensor:
    """The model's attribute predictions (n, A) float32 for every item of ``dataset``, in order.
    Under DDP each rank scores every world_size-th item and the rows are gathered."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    shard = Subset(dataset, distributed.shard_indices(len(dataset), env))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False)
    rows = []
    for images, _ in tqdm(
        loader, desc=desc, leave=False, disable=not show_progress(progress), file=sys.stdout
    ):
        with autocast(env.device, amp):
            rows.append(net(images.to(env.device, non_blocking=True)).float().cpu())
    net.train(was_training)
    pred = torch.cat(rows) if rows else torch.empty(0, net.grl.out_features)
    return distributed.gather_rows(pred, len(dataset), env)


@dataclass
class EvalSets:
    """A zero-shot evaluation: seen-class images, unseen-class images and the label space."""

    name: str  # "val" or "test"
    seen_set: zdata.ImageDataset
    unseen_set: zdata.ImageDataset
    seen_classes: Tensor  # global class ids
    unseen_classes: Tensor


def test_sets(data: zdata.ZeroShotData, transform) -> EvalSets:
    """The test task of ``data``: "test_seen" and "test_unseen" under ``transform``, all classes."""
    return EvalSets(
        "test",
        data.splits["test_seen"].with_transform(transform),
        data.splits["test_unseen"].with_transform(transform),
        data.seen,
        data.unseen,
    )


def predict_sets(
    model: nn.Module,
    sets: EvalSets,
    env: distributed.DistEnv,
    batch_size: int,
    amp: bool,
    progress: bool | None = False,
) -> tuple[Tensor, Tensor]:
    """The model's attribute predictions on the seen and on the unseen images of ``sets``."""
    return tuple(
        predict(model, ds, env, batch_size, amp, f"{sets.name} {which}", progress)
        for which, ds in (("seen", sets.seen_set), ("unseen", sets.unseen_set))
    )


def score_metrics(
    pred_seen: Tensor,
    seen_labels: Tensor,
    pred_unseen: Tensor,
    unseen_labels: Tensor,
    seen_classes: Tensor,
    unseen_classes: Tensor,
    attributes: Tensor,
    gamma: float | None,
) -> dict[str, float]:
    """CZSL, S, U, H (percent), AUSUC and the gamma used (the H-maximising one when None) of
    attribute predictions pred_* (n, A) against class ``attributes`` (n_classes, A); the
    candidate classes are ``seen_classes`` + ``unseen_classes`` (global ids)."""
    att = attributes.float()
    args = (
        pred_seen @ att.T,
        seen_labels,
        pred_unseen @ att.T,
        unseen_labels,
        seen_classes,
        unseen_classes,
    )
    if gamma is None:
        gamma, gz = evaluation.best_gamma(*args)
    else:
        gz = evaluation.gzsl(*args, gamma)
    return {
        "czsl": float(evaluation.czsl(args[2], unseen_labels, unseen_classes)),
        "S": float(gz["S"]),
        "U": float(gz["U"]),
        "H": float(gz["H"]),
        "ausuc": float(evaluation.ausuc(*args)),
        "gamma": float(gamma),
    }


def zero_shot_metrics(
    pred_seen: Tensor,
    pred_unseen: Tensor,
    sets: EvalSets,
    attributes: Tensor,
    gamma: float | None,
) -> dict[str, float]:
    """:func:`score_metrics` on ``sets``, plus the fraction of seen-set images that gamma
    switches to an unseen class (``seen_switched``), the seen-set images' median switching
    threshold (``seen_typical``, see :mod:`zeromamba.calibration`) and the seen-set accuracy
    among the seen classes alone (``seen_only``, percent).

    The candidate classes are the sets' seen + unseen classes only (on validation, the test
    classes are not candidates). pred_*: (n, A); attributes: (n_classes, A) of every class.
    """
    for which, p in (("seen", pred_seen), ("unseen", pred_unseen)):
        if not bool(torch.isfinite(p).all()):  # the metrics would be meaningless, or crash
            raise FloatingPointError(
                f"the model's predictions on the {sets.name} {which} images are not finite "
                "(NaN/Inf weights, or a diverged run)"
            )
    metrics = score_metrics(
        pred_seen,
        sets.seen_set.labels,
        pred_unseen,
        sets.unseen_set.labels,
        sets.seen_classes,
        sets.unseen_classes,
        attributes,
        gamma,
    )
    t_seen = calibration.thresholds(
        pred_seen @ attributes.float().T, sets.seen_classes, sets.unseen_classes
    )
    metrics["seen_switched"] = calibration.switched_fraction(metrics["gamma"], t_seen)
    metrics["seen_typical"] = calibration.typical_threshold(t_seen)
    # the seen images classified among the seen classes alone: S with no unseen candidate, the
    # ceiling of S whatever gamma does (what holds H back when it is low)
    metrics["seen_only"] = evaluation.czsl(
        pred_seen @ attributes.float().T, sets.seen_set.labels, sets.seen_classes
    )
    return metrics


def seen_unseen_points(
    pred_seen: Tensor, pred_unseen: Tensor, sets: EvalSets, attributes: Tensor
) -> tuple[list[float], list[float]]:
    """S and U (percent) along the calibration sweep, for the seen-unseen plot."""
    att = attributes.float()
    curve = evaluation.seen_unseen_curve(
        pred_seen @ att.T,
        sets.seen_set.labels,
        pred_unseen @ att.T,
        sets.unseen_set.labels,
        sets.seen_classes,
        sets.unseen_classes,
    )
    return curve["S"].tolist(), curve["U"].tolist()
