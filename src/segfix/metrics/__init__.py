"""Segmentation metrics as the paper measures them: mIoU, boundary F-score, Boundary IoU.

The functions and :class:`SegmentationMetrics` live in :mod:`segfix.metrics.functional` and are re-exported
here; torchmetrics ``Metric`` classes (``BoundaryFScore``, ``BoundaryIoU``) are in :mod:`segfix.metrics.modules`
(``pip install segfix-pytorch[torchmetrics]``).
"""

from .functional import (
    BoundaryStatistics,
    MetricsResult,
    SegmentationMetrics,
    boundary_fscore_counts,
    boundary_fscore_from_counts,
    boundary_iou_counts,
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
    "confusion_matrix",
    "mask_boundary",
]
