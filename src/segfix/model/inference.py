"""Dense prediction with a SegFix network: whole-image or sliding-window, on the network's own grid.

:func:`dense_prediction` returns :class:`NetworkOutputs`: the boundary probability and the direction logits on
the grid the network produced them on (its output stride, at the size it ran at), with the image size they
belong to. Bringing them to image resolution is one bilinear resampling, done by :meth:`NetworkOutputs.full`
for every pixel or by :meth:`NetworkOutputs.direction_logits_at` for only the pixels that may move, which is
all that refinement needs (a tenth of the pixels, and no ``(N, D, H, W)`` volume at image size). A whole-image
pass without flip averaging goes one step further and leaves the direction head itself to run only at the grid
cells those pixels read (:class:`DirectionsOnDemand`; at 1024x2048 a tenth of the grid). Sliding
windows average boundary probabilities and raw direction logits where windows overlap, as the original
``tester_offset.py`` does.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..limits import MAX_NETWORK_IMAGE_PIXELS, MAX_PASS_PIXELS, MAX_PASSES, check_int_range
from ..ops.directions import flip_direction
from .precision import autocast_context
from .settings import InferenceSettings

__all__ = [
    "MAX_PASS_PIXELS",
    "DirectionsOnDemand",
    "NetworkOutputs",
    "autocast_context",
    "check_pass_size",
    "bilinear_at",
    "dense_prediction",
    "head_at",
    "head_at_supported",
    "predict_sliding",
    "predict_whole",
    "window_starts",
]


class DirectionsOnDemand:
    """A direction head not yet run: its logits at the grid cells a decision reads (:func:`head_at`, about a
    tenth of the grid), or on the whole grid when asked for (once). Holds the decoder's features ``(N, C, h, w)``
    and runs under the precision of the pass that made them."""

    def __init__(self, head: nn.Module, features: torch.Tensor, precision: str) -> None:
        self.head, self.features, self.precision = head, features, precision
        self._dense: torch.Tensor | None = None

    @property
    def grid(self) -> tuple[int, int, int]:
        """(N, h, w) of the grid."""
        return int(self.features.shape[0]), int(self.features.shape[-2]), int(self.features.shape[-1])

    def dense(self) -> torch.Tensor:
        """float32 ``(N, D, h, w)``: the logits at every cell."""
        if self._dense is None:
            with torch.inference_mode(), autocast_context(self.features.device, self.precision):
                self._dense = self.head(self.features).float()
        return self._dense

    def at(self, cells: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """float32 ``(K, D)``: the logits at the cells ``(n, y, x)``."""
        if self._dense is not None:
            n, y, x = cells
            return self._dense[n, :, y, x]
        with torch.inference_mode(), autocast_context(self.features.device, self.precision):
            return head_at(self.head, self.features, cells).float()


@dataclass(frozen=True)
class NetworkOutputs:
    """A network's outputs for images of ``size`` (H, W), on the grid they were computed on.

    Attributes:
        boundary_prob: float32 ``(N, h, w)``, the softmax probability of "boundary".
        directions: the direction logits: float32 ``(N, D, h, w)``, or a :class:`DirectionsOnDemand` that
            computes them where they are read (:attr:`direction_logits` gives the dense tensor either way).
        size: (H, W), the images' size; ``(h, w)`` may equal it (sliding windows) or be smaller.
        align_corners: the bilinear convention that maps ``(h, w)`` onto ``(H, W)``.
    """

    boundary_prob: torch.Tensor
    directions: torch.Tensor | DirectionsOnDemand
    size: tuple[int, int]
    align_corners: bool = False

    def __len__(self) -> int:
        return int(self.boundary_prob.shape[0])

    @property
    def direction_logits(self) -> torch.Tensor:
        """float32 ``(N, D, h, w)``: the direction logits on the grid."""
        return self.directions if isinstance(self.directions, torch.Tensor) else self.directions.dense()

    @classmethod
    def concat(cls, outputs: list[NetworkOutputs]) -> NetworkOutputs:
        """The outputs of several passes over images of one size, as one batch."""
        if len(outputs) == 1:
            return outputs[0]
        first = outputs[0]
        prob = torch.cat([o.boundary_prob for o in outputs])
        return cls(prob, torch.cat([o.direction_logits for o in outputs]), first.size, first.align_corners)

    def boundary_prob_full(self) -> torch.Tensor:
        """float32 ``(N, H, W)``: the boundary probability at image resolution."""
        return _resize(self.boundary_prob[:, None], self.size, self.align_corners)[:, 0]

    def direction_logits_at(self, index: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """float32 ``(K, D)``: the direction logits at image pixels ``(n, y, x)`` (three int64 ``(K,)``), as
        :meth:`full` would give them there."""
        if isinstance(self.directions, torch.Tensor):
            return bilinear_at(self.directions, index, self.size, self.align_corners)
        # Only the cells the pixels' bilinear samples read are computed; the others stay zero and are never read.
        # The cells whose values the pixels' bilinear samples read: each pixel's upper-left source cell, and
        # the cells below and right of it (at the last row or column the sample reads that cell again).
        batch, height, width = self.directions.grid
        n, y, x = index
        y0 = _source_index(y, height, int(self.size[0]), self.align_corners)[0]
        x0 = _source_index(x, width, int(self.size[1]), self.align_corners)[0]
        read = torch.zeros((batch, height + 1, width + 1), dtype=torch.bool, device=n.device)
        read[n, y0, x0] = True
        read[:, 1:, :] |= read[:, :-1, :].clone()
        read[:, :, 1:] |= read[:, :, :-1].clone()
        cells = cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor], read[:, :height, :width].nonzero(as_tuple=True))
        logits = self.directions.at(cells)
        grid = torch.zeros((batch, height, width, logits.shape[1]), dtype=logits.dtype, device=logits.device)
        grid[cells] = logits
        return bilinear_at(grid.permute(0, 3, 1, 2), index, self.size, self.align_corners)

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(boundary probability ``(N, H, W)``, direction logits ``(N, D, H, W)``) at image resolution."""
        return self.boundary_prob_full(), _resize(self.direction_logits, self.size, self.align_corners)


def _resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _source_index(out: torch.Tensor, in_size: int, out_size: int, align_corners: bool):
    """(lower source index, upper source index, weight of the upper) per output index, as ``F.interpolate``
    computes them for bilinear resampling from ``in_size`` to ``out_size`` samples."""
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = out.to(torch.float32) * scale
    else:
        src = ((out.to(torch.float32) + 0.5) * (in_size / out_size) - 0.5).clamp_(min=0)
    low = src.to(torch.int64).clamp_(max=in_size - 1)
    return low, (low + 1).clamp_(max=in_size - 1), src - low


def bilinear_at(
    maps: torch.Tensor,
    index: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    size: tuple[int, int],
    align_corners: bool = False,
) -> torch.Tensor:
    """``F.interpolate(maps, size, mode='bilinear')[n, :, y, x]`` for the pixels ``index = (n, y, x)``,
    without resampling the other pixels.

    Args:
        maps: float ``(N, C, h, w)``.
        index: three int64 tensors ``(K,)`` of image pixels, on the maps' device.
        size: (H, W) the maps are resampled to.

    Returns:
        ``(K, C)`` in the maps' dtype.
    """
    n, y, x = index
    h, w = int(maps.shape[-2]), int(maps.shape[-1])
    if (h, w) == tuple(size):
        return maps[n, :, y, x]
    y0, y1, wy = _source_index(y, h, int(size[0]), align_corners)
    x0, x1, wx = _source_index(x, w, int(size[1]), align_corners)
    wy, wx = wy[:, None].to(maps.dtype), wx[:, None].to(maps.dtype)
    rows = maps.permute(0, 2, 3, 1)
    if rows.is_contiguous():  # channels-last, as the network leaves them: each pixel's C values lie together
        flat = rows.reshape(-1, maps.shape[1])
        start = n * h

        def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
            return flat.index_select(0, (start + yy) * w + xx)

    else:

        def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
            return maps[n, :, yy, xx]

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def predict_whole(
    net: nn.Module,
    images: torch.Tensor,
    *,
    align_corners: bool = False,
    precision: str = "auto",
    directions_on_demand: bool = False,
) -> NetworkOutputs:
    """Run ``net`` on whole images ``(N, 3, H, W)``: its outputs on its own grid, for images of size (H, W).

    ``directions_on_demand``: leave the direction head of a :class:`~segfix.model.network.SegFixNet` (or any
    network with its ``features`` and ``direction_head``) to run where its logits are read
    (:class:`DirectionsOnDemand`), when the head allows it (:func:`head_at_supported`)."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    directions: torch.Tensor | DirectionsOnDemand
    with autocast_context(images.device, precision):
        # any network with SegFixNet's features() and direction_head
        head = getattr(net, "direction_head", None)
        if directions_on_demand and callable(getattr(net, "features", None)) and head_at_supported(head):
            features = cast(Callable[[torch.Tensor], torch.Tensor], net.features)(images)
            boundary_logits = cast(nn.Module, net.boundary_head)(features)
            directions = DirectionsOnDemand(cast(nn.Module, head), features, precision)
        else:
            boundary_logits, direction_logits = net(images)
            directions = direction_logits.float()
    boundary_prob = boundary_logits.float().softmax(1)[:, 1].contiguous()
    return NetworkOutputs(boundary_prob, directions, size, align_corners)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` px every ``stride`` px covering ``length``; the last window ends at
    ``length`` (``[0]`` when the image is no longer than a window)."""
    check_int_range(length, "length", 0)
    check_int_range(window, "window", 1)
    check_int_range(stride, "stride", 1)
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
) -> NetworkOutputs:
    """Sliding-window prediction: windows of ``window`` (h, w) every ``stride`` px, each brought to its own
    resolution and averaged where they overlap; the outputs are at image resolution.

    Memory holds one window's activations plus the full-resolution accumulators.
    """
    n, _, height, width = images.shape
    boundary_sum = images.new_zeros((n, height, width), dtype=torch.float32)
    direction_sum: torch.Tensor | None = None
    count = images.new_zeros((1, height, width), dtype=torch.float32)
    for rows, cols in _windows(height, width, window, stride):
        prob, logits = predict_whole(
            net, images[:, :, rows, cols], align_corners=align_corners, precision=precision
        ).full()
        if direction_sum is None:
            direction_sum = images.new_zeros((n, logits.shape[1], height, width), dtype=torch.float32)
        boundary_sum[:, rows, cols] += prob
        direction_sum[:, :, rows, cols] += logits
        count[:, rows, cols] += 1
    if direction_sum is None:  # pragma: no cover - _windows yields at least one window
        raise ValueError(f"predict_sliding: no window covers an image of {height}x{width}")
    # In place: the direction volume is the largest tensor of a refine (1 GiB at 4096x8192).
    boundary_sum.div_(count)
    direction_sum.div_(count.unsqueeze(1))
    return NetworkOutputs(boundary_sum, direction_sum, (height, width), align_corners)


def dense_prediction(
    net: nn.Module,
    images: torch.Tensor,
    settings: InferenceSettings,
    *,
    input_factor: float = 1.0,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    align_corners: bool = False,
) -> NetworkOutputs:
    """The inference policy: images ``(N, 3, H, W)`` -> the network's outputs for them.

    The images are resized by ``input_factor`` for the network, then ``normalize``d (None: they are already
    the network's input), run whole or in windows by ``settings``, and with ``settings.flip_tta`` also
    mirrored and averaged. The outputs stay on the network's grid and are
    labelled with the images' own size (H, W): one bilinear resampling takes them there.
    """
    size = (int(images.shape[-2]), int(images.shape[-1]))
    scaled = (max(1, round(size[0] * input_factor)), max(1, round(size[1] * input_factor)))
    check_pass_size(scaled, settings)
    if input_factor != 1.0:
        images = F.interpolate(images, size=scaled, mode="bilinear", align_corners=False)
    if normalize is not None:
        images = normalize(images)
    outputs = _network_pass(net, images, settings, align_corners)
    if not settings.flip_tta:
        return NetworkOutputs(outputs.boundary_prob, outputs.directions, size, align_corners)
    # The mirrored image's directions point the mirrored way: remap the logit channels, then average.
    # Mirroring commutes with the bilinear resampling to image size, so the average is taken on the grid.
    prob, logits = outputs.boundary_prob, outputs.direction_logits
    flipped = _network_pass(net, images.flip(-1), settings, align_corners)
    directions = logits.shape[1]
    remap = torch.as_tensor(flip_direction(np.arange(directions), directions), device=logits.device)
    prob = prob.add_(flipped.boundary_prob.flip(-1)).mul_(0.5)
    logits = logits.add_(flipped.direction_logits[:, remap].flip(-1)).mul_(0.5)
    return NetworkOutputs(prob, logits, size, align_corners)


_BYTES_PER_PASS_PIXEL = 550


def check_pass_size(size: tuple[int, int], settings: InferenceSettings) -> None:
    """Refuse, before anything is allocated, settings that would run the network on more than
    :data:`MAX_PASS_PIXELS` of one image at once (or on an image of more than :data:`MAX_NETWORK_IMAGE_PIXELS`),
    saying how much memory they would take and what to change. Images of one batch share a pass on a GPU, so
    its memory grows with the batch size."""
    height, width = size
    if height * width > MAX_NETWORK_IMAGE_PIXELS:
        raise ValueError(
            f"the network would see a {width}x{height} image ({height * width / 1e6:.1f} M pixels); at most "
            f"{MAX_NETWORK_IMAGE_PIXELS / 1e6:.1f} M: lower input_scale, min_short_side, or set max_network_pixels"
        )
    if settings.uses_windows(height, width):
        window, stride = settings.window_size, settings.stride
        passes = len(window_starts(height, window[0], stride[0])) * len(window_starts(width, window[1], stride[1]))
        if passes > MAX_PASSES:
            raise ValueError(
                f"window_size {window} every {stride} px takes {passes} network passes over a {width}x{height} "
                f"image; at most {MAX_PASSES}: use a larger window_size or window_stride"
            )
        height, width = min(height, window[0]), min(width, window[1])
    pixels = height * width
    if pixels > MAX_PASS_PIXELS:
        gib = pixels * _BYTES_PER_PASS_PIXEL / 2**30
        raise ValueError(
            f"these settings run the network on {pixels / 1e6:.1f} M pixels at once (about {gib:.0f} GiB); at "
            f"most {MAX_PASS_PIXELS / 1e6:.1f} M: use inference='sliding' or 'auto' with a smaller window_size or "
            "max_whole_pixels, or a lower input_scale"
        )


@functools.lru_cache(maxsize=1)
def _warn_half_on_cpu() -> None:
    warnings.warn(
        "the model's weights are float16 on the CPU, where torch emulates half-precision convolutions: a 480x360 "
        "image takes tens of seconds. Use model.float(), or model.with_settings(precision='bf16') on a CPU with "
        "bf16 instructions",
        UserWarning,
        stacklevel=4,
    )


def _network_pass(
    net: nn.Module, images: torch.Tensor, settings: InferenceSettings, align_corners: bool
) -> NetworkOutputs:
    weight_dtype = next(net.parameters()).dtype
    if weight_dtype == torch.float16 and images.device.type == "cpu":
        _warn_half_on_cpu()
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
    # Without flip averaging, the direction head runs only where a decision reads it (a tenth of the grid). A
    # compiled network runs whole: its features() would be the uncompiled module's (attributes pass through).
    on_demand = not settings.flip_tta and not settings.torch_compile
    return predict_whole(net, images, align_corners=align_corners, precision=precision, directions_on_demand=on_demand)


def head_at_supported(head: object) -> bool:
    """Whether :func:`head_at` can evaluate ``head``: a sequence of a zero-padded ``k x k`` convolution of
    stride 1 (k odd, "same" size), then per-pixel layers only (1x1 convolutions, batch norms in eval mode,
    ReLU / LeakyReLU), as SegFix's heads are, folded or not."""
    if not isinstance(head, nn.Sequential) or len(head) == 0 or type(head[0]) is not nn.Conv2d:
        return False
    first = head[0]
    k = first.kernel_size[0]
    window = first.kernel_size == (k, k) and k % 2 == 1 and first.padding == (k // 2, k // 2)
    plain = first.stride == (1, 1) and first.dilation == (1, 1) and first.groups == 1
    if not (window and plain and first.padding_mode == "zeros"):
        return False
    for layer in list(head)[1:]:
        if type(layer) is nn.Conv2d:
            if layer.kernel_size != (1, 1) or layer.stride != (1, 1) or layer.groups != 1 or layer.padding != (0, 0):
                return False
        elif isinstance(layer, nn.BatchNorm2d):
            if layer.training:
                return False
        elif type(layer) not in (nn.ReLU, nn.LeakyReLU, nn.Identity):
            return False
    return True


def head_at(head: nn.Module, features: torch.Tensor, cells: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
    """``head(features)[n, :, y, x]`` at the grid cells ``cells = (n, y, x)`` (three int64 ``(K,)``) alone:
    ``(K, out_channels)``, for a head :func:`head_at_supported` accepts.

    A decision reads the direction logits at about a tenth of the grid (where the boundary is), so this is about
    a tenth of the dense head's work. Each cell's ``k x k x C`` window is gathered (zeros beyond the border, as
    the convolution's padding) and multiplied by the same weights: the same dot products, equal to the dense
    head's up to the order of float additions (equal bits, bf16 and fp32, on the CPUs measured).
    """
    if not head_at_supported(head):
        raise ValueError(f"head_at: expected a k x k 'same' convolution then per-pixel layers, got {head}")
    layers = list(cast(nn.Sequential, head))
    first = cast(nn.Conv2d, layers[0])
    n, y, x = cells
    channels, height, width = (int(v) for v in features.shape[1:])
    radius = first.kernel_size[0] // 2
    steps = torch.arange(-radius, radius + 1, device=features.device)
    tap_rows, tap_cols = steps.repeat_interleave(len(steps)), steps.repeat(len(steps))  # the kernel's order
    index = ((n * height + y) * width + x)[:, None] + (tap_rows * width + tap_cols)[None, :]  # (K, k * k)
    # Cells within ``radius`` of the border read the convolution's zero padding: clamp their taps, zero them after.
    edge = ((y < radius) | (y >= height - radius) | (x < radius) | (x >= width - radius)).nonzero()[:, 0]
    rows, cols = y[edge, None] + tap_rows[None, :], x[edge, None] + tap_cols[None, :]
    outside = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)  # (E, k * k)
    index[edge] = (n[edge, None] * height + rows.clamp(0, height - 1)) * width + cols.clamp(0, width - 1)
    pixels = features.permute(0, 2, 3, 1).reshape(-1, channels)  # a view of channels-last features
    window = pixels.index_select(0, index.reshape(-1)).view(*index.shape, channels)
    cell, tap = outside.nonzero(as_tuple=True)
    window[edge[cell], tap] = 0
    weight = first.weight.permute(0, 2, 3, 1).reshape(first.out_channels, -1)  # (out, k, k, C): the window's order
    hidden = F.linear(window.reshape(len(n), weight.shape[1]), weight, first.bias)
    for layer in layers[1:]:
        if type(layer) is nn.Conv2d:
            hidden = F.linear(hidden, layer.weight.flatten(1), layer.bias)
        else:  # per-pixel: a batch of 1x1 images
            hidden = layer(hidden[:, :, None, None])[:, :, 0, 0]
    return hidden
