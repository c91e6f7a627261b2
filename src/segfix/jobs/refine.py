"""``segfix refine``: saved predictions of any model refined, folder in, folder out.

Semantic label PNGs, Cityscapes instance results and COCO results JSON alike. Every output is written atomically
(a temp file renamed into place), never into an input folder; outputs already there are skipped (so a killed job
resumes where it stopped), and files that cannot be processed are reported without stopping the others.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.files import (
    LabelStyle,
    display_name,
    image_size,
    read_label_with_style,
    write_label,
)
from ..ops.field import RefinementField, apply_field_to_instances
from ..prediction.labels import CLASS_IGNORE, LabelSpace
from ..prediction.refinement import pooled_thin_classes, refine_labels
from ._coco import refine_coco
from ._output_folder import Ledger, OutputFolder, claim_output, model_fingerprint, sort_existing
from ._pictures import write_viz
from ._runner import FieldSource, run_batches
from .formats import (
    InstancePrediction,
    instance_mask_names,
    read_cityscapes_instances,
    write_cityscapes_instances,
)
from .pairing import require_folder, scan_folder
from .report import JobReport
from .sharding import WHOLE_JOB, Shard

__all__ = ["refine_folder"]

_logger = logging.getLogger(__name__)

# Name endings that differ between an image and its label/prediction files in common datasets.


@dataclass(frozen=True)
class _SemanticMaps:
    """Adapter for label PNGs: read, refine by a field, write back in the file's own mode and palette (and the
    optional picture). Stored ids become class ids by :func:`segfix.data.registry.encode_labels`, the dataset's stored
    ignore value among them, so that the ignore label lives in class space (255) from there on."""

    label_format: str
    stored_ignore: int | None
    save_viz: bool
    palette: str | None
    folder_thin_classes: Callable[[int], tuple[int, ...]] | None = None

    def matches(self, path: Path) -> bool:
        return path.suffix.lower() == ".png"

    def size(self, path: Path) -> tuple[int, int] | None:
        return image_size(path)

    def read(self, path: Path) -> tuple[np.ndarray, LabelStyle]:
        return read_label_with_style(path)

    def targets(self, relative: Path, loaded: Any) -> list[Path]:
        return [Path("viz") / relative.with_suffix(".png")] if self.save_viz else []

    def refine(self, loaded: tuple[np.ndarray, LabelStyle], field: RefinementField) -> tuple:
        """-> (the stored ids refined, the file's style, the stored ids given)."""
        stored, style = loaded
        if field.size != stored.shape:
            raise ValueError(f"prediction size {stored.shape} does not match offsets/image {field.size}")
        pool = self.folder_thin_classes
        auto = field.thin_guard and isinstance(field.thin_guard_classes, str)
        pooled = pool(field.thin_guard) if auto and pool is not None else None
        space = self.label_space()
        return refine_labels(field, stored, label_space=space, pooled=pooled), style, stored

    def label_space(self) -> LabelSpace:
        return LabelSpace(self.label_format, self.stored_ignore)

    def write(self, outputs: OutputFolder, relative: Path, refined: tuple, image, field: RefinementField) -> None:
        write_label(outputs.path(relative), refined[0], refined[1])
        if self.save_viz:
            viz_path = outputs.path(self.targets(relative, None)[0])
            space = self.label_space()
            before, after = space.encode(refined[2]), space.encode(refined[0])
            write_viz(viz_path, image, before, after, field, self.palette, CLASS_IGNORE)


class _CityscapesInstances:
    """Adapter for Cityscapes instance results: ``*_pred.txt`` plus mask PNGs. The refined masks are written
    beside the output txt under names derived from it (:func:`segfix.jobs.formats.instance_mask_names`)."""

    def matches(self, path: Path) -> bool:
        return path.name.lower().endswith("_pred.txt")

    def size(self, path: Path) -> tuple[int, int] | None:
        return None  # the masks' own sizes are checked against each other and the field when read

    def read(self, path: Path) -> InstancePrediction:
        return read_cityscapes_instances(path)

    def targets(self, relative: Path, loaded: InstancePrediction) -> list[Path]:
        return [relative.parent / name for name in instance_mask_names(relative, len(loaded.masks))]

    def refine(self, pred: InstancePrediction, field: RefinementField) -> InstancePrediction:
        if not len(pred.masks):
            return pred
        if pred.masks.shape[-2:] != field.size:
            raise ValueError(f"mask size {pred.masks.shape[-2:]} does not match offsets/image {field.size}")
        masks = apply_field_to_instances(field, pred.masks)
        return InstancePrediction(masks, pred.classes, pred.scores, pred.names)

    def write(self, outputs: OutputFolder, relative: Path, refined: InstancePrediction, image, field) -> None:
        for extra in self.targets(relative, refined):
            outputs.path(extra)
        write_cityscapes_instances(outputs.path(relative), refined)


def refine_folder(
    labels_dir: Path,
    output_dir: Path,
    *,
    images_dir: Path | None = None,
    model=None,
    offsets_dir: Path | None = None,
    kind: str = "semantic",
    label_format: str = "trainid",
    coco_results: Path | None = None,
    coco_images: Path | None = None,
    scale: int | None = None,
    iterations: int | None = None,
    ignore_index: int | None = 255,
    batch_size: int = 4,
    workers: int = 2,
    save_viz: bool = False,
    palette: str | None = None,
    shard: Shard = WHOLE_JOB,
    progress: Callable[[int], None] | None = None,
) -> JobReport:
    """Refine every prediction in ``labels_dir`` and write the result at the same relative path into
    ``output_dir``; nothing is written anywhere else.

    Args:
        kind: ``'semantic'`` (label PNGs), ``'cityscapes-instance'`` (``*_pred.txt`` + masks) or ``'coco'``
            (one COCO results JSON, ``coco_results``, mapped to images by ``coco_images`` or by image id = stem).
        model: where the fields come from, or ``offsets_dir`` (exactly one of them), each prediction's partner
            found by its relative path (:class:`PartnerIndex`). A model refines by its own settings; offset files by the
            scale, iterations and rule they record (``segfix offsets`` writes the model's), else the paper's
            (scale 2 for semantic maps, 1 for instances, one step, argmax).
        ignore_index: the stored value that is never moved or created (besides the label format's own).
        scale: overrides the model's or the files' scale; ``iterations`` likewise.
        save_viz: also write ``viz/<name>.png`` per semantic map (:func:`segfix.viz.refinement_sheet`).
        palette: colours for those pictures: ``'camvid'``, ``'cityscapes'`` (see :data:`segfix.viz.PALETTES`).
        shard: handle only this process's slice of the sorted files (:class:`segfix.jobs.sharding.Shard`); the
            report then covers that slice. A COCO results file is one item: shard 0 takes it.
        progress: called with the number of items finished after each batch.
    """
    labels_dir, output_dir = Path(labels_dir), Path(output_dir)
    outputs = _check_refine_inputs(kind, labels_dir, output_dir, images_dir, offsets_dir, coco_results)
    source_of = model_fingerprint(model) if model is not None else {"offsets": os.path.realpath(str(offsets_dir))}
    made_by = {**source_of, "kind": kind, "label_format": label_format, "ignore_index": ignore_index,
               "scale": scale, "iterations": iterations}  # fmt: skip
    claim_output(outputs, "refine", made_by)
    report, ledger = JobReport(), Ledger(outputs, "refine", shard)
    instance = kind != "semantic"
    if kind == "coco":
        if shard.index != 0:
            return report
        source = FieldSource(model, offsets_dir, images_dir, instance=True, steps=(scale, iterations))
        return refine_coco(coco_results, coco_images, outputs, source, report, ledger)
    adapter, items, unreadable = _folder_items(kind, labels_dir, label_format, ignore_index, save_viz, palette)
    names = [item.name for item in items]
    source = FieldSource(model, offsets_dir, images_dir, instance=instance, steps=(scale, iterations), item_names=names)
    items, report.failed = shard.take(items), shard.take(unreadable)

    def load(item: Path) -> tuple:
        relative = item.relative_to(labels_dir)
        field, image = source.load(relative, adapter.size(item))
        return adapter.read(item), field, image

    todo = sort_existing(items, labels_dir, lambda item: outputs.path(item.relative_to(labels_dir)), ledger, report)
    outputs.clean(outputs.path(item.relative_to(labels_dir)) for item in todo)
    run_batches(
        todo,
        labels_dir,
        load=load,
        compute=source.fields_of,
        write=_refined_writer(labels_dir, adapter, ledger, outputs),
        report=report,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    for name, reason in report.failed:
        _logger.warning("could not refine %s: %s", display_name(name), reason)
    return report


def _folder_items(
    kind: str, labels_dir: Path, label_format: str, ignore_index: int | None, save_viz: bool, palette: str | None
) -> tuple[Any, list[Path], list[tuple[str, str]]]:
    """(the adapter of ``kind``, the prediction files under ``labels_dir``, those that cannot be read)."""
    adapter: Any = (
        _SemanticMaps(label_format, ignore_index, save_viz, palette) if kind == "semantic" else _CityscapesInstances()
    )
    items, unreadable = scan_folder(labels_dir, adapter.matches)
    if kind == "semantic":  # 'auto' thin classes are pooled over every prediction of the folder, all shards alike
        pooled = _FolderThinClasses(items, label_format, ignore_index)
        adapter = dataclasses.replace(adapter, folder_thin_classes=pooled)
    if not items and not unreadable:
        pattern = "*.png" if kind == "semantic" else "*_pred.txt"
        raise FileNotFoundError(f"predictions: no {pattern} files under {labels_dir}")
    return adapter, items, unreadable


def _refined_writer(labels_dir: Path, adapter: Any, ledger: Ledger, outputs: OutputFolder):
    """The write step of a refine job: refine the loaded prediction by its field, refuse to replace a file this
    job did not write, record the name, write."""

    def write(item: Path, loaded: tuple, field: RefinementField) -> None:
        relative = item.relative_to(labels_dir)
        name = str(relative)
        refined = adapter.refine(loaded[0], field)
        if name not in ledger:  # a re-run may replace what it wrote itself, never a file it finds there
            for extra in adapter.targets(relative, refined):
                if outputs.path(extra).exists():
                    raise FileExistsError(f"{outputs.path(extra)} exists and was not written by segfix; move it")
        ledger.add(name)
        adapter.write(outputs, relative, refined, loaded[2], field)

    return write


class _FolderThinClasses:
    """The thin classes of a folder of predictions (:func:`segfix.thin_classes` over all of them, every shard
    alike), found on first use for each guard radius; maps that cannot be read are left out."""

    def __init__(self, paths: Sequence[Path], label_format: str, stored_ignore: int | None) -> None:
        self.paths, self.label_format, self.stored_ignore = list(paths), label_format, stored_ignore
        self.found: dict[int, tuple[int, ...]] = {}

    def __call__(self, radius: int) -> tuple[int, ...]:
        if radius not in self.found:
            self.found[radius] = pooled_thin_classes(self._maps(), radius)  # class ids, 255 ignored
            _logger.info("thin classes of the folder at radius %d: %s", radius, self.found[radius])
        return self.found[radius]

    def _maps(self):
        space = LabelSpace(self.label_format, self.stored_ignore)
        for path in self.paths:
            try:
                classes = space.encode(read_label_with_style(path)[0])
            except (OSError, ValueError):
                continue  # reported when the job reaches it
            yield classes


def _check_refine_inputs(
    kind: str,
    labels_dir: Path,
    output_dir: Path,
    images_dir: Path | None,
    offsets_dir: Path | None,
    coco_results: Path | None,
) -> OutputFolder:
    """Refuse an unknown kind, missing inputs, or an output inside an input (or the reverse), before anything
    is read; returns where the job may write."""
    if kind not in ("semantic", "cityscapes-instance", "coco"):
        raise ValueError(f"kind: expected 'semantic', 'cityscapes-instance' or 'coco', got {kind!r}")
    if kind == "coco":
        if coco_results is None or not Path(coco_results).is_file():
            raise FileNotFoundError(f"kind 'coco' needs the COCO results JSON; no such file {coco_results}")
    else:
        require_folder(labels_dir, "predictions")
    require_folder(images_dir, "images")
    require_folder(offsets_dir, "offsets")
    inputs = [Path(coco_results).parent if coco_results is not None else labels_dir, images_dir, offsets_dir]
    return OutputFolder(output_dir, inputs)
