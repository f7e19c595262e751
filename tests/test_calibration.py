"""The GZSL calibration rule: switch rates, their inverse, and transfer between label spaces."""

from __future__ import annotations

import pytest
import torch

from zeromamba import calibration, evaluation


def test_gamma_for_fraction_inverts_switched_fraction():
    t = torch.randn(101, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for q in (0.0, 0.1, 0.37, 0.5, 0.99, 1.0):
        g = calibration.gamma_for_fraction(q, t)
        assert calibration.switched_fraction(g, t) == pytest.approx(round(q * 101) / 101)
    with pytest.raises(ValueError, match="q must be a fraction"):
        calibration.gamma_for_fraction(1.5, t)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        calibration.switched_fraction(0.1, torch.empty(0))


def test_thresholds_match_calibrated_stacking():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(40, 7, generator=g) * 3
    seen, unseen = torch.tensor([0, 2, 3, 5]), torch.tensor([1, 4, 6])
    t = calibration.thresholds(scores, seen, unseen)
    labels = scores[:, unseen].argmax(1)
    for gamma in (-0.5, 0.0, 0.2, 0.6):
        # gzsl's U counts images predicted as their best unseen class: exactly those with t < gamma
        p = torch.softmax(scores.double(), 1)
        p[:, seen] -= gamma
        switched = torch.isin(p.argmax(1), unseen)
        assert torch.equal(switched, t < gamma)
    assert labels.numel() == t.numel()


def _task(n_seen, n_unseen, per_class, temperature, seed):
    """Scores of a model that ranks the true class first with some noise, sharper on seen classes
    (trained on them) than on unseen ones: the usual seen-class bias of zero-shot models."""
    g = torch.Generator().manual_seed(seed)
    n = n_seen + n_unseen
    seen, unseen = torch.arange(n_seen), torch.arange(n_seen, n)

    def scores(classes, margin):
        labels = classes.repeat_interleave(per_class)
        s = torch.randn(len(labels), n, generator=g)
        s[:, seen] += 1.0  # bias towards seen classes
        s[torch.arange(len(labels)), labels] += margin
        return s * temperature, labels

    s_seen, l_seen = scores(seen, 3.0)
    s_unseen, l_unseen = scores(unseen, 2.0)
    return (s_seen, l_seen, s_unseen, l_unseen, seen, unseen)


def test_switch_rate_transfers_where_an_absolute_gamma_does_not():
    # validation: few classes, a mildly confident model; test: more classes, a sharper model
    val = _task(14, 4, 30, 1.0, 0)
    test = _task(18, 6, 30, 2.5, 1)
    gamma_val, _ = evaluation.best_gamma(*val)
    q = calibration.switched_fraction(gamma_val, calibration.thresholds(val[0], val[4], val[5]))
    # the final model's held-out seen images: a fresh draw of the same seen classes
    held = _task(18, 6, 30, 2.5, 2)
    gamma_rule = calibration.gamma_for_fraction(
        q, calibration.thresholds(held[0], held[4], held[5])
    )
    absolute = evaluation.gzsl(*test, gamma_val)
    rule = evaluation.gzsl(*test, gamma_rule)
    _, oracle = evaluation.best_gamma(*test)
    assert rule["H"] > absolute["H"] + 5.0
    assert rule["H"] > 0.9 * oracle["H"]
    assert rule["S"] > 20.0  # S does not collapse
