"""Reading image files safely: decoding to uint8 RGB (16-bit and float images scaled, not
saturated or truncated), a pixel limit against decompression bombs, and a check of every image of
a task before training starts.

A file that is missing, unreadable or not a decodable image gets one message for all three
(``"... is missing, unreadable or not a decodable image"``), so split lists cannot be used to
probe which paths exist.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable

import numpy as np
import torch

from .core import DataError

# Pillow's own decompression-bomb threshold (about 1/4 GiB of 24-bit pixels), enforced here as a
# hard limit with a message that names the file.
MAX_PIXELS = 89_478_485

_RGB_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
_UINT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def _unreadable(path: str, where: str | None) -> DataError:
    listed = f" (listed in {where})" if where else ""
    return DataError(f"image {path}{listed} is missing, unreadable or not a decodable image")


def _to_rgb(im, path: str) -> np.ndarray:
    """A decoded Pillow image -> uint8 (H, W, 3)."""
    if im.mode in _RGB_MODES:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    if im.mode in _UINT16_MODES:  # 16-bit greyscale: 0..65535 -> 0..255
        grey = np.rint(np.asarray(im, dtype=np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    elif im.mode == "F":  # float greyscale: must be in [0, 1]
        f = np.asarray(im, dtype=np.float64)
        if not np.isfinite(f).all() or f.min() < 0.0 or f.max() > 1.0:
            raise DataError(
                f"image {path}: a float image must hold finite values in [0, 1], got "
                f"[{np.nanmin(f)}, {np.nanmax(f)}]"
            )
        grey = np.rint(f * 255.0).astype(np.uint8)
    else:
        raise DataError(
            f"image {path}: pixel mode {im.mode!r} is not supported (its value range is "
            "ambiguous); save it as 8- or 16-bit greyscale or RGB"
        )
    return np.repeat(grey[:, :, None], 3, axis=2)


def _open(path: str, where: str | None):
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DataError(
            f"image {path}: larger than the limit of {MAX_PIXELS} pixels (decompression bomb?)"
        ) from e
    except (OSError, ValueError, SyntaxError) as e:  # missing, unreadable, unknown format
        raise _unreadable(path, where) from e
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise DataError(
            f"image {path}: {w} x {h} = {w * h} pixels, more than the limit of {MAX_PIXELS} "
            "(decompression bomb?)"
        )
    return im


def decode_image(path: str, where: str | None = None) -> torch.Tensor:
    """Reads an image file as a uint8 RGB tensor (3, H, W); :class:`DataError` names the file."""
    im = _open(path, where)
    try:
        with im:
            im.load()
            arr = _to_rgb(im, path)
    except DataError:
        raise
    except Exception as e:  # truncated or corrupt data after a valid header
        raise _unreadable(path, where) from e
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def check_image(path: str, where: str | None = None) -> None:
    """Decodes ``path`` completely (JPEGs at reduced scale, which still reads every byte) and
    checks its mode and pixel count; raises :class:`DataError` naming the file."""
    im = _open(path, where)
    try:
        with im:
            if im.format == "JPEG":
                im.draft("RGB", (64, 64))
            im.load()
            if im.mode not in _RGB_MODES:
                _to_rgb(im, path)
    except DataError:
        raise
    except Exception as e:
        raise _unreadable(path, where) from e


def check_images(items: Iterable[tuple[str, str | None]], what: str) -> None:
    """Checks every image of ``items`` ((path, where it is listed) pairs) with
    :func:`check_image`; raises one :class:`DataError` naming the first few bad files and how
    many there are."""
    items = list(dict(items).items())  # each file once
    errors: list[str] = []
    for i, (path, where) in enumerate(items):
        try:
            check_image(path, where)
        except DataError as e:
            errors.append(str(e))
        if (i + 1) % 5000 == 0:
            print(f"{what}: checked {i + 1}/{len(items)}", file=sys.stderr)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise DataError(
            f"{what}: {len(errors)} of {len(items)} cannot be used: " + "; ".join(errors[:3]) + more
        )
