"""Attribute names of CUB, SUN and AWA2, read from the files the datasets ship.

xlsa17's ``att_splits.mat`` has no attribute names, but its attribute columns follow the
original datasets' attribute order, and the original archives name them:

* CUB-200-2011: ``attributes.txt`` (beside ``CUB_200_2011/`` in the archive, also found inside
  it or in ``CUB_200_2011/attributes/``), lines ``<id> <name>``, e.g.
  ``1 has_bill_shape::curved_(up_or_down)``; 312 names.
* AWA2: ``Animals_with_Attributes2/predicates.txt``, lines ``<id>\\t<name>``, e.g. ``1\\tblack``;
  85 names.
* SUN attributes: ``SUNAttributeDB/attributes.mat`` (variable ``attributes``, a cell array of 102
  names), or the same names one per line in ``attributes.txt``.

:func:`find_attribute_names` looks in the dataset's image folder and its xlsa17 folder.
"""

from __future__ import annotations

import os

from .core import DataError

CANDIDATES: dict[str, tuple[str, ...]] = {
    "CUB": (
        "attributes.txt",
        "CUB_200_2011/attributes.txt",
        "CUB_200_2011/attributes/attributes.txt",
    ),
    "AWA2": ("Animals_with_Attributes2/predicates.txt", "predicates.txt"),
    "SUN": (
        "SUNAttributeDB/attributes.mat",
        "attributes.mat",
        "SUNAttributeDB/attributes.txt",
        "attributes.txt",
    ),
}


def read_numbered_names(path: str) -> list[str]:
    """Names from lines ``<id> <name>`` (space or tab separated; ids 1, 2, ... in order) or, when
    the lines carry no number, one name a line."""
    names = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for no, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.split(maxsplit=1)
            if len(parts) == 2 and parts[0].isdigit():
                if int(parts[0]) != len(names) + 1:
                    raise DataError(
                        f"{path}:{no}: attribute id {parts[0]}, expected {len(names) + 1}"
                    )
                names.append(parts[1].strip())
            else:
                names.append(text)
    return names


def read_mat_names(path: str) -> list[str]:
    """The cell array ``attributes`` of a .mat file (SUN's ``attributes.mat``) as strings."""
    import numpy as np
    from scipy.io import loadmat

    mat = loadmat(path)
    if "attributes" not in mat:
        raise DataError(f"{path}: variable 'attributes' missing")
    return [
        str(np.asarray(c).reshape(-1)[0]).strip() for c in np.asarray(mat["attributes"]).ravel()
    ]


def find_attribute_names(
    dataset: str, roots: list[str], n_attributes: int
) -> tuple[list[str], str] | None:
    """``(names, path)`` from the first of the dataset's shipped files found under ``roots``
    (each root is searched as ``root/<file>`` and ``root/<DATASET>/<file>``), or None.

    A file whose name count differs from ``n_attributes`` is refused (:class:`DataError`): it
    belongs to another version of the dataset and would name the wrong columns."""
    dataset = dataset.upper()
    for root in roots:
        for base in (os.path.join(root, dataset), root):
            for rel in CANDIDATES.get(dataset, ()):
                path = os.path.join(base, rel)
                if not os.path.isfile(path):
                    continue
                names = read_mat_names(path) if path.endswith(".mat") else read_numbered_names(path)
                if len(names) != n_attributes:
                    raise DataError(
                        f"{path}: {len(names)} attribute names but att_splits.mat has "
                        f"{n_attributes} attributes"
                    )
                return names, path
    return None
