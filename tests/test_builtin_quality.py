"""The built-in run's quality targets, end to end (slow: the default recipe, both stages, about
3 minutes of CPU time on one thread; run with ``-m slow``)."""

from __future__ import annotations

import pytest

from zeromamba.training import TrainConfig, train


@pytest.mark.slow
def test_builtin_default_recipe_meets_its_targets_and_beats_the_baseline(tmp_path):
    r = train(TrainConfig(seed=0, progress=False), tmp_path / "run", say=lambda _msg: None)
    # validation selection, the default recipe: CZSL >= 70 and H >= 40 (README table, seed 0)
    assert r["select"] == "val" and r["n_unseen"] == 6
    assert r["czsl"] >= 70 and r["H"] >= 40
    # above ESZSL on raw pixels, fitted in the same run with the same protocol
    pixels = r["baseline"]["eszsl_pixels"]
    assert r["czsl"] > pixels["czsl"] and r["H"] > pixels["H"]
    # S never exceeds its ceiling, the seen images among the seen classes alone
    assert r["S"] <= r["seen_only"] + 1e-9
