"""Input adaptation: whatever image a user hands over -> float batches on the model's device, and results back
in the caller's form (numpy in, numpy out; tensors in, tensors out on the input's device).

Images are ``(H, W, 3)`` uint8 numpy arrays or PIL images (RGB), lists or ``(N, H, W, 3)`` stacks of them, or
torch tensors ``(3, H, W)`` / ``(N, 3, H, W)`` (float in [0, 1], or uint8), on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import numpy as np
import torch
from PIL import Image

from ..checks import describe

__all__ = ["ImageInput", "Labels", "Masks"]

Labels = TypeVar("Labels", np.ndarray, torch.Tensor, list[np.ndarray], list[torch.Tensor])
"""A label map as ``SegFix.refine`` takes and returns it: numpy, torch, or a list of either."""

Masks = TypeVar("Masks", np.ndarray, torch.Tensor)
"""Instance masks as ``SegFix.refine_instances`` takes and returns them."""

ImageInput: TypeAlias = "np.ndarray | torch.Tensor | Image.Image | Sequence[np.ndarray | torch.Tensor | Image.Image]"
"""What the image argument of ``SegFix.predict`` and ``SegFix.refine`` takes: one RGB image ``(H, W, 3)``
uint8 (numpy, PIL) or ``(3, H, W)`` float in [0, 1] (torch), a batch, or a list of images."""


@dataclass(frozen=True)
class ImageBatch:
    """Images ready to be resized and normalised for a network, and how to hand results back.

    Attributes:
        groups: float32 ``(n, 3, H, W)`` on the model's device (RGB in [0, 1]), one per
            network pass (images of one size share a pass; on the CPU each image has its own).
        single: the caller gave one image (results lose the batch axis).
        as_numpy: results go back as numpy arrays.
        device: the device tensor results go back to (None: stay where computed).
    """

    groups: list[torch.Tensor]
    single: bool
    as_numpy: bool
    device: torch.device | None


def to_batch(image: Any, device: torch.device) -> ImageBatch:
    """Any accepted image input -> an :class:`ImageBatch` of float RGB in [0, 1] on ``device``. Normalising
    is left to :func:`segfix.prediction.inference.dense_prediction`, after the resize to the network's size: the
    two commute (a per-channel affine map through bilinear weights that sum to 1), and at the smaller size it
    costs a fraction (at 1024x2048 -> 441x882, 7 ms instead of 22 for the input stage).

    Raises:
        TypeError / ValueError: naming what was expected and what arrived.
    """
    if isinstance(image, torch.Tensor):
        return _tensor_batch(image, device)
    if isinstance(image, Image.Image) or (isinstance(image, np.ndarray) and image.ndim in (2, 3)):
        arrays, single = [as_rgb_array(image)], True
    elif (isinstance(image, np.ndarray) and image.ndim == 4) or (isinstance(image, (list, tuple)) and image):
        arrays, single = [as_rgb_array(a) for a in image], False
    else:
        raise TypeError(
            f"image: expected an (H, W, 3) uint8 array, a PIL image, a list of them, or a tensor; got {describe(image)}"
        )
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError(f"image: expected at least one image of at least 1x1 pixels, got {describe(image)}")
    if len({a.shape[:2] for a in arrays}) == 1:
        stacks = [np.stack(arrays)]
    else:  # different sizes cannot share a forward pass: one image at a time, in the caller's order
        stacks = [a[None] for a in arrays]
    # Kept channels-last (the permuted view's own layout): the network runs channels-last anyway, and making the
    # full-size float copy contiguous first cost 20 ms of 36 at 1024x2048 (same values either way).
    groups = [torch.from_numpy(s).to(device).permute(0, 3, 1, 2).float().div_(255.0) for s in stacks]
    return ImageBatch(_split_on_cpu(groups, device), single, True, None)


def _tensor_batch(image: torch.Tensor, device: torch.device) -> ImageBatch:
    given = describe(image)
    if image.is_meta:
        raise ValueError(f"image: expected a tensor that holds values (cpu, cuda, ...), got {given}")
    if image.ndim in (3, 4) and image.shape[-3] != 3 and image.shape[-1] == 3 and image.dtype == torch.uint8:
        image = image.movedim(-1, -3)  # (H, W, 3) uint8, as a decoded picture comes: taken as the numpy one is
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        channels_last = image.ndim in (3, 4) and image.shape[-1] == 3
        hint = "; an (H, W, 3) image needs .permute(2, 0, 1)" if channels_last else ""
        raise ValueError(f"image: expected a tensor (3, H, W) or (N, 3, H, W), got {given}{hint}")
    single = image.ndim == 3
    batch = image[None] if single else image
    if batch.numel() == 0:
        raise ValueError(f"image: expected at least one image of at least 1x1 pixels, got {given}")
    if batch.dtype == torch.uint8:
        x = batch.to(device).float() / 255.0
    elif batch.dtype.is_floating_point:
        x = batch.to(device, torch.float32)
        _check_unit_range(x, given)
    else:
        raise TypeError(f"image: expected a float tensor in [0, 1] or uint8, got {given}")
    return ImageBatch(_split_on_cpu([x], device), single, False, image.device)


def _check_unit_range(x: torch.Tensor, given: str) -> None:
    """Refuse float images outside [0, 1] (0..255 values, or images already normalised) and NaN or inf: the
    network would see them as another picture and refine quietly worse."""
    low, high = (float(v) for v in torch.aminmax(x))
    if not 0.0 <= low <= high <= 1.0:  # NaN fails every comparison
        raise ValueError(
            f"image: expected float values in [0, 1], got values in [{low:.4g}, {high:.4g}] in {given}; pass "
            "uint8, or divide 0..255 floats by 255, before any normalisation (the model normalises itself)"
        )


def _split_on_cpu(groups: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """On the CPU, run a batch image by image: measured on a 2-core machine, a batch of 8 CamVid images took
    2x longer per image in one pass (the activations of the whole batch fall out of cache)."""
    if torch.device(device).type == "cpu":
        return [image[None] for group in groups for image in group]
    return groups


def as_rgb_array(image: Any) -> np.ndarray:
    """A PIL image (any mode Pillow converts) or a uint8 array ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA (alpha
    dropped), ``(H, W)`` or ``(H, W, 1)`` grey -> a C-contiguous ``(H, W, 3)`` uint8 RGB array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected an (H, W, 3) uint8 array or a PIL image, got {describe(image)}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = np.repeat(image.reshape(image.shape[:2])[..., None], 3, axis=2)  # grey
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # RGBA: the colours; alpha says nothing about the labels
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected shape (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey, got {describe(image)}")
    if image.dtype != np.uint8:
        raise TypeError(f"image: expected dtype uint8 (0..255), got {describe(image)}; for floats pass a tensor")
    return np.ascontiguousarray(image)


def stack_or_list(parts: list[Any]) -> Any:
    """One tensor when every part has the same image size (a batch), else the list (one entry per image)."""
    if len(parts) == 1:
        return parts[0]
    if len({tuple(p.shape[1:]) for p in parts}) == 1:
        return torch.cat(parts)
    return parts


def finish(x: Any, batch: ImageBatch) -> Any:
    """A batched result (or a list of single-image ones) -> the caller's form (see :class:`ImageBatch`)."""
    if isinstance(x, list):  # images of different sizes: one single-image result each
        return [_finish_one(p, True, batch) for p in x]
    return _finish_one(x, batch.single, batch)


def _finish_one(x: torch.Tensor, single: bool, batch: ImageBatch) -> Any:
    if single:
        x = x[0]
    if batch.as_numpy:
        return x.cpu().numpy()
    return x.to(batch.device) if batch.device is not None else x


def pair_maps_with_images(images: Any, label_maps: Sequence[Any]) -> list[tuple[Any, Any]]:
    """A list of label maps with their images (a list, a batch, or one image for a list of one)."""
    if not all(isinstance(m, (np.ndarray, torch.Tensor)) for m in label_maps):
        kinds = sorted({type(m).__name__ for m in label_maps})
        raise TypeError(
            f"label_map: expected a numpy.ndarray or torch.Tensor (or a list of them, one per image), "
            f"got a list of {kinds}"
        )
    batched = isinstance(images, (list, tuple)) or (getattr(images, "ndim", 0) == 4)
    each = list(images) if batched else [images]
    if len(each) != len(label_maps):
        raise ValueError(f"label_map: got a list of {len(label_maps)} maps for {len(each)} images; pass one per image")
    return list(zip(each, label_maps))


def one_field(field: Any) -> Any:
    """The one field of a batch of one size; images of different sizes (a list of fields) are refused."""
    if isinstance(field, list):
        raise ValueError("refine: images of different sizes need one call each (or one batch of equal sizes)")
    return field
