"""Checkpoint files: atomic writes and loads that name the file when it is unreadable.

A checkpoint is written to a temporary file in the destination's folder, flushed and fsync'ed,
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows), and the folder
is fsync'ed so the rename itself survives a crash. A process killed at any moment therefore
leaves either the previous complete file or the new complete file, never a torn one; at worst a
stray ``.tmp-*`` file, which :func:`remove_stale_temporaries` deletes on the next start.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ..files import default_file_mode

FORMAT = "zeromamba-checkpoint"
VERSION = 1
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a zeromamba checkpoint."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(
    path: str | os.PathLike, write: Callable[[IO], object], mode: str, encoding: str | None = None
) -> Path:
    """Open a temporary file beside ``path`` with ``mode``, ``write`` into it, fsync it and
    rename it over ``path``; the temporary file is removed if anything fails."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, default_file_mode())  # mkstemp's 0600 would ignore the umask
        with os.fdopen(fd, mode, encoding=encoding) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
        if isinstance(e, RuntimeError) and "write" in str(e).lower():  # torch's stream writer
            raise OSError(f"cannot write {path} (disk full?): {e}") from e
        raise
    _fsync_dir(path.parent)
    return path


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` so that ``path`` always holds a complete file."""
    return _write_atomic(path, lambda f: torch.save(obj, f), "wb")


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write a text file (JSON, JSONL) with the same temporary-file-and-rename guarantee."""
    return _write_atomic(path, lambda f: f.write(text), "w", encoding="utf-8")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed run left in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(_TMP_PREFIX + "*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load`` on CPU (weights only: no code runs), with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt, truncated or not a PyTorch "
            f"checkpoint ({type(e).__name__}: {e})"
        ) from e


# What a run's checkpoints hold, by type (``required`` entries are checked on load).
ENTRY_TYPES = {"config": dict, "stage": str, "epoch": int, "model": dict, "history": list}


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load one of our checkpoints (see :func:`make_checkpoint`), checking its format tag,
    version and the ``required`` entries."""
    return check_checkpoint(load_file(path), path, required)


def check_checkpoint(
    obj: Any, path: str | os.PathLike, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``obj`` if it is one of our checkpoints of this version with the ``required`` entries
    (of the types in ``ENTRY_TYPES``); :class:`CheckpointError` naming ``path`` otherwise."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a zeromamba training checkpoint (no '{FORMAT}' tag); official "
            "ZeroMamba weights are read by `zeromamba eval --checkpoint`, not by --resume"
        )
    version = obj.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and version > VERSION
        raise CheckpointError(
            f"{path}: checkpoint version {version!r} is not {VERSION}, the one this zeromamba "
            "reads" + (" (written by a newer zeromamba)" if newer else "")
        )
    for key in required:
        kind = ENTRY_TYPES.get(key, object)
        if not isinstance(obj.get(key), kind) or isinstance(obj.get(key), bool):
            raise CheckpointError(
                f"{path}: the checkpoint's {key!r} entry is missing or not a {kind.__name__}"
            )
    return obj


def load_weights(module: torch.nn.Module, state: Any, path: str | os.PathLike) -> None:
    """``module.load_state_dict(state)``, refusing non-finite weights and naming ``path`` and
    the first offending key when the state does not fit (another model config or dataset)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the weights are a {type(state).__name__}, not a state dict")
    check_finite_weights(state, path)
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{path} does not fit this model (another model config, dataset or attribute "
            f"count?): {' '.join(x.strip() for x in first[:3])}"
        ) from e


def check_finite_weights(state: dict, path: str | os.PathLike) -> None:
    """Refuses a state dict with NaN or Inf weights, naming ``path`` and the first key."""
    for key, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all()):
            raise CheckpointError(
                f"{path}: weight {key!r} holds NaN or Inf values ({int((~t.isfinite()).sum())} "
                "of them): the checkpoint is corrupt or from a diverged run"
            )


def make_checkpoint(**fields: Any) -> dict[str, Any]:
    """A checkpoint dict: the format tag and version, then ``fields`` (model, optimizer, ...)."""
    return {"format": FORMAT, "version": VERSION, **fields}
