"""Pictures of label maps, boundaries, directions and refinement errors (numpy + Pillow, no matplotlib).

Every function takes numpy arrays (``(H, W)`` label maps, ``(H, W, 3)`` uint8 RGB images) and returns an
``(H, W, 3)`` uint8 RGB array, except :func:`panel`, which returns a ``PIL.Image``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .ops.directions import direction_vectors

__all__ = [
    "PALETTES",
    "change_crops",
    "colorize",
    "direction_legend",
    "direction_wheel",
    "error_map",
    "overlay_boundary",
    "palette",
    "panel",
    "refinement_sheet",
]

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


FIXED, BROKEN, STILL_WRONG = (0, 170, 0), (220, 0, 0), (150, 150, 150)


def error_map(
    before: np.ndarray,
    after: np.ndarray,
    target: np.ndarray | None = None,
    *,
    ignore_index: int | None = 255,
    grow: int = 0,
) -> np.ndarray:
    """Pixels fixed by refinement in green, broken in red, still wrong in grey, correct in white.

    Without a ``target`` (no reference at hand): changed pixels in blue, the rest white. ``grow`` thickens the
    green, red and blue marks by that many pixels so that 1-px changes show at full-image scale (grey is
    never grown).
    """
    if target is None:
        out = np.full((*before.shape, 3), 255, np.uint8)
        out[_grown(before != after, grow)] = (30, 90, 230)
        return out
    valid = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    wrong_before = (before != target) & valid
    wrong_after = (after != target) & valid
    out = np.full((*target.shape, 3), 255, np.uint8)
    out[wrong_before & wrong_after] = STILL_WRONG
    out[~valid] = (40, 40, 40)
    out[_grown(wrong_before & ~wrong_after, grow)] = FIXED
    out[_grown(~wrong_before & wrong_after, grow)] = BROKEN
    return out


def _grown(mask: np.ndarray, width: int) -> np.ndarray:
    if width <= 0 or not mask.any():
        return mask
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=width)


def change_crops(
    images: Sequence[np.ndarray], changed: np.ndarray, *, count: int = 3, size: int = 48, zoom: int = 4
) -> list[list[np.ndarray]]:
    """Zoomed crops around the places with the most changed pixels, so that 1-px changes can be seen.

    Args:
        images: ``(H, W, 3)`` uint8 pictures of the same scene (image, before, after, changes...).
        changed: bool ``(H, W)``, the pixels refinement changed.
        count: at most this many crops (non-overlapping windows, most changes first).
        size: crop side in pixels before zooming.
        zoom: nearest-neighbour magnification.

    Returns:
        One list per crop, holding the crop of every image in order; empty when nothing changed.
    """
    from scipy import ndimage

    h, w = changed.shape
    size = max(1, min(size, h, w))
    density = ndimage.uniform_filter(changed.astype(np.float32), size, mode="constant")
    crops = []
    for _ in range(count):
        if density.max() <= 0:
            break
        cy, cx = np.unravel_index(int(density.argmax()), density.shape)
        y0, x0 = min(max(cy - size // 2, 0), h - size), min(max(cx - size // 2, 0), w - size)
        crops.append(
            [np.kron(img[y0 : y0 + size, x0 : x0 + size], np.ones((zoom, zoom, 1), np.uint8)) for img in images]
        )
        density[max(y0 - size // 2, 0) : y0 + size + size // 2, max(x0 - size // 2, 0) : x0 + size + size // 2] = 0
    return crops


def direction_legend(
    num_directions: int = 8, size: int = 96, background: Sequence[int] = (255, 255, 255)
) -> np.ndarray:
    """A wheel that reads :func:`direction_wheel`: each direction's colour drawn as a spoke pointing its way."""
    vectors = direction_vectors(num_directions).astype(float)
    colours = direction_wheel(np.arange(num_directions)[None], None, num_directions)[0]
    canvas = Image.new("RGB", (size, size), tuple(background))
    draw = ImageDraw.Draw(canvas)
    c = size / 2
    for (dy, dx), colour in zip(vectors, colours):
        norm = float(np.hypot(dy, dx))
        end = (c + dx / norm * (size * 0.45), c + dy / norm * (size * 0.45))
        draw.line([(c, c), end], fill=tuple(int(v) for v in colour), width=max(2, size // 16))
    draw.ellipse([c - 3, c - 3, c + 3, c + 3], fill=(0, 0, 0))
    return np.asarray(canvas)


def caption_font(width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A font for titles over a picture ``width`` pixels wide, readable when the sheet is shown at README width
    (Pillow's scalable default font; its 10-px bitmap font where Pillow has no FreeType)."""
    size = int(min(max(14, width // 24), 40))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def panel(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    columns: int = 3,
    caption_height: int | None = None,
    legends: Sequence[np.ndarray | None] | None = None,
) -> Image.Image:
    """Tile ``(H, W, 3)`` uint8 images of equal size into a grid with a title above each.

    ``caption_height``: the title strip's height (None: from the font, which scales with the image width);
    ``legends``: per image, an optional small ``(h, w, 3)`` picture drawn at the right of its title strip, so
    that a key never covers the data."""
    if len(images) != len(titles) or not images:
        raise ValueError(f"panel: expected as many titles as images (>0), got {len(images)} and {len(titles)}")
    legends = list(legends) if legends is not None else [None] * len(images)
    h, w = images[0].shape[:2]
    font = caption_font(w)
    text_height = int(font.getbbox("Ag")[3])
    tallest = max((legend.shape[0] for legend in legends if legend is not None), default=0)
    caption_height = int(caption_height or max(text_height + 12, tallest + 6))
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * w, rows * (h + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, title, legend) in enumerate(zip(images, titles, legends)):
        x, y = (i % columns) * w, (i // columns) * (h + caption_height)
        sheet.paste(Image.fromarray(np.asarray(img, np.uint8)), (x, y + caption_height))
        draw.text((x + 8, y + (caption_height - text_height) // 2), title, fill=(0, 0, 0), font=font)
        if legend is not None:
            after_title = x + 8 + int(draw.textlength(title, font=font)) + 12
            corner = (min(after_title, x + w - legend.shape[1] - 4), y + (caption_height - legend.shape[0]) // 2)
            sheet.paste(Image.fromarray(legend), corner)
    return sheet


def refinement_sheet(
    image: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    target: np.ndarray | None = None,
    *,
    num_classes: int | None = None,
    palette_name: str | None = None,
    ignore_index: int | None = 255,
    direction: np.ndarray | None = None,
    moving: np.ndarray | None = None,
    num_directions: int = 8,
    crops: int = 3,
) -> Image.Image:
    """One picture of a refinement: full-size panels, then zoomed crops where most pixels changed.

    Panels: the image with the changed pixels marked, the prediction, the refined map, the changes (against
    ``target``: fixed green, broken red, still wrong grey; without it: changed blue), and with ``direction``
    the predicted directions on the ``moving`` pixels beside a legend wheel. Each crop row repeats image,
    prediction, refined and changes around one of the ``crops`` places with the most changes.
    """
    if num_classes is None:
        valid = [m[m != ignore_index] if ignore_index is not None else m for m in (before, after)]
        num_classes = int(max(v.max(initial=0) for v in valid)) + 1
    changed = before != after

    def colours(labels: np.ndarray) -> np.ndarray:
        return colorize(labels, num_classes, name=palette_name, ignore_index=ignore_index)

    changes = error_map(before, after, target, ignore_index=ignore_index)
    legend_text = "fixed green, broken red, still wrong grey" if target is not None else "changed pixels (blue)"
    full = [overlay_boundary(image, changed, color=(30, 90, 230)), colours(before), colours(after)]
    titles = [f"image, {int(changed.sum())} pixels changed", "prediction", "refined"]
    full.append(error_map(before, after, target, ignore_index=ignore_index, grow=1))
    titles.append(legend_text)
    legends: list[np.ndarray | None] = [None] * len(full)
    if direction is not None:
        moving = np.ones(direction.shape, bool) if moving is None else moving
        # A pixel whose step leaves the image is clamped onto itself: it stays, so it is not drawn.
        full.append(direction_wheel(direction, moving & _step_stays_inside(direction, num_directions), num_directions))
        titles.append("predicted directions")
        legends.append(direction_legend(num_directions, size=int(min(72, max(40, image.shape[1] // 10)))))
        if target is not None:
            full.append(colours(target))
            titles.append("reference")
            legends.append(None)
    sheets = [panel(full, titles, columns=3, legends=legends)]
    # Four zoomed crops fill the width of the three full-size panels.
    size = max(1, min(48, *image.shape[:2]))
    zoom = max(1, (3 * image.shape[1]) // (4 * size))
    zoomed = change_crops([image, colours(before), colours(after), changes], changed, count=crops, size=size, zoom=zoom)
    for i, row in enumerate(zoomed):
        sheets.append(panel(row, [f"zoom {i + 1}: image", "prediction", "refined", "changes"], columns=4))
    return _stack(sheets)


def _step_stays_inside(direction: np.ndarray, num_directions: int) -> np.ndarray:
    """Whether one step along each pixel's direction class stays inside the image (False for ``-1``)."""
    vectors = direction_vectors(num_directions)
    h, w = direction.shape
    d = np.clip(direction, 0, num_directions - 1)
    step_y, step_x = np.sign(vectors[d, 0]), np.sign(vectors[d, 1])
    y, x = np.mgrid[0:h, 0:w]
    return (direction >= 0) & (y + step_y >= 0) & (y + step_y < h) & (x + step_x >= 0) & (x + step_x < w)


def _stack(sheets: Sequence[Image.Image]) -> Image.Image:
    width = max(s.width for s in sheets)
    out = Image.new("RGB", (width, sum(s.height for s in sheets)), "white")
    y = 0
    for sheet in sheets:
        out.paste(sheet, (0, y))
        y += sheet.height
    return out
