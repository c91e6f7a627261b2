"""Boundary metrics as torchmetrics ``Metric`` classes, so that they sync across processes (DDP) and log
like any other torchmetrics metric. Optional: ``pip install segfix-pytorch[torchmetrics]``.

torchmetrics itself has no boundary F-score or Boundary IoU for semantic maps (its request #1500). These
classes count exactly what :class:`segfix.metrics.SegmentationMetrics` counts (same definitions, same
numbers), keep the counts as ``sum``-reduced states, and form the scores from the summed counts:

* :class:`BoundaryFScore`: per-class boundary F-score at pixel tolerances (1, 2, 3 px by default);
* :class:`BoundaryIoU`: per-class Boundary IoU (Cheng et al., CVPR 2021).

``update(preds, target)`` takes label maps ``(N, H, W)`` or ``(H, W)``, or scores ``(N, C, H, W)`` (logits or
probabilities, argmaxed over ``C``), numpy or torch on any device. Counting runs in numpy on the CPU.

Example:
    >>> import torch
    >>> from segfix.metrics.modules import BoundaryFScore
    >>> metric = BoundaryFScore(num_classes=2, tolerances=(1,))
    >>> target = torch.zeros(1, 8, 8, dtype=torch.long); target[:, :, 4:] = 1
    >>> metric.update(target.clone(), target)
    >>> round(float(metric.compute().mean()), 3)
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

try:
    from torchmetrics import Metric
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "segfix.metrics.modules needs torchmetrics: pip install 'segfix-pytorch[torchmetrics]'"
    ) from error

from ..checks import check_class_range, check_positive_int, describe
from .functional import boundary_fscore_counts, boundary_fscore_from_counts, boundary_iou_counts

__all__ = ["BoundaryFScore", "BoundaryIoU"]

_AVERAGES = ("macro", "none")


def _label_maps(x, name: str, num_classes: int) -> np.ndarray:
    """``(N, H, W)`` int64 label maps from label maps or ``(N, C, H, W)`` scores."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor or numpy array, got {describe(x)}")
    if x.is_floating_point():
        if x.ndim != 4 or x.shape[1] != num_classes:
            raise ValueError(
                f"{name}: expected float scores (N, {num_classes}, H, W) or integer label maps (N, H, W), "
                f"got {describe(x)}"
            )
        x = x.argmax(1)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name}: expected label maps (N, H, W) or (H, W), got {describe(x)}")
    return x.detach().to("cpu", torch.int64).numpy()


def _check_average(average: str) -> str:
    if average not in _AVERAGES:
        raise ValueError(f"average: expected 'macro' or 'none', got {average!r}")
    return average


class _BoundaryMetric(Metric):
    """Shared input handling: label maps of ``num_classes`` classes, ``ignore_index`` never scored."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, *, ignore_index: int | None = 255, average: str = "macro", **kwargs):
        super().__init__(**kwargs)
        check_positive_int(num_classes, "num_classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.average = _check_average(average)

    def _pairs(self, preds, target):
        pred = _label_maps(preds, "preds", self.num_classes)
        gt = _label_maps(target, "target", self.num_classes)
        if pred.shape != gt.shape:
            raise ValueError(f"preds: expected the target's shape {tuple(gt.shape)}, got {tuple(pred.shape)}")
        check_class_range(gt, "target", self.num_classes, self.ignore_index)
        scored = (gt != self.ignore_index) if self.ignore_index is not None else np.ones_like(gt, bool)
        check_class_range(pred[scored], "preds", self.num_classes, self.ignore_index)
        return zip(pred, gt)


def _count_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` of integer counts in float64, 0 where the denominator is 0."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))


def _macro(per_class: torch.Tensor) -> torch.Tensor:
    """Mean over classes that count (not NaN), per trailing column."""
    return per_class.nanmean(0)


class BoundaryFScore(_BoundaryMetric):
    """Per-class boundary F-score at pixel ``tolerances``, from counts summed over the dataset (and processes).

    Args:
        num_classes: classes ``0 .. num_classes - 1``.
        tolerances: distances in pixels (Euclidean).
        ignore_index: ground-truth pixels with this value are not scored.
        average: ``'macro'``: ``compute()`` gives the mean over classes present in predictions or ground truth,
            shape ``(len(tolerances),)``; ``'none'``: per class, ``(num_classes, len(tolerances))``, NaN for
            classes that do not count.
        kwargs: torchmetrics ``Metric`` arguments (``dist_sync_on_step``, ``process_group``, ...).
    """

    counts: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        tolerances: Sequence[float] = (1, 2, 3),
        *,
        ignore_index: int | None = 255,
        average: str = "macro",
        **kwargs,
    ) -> None:
        super().__init__(num_classes, ignore_index=ignore_index, average=average, **kwargs)
        if not tolerances or any(not (0 < t < float("inf")) for t in tolerances):
            raise ValueError(f"tolerances: expected positive, finite pixel distances, got {tolerances!r}")
        self.tolerances = tuple(float(t) for t in tolerances)
        zeros = torch.zeros(num_classes, len(self.tolerances), 4, dtype=torch.int64)
        self.add_state("counts", default=zeros, dist_reduce_fx="sum")

    def update(self, preds, target) -> None:
        """Add label maps (or scores) and their ground truth; see the module docstring for shapes."""
        for p, g in self._pairs(preds, target):
            counts = boundary_fscore_counts(p, g, self.num_classes, self.tolerances, ignore_index=self.ignore_index)
            self.counts += torch.from_numpy(counts).to(self.counts.device)

    def compute(self) -> torch.Tensor:
        # One formula for both metric APIs: SegmentationMetrics forms its F-scores from the same counts.
        fscore = torch.from_numpy(boundary_fscore_from_counts(self.counts.cpu().numpy())).to(self.counts.device)
        return _macro(fscore) if self.average == "macro" else fscore


class BoundaryIoU(_BoundaryMetric):
    """Per-class Boundary IoU from intersections and unions summed over the dataset (and processes).

    Args:
        num_classes: classes ``0 .. num_classes - 1``.
        dilation_ratio: band width as a fraction of each image's diagonal (0.02 as in the paper).
        ignore_index: ground-truth pixels with this value are not scored.
        average: ``'macro'`` (a scalar: mean over classes with a non-empty union) or ``'none'`` (``(num_classes,)``).
        kwargs: torchmetrics ``Metric`` arguments.
    """

    counts: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        dilation_ratio: float = 0.02,
        *,
        ignore_index: int | None = 255,
        average: str = "macro",
        **kwargs,
    ) -> None:
        super().__init__(num_classes, ignore_index=ignore_index, average=average, **kwargs)
        if not 0 < dilation_ratio < 1:
            raise ValueError(f"dilation_ratio: expected a fraction in (0, 1), got {dilation_ratio!r}")
        self.dilation_ratio = float(dilation_ratio)
        self.add_state("counts", default=torch.zeros(num_classes, 2, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds, target) -> None:
        """Add label maps (or scores) and their ground truth; see the module docstring for shapes."""
        for p, g in self._pairs(preds, target):
            counts = boundary_iou_counts(
                p, g, self.num_classes, dilation_ratio=self.dilation_ratio, ignore_index=self.ignore_index
            )
            self.counts += torch.from_numpy(counts).to(self.counts.device)

    def compute(self) -> torch.Tensor:
        intersection, union = self.counts.unbind(-1)
        iou = _count_ratio(intersection, union)
        iou = torch.where(union > 0, iou, torch.full_like(iou, float("nan")))
        return _macro(iou) if self.average == "macro" else iou
