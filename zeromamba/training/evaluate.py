"""Evaluating a checkpoint on the test splits: ours (with its stored configuration) or an
official ZeroMamba ``.pth`` (a bare state dict with ``VisionMamba.*`` / ``clf_head.*`` /
``clf_head2.*`` keys, read through ``ZeroMamba.load_official``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ..models import ZeroMamba
from . import distributed
from .checkpoint import (
    FORMAT,
    CheckpointError,
    check_checkpoint,
    check_finite_weights,
    load_file,
    load_weights,
)
from .config import DATASET_RECIPES, TrainConfig
from .config_checks import (
    check_backend,
    check_config,
    check_device,
    check_gamma,
    config_from_dict,
)


def _official_state(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state dict of an official checkpoint, or None if ``obj`` is not one."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        keys = [k.removeprefix("module.") for k in obj if isinstance(k, str)]
        if any(k.startswith("VisionMamba.") for k in keys):
            return obj
    return None


@dataclasses.dataclass
class LoadedCheckpoint:
    """A checkpoint ready to evaluate: the model (on CPU, eval mode), its dataset, the gamma to
    use, and what the checkpoint says about itself."""

    model: ZeroMamba
    data: Any  # zeromamba.data.ZeroShotData
    gamma: float
    kind: str  # "zeromamba" or "official"
    config: dict[str, Any]  # the TrainConfig fields it was built with
    epoch: int | None  # the training epoch (our checkpoints only)


def load_for_eval(
    path: str | os.PathLike,
    *,
    data: str | None = None,
    data_root: str | None = None,
    image_root: str | None = None,
    w2v_root: str | None = None,
    image_size: int | None = None,
    data_seed: int | None = None,
    model: str | None = None,
    gamma: float | None = None,
    trust_pickle: bool = False,
) -> LoadedCheckpoint:
    """Build the model of a checkpoint (ours, with its stored configuration, or an official
    ZeroMamba ``.pth`` with ``data``), load its weights and its dataset.

    gamma: the calibration; default the gamma stored with our checkpoint (its selected or fixed
    value), else the dataset's official value.
    """
    from .trainer import build_model, load_data

    given_gamma = gamma
    if gamma is not None:
        check_gamma(gamma, "--gamma")
    obj = load_file(path)
    given = {
        "data": data,
        "data_root": data_root,
        "image_root": image_root,
        "w2v_root": w2v_root,
        "image_size": image_size,
        "data_seed": data_seed,
        "trust_pickle": trust_pickle or None,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    epoch = None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        kind = "zeromamba"
        check_checkpoint(obj, path, required=("config", "model"))
        cfg = check_config(
            dataclasses.replace(
                config_from_dict(obj["config"], f"{path} (its stored config)"),
                pretrained=None,
                **overrides,
            )
        )
        dataset = load_data(cfg)
        if "slp.V" in obj["model"]:  # the trained V replaces whatever initialised it
            dataset = dataclasses.replace(dataset, word_vectors=obj["model"]["slp.V"])
        net = build_model(cfg, dataset)
        load_weights(net, obj["model"], path)
        epoch = obj.get("epoch")
        # the gamma this model was evaluated with: its own, else the run's selected one
        for source in (obj.get("metrics"), (obj.get("evals") or {}).get("best_h")):
            if gamma is None and source:
                gamma = source.get("gamma")
        if gamma is None:
            gamma = cfg.gamma
    else:
        state = _official_state(obj)
        if state is None:
            raise CheckpointError(
                f"{path} is neither a zeromamba checkpoint nor an official ZeroMamba one "
                "(no 'VisionMamba.*' keys)"
            )
        if data is None:
            raise ValueError(
                f"{path} is an official ZeroMamba checkpoint: pass --data "
                "(CUB, SUN or AWA2) and --data-root"
            )
        kind = "official"
        cfg = check_config(TrainConfig(**overrides, model=model or "small")).resolved()
        dataset = load_data(cfg)
        net = ZeroMamba(
            cfg.model,
            attributes=dataset.attributes.shape[1],
            word_vectors=dataset.word_vectors,
            grl_bias=any(k.endswith("clf_head.bias") for k in state),
        )
        check_finite_weights(state, path)
        try:
            net.load_official(state)
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"{path} does not fit ZeroMamba({cfg.model!r}) on {dataset.name}: {e}"
            ) from e
    if gamma is None:
        gamma = DATASET_RECIPES.get(dataset.name.upper(), {}).get("gamma")
    if gamma is None:
        raise ValueError(f"{path}: no gamma stored for {dataset.name}; pass --gamma")
    check_gamma(gamma, f"the gamma of {path}" if given_gamma is None else "--gamma")
    return LoadedCheckpoint(net.eval(), dataset, float(gamma), kind, cfg.to_dict(), epoch)


def evaluate_checkpoint(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    batch_size: int = 128,
    backend: str | None = None,
    progress: bool | None = None,
    baseline: bool = False,
    **load_options: Any,
) -> dict[str, Any]:
    """CZSL, S, U, H, AUSUC (percent) of a checkpoint on its dataset's test splits.

    load_options: the keyword arguments of :func:`load_for_eval` (data, data_root, image_root,
    w2v_root, image_size, data_seed, model, gamma, trust_pickle). Returns the metrics plus
    ``dataset``, ``checkpoint_kind`` ("zeromamba" or "official"), ``n_unseen``; with
    ``baseline=True`` also ``baseline``: ESZSL on pixels and on this checkpoint's pooled backbone
    features, chosen on the validation split as in a training run (:mod:`zeromamba.baselines`).
    """
    from ..data.transforms import eval_transform
    from .scoring import predict_sets, test_sets, zero_shot_metrics

    check_device(device, "--device")
    if backend is not None:
        check_backend(backend, device, "--backend")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    loaded = load_for_eval(path, **load_options)
    net, dataset, gamma, kind = loaded.model, loaded.data, loaded.gamma, loaded.kind
    if backend is not None:
        net.set_backend(backend)
    env = distributed.DistEnv(0, 1, 0, distributed.pick_device(device))
    net = net.to(env.device)
    sets = test_sets(dataset, eval_transform(dataset.image_size))
    p_seen, p_unseen = predict_sets(net, sets, env, batch_size, True, progress)
    metrics = zero_shot_metrics(p_seen, p_unseen, sets, dataset.attributes, float(gamma))
    out = {
        "dataset": dataset.name,
        "checkpoint": str(path),
        "checkpoint_kind": kind,
        "n_unseen": len(dataset.unseen),
        **metrics,
    }
    if baseline:
        from ..baselines import run_baselines

        models = {"val": net, "test": net}
        out["baseline"] = run_baselines(
            dataset,
            loaded.config["holdout_fraction"],
            loaded.config["seed"],
            models,
            env.device,
            batch_size,
        )
    return out
