"""Validation of a :class:`TrainConfig`, from the command line or a stored ``config.json``.

Every value is checked for its type and range before anything runs; nothing is silently
replaced (``--threads 0`` is refused, not "all threads"). A refusal is a :class:`ConfigError`
naming the option (``--lr-backbone``) or, for a stored configuration, the file and key, with the
bad value and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from .config import SELECTIONS, TrainConfig


class ConfigError(ValueError):
    """An option or stored configuration value that cannot be used."""


# TrainConfig field -> command-line option, where they differ by more than "_" -> "-".
_FLAGS = {
    "num_workers": "--workers",
    "amp": "--no-amp",
    "progress": "--progress/--no-progress",
    "trust_pickle": "--trust-pickle",
}
_INT = (int,)
_NUM = (int, float)


def flag(field: str) -> str:
    """The command-line option of a TrainConfig field."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def _name(field: str, source: str | None) -> str:
    return flag(field) if source is None else f"{source}: key {field!r}"


def _is(value: Any, types: tuple) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def _number(v, name, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    kind = "an integer" if integer else "a number"
    if not _is(v, _INT if integer else _NUM) or (not integer and not math.isfinite(v)):
        raise ConfigError(f"{name} must be {kind}{_range(lo, hi, lo_open, hi_open)}, got {v!r}")
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if below or above:
        raise ConfigError(f"{name} must be {kind}{_range(lo, hi, lo_open, hi_open)}, got {v!r}")


def _range(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return " (finite)"


def check_gamma(gamma: Any, name: str = "--gamma") -> None:
    """Calibrated stacking subtracts gamma from a difference of probabilities: finite, in
    [-1, 1] (beyond that every prediction is the same as at the bound)."""
    _number(gamma, name, lo=-1, hi=1)


def check_config(cfg: TrainConfig, source: str | None = None) -> TrainConfig:
    """Refuses any field of ``cfg`` of the wrong type or out of range (``None`` recipe fields
    are fine: the dataset's recipe fills them). ``source``: the config file the values came
    from (messages name its keys), or None for command-line options. Returns ``cfg``."""

    def n(field):
        return _name(field, source)

    for field in ("data", "select", "device"):
        v = getattr(cfg, field)
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{n(field)} must be a non-empty string, got {v!r}")
    for field in ("data_root", "w2v_root", "image_root", "pretrained", "model"):
        v = getattr(cfg, field)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{n(field)} must be a string, got {v!r}")
    for field in ("amp", "trust_pickle"):
        if not isinstance(getattr(cfg, field), bool):
            raise ConfigError(f"{n(field)} must be true or false, got {getattr(cfg, field)!r}")
    if cfg.progress is not None and not isinstance(cfg.progress, bool):
        raise ConfigError(f"{n('progress')} must be true, false or null, got {cfg.progress!r}")
    if cfg.select not in SELECTIONS:
        raise ConfigError(f"{n('select')} must be one of {SELECTIONS}, got {cfg.select!r}")
    from ..data import WORD_VECTORS

    if cfg.word_vectors not in WORD_VECTORS:
        raise ConfigError(
            f"{n('word_vectors')} must be one of {WORD_VECTORS}, got {cfg.word_vectors!r}"
        )
    from ..models import CONFIGS

    if cfg.model is not None and cfg.model not in CONFIGS:
        raise ConfigError(f"{n('model')} must be one of {sorted(CONFIGS)}, got {cfg.model!r}")
    for field in ("seed", "data_seed"):
        _number(getattr(cfg, field), n(field), lo=0, hi=2**63 - 1, integer=True)
    optional_ints = {"image_size": 32, "epochs": 1, "batch_size": 1, "threads": 1}
    for field, lo in optional_ints.items():
        if getattr(cfg, field) is not None:
            _number(getattr(cfg, field), n(field), lo=lo, hi=1_000_000, integer=True)
    _number(cfg.eval_batch_size, n("eval_batch_size"), lo=1, hi=1_000_000, integer=True)
    _number(cfg.num_workers, n("num_workers"), lo=0, hi=1024, integer=True)
    for field in ("lr_backbone", "lr_grl", "lr_mlp", "lambda_l1"):
        if getattr(cfg, field) is not None:
            _number(getattr(cfg, field), n(field), lo=0)
    if cfg.average_epochs is not None:
        _number(cfg.average_epochs, n("average_epochs"), lo=0, hi=1000)
    if cfg.grayscale is not None:
        _number(cfg.grayscale, n("grayscale"), lo=0, hi=1)
    _number(cfg.weight_decay, n("weight_decay"), lo=0)
    _number(cfg.momentum, n("momentum"), lo=0, hi=1, hi_open=True)
    _number(cfg.lr_factor, n("lr_factor"), lo=0, lo_open=True)
    _number(cfg.holdout_fraction, n("holdout_fraction"), lo=0, hi=1, lo_open=True, hi_open=True)
    if cfg.gamma is not None:
        check_gamma(cfg.gamma, n("gamma"))
    if cfg.milestones is not None:
        ms = cfg.milestones
        if not isinstance(ms, (list, tuple)):
            raise ConfigError(f"{n('milestones')} must be a list of epochs, got {ms!r}")
        for m in ms:
            _number(m, f"{n('milestones')} (each epoch)", lo=1, integer=True)
    if not isinstance(cfg.extra, dict) or not all(isinstance(k, str) for k in cfg.extra):
        raise ConfigError(f"{n('extra')} must be a mapping of model options, got {cfg.extra!r}")
    if "drop_path_rate" in cfg.extra:
        name = "--drop-path" if source is None else f"{source}: key 'extra.drop_path_rate'"
        _number(cfg.extra["drop_path_rate"], name, lo=0, hi=1, hi_open=True)
    if "backend" in cfg.extra:
        where = "--backend" if source is None else f"{source}: key 'extra.backend'"
        check_backend(cfg.extra["backend"], cfg.device, where)
    check_device(cfg.device, n("device"))
    return cfg


def check_device(device: str, name: str) -> None:
    import torch

    if device in ("auto", "cpu"):
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"{name} must be auto, cpu, cuda or cuda:N, got {device!r}") from e
    if dev.type != "cuda":
        raise ConfigError(f"{name} must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"{name} {device}: no CUDA device is visible to this torch build")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"{name} {device}: only {torch.cuda.device_count()} CUDA device(s) are visible"
        )


def check_backend(backend: Any, device: str, name: str) -> None:
    import torch

    from ..backends import NAMES, available_backends

    if backend not in NAMES:
        raise ConfigError(f"{name} must be one of {NAMES}, got {backend!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0]
    info = available_backends()[backend]
    if kind not in info.devices:
        raise ConfigError(
            f"{name} {backend} cannot run on {kind} here"
            + (f": {info.reason}" if info.reason else "")
        )


def config_from_dict(d: Any, source: str) -> TrainConfig:
    """A checked TrainConfig from a stored dict (``source`` names the file for messages).
    Unknown keys are ignored (a newer zeromamba may add some); every known one is checked."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a JSON object of options, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kept = {k: v for k, v in d.items() if k in names}
    if isinstance(kept.get("milestones"), list):
        kept["milestones"] = tuple(kept["milestones"])
    try:
        cfg = TrainConfig(**kept)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from e
    return check_config(cfg, source)


def read_config_file(path: str | os.PathLike) -> TrainConfig:
    """The checked configuration stored in a run folder's ``config.json``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); the file is corrupt"
        ) from e
    return config_from_dict(d, str(path))


# Options that may differ on --resume: they change where and how fast a run computes, not what.
RESUME_MAY_CHANGE = ("device", "num_workers", "threads", "progress", "eval_batch_size")


def resume_conflicts(stored: TrainConfig, given: dict[str, Any]) -> list[str]:
    """The options in ``given`` (field -> value the user passed) that differ from the stored
    configuration and may not change on resume, as "--opt VALUE (stored: VALUE)" strings."""
    resolved = stored.resolved()
    out = []
    for field, value in given.items():
        if field in RESUME_MAY_CHANGE:
            continue
        have = getattr(stored, field, None)
        have_resolved = getattr(resolved, field, None)
        if isinstance(value, (list, tuple)):
            value = tuple(value)
        if value != have and value != have_resolved:
            out.append(f"{flag(field)} {value!r} (stored: {have_resolved!r})")
    return out
