"""How far a pixel lies from the edges of its label map: the limit that keeps refinement near them.

A coarse network's errors lie along its own edges; SegFix moves labels from a segment's interior across them.
When the direction field is unsure (an image unlike those the network was trained on), the votes of a few steps
in a row carry labels deeper and deeper into segments the coarse map had right. ``max_edge_distance``
(``DecisionSettings``) stops that: a pixel may change only when another label lies within that many pixels of it
in the map being refined.

A pixel is *far from the edges* at radius ``r`` when every pixel of the ``(2r+1) x (2r+1)`` square around it, cut
at the map's border, holds its label: where ``scipy.ndimage.maximum_filter`` equals ``minimum_filter`` of size
``2r+1`` with ``mode="nearest"``. The ignore label counts as another label, as any value does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..checks import (
    LabelArray,
    as_numpy,
    check_array,
    check_ndim,
    check_positive_int,
    computable,
    describe,
    is_integer_dtype,
)
from . import kernels

__all__ = ["far_from_edges"]


def far_from_edges(label_map: LabelArray, radius: int) -> LabelArray:
    """Bool mask of the pixels with no other label within ``radius`` pixels (the square of side ``2 radius + 1``).

    Args:
        label_map: integer labels ``(H, W)`` or ``(N, H, W)``, numpy or torch (each map on its own).
        radius: half the side of the square, at least 1.

    Returns:
        bool, the shape of ``label_map``, numpy or torch like it (on its device).

    Example:
        >>> import numpy as np, segfix
        >>> labels = np.zeros((1, 7), np.uint8); labels[0, 5:] = 1
        >>> far_from_edges(labels, 2)[0]
        array([ True,  True,  True, False, False, False, False])
    """
    check_array(label_map, "label_map")
    if not is_integer_dtype(label_map):
        raise TypeError(f"label_map: expected an integer dtype, got {describe(label_map)}")
    check_ndim(label_map, "label_map", (2, 3), "(H, W) or (N, H, W)")
    check_positive_int(radius, "radius", minimum=1)
    maps = label_map[None] if label_map.ndim == 2 else label_map
    if isinstance(maps, torch.Tensor):
        maps = computable(maps, "label_map")
    far = _far_dense(maps, int(radius))
    return far[0] if label_map.ndim == 2 else far


def far_from_edges_at(labels: Any, radius: int, index: Any) -> Any:
    """bool ``(K,)``: :func:`far_from_edges` at the flat pixel indices ``index`` (int64 ``(K,)``, row-major) of
    checked labels ``(N, H, W)``; numpy or torch like ``labels``. Only the moving pixels are asked about (a fifth
    of a Cityscapes frame's, most of them at an edge): the compiled kernel reads their squares alone, where numba
    serves; elsewhere every pixel is compared."""
    height, width = int(labels.shape[-2]), int(labels.shape[-1])
    on_cpu = isinstance(labels, np.ndarray) or labels.device.type == "cpu"
    if on_cpu and kernels.HAVE_NUMBA and kernels.vote_kernel_ready():
        flat = np.ascontiguousarray(as_numpy(labels)).reshape(-1)
        at = np.ascontiguousarray(as_numpy(index), dtype=np.int64)
        far = kernels.far_from_edges_flat(flat, (height, width), at, int(radius))
        return far if isinstance(labels, np.ndarray) else torch.from_numpy(far)
    return _far_dense(computable(labels, "label_map"), int(radius)).reshape(-1)[index]


def _far_dense(maps: Any, radius: int) -> Any:
    """:func:`far_from_edges` of every pixel of ``(N, H, W)`` maps, numpy or torch: one comparison per offset of
    the square, with indices clamped to the map (the square cut at the border)."""
    height, width = maps.shape[-2:]
    module = np if isinstance(maps, np.ndarray) else torch
    device = {} if module is np else {"device": maps.device}
    rows, cols = module.arange(height, **device), module.arange(width, **device)
    far = module.ones(maps.shape, dtype=module.bool_ if module is np else torch.bool, **device)
    for dy in range(-radius, radius + 1):
        shifted_rows = maps[:, (rows + dy).clip(0, height - 1)]
        for dx in range(-radius, radius + 1):
            if dy or dx:
                far &= shifted_rows[:, :, (cols + dx).clip(0, width - 1)] == maps
    return far
