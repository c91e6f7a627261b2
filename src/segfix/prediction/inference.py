"""Running the network over an image: whole or in sliding windows, at the size the settings give, on the network's
own grid, with the network kept folded (and compiled, if asked) for inference.

:func:`dense_prediction` returns :class:`~segfix.prediction.outputs.NetworkOutputs`. A whole-image pass without flip
averaging leaves the direction head to run only at the grid cells a decision reads
(:class:`~segfix.prediction.outputs.DirectionsOnDemand`). Sliding windows average boundary probabilities and raw
direction logits where windows overlap, as the original ``tester_offset.py`` does. :class:`InferenceNetwork` keeps
the network as inference runs it (batch norms folded, channels-last, compiled) in step with its weights.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..hub.settings import InferenceSettings
from ..limits import MAX_NETWORK_IMAGE_PIXELS, MAX_PASS_PIXELS, MAX_PASSES, check_int_range
from ..network.folding import FoldingError, fold_batchnorm
from ..network.precision import autocast_context
from ..ops.directions import flip_direction
from .outputs import DirectionsOnDemand, NetworkOutputs, head_at_supported

_LOG = logging.getLogger(__name__)

__all__ = ["dense_prediction"]


def predict_whole(
    net: nn.Module,
    images: torch.Tensor,
    *,
    align_corners: bool = False,
    precision: str = "auto",
    directions_on_demand: bool = False,
) -> NetworkOutputs:
    """Run ``net`` on whole images ``(N, 3, H, W)``: its outputs on its own grid, for images of size (H, W).

    ``directions_on_demand``: leave the direction head of a :class:`~segfix.network.segfix_net.SegFixNet` (or any
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


class InferenceNetwork:
    """The network as inference runs it, kept up to date with the weights.

    ``get(network, compiled)``, for a network of RGB images ``(N, 3, H, W)``, returns ``network`` with its
    batch norms folded (:func:`fold_batchnorm`), in channels-last layout, compiled with ``torch.compile`` if
    asked. The copy is rebuilt whenever a parameter or buffer of ``network`` changes (an optimiser step,
    ``load_state_dict``, ``.to``), so it never runs stale weights. In training mode the batch norms use batch
    statistics, so ``network`` itself runs; where folding fails its check, ``network`` runs unfolded (with a
    warning).
    """

    def __init__(self) -> None:
        self._built: dict[bool, tuple[tuple, nn.Module]] = {}

    def get(self, network: nn.Module, compiled: bool = False) -> nn.Module:
        training = network.training
        tensors = [] if training else [*network.parameters(), *network.buffers()]
        key = (id(network), training, tuple((id(t), t._version, t.device, t.dtype) for t in tensors))
        built = self._built.get(compiled)
        if built is None or built[0] != key:
            net = network if training else _folded(network)
            runner = cast(nn.Module, torch.compile(net)) if compiled else net
            built = self._built[compiled] = (key, runner)
        return built[1]


def _folded(network: nn.Module) -> nn.Module:
    device = next(network.parameters()).device
    probe = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.inference_mode(False):
            net, _ = fold_batchnorm(network, probe)
    except FoldingError as error:
        _LOG.warning("%s; running the network unfolded", error)
        return network
    return net.to(memory_format=torch.channels_last)
