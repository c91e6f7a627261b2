"""What the network gives, before and after the decision.

:class:`NetworkOutputs`: the boundary probability and the direction logits on the grid the network produced them on
(its output stride, at the size it ran at), with the image size they belong to. Bringing them to image resolution
is one bilinear resampling, done by :meth:`NetworkOutputs.full` for every pixel or by
:meth:`NetworkOutputs.direction_logits_at` for only the pixels that may move, which is all that refinement needs (a
tenth of the pixels, and no ``(N, D, H, W)`` volume at image size). :class:`DirectionsOnDemand` is a direction head
not yet run. :class:`Prediction` holds the decided dense maps that ``SegFix.predict`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..network.precision import autocast_context

__all__ = ["NetworkOutputs", "Prediction"]


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


@dataclass(repr=False)
class Prediction:
    """Dense SegFix predictions at image resolution.

    Attributes:
        boundary_prob: float32 ``(H, W)`` or ``(N, H, W)``, probability that a pixel is on a boundary.
        direction: int64 ``(H, W)`` or ``(N, H, W)``, argmax direction class.
        boundary: bool, the pixels that may move: ``boundary_prob > boundary_threshold`` (and, by the argmax rule
            with a ``min_direction_confidence``, a confident direction).
        direction_prob: float32 ``(D, H, W)`` or ``(N, D, H, W)`` direction probabilities, when asked for
            (``predict(..., direction_prob=True)``), else None.
    """

    boundary_prob: Any
    direction: Any
    boundary: Any
    direction_prob: Any = None

    def __repr__(self) -> str:
        def shape(x) -> str:
            if x is None:
                return "None"
            if isinstance(x, list):
                return f"list of {len(x)}"
            kind = "tensor" if isinstance(x, torch.Tensor) else "array"
            return f"{kind}{tuple(x.shape)}"

        share = ""
        if not isinstance(self.boundary, list):
            pixels = self.boundary.numel() if isinstance(self.boundary, torch.Tensor) else self.boundary.size
            share = f", {float(self.boundary.sum()) / max(pixels, 1):.1%} boundary"
        return (
            f"Prediction(boundary_prob={shape(self.boundary_prob)}, direction={shape(self.direction)}, "
            f"boundary={shape(self.boundary)}, direction_prob={shape(self.direction_prob)}{share})"
        )
