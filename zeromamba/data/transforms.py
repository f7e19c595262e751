"""Image transforms on tensors, without torchvision (it does not install beside the CPU torch wheel).

Every transform maps an image tensor ``(3, H, W)`` to an image tensor. Decoded images arrive as
``uint8`` (0..255); :class:`ToFloat` turns them into ``float32`` in [0, 1]. The pipelines the
trainer uses are :func:`train_transform` (resize, random horizontal flip, ImageNet normalisation —
the official ZeroMamba recipe; optionally random greyscale copies) and :func:`eval_transform` (resize, normalisation).

Random transforms draw from the ``generator`` they are given, or from torch's global RNG when it is
``None``; ``torch.utils.data.DataLoader`` seeds each worker's global RNG from the main process, so
``torch.manual_seed`` alone makes a run repeatable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[torch.Tensor], torch.Tensor]


class Compose:
    """Applies ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class ToFloat:
    """``uint8`` (3, H, W) in 0..255 -> ``float32`` in [0, 1]; float input is cast to float32."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.dtype == torch.uint8:
            return img.to(torch.float32).div_(255.0)
        return img.to(torch.float32)

    def __repr__(self) -> str:
        return "ToFloat()"


class Resize:
    """Bilinear resize of a float (3, H, W) image to (3, size, size), antialiased when shrinking
    (as PIL's bilinear resize, which the official ``transforms.Resize((S, S))`` uses)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"Resize: size must be positive, got {size}")
        self.size = int(size)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2:] == (self.size, self.size):
            return img
        return F.interpolate(
            img[None],
            size=(self.size, self.size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0]

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomHorizontalFlip:
    """Mirrors the image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p = float(p)
        self.generator = generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if torch.rand((), generator=self.generator).item() < self.p:
            return img.flip(-1)
        return img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomGrayscale:
    """Replaces the image by its luminance (ITU-R 601 weights, copied to the three channels) with
    probability ``p``. Applied before normalisation, to a float image in [0, 1].

    Why (docs/design.md §8.7): trained from scratch, a network reads an attribute such as size or
    pattern through colour-specific filters; when the seen classes confound two attributes (every
    blue class small) it learns "blue means small" and fails on a large blue unseen class. Grey
    copies of every class make it also read size, shape and pattern without colour."""

    WEIGHTS = (0.299, 0.587, 0.114)

    def __init__(self, p: float, generator: torch.Generator | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomGrayscale: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = generator
        self.weights = torch.tensor(self.WEIGHTS, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-3] != 3:
            raise ValueError(f"RandomGrayscale: expected a (3, H, W) image, got {tuple(img.shape)}")
        if torch.rand((), generator=self.generator).item() < self.p:
            return (img * self.weights.to(img.dtype)).sum(-3, keepdim=True).expand_as(img).clone()
        return img

    def __repr__(self) -> str:
        return f"RandomGrayscale(p={self.p})"


class RandomResizedCrop:
    """Crops a random box covering ``scale`` of the area with aspect ratio in ``ratio`` (log-uniform),
    then resizes it to (size, size). After 10 rejected draws it falls back to the whole image."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        generator: torch.Generator | None = None,
    ):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"RandomResizedCrop: need 0 < scale[0] <= scale[1] <= 1, got {scale}")
        self.resize = Resize(size)
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.generator = generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        for _ in range(10):
            u = torch.rand(4, generator=self.generator, dtype=torch.float64).tolist()
            area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
            aspect = math.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * u[1])
            ch = round(math.sqrt(area / aspect))
            cw = round(math.sqrt(area * aspect))
            if 0 < ch <= h and 0 < cw <= w:
                top = int(u[2] * (h - ch + 1))
                left = int(u[3] * (w - cw + 1))
                return self.resize(img[..., top : top + ch, left : left + cw])
        return self.resize(img)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.resize.size}, scale={self.scale})"


class Normalize:
    """Per-channel ``(img - mean) / std`` on a float (3, H, W) image."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return (img - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def eval_transform(size: int) -> Compose:
    """uint8/float (3, H, W) -> float32 (3, size, size): resize, ImageNet normalisation."""
    return Compose([ToFloat(), Resize(size), Normalize()])


def train_transform(
    size: int,
    crop_scale: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    grayscale: float = 0.0,
) -> Compose:
    """The training pipeline: resize (or, with ``crop_scale``, a random resized crop covering that
    fraction of the area), random horizontal flip, with probability ``grayscale`` the image's
    luminance (:class:`RandomGrayscale`), ImageNet normalisation. The default is the official
    ZeroMamba recipe (resize + flip)."""
    first = (
        Resize(size)
        if crop_scale is None
        else RandomResizedCrop(size, scale=crop_scale, generator=generator)
    )
    steps = [ToFloat(), first, RandomHorizontalFlip(0.5, generator=generator)]
    if grayscale:
        steps.append(RandomGrayscale(grayscale, generator=generator))
    return Compose([*steps, Normalize()])
