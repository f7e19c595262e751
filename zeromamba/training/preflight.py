"""Checks of a task against the protocol that would otherwise fail only after training: every
class the evaluation averages over must have images to average."""

from __future__ import annotations

import torch

from ..data import DataError, ZeroShotData


def _counts(data: ZeroShotData, split: str) -> dict[int, int]:
    ids, counts = torch.unique(data.splits[split].labels, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def check_test_splits(data: ZeroShotData) -> None:
    """Every seen class has test_seen images (S is a mean over the seen classes)."""
    have = _counts(data, "test_seen")
    missing = [data.class_names[c] for c in data.seen.tolist() if c not in have]
    if missing:
        raise DataError(
            f"{data.name}: seen class(es) {missing[:5]} have no images in test_seen: the seen "
            "accuracy S averages over every seen class, so each needs at least one"
        )


def check_protocol(data: ZeroShotData, select: str) -> None:
    """The test splits (:func:`check_test_splits`) and, for ``select="val"``, at least two
    images per "train" class: one to train on and one held out to score seen accuracy."""
    check_test_splits(data)
    if select == "val":
        few = [data.class_names[c] for c, k in _counts(data, "train").items() if k < 2]
        if few:
            raise DataError(
                f"{data.name}: class(es) {few[:5]} of split 'train' have a single image; "
                "--select val holds out part of each train class's images as validation seen "
                "images, so each needs at least 2 (or use --select test)"
            )
