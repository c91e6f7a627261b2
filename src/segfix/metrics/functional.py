"""Segmentation metrics used to judge boundary refinement: the per-image counts (accumulated over a dataset by
:mod:`segfix.metrics.accumulators`).

* mIoU from a dataset-level confusion matrix. Classes absent from both the predictions and the ground truth
  of the whole dataset are NaN and do not count in the mean.
* Boundary F-score per class at pixel tolerances (default 1, 2, 3 px), as in the SegFix supplementary:
  for each class, the 1-px boundary of the class mask (``seg2bmap`` of the DAVIS/GSCNN code: a pixel that
  differs from its right, lower or lower-right neighbour) in prediction and ground truth; a predicted boundary
  pixel is correct if a ground-truth boundary pixel lies within the tolerance (Euclidean, i.e. a disk), and
  vice versa for recall. Pixels whose ground truth is ``ignore_index`` are removed from both masks first, as
  the original does. Counts are summed over the dataset before precision and recall are formed; the original
  averaged per-image F-scores and scored a class absent from an image as 1, which inflates the mean.
* Boundary IoU (Cheng et al., CVPR 2021) per class: IoU of the inner boundary bands of width
  ``d = max(1, round(dilation_ratio * image diagonal))`` (Chebyshev distance, the image border counts as
  background, as in the reference implementation), over valid pixels, summed over the dataset.
* :class:`BoundaryStatistics`: per-class share of ground-truth pixels within ``w`` px of another segment,
  for ``w = 1..5`` (Table 1 of the SegFix supplementary).

Inputs are label maps ``(H, W)`` or batches ``(N, H, W)``, numpy or torch; all counting is done in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..checks import (
    check_array,
    check_class_range,
    check_labels_nonnegative,
    check_ndim,
    check_positive_int,
    describe,
    is_integer_dtype,
)

__all__ = [
    "boundary_fscore_counts",
    "class_iou",
    "boundary_fscore_from_counts",
    "boundary_iou_counts",
    "confusion_matrix",
    "mask_boundary",
]


def numpy_labels(x, name: str, ignore_index: int | None) -> np.ndarray:
    check_array(x, name)
    if not is_integer_dtype(x):
        raise TypeError(f"{name}: expected an integer dtype, got {describe(x)}")
    check_ndim(x, name, (2, 3), "(H, W) or (N, H, W)")
    check_labels_nonnegative(x, name, ignore_index)
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    return array[None] if array.ndim == 2 else array


def check_pair(prediction, target, num_classes: int, ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    pred = numpy_labels(prediction, "prediction", ignore_index)
    gt = numpy_labels(target, "target", ignore_index)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction: expected the target's shape {tuple(target.shape)}, got {describe(prediction)}")
    check_class_range(gt, "target", num_classes, ignore_index)
    # Predictions are checked where they are scored: what a model says at an ignored pixel does not count.
    check_class_range(pred[scored_pixels(gt, num_classes, ignore_index)], "prediction", num_classes, ignore_index)
    return pred, gt


def confusion_matrix(prediction, target, num_classes: int, *, ignore_index: int | None = 255) -> np.ndarray:
    """Confusion counts over the valid pixels of one map or a batch.

    Args:
        prediction: integer label map ``(H, W)`` or ``(N, H, W)``.
        target: the ground truth, of the same shape.
        num_classes: classes are ``0 .. num_classes - 1``.
        ignore_index: target pixels with this value are not counted. Any other value outside
            ``0 .. num_classes - 1``, in either map, raises ``ValueError``.

    Returns:
        int64 ``(num_classes, num_classes + 1)``: row = true class, column = predicted class; the last column
        counts predictions of the ignore label, which are always wrong.
    """
    check_positive_int(num_classes, "num_classes")
    pred, gt = check_pair(prediction, target, num_classes, ignore_index)
    return confusion_counts(pred, gt, num_classes, ignore_index)


def scored_pixels(target: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """The ground-truth pixels that are scored: a class id, and not the ignore label (which may be one)."""
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    return valid


def confusion_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    valid = scored_pixels(gt, num_classes, ignore_index)
    gt_valid = gt[valid].astype(np.int64)
    pred_valid = pred[valid].astype(np.int64)
    in_range = (pred_valid >= 0) & (pred_valid < num_classes)
    if ignore_index is not None:  # predicting the ignore label is always wrong, even when it is a class id
        in_range &= pred_valid != ignore_index
    pred_valid = np.where(in_range, pred_valid, num_classes)
    counts = np.bincount(gt_valid * (num_classes + 1) + pred_valid, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix ``(C, C + 1)`` (rows: ground truth, columns: prediction, the last
    one every prediction outside the classes, as :func:`confusion_matrix` counts them); NaN for a class absent
    from both."""
    c = confusion.shape[0]
    tp = np.diag(confusion[:, :c]).astype(np.float64)
    return divide(tp, confusion.sum(axis=1) + confusion[:, :c].sum(axis=0) - tp)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """1-px boundary of a binary mask (``seg2bmap``): pixels that differ from their E, S or SE neighbour.

    Neighbours outside the image count as equal, so the image border is not a boundary.
    """
    mask = np.asarray(mask, dtype=bool)
    boundary = np.zeros_like(mask)
    boundary[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    boundary[:-1, :] |= mask[:-1, :] != mask[1:, :]
    boundary[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return boundary


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)),
    )


def _present_classes(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray, num_classes: int) -> np.ndarray:
    """The classes ``0 .. num_classes - 1`` found at the ``valid`` pixels of either map (ascending)."""
    present = np.zeros(num_classes, dtype=bool)
    for labels in (prediction[valid], target[valid]):
        scored = labels[(labels >= 0) & (labels < num_classes)]
        present |= np.bincount(scored, minlength=num_classes)[:num_classes] > 0
    return np.flatnonzero(present)


def _disk(radius: float) -> np.ndarray:
    """The integer offsets within Euclidean ``radius`` of the centre, as a boolean structuring element."""
    r = int(np.floor(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return y * y + x * x <= radius * radius


_DILATE_UP_TO = 3.0
"""Tolerances up to this many pixels are matched by dilating with a disk (exact, and several times faster
than a distance transform at these radii); larger ones by the Euclidean distance transform."""


def _matched_within(source: np.ndarray, reference: np.ndarray, tolerances: Sequence[float]) -> np.ndarray:
    """For each tolerance, how many ``source`` pixels lie within that Euclidean distance of a ``reference`` pixel."""
    if not reference.any() or not source.any():
        return np.zeros(len(tolerances), dtype=np.int64)
    # Every reference pixel lies inside this crop, so distances inside it are exact up to the margin.
    box = _bbox(source | reference, int(np.ceil(max(tolerances))) + 1)
    if max(tolerances) <= _DILATE_UP_TO:
        ref, src = reference[box], source[box]
        return np.array(
            [(ndimage.binary_dilation(ref, structure=_disk(t)) & src).sum() for t in tolerances], dtype=np.int64
        )
    distance = ndimage.distance_transform_edt(~reference[box])[source[box]]
    return np.array([(distance <= t).sum() for t in tolerances], dtype=np.int64)


def boundary_fscore_counts(
    prediction: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    tolerances: Sequence[float] = (1, 2, 3),
    *,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Per-class boundary matching counts for one ``(H, W)`` pair.

    Returns:
        int64 ``(num_classes, len(tolerances), 4)``: matched predicted boundary pixels, predicted boundary
        pixels, matched ground-truth boundary pixels, ground-truth boundary pixels.
    """
    counts = np.zeros((num_classes, len(tolerances), 4), dtype=np.int64)
    valid = scored_pixels(target, num_classes, ignore_index)
    for c in _present_classes(prediction, target, valid, num_classes):
        if c == ignore_index:
            continue
        pred_b = mask_boundary((prediction == c) & valid)
        gt_b = mask_boundary((target == c) & valid)
        counts[c, :, 0] = _matched_within(pred_b, gt_b, tolerances)
        counts[c, :, 1] = pred_b.sum()
        counts[c, :, 2] = _matched_within(gt_b, pred_b, tolerances)
        counts[c, :, 3] = gt_b.sum()
    return counts


def boundary_fscore_from_counts(counts: np.ndarray) -> np.ndarray:
    """Boundary F-scores from counts summed over a dataset (:func:`boundary_fscore_counts`).

    Args:
        counts: ``(..., 4)`` = matched predicted, predicted, matched ground-truth, ground-truth boundary pixels.

    Returns:
        float64 ``(...)``: ``2PR / (P + R)``; 0 where a class has boundary pixels but none is matched, NaN where
        it has none in either map (it does not count).
    """
    matched_pred, n_pred, matched_gt, n_gt = np.moveaxis(np.asarray(counts, np.int64), -1, 0)
    precision = np.where(n_pred > 0, divide(matched_pred, n_pred), 0.0)
    recall = np.where(n_gt > 0, divide(matched_gt, n_gt), 0.0)
    fscore = np.where(precision + recall > 0, divide(2 * precision * recall, precision + recall), 0.0)
    return np.where((n_pred + n_gt) > 0, fscore, np.nan)


def _inner_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` within Chebyshev distance ``width`` of its outside (the image border is outside)."""
    band = np.zeros_like(mask)
    box = _bbox(mask, 1)
    if box is None:
        return band
    crop = np.pad(mask[box], 1)  # zero ring: the image border counts as background, as in Boundary IoU
    distance = ndimage.distance_transform_cdt(crop, metric="chessboard")[1:-1, 1:-1]
    band[box] = mask[box] & (distance <= width)
    return band


def boundary_iou_counts(
    prediction: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    *,
    dilation_ratio: float = 0.02,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Per-class Boundary IoU counts for one ``(H, W)`` pair: int64 ``(num_classes, 2)`` = (intersection, union)."""
    height, width = target.shape
    band_width = max(1, int(round(dilation_ratio * np.hypot(height, width))))
    counts = np.zeros((num_classes, 2), dtype=np.int64)
    valid = scored_pixels(target, num_classes, ignore_index)
    for c in _present_classes(prediction, target, valid, num_classes):
        if c == ignore_index:
            continue
        pred_band = _inner_band(prediction == c, band_width) & valid
        gt_band = _inner_band(target == c, band_width) & valid
        counts[c, 0] = (pred_band & gt_band).sum()
        counts[c, 1] = (pred_band | gt_band).sum()
    return counts


def divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
