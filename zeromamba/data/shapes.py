"""The built-in zero-shot task: procedurally drawn shapes, generated from a seed and cached.

Every class is a combination of four visual factors, each value one binary attribute
(10 attributes)::

    shape    circle | square | triangle
    colour   red | green | blue
    size     small | large
    pattern  solid | striped

24 of the 36 combinations are classes ("large blue striped square" ...): 18 seen (14 train +
4 val) and 6 unseen. The classes are drawn from the seed under three rules, checked at generation:
every unseen class is a new combination of attribute values that the seen classes show (each of
its values appears in some seen class), every val class is one of the train classes' values
likewise, and any two unseen classes differ in at least two factors. Attribute vectors are the
classes' binary 0/1 rows, L2-normalised.

Images are RGB ``image_size`` x ``image_size`` (default 32), drawn at twice the size and
average-pooled (antialiasing), with nuisance that carries no class information: object position,
a +-10% size jitter, colour jitter, stripe angle, period and phase, a grey background with random
tint and gradient, and pixel noise. Per seen class 60 trainval + 20 test_seen images, per unseen
class 30 test_unseen images: 1620 images in all (1440 seen, 180 unseen; 5 MB at 32 px).

Word vectors: :func:`pseudo_word_vectors` of the attribute names ("shape circle", "colour red",
...), width 300 like the real benchmarks' word2vec, so attributes of one factor share a component.

The task is cached as ``builtin-v{VERSION}-seed{seed}-{image_size}px.pt`` in ``cache_dir``
(default ``$ZEROMAMBA_CACHE``, else ``$XDG_CACHE_HOME/zeromamba``, else ``~/.cache/zeromamba``),
written atomically; an unreadable cache file is regenerated.
"""

from __future__ import annotations

import itertools
import os
import pickle
import tempfile

import numpy as np
import torch

from ..files import default_file_mode
from .core import ZeroShotData, image_datasets, pseudo_word_vectors

VERSION = 1
# All images are rendered into memory (and the cache file): 1620 x 3 x S^2 bytes, 244 MB at the
# largest size allowed.
MAX_IMAGE_SIZE = 224
FACTORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shape", ("circle", "square", "triangle")),
    ("colour", ("red", "green", "blue")),
    ("size", ("small", "large")),
    ("pattern", ("solid", "striped")),
)
N_UNSEEN, N_VAL, N_TRAIN = 6, 4, 14
PER_SEEN_TRAINVAL, PER_SEEN_TEST, PER_UNSEEN = 60, 20, 30
N_IMAGES = (N_TRAIN + N_VAL) * (PER_SEEN_TRAINVAL + PER_SEEN_TEST) + N_UNSEEN * PER_UNSEEN

_RGB = np.array([[0.85, 0.15, 0.15], [0.15, 0.72, 0.2], [0.15, 0.3, 0.9]], dtype=np.float32)


def default_cache_dir() -> str:
    """``$ZEROMAMBA_CACHE``, else ``$XDG_CACHE_HOME/zeromamba``, else ``~/.cache/zeromamba``."""
    if os.environ.get("ZEROMAMBA_CACHE"):
        return os.environ["ZEROMAMBA_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "zeromamba")


def _values_covered(classes: np.ndarray, by: np.ndarray) -> bool:
    """Whether every factor value of ``classes`` (k, 4) occurs in some row of ``by`` (m, 4)."""
    return all(set(classes[:, f]) <= set(by[:, f]) for f in range(len(FACTORS)))


def check_compositional(seen: np.ndarray, unseen: np.ndarray) -> None:
    """Raises if an unseen combination (row of factor values) is not a new combination of values
    shown by the seen combinations."""
    seen_rows = {tuple(r) for r in seen.tolist()}
    for row in unseen.tolist():
        if tuple(row) in seen_rows:
            raise RuntimeError(f"unseen combination {row} is also a seen class")
    if not _values_covered(unseen, seen):
        raise RuntimeError("an unseen class has an attribute value that no seen class shows")


def _draw_classes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, unseen) factor-value rows, drawn until the module's rules hold."""
    combos = np.array(list(itertools.product(*(range(len(v)) for _, v in FACTORS))))
    for _ in range(10_000):
        pick = combos[rng.permutation(len(combos))[: N_UNSEEN + N_VAL + N_TRAIN]]
        unseen, val, train = np.split(pick, [N_UNSEEN, N_UNSEEN + N_VAL])
        distance = (unseen[:, None, :] != unseen[None, :, :]).sum(-1)
        if (distance + 2 * np.eye(N_UNSEEN, dtype=int)).min() < 2:
            continue
        seen = np.concatenate([train, val])
        if _values_covered(unseen, seen) and _values_covered(val, train):
            check_compositional(seen, unseen)
            check_compositional(train, val)
            return train, val, unseen
    raise RuntimeError("could not draw classes satisfying the built-in task's rules")


def _render(values: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Draws one image per row of factor values (n, 4) -> uint8 (n, 3, size, size)."""
    n, res = len(values), 2 * size
    shape, colour, large, striped = (values[:, i] for i in range(4))
    grid = (np.arange(res, dtype=np.float32) + 0.5) / res
    y, x = grid[None, :, None], grid[None, None, :]

    def per_image(a):
        return np.asarray(a, dtype=np.float32)[:, None, None]

    r = np.where(large == 1, 0.26, 0.14) * rng.uniform(0.9, 1.1, n)
    lo, hi = 1.25 * r + 0.02, 1.0 - 1.25 * r - 0.02
    cx, cy = per_image(rng.uniform(lo, hi)), per_image(rng.uniform(lo, hi))
    dx, dy, rr = x - cx, y - cy, per_image(r)
    circle = dx**2 + dy**2 <= rr**2
    square = np.maximum(np.abs(dx), np.abs(dy)) <= 0.886 * rr  # same area as the circle
    # Upright triangle with its centroid near the centre, 2.1 r tall and 2.7 r wide at the base.
    triangle = (dy >= -1.2 * rr) & (dy <= 0.9 * rr) & (np.abs(dx) <= (dy + 1.2 * rr) * (1.35 / 2.1))
    mask = np.choose(per_image(shape).astype(int), [circle, square, triangle])

    rgb = np.clip(_RGB[colour] + rng.normal(0.0, 0.04, (n, 3)), 0.0, 1.0).astype(np.float32)
    theta = per_image(rng.uniform(0.0, np.pi, n))
    phase = (x * np.cos(theta) + y * np.sin(theta)) / per_image(rng.uniform(0.08, 0.11, n))
    stripe = (phase + per_image(rng.uniform(0.0, 1.0, n))) % 1.0 < 0.5
    dark = stripe & (striped == 1)[:, None, None]
    obj = rgb[:, :, None, None] * np.where(dark, np.float32(0.35), np.float32(1.0))[:, None]

    grey = rng.uniform(0.3, 0.7, n)[:, None] + rng.normal(0.0, 0.04, (n, 3))
    phi = per_image(rng.uniform(0.0, 2 * np.pi, n))
    ramp = per_image(rng.uniform(-0.12, 0.12, n)) * (
        (x - 0.5) * np.cos(phi) + (y - 0.5) * np.sin(phi)
    )
    bg = grey[:, :, None, None].astype(np.float32) + ramp[:, None]

    img = np.where(mask[:, None], obj, bg)
    img = img.reshape(n, 3, size, 2, size, 2).mean(axis=(3, 5))
    img = img + rng.normal(0.0, 0.03, img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _check_size(image_size: int) -> None:
    if not 32 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"the built-in task needs 32 <= image_size <= {MAX_IMAGE_SIZE}, got {image_size} "
            f"(its {N_IMAGES} images are rendered in memory: "
            f"{N_IMAGES * 3 * image_size**2 / 1e6:.0f} MB at that size)"
        )


def generate(seed: int = 0, image_size: int = 32) -> dict:
    """Generates the task's tensors (no caching): a dict of plain tensors, lists and ints."""
    _check_size(image_size)
    train, val, unseen = _draw_classes(np.random.default_rng([seed, 0]))
    combos = np.concatenate([train, val, unseen])
    order = np.lexsort(combos.T[::-1])  # class ids in lexicographic order of factor values
    combos = combos[order]
    role = np.repeat(np.array(["train", "val", "unseen"]), [N_TRAIN, N_VAL, N_UNSEEN])[order]

    attribute_names = [f"{f} {v}" for f, values in FACTORS for v in values]
    offsets = np.cumsum([0] + [len(v) for _, v in FACTORS])[:-1]
    attributes = np.zeros((len(combos), len(attribute_names)), dtype=np.float32)
    for f, off in enumerate(offsets):
        attributes[np.arange(len(combos)), off + combos[:, f]] = 1.0
    # "small red striped circle": size, colour, pattern, shape
    class_names = [" ".join(FACTORS[f][1][c[f]] for f in (2, 1, 3, 0)) for c in combos]

    counts = np.where(role == "unseen", PER_UNSEEN, PER_SEEN_TRAINVAL + PER_SEEN_TEST)
    labels = np.repeat(np.arange(len(combos)), counts)
    rng = np.random.default_rng([seed, 1])
    # Chunks of a few MB per array keep the work cache-sized (several times faster); the
    # chunk size depends only on image_size, so the random stream is deterministic.
    chunk = max(1, 256 * 32 * 32 // image_size**2)
    images = np.concatenate(
        [
            _render(combos[labels[s : s + chunk]], rng, image_size)
            for s in range(0, len(labels), chunk)
        ]
    )

    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    split: dict[str, list[int]] = {k: [] for k in ("train", "val", "test_seen", "test_unseen")}
    for c, (s, k) in enumerate(zip(start, counts)):
        ids = list(range(s, s + k))
        if role[c] == "unseen":
            split["test_unseen"] += ids
        else:
            split[role[c]] += ids[:PER_SEEN_TRAINVAL]
            split["test_seen"] += ids[PER_SEEN_TRAINVAL:]
    split["trainval"] = sorted(split["train"] + split["val"])
    return {
        "version": VERSION,
        "seed": seed,
        "image_size": image_size,
        "class_names": class_names,
        "attribute_names": attribute_names,
        "attributes": torch.from_numpy(attributes),
        "word_vectors": pseudo_word_vectors(attribute_names),
        "images": torch.from_numpy(images),
        "labels": torch.from_numpy(labels).long(),
        "splits": {k: torch.tensor(v, dtype=torch.long) for k, v in split.items()},
    }


def _read_cache(path: str, seed: int, image_size: int) -> dict | None:
    try:
        blob = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
        return None
    ok = (
        isinstance(blob, dict)
        and blob.get("version") == VERSION
        and blob.get("seed") == seed
        and blob.get("image_size") == image_size
    )
    return blob if ok else None


def builtin(seed: int = 0, image_size: int = 32, cache_dir: str | None = None) -> ZeroShotData:
    """The built-in zero-shot task (module docstring), generated from ``seed`` and cached."""
    _check_size(image_size)  # before any cache lookup
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"builtin-v{VERSION}-seed{seed}-{image_size}px.pt")
    blob = _read_cache(path, seed, image_size) if os.path.isfile(path) else None
    if blob is None:
        blob = generate(seed, image_size)
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        try:
            os.fchmod(fd, default_file_mode())
            with os.fdopen(fd, "wb") as f:
                torch.save(blob, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    return ZeroShotData(
        name="builtin",
        class_names=list(blob["class_names"]),
        attributes=blob["attributes"],
        attribute_names=list(blob["attribute_names"]),
        word_vectors=blob["word_vectors"],
        splits=image_datasets(blob["labels"], blob["splits"], image_size, images=blob["images"]),
        image_size=image_size,
        word_vector_source="pseudo",
    )
