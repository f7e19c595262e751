"""The xlsa17 "proposed splits" of Xian et al. (CUB, SUN, AWA2), with the images themselves.

Files (``DATASET`` is CUB, SUN or AWA2)::

    {data_root}/{DATASET}/res101.mat       image_files (N x 1 cell of original paths), labels (1-based)
    {data_root}/{DATASET}/att_splits.mat   att (A x n_classes, L2-normalised columns), original_att,
                                           allclasses_names, trainval_loc, test_seen_loc,
                                           test_unseen_loc, train_loc, val_loc (1-based indices
                                           into res101's images)
    {w2v_root}/{DATASET}_attribute.pkl     pickled numpy float64 array (A, 300): one word vector per
                                           attribute (also looked for in {data_root}/{DATASET}/)
    {image_root}/{DATASET}/...             the images, laid out as the official ZeroMamba code
                                           expects (below)

The .mat files name images by their paths on the authors' machine, e.g.
``/BS/Deep_Fragments/work/MSc/CUB_200_2011/CUB_200_2011/images/001.Black_footed_Albatross/x.jpg``.
Like the official code, the first ``PATH_SKIP[DATASET]`` "/"-separated parts are dropped and the
rest is placed under ``{image_root}/{DATASET}/``: CUB ``CUB_200_2011/images/<class>/<file>``, SUN
``images/<letter>/<scene>/<file>``, AWA2 ``Animals_with_Attributes2/JPEGImages/<class>/<file>``
(the extracted archives as distributed).

Splits: "trainval", "test_seen", "test_unseen" are the mat's. "val" is the trainval images of the
classes of ``val_loc`` and "train" the other trainval images, so train + val = trainval exactly and
neither touches test_seen (``train_loc``/``val_loc`` index images of those classes regardless of the
trainval/test_seen split). xlsa17 has no attribute names: they are read from the files the
datasets ship when the image or data root has them (:mod:`zeromamba.data.attribute_names`),
else ``attribute_000`` ...
Only load pickles you trust (unpickling runs code).
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from .attribute_names import find_attribute_names
from .core import (
    DataError,
    MissingFileError,
    ZeroShotData,
    image_datasets,
    require_file,
    split_train_val,
)

# Leading path parts of xlsa17's image_files dropped before joining with {image_root}/{DATASET}/.
PATH_SKIP = {"CUB": 6, "SUN": 7, "AWA2": 5}
DATASETS = tuple(PATH_SKIP)


def local_image_path(xlsa_path: str, dataset: str, image_root: str) -> str:
    """Maps an xlsa17 ``image_files`` entry to the local file under ``{image_root}/{dataset}/``."""
    if dataset not in PATH_SKIP:
        raise ValueError(f"unknown xlsa17 dataset {dataset!r}; known: {list(DATASETS)}")
    parts = xlsa_path.strip().split("/")
    if len(parts) <= PATH_SKIP[dataset]:
        raise DataError(f"{dataset}: unexpected image path in res101.mat: {xlsa_path!r}")
    tail = "/".join(parts[PATH_SKIP[dataset] :])
    return os.path.normpath(os.path.join(image_root, dataset, tail))


def _mat_str(cell) -> str:
    """A MATLAB char array as loaded by scipy (``array(['text'])``) -> str."""
    return str(np.asarray(cell).reshape(-1)[0])


def _index(mat: dict, key: str, n_images: int, path: str) -> torch.Tensor:
    if key not in mat:
        raise DataError(f"{path}: variable {key!r} missing")
    loc = np.asarray(mat[key]).reshape(-1).astype(np.int64) - 1  # 1-based -> 0-based
    if loc.size and (loc.min() < 0 or loc.max() >= n_images):
        raise DataError(
            f"{path}: {key} indexes image {loc.max() + 1} (1-based) but res101.mat has "
            f"{n_images} images"
        )
    return torch.from_numpy(loc)


def _word_vectors(dataset: str, data_root: str, w2v_root: str | None) -> tuple[np.ndarray, str]:
    name = f"{dataset}_attribute.pkl"
    candidates = [os.path.join(w2v_root or data_root, name), os.path.join(data_root, dataset, name)]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        raise MissingFileError(f"word vectors not found: {candidates[0]}")
    with open(path, "rb") as f:
        obj = pickle.load(f)
    if isinstance(obj, torch.Tensor):
        obj = obj.numpy()
    if not isinstance(obj, np.ndarray) or obj.ndim != 2:
        raise DataError(f"{path}: expected a pickled 2-D numpy array (A, E), got {type(obj)}")
    return obj, path


def load_xlsa17(
    dataset: str,
    data_root: str,
    *,
    image_root: str | None = None,
    w2v_root: str | None = None,
    image_size: int = 448,
) -> ZeroShotData:
    """Loads CUB, SUN or AWA2 from the xlsa17 files and the images (layout in the module doc).

    Checks that every file and every image of the splits exists (:class:`MissingFileError` names
    the first missing path), that the class count agrees with the attribute table and the word
    vectors, and the split semantics of :class:`ZeroShotData`.
    """
    from scipy.io import loadmat

    dataset = dataset.upper()
    if dataset not in PATH_SKIP:
        raise ValueError(f"unknown xlsa17 dataset {dataset!r}; known: {list(DATASETS)}")
    image_root = image_root if image_root is not None else data_root
    res_path = require_file(os.path.join(data_root, dataset, "res101.mat"), "xlsa17 res101.mat")
    att_path = require_file(
        os.path.join(data_root, dataset, "att_splits.mat"), "xlsa17 att_splits.mat"
    )

    # Only these two variables: res101.mat also holds ResNet features (hundreds of MB for AWA2).
    res = loadmat(res_path, variable_names=["image_files", "labels"])
    for key in ("image_files", "labels"):
        if key not in res:
            raise DataError(f"{res_path}: variable {key!r} missing")
    xlsa_files = [_mat_str(c) for c in np.asarray(res["image_files"]).reshape(-1)]
    labels = torch.from_numpy(np.asarray(res["labels"]).reshape(-1).astype(np.int64) - 1)
    if labels.numel() != len(xlsa_files):
        raise DataError(f"{res_path}: {labels.numel()} labels for {len(xlsa_files)} image_files")

    mat = loadmat(att_path)
    if "att" not in mat:
        raise DataError(f"{att_path}: variable 'att' missing")
    att = np.asarray(mat["att"], dtype=np.float64)
    if "allclasses_names" in mat:
        class_names = [_mat_str(c) for c in np.asarray(mat["allclasses_names"]).reshape(-1)]
    else:
        class_names = [f"class_{i:03d}" for i in range(int(labels.max()) + 1)]
    n_classes = len(class_names)
    # xlsa17 stores att as (A, n_classes); accept (n_classes, A) too when unambiguous.
    if att.ndim == 2 and att.shape[1] == n_classes:
        att = att.T
    elif not (att.ndim == 2 and att.shape[0] == n_classes):
        raise DataError(
            f"{att_path}: {n_classes} classes (allclasses_names) but 'att' has shape {att.shape}"
        )
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise DataError(
            f"{res_path}: labels run from {int(labels.min()) + 1} to {int(labels.max()) + 1} "
            f"(1-based) but {att_path} describes {n_classes} classes"
        )

    wv, wv_path = _word_vectors(dataset, data_root, w2v_root)
    if wv.shape[0] != att.shape[1]:
        raise DataError(f"{wv_path}: {wv.shape[0]} word vectors for {att.shape[1]} attributes")

    n = len(xlsa_files)
    index = {
        k: _index(mat, f"{k}_loc", n, att_path) for k in ("trainval", "test_seen", "test_unseen")
    }
    overlap = np.intersect1d(index["trainval"].numpy(), index["test_seen"].numpy())
    if overlap.size:
        raise DataError(
            f"{att_path}: {overlap.size} images are in both trainval_loc and test_seen_loc "
            f"(e.g. {xlsa_files[overlap[0]]})"
        )
    trainval_labels = labels[index["trainval"]]
    if "val_loc" in mat:
        val_classes = torch.unique(labels[_index(mat, "val_loc", n, att_path)])
        is_val = torch.isin(trainval_labels, val_classes)
        index["train"] = index["trainval"][~is_val]
        index["val"] = index["trainval"][is_val]
    else:
        train_i, val_i = split_train_val(trainval_labels)
        index["train"], index["val"] = index["trainval"][train_i], index["trainval"][val_i]

    found = find_attribute_names(dataset, [image_root, data_root], att.shape[1])
    names = found[0] if found else [f"attribute_{i:03d}" for i in range(att.shape[1])]

    files = [local_image_path(p, dataset, image_root) for p in xlsa_files]
    used = torch.unique(torch.cat([index[k] for k in ("trainval", "test_seen", "test_unseen")]))
    missing = [files[i] for i in used.tolist() if not os.path.isfile(files[i])]
    if missing:
        raise MissingFileError(
            f"{dataset}: {len(missing)} of {used.numel()} images missing under {image_root}; "
            f"first: {missing[0]}"
        )

    return ZeroShotData(
        name=dataset,
        class_names=class_names,
        attributes=torch.from_numpy(att),
        attribute_names=names,
        word_vectors=torch.from_numpy(wv),
        splits=image_datasets(labels, index, image_size, files=files),
        image_size=image_size,
    )
