"""Zero-shot metrics against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from zeromamba import evaluation as ev


def test_per_class_accuracy_weights_classes_equally():
    # class 0: 2 of 3 right, class 1: 2 of 2, class 2: 1 of 1 -> (2/3 + 1 + 1) / 3 = 8/9,
    # while the plain accuracy would be 5/6. The label-7 sample is not in `classes`: ignored.
    pred = torch.tensor([0, 0, 1, 1, 1, 2, 0])
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 7])
    assert ev.per_class_accuracy(pred, labels, torch.tensor([2, 0, 1])) == pytest.approx(800 / 9)


def test_per_class_accuracy_refuses_empty_class():
    with pytest.raises(ValueError, match=r"\[3\]"):
        ev.per_class_accuracy(torch.tensor([0]), torch.tensor([0]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="no classes"):
        ev.czsl(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([], dtype=torch.long))


def test_czsl_classifies_among_unseen_only():
    unseen = torch.tensor([3, 2])
    scores = torch.tensor(
        [
            [9.0, 0, 2, 1],  # label 2: best unseen 2 (the seen 0 is ignored) -> right
            [0.0, 9, 1, 2],  # label 2: best unseen 3 -> wrong
            [5.0, 5, 0, 3],  # label 3: -> right
            [0.0, 0, 1, 0],  # label 3: best unseen 2 -> wrong
            [0.0, 0, 0, 4],  # label 3: -> right
        ]
    )
    labels = torch.tensor([2, 2, 3, 3, 3])
    # class 2: 1/2, class 3: 2/3 -> (1/2 + 2/3) / 2 = 7/12
    assert ev.czsl(scores, labels, unseen) == pytest.approx(700 / 12)
    with pytest.raises(ValueError, match="not among"):
        ev.czsl(scores, torch.tensor([2, 2, 3, 3, 0]), unseen)


# Seen classes {0, 1}, unseen {2}. Scores are log-probabilities, so the softmax gives back p.
# t = p(best seen) - p(best unseen); calibrated stacking predicts the unseen class iff gamma > t.
P_SEEN_SET = [
    [0.5, 0.2, 0.3],  # a, label 0: best seen 0 (right), t = 0.2
    [0.1, 0.6, 0.3],  # b, label 0: best seen 1 (wrong), t = 0.3, never right
    [0.2, 0.45, 0.35],  # c, label 1: best seen 1 (right), t = 0.1
]
P_UNSEEN_SET = [
    [0.35, 0.2, 0.45],  # d, label 2: t = -0.1
    [0.7, 0.1, 0.2],  # e, label 2: t = 0.5
    [0.3, 0.25, 0.45],  # f, label 2: t = -0.15
]


def _sets():
    return (
        torch.tensor(P_SEEN_SET).log(),
        torch.tensor([0, 0, 1]),
        torch.tensor(P_UNSEEN_SET).log(),
        torch.tensor([2, 2, 2]),
        torch.tensor([0, 1]),
        torch.tensor([2]),
    )


@pytest.mark.parametrize(
    "gamma, S, U",
    [
        # gamma 0: a, c right (class 0: 1/2, class 1: 1) -> S = 3/4; d, f switched -> U = 2/3
        (0.0, 3 / 4, 2 / 3),
        # gamma 0.15: c switched too -> S = (1/2 + 0) / 2 = 1/4; U = 2/3
        (0.15, 1 / 4, 2 / 3),
        # gamma -1: nothing switched -> S = 3/4, U = 0
        (-1.0, 3 / 4, 0.0),
        # gamma 0.6: everything switched -> S = 0, U = 1
        (0.6, 0.0, 1.0),
    ],
)
def test_gzsl_calibrated_stacking(gamma, S, U):
    out = ev.gzsl(*_sets(), gamma)
    H = 0.0 if S + U == 0 else 2 * S * U / (S + U)  # gamma 0: 12/17, gamma 0.15: 4/11
    assert out == pytest.approx({"S": 100 * S, "U": 100 * U, "H": 100 * H})


def test_seen_unseen_curve_ausuc_and_best_gamma():
    # Sorted thresholds -0.15 (f), -0.1 (d), 0.1 (c), 0.2 (a), 0.3 (b), 0.5 (e); per interval:
    # (U, S) = (0, 3/4) (1/3, 3/4) (2/3, 3/4) (2/3, 1/4) (2/3, 0) (2/3, 0) (1, 0).
    curve = ev.seen_unseen_curve(*_sets())
    assert curve["U"].tolist() == pytest.approx(
        [0, 100 / 3, 200 / 3, 200 / 3, 200 / 3, 200 / 3, 100]
    )
    assert curve["S"].tolist() == pytest.approx([75, 75, 75, 25, 0, 0, 0])
    assert curve["gamma"].tolist() == pytest.approx([-1.15, -0.125, 0.0, 0.15, 0.25, 0.4, 1.5])
    # Trapezoids: 1/3 * 3/4 + 1/3 * 3/4 + 0 (vertical drops) + 1/3 * 0 = 1/2 of the unit square.
    assert ev.ausuc(*_sets()) == pytest.approx(50.0)
    # H per interval: 0, 6/13, 12/17, 4/11, 0, 0, 0 -> the third, gamma = midpoint of (-0.1, 0.1).
    gamma, out = ev.best_gamma(*_sets())
    assert gamma == pytest.approx(0.0, abs=1e-12)
    assert out == pytest.approx({"S": 75.0, "U": 200 / 3, "H": 1200 / 17})
    assert ev.gzsl(*_sets(), gamma) == pytest.approx(out)


def _official_gzsl(scores, labels, seen, gamma):
    """The official computation, written out in numpy: softmax over all classes, minus gamma on
    the seen ones, argmax, mean per-class accuracy."""
    z = scores - scores.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p[:, seen] -= gamma
    pred = p.argmax(1)
    return 100 * np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)])


def test_gzsl_matches_official_and_curve_matches_gzsl():
    g = torch.Generator().manual_seed(0)
    n_classes, seen, unseen = 7, torch.tensor([0, 2, 3, 5]), torch.tensor([1, 4, 6])
    s_scores = 2 * torch.randn(40, n_classes, generator=g, dtype=torch.float64)
    u_scores = 2 * torch.randn(30, n_classes, generator=g, dtype=torch.float64)
    s_labels = seen[torch.arange(40) % 4]
    u_labels = unseen[torch.arange(30) % 3]
    s_scores[torch.arange(40), s_labels] += 2  # some signal, so accuracies are not trivial
    u_scores[torch.arange(30), u_labels] += 2
    sets = (s_scores, s_labels, u_scores, u_labels, seen, unseen)
    for gamma in (-0.3, 0.0, 0.1, 0.37, 0.8):
        out = ev.gzsl(*sets, gamma)
        assert out["S"] == pytest.approx(
            _official_gzsl(s_scores.numpy(), s_labels.numpy(), seen.numpy(), gamma)
        )
        assert out["U"] == pytest.approx(
            _official_gzsl(u_scores.numpy(), u_labels.numpy(), seen.numpy(), gamma)
        )
    curve = ev.seen_unseen_curve(*sets)
    assert bool((curve["S"].diff() <= 0).all()) and bool((curve["U"].diff() >= 0).all())
    assert curve["U"][0] == 0 and curve["S"][-1] == 0
    for k in range(0, len(curve["gamma"]), 7):
        out = ev.gzsl(*sets, float(curve["gamma"][k]))
        assert (out["S"], out["U"]) == pytest.approx((float(curve["S"][k]), float(curve["U"][k])))
    area = ev.ausuc(*sets)
    assert 0 < area < 100
    gamma, best = ev.best_gamma(*sets)
    h = [2 * a * b / (a + b) if a + b else 0.0 for a, b in zip(curve["S"], curve["U"])]
    assert best["H"] == pytest.approx(float(max(h))) and math.isfinite(gamma)
    assert ev.gzsl(*sets, gamma) == pytest.approx(best)


def test_gzsl_refuses_bad_inputs():
    s, sl, u, ul, seen, unseen = _sets()
    with pytest.raises(ValueError, match="overlap"):
        ev.gzsl(s, sl, u, ul, torch.tensor([0, 1]), torch.tensor([1, 2]), 0.0)
    with pytest.raises(ValueError, match="labels"):
        ev.gzsl(s, sl[:2], u, ul, seen, unseen, 0.0)
    with pytest.raises(ValueError, match="not among"):
        ev.ausuc(s, torch.tensor([0, 0, 5]), u, ul, seen, unseen)


def test_seen_only_is_the_ceiling_of_s_over_gamma():
    from zeromamba.training.scoring import EvalSets, zero_shot_metrics

    class _Split:
        def __init__(self, labels):
            self.labels = torch.tensor(labels)

    # classes 0, 1 seen, 2 unseen; attributes are one-hot, so the scores are the predictions
    att = torch.eye(3)
    pred_seen = torch.tensor(
        [
            [0.9, 0.1, 0.8],  # label 0: right among seen, unseen 2 close behind
            [0.2, 0.7, 0.9],  # label 1: right among seen, unseen 2 ahead
            [0.6, 0.5, 0.0],  # label 1: wrong among seen
        ]
    )
    pred_unseen = torch.tensor([[0.1, 0.2, 0.9]])
    sets = EvalSets("val", _Split([0, 1, 1]), _Split([2]), torch.tensor([0, 1]), torch.tensor([2]))
    # class 0: 1/1, class 1: 1/2 -> 75%, whatever gamma does
    for gamma in (-5.0, 0.0, 0.05, None):
        m = zero_shot_metrics(pred_seen, pred_unseen, sets, att, gamma)
        assert m["seen_only"] == pytest.approx(75.0)
        assert m["S"] <= m["seen_only"] + 1e-9
    assert zero_shot_metrics(pred_seen, pred_unseen, sets, att, -5.0)["S"] == pytest.approx(75.0)
    # at gamma 0 the second image goes to the unseen class: S drops below the ceiling
    assert zero_shot_metrics(pred_seen, pred_unseen, sets, att, 0.0)["S"] == pytest.approx(50.0)
