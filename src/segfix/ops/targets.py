"""SegFix training targets from a ground-truth label map: depth, boundary band and direction.

The construction follows the original ``dt_offset_generator.py`` exactly (see ``docs/concepts.md``):

1. For every segment ``s`` (a semantic class, or an instance id), ``d_s`` is the Euclidean distance transform
   of the mask ``label == s``: each pixel's distance to the nearest pixel *not* in ``s``. The image border is
   not a boundary; the transform only sees other pixels.
2. ``depth`` is the sum of the ``d_s``. Segments are disjoint, so each pixel holds its own distance to the
   nearest pixel of another segment. Pixels of ignored or skipped segments have depth 0.
3. ``boundary = depth <= max_distance``: a band of about ``2 * max_distance`` pixels across each edge, both
   sides included, never on ignore pixels.
4. The gradient ``(gy, gx)`` of each ``d_s`` is a cross-correlation with a 5x5 kernel
   ``k_x[dy, dx] = dx / (dx^2 + dy^2)`` (and ``k_y`` with ``dy`` on top), masked to ``s`` and summed over
   segments. It points from the boundary into the interior of the pixel's own segment.
5. ``angle = degrees(atan2(gy, gx))``, binned into ``num_directions`` classes by
   :func:`segfix.ops.directions.angle_to_direction`.

Known artefacts of the original, reproduced by default and fixable by an option:

* ``border='zero'``: the gradient pads the distance map with zeros, so within 2 px of the image border the
  direction is biased towards the image interior (a bottom-row pixel whose true direction is "left" gets
  "up"). ``border='replicate'`` extends each segment's distance map by edge replication instead.
* ``zero_gradient='angle_zero'``: where the gradient is exactly zero (ridges of symmetric shapes, pixels of
  skipped classes), ``atan2(0, 0) = 0`` makes the direction "right" (class 4 of 8). ``'no_direction'``
  marks those pixels with direction ``-1`` instead, which :func:`segfix.direction_to_offset` maps to a zero
  offset and the training loss ignores.
* Small classes (fewer than ``min_pixels``, semantic only) are skipped: their pixels get depth 0 and
  therefore count as boundary, with a zero gradient. Pass ``min_pixels=0`` to keep every class.

The original also stored angles in 2-degree bins (``uint8((angle + 180) / 2)``), which moves bin edges by
up to 2 degrees; this module bins the exact angle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from ..checks import (
    check_array,
    check_integer,
    check_labels_nonnegative,
    check_ndim,
    check_num_directions,
    check_positive_int,
    describe,
    native_byte_order,
)
from .directions import angle_to_direction, direction_to_offset

__all__ = ["BoundaryTargets", "boundary_targets", "gradient_kernels", "instance_targets"]

BorderMode = Literal["zero", "replicate"]
ZeroGradientMode = Literal["angle_zero", "no_direction"]

_KERNEL_RADIUS = 2  # the original's default ksize = 5
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_GRADIENT_EPS = 1e-9  # real gradients of a distance map are O(1); anything this small is rounding noise


@dataclass(frozen=True)
class BoundaryTargets:
    """SegFix targets for one label map, every field of shape ``(H, W)``.

    Attributes:
        depth: float32 distance of each pixel to the nearest pixel of another segment (0 on ignore and
            skipped pixels; ``inf`` when one segment covers the whole image).
        boundary: bool, ``depth <= max_distance`` and not an ignore pixel.
        direction: int64 direction class in ``0 .. num_directions - 1`` (``-1`` only with
            ``zero_gradient='no_direction'``).
        angle: float32 gradient angle in degrees, ``[-180, 180]``, 0 = +x (right), 90 = +y (down).
        num_directions: the number of direction classes used.
    """

    depth: np.ndarray
    boundary: np.ndarray
    direction: np.ndarray
    angle: np.ndarray
    num_directions: int

    def offsets(self) -> np.ndarray:
        """The ground-truth ("oracle") offset field: int8 ``(2, H, W)``, ``(dy, dx)``, zero off the boundary."""
        return direction_to_offset(self.direction, self.boundary, num_directions=self.num_directions)


def gradient_kernels(radius: int = _KERNEL_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """The original's "large Sobel" kernels ``(k_y, k_x)``, float64 arrays of shape ``(2r+1, 2r+1)``.

    ``k_x[r + dy, r + dx] = dx / (dx^2 + dy^2)`` and ``k_y[r + dy, r + dx] = dy / (dx^2 + dy^2)``, zero at the
    centre. Applied as a cross-correlation, they estimate ``(d/dy, d/dx)``.
    """
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    r2 = dx * dx + dy * dy
    r2[radius, radius] = 1.0  # the centre weight is dx = dy = 0 anyway
    return dy / r2, dx / r2


def boundary_targets(
    label: np.ndarray,
    *,
    ignore_index: int | None = 255,
    max_distance: float = 5,
    num_directions: int = 8,
    min_pixels: int = 100,
    border: BorderMode = "zero",
    zero_gradient: ZeroGradientMode = "angle_zero",
) -> BoundaryTargets:
    """SegFix targets from a semantic ground-truth label map (one segment per class).

    Args:
        label: integer label map, shape ``(H, W)``, class ids ``>= 0`` or ``ignore_index``.
        ignore_index: label that is never a class: depth 0, never boundary, but it counts as "another segment"
            for its neighbours. ``None`` when every value is a class.
        max_distance: boundary band half-width in pixels (``depth <= max_distance``).
        num_directions: 4, 8 or 16.
        min_pixels: classes with fewer pixels in this image are skipped (the original's 100).
        border: ``'zero'`` (faithful) or ``'replicate'`` padding for the gradient at the image border.
        zero_gradient: ``'angle_zero'`` (faithful) or ``'no_direction'`` for pixels with a zero gradient.

    Returns:
        A :class:`BoundaryTargets`.

    Raises:
        TypeError: ``label`` is not an integer numpy array.
        ValueError: wrong ndim, negative labels other than ``ignore_index``, or a bad option.

    Example:
        >>> import numpy as np, segfix
        >>> label = np.zeros((20, 20), np.uint8); label[:, 10:] = 1
        >>> t = segfix.boundary_targets(label, min_pixels=0)
        >>> t.direction[5, 9], t.direction[5, 10]  # left class points left (0), right class points right (4)
        (np.int64(0), np.int64(4))
    """
    label = _check_label(label, "label", ignore_index)
    check_positive_int(min_pixels, "min_pixels", minimum=0)
    values, dense, counts = _dense_ids(label)
    keep = counts >= min_pixels
    if ignore_index is not None:
        keep &= values != ignore_index
    return _targets(label, dense, keep, ignore_index, max_distance, num_directions, border, zero_gradient)


def instance_targets(
    instance_ids: np.ndarray,
    *,
    ignore_index: int | None = None,
    max_distance: float = 5,
    num_directions: int = 8,
    min_pixels: int = 0,
    border: BorderMode = "zero",
    zero_gradient: ZeroGradientMode = "angle_zero",
) -> BoundaryTargets:
    """SegFix targets from an instance-id map, where every distinct id is its own segment.

    This is the original's "instance with stuff" target: each thing instance (Cityscapes
    ``labelId * 1000 + k``), each stuff class, each crowd region and the void region are separate segments,
    and no segment is skipped by default. The ``ignore_index`` region (e.g. 255 after mapping Cityscapes'
    unevaluated ids) is still a segment for the distance transform, as in the original, but it is never
    boundary.

    Args:
        instance_ids: integer map, shape ``(H, W)``, ids ``>= 0`` (or ``ignore_index``).
        ignore_index: id whose pixels are never boundary; ``None`` for none.
        max_distance: boundary band half-width, as in :func:`boundary_targets`.
        num_directions: 4, 8 or 16.
        border: ``'zero'`` (faithful) or ``'replicate'``, as in :func:`boundary_targets`.
        zero_gradient: ``'angle_zero'`` (faithful) or ``'no_direction'``, as in :func:`boundary_targets`.
        min_pixels: segments with fewer pixels are skipped (default 0: keep all, as the original).

    Returns:
        A :class:`BoundaryTargets`.
    """
    instance_ids = _check_label(instance_ids, "instance_ids", ignore_index)
    check_positive_int(min_pixels, "min_pixels", minimum=0)
    values, dense, counts = _dense_ids(instance_ids)
    keep = counts >= min_pixels
    return _targets(instance_ids, dense, keep, ignore_index, max_distance, num_directions, border, zero_gradient)


def _check_label(label: np.ndarray, name: str, ignore_index: int | None) -> np.ndarray:
    check_array(label, name)
    if not isinstance(label, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy.ndarray (targets are computed on the CPU), got {describe(label)}; "
            "call .cpu().numpy() first"
        )
    check_integer(label, name)
    check_ndim(label, name, (2,), "(H, W)")
    if label.size == 0:
        raise ValueError(f"{name}: expected a map of at least 1x1 pixels, got {describe(label)}")
    check_labels_nonnegative(label, name, ignore_index)
    return native_byte_order(label)


def _check_options(max_distance: float, num_directions: int, border: str, zero_gradient: str) -> None:
    check_num_directions(num_directions)
    if (
        isinstance(max_distance, bool)
        or not isinstance(max_distance, (int, float, np.integer, np.floating))
        or not (max_distance >= 0)
    ):
        raise ValueError(f"max_distance: expected a number >= 0, got {max_distance!r}")
    if border not in ("zero", "replicate"):
        raise ValueError(f"border: expected 'zero' or 'replicate', got {border!r}")
    if zero_gradient not in ("angle_zero", "no_direction"):
        raise ValueError(f"zero_gradient: expected 'angle_zero' or 'no_direction', got {zero_gradient!r}")


def segment_depth(label: np.ndarray, valid: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel of another segment (a different value), float64
    ``(H, W)``: the "depth" of SegFix's targets, computed per 8-connected component (exact, fast).

    ``valid(values) -> bool mask`` picks the label values that get a depth; the others are 0 (e.g. ignore).
    """
    values, dense, _ = _dense_ids(label)
    keep = np.ones(len(values), bool) if valid is None else np.asarray(valid(values), bool)
    return _segment_depth(dense, keep)


def _dense_ids(label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map label values to ``0..K-1``: returns (values (K,), dense int32 (H, W), counts (K,))."""
    values, inverse, counts = np.unique(label, return_inverse=True, return_counts=True)
    return values, inverse.reshape(label.shape).astype(np.int32), counts


def _targets(
    label: np.ndarray,
    dense: np.ndarray,
    keep: np.ndarray,
    ignore_index: int | None,
    max_distance: float,
    num_directions: int,
    border: str,
    zero_gradient: str,
) -> BoundaryTargets:
    _check_options(max_distance, num_directions, border, zero_gradient)
    depth = _segment_depth(dense, keep)
    gy, gx = _masked_gradient(depth, dense, border)
    # Components that cancel exactly in real arithmetic leave rounding noise (~1e-15) whose sign depends on
    # summation order; snap them to zero so that symmetric shapes get exact axis directions.
    gy[np.abs(gy) < _GRADIENT_EPS] = 0.0
    gx[np.abs(gx) < _GRADIENT_EPS] = 0.0
    zero = (gy == 0) & (gx == 0)
    angle = np.degrees(np.arctan2(gy, gx))
    angle[zero] = 0.0  # atan2(+-0, -0) would give 180; the original's atan2(0, 0) is 0
    direction = angle_to_direction(angle, num_directions)
    if zero_gradient == "no_direction":
        direction[zero] = -1
    boundary = depth <= max_distance
    if ignore_index is not None:
        boundary &= label != ignore_index
    return BoundaryTargets(
        depth=depth.astype(np.float32),
        boundary=boundary,
        direction=direction,
        angle=angle.astype(np.float32),
        num_directions=num_directions,
    )


def _segment_depth(dense: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-segment Euclidean distance transform, float64 ``(H, W)``; zero on segments not kept.

    Equal to summing ``distance_transform_edt(dense == s)`` over kept segments, but computed on one small crop
    per 8-connected component. That is exact: the nearest pixel outside a component is 8-adjacent to it, hence
    of another segment, and it lies inside the component's bounding box grown by one pixel.
    """
    height, width = dense.shape
    depth = np.zeros(dense.shape, dtype=np.float64)
    for segment, box in enumerate(ndimage.find_objects(dense + 1)):
        if box is None or not keep[segment]:
            continue
        y0, y1 = max(box[0].start - 1, 0), min(box[0].stop + 1, height)
        x0, x1 = max(box[1].start - 1, 0), min(box[1].stop + 1, width)
        components, _ = ndimage.label(dense[y0:y1, x0:x1] == segment, structure=_EIGHT_CONNECTED)
        for k, cbox in enumerate(ndimage.find_objects(components), start=1):
            cy0, cy1 = max(cbox[0].start - 1, 0), min(cbox[0].stop + 1, y1 - y0)
            cx0, cx1 = max(cbox[1].start - 1, 0), min(cbox[1].stop + 1, x1 - x0)
            mask = components[cy0:cy1, cx0:cx1] == k
            target = depth[y0 + cy0 : y0 + cy1, x0 + cx0 : x0 + cx1]
            if mask.all():  # one segment covers the whole image: nothing else to be near
                target[mask] = np.inf
                continue
            target[mask] = ndimage.distance_transform_edt(mask)[mask]
    return depth


def _masked_gradient(depth: np.ndarray, dense: np.ndarray, border: str) -> tuple[np.ndarray, np.ndarray]:
    """``(gy, gx)`` of each segment's own distance map at its own pixels, float64 ``(H, W)`` each.

    Equivalent to correlating every ``d_s`` with :func:`gradient_kernels`, masking to ``s`` and summing: a
    neighbour contributes its depth only if it belongs to the same segment. Kernel taps are taken in
    antisymmetric pairs so that a symmetric neighbourhood gives an exact zero.
    """
    r = _KERNEL_RADIUS
    finite_depth = np.where(np.isinf(depth), 0.0, depth)
    if border == "zero":
        padded_depth = np.pad(finite_depth, r, mode="constant", constant_values=0.0)
        padded_ids = np.pad(dense, r, mode="constant", constant_values=-1)
    else:
        padded_depth = np.pad(finite_depth, r, mode="edge")
        padded_ids = np.pad(dense, r, mode="edge")
    height, width = dense.shape
    gy = np.zeros(dense.shape, dtype=np.float64)
    gx = np.zeros(dense.shape, dtype=np.float64)

    def neighbour_row(dy: int) -> dict[int, np.ndarray]:
        """Same-segment neighbour depths at row offset ``dy``, keyed by column offset."""
        ids = padded_ids[r + dy : r + dy + height]
        values = padded_depth[r + dy : r + dy + height]
        return {
            dx: np.where(ids[:, r + dx : r + dx + width] == dense, values[:, r + dx : r + dx + width], 0.0)
            for dx in range(-r, r + 1)
            if (dy, dx) != (0, 0)
        }

    def add_x_pairs(row: dict[int, np.ndarray], dy: int) -> None:
        for dx in range(1, r + 1):
            gx[...] += (dx / (dx * dx + dy * dy)) * (row[dx] - row[-dx])

    add_x_pairs(neighbour_row(0), 0)
    for dy in range(1, r + 1):
        below, above = neighbour_row(dy), neighbour_row(-dy)
        add_x_pairs(below, dy)
        add_x_pairs(above, -dy)
        for dx in range(-r, r + 1):
            gy += (dy / (dx * dx + dy * dy)) * (below[dx] - above[dx])
    return gy, gx
