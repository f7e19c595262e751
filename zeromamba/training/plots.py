"""PNG plots of a run: training curves per epoch and the seen-unseen accuracy curve."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt

_METRICS = (("czsl", "CZSL"), ("S", "S"), ("U", "U"), ("H", "H"))


def plot_training_curves(history: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Loss and accuracies (percent) per epoch, one line per (stage, split).

    history: the per-epoch records of the JSONL log (keys ``stage``, ``epoch``, ``loss`` and
    an ``eval`` dict ``{split: {czsl, S, U, H, ...}}``).
    """
    path = Path(path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for stage in dict.fromkeys(r["stage"] for r in history):  # in run order
        rows = [r for r in history if r["stage"] == stage]
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["loss"] for r in rows], marker=".", label=f"{stage}")
        for split in sorted({s for r in rows for s in r.get("eval", {})}):
            pts = [(r["epoch"], r["eval"][split]) for r in rows if split in r.get("eval", {})]
            for key, name in _METRICS:
                ax_acc.plot(
                    [e for e, _ in pts],
                    [m[key] for _, m in pts],
                    marker=".",
                    label=f"{stage} {split} {name}",
                )
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="zero-shot accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_seen_unseen(
    seen_acc: list[float],
    unseen_acc: list[float],
    path: str | os.PathLike,
    *,
    ausuc: float,
    point: tuple[float, float] | None = None,
    title: str = "seen-unseen curve",
) -> Path:
    """The GZSL trade-off as gamma sweeps: S (x) against U (y), percent; ``point`` marks the
    operating point (S, U) of the chosen gamma."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(seen_acc, unseen_acc, marker=".", label=f"AUSUC {ausuc:.2f}")
    if point is not None:
        ax.plot([point[0]], [point[1]], "r*", markersize=12, label="chosen gamma")
    ax.set(xlabel="S: seen accuracy (%)", ylabel="U: unseen accuracy (%)", title=title)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
