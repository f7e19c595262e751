"""The GZSL calibration rule: median switching thresholds and the transfer of gamma between
tasks and models (zeromamba/calibration.py)."""

from __future__ import annotations

import pytest
import torch

from zeromamba import calibration, evaluation


def test_thresholds_match_calibrated_stacking():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(40, 7, generator=g) * 3
    seen, unseen = torch.tensor([0, 2, 3, 5]), torch.tensor([1, 4, 6])
    t = calibration.thresholds(scores, seen, unseen)
    for gamma in (-0.5, 0.0, 0.2, 0.6):
        # gzsl's U counts images predicted as their best unseen class: exactly those with t < gamma
        p = torch.softmax(scores.double(), 1)
        p[:, seen] -= gamma
        switched = torch.isin(p.argmax(1), unseen)
        assert torch.equal(switched, t < gamma)
        assert calibration.switched_fraction(gamma, t) == pytest.approx(
            float(switched.double().mean())
        )


def test_typical_threshold_is_the_median_and_ignores_a_tail():
    t = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3], dtype=torch.float64)
    assert calibration.typical_threshold(t) == pytest.approx(0.5)
    tail = torch.cat([t, torch.full((2,), -0.9, dtype=torch.float64)])  # two look-alikes
    assert calibration.typical_threshold(tail) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        calibration.typical_threshold(torch.empty(0))


def test_transfer_gamma_scales_clamps_and_falls_back():
    assert calibration.transfer_gamma(0.2, 0.4, 0.6) == pytest.approx(0.3)
    assert calibration.transfer_gamma(-0.1, 0.5, 0.25) == pytest.approx(-0.05)
    assert calibration.transfer_gamma(0.8, 0.2, 0.9) == 1.0  # clamped to the useful range
    # a model that sends most seen images to unseen classes: no scale, the validation gamma
    assert calibration.transfer_gamma(0.2, 0.4, -0.1) == 0.2
    assert calibration.transfer_gamma(0.2, 0.0, 0.5) == 0.2
    with pytest.raises(ValueError, match="gamma_val must be finite"):
        calibration.transfer_gamma(float("nan"), 0.4, 0.5)
    with pytest.raises(ValueError, match="typical_final must be finite"):
        calibration.transfer_gamma(0.2, 0.4, float("inf"))


def _task(n_seen, n_unseen, per_class, temperature, seed, lookalikes=0, seen_margin=3.0):
    """Scores of a model that ranks the true class first with some noise, sharper on seen classes
    (trained on them) than on unseen ones: the usual seen-class bias of zero-shot models. The
    first ``lookalikes`` seen classes resemble unseen class k: their images also score high
    there (as the seen digit 8 and the unseen 9)."""
    g = torch.Generator().manual_seed(seed)
    n = n_seen + n_unseen
    seen, unseen = torch.arange(n_seen), torch.arange(n_seen, n)

    def scores(classes, margin):
        labels = classes.repeat_interleave(per_class)
        s = torch.randn(len(labels), n, generator=g)
        s[:, seen] += 1.0  # bias towards seen classes
        s[torch.arange(len(labels)), labels] += margin
        for k in range(lookalikes):
            s[labels == k, unseen[k]] += margin + 0.5
        return s * temperature, labels

    s_seen, l_seen = scores(seen, seen_margin)
    s_unseen, l_unseen = scores(unseen, 2.0)
    return (s_seen, l_seen, s_unseen, l_unseen, seen, unseen)


def _rules(val, held, test):
    """Test H of the absolute validation gamma, the switch-rate rule and the median rule."""
    gamma_val, _ = evaluation.best_gamma(*val)
    t_val = calibration.thresholds(val[0], val[4], val[5])
    t_held = calibration.thresholds(held[0], held[4], held[5])
    # the switch-rate rule: move the same fraction of held-out seen images (a quantile)
    q = calibration.switched_fraction(gamma_val, t_val)
    gamma_rate = float(torch.quantile(t_held, q))
    gamma_median = calibration.transfer_gamma(
        gamma_val, calibration.typical_threshold(t_val), calibration.typical_threshold(t_held)
    )
    _, oracle = evaluation.best_gamma(*test)
    return {
        "absolute": evaluation.gzsl(*test, gamma_val),
        "rate": evaluation.gzsl(*test, gamma_rate),
        "median": evaluation.gzsl(*test, gamma_median),
        "oracle": oracle,
    }


def test_median_rule_transfers_to_a_sharper_model_where_an_absolute_gamma_does_not():
    # validation: few classes, a mildly confident model; test: more classes, a sharper model;
    # the final model's held-out seen images: a fresh draw of the same seen classes
    r = _rules(_task(14, 4, 30, 1.0, 0), _task(18, 6, 30, 2.5, 2), _task(18, 6, 30, 2.5, 1))
    assert r["median"]["H"] > r["absolute"]["H"] + 5.0
    assert r["median"]["H"] > 0.9 * r["oracle"]["H"]
    assert r["median"]["S"] > 20.0  # S does not collapse


def test_median_rule_survives_look_alike_classes_that_break_the_switch_rate():
    # the test task has seen classes resembling unseen ones, validation had none: the look-alike
    # images fill the low tail of thresholds, a small switch rate lands there and U collapses
    # a model that keeps seen images well apart (validation switch rate ~5%)
    val = _task(14, 4, 30, 1.0, 0, seen_margin=4.0)
    held = _task(18, 6, 30, 1.0, 2, lookalikes=3, seen_margin=4.0)
    test = _task(18, 6, 30, 1.0, 1, lookalikes=3, seen_margin=4.0)
    r = _rules(val, held, test)
    assert r["rate"]["U"] < 20.0  # the failure the median rule replaces
    assert r["median"]["H"] > r["rate"]["H"] + 30.0
    assert r["median"]["H"] > 0.9 * r["oracle"]["H"]
    assert r["median"]["U"] > 50.0  # U does not collapse
