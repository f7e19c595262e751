"""Attribute attention maps: where the SLP looks for each attribute.

The weights come from the model's own SLP (``ZeroMamba(images, return_attention=True)``): for
attribute i of image b, ``softmax_r(q1[i] . feat[b, :, r])`` over the last-stage map's regions r.
A figure shows, per chosen test image, the image, then its top-k predicted attributes and its true
class's strongest attributes, each as that attribute's map upsampled and laid over the image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def attribute_attention(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """pred (b, A) and the SLP's attention weights (b, A, h, w) float32 of ``images``
    (b, 3, H, W), in eval mode; every (b, i) map sums to 1 over its h*w regions."""
    was_training = model.training
    model.eval()
    try:
        pred, attention = model(images, return_attention=True)
    finally:
        model.train(was_training)
    return pred.float(), attention.float()


def choose_examples(
    labels: Tensor, predicted: Tensor, per_kind: int = 2, seed: int = 0
) -> list[int]:
    """Indices of up to ``per_kind`` correctly and ``per_kind`` wrongly predicted items,
    drawn deterministically (a permutation seeded with ``seed``), distinct classes first.
    Correct ones come first. labels, predicted: (n,) class ids."""
    order = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen: list[int] = []
    for want_correct in (True, False):
        pool = [i for i in order if bool(predicted[i] == labels[i]) == want_correct]
        picked: list[int] = []
        classes: set[int] = set()
        for i in pool:  # one per class first
            if len(picked) < per_kind and int(labels[i]) not in classes:
                picked.append(i)
                classes.add(int(labels[i]))
        for i in pool:  # then fill up if there are too few classes
            if len(picked) < per_kind and i not in picked:
                picked.append(i)
        chosen += picked
    return chosen


@dataclass
class AttentionExample:
    """One image's row of the figure."""

    image: Tensor  # (3, H, W) float in [0, 1], as displayed
    attention: Tensor  # (A, h, w)
    pred: Tensor  # (A,) predicted attribute vector
    true_name: str
    predicted_name: str
    class_attributes: Tensor  # (A,) the true class's attribute vector


def heat(image: Tensor, weights: Tensor) -> Tensor:
    """weights (h, w) upsampled (bilinear) to the image's (H, W) and scaled to [0, 1] by its
    maximum. Returns (H, W)."""
    up = F.interpolate(weights[None, None], size=image.shape[-2:], mode="bilinear")[0, 0]
    return up / up.max().clamp_min(1e-12)


def overlay(image: Tensor, weights: Tensor, alpha: float = 0.45) -> np.ndarray:
    """The image (3, H, W) in [0, 1] blended with the jet-coloured :func:`heat` of ``weights``
    (h, w): an (H, W, 3) array in [0, 1], drawn with one ``imshow`` (half the drawing time of
    two layers)."""
    rgb = plt.get_cmap("jet")(heat(image, weights).numpy())[..., :3]
    img = image.clamp(0, 1).permute(1, 2, 0).numpy()
    return (1 - alpha) * img + alpha * rgb


def plot_attention(
    examples: list[AttentionExample],
    attribute_names: list[str],
    path: str | os.PathLike,
    *,
    top_k: int = 3,
    title: str = "",
) -> Path:
    """One row per example: the image (true and predicted class), its ``top_k`` predicted
    attributes and its true class's ``top_k`` strongest attributes, each with its attention map
    over the image, the attribute name, its score (predicted value / class value) and the
    map's peak weight (the colours are scaled to the peak)."""
    path = Path(path)
    cols = 1 + 2 * top_k
    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    regions = examples[0].attention[0].numel() if examples else 1
    if not examples:
        axes[0, 0].text(0, 0.5, "no test images", transform=axes[0, 0].transAxes)
    for row, ex in zip(axes, examples):
        img = ex.image.clamp(0, 1).permute(1, 2, 0).numpy()
        ok = ex.true_name == ex.predicted_name
        row[0].imshow(img)
        row[0].set_title(
            f"true: {_short(ex.true_name)}\npred: {_short(ex.predicted_name)}",
            fontsize=8,
            color="darkgreen" if ok else "firebrick",
        )
        top_pred = ex.pred.topk(min(top_k, ex.pred.numel())).indices.tolist()
        top_true = ex.class_attributes.topk(min(top_k, ex.pred.numel())).indices.tolist()
        top_true = [i for i in top_true if ex.class_attributes[i] > 0]  # attributes it has
        panels = [(i, f"pred {ex.pred[i]:.2f}") for i in top_pred]
        panels += [(i, f"class {ex.class_attributes[i]:.2f}") for i in top_true]
        for ax, (i, score) in zip(row[1:], panels):
            ax.imshow(overlay(ex.image, ex.attention[i]))
            peak = float(ex.attention[i].max())
            ax.set_title(f"{_short(attribute_names[i])}\n{score}, peak {peak:.2f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.text(
        0.99,
        0.005,
        f"columns 2-{1 + top_k}: top predicted attributes; "
        f"{2 + top_k}-{cols}: the true class's strongest; peak: the largest attention weight "
        f"(uniform attention: 1/{regions} regions = {1 / regions:.3g})",
        ha="right",
        fontsize=7,
        color="dimgray",
    )
    # fixed margins: tight_layout costs as much as drawing on a grid of 28 panels
    height = fig.get_figheight()  # margins in inches: the row titles and the figure title
    top = 1 - (0.75 if title else 0.45) / height
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.25 / height, top=top)
    fig.subplots_adjust(wspace=0.08, hspace=0.45)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
