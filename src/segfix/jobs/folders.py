"""Folder-level jobs behind the command line: refine saved predictions, predict offsets, evaluate.

Jobs write every output atomically (a temp file renamed into place), never write into an input folder, skip
outputs that already exist (so a killed job resumes where it stopped), and report files they could not process
without stopping the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datasets import decode_labels, encode_labels
from ..data.files import (
    LabelStyle,
    atomic_write,
    differences_from_record,
    display_name,
    image_size,
    match_stem,
    read_image,
    read_label_with_style,
    remove_own_stale_temp_files,
    walk_files,
    write_label,
)
from ..ops.field import RefinementField, apply_field, apply_field_to_instances
from ..ops.thin import thin_classes
from .formats import (
    InstancePrediction,
    instance_mask_names,
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
    "PartnerIndex",
    "count_files",
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

    @classmethod
    def combine(cls, reports: Sequence[JobReport]) -> JobReport:
        """One report of several processes' (a sharded job's)."""
        return cls(
            done=[n for r in reports for n in r.done],
            skipped=[n for r in reports for n in r.skipped],
            failed=[f for r in reports for f in r.failed],
        )


def count_files(folder: Path, endings: str | tuple[str, ...]) -> int:
    """How many files a folder job will see (for its progress bar): the job's own walk (:func:`_scan`) with the
    file names that end in ``endings`` (any case)."""
    if not folder.is_dir():
        return 0
    return len(_scan(folder, lambda path: path.name.lower().endswith(endings))[0])


def index_files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """The files under ``folder`` (recursively, hidden ones skipped) whose suffix is one of ``suffixes`` (any
    case), by :func:`match_stem`.

    Raises:
        ValueError: two files share a key (``a.png`` and ``sub/a.jpg``): which one is meant cannot be told.
    """
    index: dict[str, Path] = {}
    for path in _with_suffix(walk_files(Path(folder))[0], suffixes):
        key = match_stem(path.name)
        if key in index:
            raise ValueError(
                f"{folder}: {display_name(str(index[key].relative_to(folder)))} and "
                f"{display_name(str(path.relative_to(folder)))} share the name {display_name(key)!r}; keep one"
            )
        index[key] = path
    return index


def find_images(folder: Path) -> dict[str, Path]:
    """Index the images under ``folder`` by :func:`match_stem`."""
    return index_files(folder, IMAGE_SUFFIXES)


def _with_suffix(paths: Iterable[Path], suffixes: Sequence[str]) -> list[Path]:
    wanted = {s.lower() for s in suffixes}
    return [p for p in paths if p.suffix.lower() in wanted]


class PartnerIndex:
    """The files under a folder that belong to the items of another folder (an image or offsets file per
    prediction, a prediction per ground-truth map), matched by relative path.

    An item at ``seq1/0001.png`` takes ``seq1/0001.*`` (dataset suffixes such as ``_leftImg8bit`` aside,
    :func:`match_stem`). Where the two folders are laid out differently (predictions in one folder, images in
    city subfolders), an item takes the only file of its name anywhere, and only when no other item shares that
    name; anything else is an error naming the candidates, never a guess.

    Args:
        folder: the partners' folder (searched recursively, linked subfolders followed once).
        suffixes: the partners' file suffixes, in any case.
        what: what the partners are, for messages (``'images'``, ``'offsets files'``).
        item_names: the file names of all the items, to tell which names are unique among them.
    """

    def __init__(self, folder: Path, suffixes: Sequence[str], what: str, item_names: Iterable[str] = ()) -> None:
        self.folder, self.what = Path(folder), what
        self.by_place: dict[tuple[str, str], list[Path]] = {}
        self.by_key: dict[str, list[Path]] = {}
        self.files = _with_suffix(walk_files(self.folder)[0], suffixes)
        for path in self.files:
            key = match_stem(path.name)
            self.by_place.setdefault((path.parent.relative_to(self.folder).as_posix(), key), []).append(path)
            self.by_key.setdefault(key, []).append(path)
        self.item_keys = Counter(match_stem(name) for name in item_names)

    def find(self, relative: Path) -> Path:
        """The partner of the item at ``relative`` (its path inside its own folder)."""
        relative = Path(relative)
        key = match_stem(relative.name)
        here = self.by_place.get((relative.parent.as_posix(), key), [])
        if len(here) == 1:
            return here[0]
        anywhere = self.by_key.get(key, [])
        if not here and len(anywhere) == 1 and self.item_keys[key] <= 1:
            return anywhere[0]
        if not anywhere:
            raise FileNotFoundError(f"no {self.what} named {display_name(key)}.* under {self.folder}")
        candidates = here or anywhere
        shown = ", ".join(display_name(str(p.relative_to(self.folder))) for p in candidates[:3])
        raise ValueError(
            f"{display_name(str(relative))}: which of the {self.what} {shown} belongs to it cannot be told; "
            "lay out both folders alike (the same subfolders) and keep one file per name"
        )


class _Ledger:
    """The outputs a job has written into its output folder, one relative name a line (as a JSON string, so
    that any file name fits on one line) in ``.segfix-<job>.done``.

    A file found in the output folder counts as finished only when the ledger lists it: a user's own file of the
    same name is reported and left alone, never taken for a result nor overwritten. A name is recorded just
    before its file is renamed into place, so a kill in between only means the file is made again."""

    def __init__(self, outputs: _Outputs, job: str, shard: Shard = WHOLE_JOB) -> None:
        self.path = outputs.path(Path(f".segfix-{job}{shard.ledger_suffix()}.done"))
        # Every process's ledger counts, so a re-run with another number of processes still skips finished work.
        self.names: set[str] = set()
        root = outputs.root
        for path in [root / f".segfix-{job}.done", *sorted(root.glob(f".segfix-{job}.shard*.done"))]:
            if path.is_file() and not path.is_symlink():
                lines = path.read_text(errors="surrogateescape").splitlines()
                self.names.update(_ledger_name(line) for line in lines)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def add(self, name: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(name) + "\n")
        self.names.add(name)


def _claim_output(outputs: _Outputs, job: str, made_by: dict[str, Any]) -> None:
    """Record what makes this job's outputs (``.segfix-source-<job>.json``: the model's config and a digest of its
    weights, or the offsets folder; the overrides and label settings), or refuse a folder that another job made:
    its finished files would otherwise count as done for anything asked of it.

    Raises:
        ValueError: the folder holds outputs made otherwise, naming what differs.
    """
    path = outputs.path(Path(f".segfix-source-{job}.json"))
    differ = differences_from_record(path, made_by)
    if differ:
        raise ValueError(
            f"{outputs.root} holds outputs made with other {', '.join(differ)} (recorded in {path.name}); choose "
            "another output folder, or remove this one to redo it (nothing is overwritten)"
        )


def _model_fingerprint(model) -> dict[str, Any]:
    """What makes a model's outputs: its config (network and settings) and a SHA-256 of its weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    config = model.config
    config["inference"] = {k: v for k, v in config["inference"].items() if k != "torch_compile"}  # same outputs
    return {"config": config, "weights_sha256": digest.hexdigest()}


def _ledger_name(line: str) -> str:
    """A ledger line -> the name it records (JSON strings; earlier versions wrote names bare)."""
    if line.startswith('"'):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            pass
    return line


class _Outputs:
    """Where a job may write: only inside its output folder, at names derived from the inputs' relative paths,
    never through a link that leads out of it, and never into an input folder."""

    def __init__(self, output: Path, inputs: Iterable[Path | None]) -> None:
        self.root = Path(output)
        self.real = Path(os.path.realpath(self.root))
        self.inputs = [Path(os.path.realpath(p)) for p in inputs if p is not None]
        for folder in self.inputs:
            if self.real == folder or folder in self.real.parents:
                raise ValueError(
                    f"output folder {output} lies inside the input folder {folder}; choose another so that "
                    "no input is overwritten"
                )
            if self.real in folder.parents:
                raise ValueError(
                    f"input folder {folder} lies inside the output folder {output}; choose an output folder "
                    "outside every input"
                )

    def path(self, relative: Path) -> Path:
        """The output path of ``relative``, checked: a name that would leave the folder is refused."""
        relative = Path(relative)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"{display_name(str(relative))}: expected a relative name inside the output folder")
        target = self.root / relative
        real = Path(os.path.realpath(target))
        if self.real not in real.parents or any(real == i or i in real.parents for i in self.inputs):
            raise ValueError(
                f"{display_name(str(target))} leads to {display_name(str(real))} (through a link), outside the "
                "output folder; nothing is written there"
            )
        return target

    def clean(self, targets: Iterable[Path]) -> None:
        """Remove what killed segfix processes of this machine left beside these targets (never another
        running job's temporary files)."""
        for folder in {Path(t).parent for t in targets}:
            remove_own_stale_temp_files(folder)


def _sort_existing(
    items: Sequence[Path], root: Path, target: Callable[[Path], Path], ledger: _Ledger, report: JobReport
) -> list[Path]:
    """Items still to do; finished ones go to ``report.skipped``; outputs segfix did not write, unsafe output
    names and items that would write one output go to ``report.failed``."""
    targets: dict[Path, Path] = {}
    for item in items:
        try:
            targets[item] = target(item)
        except ValueError as error:
            report.failed.append((str(item.relative_to(root)), str(error)))
    claimed = Counter(targets.values())
    todo = []
    for item, out in targets.items():
        name = str(item.relative_to(root))
        if claimed[out] > 1:
            others = [display_name(str(i.relative_to(root))) for i, o in targets.items() if o == out]
            report.failed.append((name, f"{', '.join(others)} would all be written to {out}; rename all but one"))
        elif not out.exists() and not out.is_symlink():
            todo.append(item)
        elif name in ledger and out.is_file() and not out.is_symlink():
            report.skipped.append(name)
        else:
            reason = (
                f"{out} exists and was not written by segfix; move it or pick another output (nothing is overwritten)"
            )
            report.failed.append((name, reason))
    return todo


def _scan(folder: Path, wanted: Callable[[Path], bool]) -> tuple[list[Path], list[tuple[str, str]]]:
    """One walk of ``folder``: the visible files ``wanted`` accepts (sorted), and the entries it accepts that
    are not readable files (broken links, special files), plus linked folders that are not read twice."""
    files, problems = walk_files(Path(folder))
    kept = [p for p in files if wanted(p)]
    bad = [(name, reason) for name, reason in problems if wanted(Path(name)) or "links to a folder" in reason]
    return kept, bad


def require_folder(path: Path | None, what: str) -> None:
    """Refuse a missing input folder up front, naming it (a typo must not look like an empty job)."""
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"{what}: no such folder {path}")


class _FieldSource:
    """The refinement field of an item: read from a folder of .npz/.mat files, or predicted by a model from the
    image, each found by the item's relative path (:class:`PartnerIndex`). Either way the caller's ``scale`` /
    ``iterations`` win over what the field carries."""

    def __init__(
        self,
        model=None,
        offsets_dir: Path | None = None,
        images_dir: Path | None = None,
        *,
        instance: bool = False,
        steps: tuple[int | None, int | None] = (None, None),
        item_names: Sequence[str] = (),
    ) -> None:
        if (model is None) == (offsets_dir is None):
            raise ValueError("expected exactly one of a model or an offsets folder")
        if model is not None and images_dir is None:
            raise ValueError("a model needs the images: pass the images folder")
        self.model, self.instance, self.steps = model, instance, steps
        self.offsets = (
            None if offsets_dir is None else PartnerIndex(offsets_dir, (".npz", ".mat"), "offsets files", item_names)
        )
        # Offsets files carry the fields: the images folder is then not walked.
        self.images: PartnerIndex | None = None
        if model is not None and images_dir is not None:
            self.images = PartnerIndex(images_dir, IMAGE_SUFFIXES, "images", item_names)

    def load(self, relative: Path, size: tuple[int, int] | None) -> tuple[RefinementField | None, np.ndarray | None]:
        """-> (the field read from its file, None) or (None, the image) of the item at ``relative``, whose
        prediction has ``size`` (H, W; None: unknown): a partner of another size is refused from its header,
        before it is read. A model's fields come from :meth:`predict`, in batches."""
        if self.offsets is not None:
            # Files that record nothing get the paper's scale: 2 for semantic maps, 1 for instances.
            path = self.offsets.find(relative)
            field = read_field(path, default_scale=1 if self.instance else 2, size=size)
            return field.with_steps(*self.steps), None
        if self.images is None:  # pragma: no cover - __init__ requires the images with a model
            raise ValueError("a model needs the images: pass the images folder")
        path = self.images.find(relative)
        found = image_size(path)
        if size is not None and found != tuple(size):
            raise ValueError(
                f"image {path} is {found[1]}x{found[0]} (WxH), the prediction {size[1]}x{size[0]}; "
                "they must be the same size"
            )
        return None, read_image(path)

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
    """Adapter for label PNGs: read, refine by a field, write back in the file's own mode and palette (and the
    optional picture). Stored ids become class ids by :func:`segfix.data.datasets.encode_labels`, the dataset's stored
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
        """-> (the stored ids refined, the class ids before, after, the file's style)."""
        stored, style = loaded
        if field.size != stored.shape:
            raise ValueError(f"prediction size {stored.shape} does not match offsets/image {field.size}")
        classes = encode_labels(stored, self.label_format, self.stored_ignore)
        if field.thin_guard and field.thin_guard_classes == "auto" and self.folder_thin_classes is not None:
            # The folder's thin classes, pooled over all its predictions: steadier than one map's.
            field = dataclasses.replace(field, thin_guard_classes=self.folder_thin_classes(field.thin_guard))
        refined = apply_field(field, classes, ignore_index=255)
        return decode_labels(refined, stored, self.label_format), classes, refined, style

    def write(self, outputs: _Outputs, relative: Path, refined: tuple, image, field: RefinementField) -> None:
        write_label(outputs.path(relative), refined[0], refined[3])
        if self.save_viz:
            viz_path = outputs.path(self.targets(relative, None)[0])
            _write_viz(viz_path, image, refined[1], refined[2], field, self.palette, 255)


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

    def write(self, outputs: _Outputs, relative: Path, refined: InstancePrediction, image, field) -> None:
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
    source_of = _model_fingerprint(model) if model is not None else {"offsets": os.path.realpath(str(offsets_dir))}
    made_by = {**source_of, "kind": kind, "label_format": label_format, "ignore_index": ignore_index,
               "scale": scale, "iterations": iterations}  # fmt: skip
    _claim_output(outputs, "refine", made_by)
    report, ledger = JobReport(), _Ledger(outputs, "refine", shard)
    instance = kind != "semantic"
    if kind == "coco":
        if shard.index != 0:
            return report
        source = _FieldSource(model, offsets_dir, images_dir, instance=True, steps=(scale, iterations))
        return _refine_coco(coco_results, coco_images, outputs, source, report, ledger)
    adapter, items, unreadable = _folder_items(kind, labels_dir, label_format, ignore_index, save_viz, palette)
    names = [item.name for item in items]
    source = _FieldSource(
        model, offsets_dir, images_dir, instance=instance, steps=(scale, iterations), item_names=names
    )
    items, report.failed = shard.take(items), shard.take(unreadable)

    def load(item: Path) -> tuple:
        relative = item.relative_to(labels_dir)
        field, image = source.load(relative, adapter.size(item))
        return adapter.read(item), field, image

    todo = _sort_existing(items, labels_dir, lambda item: outputs.path(item.relative_to(labels_dir)), ledger, report)
    outputs.clean(outputs.path(item.relative_to(labels_dir)) for item in todo)
    _run_batches(
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
    items, unreadable = _scan(labels_dir, adapter.matches)
    if kind == "semantic":  # 'auto' thin classes are pooled over every prediction of the folder, all shards alike
        pooled = _FolderThinClasses(items, label_format, ignore_index)
        adapter = dataclasses.replace(adapter, folder_thin_classes=pooled)
    if not items and not unreadable:
        pattern = "*.png" if kind == "semantic" else "*_pred.txt"
        raise FileNotFoundError(f"predictions: no {pattern} files under {labels_dir}")
    return adapter, items, unreadable


def _refined_writer(labels_dir: Path, adapter: Any, ledger: _Ledger, outputs: _Outputs):
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
            self.found[radius] = thin_classes(self._maps(), radius, ignore_index=255)
            _logger.info("thin classes of the folder at radius %d: %s", radius, self.found[radius])
        return self.found[radius]

    def _maps(self):
        for path in self.paths:
            try:
                yield encode_labels(read_label_with_style(path)[0], self.label_format, self.stored_ignore)
            except (OSError, ValueError):
                continue  # reported when the job reaches it


def _check_refine_inputs(
    kind: str,
    labels_dir: Path,
    output_dir: Path,
    images_dir: Path | None,
    offsets_dir: Path | None,
    coco_results: Path | None,
) -> _Outputs:
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
    return _Outputs(output_dir, inputs)


def _write_viz(path: Path, image, before, after, field: RefinementField, palette_name, ignore_index) -> None:
    from .. import viz

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
    from ..ops.directions import DIRECTION_VECTORS

    dy, dx = np.sign(offsets[0]), np.sign(offsets[1])
    direction = np.full(dy.shape, -1, np.int64)
    for k, (vy, vx) in enumerate(DIRECTION_VECTORS[8]):
        direction[(dy == vy) & (dx == vx) & ((dy != 0) | (dx != 0))] = k
    return direction


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({what}): {error}") from None


def _coco_image_names(coco_images: Path | None) -> dict[Any, str]:
    """image id -> file name (relative, as the annotation file gives it), from a COCO annotation file."""
    if coco_images is None:
        return {}
    data = _read_json(coco_images, "a COCO annotation file")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{coco_images}: expected a COCO annotation object with an 'images' list")
    names = {}
    for number, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise ValueError(f"{coco_images}: images[{number}] needs an 'id' and a 'file_name', got {str(image)[:80]}")
        names[image["id"]] = image["file_name"]
    return names


def _coco_records(results: Path) -> list[dict]:
    records = _read_json(results, "COCO results")
    if not isinstance(records, list):
        raise ValueError(f"{results}: expected a COCO results list [{{image_id, category_id, segmentation, score}}]")
    for number, record in enumerate(records):
        if not isinstance(record, dict) or "image_id" not in record or "segmentation" not in record:
            raise ValueError(f"{results}: record {number} needs 'image_id' and 'segmentation', got {str(record)[:80]}")
        if not isinstance(record["segmentation"], dict):
            raise ValueError(
                f"{results}: record {number}: expected a COCO RLE segmentation {{'size', 'counts'}}, got "
                f"{str(record['segmentation'])[:80]} (polygons: convert them to RLE first)"
            )
    return records


def _refine_coco(
    results: Path | None,
    coco_images: Path | None,
    outputs: _Outputs,
    source: _FieldSource,
    report: JobReport,
    ledger: _Ledger,
) -> JobReport:
    if results is None:
        raise ValueError("refine: COCO refinement needs the results file")
    records = _coco_records(results)
    names = _coco_image_names(coco_images)
    target = outputs.path(Path(Path(results).name))
    if not _sort_existing([Path(results)], Path(results).parent, lambda _: target, ledger, report):
        return report
    outputs.clean([target])
    by_image: dict = {}
    for index, record in enumerate(records):
        by_image.setdefault(record["image_id"], []).append(index)
    refined_records = [dict(r) for r in records]
    for image_id, indices in by_image.items():
        relative = Path(names.get(image_id, str(image_id)))
        try:
            size = tuple(records[indices[0]]["segmentation"].get("size", ()))
            field, image = source.load(relative, size if len(size) == 2 else None)
            if field is None:
                field = source.predict([image])[0]
            masks = np.stack([rle_decode(records[i]["segmentation"], field.size) for i in indices])
            for i, mask in zip(indices, apply_field_to_instances(field, masks)):
                refined_records[i]["segmentation"] = rle_encode(mask)
            report.done.append(str(relative))
        except Exception as error:  # noqa: BLE001
            report.failed.append((str(relative), f"{type(error).__name__}: {error}"))
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
    """Predict and save the semantic refinement field of every image under ``images_dir``, at its relative
    path in ``output_dir``: ``.npz`` files record the model's scale, iterations and rule (and for the vote the
    direction probabilities at the moving pixels), so that ``refine --offsets`` gives what ``refine --model``
    gives; the original's ``.mat`` holds the argmax offsets alone. With ``shard``, only this process's slice
    of the sorted images. Two images that would write one file (``a.png``, ``a.jpg``) both fail."""
    images_dir, output_dir = Path(images_dir), Path(output_dir)
    require_folder(images_dir, "images")
    outputs = _Outputs(output_dir, [images_dir])
    if file_format not in ("npz", "mat"):
        raise ValueError(f"file_format: expected 'npz' or 'mat', got {file_format!r}")
    if file_format == "mat" and model.settings.decision.direction_vote:
        _logger.warning(".mat files hold argmax offsets only: refining with them will not vote as this model does")
    items, unreadable = _scan(images_dir, lambda path: path.suffix.lower() in IMAGE_SUFFIXES)
    if not items and not unreadable:
        raise FileNotFoundError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) under {images_dir}")
    report = JobReport(failed=shard.take(unreadable))
    items = shard.take(items)
    _claim_output(outputs, "offsets", {**_model_fingerprint(model), "format": file_format})
    ledger = _Ledger(outputs, "offsets", shard)
    source = _FieldSource(model, images_dir=images_dir)

    def target(item: Path) -> Path:
        return outputs.path(item.relative_to(images_dir).with_suffix(f".{file_format}"))

    def write(item: Path, image: np.ndarray, field: RefinementField) -> None:
        ledger.add(str(item.relative_to(images_dir)))
        write_field(target(item), field)

    todo = _sort_existing(items, images_dir, target, ledger, report)
    outputs.clean(target(item) for item in todo)
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
