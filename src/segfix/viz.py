"""Pictures of label maps, boundaries, directions and refinement errors (numpy + Pillow, no matplotlib).

Every function takes numpy arrays (``(H, W)`` label maps, ``(H, W, 3)`` uint8 RGB images) and returns an
``(H, W, 3)`` uint8 RGB array, except :func:`panel`, which returns a ``PIL.Image``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .directions import direction_vectors

__all__ = ["PALETTES", "colorize", "direction_wheel", "error_map", "overlay_boundary", "palette", "panel"]

CITYSCAPES_PALETTE = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]  # fmt: skip
CAMVID_PALETTE = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]  # fmt: skip
PALETTES = {"cityscapes": CITYSCAPES_PALETTE, "camvid": CAMVID_PALETTE}
"""Named palettes, trainId order. Other datasets (e.g. ADE20K's 150 classes) use :func:`palette`."""

IGNORE_COLOR = (0, 0, 0)


def palette(num_classes: int, name: str | None = None) -> np.ndarray:
    """``(num_classes, 3)`` uint8 colours: a named palette, extended with well-spread hues when too short."""
    base = list(PALETTES.get(name, [])) if name else []
    if name is not None and name not in PALETTES and name != "ade20k":
        raise ValueError(f"palette: expected one of {sorted([*PALETTES, 'ade20k'])} or None, got {name!r}")
    golden = 0.618033988749895
    while len(base) < num_classes:
        i = len(base)
        r, g, b = colorsys.hsv_to_rgb((i * golden) % 1.0, 0.65 + 0.35 * (i % 2), 0.6 + 0.4 * ((i // 2) % 2))
        base.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.asarray(base[:num_classes], dtype=np.uint8)


def colorize(
    label: np.ndarray, num_classes: int | None = None, *, name: str | None = None, ignore_index: int | None = 255
) -> np.ndarray:
    """Colour a label map ``(H, W)``; ignore and out-of-range labels are black."""
    label = np.asarray(label)
    if num_classes is None:
        valid = label[label != ignore_index] if ignore_index is not None else label
        num_classes = int(valid.max()) + 1 if valid.size else 1
    colours = np.concatenate([palette(num_classes, name), np.array([IGNORE_COLOR], np.uint8)])
    index = np.where((label >= 0) & (label < num_classes), label, num_classes)
    return colours[index]


def overlay_boundary(
    image: np.ndarray, boundary: np.ndarray, color: Sequence[int] = (255, 40, 40), alpha: float = 0.6
) -> np.ndarray:
    """Blend ``color`` into ``image`` ``(H, W, 3)`` where ``boundary`` ``(H, W)`` is True."""
    out = image.astype(np.float32).copy()
    out[boundary] = (1 - alpha) * out[boundary] + alpha * np.asarray(color, np.float32)
    return out.round().astype(np.uint8)


def direction_wheel(
    direction: np.ndarray,
    boundary: np.ndarray | None = None,
    num_directions: int = 8,
    background: Sequence[int] = (255, 255, 255),
) -> np.ndarray:
    """Colour each direction class by its angle (hue wheel); off-boundary and ``-1`` pixels get ``background``."""
    vectors = direction_vectors(num_directions).astype(float)
    hues = (np.degrees(np.arctan2(vectors[:, 0], vectors[:, 1])) % 360) / 360
    colours = np.array([[int(c * 255) for c in colorsys.hsv_to_rgb(h, 0.85, 0.95)] for h in hues], np.uint8)
    colours = np.concatenate([colours, np.asarray([background], np.uint8)])
    index = np.where(direction < 0, num_directions, direction)
    if boundary is not None:
        index = np.where(boundary, index, num_directions)
    return colours[index]


def error_map(
    before: np.ndarray, after: np.ndarray, target: np.ndarray, *, ignore_index: int | None = 255
) -> np.ndarray:
    """Pixels fixed by refinement in green, broken in red, still wrong in grey, correct in white."""
    valid = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    wrong_before = (before != target) & valid
    wrong_after = (after != target) & valid
    out = np.full((*target.shape, 3), 255, np.uint8)
    out[wrong_before & wrong_after] = (150, 150, 150)
    out[wrong_before & ~wrong_after] = (0, 170, 0)
    out[~wrong_before & wrong_after] = (220, 0, 0)
    out[~valid] = (40, 40, 40)
    return out


def panel(
    images: Sequence[np.ndarray], titles: Sequence[str], *, columns: int = 3, caption_height: int = 22
) -> Image.Image:
    """Tile ``(H, W, 3)`` uint8 images of equal size into a grid with a title above each."""
    if len(images) != len(titles) or not images:
        raise ValueError(f"panel: expected as many titles as images (>0), got {len(images)} and {len(titles)}")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * w, rows * (h + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, title) in enumerate(zip(images, titles)):
        x, y = (i % columns) * w, (i // columns) * (h + caption_height)
        sheet.paste(Image.fromarray(np.asarray(img, np.uint8)), (x, y + caption_height))
        draw.text((x + 6, y + 5), title, fill=(0, 0, 0))
    return sheet
