"""Per-class results: each class's accuracy (bars) and the confusion matrix among the unseen
classes.

Accuracies are in percent, computed from the same class predictions as the metrics: CZSL
(unseen images among the unseen classes) and GZSL with calibrated stacking at the report's
gamma (:func:`zeromamba.evaluation.calibrated_predict`), so the mean of the GZSL bars of the
seen classes is S and that of the unseen classes is U.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor


def class_accuracy(predicted: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """Top-1 accuracy (percent) of each class of ``classes`` (k,) over its items: (k,) float64;
    a class without items is NaN. predicted, labels: (n,) class ids."""
    out = torch.full((classes.numel(),), float("nan"), dtype=torch.float64)
    for k, c in enumerate(classes.tolist()):
        mine = labels == c
        if bool(mine.any()):
            out[k] = 100.0 * (predicted[mine] == c).double().mean()
    return out


def confusion(predicted: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """Row-normalised confusion matrix (k, k) in percent: entry (i, j) is the share of class
    classes[i]'s items predicted as classes[j]. Predictions outside ``classes`` are dropped
    from the row (so a row may sum to less than 100)."""
    k = classes.numel()
    pos = {c: i for i, c in enumerate(classes.tolist())}
    counts = torch.zeros(k, k, dtype=torch.float64)
    for y, p in zip(labels.tolist(), predicted.tolist()):
        if y in pos and p in pos:
            counts[pos[y], pos[p]] += 1
    totals = torch.tensor([(labels == c).sum() for c in classes.tolist()], dtype=torch.float64)
    return 100.0 * counts / totals.clamp_min(1)[:, None]


def _bars(ax, names: list[str], series: list[tuple[str, Tensor]], title: str) -> None:
    """Grouped bars per class, sorted by the first series (descending)."""
    order = torch.argsort(torch.nan_to_num(series[0][1], nan=-1.0), descending=True).tolist()
    x = np.arange(len(order))
    width = 0.8 / len(series)
    for j, (label, values) in enumerate(series):
        v = values[order].numpy()
        ax.bar(
            x + (j - (len(series) - 1) / 2) * width,
            v,
            width,
            label=f"{label} (mean {np.nanmean(v):.1f})",
        )
    if len(order) <= 60:
        ax.set_xticks(x, [names[i] for i in order], rotation=60, ha="right", fontsize=7)
    else:  # too many classes to name: ranks only
        ax.set_xlabel(f"{len(order)} classes, sorted by {series[0][0]}")
        ax.set_xticks([])
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def plot_class_accuracy(
    seen_names: list[str],
    seen_gzsl: Tensor,
    unseen_names: list[str],
    unseen_czsl: Tensor,
    unseen_gzsl: Tensor,
    path: str | os.PathLike,
    *,
    gamma: float,
) -> Path:
    """Two panels: the unseen classes' CZSL and GZSL accuracy, the seen classes' GZSL accuracy
    (percent, at calibration ``gamma``)."""
    path = Path(path)
    n = max(len(seen_names), len(unseen_names))
    width = min(16.0, max(8.0, 0.22 * n + 3))
    fig, (ax_u, ax_s) = plt.subplots(2, 1, figsize=(width, 8.5))
    _bars(
        ax_u,
        unseen_names,
        [("CZSL", unseen_czsl), (f"GZSL, gamma {gamma:.2f}", unseen_gzsl)],
        f"unseen classes ({len(unseen_names)})",
    )
    _bars(
        ax_s,
        seen_names,
        [(f"GZSL, gamma {gamma:.2f}", seen_gzsl)],
        f"seen classes ({len(seen_names)})",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(matrix: Tensor, names: list[str], path: str | os.PathLike) -> Path:
    """The unseen classes' CZSL confusion matrix (rows: true class, columns: predicted),
    percent of each row; the numbers are written in the cells when there are few classes."""
    path = Path(path)
    k = matrix.shape[0]
    side = min(14.0, max(5.0, 0.35 * k + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(matrix.numpy(), cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the true class's images")
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if k <= 15:
        for i in range(k):
            for j in range(k):
                v = float(matrix[i, j])
                if v > 0:
                    colour = "white" if v > 60 else "black"
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"CZSL confusion among the {k} unseen classes", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
