"""Folder-level jobs behind the command line: refine saved predictions, predict offsets, evaluate.

Jobs write every output atomically (a temp file renamed into place), never write into an input folder, skip
outputs that already exist (so a killed job resumes where it stopped), and report files they could not process
without stopping the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import atomic_write, is_temp_file, match_stem, read_image, read_label, write_png
from .directions import direction_to_offset
from .formats import (
    InstancePrediction,
    OffsetSettings,
    decode_labels,
    encode_labels,
    read_cityscapes_instances,
    read_offset_file,
    rle_decode,
    rle_encode,
    write_cityscapes_instances,
    write_offsets,
)
from .refine import refine_instances, refine_semantic
from .sharding import WHOLE_JOB, Shard

__all__ = [
    "JobReport",
    "find_images",
    "index_files",
    "match_stem",
    "offsets_folder",
    "refine_folder",
    "require_folder",
]

_logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Name endings that differ between an image and its label/prediction files in common datasets.


@dataclass
class JobReport:
    """What a folder job did: names written, skipped (already done) and failed (with the reason)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return f"{len(self.done)} written, {len(self.skipped)} already done, {len(self.failed)} failed"


def index_files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """The files under ``folder`` (recursively, hidden ones skipped) with one of ``suffixes``, by
    :func:`match_stem`; the first in sorted order wins when two share a key."""
    index: dict[str, Path] = {}
    for path in _visible(Path(folder).rglob("*")):
        if path.suffix.lower() in suffixes:
            index.setdefault(match_stem(path.name), path)
    return index


def find_images(folder: Path) -> dict[str, Path]:
    """Index the images under ``folder`` by :func:`match_stem`."""
    return index_files(folder, IMAGE_SUFFIXES)


def _remove_stale_partials(targets: Iterable[Path]) -> None:
    """Delete temp files a killed run left beside its own outputs: only in the folders this job writes to,
    and only files named by ``atomic_write`` (``.segfix-tmp-*.partial*``). Nothing else is ever removed."""
    for folder in {Path(t).parent for t in targets}:
        if folder.is_dir():
            for path in folder.iterdir():
                if is_temp_file(path):
                    path.unlink(missing_ok=True)


class _Ledger:
    """The outputs a job has written into its output folder, one relative name a line in ``.segfix-<job>.done``.

    A file found in the output folder counts as finished only when the ledger lists it: a user's own file of the
    same name is reported and left alone, never taken for a result nor overwritten. A name is recorded just
    before its file is renamed into place, so a kill in between only means the file is made again."""

    def __init__(self, output: Path, job: str, shard: Shard = WHOLE_JOB) -> None:
        self.path = Path(output) / f".segfix-{job}{shard.ledger_suffix()}.done"
        # Every process's ledger counts, so a re-run with another number of processes still skips finished work.
        self.names: set[str] = set()
        for path in [Path(output) / f".segfix-{job}.done", *sorted(Path(output).glob(f".segfix-{job}.shard*.done"))]:
            if path.is_file():
                self.names.update(path.read_text().splitlines())

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def add(self, name: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(name + "\n")
        self.names.add(name)


def _sort_existing(
    items: Sequence[Path], root: Path, target: Callable[[Path], Path], ledger: _Ledger, report: JobReport
) -> list[Path]:
    """Items still to do; finished ones go to ``report.skipped``, outputs segfix did not write to ``report.failed``."""
    todo = []
    for item in items:
        name, out = str(item.relative_to(root)), target(item)
        if not out.exists():
            todo.append(item)
        elif name in ledger and out.is_file():
            report.skipped.append(name)
        else:
            reason = (
                f"{out} exists and was not written by segfix; move it or pick another output (nothing is overwritten)"
            )
            report.failed.append((name, reason))
    return todo


def _visible(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and not p.name.startswith("."))


def _scan(folder: Path, wanted: Callable[[Path], bool]) -> tuple[list[Path], list[tuple[str, str]]]:
    """One walk of ``folder``: the visible files ``wanted`` accepts (sorted), and the entries it accepts that
    are not readable files (broken links, folders), reported by name."""
    files, bad = [], []
    for path in sorted(Path(folder).rglob("*")):
        if path.name.startswith(".") or not wanted(path):
            continue
        if path.is_file():
            files.append(path)
        else:
            what = "a folder" if path.is_dir() else "a broken link" if path.is_symlink() else "not a regular file"
            bad.append((str(path.relative_to(folder)), f"{path} is {what}, not a file"))
    return files, bad


def require_folder(path: Path | None, what: str) -> None:
    """Refuse a missing input folder up front, naming it (a typo must not look like an empty job)."""
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"{what}: no such folder {path}")


def _check_output(output: Path, inputs: Iterable[Path | None]) -> None:
    out = Path(output).resolve()
    for folder in inputs:
        if folder is None:
            continue
        folder = Path(folder).resolve()
        if out == folder or folder in out.parents:
            raise ValueError(
                f"output folder {output} lies inside the input folder {folder}; choose another so that "
                "no input is overwritten"
            )


class _OffsetSource:
    """Offsets for an item: read from a folder of .npz/.mat files, or predicted by a model from the image."""

    def __init__(self, model=None, offsets_dir: Path | None = None, images_dir: Path | None = None) -> None:
        if (model is None) == (offsets_dir is None):
            raise ValueError("expected exactly one of a model or an offsets folder")
        if model is not None and images_dir is None:
            raise ValueError("a model needs the images: pass the images folder")
        self.model = model
        self.offsets = index_files(offsets_dir, (".npz", ".mat")) if offsets_dir is not None else {}
        self.settings: dict[str, OffsetSettings] = {}  # what each loaded offsets file records
        self.images = find_images(images_dir) if images_dir is not None else {}

    def image_for(self, stem: str) -> Path:
        if stem not in self.images:
            raise FileNotFoundError(f"no image named {stem}.* in the images folder")
        return self.images[stem]

    def load(self, stem: str):
        """-> (offsets or None, image or None); a model's offsets are computed later, in batches."""
        if self.model is None:
            if stem not in self.offsets:
                raise FileNotFoundError(f"no offsets file {stem}.npz or {stem}.mat in the offsets folder")
            offsets, self.settings[stem] = read_offset_file(self.offsets[stem])
            return offsets, None
        return None, read_image(self.image_for(stem))

    def steps(self, stem: str, scale: int | None, iterations: int | None, default_scale: int) -> tuple[int, int]:
        """(scale, iterations) for one loaded item: the caller's, else those its offsets file recorded, else
        ``default_scale`` and one step (the paper's, for files that record nothing). With a model the caller
        passes the model's own."""
        stored = self.settings.get(stem)
        if stored is not None:
            return (
                scale if scale is not None else stored.scale if stored.scale is not None else default_scale,
                iterations if iterations is not None else stored.iterations or 1,
            )
        return (scale if scale is not None else default_scale, iterations if iterations is not None else 1)

    def predict(self, images: Sequence[np.ndarray]) -> list:
        """Per image: offsets ``(2, H, W)``, or for a model with ``direction_vote`` its :class:`Prediction` (the
        vote needs the direction probabilities, not one offset)."""
        if not images:
            return []
        if getattr(self.model, "direction_vote", False):
            return [self.model.predict(image, direction_prob=True) for image in images]
        result = self.model.predict_offsets(list(images))
        if isinstance(result, list):
            return result
        return list(result) if result.ndim == 4 else [result]

    def offsets_of(self, prediction) -> np.ndarray:
        """The offsets of what :meth:`predict` or :meth:`load` returned."""
        if isinstance(prediction, np.ndarray):
            return prediction
        return direction_to_offset(prediction.direction, prediction.boundary, num_directions=self.model.num_directions)


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
    ignore_index: int = 255,
    batch_size: int = 4,
    workers: int = 2,
    save_viz: bool = False,
    palette: str | None = None,
    shard: Shard = WHOLE_JOB,
    progress: Callable[[int], None] | None = None,
) -> JobReport:
    """Refine every prediction in ``labels_dir`` and write the result with the same name into ``output_dir``.

    Args:
        kind: ``'semantic'`` (label PNGs), ``'cityscapes-instance'`` (``*_pred.txt`` + masks) or ``'coco'``
            (one COCO results JSON, ``coco_results``, mapped to images by ``coco_images`` or by image id = stem).
        model / offsets_dir: where offsets come from (exactly one).
        scale: default: the model's ``semantic_scale`` / ``instance_scale``; with offset files the scale each
            file records (``segfix offsets`` writes the model's), else 2 for semantic, 1 for instances (the paper).
        iterations: steps along the offsets; default: the model's ``iterations``, or the file's, else 1.
        save_viz: also write ``viz/<name>.png`` per semantic map (:func:`segfix.viz.refinement_sheet`).
        palette: colours for those pictures: ``'camvid'``, ``'cityscapes'`` (see :data:`segfix.viz.PALETTES`).
        shard: handle only this process's slice of the sorted files (:class:`segfix.sharding.Shard`); the
            report then covers that slice. A COCO results file is one item: shard 0 takes it.
        progress: called with the number of items finished after each batch.
    """
    labels_dir, output_dir = Path(labels_dir), Path(output_dir)
    if kind == "coco":
        if coco_results is None or not Path(coco_results).is_file():
            raise FileNotFoundError(f"kind 'coco' needs the COCO results JSON; no such file {coco_results}")
    else:
        require_folder(labels_dir, "predictions")
    require_folder(images_dir, "images")
    require_folder(offsets_dir, "offsets")
    _check_output(output_dir, [labels_dir, images_dir, offsets_dir, coco_results.parent if coco_results else None])
    source = _OffsetSource(model, offsets_dir, images_dir)
    if model is not None:
        default_scale = model.semantic_scale if kind == "semantic" else model.instance_scale
        scale = default_scale if scale is None else scale
        iterations = model.iterations if iterations is None else iterations
    else:  # offsets files: what each records, else the paper's scale
        default_scale = 2 if kind == "semantic" else 1
    report = JobReport()
    ledger = _Ledger(output_dir, "refine", shard)
    if kind == "coco":
        if shard.index != 0:
            return report
        return _refine_coco(
            coco_results, coco_images, output_dir, source, (scale, iterations, default_scale), report, ledger
        )
    if kind not in ("semantic", "cityscapes-instance"):
        raise ValueError(f"kind: expected 'semantic', 'cityscapes-instance' or 'coco', got {kind!r}")
    pattern = "*.png" if kind == "semantic" else "*_pred.txt"
    items, unreadable = _scan(labels_dir, lambda path: path.match(pattern))
    if not items and not unreadable:
        raise FileNotFoundError(f"predictions: no {pattern} files under {labels_dir}")
    items, report.failed = shard.take(items), shard.take(unreadable)

    def target(item: Path) -> Path:
        return output_dir / item.relative_to(labels_dir)

    todo = _sort_existing(items, labels_dir, target, ledger, report)
    _remove_stale_partials(target(item) for item in todo)

    def load(item: Path):
        stem = match_stem(item.name)
        if kind == "semantic":
            stored = read_label(item)
            return stored, *source.load(stem)
        prediction = read_cityscapes_instances(item)
        return prediction, *source.load(stem)

    def finish(item: Path, data, prediction, image: np.ndarray | None) -> None:
        offsets = source.offsets_of(prediction)
        step, steps = source.steps(match_stem(item.name), scale, iterations, default_scale)
        if kind == "semantic":
            stored = data
            if offsets.shape[-2:] != stored.shape:
                raise ValueError(f"prediction size {stored.shape} does not match offsets/image {offsets.shape[-2:]}")
            classes = encode_labels(stored, label_format)
            if isinstance(prediction, np.ndarray):  # offsets, read from a file or predicted by the argmax rule
                refined = refine_semantic(classes, offsets, scale=step, iterations=steps, ignore_index=ignore_index)
            else:
                refined = source.model.refine_prediction(
                    prediction, classes, scale=step, iterations=steps, ignore_index=ignore_index
                )
            ledger.add(str(item.relative_to(labels_dir)))
            write_png(target(item), decode_labels(refined, stored, label_format))
            if save_viz:
                viz_path = output_dir / "viz" / f"{item.stem}.png"
                _write_viz(viz_path, image, classes, refined, prediction, offsets, palette, ignore_index)
        else:
            pred: InstancePrediction = data
            if len(pred.masks) and offsets.shape[-2:] != pred.masks.shape[-2:]:
                raise ValueError(f"mask size {pred.masks.shape[-2:]} does not match offsets/image {offsets.shape[-2:]}")
            masks = (
                refine_instances(pred.masks, offsets, scale=step, iterations=steps) if len(pred.masks) else pred.masks
            )
            ledger.add(str(item.relative_to(labels_dir)))
            write_cityscapes_instances(target(item), InstancePrediction(masks, pred.classes, pred.scores, pred.names))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            loaded = list(pool.map(_capture(load), chunk))
            ready = []
            for item, (ok, value) in zip(chunk, loaded):
                if ok:
                    ready.append((item, *value))
                else:
                    report.failed.append((str(item.relative_to(labels_dir)), value))
            need_images = [(i, img) for i, (_, _, off, img) in enumerate(ready) if off is None]
            if need_images:
                try:
                    predicted = source.predict([img for _, img in need_images])
                except Exception as error:  # noqa: BLE001 - one bad batch must not stop the job
                    predicted = [None] * len(need_images)
                    for i, _ in need_images:
                        report.failed.append((str(ready[i][0].relative_to(labels_dir)), f"model failed: {error}"))
                for (i, _), off in zip(need_images, predicted):
                    item, data, _, img = ready[i]
                    ready[i] = (item, data, off, img)
            for item, data, offsets, image in ready:
                if offsets is None:
                    continue
                name = str(item.relative_to(labels_dir))
                try:
                    finish(item, data, offsets, image)
                    report.done.append(name)
                except Exception as error:  # noqa: BLE001
                    report.failed.append((name, f"{type(error).__name__}: {error}"))
            if progress is not None:
                progress(len(chunk))
    for name, reason in report.failed:
        _logger.warning("could not refine %s: %s", name, reason)
    return report


def _capture(fn):
    def run(arg):
        try:
            return True, fn(arg)
        except Exception as error:  # noqa: BLE001 - reported per file
            return False, f"{type(error).__name__}: {error}"

    return run


def _write_viz(path: Path, image, before, after, prediction, offsets, palette_name, ignore_index) -> None:
    from . import viz

    if image is None:  # offsets from files: no image was read, show the label maps alone
        image = viz.colorize(before, name=palette_name, ignore_index=ignore_index)
    if isinstance(prediction, np.ndarray):
        direction, moving = _offsets_to_direction(offsets), (offsets != 0).any(0)
    else:
        direction, moving = prediction.direction, prediction.boundary
    sheet = viz.refinement_sheet(
        image, before, after, palette_name=palette_name, ignore_index=ignore_index, direction=direction, moving=moving
    )
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def _offsets_to_direction(offsets: np.ndarray) -> np.ndarray:
    from .directions import DIRECTION_VECTORS

    dy, dx = np.sign(offsets[0]), np.sign(offsets[1])
    direction = np.full(dy.shape, -1, np.int64)
    for k, (vy, vx) in enumerate(DIRECTION_VECTORS[8]):
        direction[(dy == vy) & (dx == vx) & ((dy != 0) | (dx != 0))] = k
    return direction


def _refine_coco(
    results: Path | None,
    coco_images: Path | None,
    output_dir: Path,
    source: _OffsetSource,
    steps: tuple[int | None, int | None, int],
    report: JobReport,
    ledger: _Ledger,
) -> JobReport:
    if results is None:
        raise ValueError("refine: COCO refinement needs the results file")
    records = json.loads(Path(results).read_text())
    if not isinstance(records, list):
        raise ValueError(f"{results}: expected a COCO results list [{{image_id, category_id, segmentation, score}}]")
    names = {}
    if coco_images is not None:
        names = {img["id"]: match_stem(img["file_name"]) for img in json.loads(Path(coco_images).read_text())["images"]}
    target = output_dir / Path(results).name
    if not _sort_existing([Path(results)], Path(results).parent, lambda _: target, ledger, report):
        return report
    _remove_stale_partials([target])
    by_image: dict = {}
    for index, record in enumerate(records):
        by_image.setdefault(record["image_id"], []).append(index)
    refined_records = [dict(r) for r in records]
    for image_id, indices in by_image.items():
        stem = names.get(image_id, str(image_id))
        try:
            offsets, image = source.load(stem)
            if offsets is None:
                offsets = source.offsets_of(source.predict([image])[0])
            masks = np.stack([rle_decode(records[i]["segmentation"]) for i in indices])
            if masks.shape[-2:] != offsets.shape[-2:]:
                raise ValueError(f"mask size {masks.shape[-2:]} does not match offsets/image {offsets.shape[-2:]}")
            step, count = source.steps(stem, *steps)
            out = refine_instances(masks, offsets, scale=step, iterations=count)
            for i, mask in zip(indices, out):
                refined_records[i]["segmentation"] = rle_encode(mask)
            report.done.append(stem)
        except Exception as error:  # noqa: BLE001
            report.failed.append((stem, f"{type(error).__name__}: {error}"))
    ledger.add(Path(results).name)
    atomic_write(target, lambda tmp: tmp.write_text(json.dumps(refined_records)))
    return report


def offsets_folder(
    images_dir: Path,
    output_dir: Path,
    model,
    *,
    file_format: str = "npz",
    batch_size: int = 4,
    workers: int = 2,
    shard: Shard = WHOLE_JOB,
    progress: Callable[[int], None] | None = None,
) -> JobReport:
    """Predict and save offsets for every image under ``images_dir`` (``.npz`` or the original's ``.mat``);
    with ``shard``, only this process's slice of the sorted images (:class:`segfix.sharding.Shard`)."""
    images_dir, output_dir = Path(images_dir), Path(output_dir)
    require_folder(images_dir, "images")
    _check_output(output_dir, [images_dir])
    if file_format not in ("npz", "mat"):
        raise ValueError(f"file_format: expected 'npz' or 'mat', got {file_format!r}")
    items, unreadable = _scan(images_dir, lambda path: path.suffix.lower() in IMAGE_SUFFIXES)
    if not items and not unreadable:
        raise FileNotFoundError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) under {images_dir}")
    report = JobReport(failed=shard.take(unreadable))
    items = shard.take(items)
    ledger = _Ledger(output_dir, "offsets", shard)
    # The files say how to apply them, so that refine --offsets does what this model would do by argmax.
    settings = OffsetSettings(scale=model.semantic_scale, iterations=model.iterations, rule="argmax")

    def target(item: Path) -> Path:
        return (output_dir / item.relative_to(images_dir)).with_suffix(f".{file_format}")

    todo = _sort_existing(items, images_dir, target, ledger, report)
    _remove_stale_partials(target(item) for item in todo)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            loaded = list(pool.map(_capture(read_image), chunk))
            good = [(p, img) for p, (ok, img) in zip(chunk, loaded) if ok]
            report.failed += [(str(p.relative_to(images_dir)), msg) for p, (ok, msg) in zip(chunk, loaded) if not ok]
            if good:
                predicted = model.predict_offsets([img for _, img in good])
                predicted = predicted if isinstance(predicted, list) else list(predicted)
                for (path, _), offsets in zip(good, predicted):
                    ledger.add(str(path.relative_to(images_dir)))
                    write_offsets(target(path), offsets, settings)
                    report.done.append(str(path.relative_to(images_dir)))
            if progress is not None:
                progress(len(chunk))
    return report
