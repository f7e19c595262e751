"""Classical zero-shot baselines computed beside ZeroMamba: ESZSL in closed form
(:mod:`zeromamba.baselines.eszsl`) and its in-run protocol on the trainer's splits
(:mod:`zeromamba.baselines.in_run`)."""

from .eszsl import DEFAULT_GRID, EszslFit, FeatureScaler, class_indicators
from .in_run import (
    ZslTask,
    eszsl_protocol,
    format_baselines,
    pixel_features,
    pooled_features,
    run_baselines,
    zsl_tasks,
)

__all__ = [
    "DEFAULT_GRID",
    "EszslFit",
    "FeatureScaler",
    "ZslTask",
    "class_indicators",
    "eszsl_protocol",
    "format_baselines",
    "pixel_features",
    "pooled_features",
    "run_baselines",
    "zsl_tasks",
]
