"""Zero-shot data: the xlsa17 benchmarks (CUB, SUN, AWA2), a plain folder format for your own data
(:mod:`zeromamba.data.folder`), and a built-in procedurally generated task
(:mod:`zeromamba.data.shapes`). Every loader returns a :class:`ZeroShotData` and refuses
inconsistent data (:class:`DataError`, :class:`MissingFileError`) before any training starts.
Transforms without torchvision are in :mod:`zeromamba.data.transforms`.
"""

from __future__ import annotations

import dataclasses
import os

from . import semantic, transforms
from .core import SPLITS, DataError, ImageDataset, MissingFileError, ZeroShotData
from .folder import load_folder
from .shapes import builtin
from .xlsa17 import DATASETS, load_xlsa17

WORD_VECTORS = ("auto", "semantic", "pseudo")

__all__ = [
    "DATASETS",
    "SPLITS",
    "WORD_VECTORS",
    "DataError",
    "ImageDataset",
    "MissingFileError",
    "ZeroShotData",
    "builtin",
    "load",
    "load_folder",
    "load_xlsa17",
    "transforms",
]


def load(
    spec: str,
    *,
    data_root: str | None = None,
    image_root: str | None = None,
    w2v_root: str | None = None,
    image_size: int | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    word_vectors: str = "auto",
    trust_pickle: bool = False,
) -> ZeroShotData:
    """Loads a zero-shot task.

    ``spec``: "builtin" (:func:`builtin`, from ``seed``, cached in ``cache_dir``); "CUB", "SUN" or
    "AWA2" (any case; xlsa17 under ``data_root``, images under ``image_root``, word vectors under
    ``w2v_root``, see :mod:`zeromamba.data.xlsa17`); otherwise a folder in the format of
    :mod:`zeromamba.data.folder`. ``image_size`` defaults to 32 (builtin), 448 (xlsa17, the
    official recipe) or 224 (folder). ``trust_pickle``: read any pickle as xlsa17 word vectors
    (unpickling can run code; by default only pickled numpy arrays are accepted).

    ``word_vectors`` for data that ships none: "auto" (a sentence-embedding model's vectors of
    the attribute names when the ``semantic`` extra is installed, else pseudo-embeddings with a
    warning; the built-in task keeps its pseudo-embeddings), "semantic" (the model's, or an
    error), "pseudo" (:mod:`zeromamba.data.semantic`).
    """
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive integer (pixels), got {image_size!r}")
    if word_vectors not in WORD_VECTORS:
        raise ValueError(f"word_vectors must be one of {WORD_VECTORS}, got {word_vectors!r}")
    data = _load(spec, data_root, image_root, w2v_root, image_size, cache_dir, seed, trust_pickle)
    if data.word_vector_source != "pseudo" or word_vectors == "pseudo":
        return data
    if spec.lower() == "builtin" and word_vectors == "auto":
        # all-MiniLM-L6-v2 vectors of its attribute names did not help on its validation task
        # (CZSL 75.0 both, H 44.7 against 45.0), so the built-in task keeps its pseudo-vectors
        # and gives the same result with or without the extra
        return data
    from .shapes import default_cache_dir

    if spec.lower() == "builtin":
        here = cache_dir or default_cache_dir()
    else:
        here = os.path.abspath(spec)
    vectors, source = semantic.attribute_word_vectors(
        data.attribute_names,
        here,
        fallback_cache_dir=default_cache_dir(),
        required=word_vectors == "semantic",
    )
    if source == "pseudo":
        return data
    return dataclasses.replace(data, word_vectors=vectors, word_vector_source=source)


def _load(
    spec, data_root, image_root, w2v_root, image_size, cache_dir, seed, trust_pickle
) -> ZeroShotData:
    if spec.lower() == "builtin":
        return builtin(seed=seed, image_size=image_size or 32, cache_dir=cache_dir)
    if spec.upper() in DATASETS:
        if data_root is None:
            raise ValueError(
                f"{spec}: pass data_root, the folder holding xlsa17's {spec.upper()}/res101.mat "
                "and att_splits.mat"
            )
        return load_xlsa17(
            spec.upper(),
            data_root,
            image_root=image_root,
            w2v_root=w2v_root,
            image_size=image_size or 448,
            trust_pickle=trust_pickle,
        )
    if os.path.isdir(spec):
        return load_folder(spec, image_size=image_size or 224)
    raise MissingFileError(
        f"unknown data {spec!r}: not 'builtin', one of {list(DATASETS)}, or an existing folder"
    )
