"""Dense prediction with a SegFix network: whole-image or sliding-window, to full image resolution.

All functions take normalised images ``(N, 3, H, W)`` on the network's device and return

* ``boundary_prob``: float32 ``(N, H, W)``, the softmax probability of "boundary";
* ``direction_logits``: float32 ``(N, D, H, W)``,

upsampled bilinearly to the image size. Sliding windows average boundary probabilities and raw direction
logits where windows overlap, as the original ``tester_offset.py`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["autocast_context", "predict_sliding", "predict_whole", "window_starts"]


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for ``precision`` in {'fp32', 'bf16', 'fp16', 'auto'}; 'auto' is bf16 on CUDA, fp32 elsewhere."""
    if precision not in ("fp32", "bf16", "fp16", "auto"):
        raise ValueError(f"precision: expected 'fp32', 'bf16', 'fp16' or 'auto', got {precision!r}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _upsample(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def predict_whole(
    net: nn.Module, images: torch.Tensor, *, align_corners: bool = False, precision: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``net`` on whole images ``(N, 3, H, W)``; see the module docstring for the outputs."""
    size = tuple(images.shape[-2:])
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
    direction_sum = None
    count = images.new_zeros((1, height, width), dtype=torch.float32)
    for rows, cols in _windows(height, width, window, stride):
        prob, logits = predict_whole(net, images[:, :, rows, cols], align_corners=align_corners, precision=precision)
        if direction_sum is None:
            direction_sum = images.new_zeros((n, logits.shape[1], height, width), dtype=torch.float32)
        boundary_sum[:, rows, cols] += prob
        direction_sum[:, :, rows, cols] += logits
        count[:, rows, cols] += 1
    return boundary_sum / count, direction_sum / count.unsqueeze(1)
