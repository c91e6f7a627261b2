"""Interoperability with the original implementation (openseg.pytorch): checkpoint conversion.

The released SegFix checkpoints are ``torch.save({'config_dict': ..., 'state_dict': ...})`` files whose keys
carry DataParallel's ``module.`` prefix: an HRNet backbone under ``module.backbone.*`` and two heads
``module.mask_head.{0,1,2}`` / ``module.dir_head.{0,1,2}`` (conv 1x1 -> InPlaceABN with LeakyReLU(0.01) ->
conv 1x1; the BN layers have no ``num_batches_tracked``). timm's ``hrnet_w48`` uses the same parameter names;
the converter reproduces the original's other details: bilinear ``align_corners=True`` fusion, BGR input
normalised with the ImageNet mean/std in BGR order, LeakyReLU heads, and 512-px sliding windows with stride 170.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..hub.mixin import ModelLoadError
from ..prediction.segfix_model import SegFix

__all__ = ["convert_official_checkpoint"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OFFICIAL_CONFIG: dict[str, Any] = dict(
    out_indices=(1, 2, 3, 4),
    backbone_kwargs={"feature_location": ""},
    backbone_upsample="bilinear",
    decoder="concat",
    head_channels=256,
    head_kernel_size=1,
    head_activation="leaky_relu",
    align_corners=True,
    channel_order="BGR",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    semantic_scale=2,
    instance_scale=1,
    inference="sliding",
    window_size=512,
    window_stride=170,
)
"""SegFix constructor arguments that reproduce the original network (with ``backbone`` and ``num_directions``)."""

_HEADS = {"mask_head": "net.boundary_head", "dir_head": "net.direction_head"}


def official_state_to_segfix(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict:
    """Rename an official state dict to SegFix keys; add the ``num_batches_tracked`` buffers it lacks."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("backbone."):
            renamed[f"net.{key}"] = value
        elif key.split(".", 1)[0] in _HEADS:
            head, rest = key.split(".", 1)
            renamed[f"{_HEADS[head]}.{rest}"] = value
        else:
            renamed[key] = value  # reported as unexpected by the strict load
    for key, value in reference.items():
        if key.endswith("num_batches_tracked") and key not in renamed:
            renamed[key] = torch.zeros_like(value)
    return renamed


def convert_official_checkpoint(
    path: str | Path, output: str | Path | None = None, *, backbone: str = "hrnet_w48"
) -> SegFix:
    """Load an original SegFix ``.pth`` into a :class:`SegFix` model (and save it to ``output`` if given).

    The file is read with ``torch.load(weights_only=True)``: no arbitrary code is unpickled. Loading is strict;
    any missing or unexpected key is an error that names it.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ModelLoadError(
            f"{path}: cannot be read as a weights-only PyTorch checkpoint ({error}). Only plain "
            "tensors and containers are accepted; arbitrary pickled objects are refused"
        ) from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: expected a dict with a 'state_dict' of tensors (the original's layout)")
    direction_key = next((k for k in state if k.removeprefix("module.") == "dir_head.2.weight"), None)
    if direction_key is None:
        raise ModelLoadError(f"{path}: no 'module.dir_head.2.weight'; is this a SegFix checkpoint?")
    directions = int(state[direction_key].shape[0])
    model = SegFix.from_config({"backbone": backbone, "num_directions": directions, **OFFICIAL_CONFIG})
    reference = model.state_dict()
    renamed = official_state_to_segfix(state, reference)
    missing = sorted(set(reference) - set(renamed))
    unexpected = sorted(set(renamed) - set(reference))
    if missing or unexpected:
        raise ModelLoadError(
            f"{path}: does not match timm {backbone!r}: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    wrong = [k for k in renamed if renamed[k].shape != reference[k].shape]
    if wrong:
        raise ModelLoadError(f"{path}: shape mismatch for {wrong[:5]} (is the backbone {backbone!r}?)")
    model.load_state_dict(renamed, strict=True)
    model.eval()
    if output is not None:
        model.save_pretrained(output)
    return model
