"""Which recipe a run gets: the official one, or a from-scratch one sized to the data and device.

* CUB, SUN, AWA2, and any data trained with ``--pretrained``: the official ZeroMamba recipe
  (:mod:`zeromamba.training.config`), meant for ImageNet-initialised VMamba-S at 448 px on GPUs.
* The built-in dataset: ``BUILTIN_RECIPE``.
* A folder trained without ``--pretrained``: :func:`from_scratch_recipe`. Without ImageNet
  weights a large backbone on a few thousand images learns nothing that transfers to unseen
  classes, and on a CPU it would run for hours. The small recipe that works on the built-in data
  (chosen on its validation split and a real-image one, with the moving average of the weights
  evaluated) is scaled instead: the nano backbone, images of 32 px (64 px
  when the images are larger than 48 px; up to 96 px on a GPU), and as many epochs as a budget
  of image passes allows (about 2-4 minutes per stage on a 2-core CPU), between 6 and 30.

Values given explicitly (``--model``, ``--epochs``, ...) always win; the chosen recipe and the
reason are printed at the start of the run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from .config import BUILTIN_RECIPE, DATASET_RECIPES, TrainConfig

# image passes per stage at 32 px (cost grows with the pixel count): ~25 epochs of the built-in
# data's 1000 training images on CPU (minutes), more on a GPU (modeled, not measured)
PASS_BUDGET = {"cpu": 25_000, "cuda": 400_000}
EPOCH_RANGE = (6, 30)


def from_scratch_recipe(n_train: int, native_side: int, device_type: str) -> tuple[dict, str]:
    """The recipe values for ``n_train`` training images whose shorter side is ``native_side``
    pixels, on a ``device_type`` ("cpu" or "cuda") device, and a sentence saying why."""
    if n_train < 1 or native_side < 1:
        raise ValueError(f"need n_train >= 1 and native_side >= 1, got {n_train}, {native_side}")
    kind = "cuda" if device_type == "cuda" else "cpu"
    if native_side <= 48:
        size = 32
    elif kind == "cuda" and native_side >= 128:
        size = 96
    else:
        size = 64
    budget = PASS_BUDGET[kind] * (32 / size) ** 2
    epochs = int(min(max(round(budget / n_train), EPOCH_RANGE[0]), EPOCH_RANGE[1]))
    recipe = dict(BUILTIN_RECIPE)
    recipe.update(
        image_size=size,
        epochs=epochs,
        milestones=(round(0.6 * epochs), round(0.8 * epochs)),
    )
    if kind == "cuda":
        recipe["threads"] = None
    why = (
        f"from scratch (no --pretrained): the small recipe sized to {n_train} training images "
        f"of {native_side} px on {kind} (a run of minutes; --pretrained gives the official "
        "recipe)"
    )
    return recipe, why


def _device_type(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def is_from_scratch_folder(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` trains folder data without ImageNet weights."""
    return (
        not cfg.pretrained
        and cfg.data.lower() != "builtin"
        and cfg.data.upper() not in DATASET_RECIPES
        and os.path.isdir(cfg.data)
    )


def choose(cfg: TrainConfig, say: Callable[[str], None] = print) -> TrainConfig:
    """``cfg`` with the from-scratch recipe filled into its unset fields when it trains folder
    data without ``--pretrained`` (sized to the data and device); unchanged otherwise. Says
    which recipe the run gets and why."""
    out, why = cfg, None
    if is_from_scratch_folder(cfg):
        from ..data.core import decode_image
        from ..data.folder import load_folder

        train = load_folder(cfg.data, image_size=32).splits["trainval"]
        side = int(min(decode_image(train.files[0]).shape[-2:]))
        values, why = from_scratch_recipe(len(train), side, _device_type(cfg.device))
        out = dataclasses.replace(cfg)
        for key, value in values.items():
            if getattr(out, key) is None:
                setattr(out, key, value)
    r = out.resolved()
    if why is None:
        if cfg.data.lower() == "builtin":
            why = "the built-in from-scratch recipe"
        elif cfg.pretrained:
            why = "the official ZeroMamba recipe (ImageNet weights given)"
        else:
            why = "the official ZeroMamba recipe"
    size = r.image_size or "the loader's default"
    say(
        f"recipe: {why}; in effect: model {r.model}, {size} px, "
        f"{r.epochs} epochs, batch {r.batch_size}, lr {r.lr_backbone}/{r.lr_grl}/{r.lr_mlp}, "
        f"milestones {list(r.milestones)}, lambda_L1 {r.lambda_l1}, weight average over "
        f"{r.average_epochs:g} epochs, greyscale copies {r.grayscale:g}"
    )
    return out
