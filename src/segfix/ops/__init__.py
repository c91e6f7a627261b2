"""The model-free operations of SegFix, on numpy arrays and torch tensors alike.

``directions`` (the 8 direction classes and their offsets), ``targets`` (training targets from a ground-truth
map), ``shift`` and ``refine`` (the exact integer gather), ``vote`` (the direction vote), ``thin`` (thin parts
and thin classes), ``edges`` (how far a pixel lies from another label), and ``field`` (a
:class:`~segfix.ops.field.RefinementField` and applying it to labels).
Nothing here loads a network; every public function checks its inputs once, at the door.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .directions import (
        DIRECTION_VECTORS,
        angle_to_direction,
        direction_to_offset,
        direction_vectors,
        flip_direction,
    )
    from .edges import far_from_edges
    from .field import RefinementField, apply_field, apply_field_to_instances, field_from_offsets
    from .refine import refine_instances, refine_semantic
    from .shift import shift_labels
    from .targets import BoundaryTargets, boundary_targets, gradient_kernels, instance_targets
    from .thin import thin_classes, thin_parts
    from .vote import vote_labels

__all__ = [
    "BoundaryTargets",
    "DIRECTION_VECTORS",
    "RefinementField",
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
    "refine_instances",
    "refine_semantic",
    "shift_labels",
    "thin_classes",
    "thin_parts",
    "vote_labels",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "BoundaryTargets": "targets",
        "DIRECTION_VECTORS": "directions",
        "RefinementField": "field",
        "angle_to_direction": "directions",
        "apply_field": "field",
        "apply_field_to_instances": "field",
        "boundary_targets": "targets",
        "direction_to_offset": "directions",
        "direction_vectors": "directions",
        "far_from_edges": "edges",
        "field_from_offsets": "field",
        "flip_direction": "directions",
        "gradient_kernels": "targets",
        "instance_targets": "targets",
        "refine_instances": "refine",
        "refine_semantic": "refine",
        "shift_labels": "shift",
        "thin_classes": "thin",
        "thin_parts": "thin",
        "vote_labels": "vote",
    },
)
