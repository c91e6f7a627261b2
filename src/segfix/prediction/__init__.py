"""From an image and any model's label map to refined labels, laid out as data flows: ``inputs`` (images and label
maps in, results back in the caller's form), ``inference`` (the network run whole or in windows), ``outputs``
(:class:`NetworkOutputs`, :class:`Prediction`), ``decision`` (outputs -> a :class:`~segfix.ops.field.RefinementField`),
``refinement`` (a field and label maps -> refined labels: the one owner, used by :class:`SegFix`, the folder jobs and
tuning) and ``segfix_model`` (:class:`SegFix`, which holds them together). ``memory`` keeps freed memory for reuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .inputs import ImageInput
    from .labels import LabelSpace
    from .memory import allow_keeping_freed_memory
    from .outputs import NetworkOutputs, Prediction
    from .refinement import pooled_thin_classes, refine_labels
    from .segfix_model import SegFix

__all__ = [
    "ImageInput",
    "LabelSpace",
    "NetworkOutputs",
    "Prediction",
    "SegFix",
    "allow_keeping_freed_memory",
    "pooled_thin_classes",
    "refine_labels",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "ImageInput": "inputs",
        "LabelSpace": "labels",
        "NetworkOutputs": "outputs",
        "Prediction": "outputs",
        "SegFix": "segfix_model",
        "allow_keeping_freed_memory": "memory",
        "pooled_thin_classes": "refinement",
        "refine_labels": "refinement",
    },
)
