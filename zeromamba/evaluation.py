"""Zero-shot metrics: per-class accuracy, CZSL, GZSL with calibrated stacking, the seen-unseen
curve and its area (AUSUC), and the choice of the calibration gamma.

Units: every accuracy (per-class accuracy, CZSL, S, U, H) is in percent, 0..100. AUSUC is the area
under the seen-unseen curve with both accuracies as fractions, times 100 (percent of the unit
square, 0..100).

Inputs are raw class scores ``scores (n, n_classes)`` over all classes, as the model gives them
(``pred @ attributes.T``), and global class ids. CZSL takes the argmax over the unseen classes.
GZSL (calibrated stacking, Chao et al. 2016): softmax over the candidate classes
``seen ∪ unseen``, subtract ``gamma`` from the seen classes' probabilities, take the argmax; with
all classes as candidates (the test setting) this is exactly the official ZeroMamba computation.
S and U are the per-class accuracies on the test-seen and test-unseen images; H = 2SU / (S + U).
"""

from __future__ import annotations

import torch


def _as_ids(t: torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.ndim != 1 or t.dtype.is_floating_point:
        raise ValueError(f"{what} must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}")
    return t.to(torch.long).cpu()


def _check(scores: torch.Tensor, labels: torch.Tensor, allowed: torch.Tensor, what: str):
    scores = torch.as_tensor(scores).detach().cpu()
    labels = _as_ids(labels, f"{what} labels")
    if scores.ndim != 2 or scores.shape[0] != labels.numel():
        raise ValueError(
            f"{what}: scores must be (n, n_classes) with n = {labels.numel()} labels, got "
            f"{tuple(scores.shape)}"
        )
    if allowed.numel() == 0:
        raise ValueError(f"{what}: no classes given")
    if int(allowed.max()) >= scores.shape[1] or int(allowed.min()) < 0:
        raise ValueError(f"{what}: class ids outside the {scores.shape[1]} score columns")
    stray = labels[~torch.isin(labels, allowed)]
    if stray.numel():
        raise ValueError(f"{what}: labels {stray.unique()[:5].tolist()} are not among its classes")
    return scores, labels


def _class_weights(labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Weight (n,) of each sample in the per-class mean: 1 / (n_classes * count of its class).
    Samples of other classes weigh 0. A class without samples is refused."""
    if classes.numel() == 0:
        raise ValueError("no classes to average over")
    pos = torch.searchsorted(classes, labels).clamp(max=classes.numel() - 1)
    inside = classes[pos] == labels
    counts = torch.bincount(pos[inside], minlength=classes.numel())
    if bool((counts == 0).any()):
        empty = classes[counts == 0][:5].tolist()
        raise ValueError(f"classes {empty} have no samples: their accuracy is undefined")
    w = 1.0 / (classes.numel() * counts[pos].to(torch.float64))
    return torch.where(inside, w, torch.zeros_like(w))


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> float:
    """Mean over ``classes`` of each class's top-1 accuracy, in percent.

    pred, labels: (n,) predicted and true class ids; samples whose label is not in ``classes``
    are ignored; every class of ``classes`` must have a sample.
    """
    pred, labels = _as_ids(pred, "pred"), _as_ids(labels, "labels")
    classes = torch.unique(_as_ids(classes, "classes"))
    if pred.shape != labels.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and labels {tuple(labels.shape)} differ")
    w = _class_weights(labels, classes)
    return 100.0 * float((w * (pred == labels)).sum())


def czsl(scores: torch.Tensor, labels: torch.Tensor, unseen: torch.Tensor) -> float:
    """Conventional ZSL accuracy (percent): images of unseen classes classified among the unseen
    classes only. scores (n, n_classes), labels (n,) all in ``unseen``."""
    unseen = torch.unique(_as_ids(unseen, "unseen"))
    scores, labels = _check(scores, labels, unseen, "czsl")
    pred = unseen[scores[:, unseen].argmax(dim=1)]
    return per_class_accuracy(pred, labels, unseen)


def _stacking(scores: torch.Tensor, seen: torch.Tensor, unseen: torch.Tensor):
    """Per sample: the best seen class, the best unseen class, and the threshold
    t = p(best seen) - p(best unseen) (softmax over seen ∪ unseen, float64): calibrated stacking
    with gamma predicts the unseen one exactly when gamma > t."""
    p = torch.softmax(scores[:, torch.cat([seen, unseen])].to(torch.float64), dim=1)
    p_seen, i_seen = p[:, : seen.numel()].max(dim=1)
    p_unseen, i_unseen = p[:, seen.numel() :].max(dim=1)
    return seen[i_seen], unseen[i_unseen], p_seen - p_unseen


def stacking_thresholds(scores: torch.Tensor, seen: torch.Tensor, unseen: torch.Tensor):
    """Each image's switching threshold t (n,) float64: calibrated stacking with gamma predicts
    its best unseen class exactly when gamma > t. scores (n, n_classes) raw class scores; the
    softmax runs over ``seen`` + ``unseen`` (global class ids)."""
    seen, unseen = _classes(seen, unseen)
    scores = torch.as_tensor(scores).detach().cpu()
    if scores.ndim != 2 or int(torch.cat([seen, unseen]).max()) >= scores.shape[1]:
        raise ValueError(
            f"scores must be (n, n_classes) covering the classes, got {tuple(scores.shape)}"
        )
    return _stacking(scores, seen, unseen)[2]


def _classes(seen: torch.Tensor, unseen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    seen = torch.unique(_as_ids(seen, "seen"))
    unseen = torch.unique(_as_ids(unseen, "unseen"))
    if seen.numel() == 0 or unseen.numel() == 0:
        raise ValueError("gzsl needs at least one seen and one unseen class")
    if bool(torch.isin(seen, unseen).any()):
        raise ValueError("seen and unseen classes overlap")
    return seen, unseen


def _harmonic(s: float, u: float) -> float:
    return 0.0 if s + u == 0 else 2.0 * s * u / (s + u)


def gzsl(
    scores_seen_set: torch.Tensor,
    labels_seen_set: torch.Tensor,
    scores_unseen_set: torch.Tensor,
    labels_unseen_set: torch.Tensor,
    seen: torch.Tensor,
    unseen: torch.Tensor,
    gamma: float,
) -> dict[str, float]:
    """Generalised ZSL with calibrated stacking: ``{"S", "U", "H"}`` in percent.

    scores_*_set (n_*, n_classes): raw scores of the images of seen / unseen classes; labels_*_set
    (n_*,) their classes, in ``seen`` / ``unseen``. Prediction: argmax over seen ∪ unseen of the
    softmax probabilities minus ``gamma`` on the seen classes.
    """
    seen, unseen = _classes(seen, unseen)
    allowed = torch.cat([seen, unseen])
    out = {}
    for key, scores, labels, own in (
        ("S", scores_seen_set, labels_seen_set, seen),
        ("U", scores_unseen_set, labels_unseen_set, unseen),
    ):
        scores, labels = _check(scores, labels, allowed, f"gzsl {key}")
        best_seen, best_unseen, t = _stacking(scores, seen, unseen)
        pred = torch.where(gamma > t, best_unseen, best_seen)
        out[key] = per_class_accuracy(pred, labels, own)
    out["H"] = _harmonic(out["S"], out["U"])
    return out


def seen_unseen_curve(
    scores_seen_set: torch.Tensor,
    labels_seen_set: torch.Tensor,
    scores_unseen_set: torch.Tensor,
    labels_unseen_set: torch.Tensor,
    seen: torch.Tensor,
    unseen: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """S and U (percent) for every gamma: ``{"gamma", "S", "U"}``, 1-D float64 tensors.

    Each image's prediction switches from its best seen class to its best unseen class when gamma
    passes its threshold t (see ``_stacking``), so S and U are step functions of gamma. There is one
    point per interval between consecutive distinct thresholds, plus one below all and one above
    all (gamma = first threshold - 1 / midpoints / last threshold + 1): gamma increases, S does not
    increase (from its maximum to 0) and U does not decrease (from 0 to its maximum). Exact, in
    O(n log n).
    """
    seen, unseen = _classes(seen, unseen)
    allowed = torch.cat([seen, unseen])
    s_scores, s_labels = _check(scores_seen_set, labels_seen_set, allowed, "seen set")
    u_scores, u_labels = _check(scores_unseen_set, labels_unseen_set, allowed, "unseen set")
    s_best, _, s_t = _stacking(s_scores, seen, unseen)
    _, u_best, u_t = _stacking(u_scores, seen, unseen)
    # A seen-set image can only be right before its switch, an unseen-set image only after it.
    s_gain = _class_weights(s_labels, seen) * (s_best == s_labels)
    u_gain = _class_weights(u_labels, unseen) * (u_best == u_labels)

    tau = torch.unique(torch.cat([s_t, u_t]))  # sorted distinct thresholds, m of them
    m = tau.numel()
    s_at = torch.zeros(m, dtype=torch.float64).index_add_(0, torch.searchsorted(tau, s_t), s_gain)
    u_at = torch.zeros(m, dtype=torch.float64).index_add_(0, torch.searchsorted(tau, u_t), u_gain)
    zero = torch.zeros(1, dtype=torch.float64)
    # Interval k (k = 0..m) lies between tau[k-1] and tau[k]: images with threshold index < k have
    # switched to their unseen class.
    U = torch.cat([zero, u_at.cumsum(0)])
    S = torch.cat([s_at.flip(0).cumsum(0).flip(0), zero])
    gamma = torch.cat([tau[:1] - 1.0, (tau[1:] + tau[:-1]) / 2, tau[-1:] + 1.0])
    return {"gamma": gamma, "S": 100.0 * S, "U": 100.0 * U}


def ausuc(
    scores_seen_set: torch.Tensor,
    labels_seen_set: torch.Tensor,
    scores_unseen_set: torch.Tensor,
    labels_unseen_set: torch.Tensor,
    seen: torch.Tensor,
    unseen: torch.Tensor,
) -> float:
    """Area under the seen-unseen curve (Chao et al. 2016): S against U over all gamma, trapezoid
    rule, accuracies as fractions, times 100. Arguments as :func:`gzsl` without gamma."""
    curve = seen_unseen_curve(
        scores_seen_set, labels_seen_set, scores_unseen_set, labels_unseen_set, seen, unseen
    )
    s, u = curve["S"] / 100.0, curve["U"] / 100.0
    return 100.0 * float(torch.trapezoid(s, u))


def best_gamma(
    scores_seen_set: torch.Tensor,
    labels_seen_set: torch.Tensor,
    scores_unseen_set: torch.Tensor,
    labels_unseen_set: torch.Tensor,
    seen: torch.Tensor,
    unseen: torch.Tensor,
) -> tuple[float, dict[str, float]]:
    """The gamma maximising H on the given (validation) sets, and ``{"S", "U", "H"}`` there.

    Searches every interval where predictions differ (:func:`seen_unseen_curve`) and returns the
    interval's midpoint (the smallest such gamma on ties), so ``gzsl(..., gamma)`` reproduces the
    returned values.
    """
    curve = seen_unseen_curve(
        scores_seen_set, labels_seen_set, scores_unseen_set, labels_unseen_set, seen, unseen
    )
    s, u = curve["S"], curve["U"]
    h = torch.where(s + u > 0, 2 * s * u / (s + u).clamp_min(1e-300), torch.zeros_like(s))
    k = int(torch.argmax(h))  # first maximum
    return float(curve["gamma"][k]), {"S": float(s[k]), "U": float(u[k]), "H": float(h[k])}


def calibrated_predict(
    scores: torch.Tensor, seen: torch.Tensor, unseen: torch.Tensor, gamma: float
) -> torch.Tensor:
    """GZSL class predictions (n,) (global ids) with calibrated stacking, as :func:`gzsl` makes
    them: the best unseen class where gamma exceeds the image's threshold, else the best seen
    class. scores (n, n_classes)."""
    seen, unseen = _classes(seen, unseen)
    scores = torch.as_tensor(scores).detach().cpu()
    best_seen, best_unseen, t = _stacking(scores, seen, unseen)
    return torch.where(gamma > t, best_unseen, best_seen)
