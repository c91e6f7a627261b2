"""Metrics accumulated image by image over a dataset: :class:`SegmentationMetrics` (mIoU, boundary F-scores,
Boundary IoU) into a :class:`MetricsResult`, and :class:`BoundaryStatistics` (how much of each class lies near a
boundary). The per-image counting is :mod:`segfix.metrics.functional`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..checks import check_class_range, check_positive_int
from .functional import (
    boundary_fscore_counts,
    boundary_fscore_from_counts,
    boundary_iou_counts,
    check_pair,
    class_iou,
    confusion_counts,
    divide,
    numpy_labels,
    scored_pixels,
)

__all__ = ["BoundaryStatistics", "MetricsResult", "SegmentationMetrics"]


@dataclass(repr=False)
class MetricsResult:
    """Dataset-level scores as fractions in [0, 1]; NaN marks a class that does not count.

    Attributes:
        iou: ``(C,)`` IoU per class.
        boundary_f: tolerance (px) -> ``(C,)`` boundary F-score per class.
        boundary_iou: ``(C,)`` Boundary IoU per class.
        class_names: names of the C classes.
        confusion: ``(C, C + 1)`` confusion counts.
    """

    iou: np.ndarray
    boundary_f: dict[float, np.ndarray]
    boundary_iou: np.ndarray
    class_names: list[str]
    confusion: np.ndarray = field(repr=False)

    @property
    def miou(self) -> float:
        return _nanmean(self.iou)

    @property
    def mean_boundary_f(self) -> dict[float, float]:
        return {t: _nanmean(f) for t, f in self.boundary_f.items()}

    @property
    def mean_boundary_iou(self) -> float:
        return _nanmean(self.boundary_iou)

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion[:, : len(self.class_names)]) / total) if total else float("nan")

    def columns(self) -> dict[str, np.ndarray]:
        """Per-class columns in table order: IoU, F@t for each tolerance, Boundary IoU."""
        cols = {"IoU": self.iou}
        cols.update({f"F@{_fmt_tol(t)}px": f for t, f in self.boundary_f.items()})
        cols["BIoU"] = self.boundary_iou
        return cols

    def means(self) -> dict[str, float]:
        return {name: _nanmean(col) for name, col in self.columns().items()}

    def as_dict(self) -> dict:
        """JSON-ready: per-class and mean scores in percent (NaN -> None)."""
        per_class = {
            name: {col: _pct(values[i]) for col, values in self.columns().items()}
            for i, name in enumerate(self.class_names)
        }
        return {
            "per_class": per_class,
            "mean": {k: _pct(v) for k, v in self.means().items()},
            "pixel_accuracy": _pct(self.pixel_accuracy),
        }

    def __repr__(self) -> str:
        f = self.mean_boundary_f
        boundary = ", ".join(f"F@{_fmt_tol(t)}px {v * 100:.2f}" for t, v in f.items())
        return f"MetricsResult(mIoU {self.miou * 100:.2f}, {boundary}, BIoU {self.mean_boundary_iou * 100:.2f})"

    def _repr_markdown_(self) -> str:  # notebooks show the per-class table
        return self.to_markdown()

    def to_markdown(self) -> str:
        """A Markdown table, one row per class plus the mean, scores in percent."""
        cols = self.columns()
        lines = ["| class | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for i, name in enumerate(self.class_names):
            lines.append(f"| {name} | " + " | ".join(_cell(col[i]) for col in cols.values()) + " |")
        lines.append("| **mean** | " + " | ".join(_cell(v) for v in self.means().values()) + " |")
        return "\n".join(lines)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_fraction(value) -> bool:
    return _is_number(value) and 0 < value < 1


def _positive_distances(values) -> bool:
    """A non-empty sequence of positive, finite numbers (NaN fails every comparison, so it fails here too)."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        return False
    return all(_is_number(v) and 0 < v < np.inf for v in values)


def _fmt_tol(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else str(t)


def _pct(v: float) -> float | None:
    return None if np.isnan(v) else round(float(v) * 100, 4)


def _cell(v: float) -> str:
    return "-" if np.isnan(v) else f"{v * 100:.2f}"


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else float("nan")


class SegmentationMetrics:
    """Accumulate mIoU, boundary F-scores and Boundary IoU image by image, then :meth:`compute`.

    Args:
        num_classes: classes are ``0 .. num_classes - 1``.
        ignore_index: ground-truth pixels with this value are not scored.
        tolerances: boundary F-score tolerances in pixels.
        boundary_iou_dilation: Boundary IoU band width as a fraction of the image diagonal; None skips Boundary
            IoU (NaN in the result), which a search over many settings does not need.
        class_names: optional names for tables.

    Example:
        >>> import numpy as np
        >>> from segfix.metrics import SegmentationMetrics
        >>> m = SegmentationMetrics(2)
        >>> m.update(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]]))
        >>> print([round(float(v), 3) for v in m.compute().iou])
        [0.5, 0.667]
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int | None = 255,
        tolerances: Sequence[float] = (1, 2, 3),
        boundary_iou_dilation: float | None = 0.02,
        class_names: Sequence[str] | None = None,
    ) -> None:
        check_positive_int(num_classes, "num_classes")
        if not _positive_distances(tolerances):
            raise ValueError(
                f"tolerances: expected a non-empty list of positive, finite pixel distances, got {tolerances!r}"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names: expected {num_classes} names, got {len(class_names)}")
        if boundary_iou_dilation is not None and not _is_fraction(boundary_iou_dilation):
            raise ValueError(
                f"boundary_iou_dilation: expected a fraction of the image diagonal in (0, 1) or None, "
                f"got {boundary_iou_dilation!r}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.tolerances = tuple(tolerances)
        self.boundary_iou_dilation = boundary_iou_dilation
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.reset()

    def reset(self) -> None:
        c = self.num_classes
        self.confusion = np.zeros((c, c + 1), dtype=np.int64)
        self.boundary_counts = np.zeros((c, len(self.tolerances), 4), dtype=np.int64)
        self.biou_counts = np.zeros((c, 2), dtype=np.int64)
        self.num_images = 0

    def update(self, prediction, target) -> None:
        """Add one map ``(H, W)`` or a batch ``(N, H, W)`` (numpy or torch) to the totals."""
        pred, gt = check_pair(prediction, target, self.num_classes, self.ignore_index)
        ignore = self.ignore_index
        self.confusion += confusion_counts(pred, gt, self.num_classes, ignore)
        for p, g in zip(pred, gt):
            self.boundary_counts += boundary_fscore_counts(p, g, self.num_classes, self.tolerances, ignore_index=ignore)
            if self.boundary_iou_dilation is not None:
                self.biou_counts += boundary_iou_counts(
                    p, g, self.num_classes, dilation_ratio=self.boundary_iou_dilation, ignore_index=ignore
                )
        self.num_images += len(pred)

    def compute(self) -> MetricsResult:
        iou = class_iou(self.confusion)
        fscore = boundary_fscore_from_counts(self.boundary_counts)
        return MetricsResult(
            iou=iou,
            boundary_f={t: fscore[:, i] for i, t in enumerate(self.tolerances)},
            boundary_iou=divide(self.biou_counts[:, 0], self.biou_counts[:, 1]),
            class_names=list(self.class_names),
            confusion=self.confusion.copy(),
        )


class BoundaryStatistics:
    """Per-class share of ground-truth pixels within ``w`` pixels of another segment (SegFix supp. Table 1).

    A pixel of class ``c`` is within width ``w`` when its distance to the nearest pixel of any other label
    (ignore included) is ``<= w``; this is the ``depth`` of :func:`segfix.boundary_targets` with no class
    skipped.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        widths: Sequence[float] = (1, 2, 3, 4, 5),
        ignore_index: int | None = 255,
        class_names: Sequence[str] | None = None,
    ) -> None:
        check_positive_int(num_classes, "num_classes")
        if not _positive_distances(widths):
            raise ValueError(f"widths: expected a non-empty list of positive, finite pixel distances, got {widths!r}")
        self.num_classes = num_classes
        self.widths = tuple(widths)
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.within = np.zeros((num_classes, len(self.widths)), dtype=np.int64)
        self.total = np.zeros(num_classes, dtype=np.int64)

    def update(self, target) -> None:
        from ..ops.targets import segment_depth  # one distance-transform implementation for both

        def scored(values: np.ndarray) -> np.ndarray:
            keep = (values >= 0) & (values < self.num_classes)
            return keep & (values != self.ignore_index) if self.ignore_index is not None else keep

        maps = numpy_labels(target, "target", self.ignore_index)
        check_class_range(maps, "target", self.num_classes, self.ignore_index)  # as SegmentationMetrics: none dropped
        for gt in maps:
            depth = segment_depth(gt, scored)
            valid = scored_pixels(gt, self.num_classes, self.ignore_index)
            classes = gt[valid].astype(np.int64)
            self.total += np.bincount(classes, minlength=self.num_classes)
            d = depth[valid]
            for i, w in enumerate(self.widths):
                self.within[:, i] += np.bincount(classes[d <= w], minlength=self.num_classes)

    def compute(self) -> np.ndarray:
        """``(C, len(widths))`` fractions; NaN for classes never seen."""
        return divide(self.within, self.total[:, None])
