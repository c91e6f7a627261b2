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
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write, is_temp_file, match_stem, read_image, read_label, write_png
from .field import RefinementField, apply_field, apply_field_to_instances
from .formats import (
    InstancePrediction,
    decode_labels,
    encode_labels,
    read_cityscapes_instances,
    read_field,
    rle_decode,
    rle_encode,
    write_cityscapes_instances,
    write_field,
)
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

    done: list[str] = dataclass_field(default_factory=list)
    skipped: list[str] = dataclass_field(default_factory=list)
    failed: list[tuple[str, str]] = dataclass_field(default_factory=list)

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


class _FieldSource:
    """The refinement field of an item: read from a folder of .npz/.mat files, or predicted by a model from the
    image. Either way the caller's ``scale`` / ``iterations`` win over what the field carries."""

    def __init__(
        self,
        model=None,
        offsets_dir: Path | None = None,
        images_dir: Path | None = None,
        *,
        instance: bool = False,
        steps: tuple[int | None, int | None] = (None, None),
    ) -> None:
        if (model is None) == (offsets_dir is None):
            raise ValueError("expected exactly one of a model or an offsets folder")
        if model is not None and images_dir is None:
            raise ValueError("a model needs the images: pass the images folder")
        self.model, self.instance, self.steps = model, instance, steps
        self.offsets = index_files(offsets_dir, (".npz", ".mat")) if offsets_dir is not None else {}
        self.images = find_images(images_dir) if images_dir is not None else {}

    def load(self, stem: str) -> tuple[RefinementField | None, np.ndarray | None]:
        """-> (the field read from its file, None) or (None, the image): a model's fields come from
        :meth:`predict`, in batches."""
        if self.model is None:
            if stem not in self.offsets:
                raise FileNotFoundError(f"no offsets file {stem}.npz or {stem}.mat in the offsets folder")
            # Files that record nothing get the paper's scale: 2 for semantic maps, 1 for instances.
            field = read_field(self.offsets[stem], default_scale=1 if self.instance else 2)
            return field.with_steps(*self.steps), None
        if stem not in self.images:
            raise FileNotFoundError(f"no image named {stem}.* in the images folder")
        return None, read_image(self.images[stem])

    def predict(self, images: Sequence[Any]) -> list[RefinementField]:
        """One field per image, by the model's own settings (semantic or instance)."""
        if not images:
            return []
        fields = self.model.predict_field(list(images), instance=self.instance)
        fields = fields if isinstance(fields, list) else [fields[i] for i in range(len(fields))]
        return [f.with_steps(*self.steps) for f in fields]

    def fields_of(self, loaded: Sequence[tuple]) -> list[RefinementField]:
        """The fields of loaded ``(data, field or None, image)`` items: those read, and the rest predicted."""
        fields = [field for _, field, _ in loaded]
        need = [i for i, field in enumerate(fields) if field is None]
        for i, field in zip(need, self.predict([loaded[i][2] for i in need])):
            fields[i] = field
        return fields


def _run_batches(
    todo: Sequence[Path],
    root: Path,
    *,
    load: Callable[[Path], Any],
    compute: Callable[[list], list],
    write: Callable[[Path, Any, Any], None],
    report: JobReport,
    batch_size: int,
    workers: int,
    progress: Callable[[int], None] | None,
) -> None:
    """The one runner of every folder job: read ``batch_size`` items in ``workers`` threads (``load``), run
    ``compute`` on the batch (the model; results in order), then ``write`` each result. A file that fails is
    reported by name and the others go on; a failing batch fails its items."""

    def name(item: Path) -> str:
        return str(item.relative_to(root))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            ready = []
            for item, (ok, value) in zip(chunk, pool.map(_capture(load), chunk)):
                if ok:
                    ready.append((item, value))
                else:
                    report.failed.append((name(item), value))
            try:
                results = compute([value for _, value in ready]) if ready else []
            except Exception as error:  # noqa: BLE001 - one bad batch must not stop the job
                report.failed += [(name(item), f"model failed: {error}") for item, _ in ready]
                results = []
            for (item, value), result in zip(ready, results):
                try:
                    write(item, value, result)
                    report.done.append(name(item))
                except Exception as error:  # noqa: BLE001 - reported per file
                    report.failed.append((name(item), f"{type(error).__name__}: {error}"))
            if progress is not None:
                progress(len(chunk))


def _capture(fn):
    def run(arg):
        try:
            return True, fn(arg)
        except Exception as error:  # noqa: BLE001 - reported per file
            return False, f"{type(error).__name__}: {error}"

    return run


@dataclass(frozen=True)
class _SemanticMaps:
    """Adapter for label PNGs: read, refine by a field, write (and the optional picture)."""

    label_format: str
    ignore_index: int
    save_viz: bool
    palette: str | None
    pattern: str = "*.png"

    def read(self, path: Path) -> np.ndarray:
        return read_label(path)

    def refine(self, stored: np.ndarray, field: RefinementField) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (the stored ids refined, the class ids before, after)."""
        if field.size != stored.shape:
            raise ValueError(f"prediction size {stored.shape} does not match offsets/image {field.size}")
        classes = encode_labels(stored, self.label_format)
        refined = apply_field(field, classes, ignore_index=self.ignore_index)
        return decode_labels(refined, stored, self.label_format), classes, refined

    def write(self, target: Path, refined: tuple, viz_path: Path, image, field: RefinementField) -> None:
        write_png(target, refined[0])
        if self.save_viz:
            _write_viz(viz_path, image, refined[1], refined[2], field, self.palette, self.ignore_index)


class _CityscapesInstances:
    """Adapter for Cityscapes instance results: ``*_pred.txt`` plus mask PNGs."""

    pattern = "*_pred.txt"

    def read(self, path: Path) -> InstancePrediction:
        return read_cityscapes_instances(path)

    def refine(self, pred: InstancePrediction, field: RefinementField) -> InstancePrediction:
        if not len(pred.masks):
            return pred
        if pred.masks.shape[-2:] != field.size:
            raise ValueError(f"mask size {pred.masks.shape[-2:]} does not match offsets/image {field.size}")
        masks = apply_field_to_instances(field, pred.masks)
        return InstancePrediction(masks, pred.classes, pred.scores, pred.names)

    def write(self, target: Path, refined: InstancePrediction, viz_path: Path, image, field) -> None:
        write_cityscapes_instances(target, refined)


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
        model / offsets_dir: where the fields come from (exactly one). A model refines by its own settings;
            offset files by the scale, iterations and rule they record (``segfix offsets`` writes the model's),
            else the paper's (scale 2 for semantic maps, 1 for instances, one step, argmax).
        scale / iterations: override those of the model or the files.
        save_viz: also write ``viz/<name>.png`` per semantic map (:func:`segfix.viz.refinement_sheet`).
        palette: colours for those pictures: ``'camvid'``, ``'cityscapes'`` (see :data:`segfix.viz.PALETTES`).
        shard: handle only this process's slice of the sorted files (:class:`segfix.sharding.Shard`); the
            report then covers that slice. A COCO results file is one item: shard 0 takes it.
        progress: called with the number of items finished after each batch.
    """
    labels_dir, output_dir = Path(labels_dir), Path(output_dir)
    _check_refine_inputs(kind, labels_dir, output_dir, images_dir, offsets_dir, coco_results)
    source = _FieldSource(model, offsets_dir, images_dir, instance=kind != "semantic", steps=(scale, iterations))
    report, ledger = JobReport(), _Ledger(output_dir, "refine", shard)
    if kind == "coco":
        return (
            report if shard.index != 0 else _refine_coco(coco_results, coco_images, output_dir, source, report, ledger)
        )
    adapter: Any = (
        _SemanticMaps(label_format, ignore_index, save_viz, palette) if kind == "semantic" else _CityscapesInstances()
    )
    items, unreadable = _scan(labels_dir, lambda path: path.match(adapter.pattern))
    if not items and not unreadable:
        raise FileNotFoundError(f"predictions: no {adapter.pattern} files under {labels_dir}")
    items, report.failed = shard.take(items), shard.take(unreadable)

    def target(item: Path) -> Path:
        return output_dir / item.relative_to(labels_dir)

    def load(item: Path) -> tuple:
        return adapter.read(item), *source.load(match_stem(item.name))

    def write(item: Path, loaded: tuple, field: RefinementField) -> None:
        refined = adapter.refine(loaded[0], field)
        ledger.add(str(item.relative_to(labels_dir)))
        adapter.write(target(item), refined, output_dir / "viz" / f"{item.stem}.png", loaded[2], field)

    todo = _sort_existing(items, labels_dir, target, ledger, report)
    _remove_stale_partials(target(item) for item in todo)
    _run_batches(
        todo,
        labels_dir,
        load=load,
        compute=source.fields_of,
        write=write,
        report=report,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    for name, reason in report.failed:
        _logger.warning("could not refine %s: %s", name, reason)
    return report


def _check_refine_inputs(
    kind: str,
    labels_dir: Path,
    output_dir: Path,
    images_dir: Path | None,
    offsets_dir: Path | None,
    coco_results: Path | None,
) -> None:
    """Refuse an unknown kind, missing inputs, or an output inside an input, before anything is read."""
    if kind not in ("semantic", "cityscapes-instance", "coco"):
        raise ValueError(f"kind: expected 'semantic', 'cityscapes-instance' or 'coco', got {kind!r}")
    if kind == "coco":
        if coco_results is None or not Path(coco_results).is_file():
            raise FileNotFoundError(f"kind 'coco' needs the COCO results JSON; no such file {coco_results}")
    else:
        require_folder(labels_dir, "predictions")
    require_folder(images_dir, "images")
    require_folder(offsets_dir, "offsets")
    _check_output(output_dir, [labels_dir, images_dir, offsets_dir, coco_results.parent if coco_results else None])


def _write_viz(path: Path, image, before, after, field: RefinementField, palette_name, ignore_index) -> None:
    from . import viz

    if image is None:  # offsets from files: no image was read, show the label maps alone
        image = viz.colorize(before, name=palette_name, ignore_index=ignore_index)
    one = field.numpy()
    sheet = viz.refinement_sheet(
        image,
        before,
        after,
        palette_name=palette_name,
        ignore_index=ignore_index,
        direction=_offsets_to_direction(one.offsets[0]),
        moving=one.moving[0],
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
    source: _FieldSource,
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
            field, image = source.load(stem)
            if field is None:
                field = source.predict([image])[0]
            masks = np.stack([rle_decode(records[i]["segmentation"]) for i in indices])
            if masks.shape[-2:] != field.size:
                raise ValueError(f"mask size {masks.shape[-2:]} does not match offsets/image {field.size}")
            for i, mask in zip(indices, apply_field_to_instances(field, masks)):
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
    """Predict and save the semantic refinement field of every image under ``images_dir``: ``.npz`` files
    record the model's scale, iterations and rule (and for the vote the direction probabilities at the moving
    pixels), so that ``refine --offsets`` gives what ``refine --model`` gives; the original's ``.mat`` holds
    the argmax offsets alone. With ``shard``, only this process's slice of the sorted images."""
    images_dir, output_dir = Path(images_dir), Path(output_dir)
    require_folder(images_dir, "images")
    _check_output(output_dir, [images_dir])
    if file_format not in ("npz", "mat"):
        raise ValueError(f"file_format: expected 'npz' or 'mat', got {file_format!r}")
    if file_format == "mat" and model.direction_vote:
        _logger.warning(".mat files hold argmax offsets only: refining with them will not vote as this model does")
    items, unreadable = _scan(images_dir, lambda path: path.suffix.lower() in IMAGE_SUFFIXES)
    if not items and not unreadable:
        raise FileNotFoundError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) under {images_dir}")
    report = JobReport(failed=shard.take(unreadable))
    items = shard.take(items)
    ledger = _Ledger(output_dir, "offsets", shard)
    source = _FieldSource(model, images_dir=images_dir)

    def target(item: Path) -> Path:
        return (output_dir / item.relative_to(images_dir)).with_suffix(f".{file_format}")

    def write(item: Path, image: np.ndarray, field: RefinementField) -> None:
        ledger.add(str(item.relative_to(images_dir)))
        write_field(target(item), field)

    todo = _sort_existing(items, images_dir, target, ledger, report)
    _remove_stale_partials(target(item) for item in todo)
    _run_batches(
        todo,
        images_dir,
        load=read_image,
        compute=source.predict,
        write=write,
        report=report,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    return report
