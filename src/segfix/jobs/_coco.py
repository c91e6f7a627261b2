"""COCO instance results (one JSON of RLE masks) refined in place of a folder: ``segfix refine --kind coco``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.files import atomic_write
from ..ops.field import apply_field_to_instances
from ._output_folder import Ledger, OutputFolder, sort_existing
from ._runner import FieldSource
from .formats import rle_decode, rle_encode
from .report import JobReport

__all__ = ["refine_coco"]


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


def refine_coco(
    results: Path | None,
    coco_images: Path | None,
    outputs: OutputFolder,
    source: FieldSource,
    report: JobReport,
    ledger: Ledger,
) -> JobReport:
    if results is None:
        raise ValueError("refine: COCO refinement needs the results file")
    records = _coco_records(results)
    names = _coco_image_names(coco_images)
    target = outputs.path(Path(Path(results).name))
    if not sort_existing([Path(results)], Path(results).parent, lambda _: target, ledger, report):
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
