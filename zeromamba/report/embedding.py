"""Embedding maps: the visual embeddings (predicted attribute vectors) of test images and the
class attribute prototypes in one 2-D map.

The model classifies by ``pred . attributes[c]``, so each vector is L2-normalised first: the map
shows directions, the geometry the classifier uses. t-SNE (scikit-learn, the optional
``zeromamba[viz]`` extra) when available, else PCA; the method used is returned and shown.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.lines import Line2D
from torch import Tensor

METHODS = ("auto", "tsne", "pca")


def tsne_available() -> bool:
    """Whether scikit-learn is installed (looked up, not imported: importing it takes seconds)."""
    return importlib.util.find_spec("sklearn") is not None


def embed_2d(points: Tensor, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """points (n, d) -> (xy (n, 2), the method used: "t-SNE" or "PCA").

    method: "tsne" (needs scikit-learn), "pca", or "auto" (t-SNE when scikit-learn is
    installed and there are enough points, else PCA).
    """
    if method not in METHODS:
        raise ValueError(f"embedding method must be one of {METHODS}, got {method!r}")
    x = points.detach().double().cpu()
    n = x.shape[0]
    if n == 0:
        raise ValueError("embed_2d: no points")
    if method == "tsne" and not tsne_available():
        raise ValueError("embedding method 'tsne' needs scikit-learn: pip install 'zeromamba[viz]'")
    if method == "tsne" or (method == "auto" and tsne_available() and n >= 5):
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        # perplexity must stay below n; 30 is the usual value for a few hundred points
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        tsne = TSNE(
            2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            max_iter=500,  # the layout settles well before sklearn's default 1000
            random_state=seed,
        )
        # one OpenMP thread: its gradient loop spins badly on a shared or busy machine (tens of
        # seconds for 40 points with 2 threads against other work) and is quick enough alone
        with threadpool_limits(1):
            return tsne.fit_transform(x.numpy()), "t-SNE"
    centred = x - x.mean(dim=0)
    # the top two right singular vectors; fewer dimensions than 2 pad with zeros
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    xy = centred @ vh[:2].T
    if xy.shape[1] < 2:
        xy = torch.cat([xy, torch.zeros(n, 2 - xy.shape[1], dtype=xy.dtype)], dim=1)
    return xy.numpy(), "PCA"


def place_prototypes(
    images: Tensor, image_xy: np.ndarray, prototypes: Tensor, k: int = 10
) -> np.ndarray:
    """2-D positions (p, 2) of ``prototypes`` (p, A) in the map ``image_xy`` (n, 2) of
    ``images`` (n, A): the mean position of each prototype's k most cosine-similar images.

    t-SNE has no map for new points, and fitting the prototypes with the images does not work
    either: the few prototypes are each other's nearest neighbours and form a cluster of their
    own. Placed this way, a star lies in its class's cluster exactly when that class's images
    are the ones closest to its attribute vector.
    """
    sim = F.normalize(prototypes, dim=1) @ F.normalize(images, dim=1).T  # (p, n)
    nearest = sim.topk(min(k, images.shape[0]), dim=1).indices.numpy()
    return image_xy[nearest].mean(axis=1)


def subsample_per_class(labels: Tensor, cap: int, seed: int = 0) -> Tensor:
    """Indices (sorted) of at most ``cap`` items, the same share of every class (at least one
    each), drawn with ``seed``; all indices when there are at most ``cap`` items."""
    n = labels.numel()
    if n <= cap:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)
    per_class = max(1, cap // classes.numel())
    keep = []
    for c in classes.tolist():
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.cat(keep).sort().values


def class_colours(n: int) -> np.ndarray:
    """n distinguishable RGBA colours: tab10/tab20 for few classes, a hue sweep for many."""
    if n <= 10:
        return plt.get_cmap("tab10")(np.arange(n))
    if n <= 20:
        return plt.get_cmap("tab20")(np.arange(n))
    return plt.get_cmap("turbo")(np.linspace(0.05, 0.95, n))


def plot_embedding(
    pred: Tensor,
    labels: Tensor,
    attributes: Tensor,
    seen: Tensor,
    unseen: Tensor,
    class_names: list[str],
    path: str | os.PathLike,
    *,
    method: str = "auto",
    max_points: int = 2000,
    title: str = "",
) -> tuple[Path, str]:
    """The map of test images ``pred`` (n, A) with ``labels`` (n,) global class ids and the
    prototypes ``attributes`` (n_classes, A) of the classes ``seen`` and ``unseen``: dots for
    seen-class images, triangles for unseen-class images, stars with a black edge for the
    prototypes (placed by :func:`place_prototypes`), one colour per class. Returns (path, method
    used)."""
    path = Path(path)
    keep = subsample_per_class(labels, max_points)
    pred, labels = pred[keep], labels[keep]
    classes = torch.cat([seen, unseen]).sort().values
    images = F.normalize(pred.float(), dim=1)
    img_xy, used = embed_2d(images, method)
    proto_xy = place_prototypes(images, img_xy, attributes[classes].float())
    colour_of = {c: col for c, col in zip(classes.tolist(), class_colours(classes.numel()))}
    is_unseen = set(unseen.tolist())

    fig, ax = plt.subplots(figsize=(10.5, 7.5))
    colours = np.array([colour_of[c] for c in labels.tolist()])
    mask = np.array([c in is_unseen for c in labels.tolist()], dtype=bool)
    ax.scatter(*img_xy[~mask].T, s=9, c=colours[~mask], marker="o", alpha=0.55, linewidths=0)
    ax.scatter(*img_xy[mask].T, s=16, c=colours[mask], marker="^", alpha=0.8, linewidths=0)
    proto_colours = np.array([colour_of[c] for c in classes.tolist()])
    ax.scatter(*proto_xy.T, s=150, c=proto_colours, marker="*", edgecolors="black", linewidths=0.8)
    if classes.numel() <= 40:  # names stay readable
        for (x, y), c in zip(proto_xy, classes.tolist()):
            name = class_names[c] + (" (unseen)" if c in is_unseen else "")
            ax.annotate(name, (x, y), fontsize=6.5, xytext=(4, 3), textcoords="offset points")
    legend = [
        Line2D([], [], marker="o", ls="", color="gray", label="seen-class test image"),
        Line2D([], [], marker="^", ls="", color="gray", label="unseen-class test image"),
        Line2D(
            [], [], marker="*", ls="", color="gray", mec="black", ms=12, label="class prototype"
        ),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        (title + "\n" if title else "")
        + f"{used} of {len(pred)} test images; stars: {classes.numel()} class attribute vectors",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, used
