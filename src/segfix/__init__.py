"""segfix: model-agnostic boundary refinement for semantic and instance segmentation (SegFix, ECCV 2020).

The model-free half works on any label map: :func:`boundary_targets` builds SegFix's training targets from a
ground-truth map, :func:`direction_to_offset` turns boundary and direction maps into an offset field, and
:func:`shift_labels` / :func:`refine_semantic` / :func:`refine_instances` apply it as an exact integer gather
(:func:`vote_labels` pools the direction probabilities instead of taking their argmax).
:mod:`segfix.metrics` measures the result the way the paper does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Names are imported on first use (PEP 562), so that `segfix --help` and `import segfix` do not pay for torch,
# timm and numba before anything needs them. Type checkers and IDEs read the imports below.
_LAZY = {
    "DIRECTION_VECTORS": "ops.directions",
    "angle_to_direction": "ops.directions",
    "direction_to_offset": "ops.directions",
    "direction_vectors": "ops.directions",
    "flip_direction": "ops.directions",
    "Example": "data.example",
    "load_example": "data.example",
    "ModelLoadError": "model.facade",
    "Prediction": "model.facade",
    "SegFix": "model.facade",
    "SegFixNet": "model.network",
    "list_models": "model.pretrained",
    "load_imagenet_backbone": "model.pretrained",
    "refine_instances": "ops.refine",
    "refine_semantic": "ops.refine",
    "shift_labels": "ops.shift",
    "BoundaryTargets": "ops.targets",
    "boundary_targets": "ops.targets",
    "gradient_kernels": "ops.targets",
    "instance_targets": "ops.targets",
    "thin_classes": "ops.thin",
    "thin_parts": "ops.thin",
    "vote_labels": "ops.vote",
}

if TYPE_CHECKING:
    from . import metrics
    from .data.example import Example, load_example
    from .model.facade import ModelLoadError, Prediction, SegFix
    from .model.network import SegFixNet
    from .model.pretrained import list_models, load_imagenet_backbone
    from .ops.directions import (
        DIRECTION_VECTORS,
        angle_to_direction,
        direction_to_offset,
        direction_vectors,
        flip_direction,
    )
    from .ops.refine import refine_instances, refine_semantic
    from .ops.shift import shift_labels
    from .ops.targets import BoundaryTargets, boundary_targets, gradient_kernels, instance_targets
    from .ops.thin import thin_classes, thin_parts
    from .ops.vote import vote_labels


def __getattr__(name: str) -> Any:
    if name == "metrics":
        return importlib.import_module(".metrics", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'segfix' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "DIRECTION_VECTORS",
    "BoundaryTargets",
    "Example",
    "ModelLoadError",
    "Prediction",
    "SegFix",
    "SegFixNet",
    "list_models",
    "load_imagenet_backbone",
    "__version__",
    "angle_to_direction",
    "boundary_targets",
    "direction_to_offset",
    "direction_vectors",
    "flip_direction",
    "gradient_kernels",
    "instance_targets",
    "load_example",
    "metrics",
    "refine_instances",
    "refine_semantic",
    "shift_labels",
    "thin_classes",
    "thin_parts",
    "vote_labels",
]
