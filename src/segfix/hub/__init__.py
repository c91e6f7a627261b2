"""Model files and the Hugging Face Hub: what ``config.json`` holds (``settings``: the three frozen groups;
``config``: reading it, and the one translation of old setting names), the registry of bundled models
(``registry``), and ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` (``mixin``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .mixin import ModelLoadError, SegFixHubMixin
    from .registry import list_models
    from .settings import DecisionSettings, InferenceSettings, ModelSettings, Preprocessing

__all__ = [
    "DecisionSettings",
    "InferenceSettings",
    "ModelLoadError",
    "ModelSettings",
    "Preprocessing",
    "SegFixHubMixin",
    "list_models",
]

_HOMES = {name: "settings" for name in ("DecisionSettings", "InferenceSettings", "ModelSettings", "Preprocessing")}
__getattr__ = lazy_getattr(
    __name__, {**_HOMES, "ModelLoadError": "mixin", "SegFixHubMixin": "mixin", "list_models": "registry"}
)
