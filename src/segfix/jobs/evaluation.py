"""Folder evaluation behind ``segfix eval`` and ``segfix stats``: predictions against ground truth, and how much
of each class lies near a boundary, with the tables they print and write.

Label PNGs are read in the dataset's stored format (:data:`segfix.data.registry.LABEL_FORMATS`); the dataset's ignore
label becomes 255. A file that cannot be read, or whose size differs from its ground truth, stops the job with an
error naming both files.
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..data.files import atomic_write, display_name, match_stem, read_label, walk_files
from ..data.registry import DATASETS, encode_labels
from ..metrics.accumulators import BoundaryStatistics, MetricsResult, SegmentationMetrics
from .pairing import PartnerIndex, index_files, require_folder

__all__ = ["boundary_statistics_folder", "evaluate_folder"]

_logger = logging.getLogger(__name__)


def matching_pairs(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) PNG pairs matched by relative path (:class:`segfix.jobs.pairing.PartnerIndex`);
    every ground-truth map needs its own prediction. Predictions without ground truth are not scored, and a
    warning says how many.

    Raises:
        FileNotFoundError: a missing folder, or no ground truth. ValueError: ground truth without predictions,
        or a prediction that two ground-truth maps would share.
    """
    require_folder(pred_dir, "predictions")
    require_folder(gt_dir, "ground truth")
    gts = ground_truth_files(gt_dir)
    preds = PartnerIndex(pred_dir, (".png",), "predictions", [g.name for g in gts])
    pairs, missing = [], []
    for gt in gts:
        try:
            pairs.append((preds.find(gt.relative_to(gt_dir)), gt))
        except FileNotFoundError:
            missing.append(display_name(str(gt.relative_to(gt_dir))))
    if missing:
        raise ValueError(f"{len(missing)} ground-truth maps have no prediction in {pred_dir}, e.g. {missing[:3]}")
    unused = sorted(set(preds.files) - {pred for pred, _ in pairs})
    if unused:
        shown = [display_name(str(p.relative_to(pred_dir))) for p in unused[:3]]
        _logger.warning(
            "%s: %d of %d predictions have no ground truth in %s and are not scored, e.g. %s",
            pred_dir,
            len(unused),
            len(preds.files),
            gt_dir,
            shown,
        )
    return pairs


def read_predictions(folder: Path, names: Sequence[str], dataset_kind: str) -> list[np.ndarray]:
    """A network's predictions ``<name>.png`` in ``folder`` for each of ``names``, in class ids: decoded as the
    dataset ``dataset_kind`` stores its labels (its format and ignore label), as ``segfix eval`` reads them.

    Raises:
        ValueError: a missing folder, or names without a prediction (the first few named).
    """
    require_folder(folder, "--coarse")
    files = index_files(folder, (".png",))
    missing = [n for n in names if match_stem(n) not in files]
    if missing:
        raise ValueError(f"--coarse {folder} lacks {len(missing)} images' predictions, e.g. {missing[:3]}")
    info = DATASETS.get(dataset_kind)
    label_format, stored_ignore = (info.label_format, info.stored_ignore) if info else ("trainid", 255)
    return [read_ground_truth(files[match_stem(n)], label_format, stored_ignore) for n in names]


def read_ground_truth(path: Path, label_format: str, stored_ignore: int) -> np.ndarray:
    """Class ids of a ground-truth PNG, with the dataset's ignore label (a stored value) mapped to 255."""
    return encode_labels(read_label(path), label_format, stored_ignore)


def evaluate_folder(
    pred_dir: Path,
    gt_dir: Path,
    *,
    num_classes: int,
    stored_ignore: int = 255,
    label_format: str = "trainid",
    class_names: Sequence[str] | None = None,
    tolerances: Sequence[int] = (1, 2, 3),
    progress: Callable[[int], None] | None = None,
) -> MetricsResult:
    """IoU and boundary F-scores of the predictions in ``pred_dir`` against ``gt_dir`` (matched by name)."""
    pairs = matching_pairs(Path(pred_dir), Path(gt_dir))
    return evaluate_pairs(
        pairs,
        num_classes=num_classes,
        stored_ignore=stored_ignore,
        label_format=label_format,
        class_names=class_names,
        tolerances=tolerances,
        progress=progress,
    )


def evaluate_pairs(
    pairs: Sequence[tuple[Path, Path]],
    *,
    num_classes: int,
    stored_ignore: int = 255,
    label_format: str = "trainid",
    pred_format: str | None = None,
    class_names: Sequence[str] | None = None,
    tolerances: Sequence[int] = (1, 2, 3),
    progress: Callable[[int], None] | None = None,
) -> MetricsResult:
    """:func:`evaluate_folder` over given (prediction, ground truth) pairs (:func:`matching_pairs`).

    ``pred_format``: how the predictions store ids when it differs from the ground truth's ``label_format`` (None:
    the same; then ``stored_ignore`` applies to both). Warns (``UserWarning``) when most predicted maps decode to
    mostly ignore while their ground truth does not: a sign of predictions read in the wrong format.
    """
    metrics = SegmentationMetrics(num_classes, ignore_index=255, tolerances=tuple(tolerances), class_names=class_names)
    pred_format = label_format if pred_format is None else pred_format
    pred_ignore = stored_ignore if pred_format == label_format else None
    suspicious = 0
    for pred_path, gt_path in pairs:
        try:
            gt = read_ground_truth(gt_path, label_format, stored_ignore)
            pred = encode_labels(read_label(pred_path), pred_format, pred_ignore)
            if pred.shape != gt.shape:
                raise ValueError(f"size {pred.shape[::-1]} differs from the ground truth's {gt.shape[::-1]}")
            metrics.update(pred, gt)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"{pred_path} (ground truth {gt_path}): {error}") from error
        suspicious += bool(np.mean(pred == 255) > 0.5 and np.mean(gt == 255) < 0.5)
        if progress is not None:
            progress(1)
    if pairs and 2 * suspicious > len(pairs):
        warnings.warn(
            f"{suspicious} of {len(pairs)} predicted maps decode to mostly ignore as {pred_format!r} while their "
            "ground truth does not: are the predictions stored in another format? (--pred-format, e.g. trainid "
            "predictions against Cityscapes labelIds)",
            UserWarning,
            stacklevel=2,
        )
    return metrics.compute()


def comparison_markdown(before: MetricsResult, after: MetricsResult, folders: Sequence[Path]) -> str:
    """A per-class table of two results side by side, with the change, in points."""
    cols_b, cols_a = before.columns(), after.columns()
    header = "| class | " + " | ".join(f"{c} before | {c} after | Δ" for c in cols_b) + " |"
    lines = [header, "|---" * (1 + 3 * len(cols_b)) + "|"]

    def cells(values_b, values_a) -> str:
        out = []
        for b, a in zip(values_b, values_a):
            delta = "-" if np.isnan(a) or np.isnan(b) else f"{(a - b) * 100:+.2f}"
            out += [_points(b), _points(a), delta]
        return " | ".join(out)

    for i, name in enumerate(before.class_names):
        lines.append(f"| {name} | " + cells([c[i] for c in cols_b.values()], [c[i] for c in cols_a.values()]) + " |")
    lines.append("| **mean** | " + cells(list(before.means().values()), list(after.means().values())) + " |")
    return f"before: {folders[0]}, after: {folders[1]}\n\n" + "\n".join(lines)


def _points(value: float) -> str:
    return "-" if np.isnan(value) else f"{value * 100:.2f}"


def write_results_csv(path: Path, results: Sequence[MetricsResult], folders: Sequence[Path]) -> None:
    """One row per folder and class (and its mean), in points; written atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["predictions", "class", *results[0].columns()])
            for folder, r in zip(folders, results):
                cols = r.columns()
                for i, name in enumerate(r.class_names):
                    out.writerow([folder, name, *(f"{c[i] * 100:.4f}" for c in cols.values())])
                out.writerow([folder, "mean", *(f"{v * 100:.4f}" for v in r.means().values())])

    atomic_write(path, write)


def ground_truth_files(gt_dir: Path) -> list[Path]:
    """The visible ground-truth PNGs under ``gt_dir``, sorted.

    Raises:
        FileNotFoundError: a missing folder, or no PNG in it.
    """
    require_folder(Path(gt_dir), "ground truth")
    files = [p for p in walk_files(Path(gt_dir))[0] if p.suffix.lower() == ".png"]
    if not files:
        raise FileNotFoundError(f"ground truth: no .png files under {gt_dir}")
    return files


def boundary_statistics_folder(
    gt_dir: Path,
    *,
    num_classes: int,
    stored_ignore: int = 255,
    label_format: str = "trainid",
    class_names: Sequence[str] | None = None,
    widths: Sequence[float] = (1, 2, 3, 4, 5),
    progress: Callable[[int], None] | None = None,
) -> BoundaryStatistics:
    """How much of each class lies within each width of a boundary, over the ground-truth PNGs in ``gt_dir``."""
    return boundary_statistics_files(
        ground_truth_files(Path(gt_dir)),
        num_classes=num_classes,
        stored_ignore=stored_ignore,
        label_format=label_format,
        class_names=class_names,
        widths=widths,
        progress=progress,
    )


def boundary_statistics_files(
    files: Sequence[Path],
    *,
    num_classes: int,
    stored_ignore: int = 255,
    label_format: str = "trainid",
    class_names: Sequence[str] | None = None,
    widths: Sequence[float] = (1, 2, 3, 4, 5),
    progress: Callable[[int], None] | None = None,
) -> BoundaryStatistics:
    """:func:`boundary_statistics_folder` over given ground-truth files (:func:`ground_truth_files`)."""
    stats = BoundaryStatistics(num_classes, widths=tuple(widths), class_names=class_names)
    for path in files:
        try:
            stats.update(read_ground_truth(path, label_format, stored_ignore))
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"{path}: {error}") from error
        if progress is not None:
            progress(1)
    return stats


def statistics_markdown(stats: BoundaryStatistics, class_names: Sequence[str], widths: Sequence[float]) -> str:
    """The share of each class's pixels within each width of a boundary, as a table."""
    lines = ["| class | " + " | ".join(f"{w:g} px" for w in widths) + " |", "|---" * (len(widths) + 1) + "|"]
    for name, row in zip(class_names, stats.compute()):
        lines.append(f"| {name} | " + " | ".join(_points(v) for v in row) + " |")
    overall = stats.within.sum(0) / max(stats.total.sum(), 1)
    lines.append("| **all** | " + " | ".join(f"{v * 100:.2f}" for v in overall) + " |")
    return "\n".join(lines)
