"""Thin parts of a label map: the pixels a morphological opening of their own class removes.

A segment only a few pixels wide (a pole, a wire, a sign's post, as a coarse network drew it) has no interior
for SegFix to take labels from: every one of its pixels is boundary, and a few steps along a wrong direction
erase it. :func:`thin_parts` finds such pixels from the label map alone, class by class and without knowing the
classes, so that refinement can leave them as they are (``DecisionSettings.thin_guard``).

Most classes are thick, and their thin parts are ragged edges that a coarse network drew wrong: exactly what
SegFix should fix. A few classes are thin by nature (a pole, a wire), and their thin parts are the objects
themselves. :func:`thin_classes` finds those from ground-truth labels alone (the classes most of whose pixels
are thin), so that the guard can be kept to them (``DecisionSettings.thin_guard_classes``).

A pixel ``p`` of class ``c`` is *thick* when some ``(2r+1) x (2r+1)`` window that lies inside the image, holds
``p`` and holds class ``c`` alone; it is *thin* otherwise. This is the binary opening of each class's mask with
that square (``scipy.ndimage.binary_opening`` with its default zero border), done for all classes at once: a
window is of one class when its minimum label equals its maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import LabelArray, as_numpy, as_tensor, check_class_ids, check_label_map, check_positive_int, computable

__all__ = ["thin_classes", "thin_parts"]

MAJORITY = 0.5
"""The share of a class's pixels that must be thin for :func:`thin_classes` to call the class thin."""


def thin_parts(
    label_map: LabelArray,
    radius: int = 1,
    *,
    ignore_index: int | None = 255,
    classes: Sequence[int] | None = None,
) -> LabelArray:
    """Bool mask of the pixels that an opening of radius ``radius`` removes from their class.

    Args:
        label_map: integer class ids ``(H, W)`` or ``(N, H, W)``, numpy or torch.
        radius: half the side of the square window (1: 3x3, so segments under 3 px wide are thin).
        ignore_index: label whose pixels are never reported thin (they never move anyway); None if every value is
            a class.
        classes: report only the thin pixels of these class ids (None: of every class). Whether a pixel is thin
            does not depend on it: the opening is always taken of the pixel's own class.

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
    classes = None if classes is None else check_class_ids(classes, "classes")
    return unchecked_thin_parts(label_map, int(radius), ignore_index=ignore_index, classes=classes)


def unchecked_thin_parts(
    label_map: LabelArray, radius: int, *, ignore_index: int | None, classes: tuple[int, ...] | None = None
) -> LabelArray:
    """:func:`thin_parts` of a label map its caller has checked (:func:`check_label_map`, whose effective
    ignore label it takes), with a positive int ``radius`` and sorted class ids."""
    labels = computable(as_tensor(label_map), "label_map")
    batch = labels if labels.ndim == 3 else labels[None]
    thin = _thin(batch, int(radius))
    if ignore_index is not None:
        thin &= batch != ignore_index
    if classes is not None:
        thin &= _of_classes(batch, classes)
    thin = thin if labels.ndim == 3 else thin[0]
    return thin.numpy() if isinstance(label_map, np.ndarray) else thin


def thin_classes(
    label_maps: Iterable[LabelArray],
    radius: int,
    *,
    ignore_index: int | None = 255,
    share: float = MAJORITY,
) -> tuple[int, ...]:
    """The classes that are thin by nature: those at least ``share`` of whose pixels in ``label_maps`` are
    :func:`thin_parts` of radius ``radius``.

    Meant for ground-truth labels (a held-out set's): there a thin class's thin parts are its objects (poles,
    wires), while a thick class's thin parts are a few ragged edges. Guarding only the former
    (``DecisionSettings.thin_guard_classes``) keeps a coarse map's poles without keeping its slivers.

    Args:
        label_maps: integer class-id maps ``(H, W)`` or ``(N, H, W)``, numpy or torch, of any sizes.
        radius: the opening's radius, as for :func:`thin_parts`.
        ignore_index: label that is no class; None if every value is a class.
        share: the fraction of a class's pixels that must be thin, in (0, 1].

    Returns:
        the class ids, ascending (empty when no class is that thin).

    Example:
        >>> import numpy as np, segfix
        >>> labels = np.zeros((9, 9), np.uint8); labels[:, 4] = 1  # a one-pixel pole on a wide background
        >>> segfix.thin_classes([labels], 1)
        (1,)
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ValueError(f"share: expected a fraction in (0, 1], got {share!r}")
    total: dict[int, int] = {}
    thin: dict[int, int] = {}
    for label_map in label_maps:
        mask = as_numpy(thin_parts(label_map, radius, ignore_index=ignore_index))
        _add_counts(label_map, mask, ignore_index, total, thin)
    return _mostly_thin(total, thin, share)


def thin_parts_of_thin_classes(
    label_map: LabelArray, radius: int, *, ignore_index: int | None = 255, share: float = MAJORITY
) -> LabelArray:
    """:func:`thin_parts` kept to the classes that :func:`thin_classes` finds in ``label_map`` itself (all its
    maps pooled): the guard of ``thin_guard_classes="auto"``, from one opening instead of two. Like
    :func:`unchecked_thin_parts`, it takes a map its caller has checked (:func:`segfix.ops.field.apply_field`)."""
    thin = unchecked_thin_parts(label_map, radius, ignore_index=ignore_index)
    total: dict[int, int] = {}
    thin_counts: dict[int, int] = {}
    _add_counts(label_map, as_numpy(thin), ignore_index, total, thin_counts)
    classes = _mostly_thin(total, thin_counts, share)
    labels = computable(as_tensor(label_map), "label_map")
    kept = _of_classes(labels, classes).numpy() if isinstance(label_map, np.ndarray) else _of_classes(labels, classes)
    return thin & kept


def _mostly_thin(total: dict[int, int], thin: dict[int, int], share: float) -> tuple[int, ...]:
    """The classes at least ``share`` of whose counted pixels are thin, ascending."""
    return tuple(c for c in sorted(total) if thin.get(c, 0) >= share * total[c])


def _add_counts(label_map: LabelArray, mask: np.ndarray, ignore_index, total: dict, thin: dict) -> None:
    """Add each class's pixel count, and its count under ``mask``, to ``total`` and ``thin``."""
    labels = as_numpy(label_map)  # a CPU tensor's own memory, not a copy
    if labels.dtype in (np.uint8, np.uint16):
        # The usual maps: histograms of the ids as stored (torch counts uint8 4x faster than numpy's cast and
        # count), the ignore label's bin dropped; no int64 copy of the map.
        # torch has no uint16 bincount; numpy counts uint16 without a copy either
        flat = labels.ravel()
        counts = torch.bincount(as_tensor(flat)).numpy() if labels.dtype == np.uint8 else np.bincount(flat)
        thin_hist = np.bincount(labels[mask], minlength=counts.size)
        _merge_histograms(total, thin, counts, thin_hist, ignore_index)
        return
    labels = labels.astype(np.int64, copy=False)
    low, high = (int(v) for v in torch.aminmax(as_tensor(labels))) if labels.size else (0, -1)
    if 0 <= low and high < 1 << 16:  # a histogram of the whole map, not a sort; the ignore bin dropped after
        counts = np.bincount(labels.ravel(), minlength=1)
        _merge_histograms(total, thin, counts, np.bincount(labels[mask], minlength=counts.size), ignore_index)
        return
    values = labels[labels != ignore_index] if ignore_index is not None else labels.ravel()
    ids, counts = np.unique(values, return_counts=True)
    thin_ids, thin_found = np.unique(labels[mask], return_counts=True)
    found = dict(zip(thin_ids.tolist(), thin_found.tolist()))
    _merge(total, thin, ((key, count, found.get(key, 0)) for key, count in zip(ids.tolist(), counts.tolist())))


def _merge_histograms(total: dict, thin: dict, counts: np.ndarray, thin_hist: np.ndarray, ignore_index) -> None:
    if ignore_index is not None and 0 <= ignore_index < counts.size:
        counts[ignore_index] = 0  # the mask never holds an ignore pixel
    ids = np.flatnonzero(counts)
    _merge(total, thin, zip(ids.tolist(), counts[ids].tolist(), thin_hist[ids].tolist()))


def _merge(total: dict, thin: dict, pairs: Iterable[tuple[int, int, int]]) -> None:
    for key, count, thin_count in pairs:
        total[key] = total.get(key, 0) + count
        thin[key] = thin.get(key, 0) + thin_count


def _of_classes(labels: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    """bool mask of the pixels whose label is one of ``ids`` (ids the dtype cannot hold match nothing)."""
    ids = tuple(c for c in ids if c <= torch.iinfo(labels.dtype).max)  # else a cast would wrap them onto others
    if not ids:
        return torch.zeros_like(labels, dtype=torch.bool)
    if len(ids) > 8:  # isin sorts; a few comparisons are several times faster for the usual short lists
        return torch.isin(labels, torch.tensor(ids, dtype=labels.dtype, device=labels.device))
    wanted = torch.zeros_like(labels, dtype=torch.bool)
    for c in ids:
        wanted |= labels == c
    return wanted


def _thin(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """``(N, H, W)`` integer labels -> bool ``(N, H, W)``: no single-class window of side ``2r+1`` covers the pixel."""
    side = 2 * radius + 1
    if labels.shape[-2] < side or labels.shape[-1] < side:  # no window fits: nothing survives the opening
        return torch.ones_like(labels, dtype=torch.bool)
    # A window is of one class when each of its rows is (neighbours equal along the row) and its first column
    # is: two comparisons of the labels, the rest runs of bools (any id, any integer dtype; at 1024x2048 a
    # third of the time of running minima and maxima of the labels themselves).
    same_right = labels[..., :, 1:] == labels[..., :, :-1]
    same_below = labels[..., 1:, :] == labels[..., :-1, :]
    rows_uniform = _running(same_right, side - 1, -1, torch.logical_and)  # (N, H, W - 2r)
    uniform = _running(rows_uniform, side, -2, torch.logical_and)  # (N, H - 2r, W - 2r)
    uniform &= _running(same_below[..., : uniform.shape[-1]], side - 1, -2, torch.logical_and)
    padded = F.pad(uniform, (2 * radius, 2 * radius, 2 * radius, 2 * radius))
    covered = _running(_running(padded, side, -1, torch.logical_or), side, -2, torch.logical_or)
    return ~covered


def _running(x: torch.Tensor, side: int, dim: int, combine) -> torch.Tensor:
    """``combine`` (and, or) over every run of ``side`` consecutive elements along ``dim`` (length - side + 1),
    by doubling: runs of 1, 2, 4, ... then one last step to ``side`` (log2(side) + 1 passes, not side - 1)."""
    done = 1
    while 2 * done <= side:
        length = x.shape[dim] - done
        x = combine(x.narrow(dim, 0, length), x.narrow(dim, done, length))
        done *= 2
    if done < side:
        length = x.shape[dim] - (side - done)
        x = combine(x.narrow(dim, 0, length), x.narrow(dim, side - done, length))
    return x
