"""Refining a segmentation with an offset field: semantic label maps and instance masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..checks import (
    LabelArray,
    check_array,
    check_label_map,
    check_ndim,
    describe,
)
from .directions import direction_to_offset
from .shift import shift_labels, unchecked_shift_labels

__all__ = ["refine_instances", "refine_semantic"]


def resolve_offsets(offsets, boundary, direction, num_directions: int):
    """Return ``offsets``, or build them from a boundary map and a direction map (exactly one of the two)."""
    from_maps = boundary is not None or direction is not None
    if offsets is not None and from_maps:
        raise ValueError("pass either offsets or boundary + direction, not both")
    if offsets is not None:
        return offsets
    if boundary is None or direction is None:
        raise ValueError(
            "expected offsets, or both boundary and direction; got "
            f"boundary={'given' if boundary is not None else None}, "
            f"direction={'given' if direction is not None else None}"
        )
    return direction_to_offset(direction, boundary, num_directions=num_directions)


def refine_semantic(
    label_map: LabelArray,
    offsets: np.ndarray | torch.Tensor | None = None,
    *,
    boundary: np.ndarray | torch.Tensor | None = None,
    direction: np.ndarray | torch.Tensor | None = None,
    num_directions: int = 8,
    scale: int = 2,
    iterations: int = 1,
    ignore_index: int | None = 255,
) -> LabelArray:
    """Refine a semantic label map: each boundary pixel takes the label ``scale * offset`` away.

    Ignore pixels are left as they are, and the ignore label is never copied into another pixel: where the
    offset points at an ignore pixel, the original label stays.

    Args:
        label_map: integer class ids, shape ``(H, W)`` or ``(N, H, W)``, numpy or torch (any device).
        offsets: int offsets ``(2, H, W)`` / ``(N, 2, H, W)``, channel order ``(dy, dx)``, zero off the boundary.
        boundary: instead of ``offsets``: boolean boundary mask ``(H, W)`` / ``(N, H, W)``...
        direction: ...with integer direction classes of the same shape (see :func:`segfix.direction_to_offset`).
        num_directions: direction table used with ``direction``: 4, 8 or 16.
        scale: offset multiplier; SegFix uses 2 for semantic segmentation.
        iterations: steps along the offset field (see :func:`segfix.shift_labels`).
        ignore_index: label that is never moved or created; ``None`` if every value is a class.

    Returns:
        The refined label map, same type, dtype, shape and device as ``label_map``.

    Example:
        >>> import numpy as np, segfix
        >>> truth = np.zeros((32, 32), np.uint8); truth[:, 16:] = 1
        >>> coarse = np.zeros_like(truth); coarse[:, 18:] = 1  # the edge predicted 2 px too far right
        >>> offsets = segfix.boundary_targets(truth).offsets()
        >>> int((segfix.refine_semantic(coarse, offsets) != truth).sum()), int((coarse != truth).sum())
        (0, 64)
    """
    ignore_index = check_label_map(label_map, ignore_index)
    offsets = resolve_offsets(offsets, boundary, direction, num_directions)
    refined = shift_labels(label_map, offsets, scale=scale, iterations=iterations)
    return _keep_ignore(label_map, refined, ignore_index)


def unchecked_refine_semantic(
    label_map: LabelArray, offsets: Any, *, scale: int, iterations: int, ignore_index: int | None
) -> LabelArray:
    """:func:`refine_semantic` on inputs its caller has checked once (:func:`segfix.ops.field.apply_field`):
    a valid label map, int offsets of its shape, the effective ignore label (:func:`check_label_map`'s)."""
    refined = unchecked_shift_labels(label_map, offsets, scale=scale, iterations=iterations)
    return _keep_ignore(label_map, refined, ignore_index)


def _keep_ignore(label_map: LabelArray, refined: LabelArray, ignore_index: int | None) -> LabelArray:
    """Ignore pixels stay as they are, and the ignore label is never copied into another pixel."""
    if ignore_index is None:
        return refined
    keep = (refined == ignore_index) | (label_map == ignore_index)
    if isinstance(label_map, torch.Tensor):
        return torch.where(keep, label_map, refined)
    return np.where(keep, label_map, refined)


def refine_instances(
    masks: LabelArray,
    offsets: np.ndarray | torch.Tensor | None = None,
    *,
    boundary: np.ndarray | torch.Tensor | None = None,
    direction: np.ndarray | torch.Tensor | None = None,
    num_directions: int = 8,
    scale: int = 1,
    iterations: int = 1,
    scores: np.ndarray | torch.Tensor | Sequence[float] | None = None,
    resolve_overlaps: bool = False,
) -> LabelArray:
    """Refine a stack of instance masks with one offset field, as SegFix does for instance segmentation.

    Every mask is shifted independently by the same field (``out_k[p] = mask_k[clamp(p + scale * offset[p])]``),
    so a mask grows or shrinks only where the field says its edge is wrong. Classes and scores of the instances
    are unchanged.

    Args:
        masks: binary masks ``(K, H, W)``, bool or integer 0/1 (numpy or torch); K may be 0.
        offsets: int offsets ``(2, H, W)``, channel order ``(dy, dx)``; or pass ``boundary`` + ``direction``.
        num_directions: direction table used with ``direction``.
        scale: offset multiplier; SegFix uses 1 for instances.
        iterations: steps along the offset field.
        scores: ``(K,)`` confidence per instance, used when ``resolve_overlaps`` is True.
        resolve_overlaps: if True, a pixel claimed by several refined masks is kept only by the highest-scoring
            one (ties and ``scores=None``: the earliest in the stack). The original does not resolve overlaps.

    Returns:
        Refined masks, same type, dtype, shape and device as ``masks``.
    """
    check_array(masks, "masks")
    check_ndim(masks, "masks", (3,), "(K, H, W)")
    if scores is not None:
        _checked_scores(scores, masks.shape[0])
    offsets = resolve_offsets(offsets, boundary, direction, num_directions)
    if offsets.ndim != 3:
        raise ValueError(f"offsets: expected one field of shape (2, H, W) for all masks, got {describe(offsets)}")
    refined = shift_labels(masks, offsets, scale=scale, iterations=iterations)
    if not resolve_overlaps or refined.shape[0] < 2:
        return refined
    count = masks.shape[0]
    priority = np.arange(count, 0, -1, dtype=np.float64) if scores is None else _checked_scores(scores, count)
    # Stable order: highest score first, ties broken by position in the stack.
    order = np.lexsort((np.arange(count), -priority))
    rank = np.empty(count, dtype=np.int64)
    rank[order] = np.arange(count)
    if isinstance(refined, torch.Tensor):
        rank_t = torch.as_tensor(rank, device=refined.device).view(-1, 1, 1)
        claimed = refined != 0
        best = torch.where(claimed, rank_t, count).amin(dim=0, keepdim=True)
        return torch.where(claimed & (rank_t == best), refined, torch.zeros_like(refined))
    claimed = refined != 0
    best = np.where(claimed, rank[:, None, None], count).min(axis=0, keepdims=True)
    return np.where(claimed & (rank[:, None, None] == best), refined, np.zeros_like(refined))


def _checked_scores(scores: Any, count: int) -> np.ndarray:
    """``(count,)`` finite float64 confidences, or an error naming what arrived."""
    values = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else scores
    if isinstance(values, (str, bytes)):
        raise TypeError(f"scores: expected {count} numbers (one per mask), got {values!r}")
    try:
        priority = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"scores: expected {count} numbers (one per mask), got {str(values)[:80]}") from None
    if priority.shape != (count,):
        raise ValueError(f"scores: expected shape ({count},) to match masks, got {priority.shape}")
    if not np.isfinite(priority).all():
        raise ValueError(f"scores: expected finite numbers, got {priority[~np.isfinite(priority)][:3].tolist()}")
    return priority
