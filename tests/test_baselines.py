"""ESZSL against its closed form and its objective; the in-run protocol on a tiny task."""

from __future__ import annotations

import pytest
import torch

from zeromamba.baselines import EszslFit, FeatureScaler, ZslTask, class_indicators, eszsl_protocol


def _problem(m: int, d: int, z: int = 4, a: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    labels = torch.arange(m) % z
    att = torch.rand(z + 2, a, generator=g, dtype=torch.float64)  # 2 extra (unseen) classes
    return x, labels, att


def _objective(v, x, y, s, alpha, beta):
    return (
        ((x @ v @ s.T - y) ** 2).sum()
        + alpha * ((v @ s.T) ** 2).sum()
        + beta * ((x @ v) ** 2).sum()
        + alpha * beta * (v**2).sum()
    )


@pytest.mark.parametrize("m,d", [(30, 5), (12, 40)])  # more images than dims, and fewer
@pytest.mark.parametrize("alpha,beta", [(1e-3, 1.0), (10.0, 1e-2)])
def test_eszsl_matches_closed_form(m, d, alpha, beta):
    x, labels, att = _problem(m, d)
    seen = torch.arange(4)
    y, s = class_indicators(labels, seen), att[seen]
    eye_d, eye_a = torch.eye(d, dtype=torch.float64), torch.eye(s.shape[1], dtype=torch.float64)
    expected = torch.linalg.solve(x.T @ x + alpha * eye_d, x.T @ y @ s) @ torch.linalg.inv(
        s.T @ s + beta * eye_a
    )
    fit = EszslFit(x, labels, att, seen)
    v = fit.weights(alpha, beta)
    torch.testing.assert_close(v, expected, rtol=1e-8, atol=1e-10)
    # the minimiser: the objective's gradient vanishes there
    v = v.clone().requires_grad_(True)
    _objective(v, x, y, s, alpha, beta).backward()
    assert v.grad.abs().max() < 1e-8 * (1 + expected.abs().max())
    # projected prediction == x V
    xt = torch.randn(7, d, dtype=torch.float64)
    torch.testing.assert_close(
        fit.project(xt).predict(alpha, beta), (xt @ expected).float(), rtol=1e-5, atol=1e-6
    )


def test_eszsl_refuses_bad_input():
    x, labels, att = _problem(10, 3)
    with pytest.raises(ValueError, match="m = 10 labels"):
        EszslFit(x[:5], labels, att)
    with pytest.raises(ValueError, match="not among the training classes"):
        class_indicators(torch.tensor([0, 9]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="alpha > 0"):
        EszslFit(x, labels, att).weights(0.0, 1.0)


def test_feature_scaler_centres_and_normalises():
    x = torch.randn(50, 8) * 5 + 3
    z = FeatureScaler.fit(x)(x)
    assert z.mean(0).abs().max() < 1e-9
    assert abs(float((z**2).sum(1).mean()) - 1.0) < 1e-9


class _Items(torch.utils.data.Dataset):
    """(feature vector, label) items: the features stand in for images."""

    def __init__(self, x, labels):
        self.x, self.labels = x, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


def _linear_task(seed: int):
    """Images whose features are a fixed linear map of their class's attributes plus noise:
    ESZSL's model, so it must beat chance by far on unseen classes."""
    g = torch.Generator().manual_seed(seed)
    n_classes, a, d = 12, 8, 20
    att = (torch.rand(n_classes, a, generator=g) > 0.5).float() + 0.05
    att = torch.nn.functional.normalize(att, dim=1)
    mix = torch.randn(a, d, generator=g)

    def draw(classes, per):
        labels = torch.tensor(classes).repeat_interleave(per)
        return att[labels] @ mix + 0.05 * torch.randn(len(labels), d, generator=g), labels

    def task(train_c, unseen_c):
        xt, lt = draw(train_c, 20)
        xh, lh = draw(train_c, 5)
        xu, lu = draw(unseen_c, 10)
        return ZslTask(
            _Items(xt, lt),
            lt,
            _Items(xh, lh),
            lh,
            _Items(xu, lu),
            lu,
            _Items(xh, lh),
            lh,
            torch.tensor(train_c),
            torch.tensor(unseen_c),
        )

    return att, task(list(range(6)), [6, 7]), task(list(range(8)), [8, 9, 10, 11])


def test_eszsl_protocol_learns_and_reports_its_choices():
    att, val, test = _linear_task(0)
    seen_by = []

    def features(name, dataset):
        seen_by.append(name)
        return dataset.x

    out = eszsl_protocol(features, val, test, att)
    assert set(out) == {"czsl", "S", "U", "H", "ausuc", "gamma", "hyper"}
    assert out["czsl"] > 60.0  # chance is 25
    assert out["H"] > 50.0
    assert set(out["hyper"]) >= {"alpha_czsl", "beta_czsl", "alpha_h", "beta_h", "val_typical"}
    assert seen_by[:3] == ["val"] * 3 and set(seen_by[3:]) == {"test"}
