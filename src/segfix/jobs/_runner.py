"""The one runner of every folder job (:func:`run_batches`) and where an item's refinement field comes from
(:class:`FieldSource`: a model, from the image, or an offsets file)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..data.files import image_size, read_image
from ..ops.field import RefinementField
from .formats import read_field
from .pairing import IMAGE_SUFFIXES, PartnerIndex
from .report import JobReport

__all__ = ["FieldSource", "run_batches"]


class FieldSource:
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


def run_batches(
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
