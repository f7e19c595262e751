"""ESZSL, "An embarrassingly simple approach to zero-shot learning" (Romera-Paredes & Torr,
ICML 2015), in closed form.

With training features X (m, d), class indicators Y (m, z) in {-1, +1} (+1 at the true class)
and the training classes' attribute vectors S (z, a), ESZSL minimises

    ||X V S^T - Y||^2 + alpha ||V S^T||^2 + beta ||X V||^2 + alpha beta ||V||^2

over V (d, a), whose minimiser is

    V = (X^T X + alpha I)^-1 X^T Y S (S^T S + beta I)^-1.

An image x is mapped to the attribute vector ``x V`` and scored against class c by ``x V . s_c``,
exactly like the ZeroMamba head's prediction, so every zero-shot metric applies unchanged.

:class:`EszslFit` factorises X once (thin SVD, X = U diag(sigma) W^T) and S^T S once
(eigendecomposition), after which V, or directly ``x V`` for given images, costs one small matrix
product per (alpha, beta): a whole hyperparameter grid is cheap. The SVD form is exact for
alpha > 0 and also works when d > m (raw pixels), since (X^T X + alpha I)^-1 X^T =
W diag(sigma / (sigma^2 + alpha)) U^T.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# The paper's grid: 10^b for b in -3..3 for both regularisers (features are standardised by
# :class:`FeatureScaler`, so their scale is comparable across feature kinds).
DEFAULT_GRID: tuple[float, ...] = tuple(10.0**b for b in range(-3, 4))


def class_indicators(labels: Tensor, classes: Tensor) -> Tensor:
    """Y (m, z) float64: +1 where ``labels[i] == classes[j]``, else -1 (the paper's coding).

    labels (m,) global class ids, every one in ``classes`` (z,) sorted global ids."""
    classes = torch.as_tensor(classes).long()
    labels = torch.as_tensor(labels).long()
    hit = labels[:, None] == classes[None, :]
    if not bool(hit.any(dim=1).all()):
        stray = labels[~hit.any(dim=1)].unique()[:5].tolist()
        raise ValueError(f"labels {stray} are not among the training classes")
    return torch.where(hit, 1.0, -1.0).to(torch.float64)


@dataclass
class FeatureScaler:
    """Centres features on the training mean and scales them to unit mean squared row norm
    (so the regulariser grid means the same for pixels and for backbone features)."""

    mean: Tensor  # (d,) float64
    scale: float

    @classmethod
    def fit(cls, x: Tensor) -> FeatureScaler:
        """x (m, d) training features."""
        x = x.to(torch.float64)
        mean = x.mean(dim=0)
        ms = float(((x - mean) ** 2).sum(dim=1).mean())
        return cls(mean, 1.0 / ms**0.5 if ms > 0 else 1.0)

    def __call__(self, x: Tensor) -> Tensor:
        """(n, d) -> (n, d) float64."""
        return (x.to(torch.float64) - self.mean) * self.scale


class EszslFit:
    """The factorised ESZSL problem of one training set.

    Args:
        x: (m, d) training features (any float dtype; computed in float64).
        labels: (m,) their global class ids.
        class_attributes: (n_classes, a) attribute vectors of every class (global ids index rows).
        train_classes: (z,) the training classes (global ids); default: the classes of ``labels``.
    """

    def __init__(
        self,
        x: Tensor,
        labels: Tensor,
        class_attributes: Tensor,
        train_classes: Tensor | None = None,
    ):
        x = torch.as_tensor(x).to(torch.float64)
        labels = torch.as_tensor(labels).long()
        if x.ndim != 2 or x.shape[0] != labels.numel():
            raise ValueError(
                f"x must be (m, d) with m = {labels.numel()} labels, got {tuple(x.shape)}"
            )
        if train_classes is None:
            train_classes = torch.unique(labels)
        train_classes = torch.unique(torch.as_tensor(train_classes).long())
        s = torch.as_tensor(class_attributes).to(torch.float64)[train_classes]  # (z, a)
        y = class_indicators(labels, train_classes)  # (m, z)
        u, sigma, wt = torch.linalg.svd(x, full_matrices=False)
        keep = sigma > sigma.max() * 1e-12 if sigma.numel() else sigma.bool()
        self._w = wt[keep].T  # (d, r)
        self._sigma = sigma[keep]  # (r,)
        self._uys = u[:, keep].T @ y @ s  # (r, a)
        lam, self._e = torch.linalg.eigh(s.T @ s)  # S^T S = E diag(lam) E^T
        self._lam = lam.clamp_min(0.0)

    def _right(self, beta: float) -> Tensor:
        """(S^T S + beta I)^-1, (a, a)."""
        return (self._e / (self._lam + beta)) @ self._e.T

    def weights(self, alpha: float, beta: float) -> Tensor:
        """V (d, a) float64 for the regularisers alpha (features) and beta (attributes) > 0."""
        _check_positive(alpha, beta)
        shrink = (self._sigma / (self._sigma**2 + alpha))[:, None]
        return self._w @ (shrink * self._uys) @ self._right(beta)

    def project(self, x: Tensor) -> ProjectedImages:
        """Images x (n, d) prepared for :meth:`ProjectedImages.predict` at any (alpha, beta)."""
        return ProjectedImages(self, torch.as_tensor(x).to(torch.float64) @ self._w)


@dataclass
class ProjectedImages:
    """Images expressed in the training features' right singular vectors: ``xw`` (n, r)."""

    fit: EszslFit
    xw: Tensor

    def predict(self, alpha: float, beta: float) -> Tensor:
        """The images' attribute vectors x V (n, a) float32 at (alpha, beta)."""
        _check_positive(alpha, beta)
        f = self.fit
        shrink = (f._sigma / (f._sigma**2 + alpha))[:, None]
        return (self.xw @ (shrink * f._uys) @ f._right(beta)).to(torch.float32)


def _check_positive(alpha: float, beta: float) -> None:
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"ESZSL needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}")
