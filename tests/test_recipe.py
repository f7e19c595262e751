"""Which recipe a run gets: official for the benchmarks and with --pretrained, from scratch and
sized to the data for folder data without ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_training import write_folder_dataset

from zeromamba.training import TrainConfig, recipe
from zeromamba.training.config import BUILTIN_RECIPE


def test_from_scratch_recipe_scales_with_data_and_device():
    small, why = recipe.from_scratch_recipe(1000, 28, "cpu")
    assert small["model"] == "nano" and small["image_size"] == 32
    assert small["epochs"] == 25 and small["milestones"] == (15, 20)
    assert "1000 training images" in why and "--pretrained" in why
    big, _ = recipe.from_scratch_recipe(5000, 300, "cpu")
    assert big["image_size"] == 64 and big["epochs"] == recipe.EPOCH_RANGE[0]
    gpu, _ = recipe.from_scratch_recipe(5000, 300, "cuda")
    assert gpu["image_size"] == 96 and gpu["epochs"] > big["epochs"] and gpu["threads"] is None
    tiny, _ = recipe.from_scratch_recipe(50, 32, "cpu")
    assert tiny["epochs"] == recipe.EPOCH_RANGE[1]
    with pytest.raises(ValueError, match="n_train"):
        recipe.from_scratch_recipe(0, 32, "cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("data") / "tiny")


def test_choose_gives_folder_data_the_small_recipe_and_says_so(folder):
    said = []
    cfg = recipe.choose(TrainConfig(data=str(folder), device="cpu"), said.append)
    assert cfg.model == "nano" and cfg.image_size == 32 and cfg.threads == 1
    assert "from scratch" in said[0] and "model nano" in said[0]
    # the built-in recipe's choices carry over, the weight average included
    assert cfg.lambda_l1 == BUILTIN_RECIPE["lambda_l1"]
    assert cfg.average_epochs == BUILTIN_RECIPE["average_epochs"] > 0
    assert "weight average over 2 epochs" in said[0]
    # greyscale copies (chosen on the built-in validation task) carry over too, and are said
    assert cfg.grayscale == BUILTIN_RECIPE["grayscale"] > 0
    assert f"greyscale copies {BUILTIN_RECIPE['grayscale']:g}" in said[0]
    # explicit values win
    cfg = recipe.choose(TrainConfig(data=str(folder), device="cpu", epochs=3), said.append)
    assert cfg.epochs == 3 and cfg.model == "nano"


def test_choose_keeps_the_official_recipe_with_pretrained_weights(folder):
    said = []
    cfg = recipe.choose(TrainConfig(data=str(folder), pretrained="w.pth"), said.append)
    assert cfg.model is None and cfg.resolved().model == "small"
    assert cfg.resolved().average_epochs == 0  # the official recipe evaluates the raw weights
    assert cfg.resolved().grayscale == 0  # and shows the images as they are
    assert "official" in said[0]
    cfg = recipe.choose(TrainConfig(), said.append)
    assert cfg.resolved().epochs == BUILTIN_RECIPE["epochs"] and "built-in" in said[-1]
