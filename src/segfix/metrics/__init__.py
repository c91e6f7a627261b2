"""Segmentation metrics as the paper measures them: mIoU, boundary F-score, Boundary IoU.

The per-image counts live in :mod:`segfix.metrics.functional`, :class:`SegmentationMetrics` and
:class:`BoundaryStatistics` in :mod:`segfix.metrics.accumulators`, all re-exported here; torchmetrics ``Metric``
classes (``BoundaryFScore``, ``BoundaryIoU``) are in :mod:`segfix.metrics.modules`
(``pip install segfix-pytorch[torchmetrics]``).
"""

from .accumulators import BoundaryStatistics, MetricsResult, SegmentationMetrics
from .functional import (
    boundary_fscore_counts,
    boundary_fscore_from_counts,
    boundary_iou_counts,
    class_iou,
    confusion_matrix,
    mask_boundary,
)

__all__ = [
    "BoundaryStatistics",
    "MetricsResult",
    "SegmentationMetrics",
    "boundary_fscore_counts",
    "boundary_fscore_from_counts",
    "boundary_iou_counts",
    "class_iou",
    "confusion_matrix",
    "mask_boundary",
]
