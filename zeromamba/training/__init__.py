"""Training: the official ZeroMamba recipe, the validation-selection protocol, checkpoints that
survive kills, resume, DistributedDataParallel under ``torchrun``, logs and plots.

::

    from zeromamba.training import TrainConfig, train
    results = train(TrainConfig(), "runs/builtin")           # the built-in dataset on CPU
    results = train(TrainConfig(data="CUB", data_root="data/xlsa17",
                                pretrained="vssm_small_0229_ckpt_epoch_222.pth"), "runs/cub")
    train(TrainConfig(), "runs/builtin", resume=True)       # continue after a kill

Run folder: ``config.json``, ``metrics.jsonl`` (one record per epoch), ``curves.png``,
``seen_unseen.png``, ``last.pt`` / ``best_czsl.pt`` / ``best_h.pt`` (and ``select/`` with stage
1's), ``results.json``. See :mod:`zeromamba.training.trainer` for the protocol.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .config import BUILTIN_RECIPE, DATASET_RECIPES, TrainConfig
from .evaluate import evaluate_checkpoint
from .trainer import format_table, train

__all__ = [
    "BUILTIN_RECIPE",
    "DATASET_RECIPES",
    "CheckpointError",
    "TrainConfig",
    "evaluate_checkpoint",
    "format_table",
    "load_checkpoint",
    "save_atomic",
    "train",
]
