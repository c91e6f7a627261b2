"""The network and everything that turns its outputs into a refinement field.

``network`` (:class:`SegFixNet`), ``inference`` (whole image or windows), ``precision``, ``folding`` (batch
norms folded for inference), ``settings`` (the three frozen settings groups), ``batching`` (images in, numpy or
torch out), ``decision`` (outputs -> field: the one place the rule is decided), ``facade`` (:class:`SegFix`),
``hub`` and ``pretrained`` (model files), ``convert`` (the original's checkpoints).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .facade import ModelLoadError, Prediction, SegFix

__all__ = ["ModelLoadError", "Prediction", "SegFix"]


def __getattr__(name: str) -> Any:  # PEP 562: `import segfix.model.settings` does not pay for the facade
    if name in __all__:
        return getattr(importlib.import_module(".facade", __name__), name)
    raise AttributeError(f"module 'segfix.model' has no attribute {name!r}")
