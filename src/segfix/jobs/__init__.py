"""Batch jobs over folders, as ``segfix refine``, ``segfix offsets``, ``segfix eval`` and ``segfix convert`` run
them: ``refine`` and ``offsets`` (one module per job), ``evaluation``, ``convert`` (the original's checkpoints), the
file ``formats`` around SegFix, ``pairing`` (a job's files and their partners), ``sharding`` and the ``report``
each job returns. The runner, the output folder's safety rules, COCO and the pictures are private helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .convert import convert_official_checkpoint
    from .evaluation import boundary_statistics_folder, evaluate_folder
    from .formats import (
        InstancePrediction,
        OffsetSettings,
        read_cityscapes_instances,
        read_field,
        read_offsets,
        rle_decode,
        rle_encode,
        write_cityscapes_instances,
        write_field,
        write_offsets,
    )
    from .offsets import offsets_folder
    from .refine import refine_folder
    from .report import JobReport
    from .sharding import Shard

__all__ = [
    "InstancePrediction",
    "JobReport",
    "OffsetSettings",
    "Shard",
    "boundary_statistics_folder",
    "convert_official_checkpoint",
    "evaluate_folder",
    "offsets_folder",
    "read_cityscapes_instances",
    "read_field",
    "read_offsets",
    "refine_folder",
    "rle_decode",
    "rle_encode",
    "write_cityscapes_instances",
    "write_field",
    "write_offsets",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "InstancePrediction": "formats",
        "JobReport": "report",
        "OffsetSettings": "formats",
        "Shard": "sharding",
        "boundary_statistics_folder": "evaluation",
        "convert_official_checkpoint": "convert",
        "evaluate_folder": "evaluation",
        "offsets_folder": "offsets",
        "read_cityscapes_instances": "formats",
        "read_field": "formats",
        "read_offsets": "formats",
        "refine_folder": "refine",
        "rle_decode": "formats",
        "rle_encode": "formats",
        "write_cityscapes_instances": "formats",
        "write_field": "formats",
        "write_offsets": "formats",
    },
)
