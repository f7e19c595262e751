"""Checks that refuse hostile or broken data files before anything uses them.

* word vectors: ``.npy`` (no pickle) or a pickle read by an unpickler that builds numpy arrays
  and nothing else (a pickle can run any code while it loads); ``trust_pickle=True`` is the
  explicit way to read anything else.
* tables (attributes, word vectors): finite, and no value so large that float32 math on it
  overflows.
* paths in split lists: relative, and inside the images folder after resolving ``..`` and
  symbolic links.
* split lists: no duplicate lines, no image in two splits that must be disjoint.

Every refusal is a :class:`DataError` that names the file (and line or key) and what was expected.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence

import numpy as np

from .core import DataError

# Attribute values and word-vector components beyond this are refused: squared and summed over a
# few hundred entries in float32 (L2 normalisation, the SLP's queries) they overflow to inf.
MAX_ABS_VALUE = 1e6

# Globals a pickled numpy array needs (numpy 1 and 2 module names), and nothing else.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol 2 stores the array's bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_array_file(path: str, what: str, *, trust_pickle: bool = False) -> np.ndarray:
    """A numeric 2-D array from ``.npy`` (never unpickled) or a pickle of a numpy array.

    The pickle is read by an unpickler that only builds numpy arrays; anything else (a pickle can
    run code as it loads) is refused unless ``trust_pickle``. Raises :class:`DataError` naming
    ``path`` for an unreadable file, another object, a non-numeric dtype or ndim != 2.
    """
    try:
        if path.endswith(".npy"):
            try:
                arr = np.load(path, allow_pickle=False)
            except ValueError as e:  # object arrays need pickle
                raise DataError(
                    f"{path}: {what} must be a numeric .npy array (object arrays are refused: "
                    f"they are pickles), got: {e}"
                ) from e
        else:
            with open(path, "rb") as f:
                blob = f.read()
            if trust_pickle:
                arr = pickle.loads(blob)
            else:
                try:
                    arr = _ArrayUnpickler(io.BytesIO(blob)).load()
                except pickle.UnpicklingError as e:
                    if "refusing to load" not in str(e):
                        raise
                    raise DataError(
                        f"{path}: {what} must be a pickled numpy array; this pickle holds "
                        f"other objects ({e}). Unpickling untrusted files can run code: convert "
                        "it to .npy, or pass --trust-pickle if you trust its source"
                    ) from e
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror or e}") from e
    except Exception as e:  # truncated / not a pickle / not an npy file
        raise DataError(
            f"{path}: not a readable {what} file ({type(e).__name__}: {e}); expected a numpy "
            "array saved with np.save (.npy) or pickle.dump (.pkl)"
        ) from e
    if hasattr(arr, "numpy") and not isinstance(arr, np.ndarray):  # a trusted torch tensor
        arr = arr.numpy()
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: {what} must be a numpy array (A, E), got {type(arr).__name__}")
    if arr.dtype.kind not in "fiub" or arr.ndim != 2:
        raise DataError(
            f"{path}: {what} must be a 2-D numeric array (A, E), got dtype {arr.dtype} and "
            f"shape {arr.shape}"
        )
    return arr


def check_table(arr: np.ndarray, path: str, what: str, *, rows: Sequence[str] | None = None):
    """Refuses NaN, Inf, and values beyond +-MAX_ABS_VALUE in a 2-D table, naming ``path``, the
    first bad entry (row name when ``rows`` is given) and its value."""
    a = np.asarray(arr, dtype=np.float64)
    bad = ~np.isfinite(a) | (np.abs(np.nan_to_num(a)) > MAX_ABS_VALUE)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        row = f"row {i}" + (f" ({rows[i]!r})" if rows is not None and i < len(rows) else "")
        raise DataError(
            f"{path}: {what} has {int(bad.sum())} non-finite or huge value(s), first "
            f"{float(a[i, j])!r} at {row}, column {j}; expected finite values within "
            f"+-{MAX_ABS_VALUE:g}"
        )
    return arr


def confined_path(root: str, rel: str, where: str) -> str:
    """``root/rel`` resolved (``..``, symbolic links), refused unless it stays inside ``root``.

    ``rel`` must be a relative path without ``..`` parts. The check does not touch the file, so
    the message is the same whether or not something exists there. ``where`` names the list
    file and line for the message.
    """
    parts = rel.replace("\\", "/").split("/")
    real_root = os.path.realpath(root)
    if rel.startswith(("/", "\\")) or os.path.isabs(rel) or ".." in parts or ":" in parts[0]:
        raise DataError(
            f"{where}: {rel!r} is not a path inside {root}: split lists hold relative paths "
            "without '..'"
        )
    real = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([real, real_root]) != real_root:
        raise DataError(
            f"{where}: {rel!r} resolves to a file outside {root} (a symbolic link leaving the "
            "dataset is refused)"
        )
    return real


def file_identity(path: str) -> tuple[int, int] | str:
    """What makes two paths the same file: (device, inode) when it can be read, else the path."""
    try:
        st = os.stat(path)
    except OSError:
        return path
    return (st.st_dev, st.st_ino)
