"""Thin parts of a label map: the pixels a morphological opening of their own class removes.

A segment only a few pixels wide (a pole, a wire, a sign's post, as a coarse network drew it) has no interior
for SegFix to take labels from: every one of its pixels is boundary, and a few steps along a wrong direction
erase it. :func:`thin_parts` finds such pixels from the label map alone, class by class and without knowing the
classes, so that refinement can leave them as they are (``DecisionSettings.thin_guard``).

A pixel ``p`` of class ``c`` is *thick* when some ``(2r+1) x (2r+1)`` window that lies inside the image, holds
``p`` and holds class ``c`` alone; it is *thin* otherwise. This is the binary opening of each class's mask with
that square (``scipy.ndimage.binary_opening`` with its default zero border), done for all classes at once: a
window is of one class when its minimum label equals its maximum.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import LabelArray, as_tensor, check_label_map, check_positive_int, computable

__all__ = ["thin_parts"]


def thin_parts(label_map: LabelArray, radius: int = 1, *, ignore_index: int | None = 255) -> LabelArray:
    """Bool mask of the pixels that an opening of radius ``radius`` removes from their class.

    Args:
        label_map: integer class ids ``(H, W)`` or ``(N, H, W)``, numpy or torch.
        radius: half the side of the square window (1: 3x3, so segments under 3 px wide are thin).
        ignore_index: label whose pixels are never reported thin (they never move anyway); None if every value is
            a class.

    Returns:
        bool, the shape of ``label_map``, numpy or torch like it (on its device).

    Example:
        >>> import numpy as np, segfix
        >>> labels = np.zeros((5, 7), np.uint8); labels[:, 3] = 1  # a one-pixel pole
        >>> segfix.thin_parts(labels, 1)[0]
        array([False, False, False,  True, False, False, False])
    """
    ignore_index = check_label_map(label_map, ignore_index)
    check_positive_int(radius, "radius")
    labels = computable(as_tensor(label_map), "label_map")
    batch = labels if labels.ndim == 3 else labels[None]
    thin = _thin(batch, int(radius))
    if ignore_index is not None:
        thin &= batch != ignore_index
    thin = thin if labels.ndim == 3 else thin[0]
    return thin.numpy() if isinstance(label_map, np.ndarray) else thin


def _thin(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """``(N, H, W)`` integer labels -> bool ``(N, H, W)``: no single-class window of side ``2r+1`` covers the pixel."""
    side = 2 * radius + 1
    if labels.shape[-2] < side or labels.shape[-1] < side:  # no window fits: nothing survives the opening
        return torch.ones_like(labels, dtype=torch.bool)
    # Separable running extremes over whole windows inside the image, in the labels' own integer dtype (exact
    # for any id, and far faster than a pooling kernel on one channel).
    high = _running(_running(labels, side, -1, torch.maximum), side, -2, torch.maximum)
    low = _running(_running(labels, side, -1, torch.minimum), side, -2, torch.minimum)
    uniform = (high == low).to(torch.uint8)  # (N, H - 2r, W - 2r): one window per centre
    padded = F.pad(uniform, (2 * radius, 2 * radius, 2 * radius, 2 * radius))
    covered = _running(_running(padded, side, -1, torch.maximum), side, -2, torch.maximum)
    return covered == 0


def _running(x: torch.Tensor, side: int, dim: int, pick) -> torch.Tensor:
    """``pick`` (max or min) over every run of ``side`` consecutive elements along ``dim`` (length - side + 1)."""
    length = x.shape[dim] - side + 1
    out = x.narrow(dim, 0, length)
    for start in range(1, side):
        out = pick(out, x.narrow(dim, start, length))
    return out
