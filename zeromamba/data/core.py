"""The zero-shot data container every loader returns, its image datasets, and the checks that
refuse inconsistent data before any training starts."""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .transforms import Transform, eval_transform

SPLITS = ("train", "val", "trainval", "test_seen", "test_unseen")
TRAINING_SPLITS = ("trainval", "train", "val")


class DataError(ValueError):
    """Data that cannot be used as given; the message names the file, split or class."""


class MissingFileError(DataError, FileNotFoundError):
    """A file or image that the data needs does not exist; the message names its path."""


def require_file(path: str, what: str) -> str:
    """Returns ``path`` if it is a file, else raises :class:`MissingFileError` naming it."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} not found: {path}")
    return path


def decode_image(path: str) -> torch.Tensor:
    """Reads an image file as a uint8 RGB tensor (3, H, W) (see :mod:`zeromamba.data.images`)."""
    from .images import decode_image as decode

    return decode(path)


class ImageDataset(Dataset):
    """One split: item ``i`` is ``(image float32 (3, S, S), label int)`` with the global class id.

    Images come either from memory (``images``: uint8 (N, 3, H, W)) or from files (``files``,
    decoded with Pillow on access). ``transform`` maps the uint8 (3, H, W) image to the model's
    input; :meth:`with_transform` gives a view with another transform (training augmentation).
    """

    def __init__(
        self,
        labels: torch.Tensor,
        transform: Transform,
        *,
        images: torch.Tensor | None = None,
        files: Sequence[str] | None = None,
    ):
        if (images is None) == (files is None):
            raise ValueError("ImageDataset needs exactly one of images= or files=")
        n = len(images) if images is not None else len(files)
        if labels.ndim != 1 or labels.numel() != n:
            raise ValueError(f"ImageDataset: {labels.numel()} labels for {n} images")
        self.labels = labels.to(torch.long)
        self.transform = transform
        self.images = images
        self.files = list(files) if files is not None else None

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i] if self.images is not None else decode_image(self.files[i])
        return self.transform(img), int(self.labels[i])

    def with_transform(self, transform: Transform) -> ImageDataset:
        """A dataset over the same images and labels (shared, not copied) with ``transform``."""
        view = copy.copy(self)
        view.transform = transform
        return view

    def subset(self, index: torch.Tensor) -> ImageDataset:
        """The items at ``index`` (LongTensor), same transform."""
        index = index.to(torch.long)
        view = copy.copy(self)
        view.labels = self.labels[index]
        if self.images is not None:
            view.images = self.images[index]
        else:
            view.files = [self.files[i] for i in index.tolist()]
        return view


@dataclass
class ZeroShotData:
    """A zero-shot task.

    ``attributes`` (n_classes, A) float32, rows L2-normalised (done here); ``word_vectors`` (A, E)
    float32, one vector per attribute (initialises the SLP's V). ``splits`` maps each of
    ``SPLITS`` to an :class:`ImageDataset` with xlsa17 semantics: "train" and "val" are
    class-disjoint parts of the seen classes, "trainval" their union, "test_seen" held-out images of
    the seen classes, "test_unseen" the images of the unseen classes. Labels are global class ids.
    Construction refuses (:class:`DataError`) a class count that disagrees with the attribute table,
    an unseen class in a training split, and splits that break these semantics.
    """

    name: str
    class_names: list[str]
    attributes: torch.Tensor
    attribute_names: list[str]
    word_vectors: torch.Tensor
    splits: dict[str, ImageDataset]
    image_size: int
    # where word_vectors came from: "given" (shipped with the data), "pseudo" (made up from the
    # attribute names), or a sentence-embedding model's name (zeromamba.data.semantic)
    word_vector_source: str = "given"
    _classes: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        att = torch.as_tensor(self.attributes, dtype=torch.float32)
        if att.ndim != 2:
            raise DataError(
                f"{self.name}: attribute table must be 2-D, got shape {tuple(att.shape)}"
            )
        if att.shape[0] != len(self.class_names):
            raise DataError(
                f"{self.name}: {len(self.class_names)} classes but the attribute table has "
                f"{att.shape[0]} rows"
            )
        if len(self.attribute_names) != att.shape[1]:
            raise DataError(
                f"{self.name}: {len(self.attribute_names)} attribute names for {att.shape[1]} "
                "attribute columns"
            )
        norms = att.norm(dim=1)
        if bool((norms == 0).any()):
            bad = self.class_names[int((norms == 0).nonzero()[0])]
            raise DataError(f"{self.name}: class {bad!r} has an all-zero attribute vector")
        self.attributes = F.normalize(att, dim=1)
        wv = torch.as_tensor(self.word_vectors, dtype=torch.float32)
        if wv.ndim != 2 or wv.shape[0] != att.shape[1]:
            raise DataError(
                f"{self.name}: word vectors of shape {tuple(wv.shape)} do not match "
                f"{att.shape[1]} attributes"
            )
        self.word_vectors = wv
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise DataError(f"{self.name}: splits {missing} are missing")
        n_classes = len(self.class_names)
        for split in SPLITS:
            labels = self.splits[split].labels
            if labels.numel() == 0:
                raise DataError(f"{self.name}: split {split!r} is empty")
            if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
                raise DataError(
                    f"{self.name}: split {split!r} has class id {int(labels.max())} but the "
                    f"attribute table has {n_classes} classes"
                )
            self._classes[split] = torch.unique(labels)
        self._check_splits()

    def _names(self, ids: torch.Tensor) -> str:
        return ", ".join(repr(self.class_names[i]) for i in ids.tolist()[:5]) + (
            ", ..." if ids.numel() > 5 else ""
        )

    def _check_splits(self) -> None:
        unseen = self.unseen
        for split in TRAINING_SPLITS:
            leak = self._classes[split][torch.isin(self._classes[split], unseen)]
            if leak.numel():
                raise DataError(
                    f"{self.name}: unseen class(es) {self._names(leak)} appear in the training "
                    f"split {split!r}"
                )
        both = self._classes["train"][torch.isin(self._classes["train"], self._classes["val"])]
        if both.numel():
            raise DataError(
                f"{self.name}: class(es) {self._names(both)} are in both 'train' and 'val' "
                "(validation classes must be disjoint from training classes)"
            )
        for split in ("train", "val", "test_seen"):
            extra = self._classes[split][~torch.isin(self._classes[split], self.seen)]
            if extra.numel():
                raise DataError(
                    f"{self.name}: class(es) {self._names(extra)} of split {split!r} are not in "
                    "'trainval'"
                )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def classes(self, split: str) -> torch.Tensor:
        """Sorted unique global class ids (LongTensor) of ``split``."""
        if split not in self._classes:
            raise KeyError(f"unknown split {split!r}; splits are {list(SPLITS)}")
        return self._classes[split]

    @property
    def seen(self) -> torch.Tensor:
        """The seen classes: those of "trainval"."""
        return self._classes["trainval"]

    @property
    def unseen(self) -> torch.Tensor:
        """The unseen classes: those of "test_unseen"."""
        return self._classes["test_unseen"]


def split_train_val(
    trainval_labels: torch.Tensor, val_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (into trainval) of a class-disjoint train/val partition when the data gives none:
    ``ceil(val_fraction * n_seen)`` seen classes, drawn by a permutation seeded with ``seed``, go to
    val. Returns ``(train_index, val_index)``."""
    seen = torch.unique(trainval_labels)
    if seen.numel() < 2:
        raise DataError(
            "cannot make a class-disjoint train/val split from fewer than 2 seen classes"
        )
    n_val = max(1, int(np.ceil(val_fraction * seen.numel())))
    n_val = min(n_val, seen.numel() - 1)
    perm = torch.randperm(seen.numel(), generator=torch.Generator().manual_seed(seed))
    val_classes = seen[perm[:n_val]]
    is_val = torch.isin(trainval_labels, val_classes)
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()


def pseudo_word_vectors(names: Sequence[str], dim: int = 300) -> torch.Tensor:
    """Deterministic stand-in word embeddings (len(names), dim) float32.

    Each name is split into lower-case alphanumeric word parts ("colour_red" -> colour, red); each
    part gets a fixed standard-normal vector seeded by its BLAKE2b hash, and a name's vector is the
    sum of its parts' vectors divided by sqrt(number of parts). Names sharing parts share components
    (all "colour ..." attributes are correlated), like real word vectors of related words.
    """
    out = np.empty((len(names), dim), dtype=np.float64)
    for i, name in enumerate(names):
        parts = [p for p in re.split(r"[^a-z0-9]+", name.lower()) if p] or [name]
        vec = np.zeros(dim)
        for part in parts:
            seed = int.from_bytes(hashlib.blake2b(part.encode(), digest_size=8).digest(), "little")
            vec += np.random.default_rng(seed).standard_normal(dim)
        out[i] = vec / np.sqrt(len(parts))
    return torch.from_numpy(out).to(torch.float32)


def image_datasets(
    labels: torch.Tensor,
    index: dict[str, torch.Tensor],
    image_size: int,
    *,
    images: torch.Tensor | None = None,
    files: Sequence[str] | None = None,
) -> dict[str, ImageDataset]:
    """One :class:`ImageDataset` per split from per-split indices into a shared image list."""
    full = ImageDataset(labels, eval_transform(image_size), images=images, files=files)
    return {split: full.subset(idx) for split, idx in index.items()}
