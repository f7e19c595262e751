"""The xlsa17 "proposed splits" of Xian et al. (CUB, SUN, AWA2), with the images themselves.

Files (``DATASET`` is CUB, SUN or AWA2)::

    {data_root}/{DATASET}/res101.mat       image_files (N x 1 cell of original paths), labels (1-based)
    {data_root}/{DATASET}/att_splits.mat   att (A x n_classes, L2-normalised columns), original_att,
                                           allclasses_names, trainval_loc, test_seen_loc,
                                           test_unseen_loc, train_loc, val_loc (1-based indices
                                           into res101's images)
    {w2v_root}/{DATASET}_attribute.pkl     pickled numpy float64 array (A, 300): one word vector per
                                           attribute (also looked for in {data_root}/{DATASET}/);
                                           a .npy of the same name is preferred when present
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
The pickle is read by an unpickler that builds numpy arrays and nothing else (unpickling can
run code); ``trust_pickle=True`` lifts that. Image paths must stay inside
``{image_root}/{DATASET}/`` after resolving ``..`` and symbolic links; every image is decoded once
at load; locs must be whole 1-based numbers without repeats; tables must be finite.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from . import validate
from .attribute_names import find_attribute_names
from .core import (
    DataError,
    MissingFileError,
    ZeroShotData,
    image_datasets,
    require_file,
    split_train_val,
)
from .images import check_images

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


def _loadmat(path: str, **kwargs) -> dict:
    """scipy's loadmat with errors that name the file."""
    from scipy.io import loadmat

    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    if head.startswith(b"MATLAB 7.3"):
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it in MATLAB with "
            "save(..., '-v7')"
        )
    try:
        return loadmat(path, **kwargs)
    except Exception as e:  # truncated or not a .mat file: scipy raises several types
        raise DataError(
            f"{path}: not a readable MATLAB .mat file, truncated or corrupt "
            f"({type(e).__name__}: {e})"
        ) from e


def _whole_numbers(values, key: str, path: str) -> np.ndarray:
    """A numeric MATLAB array as int64, refusing non-numeric, non-finite or fractional entries."""
    raw = np.asarray(values).reshape(-1)
    if raw.dtype.kind not in "fiub":
        raise DataError(f"{path}: {key} must be numeric, got dtype {raw.dtype}")
    f = raw.astype(np.float64)
    bad = ~np.isfinite(f) | (f != np.round(f))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{path}: {key}[{i}] = {raw[i].item()!r} is not a whole number (1-based indices expected)"
        )
    return f.astype(np.int64)


def _index(mat: dict, key: str, n_images: int, path: str) -> torch.Tensor:
    if key not in mat:
        raise DataError(f"{path}: variable {key!r} missing")
    one_based = _whole_numbers(mat[key], key, path)
    bad = (one_based < 1) | (one_based > n_images)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{path}: {key}[{i}] = {one_based[i]} is outside 1..{n_images} (1-based indices "
            f"into res101.mat's {n_images} images)"
        )
    uniq, counts = np.unique(one_based, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[counts > 1][0])
        raise DataError(
            f"{path}: {key} lists image {dup} {int(counts[counts > 1][0])} times (each image once)"
        )
    return torch.from_numpy(one_based - 1)


def _word_vectors(
    dataset: str, data_root: str, w2v_root: str | None, trust_pickle: bool
) -> tuple[np.ndarray, str]:
    folders = [w2v_root or data_root, os.path.join(data_root, dataset)]
    candidates = [
        os.path.join(d, f"{dataset}_attribute{ext}") for d in folders for ext in (".npy", ".pkl")
    ]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        raise MissingFileError(f"word vectors not found: {candidates[1]} (or .npy)")
    wv = validate.load_array_file(path, "word vectors", trust_pickle=trust_pickle)
    return validate.check_table(wv, path, "word vectors"), path


def load_xlsa17(
    dataset: str,
    data_root: str,
    *,
    image_root: str | None = None,
    w2v_root: str | None = None,
    image_size: int = 448,
    trust_pickle: bool = False,
    check: bool = True,
) -> ZeroShotData:
    """Loads CUB, SUN or AWA2 from the xlsa17 files and the images (layout in the module doc).

    Checks that every file and every image of the splits exists (:class:`MissingFileError` names
    the first missing path), that the class count agrees with the attribute table and the word
    vectors, and the split semantics of :class:`ZeroShotData`. ``trust_pickle``: read any
    pickle as word vectors (it can run code); ``check``: decode every image once.
    """
    dataset = dataset.upper()
    if dataset not in PATH_SKIP:
        raise ValueError(f"unknown xlsa17 dataset {dataset!r}; known: {list(DATASETS)}")
    image_root = image_root if image_root is not None else data_root
    res_path = require_file(os.path.join(data_root, dataset, "res101.mat"), "xlsa17 res101.mat")
    att_path = require_file(
        os.path.join(data_root, dataset, "att_splits.mat"), "xlsa17 att_splits.mat"
    )

    # Only these two variables: res101.mat also holds ResNet features (hundreds of MB for AWA2).
    res = _loadmat(res_path, variable_names=["image_files", "labels"])
    for key in ("image_files", "labels"):
        if key not in res:
            raise DataError(f"{res_path}: variable {key!r} missing")
    xlsa_files = [_mat_str(c) for c in np.asarray(res["image_files"]).reshape(-1)]
    labels = torch.from_numpy(_whole_numbers(res["labels"], "labels", res_path) - 1)
    if labels.numel() != len(xlsa_files):
        raise DataError(f"{res_path}: {labels.numel()} labels for {len(xlsa_files)} image_files")

    mat = _loadmat(att_path)
    if "att" not in mat:
        raise DataError(f"{att_path}: variable 'att' missing")
    try:
        att = np.asarray(mat["att"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{att_path}: 'att' must be a numeric matrix ({e})") from e
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
    validate.check_table(att, att_path, "attribute table 'att'", rows=class_names)
    if labels.numel() == 0:
        raise DataError(f"{res_path}: no images (empty 'labels')")
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise DataError(
            f"{res_path}: labels run from {int(labels.min()) + 1} to {int(labels.max()) + 1} "
            f"(1-based) but {att_path} describes {n_classes} classes"
        )

    wv, wv_path = _word_vectors(dataset, data_root, w2v_root, trust_pickle)
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

    root = os.path.join(image_root, dataset)
    where = f"{res_path} image_files"
    files = []
    for i, p in enumerate(xlsa_files):
        rel = os.path.relpath(local_image_path(p, dataset, image_root), root)
        files.append(validate.confined_path(root, rel, f"{where}[{i}] {p!r}"))
    used = torch.unique(torch.cat([index[k] for k in ("trainval", "test_seen", "test_unseen")]))
    if check:
        check_images(((files[i], f"{where}[{i}]") for i in used.tolist()), f"{dataset}: images")

    return ZeroShotData(
        name=dataset,
        class_names=class_names,
        attributes=torch.from_numpy(att),
        attribute_names=names,
        word_vectors=torch.from_numpy(wv),
        splits=image_datasets(labels, index, image_size, files=files),
        image_size=image_size,
    )
