"""A plain folder format for your own zero-shot data.

Layout::

    ROOT/
      classes.txt          one class name per line; line order gives the class ids 0, 1, ...
                           Each name is also the folder of that class's images.
      attributes.csv       the class attribute table: a header row ``class,<attr 1>,<attr 2>,...``
                           then one row per class, ``<class name>,<value>,<value>,...`` (binary or
                           continuous values, any row order, every class exactly once).
                           Or instead: attributes.npy, float (n_classes, A) in classes.txt order,
                           with the attribute names (one a line) in attribute_names.txt (optional;
                           default ``attribute_000``, ...).
      word_vectors.npy     optional, float (A, E): one word vector per attribute, in column order.
                           Without it, deterministic pseudo-embeddings of the attribute names are
                           used (:func:`zeromamba.data.core.pseudo_word_vectors`, E = 300).
      images/<class>/...   the images (anything Pillow reads: png, jpg, ...).
      trainval.txt         split lists: one image path per line, relative to images/, e.g.
      test_seen.txt        ``zebra/0001.png``; the first path part is the class. Blank lines and
      test_unseen.txt      lines starting with '#' are ignored.
      train.txt, val.txt   optional class-disjoint partition of trainval (for validation-based
                           model selection). Without them, a seeded 20% of the seen classes
                           (at least one) form val and the rest train (see ``split_train_val``).

Paths in split lists are relative to images/ and must stay inside it after resolving ``..`` and
symbolic links. An image may appear once per list, and in at most one of trainval, test_seen and
test_unseen; train and val must partition trainval. Tables must be finite (no NaN/Inf, no huge
values). Every image is decoded once at load, so a corrupt file is named before training starts.
Attribute rows are L2-normalised on load. Seen classes are those of trainval, unseen those of
test_unseen; an unseen class in trainval/train/val, a class that is not in classes.txt, a table
whose classes disagree with classes.txt, or a missing file or image is refused with an error that
names it.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import torch

from . import validate
from .core import (
    DataError,
    MissingFileError,
    ZeroShotData,
    image_datasets,
    pseudo_word_vectors,
    require_file,
    split_train_val,
)
from .images import check_images


def _read_text(path: str) -> list[str]:
    """The lines of a UTF-8 text file; :class:`DataError` names the file (and line) otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x})") from e


def _lines(path: str) -> list[tuple[int, str]]:
    return [
        (no, s)
        for no, line in enumerate(_read_text(path), 1)
        if (s := line.strip()) and not s.startswith("#")
    ]


def _attribute_table(root: str, class_names: list[str]) -> tuple[np.ndarray, list[str]]:
    csv_path = os.path.join(root, "attributes.csv")
    npy_path = os.path.join(root, "attributes.npy")
    if os.path.isfile(csv_path):
        text = _read_text(csv_path)
        rows = [r for r in csv.reader(text) if r and any(c.strip() for c in r)]
        if not rows or len(rows[0]) < 2:
            raise DataError(f"{csv_path}: needs a header row 'class,<attribute names>'")
        names = [c.strip() for c in rows[0][1:]]
        by_class: dict[str, list[float]] = {}
        for no, row in enumerate(rows[1:], 2):
            if len(row) != len(names) + 1:
                raise DataError(
                    f"{csv_path}:{no}: {len(row) - 1} values for {len(names)} attributes"
                )
            cls = row[0].strip()
            if cls in by_class:
                raise DataError(f"{csv_path}:{no}: class {cls!r} appears twice")
            try:
                by_class[cls] = [float(v) for v in row[1:]]
            except ValueError as e:
                raise DataError(f"{csv_path}:{no}: {e}") from e
        unknown = sorted(set(by_class) - set(class_names))
        absent = [c for c in class_names if c not in by_class]
        if unknown or absent or len(by_class) != len(class_names):
            raise DataError(
                f"{csv_path}: {len(by_class)} classes in the attribute table but "
                f"{len(class_names)} in classes.txt (not in classes.txt: {unknown[:5]}; "
                f"without attributes: {absent[:5]})"
            )
        table = np.array([by_class[c] for c in class_names], dtype=np.float64)
        return validate.check_table(table, csv_path, "attribute table", rows=class_names), names
    if os.path.isfile(npy_path):
        att = validate.load_array_file(npy_path, "attribute table")
        validate.check_table(att, npy_path, "attribute table", rows=class_names)
        if att.ndim != 2 or att.shape[0] != len(class_names):
            raise DataError(
                f"{npy_path}: shape {att.shape} but classes.txt has {len(class_names)} classes"
            )
        names_path = os.path.join(root, "attribute_names.txt")
        if os.path.isfile(names_path):
            names = [s for _, s in _lines(names_path)]
        else:
            names = [f"attribute_{i:03d}" for i in range(att.shape[1])]
        if len(names) != att.shape[1]:
            raise DataError(f"{names_path}: {len(names)} names for {att.shape[1]} attributes")
        return att.astype(np.float64), names
    raise MissingFileError(f"attribute table not found: {csv_path} (or {npy_path})")


def load_folder(root: str, *, image_size: int = 224, check: bool = True) -> ZeroShotData:
    """Loads a zero-shot task in the folder format of this module's docstring; ``check``
    decodes every image once (:func:`zeromamba.data.images.check_images`)."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise MissingFileError(f"data folder not found: {root}")
    classes_path = require_file(os.path.join(root, "classes.txt"), "class list")
    class_names = [s for _, s in _lines(classes_path)]
    if len(set(class_names)) != len(class_names):
        raise DataError(f"{classes_path}: duplicate class names")
    class_id = {c: i for i, c in enumerate(class_names)}
    att, attribute_names = _attribute_table(root, class_names)

    wv_path = os.path.join(root, "word_vectors.npy")
    if os.path.isfile(wv_path):
        wv_arr = validate.load_array_file(wv_path, "word vectors")
        validate.check_table(wv_arr, wv_path, "word vectors", rows=attribute_names)
        wv = torch.from_numpy(wv_arr.astype(np.float32))
        if wv.shape[0] != att.shape[1]:
            raise DataError(f"{wv_path}: shape {tuple(wv.shape)} for {att.shape[1]} attributes")
        source = "given"
    else:
        wv, source = pseudo_word_vectors(attribute_names), "pseudo"

    images_dir = os.path.join(root, "images")
    files: list[str] = []
    labels: list[int] = []
    listed_at: list[str] = []  # "list:line" where each image first appears
    position: dict[object, int] = {}  # file identity -> index into files
    index: dict[str, torch.Tensor] = {}
    for split in ("trainval", "test_seen", "test_unseen", "train", "val"):
        list_path = os.path.join(root, f"{split}.txt")
        if split in ("train", "val") and not os.path.isfile(list_path):
            continue
        require_file(list_path, f"split list {split!r}")
        rows: list[int] = []
        line_of: dict[int, int] = {}
        for no, rel in _lines(list_path):
            where = f"{list_path}:{no}"
            path = validate.confined_path(images_dir, rel, where)
            cls = next(p for p in rel.replace("\\", "/").split("/") if p not in ("", "."))
            if cls not in class_id:
                raise DataError(f"{where}: class {cls!r} (of {rel!r}) is not in classes.txt")
            key = validate.file_identity(path)
            if key not in position:
                position[key] = len(files)
                files.append(path)
                labels.append(class_id[cls])
                listed_at.append(where)
            i = position[key]
            if labels[i] != class_id[cls]:
                raise DataError(
                    f"{where}: {rel!r} is the file listed at {listed_at[i]} under class "
                    f"{class_names[labels[i]]!r}"
                )
            if i in line_of:
                raise DataError(
                    f"{where}: {rel!r} is listed twice (also at line {line_of[i]}); each image "
                    "once per split"
                )
            line_of[i] = no
            rows.append(i)
        index[split] = torch.tensor(rows, dtype=torch.long)
    _check_disjoint(root, index, files)
    label_t = torch.tensor(labels, dtype=torch.long)
    if ("train" in index) != ("val" in index):
        raise DataError(f"{root}: give both train.txt and val.txt, or neither")
    if "train" not in index:
        train_i, val_i = split_train_val(label_t[index["trainval"]])
        index["train"], index["val"] = index["trainval"][train_i], index["trainval"][val_i]
    data = ZeroShotData(
        name=os.path.basename(root),
        class_names=class_names,
        attributes=torch.from_numpy(att),
        attribute_names=attribute_names,
        word_vectors=wv,
        splits=image_datasets(label_t, index, image_size, files=files),
        image_size=image_size,
        word_vector_source=source,
    )
    if check:
        check_images(zip(files, listed_at), f"{root}: images")
    return data


def _check_disjoint(root: str, index: dict[str, torch.Tensor], files: list[str]) -> None:
    """Refuses an image in two of trainval / test_seen / test_unseen (test leakage), and train /
    val lists that do not partition trainval."""
    sets = {k: set(v.tolist()) for k, v in index.items()}
    pairs = [("trainval", "test_seen"), ("trainval", "test_unseen"), ("test_seen", "test_unseen")]
    if "train" in sets:
        pairs += [("train", "val"), ("train", "test_seen"), ("val", "test_seen")]
    for a, b in pairs:
        both = sorted(sets[a] & sets[b])
        if both:
            raise DataError(
                f"{root}: {len(both)} image(s) are in both {a}.txt and {b}.txt (e.g. "
                f"{files[both[0]]}); the splits must be disjoint"
            )
    if "train" in sets:
        outside = sorted((sets["train"] | sets["val"]) - sets["trainval"])
        uncovered = sorted(sets["trainval"] - sets["train"] - sets["val"])
        if outside or uncovered:
            eg = files[(outside or uncovered)[0]]
            raise DataError(
                f"{root}: train.txt and val.txt must partition trainval.txt: {len(outside)} of "
                f"their images are not in trainval.txt, {len(uncovered)} trainval images are in "
                f"neither (e.g. {eg})"
            )
