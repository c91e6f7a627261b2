"""``segfix offsets``: one offsets file per image of a folder, from a model (what ``segfix refine --offsets``
reads back)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.files import read_image
from ..ops.field import RefinementField
from ._output_folder import Ledger, OutputFolder, claim_output, model_fingerprint, sort_existing
from ._runner import FieldSource, run_batches
from .formats import write_field
from .pairing import IMAGE_SUFFIXES, require_folder, scan_folder
from .report import JobReport
from .sharding import WHOLE_JOB, Shard

__all__ = ["offsets_folder"]

_logger = logging.getLogger(__name__)


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
    path in ``output_dir``: ``.npz`` files record the model's settings by their ``config.json`` names (for the vote the
    direction probabilities at the moving pixels), so that ``refine --offsets`` gives what ``refine --model``
    gives; the original's ``.mat`` holds the argmax offsets alone. With ``shard``, only this process's slice
    of the sorted images. Two images that would write one file (``a.png``, ``a.jpg``) both fail."""
    images_dir, output_dir = Path(images_dir), Path(output_dir)
    require_folder(images_dir, "images")
    outputs = OutputFolder(output_dir, [images_dir])
    if file_format not in ("npz", "mat"):
        raise ValueError(f"file_format: expected 'npz' or 'mat', got {file_format!r}")
    if file_format == "mat" and model.settings.decision.direction_vote:
        _logger.warning(".mat files hold argmax offsets only: refining with them will not vote as this model does")
    items, unreadable = scan_folder(images_dir, lambda path: path.suffix.lower() in IMAGE_SUFFIXES)
    if not items and not unreadable:
        raise FileNotFoundError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) under {images_dir}")
    report = JobReport(failed=shard.take(unreadable))
    items = shard.take(items)
    claim_output(outputs, "offsets", {**model_fingerprint(model), "format": file_format})
    ledger = Ledger(outputs, "offsets", shard)
    source = FieldSource(model, images_dir=images_dir)

    def target(item: Path) -> Path:
        return outputs.path(item.relative_to(images_dir).with_suffix(f".{file_format}"))

    def write(item: Path, image: np.ndarray, field: RefinementField) -> None:
        ledger.add(str(item.relative_to(images_dir)))
        write_field(target(item), field)

    todo = sort_existing(items, images_dir, target, ledger, report)
    outputs.clean(target(item) for item in todo)
    run_batches(
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
