"""Discrete directions: angle binning, the direction -> (dy, dx) table, flips, and offsets.

Angles are in degrees in image coordinates: 0 points right (+x), 90 points down (+y), -90 points up,
+-180 points left. This matches ``atan2(gy, gx)`` of an image gradient with rows growing downwards.

Direction classes follow the original SegFix implementation (openseg.pytorch ``offset_helper.py``):

* 8 directions, class ``i`` centred on ``-180 + 45 i`` degrees, vectors (dy, dx)::

      0:(0,-1) 1:(-1,-1) 2:(-1,0) 3:(-1,1) 4:(0,1) 5:(1,1) 6:(1,0) 7:(1,-1)

  Diagonals are (+-1, +-1), not unit vectors.
* 16 directions, centred on ``-180 + 22.5 i``, vectors walking the perimeter of a 5x5 square (Chebyshev
  length 2).
* 4 directions, centred on the diagonals: ``[-180,-90) -> 0:(-1,-1)``, ``[-90,0) -> 1:(-1,1)``,
  ``[0,90) -> 2:(1,1)``, ``[90,180) -> 3:(1,-1)``.

A direction of ``-1`` means "no direction" (see ``boundary_targets(zero_gradient='ignore')``) and maps to a
zero offset.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch

from ..checks import check_array, check_integer, check_ndim, check_num_directions, describe, num_elements

__all__ = [
    "DIRECTION_VECTORS",
    "angle_to_direction",
    "direction_to_offset",
    "direction_vectors",
    "flip_direction",
]

DIRECTION_VECTORS: dict[int, tuple[tuple[int, int], ...]] = {
    4: ((-1, -1), (-1, 1), (1, 1), (1, -1)),
    8: ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)),
    16: (
        (0, -2), (-1, -2), (-2, -2), (-2, -1), (-2, 0), (-2, 1), (-2, 2), (-1, 2),
        (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (2, -1), (2, -2), (1, -2),
    ),
}  # fmt: skip
"""(dy, dx) per direction class, for each supported number of directions."""


def direction_vectors(num_directions: int = 8) -> np.ndarray:
    """The direction table as an int8 array of shape ``(num_directions, 2)``, columns ``(dy, dx)``."""
    check_num_directions(num_directions)
    return np.asarray(DIRECTION_VECTORS[num_directions], dtype=np.int8)


def angle_to_direction(angle: np.ndarray, num_directions: int = 8) -> np.ndarray:
    """Bin angles (degrees, in ``[-180, 180]``) into direction classes, exactly as the original does.

    For 8 and 16 directions with ``step = 360 / m``, class ``i`` covers ``(c_i - step/2, c_i + step/2]`` with
    ``c_i = -180 + i * step``; class 0 also takes ``(180 - step/2, 180]``. For 4 directions the bins are the
    quadrants ``[-180 + 90 i, -90 + 90 i)``, and 180 falls in class 0 with -180.

    Args:
        angle: float array of any shape, degrees.
        num_directions: 4, 8 or 16.

    Returns:
        int64 array of the same shape with classes in ``0 .. num_directions - 1``.
    """
    check_num_directions(num_directions)
    angle = np.asarray(angle, dtype=np.float64)
    if num_directions == 4:
        return np.floor((angle + 180.0) / 90.0).astype(np.int64) % 4
    step = 360.0 / num_directions
    return np.ceil((angle + 180.0) / step - 0.5).astype(np.int64) % num_directions


def flip_direction(direction: np.ndarray | torch.Tensor, num_directions: int = 8, *, axis: str = "horizontal"):
    """Remap direction classes for an image flipped left-right (``axis='horizontal'``) or upside down.

    A horizontal flip maps (dy, dx) to (dy, -dx), a vertical flip to (-dy, dx). ``-1`` ("no direction") stays
    ``-1``. Returns the same type, dtype and device as ``direction``.
    """
    check_num_directions(num_directions)
    check_array(direction, "direction")
    if axis not in ("horizontal", "vertical"):
        raise ValueError(f"axis: expected 'horizontal' or 'vertical', got {axis!r}")
    table = DIRECTION_VECTORS[num_directions]
    sign = (1, -1) if axis == "horizontal" else (-1, 1)
    index = {vec: i for i, vec in enumerate(table)}
    # One extra slot at the end handles -1 through Python-style negative indexing.
    remap = [index[(dy * sign[0], dx * sign[1])] for dy, dx in table] + [-1]
    check_integer(direction, "direction")
    _check_direction_range(direction, num_directions)
    # The table is int64 (it holds -1); each remapped value fits the input's dtype since it held the original.
    if isinstance(direction, torch.Tensor):
        lut = torch.tensor(remap, dtype=torch.int64, device=direction.device)
        return lut[direction.long()].to(direction.dtype)
    return np.asarray(remap, dtype=np.int64)[direction.astype(np.int64)].astype(direction.dtype)


def _check_direction_range(direction: np.ndarray | torch.Tensor, num_directions: int) -> None:
    if not num_elements(direction):
        return
    wide = direction.long() if isinstance(direction, torch.Tensor) else direction.astype(np.int64)
    lo, hi = int(wide.min()), int(wide.max())
    if lo < -1 or hi >= num_directions:
        raise ValueError(
            f"direction: expected classes in 0..{num_directions - 1} (or -1 for none), found range [{lo}, {hi}]"
        )


@overload
def direction_to_offset(direction: np.ndarray, boundary: np.ndarray, *, num_directions: int = 8) -> np.ndarray: ...
@overload
def direction_to_offset(
    direction: torch.Tensor, boundary: torch.Tensor, *, num_directions: int = 8
) -> torch.Tensor: ...
def direction_to_offset(direction, boundary, *, num_directions: int = 8):
    """Turn a direction-class map and a boundary mask into an integer offset field.

    Args:
        direction: integer direction classes, shape ``(H, W)`` or ``(N, H, W)``; values in
            ``0 .. num_directions - 1`` or ``-1`` (no direction, zero offset).
        boundary: boolean (or 0/1 integer) mask of the same shape; the offset is zero where it is False.
        num_directions: 4, 8 or 16; selects the table in :data:`DIRECTION_VECTORS`.

    Returns:
        int8 offsets of shape ``(2, H, W)`` or ``(N, 2, H, W)``, channel order ``(dy, dx)``, of the same type
        (numpy or torch) and device as ``direction``.

    Raises:
        TypeError: non-integer ``direction``, or a non-boolean/non-integer ``boundary``.
        ValueError: wrong ndim, mismatched shapes, or direction classes outside the table.
    """
    check_num_directions(num_directions)
    check_array(direction, "direction")
    check_array(boundary, "boundary")
    check_integer(direction, "direction")
    check_integer(boundary, "boundary", allow_bool=True)
    check_ndim(direction, "direction", (2, 3), "(H, W) or (N, H, W)")
    if tuple(boundary.shape) != tuple(direction.shape):
        raise ValueError(
            f"boundary: expected the shape of direction {tuple(direction.shape)}, got {describe(boundary)}"
        )
    is_torch = isinstance(direction, torch.Tensor)
    if is_torch != isinstance(boundary, torch.Tensor):
        raise TypeError(
            f"direction and boundary must both be numpy or both torch, got {describe(direction)} "
            f"and {describe(boundary)}"
        )
    _check_direction_range(direction, num_directions)
    vectors = direction_vectors(num_directions)
    # Row num_directions is the zero vector used for -1 and for off-boundary pixels.
    table = np.concatenate([vectors, np.zeros((1, 2), np.int8)])
    channel_axis = direction.ndim - 2
    if isinstance(direction, torch.Tensor):
        lut = torch.from_numpy(table).to(direction.device)
        wide = direction.long()  # torch has no comparisons on uint16/32/64
        # One full-size index map, not two: at 4096x8192 each is 256 MiB.
        index = torch.where(boundary.bool() & (wide >= 0), wide, num_directions)
        return torch.movedim(lut[index], -1, channel_axis).contiguous()
    assert isinstance(boundary, np.ndarray)  # checked above: both numpy or both torch
    rows = np.where(boundary.astype(bool) & (direction >= 0), direction, num_directions)
    return np.ascontiguousarray(np.moveaxis(table[rows], -1, channel_axis))
