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

from ._lazy import lazy_getattr
from ._version import __version__

# Names are imported on first use (PEP 562), so that `segfix --help` and `import segfix` do not pay for torch, timm
# and numba before anything needs them. Type checkers and IDEs read the imports below.
_HOMES = {
    "DIRECTION_VECTORS": "ops.directions",
    "angle_to_direction": "ops.directions",
    "direction_to_offset": "ops.directions",
    "direction_vectors": "ops.directions",
    "flip_direction": "ops.directions",
    "BoundaryTargets": "ops.targets",
    "boundary_targets": "ops.targets",
    "gradient_kernels": "ops.targets",
    "instance_targets": "ops.targets",
    "shift_labels": "ops.shift",
    "refine_semantic": "ops.refine",
    "refine_instances": "ops.refine",
    "vote_labels": "ops.vote",
    "thin_classes": "ops.thin",
    "thin_parts": "ops.thin",
    "far_from_edges": "ops.edges",
    "RefinementField": "ops.field",
    "apply_field": "ops.field",
    "apply_field_to_instances": "ops.field",
    "field_from_offsets": "ops.field",
    "Example": "data.example",
    "load_example": "data.example",
    "SegFixNet": "network.segfix_net",
    "DecisionSettings": "hub.settings",
    "InferenceSettings": "hub.settings",
    "ModelSettings": "hub.settings",
    "Preprocessing": "hub.settings",
    "ModelLoadError": "hub.mixin",
    "list_models": "hub.registry",
    "NetworkOutputs": "prediction.outputs",
    "Prediction": "prediction.outputs",
    "SegFix": "prediction.segfix_model",
    "load_imagenet_backbone": "training.imagenet",
}

if TYPE_CHECKING:
    from . import metrics
    from .data.example import Example, load_example
    from .hub.mixin import ModelLoadError
    from .hub.registry import list_models
    from .hub.settings import DecisionSettings, InferenceSettings, ModelSettings, Preprocessing
    from .network.segfix_net import SegFixNet
    from .ops.directions import (
        DIRECTION_VECTORS,
        angle_to_direction,
        direction_to_offset,
        direction_vectors,
        flip_direction,
    )
    from .ops.edges import far_from_edges
    from .ops.field import RefinementField, apply_field, apply_field_to_instances, field_from_offsets
    from .ops.refine import refine_instances, refine_semantic
    from .ops.shift import shift_labels
    from .ops.targets import BoundaryTargets, boundary_targets, gradient_kernels, instance_targets
    from .ops.thin import thin_classes, thin_parts
    from .ops.vote import vote_labels
    from .prediction.outputs import NetworkOutputs, Prediction
    from .prediction.segfix_model import SegFix
    from .training.imagenet import load_imagenet_backbone

_lazy_name = lazy_getattr(__name__, _HOMES)


def __getattr__(name: str) -> Any:
    if name == "metrics":
        return importlib.import_module(".metrics", __name__)
    return _lazy_name(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "BoundaryTargets",
    "DIRECTION_VECTORS",
    "DecisionSettings",
    "Example",
    "InferenceSettings",
    "ModelLoadError",
    "ModelSettings",
    "NetworkOutputs",
    "Prediction",
    "Preprocessing",
    "RefinementField",
    "SegFix",
    "SegFixNet",
    "__version__",
    "angle_to_direction",
    "apply_field",
    "apply_field_to_instances",
    "boundary_targets",
    "direction_to_offset",
    "direction_vectors",
    "far_from_edges",
    "field_from_offsets",
    "flip_direction",
    "gradient_kernels",
    "instance_targets",
    "list_models",
    "load_example",
    "load_imagenet_backbone",
    "metrics",
    "refine_instances",
    "refine_semantic",
    "shift_labels",
    "thin_classes",
    "thin_parts",
    "vote_labels",
]
