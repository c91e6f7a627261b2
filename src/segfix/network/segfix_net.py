"""The SegFix offset-prediction network: a timm backbone, a fusion decoder and two small heads.

``SegFixNet(images)`` maps normalised images ``(N, 3, H, W)`` to

* boundary logits ``(N, 2, h, w)`` (2-way softmax: background, boundary) and
* direction logits ``(N, D, h, w)`` (D = 4, 8 or 16 direction classes),

at the decoder's output stride (``h = ceil(H / stride)``). Two decoders are available:

* ``'concat'``: the original's fusion. Every selected backbone level is upsampled bilinearly to the finest
  selected level and concatenated; the heads read the concatenation. With ``align_corners=True`` and
  LeakyReLU(0.01) heads this reproduces the released HRNet models.
* ``'fpn'``: a light top-down decoder. Each level is projected to ``decoder_channels`` with a 1x1 conv, added to
  the upsampled coarser levels, and smoothed with a depthwise-separable 3x3 conv, giving the heads spatial
  context at high resolution for little compute.

Heads are ``conv(k x k) -> BN + activation -> conv 1x1``, named ``boundary_head`` and ``direction_head``
(``mask_head`` and ``dir_head`` in the original).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_num_directions
from ..limits import MAX_BACKBONE_PARAMETERS, MAX_FEATURE_CHANNELS

__all__ = ["SegFixNet", "create_backbone"]

_ACTIVATIONS = ("relu", "leaky_relu")
MAX_CHANNELS = 1024
"""Widest decoder or head a model config may ask for (the original's heads have 256)."""


def create_backbone(name: str, out_indices: Sequence[int] | None = None, **kwargs) -> nn.Module:
    """A timm feature extractor (``features_only=True``), randomly initialised; nothing is downloaded.

    Channels and strides are read from ``backbone.feature_info`` by the caller, never hard-coded.
    """
    if "pretrained" in kwargs or "features_only" in kwargs:
        raise ValueError(
            "create_backbone: 'pretrained' and 'features_only' are fixed (False and True); load ImageNet "
            "weights explicitly with segfix.training.imagenet.load_imagenet_backbone"
        )
    reading = sorted(k for k in kwargs if _reads_files(k))
    if reading:
        raise ValueError(
            f"backbone_kwargs: {reading} would make timm read files or download; a model's config may only "
            "shape the network. Load weights with SegFix.from_pretrained or "
            "segfix.training.imagenet.load_imagenet_backbone"
        )
    if not isinstance(name, str) or not timm.is_model(name):
        raise ValueError(f"backbone: timm does not know {name!r}; see timm.list_models()")
    if out_indices is not None:
        kwargs["out_indices"] = _checked_out_indices(out_indices)
    _check_backbone_size(name, kwargs)
    return timm.create_model(name, pretrained=False, features_only=True, **kwargs)


def _checked_out_indices(out_indices: Sequence[int]) -> tuple[int, ...]:
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Sequence):
        raise ValueError(f"out_indices: expected a list of backbone levels, got {out_indices!r}")
    levels = tuple(out_indices)
    if not 1 <= len(levels) <= 8 or any(
        isinstance(i, bool) or not isinstance(i, int) or not -8 <= i < 8 for i in levels
    ):
        raise ValueError(f"out_indices: expected 1 to 8 backbone levels, each in -8..7, got {out_indices!r}")
    return levels


def _check_backbone_size(name: str, kwargs: dict) -> None:
    """Build the backbone on the ``meta`` device (no memory is allocated) and refuse it, before the real build,
    when its weights or its features exceed the bounds: a model config is untrusted input."""
    try:
        with torch.device("meta"):
            probe = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AssertionError) as error:
        raise ValueError(
            f"backbone {name!r} with {kwargs}: timm cannot build it ({type(error).__name__}: {error})"
        ) from None
    parameters = sum(p.numel() for p in probe.parameters())
    if parameters > MAX_BACKBONE_PARAMETERS:
        raise ValueError(
            f"backbone {name!r} with {kwargs} has {parameters / 1e6:.0f} M parameters; a SegFix config may build "
            f"at most {MAX_BACKBONE_PARAMETERS / 1e6:.0f} M (refused before anything was allocated)"
        )
    channels = sum(cast(Any, probe).feature_info.channels())
    if channels > MAX_FEATURE_CHANNELS:
        raise ValueError(
            f"backbone {name!r} with {kwargs} hands the decoder {channels} channels; at most {MAX_FEATURE_CHANNELS}"
        )


_FILE_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "pretrained_strict", "cache_dir")


def _reads_files(key: str) -> bool:
    """timm arguments that name a file, a folder, a URL or a weights source (model configs are untrusted)."""
    return key in _FILE_KEYS or key.endswith(("_path", "_file", "_dir", "_url", "_uri", "_hub"))


class BNAct(nn.BatchNorm2d):
    """BatchNorm followed by an activation in one module, so that its parameters sit at one key (``head.1.*``)
    like the original's InPlaceABN layers."""

    def __init__(self, channels: int, activation: str = "relu") -> None:
        super().__init__(channels)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation: expected one of {_ACTIVATIONS}, got {activation!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)  # a new tensor: the activation may overwrite it
        return F.relu_(x) if self.activation == "relu" else F.leaky_relu_(x, 0.01)


class BilinearUpsample(nn.Module):
    """Bilinear upsampling by a fixed factor with ``align_corners=True`` (no parameters)."""

    def __init__(self, scale_factor: float) -> None:
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (round(x.shape[-2] * self.scale_factor), round(x.shape[-1] * self.scale_factor))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _use_bilinear_upsampling(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Upsample) and child.scale_factor is not None:
            factor = child.scale_factor
            setattr(module, name, BilinearUpsample(float(factor[0] if isinstance(factor, tuple) else factor)))
        else:
            _use_bilinear_upsampling(child)


def _head(in_channels: int, hidden: int, out_channels: int, kernel_size: int, activation: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size, padding=kernel_size // 2, bias=False),
        BNAct(hidden, activation),
        nn.Conv2d(hidden, out_channels, 1, bias=False),
    )


class _SeparableBlock(nn.Sequential):
    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )


class FPNDecoder(nn.Module):
    """Top-down fusion to the finest level: ``p_i = smooth(lateral(f_i) + up(p_{i+1}))``."""

    def __init__(self, in_channels: Sequence[int], channels: int, align_corners: bool) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            for c in in_channels
        )
        self.smooth = nn.ModuleList(_SeparableBlock(channels) for _ in in_channels[:-1])
        self.align_corners = align_corners
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            up = F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=self.align_corners)
            x = self.smooth[i](lateral + up)
        return x


class ConcatDecoder(nn.Module):
    """The original fusion: upsample every level to the finest one and concatenate (no parameters)."""

    def __init__(self, in_channels: Sequence[int], align_corners: bool) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.out_channels = sum(in_channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        ups = [features[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=self.align_corners) for f in features[1:]
        ]
        return torch.cat(ups, dim=1)


class SegFixNet(nn.Module):
    """Backbone + decoder + boundary and direction heads.

    Args:
        backbone: any timm model name that supports ``features_only``.
        out_indices: backbone levels to fuse (timm ``out_indices``); the finest one sets the output stride.
            ``None`` keeps timm's default (all levels).
        decoder: ``'fpn'`` or ``'concat'`` (the original).
        decoder_channels: width of the ``'fpn'`` decoder.
        head_channels: hidden width of each head (256 in the original).
        head_kernel_size: kernel of the first head conv (1 in the original; 3 adds context).
        head_activation: ``'relu'`` or ``'leaky_relu'`` (LeakyReLU 0.01, the original's InPlaceABN).
        num_directions: 4, 8 or 16.
        align_corners: bilinear upsampling convention inside the decoder (the original used True).
        backbone_kwargs: extra keyword arguments for ``timm.create_model``.
        backbone_upsample: ``'bilinear'`` replaces the backbone's ``nn.Upsample`` layers (nearest, in timm's HRNet)
            with bilinear, align_corners=True upsampling, as in the original SegFix HRNet.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        out_indices: Sequence[int] | None = (1, 2, 3, 4),
        decoder: str = "fpn",
        decoder_channels: int = 64,
        head_channels: int = 64,
        head_kernel_size: int = 1,
        head_activation: str = "relu",
        num_directions: int = 8,
        align_corners: bool = False,
        backbone_kwargs: dict | None = None,
        backbone_upsample: str | None = None,
    ) -> None:
        super().__init__()
        check_num_directions(num_directions)
        if decoder not in ("fpn", "concat"):
            raise ValueError(f"decoder: expected 'fpn' or 'concat', got {decoder!r}")
        if head_kernel_size not in (1, 3, 5):
            raise ValueError(f"head_kernel_size: expected 1, 3 or 5, got {head_kernel_size!r}")
        for name, width in (("decoder_channels", decoder_channels), ("head_channels", head_channels)):
            # Bounded before anything is allocated: a config file must not be able to ask for gigabytes.
            if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_CHANNELS:
                raise ValueError(f"{name}: expected an integer in 1..{MAX_CHANNELS}, got {width!r}")
        if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
            raise TypeError(f"backbone_kwargs: expected a dict or None, got {type(backbone_kwargs).__name__}")
        self.backbone = create_backbone(backbone, out_indices, **(backbone_kwargs or {}))
        if backbone_upsample == "bilinear":
            _use_bilinear_upsampling(self.backbone)
        elif backbone_upsample is not None:
            raise ValueError(f"backbone_upsample: expected None or 'bilinear', got {backbone_upsample!r}")
        feature_info = cast(Any, self.backbone).feature_info  # timm's features_only models carry it
        channels = feature_info.channels()
        self.strides = feature_info.reduction()
        self.output_stride = self.strides[0]
        if decoder == "fpn":
            self.decoder: nn.Module = FPNDecoder(channels, decoder_channels, align_corners)
        else:
            self.decoder = ConcatDecoder(channels, align_corners)
        fused = self.decoder.out_channels
        self.boundary_head = _head(fused, head_channels, 2, head_kernel_size, head_activation)
        self.direction_head = _head(fused, head_channels, num_directions, head_kernel_size, head_activation)
        self.num_directions = num_directions

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images ``(N, 3, H, W)`` -> (boundary logits ``(N, 2, h, w)``, direction logits
        ``(N, D, h, w)``) at ``output_stride``."""
        fused = self.features(images)
        return self.boundary_head(fused), self.direction_head(fused)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(N, 3, H, W)`` -> the decoder's features ``(N, C, h, w)`` that both heads read."""
        return self.decoder(self.backbone(images))
