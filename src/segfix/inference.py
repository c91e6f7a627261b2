"""Dense prediction with a SegFix network: whole-image or sliding-window, to full image resolution.

All functions take normalised images ``(N, 3, H, W)`` on the network's device and return

* ``boundary_prob``: float32 ``(N, H, W)``, the softmax probability of "boundary";
* ``direction_logits``: float32 ``(N, D, H, W)``,

upsampled bilinearly to the image size. Sliding windows average boundary probabilities and raw direction
logits where windows overlap, as the original ``tester_offset.py`` does.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .directions import flip_direction
from .precision import autocast_context
from .settings import InferenceSettings

__all__ = ["autocast_context", "dense_prediction", "predict_sliding", "predict_whole", "window_starts"]


def _upsample(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def predict_whole(
    net: nn.Module, images: torch.Tensor, *, align_corners: bool = False, precision: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``net`` on whole images ``(N, 3, H, W)``; see the module docstring for the outputs."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    with autocast_context(images.device, precision):
        boundary_logits, direction_logits = net(images)
    boundary_prob = _upsample(boundary_logits.float().softmax(1)[:, 1:2], size, align_corners)[:, 0]
    return boundary_prob, _upsample(direction_logits.float(), size, align_corners)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` px every ``stride`` px covering ``length``; the last window ends at
    ``length`` (``[0]`` when the image is no longer than a window)."""
    for name, value in (("length", length), ("window", window), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "length" else 1):
            raise ValueError(f"{name}: expected an integer >= {0 if name == 'length' else 1}, got {value!r}")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _windows(
    height: int, width: int, window: tuple[int, int], stride: tuple[int, int]
) -> Iterator[tuple[slice, slice]]:
    for y in window_starts(height, window[0], stride[0]):
        for x in window_starts(width, window[1], stride[1]):
            yield slice(y, min(y + window[0], height)), slice(x, min(x + window[1], width))


def predict_sliding(
    net: nn.Module,
    images: torch.Tensor,
    *,
    window: tuple[int, int],
    stride: tuple[int, int],
    align_corners: bool = False,
    precision: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sliding-window prediction: windows of ``window`` (h, w) every ``stride`` px, overlaps averaged.

    Memory holds one window's activations plus the full-resolution accumulators.
    """
    n, _, height, width = images.shape
    boundary_sum = images.new_zeros((n, height, width), dtype=torch.float32)
    direction_sum: torch.Tensor | None = None
    count = images.new_zeros((1, height, width), dtype=torch.float32)
    for rows, cols in _windows(height, width, window, stride):
        prob, logits = predict_whole(net, images[:, :, rows, cols], align_corners=align_corners, precision=precision)
        if direction_sum is None:
            direction_sum = images.new_zeros((n, logits.shape[1], height, width), dtype=torch.float32)
        boundary_sum[:, rows, cols] += prob
        direction_sum[:, :, rows, cols] += logits
        count[:, rows, cols] += 1
    if direction_sum is None:  # pragma: no cover - _windows yields at least one window
        raise ValueError(f"predict_sliding: no window covers an image of {height}x{width}")
    # In place: the direction volume is the largest tensor of a refine (1 GiB at 4096x8192).
    return boundary_sum.div_(count), direction_sum.div_(count.unsqueeze(1))


def dense_prediction(
    net: nn.Module,
    images: torch.Tensor,
    settings: InferenceSettings,
    *,
    input_factor: float = 1.0,
    align_corners: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference policy: normalised images ``(N, 3, H, W)`` -> (boundary prob ``(N, H, W)``, direction
    logits ``(N, D, H, W)``) at image resolution.

    The images are resized by ``input_factor`` for the network (results come back to full size), run whole or
    in windows by ``settings``, and with ``settings.flip_tta`` also mirrored and averaged.
    """
    size = (int(images.shape[-2]), int(images.shape[-1]))
    if input_factor != 1.0:
        scaled = tuple(max(1, round(s * input_factor)) for s in size)
        images = F.interpolate(images, size=scaled, mode="bilinear", align_corners=False)
    prob, logits = _network_pass(net, images, settings, align_corners)
    if settings.flip_tta:
        # The mirrored image's directions point the mirrored way: remap the logit channels, then average.
        flipped_prob, flipped_logits = _network_pass(net, images.flip(-1), settings, align_corners)
        directions = logits.shape[1]
        remap = torch.as_tensor(flip_direction(np.arange(directions), directions), device=logits.device)
        prob = prob.add_(flipped_prob.flip(-1)).mul_(0.5)
        logits = logits.add_(flipped_logits[:, remap].flip(-1)).mul_(0.5)
        del flipped_prob, flipped_logits
    if input_factor != 1.0:
        prob = F.interpolate(prob[:, None], size=size, mode="bilinear")[:, 0]
        logits = F.interpolate(logits, size=size, mode="bilinear")
    return prob, logits


def _network_pass(
    net: nn.Module, images: torch.Tensor, settings: InferenceSettings, align_corners: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    weight_dtype = next(net.parameters()).dtype
    images = images.to(dtype=weight_dtype).contiguous(memory_format=torch.channels_last)
    # A module already cast to half or bf16 runs in its own dtype: 'auto' adds no autocast on top.
    precision = "fp32" if settings.precision == "auto" and weight_dtype != torch.float32 else settings.precision
    if settings.uses_windows(int(images.shape[-2]), int(images.shape[-1])):
        return predict_sliding(
            net,
            images,
            window=settings.window_size,
            stride=settings.stride,
            align_corners=align_corners,
            precision=precision,
        )
    return predict_whole(net, images, align_corners=align_corners, precision=precision)
