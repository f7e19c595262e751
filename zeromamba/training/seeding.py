"""Seeds. Every epoch starts from generators seeded by (seed, stage, epoch, rank) alone, so a run
resumed from an end-of-epoch checkpoint continues exactly the random stream (shuffle order,
augmentation, drop-path) of an uninterrupted run, on one process or under DDP, without carrying
generator states between processes."""

from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(seed: int, stage: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed for one (stage, epoch, rank); distinct inputs give distinct streams."""
    return (((seed * 1_000_003 + stage) * 10_007 + epoch) * 1_009 + rank) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(seed: int) -> torch.Generator:
    """A CPU generator for a DataLoader: its shuffle order and its workers' base seed."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def worker_init(worker_id: int) -> None:
    """Seed NumPy and Python in a DataLoader worker from the seed torch gave that worker."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
