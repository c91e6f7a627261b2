"""Training augmentation as plain numpy functions, and the per-sample training example builder.

The paper's recipe: random scale, random crop (padding is ignore), horizontal flip, photometric jitter.
Targets are computed *after* scaling, so the boundary band stays ``max_distance`` pixels wide at the scale the
network sees (the original resized stored distance maps, which widened or narrowed the band).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..ops.directions import flip_direction
from ..ops.targets import boundary_targets, instance_targets
from .files import atomic_write

__all__ = [
    "TrainingExample",
    "TrainTransform",
    "hflip",
    "paste_segments",
    "photometric_jitter",
    "random_crop",
    "resize",
]


@dataclass
class TrainingExample:
    """Arrays for one crop: image ``(3, S, S)`` float32 in [0, 1]; label, boundary ``(S, S)`` int64 with -1 =
    ignore; direction ``(S, S)`` int64 with -1 = no target."""

    image: np.ndarray
    boundary: np.ndarray
    direction: np.ndarray
    label: np.ndarray


def resize(image: np.ndarray, label: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear for the image ``(H, W, 3)``, nearest for the label ``(H, W)``."""
    h, w = label.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    lbl = np.asarray(Image.fromarray(label.astype(np.int32)).resize(size, Image.Resampling.NEAREST)).astype(label.dtype)
    return img, lbl


def hflip(image: np.ndarray, boundary: np.ndarray, direction: np.ndarray, num_directions: int = 8):
    """Flip an image and its precomputed targets left-right; directions are remapped (dx -> -dx)."""
    return (image[:, ::-1].copy(), boundary[:, ::-1].copy(), flip_direction(direction[:, ::-1].copy(), num_directions))


def random_crop(arrays: list[np.ndarray], fills: list[int], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random ``size`` x ``size`` crop of every ``(H, W, ...)`` array; pads with ``fills`` when smaller."""
    h, w = arrays[0].shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    out = []
    y = int(rng.integers(0, max(h - size, 0) + 1))
    x = int(rng.integers(0, max(w - size, 0) + 1))
    for array, fill in zip(arrays, fills):
        if ph or pw:
            pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
            array = np.pad(array, pad, constant_values=fill)
        out.append(array[y : y + size, x : x + size])
    return out


def paste_segments(
    image: np.ndarray,
    label: np.ndarray,
    source_image: np.ndarray,
    source_label: np.ndarray,
    classes: tuple[int, ...],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Copy-paste (Ghiasi et al., 2021): the pixels of ``classes`` in a source image, with their labels, pasted
    onto ``image`` ``(H, W, 3)`` / ``label`` ``(H, W)`` at the same place, the source mirrored at random.

    Thin and small classes (poles, signs, people) own few boundary pixels in a handful of street scenes;
    pasting them onto other backgrounds gives the direction head more of them, against other neighbours. A
    source of another size is cropped or padded (with nothing to paste) to the target's.
    """
    if rng.random() < 0.5:
        source_image, source_label = source_image[:, ::-1], source_label[:, ::-1]
    h, w = label.shape
    sh, sw = min(h, source_label.shape[0]), min(w, source_label.shape[1])
    mask = np.zeros((h, w), bool)
    mask[:sh, :sw] = np.isin(source_label[:sh, :sw], classes)
    if not mask.any():
        return image, label
    image, label = image.copy(), label.copy()
    image[:sh, :sw][mask[:sh, :sw]] = source_image[:sh, :sw][mask[:sh, :sw]]
    label[:sh, :sw][mask[:sh, :sw]] = source_label[:sh, :sw][mask[:sh, :sw]]
    return image, label


def photometric_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation, each by up to ``strength``; returns float32 in [0, 1]."""
    x = image.astype(np.float32) / 255.0
    x = x * (1 + rng.uniform(-strength, strength))
    mean = x.mean()
    x = (x - mean) * (1 + rng.uniform(-strength, strength)) + mean
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * (1 + rng.uniform(-strength, strength)) + grey
    return np.clip(x, 0.0, 1.0)


class TrainTransform:
    """Sample -> :class:`TrainingExample`: flip, scale, targets on the scaled map, crop, jitter.

    Args:
        crop_size: square crop side.
        scale_range: uniform random scale factor range.
        ignore_index: label of ignored pixels in the input.
        max_distance, num_directions: target settings (see :func:`segfix.boundary_targets`).
        instance: build instance targets from ``sample.instance_ids`` instead of semantic ones.
        jitter: photometric jitter strength (0 disables).
        cache_dir: store the targets of unscaled samples here and reuse them (used whenever the random scale is
            exactly 1, e.g. with the original Cityscapes recipe's ``scale_range=(1, 1)``).
        paste_classes: class ids that a ``paste_source`` given to a call contributes (:func:`paste_segments`).
    """

    def __init__(
        self,
        crop_size: int = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        *,
        ignore_index: int = 255,
        max_distance: float = 5,
        num_directions: int = 8,
        instance: bool = False,
        jitter: float = 0.2,
        min_pixels: int = 100,
        cache_dir: str | Path | None = None,
        paste_classes: tuple[int, ...] = (),
    ) -> None:
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.ignore_index = ignore_index
        self.max_distance = max_distance
        self.num_directions = num_directions
        self.instance = instance
        self.jitter = jitter
        self.min_pixels = min_pixels
        self.cache_dir = cache_dir
        self.paste_classes = tuple(paste_classes)

    def _targets(self, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(boundary with -1 = ignore, direction with -1 = none), int64 ``(H, W)`` each."""
        make = instance_targets if self.instance else boundary_targets
        kwargs = {} if self.instance else {"min_pixels": self.min_pixels}
        targets = make(
            label,
            ignore_index=self.ignore_index,
            max_distance=self.max_distance,
            num_directions=self.num_directions,
            border="replicate",
            zero_gradient="no_direction",
            **kwargs,
        )
        ignore = label == self.ignore_index
        boundary = np.where(ignore, -1, targets.boundary.astype(np.int64))
        direction = np.where(targets.boundary & ~ignore, targets.direction, -1)
        return boundary, direction

    def _cached_targets(self, sample, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.cache_dir is None:
            raise ValueError("TrainTransform: cached targets need a cache_dir")
        path = Path(self.cache_dir) / f"{sample.name}.npz"
        if path.is_file():
            with np.load(path) as data:
                return data["boundary"].astype(np.int64), data["direction"].astype(np.int64)
        boundary, direction = self._targets(label)
        atomic_write(
            path,
            lambda tmp: np.savez_compressed(
                tmp, boundary=boundary.astype(np.int8), direction=direction.astype(np.int8)
            ),
        )
        return boundary, direction

    def __call__(self, sample, rng: np.random.Generator, paste_source=None) -> TrainingExample:
        """One training crop of ``sample``; with a ``paste_source`` sample, its ``paste_classes`` are pasted
        on first (semantic targets only)."""
        image = sample.image
        label = sample.instance_ids if self.instance else sample.label
        pasted = paste_source is not None and self.paste_classes and not self.instance
        if pasted:
            image, label = paste_segments(image, label, paste_source.image, paste_source.label, self.paste_classes, rng)
        flip = rng.random() < 0.5
        scale = float(rng.uniform(*self.scale_range))
        if self.cache_dir is not None and scale == 1.0 and not pasted:
            # Targets of the unscaled map are computed once and reused; a flip then remaps their directions.
            boundary, direction = self._cached_targets(sample, label)
            if flip:
                image, boundary, direction = hflip(image, boundary, direction, self.num_directions)
                label = label[:, ::-1]
        else:
            if flip:  # flipping before the targets keeps them exact
                image, label = image[:, ::-1], label[:, ::-1]
            image, label = resize(np.ascontiguousarray(image), np.ascontiguousarray(label), scale)
            boundary, direction = self._targets(label)
        ignore = label == self.ignore_index
        seg = np.where(ignore, -1, label.astype(np.int64)) if not self.instance else np.where(ignore, -1, 0)
        image, boundary, direction, seg = random_crop(
            [image, boundary, direction, seg], [0, -1, -1, -1], self.crop_size, rng
        )
        if self.jitter:
            pixels = photometric_jitter(image, rng, self.jitter)
        else:
            pixels = image.astype(np.float32) / 255.0
        return TrainingExample(
            image=np.ascontiguousarray(pixels.transpose(2, 0, 1)), boundary=boundary, direction=direction, label=seg
        )
